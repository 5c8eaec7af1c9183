//! HTTP endpoints for library housekeeping and duplicates, in Immich's shapes where Immich has
//! the operation: `PUT /api/assets` (favorite, archive), `DELETE /api/assets` (trash, or
//! delete for good with `force`), `POST /api/trash/{empty,restore,restore/assets}`,
//! `GET /api/duplicates`, `DELETE /api/duplicates/{id}` (not duplicates: remembered), plus
//! `GET /api/assets/{id}/motion` (the moving part of a Live/motion photo) and
//! `GET|PUT /api/tessera/settings` (`trashDays`).

use crate::blobs::BlobKind;
use crate::catalog::CatalogError;
use crate::housekeeping;
use crate::housekeeping::Action;
use axum::extract::Path;
use axum::extract::Query;
use axum::extract::Request;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::delete;
use axum::routing::get;
use axum::routing::post;
use axum::Json;
use axum::Router;
use serde::Deserialize;
use serde_json::json;
use serde_json::Value;
use tessera_core::dupes::near_duplicate_groups;
use tessera_core::dupes::DEFAULT_THRESHOLD;
use tessera_core::dupes::MAX_THRESHOLD;

use crate::http::*;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/assets/{id}/motion", get(get_motion))
        .route("/assets/{id}/video/playback", get(video_playback))
        .route("/trash/empty", post(empty_trash))
        .route("/trash/restore", post(restore_all))
        .route("/trash/restore/assets", post(restore_assets))
        .route("/duplicates", get(duplicates))
        .route("/duplicates/{id}", delete(dismiss_duplicates))
        .route("/tessera/settings", get(get_settings).put(put_settings))
}

