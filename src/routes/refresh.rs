//! POST /auth/refresh: rotation of the refresh token in the cookie.
//!
//! The presented token is spent by one conditional UPDATE and its successor inserted in the same
//! transaction, so two requests racing with one token cannot both spend it. A token that cannot be
//! spent is looked at once more:
//! - it is the immediate predecessor of the session's current token and was spent less than the
//!   grace period ago: a concurrent request (another tab) rotated it; this request gets the very
//!   same successor, which is derived from the predecessor and not stored (see `tokens::successor`);
//! - it was spent earlier than that: someone replays a stolen token. The whole session is revoked
//!   and an audit event written, in a transaction of their own that commits although the request
//!   fails with 401 `session_revoked`;
//! - it is unknown, or its session is over: 401 `session_revoked`.
//!
//! Failed refreshes clear both cookies, except a rate-limited one (429): its session is fine.
//! Refreshes are limited per client IP (`limits::Limit::Refresh`) before anything is looked at.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use axum_extra::extract::CookieJar;
use secrecy::SecretString;

use super::body::SessionBody;
use super::openapi::responses::RateLimited;
use super::session::{self, OpenedSession};
use crate::app::AppState;
use crate::clock::{Millis, millis};
use crate::cookies;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ClientInfo;
use crate::limits::Limit;
use crate::metrics::Metrics;
use crate::store;
use crate::store::flows::refresh::{NewRotation, Rotation};
use crate::store::sessions::Reason;
use crate::tokens::{self, Purpose, SignIn};

pub fn router() -> Router<AppState> {
    Router::new().route("/auth/refresh", post(refresh))
}

/// Rotates the refresh token in the cookie: a new access token and refresh token.
#[utoipa::path(
    post,
    path = "/auth/refresh",
    tag = "sessions",
    security(("refresh_cookie" = [])),
    responses(
        (status = 200, description = "The session, with a new access token. Sets both session \
            cookies (the refresh token is rotated).", body = SessionBody,
            headers(("Set-Cookie" = String, description = "`__Host-lk_access` and \
                `__Secure-lk_refresh` (see the security schemes)."))),
        (status = 401, description = "`session_revoked`: no refresh cookie, or its token is \
            unknown, revoked, reused or expired. Clears both session cookies.", body = ErrorBody,
            headers(("Set-Cookie" = String, description = "Both session cookies, cleared \
                (`Max-Age=0`)."))),
        (status = 429, response = RateLimited),
    ),
)]
pub(super) async fn refresh(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
) -> Response {
    match refresh_flow(&state, &client, jar).await {
        Ok((jar, body)) => (StatusCode::OK, jar, Json(body)).into_response(),
        Err((jar, err)) => (jar, err).into_response(),
    }
}

/// The refresh use case, shared by `POST /auth/refresh` and the pages' `GET /auth/resume`: the
/// rotated cookies and the session body, or the error with the jar to answer it with (cleared
/// when the session is over, untouched otherwise).
#[tracing::instrument(name = "refresh", skip_all, fields(user_id = tracing::field::Empty))]
pub(crate) async fn refresh_flow(
    state: &AppState,
    client: &ClientInfo,
    jar: CookieJar,
) -> Result<(CookieJar, SessionBody), (CookieJar, ApiError)> {
    let secure = state.settings.cookie_secure;
    if let Err(err) = state.limits.check(Limit::Refresh, &client.rate_key()).await {
        return Err((jar, err));
    }
    let Some(token) = cookies::refresh_token(&jar, secure) else {
        return Err((
            cookies::clear_session(jar, secure),
            ApiError::SessionRevoked,
        ));
    };
    match rotate(state, client, &token).await {
        Ok((account, opened, now)) => {
            match session::issue(state, jar.clone(), account, &opened, now) {
                Ok(issued) => Ok(issued),
                Err(err) => Err((jar, err)),
            }
        }
        // A revoked session loses its cookies; a server-side failure leaves them alone.
        Err(err @ ApiError::SessionRevoked) => {
            Metrics::outcome(&state.metrics.refreshes, "rejected");
            Err((cookies::clear_session(jar, secure), err))
        }
        Err(err) => Err((jar, err)),
    }
}

async fn rotate(
    state: &AppState,
    client: &ClientInfo,
    token: &SecretString,
) -> Result<(store::users::Account, OpenedSession, Millis), ApiError> {
    let now = state.clock.now();
    let hash = tokens::hash_opaque(Purpose::Refresh, token);
    let successor = tokens::successor(&state.refresh_secret, token);
    let successor_hash = tokens::hash_opaque(Purpose::Refresh, &successor);
    let new = NewRotation {
        token_hash: hash.clone(),
        successor_hash: successor_hash.clone(),
        idle_timeout: millis(state.settings.session_idle_timeout),
        actor: client.actor(None, None),
        now,
    };

    // One store call: spending the token, extending its (still live) session, storing the
    // successor and the audit event.
    if let Rotation::Rotated {
        account,
        session_id,
        idle_expires_at,
        sign_in,
    } = state.store.rotate_refresh(new).await?
    {
        crate::telemetry::record_user(store::parse_id(&account.id)?);
        Metrics::outcome(&state.metrics.refreshes, "rotated");
        let opened = OpenedSession {
            id: session_id,
            refresh_token: successor,
            idle_expires_at,
            sign_in,
        };
        return Ok((*account, opened, now));
    }

    let Some(known) = store::sessions::find_refresh_token(state.store.reader(), &hash).await?
    else {
        return Err(ApiError::SessionRevoked);
    };
    if !known.session_live(now) {
        return Err(ApiError::SessionRevoked);
    }
    let session_id = store::parse_id(&known.session_id)?;
    let user_id = store::parse_id(&known.user_id)?;
    crate::telemetry::record_user(user_id);
    let Some(spent_at) = known.spent_at else {
        // Not spent, yet the rotation refused it: its session cannot go on (its account was
        // disabled without its sessions being revoked). Not a reuse: nothing to revoke.
        return Err(ApiError::SessionRevoked);
    };
    let within_grace = now - spent_at < millis(state.settings.refresh_grace_period);
    if within_grace
        && store::sessions::is_current_token(
            state.store.reader(),
            &successor_hash,
            &known.session_id,
        )
        .await?
    {
        // The concurrent request's twin: hand out the same successor.
        Metrics::outcome(&state.metrics.refreshes, "grace");
        let account = store::users::find_account(state.store.reader(), user_id)
            .await?
            .ok_or(ApiError::SessionRevoked)?;
        let opened = OpenedSession {
            id: session_id,
            refresh_token: successor,
            idle_expires_at: known.idle_expires_at,
            sign_in: SignIn::parse(&known.amr),
        };
        return Ok((account, opened, now));
    }

    // Reuse of a spent token: revoke the whole session, in a transaction of its own that
    // commits although the request fails, because the security record must survive.
    let actor = client.actor(Some(user_id), Some(session_id));
    if state.store.revoke_reused(session_id, actor, now).await? {
        state.metrics.reuse_detected.inc();
        state.metrics.revoked(Reason::RefreshTokenReuse, 1);
        tracing::warn!(session_id = %session_id, "refresh token reuse detected: session revoked");
    }
    Err(ApiError::SessionRevoked)
}
