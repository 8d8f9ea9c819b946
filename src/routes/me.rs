//! GET /auth/me and PATCH /auth/me/profile.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use axum::{Json, Router};
use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;

use super::body::{AccountBody, ProfileBody};
use super::openapi::responses::Unauthenticated;
use crate::app::AppState;
use crate::domain::DisplayName;
use crate::error::{ApiError, FieldErrors};
use crate::extract::{ApiJson, Authenticated, ClientInfo, TokenSubject};
use crate::store;
use crate::store::flows::SessionRef;
use crate::store::flows::profile::ProfileChange;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/me", get(me).delete(super::account::delete_me))
        .route("/auth/me/profile", patch(update_profile))
}

/// The hottest authenticated read, so one query instead of the `Authenticated` extractor's
/// liveness check followed by the read: the account is returned only while the token's session
/// is live (revoked or expired: 401, as everywhere else).
#[utoipa::path(
    get,
    path = "/auth/me",
    tag = "account",
    summary = "The caller's user and profile.",
    description = "Answers only while the token's session is live: after a logout, logout-all or \
        password reset, the same token gets 401.",
    security(("bearer" = []), ("access_cookie" = [])),
    responses(
        (status = 200, description = "The caller's user and profile.", body = AccountBody),
        (status = 401, response = Unauthenticated),
    ),
)]
#[tracing::instrument(name = "me", skip_all, fields(user_id = tracing::field::Empty))]
pub(super) async fn me(
    State(state): State<AppState>,
    TokenSubject(token): TokenSubject,
) -> Result<Response, ApiError> {
    let now = state.clock.now();
    let (user_id, session_id) = (token.user_id, token.session_id);
    let liveness = state.store.liveness();
    let body = match liveness.account(user_id, session_id, now) {
        Some(body) => body,
        None => {
            let ticket = liveness.ticket();
            let reader = state.store.reader();
            let found = store::users::find_live_account(reader, user_id, session_id, now)
                .await?
                .ok_or(ApiError::Unauthenticated)?;
            let until = found.live_until();
            let body = serde_json::to_vec(&AccountBody::from(found.account))
                .map_err(anyhow::Error::from)?;
            let body = Bytes::from(body);
            if let Some(ticket) = ticket {
                liveness.put_account(ticket, (user_id, session_id), until, now, body.clone());
            }
            body
        }
    };
    crate::telemetry::record_user(user_id);
    // The body as `Json` would make it, kept serialized.
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileUpdate {
    /// Absent: unchanged; `null` or blank: removed; a string: set (trimmed, at most 100
    /// characters, no control characters).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false, max_length = 100)]
    pub(crate) display_name: Option<Option<String>>,
    /// Absent or `null`: unchanged; an object: replaces `metadata` whole (valid against the
    /// operator's `profile_schema`; without one, at most 4 KiB). Problems are 422 with `fields`
    /// keyed `metadata` or `metadata/<JSON pointer>`.
    #[schema(value_type = Option<Object>)]
    pub(crate) metadata: Option<serde_json::Value>,
}

/// Tells a field given as `null` (`Some(None)`) from a missing one (`None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(serde::Serialize, ToSchema)]
pub struct ProfileResponse {
    profile: ProfileBody,
}

/// Changes the caller's profile: the fields given, nothing else.
#[utoipa::path(
    patch,
    path = "/auth/me/profile",
    tag = "account",
    security(("bearer" = []), ("access_cookie" = [])),
    request_body = ProfileUpdate,
    responses(
        (status = 200, description = "The profile as it is now.", body = ProfileResponse),
        (status = 401, response = Unauthenticated),
    ),
)]
pub(super) async fn update_profile(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
    ApiJson(req): ApiJson<ProfileUpdate>,
) -> Result<Json<ProfileResponse>, ApiError> {
    let profile = update_profile_flow(&state, auth, &client, req).await?;
    Ok(Json(ProfileResponse { profile }))
}

/// The profile update use case, shared by the JSON endpoint and the account page.
#[tracing::instrument(name = "update_profile", skip_all, fields(user_id = tracing::field::Empty))]
pub(crate) async fn update_profile_flow(
    state: &AppState,
    auth: Authenticated,
    client: &ClientInfo,
    req: ProfileUpdate,
) -> Result<ProfileBody, ApiError> {
    // The extractor told the request's span; the handler's (and the store task that inherits
    // it) says it too.
    tracing::Span::current().record("user_id", tracing::field::display(auth.user_id));
    let mut errors = FieldErrors::new();
    let display_name = match req.display_name {
        Some(raw) => match raw.as_deref().map(DisplayName::parse) {
            Some(Ok(name)) => Some(name),
            Some(Err(problem)) => {
                errors.insert("display_name".into(), problem.into());
                None
            }
            None => Some(None),
        },
        None => None,
    };
    let metadata = match req.metadata.as_ref().map(|m| state.metadata.parse(m)) {
        Some(Ok(metadata)) => Some(metadata),
        Some(Err(problems)) => {
            errors.extend(problems);
            None
        }
        None => None,
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let change = ProfileChange {
        display_name,
        metadata,
    };
    if change.display_name.is_some() || change.metadata.is_some() {
        let actor = client.actor(Some(auth.user_id), Some(auth.session_id));
        let session = SessionRef {
            user_id: auth.user_id,
            session_id: auth.session_id,
        };
        // One store call: the change and its audit event, while the session is live.
        let now = state.clock.now();
        if !state
            .store
            .update_profile(session, change, actor, now)
            .await?
        {
            return Err(ApiError::Unauthenticated);
        }
    }
    let account = store::users::find_account(state.store.reader(), auth.user_id)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    Ok(AccountBody::from(account).profile)
}
