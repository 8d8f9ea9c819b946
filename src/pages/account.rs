//! The account page and its forms: profile, verification resend, sessions, password change and
//! log out everywhere. Each form is its own POST into the JSON API's use case, and answers 303
//! back to the page with a notice, or the page again with that form's problems.
//!
//! Without a live access token the page and its forms detour through `GET /auth/resume` (see
//! `resume`): a form sent with an expired token is not carried over, the page comes back.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::auth::NoFields;
use super::form::{
    CHANGED_PASSWORD, CURRENT_PASSWORD, DISPLAY_NAME, Form, LOGIN_PASSWORD, NEW_EMAIL, PageForm,
    PageQuery,
};
use super::render::{Pages, see_other};
use super::{notice, resume};
use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{self, Authenticated, ClientInfo};
use crate::routes::email::{Resent, resend_flow};
use crate::routes::email_change::{EmailChangeBody, change_flow as email_change_flow};
use crate::routes::me::{ProfileUpdate, update_profile_flow};
use crate::routes::password::{ChangeRequest, change_flow};
use crate::routes::sessions::{SessionView, list_flow, logout_all_flow, revoke_flow};
use crate::store;

const PATH: &str = "/account";

/// The forms of the account page; after a failed POST, one of them carries the problems.
#[derive(Serialize)]
pub(super) struct Forms {
    pub resend: Form,
    pub profile: Form,
    pub sessions: Form,
    pub password: Form,
    pub email: Form,
    pub everywhere: Form,
}

impl Forms {
    pub fn new(pages: &Pages, display_name: Option<&str>) -> Forms {
        Forms {
            resend: Form::new(pages, &[]),
            profile: Form::new(pages, &[DISPLAY_NAME]).keep("display_name", display_name),
            sessions: Form::new(pages, &[]),
            password: Form::new(pages, &[CURRENT_PASSWORD, CHANGED_PASSWORD]),
            email: email_form(pages),
            everywhere: Form::new(pages, &[]),
        }
    }
}

/// The context of the account page.
#[derive(Serialize)]
pub(super) struct AccountPage {
    pub account: AccountView,
    pub sessions: Vec<SessionRow>,
    pub forms: Forms,
}

#[derive(Serialize)]
pub(super) struct AccountView {
    pub email: String,
    pub email_verified: bool,
}

/// A session as the page lists it.
#[derive(Serialize)]
pub(super) struct SessionRow {
    pub id: String,
    pub device: String,
    pub ip: String,
    pub created_at: String,
    pub last_used_at: String,
    pub current: bool,
}

impl SessionRow {
    fn new(pages: &Pages, s: SessionView) -> SessionRow {
        SessionRow {
            device: s
                .user_agent
                .as_deref()
                .map(device)
                .unwrap_or_else(|| pages.string("account.unknown_device")),
            ip: s.ip.unwrap_or_else(|| "-".to_owned()),
            created_at: minutes(&s.created_at),
            last_used_at: minutes(&s.last_used_at),
            current: s.current,
            id: s.id,
        }
    }
}

/// `2026-12-01T12:45:39.123Z` as `2026-12-01 12:45 UTC`.
pub(super) fn minutes(rfc3339: &str) -> String {
    match rfc3339.get(..16) {
        Some(prefix) => format!("{} UTC", prefix.replacen('T', " ", 1)),
        None => rfc3339.to_owned(),
    }
}

