//! Smart search (`POST /api/search/smart`): the query embedded by an ML node, ranked against
//! the CLIP packs it published.

use crate::blobs::BlobKind;
use crate::catalog::CatalogError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Json;
use axum::Router;
use serde::Deserialize;
use serde_json::json;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use tessera_core::ml::PACK_CLIP;
use tessera_core::pack::Pack;

use crate::http::*;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/search/smart", post(smart_search))
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
