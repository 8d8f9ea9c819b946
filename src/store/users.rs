//! Users and their profiles.

use sqlx::{Any, AnyConnection, Executor, FromRow};
use uuid::Uuid;

use super::liveness;
use crate::clock::Millis;
use crate::domain::{DisplayName, Email, Metadata};

/// A user and its profile, as the API shows them.
#[derive(Debug, Clone, FromRow)]
pub struct Account {
    pub id: String,
    pub email: String,
    pub email_verified_at: Option<i64>,
    pub created_at: i64,
    pub display_name: Option<String>,
    pub profile_created_at: i64,
    pub profile_updated_at: i64,
    pub last_login_at: Option<i64>,
    /// `profile.metadata`, a JSON object as text.
    pub metadata: String,
    /// `user.app_metadata`, a JSON object as text.
    pub app_metadata: String,
}

/// What login needs to check a password.
#[derive(Debug, FromRow)]
pub struct Credentials {
    pub id: String,
    pub password_hash: String,
}

pub(in crate::store) async fn insert_profile<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
    display_name: Option<&DisplayName>,
    metadata: &Metadata,
    now: Millis,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO profiles (user_id, display_name, metadata, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $4)",
    )
    .bind(user_id.to_string())
    .bind(display_name.map(DisplayName::as_str))
    .bind(metadata.as_str())
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn find_credentials<'e>(
    db: impl Executor<'e, Database = Any>,
    email: &Email,
) -> Result<Option<Credentials>, sqlx::Error> {
    // A disabled account is no account, as far as login can tell.
    sqlx::query_as(
        "SELECT id, password_hash FROM users WHERE email_normalized = $1 AND disabled_at IS NULL",
    )
    .bind(email.normalized())
    .fetch_optional(db)
    .await
}

pub async fn find_account<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as(
        "SELECT u.id, u.email, u.email_verified_at, u.created_at, p.display_name, \
                p.created_at AS profile_created_at, p.updated_at AS profile_updated_at, p.last_login_at, \
                p.metadata, u.app_metadata \
         FROM users u JOIN profiles p ON p.user_id = u.id WHERE u.id = $1",
    )
    .bind(user_id.to_string())
    .fetch_optional(db)
    .await
}

/// The account of `user_id` if `session_id` is one of its live sessions: the liveness check of
/// an authenticated request and the read of `GET /auth/me` in one query.
/// An account read through one of its sessions, and until when that session is live.
#[derive(Debug, FromRow)]
pub struct LiveAccount {
    #[sqlx(flatten)]
    pub account: Account,
    pub idle_expires_at: i64,
    pub absolute_expires_at: i64,
}

impl LiveAccount {
    /// The earlier of the session's idle and absolute expiry.
    pub fn live_until(&self) -> Millis {
        self.idle_expires_at.min(self.absolute_expires_at)
    }
}

pub async fn find_live_account<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
    session_id: Uuid,
    now: Millis,
) -> Result<Option<LiveAccount>, sqlx::Error> {
    sqlx::query_as(
        "SELECT u.id, u.email, u.email_verified_at, u.created_at, p.display_name, \
                p.created_at AS profile_created_at, p.updated_at AS profile_updated_at, p.last_login_at, \
                p.metadata, u.app_metadata, s.idle_expires_at, s.absolute_expires_at \
         FROM sessions s JOIN users u ON u.id = s.user_id JOIN profiles p ON p.user_id = u.id \
         WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL \
         AND s.idle_expires_at > $3 AND s.absolute_expires_at > $3 AND u.disabled_at IS NULL",
    )
    .bind(session_id.to_string())
    .bind(user_id.to_string())
    .bind(now)
    .fetch_optional(db)
    .await
}

/// Whether the account still has the verified hash and is not disabled, locking its row until the
/// commit: a reset, change or disable racing the login either committed before (and this finds no
/// row) or waits for the login's commit, and then revokes the session it opened.
pub(in crate::store) async fn lock_credentials<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
    verified_hash: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE users SET password_hash = password_hash \
         WHERE id = $1 AND password_hash = $2 AND disabled_at IS NULL",
    )
    .bind(user_id.to_string())
    .bind(verified_hash)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The password hash of an enabled account, locking its row until the commit (as
/// `lock_credentials` does, for a flow that compares the hash itself); `None` when it is
/// disabled or gone.
pub(in crate::store) async fn lock_enabled<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE users SET password_hash = password_hash \
         WHERE id = $1 AND disabled_at IS NULL RETURNING password_hash",
    )
    .bind(user_id.to_string())
    .fetch_optional(db)
    .await
}

