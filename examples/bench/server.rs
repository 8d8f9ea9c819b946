//! The server under test: built, started as a child process, watched through /proc, stopped.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::Connection as _;

/// Builds (or finds up to date) `target/release/latchkey` with the cargo that runs this example.
pub fn build_release_binary() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    println!("building the release server: cargo build --release --bin latchkey");
    let status = Command::new(cargo)
        .args(["build", "--release", "--bin", "latchkey"])
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build --release failed");
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let binary = target.join("release").join("latchkey");
    if !binary.exists() {
        bail!("{} is missing after the build", binary.display());
    }
    Ok(binary)
}

/// What the server used between two readings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User + system CPU time of the whole process.
    pub cpu_seconds: f64,
    /// The part of it on the hashing threads (`latchkey-hash-N`).
    pub hashing_seconds: f64,
    /// Context switches of its threads, voluntary and not.
    pub switches: u64,
}

impl std::ops::Sub for Usage {
    type Output = Usage;

    fn sub(self, before: Usage) -> Usage {
        Usage {
            cpu_seconds: self.cpu_seconds - before.cpu_seconds,
            hashing_seconds: self.hashing_seconds - before.hashing_seconds,
            switches: self.switches.saturating_sub(before.switches),
        }
    }
}

/// The command name and `utime + stime` (in clock ticks) of a `/proc/…/stat` line.
fn parse_stat(stat: &str) -> anyhow::Result<(&str, f64)> {
    let (head, rest) = stat.rsplit_once(')').context("odd /proc stat")?;
    let name = head.split_once('(').map_or("", |(_, n)| n);
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    Ok((name, utime + stime))
}

/// A fresh temporary directory for this run's SQLite files and server log.
pub fn scratch_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("latchkey-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// The load only ever goes to this machine.
pub fn check_loopback(url: &str) -> anyhow::Result<()> {
    let parsed = url::Url::parse(url).context("--postgres-url is not a URL")?;
    // `postgres:` is not a special scheme to the URL standard: its host comes back as text.
    let host = parsed.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("--postgres-url must point at this machine (127.0.0.1, ::1 or localhost)");
    }
    Ok(())
}

pub struct Server {
    child: Child,
    pub pid: u32,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The server's log (stderr), where emails land without SMTP: the hang-up scenario reads its
    /// reset links there.
    pub log: PathBuf,
    ticks_per_second: f64,
}

/// How one pass configures the server.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Off: `--rate-limits off`. On: the default limits, with 127.0.0.1 a trusted proxy so that
    /// the load generator's `X-Forwarded-For` names many clients.
    pub rate_limits: bool,
    /// Seconds between two reset emails to one address; `None`: the default (60).
    pub mail_throttle: Option<u64>,
    /// The key-encryption key (a second instance on the same database needs the first's).
    pub kek: &'static str,
}

