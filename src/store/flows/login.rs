//! Login, after the password was verified outside any transaction: the session, the last login,
//! a rehash, the refund of the attempt's rate-limit counters and the audit event, in one
//! transaction, and only while the password is still the one verified and the account is not
//! disabled. A reset, a password change or a disable that commits while the hash is being
//! verified makes the login fail instead of opening a session that outlives it.

use uuid::Uuid;

use super::{NewChallenge, NewSession, Opening, challenge_instead, open_login};
use crate::clock::Millis;
use crate::failpoint::failpoint;
use crate::store::Store;
use crate::store::audit::{self, Actor};
use crate::store::rate_limits::{self, Refund};
use crate::store::tx::{Conn, Done};
use crate::store::users::{self, Account};
use crate::store::webhooks::Routes;
use crate::tokens::SignIn;

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
    let first = (new.verified_hash.as_str(), SignIn::Password);
    if challenge_instead(c, new.user_id, &new.challenge, first, &new.actor, new.now).await? {
        return Ok(Done::Commit(Login::MfaRequired));
    }
    if let Some(hash) = &new.rehash {
        users::set_password_hash(&mut *c, new.user_id, hash, new.now).await?;
    }
    let account = open_login(
        c,
        (hooks, Opening::Login),
        new.user_id,
        &new.session,
        &new.actor,
        new.now,
    )
    .await?;
    failpoint!("login.before_commit");
    Ok(Done::Commit(Login::Opened(account)))
}
