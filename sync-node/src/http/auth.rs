//! Accounts and credentials: sign-up, login and logout, sessions, password change, API keys.

use crate::auth::AuthError;
use crate::auth::User;
use axum::extract::Path;
use axum::extract::State;
use axum::http::header;
use axum::http::HeaderMap;
use axum::http::HeaderValue;
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

use crate::http::users::user_json;
use crate::http::*;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/admin-sign-up", post(admin_sign_up))
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route(
            "/auth/validateToken",
            post(|_u: AuthUser| async { Json(serde_json::json!({"authStatus": true})) }),
        )
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
        .route("/sessions/{id}", delete(delete_session))
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

/// Runs an Argon2 job (a password check) off the executor, at most two at a time.
pub(crate) async fn hashing<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> ApiResult<T> {
    let _permit = HASHING.acquire().await.map_err(ApiError::internal)?;
    Ok(tokio::task::spawn_blocking(f).await?)
}

/// The client's address for login throttling (the peer address when the server records it).
pub(crate) fn client_ip(ext: &axum::http::Extensions) -> String {
    ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// `Secure` when the request came over HTTPS (a TLS-terminating proxy says so).
pub(crate) fn cookie_attrs(headers: &HeaderMap) -> &'static str {
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
        "isAdmin": u.is_admin, "profileImagePath": "", "shouldChangePassword": u.should_change_password, "isOnboarded": true,
    });
    let secure = cookie_attrs(&headers);
    let cookie = format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        crate::auth::SESSION_IDLE_SECS
    );
    let max_age = crate::auth::SESSION_IDLE_SECS;
    // Immich's cookies too: its web and mobile apps look for them after a login.
    let cookies = [
        cookie,
        format!("immich_access_token={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"),
        format!("immich_auth_type=password; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"),
        format!("immich_is_authenticated=true; Path=/; SameSite=Lax; Max-Age={max_age}{secure}"),
    ];
    let mut res = (StatusCode::CREATED, Json(body)).into_response();
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(&c) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
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
    // Its sync-stream checkpoints go with it.
    node.immich_sync.clear(id, None)?;
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
        node.immich_sync
            .clear(&crate::auth::Auth::session_id(&t), None)?;
        for id in node.auth.logout(&t)? {
            if let Some(p) = node.peer.get() {
                p.disconnect(&id);
            }
        }
    }
    let mut res = Json(json!({"successful": true, "redirectUri": "/"})).into_response();
    for gone in [
        "tessera_access_token=; Path=/; HttpOnly; Max-Age=0",
        "immich_access_token=; Path=/; HttpOnly; Max-Age=0",
        "immich_auth_type=; Path=/; HttpOnly; Max-Age=0",
        "immich_is_authenticated=; Path=/; Max-Age=0",
    ] {
        res.headers_mut()
            .append(header::SET_COOKIE, HeaderValue::from_static(gone));
    }
    Ok(res)
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
        .find(|p| !crate::http::access::PERMISSIONS.contains(&p.as_str()))
    {
        return Err(ApiError::bad_request(format!("Unknown permission {bad:?}")));
    }
    let own = request_key(node, headers)?;
    let full = own
        .as_ref()
        .is_none_or(|k| k.permissions.iter().any(|p| p == "all"));
    if wanted.iter().any(|p| p == crate::http::ML_PERMISSION) && !(u.is_admin && full) {
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
