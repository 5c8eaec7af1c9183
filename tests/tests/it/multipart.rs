//! The multipart upload handler under hostile bodies: well-formed uploads mutated at random
//! (truncated, bytes flipped, parts duplicated or dropped, bogus boundaries and headers, huge
//! declared sizes). Whatever arrives, the node answers with a client error or a success, never
//! a 5xx or a panic, and what it stored stays consistent: every acknowledged asset is readable
//! byte-identical and the catalogue check finds nothing wrong.
//!
//! This is the in-process counterpart of the libFuzzer targets in `fuzz/` (those cover the
//! parsers; this drives the real axum handler with the node behind it).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

use crate::http::call;

const BOUNDARY: &str = "tesseraFuzzBoundary";

fn part(name: &str, filename: Option<&str>, ctype: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut p = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"");
    if let Some(f) = filename {
        p.push_str(&format!("; filename=\"{f}\""));
    }
    p.push_str("\r\n");
    if let Some(c) = ctype {
        p.push_str(&format!("Content-Type: {c}\r\n"));
    }
    p.push_str("\r\n");
    let mut v = p.into_bytes();
    v.extend_from_slice(body);
    v.extend_from_slice(b"\r\n");
    v
}

/// What is done to a well-formed upload.
#[derive(Debug, Clone)]
enum Mutation {
    None,
    Truncate(usize),
    Flip(Vec<(usize, u8)>),
    DropPart(usize),
    DuplicatePart(usize),
    SwapParts(usize, usize),
    NoClosingBoundary,
    WrongBoundaryHeader,
    HugeSidecar,
    BadDates(String),
    OddFilename(String),
    PartHeaderGarbage(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        Just(Mutation::None),
        (0usize..4000).prop_map(Mutation::Truncate),
        proptest::collection::vec((0usize..4000, any::<u8>()), 1..12).prop_map(Mutation::Flip),
        (0usize..6).prop_map(Mutation::DropPart),
        (0usize..6).prop_map(Mutation::DuplicatePart),
        (0usize..6, 0usize..6).prop_map(|(a, b)| Mutation::SwapParts(a, b)),
        Just(Mutation::NoClosingBoundary),
        Just(Mutation::WrongBoundaryHeader),
        Just(Mutation::HugeSidecar),
        "\\PC{0,40}".prop_map(Mutation::BadDates),
        "\\PC{0,300}".prop_map(Mutation::OddFilename),
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(Mutation::PartHeaderGarbage),
    ]
}

fn build(photo: &[u8], m: &Mutation) -> (Vec<u8>, String) {
    let xmp = br#"<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="48,51.5N" exif:GPSLongitude="2,21.1E"/></rdf:RDF></x:xmpmeta>"#;
    let (mut created, mut filename) = ("2021-03-04T05:06:07.000Z".to_owned(), "p.jpg".to_owned());
    match m {
        Mutation::BadDates(d) => created = d.clone(),
        Mutation::OddFilename(f) => filename = f.replace(['"', '\r', '\n'], "_"),
        _ => {}
    }
    let mut parts = vec![
        part("deviceAssetId", None, None, b"fuzz-1"),
        part("deviceId", None, None, b"fuzz"),
        part("fileCreatedAt", None, None, created.as_bytes()),
        part("fileModifiedAt", None, None, b"2021-03-04T05:06:07.000Z"),
        part("sidecarData", Some("p.xmp"), Some("application/xml"), xmp),
        part("assetData", Some(&filename), Some("image/jpeg"), photo),
    ];
    match m {
        Mutation::DropPart(i) => {
            parts.remove(i % parts.len());
        }
        Mutation::DuplicatePart(i) => {
            let p = parts[i % parts.len()].clone();
            parts.push(p);
        }
        Mutation::SwapParts(a, b) => {
            let n = parts.len();
            parts.swap(a % n, b % n);
        }
        Mutation::HugeSidecar => {
            parts[4] = part("sidecarData", Some("p.xmp"), None, &vec![b'x'; 5 << 20]);
        }
        Mutation::PartHeaderGarbage(g) => {
            let mut p = format!("--{BOUNDARY}\r\n").into_bytes();
            p.extend_from_slice(g);
            p.extend_from_slice(b"\r\n\r\nvalue\r\n");
            parts.insert(1, p);
        }
        _ => {}
    }
    let mut body: Vec<u8> = parts.concat();
    if !matches!(m, Mutation::NoClosingBoundary) {
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    }
    match m {
        Mutation::Truncate(n) => body.truncate(*n.min(&body.len())),
        Mutation::Flip(flips) => {
            for (at, b) in flips {
                if !body.is_empty() {
                    let i = at % body.len();
                    body[i] ^= b | 1;
                }
            }
        }
        _ => {}
    }
    let ctype = if matches!(m, Mutation::WrongBoundaryHeader) {
        "multipart/form-data; boundary=somethingElse".to_owned()
    } else {
        format!("multipart/form-data; boundary={BOUNDARY}")
    };
    (body, ctype)
}

