//! Bulk import of a real mixed corpus (`sync-node import`), then housekeeping (archive, trash,
//! restore, delete for good) and near-duplicate review over the HTTP API, on a real node.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::Method;
use serde_json::{json, Value};
use tessera_tests::{run_sync_node, Api, Node};

fn corpus() -> Option<PathBuf> {
    match std::env::var("TESSERA_CORPUS") {
        Ok(d) => Some(PathBuf::from(d)),
        Err(_) => {
            eprintln!("SKIPPED: TESSERA_CORPUS is not set (cargo xtask test builds the corpus)");
            None
        }
    }
}

fn copy_tree(from: &Path, to: &Path) -> Result<usize> {
    std::fs::create_dir_all(to)?;
    let mut n = 0;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') || !e.file_type()?.is_file() {
            continue;
        }
        std::fs::copy(e.path(), to.join(&name))?;
        n += 1;
    }
    Ok(n)
}

/// A re-encoded, rotated, slightly cropped copy of a real photo (a near-duplicate).
fn near_copy(src: &Path) -> Result<Vec<u8>> {
    let img = image::open(src)?;
    let (w, h) = (img.width(), img.height());
    let cropped = img
        .crop_imm(w / 40, h / 40, w - w / 20, h - h / 20)
        .rotate90();
    let small = cropped.resize(
        cropped.width() / 2,
        cropped.height() / 2,
        image::imageops::FilterType::Triangle,
    );
    let mut out = Vec::new();
    small.to_rgb8().write_to(
        &mut std::io::Cursor::new(&mut out),
        image::ImageFormat::Jpeg,
    )?;
    Ok(out)
}

