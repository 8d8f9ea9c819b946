//! Notes belong to their workspace's owner; the extractor is latchkey's, with its liveness check.

use notes_app::Workspaces;
use serde_json::{Value, json};

use crate::db_tests;
use crate::harness::{App, Db, error_code};

db_tests!(
    only_the_owner_reads_a_note,
    a_revoked_session_is_refused_at_once,
    the_apps_routes_refuse_cross_site_writes,
    deleting_the_account_deletes_its_workspace_and_notes_in_the_same_transaction,
);

async fn post_note(app: &App, token: &str, body: &str) -> reqwest::Response {
    app.client
        .post(app.url("/notes"))
        .bearer_auth(token)
        .json(&json!({"body": body}))
        .send()
        .await
        .unwrap()
}

async fn only_the_owner_reads_a_note(db: Db) {
    let app = App::start(db, Workspaces::default()).await;
    let ada = app.signed_up("ada@example.com", None).await;
    let eve = app.signed_up("eve@example.com", None).await;
    let created = post_note(&app, &ada, "the engine can compose music").await;
    assert_eq!(created.status(), 201);
    let note: Value = created.json().await.unwrap();
    let path = format!("/notes/{}", note["id"].as_str().unwrap());

    let read = app.get(&path, &ada).await;
    assert_eq!(read.status(), 200);
    assert_eq!(read.json::<Value>().await.unwrap(), note);
    let list: Value = app.get("/notes", &ada).await.json().await.unwrap();
    assert_eq!(list, json!([note]));

    // Another user: the same 404 as for a note that does not exist, and an empty list.
    let (status, error) = error_code(app.get(&path, &eve).await).await;
    assert_eq!((status, error["code"].as_str()), (404, Some("not_found")));
    let list: Value = app.get("/notes", &eve).await.json().await.unwrap();
    assert_eq!(list, json!([]));
    // Nobody: 401 in latchkey's shape.
    let anonymous = app.client.get(app.url(&path)).send().await.unwrap();
    let (status, error) = error_code(anonymous).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (401, Some("unauthenticated"))
    );

    let (status, _) = error_code(post_note(&app, &ada, "  ").await).await;
    assert_eq!(status, 422, "an empty note");
    assert_eq!(app.db.count("notes").await, 1);
}

async fn a_revoked_session_is_refused_at_once(db: Db) {
    let app = App::start(db, Workspaces::default()).await;
    let token = app.signed_up("ada@example.com", None).await;
    assert_eq!(app.get("/notes", &token).await.status(), 200);
    let logout = app
        .client
        .post(app.url("/auth/logout-all"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    // The access token has not expired, but its session has ended: refused on the next request.
    let (status, error) = error_code(app.get("/notes", &token).await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let (status, _) = error_code(post_note(&app, &token, "too late").await).await;
    assert_eq!(status, 401);
    assert_eq!(app.db.count("notes").await, 0);
}

async fn the_apps_routes_refuse_cross_site_writes(db: Db) {
    let app = App::start(db, Workspaces::default()).await;
    let token = app.signed_up("ada@example.com", None).await;
    let forged = app
        .client
        .post(app.url("/notes"))
        .bearer_auth(&token)
        .header("origin", "https://evil.example")
        .json(&json!({"body": "forged"}))
        .send()
        .await
        .unwrap();
    let (status, error) = error_code(forged).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (403, Some("csrf_rejected"))
    );
    let own = app
        .client
        .post(app.url("/notes"))
        .bearer_auth(&token)
        .header("origin", "http://localhost:3000")
        .json(&json!({"body": "mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 201);
    assert_eq!(app.db.count("notes").await, 1);
}

async fn deleting_the_account_deletes_its_workspace_and_notes_in_the_same_transaction(db: Db) {
    let app = App::start(db, Workspaces::default()).await;
    let ada = app.signed_up("ada@example.com", None).await;
    let eve = app.signed_up("eve@example.com", None).await;
    assert_eq!(post_note(&app, &ada, "first").await.status(), 201);
    assert_eq!(post_note(&app, &eve, "eve's").await.status(), 201);
    let delete = |password: &'static str| {
        app.client
            .delete(app.url("/auth/me"))
            .bearer_auth(&ada)
            .json(&json!({"password": password}))
            .send()
    };
    let (status, _) = error_code(delete("not the password").await.unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(
        app.db.count("workspaces").await,
        2,
        "a refused deletion keeps everything"
    );
    assert_eq!(
        delete(crate::harness::PASSWORD).await.unwrap().status(),
        204
    );
    assert_eq!(app.db.count("users").await, 1);
    assert_eq!(
        app.db.count("workspaces").await,
        1,
        "only eve's workspace is left"
    );
    assert_eq!(app.db.count("notes").await, 1, "and only eve's note");
    assert_eq!(app.get("/notes", &eve).await.status(), 200);
}
