//! Session management: POST /auth/logout-all, GET /auth/sessions, DELETE /auth/sessions/{id},
//! and the job that prunes sessions that ended more than `PRUNE_AFTER` ago.

use std::time::Duration;

use latchkey::clock::rfc3339;
use latchkey::jobs::{PRUNE_AFTER, prune_sessions};
use serde_json::{Value, json};

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    logout_all_with_a_bearer_token_revokes_every_session_of_the_user,
    logout_all_with_the_access_cookie_revokes_every_session,
    logout_all_keeps_the_reason_of_sessions_that_had_already_ended,
    logout_all_without_authentication_is_401_and_changes_nothing,
    sessions_lists_the_callers_live_sessions_most_recently_used_first,
    a_refresh_moves_its_session_to_the_front_of_the_list,
    sessions_leaves_out_idle_expired_sessions,
    sessions_requires_authentication,
    deleting_another_own_session_revokes_only_that_session,
    deleting_the_current_session_logs_it_out,
    deleting_a_session_that_is_not_the_callers_live_one_is_404,
    deleting_a_session_requires_authentication,
    prune_deletes_sessions_that_ended_more_than_a_day_ago,
    prune_deletes_sessions_past_their_absolute_lifetime,
    two_instances_pruning_at_once_delete_each_session_once,
);

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn not_found() -> Value {
    json!({"error": {"code": "not_found", "message": "Not found."}})
}

/// Signs up with this `User-Agent`, which then names the session.
async fn signup_from(app: &TestApp, email: &str, user_agent: &str) -> Session {
    let response = app
        .client
        .post(app.url("/auth/signup"))
        .header("user-agent", user_agent)
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        201,
        "signup of {email} from {user_agent}"
    );
    Session::from_response(response).await
}

/// Logs in with this `User-Agent`, which then names the session.
async fn login_from(app: &TestApp, email: &str, user_agent: &str) -> Session {
    let response = app
        .client
        .post(app.url("/auth/login"))
        .header("user-agent", user_agent)
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "login of {email} from {user_agent}");
    Session::from_response(response).await
}

async fn refreshed(app: &TestApp, session: &Session) -> Session {
    let response = app.refresh(&session.refresh_token).await;
    assert_eq!(response.status(), 200);
    Session::from_response(response).await
}

/// The id of the session opened from this `User-Agent`.
async fn session_id(app: &TestApp, user_agent: &str) -> String {
    app.text(&format!(
        "SELECT id FROM sessions WHERE user_agent = '{user_agent}'"
    ))
    .await
    .unwrap()
}

async fn logout(app: &TestApp, session: &Session) {
    let response = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(&session.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}

async fn logout_all(app: &TestApp, access_token: &str) -> reqwest::Response {
    app.client
        .post(app.url("/auth/logout-all"))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap()
}

async fn list(app: &TestApp, access_token: &str) -> reqwest::Response {
    app.client
        .get(app.url("/auth/sessions"))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap()
}

async fn delete(app: &TestApp, access_token: &str, id: &str) -> reqwest::Response {
    app.client
        .delete(app.url(&format!("/auth/sessions/{id}")))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap()
}

/// Asserts a 204 with an empty body and no cookie set or cleared.
async fn assert_no_content_without_cookies(response: reqwest::Response) {
    assert_eq!(response.status(), 204);
    assert!(
        set_cookies(response.headers()).is_empty(),
        "{:?}",
        response.headers()
    );
    assert_eq!(response.text().await.unwrap(), "");
}

/// Asserts a 204 with an empty body that clears both session cookies.
async fn assert_logged_out(response: reqwest::Response) {
    assert_eq!(response.status(), 204);
    assert_session_cookies_cleared(response.headers());
    assert_eq!(response.text().await.unwrap(), "");
}

/// Asserts a 401 `unauthenticated` that leaves the cookies alone.
async fn assert_unauthenticated(response: reqwest::Response, why: &str) {
    assert_eq!(response.status(), 401, "{why}");
    assert!(
        set_cookies(response.headers()).is_empty(),
        "{why}: {:?}",
        response.headers()
    );
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        unauthenticated(),
        "{why}"
    );
}

