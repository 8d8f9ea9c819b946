//! The notes app's server: `cargo run -p notes-app`.
//!
//! Settings from the environment: `NOTES_DATABASE_URL` (default `sqlite://notes.db`),
//! `NOTES_LISTEN` (default `127.0.0.1:3000`), and latchkey's settings as TOML in the file named
//! by `NOTES_LATCHKEY_CONFIG` (default: `public_url = "http://localhost:3000"`, everything else
//! latchkey's defaults).

use std::net::SocketAddr;

use anyhow::Context as _;
use latchkey::Config;
use latchkey::sqlx::AnyPool;
use latchkey::sqlx::any::AnyPoolOptions;
use notes_app::Workspaces;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let url = std::env::var("NOTES_DATABASE_URL").unwrap_or_else(|_| "sqlite://notes.db".into());
    let listen: SocketAddr = std::env::var("NOTES_LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()
        .context("NOTES_LISTEN is not an address")?;
    let toml = match std::env::var("NOTES_LATCHKEY_CONFIG") {
        Ok(path) => {
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?
        }
        Err(_) => r#"public_url = "http://localhost:3000""#.to_owned(),
    };
    let config = Config::from_toml(&toml)?;
    let pool = connect(&url).await?;
    let (router, latchkey) = notes_app::build(pool, config, Workspaces::default()).await?;
    let background = latchkey.background();
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("notes-app listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    background.stop().await;
    Ok(())
}

/// The app's pool: it is latchkey's too.
async fn connect(url: &str) -> anyhow::Result<AnyPool> {
    latchkey::sqlx::any::install_default_drivers();
    let url = match url.starts_with("sqlite:") && !url.contains("mode=") {
        true => format!("{url}?mode=rwc"),
        false => url.to_owned(),
    };
    AnyPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await
        .with_context(|| "cannot open the database")
}
