//! The HTTP API (axum). Immich's paths and shapes where Immich has the operation, so Immich
//! tools work against Tessera; one error type with a stable JSON body
//! `{"statusCode", "error", "message"}`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{
    DefaultBodyLimit, FromRequest, FromRequestParts, Multipart, Path, Query, Request, State,
};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use tessera_core::{AssetRecord, DocId};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::auth::{AuthError, User};
use crate::blobs::{valid_hash, BlobKind};
use crate::catalog::CatalogError;
use crate::ingest::{ingest_committed, Outcome, UploadMeta};
use crate::node::{Node, NodeError};

pub const COOKIE: &str = "tessera_access_token";

/// An API error: a status and a message for the user.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {e}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "statusCode": self.status.as_u16(),
            "error": self.status.canonical_reason().unwrap_or("Error"),
            "message": self.message,
        });
        (self.status, Json(body)).into_response()
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Blob(b) => b.into(),
            other => Self::internal(other),
        }
    }
}
impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        Self::internal(e)
    }
}
impl From<crate::blobs::BlobError> for ApiError {
    fn from(e: crate::blobs::BlobError) -> Self {
        match &e {
            crate::blobs::BlobError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::StorageFull =>
            {
                tracing::error!(error = %e, "disk full");
                Self::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "The node's disk is full: nothing was stored, try again once space is freed",
                )
            }
            _ => Self::internal(e),
        }
    }
}
impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::AlreadyInitialized => Self::bad_request("The server already has an admin"),
            AuthError::BadCredentials => {
                Self::new(StatusCode::UNAUTHORIZED, "Incorrect email or password")
            }
            AuthError::Invalid(m) => Self::bad_request(m),
            other => Self::internal(other),
        }
    }
}
impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::internal(e)
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;
pub(crate) type AppState = Arc<Node>;

/// The authenticated user of a request: `x-api-key`, `Authorization: Bearer`, or the session
/// cookie set at login.
pub struct AuthUser(pub User);

pub(crate) fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == COOKIE || k == "immich_access_token").then(|| v.to_owned())
        })
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").map(|t| t.trim().to_owned())
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        node: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let h = &parts.headers;
        let user = if let Some(key) = h.get("x-api-key").and_then(|v| v.to_str().ok()) {
            let k = node
                .auth
                .api_key(key.trim())?
                .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "Invalid API key"))?;
            if k.permissions
                .iter()
                .all(|p| p == crate::ml_api::ML_PERMISSION)
            {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "This API key is for an ML node: it can only use /api/tessera/ml",
                ));
            }
            node.auth
                .user(&k.user_id)?
                .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "Invalid API key"))?
        } else if let Some(token) = bearer(h).or_else(|| cookie_token(h)) {
            node.auth
                .user_by_token(&token)?
                .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "Invalid user token"))?
        } else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Authentication required",
            ));
        };
        Ok(AuthUser(user))
    }
}

/// The whole HTTP surface: API under `/api`, the PWA everywhere else.
pub fn router(node: AppState) -> Router {
    let api = Router::new()
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
        .route("/auth/admin-sign-up", post(admin_sign_up))
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/auth/change-password", post(change_password))
        .route("/api-keys", post(create_api_key).get(list_api_keys))
        .route("/api-keys/me", get(my_api_key))
        .route(
            "/api-keys/{id}",
            get(get_api_key).put(update_api_key).delete(delete_api_key),
        )
        .route(
            "/sessions",
            get(list_sessions).delete(delete_other_sessions),
        )
        .route("/sessions/{id}", axum::routing::delete(delete_session))
        .route("/assets/statistics", get(asset_statistics))
        .route("/users/me", get(users_me))
        .route("/assets/bulk-upload-check", post(bulk_upload_check))
        .route(
            "/assets",
            post(upload_asset)
                .layer(DefaultBodyLimit::disable())
                .put(crate::library_api::update_assets)
                .delete(crate::library_api::delete_assets),
        )
        .route("/assets/{id}", get(get_asset))
        .route("/assets/{id}/original", get(get_original))
        .route("/assets/{id}/thumbnail", get(get_thumbnail))
        .route(
            "/tessera/sync",
            post(sync).layer(DefaultBodyLimit::max(64 << 20)),
        )
        .merge(crate::ml_api::routes())
        .merge(crate::peer_api::routes())
        .merge(crate::library_api::routes())
        // Every matched route is checked against the access table (API-key scopes, CSRF).
        .route_layer(axum::middleware::from_fn_with_state(
            node.clone(),
            crate::access::enforce,
        ))
        .fallback(|| async { ApiError::not_found("No such API endpoint") });
    let mut app = Router::new()
        .route(
            "/.well-known/immich",
            get(|| async { Json(json!({"api": {"endpoint": "/api"}})) }),
        )
        .nest("/api", api);
    app = match node.config.web.clone() {
        Some(web) => {
            let index = web.join("index.html");
            // The PWA's pages: only this node's own scripts (wasm needs 'wasm-unsafe-eval'),
            // connections to this node and its relay (any host: the relay's port differs), no
            // framing by other sites.
            let csp = HeaderValue::from_str(&csp_for(&index))
                .unwrap_or_else(|_| HeaderValue::from_static(CSP));
            let pwa = Router::new()
                .fallback_service(ServeDir::new(web).fallback(ServeFile::new(index)))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::CONTENT_SECURITY_POLICY,
                    csp,
                ));
            app.merge(pwa)
        }
        None => app.fallback(|| async {
            (StatusCode::NOT_FOUND, axum::response::Html("<h1>Tessera sync node</h1><p>The PWA is not built: run <code>cargo xtask run</code>.</p>"))
        }),
    };
    app.layer(tower_http::trace::TraceLayer::new_for_http())
        // Stored media is served as what it is, never sniffed into something executable.
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .with_state(node)
}