impl Server {
    /// Starts `latchkey serve` on a free loopback port against `database_url`, configured by
    /// `options`, and waits for its "listening" log line. Its log goes to `log_path`.
    pub fn start(
        binary: &Path,
        database_url: &str,
        log_path: PathBuf,
        options: Options,
    ) -> anyhow::Result<Server> {
        let help = Command::new(binary)
            .arg("--help")
            .output()
            .context("cannot run the server binary")?;
        let help = String::from_utf8_lossy(&help.stdout);
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(["--database-url", database_url])
            .args(["--key-encryption-key", options.kek])
            .env_remove("LATCHKEY_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Settings that may not exist in every version of the server.
        if help.contains("--rate-limits") && !options.rate_limits {
            command.args(["--rate-limits", "off"]);
        }
        if options.rate_limits {
            // Only the load generator on loopback is believed; every other setting is the default.
            command.args(["--trusted-proxies", "127.0.0.1/32"]);
        }
        if let Some(secs) = options.mail_throttle {
            command.args(["--mail-throttle", &secs.to_string()]);
        }
        // The closed loop keeps at most 64 signups or logins in flight: a queue that holds them
        // all measures throughput, not load shedding (which answers the 65th with 503 at once).
        if help.contains("--hash-queue") {
            command.args(["--hash-queue", "64"]);
        }
        let mut child = command.spawn().context("cannot start the server")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (tx, rx) = mpsc::channel();
        let log = log_path.clone();
        std::thread::spawn(move || {
            // Drains the log for the server's whole life, so it never blocks on a full pipe.
            let mut log = std::fs::File::create(&log_path).ok();
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(log) = log.as_mut() {
                    let _ = writeln!(log, "{line}");
                }
                if let Some(at) = line.find("latchkey listening on http://") {
                    let address = line[at + "latchkey listening on http://".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(address);
                    }
                }
            }
        });
        let address = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                bail!("the server did not say where it listens within 60 s (see its log)");
            }
        };
        let pid = child.id();
        Ok(Server {
            child,
            pid,
            base: format!("http://{address}"),
            log,
            ticks_per_second: clock_ticks(),
        })
    }

    /// The CPU the server has used so far: the whole process's, its hashing threads' part, and
    /// its threads' context switches.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        let process = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        let (_, cpu_ticks) = parse_stat(&process)?;
        let mut usage = Usage {
            cpu_seconds: cpu_ticks / self.ticks_per_second,
            ..Usage::default()
        };
        // A thread that ends between two readings takes its switches along (sqlx and tokio keep
        // theirs for the server's life; the hashing threads always do).
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid))? {
            let task = task?.path();
            let (Ok(stat), Ok(status)) = (
                std::fs::read_to_string(task.join("stat")),
                std::fs::read_to_string(task.join("status")),
            ) else {
                continue;
            };
            let (name, ticks) = parse_stat(&stat)?;
            if name.starts_with("latchkey-hash") {
                usage.hashing_seconds += ticks / self.ticks_per_second;
            }
            usage.switches += status
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("voluntary_ctxt_switches:")
                        .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                })
                .filter_map(|v| v.trim().parse::<u64>().ok())
                .sum::<u64>();
        }
        Ok(usage)
    }

    /// Resets the peak resident set size (Linux ≥ 4.0).
    pub fn reset_peak_rss(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5");
    }

    /// Peak resident set size since the last reset, in MiB.
    pub fn peak_rss_mib(&self) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .context("no VmHWM")?
            .parse()?;
        Ok(kib / 1024.0)
    }

    /// SIGTERM, then SIGKILL if it has not stopped within 10 s.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sysconf(_SC_CLK_TCK)`, the unit of /proc CPU times (100 on every usual Linux).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A database made for this run on the given PostgreSQL server, dropped afterwards.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn create(admin_url: &str, purpose: &str) -> anyhow::Result<PgDatabase> {
        let name = format!("latchkey_bench_{}_{purpose}", std::process::id());
        let mut admin = sqlx::PgConnection::connect(admin_url)
            .await
            .context("cannot connect to PostgreSQL")?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut admin)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .context("cannot create the benchmark database")?;
        let mut url = url::Url::parse(admin_url)?;
        url.set_path(&format!("/{name}"));
        Ok(PgDatabase {
            admin_url: admin_url.to_owned(),
            name,
            url: url.to_string(),
        })
    }

    pub async fn drop_database(&self) {
        let dropped = async {
            let mut admin = sqlx::PgConnection::connect(&self.admin_url).await?;
            sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin)
            .await?;
            anyhow::Ok(())
        };
        if let Err(err) = dropped.await {
            eprintln!("could not drop {}: {err:#}", self.name);
        }
    }
}

/// Waits until `GET /readyz` answers 200 (at most 60 s).
pub async fn wait_ready(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = client.get(format!("{base}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status() == reqwest::StatusCode::OK) {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("{base} is not ready after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
