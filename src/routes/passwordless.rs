//! POST /auth/passwordless/start and /auth/passwordless/verify: sign-in with an emailed code or
//! link (see `crate::passwordless`).
//!
//! - start: 202 with the same body, after the same work, for every address (a request row that
//!   the mail worker turns into a code and its email, as forgot-password does).
//! - verify: `{email, code}` or `{token}` (the link's); the code or link spent and the session
//!   opened (or the account created, with `passwordless_signup`, or a second factor's challenge
//!   written) in one transaction; tokens and cookies after the commit. Every refusal of a code
//!   is the same 400 `token_invalid`, whether the address has a code or not.

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
use super::login::{LoggedIn, LoginBody};
use super::mfa::MfaChallengeBody;
use super::openapi::responses::RateLimited;
use super::session;
use super::signup::account_without_password;
use crate::app::AppState;
use crate::domain::{Email, required};
use crate::error::{ApiError, ErrorBody, FieldErrors};
use crate::extract::{ApiJson, ClientInfo};
use crate::failpoint::failpoint;
use crate::hooks::Source;
use crate::limits::Limit;
use crate::mail::Kind;
use crate::mail::links;
use crate::metrics::Metrics;
use crate::store;
use crate::store::audit;
use crate::store::flows::NewChallenge;
use crate::store::flows::accounts::NewAccountRows;
use crate::store::flows::passwordless::{NewPasswordless, NewPasswordlessRequest, Passwordless};
use crate::store::passwordless::{By, Live};
use crate::tokens::{self, Purpose, SignIn};

/// The body of every answer to start, whether the address can sign in or not.
pub const START_MESSAGE: &str =
    "If this address can sign in, an email with a sign-in code and link is on its way.";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/passwordless/start", post(start))
        .route("/auth/passwordless/verify", post(verify))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    #[schema(value_type = String, required = true, format = Email, max_length = 254)]
    pub(crate) email: Option<String>,
}

/// Emails a one-time sign-in code and link to the address, if it can sign in.
#[utoipa::path(
    post,
    path = "/auth/passwordless/start",
    operation_id = "passwordless_start",
    tag = "sessions",
    request_body = StartRequest,
    responses(
        (status = 202, description = "Always the same answer, whether or not the address has an \
            account (and whether or not an email went out: at most one a minute per address). \
            The email has a 6-digit code and a link, both for `POST /auth/passwordless/verify`, \
            valid `passwordless_ttl` (10 minutes) and once; a newer request replaces them.",
            body = MessageBody),
        (status = 429, response = RateLimited),
    ),
)]
pub(super) async fn start(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(req): ApiJson<StartRequest>,
) -> Result<Response, ApiError> {
    start_flow(&state, &client, req).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(MessageBody {
            message: START_MESSAGE,
        }),
    )
        .into_response())
}

/// The start use case, shared by the JSON endpoint and the login page: the same work and the
/// same outcome for every address.
#[tracing::instrument(name = "passwordless_start", skip_all)]
pub(crate) async fn start_flow(
    state: &AppState,
    client: &ClientInfo,
    req: StartRequest,
) -> Result<(), ApiError> {
    // The limits of every request that emails a link to an address (forgot-password's).
    let email = super::password::mailing_address(state, client, req.email.as_deref()).await?;
    // One store call, the same for every address (see `store::flows::passwordless`).
    let new = NewPasswordlessRequest {
        throttle: links::throttle(state, Kind::Passwordless, &email),
        email: email.as_str().to_owned(),
        actor: client.actor(None, None),
        now: state.clock.now(),
    };
    state.store.request_passwordless(new).await?;
    state.mailer.wake();
    Ok(())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The address the code was sent to; with `code`.
    #[schema(value_type = Option<String>, format = Email, max_length = 254)]
    pub(crate) email: Option<String>,
    /// The emailed 6-digit code (spaces ignored); with `email`.
    #[schema(value_type = Option<String>, example = "123456")]
    pub(crate) code: Option<String>,
    /// Instead of `email` and `code`: the `token` of the emailed link.
    #[schema(value_type = Option<String>)]
    pub(crate) token: Option<SecretString>,
}

