//! `GET /ping`, `POST /predict` (shaped like Immich's machine-learning service) and
//! `GET /status`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tessera_ml::cluster::ClusterParams;
use tokio::sync::Semaphore;

use crate::models::Engine;
use crate::worker::Status;

#[derive(Clone)]
struct AppState {
    engine: Arc<Engine>,
    status: Arc<Status>,
    params: ClusterParams,
    /// Bounded queue: requests beyond it get 503 instead of piling up.
    slots: Arc<Semaphore>,
}

struct HttpError(StatusCode, String);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"detail": self.1}))).into_response()
    }
}

fn bad(status: StatusCode, m: impl Into<String>) -> HttpError {
    HttpError(status, m.into())
}

pub fn router(engine: Arc<Engine>, status: Arc<Status>, params: ClusterParams) -> Router {
    let slots = Arc::new(Semaphore::new(engine.runtime.threads() * 4));
    Router::new()
        .route("/ping", get(|| async { "pong" }))
        .route(
            "/",
            get(|| async { Json(json!({"message": "Tessera ML"})) }),
        )
        .route("/status", get(status_json))
        .route(
            "/predict",
            post(predict).layer(DefaultBodyLimit::max(64 << 20)),
        )
        .with_state(AppState {
            engine,
            status,
            params,
            slots,
        })
}

pub async fn serve(
    addr: SocketAddr,
    engine: Arc<Engine>,
    status: Arc<Status>,
    params: ClusterParams,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    tracing::info!("ML node listening on http://{addr} (GET /ping, POST /predict, GET /status)");
    axum::serve(listener, router(engine, status, params)).await?;
    Ok(())
}

async fn status_json(State(s): State<AppState>) -> Json<Value> {
    let e = &s.engine;
    Json(json!({
        "provider": e.runtime.provider().name(),
        "providerReason": e.runtime.reason,
        "threads": e.runtime.threads(),
        "faces": e.faces.as_ref().map(|f| f.name.clone()),
        "clip": e.clip.as_ref().map(|c| c.name.clone()),
        "notes": e.notes,
        "progress": s.status.snapshot(),
    }))
}

fn embedding_string(v: &[f32]) -> String {
    // Immich sends embeddings as a JSON array inside a string.
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn model_name(entry: &Value) -> Option<&str> {
    entry.get("modelName").and_then(Value::as_str)
}

async fn predict(State(s): State<AppState>, mut form: Multipart) -> Result<Json<Value>, HttpError> {
    let mut entries: Option<Value> = None;
    let mut image: Option<Vec<u8>> = None;
    let mut text: Option<String> = None;
    while let Some(field) = form.next_field().await.map_err(|e| {
        bad(
            StatusCode::BAD_REQUEST,
            format!("malformed multipart body: {e}"),
        )
    })? {
        match field.name().unwrap_or_default() {
            "entries" => {
                let t = field
                    .text()
                    .await
                    .map_err(|e| bad(StatusCode::BAD_REQUEST, e.to_string()))?;
                entries = Some(serde_json::from_str(&t).map_err(|_| {
                    bad(StatusCode::UNPROCESSABLE_ENTITY, "Invalid request format.")
                })?);
            }
            "image" => {
                image = Some(
                    field
                        .bytes()
                        .await
                        .map_err(|e| bad(StatusCode::BAD_REQUEST, e.to_string()))?
                        .to_vec(),
                )
            }
            "text" => {
                text = Some(
                    field
                        .text()
                        .await
                        .map_err(|e| bad(StatusCode::BAD_REQUEST, e.to_string()))?,
                )
            }
            _ => {}
        }
    }
    let entries = entries
        .filter(Value::is_object)
        .ok_or_else(|| bad(StatusCode::UNPROCESSABLE_ENTITY, "Invalid request format."))?;
    if image.is_none() && text.is_none() {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "Either image or text must be provided",
        ));
    }
    let _slot = s.slots.clone().try_acquire_owned().map_err(|_| {
        bad(
            StatusCode::SERVICE_UNAVAILABLE,
            "the ML node is busy; retry shortly",
        )
    })?;
    let engine = s.engine.clone();
    let params = s.params;
    tokio::task::spawn_blocking(move || run(&engine, &params, &entries, image, text))
        .await
        .map_err(|e| bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map(Json)
}

fn run(
    e: &Engine,
    params: &ClusterParams,
    entries: &Value,
    image: Option<Vec<u8>>,
    text: Option<String>,
) -> Result<Value, HttpError> {
    let mut out = Map::new();
    let img = match &image {
        Some(b) => {
            let i = tessera_ml::prep::decode(b)
                .map_err(|e| bad(StatusCode::BAD_REQUEST, e.to_string()))?;
            out.insert("imageHeight".into(), i.height().into());
            out.insert("imageWidth".into(), i.width().into());
            Some(i)
        }
        None => None,
    };
    let internal = |e: tessera_ml::MlError| bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    if let Some(clip) = entries.get("clip") {
        let c = e.clip.as_ref().ok_or_else(|| {
            bad(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("smart search is off on this node: {}", notes(e, "clip")),
            )
        })?;
        let (entry, v) = match (&img, &text) {
            (Some(i), _) => (clip.get("visual"), c.visual.embed(i).map_err(internal)?),
            (None, Some(t)) => (clip.get("textual"), c.textual.embed(t).map_err(internal)?),
            (None, None) => unreachable!("checked above"),
        };
        check_model(entry, &c.name)?;
        out.insert("clip".into(), embedding_string(&v).into());
    }
    if let Some(fr) = entries.get("facial-recognition") {
        let f = e.faces.as_ref().ok_or_else(|| {
            bad(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "faces are off on this node: {}",
                    notes(e, "facial-recognition")
                ),
            )
        })?;
        let Some(i) = &img else {
            return Err(bad(
                StatusCode::BAD_REQUEST,
                "facial-recognition needs an image",
            ));
        };
        check_model(fr.get("detection"), &f.name)?;
        check_model(fr.get("recognition"), &f.name)?;
        let min_score = fr
            .pointer("/detection/options/minScore")
            .and_then(Value::as_f64)
            .map(|v| v as f32)
            .unwrap_or(params.min_score);
        let faces = f.analyze(i, min_score).map_err(internal)?;
        let list: Vec<Value> = faces
            .iter()
            .map(|face| {
                let b = face.detection.bbox;
                json!({
                    "boundingBox": {"x1": b[0].round(), "y1": b[1].round(), "x2": b[2].round(), "y2": b[3].round()},
                    "embedding": embedding_string(&face.embedding),
                    "score": face.detection.score,
                })
            })
            .collect();
        out.insert("facial-recognition".into(), list.into());
    }
    Ok(Value::Object(out))
}

fn notes(e: &Engine, task: &str) -> String {
    let key = if task == "clip" {
        "smart search"
    } else {
        "faces"
    };
    e.notes
        .iter()
        .filter(|n| n.starts_with(task) || n.starts_with(key))
        .cloned()
        .collect::<Vec<_>>()
        .join("; ")
}

/// A request naming another model than the one loaded is refused, never silently answered
/// with a different model's vectors.
fn check_model(entry: Option<&Value>, loaded: &str) -> Result<(), HttpError> {
    match entry.and_then(model_name) {
        Some(name) if name != loaded && !name.ends_with(&format!("/{loaded}")) => Err(bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("model {name} is not loaded on this node (it runs {loaded})"),
        )),
        _ => Ok(()),
    }
}
