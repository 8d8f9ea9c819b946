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
pub mod identities;
pub mod keys;
pub mod liveness;
pub mod mail_throttle;
pub mod mfa;
pub mod one_time_tokens;
pub mod outbox;
pub mod passkeys;
pub mod passwordless;
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

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};

use crate::config::SqliteSynchronous;
use crate::hooks::{DynHooks, NoHooks};
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
    /// `database_timeout`: bounds `ping` (and, on PostgreSQL, every acquire and transaction).
    timeout: Duration,
    /// The endpoints the flows queue their webhook events for (none until configured).
    webhooks: webhooks::Routes,
    /// The embedding application's hooks into the account flows (none in the standalone server).
    hooks: Arc<dyn DynHooks>,
    /// What authenticated requests would read on every call (see `liveness`).
    liveness: Arc<liveness::Liveness>,
}

impl Store {
    /// Opens the pools. `timeout` (`database_timeout`) is how long a request may wait for the
    /// database before it is answered 503 `unavailable`:
    ///
    /// - PostgreSQL: acquiring a connection, which includes sqlx's liveness check of an idle
    ///   connection (`SELECT 1`-like ping, on by default) or the opening of a new one, is bounded
    ///   by it. A connection whose peer vanished (a black-holed route: no RST, TCP retransmits for
    ///   ~15 minutes) fails that check in time, is dropped, and the next acquire opens a new one;
    ///   once the database is back the pool refills by itself, no restart needed. A transaction
    ///   already running when the database vanishes is bounded too (`tx.rs`), so no worker and no
    ///   pool slot hangs on it.
    /// - SQLite: the file is local and cannot become unreachable; its single writer connection
    ///   queues every write transaction, and a burst of signups may well wait for it longer than
    ///   a second without anything being wrong. So acquisitions keep their generous bound
    ///   (`SQLITE_ACQUIRE`, inside the request timeout); only /readyz's probe uses `timeout`.
    pub async fn connect(
        url: &SecretString,
        durability: SqliteSynchronous,
        timeout: Duration,
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
                    .acquire_timeout(SQLITE_ACQUIRE)
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
            Ok(Store::new(read, write, Backend::Sqlite, timeout))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = guarded(AnyPoolOptions::new())
                .max_connections(16)
                .acquire_timeout(timeout)
                // The default, said aloud: the ping before handing out an idle connection is what
                // finds a dead one within `timeout` instead of a query hanging on it.
                .test_before_acquire(true)
                .connect(url)
                .await
                .context("cannot connect to PostgreSQL")?;
            Ok(Store::new(pool.clone(), pool, Backend::Postgres, timeout))
        } else {
            bail!("database_url must start with sqlite:// or postgres://")
        }
    }

    fn new(read: AnyPool, write: AnyPool, backend: Backend, timeout: Duration) -> Store {
        Store {
            read,
            write,
            backend,
            timeout,
            webhooks: webhooks::Routes::default(),
            hooks: Arc::new(NoHooks),
            liveness: Arc::default(),
        }
    }

    /// The liveness cache of this instance.
    pub fn liveness(&self) -> &liveness::Liveness {
        &self.liveness
    }

    /// A store on the embedding application's pool (library mode): one pool for reads and
    /// writes, on either database. On SQLite the database is switched to WAL (a setting kept in
    /// the file) so that reads never wait for the writer, and the pool's connections must wait
    /// for the write lock rather than fail at once: sqlx's SQLite connections do (a 5 s busy
    /// timeout by default), and a pool whose connections do not is refused here.
    pub async fn from_pool(pool: AnyPool, timeout: Duration) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let mut conn = pool
            .acquire()
            .await
            .context("cannot connect to the application's database")?;
        let backend = match conn.backend_name() {
            "SQLite" => Backend::Sqlite,
            "PostgreSQL" => Backend::Postgres,
            other => bail!("latchkey runs on SQLite or PostgreSQL, not {other}"),
        };
        if backend == Backend::Sqlite {
            let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode = WAL")
                .fetch_one(&mut *conn)
                .await?;
            let (busy,): (i64,) = sqlx::query_as("PRAGMA busy_timeout")
                .fetch_one(&mut *conn)
                .await?;
            if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
                bail!("the SQLite database cannot be switched to WAL mode (it is in {mode} mode)");
            }
            if busy <= 0 {
                bail!(
                    "the application's SQLite pool has no busy timeout: concurrent writes would \
                     fail at once with \"database is locked\"; set one (PRAGMA busy_timeout)"
                );
            }
        }
        drop(conn);
        Ok(Store::new(pool.clone(), pool, backend, timeout))
    }

    /// The application's hooks into the account flows (library mode).
    pub(crate) fn with_hooks(mut self, hooks: Arc<dyn DynHooks>) -> Store {
        self.hooks = hooks;
        self
    }

    pub(crate) fn hooks(&self) -> &Arc<dyn DynHooks> {
        &self.hooks
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the migrations that have not run yet.
    ///
    /// In library mode the application's own migrations may share the database and sqlx's one
    /// `_sqlx_migrations` table: versions applied there that latchkey does not know are the
    /// application's and are left alone (latchkey's versions are small numbers, `0001…`; an
    /// application uses sqlx's timestamp versions, which cannot collide).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let mut migrator = sqlx::migrate!("./migrations");
        migrator.set_ignore_missing(true);
        migrator.run(&self.write).await.context("migrations failed")
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

    /// Connections (name, in use, idle) of each pool: SQLite's `read` and `write` pools, or
    /// PostgreSQL's one pool, `main` (counted once, not as a read and a write pool).
    pub fn pool_usage(&self) -> Vec<(&'static str, u32, usize)> {
        let usage = |name, pool: &AnyPool| {
            let idle = pool.num_idle();
            let busy = pool
                .size()
                .saturating_sub(u32::try_from(idle).unwrap_or(u32::MAX));
            (name, busy, idle)
        };
        match self.backend {
            Backend::Sqlite => vec![usage("read", &self.read), usage("write", &self.write)],
            Backend::Postgres => vec![usage("main", &self.read)],
        }
    }

    /// `database_timeout`.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether the database answers (for /readyz), within `database_timeout`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        self.bounded(sqlx::query("SELECT 1").execute(&self.read))
            .await
            .map(|_| ())
    }

    /// `work` within `database_timeout`, or `PoolTimedOut` (a 503 `unavailable`): for reads that
    /// must not wait on a database that vanished, such as the metrics refresh.
    pub async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut))
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

/// How long a SQLite connection may be waited for: writers queue on the one writer connection, and
/// a burst may keep the queue busy for seconds; the request timeout (10 s by default) ends a
/// request first.
const SQLITE_ACQUIRE: Duration = Duration::from_secs(10);

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
