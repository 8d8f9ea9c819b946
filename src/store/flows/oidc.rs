//! The flows of OpenID Connect identities (see `crate::oidc`): the callback's sign-in (of the
//! identity's user, or of an account created for it), a link to a signed-in user, and an unlink.
//! The provider's answer is verified before the transaction; the transaction writes only while
//! what was read still holds: the identity still this user's, the account enabled, the session
//! live, the address still free.

use uuid::Uuid;

use super::accounts::{Created, NewAccountRows, create_account};
use super::{NewChallenge, NewSession, Opening, SessionRef, challenge_instead};
use super::{lock_live_session, open_login};
use crate::clock::Millis;
use crate::failpoint::failpoint;
use crate::hooks::{DynHooks, HookError, Source};
use crate::password::imported::{Scheme, scheme};
use crate::store::audit::{self, Actor};
use crate::store::constraint::Constraint;
use crate::store::identities::{self, NewIdentity};
use crate::store::tx::{Conn, Done};
use crate::store::users::{self, Account};
use crate::store::webhooks::Routes;
use crate::store::{Store, passkeys};
use crate::tokens::SignIn;

/// A sign-in with a provider's account, prepared before the transaction.
#[derive(Debug)]
pub struct NewOidcSignIn {
    pub identity: NewIdentity,
    pub to: SignInTo,
    pub session: NewSession,
    /// The challenge written instead of the session when the account has a second factor.
    pub challenge: NewChallenge,
    pub actor: Actor,
    pub now: Millis,
}

/// Whose sign-in it is, as read before the transaction.
#[derive(Debug)]
pub enum SignInTo {
    /// The identity's user.
    Existing(Uuid),
    /// No user has the identity nor the address (which the provider verified): the account to
    /// create.
    New(Box<NewAccountRows>),
}

#[derive(Debug)]
pub enum OidcSignIn {
    /// The session; `created` when the account was created by this sign-in.
    Opened { account: Account, created: bool },
    /// The account has a second factor: a challenge was written, no session.
    MfaRequired,
    /// The identity was unlinked, or the account disabled, since it was read.
    Stale,
    /// A new account's address was taken meanwhile (or the identity linked by a racing
    /// callback): nothing was written.
    EmailTaken,
    /// The application's `account_created` hook said no: nothing was written.
    Refused(HookError),
}

/// A link of a provider's account to a signed-in user.
#[derive(Debug)]
pub struct NewOidcLink {
    pub session: SessionRef,
    pub identity: NewIdentity,
    pub actor: Actor,
    pub now: Millis,
}

#[derive(Debug, PartialEq, Eq)]
pub enum OidcLink {
    Linked,
    /// It was this user's already.
    AlreadyLinked,
    /// The provider's account is another user's.
    OtherUser,
    /// The session ended meanwhile.
    SessionGone,
}

#[derive(Debug, PartialEq, Eq)]
pub enum OidcUnlink {
    Unlinked,
    NotFound,
    /// It is the account's last way to sign in (no password, no passkey, no other identity).
    LastWay,
    SessionGone,
}

impl Store {
    /// The callback's sign-in: see the module docs.
    pub async fn oidc_sign_in(&self, new: NewOidcSignIn) -> Result<OidcSignIn, sqlx::Error> {
        let app = self.hooks().clone();
        let outcome = self
            .write_evented((new, app), |c, ((new, app), hooks)| {
                Box::pin(sign_in(c, new, app.as_ref(), hooks))
            })
            .await;
        match outcome {
            // Two callbacks for one new provider account: the first one created it.
            Err(err) if Constraint::Identity.violated_by(&err) => Ok(OidcSignIn::EmailTaken),
            outcome => outcome,
        }
    }

    /// Links a provider's account to the session's user.
    pub async fn link_identity(&self, new: NewOidcLink) -> Result<OidcLink, sqlx::Error> {
        let outcome = self.write(new, |c, new| Box::pin(link(c, new))).await;
        match outcome {
            Err(err) if Constraint::Identity.violated_by(&err) => Ok(OidcLink::OtherUser),
            outcome => outcome,
        }
    }

