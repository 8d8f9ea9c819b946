//! The failpoints of the other store flows (`--features failpoints`), one just before each
//! commit: password change, logout, logout-all, password forgot, verification resend, profile
//! update and session revoke. Whatever fails there answers the contract's 500 `internal`, sets
//! no cookie and changes no row; the server keeps serving, and the very same request then
//! succeeds with its documented status and effect.
//!
//! As in `failpoints.rs`, each case runs the real binary as a subprocess with its own
//! `FAILPOINTS` (the `fail` crate's configuration is global to a process), on a fresh database,
//! every action (`return` and `panic`) in turn.

use std::time::Duration;

use reqwest::RequestBuilder;
use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    password_change_failing_before_commit_keeps_the_password_and_the_sessions,
    logout_failing_before_commit_keeps_the_session,
    logout_all_failing_before_commit_keeps_every_session,
    password_forgot_failing_before_commit_takes_no_slot_and_records_no_request,
    email_resend_failing_before_commit_issues_no_link_and_keeps_the_slot,
    profile_update_failing_before_commit_keeps_the_display_name,
    session_revoke_failing_before_commit_keeps_the_session,
    mfa_verify_failing_before_commit_opens_no_session_and_spends_nothing,
    mfa_confirmation_failing_before_commit_leaves_the_factor_off,
    passkey_registration_failing_before_commit_adds_no_passkey,
    passkey_login_failing_before_commit_opens_no_session_and_spends_nothing,
    email_change_confirm_failing_keeps_the_address_and_the_token,
    account_deletion_failing_keeps_the_account,
);

/// What a failpoint does when it fires: fail the step with an error, or panic there.
const ACTIONS: [&str; 2] = ["return", "panic"];

/// The contract's answers of forgot and resend.
const FORGOT_MESSAGE: &str =
    "If an account exists for this email address, a link to reset its password is on its way.";
const RESENT_MESSAGE: &str = "A new verification link is on its way to your email address.";

const NEW_PASSWORD: &str = "another horse battery staple";
const ALICE: &str = "alice@example.com";

/// Every table of the schema: the failed request must leave each one exactly as it was.
const TABLES: [&str; 21] = [
    "users",
    "profiles",
    "sessions",
    "refresh_tokens",
    "audit_events",
    "signing_keys",
    "one_time_tokens",
    "outbox",
    "mail_throttle",
    "rate_limits",
    "email_key_version",
    "password_reset_requests",
    "webhook_outbox",
    "mfa_totp",
    "mfa_recovery_codes",
    "mfa_challenges",
    "admin_keys",
    "passkeys",
    "passkey_ceremonies",
    "passwordless_codes",
    "identities",
];

/// Undelivered webhooks: the webhook worker changes these rows on its own, like the outbox's.
const UNSENT_WEBHOOKS: &str =
    "SELECT COUNT(*) FROM webhook_outbox WHERE sent_at IS NULL AND dead_at IS NULL";

/// Unsent emails: the mail worker changes these rows on its own, so a snapshot waits for none.
const UNSENT: &str = "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND dead_at IS NULL";

/// One case: a `latchkey serve` failing once at `point=1*action`, on a fresh database, with
/// alice signed up and her verification email sent.
struct Fixture {
    context: String,
    point: &'static str,
    server: ServerProcess,
    pool: AnyPool,
    alice: Session,
    /// Where every event goes: a failed request must send none.
    receiver: Receiver,
    // Last: dropped after the server stopped.
    _db: TestDb,
}

impl Fixture {
    async fn start(db: Db, point: &'static str, action: &str) -> Fixture {
        Fixture::start_with(db, point, action, &[]).await
    }

    /// With `extra` flags after the test flags of `ServerProcess::serve`.
    async fn start_with(db: Db, point: &'static str, action: &str, extra: &[&str]) -> Fixture {
        let context = format!("{point}=1*{action} ({db:?})");
        let test_db = TestDb::new(db).await;
        let kek = latchkey::keys::Kek::generate_encoded();
        let failpoints = format!("{point}=1*{action}");
        let env = [("FAILPOINTS", failpoints.as_str())];
        let receiver = Receiver::start().await;
        let url = receiver.url();
        let mut flags = crate::failpoints::webhook_flags(&url);
        flags.extend_from_slice(extra);
        let server = ServerProcess::serve_with(&test_db, &kek, &flags, &env).await;
        let pool = test_db.pool().await;

        let signup = server.signup(ALICE).await;
        assert_eq!(
            signup.status(),
            201,
            "{context}: signup has no failpoint here"
        );
        let alice = Session::from_response(signup).await;
        let fixture = Fixture {
            context,
            point,
            server,
            pool,
            alice,
            receiver,
            _db: test_db,
        };
        fixture.settle().await;
        fixture
    }

