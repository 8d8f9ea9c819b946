//! Passwordless sign-in: the request, the code and link issued for it, and the sign-in.
//!
//! A request does the same work whether or not the address has an account (its throttle slot
//! and one request row, as a password reset request does); the mail worker then issues the code
//! and its email in a transaction of its own (`issue_passwordless`). The sign-in spends the code
//! and opens the session (or creates the account, or writes the second factor's challenge) in
//! ONE transaction, only while the account is enabled and still has the address the code went to.

use uuid::Uuid;

use super::accounts::{Created, NewAccountRows, create_account};
use super::{NewChallenge, NewMail, NewSession, Throttle, challenge_instead, claim, enqueue};
use super::{Opening, open_login};
use crate::clock::Millis;
use crate::failpoint::failpoint;
use crate::hooks::{DynHooks, HookError, Source};
use crate::store::Store;
use crate::store::audit::{self, Actor};
use crate::store::passwordless::{self, By, Live, NewCode};
use crate::store::rate_limits::{self, Refund};
use crate::store::reset_requests::{self, RequestKind};
use crate::store::tx::{Conn, Done};
use crate::store::users::{self, Account};
use crate::store::webhooks::Routes;
use crate::tokens::SignIn;

/// A passwordless request: the address as typed (valid), its throttle slot, and who asked.
#[derive(Debug)]
pub struct NewPasswordlessRequest {
    pub email: String,
    pub throttle: Throttle,
    pub actor: Actor,
    pub now: Millis,
}

/// A sign-in with a code or a link, prepared before the transaction.
#[derive(Debug)]
pub struct NewPasswordless {
    /// The row of the code (its link's token hash).
    pub token_hash: String,
    pub by: By,
    /// The account the row was issued for, as read before; `None`: a new address.
    pub user_id: Option<Uuid>,
    /// For a new address: the account to create (`passwordless_signup`), else `None`.
    pub new_account: Option<NewAccountRows>,
    pub session: NewSession,
    /// The challenge written instead of the session when the account has a second factor.
    pub challenge: NewChallenge,
    /// The attempt's login counters, taken back: the code was right.
    pub refund: Option<Refund>,
    pub actor: Actor,
    pub now: Millis,
}

#[derive(Debug)]
pub enum Passwordless {
    /// The session; `created` when the account was created by this sign-in.
    Opened { account: Account, created: bool },
    /// The account has a second factor: a challenge was written, no session.
    MfaRequired,
    /// The code was used, expired, replaced or revoked meanwhile, the account was disabled or
    /// changed its address, or (for a new address) an account appeared or creation is off.
    Invalid,
    /// The application's `account_created` hook said no: nothing was written.
    Refused(HookError),
}

impl Store {
    /// Records a passwordless request, unless the address's throttle slot is taken; the same
    /// work for every address.
    pub async fn request_passwordless(
        &self,
        new: NewPasswordlessRequest,
    ) -> Result<(), sqlx::Error> {
        self.write(new, |c, new| {
            Box::pin(async move {
                if claim(c, &new.throttle, new.now).await?.is_ok() {
                    let id = Uuid::now_v7();
                    let kind = RequestKind::Passwordless;
                    reset_requests::insert(&mut *c, id, kind, &new.email, &new.actor, new.now)
                        .await?;
                }
                failpoint!("passwordless_start.before_commit");
                Ok(Done::Commit(()))
            })
        })
        .await
    }

    /// Turns a pending passwordless request into its code and email (the mail worker): the
    /// address's unused code is replaced. Whether this call did it (another instance may have).
    pub async fn issue_passwordless(
        &self,
        request_id: String,
        code: NewCode,
        mail: NewMail,
        actor: Actor,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        let input = (request_id, code, mail, actor);
        self.record(input, move |c, (id, code, mail, actor)| {
            Box::pin(async move {
                if !reset_requests::take(&mut *c, id).await? {
                    return Ok(Done::Rollback(false));
                }
                passwordless::replace(&mut *c, code, now).await?;
                enqueue(c, mail, now).await?;
                audit::record(&mut *c, audit::Kind::PasswordlessRequested, actor, now).await?;
                Ok(Done::Commit(true))
            })
        })
        .await
    }

