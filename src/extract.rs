//! Request extractors. Input is parsed here, at the edge, into the shapes handlers work with, and
//! every rejection is an `ApiError` so it comes out in the contract's JSON shape.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum_extra::extract::CookieJar;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::app::AppState;
use crate::cookies;
use crate::error::{ApiError, FieldErrors};
use crate::store;
use crate::tokens;

/// Request bodies larger than this get 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A JSON body, strictly: `Content-Type: application/json`, at most 16 KiB, a JSON object, no
/// unknown fields (so no client can set a field it does not own), each field of the right type.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + 'static,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|err| {
                let too_large = std::error::Error::source(&err)
                    .is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
                if too_large {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::InvalidJson
                }
            })?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| ApiError::InvalidJson)?;
        let serde_json::Value::Object(object) = &value else {
            return Err(ApiError::field("body", "must be a JSON object"));
        };
        let known = serde_aux::serde_introspection::serde_introspect::<T>();
        let unknown: FieldErrors = object
            .keys()
            .filter(|key| !known.contains(&key.as_str()))
            .map(|key| (key.clone(), "is not a known field".to_owned()))
            .collect();
        if !unknown.is_empty() {
            return Err(ApiError::Validation(unknown));
        }
        serde_path_to_error::deserialize(value)
            .map(ApiJson)
            .map_err(|err| {
                let path = err.path().to_string();
                ApiError::field(&path, "has the wrong type")
            })
    }
}

fn is_json(content_type: Option<&header::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Where a request comes from, for sessions and audit events.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    pub fn actor(&self, user_id: Option<Uuid>, session_id: Option<Uuid>) -> store::audit::Actor {
        store::audit::Actor {
            user_id,
            session_id,
            ip: self.ip.clone(),
            user_agent: self.user_agent.clone(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(512).collect());
        Ok(ClientInfo { ip, user_agent })
    }
}

/// The caller's live session: a valid access token (bearer header or access cookie) whose session
/// has not been revoked. latchkey's own endpoints check liveness so that logout takes effect at once.
#[derive(Debug, Clone, Copy)]
pub struct Authenticated {
    pub user_id: Uuid,
    pub session_id: Uuid,
}

impl<S> FromRequestParts<S> for Authenticated
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AppState::from_ref(state);
        authenticate(&state, &parts.headers)
            .await?
            .ok_or(ApiError::Unauthenticated)
    }
}

/// The authenticated session of a request, if it has one.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Authenticated>, ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme is case-insensitive (RFC 9110 §11.1).
            let (scheme, token) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        });
    let token = match bearer {
        Some(token) => token,
        None => match cookies::access_token(
            &CookieJar::from_headers(headers),
            state.settings.cookie_secure,
        ) {
            Some(token) => token,
            None => return Ok(None),
        },
    };
    let now = state.clock.now();
    let Some(claims) = tokens::verify_access(&state.keys, &state.issuer, &token, now).await else {
        return Ok(None);
    };
    if !store::sessions::is_live(state.store.reader(), claims.sid, claims.sub, now).await? {
        return Ok(None);
    }
    tracing::Span::current().record("user_id", tracing::field::display(claims.sub));
    Ok(Some(Authenticated {
        user_id: claims.sub,
        session_id: claims.sid,
    }))
}
