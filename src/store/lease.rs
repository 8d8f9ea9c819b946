//! Leases on queue rows: the one claiming mechanism of the outbox's two queues, emails (`outbox`)
//! and webhook deliveries (`webhook_outbox`).
//!
//! A worker claims due rows in a short transaction of its own (a lease: `claim_id` and
//! `claimed_until`), delivers them with no transaction open, then records the outcome. On
//! PostgreSQL the claim locks the rows it picks with `FOR UPDATE SKIP LOCKED`, so workers of
//! several instances claim disjoint rows without waiting for one another; SQLite has a single
//! writer, so the conditional UPDATE alone decides there. A lease that expires (a worker died
//! mid-send) makes the row claimable again.
//!
//! The queues are separate tables with separate workers, so a receiver that never answers holds
//! up no email and a dead SMTP relay no webhook: each claim only ever sees its own table.

use sqlx::any::AnyRow;
use sqlx::{Any, Executor, FromRow};
use uuid::Uuid;

use super::Backend;
use crate::clock::Millis;

/// A queue of the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::store) enum Queue {
    Mail,
    Webhooks,
}

impl Queue {
    fn table(self) -> &'static str {
        match self {
            Queue::Mail => "outbox",
            Queue::Webhooks => "webhook_outbox",
        }
    }

    /// What a claim returns: the columns of the queue's `Claimed` row.
    fn columns(self) -> &'static str {
        match self {
            Queue::Mail => "id, kind, recipient, subject, body_text, body_html, attempts",
            Queue::Webhooks => "id, event_id, event_type, endpoint, payload, attempts",
        }
    }

    /// What is erased once a row is sent: an email's bodies carry its link. A webhook's payload
    /// carries no secret and is kept, so that a dead delivery can be retried. A dead email keeps
    /// its bodies too, for `latchkey mail retry`, until its links have expired anyway (the prune
    /// job erases them then, see `Store::prune_mail`).
    fn erase(self) -> &'static str {
        match self {
            Queue::Mail => ", body_text = '', body_html = ''",
            Queue::Webhooks => "",
        }
    }
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

/// Claims up to `limit` due rows until `lease_until` and counts the attempt.
pub(in crate::store) async fn claim_due<'e, T>(
    db: impl Executor<'e, Database = Any>,
    backend: Backend,
    queue: Queue,
    claim_id: Uuid,
    now: Millis,
    lease_until: Millis,
    limit: i64,
) -> Result<Vec<T>, sqlx::Error>
where
    T: for<'r> FromRow<'r, AnyRow> + Send + Unpin,
{
    let lock = match backend {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let (table, columns) = (queue.table(), queue.columns());
    let sql = format!(
        "UPDATE {table} SET claim_id = $1, claimed_until = $2, attempts = attempts + 1 \
         WHERE id IN ( \
             SELECT id FROM {table} \
             WHERE sent_at IS NULL AND dead_at IS NULL AND next_attempt_at <= $3 \
             AND (claimed_until IS NULL OR claimed_until <= $3) \
             ORDER BY next_attempt_at, id LIMIT $4{lock}) \
         RETURNING {columns}"
    );
    sqlx::query_as(&sql)
        .bind(claim_id.to_string())
        .bind(lease_until)
        .bind(now)
        .bind(limit)
        .fetch_all(db)
        .await
}

/// Records the outcome of an attempt of this claim; whether the row changed. A row is marked sent
/// once, whichever claim delivered it (a worker whose lease ran out may still succeed); retries
/// and deaths apply only to the claim that holds the row.
pub(in crate::store) async fn finish<'e>(
    db: impl Executor<'e, Database = Any>,
    queue: Queue,
    id: &str,
    claim_id: Uuid,
    outcome: &Outcome,
    now: Millis,
) -> Result<bool, sqlx::Error> {
    let (table, erase) = (queue.table(), queue.erase());
    let open = "sent_at IS NULL AND dead_at IS NULL";
    let done = match outcome {
        Outcome::Sent => {
            let sql = format!(
                "UPDATE {table} SET sent_at = $1, claim_id = NULL, claimed_until = NULL{erase} \
                 WHERE id = $2 AND {open}"
            );
            sqlx::query(&sql).bind(now).bind(id).execute(db).await?
        }
        Outcome::Retry {
            error,
            next_attempt_at,
        } => {
            let sql = format!(
                "UPDATE {table} SET next_attempt_at = $1, last_error = $2, claim_id = NULL, \
                                    claimed_until = NULL \
                 WHERE id = $3 AND claim_id = $4 AND {open}"
            );
            sqlx::query(&sql)
                .bind(*next_attempt_at)
                .bind(error.as_str())
                .bind(id)
                .bind(claim_id.to_string())
                .execute(db)
                .await?
        }
        Outcome::Dead { error } => {
            let sql = format!(
                "UPDATE {table} SET dead_at = $1, last_error = $2, claim_id = NULL, \
                                    claimed_until = NULL \
                 WHERE id = $3 AND claim_id = $4 AND {open}"
            );
            sqlx::query(&sql)
                .bind(now)
                .bind(error.as_str())
                .bind(id)
                .bind(claim_id.to_string())
                .execute(db)
                .await?
        }
    };
    Ok(done.rows_affected() == 1)
}

