//! Sign-in with OpenID Connect providers (see `crate::oidc`), and the user's linked identities.
//!
//! - `GET /auth/oidc/{provider}/start?return_to=`: 303 to the provider, with the sealed
//!   `__Host-lk_oidc` cookie.
//! - `GET /auth/oidc/{provider}/callback`: the provider's answer verified, then ONE transaction:
//!   the identity's user signs in; or, for a provider account no user has, an account is created
//!   exactly as a signup creates one (user, profile, identity, session, audit, `user.created`);
//!   or (a link started by a signed-in user) the identity is linked to that user. Tokens and
//!   cookies only after the commit; then 303 to `return_to`, as the pages do.
//! - An address that an account has already is never linked or signed in by the provider's word
//!   alone (the pre-account-takeover): the callback answers `email_taken`, and the owner links
//!   the provider from a signed-in session (`POST /auth/oidc/{provider}/link`).
//! - `GET /auth/identities` and `DELETE /auth/identities/{id}` (not the last way to sign in).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use axum_extra::extract::CookieJar;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::account::require_second_factor;
use super::mfa::MfaChallengeBody;
use super::openapi::responses::{MfaRequired, RateLimited, Unauthenticated};
use super::session;
use super::signup::account_without_password;
use crate::app::AppState;
use crate::clock::rfc3339;
use crate::cookies;
use crate::domain::Email;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJsonOrEmpty, Authenticated, ClientInfo};
use crate::failpoint::failpoint;
use crate::hooks::Source;
use crate::metrics::Metrics;
use crate::oidc::{CallbackQuery, LinkTo, Pending, Provider, Verified, pending};
use crate::store;
use crate::store::flows::NewChallenge;
use crate::store::flows::SessionRef;
use crate::store::flows::oidc::OidcUnlink;
use crate::store::flows::oidc::{NewOidcLink, NewOidcSignIn, OidcLink, OidcSignIn, SignInTo};
use crate::store::identities::{NewIdentity, StoredIdentity};
use crate::tokens::{self, Purpose, SignIn};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/oidc/{provider}/start", get(start))
        .route("/auth/oidc/{provider}/callback", get(callback))
        .route("/auth/oidc/{provider}/link", post(link))
        .route("/auth/identities", get(list))
        .route("/auth/identities/{id}", delete(unlink))
}

/// The configured provider of the path, or 404.
fn provider_of(
    state: &AppState,
    path: Result<Path<String>, PathRejection>,
) -> Result<std::sync::Arc<Provider>, ApiError> {
    let Ok(Path(id)) = path else {
        return Err(ApiError::NotFound);
    };
    state.oidc.provider(&id).ok_or(ApiError::NotFound)
}

/// Where the provider sends the browser back: to register with the provider.
pub fn redirect_uri(
    state: &AppState,
    provider: &Provider,
) -> Result<openidconnect::RedirectUrl, ApiError> {
    let base = state.settings.public_url.as_str().trim_end_matches('/');
    let url = format!("{base}/auth/oidc/{}/callback", provider.id);
    Ok(openidconnect::RedirectUrl::new(url).map_err(anyhow::Error::from)?)
}

/// A provider that cannot be reached or misbehaves: logged with the reason, answered alike.
fn failed(provider: &Provider, failure: impl std::fmt::Display) -> ApiError {
    tracing::warn!(provider = %provider.id, reason = %failure, "OpenID Connect sign-in refused");
    ApiError::OidcFailed
}

#[derive(Deserialize, Default)]
pub struct StartQuery {
    return_to: Option<String>,
}

/// Starts signing in with a provider: to its authorization endpoint.
#[utoipa::path(
    get,
    path = "/auth/oidc/{provider}/start",
    operation_id = "oidc_start",
    tag = "sessions",
    params(
        ("provider" = String, Path, description = "A configured provider's `id`."),
        ("return_to" = Option<String>, Query, description = "Where the browser goes once \
            signed in: the public URL's origin or one of `allowed_origins`; else the account \
            page."),
    ),
    responses(
        (status = 303, description = "To the provider's authorization endpoint (code flow, PKCE \
            S256, `state` and `nonce`), with the `__Host-lk_oidc` cookie that binds the sign-in \
            to this browser for ten minutes.",
            headers(("Location" = String), ("Set-Cookie" = String))),
        (status = 400, description = "`oidc_failed`: the provider cannot be reached.",
            content((ErrorBody = "application/json"), (String = "text/html"))),
        (status = 404, description = "`not_found`: no such provider.", content((ErrorBody = "application/json"), (String = "text/html"))),
    ),
)]
pub(super) async fn start(
    State(state): State<AppState>,
    jar: CookieJar,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<StartQuery>, QueryRejection>,
) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let return_to = crate::pages::return_to::allowed(&state.settings, query.return_to.as_deref());
    let started = match provider_of(&state, path) {
        Ok(provider) => start_flow(&state, jar, &provider, return_to.clone(), None).await,
        Err(err) => Err(err),
    };
    match started {
        Ok((jar, url)) => (jar, crate::pages::render::see_other(url.as_str())).into_response(),
        Err(err) => refused(&state, err, return_to),
    }
}

