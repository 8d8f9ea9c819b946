//! The forgot-password and reset pages.
//!
//! GET /password/reset?token=T only looks the token up, to show the form or say that the link no
//! longer works: a mail scanner that follows the link spends nothing. The form's POST spends it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::auth::fail_page;
use super::form::{EMAIL, Form, NEW_PASSWORD, PageForm, PageQuery, live_token_owner};
use super::render::see_other;
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::ClientInfo;
use crate::routes::password::{ForgotRequest, ResetRequest, forgot_flow, reset_flow};
use crate::tokens::Purpose;

/// The context of the forgot-password page.
#[derive(Serialize)]
pub(super) struct ForgotPage {
    pub form: Form,
    /// The "check your email" view, the same for every address.
    pub sent: bool,
}

/// GET /password/forgot, and after a POST `?notice=reset_sent`: the "check your email" view.
pub async fn forgot_page(State(state): State<AppState>, query: PageQuery) -> Response {
    let page = ForgotPage {
        form: Form::new(&state.pages, &[EMAIL]),
        sent: query.notice.as_deref() == Some("reset_sent"),
    };
    state
        .pages
        .render("forgot.html", StatusCode::OK, None, &page)
}

#[derive(Deserialize)]
pub struct ForgotFields {
    email: Option<String>,
}

/// POST /password/forgot: the JSON API's request, then always the same "check your email" page.
pub async fn forgot(
    State(state): State<AppState>,
    client: ClientInfo,
    PageForm(fields): PageForm<ForgotFields>,
) -> Response {
    let req = ForgotRequest {
        email: fields.email.clone(),
    };
    match forgot_flow(&state, &client, req).await {
        Ok(()) => see_other("/password/forgot?notice=reset_sent"),
        Err(err) => {
            let pages = &state.pages;
            let form = Form::new(pages, &[EMAIL])
                .keep("email", fields.email.as_deref())
                .fail(pages, &err, &[]);
            let page = ForgotPage { form, sent: false };
            fail_page(pages, "forgot.html", &err, &page)
        }
    }
}

/// The context of the reset page: with a live token, its form; without, the "link no longer
/// works" view.
#[derive(Serialize)]
pub(super) struct ResetPage {
    pub form: Form,
    pub token: Option<String>,
    /// The account's address, for the text and for password managers.
    pub email: String,
}

fn reset_context(form: Form, token: &str, owner: Option<String>) -> ResetPage {
    ResetPage {
        form,
        token: owner.as_ref().map(|_| token.to_owned()),
        email: owner.unwrap_or_default(),
    }
}

/// GET /password/reset?token=T: the form while the token is live (400 otherwise); never spends
/// it.
pub async fn reset_page(State(state): State<AppState>, query: PageQuery) -> Response {
    let token = query.token.as_deref().unwrap_or("");
    let owner = match live_token_owner(&state, Purpose::PasswordReset, token).await {
        Ok(owner) => owner,
        Err(err) => return state.pages.error(&err),
    };
    let status = match owner {
        Some(_) => StatusCode::OK,
        None => StatusCode::BAD_REQUEST,
    };
    let form = Form::new(&state.pages, &[NEW_PASSWORD]);
    let page = reset_context(form, token, owner);
    state.pages.render("reset.html", status, None, &page)
}

#[derive(Deserialize)]
pub struct ResetFields {
    token: Option<SecretString>,
    password: Option<SecretString>,
}

/// POST /password/reset: the JSON API's reset (the token spent, every session revoked, this
/// browser's cookies cleared), then 303 to the login page.
pub async fn reset(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
    PageForm(fields): PageForm<ResetFields>,
) -> Response {
    let token = fields
        .token
        .as_ref()
        .map(|t| t.expose_secret().to_owned())
        .unwrap_or_default();
    let req = ResetRequest {
        token: fields.token,
        password: fields.password,
    };
    let err = match reset_flow(&state, &client, jar, req).await {
        Ok(jar) => return (jar, see_other("/login?notice=password_reset")).into_response(),
        Err(err) => err,
    };
    let pages = &state.pages;
    // The token is still live unless this was about it: show the form again for it.
    let owner = match &err {
        ApiError::TokenInvalid => None,
        _ => live_token_owner(&state, Purpose::PasswordReset, &token)
            .await
            .ok()
            .flatten(),
    };
    let form = Form::new(pages, &[NEW_PASSWORD]).fail(pages, &err, &[]);
    let page = reset_context(form, &token, owner);
    fail_page(pages, "reset.html", &err, &page)
}