#[test]
fn import_a_mixed_corpus_then_trash_archive_and_review_duplicates() -> Result<()> {
    let Some(corpus) = corpus() else {
        return Ok(());
    };
    let fixtures = tessera_tests::photos::fixtures_dir()?;
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let src = tmp.path().join("Camera roll");
    let copied = copy_tree(&corpus, &src.join("corpus"))?;
    assert!(copied >= 10, "corpus has only {copied} files");
    // A near-duplicate pair, a Takeout sidecar, and a file that is no photo.
    let canon = fixtures.join("r_canon.jpg");
    std::fs::copy(&canon, src.join("canon.jpg"))?;
    std::fs::write(src.join("canon-copy.jpg"), near_copy(&canon)?)?;
    std::fs::write(
        src.join("canon-copy.jpg.json"),
        br#"{"title":"canon-copy.jpg","photoTakenTime":{"timestamp":"1400000000"},"geoData":{"latitude":48.8584,"longitude":2.2945}}"#,
    )?;
    std::fs::write(src.join("notes.txt"), b"not a photo")?;

    // The library needs its admin first; import runs while the node is stopped.
    let mut api;
    {
        let node = Node::start(&data)?;
        api = Api::new(&node.url);
        api.bootstrap_admin()?;
    }
    let report_file = tmp.path().join("report.json");
    let (ok, out) = run_sync_node(&[
        "import",
        src.to_str().context("path")?,
        "--data",
        data.to_str().context("path")?,
        "--album",
        "Camera roll",
        "--report",
        report_file.to_str().context("path")?,
    ])?;
    eprintln!("{out}");
    assert!(ok, "import failed: {out}");
    let report: Value = serde_json::from_slice(&std::fs::read(&report_file)?)?;
    let failed: Vec<String> = report["failed"]
        .as_array()
        .context("failed")?
        .iter()
        .map(|f| f[0].as_str().unwrap_or_default().to_owned())
        .collect();
    let no_preview: Vec<String> = report["no_preview"]
        .as_array()
        .context("no_preview")?
        .iter()
        .map(|f| f[0].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        failed.iter().any(|f| f.ends_with("bad_empty.jpg")),
        "{report}"
    );
    assert!(
        no_preview.iter().any(|f| f.ends_with("bad_truncated.heic")),
        "a truncated HEIC is stored and reported without preview: {report}"
    );
    assert!(report["unsupported"]
        .as_array()
        .context("u")?
        .iter()
        .any(|f| f.as_str().unwrap_or_default().ends_with("notes.txt")));
    let media = walk(&src)?
        .iter()
        .filter(|p| tessera_media::media_kind(&p.to_string_lossy()).is_some())
        .count() as u64;
    assert_eq!(report["files"].as_u64(), Some(media), "{report}");
    let stored =
        report["imported"].as_u64().unwrap_or(0) + report["duplicates"].as_u64().unwrap_or(0);
    assert_eq!(stored, media - failed.len() as u64, "{report}");
    assert!(out.contains("files/s"), "{out}");

    // A second run resumes: nothing is hashed or stored again.
    let (ok, out2) = run_sync_node(&[
        "import",
        src.to_str().context("p")?,
        "--data",
        data.to_str().context("p")?,
        "--report",
        report_file.to_str().context("p")?,
    ])?;
    assert!(ok, "{out2}");
    let again: Value = serde_json::from_slice(&std::fs::read(&report_file)?)?;
    assert_eq!(again["imported"].as_u64(), Some(0), "{again}");
    assert_eq!(again["resumed"].as_u64(), Some(stored), "{again}");

    let node = Node::start(&data)?;
    api.base = node.url.clone();
    // Every stored file is byte-identical, and has a thumbnail that decodes.
    let mut formats = Vec::new();
    for e in walk(&src)? {
        let name = e.to_string_lossy().into_owned();
        if failed.contains(&name) || tessera_media::media_kind(&name).is_none() {
            continue;
        }
        let bytes = std::fs::read(&e)?;
        let id = blake3::hash(&bytes).to_hex().to_string();
        let (code, rec) = api.get_json(&format!("/api/assets/{id}"))?;
        assert_eq!(code, 200, "{name} not in the library: {rec}");
        let (code, orig) = api.get_bytes(&format!("/api/assets/{id}/original"))?;
        assert_eq!(code, 200);
        assert!(orig == bytes, "{name}: the original is not byte-identical");
        if no_preview.contains(&name) {
            assert_eq!(rec["tessera"]["status"], "error", "{name}: {rec}");
            continue;
        }
        assert_eq!(rec["tessera"]["status"], "ready", "{name}: {rec}");
        let (code, thumb) = api.get_bytes(&format!("/api/assets/{id}/thumbnail"))?;
        assert_eq!(code, 200, "{name}");
        let t = image::load_from_memory(&thumb)
            .with_context(|| format!("{name}: thumbnail does not decode"))?;
        let (w, h) = (
            rec["width"].as_u64().unwrap_or(0),
            rec["height"].as_u64().unwrap_or(0),
        );
        assert!(w > 0 && h > 0, "{name}: no dimensions: {rec}");
        assert_eq!(
            t.width() >= t.height(),
            w >= h,
            "{name}: thumbnail orientation differs from {w}x{h}"
        );
        assert!(
            rec["tessera"]["phash"]
                .as_str()
                .is_some_and(|p| p.len() == 16),
            "{name}: no perceptual hash"
        );
        assert_ne!(
            rec["tessera"]["taken_at_source"], "upload",
            "{name}: no capture time: {rec}"
        );
        formats.push((
            name,
            rec["originalMimeType"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ));
    }
    eprintln!("imported and rendered: {formats:#?}");
    for m in [
        "image/heic",
        "image/avif",
        "image/x-adobe-dng",
        "video/mp4",
        "video/quicktime",
        "image/png",
        "image/webp",
        "image/gif",
        "image/jpeg",
    ] {
        assert!(
            formats.iter().any(|(_, f)| f == m),
            "no {m} in the corpus import"
        );
    }
    // Live Photo: the MOV is paired with its still, hidden from the timeline, and served as the
    // still's motion part; an Android motion photo's embedded MP4 is served the same way.
    let id_of = |name: &str| -> Result<String> {
        Ok(blake3::hash(&std::fs::read(src.join("corpus").join(name))?)
            .to_hex()
            .to_string())
    };
    let (still, mov) = (id_of("IMG_0001.HEIC")?, id_of("IMG_0001.MOV")?);
    let (_, s) = api.get_json(&format!("/api/assets/{still}"))?;
    let (_, m) = api.get_json(&format!("/api/assets/{mov}"))?;
    assert_eq!(s["livePhotoVideoId"], mov.as_str(), "{s}");
    assert_eq!(m["tessera"]["live_of"], still.as_str(), "{m}");
    assert_eq!(m["visibility"], "hidden");
    let (code, motion) = api.get_bytes(&format!("/api/assets/{still}/motion"))?;
    assert_eq!(code, 200);
    assert!(motion == std::fs::read(src.join("corpus/IMG_0001.MOV"))?);
    let pxl = id_of("PXL_20230221_113308123.MP.jpg")?;
    let (code, motion) = api.get_bytes(&format!("/api/assets/{pxl}/motion"))?;
    assert_eq!(code, 200, "motion photo video");
    assert_eq!(&motion[4..8], b"ftyp");
    // Videos play with byte ranges (seeking), as the browser asks for them.
    let mp4 = id_of("video_h264.mp4")?;
    let r = api
        .req(Method::GET, &format!("/api/assets/{mp4}/video/playback"))
        .header("range", "bytes=0-99")
        .send()?;
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(r.bytes()?.len(), 100);
    let (_, v) = api.get_json(&format!("/api/assets/{mp4}"))?;
    assert!(
        v["tessera"]["duration"]
            .as_f64()
            .is_some_and(|d| (d - 3.0).abs() < 0.2),
        "{v}"
    );
    assert_eq!(v["tessera"]["codec"], "h264");

    // The Takeout sidecar gave the copy its date and place.
    let copy_id = blake3::hash(&std::fs::read(src.join("canon-copy.jpg"))?)
        .to_hex()
        .to_string();
    let (_, copy) = api.get_json(&format!("/api/assets/{copy_id}"))?;
    assert_eq!(copy["tessera"]["taken_at_source"], "sidecar", "{copy}");
    assert_eq!(copy["tessera"]["taken_at"], "2014-05-13T16:53:20+00:00");
    assert_eq!(copy["exifInfo"]["latitude"], 48.8584);

    // Near-duplicates: the rotated, cropped, re-encoded copy is grouped with its original,
    // the original (larger) suggested; "not duplicates" is remembered.
    let canon_id = blake3::hash(&std::fs::read(&canon)?).to_hex().to_string();
    let (code, groups) = api.get_json("/api/duplicates")?;
    assert_eq!(code, 200, "{groups}");
    let group = groups
        .as_array()
        .context("groups")?
        .iter()
        .find(|g| {
            g["assets"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["id"] == copy_id.as_str()))
        })
        .with_context(|| format!("the near copy is in no group: {groups}"))?
        .clone();
    assert!(
        group["assets"]
            .as_array()
            .context("a")?
            .iter()
            .any(|x| x["id"] == canon_id.as_str()),
        "{group}"
    );
    assert_eq!(
        group["suggestedKeepAssetIds"][0],
        canon_id.as_str(),
        "{group}"
    );
    let gid = group["duplicateId"].as_str().context("id")?;
    let r = api
        .req(Method::DELETE, &format!("/api/duplicates/{gid}"))
        .send()?;
    assert_eq!(r.status().as_u16(), 204);
    let (_, groups) = api.get_json("/api/duplicates")?;
    assert!(
        !groups.to_string().contains(&copy_id),
        "a dismissed group came back: {groups}"
    );

    // Housekeeping: archive, trash, restore, delete for good.
    let put = api
        .req(Method::PUT, "/api/assets")
        .json(&json!({"ids": [canon_id], "visibility": "archive"}))
        .send()?;
    assert_eq!(put.status().as_u16(), 204);
    assert_eq!(
        api.get_json(&format!("/api/assets/{canon_id}"))?.1["isArchived"],
        true
    );
    let del = api
        .req(Method::DELETE, "/api/assets")
        .json(&json!({"ids": [copy_id]}))
        .send()?;
    assert_eq!(del.status().as_u16(), 204);
    assert_eq!(
        api.get_json(&format!("/api/assets/{copy_id}"))?.1["isTrashed"],
        true
    );
    let r: Value = api
        .req(Method::POST, "/api/trash/restore/assets")
        .json(&json!({"ids": [copy_id]}))
        .send()?
        .json()?;
    assert_eq!(r["count"], 1);
    assert_eq!(
        api.get_json(&format!("/api/assets/{copy_id}"))?.1["isTrashed"],
        false
    );
    api.req(Method::DELETE, "/api/assets")
        .json(&json!({"ids": [copy_id]}))
        .send()?;
    let r: Value = api.req(Method::POST, "/api/trash/empty").send()?.json()?;
    assert_eq!(r["count"], 1);
    assert_eq!(api.get_json(&format!("/api/assets/{copy_id}"))?.0, 404);
    let blob = data
        .join("blobs/original")
        .join(&copy_id[..2])
        .join(&copy_id[2..4])
        .join(&copy_id);
    assert!(!blob.exists(), "the purged original is still on disk");
    // Two files with identical pixels share their thumbnail blob: deleting one for good must
    // leave the other's thumbnail alone.
    let twin_a = std::fs::read(fixtures.join("r_sony.jpg"))?;
    let mut twin_b = twin_a.clone();
    twin_b.extend_from_slice(b"trailing bytes after EOI");
    let (ida, idb) = (
        blake3::hash(&twin_a).to_hex().to_string(),
        blake3::hash(&twin_b).to_hex().to_string(),
    );
    assert_eq!(api.upload("twin-a.jpg", twin_a)?.0, 201);
    assert_eq!(api.upload("twin-b.jpg", twin_b)?.0, 201);
    let ra = api.wait_processed(&ida, Duration::from_secs(30))?;
    let rb = api.wait_processed(&idb, Duration::from_secs(30))?;
    assert_eq!(
        ra["tessera"]["thumb"], rb["tessera"]["thumb"],
        "identical pixels"
    );
    let del = api
        .req(Method::DELETE, "/api/assets")
        .json(&json!({"ids": [ida], "force": true}))
        .send()?;
    assert_eq!(del.status().as_u16(), 204);
    assert_eq!(api.get_json(&format!("/api/assets/{ida}"))?.0, 404);
    let (code, _) = api.get_bytes(&format!("/api/assets/{idb}/thumbnail"))?;
    assert_eq!(
        code, 200,
        "the twin's thumbnail was deleted with the purged asset"
    );

    // Uploading it again brings it back.
    let (code, body) = api.upload("canon-copy.jpg", std::fs::read(src.join("canon-copy.jpg"))?)?;
    assert_eq!(code, 201, "{body}");
    api.wait_processed(&copy_id, Duration::from_secs(30))?;
    assert!(blob.exists());
    drop(node);
    Ok(())
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// `sync-node upload` against a running node: skips what is stored, sends sidecars, resumes.
#[test]
fn upload_a_folder_to_a_running_node() -> Result<()> {
    let fixtures = tessera_tests::photos::fixtures_dir()?;
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("phone");
    std::fs::create_dir_all(src.join("DCIM"))?;
    let canon = std::fs::read(fixtures.join("r_canon.jpg"))?;
    std::fs::write(src.join("DCIM/a.jpg"), &canon)?;
    std::fs::write(
        src.join("DCIM/b.jpg"),
        near_copy(&fixtures.join("r_canon.jpg"))?,
    )?;
    std::fs::write(
        src.join("DCIM/b.jpg.xmp"),
        br#"<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:DateTimeOriginal="2019-08-17T10:11:12+02:00" exif:GPSLatitude="50,5.25N" exif:GPSLongitude="14,25.2E"/></rdf:RDF></x:xmpmeta>"#,
    )?;
    std::fs::write(src.join("DCIM/empty.jpg"), b"")?;
    let data = tmp.path().join("data");
    let node = Node::start(&data)?;
    let mut api = Api::new(&node.url);
    api.bootstrap_admin()?;
    // One of them is already there.
    let (code, _) = api.upload("a.jpg", canon.clone())?;
    assert_eq!(code, 201);
    let key = api.key.clone().context("key")?;
    let state = tmp.path().join("state.jsonl");
    let report = tmp.path().join("report.json");
    let args = |r: &Path| {
        vec![
            "upload".to_owned(),
            src.display().to_string(),
            "--node".into(),
            node.url.clone(),
            "--api-key".into(),
            key.clone(),
            "--state".into(),
            state.display().to_string(),
            "--report".into(),
            r.display().to_string(),
        ]
    };
    let a = args(&report);
    let (ok, out) = run_sync_node(&a.iter().map(String::as_str).collect::<Vec<_>>())?;
    assert!(ok, "{out}");
    let r: Value = serde_json::from_slice(&std::fs::read(&report)?)?;
    assert_eq!(
        (r["imported"].as_u64(), r["duplicates"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    assert!(r["failed"].to_string().contains("empty.jpg"), "{r}");
    let b_id = blake3::hash(&std::fs::read(src.join("DCIM/b.jpg"))?)
        .to_hex()
        .to_string();
    let rec = api.wait_processed(&b_id, Duration::from_secs(30))?;
    assert_eq!(
        rec["tessera"]["taken_at"], "2019-08-17T10:11:12+02:00",
        "{rec}"
    );
    assert_eq!(rec["tessera"]["taken_at_source"], "sidecar");
    assert!((rec["exifInfo"]["latitude"].as_f64().unwrap_or(0.0) - 50.0875).abs() < 1e-6);
    // Again: everything finished is remembered, nothing is hashed or sent.
    let (ok, out) = run_sync_node(&a.iter().map(String::as_str).collect::<Vec<_>>())?;
    assert!(ok, "{out}");
    let r: Value = serde_json::from_slice(&std::fs::read(&report)?)?;
    assert_eq!(r["resumed"].as_u64(), Some(2), "{r}");
    assert_eq!(r["imported"].as_u64(), Some(0), "{r}");
    // A wrong key is refused up front, with a clear message.
    let mut bad = args(&report);
    bad[5] = "nope".into();
    let (ok, out) = run_sync_node(&bad.iter().map(String::as_str).collect::<Vec<_>>())?;
    assert!(!ok && out.contains("refused the API key"), "{out}");
    Ok(())
}
