//! The login's second step: after a right password for an account with a second factor, the
//! login page answers this one (no cookie yet), whose forms send the authenticator's code or a
//! recovery code to `POST /login/mfa`, the JSON API's verification.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum_extra::extract::CookieJar;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use super::auth::{destination, fail_page};
use super::form::{Form, PageForm, RECOVERY_CODE, TOTP_CODE};
use super::render::{Pages, see_other};
use super::return_to;
use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::extract::ClientInfo;
use crate::routes::mfa::{MfaChallengeBody, VerifyRequest, verify_flow};

/// The context of the challenge page.
#[derive(Serialize)]
pub(super) struct MfaPage {
    pub form: Form,
    pub recovery: Form,
    /// The login's `mfa_token`, carried in a hidden field (the page is `no-store`, and sends no
    /// referrer).
    pub mfa_token: String,
    pub return_to: Option<String>,
    pub return_query: String,
    /// Whether a passkey can answer the challenge (the page's script then offers it).
    pub passkey: bool,
}

impl MfaPage {
    pub(super) fn new(pages: &Pages, mfa_token: &str, return_to: Option<String>) -> MfaPage {
        MfaPage {
            form: Form::new(pages, &[TOTP_CODE]),
            recovery: Form::new(pages, &[RECOVERY_CODE]),
            mfa_token: mfa_token.to_owned(),
            return_query: return_to::query(return_to.as_deref()),
            return_to,
            passkey: false,
        }
    }
}

/// The answer of the login page to a right password for an account with a second factor.
pub(crate) fn challenge_page(
    state: &AppState,
    challenge: &MfaChallengeBody,
    return_to: Option<String>,
) -> Response {
    let mut page = MfaPage::new(&state.pages, challenge.token(), return_to);
    page.passkey = challenge.passkey();
    state.pages.render("mfa.html", StatusCode::OK, None, &page)
}

#[derive(Deserialize)]
pub struct MfaFields {
    mfa_token: Option<SecretString>,
    code: Option<String>,
    recovery_code: Option<SecretString>,
    return_to: Option<String>,
}

/// POST /login/mfa: the JSON API's verification, then 303 with the session cookies.
pub async fn verify(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
    PageForm(fields): PageForm<MfaFields>,
) -> Response {
    let return_to = return_to::allowed(&state.settings, fields.return_to.as_deref());
    let token = fields
        .mfa_token
        .as_ref()
        .map(|t| t.expose_secret().to_owned())
        .unwrap_or_default();
    // Each form sends one of the two; an empty field of the other form is not an answer.
    let recovery = fields
        .recovery_code
        .filter(|c| !c.expose_secret().trim().is_empty());
    let by_recovery = recovery.is_some();
    let req = VerifyRequest {
        mfa_token: fields.mfa_token,
        code: fields.code.filter(|c| !c.trim().is_empty() && !by_recovery),
        recovery_code: recovery,
        ceremony: None,
        credential: None,
    };
    let err = match verify_flow(&state, &client, jar, req).await {
        Ok((jar, _)) => {
            return (jar, see_other(destination(return_to.as_deref()))).into_response();
        }
        // Spent, expired or out of attempts: the login starts over.
        Err(ApiError::TokenInvalid) => {
            let to = return_to::link("/login", Some("mfa_expired"), return_to.as_deref());
            return see_other(&to);
        }
        Err(err) => err,
    };
    let pages = &state.pages;
    let mut page = MfaPage::new(pages, &token, return_to);
    let wrong = |field| [(ErrorCode::InvalidCredentials, field, "wrong_code")];
    match by_recovery {
        true => page.recovery = page.recovery.fail(pages, &err, &wrong("recovery_code")),
        false => page.form = page.form.fail(pages, &err, &wrong("code")),
    }
    fail_page(pages, "mfa.html", &err, &page)
}
