//! Abuse resistance: rate limits per client IP and per account (each hit and released, with its
//! exact `Retry-After`, on the service clock), across instances and processes on one database;
//! the client IP behind proxies; load shedding; timeouts and connection limits; and signup's
//! concealment of existing accounts.
//!
//! TestApp runs with rate limits off; every test here turns them on itself.

use std::time::{Duration, Instant};

use latchkey::config::{Overrides, Rate, Toggle};
use latchkey::keys::Kek;
use latchkey::limits::{LOGIN_FAILURE_ACCOUNT, LOGIN_FAILURE_IP, LOGIN_IP};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    signup_is_limited_per_ip_until_the_window_ends,
    login_attempts_are_limited_per_ip,
    failed_logins_are_limited_per_ip_and_successes_are_taken_back,
    failed_logins_delay_an_account_progressively_and_an_unknown_address_alike,
    a_successful_login_or_a_quiet_period_forgets_the_failures,
    a_device_that_signed_in_before_is_not_held_back_by_failures_from_elsewhere,
    a_delayed_account_can_still_reset_its_password_and_then_log_in_at_once,
    account_delays_hold_across_instances,
    guessing_the_current_password_counts_as_failed_logins,
    account_delays_hold_across_processes,
    refresh_is_limited_per_ip_and_keeps_the_session,
    forgot_reset_and_verification_are_limited,
    spoofed_forwarded_for_is_ignored_without_trusted_proxies,
    forwarded_for_is_read_from_the_right_through_trusted_proxies,
    with_rate_limits_off_nothing_is_counted,
    a_signup_flood_gets_fast_503s_while_other_endpoints_keep_answering,
    concealment_answers_202_for_new_and_existing_addresses,
    a_request_that_takes_too_long_gets_503_in_the_json_shape,
    slow_or_oversized_headers_and_excess_connections_cannot_tie_the_server_up,
);

fn rate(text: &str) -> Option<Rate> {
    Some(text.parse().expect("a valid rate"))
}

/// Rate limits on, and hashing cheap, so that counts decide, not Argon2's pace.
fn limits_on(o: &mut Overrides) {
    o.rate_limits = Some(Toggle::On);
    o.argon2_memory_kib = Some(1024);
    o.argon2_iterations = Some(1);
}

/// Stops the clocks of these instances at one reading, so `Retry-After` is exact.
fn freeze(apps: &[&TestApp]) {
    let now = apps[0].clock.now();
    for app in apps {
        app.clock.freeze_at(now);
    }
}

fn advance(apps: &[&TestApp], secs: u64) {
    for app in apps {
        app.clock.advance(Duration::from_secs(secs));
    }
}

fn rate_limited() -> Value {
    json!({"error": {"code": "rate_limited", "message": "Too many requests. Please try again later."}})
}

/// The one 429 of every limit: exact body, exact `Retry-After`, no cookie.
async fn assert_rate_limited(response: reqwest::Response, retry_after: u64, why: &str) {
    assert_eq!(response.status(), 429, "{why}");
    assert_eq!(
        response.headers()["retry-after"],
        retry_after.to_string().as_str(),
        "{why}"
    );
    assert!(response.headers().get("set-cookie").is_none(), "{why}");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        rate_limited(),
        "{why}"
    );
}

/// The stored count of one counter.
async fn counter(app: &TestApp, name: &str, subject: &str) -> i64 {
    let key = app.state.limits.key(name, subject);
    app.count(&format!(
        "SELECT COALESCE(MAX(count), 0) FROM rate_limits WHERE key = '{key}'"
    ))
    .await
}

async fn post_from(
    app: &TestApp,
    path: &str,
    forwarded_for: &str,
    body: &Value,
) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("x-forwarded-for", forwarded_for)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn credentials(email: &str, password: &str) -> Value {
    json!({"email": email, "password": password})
}

