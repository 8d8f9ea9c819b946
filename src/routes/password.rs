//! POST /auth/password/forgot, /auth/password/reset and /auth/password/change.
//!
//! - forgot: 202 with the same body, after the same work, whether or not the account exists: a
//!   request row that the mail worker turns into a reset link and its email for an account
//!   (see `store::flows::password`). Earlier unexpired links keep working until one is used.
//! - reset: uses the link's token (one conditional UPDATE), sets the new password, revokes every
//!   session and writes the audit event and the password-changed notice, in one transaction.
//! - change: checks the current password, sets the new one, revokes every other session, in one
//!   transaction; a wrong current password is recorded in a transaction of its own.
//!
//! New passwords are hashed before any transaction opens.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use axum_extra::extract::CookieJar;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use utoipa::ToSchema;

use super::body::MessageBody;
use super::openapi::responses::{Overloaded, RateLimited};
use crate::app::AppState;
use crate::cookies;
use crate::domain::password::{MAX_CHARS, normalize_secret};
use crate::domain::{Email, NewPassword, required};
use crate::error::{ApiError, ErrorBody, FieldErrors};
use crate::extract::{ApiJson, Authenticated, ClientInfo};
use crate::failpoint::failpoint;
use crate::limits::Limit;
use crate::mail::Kind;
use crate::mail::links;
use crate::store::flows::SessionRef;
use crate::store::flows::password::{Change, NewChange, NewReset, NewResetRequest, Reset};
use crate::store::sessions::Reason;
use crate::store::{self, audit};
use crate::tokens::{self, Purpose};

/// The body of every answer to forgot, whether the account exists or not.
pub const FORGOT_MESSAGE: &str =
    "If an account exists for this email address, a link to reset its password is on its way.";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/password/forgot", post(forgot))
        .route("/auth/password/reset", post(reset))
        .route("/auth/password/change", post(change))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgotRequest {
    #[schema(value_type = String, required = true, format = Email, max_length = 254)]
    pub(crate) email: Option<String>,
}

/// Sends a password reset link to the address, if it has an account.
#[utoipa::path(
    post,
    path = "/auth/password/forgot",
    operation_id = "password_forgot",
    tag = "password",
    request_body = ForgotRequest,
    responses(
        (status = 202, description = "Always the same answer, whether or not the address has an \
            account (and whether or not an email went out: at most one a minute per address).",
            body = MessageBody),
        (status = 429, response = RateLimited),
    ),
)]
pub(super) async fn forgot(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(req): ApiJson<ForgotRequest>,
) -> Result<Response, ApiError> {
    forgot_flow(&state, &client, req).await?;
    // The same answer for every address: nothing tells whether an account exists.
    Ok((
        StatusCode::ACCEPTED,
        Json(MessageBody {
            message: FORGOT_MESSAGE,
        }),
    )
        .into_response())
}

/// The forgot-password use case, shared by the JSON endpoint and the page: the same work and
/// the same outcome for every address.
#[tracing::instrument(name = "password_forgot", skip_all, fields(user_id = tracing::field::Empty))]
pub(crate) async fn forgot_flow(
    state: &AppState,
    client: &ClientInfo,
    req: ForgotRequest,
) -> Result<(), ApiError> {
    let email = mailing_address(state, client, req.email.as_deref()).await?;
    // One store call, the same for every address: the throttle slot and a request row. The
    // mail worker looks the address up and issues the link, outside this request, so neither the
    // answer nor its timing tells whether the address has an account.
    let new = NewResetRequest {
        throttle: links::throttle(state, Kind::PasswordReset, &email),
        email: email.as_str().to_owned(),
        actor: client.actor(None, None),
        now: state.clock.now(),
    };
    state.store.request_password_reset(new).await?;
    state.mailer.wake();
    Ok(())
}

/// The address of a request that emails it a link (forgot-password, passwordless start), parsed
/// and counted: per client IP (one client mailing many addresses) and per address as typed,
/// whether or not it has an account, so that a 429 tells nothing about it either.
pub(crate) async fn mailing_address(
    state: &AppState,
    client: &ClientInfo,
    raw: Option<&str>,
) -> Result<Email, ApiError> {
    let mut errors = FieldErrors::new();
    let Some(email) = required(&mut errors, "email", raw, Email::parse) else {
        return Err(ApiError::Validation(errors));
    };
    state
        .limits
        .check(Limit::ForgotIp, &client.rate_key())
        .await?;
    state
        .limits
        .check(Limit::Forgot, email.normalized())
        .await?;
    Ok(email)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// The `token` of the emailed link.
    #[schema(value_type = String, required = true, min_length = 1)]
    pub(crate) token: Option<SecretString>,
    /// The new password: 8 to 128 characters (after Unicode NFKC), not a common or easily
    /// guessed one.
    #[schema(value_type = String, required = true, format = Password, min_length = 8, max_length = 128)]
    pub(crate) password: Option<SecretString>,
}

