//! GET /openapi.json: the OpenAPI 3.1 document of the whole API, generated from the code.
//!
//! Each handler carries a `#[utoipa::path]` annotation naming its body and the responses it
//! produces itself, and the bodies derive `ToSchema` on the very types the handlers read and
//! write. What the layers around every route produce (`app::router`) is written once, here, as
//! the layers themselves are, by the `Layers` modifier:
//! - every operation: 500 `internal` (a bug or a panic) and 503 `unavailable` (the database does
//!   not answer, or the request outlived `request_timeout`), with `Retry-After`;
//! - POST, PUT, PATCH and DELETE: 403 `csrf_rejected`;
//! - every operation with a JSON body (`extract::ApiJson`): 400 `invalid_json`, 413
//!   `payload_too_large`, 415 `unsupported_media_type` and 422 `validation_failed`;
//! - every response: the `X-Request-Id` header.
//!
//! Where a handler documents one of those statuses itself (400 `token_invalid`, 503 `overloaded`)
//! its description, which names both codes, is kept.
//!
//! tests/api/openapi.rs fails when a route exists that this document lacks; `.ci/run` runs
//! schemathesis against a live server to check that what the server answers matches it.

use std::sync::LazyLock;

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{HeaderBuilder, ObjectBuilder, Ref, RefOr, Response, Type};
use utoipa::{Modify, OpenApi, ToResponse};

use self::responses::{
    AdminUnauthenticated, CsrfRejected, Internal, InvalidJson, MfaRequired, Overloaded,
    PayloadTooLarge, RateLimited, Unauthenticated, Unavailable, UnsupportedMediaType,
    ValidationFailed,
};
use super::{
    account, admin, email, email_change, health, jwks, login, logout, me, metrics, mfa, oidc,
    passkeys, password, passwordless, refresh, sessions, signup,
};
use crate::app::AppState;
use crate::error::ErrorBody;

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi))
}

/// Built once: the document depends on nothing but the code.
static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(ApiDoc::openapi);

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.",
        body = serde_json::Value)),
)]
pub(super) async fn openapi() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(&DOCUMENT)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "latchkey",
        description = "Accounts and sessions: signup, login, refresh, logout and profiles. \
            JSON in and out; request bodies of at most 16 KiB, `Content-Type: application/json`, \
            no unknown fields. Every response carries `X-Request-Id`, and every error has the \
            shape of the `Error` schema. Unsafe methods sent by a browser from a foreign origin \
            get 403 `csrf_rejected`. With `cookie_secure = false` the cookies lose their \
            `__Host-`/`__Secure-` prefixes (`lk_access`, `lk_refresh`)."
    ),
    paths(
        signup::signup,
        login::login,
        refresh::refresh,
        logout::logout,
        sessions::logout_all,
        sessions::list,
        sessions::revoke,
        me::me,
        me::update_profile,
        mfa::enroll,
        mfa::confirm,
        mfa::disable,
        mfa::verify,
        passkeys::register_start,
        passkeys::register_finish,
        passkeys::list,
        passkeys::remove,
        passkeys::login_start,
        passkeys::login_finish,
        oidc::start,
        oidc::callback,
        oidc::link,
        oidc::list,
        oidc::unlink,
        password::forgot,
        password::reset,
        password::change,
        passwordless::start,
        passwordless::verify,
        email::verify,
        email::resend,
        email_change::change,
        email_change::confirm,
        account::delete_me,
        account::export,
        admin::users::list,
        admin::users::create,
        admin::users::get_user,
        admin::users::patch,
        admin::users::delete,
        admin::users::password_reset,
        admin::sessions::list,
        admin::sessions::revoke_all,
        admin::mfa::remove,
        admin::audit::query_audit,
        admin::import::import_users,
        jwks::jwks,
        health::healthz,
        health::readyz,
        metrics::metrics,
        openapi,
    ),
    components(
        schemas(ErrorBody),
        responses(
            InvalidJson,
            CsrfRejected,
            Unauthenticated,
            AdminUnauthenticated,
            MfaRequired,
            PayloadTooLarge,
            UnsupportedMediaType,
            ValidationFailed,
            RateLimited,
            Internal,
            Overloaded,
            Unavailable,
        ),
    ),
    modifiers(&SecuritySchemes, &Layers),
    tags(
        (name = "sessions", description = "Signup, login, refresh, logout and session management."),
        (name = "account", description = "The caller's user and profile."),
        (name = "password", description = "Forgotten, reset and changed passwords."),
        (name = "email", description = "Verification of the email address."),
        (name = "mfa", description = "The second factor (TOTP and recovery codes) and the login \
            challenge it adds."),
        (name = "passkeys", description = "Passkeys (WebAuthn): registration, removal, and login \
            with a discoverable passkey or as the second factor."),
        (name = "operations", description = "Keys, health, metrics and this document."),
        (name = "admin", description = "The admin API: accounts, their sessions, the audit \
            trail and imports, with an admin key (`latchkey admin-keys create`)."),
    ),
)]
pub struct ApiDoc;

/// The error responses that several operations share: each is the `Error` body, its description
/// names the code. The types are never built: their field only names the body's schema.
pub mod responses {
    #![allow(dead_code)]

    use utoipa::ToResponse;

    use crate::error::ErrorBody;

