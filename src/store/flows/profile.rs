//! The caller's profile.

use super::{SessionRef, events, lock_live_session};
use crate::clock::Millis;
use crate::domain::{DisplayName, Metadata};
use crate::failpoint::failpoint;
use crate::store::audit::{self, Actor};
use crate::store::tx::Done;
use crate::store::{Store, users};
use crate::webhooks::event::EventType;

/// What a profile update changes: each field given, nothing else.
#[derive(Debug, Default)]
pub struct ProfileChange {
    /// `Some(None)`: remove the name.
    pub display_name: Option<Option<DisplayName>>,
    /// Replaces the whole object.
    pub metadata: Option<Metadata>,
}

impl Store {
    /// Applies the change, with its audit event and `user.profile_updated`, while the caller's
    /// session is live; whether it was.
    pub async fn update_profile(
        &self,
        session: SessionRef,
        change: ProfileChange,
        actor: Actor,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        self.write_evented((change, actor), move |c, ((change, actor), hooks)| {
            Box::pin(async move {
                if !lock_live_session(c, session, now).await? {
                    return Ok(Done::Rollback(false));
                }
                let user_id = session.user_id;
                if let Some(name) = &change.display_name {
                    users::set_display_name(&mut *c, user_id, name.as_ref(), now).await?;
                }
                if let Some(metadata) = &change.metadata {
                    users::set_metadata(&mut *c, user_id, metadata, now).await?;
                }
                audit::record(&mut *c, audit::Kind::ProfileUpdated, actor, now).await?;
                let event = EventType::UserProfileUpdated;
                events::user(c, hooks, event, user_id, Some(session.session_id), now).await?;
                failpoint!("profile_update.before_commit");
                Ok(Done::Commit(true))
            })
        })
        .await
    }
}
