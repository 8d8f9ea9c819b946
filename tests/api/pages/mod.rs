//! The hosted pages, over HTTP (every page and form: statuses, headers, redirects, cookies, rows)
//! and in a real browser (`browser`, headless Chromium).

mod account;
mod browser;
mod email_change;
mod entry;
#[cfg(feature = "failpoints")]
mod failpoints;
mod links;
mod mfa;
mod passwordless;
mod security;
mod settings;

use std::collections::HashMap;

use reqwest::header::{CONTENT_TYPE, LOCATION};

use crate::helpers::*;

/// A browser's part of the HTTP exchange, for the pages: it keeps cookies (by path, as a browser
/// does: the refresh cookie only goes to `/auth`), sends forms as browsers do, and does not
/// follow redirects, so each test sees every 303.
pub struct Visitor<'a> {
    pub app: &'a TestApp,
    /// name → (value, path)
    pub cookies: HashMap<String, (String, String)>,
}

/// A page's answer, read once.
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no Location; status {}: {}", self.status, self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The cookies this answer set, parsed.
    pub fn set_cookies(&self) -> HashMap<String, SetCookie> {
        set_cookies(&self.headers)
    }

    /// Asserts a 303 to `to` (exactly) and returns self.
    pub fn see_other(&self, to: &str) -> &Page {
        assert_eq!(self.status, 303, "{}", self.body);
        assert_eq!(self.location(), to);
        self
    }
}

impl<'a> Visitor<'a> {
    pub fn new(app: &'a TestApp) -> Visitor<'a> {
        Visitor {
            app,
            cookies: HashMap::new(),
        }
    }

    /// A visitor carrying the session cookies of a JSON signup or login.
    pub fn with_session(app: &'a TestApp, session: &Session) -> Visitor<'a> {
        let mut visitor = Visitor::new(app);
        visitor.keep(&session.cookies);
        visitor
    }

    fn keep(&mut self, set: &HashMap<String, SetCookie>) {
        for (name, cookie) in set {
            let path = cookie
                .attributes
                .iter()
                .find_map(|a| a.strip_prefix("path="))
                .unwrap_or("/")
                .to_owned();
            if cookie.attributes.iter().any(|a| a == "max-age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies
                    .insert(name.clone(), (cookie.value.clone(), path));
            }
        }
    }

    fn cookie_header(&self, path: &str) -> String {
        let mut pairs: Vec<String> = self
            .cookies
            .iter()
            .filter(|(_, (_, cookie_path))| path.starts_with(cookie_path.as_str()))
            .map(|(name, (value, _))| format!("{name}={value}"))
            .collect();
        pairs.sort();
        pairs.join("; ")
    }

    pub fn has(&self, name: &str) -> bool {
        self.cookies.contains_key(name)
    }

    async fn read(&mut self, response: reqwest::Response) -> Page {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        self.keep(&set_cookies(&headers));
        let body = response.text().await.unwrap();
        Page {
            status,
            headers,
            body,
        }
    }

    /// GET of a path (with its query) or of an absolute URL on the app.
    pub async fn get(&mut self, path: &str) -> Page {
        let path = path.strip_prefix(PUBLIC_URL).unwrap_or(path);
        let only_path = path.split('?').next().unwrap();
        let response = self
            .app
            .client
            .get(self.app.url(path))
            .header("cookie", self.cookie_header(only_path))
            .send()
            .await
            .unwrap();
        self.read(response).await
    }

    /// POST of a form, as a browser on the public URL's origin sends it.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let response = self
            .app
            .client
            .post(self.app.url(path))
            .header("cookie", self.cookie_header(path))
            .header("origin", PUBLIC_URL)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        self.read(response).await
    }

    /// Follows 303s with GETs, as a browser does, to the page they end on.
    pub async fn follow(&mut self, mut page: Page) -> Page {
        for _ in 0..5 {
            if page.status != 303 {
                return page;
            }
            let to = page.location().to_owned();
            page = self.get(&to).await;
        }
        panic!("more than five redirects");
    }
}

/// Asserts the headers every page carries.
pub fn assert_page_headers(page: &Page, context: &str) {
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8"),
        "{context}"
    );
    let csp = page.header("content-security-policy").unwrap_or("");
    for directive in [
        "default-src 'none'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self' http://localhost:8080",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{context}: {directive} in {csp}");
    }
    // The one script is the pages' own file (the passkey buttons): nothing inline, nothing
    // from elsewhere.
    assert!(csp.contains("script-src 'self';"), "{context}: {csp}");
    assert!(!csp.contains("unsafe"), "{context}: {csp}");
    assert_eq!(
        page.header("x-content-type-options"),
        Some("nosniff"),
        "{context}"
    );
    assert_eq!(
        page.header("referrer-policy"),
        Some("no-referrer"),
        "{context}"
    );
    assert_eq!(page.header("cache-control"), Some("no-store"), "{context}");
    assert_eq!(page.header("x-frame-options"), Some("DENY"), "{context}");
}

/// The text of the element with `id`'s attribute list, e.g. the `<input …>` of a field.
pub fn input<'p>(body: &'p str, id: &str) -> &'p str {
    let start = body
        .find(&format!("<input id=\"{id}\""))
        .unwrap_or_else(|| panic!("no input {id} in {body}"));
    let end = start + body[start..].find('>').unwrap();
    &body[start..=end]
}
