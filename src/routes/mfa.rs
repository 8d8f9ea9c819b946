//! The second factor's endpoints (see `crate::mfa`): TOTP enrollment, confirmation and removal
//! for a signed-in user, and `POST /auth/mfa/verify`, which completes a login challenge.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use axum_extra::extract::CookieJar;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::account::{CheckedPassword, check_password};
use super::body::SessionBody;
use super::openapi::responses::{MfaRequired, Overloaded, RateLimited};
use super::password::stored_email;
use super::{passkeys, session};
use crate::app::AppState;
use crate::error::{ApiError, ErrorBody, FieldErrors};
use crate::extract::{ApiJson, Authenticated, ClientInfo};
use crate::failpoint::failpoint;
use crate::metrics::Metrics;
use crate::mfa::{challenge, recovery, totp};
use crate::store::audit::Actor;
use crate::store::flows::mfa::{NewVerification, Proof, Verification};
use crate::store::{self, mfa as stored};
use crate::tokens::{self, Purpose, SignIn};
use crate::{cookies, device};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/mfa/totp/enroll", post(enroll))
        .route("/auth/mfa/totp/confirm", post(confirm))
        .route("/auth/mfa/totp", delete(disable))
        .route("/auth/mfa/verify", post(verify))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    /// The account's current password.
    #[schema(value_type = String, required = true, format = Password)]
    pub(crate) password: Option<SecretString>,
}

#[derive(Serialize, ToSchema)]
pub struct EnrollmentBody {
    /// The secret in base32 (RFC 4648, no padding), for typing into an authenticator app.
    pub(crate) secret: String,
    /// `otpauth://totp/…` with the secret, SHA1, 6 digits and 30 s: what the QR code holds.
    pub(crate) otpauth_uri: String,
    /// The QR code of `otpauth_uri`, an SVG document.
    pub(crate) qr_svg: String,
}

/// Starts TOTP enrollment: a new secret, not in force until confirmed with a first code.
#[utoipa::path(
    post,
    path = "/auth/mfa/totp/enroll",
    tag = "mfa",
    request_body = PasswordRequest,
    security(("bearer" = []), ("access_cookie" = [])),
    responses(
        (status = 200, description = "The secret, its URI and QR code. A pending enrollment is \
            replaced.", body = EnrollmentBody),
        (status = 401, description = "`invalid_credentials`: wrong password; `unauthenticated`.",
            body = ErrorBody),
        (status = 403, response = MfaRequired),
        (status = 409, description = "`conflict`: TOTP is already on (remove it first).",
            body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = Overloaded),
    ),
)]
pub(super) async fn enroll(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
    ApiJson(req): ApiJson<PasswordRequest>,
) -> Result<Json<EnrollmentBody>, ApiError> {
    enroll_flow(&state, auth, &client, req).await.map(Json)
}

/// The enrollment use case, shared by the JSON endpoint and the security page.
pub(crate) async fn enroll_flow(
    state: &AppState,
    auth: Authenticated,
    client: &ClientInfo,
    req: PasswordRequest,
) -> Result<EnrollmentBody, ApiError> {
    let checked = reenter_password(state, auth, client, req.password).await?;
    let owner = checked.email.as_str().to_owned();
    let secret = totp::new_secret();
    let sealed = totp::seal(state.keys.kek(), auth.user_id, &secret)?;
    let now = state.clock.now();
    if !state.store.start_totp(auth.user_id, sealed, now).await? {
        return Err(ApiError::Conflict);
    }
    enrollment_body(state, &secret, &owner)
}

/// What an enrollment shows: the secret, its URI and its QR code.
fn enrollment_body(
    state: &AppState,
    secret: &secrecy::SecretBox<Vec<u8>>,
    owner: &str,
) -> Result<EnrollmentBody, ApiError> {
    let issuer = state.settings.public_url.host_str().unwrap_or("latchkey");
    let enrollment = totp::enrollment(secret, issuer, owner);
    Ok(EnrollmentBody {
        qr_svg: totp::qr_svg(&enrollment.uri)?,
        secret: enrollment.secret_base32,
        otpauth_uri: enrollment.uri,
    })
}

