//! Ending sessions: logout, logout-all, revoking one's own session, and the operator's disable,
//! enable and revoke-all (deletion is `accounts`). Each is the revocation (or deletion), its audit event and its
//! webhook events in one transaction; each returns what it changed, so the caller counts only
//! real revocations.
//!
//! Every session that a flow revokes gets its `session.revoked` event with the reason, whichever
//! flow revoked it (logout, logout-all, a reset, a change, a disable, the operator, a reused
//! refresh token): an app that keeps state per session hears of every session that ended early.
//! A deleted account's sessions go with it: `user.deleted` says so, and no `session.revoked`
//! follows.

use uuid::Uuid;

use super::events;
use crate::clock::Millis;
use crate::failpoint::failpoint;
use crate::store::audit::{self, Actor};
use crate::store::sessions::{self, Reason};
use crate::store::tx::{Conn, Done};
use crate::store::webhooks::Routes;
use crate::store::{Store, admin};
use crate::webhooks::event::EventType;

impl Store {
    /// Revokes one session (logout); whether it was live.
    pub async fn logout(
        &self,
        session_id: Uuid,
        actor: Actor,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        self.record_evented(actor, move |c, (actor, hooks)| {
            Box::pin(async move {
                let reason = Reason::Logout;
                if !sessions::revoke_session(&mut *c, session_id, reason, now).await? {
                    return Ok(Done::Commit(false));
                }
                audit::record(&mut *c, audit::Kind::Logout, actor, now).await?;
                events::session_revoked(c, hooks, session_id, reason, now).await?;
                failpoint!("logout.before_commit");
                Ok(Done::Commit(true))
            })
        })
        .await
    }

    /// Revokes every live session of the user (logout-all); how many.
    pub async fn logout_all(
        &self,
        user_id: Uuid,
        actor: Actor,
        now: Millis,
    ) -> Result<u64, sqlx::Error> {
        self.record_evented(actor, move |c, (actor, hooks)| {
            Box::pin(async move {
                let reason = Reason::LogoutAll;
                let revoked = sessions::revoke_all_sessions(&mut *c, user_id, reason, now).await?;
                audit::record(&mut *c, audit::Kind::LogoutAll, actor, now).await?;
                events::sessions_revoked(c, hooks, user_id, &revoked, reason, now).await?;
                failpoint!("logout_all.before_commit");
                Ok(Done::Commit(revoked.len() as u64))
            })
        })
        .await
    }

    /// Revokes one live session of the user by id; whether there was one.
    pub async fn revoke_own_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        actor: Actor,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        self.record_evented(actor, move |c, (actor, hooks)| {
            Box::pin(async move {
                let reason = Reason::RevokedByUser;
                if !sessions::revoke_own_session(&mut *c, session_id, user_id, reason, now).await? {
                    return Ok(Done::Rollback(false));
                }
                audit::record(&mut *c, audit::Kind::SessionRevoked, actor, now).await?;
                let ids = [session_id.to_string()];
                events::sessions_revoked(c, hooks, user_id, &ids, reason, now).await?;
                failpoint!("session_revoke.before_commit");
                Ok(Done::Commit(true))
            })
        })
        .await
    }

    /// Disables or enables an account (the operator); disabling revokes every session in the
    /// same transaction, and no login verified before it can open one after it (see `login`).
    /// How many sessions were revoked, or `None` when there is no such user.
    pub async fn set_disabled(
        &self,
        user_id: Uuid,
        disable: bool,
        now: Millis,
    ) -> Result<Option<u64>, sqlx::Error> {
        self.record_evented((), move |c, ((), hooks)| {
            Box::pin(async move {
                let actor = Actor::user(user_id);
                Ok(
                    match set_disabled(c, hooks, user_id, disable, &actor, now).await? {
                        Some(revoked) => Done::Commit(Some(revoked)),
                        None => Done::Rollback(None),
                    },
                )
            })
        })
        .await
    }

    /// Revokes every session of a user (the operator); how many.
    pub async fn revoke_sessions_by_admin(
        &self,
        user_id: Uuid,
        now: Millis,
    ) -> Result<u64, sqlx::Error> {
        self.record_evented((), move |c, ((), hooks)| {
            Box::pin(async move {
                let actor = Actor::user(user_id);
                let revoked = revoke_all_by_admin(c, hooks, user_id, &actor, now).await?;
                Ok(Done::Commit(revoked))
            })
        })
        .await
    }

    /// Replaces a user's `app_metadata` (the operator's; users cannot write it); whether there is
    /// such a user.
    pub async fn set_app_metadata(
        &self,
        user_id: Uuid,
        app_metadata: String,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        self.record(app_metadata, move |c, app_metadata| {
            Box::pin(async move {
                let set =
                    crate::store::users::set_app_metadata(&mut *c, user_id, app_metadata, now)
                        .await?;
                Ok(if set {
                    Done::Commit(true)
                } else {
                    Done::Rollback(false)
                })
            })
        })
        .await
    }
}

/// Disables or enables an account inside the caller's transaction: disabling revokes every
/// session with it. How many sessions were revoked, or `None` when there is no such user. Shared
/// by the CLI's disable and enable and the admin API's `PATCH`.
pub(super) async fn set_disabled(
    c: &mut Conn,
    hooks: &Routes,
    user_id: Uuid,
    disable: bool,
    actor: &Actor,
    now: Millis,
) -> Result<Option<u64>, sqlx::Error> {
    if !admin::set_disabled(&mut *c, user_id, disable.then_some(now), now).await? {
        return Ok(None);
    }
    if !disable {
        audit::record(&mut *c, audit::Kind::UserEnabled, actor, now).await?;
        return Ok(Some(0));
    }
    let reason = Reason::UserDisabled;
    let revoked = sessions::revoke_all_sessions(&mut *c, user_id, reason, now).await?;
    audit::record(&mut *c, audit::Kind::UserDisabled, actor, now).await?;
    events::user(c, hooks, EventType::UserDisabled, user_id, None, now).await?;
    events::sessions_revoked(c, hooks, user_id, &revoked, reason, now).await?;
    Ok(Some(revoked.len() as u64))
}

/// Revokes every session of a user inside the caller's transaction (the operator); the ids.
pub(super) async fn revoke_all_by_admin(
    c: &mut Conn,
    hooks: &Routes,
    user_id: Uuid,
    actor: &Actor,
    now: Millis,
) -> Result<u64, sqlx::Error> {
    let reason = Reason::RevokedByAdmin;
    let revoked = sessions::revoke_all_sessions(&mut *c, user_id, reason, now).await?;
    let kind = audit::Kind::SessionsRevokedByAdmin;
    audit::record(&mut *c, kind, actor, now).await?;
    events::sessions_revoked(c, hooks, user_id, &revoked, reason, now).await?;
    Ok(revoked.len() as u64)
}
