//! Every SQL statement of the project, and nothing else.
//!
//! One schema and one set of statements serve SQLite and PostgreSQL through sqlx's `Any` driver:
//! ids are UUID text, timestamps are BIGINT milliseconds, placeholders are `$n` (both drivers
//! accept them). Store functions take an executor (`&mut *tx` inside a flow's transaction, or a
//! pool for lone reads); they never begin or commit. The flow that begins a transaction is the one
//! that commits it.
//!
//! SQLite: the database is opened in WAL mode with a busy timeout, readers share a pool, and every
//! write transaction goes through a single-connection writer pool and starts with
//! `BEGIN IMMEDIATE`, so it takes the write lock at its start and never fails half-way to upgrade
//! a read lock. PostgreSQL: one pool for both.

pub mod admin;
pub mod audit;
pub mod email_keys;
pub mod keys;
pub mod mail_throttle;
pub mod one_time_tokens;
pub mod outbox;
pub mod rate_limits;
pub mod sessions;
pub mod users;

use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Executor};

/// A write transaction of one flow.
pub type Tx = sqlx::Transaction<'static, Any>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    read: AnyPool,
    write: AnyPool,
    backend: Backend,
}

impl Store {
    pub async fn connect(url: &SecretString) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let url = url.expose_secret();
        if url.starts_with("sqlite:") {
            let url = create_if_missing(url);
            let options = || {
                AnyPoolOptions::new()
                    .acquire_timeout(Duration::from_secs(10))
                    // A connection to a local file cannot go stale, and sqlx's default ping before
                    // every acquire is one more round trip to the connection's worker thread:
                    // on GET /auth/me it was a quarter of the server's CPU (see the README's
                    // "Performance").
                    .test_before_acquire(false)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute(
                                "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; \
                                 PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
            };
            let write = options()
                .max_connections(1)
                .connect(&url)
                .await
                .context("cannot open the SQLite database")?;
            let read = options()
                .max_connections(8)
                .connect(&url)
                .await
                .context("cannot open the SQLite database")?;
            Ok(Store {
                read,
                write,
                backend: Backend::Sqlite,
            })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = AnyPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(5))
                .connect(url)
                .await
                .context("cannot connect to PostgreSQL")?;
            Ok(Store {
                read: pool.clone(),
                write: pool,
                backend: Backend::Postgres,
            })
        } else {
            bail!("database_url must start with sqlite:// or postgres://")
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the migrations that have not run yet.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::migrate!("./migrations")
            .run(&self.write)
            .await
            .context("migrations failed")
    }

    /// Begins a write transaction: the one way every flow starts.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.write.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.write.begin().await,
        }
    }

    /// The pool for reads outside a transaction.
    pub fn reader(&self) -> &AnyPool {
        &self.read
    }

    /// Connections (in use, idle) of the read and the write pool; on PostgreSQL they are one pool.
    pub fn pool_usage(&self) -> [(&'static str, u32, usize); 2] {
        let usage = |pool: &AnyPool| {
            let idle = pool.num_idle();
            (
                pool.size()
                    .saturating_sub(u32::try_from(idle).unwrap_or(u32::MAX)),
                idle,
            )
        };
        let (read_busy, read_idle) = usage(&self.read);
        let (write_busy, write_idle) = usage(&self.write);
        [
            ("read", read_busy, read_idle),
            ("write", write_busy, write_idle),
        ]
    }

    /// Whether the database answers (for /readyz).
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.read)
            .await
            .map(|_| ())
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

/// `sqlite://file.db` does not create a missing file unless asked to.
fn create_if_missing(url: &str) -> String {
    if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// An id read back from the database: stored as UUID text, so a failure here is a bug or a
/// corrupt row, never the client's doing.
pub fn parse_id(id: &str) -> anyhow::Result<uuid::Uuid> {
    uuid::Uuid::parse_str(id).with_context(|| format!("stored id {id:?} is not a UUID"))
}

/// Whether `err` is a unique-constraint violation (the database deciding uniqueness).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.is_unique_violation())
}