/// A browser and a system named from a User-Agent, for a person to recognise a session; the
/// header itself, shortened, when it names neither.
fn device(user_agent: &str) -> String {
    let browser = [
        ("Edg/", "Edge"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
    ]
    .iter()
    .find(|(token, _)| user_agent.contains(token))
    .map(|(_, name)| *name);
    let system = [
        ("Android", "Android"),
        ("iPhone", "iPhone"),
        ("iPad", "iPad"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("CrOS", "ChromeOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(token, _)| user_agent.contains(token))
    .map(|(_, name)| *name);
    match (browser, system) {
        (Some(b), Some(s)) => format!("{b} on {s}"),
        (Some(b), None) => b.to_owned(),
        (None, Some(s)) => s.to_owned(),
        (None, None) => user_agent.chars().take(60).collect(),
    }
}

/// The live session of the request, or the response that goes instead: the detour through the
/// session resume, or an error page.
async fn session(state: &AppState, headers: &HeaderMap) -> Result<Authenticated, Response> {
    session_for(state, headers, PATH).await
}

/// `session` for a page at `path` (where the resume comes back to).
pub(super) async fn session_for(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
) -> Result<Authenticated, Response> {
    match extract::authenticate(state, headers).await {
        Ok(Some(auth)) => Ok(auth),
        Ok(None) => Err(resume::detour(path)),
        Err(err) => Err(state.pages.error(&err)),
    }
}

/// The account page of `auth` with `status`; `forms` decides what the forms show.
async fn render(
    state: &AppState,
    auth: Authenticated,
    status: StatusCode,
    notice: Option<String>,
    forms: impl FnOnce(&Pages, Option<&str>) -> Forms,
) -> Response {
    let pages = &state.pages;
    let account = match store::users::find_account(state.store.reader(), auth.user_id).await {
        Ok(Some(account)) => account,
        // The account was deleted since the session was checked.
        Ok(None) => return resume::detour(PATH),
        Err(err) => return pages.error(&err.into()),
    };
    let sessions = match list_flow(state, auth).await {
        Ok(sessions) => sessions,
        Err(err) => return pages.error(&err),
    };
    let page = AccountPage {
        account: AccountView {
            email: account.email,
            email_verified: account.email_verified_at.is_some(),
        },
        sessions: sessions
            .into_iter()
            .map(|s| SessionRow::new(pages, s))
            .collect(),
        forms: forms(pages, account.display_name.as_deref()),
    };
    pages.render("account.html", status, notice, &page)
}

/// The page again after a form's `err`: with the JSON flow's status and `Retry-After`.
async fn failed(
    state: &AppState,
    auth: Authenticated,
    err: &ApiError,
    forms: impl FnOnce(&Pages, Option<&str>) -> Forms,
) -> Response {
    if matches!(err, ApiError::Unauthenticated) {
        return resume::detour(PATH);
    }
    err.log();
    let response = render(state, auth, err.parts().0, None, forms).await;
    super::render::with_retry_after(response, err)
}

/// GET /account.
pub async fn page(State(state): State<AppState>, headers: HeaderMap, query: PageQuery) -> Response {
    let auth = match session(&state, &headers).await {
        Ok(auth) => auth,
        Err(response) => return response,
    };
    let notice = notice(&state.pages, query.notice.as_deref());
    render(&state, auth, StatusCode::OK, notice, Forms::new).await
}

fn back(notice: &str) -> Response {
    see_other(&super::return_to::link(PATH, Some(notice), None))
}

#[derive(Deserialize)]
pub struct ProfileFields {
    display_name: Option<String>,
}

/// POST /account/profile.
pub async fn update_profile(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: ClientInfo,
    PageForm(fields): PageForm<ProfileFields>,
) -> Response {
    let auth = match session(&state, &headers).await {
        Ok(auth) => auth,
        Err(response) => return response,
    };
    let typed = fields.display_name.clone().unwrap_or_default();
    let req = ProfileUpdate {
        display_name: Some(fields.display_name),
        // The page edits the display name; metadata is the app's, through the JSON API.
        metadata: None,
    };
    match update_profile_flow(&state, auth, &client, req).await {
        Ok(_) => back("profile_saved"),
        Err(err) => {
            failed(&state, auth, &err, |pages, name| {
                let mut forms = Forms::new(pages, name);
                forms.profile = Form::new(pages, &[DISPLAY_NAME])
                    .keep("display_name", Some(&typed))
                    .fail(pages, &err, &[]);
                forms
            })
            .await
        }
    }
}

/// POST /account/email/resend.
pub async fn resend(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: ClientInfo,
    PageForm(NoFields {}): PageForm<NoFields>,
) -> Response {
    let auth = match session(&state, &headers).await {
        Ok(auth) => auth,
        Err(response) => return response,
    };
    match resend_flow(&state, auth, &client).await {
        Ok(Resent::Sent) => back("verification_sent"),
        Ok(Resent::AlreadyVerified) => back("already_verified"),
        Err(err) => {
            failed(&state, auth, &err, |pages, name| {
                let mut forms = Forms::new(pages, name);
                forms.resend = Form::new(pages, &[]).fail(pages, &err, &[]);
                forms
            })
            .await
        }
    }
}

#[derive(Deserialize)]
pub struct RevokeFields {
    session_id: Option<String>,
}

/// POST /account/sessions/revoke. Revoking this browser's own session is a logout.
pub async fn revoke_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: ClientInfo,
    jar: CookieJar,
    PageForm(fields): PageForm<RevokeFields>,
) -> Response {
    let auth = match session(&state, &headers).await {
        Ok(auth) => auth,
        Err(response) => return response,
    };
    let id = fields.session_id.as_deref();
    match revoke_flow(&state, auth, &client, jar, id).await {
        Ok((jar, true)) => (jar, see_other("/login?notice=signed_out")).into_response(),
        Ok((jar, false)) => (jar, back("session_revoked")).into_response(),
        Err(err) => {
            failed(&state, auth, &err, |pages, name| {
                let mut forms = Forms::new(pages, name);
                forms.sessions = Form::new(pages, &[]).fail(pages, &err, &[]);
                forms
            })
            .await
        }
    }
}

#[derive(Deserialize)]
pub struct PasswordFields {
    current_password: Option<SecretString>,
    new_password: Option<SecretString>,
}

/// POST /account/password: the other sessions end, this one stays.
pub async fn change_password(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: ClientInfo,
    PageForm(fields): PageForm<PasswordFields>,
) -> Response {
    let auth = match session(&state, &headers).await {
        Ok(auth) => auth,
        Err(response) => return response,
    };
    let req = ChangeRequest {
        current_password: fields.current_password,
        new_password: fields.new_password,
    };
    match change_flow(&state, auth, &client, req).await {
        Ok(()) => back("password_changed"),
        Err(err) => {
            failed(&state, auth, &err, |pages, name| {
                let mut forms = Forms::new(pages, name);
                forms.password = Form::new(pages, &[CURRENT_PASSWORD, CHANGED_PASSWORD]).fail(
                    pages,
                    &err,
                    &[(
                        ErrorCode::InvalidCredentials,
                        "current_password",
                        "wrong_password",
                    )],
                );
                forms
            })
            .await
        }
    }
}

/// The email change form: the new address and the account's password.
fn email_form(pages: &Pages) -> Form {
    Form::new(pages, &[NEW_EMAIL, LOGIN_PASSWORD])
}

#[derive(Deserialize)]
pub struct EmailFields {
    new_email: Option<String>,
    password: Option<SecretString>,
}

/// POST /account/email/change: the link goes to the new address; the page says so.
pub async fn change_email(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: ClientInfo,
    PageForm(fields): PageForm<EmailFields>,
) -> Response {
    let auth = match session(&state, &headers).await {
        Ok(auth) => auth,
        Err(response) => return response,
    };
    let typed = fields.new_email.clone();
    let req = EmailChangeBody {
        new_email: fields.new_email,
        password: fields.password,
    };
    match email_change_flow(&state, auth, &client, req).await {
        Ok(()) => back("email_change_sent"),
        Err(err) => {
            failed(&state, auth, &err, |pages, name| {
                let mut forms = Forms::new(pages, name);
                forms.email = email_form(pages).keep("new_email", typed.as_deref()).fail(
                    pages,
                    &err,
                    &[
                        (
                            ErrorCode::InvalidCredentials,
                            "password",
                            "wrong_account_password",
                        ),
                        (ErrorCode::EmailTaken, "new_email", "email_taken"),
                    ],
                );
                forms
            })
            .await
        }
    }
}

/// POST /account/logout-all: every session ends, this one too; 303 to the login page.
pub async fn logout_all(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: ClientInfo,
    jar: CookieJar,
    PageForm(NoFields {}): PageForm<NoFields>,
) -> Response {
    let auth = match session(&state, &headers).await {
        Ok(auth) => auth,
        Err(response) => return response,
    };
    match logout_all_flow(&state, auth, &client, jar).await {
        Ok(jar) => (jar, see_other("/login?notice=logged_out_everywhere")).into_response(),
        Err(err) => {
            failed(&state, auth, &err, |pages, name| {
                let mut forms = Forms::new(pages, name);
                forms.everywhere = Form::new(pages, &[]).fail(pages, &err, &[]);
                forms
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_named_for_people() {
        for (ua, name) in [
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36",
                "Chrome on Linux",
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
                "Safari on iPhone",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0",
                "Firefox on Windows",
            ),
            ("curl/8.5.0", "curl/8.5.0"),
        ] {
            assert_eq!(device(ua), name, "{ua}");
        }
        assert_eq!(minutes("2026-12-01T12:45:39.123Z"), "2026-12-01 12:45 UTC");
    }
}
