//! Passkeys (see `crate::mfa::passkey`): registration and removal for a signed-in user, and the
//! passwordless login with a discoverable credential. A passkey answering a login challenge goes
//! through `POST /auth/mfa/verify` (`routes::mfa`), with a ceremony started here.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use axum_extra::extract::CookieJar;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, DiscoverableKey, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Webauthn,
};

use super::account::require_second_factor;
use super::body::SessionBody;
use super::openapi::responses::{MfaRequired, RateLimited, Unauthenticated};
use super::session;
use crate::app::AppState;
use crate::clock::rfc3339;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiJsonOrEmpty, Authenticated, ClientInfo};
use crate::failpoint::failpoint;
use crate::limits::Limit;
use crate::metrics::Metrics;
use crate::mfa::challenge;
use crate::mfa::passkey::{self, CeremonyKind};
use crate::store::flows::SessionRef;
use crate::store::flows::passkeys::{
    NewPasskeyLogin, NewRegistration, PasskeyLogin, PasskeyUse, Registration,
};
use crate::store::passkeys::{self as stored, NewCeremony, NewPasskey, StoredPasskey};
use crate::store::{self, mfa as stored_mfa};
use crate::tokens::{self, Purpose, SignIn};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/passkeys", get(list))
        .route("/auth/passkeys/{id}", delete(remove))
        .route("/auth/passkeys/register/start", post(register_start))
        .route("/auth/passkeys/register/finish", post(register_finish))
        .route("/auth/passkeys/login/start", post(login_start))
        .route("/auth/passkeys/login/finish", post(login_finish))
}

/// The relying party, or 404 when the public URL cannot be one (an IP address: WebAuthn needs a
/// domain name).
pub(crate) fn relying_party(state: &AppState) -> Result<&Webauthn, ApiError> {
    state.passkeys.as_deref().ok_or(ApiError::NotFound)
}

/// The options for `navigator.credentials.create()` or `.get()`, and the ceremony's handle.
#[derive(Serialize, ToSchema)]
pub struct CeremonyBody {
    /// Send it back with the authenticator's answer: it names this ceremony, works once and
    /// lives five minutes.
    ceremony: String,
    /// The WebAuthn options in their JSON form (binary fields base64url), for
    /// `PublicKeyCredential.parseCreationOptionsFromJSON` or `parseRequestOptionsFromJSON`.
    #[serde(rename = "publicKey")]
    #[schema(value_type = Object)]
    public_key: Value,
}

/// Stores a ceremony and answers its options.
async fn start_ceremony(
    state: &AppState,
    kind: CeremonyKind,
    (user_id, mfa_token_hash): (Option<Uuid>, Option<String>),
    public_key: Value,
    ceremony_state: Value,
) -> Result<Json<CeremonyBody>, ApiError> {
    let token = tokens::new_opaque();
    let now = state.clock.now();
    let new = NewCeremony {
        token_hash: tokens::hash_opaque(Purpose::PasskeyCeremony, &token),
        kind,
        user_id,
        mfa_token_hash,
        state: ceremony_state.to_string(),
        expires_at: passkey::expires_at(now),
    };
    state.store.start_passkey_ceremony(new, now).await?;
    Ok(Json(CeremonyBody {
        ceremony: token.expose_secret().to_owned(),
        public_key,
    }))
}

/// A ceremony of `kind` that is still open, by its handle; `token_invalid` otherwise.
pub(crate) async fn open_ceremony(
    state: &AppState,
    handle: &SecretString,
    kind: CeremonyKind,
) -> Result<(String, stored::Ceremony), ApiError> {
    let hash = tokens::hash_opaque(Purpose::PasskeyCeremony, handle);
    let found = stored::find_ceremony(state.store.reader(), &hash).await?;
    match found.filter(|c| c.open(kind, state.clock.now())) {
        Some(ceremony) => Ok((hash, ceremony)),
        None => Err(ApiError::TokenInvalid),
    }
}

fn json<T: Serialize>(value: &T) -> Result<Value, ApiError> {
    Ok(serde_json::to_value(value).map_err(anyhow::Error::from)?)
}

