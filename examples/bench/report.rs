//! The results: the machine, the ceilings, one row per scenario, the targets; as JSON and
//! as Markdown.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use latchkey::password::argon2id::Cost;
use serde_json::{Value, json};

use crate::ceilings::Hasher;
use crate::hangup::Hangup;
use crate::load::{Op, Sample};
use crate::timing::Timing;

pub struct Machine {
    pub cores: usize,
    pub hash_threads: usize,
    cpu: String,
    memory_gib: f64,
    kernel: String,
    /// 1-minute load average when the run started: other work on the machine skews every figure.
    load_before: String,
}

impl Machine {
    pub fn detect(hash_threads: usize) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |text: &str, key: &str| {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_default()
        };
        let memory_kib: f64 = field(&meminfo, "MemTotal")
            .trim_end_matches(" kB")
            .parse()
            .unwrap_or(0.0);
        Machine {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            hash_threads,
            cpu: field(&cpuinfo, "model name"),
            memory_gib: memory_kib / 1024.0 / 1024.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            load_before: std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned(),
        }
    }

    pub fn line(&self) -> String {
        format!(
            "machine: {} cores, {}, {:.0} GiB, Linux {}, load average {} at the start; server: {} hashing threads",
            self.cores, self.cpu, self.memory_gib, self.kernel, self.load_before, self.hash_threads
        )
    }
}

pub struct Row {
    pub op: Op,
    pub concurrency: usize,
    /// The pass: default rate limits on (clients through `X-Forwarded-For`), or off.
    pub limits: bool,
    pub requests: u64,
    pub errors: u64,
    /// Answered 429: neither a success nor an error.
    pub rate_limited: u64,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub cpu_us_per_request: f64,
    /// The part of that CPU on the hashing threads.
    pub hashing_us_per_request: f64,
    /// Context switches of the server's threads per request.
    pub switches_per_request: f64,
    pub peak_rss_mib: f64,
    /// Signup and login: the Argon2 ceiling measured right before the scenario, in its pass.
    pub argon2_ceiling: Option<f64>,
}

impl Row {
    pub fn line(&self) -> String {
        format!(
            "{:<28} c={:<3} limits {:<3} {:>8.1} req/s  p50 {:>8.2} ms  p99 {:>8.2} ms  errors {:>5}  429 {:>5}  cpu {:>8.1} µs/req (hashing {:>7.1})  switches {:>5.1}/req  rss {:>6.1} MiB",
            self.op.label(),
            self.concurrency,
            on_off(self.limits),
            self.per_sec,
            self.p50_ms,
            self.p99_ms,
            self.errors,
            self.rate_limited,
            self.cpu_us_per_request,
            self.hashing_us_per_request,
            self.switches_per_request,
            self.peak_rss_mib
        )
    }
}

/// `/auth/me` alone, and next to a flood of signups.
pub struct Mixed {
    me_concurrency: usize,
    flood_concurrency: usize,
    idle_p50_ms: f64,
    idle_p99_ms: f64,
    idle_per_sec: f64,
    flood_p50_ms: f64,
    flood_p99_ms: f64,
    flood_per_sec: f64,
    flood_errors: u64,
    signups_per_sec: f64,
    signup_errors: u64,
    peak_rss_mib: f64,
    /// The Argon2 ceiling of the pass, for the signups' share of it.
    argon2_ceiling: f64,
}

