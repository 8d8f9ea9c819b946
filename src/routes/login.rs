//! POST /auth/login: the session, `profiles.last_login_at`, a rehash when the stored hash has old
//! parameters, and the audit event are written in one transaction; tokens and cookies only after
//! it committed. A failed attempt is recorded in a transaction of its own, since the request's
//! failure must not erase it.
//!
//! Abuse resistance, in order: a place in the hashing queue (503 `overloaded` at once when it is
//! full, before anything is counted or written), then the rate-limit counters of the attempt
//! (429 `rate_limited`; see `limits`), committed as a failure before the password is checked and
//! taken back if it matches. Unknown and known addresses go through exactly the same steps:
//! the same counters keyed by the address as typed, the same hash work, the same 401 or 429.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum_extra::extract::CookieJar;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use utoipa::ToSchema;

use super::body::SessionBody;
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
use crate::store::{self, audit};

pub fn router() -> Router<AppState> {
    Router::new().route("/auth/login", post(login))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(value_type = String, required = true, format = Email, max_length = 254)]
    email: Option<String>,
    /// Only the shape is checked: a password longer than any that can be set does not match.
    #[schema(value_type = String, required = true, format = Password, min_length = 1)]
    password: Option<SecretString>,
}

/// Opens a session with an email and a password.
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "sessions",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "A new session. Sets both session cookies.",
            body = SessionBody,
            headers(("Set-Cookie" = String, description = "`__Host-lk_access` and \
                `__Secure-lk_refresh` (see the security schemes)."))),
        (status = 401, description = "`invalid_credentials`: wrong email or wrong password \
            (the same answer, after the same work, for both).", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = Overloaded),
    ),
)]
#[tracing::instrument(name = "login", skip_all)]
pub(super) async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let (email, password) = parse(req)?;
    // Shed load first: a refused request costs no counter and no write.
    let slot = state.hasher.reserve()?;
    let attempt = state.limits.login_attempt(&client, &email).await?;
    let found = store::users::find_credentials(state.store.reader(), &email).await?;
    let user_id = found.as_ref().map(|c| store::parse_id(&c.id)).transpose()?;
    // Unknown accounts verify a dummy hash: same work, same answer, same code.
    let verified = slot
        .verify(password.clone(), found.map(|c| c.password_hash))
        .await?;
    let now = state.clock.now();
    let Some(user_id) = user_id.filter(|_| verified.matches) else {
        let mut tx = state.store.begin().await?;
        audit::record(
            &mut *tx,
            audit::Kind::LoginFailed,
            &client.actor(user_id, None),
            now,
        )
        .await?;
        tx.commit().await?;
        Metrics::outcome(&state.metrics.logins, "failure");
        return Err(ApiError::InvalidCredentials);
    };
    tracing::Span::current().record("user_id", tracing::field::display(user_id));
    // The password is right: this attempt was no failure, and the account owes no wait.
    state.limits.login_succeeded(attempt).await?;
    // The upgrade can wait for the next login when the queue is full: refusing a correct
    // password for it would turn load into failed logins.
    let rehashed = match verified.needs_rehash {
        true => match state.hasher.hash(password).await {
            Ok(hash) => Some(hash),
            Err(HashError::Overloaded) => None,
            Err(err) => return Err(err.into()),
        },
        false => None,
    };

    // Transaction boundary: session, last login, rehash and audit event commit together.
    let mut tx = state.store.begin().await?;
    let opened = session::open(&mut tx, &state, user_id, &client, now).await?;
    store::users::record_login(&mut *tx, user_id, now).await?;
    if let Some(hash) = &rehashed {
        store::users::set_password_hash(&mut *tx, user_id, hash, now).await?;
    }
    audit::record(
        &mut *tx,
        audit::Kind::Login,
        &client.actor(Some(user_id), Some(opened.id)),
        now,
    )
    .await?;
    let account = store::users::find_account(&mut *tx, user_id)
        .await?
        .ok_or(ApiError::InvalidCredentials)?;
    failpoint!("login.before_commit");
    tx.commit().await?;
    Metrics::outcome(&state.metrics.logins, "success");

    session::respond(&state, jar, StatusCode::OK, account, &opened, now)
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