    /// The live code of an address, its attempt counted (whether or not anyone waits for the
    /// answer); `None` when the address has none.
    pub async fn passwordless_attempt(
        &self,
        email_normalized: String,
        now: Millis,
    ) -> Result<Option<Live>, sqlx::Error> {
        self.record(email_normalized, move |c, email| {
            Box::pin(async move {
                Ok(Done::Commit(
                    passwordless::count_attempt(c, email, now).await?,
                ))
            })
        })
        .await
    }

    /// Signs in with a code or link: see the module docs.
    pub async fn sign_in_passwordless(
        &self,
        new: NewPasswordless,
    ) -> Result<Passwordless, sqlx::Error> {
        let app = self.hooks().clone();
        self.write_evented((new, app), |c, ((new, app), hooks)| {
            Box::pin(sign_in(c, new, app.as_ref(), hooks))
        })
        .await
    }
}

async fn sign_in(
    c: &mut Conn,
    new: &NewPasswordless,
    app: &dyn DynHooks,
    hooks: &Routes,
) -> Result<Done<Passwordless>, sqlx::Error> {
    // Of two requests racing with one code, only one gets past this UPDATE.
    let used = passwordless::spend(&mut *c, &new.token_hash, new.by, new.now).await?;
    let owner = new.user_id.map(|id| id.to_string());
    let Some(used) = used.filter(|u| u.user_id == owner) else {
        return Ok(Done::Rollback(Passwordless::Invalid));
    };
    let signed_in = match new.user_id {
        Some(user_id) => match existing(c, new, user_id, &used.email_normalized, hooks).await? {
            Some(outcome) => outcome,
            None => return Ok(Done::Rollback(Passwordless::Invalid)),
        },
        None => {
            let Some(rows) = &new.new_account else {
                return Ok(Done::Rollback(Passwordless::Invalid));
            };
            match created(c, new, rows, app, hooks).await? {
                Ok(account) => Passwordless::Opened {
                    account,
                    created: true,
                },
                Err(outcome) => return Ok(Done::Rollback(outcome)),
            }
        }
    };
    failpoint!("passwordless.before_commit");
    Ok(Done::Commit(signed_in))
}

/// The sign-in of an existing account; `None` when it is disabled, gone, or has another
/// address now.
async fn existing(
    c: &mut Conn,
    new: &NewPasswordless,
    user_id: Uuid,
    email_normalized: &str,
    hooks: &Routes,
) -> Result<Option<Passwordless>, sqlx::Error> {
    // The account's row, locked: a reset, change, address change or disable racing this waits
    // or wins.
    let Some(hash) = users::lock_enabled_at(&mut *c, user_id, email_normalized).await? else {
        return Ok(None);
    };
    if let Some(refund) = &new.refund {
        rate_limits::apply_refund(&mut *c, refund).await?;
    }
    // The code came from that mailbox: it proves the address.
    users::mark_email_verified(&mut *c, user_id, email_normalized, new.now).await?;
    // The code proves the mailbox only: an account with a second factor still needs it, as
    // after a password. The challenge is bound to the password hash as a login's is.
    let first = (hash.as_str(), SignIn::EmailOtp);
    if challenge_instead(c, user_id, &new.challenge, first, &new.actor, new.now).await? {
        return Ok(Some(Passwordless::MfaRequired));
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
    Ok(Some(Passwordless::Opened {
        account,
        created: false,
    }))
}

/// The account of a new address, created exactly as a signup creates one (`create_account`,
/// the application's hook included), with its first session.
async fn created(
    c: &mut Conn,
    new: &NewPasswordless,
    rows: &NewAccountRows,
    app: &dyn DynHooks,
    hooks: &Routes,
) -> Result<Result<Account, Passwordless>, sqlx::Error> {
    match create_account(c, rows, (app, Source::Passwordless), new.now).await? {
        Created::Created => {}
        // An account got the address since the code was sent: the code was not for it.
        Created::EmailTaken => return Ok(Err(Passwordless::Invalid)),
        Created::Refused(refused) => return Ok(Err(Passwordless::Refused(refused))),
    }
    let opening = (hooks, Opening::Signup);
    let account = open_login(c, opening, rows.user_id, &new.session, &new.actor, new.now).await?;
    Ok(Ok(account))
}
