//! The one way to a write transaction: `Store::write`, private to the store.
//!
//! Every use case of the store is one call of `write` with its prepared input and a flow: an
//! async function that runs its statements on the transaction's connection and says whether to
//! commit or roll back (`Done`). Nothing outside `store` can begin, hold or commit a transaction,
//! so a forgotten commit or a half-done flow cannot be written in a handler.
//!
//! # Why a flow that has begun always ends, and its connection comes back clean
//!
//! axum drops a handler's future when the client hangs up or the request timeout fires, and any
//! `.await` is a point where that can happen. A transaction dropped there is the dangerous case:
//! sqlx 0.8's SQLite `begin_with` raises the connection's transaction depth and then awaits once
//! more; dropped between the two it leaves no `Transaction` guard, so nothing ever rolls back and
//! the connection goes back to the pool inside an orphaned transaction, refusing every later
//! `BEGIN` (transact-rs/sqlx #3932). A write that SQLite rolls back by itself (a full disk) leaves
//! the same mismatch. Three things together rule this out:
//!
//! 1. **The flow runs in a task of its own** (`tokio::spawn`), from acquiring the connection to the
//!    commit or rollback. Dropping the caller's future drops only a `JoinHandle`: the task is not
//!    cancelled, so the transaction is always committed or rolled back by this code. (Only the
//!    runtime shutting down can stop it, and then every connection closes with it.) A flow whose
//!    caller is gone by the time it would commit rolls back instead: a client that hung up, or a
//!    request that timed out with 503, changed nothing (a caller that goes away during the
//!    `COMMIT` itself finds it done).
//! 2. **A connection whose state is not known to be clean is closed, never returned**: after any
//!    error (but a serialization failure that rolled back cleanly), after a panic inside the flow,
//!    or whenever sqlx still counts it inside a transaction afterwards. The pool opens a fresh
//!    one, and a flow whose `BEGIN` failed is tried again on it.
//! 3. **The pools refuse such a connection at both ends** (`Store::connect` installs
//!    `before_acquire` and `after_release` hooks that close any connection sqlx counts inside a
//!    transaction), so no path, not even one outside this module, is handed one.
//!
//! # A database that vanishes mid-transaction
//!
//! On PostgreSQL every attempt, from `BEGIN` to `COMMIT`, is bounded by `database_timeout`. The
//! transactions of this service are a few indexed statements; one still running after that long
//! is waiting on a database that does not answer (a black-holed route keeps a TCP connection
//! "open" for a quarter of an hour while the kernel retransmits), and without the bound a
//! request would wait out the request timeout and a background worker would hang with a pool
//! slot. The attempt ends with `PoolTimedOut` (503 `unavailable`); its connection, in a state
//! nobody knows, is detached from the pool and dropped (its socket closed at once, where a
//! graceful close or sqlx's ping on release would wait on the dead peer), and the server rolls
//! back what it had. SQLite has no such bound: a local file does not vanish, and a flow there
//! waits only for the writer, which the request timeout bounds.
//!
//! # Retries
//!
//! Under SERIALIZABLE isolation (the default of CockroachDB and YugabyteDB, and a setting of
//! PostgreSQL) a transaction may fail with a serialization failure (SQLSTATE 40001) or a deadlock
//! (40P01) and must be run again from its start. `write` does that, a bounded number of times with
//! a short random pause, which is why a flow takes its input by reference and may run more than
//! once: everything it writes comes from the prepared input, never from a previous attempt.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection as _};
use tokio::sync::oneshot;
use tracing::Instrument as _;

use super::webhooks::Routes;
use super::{Backend, Store};

/// The connection of a flow, inside its transaction.
pub(super) type Conn = AnyConnection;

/// How a flow ends: with a commit, or with a rollback (a precondition did not hold, a constraint
/// said no). Both carry the flow's typed outcome.
pub(super) enum Done<T> {
    Commit(T),
    Rollback(T),
}

/// A flow: the statements of one transaction, on its connection, from its prepared input.
pub(super) trait Flow<I, T>:
    for<'t> Fn(&'t mut Conn, &'t I) -> BoxFuture<'t, Result<Done<T>, sqlx::Error>>
    + Send
    + Sync
    + 'static
{
}

impl<I, T, F> Flow<I, T> for F where
    F: for<'t> Fn(&'t mut Conn, &'t I) -> BoxFuture<'t, Result<Done<T>, sqlx::Error>>
        + Send
        + Sync
        + 'static
{
}

/// What a flow does when its caller is gone by the time it would commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IfAbandoned {
    RollBack,
    Commit,
}

/// The flow's view of its caller.
struct Caller {
    /// Closed once the caller stopped waiting.
    waiting: oneshot::Sender<()>,
    if_abandoned: IfAbandoned,
}

impl Caller {
    fn gone(&self) -> bool {
        self.if_abandoned == IfAbandoned::RollBack && self.waiting.is_closed()
    }
}

/// How many times a transaction is tried when the database asks for a retry.
const MAX_ATTEMPTS: u32 = 8;

