//! What handlers share: who is calling ([`AuthUser`], [`MlAuth`]), the one lookup of a user's
//! asset record ([`find_record`]), serving a stored blob with ranges ([`serve_blob`]), and
//! running catalogue work off the async executor ([`blocking`]).

use crate::auth::User;
use crate::blobs::valid_hash;
use crate::catalog::CatalogError;
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
            let owner = node
                .catalog
                .lock()?
                .shared_asset_owner(&user.id, id)
                .map_err(CatalogError::from)?
                .ok_or_else(missing)?;
            node.location_of(&owner, id)?.ok_or_else(missing)?
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

pub(crate) fn mime_guess_octet() -> mime::Mime {
    mime::APPLICATION_OCTET_STREAM
}
