//! Public shared links (`crate::links`): Immich's API — `GET|POST /api/shared-links`,
//! `GET|PATCH|DELETE /api/shared-links/{id}`, `PUT|DELETE /api/shared-links/{id}/assets`,
//! `GET /api/shared-links/me?key=` and `POST /api/shared-links/login?key=` — and the page a
//! visitor without an account opens, `/share/{key}`: plain HTML rendered by the node (no wasm,
//! no script), thumbnails and downloads through the asset routes with the same `?key=`.
//!
//! Only the album's owner links an album; anyone links photos of their own library. A revoked
//! link answers 404 and an expired one 410, on the page and on every byte it used to serve.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, put};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tessera_core::{AssetRecord, DocId, Library};

use crate::catalog::CatalogError;
use crate::http::users::user_brief;
use crate::http::*;
use crate::links::{hash_link_password, LinkState, SharedLink};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/shared-links", get(list).post(create))
        .route("/shared-links/me", get(me))
        .route("/shared-links/login", axum::routing::post(login))
        .route(
            "/shared-links/{id}",
            get(get_one).patch(update).delete(remove),
        )
        .route(
            "/shared-links/{id}/assets",
            put(add_assets).delete(remove_assets),
        )
}

pub(crate) fn page_routes() -> Router<AppState> {
    Router::new().route("/share/{key}", get(page).post(page_login))
}

fn link_not_found() -> ApiError {
    ApiError::not_found("Shared link not found")
}

/// The records a link shows, newest first (an album link in the album's order).
fn link_records(node: &crate::Node, lib: &Library, link: &SharedLink) -> Vec<AssetRecord> {
    let items = link_items(lib, link).unwrap_or_default();
    let mut out: Vec<AssetRecord> = items
        .iter()
        .filter_map(|(owner, asset)| crate::http::albums::item_record(node, lib, owner, asset))
        .filter(|r| r.shown_alone())
        .collect();
    out.sort_by(|a, b| b.taken_at.cmp(&a.taken_at));
    let asc = link
        .album_id
        .as_deref()
        .and_then(|a| DocId::album(a).ok())
        .and_then(|d| lib.album(&d).ok().flatten())
        .is_some_and(|a| a.order == "asc");
    if asc {
        out.reverse();
    }
    out
}

/// Immich's `SharedLinkResponseDto` (`password` is never given back: only whether one is set).
fn link_json(node: &crate::Node, lib: &Library, link: &SharedLink, token: Option<&str>) -> Value {
    let assets: Vec<Value> = link_records(node, lib, link)
        .iter()
        .map(|r| {
            let mut v = asset_json(r);
            if !link.show_metadata {
                v["exifInfo"] = Value::Null;
                v["originalFileName"] = json!("");
                v["tessera"] = Value::Null;
            }
            v
        })
        .collect();
    let album = link
        .album_id
        .as_deref()
        .and_then(|a| DocId::album(a).ok())
        .and_then(|d| lib.album(&d).ok().flatten())
        .map(|a| {
            json!({
                "id": a.id, "albumName": a.name, "description": a.description,
                "ownerId": a.owner, "assetCount": a.items.len(),
                "albumThumbnailAssetId": a.cover, "createdAt": a.created_at,
                "updatedAt": a.updated_at, "shared": !a.members.is_empty(),
                "hasSharedLink": true, "albumUsers": [], "assets": [],
                "isActivityEnabled": a.activity, "order": a.order,
                "owner": node.auth.user(&a.owner).ok().flatten().map(|u| user_brief(&u)),
            })
        });
    json!({
        "id": link.id, "description": link.description, "password": Value::Null,
        "hasPassword": link.password_hash.is_some(), "token": token,
        "userId": link.user_id, "key": link.key, "type": link.kind,
        "createdAt": link.created_at, "expiresAt": link.expires_at,
        "assets": assets, "album": album, "allowUpload": false,
        "allowDownload": link.allow_download, "showMetadata": link.show_metadata,
        "slug": Value::Null,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    album_id: Option<String>,
}

async fn list(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    blocking(move || {
        let links = node.auth.shared_links(Some(&u.id))?;
        let lib = node.catalog.lock()?;
        Ok(Json(Value::Array(
            links
                .iter()
                .filter(|l| q.album_id.is_none() || l.album_id == q.album_id)
                .map(|l| link_json(&node, &lib, l, None))
                .collect(),
        )))
    })
    .await
}

async fn get_one(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    blocking(move || {
        let link = node
            .auth
            .shared_link_of(&u.id, &id)?
            .ok_or_else(link_not_found)?;
        let lib = node.catalog.lock()?;
        Ok(Json(link_json(&node, &lib, &link, None)))
    })
    .await
}

/// `expiresAt` as given: absent leaves it, `null` clears it, a date sets it.
fn parse_expiry(v: &Value) -> ApiResult<Option<String>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|d| {
                Some(
                    d.with_timezone(&chrono::Utc)
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                )
            })
            .map_err(|_| {
                ApiError::bad_request(format!("expiresAt must be a date-time, not {s:?}"))
            }),
        _ => Err(ApiError::bad_request(
            "expiresAt must be a date-time or null",
        )),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    #[serde(rename = "type")]
    kind: String,
    album_id: Option<String>,
    #[serde(default)]
    asset_ids: Vec<String>,
    description: Option<String>,
    password: Option<String>,
    #[serde(default)]
    expires_at: Value,
    #[serde(default)]
    allow_upload: bool,
    allow_download: Option<bool>,
    show_metadata: Option<bool>,
}

