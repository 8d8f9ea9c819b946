//! The store under what real traffic does to it: connections left inside a transaction, writes
//! the database refuses half-way, and clients that hang up at random moments. Whatever happened
//! to one request, every later write works and nothing half-done is left.

use std::time::Duration;

use serde_json::json;
use sqlx::{Connection as _, Executor as _};

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    a_connection_left_inside_a_transaction_is_closed_and_writes_go_on,
    a_connection_whose_database_session_is_inside_a_transaction_is_replaced,
    a_write_the_database_refuses_half_way_leaves_a_clean_pool,
    a_hundred_abandoned_requests_leave_every_write_working,
);

/// Signups, logins and refreshes in a row: all must succeed.
async fn assert_writes_work(app: &TestApp, tag: &str, n: usize) {
    for i in 0..n {
        let email = format!("{tag}-{i}@example.com");
        let signup = app.signup(&email, PASSWORD).await;
        assert_eq!(signup.status(), 201, "signup {i} after {tag}");
        let login = app.login(&email, PASSWORD).await;
        assert_eq!(login.status(), 200, "login {i} after {tag}");
        let session = Session::from_response(login).await;
        let refresh = app.refresh(&session.refresh_token).await;
        assert_eq!(refresh.status(), 200, "refresh {i} after {tag}");
    }
    assert_eq!(app.count(ORPHANS).await, 0, "orphans after {tag}");
}

/// The state sqlx 0.8's SQLite `begin_with` leaves when its future is dropped between its two
/// awaits (transact-rs/sqlx #3932): the connection counts itself inside a transaction that no
/// `Transaction` guard will ever end. Built here deterministically by forgetting the guard, on the
/// store's own write pool; before the store's pool hooks, every later write failed with
/// "attempted to call begin_with at non-zero transaction depth".
async fn a_connection_left_inside_a_transaction_is_closed_and_writes_go_on(db: Db) {
    let app = TestApp::spawn(db).await;
    let pool = app.state.store.write_pool_for_tests().clone();
    for _ in 0..3 {
        let mut conn = pool.acquire().await.unwrap();
        let tx = conn.begin().await.unwrap();
        std::mem::forget(tx);
        assert!(conn.is_in_transaction(), "the orphaned state");
        drop(conn);
    }
    assert_writes_work(&app, "orphan", 5).await;
    // And the pool hands out only clean connections now.
    let conn = pool.acquire().await.unwrap();
    assert!(!conn.is_in_transaction());
}

/// A connection whose database session is inside a transaction that sqlx does not know about
/// (a `BEGIN` run as a plain statement): the flow's own `BEGIN` fails on it, the connection is
/// closed, and the flow runs again on a fresh one, so no request sees it.
async fn a_connection_whose_database_session_is_inside_a_transaction_is_replaced(db: Db) {
    let app = TestApp::spawn(db).await;
    let pool = app.state.store.write_pool_for_tests().clone();
    let mut conn = pool.acquire().await.unwrap();
    // READ COMMITTED named on PostgreSQL: under the CI variant's default SERIALIZABLE, a plain
    // read that happens to run on this connection before a flow commits it would keep that
    // read's snapshot, and later reads on it would not see newer rows (a limit of this contrived
    // state that sqlx cannot see from the client side; see the session note). What this test is
    // about is the flows' writes on such a connection.
    let begin = match db {
        Db::Sqlite => "BEGIN",
        Db::Postgres => "BEGIN ISOLATION LEVEL READ COMMITTED",
    };
    conn.execute(begin).await.unwrap();
    drop(conn);
    assert_writes_work(&app, "raw-begin", 3).await;
}

