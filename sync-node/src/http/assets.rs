//! Assets in Immich's shapes: upload (streamed, with limits), the bulk check, one asset, its
//! original and thumbnail, statistics.

use crate::blobs::BlobKind;
use crate::catalog::CatalogError;
use crate::ingest::ingest_committed;
use crate::ingest::Outcome;
use crate::ingest::UploadMeta;
use axum::extract::DefaultBodyLimit;
use axum::extract::FromRequest;
use axum::extract::Multipart;
use axum::extract::Path;
use axum::extract::Query;
use axum::extract::Request;
use axum::extract::State;
use axum::http::header;
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::get;
use axum::routing::post;
use axum::Json;
use axum::Router;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use serde_json::Value;
use tessera_core::AssetRecord;
use tessera_core::DocId;

use crate::http::*;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/assets/statistics", get(asset_statistics))
        .route("/assets/bulk-upload-check", post(bulk_upload_check))
        .route(
            "/assets",
            post(upload_asset)
                .layer(DefaultBodyLimit::disable())
                .put(crate::http::library::update_assets)
                .delete(crate::http::library::delete_assets),
        )
        .route("/assets/{id}", get(get_asset))
        .route("/assets/{id}/original", get(get_original))
        .route("/assets/{id}/thumbnail", get(get_thumbnail))
        .route("/tessera/assets/{id}/save", post(save_to_library))
}

/// "Save to my library": a photo someone shared with me (an album, a partner) becomes mine by
/// reference — a record in my library pointing at the same original and derivatives, no copy
/// of the bytes. It then counts against my quota like my own uploads; the sharer deleting
/// theirs leaves mine (blobs are kept while any library uses them).
async fn save_to_library(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    blocking(move || {
        let (owner, rec) = find_record_and_owner(&node, &u, &id)?;
        if owner == u.id || node.location_of(&u.id, &id)?.is_some() {
            return Ok((
                StatusCode::OK,
                Json(json!({"id": id, "status": "duplicate"})),
            ));
        }
        if let Some(quota) = u.quota_bytes {
            let used = crate::http::users::usage_of(&node, &u.id)?;
            if used.saturating_add(rec.size.unwrap_or(0)) > quota {
                return Err(ApiError::bad_request(quota_exceeded(used, quota)));
            }
        }
        let mine = AssetRecord {
            owner: Some(u.id.clone()),
            favorite: None,
            archived: None,
            trashed_at: None,
            device_asset_id: None,
            device_id: None,
            ..rec
        };
        let mut lib = node.catalog.lock()?;
        // Indexed durably before the record is persisted (the ingest order).
        node.set_location(
            &id,
            &crate::node::AssetLocation {
                owner: u.id.clone(),
                month: mine.month(),
                sha1: mine.sha1.clone().unwrap_or_default(),
            },
        )?;
        node.flush()?;
        lib.upsert_assets(&u.id, std::slice::from_ref(&mine))
            .map_err(CatalogError::from)?;
        node.catalog.persist(&mut lib)?;
        Ok((
            StatusCode::CREATED,
            Json(json!({"id": id, "status": "created", "savedFrom": owner})),
        ))
    })
    .await
}

/// Immich's asset statistics: counts of the user's images and videos.
async fn asset_statistics(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
) -> ApiResult<Json<Value>> {
    let lib = node.catalog.lock()?;
    let (mut images, mut videos) = (0u64, 0u64);
    for s in lib.shards(&u.id).map_err(CatalogError::from)? {
        let id = DocId::shard(&u.id, &s.month).map_err(ApiError::internal)?;
        for r in lib.assets(&id).map_err(CatalogError::from)? {
            if r.mime.as_deref().is_some_and(|m| m.starts_with("video/")) {
                videos += 1;
            } else {
                images += 1;
            }
        }
    }
    Ok(Json(
        json!({"images": images, "videos": videos, "total": images + videos}),
    ))
}

#[derive(Deserialize)]
struct BulkCheck {
    assets: Vec<BulkItem>,
}

#[derive(Deserialize)]
struct BulkItem {
    id: String,
    checksum: String,
}