fn restore<T: serde::de::DeserializeOwned>(stored: &str) -> Result<T, ApiError> {
    Ok(serde_json::from_str(stored).map_err(anyhow::Error::from)?)
}

/// The authenticator's answer as the browser's `toJSON()` gives it; 422 on `credential` when it
/// is not one.
fn credential<T: serde::de::DeserializeOwned>(value: Option<Value>) -> Result<T, ApiError> {
    let value = value.ok_or_else(|| ApiError::field("credential", "is required"))?;
    serde_json::from_value(value)
        .map_err(|_| ApiError::field("credential", "is not a WebAuthn credential"))
}

fn ceremony_handle(handle: Option<SecretString>) -> Result<SecretString, ApiError> {
    match handle {
        Some(h) if !h.expose_secret().is_empty() && h.expose_secret().len() <= 128 => Ok(h),
        _ => Err(ApiError::field("ceremony", "is required")),
    }
}

/// Starts adding a passkey to the signed-in account.
#[utoipa::path(
    post,
    path = "/auth/passkeys/register/start",
    tag = "passkeys",
    security(("bearer" = []), ("access_cookie" = [])),
    responses(
        (status = 200, description = "The creation options (a discoverable credential with \
            user verification; the account's passkeys excluded) and the ceremony.",
            body = CeremonyBody),
        (status = 401, response = Unauthenticated),
        (status = 403, response = MfaRequired),
        (status = 404, description = "`not_found`: passkeys are off (the public URL is an IP \
            address).", body = ErrorBody),
        (status = 409, description = "`conflict`: the account has ten passkeys.",
            body = ErrorBody),
        (status = 429, response = RateLimited),
    ),
)]
pub(super) async fn register_start(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
) -> Result<Json<CeremonyBody>, ApiError> {
    register_start_flow(&state, auth, &client).await
}

