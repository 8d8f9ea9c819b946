//! The transactional outbox: emails written in the transaction of the flow that sends them, and
//! delivered by a worker after the commit (see `mail::worker`). Claims, leases and outcomes are
//! `lease`'s, shared with the webhook queue (`store::webhooks`).

use sqlx::{Any, Executor, FromRow};
use uuid::Uuid;

use super::Store;
pub use super::lease::Outcome;
use super::lease::{self, Queue};
use super::tx::Done;
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

/// Emails not yet delivered (neither sent nor dead), and when the oldest was written.
pub async fn backlog<'e>(
    db: impl Executor<'e, Database = Any>,
) -> Result<(i64, Option<i64>), sqlx::Error> {
    lease::backlog(db, Queue::Mail).await
}

/// Emails given up (dead) and still kept.
pub async fn dead<'e>(db: impl Executor<'e, Database = Any>) -> Result<i64, sqlx::Error> {
    lease::dead(db, Queue::Mail).await
}

/// A dead email as the operator sees it (no body: it may hold a live link).
#[derive(Debug, FromRow)]
pub struct DeadMail {
    pub id: String,
    pub kind: String,
    pub recipient: String,
    pub subject: String,
    pub attempts: i64,
    pub created_at: i64,
    pub dead_at: i64,
    pub last_error: Option<String>,
    /// 1 while its body is still kept, so that it can be sent again (an integer: SQLite has no
    /// boolean the `Any` driver decodes).
    pub retryable: i64,
}

/// Dead emails, newest first.
pub async fn list_dead<'e>(
    db: impl Executor<'e, Database = Any>,
    limit: i64,
) -> Result<Vec<DeadMail>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, kind, recipient, subject, attempts, created_at, dead_at, last_error, \
                CASE WHEN body_text <> '' THEN 1 ELSE 0 END AS retryable \
         FROM outbox WHERE dead_at IS NOT NULL ORDER BY dead_at DESC, id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}

/// What `retry_mail` did.
#[derive(Debug, PartialEq, Eq)]
pub enum MailRetry {
    Due,
    /// No dead email with that id.
    NotDead,
    /// Dead long enough for its body (and the link in it, expired by now) to be erased.
    Erased,
}

impl Store {
    /// Makes a dead email due again with a fresh count of attempts (the operator, once the relay
    /// is fixed), if its body is still kept.
    pub async fn retry_mail(&self, id: String, now: Millis) -> Result<MailRetry, sqlx::Error> {
        self.record(id, move |c, id| {
            Box::pin(async move {
                let done = sqlx::query(
                    "UPDATE outbox SET dead_at = NULL, attempts = 0, next_attempt_at = $1, \
                                       claim_id = NULL, claimed_until = NULL \
                     WHERE id = $2 AND dead_at IS NOT NULL AND body_text <> ''",
                )
                .bind(now)
                .bind(id.as_str())
                .execute(&mut *c)
                .await?;
                if done.rows_affected() == 1 {
                    return Ok(Done::Commit(MailRetry::Due));
                }
                let dead: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM outbox WHERE id = $1 AND dead_at IS NOT NULL",
                )
                .bind(id.as_str())
                .fetch_one(&mut *c)
                .await?;
                Ok(Done::Rollback(match dead {
                    0 => MailRetry::NotDead,
                    _ => MailRetry::Erased,
                }))
            })
        })
        .await
    }

    /// Claims up to `limit` due messages for one attempt each (see `lease`).
    pub async fn claim_mail(
        &self,
        claim_id: Uuid,
        now: Millis,
        lease_until: Millis,
        limit: i64,
    ) -> Result<Vec<Claimed>, sqlx::Error> {
        self.claim(Queue::Mail, claim_id, now, lease_until, limit)
            .await
    }

    /// Records the outcome of an attempt on a claimed message; whether the row changed.
    pub async fn record_mail(
        &self,
        id: String,
        claim_id: Uuid,
        outcome: Outcome,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        self.finish_claim(Queue::Mail, id, claim_id, outcome, now)
            .await
    }

    /// Housekeeping: one-time tokens (and passwordless codes, passkey ceremonies) expired before
    /// `tokens_before`, emails and webhook deliveries
    /// sent or given up before `mail_before`, throttle slots that ended before `slots_before`. Every row deleted is
    /// one no request or worker can use any more, so several instances may run this at once.
    /// Dead emails keep their bodies for `mail retry` until `bodies_before`, when the links in
    /// them have expired anyway; then the bodies are erased as a sent email's are at once.
    pub async fn prune_mail(
        &self,
        tokens_before: Millis,
        mail_before: Millis,
        slots_before: Millis,
        bodies_before: Millis,
    ) -> Result<(), sqlx::Error> {
        self.record((), move |c, ()| {
            Box::pin(async move {
                super::one_time_tokens::prune(&mut *c, tokens_before).await?;
                sqlx::query(
                    "UPDATE outbox SET body_text = '', body_html = '' \
                     WHERE dead_at < $1 AND body_text <> ''",
                )
                .bind(bodies_before)
                .execute(&mut *c)
                .await?;
                lease::prune(&mut *c, Queue::Mail, mail_before).await?;
                lease::prune(&mut *c, Queue::Webhooks, mail_before).await?;
                super::mail_throttle::prune(&mut *c, slots_before).await?;
                super::reset_requests::prune(&mut *c, tokens_before).await?;
                super::passwordless::prune(&mut *c, tokens_before).await?;
                super::passkeys::prune_ceremonies(&mut *c, tokens_before).await?;
                Ok(Done::Commit(()))
            })
        })
        .await
    }

    /// Deletes audit events written before `before` (`audit_retention`); how many.
    pub async fn prune_audit(&self, before: Millis) -> Result<u64, sqlx::Error> {
        self.record((), move |c, ()| {
            Box::pin(async move { Ok(Done::Commit(super::audit::prune(&mut *c, before).await?)) })
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

/// Deletes every message to the user's addresses (the account's, and the new one of a pending
/// email change), sent or not: part of the account's deletion. A pending one would carry a dead
/// link, a sent one keeps the address in `recipient`. Runs before the user row goes.
pub(in crate::store) async fn purge_for_user<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM outbox WHERE recipient IN ( \
             SELECT email FROM users WHERE id = $1 \
             UNION SELECT new_email FROM one_time_tokens \
                 WHERE user_id = $1 AND new_email IS NOT NULL)",
    )
    .bind(user_id.to_string())
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
