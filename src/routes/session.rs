//! What signup, login and refresh share: opening a session inside the caller's transaction, and,
//! after the commit, the one response that carries tokens and sets the cookies.

use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::body::{SessionBody, TokenType};
use crate::app::AppState;
use crate::clock::{Millis, millis};
use crate::cookies;
use crate::error::ApiError;
use crate::extract::ClientInfo;
use crate::store::{self, Tx};
use crate::tokens::{self, Purpose};

/// A session just written in a transaction that has not committed yet.
pub struct OpenedSession {
    pub id: Uuid,
    pub refresh_token: SecretString,
    pub idle_expires_at: Millis,
}

/// Inserts a session and its first refresh token.
pub async fn open(
    tx: &mut Tx,
    state: &AppState,
    user_id: Uuid,
    client: &ClientInfo,
    now: Millis,
) -> Result<OpenedSession, sqlx::Error> {
    let settings = &state.settings;
    let id = Uuid::now_v7();
    let absolute_expires_at = now + millis(settings.session_absolute_lifetime);
    let idle_expires_at = (now + millis(settings.session_idle_timeout)).min(absolute_expires_at);
    let session = store::sessions::NewSession {
        id,
        user_id,
        now,
        idle_expires_at,
        absolute_expires_at,
        user_agent: client.user_agent.as_deref(),
        ip: client.ip.as_deref(),
    };
    store::sessions::insert_session(&mut **tx, &session).await?;
    let refresh_token = tokens::new_opaque();
    let hash = tokens::hash_opaque(Purpose::Refresh, &refresh_token);
    store::sessions::insert_refresh_token(&mut **tx, &hash, id, now).await?;
    Ok(OpenedSession {
        id,
        refresh_token,
        idle_expires_at,
    })
}

/// The response of signup, login and refresh, built only after their transaction committed:
/// mints the access token, sets both cookies and returns the session body.
pub fn respond(
    state: &AppState,
    jar: CookieJar,
    status: StatusCode,
    account: store::users::Account,
    session: &OpenedSession,
    now: Millis,
) -> Result<Response, ApiError> {
    let settings = &state.settings;
    let user_id = store::parse_id(&account.id)?;
    let access = tokens::mint_access(
        &state.keys,
        &state.issuer,
        user_id,
        session.id,
        now,
        settings.access_token_ttl.as_secs(),
    )?;
    let refresh_ttl =
        Duration::from_millis(u64::try_from(session.idle_expires_at - now).unwrap_or(0));
    let jar = cookies::set_session(
        jar,
        settings.cookie_secure,
        &access.token,
        settings.access_token_ttl,
        &session.refresh_token,
        refresh_ttl,
    );
    let body = SessionBody {
        account: account.into(),
        access_token: access.token.expose_secret().to_owned(),
        token_type: TokenType::Bearer,
        expires_in: access.expires_in,
    };
    Ok((status, jar, Json(body)).into_response())
}
