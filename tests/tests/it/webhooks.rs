//! Webhooks against a loopback receiver that refuses the first attempts of every delivery,
//! with the node killed (SIGKILL) and restarted while deliveries wait for their retry: every
//! event arrives, signed, and each delivery id is accepted exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;
use tessera_tests::photos::small_jpeg;
use tessera_tests::{free_port, Api, Node};

#[derive(Debug, Clone)]
struct Received {
    delivery: String,
    event: String,
    timestamp: u64,
    signature: String,
    body: String,
    answered: u16,
}

/// A receiver on loopback: answers 500 to every attempt until `open` is set, and to the first
/// `fail_first` attempts of each delivery id; then 200. (Closed while the test kills the node:
/// a delivery accepted just before the kill, not yet marked done, would rightly be sent again
/// — at least once — and the test checks exactly once.) Returns its URL and what it saw.
fn receiver(
    fail_first: usize,
    open: Arc<std::sync::atomic::AtomicBool>,
) -> (String, Arc<Mutex<Vec<Received>>>) {
    let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let s = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/hook",
                axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                    let s = s.clone();
                    let open = open.clone();
                    async move {
                        let h = |k: &str| {
                            headers
                                .get(k)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        let mut seen = s.lock().unwrap();
                        let delivery = h("x-tessera-delivery");
                        let tries = seen.iter().filter(|r| r.delivery == delivery).count();
                        let open = open.load(std::sync::atomic::Ordering::SeqCst);
                        let answered = if tries < fail_first || !open {
                            500
                        } else {
                            200
                        };
                        seen.push(Received {
                            delivery,
                            event: h("x-tessera-event"),
                            timestamp: h("x-tessera-timestamp").parse().unwrap_or(0),
                            signature: h("x-tessera-signature"),
                            body,
                            answered,
                        });
                        axum::http::StatusCode::from_u16(answered).unwrap()
                    }
                }),
            );
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    (url, seen)
}

fn hmac_hex(secret: &str, ts: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}.{body}").as_bytes());
    let out = mac.finalize().into_bytes();
    out.iter().map(|b| format!("{b:02x}")).collect()
}

