//! What users see of the ML results, in Immich's shapes: people (rename, hide, merge, thumbnail)
//! and faces (list, reassign).

use crate::blobs::valid_hash;
use crate::blobs::BlobKind;
use crate::catalog::CatalogError;
use axum::extract::Path;
use axum::extract::Query;
use axum::extract::Request;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::routing::post;
use axum::routing::put;
use axum::Json;
use axum::Router;
use serde::Deserialize;
use serde_json::json;
use serde_json::Value;
use tessera_core::ml::fields;
use tessera_core::ml::PersonRecord;
use tessera_core::ml::PERSON_PREFIX;
use tessera_core::search::PersonCount;
use tessera_core::DocId;
use tessera_core::Library;

use crate::http::*;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/people", get(people))
        .route("/people/{id}", put(update_person).get(get_person))
        .route("/people/{id}/thumbnail", get(person_thumbnail))
        .route("/people/{id}/merge", post(merge_people))
        .route("/faces", get(asset_faces))
        .route("/faces/{id}", put(reassign_face))
}

type PersonView = PersonCount;

/// The user's people with faces, most faces first (hidden ones too).
pub(crate) fn people_of(
    node: &crate::Node,
    lib: &Library,
    user: &str,
) -> ApiResult<Vec<PersonView>> {
    let counts = node
        .views
        .people_counts(lib, user)
        .map_err(CatalogError::from)?;
    Ok(counts.to_vec())
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
        let all = people_of(&node, &lib, &u.id)?;
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
        let p = people_of(&node, &lib, &u.id)?
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
        let p = people_of(&n2, &lib, &uid)?
            .into_iter()
            .find(|p| p.id == id)
            .ok_or_else(|| ApiError::not_found("Person not found"))?;
        lib.person_summary(p)
            .map_err(CatalogError::from)?
            .cover
            .and_then(|c| c.crop)
            .ok_or_else(|| ApiError::not_found("Person has no face picture"))
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
        let exists = people_of(&n2, &*n2.catalog.lock()?, &uid)?
            .iter()
            .any(|p| p.id == id);
        if !exists {
            return Err(ApiError::not_found("Person not found"));
        }
        let mut m = serde_json::Map::new();
        if let Some(n) = b.name {
            let name: String = n.trim().chars().take(200).collect();
            n2.webhooks
                .emit(&uid, "person.named", json!({"personId": id, "name": name}));
            m.insert("name".into(), name.into());
        }
        if let Some(h) = b.is_hidden {
            m.insert("hidden".into(), h.into());
        }
        write_people(&n2, &uid, vec![(format!("{PERSON_PREFIX}{id}"), m)])?;
        let lib = n2.catalog.lock()?;
        let p = people_of(&node, &lib, &uid)?
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
        let people: Vec<PersonView> = people_of(&node, &lib, &u.id)?;
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
