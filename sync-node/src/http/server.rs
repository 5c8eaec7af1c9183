//! Server information in Immich's shapes: ping, version, features, configuration, storage,
//! about, media types. The version is the Immich API version Tessera follows (its mobile app
//! picks its sync protocol from it).

use axum::extract::State;
use axum::routing::get;
use axum::Json;
use axum::Router;
use serde_json::json;
use serde_json::Value;

use crate::http::*;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/server/ping",
            get(|| async { Json(json!({"res": "pong"})) }),
        )
        .route(
            "/server/version",
            get(|| async {
                Json(
                    json!({"major": IMMICH_API.0, "minor": IMMICH_API.1, "patch": IMMICH_API.2,
                            "prerelease": null}),
                )
            }),
        )
        .route("/server/features", get(features))
        .route("/server/storage", get(storage))
        .route("/server/about", get(about))
        .route("/server/config", get(server_config))
        .route("/server/media-types", get(media_types))
        .route("/tessera/admin/scrub", get(scrub_status).post(scrub_start))
}

/// The scheduled scrub (admins): progress, last pass, corrupt blobs and whether each is back.
async fn scrub_status(State(node): State<AppState>, _a: AdminUser) -> ApiResult<Json<Value>> {
    let status = blocking(move || Ok(crate::scrub::status(&node)?)).await?;
    Ok(Json(
        serde_json::to_value(status).map_err(ApiError::internal)?,
    ))
}

/// Starts a scrub pass now (202; a running pass is not restarted).
async fn scrub_start(
    State(node): State<AppState>,
    _a: AdminUser,
) -> ApiResult<(axum::http::StatusCode, Json<Value>)> {
    let running = node.scrub.is_running();
    if !running {
        node.scrub.start_now();
    }
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(json!({"started": !running, "running": true})),
    ))
}

/// The Immich API version whose shapes Tessera answers in (its OpenAPI spec and SDK 3.2.2).
pub const IMMICH_API: (u32, u32, u32) = (3, 2, 2);

/// What this node offers, in Immich's `ServerFeaturesDto`.
async fn features() -> Json<Value> {
    Json(json!({
        "configFile": false, "duplicateDetection": true, "email": false,
        "facialRecognition": true, "importFaces": false, "map": false, "oauth": false,
        "oauthAutoLaunch": false, "ocr": false, "passwordLogin": true,
        "realtimeTranscoding": false, "reverseGeocoding": false, "search": true,
        "sidecar": true, "smartSearch": true, "trash": true,
    }))
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

/// The data directory's disk, in Immich's `ServerStorageResponseDto`.
async fn storage(State(node): State<AppState>, _u: AuthUser) -> ApiResult<Json<Value>> {
    let dir = node.config.data.clone();
    let st = rustix::fs::statvfs(&dir)
        .map_err(|e| ApiError::internal(format!("statvfs {}: {e}", dir.display())))?;
    let size = st.f_blocks.saturating_mul(st.f_frsize);
    let avail = st.f_bavail.saturating_mul(st.f_frsize);
    let used = size.saturating_sub(st.f_bfree.saturating_mul(st.f_frsize));
    let pct = if size == 0 {
        0.0
    } else {
        (used as f64 * 10_000.0 / size as f64).round() / 100.0
    };
    Ok(Json(json!({
        "diskSize": human(size), "diskSizeRaw": size,
        "diskAvailable": human(avail), "diskAvailableRaw": avail,
        "diskUse": human(used), "diskUseRaw": used, "diskUsagePercentage": pct,
    })))
}

/// Immich's `ServerAboutResponseDto`.
async fn about(_u: AuthUser) -> Json<Value> {
    Json(json!({
        "version": format!("v{}.{}.{}", IMMICH_API.0, IMMICH_API.1, IMMICH_API.2),
        "versionUrl": "",
        "licensed": false,
        "build": format!("tessera {}", env!("CARGO_PKG_VERSION")),
        "repository": "tessera",
    }))
}

async fn server_config(State(node): State<AppState>) -> Json<Value> {
    // Immich's trash days are a server setting; Tessera's are per library (each root
    // document). The household's is the admin's, which is also the PWA's default.
    let trash_days = node
        .auth
        .admin()
        .ok()
        .flatten()
        .and_then(|a| node.catalog.lock().ok().map(|lib| lib.trash_days(&a.id)))
        .unwrap_or(30);
    Json(json!({
        "isInitialized": node.auth.is_initialized(),
        "isOnboarded": node.auth.is_initialized(),
        "loginPageMessage": "",
        "externalDomain": "",
        "trashDays": trash_days,
        "oauthButtonText": "",
        "userDeleteDelay": 7,
        "publicUsers": false,
    }))
}

async fn media_types(_u: AuthUser) -> Json<Value> {
    Json(json!({
        "image": tessera_media::IMAGE_EXTENSIONS,
        "video": tessera_media::VIDEO_EXTENSIONS,
        "sidecar": tessera_media::SIDECAR_EXTENSIONS,
    }))
}
