//! POST /auth/logout: revokes the caller's session, found from the access token or the refresh
//! cookie, and clears both cookies whatever it was given.

use std::time::Duration;

use serde_json::Value;

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    logout_with_a_bearer_token_revokes_the_session_and_clears_cookies,
    logout_with_the_access_cookie_revokes_the_session,
    logout_with_only_the_refresh_cookie_revokes_that_session,
    logout_with_an_expired_access_token_uses_the_refresh_cookie,
    logout_with_nothing_clears_cookies_and_changes_nothing,
    logout_with_an_unknown_token_changes_nothing,
    logout_twice_records_one_logout,
    logout_leaves_the_users_other_sessions_alone,
);

/// Asserts a logout's answer: 204, no body, both cookies cleared.
async fn assert_logged_out(response: reqwest::Response) {
    assert_eq!(response.status(), 204);
    assert_session_cookies_cleared(response.headers());
    assert_eq!(response.text().await.unwrap(), "");
}

/// Asserts that the only session was revoked by a logout, recorded once, and is unusable now.
async fn assert_session_logged_out(app: &TestApp, session: &Session) {
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL")
            .await,
        1
    );
    assert_eq!(
        app.text("SELECT revoked_reason FROM sessions")
            .await
            .unwrap(),
        "logout"
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM audit_events WHERE kind = 'logout' \
             AND session_id = (SELECT id FROM sessions) AND user_id = (SELECT user_id FROM sessions)"
        )
        .await,
        1
    );
    let me = app.me(&session.access_token).await;
    assert_eq!(me.status(), 401);
    assert_eq!(me.json::<Value>().await.unwrap(), unauthenticated());
    let refresh = app.refresh(&session.refresh_token).await;
    assert_eq!(refresh.status(), 401);
    assert_session_cookies_cleared(refresh.headers());
    assert_eq!(refresh.json::<Value>().await.unwrap(), session_revoked());
    // A refresh token of a logged-out session is refused, not treated as a stolen one.
    assert_eq!(
        app.text("SELECT revoked_reason FROM sessions")
            .await
            .unwrap(),
        "logout"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'refresh_reuse_detected'")
            .await,
        0
    );
}

async fn logout_with_a_bearer_token_revokes_the_session_and_clears_cookies(db: Db) {
    let app = TestApp::spawn(db).await;
    let session = app.signed_up("alice@example.com").await;

    let response = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(&session.access_token)
        .send()
        .await
        .unwrap();

    // The removal cookies carry exactly what the cookies were set with, but Max-Age.
    let cleared = set_cookies(response.headers());
    for (name, set) in &session.cookies {
        let mut expected: Vec<String> = set
            .attributes
            .iter()
            .map(|a| match a.starts_with("max-age=") {
                true => "max-age=0".to_owned(),
                false => a.clone(),
            })
            .collect();
        expected.sort();
        assert_eq!(cleared[name].attributes, expected, "{name}");
    }
    assert_logged_out(response).await;
    assert_session_logged_out(&app, &session).await;
}

async fn logout_with_the_access_cookie_revokes_the_session(db: Db) {
    let app = TestApp::spawn(db).await;
    let session = app.signed_up("alice@example.com").await;

    let response = app
        .post_with_cookie(
            "/auth/logout",
            &format!("__Host-lk_access={}", session.access_token),
        )
        .await;

    assert_logged_out(response).await;
    assert_session_logged_out(&app, &session).await;
}

async fn logout_with_only_the_refresh_cookie_revokes_that_session(db: Db) {
    let app = TestApp::spawn(db).await;
    let session = app.signed_up("alice@example.com").await;

    let response = app
        .post_with_cookie(
            "/auth/logout",
            &format!("__Secure-lk_refresh={}", session.refresh_token),
        )
        .await;

    assert_logged_out(response).await;
    assert_session_logged_out(&app, &session).await;
}

