//! The admin API under `/admin/v1`, one module per resource: `users` (list, create, get, patch,
//! delete, password reset), `sessions` (a user's sessions), `mfa` (removing a second factor),
//! `audit` (the audit query) and `import` (NDJSON import).
//!
//! Every route takes `AdminKey`, the bearer key extractor: no key, a wrong or a revoked key is
//! 401 `unauthenticated`, and a session cookie is never looked at. Every write names the key in
//! its audit events (`AdminKey::actor`). The CSRF check does not apply here (see
//! `middleware::csrf`): nothing ambient authorizes these routes.
//!
//! Lists are keyset pages with an opaque cursor (see `store::directory`): stable under inserts,
//! no row twice.

// `pub(super)`: the OpenAPI document (`routes::openapi`) names their operations.
pub(super) mod audit;
pub(super) mod import;
pub(super) mod mfa;
pub(super) mod sessions;
pub(crate) mod users;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(users::router())
        .merge(sessions::router())
        .merge(audit::router())
        .merge(import::router())
        .merge(mfa::router())
}

/// Page sizes: 50 unless asked, at most 200.
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

/// A query string, strictly: unknown parameters and bad values are 422 `validation_failed`
/// with the parameter's name (axum's own `Query` answers plain text).
fn query<T: DeserializeOwned + Default>(raw: RawQuery) -> Result<T, ApiError> {
    let Some(raw) = raw.0 else {
        return Ok(T::default());
    };
    serde_urlencoded::from_str(&raw).map_err(|err| {
        let message = err.to_string();
        let field = message
            .split('`')
            .nth(1)
            .filter(|f| !f.is_empty())
            .unwrap_or("query");
        ApiError::field(field, "is not valid here")
    })
}

/// `limit`: 1 to `MAX_LIMIT`; absent or empty (`?limit=`): the default.
fn limit(raw: Option<&str>) -> Result<i64, ApiError> {
    match raw.filter(|r| !r.is_empty()) {
        None => Ok(DEFAULT_LIMIT),
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::field("limit", "must be an integer from 1 to 200")),
    }
}

/// An opaque cursor: the base64url of the page's last id.
fn cursor_of(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

fn parse_cursor(raw: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    URL_SAFE_NO_PAD
        .decode(raw)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|id| Uuid::try_parse(&id).ok())
        .map(Some)
        .ok_or_else(|| ApiError::field("cursor", "is not a cursor of this list"))
}

/// The user id of a path: anything that is no UUID names no user (404).
fn user_id(path: Result<Path<String>, PathRejection>) -> Result<Uuid, ApiError> {
    path.ok()
        .and_then(|Path(id)| Uuid::try_parse(&id).ok())
        .ok_or(ApiError::NotFound)
}