impl Store {
    /// Runs `flow` with `input` in one write transaction in a task of its own, and returns its
    /// outcome once the transaction has committed or rolled back. See the module docs for why the
    /// caller may be dropped at any moment without leaving anything half-done; a flow whose
    /// caller is gone when it would commit rolls back.
    pub(super) async fn write<I, T, F>(&self, input: I, flow: F) -> Result<T, sqlx::Error>
    where
        I: Send + Sync + 'static,
        T: Send + 'static,
        F: Flow<I, T>,
    {
        self.run_flow(input, flow, IfAbandoned::RollBack).await
    }

    /// `write` for what must be recorded whether or not anyone waits for it: rate-limit
    /// counts, failed attempts, the revocation of a reused refresh token's session (an attacker
    /// hanging up must not undo it), and the work of background jobs.
    pub(super) async fn record<I, T, F>(&self, input: I, flow: F) -> Result<T, sqlx::Error>
    where
        I: Send + Sync + 'static,
        T: Send + 'static,
        F: Flow<I, T>,
    {
        self.run_flow(input, flow, IfAbandoned::Commit).await
    }

    /// `write` for a flow that may queue webhook events: the flow gets the routes with its input,
    /// and the webhook worker is woken once the transaction is over (after the commit, so the
    /// worker sees the rows).
    pub(super) async fn write_evented<I, T, F>(&self, input: I, flow: F) -> Result<T, sqlx::Error>
    where
        I: Send + Sync + 'static,
        T: Send + 'static,
        F: Flow<(I, Routes), T>,
    {
        self.run_evented(input, flow, IfAbandoned::RollBack).await
    }

    /// `record` for a flow that may queue webhook events (see `write_evented`).
    pub(super) async fn record_evented<I, T, F>(&self, input: I, flow: F) -> Result<T, sqlx::Error>
    where
        I: Send + Sync + 'static,
        T: Send + 'static,
        F: Flow<(I, Routes), T>,
    {
        self.run_evented(input, flow, IfAbandoned::Commit).await
    }

    async fn run_evented<I, T, F>(
        &self,
        input: I,
        flow: F,
        if_abandoned: IfAbandoned,
    ) -> Result<T, sqlx::Error>
    where
        I: Send + Sync + 'static,
        T: Send + 'static,
        F: Flow<(I, Routes), T>,
    {
        let routes = self.webhooks.clone();
        let outcome = self.run_flow((input, routes), flow, if_abandoned).await;
        self.webhooks.committed();
        outcome
    }

    async fn run_flow<I, T, F>(
        &self,
        input: I,
        flow: F,
        if_abandoned: IfAbandoned,
    ) -> Result<T, sqlx::Error>
    where
        I: Send + Sync + 'static,
        T: Send + 'static,
        F: Flow<I, T>,
    {
        let pool = self.write.clone();
        let bound = match self.backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(self.timeout),
        };
        let begin = match self.backend {
            // Takes the write lock at the start, so the transaction never fails half-way trying
            // to upgrade a read lock.
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        // The caller holds `_waiting` until it has the outcome; dropped (a hang-up, a timeout),
        // it closes `caller`, and the flow rolls back instead of committing for nobody.
        let (caller, _waiting) = oneshot::channel::<()>();
        let caller = Caller {
            waiting: caller,
            if_abandoned,
        };
        let liveness = self.liveness.clone();
        let task = tokio::spawn(
            super::liveness::recording(async move {
                let mut attempt = 1;
                loop {
                    let outcome = once(&pool, begin, bound, &flow, &input, &caller).await;
                    // Before anyone hears of the outcome (see `liveness`).
                    liveness.after_attempt(super::liveness::take_changed());
                    match outcome {
                        Err(failed) if failed.worth_another_try(attempt) => {
                            tracing::info!(attempt, error = %failed.error, "transaction retried");
                            tokio::time::sleep(backoff(attempt)).await;
                            attempt += 1;
                        }
                        outcome => return outcome.map_err(|failed| failed.error),
                    }
                }
            })
            .instrument(tracing::Span::current()),
        );
        match task.await {
            Ok(outcome) => outcome,
            // A panic in the flow (its transaction was rolled back and its connection closed)
            // goes on in the caller, where the request's panic handler answers 500.
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(_) => Err(sqlx::Error::PoolClosed),
        }
    }
}

