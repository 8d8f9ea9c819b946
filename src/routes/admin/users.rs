//! `/admin/v1/users`: list and search, create (with an invitation), get, patch, delete, and send
//! a reset link.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{cursor_of, limit, parse_cursor, query, user_id};
use crate::admin_keys::AdminKey;
use crate::app::AppState;
use crate::domain::{Email, Metadata, NewPassword, required};
use crate::error::{ApiError, ErrorBody, FieldErrors};
use crate::extract::{ApiJson, ClientInfo};
use crate::mail::links::{self, LinkKind};
use crate::password::imported::UNUSABLE;
use crate::routes::account::{AdminUserBody, app_metadata_text};
use crate::routes::body::{AccountBody, MessageBody, ProfileBody};
use crate::routes::openapi::responses::{AdminUnauthenticated, Overloaded};
use crate::routes::password::stored_email;
use crate::store;
use crate::store::flows::accounts::{Deletion, NewAccountRows, NewDeletion};
use crate::store::flows::admin_users::{
    AdminCreate, AdminReset, NewAdminReset, NewAdminUser, UserPatch,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/users", get(list).post(create))
        .route(
            "/admin/v1/users/{id}",
            get(get_user).patch(patch).delete(delete),
        )
        .route("/admin/v1/users/{id}/password-reset", post(password_reset))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    query: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserPage {
    users: Vec<AdminUserBody>,
    /// Where the next page starts; `null` on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// Accounts, oldest first, a page at a time; `query` finds addresses containing it.
#[utoipa::path(
    get,
    path = "/admin/v1/users",
    operation_id = "admin_list_users",
    tag = "admin",
    security(("admin_key" = [])),
    params(
        ("query" = Option<String>, Query, description = "Part of the address \
            (case-insensitive)."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Page size \
            (50 by default)."),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page."),
    ),
    responses(
        (status = 200, description = "A page of accounts. Accounts created while paging show up \
            on a later page or not at all, never twice.", body = UserPage),
        (status = 401, response = AdminUnauthenticated),
        (status = 422, description = "`validation_failed`: a bad `limit` or `cursor`, or an \
            unknown parameter.", body = ErrorBody),
    ),
)]
pub(super) async fn list(
    State(state): State<AppState>,
    _key: AdminKey,
    raw: RawQuery,
) -> Result<Json<UserPage>, ApiError> {
    let q: ListQuery = query(raw)?;
    let limit = limit(q.limit.as_deref())?;
    let after = parse_cursor(q.cursor.as_deref())?;
    let needle = q.query.as_deref().map(str::trim).filter(|n| !n.is_empty());
    // One more than asked: whether there is a next page.
    let mut rows =
        store::directory::users_page(state.store.reader(), needle, after, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = match more {
        true => rows.last().map(|a| cursor_of(&a.account.id)),
        false => None,
    };
    Ok(Json(UserPage {
        users: rows.into_iter().map(AdminUserBody::from).collect(),
        next_cursor,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    #[schema(value_type = String, required = true, format = Email, max_length = 254)]
    pub(crate) email: Option<String>,
    /// The rules of signup. Absent: the account has no password until its owner sets one (with
    /// `send_invite`, or a reset).
    #[schema(value_type = Option<String>, format = Password, min_length = 8, max_length = 128)]
    pub(crate) password: Option<SecretString>,
    /// Default `false`.
    pub(crate) email_verified: Option<bool>,
    /// A JSON object; default `{}`.
    #[schema(value_type = Option<Object>)]
    pub(crate) app_metadata: Option<serde_json::Value>,
    /// Mails the owner a link that sets the password (valid as long as a verification link).
    pub(crate) send_invite: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct AdminUserResponse {
    user: AdminUserBody,
}

/// Creates an account.
#[utoipa::path(
    post,
    path = "/admin/v1/users",
    operation_id = "admin_create_user",
    tag = "admin",
    security(("admin_key" = [])),
    request_body = CreateUser,
    responses(
        (status = 201, description = "The account.", body = AdminUserResponse),
        (status = 401, response = AdminUnauthenticated),
        (status = 409, description = "`email_taken`: an account has this address.",
            body = ErrorBody),
        (status = 503, response = Overloaded),
    ),
)]
pub(super) async fn create(
    State(state): State<AppState>,
    key: AdminKey,
    client: ClientInfo,
    ApiJson(req): ApiJson<CreateUser>,
) -> Result<Response, ApiError> {
    let user = create_flow(&state, req, key.actor(&client)).await?;
    Ok((StatusCode::CREATED, Json(AdminUserResponse { user })).into_response())
}

/// The operator's account creation, shared by the admin API and `latchkey users create`.
pub(crate) async fn create_flow(
    state: &AppState,
    req: CreateUser,
    actor: store::audit::Actor,
) -> Result<AdminUserBody, ApiError> {
    let mut errors = FieldErrors::new();
    let email = required(&mut errors, "email", req.email.as_deref(), Email::parse);
    let password = match (&email, &req.password) {
        (Some(email), Some(raw)) => match NewPassword::parse(raw.expose_secret(), email) {
            Ok(password) => Some(password),
            Err(problem) => {
                errors.insert("password".into(), problem.into());
                None
            }
        },
        _ => None,
    };
    let app_metadata = match req.app_metadata.as_ref().map(app_metadata_text) {
        Some(Ok(text)) => Some(text),
        Some(Err(ApiError::Validation(problems))) => {
            errors.extend(problems);
            None
        }
        Some(Err(other)) => return Err(other),
        None => None,
    };
    let Some(email) = email.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let password_hash = match password {
        Some(password) => state.hasher.hash(password.into_secret()).await?,
        None => UNUSABLE.to_owned(),
    };
    let now = state.clock.now();
    let invite = match req.send_invite.unwrap_or(false) {
        true => Some(links::prepare(state, LinkKind::Invite, &email, now)?),
        false => None,
    };
    let user_id = Uuid::now_v7();
    let new = NewAdminUser {
        rows: NewAccountRows {
            user_id,
            email,
            password_hash,
            display_name: None,
            metadata: Metadata::empty(),
            app_metadata,
            email_verified: req.email_verified.unwrap_or(false),
        },
        invite,
        actor: actor.about(user_id),
        now,
    };
    // One store call: the account, its audit event, `user.created` and the invitation.
    match state.store.create_user_by_admin(new).await? {
        AdminCreate::Created(account) => {
            state.mailer.wake();
            Ok(AdminUserBody::from(*account))
        }
        AdminCreate::EmailTaken => Err(ApiError::EmailTaken),
        AdminCreate::Refused(refused) => Err(refused.into()),
    }
}

#[derive(Serialize, ToSchema)]
pub struct AdminAccount {
    user: AdminUserBody,
    profile: ProfileBody,
}

/// An account.
#[utoipa::path(
    get,
    path = "/admin/v1/users/{id}",
    operation_id = "admin_get_user",
    tag = "admin",
    security(("admin_key" = [])),
    params(("id" = String, Path, format = "uuid", description = "The user's id.")),
    responses(
        (status = 200, description = "The user and profile.", body = AdminAccount),
        (status = 401, response = AdminUnauthenticated),
        (status = 404, description = "`not_found`: no such user.", body = ErrorBody),
    ),
)]
pub(super) async fn get_user(
    State(state): State<AppState>,
    _key: AdminKey,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<AdminAccount>, ApiError> {
    let id = user_id(path)?;
    let row = store::directory::admin_account(state.store.reader(), id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(admin_account(row)))
}

fn admin_account(row: store::directory::AdminRow) -> AdminAccount {
    let disabled = row.disabled_at.is_some();
    let AccountBody { user, profile } = row.account.into();
    AdminAccount {
        user: AdminUserBody { user, disabled },
        profile,
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchUser {
    /// `true`: verified now (an earlier verification time is kept); `false`: unverified, and
    /// pending verification links retired.
    email_verified: Option<bool>,
    /// `true`: the account cannot log in and every session is revoked; `false`: enabled.
    disabled: Option<bool>,
    /// Replaces `app_metadata` whole: a JSON object.
    #[schema(value_type = Option<Object>)]
    app_metadata: Option<serde_json::Value>,
}

/// Changes an account: the fields given, in one transaction.
#[utoipa::path(
    patch,
    path = "/admin/v1/users/{id}",
    operation_id = "admin_patch_user",
    tag = "admin",
    security(("admin_key" = [])),
    params(("id" = String, Path, format = "uuid", description = "The user's id.")),
    request_body = PatchUser,
    responses(
        (status = 200, description = "The user as it is now.", body = AdminUserResponse),
        (status = 401, response = AdminUnauthenticated),
        (status = 404, description = "`not_found`: no such user.", body = ErrorBody),
    ),
)]
pub(super) async fn patch(
    State(state): State<AppState>,
    key: AdminKey,
    client: ClientInfo,
    path: Result<Path<String>, PathRejection>,
    ApiJson(req): ApiJson<PatchUser>,
) -> Result<Json<AdminUserResponse>, ApiError> {
    let id = user_id(path)?;
    let patch = UserPatch {
        email_verified: req.email_verified,
        disabled: req.disabled,
        app_metadata: req
            .app_metadata
            .as_ref()
            .map(app_metadata_text)
            .transpose()?,
    };
    let now = state.clock.now();
    // One store call: every change given, with its audit and webhook events.
    let account = state
        .store
        .patch_user(id, patch, key.actor(&client).about(id), now)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(AdminUserResponse {
        user: AdminUserBody::from(account),
    }))
}

/// Deletes an account, as `DELETE /auth/me` does (a notice goes to its address).
#[utoipa::path(
    delete,
    path = "/admin/v1/users/{id}",
    operation_id = "admin_delete_user",
    tag = "admin",
    security(("admin_key" = [])),
    params(("id" = String, Path, format = "uuid", description = "The user's id.")),
    responses(
        (status = 204, description = "The account and everything that names it are deleted."),
        (status = 401, response = AdminUnauthenticated),
        (status = 404, description = "`not_found`: no such user.", body = ErrorBody),
    ),
)]
pub(super) async fn delete(
    State(state): State<AppState>,
    key: AdminKey,
    client: ClientInfo,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = user_id(path)?;
    delete_by_operator(&state, id, key.actor(&client).about(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An operator's deletion (admin API, CLI): the notice is rendered for the address read first,
/// and the deletion tried again when that address changed meanwhile.
pub(crate) async fn delete_by_operator(
    state: &AppState,
    user_id: Uuid,
    actor: store::audit::Actor,
) -> Result<(), ApiError> {
    for _ in 0..3 {
        let contact = store::users::find_contact(state.store.reader(), user_id)
            .await?
            .ok_or(ApiError::NotFound)?;
        // An address the current rules refuse (see `latchkey users email-collisions`) gets no
        // notice: such accounts are exactly the ones an operator may have to delete.
        let notice = match Email::parse(&contact.email) {
            Ok(to) => Some(links::account_deleted(state, &to)?),
            Err(_) => None,
        };
        let new = NewDeletion {
            user_id,
            by_owner: None,
            notice,
            refund: None,
            actor: actor.clone(),
            now: state.clock.now(),
        };
        // One store call: the account and everything that names it, the audit event, the
        // notice and `user.deleted`.
        match state.store.delete_account(new).await? {
            Deletion::Deleted(_) => {
                state.mailer.wake();
                return Ok(());
            }
            Deletion::NotFound => return Err(ApiError::NotFound),
            Deletion::Refused(refused) => return Err(refused.into()),
            Deletion::Stale => continue,
        }
    }
    Err(ApiError::Internal(anyhow::anyhow!(
        "the address kept changing during the deletion"
    )))
}

/// Mails the user a password reset link.
#[utoipa::path(
    post,
    path = "/admin/v1/users/{id}/password-reset",
    operation_id = "admin_password_reset",
    tag = "admin",
    security(("admin_key" = [])),
    params(("id" = String, Path, format = "uuid", description = "The user's id.")),
    responses(
        (status = 202, description = "A reset link is on its way (a disabled account gets \
            none: it cannot log in).", body = MessageBody),
        (status = 401, response = AdminUnauthenticated),
        (status = 404, description = "`not_found`: no such user.", body = ErrorBody),
    ),
)]
pub(super) async fn password_reset(
    State(state): State<AppState>,
    key: AdminKey,
    client: ClientInfo,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = user_id(path)?;
    for _ in 0..3 {
        let contact = store::users::find_contact(state.store.reader(), id)
            .await?
            .ok_or(ApiError::NotFound)?;
        let to = stored_email(&contact.email)?;
        let now = state.clock.now();
        let new = NewAdminReset {
            user_id: id,
            link: links::prepare(&state, LinkKind::PasswordReset, &to, now)?,
            actor: key.actor(&client).about(id),
            now,
        };
        // One store call: the link, its email and the audit event.
        match state.store.send_reset_by_admin(new).await? {
            AdminReset::Sent | AdminReset::Disabled => {
                state.mailer.wake();
                let message = "A reset link is on its way.";
                return Ok((StatusCode::ACCEPTED, Json(MessageBody { message })).into_response());
            }
            AdminReset::NotFound => return Err(ApiError::NotFound),
            AdminReset::Stale => continue,
        }
    }
    Err(ApiError::Internal(anyhow::anyhow!(
        "the address kept changing during the reset"
    )))
}