/// Immich's quota message, with what is used of what.
fn quota_exceeded(used: u64, quota: u64) -> String {
    format!(
        "Quota has been exceeded! ({} MiB used of {} MiB)",
        used >> 20,
        quota >> 20
    )
}

/// Accepts SHA-1 as 40 hex digits or base64 (both are seen from Immich clients).
fn sha1_hex(checksum: &str) -> Option<String> {
    let c = checksum.trim();
    if c.len() == 40 && c.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(c.to_ascii_lowercase());
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(c).ok()?;
    (raw.len() == 20).then(|| raw.iter().map(|b| format!("{b:02x}")).collect())
}

async fn bulk_upload_check(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    body: Result<Json<BulkCheck>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(b) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let mut results = Vec::with_capacity(b.assets.len());
    for item in b.assets {
        let Some(hex) = sha1_hex(&item.checksum) else {
            return Err(ApiError::bad_request(format!(
                "checksum of {} is neither SHA-1 hex nor base64",
                item.id
            )));
        };
        let known = node
            .by_sha1(&u.id, &hex)?
            .and_then(|asset| find_own_record(&node, &u, &asset).ok());
        results.push(match known {
            Some(r) => json!({"id": item.id, "action": "reject", "reason": "duplicate", "assetId": r.id, "isTrashed": r.is_trashed()}),
            None => json!({"id": item.id, "action": "accept"}),
        });
    }
    Ok(Json(json!({ "results": results })))
}