/// Starting a sign-in or a link: the authorization URL, and the jar with the sealed cookie.
pub(crate) async fn start_flow(
    state: &AppState,
    jar: CookieJar,
    provider: &Provider,
    return_to: Option<String>,
    link: Option<LinkTo>,
) -> Result<(CookieJar, url::Url), ApiError> {
    let expires_at = state.clock.now() + crate::clock::millis(pending::TTL);
    let redirect = redirect_uri(state, provider)?;
    let (url, pending) = state
        .oidc
        .begin(provider, redirect, return_to, link, expires_at)
        .await
        .map_err(|f| failed(provider, f))?;
    let sealed = pending.seal(state.keys.kek())?;
    Ok((
        cookies::set_oidc(jar, state.settings.cookie_secure, sealed),
        url,
    ))
}

/// A refused start or callback: the login page with the error (the JSON error without pages).
fn refused(state: &AppState, err: ApiError, return_to: Option<String>) -> Response {
    match state.settings.pages {
        true => crate::pages::auth::oidc_refused(state, &err, return_to),
        false => err.into_response(),
    }
}

/// The provider's answer.
#[utoipa::path(
    get,
    path = "/auth/oidc/{provider}/callback",
    operation_id = "oidc_callback",
    tag = "sessions",
    params(
        ("provider" = String, Path, description = "A configured provider's `id`."),
        ("code" = Option<String>, Query, description = "The authorization code."),
        ("state" = Option<String>, Query, description = "The `state` of the start, which must \
            match the browser's cookie."),
        ("iss" = Option<String>, Query, description = "The issuer of the answer (RFC 9207); \
            when sent, it must be the provider's."),
        ("error" = Option<String>, Query, description = "The provider's refusal."),
    ),
    responses(
        (status = 303, description = "Signed in (`amr` `[\"oidc\"]`, `aal` 1; an account is \
            created for a provider account that no user has, whose address the provider verified \
            and no account has): \
            both session cookies set, the OIDC cookie cleared, to `return_to`. After a link, \
            to `return_to` with no new session.",
            headers(("Location" = String), ("Set-Cookie" = String))),
        (status = 200, description = "The account has a second factor: the challenge page (with \
            the pages off, `mfa_required` with an `mfa_token` for `POST /auth/mfa/verify`); no \
            session yet.", content((String = "text/html"), (MfaChallengeBody = "application/json"))),
        (status = 400, description = "`oidc_failed`: no or another browser's sign-in (the \
            cookie), a wrong `state` or `iss`, the provider's refusal, a code that does not \
            exchange (replayed, expired), an ID token that does not verify (signature, issuer, \
            audience, authorized party, expiry, nonce), no address (or, for a new account, one the \
            provider did not verify), a disabled account; \
            nothing is written.", content((ErrorBody = "application/json"), (String = "text/html"))),
        (status = 401, description = "`unauthenticated`: a link whose session ended.",
            content((ErrorBody = "application/json"), (String = "text/html"))),
        (status = 404, description = "`not_found`: no such provider.", content((ErrorBody = "application/json"), (String = "text/html"))),
        (status = 409, description = "`email_taken`: an account has the provider's address and \
            no identity of this provider: sign in to it and link the provider. `conflict`: a \
            link of a provider account that is another user's, or (library mode) the \
            application's hook refused the new account.", content((ErrorBody = "application/json"), (String = "text/html"))),
        (status = 429, response = RateLimited),
    ),
)]
pub(super) async fn callback(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<CallbackQuery>, QueryRejection>,
) -> Response {
    let secure = state.settings.cookie_secure;
    let sealed = cookies::oidc_pending(&jar, secure);
    // Whatever happens now, the started sign-in is over: its cookie goes.
    let jar = cookies::clear_oidc(jar, secure);
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let provider = match provider_of(&state, path) {
        Ok(provider) => provider,
        Err(err) => return (jar, refused(&state, err, None)).into_response(),
    };
    let now = state.clock.now();
    let kek = state.keys.kek();
    let Some(pending) = sealed.and_then(|s| Pending::open(kek, &provider.id, &s, now)) else {
        let err = failed(&provider, "no live sign-in cookie of this provider");
        return (jar, refused(&state, err, None)).into_response();
    };
    let return_to = pending.return_to.clone();
    match callback_flow(&state, &client, jar.clone(), &provider, &query, &pending).await {
        Ok(Callback::Session(jar)) => {
            let to = crate::pages::auth::destination(return_to.as_deref());
            (jar, crate::pages::render::see_other(to)).into_response()
        }
        Ok(Callback::Linked) => {
            let to = return_to.unwrap_or_else(|| "/account/security?notice=identity_linked".into());
            (jar, crate::pages::render::see_other(&to)).into_response()
        }
        Ok(Callback::MfaRequired(body)) => match state.settings.pages {
            true => {
                let page = crate::pages::mfa::challenge_page(&state, &body, return_to);
                (jar, page).into_response()
            }
            false => (jar, Json(super::login::LoginBody::MfaRequired(body))).into_response(),
        },
        Err(err) => (jar, refused(&state, err, return_to)).into_response(),
    }
}

