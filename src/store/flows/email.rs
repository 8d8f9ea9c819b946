//! Email verification: using a verification link, and sending a new one.

use uuid::Uuid;

use super::{NewLink, SessionRef, Throttle, claim, events, issue_link, lock_live_session};
use crate::clock::Millis;
use crate::failpoint::failpoint;
use crate::store::audit::{self, Actor};
use crate::store::tx::Done;
use crate::store::{Store, one_time_tokens, parse_id, users};
use crate::tokens::Purpose;
use crate::webhooks::event::EventType;

#[derive(Debug)]
pub enum Verify {
    Verified {
        user_id: Uuid,
    },
    /// Unknown, used, revoked or expired; or the account's address changed since it was sent.
    TokenInvalid,
}

/// A new verification link for the caller, prepared before the transaction.
#[derive(Debug)]
pub struct NewResend {
    pub session: SessionRef,
    pub link: NewLink,
    pub throttle: Throttle,
    pub actor: Actor,
    pub now: Millis,
}

#[derive(Debug)]
pub enum Resend {
    Sent,
    /// The address had a verification email at `last_sent_at`, less than a window ago.
    Throttled {
        last_sent_at: Millis,
    },
    /// The caller's session ended meanwhile.
    SessionGone,
}

impl Store {
    /// Uses a verification link's token and marks the address it was sent to verified, retiring
    /// the user's other verification links.
    pub async fn verify_email(
        &self,
        token_hash: String,
        actor: Actor,
        now: Millis,
    ) -> Result<Verify, sqlx::Error> {
        self.write_evented((token_hash, actor), move |c, ((hash, actor), hooks)| {
            Box::pin(async move {
                let purpose = Purpose::EmailVerification;
                let Some(used) = one_time_tokens::use_token(&mut *c, hash, purpose, now).await?
                else {
                    return Ok(Done::Rollback(Verify::TokenInvalid));
                };
                let user_id = parse_id(&used.user_id).map_err(|e| sqlx::Error::Decode(e.into()))?;
                // The link verifies the address it was sent to, and only while that is the
                // user's address.
                if !users::mark_email_verified(&mut *c, user_id, &used.email, now).await? {
                    return Ok(Done::Rollback(Verify::TokenInvalid));
                }
                one_time_tokens::revoke_all(&mut *c, user_id, purpose, now).await?;
                let actor = Actor {
                    user_id: Some(user_id),
                    ..actor.clone()
                };
                audit::record(&mut *c, audit::Kind::EmailVerified, &actor, now).await?;
                let event = EventType::UserEmailVerified;
                events::user(c, hooks, event, user_id, None, now).await?;
                failpoint!("email_verify.before_commit");
                Ok(Done::Commit(Verify::Verified { user_id }))
            })
        })
        .await
    }

    /// Marks a user's address verified on the operator's word (`latchkey users verify`), retiring
    /// the user's verification links, with the audit event and `user.email_verified`; whether it
    /// was unverified.
    pub async fn verify_email_by_admin(
        &self,
        user_id: Uuid,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        self.record_evented((), move |c, ((), hooks)| {
            Box::pin(async move {
                let done = sqlx::query(
                    "UPDATE users SET email_verified_at = $1 \
                     WHERE id = $2 AND email_verified_at IS NULL",
                )
                .bind(now)
                .bind(user_id.to_string())
                .execute(&mut *c)
                .await?;
                if done.rows_affected() != 1 {
                    return Ok(Done::Rollback(false));
                }
                crate::store::liveness::changed(&mut *c, user_id).await?;
                let purpose = Purpose::EmailVerification;
                one_time_tokens::revoke_all(&mut *c, user_id, purpose, now).await?;
                let actor = Actor::user(user_id);
                audit::record(&mut *c, audit::Kind::EmailVerified, &actor, now).await?;
                let event = EventType::UserEmailVerified;
                events::user(c, hooks, event, user_id, None, now).await?;
                Ok(Done::Commit(true))
            })
        })
        .await
    }

    /// Sends a new verification link, unless the address's throttle slot is taken.
    pub async fn resend_verification(&self, new: NewResend) -> Result<Resend, sqlx::Error> {
        self.write(new, |c, new| {
            Box::pin(async move {
                if !lock_live_session(c, new.session, new.now).await? {
                    return Ok(Done::Rollback(Resend::SessionGone));
                }
                if let Err(last_sent_at) = claim(c, &new.throttle, new.now).await? {
                    return Ok(Done::Rollback(Resend::Throttled { last_sent_at }));
                }
                issue_link(c, new.session.user_id, &new.link, new.now).await?;
                let kind = audit::Kind::EmailVerificationRequested;
                audit::record(&mut *c, kind, &new.actor, new.now).await?;
                failpoint!("email_resend.before_commit");
                Ok(Done::Commit(Resend::Sent))
            })
        })
        .await
    }
}
