//! Real `sync-node` processes on loopback, real camera photos.

use std::collections::BTreeMap;
use std::time::Duration;

use tessera_core::{DocId, Library, PeerSync, SyncEnvelope};
use tessera_tests::photos::{fixture, small_jpeg, with_exif, ExifSpec};
use tessera_tests::{run_sync_node, Api, Node};

const REAL: &[&str] = &[
    "r_canon.jpg",
    "r_sony.jpg",
    "r_olympus.jpg",
    "r_pana.jpg",
    "r_ricoh.jpg",
    "r_sigma.jpg",
    "large.jpg",
    "L01.jpg",
    "noexif.jpg",
];

fn b3(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::Digest;
    sha1::Sha1::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A real photo (Casio QV-R51, 500×667) with GPS, an offset and orientation 6 written in.
fn gps_photo() -> Vec<u8> {
    let spec = ExifSpec {
        make: Some("Google".into()),
        model: Some("Pixel 6".into()),
        lens: Some("Pixel 6 back camera 6.81mm f/1.85".into()),
        orientation: Some(6),
        date_time_original: Some("2023:07:14 18:45:12".into()),
        offset: Some("+02:00".into()),
        gps: Some((48.858_37, 2.294_481)),
        exposure: Some((1, 250)),
        f_number: Some((185, 100)),
        iso: Some(64),
        focal_length: Some((681, 100)),
    };
    with_exif(&fixture("large.jpg").unwrap(), &spec).unwrap()
}

fn dims(jpeg: &[u8]) -> (u32, u32) {
    let img = image::load_from_memory(jpeg).expect("derivative decodes");
    (img.width(), img.height())
}

/// Snapshot of every file under data/blobs (path → blake3 of content).
fn blob_snapshot(data: &std::path::Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![data.join("blobs")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.display().to_string(), b3(&std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

#[test]
fn upload_real_photos_roundtrip_metadata_and_derivatives() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data")).unwrap();
    let mut api = Api::new(&node.url);
    api.bootstrap_admin().unwrap();

    let mut photos: Vec<(String, Vec<u8>)> = REAL
        .iter()
        .map(|n| (n.to_string(), fixture(n).unwrap()))
        .collect();
    photos.push(("PXL_20230714_164512.jpg".into(), gps_photo()));
    for (name, bytes) in &photos {
        let (code, body) = api.upload(name, bytes.clone()).unwrap();
        assert_eq!(code, 201, "{name}: {body}");
        assert_eq!(body["status"], "created");
        assert_eq!(body["id"], b3(bytes), "asset id is the BLAKE3 of the bytes");
    }
    // Same bytes again: a no-op with Immich's duplicate answer.
    let (code, body) = api.upload("again.jpg", photos[0].1.clone()).unwrap();
    assert_eq!((code, body["status"].as_str()), (200, Some("duplicate")));
    assert_eq!(body["id"], b3(&photos[0].1));

    for (name, bytes) in &photos {
        let id = b3(bytes);
        let asset = api.wait_processed(&id, Duration::from_secs(60)).unwrap();
        assert_eq!(asset["tessera"]["status"], "ready", "{name}: {asset}");
        assert_eq!(asset["originalFileName"], name.as_str());
        let (code, original) = api
            .get_bytes(&format!("/api/assets/{id}/original"))
            .unwrap();
        assert_eq!(code, 200);
        assert!(
            original == *bytes,
            "{name}: original must come back byte-identical"
        );
        let (w, h) = (
            asset["width"].as_u64().unwrap() as u32,
            asset["height"].as_u64().unwrap() as u32,
        );
        let (code, thumb) = api
            .get_bytes(&format!("/api/assets/{id}/thumbnail?size=thumbnail"))
            .unwrap();
        assert_eq!(code, 200);
        let (tw, th) = dims(&thumb);
        assert_eq!(
            tw.min(th),
            w.min(h).min(250),
            "{name}: thumbnail short side ({tw}x{th} of {w}x{h})"
        );
        let (code, preview) = api
            .get_bytes(&format!("/api/assets/{id}/thumbnail?size=preview"))
            .unwrap();
        assert_eq!(code, 200);
        let (pw, ph) = dims(&preview);
        assert_eq!(pw.max(ph), w.max(h).min(1440), "{name}: preview long side");
        assert_eq!(tw > th, w > h, "{name}: orientation kept in thumbnail");
        assert!(asset["thumbhash"].as_str().is_some_and(|t| !t.is_empty()));
    }

    // Metadata from real cameras' EXIF.
    let canon = api
        .get_json(&format!("/api/assets/{}", b3(&photos[0].1)))
        .unwrap()
        .1;
    assert_eq!(canon["exifInfo"]["make"], "Canon");
    assert_eq!(canon["exifInfo"]["model"], "Canon PowerShot G1 X Mark II");
    assert_eq!(canon["localDateTime"], "2013-12-17T14:04:24");
    assert_eq!(canon["exifInfo"]["exposureTime"], "1/50");
    assert_eq!(canon["exifInfo"]["iso"], 100);
    // GPS, offset, lens and orientation 6 (portrait → stored 500x667 landscape-rotated).
    let gps = api
        .get_json(&format!("/api/assets/{}", b3(&photos.last().unwrap().1)))
        .unwrap()
        .1;
    let ex = &gps["exifInfo"];
    assert!(
        (ex["latitude"].as_f64().unwrap() - 48.85837).abs() < 1e-4,
        "{ex}"
    );
    assert!(
        (ex["longitude"].as_f64().unwrap() - 2.294481).abs() < 1e-4,
        "{ex}"
    );
    assert_eq!(gps["localDateTime"], "2023-07-14T18:45:12+02:00");
    assert_eq!(ex["lensModel"], "Pixel 6 back camera 6.81mm f/1.85");
    assert_eq!(ex["fNumber"], 1.85);
    assert_eq!(
        (gps["width"].as_u64(), gps["height"].as_u64()),
        (Some(667), Some(500)),
        "orientation 6 swaps dimensions"
    );
    // No EXIF date: the client's fileCreatedAt is used.
    let noexif = api
        .get_json(&format!(
            "/api/assets/{}",
            b3(&fixture("noexif.jpg").unwrap())
        ))
        .unwrap()
        .1;
    assert_eq!(noexif["localDateTime"], "2021-03-04T05:06:07.000+00:00");

    // Immich's bulk upload check speaks SHA-1 (hex or base64).
    let body = serde_json::json!({"assets": [
        {"id": "a", "checksum": sha1_hex(&photos[1].1)},
        {"id": "b", "checksum": sha1_hex(b"never uploaded")},
    ]});
    let r: serde_json::Value = api
        .req(reqwest::Method::POST, "/api/assets/bulk-upload-check")
        .json(&body)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["results"][0]["action"], "reject");
    assert_eq!(r["results"][0]["reason"], "duplicate");
    assert_eq!(r["results"][0]["assetId"], b3(&photos[1].1));
    assert_eq!(r["results"][1]["action"], "accept");

    // The catalogue reaches a device through the sans-IO sync protocol: records grouped by
    // capture month, with thumbhash and derivative hashes.
    let me = api.get_json("/api/users/me").unwrap().1;
    let user = me["id"].as_str().unwrap().to_owned();
    // One request/response round as a device named `peer` (saying what it holds when
    // `holds`): whether both sides were quiet, and how many documents came whole.
    let round_trip = |peer: &str, sync: &mut PeerSync, lib: &mut Library, holds: bool| {
        let ids: Vec<DocId> = lib.ids().cloned().collect();
        let mut up = SyncEnvelope::new(peer, sync.generate(lib, &ids));
        if holds {
            up = up.with_holds(&ids);
        }
        let quiet_up = up.docs.is_empty();
        let res = api
            .req(reqwest::Method::POST, "/api/tessera/sync")
            .body(up.encode())
            .send()
            .unwrap();
        assert_eq!(res.status(), 200);
        let down = SyncEnvelope::decode(&res.bytes().unwrap()).unwrap();
        let whole = down.docs.iter().filter(|m| m.is_snapshot()).count();
        let quiet_down = down.docs.is_empty();
        sync.receive(lib, down.docs, |d| d.user() == user).unwrap();
        (quiet_up && quiet_down, whole)
    };
    let mut lib = Library::new(&[7; 16]);
    let mut sync = PeerSync::new();
    for round in 0.. {
        assert!(round < 20, "sync must converge");
        if round_trip("test-device", &mut sync, &mut lib, false).0 {
            break;
        }
    }
    let shards = lib.shards(&user).unwrap();
    assert_eq!(
        shards.iter().map(|s| s.count).sum::<u64>(),
        photos.len() as u64,
        "{shards:?}"
    );
    assert!(shards.iter().any(|s| s.month == "2013-12"));
    let dec = lib
        .assets(&DocId::shard(&user, "2013-12").unwrap())
        .unwrap();
    assert!(dec
        .iter()
        .any(|r| r.make.as_deref() == Some("Canon") && r.thumbhash.is_some() && r.thumb.is_some()));

    // A device that says what it holds (a new browser) gets the rest whole, as saved
    // documents, in far fewer rounds; it ends with the same documents, and its own changes
    // still reach the node.
    let mut fresh = Library::new(&[8; 16]);
    let mut fresh_sync = PeerSync::new();
    let mut whole = 0;
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 20, "sync must converge");
        let (done, n) = round_trip("new-browser", &mut fresh_sync, &mut fresh, true);
        whole += n;
        if done {
            break;
        }
    }
    let ids: Vec<DocId> = lib.ids().cloned().collect();
    assert_eq!(whole, ids.len(), "every document came whole");
    // One round of documents, one where the device's root (its summaries recomputed on
    // arrival) says its heads, one quiet.
    assert!(rounds <= 3, "{rounds} rounds");
    for id in &ids {
        assert_eq!(fresh.heads(id), lib.heads(id), "{id}");
    }
    let mut fav = fresh
        .assets(&DocId::shard(&user, "2013-12").unwrap())
        .unwrap()[0]
        .clone();
    fav.favorite = Some(true);
    fresh.upsert_assets(&user, &[fav.clone()]).unwrap();
    for _ in 0..10 {
        if round_trip("new-browser", &mut fresh_sync, &mut fresh, true).0 {
            break;
        }
    }
    let got = api.get_json(&format!("/api/assets/{}", fav.id)).unwrap().1;
    assert_eq!(got["isFavorite"], true, "{got}");

    // The same browser reopened: it holds its documents lazily (read from what it stored, as
    // the PWA does from IndexedDB) and starts a fresh session. For the documents it has not
    // loaded it sends only their heads; they agree with the node's, so nothing more is said
    // about them and the browser loads none of them.
    let stored: std::collections::BTreeMap<DocId, Vec<u8>> = fresh
        .ids()
        .cloned()
        .collect::<Vec<_>>()
        .into_iter()
        .map(|id| {
            let bytes = fresh.save(&id).unwrap();
            (id, bytes)
        })
        .collect();
    let disk = std::sync::Arc::new(stored.clone());
    let mut reopened = Library::new(&[8; 16]);
    reopened.set_loader(Box::new(move |id| {
        disk.get(id)
            .cloned()
            .ok_or_else(|| format!("{id} is not stored"))
    }));
    for (id, bytes) in &stored {
        reopened.load(id.clone(), bytes).unwrap();
    }
    reopened.evict(0, &|_| true);
    reopened.evict(0, &|_| true);
    let ids: Vec<DocId> = reopened.ids().cloned().collect();
    let loaded = |lib: &Library| ids.iter().filter(|d| lib.is_loaded(d)).count();
    let before = loaded(&reopened);
    assert!(
        ids.len() >= 4 && before <= 1,
        "{before} of {} loaded",
        ids.len()
    );
    let mut reopened_sync = PeerSync::new();
    let first = reopened_sync.generate(&mut reopened, &ids);
    let heads_only = first
        .iter()
        .filter(|m| m.kind == tessera_core::MsgKind::Heads)
        .count();
    assert_eq!(
        heads_only,
        ids.len() - before,
        "heads for every unloaded document"
    );
    let mut reopened_sync = PeerSync::new();
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 10, "sync must converge");
        if round_trip("new-browser", &mut reopened_sync, &mut reopened, true).0 {
            break;
        }
    }
    assert!(rounds <= 3, "{rounds} rounds");
    assert!(
        loaded(&reopened) <= before + 1,
        "{} of {} documents loaded",
        loaded(&reopened),
        ids.len()
    );
    for id in &ids {
        assert_eq!(reopened.heads(id), fresh.heads(id), "{id}");
    }

    // A device may not write another user's documents: refused, and nothing changes.
    let mut evil = Library::new(&[9; 16]);
    evil.upsert_assets(
        "someone-else",
        &[tessera_core::AssetRecord {
            id: "x".into(),
            ..Default::default()
        }],
    )
    .unwrap();
    let ids: Vec<DocId> = evil.ids().cloned().collect();
    let forged = SyncEnvelope::new("evil", PeerSync::new().generate(&mut evil, &ids));
    let res = api
        .req(reqwest::Method::POST, "/api/tessera/sync")
        .body(forged.encode())
        .send()
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().unwrap().contains("not allowed to write"));
    drop(node);
    assert!(!std::fs::read_dir(dir.path().join("data/docs"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains("someone-else")));
}

