//! Albums in Immich's shapes: `GET|POST /api/albums`, `GET|PATCH|DELETE /api/albums/{id}`,
//! `PUT|DELETE /api/albums/{id}/assets`, `PUT /api/albums/{id}/users`,
//! `PUT|DELETE /api/albums/{id}/user/{userId}`, `GET /api/albums/statistics`.
//!
//! An album is its own document (`tessera_core::album`). Who may do what is decided by the
//! album's roles: the owner edits everything; an editor adds photos (their own or ones they can
//! see) and removes what they added; a viewer only looks. Anyone else gets 404 (an album's
//! existence is not revealed). Photos stay in their owners' libraries: deleting an album or
//! removing a photo from it never deletes a photo.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tessera_core::{AlbumRole, AlbumView, AssetRecord, DocId, Library};

use crate::auth::User;
use crate::catalog::CatalogError;
use crate::http::users::user_brief;
use crate::http::*;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/albums", get(list_albums).post(create_album))
        .route("/albums/statistics", get(statistics))
        .route(
            "/albums/{id}",
            get(get_album).patch(update_album).delete(delete_album),
        )
        .route("/albums/{id}/assets", put(add_assets).delete(remove_assets))
        .route("/albums/{id}/users", put(add_users))
        .route(
            "/albums/{id}/user/{user_id}",
            put(update_user).delete(remove_user),
        )
}

fn not_found() -> ApiError {
    ApiError::not_found("Album not found")
}

fn album_doc(id: &str) -> ApiResult<DocId> {
    DocId::album(id).map_err(|_| not_found())
}

/// The album and the caller's role in it (404 when they have none).
fn album_for(lib: &Library, doc: &DocId, user: &str) -> ApiResult<(AlbumView, AlbumRole)> {
    let a = lib
        .album(doc)
        .map_err(CatalogError::from)?
        .ok_or_else(not_found)?;
    let role = a.role_of(user).ok_or_else(not_found)?;
    Ok((a, role))
}

fn forbidden(msg: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, msg)
}

fn brief_of(node: &crate::Node, id: &str) -> Value {
    match node.auth.user(id) {
        Ok(Some(u)) => user_brief(&u),
        _ => {
            json!({"id": id, "name": "", "email": "", "profileImagePath": "", "avatarColor": "primary"})
        }
    }
}

/// The record of an album item (or a shared link's photo), from its owner's library: not
/// purged, not in the trash.
pub(crate) fn item_record(
    node: &crate::Node,
    lib: &Library,
    owner: &str,
    asset: &str,
) -> Option<AssetRecord> {
    let loc = node.location_of(owner, asset).ok()??;
    let shard = DocId::shard(owner, &loc.month).ok()?;
    lib.asset_in(&shard, asset)
        .ok()?
        .filter(|r| !r.is_purged() && !r.is_trashed())
}

