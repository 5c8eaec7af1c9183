//! Who may call which route: the one access table, enforced by one middleware.
//!
//! Every API route is listed in [`ACCESS`] with what it requires. The middleware runs after
//! routing (so it sees the matched path pattern) and before any handler:
//! - a method/path missing from the table answers 405 — a new route without an entry fails
//!   closed (and the access-table test, which reads every `.route(…)` in the source, fails);
//! - an API key must carry `all` or the route's Immich permission (`asset.read`, `asset.upload`,
//!   …), else 403; `ml` keys reach only [`Access::Ml`] routes;
//! - a cookie-authenticated state change must come from the same origin (CSRF): the browser's
//!   `Sec-Fetch-Site`, else `Origin` against `Host`. API keys and bearer tokens are exempt (a
//!   browser never attaches them on its own).
//!
//! Handlers still authenticate (the `AuthUser`/`MlAuth` extractors) and check ownership and
//! admin rights; the table adds the scope of the credential.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::{ApiError, AppState};

/// What a route requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not (ping, login, sign-up, public server info).
    Public,
    /// Any signed-in user or API key of theirs, whatever its permissions.
    Signed,
    /// A signed-in user; an API key needs `all` or this Immich permission.
    Perm(&'static str),
    /// A signed-in user; an API key needs `all` (whole-library sync, pairing, minting devices).
    All,
    /// An ML node's `ml` key (checked by the `MlAuth` extractor).
    Ml,
    /// A login session only, never an API key (Immich's sync stream: its checkpoints belong to
    /// a session).
    Session,
}

/// Immich's permission names Tessera knows (its OpenAPI `Permission` enum, the ones that have a
/// Tessera route today plus those clients commonly request), and Tessera's own `ml`.
pub const PERMISSIONS: &[&str] = &[
    "all",
    "ml",
    "activity.create",
    "adminUser.create",
    "adminUser.read",
    "adminUser.update",
    "adminUser.delete",
    "activity.read",
    "activity.update",
    "activity.delete",
    "activity.statistics",
    "apiKey.create",
    "apiKey.read",
    "apiKey.update",
    "apiKey.delete",
    "asset.read",
    "asset.update",
    "asset.delete",
    "asset.statistics",
    "asset.share",
    "asset.view",
    "asset.download",
    "asset.upload",
    "asset.replace",
    "album.create",
    "album.read",
    "album.update",
    "album.delete",
    "album.statistics",
    "album.share",
    "album.download",
    "albumAsset.create",
    "albumAsset.delete",
    "albumUser.create",
    "albumUser.update",
    "albumUser.delete",
    "auth.changePassword",
    "duplicate.read",
    "duplicate.delete",
    "face.create",
    "face.read",
    "face.update",
    "face.delete",
    "library.read",
    "map.read",
    "memory.read",
    "partner.create",
    "partner.read",
    "partner.update",
    "partner.delete",
    "person.create",
    "person.read",
    "person.update",
    "person.delete",
    "person.merge",
    "server.about",
    "server.storage",
    "session.create",
    "session.read",
    "session.update",
    "session.delete",
    "sharedLink.create",
    "sharedLink.read",
    "sharedLink.update",
    "sharedLink.delete",
    "tag.read",
    "timeline.read",
    "timeline.download",
    "trash.delete",
    "trash.restore",
    "user.read",
    "user.update",
    "userPreference.read",
    "userPreference.update",
];

