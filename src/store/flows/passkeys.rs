//! The flows of passkeys (see `crate::mfa::passkey`): a ceremony's start, a registration's finish,
//! a removal, and the passwordless login. The assertion or attestation is verified before the
//! transaction (it is CPU work on what was read); the transaction spends the ceremony and writes
//! the outcome only while what was verified still holds: the ceremony unspent, the session or
//! the account live, the stored credential the one the assertion was checked against.

use uuid::Uuid;

use super::{NewSession, Opening, SessionRef, lock_live_session, open_login};
use crate::clock::Millis;
use crate::failpoint::failpoint;
use crate::mfa::passkey::{CeremonyKind, MAX_PER_USER};
use crate::store::Store;
use crate::store::audit::{self, Actor};
use crate::store::constraint::Constraint;
use crate::store::passkeys::{self, NewCeremony, NewPasskey};
use crate::store::sessions;
use crate::store::tx::{Conn, Done};
use crate::store::users::{self, Account};
use crate::store::webhooks::Routes;
use crate::tokens::SignIn;

/// A registration to finish, prepared (and its attestation verified) before the transaction.
#[derive(Debug)]
pub struct NewRegistration {
    pub ceremony_hash: String,
    pub session: SessionRef,
    pub passkey: NewPasskey,
    pub actor: Actor,
    pub now: Millis,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Registration {
    Added,
    /// The ceremony was spent or expired meanwhile.
    CeremonyGone,
    /// The session ended meanwhile.
    SessionGone,
    /// This authenticator's credential is registered already (to this account or another).
    AlreadyRegistered,
    /// The account has `MAX_PER_USER` passkeys.
    TooMany,
}

/// A passkey's use to record, prepared before the transaction: the credential as read (`seen`)
/// and as the assertion updated it.
#[derive(Debug, Clone)]
pub struct PasskeyUse {
    pub ceremony_hash: String,
    pub passkey_id: String,
    pub seen: String,
    pub updated: String,
}

/// A passwordless login, prepared and verified before the transaction.
#[derive(Debug)]
pub struct NewPasskeyLogin {
    pub user_id: Uuid,
    pub used: PasskeyUse,
    pub session: NewSession,
    pub actor: Actor,
    pub now: Millis,
}

#[derive(Debug)]
pub enum PasskeyLogin {
    Opened(Account),
    /// The ceremony was spent or expired meanwhile (a replayed answer).
    CeremonyGone,
    /// The account was disabled, the passkey removed, or its credential moved by another login
    /// since the assertion was checked.
    Stale,
}

impl Store {
    /// Stores a ceremony at its start.
    pub async fn start_passkey_ceremony(
        &self,
        ceremony: NewCeremony,
        now: Millis,
    ) -> Result<(), sqlx::Error> {
        self.write(ceremony, move |c, ceremony| {
            Box::pin(async move {
                passkeys::insert_ceremony(&mut *c, ceremony, now).await?;
                Ok(Done::Commit(()))
            })
        })
        .await
    }

    /// Finishes a registration: the ceremony spent, the passkey stored and the audit event, only
    /// while the session that started it is live.
    pub async fn add_passkey(&self, new: NewRegistration) -> Result<Registration, sqlx::Error> {
        self.write(new, |c, new| Box::pin(add(c, new))).await
    }

    /// Removes one of the user's passkeys, with the audit event; whether it was theirs.
    pub async fn remove_passkey(
        &self,
        user_id: Uuid,
        passkey_id: Uuid,
        actor: Actor,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        self.write(actor, move |c, actor| {
            Box::pin(async move {
                if !passkeys::remove(&mut *c, user_id, passkey_id).await? {
                    return Ok(Done::Rollback(false));
                }
                audit::record(&mut *c, audit::Kind::PasskeyRemoved, actor, now).await?;
                Ok(Done::Commit(true))
            })
        })
        .await
    }

    /// A passwordless login: the ceremony spent, the passkey's use recorded, the session opened,
    /// the last login, the audit event and `user.login`, in one transaction.
    pub async fn passkey_login(&self, new: NewPasskeyLogin) -> Result<PasskeyLogin, sqlx::Error> {
        self.write_evented(new, |c, (new, hooks)| Box::pin(login(c, new, hooks)))
            .await
    }
}

async fn add(c: &mut Conn, new: &NewRegistration) -> Result<Done<Registration>, sqlx::Error> {
    let kind = CeremonyKind::Register;
    if !passkeys::spend_ceremony(&mut *c, &new.ceremony_hash, kind, new.now).await? {
        return Ok(Done::Rollback(Registration::CeremonyGone));
    }
    // The session row, locked: a logout, reset or disable racing this waits or wins.
    if !lock_live_session(c, new.session, new.now).await? {
        return Ok(Done::Rollback(Registration::SessionGone));
    }
    let user_id = new.session.user_id;
    if passkeys::count(&mut *c, user_id).await? >= MAX_PER_USER {
        return Ok(Done::Rollback(Registration::TooMany));
    }
    match passkeys::insert(&mut *c, user_id, &new.passkey, new.now).await {
        Err(err) if Constraint::PasskeyCredential.violated_by(&err) => {
            return Ok(Done::Rollback(Registration::AlreadyRegistered));
        }
        other => other?,
    }
    // The new passkey verified its user in this session: it counts as signed in with it.
    let session = new.session.session_id;
    sessions::step_up(&mut *c, session, SignIn::PasswordAndPasskey).await?;
    audit::record(&mut *c, audit::Kind::PasskeyAdded, &new.actor, new.now).await?;
    failpoint!("passkeys.register.before_commit");
    Ok(Done::Commit(Registration::Added))
}

/// Spends the ceremony and records the passkey's use: the part that a passwordless login and a
/// passkey answering a login challenge share. `None` when the ceremony is gone; `Some(false)`
/// when the credential changed since it was checked.
pub(super) async fn use_passkey(
    c: &mut Conn,
    used: &PasskeyUse,
    kind: CeremonyKind,
    now: Millis,
) -> Result<Option<bool>, sqlx::Error> {
    if !passkeys::spend_ceremony(&mut *c, &used.ceremony_hash, kind, now).await? {
        return Ok(None);
    }
    let (id, seen, updated) = (&used.passkey_id, &used.seen, &used.updated);
    Ok(Some(
        passkeys::record_use(&mut *c, id, seen, updated, now).await?,
    ))
}

async fn login(
    c: &mut Conn,
    new: &NewPasskeyLogin,
    hooks: &Routes,
) -> Result<Done<PasskeyLogin>, sqlx::Error> {
    // The account's row, locked first (lock order: user, then what is the user's): a disable
    // racing this waits or wins.
    if users::lock_enabled(&mut *c, new.user_id).await?.is_none() {
        return Ok(Done::Rollback(PasskeyLogin::Stale));
    }
    match use_passkey(c, &new.used, CeremonyKind::Login, new.now).await? {
        None => return Ok(Done::Rollback(PasskeyLogin::CeremonyGone)),
        Some(false) => return Ok(Done::Rollback(PasskeyLogin::Stale)),
        Some(true) => {}
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
    failpoint!("passkeys.login.before_commit");
    Ok(Done::Commit(PasskeyLogin::Opened(account)))
}
