//! Rate-limit counters (what they mean is in `crate::limits`).
//!
//! Every counter moves by one atomic statement: an upsert that both SQLite (3.35+) and PostgreSQL
//! run as a single step, so instances racing on one key never lose a count, and the new value
//! comes back through `RETURNING` without a second read that could race. In the `DO UPDATE SET`
//! clause every expression sees the row as it was before the statement, on both databases.

use sqlx::{Any, Executor, FromRow};

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
pub async fn hit<'e>(
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
pub async fn refund<'e>(
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
pub async fn strike<'e>(
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
pub async fn block<'e>(
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
pub async fn clear<'e>(
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
pub async fn prune<'e>(
    db: impl Executor<'e, Database = Any>,
    now: Millis,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM rate_limits WHERE expires_at <= $1")
        .bind(now)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}