#[test]
fn bad_input_gets_clear_errors_and_leaves_stored_data_intact() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = Node::start(&data).unwrap();
    let mut api = Api::new(&node.url);
    api.bootstrap_admin().unwrap();
    let good = fixture("r_canon.jpg").unwrap();
    let (code, _) = api.upload("good.jpg", good.clone()).unwrap();
    assert_eq!(code, 201);
    api.wait_processed(&b3(&good), Duration::from_secs(30))
        .unwrap();
    let before = blob_snapshot(&data);

    let (code, body) = api.upload("empty.jpg", Vec::new()).unwrap();
    assert_eq!(code, 400);
    assert!(
        body["message"].as_str().unwrap().contains("empty"),
        "{body}"
    );
    let (code, body) = api.upload("notes.txt", b"hello".to_vec()).unwrap();
    assert_eq!(code, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Unsupported file type"),
        "{body}"
    );
    let form = reqwest::blocking::multipart::Form::new()
        .text("deviceAssetId", "x")
        .text("deviceId", "y");
    let r = api
        .req(reqwest::Method::POST, "/api/assets")
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("assetData is required"));
    let form = reqwest::blocking::multipart::Form::new()
        .part(
            "assetData",
            reqwest::blocking::multipart::Part::bytes(small_jpeg(1)).file_name("a.jpg"),
        )
        .text("fileCreatedAt", "last tuesday");
    let r = api
        .req(reqwest::Method::POST, "/api/assets")
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("fileCreatedAt"));
    let r = api
        .req(reqwest::Method::POST, "/api/assets")
        .header("content-type", "multipart/form-data; boundary=x")
        .body("--x\r\ngarbage")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400, "malformed multipart");
    let mut wrong = Api::new(&node.url);
    wrong.key = Some("0".repeat(64));
    let (code, body) = wrong.upload("x.jpg", small_jpeg(2)).unwrap();
    assert_eq!(code, 401);
    assert_eq!(body["message"], "Invalid API key");
    assert_eq!(
        blob_snapshot(&data),
        before,
        "rejected uploads leave no trace"
    );

    // A truncated and a corrupt JPEG are the user's bytes: kept, with a readable error.
    let mut truncated = fixture("large.jpg").unwrap();
    truncated.truncate(truncated.len() / 3);
    // A JPEG signature followed by garbage (what a broken transfer or disk produces).
    let mut corrupt = vec![0xFF, 0xD8, 0xFF, 0xDB, 0x00, 0x43, 0x00];
    corrupt.extend((0..6000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    for (name, bytes) in [("truncated.jpg", &truncated), ("corrupt.jpg", &corrupt)] {
        let (code, _) = api.upload(name, bytes.clone()).unwrap();
        assert_eq!(code, 201, "{name} is stored");
        let asset = api
            .wait_processed(&b3(bytes), Duration::from_secs(30))
            .unwrap();
        assert_eq!(asset["tessera"]["status"], "error", "{name}: {asset}");
        let err = asset["tessera"]["error"].as_str().unwrap();
        assert!(err.contains("JPEG"), "{name}: readable error, got {err:?}");
        let (code, msg) = api
            .get_json(&format!("/api/assets/{}/thumbnail", b3(bytes)))
            .unwrap();
        assert_eq!(code, 404);
        assert!(
            msg["message"].as_str().unwrap().contains("No thumbnail"),
            "{msg}"
        );
        let (_, original) = api
            .get_bytes(&format!("/api/assets/{}/original", b3(bytes)))
            .unwrap();
        assert!(original == *bytes);
    }
    // The queue is not wedged: a good photo after the bad ones is processed.
    let next = fixture("r_pana.jpg").unwrap();
    api.upload("next.jpg", next.clone()).unwrap();
    assert_eq!(
        api.wait_processed(&b3(&next), Duration::from_secs(30))
            .unwrap()["tessera"]["status"],
        "ready"
    );
    // Everything stored before is untouched.
    let after = blob_snapshot(&data);
    for (path, hash) in &before {
        assert_eq!(after.get(path), Some(hash), "{path} changed");
    }
    let (_, original) = api
        .get_bytes(&format!("/api/assets/{}/original", b3(&good)))
        .unwrap();
    assert!(original == good);
}

#[test]
fn queued_jobs_resume_after_a_restart_and_fsck_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bin = tessera_tests::bin_path("sync-node").unwrap();
    let port = tessera_tests::free_port();
    // First run with media jobs paused: uploads are acknowledged and queued only.
    let mut child = std::process::Command::new(&bin)
        .args([
            "serve",
            "--jobs-paused",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data",
        ])
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let mut api = Api::new(&url);
    for _ in 0..200 {
        if api.get_json("/api/server/ping").is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    api.bootstrap_admin().unwrap();
    let photos: Vec<Vec<u8>> = ["r_casio.jpg", "r_pen.jpg", "L02.jpg"]
        .iter()
        .map(|n| fixture(n).unwrap())
        .collect();
    for (i, p) in photos.iter().enumerate() {
        assert_eq!(api.upload(&format!("p{i}.jpg"), p.clone()).unwrap().0, 201);
        assert_eq!(
            api.get_json(&format!("/api/assets/{}", b3(p))).unwrap().1["tessera"]["status"],
            "pending"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Restarted normally, the persisted queue is worked off.
    let node = Node::start_on(&data, port).unwrap();
    for p in &photos {
        assert_eq!(
            api.wait_processed(&b3(p), Duration::from_secs(30)).unwrap()["tessera"]["status"],
            "ready"
        );
    }
    drop(node);

    let (ok, out) = run_sync_node(&["fsck", "--data", data.to_str().unwrap()]).unwrap();
    assert!(ok && out.contains("clean"), "{out}");
    // Damage one thumbnail: fsck finds it, --repair quarantines it and rebuilds the index.
    let thumbs = data.join("blobs/thumb");
    let victim = walk(&thumbs).into_iter().next().unwrap();
    std::fs::write(&victim, b"bit rot").unwrap();
    let (ok, out) = run_sync_node(&["fsck", "--data", data.to_str().unwrap()]).unwrap();
    assert!(!ok && out.contains("CORRUPT"), "{out}");
    let (ok, out) = run_sync_node(&["fsck", "--repair", "--data", data.to_str().unwrap()]).unwrap();
    assert!(ok && out.contains("repaired"), "{out}");
    assert!(!victim.exists() && data.join("quarantine").read_dir().unwrap().count() == 1);
    let (ok, out) = run_sync_node(&["fsck", "--data", data.to_str().unwrap()]).unwrap();
    assert!(ok && out.contains("clean"), "{out}");
}

pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// A tmpfs of a few MB mounted for the test (needs root; skipped otherwise).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_a_clear_507_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&dir.path().join("small"), "4m") else {
        // `cargo xtask test` run as root (CI) requires it: no green without running.
        assert!(
            std::env::var_os("TESSERA_REQUIRE_ROOT_TESTS").is_none(),
            "TESSERA_REQUIRE_ROOT_TESTS is set but a tmpfs cannot be mounted"
        );
        eprintln!("SKIPPED disk-full test: cannot mount a tmpfs here (needs root)");
        return;
    };
    let data = disk.0.join("data");
    let mut node = Node::start(&data).unwrap();
    let mut api = Api::new(&node.url);
    api.bootstrap_admin().unwrap();
    let first = fixture("r_canon.jpg").unwrap();
    assert_eq!(api.upload("first.jpg", first.clone()).unwrap().0, 201);
    api.wait_processed(&b3(&first), Duration::from_secs(30))
        .unwrap();

    // 6 MB does not fit on a 4 MB disk: refused with a clear answer, nothing half-written.
    let big: Vec<u8> = (0..6_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let (code, body) = api.upload("big.jpg", big).unwrap();
    assert_eq!(code, 507, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("disk is full"),
        "{body}"
    );
    assert_eq!(
        std::fs::read_dir(data.join("tmp")).unwrap().count(),
        0,
        "the partial upload is removed"
    );

    // The node keeps working, and what it had is intact.
    let (_, original) = api
        .get_bytes(&format!("/api/assets/{}/original", b3(&first)))
        .unwrap();
    assert!(original == first);
    let second = fixture("r_sony.jpg").unwrap();
    assert_eq!(api.upload("second.jpg", second.clone()).unwrap().0, 201);
    node.kill();
    let (ok, out) = run_sync_node(&["fsck", "--data", data.to_str().unwrap()]).unwrap();
    assert!(ok && !out.contains("CORRUPT"), "{out}");
}

#[test]
fn undecodable_heic_and_mp4_are_stored_and_listed_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data")).unwrap();
    let mut api = Api::new(&node.url);
    api.bootstrap_admin().unwrap();
    // Container headers as phones write them, followed by garbage: the node must keep the
    // bytes and list the asset, and say why it has no preview.
    let mut heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic".to_vec();
    heic.extend((0..5000u32).map(|i| (i % 251) as u8));
    let mut mp4 = b"\0\0\0\x20ftypisom\0\0\x02\0isomiso2avc1mp41".to_vec();
    mp4.extend((0..9000u32).map(|i| (i % 241) as u8));
    for (name, bytes, mime, kind) in [
        ("IMG_0001.HEIC", &heic, "image/heic", "IMAGE"),
        ("clip.mp4", &mp4, "video/mp4", "VIDEO"),
    ] {
        let (code, body) = api.upload(name, bytes.clone()).unwrap();
        assert_eq!(code, 201, "{name}: {body}");
        let asset = api
            .wait_processed(&b3(bytes), Duration::from_secs(60))
            .unwrap();
        assert_eq!(asset["originalMimeType"], mime, "{asset}");
        assert_eq!(asset["type"], kind);
        assert_eq!(asset["tessera"]["status"], "error", "{asset}");
        let why = asset["tessera"]["error"].as_str().unwrap();
        assert!(why.contains("cannot decode"), "{name}: {why}");
        let (_, original) = api
            .get_bytes(&format!("/api/assets/{}/original", b3(bytes)))
            .unwrap();
        assert!(original == *bytes, "{name} byte-identical");
        let (code, _) = api
            .get_json(&format!("/api/assets/{}/thumbnail", b3(bytes)))
            .unwrap();
        assert_eq!(code, 404);
    }
    let stats = api.get_json("/api/assets/statistics").unwrap().1;
    assert_eq!(
        (stats["images"].as_u64(), stats["videos"].as_u64()),
        (Some(1), Some(1)),
        "{stats}"
    );
}

/// A catalogue write that fails (here: the shard file made immutable, as a full disk or a
/// read-only file would) is not acknowledged, and is not forgotten either: the record is
/// written once the file is writable again, before any later change, and survives a SIGKILL.
/// (Before, the dirty set was cleared and automerge's incremental cursor had moved on, so the
/// record was lost for good.)
#[test]
fn a_failed_catalogue_write_is_retried_never_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut node = Node::start(&data).unwrap();
    let mut api = Api::new(&node.url);
    api.bootstrap_admin().unwrap();
    let (code, _) = api.upload("a.jpg", small_jpeg(9001)).unwrap();
    assert_eq!(code, 201);
    let (_, me) = api.get_json("/api/users/me").unwrap();
    let user = me["id"].as_str().unwrap().to_owned();
    // Api::upload dates every file 2021-03-04 (no EXIF in small_jpeg).
    let shard = data.join(format!("docs/u~{user}~m~2021-03.am"));
    assert!(shard.exists(), "{}", shard.display());
    let chattr = |flag: &str| {
        std::process::Command::new("chattr")
            .arg(flag)
            .arg(&shard)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !chattr("+i") {
        assert!(
            std::env::var_os("TESSERA_REQUIRE_ROOT_TESTS").is_none(),
            "TESSERA_REQUIRE_ROOT_TESTS is set but chattr +i failed"
        );
        eprintln!("SKIPPED: chattr +i needs root on a filesystem that supports it");
        return;
    }
    let b = small_jpeg(9002);
    let (code, body) = api.upload("b.jpg", b.clone()).unwrap();
    assert!(chattr("-i"));
    assert_eq!(
        code, 500,
        "a record that is not on disk is not acknowledged: {body}"
    );
    // The node retries on its own (every 5 s): the shard's log grows when it has (waited
    // for, not assumed after a fixed time: a loaded machine may take longer).
    let before = std::fs::metadata(&shard).map(|m| m.len()).unwrap_or(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&shard).map(|m| m.len()).unwrap_or(0) == before
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    node.kill();
    let node = Node::start(&data).unwrap();
    let mut api = Api::new(&node.url);
    api.login("admin@example.com", "correct horse").unwrap();
    let (_, stats) = api.get_json("/api/assets/statistics").unwrap();
    assert_eq!(
        stats["total"], 2,
        "b's record was written by the retry: {stats}"
    );
    // The client's retry of the upload completes it (and is not a second asset).
    let (code, body) = api.upload("b.jpg", b.clone()).unwrap();
    assert!(code == 201 || code == 200, "{code} {body}");
    let (code, _) = api.get_json(&format!("/api/assets/{}", b3(&b))).unwrap();
    assert_eq!(code, 200);
    let (_, stats) = api.get_json("/api/assets/statistics").unwrap();
    assert_eq!(stats["total"], 2);
}

/// A JPEG with an MP4 appended whose box size wraps the walker's offset (a crafted motion
/// photo) used to hang its media job at 100% CPU and wedge the queue, also after restarts; and
/// an MP4 upload with such a box hung the request. Both are now ordinary files.
#[test]
fn crafted_box_sizes_neither_hang_an_upload_nor_wedge_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(&dir.path().join("data"), &["--workers", "1"]).unwrap();
    let mut api = Api::new(&node.url);
    api.bootstrap_admin().unwrap();
    let mut mp4 = Vec::new();
    mp4.extend_from_slice(&16u32.to_be_bytes());
    mp4.extend_from_slice(b"ftypisom\0\0\0\0");
    mp4.extend_from_slice(&1u32.to_be_bytes());
    mp4.extend_from_slice(b"moov");
    mp4.extend_from_slice(&(u64::MAX - 7).to_be_bytes());
    mp4.extend_from_slice(&[0u8; 64]);
    let mut motion = small_jpeg(4242);
    motion.extend_from_slice(&mp4);
    let (code, body) = api.upload("PXL_crafted.MP.jpg", motion.clone()).unwrap();
    assert_eq!(code, 201, "{body}");
    let (code, body) = api.upload("crafted.mp4", mp4.clone()).unwrap();
    assert_eq!(code, 201, "{body}");
    let after = small_jpeg(4243);
    assert_eq!(api.upload("after.jpg", after.clone()).unwrap().0, 201);
    for b in [&motion, &after] {
        let r = api.wait_processed(&b3(b), Duration::from_secs(60)).unwrap();
        assert_ne!(r["tessera"]["status"], "pending");
    }
    let r = api
        .wait_processed(&b3(&after), Duration::from_secs(60))
        .unwrap();
    assert_eq!(r["tessera"]["status"], "ready", "{r}");
}