/// Signs in with an emailed code (`email` and `code`) or link (`token`).
#[utoipa::path(
    post,
    path = "/auth/passwordless/verify",
    operation_id = "passwordless_verify",
    tag = "sessions",
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "A new session (`amr` `[\"otp\"]`, `aal` 1), for an account \
            created by this sign-in too (`passwordless_signup`): sets both session cookies. Or, \
            for an account with a second factor, `mfa_required` with an `mfa_token` for \
            `POST /auth/mfa/verify`, and no cookie: the code proves the mailbox only.",
            body = LoginBody,
            headers(("Set-Cookie" = String, description = "`__Host-lk_access` and \
                `__Secure-lk_refresh` (see the security schemes)."))),
        (status = 400, description = "`token_invalid`: the code is wrong, or the code or link \
            is unknown, used, replaced by a newer one, expired or out of attempts (five codes \
            tried); the same answer whether or not the address has a code. Or `invalid_json`.",
            body = ErrorBody),
        (status = 409, description = "`conflict`: in library mode, the embedding application's \
            hook refused the new account.", body = ErrorBody),
        (status = 429, response = RateLimited),
    ),
)]
pub(super) async fn verify(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
    ApiJson(req): ApiJson<VerifyRequest>,
) -> Result<Response, ApiError> {
    Ok(match verify_flow(&state, &client, jar, req).await? {
        LoggedIn::Session(jar, body) => {
            (StatusCode::OK, jar, Json(LoginBody::Session(body))).into_response()
        }
        LoggedIn::MfaRequired(body) => {
            (StatusCode::OK, Json(LoginBody::MfaRequired(body))).into_response()
        }
    })
}

/// What a verification presents.
enum Presented {
    Code(Email, SecretString),
    Link(SecretString),
}

fn parse_verify(req: VerifyRequest) -> Result<Presented, ApiError> {
    let token = req.token.filter(|t| !t.expose_secret().is_empty());
    match (req.email, req.code, token) {
        (None, None, Some(token)) if token.expose_secret().len() <= 128 => {
            Ok(Presented::Link(token))
        }
        // A token longer than any issued cannot be live.
        (None, None, Some(_)) => Err(ApiError::TokenInvalid),
        (email, code, None) => {
            let mut errors = FieldErrors::new();
            let email = required(&mut errors, "email", email.as_deref(), Email::parse);
            let code = match code.as_deref().map(str::trim) {
                None | Some("") => {
                    errors.insert("code".into(), "is required (or token)".into());
                    None
                }
                Some(raw) => crate::passwordless::parse_code(raw).or_else(|| {
                    errors.insert("code".into(), "must be the 6 digits of the email".into());
                    None
                }),
            };
            match (email, code) {
                (Some(email), Some(code)) if errors.is_empty() => Ok(Presented::Code(email, code)),
                _ => Err(ApiError::Validation(errors)),
            }
        }
        (_, _, Some(_)) => Err(ApiError::field(
            "token",
            "send token alone, or email and code",
        )),
    }
}

/// The verification use case, shared by the JSON endpoint and the pages (the code form and the
/// link's page).
#[tracing::instrument(name = "passwordless_verify", skip_all, fields(user_id = tracing::field::Empty))]
pub(crate) async fn verify_flow(
    state: &AppState,
    client: &ClientInfo,
    jar: CookieJar,
    req: VerifyRequest,
) -> Result<LoggedIn, ApiError> {
    let presented = parse_verify(req)?;
    let now = state.clock.now();
    let (live, by, refund) = match presented {
        Presented::Code(email, code) => {
            // A code is a password by another name: the login limits (per IP, per address),
            // counted before it is checked and taken back if it is right.
            let attempt = state.limits.login_attempt(client, &email, None).await?;
            // Counted against the address's code before it is compared (see `crate::passwordless`).
            let live = state
                .store
                .passwordless_attempt(email.normalized().to_owned(), now)
                .await?;
            let kek = state.keys.kek();
            let live = live.filter(|l| {
                crate::passwordless::code_matches(kek, &l.token_hash, &l.code_hash, &code)
            });
            let Some(live) = live else {
                return Err(wrong_code(state, client, now).await);
            };
            (live, By::Code, attempt.refund())
        }
        Presented::Link(token) => {
            // Before the token is looked up: guessing tokens is what this limit slows.
            state
                .limits
                .check(Limit::Verify, &client.rate_key())
                .await?;
            let hash = tokens::hash_opaque(Purpose::Passwordless, &token);
            let live = store::passwordless::find_by_token(state.store.reader(), &hash, now)
                .await?
                .ok_or(ApiError::TokenInvalid)?;
            (live, By::Link, None)
        }
    };
    sign_in(state, client, jar, live, by, refund).await
}

