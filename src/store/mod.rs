//! Every SQL statement of the project, and nothing else.
//!
//! One schema and one set of statements serve SQLite and PostgreSQL through sqlx's `Any` driver:
//! ids are UUID text, timestamps are BIGINT milliseconds, placeholders are `$n` (both drivers
//! accept them).
//!
//! The store is an API of use cases that own their transactions: each public write method (signup,
//! login, rotate a refresh token, reset a password, …) takes its prepared input (hashes, opaque
//! tokens, rendered emails: nothing is computed or rendered while a write lock is held), begins,
//! writes with its preconditions inside the statements (`AND password_hash = $verified AND
//! disabled_at IS NULL`, `AND revoked_at IS NULL`, checked row counts), commits or rolls back,
//! and returns a typed outcome. They all go through `Store::write` (`tx.rs`), the only code that
//! begins a transaction, which also explains why a dropped request never leaves one half-done.
//! The statement functions of the table modules take an executor: a flow's connection, or the
//! read pool (`Store::reader`) for lone reads; those that write are private to the store.
//!
//! SQLite: the database is opened in WAL mode with a busy timeout, readers share a pool, and every
//! write transaction goes through a single-connection writer pool and starts with
//! `BEGIN IMMEDIATE`, so it takes the write lock at its start and never fails half-way to upgrade
//! a read lock. PostgreSQL: one pool for both.

pub mod admin;
pub mod admin_keys;
pub mod audit;
pub mod directory;
pub mod email_keys;
pub mod keys;
pub mod mail_throttle;
pub mod one_time_tokens;
pub mod outbox;
pub mod rate_limits;
pub mod reset_requests;
pub mod sessions;
pub mod users;
pub mod webhooks;

mod constraint;
pub mod flows;
mod lease;
mod tx;

pub use constraint::Constraint;

use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};

use crate::config::SqliteSynchronous;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};

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
    /// The endpoints the flows queue their webhook events for (none until configured).
    webhooks: webhooks::Routes,
}

impl Store {
    pub async fn connect(
        url: &SecretString,
        durability: SqliteSynchronous,
    ) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let url = url.expose_secret();
        if url.starts_with("sqlite:") {
            create_private(url)?;
            let url = create_if_missing(url);
            let pragmas = format!(
                "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; \
                 PRAGMA foreign_keys = ON; PRAGMA synchronous = {};",
                durability.pragma()
            );
            let options = || {
                let pragmas = pragmas.clone();
                guarded(AnyPoolOptions::new())
                    .acquire_timeout(Duration::from_secs(10))
                    // A connection to a local file cannot go stale, and sqlx's default ping before
                    // every acquire is one more round trip to the connection's worker thread:
                    // on GET /auth/me it was a quarter of the server's CPU (see the README's
                    // "Performance").
                    .test_before_acquire(false)
                    .after_connect(move |conn, _| {
                        let pragmas = pragmas.clone();
                        Box::pin(async move {
                            conn.execute(pragmas.as_str()).await?;
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
                webhooks: webhooks::Routes::default(),
            })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = guarded(AnyPoolOptions::new())
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(5))
                .connect(url)
                .await
                .context("cannot connect to PostgreSQL")?;
            Ok(Store {
                read: pool.clone(),
                write: pool,
                backend: Backend::Postgres,
                webhooks: webhooks::Routes::default(),
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

    /// The pool for reads outside a transaction.
    pub fn reader(&self) -> &AnyPool {
        &self.read
    }

    /// The write pool itself, for tests that put a connection into the state a dropped
    /// transaction leaves behind and check that the store recovers. Not for production code:
    /// writes go through the use cases.
    #[doc(hidden)]
    pub fn write_pool_for_tests(&self) -> &AnyPool {
        &self.write
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

/// The hooks every pool gets: a connection sqlx counts inside a transaction is closed instead of
/// handed out (`before_acquire`) or kept (`after_release`); see `tx.rs`.
fn guarded(options: AnyPoolOptions) -> AnyPoolOptions {
    options
        .before_acquire(|conn, _| Box::pin(async move { Ok(tx::outside_transaction(conn)) }))
        .after_release(|conn, _| Box::pin(async move { Ok(tx::outside_transaction(conn)) }))
}

/// `sqlite://file.db` does not create a missing file unless asked to.
/// Creates a new SQLite database file readable by its owner only (0600): it holds password
/// hashes, and unsent outbox rows hold live links. SQLite gives the `-wal` and `-shm` files the
/// main file's permissions. An existing file keeps its mode, with a warning when others can read
/// it.
fn create_private(url: &str) -> anyhow::Result<()> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
        return Ok(());
    }
    let path = std::path::Path::new(path);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                let mode = std::fs::metadata(path)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        file = %path.display(),
                        mode = format!("{:o}", mode & 0o777),
                        "the SQLite database can be read by other users; chmod 600 it"
                    );
                }
            }
            Err(err) => {
                return Err(err).with_context(|| {
                    format!("cannot create the SQLite database {}", path.display())
                });
            }
        }
    }
    Ok(())
}

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