async fn signup_is_limited_per_ip_until_the_window_ends(db: Db) {
    let app = TestApp::spawn_with(db, |o| {
        limits_on(o);
        o.signup_ip_limit = rate("2/1m");
    })
    .await;
    freeze(&[&app]);

    assert_eq!(
        app.signup("alice@example.com", PASSWORD).await.status(),
        201
    );
    // A taken address counts like any attempt: probing for accounts is what the limit slows.
    assert_eq!(
        app.signup("ALICE@example.com", PASSWORD).await.status(),
        409
    );
    assert_rate_limited(app.signup("bob@example.com", PASSWORD).await, 60, "third").await;
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
    assert_eq!(counter(&app, "signup_ip", "127.0.0.1").await, 3);

    app.clock.advance(Duration::from_secs(59));
    assert_rate_limited(
        app.signup("bob@example.com", PASSWORD).await,
        1,
        "59 s later",
    )
    .await;
    // Refused from memory: the database was not asked again.
    assert_eq!(counter(&app, "signup_ip", "127.0.0.1").await, 3);

    app.clock.advance(Duration::from_secs(1));
    assert_eq!(app.signup("bob@example.com", PASSWORD).await.status(), 201);
    assert_eq!(
        counter(&app, "signup_ip", "127.0.0.1").await,
        1,
        "a new window"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 2);
}

async fn login_attempts_are_limited_per_ip(db: Db) {
    let app = TestApp::spawn_with(db, |o| {
        limits_on(o);
        o.login_ip_limit = rate("3/1m");
    })
    .await;
    app.signed_up("alice@example.com").await;
    freeze(&[&app]);

    assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 200);
    assert_eq!(
        app.login("alice@example.com", "wrong password")
            .await
            .status(),
        401
    );
    assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 200);
    // Over the limit even with the right password: the limit counts attempts.
    assert_rate_limited(app.login("alice@example.com", PASSWORD).await, 60, "fourth").await;
    assert_eq!(counter(&app, LOGIN_IP, "127.0.0.1").await, 4);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'login'")
            .await,
        2
    );

    app.clock.advance(Duration::from_secs(60));
    assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 200);
}

async fn failed_logins_are_limited_per_ip_and_successes_are_taken_back(db: Db) {
    let app = TestApp::spawn_with(db, |o| {
        limits_on(o);
        o.login_ip_limit = rate("100/1m");
        o.login_failure_ip_limit = rate("2/1m");
    })
    .await;
    app.signed_up("alice@example.com").await;
    freeze(&[&app]);

    // Each attempt is counted as a failure before its password is checked, and taken back when
    // it matches: three successes leave nothing behind.
    for _ in 0..3 {
        assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 200);
    }
    assert_eq!(counter(&app, LOGIN_FAILURE_IP, "127.0.0.1").await, 0);

    // Password spraying: one failure per account, many accounts, one IP.
    assert_eq!(
        app.login("bob@example.com", "guess one").await.status(),
        401
    );
    assert_eq!(
        app.login("carol@example.com", "guess two").await.status(),
        401
    );
    assert_eq!(counter(&app, LOGIN_FAILURE_IP, "127.0.0.1").await, 2);
    assert_rate_limited(app.login("alice@example.com", PASSWORD).await, 60, "third").await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'login_failed'")
            .await,
        2,
        "a refused attempt is no failed login"
    );

    app.clock.advance(Duration::from_secs(60));
    assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 200);
}

/// Rate limits on, per-IP login limits out of the way, the account limit at its default.
fn account_limits(o: &mut Overrides) {
    limits_on(o);
    o.login_ip_limit = rate("1000/1m");
    o.login_failure_ip_limit = rate("1000/1m");
}

/// Status, body and `Retry-After` of a login, as a client sees them.
async fn outcome(response: reqwest::Response) -> (u16, Value, Option<String>) {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, response.json().await.unwrap(), retry_after)
}

