//! The hosted pages: HTML forms for every account flow, on latchkey's public URL.
//!
//! A page is a thin shell around the JSON API's use cases: each POST parses its form into the
//! same request fields the JSON endpoint takes and makes ONE call to the same `*_flow` function
//! (`crate::routes`), so the transactions, cookies, limits, errors and audit events are the JSON
//! API's own. Success is `303 See Other` (post/redirect/get); a failure answers the form again
//! with the status the JSON flow gave, each problem next to its field, the fields kept (never a
//! password). Pages work without JavaScript: no script is served, and the CSP forbids it.
//!
//! - `GET` of an emailed link never spends its token (mail scanners follow links): the reset and
//!   verification pages only look the token up; their form's POST spends it.
//! - The refresh cookie is scoped to `/auth`, so pages never see it: a page whose access token
//!   has expired sends the browser through `GET /auth/resume`, which rotates the session like
//!   `POST /auth/refresh` and comes back (`resume`).
//! - `return_to` is followed only to the public URL's origin or an allowed origin (`return_to`).
//! - CSRF: the middleware's origin check covers page POSTs as it covers the API.
//!
//! Reading order: `render` (templates, strings, headers), `form` (fields and errors), then one
//! module per group of pages.

mod account;
pub(crate) mod auth;
mod email;
mod form;
pub(crate) mod mfa;
mod password;
mod passwordless;
pub(crate) mod render;
mod resume;
pub(crate) mod return_to;
mod security;

use axum::Router;
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;

use crate::app::AppState;
pub use render::Pages;

/// Every page route; mounted unless `pages = off`.
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/signup", get(auth::signup_page).post(auth::signup))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/login/mfa", post(mfa::verify))
        .route("/logout", get(auth::logout_page).post(auth::logout))
        .route(
            "/password/forgot",
            get(password::forgot_page).post(password::forgot),
        )
        .route(
            "/password/reset",
            get(password::reset_page).post(password::reset),
        )
        .route("/login/code", post(passwordless::start))
        .route("/login/code/verify", post(passwordless::verify_code))
        .route(
            "/passwordless",
            get(passwordless::link_page).post(passwordless::verify_link),
        )
        .route("/email/verify", get(email::verify_page).post(email::verify))
        .route(
            "/email/change",
            get(email::change_page).post(email::change_confirm),
        )
        .route("/account", get(account::page))
        .route("/account/profile", post(account::update_profile))
        .route("/account/email/resend", post(account::resend))
        .route("/account/email/change", post(account::change_email))
        .route("/account/sessions/revoke", post(account::revoke_session))
        .route("/account/password", post(account::change_password))
        .route("/account/logout-all", post(account::logout_all))
        .route("/account/security", get(security::page))
        .route("/account/security/totp", post(security::enroll))
        .route("/account/security/totp/confirm", post(security::confirm))
        .route("/account/security/totp/remove", post(security::remove_totp))
        .route(
            "/account/security/passkeys/remove",
            post(security::remove_passkey),
        )
        .route(
            "/account/security/identities/link",
            post(security::link_identity),
        )
        .route(
            "/account/security/identities/remove",
            post(security::remove_identity),
        )
        .route("/auth/resume", get(resume::resume))
        .route("/pages/style.css", get(render::stylesheet))
        .route("/pages/passkeys.js", get(render::passkeys_script))
        // A panic in a page (or in the flow it called) is the error page, not the API's JSON.
        .layer(CatchPanicLayer::custom(render::panic_page(state)))
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            render::security_headers,
        ))
}

/// The catalogue's notice `key` (from a page's `?notice=`), when it has one: only fixed
/// messages, never text from the URL.
fn notice(pages: &Pages, key: Option<&str>) -> Option<String> {
    let key = key.filter(|k| k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))?;
    pages.get(&format!("notices.{key}"))
}

