//! Passwordless sign-in pages: the login page's "email me a code" form, the code form that
//! follows it, and the emailed link's page.
//!
//! - POST /login/code: the JSON API's start, then always the same "check your email" view with
//!   the code form (the address in a hidden field).
//! - POST /login/code/verify: the JSON API's verification with the address and the code.
//! - GET /passwordless?token=T only looks the link up (mail scanners follow links) and shows a
//!   button; its POST spends the link.
//!
//! Success is a 303 with the session cookies; an account with a second factor gets the login's
//! challenge page.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum_extra::extract::CookieJar;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use super::auth::{destination, fail_page};
use super::form::{EMAIL, Form, PageForm, PageQuery, Spec};
use super::render::{Pages, see_other};
use super::{mfa, return_to};
use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::extract::ClientInfo;
use crate::routes::login::LoggedIn;
use crate::routes::passwordless::{StartRequest, VerifyRequest, start_flow, verify_flow};

/// The emailed code's field.
const CODE: Spec = ("code", "text", "one-time-code", true);

/// The context of the passwordless page, in one of its stages: `start` (the address form, after
/// a failed start), `code` (check your email, and the code form), `link` (the link's button), or
/// `invalid` (the link no longer works).
#[derive(Serialize)]
pub(super) struct PasswordlessPage {
    pub stage: &'static str,
    pub form: Form,
    /// The address the code was sent to (`code`), in a hidden field.
    pub email: Option<String>,
    /// The link's token (`link`), in a hidden field.
    pub token: Option<String>,
    pub return_to: Option<String>,
    pub return_query: String,
}

impl PasswordlessPage {
    pub(super) fn new(stage: &'static str, form: Form, return_to: Option<String>) -> Self {
        PasswordlessPage {
            stage,
            form,
            email: None,
            token: None,
            return_query: return_to::query(return_to.as_deref()),
            return_to,
        }
    }
}

pub(super) fn start_form(pages: &Pages) -> Form {
    Form::new(pages, &[EMAIL])
}

pub(super) fn code_form(pages: &Pages) -> Form {
    Form::new(pages, &[CODE]).relabel(pages, "code", "passwordless.code")
}

#[derive(Deserialize)]
pub struct StartFields {
    email: Option<String>,
    return_to: Option<String>,
}

/// POST /login/code: the JSON API's start, then the code form, the same for every address.
pub async fn start(
    State(state): State<AppState>,
    client: ClientInfo,
    PageForm(fields): PageForm<StartFields>,
) -> Response {
    let return_to = return_to::allowed(&state.settings, fields.return_to.as_deref());
    let pages = &state.pages;
    let req = StartRequest {
        email: fields.email.clone(),
    };
    match start_flow(&state, &client, req).await {
        Ok(()) => {
            let mut page = PasswordlessPage::new("code", code_form(pages), return_to);
            page.email = fields.email.map(|e| e.trim().to_owned());
            pages.render("passwordless.html", StatusCode::OK, None, &page)
        }
        Err(err) => {
            let form = start_form(pages)
                .keep("email", fields.email.as_deref())
                .fail(pages, &err, &[]);
            let page = PasswordlessPage::new("start", form, return_to);
            fail_page(pages, "passwordless.html", &err, &page)
        }
    }
}

#[derive(Deserialize)]
pub struct CodeFields {
    email: Option<String>,
    code: Option<String>,
    return_to: Option<String>,
}

/// POST /login/code/verify: the JSON API's verification of the address and code, then 303 with
/// the session cookies (or the second factor's page).
pub async fn verify_code(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
    PageForm(fields): PageForm<CodeFields>,
) -> Response {
    let return_to = return_to::allowed(&state.settings, fields.return_to.as_deref());
    let req = VerifyRequest {
        email: fields.email.clone(),
        code: fields.code.clone(),
        token: None,
    };
    let err = match verify_flow(&state, &client, jar, req).await {
        Ok(done) => return signed_in(&state, done, return_to),
        Err(err) => err,
    };
    let pages = &state.pages;
    let wrong = [(ErrorCode::TokenInvalid, "code", "code_invalid")];
    let form = code_form(pages).fail(pages, &err, &wrong);
    let mut page = PasswordlessPage::new("code", form, return_to);
    page.email = fields.email;
    fail_page(pages, "passwordless.html", &err, &page)
}

/// GET /passwordless?token=T: the link's button for a live link (looked up, not spent), or 400
/// with the "link no longer works" view.
pub async fn link_page(State(state): State<AppState>, query: PageQuery) -> Response {
    let pages = &state.pages;
    let token = query.token.unwrap_or_default();
    let live = match live_link(&state, &token).await {
        Ok(live) => live,
        Err(err) => return pages.error(&err),
    };
    let (stage, status) = match live {
        true => ("link", StatusCode::OK),
        false => ("invalid", StatusCode::BAD_REQUEST),
    };
    let mut page = PasswordlessPage::new(stage, Form::new(pages, &[]), None);
    page.token = live.then_some(token);
    pages.render("passwordless.html", status, None, &page)
}

/// Whether `token` is a live passwordless link: a read that spends nothing.
async fn live_link(state: &AppState, token: &str) -> Result<bool, ApiError> {
    // Longer than any token latchkey issues: not worth a lookup.
    if token.is_empty() || token.len() > 128 {
        return Ok(false);
    }
    let purpose = crate::tokens::Purpose::Passwordless;
    let hash = crate::tokens::hash_opaque(purpose, &SecretString::from(token));
    let now = state.clock.now();
    let found = crate::store::passwordless::find_by_token(state.store.reader(), &hash, now).await?;
    Ok(found.is_some())
}

#[derive(Deserialize)]
pub struct LinkFields {
    token: Option<SecretString>,
}

/// POST /passwordless: the JSON API's verification of the link, then 303 with the session
/// cookies (or the second factor's page).
pub async fn verify_link(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
    PageForm(fields): PageForm<LinkFields>,
) -> Response {
    let token = fields.token.as_ref().map(|t| t.expose_secret().to_owned());
    let req = VerifyRequest {
        email: None,
        code: None,
        token: fields.token,
    };
    let err = match verify_flow(&state, &client, jar, req).await {
        Ok(done) => return signed_in(&state, done, None),
        Err(err) => err,
    };
    let pages = &state.pages;
    // A used or expired link shows the "link no longer works" view; a 429 or 503, the button.
    let dead = matches!(err, ApiError::TokenInvalid | ApiError::Validation(_));
    let form = Form::new(pages, &[]).fail(pages, &err, &[]);
    let stage = if dead { "invalid" } else { "link" };
    let mut page = PasswordlessPage::new(stage, form, None);
    page.token = token.filter(|_| !dead);
    fail_page(pages, "passwordless.html", &err, &page)
}

fn signed_in(state: &AppState, done: LoggedIn, return_to: Option<String>) -> Response {
    match done {
        LoggedIn::Session(jar, _) => {
            (jar, see_other(destination(return_to.as_deref()))).into_response()
        }
        LoggedIn::MfaRequired(challenge) => mfa::challenge_page(state, &challenge, return_to),
    }
}