fn ids_ok(ids: &[String]) -> ApiResult<()> {
    if ids.len() > 100_000 {
        return Err(ApiError::bad_request("at most 100000 ids per request"));
    }
    match ids.iter().find(|i| !crate::blobs::valid_hash(i)) {
        Some(bad) => Err(ApiError::bad_request(format!(
            "not an asset id: {}",
            bad.chars().take(80).collect::<String>()
        ))),
        None => Ok(()),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpdateAssets {
    ids: Vec<String>,
    is_favorite: Option<bool>,
    is_archived: Option<bool>,
    /// Immich 1.13x+: `archive` | `timeline`.
    visibility: Option<String>,
}

pub(crate) async fn update_assets(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Json(b): Json<UpdateAssets>,
) -> ApiResult<StatusCode> {
    ids_ok(&b.ids)?;
    let archive = match b.visibility.as_deref() {
        Some("archive") => Some(true),
        Some("timeline") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "visibility {other:?} is not supported (archive or timeline)"
            )))
        }
        None => b.is_archived,
    };
    let n = node.clone();
    blocking(move || {
        if let Some(f) = b.is_favorite {
            housekeeping::apply(&n, &u.id, &b.ids, Action::Favorite(f))?;
        }
        if let Some(a) = archive {
            housekeeping::apply(&n, &u.id, &b.ids, Action::Archive(a))?;
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(crate) struct DeleteAssets {
    ids: Vec<String>,
    #[serde(default)]
    force: bool,
}

/// Moves to the trash, or with `force` deletes for good (originals included).
pub(crate) async fn delete_assets(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Json(b): Json<DeleteAssets>,
) -> ApiResult<StatusCode> {
    ids_ok(&b.ids)?;
    let action = if b.force {
        Action::Purge
    } else {
        Action::Trash
    };
    blocking(move || Ok(housekeeping::apply(&node, &u.id, &b.ids, action)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn trashed_ids(node: &crate::Node, user: &str) -> Result<Vec<String>, crate::NodeError> {
    Ok(housekeeping::user_assets(node, user)?
        .into_iter()
        .filter(|r| r.is_trashed())
        .map(|r| r.id)
        .collect())
}

async fn empty_trash(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
) -> ApiResult<Json<Value>> {
    let count = blocking(move || {
        let ids = trashed_ids(&node, &u.id)?;
        Ok(housekeeping::apply(&node, &u.id, &ids, Action::Purge)?)
    })
    .await?;
    Ok(Json(json!({ "count": count })))
}

async fn restore_all(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
) -> ApiResult<Json<Value>> {
    let count = blocking(move || {
        let ids = trashed_ids(&node, &u.id)?;
        Ok(housekeeping::apply(&node, &u.id, &ids, Action::Restore)?)
    })
    .await?;
    Ok(Json(json!({ "count": count })))
}

#[derive(Deserialize)]
struct Ids {
    ids: Vec<String>,
}

async fn restore_assets(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Json(b): Json<Ids>,
) -> ApiResult<Json<Value>> {
    ids_ok(&b.ids)?;
    let count =
        blocking(move || Ok(housekeeping::apply(&node, &u.id, &b.ids, Action::Restore)?)).await?;
    Ok(Json(json!({ "count": count })))
}

/// The moving part of a Live Photo (its paired video asset) or a motion photo (the video cut
/// out of the still).
async fn get_motion(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    ids_ok(std::slice::from_ref(&id))?;
    let m = find_record(&node, &u, &id)?
        .motion
        .ok_or_else(|| ApiError::not_found("This asset has no motion part"))?;
    let (kind, mime) = if node.blobs.exists(BlobKind::Motion, &m) {
        (BlobKind::Motion, "video/mp4".to_owned())
    } else {
        // A Live Photo: the paired video is an asset of the same user.
        let video = find_record(&node, &u, &m)?;
        let mime = video.mime.unwrap_or_else(|| "video/quicktime".into());
        (BlobKind::Original, mime)
    };
    crate::http::serve_stored(&node, kind, &m, req, &mime, || {
        ApiError::not_found("The motion part is not on this node (yet)")
    })
    .await
}

/// Immich's playback path: the original video, with byte ranges (no transcoding: a browser
/// plays what it has a codec for).
async fn video_playback(
    State(node): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    ids_ok(std::slice::from_ref(&id))?;
    let r = Some(find_viewed(&node, &viewer, &id)?)
        .filter(|r| r.is_video())
        .ok_or_else(|| ApiError::not_found("No such video"))?;
    let mime = r.mime.as_deref().unwrap_or("video/mp4");
    crate::http::serve_stored(&node, BlobKind::Original, &r.id, req, mime, || {
        ApiError::not_found("The video's original is not on this node (yet)")
    })
    .await
}

#[derive(Deserialize)]
struct DupQuery {
    threshold: Option<u32>,
}

/// Near-duplicate groups of the caller's library, best candidate first (Immich's shape plus
/// `suggestedKeepAssetIds` and the group's Hamming `distance`).
async fn duplicates(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Query(q): Query<DupQuery>,
) -> ApiResult<Json<Value>> {
    let threshold = q.threshold.unwrap_or(DEFAULT_THRESHOLD);
    if threshold > MAX_THRESHOLD {
        return Err(ApiError::bad_request(format!(
            "threshold is at most {MAX_THRESHOLD} bits"
        )));
    }
    let groups = blocking(move || {
        let records = housekeeping::user_assets(&node, &u.id)?;
        let rejected = node
            .catalog
            .lock()?
            .rejected_duplicates(&u.id)
            .map_err(CatalogError::from)?;
        Ok(near_duplicate_groups(&records, threshold, &rejected))
    })
    .await?;
    Ok(Json(Value::Array(
        groups
            .into_iter()
            .map(|g| {
                json!({
                    "duplicateId": g.id,
                    "assets": g.assets.iter().map(asset_json).collect::<Vec<_>>(),
                    "suggestedKeepAssetIds": [g.keep],
                    "distance": g.distance,
                })
            })
            .collect(),
    )))
}

/// "These are not duplicates": every pair of the group is remembered (in the catalogue, so
/// every device agrees) and the group is not suggested again.
async fn dismiss_duplicates(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let found = blocking(move || {
        let records = housekeeping::user_assets(&node, &u.id)?;
        let mut lib = node.catalog.lock()?;
        let rejected = lib.rejected_duplicates(&u.id).map_err(CatalogError::from)?;
        let Some(g) = near_duplicate_groups(&records, MAX_THRESHOLD, &rejected)
            .into_iter()
            .find(|g| g.id == id || g.assets.iter().any(|a| a.id == id))
        else {
            return Ok(false);
        };
        let ids: Vec<String> = g.assets.into_iter().map(|a| a.id).collect();
        lib.reject_duplicates(&u.id, &ids, &crate::now_rfc3339())
            .map_err(CatalogError::from)?;
        node.catalog.persist(&mut lib)?;
        Ok(true)
    })
    .await?;
    if found {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("No such duplicate group"))
    }
}

async fn get_settings(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
) -> ApiResult<Json<Value>> {
    let days = node.catalog.lock()?.trash_days(&u.id);
    Ok(Json(json!({ "trashDays": days })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Settings {
    trash_days: u32,
}

async fn put_settings(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Json(s): Json<Settings>,
) -> ApiResult<Response> {
    if s.trash_days > 3650 {
        return Err(ApiError::bad_request("trashDays is at most 3650"));
    }
    {
        let mut lib = node.catalog.lock()?;
        lib.set_trash_days(&u.id, s.trash_days)
            .map_err(CatalogError::from)?;
        node.catalog.persist(&mut lib)?;
    }
    Ok(Json(json!({ "trashDays": s.trash_days })).into_response())
}
