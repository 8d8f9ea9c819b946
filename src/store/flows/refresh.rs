//! Refresh: spending the presented token, extending its session and storing the successor, in
//! one transaction.
//!
//! The token is spent by one conditional UPDATE, so two requests racing with one token cannot both
//! spend it. The session is then extended by an UPDATE that requires it to be live and locks its
//! row: a logout, logout-all, reset or disable that committed after the token was spent (on
//! PostgreSQL under READ COMMITTED, the one window the spend cannot see) leaves no row to extend,
//! and the whole rotation rolls back instead of minting tokens for a revoked session.

use uuid::Uuid;

use crate::tokens::SignIn;

use crate::clock::Millis;
use crate::failpoint::failpoint;
use crate::store::audit::{self, Actor};
use crate::store::tx::{Conn, Done};
use crate::store::users::{self, Account};
use crate::store::{Store, parse_id, sessions};

/// A rotation, prepared before the transaction.
#[derive(Debug)]
pub struct NewRotation {
    pub token_hash: String,
    pub successor_hash: String,
    /// The idle timeout the session is extended by, in milliseconds.
    pub idle_timeout: Millis,
    /// The client; the user and session ids are filled in from the token.
    pub actor: Actor,
    pub now: Millis,
}

#[derive(Debug)]
pub enum Rotation {
    Rotated {
        account: Box<Account>,
        session_id: Uuid,
        idle_expires_at: Millis,
        sign_in: SignIn,
    },
    /// The token is unknown, spent, or its session is over: nothing was written.
    NotSpendable,
}

impl Store {
    /// Rotates a refresh token.
    pub async fn rotate_refresh(&self, new: NewRotation) -> Result<Rotation, sqlx::Error> {
        self.write(new, |c, new| Box::pin(rotate(c, new))).await
    }

    /// Revokes the session of a reused refresh token, with its audit event; whether it was live.
    /// Its own transaction: the request fails, the revocation must stay.
    pub async fn revoke_reused(
        &self,
        session_id: Uuid,
        actor: Actor,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        self.record_evented(actor, move |c, (actor, hooks)| {
            Box::pin(async move {
                let reason = sessions::Reason::RefreshTokenReuse;
                if !sessions::revoke_session(&mut *c, session_id, reason, now).await? {
                    return Ok(Done::Commit(false));
                }
                audit::record(&mut *c, audit::Kind::RefreshReuseDetected, actor, now).await?;
                super::events::session_revoked(c, hooks, session_id, reason, now).await?;
                Ok(Done::Commit(true))
            })
        })
        .await
    }
}

async fn rotate(c: &mut Conn, new: &NewRotation) -> Result<Done<Rotation>, sqlx::Error> {
    let Some(session_id) = sessions::spend_refresh_token(&mut *c, &new.token_hash, new.now).await?
    else {
        return Ok(Done::Rollback(Rotation::NotSpendable));
    };
    failpoint!("refresh.after_spend");
    let idle_until = new.now + new.idle_timeout;
    let Some(extended) = sessions::extend_live(&mut *c, &session_id, new.now, idle_until).await?
    else {
        // Revoked or ended since the spend looked: the spend rolls back with the rest.
        return Ok(Done::Rollback(Rotation::NotSpendable));
    };
    let session_id = parse_id(&session_id).map_err(|e| sqlx::Error::Decode(e.into()))?;
    let user_id = parse_id(&extended.user_id).map_err(|e| sqlx::Error::Decode(e.into()))?;
    sessions::insert_refresh_token(&mut *c, &new.successor_hash, session_id, new.now).await?;
    let actor = Actor {
        user_id: Some(user_id),
        session_id: Some(session_id),
        ..new.actor.clone()
    };
    audit::record(&mut *c, audit::Kind::Refresh, &actor, new.now).await?;
    let Some(account) = users::find_account(&mut *c, user_id).await? else {
        return Ok(Done::Rollback(Rotation::NotSpendable));
    };
    failpoint!("refresh.before_commit");
    Ok(Done::Commit(Rotation::Rotated {
        account: Box::new(account),
        session_id,
        idle_expires_at: extended.idle_expires_at,
        sign_in: SignIn::parse(&extended.amr),
    }))
}