fn wait_until(
    what: &str,
    seen: &Mutex<Vec<Received>>,
    timeout: Duration,
    mut f: impl FnMut() -> bool,
) {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > timeout {
            let got: Vec<(String, String, u16)> = seen
                .lock()
                .unwrap()
                .iter()
                .map(|r| (r.event.clone(), r.delivery.clone(), r.answered))
                .collect();
            panic!("timed out waiting for {what}; received {got:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn webhooks_are_signed_retried_and_survive_a_restart() {
    let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (url, seen) = receiver(2, open.clone());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n");
    let port = free_port();
    let args = ["--webhook-retry-ms", "400"];
    let mut node = Node::start_full_on(&data, port, &args).unwrap();
    let mut api = Api::new(&node.url);
    api.bootstrap_admin().unwrap();
    let secret = "correct-horse-battery-staple";

    // Bad input is refused clearly.
    let r = api
        .req(Method::POST, "/api/tessera/webhooks")
        .json(&json!({"url": "ftp://example.com/x"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = api
        .req(Method::POST, "/api/tessera/webhooks")
        .json(&json!({"url": url, "events": ["asset.exploded"]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    let hook = api
        .req(Method::POST, "/api/tessera/webhooks")
        .json(&json!({"url": url, "secret": secret,
                      "events": ["asset.created", "asset.trashed", "asset.deleted",
                                 "album.updated", "share.created"]}))
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap();
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    assert_eq!(
        hook["secret"], secret,
        "the secret is shown once, at creation"
    );
    let listed = api.get_json("/api/tessera/webhooks").unwrap().1;
    assert!(listed[0]["secret"].is_null(), "and never listed: {listed}");

    // Events: an upload, trash, a purge, an album change, a public link, a test event.
    let (code, a) = api.upload("a.jpg", small_jpeg(41)).unwrap();
    assert_eq!(code, 201);
    let (_, b) = api.upload("b.jpg", small_jpeg(42)).unwrap();
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let r = api
        .req(Method::DELETE, "/api/assets")
        .json(&json!({"ids": [a]}))
        .send()
        .unwrap();
    assert!(r.status().is_success());

    // The first attempts fail; kill the node while deliveries wait for their retry.
    wait_until(
        "first failed attempts",
        &seen,
        Duration::from_secs(20),
        || seen.lock().unwrap().iter().any(|r| r.answered == 500),
    );
    node.kill();
    node = Node::start_full_on(&data, port, &args).unwrap();
    open.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut api = Api::new(&node.url);
    api.login("admin@example.com", "correct horse").unwrap();
    let r = api
        .req(Method::DELETE, "/api/assets")
        .json(&json!({"ids": [a], "force": true}))
        .send()
        .unwrap();
    assert!(r.status().is_success());
    let album = api
        .req(Method::POST, "/api/albums")
        .json(&json!({"albumName": "Hooks"}))
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap();
    let album_id = album["id"].as_str().unwrap();
    let r = api
        .req(Method::PUT, &format!("/api/albums/{album_id}/assets"))
        .json(&json!({"ids": [b]}))
        .send()
        .unwrap();
    assert!(r.status().is_success());
    let r = api
        .req(Method::POST, "/api/shared-links")
        .json(&json!({"type": "ALBUM", "albumId": album_id}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let r = api
        .req(
            Method::POST,
            &format!("/api/tessera/webhooks/{hook_id}/test"),
        )
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);

    let want: BTreeSet<&str> = [
        "asset.created",
        "asset.trashed",
        "asset.deleted",
        "album.updated",
        "share.created",
        "test",
    ]
    .into();
    wait_until(
        "every event delivered",
        &seen,
        Duration::from_secs(60),
        || {
            let seen = seen.lock().unwrap();
            let ok: BTreeSet<&str> = seen
                .iter()
                .filter(|r| r.answered == 200)
                .map(|r| r.event.as_str())
                .collect();
            want.iter().all(|e| ok.contains(e))
                && seen
                    .iter()
                    .filter(|r| r.event == "asset.created" && r.answered == 200)
                    .count()
                    == 2
        },
    );
    // Let anything that would be sent twice arrive.
    std::thread::sleep(Duration::from_secs(2));
    let seen = seen.lock().unwrap().clone();
    let mut accepted: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &seen {
        // Signed: HMAC-SHA256(secret, "<timestamp>.<body>"), recomputed independently.
        assert_eq!(
            r.signature,
            format!("sha256={}", hmac_hex(secret, r.timestamp, &r.body)),
            "signature of {}",
            r.delivery
        );
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(
            body["id"],
            r.delivery.as_str(),
            "the body names its delivery"
        );
        assert_eq!(body["event"], r.event.as_str());
        if r.answered == 200 {
            *accepted.entry(&r.delivery).or_default() += 1;
        }
    }
    assert!(
        accepted.values().all(|n| *n == 1),
        "each delivery accepted exactly once: {accepted:?}"
    );
    // Every delivery id was retried: refused at least twice (more while the node was being
    // killed), then accepted once, restart or not.
    for id in accepted.keys() {
        let refused = seen
            .iter()
            .filter(|r| r.delivery == *id && r.answered == 500)
            .count();
        assert!(refused >= 2, "delivery {id}: refused {refused} times");
    }
    let created: Vec<Value> = seen
        .iter()
        .filter(|r| r.event == "asset.created" && r.answered == 200)
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap())
        .collect();
    assert!(created.iter().any(|c| c["data"]["assetId"] == a));
    // The delivery log shows the retries and the success.
    let (_, log) = api
        .get_json(&format!("/api/tessera/webhooks/{hook_id}/deliveries"))
        .unwrap();
    let outcomes: BTreeSet<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["outcome"].as_str())
        .collect();
    assert!(
        outcomes.contains("retrying") && outcomes.contains("delivered"),
        "{log}"
    );
    println!(
        "webhooks: {} deliveries, {} attempts, all signed, each accepted once, across a SIGKILL",
        accepted.len(),
        seen.len()
    );
}
