//! Users and their profiles.

use sqlx::{Any, Executor, FromRow};
use uuid::Uuid;

use crate::clock::Millis;
use crate::domain::{DisplayName, Email};

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
}

/// What login needs to check a password.
#[derive(Debug, FromRow)]
pub struct Credentials {
    pub id: String,
    pub password_hash: String,
}

/// Inserts a user. A taken email is a unique violation (see `store::is_unique_violation`).
pub async fn insert_user<'e>(
    db: impl Executor<'e, Database = Any>,
    id: Uuid,
    email: &Email,
    password_hash: &str,
    now: Millis,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO users (id, email, email_normalized, password_hash, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(id.to_string())
    .bind(email.as_str())
    .bind(email.normalized())
    .bind(password_hash)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn insert_profile<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
    display_name: Option<&DisplayName>,
    now: Millis,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO profiles (user_id, display_name, created_at, updated_at) VALUES ($1, $2, $3, $3)",
    )
    .bind(user_id.to_string())
    .bind(display_name.map(DisplayName::as_str))
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn find_credentials<'e>(
    db: impl Executor<'e, Database = Any>,
    email: &Email,
) -> Result<Option<Credentials>, sqlx::Error> {
    sqlx::query_as("SELECT id, password_hash FROM users WHERE email_normalized = $1")
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
                p.created_at AS profile_created_at, p.updated_at AS profile_updated_at, p.last_login_at \
         FROM users u JOIN profiles p ON p.user_id = u.id WHERE u.id = $1",
    )
    .bind(user_id.to_string())
    .fetch_optional(db)
    .await
}

pub async fn record_login<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
    now: Millis,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE profiles SET last_login_at = $1 WHERE user_id = $2")
        .bind(now)
        .bind(user_id.to_string())
        .execute(db)
        .await?;
    Ok(())
}

pub async fn set_display_name<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
    display_name: Option<&DisplayName>,
    now: Millis,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE profiles SET display_name = $1, updated_at = $2 WHERE user_id = $3")
        .bind(display_name.map(DisplayName::as_str))
        .bind(now)
        .bind(user_id.to_string())
        .execute(db)
        .await?;
    Ok(())
}

pub async fn set_password_hash<'e>(
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
