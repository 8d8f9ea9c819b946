//! POST /auth/login: the session, `profiles.last_login_at`, a rehash when the stored hash has old
//! parameters, the refund of the attempt's counters and the audit event are written in one
//! transaction (`Store::login`), only while the verified hash is still the account's and the
//! account is enabled; tokens and cookies only after it committed. A failed attempt is recorded
//! in a transaction of its own, since the request's failure must not erase it.
//!
//! Abuse resistance, in order: a place in the hashing queue (503 `overloaded` at once when it is
//! full, before anything is counted or written), then the rate-limit counters of the attempt
//! (429 `rate_limited`; see `limits`), committed as a failure before the password is checked and
//! taken back if it matches. Unknown and known addresses go through exactly the same steps:
//! the same counters keyed by the address as typed, the same hash work, the same 401 or 429.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use axum_extra::extract::CookieJar;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::body::SessionBody;
use super::mfa::MfaChallengeBody;
use super::openapi::responses::{Overloaded, RateLimited};
use super::session;
use crate::app::AppState;
use crate::domain::password::{MAX_CHARS, normalize_secret};
use crate::domain::{Email, required};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ClientInfo};
use crate::failpoint::failpoint;
use crate::metrics::Metrics;
use crate::password::HashError;
use crate::store;
use crate::store::flows::NewChallenge;
use crate::store::flows::login::{Login, NewLogin};
use crate::tokens::{self, Purpose};
use crate::{cookies, device, mfa};

pub fn router() -> Router<AppState> {
    Router::new().route("/auth/login", post(login))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(value_type = String, required = true, format = Email, max_length = 254)]
    pub(crate) email: Option<String>,
    /// Only the shape is checked: a password longer than any that can be set does not match.
    #[schema(value_type = String, required = true, format = Password, min_length = 1)]
    pub(crate) password: Option<SecretString>,
}

/// Opens a session with an email and a password.
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "sessions",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "A new session: sets both session cookies and the device \
            cookie. Or, for an account with a second factor, `mfa_required` with an `mfa_token` \
            for `POST /auth/mfa/verify`, and no cookie at all.",
            body = LoginBody,
            headers(("Set-Cookie" = String, description = "`__Host-lk_access` and \
                `__Secure-lk_refresh` (see the security schemes), and `__Host-lk_device` \
                (HttpOnly, 180 days): this browser signed in to the account, so its failed \
                logins are counted apart from the account's."))),
        (status = 401, description = "`invalid_credentials`: wrong email or wrong password \
            (the same answer, after the same work, for both).", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = Overloaded),
    ),
)]
pub(super) async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    Ok(match login_flow(&state, &client, jar, req).await? {
        LoggedIn::Session(jar, body) => {
            (StatusCode::OK, jar, Json(LoginBody::Session(body))).into_response()
        }
        LoggedIn::MfaRequired(body) => {
            (StatusCode::OK, Json(LoginBody::MfaRequired(body))).into_response()
        }
    })
}

/// The body of a login's 200: a session, or a challenge.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum LoginBody {
    Session(Box<SessionBody>),
    MfaRequired(MfaChallengeBody),
}

/// How a login ended, for the JSON endpoint and the login page.
pub(crate) enum LoggedIn {
    /// The new session: its cookies (and the device cookie) are in the jar.
    Session(CookieJar, Box<SessionBody>),
    /// The account has a second factor: no session, no cookies, a challenge to answer.
    MfaRequired(MfaChallengeBody),
}

