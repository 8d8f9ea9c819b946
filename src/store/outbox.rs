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

use super::tx::Done;
use super::{Backend, Store};
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
pub(in crate::store) async fn enqueue<'e>(
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
async fn claim_due<'e>(
    db: impl Executor<'e, Database = Any>,
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
        .fetch_all(db)
        .await
}

/// Records a delivery; returns whether this call did (a message is marked sent once). The
/// bodies, which carry the link, are erased.
async fn mark_sent<'e>(
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
async fn mark_retry<'e>(
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
async fn mark_dead<'e>(
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
async fn prune<'e>(
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

/// The outcome of one delivery attempt.
#[derive(Debug)]
pub enum Outcome {
    Sent,
    Retry {
        error: String,
        next_attempt_at: Millis,
    },
    Dead {
        error: String,
    },
}

impl Store {
    /// Claims up to `limit` due messages for one attempt each, in a short transaction of its own,
    /// committed before any SMTP traffic, so no lock or connection is held while the relay
    /// answers.
    pub async fn claim_mail(
        &self,
        claim_id: Uuid,
        now: Millis,
        lease_until: Millis,
        limit: i64,
    ) -> Result<Vec<Claimed>, sqlx::Error> {
        let backend = self.backend();
        self.record((), move |c, ()| {
            Box::pin(async move {
                let claimed = claim_due(c, backend, claim_id, now, lease_until, limit).await?;
                Ok(Done::Commit(claimed))
            })
        })
        .await
    }

    /// Records the outcome of an attempt on a claimed message; whether the row changed (a
    /// message another worker already finished is left alone).
    pub async fn record_mail(
        &self,
        id: String,
        claim_id: Uuid,
        outcome: Outcome,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        self.record((id, outcome), move |c, (id, outcome)| {
            Box::pin(async move {
                let changed = match outcome {
                    Outcome::Sent => mark_sent(c, id, now).await?,
                    Outcome::Retry {
                        error,
                        next_attempt_at,
                    } => mark_retry(c, id, claim_id, error, *next_attempt_at).await?,
                    Outcome::Dead { error } => mark_dead(c, id, claim_id, error, now).await?,
                };
                Ok(Done::Commit(changed))
            })
        })
        .await
    }

    /// Housekeeping: one-time tokens expired before `tokens_before`, emails sent or given up
    /// before `mail_before`, throttle slots that ended before `slots_before`. Every row deleted is
    /// one no request or worker can use any more, so several instances may run this at once.
    pub async fn prune_mail(
        &self,
        tokens_before: Millis,
        mail_before: Millis,
        slots_before: Millis,
    ) -> Result<(), sqlx::Error> {
        self.record((), move |c, ()| {
            Box::pin(async move {
                super::one_time_tokens::prune(&mut *c, tokens_before).await?;
                prune(&mut *c, mail_before).await?;
                super::mail_throttle::prune(&mut *c, slots_before).await?;
                super::reset_requests::prune(&mut *c, tokens_before).await?;
                Ok(Done::Commit(()))
            })
        })
        .await
    }

    /// Deletes sessions that ended before `ended_before`; how many.
    pub async fn prune_sessions(&self, ended_before: Millis) -> Result<u64, sqlx::Error> {
        self.record((), move |c, ()| {
            Box::pin(async move {
                Ok(Done::Commit(
                    super::sessions::prune(&mut *c, ended_before).await?,
                ))
            })
        })
        .await
    }
}