async fn failed_logins_delay_an_account_progressively_and_an_unknown_address_alike(db: Db) {
    let app = TestApp::spawn_with(db, account_limits).await;
    app.signed_up("alice@example.com").await;
    app.signed_up("bob@example.com").await;
    freeze(&[&app]);
    let unauthorized = (
        401,
        json!({"error": {"code": "invalid_credentials", "message": "Wrong email or password."}}),
        None,
    );
    let limited = |secs: u64| (429, rate_limited(), Some(secs.to_string()));

    // The same journey for an account and for an address without one: 5 failures in 5 minutes,
    // then a wait of 5 minutes, doubling with each failure after it.
    let mut journeys = Vec::new();
    for email in ["alice@example.com", "nobody@example.com"] {
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(outcome(app.login(email, "wrong password").await).await);
        }
        // The right password does not help while the wait lasts, nor another case of the address.
        seen.push(outcome(app.login(&email.to_uppercase(), PASSWORD).await).await);
        app.clock.advance(Duration::from_secs(299));
        seen.push(outcome(app.login(email, PASSWORD).await).await);
        app.clock.advance(Duration::from_secs(1));
        seen.push(outcome(app.login(email, "wrong again").await).await);
        seen.push(outcome(app.login(email, "wrong again").await).await);
        app.clock.advance(Duration::from_secs(600));
        seen.push(outcome(app.login(email, "wrong again").await).await);
        seen.push(outcome(app.login(email, "wrong again").await).await);
        app.clock.advance(Duration::from_secs(1200));
        journeys.push(seen);
    }
    let expected = vec![
        unauthorized.clone(),
        unauthorized.clone(),
        unauthorized.clone(),
        unauthorized.clone(),
        unauthorized.clone(),
        limited(300),
        limited(1),
        unauthorized.clone(),
        limited(600),
        unauthorized.clone(),
        limited(1200),
    ];
    assert_eq!(journeys[0], expected, "an account");
    assert_eq!(
        journeys[1], expected,
        "no account: exactly the same answers"
    );

    // The counters were committed although every one of those logins failed.
    let key = app
        .state
        .limits
        .key(LOGIN_FAILURE_ACCOUNT, "alice@example.com");
    assert_eq!(
        app.count(&format!(
            "SELECT count FROM rate_limits WHERE key = '{key}'"
        ))
        .await,
        7
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'login_failed'")
            .await,
        14,
        "refused attempts are not failed logins"
    );
    // The wait was the account's own: another account logs in; and once the last wait is over,
    // so does the owner.
    assert_eq!(app.login("bob@example.com", PASSWORD).await.status(), 200);
    assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 200);
}