pub(in crate::store) async fn record_login(
    c: &mut AnyConnection,
    user_id: Uuid,
    now: Millis,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE profiles SET last_login_at = $1 WHERE user_id = $2")
        .bind(now)
        .bind(user_id.to_string())
        .execute(&mut *c)
        .await?;
    liveness::changed(c, user_id).await?;
    Ok(())
}

pub(in crate::store) async fn set_display_name(
    c: &mut AnyConnection,
    user_id: Uuid,
    display_name: Option<&DisplayName>,
    now: Millis,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE profiles SET display_name = $1, updated_at = $2 WHERE user_id = $3")
        .bind(display_name.map(DisplayName::as_str))
        .bind(now)
        .bind(user_id.to_string())
        .execute(&mut *c)
        .await?;
    liveness::changed(c, user_id).await?;
    Ok(())
}

/// Replaces `profile.metadata`.
pub(in crate::store) async fn set_metadata(
    c: &mut AnyConnection,
    user_id: Uuid,
    metadata: &Metadata,
    now: Millis,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE profiles SET metadata = $1, updated_at = $2 WHERE user_id = $3")
        .bind(metadata.as_str())
        .bind(now)
        .bind(user_id.to_string())
        .execute(&mut *c)
        .await?;
    liveness::changed(c, user_id).await?;
    Ok(())
}

/// Replaces `user.app_metadata` (the operator's); whether the user exists.
pub(in crate::store) async fn set_app_metadata(
    c: &mut AnyConnection,
    user_id: Uuid,
    app_metadata: &str,
    now: Millis,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE users SET app_metadata = $1, updated_at = $2 WHERE id = $3")
        .bind(app_metadata)
        .bind(now)
        .bind(user_id.to_string())
        .execute(&mut *c)
        .await?;
    liveness::changed(c, user_id).await?;
    Ok(done.rows_affected() == 1)
}

pub(in crate::store) async fn set_password_hash<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
    password_hash: &str,
    now: Millis,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
        .bind(password_hash)
        .bind(now)
        .bind(user_id.to_string())
        .execute(db)
        .await?;
    Ok(())
}

/// What the email flows need to know of a user: where to write and whether it is verified.
#[derive(Debug, Clone, FromRow)]
pub struct Contact {
    pub id: String,
    /// As given at signup.
    pub email: String,
    pub email_verified_at: Option<i64>,
    /// A disabled account gets no reset or verification email (silently: the answer is the same).
    pub disabled_at: Option<i64>,
}

pub async fn find_contact_by_email<'e>(
    db: impl Executor<'e, Database = Any>,
    email: &Email,
) -> Result<Option<Contact>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, email, email_verified_at, disabled_at FROM users WHERE email_normalized = $1",
    )
    .bind(email.normalized())
    .fetch_optional(db)
    .await
}

pub async fn find_contact<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
) -> Result<Option<Contact>, sqlx::Error> {
    sqlx::query_as("SELECT id, email, email_verified_at, disabled_at FROM users WHERE id = $1")
        .bind(user_id.to_string())
        .fetch_optional(db)
        .await
}

/// What a password change needs: the address (new passwords are checked against it) and the hash.
#[derive(Debug, FromRow)]
pub struct OwnCredentials {
    pub email: String,
    pub password_hash: String,
}

pub async fn find_own_credentials<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
) -> Result<Option<OwnCredentials>, sqlx::Error> {
    sqlx::query_as("SELECT email, password_hash FROM users WHERE id = $1")
        .bind(user_id.to_string())
        .fetch_optional(db)
        .await
}

/// Replaces the password hash only if it is still `expected`, the hash the current password was
/// verified against: a change never silently overwrites a reset or change that won a race.
pub(in crate::store) async fn replace_password_hash<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
    expected: &str,
    password_hash: &str,
    now: Millis,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3 AND password_hash = $4",
    )
    .bind(password_hash)
    .bind(now)
    .bind(user_id.to_string())
    .bind(expected)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks the address verified if it is still the user's (normalized) address; keeps the time of
/// the first verification. Returns whether the user has that address.
pub(in crate::store) async fn mark_email_verified(
    c: &mut AnyConnection,
    user_id: Uuid,
    email_normalized: &str,
    now: Millis,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE users SET email_verified_at = COALESCE(email_verified_at, $1) \
         WHERE id = $2 AND email_normalized = $3",
    )
    .bind(now)
    .bind(user_id.to_string())
    .bind(email_normalized)
    .execute(&mut *c)
    .await?;
    liveness::changed(c, user_id).await?;
    Ok(done.rows_affected() == 1)
}

