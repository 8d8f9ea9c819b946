//! The signup, login and logout pages.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::form::{DISPLAY_NAME, EMAIL, Form, LOGIN_PASSWORD, NEW_PASSWORD, PageForm, PageQuery};
use super::render::{Pages, see_other, with_retry_after};
use super::{notice, resume, return_to};
use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{self, ClientInfo};
use crate::routes::login::{LoggedIn, LoginRequest, login_flow};
use crate::routes::logout::logout_flow;
use crate::routes::signup::{Signed, SignupRequest, signup_flow};

/// The context of the signup and login pages.
#[derive(Serialize)]
pub(super) struct EntryPage {
    pub form: Form,
    /// The allowed `return_to`, carried in a hidden field.
    pub return_to: Option<String>,
    /// `?return_to=…` for the link to the other page.
    pub return_query: String,
    /// Whether the login page offers "Sign in with a passkey".
    pub passkeys_on: bool,
    /// The "Continue with …" buttons of the configured OpenID providers.
    pub providers: Vec<ProviderLink>,
}

/// A button that starts signing in with an OpenID provider.
#[derive(Serialize)]
pub(super) struct ProviderLink {
    pub label: String,
    pub href: String,
}

impl EntryPage {
    fn new(state: &AppState, form: Form, return_to: Option<String>) -> EntryPage {
        let return_query = return_to::query(return_to.as_deref());
        let label = state.pages.string("login.provider");
        let providers = state
            .oidc
            .providers()
            .iter()
            .map(|p| ProviderLink {
                label: label.replace("{name}", &p.name),
                href: format!("/auth/oidc/{}/start{return_query}", p.id),
            })
            .collect();
        EntryPage {
            return_query,
            form,
            return_to,
            passkeys_on: state.passkeys.is_some(),
            providers,
        }
    }
}

/// A sign-in with an OpenID provider that was refused (its start or its callback): the login
/// page with the error, at the error's status. An address that an account has already is told
/// how to link the provider instead.
pub(crate) fn oidc_refused(
    state: &AppState,
    err: &ApiError,
    return_to: Option<String>,
) -> Response {
    let pages = &state.pages;
    let taken = [(ErrorCode::EmailTaken, "email", "oidc_email_taken")];
    let form = login_form(pages).fail(pages, err, &taken);
    let page = EntryPage::new(state, form, return_to);
    fail_page(pages, "login.html", err, &page)
}

pub(super) fn signup_form(pages: &Pages) -> Form {
    Form::new(pages, &[EMAIL, NEW_PASSWORD, DISPLAY_NAME])
}

pub(super) fn login_form(pages: &Pages) -> Form {
    Form::new(pages, &[EMAIL, LOGIN_PASSWORD])
}

/// Where a page goes after signing in: the allowed `return_to`, else the account page.
pub(crate) fn destination(return_to: Option<&str>) -> &str {
    return_to.unwrap_or("/account")
}

/// GET /signup. A browser that is signed in already goes on at once.
pub async fn signup_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: PageQuery,
) -> Result<Response, Response> {
    entry_page(&state, &headers, query, "signup.html", signup_form).await
}

/// The signup or login form, or straight on for a browser that is signed in already.
async fn entry_page(
    state: &AppState,
    headers: &HeaderMap,
    query: PageQuery,
    template: &str,
    form: fn(&Pages) -> Form,
) -> Result<Response, Response> {
    let return_to = return_to::allowed(&state.settings, query.return_to.as_deref());
    if signed_in(state, headers).await? {
        return Ok(see_other(destination(return_to.as_deref())));
    }
    let page = EntryPage::new(state, form(&state.pages), return_to);
    let notice = notice(&state.pages, query.notice.as_deref());
    Ok(state.pages.render(template, StatusCode::OK, notice, &page))
}

#[derive(Deserialize)]
pub struct SignupFields {
    email: Option<String>,
    password: Option<SecretString>,
    display_name: Option<String>,
    return_to: Option<String>,
}

