//! HTTP endpoints of the peer-to-peer side: pairing a device's iroh key with the signed-in user
//! (the PWA does it at login), listing and revoking devices, where to reach the node over iroh,
//! and pairing tickets for new nodes.

use crate::auth::AuthError;
use crate::auth::Device;
use crate::catalog::CatalogError;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::Path;
use axum::extract::State;
use axum::http::header;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::delete;
use axum::routing::get;
use axum::routing::post;
use axum::Json;
use axum::Router;
use serde::Deserialize;
use serde_json::json;
use serde_json::Value;

use crate::http::*;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/tessera/peer", get(peer_info))
        .route("/tessera/devices", post(bind_device).get(list_devices))
        .route("/tessera/devices/{id}", delete(revoke_device))
        .route("/pairing/tickets", post(create_ticket))
        .route(
            "/tessera/sync",
            post(sync).layer(DefaultBodyLimit::max(64 << 20)),
        )
}

fn peer(node: &AppState) -> ApiResult<&std::sync::Arc<crate::peer::Peer>> {
    node.peer.get().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "peer-to-peer sync is not running on this node",
        )
    })
}

/// The relay URL as the caller can reach it: the host it used for this request, the relay port.
fn relay_url(headers: &HeaderMap, port: Option<u16>) -> Option<String> {
    let port = port?;
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let name = if let Some(rest) = host.strip_prefix('[') {
        format!("[{}]", rest.split(']').next()?)
    } else {
        host.split(':').next()?.to_owned()
    };
    Some(format!("http://{name}:{port}"))
}

fn peer_json(node: &AppState, headers: &HeaderMap) -> ApiResult<Value> {
    let p = peer(node)?;
    let addrs: Vec<String> = p.addr().ip_addrs().map(|a| a.to_string()).collect();
    Ok(json!({
        "nodeId": p.id().to_string(),
        "relayUrl": p
            .relay_public_url()
            .map(str::to_owned)
            .or_else(|| relay_url(headers, p.relay_port())),
        "addrs": addrs,
    }))
}

async fn peer_info(State(node): State<AppState>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    Ok(Json(peer_json(&node, &headers)?))
}

fn device_json(d: &Device) -> Value {
    // The session hash stays on the node.
    json!({"endpointId": d.id, "name": d.name, "kind": d.kind, "createdAt": d.created_at})
}

fn auth_err(e: AuthError) -> ApiError {
    match e {
        AuthError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
        other => other.into(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BindDevice {
    endpoint_id: String,
    #[serde(default)]
    name: String,
    /// Unix seconds when the device signed [`tessera_core::wire::device_binding_statement`].
    signed_at: Option<i64>,
    /// The device key's ed25519 signature of that statement, hex.
    signature: Option<String>,
}

/// Checks that the caller holds the private key of the endpoint id it asks to bind.
fn check_possession(node: &AppState, user: &str, b: &BindDevice) -> ApiResult<()> {
    let missing = || {
        ApiError::bad_request(
            "binding a device needs signedAt and signature: the device key's signature of tessera_core::wire::device_binding_statement(nodeId, userId, signedAt)",
        )
    };
    let (Some(at), Some(sig)) = (b.signed_at, b.signature.as_deref()) else {
        return Err(missing());
    };
    let now = chrono::Utc::now().timestamp();
    if (now - at).abs() > tessera_core::wire::BINDING_MAX_SKEW_SECS {
        return Err(ApiError::bad_request(
            "signedAt is more than 10 minutes from the node's clock",
        ));
    }
    let key_bytes: [u8; 32] = crate::auth::unhex(&b.endpoint_id)
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| {
            ApiError::bad_request("endpointId must be a 64-digit hex iroh endpoint id")
        })?;
    let key = iroh::PublicKey::from_bytes(&key_bytes)
        .map_err(|_| ApiError::bad_request("endpointId is not a valid ed25519 public key"))?;
    let sig_bytes: [u8; 64] = crate::auth::unhex(sig)
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| ApiError::bad_request("signature must be 128 hex digits"))?;
    let node_id = peer(node)?.id().to_string();
    let statement = tessera_core::wire::device_binding_statement(&node_id, user, at);
    key.verify(&statement, &iroh::Signature::from_bytes(&sig_bytes))
        .map_err(|_| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "the signature does not prove possession of this device key",
            )
        })
}

/// Pairs the caller's device key with the signed-in user; answers where to reach the node.
async fn bind_device(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    headers: HeaderMap,
    body: Result<Json<BindDevice>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(b) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if !crate::auth::valid_endpoint_id(&b.endpoint_id) {
        return Err(ApiError::bad_request(
            "endpointId must be a 64-digit hex iroh endpoint id",
        ));
    }
    check_possession(&node, &u.id, &b)?;
    let n = node.clone();
    // A browser pairs with its login session (bearer or cookie); an API key pairs alone.
    let token = crate::http::bearer(&headers).or_else(|| crate::http::cookie_token(&headers));
    let d = tokio::task::spawn_blocking(move || {
        n.auth
            .bind_device(&u, &b.endpoint_id, &b.name, token.as_deref())
    })
    .await?
    .map_err(auth_err)?;
    let mut v = device_json(&d);
    if let Ok(p) = peer_json(&node, &headers) {
        v["node"] = p;
    }
    Ok((StatusCode::CREATED, Json(v)))
}

async fn list_devices(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
) -> ApiResult<Json<Value>> {
    let mut out: Vec<Value> = node
        .auth
        .devices(Some(&u))?
        .iter()
        .map(device_json)
        .collect();
    if u.is_admin {
        out.extend(node.auth.devices(None)?.iter().map(device_json));
    }
    Ok(Json(Value::Array(out)))
}

/// Unpairs a device (or, for an admin, a node): its live connections are closed at once.
async fn revoke_device(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if !node.auth.revoke_device(&u, &id)? {
        return Err(ApiError::not_found("No such device"));
    }
    if let Some(p) = node.peer.get() {
        p.disconnect(&id);
    }
    tracing::info!(device = %id, "device unpaired");
    Ok(StatusCode::NO_CONTENT)
}

/// A one-time pairing ticket for a new sync node (admins only).
async fn create_ticket(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if !u.is_admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Only an admin can add a sync node to the household",
        ));
    }
    let ticket = peer(&node)?.ticket()?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "ticket": ticket,
            "expiresInSeconds": crate::auth::PAIRING_TTL_SECS,
            "usage": format!("sync-node serve --data DIR --listen ADDR --join {ticket}"),
        })),
    ))
}

async fn sync(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    body: Bytes,
) -> ApiResult<Response> {
    let out = tokio::task::spawn_blocking(move || node.catalog.sync_round(&u.id, &body))
        .await?
        .map_err(|e| match e {
            CatalogError::Sync(e) => ApiError::bad_request(format!("sync refused: {e}")),
            other => ApiError::internal(other),
        })?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], out).into_response())
}