/// One attempt: a connection, the transaction, and the connection's fate.
async fn once<I, T, F>(
    pool: &AnyPool,
    begin: &'static str,
    bound: Option<Duration>,
    flow: &F,
    input: &I,
    caller: &Caller,
) -> Result<T, Failed>
where
    F: Flow<I, T>,
{
    let mut conn = pool.acquire().await.map_err(|error| Failed {
        error,
        step: Step::Acquire,
    })?;
    let ran = AssertUnwindSafe(run(&mut conn, begin, flow, input, caller)).catch_unwind();
    let ran = match bound {
        None => ran.await,
        Some(limit) => match tokio::time::timeout(limit, ran).await {
            Ok(ran) => ran,
            Err(_) => {
                tracing::warn!(
                    timeout_ms = limit.as_millis(),
                    "the database did not finish a transaction within database_timeout: \
                     dropping its connection"
                );
                drop(conn.detach());
                return Err(Failed {
                    error: sqlx::Error::PoolTimedOut,
                    step: Step::TimedOut,
                });
            }
        },
    };
    match ran {
        Ok(Ok(outcome)) => {
            // Committed or rolled back as the flow said; a connection that still counts itself
            // inside a transaction after that is not trusted with the next flow.
            if conn.is_in_transaction() {
                discard(conn).await;
            }
            Ok(outcome)
        }
        Ok(Err(failed)) => {
            // A serialization failure whose rollback went through leaves a clean connection;
            // after any other error the connection may be in a state nobody knows (SQLite rolls
            // back by itself on a full disk; a session setting may have broken): close it.
            let clean = match failed.step {
                Step::Abandoned => true,
                Step::Flow => failed.retryable(),
                Step::Acquire | Step::Begin | Step::End | Step::TimedOut => false,
            };
            if !clean || conn.is_in_transaction() {
                discard(conn).await;
            }
            Err(failed)
        }
        Err(panic) => {
            discard(conn).await;
            std::panic::resume_unwind(panic)
        }
    }
}

/// Where an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Acquire,
    /// `BEGIN` failed: nothing was done, and a fresh connection may well succeed.
    Begin,
    /// The flow's statements, or its rollback after them.
    Flow,
    /// `COMMIT` or `ROLLBACK` of an outcome.
    End,
    /// The caller went away before the commit: rolled back, cleanly.
    Abandoned,
    /// The attempt outlived `database_timeout` (PostgreSQL); its connection is gone.
    TimedOut,
}

/// A failed attempt.
struct Failed {
    error: sqlx::Error,
    step: Step,
}

impl Failed {
    /// A serialization failure or a deadlock (the database asks for the transaction to run
    /// again), up to `MAX_ATTEMPTS`; or a first `BEGIN` that failed, on a connection now closed
    /// (once only: a database that is down or busy must not be waited for several times over).
    fn worth_another_try(&self, attempt: u32) -> bool {
        match self.step {
            Step::Begin => attempt == 1,
            // PostgreSQL may refuse a SERIALIZABLE transaction at its COMMIT: with 40001 it is
            // known to have rolled back, so running it again is as safe as after a statement.
            Step::Flow | Step::End => attempt < MAX_ATTEMPTS && self.retryable(),
            Step::Acquire | Step::Abandoned | Step::TimedOut => false,
        }
    }

    fn retryable(&self) -> bool {
        matches!(&self.error, sqlx::Error::Database(e)
            if matches!(e.code().as_deref(), Some("40001" | "40P01")))
    }
}

async fn run<I, T, F>(
    conn: &mut PoolConnection<Any>,
    begin: &'static str,
    flow: &F,
    input: &I,
    caller: &Caller,
) -> Result<T, Failed>
where
    F: Flow<I, T>,
{
    let at = |step| move |error| Failed { error, step };
    let mut tx = conn.begin_with(begin).await.map_err(at(Step::Begin))?;
    match flow(&mut tx, input).await {
        Ok(Done::Commit(outcome)) if caller.gone() => {
            // Nobody will receive the outcome (nor the tokens and cookies that follow a commit):
            // the request ends as if it had never been made.
            drop(outcome);
            tx.rollback().await.map_err(at(Step::End))?;
            tracing::info!("the caller went away before the commit: rolled back");
            Err(Failed {
                error: sqlx::Error::Protocol("the caller went away before the commit".into()),
                step: Step::Abandoned,
            })
        }
        Ok(Done::Commit(outcome)) => {
            tx.commit().await.map_err(at(Step::End))?;
            super::liveness::committed();
            Ok(outcome)
        }
        Ok(Done::Rollback(outcome)) => {
            tx.rollback().await.map_err(at(Step::End))?;
            Ok(outcome)
        }
        Err(error) => {
            let rolled_back = tx.rollback().await.is_ok();
            let step = if rolled_back { Step::Flow } else { Step::End };
            Err(Failed { error, step })
        }
    }
}

/// Closes a connection instead of returning it to the pool; the pool opens a fresh one.
async fn discard(conn: PoolConnection<Any>) {
    tracing::warn!("closing a write connection whose state is not known to be clean");
    if let Err(err) = conn.close().await {
        tracing::warn!(error = %err, "closing the connection failed");
    }
}

/// A short pause that grows with the attempt, with jitter so that two retried transactions do not
/// collide again in lockstep.
fn backoff(attempt: u32) -> Duration {
    use rand::Rng as _;
    let base = 5 * u64::from(attempt);
    Duration::from_millis(base + rand::thread_rng().gen_range(0..=base))
}

/// The pool hook of `Store::connect`: a connection sqlx counts inside a transaction is closed
/// rather than handed out or kept.
pub(super) fn outside_transaction(conn: &AnyConnection) -> bool {
    let clean = !conn.is_in_transaction();
    if !clean {
        tracing::warn!("a pooled connection was left inside a transaction: closing it");
    }
    clean
}