/// SQLite: the database file cannot grow (`PRAGMA max_page_count`, as a full disk), so a signup
/// fails half-way and SQLite may roll its transaction back by itself. PostgreSQL: the write
/// connection's session turns read-only, so every write on it fails. Either way the write that
/// meets it fails whole (500, nothing half-done), the connection that had it is closed, and every
/// later write works.
async fn a_write_the_database_refuses_half_way_leaves_a_clean_pool(db: Db) {
    let app = TestApp::spawn(db).await;
    app.signed_up("before@example.com").await;
    let pool = app.state.store.write_pool_for_tests().clone();
    // Every connection the pool has is held but the one given the condition, so that it is the
    // idle one the next write gets (on PostgreSQL the pool also serves reads, which a read-only
    // session answers: with other idle connections, the background workers' reads could keep it
    // busy while every signup's write went to another one, and no write would ever meet it).
    let mut others = Vec::new();
    for _ in 0..pool.size().max(1) {
        others.push(pool.acquire().await.unwrap());
    }
    let mut conn = others.pop().unwrap();
    match db {
        Db::Sqlite => {
            let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            conn.execute(format!("PRAGMA max_page_count = {pages}").as_str())
                .await
                .unwrap();
        }
        Db::Postgres => {
            conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                .await
                .unwrap();
        }
    }
    drop(conn);

    let mut failures = 0;
    for i in 0..30 {
        let response = app.signup(&format!("full-{i}@example.com"), PASSWORD).await;
        match response.status().as_u16() {
            201 => {}
            500 => {
                failures += 1;
                let body: serde_json::Value = response.json().await.unwrap();
                assert_eq!(
                    body,
                    json!({"error": {"code": "internal",
                    "message": "Something went wrong on our side."}})
                );
            }
            other => panic!("signup {i}: unexpected {other}"),
        }
    }
    drop(others);
    // The connection that had the condition failed one write (or the mail worker's) and was
    // closed: at most one request saw it, and none of the pool's connections has it now.
    assert!(failures <= 1, "{failures} signups failed");
    let size = usize::try_from(pool.size()).unwrap().max(1);
    let mut held = Vec::new();
    for _ in 0..size {
        held.push(pool.acquire().await.unwrap());
    }
    for conn in &mut held {
        match db {
            Db::Sqlite => {
                let max: i64 = sqlx::query_scalar("PRAGMA max_page_count")
                    .fetch_one(&mut **conn)
                    .await
                    .unwrap();
                assert!(max > 1_000_000, "the full connection was replaced ({max})");
            }
            Db::Postgres => {
                let read_only: String = sqlx::query_scalar("SHOW default_transaction_read_only")
                    .fetch_one(&mut **conn)
                    .await
                    .unwrap();
                assert_eq!(read_only, "off", "the read-only connection was replaced");
            }
        }
    }
    drop(held);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users").await,
        31 - failures,
        "every signup that answered 201, and no other"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions").await,
        31 - failures
    );
    assert_writes_work(&app, "after-full", 3).await;
}

/// Without failpoints: signups, logins and refreshes whose clients give up after a random few
/// milliseconds, so the drops land anywhere (before, inside and after the transactions). Then
/// every write works, and no account is half there.
async fn a_hundred_abandoned_requests_leave_every_write_working(db: Db) {
    use rand::Rng as _;
    let app = TestApp::spawn(db).await;
    let session = app.signed_up("victim@example.com").await;
    let mut rng = rand::thread_rng();
    let mut requests = Vec::new();
    for i in 0..100 {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_micros(rng.gen_range(200..20_000)))
            .build()
            .unwrap();
        let request = match i % 3 {
            0 => client
                .post(app.url("/auth/signup"))
                .json(&json!({"email": format!("hangup-{i}@example.com"), "password": PASSWORD})),
            1 => client
                .post(app.url("/auth/login"))
                .json(&json!({"email": "victim@example.com", "password": PASSWORD})),
            _ => client.post(app.url("/auth/refresh")).header(
                "cookie",
                format!("__Secure-lk_refresh={}", session.refresh_token),
            ),
        };
        requests.push(tokio::spawn(async move { request.send().await.is_ok() }));
    }
    let mut abandoned = 0;
    for request in requests {
        if !request.await.unwrap() {
            abandoned += 1;
        }
    }
    assert!(abandoned > 50, "most requests were abandoned ({abandoned})");
    // The flows that had begun end on their own; give them a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.count(ORPHANS).await, 0);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM users u LEFT JOIN sessions s ON s.user_id = u.id \
             WHERE s.id IS NULL"
        )
        .await,
        0,
        "every account that exists has its first session"
    );
    assert_writes_work(&app, "hangups", 5).await;
}
