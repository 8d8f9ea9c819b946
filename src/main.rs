//! The `latchkey` binary: parse the command line, set up logging and settings, run the command.

use anyhow::Context;
use clap::Parser;
use latchkey::accounts_cli;
use latchkey::admin::{self, Output};
use latchkey::app::AppState;
use latchkey::clock::Clock;
use latchkey::config::{
    AdminKeysCommand, Cli, Command, ConfigCommand, KeysCommand, MailCommand, SessionsCommand,
    Settings, UsersCommand, WebhooksCommand,
};
use latchkey::standalone::{self, Stop};
use latchkey::{keys, mail, store, telemetry, webhooks};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // Through the logger, so that with JSON logs a fatal error is one JSON line too.
            tracing::error!("latchkey failed: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
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
        } => latchkey::config_check::run(&settings, out).await,
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
                UsersCommand::Delete { user, yes } => {
                    admin::confirm_delete(&user, yes)?;
                    admin::delete_user(&store, &clock, &user, out).await
                }
                UsersCommand::Verify { user } => {
                    admin::verify_user(&store, &clock, &user, out).await
                }
                UsersCommand::Sessions { user } => {
                    admin::user_sessions(&store, &clock, &user, out).await
                }
                UsersCommand::Audit { user, limit } => {
                    admin::user_audit(&store, &clock, &user, limit, out).await
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
        Command::Mail { action } => {
            let store = connect(&settings).await?;
            match action {
                MailCommand::Dead { limit } => mail::admin::dead(&store, limit, out).await,
                MailCommand::Retry { id } => mail::admin::retry(&store, &clock, &id, out).await,
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
    let store = store::Store::connect(
        &settings.database_url,
        settings.sqlite_durability,
        settings.database_timeout,
    )
    .await?
    .with_webhook_routes(routes);
    store.migrate().await?;
    store::email_keys::rekey_at_start(&store, Clock::default().now()).await?;
    Ok(store)
}

/// The standalone server: bound first, so `/healthz` answers while the database is reached
/// (see `latchkey::standalone`).
async fn serve(settings: Settings) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let metrics = match settings.metrics_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} (metrics_listen)"))?,
        ),
        None => None,
    };
    let address = listener.local_addr()?;
    tracing::info!(%address, "latchkey listening on http://{address}");
    ignore_hangup();
    standalone::run(listener, metrics, settings, Clock::default(), stop_signal()).await?;
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

/// Resolves on Ctrl-C or SIGTERM, saying which.
async fn stop_signal() -> Stop {
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
    tokio::select! {
        () = ctrl_c => Stop::Interrupt,
        () = term => Stop::Terminate,
    }
}
