//! `DELETE /admin/v1/users/{id}/mfa`: support removes a user's second factor (a lost phone and
//! no recovery code left), audited with the key.

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::delete;

use super::user_id;
use crate::admin_keys::AdminKey;
use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ClientInfo;
use crate::routes::openapi::responses::AdminUnauthenticated;

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/v1/users/{id}/mfa", delete(remove))
}

/// Removes the user's second factors: the TOTP secret, its recovery codes and the login
/// challenges in progress, and the passkeys; the next login needs the password alone. The
/// sessions stay.
#[utoipa::path(
    delete,
    path = "/admin/v1/users/{id}/mfa",
    operation_id = "admin_remove_mfa",
    tag = "admin",
    security(("admin_key" = [])),
    params(("id" = String, Path, format = "uuid", description = "The user's id.")),
    responses(
        (status = 204, description = "The factors are removed."),
        (status = 401, response = AdminUnauthenticated),
        (status = 404, description = "`not_found`: no such user, or no second factor.",
            body = ErrorBody),
    ),
)]
pub(super) async fn remove(
    State(state): State<AppState>,
    key: AdminKey,
    client: ClientInfo,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = user_id(path)?;
    let now = state.clock.now();
    // One store call: the factors, codes and challenges, with the audit event naming the key.
    match state
        .store
        .remove_all_factors(id, key.actor(&client).about(id), now)
        .await?
    {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::NotFound),
    }
}