/// Starting a registration, for the JSON endpoint and the account page.
pub(crate) async fn register_start_flow(
    state: &AppState,
    auth: Authenticated,
    client: &ClientInfo,
) -> Result<Json<CeremonyBody>, ApiError> {
    let rp = relying_party(state)?;
    state
        .limits
        .check(Limit::Passkey, &client.rate_key())
        .await?;
    // An account that has a passkey or TOTP already adds one only from a session that signed in
    // with it: a session stolen with the password alone cannot plant a way back in.
    require_second_factor(state, auth).await?;
    let own = store::users::find_own_credentials(state.store.reader(), auth.user_id)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    let existing = stored::list(state.store.reader(), auth.user_id).await?;
    if existing.len() >= passkey::MAX_PER_USER as usize {
        return Err(ApiError::Conflict);
    }
    let exclude = existing
        .iter()
        .map(|p| restore::<Passkey>(&p.passkey).map(|k| k.cred_id().clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let (ccr, registration) = rp
        .start_passkey_registration(auth.user_id, &own.email, &own.email, Some(exclude))
        .map_err(|err| anyhow::anyhow!("passkey registration options: {err}"))?;
    let options = passkey::require_discoverable(json(&ccr.public_key)?);
    let who = (Some(auth.user_id), None);
    let kind = CeremonyKind::Register;
    start_ceremony(state, kind, who, options, json(&registration)?).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterFinishRequest {
    /// The `ceremony` of the start's answer.
    #[schema(value_type = String, required = true)]
    pub(crate) ceremony: Option<SecretString>,
    /// The new credential, as `PublicKeyCredential.toJSON()` gives it.
    #[schema(value_type = Object, required = true)]
    pub(crate) credential: Option<Value>,
    /// A name to tell it apart (1 to 64 characters); "Passkey" when left out.
    #[schema(max_length = 64)]
    pub(crate) name: Option<String>,
}

/// A registered passkey.
#[derive(Serialize, ToSchema)]
pub struct PasskeyView {
    #[schema(format = "uuid")]
    pub(crate) id: String,
    pub(crate) name: String,
    #[schema(format = DateTime)]
    pub(crate) created_at: String,
    /// When it last signed in; `null` before its first use.
    #[schema(format = DateTime, required = true)]
    pub(crate) last_used_at: Option<String>,
}

impl From<StoredPasskey> for PasskeyView {
    fn from(p: StoredPasskey) -> PasskeyView {
        PasskeyView {
            id: p.id,
            name: p.name,
            created_at: rfc3339(p.created_at),
            last_used_at: p.last_used_at.map(rfc3339),
        }
    }
}

/// Finishes adding a passkey: the authenticator's answer to the ceremony.
#[utoipa::path(
    post,
    path = "/auth/passkeys/register/finish",
    tag = "passkeys",
    request_body = RegisterFinishRequest,
    security(("bearer" = []), ("access_cookie" = [])),
    responses(
        (status = 201, description = "The passkey is added.", body = PasskeyView),
        (status = 400, description = "`token_invalid`: the ceremony is unknown, spent, expired, \
            of another kind or another user's (start again).", body = ErrorBody),
        (status = 401, response = Unauthenticated),
        (status = 403, response = MfaRequired),
        (status = 404, description = "`not_found`: passkeys are off.", body = ErrorBody),
        (status = 409, description = "`conflict`: this authenticator's credential is \
            registered already, or the account has ten passkeys.", body = ErrorBody),
        (status = 422, description = "`validation_failed`: no credential, a credential that \
            does not answer the ceremony (wrong challenge or origin, no user verification), or \
            a bad name.", body = ErrorBody),
    ),
)]
pub(super) async fn register_finish(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
    ApiJson(req): ApiJson<RegisterFinishRequest>,
) -> Result<Response, ApiError> {
    let view = register_finish_flow(&state, auth, &client, req).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Finishing a registration, for the JSON endpoint and the account page.
#[tracing::instrument(name = "passkey_register", skip_all, fields(user_id = %auth.user_id))]
pub(crate) async fn register_finish_flow(
    state: &AppState,
    auth: Authenticated,
    client: &ClientInfo,
    req: RegisterFinishRequest,
) -> Result<PasskeyView, ApiError> {
    let rp = relying_party(state)?;
    require_second_factor(state, auth).await?;
    let name = passkey::parse_name(req.name.as_deref()).map_err(|m| ApiError::field("name", m))?;
    let handle = ceremony_handle(req.ceremony)?;
    let answer: RegisterPublicKeyCredential = credential(req.credential)?;
    let (ceremony_hash, ceremony) = open_ceremony(state, &handle, CeremonyKind::Register).await?;
    if ceremony.user_id != Some(auth.user_id.to_string()) {
        return Err(ApiError::TokenInvalid);
    }
    let registration: PasskeyRegistration = restore(&ceremony.state)?;
    // A credential registered already (the account's own, which the options excluded, or
    // another account's) is a conflict, whatever else is wrong with the answer; the unique
    // constraint decides the race of two registrations of one credential.
    let id = passkey::encode_id(answer.raw_id.as_slice());
    if stored::find_by_credential(state.store.reader(), &id)
        .await?
        .is_some()
    {
        return Err(ApiError::Conflict);
    }
    let key = rp
        .finish_passkey_registration(&answer, &registration)
        .map_err(|_| ApiError::field("credential", "does not answer this ceremony"))?;
    let now = state.clock.now();
    let new = NewPasskey {
        id: Uuid::now_v7(),
        credential_id: passkey::credential_id(&key),
        name,
        passkey: json(&key)?.to_string(),
    };
    let (id, view_name) = (new.id, new.name.clone());
    let outcome = state
        .store
        .add_passkey(NewRegistration {
            ceremony_hash,
            session: SessionRef {
                user_id: auth.user_id,
                session_id: auth.session_id,
            },
            passkey: new,
            actor: client.actor(Some(auth.user_id), Some(auth.session_id)),
            now,
        })
        .await?;
    match outcome {
        Registration::Added => Ok(PasskeyView {
            id: id.to_string(),
            name: view_name,
            created_at: rfc3339(now),
            last_used_at: None,
        }),
        Registration::CeremonyGone => Err(ApiError::TokenInvalid),
        Registration::SessionGone => Err(ApiError::Unauthenticated),
        Registration::AlreadyRegistered | Registration::TooMany => Err(ApiError::Conflict),
    }
}

#[derive(Serialize, ToSchema)]
pub struct PasskeyList {
    passkeys: Vec<PasskeyView>,
}

/// The caller's passkeys, oldest first.
#[utoipa::path(
    get,
    path = "/auth/passkeys",
    operation_id = "list_passkeys",
    tag = "passkeys",
    security(("bearer" = []), ("access_cookie" = [])),
    responses(
        (status = 200, description = "The passkeys of the user.", body = PasskeyList),
        (status = 401, response = Unauthenticated),
    ),
)]
pub(super) async fn list(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<PasskeyList>, ApiError> {
    let passkeys = list_flow(&state, auth).await?;
    Ok(Json(PasskeyList { passkeys }))
}

/// The caller's passkeys, for the JSON endpoint and the account page.
pub(crate) async fn list_flow(
    state: &AppState,
    auth: Authenticated,
) -> Result<Vec<PasskeyView>, ApiError> {
    let rows = stored::list(state.store.reader(), auth.user_id).await?;
    Ok(rows.into_iter().map(PasskeyView::from).collect())
}

/// Removes one of the caller's passkeys. Another user's passkey, or none, is 404.
#[utoipa::path(
    delete,
    path = "/auth/passkeys/{id}",
    operation_id = "remove_passkey",
    tag = "passkeys",
    security(("bearer" = []), ("access_cookie" = [])),
    params(("id" = String, Path, format = "uuid", description = "A passkey id from \
        GET /auth/passkeys.")),
    responses(
        (status = 204, description = "The passkey is removed; it signs in no more."),
        (status = 401, response = Unauthenticated),
        (status = 403, response = MfaRequired),
        (status = 404, description = "`not_found`: the caller has no passkey with this id.",
            body = ErrorBody),
    ),
)]
pub(super) async fn remove(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    // An id that is no UUID, or not even UTF-8 once percent-decoded, names no passkey.
    let id = path.ok().map(|Path(id)| id);
    remove_flow(&state, auth, &client, id.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removing a passkey, for the JSON endpoint and the security page. An id that names none of
/// the caller's passkeys (no UUID, another user's) is 404.
pub(crate) async fn remove_flow(
    state: &AppState,
    auth: Authenticated,
    client: &ClientInfo,
    id: Option<&str>,
) -> Result<(), ApiError> {
    let id = id
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or(ApiError::NotFound)?;
    require_second_factor(state, auth).await?;
    let actor = client.actor(Some(auth.user_id), Some(auth.session_id));
    let now = state.clock.now();
    match state
        .store
        .remove_passkey(auth.user_id, id, actor, now)
        .await?
    {
        true => Ok(()),
        false => Err(ApiError::NotFound),
    }
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct LoginStartRequest {
    /// The `mfa_token` of a login that answered `mfa_required`: the passkey is then the second
    /// factor of that account (finish with `POST /auth/mfa/verify`). Without it, a passwordless
    /// login with any discoverable passkey (finish with `POST /auth/passkeys/login/finish`).
    #[schema(value_type = Option<String>)]
    pub(crate) mfa_token: Option<SecretString>,
}

/// Starts a login with a passkey.
#[utoipa::path(
    post,
    path = "/auth/passkeys/login/start",
    tag = "passkeys",
    request_body(content = LoginStartRequest, description = "May be left out altogether: a \
        `POST` with no body (and no `Content-Type`) starts a passwordless login."),
    responses(
        (status = 200, description = "The request options and the ceremony: with no \
            `allowCredentials` for a passwordless login, with the account's passkeys for a \
            second factor.", body = CeremonyBody),
        (status = 400, description = "`token_invalid`: the `mfa_token` is unknown, used, \
            expired or out of attempts.", body = ErrorBody),
        (status = 404, description = "`not_found`: passkeys are off, or the `mfa_token`'s \
            account has no passkey.", body = ErrorBody),
        (status = 429, response = RateLimited),
    ),
)]
pub(super) async fn login_start(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJsonOrEmpty(req): ApiJsonOrEmpty<LoginStartRequest>,
) -> Result<Json<CeremonyBody>, ApiError> {
    login_start_flow(&state, &client, req).await
}

/// Starting a passkey login, for the JSON endpoint and the login page.
pub(crate) async fn login_start_flow(
    state: &AppState,
    client: &ClientInfo,
    req: LoginStartRequest,
) -> Result<Json<CeremonyBody>, ApiError> {
    let rp = relying_party(state)?;
    state
        .limits
        .check(Limit::Passkey, &client.rate_key())
        .await?;
    let Some(mfa_token) = req.mfa_token else {
        let (rcr, auth) = rp
            .start_discoverable_authentication()
            .map_err(|err| anyhow::anyhow!("passkey request options: {err}"))?;
        let rcr = passkey::without_mediation(rcr);
        let kind = CeremonyKind::Login;
        return start_ceremony(
            state,
            kind,
            (None, None),
            json(&rcr.public_key)?,
            json(&auth)?,
        )
        .await;
    };
    let token_hash = tokens::hash_opaque(Purpose::MfaChallenge, &mfa_token);
    let now = state.clock.now();
    let challenge = stored_mfa::find_challenge(state.store.reader(), &token_hash)
        .await?
        .filter(|c| c.open(now, challenge::MAX_FAILURES))
        .ok_or(ApiError::TokenInvalid)?;
    let user_id = store::parse_id(&challenge.user_id)?;
    let keys = stored::list(state.store.reader(), user_id)
        .await?
        .iter()
        .map(|p| restore::<Passkey>(&p.passkey))
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(ApiError::NotFound);
    }
    let (rcr, auth) = rp
        .start_passkey_authentication(&keys)
        .map_err(|err| anyhow::anyhow!("passkey request options: {err}"))?;
    let rcr = passkey::without_mediation(rcr);
    let who = (Some(user_id), Some(token_hash));
    let kind = CeremonyKind::SecondFactor;
    start_ceremony(state, kind, who, json(&rcr.public_key)?, json(&auth)?).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginFinishRequest {
    /// The `ceremony` of the start's answer.
    #[schema(value_type = String, required = true)]
    pub(crate) ceremony: Option<SecretString>,
    /// The assertion, as `PublicKeyCredential.toJSON()` gives it.
    #[schema(value_type = Object, required = true)]
    pub(crate) credential: Option<Value>,
}

/// Finishes a passwordless login: the session and its cookies.
#[utoipa::path(
    post,
    path = "/auth/passkeys/login/finish",
    tag = "passkeys",
    request_body = LoginFinishRequest,
    responses(
        (status = 200, description = "The session (`amr` `[\"hwk\"]`, `aal` 2). Sets both \
            session cookies.", body = SessionBody,
            headers(("Set-Cookie" = String, description = "`__Host-lk_access` and \
                `__Secure-lk_refresh`."))),
        (status = 400, description = "`token_invalid`: the ceremony is unknown, spent, expired \
            or of another kind (start again).", body = ErrorBody),
        (status = 401, description = "`invalid_credentials`: the passkey is unknown, removed \
            or its account disabled, or the assertion does not verify.", body = ErrorBody),
        (status = 404, description = "`not_found`: passkeys are off.", body = ErrorBody),
        (status = 422, description = "`validation_failed`: no ceremony or credential.",
            body = ErrorBody),
    ),
)]
pub(super) async fn login_finish(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
    ApiJson(req): ApiJson<LoginFinishRequest>,
) -> Result<Response, ApiError> {
    let (jar, body) = login_finish_flow(&state, &client, jar, req).await?;
    Ok((StatusCode::OK, jar, Json(body)).into_response())
}

