//! latchkey's benchmark: throughput, latency, CPU and memory of every hot endpoint, next to the
//! ceilings that bound them, measured in the same run.
//!
//!     cargo run --release --example bench -- [--postgres-url URL] [--duration-secs N]
//!         [--out DIR] [--rate-limits off|on|both]
//!         [--only healthz,jwks,signup,login,refresh,me,mixed,propagation,timing,hangup]
//!
//! `--only` runs just those scenarios against the server, without the ceilings and without writing
//! results, and prints the server's pid: the loop to profile with `perf record -g -p PID`.
//! `--rate-limits` picks the passes (both by default).
//!
//! It builds the release server (`cargo build --release --bin latchkey`), starts it as a child
//! process on 127.0.0.1 against a fresh SQLite database in a temporary directory (and then, with
//! `--postgres-url`, against a fresh PostgreSQL database created on that server and dropped
//! afterwards), and drives it over loopback with a closed-loop load generator (N workers, each
//! sending its next request when the previous one is answered, for a fixed duration). Each
//! database gets two passes, each with a server of its own on a database of its own: rate limits
//! off, then the default limits on with 127.0.0.1 a trusted proxy and every worker a fresh client
//! in `X-Forwarded-For` every few requests (so the counters are read and written on every request
//! without refusing them; 429s are counted apart). Both passes end with the hang-up scenario
//! (`hangup.rs`); the first also measures the forgot-password timing (`timing.rs`). Results go to
//! `bench/results/` as JSON and Markdown (a timestamped pair, and `latest.json`/`latest.md`). The
//! run exits non-zero, after writing them, if a write flow fails after the hang-ups.
//!
//! The load generator runs in this process, on the same cores as the server: every figure is what
//! the server achieves while sharing the machine with its clients. Server CPU is read from
//! `/proc/<pid>/stat`, peak memory from `VmHWM` in `/proc/<pid>/status` (reset before each
//! scenario through `/proc/<pid>/clear_refs`), so this runs on Linux only.
//!
//! Every address is on the loopback interface, and every loop is bounded by the duration.

mod ceilings;
mod hangup;
mod load;
mod propagation;
mod report;
mod server;
mod stats;
mod timing;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use latchkey::config::{Overrides, Settings};
use latchkey::password::argon2id::Cost;

use crate::load::{Clients, Op, Sample};
use crate::report::{Backend, Row};

/// Concurrency levels of every scenario.
const LEVELS: [usize; 2] = [8, 64];

