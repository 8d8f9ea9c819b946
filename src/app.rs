//! The application: its state, its router, and `serve`, the seam tests and `main` share.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::catch_panic::CatchPanicLayer;

use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::MetadataRules;
use crate::extract::MAX_BODY_BYTES;
use crate::jobs;
use crate::keys::{Kek, KeyRing};
use crate::limits::Limiter;
use crate::mail::{self, Mailer};
use crate::metrics::Metrics;
use crate::middleware;
use crate::pages::{self, Pages};
use crate::password::Hasher;
use crate::routes;
use crate::server::{self, ConnectionLimits};
use crate::store::Store;
use crate::webhooks::{self, Webhooks};

/// Everything a request handler may use, cheap to clone.
#[derive(Clone)]
pub struct AppState {
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
    /// Set on SIGTERM: `/readyz` answers 503 for the drain period while requests are served.
    pub draining: Arc<AtomicBool>,
}

impl AppState {
    /// Connects to the database, migrates it, loads (or makes) the signing keys and loads the
    /// email and page templates.
    pub async fn build(settings: Settings, clock: Clock) -> anyhow::Result<AppState> {
        let mailer = Mailer::new(&settings)?;
        let pages = Arc::new(Pages::load(&settings)?);
        let metadata = Arc::new(MetadataRules::load(settings.profile_schema.as_deref())?);
        let webhooks = Webhooks::new(&settings)?;
        let store = Store::connect(
            &settings.database_url,
            settings.sqlite_durability,
            settings.database_timeout,
        )
        .await?
        .with_webhook_routes(webhooks.routes());
        store.migrate().await?;
        crate::store::email_keys::rekey_at_start(&store, clock.now()).await?;
        let kek = Kek::from_setting(settings.key_encryption_key.as_ref())?;
        let refresh_secret = Arc::new(kek.derive("latchkey refresh successor v1"));
        let limit_secret = kek.derive("latchkey rate limit keys v1");
        let device_secret = Arc::new(kek.derive("latchkey device cookie v1"));
        let keys =
            KeyRing::load(store.clone(), kek, clock.clone(), settings.access_token_ttl).await?;
        let hasher = Hasher::new(
            settings.argon2_memory_kib,
            settings.argon2_iterations,
            settings.hash_threads,
        )?
        .with_queue(settings.hash_queue);
        let issuer = settings.issuer().into();
        let settings = Arc::new(settings);
        let limits = Limiter::new(settings.clone(), store.clone(), clock.clone(), limit_secret);
        let metrics = Arc::new(Metrics::new().with_rate_limits(limits.refusals()));
        Ok(AppState {
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
            draining: Arc::new(AtomicBool::new(false)),
        })
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

/// Serves until `shutdown` resolves, then finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    jobs::spawn(&state);
    let (stop_mail, mail_stop) = watch::channel(false);
    let mail = mail::worker::spawn(&state, mail_stop.clone());
    // A worker of its own: a receiver that is down never holds up an email, nor SMTP a webhook.
    // Without endpoints this instance queues no event and knows no receiver: no worker, and no
    // poll of the webhook queue.
    let hooks = (!state.webhooks.endpoints().is_empty())
        .then(|| webhooks::worker::spawn(&state, mail_stop));
    let limits = ConnectionLimits {
        max_connections: state.settings.max_connections,
        header_read_timeout: state.settings.header_read_timeout,
        max_header_bytes: state.settings.max_header_bytes,
    };
    let served = server::run(listener, router(state), limits, shutdown).await;
    // Requests in flight are done; the outbox worker finishes the message it is sending, and
    // whatever is left waits in the outbox for the next start (or another instance).
    let _ = stop_mail.send(true);
    if let Err(err) = mail.await {
        tracing::warn!(error = %err, "the outbox worker ended abnormally");
    }
    if let Some(Err(err)) = match hooks {
        Some(hooks) => Some(hooks.await),
        None => None,
    } {
        tracing::warn!(error = %err, "the webhook worker ended abnormally");
    }
    served
}
