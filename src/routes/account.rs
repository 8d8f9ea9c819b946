//! DELETE /auth/me (the user deletes the account, password re-entered) and GET /auth/me/export
//! (everything stored about the caller), and the password re-check they share with the email
//! change.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Json, Router};
use axum_extra::extract::CookieJar;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::body::{AccountBody, ProfileBody, UserBody};
use super::openapi::responses::{MfaRequired, Overloaded, Unauthenticated};
use super::password::stored_email;
use crate::app::AppState;
use crate::clock::rfc3339;
use crate::cookies;
use crate::domain::Email;
use crate::domain::password::{MAX_CHARS, normalize_secret};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, Authenticated, ClientInfo};
use crate::mail::links;
use crate::store;
use crate::store::audit::{self, Actor};
use crate::store::directory::{AdminRow, AuditRow, SessionRow};
use crate::store::flows::SessionRef;
use crate::store::flows::accounts::{Deletion, NewDeletion};
use crate::store::rate_limits::Refund;
use crate::tokens::SignIn;

pub fn router() -> Router<AppState> {
    Router::new().route("/auth/me/export", axum::routing::get(export))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    /// The account's password, re-entered.
    #[schema(value_type = String, required = true, format = Password)]
    pub(crate) password: Option<SecretString>,
}

/// Deletes the caller's account: user, profile, sessions and tokens, in one transaction.
#[utoipa::path(
    delete,
    path = "/auth/me",
    operation_id = "delete_me",
    tag = "account",
    security(("bearer" = []), ("access_cookie" = [])),
    request_body = DeleteRequest,
    responses(
        (status = 204, description = "The account is deleted; a notice went to its address. \
            Clears both session cookies.",
            headers(("Set-Cookie" = String, description = "Both session cookies, cleared \
                (`Max-Age=0`)."))),
        (status = 401, description = "`invalid_credentials`: wrong password; or \
            `unauthenticated`.", body = ErrorBody),
        (status = 403, response = MfaRequired),
        (status = 503, response = Overloaded),
    ),
)]
pub(super) async fn delete_me(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
    jar: CookieJar,
    ApiJson(req): ApiJson<DeleteRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let jar = delete_flow(&state, auth, &client, jar, req).await?;
    Ok((StatusCode::NO_CONTENT, jar))
}

/// The account deletion use case, shared by the JSON endpoint and the account page.
#[tracing::instrument(name = "delete_me", skip_all, fields(user_id = tracing::field::Empty))]
pub(crate) async fn delete_flow(
    state: &AppState,
    auth: Authenticated,
    client: &ClientInfo,
    jar: CookieJar,
    req: DeleteRequest,
) -> Result<CookieJar, ApiError> {
    tracing::Span::current().record("user_id", tracing::field::display(auth.user_id));
    let checked = check_password(state, auth, client, req.password).await?;
    let now = state.clock.now();
    let new = NewDeletion {
        user_id: auth.user_id,
        by_owner: Some((checked.verified_hash, checked.session)),
        notice: Some(links::account_deleted(state, &checked.email)?),
        refund: checked.refund,
        actor: checked.actor,
        now,
    };
    // One store call: the account and everything that names it, the audit event, the notice and
    // `user.deleted`, only while the password and the session are the ones just checked.
    match state.store.delete_account(new).await? {
        Deletion::Deleted(_) => {
            state.mailer.wake();
            Ok(cookies::clear_session(jar, state.settings.cookie_secure))
        }
        Deletion::Stale => Err(ApiError::InvalidCredentials),
        Deletion::NotFound => Err(ApiError::Unauthenticated),
        Deletion::Refused(refused) => Err(refused.into()),
    }
}

/// The caller's password, checked like at login (see `routes::password::change_flow`).
pub(crate) struct CheckedPassword {
    /// The stored hash it matched: the flow's precondition.
    pub verified_hash: String,
    /// The account's address.
    pub email: Email,
    pub session: SessionRef,
    pub actor: Actor,
    /// The attempt's counters, taken back by the flow that the password unlocks.
    pub refund: Option<Refund>,
}

/// Checks a re-entered password, for the changes that could take an account over. First the
/// step-up (`require_second_factor`): an account with a second factor needs a session that
/// signed in with one. A wrong password is 401 `invalid_credentials`, with an audit event in its
/// own transaction; it counts against the login failure limits and takes a place in the hashing
/// queue, so a stolen access token guesses no faster than the login form.
pub(crate) async fn check_password(
    state: &AppState,
    auth: Authenticated,
    client: &ClientInfo,
    password: Option<SecretString>,
) -> Result<CheckedPassword, ApiError> {
    require_second_factor(state, auth).await?;
    let Some(password) = password.filter(|p| !p.expose_secret().is_empty()) else {
        return Err(ApiError::field("password", "is required"));
    };
    let own = store::users::find_own_credentials(state.store.reader(), auth.user_id)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    let email = stored_email(&own.email)?;
    let password = normalize_secret(&password);
    let slot = state.hasher.reserve()?;
    let attempt = state.limits.login_attempt(client, &email, None).await?;
    let too_long = password.expose_secret().chars().count() > MAX_CHARS;
    let verified = slot
        .verify(password, Some(own.password_hash.clone()))
        .await?;
    let actor = client.actor(Some(auth.user_id), Some(auth.session_id));
    if too_long || !verified.matches {
        let kind = audit::Kind::PasswordCheckFailed;
        let now = state.clock.now();
        state.store.record_event(kind, actor, now).await?;
        return Err(ApiError::InvalidCredentials);
    }
    Ok(CheckedPassword {
        verified_hash: own.password_hash,
        email,
        session: SessionRef {
            user_id: auth.user_id,
            session_id: auth.session_id,
        },
        actor,
        refund: attempt.refund(),
    })
}

