//! What signup, login and refresh share: preparing a session for the store's transaction, and,
//! after the commit, the one response that carries tokens and sets the cookies.

use std::time::Duration;

use axum_extra::extract::CookieJar;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::body::{SessionBody, TokenType};
use crate::app::AppState;
use crate::clock::{Millis, millis};
use crate::cookies;
use crate::error::ApiError;
use crate::extract::ClientInfo;
use crate::store::{self, flows::NewSession};
use crate::tokens::{self, Purpose, SignIn};

/// A session about to be opened: the rows for the store, and the refresh token they hash.
pub struct PreparedSession {
    pub rows: NewSession,
    pub refresh_token: SecretString,
}

/// A session the store opened or extended, for `respond`.
pub struct OpenedSession {
    pub id: Uuid,
    pub refresh_token: SecretString,
    pub idle_expires_at: Millis,
    pub sign_in: SignIn,
}

/// Prepares a new session before the transaction: its id, its first refresh token and expiries.
pub fn prepare(state: &AppState, client: &ClientInfo, now: Millis) -> PreparedSession {
    let settings = &state.settings;
    let absolute_expires_at = now + millis(settings.session_absolute_lifetime);
    let idle_expires_at = (now + millis(settings.session_idle_timeout)).min(absolute_expires_at);
    let refresh_token = tokens::new_opaque();
    PreparedSession {
        rows: NewSession {
            id: Uuid::now_v7(),
            refresh_token_hash: tokens::hash_opaque(Purpose::Refresh, &refresh_token),
            idle_expires_at,
            absolute_expires_at,
            user_agent: client.user_agent.clone(),
            ip: client.ip.clone(),
            sign_in: SignIn::Password,
        },
        refresh_token,
    }
}

impl PreparedSession {
    /// The session once the store's transaction committed it.
    pub fn opened(self) -> OpenedSession {
        OpenedSession {
            id: self.rows.id,
            refresh_token: self.refresh_token,
            idle_expires_at: self.rows.idle_expires_at,
            sign_in: self.rows.sign_in,
        }
    }
}

/// What every way of opening a session ends with (the JSON endpoints and the pages), only after
/// the transaction committed: the access token minted, both cookies set by the one cookie code,
/// and the session body.
pub fn issue(
    state: &AppState,
    jar: CookieJar,
    account: store::users::Account,
    session: &OpenedSession,
    now: Millis,
) -> Result<(CookieJar, SessionBody), ApiError> {
    let settings = &state.settings;
    let user_id = store::parse_id(&account.id)?;
    let access = tokens::mint_access_with(
        &state.keys,
        &state.issuer,
        user_id,
        (session.id, session.sign_in),
        now,
        settings.access_token_ttl.as_secs(),
        tokens::app_claims(&account.app_metadata, &settings.token_claims),
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
    Ok((jar, body))
}