/// Where the user's TOTP stands, for the security page: on, off, or an enrollment waiting for
/// its first code (shown again, so a reload of the page does not lose it).
pub(crate) enum TotpState {
    Off,
    Pending(EnrollmentBody),
    On,
}

pub(crate) async fn totp_state(
    state: &AppState,
    auth: Authenticated,
) -> Result<TotpState, ApiError> {
    let Some(found) = stored::find_totp(state.store.reader(), auth.user_id).await? else {
        return Ok(TotpState::Off);
    };
    if found.confirmed_at.is_some() {
        return Ok(TotpState::On);
    }
    let own = store::users::find_own_credentials(state.store.reader(), auth.user_id)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    let secret = totp::open(state.keys.kek(), auth.user_id, &found.sealed_secret)?;
    Ok(TotpState::Pending(enrollment_body(
        state, &secret, &own.email,
    )?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    /// The authenticator's current 6-digit code.
    #[schema(value_type = String, required = true, example = "123456")]
    pub(crate) code: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RecoveryCodesBody {
    /// Ten one-time codes for when the authenticator is lost; shown this once.
    pub(crate) recovery_codes: Vec<String>,
}

/// Confirms TOTP enrollment with a first code: from now on logins need a second factor.
#[utoipa::path(
    post,
    path = "/auth/mfa/totp/confirm",
    tag = "mfa",
    request_body = CodeRequest,
    security(("bearer" = []), ("access_cookie" = [])),
    responses(
        (status = 200, description = "TOTP is on; the recovery codes, shown once.",
            body = RecoveryCodesBody),
        (status = 401, description = "`invalid_credentials`: not the current code; \
            `unauthenticated`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no enrollment to confirm.", body = ErrorBody),
        (status = 409, description = "`conflict`: TOTP is already on.", body = ErrorBody),
    ),
)]
pub(super) async fn confirm(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
    ApiJson(req): ApiJson<CodeRequest>,
) -> Result<Json<RecoveryCodesBody>, ApiError> {
    confirm_flow(&state, auth, &client, req).await.map(Json)
}

/// The confirmation use case, shared by the JSON endpoint and the security page.
pub(crate) async fn confirm_flow(
    state: &AppState,
    auth: Authenticated,
    client: &ClientInfo,
    req: CodeRequest,
) -> Result<RecoveryCodesBody, ApiError> {
    let code = required_code(req.code)?;
    let pending = stored::find_totp(state.store.reader(), auth.user_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if pending.confirmed_at.is_some() {
        return Err(ApiError::Conflict);
    }
    let secret = totp::open(state.keys.kek(), auth.user_id, &pending.sealed_secret)?;
    let now = state.clock.now();
    let Some(step) = totp::matching_step(&secret, &code, now) else {
        return Err(ApiError::InvalidCredentials);
    };
    let codes = recovery::generate();
    let actor = client.actor(Some(auth.user_id), Some(auth.session_id));
    let step = i64::try_from(step).map_err(anyhow::Error::from)?;
    let (user, hashes) = (auth.user_id, recovery::hashes(&codes));
    let sealed = pending.sealed_secret;
    if !state
        .store
        .confirm_totp(user, sealed, step, hashes, actor, now)
        .await?
    {
        // Replaced, confirmed or removed by a request of its own meanwhile.
        return Err(ApiError::Conflict);
    }
    Ok(RecoveryCodesBody {
        recovery_codes: codes.iter().map(|c| c.expose_secret().to_owned()).collect(),
    })
}

/// Turns TOTP off (the recovery codes and open login challenges go with it).
#[utoipa::path(
    delete,
    path = "/auth/mfa/totp",
    tag = "mfa",
    request_body = PasswordRequest,
    security(("bearer" = []), ("access_cookie" = [])),
    responses(
        (status = 204, description = "TOTP is off."),
        (status = 401, description = "`invalid_credentials`: wrong password; `unauthenticated`.",
            body = ErrorBody),
        (status = 403, response = MfaRequired),
        (status = 404, description = "`not_found`: TOTP is not on.", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = Overloaded),
    ),
)]
pub(super) async fn disable(
    State(state): State<AppState>,
    auth: Authenticated,
    client: ClientInfo,
    ApiJson(req): ApiJson<PasswordRequest>,
) -> Result<StatusCode, ApiError> {
    disable_flow(&state, auth, &client, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The removal use case, shared by the JSON endpoint and the security page.
pub(crate) async fn disable_flow(
    state: &AppState,
    auth: Authenticated,
    client: &ClientInfo,
    req: PasswordRequest,
) -> Result<(), ApiError> {
    let checked = reenter_password(state, auth, client, req.password).await?;
    let actor = checked.actor;
    let now = state.clock.now();
    match state.store.remove_totp(auth.user_id, actor, now).await? {
        true => Ok(()),
        false => Err(ApiError::NotFound),
    }
}

/// The answer of a login that needs a second factor: no session yet, no cookies.
#[derive(Serialize, ToSchema)]
pub struct MfaChallengeBody {
    /// Always `true`.
    mfa_required: bool,
    /// For `POST /auth/mfa/verify` only: single-use, bound to the account, useless elsewhere.
    mfa_token: String,
    /// `totp` and `recovery_code`, and `passkey` when the account has one.
    methods: Vec<&'static str>,
    /// Seconds the `mfa_token` lives.
    expires_in: i64,
}

impl MfaChallengeBody {
    /// The `mfa_token`, for the login page's next form.
    pub(crate) fn token(&self) -> &str {
        &self.mfa_token
    }

    /// Whether a passkey can answer it.
    pub(crate) fn passkey(&self) -> bool {
        self.methods.contains(&"passkey")
    }

    /// The challenge of `user_id`'s login: a passkey among its methods only where one is
    /// registered (and passkeys are on).
    pub(crate) async fn of(
        state: &AppState,
        user_id: uuid::Uuid,
        mfa_token: &SecretString,
    ) -> Result<MfaChallengeBody, ApiError> {
        let passkey = state.passkeys.is_some()
            && store::passkeys::count(state.store.reader(), user_id).await? > 0;
        Ok(MfaChallengeBody::new(mfa_token, passkey))
    }

    pub(crate) fn new(mfa_token: &SecretString, passkey: bool) -> MfaChallengeBody {
        let mut methods = vec!["totp", "recovery_code"];
        if passkey {
            methods.push("passkey");
        }
        MfaChallengeBody {
            mfa_required: true,
            mfa_token: mfa_token.expose_secret().to_owned(),
            methods,
            expires_in: challenge::TTL_SECS,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The `mfa_token` of the login's answer.
    #[schema(value_type = String, required = true)]
    pub(crate) mfa_token: Option<SecretString>,
    /// The authenticator's current code; or else `recovery_code`.
    #[schema(value_type = Option<String>)]
    pub(crate) code: Option<String>,
    /// One of the recovery codes (each works once); or else `code`.
    #[schema(value_type = Option<String>)]
    pub(crate) recovery_code: Option<SecretString>,
    /// With `credential`, instead of a code: the `ceremony` that `POST
    /// /auth/passkeys/login/start` gave for this `mfa_token`.
    #[schema(value_type = Option<String>)]
    pub(crate) ceremony: Option<SecretString>,
    /// With `ceremony`: the passkey's assertion, as `PublicKeyCredential.toJSON()` gives it.
    #[schema(value_type = Option<Object>)]
    pub(crate) credential: Option<serde_json::Value>,
}

/// Completes a login that answered `mfa_required`: the session and its cookies.
#[utoipa::path(
    post,
    path = "/auth/mfa/verify",
    tag = "mfa",
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "The session (`amr` `[\"pwd\", \"otp\"]`, or \
            `[\"otp\", \"mfa\"]` after a passwordless code; `aal` 2). Sets both session cookies.",
            body = SessionBody,
            headers(("Set-Cookie" = String, description = "`__Host-lk_access` and \
                `__Secure-lk_refresh`, and `__Host-lk_device`."))),
        (status = 400, description = "`token_invalid`: the `mfa_token` is unknown, used, expired \
            or out of attempts (log in again).", body = ErrorBody),
        (status = 401, description = "`invalid_credentials`: a wrong, reused or expired code.",
            body = ErrorBody),
        (status = 429, response = RateLimited),
    ),
)]
pub(super) async fn verify(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
    ApiJson(req): ApiJson<VerifyRequest>,
) -> Result<Response, ApiError> {
    let (jar, body) = verify_flow(&state, &client, jar, req).await?;
    Ok((StatusCode::OK, jar, Json(body)).into_response())
}

