//! Test harness: `TestApp` runs the real router on 127.0.0.1:0 against a fresh database, and
//! `db_tests!` turns one `async fn test(db: Db)` into a SQLite and a PostgreSQL test.
//!
//! PostgreSQL: `LATCHKEY_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! is used to create one database per test. When it cannot be reached the PostgreSQL variants are
//! skipped, loudly, unless `LATCHKEY_TEST_REQUIRE_POSTGRES=1` or `CI` is set: then they fail.
//! With `LATCHKEY_TEST_POSTGRES_SERIALIZABLE=1` each PostgreSQL test database runs every
//! transaction at SERIALIZABLE isolation (a CI variant, see `.ci/run`).

pub mod authenticator;
pub mod oidc;
mod process;
mod receiver;
mod smtp;
mod tcp_proxy;

use std::collections::HashMap;
use std::io::Write as _;
use std::time::Duration;

use latchkey::Latchkey;
use latchkey::app::{self, AppState};
use latchkey::clock::Clock;
use latchkey::config::{Overrides, Settings, Toggle};
use latchkey::keys::Kek;
use reqwest::header::{HeaderMap, SET_COOKIE};
use serde_json::Value;
use sqlx::AnyPool;
use tokio::sync::{OnceCell, oneshot};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Generates `mod name { sqlite(), postgres() }` for each `async fn name(db: Db)` listed.
#[macro_export]
macro_rules! db_tests {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Db::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::helpers::postgres_available().await {
                    super::$name($crate::helpers::Db::Postgres).await
                }
            }
        }
    )*};
}

pub fn admin_url() -> String {
    std::env::var("LATCHKEY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

static POSTGRES: OnceCell<bool> = OnceCell::const_new();

/// Whether tests that need a peer (PostgreSQL, a browser, an OpenID provider) must fail instead
/// of being skipped without it: `var=1`, or `CI` set.
pub fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

/// Whether the PostgreSQL variants run; panics when PostgreSQL is required and unreachable.
pub async fn postgres_available() -> bool {
    let available = *POSTGRES
        .get_or_init(|| async {
            sqlx::any::install_default_drivers();
            let probe =
                tokio::time::timeout(Duration::from_secs(5), AnyPool::connect(&admin_url())).await;
            matches!(probe, Ok(Ok(_)))
        })
        .await;
    let required = required("LATCHKEY_TEST_REQUIRE_POSTGRES");
    if !available {
        assert!(
            !required,
            "PostgreSQL is required for these tests but unreachable at {}",
            admin_url()
        );
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            // Written past the test harness's capture, so the skip is seen.
            let _ = writeln!(
                std::io::stderr(),
                "note: PostgreSQL unreachable at {}: PostgreSQL variants of the tests are SKIPPED \
                 (set LATCHKEY_TEST_REQUIRE_POSTGRES=1 to make that a failure)",
                admin_url()
            );
        });
    }
    available
}

/// A fresh database, dropped with the value.
pub struct TestDb {
    pub kind: Db,
    pub url: String,
    name: String,
}

