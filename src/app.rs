//! The application: its state, its router, and `serve`, the seam tests and `main` share.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use sqlx::AnyPool;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::MetadataRules;
use crate::embed::Latchkey;
use crate::extract::MAX_BODY_BYTES;
use crate::hooks::{DynHooks, NoHooks};
use crate::keys::{Kek, KeyRing};
use crate::limits::Limiter;
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::middleware;
use crate::pages::{self, Pages};
use crate::password::Hasher;
use crate::routes;
use crate::server::{self, ConnectionLimits};
use crate::store::Store;
use crate::webhooks::Webhooks;

/// Everything a request handler may use, behind one `Arc`: a clone (every extractor takes one) is
/// one reference count, where cloning the fields was a dozen. Handlers read the fields through
/// `Deref`.
#[derive(Clone)]
pub struct AppState(Arc<StateInner>);

impl std::ops::Deref for AppState {
    type Target = StateInner;

    fn deref(&self) -> &StateInner {
        &self.0
    }
}

/// The fields of `AppState`.
pub struct StateInner {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub hasher: Hasher,
    pub keys: KeyRing,
    pub clock: Clock,
    /// Token issuer and audience, from the public URL.
    pub issuer: Arc<str>,
    /// Derives refresh-token successors (see `tokens::successor`).
    pub refresh_secret: Arc<[u8; 32]>,
    /// The MAC key of device cookies (`crate::device`), derived from the KEK like the others.
    pub device_secret: Arc<[u8; 32]>,
    /// Renders emails for the outbox and delivers them (see `mail`).
    pub mailer: Mailer,
    /// What `profile.metadata` must be (the operator's schema, or the 4 KiB cap).
    pub metadata: Arc<MetadataRules>,
    /// The webhook endpoints and their deliverer (see `webhooks`).
    pub webhooks: Webhooks,
    /// Rate limits, counted in the database (see `limits`).
    pub limits: Limiter,
    /// What GET /metrics shows.
    pub metrics: Arc<Metrics>,
    /// The hosted pages' templates and strings (see `pages`).
    pub pages: Arc<Pages>,
    /// The passkeys' relying party, from the public URL; `None` when its host is an IP address
    /// (WebAuthn needs a domain name), and the passkey endpoints answer 404.
    pub passkeys: Option<Arc<webauthn_rs::Webauthn>>,
    /// The OpenID Connect providers and their cached discovery documents (see `oidc`).
    pub oidc: Arc<crate::oidc::Oidc>,
    /// The embedding application's hooks (library mode; none in the standalone server).
    pub(crate) hooks: Arc<dyn DynHooks>,
    /// Set on SIGTERM: `/readyz` answers 503 for the drain period while requests are served.
    pub draining: Arc<AtomicBool>,
}

/// The marker of a start that failed because the database could not be reached (the standalone
/// server then waits for it instead of exiting).
#[derive(Debug)]
pub(crate) struct DatabaseUnreachable;

impl DatabaseUnreachable {
    /// Marks a failure to open the store when it is the database not answering (no route, a
    /// refused or reset connection, a pool timeout, a server still starting), not a setting.
    fn mark(err: anyhow::Error) -> anyhow::Error {
        let unreachable = err
            .chain()
            .any(|cause| match cause.downcast_ref::<sqlx::Error>() {
                Some(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_)) => true,
                // 57P03 cannot_connect_now: PostgreSQL is starting up or shutting down.
                Some(sqlx::Error::Database(db)) => db.code().as_deref() == Some("57P03"),
                _ => false,
            });
        match unreachable {
            true => err.context(DatabaseUnreachable),
            false => err,
        }
    }
}

impl std::fmt::Display for DatabaseUnreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the database is unreachable")
    }
}

impl AppState {
    /// Connects to the database, migrates it, loads (or makes) the signing keys and loads the
    /// email and page templates.
    pub async fn build(settings: Settings, clock: Clock) -> anyhow::Result<AppState> {
        AppState::assemble(settings, clock, None, Arc::new(NoHooks)).await
    }

