//! The real `latchkey` binary as a child process, for what an in-process server cannot show:
//! process-global failpoints, the command line, several processes on one database.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::{PASSWORD, PUBLIC_URL, TestDb};

/// How long the binary may take to migrate its database and listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `latchkey` process. Killed on drop; its log is printed when the test failed.
pub struct ServerProcess {
    child: Child,
    pub address: String,
    pub client: reqwest::Client,
    log: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// `latchkey serve` on a test database with the test flags and extra environment.
    pub async fn serve(db: &TestDb, kek: &str, env: &[(&str, &str)]) -> ServerProcess {
        ServerProcess::serve_with(db, kek, &[], env).await
    }

    /// `serve` with `extra` flags after the test flags.
    pub async fn serve_with(
        db: &TestDb,
        kek: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> ServerProcess {
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db.url,
            "--key-encryption-key",
            kek,
            "--rate-limits",
            "off",
            "--public-url",
            PUBLIC_URL,
            "--hash-threads",
            "2",
            "--drain-period",
            "0",
        ];
        args.extend_from_slice(extra);
        ServerProcess::start(&args, env, &std::env::temp_dir()).await
    }

    /// The binary with exactly these arguments and extra environment, run in `dir`, once it
    /// is ready (database migrated, keys loaded).
    pub async fn start(args: &[&str], env: &[(&str, &str)], dir: &Path) -> ServerProcess {
        ServerProcess::launch(args, env, dir, Phase::Ready).await
    }

    /// `start`, returning as soon as the port is bound: the server may still be waiting for its
    /// database.
    pub async fn start_listening(args: &[&str], env: &[(&str, &str)], dir: &Path) -> ServerProcess {
        ServerProcess::launch(args, env, dir, Phase::Listening).await
    }

