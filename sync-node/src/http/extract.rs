//! What handlers share: who is calling ([`AuthUser`], [`MlAuth`]), the one lookup of a user's
//! asset record ([`find_record`]), serving a stored blob with ranges ([`serve_blob`]), and
//! running catalogue work off the async executor ([`blocking`]).

use crate::auth::User;
use crate::blobs::valid_hash;
use crate::catalog::CatalogError;
use crate::links::{LinkState, SharedLink};
use crate::node::Node;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::extract::Request;
use axum::http::header;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::response::Response;
use std::sync::Arc;
use tessera_core::AssetRecord;
use tessera_core::DocId;
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::http::*;

pub const COOKIE: &str = "tessera_access_token";

pub type AppState = Arc<Node>;

/// The authenticated user of a request: `x-api-key`, `Authorization: Bearer`, or the session
/// cookie set at login.
pub struct AuthUser(pub User);

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
                .all(|p| p == crate::http::ML_PERMISSION)
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

/// Who is looking at an asset: a signed-in user, or a visitor holding a shared link's key
/// (`?key=` on Immich's asset routes).
pub enum Viewer {
    User(User),
    Link(SharedLink),
}

#[derive(serde::Deserialize)]
struct KeyQuery {
    key: Option<String>,
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &AppState) -> Result<Self, ApiError> {
        let key = axum::extract::Query::<KeyQuery>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|q| q.0.key);
        if let Some(key) = key {
            return open_link(node, &key, &parts.headers).map(Viewer::Link);
        }
        let AuthUser(u) = AuthUser::from_request_parts(parts, node).await?;
        Ok(Viewer::User(u))
    }
}

/// The cookie carrying a shared link's password token (Immich's name).
pub const LINK_COOKIE: &str = "immich_shared_link_token";

pub(crate) fn link_cookie(headers: &HeaderMap) -> Option<String> {
    cookie(headers, &[LINK_COOKIE])
}

/// The value of the first cookie named one of `names`.
fn cookie(headers: &HeaderMap, names: &[&str]) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            names.contains(&k).then(|| v.to_owned())
        })
}

/// The link a key opens for this visitor: 404 when unknown or revoked (or its owner's account
/// is gone), 410 when expired, 401 when it has a password the visitor has not given.
pub(crate) fn open_link(node: &Node, key: &str, headers: &HeaderMap) -> ApiResult<SharedLink> {
    let link = node
        .auth
        .shared_link_by_key(key)?
        .filter(|l| matches!(node.auth.user(&l.user_id), Ok(Some(u)) if u.deleted_at.is_none()))
        .ok_or_else(|| ApiError::not_found("Shared link not found"))?;
    match link.state(link_cookie(headers).as_deref()) {
        LinkState::Open => Ok(link),
        LinkState::Expired => Err(ApiError::new(
            StatusCode::GONE,
            "This shared link has expired",
        )),
        LinkState::NeedsPassword => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "This shared link is protected by a password",
        )),
    }
}

/// The assets a link shows, each with the library that holds it: an album link shows the
/// album as it is now (nothing once it is deleted or its owner no longer made the link); an
/// individual link shows the photos chosen, while they are in their owner's library.
pub(crate) fn link_items(
    lib: &tessera_core::Library,
    link: &SharedLink,
) -> ApiResult<Vec<(String, String)>> {
    if let Some(album) = &link.album_id {
        let Ok(doc) = DocId::album(album) else {
            return Ok(Vec::new());
        };
        return Ok(match lib.album(&doc).map_err(CatalogError::from)? {
            Some(a) if a.owner == link.user_id => {
                a.items.into_iter().map(|i| (i.owner, i.asset)).collect()
            }
            _ => Vec::new(),
        });
    }
    Ok(link
        .asset_ids
        .iter()
        .map(|a| (link.user_id.clone(), a.clone()))
        .collect())
}

/// [`find_record`] for any viewer: a link holder sees exactly the link's assets (not in the
/// trash); anything else is "not found".
pub(crate) fn find_viewed(node: &Node, viewer: &Viewer, id: &str) -> ApiResult<AssetRecord> {
    match viewer {
        Viewer::User(u) => find_record(node, u, id),
        Viewer::Link(link) => {
            let missing = || ApiError::not_found("Asset not found");
            let lib = node.catalog.lock()?;
            let (owner, _) = link_items(&lib, link)?
                .into_iter()
                .find(|(_, a)| a == id)
                .ok_or_else(missing)?;
            crate::http::albums::item_record(node, &lib, &owner, id).ok_or_else(missing)
        }
    }
}