enum Callback {
    Session(CookieJar),
    MfaRequired(MfaChallengeBody),
    Linked,
}

/// The callback use case, once the cookie is opened: see the module docs.
#[tracing::instrument(name = "oidc_callback", skip_all, fields(provider = %provider.id))]
async fn callback_flow(
    state: &AppState,
    client: &ClientInfo,
    jar: CookieJar,
    provider: &Provider,
    query: &CallbackQuery,
    pending: &Pending,
) -> Result<Callback, ApiError> {
    let redirect = redirect_uri(state, provider)?;
    let verified = state
        .oidc
        .finish(provider, redirect, query, pending, &state.clock)
        .await
        .map_err(|f| failed(provider, f))?;
    let identity = NewIdentity {
        id: Uuid::now_v7(),
        provider: provider.id.clone(),
        subject: verified.subject.clone(),
        email: verified.email.clone(),
    };
    if let Some(to) = pending.link {
        return link_flow(state, client, to, identity).await;
    }
    let known =
        store::identities::find(state.store.reader(), &provider.id, &verified.subject).await?;
    let to = match known {
        Some(found) => SignInTo::Existing(store::parse_id(&found.user_id)?),
        None => new_account(state, client, provider, &verified).await?,
    };
    let user_id = match &to {
        SignInTo::Existing(id) => *id,
        SignInTo::New(rows) => rows.user_id,
    };
    crate::telemetry::record_user(user_id);
    let now = state.clock.now();
    let mut prepared = session::prepare(state, client, now);
    prepared.rows.sign_in = SignIn::Oidc;
    // Prepared for every sign-in, used only for an account with a second factor.
    let mfa_token = tokens::new_opaque();
    let challenge = NewChallenge {
        token_hash: tokens::hash_opaque(Purpose::MfaChallenge, &mfa_token),
        expires_at: crate::mfa::challenge::expires_at(now),
    };
    // Between the checks and the transaction: where an unlink, a disable or another account's
    // signup with the address can commit (the transaction re-checks them all).
    failpoint!("oidc.callback.after_check");
    let new = NewOidcSignIn {
        identity,
        to,
        session: prepared.rows.clone(),
        challenge,
        actor: client.actor(Some(user_id), Some(prepared.rows.id)),
        now,
    };
    let account = match state.store.oidc_sign_in(new).await? {
        OidcSignIn::Opened { account, created } => {
            if created {
                state.metrics.signups.inc();
            }
            account
        }
        OidcSignIn::MfaRequired => {
            Metrics::outcome(&state.metrics.logins, "mfa_required");
            let body = MfaChallengeBody::of(state, user_id, &mfa_token).await?;
            return Ok(Callback::MfaRequired(body));
        }
        OidcSignIn::Stale => return Err(failed(provider, "unlinked or disabled meanwhile")),
        OidcSignIn::EmailTaken => return Err(ApiError::EmailTaken),
        OidcSignIn::Refused(refused) => return Err(refused.into()),
    };
    Metrics::outcome(&state.metrics.logins, "success");
    let (jar, _) = session::issue(state, jar, account, &prepared.opened(), now)?;
    Ok(Callback::Session(jar))
}

