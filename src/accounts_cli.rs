//! The operator's commands of the account lifecycle: `latchkey admin-keys create --name N |
//! list | revoke ID`, `latchkey users create EMAIL` and `latchkey users import FILE`. They use
//! the same flows as the admin API; their audit events name no admin key (the operator at the
//! console is not one).

use std::io::Read as _;

use anyhow::{Context as _, anyhow, bail};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::json;
use uuid::Uuid;

use crate::admin::Output;
use crate::admin_keys;
use crate::app::AppState;
use crate::clock::{Clock, rfc3339};
use crate::error::ApiError;
use crate::routes::admin::users::{CreateUser, create_flow};
use crate::store::audit::Actor;
use crate::store::{self, Store};

pub async fn create_admin_key(
    store: &Store,
    clock: &Clock,
    name: &str,
    out: Output,
) -> anyhow::Result<()> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        bail!("--name must be 1 to 100 characters");
    }
    let new = admin_keys::generate();
    store
        .create_admin_key(new.id, name.to_owned(), new.hash, clock.now())
        .await?;
    let key = new.key.expose_secret();
    out.print(
        &format!(
            "admin key {} ({name}) created; it is shown this once:\n{key}",
            new.id
        ),
        json!({"id": new.id, "name": name, "key": key}),
    );
    Ok(())
}

pub async fn list_admin_keys(store: &Store, out: Output) -> anyhow::Result<()> {
    let keys = store::admin_keys::list(store.reader()).await?;
    let state = |revoked: Option<i64>| {
        if revoked.is_some() {
            "revoked"
        } else {
            "active"
        }
    };
    let text = match keys.is_empty() {
        true => "no admin keys".to_owned(),
        false => keys
            .iter()
            .map(|k| {
                let created = rfc3339(k.created_at);
                format!(
                    "{}  {}  {}  created={created}",
                    k.id,
                    state(k.revoked_at),
                    k.name
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
    };
    let json = json!({"keys": keys.iter().map(|k| json!({
        "id": k.id, "name": k.name, "status": state(k.revoked_at),
        "created_at": rfc3339(k.created_at), "revoked_at": k.revoked_at.map(rfc3339),
    })).collect::<Vec<_>>()});
    out.print(&text, json);
    Ok(())
}

pub async fn revoke_admin_key(
    store: &Store,
    clock: &Clock,
    id: &str,
    out: Output,
) -> anyhow::Result<()> {
    let id = Uuid::try_parse(id.trim()).context("an admin key id is a UUID")?;
    if !store.revoke_admin_key(id, clock.now()).await? {
        bail!("no active admin key {id}");
    }
    out.print(
        &format!("admin key {id} revoked"),
        json!({"id": id, "revoked": true}),
    );
    Ok(())
}

/// `latchkey users create`.
pub struct Create {
    pub email: String,
    pub password_stdin: bool,
    pub verified: bool,
    pub send_invite: bool,
}

pub async fn create_user(state: &AppState, create: Create, out: Output) -> anyhow::Result<()> {
    let password = match create.password_stdin {
        true => {
            let mut line = String::new();
            std::io::stdin()
                .read_to_string(&mut line)
                .context("cannot read the password from stdin")?;
            Some(SecretString::from(
                line.trim_end_matches(['\r', '\n']).to_owned(),
            ))
        }
        false => None,
    };
    let req = CreateUser {
        email: Some(create.email),
        password,
        email_verified: Some(create.verified),
        app_metadata: None,
        send_invite: Some(create.send_invite),
    };
    let user = create_flow(state, req, Actor::default())
        .await
        .map_err(|err| match err {
            ApiError::Validation(fields) => anyhow!("refused: {fields:?}"),
            ApiError::EmailTaken => anyhow!("an account with this address exists"),
            other => anyhow!("{other}"),
        })?;
    // The invitation is in the outbox: the running servers deliver it.
    let json = serde_json::to_value(&user)?;
    out.print(
        &format!("created {} ({})", user.user.email, user.user.id),
        json,
    );
    Ok(())
}

pub async fn import_users(
    store: &Store,
    clock: &Clock,
    file: &str,
    out: Output,
) -> anyhow::Result<()> {
    let mut ndjson = String::new();
    if file == "-" {
        std::io::stdin().read_to_string(&mut ndjson)?;
    } else {
        ndjson = std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
    }
    let report = crate::import::run(store, &ndjson, &Actor::default(), clock.now()).await;
    let mut text = vec![format!("imported {} accounts", report.imported)];
    text.extend(
        report
            .errors
            .iter()
            .map(|e| format!("line {}: {}", e.line, e.error)),
    );
    out.print(&text.join("\n"), serde_json::to_value(&report)?);
    Ok(())
}
