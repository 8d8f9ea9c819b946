//! The caller's profile.

use super::{SessionRef, lock_live_session};
use crate::clock::Millis;
use crate::domain::DisplayName;
use crate::failpoint::failpoint;
use crate::store::audit::{self, Actor};
use crate::store::tx::Done;
use crate::store::{Store, users};

impl Store {
    /// Sets the display name, with its audit event, while the caller's session is live; whether
    /// it was.
    pub async fn update_profile(
        &self,
        session: SessionRef,
        display_name: Option<DisplayName>,
        actor: Actor,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        self.write((display_name, actor), move |c, (name, actor)| {
            Box::pin(async move {
                if !lock_live_session(c, session, now).await? {
                    return Ok(Done::Rollback(false));
                }
                users::set_display_name(&mut *c, session.user_id, name.as_ref(), now).await?;
                audit::record(&mut *c, audit::Kind::ProfileUpdated, actor, now).await?;
                failpoint!("profile_update.before_commit");
                Ok(Done::Commit(true))
            })
        })
        .await
    }
}
