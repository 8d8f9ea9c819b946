//! Rate-limit counters (what they mean is in `crate::limits`).
//!
//! Every counter moves by one atomic statement: an upsert that both SQLite (3.35+) and PostgreSQL
//! run as a single step, so instances racing on one key never lose a count, and the new value
//! comes back through `RETURNING` without a second read that could race. In the `DO UPDATE SET`
//! clause every expression sees the row as it was before the statement, on both databases.

use sqlx::{Any, Executor, FromRow};

use super::Store;
use super::tx::{Conn, Done};
use crate::clock::Millis;

/// A fixed-window counter right after a hit.
#[derive(Debug, Clone, Copy, FromRow)]
pub struct Window {
    /// Hits in the current window, this one included.
    pub count: i64,
    /// When the current window ends (and identifies it).
    pub expires_at: Millis,
}

/// Counts one hit in the key's window, opening a new window of `period` ms when the last one
/// has ended (or there was none).
pub(in crate::store) async fn hit<'e>(
    db: impl Executor<'e, Database = Any>,
    key: &str,
    now: Millis,
    period: Millis,
) -> Result<Window, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO rate_limits (key, window_start, count, blocked_until, expires_at) \
         VALUES ($1, $2, 1, 0, $3) \
         ON CONFLICT (key) DO UPDATE SET \
             count = CASE WHEN rate_limits.expires_at > $2 \
                          THEN rate_limits.count + 1 ELSE 1 END, \
             window_start = CASE WHEN rate_limits.expires_at > $2 \
                                 THEN rate_limits.window_start ELSE $2 END, \
             expires_at = CASE WHEN rate_limits.expires_at > $2 \
                               THEN rate_limits.expires_at ELSE $3 END \
         RETURNING count, expires_at",
    )
    .bind(key)
    .bind(now)
    .bind(now.saturating_add(period))
    .fetch_one(db)
    .await
}

/// Takes back one hit of the window that ends at `expires_at`, if that window is still current.
pub(in crate::store) async fn refund<'e>(
    db: impl Executor<'e, Database = Any>,
    key: &str,
    expires_at: Millis,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE rate_limits SET count = count - 1 \
         WHERE key = $1 AND expires_at = $2 AND count > 0",
    )
    .bind(key)
    .bind(expires_at)
    .execute(db)
    .await?;
    Ok(())
}

/// A per-account failure counter right after a strike.
#[derive(Debug, Clone, Copy, FromRow)]
pub struct Strikes {
    /// Failures counted, this one included (unchanged when a wait was in force).
    pub count: i64,
    /// The end of the wait in force; in the past when there is none.
    pub blocked_until: Millis,
}

/// Counts one failure, unless a wait is in force: then nothing changes and the caller refuses
/// the attempt. A counter whose `expires_at` has passed starts again from one, with a quiet
/// period of `period` ms.
pub(in crate::store) async fn strike<'e>(
    db: impl Executor<'e, Database = Any>,
    key: &str,
    now: Millis,
    period: Millis,
) -> Result<Strikes, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO rate_limits (key, window_start, count, blocked_until, expires_at) \
         VALUES ($1, $2, 1, 0, $3) \
         ON CONFLICT (key) DO UPDATE SET \
             count = CASE WHEN rate_limits.blocked_until > $2 THEN rate_limits.count \
                          WHEN rate_limits.expires_at > $2 THEN rate_limits.count + 1 \
                          ELSE 1 END, \
             window_start = CASE WHEN rate_limits.expires_at > $2 \
                                 THEN rate_limits.window_start ELSE $2 END, \
             blocked_until = CASE WHEN rate_limits.expires_at > $2 \
                                  THEN rate_limits.blocked_until ELSE 0 END, \
             expires_at = CASE WHEN rate_limits.expires_at > $2 \
                               THEN rate_limits.expires_at ELSE $3 END \
         RETURNING count, blocked_until",
    )
    .bind(key)
    .bind(now)
    .bind(now.saturating_add(period))
    .fetch_one(db)
    .await
}

/// Imposes a wait on a counter until `blocked_until`, and keeps the counter until `expires_at`.
pub(in crate::store) async fn block<'e>(
    db: impl Executor<'e, Database = Any>,
    key: &str,
    blocked_until: Millis,
    expires_at: Millis,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE rate_limits SET blocked_until = $2, expires_at = $3 WHERE key = $1")
        .bind(key)
        .bind(blocked_until)
        .bind(expires_at)
        .execute(db)
        .await?;
    Ok(())
}

/// Forgets a counter.
pub(in crate::store) async fn clear<'e>(
    db: impl Executor<'e, Database = Any>,
    key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM rate_limits WHERE key = $1")
        .bind(key)
        .execute(db)
        .await?;
    Ok(())
}

/// Deletes counters that mean nothing any more; returns how many.
pub(in crate::store) async fn prune<'e>(
    db: impl Executor<'e, Database = Any>,
    now: Millis,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM rate_limits WHERE expires_at <= $1")
        .bind(now)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

/// The counters a login attempt (or a password change's current-password check) moves, with
/// their limits: per client IP attempts and failures, and the strikes of the account (or, from a
/// device that signed in to it before, of that device).
#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub attempts: Counter,
    pub failures: Counter,
    pub strikes: Counter,
    /// The first wait once `strikes.max` is reached; each further strike doubles it, up to
    /// `max_wait`.
    pub max_wait: Millis,
    pub now: Millis,
}

