//! POST /auth/refresh: rotation, reuse detection, the grace window, idle and absolute expiry.

use std::time::Duration;

use latchkey::tokens::{Purpose, hash_opaque};
use secrecy::SecretString;
use serde_json::Value;

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    refresh_rotates_the_token_and_returns_a_new_session,
    a_spent_token_replayed_after_the_grace_window_revokes_the_session,
    a_spent_token_replayed_without_a_grace_period_revokes_the_session,
    the_predecessor_within_the_grace_window_gets_the_same_successor,
    twenty_parallel_refreshes_with_one_token_get_one_successor,
    only_the_immediate_predecessor_has_a_grace_window,
    parallel_replays_of_a_spent_token_revoke_the_session_once,
    refresh_without_a_valid_refresh_token_is_401_and_clears_cookies,
    refresh_after_the_idle_timeout_is_401,
    refresh_is_capped_by_the_absolute_lifetime,
    reuse_is_detected_across_instances,
    another_instance_within_the_grace_window_gives_the_same_successor,
);

/// How the store keeps a refresh token.
fn stored_hash(token: &str) -> String {
    hash_opaque(Purpose::Refresh, &SecretString::from(token.to_owned()))
}

async fn unspent_hash(app: &TestApp) -> String {
    app.text("SELECT token_hash FROM refresh_tokens WHERE spent_at IS NULL")
        .await
        .unwrap()
}

/// Asserts a refused refresh: 401 `session_revoked` and both cookies cleared.
async fn assert_session_revoked(response: reqwest::Response, why: &str) {
    assert_eq!(response.status(), 401, "{why}");
    assert_session_cookies_cleared(response.headers());
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        session_revoked(),
        "{why}"
    );
}

async fn assert_revoked_for_reuse(app: &TestApp) {
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL")
            .await,
        1
    );
    assert_eq!(
        app.text("SELECT revoked_reason FROM sessions")
            .await
            .unwrap(),
        "refresh_token_reuse"
    );
    // Written in its own transaction: it survives the failed request.
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM audit_events WHERE kind = 'refresh_reuse_detected' \
             AND session_id = (SELECT id FROM sessions) AND user_id = (SELECT user_id FROM sessions)"
        )
        .await,
        1
    );
}

async fn refreshed(app: &TestApp, token: &str) -> Session {
    let response = app.refresh(token).await;
    assert_eq!(response.status(), 200);
    Session::from_response(response).await
}

async fn refresh_rotates_the_token_and_returns_a_new_session(db: Db) {
    let app = TestApp::spawn(db).await;
    let signup = app.signed_up("alice@example.com").await;
    let signed_up_at = app.count("SELECT last_used_at FROM sessions").await;
    app.clock.advance(Duration::from_secs(5));

    let response = app.refresh(&signup.refresh_token).await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let session = Session::from_response(response).await;
    let body = &session.body;
    assert_eq!(body["user"], signup.body["user"]);
    assert_eq!(body["profile"], signup.body["profile"]);
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
    assert_ne!(session.access_token, signup.access_token);

    // Both cookies, set exactly as signup sets them.
    assert_session_cookies_set(&session, 604_800);
    assert_eq!(
        session.cookies.len(),
        2,
        "no device cookie: only a login sets it"
    );
    assert_ne!(session.refresh_token, signup.refresh_token);

    // Rows: the old token spent, its successor the one unspent token, the session pushed out.
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM refresh_tokens").await, 2);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM refresh_tokens WHERE spent_at IS NULL")
            .await,
        1
    );
    assert_eq!(
        unspent_hash(&app).await,
        stored_hash(&session.refresh_token)
    );
    let last_used_at = app.count("SELECT last_used_at FROM sessions").await;
    assert!(
        last_used_at >= signed_up_at + 5000,
        "{signed_up_at} → {last_used_at}"
    );
    assert_eq!(
        app.count("SELECT idle_expires_at FROM sessions").await,
        last_used_at + 7 * 24 * 3600 * 1000
    );
    let spent_at = format!(
        "SELECT spent_at FROM refresh_tokens WHERE token_hash = '{}'",
        stored_hash(&signup.refresh_token)
    );
    assert_eq!(app.count(&spent_at).await, last_used_at);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM audit_events WHERE kind = 'refresh' \
             AND session_id = (SELECT id FROM sessions) AND user_id = (SELECT user_id FROM sessions)"
        )
        .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL")
            .await,
        0
    );

    // The new access token works, and the chain goes on.
    let me = app.me(&session.access_token).await;
    assert_eq!(me.status(), 200);
    assert_eq!(
        me.json::<Value>().await.unwrap()["user"]["id"],
        signup.user_id()
    );
    let next = refreshed(&app, &session.refresh_token).await;
    assert_ne!(next.refresh_token, session.refresh_token);
    assert_eq!(app.count("SELECT COUNT(*) FROM refresh_tokens").await, 3);
    assert_eq!(unspent_hash(&app).await, stored_hash(&next.refresh_token));
}

