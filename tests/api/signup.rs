//! POST /auth/signup.

use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    signup_creates_user_profile_and_session_and_sets_cookies,
    signup_without_display_name_has_a_null_one,
    signup_with_a_taken_email_is_409_whatever_the_case,
    bad_signups_get_a_clear_4xx_and_change_nothing,
    fifty_concurrent_signups_with_one_email_make_one_account,
    a_hundred_concurrent_signups_make_a_hundred_accounts,
    a_database_failure_mid_signup_rolls_everything_back_with_a_generic_500,
);

async fn signup_creates_user_profile_and_session_and_sets_cookies(db: Db) {
    let app = TestApp::spawn(db).await;
    let response = app
        .post_json("/auth/signup", &json!({"email": " Alice@Example.com ", "password": PASSWORD, "display_name": " Alice "}))
        .await;

    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(response.headers().contains_key("x-request-id"));
    let session = Session::from_response(response).await;
    let body = &session.body;
    let user_id = session.user_id().to_owned();
    assert!(uuid::Uuid::parse_str(&user_id).is_ok());
    assert_eq!(body["user"]["email"], "Alice@Example.com");
    assert_eq!(body["user"]["email_verified"], false);
    assert_eq!(body["profile"]["display_name"], "Alice");
    assert_eq!(body["profile"]["last_login_at"], Value::Null);
    assert_eq!(body["profile"]["created_at"], body["user"]["created_at"]);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "access_token",
            "expires_in",
            "profile",
            "token_type",
            "user"
        ]
    );
    let user_keys: Vec<&String> = body["user"].as_object().unwrap().keys().collect();
    assert_eq!(
        user_keys,
        [
            "app_metadata",
            "created_at",
            "email",
            "email_verified",
            "id"
        ]
    );
    assert_eq!(body["user"]["app_metadata"], json!({}));
    assert_eq!(body["profile"]["metadata"], json!({}));
    let profile_keys: Vec<&String> = body["profile"].as_object().unwrap().keys().collect();
    assert_eq!(
        profile_keys,
        [
            "created_at",
            "display_name",
            "last_login_at",
            "metadata",
            "updated_at"
        ]
    );
    assert!(
        body.get("refresh_token").is_none(),
        "the refresh token never appears in a body"
    );

    // Cookies: exactly the contract's attributes.
    assert_session_cookies_set(&session, 604_800);
    assert_eq!(
        session.cookies.len(),
        2,
        "no device cookie: only a login sets it"
    );

    // The access token works.
    let me = app.me(&session.access_token).await;
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["user"]["id"], user_id.as_str());

    // Rows: one of each, the refresh token stored only as a hash.
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM profiles").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 1);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM refresh_tokens WHERE spent_at IS NULL")
            .await,
        1
    );
    let stored = app
        .text("SELECT token_hash FROM refresh_tokens")
        .await
        .unwrap();
    assert_ne!(stored, session.refresh_token);
    assert_eq!(
        app.text("SELECT email_normalized FROM users")
            .await
            .unwrap(),
        "alice@example.com"
    );
    let hash = app.text("SELECT password_hash FROM users").await.unwrap();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert_eq!(
        app.text("SELECT kind FROM audit_events").await.unwrap(),
        "signup"
    );
    assert_eq!(
        app.text("SELECT user_id FROM audit_events").await.unwrap(),
        user_id
    );
    assert_eq!(
        app.text("SELECT user_id FROM sessions").await.unwrap(),
        user_id
    );
    assert_eq!(app.count(ORPHANS).await, 0);
}

async fn signup_without_display_name_has_a_null_one(db: Db) {
    let app = TestApp::spawn(db).await;
    let session = app.signed_up("bob@example.com").await;
    assert_eq!(session.body["profile"]["display_name"], Value::Null);
    let blank = app
        .post_json(
            "/auth/signup",
            &json!({"email": "carol@example.com", "password": PASSWORD, "display_name": "  "}),
        )
        .await;
    assert_eq!(blank.status(), 201);
    let blank: Value = blank.json().await.unwrap();
    assert_eq!(blank["profile"]["display_name"], Value::Null);
}

async fn signup_with_a_taken_email_is_409_whatever_the_case(db: Db) {
    let app = TestApp::spawn(db).await;
    app.signed_up("Alice@Example.com").await;
    for email in [
        "Alice@Example.com",
        "alice@example.com",
        "ALICE@EXAMPLE.COM",
        " alice@example.com",
    ] {
        let response = app.signup(email, "another good passphrase").await;
        assert_eq!(response.status(), 409, "{email}");
        assert!(response.headers().get("set-cookie").is_none());
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({"error": {"code": "email_taken", "message": "An account with this email already exists."}})
        );
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_events").await, 1);
}

/// A bad request: why it is bad, its content type and body, and the status, code and fields expected.
type Case<'a> = (&'a str, &'a str, String, u16, &'a str, Option<Value>);