/// The PWA's Content-Security-Policy for a built `index.html`: [`CSP`] with the hashes of the
/// page's inline scripts (trunk's module loader) allowed, and no other inline script.
pub fn csp_for(index: &std::path::Path) -> String {
    use sha2::Digest;
    let html = std::fs::read_to_string(index).unwrap_or_default();
    let mut hashes = String::new();
    let mut rest = html.as_str();
    while let Some(i) = rest.find("<script") {
        rest = &rest[i..];
        let Some(open_end) = rest.find('>') else {
            break;
        };
        let open = &rest[..open_end];
        let body = &rest[open_end + 1..];
        let Some(close) = body.find("</script>") else {
            break;
        };
        if !open.contains("src=") {
            let digest = sha2::Sha256::digest(&body.as_bytes()[..close]);
            hashes.push_str(&format!(
                " 'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            ));
        }
        rest = &body[close..];
    }
    CSP.replacen(
        "script-src 'self' 'wasm-unsafe-eval'",
        &format!("script-src 'self' 'wasm-unsafe-eval'{hashes}"),
        1,
    )
}

/// The PWA's Content-Security-Policy (before inline-script hashes).
pub const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self' http: https: ws: wss:; worker-src 'self' blob:; object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'";

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

fn user_json(u: &User) -> Value {
    json!({
        "id": u.id, "email": u.email, "name": u.name, "isAdmin": u.is_admin,
        "createdAt": u.created_at, "updatedAt": u.created_at, "avatarColor": "primary",
        "profileImagePath": "", "shouldChangePassword": false, "status": "active",
        "storageLabel": "admin", "quotaSizeInBytes": null, "quotaUsageInBytes": 0,
    })
}

#[derive(Deserialize)]
struct SignUp {
    email: String,
    password: String,
    name: String,
}

async fn admin_sign_up(
    State(node): State<AppState>,
    body: Result<Json<SignUp>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(b) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if node.peer.get().is_some_and(|p| p.joined_household()) {
        // The household's accounts are on their way from the node this one joined: a sign-up
        // here would make a second admin and split the household.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "This node joined a household: sign in with your household account once it has synced",
        ));
    }
    let u = tokio::task::spawn_blocking(move || {
        node.auth.admin_sign_up(&b.email, &b.password, &b.name)
    })
    .await??;
    Ok((StatusCode::CREATED, Json(user_json(&u))))
}

#[derive(Deserialize)]
struct Login {
    email: String,
    password: String,
}

/// Argon2 hashes at a time (each takes ≈ 19 MiB and tens of ms): a login flood queues instead of
/// exhausting memory and cores.
static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// The client's address for login throttling (the peer address when the server records it).
fn client_ip(ext: &axum::http::Extensions) -> String {
    ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// `Secure` when the request came over HTTPS (a TLS-terminating proxy says so).
fn cookie_attrs(headers: &HeaderMap) -> &'static str {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    if https {
        "; Secure"
    } else {
        ""
    }
}

