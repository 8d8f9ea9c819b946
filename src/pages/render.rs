//! Rendering: the page templates, the string catalogue and the stylesheet, loaded once at start
//! (built in, each file replaceable from `pages_templates`), and the headers every page carries.

use std::path::Path;

use anyhow::{Context, bail};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::app::AppState;
use crate::config::Settings;
use crate::error::ApiError;
use crate::templates::{self, Builtin, Templates};

/// The page templates, as the engine names them.
const TEMPLATES: &[Builtin] = &[
    ("base.html", include_str!("templates/base.html")),
    ("macros.html", include_str!("templates/macros.html")),
    ("signup.html", include_str!("templates/signup.html")),
    ("login.html", include_str!("templates/login.html")),
    ("mfa.html", include_str!("templates/mfa.html")),
    (
        "passwordless.html",
        include_str!("templates/passwordless.html"),
    ),
    ("logout.html", include_str!("templates/logout.html")),
    ("forgot.html", include_str!("templates/forgot.html")),
    ("reset.html", include_str!("templates/reset.html")),
    ("verify.html", include_str!("templates/verify.html")),
    (
        "email_change.html",
        include_str!("templates/email_change.html"),
    ),
    ("account.html", include_str!("templates/account.html")),
    ("security.html", include_str!("templates/security.html")),
    ("error.html", include_str!("templates/error.html")),
];

const STRINGS: &str = include_str!("templates/strings.toml");
const STYLESHEET: &str = include_str!("templates/style.css");
/// The pages' one script: the passkey buttons (the WebAuthn API has no form).
const PASSKEYS_JS: &str = include_str!("templates/passkeys.js");

/// What the pages render with; built once at start, shared by every request.
pub struct Pages {
    templates: Templates,
    /// The string catalogue (`strings.toml`), given to every template as `t`.
    strings: toml::Table,
    stylesheet: String,
    /// `form-action` lists the allowed origins too: browsers apply it to the redirect after a
    /// form's POST, and `return_to` may lead to an allowed origin; and the OpenID providers'
    /// issuers, where the security page's "Link" forms lead (their authorization endpoints are
    /// on the issuer's origin at every provider we know).
    csp: HeaderValue,
}

impl Pages {
    /// The built-in pages, with the files of `pages_templates` in place of those it holds.
    /// Every template is rendered once with sample values, so a broken override stops the start.
    pub fn load(settings: &Settings) -> anyhow::Result<Pages> {
        // With the pages off, an operator's directory is not read at all.
        let dir = settings
            .pages_templates
            .as_deref()
            .filter(|_| settings.pages);
        let templates = Templates::load("page", TEMPLATES, dir)?;
        let strings = catalogue(dir)?;
        let stylesheet = templates::read("page", dir, "style.css", STYLESHEET)?;
        let mut form_action = settings.allowed_origins.clone();
        for provider in &settings.oidc_providers {
            if let Ok(url) = url::Url::parse(provider.issuer.as_str()) {
                form_action.push(url.origin().ascii_serialization());
            }
        }
        let csp = format!(
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; \
             img-src 'self' data:; form-action 'self' {}; \
             frame-ancestors 'none'; base-uri 'none'",
            form_action.join(" ")
        );
        let pages = Pages {
            templates,
            strings,
            stylesheet,
            csp: HeaderValue::from_str(csp.trim()).context("an allowed origin is not a header")?,
        };
        for (name, sample) in super::samples(&pages) {
            let notice = Some(pages.string("notices.signed_out"));
            pages
                .templates
                .check("page", name, pages.context(notice, &sample))?;
        }
        Ok(pages)
    }

    /// A string of the catalogue by its dotted path (`errors.internal`), if it has one.
    pub fn get(&self, path: &str) -> Option<String> {
        let mut parts = path.split('.');
        let mut value = self.strings.get(parts.next()?);
        for part in parts {
            value = value.and_then(|v| v.get(part));
        }
        value.and_then(toml::Value::as_str).map(str::to_owned)
    }

    /// A string of the catalogue by its dotted path; the path itself when the catalogue lacks
    /// it, which `load` makes impossible for the built-in keys.
    pub fn string(&self, path: &str) -> String {
        self.get(path).unwrap_or_else(|| path.to_owned())
    }

    /// The catalogue's wording of a field problem the API reported, or the API's own.
    pub fn problem(&self, problem: &str) -> String {
        self.strings
            .get("problems")
            .and_then(|p| p.get(problem))
            .and_then(toml::Value::as_str)
            .unwrap_or(problem)
            .to_owned()
    }