    /// `invalid_json`: the body is not JSON.
    #[derive(ToResponse)]
    pub struct InvalidJson(ErrorBody);

    /// `unauthenticated`: no access token, or a bad, forged or expired one, or its session ended.
    #[derive(ToResponse)]
    pub struct Unauthenticated(ErrorBody);

    /// `unauthenticated`: no admin key (`Authorization: Bearer lk_admin_…`), or a wrong or
    /// revoked one. Session cookies and access tokens never authorize the admin API.
    #[derive(ToResponse)]
    pub struct AdminUnauthenticated(ErrorBody);

    /// `csrf_rejected`: an unsafe method sent by a browser from a foreign origin (`Origin`, or
    /// `Sec-Fetch-Site: cross-site`).
    #[derive(ToResponse)]
    pub struct CsrfRejected(ErrorBody);

    /// `mfa_required`: the account has a second factor or a passkey, and this session signed in
    /// without it (`aal` 1); sign in again with it.
    #[derive(ToResponse)]
    pub struct MfaRequired(ErrorBody);

    /// `payload_too_large`: the body is larger than 16 KiB.
    #[derive(ToResponse)]
    pub struct PayloadTooLarge(ErrorBody);

    /// `unsupported_media_type`: the body is not `application/json` (or `application/*+json`).
    #[derive(ToResponse)]
    pub struct UnsupportedMediaType(ErrorBody);

    /// `validation_failed`: a field is missing, of the wrong type, unknown or invalid, or the body is
    /// not a JSON object; `fields` says which and why.
    #[derive(ToResponse)]
    pub struct ValidationFailed(ErrorBody);

    /// `rate_limited`: too many requests; the body is the same whichever limit refused it.
    #[derive(ToResponse)]
    #[response(headers(("Retry-After" = u64, description = "Seconds to wait before trying again.")))]
    pub struct RateLimited(ErrorBody);

    /// `internal`: something went wrong on the server; the log line carries the request id.
    #[derive(ToResponse)]
    pub struct Internal(ErrorBody);

    /// `overloaded`: the password hashing queue is full; or `unavailable`: the database does not
    /// answer, or the request outlived the request timeout.
    #[derive(ToResponse)]
    #[response(headers(("Retry-After" = u64, description = "Seconds to wait before trying again.")))]
    pub struct Overloaded(ErrorBody);

    /// `unavailable`: the database does not answer, or the request outlived the request timeout.
    #[derive(ToResponse)]
    #[response(headers(("Retry-After" = u64, description = "Seconds to wait before trying again.")))]
    pub struct Unavailable(ErrorBody);
}

/// The three ways a request authenticates.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "`Authorization: Bearer <access_token>`: the EdDSA JWT of a session \
                         body; it wins over the access cookie.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("lk_admin_…")
                    .description(Some(
                        "`Authorization: Bearer lk_admin_…`: an admin key from `latchkey \
                         admin-keys create`. Only the admin API (`/admin/v1`) accepts it, and \
                         nothing else authorizes that API.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "access_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "__Host-lk_access",
                "The access token, set by signup, login and refresh (HttpOnly; Secure; \
                 SameSite=Lax; Path=/).",
            ))),
        );
        components.add_security_scheme(
            "refresh_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "__Secure-lk_refresh",
                "The opaque refresh token, set by signup, login and refresh and never in a body \
                 (HttpOnly; Secure; SameSite=Strict; Path=/auth).",
            ))),
        );
    }
}

/// What the layers of `app::router` and the `ApiJson` extractor answer, on the operations they
/// cover (see the module comment).
struct Layers;

impl Modify for Layers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            // No CSRF check on the admin API (see `middleware::csrf`).
            let csrf_checked = !path.starts_with(crate::middleware::ADMIN_API);
            let operations = [
                (HttpMethod::Get, &mut item.get),
                (HttpMethod::Post, &mut item.post),
                (HttpMethod::Put, &mut item.put),
                (HttpMethod::Patch, &mut item.patch),
                (HttpMethod::Delete, &mut item.delete),
            ];
            for (method, operation) in operations {
                let Some(operation) = operation else { continue };
                if operation.request_body.is_some() {
                    add::<InvalidJson>(operation, "400");
                    add::<PayloadTooLarge>(operation, "413");
                    add::<UnsupportedMediaType>(operation, "415");
                    add::<ValidationFailed>(operation, "422");
                }
                if method != HttpMethod::Get && csrf_checked {
                    add::<CsrfRejected>(operation, "403");
                }
                add::<Internal>(operation, "500");
                add::<Unavailable>(operation, "503");
                for response in operation.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        with_request_id(response);
                    }
                }
            }
        }
        if let Some(components) = openapi.components.as_mut() {
            for response in components.responses.values_mut() {
                if let RefOr::T(response) = response {
                    with_request_id(response);
                }
            }
        }
    }
}

/// Adds the shared response `R` under `status`, unless the handler documents that status itself.
fn add<'r, R: ToResponse<'r>>(operation: &mut Operation, status: &str) {
    operation
        .responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| Ref::from_response_name(R::response().0).into());
}

fn with_request_id(response: &mut Response) {
    let header = HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(
            "The request's id: the client's own when it sent a sane one, else a new UUID.",
        ))
        .build();
    response.headers.insert("X-Request-Id".to_owned(), header);
}
