//! OpenID providers as configured: `[[oidc_providers]]` tables of the TOML file.
//!
//! ```toml
//! [[oidc_providers]]
//! id = "google"                    # in the URLs: /auth/oidc/google/start
//! name = "Google"                  # on the buttons
//! issuer = "https://accounts.google.com"
//! client_id = "…apps.googleusercontent.com"
//! client_secret = "…"
//! scopes = ["openid", "email", "profile"]   # the default
//! ```
//!
//! The redirect URI to register with the provider is `{public_url}/auth/oidc/{id}/callback`.

use std::collections::HashSet;

use anyhow::{Context, bail};
use openidconnect::IssuerUrl;
use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};

/// One `[[oidc_providers]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSetting {
    pub id: String,
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub scopes: Option<Vec<String>>,
}

/// A provider, checked at start.
#[derive(Clone, Serialize)]
pub struct Provider {
    pub id: String,
    pub name: String,
    #[serde(serialize_with = "show_issuer")]
    pub issuer: IssuerUrl,
    pub client_id: String,
    #[serde(serialize_with = "redacted")]
    pub client_secret: SecretString,
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("id", &self.id)
            .field("issuer", &self.issuer.as_str())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

fn show_issuer<S: Serializer>(issuer: &IssuerUrl, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(issuer.as_str())
}

fn redacted<S: Serializer>(_: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("[redacted]")
}

/// The checked providers: ids of 1 to 32 lowercase letters, digits and `-`, each once; issuers
/// that are `https` URLs (`http` only on a loopback host, for tests and development, or with
/// `insecure_dev`); scopes that include `openid`.
pub fn resolve(
    tables: Option<Vec<ProviderSetting>>,
    insecure_dev: bool,
) -> anyhow::Result<Vec<Provider>> {
    let mut seen = HashSet::new();
    let mut providers = Vec::new();
    for t in tables.unwrap_or_default() {
        let id_ok = (1..=32).contains(&t.id.len())
            && t.id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            bail!(
                "oidc provider id {:?} must be 1 to 32 of a-z, 0-9 and -",
                t.id
            );
        }
        if !seen.insert(t.id.clone()) {
            bail!("oidc provider {} is configured twice", t.id);
        }
        let name = t.name.trim();
        if name.is_empty() || name.chars().count() > 64 {
            bail!("oidc provider {}: name must be 1 to 64 characters", t.id);
        }
        let url = url::Url::parse(&t.issuer)
            .with_context(|| format!("oidc provider {}: issuer is not a URL", t.id))?;
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        if url.scheme() != "https" && !(url.scheme() == "http" && (loopback || insecure_dev)) {
            bail!("oidc provider {}: issuer must be an https URL", t.id);
        }
        if t.client_id.trim().is_empty() {
            bail!("oidc provider {}: client_id is empty", t.id);
        }
        let scopes = t
            .scopes
            .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]);
        if !scopes.iter().any(|s| s == "openid") {
            bail!("oidc provider {}: scopes must include openid", t.id);
        }
        providers.push(Provider {
            id: t.id,
            name: name.to_owned(),
            // As written: discovery compares the document's `issuer` with it exactly.
            issuer: IssuerUrl::new(t.issuer)?,
            client_id: t.client_id,
            client_secret: t.client_secret,
            // `openid` is added by the client itself.
            scopes: scopes.into_iter().filter(|s| s != "openid").collect(),
        });
    }
    Ok(providers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(id: &str, issuer: &str) -> ProviderSetting {
        ProviderSetting {
            id: id.into(),
            name: "Example".into(),
            issuer: issuer.into(),
            client_id: "client".into(),
            client_secret: SecretString::from("secret"),
            scopes: None,
        }
    }

    #[test]
    fn providers_are_checked() {
        let ok = resolve(
            Some(vec![table("google", "https://accounts.google.com")]),
            false,
        )
        .unwrap();
        assert_eq!(ok[0].scopes, ["email", "profile"]);
        assert_eq!(ok[0].issuer.as_str(), "https://accounts.google.com");
        assert!(
            format!("{:?}", ok[0]).contains("client") && !format!("{:?}", ok[0]).contains("secret")
        );
        let local = resolve(Some(vec![table("dev", "http://127.0.0.1:9000")]), false).unwrap();
        assert_eq!(local.len(), 1);
        for (tables, insecure, problem) in [
            (
                vec![table("Google", "https://a.example")],
                false,
                "must be 1 to 32",
            ),
            (
                vec![table("", "https://a.example")],
                false,
                "must be 1 to 32",
            ),
            (
                vec![table("a/b", "https://a.example")],
                false,
                "must be 1 to 32",
            ),
            (
                vec![table("a", "http://a.example")],
                false,
                "must be an https URL",
            ),
            (vec![table("a", "not a url")], false, "is not a URL"),
            (
                vec![
                    table("a", "https://a.example"),
                    table("a", "https://b.example"),
                ],
                false,
                "configured twice",
            ),
        ] {
            let err = resolve(Some(tables), insecure).unwrap_err().to_string();
            assert!(err.contains(problem), "{err}");
        }
        assert!(resolve(Some(vec![table("a", "http://a.example")]), true).is_ok());
        let mut no_openid = table("a", "https://a.example");
        no_openid.scopes = Some(vec!["email".into()]);
        let err = resolve(Some(vec![no_openid]), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("must include openid"), "{err}");
    }
}
