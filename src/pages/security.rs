//! The security page (`/account/security`): two-step verification with an authenticator app
//! (enrollment with its QR code, the first code, the recovery codes shown once, removal) and the
//! account's passkeys (the list, removal, and adding one with the page's script,
//! `/pages/passkeys.js`, which talks to the JSON API). Each form is a POST into the JSON API's
//! use case, like the account page's.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum_extra::extract::CookieJar;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::account::{minutes, session_for};
use super::form::{Form, LOGIN_PASSWORD, PageForm, PageQuery, TOTP_CODE};
use super::render::{Pages, see_other};
use super::{notice, resume};
use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{Authenticated, ClientInfo};
use crate::routes::mfa::{
    CodeRequest, PasswordRequest, TotpState, confirm_flow, disable_flow, enroll_flow, totp_state,
};
use crate::routes::oidc::list_flow as identities_flow;
use crate::routes::oidc::{IdentityView, link_start_flow, unlink_flow};
use crate::routes::passkeys::{PasskeyView, list_flow, remove_flow};

const PATH: &str = "/account/security";

/// The forms of the page; after a failed POST, one of them carries the problems.
#[derive(Serialize)]
pub(super) struct Forms {
    pub enroll: Form,
    pub confirm: Form,
    pub remove: Form,
    pub passkeys: Form,
    pub identities: Form,
}

impl Forms {
    pub fn new(pages: &Pages) -> Forms {
        Forms {
            enroll: Form::new(pages, &[LOGIN_PASSWORD]),
            confirm: Form::new(pages, &[TOTP_CODE]),
            remove: Form::new(pages, &[LOGIN_PASSWORD]),
            passkeys: Form::new(pages, &[super::form::PASSKEY_NAME]),
            identities: Form::new(pages, &[]),
        }
    }
}

/// An enrollment waiting for its first code, as the page shows it.
#[derive(Serialize)]
pub(super) struct Pending {
    /// The QR code as a `data:` URL of its SVG (the CSP allows `data:` images, not inline SVG
    /// markup from a string).
    pub qr: String,
    pub secret: String,
}

