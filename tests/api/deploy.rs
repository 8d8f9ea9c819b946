//! docs/deployment.md as an operator follows it: its systemd unit passes `systemd-analyze
//! verify`, and its rolling restart (one instance at a time, behind a balancer that health-checks
//! /readyz) fails no request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

use crate::helpers::*;

const DEPLOYMENT: &str = include_str!("../../docs/deployment.md");

/// The fenced block between `<!-- NAME: begin -->` and `<!-- NAME: end -->`.
fn block(name: &str) -> String {
    let begin = format!("<!-- {name}: begin -->");
    let end = format!("<!-- {name}: end -->");
    let start = DEPLOYMENT.find(&begin).expect("begin marker") + begin.len();
    let stop = DEPLOYMENT[start..].find(&end).expect("end marker") + start;
    let inner = DEPLOYMENT[start..stop].trim();
    let inner = inner.split_once('\n').expect("a fence line").1;
    inner
        .strip_suffix("```")
        .expect("a closing fence")
        .to_owned()
}

#[test]
fn the_documented_systemd_unit_verifies() {
    let unit = block("unit");
    // systemd takes a trailing comment as part of a value; no directive of this unit has one.
    for line in unit.lines().filter(|l| !l.trim_start().starts_with('#')) {
        assert!(!line.contains('#'), "a trailing comment: {line}");
    }
    let Ok(version) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!(
            "note: systemd-analyze not installed: the unit of docs/deployment.md is not verified"
        );
        return;
    };
    assert!(version.status.success());
    let dir = std::env::temp_dir().join(format!("latchkey-unit-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    // The documented path of the binary, replaced by the one just built (verify checks it).
    let unit = unit.replace("/usr/local/bin/latchkey", env!("CARGO_BIN_EXE_latchkey"));
    let path = dir.join("latchkey.service");
    std::fs::write(&path, unit).unwrap();
    let output = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // A directive systemd cannot parse is only a warning: none allowed either.
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("latchkey.service"))
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}

#[test]
fn the_documented_proxies_never_expose_metrics_and_health_check_readyz() {
    let nginx = block("nginx");
    for needed in [
        "max_fails=0",
        "keepalive ",
        "proxy_http_version 1.1;",
        "proxy_set_header Connection \"\";",
        "Strict-Transport-Security",
        "location = /metrics {\n        return 404;",
        "listen 443 ssl",
    ] {
        assert!(nginx.contains(needed), "nginx example lacks {needed:?}");
    }
    let haproxy = block("haproxy");
    for needed in [
        "option httpchk GET /readyz",
        "http-check expect status 200",
        "deny_status 404 if { path /metrics }",
        "Strict-Transport-Security",
    ] {
        assert!(haproxy.contains(needed), "HAProxy example lacks {needed:?}");
    }
    let env = block("env");
    for needed in [
        "LATCHKEY_TRUSTED_PROXIES=",
        "LATCHKEY_SMTP_URL=",
        "LATCHKEY_KEY_ENCRYPTION_KEY=",
        "LATCHKEY_DATABASE_TIMEOUT=",
        "LATCHKEY_METRICS_LISTEN=",
        "LATCHKEY_PUBLIC_URL=https://",
    ] {
        assert!(env.contains(needed), "env example lacks {needed:?}");
    }
}

