//! Passwordless sign-in under failures and interleavings (`--features failpoints`): a failure
//! before the commit (`return`, `panic`) of a sign-in and of a first sign-in that creates the
//! account, a client hanging up while the sign-in is held before its commit, and a reset or a
//! disable committing between the code's check and the sign-in's transaction. Each case runs the
//! real binary (the `fail` crate's configuration is global to a process) on a fresh database; its
//! emails are written to its log, where the tests read the codes.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::AnyPool;

use crate::db_tests;
use crate::failpoints::webhook_flags;
use crate::helpers::*;
use crate::interleavings::{abandon_and_roll_back, held_server, sent_and_held};

db_tests!(
    a_start_failing_or_abandoned_before_commit_leaves_nothing_and_works_after,
    a_sign_in_failing_before_commit_leaves_nothing_and_the_code_works_after,
    a_sign_in_abandoned_before_its_commit_changes_nothing,
    a_reset_committing_while_a_code_is_checked_opens_no_session,
    a_disable_committing_while_a_code_is_checked_opens_no_session,
);

const ACTIONS: [&str; 2] = ["return", "panic"];

/// The `n`-th passwordless code (0-based) the server's log shows: the line of six digits alone.
async fn code(server: &ServerProcess, n: usize) -> String {
    for _ in 0..100 {
        let codes: Vec<String> = server
            .log()
            .iter()
            .map(|line| line.trim().to_owned())
            .filter(|line| line.len() == 6 && line.bytes().all(|b| b.is_ascii_digit()))
            .collect();
        if let Some(code) = codes.get(n) {
            return code.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no passwordless code {n} in the log");
}

/// Asks for a code for `email` and returns the `n`-th code of the log.
async fn emailed(server: &ServerProcess, email: &str, n: usize) -> String {
    let response = server
        .client
        .post(server.url("/auth/passwordless/start"))
        .json(&json!({ "email": email }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    code(server, n).await
}

fn verify(server: &ServerProcess, email: &str, code: &str) -> reqwest::RequestBuilder {
    server
        .client
        .post(server.url("/auth/passwordless/verify"))
        .json(&json!({ "email": email, "code": code }))
}

/// What a sign-in writes, counted: sessions, logins recorded, users, unused codes, queued
/// webhook events.
async fn written(pool: &AnyPool) -> [i64; 5] {
    let mut all = [0; 5];
    for (i, sql) in [
        "SELECT COUNT(*) FROM sessions",
        "SELECT COUNT(*) FROM profiles WHERE last_login_at IS NOT NULL",
        "SELECT COUNT(*) FROM users",
        "SELECT COUNT(*) FROM passwordless_codes WHERE used_at IS NULL",
        "SELECT COUNT(*) FROM webhook_outbox",
    ]
    .into_iter()
    .enumerate()
    {
        all[i] = count(pool, sql).await;
    }
    all
}

/// What a start writes, counted: request rows, throttle slots, codes and emails.
async fn started(pool: &AnyPool) -> [i64; 4] {
    let mut all = [0; 4];
    for (i, table) in [
        "password_reset_requests",
        "mail_throttle",
        "passwordless_codes",
        "outbox",
    ]
    .into_iter()
    .enumerate()
    {
        all[i] = count(pool, &format!("SELECT COUNT(*) FROM {table}")).await;
    }
    all
}

async fn a_start_failing_or_abandoned_before_commit_leaves_nothing_and_works_after(db: Db) {
    let start = |server: &ServerProcess| {
        server
            .client
            .post(server.url("/auth/passwordless/start"))
            .json(&json!({"email": "alice@example.com"}))
    };
    let point = "passwordless_start.before_commit";
    for action in ACTIONS {
        let context = format!("{point}={action} ({db:?})");
        let test_db = TestDb::new(db).await;
        let kek = latchkey::keys::Kek::generate_encoded();
        let failpoints = format!("{point}=1*{action}");
        let env = [("FAILPOINTS", failpoints.as_str())];
        let server = ServerProcess::serve(&test_db, &kek, &env).await;
        let pool = test_db.pool().await;
        assert_eq!(server.signup("alice@example.com").await.status(), 201);
        let before = started(&pool).await;
        assert_eq!(
            before,
            [0, 1, 0, 1],
            "{context}: the signup's slot and email"
        );

        let failed = start(&server).send().await.unwrap();
        assert_internal_without_cookies(failed, &context).await;
        assert_eq!(started(&pool).await, before, "{context}: nothing written");
        server.assert_serving(&context).await;
        // The throttle slot was not taken: the next request sends the email at once.
        assert_eq!(start(&server).send().await.unwrap().status(), 202);
        code(&server, 0).await;
        assert_eq!(started(&pool).await, [0, 2, 1, 2], "{context}: after");
        pool.close().await;
    }

    let test_db = TestDb::new(db).await;
    let kek = latchkey::keys::Kek::generate_encoded();
    let server = held_server(&test_db, &kek, &[point], &[]).await;
    let pool = test_db.pool().await;
    assert_eq!(server.signup("alice@example.com").await.status(), 201);
    let before = started(&pool).await;
    abandon_and_roll_back(&server, start(&server), point).await;
    assert_eq!(started(&pool).await, before, "abandoned: nothing written");
    assert_eq!(start(&server).send().await.unwrap().status(), 202);
    code(&server, 0).await;
    assert_eq!(started(&pool).await, [0, 2, 1, 2], "abandoned: after");
    pool.close().await;
}

async fn a_sign_in_failing_before_commit_leaves_nothing_and_the_code_works_after(db: Db) {
    for action in ACTIONS {
        let context = format!("passwordless.before_commit={action} ({db:?})");
        let test_db = TestDb::new(db).await;
        let receiver = Receiver::start().await;
        let url = receiver.url();
        let failpoints = format!("passwordless.before_commit=2*{action}");
        let env = [
            ("FAILPOINTS", failpoints.as_str()),
            ("LATCHKEY_PASSWORDLESS_SIGNUP", "true"),
        ];
        let kek = latchkey::keys::Kek::generate_encoded();
        let server = ServerProcess::serve_with(&test_db, &kek, &webhook_flags(&url), &env).await;
        let pool = test_db.pool().await;
        assert_eq!(server.signup("alice@example.com").await.status(), 201);
        let alice = emailed(&server, "alice@example.com", 0).await;
        let new = emailed(&server, "new@example.com", 1).await;
        let before = written(&pool).await;
        assert_eq!(
            before,
            [1, 0, 1, 2, 1],
            "{context}: the signup and two codes"
        );

        // An existing account's sign-in, and a first one that would create the account.
        for (email, code) in [("alice@example.com", &alice), ("new@example.com", &new)] {
            let failed = verify(&server, email, code).send().await.unwrap();
            assert_internal_without_cookies(failed, &format!("{context}: {email}")).await;
            assert_eq!(
                written(&pool).await,
                before,
                "{context}: {email}: nothing written"
            );
        }
        assert_eq!(count(&pool, ORPHANS).await, 0, "{context}");
        server.assert_serving(&context).await;

        // The codes were not spent: the same sign-ins now succeed.
        for (email, code) in [("alice@example.com", &alice), ("new@example.com", &new)] {
            let response = verify(&server, email, code).send().await.unwrap();
            assert_eq!(response.status(), 200, "{context}: {email} again");
            let session = Session::from_response(response).await;
            assert_eq!(
                TestApp::claims(&session.access_token)["amr"],
                json!(["otp"])
            );
        }
        assert_eq!(written(&pool).await[..4], [3, 2, 2, 0], "{context}: after");
        // The events of the failed attempts were never queued: one login, one creation.
        let events = receiver.wait_delivered(3).await;
        let mut types: Vec<String> = events.iter().map(Delivery::event_type).collect();
        types.sort();
        assert_eq!(
            types,
            ["user.created", "user.created", "user.login"],
            "{context}"
        );
        pool.close().await;
    }
}

async fn a_sign_in_abandoned_before_its_commit_changes_nothing(db: Db) {
    let test_db = TestDb::new(db).await;
    let kek = latchkey::keys::Kek::generate_encoded();
    let point = "passwordless.before_commit";
    let server = held_server(&test_db, &kek, &[point], &[]).await;
    let pool = test_db.pool().await;
    assert_eq!(server.signup("alice@example.com").await.status(), 201);
    let code = emailed(&server, "alice@example.com", 0).await;
    let before = written(&pool).await;

    abandon_and_roll_back(&server, verify(&server, "alice@example.com", &code), point).await;
    assert_eq!(
        written(&pool).await,
        before,
        "nothing written, the code unspent"
    );
    let response = verify(&server, "alice@example.com", &code)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the same code afterwards");
    assert_eq!(written(&pool).await[..2], [2, 1]);
    pool.close().await;
}

/// Starts a code's verification and waits until it is held between the check and the
/// transaction.
async fn held_verification(
    server: &ServerProcess,
    code: &str,
) -> tokio::task::JoinHandle<reqwest::Response> {
    let request = verify(server, "alice@example.com", code);
    sent_and_held(server, request, "passwordless.after_check").await
}

async fn assert_refused_without_session(response: reqwest::Response, pool: &AnyPool, why: &str) {
    assert_eq!(response.status(), 400, "{why}");
    assert!(response.headers().get("set-cookie").is_none(), "{why}");
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "token_invalid", "{why}");
    let opened = "SELECT COUNT(*) FROM sessions WHERE amr = 'otp'";
    assert_eq!(count(pool, opened).await, 0, "{why}: no session opened");
    let live = "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL";
    assert_eq!(count(pool, live).await, 0, "{why}: no live session");
    let logins = "SELECT COUNT(*) FROM audit_events WHERE kind = 'login'";
    assert_eq!(count(pool, logins).await, 0, "{why}: no login recorded");
}

async fn a_reset_committing_while_a_code_is_checked_opens_no_session(db: Db) {
    let test_db = TestDb::new(db).await;
    let kek = latchkey::keys::Kek::generate_encoded();
    let server = held_server(&test_db, &kek, &["passwordless.after_check"], &[]).await;
    let pool = test_db.pool().await;
    assert_eq!(server.signup("alice@example.com").await.status(), 201);
    assert_eq!(server.forgot("alice@example.com").await.status(), 202);
    let token = server.link_token("password/reset", 0).await;
    let code = emailed(&server, "alice@example.com", 0).await;

    let held = held_verification(&server, &code).await;
    let reset = server
        .client
        .post(server.url("/auth/password/reset"))
        .json(&json!({"token": token, "password": "another horse battery staple"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        reset.status(),
        204,
        "the reset commits while the code is held"
    );

    assert_refused_without_session(held.await.unwrap(), &pool, "after a reset").await;
    let unused = "SELECT COUNT(*) FROM passwordless_codes";
    assert_eq!(count(&pool, unused).await, 0, "the reset revoked the code");
    pool.close().await;
}

async fn a_disable_committing_while_a_code_is_checked_opens_no_session(db: Db) {
    let test_db = TestDb::new(db).await;
    let kek = latchkey::keys::Kek::generate_encoded();
    let server = held_server(&test_db, &kek, &["passwordless.after_check"], &[]).await;
    let pool = test_db.pool().await;
    let owner = server.signup("alice@example.com").await;
    let user_id = Session::from_response(owner).await.user_id().to_owned();
    let code = emailed(&server, "alice@example.com", 0).await;

    let held = held_verification(&server, &code).await;
    disable_with_cli(&test_db, &kek, &user_id).await;

    assert_refused_without_session(held.await.unwrap(), &pool, "after a disable").await;
    let unused = "SELECT COUNT(*) FROM passwordless_codes WHERE used_at IS NULL";
    assert_eq!(count(&pool, unused).await, 1, "nothing spent");
    pool.close().await;
}
