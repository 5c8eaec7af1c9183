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
mod pwa;
mod search;
mod server;
mod sync;
mod users;
mod webhooks;

pub use assets::asset_json;
pub use error::{ApiError, ApiResult};
pub(crate) use extract::{
    bearer, blocking, content_disposition, cookie_token, find_own_record, find_record,
    find_record_and_owner, find_viewed, link_items, open_link, record_of, serve_blob, serve_stored,
};
pub use extract::{
    AdminUser, AppState, AuthUser, MlAuth, Viewer, COOKIE, LINK_COOKIE, ML_PERMISSION,
};
pub use pwa::{cache_policy, csp_for, CSP};

use axum::http::header;
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Json;
use axum::Router;
use serde_json::json;
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
        Some(web) => app.merge(pwa::routes(&web)),
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
