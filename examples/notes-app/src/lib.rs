//! The notes app: a small axum application that uses latchkey as a library.
//!
//! - Accounts, sessions, the JSON API and the hosted pages are latchkey's, merged into this
//!   app's router and running on this app's database pool.
//! - Every user has one workspace, created by the [`Workspaces`] hook INSIDE latchkey's signup
//!   transaction: a signup either creates the user, the profile, the first session and the
//!   workspace, or none of them; the session cookies are set only after that commit.
//! - The signup names its workspace in `metadata.workspace` (a slug); a malformed or reserved
//!   slug is refused before any password is hashed (422), a taken one inside the transaction
//!   (409). Without it the workspace gets a slug from the user id.
//! - Notes belong to a workspace; only its owner can list, read or write them. The handlers take
//!   latchkey's [`AuthUser`], so a session that ended (logout, password reset, …) is refused at
//!   once.

use std::time::Duration;

use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use latchkey::sqlx::{self, AnyConnection, AnyPool};
use latchkey::{
    AuthUser, Config, DeletedAccount, HookError, Hooks, Latchkey, NewAccount, SignupAttempt,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Slugs no user may take.
const RESERVED: &[&str] = &["admin", "api", "auth", "login", "signup", "www"];

/// The app's state: latchkey and the pool they share.
#[derive(Clone)]
pub struct AppState {
    pub latchkey: Latchkey,
    pub pool: AnyPool,
}

impl FromRef<AppState> for Latchkey {
    fn from_ref(state: &AppState) -> Latchkey {
        state.latchkey.clone()
    }
}

/// Builds latchkey on `pool` with the app's hooks, applies the app's migrations, and returns the
/// whole router: the app's routes and latchkey's.
pub async fn build(
    pool: AnyPool,
    config: Config,
    hooks: Workspaces,
) -> anyhow::Result<(Router, Latchkey)> {
    let latchkey = Latchkey::builder(config)
        .pool(pool.clone())
        .hooks(hooks)
        .build()
        .await?;
    // latchkey's migrations share sqlx's migrations table with the app's: each migrator leaves
    // the other's versions alone.
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(&pool).await?;
    let state = AppState {
        latchkey: latchkey.clone(),
        pool,
    };
    let routes = Router::new()
        .route("/workspace", get(workspace))
        .route("/notes", get(list_notes).post(add_note))
        .route("/notes/{id}", get(read_note));
    // latchkey's cross-site check on the app's routes too: they accept the session cookie.
    let router = latchkey
        .protect(routes)
        .with_state(state)
        .merge(latchkey.router());
    Ok((router, latchkey))
}

/// The hooks: a workspace for every new account, gone with the account.
#[derive(Debug, Default)]
pub struct Workspaces {
    /// Extra time the signup hook takes (a stand-in for slow statements, for the tests).
    pub delay: Duration,
}

impl Hooks for Workspaces {
    /// Refuses a bad slug before anything is hashed or written.
    async fn before_signup(&self, attempt: &SignupAttempt<'_>) -> Result<(), HookError> {
        slug_of(attempt.metadata).map(|_| ())
    }

    /// The workspace row, in latchkey's signup transaction.
    async fn account_created(
        &self,
        tx: &mut AnyConnection,
        account: &NewAccount<'_>,
    ) -> Result<(), HookError> {
        let slug = match slug_of(account.metadata)? {
            Some(slug) => slug,
            None => format!("ws-{}", account.user_id.simple()),
        };
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let inserted = sqlx::query(
            "INSERT INTO workspaces (id, owner_id, slug, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(account.user_id.to_string())
        .bind(&slug)
        .bind(now_millis())
        .execute(tx)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(err) if is_unique_violation(&err) => Err(HookError::conflict()),
            Err(err) => Err(err.into()),
        }
    }

    /// The user's notes and workspace, in latchkey's deletion transaction.
    async fn account_deleting(
        &self,
        tx: &mut AnyConnection,
        account: &DeletedAccount,
    ) -> Result<(), HookError> {
        let owner = account.user_id.to_string();
        sqlx::query(
            "DELETE FROM notes WHERE workspace_id IN \
             (SELECT id FROM workspaces WHERE owner_id = $1)",
        )
        .bind(&owner)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM workspaces WHERE owner_id = $1")
            .bind(&owner)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// The slug a signup asks for, if any: 3 to 32 of `a-z`, `0-9` and `-`, not reserved.
fn slug_of(metadata: &serde_json::Value) -> Result<Option<String>, HookError> {
    let Some(value) = metadata.get("workspace") else {
        return Ok(None);
    };
    let field = "metadata/workspace";
    let Some(slug) = value.as_str() else {
        return Err(HookError::field(field, "must be a string"));
    };
    let valid = (3..=32).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        return Err(HookError::field(
            field,
            "3 to 32 lowercase letters, digits or dashes",
        ));
    }
    if RESERVED.contains(&slug) {
        return Err(HookError::field(field, "this name is reserved"));
    }
    Ok(Some(slug.to_owned()))
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

fn now_millis() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

#[derive(Serialize)]
struct WorkspaceBody {
    id: String,
    slug: String,
}

#[derive(Serialize)]
struct NoteBody {
    id: String,
    body: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNote {
    body: String,
}

/// The app's errors, in latchkey's shape.
enum AppError {
    NotFound,
    Invalid(&'static str),
    Database(sqlx::Error),
}

impl From<sqlx::Error> for AppError {
    fn from(err: sqlx::Error) -> AppError {
        AppError::Database(err)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            AppError::NotFound => (StatusCode::NOT_FOUND, "not_found", "Not found."),
            AppError::Invalid(message) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                message,
            ),
            AppError::Database(err) => {
                eprintln!("notes-app: database error: {err}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Something went wrong on our side.",
                )
            }
        };
        let body = serde_json::json!({"error": {"code": code, "message": message}});
        (status, Json(body)).into_response()
    }
}

/// The caller's workspace: every account has exactly one.
async fn workspace(
    user: AuthUser,
    State(state): State<AppState>,
) -> Result<Json<WorkspaceBody>, AppError> {
    let (id, slug): (String, String) =
        sqlx::query_as("SELECT id, slug FROM workspaces WHERE owner_id = $1")
            .bind(user.user_id.to_string())
            .fetch_optional(&state.pool)
            .await?
            .ok_or(AppError::NotFound)?;
    Ok(Json(WorkspaceBody { id, slug }))
}

async fn list_notes(
    user: AuthUser,
    State(state): State<AppState>,
) -> Result<Json<Vec<NoteBody>>, AppError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT n.id, n.body FROM notes n JOIN workspaces w ON w.id = n.workspace_id \
         WHERE w.owner_id = $1 ORDER BY n.created_at, n.id",
    )
    .bind(user.user_id.to_string())
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(
        rows.into_iter()
            .map(|(id, body)| NoteBody { id, body })
            .collect(),
    ))
}

