//! Forms: the body of a page POST, and the model a template draws a form from (its fields, what
//! the user typed, and the problems the flow reported).

use std::collections::BTreeMap;

use axum::extract::{FromRequest, Request};
use axum::http::header;
use axum::response::Response;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Pages;
use super::render::code_name;
use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::extract::MAX_BODY_BYTES;

/// An `application/x-www-form-urlencoded` body of at most 16 KiB, as the JSON API limits its
/// bodies. Fields a form does not know are ignored (browsers send the submit button's name,
/// password managers add their own); a body that cannot be read is answered with an error page.
pub struct PageForm<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for PageForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err(state.pages.error(&ApiError::UnsupportedMediaType));
        }
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| state.pages.error(&ApiError::PayloadTooLarge))?;
        serde_urlencoded::from_bytes(&bytes)
            .map(PageForm)
            .map_err(|_| state.pages.error(&ApiError::InvalidJson))
    }
}

/// One input of a form, as its template draws it.
#[derive(Serialize)]
pub struct Field {
    name: &'static str,
    label: String,
    /// The input's `type`.
    kind: &'static str,
    /// The `autocomplete` token password managers and browsers go by.
    autocomplete: &'static str,
    required: bool,
    /// What the user typed, shown again; never set for a password.
    value: Option<String>,
    hint: Option<String>,
    error: Option<String>,
    /// The ids of the hint and the error, for `aria-describedby`.
    describedby: Option<String>,
    autofocus: bool,
    /// The word the label adds to an optional field.
    optional: String,
}