impl super::Store {
    /// Claims up to `limit` due rows of `queue` for one attempt each, in a short transaction of
    /// its own, committed before any delivery traffic, so no lock or connection is held while
    /// the relay or the receiver answers.
    pub(in crate::store) async fn claim<T>(
        &self,
        queue: Queue,
        claim_id: Uuid,
        now: Millis,
        lease_until: Millis,
        limit: i64,
    ) -> Result<Vec<T>, sqlx::Error>
    where
        T: for<'r> FromRow<'r, AnyRow> + Send + Unpin + 'static,
    {
        let backend = self.backend();
        self.record((), move |c, ()| {
            Box::pin(async move {
                let claimed =
                    claim_due(c, backend, queue, claim_id, now, lease_until, limit).await?;
                Ok(super::tx::Done::Commit(claimed))
            })
        })
        .await
    }

    /// Records the outcome of an attempt on a claimed row of `queue`; whether the row changed
    /// (a row another worker already finished is left alone).
    pub(in crate::store) async fn finish_claim(
        &self,
        queue: Queue,
        id: String,
        claim_id: Uuid,
        outcome: Outcome,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        self.record((id, outcome), move |c, (id, outcome)| {
            Box::pin(async move {
                let changed = finish(c, queue, id, claim_id, outcome, now).await?;
                Ok(super::tx::Done::Commit(changed))
            })
        })
        .await
    }
}

/// Deletes rows sent or dead before `cutoff`.
pub(in crate::store) async fn prune<'e>(
    db: impl Executor<'e, Database = Any>,
    queue: Queue,
    cutoff: Millis,
) -> Result<u64, sqlx::Error> {
    let sql = format!(
        "DELETE FROM {} WHERE sent_at < $1 OR dead_at < $1",
        queue.table()
    );
    let done = sqlx::query(&sql).bind(cutoff).execute(db).await?;
    Ok(done.rows_affected())
}

/// Rows not yet delivered (neither sent nor dead), and when the oldest was written.
pub(in crate::store) async fn backlog<'e>(
    db: impl Executor<'e, Database = Any>,
    queue: Queue,
) -> Result<(i64, Option<i64>), sqlx::Error> {
    let sql = format!(
        "SELECT COUNT(*), MIN(created_at) FROM {} WHERE sent_at IS NULL AND dead_at IS NULL",
        queue.table()
    );
    sqlx::query_as(&sql).fetch_one(db).await
}

/// Rows given up (dead) and still kept: emails until they are pruned, webhooks until retried.
pub(in crate::store) async fn dead<'e>(
    db: impl Executor<'e, Database = Any>,
    queue: Queue,
) -> Result<i64, sqlx::Error> {
    let sql = format!(
        "SELECT COUNT(*) FROM {} WHERE dead_at IS NOT NULL",
        queue.table()
    );
    sqlx::query_scalar(&sql).fetch_one(db).await
}