async fn add_note(
    user: AuthUser,
    State(state): State<AppState>,
    Json(note): Json<NewNote>,
) -> Result<(StatusCode, Json<NoteBody>), AppError> {
    if note.body.trim().is_empty() || note.body.len() > 10_000 {
        return Err(AppError::Invalid("A note is 1 to 10000 bytes."));
    }
    let id = Uuid::now_v7().to_string();
    // One statement: the note goes into the caller's own workspace or nowhere.
    let inserted = sqlx::query(
        "INSERT INTO notes (id, workspace_id, body, created_at) \
         SELECT $1, id, $2, $3 FROM workspaces WHERE owner_id = $4",
    )
    .bind(&id)
    .bind(&note.body)
    .bind(now_millis())
    .bind(user.user_id.to_string())
    .execute(&state.pool)
    .await?;
    if inserted.rows_affected() != 1 {
        return Err(AppError::NotFound);
    }
    Ok((
        StatusCode::CREATED,
        Json(NoteBody {
            id,
            body: note.body,
        }),
    ))
}

/// A note, for its owner only: anyone else gets the same 404 as for a note that does not exist.
async fn read_note(
    user: AuthUser,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<NoteBody>, AppError> {
    let (id, body): (String, String) = sqlx::query_as(
        "SELECT n.id, n.body FROM notes n JOIN workspaces w ON w.id = n.workspace_id \
         WHERE n.id = $1 AND w.owner_id = $2",
    )
    .bind(&id)
    .bind(user.user_id.to_string())
    .fetch_optional(&state.pool)
    .await?
    .ok_or(AppError::NotFound)?;
    Ok(Json(NoteBody { id, body }))
}