/// A signed-in admin (Immich's `/api/admin/*`); anyone else gets 403.
pub struct AdminUser(pub User);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &AppState) -> Result<Self, ApiError> {
        let AuthUser(u) = AuthUser::from_request_parts(parts, node).await?;
        if !u.is_admin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Only an admin can manage the household's accounts",
            ));
        }
        Ok(AdminUser(u))
    }
}

pub(crate) fn cookie_token(headers: &HeaderMap) -> Option<String> {
    cookie(headers, &[COOKIE, "immich_access_token"])
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").map(|t| t.trim().to_owned())
}

pub const ML_PERMISSION: &str = "ml";

/// An ML node: an `ml` API key of an admin.
pub struct MlAuth(pub User);

impl FromRequestParts<AppState> for MlAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &AppState) -> Result<Self, ApiError> {
        let key = parts
            .headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "An ML node authenticates with an x-api-key",
                )
            })?;
        let k = node
            .auth
            .api_key(key.trim())?
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "Invalid API key"))?;
        let user = node
            .auth
            .user(&k.user_id)?
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "Invalid API key"))?;
        if !k.permissions.iter().any(|p| p == ML_PERMISSION)
            || !user.is_admin
            || user.deleted_at.is_some()
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "This API key has no `ml` permission (an admin creates one for the ML node)",
            ));
        }
        Ok(MlAuth(user))
    }
}

/// Catalogue scans run off the async executor (the invariant in ARCHITECTURE.md).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await?
}

/// The one lookup of an asset a user may see: their own, or one in an album they own or are a
/// member of (another member's photo). Anything else is "not found", never "forbidden", so ids
/// of other people's photos cannot be probed.
pub(crate) fn find_record(node: &Node, user: &User, id: &str) -> ApiResult<AssetRecord> {
    lookup(node, user, id, true).map(|(_, r)| r)
}

/// [`find_record`] limited to the user's own library (what "do I have this photo" asks).
pub(crate) fn find_own_record(node: &Node, user: &User, id: &str) -> ApiResult<AssetRecord> {
    lookup(node, user, id, false).map(|(_, r)| r)
}

/// [`find_record`] with the user whose library holds the asset (the caller, or the album
/// member who added it).
pub(crate) fn find_record_and_owner(
    node: &Node,
    user: &User,
    id: &str,
) -> ApiResult<(String, AssetRecord)> {
    lookup(node, user, id, true)
}

fn lookup(node: &Node, user: &User, id: &str, shared: bool) -> ApiResult<(String, AssetRecord)> {
    let missing = || {
        ApiError::not_found(format!(
            "Asset not found: {}",
            id.chars().take(80).collect::<String>()
        ))
    };
    if !valid_hash(id) {
        return Err(missing());
    }
    let loc = match node.location_of(&user.id, id)? {
        Some(loc) => loc,
        None if !shared => return Err(missing()),
        None => {
            let album_owner = node
                .catalog
                .lock()?
                .shared_asset_owner(&user.id, id)
                .map_err(CatalogError::from)?;
            match album_owner {
                Some(owner) => node.location_of(&owner, id)?.ok_or_else(missing)?,
                // A partner's photo, in a month their share covers.
                None => {
                    let lib = node.catalog.lock()?;
                    node.locations(id)?
                        .into_iter()
                        .find(|l| lib.partner_covers(&l.owner, &user.id, &l.month))
                        .ok_or_else(missing)?
                }
            }
        }
    };
    let shard = DocId::shard(&loc.owner, &loc.month).map_err(ApiError::internal)?;
    let record = node
        .catalog
        .lock()?
        .asset_in(&shard, id)
        .map_err(CatalogError::from)?
        .filter(|r| !r.is_purged())
        .ok_or_else(missing)?;
    Ok((loc.owner, record))
}