/// `(method, path under /api, access)` for every API route.
pub const ACCESS: &[(&str, &str, Access)] = &[
    ("GET", "/server/ping", Access::Public),
    ("GET", "/openapi.json", Access::Public),
    ("GET", "/docs", Access::Public),
    ("GET", "/server/version", Access::Public),
    ("GET", "/server/config", Access::Public),
    ("GET", "/server/media-types", Access::Signed),
    ("POST", "/auth/admin-sign-up", Access::Public),
    ("POST", "/auth/login", Access::Public),
    ("POST", "/auth/logout", Access::Public),
    (
        "POST",
        "/auth/change-password",
        Access::Perm("auth.changePassword"),
    ),
    ("POST", "/api-keys", Access::Perm("apiKey.create")),
    ("GET", "/api-keys", Access::Perm("apiKey.read")),
    ("GET", "/api-keys/me", Access::Signed),
    ("GET", "/api-keys/{id}", Access::Perm("apiKey.read")),
    ("PUT", "/api-keys/{id}", Access::Perm("apiKey.update")),
    ("DELETE", "/api-keys/{id}", Access::Perm("apiKey.delete")),
    ("GET", "/sessions", Access::Perm("session.read")),
    ("DELETE", "/sessions", Access::Perm("session.delete")),
    ("DELETE", "/sessions/{id}", Access::Perm("session.delete")),
    (
        "GET",
        "/assets/statistics",
        Access::Perm("asset.statistics"),
    ),
    ("GET", "/users/me", Access::Perm("user.read")),
    ("GET", "/activities", Access::Perm("activity.read")),
    ("POST", "/activities", Access::Perm("activity.create")),
    (
        "GET",
        "/activities/statistics",
        Access::Perm("activity.statistics"),
    ),
    (
        "DELETE",
        "/activities/{id}",
        Access::Perm("activity.delete"),
    ),
    ("GET", "/albums", Access::Perm("album.read")),
    ("POST", "/albums", Access::Perm("album.create")),
    (
        "GET",
        "/albums/statistics",
        Access::Perm("album.statistics"),
    ),
    ("GET", "/albums/{id}", Access::Perm("album.read")),
    ("PATCH", "/albums/{id}", Access::Perm("album.update")),
    ("DELETE", "/albums/{id}", Access::Perm("album.delete")),
    (
        "PUT",
        "/albums/{id}/assets",
        Access::Perm("albumAsset.create"),
    ),
    (
        "DELETE",
        "/albums/{id}/assets",
        Access::Perm("albumAsset.delete"),
    ),
    (
        "PUT",
        "/albums/{id}/users",
        Access::Perm("albumUser.create"),
    ),
    (
        "PUT",
        "/albums/{id}/user/{user_id}",
        Access::Perm("albumUser.update"),
    ),
    (
        "DELETE",
        "/albums/{id}/user/{user_id}",
        Access::Perm("albumUser.delete"),
    ),
    (
        "POST",
        "/tessera/assets/{id}/save",
        Access::Perm("asset.upload"),
    ),
    ("GET", "/server/features", Access::Public),
    ("GET", "/server/storage", Access::Perm("server.storage")),
    (
        "GET",
        "/tessera/admin/scrub",
        Access::Perm("server.storage"),
    ),
    (
        "POST",
        "/tessera/admin/scrub",
        Access::Perm("server.storage"),
    ),
    ("GET", "/server/about", Access::Perm("server.about")),
    ("POST", "/auth/validateToken", Access::Signed),
    (
        "GET",
        "/users/me/preferences",
        Access::Perm("userPreference.read"),
    ),
    // Webhooks (Tessera's): the user's own; API keys need `all`.
    ("GET", "/tessera/webhooks", Access::All),
    ("POST", "/tessera/webhooks", Access::All),
    ("PUT", "/tessera/webhooks/{id}", Access::All),
    ("DELETE", "/tessera/webhooks/{id}", Access::All),
    ("POST", "/tessera/webhooks/{id}/test", Access::All),
    ("GET", "/tessera/webhooks/{id}/deliveries", Access::All),
    // Immich's sync stream: a login session's (API keys are refused by the extractor).
    ("POST", "/sync/stream", Access::Session),
    ("GET", "/sync/ack", Access::Session),
    ("POST", "/sync/ack", Access::Session),
    ("DELETE", "/sync/ack", Access::Session),
    ("GET", "/partners", Access::Perm("partner.read")),
    ("POST", "/partners", Access::Perm("partner.create")),
    ("POST", "/partners/{id}", Access::Perm("partner.create")),
    ("PUT", "/partners/{id}", Access::Perm("partner.update")),
    ("DELETE", "/partners/{id}", Access::Perm("partner.delete")),
    ("GET", "/shared-links", Access::Perm("sharedLink.read")),
    ("POST", "/shared-links", Access::Perm("sharedLink.create")),
    ("GET", "/shared-links/me", Access::Public),
    ("POST", "/shared-links/login", Access::Public),
    ("GET", "/shared-links/{id}", Access::Perm("sharedLink.read")),
    (
        "PATCH",
        "/shared-links/{id}",
        Access::Perm("sharedLink.update"),
    ),
    (
        "DELETE",
        "/shared-links/{id}",
        Access::Perm("sharedLink.delete"),
    ),
    (
        "PUT",
        "/shared-links/{id}/assets",
        Access::Perm("sharedLink.update"),
    ),
    (
        "DELETE",
        "/shared-links/{id}/assets",
        Access::Perm("sharedLink.update"),
    ),
    ("PUT", "/users/me", Access::Perm("user.update")),
    ("GET", "/users", Access::Perm("user.read")),
    ("GET", "/users/{id}", Access::Perm("user.read")),
    ("GET", "/admin/users", Access::Perm("adminUser.read")),
    ("POST", "/admin/users", Access::Perm("adminUser.create")),
    ("GET", "/admin/users/{id}", Access::Perm("adminUser.read")),
    ("PUT", "/admin/users/{id}", Access::Perm("adminUser.update")),
    (
        "DELETE",
        "/admin/users/{id}",
        Access::Perm("adminUser.delete"),
    ),
    (
        "POST",
        "/admin/users/{id}/restore",
        Access::Perm("adminUser.delete"),
    ),
    (
        "POST",
        "/assets/bulk-upload-check",
        Access::Perm("asset.upload"),
    ),
    ("POST", "/assets", Access::Perm("asset.upload")),
    ("PUT", "/assets", Access::Perm("asset.update")),
    ("DELETE", "/assets", Access::Perm("asset.delete")),
    ("GET", "/assets/{id}", Access::Perm("asset.read")),
    (
        "GET",
        "/assets/{id}/original",
        Access::Perm("asset.download"),
    ),
    ("GET", "/assets/{id}/thumbnail", Access::Perm("asset.view")),
    ("GET", "/assets/{id}/motion", Access::Perm("asset.view")),
    (
        "GET",
        "/assets/{id}/video/playback",
        Access::Perm("asset.view"),
    ),
    ("POST", "/tessera/sync", Access::All),
    ("POST", "/tessera/ml/sync", Access::Ml),
    ("GET", "/tessera/ml/assets/{id}/preview", Access::Ml),
    ("PUT", "/tessera/ml/blobs/{hash}", Access::Ml),
    ("GET", "/tessera/ml/blobs/{hash}", Access::Ml),
    ("GET", "/tessera/ml/progress", Access::Perm("asset.read")),
    ("GET", "/tessera/blobs/{hash}", Access::Perm("asset.view")),
    ("GET", "/people", Access::Perm("person.read")),
    ("GET", "/people/{id}", Access::Perm("person.read")),
    ("PUT", "/people/{id}", Access::Perm("person.update")),
    ("GET", "/people/{id}/thumbnail", Access::Perm("person.read")),
    ("POST", "/people/{id}/merge", Access::Perm("person.merge")),
    ("GET", "/faces", Access::Perm("face.read")),
    ("PUT", "/faces/{id}", Access::Perm("face.update")),
    ("POST", "/search/smart", Access::Perm("asset.read")),
    ("POST", "/search/metadata", Access::Perm("asset.read")),
    ("GET", "/search/suggestions", Access::Perm("asset.read")),
    ("GET", "/search/explore", Access::Perm("asset.read")),
    ("GET", "/search/person", Access::Perm("person.read")),
    ("GET", "/search/cities", Access::Perm("asset.read")),
    ("POST", "/tessera/search/embed", Access::Perm("asset.read")),
    ("GET", "/map/markers", Access::Perm("asset.read")),
    ("GET", "/memories", Access::Perm("memory.read")),
    ("GET", "/timeline/buckets", Access::Perm("asset.read")),
    ("GET", "/timeline/bucket", Access::Perm("asset.read")),
    ("GET", "/tessera/peer", Access::Public),
    ("POST", "/tessera/devices", Access::All),
    ("GET", "/tessera/devices", Access::Perm("session.read")),
    (
        "DELETE",
        "/tessera/devices/{id}",
        Access::Perm("session.delete"),
    ),
    ("POST", "/pairing/tickets", Access::All),
    ("POST", "/trash/empty", Access::Perm("trash.delete")),
    ("POST", "/trash/restore", Access::Perm("trash.restore")),
    (
        "POST",
        "/trash/restore/assets",
        Access::Perm("trash.restore"),
    ),
    ("GET", "/duplicates", Access::Perm("duplicate.read")),
    (
        "DELETE",
        "/duplicates/{id}",
        Access::Perm("duplicate.delete"),
    ),
    (
        "GET",
        "/tessera/settings",
        Access::Perm("userPreference.read"),
    ),
    (
        "PUT",
        "/tessera/settings",
        Access::Perm("userPreference.update"),
    ),
];

