//! `latchkey config check`: the settings as resolved, or every problem `serve` would stop on.

use anyhow::{anyhow, bail};
use serde_json::json;

use crate::admin::Output;
use crate::clock::Clock;
use crate::config::Settings;
use crate::store::Store;

/// `latchkey config check`: every problem the server would stop on, one line each, found without
/// changing anything (no migration, no file created): a key-encryption key that is not base64 of
/// 32 bytes, a database that does not answer within `database_timeout`, a KEK that cannot open
/// the stored signing keys, a template directory that is missing (or a template that does not
/// compile). Valid: the effective settings, secrets redacted.
pub async fn run(settings: &Settings, out: Output) -> anyhow::Result<()> {
    let problems = config_problems(settings).await;
    if problems.is_empty() {
        let json = serde_json::to_value(settings)?;
        let mut text = vec!["configuration is valid:".to_owned()];
        if let Some(fields) = json.as_object() {
            text.extend(fields.iter().map(|(k, v)| format!("  {k} = {v}")));
        }
        out.print(&text.join("\n"), json);
        return Ok(());
    }
    let lines: Vec<String> = problems.iter().map(|p| format!("problem: {p}")).collect();
    out.print(&lines.join("\n"), json!({ "problems": problems }));
    bail!("the configuration has {} problem(s)", problems.len())
}

async fn config_problems(settings: &Settings) -> Vec<String> {
    let mut problems = Vec::new();
    let kek = match crate::keys::Kek::existing(settings.key_encryption_key.as_ref()) {
        Ok(kek) => kek,
        Err(err) => {
            problems.push(format!("{err:#}"));
            None
        }
    };
    let mut dirs_exist = true;
    for (name, dir) in [
        ("mail_templates", settings.mail_templates.as_deref()),
        ("pages_templates", settings.pages_templates.as_deref()),
    ] {
        if let Some(dir) = dir.filter(|d| !d.is_dir()) {
            problems.push(format!("{name} {} is not a directory", dir.display()));
            dirs_exist = false;
        }
    }
    let mut checks: Vec<anyhow::Result<()>> = Vec::new();
    if dirs_exist {
        // The directories exist: do the templates in them compile?
        checks.push(crate::mail::Mailer::new(settings).map(|_| ()));
        checks.push(crate::pages::Pages::load(settings).map(|_| ()));
    }
    checks.push(crate::domain::MetadataRules::load(settings.profile_schema.as_deref()).map(|_| ()));
    match existing_database(settings).await {
        Ok(None) => {}
        Ok(Some(store)) => {
            if let Some(kek) = &kek {
                checks.push(sealed_keys_open(&store, kek).await);
            }
            store.close().await;
        }
        Err(err) => checks.push(Err(err)),
    }
    problems.extend(
        checks
            .into_iter()
            .filter_map(Result::err)
            .map(|err| format!("{err:#}")),
    );
    problems
}

/// The database, if there is one yet: a SQLite file that does not exist is created by the server
/// (its directory must exist); PostgreSQL must answer within `database_timeout`.
async fn existing_database(settings: &Settings) -> anyhow::Result<Option<Store>> {
    use secrecy::ExposeSecret as _;
    let url = settings.database_url.expose_secret();
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest
            .trim_start_matches("//")
            .split('?')
            .next()
            .unwrap_or("");
        let path = std::path::Path::new(path);
        if path.as_os_str().is_empty() || path == std::path::Path::new(":memory:") {
            return Ok(None);
        }
        if !path.exists() {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            return match dir {
                Some(dir) if !dir.is_dir() => Err(anyhow!(
                    "database_url: the directory {} of the SQLite database does not exist",
                    dir.display()
                )),
                _ => Ok(None),
            };
        }
    }
    let timeout = settings.database_timeout;
    let connect = Store::connect(&settings.database_url, settings.sqlite_durability, timeout);
    // The pool's acquire timeout bounds the connection; this bounds everything else around it.
    match tokio::time::timeout(timeout * 2, connect).await {
        Ok(Ok(store)) => Ok(Some(store)),
        Ok(Err(err)) => Err(err.context(format!(
            "database {} unreachable",
            crate::config::redacted_url(url)
        ))),
        Err(_) => Err(anyhow!(
            "database {} unreachable: no answer within database_timeout ({} ms)",
            crate::config::redacted_url(url),
            timeout.as_millis()
        )),
    }
}

/// The KEK opens the signing keys in the database; a database not migrated yet has none.
async fn sealed_keys_open(store: &Store, kek: &crate::keys::Kek) -> anyhow::Result<()> {
    let now = Clock::default().now();
    match crate::keys::check_sealed(store, kek, now).await {
        Ok(_) => Ok(()),
        Err(err) => {
            let missing_table = err
                .downcast_ref::<sqlx::Error>()
                .is_some_and(|e| matches!(e, sqlx::Error::Database(_)));
            if missing_table { Ok(()) } else { Err(err) }
        }
    }
}
