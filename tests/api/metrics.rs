//! GET /metrics: Prometheus text whose numbers move with the traffic.

use crate::db_tests;
use crate::helpers::*;

db_tests!(metrics_count_the_flows_and_show_the_invariant);

/// The value of one sample line, `name{labels} value`, by its exact name and labels.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

async fn scrape(app: &TestApp) -> String {
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    response.text().await.unwrap()
}

async fn metrics_count_the_flows_and_show_the_invariant(db: Db) {
    let app = TestApp::spawn_with(db, |o| {
        o.metrics_refresh = Some("50ms".parse().unwrap());
    })
    .await;
    let before = scrape(&app).await;
    assert_eq!(
        sample(&before, "latchkey_accounts_without_profile"),
        Some(0.0)
    );
    assert_eq!(sample(&before, "latchkey_signups_total"), Some(0.0));

    let session = app.signed_up("alice@example.com").await;
    assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 200);
    assert_eq!(
        app.login("alice@example.com", "wrong password 1")
            .await
            .status(),
        401
    );
    let rotated = Session::from_response(app.refresh(&session.refresh_token).await).await;
    app.clock.advance(std::time::Duration::from_secs(11));
    assert_eq!(
        app.refresh(&session.refresh_token).await.status(),
        401,
        "reuse"
    );
    assert_eq!(app.me(&rotated.access_token).await.status(), 401);

    let after = scrape(&app).await;
    assert_eq!(sample(&after, "latchkey_signups_total"), Some(1.0));
    assert_eq!(
        sample(&after, "latchkey_logins_total{outcome=\"success\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&after, "latchkey_logins_total{outcome=\"failure\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&after, "latchkey_refreshes_total{outcome=\"rotated\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&after, "latchkey_refreshes_total{outcome=\"rejected\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&after, "latchkey_refresh_reuse_detected_total"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            "latchkey_session_revocations_total{reason=\"refresh_token_reuse\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            "latchkey_http_requests_total{route=\"/auth/signup\",method=\"POST\",status=\"201\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            "latchkey_http_requests_total{route=\"/auth/login\",method=\"POST\",status=\"401\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            "latchkey_http_request_duration_seconds_count{route=\"/auth/me\",method=\"GET\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&after, "latchkey_accounts_without_profile"),
        Some(0.0)
    );
    assert_eq!(sample(&after, "latchkey_password_hash_jobs"), Some(0.0));
    // Signup queued a verification email.
    assert!(sample(&after, "latchkey_outbox_backlog").is_some());
    // SQLite's pools are two; PostgreSQL's one pool is counted once.
    let pool = match db {
        Db::Sqlite => "read",
        Db::Postgres => "main",
    };
    let series = format!("latchkey_db_connections{{pool=\"{pool}\",state=\"idle\"}}");
    assert!(sample(&after, &series).is_some(), "{series}");

    // The invariant gauge reads the database, in the background: break it and it shows by the
    // next refresh, with the time of that read.
    sqlx::query("DELETE FROM profiles")
        .execute(app.pool())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let broken = scrape(&app).await;
        if sample(&broken, "latchkey_accounts_without_profile") == Some(1.0) {
            let read_at = sample(&broken, "latchkey_db_gauges_read_timestamp_seconds").unwrap();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            assert!((now - read_at).abs() < 60.0, "{read_at} vs {now}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the invariant gauge never moved"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