/// A passkey as the page lists it.
#[derive(Serialize)]
pub(super) struct PasskeyRow {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

impl From<PasskeyView> for PasskeyRow {
    fn from(p: PasskeyView) -> PasskeyRow {
        PasskeyRow {
            id: p.id,
            name: p.name,
            created_at: minutes(&p.created_at),
            last_used_at: p.last_used_at.as_deref().map(minutes),
        }
    }
}

/// A linked identity as the page lists it.
#[derive(Serialize)]
pub(super) struct IdentityRow {
    pub id: String,
    pub provider_name: String,
    pub email: Option<String>,
    pub created_at: String,
    pub last_login_at: Option<String>,
}

impl From<IdentityView> for IdentityRow {
    fn from(i: IdentityView) -> IdentityRow {
        IdentityRow {
            id: i.id,
            provider_name: i.provider_name,
            email: i.email,
            created_at: minutes(&i.created_at),
            last_login_at: i.last_login_at.as_deref().map(minutes),
        }
    }
}

/// A configured provider, to link.
#[derive(Serialize)]
pub(super) struct ProviderRow {
    pub id: String,
    pub name: String,
}

/// The context of the security page.
#[derive(Serialize)]
pub(super) struct SecurityPage {
    /// `off`, `pending` or `on`.
    pub totp: &'static str,
    pub pending: Option<Pending>,
    /// Right after the confirmation: the codes, shown this once.
    pub recovery_codes: Option<Vec<String>>,
    /// Whether passkeys work here (the public URL is a domain name).
    pub passkeys_on: bool,
    pub passkeys: Vec<PasskeyRow>,
    pub identities: Vec<IdentityRow>,
    pub providers: Vec<ProviderRow>,
    pub forms: Forms,
}

/// The page of `auth` with `status`; `forms` decides what the forms show.
async fn render(
    state: &AppState,
    auth: Authenticated,
    status: StatusCode,
    notice: Option<String>,
    recovery_codes: Option<Vec<String>>,
    forms: Forms,
) -> Response {
    let pages = &state.pages;
    let (totp, pending) = match totp_state(state, auth).await {
        Ok(TotpState::Off) => ("off", None),
        Ok(TotpState::On) => ("on", None),
        Ok(TotpState::Pending(e)) => {
            let qr = format!("data:image/svg+xml;base64,{}", STANDARD.encode(e.qr_svg));
            let secret = e.secret;
            ("pending", Some(Pending { qr, secret }))
        }
        Err(ApiError::Unauthenticated) => return resume::detour(PATH),
        Err(err) => return pages.error(&err),
    };
    let passkeys = match list_flow(state, auth).await {
        Ok(list) => list.into_iter().map(PasskeyRow::from).collect(),
        Err(err) => return pages.error(&err),
    };
    let identities = match identities_flow(state, auth).await {
        Ok(list) => list.into_iter().map(IdentityRow::from).collect(),
        Err(err) => return pages.error(&err),
    };
    let providers = state
        .oidc
        .providers()
        .iter()
        .map(|p| ProviderRow {
            id: p.id.clone(),
            name: p.name.clone(),
        })
        .collect();
    let page = SecurityPage {
        totp,
        pending,
        recovery_codes,
        passkeys_on: state.passkeys.is_some(),
        passkeys,
        identities,
        providers,
        forms,
    };
    pages.render("security.html", status, notice, &page)
}

/// The page again after a form's `err`, with the JSON flow's status.
async fn failed(state: &AppState, auth: Authenticated, err: &ApiError, forms: Forms) -> Response {
    if matches!(err, ApiError::Unauthenticated) {
        return resume::detour(PATH);
    }
    err.log();
    let response = render(state, auth, err.parts().0, None, None, forms).await;
    super::render::with_retry_after(response, err)
}

fn back(notice: &str) -> Response {
    see_other(&super::return_to::link(PATH, Some(notice), None))
}

/// A wrong password re-entered: next to the password field.
const WRONG_PASSWORD: (ErrorCode, &str, &str) = (
    ErrorCode::InvalidCredentials,
    "password",
    "wrong_account_password",
);

/// GET /account/security.
pub async fn page(State(state): State<AppState>, headers: HeaderMap, query: PageQuery) -> Response {
    let auth = match session_for(&state, &headers, PATH).await {
        Ok(auth) => auth,
        Err(response) => return response,
    };
    let notice = notice(&state.pages, query.notice.as_deref());
    let forms = Forms::new(&state.pages);
    render(&state, auth, StatusCode::OK, notice, None, forms).await
}

#[derive(Deserialize)]
pub struct PasswordFields {
    password: Option<SecretString>,
}

/// POST /account/security/totp: a new secret; the page shows its QR code and asks for a code.
pub async fn enroll(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: ClientInfo,
    PageForm(fields): PageForm<PasswordFields>,
) -> Response {
    let auth = match session_for(&state, &headers, PATH).await {
        Ok(auth) => auth,
        Err(response) => return response,
    };
    let req = PasswordRequest {
        password: fields.password,
    };
    match enroll_flow(&state, auth, &client, req).await {
        // The pending enrollment is shown by the page itself (GET shows it again).
        Ok(_) => see_other(PATH),
        Err(err) => {
            let mut forms = Forms::new(&state.pages);
            forms.enroll = forms.enroll.fail(&state.pages, &err, &[WRONG_PASSWORD]);
            failed(&state, auth, &err, forms).await
        }
    }
}

#[derive(Deserialize)]
pub struct CodeFields {
    code: Option<String>,
}

/// POST /account/security/totp/confirm: TOTP on, and the recovery codes on this answer only.
pub async fn confirm(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: ClientInfo,
    PageForm(fields): PageForm<CodeFields>,
) -> Response {
    let auth = match session_for(&state, &headers, PATH).await {
        Ok(auth) => auth,
        Err(response) => return response,
    };
    let req = CodeRequest { code: fields.code };
    match confirm_flow(&state, auth, &client, req).await {
        Ok(body) => {
            let forms = Forms::new(&state.pages);
            let codes = Some(body.recovery_codes);
            render(&state, auth, StatusCode::OK, None, codes, forms).await
        }
        Err(err) => {
            let wrong = [(ErrorCode::InvalidCredentials, "code", "wrong_code")];
            let mut forms = Forms::new(&state.pages);
            forms.confirm = forms.confirm.fail(&state.pages, &err, &wrong);
            failed(&state, auth, &err, forms).await
        }
    }
}

/// POST /account/security/totp/remove.
pub async fn remove_totp(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: ClientInfo,
    PageForm(fields): PageForm<PasswordFields>,
) -> Response {
    let auth = match session_for(&state, &headers, PATH).await {
        Ok(auth) => auth,
        Err(response) => return response,
    };
    let req = PasswordRequest {
        password: fields.password,
    };
    match disable_flow(&state, auth, &client, req).await {
        Ok(()) => back("totp_removed"),
        Err(err) => {
            let mut forms = Forms::new(&state.pages);
            forms.remove = forms.remove.fail(&state.pages, &err, &[WRONG_PASSWORD]);
            failed(&state, auth, &err, forms).await
        }
    }
}

#[derive(Deserialize)]
pub struct PasskeyFields {
    passkey_id: Option<String>,
}

/// POST /account/security/passkeys/remove.
pub async fn remove_passkey(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: ClientInfo,
    PageForm(fields): PageForm<PasskeyFields>,
) -> Response {
    let auth = match session_for(&state, &headers, PATH).await {
        Ok(auth) => auth,
        Err(response) => return response,
    };
    let id = fields.passkey_id.as_deref();
    match remove_flow(&state, auth, &client, id).await {
        Ok(()) => back("passkey_removed"),
        Err(err) => {
            let mut forms = Forms::new(&state.pages);
            forms.passkeys = forms.passkeys.fail(&state.pages, &err, &[]);
            failed(&state, auth, &err, forms).await
        }
    }
}

#[derive(Deserialize)]
pub struct LinkFields {
    provider: Option<String>,
}

/// POST /account/security/identities/link: to the provider, to link the account that signs in
/// there to this one (the callback comes back here).
pub async fn link_identity(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    PageForm(fields): PageForm<LinkFields>,
) -> Response {
    let auth = match session_for(&state, &headers, PATH).await {
        Ok(auth) => auth,
        Err(response) => return response,
    };
    let provider = fields
        .provider
        .as_deref()
        .and_then(|id| state.oidc.provider(id));
    let started = match provider {
        Some(provider) => link_start_flow(&state, auth, jar, &provider, None).await,
        None => Err(ApiError::NotFound),
    };
    match started {
        Ok((jar, url)) => (jar, see_other(url.as_str())).into_response(),
        Err(err) => {
            let mut forms = Forms::new(&state.pages);
            forms.identities = forms.identities.fail(&state.pages, &err, &[]);
            failed(&state, auth, &err, forms).await
        }
    }
}

#[derive(Deserialize)]
pub struct IdentityFields {
    identity_id: Option<String>,
}

/// POST /account/security/identities/remove: unlinks one, unless it is the last way in.
pub async fn remove_identity(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: ClientInfo,
    PageForm(fields): PageForm<IdentityFields>,
) -> Response {
    let auth = match session_for(&state, &headers, PATH).await {
        Ok(auth) => auth,
        Err(response) => return response,
    };
    match unlink_flow(&state, auth, &client, fields.identity_id.as_deref()).await {
        Ok(()) => back("identity_removed"),
        Err(err) => {
            let mut forms = Forms::new(&state.pages);
            let last = (ErrorCode::Conflict, "last_way");
            forms.identities = forms.identities.fail_as(&state.pages, &err, last);
            failed(&state, auth, &err, forms).await
        }
    }
}
