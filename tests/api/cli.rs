//! The binary as an operator runs it: defaults, configuration precedence, `migrate`, shutdown,
//! and several processes on one database.

use std::time::Duration;

use serde_json::Value;

use crate::db_tests;
use crate::helpers::*;

db_tests!(
    two_processes_on_one_database_share_sessions_and_detect_reuse,
    migrate_prepares_a_fresh_database_and_exits,
    no_secret_reaches_the_log_of_a_full_journey,
);

/// A fresh, empty working directory, removed with the value.
struct WorkDir(std::path::PathBuf);

impl WorkDir {
    fn new() -> WorkDir {
        let dir =
            std::env::temp_dir().join(format!("latchkey-cli-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        WorkDir(dir)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_latchkey_serves_sqlite_from_the_working_directory_and_stops_on_sigterm() {
    let dir = WorkDir::new();
    let mut server = ServerProcess::start(&["--listen", "127.0.0.1:0"], &[], &dir.0).await;
    let log = server.log().join("\n");
    assert!(log.contains("no key_encryption_key configured"), "{log}");
    let first = server.signup("alice@example.com").await;
    assert_eq!(first.status(), 201);
    let token = Session::from_response(first).await.access_token;

    // The development KEK is private to its owner; the database is in WAL mode.
    let kek = dir.0.join("latchkey.kek");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&kek).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    sqlx::any::install_default_drivers();
    let db_url = format!("sqlite://{}", dir.0.join("latchkey.db").display());
    let pool = sqlx::AnyPool::connect(&db_url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    pool.close().await;
    // The database holds password hashes and, in unsent emails, live links: its owner's only,
    // and SQLite gives its journal the same mode.
    #[cfg(unix)]
    for file in ["latchkey.db", "latchkey.db-wal"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.0.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }

    // SIGHUP reloads nothing and stops nothing.
    server.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !server
        .log()
        .iter()
        .any(|l| l.contains("SIGHUP: nothing to reload"))
    {
        assert!(std::time::Instant::now() < deadline, "SIGHUP not logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.assert_serving("after SIGHUP").await;
    assert_eq!(server.me(&token).await.status(), 200);

    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(server.log().iter().any(|l| l.contains("latchkey stopped")));

    // A restart in the same directory finds the same key and database.
    let server = ServerProcess::start(&["serve", "--listen", "127.0.0.1:0"], &[], &dir.0).await;
    server.assert_serving("after a restart").await;
    assert_eq!(server.me(&token).await.status(), 200);
    assert_eq!(server.login("alice@example.com").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_win_over_the_environment_and_the_environment_over_the_file() {
    let dir = WorkDir::new();
    std::fs::write(
        dir.0.join("latchkey.toml"),
        "public_url = \"https://file.example\"\ncookie_secure = false\ninsecure_dev = true\naccess_token_ttl = 600\n\
         key_encryption_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n",
    )
    .unwrap();
    let db = format!("sqlite://{}", dir.0.join("cfg.db").display());
    let env = [
        ("LATCHKEY_PUBLIC_URL", "https://env.example"),
        ("LATCHKEY_ACCESS_TOKEN_TTL", "300"),
    ];
    let base = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--config",
        "latchkey.toml",
        "--database-url",
        &db,
    ];

    let server = ServerProcess::start(&base, &env, &dir.0).await;
    let response = server.signup("alice@example.com").await;
    assert_eq!(response.status(), 201);
    let cookies = set_cookies(response.headers());
    // From the file: insecure cookies, so no prefixes and no Secure.
    assert_eq!(
        cookies["lk_access"].attributes,
        attrs(&["httponly", "samesite=Lax", "path=/", "max-age=300"])
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["expires_in"], 300, "the environment beats the file");
    let claims = TestApp::claims(body["access_token"].as_str().unwrap());
    assert_eq!(claims["iss"], "https://env.example");
    drop(server);

    let mut args = base.to_vec();
    args.extend([
        "--public-url",
        "https://flag.example",
        "--access-token-ttl",
        "120",
    ]);
    let server = ServerProcess::start(&args, &env, &dir.0).await;
    let body: Value = server
        .login("alice@example.com")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["expires_in"], 120, "the flag beats the environment");
    assert_eq!(
        TestApp::claims(body["access_token"].as_str().unwrap())["iss"],
        "https://flag.example"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_stops_the_process_with_a_reason() {
    let dir = WorkDir::new();
    std::fs::write(
        dir.0.join("bad.toml"),
        "listen = \"127.0.0.1:0\"\nno_such_setting = true\n",
    )
    .unwrap();
    for (args, expected) in [
        (vec!["--config", "bad.toml"], "no_such_setting"),
        (vec!["--config", "missing.toml"], "cannot read config file"),
        (
            vec!["--public-url", "ftp://x.example"],
            "public_url must be an http",
        ),
        (
            vec!["--database-url", "mysql://x"],
            "database_url must start with",
        ),
        (
            vec!["--key-encryption-key", "too-short"],
            "key_encryption_key must be base64 of 32 bytes",
        ),
        // Production (a public URL other than localhost) without SMTP would log live links.
        (
            vec![
                "--public-url",
                "https://auth.example.com",
                "--key-encryption-key",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            ],
            "no smtp_url with the public URL https://auth.example.com/",
        ),
    ] {
        let mut args = args;
        args.extend(["--listen", "127.0.0.1:0"]);
        let output = run(&args, &dir.0);
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

async fn two_processes_on_one_database_share_sessions_and_detect_reuse(db: Db) {
    let db = TestDb::new(db).await;
    let kek = latchkey::keys::Kek::generate_encoded();
    let grace = [("LATCHKEY_REFRESH_GRACE_PERIOD", "0")];
    let a = ServerProcess::serve(&db, &kek, &grace).await;
    let b = ServerProcess::serve(&db, &kek, &grace).await;
    let pool = db.pool().await;

    // Signed up on A, known on B.
    let session = Session::from_response(a.signup("alice@example.com").await).await;
    assert_eq!(b.me(&session.access_token).await.status(), 200);

    // A token spent on A and replayed on B is reuse: the session dies everywhere.
    let rotated = a.refresh(&session.refresh_token).await;
    assert_eq!(rotated.status(), 200);
    let rotated = Session::from_response(rotated).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(b.refresh(&session.refresh_token).await.status(), 401);
    let revoked: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sessions WHERE revoked_reason = 'refresh_token_reuse'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(revoked, 1);
    assert_eq!(a.refresh(&rotated.refresh_token).await.status(), 401);
    assert_eq!(a.me(&rotated.access_token).await.status(), 401);

    // Logout on A is honoured by B at once.
    let second = Session::from_response(b.login("alice@example.com").await).await;
    assert_eq!(a.me(&second.access_token).await.status(), 200);
    let logout = a
        .client
        .post(a.url("/auth/logout"))
        .bearer_auth(&second.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    assert_eq!(b.me(&second.access_token).await.status(), 401);
    assert_eq!(b.refresh(&second.refresh_token).await.status(), 401);
    pool.close().await;
}

async fn migrate_prepares_a_fresh_database_and_exits(db: Db) {
    let db = TestDb::new(db).await;
    let output = run(
        &["migrate", "--database-url", &db.url],
        &std::env::temp_dir(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "migrations applied\n"
    );
    let pool = db.pool().await;
    for table in [
        "users",
        "profiles",
        "sessions",
        "refresh_tokens",
        "audit_events",
        "signing_keys",
    ] {
        let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(rows, 0, "{table}");
    }
    // Migrating again is a no-op.
    let again = run(
        &["migrate", "--database-url", &db.url],
        &std::env::temp_dir(),
    );
    assert!(again.status.success());
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish_and_exits_0() {
    let dir = WorkDir::new();
    // Hashing this slowly keeps a signup in flight long enough to send SIGTERM in the middle.
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--argon2-memory-kib",
        "65536",
        "--argon2-iterations",
        "48",
        // The stop after the drain is what this test is about (the drain has its own test).
        "--drain-period",
        "0",
    ];
    let mut server = ServerProcess::start(&args, &[], &dir.0).await;
    let request = server
        .client
        .post(server.url("/auth/signup"))
        .json(&serde_json::json!({
            "email": "alice@example.com", "password": PASSWORD
        }));
    let in_flight = tokio::spawn(request.send());
    // SIGTERM only once the signup is hashing, as the metrics tell.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = server
            .client
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap();
        let text = metrics.text().await.unwrap();
        if text.lines().any(|l| l == "latchkey_password_hash_jobs 1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the signup never started hashing"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = tokio::task::block_in_place(|| server.terminate());

    let response = in_flight
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(response.status(), 201);
    assert!(status.success(), "{status:?}");
    // The signup was still in flight when the shutdown began: its response line comes after.
    // The process has exited, but the thread draining its stderr may not have read the last
    // lines yet (seen once under load): wait for them.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !server.log().iter().any(|line| line.contains("status=201"))
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = server.log();
    let position = |needle: &str| log.iter().position(|line| line.contains(needle));
    let shutdown = position("shutting down").expect("the shutdown is logged");
    let answered = position("status=201").expect("the signup's response is logged");
    assert!(shutdown < answered, "{}", log.join("\n"));
}

async fn no_secret_reaches_the_log_of_a_full_journey(db: Db) {
    let db = TestDb::new(db).await;
    let kek = latchkey::keys::Kek::generate_encoded();
    let env = [("RUST_LOG", "debug"), ("LATCHKEY_LOG_FORMAT", "json")];
    let server = ServerProcess::serve(&db, &kek, &env).await;

    let signup = Session::from_response(server.signup("alice@example.com").await).await;
    let login = Session::from_response(server.login("alice@example.com").await).await;
    assert_eq!(server.me(&login.access_token).await.status(), 200);
    let refreshed = Session::from_response(server.refresh(&login.refresh_token).await).await;
    let wrong = server
        .client
        .post(server.url("/auth/login"))
        .json(&serde_json::json!({"email": "alice@example.com", "password": "a wrong password 42"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let logout = server
        .client
        .post(server.url("/auth/logout"))
        .bearer_auth(&refreshed.access_token)
        .send()
        .await;
    assert_eq!(logout.unwrap().status(), 204);

    let log = server.log();
    assert!(log.len() > 10, "the journey was logged");
    for line in &log {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
    let log = log.join("\n");
    assert!(
        log.contains("request_id"),
        "requests are logged with their id"
    );
    let secrets = [
        ("password", PASSWORD.to_owned()),
        ("wrong password", "a wrong password 42".to_owned()),
        ("key-encryption key", kek.clone()),
        ("signup access token", signup.access_token.clone()),
        ("signup refresh token", signup.refresh_token.clone()),
        ("login access token", login.access_token.clone()),
        ("login refresh token", login.refresh_token.clone()),
        ("refreshed access token", refreshed.access_token.clone()),
        ("refreshed refresh token", refreshed.refresh_token.clone()),
    ];
    for (what, secret) in secrets {
        assert!(!log.contains(&secret), "the {what} is in the log");
        // Not even a JWT's signature or payload alone.
        for part in secret.split('.').filter(|p| p.len() > 20) {
            assert!(!log.contains(part), "part of the {what} is in the log");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_first_then_stops_accepting_and_exits_0() {
    let dir = WorkDir::new();
    let args = ["--listen", "127.0.0.1:0", "--drain-period", "2"];
    let mut server = ServerProcess::start(&args, &[], &dir.0).await;
    server.assert_serving("before SIGTERM").await;
    server.signal("TERM");
    // Draining: /readyz says 503 so balancers move on, while every request is still served.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ready = server
            .client
            .get(server.url("/readyz"))
            .send()
            .await
            .unwrap();
        if ready.status() == 503 {
            assert_eq!(ready.headers()["retry-after"], "1");
            let body: Value = ready.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unavailable");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz never said 503"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let health = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "still alive while draining");
    assert_eq!(
        server.signup("alice@example.com").await.status(),
        201,
        "still serving"
    );
    let status = server.wait();
    assert!(status.success(), "{status:?}");
    let log = server.log().join("\n");
    assert!(log.contains("draining: /readyz answers 503"), "{log}");
    assert!(log.contains("latchkey stopped"), "{log}");
}

/// `config check` without `--json`: its problem lines and whether it succeeded.
async fn config_check(args: &[&str], dir: &std::path::Path) -> (bool, Vec<String>) {
    let mut all = vec!["config", "check"];
    all.extend_from_slice(args);
    let all: Vec<String> = all.iter().map(|a| (*a).to_owned()).collect();
    let dir = dir.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run(&all, &dir)
    })
    .await
    .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let problems = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("problem: "))
        .map(str::to_owned)
        .collect();
    (output.status.success(), problems)
}

/// Each problem `serve` would stop on is a line of its own, and the exit status says so: a KEK
/// that is not base64 of 32 bytes, missing template directories, a database that does not answer
/// (refused, or a black hole answered within database_timeout), a KEK that cannot open the
/// stored signing keys. Nothing is created or migrated by the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_names_every_problem_on_a_line_of_its_own() {
    let dir = WorkDir::new();
    let good_kek = latchkey::keys::Kek::generate_encoded();
    let fresh_db = format!("sqlite://{}", dir.0.join("fresh.db").display());

    let (ok, problems) = config_check(
        &[
            "--database-url",
            &fresh_db,
            "--key-encryption-key",
            &good_kek,
        ],
        &dir.0,
    )
    .await;
    assert!(ok && problems.is_empty(), "{problems:?}");
    assert!(
        !dir.0.join("fresh.db").exists(),
        "the check creates no database"
    );

    let (ok, problems) = config_check(
        &[
            "--database-url",
            "postgres://postgres@127.0.0.1:1/none",
            "--database-timeout",
            "300ms",
            "--key-encryption-key",
            "not base64 at all",
            "--mail-templates",
            "no-such-mail-dir",
            "--pages-templates",
            "no-such-pages-dir",
        ],
        &dir.0,
    )
    .await;
    assert!(!ok);
    assert_eq!(problems.len(), 4, "{problems:#?}");
    assert!(problems[0].starts_with("key_encryption_key must be base64 of 32 bytes"));
    assert_eq!(
        problems[1],
        "mail_templates no-such-mail-dir is not a directory"
    );
    assert_eq!(
        problems[2],
        "pages_templates no-such-pages-dir is not a directory"
    );
    assert!(
        problems[3].starts_with("database postgres://postgres@127.0.0.1:1/none unreachable"),
        "{problems:?}"
    );

    // A database that accepts connections and never answers: reported within the timeout.
    let hole = TcpProxy::start("127.0.0.1:9".parse().unwrap()).await;
    hole.set(ProxyMode::BlackHole);
    let url = format!("postgres://postgres@{}/none", hole.address);
    let (ok, problems) = config_check(
        &[
            "--database-url",
            &url,
            "--database-timeout",
            "300ms",
            "--key-encryption-key",
            &good_kek,
        ],
        &dir.0,
    )
    .await;
    assert!(!ok);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("unreachable"), "{problems:?}");

    // A database whose signing keys another KEK sealed.
    let db = format!("sqlite://{}", dir.0.join("keys.db").display());
    let migrate = run(
        &[
            "keys",
            "rotate",
            "--database-url",
            &db,
            "--key-encryption-key",
            &good_kek,
        ],
        &dir.0,
    );
    assert!(migrate.status.success(), "{migrate:?}");
    let other_kek = latchkey::keys::Kek::generate_encoded();
    let (ok, problems) = config_check(
        &["--database-url", &db, "--key-encryption-key", &other_kek],
        &dir.0,
    )
    .await;
    assert!(!ok);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("key_encryption_key cannot open the stored signing key"),
        "{problems:?}"
    );
    let (ok, problems) = config_check(
        &["--database-url", &db, "--key-encryption-key", &good_kek],
        &dir.0,
    )
    .await;
    assert!(ok, "{problems:?}");
}
