//! POST /auth/email/change and POST /auth/email/change/confirm: an email change with double
//! opt-in (see `store::flows::email_change`).
//!
//! - change (authenticated, password re-entered): a link to the new address, a notice to the old
//!   one. 409 when the address has an account already (the owner of a session may learn that, as
//!   at signup); the swap checks again.
//! - confirm: uses the link's token, swaps the address in and marks it verified, in one
//!   transaction; 409 when the address was taken meanwhile. Sessions stay.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::account::check_password;
use super::body::{AccountBody, MessageBody, UserBody};
use super::openapi::responses::{MfaRequired, Overloaded, RateLimited};
use crate::app::AppState;
use crate::clock::millis;
use crate::domain::{Email, required};
use crate::error::{ApiError, ErrorBody, FieldErrors};
use crate::extract::{ApiJson, Authenticated, ClientInfo};
use crate::limits::Limit;
use crate::mail::Kind;
use crate::mail::links::{self, LinkKind};
use crate::store;
use crate::store::flows::email_change::{EmailChangeConfirm, EmailChangeRequest, NewEmailChange};
use crate::tokens::{self, Purpose};

pub const SENT_MESSAGE: &str = "A confirmation link is on its way to the new address.";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/email/change", post(change))
        .route("/auth/email/change/confirm", post(confirm))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailChangeBody {
    /// The new address (the rules of signup).
    #[schema(value_type = String, required = true, format = Email, max_length = 254)]
    pub(crate) new_email: Option<String>,
    /// The account's password, re-entered.
    #[schema(value_type = String, required = true, format = Password)]
    pub(crate) password: Option<SecretString>,
}

/// Asks for an email change: a confirmation link goes to the new address, a notice to the old.
#[utoipa::path(
    post,
    path = "/auth/email/change",
    operation_id = "email_change",
    tag = "email",
    security(("bearer" = []), ("access_cookie" = [])),
    request_body = EmailChangeBody,
    responses(
        (status = 202, description = "The link is on its way to the new address; nothing \
            changes until it is opened.", body = MessageBody),
        (status = 401, description = "`invalid_credentials`: wrong password; or \
            `unauthenticated`.", body = ErrorBody),
        (status = 403, response = MfaRequired),
        (status = 409, description = "`email_taken`: an account has this address (with \
            `conceal_existing_accounts`: 202, and nothing is sent).", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = Overloaded),
    ),
)]
pub(super) async fn change(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
    ApiJson(req): ApiJson<EmailChangeBody>,
) -> Result<Response, ApiError> {
    change_flow(&state, auth, &client, req).await?;
    let body = MessageBody {
        message: SENT_MESSAGE,
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// The email change request, shared by the JSON endpoint and the account page.
#[tracing::instrument(name = "email_change", skip_all, fields(user_id = tracing::field::Empty))]
pub(crate) async fn change_flow(
    state: &AppState,
    auth: Authenticated,
    client: &ClientInfo,
    req: EmailChangeBody,
) -> Result<(), ApiError> {
    tracing::Span::current().record("user_id", tracing::field::display(auth.user_id));
    let mut errors = FieldErrors::new();
    let new_email = required(
        &mut errors,
        "new_email",
        req.new_email.as_deref(),
        Email::parse,
    );
    if req.password.is_none() {
        errors.insert("password".into(), "is required".into());
    }
    let Some(new_email) = new_email.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let checked = check_password(state, auth, client, req.password).await?;
    if new_email.normalized() == checked.email.normalized() {
        return Err(ApiError::field("new_email", "is the current address"));
    }
    if store::users::email_taken(state.store.reader(), &new_email).await? {
        // With `conceal_existing_accounts` the answer is the one of a free address (nothing is
        // sent): a session must not be a way to probe addresses that signup hides.
        if state.settings.conceal_existing_accounts {
            return Ok(());
        }
        return Err(ApiError::EmailTaken);
    }
    let now = state.clock.now();
    let new = NewEmailChange {
        session: checked.session,
        verified_hash: checked.verified_hash,
        new_email: new_email.as_str().to_owned(),
        link: links::prepare(state, LinkKind::EmailChange, &new_email, now)?,
        notice: links::email_change_notice(state, &checked.email, &new_email)?,
        throttle: links::throttle(state, Kind::EmailChange, &new_email),
        refund: checked.refund,
        actor: checked.actor,
        now,
    };
    // One store call: the link and its email, the notice and the audit event, while the
    // password is the one just checked and the session is live.
    match state.store.request_email_change(new).await? {
        EmailChangeRequest::Sent => {
            state.mailer.wake();
            Ok(())
        }
        EmailChangeRequest::Throttled { last_sent_at } => {
            let window = millis(state.settings.mail_throttle);
            let wait_ms = u64::try_from(last_sent_at + window - now).unwrap_or(0);
            Err(ApiError::RateLimited {
                retry_after_secs: wait_ms.div_ceil(1000).max(1),
            })
        }
        EmailChangeRequest::Stale => Err(ApiError::InvalidCredentials),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmBody {
    /// The `token` of the emailed link.
    #[schema(value_type = String, required = true, min_length = 1)]
    pub(crate) token: Option<SecretString>,
}

/// `{user}`: the account after the change.
#[derive(Serialize, ToSchema)]
pub struct UserResponse {
    pub user: UserBody,
}

/// Swaps in the new address of an email change's link; the address is then verified.
#[utoipa::path(
    post,
    path = "/auth/email/change/confirm",
    operation_id = "email_change_confirm",
    tag = "email",
    request_body = ConfirmBody,
    responses(
        (status = 200, description = "The address is changed and verified; sessions stay.",
            body = UserResponse),
        (status = 400, description = "`token_invalid`: the token is unknown, used or expired; or \
            `invalid_json`: the body is not JSON.", body = ErrorBody),
        (status = 409, description = "`email_taken`: the address got an account meanwhile; \
            nothing changed.", body = ErrorBody),
        (status = 429, response = RateLimited),
    ),
)]
pub(super) async fn confirm(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(req): ApiJson<ConfirmBody>,
) -> Result<Json<UserResponse>, ApiError> {
    let user = confirm_flow(&state, &client, req).await?;
    Ok(Json(UserResponse { user }))
}

/// The confirmation use case, shared by the JSON endpoint and the confirmation page.
#[tracing::instrument(name = "email_change_confirm", skip_all, fields(user_id = tracing::field::Empty))]
pub(crate) async fn confirm_flow(
    state: &AppState,
    client: &ClientInfo,
    req: ConfirmBody,
) -> Result<UserBody, ApiError> {
    use secrecy::ExposeSecret as _;
    let Some(token) = req.token.filter(|t| !t.expose_secret().is_empty()) else {
        return Err(ApiError::field("token", "is required"));
    };
    state
        .limits
        .check(Limit::Verify, &client.rate_key())
        .await?;
    let hash = tokens::hash_opaque(Purpose::EmailChange, &token);
    let actor = client.actor(None, None);
    // One store call: the token, the swap, the retired links, the audit event and
    // `user.email_changed`.
    match state
        .store
        .confirm_email_change(hash, actor, state.clock.now())
        .await?
    {
        EmailChangeConfirm::Changed(account) => {
            crate::telemetry::record_user(id_of(&account)?);
            Ok(AccountBody::from(*account).user)
        }
        EmailChangeConfirm::TokenInvalid => Err(ApiError::TokenInvalid),
        EmailChangeConfirm::EmailTaken => Err(ApiError::EmailTaken),
    }
}

fn id_of(account: &store::users::Account) -> Result<uuid::Uuid, ApiError> {
    Ok(store::parse_id(&account.id)?)
}