/// A context for every page template, with a notice and a problem on each form, so that the
/// check at start renders every branch an override may break.
fn samples(pages: &Pages) -> Vec<(&'static str, serde_json::Value)> {
    use crate::error::ErrorCode;
    let invalid = |field: &str| crate::error::ApiError::field(field, "is required");
    let entry = |form: form::Form| auth::EntryPage {
        form,
        return_to: Some("/account".to_owned()),
        return_query: "?return_to=%2Faccount".to_owned(),
        passkeys_on: true,
        providers: vec![auth::ProviderLink {
            label: "Continue with Example".to_owned(),
            href: "/auth/oidc/example/start".to_owned(),
        }],
    };
    let json = |value: Result<serde_json::Value, serde_json::Error>| value.unwrap_or_default();
    let mut forms = account::Forms::new(pages, Some("Ada"));
    forms.password = forms.password.fail(
        pages,
        &crate::error::ApiError::InvalidCredentials,
        &[(
            ErrorCode::InvalidCredentials,
            "current_password",
            "wrong_password",
        )],
    );
    forms.profile = forms.profile.fail(pages, &invalid("display_name"), &[]);
    forms.email = forms.email.fail(pages, &invalid("new_email"), &[]);
    let account = account::AccountPage {
        account: account::AccountView {
            email: "ada@example.com".to_owned(),
            email_verified: false,
        },
        sessions: vec![account::SessionRow {
            id: "0".to_owned(),
            device: "Chrome on Linux".to_owned(),
            ip: "127.0.0.1".to_owned(),
            created_at: "2026-12-01 12:00 UTC".to_owned(),
            last_used_at: "2026-12-01 12:00 UTC".to_owned(),
            current: false,
        }],
        forms,
    };
    vec![
        (
            "signup.html",
            json(serde_json::to_value(entry(auth::signup_form(pages).fail(
                pages,
                &invalid("email"),
                &[],
            )))),
        ),
        (
            "login.html",
            json(serde_json::to_value(entry(auth::login_form(pages).fail(
                pages,
                &crate::error::ApiError::InvalidCredentials,
                &[],
            )))),
        ),
        (
            "logout.html",
            json(serde_json::to_value(auth::LogoutPage {
                form: form::Form::new(pages, &[]),
            })),
        ),
        (
            "forgot.html",
            json(serde_json::to_value(password::ForgotPage {
                form: form::Form::new(pages, &[form::EMAIL]).fail(pages, &invalid("email"), &[]),
                sent: false,
            })),
        ),
        (
            "reset.html",
            json(serde_json::to_value(password::ResetPage {
                form: form::Form::new(pages, &[form::NEW_PASSWORD]).fail(
                    pages,
                    &invalid("password"),
                    &[],
                ),
                token: Some("T".to_owned()),
                email: "ada@example.com".to_owned(),
            })),
        ),
        (
            "verify.html",
            json(serde_json::to_value(email::VerifyPage {
                form: form::Form::new(pages, &[]),
                token: Some("T".to_owned()),
                done: false,
            })),
        ),
        (
            "email_change.html",
            json(serde_json::to_value(email::VerifyPage {
                form: form::Form::new(pages, &[]).fail(
                    pages,
                    &crate::error::ApiError::EmailTaken,
                    &[],
                ),
                token: Some("T".to_owned()),
                done: false,
            })),
        ),
        ("account.html", json(serde_json::to_value(account))),
        (
            "security.html",
            json(serde_json::to_value(security::SecurityPage {
                totp: "pending",
                pending: Some(security::Pending {
                    qr: "data:image/svg+xml;base64,".to_owned(),
                    secret: "JBSWY3DPEHPK3PXP".to_owned(),
                }),
                recovery_codes: Some(vec!["abcd-efgh".to_owned()]),
                passkeys_on: true,
                passkeys: vec![security::PasskeyRow {
                    id: "0".to_owned(),
                    name: "Phone".to_owned(),
                    created_at: "2026-12-01 12:00 UTC".to_owned(),
                    last_used_at: None,
                }],
                identities: vec![security::IdentityRow {
                    id: "0".to_owned(),
                    provider_name: "Example".to_owned(),
                    email: Some("a@example.com".to_owned()),
                    created_at: "2026-12-01 12:00 UTC".to_owned(),
                    last_login_at: None,
                }],
                providers: vec![security::ProviderRow {
                    id: "example".to_owned(),
                    name: "Example".to_owned(),
                }],
                forms: {
                    let mut forms = security::Forms::new(pages);
                    forms.confirm = forms.confirm.fail(pages, &invalid("code"), &[]);
                    forms
                },
            })),
        ),
        (
            "mfa.html",
            json(serde_json::to_value({
                let mut page = mfa::MfaPage::new(pages, "T", Some("/account".to_owned()));
                page.passkey = true;
                let wrong = [(ErrorCode::InvalidCredentials, "code", "wrong_code")];
                let err = crate::error::ApiError::InvalidCredentials;
                page.form = page.form.fail(pages, &err, &wrong);
                page
            })),
        ),
        (
            "passwordless.html",
            json(serde_json::to_value({
                let form = passwordless::code_form(pages);
                let wrong = [(ErrorCode::TokenInvalid, "code", "code_invalid")];
                let form = form.fail(pages, &crate::error::ApiError::TokenInvalid, &wrong);
                let mut page = passwordless::PasswordlessPage::new("code", form, None);
                page.email = Some("ada@example.com".to_owned());
                page
            })),
        ),
        (
            "passwordless.html",
            json(serde_json::to_value({
                let form = passwordless::start_form(pages).fail(pages, &invalid("email"), &[]);
                passwordless::PasswordlessPage::new("start", form, Some("/account".to_owned()))
            })),
        ),
        (
            "passwordless.html",
            json(serde_json::to_value({
                let form = form::Form::new(pages, &[]);
                let mut page = passwordless::PasswordlessPage::new("link", form, None);
                page.token = Some("T".to_owned());
                page
            })),
        ),
        (
            "error.html",
            serde_json::json!({"message": pages.string("errors.internal")}),
        ),
    ]
}
