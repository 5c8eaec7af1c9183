//! Finding photos over Immich's API: photos whose EXIF (written by this crate's EXIF writer)
//! has a camera, a capture time and a GPS position get a place from the offline geocoder at
//! upload, and then metadata search, suggestions, explore, map markers, time buckets and
//! memories answer from the catalogue. Smart search without an ML node says why it cannot run.

use axum::http::StatusCode;
use serde_json::{json, Value};
use tessera_tests::photos::{small_jpeg, with_exif, ExifSpec};

use crate::access::{multipart_upload, req};
use crate::albums::login;
use crate::http::{call, App};

async fn upload_with(app: &App, t: &str, name: &str, seed: u64, spec: ExifSpec) -> String {
    let jpeg = with_exif(&small_jpeg(seed), &spec).unwrap();
    let (s, b, _) = call(app, multipart_upload(("authorization", t), name, &jpeg)).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["id"].as_str().unwrap().to_owned()
}

fn spec(make: &str, when: &str, gps: Option<(f64, f64)>) -> ExifSpec {
    ExifSpec {
        make: Some(make.into()),
        model: Some(format!("{make} One")),
        date_time_original: Some(when.into()),
        offset: Some("+02:00".into()),
        gps,
        ..Default::default()
    }
}

fn ids(v: &Value) -> Vec<String> {
    v["assets"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn metadata_search_places_map_buckets_and_memories() {
    let app = crate::http::app();
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
    let t = login(&app, "a@example.com", "correct horse").await;
    let t = t.as_str();
    let auth = Some(("authorization", t));
    let paris = upload_with(
        &app,
        t,
        "eiffel.jpg",
        1,
        spec("Canon", "2023:06:14 18:30:00", Some((48.8584, 2.2945))),
    )
    .await;
    let tokyo = upload_with(
        &app,
        t,
        "shibuya.jpg",
        2,
        spec("Sony", "2024:12:01 09:00:00", Some((35.6595, 139.7005))),
    )
    .await;
    let sea = upload_with(
        &app,
        t,
        "atlantic.jpg",
        3,
        spec("Sony", "2024:07:02 12:00:00", Some((30.0, -40.0))),
    )
    .await;
    let nowhere = upload_with(
        &app,
        t,
        "kitchen.jpg",
        4,
        spec("Canon", "2022:12:01 08:00:00", None),
    )
    .await;

    // The place is in the asset's exifInfo, from the offline geocoder.
    let (s, a, _) = call(
        &app,
        req("GET", &format!("/api/assets/{paris}"), auth, None),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(a["exifInfo"]["country"], "France", "{}", a["exifInfo"]);
    assert_eq!(a["exifInfo"]["state"], "Ile-de-France");
    assert!(a["exifInfo"]["city"].is_string());
    let (_, a, _) = call(&app, req("GET", &format!("/api/assets/{sea}"), auth, None)).await;
    assert_eq!(
        a["exifInfo"]["country"],
        Value::Null,
        "a point at sea has no place"
    );

    let search = |body: Value| {
        let app = &app;
        async move {
            let (s, b, _) = call(app, req("POST", "/api/search/metadata", auth, Some(body))).await;
            (s, b)
        }
    };
    let (s, b) = search(json!({"country": "france"})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(ids(&b), vec![paris.clone()]);
    let (_, b) = search(json!({"make": "Sony"})).await;
    assert_eq!(ids(&b), vec![tokyo.clone(), sea.clone()], "newest first");
    let (_, b) = search(json!({"make": "Sony", "order": "asc"})).await;
    assert_eq!(ids(&b), vec![sea.clone(), tokyo.clone()]);
    let (_, b) =
        search(json!({"takenAfter": "2023-01-01T00:00:00.000Z", "takenBefore": "2024-07-31"}))
            .await;
    assert_eq!(ids(&b), vec![sea.clone(), paris.clone()]);
    let (_, b) = search(json!({"originalFileName": "KITCHEN"})).await;
    assert_eq!(ids(&b), vec![nowhere.clone()]);
    let (_, b) = search(json!({"type": "VIDEO"})).await;
    assert_eq!(b["assets"]["total"], 0);
    let (_, b) = search(json!({"size": 2})).await;
    assert_eq!(b["assets"]["count"], 2);
    assert_eq!(b["assets"]["total"], 4);
    assert_eq!(b["assets"]["nextPage"], "2");
    let (_, b) = search(json!({"size": 2, "page": 2})).await;
    assert_eq!(b["assets"]["count"], 2);
    assert_eq!(b["assets"]["nextPage"], Value::Null);
    let (s, b) = search(json!({"type": "HOLOGRAM"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, _) = search(json!({"takenAfter": "last tuesday"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Archived photos leave the default search and come back with visibility=archive.
    let (s, _, _) = call(
        &app,
        req(
            "PUT",
            "/api/assets",
            auth,
            Some(json!({"ids": [paris], "isArchived": true})),
        ),
    )
    .await;
    assert!(s.is_success());
    let (_, b) = search(json!({"country": "France"})).await;
    assert_eq!(b["assets"]["total"], 0);
    let (_, b) = search(json!({"country": "France", "visibility": "archive"})).await;
    assert_eq!(ids(&b), vec![paris.clone()]);
    call(
        &app,
        req(
            "PUT",
            "/api/assets",
            auth,
            Some(json!({"ids": [paris], "isArchived": false})),
        ),
    )
    .await;

    // Suggestions narrow by the field above.
    let (s, v, _) = call(
        &app,
        req("GET", "/api/search/suggestions?type=country", auth, None),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, json!(["France", "Japan"]));
    let (_, v, _) = call(
        &app,
        req(
            "GET",
            "/api/search/suggestions?type=state&country=Japan",
            auth,
            None,
        ),
    )
    .await;
    assert_eq!(v, json!(["Tokyo"]));
    let (_, v, _) = call(
        &app,
        req(
            "GET",
            "/api/search/suggestions?type=camera-model&make=Canon",
            auth,
            None,
        ),
    )
    .await;
    assert_eq!(v, json!(["Canon One"]));
    let (s, _, _) = call(
        &app,
        req("GET", "/api/search/suggestions?type=mood", auth, None),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Explore: one photo per city.
    let (_, v, _) = call(&app, req("GET", "/api/search/explore", auth, None)).await;
    assert_eq!(v[0]["fieldName"], "exifInfo.city");
    assert_eq!(v[0]["items"].as_array().unwrap().len(), 2, "{v}");

    // Map markers: every located photo (the one at sea too, without a place).
    let (_, v, _) = call(&app, req("GET", "/api/map/markers", auth, None)).await;
    let markers = v.as_array().unwrap();
    assert_eq!(markers.len(), 3, "{v}");
    let m = markers.iter().find(|m| m["id"] == tokyo.as_str()).unwrap();
    assert_eq!(m["country"], "Japan");
    assert!((m["lat"].as_f64().unwrap() - 35.6595).abs() < 1e-3);

    // Time buckets: newest month first, with column arrays of equal length.
    let (_, v, _) = call(&app, req("GET", "/api/timeline/buckets", auth, None)).await;
    assert_eq!(
        v,
        json!([
            {"timeBucket": "2024-12-01", "count": 1},
            {"timeBucket": "2024-07-01", "count": 1},
            {"timeBucket": "2023-06-01", "count": 1},
            {"timeBucket": "2022-12-01", "count": 1},
        ])
    );
    let (s, v, _) = call(
        &app,
        req(
            "GET",
            "/api/timeline/bucket?timeBucket=2024-12-01&withCoordinates=true",
            auth,
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["id"], json!([tokyo]));
    assert_eq!(v["country"], json!(["Japan"]));
    assert_eq!(v["localOffsetHours"], json!([2.0]));
    assert_eq!(v["isImage"], json!([true]));
    assert_eq!(v["latitude"].as_array().unwrap().len(), 1);
    let (s, _, _) = call(
        &app,
        req("GET", "/api/timeline/bucket?timeBucket=soon", auth, None),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Memories on 1 December 2026: Tokyo two years ago, the kitchen four years ago.
    let (s, v, _) = call(
        &app,
        req(
            "GET",
            "/api/memories?for=2026-12-01T00:00:00.000Z&type=on_this_day",
            auth,
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let years: Vec<i64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"]["year"].as_i64().unwrap())
        .collect();
    assert_eq!(years, vec![2024, 2022]);
    assert_eq!(v[0]["assets"][0]["id"], tokyo.as_str());
    assert_eq!(v[0]["tessera"]["title"], "2 years ago");

    // Smart search needs an ML node, and says so.
    let (s, b, _) = call(
        &app,
        req(
            "POST",
            "/api/search/smart",
            auth,
            Some(json!({"query": "a tower at dusk"})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert!(b["message"].as_str().unwrap().contains("ML node"));
    let (s, _, _) = call(
        &app,
        req(
            "POST",
            "/api/tessera/search/embed",
            auth,
            Some(json!({"query": ""})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}