    /// `build`, on the application's pool when it brings one, with its hooks (library mode).
    /// What needs no database (templates, schema, webhook settings) is loaded first, so a bad
    /// setting stops the start at once, whatever the database does.
    pub(crate) async fn assemble(
        settings: Settings,
        clock: Clock,
        pool: Option<AnyPool>,
        hooks: Arc<dyn DynHooks>,
    ) -> anyhow::Result<AppState> {
        let mailer = Mailer::new(&settings)?;
        let pages = Arc::new(Pages::load(&settings)?);
        let metadata = Arc::new(MetadataRules::load(settings.profile_schema.as_deref())?);
        let webhooks = Webhooks::new(&settings)?;
        let passkeys = passkeys_of(&settings.public_url);
        let oidc = Arc::new(crate::oidc::Oidc::new(&settings.oidc_providers)?);
        let kek = Kek::from_setting(settings.key_encryption_key.as_ref())?;
        let store = match pool {
            None => {
                let (url, durability) = (&settings.database_url, settings.sqlite_durability);
                Store::connect(url, durability, settings.database_timeout).await
            }
            Some(pool) => Store::from_pool(pool, settings.database_timeout).await,
        }
        .map_err(DatabaseUnreachable::mark)?
        .with_webhook_routes(webhooks.routes())
        .with_hooks(hooks.clone());
        store.migrate().await?;
        crate::store::email_keys::rekey_at_start(&store, clock.now()).await?;
        let refresh_secret = Arc::new(kek.derive("latchkey refresh successor v1"));
        let limit_secret = kek.derive("latchkey rate limit keys v1");
        let device_secret = Arc::new(kek.derive("latchkey device cookie v1"));
        let issuer: Arc<str> = settings.issuer().into();
        let ttl = settings.access_token_ttl;
        let keys = KeyRing::load(store.clone(), kek, clock.clone(), ttl, issuer.clone()).await?;
        let hasher = Hasher::new(
            settings.argon2_memory_kib,
            settings.argon2_iterations,
            settings.hash_threads,
        )?
        .with_queue(settings.hash_queue);
        let settings = Arc::new(settings);
        let limits = Limiter::new(settings.clone(), store.clone(), clock.clone(), limit_secret);
        let metrics = Arc::new(Metrics::new().with_rate_limits(limits.refusals()));
        Ok(AppState(Arc::new(StateInner {
            issuer,
            settings,
            limits,
            store,
            hasher,
            keys,
            clock,
            refresh_secret,
            device_secret,
            mailer,
            metadata,
            webhooks,
            metrics,
            pages,
            passkeys,
            oidc,
            hooks,
            draining: Arc::new(AtomicBool::new(false)),
        })))
    }
}

/// The passkeys' relying party of a public URL whose host is a domain name.
fn passkeys_of(public_url: &url::Url) -> Option<Arc<webauthn_rs::Webauthn>> {
    if public_url.domain().is_none() {
        tracing::warn!(%public_url, "passkeys are off: the public URL's host is not a domain name");
        return None;
    }
    match crate::mfa::passkey::relying_party(public_url) {
        Ok(rp) => Some(Arc::new(rp)),
        Err(err) => {
            tracing::warn!(%public_url, error = %err, "passkeys are off");
            None
        }
    }
}

/// The whole HTTP surface, layers included.
pub fn router(state: AppState) -> Router {
    let with_metrics = state.settings.metrics_listen.is_none();
    let routes = match state.settings.pages {
        true => routes::router(with_metrics).merge(pages::router(&state)),
        false => routes::router(with_metrics),
    };
    routes
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::csrf,
        ))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::request_context,
        ))
        .with_state(state)
}

/// Serves GET /metrics alone on `listener` (`metrics_listen`), until the process ends: the
/// monitoring network's address, kept out of what the public proxy forwards.
pub async fn serve_metrics(listener: TcpListener, state: AppState) -> std::io::Result<()> {
    let app = routes::metrics_router()
        .fallback(|| async { crate::error::ApiError::NotFound })
        .with_state(state);
    axum::serve(listener, app).await
}

/// Serves `latchkey` on `listener` with its background work until `shutdown` resolves, then
/// finishes the requests in flight and stops the background work.
pub async fn serve(
    listener: TcpListener,
    latchkey: Latchkey,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let background = latchkey.background();
    let limits = connection_limits(&latchkey.state().settings);
    let served = server::run(listener, latchkey.router(), limits, shutdown).await;
    background.stop().await;
    served
}

/// What one connection may take, from the settings.
pub(crate) fn connection_limits(settings: &Settings) -> ConnectionLimits {
    ConnectionLimits {
        max_connections: settings.max_connections,
        header_read_timeout: settings.header_read_timeout,
        max_header_bytes: settings.max_header_bytes,
    }
}