impl Mixed {
    pub fn new(
        (me_concurrency, flood_concurrency): (usize, usize),
        idle: &Sample,
        under: &Sample,
        flood: &Sample,
        (peak_rss_mib, argon2_ceiling): (f64, f64),
    ) -> Mixed {
        Mixed {
            me_concurrency,
            flood_concurrency,
            idle_p50_ms: idle.percentile_ms(50.0),
            idle_p99_ms: idle.percentile_ms(99.0),
            idle_per_sec: idle.rate(),
            flood_p50_ms: under.percentile_ms(50.0),
            flood_p99_ms: under.percentile_ms(99.0),
            flood_per_sec: under.rate(),
            flood_errors: under.errors + idle.errors,
            signups_per_sec: flood.rate(),
            signup_errors: flood.errors,
            peak_rss_mib,
            argon2_ceiling,
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "me_concurrency": self.me_concurrency,
            "signup_concurrency": self.flood_concurrency,
            "idle": {"p50_ms": self.idle_p50_ms, "p99_ms": self.idle_p99_ms, "per_sec": self.idle_per_sec},
            "during_signup_flood": {"p50_ms": self.flood_p50_ms, "p99_ms": self.flood_p99_ms,
                "per_sec": self.flood_per_sec, "me_errors": self.flood_errors,
                "signups_per_sec": self.signups_per_sec, "signup_errors": self.signup_errors},
            "argon2_ceiling": self.argon2_ceiling,
            "peak_rss_mib": self.peak_rss_mib,
        })
    }

    pub fn text(&self) -> String {
        format!(
            "GET /auth/me at c={}: idle p50 {:.2} ms, p99 {:.2} ms ({:.0} req/s); during a \
             signup flood at c={} ({:.1} signups/s, {} errors) p50 {:.2} ms, p99 {:.2} ms ({:.0} req/s).",
            self.me_concurrency,
            self.idle_p50_ms,
            self.idle_p99_ms,
            self.idle_per_sec,
            self.flood_concurrency,
            self.signups_per_sec,
            self.signup_errors,
            self.flood_p50_ms,
            self.flood_p99_ms,
            self.flood_per_sec
        )
    }

    pub fn line(&self) -> String {
        format!(
            "mixed: GET /auth/me c={} idle p99 {:.2} ms ({:.0} req/s); during a signup flood (c={}, {:.1} signups/s) p99 {:.2} ms ({:.0} req/s): {:.1}×",
            self.me_concurrency,
            self.idle_p99_ms,
            self.idle_per_sec,
            self.flood_concurrency,
            self.signups_per_sec,
            self.flood_p99_ms,
            self.flood_per_sec,
            self.flood_p99_ms / self.idle_p99_ms.max(1e-9)
        )
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

pub struct Backend {
    pub name: &'static str,
    /// Refresh transactions per second, per concurrency.
    pub refresh_ceiling: Vec<(usize, f64)>,
    /// Every Argon2 ceiling measured (before each signup and login scenario of each pass).
    pub argon2_ceilings: Vec<f64>,
    pub eddsa_us: f64,
    pub hash_threads: usize,
    pub rows: Vec<Row>,
    /// `None` only when profiling other scenarios (`--only`).
    pub mixed: Option<Mixed>,
    /// The mixed load again with rate limits on.
    pub mixed_limits: Option<Mixed>,
    /// The hang-up scenario of each pass: (rate limits on, outcome).
    pub hangups: Vec<(bool, Hangup)>,
    /// Forgot-password timing, known against unknown addresses (rate limits off).
    pub timing: Option<Timing>,
    /// How long a revocation on one instance takes to be refused by another (rate limits off).
    pub propagation: Option<crate::propagation::Propagation>,
}

impl Backend {
    /// The row of the pass with rate limits off.
    fn row(&self, op: Op, concurrency: usize) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.op == op && r.concurrency == concurrency && !r.limits)
    }

    /// A row with rate limits on against the same scenario with them off: (req/s, CPU) ratios.
    fn limits_cost(&self, row: &Row) -> Option<(f64, f64)> {
        let off = self.row(row.op, row.concurrency).filter(|_| row.limits)?;
        Some((
            row.per_sec / off.per_sec.max(1e-9),
            row.cpu_us_per_request / off.cpu_us_per_request.max(1e-9),
        ))
    }

    /// What the "vs" column says of a row: its ceiling (limits off), or the cost of the limits.
    fn versus_text(&self, row: &Row) -> String {
        let ceiling = self.versus(row).map(|(_, s)| s);
        let limits = self
            .limits_cost(row)
            .map(|(rate, cpu)| format!("{rate:.2}× the req/s, {cpu:.2}× the CPU of limits off"));
        [ceiling, limits]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The row of a pass: rate limits on or off.
    fn row_of(&self, op: Op, concurrency: usize, limits: bool) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.op == op && r.concurrency == concurrency && r.limits == limits)
    }

    fn tx_ceiling(&self, concurrency: usize) -> Option<f64> {
        self.refresh_ceiling
            .iter()
            .find(|(c, _)| *c == concurrency)
            .map(|(_, rate)| *rate)
    }

    /// How a row compares with what bounds it (the same pass's `/healthz` for `/auth/me`).
    fn versus(&self, row: &Row) -> Option<(f64, String)> {
        match row.op {
            Op::Signup | Op::Login => row.argon2_ceiling.map(|c| {
                let f = row.per_sec / c;
                (f, format!("{:.0} % of Argon2 ({c:.0}/s)", f * 100.0))
            }),
            Op::Refresh => self.tx_ceiling(row.concurrency).map(|c| {
                let f = row.per_sec / c;
                (f, format!("{:.0} % of the transaction", f * 100.0))
            }),
            Op::Me => self
                .row_of(Op::Healthz, row.concurrency, row.limits)
                .map(|h| {
                    let f = row.per_sec / h.per_sec.max(1e-9);
                    (f, format!("{f:.2}× GET /healthz's req/s"))
                }),
            Op::Healthz | Op::Jwks => None,
        }
    }

    /// The targets of issue 17: (what, measured, met).
    fn targets(&self) -> Vec<(String, String, bool)> {
        let mut t = Vec::new();
        for limits in [false, true] {
            if let (Some(me), Some(h)) = (
                self.row_of(Op::Me, 64, limits),
                self.row_of(Op::Healthz, 64, limits),
            ) {
                let f = me.per_sec / h.per_sec.max(1e-9);
                t.push((
                    format!(
                        "GET /auth/me c=64 ≥ 0.7 × GET /healthz req/s (rate limits {})",
                        on_off(limits)
                    ),
                    format!("{:.0} vs {:.0} req/s ({f:.2}×)", me.per_sec, h.per_sec),
                    f >= 0.7,
                ));
            }
        }
        for op in [Op::Signup, Op::Login] {
            for c in crate::LEVELS {
                if let Some((f, _)) = self.row_of(op, c, true).and_then(|r| self.versus(r)) {
                    t.push((
                        format!(
                            "{} c={c}, default rate limits on, ≥ 90 % of the Argon2 ceiling",
                            op.label()
                        ),
                        format!("{:.0} %", f * 100.0),
                        f >= 0.9,
                    ));
                }
            }
            if let Some(r) = self.row_of(op, 64, true) {
                t.push((
                    format!("{} c=64, rate limits on, p99 ≤ 1.5 × p50", op.label()),
                    format!(
                        "{:.0} ms vs {:.0} ms ({:.2}×)",
                        r.p99_ms,
                        r.p50_ms,
                        r.p99_ms / r.p50_ms.max(1e-9)
                    ),
                    r.p99_ms <= 1.5 * r.p50_ms,
                ));
            }
        }
        if self.name == "SQLite" {
            for c in crate::LEVELS {
                if let Some((f, _)) = self.row(Op::Refresh, c).and_then(|r| self.versus(r)) {
                    t.push((
                        format!("POST /auth/refresh c={c} ≥ 60 % of the transaction ceiling"),
                        format!("{:.0} %", f * 100.0),
                        f >= 0.6,
                    ));
                }
            }
        }
        for (limits, m) in [(false, &self.mixed), (true, &self.mixed_limits)] {
            let Some(m) = m else { continue };
            t.push((
                format!(
                    "GET /auth/me c=8 p99 while {} signups run ≤ 2 × idle p99 (rate limits {})",
                    m.flood_concurrency,
                    on_off(limits)
                ),
                format!(
                    "{:.2} ms vs {:.2} ms idle ({:.1}×)",
                    m.flood_p99_ms,
                    m.idle_p99_ms,
                    m.flood_p99_ms / m.idle_p99_ms.max(1e-9)
                ),
                m.flood_p99_ms <= 2.0 * m.idle_p99_ms,
            ));
            let f = m.signups_per_sec / m.argon2_ceiling;
            t.push((
                format!(
                    "the background signups ≥ 50 % of the Argon2 ceiling (rate limits {})",
                    on_off(limits)
                ),
                format!("{:.0} %", f * 100.0),
                f >= 0.5,
            ));
        }
        if let Some(p) = &self.propagation {
            t.push((
                "a logout on one instance refused on another within 50 ms (max of the rounds)"
                    .into(),
                format!("p50 {:.2} ms, max {:.2} ms", p.p50_ms(), p.max_ms()),
                p.max_ms() <= 50.0,
            ));
        }
        for (limits, h) in &self.hangups {
            t.push((
                format!(
                    "every write flow works after {} abandoned requests (rate limits {})",
                    h.total(|t| t.sent),
                    on_off(*limits)
                ),
                format!(
                    "{}/{} follow-ups as expected, {} answered 5xx",
                    h.checks.iter().filter(|c| c.ok()).count(),
                    h.checks.len(),
                    h.follow_up_5xx()
                ),
                h.writes_ok(),
            ));
            // The requests answered before their client hung up: other clients of a server
            // that abandoned work keeps busy (a hash queue full of dead jobs) would get 5xx.
            let answered = h.total(|t| t.answered);
            let failed = h.total(|t| t.answered_5xx);
            t.push((
                format!(
                    "no 5xx among the requests answered during the hang-ups (rate limits {})",
                    on_off(*limits)
                ),
                format!("{failed} of {answered}"),
                failed == 0,
            ));
        }
        let budget = 64.0 + self.hash_threads as f64 * 19.0;
        let peak = self
            .rows
            .iter()
            .filter(|r| r.concurrency == 64)
            .map(|r| r.peak_rss_mib)
            .chain(self.mixed.as_ref().map(|m| m.peak_rss_mib))
            .fold(0.0, f64::max);
        t.push((
            format!(
                "server RSS at c=64 ≤ 64 MiB + {} hashing threads × 19 MiB = {budget:.0} MiB",
                self.hash_threads
            ),
            format!("{peak:.1} MiB"),
            peak <= budget,
        ));
        t
    }
}