/// A login from the browser that signed in before (its device cookie) as `email`.
async fn login_from_device(
    app: &TestApp,
    device: &str,
    email: &str,
    password: &str,
) -> reqwest::Response {
    app.client
        .post(app.url("/auth/login"))
        .header("cookie", format!("__Host-lk_device={device}"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

/// The lockout turned against the owner (issue 10, finding 7): five wrong passwords from
/// anywhere used to make the owner's correct password 429 for up to an hour. A browser that
/// signed in to the account before has a failure counter of its own (OWASP's device cookies):
/// the owner there gets in at once, while guesses from it are limited like any account's, and a
/// cookie of another account or a forged one counts as none.
async fn a_device_that_signed_in_before_is_not_held_back_by_failures_from_elsewhere(db: Db) {
    let app = TestApp::spawn_with(db, account_limits).await;
    app.signed_up("alice@example.com").await;
    app.signed_up("bob@example.com").await;
    let device_of = |response: &reqwest::Response| {
        set_cookies(response.headers())["__Host-lk_device"]
            .value
            .clone()
    };
    let alice = app.login("alice@example.com", PASSWORD).await;
    assert_eq!(alice.status(), 200);
    let alices_device = device_of(&alice);
    let bob = app.login("bob@example.com", PASSWORD).await;
    let bobs_device = device_of(&bob);
    freeze(&[&app]);
    let limited = (429, rate_limited(), Some("300".to_owned()));

    // Someone elsewhere guesses alice's password: after five failures the account waits.
    for _ in 0..5 {
        assert_eq!(app.login("alice@example.com", "guess").await.status(), 401);
    }
    let elsewhere = outcome(app.login("alice@example.com", PASSWORD).await).await;
    assert_eq!(
        elsewhere, limited,
        "the right password from elsewhere waits"
    );

    // Her own browser gets in at once, and is remembered again.
    let own = login_from_device(&app, &alices_device, "alice@example.com", PASSWORD).await;
    assert_eq!(own.status(), 200, "the owner's device is not held back");
    let renewed = device_of(&own);
    assert_ne!(renewed, alices_device, "a fresh device id with every login");

    // Bob's device cookie, or a forged one, does not stand in for alice's.
    let forged = format!("{}x", &renewed[..renewed.len() - 1]);
    for (device, why) in [
        (&bobs_device, "another account's device"),
        (&forged, "a forged MAC"),
    ] {
        let response = login_from_device(&app, device, "alice@example.com", PASSWORD).await;
        assert_eq!(outcome(response).await, limited, "{why}");
    }

    // Guesses from the device are limited on their own: five, then that device waits too,
    // while the account's counter did not move (the wait from elsewhere is still 300 s).
    for _ in 0..5 {
        let guess = login_from_device(&app, &renewed, "alice@example.com", "guess").await;
        assert_eq!(guess.status(), 401);
    }
    let own = login_from_device(&app, &renewed, "alice@example.com", PASSWORD).await;
    assert_eq!(
        outcome(own).await,
        limited,
        "the device's own failures count"
    );
    let device_key = "SELECT COUNT(*) FROM rate_limits WHERE key LIKE 'login_failure_device:%'";
    assert_eq!(app.count(device_key).await, 1, "one device counter");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions").await,
        5,
        "two signups, two logins, and the one login from the owner's device"
    );
}

async fn a_successful_login_or_a_quiet_period_forgets_the_failures(db: Db) {
    let app = TestApp::spawn_with(db, account_limits).await;
    app.signed_up("alice@example.com").await;
    freeze(&[&app]);
    let rows = "SELECT COUNT(*) FROM rate_limits WHERE key LIKE 'login_failure_account:%'";

    for _ in 0..4 {
        assert_eq!(
            app.login("alice@example.com", "wrong password")
                .await
                .status(),
            401
        );
    }
    assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 200);
    assert_eq!(app.count(rows).await, 0, "a success clears the counter");
    for _ in 0..4 {
        assert_eq!(
            app.login("alice@example.com", "wrong password")
                .await
                .status(),
            401
        );
    }
    assert_eq!(
        app.login("alice@example.com", PASSWORD).await.status(),
        200,
        "four again"
    );

    // Failures spread out more than the period apart never add up.
    for _ in 0..6 {
        assert_eq!(
            app.login("alice@example.com", "wrong password")
                .await
                .status(),
            401
        );
        app.clock.advance(Duration::from_secs(300));
    }
    // After a wait, a quiet period of one more period forgets everything.
    for _ in 0..5 {
        assert_eq!(
            app.login("alice@example.com", "wrong password")
                .await
                .status(),
            401
        );
    }
    assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 429);
    app.clock.advance(Duration::from_secs(300 + 300));
    for _ in 0..4 {
        assert_eq!(
            app.login("alice@example.com", "wrong password")
                .await
                .status(),
            401
        );
    }
    assert_eq!(
        counter(&app, LOGIN_FAILURE_ACCOUNT, "alice@example.com").await,
        4
    );
    assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 200);

    // Ended counters are pruned by the background job.
    app.clock.advance(Duration::from_secs(3600));
    assert!(app.state.limits.prune().await.unwrap() >= 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM rate_limits").await, 0);
}

async fn a_delayed_account_can_still_reset_its_password_and_then_log_in_at_once(db: Db) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(db, &sink, account_limits).await;
    app.signed_up("alice@example.com").await;
    sink.wait_for(1).await; // the verification email of the signup
    freeze(&[&app]);
    for _ in 0..5 {
        assert_eq!(
            app.login("alice@example.com", "wrong password")
                .await
                .status(),
            401
        );
    }
    assert_rate_limited(
        app.login("alice@example.com", PASSWORD).await,
        300,
        "delayed",
    )
    .await;

    // The wait is on logins only: the owner asks for a reset link and uses it.
    assert_eq!(app.forgot("alice@example.com").await.status(), 202);
    let token = sink.nth(2).await.token("/password/reset");
    assert_eq!(
        app.reset(&token, "a brand new password").await.status(),
        204
    );
    // The reset forgot the failures: no need to sit out the rest of the wait.
    assert_eq!(
        counter(&app, LOGIN_FAILURE_ACCOUNT, "alice@example.com").await,
        0
    );
    assert_eq!(
        app.login("alice@example.com", "a brand new password")
            .await
            .status(),
        200
    );
}

