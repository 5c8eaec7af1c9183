//! What ML nodes call (`/api/tessera/ml/*`: catalogue sync limited to ML documents, previews
//! to analyse, blobs to publish), and what users see of the results, in Immich's shapes:
//! `/api/people`, `/api/faces`, `/api/search/smart`.
//!
//! An ML node authenticates with an API key holding the `ml` permission, created by an admin
//! (`POST /api/api-keys {"name": "ml-node", "permissions": ["ml"]}`). Such a key reads every
//! user's catalogue but writes only ML and people documents, and opens nothing else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tessera_core::ml::{fields, PersonRecord, PersonSummary, PACK_CLIP, PERSON_PREFIX};
use tessera_core::pack::Pack;
use tessera_core::{AssetRecord, DocId, Library};

use crate::api::{asset_json, serve_blob, ApiError, ApiResult, AppState, AuthUser};
use crate::auth::User;
use crate::blobs::{valid_hash, BlobKind};
use crate::catalog::CatalogError;

pub const ML_PERMISSION: &str = "ml";

/// An ML node: an `ml` API key of an admin.
pub struct MlAuth(pub User);

impl FromRequestParts<AppState> for MlAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &AppState) -> Result<Self, ApiError> {
        let key = parts
            .headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "An ML node authenticates with an x-api-key",
                )
            })?;
        let k = node
            .auth
            .api_key(key.trim())?
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "Invalid API key"))?;
        let user = node
            .auth
            .user(&k.user_id)?
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "Invalid API key"))?;
        if !k.permissions.iter().any(|p| p == ML_PERMISSION) || !user.is_admin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "This API key has no `ml` permission (an admin creates one for the ML node)",
            ));
        }
        Ok(MlAuth(user))
    }
}

/// Catalogue scans run off the async executor (the invariant in ARCHITECTURE.md).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await?
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/tessera/ml/sync",
            post(ml_sync).layer(DefaultBodyLimit::max(64 << 20)),
        )
        .route("/tessera/ml/assets/{id}/preview", get(ml_preview))
        .route(
            "/tessera/ml/blobs/{hash}",
            put(ml_put_blob)
                .get(ml_get_blob)
                .layer(DefaultBodyLimit::max(256 << 20)),
        )
        .route("/tessera/ml/progress", get(progress))
        .route("/tessera/blobs/{hash}", get(user_get_blob))
        .route("/people", get(people))
        .route("/people/{id}", put(update_person).get(get_person))
        .route("/people/{id}/thumbnail", get(person_thumbnail))
        .route("/people/{id}/merge", post(merge_people))
        .route("/faces", get(asset_faces))
        .route("/faces/{id}", put(reassign_face))
        .route("/search/smart", post(smart_search))
}

async fn ml_sync(State(node): State<AppState>, _ml: MlAuth, body: Bytes) -> ApiResult<Response> {
    let out = tokio::task::spawn_blocking(move || node.catalog.sync_round_ml(&body))
        .await?
        .map_err(|e| match e {
            CatalogError::Sync(e) => ApiError::bad_request(format!("sync refused: {e}")),
            other => ApiError::internal(other),
        })?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], out).into_response())
}

fn record_of(node: &crate::Node, id: &str) -> ApiResult<AssetRecord> {
    let missing = || {
        ApiError::not_found(format!(
            "Asset not found: {}",
            id.chars().take(80).collect::<String>()
        ))
    };
    if !valid_hash(id) {
        return Err(missing());
    }
    let loc = node.location(id)?.ok_or_else(missing)?;
    let shard = DocId::shard(&loc.owner, &loc.month).map_err(ApiError::internal)?;
    node.catalog
        .lock()?
        .asset_in(&shard, id)
        .map_err(CatalogError::from)?
        .ok_or_else(missing)
}

async fn ml_preview(
    State(node): State<AppState>,
    _ml: MlAuth,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let r = record_of(&node, &id)?;
    let hash = r
        .preview
        .ok_or_else(|| ApiError::not_found("The preview is not generated yet"))?;
    serve_blob(
        node.blobs.path(BlobKind::Preview, &hash)?,
        req,
        "image/jpeg",
    )
    .await
}