async fn a_spent_token_replayed_after_the_grace_window_revokes_the_session(db: Db) {
    let app = TestApp::spawn(db).await;
    let signup = app.signed_up("alice@example.com").await;
    let first = refreshed(&app, &signup.refresh_token).await;
    app.clock.advance(Duration::from_secs(11));

    let replay = app.refresh(&signup.refresh_token).await;

    assert_session_revoked(replay, "replayed spent token").await;
    assert_revoked_for_reuse(&app).await;
    // The whole session is over: its current token and its newest access token too.
    assert_session_revoked(app.refresh(&first.refresh_token).await, "successor").await;
    let me = app.me(&first.access_token).await;
    assert_eq!(me.status(), 401);
    assert_eq!(me.json::<Value>().await.unwrap(), unauthenticated());
    assert_eq!(app.me(&signup.access_token).await.status(), 401);
    // Later refusals do not revoke again or add events.
    assert_revoked_for_reuse(&app).await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'refresh'")
            .await,
        1
    );
}

async fn a_spent_token_replayed_without_a_grace_period_revokes_the_session(db: Db) {
    let app = TestApp::spawn_with(db, |o| o.refresh_grace_period = Some(0)).await;
    let signup = app.signed_up("alice@example.com").await;
    let first = refreshed(&app, &signup.refresh_token).await;
    // One millisecond later, so that the replay is not in the very millisecond of the rotation,
    // which a grace period of 0 still covers (`now - spent_at <= grace`).
    app.clock.advance(Duration::from_millis(1));

    assert_session_revoked(app.refresh(&signup.refresh_token).await, "replay").await;

    assert_revoked_for_reuse(&app).await;
    assert_session_revoked(app.refresh(&first.refresh_token).await, "successor").await;
    assert_eq!(app.me(&first.access_token).await.status(), 401);
}

async fn the_predecessor_within_the_grace_window_gets_the_same_successor(db: Db) {
    let app = TestApp::spawn(db).await;
    let signup = app.signed_up("alice@example.com").await;
    let first = refreshed(&app, &signup.refresh_token).await;
    let idle_expires_at = app.count("SELECT idle_expires_at FROM sessions").await;

    let again = app.refresh(&signup.refresh_token).await;
    assert_eq!(again.status(), 200);
    let again = Session::from_response(again).await;
    assert_eq!(again.refresh_token, first.refresh_token);
    assert_eq!(again.body["user"], signup.body["user"]);
    assert_eq!(again.body["expires_in"], 900);

    // Nine seconds on, still within the default 10 s.
    app.clock.advance(Duration::from_secs(9));
    let late = app.refresh(&signup.refresh_token).await;
    assert_eq!(late.status(), 200);
    let late = Session::from_response(late).await;
    assert_eq!(late.refresh_token, first.refresh_token);
    assert_eq!(
        late.cookies["__Host-lk_access"].attributes,
        attrs(&[
            "httponly",
            "secure",
            "samesite=Lax",
            "path=/",
            "max-age=900"
        ])
    );
    // The refresh cookie lives until the session's idle expiry, which the twin does not move:
    // 9 s and the milliseconds the requests took less than a full idle timeout.
    let refresh_attributes = &late.cookies["__Secure-lk_refresh"].attributes;
    assert!(
        [
            attrs(&[
                "httponly",
                "secure",
                "samesite=Strict",
                "path=/auth",
                "max-age=604790"
            ]),
            attrs(&[
                "httponly",
                "secure",
                "samesite=Strict",
                "path=/auth",
                "max-age=604791"
            ]),
        ]
        .contains(refresh_attributes),
        "{refresh_attributes:?}"
    );
    assert_eq!(app.me(&late.access_token).await.status(), 200);

    // One rotation happened, not three.
    assert_eq!(app.count("SELECT COUNT(*) FROM refresh_tokens").await, 2);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM refresh_tokens WHERE spent_at IS NULL")
            .await,
        1
    );
    assert_eq!(unspent_hash(&app).await, stored_hash(&first.refresh_token));
    assert_eq!(
        app.count("SELECT idle_expires_at FROM sessions").await,
        idle_expires_at
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'refresh'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'refresh_reuse_detected'")
            .await,
        0
    );
    // And the successor rotates as usual.
    let next = refreshed(&app, &first.refresh_token).await;
    assert_ne!(next.refresh_token, first.refresh_token);
}

