//! What the admin CLI reads and writes.

use sqlx::{Any, AnyConnection, Executor, FromRow};
use uuid::Uuid;

use super::liveness;
use crate::clock::Millis;

/// A user as the operator sees it.
#[derive(Debug, FromRow)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub email_verified_at: Option<i64>,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
    pub display_name: Option<String>,
    pub last_login_at: Option<i64>,
    pub live_sessions: i64,
}

const USER_COLUMNS: &str = "SELECT u.id, u.email, u.email_verified_at, u.created_at, u.disabled_at, \
     p.display_name, p.last_login_at, \
     (SELECT COUNT(*) FROM sessions s WHERE s.user_id = u.id AND s.revoked_at IS NULL \
        AND s.idle_expires_at > $1 AND s.absolute_expires_at > $1) AS live_sessions \
     FROM users u LEFT JOIN profiles p ON p.user_id = u.id";

/// The newest users first.
pub async fn list_users<'e>(
    db: impl Executor<'e, Database = Any>,
    now: Millis,
    limit: i64,
) -> Result<Vec<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{USER_COLUMNS} ORDER BY u.created_at DESC, u.id DESC LIMIT $2"
    ))
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A user by id or by email (case-insensitive).
pub async fn find_user<'e>(
    db: impl Executor<'e, Database = Any>,
    now: Millis,
    id_or_email: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{USER_COLUMNS} WHERE u.id = $2 OR u.email_normalized = $3"
    ))
    .bind(now)
    .bind(id_or_email.trim())
    // The uniqueness key of the address, as signup computes it; no key when it is no address.
    .bind(
        crate::domain::Email::parse(id_or_email)
            .map(|email| email.normalized().to_owned())
            .unwrap_or_default(),
    )
    .fetch_optional(db)
    .await
}

/// Sets or clears `disabled_at`; returns whether the user exists.
pub(in crate::store) async fn set_disabled(
    c: &mut AnyConnection,
    user_id: Uuid,
    disabled_at: Option<Millis>,
    now: Millis,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE users SET disabled_at = $1, updated_at = $2 WHERE id = $3")
        .bind(disabled_at)
        .bind(now)
        .bind(user_id.to_string())
        .execute(&mut *c)
        .await?;
    liveness::changed(c, user_id).await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes a user; the profile, sessions, refresh tokens and one-time tokens go with it by
/// cascade. Returns whether the user existed.
pub(in crate::store) async fn delete_user(
    c: &mut AnyConnection,
    user_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(user_id.to_string())
        .execute(&mut *c)
        .await?;
    liveness::changed(c, user_id).await?;
    Ok(done.rows_affected() == 1)
}

/// A signing key as the operator sees it (no key material).
#[derive(Debug, FromRow)]
pub struct KeyRow {
    pub kid: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

pub async fn list_keys<'e>(
    db: impl Executor<'e, Database = Any>,
) -> Result<Vec<KeyRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT kid, created_at, retired_at FROM signing_keys ORDER BY created_at DESC, kid DESC",
    )
    .fetch_all(db)
    .await
}
