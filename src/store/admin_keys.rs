//! Admin API keys: created and revoked by the CLI, looked up by id on every admin request. Only
//! the key's hash is stored (see `crate::admin_keys`).

use sqlx::{Any, Executor, FromRow};
use uuid::Uuid;

use super::Store;
use super::audit::{self, Actor};
use super::tx::Done;
use crate::clock::Millis;

/// A key as the operator sees it (no secret, no hash).
#[derive(Debug, Clone, FromRow)]
pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// The stored hash of a live key, by id: what a request's key is compared with.
pub async fn live_hash<'e>(
    db: impl Executor<'e, Database = Any>,
    id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT key_hash FROM admin_keys WHERE id = $1 AND revoked_at IS NULL")
        .bind(id.to_string())
        .fetch_optional(db)
        .await
}

pub async fn list<'e>(db: impl Executor<'e, Database = Any>) -> Result<Vec<KeyRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, name, created_at, revoked_at FROM admin_keys ORDER BY id")
        .fetch_all(db)
        .await
}

impl Store {
    /// Stores a new key's hash with its audit event.
    pub async fn create_admin_key(
        &self,
        id: Uuid,
        name: String,
        key_hash: String,
        now: Millis,
    ) -> Result<(), sqlx::Error> {
        self.write((name, key_hash), move |c, (name, key_hash)| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO admin_keys (id, name, key_hash, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(id.to_string())
                .bind(name)
                .bind(key_hash)
                .bind(now)
                .execute(&mut *c)
                .await?;
                let actor = Actor {
                    admin_key_id: Some(id),
                    ..Actor::default()
                };
                audit::record(&mut *c, audit::Kind::AdminKeyCreated, &actor, now).await?;
                Ok(Done::Commit(()))
            })
        })
        .await
    }

    /// Revokes a key at once (the next request with it is 401); whether it was live.
    pub async fn revoke_admin_key(&self, id: Uuid, now: Millis) -> Result<bool, sqlx::Error> {
        self.write((), move |c, ()| {
            Box::pin(async move {
                let done = sqlx::query(
                    "UPDATE admin_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(id.to_string())
                .execute(&mut *c)
                .await?;
                if done.rows_affected() == 0 {
                    return Ok(Done::Rollback(false));
                }
                let actor = Actor {
                    admin_key_id: Some(id),
                    ..Actor::default()
                };
                audit::record(&mut *c, audit::Kind::AdminKeyRevoked, &actor, now).await?;
                Ok(Done::Commit(true))
            })
        })
        .await
    }
}
