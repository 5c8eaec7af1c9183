//! Albums over Immich's API: an owner makes an album, shares it with one member as editor and
//! another as viewer; roles decide who adds, removes and changes what; members see each other's
//! photos only through the album; removing a member or deleting the album ends that at once and
//! never deletes a photo.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::access::{multipart_upload, req};
use crate::http::{call, App};

/// Logs in; returns the `Authorization` header value.
pub(crate) async fn login(app: &App, email: &str, password: &str) -> String {
    let (s, b, _) = call(
        app,
        req(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"email": email, "password": password})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    format!("Bearer {}", b["accessToken"].as_str().unwrap())
}

/// Uploads a small generated JPEG; returns its id.
pub(crate) async fn upload(app: &App, t: &str, seed: u64) -> String {
    let photo = tessera_tests::photos::small_jpeg(seed);
    let (s, b, _) = call(app, multipart_upload(("authorization", t), "p.jpg", &photo)).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn shared_albums_follow_their_roles() {
    let app = crate::http::app();
    call(
        &app,
        req(
            "POST",
            "/api/auth/admin-sign-up",
            None,
            Some(json!({"email": "mum@example.com", "password": "correct horse", "name": "Mum"})),
        ),
    )
    .await;
    let mum = login(&app, "mum@example.com", "correct horse").await;
    let m = ("authorization", mum.as_str());
    let mut ids = std::collections::BTreeMap::new();
    for (email, name) in [
        ("kid@example.com", "Kid"),
        ("gran@example.com", "Gran"),
        ("other@example.com", "Other"),
    ] {
        let (s, u, _) = call(
            &app,
            req(
                "POST",
                "/api/admin/users",
                Some(m),
                Some(json!({"email": email, "password": "password1", "name": name})),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{u}");
        ids.insert(name, u["id"].as_str().unwrap().to_owned());
    }
    let kid = login(&app, "kid@example.com", "password1").await;
    let gran = login(&app, "gran@example.com", "password1").await;
    let other = login(&app, "other@example.com", "password1").await;
    let (k, g, o) = (
        ("authorization", kid.as_str()),
        ("authorization", gran.as_str()),
        ("authorization", other.as_str()),
    );
    let p1 = upload(&app, &mum, 1).await;
    let p2 = upload(&app, &mum, 2).await;
    let kp = upload(&app, &kid, 3).await;
    let op = upload(&app, &other, 4).await;

    // Mum makes an album with her two photos, shared with Kid (editor) and Gran (viewer).
    let (s, a, _) = call(
        &app,
        req(
            "POST",
            "/api/albums",
            Some(m),
            Some(json!({"albumName": "Holiday", "description": "Sea", "assetIds": [p1, p2, op],
                        "albumUsers": [{"userId": ids["Kid"], "role": "editor"}, {"userId": ids["Gran"], "role": "viewer"}]})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(a["assetCount"], 2, "someone else's photo is not added: {a}");
    assert_eq!(a["shared"], true);
    assert_eq!(a["ownerId"], ids_owner(&a));
    let album = a["id"].as_str().unwrap().to_owned();

    // Members see it in their list; a stranger does not, and gets 404 for it.
    for (who, n) in [(k, 1), (g, 1), (o, 0)] {
        let (_, list, _) = call(&app, req("GET", "/api/albums", Some(who), None)).await;
        assert_eq!(list.as_array().unwrap().len(), n, "{list}");
    }
    let (s, _, _) = call(
        &app,
        req("GET", &format!("/api/albums/{album}"), Some(o), None),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Gran (viewer) sees Mum's photos through the album: the asset, original and thumbnail.
    let (s, got, _) = call(
        &app,
        req("GET", &format!("/api/albums/{album}"), Some(g), None),
    )
    .await;
    assert_eq!(
        (s, got["assets"].as_array().unwrap().len()),
        (StatusCode::OK, 2),
        "{got}"
    );
    let (s, _, _) = call(
        &app,
        req("GET", &format!("/api/assets/{p1}"), Some(g), None),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = call(
        &app,
        req("GET", &format!("/api/assets/{p1}/original"), Some(g), None),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // …but nothing outside it, and a viewer adds nothing.
    let (s, _, _) = call(
        &app,
        req("GET", &format!("/api/assets/{kp}"), Some(g), None),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = call(
        &app,
        req(
            "PUT",
            &format!("/api/albums/{album}/assets"),
            Some(g),
            Some(json!({"ids": [p1]})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Kid (editor) adds their own photo; it stays Kid's, and everyone in the album sees it.
    let (s, r, _) = call(
        &app,
        req(
            "PUT",
            &format!("/api/albums/{album}/assets"),
            Some(k),
            Some(json!({"ids": [kp, p1, op]})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        r,
        json!([{"id": kp, "success": true}, {"id": p1, "success": false, "error": "duplicate"}, {"id": op, "success": false, "error": "no_permission"}])
    );
    let (s, asset, _) = call(
        &app,
        req("GET", &format!("/api/assets/{kp}"), Some(g), None),
    )
    .await;
    assert_eq!(
        (s, asset["ownerId"].clone()),
        (StatusCode::OK, json!(ids["Kid"])),
        "{asset}"
    );
    // Only the owner renames, shares and deletes; an editor removes only what they added.
    let (s, _, _) = call(
        &app,
        req(
            "PATCH",
            &format!("/api/albums/{album}"),
            Some(k),
            Some(json!({"albumName": "Mine"})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, b, _) = call(
        &app,
        req(
            "PATCH",
            &format!("/api/albums/{album}"),
            Some(m),
            Some(json!({"albumName": "Summer", "albumThumbnailAssetId": kp, "order": "asc"})),
        ),
    )
    .await;
    assert_eq!(
        (
            s,
            b["albumName"].clone(),
            b["albumThumbnailAssetId"].clone()
        ),
        (StatusCode::OK, json!("Summer"), json!(kp)),
        "{b}"
    );
    let (_, r, _) = call(
        &app,
        req(
            "DELETE",
            &format!("/api/albums/{album}/assets"),
            Some(k),
            Some(json!({"ids": [p1]})),
        ),
    )
    .await;
    assert_eq!(r[0]["error"], "no_permission", "{r}");
    let (s, _, _) = call(
        &app,
        req(
            "PUT",
            &format!("/api/albums/{album}/users"),
            Some(k),
            Some(json!({"albumUsers": [{"userId": ids["Other"], "role": "viewer"}]})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = call(
        &app,
        req("DELETE", &format!("/api/albums/{album}"), Some(k), None),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Comments and likes: any member, on the album or one of its photos; a stranger sees none.
    let (s, c1, _) = call(
        &app,
        req(
            "POST",
            "/api/activities",
            Some(g),
            Some(json!({"albumId": album, "type": "comment", "comment": "Lovely!", "assetId": p1})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{c1}");
    assert_eq!(
        (c1["type"].clone(), c1["user"]["name"].clone()),
        (json!("comment"), json!("Gran"))
    );
    let (s, l1, _) = call(
        &app,
        req(
            "POST",
            "/api/activities",
            Some(k),
            Some(json!({"albumId": album, "type": "like"})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{l1}");
    let (s, again, _) = call(
        &app,
        req(
            "POST",
            "/api/activities",
            Some(k),
            Some(json!({"albumId": album, "type": "like"})),
        ),
    )
    .await;
    assert_eq!(
        (s, again["id"].clone()),
        (StatusCode::OK, l1["id"].clone()),
        "one like per user"
    );
    let (s, _, _) = call(
        &app,
        req(
            "POST",
            "/api/activities",
            Some(o),
            Some(json!({"albumId": album, "type": "like"})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = call(
        &app,
        req(
            "POST",
            "/api/activities",
            Some(k),
            Some(json!({"albumId": album, "type": "comment", "comment": "  "})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, acts, _) = call(
        &app,
        req(
            "GET",
            &format!("/api/activities?albumId={album}"),
            Some(m),
            None,
        ),
    )
    .await;
    assert_eq!(acts.as_array().unwrap().len(), 2, "{acts}");
    let (_, on_p1, _) = call(
        &app,
        req(
            "GET",
            &format!("/api/activities?albumId={album}&assetId={p1}"),
            Some(m),
            None,
        ),
    )
    .await;
    assert_eq!(on_p1.as_array().unwrap().len(), 1, "{on_p1}");
    let (_, st, _) = call(
        &app,
        req(
            "GET",
            &format!("/api/activities/statistics?albumId={album}"),
            Some(k),
            None,
        ),
    )
    .await;
    assert_eq!(st, json!({"comments": 1, "likes": 1}));
    // Kid cannot delete Gran's comment; Gran can; the owner can delete Kid's like.
    let c1_id = c1["id"].as_str().unwrap();
    let (s, _, _) = call(
        &app,
        req("DELETE", &format!("/api/activities/{c1_id}"), Some(k), None),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = call(
        &app,
        req("DELETE", &format!("/api/activities/{c1_id}"), Some(g), None),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = call(
        &app,
        req(
            "DELETE",
            &format!("/api/activities/{}", l1["id"].as_str().unwrap()),
            Some(m),
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // The owner turns activity off: no new comments.
    call(
        &app,
        req(
            "PATCH",
            &format!("/api/albums/{album}"),
            Some(m),
            Some(json!({"isActivityEnabled": false})),
        ),
    )
    .await;
    let (s, _, _) = call(
        &app,
        req(
            "POST",
            "/api/activities",
            Some(g),
            Some(json!({"albumId": album, "type": "like"})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Gran is made editor, then removed: the album and its photos are gone for her at once.
    let (s, _, _) = call(
        &app,
        req(
            "PUT",
            &format!("/api/albums/{album}/user/{}", ids["Gran"]),
            Some(m),
            Some(json!({"role": "editor"})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = call(
        &app,
        req(
            "DELETE",
            &format!("/api/albums/{album}/user/{}", ids["Gran"]),
            Some(m),
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = call(
        &app,
        req("GET", &format!("/api/albums/{album}"), Some(g), None),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = call(
        &app,
        req("GET", &format!("/api/assets/{p1}/thumbnail"), Some(g), None),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Kid leaves on their own.
    let (s, _, _) = call(
        &app,
        req(
            "DELETE",
            &format!("/api/albums/{album}/user/me"),
            Some(k),
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, st, _) = call(&app, req("GET", "/api/albums/statistics", Some(m), None)).await;
    assert_eq!(st, json!({"owned": 1, "shared": 0, "notShared": 1}));
    // Deleting the album deletes no photo: Kid's photo is still Kid's.
    let (s, _, _) = call(
        &app,
        req("DELETE", &format!("/api/albums/{album}"), Some(m), None),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, list, _) = call(&app, req("GET", "/api/albums", Some(m), None)).await;
    assert_eq!(list, json!([]));
    for (who, id) in [(m, &p1), (m, &p2), (k, &kp)] {
        let (s, a, _) = call(
            &app,
            req("GET", &format!("/api/assets/{id}"), Some(who), None),
        )
        .await;
        assert_eq!((s, a["isTrashed"].clone()), (StatusCode::OK, json!(false)));
    }
}

fn ids_owner(a: &Value) -> Value {
    a["owner"]["id"].clone()
}
