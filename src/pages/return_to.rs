//! `return_to`: where a page sends the browser after it succeeded, followed only to the public
//! URL's origin or one of `allowed_origins`, so no link can turn latchkey into an open redirect.

use url::form_urlencoded;

use crate::config::Settings;

/// The absolute URL `raw` names, when its origin is allowed; `None` otherwise (and then the page
/// goes where it goes by default). Relative references resolve against the public URL, with
/// the WHATWG rules browsers use, so `//evil.example` and `/\evil.example` name evil.example,
/// and are refused, as they would be followed.
pub fn allowed(settings: &Settings, raw: Option<&str>) -> Option<String> {
    let raw = raw?.trim();
    if raw.is_empty() || raw.len() > 2048 {
        return None;
    }
    let url = settings.public_url.join(raw).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let origin = url.origin().ascii_serialization();
    settings
        .allowed_origins
        .contains(&origin)
        .then(|| String::from(url))
}

/// `?return_to=…` for links between pages that carry it on, or nothing.
pub fn query(return_to: Option<&str>) -> String {
    link("", None, return_to)
}

/// `path` with a catalogue `notice` to show there and the `return_to` to carry on, encoded.
pub fn link(path: &str, notice: Option<&str>, return_to: Option<&str>) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(notice) = notice {
        query.append_pair("notice", notice);
    }
    if let Some(to) = return_to {
        query.append_pair("return_to", to);
    }
    match query.finish() {
        q if q.is_empty() => path.to_owned(),
        q => format!("{path}?{q}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    fn settings() -> Settings {
        Settings::resolve(Overrides {
            public_url: Some("https://auth.example.com".into()),
            allowed_origins: Some(vec!["https://app.example.com".into()]),
            key_encryption_key: Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()),
            smtp_url: Some("smtp://127.0.0.1:25".into()),
            ..Overrides::default()
        })
        .unwrap()
    }

    #[test]
    fn only_allowed_origins_are_followed() {
        let s = settings();
        for (raw, expected) in [
            ("/account", Some("https://auth.example.com/account")),
            ("account?x=1", Some("https://auth.example.com/account?x=1")),
            (
                "https://app.example.com/home",
                Some("https://app.example.com/home"),
            ),
            (
                "https://APP.example.com:443/",
                Some("https://app.example.com/"),
            ),
            ("https://app.example.com.evil.test/", None),
            ("http://app.example.com/", None),
            ("https://app.example.com:8443/", None),
            ("//evil.test/x", None),
            ("/\\evil.test/x", None),
            ("\\\\evil.test", None),
            ("javascript:alert(1)", None),
            ("data:text/html,hi", None),
            ("https://user@evil.test", None),
            ("", None),
            ("   ", None),
        ] {
            assert_eq!(allowed(&s, Some(raw)).as_deref(), expected, "{raw:?}");
        }
        assert_eq!(allowed(&s, None), None);
    }

    #[test]
    fn the_query_is_encoded() {
        assert_eq!(query(None), "");
        assert_eq!(link("/login", None, None), "/login");
        assert_eq!(
            link("/login", Some("check_email"), Some("/account")),
            "/login?notice=check_email&return_to=%2Faccount"
        );
        assert_eq!(
            query(Some("https://app.example.com/a?b=1&c=2")),
            "?return_to=https%3A%2F%2Fapp.example.com%2Fa%3Fb%3D1%26c%3D2"
        );
    }
}
