//! The standalone server's start: it listens at once and answers `/healthz`, while `/readyz` and
//! everything else answer 503 until its database is reachable and migrated; an unreachable
//! database is waited for, not fatal.

use std::time::Duration;

use latchkey::keys::Kek;
use serde_json::Value;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_while_the_database_is_unreachable_answers_healthz_and_becomes_ready_when_it_answers()
 {
    if !postgres_available().await {
        return;
    }
    let db = TestDb::new(Db::Postgres).await;
    // The database, down: every connection to it is closed at once.
    let proxy = TcpProxy::to_postgres().await;
    proxy.set(ProxyMode::Reset);
    let url = proxy.url_through(&db.url);
    let kek = Kek::generate_encoded();
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &url,
        "--key-encryption-key",
        &kek,
        "--public-url",
        PUBLIC_URL,
        "--drain-period",
        "0",
    ];
    let server = ServerProcess::start_listening(&args, &[], &std::env::temp_dir()).await;

    let health = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "alive from the moment it listens");
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        serde_json::json!({"status": "ok"})
    );
    for path in ["/readyz", "/auth/me", "/login"] {
        let response = server.client.get(server.url(path)).send().await.unwrap();
        assert_unavailable(response, path).await;
    }
    let signup = server.signup("early@example.com").await;
    assert!(signup.headers().get("set-cookie").is_none());
    assert_unavailable(signup, "POST /auth/signup").await;

    // The database comes up.
    proxy.set(ProxyMode::Forward);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ready = server
            .client
            .get(server.url("/readyz"))
            .send()
            .await
            .unwrap();
        if ready.status() == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.signup("ready@example.com").await.status(), 201);
    let log = server.log().join("\n");
    assert!(log.contains("latchkey ready"), "{log}");
    let pool = db.pool().await;
    let (users,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users, 1, "only the signup made once it was ready");
}

async fn assert_unavailable(response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), 503, "{what}");
    assert_eq!(response.headers()["retry-after"], "1", "{what}");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert!(response.headers().contains_key("x-request-id"), "{what}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{what}");
}
