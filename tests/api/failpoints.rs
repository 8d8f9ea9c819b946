//! The contract's failpoints (`--features failpoints`): whatever fails before a commit leaves the
//! database as it was, sets no cookie, answers 500 `internal`, and the server keeps serving.
//!
//! The `fail` crate's configuration is global to a process and the tests run in parallel threads,
//! so each case runs the real binary as a subprocess with its own `FAILPOINTS`, on a fresh
//! database, every action (`return` and `panic`) in turn.

use sqlx::AnyPool;

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    signup_failing_after_user_leaves_nothing_and_the_server_serves,
    signup_failing_after_profile_leaves_nothing_and_the_server_serves,
    signup_failing_before_commit_leaves_nothing_and_the_server_serves,
    signup_failing_after_commit_keeps_an_account_that_can_log_in,
    login_failing_before_commit_opens_no_session_and_records_no_login,
    refresh_failing_before_commit_leaves_the_token_unspent,
);

/// What a failpoint does when it fires: fail the step with an error, or panic there.
const ACTIONS: [&str; 2] = ["return", "panic"];

/// `latchkey serve` on a test database with `FAILPOINTS` set, its webhooks (every event type)
/// going to `receiver`.
async fn failing_server(db: &TestDb, failpoints: &str, receiver: &Receiver) -> ServerProcess {
    let kek = latchkey::keys::Kek::generate_encoded();
    let url = receiver.url();
    let flags = webhook_flags(&url);
    ServerProcess::serve_with(db, &kek, &flags, &[("FAILPOINTS", failpoints)]).await
}

/// The flags that send every event to `url`, signed with `WEBHOOK_SECRET`, retrying fast.
pub fn webhook_flags(url: &str) -> Vec<&str> {
    vec![
        "--webhook-url",
        url,
        "--webhook-secret",
        WEBHOOK_SECRET,
        "--webhook-retry-base-ms",
        "20",
    ]
}

/// The webhook events queued, of one type.
async fn events(pool: &AnyPool, event_type: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM webhook_outbox WHERE event_type = '{event_type}'");
    count(pool, &sql).await
}

/// Every table the signup transaction writes, and the invariant, at zero.
async fn assert_no_account_rows(pool: &AnyPool, context: &str) {
    for table in [
        "users",
        "profiles",
        "sessions",
        "refresh_tokens",
        "audit_events",
        "webhook_outbox",
    ] {
        assert_eq!(
            count(pool, &format!("SELECT COUNT(*) FROM {table}")).await,
            0,
            "{context}: {table}"
        );
    }
    assert_eq!(count(pool, ORPHANS).await, 0, "{context}: orphans");
}

/// A signup that fails at `point` (once) leaves no row, and the same signup then succeeds.
async fn signup_failing_at_leaves_nothing(db: Db, point: &str) {
    for action in ACTIONS {
        let context = format!("{point}=1*{action} ({db:?})");
        let test_db = TestDb::new(db).await;
        let receiver = Receiver::start().await;
        let server = failing_server(&test_db, &format!("{point}=1*{action}"), &receiver).await;
        let pool = test_db.pool().await;

        let with_metadata = || {
            server
                .client
                .post(server.url("/auth/signup"))
                .json(
                    &serde_json::json!({"email": "alice@example.com", "password": PASSWORD,
                                          "metadata": {"plan": "pro"}}),
                )
                .send()
        };
        let failed = with_metadata().await.unwrap();
        assert_internal_without_cookies(failed, &context).await;
        // No profile, so no metadata; no event.
        assert_no_account_rows(&pool, &context).await;
        assert!(receiver.all().is_empty(), "{context}: no event sent");

        server.assert_serving(&context).await;
        // Nothing of the failed attempt is in the way: not the email, not a lock.
        let retried = with_metadata().await.unwrap();
        assert_eq!(retried.status(), 201, "{context}: the same signup again");
        let session = Session::from_response(retried).await;
        assert_eq!(
            session.body["profile"]["metadata"],
            serde_json::json!({"plan": "pro"}),
            "{context}"
        );
        assert_eq!(session.cookies.len(), 2, "{context}: cookies of the retry");
        assert_eq!(server.me(&session.access_token).await.status(), 200);
        for table in ["users", "profiles", "sessions", "refresh_tokens"] {
            assert_eq!(
                count(&pool, &format!("SELECT COUNT(*) FROM {table}")).await,
                1,
                "{context}: {table} after the retry"
            );
        }
        assert_eq!(count(&pool, ORPHANS).await, 0, "{context}: orphans");
        // The retry's event, and only it, reaches the receiver.
        let delivered = receiver.wait_delivered(1).await;
        assert_eq!(delivered[0].event_type(), "user.created", "{context}");
        assert_eq!(
            delivered[0].json()["data"]["user"],
            session.body["user"],
            "{context}"
        );
        assert_eq!(verify_signature(&delivered[0], WEBHOOK_SECRET), 1);
        assert_eq!(events(&pool, "user.created").await, 1, "{context}");
        assert_eq!(receiver.all().len(), 1, "{context}: one request");
        pool.close().await;
    }
}