async fn ml_put_blob(
    State(node): State<AppState>,
    _ml: MlAuth,
    Path(hash): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if !valid_hash(&hash) {
        return Err(ApiError::bad_request(
            "The blob name must be its BLAKE3 hash (64 hex digits)",
        ));
    }
    if body.is_empty() {
        return Err(ApiError::bad_request("Empty blob"));
    }
    let got = blake3::hash(&body).to_hex().to_string();
    if got != hash {
        return Err(ApiError::bad_request(format!(
            "The body hashes to {got}, not {hash}: nothing stored"
        )));
    }
    let stored =
        tokio::task::spawn_blocking(move || node.blobs.put_bytes(BlobKind::Ml, &body)).await??;
    Ok((StatusCode::CREATED, Json(json!({"hash": stored}))))
}

async fn ml_get_blob(
    State(node): State<AppState>,
    _ml: MlAuth,
    Path(hash): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    serve_ml_blob(&node, &hash, req).await
}

/// Packs and face crops for the PWA. Their names are 256-bit content hashes that only reach
/// a user through their own catalogue documents.
async fn user_get_blob(
    State(node): State<AppState>,
    _u: AuthUser,
    Path(hash): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let mut res = serve_ml_blob(&node, &hash, req).await?;
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    Ok(res)
}

async fn serve_ml_blob(node: &crate::Node, hash: &str, req: Request) -> ApiResult<Response> {
    if !valid_hash(hash) || !node.blobs.exists(BlobKind::Ml, hash) {
        return Err(ApiError::not_found("No such blob"));
    }
    serve_blob(
        node.blobs.path(BlobKind::Ml, hash)?,
        req,
        "application/octet-stream",
    )
    .await
}

/// Analysed / total photos of the user (what the PWA shows as ML progress).
async fn progress(State(node): State<AppState>, AuthUser(u): AuthUser) -> ApiResult<Json<Value>> {
    blocking(move || {
        let lib = node.catalog.lock()?;
        let p = lib.ml_progress(&u.id).map_err(CatalogError::from)?;
        // Which CLIP models the search packs come from (two during a model upgrade).
        let mut models = std::collections::BTreeSet::new();
        for doc in lib.ml_doc_ids(&u.id) {
            if let Some(r) = lib.pack_ref(&doc, PACK_CLIP).map_err(CatalogError::from)? {
                models.insert(r.model);
            }
        }
        Ok(Json(
            json!({"analysed": p.analysed, "total": p.total, "faces": p.faces, "clipModels": models}),
        ))
    })
    .await
}

type PersonView = PersonSummary;

fn people_of(lib: &Library, user: &str) -> ApiResult<Vec<PersonView>> {
    Ok(lib.people_with_faces(user).map_err(CatalogError::from)?)
}

fn person_json(p: &PersonView) -> Value {
    json!({
        "id": p.id,
        "name": p.record.name.clone().unwrap_or_default(),
        "birthDate": null,
        "thumbnailPath": format!("/api/people/{}/thumbnail", p.id),
        "isHidden": p.record.hidden.unwrap_or(false),
        "isFavorite": false,
        "faces": p.faces,
    })
}

#[derive(Deserialize)]
struct PeopleQuery {
    #[serde(default, rename = "withHidden")]
    with_hidden: Option<bool>,
}

async fn people(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Query(q): Query<PeopleQuery>,
) -> ApiResult<Json<Value>> {
    blocking(move || {
        let lib = node.catalog.lock()?;
        let all = people_of(&lib, &u.id)?;
        let hidden = all.iter().filter(|p| p.record.hidden == Some(true)).count();
        let shown: Vec<Value> = all
            .iter()
            .filter(|p| q.with_hidden == Some(true) || p.record.hidden != Some(true))
            .map(person_json)
            .collect();
        Ok(Json(
            json!({"total": all.len(), "hidden": hidden, "hasNextPage": false, "people": shown}),
        ))
    })
    .await
}

async fn get_person(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    blocking(move || {
        let lib = node.catalog.lock()?;
        let p = people_of(&lib, &u.id)?
            .into_iter()
            .find(|p| p.id == id)
            .ok_or_else(|| ApiError::not_found("Person not found"))?;
        Ok(Json(person_json(&p)))
    })
    .await
}