/// A field of a form: name, input type, `autocomplete`, required.
pub type Spec = (&'static str, &'static str, &'static str, bool);

pub const EMAIL: Spec = ("email", "email", "email", true);
pub const NEW_PASSWORD: Spec = ("password", "password", "new-password", true);
pub const LOGIN_PASSWORD: Spec = ("password", "password", "current-password", true);
pub const DISPLAY_NAME: Spec = ("display_name", "text", "nickname", false);
pub const CURRENT_PASSWORD: Spec = ("current_password", "password", "current-password", true);
pub const CHANGED_PASSWORD: Spec = ("new_password", "password", "new-password", true);
pub const TOTP_CODE: Spec = ("code", "text", "one-time-code", true);
pub const RECOVERY_CODE: Spec = ("recovery_code", "text", "off", true);
pub const NEW_EMAIL: Spec = ("new_email", "email", "email", true);
pub const PASSKEY_NAME: Spec = ("passkey_name", "text", "off", false);

/// One problem in the summary above a form.
#[derive(Serialize)]
struct Problem {
    name: &'static str,
    message: String,
}

/// A form as its template draws it: the fields, and after a failed POST the form's own message
/// (`banner`) and each field's problem (also listed in the summary, in field order).
#[derive(Serialize)]
pub struct Form {
    fields: BTreeMap<&'static str, Field>,
    /// Field names in the order of the form, for the summary and the focus.
    #[serde(skip)]
    order: Vec<&'static str>,
    banner: Option<String>,
    problems: Vec<Problem>,
    summary: String,
}

impl Form {
    /// An empty form with these fields.
    pub fn new(pages: &Pages, specs: &[Spec]) -> Form {
        let mut fields = BTreeMap::new();
        for &(name, kind, autocomplete, required) in specs {
            let hint = pages.get(&format!("hints.{name}"));
            fields.insert(
                name,
                Field {
                    name,
                    label: pages.string(&format!("fields.{name}")),
                    kind,
                    autocomplete,
                    required,
                    value: None,
                    describedby: hint.as_ref().map(|_| format!("{name}-hint")),
                    hint,
                    error: None,
                    autofocus: false,
                    optional: pages.string("form.optional"),
                },
            );
        }
        Form {
            fields,
            order: specs.iter().map(|s| s.0).collect(),
            banner: None,
            problems: Vec::new(),
            summary: pages.string("form.summary"),
        }
    }

    /// The field `name` labelled and hinted with the catalogue's `{prefix}_label` and
    /// `{prefix}_hint` instead of its own (one name, two meanings: the passwordless code is no
    /// authenticator's).
    pub fn relabel(mut self, pages: &Pages, name: &str, prefix: &str) -> Form {
        if let Some(field) = self.fields.get_mut(name) {
            field.label = pages.string(&format!("{prefix}_label"));
            field.hint = pages.get(&format!("{prefix}_hint"));
        }
        self
    }

    /// Shows `value` again in the field `name` (never call this for a password).
    pub fn keep(mut self, name: &str, value: Option<&str>) -> Form {
        if let Some(field) = self.fields.get_mut(name) {
            field.value = value.filter(|v| !v.is_empty()).map(str::to_owned);
        }
        self
    }

    /// The problems of a failed flow: a 422's field problems next to their fields, the errors
    /// listed in `on_field` (code, field, catalogue key) next to that field, anything else as the
    /// form's message. The first field with a problem gets the focus, or the first field when
    /// the problem is the form's.
    pub fn fail(
        mut self,
        pages: &Pages,
        err: &ApiError,
        on_field: &[(ErrorCode, &str, &str)],
    ) -> Form {
        let (_, code, _) = err.parts();
        let mut problems: BTreeMap<String, String> = BTreeMap::new();
        if let Some(fields) = err.fields() {
            for (name, problem) in fields {
                problems.insert(name.clone(), pages.problem(problem));
            }
        }
        let mut banner = match err.fields() {
            Some(_) => None,
            None => Some(pages.string(&format!("errors.{}", code_name(code)))),
        };
        if let Some((_, name, key)) = on_field.iter().find(|(c, _, _)| *c == code) {
            problems.insert((*name).to_owned(), pages.string(&format!("errors.{key}")));
            banner = None;
        }
        for name in self.order.clone() {
            let Some(problem) = problems.remove(name) else {
                continue;
            };
            let Some(field) = self.fields.get_mut(name) else {
                continue;
            };
            // Field problems from the API read "is required"; errors of the form are sentences.
            let message = if err.fields().is_some() {
                pages
                    .string("form.field_error")
                    .replace("{label}", &field.label)
                    .replace("{problem}", &problem)
            } else {
                problem
            };
            field.describedby = Some(match &field.hint {
                Some(_) => format!("{name}-error {name}-hint"),
                None => format!("{name}-error"),
            });
            field.error = Some(message.clone());
            self.problems.push(Problem { name, message });
        }
        // A problem with a field the form does not show (say, `body`) is the form's.
        if banner.is_none() && self.problems.is_empty() {
            banner = Some(pages.string(&format!("errors.{}", code_name(code))));
        }
        self.banner = banner;
        let focus = self
            .problems
            .first()
            .map(|p| p.name)
            .or_else(|| self.order.first().copied());
        if let Some(field) = focus.and_then(|name| self.fields.get_mut(name)) {
            field.autofocus = true;
        }
        self
    }

    /// `fail`, with the catalogue's `errors.{key}` as the form's message when `err` is `code`
    /// (a form without fields, whose outcome needs its own words).
    pub fn fail_as(self, pages: &Pages, err: &ApiError, (code, key): (ErrorCode, &str)) -> Form {
        let mut form = self.fail(pages, err, &[]);
        if err.parts().1 == code {
            form.banner = Some(pages.string(&format!("errors.{key}")));
        }
        form
    }
}

/// The query of a page's GET: where to go afterwards, a notice to show, an emailed link's token.
/// A query that cannot be read is treated as empty.
#[derive(Debug, Default, serde::Deserialize)]
pub struct PageQuery {
    pub return_to: Option<String>,
    pub notice: Option<String>,
    pub token: Option<String>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PageQuery {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .uri
            .query()
            .and_then(|q| serde_urlencoded::from_str(q).ok())
            .unwrap_or_default())
    }
}

/// The owner's address when `token` is a live one-time token of `purpose`: a read that spends
/// nothing, for the GET of an emailed link (mail scanners follow links).
pub async fn live_token_owner(
    state: &AppState,
    purpose: crate::tokens::Purpose,
    token: &str,
) -> Result<Option<String>, ApiError> {
    // Longer than any token latchkey issues: not worth a lookup.
    if token.is_empty() || token.len() > 128 {
        return Ok(None);
    }
    let hash = crate::tokens::hash_opaque(purpose, &secrecy::SecretString::from(token));
    let found = crate::store::one_time_tokens::find_live(
        state.store.reader(),
        &hash,
        purpose,
        state.clock.now(),
    )
    .await?;
    Ok(found.map(|f| f.user_email))
}
