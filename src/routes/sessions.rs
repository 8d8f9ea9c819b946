//! Session management: POST /auth/logout-all, GET /auth/sessions, DELETE /auth/sessions/{id}.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use axum_extra::extract::CookieJar;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::openapi::responses::Unauthenticated;
use crate::app::AppState;
use crate::clock::rfc3339;
use crate::cookies;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Authenticated, ClientInfo};
use crate::store;
use crate::store::sessions::Reason;
use crate::tokens::SignIn;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/logout-all", post(logout_all))
        .route("/auth/sessions", get(list))
        .route("/auth/sessions/{id}", delete(revoke))
}

/// Revokes every session of the caller, this one included.
#[utoipa::path(
    post,
    path = "/auth/logout-all",
    tag = "sessions",
    security(("bearer" = []), ("access_cookie" = [])),
    responses(
        (status = 204, description = "Every session of the user is revoked. Clears both session \
            cookies.",
            headers(("Set-Cookie" = String, description = "Both session cookies, cleared \
                (`Max-Age=0`)."))),
        (status = 401, response = Unauthenticated),
    ),
)]
pub(super) async fn logout_all(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
    jar: CookieJar,
) -> Result<impl IntoResponse, ApiError> {
    let jar = logout_all_flow(&state, auth, &client, jar).await?;
    Ok((StatusCode::NO_CONTENT, jar))
}

/// The logout-everywhere use case, shared by the JSON endpoint and the account page.
#[tracing::instrument(name = "logout_all", skip_all, fields(user_id = tracing::field::Empty))]
pub(crate) async fn logout_all_flow(
    state: &AppState,
    auth: Authenticated,
    client: &ClientInfo,
    jar: CookieJar,
) -> Result<CookieJar, ApiError> {
    // The extractor told the request's span; the handler's (and the store task that inherits
    // it) says it too.
    tracing::Span::current().record("user_id", tracing::field::display(auth.user_id));
    let actor = client.actor(Some(auth.user_id), Some(auth.session_id));
    // One store call: the revocations and their audit event.
    let revoked = state
        .store
        .logout_all(auth.user_id, actor, state.clock.now())
        .await?;
    state.metrics.revoked(Reason::LogoutAll, revoked);
    Ok(cookies::clear_session(jar, state.settings.cookie_secure))
}

/// One live session of the caller.
#[derive(Serialize, ToSchema)]
#[schema(as = SessionInfo)]
pub struct SessionView {
    #[schema(format = "uuid")]
    pub(crate) id: String,
    #[schema(format = DateTime)]
    pub(crate) created_at: String,
    #[schema(format = DateTime)]
    pub(crate) last_used_at: String,
    #[schema(required = true)]
    pub(crate) user_agent: Option<String>,
    /// The client's address as the server saw it (see `trusted_proxies`).
    #[schema(required = true)]
    pub(crate) ip: Option<String>,
    /// Whether this is the session of the request.
    pub(crate) current: bool,
    /// How it signed in (RFC 8176): `["pwd"]`, `["pwd", "otp"]` with a second factor, `["otp"]`
    /// with an emailed code, `["otp", "mfa"]` with an emailed code and a second factor.
    #[schema(example = json!(["pwd"]))]
    pub(crate) amr: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SessionList {
    sessions: Vec<SessionView>,
}

/// The caller's live sessions, most recently used first.
#[utoipa::path(
    get,
    path = "/auth/sessions",
    operation_id = "list_sessions",
    tag = "sessions",
    security(("bearer" = []), ("access_cookie" = [])),
    responses(
        (status = 200, description = "The live sessions of the user.", body = SessionList),
        (status = 401, response = Unauthenticated),
    ),
)]
pub(super) async fn list(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<SessionList>, ApiError> {
    let sessions = list_flow(&state, auth).await?;
    Ok(Json(SessionList { sessions }))
}

/// The caller's live sessions, most recently used first: for the JSON endpoint and the account
/// page.
#[tracing::instrument(name = "list_sessions", skip_all, fields(user_id = tracing::field::Empty))]
pub(crate) async fn list_flow(
    state: &AppState,
    auth: Authenticated,
) -> Result<Vec<SessionView>, ApiError> {
    // The extractor told the request's span; the handler's (and the store task that inherits
    // it) says it too.
    tracing::Span::current().record("user_id", tracing::field::display(auth.user_id));
    let rows =
        store::sessions::live_sessions(state.store.reader(), auth.user_id, state.clock.now())
            .await?;
    let current = auth.session_id.to_string();
    let sessions = rows
        .into_iter()
        .map(|s| SessionView {
            current: s.id == current,
            id: s.id,
            created_at: rfc3339(s.created_at),
            last_used_at: rfc3339(s.last_used_at),
            user_agent: s.user_agent,
            ip: s.ip,
            amr: SignIn::parse(&s.amr).amr(),
        })
        .collect();
    Ok(sessions)
}

/// Revokes one of the caller's sessions. Another user's session, or no session, is 404: the
/// caller learns nothing about ids that are not theirs.
#[utoipa::path(
    delete,
    path = "/auth/sessions/{id}",
    operation_id = "revoke_session",
    tag = "sessions",
    security(("bearer" = []), ("access_cookie" = [])),
    params(("id" = String, Path, format = "uuid", description = "A session id from \
        GET /auth/sessions.")),
    responses(
        (status = 204, description = "The session is revoked. When it is the session of the \
            request, both session cookies are cleared.",
            headers(("Set-Cookie" = String, description = "Only when the revoked session is \
                the caller's own: both session cookies, cleared (`Max-Age=0`)."))),
        (status = 401, response = Unauthenticated),
        (status = 404, description = "`not_found`: no live session of the caller has this id \
            (another user's session included).", body = ErrorBody),
    ),
)]
pub(super) async fn revoke(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
    jar: CookieJar,
    id: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    // An id that is no UUID, or not even UTF-8 once percent-decoded (whose rejection would
    // otherwise be axum's plain-text 400), names no session of the caller.
    let id = id.ok().map(|Path(id)| id);
    let (jar, _) = revoke_flow(&state, auth, &client, jar, id.as_deref()).await?;
    Ok((StatusCode::NO_CONTENT, jar))
}

/// The revocation of one of the caller's sessions, shared by the JSON endpoint and the account
/// page; with whether it was the session of the request (then a logout: its cookies are
/// cleared). An id that names no live session of the caller (no UUID, another user's) is 404.
#[tracing::instrument(name = "revoke_session", skip_all, fields(user_id = tracing::field::Empty))]
pub(crate) async fn revoke_flow(
    state: &AppState,
    auth: Authenticated,
    client: &ClientInfo,
    jar: CookieJar,
    id: Option<&str>,
) -> Result<(CookieJar, bool), ApiError> {
    // The extractor told the request's span; the handler's (and the store task that inherits
    // it) says it too.
    tracing::Span::current().record("user_id", tracing::field::display(auth.user_id));
    let session_id = id
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or(ApiError::NotFound)?;
    let actor = client.actor(Some(auth.user_id), Some(session_id));
    // One store call: the revocation and its audit event.
    let revoked = state
        .store
        .revoke_own_session(auth.user_id, session_id, actor, state.clock.now())
        .await?;
    if !revoked {
        return Err(ApiError::NotFound);
    }
    state.metrics.revoked(Reason::RevokedByUser, 1);
    // Revoking the session this request came from is a logout: its cookies go too.
    let own = session_id == auth.session_id;
    let jar = match own {
        true => cookies::clear_session(jar, state.settings.cookie_secure),
        false => jar,
    };
    Ok((jar, own))
}