/// Media decodes share `--decode-memory-mib`: a picture whose decode alone needs more than half
/// of it waits for the memory and runs alone (the node says so), one needing more than all of
/// it still runs (its estimate is capped at the budget), and small JPEGs go through beside it.
#[test]
fn large_decodes_are_admitted_against_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let node =
        Node::start_with(dir.path(), &["--decode-memory-mib", "64", "--workers", "4"]).unwrap();
    let mut api = Api::new(&node.url);
    api.bootstrap_admin().unwrap();
    // 3000 × 2000 PNG: its whole decode (≈ 6 M pixels × 9 bytes) is far over 64 MiB.
    let img = image::RgbImage::from_fn(3000, 2000, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let (code, big) = api.upload("big.png", png).unwrap();
    assert_eq!(code, 201, "{big}");
    let small: Vec<String> = (0..6)
        .map(|i| {
            let (code, b) = api
                .upload(&format!("s{i}.jpg"), small_jpeg(700 + i))
                .unwrap();
            assert_eq!(code, 201, "{b}");
            b["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let big = big["id"].as_str().unwrap();
    let body = api.wait_processed(big, Duration::from_secs(120)).unwrap();
    assert_eq!(body["tessera"]["status"], "ready", "{body}");
    for id in &small {
        let body = api.wait_processed(id, Duration::from_secs(60)).unwrap();
        assert_eq!(body["tessera"]["status"], "ready", "{body}");
    }
    let log = node.log();
    assert!(
        log.contains("a large decode: waiting for the memory budget"),
        "{log}"
    );
}

/// pillow-heif's 200-MP HEIC (a grid of HEVC tiles) is admitted with its tiled estimate, not a
/// whole decode's 1.8 GB: with a 256 MiB budget it does not wait to run alone, and its
/// preview and thumbnail come out whole and upright.
#[test]
fn a_200_mp_heic_grid_is_admitted_as_a_tiled_decode() {
    let Some(corpus) = std::env::var_os("TESSERA_CORPUS").map(std::path::PathBuf::from) else {
        assert!(
            std::env::var_os("TESSERA_REQUIRE_CORPUS").is_none(),
            "TESSERA_REQUIRE_CORPUS is set but TESSERA_CORPUS is not"
        );
        eprintln!("SKIPPED: TESSERA_CORPUS is not set");
        return;
    };
    let bytes = std::fs::read(corpus.join("large/heic_200mp.heic")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(dir.path(), &["--decode-memory-mib", "256"]).unwrap();
    let mut api = Api::new(&node.url);
    api.bootstrap_admin().unwrap();
    let (code, body) = api.upload("200mp.heic", bytes).unwrap();
    assert_eq!(code, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let asset = api.wait_processed(&id, Duration::from_secs(120)).unwrap();
    assert_eq!(asset["tessera"]["status"], "ready", "{asset}");
    let (w, h) = (
        asset["width"].as_u64().unwrap(),
        asset["height"].as_u64().unwrap(),
    );
    assert_eq!((w, h), (12240, 16320), "{asset}");
    let (code, preview) = api
        .get_bytes(&format!("/api/assets/{id}/thumbnail?size=preview"))
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(dims(&preview), (1080, 1440));
    let log = node.log();
    assert!(
        !log.contains("a large decode: waiting for the memory budget"),
        "the tiled HEIC was admitted as a whole decode: {log}"
    );
}

/// The photos the timeline counts, summed over its buckets.
fn timeline_total(api: &Api) -> u64 {
    let (status, v) = api.get_json("/api/timeline/buckets").unwrap();
    assert_eq!(status, 200, "{v}");
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum()
}

/// The first line the node logged since `from` that contains `needle` (waits up to 60 s).
fn wait_for_log(node: &Node, from: usize, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(l) = log_since(node, from).lines().find(|l| l.contains(needle)) {
            return l.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle:?} in {}",
            log_since(node, from)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many assets Immich's metadata search finds by original file name.
fn metadata_hits(api: &Api, name: &str) -> u64 {
    let r = api
        .req(reqwest::Method::POST, "/api/search/metadata")
        .json(&serde_json::json!({ "originalFileName": name }))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().unwrap();
    v["assets"]["total"].as_u64().unwrap()
}

/// What the node logged since `from` bytes of its log.
fn log_since(node: &Node, from: usize) -> String {
    node.log().get(from..).unwrap_or_default().to_owned()
}

/// A node stopped (SIGTERM, as systemd or `docker stop` do) starts again without decoding a single catalogue document (its
/// heads index vouches for every file) and answers Immich's timeline from the counts it saved;
/// killed after a change, it reads what changed and the timeline counts the change.
#[test]
fn a_restarted_node_decodes_nothing_and_its_timeline_answers_from_saved_counts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = tessera_tests::free_port();
    let mut node = Node::start_on(&data, port).unwrap();
    let mut api = Api::new(&node.url);
    api.bootstrap_admin().unwrap();
    let photos: Vec<Vec<u8>> = ["r_casio.jpg", "r_pen.jpg", "L02.jpg", "r_sony.jpg"]
        .iter()
        .map(|n| fixture(n).unwrap())
        .collect();
    for (i, p) in photos[..3].iter().enumerate() {
        assert_eq!(api.upload(&format!("p{i}.jpg"), p.clone()).unwrap().0, 201);
        api.wait_processed(&b3(p), Duration::from_secs(60)).unwrap();
    }
    assert_eq!(timeline_total(&api), 3);

    node.stop().unwrap();
    let from = node.log().len();
    let mut node = Node::start_on(&data, port).unwrap();
    let log = log_since(&node, from);
    let opened = log
        .lines()
        .find(|l| l.contains("catalogue opened"))
        .unwrap_or_else(|| panic!("no catalogue line: {log}"));
    assert!(opened.contains(" checked=0 "), "{opened}");
    assert!(!opened.contains(" held_unloaded=0 "), "{opened}");
    assert!(
        log.contains("timeline counts taken from the last run"),
        "{log}"
    );
    assert_eq!(timeline_total(&api), 3);
    // The start-up sweep reads no month: the search indexes saved at the stop say there is
    // nothing for it to do, and they are what the search reads.
    let swept = wait_for_log(&node, from, "catalogue memory after the sweep");
    assert!(swept.contains(" months_read=0 "), "{swept}");
    // Nor was any month decoded to build an index (the files were believed).
    assert!(swept.contains(" cached_shards=0 "), "{swept}");
    assert!(!swept.contains(" indexes_read=0 "), "{swept}");
    assert_eq!(metadata_hits(&api, "p1.jpg"), 1);
    // Photos and their details are read from the documents held unloaded.
    for p in &photos[..3] {
        let (status, v) = api.get_json(&format!("/api/assets/{}", b3(p))).unwrap();
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["tessera"]["status"], "ready");
    }

    // Changes, then SIGKILL: whatever the indexes missed is read and counted again. One
    // photo goes to the trash (its month's saved counts no longer hold: believing them would
    // still count it) and one arrives.
    let r = api
        .req(reqwest::Method::DELETE, "/api/assets")
        .json(&serde_json::json!({"ids": [b3(&photos[0])]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(api.upload("p3.jpg", photos[3].clone()).unwrap().0, 201);
    api.wait_processed(&b3(&photos[3]), Duration::from_secs(60))
        .unwrap();
    node.kill();
    let from = node.log().len();
    let node = Node::start_on(&data, port).unwrap();
    let log = log_since(&node, from);
    assert!(log.contains("catalogue opened"), "{log}");
    assert_eq!(timeline_total(&api), 3, "two kept and one new");
    // The trashed photo's month changed after its index was saved: that index is not
    // believed (it would still find the photo).
    assert_eq!(metadata_hits(&api, "p0.jpg"), 0);
    assert_eq!(metadata_hits(&api, "p3.jpg"), 1);
    drop(node);
    let (ok, out) = run_sync_node(&["fsck", "--data", data.to_str().unwrap()]).unwrap();
    assert!(ok && out.contains("clean"), "{out}");
}