/// Asserts that a session can no longer be used: its access token is refused by /auth/me and its
/// refresh token by /auth/refresh, which does not take it for a stolen token.
async fn assert_unusable(app: &TestApp, session: &Session, why: &str) {
    let me = app.me(&session.access_token).await;
    assert_eq!(me.status(), 401, "{why}");
    assert_eq!(
        me.json::<Value>().await.unwrap(),
        unauthenticated(),
        "{why}"
    );
    let refresh = app.refresh(&session.refresh_token).await;
    assert_eq!(refresh.status(), 401, "{why}");
    assert_session_cookies_cleared(refresh.headers());
    assert_eq!(
        refresh.json::<Value>().await.unwrap(),
        session_revoked(),
        "{why}"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'refresh_reuse_detected'")
            .await,
        0,
        "{why}"
    );
}

/// Asserts that a session still works: /auth/me accepts its access token and its refresh token
/// rotates. Returns the refreshed session.
async fn assert_usable(app: &TestApp, session: &Session, why: &str) -> Session {
    let me = app.me(&session.access_token).await;
    assert_eq!(me.status(), 200, "{why}");
    assert_eq!(
        me.json::<Value>().await.unwrap()["user"],
        session.body["user"],
        "{why}"
    );
    let refresh = app.refresh(&session.refresh_token).await;
    assert_eq!(refresh.status(), 200, "{why}");
    Session::from_response(refresh).await
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z` into milliseconds since the epoch, independently of
/// the server's formatter. Panics on anything else, or on a fraction finer than milliseconds.
fn parse_utc_millis(s: &str) -> i64 {
    let b = s.as_bytes();
    assert!(
        s.len() >= 20
            && s.is_ascii()
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && s.ends_with('Z'),
        "not an RFC 3339 UTC timestamp: {s}"
    );
    let field = |from: usize, to: usize| -> i64 {
        assert!(
            b[from..to].iter().all(u8::is_ascii_digit),
            "not an RFC 3339 UTC timestamp: {s}"
        );
        s[from..to].parse().unwrap()
    };
    let (year, month, day) = (field(0, 4), field(5, 7), field(8, 10));
    let (hour, minute, second) = (field(11, 13), field(14, 16), field(17, 19));
    assert!((1..=12).contains(&month) && (1..=31).contains(&day), "{s}");
    assert!(hour < 24 && minute < 60 && second < 60, "{s}");
    let fraction = &s[19..s.len() - 1];
    let millis = if fraction.is_empty() {
        0
    } else {
        let digits = &fraction[1..];
        assert!(
            fraction.starts_with('.')
                && (1..=9).contains(&digits.len())
                && digits.bytes().all(|c| c.is_ascii_digit()),
            "bad fraction in {s}"
        );
        let nanos: i64 = format!("{digits:0<9}").parse().unwrap();
        assert_eq!(nanos % 1_000_000, 0, "finer than milliseconds: {s}");
        nanos / 1_000_000
    };
    // Days from the civil date (H. Hinnant's algorithm), March-based years.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis
}

#[test]
fn parse_utc_millis_reads_rfc3339() {
    assert_eq!(parse_utc_millis("1970-01-01T00:00:00Z"), 0);
    assert_eq!(parse_utc_millis("2000-03-01T00:00:00.5Z"), 951_868_800_500);
    assert_eq!(
        parse_utc_millis("2026-11-26T21:25:06.966Z"),
        1_795_728_306_966
    );
}

/// What GET /auth/sessions must show of the session opened from `user_agent`, from its row.
async fn view(app: &TestApp, user_agent: &str, current: bool) -> Value {
    let id = session_id(app, user_agent).await;
    let created_at = app
        .count(&format!(
            "SELECT created_at FROM sessions WHERE id = '{id}'"
        ))
        .await;
    let last_used_at = app
        .count(&format!(
            "SELECT last_used_at FROM sessions WHERE id = '{id}'"
        ))
        .await;
    json!({
        "id": id,
        "created_at": rfc3339(created_at),
        "last_used_at": rfc3339(last_used_at),
        "user_agent": user_agent,
        "ip": "127.0.0.1",
        "current": current,
        "amr": ["pwd"],
    })
}

/// Asserts a 200 listing exactly these sessions, in this order, and that every timestamp is the
/// stored one.
async fn assert_listed(app: &TestApp, response: reqwest::Response, expected: &[Value]) {
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"sessions": expected}));
    for session in body["sessions"].as_array().unwrap() {
        let id = session["id"].as_str().unwrap();
        for column in ["created_at", "last_used_at"] {
            let stored = app
                .count(&format!("SELECT {column} FROM sessions WHERE id = '{id}'"))
                .await;
            assert_eq!(
                parse_utc_millis(session[column].as_str().unwrap()),
                stored,
                "{column} of {id}: {session}"
            );
        }
    }
}

async fn user_agents(app: &TestApp, sql: &str) -> Vec<String> {
    sqlx::query_scalar(sql).fetch_all(app.pool()).await.unwrap()
}

// POST /auth/logout-all

async fn logout_all_with_a_bearer_token_revokes_every_session_of_the_user(db: Db) {
    let app = TestApp::spawn(db).await;
    let laptop = signup_from(&app, "alice@example.com", "alice-laptop").await;
    let phone = login_from(&app, "alice@example.com", "alice-phone").await;
    let tablet = login_from(&app, "alice@example.com", "alice-tablet").await;
    let bob = signup_from(&app, "bob@example.com", "bob-laptop").await;
    let alice_id = laptop.user_id().to_owned();
    let phone_session = session_id(&app, "alice-phone").await;
    let events_before = app.count("SELECT COUNT(*) FROM audit_events").await;
    app.clock.advance(Duration::from_secs(5));
    let before = app.clock.now();

    let response = logout_all(&app, &phone.access_token).await;

    assert_logged_out(response).await;
    let after = app.clock.now();
    assert_eq!(
        user_agents(
            &app,
            "SELECT user_agent FROM sessions WHERE revoked_reason = 'logout_all' ORDER BY user_agent"
        )
        .await,
        ["alice-laptop", "alice-phone", "alice-tablet"]
    );
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM sessions WHERE user_id = '{alice_id}' AND revoked_at >= {before} \
             AND revoked_at <= {after} AND revoked_reason = 'logout_all'"
        ))
        .await,
        3
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM sessions WHERE user_agent = 'bob-laptop' \
             AND revoked_at IS NULL AND revoked_reason IS NULL"
        )
        .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events").await,
        events_before + 1
    );
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM audit_events WHERE kind = 'logout_all' \
             AND user_id = '{alice_id}' AND session_id = '{phone_session}' \
             AND ip = '127.0.0.1' AND created_at >= {before} AND created_at <= {after}"
        ))
        .await,
        1
    );
    for (session, name) in [(&laptop, "laptop"), (&phone, "phone"), (&tablet, "tablet")] {
        assert_unusable(&app, session, name).await;
    }
    // The refused refreshes changed nothing: still revoked by the logout-all.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_reason = 'logout_all'")
            .await,
        3
    );
    assert_usable(&app, &bob, "bob").await;
}

async fn logout_all_with_the_access_cookie_revokes_every_session(db: Db) {
    let app = TestApp::spawn(db).await;
    let laptop = signup_from(&app, "alice@example.com", "alice-laptop").await;
    let phone = login_from(&app, "alice@example.com", "alice-phone").await;
    let bob = signup_from(&app, "bob@example.com", "bob-laptop").await;
    let laptop_session = session_id(&app, "alice-laptop").await;

    let response = app
        .post_with_cookie(
            "/auth/logout-all",
            &format!("__Host-lk_access={}", laptop.access_token),
        )
        .await;

    assert_logged_out(response).await;
    assert_eq!(
        user_agents(
            &app,
            "SELECT user_agent FROM sessions WHERE revoked_reason = 'logout_all' ORDER BY user_agent"
        )
        .await,
        ["alice-laptop", "alice-phone"]
    );
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM audit_events WHERE kind = 'logout_all' \
             AND user_id = '{}' AND session_id = '{laptop_session}'",
            laptop.user_id()
        ))
        .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'logout_all'")
            .await,
        1
    );
    assert_unusable(&app, &laptop, "laptop").await;
    assert_unusable(&app, &phone, "phone").await;
    assert_usable(&app, &bob, "bob").await;
}

async fn logout_all_keeps_the_reason_of_sessions_that_had_already_ended(db: Db) {
    let app = TestApp::spawn(db).await;
    let laptop = signup_from(&app, "alice@example.com", "alice-laptop").await;
    let old = login_from(&app, "alice@example.com", "alice-old").await;
    logout(&app, &old).await;
    let old_revoked_at = app
        .count("SELECT revoked_at FROM sessions WHERE user_agent = 'alice-old'")
        .await;
    app.clock.advance(Duration::from_secs(5));

    assert_logged_out(logout_all(&app, &laptop.access_token).await).await;

    assert_eq!(
        app.text("SELECT revoked_reason FROM sessions WHERE user_agent = 'alice-old'")
            .await
            .unwrap(),
        "logout"
    );
    assert_eq!(
        app.count("SELECT revoked_at FROM sessions WHERE user_agent = 'alice-old'")
            .await,
        old_revoked_at
    );
    assert_eq!(
        app.text("SELECT revoked_reason FROM sessions WHERE user_agent = 'alice-laptop'")
            .await
            .unwrap(),
        "logout_all"
    );
    // A second logout-all with the now revoked token is refused.
    assert_unauthenticated(
        logout_all(&app, &laptop.access_token).await,
        "token of a revoked session",
    )
    .await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'logout_all'")
            .await,
        1
    );
}

async fn logout_all_without_authentication_is_401_and_changes_nothing(db: Db) {
    let app = TestApp::spawn(db).await;
    let laptop = signup_from(&app, "alice@example.com", "alice-laptop").await;
    let phone = login_from(&app, "alice@example.com", "alice-phone").await;
    let events = app.count("SELECT COUNT(*) FROM audit_events").await;

    let nothing = app
        .client
        .post(app.url("/auth/logout-all"))
        .send()
        .await
        .unwrap();
    assert_unauthenticated(nothing, "no token").await;
    assert_unauthenticated(logout_all(&app, "not.a.token").await, "garbage bearer").await;
    // A refresh token is no access token, in the refresh cookie or as a bearer token.
    let refresh_cookie = app
        .post_with_cookie(
            "/auth/logout-all",
            &format!("__Secure-lk_refresh={}", laptop.refresh_token),
        )
        .await;
    assert_unauthenticated(refresh_cookie, "refresh cookie only").await;
    assert_unauthenticated(
        logout_all(&app, &laptop.refresh_token).await,
        "refresh token as bearer",
    )
    .await;

    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL AND revoked_reason IS NULL"
        )
        .await,
        2
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_events").await, events);
    assert_usable(&app, &laptop, "laptop").await;
    assert_usable(&app, &phone, "phone").await;
}

// GET /auth/sessions

async fn sessions_lists_the_callers_live_sessions_most_recently_used_first(db: Db) {
    let app = TestApp::spawn(db).await;
    let _laptop = signup_from(&app, "alice@example.com", "alice-laptop/1.0").await;
    app.clock.advance(Duration::from_secs(1));
    let phone = login_from(&app, "alice@example.com", "alice-phone/2.0").await;
    app.clock.advance(Duration::from_secs(1));
    let tablet = login_from(&app, "alice@example.com", "alice-tablet/3.0").await;
    app.clock.advance(Duration::from_secs(1));
    let bob = signup_from(&app, "bob@example.com", "bob-laptop/4.0").await;
    app.clock.advance(Duration::from_secs(1));
    // The most recent of all, but revoked: not listed.
    let gone = login_from(&app, "alice@example.com", "alice-gone/5.0").await;
    logout(&app, &gone).await;

    let expected = [
        view(&app, "alice-tablet/3.0", false).await,
        view(&app, "alice-phone/2.0", true).await,
        view(&app, "alice-laptop/1.0", false).await,
    ];
    assert_listed(&app, list(&app, &phone.access_token).await, &expected).await;
    // The same sessions through the access cookie, seen from the tablet.
    let from_tablet = app
        .client
        .get(app.url("/auth/sessions"))
        .header(
            "cookie",
            format!("__Host-lk_access={}", tablet.access_token),
        )
        .send()
        .await
        .unwrap();
    let expected = [
        view(&app, "alice-tablet/3.0", true).await,
        view(&app, "alice-phone/2.0", false).await,
        view(&app, "alice-laptop/1.0", false).await,
    ];
    assert_listed(&app, from_tablet, &expected).await;
    assert_listed(
        &app,
        list(&app, &bob.access_token).await,
        &[view(&app, "bob-laptop/4.0", true).await],
    )
    .await;
    // Created and last used at login; listing touches nothing.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE created_at = last_used_at")
            .await,
        5
    );
}

async fn a_refresh_moves_its_session_to_the_front_of_the_list(db: Db) {
    let app = TestApp::spawn(db).await;
    let laptop = signup_from(&app, "alice@example.com", "alice-laptop").await;
    app.clock.advance(Duration::from_secs(1));
    let phone = login_from(&app, "alice@example.com", "alice-phone").await;
    app.clock.advance(Duration::from_secs(1));
    let _tablet = login_from(&app, "alice@example.com", "alice-tablet").await;
    let laptop_created_at = app
        .count("SELECT created_at FROM sessions WHERE user_agent = 'alice-laptop'")
        .await;
    app.clock.advance(Duration::from_secs(60));
    let before = app.clock.now();

    let laptop = refreshed(&app, &laptop).await;

    let after = app.clock.now();
    let last_used_at = app
        .count("SELECT last_used_at FROM sessions WHERE user_agent = 'alice-laptop'")
        .await;
    assert!((before..=after).contains(&last_used_at), "{last_used_at}");
    assert_eq!(
        app.count("SELECT created_at FROM sessions WHERE user_agent = 'alice-laptop'")
            .await,
        laptop_created_at
    );
    let expected = [
        view(&app, "alice-laptop", true).await,
        view(&app, "alice-tablet", false).await,
        view(&app, "alice-phone", false).await,
    ];
    assert_listed(&app, list(&app, &laptop.access_token).await, &expected).await;

    app.clock.advance(Duration::from_secs(60));
    let phone = refreshed(&app, &phone).await;

    let expected = [
        view(&app, "alice-phone", false).await,
        view(&app, "alice-laptop", true).await,
        view(&app, "alice-tablet", false).await,
    ];
    assert_listed(&app, list(&app, &laptop.access_token).await, &expected).await;
    let expected = [
        view(&app, "alice-phone", true).await,
        view(&app, "alice-laptop", false).await,
        view(&app, "alice-tablet", false).await,
    ];
    assert_listed(&app, list(&app, &phone.access_token).await, &expected).await;
}

async fn sessions_leaves_out_idle_expired_sessions(db: Db) {
    let app = TestApp::spawn_with(db, |o| o.session_idle_timeout = Some(3600)).await;
    let _laptop = signup_from(&app, "alice@example.com", "alice-laptop").await;
    let phone = login_from(&app, "alice@example.com", "alice-phone").await;
    let laptop_session = session_id(&app, "alice-laptop").await;
    app.clock.advance(30 * MINUTE);
    let phone = refreshed(&app, &phone).await;
    // The laptop's session is idle for an hour now; the phone's was used 30 minutes ago.
    app.clock.advance(30 * MINUTE + Duration::from_secs(1));
    let phone = refreshed(&app, &phone).await;

    assert_listed(
        &app,
        list(&app, &phone.access_token).await,
        &[view(&app, "alice-phone", true).await],
    )
    .await;
    // An expired session cannot be revoked either: it is over already.
    let response = delete(&app, &phone.access_token, &laptop_session).await;
    assert_eq!(response.status(), 404);
    assert_eq!(response.json::<Value>().await.unwrap(), not_found());
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL")
            .await,
        0
    );
}

async fn sessions_requires_authentication(db: Db) {
    let app = TestApp::spawn(db).await;
    let laptop = signup_from(&app, "alice@example.com", "alice-laptop").await;

    let nothing = app
        .client
        .get(app.url("/auth/sessions"))
        .send()
        .await
        .unwrap();
    assert_unauthenticated(nothing, "no token").await;
    assert_unauthenticated(list(&app, "not.a.token").await, "garbage bearer").await;
    let refresh_cookie = app
        .client
        .get(app.url("/auth/sessions"))
        .header(
            "cookie",
            format!("__Secure-lk_refresh={}", laptop.refresh_token),
        )
        .send()
        .await
        .unwrap();
    assert_unauthenticated(refresh_cookie, "refresh cookie only").await;
    logout(&app, &laptop).await;
    assert_unauthenticated(
        list(&app, &laptop.access_token).await,
        "token of a revoked session",
    )
    .await;
}

// DELETE /auth/sessions/{id}

async fn deleting_another_own_session_revokes_only_that_session(db: Db) {
    let app = TestApp::spawn(db).await;
    let laptop = signup_from(&app, "alice@example.com", "alice-laptop").await;
    let phone = login_from(&app, "alice@example.com", "alice-phone").await;
    let phone_session = session_id(&app, "alice-phone").await;
    let events = app.count("SELECT COUNT(*) FROM audit_events").await;

    let response = delete(&app, &laptop.access_token, &phone_session).await;

    assert_no_content_without_cookies(response).await;
    assert_eq!(
        app.text("SELECT id FROM sessions WHERE revoked_at IS NOT NULL")
            .await
            .unwrap(),
        phone_session
    );
    assert_eq!(
        app.text(&format!(
            "SELECT revoked_reason FROM sessions WHERE id = '{phone_session}'"
        ))
        .await
        .unwrap(),
        "revoked_by_user"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events").await,
        events + 1
    );
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM audit_events WHERE kind = 'session_revoked' \
             AND user_id = '{}' AND session_id = '{phone_session}' AND ip = '127.0.0.1'",
            laptop.user_id()
        ))
        .await,
        1
    );
    assert_unusable(&app, &phone, "revoked phone").await;
    assert_eq!(
        app.text(&format!(
            "SELECT revoked_reason FROM sessions WHERE id = '{phone_session}'"
        ))
        .await
        .unwrap(),
        "revoked_by_user"
    );
    let laptop = assert_usable(&app, &laptop, "laptop").await;
    assert_listed(
        &app,
        list(&app, &laptop.access_token).await,
        &[view(&app, "alice-laptop", true).await],
    )
    .await;
    // Revoking it again finds no live session.
    let again = delete(&app, &laptop.access_token, &phone_session).await;
    assert_eq!(again.status(), 404);
    assert_eq!(again.json::<Value>().await.unwrap(), not_found());
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'session_revoked'")
            .await,
        1
    );
}

async fn deleting_the_current_session_logs_it_out(db: Db) {
    let app = TestApp::spawn(db).await;
    let laptop = signup_from(&app, "alice@example.com", "alice-laptop").await;
    let phone = login_from(&app, "alice@example.com", "alice-phone").await;
    let laptop_session = session_id(&app, "alice-laptop").await;

    let response = app
        .client
        .delete(app.url(&format!("/auth/sessions/{laptop_session}")))
        .header(
            "cookie",
            format!("__Host-lk_access={}", laptop.access_token),
        )
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
        app.text(&format!(
            "SELECT revoked_reason FROM sessions WHERE id = '{laptop_session}'"
        ))
        .await
        .unwrap(),
        "revoked_by_user"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM audit_events WHERE kind = 'session_revoked' \
             AND user_id = '{}' AND session_id = '{laptop_session}'",
            laptop.user_id()
        ))
        .await,
        1
    );
    assert_unusable(&app, &laptop, "revoked laptop").await;
    assert_usable(&app, &phone, "phone").await;
}

async fn deleting_a_session_that_is_not_the_callers_live_one_is_404(db: Db) {
    let app = TestApp::spawn(db).await;
    let laptop = signup_from(&app, "alice@example.com", "alice-laptop").await;
    let old = login_from(&app, "alice@example.com", "alice-old").await;
    logout(&app, &old).await;
    let bob = signup_from(&app, "bob@example.com", "bob-laptop").await;
    let bob_session = session_id(&app, "bob-laptop").await;
    let old_session = session_id(&app, "alice-old").await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let events = app.count("SELECT COUNT(*) FROM audit_events").await;

    for (id, why) in [
        (bob_session.as_str(), "another user's session"),
        (unknown.as_str(), "an unknown id"),
        ("not-a-uuid", "a malformed id"),
        ("%FF", "an id that is not UTF-8 once percent-decoded"),
        (old_session.as_str(), "an already revoked session"),
    ] {
        let response = delete(&app, &laptop.access_token, id).await;
        assert_eq!(response.status(), 404, "{why}");
        assert!(set_cookies(response.headers()).is_empty(), "{why}");
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            not_found(),
            "{why}"
        );
    }

    assert_eq!(app.count("SELECT COUNT(*) FROM audit_events").await, events);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL")
            .await,
        1
    );
    assert_eq!(
        app.text(&format!(
            "SELECT revoked_reason FROM sessions WHERE id = '{old_session}'"
        ))
        .await
        .unwrap(),
        "logout"
    );
    assert_usable(&app, &bob, "bob").await;
    assert_usable(&app, &laptop, "laptop").await;
}

async fn deleting_a_session_requires_authentication(db: Db) {
    let app = TestApp::spawn(db).await;
    let laptop = signup_from(&app, "alice@example.com", "alice-laptop").await;
    let phone = login_from(&app, "alice@example.com", "alice-phone").await;
    let phone_session = session_id(&app, "alice-phone").await;
    let events = app.count("SELECT COUNT(*) FROM audit_events").await;

    let nothing = app
        .client
        .delete(app.url(&format!("/auth/sessions/{phone_session}")))
        .send()
        .await
        .unwrap();
    assert_unauthenticated(nothing, "no token").await;
    assert_unauthenticated(
        delete(&app, "not.a.token", &phone_session).await,
        "garbage bearer",
    )
    .await;
    let refresh_cookie = app
        .client
        .delete(app.url(&format!("/auth/sessions/{phone_session}")))
        .header(
            "cookie",
            format!("__Secure-lk_refresh={}", laptop.refresh_token),
        )
        .send()
        .await
        .unwrap();
    assert_unauthenticated(refresh_cookie, "refresh cookie only").await;

    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL")
            .await,
        2
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_events").await, events);
    assert_usable(&app, &phone, "phone").await;
    assert_usable(&app, &laptop, "laptop").await;
}

// Pruning

async fn prune_deletes_sessions_that_ended_more_than_a_day_ago(db: Db) {
    assert_eq!(PRUNE_AFTER, 24 * HOUR);
    let app = TestApp::spawn_with(db, |o| o.session_idle_timeout = Some(3600)).await;
    // t = 0: a session revoked at once, one left to expire after an hour, and Bob's, which is
    // refreshed every 50 minutes from then on and so stays live however old it gets.
    let first = signup_from(&app, "alice@example.com", "old-revoked").await;
    logout(&app, &first).await;
    let _idle = login_from(&app, "alice@example.com", "old-expired").await;
    let mut bob = signup_from(&app, "bob@example.com", "bob-long-lived").await;
    let pruned_ids = [
        session_id(&app, "old-revoked").await,
        session_id(&app, "old-expired").await,
    ];
    for step in 1..=31 {
        app.clock.advance(50 * MINUTE);
        bob = refreshed(&app, &bob).await;
        match step {
            // t = 3h20: revoked 22h30 before the pruning.
            4 => {
                logout(
                    &app,
                    &login_from(&app, "alice@example.com", "revoked-22h-ago").await,
                )
                .await
            }
            // t = 24h10: expires at 25h10, 40 minutes before the pruning.
            29 => {
                login_from(&app, "alice@example.com", "recently-expired").await;
            }
            // t = 25h50: revoked just before the pruning.
            31 => {
                logout(
                    &app,
                    &login_from(&app, "alice@example.com", "recently-revoked").await,
                )
                .await
            }
            _ => {}
        }
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 6);
    assert_eq!(app.count("SELECT COUNT(*) FROM refresh_tokens").await, 37);

    let pruned = prune_sessions(&app.state).await.unwrap();

    assert_eq!(pruned, 2);
    assert_eq!(
        user_agents(&app, "SELECT user_agent FROM sessions ORDER BY user_agent").await,
        [
            "bob-long-lived",
            "recently-expired",
            "recently-revoked",
            "revoked-22h-ago"
        ]
    );
    // Bob's session keeps its whole chain of 32 tokens; the other three their one each.
    assert_eq!(app.count("SELECT COUNT(*) FROM refresh_tokens").await, 35);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id \
             WHERE s.user_agent = 'bob-long-lived'"
        )
        .await,
        32
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM refresh_tokens WHERE session_id NOT IN (SELECT id FROM sessions)"
        )
        .await,
        0
    );
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM sessions WHERE id IN ('{}', '{}')",
            pruned_ids[0], pruned_ids[1]
        ))
        .await,
        0
    );
    // Audit events outlive the sessions they mention.
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM audit_events WHERE session_id = '{}'",
            pruned_ids[0]
        ))
        .await,
        2
    );

    assert_eq!(prune_sessions(&app.state).await.unwrap(), 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 4);
    let bob = assert_usable(&app, &bob, "bob").await;
    assert_listed(
        &app,
        list(&app, &bob.access_token).await,
        &[view(&app, "bob-long-lived", true).await],
    )
    .await;

    // A day later the three that ended recently go too; Bob's, idle-expired 23 hours ago, stays.
    app.clock.advance(24 * HOUR + MINUTE);
    assert_eq!(prune_sessions(&app.state).await.unwrap(), 3);
    assert_eq!(
        user_agents(&app, "SELECT user_agent FROM sessions").await,
        ["bob-long-lived"]
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM refresh_tokens").await, 33);
}

async fn prune_deletes_sessions_past_their_absolute_lifetime(db: Db) {
    let app = TestApp::spawn_with(db, |o| {
        o.session_idle_timeout = Some(3600);
        o.session_absolute_lifetime = Some(7200);
    })
    .await;
    // t = 0: refreshed at 50 and 100 minutes, the session still ends at 2 h, its absolute end.
    let mut capped = signup_from(&app, "alice@example.com", "absolute-end").await;
    app.clock.advance(50 * MINUTE);
    capped = refreshed(&app, &capped).await;
    app.clock.advance(50 * MINUTE);
    let _capped = refreshed(&app, &capped).await;
    // t = 1h40: idle-expires at 2h40, later than the capped one although it was used earlier.
    let _later = login_from(&app, "alice@example.com", "idle-end").await;
    let capped_session = session_id(&app, "absolute-end").await;
    assert_eq!(
        app.count(&format!(
            "SELECT absolute_expires_at - created_at FROM sessions WHERE id = '{capped_session}'"
        ))
        .await,
        7_200_000
    );
    // t = 26h01: the capped session ended 24h01 ago, the other 23h21 ago.
    app.clock.advance(24 * HOUR + 21 * MINUTE);

    assert_eq!(prune_sessions(&app.state).await.unwrap(), 1);

    assert_eq!(
        user_agents(&app, "SELECT user_agent FROM sessions").await,
        ["idle-end"]
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM refresh_tokens").await, 1);
    assert_eq!(prune_sessions(&app.state).await.unwrap(), 0);
}

async fn two_instances_pruning_at_once_delete_each_session_once(db: Db) {
    let app = TestApp::spawn(db).await;
    // Started before any session exists, so its first scheduled pruning has nothing to do.
    let other = app.another_instance(|_| {}).await;
    let alice = signup_from(&app, "alice@example.com", "alice-0").await;
    let logins = (1..=7).map(|i| {
        let app = &app;
        async move { login_from(app, "alice@example.com", &format!("alice-{i}")).await }
    });
    join_all(logins).await;
    let bob = signup_from(&app, "bob@example.com", "bob").await;
    assert_logged_out(logout_all(&app, &alice.access_token).await).await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_reason = 'logout_all'")
            .await,
        8
    );
    // A day and a minute later, on both instances' clocks.
    for clock in [&app.clock, &other.clock] {
        clock.advance(24 * HOUR + MINUTE);
    }

    let results = join_all([
        prune_sessions(&app.state),
        prune_sessions(&other.state),
        prune_sessions(&app.state),
        prune_sessions(&other.state),
    ])
    .await;

    let counts: Vec<u64> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(counts.iter().sum::<u64>(), 8, "{counts:?}");
    assert_eq!(
        user_agents(&app, "SELECT user_agent FROM sessions").await,
        ["bob"]
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM refresh_tokens").await, 1);
    assert_eq!(prune_sessions(&other.state).await.unwrap(), 0);
    // Bob's access token expired during the day; his session did not.
    let bob = refreshed(&other, &bob).await;
    assert_usable(&app, &bob, "bob").await;
}
