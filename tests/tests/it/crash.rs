//! Crash tests: SIGKILL at random points, many times, during concurrent uploads, replication to
//! a second node, a trash purge and a bulk import. Every upload a node acknowledged survives
//! byte-identical with its catalogue record, nothing is half-done, and fsck is clean.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tessera_tests::photos::small_jpeg;
use tessera_tests::{free_port, run_sync_node, Api, Node};

const ROUNDS: usize = 10;

/// (asset id, bytes) of every upload the node acknowledged.
type Acked = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

#[test]
fn acknowledged_uploads_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut node = Node::start_on(&data, port).unwrap();
    let mut api = Api::new(&node.url);
    api.bootstrap_admin().unwrap();
    let key = api.key.clone().unwrap();
    let acked: Acked = Arc::default();
    let seed = Arc::new(AtomicU64::new(1));
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7e55e7a);
    let mut kills = Vec::new();

    for round in 0..ROUNDS {
        if round > 0 {
            node = Node::start_on(&data, port).expect("node restarts after SIGKILL");
        }
        let stop = Arc::new(AtomicBool::new(false));
        // Three uploaders at once (a phone and two browsers backing up).
        let uploaders: Vec<_> = (0..3)
            .map(|_| {
                let (acked, seed, stop, url, key) = (
                    acked.clone(),
                    seed.clone(),
                    stop.clone(),
                    node.url.clone(),
                    key.clone(),
                );
                std::thread::spawn(move || {
                    let mut api = Api::new(&url);
                    api.key = Some(key);
                    // Bounded: at most 500 uploads per round.
                    for _ in 0..500 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let s = seed.fetch_add(1, Ordering::Relaxed);
                        let bytes = small_jpeg(s);
                        match api.upload(&format!("crash-{s}.jpg"), bytes.clone()) {
                            Ok((201 | 200, body)) => {
                                acked
                                    .lock()
                                    .unwrap()
                                    .push((body["id"].as_str().unwrap().to_owned(), bytes));
                            }
                            Ok((code, body)) => panic!("unexpected answer {code}: {body}"),
                            Err(_) => break, // the node was killed mid-request: not acknowledged
                        }
                    }
                })
            })
            .collect();
        let delay = rng.random_range(30..700);
        kills.push(delay);
        std::thread::sleep(Duration::from_millis(delay));
        node.kill();
        stop.store(true, Ordering::Relaxed);
        for u in uploaders {
            u.join().unwrap();
        }
    }

    let acked = acked.lock().unwrap().clone();
    println!(
        "crash test: {ROUNDS} SIGKILLs at {kills:?} ms, 3 uploaders, {} uploads acknowledged",
        acked.len()
    );
    assert!(acked.len() >= ROUNDS, "the test must actually upload");

    let node = Node::start_on(&data, port).unwrap();
    let mut api = Api::new(&node.url);
    api.key = Some(key);
    for (id, bytes) in &acked {
        let (code, asset) = api.get_json(&format!("/api/assets/{id}")).unwrap();
        assert_eq!(
            code, 200,
            "acknowledged asset {id} lost from the catalogue: {asset}"
        );
        let (code, original) = api
            .get_bytes(&format!("/api/assets/{id}/original"))
            .unwrap();
        assert_eq!(code, 200);
        assert!(original == *bytes, "acknowledged original {id} damaged");
    }
    // Jobs interrupted by the kills are resumed: every acknowledged photo gets processed.
    for (id, _) in &acked {
        let a = api.wait_processed(id, Duration::from_secs(120)).unwrap();
        assert_eq!(a["tessera"]["status"], "ready", "{a}");
    }
    drop(node);
    assert_fsck_clean(&data);
}

/// `sync-node fsck` finds no damage: every blob matches its hash, every record's original is
/// there and indexed.
fn assert_fsck_clean(data: &Path) {
    let (ok, out) = run_sync_node(&["fsck", "--json", "--data", data.to_str().unwrap()]).unwrap();
    assert!(ok, "fsck after crashes: {out}");
    let report: serde_json::Value = serde_json::from_str(&out[out.find('{').unwrap_or(0)..])
        .unwrap_or_else(|e| panic!("fsck --json: {e}: {out}"));
    assert!(report["files"].is_u64(), "{out}");
    for field in ["corrupt", "index_without_file"] {
        assert!(
            report[field].as_array().is_some_and(|a| a.is_empty()),
            "fsck {field}: {out}"
        );
    }
    for field in ["missing_original", "unindexed"] {
        assert!(
            report["catalogue"][field]
                .as_array()
                .is_some_and(|a| a.is_empty()),
            "fsck catalogue {field}: {out}"
        );
    }
}