async fn guessing_the_current_password_counts_as_failed_logins(db: Db) {
    let app = TestApp::spawn_with(db, account_limits).await;
    let session = app.signed_up("alice@example.com").await;
    freeze(&[&app]);
    let change = |current: &str| {
        app.client
            .post(app.url("/auth/password/change"))
            .bearer_auth(&session.access_token)
            .json(&json!({"current_password": current, "new_password": "a brand new passphrase"}))
            .send()
    };
    // A stolen access token gets no more guesses than the login form: five, then a wait.
    for _ in 0..5 {
        assert_eq!(
            change("a guess at the password").await.unwrap().status(),
            401
        );
    }
    assert_rate_limited(
        change(PASSWORD).await.unwrap(),
        300,
        "the right password, too soon",
    )
    .await;
    assert_rate_limited(
        app.login("alice@example.com", PASSWORD).await,
        300,
        "login shares the wait",
    )
    .await;
    app.clock.advance(Duration::from_secs(300));
    assert_eq!(change(PASSWORD).await.unwrap().status(), 204);
    assert_eq!(
        app.login("alice@example.com", "a brand new passphrase")
            .await
            .status(),
        200
    );
}

async fn account_delays_hold_across_instances(db: Db) {
    let one = TestApp::spawn_with(db, account_limits).await;
    let two = one.another_instance(account_limits).await;
    one.signed_up("alice@example.com").await;
    freeze(&[&one, &two]);

    for app in [&one, &two, &one, &two, &one] {
        assert_eq!(
            app.login("alice@example.com", "wrong password")
                .await
                .status(),
            401
        );
    }
    assert_rate_limited(one.login("alice@example.com", PASSWORD).await, 300, "one").await;
    assert_rate_limited(two.login("alice@example.com", PASSWORD).await, 300, "two").await;

    advance(&[&one, &two], 300);
    assert_eq!(two.login("alice@example.com", PASSWORD).await.status(), 200);
    // The success on one instance cleared the counter for the other.
    for _ in 0..4 {
        assert_eq!(
            one.login("alice@example.com", "wrong password")
                .await
                .status(),
            401
        );
    }
    assert_eq!(one.login("alice@example.com", PASSWORD).await.status(), 200);
}

async fn account_delays_hold_across_processes(db: Db) {
    let db = TestDb::new(db).await;
    let kek = Kek::generate_encoded();
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &db.url,
        "--key-encryption-key",
        &kek,
        "--public-url",
        PUBLIC_URL,
        "--hash-threads",
        "2",
        "--argon2-memory-kib",
        "1024",
        "--argon2-iterations",
        "1",
        "--rate-limits",
        "on",
    ];
    let one = ServerProcess::start(&args, &[], &std::env::temp_dir()).await;
    let two = ServerProcess::start(&args, &[], &std::env::temp_dir()).await;
    assert_eq!(one.signup("alice@example.com").await.status(), 201);
    let wrong = json!({"email": "alice@example.com", "password": "wrong password"});
    for server in [&one, &two, &one, &two, &one] {
        let response = server
            .client
            .post(server.url("/auth/login"))
            .json(&wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    for server in [&two, &one] {
        let response = server.login("alice@example.com").await;
        assert_eq!(response.status(), 429);
        // Wall-clock time passes between the two processes' answers: 300 s, rounded up.
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((295..=300).contains(&retry_after), "{retry_after}");
        assert_eq!(response.json::<Value>().await.unwrap(), rate_limited());
    }
}

async fn refresh_is_limited_per_ip_and_keeps_the_session(db: Db) {
    let app = TestApp::spawn_with(db, |o| {
        limits_on(o);
        o.refresh_ip_limit = rate("2/5m");
    })
    .await;
    let session = app.signed_up("alice@example.com").await;
    freeze(&[&app]);

    let first = app.refresh(&session.refresh_token).await;
    assert_eq!(first.status(), 200);
    let token = Session::from_response(first).await.refresh_token;
    let second = app.refresh(&token).await;
    assert_eq!(second.status(), 200);
    let token = Session::from_response(second).await.refresh_token;
    // Refused, but not revoked: no cookie is cleared and the token stays good.
    assert_rate_limited(app.refresh(&token).await, 300, "third").await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL")
            .await,
        1
    );

    app.clock.advance(Duration::from_secs(300));
    assert_eq!(app.refresh(&token).await.status(), 200);
}

