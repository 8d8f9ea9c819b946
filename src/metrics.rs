//! Prometheus metrics, kept in one explicit registry that lives in the application state (no
//! global recorder): handlers and middleware count through `AppState::metrics`, and GET /metrics
//! renders the registry after refreshing the gauges that are read from the database at scrape
//! time (pool usage, outbox backlog, and the invariant: accounts without a profile, always 0).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

pub fn label(name: &'static str, value: impl Into<String>) -> Label {
    (name, value.into())
}
