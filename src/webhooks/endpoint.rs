//! Webhook endpoints as configured: a URL, its signing secrets and its event filter.
//!
//! Two ways to configure them, merged:
//! - the contract's flags `--webhook-url A,B`, `--webhook-secret`, `--webhook-events`: every URL
//!   listed gets that secret and that filter;
//! - `[[webhooks]]` tables in the TOML file, each with its own `url`, `secret` and `events`.
//!
//! A secret is `whsec_<base64>` (the Standard Webhooks form); several separated by spaces are all
//! used at once (one signature each), so a receiver can move to a new secret without a gap.

use std::collections::HashSet;

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretSlice};
use serde::{Deserialize, Serialize, Serializer};
use url::Url;

use super::event::EventType;

/// One `[[webhooks]]` table of the TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSetting {
    pub url: String,
    /// One `whsec_…` secret, or several separated by spaces.
    pub secret: String,
    /// Event types; absent: all.
    pub events: Option<Vec<String>>,
}

/// An endpoint, resolved and checked at start.
#[derive(Clone, Serialize)]
pub struct Endpoint {
    #[serde(serialize_with = "show_url")]
    pub url: Url,
    #[serde(serialize_with = "redacted", rename = "secrets")]
    pub keys: Vec<SigningKey>,
    /// `None`: every event type.
    #[serde(serialize_with = "show_events")]
    pub events: Option<Vec<EventType>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url.as_str())
            .field("keys", &format_args!("[{} redacted]", self.keys.len()))
            .field("events", &self.events)
            .finish()
    }
}

impl Endpoint {
    pub fn wants(&self, event: EventType) -> bool {
        self.events
            .as_ref()
            .is_none_or(|list| list.contains(&event))
    }
}

/// The key of a `whsec_` secret: its base64-decoded bytes, never shown.
#[derive(Clone)]
pub struct SigningKey(std::sync::Arc<SecretSlice<u8>>);

impl SigningKey {
    /// `whsec_<base64 of 24 to 64 bytes>` (the specification's sizes).
    pub fn parse(secret: &str) -> anyhow::Result<SigningKey> {
        let Some(encoded) = secret.strip_prefix("whsec_") else {
            bail!("a webhook secret must be whsec_<base64>");
        };
        let bytes = STANDARD
            .decode(encoded)
            .ok()
            .filter(|b| (24..=64).contains(&b.len()))
            .context("a webhook secret must be whsec_ and the base64 of 24 to 64 bytes")?;
        Ok(SigningKey(std::sync::Arc::new(SecretSlice::from(bytes))))
    }

    pub fn bytes(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

/// Resolves the flags' endpoints and the file's into one list; refuses a bad URL, secret or
/// event type, and a URL configured twice (which filter and secret would it have?).
pub fn resolve(
    urls: Option<Vec<String>>,
    secret: Option<&str>,
    events: Option<Vec<String>>,
    tables: Option<Vec<EndpointSetting>>,
) -> anyhow::Result<Vec<Endpoint>> {
    let mut endpoints = Vec::new();
    let urls: Vec<String> = urls
        .unwrap_or_default()
        .into_iter()
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    if !urls.is_empty() {
        let secret = secret.context("webhook_url needs webhook_secret (whsec_…)")?;
        for url in urls {
            endpoints.push(endpoint(&url, secret, events.clone())?);
        }
    } else if secret.is_some() || events.is_some() {
        bail!("webhook_secret and webhook_events need webhook_url");
    }
    for table in tables.unwrap_or_default() {
        endpoints.push(endpoint(&table.url, &table.secret, table.events)?);
    }
    let mut seen = HashSet::new();
    for e in &endpoints {
        if !seen.insert(e.url.as_str().to_owned()) {
            bail!("webhook endpoint {} is configured twice", e.url);
        }
    }
    Ok(endpoints)
}

fn endpoint(url: &str, secret: &str, events: Option<Vec<String>>) -> anyhow::Result<Endpoint> {
    let parsed = Url::parse(url.trim()).with_context(|| format!("webhook URL {url:?}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        bail!("webhook URL {url:?} must be http:// or https:// with a host");
    }
    let keys = secret
        .split_whitespace()
        .map(SigningKey::parse)
        .collect::<anyhow::Result<Vec<_>>>()
        .with_context(|| format!("the secret of webhook {parsed}"))?;
    if keys.is_empty() {
        bail!("webhook {parsed} has no secret");
    }
    let events = events
        .map(|list| {
            list.iter()
                .filter(|e| !e.trim().is_empty())
                .map(|e| e.parse::<EventType>().map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .transpose()?;
    Ok(Endpoint {
        url: parsed,
        keys,
        events,
    })
}

fn show_url<S: Serializer>(url: &Url, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(url.as_str())
}

fn redacted<S: Serializer>(keys: &[SigningKey], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(keys.iter().map(|_| "<redacted>"))
}

fn show_events<S: Serializer>(events: &Option<Vec<EventType>>, s: S) -> Result<S::Ok, S::Error> {
    match events {
        Some(list) => s.collect_seq(list.iter().map(|e| e.as_str())),
        None => s.serialize_str("all"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn flags_and_tables_resolve_to_endpoints() {
        let endpoints = resolve(
            Some(vec![
                "http://a.example/hook".into(),
                "https://b.example/".into(),
            ]),
            Some(SECRET),
            Some(vec!["user.created".into(), "session.revoked".into()]),
            Some(vec![EndpointSetting {
                url: "http://c.example/".into(),
                secret: format!("{SECRET} {SECRET}"),
                events: None,
            }]),
        )
        .unwrap();
        assert_eq!(endpoints.len(), 3);
        assert!(endpoints[0].wants(EventType::UserCreated));
        assert!(!endpoints[1].wants(EventType::UserLogin));
        assert!(endpoints[2].wants(EventType::UserLogin));
        assert_eq!(endpoints[2].keys.len(), 2);
        assert_eq!(endpoints[0].keys[0].bytes().len(), 24);
    }

    #[test]
    fn bad_endpoints_are_refused() {
        let one = |url: &str, secret: Option<&str>, events: Option<Vec<String>>| {
            resolve(Some(vec![url.to_owned()]), secret, events, None)
        };
        assert!(one("http://a.example/", None, None).is_err());
        assert!(one("ftp://a.example/", Some(SECRET), None).is_err());
        assert!(
            one(
                "http://a.example/",
                Some("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
                None
            )
            .is_err()
        );
        assert!(one("http://a.example/", Some("whsec_c2hvcnQ="), None).is_err());
        assert!(
            one(
                "http://a.example/",
                Some(SECRET),
                Some(vec!["user.nope".into()])
            )
            .is_err()
        );
        assert!(resolve(None, Some(SECRET), None, None).is_err());
        assert!(
            resolve(
                Some(vec!["http://a.example/".into(), "http://a.example/".into()]),
                Some(SECRET),
                None,
                None
            )
            .is_err()
        );
    }
}
