//! Webhook events, written by the flows inside their own transaction: an event exists exactly
//! when what it tells about was committed (a flow that rolls back, fails or is abandoned sends
//! nothing), and is delivered after the commit by the webhook worker.
//!
//! `data` is built here from the rows as the transaction sees them, with the same fields the API
//! shows (`webhooks::event::data`): the user (with `app_metadata`), the profile (with `metadata`)
//! and, where there is one, `session_id`. Nothing else of the rows goes in: no hash, no token.
//! When no endpoint wants the event's type nothing is read or written.

use uuid::Uuid;

use crate::clock::Millis;
use crate::store::sessions::{self, Reason};
use crate::store::tx::Conn;
use crate::store::users::{self, Account};
use crate::store::webhooks::{self, Routes};
use crate::webhooks::event::{self, EventType};

/// An event about `user_id`, as the user is now in this transaction.
pub(super) async fn user(
    c: &mut Conn,
    hooks: &Routes,
    event: EventType,
    user_id: Uuid,
    session_id: Option<Uuid>,
    now: Millis,
) -> Result<(), sqlx::Error> {
    if !hooks.wants(event) {
        return Ok(());
    }
    let account = find(c, user_id).await?;
    let session = session_id.map(|id| id.to_string());
    about(c, hooks, event, &account, session.as_deref(), None, now).await
}

/// An event about an account already read (a deleted user, read before the deletion).
pub(super) async fn about(
    c: &mut Conn,
    hooks: &Routes,
    event: EventType,
    account: &Account,
    session_id: Option<&str>,
    reason: Option<Reason>,
    now: Millis,
) -> Result<(), sqlx::Error> {
    if !hooks.wants(event) {
        return Ok(());
    }
    let data = event::data(account, session_id, reason.map(Reason::as_str));
    let body = event::body(event, data, now);
    let id = event::new_id();
    webhooks::enqueue(c, hooks, event, &id, &body, now).await
}

/// One `session.revoked` per session in `session_ids`, all revoked for `reason`.
pub(super) async fn sessions_revoked(
    c: &mut Conn,
    hooks: &Routes,
    user_id: Uuid,
    session_ids: &[String],
    reason: Reason,
    now: Millis,
) -> Result<(), sqlx::Error> {
    let event = EventType::SessionRevoked;
    if session_ids.is_empty() || !hooks.wants(event) {
        return Ok(());
    }
    let account = find(c, user_id).await?;
    for id in session_ids {
        about(c, hooks, event, &account, Some(id), Some(reason), now).await?;
    }
    Ok(())
}

/// `session.revoked` for one session whose owner the flow does not know (logout by cookie).
pub(super) async fn session_revoked(
    c: &mut Conn,
    hooks: &Routes,
    session_id: Uuid,
    reason: Reason,
    now: Millis,
) -> Result<(), sqlx::Error> {
    if !hooks.wants(EventType::SessionRevoked) {
        return Ok(());
    }
    let Some(owner) = sessions::owner(&mut *c, session_id).await? else {
        return Ok(());
    };
    let user_id = crate::store::parse_id(&owner).map_err(|e| sqlx::Error::Decode(e.into()))?;
    sessions_revoked(c, hooks, user_id, &[session_id.to_string()], reason, now).await
}

/// The account, which the flow's own statements just touched.
pub(super) async fn find(c: &mut Conn, user_id: Uuid) -> Result<Account, sqlx::Error> {
    users::find_account(&mut *c, user_id)
        .await?
        .ok_or_else(|| sqlx::Error::Protocol("account vanished inside its transaction".into()))
}
