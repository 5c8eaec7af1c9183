//! Router-level tests: the axum app driven with `tower::ServiceExt::oneshot`, no sockets.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tessera_sync_node::{http as api, Node, NodeConfig};
use tower::ServiceExt;

/// A router over a fresh node in a temporary directory (shared by the router-level tests).
pub(crate) struct App {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) router: axum::Router,
}

pub(crate) fn app() -> App {
    app_with_node().0
}

/// [`app`], with the node behind it (for tests that also look at the stores).
pub(crate) fn app_with_node() -> (App, std::sync::Arc<Node>) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(NodeConfig::new(dir.path().join("data"))).unwrap();
    let app = App {
        router: api::router(node.clone()),
        _dir: dir,
    };
    (app, node)
}

pub(crate) async fn call(
    app: &App,
    req: Request<Body>,
) -> (StatusCode, Value, axum::http::HeaderMap) {
    let res = app.router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        headers,
    )
}

fn post_json(path: &str, body: Value) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn auth_flow_and_error_shapes() {
    let app = app();
    let (s, b, _) = call(
        &app,
        Request::get("/api/server/ping")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!((s, b), (StatusCode::OK, json!({"res": "pong"})));
    let (_, cfg, _) = call(
        &app,
        Request::get("/api/server/config")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(cfg["isInitialized"], false);

    // Everything else needs auth, with Immich's error body.
    for path in [
        "/api/users/me",
        "/api/server/media-types",
        "/api/assets/abc",
    ] {
        let (s, b, _) = call(&app, Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(b["statusCode"], 401);
        assert_eq!(b["error"], "Unauthorized");
        assert!(b["message"]
            .as_str()
            .unwrap()
            .contains("Authentication required"));
    }

    let (s, b, _) = call(
        &app,
        post_json(
            "/api/auth/admin-sign-up",
            json!({"email": "x", "password": "longenough", "name": "A"}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b, _) = call(
        &app,
        post_json(
            "/api/auth/admin-sign-up",
            json!({"email": "a@b.c", "password": "short", "name": "A"}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["message"].as_str().unwrap().contains("8 characters"));
    let (s, b, _) = call(
        &app,
        post_json("/api/auth/admin-sign-up", json!({"email": "a@b.c"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "missing fields: {b}");
    let (s, b, _) = call(
        &app,
        post_json(
            "/api/auth/admin-sign-up",
            json!({"email": "A@b.c", "password": "longenough", "name": "Ann"}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["isAdmin"], true);
    assert_eq!(b["email"], "a@b.c");
    let (s, _, _) = call(
        &app,
        post_json(
            "/api/auth/admin-sign-up",
            json!({"email": "b@b.c", "password": "longenough", "name": "B"}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "only while no user exists");

    let (s, _, _) = call(
        &app,
        post_json(
            "/api/auth/login",
            json!({"email": "a@b.c", "password": "wrong password"}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, login, headers) = call(
        &app,
        post_json(
            "/api/auth/login",
            json!({"email": "a@b.c", "password": "longenough"}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let token = login["accessToken"].as_str().unwrap().to_owned();
    let cookie = headers["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with(&format!("{}={token}", api::COOKIE)) && cookie.contains("HttpOnly"));
    // Immich's own cookies too (its apps look for them).
    let all: Vec<&str> = headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    for want in [
        format!("immich_access_token={token};"),
        "immich_auth_type=password;".to_owned(),
        "immich_is_authenticated=true;".to_owned(),
    ] {
        assert!(
            all.iter().any(|c| c.starts_with(&want)),
            "{want} in {all:?}"
        );
    }

    // Bearer, cookie and API key all authenticate.
    let me = |h: (&str, String)| {
        Request::get("/api/users/me")
            .header(h.0, h.1)
            .body(Body::empty())
            .unwrap()
    };
    let (s, b, _) = call(&app, me(("authorization", format!("Bearer {token}")))).await;
    assert_eq!((s, b["name"].as_str()), (StatusCode::OK, Some("Ann")));
    let (s, _, _) = call(
        &app,
        me(("cookie", format!("other=1; {}={token}", api::COOKIE))),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let req = Request::post("/api/api-keys")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"name": "cli", "permissions": ["all"]}).to_string(),
        ))
        .unwrap();
    let (s, key, _) = call(&app, req).await;
    assert_eq!(s, StatusCode::CREATED);
    let secret = key["secret"].as_str().unwrap().to_owned();
    assert_eq!(key["apiKey"]["name"], "cli");
    let (s, _, _) = call(&app, me(("x-api-key", secret.clone()))).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b, _) = call(&app, me(("x-api-key", "forged".into()))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(b["message"], "Invalid API key");

    let (s, types, _) = call(
        &app,
        Request::get("/api/server/media-types")
            .header("x-api-key", &secret)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(types["image"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == ".heic"));
    assert!(types["video"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == ".mp4"));

    // Garbage on the sync endpoint is a 400 with a message, not a crash.
    let req = Request::post("/api/tessera/sync")
        .header("x-api-key", &secret)
        .body(Body::from(vec![0xff, 0, 1, 2]))
        .unwrap();
    let (s, b, _) = call(&app, req).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["message"].as_str().unwrap().starts_with("sync refused"));
    let (s, _, _) = call(
        &app,
        Request::get("/api/nope")
            .header("x-api-key", &secret)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Logout ends the session.
    let req = Request::post("/api/auth/logout")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    call(&app, req).await;
    let (s, _, _) = call(&app, me(("authorization", format!("Bearer {token}")))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

/// The PWA as `cargo xtask` builds it for release: content-hashed module and wasm with brotli
/// and gzip copies next to them. The node picks the copy by Accept-Encoding, lets browsers keep
/// hashed files for a year and makes them revalidate everything else.
#[tokio::test]
async fn pwa_is_served_precompressed_with_a_cache_policy() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("dist");
    std::fs::create_dir_all(&web).unwrap();
    let index = "<!doctype html><script type=\"module\">import init from '/tessera-app-1f2e3d4c5b6a7980.js'; init('/tessera-app-1f2e3d4c5b6a7980_bg.wasm');</script>";
    std::fs::write(web.join("index.html"), index).unwrap();
    std::fs::write(web.join("index.html.gz"), b"gzip of index").unwrap();
    let wasm = web.join("tessera-app-1f2e3d4c5b6a7980_bg.wasm");
    std::fs::write(&wasm, b"\0asm plain").unwrap();
    std::fs::write(wasm.with_extension("wasm.br"), b"brotli bytes").unwrap();
    std::fs::write(wasm.with_extension("wasm.gz"), b"gzip bytes").unwrap();
    std::fs::write(web.join("sw.js"), b"// sw").unwrap();
    let mut config = NodeConfig::new(dir.path().join("data"));
    config.web = Some(web.clone());
    let node = Node::open(config).unwrap();
    let router = api::router(node);
    let get = |path: &str, accept: &str| {
        let mut req = Request::get(path);
        if !accept.is_empty() {
            req = req.header("accept-encoding", accept);
        }
        let router = router.clone();
        let req = req.body(Body::empty()).unwrap();
        async move {
            let res = router.oneshot(req).await.unwrap();
            let headers = res.headers().clone();
            let status = res.status();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (status, headers, body)
        }
    };
    let wasm_path = "/tessera-app-1f2e3d4c5b6a7980_bg.wasm";
    let (status, headers, body) = get(wasm_path, "gzip, deflate, br").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"brotli bytes");
    assert_eq!(headers["content-encoding"], "br");
    assert_eq!(headers["content-type"], "application/wasm");
    assert_eq!(
        headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(headers["vary"], "accept-encoding");
    let (_, headers, body) = get(wasm_path, "gzip").await;
    assert_eq!(&body[..], b"gzip bytes");
    assert_eq!(headers["content-encoding"], "gzip");
    let (_, headers, body) = get(wasm_path, "").await;
    assert_eq!(&body[..], b"\0asm plain");
    assert!(headers.get("content-encoding").is_none());
    // index.html, also for the app's own routes, always revalidated, with the CSP allowing
    // exactly its inline loader.
    for path in ["/", "/index.html", "/albums/some-album"] {
        let (status, headers, body) = get(path, "gzip").await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers["cache-control"], "no-cache", "{path}");
        assert_eq!(&body[..], b"gzip of index", "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("'sha256-"), "{csp}");
    }
    let (_, headers, body) = get("/sw.js", "br").await;
    assert_eq!(&body[..], b"// sw");
    assert_eq!(headers["cache-control"], "no-cache");
    // The API is not the PWA's: no long-lived caching there.
    let (_, headers, _) = get("/api/server/ping", "br").await;
    assert!(headers.get("cache-control").is_none());
}