async fn logout_with_an_expired_access_token_uses_the_refresh_cookie(db: Db) {
    let app = TestApp::spawn(db).await;
    let session = app.signed_up("alice@example.com").await;
    app.clock.advance(Duration::from_secs(900 + 61));
    assert_eq!(app.me(&session.access_token).await.status(), 401);

    let response = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(&session.access_token)
        .header(
            "cookie",
            format!("__Secure-lk_refresh={}", session.refresh_token),
        )
        .send()
        .await
        .unwrap();

    assert_logged_out(response).await;
    assert_session_logged_out(&app, &session).await;
}

async fn logout_with_nothing_clears_cookies_and_changes_nothing(db: Db) {
    let app = TestApp::spawn(db).await;
    let session = app.signed_up("alice@example.com").await;

    let response = app
        .client
        .post(app.url("/auth/logout"))
        .send()
        .await
        .unwrap();

    assert_logged_out(response).await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL")
            .await,
        1
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_events").await, 1);
    assert_eq!(app.me(&session.access_token).await.status(), 200);
}

async fn logout_with_an_unknown_token_changes_nothing(db: Db) {
    let app = TestApp::spawn(db).await;
    let session = app.signed_up("alice@example.com").await;

    let garbage_bearer = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    assert_logged_out(garbage_bearer).await;
    let unknown_refresh = app
        .post_with_cookie(
            "/auth/logout",
            &format!("__Secure-lk_refresh={}", "A".repeat(43)),
        )
        .await;
    assert_logged_out(unknown_refresh).await;
    // An access token is no refresh token, even in the refresh cookie.
    let swapped = app
        .post_with_cookie(
            "/auth/logout",
            &format!("__Secure-lk_refresh={}", session.access_token),
        )
        .await;
    assert_logged_out(swapped).await;

    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL")
            .await,
        1
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_events").await, 1);
    assert_eq!(app.me(&session.access_token).await.status(), 200);
}

async fn logout_twice_records_one_logout(db: Db) {
    let app = TestApp::spawn(db).await;
    let session = app.signed_up("alice@example.com").await;
    let cookie = format!("__Secure-lk_refresh={}", session.refresh_token);
    assert_logged_out(app.post_with_cookie("/auth/logout", &cookie).await).await;
    let revoked_at = app.count("SELECT revoked_at FROM sessions").await;
    app.clock.advance(Duration::from_secs(5));

    assert_logged_out(app.post_with_cookie("/auth/logout", &cookie).await).await;

    assert_eq!(
        app.count("SELECT revoked_at FROM sessions").await,
        revoked_at
    );
    assert_session_logged_out(&app, &session).await;
}

async fn logout_leaves_the_users_other_sessions_alone(db: Db) {
    let app = TestApp::spawn(db).await;
    let laptop = app.signed_up("alice@example.com").await;
    let phone = app.login("alice@example.com", PASSWORD).await;
    assert_eq!(phone.status(), 200);
    let phone = Session::from_response(phone).await;
    let laptop_session = app
        .text("SELECT id FROM sessions ORDER BY created_at, id LIMIT 1")
        .await
        .unwrap();

    let response = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(&laptop.access_token)
        .send()
        .await
        .unwrap();

    assert_logged_out(response).await;
    assert_eq!(
        app.text("SELECT id FROM sessions WHERE revoked_at IS NOT NULL")
            .await
            .unwrap(),
        laptop_session
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL")
            .await,
        1
    );
    assert_eq!(app.me(&laptop.access_token).await.status(), 401);
    let me = app.me(&phone.access_token).await;
    assert_eq!(me.status(), 200);
    assert_eq!(
        me.json::<Value>().await.unwrap()["user"],
        laptop.body["user"]
    );
    let refreshed = app.refresh(&phone.refresh_token).await;
    assert_eq!(refreshed.status(), 200);
    assert_eq!(app.refresh(&laptop.refresh_token).await.status(), 401);
}
