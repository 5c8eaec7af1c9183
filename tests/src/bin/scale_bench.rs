//! The library at scale (`cargo xtask bench --scale N`, default 300,000), as JSON to the path
//! given: a synthetic catalogue of N photos over 20 years (EXIF camera, 60% with a position and
//! its place, some favorites), what the ML node would have added (a CLIP pack per month, 512-d
//! f16 as it publishes them; faces on a quarter of the photos with their face packs and 400
//! people, 40 named) and 60 albums, written straight into a data directory with `tessera-core`
//! (no originals: the numbers are the catalogue's), then a real release `sync-node` on it:
//! - the documents' size on disk and the time to generate them;
//! - the node's start (process start → `/api/server/ping`), without its heads index (every
//!   document read and checked; its first timeline query counts every month) and, after it
//!   was stopped with SIGTERM, with the index and saved counts (the usual restart); its RSS
//!   right after, after the
//!   queries, idle 30 s, 90 s and 340 s later (after the node sheds its indexes, and the
//!   first queries then), and its peak;
//! - Immich's time buckets over the whole library (their counts must add up to N), one month's
//!   bucket, a metadata search and a free-text search, the people list, a person's photos, the
//!   album list and the largest album: the first run (cold: right after start, racing the
//!   start-up sweep that builds the shard indexes) and p50/max of the next five;
//! - smart search on the node over every photo's CLIP vector, by a phrase (embedded by the
//!   bench's ML node) and by a photo: first, p50, p95, and the node's RSS after;
//!
//! - the PWA (`$TESSERA_WEB_DIR` or `dist/`, a release build for meaningful figures) in
//!   headless Chromium: a new browser signs in and syncs the whole library (first tile, all N
//!   photos in the timeline, progress samples), then the page is opened again (the cold open
//!   from IndexedDB: first tile, whole catalogue read); JS heap, IndexedDB usage, node RSS;
//! - a bounded load test on a copy of that library: 20 clients uploading 12-MP photos at once
//!   (5 each) while 4 clients read the timeline and search, with throughput, p50/p99 latency,
//!   errors, and the node's RSS sampled every 100 ms during the load and after the media jobs
//!   drained.
//!
//! The data directory is kept under `$TESSERA_BENCH_DIR/scale-N` and reused by later runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use tessera_core::AssetRecord;
use tessera_sync_node::{Node as NodeStore, NodeConfig};

const PLACES: [(f64, f64, &str, &str, &str); 8] = [
    (48.8566, 2.3522, "Paris", "Ile-de-France", "France"),
    (35.6762, 139.6503, "Tokyo", "Tokyo", "Japan"),
    (
        40.7128,
        -74.006,
        "New York City",
        "New York",
        "United States",
    ),
    (-33.8688, 151.2093, "Sydney", "New South Wales", "Australia"),
    (52.52, 13.405, "Berlin", "Berlin", "Germany"),
    (41.3874, 2.1686, "Barcelona", "Catalonia", "Spain"),
    (45.764, 4.8357, "Lyon", "Auvergne-Rhone-Alpes", "France"),
    (
        -22.9068,
        -43.1729,
        "Rio de Janeiro",
        "Rio de Janeiro",
        "Brazil",
    ),
];
const CAMERAS: [(&str, &str); 5] = [
    ("Apple", "iPhone 15 Pro"),
    ("Google", "Pixel 8"),
    ("SONY", "ILCE-7M4"),
    ("Canon", "Canon EOS R6"),
    ("samsung", "SM-S918B"),
];

fn generate(dir: &Path, n: u64) -> Result<f64> {
    let t = Instant::now();
    let node = NodeStore::open(NodeConfig::new(dir))?;
    let admin = node
        .auth
        .admin_sign_up("admin@example.com", "correct horse", "Admin")?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(300);
    let mut lib = node.catalog.lock()?;
    let mut batch = Vec::with_capacity(1000);
    let mut months: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for i in 0..n {
        // 20 years, more photos in recent ones.
        let year = 2006 + (20.0 * (rng.random::<f64>()).sqrt()) as u32;
        let year = year.min(2025);
        let (month, day) = (rng.random_range(1..=12u32), rng.random_range(1..=28u32));
        let (make, model) = CAMERAS[rng.random_range(0..CAMERAS.len())];
        let mut r = AssetRecord {
            id: blake3::hash(&i.to_le_bytes()).to_hex().to_string(),
            owner: Some(admin.id.clone()),
            filename: Some(format!("IMG_{i:06}.jpg")),
            mime: Some("image/jpeg".into()),
            size: Some(2_000_000 + rng.random_range(0..4_000_000u64)),
            taken_at: Some(format!(
                "{year}-{month:02}-{day:02}T{:02}:{:02}:00",
                rng.random_range(0..24u32),
                rng.random_range(0..60u32)
            )),
            width: Some(4032),
            height: Some(3024),
            make: Some(make.into()),
            model: Some(model.into()),
            status: Some("ready".into()),
            favorite: (rng.random::<f64>() < 0.03).then_some(true),
            ..Default::default()
        };
        if rng.random::<f64>() < 0.6 {
            let (lat, lon, city, state, country) = PLACES[rng.random_range(0..PLACES.len())];
            r.lat = Some(lat + rng.random_range(-0.05..0.05));
            r.lon = Some(lon + rng.random_range(-0.05..0.05));
            r.city = Some(city.into());
            r.state = Some(state.into());
            r.country = Some(country.into());
        }
        // Where the node finds the asset (its ingest records this): album and asset
        // endpoints look records up through it.
        let sha1 = blake3::hash(r.id.as_bytes()).to_hex()[..40].to_owned();
        r.sha1 = Some(sha1.clone());
        node.set_location(
            &r.id,
            &tessera_sync_node::node::AssetLocation {
                owner: admin.id.clone(),
                month: format!("{year}-{month:02}"),
                sha1,
            },
        )?;
        months
            .entry(format!("{year}-{month:02}"))
            .or_default()
            .push(r.id.clone());
        batch.push(r);
        if batch.len() == 1000 {
            lib.upsert_assets(&admin.id, &batch)?;
            batch.clear();
        }
    }
    lib.upsert_assets(&admin.id, &batch)?;
    ml_and_albums(&node, &mut lib, &admin.id, &months, &mut rng)?;
    node.catalog.persist(&mut lib)?;
    drop(lib);
    node.flush()?;
    std::fs::write(dir.join(GENERATED), b"")?;
    Ok(t.elapsed().as_secs_f64())
}