/// Users without a profile: the all-or-nothing invariant, which must always be 0.
pub async fn count_without_profile<'e>(
    db: impl Executor<'e, Database = Any>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM users u LEFT JOIN profiles p ON p.user_id = u.id WHERE p.user_id IS NULL",
    )
    .fetch_one(db)
    .await
}

/// Inserts a user unless its address is taken; whether it was inserted. `ON CONFLICT DO
/// NOTHING` (both databases) instead of the constraint's error, so that a flow that creates many
/// accounts (an import) can report a taken address and go on in the same transaction: on
/// PostgreSQL an error would abort the whole transaction. A concurrent insert of the same address
/// is waited for and then counts as taken.
pub(in crate::store) async fn insert_user_if_new<'e>(
    db: impl Executor<'e, Database = Any>,
    id: Uuid,
    email: &Email,
    password_hash: &str,
    now: Millis,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO users (id, email, email_normalized, password_hash, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (email_normalized) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(email.as_str())
    .bind(email.normalized())
    .bind(password_hash)
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Sets (the time of the first verification is kept) or clears `email_verified_at`; whether the
/// user exists.
pub(in crate::store) async fn set_email_verified(
    c: &mut AnyConnection,
    user_id: Uuid,
    verified: bool,
    now: Millis,
) -> Result<bool, sqlx::Error> {
    let sql = match verified {
        true => {
            "UPDATE users SET email_verified_at = COALESCE(email_verified_at, $1), updated_at = $1 \
             WHERE id = $2"
        }
        false => "UPDATE users SET email_verified_at = NULL, updated_at = $1 WHERE id = $2",
    };
    let done = sqlx::query(sql)
        .bind(now)
        .bind(user_id.to_string())
        .execute(&mut *c)
        .await?;
    liveness::changed(c, user_id).await?;
    Ok(done.rows_affected() == 1)
}

/// Locks the user's row until the commit (the first lock of every flow that changes an account),
/// only while its password hash is still `verified_hash` when one is given; whether it did.
pub(in crate::store) async fn lock_user<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
    verified_hash: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let done = match verified_hash {
        Some(hash) => {
            sqlx::query(
                "UPDATE users SET updated_at = updated_at WHERE id = $1 AND password_hash = $2",
            )
            .bind(user_id.to_string())
            .bind(hash)
            .execute(db)
            .await?
        }
        None => {
            sqlx::query("UPDATE users SET updated_at = updated_at WHERE id = $1")
                .bind(user_id.to_string())
                .execute(db)
                .await?
        }
    };
    Ok(done.rows_affected() == 1)
}

/// Swaps in a new address, verified (its link was opened from that mailbox). The database
/// decides uniqueness: a taken address is the `users_email_normalized_key` violation.
pub(in crate::store) async fn change_email(
    c: &mut AnyConnection,
    user_id: Uuid,
    email: &str,
    email_normalized: &str,
    now: Millis,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE users SET email = $1, email_normalized = $2, email_verified_at = $3, \
         updated_at = $3 WHERE id = $4 AND disabled_at IS NULL",
    )
    .bind(email)
    .bind(email_normalized)
    .bind(now)
    .bind(user_id.to_string())
    .execute(&mut *c)
    .await?;
    liveness::changed(c, user_id).await?;
    Ok(done.rows_affected() == 1)
}

/// Whether an account has this (normalized) address: the early 409 of an email change request.
/// Only a hint: the swap itself lets the database decide.
pub async fn email_taken<'e>(
    db: impl Executor<'e, Database = Any>,
    email: &Email,
) -> Result<bool, sqlx::Error> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT id FROM users WHERE email_normalized = $1")
            .bind(email.normalized())
            .fetch_optional(db)
            .await?;
    Ok(found.is_some())
}

/// `lock_enabled` for an account that must still have the address `email_normalized` (a
/// passwordless code proves that address, not the account): the password hash, or `None` when
/// the account is disabled, gone, or has another address now.
pub(in crate::store) async fn lock_enabled_at<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
    email_normalized: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE users SET password_hash = password_hash \
         WHERE id = $1 AND disabled_at IS NULL AND email_normalized = $2 RETURNING password_hash",
    )
    .bind(user_id.to_string())
    .bind(email_normalized)
    .fetch_optional(db)
    .await
}