/// Immich's `AlbumResponseDto`.
fn album_json(node: &crate::Node, lib: &Library, a: &AlbumView, with_assets: bool) -> Value {
    let records: Vec<AssetRecord> = a
        .items
        .iter()
        .filter_map(|i| item_record(node, lib, &i.owner, &i.asset))
        .collect();
    let mut dates: Vec<&str> = records
        .iter()
        .filter_map(|r| r.taken_at.as_deref())
        .collect();
    dates.sort_unstable();
    let users: Vec<Value> = a
        .members
        .iter()
        .map(|(u, role)| json!({"user": brief_of(node, u), "role": role.as_str()}))
        .collect();
    let cover = a
        .cover
        .clone()
        .filter(|c| records.iter().any(|r| &r.id == c))
        .or_else(|| records.first().map(|r| r.id.clone()));
    let mut assets: Vec<Value> = Vec::new();
    if with_assets {
        let mut rs = records.clone();
        rs.sort_by(|x, y| x.taken_at.cmp(&y.taken_at));
        if a.order != "asc" {
            rs.reverse();
        }
        assets = rs.iter().map(asset_json).collect();
    }
    json!({
        "id": a.id, "albumName": a.name, "description": a.description,
        "ownerId": a.owner, "owner": brief_of(node, &a.owner),
        "albumUsers": users, "shared": !a.members.is_empty(), "hasSharedLink": false,
        "albumThumbnailAssetId": cover, "assetCount": records.len(), "assets": assets,
        "createdAt": a.created_at, "updatedAt": a.updated_at,
        "startDate": dates.first(), "endDate": dates.last(),
        "lastModifiedAssetTimestamp": a.items.iter().map(|i| i.added_at.as_str()).max(),
        "isActivityEnabled": a.activity, "order": a.order,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    shared: Option<bool>,
    asset_id: Option<String>,
}

async fn list_albums(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    blocking(move || {
        let lib = node.catalog.lock()?;
        let out: Vec<Value> = lib
            .albums_of(&u.id)
            .map_err(CatalogError::from)?
            .iter()
            .filter(|a| match q.shared {
                // Immich: shared=true → every shared album the user is in (owned or not);
                // shared=false → the user's own albums shared with nobody.
                Some(true) => !a.members.is_empty(),
                Some(false) => a.owner == u.id && a.members.is_empty(),
                None => true,
            })
            .filter(|a| {
                q.asset_id
                    .as_ref()
                    .is_none_or(|id| a.items.iter().any(|i| &i.asset == id))
            })
            .map(|a| album_json(&node, &lib, a, false))
            .collect();
        Ok(Json(Value::Array(out)))
    })
    .await
}

async fn statistics(State(node): State<AppState>, AuthUser(u): AuthUser) -> ApiResult<Json<Value>> {
    blocking(move || {
        let lib = node.catalog.lock()?;
        let albums = lib.albums_of(&u.id).map_err(CatalogError::from)?;
        let owned = albums.iter().filter(|a| a.owner == u.id).count();
        let shared = albums.iter().filter(|a| !a.members.is_empty()).count();
        let not_shared = albums
            .iter()
            .filter(|a| a.owner == u.id && a.members.is_empty())
            .count();
        Ok(Json(
            json!({"owned": owned, "shared": shared, "notShared": not_shared}),
        ))
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlbumUserDto {
    user_id: String,
    #[serde(default = "editor")]
    role: String,
}

fn editor() -> String {
    "editor".into()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateAlbum {
    album_name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    asset_ids: Vec<String>,
    #[serde(default)]
    album_users: Vec<AlbumUserDto>,
}

/// Checks that members exist, are active and are not the owner; returns `(user, role)`.
fn members_of(
    node: &crate::Node,
    owner: &str,
    users: &[AlbumUserDto],
) -> ApiResult<Vec<(String, AlbumRole)>> {
    let mut out = Vec::new();
    for m in users {
        let role = AlbumRole::member(&m.role).ok_or_else(|| {
            ApiError::bad_request(format!("role must be editor or viewer, not {:?}", m.role))
        })?;
        if m.user_id == owner {
            return Err(ApiError::bad_request(
                "the owner is not a member of their own album",
            ));
        }
        match node.auth.user(&m.user_id)? {
            Some(u) if u.deleted_at.is_none() => out.push((u.id, role)),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "no such user: {}",
                    m.user_id
                )))
            }
        }
    }
    Ok(out)
}

/// Which of `ids` the user may put in an album, with each asset's owner; the rest with the
/// reason (Immich's `BulkIdErrorReason`).
fn visible_assets(
    node: &crate::Node,
    u: &User,
    ids: &[String],
) -> Vec<(String, Result<String, &'static str>)> {
    ids.iter()
        .map(|id| {
            let owner = find_record_and_owner(node, u, id)
                .map(|(owner, _)| owner)
                .map_err(|_| "no_permission");
            (id.clone(), owner)
        })
        .collect()
}

async fn create_album(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Json(b): Json<CreateAlbum>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let name = b.album_name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::bad_request(
            "albumName must be 1 to 200 characters",
        ));
    }
    blocking(move || {
        let members = members_of(&node, &u.id, &b.album_users)?;
        let items: Vec<(String, String)> = visible_assets(&node, &u, &b.asset_ids)
            .into_iter()
            .filter_map(|(id, o)| o.ok().map(|o| (id, o)))
            .collect();
        let id = crate::random_hex(16).map_err(ApiError::internal)?;
        let now = crate::now_rfc3339();
        let mut lib = node.catalog.lock()?;
        let doc = lib
            .create_album(&id, &u.id, &name, b.description.trim(), &now)
            .map_err(CatalogError::from)?;
        for (m, role) in &members {
            lib.set_album_member(&doc, m, *role, &now)
                .map_err(CatalogError::from)?;
        }
        lib.add_album_items(&doc, &items, &u.id, &now)
            .map_err(CatalogError::from)?;
        node.catalog.persist(&mut lib)?;
        let a = lib
            .album(&doc)
            .map_err(CatalogError::from)?
            .ok_or_else(|| ApiError::internal("album vanished"))?;
        Ok((StatusCode::CREATED, Json(album_json(&node, &lib, &a, true))))
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetQuery {
    #[serde(default)]
    without_assets: bool,
}

/// An album, for its owner and members, or for a visitor with a link to it (`?key=`).
async fn get_album(
    State(node): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<GetQuery>,
) -> ApiResult<Json<Value>> {
    let doc = album_doc(&id)?;
    blocking(move || {
        let lib = node.catalog.lock()?;
        let a = match &viewer {
            Viewer::User(u) => album_for(&lib, &doc, &u.id)?.0,
            Viewer::Link(l) if l.album_id.as_deref() == Some(id.as_str()) => lib
                .album(&doc)
                .map_err(CatalogError::from)?
                .filter(|a| a.owner == l.user_id)
                .ok_or_else(not_found)?,
            Viewer::Link(_) => return Err(not_found()),
        };
        let mut v = album_json(&node, &lib, &a, !q.without_assets);
        if matches!(&viewer, Viewer::Link(_)) {
            // A visitor sees the album, not who is in it.
            v["albumUsers"] = json!([]);
        }
        Ok(Json(v))
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateAlbum {
    album_name: Option<String>,
    description: Option<String>,
    album_thumbnail_asset_id: Option<String>,
    is_activity_enabled: Option<bool>,
    order: Option<String>,
}

async fn update_album(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    Json(b): Json<UpdateAlbum>,
) -> ApiResult<Json<Value>> {
    let doc = album_doc(&id)?;
    blocking(move || {
        let mut lib = node.catalog.lock()?;
        let (a, role) = album_for(&lib, &doc, &u.id)?;
        if role != AlbumRole::Owner {
            return Err(forbidden("Only the album's owner can change it"));
        }
        let mut f = serde_json::Map::new();
        if let Some(n) = b.album_name {
            let n = n.trim().to_owned();
            if n.is_empty() || n.chars().count() > 200 {
                return Err(ApiError::bad_request(
                    "albumName must be 1 to 200 characters",
                ));
            }
            f.insert("name".into(), json!(n));
        }
        if let Some(d) = b.description {
            f.insert("description".into(), json!(d.trim()));
        }
        if let Some(c) = b.album_thumbnail_asset_id {
            if !a.items.iter().any(|i| i.asset == c) {
                return Err(ApiError::bad_request(
                    "the cover must be a photo in the album",
                ));
            }
            f.insert("cover".into(), json!(c));
        }
        if let Some(x) = b.is_activity_enabled {
            f.insert("activity".into(), json!(x));
        }
        if let Some(o) = b.order {
            if o != "asc" && o != "desc" {
                return Err(ApiError::bad_request("order must be asc or desc"));
            }
            f.insert("order".into(), json!(o));
        }
        lib.update_album_meta(&doc, f, &crate::now_rfc3339())
            .map_err(CatalogError::from)?;
        node.catalog.persist(&mut lib)?;
        let (a, _) = album_for(&lib, &doc, &u.id)?;
        Ok(Json(album_json(&node, &lib, &a, false)))
    })
    .await
}

async fn delete_album(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let doc = album_doc(&id)?;
    blocking(move || {
        let mut lib = node.catalog.lock()?;
        let (_, role) = album_for(&lib, &doc, &u.id)?;
        if role != AlbumRole::Owner {
            return Err(forbidden("Only the album's owner can delete it"));
        }
        lib.delete_album(&doc, &crate::now_rfc3339())
            .map_err(CatalogError::from)?;
        node.catalog.persist(&mut lib)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

#[derive(Deserialize)]
struct Ids {
    ids: Vec<String>,
}

async fn add_assets(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    Json(b): Json<Ids>,
) -> ApiResult<Json<Value>> {
    let doc = album_doc(&id)?;
    if b.ids.len() > 100_000 {
        return Err(ApiError::bad_request("at most 100000 ids per request"));
    }
    blocking(move || {
        {
            let lib = node.catalog.lock()?;
            let (_, role) = album_for(&lib, &doc, &u.id)?;
            if role == AlbumRole::Viewer {
                return Err(forbidden("A viewer cannot add photos to this album"));
            }
        }
        let checked = visible_assets(&node, &u, &b.ids);
        let items: Vec<(String, String)> = checked
            .iter()
            .filter_map(|(id, o)| o.as_ref().ok().map(|o| (id.clone(), o.clone())))
            .collect();
        let mut lib = node.catalog.lock()?;
        let added = lib
            .add_album_items(&doc, &items, &u.id, &crate::now_rfc3339())
            .map_err(CatalogError::from)?;
        node.catalog.persist(&mut lib)?;
        let out: Vec<Value> = checked
            .iter()
            .map(|(id, o)| match o {
                Err(reason) => json!({"id": id, "success": false, "error": reason}),
                Ok(_) if added.contains(id) => json!({"id": id, "success": true}),
                Ok(_) => json!({"id": id, "success": false, "error": "duplicate"}),
            })
            .collect();
        Ok(Json(Value::Array(out)))
    })
    .await
}

async fn remove_assets(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    Json(b): Json<Ids>,
) -> ApiResult<Json<Value>> {
    let doc = album_doc(&id)?;
    blocking(move || {
        let mut lib = node.catalog.lock()?;
        let (a, role) = album_for(&lib, &doc, &u.id)?;
        // The owner removes anything; an editor what they added; a viewer nothing.
        let allowed = |asset: &str| match role {
            AlbumRole::Owner => true,
            AlbumRole::Editor => a
                .items
                .iter()
                .any(|i| i.asset == asset && i.added_by == u.id),
            AlbumRole::Viewer => false,
        };
        let (ok, refused): (Vec<String>, Vec<String>) =
            b.ids.iter().cloned().partition(|i| allowed(i));
        let removed = lib
            .remove_album_items(&doc, &ok, &crate::now_rfc3339())
            .map_err(CatalogError::from)?;
        node.catalog.persist(&mut lib)?;
        let mut out: Vec<Value> = ok
            .iter()
            .map(|id| {
                if removed.contains(id) {
                    json!({"id": id, "success": true})
                } else {
                    json!({"id": id, "success": false, "error": "not_found"})
                }
            })
            .collect();
        out.extend(
            refused
                .iter()
                .map(|id| json!({"id": id, "success": false, "error": "no_permission"})),
        );
        Ok(Json(Value::Array(out)))
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddUsers {
    album_users: Vec<AlbumUserDto>,
}

async fn add_users(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    Json(b): Json<AddUsers>,
) -> ApiResult<Json<Value>> {
    let doc = album_doc(&id)?;
    blocking(move || {
        let members = members_of(&node, &u.id, &b.album_users)?;
        let mut lib = node.catalog.lock()?;
        let (_, role) = album_for(&lib, &doc, &u.id)?;
        if role != AlbumRole::Owner {
            return Err(forbidden("Only the album's owner can share it"));
        }
        let now = crate::now_rfc3339();
        for (m, r) in &members {
            lib.set_album_member(&doc, m, *r, &now)
                .map_err(CatalogError::from)?;
        }
        node.catalog.persist(&mut lib)?;
        let (a, _) = album_for(&lib, &doc, &u.id)?;
        Ok(Json(album_json(&node, &lib, &a, false)))
    })
    .await
}

#[derive(Deserialize)]
struct RoleBody {
    role: String,
}

async fn update_user(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path((id, user_id)): Path<(String, String)>,
    Json(b): Json<RoleBody>,
) -> ApiResult<StatusCode> {
    let doc = album_doc(&id)?;
    let role = AlbumRole::member(&b.role)
        .ok_or_else(|| ApiError::bad_request("role must be editor or viewer"))?;
    blocking(move || {
        let mut lib = node.catalog.lock()?;
        let (a, mine) = album_for(&lib, &doc, &u.id)?;
        if mine != AlbumRole::Owner {
            return Err(forbidden("Only the album's owner can change roles"));
        }
        if !a.members.contains_key(&user_id) {
            return Err(ApiError::not_found(
                "That user is not a member of this album",
            ));
        }
        lib.set_album_member(&doc, &user_id, role, &crate::now_rfc3339())
            .map_err(CatalogError::from)?;
        node.catalog.persist(&mut lib)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// The owner removes a member; a member leaves (`me` or their own id). Their devices lose the
/// album at their next sync round: it is no longer among the documents they may see.
async fn remove_user(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path((id, user_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let doc = album_doc(&id)?;
    let target = if user_id == "me" {
        u.id.clone()
    } else {
        user_id
    };
    blocking(move || {
        let mut lib = node.catalog.lock()?;
        let (a, mine) = album_for(&lib, &doc, &u.id)?;
        if target == a.owner {
            return Err(ApiError::bad_request(
                "The owner cannot leave their own album",
            ));
        }
        if mine != AlbumRole::Owner && target != u.id {
            return Err(forbidden("Only the album's owner can remove other members"));
        }
        if !a.members.contains_key(&target) {
            return Err(ApiError::not_found(
                "That user is not a member of this album",
            ));
        }
        lib.remove_album_member(&doc, &target)
            .map_err(CatalogError::from)?;
        node.catalog.persist(&mut lib)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// Webhook events of album changes: after a successful change through the API, the album's
/// owner and members get `album.updated` (and the owner `share.created` when members were
/// added). Changes a device syncs as documents (offline edits) do not emit events yet.
pub(crate) async fn webhook_events(
    State(node): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let res = next.run(req).await;
    if method == axum::http::Method::GET || !res.status().is_success() {
        return res;
    }
    // /api/albums/{id}[/rest]
    let mut parts = path
        .trim_start_matches("/api")
        .trim_start_matches('/')
        .split('/');
    let (Some("albums"), Some(id)) = (parts.next(), parts.next()) else {
        return res;
    };
    let rest: Vec<&str> = parts.collect();
    let (id, change) = (id.to_owned(), format!("{method} {}", rest.join("/")));
    let users_added = method == axum::http::Method::PUT && rest.first() == Some(&"users");
    let _ = tokio::task::spawn_blocking(move || {
        let Ok(doc) = DocId::album(&id) else { return };
        let Ok(lib) = node.catalog.lock() else { return };
        let Ok(Some(a)) = lib.album(&doc) else { return };
        drop(lib);
        let data = json!({"albumId": a.id, "name": a.name, "change": change.trim(),
                          "deleted": a.deleted, "assetCount": a.items.len()});
        node.webhooks.emit(&a.owner, "album.updated", data.clone());
        for m in a.members.keys() {
            node.webhooks.emit(m, "album.updated", data.clone());
        }
        if users_added {
            node.webhooks.emit(
                &a.owner,
                "share.created",
                json!({"kind": "album", "albumId": a.id, "members": a.members.keys().collect::<Vec<_>>()}),
            );
        }
    })
    .await;
    res
}