    /// Waits until the mail worker has nothing left to do, so that no row changes by itself.
    async fn settle(&self) {
        let context = format!("{}: mail worker idle", self.context);
        eventually(&self.pool, UNSENT, 0, &context).await;
        eventually(&self.pool, UNSENT_WEBHOOKS, 0, &context).await;
        let pending = "SELECT COUNT(*) FROM password_reset_requests";
        eventually(&self.pool, pending, 0, &context).await;
    }

    /// Sends `request` while the failpoint is armed: the contract's 500 without a cookie, the
    /// failpoint (not anything else) the cause, no row of any table changed, the server still
    /// serving.
    async fn fails_changing_nothing(&self, request: &RequestBuilder) {
        let context = &self.context;
        let before = snapshot(&self.pool).await;
        let requests = self.receiver.all().len();
        let response = send(request).await;
        assert_internal_without_cookies(response, context).await;
        assert_logged(&self.server, self.point, context).await;
        let after = snapshot(&self.pool).await;
        assert_eq!(
            before, after,
            "{context}: the failed request changed no row of any table"
        );
        self.server.assert_serving(context).await;
        assert_eq!(
            self.receiver.all().len(),
            requests,
            "{context}: no webhook sent"
        );
    }

    async fn count(&self, sql: &str) -> i64 {
        count(&self.pool, sql).await
    }

    /// `SELECT COUNT(*) FROM audit_events WHERE kind = '{kind}'`.
    async fn events(&self, kind: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM audit_events WHERE kind = '{kind}'");
        self.count(&sql).await
    }

    async fn login(&self, password: &str) -> reqwest::Response {
        self.server
            .client
            .post(self.server.url("/auth/login"))
            .json(&json!({"email": ALICE, "password": password}))
            .send()
            .await
            .expect("login request answered")
    }

    /// A second session of alice, by a login.
    async fn second_session(&self) -> Session {
        let login = self.login(PASSWORD).await;
        assert_eq!(login.status(), 200, "{}: a second session", self.context);
        let session = Session::from_response(login).await;
        // Its `user.login` webhook is delivered before any snapshot is taken.
        self.settle().await;
        session
    }