async fn person_thumbnail(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let n2 = node.clone();
    let uid = u.id.clone();
    let crop = blocking(move || {
        let lib = n2.catalog.lock()?;
        people_of(&lib, &uid)?
            .into_iter()
            .find(|p| p.id == id)
            .and_then(|p| p.cover.and_then(|c| c.crop))
            .ok_or_else(|| ApiError::not_found("Person not found"))
    })
    .await?;
    serve_blob(node.blobs.path(BlobKind::Ml, &crop)?, req, "image/jpeg").await
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Writes a user decision into the people document (the node's actor, synced to every peer).
fn write_people(
    node: &crate::Node,
    user: &str,
    items: Vec<(String, serde_json::Map<String, Value>)>,
) -> ApiResult<()> {
    let mut lib = node.catalog.lock()?;
    let doc = DocId::people(user).map_err(ApiError::internal)?;
    lib.merge_entries(&doc, &items)
        .map_err(CatalogError::from)?;
    node.catalog.persist(&mut lib)?;
    Ok(())
}

#[derive(Deserialize)]
struct PersonUpdate {
    name: Option<String>,
    #[serde(rename = "isHidden")]
    is_hidden: Option<bool>,
}

async fn update_person(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    body: Result<Json<PersonUpdate>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(b) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if !valid_id(&id) {
        return Err(ApiError::not_found("Person not found"));
    }
    let n2 = node.clone();
    let uid = u.id.clone();
    tokio::task::spawn_blocking(move || {
        let exists = people_of(&*n2.catalog.lock()?, &uid)?
            .iter()
            .any(|p| p.id == id);
        if !exists {
            return Err(ApiError::not_found("Person not found"));
        }
        let mut m = serde_json::Map::new();
        if let Some(n) = b.name {
            m.insert(
                "name".into(),
                n.trim().chars().take(200).collect::<String>().into(),
            );
        }
        if let Some(h) = b.is_hidden {
            m.insert("hidden".into(), h.into());
        }
        write_people(&n2, &uid, vec![(format!("{PERSON_PREFIX}{id}"), m)])?;
        let lib = n2.catalog.lock()?;
        let p = people_of(&lib, &uid)?
            .into_iter()
            .find(|p| p.id == id)
            .ok_or_else(|| ApiError::not_found("Person not found"))?;
        Ok(Json(person_json(&p)))
    })
    .await?
}

#[derive(Deserialize)]
struct MergeBody {
    ids: Vec<String>,
}

/// Immich's merge: the people in `ids` become `id`.
async fn merge_people(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    body: Result<Json<MergeBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(b) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if !valid_id(&id) || b.ids.iter().any(|x| !valid_id(x) || *x == id) {
        return Err(ApiError::bad_request("Invalid person ids"));
    }
    let uid = u.id.clone();
    let ids = b.ids.clone();
    tokio::task::spawn_blocking(move || {
        // Merge into the person `id` resolves to, and never into oneself: a merge that would
        // close a cycle (A into B, then B into A) makes B's target the merged one instead.
        let mut lib = node.catalog.lock()?;
        let target = lib.resolve_person(&uid, &id).map_err(CatalogError::from)?;
        let mut items = Vec::new();
        for x in &ids {
            if lib.resolve_person(&uid, x).map_err(CatalogError::from)? == target {
                continue;
            }
            let m = fields(&PersonRecord {
                merged_into: Some(target.clone()),
                ..Default::default()
            });
            items.push((format!("{PERSON_PREFIX}{x}"), m));
        }
        let mut clear = serde_json::Map::new();
        clear.insert("merged_into".into(), Value::Null);
        items.push((format!("{PERSON_PREFIX}{target}"), clear));
        let doc = DocId::people(&uid).map_err(ApiError::internal)?;
        lib.merge_entries(&doc, &items)
            .map_err(CatalogError::from)?;
        node.catalog.persist(&mut lib)?;
        Ok::<_, ApiError>(())
    })
    .await??;
    Ok(Json(json!(b
        .ids
        .iter()
        .map(|x| json!({"id": x, "success": true}))
        .collect::<Vec<_>>())))
}

#[derive(Deserialize)]
struct FacesQuery {
    id: String,
}

/// Face ids in the API are `<asset>_<n>` (the catalogue key is `f/<asset>/<n>`).
fn face_key(api_id: &str) -> Option<(String, String)> {
    let (asset, n) = api_id.rsplit_once('_')?;
    (valid_hash(asset) && n.parse::<u32>().is_ok())
        .then(|| (asset.to_owned(), format!("f/{asset}/{n}")))
}

async fn asset_faces(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Query(q): Query<FacesQuery>,
) -> ApiResult<Json<Value>> {
    blocking(move || {
        let r = record_of(&node, &q.id)?;
        if r.owner.as_deref() != Some(u.id.as_str()) {
            return Err(ApiError::not_found("Asset not found"));
        }
        let lib = node.catalog.lock()?;
        let doc = DocId::ml(&u.id, &r.month()).map_err(ApiError::internal)?;
        let people: Vec<PersonView> = people_of(&lib, &u.id)?;
        let (w, h) = (
            f64::from(r.width.unwrap_or(0)),
            f64::from(r.height.unwrap_or(0)),
        );
        let mut out = Vec::new();
        for (key, f) in lib.faces(&doc, Some(&r.id)).map_err(CatalogError::from)? {
            let person = match f.effective_person() {
                Some(p) => {
                    let p = lib.resolve_person(&u.id, p).map_err(CatalogError::from)?;
                    people.iter().find(|v| v.id == p).map(person_json)
                }
                None => None,
            };
            let n = key.rsplit('/').next().unwrap_or("0");
            out.push(json!({
                "id": format!("{}_{n}", r.id),
                "imageWidth": w, "imageHeight": h,
                "boundingBoxX1": (f.x1 * w).round(), "boundingBoxY1": (f.y1 * h).round(),
                "boundingBoxX2": (f.x2 * w).round(), "boundingBoxY2": (f.y2 * h).round(),
                "score": f.score,
                "sourceType": "machine-learning",
                "person": person,
            }));
        }
        Ok(Json(Value::Array(out)))
    })
    .await
}

#[derive(Deserialize)]
struct Reassign {
    id: String,
}

/// The user says which person a face is: recorded as `user_person`, which clustering never
/// overrides; the previous person is remembered as "not this person".
async fn reassign_face(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    body: Result<Json<Reassign>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(b) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (asset, key) = face_key(&id).ok_or_else(|| ApiError::not_found("Face not found"))?;
    if !valid_id(&b.id) {
        return Err(ApiError::bad_request("Invalid person id"));
    }
    let r = record_of(&node, &asset)?;
    if r.owner.as_deref() != Some(u.id.as_str()) {
        return Err(ApiError::not_found("Face not found"));
    }
    let uid = u.id.clone();
    tokio::task::spawn_blocking(move || {
        let mut lib = node.catalog.lock()?;
        let doc = DocId::ml(&uid, &r.month()).map_err(ApiError::internal)?;
        let face = lib
            .faces(&doc, Some(&asset))
            .map_err(CatalogError::from)?
            .into_iter()
            .find(|(k, _)| *k == key)
            .map(|(_, f)| f)
            .ok_or_else(|| ApiError::not_found("Face not found"))?;
        let mut m = serde_json::Map::new();
        m.insert("user_person".into(), b.id.clone().into());
        if let Some(prev) = face.effective_person().filter(|p| *p != b.id) {
            let mut list = face.rejected();
            if !list.iter().any(|x| x == prev) {
                list.push(prev.to_owned());
            }
            m.insert("not_person".into(), list.join(",").into());
        }
        lib.merge_entries(&doc, &[(key, m)])
            .map_err(CatalogError::from)?;
        let people = DocId::people(&uid).map_err(ApiError::internal)?;
        if lib
            .entry(&people, &format!("{PERSON_PREFIX}{}", b.id))
            .map_err(CatalogError::from)?
            .is_none()
        {
            lib.merge_entries(
                &people,
                &[(format!("{PERSON_PREFIX}{}", b.id), serde_json::Map::new())],
            )
            .map_err(CatalogError::from)?;
        }
        node.catalog.persist(&mut lib)?;
        Ok(Json(json!({"id": b.id})))
    })
    .await?
}

#[derive(Deserialize)]
struct SmartQuery {
    query: String,
    #[serde(default)]
    size: Option<usize>,
}

/// Decoded packs by hash (packs are immutable, so a hash names one content forever).
fn pack_cache() -> &'static Mutex<HashMap<String, Arc<Pack>>> {
    static CACHE: std::sync::OnceLock<Mutex<HashMap<String, Arc<Pack>>>> =
        std::sync::OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn load_pack(node: &crate::Node, hash: &str) -> ApiResult<Arc<Pack>> {
    if let Some(p) = pack_cache().lock().ok().and_then(|c| c.get(hash).cloned()) {
        return Ok(p);
    }
    let bytes = node.blobs.read(BlobKind::Ml, hash)?;
    let pack = Arc::new(
        Pack::decode(&bytes)
            .map_err(|e| ApiError::internal(format!("embedding pack {hash}: {e}")))?,
    );
    if let Ok(mut c) = pack_cache().lock() {
        // Bounded by size (a CLIP pack of a busy month is megabytes): 256 MB of vectors.
        let bytes: usize = c.values().map(|p| p.vectors.len() * 4).sum();
        if bytes + pack.vectors.len() * 4 > 256 << 20 {
            c.clear();
        }
        c.insert(hash.to_owned(), pack.clone());
    }
    Ok(pack)
}

/// Immich's smart search: the query is embedded by the ML node (CLIP text tower), then the
/// user's CLIP packs are scanned here.
async fn smart_search(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    body: Result<Json<SmartQuery>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(q) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let query = q.query.trim().to_owned();
    if query.is_empty() {
        return Err(ApiError::bad_request("query must not be empty"));
    }
    let ml = node.config.ml.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Smart search needs an ML node: start the sync node with --ml URL",
        )
    })?;
    // The ML node's CLIP model: the query is embedded by it, and only packs of that model
    // are comparable (during a model upgrade, months not switched yet are left out).
    let status: Value = reqwest::Client::new()
        .get(format!("{}/status", ml.trim_end_matches('/')))
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("The ML node at {ml} did not answer: {e}"),
            )
        })?
        .json()
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("ML node status: {e}")))?;
    let Some(model) = status["clip"].as_str().map(str::to_owned) else {
        let why: Vec<String> = status["notes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|n| n.starts_with("smart search") || n.starts_with("clip"))
            .map(str::to_owned)
            .collect();
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Smart search is off on the ML node: {}", why.join("; ")),
        ));
    };
    let refs = {
        let lib = node.catalog.lock()?;
        let mut refs = Vec::new();
        for doc in lib.ml_doc_ids(&u.id) {
            if let Some(r) = lib.pack_ref(&doc, PACK_CLIP).map_err(CatalogError::from)? {
                if r.model == model {
                    refs.push(r);
                }
            }
        }
        refs
    };
    if refs.is_empty() {
        return Ok(Json(search_json(vec![])));
    }
    let entries = json!({"clip": {"textual": {"modelName": model}}}).to_string();
    let form = reqwest::multipart::Form::new()
        .text("entries", entries)
        .text("text", query);
    let resp = reqwest::Client::new()
        .post(format!("{}/predict", ml.trim_end_matches('/')))
        .multipart(form)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("The ML node at {ml} did not answer: {e}"),
            )
        })?;
    let code = resp.status();
    let v: Value = resp
        .json()
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("ML node answer: {e}")))?;
    if !code.is_success() {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("The ML node refused the query: {}", v["detail"]),
        ));
    }
    let emb: Vec<f32> = v["clip"]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "The ML node's answer has no clip embedding",
            )
        })?;
    let size = q.size.unwrap_or(100).clamp(1, 1000);
    let uid = u.id.clone();
    let items = tokio::task::spawn_blocking(move || -> ApiResult<Vec<Value>> {
        let mut scored: Vec<(f32, String)> = Vec::new();
        for r in &refs {
            let pack = load_pack(&node, &r.hash)?;
            if pack.dim != emb.len() {
                continue;
            }
            scored.extend(
                pack.top_k(&emb, size)
                    .into_iter()
                    .map(|(i, s)| (s, pack.keys[i].clone())),
            );
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.truncate(size);
        let mut out = Vec::new();
        for (_, id) in scored {
            if let Ok(r) = record_of(&node, &id) {
                if r.owner.as_deref() == Some(uid.as_str()) {
                    out.push(asset_json(&r));
                }
            }
        }
        Ok(out)
    })
    .await??;
    Ok(Json(search_json(items)))
}

fn search_json(items: Vec<Value>) -> Value {
    json!({
        "albums": {"total": 0, "count": 0, "items": [], "facets": []},
        "assets": {"total": items.len(), "count": items.len(), "items": items, "facets": [], "nextPage": null},
    })
}