/// Written when a library is complete, named after what the generator makes.
const GENERATED: &str = "generated-v2-ml-albums-locations";

/// The CLIP model of the generated packs and the face model of the generated faces: the test
/// models the bench's ML node runs, so it finds every photo analysed and the node's smart
/// search (text embedded by that ML node) ranks the packs.
const CLIP_MODEL: &str = "clip-test-color";
const CLIP_DIM: usize = 512;
const FACE_MODEL: &str = "yunet-sface";
const FACE_DIM: usize = 128;
const PEOPLE: usize = 400;
const ALBUMS: usize = 60;

/// What the ML node and the user would have added to the library: per month, a CLIP pack
/// (f16, one 512-d vector per photo, as the ML node publishes), the analysed marks, faces on a
/// quarter of the photos (one to three, each a person's centre plus noise; people drawn with a
/// long tail, as in a family's library) with their face pack, 400 people (40 named), and 60
/// albums of 20 to 3,000 photos.
fn ml_and_albums(
    node: &NodeStore,
    lib: &mut tessera_core::Library,
    user: &str,
    months: &std::collections::BTreeMap<String, Vec<String>>,
    rng: &mut rand::rngs::StdRng,
) -> Result<()> {
    use tessera_core::ml::{
        fields, FaceRecord, MlMark, PackRef, PersonRecord, PACK_CLIP, PACK_FACE,
    };
    use tessera_core::pack::{Dtype, Pack};
    use tessera_core::search::synthetic;
    use tessera_core::DocId;
    use tessera_sync_node::blobs::BlobKind;
    let centres = synthetic::vectors(PEOPLE, FACE_DIM, 41);
    let person_id =
        |p: usize| blake3::hash(format!("person {p}").as_bytes()).to_hex()[..32].to_owned();
    let mut covers: Vec<Option<String>> = vec![None; PEOPLE];
    let mut seed = 7u64;
    for (month, ids) in months {
        let doc = DocId::ml(user, month)?;
        let mut items: Vec<(String, tessera_core::library::Fields)> = Vec::new();
        let mut face_vecs = Vec::new();
        let mut marks = Vec::new();
        for id in ids {
            let faces = if rng.random::<f64>() < 0.25 {
                rng.random_range(1..=3usize)
            } else {
                0
            };
            for f in 0..faces {
                let p = (PEOPLE as f64 * rng.random::<f64>().powi(3)) as usize;
                let key = FaceRecord::key(id, f);
                let x = 0.1 + 0.25 * f as f64;
                let face = FaceRecord {
                    asset: id.clone(),
                    x1: x,
                    y1: 0.2,
                    x2: x + 0.2,
                    y2: 0.5,
                    score: 0.9,
                    person: Some(person_id(p)),
                    ..Default::default()
                };
                items.push((key.clone(), fields(&face)));
                let noise = synthetic::vectors(1, FACE_DIM, seed).remove(0);
                seed += 1;
                let v = synthetic::normalise(
                    centres[p]
                        .iter()
                        .zip(&noise)
                        .map(|(c, e)| c + 0.35 * e)
                        .collect(),
                );
                face_vecs.push((key.clone(), v));
                covers[p].get_or_insert(key);
            }
            marks.push((
                format!("{}{id}", tessera_core::ml::MARK_PREFIX),
                fields(&MlMark {
                    faces: faces as u32,
                    face_model: Some(FACE_MODEL.into()),
                    clip_model: Some(CLIP_MODEL.into()),
                    ..Default::default()
                }),
            ));
        }
        let clip: Vec<(String, Vec<f32>)> = ids
            .iter()
            .cloned()
            .zip(synthetic::vectors_iter(ids.len(), CLIP_DIM, seed))
            .collect();
        seed += 1;
        for (key, model, dim, pack) in [
            (PACK_CLIP, CLIP_MODEL, CLIP_DIM, clip),
            (PACK_FACE, FACE_MODEL, FACE_DIM, face_vecs),
        ] {
            if pack.is_empty() {
                continue;
            }
            let pack = Pack::new(model, dim, pack)?;
            let hash = node
                .blobs
                .put_bytes(BlobKind::Ml, &pack.encode(Dtype::F16))?;
            items.push((
                key.to_owned(),
                fields(&PackRef {
                    hash,
                    model: model.into(),
                    count: pack.len() as u64,
                    dim: dim as u64,
                }),
            ));
        }
        items.extend(marks);
        lib.merge_entries(&doc, &items)?;
    }
    let people: Vec<(String, tessera_core::library::Fields)> = covers
        .iter()
        .enumerate()
        .filter_map(|(p, cover)| {
            let cover = cover.clone()?;
            Some((
                format!("{}{}", tessera_core::ml::PERSON_PREFIX, person_id(p)),
                fields(&PersonRecord {
                    name: (p < 40).then(|| format!("Person {p}")),
                    cover: Some(cover),
                    ..Default::default()
                }),
            ))
        })
        .collect();
    lib.merge_entries(&DocId::people(user)?, &people)?;
    let all: Vec<&String> = months.values().flatten().collect();
    for a in 0..ALBUMS {
        let id = format!("{:032x}", rng.random::<u128>());
        let doc = lib.create_album(&id, user, &format!("Album {a}"), "", "2025-06-01T12:00:00Z")?;
        let size = (20.0 + 2980.0 * rng.random::<f64>().powi(2)) as usize;
        let start = rng.random_range(0..all.len().saturating_sub(size).max(1));
        let members: Vec<(String, String)> = all[start..(start + size).min(all.len())]
            .iter()
            .map(|id| ((*id).clone(), user.to_owned()))
            .collect();
        lib.add_album_items(&doc, &members, user, "2025-06-01T12:00:00Z")?;
    }
    Ok(())
}

