//! A real OpenID provider for the OIDC tests: panva's `oidc-provider` (OpenID Certified) from
//! npm, run by Node.js from `tests/oidc-provider/server.mjs`, one process per test, killed on
//! drop. The flow is driven without a browser: `Browser` follows the redirects between latchkey
//! and the provider, keeping each side's cookies apart (both are on 127.0.0.1).
//!
//! Without `node` or `tests/oidc-provider/node_modules` (`npm ci` there) these tests are skipped,
//! loudly, unless `LATCHKEY_TEST_REQUIRE_OIDC=1` or `CI` is set: then they fail (`.ci/run`
//! installs the package).

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use latchkey::config::Overrides;
use latchkey::oidc::ProviderSetting;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

use super::{PUBLIC_URL, ServerProcess, TestApp};

pub const CLIENT_ID: &str = "latchkey-test";
pub const CLIENT_SECRET: &str = "test-client-secret-of-32-bytes-or-more";
/// The provider's id in latchkey's settings, and so in its URLs.
pub const PROVIDER: &str = "testop";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc-provider")
}

/// Whether the provider tests run; panics when they are required and Node or the package is
/// missing.
pub fn available() -> bool {
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let installed = dir().join("node_modules/oidc-provider").exists();
    let required = super::required("LATCHKEY_TEST_REQUIRE_OIDC");
    if !(node && installed) {
        assert!(
            !required,
            "the OpenID provider tests are required but node or tests/oidc-provider/node_modules \
             is missing (npm ci --prefix tests/oidc-provider)"
        );
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            eprintln!(
                "note: node or tests/oidc-provider/node_modules missing: the OpenID provider \
                 tests are SKIPPED (set LATCHKEY_TEST_REQUIRE_OIDC=1 to make that a failure)"
            );
        });
    }
    node && installed
}

/// The provider process.
pub struct Provider {
    child: Child,
    pub issuer: String,
    client: reqwest::Client,
}

