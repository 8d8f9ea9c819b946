//! Session management: POST /auth/logout-all, GET /auth/sessions, DELETE /auth/sessions/{id}.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use axum_extra::extract::CookieJar;
use serde::Serialize;
use uuid::Uuid;

use crate::app::AppState;
use crate::clock::rfc3339;
use crate::cookies;
use crate::error::ApiError;
use crate::extract::{Authenticated, ClientInfo};
use crate::store::{self, audit};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/logout-all", post(logout_all))
        .route("/auth/sessions", get(list))
        .route("/auth/sessions/{id}", delete(revoke))
}

/// Revokes every session of the caller, this one included.
#[tracing::instrument(name = "logout_all", skip_all)]
async fn logout_all(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
    jar: CookieJar,
) -> Result<impl IntoResponse, ApiError> {
    let now = state.clock.now();
    // Transaction boundary: the revocations and their audit event.
    let mut tx = state.store.begin().await?;
    let revoked =
        store::sessions::revoke_all_sessions(&mut *tx, auth.user_id, "logout_all", now).await?;
    let actor = client.actor(Some(auth.user_id), Some(auth.session_id));
    audit::record(&mut *tx, audit::Kind::LogoutAll, &actor, now).await?;
    tx.commit().await?;
    state.metrics.revoked("logout_all", revoked);
    Ok((
        StatusCode::NO_CONTENT,
        cookies::clear_session(jar, state.settings.cookie_secure),
    ))
}

#[derive(Serialize)]
struct SessionView {
    id: String,
    created_at: String,
    last_used_at: String,
    user_agent: Option<String>,
    ip: Option<String>,
    current: bool,
}

#[derive(Serialize)]
struct SessionList {
    sessions: Vec<SessionView>,
}

/// The caller's live sessions, most recently used first.
#[tracing::instrument(name = "list_sessions", skip_all)]
async fn list(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<SessionList>, ApiError> {
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
        })
        .collect();
    Ok(Json(SessionList { sessions }))
}

/// Revokes one of the caller's sessions. Another user's session, or no session, is 404: the
/// caller learns nothing about ids that are not theirs.
#[tracing::instrument(name = "revoke_session", skip_all)]
async fn revoke(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
    jar: CookieJar,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let session_id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let now = state.clock.now();
    // Transaction boundary: the revocation and its audit event.
    let mut tx = state.store.begin().await?;
    if !store::sessions::revoke_own_session(
        &mut *tx,
        session_id,
        auth.user_id,
        "revoked_by_user",
        now,
    )
    .await?
    {
        return Err(ApiError::NotFound);
    }
    audit::record(
        &mut *tx,
        audit::Kind::SessionRevoked,
        &client.actor(Some(auth.user_id), Some(session_id)),
        now,
    )
    .await?;
    tx.commit().await?;
    state.metrics.revoked("revoked_by_user", 1);
    // Revoking the session this request came from is a logout: its cookies go too.
    let jar = if session_id == auth.session_id {
        cookies::clear_session(jar, state.settings.cookie_secure)
    } else {
        jar
    };
    Ok((StatusCode::NO_CONTENT, jar))
}
