//! Login, after the password was verified outside any transaction: the session, the last login,
//! a rehash, the refund of the attempt's rate-limit counters and the audit event, in one
//! transaction, and only while the password is still the one verified and the account is not
//! disabled. A reset, a password change or a disable that commits while the hash is being
//! verified makes the login fail instead of opening a session that outlives it.

use uuid::Uuid;

use super::{NewSession, events, open_session};
use crate::clock::Millis;
use crate::failpoint::failpoint;
use crate::store::audit::{self, Actor};
use crate::store::rate_limits::{self, Refund};
use crate::store::tx::{Conn, Done};
use crate::store::users::{self, Account};
use crate::store::webhooks::Routes;
use crate::store::{Store, mfa};
use crate::tokens::SignIn;
use crate::webhooks::event::EventType;

/// Everything a login writes, prepared before the transaction.
#[derive(Debug)]
pub struct NewLogin {
    pub user_id: Uuid,
    /// The stored hash the password was verified against.
    pub verified_hash: String,
    /// A hash with the current parameters, when the stored one has old ones.
    pub rehash: Option<String>,
    pub session: NewSession,
    /// The attempt's counters to take back: the password was right.
    pub refund: Option<Refund>,
    /// The challenge to write instead of the session when the account has a second factor.
    pub challenge: NewChallenge,
    pub actor: Actor,
    pub now: Millis,
}

/// A login challenge, prepared before the transaction: its `mfa_token`'s hash, and a fingerprint
/// of the password hash that was verified (`mfa::challenge::credential`).
#[derive(Debug, Clone)]
pub struct NewChallenge {
    pub token_hash: String,
    pub credential: String,
    pub expires_at: Millis,
}

#[derive(Debug)]
pub enum Login {
    Opened(Account),
    /// The account has a second factor: a challenge was written, no session.
    MfaRequired,
    /// The password changed or the account was disabled since it was verified.
    Stale,
}

impl Store {
    /// Opens the session of a verified login.
    pub async fn login(&self, new: NewLogin) -> Result<Login, sqlx::Error> {
        self.write_evented(new, |c, (new, hooks)| Box::pin(login(c, new, hooks)))
            .await
    }

    /// The audit event of a failed login: its own transaction, because the request fails and the
    /// record must stay.
    pub async fn record_failed_login(&self, actor: Actor, now: Millis) -> Result<(), sqlx::Error> {
        self.record_event(audit::Kind::LoginFailed, actor, now)
            .await
    }

    /// One audit event in a transaction of its own.
    pub async fn record_event(
        &self,
        kind: audit::Kind,
        actor: Actor,
        now: Millis,
    ) -> Result<(), sqlx::Error> {
        self.record(actor, move |c, actor| {
            Box::pin(async move {
                audit::record(&mut *c, kind, actor, now).await?;
                Ok(Done::Commit(()))
            })
        })
        .await
    }
}

async fn login(c: &mut Conn, new: &NewLogin, hooks: &Routes) -> Result<Done<Login>, sqlx::Error> {
    // The precondition, and the lock that makes it hold until the commit.
    if !users::lock_credentials(&mut *c, new.user_id, &new.verified_hash).await? {
        return Ok(Done::Rollback(Login::Stale));
    }
    if let Some(refund) = &new.refund {
        rate_limits::apply_refund(&mut *c, refund).await?;
    }
    // Decided here, in the transaction that holds the account's row: an enrollment confirmed or
    // removed meanwhile is seen or not, never half.
    if mfa::has_factor(&mut *c, new.user_id).await? {
        let ch = &new.challenge;
        let (hash, credential) = (&ch.token_hash, &ch.credential);
        mfa::insert_challenge(
            &mut *c,
            hash,
            new.user_id,
            credential,
            (ch.expires_at, SignIn::Password),
            new.now,
        )
        .await?;
        // No session was opened: the event names none.
        let actor = Actor {
            session_id: None,
            ..new.actor.clone()
        };
        audit::record(&mut *c, audit::Kind::MfaChallenged, &actor, new.now).await?;
        return Ok(Done::Commit(Login::MfaRequired));
    }
    open_session(c, new.user_id, &new.session, new.now).await?;
    users::record_login(&mut *c, new.user_id, new.now).await?;
    if let Some(hash) = &new.rehash {
        users::set_password_hash(&mut *c, new.user_id, hash, new.now).await?;
    }
    audit::record(&mut *c, audit::Kind::Login, &new.actor, new.now).await?;
    let account = events::find(c, new.user_id).await?;
    let session = new.session.id.to_string();
    let event = EventType::UserLogin;
    events::about(c, hooks, event, &account, Some(&session), None, new.now).await?;
    failpoint!("login.before_commit");
    Ok(Done::Commit(Login::Opened(account)))
}