/// Sets a new password with the token of a reset link.
#[utoipa::path(
    post,
    path = "/auth/password/reset",
    operation_id = "password_reset",
    tag = "password",
    request_body = ResetRequest,
    responses(
        (status = 204, description = "The password is set; every session of the user is revoked \
            and both session cookies are cleared.",
            headers(("Set-Cookie" = String, description = "Both session cookies, cleared \
                (`Max-Age=0`)."))),
        (status = 400, description = "`token_invalid`: the token is unknown, used or expired; \
            or `invalid_json`: the body is not JSON.", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = Overloaded),
    ),
)]
pub(super) async fn reset(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
    ApiJson(req): ApiJson<ResetRequest>,
) -> Result<Response, ApiError> {
    let jar = reset_flow(&state, &client, jar, req).await?;
    Ok((StatusCode::NO_CONTENT, jar).into_response())
}

/// The reset use case, shared by the JSON endpoint and the reset page: the token spent, the new
/// password set, every session revoked and this browser's session cookies cleared.
#[tracing::instrument(name = "password_reset", skip_all, fields(user_id = tracing::field::Empty))]
pub(crate) async fn reset_flow(
    state: &AppState,
    client: &ClientInfo,
    jar: CookieJar,
    req: ResetRequest,
) -> Result<CookieJar, ApiError> {
    let mut errors = FieldErrors::new();
    let token = present(&mut errors, "token", req.token);
    let password = present(&mut errors, "password", req.password);
    let (Some(token), Some(password)) = (token, password) else {
        return Err(ApiError::Validation(errors));
    };
    // Before the token is looked up: guessing tokens is what this limit slows.
    state.limits.check(Limit::Reset, &client.rate_key()).await?;
    let hash = tokens::hash_opaque(Purpose::PasswordReset, &token);
    // A first look, outside any transaction, to learn whose password this is: new passwords are
    // checked against the owner's email, and hashed before the transaction. The token is only
    // used (or found to be used already) inside the transaction below.
    let found = store::one_time_tokens::find_live(
        state.store.reader(),
        &hash,
        Purpose::PasswordReset,
        state.clock.now(),
    )
    .await?
    .ok_or(ApiError::TokenInvalid)?;
    let owner = stored_email(&found.user_email)?;
    let password = NewPassword::parse(password.expose_secret(), &owner)
        .map_err(|problem| ApiError::field("password", problem))?;
    let password_hash = state.hasher.hash(password.into_secret()).await?;
    let user_id = store::parse_id(&found.user_id)?;
    crate::telemetry::record_user(user_id);
    let now = state.clock.now();
    let new = NewReset {
        token_hash: hash,
        user_id,
        password_hash,
        notice: links::password_changed(state, &owner)?,
        strikes_key: state.limits.strikes_key(&owner),
        actor: client.actor(Some(user_id), None),
        now,
    };

    // One store call: using the token, the new password, the revocation of every session and of
    // the other reset links, the notice, the account's failed-login strikes and the audit event.
    // Of two requests racing with one token, only one gets past its use.
    let revoked = match state.store.reset_password(new).await? {
        Reset::Done { revoked } => revoked,
        Reset::TokenInvalid => return Err(ApiError::TokenInvalid),
    };
    state.metrics.revoked(Reason::PasswordReset, revoked);
    state.mailer.wake();

    // Every session is over, so whatever session cookies this browser holds are dead.
    Ok(cookies::clear_session(jar, state.settings.cookie_secure))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRequest {
    #[schema(value_type = String, required = true, format = Password, min_length = 1)]
    pub(crate) current_password: Option<SecretString>,
    /// 8 to 128 characters (after Unicode NFKC), not a common or easily guessed password.
    #[schema(value_type = String, required = true, format = Password, min_length = 8, max_length = 128)]
    pub(crate) new_password: Option<SecretString>,
}

/// Changes the caller's password, given the current one.
#[utoipa::path(
    post,
    path = "/auth/password/change",
    operation_id = "password_change",
    tag = "password",
    security(("bearer" = []), ("access_cookie" = [])),
    request_body = ChangeRequest,
    responses(
        (status = 204, description = "The password is changed; every other session of the user \
            is revoked."),
        (status = 401, description = "`unauthenticated`: no live session; or \
            `invalid_credentials`: the current password is wrong.", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = Overloaded),
    ),
)]
pub(super) async fn change(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
    ApiJson(req): ApiJson<ChangeRequest>,
) -> Result<Response, ApiError> {
    change_flow(&state, auth, &client, req).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The password-change use case, shared by the JSON endpoint and the account page.
#[tracing::instrument(name = "password_change", skip_all, fields(user_id = tracing::field::Empty))]
pub(crate) async fn change_flow(
    state: &AppState,
    auth: Authenticated,
    client: &ClientInfo,
    req: ChangeRequest,
) -> Result<(), ApiError> {
    // The extractor told the request's span; the handler's (and the store task that inherits
    // it) says it too.
    tracing::Span::current().record("user_id", tracing::field::display(auth.user_id));
    let user_id = auth.user_id;
    let own = store::users::find_own_credentials(state.store.reader(), user_id)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    let owner = stored_email(&own.email)?;
    let mut errors = FieldErrors::new();
    let current = present(&mut errors, "current_password", req.current_password);
    let new = required(
        &mut errors,
        "new_password",
        req.new_password.as_ref().map(ExposeSecret::expose_secret),
        |raw| NewPassword::parse(raw, &owner),
    );
    let (Some(current), Some(new)) = (current, new) else {
        return Err(ApiError::Validation(errors));
    };
    let current = normalize_secret(&current);
    // Checking the current password is a login by another door: it takes a place in the hashing
    // queue first and counts against the same per-IP and per-account failure limits, so a stolen
    // access token cannot be used to guess the password faster than the login form allows.
    let slot = state.hasher.reserve()?;
    let attempt = state.limits.login_attempt(client, &owner, None).await?;
    // Longer than any password that can be set: it cannot match (as at login).
    let too_long = current.expose_secret().chars().count() > MAX_CHARS;
    let verified = slot
        .verify(current, Some(own.password_hash.clone()))
        .await?;
    let actor = client.actor(Some(user_id), Some(auth.session_id));
    if too_long || !verified.matches {
        // Its own transaction: the request fails, the record of the attempt stays.
        let kind = audit::Kind::PasswordChangeFailed;
        state
            .store
            .record_event(kind, actor, state.clock.now())
            .await?;
        return Err(ApiError::InvalidCredentials);
    }
    let password_hash = state.hasher.hash(new.into_secret()).await?;
    // Between the verification and the transaction: where a reset or another change can commit.
    failpoint!("password_change.after_verify");
    let now = state.clock.now();
    let new = NewChange {
        session: SessionRef {
            user_id,
            session_id: auth.session_id,
        },
        verified_hash: own.password_hash,
        password_hash,
        notice: links::password_changed(state, &owner)?,
        refund: attempt.refund(),
        actor,
        now,
    };

    // One store call: the new password (only if the session is live and the hash is still the
    // one just verified), the revocation of the other sessions and of pending reset links, the
    // notice, the refund of the attempt and the audit event.
    match state.store.change_password(new).await? {
        Change::Done { revoked } => {
            state.metrics.revoked(Reason::PasswordChange, revoked);
            state.mailer.wake();
            Ok(())
        }
        // The session ended or a reset or change won a race since the password was verified.
        Change::Stale => Err(ApiError::InvalidCredentials),
    }
}

/// A required secret field, present and not empty.
fn present(
    errors: &mut FieldErrors,
    name: &str,
    value: Option<SecretString>,
) -> Option<SecretString> {
    match value {
        Some(v) if !v.expose_secret().is_empty() => Some(v),
        _ => {
            errors.insert(name.to_owned(), "is required".to_owned());
            None
        }
    }
}

/// An address read back from `users`: it was valid when stored.
pub fn stored_email(raw: &str) -> Result<Email, ApiError> {
    Email::parse(raw).map_err(|problem| {
        ApiError::Internal(anyhow::anyhow!("stored email is not valid: {problem}"))
    })
}
