//! The transactional outbox: emails written in the transaction of the flow that sends them, and
//! delivered by a worker after the commit (see `mail::worker`).
//!
//! A worker claims due rows in a short transaction of its own (a lease: `claim_id` and
//! `claimed_until`), sends them with no transaction open, then records the outcome. On PostgreSQL
//! the claim locks the rows it picks with `FOR UPDATE SKIP LOCKED`, so workers of several
//! instances claim disjoint rows without waiting for one another; SQLite has a single writer, so
//! the conditional UPDATE alone decides there. A lease that expires (a worker died mid-send) makes
//! the row claimable again.

use sqlx::{Any, Executor, FromRow};
use uuid::Uuid;

use super::{Backend, Tx};
use crate::clock::Millis;

pub struct NewMessage<'a> {
    pub id: Uuid,
    pub kind: &'a str,
    pub recipient: &'a str,
    pub subject: &'a str,
    pub body_text: &'a str,
    pub body_html: &'a str,
    pub now: Millis,
}

/// Writes a message to the outbox, due at once. Called inside the flow's transaction, so the
/// message exists exactly when what it tells about was committed.
pub async fn enqueue<'e>(
    db: impl Executor<'e, Database = Any>,
    m: &NewMessage<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox (id, kind, recipient, subject, body_text, body_html, created_at, \
                             next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(m.id.to_string())
    .bind(m.kind)
    .bind(m.recipient)
    .bind(m.subject)
    .bind(m.body_text)
    .bind(m.body_html)
    .bind(m.now)
    .execute(db)
    .await?;
    Ok(())
}

/// A message claimed for one delivery attempt.
#[derive(Debug, FromRow)]
pub struct Claimed {
    pub id: String,
    pub kind: String,
    pub recipient: String,
    pub subject: String,
    pub body_text: String,
    pub body_html: String,
    /// Attempts so far, this one included.
    pub attempts: i64,
}

/// Claims up to `limit` due messages until `lease_until` and counts the attempt.
pub async fn claim_due(
    tx: &mut Tx,
    backend: Backend,
    claim_id: Uuid,
    now: Millis,
    lease_until: Millis,
    limit: i64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let lock = match backend {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let sql = format!(
        "UPDATE outbox SET claim_id = $1, claimed_until = $2, attempts = attempts + 1 \
         WHERE id IN ( \
             SELECT id FROM outbox \
             WHERE sent_at IS NULL AND dead_at IS NULL AND next_attempt_at <= $3 \
             AND (claimed_until IS NULL OR claimed_until <= $3) \
             ORDER BY next_attempt_at, id LIMIT $4{lock}) \
         RETURNING id, kind, recipient, subject, body_text, body_html, attempts"
    );
    sqlx::query_as(&sql)
        .bind(claim_id.to_string())
        .bind(lease_until)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut **tx)
        .await
}

/// Records a delivery; returns whether this call did (a message is marked sent once). The
/// bodies, which carry the link, are erased.
pub async fn mark_sent<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
    now: Millis,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE outbox SET sent_at = $1, claim_id = NULL, claimed_until = NULL, \
                           body_text = '', body_html = '' \
         WHERE id = $2 AND sent_at IS NULL AND dead_at IS NULL",
    )
    .bind(now)
    .bind(id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records a failed attempt of this claim and when to try again.
pub async fn mark_retry<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
    claim_id: Uuid,
    error: &str,
    next_attempt_at: Millis,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE outbox SET next_attempt_at = $1, last_error = $2, claim_id = NULL, \
                           claimed_until = NULL \
         WHERE id = $3 AND claim_id = $4 AND sent_at IS NULL AND dead_at IS NULL",
    )
    .bind(next_attempt_at)
    .bind(error)
    .bind(id)
    .bind(claim_id.to_string())
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives up on a message of this claim: it is dead, its bodies erased, and it is never tried again.
pub async fn mark_dead<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
    claim_id: Uuid,
    error: &str,
    now: Millis,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE outbox SET dead_at = $1, last_error = $2, claim_id = NULL, claimed_until = NULL, \
                           body_text = '', body_html = '' \
         WHERE id = $3 AND claim_id = $4 AND sent_at IS NULL AND dead_at IS NULL",
    )
    .bind(now)
    .bind(error)
    .bind(id)
    .bind(claim_id.to_string())
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes messages sent or dead before `cutoff`.
pub async fn prune<'e>(
    db: impl Executor<'e, Database = Any>,
    cutoff: Millis,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM outbox WHERE sent_at < $1 OR dead_at < $1")
        .bind(cutoff)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

/// Emails not yet delivered (neither sent nor dead), and when the oldest was written.
pub async fn backlog<'e>(
    db: impl Executor<'e, Database = Any>,
) -> Result<(i64, Option<i64>), sqlx::Error> {
    sqlx::query_as(
        "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE sent_at IS NULL AND dead_at IS NULL",
    )
    .fetch_one(db)
    .await
}