/// Starts a release node on `data` and waits (at most 600 s) until it answers; the client has
/// the bench's long timeout (a whole-library query at 300k) and is not signed in yet.
/// Where a bench node's output goes: `TESSERA_NODE_LOG` (a file, appended; set `RUST_LOG` too,
/// e.g. `tower_http=debug`, for per-request timings), nowhere otherwise.
fn node_log() -> std::process::Stdio {
    let Some(path) = std::env::var_os("TESSERA_NODE_LOG") else {
        return std::process::Stdio::null();
    };
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        Ok(f) => f.into(),
        Err(e) => {
            eprintln!("cannot open {}: {e}", Path::new(&path).display());
            std::process::Stdio::null()
        }
    }
}

/// `GET /api/timeline/buckets`, whose counts must add up to `n`.
fn buckets_total(api: &tessera_tests::Api, n: u64) -> Result<()> {
    let r = api
        .req(reqwest::Method::GET, "/api/timeline/buckets")
        .send()?;
    anyhow::ensure!(r.status().is_success(), "buckets: {}", r.status());
    let v: serde_json::Value = r.json()?;
    let total: u64 = v
        .as_array()
        .map(|a| a.iter().filter_map(|b| b["count"].as_u64()).sum())
        .unwrap_or(0);
    anyhow::ensure!(total == n, "the buckets count {total} photos, not {n}");
    Ok(())
}

/// SIGTERM, as systemd stops the node, and waits (at most 60 s) for it to exit.
fn stop_node(child: &mut std::process::Child) -> Result<()> {
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            anyhow::ensure!(status.success(), "the node stopped with {status}");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    anyhow::bail!("the node did not stop within 60 s of SIGTERM")
}

fn start_node(
    bin: &Path,
    data: &Path,
    web: Option<&Path>,
    ml: Option<&str>,
) -> Result<(std::process::Child, tessera_tests::Api)> {
    let port = tessera_tests::free_port();
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["serve", "--data"]).arg(data);
    if let Some(w) = web {
        cmd.arg("--web").arg(w);
    }
    if let Some(m) = ml {
        cmd.arg("--ml").arg(m);
    }
    let mut child = cmd
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--iroh", "127.0.0.1:0", "--relay", "127.0.0.1:0"])
        .args(["--scrub-rate-mb", "0"])
        .stdout(node_log())
        .stderr(node_log())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while http
        .get(format!("{url}/api/server/ping"))
        .send()
        .map(|r| !r.status().is_success())
        .unwrap_or(true)
    {
        if Instant::now() >= deadline {
            let _ = child.kill();
            anyhow::bail!("the node did not answer in 600 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let api = tessera_tests::Api {
        base: url,
        client: http,
        key: None,
    };
    Ok((child, api))
}

const UPLOADERS: usize = 20;
const PER_UPLOADER: usize = 5;
const READERS: usize = 4;

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), &dest)?;
        }
    }
    Ok(())
}

fn ms_stats(mut v: Vec<f64>) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::Value::Null;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    serde_json::json!({"n": v.len(), "p50": pct(v.clone(), 0.5), "p99": pct(v.clone(), 0.99), "max": pct(v, 1.0)})
}