async fn forgot_reset_and_verification_are_limited(db: Db) {
    let app = TestApp::spawn_with(db, |o| {
        limits_on(o);
        o.mail_throttle = Some(0);
        o.forgot_address_limit = rate("2/1m");
        o.forgot_ip_limit = rate("6/1m");
        o.reset_ip_limit = rate("2/1m");
        o.verify_ip_limit = rate("2/1m");
        o.verify_resend_account_limit = rate("1/15m");
    })
    .await;
    let session = app.signed_up("alice@example.com").await;
    freeze(&[&app]);

    // Per address, known or not: the same 202s, then the same 429.
    for email in ["alice@example.com", "nobody@example.com"] {
        assert_eq!(app.forgot(email).await.status(), 202, "{email}");
        assert_eq!(app.forgot(email).await.status(), 202, "{email}");
        assert_rate_limited(app.forgot(email).await, 60, email).await;
    }
    // The mail worker turns the requests into emails on its own time: one each, none for the
    // unknown address.
    app.wait_for_count(
        "SELECT COUNT(*) FROM outbox WHERE kind = 'password_reset'",
        2,
    )
    .await;
    // Per IP: a seventh request from this client, for a fresh address.
    assert_rate_limited(app.forgot("carol@example.com").await, 60, "per IP").await;

    // Guessing reset or verification tokens.
    for (path, body) in [
        (
            "/auth/password/reset",
            json!({"token": "guess", "password": "a brand new password"}),
        ),
        ("/auth/email/verify", json!({"token": "guess"})),
    ] {
        for _ in 0..2 {
            assert_eq!(app.post_json(path, &body).await.status(), 400, "{path}");
        }
        assert_rate_limited(app.post_json(path, &body).await, 60, path).await;
    }

    // Verification resends, per account.
    let resend = || {
        app.client
            .post(app.url("/auth/email/verify/resend"))
            .bearer_auth(&session.access_token)
            .send()
    };
    assert_eq!(resend().await.unwrap().status(), 202);
    assert_rate_limited(resend().await.unwrap(), 900, "resend").await;

    app.clock.advance(Duration::from_secs(60));
    assert_eq!(app.forgot("alice@example.com").await.status(), 202);
    let response = app
        .post_json("/auth/email/verify", &json!({"token": "guess"}))
        .await;
    assert_eq!(response.status(), 400);
}

async fn spoofed_forwarded_for_is_ignored_without_trusted_proxies(db: Db) {
    let app = TestApp::spawn_with(db, |o| {
        limits_on(o);
        o.signup_ip_limit = rate("1/1m");
    })
    .await;
    freeze(&[&app]);

    let response = post_from(
        &app,
        "/auth/signup",
        "198.51.100.1",
        &credentials("a@example.com", PASSWORD),
    )
    .await;
    assert_eq!(response.status(), 201);
    // A fresh made-up address does not buy a fresh limit.
    let response = post_from(
        &app,
        "/auth/signup",
        "198.51.100.2",
        &credentials("b@example.com", PASSWORD),
    )
    .await;
    assert_rate_limited(response, 60, "spoofed").await;
    // Sessions and audit events show the socket peer, not the header.
    assert_eq!(
        app.text("SELECT ip FROM sessions").await.as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        app.text("SELECT ip FROM audit_events WHERE kind = 'signup'")
            .await
            .as_deref(),
        Some("127.0.0.1")
    );
}

