//! POST /auth/login.

use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    login_opens_a_new_session_and_records_it,
    wrong_password_and_unknown_email_get_the_same_401,
    login_ignores_the_case_of_the_email,
    bad_login_input_is_422_and_changes_nothing,
    login_upgrades_a_hash_made_with_older_parameters,
    the_response_line_of_each_flow_carries_the_user_id,
);

/// The JSON log's response line of the request to `route`: its request span's fields.
fn response_span(server: &ServerProcess, route: &str) -> Value {
    let lines: Vec<Value> = server
        .log()
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|line: &Value| {
            line["fields"]["message"] == "response" && line["span"]["route"] == route
        })
        .collect();
    assert_eq!(lines.len(), 1, "one response line for {route}");
    lines[0]["span"].clone()
}

/// Once a flow knows whose request it is, the request's span says so: the response lines of a
/// signup, login, refresh, password change and logout-all all carry the user id.
async fn the_response_line_of_each_flow_carries_the_user_id(db: Db) {
    let test_db = TestDb::new(db).await;
    let kek = latchkey::keys::Kek::generate_encoded();
    let server = ServerProcess::serve(&test_db, &kek, &[("LATCHKEY_LOG_FORMAT", "json")]).await;
    assert_eq!(server.signup("alice@example.com").await.status(), 201);
    let login = server.login("alice@example.com").await;
    assert_eq!(login.status(), 200);
    let session = Session::from_response(login).await;
    let user_id = session.user_id().to_owned();
    assert_eq!(server.refresh(&session.refresh_token).await.status(), 200);
    let change = server
        .client
        .post(server.url("/auth/password/change"))
        .bearer_auth(&session.access_token)
        .json(&json!({"current_password": PASSWORD, "new_password": "a new horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(change.status(), 204);
    let all = server
        .client
        .post(server.url("/auth/logout-all"))
        .bearer_auth(&session.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(all.status(), 204);
    // Give the reader of the child's stderr a moment to collect the last lines.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    for route in [
        "/auth/signup",
        "/auth/login",
        "/auth/refresh",
        "/auth/password/change",
        "/auth/logout-all",
    ] {
        let span = response_span(&server, route);
        assert_eq!(span["user_id"], user_id.as_str(), "{route}: {span}");
    }
}

async fn login_opens_a_new_session_and_records_it(db: Db) {
    let app = TestApp::spawn(db).await;
    let signup = app.signed_up("alice@example.com").await;
    app.clock.advance(std::time::Duration::from_secs(5));

    let response = app.login("alice@example.com", PASSWORD).await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let session = Session::from_response(response).await;
    assert_eq!(session.body["user"], signup.body["user"]);
    let last_login = session.body["profile"]["last_login_at"]
        .as_str()
        .expect("last_login_at set");
    assert!(last_login > signup.body["profile"]["created_at"].as_str().unwrap());
    assert_eq!(session.body["token_type"], "Bearer");
    assert_eq!(session.body["expires_in"], 900);
    assert_session_cookies_set(&session, 604_800);
    assert_device_cookie_set(&session);
    assert_ne!(session.refresh_token, signup.refresh_token);
    assert_eq!(app.me(&session.access_token).await.status(), 200);
    assert_eq!(
        app.me(&signup.access_token).await.status(),
        200,
        "the signup session lives on"
    );

    assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 2);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'login'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM profiles WHERE last_login_at IS NOT NULL")
            .await,
        1
    );
}

async fn wrong_password_and_unknown_email_get_the_same_401(db: Db) {
    let app = TestApp::spawn(db).await;
    app.signed_up("alice@example.com").await;
    let expected =
        json!({"error": {"code": "invalid_credentials", "message": "Wrong email or password."}});

    for (email, password, why) in [
        (
            "alice@example.com",
            "not the right password",
            "wrong password",
        ),
        ("nobody@example.com", PASSWORD, "unknown email"),
        (
            "alice@example.com",
            &"x".repeat(129)[..],
            "longer than any password can be",
        ),
    ] {
        let response = app.login(email, password).await;
        assert_eq!(response.status(), 401, "{why}");
        assert!(response.headers().get("set-cookie").is_none(), "{why}");
        assert_eq!(response.json::<Value>().await.unwrap(), expected, "{why}");
    }

    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions").await,
        1,
        "only the signup's"
    );
    // Failed attempts are recorded although the requests failed.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'login_failed'")
            .await,
        2
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM audit_events WHERE kind = 'login_failed' AND user_id IS NOT NULL"
        )
        .await,
        1,
        "the wrong password names the account, the unknown email names none"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM profiles WHERE last_login_at IS NOT NULL")
            .await,
        0
    );
}

async fn login_ignores_the_case_of_the_email(db: Db) {
    let app = TestApp::spawn(db).await;
    app.signed_up("Alice@Example.com").await;
    let response = app.login("  aLiCe@eXample.COM ", PASSWORD).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"]["email"], "Alice@Example.com");
}

async fn bad_login_input_is_422_and_changes_nothing(db: Db) {
    let app = TestApp::spawn(db).await;
    app.signed_up("alice@example.com").await;
    let cases = [
        (
            json!({}),
            json!({"email": "is required", "password": "is required"}),
            "nothing",
        ),
        (
            json!({"email": "alice@example.com"}),
            json!({"password": "is required"}),
            "no password",
        ),
        (
            json!({"email": "alice@example.com", "password": ""}),
            json!({"password": "is required"}),
            "empty password",
        ),
        (
            json!({"email": "alice", "password": PASSWORD}),
            json!({"email": "is not a valid email address"}),
            "bad email",
        ),
        (
            json!({"email": "alice@example.com", "password": 12345678}),
            json!({"password": "has the wrong type"}),
            "number",
        ),
        (
            json!({"email": "alice@example.com", "password": PASSWORD, "remember": true}),
            json!({"remember": "is not a known field"}),
            "unknown field",
        ),
    ];
    for (body, fields, why) in cases {
        let response = app.post_json("/auth/login", &body).await;
        assert_eq!(response.status(), 422, "{why}");
        let got: Value = response.json().await.unwrap();
        assert_eq!(got["error"]["code"], "validation_failed", "{why}");
        assert_eq!(got["error"]["fields"], fields, "{why}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_events").await, 1);
}

async fn login_upgrades_a_hash_made_with_older_parameters(db: Db) {
    let old = TestApp::spawn_with(db, |o| {
        o.argon2_memory_kib = Some(8 * 1024);
        o.argon2_iterations = Some(1);
    })
    .await;
    old.signed_up("alice@example.com").await;
    let before = old.text("SELECT password_hash FROM users").await.unwrap();
    assert!(
        before.starts_with("$argon2id$v=19$m=8192,t=1,p=1$"),
        "{before}"
    );

    let current = old.another_instance(|_| {}).await;
    assert_eq!(
        current.login("alice@example.com", PASSWORD).await.status(),
        200
    );
    let after = current
        .text("SELECT password_hash FROM users")
        .await
        .unwrap();
    assert!(
        after.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{after}"
    );
    assert_eq!(
        current.login("alice@example.com", PASSWORD).await.status(),
        200,
        "the new hash verifies"
    );
    assert_eq!(
        current
            .login("alice@example.com", "not the right password")
            .await
            .status(),
        401
    );
}
