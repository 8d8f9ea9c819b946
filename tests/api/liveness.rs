//! The liveness cache (src/store/liveness.rs): every flow that ends a session or changes the
//! account takes effect at once on the instance that ran it, with the cache warm; another
//! process's revocation is honoured by the others (PostgreSQL's NOTIFY, SQLite's poll); a lost
//! listener drops the cache; entries expire. Latency figures are the benchmark's, not asserted.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::admin_api::{admin, admin_key};
use crate::db_tests;
use crate::helpers::*;
use crate::password::{NEW_PASSWORD, reset_token};

db_tests!(
    every_flow_that_ends_a_session_takes_effect_at_once_with_a_warm_cache,
    account_changes_show_at_once_with_a_warm_cache,
    a_warm_session_expires_when_the_database_says,
    a_revocation_by_another_server_process_is_honoured,
    a_revocation_by_the_cli_is_honoured,
);

/// How long another process's revocation may take here before a test gives up (the bound is
/// 50 ms; this only keeps a broken build from hanging).
const DEADLINE: Duration = Duration::from_secs(5);

/// GET /auth/me and GET /auth/sessions (the `Authenticated` extractor) twice each: 200, and the
/// cache holds the token, the session and the account afterwards.
async fn warm(app: &TestApp, token: &str, why: &str) {
    for _ in 0..2 {
        assert_eq!(app.me(token).await.status(), 200, "{why}: /auth/me warm");
        let sessions = app
            .client
            .get(app.url("/auth/sessions"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(sessions.status(), 200, "{why}: /auth/sessions warm");
    }
}

/// Both authenticated paths refuse the token at once, with the contract's 401.
async fn assert_refused(app: &TestApp, token: &str, why: &str) {
    let me = app.me(token).await;
    assert_eq!(me.status(), 401, "{why}: /auth/me");
    assert_eq!(
        me.json::<Value>().await.unwrap(),
        unauthenticated(),
        "{why}"
    );
    let sessions = app
        .client
        .get(app.url("/auth/sessions"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(sessions.status(), 401, "{why}: /auth/sessions");
}

async fn every_flow_that_ends_a_session_takes_effect_at_once_with_a_warm_cache(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, |o| o.refresh_grace_period = Some(0)).await;
    let (_, key) = admin_key(&app).await;
    let bearer_post = |path: &'static str, token: String| {
        let request = app.client.post(app.url(path)).bearer_auth(token);
        async move { request.send().await.unwrap() }
    };

    // First, so that the reset link is the second email (after the signup's verification).
    let reset = app.signed_up("reset@example.com").await;
    warm(&app, &reset.access_token, "reset").await;
    let token = reset_token(&app, &sink, "reset@example.com", 2).await;
    assert_eq!(app.reset(&token, NEW_PASSWORD).await.status(), 204);
    assert_refused(&app, &reset.access_token, "password reset").await;

    let logout = app.signed_up("logout@example.com").await;
    warm(&app, &logout.access_token, "logout").await;
    let response = bearer_post("/auth/logout", logout.access_token.clone()).await;
    assert_eq!(response.status(), 204);
    assert_refused(&app, &logout.access_token, "logout").await;

    let all = app.signed_up("all@example.com").await;
    warm(&app, &all.access_token, "logout-all").await;
    let response = bearer_post("/auth/logout-all", all.access_token.clone()).await;
    assert_eq!(response.status(), 204);
    assert_refused(&app, &all.access_token, "logout-all").await;

    // One session of the user revokes another; a password change ends the others but not its own.
    let one = app.signed_up("own@example.com").await;
    let two = Session::from_response(app.login("own@example.com", PASSWORD).await).await;
    let three = Session::from_response(app.login("own@example.com", PASSWORD).await).await;
    for session in [&one, &two, &three] {
        warm(&app, &session.access_token, "own sessions").await;
    }
    let sid = TestApp::claims(&one.access_token)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = app
        .client
        .delete(app.url(&format!("/auth/sessions/{sid}")))
        .bearer_auth(&two.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_refused(&app, &one.access_token, "DELETE /auth/sessions/{id}").await;
    let response = app
        .change_password(&two.access_token, PASSWORD, NEW_PASSWORD)
        .await;
    assert_eq!(response.status(), 204);
    assert_refused(&app, &three.access_token, "password change").await;
    assert_eq!(app.me(&two.access_token).await.status(), 200, "the changer");

    // A reused refresh token ends its session.
    let reuse = app.signed_up("reuse@example.com").await;
    let next = app.refresh(&reuse.refresh_token).await;
    assert_eq!(next.status(), 200);
    let next = Session::from_response(next).await;
    warm(&app, &next.access_token, "reuse").await;
    app.clock.advance(Duration::from_millis(1));
    assert_eq!(app.refresh(&reuse.refresh_token).await.status(), 401);
    assert_refused(&app, &next.access_token, "refresh token reuse").await;

    // The operator: disable, revoke every session, delete.
    for (email, method, suffix, body) in [
        (
            "disabled@example.com",
            Method::PATCH,
            "",
            json!({"disabled": true}),
        ),
        (
            "revoked@example.com",
            Method::DELETE,
            "/sessions",
            Value::Null,
        ),
        ("deleted@example.com", Method::DELETE, "", Value::Null),
    ] {
        let session = app.signed_up(email).await;
        warm(&app, &session.access_token, email).await;
        let path = format!("/admin/v1/users/{}{suffix}", session.user_id());
        let mut request = admin(&app, &key, method, &path);
        if !body.is_null() {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{email}: {}",
            response.status()
        );
        assert_refused(&app, &session.access_token, email).await;
    }

    // The user deletes the account.
    let gone = app.signed_up("gone@example.com").await;
    warm(&app, &gone.access_token, "delete me").await;
    let response = app
        .client
        .delete(app.url("/auth/me"))
        .bearer_auth(&gone.access_token)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_refused(&app, &gone.access_token, "DELETE /auth/me").await;
}

async fn account_changes_show_at_once_with_a_warm_cache(db: Db) {
    let app = TestApp::spawn(db).await;
    let (_, key) = admin_key(&app).await;
    let alice = app.signed_up("alice@example.com").await;
    warm(&app, &alice.access_token, "alice").await;

    let response = app
        .client
        .patch(app.url("/auth/me/profile"))
        .bearer_auth(&alice.access_token)
        .json(&json!({"display_name": "Alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let me: Value = app.me(&alice.access_token).await.json().await.unwrap();
    assert_eq!(me["profile"]["display_name"], "Alice");

    let path = format!("/admin/v1/users/{}", alice.user_id());
    let response = admin(&app, &key, Method::PATCH, &path)
        .json(&json!({"app_metadata": {"plan": "pro"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let me: Value = app.me(&alice.access_token).await.json().await.unwrap();
    assert_eq!(me["user"]["app_metadata"], json!({"plan": "pro"}), "{me}");

    // Another login shows in `last_login_at` at once.
    let before = me["profile"]["last_login_at"].clone();
    app.clock.advance(Duration::from_secs(2));
    assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 200);
    let me: Value = app.me(&alice.access_token).await.json().await.unwrap();
    assert_ne!(me["profile"]["last_login_at"], before, "{me}");
}

async fn a_warm_session_expires_when_the_database_says(db: Db) {
    let app = TestApp::spawn_with(db, |o| o.session_idle_timeout = Some(60)).await;
    let alice = app.signed_up("alice@example.com").await;
    warm(&app, &alice.access_token, "alice").await;
    app.clock.advance(Duration::from_secs(61));
    assert_refused(&app, &alice.access_token, "idle timeout").await;

    // A revocation written behind the service's back (no flow, no notice) is not seen while the
    // entry lives, but no longer than `MAX_AGE`.
    let bob = app.signed_up("bob@example.com").await;
    warm(&app, &bob.access_token, "bob").await;
    sqlx::query("UPDATE sessions SET revoked_at = 1 WHERE user_id = $1")
        .bind(bob.user_id())
        .execute(app.pool())
        .await
        .unwrap();
    app.clock.advance(latchkey::store::liveness::MAX_AGE);
    assert_refused(&app, &bob.access_token, "max age").await;
}

/// Polls `GET /auth/me` on `url` until it answers 401, within `DEADLINE`.
async fn refused_within_deadline(client: &reqwest::Client, url: &str, token: &str) -> bool {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while tokio::time::Instant::now() < deadline {
        let status = client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status();
        if status == 401 {
            return true;
        }
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

async fn a_revocation_by_another_server_process_is_honoured(db: Db) {
    let test_db = TestDb::new(db).await;
    let kek = latchkey::keys::Kek::generate_encoded();
    let a = ServerProcess::serve(&test_db, &kek, &[]).await;
    let b = ServerProcess::serve(&test_db, &kek, &[]).await;
    let signup = a.signup("alice@example.com").await;
    assert_eq!(signup.status(), 201);
    let alice = Session::from_response(signup).await;
    for _ in 0..3 {
        assert_eq!(b.me(&alice.access_token).await.status(), 200, "warm on B");
    }
    let client = reqwest::Client::new();
    let response = client
        .post(a.url("/auth/logout"))
        .bearer_auth(&alice.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(
        a.me(&alice.access_token).await.status(),
        401,
        "at once on A"
    );
    assert!(
        refused_within_deadline(&client, &b.url("/auth/me"), &alice.access_token).await,
        "B still accepts a session A revoked"
    );
}

async fn a_revocation_by_the_cli_is_honoured(db: Db) {
    let app = TestApp::spawn(db).await;
    let alice = app.signed_up("alice@example.com").await;
    warm(&app, &alice.access_token, "alice").await;
    let output = run(
        &[
            "sessions",
            "revoke",
            "--user",
            "alice@example.com",
            "--database-url",
            &app.db.url,
            "--key-encryption-key",
            &app.kek,
        ],
        &std::env::temp_dir(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        refused_within_deadline(&app.client, &app.url("/auth/me"), &alice.access_token).await,
        "the server still accepts a session the CLI revoked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listener_drops_the_cache() {
    if !postgres_available().await {
        return;
    }
    let app = TestApp::spawn(Db::Postgres).await;
    let alice = app.signed_up("alice@example.com").await;
    // Wait for the listener: the cache is off until it listens.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !latchkey::store::liveness::is_usable(&app.state.store) {
        assert!(tokio::time::Instant::now() < deadline, "never listening");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    warm(&app, &alice.access_token, "alice").await;
    // Revoked behind the service's back: no NOTIFY, so the warm entry still answers...
    sqlx::query("UPDATE sessions SET revoked_at = 1")
        .execute(app.pool())
        .await
        .unwrap();
    assert_eq!(app.me(&alice.access_token).await.status(), 200, "cached");
    // ...until the listening connection is lost: then the cache is dropped at once (well within
    // `MAX_AGE`, 10 s, after which the entry would have gone anyway).
    let name: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(app.pool())
        .await
        .unwrap();
    let killed: i64 = sqlx::query_scalar(
        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = $1 AND query LIKE 'LISTEN%'",
    )
    .bind(&name)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(killed, 1, "one listening connection");
    assert!(
        refused_within_deadline(&app.client, &app.url("/auth/me"), &alice.access_token).await,
        "a cache that outlived its listener"
    );
    // The listener comes back by itself and the cache with it.
    let bob = app.signed_up("bob@example.com").await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !latchkey::store::liveness::is_usable(&app.state.store) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never listening again"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    warm(&app, &bob.access_token, "bob").await;
    let response = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(&bob.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_refused(&app, &bob.access_token, "after the reconnection").await;
}