async fn forwarded_for_is_read_from_the_right_through_trusted_proxies(db: Db) {
    let app = TestApp::spawn_with(db, |o| {
        limits_on(o);
        o.signup_ip_limit = rate("1/1m");
        o.trusted_proxies = Some(vec!["127.0.0.1".into(), "10.0.0.0/8".into()]);
    })
    .await;
    freeze(&[&app]);
    let signup_as = |email, forwarded_for| signup_via(&app, email, forwarded_for);
    let session_ip = |email| session_ip(&app, email);

    // The client wrote the left entry itself; the proxy chain 10.1.2.3 → 127.0.0.1 is trusted.
    let response = signup_as("a@example.com", "6.6.6.6, 203.0.113.7, 10.1.2.3").await;
    assert_eq!(response.status(), 201);
    assert_eq!(
        session_ip("a@example.com").await.as_deref(),
        Some("203.0.113.7")
    );
    assert_eq!(
        app.text("SELECT ip FROM audit_events WHERE kind = 'signup'")
            .await
            .as_deref(),
        Some("203.0.113.7")
    );
    let response = signup_as("b@example.com", "203.0.113.7").await;
    assert_rate_limited(response, 60, "the same client").await;
    // Prepending another client's address does not make a request count as theirs.
    let response = signup_as("c@example.com", "203.0.113.7, 198.51.100.9").await;
    assert_eq!(response.status(), 201);
    assert_eq!(
        session_ip("c@example.com").await.as_deref(),
        Some("198.51.100.9")
    );
    // IPv6 clients are counted per /64.
    assert_eq!(
        signup_as("d@example.com", "2001:db8:1:2::1").await.status(),
        201
    );
    let response = signup_as("e@example.com", "2001:db8:1:2::2").await;
    assert_rate_limited(response, 60, "same /64").await;
    assert_eq!(
        signup_as("f@example.com", "2001:db8:1:3::1").await.status(),
        201
    );
    assert_eq!(
        session_ip("f@example.com").await.as_deref(),
        Some("2001:db8:1:3::1")
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 4);
}

async fn signup_via(app: &TestApp, email: &str, forwarded_for: &str) -> reqwest::Response {
    post_from(
        app,
        "/auth/signup",
        forwarded_for,
        &credentials(email, PASSWORD),
    )
    .await
}

/// The IP recorded with the session of the account of `email`.
async fn session_ip(app: &TestApp, email: &str) -> Option<String> {
    app.text(&format!(
        "SELECT s.ip FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.email = '{email}'"
    ))
    .await
}

async fn with_rate_limits_off_nothing_is_counted(db: Db) {
    let app = TestApp::spawn_with(db, |o| {
        o.signup_ip_limit = rate("1/1m");
        o.login_failure_account_limit = rate("1/1m");
    })
    .await;
    for email in ["a@example.com", "b@example.com", "c@example.com"] {
        assert_eq!(app.signup(email, PASSWORD).await.status(), 201);
        assert_eq!(app.login(email, "wrong password").await.status(), 401);
        assert_eq!(app.login(email, "wrong password").await.status(), 401);
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM rate_limits").await, 0);
}

async fn a_signup_flood_gets_fast_503s_while_other_endpoints_keep_answering(db: Db) {
    // One hashing thread, one waiting place, and a hash slow enough to flood.
    let app = TestApp::spawn_with(db, |o| {
        o.hash_threads = Some(1);
        o.hash_queue = Some(1);
        o.argon2_memory_kib = Some(65_536);
        o.argon2_iterations = Some(3);
    })
    .await;
    let session = app.signed_up("alice@example.com").await;

    let flood = (0..12).map(|i| {
        let app = &app;
        async move {
            let started = Instant::now();
            let response = app.signup(&format!("flood{i}@example.com"), PASSWORD).await;
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").cloned();
            let body: Value = response.json().await.unwrap();
            (status, retry_after, body, started.elapsed())
        }
    });
    let others = async {
        let mut latencies = Vec::new();
        for path in [
            "/auth/me",
            "/healthz",
            "/.well-known/jwks.json",
            "/auth/me",
            "/readyz",
        ] {
            let started = Instant::now();
            let response = app
                .client
                .get(app.url(path))
                .bearer_auth(&session.access_token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{path} during the flood");
            latencies.push(started.elapsed());
        }
        latencies
    };
    let (results, latencies) = tokio::join!(join_all(flood), others);

    let created: Vec<Duration> = results.iter().filter(|r| r.0 == 201).map(|r| r.3).collect();
    let shed: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert_eq!(created.len() + shed.len(), 12, "{results:?}");
    assert!(!created.is_empty() && shed.len() >= 8, "{results:?}");
    for (_, retry_after, body, _) in &shed {
        assert_eq!(retry_after.as_ref().unwrap(), "1");
        assert_eq!(
            body,
            &json!({"error": {"code": "overloaded", "message": "The service is busy. Please try again shortly."}})
        );
    }
    // Refused at once, not after waiting for a hash; and the endpoints that do not hash answered
    // while the hashes ran.
    let fastest_hash = *created.iter().min().unwrap();
    let slowest_refusal = shed.iter().map(|r| r.3).max().unwrap();
    assert!(
        slowest_refusal < fastest_hash,
        "{slowest_refusal:?} vs {fastest_hash:?}"
    );
    let slowest_other = *latencies.iter().max().unwrap();
    assert!(
        slowest_other < fastest_hash,
        "{latencies:?} vs {fastest_hash:?}"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users").await,
        1 + created.len() as i64
    );
}

async fn concealment_answers_202_for_new_and_existing_addresses(db: Db) {
    let app = TestApp::spawn_with(db, |o| o.conceal_existing_accounts = Some(true)).await;
    let answer = |response: reqwest::Response| async move {
        assert!(response.headers().get("set-cookie").is_none());
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        )
    };

    // A new address: the account and its verification email, but no session.
    let new = answer(app.signup("alice@example.com", PASSWORD).await).await;
    assert_eq!(new, (202, json!({})));
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
    assert_eq!(app.count(ORPHANS).await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 0);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'signup' AND session_id IS NULL")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox WHERE kind = 'email_verification'")
            .await,
        1
    );

    // The same address again, in another case: the same answer; nothing written but a notice to
    // the owner, at most one per throttle window however often it is tried.
    for email in ["Alice@Example.com", "alice@example.com"] {
        let existing = answer(app.signup(email, "another password entirely").await).await;
        assert_eq!(existing, new, "{email}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_events").await, 1);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM outbox WHERE kind = 'account_exists' \
             AND recipient = 'alice@example.com'"
        )
        .await,
        1
    );
    // The owner's password is unchanged, and logging in is how the new account gets a session.
    assert_eq!(
        app.login("alice@example.com", "another password entirely")
            .await
            .status(),
        401
    );
    assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 200);
}