async fn login(
    State(node): State<AppState>,
    ext: axum::http::Extensions,
    headers: HeaderMap,
    body: Result<Json<Login>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let Json(b) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let ip = format!("ip/{}", client_ip(&ext));
    let account = format!("email/{}", b.email.trim().to_lowercase());
    if let Some(wait) = node.auth.throttle.blocked(&[&ip, &account]) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many failed logins: try again in {} minutes",
                wait.div_ceil(60)
            ),
        ));
    }
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .chars()
        .take(100)
        .collect::<String>();
    let permit = HASHING.acquire().await.map_err(ApiError::internal)?;
    let n = node.clone();
    let res =
        tokio::task::spawn_blocking(move || n.auth.login_from(&b.email, &b.password, &agent, ""))
            .await?;
    drop(permit);
    let (u, token) = match res {
        Ok(v) => v,
        Err(AuthError::BadCredentials) => {
            node.auth.throttle.failed(&[&ip, &account]);
            return Err(AuthError::BadCredentials.into());
        }
        Err(e) => return Err(e.into()),
    };
    node.auth.throttle.succeeded(&account);
    let body = json!({
        "accessToken": token, "userId": u.id, "userEmail": u.email, "name": u.name,
        "isAdmin": u.is_admin, "profileImagePath": "", "shouldChangePassword": false, "isOnboarded": true,
    });
    let secure = cookie_attrs(&headers);
    let cookie = format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        crate::auth::SESSION_IDLE_SECS
    );
    let mut res = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(res)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangePassword {
    password: String,
    new_password: String,
}

/// Immich's `POST /api/auth/change-password`: every other session of the user ends.
async fn change_password(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    headers: HeaderMap,
    body: Result<Json<ChangePassword>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(b) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let keep = bearer(&headers).or_else(|| cookie_token(&headers));
    let permit = HASHING.acquire().await.map_err(ApiError::internal)?;
    let n = node.clone();
    let user = u.clone();
    let ended = tokio::task::spawn_blocking(move || {
        n.auth
            .change_password(&user, &b.password, &b.new_password, keep.as_deref())
    })
    .await?
    .map_err(|e| match e {
        AuthError::BadCredentials => ApiError::bad_request("Wrong password"),
        other => other.into(),
    })?;
    drop(permit);
    tracing::info!(user = %u.id, ended, "password changed; other sessions ended");
    let fresh = node.auth.user(&u.id)?.unwrap_or(u);
    Ok(Json(user_json(&fresh)))
}

fn session_json(id: &str, s: &crate::auth::Session, current: bool) -> Value {
    let expires = chrono::DateTime::parse_from_rfc3339(&s.updated_at)
        .ok()
        .map(|t| {
            (t + chrono::Duration::seconds(crate::auth::SESSION_IDLE_SECS))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        });
    json!({
        "id": id, "createdAt": s.created_at, "updatedAt": s.updated_at, "expiresAt": expires,
        "current": current, "deviceType": s.device_type, "deviceOS": s.device_os,
        "isPendingSyncReset": false,
    })
}

/// Immich's `GET /api/sessions`: the user's login sessions, the current one marked.
async fn list_sessions(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let current = bearer(&headers)
        .or_else(|| cookie_token(&headers))
        .map(|t| crate::auth::Auth::session_id(&t));
    let mut list = node.auth.sessions_of(&u)?;
    list.sort_by(|a, b| b.1.updated_at.cmp(&a.1.updated_at));
    Ok(Json(Value::Array(
        list.iter()
            .map(|(id, s)| session_json(id, s, current.as_deref() == Some(id)))
            .collect(),
    )))
}

fn end_session(node: &AppState, u: &User, id: &str) -> ApiResult<bool> {
    let Some(unpaired) = node.auth.delete_session(u, id)? else {
        return Ok(false);
    };
    if let Some(p) = node.peer.get() {
        for d in unpaired {
            p.disconnect(&d);
        }
    }
    Ok(true)
}