pub(crate) fn record_of(node: &crate::Node, id: &str) -> ApiResult<AssetRecord> {
    let missing = || {
        ApiError::not_found(format!(
            "Asset not found: {}",
            id.chars().take(80).collect::<String>()
        ))
    };
    if !valid_hash(id) {
        return Err(missing());
    }
    let loc = node.location(id)?.ok_or_else(missing)?;
    let shard = DocId::shard(&loc.owner, &loc.month).map_err(ApiError::internal)?;
    node.catalog
        .lock()?
        .asset_in(&shard, id)
        .map_err(CatalogError::from)?
        .ok_or_else(missing)
}

pub(crate) fn content_disposition(filename: &str) -> HeaderValue {
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

/// Serves a stored blob with byte ranges: its file, or for an original in object storage a
/// cached copy fetched first (and hash-checked) — except a single byte range of one not
/// cached here, which is streamed from the store ([`remote_range`]). `missing` is the answer
/// when it is nowhere.
pub(crate) async fn serve_stored(
    node: &crate::node::Node,
    kind: crate::blobs::BlobKind,
    hash: &str,
    req: Request,
    mime: &str,
    missing: impl FnOnce() -> ApiError,
) -> ApiResult<Response> {
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let head = req.method() == axum::http::Method::HEAD;
    match remote_range(node, kind, hash, range.as_deref(), head, mime).await {
        Ok(Some(res)) => return Ok(res),
        Ok(None) => {}
        Err(e) if e.is_not_found() => return Err(missing()),
        Err(e) => return Err(e.into()),
    }
    let blob = match node.blobs.local_async(kind, hash).await {
        Ok(b) if b.path().is_file() => b,
        Ok(_) => return Err(missing()),
        Err(e) if e.is_not_found() => return Err(missing()),
        Err(e) => return Err(e.into()),
    };
    // The file is open once `serve_blob` returns: the copy may be evicted after that.
    let res = serve_blob(blob.path().to_owned(), req, mime).await;
    drop(blob);
    res
}

/// A byte range (`range`: the `Range` header; `head`: a HEAD request) of a blob held only in object storage, streamed from the
/// store as it arrives ([`crate::objects::ObjectTier::stream_range`]): a video in the bucket
/// starts playing and seeks without the node downloading all of it first. `None` when this
/// does not apply (no `Range`, a blob on this disk or cached, an empty one): the caller serves
/// the file. Several ranges or a malformed header are answered 416, as `ServeFile` does,
/// without fetching anything. `If-Range` needs no check: a blob's bytes never change under
/// its name. A whole download (no `Range`) is still fetched and checked against its hash
/// before the first byte is sent.
async fn remote_range(
    node: &crate::node::Node,
    kind: crate::blobs::BlobKind,
    hash: &str,
    range: Option<&str>,
    head: bool,
    mime: &str,
) -> Result<Option<Response>, crate::blobs::BlobError> {
    use crate::blobs::BlobError;
    let Some(range) = range else {
        return Ok(None);
    };
    let Some((tier, size)) = node.blobs.remote_only(kind, hash).filter(|(_, s)| *s > 0) else {
        return Ok(None);
    };
    let built = |r: axum::http::response::Builder, body: Body| {
        r.body(body).map_err(|e| BlobError::Config(e.to_string()))
    };
    // A suffix longer than the file means all of it (RFC 9110 14.1.2).
    let suffix_all = range
        .trim()
        .strip_prefix("bytes=-")
        .and_then(|n| n.trim().parse::<u64>().ok())
        .is_some_and(|n| n >= size);
    let range = if suffix_all { "bytes=0-" } else { range };
    let ranges = http_range_header::parse_range_header(range)
        .ok()
        .and_then(|p| p.validate(size).ok());
    let Some([r]) = ranges.as_deref() else {
        return built(
            Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{size}")),
            Body::empty(),
        )
        .map(Some);
    };
    let (start, end) = (*r.start(), *r.end());
    let res = Response::builder()
        .status(StatusCode::PARTIAL_CONTENT)
        .header(header::CONTENT_TYPE, mime)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"))
        .header(header::CONTENT_LENGTH, end - start + 1);
    if head {
        return built(res, Body::empty()).map(Some);
    }
    let stream = tier.stream_range(kind, hash, start..end + 1).await?;
    built(res, Body::from_stream(stream)).map(Some)
}

pub(crate) fn mime_guess_octet() -> mime::Mime {
    mime::APPLICATION_OCTET_STREAM
}
