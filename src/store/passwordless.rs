//! Passwordless sign-in codes (see `crate::passwordless` and `flows::passwordless`).
//!
//! A row is live while unused, unexpired and under the failure limit. It is used by one
//! conditional UPDATE, so of two requests racing with one code or link exactly one gets it.

use sqlx::{Any, Executor, FromRow};
use uuid::Uuid;

use crate::clock::Millis;
use crate::passwordless::MAX_ATTEMPTS;

/// A code to store, prepared before the transaction.
#[derive(Debug, Clone)]
pub struct NewCode {
    pub token_hash: String,
    pub code_hash: String,
    pub email_normalized: String,
    /// The address the email goes to: the one on file, or as typed for a new account.
    pub email: String,
    /// `None`: no account yet (created on first use).
    pub user_id: Option<Uuid>,
    pub expires_at: Millis,
}

/// Replaces the unused code of the address (if any) with `code`.
pub(in crate::store) async fn replace(
    c: &mut sqlx::AnyConnection,
    code: &NewCode,
    now: Millis,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM passwordless_codes WHERE email_normalized = $1 AND used_at IS NULL")
        .bind(&code.email_normalized)
        .execute(&mut *c)
        .await?;
    sqlx::query(
        "INSERT INTO passwordless_codes \
         (token_hash, code_hash, email_normalized, email, user_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&code.token_hash)
    .bind(&code.code_hash)
    .bind(&code.email_normalized)
    .bind(&code.email)
    .bind(code.user_id.map(|id| id.to_string()))
    .bind(now)
    .bind(code.expires_at)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// A live code, read before the sign-in's transaction.
#[derive(Debug, Clone, FromRow)]
pub struct Live {
    pub token_hash: String,
    pub code_hash: String,
    pub email_normalized: String,
    pub email: String,
    pub user_id: Option<String>,
}

const LIVE: &str = "used_at IS NULL AND expires_at > $2 AND attempts < $3";

/// The live code of the link whose token hashes to `token_hash`.
pub async fn find_by_token<'e>(
    db: impl Executor<'e, Database = Any>,
    token_hash: &str,
    now: Millis,
) -> Result<Option<Live>, sqlx::Error> {
    let sql = format!(
        "SELECT token_hash, code_hash, email_normalized, email, user_id \
         FROM passwordless_codes WHERE token_hash = $1 AND {LIVE}"
    );
    sqlx::query_as(&sql)
        .bind(token_hash)
        .bind(now)
        .bind(MAX_ATTEMPTS)
        .fetch_optional(db)
        .await
}

/// The live code of an address, counted as one more attempt (before it is compared, so that
/// parallel guesses cannot pass the limit); `None` when the address has none.
pub(in crate::store) async fn count_attempt(
    c: &mut sqlx::AnyConnection,
    email_normalized: &str,
    now: Millis,
) -> Result<Option<Live>, sqlx::Error> {
    let sql = format!(
        "SELECT token_hash, code_hash, email_normalized, email, user_id \
         FROM passwordless_codes WHERE email_normalized = $1 AND {LIVE} \
         ORDER BY created_at DESC LIMIT 1"
    );
    let live: Option<Live> = sqlx::query_as(&sql)
        .bind(email_normalized)
        .bind(now)
        .bind(MAX_ATTEMPTS)
        .fetch_optional(&mut *c)
        .await?;
    let Some(live) = live else {
        return Ok(None);
    };
    // Conditional, so that of attempts racing for the last try only as many as the limit count.
    let counted = sqlx::query(
        "UPDATE passwordless_codes SET attempts = attempts + 1 \
         WHERE token_hash = $1 AND used_at IS NULL AND attempts < $2",
    )
    .bind(&live.token_hash)
    .bind(MAX_ATTEMPTS)
    .execute(&mut *c)
    .await?;
    Ok((counted.rows_affected() == 1).then_some(live))
}

/// A code just used inside the caller's transaction.
#[derive(Debug, FromRow)]
pub struct Used {
    pub user_id: Option<String>,
    pub email_normalized: String,
    pub email: String,
}

/// How a code is presented, which decides how many attempts it may have had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// The link: live while under the limit.
    Link,
    /// The code: its own attempt was counted already (`count_attempt`), so it may be the last.
    Code,
}

/// Uses the code if it is live: one conditional UPDATE, so of two concurrent uses exactly one
/// gets `Some`.
pub(in crate::store) async fn spend<'e>(
    db: impl Executor<'e, Database = Any>,
    token_hash: &str,
    by: By,
    now: Millis,
) -> Result<Option<Used>, sqlx::Error> {
    let allowed = match by {
        By::Link => MAX_ATTEMPTS - 1,
        By::Code => MAX_ATTEMPTS,
    };
    sqlx::query_as(
        "UPDATE passwordless_codes SET used_at = $1 \
         WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 AND attempts <= $3 \
         RETURNING user_id, email_normalized, email",
    )
    .bind(now)
    .bind(token_hash)
    .bind(allowed)
    .fetch_optional(db)
    .await
}

/// Deletes the user's unused codes (a reset or password change: the owner took the account back).
pub(in crate::store) async fn revoke_for_user<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM passwordless_codes WHERE user_id = $1 AND used_at IS NULL")
        .bind(user_id.to_string())
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

/// Deletes every code of the user and of its address (a deletion: no table keeps the address;
/// a code for the address without an account may be pending too).
pub(in crate::store) async fn purge_for_user<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM passwordless_codes WHERE user_id = $1 \
         OR email_normalized = (SELECT email_normalized FROM users WHERE id = $1)",
    )
    .bind(user_id.to_string())
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes codes that expired before `cutoff`, used or not.
pub(in crate::store) async fn prune<'e>(
    db: impl Executor<'e, Database = Any>,
    cutoff: Millis,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM passwordless_codes WHERE expires_at < $1")
        .bind(cutoff)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}
