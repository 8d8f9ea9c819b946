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
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("latchkey");
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
            registry: Registry::default(),
        };
        let r = &mut registry;
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
        Metrics { registry, ..m }
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
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

pub fn label(name: &'static str, value: impl Into<String>) -> Label {
    (name, value.into())
}