/// The account for a provider account that no user has (see `account_without_password`), with
/// the provider's `name` as its display name.
///
/// Only for an address the provider vouches for (`email_verified`): an account made from an
/// address nobody proved would be the pre-account takeover the other way round (whoever claims
/// your address at some provider creates the account; you later reset its password and use it,
/// and the stranger's identity still signs in). An address that an account has is
/// `email_taken`: the provider's word does not prove the existing account.
async fn new_account(
    state: &AppState,
    client: &ClientInfo,
    provider: &Provider,
    verified: &Verified,
) -> Result<SignInTo, ApiError> {
    let raw = verified.email.as_deref().unwrap_or_default();
    // The reason without the address (logs carry no addresses).
    let email = Email::parse(raw)
        .map_err(|problem| failed(provider, format_args!("the provider's address {problem}")))?;
    if store::users::email_taken(state.store.reader(), &email).await? {
        return Err(ApiError::EmailTaken);
    }
    if !verified.email_verified {
        let reason = "a new account's address is not verified by the provider";
        return Err(failed(provider, reason));
    }
    let display_name = verified
        .name
        .as_deref()
        .and_then(|n| crate::domain::DisplayName::parse(n).ok().flatten());
    let rows = account_without_password(state, client, email, display_name, Source::Oidc).await?;
    Ok(SignInTo::New(Box::new(rows)))
}

async fn link_flow(
    state: &AppState,
    client: &ClientInfo,
    to: LinkTo,
    identity: NewIdentity,
) -> Result<Callback, ApiError> {
    let session = SessionRef {
        user_id: to.user_id,
        session_id: to.session_id,
    };
    let new = NewOidcLink {
        session,
        identity,
        actor: client.actor(Some(to.user_id), Some(to.session_id)),
        now: state.clock.now(),
    };
    match state.store.link_identity(new).await? {
        OidcLink::Linked | OidcLink::AlreadyLinked => Ok(Callback::Linked),
        OidcLink::OtherUser => Err(ApiError::Conflict),
        OidcLink::SessionGone => Err(ApiError::Unauthenticated),
    }
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// Where the browser goes once linked; else the security page.
    pub(crate) return_to: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct LinkBody {
    /// Send the browser there (a top-level navigation): the provider's authorization endpoint.
    authorization_url: String,
}

/// Starts linking a provider's account to the signed-in user.
#[utoipa::path(
    post,
    path = "/auth/oidc/{provider}/link",
    operation_id = "oidc_link",
    tag = "sessions",
    params(("provider" = String, Path, description = "A configured provider's `id`.")),
    request_body(content = LinkRequest, description = "May be left out altogether."),
    security(("bearer" = []), ("access_cookie" = [])),
    responses(
        (status = 200, description = "The provider's authorization URL, and the \
            `__Host-lk_oidc` cookie: the browser that goes there with it links the provider's \
            account that signs in to this user (its callback answers 409 `conflict` when that \
            account is another user's).", body = LinkBody,
            headers(("Set-Cookie" = String))),
        (status = 400, description = "`oidc_failed`: the provider cannot be reached.",
            body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, response = MfaRequired),
        (status = 404, description = "`not_found`: no such provider.", body = ErrorBody),
    ),
)]
pub(super) async fn link(
    State(state): State<AppState>,
    auth: Authenticated,
    jar: CookieJar,
    path: Result<Path<String>, PathRejection>,
    ApiJsonOrEmpty(req): ApiJsonOrEmpty<LinkRequest>,
) -> Result<Response, ApiError> {
    let provider = provider_of(&state, path)?;
    let return_to = crate::pages::return_to::allowed(&state.settings, req.return_to.as_deref());
    let (jar, url) = link_start_flow(&state, auth, jar, &provider, return_to).await?;
    let body = LinkBody {
        authorization_url: url.into(),
    };
    Ok((jar, Json(body)).into_response())
}

