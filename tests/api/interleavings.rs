//! Flows under interleavings (`--features failpoints`): a client that hangs up while its flow is
//! held before the commit, and the flows that revoke or change what another flow read, committing
//! in the window between its read and its write. Each case runs the real binary with failpoints
//! that hold a flow (`return(sleep:MS)`, an await that does not block the runtime), on a fresh
//! database.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::AnyPool;

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    flows_abandoned_before_their_commit_end_whole_and_writes_go_on,
    a_reset_committing_while_a_login_verifies_leaves_no_live_session,
    a_password_change_committing_while_a_login_verifies_leaves_no_new_session,
    a_reset_committing_while_a_password_change_verifies_wins,
    a_disable_committing_while_a_login_verifies_leaves_no_live_session,
    a_logout_all_committing_while_a_refresh_spends_leaves_no_live_token,
    an_mfa_verification_abandoned_or_raced_by_a_password_change_opens_no_session,
    a_passkey_login_abandoned_or_raced_by_the_passkeys_removal_opens_no_session,
    the_factors_removal_committing_while_a_verification_is_held_leaves_no_session,
    a_passkey_registration_abandoned_before_its_commit_adds_nothing,
);

const NEW_PASSWORD: &str = "another horse battery staple";

/// How long a held flow sleeps; the racing request has this long to commit.
const HOLD_MS: u64 = 1200;

async fn server_with(db: &TestDb, failpoints: &[&str]) -> ServerProcess {
    server_with_kek(db, &latchkey::keys::Kek::generate_encoded(), failpoints).await
}

async fn server_with_kek(db: &TestDb, kek: &str, failpoints: &[&str]) -> ServerProcess {
    held_server(db, kek, failpoints, &[]).await
}

/// `latchkey serve` whose flows are held once at each of `failpoints`, with more environment.
pub(crate) async fn held_server(
    db: &TestDb,
    kek: &str,
    failpoints: &[&str],
    more: &[(&str, &str)],
) -> ServerProcess {
    let held: Vec<String> = failpoints
        .iter()
        .map(|point| format!("{point}=1*return(sleep:{HOLD_MS})"))
        .collect();
    // A held flow keeps its transaction open for HOLD_MS, and the racing one may wait that long
    // for its locks: both longer than the default database_timeout, which would end them.
    let held = held.join(";");
    let env = [
        ("FAILPOINTS", held.as_str()),
        ("LATCHKEY_DATABASE_TIMEOUT", "10s"),
    ];
    ServerProcess::serve(db, kek, &[&env[..], more].concat()).await
}

