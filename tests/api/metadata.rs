//! `profile.metadata` (the operator's JSON Schema, or a 4 KiB object), `user.app_metadata`
//! (read-only for users) and `token_claims`.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    signup_stores_valid_metadata_and_shows_it,
    metadata_without_a_schema_is_an_object_of_at_most_4_kib,
    metadata_against_the_schema_reports_each_pointer,
    a_replaced_schema_applies_from_the_next_start,
    patch_replaces_metadata_and_keeps_what_it_does_not_name,
    users_cannot_write_app_metadata_and_chosen_keys_become_claims,
);

fn validation_failed(fields: Value) -> Value {
    json!({"error": {"code": "validation_failed", "message": "Some fields are invalid.",
                     "fields": fields}})
}

/// A schema file in the temp directory, removed with the value.
struct SchemaFile(PathBuf);

impl SchemaFile {
    fn new(schema: &Value) -> SchemaFile {
        let path = std::env::temp_dir().join(format!("schema-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&path, schema.to_string()).unwrap();
        SchemaFile(path)
    }
}

impl Drop for SchemaFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn plans(allowed: &[&str]) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "plan": {"enum": allowed},
            "age": {"type": "integer", "minimum": 0},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["plan"],
        "additionalProperties": false,
    })
}

async fn signup_with(app: &TestApp, email: &str, metadata: Value) -> reqwest::Response {
    app.post_json(
        "/auth/signup",
        &json!({"email": email, "password": PASSWORD, "metadata": metadata}),
    )
    .await
}

async fn stored_metadata(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT metadata FROM profiles ORDER BY created_at")
        .fetch_all(app.pool())
        .await
        .unwrap()
}

async fn signup_stores_valid_metadata_and_shows_it(db: Db) {
    let app = TestApp::spawn(db).await;
    let metadata = json!({"plan": "pro", "nested": {"a": [1, 2, 3]}, "ok": true});
    let response = signup_with(&app, "alice@example.com", metadata.clone()).await;
    assert_eq!(response.status(), 201);
    let session = Session::from_response(response).await;
    assert_eq!(session.body["profile"]["metadata"], metadata);
    assert_eq!(session.body["user"]["app_metadata"], json!({}));
    let me: Value = app.me(&session.access_token).await.json().await.unwrap();
    assert_eq!(me["profile"]["metadata"], metadata);
    assert_eq!(me["user"]["app_metadata"], json!({}));
    assert_eq!(
        stored_metadata(&app).await,
        [r#"{"nested":{"a":[1,2,3]},"ok":true,"plan":"pro"}"#]
    );
    // Without metadata: `{}`.
    let bob = app.signed_up("bob@example.com").await;
    assert_eq!(bob.body["profile"]["metadata"], json!({}));
}

async fn metadata_without_a_schema_is_an_object_of_at_most_4_kib(db: Db) {
    let app = TestApp::spawn(db).await;
    // 4096 bytes exactly: `{"a":"` + 4087 + `"}`.
    let fits = json!({"a": "x".repeat(4096 - 8)});
    assert_eq!(fits.to_string().len(), 4096);
    let response = signup_with(&app, "alice@example.com", fits).await;
    assert_eq!(response.status(), 201);

    let over = json!({"a": "x".repeat(4096 - 7)});
    let response = signup_with(&app, "bob@example.com", over).await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        validation_failed(json!({"metadata": "must be at most 4 KiB as JSON"}))
    );
    for not_an_object in [json!([1]), json!("text"), json!(3)] {
        let response = signup_with(&app, "bob@example.com", not_an_object).await;
        assert_eq!(response.status(), 422);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            validation_failed(json!({"metadata": "must be a JSON object"}))
        );
    }
    // Every problem at once, the account's and the metadata's; nothing written.
    let response = app
        .post_json(
            "/auth/signup",
            &json!({"email": "not an address", "password": PASSWORD, "metadata": [1]}),
        )
        .await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    let fields: Vec<&String> = body["error"]["fields"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(fields, ["email", "metadata"]);
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
}

