//! What an operator relies on: /metrics on an address of its own, log lines that name their
//! request, fatal errors in the log's format.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

/// The process's JSON log lines.
fn json_lines(server: &ServerProcess) -> Vec<Value> {
    server
        .log()
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Waits until the process has logged a line `message`, and returns the lines.
async fn wait_for_line(server: &ServerProcess, message: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = json_lines(server);
        if lines.iter().any(|l| l["fields"]["message"] == message) {
            return lines;
        }
        assert!(Instant::now() < deadline, "no {message:?} line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The fields of the request span of a JSON line (the outermost of its spans).
fn request_span(line: &Value) -> &Value {
    line["spans"]
        .as_array()
        .and_then(|spans| spans.iter().find(|s| s["name"] == "request"))
        .unwrap_or_else(|| panic!("a line without its request span: {line}"))
}

fn base_args(db: &TestDb, kek: &str) -> Vec<String> {
    [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &db.url,
        "--key-encryption-key",
        kek,
        "--public-url",
        PUBLIC_URL,
        "--hash-threads",
        "2",
        "--drain-period",
        "0",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_serves_metrics_on_its_own_address_only() {
    let db = TestDb::new(Db::Sqlite).await;
    let kek = latchkey::keys::Kek::generate_encoded();
    let mut args = base_args(&db, &kek);
    args.extend(["--metrics-listen", "127.0.0.1:0", "--rate-limits", "off"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = ServerProcess::start(&args, &[], &std::env::temp_dir()).await;
    let metrics_url = server
        .log()
        .iter()
        .find_map(|line| {
            let start = line.find("metrics listening on ")? + "metrics listening on ".len();
            line[start..].split_whitespace().next().map(str::to_owned)
        })
        .expect("the metrics address is logged before the main one");
    assert!(metrics_url.ends_with("/metrics"), "{metrics_url}");

    assert_eq!(server.signup("alice@example.com").await.status(), 201);
    let response = server.client.get(&metrics_url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.contains("latchkey_signups_total 1"), "{text}");
    // SQLite's two pools, each once.
    for pool in ["read", "write"] {
        assert!(
            text.contains(&format!(
                "latchkey_db_connections{{pool=\"{pool}\",state=\"idle\"}}"
            )),
            "{pool} in\n{text}"
        );
    }

    // The public address, the one a proxy forwards, has no /metrics; the metrics address has
    // nothing else.
    let public = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    let other = metrics_url.replace("/metrics", "/healthz");
    assert_eq!(
        server.client.get(&other).send().await.unwrap().status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_postgres_pool_is_reported_once() {
    if !postgres_available().await {
        return;
    }
    let app = TestApp::spawn(Db::Postgres).await;
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let pools: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("latchkey_db_connections{") && l.contains("state=\"idle\""))
        .collect();
    assert_eq!(pools.len(), 1, "{pools:?}");
    assert!(pools[0].contains("pool=\"main\""), "{pools:?}");
}

/// Lines written while a request is served (a rate limit's refusal, a reused refresh token)
/// carry that request's id and client IP, in the JSON log as in the text one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_written_inside_a_request_carry_its_id_and_client_ip() {
    let db = TestDb::new(Db::Sqlite).await;
    let kek = latchkey::keys::Kek::generate_encoded();
    let mut args = base_args(&db, &kek);
    args.extend(["--login-ip-limit", "1/1h", "--refresh-grace-period", "0"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = ServerProcess::start(
        &args,
        &[("LATCHKEY_LOG_FORMAT", "json")],
        &std::env::temp_dir(),
    )
    .await;
    let signup = server.signup("alice@example.com").await;
    assert_eq!(signup.status(), 201);
    let session = Session::from_response(signup).await;

    let login = |id: &'static str| {
        server
            .client
            .post(server.url("/auth/login"))
            .header("x-request-id", id)
            .json(&serde_json::json!({"email": "alice@example.com", "password": PASSWORD}))
            .send()
    };
    assert_eq!(login("login-1").await.unwrap().status(), 200);
    assert_eq!(login("login-2").await.unwrap().status(), 429);

    let rotate = |id: &'static str| {
        server
            .client
            .post(server.url("/auth/refresh"))
            .header("x-request-id", id)
            .header(
                "cookie",
                format!("__Secure-lk_refresh={}", session.refresh_token),
            )
            .send()
    };
    assert_eq!(rotate("refresh-1").await.unwrap().status(), 200);
    assert_eq!(rotate("refresh-2").await.unwrap().status(), 401);

    let lines = wait_for_line(&server, "refresh token reuse detected: session revoked").await;
    for (message, id) in [
        ("rate limited", "login-2"),
        ("refresh token reuse detected: session revoked", "refresh-2"),
    ] {
        let line = lines
            .iter()
            .find(|l| l["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line"));
        let span = request_span(line);
        assert_eq!(span["request_id"], id, "{line}");
        assert_eq!(span["client_ip"], "127.0.0.1", "{line}");
    }
}

/// With JSON logs, a fatal error at start is one JSON line on stderr, and the exit code says so.
#[test]
fn a_fatal_start_up_error_is_one_json_line_in_json_mode() {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LATCHKEY_") {
            command.env_remove(name);
        }
    }
    let output = command
        .args(["--public-url", "ftp://x.example", "--listen", "127.0.0.1:0"])
        .env("LATCHKEY_LOG_FORMAT", "json")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let line: Value = serde_json::from_str(lines[0]).expect("a JSON line");
    assert_eq!(line["level"], "ERROR");
    let message = line["fields"]["message"].as_str().unwrap();
    assert!(message.contains("public_url must be an http"), "{message}");
}

/// What monitoring sees beyond the flows: refusals by limit (the database's and the in-memory
/// fast path's), email outcomes, the version, the process and the signing key's age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_refusals_mail_outcomes_version_process_and_key_age() {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with_sink(Db::Sqlite, &sink, |o| {
        o.rate_limits = Some(latchkey::config::Toggle::On);
        o.login_ip_limit = Some("1/1h".parse().unwrap());
    })
    .await;
    app.signed_up("alice@example.com").await;
    sink.wait_for(1).await;
    assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 200);
    // The first refusal is the database's, the second the remembered one's.
    for _ in 0..2 {
        assert_eq!(app.login("alice@example.com", PASSWORD).await.status(), 429);
    }
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{series} in\n{text}"))
    };
    assert_eq!(
        value("latchkey_rate_limited_total{limit=\"login_ip\"}"),
        2.0
    );
    assert_eq!(
        value("latchkey_mail_deliveries_total{outcome=\"delivered\"}"),
        1.0
    );
    let version = format!(
        "latchkey_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&version), 1.0);
    let age = value("latchkey_signing_key_age_seconds");
    assert!((0.0..600.0).contains(&age), "{age}");
    if cfg!(target_os = "linux") {
        assert!(value("process_cpu_seconds_total") > 0.0);
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_open_fds") >= 3.0);
    }
}
