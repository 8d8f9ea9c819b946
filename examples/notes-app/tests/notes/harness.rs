//! A fresh database per test, the app on 127.0.0.1:0 (in this process or as a child process),
//! and an HTTP client.
//!
//! PostgreSQL: `LATCHKEY_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! creates one database per test. Unreachable, its variants are skipped with a note, unless
//! `LATCHKEY_TEST_REQUIRE_POSTGRES=1` or `CI` is set: then they fail. With
//! `LATCHKEY_TEST_POSTGRES_SERIALIZABLE=1` every transaction of a test database is SERIALIZABLE.

use std::time::Duration;

use latchkey::Config;
use latchkey::sqlx::{self, AnyPool};
use notes_app::Workspaces;
use serde_json::Value;
use tokio::io::AsyncBufReadExt as _;

/// Generates `mod name { sqlite(), postgres() }` for each `async fn name(db: Db)` listed.
#[macro_export]
macro_rules! db_tests {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::harness::Db::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::harness::postgres_available().await {
                    super::$name($crate::harness::Db::Postgres).await
                }
            }
        }
    )*};
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub const PASSWORD: &str = "correct horse battery staple";

/// latchkey's settings for the tests: a fixed test KEK, no rate limits, room in the hashing
/// queue for the concurrency tests.
const LATCHKEY_TOML: &str = r#"
public_url = "http://localhost:3000"
key_encryption_key = "bm90ZXMtYXBwIHRlc3Qga2V5OyBuZXZlciBpbiB1c2U="
rate_limits = "off"
hash_queue = 128
# On PostgreSQL a transaction is bounded by database_timeout (1 s by default): the slow-hook
# tests hold theirs longer on purpose.
database_timeout = "10s"
"#;

