//! The access table against the real router: every route the source declares has an entry,
//! and every entry behaves as declared for each kind of caller (anonymous, a session, a key
//! with `all`, a key scoped to one unrelated permission, an `ml` key). Plus the credential
//! life cycle: scoped keys cannot mint more, keys and sessions can be listed and revoked,
//! changing the password ends the other sessions, logins are throttled, cookie writes are
//! same-origin only, and stored media is served `nosniff`.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{json, Value};
use tessera_sync_node::http as api;
use tessera_sync_node::http::access::{Access, ACCESS};

use crate::http::{app, call};

pub(crate) fn req(
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    body: Option<Value>,
) -> Request<Body> {
    let mut r = Request::builder().method(method).uri(path);
    if let Some((h, v)) = auth {
        r = r.header(h, v);
    }
    match body {
        Some(b) => r
            .header("content-type", "application/json")
            .body(Body::from(b.to_string()))
            .unwrap(),
        None => r.body(Body::empty()).unwrap(),
    }
}

/// Every `(METHOD, path)` the sync node's source routes: each `.route("…", …)` call, with the
/// method routers (`get(`, `post(`, `.put(`, …) inside its parentheses.
fn declared_routes() -> Vec<(String, String)> {
    let dir = tessera_tests::workspace_root().join("sync-node/src");
    let mut out = Vec::new();
    let mut files = vec![dir];
    while let Some(d) = files.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                files.push(p);
                continue;
            }
            if p.extension().and_then(|x| x.to_str()) != Some("rs") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let mut rest = text.as_str();
            while let Some(i) = rest.find(".route(") {
                rest = &rest[i + 7..];
                // The call's arguments: up to the matching close parenthesis.
                let mut depth = 1;
                let mut end = rest.len();
                for (j, c) in rest.char_indices() {
                    match c {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                end = j;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let args = &rest[..end];
                let Some(q) = args.find('"') else { continue };
                if !args[..q].trim().is_empty() {
                    continue;
                }
                let Some(qe) = args[q + 1..].find('"') else {
                    continue;
                };
                let path = &args[q + 1..q + 1 + qe];
                let body = &args[q + 1 + qe..];
                for m in ["get", "post", "put", "delete", "patch"] {
                    let pat = format!("{m}(");
                    let mut b = body;
                    while let Some(k) = b.find(&pat) {
                        let before = body.len() - b.len() + k;
                        let prev = body[..before].chars().next_back().unwrap_or(' ');
                        if !(prev.is_alphanumeric() || prev == '_') {
                            out.push((m.to_uppercase(), path.to_owned()));
                        }
                        b = &b[k + pat.len()..];
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Fills `{id}`-style parameters with a syntactically valid value.
fn concrete(path: &str) -> String {
    let hash = "0".repeat(64);
    path.replace("{id}", &hash).replace("{hash}", &hash)
}

#[tokio::test]
async fn every_route_is_in_the_access_table_and_behaves_as_declared() {
    // The table covers the source, both ways (the "/.well-known/immich" route and the shared
    // link page "/share/{key}" are outside /api; tests/it/sharing.rs covers the page).
    let routes: Vec<(String, String)> = declared_routes()
        .into_iter()
        .filter(|(_, p)| !p.starts_with("/.well-known") && !p.starts_with("/share/"))
        .collect();
    assert!(routes.len() > 40, "route scan found too little: {routes:?}");
    for (m, p) in &routes {
        assert!(
            ACCESS.iter().any(|(am, ap, _)| am == m && ap == p),
            "{m} {p} has no entry in sync-node/src/http/access.rs ACCESS"
        );
    }
    for (m, p, _) in ACCESS {
        assert!(
            routes.iter().any(|(dm, dp)| dm == m && dp == p),
            "ACCESS lists {m} {p}, which no router declares"
        );
    }
    let app = app();
    let (s, _, _) = call(
        &app,
        req(
            "POST",
            "/api/auth/admin-sign-up",
            None,
            Some(
                json!({"email": "admin@example.com", "password": "correct horse", "name": "Admin"}),
            ),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, login, _) = call(
        &app,
        req(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"email": "admin@example.com", "password": "correct horse"})),
        ),
    )
    .await;
    let token = login["accessToken"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    let mut keys = std::collections::BTreeMap::new();
    for (name, perms) in [
        ("all", json!(["all"])),
        ("scoped", json!(["tag.read"])),
        ("ml", json!(["ml"])),
    ] {
        let (s, k, _) = call(
            &app,
            req(
                "POST",
                "/api/api-keys",
                Some(("authorization", &bearer)),
                Some(json!({"name": name, "permissions": perms})),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{k}");
        keys.insert(name, k["secret"].as_str().unwrap().to_owned());
    }

    let mut cells = 0;
    for (method, path, access) in ACCESS {
        // Routes that end the caller's own credentials would disturb the following checks.
        if matches!(
            *path,
            "/auth/logout" | "/sessions" | "/sessions/{id}" | "/auth/change-password"
        ) && *method != "GET"
        {
            continue;
        }
        let uri = format!("/api{}", concrete(path));
        let body = (*method != "GET").then(|| json!({}));
        // Anonymous.
        let (s, b, _) = call(&app, req(method, &uri, None, body.clone())).await;
        cells += 1;
        match access {
            Access::Public => assert!(
                s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN,
                "{method} {path} anonymous: {s} {b}"
            ),
            _ => assert_eq!(
                s,
                StatusCode::UNAUTHORIZED,
                "{method} {path} anonymous: {b}"
            ),
        }
        // A key scoped to an unrelated permission.
        let (s, b, _) = call(
            &app,
            req(
                method,
                &uri,
                Some(("x-api-key", &keys["scoped"])),
                body.clone(),
            ),
        )
        .await;
        cells += 1;
        match access {
            Access::Public | Access::Signed => {
                assert_ne!(s, StatusCode::FORBIDDEN, "{method} {path} scoped: {b}")
            }
            _ => assert_eq!(
                s,
                StatusCode::FORBIDDEN,
                "{method} {path} scoped key: {s} {b}"
            ),
        }
        // An ML key reaches only the ML routes.
        let (s, b, _) = call(
            &app,
            req(method, &uri, Some(("x-api-key", &keys["ml"])), body.clone()),
        )
        .await;
        cells += 1;
        match access {
            Access::Public => {}
            Access::Ml => assert_ne!(s, StatusCode::FORBIDDEN, "{method} {path} ml: {b}"),
            _ => assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path} ml key: {s} {b}"),
        }
        // A key with `all` and the session pass the access layer (the handler may still say
        // 400/404 for the placeholder ids; never 401/403, except the ML routes).
        for auth in [
            ("x-api-key", keys["all"].as_str()),
            ("authorization", bearer.as_str()),
        ] {
            let (s, b, _) = call(&app, req(method, &uri, Some(auth), body.clone())).await;
            cells += 1;
            if *access == Access::Ml || (*access == Access::Session && auth.0 == "x-api-key") {
                assert!(
                    s == StatusCode::FORBIDDEN || s == StatusCode::UNAUTHORIZED,
                    "{method} {path} {}: {s} {b}",
                    auth.0
                );
            } else {
                assert!(
                    s != StatusCode::UNAUTHORIZED
                        && s != StatusCode::FORBIDDEN
                        && s != StatusCode::INTERNAL_SERVER_ERROR,
                    "{method} {path} {}: {s} {b}",
                    auth.0
                );
            }
        }
    }
    eprintln!(
        "access table: {} routes, {cells} (route, principal) checks",
        ACCESS.len()
    );
}

#[tokio::test]
async fn credentials_can_be_scoped_listed_and_revoked() {
    let app = app();
    call(
        &app,
        req(
            "POST",
            "/api/auth/admin-sign-up",
            None,
            Some(json!({"email": "a@example.com", "password": "correct horse", "name": "A"})),
        ),
    )
    .await;
    let login = |pw: &'static str| {
        req(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"email": "a@example.com", "password": pw})),
        )
    };
    let (_, l1, headers) = call(&app, login("correct horse")).await;
    let t1 = format!("Bearer {}", l1["accessToken"].as_str().unwrap());
    assert!(headers["x-content-type-options"] == "nosniff");
    let (_, l2, _) = call(&app, login("correct horse")).await;
    let t2 = format!("Bearer {}", l2["accessToken"].as_str().unwrap());

    // A scoped key cannot mint a broader one, nor an ML key; an `all` key of a non-... admin can.
    let (_, k, _) = call(
        &app,
        req(
            "POST",
            "/api/api-keys",
            Some(("authorization", &t1)),
            Some(json!({"name": "reader", "permissions": ["asset.read", "apiKey.create"]})),
        ),
    )
    .await;
    let reader = k["secret"].as_str().unwrap().to_owned();
    let reader_id = k["apiKey"]["id"].as_str().unwrap().to_owned();
    for perms in [
        json!(["all"]),
        json!(["ml"]),
        json!(["asset.upload"]),
        json!([]),
    ] {
        let (s, b, _) = call(
            &app,
            req(
                "POST",
                "/api/api-keys",
                Some(("x-api-key", &reader)),
                Some(json!({"name": "x", "permissions": perms})),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{perms}: {b}");
    }
    let (s, _, _) = call(
        &app,
        req(
            "POST",
            "/api/api-keys",
            Some(("x-api-key", &reader)),
            Some(json!({"name": "x", "permissions": ["asset.read"]})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "a subset is fine");
    let (s, b, _) = call(
        &app,
        req(
            "POST",
            "/api/api-keys",
            Some(("authorization", &t1)),
            Some(json!({"name": "x", "permissions": ["no.such"]})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, _, _) = call(
        &app,
        req(
            "POST",
            "/api/pairing/tickets",
            Some(("x-api-key", &reader)),
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "pairing tickets need `all`");

    // Keys: listed without secrets, renamed, revoked at once.
    let (s, list, _) = call(
        &app,
        req("GET", "/api/api-keys", Some(("authorization", &t1)), None),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains(&reader));
    let (s, k, _) = call(
        &app,
        req(
            "PUT",
            &format!("/api/api-keys/{reader_id}"),
            Some(("authorization", &t1)),
            Some(json!({"name": "renamed"})),
        ),
    )
    .await;
    assert_eq!((s, k["name"].as_str()), (StatusCode::OK, Some("renamed")));
    let (s, _, _) = call(
        &app,
        req(
            "DELETE",
            &format!("/api/api-keys/{reader_id}"),
            Some(("authorization", &t1)),
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = call(
        &app,
        req(
            "GET",
            "/api/assets/statistics",
            Some(("x-api-key", &reader)),
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "a revoked key stops working");

    // Sessions: listed with the current one marked; one can be signed out.
    let (_, sessions, _) = call(
        &app,
        req("GET", "/api/sessions", Some(("authorization", &t1)), None),
    )
    .await;
    let sessions = sessions.as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    let other = sessions.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, _, _) = call(
        &app,
        req(
            "DELETE",
            &format!("/api/sessions/{other}"),
            Some(("authorization", &t1)),
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = call(
        &app,
        req("GET", "/api/users/me", Some(("authorization", &t2)), None),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "the deleted session is signed out"
    );

    // Changing the password needs the current one and ends every other session.
    let (_, l3, _) = call(&app, login("correct horse")).await;
    let t3 = format!("Bearer {}", l3["accessToken"].as_str().unwrap());
    let (s, _, _) = call(
        &app,
        req(
            "POST",
            "/api/auth/change-password",
            Some(("authorization", &t1)),
            Some(json!({"password": "wrong one!", "newPassword": "battery staple"})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, b, _) = call(
        &app,
        req(
            "POST",
            "/api/auth/change-password",
            Some(("authorization", &t1)),
            Some(json!({"password": "correct horse", "newPassword": "battery staple"})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _, _) = call(
        &app,
        req("GET", "/api/users/me", Some(("authorization", &t3)), None),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "other sessions ended");
    let (s, _, _) = call(
        &app,
        req("GET", "/api/users/me", Some(("authorization", &t1)), None),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "the session that changed it stays");
    let (s, _, _) = call(&app, login("correct horse")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // CSRF: a cookie-authenticated write from another site is refused; same-origin passes;
    // API keys are exempt.
    let cookie = format!("{}={}", api::COOKIE, t1.trim_start_matches("Bearer "));
    let cross = Request::builder()
        .method(Method::POST)
        .uri("/api/trash/empty")
        .header("cookie", &cookie)
        .header("sec-fetch-site", "same-site")
        .body(Body::empty())
        .unwrap();
    let (s, _, _) = call(&app, cross).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let cross = Request::builder()
        .method(Method::POST)
        .uri("/api/trash/empty")
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .header("host", "127.0.0.1:2283")
        .body(Body::empty())
        .unwrap();
    let (s, _, _) = call(&app, cross).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let same = Request::builder()
        .method(Method::POST)
        .uri("/api/trash/empty")
        .header("cookie", &cookie)
        .header("sec-fetch-site", "same-origin")
        .body(Body::empty())
        .unwrap();
    let (s, b, _) = call(&app, same).await;
    assert!(s.is_success(), "{s} {b}");

    // Login throttling: after repeated failures the account answers 429, also with the right
    // password, and an unknown email fails like a wrong password.
    let (s, b, _) = call(
        &app,
        req(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"email": "nobody@example.com", "password": "x"})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    for _ in 0..tessera_sync_node::auth::MAX_FAILED_LOGINS {
        call(&app, login("not the password")).await;
    }
    let (s, b, _) = call(&app, login("battery staple")).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
    assert!(b["message"].as_str().unwrap().contains("try again"));
}

pub(crate) fn multipart_upload(auth: (&str, &str), name: &str, bytes: &[u8]) -> Request<Body> {
    let boundary = "tesseraTestBoundary";
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"fileCreatedAt\"\r\n\r\n2021-03-04T05:06:07.000Z\r\n").as_bytes());
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"assetData\"; filename=\"{name}\"\r\nContent-Type: image/jpeg\r\n\r\n").as_bytes());
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Request::post("/api/assets")
        .header(auth.0, auth.1)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .unwrap()
}

/// The same bytes uploaded by two members are two assets, one in each library: before, the
/// location index was keyed by hash alone and the first member's asset answered 404 once the
/// second uploaded it. Trashing and re-uploading tells the truth (`isTrashed`) and restores.
#[tokio::test]
async fn same_bytes_in_two_libraries_and_trashed_reuploads() {
    let (app, node) = crate::http::app_with_node();
    call(
        &app,
        req(
            "POST",
            "/api/auth/admin-sign-up",
            None,
            Some(json!({"email": "a@example.com", "password": "correct horse", "name": "A"})),
        ),
    )
    .await;
    node.auth
        .create_user("b@example.com", "battery staple", "B")
        .unwrap();
    let mut tokens = Vec::new();
    for (email, pw) in [
        ("a@example.com", "correct horse"),
        ("b@example.com", "battery staple"),
    ] {
        let (s, l, _) = call(
            &app,
            req(
                "POST",
                "/api/auth/login",
                None,
                Some(json!({"email": email, "password": pw})),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{l}");
        tokens.push(format!("Bearer {}", l["accessToken"].as_str().unwrap()));
    }
    let photo = tessera_tests::photos::small_jpeg(31337);
    let id = blake3::hash(&photo).to_hex().to_string();
    for t in &tokens {
        let (s, b, _) = call(
            &app,
            multipart_upload(("authorization", t), "same.jpg", &photo),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    for t in &tokens {
        let (s, b, _) = call(
            &app,
            req(
                "GET",
                &format!("/api/assets/{id}"),
                Some(("authorization", t)),
                None,
            ),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "each member sees their own asset: {b}");
    }

    // A trashes hers: bulk-upload-check says so, and uploading it again restores it.
    let a = tokens[0].as_str();
    let (s, _, _) = call(
        &app,
        req(
            "DELETE",
            "/api/assets",
            Some(("authorization", a)),
            Some(json!({"ids": [id]})),
        ),
    )
    .await;
    assert!(s.is_success(), "{s}");
    let sha1 = {
        use sha1::Digest;
        let d = sha1::Sha1::digest(&photo);
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let (_, check, _) = call(
        &app,
        req(
            "POST",
            "/api/assets/bulk-upload-check",
            Some(("authorization", a)),
            Some(json!({"assets": [{"id": "x", "checksum": sha1}]})),
        ),
    )
    .await;
    assert_eq!(check["results"][0]["isTrashed"], true, "{check}");
    let (s, b, _) = call(
        &app,
        multipart_upload(("authorization", a), "same.jpg", &photo),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["restored"], true, "{b}");
    let (_, asset, _) = call(
        &app,
        req(
            "GET",
            &format!("/api/assets/{id}"),
            Some(("authorization", a)),
            None,
        ),
    )
    .await;
    assert_eq!(asset["isTrashed"], false, "{asset}");
    let (_, check, _) = call(
        &app,
        req(
            "POST",
            "/api/assets/bulk-upload-check",
            Some(("authorization", a)),
            Some(json!({"assets": [{"id": "x", "checksum": sha1}]})),
        ),
    )
    .await;
    assert_eq!(check["results"][0]["isTrashed"], false, "{check}");
    // B's copy was never touched.
    let (s, _, _) = call(
        &app,
        req(
            "GET",
            &format!("/api/assets/{id}"),
            Some(("authorization", &tokens[1])),
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

/// A crash between writing a record and indexing it (or queueing its job) is repaired from the
/// documents: `fsck --repair` re-indexes the record and queues its media job.
#[tokio::test]
async fn fsck_rebuilds_locations_and_jobs_from_the_documents() {
    let (app, node) = crate::http::app_with_node();
    call(
        &app,
        req(
            "POST",
            "/api/auth/admin-sign-up",
            None,
            Some(json!({"email": "a@example.com", "password": "correct horse", "name": "A"})),
        ),
    )
    .await;
    let (_, l, _) = call(
        &app,
        req(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"email": "a@example.com", "password": "correct horse"})),
        ),
    )
    .await;
    let t = format!("Bearer {}", l["accessToken"].as_str().unwrap());
    let photo = tessera_tests::photos::small_jpeg(777);
    let id = blake3::hash(&photo).to_hex().to_string();
    let (s, b, _) = call(
        &app,
        multipart_upload(("authorization", &t), "p.jpg", &photo),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let clean = tessera_sync_node::housekeeping::check_catalogue(&node, false).unwrap();
    assert!(clean.is_clean() && clean.records == 1, "{clean:?}");
    // Lose the index entry and the job, as a crash right after the record was written would.
    node.db.open_tree("assets").unwrap().clear().unwrap();
    node.db.open_tree("jobs").unwrap().clear().unwrap();
    let (s, _, _) = call(
        &app,
        req(
            "GET",
            &format!("/api/assets/{id}"),
            Some(("authorization", &t)),
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let found = tessera_sync_node::housekeeping::check_catalogue(&node, false).unwrap();
    assert_eq!(
        (found.unindexed.len(), found.needs_job.len()),
        (1, 1),
        "{found:?}"
    );
    let fixed = tessera_sync_node::housekeeping::check_catalogue(&node, true).unwrap();
    assert_eq!(fixed.repaired, 2, "{fixed:?}");
    assert!(node.jobs.is_queued(&id));
    let (s, _, _) = call(
        &app,
        req(
            "GET",
            &format!("/api/assets/{id}"),
            Some(("authorization", &t)),
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        tessera_sync_node::housekeeping::check_catalogue(&node, false)
            .unwrap()
            .is_clean()
    );
}

/// The OpenAPI document and the reference page name every route the source declares.
#[tokio::test]
async fn openapi_documents_every_route() {
    let app = app();
    let (s, doc, _) = call(&app, req("GET", "/api/openapi.json", None, None)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let routes: Vec<(String, String)> = declared_routes()
        .into_iter()
        .filter(|(_, p)| !p.starts_with("/.well-known") && !p.starts_with("/share/"))
        .collect();
    let mut missing = Vec::new();
    for (m, p) in &routes {
        let op = &doc["paths"][format!("/api{p}")][m.to_lowercase()];
        if !op.is_object() || op["operationId"].as_str().is_none() {
            missing.push(format!("{m} {p}"));
        }
        // Path parameters are declared.
        if p.contains('{') {
            assert!(
                op["parameters"].as_array().is_some_and(|a| !a.is_empty()),
                "{m} {p}"
            );
        }
    }
    assert!(missing.is_empty(), "not in /api/openapi.json: {missing:?}");
    let ops: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_object().map_or(0, |o| o.len()))
        .sum();
    assert_eq!(ops, ACCESS.len(), "one operation per access-table entry");
    let res = tower::ServiceExt::oneshot(app.router.clone(), req("GET", "/api/docs", None, None))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let html = String::from_utf8(
        http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    for (_, p) in &routes {
        assert!(
            html.contains(&format!("/api{p}").replace('&', "&amp;")),
            "{p} on /api/docs"
        );
    }
    println!(
        "openapi: {ops} operations documented, {} routes in the source",
        routes.len()
    );
}