impl Provider {
    /// Starts the provider with latchkey's test client registered for `redirect_uri`.
    pub fn start(redirect_uri: &str) -> Provider {
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(dir())
            .env("CLIENT_ID", CLIENT_ID)
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .env("REDIRECT_URI", redirect_uri)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        // The rest is drained, so that the provider never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let port = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("the provider did not start: {line:?}"))
            .trim()
            .to_owned();
        Provider {
            child,
            issuer: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    /// latchkey's `[[oidc_providers]]` table for this provider.
    pub fn setting(&self) -> ProviderSetting {
        ProviderSetting {
            id: PROVIDER.into(),
            name: "Test Provider".into(),
            issuer: self.issuer.clone(),
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.to_owned().into(),
            scopes: None,
        }
    }

    /// Configures an app to sign in with this provider.
    pub fn configure(&self, o: &mut Overrides) {
        o.oidc_providers = Some(vec![self.setting()]);
    }

    async fn control(&self, path: &str, body: Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.issuer))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "{path}");
    }

    /// The account the next sign-in at the provider is (its claims besides `sub`).
    pub async fn will_sign_in(&self, sub: &str, email: &str, email_verified: bool) {
        let body = json!({"sub": sub, "email": email, "email_verified": email_verified, "name": "Ann Example"});
        self.control("/test/login", body).await;
    }

    /// The account the next sign-in at the provider is, with no address at all (neither in the
    /// ID token nor at the userinfo endpoint).
    pub async fn will_sign_in_without_address(&self, sub: &str) {
        let body = json!({"sub": sub, "name": "Ann Example"});
        self.control("/test/login", body).await;
    }

    /// The next ID token gets these claims (`null` removes one), signed with `key`: `k1` (the
    /// published key), `k2` (published only after `publish("k2")`) or `stranger`.
    pub async fn tamper(&self, claims: Value, key: &str) {
        self.control("/test/tamper", json!({"claims": claims, "key": key}))
            .await;
    }

    /// The JWKS lists `kid` from now on (a key rotation).
    pub async fn publish(&self, kid: &str) {
        self.control("/test/publish", json!({"kid": kid})).await;
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A latchkey to sign in to: the in-process `TestApp` or the binary (`ServerProcess`).
pub trait Served {
    fn http(&self) -> &reqwest::Client;
    fn at(&self, path: &str) -> String;
}

impl Served for TestApp {
    fn http(&self) -> &reqwest::Client {
        &self.client
    }
    fn at(&self, path: &str) -> String {
        self.url(path)
    }
}

impl Served for ServerProcess {
    fn http(&self) -> &reqwest::Client {
        &self.client
    }
    fn at(&self, path: &str) -> String {
        self.url(path)
    }
}

// For the binary, which the failpoint tests run.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
impl Provider {
    /// A TOML file configuring this provider, for the binary's `--config`; removed on drop.
    pub fn config_file(&self) -> ConfigFile {
        let path =
            std::env::temp_dir().join(format!("latchkey-oidc-{}.toml", uuid::Uuid::new_v4()));
        let toml = format!(
            "[[oidc_providers]]\nid = \"{PROVIDER}\"\nname = \"Test Provider\"\n\
             issuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n",
            self.issuer
        );
        std::fs::write(&path, toml).unwrap();
        ConfigFile(path)
    }
}

/// A temporary configuration file.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
pub struct ConfigFile(pub PathBuf);

#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
impl ConfigFile {
    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What a sign-in writes, counted: users, profiles, identities, sessions, audit events.
pub async fn written(pool: &sqlx::AnyPool) -> [i64; 5] {
    let mut counts = [0; 5];
    for (i, table) in [
        "users",
        "profiles",
        "identities",
        "sessions",
        "audit_events",
    ]
    .iter()
    .enumerate()
    {
        counts[i] = super::count(pool, &format!("SELECT COUNT(*) FROM {table}")).await;
    }
    counts
}

/// A browser without a page: the cookies of latchkey and of the provider, each kept for its
/// own side.
#[derive(Default)]
pub struct Browser {
    /// latchkey's cookies.
    pub cookies: HashMap<String, String>,
    provider_cookies: HashMap<String, String>,
}

/// Where a sign-in stopped: the callback URL the provider sent the browser to (on latchkey's
/// public URL), not yet followed.
pub struct AtCallback {
    /// Path and query, for latchkey's own address.
    pub path_and_query: String,
}

impl AtCallback {
    pub fn query(&self) -> HashMap<String, String> {
        let url = url::Url::parse(&format!("{PUBLIC_URL}{}", self.path_and_query)).unwrap();
        url.query_pairs().into_owned().collect()
    }

    /// The same callback with `name` set to `value` (a tampered answer).
    pub fn with(&self, name: &str, value: &str) -> AtCallback {
        let mut url = url::Url::parse(&format!("{PUBLIC_URL}{}", self.path_and_query)).unwrap();
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .into_owned()
            .filter(|(k, _)| k != name)
            .chain([(name.to_owned(), value.to_owned())])
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        AtCallback {
            path_and_query: format!("{}?{}", url.path(), url.query().unwrap()),
        }
    }
}

fn cookie_header(cookies: &HashMap<String, String>) -> String {
    cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn keep_cookies(jar: &mut HashMap<String, String>, response: &reqwest::Response) {
    for raw in response.headers().get_all(SET_COOKIE) {
        let raw = raw.to_str().unwrap();
        let (pair, attributes) = raw.split_once(';').unwrap_or((raw, ""));
        let (name, value) = pair.split_once('=').unwrap();
        let removed = attributes.to_ascii_lowercase().contains("max-age=0") || value.is_empty();
        match removed {
            true => jar.remove(name.trim()),
            false => jar.insert(name.trim().to_owned(), value.to_owned()),
        };
    }
}

impl Browser {
    /// A GET on latchkey with this browser's cookies; they are updated from the answer.
    pub async fn get(&mut self, app: &impl Served, path_and_query: &str) -> reqwest::Response {
        let response = app
            .http()
            .get(app.at(path_and_query))
            .header(COOKIE, cookie_header(&self.cookies))
            .send()
            .await
            .unwrap();
        keep_cookies(&mut self.cookies, &response);
        response
    }

    /// Follows a redirect to the provider through its login and consent (which the test
    /// provider completes at once) until it sends the browser back to latchkey.
    pub async fn through_provider(
        &mut self,
        app: &impl Served,
        mut location: String,
    ) -> AtCallback {
        for _ in 0..10 {
            if let Some(rest) = location.strip_prefix(PUBLIC_URL) {
                return AtCallback {
                    path_and_query: rest.to_owned(),
                };
            }
            let response = app
                .http()
                .get(&location)
                .header(COOKIE, cookie_header(&self.provider_cookies))
                .send()
                .await
                .unwrap();
            keep_cookies(&mut self.provider_cookies, &response);
            let status = response.status();
            let next = response
                .headers()
                .get(LOCATION)
                .map(|l| l.to_str().unwrap().to_owned());
            let Some(next) = next else {
                panic!(
                    "the provider answered {status}: {}",
                    response.text().await.unwrap()
                );
            };
            location = url::Url::parse(&location)
                .unwrap()
                .join(&next)
                .unwrap()
                .to_string();
        }
        panic!("too many redirects at the provider");
    }

    /// Starts a sign-in (`/auth/oidc/{PROVIDER}/start`, with `query`) and goes through the
    /// provider, up to the callback.
    pub async fn start(&mut self, app: &impl Served, query: &str) -> AtCallback {
        let started = self
            .get(app, &format!("/auth/oidc/{PROVIDER}/start{query}"))
            .await;
        assert_eq!(started.status(), 303, "start");
        let to = started.headers()[LOCATION].to_str().unwrap().to_owned();
        self.through_provider(app, to).await
    }

    /// The callback, followed with this browser's cookies.
    pub async fn callback(&mut self, app: &impl Served, at: &AtCallback) -> reqwest::Response {
        self.get(app, &at.path_and_query).await
    }

    /// A link of the provider's account that signs in next to the session of `access_token`:
    /// the JSON API's start (its cookie kept), the provider, the callback's answer.
    pub async fn link(&mut self, app: &impl Served, access_token: &str) -> reqwest::Response {
        let at = self.start_link(app, access_token).await;
        self.callback(app, &at).await
    }

    /// A link's start and the provider, up to the callback.
    pub async fn start_link(&mut self, app: &impl Served, access_token: &str) -> AtCallback {
        let linking = app
            .http()
            .post(app.at(&format!("/auth/oidc/{PROVIDER}/link")))
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap();
        assert_eq!(linking.status(), 200, "the link's start");
        keep_cookies(&mut self.cookies, &linking);
        let body: Value = linking.json().await.unwrap();
        let to = body["authorization_url"].as_str().unwrap().to_owned();
        self.through_provider(app, to).await
    }

    /// A whole sign-in: start, provider, callback.
    pub async fn sign_in(&mut self, app: &impl Served) -> reqwest::Response {
        let at = self.start(app, "").await;
        self.callback(app, &at).await
    }
}
