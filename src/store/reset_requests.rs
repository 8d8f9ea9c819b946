//! Requests waiting for the mail worker: password resets (see `flows::password`) and passwordless
//! sign-ins (`flows::passwordless`), told apart by `kind`.

use sqlx::{Any, Executor, FromRow};
use uuid::Uuid;

use super::audit::Actor;
use crate::clock::Millis;

pub(in crate::store) async fn insert<'e>(
    db: impl Executor<'e, Database = Any>,
    id: Uuid,
    kind: RequestKind,
    email: &str,
    actor: &Actor,
    now: Millis,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO password_reset_requests (id, email, ip, user_agent, created_at, kind) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id.to_string())
    .bind(email)
    .bind(actor.ip.as_deref())
    .bind(actor.user_agent.as_deref())
    .bind(now)
    .bind(kind.as_str())
    .execute(db)
    .await?;
    Ok(())
}

/// What a request asks the mail worker for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    PasswordReset,
    Passwordless,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::PasswordReset => "password_reset",
            RequestKind::Passwordless => "passwordless",
        }
    }
}

/// Deletes the request; whether this call did (of two workers, one does).
pub(in crate::store) async fn take<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM password_reset_requests WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub(in crate::store) async fn prune<'e>(
    db: impl Executor<'e, Database = Any>,
    cutoff: Millis,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM password_reset_requests WHERE created_at < $1")
        .bind(cutoff)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

#[derive(Debug, FromRow)]
pub struct Pending {
    pub id: String,
    pub email: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// `RequestKind::as_str`.
    pub kind: String,
}

/// The oldest pending requests.
pub async fn pending<'e>(
    db: impl Executor<'e, Database = Any>,
    limit: i64,
) -> Result<Vec<Pending>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, email, ip, user_agent, kind FROM password_reset_requests \
         ORDER BY created_at, id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}
