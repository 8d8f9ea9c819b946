//! The signup hook: the workspace in latchkey's signup transaction, or nothing at all.

use std::time::Duration;

use notes_app::Workspaces;
use serde_json::json;

use crate::db_tests;
use crate::harness::{App, Db, PASSWORD, error_code};

db_tests!(
    signup_writes_the_workspace_with_the_account,
    the_signup_page_runs_the_same_hook,
    a_refused_slug_writes_nothing_and_sets_no_cookie,
    a_taken_slug_is_a_conflict_that_rolls_the_account_back,
    fifty_concurrent_signups_with_one_email_make_one_user_and_one_workspace,
    a_slow_hook_does_not_stall_reads,
    a_hook_over_its_time_limit_is_stopped_and_rolled_back,
    the_admin_apis_create_and_import_run_the_same_hook,
);

async fn signup_writes_the_workspace_with_the_account(db: Db) {
    let app = App::start(db, Workspaces::default()).await;
    let response = app
        .signup("ada@example.com", Some(json!({"workspace": "analytical"})))
        .await;
    assert_eq!(response.status(), 201);
    let cookies: Vec<_> = response.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies.len(), 2, "both session cookies: {cookies:?}");
    let body: serde_json::Value = response.json().await.unwrap();
    let user_id = body["user"]["id"].as_str().unwrap().to_owned();
    assert_eq!(app.db.counts().await, [1, 1, 1, 1]);

    let token = body["access_token"].as_str().unwrap();
    let workspace = app.get("/workspace", token).await;
    assert_eq!(workspace.status(), 200);
    let workspace: serde_json::Value = workspace.json().await.unwrap();
    assert_eq!(workspace["slug"], "analytical");
    let pool = app.db.pool().await;
    let (owner,): (String,) = latchkey::sqlx::query_as("SELECT owner_id FROM workspaces")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(owner, user_id, "the workspace belongs to the new user");

    // Without a slug, one from the user id.
    let token = app.signed_up("grace@example.com", None).await;
    let workspace: serde_json::Value = app.get("/workspace", &token).await.json().await.unwrap();
    assert!(workspace["slug"].as_str().unwrap().starts_with("ws-"));
}

async fn the_signup_page_runs_the_same_hook(db: Db) {
    let app = App::start(db, Workspaces::default()).await;
    let response = app
        .client
        .post(app.url("/signup"))
        .header("origin", "http://localhost:3000")
        .form(&[("email", "page@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303, "the hosted signup page succeeds");
    assert_eq!(app.db.counts().await, [1, 1, 1, 1], "with its workspace");
}

async fn a_refused_slug_writes_nothing_and_sets_no_cookie(db: Db) {
    let app = App::start(db, Workspaces::default()).await;
    for (slug, problem) in [
        (json!("admin"), "this name is reserved"),
        (
            json!("No Spaces"),
            "3 to 32 lowercase letters, digits or dashes",
        ),
        (json!("ab"), "3 to 32 lowercase letters, digits or dashes"),
        (json!(42), "must be a string"),
    ] {
        let response = app
            .signup("ada@example.com", Some(json!({"workspace": slug})))
            .await;
        assert!(response.headers().get("set-cookie").is_none(), "{slug}");
        let (status, error) = error_code(response).await;
        assert_eq!(status, 422, "{slug}");
        assert_eq!(error["code"], "validation_failed");
        assert_eq!(
            error["fields"],
            json!({"metadata/workspace": problem}),
            "{slug}"
        );
    }
    assert_eq!(app.db.counts().await, [0, 0, 0, 0]);
}

async fn a_taken_slug_is_a_conflict_that_rolls_the_account_back(db: Db) {
    let app = App::start(db, Workspaces::default()).await;
    app.signed_up("ada@example.com", Some(json!({"workspace": "engines"})))
        .await;
    let response = app
        .signup("babbage@example.com", Some(json!({"workspace": "engines"})))
        .await;
    assert!(response.headers().get("set-cookie").is_none());
    let (status, error) = error_code(response).await;
    assert_eq!(status, 409);
    assert_eq!(error["code"], "conflict");
    assert_eq!(error["message"], "This conflicts with existing data.");
    assert_eq!(
        app.db.counts().await,
        [1, 1, 1, 1],
        "only the first account"
    );
    // The address was not used up by the refused signup.
    app.signed_up(
        "babbage@example.com",
        Some(json!({"workspace": "difference"})),
    )
    .await;
}

async fn fifty_concurrent_signups_with_one_email_make_one_user_and_one_workspace(db: Db) {
    let app = std::sync::Arc::new(App::start(db, Workspaces::default()).await);
    let signups = (0..50).map(|_| {
        let app = app.clone();
        tokio::spawn(async move { app.signup("race@example.com", None).await.status() })
    });
    let mut statuses = Vec::new();
    for signup in signups {
        statuses.push(signup.await.unwrap().as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        49,
        "{statuses:?}"
    );
    assert_eq!(app.db.counts().await, [1, 1, 1, 1]);
}

async fn a_slow_hook_does_not_stall_reads(db: Db) {
    let slow = Workspaces {
        delay: Duration::from_millis(1500),
    };
    let app = std::sync::Arc::new(App::start(db, slow).await);
    // An account to read with (its own signup is slow too).
    let token = app.signed_up("reader@example.com", None).await;
    let signup = {
        let app = app.clone();
        tokio::spawn(async move { app.signup("slow@example.com", None).await.status() })
    };
    // Hashing takes well under this; then the hook holds the transaction (and on SQLite the
    // write lock) for 1.5 s, during which reads must go on.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..5 {
        let me = app.get("/auth/me", &token).await;
        assert_eq!(me.status(), 200);
        let workspace = app.get("/workspace", &token).await;
        assert_eq!(workspace.status(), 200);
    }
    assert!(
        !signup.is_finished(),
        "the reads answered while the slow hook held its transaction"
    );
    assert_eq!(signup.await.unwrap(), 201);
    assert_eq!(app.db.count("workspaces").await, 2);
}

async fn a_hook_over_its_time_limit_is_stopped_and_rolled_back(db: Db) {
    let hanging = Workspaces {
        delay: Duration::from_secs(3),
    };
    let app = App::start(db, hanging).await;
    let response = app.signup("hang@example.com", None).await;
    assert!(response.headers().get("set-cookie").is_none());
    let (status, error) = error_code(response).await;
    assert_eq!(status, 500);
    assert_eq!(error["code"], "internal");
    assert_eq!(error["message"], "Something went wrong on our side.");
    assert_eq!(app.db.counts().await, [0, 0, 0, 0]);
}

async fn the_admin_apis_create_and_import_run_the_same_hook(db: Db) {
    let app = App::start(db, Workspaces::default()).await;
    let key = app.admin_key().await;
    let created = app
        .client
        .post(app.url("/admin/v1/users"))
        .bearer_auth(&key)
        .json(&json!({"email": "made@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(
        app.db.counts().await,
        [1, 1, 0, 1],
        "the workspace with the account"
    );

    // An import: each line through the hook.
    let lines = [
        json!({"email": "one@example.com"}),
        json!({"email": "two@example.com", "display_name": "Two"}),
    ];
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let imported = app
        .client
        .post(app.url("/admin/v1/users/import"))
        .bearer_auth(&key)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(imported.status(), 200);
    let report: serde_json::Value = imported.json().await.unwrap();
    assert_eq!(report["imported"], 2, "{report}");
    assert_eq!(app.db.count("users").await, 3);
    assert_eq!(
        app.db.count("workspaces").await,
        3,
        "one workspace per account, however made"
    );
}
