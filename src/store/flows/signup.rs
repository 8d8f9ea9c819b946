//! Signup: the user, the profile, the first session (unless concealed), the audit event and the
//! verification email, in one transaction. The database decides uniqueness: a taken address is
//! the `users_email_normalized_key` violation, mapped here to `Signup::EmailTaken`.

use uuid::Uuid;

use super::{NewLink, NewMail, NewSession, Throttle, claim, enqueue, issue_link, open_session};
use crate::clock::Millis;
use crate::domain::{DisplayName, Email};
use crate::failpoint::failpoint;
use crate::store::audit::{self, Actor};
use crate::store::tx::{Conn, Done};
use crate::store::users::{self, Account};
use crate::store::{Constraint, Store};

/// Everything a signup writes, prepared before the transaction.
#[derive(Debug)]
pub struct NewSignup {
    pub user_id: Uuid,
    pub email: Email,
    pub password_hash: String,
    pub display_name: Option<DisplayName>,
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
}

impl Store {
    /// Creates the account, its profile, its first session and its verification link, or
    /// nothing at all.
    pub async fn signup(&self, new: NewSignup) -> Result<Signup, sqlx::Error> {
        self.write(new, |c, new| Box::pin(signup(c, new))).await
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

async fn signup(c: &mut Conn, new: &NewSignup) -> Result<Done<Signup>, sqlx::Error> {
    let inserted = users::insert_user(
        &mut *c,
        new.user_id,
        &new.email,
        &new.password_hash,
        new.now,
    )
    .await;
    match inserted {
        Err(err) if Constraint::UserEmail.violated_by(&err) => {
            return Ok(Done::Rollback(Signup::EmailTaken));
        }
        other => other?,
    }
    failpoint!("signup.after_user");
    users::insert_profile(&mut *c, new.user_id, new.display_name.as_ref(), new.now).await?;
    failpoint!("signup.after_profile");
    if let Some(session) = &new.session {
        open_session(c, new.user_id, session, new.now).await?;
    }
    audit::record(&mut *c, audit::Kind::Signup, &new.actor, new.now).await?;
    // The verification email is written with the account: it exists exactly when the account
    // does. A new address has no slot taken, so the claim only starts the resend's wait.
    let _ = claim(c, &new.throttle, new.now).await?;
    issue_link(c, new.user_id, &new.verification, new.now).await?;
    let created = users::find_account(&mut *c, new.user_id)
        .await?
        .ok_or_else(|| sqlx::Error::Protocol("account vanished inside its transaction".into()))?;
    failpoint!("signup.before_commit");
    Ok(Done::Commit(Signup::Created(created)))
}