    /// Unlinks one of the session's user's identities, unless it is the last way in.
    pub async fn unlink_identity(
        &self,
        session: SessionRef,
        id: Uuid,
        actor: Actor,
        now: Millis,
    ) -> Result<OidcUnlink, sqlx::Error> {
        self.write((session, id, actor), move |c, (session, id, actor)| {
            Box::pin(async move {
                if !lock_live_session(c, *session, now).await? {
                    return Ok(Done::Rollback(OidcUnlink::SessionGone));
                }
                let user_id = session.user_id;
                // The user's row first (the lock order), so that two unlinks of an account's
                // last two identities cannot both see the other one.
                let Some(hash) = users::lock_enabled(&mut *c, user_id).await? else {
                    return Ok(Done::Rollback(OidcUnlink::SessionGone));
                };
                if !identities::delete(&mut *c, user_id, *id).await? {
                    return Ok(Done::Rollback(OidcUnlink::NotFound));
                }
                let password = scheme(&hash) != Some(Scheme::Unusable);
                let others = identities::count(&mut *c, user_id).await?;
                let keys = passkeys::count(&mut *c, user_id).await?;
                if !password && others == 0 && keys == 0 {
                    return Ok(Done::Rollback(OidcUnlink::LastWay));
                }
                audit::record(&mut *c, audit::Kind::IdentityUnlinked, actor, now).await?;
                failpoint!("oidc.unlink.before_commit");
                Ok(Done::Commit(OidcUnlink::Unlinked))
            })
        })
        .await
    }
}

async fn sign_in(
    c: &mut Conn,
    new: &NewOidcSignIn,
    app: &dyn DynHooks,
    hooks: &Routes,
) -> Result<Done<OidcSignIn>, sqlx::Error> {
    let outcome = match &new.to {
        SignInTo::Existing(user_id) => match existing(c, new, *user_id, hooks).await? {
            Some(outcome) => outcome,
            None => return Ok(Done::Rollback(OidcSignIn::Stale)),
        },
        SignInTo::New(rows) => match created(c, new, rows, app, hooks).await? {
            Ok(account) => OidcSignIn::Opened {
                account,
                created: true,
            },
            Err(outcome) => return Ok(Done::Rollback(outcome)),
        },
    };
    failpoint!("oidc.callback.before_commit");
    Ok(Done::Commit(outcome))
}

/// The sign-in of the identity's user; `None` when the identity is no longer this user's or the
/// account is disabled.
async fn existing(
    c: &mut Conn,
    new: &NewOidcSignIn,
    user_id: Uuid,
    hooks: &Routes,
) -> Result<Option<OidcSignIn>, sqlx::Error> {
    // The account's row, locked (a disable racing this waits or wins), then the identity's.
    let Some(hash) = users::lock_enabled(&mut *c, user_id).await? else {
        return Ok(None);
    };
    if !identities::touch(&mut *c, &new.identity, user_id, new.now).await? {
        return Ok(None);
    }
    // The provider proves its account only: an account with a second factor still needs it,
    // as after a password.
    let first = (hash.as_str(), SignIn::Oidc);
    if challenge_instead(c, user_id, &new.challenge, first, &new.actor, new.now).await? {
        return Ok(Some(OidcSignIn::MfaRequired));
    }
    let account = open_login(
        c,
        (hooks, Opening::Login),
        user_id,
        &new.session,
        &new.actor,
        new.now,
    )
    .await?;
    Ok(Some(OidcSignIn::Opened {
        account,
        created: false,
    }))
}

/// The account of a provider's account that no user has, created exactly as a signup creates
/// one (`create_account`, the application's hook included), with its identity and first
/// session.
async fn created(
    c: &mut Conn,
    new: &NewOidcSignIn,
    rows: &NewAccountRows,
    app: &dyn DynHooks,
    hooks: &Routes,
) -> Result<Result<Account, OidcSignIn>, sqlx::Error> {
    match create_account(c, rows, (app, Source::Oidc), new.now).await? {
        Created::Created => {}
        Created::EmailTaken => return Ok(Err(OidcSignIn::EmailTaken)),
        Created::Refused(refused) => return Ok(Err(OidcSignIn::Refused(refused))),
    }
    let user_id = rows.user_id;
    identities::insert(&mut *c, user_id, &new.identity, new.now).await?;
    let opening = (hooks, Opening::Signup);
    let account = open_login(c, opening, user_id, &new.session, &new.actor, new.now).await?;
    Ok(Ok(account))
}

async fn link(c: &mut Conn, new: &NewOidcLink) -> Result<Done<OidcLink>, sqlx::Error> {
    if !lock_live_session(c, new.session, new.now).await? {
        return Ok(Done::Rollback(OidcLink::SessionGone));
    }
    let user_id = new.session.user_id;
    let i = &new.identity;
    if let Some(found) = identities::find(&mut *c, &i.provider, &i.subject).await? {
        let outcome = match found.user_id == user_id.to_string() {
            true => OidcLink::AlreadyLinked,
            false => OidcLink::OtherUser,
        };
        return Ok(Done::Rollback(outcome));
    }
    identities::insert(&mut *c, user_id, i, new.now).await?;
    audit::record(&mut *c, audit::Kind::IdentityLinked, &new.actor, new.now).await?;
    failpoint!("oidc.link.before_commit");
    Ok(Done::Commit(OidcLink::Linked))
}
