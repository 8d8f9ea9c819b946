//! The statements of passkeys: the registered credentials and the ceremonies in flight.

use sqlx::{Any, Executor, FromRow};
use uuid::Uuid;

use crate::clock::Millis;
use crate::mfa::passkey::CeremonyKind;

/// A registered passkey as stored.
#[derive(Debug, Clone, FromRow)]
pub struct StoredPasskey {
    pub id: String,
    pub user_id: String,
    pub credential_id: String,
    pub name: String,
    /// webauthn-rs' `Passkey` as JSON.
    pub passkey: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

const COLUMNS: &str = "id, user_id, credential_id, name, passkey, created_at, last_used_at";

/// The user's passkeys, oldest first.
pub async fn list<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
) -> Result<Vec<StoredPasskey>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM passkeys WHERE user_id = $1 ORDER BY created_at, id"
    ))
    .bind(user_id.to_string())
    .fetch_all(db)
    .await
}

/// The passkey an assertion names by its credential id.
pub async fn find_by_credential<'e>(
    db: impl Executor<'e, Database = Any>,
    credential_id: &str,
) -> Result<Option<StoredPasskey>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM passkeys WHERE credential_id = $1"
    ))
    .bind(credential_id)
    .fetch_optional(db)
    .await
}

/// How many passkeys the user has.
pub async fn count<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM passkeys WHERE user_id = $1")
        .bind(user_id.to_string())
        .fetch_one(db)
        .await
}

/// A passkey to store.
#[derive(Debug, Clone)]
pub struct NewPasskey {
    pub id: Uuid,
    pub credential_id: String,
    pub name: String,
    pub passkey: String,
}

/// Inserts a passkey; a credential id that is registered already violates
/// `passkeys_credential_id_key` (mapped by the caller).
pub(in crate::store) async fn insert<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
    p: &NewPasskey,
    now: Millis,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO passkeys (id, user_id, credential_id, name, passkey, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(p.id.to_string())
    .bind(user_id.to_string())
    .bind(&p.credential_id)
    .bind(&p.name)
    .bind(&p.passkey)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// Records a use of the passkey with its credential as updated by the assertion, only if the
/// stored credential is still `seen`, the one the assertion was checked against (a login racing
/// with the same credential, or its removal, makes this false).
pub(in crate::store) async fn record_use<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
    seen: &str,
    updated: &str,
    now: Millis,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE passkeys SET passkey = $1, last_used_at = $2 WHERE id = $3 AND passkey = $4",
    )
    .bind(updated)
    .bind(now)
    .bind(id)
    .bind(seen)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes one of the user's passkeys; whether it was theirs.
pub(in crate::store) async fn remove<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM passkeys WHERE id = $1 AND user_id = $2")
        .bind(id.to_string())
        .bind(user_id.to_string())
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes all the user's passkeys (an operator removing the factors); how many.
pub(in crate::store) async fn remove_all<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM passkeys WHERE user_id = $1")
        .bind(user_id.to_string())
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

/// A ceremony to store at its start.
#[derive(Debug, Clone)]
pub struct NewCeremony {
    pub token_hash: String,
    pub kind: CeremonyKind,
    pub user_id: Option<Uuid>,
    pub mfa_token_hash: Option<String>,
    /// webauthn-rs' ceremony state as JSON.
    pub state: String,
    pub expires_at: Millis,
}

pub(in crate::store) async fn insert_ceremony<'e>(
    db: impl Executor<'e, Database = Any>,
    c: &NewCeremony,
    now: Millis,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO passkey_ceremonies \
             (token_hash, kind, user_id, mfa_token_hash, state, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&c.token_hash)
    .bind(c.kind.as_str())
    .bind(c.user_id.map(|id| id.to_string()))
    .bind(c.mfa_token_hash.as_deref())
    .bind(&c.state)
    .bind(c.expires_at)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// A ceremony as stored.
#[derive(Debug, FromRow)]
pub struct Ceremony {
    pub kind: String,
    pub user_id: Option<String>,
    pub mfa_token_hash: Option<String>,
    pub state: String,
    pub expires_at: i64,
}

impl Ceremony {
    /// Whether it is an unexpired ceremony of `kind`.
    pub fn open(&self, kind: CeremonyKind, now: Millis) -> bool {
        self.kind == kind.as_str() && self.expires_at > now
    }
}

pub async fn find_ceremony<'e>(
    db: impl Executor<'e, Database = Any>,
    token_hash: &str,
) -> Result<Option<Ceremony>, sqlx::Error> {
    sqlx::query_as(
        "SELECT kind, user_id, mfa_token_hash, state, expires_at FROM passkey_ceremonies \
         WHERE token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(db)
    .await
}

/// Spends an unexpired ceremony of `kind`; false when it was spent or expired meanwhile (the
/// row is gone or locked until the commit).
pub(in crate::store) async fn spend_ceremony<'e>(
    db: impl Executor<'e, Database = Any>,
    token_hash: &str,
    kind: CeremonyKind,
    now: Millis,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM passkey_ceremonies WHERE token_hash = $1 AND kind = $2 AND expires_at > $3",
    )
    .bind(token_hash)
    .bind(kind.as_str())
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes ceremonies that expired before `cutoff`; how many.
pub(in crate::store) async fn prune_ceremonies<'e>(
    db: impl Executor<'e, Database = Any>,
    cutoff: Millis,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM passkey_ceremonies WHERE expires_at < $1")
        .bind(cutoff)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}
