//! The HTTP layer (axum): Immich's paths and shapes where Immich has the operation, so Immich
//! tools work against Tessera, plus Tessera's own `/api/tessera/*`, and the PWA everywhere
//! else. One router per feature; shared pieces in [`error`] (one error type with a stable JSON
//! body `{"statusCode", "error", "message"}`) and [`extract`] (who is calling, the one record
//! lookup, serving a blob). Every route is declared in [`access::ACCESS`] and checked by
//! [`access::enforce`] before its handler runs.

pub mod access;
mod activities;
mod albums;
mod assets;
mod auth;
mod browse;
mod error;
mod extract;
mod library;
mod links;
mod ml;
pub mod openapi;
mod partners;
mod peer;
mod people;
mod search;
mod server;
mod sync;
mod users;
mod webhooks;

pub use assets::asset_json;
pub use error::{ApiError, ApiResult};
pub(crate) use extract::{
    bearer, blocking, content_disposition, cookie_token, find_own_record, find_record,
    find_record_and_owner, find_viewed, link_items, open_link, record_of, serve_blob,
};
pub use extract::{
    AdminUser, AppState, AuthUser, MlAuth, Viewer, COOKIE, LINK_COOKIE, ML_PERMISSION,
};

use axum::http::header;
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Json;
use axum::Router;
use base64::Engine;
use serde_json::json;
use tower_http::services::ServeDir;
use tower_http::services::ServeFile;
use tower_http::set_header::SetResponseHeaderLayer;

/// The whole HTTP surface: API under `/api`, the PWA everywhere else.
pub fn router(node: AppState) -> Router {
    let api = Router::new()
        .merge(server::routes())
        .merge(sync::routes())
        .merge(auth::routes())
        .merge(users::routes())
        .merge(
            albums::routes().route_layer(axum::middleware::from_fn_with_state(
                node.clone(),
                albums::webhook_events,
            )),
        )
        .merge(activities::routes())
        .merge(partners::routes())
        .merge(links::routes())
        .merge(assets::routes())
        .merge(library::routes())
        .merge(people::routes())
        .merge(search::routes())
        .merge(browse::routes())
        .merge(ml::routes())
        .merge(peer::routes())
        .merge(webhooks::routes())
        .merge(openapi::routes())
        // Every matched route is checked against the access table (API-key scopes, CSRF).
        .route_layer(axum::middleware::from_fn_with_state(
            node.clone(),
            access::enforce,
        ))
        .fallback(|| async { ApiError::not_found("No such API endpoint") });
    let mut app = Router::new()
        .route(
            "/.well-known/immich",
            get(|| async { Json(json!({"api": {"endpoint": "/api"}})) }),
        )
        .nest("/api", api)
        // A shared link's page: rendered here, no wasm, for visitors without an account.
        .merge(links::page_routes());
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