    fn context<'a, T: Serialize>(
        &'a self,
        notice: Option<String>,
        page: &'a T,
    ) -> PageContext<'a, T> {
        PageContext {
            t: &self.strings,
            notice,
            page,
        }
    }

    /// The page `name` with `status`: `page` is its own context, `notice` a message from the
    /// catalogue's `notices` shown at the top.
    pub fn render(
        &self,
        name: &str,
        status: StatusCode,
        notice: Option<String>,
        page: &impl Serialize,
    ) -> Response {
        match self.templates.render(name, self.context(notice, page)) {
            Ok(html) => (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                html,
            )
                .into_response(),
            // Checked at start, so only a bug gets here; the log says which.
            Err(err) => {
                ApiError::Internal(err.context(format!("rendering page {name}"))).log();
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    "Something went wrong on our side.",
                )
                    .into_response()
            }
        }
    }

    /// A page for an error that no form can show: its status, its message, and `Retry-After`
    /// where the API's error has one. Internal errors are logged with their cause.
    pub fn error(&self, err: &ApiError) -> Response {
        #[derive(Serialize)]
        struct ErrorPage {
            message: String,
        }
        err.log();
        let (status, code, _) = err.parts();
        let page = ErrorPage {
            message: self.string(&format!("errors.{}", code_name(code))),
        };
        with_retry_after(self.render("error.html", status, None, &page), err)
    }
}

/// What every template sees: `t` (the catalogue), `notice`, and the page's own fields.
#[derive(Serialize)]
struct PageContext<'a, T: Serialize> {
    t: &'a toml::Table,
    notice: Option<String>,
    #[serde(flatten)]
    page: &'a T,
}

/// The snake-case name of an error code, as the JSON body and the catalogue spell it.
pub fn code_name(code: crate::error::ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "internal".to_owned())
}

/// Adds the API error's `Retry-After` (429, 503) to a page that shows it.
pub fn with_retry_after(mut response: Response, err: &ApiError) -> Response {
    if let Some(secs) = err.retry_after() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// The built-in catalogue with the keys of `dir/strings.toml` in place of its own. A key the
/// built-in catalogue lacks is refused: it is a typo, and its string would never show.
fn catalogue(dir: Option<&Path>) -> anyhow::Result<toml::Table> {
    let mut strings: toml::Table = STRINGS.parse().context("built-in strings.toml")?;
    let text = templates::read("page", dir, "strings.toml", STRINGS)?;
    let custom: toml::Table = text.parse().context("page strings.toml")?;
    for (section, values) in custom {
        let (Some(toml::Value::Table(own)), toml::Value::Table(values)) =
            (strings.get_mut(&section), values)
        else {
            bail!("page strings.toml: unknown section or value [{section}]");
        };
        for (key, value) in values {
            match (own.get_mut(&key), value) {
                (Some(slot @ toml::Value::String(_)), value @ toml::Value::String(_)) => {
                    *slot = value
                }
                // Problems are keyed by the API's wording, which a catalogue may add to.
                (None, value @ toml::Value::String(_)) if section == "problems" => {
                    own.insert(key, value);
                }
                _ => bail!("page strings.toml: unknown key or not a string: {section}.{key}"),
            }
        }
    }
    Ok(strings)
}

/// The headers of every response of the pages: the CSP, no framing, no sniffing, no referrer
/// (token pages carry the token in their URL), and no caching unless a handler chose otherwise.
pub async fn security_headers(State(state): State<AppState>, mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, state.pages.csp.clone());
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The answer to a panic in a page: the 500 error page, its cause in the log.
pub fn panic_page(
    state: &AppState,
) -> impl Fn(Box<dyn std::any::Any + Send + 'static>) -> Response + Clone + Send + Sync + 'static {
    let pages = state.pages.clone();
    move |_panic| {
        pages.error(&ApiError::Internal(anyhow::anyhow!(
            "a page handler panicked"
        )))
    }
}

/// GET /pages/style.css: the one stylesheet.
pub async fn stylesheet(State(state): State<AppState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        state.pages.stylesheet.clone(),
    )
        .into_response()
}

/// GET /pages/passkeys.js: the passkey buttons (built in; not replaceable, it is code).
pub async fn passkeys_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        PASSKEYS_JS,
    )
        .into_response()
}

/// `303 See Other` to `location`: the end of every successful POST.
pub fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response(),
        Err(_) => (StatusCode::SEE_OTHER, [(header::LOCATION, "/account")]).into_response(),
    }
}
