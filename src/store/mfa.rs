//! The statements of the second factor: TOTP secrets, recovery codes, login challenges.

use sqlx::{Any, Executor, FromRow};
use uuid::Uuid;

use crate::clock::Millis;

/// A user's TOTP secret as stored.
#[derive(Debug, FromRow)]
pub struct Totp {
    pub sealed_secret: String,
    pub confirmed_at: Option<i64>,
    pub last_step: i64,
}

pub async fn find_totp<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
) -> Result<Option<Totp>, sqlx::Error> {
    sqlx::query_as("SELECT sealed_secret, confirmed_at, last_step FROM mfa_totp WHERE user_id = $1")
        .bind(user_id.to_string())
        .fetch_optional(db)
        .await
}

/// Whether the user has a confirmed second factor.
pub(in crate::store) async fn has_factor<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let found: Option<(i64,)> =
        sqlx::query_as("SELECT 1 FROM mfa_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL")
            .bind(user_id.to_string())
            .fetch_optional(db)
            .await?;
    Ok(found.is_some())
}

/// Whether the user has a way to sign in beyond the password: a confirmed TOTP secret or a
/// passkey (the changes that need a session signed in with one, `aal` 2).
pub async fn has_strong_sign_in<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let found: Option<(i64,)> = sqlx::query_as(
        "SELECT 1 FROM mfa_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL \
         UNION ALL SELECT 1 FROM passkeys WHERE user_id = $1",
    )
    .bind(user_id.to_string())
    .fetch_optional(db)
    .await?;
    Ok(found.is_some())
}

/// Stores a new unconfirmed secret, replacing an unconfirmed one; false when a confirmed one
/// exists (it stays).
pub(in crate::store) async fn put_pending<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
    sealed_secret: &str,
    now: Millis,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO mfa_totp (user_id, sealed_secret, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE SET sealed_secret = excluded.sealed_secret, \
             created_at = excluded.created_at, last_step = 0 \
         WHERE mfa_totp.confirmed_at IS NULL",
    )
    .bind(user_id.to_string())
    .bind(sealed_secret)
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Confirms the pending secret that was checked (`sealed_secret`), with the step of the code
/// that confirmed it; false when it is no longer the pending one.
pub(in crate::store) async fn confirm<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
    sealed_secret: &str,
    step: i64,
    now: Millis,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE mfa_totp SET confirmed_at = $1, last_step = $2 \
         WHERE user_id = $3 AND sealed_secret = $4 AND confirmed_at IS NULL",
    )
    .bind(now)
    .bind(step)
    .bind(user_id.to_string())
    .bind(sealed_secret)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Accepts a code of `step`: only if it is later than the last accepted one (a replay, or a race
/// with the same code, changes nothing and gets false).
pub(in crate::store) async fn accept_step<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
    step: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE mfa_totp SET last_step = $1 \
         WHERE user_id = $2 AND confirmed_at IS NOT NULL AND last_step < $1",
    )
    .bind(step)
    .bind(user_id.to_string())
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes the user's second factor (secret, recovery codes, open challenges); whether there was
/// a secret.
pub(in crate::store) async fn remove(
    c: &mut sqlx::AnyConnection,
    user_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let id = user_id.to_string();
    for table in ["mfa_recovery_codes", "mfa_challenges"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1"))
            .bind(&id)
            .execute(&mut *c)
            .await?;
    }
    let done = sqlx::query("DELETE FROM mfa_totp WHERE user_id = $1")
        .bind(&id)
        .execute(&mut *c)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Replaces the user's recovery codes.
pub(in crate::store) async fn replace_recovery_codes(
    c: &mut sqlx::AnyConnection,
    user_id: Uuid,
    hashes: &[String],
    now: Millis,
) -> Result<(), sqlx::Error> {
    let id = user_id.to_string();
    sqlx::query("DELETE FROM mfa_recovery_codes WHERE user_id = $1")
        .bind(&id)
        .execute(&mut *c)
        .await?;
    for hash in hashes {
        sqlx::query(
            "INSERT INTO mfa_recovery_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)",
        )
        .bind(&id)
        .bind(hash)
        .bind(now)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

/// Spends one recovery code; false when it is not one of the user's unused codes.
pub(in crate::store) async fn spend_recovery_code<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
    hash: &str,
    now: Millis,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE mfa_recovery_codes SET used_at = $1 \
         WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
    )
    .bind(now)
    .bind(user_id.to_string())
    .bind(hash)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A login challenge as stored.
#[derive(Debug, FromRow)]
pub struct Challenge {
    pub user_id: String,
    pub credential: String,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub failures: i64,
    /// The factor the challenge follows (`SignIn::as_str`).
    pub first_factor: String,
}

impl Challenge {
    /// Whether its `mfa_token` can still be spent.
    pub fn open(&self, now: Millis, max_failures: i64) -> bool {
        self.used_at.is_none() && self.expires_at > now && self.failures < max_failures
    }
}

pub(in crate::store) async fn insert_challenge<'e>(
    db: impl Executor<'e, Database = Any>,
    token_hash: &str,
    user_id: Uuid,
    credential: &str,
    (expires_at, first_factor): (Millis, crate::tokens::SignIn),
    now: Millis,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO mfa_challenges \
         (token_hash, user_id, credential, expires_at, created_at, first_factor) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(token_hash)
    .bind(user_id.to_string())
    .bind(credential)
    .bind(expires_at)
    .bind(now)
    .bind(first_factor.as_str())
    .execute(db)
    .await?;
    Ok(())
}

pub async fn find_challenge<'e>(
    db: impl Executor<'e, Database = Any>,
    token_hash: &str,
) -> Result<Option<Challenge>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, credential, expires_at, used_at, failures, first_factor \
         FROM mfa_challenges \
         WHERE token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(db)
    .await
}

/// Spends a challenge that is still open; false when it was spent, expired or failed out
/// meanwhile (the row is locked until the commit).
pub(in crate::store) async fn spend_challenge<'e>(
    db: impl Executor<'e, Database = Any>,
    token_hash: &str,
    now: Millis,
    max_failures: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE mfa_challenges SET used_at = $1 \
         WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 AND failures < $3",
    )
    .bind(now)
    .bind(token_hash)
    .bind(max_failures)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Counts a wrong code against a challenge.
pub(in crate::store) async fn count_failure<'e>(
    db: impl Executor<'e, Database = Any>,
    token_hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE mfa_challenges SET failures = failures + 1 WHERE token_hash = $1")
        .bind(token_hash)
        .execute(db)
        .await?;
    Ok(())
}