/// POST /signup: the JSON API's signup, then 303 with the session cookies.
pub async fn signup(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
    PageForm(fields): PageForm<SignupFields>,
) -> Response {
    let return_to = return_to::allowed(&state.settings, fields.return_to.as_deref());
    let req = SignupRequest {
        email: fields.email.clone(),
        password: fields.password,
        display_name: fields.display_name.clone(),
        // The page has no metadata field: `{}`, or what the operator's schema says to that.
        metadata: None,
    };
    let err = match signup_flow(&state, &client, jar, req).await {
        Ok(Signed::Session(jar, _)) => {
            return (jar, see_other(destination(return_to.as_deref()))).into_response();
        }
        // The same answer for a new and a taken address: the owner hears by email.
        Ok(Signed::Concealed) => {
            let to = return_to::link("/login", Some("check_email"), return_to.as_deref());
            return see_other(&to);
        }
        Err(err) => err,
    };
    let pages = &state.pages;
    let form = signup_form(pages)
        .keep("email", fields.email.as_deref())
        .keep("display_name", fields.display_name.as_deref())
        .fail(
            pages,
            &err,
            &[(ErrorCode::EmailTaken, "email", "email_taken")],
        );
    let page = EntryPage::new(&state, form, return_to);
    fail_page(pages, "signup.html", &err, &page)
}

/// GET /login. A browser that is signed in already goes on at once.
pub async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: PageQuery,
) -> Result<Response, Response> {
    entry_page(&state, &headers, query, "login.html", login_form).await
}

#[derive(Deserialize)]
pub struct LoginFields {
    email: Option<String>,
    password: Option<SecretString>,
    return_to: Option<String>,
}

/// POST /login: the JSON API's login, then 303 with the session (and device) cookies.
pub async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
    PageForm(fields): PageForm<LoginFields>,
) -> Response {
    let return_to = return_to::allowed(&state.settings, fields.return_to.as_deref());
    let req = LoginRequest {
        email: fields.email.clone(),
        password: fields.password,
    };
    let err = match login_flow(&state, &client, jar, req).await {
        Ok(LoggedIn::Session(jar, _)) => {
            return (jar, see_other(destination(return_to.as_deref()))).into_response();
        }
        Ok(LoggedIn::MfaRequired(challenge)) => {
            return super::mfa::challenge_page(&state, &challenge, return_to);
        }
        Err(err) => err,
    };
    let pages = &state.pages;
    let form = login_form(pages)
        .keep("email", fields.email.as_deref())
        .fail(pages, &err, &[]);
    let page = EntryPage::new(&state, form, return_to);
    fail_page(pages, "login.html", &err, &page)
}

/// The context of the logout page.
#[derive(Serialize)]
pub(super) struct LogoutPage {
    pub form: Form,
}

/// GET /logout: a confirmation, so that no link or prefetch logs anyone out.
pub async fn logout_page(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    if !signed_in(&state, &headers).await? {
        return Ok(resume::detour("/logout"));
    }
    let page = LogoutPage {
        form: Form::new(&state.pages, &[]),
    };
    Ok(state
        .pages
        .render("logout.html", StatusCode::OK, None, &page))
}

/// The (empty) body of the logout form.
#[derive(Deserialize)]
pub struct NoFields {}

/// POST /logout: the JSON API's logout (this session revoked, both cookies cleared), then 303
/// to the login page.
pub async fn logout(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
    headers: HeaderMap,
    PageForm(NoFields {}): PageForm<NoFields>,
) -> Response {
    match logout_flow(&state, &client, jar, &headers).await {
        Ok(jar) => (jar, see_other("/login?notice=signed_out")).into_response(),
        Err(err) => {
            let form = Form::new(&state.pages, &[]).fail(&state.pages, &err, &[]);
            fail_page(&state.pages, "logout.html", &err, &LogoutPage { form })
        }
    }
}

/// Whether the request carries a live session (as the JSON API checks it); a database outage
/// is an error page.
pub(super) async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<bool, Response> {
    match extract::authenticate(state, headers).await {
        Ok(auth) => Ok(auth.is_some()),
        Err(err) => Err(state.pages.error(&err)),
    }
}

/// A form page again after `err`, with the status the JSON flow answered, its `Retry-After`,
/// and the cause of an internal error in the log.
pub(super) fn fail_page(
    pages: &Pages,
    name: &str,
    err: &ApiError,
    page: &impl Serialize,
) -> Response {
    err.log();
    let (status, _, _) = err.parts();
    with_retry_after(pages.render(name, status, None, page), err)
}
