//! Prometheus metrics, kept in one explicit registry that lives in the application state (no
//! global recorder): handlers and middleware count through `AppState::metrics`, and GET /metrics
//! renders the registry.
//!
//! The gauges read from the database (outbox backlogs, dead items, and the invariant: accounts
//! without a profile, always 0) are refreshed by a background job every `metrics_refresh`
//! (`refresh_from_database`), never by a scrape: a scrape costs no query, however many
//! scrapers there are (the invariant is a full users × profiles count), and /metrics keeps
//! answering from what was last read while the database is down; `db_gauges_read_timestamp
//! _seconds` says when that was. What lives in memory (pool usage, the hashing queue, the
//! process's CPU, memory and open files) is read at scrape time.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::app::AppState;
use crate::store;

/// One label: name and value.
pub type Label = (&'static str, String);

fn latency_buckets() -> Histogram {
    // 0.5 ms to about 8 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    /// Requests by route template, method and status.
    pub requests: Family<[Label; 3], Counter>,
    /// Request latency by route template and method.
    pub request_seconds: Family<[Label; 2], Histogram, fn() -> Histogram>,
    pub signups: Counter,
    /// Logins by outcome: `success`, `failure`.
    pub logins: Family<[Label; 1], Counter>,
    /// Refreshes by outcome: `rotated`, `grace`, `rejected`.
    pub refreshes: Family<[Label; 1], Counter>,
    pub reuse_detected: Counter,
    /// Sessions revoked, by reason.
    pub revocations: Family<[Label; 1], Counter>,
    /// Password hashes running or waiting for a hashing thread.
    pub hash_queue: Gauge,
    /// Database connections by pool (`read`, `write`) and state (`in_use`, `idle`).
    pub db_connections: Family<[Label; 2], Gauge>,
    /// Emails waiting in the outbox, and the age of the oldest.
    pub outbox_backlog: Gauge,
    pub outbox_oldest_seconds: Gauge,
    /// Webhook delivery attempts by event type and outcome (`delivered`, `retried`, `dead`).
    pub webhook_deliveries: Family<[Label; 2], Counter>,
    /// Webhook deliveries waiting (neither delivered nor dead), and the age of the oldest.
    pub webhook_backlog: Gauge,
    pub webhook_oldest_seconds: Gauge,
    /// The contract's invariant: must read 0.
    pub accounts_without_profile: Gauge,
    /// Emails and webhook deliveries given up (dead) and still kept.
    pub outbox_dead: Gauge,
    pub webhook_dead: Gauge,
    /// Unix time (seconds) of the last successful read of the gauges above; 0: never yet.
    pub db_gauges_read_at: Gauge,
    /// Email delivery attempts by outcome (`delivered`, `retried`, `dead`).
    pub mail_deliveries: Family<[Label; 1], Counter>,
    /// Age of the key new access tokens are signed with.
    pub signing_key_age: Gauge,
    /// The process, read from /proc at scrape time (Linux; absent elsewhere).
    process_cpu: Counter<f64, AtomicU64>,
    process_memory: Gauge,
    process_fds: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_buckets),
            signups: Counter::default(),
            logins: Family::default(),
            refreshes: Family::default(),
            reuse_detected: Counter::default(),
            revocations: Family::default(),
            hash_queue: Gauge::default(),
            db_connections: Family::default(),
            outbox_backlog: Gauge::default(),
            outbox_oldest_seconds: Gauge::default(),
            webhook_deliveries: Family::default(),
            webhook_backlog: Gauge::default(),
            webhook_oldest_seconds: Gauge::default(),
            accounts_without_profile: Gauge::default(),
            outbox_dead: Gauge::default(),
            webhook_dead: Gauge::default(),
            db_gauges_read_at: Gauge::default(),
            mail_deliveries: Family::default(),
            signing_key_age: Gauge::default(),
            process_cpu: Counter::default(),
            process_memory: Gauge::default(),
            process_fds: Gauge::default(),
            registry: Registry::default(),
        };
        // The process's metrics under their standard names (`process_*`, as Prometheus client
        // libraries name them, so that stock dashboards find them); the rest under `latchkey_`.
        registry.register(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            m.process_cpu.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            m.process_memory.clone(),
        );
        registry.register(
            "process_open_fds",
            "Open file descriptors",
            m.process_fds.clone(),
        );
        let build = Family::<[Label; 1], Gauge>::default();
        build
            .get_or_create(&[label("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        let r = registry.sub_registry_with_prefix("latchkey");
        r.register("build_info", "The running version (value 1)", build);
        r.register(
            "http_requests",
            "HTTP requests by route, method and status",
            m.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            m.request_seconds.clone(),
        );
        r.register("signups", "Accounts created", m.signups.clone());
        r.register("logins", "Login attempts by outcome", m.logins.clone());
        r.register(
            "refreshes",
            "Refresh attempts by outcome",
            m.refreshes.clone(),
        );
        r.register(
            "refresh_reuse_detected",
            "Spent refresh tokens presented again",
            m.reuse_detected.clone(),
        );
        r.register(
            "session_revocations",
            "Sessions revoked, by reason",
            m.revocations.clone(),
        );
        r.register(
            "password_hash_jobs",
            "Password hashes running or waiting",
            m.hash_queue.clone(),
        );
        r.register(
            "db_connections",
            "Database connections by pool and state",
            m.db_connections.clone(),
        );
        r.register(
            "outbox_backlog",
            "Emails not yet delivered",
            m.outbox_backlog.clone(),
        );
        r.register(
            "outbox_oldest_age_seconds",
            "Age of the oldest undelivered email",
            m.outbox_oldest_seconds.clone(),
        );
        r.register(
            "webhook_deliveries",
            "Webhook delivery attempts by event type and outcome (delivered, retried, dead)",
            m.webhook_deliveries.clone(),
        );
        r.register(
            "webhook_outbox_backlog",
            "Webhook deliveries not yet delivered or dead",
            m.webhook_backlog.clone(),
        );
        r.register(
            "webhook_outbox_oldest_age_seconds",
            "Age of the oldest webhook delivery waiting",
            m.webhook_oldest_seconds.clone(),
        );
        r.register(
            "accounts_without_profile",
            "Users without a profile: the all-or-nothing invariant, must be 0",
            m.accounts_without_profile.clone(),
        );
        r.register(
            "outbox_dead",
            "Emails given up after their last attempt, kept until pruned",
            m.outbox_dead.clone(),
        );
        r.register(
            "webhook_outbox_dead",
            "Webhook deliveries given up, kept until retried",
            m.webhook_dead.clone(),
        );
        r.register(
            "db_gauges_read_timestamp_seconds",
            "Unix time the database-derived gauges were last read (0: never); they are stale \
             when this stops moving",
            m.db_gauges_read_at.clone(),
        );
        r.register(
            "mail_deliveries",
            "Email delivery attempts by outcome (delivered, retried, dead)",
            m.mail_deliveries.clone(),
        );
        r.register(
            "signing_key_age_seconds",
            "Age of the key new access tokens are signed with",
            m.signing_key_age.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Registers the rate limiter's refusals by limit (`Limiter::refusals`).
    pub fn with_rate_limits(mut self, refusals: Family<[Label; 1], Counter>) -> Metrics {
        self.registry.sub_registry_with_prefix("latchkey").register(
            "rate_limited",
            "Requests refused with 429, by limit",
            refusals,
        );
        self
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Counts one revoked session (or several) for `reason`.
    pub fn revoked(&self, reason: crate::store::sessions::Reason, sessions: u64) {
        self.revocations
            .get_or_create(&[label("reason", reason.as_str())])
            .inc_by(sessions);
    }

    /// Counts an outcome of a family with one `outcome` label.
    pub fn outcome(family: &Family<[Label; 1], Counter>, outcome: &'static str) {
        family.get_or_create(&[label("outcome", outcome)]).inc();
    }
}

/// Reads the database-derived gauges once, each query bounded by `database_timeout`; on an error
/// the gauges keep their last values and `db_gauges_read_at` does not move.
pub async fn refresh_from_database(state: &AppState) -> Result<(), sqlx::Error> {
    let store = &state.store;
    let db = store.reader();
    let m = &state.metrics;
    let (backlog, oldest) = store.bounded(store::outbox::backlog(db)).await?;
    let now = state.clock.now();
    let age = |oldest: Option<i64>| oldest.map_or(0, |created| (now - created).max(0) / 1000);
    m.outbox_backlog.set(backlog);
    m.outbox_oldest_seconds.set(age(oldest));
    m.outbox_dead
        .set(store.bounded(store::outbox::dead(db)).await?);
    let (backlog, oldest) = store.bounded(store::webhooks::backlog(db)).await?;
    m.webhook_backlog.set(backlog);
    m.webhook_oldest_seconds.set(age(oldest));
    m.webhook_dead
        .set(store.bounded(store::webhooks::dead(db)).await?);
    m.accounts_without_profile.set(
        store
            .bounded(store::users::count_without_profile(db))
            .await?,
    );
    m.db_gauges_read_at.set(now / 1000);
    Ok(())
}

/// Sets what is read from memory at scrape time: pool usage and the hashing queue.
pub fn refresh_in_memory(state: &AppState) {
    let m = &state.metrics;
    for (pool, in_use, idle) in state.store.pool_usage() {
        m.db_connections
            .get_or_create(&[label("pool", pool), label("state", "in_use")])
            .set(i64::from(in_use));
        m.db_connections
            .get_or_create(&[label("pool", pool), label("state", "idle")])
            .set(i64::try_from(idle).unwrap_or(i64::MAX));
    }
    m.hash_queue
        .set(i64::try_from(state.hasher.jobs_in_flight()).unwrap_or(i64::MAX));
    let age = (state.clock.now() - state.keys.signing_key_created_at()).max(0) / 1000;
    m.signing_key_age.set(age);
    if let Some(process) = process::read() {
        let delta = process.cpu_seconds - m.process_cpu.get();
        if delta > 0.0 {
            m.process_cpu.inc_by(delta);
        }
        m.process_memory.set(process.resident_bytes);
        m.process_fds.set(process.open_fds);
    }
}

/// The process's own numbers from /proc (Linux), without a crate: CPU time from
/// `/proc/self/stat` (fields 14 and 15, in clock ticks), resident pages from `/proc/self/statm`,
/// and the entries of `/proc/self/fd`.
mod process {
    pub struct Process {
        pub cpu_seconds: f64,
        pub resident_bytes: i64,
        pub open_fds: i64,
    }

    #[cfg(target_os = "linux")]
    pub fn read() -> Option<Process> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) is in parentheses and may hold spaces: count from after it.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
        // Fields 14 (utime) and 15 (stime), numbered from 1 with field 3 at index 0.
        let (user, system) = (ticks(11)?, ticks(12)?);
        // SAFETY: sysconf only reads a configuration value.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if per_second <= 0 || page <= 0 {
            return None;
        }
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let resident: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
        Some(Process {
            cpu_seconds: (user + system) as f64 / per_second as f64,
            resident_bytes: resident.saturating_mul(page),
            open_fds: i64::try_from(open_fds).unwrap_or(i64::MAX),
        })
    }

    #[cfg(not(target_os = "linux"))]
    pub fn read() -> Option<Process> {
        None
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

pub fn label(name: &'static str, value: impl Into<String>) -> Label {
    (name, value.into())
}
