//! `POST /admin/v1/users/import`: NDJSON in, a per-line report out (see `crate::import`).

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, header};
use axum::routing::post;

use crate::admin_keys::AdminKey;
use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ClientInfo;
use crate::import::{self, Report};
use crate::routes::openapi::responses::AdminUnauthenticated;

/// An import body may be this large (the API's other bodies: 16 KiB): some seven thousand lines
/// with bcrypt hashes, imported in about a second here (10 000 lines: 0.9 s on SQLite, 1.6 s on
/// PostgreSQL, debug build), well within the request timeout. Larger files go through `latchkey users import`
/// (no timeout) or several requests. Should a request time out all the same, the batches that
/// committed stay, and sending the same lines again is safe: those come back as `email_taken`.
pub const MAX_IMPORT_BYTES: usize = 1024 * 1024;

pub fn router() -> Router<AppState> {
    // The layer covers this router's one route only: the API's other bodies keep 16 KiB.
    Router::new()
        .route("/admin/v1/users/import", post(import_users))
        .layer(DefaultBodyLimit::max(MAX_IMPORT_BYTES))
}

/// Imports users with their password hashes.
#[utoipa::path(
    post,
    path = "/admin/v1/users/import",
    operation_id = "admin_import_users",
    tag = "admin",
    security(("admin_key" = [])),
    request_body(
        content = String,
        content_type = "application/x-ndjson",
        description = "One JSON object a line: `{email, password_hash?, email_verified?, \
            display_name?, app_metadata?}`; hashes in PHC or MCF form (argon2, bcrypt, scrypt, \
            pbkdf2-sha256). At most 1 MiB (use `latchkey users import` for larger files).",
    ),
    responses(
        (status = 200, description = "What was imported, and why each other line was not. \
            Lines are written 100 to a transaction; a batch that fails is reported line by line \
            with every line after it, and the batches before it stay.", body = Report),
        (status = 401, response = AdminUnauthenticated),
        (status = 400, description = "`invalid_json`: the body is not UTF-8.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: more than 1 MiB.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not `application/x-ndjson`.",
            body = ErrorBody),
    ),
)]
pub(super) async fn import_users(
    State(state): State<AppState>,
    key: AdminKey,
    client: ClientInfo,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Report>, ApiError> {
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-ndjson"));
    if !ndjson {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = axum::body::to_bytes(body, MAX_IMPORT_BYTES)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| ApiError::InvalidJson)?;
    let report = import::run(&state.store, text, &key.actor(&client), state.clock.now()).await;
    Ok(Json(report))
}