async fn twenty_parallel_refreshes_with_one_token_get_one_successor(db: Db) {
    let app = TestApp::spawn(db).await;
    let signup = app.signed_up("alice@example.com").await;

    let responses = join_all((0..20).map(|_| app.refresh(&signup.refresh_token))).await;

    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let successors: Vec<String> = responses
        .iter()
        .map(|r| {
            set_cookies(r.headers())["__Secure-lk_refresh"]
                .value
                .clone()
        })
        .collect();
    assert!(
        successors.iter().all(|s| *s == successors[0]),
        "{successors:?}"
    );
    assert_ne!(successors[0], signup.refresh_token);
    assert_eq!(app.count("SELECT COUNT(*) FROM refresh_tokens").await, 2);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM refresh_tokens WHERE spent_at IS NULL")
            .await,
        1
    );
    assert_eq!(unspent_hash(&app).await, stored_hash(&successors[0]));
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'refresh'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'refresh_reuse_detected'")
            .await,
        0
    );
    // Every access token handed out works.
    for response in responses {
        let session = Session::from_response(response).await;
        assert_eq!(app.me(&session.access_token).await.status(), 200);
    }
    refreshed(&app, &successors[0]).await;
}

async fn parallel_replays_of_a_spent_token_revoke_the_session_once(db: Db) {
    let app = TestApp::spawn(db).await;
    let signup = app.signed_up("alice@example.com").await;
    let first = refreshed(&app, &signup.refresh_token).await;
    app.clock.advance(Duration::from_secs(11));

    let replays = join_all((0..10).map(|_| app.refresh(&signup.refresh_token))).await;

    for replay in replays {
        assert_session_revoked(replay, "parallel replay").await;
    }
    assert_revoked_for_reuse(&app).await;
    assert_session_revoked(app.refresh(&first.refresh_token).await, "successor").await;
}

async fn only_the_immediate_predecessor_has_a_grace_window(db: Db) {
    let app = TestApp::spawn(db).await;
    let signup = app.signed_up("alice@example.com").await;
    let first = refreshed(&app, &signup.refresh_token).await;
    let second = refreshed(&app, &first.refresh_token).await;

    // Within 10 s of its spending, but two rotations back: a replay, not a concurrent tab.
    assert_session_revoked(app.refresh(&signup.refresh_token).await, "grandparent").await;

    assert_revoked_for_reuse(&app).await;
    assert_session_revoked(app.refresh(&second.refresh_token).await, "current").await;
    assert_session_revoked(app.refresh(&first.refresh_token).await, "predecessor").await;
}

async fn refresh_without_a_valid_refresh_token_is_401_and_clears_cookies(db: Db) {
    let app = TestApp::spawn(db).await;
    let signup = app.signed_up("alice@example.com").await;
    let unknown = "A".repeat(43);
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no cookie", None),
        ("empty cookie", Some("__Secure-lk_refresh=".into())),
        ("garbage", Some("__Secure-lk_refresh=garbage".into())),
        (
            "unknown token of the right shape",
            Some(format!("__Secure-lk_refresh={unknown}")),
        ),
        (
            "the access token in the refresh cookie",
            Some(format!("__Secure-lk_refresh={}", signup.access_token)),
        ),
        (
            "the refresh token in the access cookie",
            Some(format!("__Host-lk_access={}", signup.refresh_token)),
        ),
        (
            "the refresh token without the cookie prefix",
            Some(format!("lk_refresh={}", signup.refresh_token)),
        ),
    ];
    for (why, cookie) in cases {
        let mut request = app.client.post(app.url("/auth/refresh"));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        assert_session_revoked(request.send().await.unwrap(), why).await;
    }
    // A bearer header is not a refresh token either.
    let bearer = app
        .client
        .post(app.url("/auth/refresh"))
        .bearer_auth(&signup.access_token)
        .send()
        .await
        .unwrap();
    assert_session_revoked(bearer, "bearer access token").await;

    // None of that touched the session.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL")
            .await,
        1
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM refresh_tokens").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_events").await, 1);
    refreshed(&app, &signup.refresh_token).await;
}

