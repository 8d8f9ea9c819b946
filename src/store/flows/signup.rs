//! Signup: the user, the profile and the application's rows (`create_account`), the first
//! session (unless concealed), the audit event and the verification email, in one transaction.
//! The database decides uniqueness: a taken address writes nothing (`Signup::EmailTaken`).

use uuid::Uuid;

use super::accounts::{Created, NewAccountRows, create_account};
use super::{
    NewLink, NewMail, NewSession, Throttle, claim, enqueue, events, issue_link, open_session,
};
use crate::clock::Millis;
use crate::domain::{DisplayName, Email, Metadata};
use crate::failpoint::failpoint;
use crate::hooks::{DynHooks, HookError, Source};
use crate::store::Store;
use crate::store::audit::{self, Actor};
use crate::store::tx::{Conn, Done};
use crate::store::users::Account;
use crate::store::webhooks::Routes;
use crate::webhooks::event::EventType;

/// Everything a signup writes, prepared before the transaction.
#[derive(Debug)]
pub struct NewSignup {
    pub user_id: Uuid,
    pub email: Email,
    pub password_hash: String,
    pub display_name: Option<DisplayName>,
    pub metadata: Metadata,
    /// `None` with `conceal_existing_accounts`: the account gets no session.
    pub session: Option<NewSession>,
    pub verification: NewLink,
    /// The verification email's throttle slot, taken by the signup so that the next resend waits.
    pub throttle: Throttle,
    pub actor: Actor,
    pub now: Millis,
}

#[derive(Debug)]
pub enum Signup {
    Created(Account),
    EmailTaken,
    /// The application's `account_created` hook said no: nothing was written.
    Refused(HookError),
}

impl Store {
    /// Creates the account, its profile, its first session and its verification link, or
    /// nothing at all.
    pub async fn signup(&self, new: NewSignup) -> Result<Signup, sqlx::Error> {
        let rows = NewAccountRows {
            user_id: new.user_id,
            email: new.email.clone(),
            password_hash: new.password_hash.clone(),
            display_name: new.display_name.clone(),
            metadata: new.metadata.clone(),
            app_metadata: None,
            email_verified: false,
        };
        let app = self.hooks().clone();
        self.write_evented((new, rows, app), |c, ((new, rows, app), hooks)| {
            Box::pin(signup(c, new, rows, app.as_ref(), hooks))
        })
        .await
    }

    /// Concealed signup with a taken address: the notice to the owner, at most one per address
    /// per throttle window, silently.
    pub async fn notify_account_exists(
        &self,
        notice: NewMail,
        throttle: Throttle,
        now: Millis,
    ) -> Result<(), sqlx::Error> {
        self.write((notice, throttle), move |c, (notice, throttle)| {
            Box::pin(async move {
                if claim(c, throttle, now).await?.is_ok() {
                    enqueue(c, notice, now).await?;
                }
                Ok(Done::Commit(()))
            })
        })
        .await
    }
}

async fn signup(
    c: &mut Conn,
    new: &NewSignup,
    rows: &NewAccountRows,
    app: &dyn DynHooks,
    hooks: &Routes,
) -> Result<Done<Signup>, sqlx::Error> {
    // The user, the profile and the application's rows: the one way an account comes to be.
    match create_account(c, rows, (app, Source::Signup), new.now).await? {
        Created::Created => {}
        Created::EmailTaken => return Ok(Done::Rollback(Signup::EmailTaken)),
        Created::Refused(refused) => return Ok(Done::Rollback(Signup::Refused(refused))),
    }
    if let Some(session) = &new.session {
        open_session(c, new.user_id, session, new.now).await?;
    }
    audit::record(&mut *c, audit::Kind::Signup, &new.actor, new.now).await?;
    // The verification email is written with the account: it exists exactly when the account
    // does. A new address has no slot taken, so the claim only starts the resend's wait.
    let _ = claim(c, &new.throttle, new.now).await?;
    issue_link(c, new.user_id, &new.verification, new.now).await?;
    let created = events::find(c, new.user_id).await?;
    let session_id = new.session.as_ref().map(|s| s.id.to_string());
    let event = EventType::UserCreated;
    let (session, now) = (session_id.as_deref(), new.now);
    events::about(c, hooks, event, &created, session, None, now).await?;
    failpoint!("signup.before_commit");
    Ok(Done::Commit(Signup::Created(created)))
}
