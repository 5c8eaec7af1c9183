//! Crash test: SIGKILL the node at random points during uploads, many times; every upload it
//! acknowledged must survive byte-identical, with its catalogue record, and fsck must be clean.

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
        let uploader = {
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
        };
        let delay = rng.random_range(30..700);
        kills.push(delay);
        std::thread::sleep(Duration::from_millis(delay));
        node.kill();
        stop.store(true, Ordering::Relaxed);
        uploader.join().unwrap();
    }

    let acked = acked.lock().unwrap().clone();
    println!(
        "crash test: {ROUNDS} SIGKILLs at {kills:?} ms, {} uploads acknowledged",
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
    let (ok, out) = run_sync_node(&["fsck", "--data", data.to_str().unwrap()]).unwrap();
    assert!(ok && out.contains("blobs"), "fsck after crashes: {out}");
    assert!(
        !out.contains("CORRUPT") && !out.contains("missing on disk"),
        "{out}"
    );
}