    /// The id of the caller's session (`current`) or of its other one, from GET /auth/sessions.
    async fn session_id(&self, access_token: &str, current: bool) -> String {
        let response = self
            .server
            .client
            .get(self.server.url("/auth/sessions"))
            .bearer_auth(access_token)
            .send()
            .await
            .expect("sessions request answered");
        assert_eq!(
            response.status(),
            200,
            "{}: GET /auth/sessions",
            self.context
        );
        let body: Value = response.json().await.unwrap();
        let ids: Vec<&str> = body["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .filter(|s| s["current"] == current)
            .map(|s| s["id"].as_str().expect("id"))
            .collect();
        assert_eq!(ids.len(), 1, "{}: one such session: {body}", self.context);
        ids[0].to_owned()
    }

    /// GET /auth/me's status with `access_token`.
    async fn me_status(&self, access_token: &str) -> u16 {
        self.server.me(access_token).await.status().as_u16()
    }

    async fn finish(self) {
        self.pool.close().await;
    }
}

async fn mfa_verify_failing_before_commit_opens_no_session_and_spends_nothing(db: Db) {
    use crate::mfa::{base32, code_at_step};
    let step_now = || {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.unwrap().as_secs() / 30
    };
    for action in ACTIONS {
        let f = Fixture::start(db, "mfa.verify.before_commit", action).await;
        let context = f.context.clone();
        let post = |path: &str, body: Value| {
            f.server
                .client
                .post(f.server.url(path))
                .bearer_auth(&f.alice.access_token)
                .json(&body)
        };
        let started = send(&post(
            "/auth/mfa/totp/enroll",
            json!({"password": PASSWORD}),
        ))
        .await;
        let started: Value = started.json().await.unwrap();
        let secret = base32(started["secret"].as_str().unwrap());
        // The previous step's code confirms (clock skew), so the current one is still unused.
        let code = code_at_step(&secret, step_now() - 1);
        let confirmed = send(&post("/auth/mfa/totp/confirm", json!({"code": code}))).await;
        assert_eq!(confirmed.status(), 200, "{context}: confirmed");
        let login = f.login(PASSWORD).await;
        let body: Value = login.json().await.unwrap();
        assert_eq!(body["mfa_required"], true, "{context}");
        f.settle().await;

        let body =
            json!({"mfa_token": body["mfa_token"], "code": code_at_step(&secret, step_now())});
        let verify = f
            .server
            .client
            .post(f.server.url("/auth/mfa/verify"))
            .json(&body);
        f.fails_changing_nothing(&verify).await;
        let unspent = "SELECT COUNT(*) FROM mfa_challenges WHERE used_at IS NULL";
        assert_eq!(
            f.count(unspent).await,
            1,
            "{context}: the challenge is unspent"
        );

        let retried = send(&verify).await;
        assert_eq!(
            retried.status(),
            200,
            "{context}: the same verification again"
        );
        let session = Session::from_response(retried).await;
        assert!(
            session.cookies.contains_key("__Host-lk_access"),
            "{context}"
        );
        assert_eq!(f.me_status(&session.access_token).await, 200, "{context}");
        assert_eq!(f.count(unspent).await, 0, "{context}: spent now");
        f.finish().await;
    }
}

async fn mfa_confirmation_failing_before_commit_leaves_the_factor_off(db: Db) {
    use crate::mfa::{base32, code_at_step};
    let step_now = || {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.unwrap().as_secs() / 30
    };
    for action in ACTIONS {
        let f = Fixture::start(db, "mfa.confirm.before_commit", action).await;
        let context = f.context.clone();
        let post = |path: &str, body: Value| {
            f.server
                .client
                .post(f.server.url(path))
                .bearer_auth(&f.alice.access_token)
                .json(&body)
        };
        let enroll = post("/auth/mfa/totp/enroll", json!({"password": PASSWORD}));
        let started: Value = send(&enroll).await.json().await.unwrap();
        let secret = base32(started["secret"].as_str().unwrap());
        f.settle().await;
        let confirm = post(
            "/auth/mfa/totp/confirm",
            json!({"code": code_at_step(&secret, step_now())}),
        );
        f.fails_changing_nothing(&confirm).await;
        let on = "SELECT COUNT(*) FROM mfa_totp WHERE confirmed_at IS NOT NULL";
        assert_eq!(f.count(on).await, 0, "{context}: still off");
        let stepped_up = "SELECT COUNT(*) FROM sessions WHERE amr = 'pwd otp'";
        assert_eq!(
            f.count(stepped_up).await,
            0,
            "{context}: the session as it was"
        );

        let retried = send(&confirm).await;
        assert_eq!(retried.status(), 200, "{context}: the same code again");
        assert_eq!(f.count(on).await, 1, "{context}");
        assert_eq!(f.count("SELECT COUNT(*) FROM mfa_recovery_codes").await, 10);
        assert_eq!(f.count(stepped_up).await, 1, "{context}");
        f.finish().await;
    }
}

/// Alice's registration of a passkey started: the ceremony's handle and the creation options.
async fn passkey_start(f: &Fixture, path: &str, token: Option<&str>) -> (String, Value) {
    let request = f.server.client.post(f.server.url(path));
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let started = send(&request).await;
    assert_eq!(started.status(), 200, "{}: {path}", f.context);
    let body: Value = started.json().await.unwrap();
    let ceremony = body["ceremony"].as_str().unwrap().to_owned();
    (ceremony, body["publicKey"].clone())
}

async fn passkey_registration_failing_before_commit_adds_no_passkey(db: Db) {
    use crate::helpers::authenticator::Authenticator;
    for action in ACTIONS {
        let f = Fixture::start(db, "passkeys.register.before_commit", action).await;
        let context = f.context.clone();
        let token = f.alice.access_token.clone();
        let start = "/auth/passkeys/register/start";
        let (ceremony, options) = passkey_start(&f, start, Some(&token)).await;
        let mut phone = Authenticator::new(PUBLIC_URL);
        let body = json!({"ceremony": ceremony, "credential": phone.create(&options)});
        let finish = f
            .server
            .client
            .post(f.server.url("/auth/passkeys/register/finish"))
            .bearer_auth(&token)
            .json(&body);
        f.fails_changing_nothing(&finish).await;
        assert_eq!(
            f.count("SELECT COUNT(*) FROM passkeys").await,
            0,
            "{context}"
        );
        let retried = send(&finish).await;
        assert_eq!(retried.status(), 201, "{context}: the same answer again");
        assert_eq!(
            f.count("SELECT COUNT(*) FROM passkeys").await,
            1,
            "{context}"
        );
        assert_eq!(f.events("passkey_added").await, 1, "{context}");
        f.finish().await;
    }
}

async fn passkey_login_failing_before_commit_opens_no_session_and_spends_nothing(db: Db) {
    use crate::helpers::authenticator::Authenticator;
    for action in ACTIONS {
        let f = Fixture::start(db, "passkeys.login.before_commit", action).await;
        let context = f.context.clone();
        let token = f.alice.access_token.clone();
        let mut phone = Authenticator::new(PUBLIC_URL);
        let start = "/auth/passkeys/register/start";
        let (ceremony, options) = passkey_start(&f, start, Some(&token)).await;
        let body = json!({"ceremony": ceremony, "credential": phone.create(&options)});
        let finish = f
            .server
            .client
            .post(f.server.url("/auth/passkeys/register/finish"))
            .bearer_auth(&token)
            .json(&body);
        assert_eq!(send(&finish).await.status(), 201, "{context}: registered");

        let (ceremony, options) = passkey_start(&f, "/auth/passkeys/login/start", None).await;
        f.settle().await;
        let body = json!({"ceremony": ceremony, "credential": phone.get(&options)});
        let login = f
            .server
            .client
            .post(f.server.url("/auth/passkeys/login/finish"))
            .json(&body);
        f.fails_changing_nothing(&login).await;
        let unspent = "SELECT COUNT(*) FROM passkey_ceremonies WHERE kind = 'login'";
        assert_eq!(
            f.count(unspent).await,
            1,
            "{context}: the ceremony is unspent"
        );

        let retried = send(&login).await;
        assert_eq!(retried.status(), 200, "{context}: the same answer again");
        let session = Session::from_response(retried).await;
        assert_eq!(f.me_status(&session.access_token).await, 200, "{context}");
        assert_eq!(f.count(unspent).await, 0, "{context}: spent now");
        f.finish().await;
    }
}

async fn send(request: &RequestBuilder) -> reqwest::Response {
    request
        .try_clone()
        .expect("a request without a streamed body")
        .send()
        .await
        .expect("request answered")
}

async fn text(pool: &AnyPool, sql: &str) -> Option<String> {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Waits (up to 10 s) for `sql` to count `expected`.
async fn eventually(pool: &AnyPool, sql: &str, expected: i64, context: &str) {
    let mut last = count(pool, sql).await;
    for _ in 0..100 {
        if last == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = count(pool, sql).await;
    }
    panic!("{context}: {sql} is {last}, not {expected}, after 10 s");
}

/// Every row of every table, each cell rendered, sorted: equal snapshots are equal databases.
async fn snapshot(pool: &AnyPool) -> Vec<String> {
    let mut rows = Vec::new();
    for table in TABLES {
        let sql = format!("SELECT * FROM {table}");
        let fetched = sqlx::query(&sql)
            .fetch_all(pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        for row in fetched {
            let cells: Vec<String> = (0..row.len()).map(|i| cell(&row, i)).collect();
            rows.push(format!("{table}: {}", cells.join(" | ")));
        }
    }
    rows.sort();
    rows
}

fn cell(row: &AnyRow, i: usize) -> String {
    if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
        return format!("{v:?}");
    }
    if let Ok(v) = row.try_get::<Option<String>, _>(i) {
        return format!("{v:?}");
    }
    if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
        return format!("{v:?}");
    }
    if let Ok(v) = row.try_get::<Option<bool>, _>(i) {
        return format!("{v:?}");
    }
    panic!("column {i} decodes as no known type");
}

/// The failpoint fired (its name is in the log): the 500 was not some other failure.
async fn assert_logged(server: &ServerProcess, point: &str, context: &str) {
    for _ in 0..50 {
        if server.log().iter().any(|line| line.contains(point)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{context}: the log never mentions {point}");
}

/// A response without any `Set-Cookie`.
fn assert_no_cookies(response: &reqwest::Response, context: &str) {
    assert!(
        response.headers().get("set-cookie").is_none(),
        "{context}: no cookie, got {:?}",
        response.headers().get_all("set-cookie")
    );
}

async fn password_change_failing_before_commit_keeps_the_password_and_the_sessions(db: Db) {
    for action in ACTIONS {
        let f = Fixture::start(db, "password_change.before_commit", action).await;
        let context = f.context.clone();
        let other = f.second_session().await;
        // A pending reset link, which a change revokes.
        let forgot = f.server.forgot(ALICE).await;
        assert_eq!(
            forgot.status(),
            202,
            "{context}: forgot has no failpoint here"
        );
        f.server.link_token("password/reset", 0).await;
        f.settle().await;
        let hash_sql = "SELECT password_hash FROM users";
        let hash = text(&f.pool, hash_sql).await;
        let live_reset_links = "SELECT COUNT(*) FROM one_time_tokens \
            WHERE purpose = 'password_reset' AND revoked_at IS NULL";
        let notices = "SELECT COUNT(*) FROM outbox WHERE kind = 'password_changed'";
        let live = "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL";
        let by_change = "SELECT COUNT(*) FROM sessions WHERE revoked_reason = 'password_change'";

        let change = f
            .server
            .client
            .post(f.server.url("/auth/password/change"))
            .bearer_auth(&f.alice.access_token)
            .json(&json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}));
        f.fails_changing_nothing(&change).await;
        assert_eq!(
            text(&f.pool, hash_sql).await,
            hash,
            "{context}: password_hash unchanged"
        );
        assert_eq!(f.count(live).await, 2, "{context}: no session revoked");
        assert_eq!(
            f.count(live_reset_links).await,
            1,
            "{context}: the reset link not revoked"
        );
        assert_eq!(
            f.count(notices).await,
            0,
            "{context}: no notice in the outbox"
        );
        assert_eq!(
            f.events("password_changed").await,
            0,
            "{context}: no password_changed event"
        );
        assert_eq!(
            f.me_status(&f.alice.access_token).await,
            200,
            "{context}: the caller's access token works"
        );
        assert_eq!(
            f.me_status(&other.access_token).await,
            200,
            "{context}: the other session's access token works"
        );
        assert_eq!(
            f.login(NEW_PASSWORD).await.status(),
            401,
            "{context}: the new password does not log in"
        );
        // A third session, which the retried change revokes too.
        assert_eq!(
            f.login(PASSWORD).await.status(),
            200,
            "{context}: the old password still logs in"
        );

        let retried = send(&change).await;
        assert_eq!(retried.status(), 204, "{context}: the same change again");
        assert_no_cookies(&retried, &context);
        assert_ne!(
            text(&f.pool, hash_sql).await,
            hash,
            "{context}: password_hash replaced"
        );
        assert_eq!(
            f.count(by_change).await,
            2,
            "{context}: both other sessions revoked by the change"
        );
        assert_eq!(
            f.count(live).await,
            1,
            "{context}: only the caller's session lives"
        );
        assert_eq!(
            f.count(live_reset_links).await,
            0,
            "{context}: the reset link revoked"
        );
        assert_eq!(
            f.count(notices).await,
            1,
            "{context}: one notice in the outbox"
        );
        assert_eq!(
            f.events("password_changed").await,
            1,
            "{context}: one password_changed event"
        );
        assert_eq!(
            f.me_status(&f.alice.access_token).await,
            200,
            "{context}: the caller's session kept"
        );
        assert_eq!(
            f.me_status(&other.access_token).await,
            401,
            "{context}: the other session ended"
        );
        assert_eq!(
            f.login(PASSWORD).await.status(),
            401,
            "{context}: the old password no longer logs in"
        );
        assert_eq!(
            f.login(NEW_PASSWORD).await.status(),
            200,
            "{context}: the new password logs in"
        );
        f.finish().await;
    }
}

/// How a logout names its session.
#[derive(Debug, Clone, Copy)]
enum Credential {
    Bearer,
    RefreshCookie,
}

async fn logout_failing_before_commit_keeps_the_session(db: Db) {
    for credential in [Credential::Bearer, Credential::RefreshCookie] {
        for action in ACTIONS {
            let mut f = Fixture::start(db, "logout.before_commit", action).await;
            f.context = format!("{} with {credential:?}", f.context);
            let context = f.context.clone();
            let logout = f.server.client.post(f.server.url("/auth/logout"));
            let logout = match credential {
                Credential::Bearer => logout.bearer_auth(&f.alice.access_token),
                Credential::RefreshCookie => logout.header(
                    "cookie",
                    format!("__Secure-lk_refresh={}", f.alice.refresh_token),
                ),
            };
            let live = "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL";
            let unspent = "SELECT COUNT(*) FROM refresh_tokens WHERE spent_at IS NULL";

            f.fails_changing_nothing(&logout).await;
            assert_eq!(f.count(live).await, 1, "{context}: the session is live");
            assert_eq!(
                f.count(unspent).await,
                1,
                "{context}: the refresh token unspent"
            );
            assert_eq!(f.events("logout").await, 0, "{context}: no logout event");
            assert_eq!(
                f.me_status(&f.alice.access_token).await,
                200,
                "{context}: the access token works"
            );

            let retried = send(&logout).await;
            assert_eq!(retried.status(), 204, "{context}: the same logout again");
            assert_session_cookies_cleared(retried.headers());
            assert_eq!(f.count(live).await, 0, "{context}: the session is revoked");
            assert_eq!(
                f.count("SELECT COUNT(*) FROM sessions WHERE revoked_reason = 'logout'")
                    .await,
                1,
                "{context}: revoked by the logout"
            );
            assert_eq!(f.events("logout").await, 1, "{context}: one logout event");
            assert_eq!(
                f.me_status(&f.alice.access_token).await,
                401,
                "{context}: the access token is dead"
            );
            assert_eq!(
                f.server.refresh(&f.alice.refresh_token).await.status(),
                401,
                "{context}: the refresh token is dead"
            );
            f.finish().await;
        }
    }
}

async fn logout_all_failing_before_commit_keeps_every_session(db: Db) {
    for action in ACTIONS {
        let f = Fixture::start(db, "logout_all.before_commit", action).await;
        let context = f.context.clone();
        let other = f.second_session().await;
        let logout_all = f
            .server
            .client
            .post(f.server.url("/auth/logout-all"))
            .bearer_auth(&f.alice.access_token);
        let live = "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL";

        f.fails_changing_nothing(&logout_all).await;
        assert_eq!(f.count(live).await, 2, "{context}: both sessions live");
        assert_eq!(
            f.events("logout_all").await,
            0,
            "{context}: no logout_all event"
        );
        for (name, session) in [("caller", &f.alice), ("other", &other)] {
            assert_eq!(
                f.me_status(&session.access_token).await,
                200,
                "{context}: the {name}'s access token works"
            );
        }

        let retried = send(&logout_all).await;
        assert_eq!(
            retried.status(),
            204,
            "{context}: the same logout-all again"
        );
        assert_session_cookies_cleared(retried.headers());
        assert_eq!(
            f.count("SELECT COUNT(*) FROM sessions WHERE revoked_reason = 'logout_all'")
                .await,
            2,
            "{context}: both sessions revoked by the logout-all"
        );
        assert_eq!(
            f.events("logout_all").await,
            1,
            "{context}: one logout_all event"
        );
        for (name, session) in [("caller", &f.alice), ("other", &other)] {
            assert_eq!(
                f.me_status(&session.access_token).await,
                401,
                "{context}: the {name}'s access token is dead"
            );
        }
        f.finish().await;
    }
}

async fn password_forgot_failing_before_commit_takes_no_slot_and_records_no_request(db: Db) {
    for action in ACTIONS {
        let f = Fixture::start(db, "password_forgot.before_commit", action).await;
        let context = f.context.clone();
        let forgot = f
            .server
            .client
            .post(f.server.url("/auth/password/forgot"))
            .json(&json!({"email": ALICE}));
        let slot =
            "SELECT COUNT(*) FROM mail_throttle WHERE email = 'password_reset:alice@example.com'";
        let requests = "SELECT COUNT(*) FROM password_reset_requests";
        let reset_links = "SELECT COUNT(*) FROM one_time_tokens WHERE purpose = 'password_reset'";
        let reset_mails = "SELECT COUNT(*) FROM outbox WHERE kind = 'password_reset'";

        f.fails_changing_nothing(&forgot).await;
        // A committed request would be either still pending or already a link (the worker
        // turns one into the other in one transaction): neither is there.
        assert_eq!(f.count(requests).await, 0, "{context}: no reset request");
        assert_eq!(f.count(reset_links).await, 0, "{context}: no reset link");
        assert_eq!(f.count(reset_mails).await, 0, "{context}: no reset email");
        assert_eq!(
            f.count(slot).await,
            0,
            "{context}: the throttle slot is free"
        );
        assert_eq!(
            f.events("password_reset_requested").await,
            0,
            "{context}: no password_reset_requested event"
        );

        let retried = send(&forgot).await;
        assert_eq!(retried.status(), 202, "{context}: the same forgot again");
        assert_no_cookies(&retried, &context);
        let body: Value = retried.json().await.unwrap();
        assert_eq!(
            body,
            json!({"message": FORGOT_MESSAGE}),
            "{context}: the forgot answer"
        );
        // The failed attempt held no slot: the retry's request became a link and its email.
        let token = f.server.link_token("password/reset", 0).await;
        f.settle().await;
        assert_eq!(
            f.count(slot).await,
            1,
            "{context}: the slot taken by the retry"
        );
        assert_eq!(f.count(reset_links).await, 1, "{context}: one reset link");
        assert_eq!(f.count(reset_mails).await, 1, "{context}: one reset email");
        assert_eq!(
            f.events("password_reset_requested").await,
            1,
            "{context}: one password_reset_requested event"
        );
        let reset = f
            .server
            .client
            .post(f.server.url("/auth/password/reset"))
            .json(&json!({"token": token, "password": NEW_PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(reset.status(), 204, "{context}: the emailed link resets");
        assert_eq!(
            f.login(NEW_PASSWORD).await.status(),
            200,
            "{context}: the reset password logs in"
        );
        f.finish().await;
    }
}

async fn email_resend_failing_before_commit_issues_no_link_and_keeps_the_slot(db: Db) {
    for action in ACTIONS {
        // A one-second throttle window instead of the default minute, which the signup's email
        // took: after it the resend claims the slot, so the rollback of that claim shows.
        let point = "email_resend.before_commit";
        let f = Fixture::start_with(db, point, action, &["--mail-throttle", "1"]).await;
        let context = f.context.clone();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let slot_sql = "SELECT last_sent_at FROM mail_throttle WHERE email = 'email_verification:alice@example.com'";
        let slot = count(&f.pool, slot_sql).await;
        let links = "SELECT COUNT(*) FROM one_time_tokens WHERE purpose = 'email_verification'";
        let mails = "SELECT COUNT(*) FROM outbox WHERE kind = 'email_verification'";
        assert_eq!(f.count(links).await, 1, "{context}: the signup's link");
        let resend = f
            .server
            .client
            .post(f.server.url("/auth/email/verify/resend"))
            .bearer_auth(&f.alice.access_token);

        f.fails_changing_nothing(&resend).await;
        assert_eq!(f.count(links).await, 1, "{context}: no new link");
        assert_eq!(f.count(mails).await, 1, "{context}: no new email");
        assert_eq!(
            count(&f.pool, slot_sql).await,
            slot,
            "{context}: the throttle slot as the signup took it"
        );
        assert_eq!(
            f.events("email_verification_requested").await,
            0,
            "{context}: no email_verification_requested event"
        );

        let retried = send(&resend).await;
        assert_eq!(retried.status(), 202, "{context}: the same resend again");
        assert_no_cookies(&retried, &context);
        let body: Value = retried.json().await.unwrap();
        assert_eq!(
            body,
            json!({"message": RESENT_MESSAGE}),
            "{context}: the resend answer"
        );
        assert_eq!(f.count(links).await, 2, "{context}: the new link");
        assert_eq!(f.count(mails).await, 2, "{context}: its email");
        assert!(
            count(&f.pool, slot_sql).await > slot,
            "{context}: the slot taken again by the retry"
        );
        assert_eq!(
            f.events("email_verification_requested").await,
            1,
            "{context}: one email_verification_requested event"
        );
        let first = f.server.link_token("email/verify", 0).await;
        let token = f.server.link_token("email/verify", 1).await;
        assert_ne!(first, token, "{context}: a new link was emailed");
        let verify = f
            .server
            .client
            .post(f.server.url("/auth/email/verify"))
            .json(&json!({"token": token}))
            .send()
            .await
            .unwrap();
        assert_eq!(verify.status(), 204, "{context}: the new link verifies");
        assert_eq!(
            f.count("SELECT COUNT(*) FROM users WHERE email_verified_at IS NOT NULL")
                .await,
            1,
            "{context}: the address is verified"
        );
        f.finish().await;
    }
}

async fn profile_update_failing_before_commit_keeps_the_display_name(db: Db) {
    for action in ACTIONS {
        let f = Fixture::start(db, "profile_update.before_commit", action).await;
        let context = f.context.clone();
        let update = f
            .server
            .client
            .patch(f.server.url("/auth/me/profile"))
            .bearer_auth(&f.alice.access_token)
            .json(&json!({"display_name": "Alice Liddell"}));
        let name_sql = "SELECT display_name FROM profiles";
        let me_name = async || {
            let me = f.server.me(&f.alice.access_token).await;
            assert_eq!(me.status(), 200, "{context}: GET /auth/me");
            let body: Value = me.json().await.unwrap();
            body["profile"]["display_name"].clone()
        };

        f.fails_changing_nothing(&update).await;
        assert_eq!(
            text(&f.pool, name_sql).await,
            None,
            "{context}: display name unchanged"
        );
        assert_eq!(
            me_name().await,
            Value::Null,
            "{context}: /auth/me unchanged"
        );
        assert_eq!(
            f.events("profile_updated").await,
            0,
            "{context}: no profile_updated event"
        );

        let retried = send(&update).await;
        assert_eq!(retried.status(), 200, "{context}: the same update again");
        assert_no_cookies(&retried, &context);
        let body: Value = retried.json().await.unwrap();
        assert_eq!(
            body["profile"]["display_name"], "Alice Liddell",
            "{context}: the profile as it is now: {body}"
        );
        assert_eq!(
            text(&f.pool, name_sql).await.as_deref(),
            Some("Alice Liddell"),
            "{context}: display name set"
        );
        assert_eq!(
            me_name().await,
            "Alice Liddell",
            "{context}: /auth/me shows it"
        );
        assert_eq!(
            f.events("profile_updated").await,
            1,
            "{context}: one profile_updated event"
        );
        f.finish().await;
    }
}

/// Which of the caller's sessions a DELETE /auth/sessions/{id} names.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// Another session of the caller: no cookie on success either.
    Other,
    /// The request's own session: a logout, its cookies cleared on success.
    Own,
}

async fn session_revoke_failing_before_commit_keeps_the_session(db: Db) {
    for target in [Target::Other, Target::Own] {
        for action in ACTIONS {
            let mut f = Fixture::start(db, "session_revoke.before_commit", action).await;
            f.context = format!("{} revoking the {target:?} session", f.context);
            let context = f.context.clone();
            let other = f.second_session().await;
            let (id, victim) = match target {
                Target::Other => (f.session_id(&f.alice.access_token, false).await, &other),
                Target::Own => (f.session_id(&f.alice.access_token, true).await, &f.alice),
            };
            let revoke = f
                .server
                .client
                .delete(f.server.url(&format!("/auth/sessions/{id}")))
                .bearer_auth(&f.alice.access_token);
            let live = "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL";
            let victim_live =
                format!("SELECT COUNT(*) FROM sessions WHERE id = '{id}' AND revoked_at IS NULL");

            f.fails_changing_nothing(&revoke).await;
            assert_eq!(f.count(live).await, 2, "{context}: both sessions live");
            assert_eq!(
                f.count(&victim_live).await,
                1,
                "{context}: the session is live"
            );
            assert_eq!(
                f.events("session_revoked").await,
                0,
                "{context}: no session_revoked event"
            );
            assert_eq!(
                f.me_status(&victim.access_token).await,
                200,
                "{context}: the named session's access token works"
            );

            let retried = send(&revoke).await;
            assert_eq!(retried.status(), 204, "{context}: the same revoke again");
            match target {
                Target::Other => assert_no_cookies(&retried, &context),
                Target::Own => assert_session_cookies_cleared(retried.headers()),
            }
            assert_eq!(
                f.count(&victim_live).await,
                0,
                "{context}: the session revoked"
            );
            assert_eq!(f.count(live).await, 1, "{context}: the other one lives");
            assert_eq!(
                f.count("SELECT COUNT(*) FROM sessions WHERE revoked_reason = 'revoked_by_user'")
                    .await,
                1,
                "{context}: revoked by the user"
            );
            assert_eq!(
                f.events("session_revoked").await,
                1,
                "{context}: one session_revoked event"
            );
            assert_eq!(
                f.me_status(&victim.access_token).await,
                401,
                "{context}: the named session's access token is dead"
            );
            let survivor = match target {
                Target::Other => &f.alice,
                Target::Own => &other,
            };
            assert_eq!(
                f.me_status(&survivor.access_token).await,
                200,
                "{context}: the surviving session's access token works"
            );
            f.finish().await;
        }
    }
}

async fn email_change_confirm_failing_keeps_the_address_and_the_token(db: Db) {
    for action in ACTIONS {
        let f = Fixture::start(db, "email_change_confirm.before_commit", action).await;
        let context = f.context.clone();
        let change = f
            .server
            .client
            .post(f.server.url("/auth/email/change"))
            .bearer_auth(&f.alice.access_token)
            .json(&json!({"new_email": "ada@example.com", "password": PASSWORD}));
        assert_eq!(send(&change).await.status(), 202, "{context}: the request");
        let token = f.server.link_token("email/change", 0).await;
        f.settle().await;
        let confirm = f
            .server
            .client
            .post(f.server.url("/auth/email/change/confirm"))
            .json(&json!({ "token": token }));

        f.fails_changing_nothing(&confirm).await;
        assert_eq!(
            f.count("SELECT COUNT(*) FROM users WHERE email = 'alice@example.com'")
                .await,
            1,
            "{context}: the old address stays"
        );
        assert_eq!(f.events("email_changed").await, 0, "{context}: no event");

        let retried = send(&confirm).await;
        assert_eq!(retried.status(), 200, "{context}: the same link again");
        let body: Value = retried.json().await.unwrap();
        assert_eq!(body["user"]["email"], "ada@example.com", "{context}");
        assert_eq!(f.events("email_changed").await, 1, "{context}: one event");
        assert_eq!(
            f.me_status(&f.alice.access_token).await,
            200,
            "{context}: sessions stay"
        );
        f.finish().await;
    }
}

async fn account_deletion_failing_keeps_the_account(db: Db) {
    for point in [
        "account_delete.before_delete",
        "account_delete.before_commit",
    ] {
        for action in ACTIONS {
            let f = Fixture::start(db, point, action).await;
            let context = f.context.clone();
            let delete = f
                .server
                .client
                .delete(f.server.url("/auth/me"))
                .bearer_auth(&f.alice.access_token)
                .json(&json!({ "password": PASSWORD }));

            f.fails_changing_nothing(&delete).await;
            assert_eq!(f.count("SELECT COUNT(*) FROM users").await, 1, "{context}");
            assert_eq!(f.me_status(&f.alice.access_token).await, 200, "{context}");
            assert_eq!(f.events("user_deleted").await, 0, "{context}: no event");

            let retried = send(&delete).await;
            assert_eq!(retried.status(), 204, "{context}: the same deletion again");
            assert_session_cookies_cleared(retried.headers());
            assert_eq!(f.count("SELECT COUNT(*) FROM users").await, 0, "{context}");
            assert_eq!(
                f.count("SELECT COUNT(*) FROM sessions").await,
                0,
                "{context}"
            );
            assert_eq!(f.events("user_deleted").await, 1, "{context}: one event");
            assert_eq!(f.me_status(&f.alice.access_token).await, 401, "{context}");
            f.finish().await;
        }
    }
}
