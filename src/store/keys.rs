//! Signing keys (see `crate::keys`).

use super::Store;
use super::tx::{Conn, Done};
use crate::clock::Millis;
use crate::keys::StoredKey;

/// Inserts `key` if there is no active key yet (first start); returns whether it did. The check
/// is inside the write transaction, so of two processes starting at once on SQLite only one
/// inserts (on PostgreSQL both may, which leaves two valid keys: harmless).
pub async fn insert_first(store: &Store, key: &StoredKey) -> Result<bool, sqlx::Error> {
    store
        .record(key.clone(), |c, key| {
            Box::pin(async move {
                let active: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM signing_keys WHERE retired_at IS NULL",
                )
                .fetch_one(&mut *c)
                .await?;
                if active > 0 {
                    return Ok(Done::Rollback(false));
                }
                insert(c, key).await?;
                Ok(Done::Commit(true))
            })
        })
        .await
}

/// Retires every active key and inserts `key`, in one transaction; with `made_before`, only if the
/// active keys were all made before then. Returns whether it rotated.
pub async fn rotate(
    store: &Store,
    key: &StoredKey,
    made_before: Option<Millis>,
) -> Result<bool, sqlx::Error> {
    store
        .record(key.clone(), move |c, key| {
            Box::pin(async move {
                // Conditional rotation retires only keys older than the cutoff. Of two instances
                // racing, the second either blocks on the first's row lock and then finds the old
                // key retired (PostgreSQL re-checks the condition), or starts after the first
                // committed and finds only the fresh key, too young to retire: either way it
                // retires nothing and adds nothing.
                let retired = sqlx::query(
                    "UPDATE signing_keys SET retired_at = $1 \
                     WHERE retired_at IS NULL AND created_at < $2",
                )
                .bind(key.created_at)
                .bind(made_before.unwrap_or(i64::MAX))
                .execute(&mut *c)
                .await?
                .rows_affected();
                if retired == 0 && made_before.is_some() {
                    return Ok(Done::Rollback(false));
                }
                insert(c, key).await?;
                Ok(Done::Commit(true))
            })
        })
        .await
}

async fn insert(c: &mut Conn, key: &StoredKey) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, public_key, sealed_private_key, created_at, retired_at) \
         VALUES ($1, $2, $3, $4, NULL)",
    )
    .bind(&key.kid)
    .bind(&key.public_key)
    .bind(&key.sealed_private_key)
    .bind(key.created_at)
    .execute(c)
    .await?;
    Ok(())
}

/// Keys that are active or were retired after `retired_after`, newest first.
pub async fn live(store: &Store, retired_after: Millis) -> Result<Vec<StoredKey>, sqlx::Error> {
    sqlx::query_as(
        "SELECT kid, public_key, sealed_private_key, created_at, retired_at FROM signing_keys \
         WHERE retired_at IS NULL OR retired_at > $1 ORDER BY created_at DESC, kid DESC",
    )
    .bind(retired_after)
    .fetch_all(store.reader())
    .await
}