async fn signup_failing_after_user_leaves_nothing_and_the_server_serves(db: Db) {
    signup_failing_at_leaves_nothing(db, "signup.after_user").await;
}

async fn signup_failing_after_profile_leaves_nothing_and_the_server_serves(db: Db) {
    signup_failing_at_leaves_nothing(db, "signup.after_profile").await;
}

async fn signup_failing_before_commit_leaves_nothing_and_the_server_serves(db: Db) {
    signup_failing_at_leaves_nothing(db, "signup.before_commit").await;
}

async fn signup_failing_after_commit_keeps_an_account_that_can_log_in(db: Db) {
    for action in ACTIONS {
        let context = format!("signup.after_commit={action} ({db:?})");
        let test_db = TestDb::new(db).await;
        let receiver = Receiver::start().await;
        let server = failing_server(
            &test_db,
            &format!("signup.after_commit={action}"),
            &receiver,
        )
        .await;
        let pool = test_db.pool().await;

        let failed = server.signup("alice@example.com").await;
        assert_internal_without_cookies(failed, &context).await;
        // The commit happened: the whole account exists, never half of it.
        assert_eq!(
            count(&pool, "SELECT COUNT(*) FROM users").await,
            1,
            "{context}"
        );
        assert_eq!(
            count(&pool, "SELECT COUNT(*) FROM profiles").await,
            1,
            "{context}"
        );
        assert_eq!(count(&pool, ORPHANS).await, 0, "{context}: orphans");
        // After the commit: the account exists, and so does its event.
        assert_eq!(events(&pool, "user.created").await, 1, "{context}");

        server.assert_serving(&context).await;
        let login = server.login("alice@example.com").await;
        assert_eq!(
            login.status(),
            200,
            "{context}: login to the committed account"
        );
        let session = Session::from_response(login).await;
        assert_eq!(
            session.cookies.len(),
            3,
            "{context}: session and device cookies"
        );
        assert_eq!(server.me(&session.access_token).await.status(), 200);
        let again = server.signup("ALICE@example.com").await;
        assert_eq!(again.status(), 409, "{context}: the account exists");
        assert_eq!(
            count(&pool, "SELECT COUNT(*) FROM users").await,
            1,
            "{context}"
        );
        pool.close().await;
    }
}

async fn login_failing_before_commit_opens_no_session_and_records_no_login(db: Db) {
    for action in ACTIONS {
        let context = format!("login.before_commit=1*{action} ({db:?})");
        let test_db = TestDb::new(db).await;
        let receiver = Receiver::start().await;
        let point = format!("login.before_commit=1*{action}");
        let server = failing_server(&test_db, &point, &receiver).await;
        let pool = test_db.pool().await;

        let signup = server.signup("alice@example.com").await;
        assert_eq!(
            signup.status(),
            201,
            "{context}: signup has no failpoint here"
        );
        assert_eq!(count(&pool, "SELECT COUNT(*) FROM sessions").await, 1);

        let failed = server.login("alice@example.com").await;
        assert_internal_without_cookies(failed, &context).await;
        assert_eq!(
            count(&pool, "SELECT COUNT(*) FROM sessions").await,
            1,
            "{context}: no session opened"
        );
        assert_eq!(
            count(&pool, "SELECT COUNT(*) FROM refresh_tokens").await,
            1,
            "{context}: no refresh token issued"
        );
        assert_eq!(
            count(
                &pool,
                "SELECT COUNT(*) FROM profiles WHERE last_login_at IS NULL"
            )
            .await,
            1,
            "{context}: last_login_at untouched"
        );
        assert_eq!(
            count(
                &pool,
                "SELECT COUNT(*) FROM audit_events WHERE kind = 'login'"
            )
            .await,
            0,
            "{context}: no login event"
        );
        assert_eq!(
            events(&pool, "user.login").await,
            0,
            "{context}: no user.login"
        );

        server.assert_serving(&context).await;
        let retried = server.login("alice@example.com").await;
        assert_eq!(retried.status(), 200, "{context}: the same login again");
        let session = Session::from_response(retried).await;
        assert_eq!(
            session.cookies.len(),
            3,
            "{context}: session and device cookies"
        );
        assert_eq!(server.me(&session.access_token).await.status(), 200);
        assert_eq!(count(&pool, "SELECT COUNT(*) FROM sessions").await, 2);
        assert_eq!(
            count(
                &pool,
                "SELECT COUNT(*) FROM profiles WHERE last_login_at IS NOT NULL"
            )
            .await,
            1,
            "{context}: last_login_at set by the successful login"
        );
        assert_eq!(
            count(
                &pool,
                "SELECT COUNT(*) FROM audit_events WHERE kind = 'login'"
            )
            .await,
            1,
            "{context}: one login event"
        );
        assert_eq!(
            events(&pool, "user.login").await,
            1,
            "{context}: one user.login"
        );
        let delivered = receiver.wait_delivered(2).await;
        let types: Vec<String> = delivered.iter().map(Delivery::event_type).collect();
        assert_eq!(types, ["user.created", "user.login"], "{context}");
        pool.close().await;
    }
}