async fn upload_asset(
    State(node): State<AppState>,
    auth: Result<AuthUser, ApiError>,
    req: Request,
) -> ApiResult<Response> {
    let AuthUser(u) = match auth {
        Ok(a) => a,
        Err(e) => {
            // Refused before the body is read: at most 1 MiB of it is drained (so a small
            // client sees the 401 rather than a reset), then the connection is closed.
            let _ = axum::body::to_bytes(req.into_body(), 1 << 20).await;
            let mut res = e.into_response();
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Ok(res);
        }
    };
    let max_upload = node.config.max_upload;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Immich's quota check and message: the user's own originals plus this upload, checked
    // against the declared length first and while the body streams.
    let mut quota_left = None;
    if let Some(quota) = u.quota_bytes {
        let (n, id) = (node.clone(), u.id.clone());
        let used = blocking(move || crate::http::users::usage_of(&n, &id)).await?;
        let exceeded = quota_exceeded(used, quota);
        if used.saturating_add(declared.unwrap_or(0)) > quota {
            return Err(ApiError::bad_request(exceeded));
        }
        quota_left = Some((quota.saturating_sub(used), exceeded));
    }
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > max_upload.saturating_add(1 << 20) {
            let mut res = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("The upload is larger than this node's limit of {} MiB (sync-node serve --max-upload-mib)", max_upload >> 20),
            )
            .into_response();
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Ok(res);
        }
    }
    // At most `max_concurrent_uploads` bodies are received at once; the rest wait their turn.
    let slots = node.clone();
    let _slot = slots.uploads.acquire().await.map_err(ApiError::internal)?;
    let mut form = Multipart::from_request(req, &node)
        .await
        .map_err(|e| ApiError::bad_request(e.body_text()))?;
    let mut meta = UploadMeta::default();
    let mut pending = None;
    let mut part_name = String::new();
    let mut filename_field: Option<String> = None;
    let mut head: Vec<u8> = Vec::with_capacity(64);
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::bad_request(format!("malformed multipart body: {}", e.body_text()))
    };
    // An error found while the client is still sending is answered only after the rest of the
    // body is read (and discarded): otherwise the client sees a reset connection, not the error.
    let mut failure: Option<ApiError> = None;
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        if failure.is_some() {
            drain_field(&mut field).await;
            continue;
        }
        let name = field.name().unwrap_or_default().to_owned();
        if name == "assetData" {
            // The part's own file name: Immich's SDK sends a Blob ("blob") and the real name
            // in the `filename` field, which may come later; the type is decided at the end,
            // from the content first.
            part_name = field.file_name().unwrap_or("upload").to_owned();
            head.clear();
            let mut p = node.blobs.begin()?;
            loop {
                match field.chunk().await {
                    Ok(Some(chunk)) => {
                        if head.len() < 64 {
                            let n = (64 - head.len()).min(chunk.len());
                            head.extend_from_slice(&chunk[..n]);
                        }
                        if let Some((left, msg)) = &quota_left {
                            if p.len() + chunk.len() as u64 > *left {
                                p.abort();
                                return Err(ApiError::bad_request(msg.clone()));
                            }
                        }
                        if p.len() + chunk.len() as u64 > max_upload {
                            p.abort();
                            return Err(ApiError::new(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                format!(
                                    "{part_name} is larger than this node's limit of {} MiB",
                                    max_upload >> 20
                                ),
                            ));
                        }
                        if let Err(e) = p.write(&chunk) {
                            failure = Some(e.into());
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        p.abort();
                        return Err(bad(e));
                    }
                }
            }
            if failure.is_some() {
                p.abort();
                drain_field(&mut field).await;
                continue;
            }
            if let Some(old) = pending.replace(p) {
                old.abort();
            }
        } else if name == "sidecarData" {
            // Streamed with a hard limit: never more than 4 MiB of it in memory.
            match small_field(&mut field, 4 << 20).await.map_err(bad)? {
                Some(bytes) => meta.sidecar = Some(bytes),
                None => {
                    failure = Some(ApiError::bad_request("sidecarData is larger than 4 MB"));
                    drain_field(&mut field).await;
                }
            }
        } else {
            let Some(text) = small_field(&mut field, 64 << 10).await.map_err(bad)? else {
                failure = Some(ApiError::bad_request(format!(
                    "form field {name:?} is larger than 64 KB"
                )));
                drain_field(&mut field).await;
                continue;
            };
            let text = String::from_utf8_lossy(&text).into_owned();
            match name.as_str() {
                "deviceAssetId" => meta.device_asset_id = Some(text),
                "deviceId" => meta.device_id = Some(text),
                "fileCreatedAt" => meta.file_created_at = Some(text),
                "fileModifiedAt" => meta.file_modified_at = Some(text),
                "isFavorite" => meta.is_favorite = text == "true",
                "filename" => filename_field = Some(text),
                "visibility" => match text.as_str() {
                    "archive" => meta.archived = true,
                    "hidden" => meta.hidden = true,
                    "timeline" | "" => {}
                    other => {
                        failure = Some(ApiError::bad_request(format!(
                            "visibility must be one of archive, timeline, hidden (got {other:?})"
                        )))
                    }
                },
                "livePhotoVideoId" if !text.trim().is_empty() => {
                    meta.live_photo_video_id = Some(text.trim().to_owned())
                }
                // duration: read from the file itself; metadata (iOS cloud ids): not kept.
                _ => {}
            }
        }
    }
    if let Some(f) = failure {
        if let Some(p) = pending {
            p.abort();
        }
        return Err(f);
    }
    let Some(p) = pending else {
        return Err(ApiError::bad_request("assetData is required"));
    };
    let given = filename_field
        .map(|f| f.trim().to_owned())
        .filter(|f| !f.is_empty())
        .unwrap_or(part_name);
    match upload_name(&given, &head) {
        Some(n) => meta.filename = n,
        None => {
            p.abort();
            return Err(ApiError::bad_request(format!(
                "Unsupported file type: {given} (neither its content nor its name is a photo or video Tessera knows)"
            )));
        }
    }
    if p.is_empty() {
        p.abort();
        return Err(ApiError::bad_request(format!(
            "{} is empty (0 bytes)",
            meta.filename
        )));
    }
    if let Some(t) = meta.file_created_at.as_deref() {
        if crate::ingest::normalise_time(t).is_none() {
            p.abort();
            return Err(ApiError::bad_request(format!(
                "fileCreatedAt is not an ISO 8601 date: {t:?}"
            )));
        }
    }
    let owner = u.id.clone();
    let outcome = tokio::task::spawn_blocking(move || -> ApiResult<Outcome> {
        let size = p.len();
        let _storing = node.storing();
        let (hashes, _) = node.blobs.commit(BlobKind::Original, p)?;
        Ok(ingest_committed(&node, &owner, &hashes, size, meta)?)
    })
    .await??;
    Ok(match outcome {
        Outcome::Created(id) => (
            StatusCode::CREATED,
            Json(json!({"id": id, "status": "created"})),
        )
            .into_response(),
        Outcome::Duplicate(id) => (
            StatusCode::OK,
            Json(json!({"id": id, "status": "duplicate"})),
        )
            .into_response(),
        Outcome::Restored(id) => (
            StatusCode::OK,
            Json(json!({"id": id, "status": "duplicate", "restored": true})),
        )
            .into_response(),
    })
}