/// Finishing a passwordless login, for the JSON endpoint and the login page.
#[tracing::instrument(name = "passkey_login", skip_all, fields(user_id = tracing::field::Empty))]
pub(crate) async fn login_finish_flow(
    state: &AppState,
    client: &ClientInfo,
    jar: CookieJar,
    req: LoginFinishRequest,
) -> Result<(CookieJar, SessionBody), ApiError> {
    let rp = relying_party(state)?;
    let handle = ceremony_handle(req.ceremony)?;
    let answer: PublicKeyCredential = credential(req.credential)?;
    let (ceremony_hash, ceremony) = open_ceremony(state, &handle, CeremonyKind::Login).await?;
    let discoverable: DiscoverableAuthentication = restore(&ceremony.state)?;
    let now = state.clock.now();
    // The credential names its user (the user handle) and itself; both must be what is stored.
    let (user_handle, raw_id) = rp
        .identify_discoverable_authentication(&answer)
        .map_err(|_| ApiError::InvalidCredentials)?;
    let stored = stored::find_by_credential(state.store.reader(), &passkey::encode_id(raw_id))
        .await?
        .filter(|p| p.user_id == user_handle.to_string());
    let Some(stored) = stored else {
        return Err(failed(state, client, None, now).await);
    };
    let user_id = store::parse_id(&stored.user_id)?;
    crate::telemetry::record_user(user_id);
    let mut key: Passkey = restore(&stored.passkey)?;
    let Ok(result) = rp.finish_discoverable_authentication(
        &answer,
        discoverable,
        &[DiscoverableKey::from(&key)],
    ) else {
        return Err(failed(state, client, Some(user_id), now).await);
    };
    key.update_credential(&result);
    let used = use_of(ceremony_hash, stored, &key)?;
    let mut prepared = session::prepare(state, client, now);
    prepared.rows.sign_in = SignIn::Passkey;
    let new = NewPasskeyLogin {
        user_id,
        used,
        actor: client.actor(Some(user_id), Some(prepared.rows.id)),
        session: prepared.rows.clone(),
        now,
    };
    // Between the verification and the transaction: where a disable, the passkey's removal or a
    // login with the same credential can commit (the transaction re-checks them).
    failpoint!("passkeys.login.after_verify");
    // One store call: the ceremony spent, the passkey's use, the session, the last login, the
    // audit event and `user.login`, or nothing.
    let account = match state.store.passkey_login(new).await? {
        PasskeyLogin::Opened(account) => account,
        PasskeyLogin::CeremonyGone => return Err(ApiError::TokenInvalid),
        PasskeyLogin::Stale => return Err(failed(state, client, Some(user_id), now).await),
    };
    Metrics::outcome(&state.metrics.logins, "success");
    session::issue(state, jar, account, &prepared.opened(), now)
}

