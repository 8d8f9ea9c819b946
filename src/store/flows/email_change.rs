//! Email change with double opt-in: the request (password re-entered) sends a link to the new
//! address and a notice to the old one; opening the link swaps the address in.
//!
//! The request writes nothing but the link, its email, the notice and the audit event, while
//! the password is the one verified and the caller's session is live; a newer request retires
//! the older links. The swap is one transaction: the link is used, the address replaced and
//! verified (the link was opened from that mailbox), and every link sent to the old address
//! (verification, reset) is retired, since they prove an address that is no longer the account's.
//! The database decides uniqueness at the swap: an address taken meanwhile (a signup, another
//! change) is the constraint's violation, and nothing of the swap is kept. Sessions stay.

use super::{NewLink, NewMail, SessionRef, Throttle, claim, enqueue, events, issue_link};
use crate::clock::Millis;
use crate::failpoint::failpoint;
use crate::store::audit::{self, Actor};
use crate::store::rate_limits::{self, Refund};
use crate::store::tx::{Conn, Done};
use crate::store::users::{self, Account};
use crate::store::webhooks::Routes;
use crate::store::{Constraint, Store, one_time_tokens, parse_id};
use crate::tokens::Purpose;
use crate::webhooks::event::EventType;

/// An email change request, prepared before the transaction.
#[derive(Debug)]
pub struct NewEmailChange {
    pub session: SessionRef,
    /// The stored hash the password was verified against.
    pub verified_hash: String,
    /// The new address as typed (the link is for its normalized form).
    pub new_email: String,
    pub link: NewLink,
    /// To the old address.
    pub notice: NewMail,
    /// The new address's slot for email-change links.
    pub throttle: Throttle,
    /// The password check's rate-limit counters, taken back.
    pub refund: Option<Refund>,
    pub actor: Actor,
    pub now: Millis,
}

#[derive(Debug)]
pub enum EmailChangeRequest {
    Sent,
    Throttled {
        last_sent_at: Millis,
    },
    /// The password changed, the account was disabled or the session ended since the check.
    Stale,
}

#[derive(Debug)]
pub enum EmailChangeConfirm {
    Changed(Box<Account>),
    /// Unknown, used, revoked or expired.
    TokenInvalid,
    /// The new address has an account now.
    EmailTaken,
}

impl Store {
    /// Sends the confirmation link of an email change and the notice to the old address.
    pub async fn request_email_change(
        &self,
        new: NewEmailChange,
    ) -> Result<EmailChangeRequest, sqlx::Error> {
        self.write(new, |c, new| Box::pin(request(c, new))).await
    }

    /// Uses an email change's link and swaps the address in.
    pub async fn confirm_email_change(
        &self,
        token_hash: String,
        actor: Actor,
        now: Millis,
    ) -> Result<EmailChangeConfirm, sqlx::Error> {
        self.write_evented((token_hash, actor), move |c, ((hash, actor), hooks)| {
            Box::pin(confirm(c, hash, actor, hooks, now))
        })
        .await
    }
}

async fn request(
    c: &mut Conn,
    new: &NewEmailChange,
) -> Result<Done<EmailChangeRequest>, sqlx::Error> {
    let user_id = new.session.user_id;
    // The user row, then the session: the lock order of every flow.
    if !users::lock_credentials(&mut *c, user_id, &new.verified_hash).await?
        || !super::lock_live_session(c, new.session, new.now).await?
    {
        return Ok(Done::Rollback(EmailChangeRequest::Stale));
    }
    if let Err(last_sent_at) = claim(c, &new.throttle, new.now).await? {
        return Ok(Done::Rollback(EmailChangeRequest::Throttled {
            last_sent_at,
        }));
    }
    // Only the newest link changes the address: an older one was for a request the user has
    // moved on from.
    one_time_tokens::revoke_all(&mut *c, user_id, Purpose::EmailChange, new.now).await?;
    issue_link(c, user_id, &new.link, new.now).await?;
    one_time_tokens::set_new_email(&mut *c, &new.link.token_hash, &new.new_email).await?;
    enqueue(c, &new.notice, new.now).await?;
    if let Some(refund) = &new.refund {
        rate_limits::apply_refund(&mut *c, refund).await?;
    }
    let kind = audit::Kind::EmailChangeRequested;
    audit::record(&mut *c, kind, &new.actor, new.now).await?;
    failpoint!("email_change.before_commit");
    Ok(Done::Commit(EmailChangeRequest::Sent))
}

async fn confirm(
    c: &mut Conn,
    token_hash: &str,
    actor: &Actor,
    hooks: &Routes,
    now: Millis,
) -> Result<Done<EmailChangeConfirm>, sqlx::Error> {
    // Of two requests racing with one token, only one gets past this UPDATE.
    let used = one_time_tokens::use_email_change(&mut *c, token_hash, now).await?;
    let Some((used, new_email)) = used.and_then(|u| u.new_email.clone().map(|n| (u, n))) else {
        return Ok(Done::Rollback(EmailChangeConfirm::TokenInvalid));
    };
    let user_id = parse_id(&used.user_id).map_err(|e| sqlx::Error::Decode(e.into()))?;
    failpoint!("email_change_confirm.after_token");
    match users::change_email(&mut *c, user_id, &new_email, &used.email, now).await {
        Err(err) if Constraint::UserEmail.violated_by(&err) => {
            return Ok(Done::Rollback(EmailChangeConfirm::EmailTaken));
        }
        // Disabled since the request: the link is worth nothing.
        Ok(false) => return Ok(Done::Rollback(EmailChangeConfirm::TokenInvalid)),
        other => other.map(|_| ())?,
    }
    for purpose in [
        Purpose::EmailChange,
        Purpose::EmailVerification,
        Purpose::PasswordReset,
    ] {
        one_time_tokens::revoke_all(&mut *c, user_id, purpose, now).await?;
    }
    audit::record(
        &mut *c,
        audit::Kind::EmailChanged,
        &actor.about(user_id),
        now,
    )
    .await?;
    let account = events::find(c, user_id).await?;
    let event = EventType::UserEmailChanged;
    events::about(c, hooks, event, &account, None, None, now).await?;
    failpoint!("email_change_confirm.before_commit");
    Ok(Done::Commit(EmailChangeConfirm::Changed(Box::new(account))))
}
