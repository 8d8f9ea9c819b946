//! The admin API's writes on accounts: create (with an invitation), patch, revoke the sessions,
//! send a reset link. Each is one transaction with its audit events, which name the admin key
//! (`Actor::admin_key_id`), and its webhook events.

use uuid::Uuid;

use super::accounts::{Created, NewAccountRows, create_account};
use super::revoke::{revoke_all_by_admin, set_disabled};
use super::{NewLink, events, issue_link};
use crate::clock::Millis;
use crate::hooks::{DynHooks, HookError, Source};
use crate::store::audit::{self, Actor};
use crate::store::directory::{self, AdminRow};
use crate::store::tx::{Conn, Done};
use crate::store::users;
use crate::store::webhooks::Routes;
use crate::store::{Store, one_time_tokens};
use crate::tokens::Purpose;
use crate::webhooks::event::EventType;

/// An account created by an operator, prepared before the transaction.
#[derive(Debug)]
pub struct NewAdminUser {
    pub rows: NewAccountRows,
    /// With `send_invite`: the link that sets the password, and its email.
    pub invite: Option<NewLink>,
    pub actor: Actor,
    pub now: Millis,
}

#[derive(Debug)]
pub enum AdminCreate {
    Created(Box<AdminRow>),
    EmailTaken,
    /// The application's `account_created` hook refused (library mode).
    Refused(HookError),
}

/// What `PATCH /admin/v1/users/{id}` changes: the fields given, nothing else.
#[derive(Debug, Default)]
pub struct UserPatch {
    pub email_verified: Option<bool>,
    pub disabled: Option<bool>,
    /// JSON object text.
    pub app_metadata: Option<String>,
}

/// An operator's reset link for a user, prepared before the transaction for the address read.
#[derive(Debug)]
pub struct NewAdminReset {
    pub user_id: Uuid,
    pub link: NewLink,
    pub actor: Actor,
    pub now: Millis,
}

#[derive(Debug, PartialEq, Eq)]
pub enum AdminReset {
    Sent,
    /// Disabled accounts get no reset email (they cannot log in anyway).
    Disabled,
    NotFound,
    /// The address changed since the link was prepared for it.
    Stale,
}

impl Store {
    /// Creates an account for an operator: user, profile, audit event, `user.created` and, when
    /// asked, the invitation, or nothing.
    pub async fn create_user_by_admin(
        &self,
        new: NewAdminUser,
    ) -> Result<AdminCreate, sqlx::Error> {
        let app = self.hooks().clone();
        self.write_evented((new, app), |c, ((new, app), hooks)| {
            Box::pin(create(c, new, app.as_ref(), hooks))
        })
        .await
    }

    /// Applies a patch; the account as it is now, or `None` when there is no such user.
    pub async fn patch_user(
        &self,
        user_id: Uuid,
        patch: UserPatch,
        actor: Actor,
        now: Millis,
    ) -> Result<Option<AdminRow>, sqlx::Error> {
        let input = (patch, actor);
        self.write_evented(input, move |c, ((patch, actor), hooks)| {
            Box::pin(patch_flow(c, hooks, user_id, patch, actor, now))
        })
        .await
    }

    /// Revokes every session of a user for an operator; how many, or `None` when there is no
    /// such user.
    pub async fn revoke_sessions_by(
        &self,
        user_id: Uuid,
        actor: Actor,
        now: Millis,
    ) -> Result<Option<u64>, sqlx::Error> {
        self.write_evented(actor, move |c, (actor, hooks)| {
            Box::pin(async move {
                if !users::lock_user(&mut *c, user_id, None).await? {
                    return Ok(Done::Rollback(None));
                }
                let revoked = revoke_all_by_admin(c, hooks, user_id, actor, now).await?;
                Ok(Done::Commit(Some(revoked)))
            })
        })
        .await
    }

    /// Sends a reset link at an operator's request (earlier links stay valid, as with forgot).
    pub async fn send_reset_by_admin(&self, new: NewAdminReset) -> Result<AdminReset, sqlx::Error> {
        self.write(new, |c, new| {
            Box::pin(async move {
                if !users::lock_user(&mut *c, new.user_id, None).await? {
                    return Ok(Done::Rollback(AdminReset::NotFound));
                }
                let contact = users::find_contact(&mut *c, new.user_id).await?;
                let Some(contact) = contact else {
                    return Ok(Done::Rollback(AdminReset::NotFound));
                };
                if contact.disabled_at.is_some() {
                    return Ok(Done::Rollback(AdminReset::Disabled));
                }
                if contact.email != new.link.mail.recipient {
                    return Ok(Done::Rollback(AdminReset::Stale));
                }
                issue_link(c, new.user_id, &new.link, new.now).await?;
                let kind = audit::Kind::PasswordResetSent;
                audit::record(&mut *c, kind, &new.actor, new.now).await?;
                Ok(Done::Commit(AdminReset::Sent))
            })
        })
        .await
    }
}

async fn create(
    c: &mut Conn,
    new: &NewAdminUser,
    app: &dyn DynHooks,
    hooks: &Routes,
) -> Result<Done<AdminCreate>, sqlx::Error> {
    match create_account(c, &new.rows, (app, Source::Admin), new.now).await? {
        Created::Created => {}
        Created::EmailTaken => return Ok(Done::Rollback(AdminCreate::EmailTaken)),
        Created::Refused(refused) => return Ok(Done::Rollback(AdminCreate::Refused(refused))),
    }
    let user_id = new.rows.user_id;
    audit::record(&mut *c, audit::Kind::UserCreated, &new.actor, new.now).await?;
    if let Some(invite) = &new.invite {
        issue_link(c, user_id, invite, new.now).await?;
    }
    let created = events::find(c, user_id).await?;
    let event = EventType::UserCreated;
    events::about(c, hooks, event, &created, None, None, new.now).await?;
    let row = AdminRow {
        account: created,
        disabled_at: None,
    };
    Ok(Done::Commit(AdminCreate::Created(Box::new(row))))
}

async fn patch_flow(
    c: &mut Conn,
    hooks: &Routes,
    user_id: Uuid,
    patch: &UserPatch,
    actor: &Actor,
    now: Millis,
) -> Result<Done<Option<AdminRow>>, sqlx::Error> {
    if !users::lock_user(&mut *c, user_id, None).await? {
        return Ok(Done::Rollback(None));
    }
    if let Some(verified) = patch.email_verified {
        users::set_email_verified(&mut *c, user_id, verified, now).await?;
        if !verified {
            // Links sent for the old state prove nothing an operator did not overrule.
            let purpose = Purpose::EmailVerification;
            one_time_tokens::revoke_all(&mut *c, user_id, purpose, now).await?;
        }
        audit::record(&mut *c, audit::Kind::EmailVerificationSet, actor, now).await?;
        if verified {
            let event = EventType::UserEmailVerified;
            events::user(c, hooks, event, user_id, None, now).await?;
        }
    }
    if let Some(app_metadata) = &patch.app_metadata {
        users::set_app_metadata(&mut *c, user_id, app_metadata, now).await?;
        audit::record(&mut *c, audit::Kind::AppMetadataSet, actor, now).await?;
    }
    if let Some(disable) = patch.disabled {
        set_disabled(c, hooks, user_id, disable, actor, now).await?;
    }
    let account = directory::admin_account(&mut *c, user_id).await?;
    Ok(Done::Commit(account))
}
