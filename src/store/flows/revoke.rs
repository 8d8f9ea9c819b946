//! Ending sessions: logout, logout-all, revoking one's own session, and the operator's disable,
//! enable, delete and revoke-all. Each is the revocation (or deletion) and its audit event in one
//! transaction; each returns what it changed, so the caller counts only real revocations.

use uuid::Uuid;

use crate::clock::Millis;
use crate::failpoint::failpoint;
use crate::store::audit::{self, Actor};
use crate::store::sessions::{self, Reason};
use crate::store::tx::Done;
use crate::store::{Store, admin};

impl Store {
    /// Revokes one session (logout); whether it was live.
    pub async fn logout(
        &self,
        session_id: Uuid,
        actor: Actor,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        self.record(actor, move |c, actor| {
            Box::pin(async move {
                if !sessions::revoke_session(&mut *c, session_id, Reason::Logout, now).await? {
                    return Ok(Done::Commit(false));
                }
                audit::record(&mut *c, audit::Kind::Logout, actor, now).await?;
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
        self.record(actor, move |c, actor| {
            Box::pin(async move {
                let revoked =
                    sessions::revoke_all_sessions(&mut *c, user_id, Reason::LogoutAll, now).await?;
                audit::record(&mut *c, audit::Kind::LogoutAll, actor, now).await?;
                failpoint!("logout_all.before_commit");
                Ok(Done::Commit(revoked))
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
        self.record(actor, move |c, actor| {
            Box::pin(async move {
                let reason = Reason::RevokedByUser;
                if !sessions::revoke_own_session(&mut *c, session_id, user_id, reason, now).await? {
                    return Ok(Done::Rollback(false));
                }
                audit::record(&mut *c, audit::Kind::SessionRevoked, actor, now).await?;
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
        self.record((), move |c, ()| {
            Box::pin(async move {
                if !admin::set_disabled(&mut *c, user_id, disable.then_some(now), now).await? {
                    return Ok(Done::Rollback(None));
                }
                let revoked = match disable {
                    true => {
                        sessions::revoke_all_sessions(&mut *c, user_id, Reason::UserDisabled, now)
                            .await?
                    }
                    false => 0,
                };
                let kind = match disable {
                    true => audit::Kind::UserDisabled,
                    false => audit::Kind::UserEnabled,
                };
                audit::record(&mut *c, kind, &Actor::user(user_id), now).await?;
                Ok(Done::Commit(Some(revoked)))
            })
        })
        .await
    }

    /// Deletes an account (cascading to its profile, sessions and tokens) with its audit event,
    /// which outlives it; whether there was one.
    pub async fn delete_user(&self, user_id: Uuid, now: Millis) -> Result<bool, sqlx::Error> {
        self.record((), move |c, ()| {
            Box::pin(async move {
                if !admin::delete_user(&mut *c, user_id).await? {
                    return Ok(Done::Rollback(false));
                }
                audit::record(
                    &mut *c,
                    audit::Kind::UserDeleted,
                    &Actor::user(user_id),
                    now,
                )
                .await?;
                Ok(Done::Commit(true))
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
        self.record((), move |c, ()| {
            Box::pin(async move {
                let reason = Reason::RevokedByAdmin;
                let revoked = sessions::revoke_all_sessions(&mut *c, user_id, reason, now).await?;
                let kind = audit::Kind::SessionsRevokedByAdmin;
                audit::record(&mut *c, kind, &Actor::user(user_id), now).await?;
                Ok(Done::Commit(revoked))
            })
        })
        .await
    }
}