fn stats_total(api: &Api) -> u64 {
    api.get_json("/api/assets/statistics")
        .ok()
        .and_then(|(c, v)| (c == 200).then(|| v["total"].as_u64()).flatten())
        .unwrap_or(0)
}

/// A second node is killed again and again while it replicates from the first; restarted
/// without its ticket (it remembers whom to follow), it ends with every asset and every
/// original, byte-identical, and a clean fsck.
#[test]
fn replication_survives_sigkill_of_the_receiving_node() {
    const N: u64 = 150;
    let dir = tempfile::tempdir().unwrap();
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    let a = Node::start(&da).unwrap();
    let mut api_a = Api::new(&a.url);
    api_a.bootstrap_admin().unwrap();
    let assets: Vec<(String, Vec<u8>)> = (1..=N)
        .map(|i| {
            let bytes = small_jpeg(90_000 + i);
            let (code, body) = api_a.upload(&format!("r{i}.jpg"), bytes.clone()).unwrap();
            assert!(code == 201 || code == 200, "{code} {body}");
            (body["id"].as_str().unwrap().to_owned(), bytes)
        })
        .collect();
    let r = api_a
        .req(reqwest::Method::POST, "/api/pairing/tickets")
        .send()
        .unwrap();
    let t: serde_json::Value = r.json().unwrap();
    let ticket = t["ticket"].as_str().unwrap().to_owned();
    let port = free_port();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xb10b);
    let mut kills = Vec::new();
    let mut b = Node::start_full_on(&db, port, &["--join", &ticket, "--name", "offsite"]).unwrap();
    for _ in 0..4 {
        let delay = rng.random_range(50..900);
        kills.push(delay);
        std::thread::sleep(Duration::from_millis(delay));
        b.kill();
        b = Node::start_full_on(&db, port, &["--name", "offsite"])
            .expect("node B restarts after SIGKILL");
    }
    let mut api_b = Api::new(&b.url);
    api_b.key = api_a.key.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while stats_total(&api_b) < N && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(stats_total(&api_b), N, "catalogue on B; log: {}", b.log());
    for (id, bytes) in &assets {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (code, got) = api_b
                .get_bytes(&format!("/api/assets/{id}/original"))
                .unwrap();
            if code == 200 {
                assert!(got == *bytes, "original {id} differs on B");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "original {id} never reached B: {code}; log: {}",
                b.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    println!("replication crash test: B killed at {kills:?} ms, {N} assets replicated intact");
    drop(b);
    drop(a);
    assert_fsck_clean(&db);
    assert_fsck_clean(&da);
}

/// The node is killed while it empties the trash. After a restart each asset is either still
/// in the trash (restorable, original intact) or purged (gone from every listing); never a
/// live record without its original. Emptying again finishes the job.
#[test]
fn a_purge_killed_midway_leaves_nothing_half_done() {
    const N: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut node = Node::start_on(&data, port).unwrap();
    let mut api = Api::new(&node.url);
    api.bootstrap_admin().unwrap();
    let mut assets = Vec::new();
    for i in 1..=N {
        let bytes = small_jpeg(70_000 + i);
        let (code, body) = api.upload(&format!("t{i}.jpg"), bytes.clone()).unwrap();
        assert!(code == 201 || code == 200, "{code} {body}");
        assets.push((body["id"].as_str().unwrap().to_owned(), bytes));
    }
    // Empty the trash and kill the node while it works, a few times.
    let key = api.key.clone();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x9a7e);
    let mut rounds = Vec::new();
    for _ in 0..4 {
        // Everything in the trash again: what was purged comes back by uploading it again.
        for (i, (id, bytes)) in assets.iter().enumerate() {
            if api.get_json(&format!("/api/assets/{id}")).unwrap().0 == 404 {
                let (code, body) = api.upload(&format!("t{i}.jpg"), bytes.clone()).unwrap();
                assert!(
                    code == 201 || code == 200,
                    "re-upload of a purged photo: {code} {body}"
                );
                assert_eq!(body["id"], id.as_str());
            }
        }
        let ids: Vec<&str> = assets.iter().map(|(id, _)| id.as_str()).collect();
        let r = api
            .req(reqwest::Method::DELETE, "/api/assets")
            .json(&serde_json::json!({"ids": ids}))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
        // The request is built before the clock starts (emptying 200 takes 10–600 ms here).
        let mut emptier = Api::new(&node.url);
        emptier.key = key.clone();
        let request = emptier.req(reqwest::Method::POST, "/api/trash/empty");
        let empty = std::thread::spawn(move || {
            let _ = request.send();
        });
        let delay = rng.random_range(1..700);
        std::thread::sleep(Duration::from_millis(delay));
        node.kill();
        empty.join().unwrap();
        node = Node::start_on(&data, port).unwrap();
        api = Api::new(&node.url);
        api.key = key.clone();
        let (mut trashed, mut purged) = (0, 0);
        for (id, bytes) in &assets {
            let (code, a) = api.get_json(&format!("/api/assets/{id}")).unwrap();
            match code {
                200 => {
                    assert_eq!(a["isTrashed"], true, "{a}");
                    let (code, got) = api
                        .get_bytes(&format!("/api/assets/{id}/original"))
                        .unwrap();
                    assert!(
                        code == 200 && got == *bytes,
                        "trashed {id} lost its original"
                    );
                    trashed += 1;
                }
                404 => purged += 1,
                other => panic!("asset {id} answered {other}: {a}"),
            }
        }
        rounds.push((delay, trashed, purged));
    }
    let t0 = std::time::Instant::now();
    let r = api
        .req(reqwest::Method::POST, "/api/trash/empty")
        .send()
        .unwrap();
    assert!(r.status().is_success());
    println!(
        "purge crash test: (kill after ms, still in trash, purged) per round: {rounds:?}; \
         emptying the trash without a kill took {:?}",
        t0.elapsed()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while stats_total(&api) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for (id, _) in &assets {
        let (code, _) = api.get_json(&format!("/api/assets/{id}")).unwrap();
        assert_eq!(code, 404, "{id} survived emptying the trash");
    }
    drop(node);
    assert_fsck_clean(&data);
}

/// `sync-node import` is killed at random points, then run again until it finishes: every
/// file ends up imported exactly once, byte-identical, and fsck is clean.
#[test]
fn an_import_killed_midway_resumes_without_duplicates_or_loss() {
    const N: u64 = 80;
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = (dir.path().join("photos"), dir.path().join("data"));
    std::fs::create_dir_all(src.join("2023")).unwrap();
    let mut files = Vec::new();
    for i in 1..=N {
        let bytes = small_jpeg(50_000 + i);
        let path = src.join("2023").join(format!("IMG_{i:04}.jpg"));
        std::fs::write(&path, &bytes).unwrap();
        files.push(blake3::hash(&bytes).to_hex().to_string());
    }
    let key = {
        let node = Node::start(&data).unwrap();
        let mut api = Api::new(&node.url);
        api.bootstrap_admin().unwrap();
        api.key.clone()
    };
    let bin = tessera_tests::bin_path("sync-node").unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x1a9b);
    let mut kills = Vec::new();
    for _ in 0..3 {
        let mut child = std::process::Command::new(&bin)
            .args([
                "import",
                src.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let delay = rng.random_range(100..1500);
        kills.push(delay);
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
    }
    let (ok, out) = run_sync_node(&[
        "import",
        src.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ])
    .unwrap();
    assert!(ok, "import after kills: {out}");
    let node = Node::start(&data).unwrap();
    let mut api = Api::new(&node.url);
    api.key = key;
    assert_eq!(stats_total(&api), N, "each file imported exactly once");
    for id in &files {
        let (code, a) = api.get_json(&format!("/api/assets/{id}")).unwrap();
        assert_eq!(code, 200, "{id} missing after the resumed import: {a}");
    }
    println!("import crash test: killed at {kills:?} ms, {N} files imported exactly once");
    drop(node);
    assert_fsck_clean(&data);
}