/// Immich's `DELETE /api/sessions/{id}`: signs that session out (and unpairs its devices).
async fn delete_session(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if !end_session(&node, &u, &id)? {
        return Err(ApiError::not_found("No such session"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Immich's `DELETE /api/sessions`: signs out every session but the current one.
async fn delete_other_sessions(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let current = bearer(&headers)
        .or_else(|| cookie_token(&headers))
        .map(|t| crate::auth::Auth::session_id(&t));
    for (id, _) in node.auth.sessions_of(&u)? {
        if Some(&id) != current.as_ref() {
            end_session(&node, &u, &id)?;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn logout(State(node): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if let Some(t) = bearer(&headers).or_else(|| cookie_token(&headers)) {
        for id in node.auth.logout(&t)? {
            if let Some(p) = node.peer.get() {
                p.disconnect(&id);
            }
        }
    }
    let mut res = Json(json!({"successful": true, "redirectUri": "/"})).into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("tessera_access_token=; Path=/; HttpOnly; Max-Age=0"),
    );
    Ok(res)
}

async fn users_me(AuthUser(u): AuthUser) -> Json<Value> {
    Json(user_json(&u))
}

#[derive(Deserialize)]
struct NewKey {
    #[serde(default)]
    name: String,
    #[serde(default)]
    permissions: Vec<String>,
}

/// The permissions of the API key a request uses (`None`: a login session, which has the
/// user's full rights).
fn request_key(node: &AppState, headers: &HeaderMap) -> ApiResult<Option<crate::auth::ApiKey>> {
    match headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        Some(k) => Ok(node.auth.api_key(k.trim())?),
        None => Ok(None),
    }
}

/// Checks requested permissions: known names only; a key can never mint more than it has, and
/// `ml` (reads every user's library) only an admin with full rights.
fn check_grant(node: &AppState, u: &User, headers: &HeaderMap, wanted: &[String]) -> ApiResult<()> {
    if let Some(bad) = wanted
        .iter()
        .find(|p| !crate::access::PERMISSIONS.contains(&p.as_str()))
    {
        return Err(ApiError::bad_request(format!("Unknown permission {bad:?}")));
    }
    let own = request_key(node, headers)?;
    let full = own
        .as_ref()
        .is_none_or(|k| k.permissions.iter().any(|p| p == "all"));
    if wanted.iter().any(|p| p == crate::ml_api::ML_PERMISSION) && !(u.is_admin && full) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Only an admin (signed in, or with an `all` key) can create a key for an ML node: it reads every user's library",
        ));
    }
    if let Some(k) = own.filter(|_| !full) {
        let grants_all = wanted.is_empty() || wanted.iter().any(|p| p == "all");
        if grants_all || wanted.iter().any(|p| !k.permissions.contains(p)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "An API key cannot create a key with permissions it does not have",
            ));
        }
    }
    Ok(())
}

async fn create_api_key(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    headers: HeaderMap,
    body: Result<Json<NewKey>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(b) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_grant(&node, &u, &headers, &b.permissions)?;
    let (key, secret) = node.auth.create_api_key(&u, &b.name, b.permissions)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"secret": secret, "apiKey": key_json(&key)})),
    ))
}

fn key_json(key: &crate::auth::ApiKey) -> Value {
    json!({"id": key.id, "name": key.name, "createdAt": key.created_at, "updatedAt": key.created_at, "permissions": key.permissions})
}

/// Immich's `GET /api/api-keys`: the user's keys (never their secrets).
async fn list_api_keys(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
) -> ApiResult<Json<Value>> {
    let keys = node.auth.api_keys_of(&u)?;
    Ok(Json(Value::Array(keys.iter().map(key_json).collect())))
}

async fn get_api_key(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    node.auth
        .api_keys_of(&u)?
        .iter()
        .find(|k| k.id == id)
        .map(|k| Json(key_json(k)))
        .ok_or_else(|| ApiError::not_found("No such API key"))
}

#[derive(Deserialize)]
struct KeyUpdate {
    name: Option<String>,
    permissions: Option<Vec<String>>,
}

/// Immich's `PUT /api/api-keys/{id}`: rename or re-scope (within the caller's own rights).
async fn update_api_key(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<KeyUpdate>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(b) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let Some(p) = &b.permissions {
        check_grant(&node, &u, &headers, p)?;
    }
    node.auth
        .update_api_key(&u, &id, b.name.as_deref(), b.permissions)?
        .map(|k| Json(key_json(&k)))
        .ok_or_else(|| ApiError::not_found("No such API key"))
}

