//! `/admin/v1/users/{id}/sessions`: a user's live sessions, and revoking them all.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::user_id;
use crate::admin_keys::AdminKey;
use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ClientInfo;
use crate::routes::account::SessionRecord;
use crate::routes::openapi::responses::AdminUnauthenticated;
use crate::store;
use crate::store::sessions::Reason;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/admin/v1/users/{id}/sessions",
        get(list).delete(revoke_all),
    )
}

#[derive(Serialize, ToSchema)]
pub struct AdminSessionList {
    sessions: Vec<SessionRecord>,
}

/// The user's live sessions, newest first.
#[utoipa::path(
    get,
    path = "/admin/v1/users/{id}/sessions",
    operation_id = "admin_list_sessions",
    tag = "admin",
    security(("admin_key" = [])),
    params(("id" = String, Path, format = "uuid", description = "The user's id.")),
    responses(
        (status = 200, description = "The live sessions.", body = AdminSessionList),
        (status = 401, response = AdminUnauthenticated),
        (status = 404, description = "`not_found`: no such user.", body = ErrorBody),
    ),
)]
pub(super) async fn list(
    State(state): State<AppState>,
    _key: AdminKey,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<AdminSessionList>, ApiError> {
    let id = user_id(path)?;
    let db = state.store.reader();
    store::users::find_contact(db, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let now = state.clock.now();
    let rows = store::directory::sessions_of(db, id, Some(now)).await?;
    Ok(Json(AdminSessionList {
        sessions: rows.into_iter().map(SessionRecord::from).collect(),
    }))
}

/// Revokes every session of the user: their access tokens stop working on latchkey's own
/// endpoints at once, their refresh tokens are worthless.
#[utoipa::path(
    delete,
    path = "/admin/v1/users/{id}/sessions",
    operation_id = "admin_revoke_sessions",
    tag = "admin",
    security(("admin_key" = [])),
    params(("id" = String, Path, format = "uuid", description = "The user's id.")),
    responses(
        (status = 204, description = "Every session is revoked."),
        (status = 401, response = AdminUnauthenticated),
        (status = 404, description = "`not_found`: no such user.", body = ErrorBody),
    ),
)]
pub(super) async fn revoke_all(
    State(state): State<AppState>,
    key: AdminKey,
    client: ClientInfo,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = user_id(path)?;
    let now = state.clock.now();
    // One store call: the revocations, their audit event and `session.revoked` events.
    let revoked = state
        .store
        .revoke_sessions_by(id, key.actor(&client).about(id), now)
        .await?
        .ok_or(ApiError::NotFound)?;
    state.metrics.revoked(Reason::RevokedByAdmin, revoked);
    Ok(StatusCode::NO_CONTENT)
}