/// Reads a small multipart field whole, refusing it past `max` bytes without buffering more.
/// The name an upload is stored under: the given name when its extension is a known photo or
/// video type, else (a client that sent no real name, like Immich's SDK's "blob") the name
/// with the extension of what the content is; `None` when neither says it is media.
fn upload_name(given: &str, head: &[u8]) -> Option<String> {
    if tessera_media::media_kind(given).is_some() {
        return Some(given.to_owned());
    }
    let ext = match tessera_media::sniff_mime(head, given) {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/webp" => "webp",
        "image/gif" => "gif",
        "image/heic" => "heic",
        "image/avif" => "avif",
        "image/tiff" => "tif",
        "video/mp4" => "mp4",
        "video/quicktime" => "mov",
        _ => return None,
    };
    let stem = given.rsplit_once('.').map_or(given, |(s, _)| s);
    let stem = if stem.is_empty() { "upload" } else { stem };
    Some(format!("{stem}.{ext}"))
}

async fn small_field(
    field: &mut axum::extract::multipart::Field<'_>,
    max: usize,
) -> Result<Option<Vec<u8>>, axum::extract::multipart::MultipartError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await? {
        if buf.len() + chunk.len() > max {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(buf))
}

/// Reads and discards the rest of a multipart field (bounded: after 16 GiB the connection is
/// simply dropped).
async fn drain_field(field: &mut axum::extract::multipart::Field<'_>) {
    let mut n: u64 = 0;
    while let Ok(Some(chunk)) = field.chunk().await {
        n += chunk.len() as u64;
        if n > 16 << 30 {
            break;
        }
    }
}

/// Immich's `H:MM:SS.ffffff` duration string.
pub(crate) fn immich_duration(secs: f64) -> String {
    let secs = if secs.is_finite() && secs > 0.0 {
        secs
    } else {
        0.0
    };
    let h = (secs / 3600.0).floor();
    let m = ((secs - h * 3600.0) / 60.0).floor();
    let s = secs - h * 3600.0 - m * 60.0;
    format!("{h}:{m:02}:{s:09.6}")
}

pub(crate) fn exposure_string(t: f64) -> String {
    if t > 0.0 && t < 1.0 {
        format!("1/{}", (1.0 / t).round())
    } else {
        format!("{t}")
    }
}

/// Immich's `AssetResponseDto` (the fields Tessera has), plus the raw record under `tessera`.
/// The record's SHA-1 as Immich sends it (base64; what its apps compare with their own hashes).
pub(crate) fn checksum_b64(r: &AssetRecord) -> Option<String> {
    r.sha1.as_deref().and_then(|h| {
        let bytes: Option<Vec<u8>> = (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
            .collect();
        bytes.map(|b| base64::engine::general_purpose::STANDARD.encode(b))
    })
}

/// `image` or `video` in Immich's `AssetTypeEnum`.
pub(crate) fn asset_kind(r: &AssetRecord) -> &'static str {
    if r.mime.as_deref().is_some_and(|m| m.starts_with("video/")) {
        "VIDEO"
    } else {
        "IMAGE"
    }
}

/// Immich's `visibility`: archived, the hidden video half of a Live Photo, or the timeline.
pub(crate) fn visibility(r: &AssetRecord) -> &'static str {
    if r.archived == Some(true) {
        "archive"
    } else if !r.shown_alone() {
        "hidden"
    } else {
        "timeline"
    }
}

/// The Live Photo video's asset id (a motion photo's embedded video is not an asset).
pub(crate) fn live_video_id(r: &AssetRecord) -> Option<&String> {
    r.motion
        .as_ref()
        .filter(|m| m.len() == 64 && r.live_of.is_none())
}