/// The step-up of the changes that could take an account over (its address, its deletion, its
/// factors): an account with a second factor or a passkey allows them only to a session that
/// signed in with one (`aal` 2). A session opened with the password alone (before the factor
/// was added, say) gets 403 `mfa_required` and must sign in again.
pub(crate) async fn require_second_factor(
    state: &AppState,
    auth: Authenticated,
) -> Result<(), ApiError> {
    let reader = state.store.reader();
    if !store::mfa::has_strong_sign_in(reader, auth.user_id).await? {
        return Ok(());
    }
    let sign_in = store::sessions::sign_in_of(reader, auth.session_id).await?;
    match sign_in.map(|s| SignIn::parse(&s).aal()) {
        Some(2..) => Ok(()),
        _ => Err(ApiError::MfaRequired),
    }
}

/// A session row in full, as the export and the admin API show it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SessionRecord)]
pub struct SessionRecord {
    #[schema(format = "uuid")]
    pub id: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub last_used_at: String,
    /// When it ends without a refresh, or at the latest.
    #[schema(format = DateTime)]
    pub expires_at: String,
    #[schema(required = true, format = DateTime)]
    pub revoked_at: Option<String>,
    #[schema(required = true)]
    pub revoked_reason: Option<String>,
    #[schema(required = true)]
    pub user_agent: Option<String>,
    #[schema(required = true)]
    pub ip: Option<String>,
}

impl From<SessionRow> for SessionRecord {
    fn from(s: SessionRow) -> Self {
        SessionRecord {
            id: s.id,
            created_at: rfc3339(s.created_at),
            last_used_at: rfc3339(s.last_used_at),
            expires_at: rfc3339(s.idle_expires_at.min(s.absolute_expires_at)),
            revoked_at: s.revoked_at.map(rfc3339),
            revoked_reason: s.revoked_reason,
            user_agent: s.user_agent,
            ip: s.ip,
        }
    }
}

/// An audit event, as the export and the admin API show it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuditEvent)]
pub struct AuditRecord {
    #[schema(format = "uuid")]
    pub id: String,
    /// What happened: `signup`, `login`, `login_failed`, `email_changed`, `user_deleted`, …
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(required = true, format = "uuid")]
    pub user_id: Option<String>,
    #[schema(required = true, format = "uuid")]
    pub session_id: Option<String>,
    #[schema(required = true)]
    pub ip: Option<String>,
    #[schema(required = true)]
    pub user_agent: Option<String>,
    /// The admin key of an admin API call (`latchkey admin-keys list`).
    #[schema(required = true, format = "uuid")]
    pub admin_key_id: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<AuditRow> for AuditRecord {
    fn from(e: AuditRow) -> Self {
        AuditRecord {
            id: e.id,
            kind: e.kind,
            user_id: e.user_id,
            session_id: e.session_id,
            ip: e.ip,
            user_agent: e.user_agent,
            admin_key_id: e.admin_key_id,
            created_at: rfc3339(e.created_at),
        }
    }
}

/// Everything stored about the caller.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AccountExport)]
pub struct ExportBody {
    pub user: UserBody,
    pub profile: ProfileBody,
    /// Every session row, ended ones included, newest first.
    pub sessions: Vec<SessionRecord>,
    /// Every audit event about the user, oldest first.
    pub audit_events: Vec<AuditRecord>,
    /// The OpenID providers' accounts that sign in to the user, oldest first.
    pub identities: Vec<super::oidc::IdentityView>,
}

/// Everything stored about the caller: user, profile, sessions, audit events and identities.
#[utoipa::path(
    get,
    path = "/auth/me/export",
    operation_id = "export_me",
    tag = "account",
    description = "Password hashes and token hashes are stored too, and never shown. Emails \
        waiting in the outbox and webhook deliveries are not part of it.",
    security(("bearer" = []), ("access_cookie" = [])),
    responses(
        (status = 200, description = "The caller's data.", body = ExportBody),
        (status = 401, response = Unauthenticated),
    ),
)]
#[tracing::instrument(name = "export_me", skip_all, fields(user_id = tracing::field::Empty))]
pub(super) async fn export(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<ExportBody>, ApiError> {
    tracing::Span::current().record("user_id", tracing::field::display(auth.user_id));
    let db = state.store.reader();
    let account = store::users::find_account(db, auth.user_id)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    let sessions = store::directory::sessions_of(db, auth.user_id, None).await?;
    let audit_events = store::directory::audit_of(db, auth.user_id).await?;
    let identities = super::oidc::list_flow(&state, auth).await?;
    let AccountBody { user, profile } = account.into();
    Ok(Json(ExportBody {
        user,
        profile,
        sessions: sessions.into_iter().map(SessionRecord::from).collect(),
        audit_events: audit_events.into_iter().map(AuditRecord::from).collect(),
        identities,
    }))
}

/// The user object of the admin API: the contract's user, and whether it is disabled.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AdminUser)]
pub struct AdminUserBody {
    #[serde(flatten)]
    pub user: UserBody,
    /// Disabled accounts cannot log in, and get no reset or verification email.
    pub disabled: bool,
}

impl From<AdminRow> for AdminUserBody {
    fn from(row: AdminRow) -> Self {
        AdminUserBody {
            user: AccountBody::from(row.account).user,
            disabled: row.disabled_at.is_some(),
        }
    }
}

/// JSON object text for `app_metadata`.
pub(crate) fn app_metadata_text(value: &Value) -> Result<String, ApiError> {
    match value {
        Value::Object(_) => Ok(value.to_string()),
        _ => Err(ApiError::field("app_metadata", "must be a JSON object")),
    }
}
