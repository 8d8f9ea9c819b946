//! `GET /admin/v1/audit`: the audit trail, newest first, by user and type.

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{cursor_of, limit, parse_cursor, query};
use crate::admin_keys::AdminKey;
use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::routes::account::AuditRecord;
use crate::routes::openapi::responses::AdminUnauthenticated;
use crate::store;

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/v1/audit", get(query_audit))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    user_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    events: Vec<AuditRecord>,
    /// Where the next page starts; `null` on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// Audit events, newest first, a page at a time. Events written while paging are not shown on
/// later pages (they are newer than the first one); none is shown twice.
#[utoipa::path(
    get,
    path = "/admin/v1/audit",
    operation_id = "admin_audit",
    tag = "admin",
    security(("admin_key" = [])),
    params(
        ("user_id" = Option<String>, Query, format = "uuid", description = "Only events about \
            this user (deleted users included)."),
        ("type" = Option<String>, Query, description = "Only events of this type, e.g. `login`, \
            `login_failed`, `user_deleted`."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Page size \
            (50 by default)."),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page."),
    ),
    responses(
        (status = 200, description = "A page of events.", body = AuditPage),
        (status = 401, response = AdminUnauthenticated),
        (status = 422, description = "`validation_failed`: a bad `user_id`, `limit` or \
            `cursor`, or an unknown parameter.", body = ErrorBody),
    ),
)]
pub(super) async fn query_audit(
    State(state): State<AppState>,
    _key: AdminKey,
    raw: RawQuery,
) -> Result<Json<AuditPage>, ApiError> {
    let q: AuditQuery = query(raw)?;
    let limit = limit(q.limit.as_deref())?;
    let before = parse_cursor(q.cursor.as_deref())?;
    let user_id = match q.user_id.as_deref().filter(|u| !u.is_empty()) {
        Some(raw) => {
            Some(Uuid::try_parse(raw).map_err(|_| ApiError::field("user_id", "is not a UUID"))?)
        }
        None => None,
    };
    let kind = q.kind.as_deref().filter(|k| !k.is_empty());
    let db = state.store.reader();
    let mut rows = store::directory::audit_page(db, user_id, kind, before, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = match more {
        true => rows.last().map(|e| cursor_of(&e.id)),
        false => None,
    };
    Ok(Json(AuditPage {
        events: rows.into_iter().map(AuditRecord::from).collect(),
        next_cursor,
    }))
}