/// Starting a link, for the JSON endpoint and the security page.
pub(crate) async fn link_start_flow(
    state: &AppState,
    auth: Authenticated,
    jar: CookieJar,
    provider: &Provider,
    return_to: Option<String>,
) -> Result<(CookieJar, url::Url), ApiError> {
    // A new way into an account with a second factor, only from a session that used it.
    require_second_factor(state, auth).await?;
    let to = LinkTo {
        user_id: auth.user_id,
        session_id: auth.session_id,
    };
    start_flow(state, jar, provider, return_to, Some(to)).await
}

/// An identity: a provider's account that signs in to this user.
#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityView {
    #[schema(format = "uuid")]
    pub(crate) id: String,
    /// The provider's `id`.
    pub(crate) provider: String,
    /// The provider's name, as configured (the provider itself when it is no longer
    /// configured).
    pub(crate) provider_name: String,
    /// The address the provider last gave for it.
    #[schema(required = true)]
    pub(crate) email: Option<String>,
    #[schema(format = DateTime)]
    pub(crate) created_at: String,
    #[schema(format = DateTime, required = true)]
    pub(crate) last_login_at: Option<String>,
}

impl IdentityView {
    pub(crate) fn of(state: &AppState, i: StoredIdentity) -> IdentityView {
        let provider_name = state
            .oidc
            .provider(&i.provider)
            .map_or_else(|| i.provider.clone(), |p| p.name.clone());
        IdentityView {
            id: i.id,
            provider: i.provider,
            provider_name,
            email: i.email,
            created_at: rfc3339(i.created_at),
            last_login_at: i.last_login_at.map(rfc3339),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct IdentityList {
    identities: Vec<IdentityView>,
}

/// The signed-in user's identities, oldest first.
#[utoipa::path(
    get,
    path = "/auth/identities",
    operation_id = "list_identities",
    tag = "sessions",
    security(("bearer" = []), ("access_cookie" = [])),
    responses(
        (status = 200, description = "The provider accounts that sign in to this user.",
            body = IdentityList),
        (status = 401, response = Unauthenticated),
    ),
)]
pub(super) async fn list(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<IdentityList>, ApiError> {
    let identities = list_flow(&state, auth).await?;
    Ok(Json(IdentityList { identities }))
}

pub(crate) async fn list_flow(
    state: &AppState,
    auth: Authenticated,
) -> Result<Vec<IdentityView>, ApiError> {
    let stored = store::identities::list(state.store.reader(), auth.user_id).await?;
    Ok(stored
        .into_iter()
        .map(|i| IdentityView::of(state, i))
        .collect())
}

/// Unlinks one of the signed-in user's identities.
#[utoipa::path(
    delete,
    path = "/auth/identities/{id}",
    operation_id = "unlink_identity",
    tag = "sessions",
    security(("bearer" = []), ("access_cookie" = [])),
    params(("id" = String, Path, format = "uuid", description = "An identity id from \
        GET /auth/identities.")),
    responses(
        (status = 204, description = "Unlinked: that provider account signs in no more (its \
            sessions stay; revoke them with the sessions API)."),
        (status = 401, response = Unauthenticated),
        (status = 403, response = MfaRequired),
        (status = 404, description = "`not_found`: the caller has no identity with this id.",
            body = ErrorBody),
        (status = 409, description = "`conflict`: it is the account's last way to sign in (no \
            password, no passkey, no other identity): set a password first (forgot-password).",
            body = ErrorBody),
    ),
)]
pub(super) async fn unlink(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = path.ok().map(|Path(id)| id);
    unlink_flow(&state, auth, &client, id.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Unlinking, for the JSON endpoint and the security page. An id that names none of the
/// caller's identities (no UUID, another user's) is 404.
pub(crate) async fn unlink_flow(
    state: &AppState,
    auth: Authenticated,
    client: &ClientInfo,
    id: Option<&str>,
) -> Result<(), ApiError> {
    let id = id
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or(ApiError::NotFound)?;
    require_second_factor(state, auth).await?;
    let session = SessionRef {
        user_id: auth.user_id,
        session_id: auth.session_id,
    };
    let actor = client.actor(Some(auth.user_id), Some(auth.session_id));
    let now = state.clock.now();
    match state.store.unlink_identity(session, id, actor, now).await? {
        OidcUnlink::Unlinked => Ok(()),
        OidcUnlink::NotFound => Err(ApiError::NotFound),
        OidcUnlink::LastWay => Err(ApiError::Conflict),
        OidcUnlink::SessionGone => Err(ApiError::Unauthenticated),
    }
}