pub struct Run {
    /// `git describe`-like: the commit, and whether the tree had changes.
    pub commit: String,
    /// The command line's settings.
    pub settings: Value,
    pub machine: Machine,
    pub cost: Cost,
    pub duration: Duration,
    pub hashers: Vec<Hasher>,
    pub eddsa_verify_us: f64,
    pub backends: Vec<Backend>,
}

impl Run {
    pub fn json(&self, at: &str) -> Value {
        let m = &self.machine;
        json!({
            "at": at,
            "commit": self.commit,
            "settings": self.settings,
            "machine": {
                "cores": m.cores, "cpu": m.cpu, "memory_gib": m.memory_gib, "kernel": m.kernel,
                "load_average_at_start": m.load_before,
                "server_hash_threads": m.hash_threads,
            },
            "argon2": { "memory_kib": self.cost.memory_kib, "iterations": self.cost.iterations, "parallelism": 1 },
            "duration_secs": self.duration.as_secs(),
            "hashers": self.hashers.iter().map(|h| json!({
                "name": h.name, "chosen": h.chosen,
                "hashes_per_sec_one_thread": h.one_thread,
                "hashes_per_sec_all_cores": h.all_cores,
            })).collect::<Vec<_>>(),
            "eddsa_verify_us": self.eddsa_verify_us,
            "backends": self.backends.iter().map(|b| json!({
                "database": b.name,
                "ceilings": {
                    "argon2_hashes_per_sec": mean(&b.argon2_ceilings),
                    "argon2_hashes_per_sec_each": b.argon2_ceilings,
                    "refresh_transactions_per_sec": b.refresh_ceiling.iter()
                        .map(|(c, r)| json!({"concurrency": c, "per_sec": r})).collect::<Vec<_>>(),
                    "eddsa_verify_us": b.eddsa_us,
                },
                "scenarios": b.rows.iter().map(|r| json!({
                    "endpoint": r.op.label(), "concurrency": r.concurrency,
                    "rate_limits": on_off(r.limits),
                    "requests": r.requests, "errors": r.errors, "rate_limited": r.rate_limited,
                    "per_sec": r.per_sec,
                    "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
                    "server_cpu_us_per_request": r.cpu_us_per_request,
                    "hashing_cpu_us_per_request": r.hashing_us_per_request,
                    "context_switches_per_request": r.switches_per_request,
                    "argon2_ceiling": r.argon2_ceiling,
                    "peak_rss_mib": r.peak_rss_mib,
                    "versus_ceiling": b.versus(r).map(|(f, _)| f),
                    "versus_limits_off": b.limits_cost(r).map(|(rate, cpu)| json!({
                        "per_sec_ratio": rate, "cpu_ratio": cpu,
                    })),
                })).collect::<Vec<_>>(),
                "mixed": b.mixed.as_ref().map(Mixed::json),
                "mixed_rate_limits_on": b.mixed_limits.as_ref().map(Mixed::json),
                "propagation": b.propagation.as_ref().map(crate::propagation::Propagation::json),
                "hangups": b.hangups.iter().map(|(limits, h)| json!({
                    "rate_limits": on_off(*limits),
                    "concurrency": h.concurrency,
                    "elapsed_secs": h.elapsed.as_secs_f64(),
                    "flows": h.tallies.iter().map(|t| json!({
                        "endpoint": t.flow, "sent": t.sent, "abandoned": t.abandoned,
                        "answered_before_hang_up": t.answered, "answered_5xx": t.answered_5xx,
                        "failed": t.failed,
                    })).collect::<Vec<_>>(),
                    "follow_ups": h.checks.iter().map(|c| json!({
                        "check": c.what, "expected": c.expected,
                        "status": c.got.as_ref().ok(), "error": c.got.as_ref().err(),
                        "ok": c.ok(),
                    })).collect::<Vec<_>>(),
                    "follow_up_5xx": h.follow_up_5xx(),
                    "all_follow_up_writes_succeeded": h.writes_ok(),
                })).collect::<Vec<_>>(),
                "forgot_timing": b.timing.as_ref().map(|t| json!({
                    "known_requests": t.known_requests, "unknown_requests": t.unknown_requests,
                    "known_accounts": t.known_accounts,
                    "known_median_ms": t.known_median_ms, "unknown_median_ms": t.unknown_median_ms,
                    "difference_ms": t.difference_ms(),
                    "mann_whitney": {"u": t.test.u, "z": t.test.z, "p_two_sided": t.test.p},
                })),
                "targets": b.targets().into_iter().map(|(what, measured, met)| json!({
                    "target": what, "measured": measured, "met": met,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(
            md,
            "Machine: {} cores ({}), {:.0} GiB, Linux {}, 1-minute load average {} when the run \
             started. Server: release build, {} hashing threads, mail throttle 0, load generator on \
             the same cores over loopback, {} s per scenario; every scenario with rate limits off, then \
             again with the default limits on and each worker a fresh client (X-Forwarded-For from \
             127.0.0.1, a trusted proxy) every {} requests.\n",
            m.cores,
            m.cpu,
            m.memory_gib,
            m.kernel,
            m.load_before,
            m.hash_threads,
            self.duration.as_secs(),
            crate::load::REQUESTS_PER_CLIENT
        );
        let _ = writeln!(
            md,
            "Argon2id m={} KiB, t={}, p=1, in-process:\n\n| implementation | hashes/s, 1 thread | hashes/s, {} threads | |\n|---|---:|---:|---|",
            self.cost.memory_kib, self.cost.iterations, m.cores
        );
        for h in &self.hashers {
            let _ = writeln!(
                md,
                "| {} | {:.1} | {:.1} | {} |",
                h.name,
                h.one_thread,
                h.all_cores,
                if h.chosen { "used by the service" } else { "" }
            );
        }
        let _ = writeln!(
            md,
            "\nOne EdDSA access-token verification: {:.1} µs.",
            self.eddsa_verify_us
        );
        for b in &self.backends {
            let _ = writeln!(md, "\n### {}\n", b.name);
            let tx: Vec<String> = b
                .refresh_ceiling
                .iter()
                .map(|(c, r)| format!("{r:.0}/s at concurrency {c}"))
                .collect();
            let _ = writeln!(
                md,
                "Ceilings: Argon2 {} hashes/s on every core (measured right before each signup and \
                 login scenario: its row's share is of the one before it); refresh transaction {}; \
                 GET /healthz {}.\n",
                b.argon2_ceilings
                    .iter()
                    .map(|c| format!("{c:.1}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                tx.join(", "),
                crate::LEVELS
                    .iter()
                    .filter_map(|c| b.row(Op::Healthz, *c))
                    .map(|r| format!("{:.0} req/s at c={}", r.per_sec, r.concurrency))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let _ = writeln!(
                md,
                "| endpoint | c | limits | req/s | p50 ms | p99 ms | errors | 429 | server CPU µs/req | of which hashing | context switches/req | peak RSS MiB | vs ceiling, or vs limits off |\n\
                 |---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
            );
            // Each scenario with limits off, followed by the same with limits on.
            let mut ordered: Vec<&Row> = b.rows.iter().filter(|r| !r.limits).collect();
            let mut i = 0;
            while i < ordered.len() {
                let off = ordered[i];
                if let Some(on) = b
                    .rows
                    .iter()
                    .find(|r| r.limits && r.op == off.op && r.concurrency == off.concurrency)
                {
                    ordered.insert(i + 1, on);
                    i += 1;
                }
                i += 1;
            }
            ordered.extend(
                b.rows
                    .iter()
                    .filter(|r| r.limits && b.limits_cost(r).is_none()),
            );
            for r in ordered {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {:.1} | {:.2} | {:.2} | {} | {} | {:.0} | {:.0} | {:.1} | {:.1} | {} |",
                    r.op.label(),
                    r.concurrency,
                    on_off(r.limits),
                    r.per_sec,
                    r.p50_ms,
                    r.p99_ms,
                    r.errors,
                    r.rate_limited,
                    r.cpu_us_per_request,
                    r.hashing_us_per_request,
                    r.switches_per_request,
                    r.peak_rss_mib,
                    b.versus_text(r)
                );
            }
            for (limits, x) in [(false, &b.mixed), (true, &b.mixed_limits)] {
                if let Some(x) = x {
                    let _ = writeln!(md, "\nMixed, rate limits {}: {}", on_off(limits), x.text());
                }
            }
            if let Some(p) = &b.propagation {
                let _ = writeln!(md, "\nTwo instances on one database: {}.", p.line());
            }
            for (limits, h) in &b.hangups {
                let _ = writeln!(
                    md,
                    "\nHang-ups, rate limits {}: {} write requests abandoned at random moments on {} \
                     connections at once ({:.1} s); all follow-up writes succeeded: **{}** ({}/{} \
                     as expected, {} answered 5xx).\n\n\
                     | endpoint | sent | abandoned | answered first | of which 5xx | failed |\n|---|---:|---:|---:|---:|---:|",
                    on_off(*limits),
                    h.total(|t| t.sent),
                    h.concurrency,
                    h.elapsed.as_secs_f64(),
                    if h.writes_ok() { "yes" } else { "no" },
                    h.checks.iter().filter(|c| c.ok()).count(),
                    h.checks.len(),
                    h.follow_up_5xx()
                );
                for t in &h.tallies {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | {} | {} |",
                        t.flow, t.sent, t.abandoned, t.answered, t.answered_5xx, t.failed
                    );
                }
                let failures = h.failures();
                if !failures.is_empty() {
                    let _ = writeln!(md, "\nFailed follow-ups: {}.", failures.join("; "));
                }
            }
            if let Some(t) = &b.timing {
                let _ = writeln!(
                    md,
                    "\nForgot-password timing (rate limits off, mail throttle 0; {} known addresses of \
                     {} accounts and {} unknown ones, interleaved at random, one at a time): median \
                     {:.3} ms known, {:.3} ms unknown, difference {:+.3} ms; Mann–Whitney U {:.0}, \
                     z {:.2}, two-sided p {:.2e}{}.",
                    t.known_requests,
                    t.known_accounts,
                    t.unknown_requests,
                    t.known_median_ms,
                    t.unknown_median_ms,
                    t.difference_ms(),
                    t.test.u,
                    t.test.z,
                    t.test.p,
                    if t.test.p < 0.01 {
                        ": the answer time tells whether an account exists"
                    } else {
                        ": no measurable difference"
                    }
                );
            }
            let _ = writeln!(md, "\n| target | measured | met |\n|---|---|---|");
            for (what, measured, met) in b.targets() {
                let _ = writeln!(
                    md,
                    "| {what} | {measured} | {} |",
                    if met { "yes" } else { "**no**" }
                );
            }
        }
        md
    }

    /// Writes `<timestamp>.json`/`.md` and `latest.json`/`.md` into `dir`; returns the paths.
    /// The scenarios more than 10 % worse than in the `latest.json` it replaces are printed and
    /// listed in the Markdown.
    pub fn write(&self, dir: &Path) -> anyhow::Result<Vec<String>> {
        let previous: Option<Value> = std::fs::read_to_string(dir.join("latest.json"))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok());
        let now = time::OffsetDateTime::now_utc();
        let at = now
            .format(&time::format_description::well_known::Rfc3339)
            .context("cannot format the time")?;
        let stamp = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        );
        let current = self.json(&at);
        let worse = previous
            .as_ref()
            .map(|p| regressions(p, &current))
            .unwrap_or_default();
        let mut md = format!("## Benchmark, {at}\n\n{}", self.markdown());
        let against = previous
            .as_ref()
            .and_then(|p| p["at"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "nothing".to_owned());
        let _ = writeln!(
            md,
            "\nAgainst the previous run ({against}): {}",
            match worse.is_empty() {
                true => "no scenario more than 10 % worse.".to_owned(),
                false => format!("more than 10 % worse: {}.", worse.join("; ")),
            }
        );
        for line in &worse {
            println!("REGRESSION (>10 % worse than the previous latest.json): {line}");
        }
        if let Some(note) = previous.as_ref().and_then(|p| machine_changed(p, &current)) {
            println!("{note}");
            let _ = writeln!(md, "\n{note}");
        }
        let json = serde_json::to_string_pretty(&current)? + "\n";
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut written = Vec::new();
        for (name, text) in [
            (format!("{stamp}.json"), &json),
            (format!("{stamp}.md"), &md),
            ("latest.json".to_owned(), &json),
            ("latest.md".to_owned(), &md),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            written.push(path.display().to_string());
        }
        Ok(written)
    }
}

/// The commit the benchmark was built from, `+dirty` when the work tree had changes.
pub fn git_commit() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = run(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    let dirty =
        run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    match dirty {
        true => format!("{commit}+dirty"),
        false => commit,
    }
}

/// A note when the machine itself measured more than 10 % slower or faster than in `previous`
/// (the chosen hasher on one thread, one EdDSA verification: code that no change to the service
/// touches), so that the scenarios flagged against it are read as a different machine's speed.
fn machine_changed(previous: &Value, current: &Value) -> Option<String> {
    let hashes = |run: &Value| {
        run["hashers"]
            .as_array()?
            .iter()
            .find(|h| h["chosen"] == true)?["hashes_per_sec_one_thread"]
            .as_f64()
    };
    let verify = |run: &Value| run["eddsa_verify_us"].as_f64();
    let (h0, h1) = (hashes(previous)?, hashes(current)?);
    let (v0, v1) = (verify(previous)?, verify(current)?);
    let off = |ratio: f64| !(0.9..=1.1).contains(&ratio);
    (off(h1 / h0) || off(v0 / v1)).then(|| {
        format!(
            "The machine itself differs from the previous run's: Argon2 on one thread {h1:.1} \
             hashes/s (was {h0:.1}), one EdDSA verification {v1:.1} µs (was {v0:.1}). Scenarios \
             flagged against that run compare machine speeds as much as code."
        )
    })
}

/// The scenarios of `current` more than 10 % worse than the same in `previous` (fewer req/s, or
/// a higher p99), as text.
fn regressions(previous: &Value, current: &Value) -> Vec<String> {
    let key = |b: &Value, s: &Value| {
        format!(
            "{} {} c={} limits {}",
            b["database"].as_str().unwrap_or("?"),
            s["endpoint"].as_str().unwrap_or("?"),
            s["concurrency"],
            s["rate_limits"].as_str().unwrap_or("?")
        )
    };
    let scenarios = |run: &Value| -> Vec<(String, f64, f64)> {
        run["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|b| {
                b["scenarios"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(move |s| {
                        (
                            key(b, s),
                            s["per_sec"].as_f64().unwrap_or(f64::NAN),
                            s["p99_ms"].as_f64().unwrap_or(f64::NAN),
                        )
                    })
            })
            .collect()
    };
    let before = scenarios(previous);
    let mut worse = Vec::new();
    for (name, rate, p99) in scenarios(current) {
        let Some((_, old_rate, old_p99)) = before.iter().find(|(n, _, _)| *n == name) else {
            continue;
        };
        if rate < 0.9 * old_rate {
            worse.push(format!("{name}: {rate:.1} req/s, was {old_rate:.1}"));
        }
        if p99 > 1.1 * old_p99 {
            worse.push(format!("{name}: p99 {p99:.2} ms, was {old_p99:.2}"));
        }
    }
    worse
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}
