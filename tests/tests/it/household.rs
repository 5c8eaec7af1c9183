//! The household's accounts over Immich's API: an admin adds members (initial password they
//! must change, quota), resets passwords, deletes (photos to the trash, never silently) and
//! restores accounts; members see each other but not the admin pages.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::access::{multipart_upload, req};
use crate::http::{call, App};

async fn login(app: &App, email: &str, password: &str) -> (StatusCode, Value) {
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
    (s, b)
}

fn bearer(b: &Value) -> String {
    format!("Bearer {}", b["accessToken"].as_str().unwrap())
}

#[tokio::test]
async fn an_admin_manages_the_household_and_members_see_each_other() {
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
    let (_, l) = login(&app, "mum@example.com", "correct horse").await;
    let admin = bearer(&l);
    let admin_id = l["userId"].as_str().unwrap().to_owned();
    let a = ("authorization", admin.as_str());

    // Add a member with a temporary password and a quota.
    let (s, kid, _) = call(
        &app,
        req(
            "POST",
            "/api/admin/users",
            Some(a),
            Some(
                json!({"email": "Kid@Example.com", "password": "temporary1", "name": "Kid",
                        "shouldChangePassword": true, "quotaSizeInBytes": 30000}),
            ),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{kid}");
    assert_eq!(kid["email"], "kid@example.com");
    assert_eq!(kid["shouldChangePassword"], true);
    assert_eq!(kid["quotaSizeInBytes"], 30000);
    assert_eq!(kid["status"], "active");
    let kid_id = kid["id"].as_str().unwrap().to_owned();
    // The same email twice is refused.
    let (s, b, _) = call(
        &app,
        req(
            "POST",
            "/api/admin/users",
            Some(a),
            Some(json!({"email": "kid@example.com", "password": "temporary1", "name": "Kid 2"})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");

    // The member signs in, sees the flag and the quota, and sees the household.
    let (s, l) = login(&app, "kid@example.com", "temporary1").await;
    assert_eq!(s, StatusCode::CREATED, "{l}");
    assert_eq!(l["shouldChangePassword"], true, "{l}");
    let kid_t = bearer(&l);
    let k = ("authorization", kid_t.as_str());
    let (_, me, _) = call(&app, req("GET", "/api/users/me", Some(k), None)).await;
    assert_eq!(
        (
            me["quotaSizeInBytes"].clone(),
            me["quotaUsageInBytes"].clone()
        ),
        (json!(30000), json!(0))
    );
    let (s, users, _) = call(&app, req("GET", "/api/users", Some(k), None)).await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Mum", "Kid"]);
    assert!(
        users[0].get("isAdmin").is_none(),
        "members see the brief shape: {users}"
    );
    let (s, one, _) = call(
        &app,
        req("GET", &format!("/api/users/{admin_id}"), Some(k), None),
    )
    .await;
    assert_eq!((s, one["name"].clone()), (StatusCode::OK, json!("Mum")));
    // Members do not reach the admin pages.
    for (m, p) in [
        ("GET", "/api/admin/users".to_owned()),
        ("GET", format!("/api/admin/users/{admin_id}")),
        ("DELETE", format!("/api/admin/users/{admin_id}")),
    ] {
        let (s, b, _) = call(&app, req(m, &p, Some(k), None)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{m} {p}: {b}");
    }
    let (s, b, _) = call(
        &app,
        req(
            "POST",
            "/api/admin/users",
            Some(k),
            Some(json!({"email": "x@example.com", "password": "whatever1", "name": "X"})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");

    // The member renames themself; changing the password clears the flag.
    let (s, b, _) = call(
        &app,
        req(
            "PUT",
            "/api/users/me",
            Some(k),
            Some(json!({"name": "Kiddo"})),
        ),
    )
    .await;
    assert_eq!(
        (s, b["name"].clone()),
        (StatusCode::OK, json!("Kiddo")),
        "{b}"
    );
    let (s, b, _) = call(
        &app,
        req(
            "POST",
            "/api/auth/change-password",
            Some(k),
            Some(json!({"password": "temporary1", "newPassword": "my own secret"})),
        ),
    )
    .await;
    assert!(s.is_success(), "{s} {b}");
    let (_, me, _) = call(&app, req("GET", "/api/users/me", Some(k), None)).await;
    assert_eq!(me["shouldChangePassword"], false, "{me}");

    // The quota: usage counts the member's originals; an upload past it is refused.
    let photo = tessera_tests::photos::small_jpeg(4242);
    let (s, up, _) = call(&app, multipart_upload(k, "a.jpg", &photo)).await;
    assert_eq!(s, StatusCode::CREATED, "{up}");
    let (_, me, _) = call(&app, req("GET", "/api/users/me", Some(k), None)).await;
    assert_eq!(me["quotaUsageInBytes"], photo.len() as u64);
    let other = tessera_tests::photos::small_jpeg(4243);
    let big = other.repeat(30000 / other.len() + 1); // alone over the 30,000-byte quota
    let (s, b, _) = call(&app, multipart_upload(k, "big.jpg", &big)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("Quota has been exceeded"),
        "{b}"
    );
    // The admin lifts the quota (null) and the upload goes through.
    let (s, b, _) = call(
        &app,
        req(
            "PUT",
            &format!("/api/admin/users/{kid_id}"),
            Some(a),
            Some(json!({"quotaSizeInBytes": null})),
        ),
    )
    .await;
    assert_eq!(
        (s, b["quotaSizeInBytes"].clone()),
        (StatusCode::OK, Value::Null),
        "{b}"
    );
    let (s, big_up, _) = call(&app, multipart_upload(k, "big.jpg", &big)).await;
    assert_eq!(s, StatusCode::CREATED, "{big_up}");

    // A password reset by the admin ends the member's sessions and asks for a change.
    let (s, b, _) = call(
        &app,
        req(
            "PUT",
            &format!("/api/admin/users/{kid_id}"),
            Some(a),
            Some(json!({"password": "reset-by-mum"})),
        ),
    )
    .await;
    assert_eq!(
        (s, b["shouldChangePassword"].clone()),
        (StatusCode::OK, json!(true)),
        "{b}"
    );
    let (s, _, _) = call(&app, req("GET", "/api/users/me", Some(k), None)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, l) = login(&app, "kid@example.com", "reset-by-mum").await;
    assert_eq!(s, StatusCode::CREATED, "{l}");
    let kid_t = bearer(&l);
    let k = ("authorization", kid_t.as_str());

    // The admin cannot demote or delete themself (the household keeps an admin).
    let (s, _, _) = call(
        &app,
        req(
            "PUT",
            &format!("/api/admin/users/{admin_id}"),
            Some(a),
            Some(json!({"isAdmin": false})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, _) = call(
        &app,
        req(
            "DELETE",
            &format!("/api/admin/users/{admin_id}"),
            Some(a),
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // `force` would skip the trash: refused.
    let (s, _, _) = call(
        &app,
        req(
            "DELETE",
            &format!("/api/admin/users/{kid_id}"),
            Some(a),
            Some(json!({"force": true})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Deleting the member: they cannot sign in, their photos are in their trash, not gone.
    let (s, b, _) = call(
        &app,
        req(
            "DELETE",
            &format!("/api/admin/users/{kid_id}"),
            Some(a),
            None,
        ),
    )
    .await;
    assert_eq!(
        (s, b["status"].clone()),
        (StatusCode::OK, json!("deleted")),
        "{b}"
    );
    assert!(b["deletedAt"].is_string());
    let (s, _, _) = call(&app, req("GET", "/api/users/me", Some(k), None)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = login(&app, "kid@example.com", "reset-by-mum").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (_, users, _) = call(&app, req("GET", "/api/users", Some(a), None)).await;
    assert_eq!(users.as_array().unwrap().len(), 1);
    let (_, all, _) = call(
        &app,
        req("GET", "/api/admin/users?withDeleted=true", Some(a), None),
    )
    .await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    // Restored: they sign in again and find their photos in the trash.
    let (s, b, _) = call(
        &app,
        req(
            "POST",
            &format!("/api/admin/users/{kid_id}/restore"),
            Some(a),
            None,
        ),
    )
    .await;
    assert_eq!(
        (s, b["status"].clone()),
        (StatusCode::OK, json!("active")),
        "{b}"
    );
    let (s, l) = login(&app, "kid@example.com", "reset-by-mum").await;
    assert_eq!(s, StatusCode::CREATED);
    let kid_t = bearer(&l);
    let k = ("authorization", kid_t.as_str());
    for id in [&up["id"], &big_up["id"]] {
        let (s, asset, _) = call(
            &app,
            req(
                "GET",
                &format!("/api/assets/{}", id.as_str().unwrap()),
                Some(k),
                None,
            ),
        )
        .await;
        assert_eq!(
            (s, asset["isTrashed"].clone()),
            (StatusCode::OK, json!(true)),
            "{asset}"
        );
    }
    let (_, me, _) = call(&app, req("GET", "/api/users/me", Some(k), None)).await;
    assert_eq!(
        me["quotaUsageInBytes"],
        (photo.len() + big.len()) as u64,
        "trashed photos still count until purged"
    );
}
