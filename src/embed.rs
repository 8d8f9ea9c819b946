//! latchkey inside an axum application: build it from a [`Config`] (and, usually, the
//! application's own database pool), mount its [`router`](Latchkey::router), start its
//! [`background`](Latchkey::background) work, and use [`AuthUser`] in the application's own
//! handlers. The standalone server (`latchkey serve`) is assembled with exactly these calls.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::response::{IntoResponse as _, Response};
use sqlx::AnyPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::app::{self, AppState};
use crate::clock::Clock;
use crate::config::{Overrides, Settings};
use crate::error::ApiError;
use crate::hooks::{DynHooks, Hooks, NoHooks};

/// latchkey's settings: the keys of the `latchkey.toml` file the README lists, checked once.
#[derive(Clone)]
pub struct Config {
    settings: Settings,
}

impl Config {
    /// Settings from TOML text, with the defaults for every key it leaves out. Environment
    /// variables are not read: the application decides where its settings come from.
    pub fn from_toml(text: &str) -> Result<Config, Error> {
        let overrides: Overrides = toml::from_str(text)
            .map_err(|err| Error(anyhow::Error::new(err).context("invalid latchkey settings")))?;
        Ok(Config {
            settings: Settings::resolve(overrides)?,
        })
    }

    /// The settings of the standalone server (flags, environment and file, resolved).
    #[doc(hidden)]
    pub fn from_settings(settings: Settings) -> Config {
        Config { settings }
    }
}

/// Why latchkey could not be built: a setting, a template, the database, the keys. Its
/// `Display` names the cause; its `Debug` shows the whole chain.
pub struct Error(anyhow::Error);

impl Error {
    /// Whether the database could not be reached (worth trying again), rather than a
    /// configuration problem (not worth it).
    pub fn is_database_unreachable(&self) -> bool {
        self.0.downcast_ref::<app::DatabaseUnreachable>().is_some()
    }
}