/// A counter key with its limit.
#[derive(Debug, Clone)]
pub struct Counter {
    pub key: String,
    pub max: i64,
    pub period: Millis,
}

/// What counting an attempt decided.
#[derive(Debug)]
pub enum Attempt {
    /// Counted as a failure until it is taken back with the refund.
    Counted(Refund),
    /// Refused: the counter `name` (attempts, failures or strikes) is over its limit until then.
    Refused { which: Which, until: Millis },
}

/// Which of an attempt's counters refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Attempts,
    Failures,
    Strikes,
}

/// What a successful attempt takes back: its failure hit, and the strikes.
#[derive(Debug, Clone)]
pub struct Refund {
    pub failures_key: String,
    pub failures_window: Millis,
    pub strikes_key: String,
}

/// The wait after `count` strikes against a limit of `max` per `period`: one period at `max`,
/// doubling with each further strike, capped at `max_wait` (or the period, when that is longer).
pub fn strike_wait(max: i64, period: Millis, count: i64, max_wait: Millis) -> Millis {
    let doublings = u32::try_from(count - max).unwrap_or(0).min(16);
    let cap = max_wait.max(period);
    period.saturating_mul(1 << doublings).min(cap)
}

impl Store {
    /// Counts one hit of a fixed-window limit, in a transaction of its own: the count must
    /// survive whatever happens to the request it belongs to.
    pub async fn hit_limit(
        &self,
        key: String,
        now: Millis,
        period: Millis,
    ) -> Result<Window, sqlx::Error> {
        self.record(key, move |c, key| {
            Box::pin(async move { Ok(Done::Commit(hit(&mut *c, key, now, period).await?)) })
        })
        .await
    }

    /// Counts a login attempt as a failure, before the password is checked, in a transaction of
    /// its own (so concurrent attempts cannot slip past a limit while their hashes run); the
    /// success path takes it back inside its own flow (`Refund`).
    pub async fn count_attempt(&self, new: NewAttempt) -> Result<Attempt, sqlx::Error> {
        self.record(new, |c, new| Box::pin(count_attempt(c, new)))
            .await
    }

    /// Forgets a counter (a reset that happened outside the flows, e.g. by the operator).
    pub async fn clear_limit(&self, key: String) -> Result<(), sqlx::Error> {
        self.record(key, |c, key| {
            Box::pin(async move {
                clear(&mut *c, key).await?;
                Ok(Done::Commit(()))
            })
        })
        .await
    }

    /// Deletes counters that mean nothing any more; how many.
    pub async fn prune_rate_limits(&self, now: Millis) -> Result<u64, sqlx::Error> {
        self.record((), move |c, ()| {
            Box::pin(async move { Ok(Done::Commit(prune(&mut *c, now).await?)) })
        })
        .await
    }
}

async fn count_attempt(c: &mut Conn, a: &NewAttempt) -> Result<Done<Attempt>, sqlx::Error> {
    let now = a.now;
    let refused = |which, until| Ok(Done::Commit(Attempt::Refused { which, until }));
    let attempts = hit(&mut *c, &a.attempts.key, now, a.attempts.period).await?;
    if attempts.count > a.attempts.max {
        return refused(Which::Attempts, attempts.expires_at);
    }
    let failures = hit(&mut *c, &a.failures.key, now, a.failures.period).await?;
    if failures.count > a.failures.max {
        return refused(Which::Failures, failures.expires_at);
    }
    let strikes = strike(&mut *c, &a.strikes.key, now, a.strikes.period).await?;
    if strikes.blocked_until > now {
        return refused(Which::Strikes, strikes.blocked_until);
    }
    if strikes.count >= a.strikes.max {
        let wait = strike_wait(a.strikes.max, a.strikes.period, strikes.count, a.max_wait);
        let blocked_until = now.saturating_add(wait);
        let keep_until = blocked_until.saturating_add(a.strikes.period);
        block(&mut *c, &a.strikes.key, blocked_until, keep_until).await?;
    }
    Ok(Done::Commit(Attempt::Counted(Refund {
        failures_key: a.failures.key.clone(),
        failures_window: failures.expires_at,
        strikes_key: a.strikes.key.clone(),
    })))
}

/// Takes back a counted attempt: its failure hit, and the strikes (the password was right).
pub(in crate::store) async fn apply_refund(c: &mut Conn, r: &Refund) -> Result<(), sqlx::Error> {
    refund(&mut *c, &r.failures_key, r.failures_window).await?;
    clear(&mut *c, &r.strikes_key).await
}

#[cfg(test)]
mod tests {
    use super::strike_wait;

    #[test]
    fn the_wait_starts_at_one_period_and_doubles_up_to_the_cap() {
        let (period, cap) = (300_000, 3_600_000);
        let waits: Vec<i64> = (5..=10)
            .map(|count| strike_wait(5, period, count, cap) / 1000)
            .collect();
        assert_eq!(waits, [300, 600, 1200, 2400, 3600, 3600]);
        assert_eq!(strike_wait(5, period, 1_000_000, cap) / 1000, 3600);
        assert_eq!(strike_wait(3, 7_200_000, 9, cap) / 1000, 7200);
    }
}