/// The verification use case, shared by `POST /auth/mfa/verify` and the login page.
#[tracing::instrument(name = "mfa_verify", skip_all, fields(user_id = tracing::field::Empty))]
pub(crate) async fn verify_flow(
    state: &AppState,
    client: &ClientInfo,
    jar: CookieJar,
    req: VerifyRequest,
) -> Result<(CookieJar, SessionBody), ApiError> {
    let (token, answer) = parse_verify(req)?;
    let token_hash = tokens::hash_opaque(Purpose::MfaChallenge, &token);
    let now = state.clock.now();
    let challenge = stored::find_challenge(state.store.reader(), &token_hash)
        .await?
        .filter(|c| c.open(now, challenge::MAX_FAILURES))
        .ok_or(ApiError::TokenInvalid)?;
    let user_id = store::parse_id(&challenge.user_id)?;
    crate::telemetry::record_user(user_id);
    let own = store::users::find_own_credentials(state.store.reader(), user_id)
        .await?
        .ok_or(ApiError::TokenInvalid)?;
    let email = stored_email(&own.email)?;
    // A code is a password by another name: the same per-IP and per-account failure limits
    // (this browser's own, with its device cookie), counted before it is checked.
    let secure = state.settings.cookie_secure;
    let device = cookies::device_token(&jar, secure)
        .and_then(|value| device::verify(&state.device_secret, &email, &own.password_hash, &value));
    let attempt = state
        .limits
        .login_attempt(client, &email, device.as_deref())
        .await?;
    let actor = client.actor(Some(user_id), None);
    let proof = match &answer {
        Answer::Code(code) => {
            let factor = stored::find_totp(state.store.reader(), user_id).await?;
            let factor = factor.filter(|t| t.confirmed_at.is_some());
            let step = match factor {
                Some(t) => {
                    let secret = totp::open(state.keys.kek(), user_id, &t.sealed_secret)?;
                    totp::matching_step(&secret, code, now)
                        .and_then(|step| i64::try_from(step).ok())
                        .filter(|step| *step > t.last_step)
                }
                None => None,
            };
            step.map(|step| Proof::Totp { step })
        }
        Answer::Recovery(code) => Some(Proof::RecoveryCode {
            hash: recovery::hash(code.expose_secret()),
        }),
        Answer::Passkey(handle, answer) => {
            let answer = answer.clone();
            passkeys::second_factor(state, &token_hash, user_id, handle, answer)
                .await?
                .map(Proof::Passkey)
        }
    };
    let Some(proof) = proof else {
        return Err(wrong_code(state, token_hash, actor, now).await);
    };
    let mut prepared = session::prepare(state, client, now);
    // After a password, or after a passwordless code (the challenge says which), a code or a
    // passkey.
    let passkey = matches!(proof, Proof::Passkey(_));
    prepared.rows.sign_in = SignIn::parse(&challenge.first_factor).with_second_factor(passkey);
    let new = NewVerification {
        token_hash: token_hash.clone(),
        user_id,
        credential: challenge.credential,
        proof,
        session: prepared.rows.clone(),
        refund: attempt.refund(),
        actor: client.actor(Some(user_id), Some(prepared.rows.id)),
        now,
    };
    // Between the checks and the transaction: where a password change, a reset, a disable or the
    // factor's removal can commit (the transaction re-checks them all).
    failpoint!("mfa.verify.after_check");
    // One store call: the challenge spent, the code used up, the session, the last login and the
    // audit event, or nothing.
    let account = match state.store.verify_mfa(new).await? {
        Verification::Opened(account) => account,
        Verification::Replayed => return Err(wrong_code(state, token_hash, actor, now).await),
        Verification::Stale => return Err(ApiError::TokenInvalid),
    };
    Metrics::outcome(&state.metrics.logins, "success");
    failpoint!("mfa.verify.after_commit");
    let device = device::issue(&state.device_secret, &email, &own.password_hash);
    let jar = cookies::set_device(jar, secure, device);
    session::issue(state, jar, account, &prepared.opened(), now)
}

