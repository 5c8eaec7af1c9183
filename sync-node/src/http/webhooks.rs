//! Tessera's webhooks API (Immich has none): `GET|POST /api/tessera/webhooks`,
//! `PUT|DELETE /api/tessera/webhooks/{id}`, `POST /api/tessera/webhooks/{id}/test` and
//! `GET /api/tessera/webhooks/{id}/deliveries` (the delivery log). Each user manages their own;
//! the secret is shown once, when the webhook is created.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::*;
use crate::webhooks::{Webhook, WebhookError, EVENTS};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/tessera/webhooks", get(list).post(create))
        .route("/tessera/webhooks/{id}", put(update).delete(remove))
        .route("/tessera/webhooks/{id}/test", post(test))
        .route("/tessera/webhooks/{id}/deliveries", get(deliveries))
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::BadUrl(_) | WebhookError::UnknownEvent(_) => {
                ApiError::bad_request(e.to_string())
            }
            WebhookError::NotFound => ApiError::not_found("Webhook not found"),
            other => ApiError::internal(other),
        }
    }
}

fn hook_json(node: &crate::Node, w: &Webhook, with_secret: bool) -> Value {
    let hint: String = w
        .secret
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let last = node
        .webhooks
        .log_of(&w.id)
        .ok()
        .and_then(|l| l.into_iter().next());
    json!({
        "id": w.id, "url": w.url, "events": w.events, "enabled": w.enabled,
        "createdAt": w.created_at,
        "secret": if with_secret { Some(w.secret.clone()) } else { None },
        "secretHint": format!("…{hint}"),
        "queued": node.webhooks.queued(&w.id).unwrap_or(0),
        "lastDelivery": last,
        "knownEvents": EVENTS,
    })
}

async fn list(State(node): State<AppState>, AuthUser(u): AuthUser) -> ApiResult<Json<Value>> {
    blocking(move || {
        let hooks = node.webhooks.of(&u.id)?;
        Ok(Json(Value::Array(
            hooks.iter().map(|w| hook_json(&node, w, false)).collect(),
        )))
    })
    .await
}

#[derive(Deserialize)]
struct CreateBody {
    url: String,
    #[serde(default)]
    events: Vec<String>,
    secret: Option<String>,
}

async fn create(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    body: Result<Json<CreateBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(b) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    blocking(move || {
        let w = node
            .webhooks
            .create(&u.id, b.url.trim(), b.events, b.secret)?;
        Ok((StatusCode::CREATED, Json(hook_json(&node, &w, true))))
    })
    .await
}

#[derive(Deserialize)]
struct UpdateBody {
    url: Option<String>,
    events: Option<Vec<String>>,
    enabled: Option<bool>,
}

async fn update(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    body: Result<Json<UpdateBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(b) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    blocking(move || {
        let w = node
            .webhooks
            .update(&u.id, &id, b.url, b.events, b.enabled)?;
        Ok(Json(hook_json(&node, &w, false)))
    })
    .await
}

async fn remove(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    blocking(move || {
        node.webhooks.delete(&u.id, &id)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

async fn test(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    blocking(move || {
        node.webhooks.send_test(&u.id, &id)?;
        Ok(StatusCode::ACCEPTED)
    })
    .await
}

async fn deliveries(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    blocking(move || {
        node.webhooks.owned(&u.id, &id)?;
        Ok(Json(
            serde_json::to_value(node.webhooks.log_of(&id)?).map_err(ApiError::internal)?,
        ))
    })
    .await
}
