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
use super::openapi::responses::{RateLimited, Unauthenticated};
use super::password::stored_email;
use crate::app::AppState;
use crate::clock::millis;
use crate::error::{ApiError, ErrorBody, FieldErrors};
use crate::extract::{ApiJson, Authenticated, ClientInfo};
use crate::limits::Limit;
use crate::mail::Kind;
use crate::mail::links::{self, LinkKind};
use crate::store;
use crate::store::flows::SessionRef;
use crate::store::flows::email::{NewResend, Resend, Verify};
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
    pub(crate) token: Option<SecretString>,
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
pub(super) async fn verify(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(req): ApiJson<VerifyRequest>,
) -> Result<Response, ApiError> {
    verify_flow(&state, &client, req).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The verification use case, shared by the JSON endpoint and the verification page.
#[tracing::instrument(name = "email_verify", skip_all, fields(user_id = tracing::field::Empty))]
pub(crate) async fn verify_flow(
    state: &AppState,
    client: &ClientInfo,
    req: VerifyRequest,
) -> Result<(), ApiError> {
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
    // One store call: using the token, marking the address verified, retiring the user's other
    // verification links and the audit event.
    let actor = client.actor(None, None);
    match state
        .store
        .verify_email(hash, actor, state.clock.now())
        .await?
    {
        Verify::Verified { user_id } => {
            crate::telemetry::record_user(user_id);
            Ok(())
        }
        Verify::TokenInvalid => Err(ApiError::TokenInvalid),
    }
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
pub(super) async fn resend(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
) -> Result<Response, ApiError> {
    let message = match resend_flow(&state, auth, &client).await? {
        Resent::Sent => RESENT_MESSAGE,
        Resent::AlreadyVerified => ALREADY_VERIFIED_MESSAGE,
    };
    Ok((StatusCode::ACCEPTED, Json(MessageBody { message })).into_response())
}

/// How a resend ended.
pub(crate) enum Resent {
    Sent,
    AlreadyVerified,
}

/// The resend use case, shared by the JSON endpoint and the account page.
#[tracing::instrument(name = "email_verify_resend", skip_all, fields(user_id = tracing::field::Empty))]
pub(crate) async fn resend_flow(
    state: &AppState,
    auth: Authenticated,
    client: &ClientInfo,
) -> Result<Resent, ApiError> {
    // The extractor told the request's span; the handler's (and the store task that inherits
    // it) says it too.
    tracing::Span::current().record("user_id", tracing::field::display(auth.user_id));
    state
        .limits
        .check(Limit::VerifyResend, &auth.user_id.to_string())
        .await?;
    let contact = store::users::find_contact(state.store.reader(), auth.user_id)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    if contact.email_verified_at.is_some() {
        return Ok(Resent::AlreadyVerified);
    }
    // A disabled account gets no email; its sessions were revoked with the disable, so this is
    // only reached by a request racing it. The same answer as a sent one.
    if contact.disabled_at.is_some() {
        return Ok(Resent::Sent);
    }
    let to = stored_email(&contact.email)?;
    let now = state.clock.now();
    let new = NewResend {
        session: SessionRef {
            user_id: auth.user_id,
            session_id: auth.session_id,
        },
        link: links::prepare(state, LinkKind::EmailVerification, &to, now)?,
        throttle: links::throttle(state, Kind::EmailVerification, &to),
        actor: client.actor(Some(auth.user_id), Some(auth.session_id)),
        now,
    };
    // One store call: the throttle slot, the new link, its email and the audit event.
    match state.store.resend_verification(new).await? {
        Resend::Sent => {
            state.mailer.wake();
            Ok(Resent::Sent)
        }
        // The owner asks, so saying when to ask again tells nobody anything new.
        Resend::Throttled { last_sent_at } => {
            let window = millis(state.settings.mail_throttle);
            let wait_ms = u64::try_from(last_sent_at + window - now).unwrap_or(0);
            Err(ApiError::RateLimited {
                retry_after_secs: wait_ms.div_ceil(1000).max(1),
            })
        }
        Resend::SessionGone => Err(ApiError::Unauthenticated),
    }
}