async fn refresh_failing_before_commit_leaves_the_token_unspent(db: Db) {
    for action in ACTIONS {
        let context = format!("refresh.before_commit=1*{action} ({db:?})");
        let test_db = TestDb::new(db).await;
        let receiver = Receiver::start().await;
        let point = format!("refresh.before_commit=1*{action}");
        let server = failing_server(&test_db, &point, &receiver).await;
        let pool = test_db.pool().await;

        let signup = server.signup("alice@example.com").await;
        assert_eq!(
            signup.status(),
            201,
            "{context}: signup has no failpoint here"
        );
        let session = Session::from_response(signup).await;
        let last_used = count(&pool, "SELECT last_used_at FROM sessions").await;
        let idle_expires = count(&pool, "SELECT idle_expires_at FROM sessions").await;

        let failed = server.refresh(&session.refresh_token).await;
        assert_internal_without_cookies(failed, &context).await;
        assert_eq!(
            count(&pool, "SELECT COUNT(*) FROM refresh_tokens").await,
            1,
            "{context}: no successor stored"
        );
        assert_eq!(
            count(
                &pool,
                "SELECT COUNT(*) FROM refresh_tokens WHERE spent_at IS NULL"
            )
            .await,
            1,
            "{context}: the presented token is unspent"
        );
        assert_eq!(
            count(
                &pool,
                "SELECT COUNT(*) FROM audit_events WHERE kind = 'refresh'"
            )
            .await,
            0,
            "{context}: no refresh event"
        );
        assert_eq!(
            count(
                &pool,
                "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL"
            )
            .await,
            1,
            "{context}: the session is live"
        );
        assert_eq!(
            count(&pool, "SELECT last_used_at FROM sessions").await,
            last_used,
            "{context}: session not touched"
        );
        assert_eq!(
            count(&pool, "SELECT idle_expires_at FROM sessions").await,
            idle_expires,
            "{context}: session not extended"
        );

        server.assert_serving(&context).await;
        // The very same token works: the rollback left it unspent, so this is no reuse.
        let retried = server.refresh(&session.refresh_token).await;
        assert_eq!(retried.status(), 200, "{context}: the same refresh again");
        let rotated = Session::from_response(retried).await;
        assert_ne!(rotated.refresh_token, session.refresh_token, "{context}");
        assert_eq!(server.me(&rotated.access_token).await.status(), 200);
        assert_eq!(
            count(&pool, "SELECT COUNT(*) FROM refresh_tokens").await,
            2,
            "{context}: one successor"
        );
        assert_eq!(
            count(
                &pool,
                "SELECT COUNT(*) FROM refresh_tokens WHERE spent_at IS NULL"
            )
            .await,
            1,
            "{context}: only the successor is unspent"
        );
        assert_eq!(
            count(
                &pool,
                "SELECT COUNT(*) FROM audit_events WHERE kind = 'refresh'"
            )
            .await,
            1,
            "{context}: one refresh event"
        );
        assert_eq!(
            count(
                &pool,
                "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL"
            )
            .await,
            1,
            "{context}: the session is still live"
        );
        pool.close().await;
    }
}
