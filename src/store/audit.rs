//! The audit trail. Events are written inside the transaction of the flow they record, so an
//! event exists exactly when what it describes happened; events of failed attempts are written in
//! their own transaction, because the failure must not erase them.

use sqlx::{Any, Executor, FromRow};
use uuid::Uuid;

use crate::clock::Millis;

/// What happened, as stored in `audit_events.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Signup,
    Login,
    LoginFailed,
    Refresh,
    RefreshReuseDetected,
    Logout,
    LogoutAll,
    SessionRevoked,
    ProfileUpdated,
    PasswordResetRequested,
    PasswordReset,
    PasswordChanged,
    PasswordChangeFailed,
    EmailVerificationRequested,
    EmailVerified,
    UserDisabled,
    UserEnabled,
    UserDeleted,
    SessionsRevokedByAdmin,
    MfaEnabled,
    MfaDisabled,
    /// A right password for an account with a second factor: a challenge, no session yet.
    MfaChallenged,
    MfaFailed,
    EmailChangeRequested,
    EmailChanged,
    /// An account created by the admin API or the CLI (`users create`).
    UserCreated,
    /// An account brought in by an import (admin API or `users import`).
    UserImported,
    /// `email_verified` set or cleared by the admin API.
    EmailVerificationSet,
    AppMetadataSet,
    /// A reset link sent at an operator's request (admin API).
    PasswordResetSent,
    AdminKeyCreated,
    AdminKeyRevoked,
    /// A wrong password re-entered for an email change or a deletion.
    PasswordCheckFailed,
    PasskeyAdded,
    PasskeyRemoved,
    /// A passwordless sign-in email (link and code) issued for an account or a new address.
    PasswordlessRequested,
    /// A wrong, unknown or dead passwordless code.
    PasswordlessFailed,
    /// An OpenID provider's account linked to the user (signed in) or unlinked from it.
    IdentityLinked,
    IdentityUnlinked,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Signup => "signup",
            Kind::Login => "login",
            Kind::LoginFailed => "login_failed",
            Kind::Refresh => "refresh",
            Kind::RefreshReuseDetected => "refresh_reuse_detected",
            Kind::Logout => "logout",
            Kind::LogoutAll => "logout_all",
            Kind::SessionRevoked => "session_revoked",
            Kind::ProfileUpdated => "profile_updated",
            Kind::PasswordResetRequested => "password_reset_requested",
            Kind::PasswordReset => "password_reset",
            Kind::PasswordChanged => "password_changed",
            Kind::PasswordChangeFailed => "password_change_failed",
            Kind::EmailVerificationRequested => "email_verification_requested",
            Kind::EmailVerified => "email_verified",
            Kind::UserDisabled => "user_disabled",
            Kind::UserEnabled => "user_enabled",
            Kind::UserDeleted => "user_deleted",
            Kind::SessionsRevokedByAdmin => "sessions_revoked_by_admin",
            Kind::MfaEnabled => "mfa_enabled",
            Kind::MfaDisabled => "mfa_disabled",
            Kind::MfaChallenged => "mfa_challenged",
            Kind::MfaFailed => "mfa_failed",
            Kind::EmailChangeRequested => "email_change_requested",
            Kind::EmailChanged => "email_changed",
            Kind::UserCreated => "user_created",
            Kind::UserImported => "user_imported",
            Kind::EmailVerificationSet => "email_verification_set",
            Kind::AppMetadataSet => "app_metadata_set",
            Kind::PasswordResetSent => "password_reset_sent",
            Kind::AdminKeyCreated => "admin_key_created",
            Kind::AdminKeyRevoked => "admin_key_revoked",
            Kind::PasswordCheckFailed => "password_check_failed",
            Kind::PasskeyAdded => "passkey_added",
            Kind::PasskeyRemoved => "passkey_removed",
            Kind::PasswordlessRequested => "passwordless_requested",
            Kind::PasswordlessFailed => "passwordless_failed",
            Kind::IdentityLinked => "identity_linked",
            Kind::IdentityUnlinked => "identity_unlinked",
        }
    }
}

/// Who did it and from where.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub user_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The admin key behind an admin API call (`admin_keys.id`).
    pub admin_key_id: Option<Uuid>,
}

impl Actor {
    /// An event about a user, with no request behind it (the operator's commands).
    pub fn user(user_id: Uuid) -> Actor {
        Actor {
            user_id: Some(user_id),
            ..Actor::default()
        }
    }

    /// The same actor, now about `user_id` (an admin call names its target once it is known).
    pub fn about(&self, user_id: Uuid) -> Actor {
        Actor {
            user_id: Some(user_id),
            ..self.clone()
        }
    }
}

pub(in crate::store) async fn record<'e>(
    db: impl Executor<'e, Database = Any>,
    kind: Kind,
    actor: &Actor,
    now: Millis,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_events \
         (id, kind, user_id, session_id, ip, user_agent, created_at, admin_key_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(kind.as_str())
    .bind(actor.user_id.map(|id| id.to_string()))
    .bind(actor.session_id.map(|id| id.to_string()))
    .bind(actor.ip.as_deref())
    .bind(actor.user_agent.as_deref())
    .bind(now)
    .bind(actor.admin_key_id.map(|id| id.to_string()))
    .execute(db)
    .await?;
    Ok(())
}

/// An event as the operator sees it.
#[derive(Debug, FromRow)]
pub struct EventRow {
    pub id: String,
    pub kind: String,
    pub session_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: i64,
}

/// A user's events, newest first (those of a deleted account stay, under its id).
pub async fn for_user<'e>(
    db: impl Executor<'e, Database = Any>,
    user_id: Uuid,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, kind, session_id, ip, user_agent, created_at FROM audit_events \
         WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(user_id.to_string())
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Deletes events written before `before` (`audit_retention`); how many.
pub(in crate::store) async fn prune<'e>(
    db: impl Executor<'e, Database = Any>,
    before: Millis,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM audit_events WHERE created_at < $1")
        .bind(before)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}
