//! POST /auth/signup: user, profile, first session, audit event and the verification email (in
//! the outbox) in ONE transaction; tokens and cookies only after it committed.
//!
//! Signups are limited per client IP (`limits::Limit::Signup`), counted before the password is
//! hashed, so a flood from one address costs no Argon2 work; a full hashing queue answers 503.
//!
//! With `conceal_existing_accounts`, signup no longer tells whether an address has an account
//! (its 409 `email_taken` is otherwise the one documented exception to enumeration resistance):
//! both cases answer 202 `{}` after the same hash. A new address gets its account and its
//! verification email but no session, since the other case cannot have one; its owner logs in
//! next. An existing address gets nothing written but an email to its owner.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use axum_extra::extract::CookieJar;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::body::SessionBody;
use super::openapi::responses::{Overloaded, RateLimited};
use super::password::stored_email;
use super::session;
use crate::app::AppState;
use crate::clock::Millis;
use crate::domain::{DisplayName, Email, Metadata, NewAccount};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ClientInfo};
use crate::failpoint::failpoint;
use crate::hooks::{SignupAttempt, Source};
use crate::limits::Limit;
use crate::mail::Kind;
use crate::mail::links::{self, LinkKind};
use crate::password::imported::UNUSABLE;
use crate::store;
use crate::store::flows::accounts::NewAccountRows;
use crate::store::flows::signup::{NewSignup, Signup};

pub fn router() -> Router<AppState> {
    Router::new().route("/auth/signup", post(signup))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    /// Trimmed; unique case-insensitively.
    #[schema(value_type = String, required = true, format = Email, max_length = 254)]
    pub(crate) email: Option<String>,
    /// 8 to 128 characters (after Unicode NFKC); not a common or easily guessed password.
    #[schema(value_type = String, required = true, format = Password, min_length = 8, max_length = 128)]
    pub(crate) password: Option<SecretString>,
    /// Trimmed, at most 100 characters, no control characters; blank or `null`: no name.
    #[schema(max_length = 100)]
    pub(crate) display_name: Option<String>,
    /// `profile.metadata`: a JSON object, valid against the operator's `profile_schema` (without
    /// one: at most 4 KiB). Absent or `null`: `{}`. Problems are 422 with `fields` keyed
    /// `metadata` or `metadata/<JSON pointer>`.
    #[schema(value_type = Option<Object>)]
    pub(crate) metadata: Option<serde_json::Value>,
}

/// The answer of a concealed signup (`conceal_existing_accounts`): `{}`, whatever the address.
#[derive(Serialize, ToSchema)]
#[schema(as = Empty)]
pub struct EmptyBody {}

/// Creates an account and its first session.
#[utoipa::path(
    post,
    path = "/auth/signup",
    tag = "sessions",
    request_body = SignupRequest,
    responses(
        (status = 201, description = "The account, its profile and its first session. Sets both \
            session cookies.", body = SessionBody,
            headers(("Set-Cookie" = String, description = "`__Host-lk_access` and \
                `__Secure-lk_refresh` (see the security schemes)."))),
        (status = 202, description = "Only with `conceal_existing_accounts`: `{}` for a new and a \
            taken address alike; a new account gets no session (its owner logs in next).",
            body = EmptyBody),
        (status = 409, description = "`email_taken`: an account with this address exists \
            (not with `conceal_existing_accounts`). `conflict`: in library mode, the embedding \
            application's hook refused the account for a conflict with its own data.",
            body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = Overloaded),
    ),
)]
pub(super) async fn signup(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
    ApiJson(req): ApiJson<SignupRequest>,
) -> Result<Response, ApiError> {
    Ok(match signup_flow(&state, &client, jar, req).await? {
        Signed::Session(jar, body) => (StatusCode::CREATED, jar, Json(*body)).into_response(),
        Signed::Concealed => (StatusCode::ACCEPTED, Json(EmptyBody {})).into_response(),
    })
}

/// How a signup ended, for the JSON endpoint and the signup page.
pub(crate) enum Signed {
    /// The account and its first session: the cookies are in the jar.
    Session(CookieJar, Box<SessionBody>),
    /// `conceal_existing_accounts`: the same answer for a new and a taken address, no session.
    Concealed,
}