/// A code that is wrong or that the address does not have: the same answer, recorded.
async fn wrong_code(state: &AppState, client: &ClientInfo, now: i64) -> ApiError {
    Metrics::outcome(&state.metrics.logins, "failure");
    let kind = audit::Kind::PasswordlessFailed;
    match state
        .store
        .record_event(kind, client.actor(None, None), now)
        .await
    {
        Ok(()) => ApiError::TokenInvalid,
        Err(err) => err.into(),
    }
}

/// The sign-in with a live code: one store call, then the session's tokens and cookies.
async fn sign_in(
    state: &AppState,
    client: &ClientInfo,
    jar: CookieJar,
    live: Live,
    by: By,
    refund: Option<store::rate_limits::Refund>,
) -> Result<LoggedIn, ApiError> {
    let user_id = live.user_id.as_deref().map(store::parse_id).transpose()?;
    let new_account = match user_id {
        Some(user_id) => {
            crate::telemetry::record_user(user_id);
            None
        }
        None => Some(new_account(state, client, &live).await?),
    };
    let account_id = user_id.or(new_account.as_ref().map(|rows| rows.user_id));
    // Between the checks and the transaction: where a reset, a disable or a newer code can
    // commit (the transaction re-checks them all).
    failpoint!("passwordless.after_check");
    let now = state.clock.now();
    let mut prepared = session::prepare(state, client, now);
    prepared.rows.sign_in = SignIn::EmailOtp;
    // Prepared for every sign-in, used only for an account with a second factor.
    let mfa_token = tokens::new_opaque();
    let challenge = NewChallenge {
        token_hash: tokens::hash_opaque(Purpose::MfaChallenge, &mfa_token),
        expires_at: crate::mfa::challenge::expires_at(now),
    };
    let new = NewPasswordless {
        token_hash: live.token_hash,
        by,
        user_id,
        new_account,
        session: prepared.rows.clone(),
        challenge,
        refund,
        actor: client.actor(account_id, Some(prepared.rows.id)),
        now,
    };
    let account = match state.store.sign_in_passwordless(new).await? {
        Passwordless::Opened { account, created } => {
            if created {
                state.metrics.signups.inc();
            }
            account
        }
        Passwordless::MfaRequired => {
            Metrics::outcome(&state.metrics.logins, "mfa_required");
            // Only an existing account has a second factor.
            let body = match user_id {
                Some(id) => MfaChallengeBody::of(state, id, &mfa_token).await?,
                None => MfaChallengeBody::new(&mfa_token, false),
            };
            return Ok(LoggedIn::MfaRequired(body));
        }
        Passwordless::Invalid => return Err(ApiError::TokenInvalid),
        Passwordless::Refused(refused) => return Err(refused.into()),
    };
    Metrics::outcome(&state.metrics.logins, "success");
    let (jar, body) = session::issue(state, jar, account, &prepared.opened(), now)?;
    Ok(LoggedIn::Session(jar, Box::new(body)))
}

/// The account a code for an address without one creates (`passwordless_signup`): see
/// `account_without_password`; the code proved the address.
async fn new_account(
    state: &AppState,
    client: &ClientInfo,
    live: &Live,
) -> Result<NewAccountRows, ApiError> {
    // Turned off since the code was sent: the code is worth nothing.
    if !state.settings.passwordless_signup {
        return Err(ApiError::TokenInvalid);
    }
    let email = Email::parse(&live.email)
        .map_err(|problem| ApiError::Internal(anyhow::anyhow!("stored email: {problem}")))?;
    account_without_password(state, client, email, None, Source::Passwordless).await
}