struct Args {
    postgres_url: Option<String>,
    duration: Duration,
    out: PathBuf,
    /// Only these scenarios (for profiling one endpoint); every one when empty.
    only: Vec<String>,
    /// The passes: rate limits off, on, or both.
    passes: Vec<bool>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        postgres_url: None,
        duration: Duration::from_secs(5),
        out: PathBuf::from("bench/results"),
        only: Vec::new(),
        passes: vec![false, true],
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--postgres-url" => args.postgres_url = Some(value()?),
            "--duration-secs" => {
                let secs: u64 = value()?.parse().context("--duration-secs is a number")?;
                if secs == 0 || secs > 120 {
                    bail!("--duration-secs must be between 1 and 120");
                }
                args.duration = Duration::from_secs(secs);
            }
            "--out" => args.out = PathBuf::from(value()?),
            "--only" => args.only = value()?.split(',').map(str::to_owned).collect(),
            "--rate-limits" => {
                args.passes = match value()?.as_str() {
                    "off" => vec![false],
                    "on" => vec![true],
                    "both" => vec![false, true],
                    other => bail!("--rate-limits is off, on or both, not {other:?}"),
                }
            }
            "-h" | "--help" => {
                println!(
                    "usage: cargo run --release --example bench -- \
                     [--postgres-url postgres://USER@127.0.0.1:5432/DB] [--duration-secs N] [--out DIR]\n\
                     \x20      [--rate-limits off|on|both] (the passes; both by default)\n\
                     \x20      [--only healthz,jwks,signup,login,refresh,me,mixed,propagation,timing,hangup] (profiling; writes no results)"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if let Some(url) = &args.postgres_url {
        server::check_loopback(url)?;
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let binary = server::build_release_binary()?;
    let defaults = Settings::resolve(Overrides::default())?;
    let cost = Cost {
        memory_kib: defaults.argon2_memory_kib,
        iterations: defaults.argon2_iterations,
    };
    let machine = report::Machine::detect(defaults.hash_threads);
    println!("{}", machine.line());
    let scratch = server::scratch_dir()?;

    let profiling = !args.only.is_empty();
    println!(
        "\n## Hashers: Argon2id m={} KiB, t={}, p=1, in-process",
        cost.memory_kib, cost.iterations
    );
    let hashers = match profiling {
        false => ceilings::hashers(cost, machine.cores, args.duration),
        true => Vec::new(),
    };
    for h in &hashers {
        println!(
            "{:<24} {:>6.1} hashes/s on 1 thread, {:>6.1} on {} threads{}",
            h.name,
            h.one_thread,
            h.all_cores,
            machine.cores,
            if h.chosen { "  (the service's)" } else { "" }
        );
    }
    let eddsa_us = ceilings::eddsa_verify_us(&scratch).await?;
    println!("EdDSA access-token verification: {eddsa_us:.1} µs in-process");

    let mut backends = Vec::new();
    let sqlite_url = |name: &str| format!("sqlite://{}", scratch.join(name).display());
    backends.push(
        run_backend(
            "SQLite",
            &binary,
            &args,
            (
                sqlite_url("ceiling.db"),
                [sqlite_url("server.db"), sqlite_url("server-limits.db")],
            ),
            (cost, machine.cores),
            eddsa_us,
            machine.hash_threads,
        )
        .await?,
    );
    if let Some(admin) = &args.postgres_url {
        let ceiling_db = server::PgDatabase::create(admin, "ceiling").await?;
        let server_db = server::PgDatabase::create(admin, "server").await?;
        let limits_db = server::PgDatabase::create(admin, "server_limits").await?;
        let result = run_backend(
            "PostgreSQL",
            &binary,
            &args,
            (
                ceiling_db.url.clone(),
                [server_db.url.clone(), limits_db.url.clone()],
            ),
            (cost, machine.cores),
            eddsa_us,
            machine.hash_threads,
        )
        .await;
        ceiling_db.drop_database().await;
        server_db.drop_database().await;
        limits_db.drop_database().await;
        backends.push(result?);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let broken: Vec<String> = backends
        .iter()
        .flat_map(|b| {
            b.hangups
                .iter()
                .filter(|(_, h)| !h.writes_ok())
                .map(|(limits, h)| {
                    format!(
                        "{} (rate limits {}): {}",
                        b.name,
                        if *limits { "on" } else { "off" },
                        h.failures().join("; ")
                    )
                })
        })
        .collect();
    if profiling {
        if !broken.is_empty() {
            bail!(
                "writes are broken after the hang-ups: {}",
                broken.join(" | ")
            );
        }
        return Ok(());
    }

    let run = report::Run {
        commit: report::git_commit(),
        settings: serde_json::json!({
            "duration_secs": args.duration.as_secs(),
            "rate_limit_passes": args.passes.iter().map(|on| if *on { "on" } else { "off" }).collect::<Vec<_>>(),
            "postgres": args.postgres_url.is_some(),
            "levels": LEVELS,
            "signup_flood": FLOOD,
            "argon2": {"memory_kib": cost.memory_kib, "iterations": cost.iterations},
            "hash_threads": machine.hash_threads,
        }),
        machine,
        cost,
        duration: args.duration,
        hashers,
        eddsa_verify_us: eddsa_us,
        backends,
    };
    let written = run.write(&args.out)?;
    println!("\n{}", run.markdown());
    println!("written: {}", written.join(", "));
    if !broken.is_empty() {
        bail!(
            "writes are broken after the hang-ups: {}",
            broken.join(" | ")
        );
    }
    Ok(())
}

/// Every scenario against one database: the transaction ceiling in-process, then the server.
async fn run_backend(
    name: &'static str,
    binary: &std::path::Path,
    args: &Args,
    (ceiling_url, server_urls): (String, [String; 2]),
    (cost, cores): (Cost, usize),
    eddsa_us: f64,
    hash_threads: usize,
) -> anyhow::Result<Backend> {
    println!("\n## {name}");
    let mut refresh_ceiling = Vec::new();
    for c in LEVELS.into_iter().filter(|_| args.only.is_empty()) {
        let rate = ceilings::refresh_transactions(&ceiling_url, c, args.duration).await?;
        println!("refresh transaction ceiling, concurrency {c}: {rate:.0} tx/s");
        refresh_ceiling.push((c, rate));
    }

    let mut backend = Backend {
        name,
        refresh_ceiling,
        argon2_ceilings: Vec::new(),
        eddsa_us,
        hash_threads,
        rows: Vec::new(),
        mixed: None,
        mixed_limits: None,
        hangups: Vec::new(),
        timing: None,
        propagation: None,
    };
    for limits in args.passes.iter().copied() {
        let server_url = &server_urls[usize::from(limits)];
        pass(
            &mut backend,
            binary,
            args,
            server_url,
            limits,
            (cost, cores),
        )
        .await?;
    }
    Ok(backend)
}

/// One pass of every scenario against a server of its own: rate limits off, or the defaults on
/// with every worker a fresh client every few requests.
async fn pass(
    backend: &mut Backend,
    binary: &std::path::Path,
    args: &Args,
    server_url: &str,
    limits: bool,
    (cost, cores): (Cost, usize),
) -> anyhow::Result<()> {
    let wanted = |key: &str| args.only.is_empty() || args.only.iter().any(|o| o == key);
    let clients = if limits {
        Clients::Forwarded
    } else {
        Clients::Loopback
    };
    let name = backend.name;
    let label = if limits { "on" } else { "off" };
    println!("\n### {name}, rate limits {label}");
    let log = std::env::temp_dir().join(format!(
        "latchkey-bench-{}-{name}-limits-{label}.log",
        std::process::id()
    ));
    let options = server::Options {
        rate_limits: limits,
        // Signup's verification email takes the address's mail slot; without a throttle every
        // forgot right after it issues its token (the hang-up and timing scenarios need that).
        mail_throttle: Some(0),
        kek: Box::leak(latchkey::keys::Kek::generate_encoded().into_boxed_str()),
    };
    let server = server::Server::start(binary, server_url, log.clone(), options)?;
    println!("server pid {} at {}", server.pid, server.base);
    let client = load::client()?;
    // It listens before its database is migrated and its keys loaded (503 `unavailable` meanwhile).
    server::wait_ready(&client, &server.base).await?;
    let rows = &mut backend.rows;
    let mut measure = async |op: Op, c: usize, sessions: &mut Vec<load::Session>, ceiling| {
        server.reset_peak_rss();
        let before = server.usage()?;
        let sample = load::run(
            &client,
            &server.base,
            (op, clients),
            c,
            args.duration,
            sessions,
        )
        .await;
        let used = server.usage()? - before;
        let mut row = Row::new(op, c, limits, &sample, used, server.peak_rss_mib()?);
        row.argon2_ceiling = ceiling;
        println!("{}", row.line());
        rows.push(row);
        anyhow::Ok(())
    };

    let mut sessions = load::sessions(&client, &server.base, 64, clients).await?;
    let known: Vec<String> = sessions.iter().map(|s| s.email.clone()).collect();
    // The Argon2 ceiling of the pass's latest signup or login scenario.
    let mut argon2_ceiling = None;
    for op in [
        Op::Healthz,
        Op::Jwks,
        Op::Signup,
        Op::Login,
        Op::Refresh,
        Op::Me,
    ] {
        if !wanted(op.key()) {
            continue;
        }
        if matches!(op, Op::Signup | Op::Login) {
            // Measured right before each endpoint it bounds, in each pass, while the server
            // idles: on a shared machine the speed of the cores drifts within a minute.
            let ceiling = tokio::task::block_in_place(|| {
                ceilings::argon2_ceiling(cost, cores, args.duration)
            });
            println!("Argon2 ceiling: {ceiling:.1} hashes/s on {cores} threads");
            backend.argon2_ceilings.push(ceiling);
            argon2_ceiling = Some(ceiling);
        }
        for c in LEVELS {
            let ceiling = argon2_ceiling.filter(|_| matches!(op, Op::Signup | Op::Login));
            measure(op, c, &mut sessions, ceiling).await?;
        }
    }

    if wanted("mixed") {
        let ceiling = match argon2_ceiling {
            Some(ceiling) => ceiling,
            None => {
                tokio::task::block_in_place(|| ceilings::argon2_ceiling(cost, cores, args.duration))
            }
        };
        let m = mixed(
            &server,
            &client,
            args.duration,
            (&mut sessions, clients),
            ceiling,
        )
        .await?;
        match limits {
            false => backend.mixed = Some(m),
            true => backend.mixed_limits = Some(m),
        }
    }
    if wanted("propagation") && !limits {
        // A second instance on the same database, with the same keys.
        let log_b = log.with_extension("b.log");
        let b = server::Server::start(binary, server_url, log_b.clone(), options)?;
        server::wait_ready(&client, &b.base).await?;
        let p = propagation::run(&client, &server.base, &b.base).await?;
        println!("{}", p.line());
        backend.propagation = Some(p);
        b.stop();
        let _ = std::fs::remove_file(&log_b);
    }
    if wanted("timing") && !limits {
        let t = timing::forgot(&client, &server.base, &known).await?;
        println!("{}", t.line());
        backend.timing = Some(t);
    }
    if wanted("hangup") {
        let h = hangup::run(&client, &server.base, &server.log, clients).await?;
        println!("{}", h.line());
        backend.hangups.push((limits, h));
    }
    server.stop();
    // Kept when writes broke: its errors say why.
    match backend
        .hangups
        .iter()
        .any(|(l, h)| *l == limits && !h.writes_ok())
    {
        true => println!(
            "writes broke after the hang-ups: the server's log is kept at {}",
            log.display()
        ),
        false => {
            let _ = std::fs::remove_file(&log);
        }
    }
    Ok(())
}
/// How many signups run at once in the isolation scenario (issue 17's).
const FLOOD: usize = 16;

/// Mixed load: `GET /auth/me` alone, then the same next to a flood of `FLOOD` signups.
async fn mixed(
    server: &server::Server,
    client: &reqwest::Client,
    duration: Duration,
    (sessions, clients): (&mut Vec<load::Session>, Clients),
    argon2_ceiling: f64,
) -> anyhow::Result<report::Mixed> {
    let me_workers = 8;
    let me_duration = duration.saturating_sub(Duration::from_millis(600));
    server.reset_peak_rss();
    let idle = load::run(
        client,
        &server.base,
        (Op::Me, clients),
        me_workers,
        me_duration,
        sessions,
    )
    .await;
    let mut flood_sessions = Vec::new();
    let (flood, under) = tokio::join!(
        load::run(
            client,
            &server.base,
            (Op::Signup, clients),
            FLOOD,
            duration,
            &mut flood_sessions
        ),
        async {
            // Measured while the flood is on: it starts 300 ms after the flood and ends before it.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut mine = sessions.clone();
            load::run(
                client,
                &server.base,
                (Op::Me, clients),
                me_workers,
                me_duration,
                &mut mine,
            )
            .await
        },
    );
    let workers = (me_workers, FLOOD);
    let measured = (server.peak_rss_mib()?, argon2_ceiling);
    let mixed = report::Mixed::new(workers, &idle, &under, &flood, measured);
    println!("{}", mixed.line());
    Ok(mixed)
}

impl Row {
    fn new(
        op: Op,
        concurrency: usize,
        limits: bool,
        s: &Sample,
        used: server::Usage,
        peak_rss_mib: f64,
    ) -> Row {
        let answered = s.ok + s.errors + s.limited;
        let per_request = |v: f64| {
            if answered > 0 {
                v / answered as f64
            } else {
                0.0
            }
        };
        Row {
            op,
            concurrency,
            limits,
            requests: s.ok,
            errors: s.errors,
            rate_limited: s.limited,
            per_sec: s.rate(),
            p50_ms: s.percentile_ms(50.0),
            p99_ms: s.percentile_ms(99.0),
            cpu_us_per_request: per_request(used.cpu_seconds * 1e6),
            hashing_us_per_request: per_request(used.hashing_seconds * 1e6),
            switches_per_request: per_request(used.switches as f64),
            peak_rss_mib,
            argon2_ceiling: None,
        }
    }
}
