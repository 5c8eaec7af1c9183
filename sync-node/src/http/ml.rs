//! What ML nodes call (`/api/tessera/ml/*`: catalogue sync limited to ML documents, previews
//! to analyse, blobs to publish), and what a user reads of them (progress, published blobs).
//!
//! An ML node authenticates with an API key holding the `ml` permission, created by an admin
//! (`POST /api/api-keys {"name": "ml-node", "permissions": ["ml"]}`). Such a key reads every
//! user's catalogue but writes only ML and people documents, and opens nothing else.

use crate::blobs::valid_hash;
use crate::blobs::BlobKind;
use crate::catalog::CatalogError;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::Path;
use axum::extract::Request;
use axum::extract::State;
use axum::http::header;
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::get;
use axum::routing::post;
use axum::routing::put;
use axum::Json;
use axum::Router;
use serde_json::json;
use serde_json::Value;
use tessera_core::ml::PACK_CLIP;

use crate::http::*;

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
        let p = node
            .views
            .ml_progress(&lib, &u.id)
            .map_err(CatalogError::from)?;
        // Which CLIP models the search packs come from (two during a model upgrade).
        let mut models = std::collections::BTreeSet::new();
        for doc in lib.ml_doc_ids(&u.id) {
            let r = node
                .views
                .pack_ref(&lib, &doc, PACK_CLIP)
                .map_err(CatalogError::from)?;
            if let Some(r) = r {
                models.insert(r.model);
            }
        }
        Ok(Json(
            json!({"analysed": p.analysed, "total": p.total, "faces": p.faces, "clipModels": models}),
        ))
    })
    .await
}