/// The signup use case, shared by `POST /auth/signup` and the signup page.
#[tracing::instrument(name = "signup", skip_all, fields(user_id = tracing::field::Empty))]
pub(crate) async fn signup_flow(
    state: &AppState,
    client: &ClientInfo,
    jar: CookieJar,
    req: SignupRequest,
) -> Result<Signed, ApiError> {
    let parsed = NewAccount::parse(
        req.email.as_deref(),
        req.password.as_ref(),
        req.display_name.as_deref(),
    );
    let metadata = match &req.metadata {
        Some(value) => state.metadata.parse(value),
        None => Ok(Metadata::empty()),
    };
    // Every problem at once: the account's fields and the metadata's.
    let (account, metadata) = match (parsed, metadata) {
        (Ok(account), Ok(metadata)) => (account, metadata),
        (parsed, metadata) => {
            let mut errors = parsed.err().unwrap_or_default();
            errors.extend(metadata.err().unwrap_or_default());
            return Err(ApiError::Validation(errors));
        }
    };
    state
        .limits
        .check(Limit::Signup, &client.rate_key())
        .await?;
    // The application's say (library mode), before any hashing or writing.
    let attempt = SignupAttempt {
        email: account.email.as_str(),
        display_name: account.display_name.as_ref().map(|n| n.as_str()),
        metadata: metadata.value(),
        source: Source::Signup,
    };
    state.hooks.before_signup(&attempt).await?;
    // Hash before the transaction opens: no connection or lock is held while Argon2 runs.
    let password_hash = state.hasher.hash(account.password.into_secret()).await?;
    let user_id = Uuid::now_v7();
    let now = state.clock.now();
    let conceal = state.settings.conceal_existing_accounts;
    // Concealment: no session, or the answer would tell a new address from a taken one.
    let session = (!conceal).then(|| session::prepare(state, client, now));
    let verification = links::prepare(state, LinkKind::EmailVerification, &account.email, now)?;
    let new = NewSignup {
        user_id,
        throttle: links::throttle(state, Kind::EmailVerification, &account.email),
        email: account.email.clone(),
        password_hash,
        display_name: account.display_name,
        metadata,
        session: session.as_ref().map(|s| s.rows.clone()),
        verification,
        actor: client.actor(Some(user_id), session.as_ref().map(|s| s.rows.id)),
        now,
    };

    // One store call: user, profile, session, audit event and verification email, or nothing.
    let created = match state.store.signup(new).await? {
        Signup::Created(created) => created,
        Signup::EmailTaken if conceal => {
            account_exists(state, &account.email, now).await?;
            return Ok(Signed::Concealed);
        }
        Signup::EmailTaken => return Err(ApiError::EmailTaken),
        Signup::Refused(refused) => return Err(refused.into()),
    };
    crate::telemetry::record_user(user_id);
    state.metrics.signups.inc();
    state.mailer.wake();
    failpoint!("signup.after_commit");

    match session {
        Some(prepared) => {
            let (jar, body) = session::issue(state, jar, created, &prepared.opened(), now)?;
            Ok(Signed::Session(jar, Box::new(body)))
        }
        None => Ok(Signed::Concealed),
    }
}

/// Concealment, taken address: the same 202 as a new one; the owner hears of the attempt by
/// email (in a transaction of its own, the only write), the requester learns nothing.
async fn account_exists(state: &AppState, email: &Email, now: Millis) -> Result<(), ApiError> {
    // The address on file, not the one typed: they are equal only after normalization.
    if let Some(contact) = store::users::find_contact_by_email(state.store.reader(), email).await? {
        let on_file = stored_email(&contact.email)?;
        let notice = links::account_exists(state, &on_file)?;
        let throttle = links::throttle(state, Kind::AccountExists, &on_file);
        state
            .store
            .notify_account_exists(notice, throttle, now)
            .await?;
        state.mailer.wake();
    }
    Ok(())
}

/// The account a first sign-in without a password creates (a passwordless code, an OpenID
/// provider): a signup in every respect but the password. Its limit and the application's
/// `before_signup` hook run here, before any writing; `create_account` (with `account_created`)
/// runs in the sign-in's transaction. No password is stored (`UNUSABLE`: a reset sets one), and
/// the address is verified: the caller's proof of it is the code, or the provider's word.
pub(crate) async fn account_without_password(
    state: &AppState,
    client: &ClientInfo,
    email: Email,
    display_name: Option<DisplayName>,
    source: Source,
) -> Result<NewAccountRows, ApiError> {
    state
        .limits
        .check(Limit::Signup, &client.rate_key())
        .await?;
    let metadata = Metadata::empty();
    let attempt = SignupAttempt {
        email: email.as_str(),
        display_name: display_name.as_ref().map(|n| n.as_str()),
        metadata: metadata.value(),
        source,
    };
    state.hooks.before_signup(&attempt).await?;
    Ok(NewAccountRows {
        user_id: Uuid::now_v7(),
        email,
        password_hash: UNUSABLE.to_owned(),
        display_name,
        metadata,
        app_metadata: None,
        email_verified: true,
    })
}
