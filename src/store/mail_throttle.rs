//! The per-address mail throttle: at most one reset or verification email per address per
//! window. Decided by one conditional upsert in the flow's transaction, so the limit holds across
//! instances and two concurrent requests cannot both pass it (on PostgreSQL the second upsert
//! waits for the first one's row and then sees its new time).

use sqlx::{Any, Executor};

use crate::clock::Millis;

/// Takes the address's slot for `now` if its last email was sent at or before `window_start`
/// (or never); returns whether it did.
pub(in crate::store) async fn claim<'e>(
    db: impl Executor<'e, Database = Any>,
    email: &str,
    now: Millis,
    window_start: Millis,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO mail_throttle (email, last_sent_at) VALUES ($1, $2) \
         ON CONFLICT (email) DO UPDATE SET last_sent_at = excluded.last_sent_at \
         WHERE mail_throttle.last_sent_at <= $3",
    )
    .bind(email)
    .bind(now)
    .bind(window_start)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// When the last email to the address was sent, if one was.
pub(in crate::store) async fn last_sent_at<'e>(
    db: impl Executor<'e, Database = Any>,
    email: &str,
) -> Result<Option<Millis>, sqlx::Error> {
    sqlx::query_scalar("SELECT last_sent_at FROM mail_throttle WHERE email = $1")
        .bind(email)
        .fetch_optional(db)
        .await
}

/// Deletes slots that ended before `cutoff`.
pub(in crate::store) async fn prune<'e>(
    db: impl Executor<'e, Database = Any>,
    cutoff: Millis,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM mail_throttle WHERE last_sent_at < $1")
        .bind(cutoff)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

/// Deletes the throttle slots (`purpose:address`) of the user's addresses: part of the account's
/// deletion, so that no table keeps the address in the clear. The address is matched at the end
/// of the slot, after its `:`. Runs before the user row goes.
pub(in crate::store) async fn purge_for_user<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: uuid::Uuid,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM mail_throttle WHERE EXISTS ( \
             SELECT 1 FROM (SELECT email_normalized AS address FROM users WHERE id = $1 \
                 UNION SELECT email FROM one_time_tokens WHERE user_id = $1) a \
             WHERE length(mail_throttle.email) > length(a.address) \
             AND substr(mail_throttle.email, length(mail_throttle.email) - length(a.address)) \
                 = ':' || a.address)",
    )
    .bind(user_id.to_string())
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