async fn metadata_against_the_schema_reports_each_pointer(db: Db) {
    let schema = SchemaFile::new(&plans(&["free", "pro"]));
    let path = schema.0.clone();
    let app = TestApp::spawn_with(db, |o| o.profile_schema = Some(path)).await;

    let ok = signup_with(&app, "alice@example.com", json!({"plan": "free", "age": 3})).await;
    assert_eq!(ok.status(), 201);

    let response = signup_with(
        &app,
        "bob@example.com",
        json!({"plan": "gold", "age": -1, "tags": ["a", 2]}),
    )
    .await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    let fields = body["error"]["fields"].as_object().unwrap();
    let keys: Vec<&String> = fields.keys().collect();
    assert_eq!(keys, ["metadata/age", "metadata/plan", "metadata/tags/1"]);
    for message in fields.values() {
        let message = message.as_str().unwrap();
        assert!(
            !message.contains("gold"),
            "the value is not echoed: {message}"
        );
    }
    let response = signup_with(&app, "bob@example.com", json!({"age": 1, "extra": 1})).await;
    let body: Value = response.json().await.unwrap();
    let keys: Vec<&String> = body["error"]["fields"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(keys, ["metadata"], "{body}");
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
    assert_eq!(app.count(ORPHANS).await, 0);
}

async fn a_replaced_schema_applies_from_the_next_start(db: Db) {
    let schema = SchemaFile::new(&plans(&["free", "pro"]));
    let path = schema.0.clone();
    let first = TestApp::spawn_with(db, |o| o.profile_schema = Some(path)).await;
    let alice = signup_with(&first, "alice@example.com", json!({"plan": "pro"})).await;
    assert_eq!(alice.status(), 201);
    let alice = Session::from_response(alice).await;

    // The operator drops "pro"; the running server keeps the schema it started with.
    std::fs::write(&schema.0, plans(&["free"]).to_string()).unwrap();
    let still = signup_with(&first, "bob@example.com", json!({"plan": "pro"})).await;
    assert_eq!(still.status(), 201);

    let path = schema.0.clone();
    let restarted = first
        .another_instance(|o| o.profile_schema = Some(path))
        .await;
    let refused = signup_with(&restarted, "carol@example.com", json!({"plan": "pro"})).await;
    assert_eq!(refused.status(), 422);
    let body: Value = refused.json().await.unwrap();
    let keys: Vec<&String> = body["error"]["fields"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(keys, ["metadata/plan"]);
    let ok = signup_with(&restarted, "carol@example.com", json!({"plan": "free"})).await;
    assert_eq!(ok.status(), 201);
    // Stored metadata stays as it was: it is checked when written, not when read.
    let me: Value = restarted
        .me(&alice.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["profile"]["metadata"], json!({"plan": "pro"}));

    // A schema that is no JSON Schema stops the start with the reason.
    std::fs::write(&schema.0, r#"{"type": 12}"#).unwrap();
    let settings = latchkey::config::Settings::resolve({
        let mut o = test_overrides(&first.db, &first.kek);
        o.profile_schema = Some(schema.0.clone());
        o
    })
    .unwrap();
    let failed = latchkey::app::AppState::build(settings, latchkey::clock::Clock::default()).await;
    let error = format!("{:#}", failed.err().expect("the start fails"));
    assert!(error.contains("profile_schema"), "{error}");
}

async fn patch_replaces_metadata_and_keeps_what_it_does_not_name(db: Db) {
    let app = TestApp::spawn(db).await;
    let response = app
        .post_json(
            "/auth/signup",
            &json!({"email": "alice@example.com", "password": PASSWORD,
                    "display_name": "Alice", "metadata": {"a": 1, "b": 2}}),
        )
        .await;
    let alice = Session::from_response(response).await;
    let patch = |body: Value| {
        app.client
            .patch(app.url("/auth/me/profile"))
            .bearer_auth(&alice.access_token)
            .json(&body)
            .send()
    };

    let response = patch(json!({"metadata": {"c": 3}})).await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["profile"]["metadata"],
        json!({"c": 3}),
        "replaced, not merged"
    );
    assert_eq!(body["profile"]["display_name"], "Alice", "untouched");

    let response = patch(json!({"display_name": "Al"})).await.unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["profile"]["metadata"], json!({"c": 3}), "untouched");

    let response = patch(json!({"metadata": {"x": "y".repeat(5000)}, "display_name": "Bo"}))
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        validation_failed(json!({"metadata": "must be at most 4 KiB as JSON"}))
    );
    let me: Value = app.me(&alice.access_token).await.json().await.unwrap();
    assert_eq!(me["profile"]["metadata"], json!({"c": 3}));
    assert_eq!(
        me["profile"]["display_name"], "Al",
        "nothing of the refused PATCH"
    );
    assert_eq!(stored_metadata(&app).await, [r#"{"c":3}"#]);
}

async fn users_cannot_write_app_metadata_and_chosen_keys_become_claims(db: Db) {
    let app = TestApp::spawn_with(db, |o| {
        o.token_claims = Some(vec!["plan".into(), "org".into()]);
    })
    .await;
    let refused = app
        .post_json(
            "/auth/signup",
            &json!({"email": "alice@example.com", "password": PASSWORD,
                    "app_metadata": {"plan": "pro"}}),
        )
        .await;
    assert_eq!(refused.status(), 422);
    assert_eq!(
        refused.json::<Value>().await.unwrap(),
        validation_failed(json!({"app_metadata": "is not a known field"}))
    );
    let alice = app.signed_up("alice@example.com").await;
    let patch = app
        .client
        .patch(app.url("/auth/me/profile"))
        .bearer_auth(&alice.access_token)
        .json(&json!({"app_metadata": {"plan": "pro"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 422);
    assert_eq!(
        patch.json::<Value>().await.unwrap(),
        validation_failed(json!({"app_metadata": "is not a known field"}))
    );
    assert_eq!(TestApp::claims(&alice.access_token).get("plan"), None);

    // The operator sets it (the admin API will; the CLI can now).
    let dir = std::env::temp_dir();
    let set = run(
        &[
            "users",
            "set-app-metadata",
            "alice@example.com",
            r#"{"plan": "pro", "seats": 3, "sub": "not a claim"}"#,
            "--database-url",
            &app.db.url,
        ],
        &dir,
    );
    assert!(set.status.success(), "{set:?}");
    let login = app.login("alice@example.com", PASSWORD).await;
    assert_eq!(login.status(), 200);
    let session = Session::from_response(login).await;
    assert_eq!(
        session.body["user"]["app_metadata"],
        json!({"plan": "pro", "seats": 3, "sub": "not a claim"})
    );
    let claims = TestApp::claims(&session.access_token);
    assert_eq!(claims["plan"], "pro", "{claims}");
    assert_eq!(claims.get("seats"), None, "only the chosen keys");
    assert_eq!(
        claims.get("org"),
        None,
        "a chosen key the user lacks is left out"
    );
    assert_eq!(
        claims["sub"],
        session.user_id(),
        "app_metadata never shadows a claim"
    );
    let mut names: Vec<&String> = claims.as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "aal", "amr", "aud", "exp", "iat", "iss", "jti", "plan", "sid", "sub"
        ]
    );
    // The token with its extra claim verifies on latchkey's own endpoints.
    assert_eq!(app.me(&session.access_token).await.status(), 200);
    let refreshed = app.refresh(&session.refresh_token).await;
    let refreshed = Session::from_response(refreshed).await;
    assert_eq!(TestApp::claims(&refreshed.access_token)["plan"], "pro");
}