async fn create(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Json(b): Json<CreateBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if b.allow_upload {
        return Err(ApiError::bad_request(
            "Uploading through a shared link is not supported by Tessera",
        ));
    }
    let expires_at = parse_expiry(&b.expires_at)?;
    let description = b.description.map(|d| d.chars().take(2000).collect());
    blocking(move || {
        let password_hash = match b.password.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => Some(hash_link_password(p)?),
            None => None,
        };
        let (album_id, asset_ids) = match b.kind.as_str() {
            "ALBUM" => {
                let id = b.album_id.ok_or_else(|| {
                    ApiError::bad_request("albumId is required for an ALBUM link")
                })?;
                let doc = DocId::album(&id).map_err(|_| ApiError::not_found("Album not found"))?;
                let lib = node.catalog.lock()?;
                let a = lib
                    .album(&doc)
                    .map_err(CatalogError::from)?
                    .filter(|a| a.role_of(&u.id).is_some())
                    .ok_or_else(|| ApiError::not_found("Album not found"))?;
                if a.owner != u.id {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "Only the album's owner can share it with a link",
                    ));
                }
                (Some(id), Vec::new())
            }
            "INDIVIDUAL" => {
                if b.asset_ids.is_empty() || b.asset_ids.len() > 10_000 {
                    return Err(ApiError::bad_request(
                        "assetIds must list 1 to 10,000 of your photos",
                    ));
                }
                let mut ids = Vec::new();
                for id in &b.asset_ids {
                    find_own_record(&node, &u, id)?;
                    if !ids.contains(id) {
                        ids.push(id.clone());
                    }
                }
                (None, ids)
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "type must be ALBUM or INDIVIDUAL, not {other:?}"
                )))
            }
        };
        let link = node.auth.create_shared_link(SharedLink {
            id: String::new(),
            user_id: u.id.clone(),
            key: String::new(),
            kind: b.kind,
            album_id,
            asset_ids,
            description,
            password_hash,
            expires_at,
            allow_download: b.allow_download.unwrap_or(true),
            show_metadata: b.show_metadata.unwrap_or(true),
            created_at: String::new(),
        })?;
        node.webhooks.emit(
            &u.id,
            "share.created",
            serde_json::json!({"kind": "link", "linkId": link.id, "type": link.kind,
                               "albumId": link.album_id, "expiresAt": link.expires_at}),
        );
        let lib = node.catalog.lock()?;
        Ok((
            StatusCode::CREATED,
            Json(link_json(&node, &lib, &link, None)),
        ))
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateBody {
    description: Option<String>,
    password: Option<String>,
    #[serde(default = "absent")]
    expires_at: Value,
    allow_download: Option<bool>,
    show_metadata: Option<bool>,
    allow_upload: Option<bool>,
    /// Immich: expiresAt is only applied when this is true (its web sends both).
    change_expiry_time: Option<bool>,
}