/// The table entry of a matched route (`path` without the `/api` prefix).
pub fn access_of(method: &Method, path: &str) -> Option<Access> {
    let path = path.strip_prefix("/api").unwrap_or(path);
    // HEAD is served by GET routes.
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    ACCESS
        .iter()
        .find(|(m, p, _)| *m == method && *p == path)
        .map(|(_, _, a)| *a)
}

/// Whether an API key's permissions satisfy a route.
pub fn key_allows(permissions: &[String], access: Access) -> bool {
    let has = |p: &str| permissions.iter().any(|x| x == p);
    match access {
        Access::Public => true,
        Access::Ml => has(crate::http::ML_PERMISSION),
        Access::Session => false,
        _ if has("all") => true,
        Access::Signed => !permissions.is_empty(),
        Access::Perm(p) => has(p),
        Access::All => false,
    }
}

fn forbidden(m: impl Into<String>) -> Response {
    ApiError::new(StatusCode::FORBIDDEN, m).into_response()
}

/// Cross-site check for cookie-authenticated writes.
pub fn same_origin(method: &Method, headers: &HeaderMap) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return matches!(site, "same-origin" | "none");
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        // No Origin and no Sec-Fetch-Site: not a browser form or fetch (curl, scripts).
        None => true,
        Some(origin) => {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
            !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
        }
    }
}

