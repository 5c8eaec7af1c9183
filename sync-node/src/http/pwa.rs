//! Serving the PWA: the files trunk wrote to `dist` (and the brotli/gzip copies that
//! `cargo xtask` writes next to them at release time), with a cache policy per file and the
//! page's Content-Security-Policy.
//!
//! Cache policy ([`cache_policy`]): the app's module and wasm carry a content hash in their
//! names (`tessera-app-<hash>_bg.wasm`), so a browser may keep them for a year without asking
//! again (`immutable`). Everything else — `index.html` (also the answer for every app route),
//! the service worker, the search worker (a worker's name cannot be hashed), icons — is
//! `no-cache`: the browser revalidates it (`If-Modified-Since` → 304), so a new version
//! arrives on the next load and an unchanged one costs a round trip, not a download.

use axum::extract::Request;
use axum::http::header;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use base64::Engine;
use std::path::Path;
use tower_http::services::ServeDir;
use tower_http::services::ServeFile;
use tower_http::set_header::SetResponseHeaderLayer;

/// `Cache-Control` for content-addressed files.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` for everything else the PWA serves.
pub const REVALIDATE: &str = "no-cache";

/// The PWA under `/`: precompressed copies when the browser accepts them (`x.wasm.br`,
/// `x.wasm.gz`; the plain file otherwise), `index.html` for any path that is not a file (the
/// app's own routes), the cache policy and the CSP.
pub fn routes<S: Clone + Send + Sync + 'static>(web: &Path) -> Router<S> {
    let index = web.join("index.html");
    // The PWA's pages: only this node's own scripts (wasm needs 'wasm-unsafe-eval'),
    // connections to this node and its relay (any host: the relay's port differs), no
    // framing by other sites.
    let csp =
        HeaderValue::from_str(&csp_for(&index)).unwrap_or_else(|_| HeaderValue::from_static(CSP));
    let files = ServeDir::new(web)
        .precompressed_br()
        .precompressed_gzip()
        .fallback(
            ServeFile::new(index)
                .precompressed_br()
                .precompressed_gzip(),
        );
    Router::new()
        .fallback_service(files)
        .layer(axum::middleware::from_fn(cache_headers))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            csp,
        ))
}

async fn cache_headers(request: Request, next: Next) -> Response {
    let policy = cache_policy(request.uri().path());
    let mut response = next.run(request).await;
    if response.status().is_success() || response.status() == axum::http::StatusCode::NOT_MODIFIED {
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
        // The same path answers with brotli, gzip or plain bytes by the request's
        // Accept-Encoding: a shared cache must key on it.
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    response
}

/// The `Cache-Control` value for a path of the PWA: [`IMMUTABLE`] for trunk's content-hashed
/// files (`name-<hex hash>.js`, `name-<hex hash>_bg.wasm`), [`REVALIDATE`] for the rest.
pub fn cache_policy(path: &str) -> &'static str {
    let file = path.rsplit('/').next().unwrap_or_default();
    let stem = file
        .strip_suffix("_bg.wasm")
        .or_else(|| file.strip_suffix(".js"))
        .or_else(|| file.strip_suffix(".css"));
    let hashed = stem
        .and_then(|s| s.rsplit_once('-'))
        .is_some_and(|(name, hash)| {
            !name.is_empty()
                && (8..=16).contains(&hash.len())
                && hash
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    if hashed {
        IMMUTABLE
    } else {
        REVALIDATE
    }
}

/// The PWA's Content-Security-Policy for a built `index.html`: [`CSP`] with the hashes of the
/// page's inline scripts (trunk's module loader) allowed, and no other inline script.
pub fn csp_for(index: &Path) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_files_are_immutable_and_the_rest_revalidates() {
        assert_eq!(
            cache_policy("/tessera-app-8c1f3e2a9b7d6e01_bg.wasm"),
            IMMUTABLE
        );
        assert_eq!(cache_policy("/tessera-app-c1f3e2a9b7d6e01.js"), IMMUTABLE);
        for path in [
            "/",
            "/index.html",
            "/sw.js",
            "/search-worker.js",
            "/search-worker_bg.wasm",
            "/tessera-app.js",
            "/outbox.js",
            "/world.svg",
            "/albums/abc",
            "/people/some-person",
            "/tessera-app-nothex!_bg.wasm",
        ] {
            assert_eq!(cache_policy(path), REVALIDATE, "{path}");
        }
    }
}