impl TestDb {
    pub async fn new(kind: Db) -> TestDb {
        let name = format!("latchkey_test_{}", uuid::Uuid::new_v4().simple());
        match kind {
            Db::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.db"));
                TestDb {
                    kind,
                    url: format!("sqlite://{}", path.display()),
                    name,
                }
            }
            Db::Postgres => {
                sqlx::any::install_default_drivers();
                let admin = AnyPool::connect(&admin_url())
                    .await
                    .expect("PostgreSQL reachable");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&admin)
                    .await
                    .expect("create test database");
                // The CI variant for distributed SQL (CockroachDB, YugabyteDB default to it):
                // every transaction of the test database SERIALIZABLE.
                if std::env::var("LATCHKEY_TEST_POSTGRES_SERIALIZABLE").is_ok_and(|v| v == "1") {
                    let sql = format!(
                        "ALTER DATABASE {name} SET default_transaction_isolation = 'serializable'"
                    );
                    sqlx::query(&sql)
                        .execute(&admin)
                        .await
                        .expect("make the test database serializable");
                }
                admin.close().await;
                let mut url = url::Url::parse(&admin_url()).expect("admin URL");
                url.set_path(&name);
                TestDb {
                    kind,
                    url: url.to_string(),
                    name,
                }
            }
        }
    }

    /// A pool on the test database, to check rows.
    pub async fn pool(&self) -> AnyPool {
        sqlx::any::install_default_drivers();
        AnyPool::connect(&self.url)
            .await
            .expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match self.kind {
            Db::Sqlite => {
                let base = std::env::temp_dir().join(format!("{}.db", self.name));
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", base.display()));
                }
            }
            Db::Postgres => {
                let name = self.name.clone();
                // Drop runs inside the test's runtime: do the async work on a thread of its own.
                let _ = std::thread::spawn(move || {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        return;
                    };
                    rt.block_on(async {
                        if let Ok(admin) = AnyPool::connect(&admin_url()).await {
                            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                            let _ = sqlx::query(&sql).execute(&admin).await;
                            admin.close().await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

pub const PUBLIC_URL: &str = "http://localhost:8080";

/// Settings for tests: rate limits off, a KEK that lives in memory, no files in the work tree.
pub fn test_overrides(db: &TestDb, kek: &str) -> Overrides {
    Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        database_url: Some(db.url.clone()),
        public_url: Some(PUBLIC_URL.to_owned()),
        rate_limits: Some(Toggle::Off),
        key_encryption_key: Some(kek.to_owned()),
        hash_threads: Some(2),
        ..Overrides::default()
    }
}

/// A running server on a test database.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub clock: Clock,
    pub state: AppState,
    pub kek: String,
    shutdown: Option<oneshot::Sender<()>>,
    pool: AnyPool,
    // Last: dropped after the server stopped.
    pub db: std::sync::Arc<TestDb>,
}

impl TestApp {
    pub async fn spawn(db: Db) -> TestApp {
        TestApp::spawn_with(db, |_| {}).await
    }

    pub async fn spawn_with(db: Db, configure: impl FnOnce(&mut Overrides)) -> TestApp {
        let db = std::sync::Arc::new(TestDb::new(db).await);
        TestApp::start(db, Kek::generate_encoded(), configure).await
    }

    /// A second instance on the same database and keys, as behind a load balancer.
    pub async fn another_instance(&self, configure: impl FnOnce(&mut Overrides)) -> TestApp {
        TestApp::start(self.db.clone(), self.kek.clone(), configure).await
    }

    /// A server whose public URL is its own address, for a real browser: links, redirects and
    /// the origin check all point at the server itself.
    #[allow(dead_code)]
    pub async fn spawn_at_own_url(db: Db, configure: impl FnOnce(&mut Overrides)) -> TestApp {
        TestApp::spawn_at_own_host(db, "127.0.0.1", configure).await
    }

    /// `spawn_at_own_url` with the public URL on `host` (a name of the loopback address): a
    /// domain name, `localhost`, for passkeys (WebAuthn takes no IP address as relying party).
    pub async fn spawn_at_own_host(
        db: Db,
        host: &str,
        configure: impl FnOnce(&mut Overrides),
    ) -> TestApp {
        let db = std::sync::Arc::new(TestDb::new(db).await);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let own = format!("http://{host}:{port}");
        TestApp::start_on(listener, db, Kek::generate_encoded(), |o| {
            o.public_url = Some(own);
            configure(o);
        })
        .await
    }

    pub async fn start(
        db: std::sync::Arc<TestDb>,
        kek: String,
        configure: impl FnOnce(&mut Overrides),
    ) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        TestApp::start_on(listener, db, kek, configure).await
    }

    async fn start_on(
        listener: tokio::net::TcpListener,
        db: std::sync::Arc<TestDb>,
        kek: String,
        configure: impl FnOnce(&mut Overrides),
    ) -> TestApp {
        // Logs go through the test harness's capture: shown only for failing tests.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,sqlx=warn")
            .with_test_writer()
            .try_init();
        let mut overrides = test_overrides(&db, &kek);
        configure(&mut overrides);
        let settings = Settings::resolve(overrides).expect("valid test settings");
        let clock = Clock::default();
        let state = AppState::build(settings, clock.clone())
            .await
            .expect("app builds");
        let address = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(app::serve(
            listener,
            Latchkey::from_state(state.clone()),
            async {
                let _ = rx.await;
            },
        ));
        let pool = db.pool().await;
        TestApp {
            address,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            clock,
            state,
            kek,
            shutdown: Some(tx),
            pool,
            db,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn signup(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/auth/signup",
            &serde_json::json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/auth/login",
            &serde_json::json!({"email": email, "password": password}),
        )
        .await
    }

    /// Signs up a fresh account and returns its session cookies.
    pub async fn signed_up(&self, email: &str) -> Session {
        let response = self.signup(email, PASSWORD).await;
        assert_eq!(response.status(), 201, "signup of {email}");
        Session::from_response(response).await
    }

    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.client
            .post(self.url("/auth/refresh"))
            .header("cookie", format!("__Secure-lk_refresh={refresh_token}"))
            .send()
            .await
            .unwrap()
    }

    /// The entry of `GET /auth/sessions` for the session of `access_token` (`current: true`).
    pub async fn current_session(&self, access_token: &str) -> Value {
        let listed: Value = self
            .client
            .get(self.url("/auth/sessions"))
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let sessions = listed["sessions"].as_array().expect("sessions");
        let current = sessions.iter().find(|s| s["current"] == true);
        current.expect("the current session").clone()
    }

    pub async fn me(&self, access_token: &str) -> reqwest::Response {
        self.client
            .get(self.url("/auth/me"))
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap()
    }

    /// `SELECT COUNT(*)` or any single integer.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    /// One text column of one row.
    pub async fn text(&self, sql: &str) -> Option<String> {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Webhooks to `url` with `WEBHOOK_SECRET`, fast retries.
pub fn with_receiver(o: &mut Overrides, url: &str) {
    o.webhook_url = Some(vec![url.to_owned()]);
    o.webhook_secret = Some(WEBHOOK_SECRET.to_owned());
    o.webhook_retry_base_ms = Some(20);
}

pub const PASSWORD: &str = "correct horse battery staple";

/// The contract's 500, byte for byte: nothing about the cause leaks.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
pub const INTERNAL: &str =
    r#"{"error":{"code":"internal","message":"Something went wrong on our side."}}"#;

/// A single integer (`SELECT COUNT(*) …`) from a pool of the test database.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
pub async fn count(pool: &AnyPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A 500 `internal` in the contract's shape, with no cookie.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
pub async fn assert_internal_without_cookies(response: reqwest::Response, context: &str) {
    assert_eq!(response.status(), 500, "{context}: status");
    assert!(
        response.headers().get("set-cookie").is_none(),
        "{context}: no cookie on a failure, got {:?}",
        response.headers().get_all("set-cookie")
    );
    assert!(
        response.headers().contains_key("x-request-id"),
        "{context}: X-Request-Id"
    );
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "{context}: content type"
    );
    let body = response.text().await.unwrap();
    assert_eq!(body, INTERNAL, "{context}: body");
}

/// The contract's invariant: no user without a profile.
pub const ORPHANS: &str =
    "SELECT COUNT(*) FROM users u LEFT JOIN profiles p ON p.user_id = u.id WHERE p.user_id IS NULL";

/// The tokens a session response carried.
pub struct Session {
    pub body: Value,
    pub access_token: String,
    pub refresh_token: String,
    pub cookies: HashMap<String, SetCookie>,
}

impl Session {
    pub async fn from_response(response: reqwest::Response) -> Session {
        let cookies = set_cookies(response.headers());
        let body: Value = response.json().await.unwrap();
        Session {
            access_token: body["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
            refresh_token: cookies["__Secure-lk_refresh"].value.clone(),
            body,
            cookies,
        }
    }

    pub fn user_id(&self) -> &str {
        self.body["user"]["id"].as_str().unwrap()
    }
}

/// A parsed `Set-Cookie` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCookie {
    pub value: String,
    /// Attributes, lowercase names, in a fixed order for comparison.
    pub attributes: Vec<String>,
}

pub fn set_cookies(headers: &HeaderMap) -> HashMap<String, SetCookie> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| {
            let raw = v.to_str().unwrap();
            let mut parts = raw.split(';').map(str::trim);
            let (name, value) = parts.next().unwrap().split_once('=').unwrap();
            let mut attributes: Vec<String> = parts
                .filter(|a| !a.to_ascii_lowercase().starts_with("expires="))
                .map(|a| match a.split_once('=') {
                    Some((k, v)) => format!("{}={v}", k.to_ascii_lowercase()),
                    None => a.to_ascii_lowercase(),
                })
                .collect();
            attributes.sort();
            (
                name.to_owned(),
                SetCookie {
                    value: value.to_owned(),
                    attributes,
                },
            )
        })
        .collect()
}

/// Sorted attributes, written as in the contract.
pub fn attrs(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_owned().to_owned()).collect();
    v.sort();
    v
}

pub use futures_util::future::join_all;
#[cfg(feature = "failpoints")]
pub use process::disable_with_cli;
pub use process::{ServerProcess, run};
pub use receiver::{Delivery, Receiver, WEBHOOK_SECRET, WEBHOOK_SECRET_2, verify_signature};
pub use smtp::{Mail, SmtpSink};
pub use tcp_proxy::{Mode as ProxyMode, TcpProxy};

// Helpers for the session tests (refresh, logout, me).

/// The body of every refused refresh: 401 `session_revoked`.
pub fn session_revoked() -> Value {
    serde_json::json!({"error": {"code": "session_revoked", "message": "This session has ended. Please log in again."}})
}

/// The body of every request without a valid access token: 401 `unauthenticated`.
pub fn unauthenticated() -> Value {
    serde_json::json!({"error": {"code": "unauthenticated", "message": "Authentication is required."}})
}

/// Asserts that a session response set both cookies exactly as the contract says: the access
/// token for 900 s on Path=/, the refresh token (256 bits, base64url) for `refresh_max_age` on
/// Path=/auth; the mirror of `assert_session_cookies_cleared`.
pub fn assert_session_cookies_set(session: &Session, refresh_max_age: u64) {
    let others: Vec<&String> = session
        .cookies
        .keys()
        .filter(|name| !matches!(name.as_str(), "__Host-lk_access" | "__Secure-lk_refresh"))
        .collect();
    assert!(
        others.is_empty() || others == ["__Host-lk_device"],
        "only the session cookies and, after a login, the device cookie: {:?}",
        session.cookies
    );
    let access = &session.cookies["__Host-lk_access"];
    assert_eq!(access.value, session.access_token);
    assert_eq!(
        access.attributes,
        attrs(&[
            "httponly",
            "secure",
            "samesite=Lax",
            "path=/",
            "max-age=900"
        ])
    );
    let refresh = &session.cookies["__Secure-lk_refresh"];
    let max_age = format!("max-age={refresh_max_age}");
    assert_eq!(
        refresh.attributes,
        attrs(&[
            "httponly",
            "secure",
            "samesite=Strict",
            "path=/auth",
            &max_age
        ])
    );
    assert_eq!(refresh.value.len(), 43, "256 bits, base64url");
}

/// Asserts that a login set the device cookie (see `latchkey::device`), exactly.
pub fn assert_device_cookie_set(session: &Session) {
    let device = &session.cookies["__Host-lk_device"];
    assert_eq!(
        device.attributes,
        attrs(&[
            "httponly",
            "secure",
            "samesite=Lax",
            "path=/",
            "max-age=15552000"
        ])
    );
    let (id, mac) = device.value.split_once('.').expect("id.mac");
    assert_eq!(
        (id.len(), mac.len()),
        (22, 43),
        "128-bit id, 256-bit MAC, base64url"
    );
}

/// Asserts that a response clears both session cookies: empty values, Max-Age=0 and otherwise
/// exactly the attributes they are set with (a browser only replaces a cookie of the same Path).
pub fn assert_session_cookies_cleared(headers: &HeaderMap) {
    let cookies = set_cookies(headers);
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    let access = &cookies["__Host-lk_access"];
    assert_eq!(access.value, "");
    assert_eq!(
        access.attributes,
        attrs(&["httponly", "secure", "samesite=Lax", "path=/", "max-age=0"])
    );
    let refresh = &cookies["__Secure-lk_refresh"];
    assert_eq!(refresh.value, "");
    assert_eq!(
        refresh.attributes,
        attrs(&[
            "httponly",
            "secure",
            "samesite=Strict",
            "path=/auth",
            "max-age=0"
        ])
    );
}

impl TestApp {
    /// A server whose webhooks go to `receiver` (every event type, `WEBHOOK_SECRET`), retrying
    /// after 20 ms, doubling.
    pub async fn spawn_with_receiver(
        db: Db,
        receiver: &Receiver,
        configure: impl FnOnce(&mut Overrides),
    ) -> TestApp {
        let url = receiver.url();
        TestApp::spawn_with(db, move |o| {
            with_receiver(o, &url);
            configure(o);
        })
        .await
    }

    /// The claims of an access token (its payload, not verified: the server's own check is
    /// tested elsewhere).
    pub fn claims(access_token: &str) -> Value {
        use base64::Engine as _;
        let payload = access_token.split('.').nth(1).expect("a JWT");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("JSON claims")
    }

    /// A POST without a body whose `Cookie` header is `cookie`.
    pub async fn post_with_cookie(&self, path: &str, cookie: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
    }
}