/// 20 uploaders × 5 distinct 12-MP JPEGs against a copy of the library, with 4 readers
/// (buckets, a month, a search) running until the uploads end; bounded in both.
fn load_test(bin: &Path, data: &Path) -> Result<serde_json::Value> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    let copy = data.with_file_name(format!(
        "{}-load",
        data.file_name().and_then(|n| n.to_str()).unwrap_or("scale")
    ));
    let _ = std::fs::remove_dir_all(&copy);
    copy_dir(data, &copy)?;
    eprintln!("load test: generating 12-MP photos …");
    let bases: Vec<Vec<u8>> = (0..4)
        .map(|i| tessera_tests::photos::synthetic_photo(4000, 3000, 100 + i))
        .collect::<Result<_>>()?;
    let (mut child, mut api) = start_node(bin, &copy, None, None)?;
    let pid = child.id();
    api.login("admin@example.com", "correct horse")?;
    // Let the start-up sweep build the views first (the idle figures above cover the race).
    std::thread::sleep(Duration::from_secs(20));
    let rss_before = status_kb(pid, "VmRSS:");
    let api = Arc::new(api);
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(status_kb(pid, "VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let upload_ms = Arc::new(Mutex::new(Vec::new()));
    let read_ms = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let bytes = Arc::new(AtomicU64::new(0));
    let ids = Arc::new(Mutex::new(Vec::new()));
    let t = Instant::now();
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let (api, done, read_ms, errors) =
                (api.clone(), done.clone(), read_ms.clone(), errors.clone());
            std::thread::spawn(move || {
                for i in 0..2000 {
                    if done.load(Ordering::Relaxed) {
                        break;
                    }
                    let t = Instant::now();
                    let res = match (r + i) % 3 {
                        0 => api
                            .req(reqwest::Method::GET, "/api/timeline/buckets")
                            .send(),
                        1 => api
                            .req(
                                reqwest::Method::GET,
                                "/api/timeline/bucket?timeBucket=2019-07-01",
                            )
                            .send(),
                        _ => api
                            .req(reqwest::Method::POST, "/api/search/metadata")
                            .json(&serde_json::json!({"city": "Lyon", "size": 100}))
                            .send(),
                    };
                    match res {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes();
                            read_ms
                                .lock()
                                .unwrap()
                                .push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                        Ok(r) => errors.lock().unwrap().push(format!("read: {}", r.status())),
                        Err(e) => errors.lock().unwrap().push(format!("read: {e}")),
                    }
                }
            })
        })
        .collect();
    let bases = Arc::new(bases);
    let uploaders: Vec<_> = (0..UPLOADERS)
        .map(|u| {
            let (api, bases, upload_ms, errors, bytes, ids) = (
                api.clone(),
                bases.clone(),
                upload_ms.clone(),
                errors.clone(),
                bytes.clone(),
                ids.clone(),
            );
            std::thread::spawn(move || {
                for k in 0..PER_UPLOADER {
                    // Distinct bytes per upload: a base photo plus a trailer after its EOI.
                    let mut photo = bases[(u + k) % bases.len()].clone();
                    photo
                        .extend_from_slice(format!("load {u} {k} {:?}", Instant::now()).as_bytes());
                    let len = photo.len() as u64;
                    let t = Instant::now();
                    match api.upload(&format!("load-{u}-{k}.jpg"), photo) {
                        Ok((201, body)) => {
                            upload_ms
                                .lock()
                                .unwrap()
                                .push(t.elapsed().as_secs_f64() * 1000.0);
                            bytes.fetch_add(len, Ordering::Relaxed);
                            if let Some(id) = body["id"].as_str() {
                                ids.lock().unwrap().push(id.to_owned());
                            }
                        }
                        Ok((code, body)) => errors
                            .lock()
                            .unwrap()
                            .push(format!("upload: {code} {body}")),
                        Err(e) => errors.lock().unwrap().push(format!("upload: {e}")),
                    }
                }
            })
        })
        .collect();
    for h in uploaders {
        let _ = h.join();
    }
    let upload_s = t.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    for h in readers {
        let _ = h.join();
    }
    // Until every upload's thumbnails are made (bounded).
    let ids = ids.lock().unwrap().clone();
    let drain = Instant::now() + Duration::from_secs(900);
    let mut pending = ids.clone();
    while !pending.is_empty() && Instant::now() < drain {
        peak.fetch_max(status_kb(pid, "VmRSS:"), Ordering::Relaxed);
        pending.retain(|id| {
            api.get_json(&format!("/api/assets/{id}"))
                .map(|(_, v)| v["tessera"]["status"].as_str() == Some("pending"))
                .unwrap_or(true)
        });
        std::thread::sleep(Duration::from_millis(500));
    }
    let processed_s = t.elapsed().as_secs_f64();
    let _ = sampler.join();
    std::thread::sleep(Duration::from_secs(30));
    let rss_after = status_kb(pid, "VmRSS:");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&copy);
    let errors = errors.lock().unwrap().clone();
    let n_up = upload_ms.lock().unwrap().len();
    let report = serde_json::json!({
        "uploaders": UPLOADERS,
        "readers": READERS,
        "uploads_acknowledged": n_up,
        "uploads_still_pending_after_900s": pending.len(),
        "errors": errors.len(),
        "first_errors": errors.iter().take(5).collect::<Vec<_>>(),
        "upload_wall_s": upload_s,
        "acknowledged_per_s": n_up as f64 / upload_s,
        "upload_mb_per_s": bytes.load(Ordering::Relaxed) as f64 / 1e6 / upload_s,
        "all_processed_s": processed_s,
        "processed_per_s": (n_up - pending.len()) as f64 / processed_s,
        "upload_ms": ms_stats(upload_ms.lock().unwrap().clone()),
        "read_ms": ms_stats(read_ms.lock().unwrap().clone()),
        "rss_mb": {
            "before": rss_before as f64 / 1024.0,
            "peak_during_load": peak.load(Ordering::Relaxed) as f64 / 1024.0,
            "idle_30s_after": rss_after as f64 / 1024.0,
        },
    });
    eprintln!("load test: {report}");
    Ok(report)
}

fn dir_size(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let p = e.path();
            n += if p.is_dir() {
                dir_size(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            };
        }
    }
    n
}

fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = PathBuf::from(args.first().context(
        "usage: tessera-scale-bench OUT.json [--scale N] [--pwa-only|--ml-only|--node-only]",
    )?);
    let n: u64 = args
        .iter()
        .position(|a| a == "--scale")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let base = std::env::var("TESSERA_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let data = base.join(format!("scale-{n}"));
    let mut generated = None;
    // A library made by an older generator (without ML results, albums or locations) is made
    // again.
    if !data.join("docs").is_dir() || !data.join(GENERATED).exists() {
        let _ = std::fs::remove_dir_all(&data);
        eprintln!("generating {n} assets in {} …", data.display());
        generated = Some(generate(&data, n)?);
    }
    let docs_bytes = dir_size(&data.join("docs"));
    let bin = tessera_tests::bin_path("sync-node")?;
    let web = tessera_tests::web_dir();
    // A start without the heads index (the first after an upgrade, or the index lost): every
    // document is read and checked, and the index written. The start measured next, like any
    // later one, decodes nothing.
    let _ = std::fs::remove_file(data.join("docs").join("heads.idx"));
    let _ = std::fs::remove_file(data.join("timeline-counts.json"));
    let _ = std::fs::remove_dir_all(data.join("search-index"));
    let t = Instant::now();
    let (mut first, mut first_api) = start_node(&bin, &data, web.as_deref(), None)?;
    let start_checking_s = t.elapsed().as_secs_f64();
    // Its first timeline query counts every month (racing the start-up sweep); then it is
    // stopped as a service manager does (SIGTERM), writing its heads index and the counts.
    first_api.login("admin@example.com", "correct horse")?;
    let t = Instant::now();
    buckets_total(&first_api, n)?;
    let buckets_uncounted_ms = t.elapsed().as_secs_f64() * 1000.0;
    stop_node(&mut first)?;
    let t = Instant::now();
    // The ML node the bench starts later listens there; smart search asks it for the
    // phrase's embedding.
    let ml_port = tessera_tests::free_port();
    let ml_url = format!("http://127.0.0.1:{ml_port}");
    let (mut child, mut api) = start_node(&bin, &data, web.as_deref(), Some(&ml_url))?;
    let pid = child.id();
    let start_s = t.elapsed().as_secs_f64();
    let rss_start = status_kb(pid, "VmRSS:");
    if args.iter().any(|a| a == "--ml-only") {
        api.login("admin@example.com", "correct horse")?;
        let ml = ml_node(&api, &base, ml_port, pid);
        let _ = child.kill();
        let _ = child.wait();
        let report = serde_json::json!({"assets": n, "ml_node": ml?});
        println!("{}", serde_json::to_string_pretty(&report)?);
        std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    if args.iter().any(|a| a == "--pwa-only") {
        // Only the browser figures (the node's own are above and in the load test). The node
        // goes whatever happened in the browser (a failed run must not leave it holding the
        // library's database).
        let browser = pwa(&api.base, n, pid, &base);
        let _ = child.kill();
        let _ = child.wait();
        let report = serde_json::json!({
            "assets": n,
            "node_start_s": start_s,
            "node_start_checking_every_document_s": start_checking_s,
            "pwa": browser?,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    api.login("admin@example.com", "correct horse")?;
    // Six runs each: the first (cold) apart, then p50 and max of five.
    let timed = |f: &dyn Fn() -> Result<()>| -> Result<Vec<f64>> {
        (0..6)
            .map(|_| {
                let t = Instant::now();
                f()?;
                Ok(t.elapsed().as_secs_f64() * 1000.0)
            })
            .collect()
    };
    let buckets = timed(&|| buckets_total(&api, n))?;
    let month = timed(&|| {
        let r = api
            .req(
                reqwest::Method::GET,
                "/api/timeline/bucket?timeBucket=2019-07-01",
            )
            .send()?;
        anyhow::ensure!(r.status().is_success(), "bucket: {}", r.status());
        let v: serde_json::Value = r.json()?;
        anyhow::ensure!(
            v["id"].as_array().is_some_and(|a| !a.is_empty()),
            "bucket: empty"
        );
        Ok(())
    })?;
    let search_body = |body: serde_json::Value| {
        let r = api
            .req(reqwest::Method::POST, "/api/search/metadata")
            .json(&body)
            .send()?;
        anyhow::ensure!(r.status().is_success(), "search: {}", r.status());
        let v: serde_json::Value = r.json()?;
        anyhow::ensure!(
            v["assets"]["total"].as_u64().is_some_and(|t| t > 0),
            "no hits: {v}"
        );
        Ok(())
    };
    let search =
        timed(&|| search_body(serde_json::json!({"city": "Lyon", "make": "Canon", "size": 100})))?;
    let text =
        timed(&|| search_body(serde_json::json!({"originalFileName": "IMG_1", "size": 100})))?;
    let get_ok = |path: &str| -> Result<serde_json::Value> {
        let r = api.req(reqwest::Method::GET, path).send()?;
        anyhow::ensure!(r.status().is_success(), "{path}: {}", r.status());
        Ok(r.json()?)
    };
    let people: serde_json::Value = get_ok("/api/people?size=500")?;
    let person = people["people"]
        .as_array()
        .and_then(|p| p.first())
        .and_then(|p| p["id"].as_str())
        .context("no people at scale")?
        .to_owned();
    let albums: serde_json::Value = get_ok("/api/albums")?;
    let album = albums
        .as_array()
        .and_then(|a| a.iter().max_by_key(|a| a["assetCount"].as_u64()))
        .context("no albums at scale")?
        .clone();
    let people_ms = timed(&|| get_ok("/api/people?size=500").map(drop))?;
    let person_ms =
        timed(&|| search_body(serde_json::json!({"personIds": [person], "size": 100})))?;
    let albums_ms = timed(&|| get_ok("/api/albums").map(drop))?;
    let album_id = album["id"].as_str().unwrap_or_default().to_owned();
    let album_ms = timed(&|| get_ok(&format!("/api/albums/{album_id}")).map(drop))?;
    let rss_used = status_kb(pid, "VmRSS:");
    std::thread::sleep(Duration::from_secs(30));
    let rss_idle = status_kb(pid, "VmRSS:");
    // A start-up sweep that had to build search indexes (none saved) hands the walk's memory
    // back when it ends, which may be more than 30 s after the queries at 300k.
    std::thread::sleep(Duration::from_secs(60));
    let rss_idle_90 = status_kb(pid, "VmRSS:");
    // Five minutes without a query: the node drops what it reads back when asked (search and
    // people indexes, the places table; `ShardViews::shed_idle`). Its RSS then, and the first
    // queries after it.
    std::thread::sleep(Duration::from_secs(250));
    let rss_idle_shed = status_kb(pid, "VmRSS:");
    let once = |f: &dyn Fn() -> Result<()>| -> Result<f64> {
        let t = Instant::now();
        f()?;
        Ok(t.elapsed().as_secs_f64() * 1000.0)
    };
    let search_after_idle_ms =
        once(&|| search_body(serde_json::json!({"city": "Lyon", "make": "Canon", "size": 100})))?;
    let people_after_idle_ms = once(&|| get_ok("/api/people?size=500").map(drop))?;
    let month_after_idle_ms =
        once(&|| get_ok("/api/timeline/bucket?timeBucket=2016-03-01").map(drop))?;
    let peak = status_kb(pid, "VmHWM:");
    let ml = ml_node(&api, &base, ml_port, pid).context("the ML node at scale");
    // `--node-only`: the node's and the ML node's figures, no browser and no load test.
    let node_only = args.iter().any(|a| a == "--node-only");
    let pwa = match &web {
        _ if node_only => Ok(serde_json::Value::Null),
        Some(_) => pwa(&api.base, n, pid, &base).context("the PWA at scale"),
        None => {
            eprintln!("no PWA build (dist/index.html): the browser figures are skipped");
            Ok(serde_json::Value::Null)
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let pwa = pwa?;
    let ml = ml?;
    let load = if node_only {
        serde_json::Value::Null
    } else {
        load_test(&bin, &data).context("load test")?
    };
    let report = serde_json::json!({
        "assets": n,
        "generated_s": generated,
        "docs_mb": docs_bytes as f64 / 1e6,
        "node_start_s": start_s,
        "node_start_checking_every_document_s": start_checking_s,
        "timeline_buckets_without_saved_counts_ms": buckets_uncounted_ms,
        "node_rss_mb": {
            "after_start": rss_start as f64 / 1024.0,
            "after_queries": rss_used as f64 / 1024.0,
            "idle_30s": rss_idle as f64 / 1024.0,
            "idle_90s": rss_idle_90 as f64 / 1024.0,
            "idle_340s": rss_idle_shed as f64 / 1024.0,
            "peak": peak as f64 / 1024.0,
            "budget": 150,
        },
        "timeline_buckets_ms": runs(buckets),
        "timeline_month_bucket_ms": runs(month),
        "metadata_search_ms": runs(search),
        "file_name_search_ms": runs(text),
        "people": people["people"].as_array().map(Vec::len),
        "people_list_ms": runs(people_ms),
        "after_5_idle_minutes_ms": {
            "metadata_search": search_after_idle_ms,
            "people_list": people_after_idle_ms,
            "month_bucket": month_after_idle_ms,
        },
        "a_persons_photos_ms": runs(person_ms),
        "albums_list_ms": runs(albums_ms),
        "largest_album": {"assets": album["assetCount"], "open_ms": runs(album_ms)},
        "load": load,
        "pwa": pwa,
        "ml_node": ml,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    Ok(())
}

/// An ML node (test models, default memory budget) following the library: its first sync
/// (every document received whole, round by round) and a restart from its state directory
/// (heads only). Time to the end of that first sync, documents received whole, peak and
/// settled RSS for each start. `null` without an ML node binary and models.
fn ml_node(
    api: &tessera_tests::Api,
    base: &Path,
    port: u16,
    node_pid: u32,
) -> Result<serde_json::Value> {
    let Some(models) = tessera_tests::ml::models_dir() else {
        eprintln!("no models (TESSERA_MODELS): the ML node figures are skipped");
        return Ok(serde_json::Value::Null);
    };
    if tessera_tests::bin_path("ml-node").is_err() {
        eprintln!("no ml-node binary: the ML node figures are skipped");
        return Ok(serde_json::Value::Null);
    }
    let made: serde_json::Value = api
        .req(reqwest::Method::POST, "/api/api-keys")
        .json(&serde_json::json!({"name": "scale-bench ML", "permissions": ["ml"]}))
        .send()?
        .json()?;
    let key = made["secret"]
        .as_str()
        .with_context(|| format!("no ML key: {made}"))?
        .to_owned();
    let state = base.join("scale-ml-state");
    let _ = std::fs::remove_dir_all(&state);
    let log = base.join("scale-ml.log");
    let _ = std::fs::remove_file(&log);
    let args: Vec<String> = [
        "--node",
        api.base.as_str(),
        "--api-key",
        &key,
        "--face-model",
        "yunet-sface",
        "--clip-model",
        "clip-test-color",
        "--ocr-model",
        "",
        "--state-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([state.to_string_lossy().into_owned()])
    .collect();
    let mut runs = Vec::new();
    let mut smart = serde_json::Value::Null;
    for run in ["first start", "restart from the state directory"] {
        let before = std::fs::read_to_string(&log).unwrap_or_default().len();
        let t = Instant::now();
        let mut ml = tessera_tests::ml::MlNode::start_with(&models, &log, port, &args)?;
        let pid = ml.pid().context("the ML node exited")?;
        let up_s = t.elapsed().as_secs_f64();
        let line = loop {
            let text = ml.log();
            if let Some(l) = text[before.min(text.len())..]
                .lines()
                .find(|l| l.contains("first sync with the node done"))
            {
                break l.to_owned();
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(600),
                "the ML node did not finish its first sync: {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let synced_s = t.elapsed().as_secs_f64();
        let peak_sync = status_kb(pid, "VmHWM:");
        if smart.is_null() {
            smart = smart_searches(api, node_pid)?;
        }
        // Its first work list reads every month once; then it is idle (nothing to analyse).
        std::thread::sleep(Duration::from_secs(20));
        let field = |name: &str| -> Option<u64> {
            let at = line.find(&format!(" {name}="))? + name.len() + 2;
            line[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        runs.push(serde_json::json!({
            "run": run,
            "answering_s": up_s,
            "first_sync_s": synced_s,
            "first_sync_ms_in_node": field("ms"),
            "documents_whole": field("whole"),
            "documents_changed": field("changed"),
            "rounds": field("rounds"),
            "rss_peak_during_sync_mb": peak_sync as f64 / 1024.0,
            "rss_peak_mb": status_kb(pid, "VmHWM:") as f64 / 1024.0,
            "rss_after_20s_mb": status_kb(pid, "VmRSS:") as f64 / 1024.0,
        }));
        ml.kill();
    }
    Ok(serde_json::json!({
        "state_dir_mb": dir_size(&state) as f64 / 1e6,
        "runs": runs,
        "node_smart_search": smart,
    }))
}

/// Immich's smart search on the node over every photo's CLIP vector: by a phrase (embedded by
/// the ML node, then cached by the node) and by a photo (`queryAssetId`), 100 results each.
/// The first run (the index built from the packs) apart, then p50/p95 of 20 runs over five
/// phrases (or photos); the node's RSS before, right after and 30 s after.
fn smart_searches(api: &tessera_tests::Api, pid: u32) -> Result<serde_json::Value> {
    use serde_json::json;
    let rss_before = status_kb(pid, "VmRSS:");
    let ask = |body: serde_json::Value| -> Result<serde_json::Value> {
        let r = api
            .req(reqwest::Method::POST, "/api/search/smart")
            .json(&body)
            .send()?;
        let status = r.status();
        let v: serde_json::Value = r.json()?;
        anyhow::ensure!(status.is_success(), "smart search {body}: {status} {v}");
        anyhow::ensure!(
            v["assets"]["items"]
                .as_array()
                .is_some_and(|a| a.len() == 100),
            "smart search {body}: not 100 results"
        );
        Ok(v)
    };
    let phrases = [
        "a red bicycle at night",
        "children on a beach",
        "snow in the mountains",
        "birthday cake",
        "a dog in the park",
    ];
    let mut series = serde_json::Map::new();
    let mut photos = Vec::new();
    for by in ["phrase", "photo"] {
        let mut ms = Vec::new();
        for i in 0..21 {
            let body = match by {
                "phrase" => json!({"query": phrases[i % phrases.len()], "size": 100}),
                _ => json!({"queryAssetId": photos[i % photos.len()], "size": 100}),
            };
            let t = Instant::now();
            let v = ask(body)?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            if photos.len() < 5 {
                if let Some(id) = v["assets"]["items"][i * 7 % 100]["id"].as_str() {
                    photos.push(id.to_owned());
                }
            }
        }
        let rest = ms[1..].to_vec();
        series.insert(
            by.to_owned(),
            json!({"first_ms": ms[0], "p50_ms": pct(rest.clone(), 0.5), "p95_ms": pct(rest, 0.95)}),
        );
    }
    let rss_after = status_kb(pid, "VmRSS:");
    std::thread::sleep(Duration::from_secs(30));
    series.insert(
        "node_rss_mb".to_owned(),
        json!({
            "before": rss_before as f64 / 1024.0,
            "right_after": rss_after as f64 / 1024.0,
            "idle_30s": status_kb(pid, "VmRSS:") as f64 / 1024.0,
            "peak_so_far": status_kb(pid, "VmHWM:") as f64 / 1024.0,
        }),
    );
    eprintln!(
        "node smart search at scale: {}",
        serde_json::Value::Object(series.clone())
    );
    Ok(serde_json::Value::Object(series))
}

/// What the page shows: tiles in the DOM, the timeline's count, the header's library progress.
const PAGE_STATE: &str = "const s = document.querySelector('.scroller'); \
    const p = document.getElementById('library-progress'); \
    return {t: performance.now(), tiles: document.querySelectorAll('.tile').length, \
      count: s ? Number(s.dataset.count) : -1, progress: p ? p.textContent : null, \
      saving: (window.__tesseraPerf || {})['save.pending'] || 0};";

/// Polls the page until the timeline holds all `n` photos, the header shows no progress and
/// nothing is waiting to be saved to IndexedDB;
/// returns (ms from `t0` — the page's own clock — to the first tile, to everything, samples
/// of the progress).
/// `first_shot`: where to save a screenshot of the first screen (as a user sees it while the
/// rest arrives).
fn watch_page(
    b: &tessera_tests::webdriver::Browser,
    n: u64,
    t0: f64,
    timeout: Duration,
    first_shot: Option<&Path>,
) -> Result<(f64, f64, Vec<serde_json::Value>)> {
    let start = Instant::now();
    let mut first = None;
    let mut samples = Vec::new();
    let mut last_sample = 0.0;
    loop {
        let v = b.js(PAGE_STATE, serde_json::json!([]))?;
        let t = v["t"].as_f64().unwrap_or(0.0) - t0;
        if first.is_none() && v["tiles"].as_u64().unwrap_or(0) > 0 {
            first = Some(t);
            if let Some(p) = first_shot {
                std::fs::write(p, b.screenshot()?)?;
            }
        }
        if t - last_sample >= 2000.0 {
            last_sample = t;
            samples.push(serde_json::json!({"ms": t.round(), "count": v["count"], "progress": v["progress"]}));
        }
        if let Some(f) = first {
            if v["count"].as_u64() == Some(n)
                && v["progress"].is_null()
                && v["saving"].as_f64() == Some(0.0)
            {
                return Ok((f, t, samples));
            }
        }
        anyhow::ensure!(
            start.elapsed() < timeout,
            "the page did not show all {n} photos in {} s: {v}\nthe page's counters: {}\nthe page's console:\n{}",
            timeout.as_secs(),
            b.js("return window.__tesseraPerf || null", serde_json::json!([]))
                .unwrap_or_default(),
            b.console()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The PWA on the library, in headless Chromium (a release build of `dist/` for meaningful
/// figures): a new browser signs in and syncs everything (time to the first tile, to all N in
/// the timeline), then the page is opened again from IndexedDB (cold open: first tile, whole
/// catalogue read); the JS heap, IndexedDB's usage and the node's RSS after each.
fn pwa(url: &str, n: u64, pid: u32, out_dir: &Path) -> Result<serde_json::Value> {
    use serde_json::json;
    let b = tessera_tests::webdriver::Browser::start()?;
    b.goto(url)?;
    b.wait_for(
        "the login form",
        "return !!document.getElementById('login-form')",
        Duration::from_secs(120),
    )?;
    let t0 = b.js(
        "const set = (id, v) => { const e = document.getElementById(id); e.value = v; \
           e.dispatchEvent(new Event('input', {bubbles: true})); }; \
         set('email', arguments[0]); set('password', arguments[1]); \
         document.getElementById('submit').click(); return performance.now();",
        json!(["admin@example.com", "correct horse"]),
    )?;
    let t0 = t0.as_f64().unwrap_or(0.0);
    eprintln!("PWA: a new browser syncs {n} photos …");
    let first_shot = out_dir.join("scale-pwa-first-screen.png");
    let (first, full, samples) =
        watch_page(&b, n, t0, Duration::from_secs(1800), Some(&first_shot))?;
    let memory = |b: &tessera_tests::webdriver::Browser| -> Result<serde_json::Value> {
        b.js_async(
            "const done = arguments[arguments.length - 1]; \
             navigator.storage.estimate().then(e => done({js_heap_mb: performance.memory.usedJSHeapSize / 1e6, \
               indexeddb_mb: e.usage / 1e6, page: window.__tesseraPerf || null}), e => done({error: String(e)}));",
            json!([]),
        )
    };
    let after_sync = memory(&b)?;
    let rss_sync = status_kb(pid, "VmRSS:");
    let shot = out_dir.join("scale-pwa.png");
    std::fs::write(&shot, b.screenshot()?)?;
    // The service worker may take the second load; either way it is a cold open of the
    // catalogue from IndexedDB in a fresh page.
    eprintln!("PWA: opening the page again from IndexedDB …");
    b.goto(url)?;
    let (cold_first, cold_full, _) =
        watch_page(&b, n, 0.0, Duration::from_secs(60 + n / 500), None)?;
    let after_open = memory(&b)?;
    // The page then syncs with the node (a fresh session over a library it holds): memory
    // and the page's counters once that has had time to settle.
    std::thread::sleep(Duration::from_secs(15));
    let after_open_sync = memory(&b)?;
    let searches = pwa_searches(&b)?;
    // The page's own mark: the first animation frame with a tile, from navigation start (the
    // polling above can only see the page between its tasks).
    let painted = after_open["page"]["paint.first_tile_ms"].as_f64();
    Ok(json!({
        "new_browser": {
            "first_tile_ms": first.round(),
            "all_photos_ms": full.round(),
            "progress": samples,
            "after": after_sync,
            "node_rss_mb": rss_sync as f64 / 1024.0,
        },
        "cold_open": {
            "first_tile_paint_ms": painted,
            "first_tile_seen_ms": cold_first.round(),
            "budget_ms": 1500,
            "catalogue_read_ms": cold_full.round(),
            "after": after_open,
            "after_first_sync": after_open_sync,
        },
        "search": searches,
        "screenshots": [first_shot, shot],
    }))
}

/// Free-text searches on the page's search screen, over every photo the page holds: for each
/// query, the page's own time for the search (`search.last_ms`: matching every photo, then
/// the smart part — absent here, no ML), of it the exact matching and of that gathering the
/// photos (`search::corpus`: built once, then reused while no month changes), the results,
/// and the time from the click to the results' summary on screen (polled, so up to 50 ms
/// late).
fn pwa_searches(b: &tessera_tests::webdriver::Browser) -> Result<serde_json::Value> {
    use serde_json::json;
    b.js(
        "document.getElementById('nav-search').click(); return 0;",
        json!([]),
    )?;
    b.wait_for(
        "the search page",
        "return !!document.getElementById('search-input')",
        Duration::from_secs(30),
    )?;
    let mut out = Vec::new();
    let mut last_summary = serde_json::Value::Null;
    for q in ["lyon", "canon 2015", "img_1", "no such thing", "lyon"] {
        let mut answered: Option<Instant> = None;
        let before = b.js(
            "return (window.__tesseraPerf || {})['search.runs'] || 0",
            json!([]),
        )?;
        let before = before.as_f64().unwrap_or(0.0);
        let t0 = b.js(
            "const e = document.getElementById('search-input'); e.value = arguments[0]; \
             e.dispatchEvent(new Event('input', {bubbles: true})); \
             const t = performance.now(); document.getElementById('search-go').click(); return t;",
            json!([q]),
        )?;
        let t0 = t0.as_f64().unwrap_or(0.0);
        let start = Instant::now();
        let (done, seen) = loop {
            let v = b.js(
                "const p = window.__tesseraPerf || {}; const s = document.getElementById('search-summary'); \
                 return {runs: p['search.runs'] || 0, t: performance.now(), summary: s ? s.textContent : null, \
                   ms: p['search.last_ms'], exact_ms: p['search.last_exact_ms'], results: p['search.last_results'], \
                   corpus_ms: p['search.corpus_ms']};",
                json!([]),
            )?;
            // Answered, and the summary on screen is this search's (it changed, or the
            // page has had a second to show it).
            if v["runs"].as_f64().unwrap_or(0.0) > before
                && v["summary"].is_string()
                && (v["summary"] != last_summary
                    || answered.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(1))
            {
                let seen = v["t"].as_f64().unwrap_or(0.0) - t0;
                last_summary = v["summary"].clone();
                break (v, seen);
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(120),
                "the search for {q:?} did not answer: {v}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        eprintln!("PWA search {q:?}: {}", done["summary"]);
        out.push(json!({
            "query": q,
            "results": done["results"],
            "search_ms": done["ms"],
            "exact_matching_ms": done["exact_ms"],
            "of_it_gathering_the_photos_ms": done["corpus_ms"],
            "summary_seen_ms": seen.round(),
        }));
    }
    Ok(json!(out))
}

/// The first (cold) run, and p50 and max of the others.
fn runs(ms: Vec<f64>) -> serde_json::Value {
    let rest = ms.get(1..).unwrap_or_default().to_vec();
    serde_json::json!({
        "first": ms.first(),
        "p50": pct(rest.clone(), 0.5),
        "max": pct(rest, 1.0),
    })
}