/// Immich's `DELETE /api/api-keys/{id}`: the key stops working at once.
async fn delete_api_key(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if !node.auth.delete_api_key(&u, &id)? {
        return Err(ApiError::not_found("No such API key"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The API key the request authenticates with (Immich clients check its permissions).
async fn my_api_key(
    State(node): State<AppState>,
    AuthUser(_u): AuthUser,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let secret = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let key = node.auth.api_key(secret.trim())?.ok_or_else(|| {
        ApiError::bad_request("This request is not authenticated with an API key")
    })?;
    Ok(Json(json!({
        "id": key.id, "name": key.name, "createdAt": key.created_at,
        "updatedAt": key.created_at, "permissions": key.permissions,
    })))
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
            .and_then(|asset| find_record(&node, &u, &asset).ok());
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
            let filename = field.file_name().unwrap_or("upload").to_owned();
            if tessera_media::media_kind(&filename).is_none() {
                failure = Some(ApiError::bad_request(format!(
                    "Unsupported file type: {filename}"
                )));
                drain_field(&mut field).await;
                continue;
            }
            meta.filename = filename;
            let mut p = node.blobs.begin()?;
            loop {
                match field.chunk().await {
                    Ok(Some(chunk)) => {
                        if p.len() + chunk.len() as u64 > max_upload {
                            p.abort();
                            return Err(ApiError::new(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                format!(
                                    "{} is larger than this node's limit of {} MiB",
                                    meta.filename,
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
                "visibility" => meta.archived = text == "archive",
                _ => {} // duration, livePhotoVideoId...: accepted; Tessera reads them from the file
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

pub(crate) fn find_record(node: &Node, user: &User, id: &str) -> ApiResult<AssetRecord> {
    let missing = || {
        ApiError::not_found(format!(
            "Asset not found: {}",
            id.chars().take(80).collect::<String>()
        ))
    };
    if !valid_hash(id) {
        return Err(missing());
    }
    let loc = node.location_of(&user.id, id)?.ok_or_else(missing)?;
    let shard = DocId::shard(&loc.owner, &loc.month).map_err(ApiError::internal)?;
    node.catalog
        .lock()?
        .asset_in(&shard, id)
        .map_err(CatalogError::from)?
        .filter(|r| !r.is_purged())
        .ok_or_else(missing)
}

/// Immich's `H:MM:SS.ffffff` duration string.
fn immich_duration(secs: f64) -> String {
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

fn exposure_string(t: f64) -> String {
    if t > 0.0 && t < 1.0 {
        format!("1/{}", (1.0 / t).round())
    } else {
        format!("{t}")
    }
}

/// Immich's `AssetResponseDto` (the fields Tessera has), plus the raw record under `tessera`.
pub fn asset_json(r: &AssetRecord) -> Value {
    let kind = if r.mime.as_deref().is_some_and(|m| m.starts_with("video/")) {
        "VIDEO"
    } else {
        "IMAGE"
    };
    let checksum = r.sha1.as_deref().and_then(|h| {
        let bytes: Option<Vec<u8>> = (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
            .collect();
        bytes.map(|b| base64::engine::general_purpose::STANDARD.encode(b))
    });
    json!({
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
        "updatedAt": r.uploaded_at,
        "isFavorite": r.favorite.unwrap_or(false),
        "isArchived": r.archived.unwrap_or(false),
        "isTrashed": r.is_trashed(),
        "deletedAt": r.trashed_at,
        "isOffline": false,
        "visibility": if r.archived == Some(true) { "archive" } else if r.live_of.is_some() { "hidden" } else { "timeline" },
        "hasMetadata": true,
        "duration": immich_duration(r.duration.unwrap_or(0.0)),
        "livePhotoVideoId": r.motion.as_ref().filter(|m| m.len() == 64 && r.live_of.is_none()),
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
    })
}

async fn get_asset(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(asset_json(&find_record(&node, &u, &id)?)))
}

fn content_disposition(filename: &str) -> HeaderValue {
    let safe: String = filename
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .filter(|c| *c != '"' && *c != '\\')
        .collect();
    let encoded: String = filename
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{safe}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

pub(crate) async fn serve_blob(
    path: std::path::PathBuf,
    req: Request,
    mime: &str,
) -> ApiResult<Response> {
    let res = ServeFile::new_with_mime(path, &mime.parse().unwrap_or(mime_guess_octet()))
        .oneshot(req)
        .await
        .map_err(ApiError::internal)?;
    Ok(res.map(Body::new))
}

fn mime_guess_octet() -> mime::Mime {
    mime::APPLICATION_OCTET_STREAM
}

async fn get_original(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let r = find_record(&node, &u, &id)?;
    let path = node.blobs.path(BlobKind::Original, &r.id)?;
    if !path.is_file() {
        return Err(ApiError::internal(format!(
            "original of {id} is missing from the blob store; run `sync-node fsck`"
        )));
    }
    let mut res = serve_blob(
        path,
        req,
        r.mime.as_deref().unwrap_or("application/octet-stream"),
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
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    Query(q): Query<ThumbQuery>,
    req: Request,
) -> ApiResult<Response> {
    let r = find_record(&node, &u, &id)?;
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
