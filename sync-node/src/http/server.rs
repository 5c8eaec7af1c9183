//! Server information: ping, version, configuration, media types.

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
            get(|| async { Json(json!({"major": 1, "minor": 0, "patch": 0})) }),
        )
        .route("/server/config", get(server_config))
        .route("/server/media-types", get(media_types))
}

async fn server_config(State(node): State<AppState>) -> Json<Value> {
    Json(json!({
        "isInitialized": node.auth.is_initialized(),
        "isOnboarded": node.auth.is_initialized(),
        "loginPageMessage": "",
        "externalDomain": "",
        "trashDays": 30,
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
