//! POST /auth/signup: user, profile, first session and audit event in ONE transaction; tokens
//! and cookies only after it committed.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum_extra::extract::CookieJar;
use secrecy::SecretString;
use serde::Deserialize;
use uuid::Uuid;

use super::session;
use crate::app::AppState;
use crate::domain::NewAccount;
use crate::error::ApiError;
use crate::extract::{ApiJson, ClientInfo};
use crate::failpoint::failpoint;
use crate::store::{self, audit};

pub fn router() -> Router<AppState> {
    Router::new().route("/auth/signup", post(signup))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    email: Option<String>,
    password: Option<SecretString>,
    display_name: Option<String>,
}

#[tracing::instrument(name = "signup", skip_all)]
async fn signup(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
    ApiJson(req): ApiJson<SignupRequest>,
) -> Result<Response, ApiError> {
    let account = NewAccount::parse(
        req.email.as_deref(),
        req.password.as_ref(),
        req.display_name.as_deref(),
    )
    .map_err(ApiError::Validation)?;
    // Hash before the transaction opens: no connection or lock is held while Argon2 runs.
    let password_hash = state.hasher.hash(account.password.into_secret()).await?;
    let user_id = Uuid::now_v7();
    tracing::Span::current().record("user_id", tracing::field::display(user_id));
    let now = state.clock.now();

    // Transaction boundary: everything below up to `commit` is one unit. Any early return drops
    // `tx`, which rolls it back.
    let mut tx = state.store.begin().await?;
    store::users::insert_user(&mut *tx, user_id, &account.email, &password_hash, now)
        .await
        .map_err(|err| {
            if store::is_unique_violation(&err) {
                ApiError::EmailTaken
            } else {
                err.into()
            }
        })?;
    failpoint!("signup.after_user");
    store::users::insert_profile(&mut *tx, user_id, account.display_name.as_ref(), now).await?;
    failpoint!("signup.after_profile");
    let opened = session::open(&mut tx, &state, user_id, &client, now).await?;
    audit::record(
        &mut *tx,
        audit::Kind::Signup,
        &client.actor(Some(user_id), Some(opened.id)),
        now,
    )
    .await?;
    let created = store::users::find_account(&mut *tx, user_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("account vanished inside its own transaction"))?;
    failpoint!("signup.before_commit");
    tx.commit().await?;
    failpoint!("signup.after_commit");

    session::respond(&state, jar, StatusCode::CREATED, created, &opened, now)
}
