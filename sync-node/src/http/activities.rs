//! Comments and likes on shared albums and their photos, in Immich's shapes:
//! `GET|POST /api/activities`, `DELETE /api/activities/{id}`, `GET /api/activities/statistics`.
//!
//! Activities live in the album's document (`tessera_core::album`), so members' devices get
//! them with the album and the CRDT merges what was written on both sides. Any member may
//! comment and like while the album has activity enabled; a comment is deleted by its author or
//! the album's owner.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tessera_core::{Activity, AlbumRole, DocId};

use crate::catalog::CatalogError;
use crate::http::users::user_brief;
use crate::http::*;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/activities", get(list).post(create))
        .route("/activities/statistics", get(statistics))
        .route("/activities/{id}", delete(remove))
}

fn album_doc(id: &str) -> ApiResult<DocId> {
    DocId::album(id).map_err(|_| ApiError::not_found("Album not found"))
}

fn activity_json(node: &crate::Node, a: &Activity) -> Value {
    let user = match node.auth.user(&a.user) {
        Ok(Some(u)) => user_brief(&u),
        _ => json!({"id": a.user, "name": "", "email": ""}),
    };
    json!({
        "id": a.id, "createdAt": a.at, "type": a.kind, "user": user,
        "assetId": a.asset, "comment": a.comment,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    album_id: String,
    asset_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    level: Option<String>,
    user_id: Option<String>,
}

async fn list(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let doc = album_doc(&q.album_id)?;
    blocking(move || {
        let lib = node.catalog.lock()?;
        if lib
            .album_role(&doc, &u.id)
            .map_err(CatalogError::from)?
            .is_none()
            || lib.album(&doc).map_err(CatalogError::from)?.is_none()
        {
            return Err(ApiError::not_found("Album not found"));
        }
        let out: Vec<Value> = lib
            .activities(&doc)
            .map_err(CatalogError::from)?
            .iter()
            .filter(|a| q.kind.as_ref().is_none_or(|k| &a.kind == k))
            .filter(|a| q.user_id.as_ref().is_none_or(|x| &a.user == x))
            .filter(|a| match (q.level.as_deref(), &q.asset_id) {
                (Some("album"), _) => a.asset.is_none(),
                (Some("asset"), Some(id)) => a.asset.as_ref() == Some(id),
                (Some("asset"), None) => a.asset.is_some(),
                (_, Some(id)) => a.asset.as_ref() == Some(id),
                _ => true,
            })
            .map(|a| activity_json(&node, a))
            .collect();
        Ok(Json(Value::Array(out)))
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Create {
    album_id: String,
    asset_id: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    comment: Option<String>,
}

async fn create(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Json(b): Json<Create>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let doc = album_doc(&b.album_id)?;
    let comment = match (b.kind.as_str(), b.comment.as_deref().map(str::trim)) {
        ("comment", Some(c)) if !c.is_empty() && c.chars().count() <= 10_000 => Some(c.to_owned()),
        ("comment", _) => {
            return Err(ApiError::bad_request(
                "a comment needs 1 to 10000 characters of text",
            ))
        }
        ("like", _) => None,
        (other, _) => {
            return Err(ApiError::bad_request(format!(
                "type must be comment or like, not {other:?}"
            )))
        }
    };
    blocking(move || {
        let mut lib = node.catalog.lock()?;
        let album = lib
            .album(&doc)
            .map_err(CatalogError::from)?
            .filter(|a| a.role_of(&u.id).is_some())
            .ok_or_else(|| ApiError::not_found("Album not found"))?;
        if !album.activity {
            return Err(ApiError::bad_request(
                "Comments and likes are turned off for this album",
            ));
        }
        if let Some(asset) = &b.asset_id {
            if !album.items.iter().any(|i| &i.asset == asset) {
                return Err(ApiError::bad_request("That photo is not in this album"));
            }
        }
        // One like per user and target: liking again answers the existing like.
        if b.kind == "like" {
            let existing = lib
                .activities(&doc)
                .map_err(CatalogError::from)?
                .into_iter()
                .find(|a| a.kind == "like" && a.user == u.id && a.asset == b.asset_id);
            if let Some(a) = existing {
                return Ok((StatusCode::OK, Json(activity_json(&node, &a))));
            }
        }
        let a = Activity {
            id: crate::random_hex(16).map_err(ApiError::internal)?,
            kind: b.kind.clone(),
            user: u.id.clone(),
            asset: b.asset_id.clone(),
            comment,
            at: crate::now_rfc3339(),
        };
        lib.add_activity(&doc, &a).map_err(CatalogError::from)?;
        node.catalog.persist(&mut lib)?;
        Ok((StatusCode::CREATED, Json(activity_json(&node, &a))))
    })
    .await
}

/// Deletes a comment or like: its author, or the album's owner.
async fn remove(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    blocking(move || {
        let mut lib = node.catalog.lock()?;
        for album in lib.albums_of(&u.id).map_err(CatalogError::from)? {
            let doc = DocId::album(&album.id).map_err(ApiError::internal)?;
            let found = lib
                .activities(&doc)
                .map_err(CatalogError::from)?
                .into_iter()
                .find(|a| a.id == id);
            if let Some(a) = found {
                if a.user != u.id && album.role_of(&u.id) != Some(AlbumRole::Owner) {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "Only its author or the album's owner can delete this",
                    ));
                }
                lib.remove_activity(&doc, &id).map_err(CatalogError::from)?;
                node.catalog.persist(&mut lib)?;
                return Ok(StatusCode::NO_CONTENT);
            }
        }
        Err(ApiError::not_found("No such comment or like"))
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatsQuery {
    album_id: String,
    asset_id: Option<String>,
}

async fn statistics(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Query(q): Query<StatsQuery>,
) -> ApiResult<Json<Value>> {
    let doc = album_doc(&q.album_id)?;
    blocking(move || {
        let lib = node.catalog.lock()?;
        lib.album(&doc)
            .map_err(CatalogError::from)?
            .filter(|a| a.role_of(&u.id).is_some())
            .ok_or_else(|| ApiError::not_found("Album not found"))?;
        let acts = lib.activities(&doc).map_err(CatalogError::from)?;
        let on = |a: &&Activity| q.asset_id.is_none() || a.asset == q.asset_id;
        let comments = acts
            .iter()
            .filter(on)
            .filter(|a| a.kind == "comment")
            .count();
        let likes = acts.iter().filter(on).filter(|a| a.kind == "like").count();
        Ok(Json(json!({"comments": comments, "likes": likes})))
    })
    .await
}
