//! Passwords: the reset request, the reset link issued for it, the reset itself, and the change.
//!
//! A reset request does the same work whether or not the address has an account: it takes the
//! address's throttle slot and writes one request row, nothing else, so its answer time tells
//! nothing. The mail worker then looks the address up and, for an account, issues the link and
//! its email in a transaction of its own (`issue_reset_link`), outside any request.
//!
//! A new reset link does not revoke the earlier unexpired ones (an attacker asking for links
//! must not be able to kill the one the owner is about to open); using any one of them revokes
//! them all.

use uuid::Uuid;

use super::{
    NewLink, NewMail, SessionRef, Throttle, claim, enqueue, events, issue_link, lock_live_session,
};
use crate::clock::Millis;
use crate::failpoint::failpoint;
use crate::store::audit::{self, Actor};
use crate::store::rate_limits::{self, Refund};
use crate::store::reset_requests::RequestKind;
use crate::store::sessions::{self, Reason};
use crate::store::tx::{Conn, Done};
use crate::store::webhooks::Routes;
use crate::store::{Store, one_time_tokens, passwordless, reset_requests, users};
use crate::tokens::Purpose;
use crate::webhooks::event::EventType;

/// A reset request: the address as typed (valid), and who asked.
#[derive(Debug)]
pub struct NewResetRequest {
    pub email: String,
    pub throttle: Throttle,
    pub actor: Actor,
    pub now: Millis,
}

/// A reset with a link's token, prepared before the transaction.
#[derive(Debug)]
pub struct NewReset {
    pub token_hash: String,
    /// The owner of the token as looked up before hashing: the new password was checked against
    /// this account's address.
    pub user_id: Uuid,
    pub password_hash: String,
    pub notice: NewMail,
    /// The account's failed-login strikes, forgotten: whoever opened the link owns the address.
    pub strikes_key: Option<String>,
    pub actor: Actor,
    pub now: Millis,
}

#[derive(Debug)]
pub enum Reset {
    /// The password is set; this many sessions were revoked.
    Done { revoked: u64 },
    /// The token is unknown, used, revoked or expired.
    TokenInvalid,
}

/// A password change, prepared before the transaction.
#[derive(Debug)]
pub struct NewChange {
    pub session: SessionRef,
    /// The stored hash the current password was verified against.
    pub verified_hash: String,
    pub password_hash: String,
    pub notice: NewMail,
    pub refund: Option<Refund>,
    pub actor: Actor,
    pub now: Millis,
}

#[derive(Debug)]
pub enum Change {
    Done {
        revoked: u64,
    },
    /// The caller's session ended, or the password changed since it was verified.
    Stale,
}

impl Store {
    /// Records a reset request, unless the address's throttle slot is taken; the same work for
    /// every address.
    pub async fn request_password_reset(&self, new: NewResetRequest) -> Result<(), sqlx::Error> {
        self.write(new, |c, new| {
            Box::pin(async move {
                if claim(c, &new.throttle, new.now).await?.is_ok() {
                    reset_requests::insert(
                        &mut *c,
                        Uuid::now_v7(),
                        RequestKind::PasswordReset,
                        &new.email,
                        &new.actor,
                        new.now,
                    )
                    .await?;
                }
                failpoint!("password_forgot.before_commit");
                Ok(Done::Commit(()))
            })
        })
        .await
    }

    /// Turns a pending reset request for an account into its link and email (the mail worker);
    /// whether this call did it (another instance may have).
    pub async fn issue_reset_link(
        &self,
        request_id: String,
        user_id: Uuid,
        link: NewLink,
        actor: Actor,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        self.record((request_id, link, actor), move |c, (id, link, actor)| {
            Box::pin(async move {
                if !reset_requests::take(&mut *c, id).await? {
                    return Ok(Done::Rollback(false));
                }
                issue_link(c, user_id, link, now).await?;
                audit::record(&mut *c, audit::Kind::PasswordResetRequested, actor, now).await?;
                Ok(Done::Commit(true))
            })
        })
        .await
    }

    /// Drops a pending reset request for an address with no account.
    pub async fn discard_reset_request(&self, request_id: String) -> Result<(), sqlx::Error> {
        self.record(request_id, |c, id| {
            Box::pin(async move {
                reset_requests::take(&mut *c, id).await?;
                Ok(Done::Commit(()))
            })
        })
        .await
    }

