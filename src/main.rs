//! The `latchkey` binary: parse the command line, set up logging and settings, run the command.

use anyhow::Context;
use clap::Parser;
use latchkey::accounts_cli;
use latchkey::admin::{self, Output};
use latchkey::app::{self, AppState};
use latchkey::clock::Clock;
use latchkey::config::{
    AdminKeysCommand, Cli, Command, ConfigCommand, KeysCommand, SessionsCommand, Settings,
    UsersCommand, WebhooksCommand,
};
use latchkey::{keys, store, telemetry, webhooks};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init();
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let settings = Settings::load(cli.overrides)?;
    let out = if cli.json { Output::Json } else { Output::Text };
    let clock = Clock::default();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
        Command::Migrate => {
            connect(&settings).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Config {
            action: ConfigCommand::Check,
        } => admin::config_check(&settings, out),
        Command::Keys {
            action: KeysCommand::Rotate,
        } => {
            let state = AppState::build(settings, clock).await?;
            let kid = keys::rotate(&state.store, state.keys.kek(), state.clock.now()).await?;
            println!(
                "new signing key {kid}; running instances pick it up within {}s",
                keys::RELOAD_INTERVAL.as_secs()
            );
            Ok(())
        }
        Command::Keys {
            action: KeysCommand::List,
        } => admin::list_keys(&connect(&settings).await?, out).await,
        Command::AdminKeys { action } => {
            let store = connect(&settings).await?;
            match action {
                AdminKeysCommand::Create { name } => {
                    accounts_cli::create_admin_key(&store, &clock, &name, out).await
                }
                AdminKeysCommand::List => accounts_cli::list_admin_keys(&store, out).await,
                AdminKeysCommand::Revoke { id } => {
                    accounts_cli::revoke_admin_key(&store, &clock, &id, out).await
                }
            }
        }
        // These need the whole application: templates for the invitation, the hasher.
        Command::Users {
            action:
                UsersCommand::Create {
                    email,
                    password_stdin,
                    verified,
                    send_invite,
                },
        } => {
            let state = AppState::build(settings, clock).await?;
            let create = accounts_cli::Create {
                email,
                password_stdin,
                verified,
                send_invite,
            };
            accounts_cli::create_user(&state, create, out).await
        }
        Command::Users {
            action: UsersCommand::Import { file },
        } => {
            let store = connect(&settings).await?;
            accounts_cli::import_users(&store, &clock, &file, out).await
        }
        Command::Users { action } => {
            let store = connect(&settings).await?;
            match action {
                UsersCommand::List { limit } => admin::list_users(&store, &clock, limit, out).await,
                UsersCommand::Show { user } => admin::show_user(&store, &clock, &user, out).await,
                UsersCommand::Disable { user } => {
                    admin::set_disabled(&store, &clock, &user, true, out).await
                }
                UsersCommand::Enable { user } => {
                    admin::set_disabled(&store, &clock, &user, false, out).await
                }
                UsersCommand::Delete { user } => {
                    admin::delete_user(&store, &clock, &user, out).await
                }
                UsersCommand::EmailCollisions => admin::email_collisions(&store, out).await,
                UsersCommand::SetAppMetadata { user, app_metadata } => {
                    admin::set_app_metadata(&store, &clock, &user, &app_metadata, out).await
                }
                UsersCommand::Create { .. } | UsersCommand::Import { .. } => {
                    unreachable!("handled above")
                }
            }
        }
        Command::Sessions {
            action: SessionsCommand::Revoke { user },
        } => admin::revoke_sessions(&connect(&settings).await?, &clock, &user, out).await,
        Command::Webhooks { action } => match action {
            WebhooksCommand::List { dead, limit } => {
                webhooks::admin::list(&connect(&settings).await?, dead, limit, out).await
            }
            WebhooksCommand::Retry { id } => {
                webhooks::admin::retry(&connect(&settings).await?, &clock, &id, out).await
            }
            WebhooksCommand::Test { url } => {
                let hooks = webhooks::Webhooks::new(&settings)?;
                webhooks::admin::test(&hooks, &clock, &url, out).await
            }
        },
    }
}

/// The database, migrated and re-keyed: admin commands work on the schema and email keys this
/// binary knows. Their events (disable, delete, revoke) go to the configured webhooks, which the
/// running servers deliver.
async fn connect(settings: &Settings) -> anyhow::Result<store::Store> {
    let routes = webhooks::Webhooks::new(settings)?.routes();
    let store = store::Store::connect(&settings.database_url, settings.sqlite_durability)
        .await?
        .with_webhook_routes(routes);
    store.migrate().await?;
    store::email_keys::rekey_at_start(&store, Clock::default().now()).await?;
    Ok(store)
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let state = AppState::build(settings, Clock::default()).await?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "latchkey listening on http://{address}");
    ignore_hangup();
    let stop = shutdown_signal(state.clone());
    app::serve(listener, state, stop).await?;
    tracing::info!("latchkey stopped");
    Ok(())
}

/// SIGHUP (a closed terminal, `systemctl reload`, a log rotation script) would end the process by
/// default. latchkey reads its settings once, so there is nothing to reload: the signal is logged
/// and otherwise ignored; a restart applies new settings.
fn ignore_hangup() {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangups) => {
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    tracing::info!(
                        "SIGHUP: nothing to reload (settings are read at start); still serving"
                    );
                }
            });
        }
        Err(err) => tracing::warn!(error = %err, "cannot handle SIGHUP"),
    }
}

/// How the process was asked to stop.
#[derive(PartialEq, Eq)]
enum Stop {
    /// Ctrl-C: a person at a terminal, who wants it gone now.
    Interrupt,
    /// SIGTERM: a service manager or a rolling restart, which gets the drain first.
    Terminate,
}

/// Resolves on Ctrl-C or SIGTERM. On SIGTERM the instance first drains: `/readyz` answers 503
/// for `drain_period` while every request is still served, so a load balancer that health-checks
/// it stops sending new ones before the port closes; then the server stops accepting and finishes
/// what is in flight.
async fn shutdown_signal(state: AppState) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    let stop = tokio::select! {
        () = ctrl_c => Stop::Interrupt,
        () = term => Stop::Terminate,
    };
    let drain = state.settings.drain_period;
    if stop == Stop::Terminate && !drain.is_zero() {
        state
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            drain_secs = drain.as_secs(),
            "draining: /readyz answers 503 while requests are still served"
        );
        tokio::time::sleep(drain).await;
    }
    tracing::info!("shutting down: finishing requests in flight");
}
