//! POST /auth/logout: revokes the caller's session, found from the access token or, when that has
//! expired, from the refresh cookie; clears both cookies either way.

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum_extra::extract::CookieJar;
use uuid::Uuid;

use crate::app::AppState;
use crate::cookies;
use crate::error::ApiError;
use crate::extract::{ClientInfo, authenticate};
use crate::store;
use crate::store::sessions::Reason;
use crate::tokens::{self, Purpose};

pub fn router() -> Router<AppState> {
    Router::new().route("/auth/logout", post(logout))
}

/// Ends the caller's session, found from the access token or else the refresh cookie.
#[utoipa::path(
    post,
    path = "/auth/logout",
    tag = "sessions",
    security(("bearer" = []), ("access_cookie" = []), ("refresh_cookie" = []), ()),
    responses(
        (status = 204, description = "The session, if the request named a live one, is revoked. \
            Clears both session cookies, with or without a session.",
            headers(("Set-Cookie" = String, description = "Both session cookies, cleared \
                (`Max-Age=0`)."))),
    ),
)]
pub(super) async fn logout(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let jar = logout_flow(&state, &client, jar, &headers).await?;
    Ok((StatusCode::NO_CONTENT, jar))
}

/// The logout use case, shared by `POST /auth/logout` and the logout page: the session of the
/// access token, or else of the refresh cookie, revoked; both cookies cleared either way.
#[tracing::instrument(name = "logout", skip_all, fields(user_id = tracing::field::Empty))]
pub(crate) async fn logout_flow(
    state: &AppState,
    client: &ClientInfo,
    jar: CookieJar,
    headers: &HeaderMap,
) -> Result<CookieJar, ApiError> {
    let secure = state.settings.cookie_secure;
    let session = match authenticate(state, headers).await? {
        Some(auth) => Some((auth.session_id, auth.user_id)),
        None => match cookies::refresh_token(&jar, secure) {
            Some(token) => {
                let hash = tokens::hash_opaque(Purpose::Refresh, &token);
                store::sessions::find_refresh_token(state.store.reader(), &hash)
                    .await?
                    .and_then(|t| {
                        Some((
                            Uuid::parse_str(&t.session_id).ok()?,
                            Uuid::parse_str(&t.user_id).ok()?,
                        ))
                    })
            }
            None => None,
        },
    };
    if let Some((session_id, user_id)) = session {
        crate::telemetry::record_user(user_id);
        let actor = client.actor(Some(user_id), Some(session_id));
        // One store call: the revocation and its audit event.
        if state
            .store
            .logout(session_id, actor, state.clock.now())
            .await?
        {
            state.metrics.revoked(Reason::Logout, 1);
        }
    }
    Ok(cookies::clear_session(jar, secure))
}