/// The login use case, shared by `POST /auth/login` and the login page.
#[tracing::instrument(name = "login", skip_all, fields(user_id = tracing::field::Empty))]
pub(crate) async fn login_flow(
    state: &AppState,
    client: &ClientInfo,
    jar: CookieJar,
    req: LoginRequest,
) -> Result<LoggedIn, ApiError> {
    let (email, password) = parse(req)?;
    let secure = state.settings.cookie_secure;
    // Shed load first: a refused request costs no counter and no write.
    let slot = state.hasher.reserve()?;
    let found = store::users::find_credentials(state.store.reader(), &email).await?;
    // A device cookie counts only for an account whose password has not changed since it was
    // issued (see `crate::device`).
    let device = cookies::device_token(&jar, secure).and_then(|value| {
        let hash = &found.as_ref()?.password_hash;
        device::verify(&state.device_secret, &email, hash, &value)
    });
    let attempt = state
        .limits
        .login_attempt(client, &email, device.as_deref())
        .await?;
    let user_id = found.as_ref().map(|c| store::parse_id(&c.id)).transpose()?;
    let stored_hash = found.map(|c| c.password_hash);
    // Unknown accounts verify a dummy hash: same work, same answer, same code.
    let verified = slot.verify(password.clone(), stored_hash.clone()).await?;
    let now = state.clock.now();
    let (Some(user_id), Some(verified_hash)) = (user_id, stored_hash.filter(|_| verified.matches))
    else {
        state
            .store
            .record_failed_login(client.actor(user_id, None), now)
            .await?;
        Metrics::outcome(&state.metrics.logins, "failure");
        return Err(ApiError::InvalidCredentials);
    };
    crate::telemetry::record_user(user_id);
    // The upgrade can wait for the next login when the queue is full: refusing a correct
    // password for it would turn load into failed logins.
    let rehash = match verified.needs_rehash {
        true => match state.hasher.hash(password).await {
            Ok(hash) => Some(hash),
            Err(HashError::Overloaded) => None,
            Err(err) => return Err(err.into()),
        },
        false => None,
    };
    // Between the verification and the transaction: where a reset, change or disable can commit.
    failpoint!("login.after_verify");
    let prepared = session::prepare(state, client, now);
    let credential = rehash.clone().unwrap_or_else(|| verified_hash.clone());
    // Prepared for every login, used only for an account with a second factor.
    let mfa_token = tokens::new_opaque();
    let challenge = NewChallenge {
        token_hash: tokens::hash_opaque(Purpose::MfaChallenge, &mfa_token),
        expires_at: mfa::challenge::expires_at(now),
    };
    let new = NewLogin {
        user_id,
        verified_hash,
        rehash,
        actor: client.actor(Some(user_id), Some(prepared.rows.id)),
        session: prepared.rows.clone(),
        refund: attempt.refund(),
        challenge,
        now,
    };

    // One store call: session, last login, rehash, the refund of the attempt and the audit event,
    // only while the password is still the one verified and the account enabled.
    let account = match state.store.login(new).await? {
        Login::Opened(account) => account,
        Login::MfaRequired => {
            Metrics::outcome(&state.metrics.logins, "mfa_required");
            let body = MfaChallengeBody::of(state, user_id, &mfa_token).await?;
            return Ok(LoggedIn::MfaRequired(body));
        }
        Login::Stale => {
            Metrics::outcome(&state.metrics.logins, "failure");
            return Err(ApiError::InvalidCredentials);
        }
    };
    Metrics::outcome(&state.metrics.logins, "success");
    // This browser signed in to the account: from now on its failures are its own (see
    // `crate::device`).
    let device = device::issue(&state.device_secret, &email, &credential);
    let jar = cookies::set_device(jar, secure, device);
    let (jar, body) = session::issue(state, jar, account, &prepared.opened(), now)?;
    Ok(LoggedIn::Session(jar, Box::new(body)))
}

/// Login checks only the shape of its input: the rules for new passwords do not apply to
/// existing ones, and a password longer than any that can be set simply does not match.
fn parse(req: LoginRequest) -> Result<(Email, SecretString), ApiError> {
    let mut errors = crate::error::FieldErrors::new();
    let email = required(&mut errors, "email", req.email.as_deref(), Email::parse);
    let password = match req.password {
        Some(p) if !p.expose_secret().is_empty() => Some(normalize_secret(&p)),
        _ => {
            errors.insert("password".into(), "is required".into());
            None
        }
    };
    match (email, password) {
        (Some(email), Some(password)) if errors.is_empty() => {
            if password.expose_secret().chars().count() > MAX_CHARS {
                return Err(ApiError::InvalidCredentials);
            }
            Ok((email, password))
        }
        _ => Err(ApiError::Validation(errors)),
    }
}