#[test]
fn hostile_multipart_bodies_get_client_errors_and_leave_the_store_consistent() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (app, node) = crate::http::app_with_node();
    let token = rt.block_on(async {
        let json_req = |path: &str, body: serde_json::Value| {
            Request::post(path)
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap()
        };
        call(
            &app,
            json_req(
                "/api/auth/admin-sign-up",
                json!({"email": "a@example.com", "password": "correct horse", "name": "A"}),
            ),
        )
        .await;
        let (_, l, _) = call(
            &app,
            json_req(
                "/api/auth/login",
                json!({"email": "a@example.com", "password": "correct horse"}),
            ),
        )
        .await;
        format!("Bearer {}", l["accessToken"].as_str().unwrap())
    });
    let cases = std::env::var("TESSERA_SOAK_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(160);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let statuses = std::cell::RefCell::new(std::collections::BTreeMap::<u16, usize>::new());
    let stored = std::cell::RefCell::new(Vec::new());
    let strategy = (0u64..1000, mutation());
    let outcome = runner.run(&strategy, |(seed, m)| {
        let photo = tessera_tests::photos::small_jpeg(seed);
        let (body, ctype) = build(&photo, &m);
        let req = Request::post("/api/assets")
            .header("authorization", &token)
            .header("content-type", ctype)
            .body(Body::from(body))
            .unwrap();
        let (s, b, _) = rt.block_on(call(&app, req));
        *statuses.borrow_mut().entry(s.as_u16()).or_default() += 1;
        prop_assert!(
            s.is_success() || s.is_client_error(),
            "{m:?} answered {s}: {b}"
        );
        if s.is_client_error() {
            prop_assert!(b["message"].is_string(), "{m:?}: no message in {b}");
        }
        if s.is_success() {
            let id = b["id"].as_str().unwrap_or_default().to_owned();
            prop_assert!(!id.is_empty(), "{b}");
            stored.borrow_mut().push(id);
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    let statuses = statuses.into_inner();
    let mut stored = stored.into_inner();
    eprintln!("multipart fuzz: {cases} bodies, statuses {statuses:?}");
    assert!(
        statuses.keys().any(|s| *s < 300) && statuses.keys().any(|s| *s >= 400),
        "the mutations should produce both accepted and refused uploads: {statuses:?}"
    );
    // Every acknowledged asset is there, byte-identical to what its id names.
    stored.sort();
    stored.dedup();
    rt.block_on(async {
        for id in &stored {
            let res = tower::ServiceExt::oneshot(
                app.router.clone(),
                Request::get(format!("/api/assets/{id}/original"))
                    .header("authorization", &token)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{id}");
            let bytes = http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap()
                .to_bytes();
            assert_eq!(blake3::hash(&bytes).to_hex().to_string(), *id);
        }
    });
    let report = tessera_sync_node::housekeeping::check_catalogue(&node, false).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(report.records >= stored.len(), "{report:?}");
}
