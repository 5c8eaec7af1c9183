//! Sharing beyond albums: partner sharing and public links, and the access table of every kind
//! of principal against a shared photo and album — owner, editor, viewer, partner, other
//! member, removed member, anonymous, link holder with and without the password, expired and
//! revoked link — over HTTP, and over catalogue sync (the decision iroh uses too).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tessera_core::{DocId, Library, PeerSync, SyncEnvelope};
use tower::ServiceExt;

use crate::access::req;
use crate::albums::{login, upload};
use crate::http::{call, App};

/// An admin (`mum`) and members; returns tokens and user ids by name.
async fn household(
    app: &App,
    names: &[&str],
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    call(
        app,
        req(
            "POST",
            "/api/auth/admin-sign-up",
            None,
            Some(json!({"email": "mum@example.com", "password": "correct horse", "name": "mum"})),
        ),
    )
    .await;
    let mum = login(app, "mum@example.com", "correct horse").await;
    let mut tokens = BTreeMap::from([("mum".to_owned(), mum.clone())]);
    let (_, me, _) = call(
        app,
        req("GET", "/api/users/me", Some(("authorization", &mum)), None),
    )
    .await;
    let mut ids = BTreeMap::from([("mum".to_owned(), me["id"].as_str().unwrap().to_owned())]);
    for n in names {
        let email = format!("{n}@example.com");
        let (s, u, _) = call(
            app,
            req(
                "POST",
                "/api/admin/users",
                Some(("authorization", &mum)),
                Some(json!({"email": email, "password": "password1", "name": n})),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{u}");
        ids.insert(n.to_string(), u["id"].as_str().unwrap().to_owned());
        tokens.insert(n.to_string(), login(app, &email, "password1").await);
    }
    (tokens, ids)
}

/// A raw response: status, headers and body text (the public page is HTML).
async fn raw(app: &App, r: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let res = app.router.clone().oneshot(r).await.unwrap();
    let (s, h) = (res.status(), res.headers().clone());
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (s, h, String::from_utf8_lossy(&bytes).into_owned())
}

fn get(path: &str, auth: Option<&str>, cookie: Option<&str>) -> Request<Body> {
    let mut r = Request::get(path);
    if let Some(a) = auth {
        r = r.header("authorization", a);
    }
    if let Some(c) = cookie {
        r = r.header("cookie", c);
    }
    r.body(Body::empty()).unwrap()
}

/// One HTTP sync exchange of a device of `token`'s user until quiet; returns the documents
/// the node told it to drop.
/// One sync round of a device with the node: what it generates goes up, the reply is
/// received: the documents the node told it to drop, and whether the node had nothing to
/// say. `Err` is the node's refusal (status and body).
async fn sync_round(
    app: &App,
    token: &str,
    lib: &mut Library,
    ps: &mut PeerSync,
) -> Result<(Vec<DocId>, bool), (StatusCode, String)> {
    let ids: Vec<DocId> = lib.ids().cloned().collect();
    let up = SyncEnvelope::new("dev", ps.generate(lib, &ids)).encode();
    let res = app
        .router
        .clone()
        .oneshot(
            Request::post("/api/tessera/sync")
                .header("authorization", token)
                .body(Body::from(up))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    if status != StatusCode::OK {
        return Err((status, String::from_utf8_lossy(&bytes).into_owned()));
    }
    let env = SyncEnvelope::decode(&bytes).unwrap();
    let dropped = env.dropped_ids();
    for d in &dropped {
        lib.remove_doc(d);
    }
    let quiet = env.docs.is_empty();
    ps.receive(lib, env.docs, |_| true).unwrap();
    Ok((dropped, quiet))
}

async fn device_sync(app: &App, token: &str, lib: &mut Library, ps: &mut PeerSync) -> Vec<DocId> {
    let mut dropped = Vec::new();
    for _ in 0..8 {
        let (gone, quiet) = match sync_round(app, token, lib, ps).await {
            Ok(r) => r,
            Err((s, b)) => panic!("sync refused: {s} {b}"),
        };
        dropped.extend(gone);
        if quiet {
            break;
        }
    }
    dropped
}

#[tokio::test]
async fn partners_see_the_shared_months_and_lose_them_when_the_share_stops() {
    let app = crate::http::app();
    let (t, ids) = household(&app, &["dad", "kid"]).await;
    let (mum, dad, kid) = (t["mum"].as_str(), t["dad"].as_str(), t["kid"].as_str());
    let photo = upload(&app, mum, 1).await; // taken 2021-03 (the upload's fileCreatedAt)
    let dads = upload(&app, dad, 2).await;
    let asset = format!("/api/assets/{photo}");
    assert_eq!(
        call(&app, get(&asset, Some(dad), None)).await.0,
        StatusCode::NOT_FOUND
    );

    // Mum shares from 2022 on: the 2021 photo stays hers alone.
    let (s, b, _) = call(
        &app,
        req(
            "POST",
            "/api/partners",
            Some(("authorization", mum)),
            Some(json!({"sharedWithId": ids["dad"], "since": "2022-01"})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(
        (b["id"].as_str(), b["since"].as_str()),
        (Some(ids["dad"].as_str()), Some("2022-01"))
    );
    assert_eq!(
        call(&app, get(&asset, Some(dad), None)).await.0,
        StatusCode::NOT_FOUND
    );
    // From 2021-03 on it is shared; the other way round nothing is.
    call(
        &app,
        req(
            "POST",
            &format!("/api/partners/{}", ids["dad"]),
            Some(("authorization", mum)),
            Some(json!({"since": "2021-03"})),
        ),
    )
    .await;
    let (s, a, _) = call(&app, get(&asset, Some(dad), None)).await;
    assert_eq!(
        (s, a["ownerId"].as_str()),
        (StatusCode::OK, Some(ids["mum"].as_str())),
        "{a}"
    );
    assert_eq!(
        call(&app, get(&format!("{asset}/original"), Some(dad), None))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, get(&format!("/api/assets/{dads}"), Some(mum), None))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&app, get(&asset, Some(kid), None)).await.0,
        StatusCode::NOT_FOUND
    );
    // Listings in both directions, and the partner's own timeline choice.
    let (_, by, _) = call(
        &app,
        get("/api/partners?direction=shared-by", Some(mum), None),
    )
    .await;
    assert_eq!(by.as_array().unwrap().len(), 1, "{by}");
    assert_eq!(by[0]["inTimeline"], false);
    let (_, with, _) = call(
        &app,
        get("/api/partners?direction=shared-with", Some(dad), None),
    )
    .await;
    assert_eq!(with[0]["id"].as_str(), Some(ids["mum"].as_str()), "{with}");
    let (s, _, _) = call(
        &app,
        req(
            "PUT",
            &format!("/api/partners/{}", ids["mum"]),
            Some(("authorization", dad)),
            Some(json!({"inTimeline": true})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, by, _) = call(
        &app,
        get("/api/partners?direction=shared-by", Some(mum), None),
    )
    .await;
    assert_eq!(by[0]["inTimeline"], true, "{by}");
    // Kid has no share from dad to flip.
    let (s, _, _) = call(
        &app,
        req(
            "PUT",
            &format!("/api/partners/{}", ids["dad"]),
            Some(("authorization", kid)),
            Some(json!({"inTimeline": true})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = call(
        &app,
        get("/api/partners?direction=sideways", Some(mum), None),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Dad's device syncs Mum's shared month, read-only, and never her root or people.
    let mut dev = Library::new(&[7; 16]);
    let mut ps = PeerSync::new();
    assert!(device_sync(&app, dad, &mut dev, &mut ps).await.is_empty());
    let month = DocId::shard(&ids["mum"], "2021-03").unwrap();
    assert!(dev.asset_in(&month, &photo).unwrap().is_some());
    // (Mum's root on the device holds only the summaries it derived itself: not her shares.)
    assert!(dev
        .partner_share(&ids["mum"], &ids["dad"])
        .unwrap()
        .is_none());
    assert!(!dev.contains(&DocId::people(&ids["mum"]).unwrap()));
    assert!(dev.partner_in_timeline(&ids["dad"], &ids["mum"]));
    // A change to Mum's month from Dad's device is refused and changes nothing.
    let mut forged = dev.asset_in(&month, &photo).unwrap().unwrap();
    forged.favorite = Some(true);
    dev.upsert_assets(&ids["mum"], &[forged]).unwrap();
    // (The sync protocol may hold a change back for a round: the node's Bloom filter of
    // what it has can match a new change by chance, about 1 in 100. So the device keeps
    // syncing, a bounded number of rounds, until the node refuses the change.)
    let mut refused = None;
    for _ in 0..6 {
        if let Err(e) = sync_round(&app, dad, &mut dev, &mut ps).await {
            refused = Some(e);
            break;
        }
    }
    let (s, b) = refused.expect("the node never refused the forged change");
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (_, a, _) = call(&app, get(&asset, Some(mum), None)).await;
    assert_eq!(a["isFavorite"], false, "{a}");

    // Mum stops sharing: the photo is gone for Dad, and his device drops her month.
    let (s, _, _) = call(
        &app,
        req(
            "DELETE",
            &format!("/api/partners/{}", ids["dad"]),
            Some(("authorization", mum)),
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        call(&app, get(&asset, Some(dad), None)).await.0,
        StatusCode::NOT_FOUND
    );
    let mut dev = Library::new(&[8; 16]);
    let mut ps = PeerSync::new();
    // (a fresh session of a device that still holds the month is told to drop it too)
    dev.upsert_assets(
        &ids["mum"],
        &[tessera_core::AssetRecord {
            id: photo.clone(),
            taken_at: Some("2021-03-04T05:06:07Z".into()),
            ..Default::default()
        }],
    )
    .unwrap();
    dev.take_dirty();
    let dropped = device_sync(&app, dad, &mut dev, &mut ps).await;
    assert_eq!(dropped, vec![month.clone()]);
    assert!(!dev.contains(&month));
}

#[tokio::test]
async fn public_links_serve_exactly_their_photos_until_revoked_or_expired() {
    let app = crate::http::app();
    let (t, ids) = household(&app, &["kid"]).await;
    let (mum, kid) = (t["mum"].as_str(), t["kid"].as_str());
    let p1 = upload(&app, mum, 1).await;
    let p2 = upload(&app, mum, 2).await;
    let hidden = upload(&app, mum, 3).await;
    let kids = upload(&app, kid, 4).await;
    let (_, album, _) = call(
        &app,
        req(
            "POST",
            "/api/albums",
            Some(("authorization", mum)),
            Some(json!({"albumName": "Beach <2021>", "assetIds": [p1],
                        "albumUsers": [{"userId": ids["kid"], "role": "editor"}]})),
        ),
    )
    .await;
    let album_id = album["id"].as_str().unwrap().to_owned();

    // Only the album's owner links it; an individual link takes only the sharer's photos.
    let (s, _, _) = call(
        &app,
        req(
            "POST",
            "/api/shared-links",
            Some(("authorization", kid)),
            Some(json!({"type": "ALBUM", "albumId": album_id})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = call(
        &app,
        req(
            "POST",
            "/api/shared-links",
            Some(("authorization", mum)),
            Some(json!({"type": "INDIVIDUAL", "assetIds": [p2, kids]})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, link, _) = call(
        &app,
        req(
            "POST",
            "/api/shared-links",
            Some(("authorization", mum)),
            Some(
                json!({"type": "ALBUM", "albumId": album_id, "allowDownload": false,
                        "description": "for the neighbours"}),
            ),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{link}");
    let key = link["key"].as_str().unwrap().to_owned();
    assert!(key.len() >= 48, "an unguessable key: {key}");
    assert_eq!(link["assets"].as_array().unwrap().len(), 1, "{link}");

    // A visitor with no account: the link, its photo, never its original (no downloads), never
    // another photo of the same library.
    let (s, me, _) = call(
        &app,
        get(&format!("/api/shared-links/me?key={key}"), None, None),
    )
    .await;
    assert_eq!(
        (s, me["album"]["albumName"].as_str()),
        (StatusCode::OK, Some("Beach <2021>")),
        "{me}"
    );
    let with_key = |id: &str, tail: &str| format!("/api/assets/{id}{tail}?key={key}");
    assert_eq!(
        call(&app, get(&with_key(&p1, ""), None, None)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, get(&with_key(&p1, "/original"), None, None))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&app, get(&with_key(&hidden, ""), None, None)).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&app, get(&with_key(&kids, ""), None, None)).await.0,
        StatusCode::NOT_FOUND
    );
    // The album as it is now: the editor's photo added later shows too.
    call(
        &app,
        req(
            "PUT",
            &format!("/api/albums/{album_id}/assets"),
            Some(("authorization", kid)),
            Some(json!({"ids": [kids]})),
        ),
    )
    .await;
    assert_eq!(
        call(&app, get(&with_key(&kids, ""), None, None)).await.0,
        StatusCode::OK
    );
    // The page: plain HTML, no script, escaped, one tile per photo, no download links.
    let (s, h, html) = raw(&app, get(&format!("/share/{key}"), None, None)).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    assert!(!html.contains("<script"), "{html}");
    assert!(html.contains("Beach &lt;2021&gt;"), "{html}");
    assert_eq!(html.matches("<figure>").count(), 2, "{html}");
    assert!(html.contains(&format!("/api/assets/{p1}/thumbnail?key={key}")));
    assert!(!html.contains("/original"), "{html}");

    // Allow downloads and set a password: the page asks for it, the API answers 401 without it.
    let link_id = link["id"].as_str().unwrap();
    let (s, l, _) = call(
        &app,
        req(
            "PATCH",
            &format!("/api/shared-links/{link_id}"),
            Some(("authorization", mum)),
            Some(json!({"allowDownload": true, "password": "sesame"})),
        ),
    )
    .await;
    assert_eq!(
        (s, l["hasPassword"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{l}"
    );
    let (s, _, html) = raw(&app, get(&format!("/share/{key}"), None, None)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(html.contains("type=password"), "{html}");
    assert_eq!(
        call(&app, get(&with_key(&p1, ""), None, None)).await.0,
        StatusCode::UNAUTHORIZED
    );
    // A wrong password is refused; the right one (the page's form) sets the token cookie.
    let form = |pw: &str| {
        Request::post(format!("/share/{key}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("password={pw}")))
            .unwrap()
    };
    let (s, _, html) = raw(&app, form("nope")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(html.contains("Wrong password"));
    let (s, h, _) = raw(&app, form("sesame")).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let cookie = h["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("immich_shared_link_token="), "{cookie}");
    let (s, _, html) = raw(&app, get(&format!("/share/{key}"), None, Some(&cookie))).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains(&format!("/api/assets/{p1}/original?key={key}")),
        "{html}"
    );
    assert_eq!(
        call(&app, get(&with_key(&p1, "/original"), None, Some(&cookie)))
            .await
            .0,
        StatusCode::OK
    );
    // Immich's JSON login gives the same token.
    let (s, b, _) = call(
        &app,
        req(
            "POST",
            &format!("/api/shared-links/login?key={key}"),
            None,
            Some(json!({"password": "sesame"})),
        ),
    )
    .await;
    assert!(s.is_success(), "{b}");
    assert_eq!(
        b["token"].as_str(),
        cookie.split_once('=').map(|c| c.1),
        "{b}"
    );

    // Expired: 410 everywhere. Revoked: 404 everywhere, the page included.
    call(
        &app,
        req(
            "PATCH",
            &format!("/api/shared-links/{link_id}"),
            Some(("authorization", mum)),
            Some(json!({"expiresAt": "2020-01-01T00:00:00Z", "changeExpiryTime": true})),
        ),
    )
    .await;
    assert_eq!(
        call(&app, get(&with_key(&p1, ""), None, Some(&cookie)))
            .await
            .0,
        StatusCode::GONE
    );
    assert_eq!(
        raw(&app, get(&format!("/share/{key}"), None, Some(&cookie)))
            .await
            .0,
        StatusCode::GONE
    );
    let (s, _, _) = call(
        &app,
        req(
            "DELETE",
            &format!("/api/shared-links/{link_id}"),
            Some(("authorization", mum)),
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        call(&app, get(&with_key(&p1, "/thumbnail"), None, None))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        raw(&app, get(&format!("/share/{key}"), None, None)).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, list, _) = call(&app, get("/api/shared-links", Some(mum), None)).await;
    assert_eq!(list, json!([]));

    // An individual link: exactly the chosen photos, editable.
    let (_, l2, _) = call(
        &app,
        req(
            "POST",
            "/api/shared-links",
            Some(("authorization", mum)),
            Some(json!({"type": "INDIVIDUAL", "assetIds": [p2]})),
        ),
    )
    .await;
    let key2 = l2["key"].as_str().unwrap();
    assert_eq!(
        call(
            &app,
            get(&format!("/api/assets/{p2}?key={key2}"), None, None)
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        call(
            &app,
            get(&format!("/api/assets/{p1}?key={key2}"), None, None)
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    let (s, r, _) = call(
        &app,
        req(
            "PUT",
            &format!("/api/shared-links/{}/assets", l2["id"].as_str().unwrap()),
            Some(("authorization", mum)),
            Some(json!({"assetIds": [p1, kids]})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r[0]["success"], true);
    assert_eq!(r[1]["error"], "no_permission");
    assert_eq!(
        call(
            &app,
            get(&format!("/api/assets/{p1}?key={key2}"), None, None)
        )
        .await
        .0,
        StatusCode::OK
    );
    // A key that never existed.
    assert_eq!(
        call(&app, get(&format!("/api/assets/{p1}?key=nope"), None, None))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

/// The access table of sharing: every principal against one shared photo and its album, over
/// HTTP (asset, original, album, adding to the album) and over sync (what the device may hold
/// and write).
#[tokio::test]
async fn sharing_access_table() {
    let app = crate::http::app();
    let (t, ids) = household(&app, &["editor", "viewer", "partner", "other", "removed"]).await;
    let owner = t["mum"].as_str();
    let photo = upload(&app, owner, 1).await;
    let editors = upload(&app, &t["editor"], 2).await;
    let (_, album, _) = call(
        &app,
        req(
            "POST",
            "/api/albums",
            Some(("authorization", owner)),
            Some(
                json!({"albumName": "A", "assetIds": [photo], "albumUsers": [
                {"userId": ids["editor"], "role": "editor"},
                {"userId": ids["viewer"], "role": "viewer"},
                {"userId": ids["removed"], "role": "viewer"}]}),
            ),
        ),
    )
    .await;
    let album_id = album["id"].as_str().unwrap().to_owned();
    call(
        &app,
        req(
            "DELETE",
            &format!("/api/albums/{album_id}/user/{}", ids["removed"]),
            Some(("authorization", owner)),
            None,
        ),
    )
    .await;
    call(
        &app,
        req(
            "POST",
            "/api/partners",
            Some(("authorization", owner)),
            Some(json!({"sharedWithId": ids["partner"]})),
        ),
    )
    .await;
    let mk = |body: Value| {
        req(
            "POST",
            "/api/shared-links",
            Some(("authorization", owner)),
            Some(body),
        )
    };
    let (_, open, _) = call(&app, mk(json!({"type": "ALBUM", "albumId": album_id}))).await;
    let (_, locked, _) = call(
        &app,
        mk(json!({"type": "ALBUM", "albumId": album_id, "password": "pw"})),
    )
    .await;
    let (_, expired, _) = call(
        &app,
        mk(json!({"type": "ALBUM", "albumId": album_id, "expiresAt": "2001-01-01T00:00:00Z"})),
    )
    .await;
    let (_, _, h) = call(
        &app,
        req(
            "POST",
            &format!(
                "/api/shared-links/login?key={}",
                locked["key"].as_str().unwrap()
            ),
            None,
            Some(json!({"password": "pw"})),
        ),
    )
    .await;
    let unlocked = h["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();

    // (principal, auth, link key, cookie) → expected statuses for: asset, original, album,
    // add a photo to the album.
    type Row<'a> = (
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        [u16; 4],
    );
    let k = |l: &Value| l["key"].as_str().unwrap().to_owned();
    let (ko, kl, ke) = (k(&open), k(&locked), k(&expired));
    let rows: Vec<Row> = vec![
        ("owner", Some(owner), None, None, [200, 200, 200, 200]),
        (
            "editor",
            Some(&t["editor"]),
            None,
            None,
            [200, 200, 200, 200],
        ),
        (
            "viewer",
            Some(&t["viewer"]),
            None,
            None,
            [200, 200, 200, 403],
        ),
        (
            "partner",
            Some(&t["partner"]),
            None,
            None,
            [200, 200, 404, 404],
        ),
        (
            "other member",
            Some(&t["other"]),
            None,
            None,
            [404, 404, 404, 404],
        ),
        (
            "removed member",
            Some(&t["removed"]),
            None,
            None,
            [404, 404, 404, 404],
        ),
        ("anonymous", None, None, None, [401, 401, 401, 401]),
        ("link holder", None, Some(&ko), None, [200, 200, 200, 401]),
        (
            "link holder without password",
            None,
            Some(&kl),
            None,
            [401, 401, 401, 401],
        ),
        (
            "link holder with password",
            None,
            Some(&kl),
            Some(&unlocked),
            [200, 200, 200, 401],
        ),
        ("expired link", None, Some(&ke), None, [410, 410, 410, 401]),
    ];
    let mut checks = 0;
    for (who, auth, key, cookie, want) in &rows {
        let q = key.map(|k| format!("?key={k}")).unwrap_or_default();
        let paths = [
            format!("/api/assets/{photo}{q}"),
            format!("/api/assets/{photo}/original{q}"),
            format!("/api/albums/{album_id}{q}"),
        ];
        let mut got = Vec::new();
        for p in &paths {
            got.push(call(&app, get(p, *auth, *cookie)).await.0.as_u16());
        }
        let mut add = Request::put(format!("/api/albums/{album_id}/assets{q}"))
            .header("content-type", "application/json");
        if let Some(a) = auth {
            add = add.header("authorization", *a);
        }
        if let Some(c) = cookie {
            add = add.header("cookie", *c);
        }
        let id = if *who == "editor" { &editors } else { &photo };
        let add = add
            .body(Body::from(json!({"ids": [id]}).to_string()))
            .unwrap();
        got.push(call(&app, add).await.0.as_u16());
        assert_eq!(got, want.to_vec(), "{who}");
        checks += 4;
    }

    // Over sync: what each member's device holds of the album and of the owner's month, and
    // whether its own change to the album spreads.
    let doc = DocId::album(&album_id).unwrap();
    let month = DocId::shard(&ids["mum"], "2021-03").unwrap();
    for (who, has_album, has_month) in [
        ("editor", true, false),
        ("viewer", true, false),
        ("partner", false, true),
        ("other", false, false),
        ("removed", false, false),
    ] {
        let mut dev = Library::new(&[9; 16]);
        let mut ps = PeerSync::new();
        device_sync(&app, &t[who], &mut dev, &mut ps).await;
        assert_eq!(
            (dev.contains(&doc), dev.contains(&month)),
            (has_album, has_month),
            "{who}"
        );
        checks += 2;
    }
    eprintln!(
        "sharing access table: {} principals, {checks} checks",
        rows.len()
    );
}

/// An album made on a device while offline (the PWA's "Add to album"), with the device's own
/// photo and a comment, is accepted by the node as that user's album once the device syncs.
#[tokio::test]
async fn an_album_made_offline_on_a_device_reaches_the_node() {
    let app = crate::http::app();
    let (t, ids) = household(&app, &["kid"]).await;
    let kid = t["kid"].as_str();
    let photo = upload(&app, kid, 5).await;
    let mut dev = Library::new(&[3; 16]);
    let mut ps = PeerSync::new();
    device_sync(&app, kid, &mut dev, &mut ps).await;
    let doc = dev
        .create_album(
            "0123456789abcdef0123456789abcdef",
            &ids["kid"],
            "Trip",
            "",
            "t",
        )
        .unwrap();
    dev.add_album_items(
        &doc,
        &[(photo.clone(), ids["kid"].clone())],
        &ids["kid"],
        "t",
    )
    .unwrap();
    assert!(device_sync(&app, kid, &mut dev, &mut ps).await.is_empty());
    assert!(
        dev.album(&doc).unwrap().is_some(),
        "the device keeps its album"
    );
    let (_, list, _) = call(&app, get("/api/albums", Some(kid), None)).await;
    assert_eq!(list[0]["albumName"], "Trip", "{list}");
    assert_eq!(list[0]["assetCount"], 1, "{list}");
    // Mum's devices are not offered it.
    let mut mums = Library::new(&[4; 16]);
    device_sync(&app, &t["mum"], &mut mums, &mut PeerSync::new()).await;
    assert!(!mums.contains(&doc));
}

/// "Save to my library": a partner's photo becomes the partner's own by reference (same blob,
/// no copy), stays when the share stops, and counts in their storage.
#[tokio::test]
async fn save_to_my_library_keeps_a_shared_photo_by_reference() {
    let (app, node) = crate::http::app_with_node();
    let (t, ids) = household(&app, &["dad"]).await;
    let (mum, dad) = (t["mum"].as_str(), t["dad"].as_str());
    let photo = upload(&app, mum, 9).await;
    let save = |who: &str| {
        req(
            "POST",
            &format!("/api/tessera/assets/{photo}/save"),
            Some(("authorization", who)),
            None,
        )
    };
    // Not shared yet: nothing to save.
    assert_eq!(call(&app, save(dad)).await.0, StatusCode::NOT_FOUND);
    call(
        &app,
        req(
            "POST",
            "/api/partners",
            Some(("authorization", mum)),
            Some(json!({"sharedWithId": ids["dad"]})),
        ),
    )
    .await;
    let (s, b, _) = call(&app, save(dad)).await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::CREATED, Some("created")),
        "{b}"
    );
    assert_eq!(call(&app, save(dad)).await.1["status"], "duplicate");
    assert_eq!(
        call(&app, save(mum)).await.1["status"],
        "duplicate",
        "already hers"
    );
    // One blob, two libraries.
    let locs = node.locations(&photo).unwrap();
    assert_eq!(locs.len(), 2, "{locs:?}");
    call(
        &app,
        req(
            "DELETE",
            &format!("/api/partners/{}", ids["dad"]),
            Some(("authorization", mum)),
            None,
        ),
    )
    .await;
    let (s, a, _) = call(&app, get(&format!("/api/assets/{photo}"), Some(dad), None)).await;
    assert_eq!(
        (s, a["ownerId"].as_str()),
        (StatusCode::OK, Some(ids["dad"].as_str())),
        "{a}"
    );
    assert_eq!(
        call(
            &app,
            get(&format!("/api/assets/{photo}/original"), Some(dad), None)
        )
        .await
        .0,
        StatusCode::OK
    );
    let (_, me, _) = call(&app, get("/api/users/me", Some(dad), None)).await;
    assert!(me["quotaUsageInBytes"].as_u64().unwrap() > 0, "{me}");
}