/// A balancer as HAProxy is configured in the docs, reduced to what matters here: it checks each
/// instance's /readyz every 50 ms and sends each new client connection to an instance whose last
/// check passed (round robin). It does not retry a refused connection elsewhere (HAProxy would,
/// with `retries`), so that the test shows the drain, not the retry, doing the work: with
/// `--drain-period 0` it fails.
struct Balancer {
    address: SocketAddr,
    backends: Arc<Mutex<Vec<(SocketAddr, bool)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Balancer {
    async fn start(backends: &[SocketAddr]) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let backends = Arc::new(Mutex::new(
            backends.iter().map(|a| (*a, false)).collect::<Vec<_>>(),
        ));
        let checked = backends.clone();
        let checker = tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_millis(500))
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            loop {
                let addresses: Vec<SocketAddr> =
                    checked.lock().unwrap().iter().map(|(a, _)| *a).collect();
                for address in addresses {
                    let ready = client
                        .get(format!("http://{address}/readyz"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    for backend in checked.lock().unwrap().iter_mut() {
                        if backend.0 == address {
                            backend.1 = ready;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let routed = backends.clone();
        let next = Arc::new(AtomicU64::new(0));
        let acceptor = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let routed = routed.clone();
                let turn = next.fetch_add(1, Ordering::Relaxed) as usize;
                tokio::spawn(async move {
                    let healthy: Vec<SocketAddr> = routed
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|(_, healthy)| *healthy)
                        .map(|(a, _)| *a)
                        .collect();
                    // No retry elsewhere: a connection refused is a failed request, as it is
                    // for a balancer that trusts its health checks. Only the drain keeps it
                    // from routing to a port about to close.
                    let Some(address) = healthy.get(turn % healthy.len().max(1)) else {
                        return;
                    };
                    if let Ok(mut server) = TcpStream::connect(address).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Balancer {
            address,
            backends,
            tasks: vec![checker, acceptor],
        }
    }

    fn healthy(&self, address: SocketAddr) -> bool {
        self.backends
            .lock()
            .unwrap()
            .iter()
            .any(|(a, healthy)| *a == address && *healthy)
    }

    async fn wait_healthy(&self, address: SocketAddr, context: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.healthy(address) {
            assert!(
                Instant::now() < deadline,
                "{context}: {address} never healthy"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn instance_args(db: &TestDb, kek: &str, listen: &str) -> Vec<String> {
    [
        "serve",
        "--listen",
        listen,
        "--database-url",
        &db.url,
        "--key-encryption-key",
        kek,
        "--rate-limits",
        "off",
        "--public-url",
        PUBLIC_URL,
        "--hash-threads",
        "1",
        // Longer than the balancer needs to see /readyz fail (one 50 ms check), short for CI.
        "--drain-period",
        "1",
        "--database-timeout",
        "300ms",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

async fn start_instance(db: &TestDb, kek: &str, listen: &str) -> ServerProcess {
    let args = instance_args(db, kek, listen);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ServerProcess::start(&args, &[], &std::env::temp_dir()).await
}

fn socket(server: &ServerProcess) -> SocketAddr {
    server
        .address
        .trim_start_matches("http://")
        .parse()
        .unwrap()
}

/// The rolling restart of docs/deployment.md: two instances on one PostgreSQL database behind
/// the balancer, each restarted in turn on its own port (SIGTERM, drain, exit 0, a new process),
/// under a steady loop of requests that read the database. Not one request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_rolling_restart_behind_a_readyz_checking_balancer_fails_no_request() {
    if !postgres_available().await {
        return;
    }
    let db = TestDb::new(Db::Postgres).await;
    let kek = latchkey::keys::Kek::generate_encoded();
    let mut one = start_instance(&db, &kek, "127.0.0.1:0").await;
    let mut two = start_instance(&db, &kek, "127.0.0.1:0").await;
    let (one_at, two_at) = (socket(&one), socket(&two));
    let balancer = Balancer::start(&[one_at, two_at]).await;
    balancer.wait_healthy(one_at, "at start").await;
    balancer.wait_healthy(two_at, "at start").await;

    let signup = one.signup("alice@example.com").await;
    assert_eq!(signup.status(), 201);
    let token = Session::from_response(signup).await.access_token;

    // The loop: GET /auth/me (a database read) through the balancer, one new connection per
    // request so that each one is routed afresh, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let looping = {
        let stop = stop.clone();
        let url = format!("http://{}/auth/me", balancer.address);
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let (mut ok, mut failed) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).bearer_auth(&token).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(format!("status {}", r.status())),
                    Err(e) => failed.push(format!("{e:?}")),
                }
            }
            (ok, failed)
        })
    };

    for (server, address) in [(&mut one, one_at), (&mut two, two_at)] {
        server.signal("TERM");
        let status = tokio::task::block_in_place(|| server.wait());
        assert!(status.success(), "{address}: {status:?}");
        *server = start_instance(&db, &kek, &address.to_string()).await;
        balancer.wait_healthy(address, "after its restart").await;
    }
    // A little traffic on the two new instances, then the verdict.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = looping.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} failed requests: {failed:#?}",
        failed.len()
    );
    assert!(ok > 20, "only {ok} requests were made");
}

/// The documented environment file is complete and valid: `config check` accepts it as it is
/// (its database swapped for a local file, as nothing here reaches `db.internal`).
#[test]
fn the_documented_environment_passes_config_check() {
    let env = block("env");
    let dir = std::env::temp_dir().join(format!("latchkey-env-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LATCHKEY_") {
            command.env_remove(name);
        }
    }
    for line in env.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line.split_once('=').expect("NAME=value");
        command.env(name, value);
    }
    let output = command
        .args(["config", "check", "--json"])
        .env(
            "LATCHKEY_DATABASE_URL",
            format!("sqlite://{}", dir.join("env.db").display()),
        )
        .env_remove("LATCHKEY_LOG_FORMAT")
        .current_dir(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let settings: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(settings["public_url"], "https://auth.example.com/");
    assert_eq!(
        settings["trusted_proxies"],
        serde_json::json!(["10.0.0.2/32", "10.0.0.3/32"])
    );
    assert_eq!(settings["database_timeout_ms"], 1000);
    assert_eq!(settings["metrics_listen"], "10.1.0.11:9090");
    assert_eq!(settings["audit_retention"], 365 * 86_400);
    assert_eq!(settings["key_encryption_key"], "<redacted>");
}