/// A wrong (or replayed) code: counted against the challenge, in a transaction of its own.
async fn wrong_code(state: &AppState, token_hash: String, actor: Actor, now: i64) -> ApiError {
    Metrics::outcome(&state.metrics.logins, "failure");
    match state.store.record_mfa_failure(token_hash, actor, now).await {
        Ok(()) => ApiError::InvalidCredentials,
        Err(err) => err.into(),
    }
}

enum Answer {
    Code(String),
    Recovery(SecretString),
    /// A passkey's ceremony handle and assertion.
    Passkey(SecretString, serde_json::Value),
}

fn parse_verify(req: VerifyRequest) -> Result<(SecretString, Answer), ApiError> {
    let mut errors = FieldErrors::new();
    let token = req
        .mfa_token
        .filter(|t| !t.expose_secret().is_empty() && t.expose_secret().len() <= 128);
    if token.is_none() {
        errors.insert("mfa_token".into(), "is required".into());
    }
    let mut answers = Vec::new();
    if let Some(code) = req.code {
        answers.push(("code", code.trim().is_empty(), Answer::Code(code)));
    }
    if let Some(code) = req.recovery_code {
        let blank = code.expose_secret().trim().is_empty();
        answers.push(("recovery_code", blank, Answer::Recovery(code)));
    }
    match (req.ceremony, req.credential) {
        (None, None) => {}
        (Some(handle), Some(credential)) => {
            let blank = handle.expose_secret().is_empty() || handle.expose_secret().len() > 128;
            answers.push(("ceremony", blank, Answer::Passkey(handle, credential)));
        }
        _ => {
            let message = "send ceremony and credential together";
            errors.insert("credential".into(), message.into());
        }
    }
    let answer = match answers.pop() {
        _ if !answers.is_empty() => {
            let message = "send one of code, recovery_code or a passkey's credential";
            errors.insert("code".into(), message.into());
            None
        }
        Some((field, true, _)) => {
            errors.insert(field.into(), "is required".into());
            None
        }
        Some((_, false, answer)) => Some(answer),
        None if errors.is_empty() => {
            let message = "is required (or recovery_code, or a passkey's ceremony and credential)";
            errors.insert("code".into(), message.into());
            None
        }
        None => None,
    };
    match (token, answer) {
        (Some(token), Some(answer)) if errors.is_empty() => Ok((token, answer)),
        _ => Err(ApiError::Validation(errors)),
    }
}

fn required_code(code: Option<String>) -> Result<String, ApiError> {
    match code {
        Some(code) if !code.trim().is_empty() => Ok(code),
        _ => Err(ApiError::field("code", "is required")),
    }
}

/// The re-entered password of a signed-in user (enrolling or removing a factor), checked like
/// at login (`routes::account::check_password`, which also asks for a session that signed in
/// with the account's other factors, if it has any); right, its rate-limit counts are taken
/// back.
async fn reenter_password(
    state: &AppState,
    auth: Authenticated,
    client: &ClientInfo,
    password: Option<SecretString>,
) -> Result<CheckedPassword, ApiError> {
    let mut checked = check_password(state, auth, client, password).await?;
    if let Some(refund) = checked.refund.take() {
        state.store.refund_attempt(refund).await?;
    }
    Ok(checked)
}