/// The middleware (a `route_layer` on the API router).
pub async fn enforce(State(node): State<AppState>, req: Request, next: Next) -> Response {
    let Some(path) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
    else {
        return next.run(req).await;
    };
    let Some(access) = access_of(req.method(), &path) else {
        // Not in the table: either a method this path does not route (405 is the truth), or a
        // route someone forgot to list — refused all the same (fail closed), and the
        // access-table test, which reads every `.route(…)` in the source, names it.
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed on {path}", req.method()),
        )
        .into_response();
    };
    if access == Access::Public {
        return next.run(req).await;
    }
    let headers = req.headers();
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        let key = match node.auth.api_key(key.trim()) {
            Ok(Some(k)) => k,
            // Unknown keys are answered by the handler's extractor (401).
            Ok(None) => return next.run(req).await,
            Err(e) => return ApiError::from(e).into_response(),
        };
        if access == Access::Session {
            return forbidden("Sync endpoints cannot be used with API keys");
        }
        if !key_allows(&key.permissions, access) {
            let need = match access {
                Access::Perm(p) => format!("the `{p}` permission (or `all`)"),
                Access::All => "the `all` permission".to_owned(),
                Access::Ml => "the `ml` permission".to_owned(),
                _ => "a permission".to_owned(),
            };
            return forbidden(format!(
                "This API key cannot {} {path}: it needs {need}",
                req.method()
            ));
        }
    } else if crate::http::bearer(headers).is_none()
        && crate::http::cookie_token(headers).is_some()
        && !same_origin(req.method(), headers)
    {
        return forbidden(
            "Cross-site request refused (the session cookie is only good on this node's own pages)",
        );
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_no_duplicates_and_known_permissions() {
        for (i, (m, p, a)) in ACCESS.iter().enumerate() {
            assert!(
                !ACCESS[..i].iter().any(|(m2, p2, _)| m2 == m && p2 == p),
                "{m} {p} twice"
            );
            if let Access::Perm(x) = a {
                assert!(PERMISSIONS.contains(x), "{x} is not a known permission");
            }
        }
    }

    #[test]
    fn scoped_keys() {
        let k = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(key_allows(&k(&["all"]), Access::Perm("asset.read")));
        assert!(key_allows(&k(&["asset.read"]), Access::Perm("asset.read")));
        assert!(!key_allows(
            &k(&["asset.read"]),
            Access::Perm("asset.upload")
        ));
        assert!(!key_allows(&k(&["asset.read"]), Access::All));
        assert!(!key_allows(&k(&["all"]), Access::Ml));
        assert!(key_allows(&k(&["ml"]), Access::Ml));
        assert!(!key_allows(&k(&["ml"]), Access::Perm("asset.read")));
        assert!(key_allows(&k(&["ml"]), Access::Signed));
    }

    #[test]
    fn csrf() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, v.parse().unwrap());
            }
            m
        };
        assert!(same_origin(
            &Method::GET,
            &h(&[("sec-fetch-site", "cross-site")])
        ));
        assert!(!same_origin(
            &Method::POST,
            &h(&[("sec-fetch-site", "same-site")])
        ));
        assert!(same_origin(
            &Method::POST,
            &h(&[("sec-fetch-site", "same-origin")])
        ));
        assert!(!same_origin(
            &Method::POST,
            &h(&[
                ("origin", "http://evil.example"),
                ("host", "127.0.0.1:2283")
            ])
        ));
        assert!(same_origin(
            &Method::POST,
            &h(&[
                ("origin", "http://127.0.0.1:2283"),
                ("host", "127.0.0.1:2283")
            ])
        ));
        assert!(same_origin(&Method::POST, &h(&[])));
    }
}
