//! The two session cookies, built in exactly one place.
//!
//! | cookie                | attributes                                                          |
//! |-----------------------|---------------------------------------------------------------------|
//! | `__Host-lk_access`    | HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age = access lifetime    |
//! | `__Secure-lk_refresh` | HttpOnly; Secure; SameSite=Strict; Path=/auth; Max-Age = until idle  |
//!
//! | `__Host-lk_device`    | HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age = 180 days           |
//! | `__Host-lk_oidc`      | HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age = 10 minutes         |
//!
//! The OIDC cookie (see `crate::oidc::pending`) carries a sign-in with a provider from its start
//! to its callback, sealed; `Lax`, because the callback is a top-level navigation from the
//! provider's site. The callback clears it, whatever its outcome.
//!
//! The device cookie (see `crate::device`) is set by a successful login and never cleared by a
//! logout: it remembers that this browser signed in to the account before.
//!
//! Signup, login and refresh call `set_session`; logout and failed refreshes call `clear_session`,
//! which emits the same cookies with Max-Age=0. With `cookie_secure = false` the prefixes and
//! `Secure` are dropped (browsers refuse prefixed cookies without `Secure`).

use std::time::Duration;

use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use secrecy::{ExposeSecret, SecretString};

pub fn access_name(secure: bool) -> &'static str {
    if secure {
        "__Host-lk_access"
    } else {
        "lk_access"
    }
}

pub fn refresh_name(secure: bool) -> &'static str {
    if secure {
        "__Secure-lk_refresh"
    } else {
        "lk_refresh"
    }
}

fn access_cookie(secure: bool, value: String, max_age: Duration) -> Cookie<'static> {
    build(
        access_name(secure),
        "/",
        SameSite::Lax,
        secure,
        value,
        max_age,
    )
}

fn refresh_cookie(secure: bool, value: String, max_age: Duration) -> Cookie<'static> {
    build(
        refresh_name(secure),
        "/auth",
        SameSite::Strict,
        secure,
        value,
        max_age,
    )
}

fn build(
    name: &'static str,
    path: &'static str,
    same_site: SameSite,
    secure: bool,
    value: String,
    max_age: Duration,
) -> Cookie<'static> {
    let max_age = time::Duration::seconds(i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX));
    Cookie::build((name, value))
        .http_only(true)
        .secure(secure)
        .same_site(same_site)
        .path(path)
        .max_age(max_age)
        .build()
}

pub fn device_name(secure: bool) -> &'static str {
    if secure {
        "__Host-lk_device"
    } else {
        "lk_device"
    }
}

/// How long a browser is remembered as a device that signed in before.
pub const DEVICE_TTL: Duration = Duration::from_secs(180 * 24 * 3600);

/// Sets the device cookie.
pub fn set_device(jar: CookieJar, secure: bool, value: String) -> CookieJar {
    jar.add(build(
        device_name(secure),
        "/",
        SameSite::Lax,
        secure,
        value,
        DEVICE_TTL,
    ))
}

/// A cookie's value, when the request has the cookie and it is not empty (a cleared one).
fn value(jar: &CookieJar, name: &str) -> Option<String> {
    jar.get(name)
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty())
}

pub fn device_token(jar: &CookieJar, secure: bool) -> Option<String> {
    value(jar, device_name(secure))
}

pub fn oidc_name(secure: bool) -> &'static str {
    if secure { "__Host-lk_oidc" } else { "lk_oidc" }
}

fn oidc_cookie(secure: bool, value: String, max_age: Duration) -> Cookie<'static> {
    build(
        oidc_name(secure),
        "/",
        SameSite::Lax,
        secure,
        value,
        max_age,
    )
}

/// Sets the OIDC cookie: a sign-in with a provider started.
pub fn set_oidc(jar: CookieJar, secure: bool, sealed: String) -> CookieJar {
    jar.add(oidc_cookie(secure, sealed, crate::oidc::pending::TTL))
}

/// Clears the OIDC cookie, with the attributes it was set with.
pub fn clear_oidc(jar: CookieJar, secure: bool) -> CookieJar {
    let mut cookie = oidc_cookie(secure, String::new(), Duration::ZERO);
    cookie.make_removal();
    jar.add(cookie)
}

pub fn oidc_pending(jar: &CookieJar, secure: bool) -> Option<String> {
    value(jar, oidc_name(secure))
}

/// Sets both session cookies.
pub fn set_session(
    jar: CookieJar,
    secure: bool,
    access: &SecretString,
    access_ttl: Duration,
    refresh: &SecretString,
    refresh_ttl: Duration,
) -> CookieJar {
    jar.add(access_cookie(
        secure,
        access.expose_secret().to_owned(),
        access_ttl,
    ))
    .add(refresh_cookie(
        secure,
        refresh.expose_secret().to_owned(),
        refresh_ttl,
    ))
}

/// Clears both session cookies, with the attributes they were set with.
pub fn clear_session(jar: CookieJar, secure: bool) -> CookieJar {
    let mut access = access_cookie(secure, String::new(), Duration::ZERO);
    let mut refresh = refresh_cookie(secure, String::new(), Duration::ZERO);
    access.make_removal();
    refresh.make_removal();
    jar.add(access).add(refresh)
}

pub fn access_token(jar: &CookieJar, secure: bool) -> Option<String> {
    value(jar, access_name(secure))
}

pub fn refresh_token(jar: &CookieJar, secure: bool) -> Option<SecretString> {
    value(jar, refresh_name(secure)).map(SecretString::from)
}
