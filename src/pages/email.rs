//! The email verification page and the email change's confirmation page.
//!
//! GET /email/verify?token=T (and GET /email/change?token=T) shows a confirm button and spends
//! nothing: mail scanners and link previews follow links, and must not verify (or change) an
//! address for its owner. The button's POST spends the token through the JSON API's use case.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::auth::fail_page;
use super::form::{Form, PageForm, PageQuery, live_token_owner};
use super::render::see_other;
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::ClientInfo;
use crate::routes::email::{VerifyRequest, verify_flow};
use crate::routes::email_change::{ConfirmBody, confirm_flow};
use crate::tokens::Purpose;

/// The context of the verification page: the confirm button for a live token, "verified" after
/// the POST, or the "link no longer works" view.
#[derive(Serialize)]
pub(super) struct VerifyPage {
    pub form: Form,
    pub token: Option<String>,
    pub done: bool,
}

/// What sets the two link pages apart: the template, the token's purpose, and the notice of
/// the view after the POST.
struct LinkPage {
    template: &'static str,
    purpose: Purpose,
    done: &'static str,
}

const VERIFY: LinkPage = LinkPage {
    template: "verify.html",
    purpose: Purpose::EmailVerification,
    done: "email_verified",
};

const CHANGE: LinkPage = LinkPage {
    template: "email_change.html",
    purpose: Purpose::EmailChange,
    done: "email_changed",
};

/// GET /email/verify?token=T (400 when the link no longer works), and after the POST
/// `?notice=email_verified`.
pub async fn verify_page(State(state): State<AppState>, query: PageQuery) -> Response {
    link_page(&state, query, &VERIFY).await
}

/// GET /email/change?token=T (400 when the link no longer works), and after the POST
/// `?notice=email_changed`.
pub async fn change_page(State(state): State<AppState>, query: PageQuery) -> Response {
    link_page(&state, query, &CHANGE).await
}

/// A link page's GET: the "done" view after its POST, the confirm button for a live token (the
/// token only looked up, not spent), or 400 with the "link no longer works" view.
async fn link_page(state: &AppState, query: PageQuery, link: &LinkPage) -> Response {
    let form = Form::new(&state.pages, &[]);
    if query.token.is_none() && query.notice.as_deref() == Some(link.done) {
        let page = VerifyPage {
            form,
            token: None,
            done: true,
        };
        return state
            .pages
            .render(link.template, StatusCode::OK, None, &page);
    }
    let token = query.token.unwrap_or_default();
    let live = match live_token_owner(state, link.purpose, &token).await {
        Ok(owner) => owner.is_some(),
        Err(err) => return state.pages.error(&err),
    };
    let page = VerifyPage {
        form,
        token: live.then_some(token),
        done: false,
    };
    let status = match live {
        true => StatusCode::OK,
        false => StatusCode::BAD_REQUEST,
    };
    state.pages.render(link.template, status, None, &page)
}

/// A link page's failed POST: the button again for a failure worth another try (429, 503),
/// the "link no longer works" view when `dead` says the link cannot succeed any more.
fn link_failed(
    state: &AppState,
    link: &LinkPage,
    token: Option<String>,
    err: &ApiError,
    dead: bool,
) -> Response {
    let pages = &state.pages;
    let form = Form::new(pages, &[]).fail(pages, err, &[]);
    let page = VerifyPage {
        form,
        token: token.filter(|_| !dead),
        done: false,
    };
    fail_page(pages, link.template, err, &page)
}

#[derive(Deserialize)]
pub struct VerifyFields {
    token: Option<SecretString>,
}

/// POST /email/verify: the JSON API's verification, then 303 to the "verified" view.
pub async fn verify(
    State(state): State<AppState>,
    client: ClientInfo,
    PageForm(fields): PageForm<VerifyFields>,
) -> Response {
    let token = fields.token.as_ref().map(|t| t.expose_secret().to_owned());
    let req = VerifyRequest {
        token: fields.token,
    };
    match verify_flow(&state, &client, req).await {
        Ok(()) => see_other("/email/verify?notice=email_verified"),
        // A used or expired token shows the "link no longer works" view.
        Err(err) => {
            let dead = matches!(err, ApiError::TokenInvalid | ApiError::Validation(_));
            link_failed(&state, &VERIFY, token, &err, dead)
        }
    }
}

/// POST /email/change: the JSON API's confirmation, then 303 to the "changed" view.
pub async fn change_confirm(
    State(state): State<AppState>,
    client: ClientInfo,
    PageForm(fields): PageForm<VerifyFields>,
) -> Response {
    let token = fields.token.as_ref().map(|t| t.expose_secret().to_owned());
    let req = ConfirmBody {
        token: fields.token,
    };
    match confirm_flow(&state, &client, req).await {
        Ok(_) => see_other("/email/change?notice=email_changed"),
        // A used or expired link, or an address taken meanwhile (the swap rolled back, and
        // confirming again would fail the same way), shows no button.
        Err(err) => {
            let dead = matches!(
                err,
                ApiError::TokenInvalid | ApiError::Validation(_) | ApiError::EmailTaken
            );
            link_failed(&state, &CHANGE, token, &err, dead)
        }
    }
}
