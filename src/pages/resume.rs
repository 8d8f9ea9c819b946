//! GET /auth/resume: the way back into a page whose access token has expired.
//!
//! The refresh cookie is scoped to `/auth`, so the pages (`/account`, `/logout`) never see it.
//! A page without a live access token sends the browser here; this path sees the refresh cookie,
//! rotates the session exactly as `POST /auth/refresh` does (`refresh_flow`, the one cookie
//! code), and sends the browser back. Without a session the browser goes on to the login page,
//! which comes back after a login.
//!
//! A GET that rotates a token is safe here: the refresh cookie is `SameSite=Strict`, so a
//! cross-site link or redirect arrives without it, and all a rotation does is what any refresh
//! does. The destination is an allowed `return_to` only.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;

use super::form::PageQuery;
use super::render::see_other;
use super::return_to;
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::ClientInfo;
use crate::routes::refresh::refresh_flow;

/// The detour of a page at `path` that needs a session it does not see.
pub fn detour(path: &str) -> Response {
    see_other(&return_to::link("/auth/resume", None, Some(path)))
}

pub async fn resume(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
    query: PageQuery,
) -> Response {
    let to = return_to::allowed(&state.settings, query.return_to.as_deref())
        .unwrap_or_else(|| "/account".to_owned());
    match refresh_flow(&state, &client, jar).await {
        Ok((jar, _)) => (jar, see_other(&to)).into_response(),
        // No session (or it ended): log in, then come back.
        Err((jar, ApiError::SessionRevoked)) => {
            (jar, see_other(&return_to::link("/login", None, Some(&to)))).into_response()
        }
        Err((jar, err)) => (jar, state.pages.error(&err)).into_response(),
    }
}