pub fn asset_json(r: &AssetRecord) -> Value {
    let kind = asset_kind(r);
    let checksum = checksum_b64(r);
    let mut v = json!({
        "id": r.id,
        "type": kind,
        "ownerId": r.owner,
        "deviceAssetId": r.device_asset_id,
        "deviceId": r.device_id,
        "originalFileName": r.filename,
        "originalMimeType": r.mime,
        "fileCreatedAt": r.file_created_at.clone().or_else(|| r.taken_at.clone()),
        "fileModifiedAt": r.file_modified_at.clone().or_else(|| r.taken_at.clone()),
        "localDateTime": r.taken_at,
        "createdAt": r.uploaded_at,
        "updatedAt": r.updated_at.as_ref().or(r.uploaded_at.as_ref()),
        "isFavorite": r.favorite.unwrap_or(false),
        "isArchived": r.archived.unwrap_or(false),
        "isTrashed": r.is_trashed(),
        "deletedAt": r.trashed_at,
        "isOffline": false,
        "visibility": visibility(r),
        "hasMetadata": true,
        "duration": immich_duration(r.duration.unwrap_or(0.0)),
        "livePhotoVideoId": live_video_id(r),
        "checksum": checksum,
        "thumbhash": r.thumbhash,
        "width": r.width,
        "height": r.height,
        "exifInfo": {
            "make": r.make, "model": r.model, "lensModel": r.lens,
            "exposureTime": r.exposure_time.map(exposure_string),
            "fNumber": r.f_number, "iso": r.iso, "focalLength": r.focal_length,
            "latitude": r.lat, "longitude": r.lon,
            "dateTimeOriginal": r.taken_at,
            "exifImageWidth": r.width, "exifImageHeight": r.height,
            "orientation": r.orientation.map(|o| o.to_string()),
            "fileSizeInByte": r.size,
        },
        "tessera": r,
    });
    // The place (a second statement: one json! of this size hits the macro recursion limit).
    v["exifInfo"]["city"] = json!(r.city);
    v["exifInfo"]["state"] = json!(r.state);
    v["exifInfo"]["country"] = json!(r.country);
    v
}

async fn get_asset(
    State(node): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let r = find_viewed(&node, &viewer, &id)?;
    let mut v = asset_json(&r);
    if matches!(&viewer, Viewer::Link(l) if !l.show_metadata) {
        v["exifInfo"] = Value::Null;
        v["originalFileName"] = Value::String(String::new());
        v["tessera"] = Value::Null;
    }
    Ok(Json(v))
}

async fn get_original(
    State(node): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    if matches!(&viewer, Viewer::Link(l) if !l.allow_download) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "This shared link does not allow downloads",
        ));
    }
    let r = find_viewed(&node, &viewer, &id)?;
    let mut res = crate::http::serve_stored(
        &node,
        BlobKind::Original,
        &r.id,
        req,
        r.mime.as_deref().unwrap_or("application/octet-stream"),
        || {
            ApiError::internal(format!(
                "original of {id} is missing from the blob store; run `sync-node fsck`"
            ))
        },
    )
    .await?;
    res.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        content_disposition(r.filename.as_deref().unwrap_or("original")),
    );
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400"),
    );
    Ok(res)
}

#[derive(Deserialize)]
struct ThumbQuery {
    size: Option<String>,
}

async fn get_thumbnail(
    State(node): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<ThumbQuery>,
    req: Request,
) -> ApiResult<Response> {
    let r = find_viewed(&node, &viewer, &id)?;
    let (kind, hash) = match q.size.as_deref().unwrap_or("thumbnail") {
        "thumbnail" => (BlobKind::Thumb, r.thumb.clone()),
        "preview" | "fullsize" => (BlobKind::Preview, r.preview.clone()),
        other => {
            return Err(ApiError::bad_request(format!(
                "size must be thumbnail or preview, not {other:?}"
            )))
        }
    };
    let Some(hash) = hash else {
        let why = match (r.status.as_deref(), r.error.as_deref()) {
            (_, Some(e)) => format!("No thumbnail for this asset: {e}"),
            _ => "The thumbnail is not generated yet".to_owned(),
        };
        return Err(ApiError::not_found(why));
    };
    let mut res = serve_blob(node.blobs.path(kind, &hash)?, req, "image/jpeg").await?;
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400"),
    );
    Ok(res)
}
