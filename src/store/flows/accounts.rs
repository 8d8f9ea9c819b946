//! Accounts come and go here: `create_account`, the one way every flow that creates an account
//! (signup, a first passwordless sign-in, the admin API's create, the import, `latchkey users
//! create` and `users import`)
//! inserts the user and its profile, and `Store::delete_account`, the one flow of every deletion
//! (`DELETE /auth/me`, the admin API's `DELETE`, `latchkey users delete`).
//!
//! A deletion is one transaction: the user row (its profile, sessions, refresh tokens and
//! one-time tokens go with it by cascade), every outbox message to its addresses and its mail
//! throttle slots (so no table keeps the address), the audit event, the notice to the address and
//! `user.deleted`. Audit events are kept: they name the user by id only, never by address, and
//! the ones about the deleted account stay attributable to that id.

use uuid::Uuid;

use super::{NewMail, SessionRef, app_hooks, enqueue, events, lock_live_session};
use crate::clock::Millis;
use crate::domain::{DisplayName, Email, Metadata};
use crate::failpoint::failpoint;
use crate::hooks::{DeletedAccount, DynHooks, HookError, NewAccount, Source};
use crate::store::audit::{self, Actor};
use crate::store::rate_limits::{self, Refund};
use crate::store::tx::{Conn, Done};
use crate::store::users::{self, Account};
use crate::store::webhooks::Routes;
use crate::store::{Store, admin, mail_throttle, outbox, passwordless};
use crate::webhooks::event::EventType;

/// The rows of a new account, prepared before the transaction.
#[derive(Debug, Clone)]
pub struct NewAccountRows {
    pub user_id: Uuid,
    pub email: Email,
    /// An Argon2id PHC string, an imported hash (`password::imported`), or
    /// `password::imported::UNUSABLE` for an account without a password yet.
    pub password_hash: String,
    pub display_name: Option<DisplayName>,
    pub metadata: Metadata,
    /// `user.app_metadata` as JSON object text; `None`: `{}`.
    pub app_metadata: Option<String>,
    pub email_verified: bool,
}

/// What `create_account` did.
#[derive(Debug)]
pub enum Created {
    Created,
    /// An account has this address (after normalization); nothing was written.
    EmailTaken,
    /// The application's `account_created` hook refused (library mode): the caller rolls back.
    Refused(HookError),
}

/// Inserts the user and its profile: the one way an account comes into being. A taken address is
/// `Created::EmailTaken` and writes nothing; the transaction stays usable, so an import goes on
/// with its next line.
pub(in crate::store) async fn create_account(
    c: &mut Conn,
    new: &NewAccountRows,
    (app, source): (&dyn DynHooks, Source),
    now: Millis,
) -> Result<Created, sqlx::Error> {
    let id = new.user_id;
    if !users::insert_user_if_new(&mut *c, id, &new.email, &new.password_hash, now).await? {
        return Ok(Created::EmailTaken);
    }
    // The contract's failpoints of signup, in the one place every account is written.
    failpoint!("signup.after_user");
    let name = new.display_name.as_ref();
    users::insert_profile(&mut *c, id, name, &new.metadata, now).await?;
    failpoint!("signup.after_profile");
    if let Some(app_metadata) = &new.app_metadata {
        users::set_app_metadata(&mut *c, id, app_metadata, now).await?;
    }
    if new.email_verified {
        users::set_email_verified(&mut *c, id, true, now).await?;
    }
    // The application's rows, in this same transaction (library mode).
    let account = NewAccount {
        user_id: id,
        email: new.email.as_str(),
        display_name: name.map(DisplayName::as_str),
        metadata: new.metadata.value(),
        source,
    };
    Ok(match app_hooks::account_created(c, app, &account).await? {
        Ok(()) => Created::Created,
        Err(refused) => Created::Refused(refused),
    })
}

