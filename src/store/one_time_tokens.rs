//! One-time tokens: password reset and email verification links.
//!
//! A token is used by one conditional UPDATE (unused, not revoked, not expired, of this purpose),
//! so two requests racing with one token cannot both use it: the database lets exactly one of
//! them change the row.

use sqlx::{Any, Executor, FromRow};
use uuid::Uuid;

use crate::clock::Millis;
use crate::tokens::Purpose;

pub struct NewToken<'a> {
    pub token_hash: &'a str,
    pub purpose: Purpose,
    pub user_id: Uuid,
    /// The normalized address the link goes to.
    pub email: &'a str,
    pub now: Millis,
    pub expires_at: Millis,
}

pub(in crate::store) async fn insert<'e>(
    db: impl Executor<'e, Database = Any>,
    t: &NewToken<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO one_time_tokens (token_hash, purpose, user_id, email, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(t.token_hash)
    .bind(t.purpose.as_str())
    .bind(t.user_id.to_string())
    .bind(t.email)
    .bind(t.now)
    .bind(t.expires_at)
    .execute(db)
    .await?;
    Ok(())
}

/// A token that can still be used, with the account it belongs to.
#[derive(Debug, FromRow)]
pub struct LiveToken {
    pub user_id: String,
    /// The normalized address the link was sent to.
    pub email: String,
    /// The account's address as given (what new passwords are checked against).
    pub user_email: String,
}

/// The live token with this hash and purpose, if any. A read before the transaction, so the slow
/// work (hashing the new password) can be done without holding it; `use_token` decides.
pub async fn find_live<'e>(
    db: impl Executor<'e, Database = Any>,
    token_hash: &str,
    purpose: Purpose,
    now: Millis,
) -> Result<Option<LiveToken>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.user_id, t.email, u.email AS user_email \
         FROM one_time_tokens t JOIN users u ON u.id = t.user_id \
         WHERE t.token_hash = $1 AND t.purpose = $2 AND t.used_at IS NULL \
         AND t.revoked_at IS NULL AND t.expires_at > $3",
    )
    .bind(token_hash)
    .bind(purpose.as_str())
    .bind(now)
    .fetch_optional(db)
    .await
}

/// A token just used inside the caller's transaction.
#[derive(Debug, FromRow)]
pub struct UsedToken {
    pub user_id: String,
    pub email: String,
}

/// Uses the token if it is live: one conditional UPDATE, so of two concurrent uses exactly one
/// gets `Some`. `None` means unknown, used, revoked, expired or of another purpose.
pub(in crate::store) async fn use_token<'e>(
    db: impl Executor<'e, Database = Any>,
    token_hash: &str,
    purpose: Purpose,
    now: Millis,
) -> Result<Option<UsedToken>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE one_time_tokens SET used_at = $1 \
         WHERE token_hash = $2 AND purpose = $3 AND used_at IS NULL AND revoked_at IS NULL \
         AND expires_at > $1 \
         RETURNING user_id, email",
    )
    .bind(now)
    .bind(token_hash)
    .bind(purpose.as_str())
    .fetch_optional(db)
    .await
}

/// Revokes every live token of this purpose of a user (a newer one supersedes them, or what they
/// were for has happened); returns how many.
pub(in crate::store) async fn revoke_all<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
    purpose: Purpose,
    now: Millis,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE one_time_tokens SET revoked_at = $1 \
         WHERE user_id = $2 AND purpose = $3 AND used_at IS NULL AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(user_id.to_string())
    .bind(purpose.as_str())
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes tokens that expired before `cutoff` (used or not): nothing can use them any more.
pub(in crate::store) async fn prune<'e>(
    db: impl Executor<'e, Database = Any>,
    cutoff: Millis,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM one_time_tokens WHERE expires_at < $1")
        .bind(cutoff)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

/// An email change's link: the token of `issue_link` plus the new address as typed.
pub(in crate::store) async fn set_new_email<'e>(
    db: impl Executor<'e, Database = Any>,
    token_hash: &str,
    new_email: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE one_time_tokens SET new_email = $1 WHERE token_hash = $2")
        .bind(new_email)
        .bind(token_hash)
        .execute(db)
        .await?;
    Ok(())
}

/// An email change's token just used: whose, and the new address (normalized and as typed).
#[derive(Debug, FromRow)]
pub struct UsedEmailChange {
    pub user_id: String,
    pub email: String,
    pub new_email: Option<String>,
}

/// `use_token` for an email change's link, with the address it changes to.
pub(in crate::store) async fn use_email_change<'e>(
    db: impl Executor<'e, Database = Any>,
    token_hash: &str,
    now: Millis,
) -> Result<Option<UsedEmailChange>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE one_time_tokens SET used_at = $1 \
         WHERE token_hash = $2 AND purpose = $3 AND used_at IS NULL AND revoked_at IS NULL \
         AND expires_at > $1 \
         RETURNING user_id, email, new_email",
    )
    .bind(now)
    .bind(token_hash)
    .bind(Purpose::EmailChange.as_str())
    .fetch_optional(db)
    .await
}