impl From<anyhow::Error> for Error {
    fn from(err: anyhow::Error) -> Error {
        Error(err)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::error::Error for Error {}

/// How latchkey is put together; from [`Latchkey::builder`].
pub struct Builder {
    config: Config,
    pool: Option<AnyPool>,
    hooks: Arc<dyn DynHooks>,
    clock: Clock,
}

impl Builder {
    /// Runs on the application's own pool (SQLite or PostgreSQL through sqlx's `Any` driver):
    /// latchkey's tables and the application's live in one database, so the hooks can write the
    /// application's rows in latchkey's transactions. Without a pool, latchkey opens its own
    /// from `database_url`.
    ///
    /// On SQLite the pool's connections must have a busy timeout (sqlx's have 5 s unless told
    /// otherwise); latchkey switches the database to WAL mode.
    pub fn pool(mut self, pool: AnyPool) -> Builder {
        self.pool = Some(pool);
        self
    }

    /// The application's hooks into the account flows (see [`Hooks`]).
    pub fn hooks(mut self, hooks: impl Hooks) -> Builder {
        self.hooks = Arc::new(hooks);
        self
    }

    /// A clock the tests move.
    #[doc(hidden)]
    pub fn clock(mut self, clock: Clock) -> Builder {
        self.clock = clock;
        self
    }

    /// Connects (or takes the pool), applies latchkey's migrations, loads or makes the signing
    /// keys and loads the templates. Nothing runs in the background until
    /// [`Latchkey::background`].
    pub async fn build(self) -> Result<Latchkey, Error> {
        let state =
            AppState::assemble(self.config.settings, self.clock, self.pool, self.hooks).await?;
        Ok(Latchkey {
            state: Arc::new(state),
        })
    }
}

/// latchkey, built: its router, its background work and the authentication of requests.
/// Cheap to clone; put it in the application's state and derive `FromRef` for [`AuthUser`].
#[derive(Clone)]
pub struct Latchkey {
    state: Arc<AppState>,
}

impl Latchkey {
    /// Starts putting latchkey together from its settings.
    pub fn builder(config: Config) -> Builder {
        Builder {
            config,
            pool: None,
            hooks: Arc::new(NoHooks),
            clock: Clock::default(),
        }
    }

    /// Every latchkey route (the JSON API under `/auth`, `/.well-known/jwks.json`, `/healthz`,
    /// `/readyz`, `/metrics`, `/openapi.json`, and the hosted pages unless `pages = "off"`),
    /// with latchkey's middleware on them and only them. Merge it at the root of the
    /// application's router (the paths and the cookies' `Path` are absolute):
    /// `app_router.with_state(app_state).merge(latchkey.router())`. Its fallback answers the
    /// contract's JSON 404; an application with its own fallback sets it after the merge.
    ///
    /// Serve it with `into_make_service_with_connect_info::<SocketAddr>()`: the rate limits
    /// and the sessions' `ip` need the peer's address (behind a proxy, with `trusted_proxies`).
    pub fn router(&self) -> axum::Router {
        app::router(AppState::clone(&self.state))
    }

    /// `router` with latchkey's cross-site request check on it: an unsafe method (POST, PUT,
    /// PATCH, DELETE) from a browser on another origin than the public URL or one of
    /// `allowed_origins` gets 403 `csrf_rejected` before the handler runs. Handlers that take
    /// [`AuthUser`] accept the session cookie, which a browser sends along with a forged
    /// request from a sibling site: put such routes behind this.
    pub fn protect<S>(&self, router: axum::Router<S>) -> axum::Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        router.layer(axum::middleware::from_fn_with_state(
            AppState::clone(&self.state),
            crate::middleware::csrf,
        ))
    }

    /// Starts the work latchkey does between requests: sending the outbox's emails and
    /// webhooks, reloading (and rotating) the signing keys, pruning ended sessions. Once per
    /// process; stop it after the server has stopped.
    pub fn background(&self) -> Background {
        let (stop, stopping) = watch::channel(false);
        let url = self.state.settings.database_url.clone();
        let mut tasks = vec![
            crate::mail::worker::spawn(&self.state, stopping.clone()),
            // Until it runs, the liveness cache is off: every request reads the database.
            crate::store::liveness::watch(&self.state.store, url, stopping.clone()),
        ];
        // Without endpoints this instance queues no event and knows no receiver: no worker, and
        // no poll of the webhook queue.
        if !self.state.webhooks.endpoints().is_empty() {
            tasks.push(crate::webhooks::worker::spawn(&self.state, stopping));
        }
        Background {
            stop,
            tasks,
            jobs: crate::jobs::spawn(&self.state),
        }
    }

    /// The authenticated user of a request, if its access token is valid and its session live
    /// (the check of [`AuthUser`], for handlers where signing in is optional).
    pub async fn authenticate(&self, parts: &Parts) -> Result<Option<AuthUser>, Response> {
        let found = crate::extract::authenticate(&self.state, &parts.headers).await;
        Ok(found.map_err(ApiError::into_response)?.map(|a| AuthUser {
            user_id: a.user_id,
            session_id: a.session_id,
        }))
    }

    /// The state itself, for latchkey's own tests and binary.
    #[doc(hidden)]
    pub fn state(&self) -> &AppState {
        &self.state
    }

    #[doc(hidden)]
    pub fn from_state(state: AppState) -> Latchkey {
        Latchkey {
            state: Arc::new(state),
        }
    }
}

/// latchkey's background work, from [`Latchkey::background`].
pub struct Background {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    jobs: [JoinHandle<()>; 2],
}

impl Background {
    /// Stops it: the email and the webhook being sent are finished, whatever else is due waits
    /// in the outbox for the next start (or another instance).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for job in &self.jobs {
            job.abort();
        }
        for task in self.tasks {
            if let Err(err) = task.await {
                tracing::warn!(error = %err, "a background worker ended abnormally");
            }
        }
    }
}

/// The signed-in user of a request: an extractor for the application's handlers. A request
/// without a valid access token (cookie or `Authorization: Bearer`), or whose session has ended
/// (logout, logout everywhere, password reset or change, a disabled account), is refused with
/// latchkey's 401 `unauthenticated`, at once: the session's liveness is checked on every
/// request, as latchkey's own endpoints do, through the liveness cache (its guarantee is in the
/// README's "Sessions and keys"; it is used once [`Latchkey::background`] runs).
///
/// The application's state must give the [`Latchkey`]: `#[derive(Clone, FromRef)]` on a state
/// struct with a `Latchkey` field, or `Latchkey` itself as the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthUser {
    /// The user (`user.id`).
    pub user_id: Uuid,
    /// The session the request's token belongs to.
    pub session_id: Uuid,
}

impl<S> FromRequestParts<S> for AuthUser
where
    S: Send + Sync,
    Latchkey: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<AuthUser, Response> {
        Latchkey::from_ref(state)
            .authenticate(parts)
            .await?
            .ok_or_else(|| ApiError::Unauthenticated.into_response())
    }
}
