//! Partner sharing in Immich's shapes: `GET /api/partners?direction=shared-by|shared-with`,
//! `POST /api/partners` (`{sharedWithId}`; also Immich's older `POST /api/partners/{id}`),
//! `PUT /api/partners/{id}` (`{inTimeline}`: the partner's own choice) and
//! `DELETE /api/partners/{id}`. Tessera adds `since` (`YYYY-MM`): share only from that month
//! on. The share lives in the sharer's root document and the choice in the partner's
//! (`tessera_core::partner`), so devices change them offline too.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tessera_core::PartnerShare;

use crate::catalog::CatalogError;
use crate::http::users::user_brief;
use crate::http::*;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/partners", get(list).post(create))
        .route(
            "/partners/{id}",
            post(create_by_path).put(update).delete(remove),
        )
}

#[derive(Deserialize)]
struct ListQuery {
    direction: Option<String>,
}

/// Immich's `PartnerResponseDto` (a user, and whether the partner shows the photos in their
/// timeline), with Tessera's `since`.
fn partner_json(node: &crate::Node, other: &str, share: &PartnerShare, in_timeline: bool) -> Value {
    let mut v = match node.auth.user(other) {
        Ok(Some(u)) => user_brief(&u),
        _ => json!({"id": other, "name": "", "email": "", "profileImagePath": "",
                    "avatarColor": "primary"}),
    };
    v["inTimeline"] = json!(in_timeline);
    v["since"] = json!(share.since);
    v
}

async fn list(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let by = match q.direction.as_deref() {
        Some("shared-by") => true,
        Some("shared-with") => false,
        other => {
            return Err(ApiError::bad_request(format!(
                "direction must be shared-by or shared-with, not {other:?}"
            )))
        }
    };
    blocking(move || {
        let lib = node.catalog.lock()?;
        let out: Vec<Value> = if by {
            lib.partners_of(&u.id)
                .map_err(CatalogError::from)?
                .iter()
                .filter(|s| active(&node, &s.partner))
                .map(|s| {
                    let on = lib.partner_in_timeline(&s.partner, &u.id);
                    partner_json(&node, &s.partner, s, on)
                })
                .collect()
        } else {
            lib.shared_with(&u.id)
                .map_err(CatalogError::from)?
                .iter()
                .filter(|s| active(&node, &s.sharer))
                .map(|s| {
                    let on = lib.partner_in_timeline(&u.id, &s.sharer);
                    partner_json(&node, &s.sharer, s, on)
                })
                .collect()
        };
        Ok(Json(Value::Array(out)))
    })
    .await
}

fn active(node: &crate::Node, user: &str) -> bool {
    matches!(node.auth.user(user), Ok(Some(u)) if u.deleted_at.is_none())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    shared_with_id: Option<String>,
    /// Tessera: share only from this month (`YYYY-MM`) on; absent or empty: everything.
    since: Option<String>,
}

async fn create(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Json(b): Json<CreateBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Some(partner) = b.shared_with_id.clone() else {
        return Err(ApiError::bad_request("sharedWithId is required"));
    };
    share(node, u, partner, b.since).await
}

async fn create_by_path(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    body: Option<Json<CreateBody>>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let since = body.and_then(|Json(b)| b.since);
    share(node, u, id, since).await
}

async fn share(
    node: AppState,
    u: crate::auth::User,
    partner: String,
    since: Option<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if partner == u.id {
        return Err(ApiError::bad_request(
            "You cannot share your library with yourself",
        ));
    }
    if !active(&node, &partner) {
        return Err(ApiError::bad_request(format!(
            "no such user: {}",
            partner.chars().take(80).collect::<String>()
        )));
    }
    let since = since.filter(|s| !s.is_empty());
    if let Some(s) = &since {
        if !tessera_core::partner::valid_since(s) {
            return Err(ApiError::bad_request(format!(
                "since must be a month YYYY-MM, not {s:?}"
            )));
        }
    }
    blocking(move || {
        let mut lib = node.catalog.lock()?;
        lib.set_partner(&u.id, &partner, since.as_deref(), &crate::now_rfc3339())
            .map_err(CatalogError::from)?;
        node.catalog.persist(&mut lib)?;
        let share = lib
            .partner_share(&u.id, &partner)
            .map_err(CatalogError::from)?
            .ok_or_else(|| ApiError::internal("the share vanished"))?;
        let on = lib.partner_in_timeline(&partner, &u.id);
        node.webhooks.emit(
            &u.id,
            "share.created",
            json!({"kind": "partner", "sharedWithId": partner, "since": share.since}),
        );
        Ok((
            StatusCode::CREATED,
            Json(partner_json(&node, &partner, &share, on)),
        ))
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateBody {
    in_timeline: bool,
}

/// The partner's choice: show `id`'s shared photos in my timeline or not.
async fn update(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    Json(b): Json<UpdateBody>,
) -> ApiResult<Json<Value>> {
    blocking(move || {
        let mut lib = node.catalog.lock()?;
        let share = lib
            .partner_share(&id, &u.id)
            .map_err(CatalogError::from)?
            .ok_or_else(|| ApiError::not_found("Partner not found"))?;
        lib.set_partner_in_timeline(&u.id, &id, b.in_timeline)
            .map_err(CatalogError::from)?;
        node.catalog.persist(&mut lib)?;
        Ok(Json(partner_json(&node, &id, &share, b.in_timeline)))
    })
    .await
}

/// Stops sharing my library with `id`: their devices drop my months at their next sync.
async fn remove(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    blocking(move || {
        let mut lib = node.catalog.lock()?;
        if lib
            .partner_share(&u.id, &id)
            .map_err(CatalogError::from)?
            .is_none()
        {
            return Err(ApiError::not_found("Partner not found"));
        }
        lib.remove_partner(&u.id, &id).map_err(CatalogError::from)?;
        node.catalog.persist(&mut lib)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