async fn bad_signups_get_a_clear_4xx_and_change_nothing(db: Db) {
    let app = TestApp::spawn(db).await;
    let too_long_password = "Zx9".repeat(43); // 129 characters
    let huge = json!({"email": "a@example.com", "password": PASSWORD, "display_name": "x".repeat(17 * 1024)});
    // (reason, content type, body, status, code, fields)
    let cases: Vec<Case> = vec![
        ("malformed JSON", "application/json", "{\"email\": ".into(), 400, "invalid_json", None),
        ("not JSON at all", "application/json", "email=a@example.com".into(), 400, "invalid_json", None),
        ("no content type", "", json!({"email": "a@example.com", "password": PASSWORD}).to_string(), 415, "unsupported_media_type", None),
        ("form content type", "application/x-www-form-urlencoded", "email=a%40example.com".into(), 415, "unsupported_media_type", None),
        ("17 KiB body", "application/json", huge.to_string(), 413, "payload_too_large", None),
        ("array instead of object", "application/json", "[]".into(), 422, "validation_failed", Some(json!({"body": "must be a JSON object"}))),
        ("unknown field id", "application/json", json!({"email": "a@example.com", "password": PASSWORD, "id": "x"}).to_string(), 422, "validation_failed", Some(json!({"id": "is not a known field"}))),
        ("client-owned email_verified", "application/json", json!({"email": "a@example.com", "password": PASSWORD, "email_verified": true}).to_string(), 422, "validation_failed", Some(json!({"email_verified": "is not a known field"}))),
        ("email of the wrong type", "application/json", json!({"email": 42, "password": PASSWORD}).to_string(), 422, "validation_failed", Some(json!({"email": "has the wrong type"}))),
        ("nothing given", "application/json", "{}".into(), 422, "validation_failed", Some(json!({"email": "is required", "password": "is required"}))),
        ("invalid email", "application/json", json!({"email": "not-an-email", "password": PASSWORD}).to_string(), 422, "validation_failed", Some(json!({"email": "is not a valid email address"}))),
        ("7-character password", "application/json", json!({"email": "a@example.com", "password": "Zx9!Qw7"}).to_string(), 422, "validation_failed", Some(json!({"password": "must be at least 8 characters"}))),
        ("129-character password", "application/json", json!({"email": "a@example.com", "password": too_long_password}).to_string(), 422, "validation_failed", Some(json!({"password": "must be at most 128 characters"}))),
        ("common password", "application/json", json!({"email": "a@example.com", "password": "password123"}).to_string(), 422, "validation_failed", Some(json!({"password": "is too common: it appears in lists of breached passwords"}))),
        ("common password, other case", "application/json", json!({"email": "a@example.com", "password": "Iloveyou1"}).to_string(), 422, "validation_failed", Some(json!({"password": "is too common: it appears in lists of breached passwords"}))),
        ("password is the email", "application/json", json!({"email": "jonathan@example.com", "password": "jonathan@example.com"}).to_string(), 422, "validation_failed", Some(json!({"password": "is too easy to guess: it contains your email address"}))),
        ("display name too long", "application/json", json!({"email": "a@example.com", "password": PASSWORD, "display_name": "x".repeat(101)}).to_string(), 422, "validation_failed", Some(json!({"display_name": "must be at most 100 characters"}))),
    ];
    for (reason, content_type, body, status, code, fields) in cases {
        let mut request = app.client.post(app.url("/auth/signup")).body(body);
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{reason}");
        assert!(response.headers().get("set-cookie").is_none(), "{reason}");
        let got: Value = response.json().await.unwrap();
        assert_eq!(got["error"]["code"], code, "{reason}: {got}");
        assert!(got["error"]["message"].is_string(), "{reason}");
        assert_eq!(got["error"].get("fields").cloned(), fields, "{reason}");
    }
    for table in [
        "users",
        "profiles",
        "sessions",
        "refresh_tokens",
        "audit_events",
    ] {
        assert_eq!(
            app.count(&format!("SELECT COUNT(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
}

/// Room in the hashing queue for every request at once: these tests are about the database, not
/// about load shedding (see `limits::a_signup_flood_gets_fast_503s_…`).
fn queue_for_all(o: &mut latchkey::config::Overrides) {
    o.hash_queue = Some(100);
}

async fn fifty_concurrent_signups_with_one_email_make_one_account(db: Db) {
    let app = TestApp::spawn_with(db, queue_for_all).await;
    let requests = (0..50).map(|i| {
        let email = if i % 2 == 0 {
            "race@example.com"
        } else {
            "RACE@example.com"
        };
        app.signup(email, PASSWORD)
    });
    let statuses: Vec<u16> = futures_statuses(requests).await;
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
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM profiles").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 1);
    assert_eq!(app.count(ORPHANS).await, 0);
}

async fn a_hundred_concurrent_signups_make_a_hundred_accounts(db: Db) {
    let app = TestApp::spawn_with(db, queue_for_all).await;
    let emails: Vec<String> = (0..100).map(|i| format!("user{i}@example.com")).collect();
    let statuses = futures_statuses(emails.iter().map(|e| app.signup(e, PASSWORD))).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 100);
    assert_eq!(app.count("SELECT COUNT(*) FROM profiles").await, 100);
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 100);
    assert_eq!(app.count(ORPHANS).await, 0);
}

async fn a_database_failure_mid_signup_rolls_everything_back_with_a_generic_500(db: Db) {
    let app = TestApp::spawn(db).await;
    // Sabotage: the audit insert, the last write of the transaction, now fails.
    sqlx::query("DROP TABLE audit_events")
        .execute(app.pool())
        .await
        .unwrap();

    let response = app.signup("alice@example.com", PASSWORD).await;

    assert_eq!(response.status(), 500);
    assert!(response.headers().get("set-cookie").is_none());
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {"code": "internal", "message": "Something went wrong on our side."}})
    );
    for table in ["users", "profiles", "sessions", "refresh_tokens"] {
        assert_eq!(
            app.count(&format!("SELECT COUNT(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
    assert_eq!(app.count(ORPHANS).await, 0);
}

/// Runs the requests concurrently and returns their statuses.
async fn futures_statuses<F>(requests: impl Iterator<Item = F>) -> Vec<u16>
where
    F: std::future::Future<Output = reqwest::Response>,
{
    let responses = join_all(requests).await;
    responses.iter().map(|r| r.status().as_u16()).collect()
}