    /// Sets a new password with a reset link's token.
    pub async fn reset_password(&self, new: NewReset) -> Result<Reset, sqlx::Error> {
        self.write_evented(new, |c, (new, hooks)| Box::pin(reset(c, new, hooks)))
            .await
    }

    /// Changes the caller's password.
    pub async fn change_password(&self, new: NewChange) -> Result<Change, sqlx::Error> {
        self.write_evented(new, |c, (new, hooks)| Box::pin(change(c, new, hooks)))
            .await
    }
}

async fn reset(c: &mut Conn, new: &NewReset, hooks: &Routes) -> Result<Done<Reset>, sqlx::Error> {
    // Of two requests racing with one token, only one gets past this UPDATE.
    let purpose = Purpose::PasswordReset;
    let used = one_time_tokens::use_token(&mut *c, &new.token_hash, purpose, new.now).await?;
    let Some(used) = used.filter(|u| u.user_id == new.user_id.to_string()) else {
        return Ok(Done::Rollback(Reset::TokenInvalid));
    };
    users::set_password_hash(&mut *c, new.user_id, &new.password_hash, new.now).await?;
    let revoked =
        sessions::revoke_all_sessions(&mut *c, new.user_id, Reason::PasswordReset, new.now).await?;
    one_time_tokens::revoke_all(&mut *c, new.user_id, purpose, new.now).await?;
    // A pending email change was asked for with the old password: whoever knew it must not
    // get the address of the account once the owner has taken it back.
    let change = Purpose::EmailChange;
    one_time_tokens::revoke_all(&mut *c, new.user_id, change, new.now).await?;
    // So is a passwordless code sent before: the owner has just taken the account back.
    passwordless::revoke_for_user(&mut *c, new.user_id).await?;
    // The link was opened from the mailbox it was sent to: that proves the address.
    users::mark_email_verified(&mut *c, new.user_id, &used.email, new.now).await?;
    enqueue(c, &new.notice, new.now).await?;
    if let Some(key) = &new.strikes_key {
        rate_limits::clear(&mut *c, key).await?;
    }
    audit::record(&mut *c, audit::Kind::PasswordReset, &new.actor, new.now).await?;
    let (user_id, now) = (new.user_id, new.now);
    events::user(c, hooks, EventType::UserPasswordReset, user_id, None, now).await?;
    let reason = Reason::PasswordReset;
    events::sessions_revoked(c, hooks, user_id, &revoked, reason, now).await?;
    failpoint!("password_reset.before_commit");
    Ok(Done::Commit(Reset::Done {
        revoked: revoked.len() as u64,
    }))
}

async fn change(
    c: &mut Conn,
    new: &NewChange,
    hooks: &Routes,
) -> Result<Done<Change>, sqlx::Error> {
    let user_id = new.session.user_id;
    // The user row first, then the session (the lock order of every flow): only if the hash is
    // still the one just verified (a reset or change may have won a race) …
    if !users::replace_password_hash(
        &mut *c,
        user_id,
        &new.verified_hash,
        &new.password_hash,
        new.now,
    )
    .await?
    {
        return Ok(Done::Rollback(Change::Stale));
    }
    // … and while the caller's session is live.
    if !lock_live_session(c, new.session, new.now).await? {
        return Ok(Done::Rollback(Change::Stale));
    }
    let keep = new.session.session_id;
    let revoked =
        sessions::revoke_other_sessions(&mut *c, user_id, keep, Reason::PasswordChange, new.now)
            .await?;
    one_time_tokens::revoke_all(&mut *c, user_id, Purpose::PasswordReset, new.now).await?;
    // As after a reset: an email change asked for with the old password is void.
    one_time_tokens::revoke_all(&mut *c, user_id, Purpose::EmailChange, new.now).await?;
    passwordless::revoke_for_user(&mut *c, user_id).await?;
    enqueue(c, &new.notice, new.now).await?;
    if let Some(refund) = &new.refund {
        rate_limits::apply_refund(&mut *c, refund).await?;
    }
    audit::record(&mut *c, audit::Kind::PasswordChanged, &new.actor, new.now).await?;
    let now = new.now;
    let event = EventType::UserPasswordChanged;
    events::user(c, hooks, event, user_id, Some(keep), now).await?;
    let reason = Reason::PasswordChange;
    events::sessions_revoked(c, hooks, user_id, &revoked, reason, now).await?;
    failpoint!("password_change.before_commit");
    Ok(Done::Commit(Change::Done {
        revoked: revoked.len() as u64,
    }))
}