/// Sends `head` (and whatever body part it holds) on a raw connection, then waits for a whole
/// response or the server closing the connection; returns the status line, headers and body,
/// and how long it took.
async fn raw_exchange(
    app: &TestApp,
    head: &str,
) -> (String, Vec<(String, String)>, String, Duration) {
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let started = Instant::now();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
            }
            if complete_response(&raw) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("").to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned(), elapsed)
}

/// Whether `raw` holds a response head and as much body as its Content-Length says.
fn complete_response(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    body.len() >= length
}

async fn a_request_that_takes_too_long_gets_503_in_the_json_shape(db: Db) {
    let app = TestApp::spawn_with(db, |o| o.request_timeout = Some(1)).await;
    // A client that announces 100 bytes of body and sends 10.
    let (status, headers, body, elapsed) = raw_exchange(
        &app,
        "POST /auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{\"email\":",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("retry-after"), Some("1"));
    assert_eq!(header("content-type"), Some("application/json"));
    assert!(header("x-request-id").is_some());
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"error": {"code": "unavailable", "message": "The service is temporarily unavailable."}})
    );
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    // The server goes on serving.
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

async fn slow_or_oversized_headers_and_excess_connections_cannot_tie_the_server_up(db: Db) {
    let app = TestApp::spawn_with(db, |o| {
        o.max_connections = Some(2);
        o.header_read_timeout = Some(1);
        o.max_header_bytes = Some(4096);
    })
    .await;
    let fresh_client = |timeout: Duration| {
        reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };

    // A head larger than the limit: 431 from the HTTP layer.
    let response = fresh_client(Duration::from_secs(5))
        .get(app.url("/healthz"))
        .header("x-padding", "a".repeat(5000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);

    // A client that never finishes its headers is disconnected after the header timeout.
    let (status, _, _, elapsed) =
        raw_exchange(&app, "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ").await;
    assert!(!status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");

    // Two silent connections take both places: the next client waits to be accepted...
    let address = app.address.trim_start_matches("http://").to_owned();
    let silent = [
        tokio::net::TcpStream::connect(&address).await.unwrap(),
        tokio::net::TcpStream::connect(&address).await.unwrap(),
    ];
    let waiting = fresh_client(Duration::from_millis(300))
        .get(app.url("/healthz"))
        .send()
        .await;
    assert!(
        waiting.is_err(),
        "served beyond the connection cap: {waiting:?}"
    );
    // ...until the header timeout closes them, without any help from their owners.
    let served = fresh_client(Duration::from_secs(10))
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    drop(silent);
}