async fn refresh_after_the_idle_timeout_is_401(db: Db) {
    let app = TestApp::spawn_with(db, |o| o.session_idle_timeout = Some(60)).await;
    let signup = app.signed_up("alice@example.com").await;
    assert!(
        signup.cookies["__Secure-lk_refresh"]
            .attributes
            .contains(&"max-age=60".to_owned())
    );

    // Each refresh pushes the idle expiry out: 100 s after signup, the session lives on.
    app.clock.advance(Duration::from_secs(50));
    let first = refreshed(&app, &signup.refresh_token).await;
    assert!(
        first.cookies["__Secure-lk_refresh"]
            .attributes
            .contains(&"max-age=60".to_owned())
    );
    app.clock.advance(Duration::from_secs(50));
    let second = refreshed(&app, &first.refresh_token).await;

    app.clock.advance(Duration::from_secs(61));
    assert_session_revoked(app.refresh(&second.refresh_token).await, "idle").await;

    // Expired, not revoked, and no longer usable with the access token either.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM refresh_tokens WHERE spent_at IS NULL")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'refresh_reuse_detected'")
            .await,
        0
    );
    let me = app.me(&second.access_token).await;
    assert_eq!(me.status(), 401);
    assert_eq!(me.json::<Value>().await.unwrap(), unauthenticated());
}

async fn refresh_is_capped_by_the_absolute_lifetime(db: Db) {
    let app = TestApp::spawn_with(db, |o| {
        o.session_idle_timeout = Some(100);
        o.session_absolute_lifetime = Some(120);
    })
    .await;
    let signup = app.signed_up("alice@example.com").await;
    assert!(
        signup.cookies["__Secure-lk_refresh"]
            .attributes
            .contains(&"max-age=100".to_owned())
    );

    app.clock.advance(Duration::from_secs(90));
    let late = refreshed(&app, &signup.refresh_token).await;

    // The idle expiry is capped by the absolute one, and the cookie lives until then: whole
    // seconds from the refresh to the absolute expiry, rounded down (about 30).
    let absolute_expires_at = app.count("SELECT absolute_expires_at FROM sessions").await;
    let refreshed_at = app.count("SELECT last_used_at FROM sessions").await;
    assert_eq!(
        app.count("SELECT idle_expires_at FROM sessions").await,
        absolute_expires_at
    );
    let left = (absolute_expires_at - refreshed_at) / 1000;
    assert!((29..=30).contains(&left), "{left}");
    assert_eq!(
        late.cookies["__Secure-lk_refresh"].attributes,
        attrs(&[
            "httponly",
            "secure",
            "samesite=Strict",
            "path=/auth",
            &format!("max-age={left}")
        ])
    );
    assert_eq!(app.me(&late.access_token).await.status(), 200);

    app.clock.advance(Duration::from_secs(31));
    assert_session_revoked(app.refresh(&late.refresh_token).await, "absolute").await;
    assert_eq!(app.me(&late.access_token).await.status(), 401);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL")
            .await,
        0
    );
}

async fn reuse_is_detected_across_instances(db: Db) {
    let a = TestApp::spawn(db).await;
    let b = a.another_instance(|_| {}).await;
    let signup = a.signed_up("alice@example.com").await;
    let first = refreshed(&a, &signup.refresh_token).await;

    b.clock.advance(Duration::from_secs(11));
    assert_session_revoked(b.refresh(&signup.refresh_token).await, "replay on B").await;

    assert_revoked_for_reuse(&a).await;
    assert_session_revoked(a.refresh(&first.refresh_token).await, "successor on A").await;
    assert_eq!(a.me(&first.access_token).await.status(), 401);
    assert_eq!(b.me(&first.access_token).await.status(), 401);
}

async fn another_instance_within_the_grace_window_gives_the_same_successor(db: Db) {
    let a = TestApp::spawn(db).await;
    let b = a.another_instance(|_| {}).await;
    let signup = a.signed_up("alice@example.com").await;
    let first = refreshed(&a, &signup.refresh_token).await;

    let twin = refreshed(&b, &signup.refresh_token).await;

    assert_eq!(twin.refresh_token, first.refresh_token);
    // Tokens signed by one instance verify on the other.
    assert_eq!(a.me(&twin.access_token).await.status(), 200);
    assert_eq!(b.me(&first.access_token).await.status(), 200);
    assert_eq!(a.count("SELECT COUNT(*) FROM refresh_tokens").await, 2);
    assert_eq!(
        a.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL")
            .await,
        1
    );
    refreshed(&b, &first.refresh_token).await;
}