fn absent() -> Value {
    Value::Bool(false)
}

async fn update(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    Json(b): Json<UpdateBody>,
) -> ApiResult<Json<Value>> {
    if b.allow_upload == Some(true) {
        return Err(ApiError::bad_request(
            "Uploading through a shared link is not supported by Tessera",
        ));
    }
    let expiry = match (&b.expires_at, b.change_expiry_time) {
        (Value::Bool(false), _) | (_, Some(false)) => None,
        (v, _) => Some(parse_expiry(v)?),
    };
    blocking(move || {
        let mut link = node
            .auth
            .shared_link_of(&u.id, &id)?
            .ok_or_else(link_not_found)?;
        if let Some(d) = b.description {
            link.description = Some(d.chars().take(2000).collect());
        }
        if let Some(p) = b.password {
            link.password_hash = if p.is_empty() {
                None
            } else {
                Some(hash_link_password(&p)?)
            };
        }
        if let Some(e) = expiry {
            link.expires_at = e;
        }
        if let Some(d) = b.allow_download {
            link.allow_download = d;
        }
        if let Some(m) = b.show_metadata {
            link.show_metadata = m;
        }
        node.auth.update_shared_link(&link)?;
        let lib = node.catalog.lock()?;
        Ok(Json(link_json(&node, &lib, &link, None)))
    })
    .await
}

async fn remove(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    blocking(move || {
        if node.auth.delete_shared_link(&u.id, &id)? {
            Ok(StatusCode::NO_CONTENT)
        } else {
            Err(link_not_found())
        }
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AssetIds {
    asset_ids: Vec<String>,
}

async fn add_assets(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    Json(b): Json<AssetIds>,
) -> ApiResult<Json<Value>> {
    change_assets(node, u, id, b.asset_ids, true).await
}

async fn remove_assets(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Path(id): Path<String>,
    Json(b): Json<AssetIds>,
) -> ApiResult<Json<Value>> {
    change_assets(node, u, id, b.asset_ids, false).await
}

/// Immich's `AssetIdsResponseDto` per id: `{assetId, success, error?}`.
async fn change_assets(
    node: AppState,
    u: crate::auth::User,
    id: String,
    ids: Vec<String>,
    add: bool,
) -> ApiResult<Json<Value>> {
    blocking(move || {
        let mut link = node
            .auth
            .shared_link_of(&u.id, &id)?
            .ok_or_else(link_not_found)?;
        if link.album_id.is_some() {
            return Err(ApiError::bad_request(
                "An album link shows the album: add photos to the album instead",
            ));
        }
        let mut out = Vec::new();
        for a in ids.iter().take(10_000) {
            let present = link.asset_ids.contains(a);
            let res = if add {
                if present {
                    Err("duplicate")
                } else if find_own_record(&node, &u, a).is_err() {
                    Err("no_permission")
                } else {
                    link.asset_ids.push(a.clone());
                    Ok(())
                }
            } else if present {
                link.asset_ids.retain(|x| x != a);
                Ok(())
            } else {
                Err("not_found")
            };
            out.push(match res {
                Ok(()) => json!({"assetId": a, "success": true}),
                Err(e) => json!({"assetId": a, "success": false, "error": e}),
            });
        }
        node.auth.update_shared_link(&link)?;
        Ok(Json(Value::Array(out)))
    })
    .await
}

#[derive(Deserialize)]
struct KeyQuery {
    key: Option<String>,
    password: Option<String>,
}

/// The link a visitor's key opens, as Immich's web asks for it (`?key=`, and `?password=`
/// for a protected link, which answers a token and sets the cookie).
async fn me(
    State(node): State<AppState>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    Query(q): Query<KeyQuery>,
) -> ApiResult<Response> {
    let key = q
        .key
        .ok_or_else(|| ApiError::bad_request("?key= (a shared link's key) is required"))?;
    match q.password {
        Some(pw) => login_with(node, &ext, &headers, key, pw).await,
        None => {
            let link = open_link(&node, &key, &headers)?;
            blocking(move || {
                let lib = node.catalog.lock()?;
                Ok(Json(link_json(&node, &lib, &link, None)).into_response())
            })
            .await
        }
    }
}

#[derive(Deserialize)]
struct PasswordBody {
    password: String,
}

async fn login(
    State(node): State<AppState>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    Query(q): Query<KeyQuery>,
    Json(b): Json<PasswordBody>,
) -> ApiResult<Response> {
    let key = q
        .key
        .ok_or_else(|| ApiError::bad_request("?key= (a shared link's key) is required"))?;
    login_with(node, &ext, &headers, key, b.password).await
}

/// Checks a link's password (throttled like account logins) and sets the token cookie.
async fn check_password(
    node: &AppState,
    ext: &axum::http::Extensions,
    key: &str,
    password: String,
) -> ApiResult<(SharedLink, String)> {
    let link = node
        .auth
        .shared_link_by_key(key)?
        .ok_or_else(link_not_found)?;
    if link.state(None) == LinkState::Expired {
        return Err(ApiError::new(
            StatusCode::GONE,
            "This shared link has expired",
        ));
    }
    let ip = format!("ip/{}", crate::http::auth::client_ip(ext));
    let which = format!("link/{}", link.id);
    if let Some(wait) = node.auth.throttle.blocked(&[&ip, &which]) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many wrong passwords: try again in {} minutes",
                wait.div_ceil(60)
            ),
        ));
    }
    let l = link.clone();
    let ok = crate::http::auth::hashing(move || l.verify_password(&password)).await?;
    if !ok {
        node.auth.throttle.failed(&[&ip, &which]);
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "Wrong password"));
    }
    node.auth.throttle.succeeded(&which);
    let token = link.token().unwrap_or_default();
    Ok((link, token))
}

