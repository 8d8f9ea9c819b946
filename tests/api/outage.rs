//! A PostgreSQL outage, made with a TCP proxy between the server and the machine's PostgreSQL
//! (never stopped): a black hole (connections accepted and pooled ones frozen, nothing answered)
//! and resets. Requests that need the database get 503 `unavailable` with `Retry-After` and no
//! cookie, within `database_timeout` rather than the request timeout; /metrics keeps answering;
//! once the route is back the same process serves again.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::*;

const DATABASE_TIMEOUT: &str = "300ms";
/// Far above the database timeout: an answer before it came from the database bound.
const REQUEST_TIMEOUT: u64 = 20;

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The server, on a fresh PostgreSQL database reached through `proxy`.
async fn app_behind(proxy: &TcpProxy, db: TestDb) -> TestApp {
    let url = proxy.url_through(&db.url);
    let db = std::sync::Arc::new(db);
    TestApp::start(db, latchkey::keys::Kek::generate_encoded(), move |o| {
        o.database_url = Some(url);
        o.database_timeout = Some(DATABASE_TIMEOUT.parse().unwrap());
        o.metrics_refresh = Some("100ms".parse().unwrap());
        o.request_timeout = Some(REQUEST_TIMEOUT);
    })
    .await
}

/// Every request that needs the database, as a client would send it.
async fn requests_needing_the_database(
    app: &TestApp,
    session: &Session,
) -> Vec<(&'static str, reqwest::Response)> {
    let signup = app.signup("bob@example.com", PASSWORD).await;
    let login = app.login("alice@example.com", PASSWORD).await;
    let refresh = app.refresh(&session.refresh_token).await;
    let forgot = app
        .post_json(
            "/auth/password/forgot",
            &json!({"email": "alice@example.com"}),
        )
        .await;
    let readyz = app.client.get(app.url("/readyz")).send().await.unwrap();
    vec![
        ("signup", signup),
        ("login", login),
        ("refresh", refresh),
        ("forgot", forgot),
        ("readyz", readyz),
    ]
}

async fn assert_unavailable(app: &TestApp, session: &Session, outage: &str) {
    for (name, response) in requests_needing_the_database(app, session).await {
        let context = format!("{name} during {outage}");
        assert_eq!(response.status(), 503, "{context}");
        assert_eq!(response.headers()["retry-after"], "1", "{context}");
        assert!(
            response.headers().get("set-cookie").is_none(),
            "{context}: no cookie"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unavailable", "{context}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_answers_503_in_time_keeps_metrics_and_recovers_without_restart() {
    if !postgres_available().await {
        return;
    }
    let proxy = TcpProxy::to_postgres().await;
    let app = app_behind(&proxy, TestDb::new(Db::Postgres).await).await;
    let session = app.signed_up("alice@example.com").await;
    // Several idle connections in the pool, all of them about to go dead.
    let logins = join_all((0..4).map(|_| app.login("alice@example.com", PASSWORD))).await;
    assert!(logins.iter().all(|r| r.status() == 200));
    let scrape = || async {
        let response = app.client.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200, "/metrics answers");
        response.text().await.unwrap()
    };
    let read_at = |text: &str| sample(text, "latchkey_db_gauges_read_timestamp_seconds").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while read_at(&scrape().await) == 0.0 {
        assert!(
            Instant::now() < deadline,
            "the database gauges were never read"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for (outage, mode) in [
        ("a black hole", ProxyMode::BlackHole),
        ("resets", ProxyMode::Reset),
    ] {
        proxy.set(mode);
        let started = Instant::now();
        assert_unavailable(&app, &session, outage).await;
        // Five requests, each answered by the database bound, well before the request timeout
        // (which would also say 503, but only after 20 s each).
        assert!(
            started.elapsed() < Duration::from_secs(REQUEST_TIMEOUT),
            "{outage}: answered by database_timeout, not the request timeout ({:?})",
            started.elapsed()
        );
        // Monitoring still sees the process, and when the gauges were last read.
        let metrics = scrape().await;
        assert!(read_at(&metrics) > 0.0, "{outage}");
        assert_eq!(
            sample(&metrics, "latchkey_accounts_without_profile"),
            Some(0.0)
        );
        assert_eq!(
            app.client
                .get(app.url("/healthz"))
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{outage}: /healthz needs no database"
        );
    }
    // Nothing of the refused requests was written.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE email = 'bob@example.com'")
            .await,
        0
    );

    // The route comes back: the same process serves again, with fresh connections.
    proxy.set(ProxyMode::Forward);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
        if ready.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready again after the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.signup("bob@example.com", PASSWORD).await.status(), 201);
    assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 200);
    let rotated = app.refresh(&session.refresh_token).await;
    assert_eq!(rotated.status(), 200);
    let before = read_at(&scrape().await);
    let deadline = Instant::now() + Duration::from_secs(10);
    while read_at(&scrape().await) <= before {
        assert!(Instant::now() < deadline, "the gauges are not read again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The database vanishes while a transaction is running on its connection (held at a failpoint
/// after its first INSERT, then black-holed): the transaction's bound ends it within
/// `database_timeout` of its next statement, 503 `unavailable`, nothing committed, and the
/// connection is dropped rather than reused or pinged for a quarter of an hour.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_caught_by_the_outage_ends_within_the_database_timeout() {
    if !postgres_available().await {
        return;
    }
    let proxy = TcpProxy::to_postgres().await;
    let db = TestDb::new(Db::Postgres).await;
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_port(Some(proxy.address.port())).unwrap();
    let url = url.to_string();
    let kek = latchkey::keys::Kek::generate_encoded();
    let request_timeout = REQUEST_TIMEOUT.to_string();
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &url,
        "--key-encryption-key",
        &kek,
        "--rate-limits",
        "off",
        "--public-url",
        PUBLIC_URL,
        "--hash-threads",
        "1",
        "--drain-period",
        "0",
        "--database-timeout",
        DATABASE_TIMEOUT,
        "--request-timeout",
        &request_timeout,
    ];
    let server = ServerProcess::start(
        &args,
        &[("FAILPOINTS", "signup.after_user=return(sleep:200)")],
        &std::env::temp_dir(),
    )
    .await;
    server.assert_serving("at start").await;

    let started = Instant::now();
    let signup = tokio::spawn({
        let client = server.client.clone();
        let url = server.url("/auth/signup");
        async move {
            client
                .post(url)
                .json(&json!({"email": "carol@example.com", "password": PASSWORD}))
                .send()
                .await
                .unwrap()
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server
        .log()
        .iter()
        .any(|l| l.contains("failpoint holding the flow"))
    {
        assert!(
            Instant::now() < deadline,
            "the signup never reached its failpoint"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.set(ProxyMode::BlackHole);
    let response = signup.await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("set-cookie").is_none());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(
        elapsed < Duration::from_secs(REQUEST_TIMEOUT),
        "ended by the transaction's bound, not the request timeout: {elapsed:?}"
    );
    assert!(
        server
            .log()
            .iter()
            .any(|l| l.contains("did not finish a transaction within database_timeout")),
    );

    proxy.set(ProxyMode::Forward);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(Instant::now() < deadline, "not ready again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pool = db.pool().await;
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM users WHERE email = 'carol@example.com'"
        )
        .await,
        0,
        "nothing of it was committed"
    );
    assert_eq!(server.signup("dave@example.com").await.status(), 201);
}