/// A deletion, prepared before the transaction.
#[derive(Debug)]
pub struct NewDeletion {
    pub user_id: Uuid,
    /// The user's own deletion (`DELETE /auth/me`): the hash the password was verified against
    /// and the caller's session, both re-checked in the transaction.
    pub by_owner: Option<(String, SessionRef)>,
    /// The notice to the account's address, rendered for the address read before; the deletion
    /// goes ahead only while that is still the address (else `Deletion::Stale`).
    pub notice: Option<NewMail>,
    /// The owner's password check's rate-limit counters, taken back.
    pub refund: Option<Refund>,
    pub actor: Actor,
    pub now: Millis,
}

#[derive(Debug)]
pub enum Deletion {
    /// Deleted; the account as it was.
    Deleted(Box<Account>),
    NotFound,
    /// The password, the session or the address changed since they were read.
    Stale,
    /// The application's `account_deleting` hook refused (library mode): the account stays.
    Refused(HookError),
}

impl Store {
    /// Deletes an account and everything that names it, or nothing (see the module docs).
    pub async fn delete_account(&self, new: NewDeletion) -> Result<Deletion, sqlx::Error> {
        let app = self.hooks().clone();
        self.write_evented((new, app), |c, ((new, app), hooks)| {
            Box::pin(delete(c, new, app.as_ref(), hooks))
        })
        .await
    }

    /// `delete_account` by an operator without a notice (tests, tools): whether there was one.
    pub async fn delete_user(&self, user_id: Uuid, now: Millis) -> Result<bool, sqlx::Error> {
        let new = NewDeletion {
            user_id,
            by_owner: None,
            notice: None,
            refund: None,
            actor: Actor::user(user_id),
            now,
        };
        Ok(matches!(
            self.delete_account(new).await?,
            Deletion::Deleted(_)
        ))
    }
}

async fn delete(
    c: &mut Conn,
    new: &NewDeletion,
    app: &dyn DynHooks,
    hooks: &Routes,
) -> Result<Done<Deletion>, sqlx::Error> {
    let user_id = new.user_id;
    // The user row first (the lock order of every flow), with the owner's password if it is the
    // owner's deletion; then the owner's session.
    let verified = new.by_owner.as_ref().map(|(hash, _)| hash.as_str());
    if !users::lock_user(&mut *c, user_id, verified).await? {
        let outcome = match verified {
            Some(_) => Deletion::Stale,
            None => Deletion::NotFound,
        };
        return Ok(Done::Rollback(outcome));
    }
    if let Some((_, session)) = &new.by_owner
        && !lock_live_session(c, *session, new.now).await?
    {
        return Ok(Done::Rollback(Deletion::Stale));
    }
    let before = events::find(c, user_id).await?;
    if new
        .notice
        .as_ref()
        .is_some_and(|notice| notice.recipient != before.email)
    {
        return Ok(Done::Rollback(Deletion::Stale));
    }
    outbox::purge_for_user(&mut *c, user_id).await?;
    mail_throttle::purge_for_user(&mut *c, user_id).await?;
    passwordless::purge_for_user(&mut *c, user_id).await?;
    // The application's rows go in this same transaction (library mode).
    let account = DeletedAccount { user_id };
    if let Err(refused) = app_hooks::account_deleting(c, app, &account).await? {
        return Ok(Done::Rollback(Deletion::Refused(refused)));
    }
    failpoint!("account_delete.before_delete");
    if !admin::delete_user(&mut *c, user_id).await? {
        return Ok(Done::Rollback(Deletion::NotFound));
    }
    if let Some(refund) = &new.refund {
        rate_limits::apply_refund(&mut *c, refund).await?;
    }
    audit::record(&mut *c, audit::Kind::UserDeleted, &new.actor, new.now).await?;
    if let Some(notice) = &new.notice {
        enqueue(c, notice, new.now).await?;
    }
    let event = EventType::UserDeleted;
    events::about(c, hooks, event, &before, None, None, new.now).await?;
    failpoint!("account_delete.before_commit");
    Ok(Done::Commit(Deletion::Deleted(Box::new(before))))
}
