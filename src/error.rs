//! The one error type of the API.
//!
//! Every failure a client can see is a variant here, with a fixed status, code and message, and is
//! rendered in the contract's shape `{"error": {"code", "message", "fields"?}}`. Expected outcomes
//! (bad credentials, a taken email) are their own variants. Unexpected failures become `Internal`
//! (or `Unavailable` when the database cannot be reached): the client gets generic text, the log
//! gets the whole error chain inside the request's span, which carries the request id.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Field name → what is wrong with it, for 422 responses.
pub type FieldErrors = BTreeMap<String, String>;

/// The body of every error response, whatever produced it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    code: ErrorCode,
    /// For people; fixed per code, never internals.
    message: &'static str,
    /// Only on 422 `validation_failed`: field name (or `body`) → what is wrong with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    fields: Option<BTreeMap<String, String>>,
}

/// The `code` of an error body. Responses serialize it and the OpenAPI document lists it: one
/// type for both, so they cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(description = "What went wrong, for programs: one code per cause, as in the contract.")]
pub enum ErrorCode {
    InvalidJson,
    TokenInvalid,
    InvalidCredentials,
    Unauthenticated,
    SessionRevoked,
    CsrfRejected,
    NotFound,
    MethodNotAllowed,
    EmailTaken,
    Conflict,
    MfaRequired,
    OidcFailed,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    RateLimited,
    Overloaded,
    Unavailable,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed JSON body")]
    InvalidJson,
    #[error("one-time token unknown, used or expired")]
    TokenInvalid,
    #[error("wrong email or password")]
    InvalidCredentials,
    #[error("missing or invalid access token")]
    Unauthenticated,
    #[error("refresh token revoked, reused or expired")]
    SessionRevoked,
    #[error("cross-site request rejected")]
    CsrfRejected,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("email taken")]
    EmailTaken,
    /// The embedding application's hook found a conflict with its own data (library mode).
    #[error("conflict")]
    Conflict,
    /// A change that an account with a second factor allows only to a session that signed in
    /// with it (`aal` 2).
    #[error("second factor required")]
    MfaRequired,
    /// A sign-in with an OpenID provider that did not verify (the reason is logged where it was
    /// found: see `routes::oidc`).
    #[error("sign-in with the provider failed")]
    OidcFailed,
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("validation failed: {0:?}")]
    Validation(FieldErrors),
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    #[error("password hashing queue full")]
    Overloaded,
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The request outlived the request timeout (see `middleware::timeout`).
    #[error("request timed out")]
    TimedOut,
    /// `/readyz` while the instance drains before it stops (SIGTERM).
    #[error("draining before shutdown")]
    Draining,
    /// Any request but `/healthz` while the standalone server waits for its database at start.
    #[error("starting")]
    Starting,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A 422 for a single field.
    pub fn field(name: &str, problem: &str) -> Self {
        ApiError::Validation(BTreeMap::from([(name.to_owned(), problem.to_owned())]))
    }

    /// The status, code and fixed message of this error, for the JSON body and the pages.
    pub fn parts(&self) -> (StatusCode, ErrorCode, &'static str) {
        use ApiError::*;
        match self {
            InvalidJson => (
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidJson,
                "The request body is not valid JSON.",
            ),
            TokenInvalid => (
                StatusCode::BAD_REQUEST,
                ErrorCode::TokenInvalid,
                "This link is invalid or has expired.",
            ),
            InvalidCredentials => (
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidCredentials,
                "Wrong email or password.",
            ),
            Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthenticated,
                "Authentication is required.",
            ),
            SessionRevoked => (
                StatusCode::UNAUTHORIZED,
                ErrorCode::SessionRevoked,
                "This session has ended. Please log in again.",
            ),
            CsrfRejected => (
                StatusCode::FORBIDDEN,
                ErrorCode::CsrfRejected,
                "Cross-site requests are not allowed.",
            ),
            NotFound => (StatusCode::NOT_FOUND, ErrorCode::NotFound, "Not found."),
            MfaRequired => (
                StatusCode::FORBIDDEN,
                ErrorCode::MfaRequired,
                "Sign in again with your second factor to do this.",
            ),
            OidcFailed => (
                StatusCode::BAD_REQUEST,
                ErrorCode::OidcFailed,
                "Signing in with this provider did not work. Please try again.",
            ),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::MethodNotAllowed,
                "Method not allowed.",
            ),
            EmailTaken => (
                StatusCode::CONFLICT,
                ErrorCode::EmailTaken,
                "An account with this email already exists.",
            ),
            Conflict => (
                StatusCode::CONFLICT,
                ErrorCode::Conflict,
                "This conflicts with existing data.",
            ),
            PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                "The request body is too large.",
            ),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "The request body must be application/json.",
            ),
            Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::ValidationFailed,
                "Some fields are invalid.",
            ),
            RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                "Too many requests. Please try again later.",
            ),
            Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Overloaded,
                "The service is busy. Please try again shortly.",
            ),
            // A timeout is the server failing to answer in time (a slow database, a backlog), so
            // it is a 503 like an unreachable database, not a 408: 408 means "you were too slow
            // to send your request", and browsers may replay a request answered 408 on their own,
            // which must not happen to a signup or a login.
            Unavailable(_) | TimedOut | Draining | Starting => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "The service is temporarily unavailable.",
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "Something went wrong on our side.",
            ),
        }
    }
}

/// Database errors: unreachable means 503, anything else is a bug or an outage worth a 500.
impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                ApiError::Unavailable(err)
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

/// A full hashing queue is the contract's 503 `overloaded`; a failed hash is an internal error.
impl From<crate::password::HashError> for ApiError {
    fn from(err: crate::password::HashError) -> Self {
        match err {
            crate::password::HashError::Overloaded => ApiError::Overloaded,
            crate::password::HashError::Failed(err) => ApiError::Internal(err),
        }
    }
}

impl ApiError {
    /// Writes what the client is not told to the log, inside the request's span (which carries
    /// the request id): the error chain of an internal error, the cause of an outage.
    pub fn log(&self) {
        match self {
            ApiError::Internal(err) => tracing::error!(error = ?err, "request failed"),
            ApiError::Unavailable(err) => tracing::error!(error = %err, "database unavailable"),
            ApiError::TimedOut => tracing::warn!("request timed out"),
            _ => {}
        }
    }

    /// Seconds for `Retry-After`, on the errors that have one.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            ApiError::Overloaded
            | ApiError::Unavailable(_)
            | ApiError::TimedOut
            | ApiError::Draining
            | ApiError::Starting => Some(1),
            _ => None,
        }
    }

    /// The field problems of a 422, if this is one.
    pub fn fields(&self) -> Option<&FieldErrors> {
        match self {
            ApiError::Validation(fields) => Some(fields),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        self.log();
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message,
                fields: self.fields().cloned(),
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