fn token_cookie(headers: &HeaderMap, token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{LINK_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age=86400{}",
        crate::http::auth::cookie_attrs(headers)
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn login_with(
    node: AppState,
    ext: &axum::http::Extensions,
    headers: &HeaderMap,
    key: String,
    password: String,
) -> ApiResult<Response> {
    let (link, token) = check_password(&node, ext, &key, password).await?;
    let cookie = token_cookie(headers, &token);
    let body = blocking(move || {
        let lib = node.catalog.lock()?;
        Ok(link_json(&node, &lib, &link, Some(&token)))
    })
    .await?;
    let mut res = Json(body).into_response();
    res.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(res)
}

// ---- the page ----------------------------------------------------------------------------

/// The page's policy: no script at all, images and forms from this node only.
const PAGE_CSP: &str = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "body{margin:0;font:15px/1.4 system-ui,sans-serif;background:#111;color:#eee}\
header{padding:16px 20px}h1{margin:0;font-size:22px}p{margin:4px 0;color:#aaa}\
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:3px;padding:0 3px 20px}\
figure{margin:0;position:relative;aspect-ratio:1;background:#222}\
figure img{width:100%;height:100%;object-fit:cover;display:block}\
figure a.dl{position:absolute;right:4px;bottom:4px;background:#000a;color:#fff;padding:2px 6px;border-radius:4px;font-size:12px;text-decoration:none}\
form{padding:20px}input{font:inherit;padding:6px}button{font:inherit;padding:6px 12px}.err{color:#f88}";

fn page_response(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
<meta name=viewport content=\"width=device-width,initial-scale=1\">\
<meta name=referrer content=no-referrer><title>{}</title><style>{STYLE}</style></head>\
<body>{body}</body></html>",
        esc(title)
    );
    let mut res = (status, Html(html)).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn password_form(key: &str, error: Option<&str>) -> Response {
    let err = error
        .map(|e| format!("<p class=err>{}</p>", esc(e)))
        .unwrap_or_default();
    page_response(
        StatusCode::UNAUTHORIZED,
        "Password required",
        &format!(
            "<form method=post action=\"/share/{}\"><h1>This link is protected</h1>\
<p>Enter the password you were given.</p>{err}\
<input type=password name=password autofocus required aria-label=Password> \
<button type=submit>Open</button></form>",
            esc(key)
        ),
    )
}

async fn page(
    State(node): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    let link = match open_link(&node, &key, &headers) {
        Ok(l) => l,
        Err(e) => {
            return match e.status {
                StatusCode::UNAUTHORIZED => password_form(&key, None),
                StatusCode::GONE => page_response(
                    StatusCode::GONE,
                    "Link expired",
                    "<header><h1>This link has expired</h1><p>Ask whoever shared it for a new one.</p></header>",
                ),
                StatusCode::NOT_FOUND => page_response(
                    StatusCode::NOT_FOUND,
                    "Link not found",
                    "<header><h1>This link does not exist</h1><p>It may have been revoked.</p></header>",
                ),
                _ => e.into_response(),
            }
        }
    };
    let n = node.clone();
    let rendered = blocking(move || {
        let lib = n.catalog.lock()?;
        let records = link_records(&n, &lib, &link);
        let (title, about) = match link
            .album_id
            .as_deref()
            .and_then(|a| DocId::album(a).ok())
            .and_then(|d| lib.album(&d).ok().flatten())
        {
            Some(a) => (a.name, a.description),
            None => (
                link.description
                    .clone()
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| "Shared photos".into()),
                String::new(),
            ),
        };
        let by = n
            .auth
            .user(&link.user_id)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_default();
        Ok((title, about, by, records, link))
    })
    .await;
    let (title, about, by, records, link) = match rendered {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let k = esc(&key);
    let mut body = format!(
        "<header><h1>{}</h1>{}<p>{} {} shared by {}{}</p></header><main>",
        esc(&title),
        if about.is_empty() {
            String::new()
        } else {
            format!("<p>{}</p>", esc(&about))
        },
        records.len(),
        if records.len() == 1 {
            "photo"
        } else {
            "photos"
        },
        esc(&by),
        link.expires_at
            .as_deref()
            .map(|e| format!(" · until {}", esc(e.get(..10).unwrap_or(e))))
            .unwrap_or_default(),
    );
    for (i, r) in records.iter().enumerate() {
        // The first screenful loads at once; the rest as the visitor scrolls.
        let loading = if i < 24 { "eager" } else { "lazy" };
        let alt = if link.show_metadata {
            esc(r.filename.as_deref().unwrap_or("photo"))
        } else {
            "photo".into()
        };
        body.push_str(&format!(
            "<figure><a href=\"/api/assets/{id}/thumbnail?size=preview&amp;key={k}\">\
<img src=\"/api/assets/{id}/thumbnail?key={k}\" alt=\"{alt}\" loading={loading} decoding=async></a>",
            id = r.id
        ));
        if link.allow_download {
            body.push_str(&format!(
                "<a class=dl href=\"/api/assets/{}/original?key={k}\" download>⬇</a>",
                r.id
            ));
        }
        body.push_str("</figure>");
    }
    body.push_str("</main>");
    page_response(StatusCode::OK, &title, &body)
}

#[derive(Deserialize)]
struct PasswordForm {
    password: String,
}

/// The page's password form: a right password sets the token cookie and shows the page.
async fn page_login(
    State(node): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    Form(f): Form<PasswordForm>,
) -> Response {
    match check_password(&node, &ext, &key, f.password).await {
        Ok((_, token)) => {
            let mut res = Redirect::to(&format!("/share/{}", esc(&key))).into_response();
            res.headers_mut()
                .insert(header::SET_COOKIE, token_cookie(&headers, &token));
            res
        }
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            password_form(&key, Some("Wrong password"))
        }
        Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => {
            password_form(&key, Some(&e.message))
        }
        Err(e) if e.status == StatusCode::NOT_FOUND => page_response(
            StatusCode::NOT_FOUND,
            "Link not found",
            "<header><h1>This link does not exist</h1></header>",
        ),
        Err(e) if e.status == StatusCode::GONE => page_response(
            StatusCode::GONE,
            "Link expired",
            "<header><h1>This link has expired</h1></header>",
        ),
        Err(e) => e.into_response(),
    }
}