/// Waits until `sql` counts `expected` (the abandoned flow ends on its own), or fails.
async fn eventually(pool: &AnyPool, sql: &str, expected: i64, context: &str) {
    for _ in 0..100 {
        if count(pool, sql).await == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{context}: `{sql}` never counted {expected}");
}

/// How many times the process logged that `point` holds a flow.
pub(crate) fn times_held(server: &ServerProcess, point: &str) -> usize {
    let marker = format!("failpoint={point}");
    server
        .log()
        .iter()
        .filter(|line| line.contains("failpoint holding the flow") && line.contains(&marker))
        .count()
}

/// Sends the request and returns once its flow is held at `point` (within 5 s, or fails); the
/// handle gives its answer when the hold is over.
pub(crate) async fn sent_and_held(
    server: &ServerProcess,
    request: reqwest::RequestBuilder,
    point: &str,
) -> tokio::task::JoinHandle<reqwest::Response> {
    let before = times_held(server, point);
    let sent = tokio::spawn(async move { request.send().await.unwrap() });
    for _ in 0..200 {
        if times_held(server, point) > before {
            return sent;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{point}: the flow was never held");
}

/// Sends the request and hangs up on it once its flow is held at `point`: the client goes away
/// while the server is inside the flow, as a closing tab or a load balancer's timeout does.
async fn abandon(server: &ServerProcess, request: reqwest::RequestBuilder, point: &str) {
    sent_and_held(server, request, point).await.abort();
}

async fn session_of(response: reqwest::Response, context: &str) -> Session {
    assert!(
        response.status().is_success(),
        "{context}: {}",
        response.status()
    );
    Session::from_response(response).await
}

/// How many flows the process rolled back because their caller was gone at the commit.
fn rolled_back_for_nobody(server: &ServerProcess) -> usize {
    let marker = "the caller went away before the commit: rolled back";
    server
        .log()
        .iter()
        .filter(|line| line.contains(marker))
        .count()
}

/// Hangs up on a request held at `point` and waits until its flow has rolled back.
pub(crate) async fn abandon_and_roll_back(
    server: &ServerProcess,
    request: reqwest::RequestBuilder,
    point: &str,
) {
    let before = rolled_back_for_nobody(server);
    abandon(server, request, point).await;
    for _ in 0..200 {
        if rolled_back_for_nobody(server) > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{point}: the abandoned flow never rolled back");
}

/// Every critical flow is held before its commit while its client hangs up. Each ends whole on
/// its own although its handler is gone: the flows whose outcome only the caller would receive
/// (signup, login, refresh, verify, change, reset) roll back, so the request changed nothing; a
/// logout-all, which the user must be able to rely on, commits. No response is ever logged for
/// them, and every later write works.
async fn flows_abandoned_before_their_commit_end_whole_and_writes_go_on(db: Db) {
    let test_db = TestDb::new(db).await;
    let server = server_with(
        &test_db,
        &[
            "signup.before_commit",
            "login.before_commit",
            "refresh.before_commit",
            "email_verify.before_commit",
            "password_change.before_commit",
            "password_reset.before_commit",
            "logout_all.before_commit",
        ],
    )
    .await;
    let pool = test_db.pool().await;
    let client = &server.client;
    let body = json!({"email": "alice@example.com", "password": PASSWORD});
    let tables = [
        "users",
        "profiles",
        "sessions",
        "refresh_tokens",
        "one_time_tokens",
        "outbox",
    ];
    let counts = async || {
        let mut all = Vec::new();
        for table in tables {
            all.push(count(&pool, &format!("SELECT COUNT(*) FROM {table}")).await);
        }
        all
    };

    let signup = client.post(server.url("/auth/signup")).json(&body);
    abandon_and_roll_back(&server, signup, "signup.before_commit").await;
    assert_eq!(
        counts().await,
        [0, 0, 0, 0, 0, 0],
        "signup: nothing written"
    );
    assert_eq!(count(&pool, ORPHANS).await, 0);
    let owner = session_of(server.signup("alice@example.com").await, "signup").await;
    let written = counts().await;
    assert_eq!(written, [1, 1, 1, 1, 1, 1], "the signup retried");

    let login = client.post(server.url("/auth/login")).json(&body);
    abandon_and_roll_back(&server, login, "login.before_commit").await;
    assert_eq!(counts().await, written, "login: no session");
    let sql = "SELECT COUNT(*) FROM profiles WHERE last_login_at IS NOT NULL";
    assert_eq!(count(&pool, sql).await, 0, "login: no last login");

    let refresh = client.post(server.url("/auth/refresh")).header(
        "cookie",
        format!("__Secure-lk_refresh={}", owner.refresh_token),
    );
    abandon_and_roll_back(&server, refresh, "refresh.before_commit").await;
    let spent = "SELECT COUNT(*) FROM refresh_tokens WHERE spent_at IS NOT NULL";
    assert_eq!(
        count(&pool, spent).await,
        0,
        "refresh: the token is still unspent"
    );
    assert_eq!(
        server.refresh(&owner.refresh_token).await.status(),
        200,
        "and it works"
    );

    let token = server.link_token("email/verify", 0).await;
    let verify = client
        .post(server.url("/auth/email/verify"))
        .json(&json!({"token": token}));
    abandon_and_roll_back(&server, verify, "email_verify.before_commit").await;
    let verified = "SELECT COUNT(*) FROM users WHERE email_verified_at IS NOT NULL";
    assert_eq!(count(&pool, verified).await, 0, "verify: not verified");

    let change = client
        .post(server.url("/auth/password/change"))
        .bearer_auth(&owner.access_token)
        .json(&json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}));
    abandon_and_roll_back(&server, change, "password_change.before_commit").await;
    assert_eq!(
        server.login("alice@example.com").await.status(),
        200,
        "change: old password"
    );

    let forgot = server.forgot("alice@example.com").await;
    assert_eq!(forgot.status(), 202);
    let token = server.link_token("password/reset", 0).await;
    let reset = client
        .post(server.url("/auth/password/reset"))
        .json(&json!({"token": token, "password": NEW_PASSWORD}));
    abandon_and_roll_back(&server, reset, "password_reset.before_commit").await;
    let live = "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL";
    assert_eq!(count(&pool, live).await, 2, "reset: no session revoked");
    let used = "SELECT COUNT(*) FROM one_time_tokens WHERE purpose = 'password_reset' \
                AND used_at IS NOT NULL";
    assert_eq!(count(&pool, used).await, 0, "reset: the token is unused");

    let logout_all = client
        .post(server.url("/auth/logout-all"))
        .bearer_auth(&owner.access_token);
    abandon(&server, logout_all, "logout_all.before_commit").await;
    let by_logout_all = "SELECT COUNT(*) FROM sessions WHERE revoked_reason = 'logout_all'";
    eventually(
        &pool,
        by_logout_all,
        2,
        "logout-all commits for an absent caller",
    )
    .await;
    assert_eq!(count(&pool, live).await, 0, "logout-all: no live session");

    // The hang-ups reached the server: none of the held requests got to answer.
    for route in [
        "/auth/email/verify",
        "/auth/password/reset",
        "/auth/logout-all",
    ] {
        let answered = server
            .log()
            .iter()
            .any(|line| line.contains("response") && line.contains(&format!("route={route} ")));
        assert!(!answered, "{route}: the abandoned request was not answered");
    }
    // Nothing is stuck: a lock, a connection, a transaction.
    for i in 0..3 {
        let email = format!("after-{i}@example.com");
        assert_eq!(server.signup(&email).await.status(), 201, "signup {i}");
        let session = session_of(server.login(&email).await, "login").await;
        assert_eq!(server.refresh(&session.refresh_token).await.status(), 200);
    }
    assert_eq!(count(&pool, ORPHANS).await, 0);
    pool.close().await;
}

/// Starts a login that will be held between verifying the password and opening its session.
fn held_login(server: &ServerProcess, password: &str) -> tokio::task::JoinHandle<(u16, Value)> {
    let request = server
        .client
        .post(server.url("/auth/login"))
        .json(&json!({"email": "alice@example.com", "password": password}));
    tokio::spawn(async move {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    })
}

/// The login's answer: 401 `invalid_credentials`, the same as a wrong password.
fn assert_refused(outcome: (u16, Value), context: &str) {
    assert_eq!(outcome.0, 401, "{context}: {:?}", outcome.1);
    assert_eq!(
        outcome.1["error"]["code"], "invalid_credentials",
        "{context}"
    );
}

/// Gives the held request time to reach its failpoint.
async fn until_held() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

async fn a_reset_committing_while_a_login_verifies_leaves_no_live_session(db: Db) {
    let test_db = TestDb::new(db).await;
    let server = server_with(&test_db, &["login.after_verify"]).await;
    let pool = test_db.pool().await;
    assert_eq!(server.signup("alice@example.com").await.status(), 201);
    let forgot = server.forgot("alice@example.com").await;
    assert_eq!(forgot.status(), 202);
    let token = server.link_token("password/reset", 0).await;

    let login = held_login(&server, PASSWORD);
    until_held().await;
    let reset = server
        .client
        .post(server.url("/auth/password/reset"))
        .json(&json!({"token": token, "password": NEW_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        reset.status(),
        204,
        "the reset commits while the login is held"
    );

    assert_refused(
        login.await.unwrap(),
        "login verified against the old password",
    );
    let live = "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL";
    assert_eq!(count(&pool, live).await, 0, "no live session");
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM sessions").await, 1);
    let logins = "SELECT COUNT(*) FROM audit_events WHERE kind = 'login'";
    assert_eq!(count(&pool, logins).await, 0, "no login recorded");
    pool.close().await;
}

async fn a_password_change_committing_while_a_login_verifies_leaves_no_new_session(db: Db) {
    let test_db = TestDb::new(db).await;
    let server = server_with(&test_db, &["login.after_verify"]).await;
    let pool = test_db.pool().await;
    let owner = session_of(server.signup("alice@example.com").await, "signup").await;

    let login = held_login(&server, PASSWORD);
    until_held().await;
    let change = server
        .client
        .post(server.url("/auth/password/change"))
        .bearer_auth(&owner.access_token)
        .json(&json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        change.status(),
        204,
        "the change commits while the login is held"
    );

    assert_refused(
        login.await.unwrap(),
        "login verified against the old password",
    );
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM sessions").await,
        1,
        "no new session"
    );
    assert_eq!(
        server.me(&owner.access_token).await.status(),
        200,
        "the changer's session stays"
    );
    pool.close().await;
}

async fn a_disable_committing_while_a_login_verifies_leaves_no_live_session(db: Db) {
    let test_db = TestDb::new(db).await;
    let kek = latchkey::keys::Kek::generate_encoded();
    let server = server_with_kek(&test_db, &kek, &["login.after_verify"]).await;
    let pool = test_db.pool().await;
    let user_id = session_of(server.signup("alice@example.com").await, "signup")
        .await
        .user_id()
        .to_owned();

    let login = held_login(&server, PASSWORD);
    until_held().await;
    disable_with_cli(&test_db, &kek, &user_id).await;

    assert_refused(
        login.await.unwrap(),
        "login of an account disabled meanwhile",
    );
    let live = "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL";
    assert_eq!(count(&pool, live).await, 0, "no live session");
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM sessions").await, 1);
    pool.close().await;
}

/// On PostgreSQL the logout-all commits inside the refresh's window (READ COMMITTED lets it),
/// and the refresh, finding its session revoked, rolls back: 401. On SQLite the refresh holds the
/// write lock through its window, so the logout-all waits and revokes the refreshed session after
/// it: the refresh's tokens then die with it. Either way no token of a live session is left and
/// the access token the refresh may have minted is refused.
async fn a_logout_all_committing_while_a_refresh_spends_leaves_no_live_token(db: Db) {
    let test_db = TestDb::new(db).await;
    let server = server_with(&test_db, &["refresh.after_spend"]).await;
    let pool = test_db.pool().await;
    let session = session_of(server.signup("alice@example.com").await, "signup").await;

    let request = server.client.post(server.url("/auth/refresh")).header(
        "cookie",
        format!("__Secure-lk_refresh={}", session.refresh_token),
    );
    let refresh = tokio::spawn(async move { request.send().await.unwrap() });
    until_held().await;
    let logout_all = server
        .client
        .post(server.url("/auth/logout-all"))
        .bearer_auth(&session.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout_all.status(), 204);

    let refreshed = refresh.await.unwrap();
    match db {
        Db::Postgres => {
            assert_eq!(refreshed.status(), 401, "the rotation rolled back");
            let body: Value = refreshed.json().await.unwrap();
            assert_eq!(body, session_revoked());
            let spent = "SELECT COUNT(*) FROM refresh_tokens WHERE spent_at IS NOT NULL";
            assert_eq!(count(&pool, spent).await, 0, "the spend rolled back too");
        }
        Db::Sqlite => {
            assert_eq!(refreshed.status(), 200, "the refresh committed first");
            let minted = Session::from_response(refreshed).await;
            assert_eq!(server.me(&minted.access_token).await.status(), 401);
            assert_eq!(server.refresh(&minted.refresh_token).await.status(), 401);
        }
    }
    let live_tokens = "SELECT COUNT(*) FROM refresh_tokens rt JOIN sessions s \
                       ON s.id = rt.session_id WHERE s.revoked_at IS NULL";
    assert_eq!(
        count(&pool, live_tokens).await,
        0,
        "no token of a live session"
    );
    pool.close().await;
}

/// A change whose current password was verified just before a reset committed must not
/// overwrite the reset's password (nor keep its caller's session, which the reset revoked).
async fn a_reset_committing_while_a_password_change_verifies_wins(db: Db) {
    let test_db = TestDb::new(db).await;
    let server = server_with(&test_db, &["password_change.after_verify"]).await;
    let pool = test_db.pool().await;
    let owner = session_of(server.signup("alice@example.com").await, "signup").await;
    assert_eq!(server.forgot("alice@example.com").await.status(), 202);
    let token = server.link_token("password/reset", 0).await;

    let request = server
        .client
        .post(server.url("/auth/password/change"))
        .bearer_auth(&owner.access_token)
        .json(&json!({"current_password": PASSWORD, "new_password": "a third horse battery"}));
    let change = tokio::spawn(async move { request.send().await.unwrap() });
    until_held().await;
    let reset = server
        .client
        .post(server.url("/auth/password/reset"))
        .json(&json!({"token": token, "password": NEW_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        reset.status(),
        204,
        "the reset commits while the change is held"
    );

    let change = change.await.unwrap();
    assert_eq!(
        change.status(),
        401,
        "the change verified a password that is gone"
    );
    let body: Value = change.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_credentials");
    let login = server
        .client
        .post(server.url("/auth/login"))
        .json(&json!({"email": "alice@example.com", "password": NEW_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200, "the reset's password stands");
    let changed = "SELECT COUNT(*) FROM audit_events WHERE kind = 'password_changed'";
    assert_eq!(count(&pool, changed).await, 0, "no change recorded");
    pool.close().await;
}

/// Alice signed up on `server` with TOTP on (confirmed with the previous step's code, so the
/// current one is unused) and a password login of hers waiting for its second factor: her
/// session, and the verification of that login with the current code, not sent yet.
async fn alice_challenged(
    server: &ServerProcess,
    point: &str,
) -> (Session, reqwest::RequestBuilder) {
    use crate::mfa::{base32, code_at_step};
    let step_now = || {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.unwrap().as_secs() / 30
    };
    let client = &server.client;
    let owner = session_of(server.signup("alice@example.com").await, point).await;
    let post = |path: &str, body: Value| {
        client
            .post(server.url(path))
            .bearer_auth(&owner.access_token)
            .json(&body)
    };
    let started = post("/auth/mfa/totp/enroll", json!({"password": PASSWORD}));
    let started: Value = started.send().await.unwrap().json().await.unwrap();
    let secret = base32(started["secret"].as_str().unwrap());
    let confirm = post(
        "/auth/mfa/totp/confirm",
        json!({"code": code_at_step(&secret, step_now() - 1)}),
    );
    let confirmed = confirm.send().await.unwrap().status();
    assert_eq!(confirmed, 200, "{point}: confirmed");
    let login = client
        .post(server.url("/auth/login"))
        .json(&json!({"email": "alice@example.com", "password": PASSWORD}));
    let challenge: Value = login.send().await.unwrap().json().await.unwrap();
    let body =
        json!({"mfa_token": challenge["mfa_token"], "code": code_at_step(&secret, step_now())});
    (
        owner,
        client.post(server.url("/auth/mfa/verify")).json(&body),
    )
}

/// The second factor's verification, held before its commit while its client hangs up: it rolls
/// back, the challenge stays unspent and works afterwards. Held between its checks and its
/// transaction while a password change commits: the transaction sees the password it checked is
/// gone, answers `token_invalid` and opens no session.
async fn an_mfa_verification_abandoned_or_raced_by_a_password_change_opens_no_session(db: Db) {
    for point in ["mfa.verify.before_commit", "mfa.verify.after_check"] {
        let test_db = TestDb::new(db).await;
        let server = server_with(&test_db, &[point]).await;
        let pool = test_db.pool().await;
        let client = &server.client;
        let (owner, verify) = alice_challenged(&server, point).await;
        let post = |path: &str, body: Value| {
            client
                .post(server.url(path))
                .bearer_auth(&owner.access_token)
                .json(&body)
        };
        let sessions = "SELECT COUNT(*) FROM sessions";
        let unspent = "SELECT COUNT(*) FROM mfa_challenges WHERE used_at IS NULL";
        assert_eq!(
            count(&pool, sessions).await,
            1,
            "{point}: the signup's session"
        );

        if point == "mfa.verify.before_commit" {
            abandon_and_roll_back(&server, verify.try_clone().unwrap(), point).await;
            assert_eq!(count(&pool, sessions).await, 1, "{point}: no session");
            assert_eq!(
                count(&pool, unspent).await,
                1,
                "{point}: the challenge is unspent"
            );
            let retried = verify.send().await.unwrap();
            assert_eq!(
                retried.status(),
                200,
                "{point}: the same verification again"
            );
            assert_eq!(count(&pool, sessions).await, 2);
        } else {
            let held = sent_and_held(&server, verify, point).await;
            let change = post(
                "/auth/password/change",
                json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}),
            );
            assert_eq!(
                change.send().await.unwrap().status(),
                204,
                "{point}: changed"
            );
            let answer = held.await.unwrap();
            assert_eq!(answer.status(), 400, "{point}");
            assert!(answer.headers().get("set-cookie").is_none());
            let error: Value = answer.json().await.unwrap();
            assert_eq!(error["error"]["code"], "token_invalid", "{point}");
            assert_eq!(
                count(&pool, sessions).await,
                1,
                "{point}: no session opened, the signup's stays"
            );
            assert_eq!(count(&pool, unspent).await, 1, "{point}: nothing spent");
        }
        pool.close().await;
    }
}

/// A passkey login held before its commit while its client hangs up: it rolls back, the ceremony
/// stays unspent and the same answer works afterwards. Held between its verification and its
/// transaction while the passkey is removed (or, the second time, the account disabled): the
/// transaction finds the credential it checked gone, answers 401 and opens no session.
async fn a_passkey_login_abandoned_or_raced_by_the_passkeys_removal_opens_no_session(db: Db) {
    use crate::helpers::authenticator::Authenticator;
    for point in [
        "passkeys.login.before_commit",
        "passkeys.login.after_verify",
    ] {
        let test_db = TestDb::new(db).await;
        let server = server_with(&test_db, &[point]).await;
        let pool = test_db.pool().await;
        let client = &server.client;
        let owner = session_of(server.signup("alice@example.com").await, point).await;
        let start = |path: &str, token: Option<&str>| {
            let request = client.post(server.url(path));
            let request = match token {
                Some(token) => request.bearer_auth(token.to_owned()),
                None => request,
            };
            async move {
                let body: Value = request.send().await.unwrap().json().await.unwrap();
                (
                    body["ceremony"].as_str().unwrap().to_owned(),
                    body["publicKey"].clone(),
                )
            }
        };
        let mut phone = Authenticator::new(PUBLIC_URL);
        let register = "/auth/passkeys/register/start";
        let (ceremony, options) = start(register, Some(&owner.access_token)).await;
        let body = json!({"ceremony": ceremony, "credential": phone.create(&options)});
        let added = client
            .post(server.url("/auth/passkeys/register/finish"))
            .bearer_auth(&owner.access_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(added.status(), 201, "{point}: registered");
        let added: Value = added.json().await.unwrap();
        let (ceremony, options) = start("/auth/passkeys/login/start", None).await;
        let body = json!({"ceremony": ceremony, "credential": phone.get(&options)});
        let login = client
            .post(server.url("/auth/passkeys/login/finish"))
            .json(&body);
        let sessions = "SELECT COUNT(*) FROM sessions";
        let unspent = "SELECT COUNT(*) FROM passkey_ceremonies WHERE kind = 'login'";

        if point == "passkeys.login.before_commit" {
            abandon_and_roll_back(&server, login.try_clone().unwrap(), point).await;
            assert_eq!(count(&pool, sessions).await, 1, "{point}: no session");
            assert_eq!(count(&pool, unspent).await, 1, "{point}: unspent");
            let retried = login.send().await.unwrap();
            assert_eq!(retried.status(), 200, "{point}: the same answer again");
            assert_eq!(count(&pool, sessions).await, 2);
        } else {
            let held = sent_and_held(&server, login, point).await;
            let id = added["id"].as_str().unwrap();
            let removed = client
                .delete(server.url(&format!("/auth/passkeys/{id}")))
                .bearer_auth(&owner.access_token)
                .send()
                .await
                .unwrap();
            assert_eq!(removed.status(), 204, "{point}: removed");
            let answer = held.await.unwrap();
            assert_eq!(answer.status(), 401, "{point}");
            assert!(answer.headers().get("set-cookie").is_none());
            assert_eq!(
                count(&pool, sessions).await,
                1,
                "{point}: no session opened"
            );
            assert_eq!(count(&pool, unspent).await, 1, "{point}: nothing spent");
        }
        pool.close().await;
    }
}

/// The second factor removed (by the owner, with the password) while a verification that
/// checked a right code is held before its transaction: the challenge went with the factor, so
/// the transaction finds nothing to spend, answers `token_invalid` and opens no session.
async fn the_factors_removal_committing_while_a_verification_is_held_leaves_no_session(db: Db) {
    let point = "mfa.verify.after_check";
    let test_db = TestDb::new(db).await;
    let server = server_with(&test_db, &[point]).await;
    let pool = test_db.pool().await;
    let client = &server.client;
    let (owner, verify) = alice_challenged(&server, point).await;

    let held = sent_and_held(&server, verify, point).await;
    let removed = client
        .delete(server.url("/auth/mfa/totp"))
        .bearer_auth(&owner.access_token)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        removed.status(),
        204,
        "removed while the verification is held"
    );
    let answer = held.await.unwrap();
    assert_eq!(answer.status(), 400);
    assert!(answer.headers().get("set-cookie").is_none());
    let error: Value = answer.json().await.unwrap();
    assert_eq!(error["error"]["code"], "token_invalid");
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM sessions").await,
        1,
        "the signup's only"
    );
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM mfa_totp").await, 0);
    pool.close().await;
}

/// A passkey registration held before its commit while its client hangs up: it rolls back, no
/// passkey is stored, the ceremony stays unspent, and the same answer registers it afterwards.
async fn a_passkey_registration_abandoned_before_its_commit_adds_nothing(db: Db) {
    use crate::helpers::authenticator::Authenticator;
    let point = "passkeys.register.before_commit";
    let test_db = TestDb::new(db).await;
    let server = server_with(&test_db, &[point]).await;
    let pool = test_db.pool().await;
    let client = &server.client;
    let owner = session_of(server.signup("alice@example.com").await, point).await;
    let started = client
        .post(server.url("/auth/passkeys/register/start"))
        .bearer_auth(&owner.access_token)
        .send()
        .await
        .unwrap();
    let started: Value = started.json().await.unwrap();
    let mut phone = Authenticator::new(PUBLIC_URL);
    let body = json!({
        "ceremony": started["ceremony"],
        "credential": phone.create(&started["publicKey"]),
    });
    let finish = client
        .post(server.url("/auth/passkeys/register/finish"))
        .bearer_auth(&owner.access_token)
        .json(&body);
    abandon_and_roll_back(&server, finish.try_clone().unwrap(), point).await;
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM passkeys").await,
        0,
        "nothing stored"
    );
    let unspent = "SELECT COUNT(*) FROM passkey_ceremonies WHERE kind = 'register'";
    assert_eq!(count(&pool, unspent).await, 1, "the ceremony is unspent");
    let again = finish.send().await.unwrap();
    assert_eq!(again.status(), 201, "the same answer again");
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM passkeys").await, 1);
    pool.close().await;
}