fn admin_url() -> String {
    std::env::var("LATCHKEY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub async fn postgres_available() -> bool {
    sqlx::any::install_default_drivers();
    let required = std::env::var("LATCHKEY_TEST_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok();
    let probe = tokio::time::timeout(Duration::from_secs(5), AnyPool::connect(&admin_url())).await;
    match probe {
        Ok(Ok(pool)) => {
            pool.close().await;
            true
        }
        _ if required => panic!("PostgreSQL is required and unreachable at {}", admin_url()),
        _ => {
            eprintln!("note: PostgreSQL unreachable: its variants are SKIPPED");
            false
        }
    }
}

/// A fresh database, dropped with the value.
pub struct TestDb {
    pub url: String,
    db: Db,
    name: String,
}

impl TestDb {
    pub async fn new(db: Db) -> TestDb {
        sqlx::any::install_default_drivers();
        let name = format!("notes_test_{}", uuid::Uuid::now_v7().simple());
        let url = match db {
            Db::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.db"));
                format!("sqlite://{}?mode=rwc", path.display())
            }
            Db::Postgres => {
                let admin = AnyPool::connect(&admin_url()).await.expect("PostgreSQL");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&admin)
                    .await
                    .expect("create the test database");
                // CI's variant: every transaction SERIALIZABLE, hooks included.
                if std::env::var("LATCHKEY_TEST_POSTGRES_SERIALIZABLE").is_ok_and(|v| v == "1") {
                    let sql = format!(
                        "ALTER DATABASE {name} SET default_transaction_isolation = 'serializable'"
                    );
                    sqlx::query(&sql)
                        .execute(&admin)
                        .await
                        .expect("serializable");
                }
                admin.close().await;
                let mut url = url::Url::parse(&admin_url()).expect("admin URL");
                url.set_path(&name);
                url.to_string()
            }
        };
        TestDb { url, db, name }
    }

    pub async fn pool(&self) -> AnyPool {
        AnyPool::connect(&self.url).await.expect("connect")
    }

    /// The rows of one table.
    pub async fn count(&self, table: &str) -> i64 {
        let pool = self.pool().await;
        let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&pool)
            .await
            .expect("count");
        pool.close().await;
        n
    }

    /// Users, profiles, sessions and workspaces: what one signup writes.
    pub async fn counts(&self) -> [i64; 4] {
        [
            self.count("users").await,
            self.count("profiles").await,
            self.count("sessions").await,
            self.count("workspaces").await,
        ]
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        match self.db {
            Db::Sqlite => {
                let base = std::env::temp_dir().join(format!("{name}.db"));
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", base.display()));
                }
            }
            Db::Postgres => {
                // Drop runs inside the test's runtime: the async work on a thread of its own.
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

/// The app, running, and a client for it.
pub struct App {
    pub address: String,
    pub client: reqwest::Client,
    pub db: TestDb,
    /// In this process only.
    pub latchkey: Option<latchkey::Latchkey>,
    _stop: Stop,
}

enum Stop {
    /// Dropped, it stops the server.
    InProcess {
        _server: tokio::sync::oneshot::Sender<()>,
    },
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    Child(tokio::process::Child),
}

impl App {
    /// The app in this process, with `hooks`.
    pub async fn start(db: Db, hooks: Workspaces) -> App {
        let db = TestDb::new(db).await;
        let pool = db.pool().await;
        let config = Config::from_toml(LATCHKEY_TOML).expect("test settings");
        let (router, latchkey) = notes_app::build(pool, config, hooks)
            .await
            .expect("the app builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = latchkey.clone();
        tokio::spawn(async move {
            let background = latchkey.background();
            let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
            let _ = axum::serve(listener, service)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            background.stop().await;
        });
        let mut app = App::new(address, db, Stop::InProcess { _server: stop });
        app.latchkey = Some(handle);
        app
    }

    /// An admin API key, stored as latchkey's CLI (`latchkey admin-keys create`) stores one.
    pub async fn admin_key(&self) -> String {
        let latchkey = self.latchkey.as_ref().expect("an app in this process");
        let new = latchkey::admin_keys::generate();
        let state = latchkey.state();
        let now = state.clock.now();
        let store = &state.store;
        store
            .create_admin_key(new.id, "notes tests".to_owned(), new.hash, now)
            .await
            .expect("admin key");
        secrecy::ExposeSecret::expose_secret(&new.key).to_owned()
    }

    /// The app's binary with `FAILPOINTS` set.
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    pub async fn start_process(db: Db, failpoints: &str) -> App {
        let db = TestDb::new(db).await;
        let config = std::env::temp_dir().join(format!("{}.toml", uuid::Uuid::now_v7()));
        std::fs::write(&config, LATCHKEY_TOML).unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_notes-app"))
            .env("NOTES_DATABASE_URL", &db.url)
            .env("NOTES_LISTEN", "127.0.0.1:0")
            .env("NOTES_LATCHKEY_CONFIG", &config)
            .env("FAILPOINTS", failpoints)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the notes-app binary starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let address = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(address) = line.strip_prefix("notes-app listening on ") {
                    return address.to_owned();
                }
            }
            panic!("the notes-app binary exited before listening");
        })
        .await
        .expect("the notes-app binary listens");
        let _ = std::fs::remove_file(config);
        App::new(address, db, Stop::Child(child))
    }

    fn new(address: String, db: TestDb, stop: Stop) -> App {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        App {
            address,
            client,
            db,
            latchkey: None,
            _stop: stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn signup(&self, email: &str, metadata: Option<Value>) -> reqwest::Response {
        let mut body = serde_json::json!({"email": email, "password": PASSWORD});
        if let Some(metadata) = metadata {
            body["metadata"] = metadata;
        }
        self.client
            .post(self.url("/auth/signup"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// A new account's access token.
    pub async fn signed_up(&self, email: &str, metadata: Option<Value>) -> String {
        let response = self.signup(email, metadata).await;
        assert_eq!(response.status(), 201, "signup of {email}");
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        if let Stop::Child(child) = self {
            let _ = child.start_kill();
        }
    }
}

/// The error body's `code`.
pub async fn error_code(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body["error"].clone())
}