/// The use of the stored passkey `row` to record: its credential as read, and as the assertion
/// updated it (`key`).
fn use_of(
    ceremony_hash: String,
    row: StoredPasskey,
    key: &Passkey,
) -> Result<PasskeyUse, ApiError> {
    Ok(PasskeyUse {
        ceremony_hash,
        passkey_id: row.id,
        updated: json(key)?.to_string(),
        seen: row.passkey,
    })
}

/// A passkey that did not sign in: the failed login's audit event, and 401.
async fn failed(state: &AppState, client: &ClientInfo, user: Option<Uuid>, now: i64) -> ApiError {
    Metrics::outcome(&state.metrics.logins, "failure");
    match state
        .store
        .record_failed_login(client.actor(user, None), now)
        .await
    {
        Ok(()) => ApiError::InvalidCredentials,
        Err(err) => err.into(),
    }
}

/// A passkey's assertion answering a login challenge (`POST /auth/mfa/verify`): checked against
/// the ceremony started for that challenge with its `mfa_token`; `None` when it does not verify.
pub(crate) async fn second_factor(
    state: &AppState,
    mfa_token_hash: &str,
    user_id: Uuid,
    handle: &SecretString,
    answer: Value,
) -> Result<Option<PasskeyUse>, ApiError> {
    let rp = relying_party(state)?;
    let answer: PublicKeyCredential = credential(Some(answer))?;
    let (ceremony_hash, ceremony) =
        open_ceremony(state, handle, CeremonyKind::SecondFactor).await?;
    let ours = ceremony.mfa_token_hash.as_deref() == Some(mfa_token_hash)
        && ceremony.user_id == Some(user_id.to_string());
    if !ours {
        return Err(ApiError::TokenInvalid);
    }
    let authentication: PasskeyAuthentication = restore(&ceremony.state)?;
    let Ok(result) = rp.finish_passkey_authentication(&answer, &authentication) else {
        return Ok(None);
    };
    let rows = stored::list(state.store.reader(), user_id).await?;
    for row in rows {
        let mut key: Passkey = restore(&row.passkey)?;
        if key.update_credential(&result).is_some() {
            return Ok(Some(use_of(ceremony_hash, row, &key)?));
        }
    }
    // Removed since the ceremony started.
    Ok(None)
}