    async fn launch(
        args: &[&str],
        env: &[(&str, &str)],
        dir: &Path,
        until: Phase,
    ) -> ServerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_latchkey"));
        // Only what the test says configures it, whatever the environment of the test run holds.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LATCHKEY_") {
                command.env_remove(name);
            }
        }
        command
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start the latchkey binary");
        let stderr = child.stderr.take().expect("piped stderr");

        // The reader keeps draining stderr until the process ends, so the server never blocks on
        // a full pipe; it reports the address from the "listening" line, then the "ready" line.
        let log = Arc::new(Mutex::new(Vec::new()));
        let (listening_tx, listening_rx) = tokio::sync::oneshot::channel::<String>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let thread_log = log.clone();
        std::thread::spawn(move || {
            let mut listening = Some(listening_tx);
            let mut ready = Some(ready_tx);
            let mut reader = BufReader::new(stderr);
            let mut raw = Vec::new();
            loop {
                raw.clear();
                match reader.read_until(b'\n', &mut raw) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&raw).trim_end().to_owned();
                if let Some(address) = listening_address(&line)
                    && let Some(tx) = listening.take()
                {
                    let _ = tx.send(address);
                }
                if line.contains(READY_MARKER)
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(());
                }
                thread_log.lock().unwrap().push(line);
            }
        });

        let started = tokio::time::timeout(START_TIMEOUT, async {
            let address = listening_rx.await.map_err(|_| "exited without listening")?;
            if until == Phase::Ready {
                ready_rx.await.map_err(|_| "exited without getting ready")?;
            }
            Ok::<_, &str>(address)
        })
        .await;
        let address = match started {
            Ok(Ok(address)) => address,
            outcome => {
                let _ = child.kill();
                let status = child.wait();
                let why = match outcome {
                    Err(_) => format!("did not get to {until:?} within {START_TIMEOUT:?}"),
                    Ok(Err(why)) => format!("{why} ({status:?})"),
                    Ok(Ok(_)) => unreachable!(),
                };
                // Give the reader a moment to collect the last lines.
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!(
                    "latchkey {args:?} {why}; its log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        ServerProcess {
            child,
            address: format!("http://{address}"),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// The lines the process has logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The token of the `n`-th (from 0) emailed link to `path` (`password/reset`, `email/verify`)
    /// that the process logged (it logs emails when no SMTP relay is configured), waiting for it.
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    pub async fn link_token(&self, path: &str, n: usize) -> String {
        let marker = format!("{PUBLIC_URL}/{path}?token=");
        for _ in 0..100 {
            let tokens: Vec<String> = self
                .log()
                .iter()
                .flat_map(|line| {
                    line.match_indices(&marker)
                        .map(|(i, _)| &line[i + marker.len()..])
                })
                .map(|rest| {
                    rest.chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
                        .collect()
                })
                .collect();
            if let Some(token) = tokens.get(n) {
                return token.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no link {n} to {path} in the log");
    }

    pub async fn signup(&self, email: &str) -> reqwest::Response {
        self.client
            .post(self.url("/auth/signup"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .expect("signup request answered")
    }

    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    pub async fn forgot(&self, email: &str) -> reqwest::Response {
        self.client
            .post(self.url("/auth/password/forgot"))
            .json(&json!({"email": email}))
            .send()
            .await
            .expect("forgot request answered")
    }

    pub async fn login(&self, email: &str) -> reqwest::Response {
        self.client
            .post(self.url("/auth/login"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .expect("login request answered")
    }

    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.client
            .post(self.url("/auth/refresh"))
            .header("cookie", format!("__Secure-lk_refresh={refresh_token}"))
            .send()
            .await
            .expect("refresh request answered")
    }

    pub async fn me(&self, access_token: &str) -> reqwest::Response {
        self.client
            .get(self.url("/auth/me"))
            .bearer_auth(access_token)
            .send()
            .await
            .expect("me request answered")
    }

    /// The server answers the next requests, its database included.
    pub async fn assert_serving(&self, context: &str) {
        for path in ["/healthz", "/readyz"] {
            let response = self
                .client
                .get(self.url(path))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{context}: GET {path} unanswered: {e}"));
            assert_eq!(response.status(), 200, "{context}: GET {path}");
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    /// Sends the process `signal` (`HUP`, `TERM`, …) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal}");
    }

    /// Waits for the process to end on its own.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("the process ends")
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("the process ends")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking()
            && let Ok(log) = self.log.lock()
        {
            eprintln!(
                "--- latchkey log ({}) ---\n{}",
                self.address,
                log.join("\n")
            );
        }
    }
}

/// `... latchkey listening on http://127.0.0.1:PORT …` → `127.0.0.1:PORT`, in either log format.
/// How far a started server must have got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Listening,
    Ready,
}

/// What the server logs once its database is migrated and its keys loaded.
const READY_MARKER: &str = "latchkey ready";

fn listening_address(line: &str) -> Option<String> {
    const MARKER: &str = "latchkey listening on http://";
    let start = line.find(MARKER)? + MARKER.len();
    let address: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    (!address.is_empty()).then_some(address)
}

/// Runs a `latchkey` command to completion (`migrate`, `keys rotate`), without the test run's
/// `LATCHKEY_*` environment, and returns its output.
/// `latchkey users disable` of `user_id` on `db` (as an operator would, from another process),
/// which must succeed.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
pub async fn disable_with_cli(db: &TestDb, kek: &str, user_id: &str) {
    let (url, kek, user_id) = (db.url.clone(), kek.to_owned(), user_id.to_owned());
    let disabled = tokio::task::spawn_blocking(move || {
        let args = ["users", "disable", &user_id, "--database-url", &url];
        let args = [&args[..], &["--key-encryption-key", &kek]].concat();
        run(&args, &std::env::temp_dir())
    })
    .await
    .unwrap();
    assert!(
        disabled.status.success(),
        "disable: {}",
        String::from_utf8_lossy(&disabled.stderr)
    );
}

pub fn run(args: &[&str], dir: &Path) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_latchkey"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LATCHKEY_") {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run latchkey")
}
