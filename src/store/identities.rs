//! The statements of identities: which account at which OpenID provider is which user.

use sqlx::{Any, Executor, FromRow};
use uuid::Uuid;

use crate::clock::Millis;

/// An identity as stored.
#[derive(Debug, Clone, FromRow)]
pub struct StoredIdentity {
    pub id: String,
    pub user_id: String,
    pub provider: String,
    pub subject: String,
    pub email: Option<String>,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
}

const COLUMNS: &str = "id, user_id, provider, subject, email, created_at, last_login_at";

/// The user's identities, oldest first.
pub async fn list<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
) -> Result<Vec<StoredIdentity>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM identities WHERE user_id = $1 ORDER BY created_at, id"
    ))
    .bind(user_id.to_string())
    .fetch_all(db)
    .await
}

/// The identity of a provider's account.
pub async fn find<'e>(
    db: impl Executor<'e, Database = Any>,
    provider: &str,
    subject: &str,
) -> Result<Option<StoredIdentity>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM identities WHERE provider = $1 AND subject = $2"
    ))
    .bind(provider)
    .bind(subject)
    .fetch_optional(db)
    .await
}

/// An identity to store.
#[derive(Debug, Clone)]
pub struct NewIdentity {
    pub id: Uuid,
    pub provider: String,
    pub subject: String,
    pub email: Option<String>,
}

/// Inserts an identity; a provider's account that is linked already violates
/// `identities_provider_subject_key` (mapped by the caller).
pub(in crate::store) async fn insert<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
    i: &NewIdentity,
    now: Millis,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO identities (id, user_id, provider, subject, email, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(i.id.to_string())
    .bind(user_id.to_string())
    .bind(&i.provider)
    .bind(&i.subject)
    .bind(&i.email)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// Records a sign-in with the identity (and the address the provider says it has now), if it
/// is still this user's: whether it was (the row is locked until the commit, so an unlink
/// racing it waits or wins).
pub(in crate::store) async fn touch<'e>(
    db: impl Executor<'e, Database = Any>,
    i: &NewIdentity,
    user_id: Uuid,
    now: Millis,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE identities SET last_login_at = $1, email = $2 \
         WHERE provider = $3 AND subject = $4 AND user_id = $5",
    )
    .bind(now)
    .bind(&i.email)
    .bind(&i.provider)
    .bind(&i.subject)
    .bind(user_id.to_string())
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes one of the user's identities: whether it was there.
pub(in crate::store) async fn delete<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM identities WHERE id = $1 AND user_id = $2")
        .bind(id.to_string())
        .bind(user_id.to_string())
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// How many identities the user has.
pub async fn count<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM identities WHERE user_id = $1")
        .bind(user_id.to_string())
        .fetch_one(db)
        .await
}
