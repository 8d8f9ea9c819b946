//! POST /auth/email/verify and POST /auth/email/verify/resend.
//!
//! - verify: uses the link's token (one conditional UPDATE) and marks the address it was sent to
//!   verified, with the audit event, in one transaction.
//! - resend (authenticated): a new verification link and its email, in one transaction, unless
//!   the address is verified already (nothing to do) or had an email moments ago (429).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use secrecy::SecretString;
use serde::Deserialize;
use utoipa::ToSchema;

use super::body::MessageBody;
use super::links::{self, Issued};
use super::openapi::responses::{RateLimited, Unauthenticated};
use super::password::stored_email;
use crate::app::AppState;
use crate::error::{ApiError, ErrorBody, FieldErrors};
use crate::extract::{ApiJson, Authenticated, ClientInfo};
use crate::failpoint::failpoint;
use crate::limits::Limit;
use crate::store::{self, audit};
use crate::tokens::{self, Purpose};

pub const RESENT_MESSAGE: &str = "A new verification link is on its way to your email address.";
pub const ALREADY_VERIFIED_MESSAGE: &str = "Your email address is already verified.";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/email/verify", post(verify))
        .route("/auth/email/verify/resend", post(resend))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The `token` of the emailed link.
    #[schema(value_type = String, required = true, min_length = 1)]
    token: Option<SecretString>,
}

/// Marks the address a verification link was sent to as verified.
#[utoipa::path(
    post,
    path = "/auth/email/verify",
    operation_id = "email_verify",
    tag = "email",
    request_body = VerifyRequest,
    responses(
        (status = 204, description = "The address is verified."),
        (status = 400, description = "`token_invalid`: the token is unknown, used or expired, or \
            the account's address changed since; or `invalid_json`: the body is not JSON.",
            body = ErrorBody),
        (status = 429, response = RateLimited),
    ),
)]
#[tracing::instrument(name = "email_verify", skip_all)]
pub(super) async fn verify(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(req): ApiJson<VerifyRequest>,
) -> Result<Response, ApiError> {
    use secrecy::ExposeSecret as _;
    let Some(token) = req.token.filter(|t| !t.expose_secret().is_empty()) else {
        let errors = FieldErrors::from([("token".to_owned(), "is required".to_owned())]);
        return Err(ApiError::Validation(errors));
    };
    state
        .limits
        .check(Limit::Verify, &client.rate_key())
        .await?;
    let hash = tokens::hash_opaque(Purpose::EmailVerification, &token);
    let now = state.clock.now();

    // Transaction boundary: using the token, marking the address verified, retiring the user's
    // other verification links and the audit event commit together.
    let mut tx = state.store.begin().await?;
    let used = store::one_time_tokens::use_token(&mut *tx, &hash, Purpose::EmailVerification, now)
        .await?
        .ok_or(ApiError::TokenInvalid)?;
    let user_id = store::parse_id(&used.user_id)?;
    tracing::Span::current().record("user_id", tracing::field::display(user_id));
    // The link verifies the address it was sent to, and only while that is the user's address.
    if !store::users::mark_email_verified(&mut *tx, user_id, &used.email, now).await? {
        return Err(ApiError::TokenInvalid);
    }
    store::one_time_tokens::revoke_all(&mut *tx, user_id, Purpose::EmailVerification, now).await?;
    audit::record(
        &mut *tx,
        audit::Kind::EmailVerified,
        &client.actor(Some(user_id), None),
        now,
    )
    .await?;
    failpoint!("email_verify.before_commit");
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Sends a new verification link to the caller's address.
#[utoipa::path(
    post,
    path = "/auth/email/verify/resend",
    operation_id = "email_verify_resend",
    tag = "email",
    security(("bearer" = []), ("access_cookie" = [])),
    responses(
        (status = 202, description = "A new link is on its way, or the address is verified \
            already (the message says which).", body = MessageBody),
        (status = 401, response = Unauthenticated),
        (status = 429, response = RateLimited),
    ),
)]
#[tracing::instrument(name = "email_verify_resend", skip_all)]
pub(super) async fn resend(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
) -> Result<Response, ApiError> {
    state
        .limits
        .check(Limit::VerifyResend, &auth.user_id.to_string())
        .await?;
    let contact = store::users::find_contact(state.store.reader(), auth.user_id)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    if contact.email_verified_at.is_some() {
        return Ok(accepted(ALREADY_VERIFIED_MESSAGE));
    }
    let to = stored_email(&contact.email)?;
    let now = state.clock.now();

    // Transaction boundary: the throttle slot, the new link, its email and the audit event.
    let mut tx = state.store.begin().await?;
    match links::send_link(
        &mut tx,
        &state,
        auth.user_id,
        &to,
        Purpose::EmailVerification,
        now,
    )
    .await?
    {
        Issued::Sent => {
            let actor = client.actor(Some(auth.user_id), Some(auth.session_id));
            audit::record(
                &mut *tx,
                audit::Kind::EmailVerificationRequested,
                &actor,
                now,
            )
            .await?;
            tx.commit().await?;
            state.mailer.wake();
            Ok(accepted(RESENT_MESSAGE))
        }
        // The owner asks, so saying when to ask again tells nobody anything new.
        Issued::Throttled { retry_after_secs } => Err(ApiError::RateLimited { retry_after_secs }),
    }
}

fn accepted(message: &'static str) -> Response {
    (StatusCode::ACCEPTED, Json(MessageBody { message })).into_response()
}
