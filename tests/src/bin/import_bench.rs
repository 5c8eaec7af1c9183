//! `cargo xtask bench` (part): bulk import throughput and peak RSS of `sync-node import` on
//! the mixed media corpus and on 12-MP JPEGs, against `vipsthumbnail` making the same two
//! sizes of the same files and against Immich's own sharp pipeline; and near-duplicate
//! precision/recall of the perceptual hash on a generated set (rotations, re-encodes at several
//! qualities, 5 % crops, resizes) against unrelated real photos. Writes JSON to the first
//! argument.
//!
//! Env: `TESSERA_SYNC_NODE_BIN` (the binary), `TESSERA_CORPUS`, `TESSERA_FIXTURES`,
//! `TESSERA_SHARP` (optional: the sharp install).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use image::{imageops::FilterType, DynamicImage};
use serde_json::{json, Value};

fn env_path(k: &str) -> Result<PathBuf> {
    std::env::var(k)
        .map(PathBuf::from)
        .with_context(|| format!("{k} is not set"))
}

/// Runs `sync-node import` under GNU time; returns (seconds, peak RSS in MB, files, MB).
fn import(bin: &Path, dir: &Path) -> Result<Value> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    // An account first: serve briefly is heavy; the import needs only the admin record, which
    // `sync-node import` refuses to invent, so make it through the HTTP API.
    let port = tessera_tests::free_port();
    let mut serve = Command::new(bin)
        .args(["serve", "--data"])
        .arg(&data)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--no-relay",
            "--iroh",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut api = tessera_tests::Api::new(&format!("http://127.0.0.1:{port}"));
    let mut ok = false;
    for _ in 0..100 {
        if api.bootstrap_admin().is_ok() {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = serve.kill();
    let _ = serve.wait();
    if !ok {
        bail!("could not create the admin account");
    }
    let report = tmp.path().join("report.json");
    let (secs, rss_kb) = timed(
        "import",
        bin.as_os_str(),
        &[
            "import".as_ref(),
            dir.as_os_str(),
            "--data".as_ref(),
            data.as_os_str(),
            "--report".as_ref(),
            report.as_os_str(),
        ],
    )?;
    let r: Value = serde_json::from_slice(&std::fs::read(&report)?)?;
    let files = r["files"].as_f64().unwrap_or(0.0);
    let mb = r["bytes"].as_f64().unwrap_or(0.0) / 1e6;
    // The report's own time: the ingest itself, without process start, opening the data
    // directory and walking the tree.
    let run = r["seconds"].as_f64().unwrap_or(secs).max(1e-3);
    Ok(json!({
        "files": files, "mb": mb, "seconds": secs,
        "files_per_s": files / secs, "mb_per_s": mb / secs,
        "ingest_seconds": run, "ingest_files_per_s": files / run, "ingest_mb_per_s": mb / run,
        "peak_rss_mb": rss_kb / 1024.0,
        "failed": r["failed"], "no_preview": r["no_preview"].as_array().map(|a| a.len()),
    }))
}

/// `vipsthumbnail` making a 250-px thumbnail and a 1440-px preview of every file (2 workers).
/// Runs `program args` under GNU `time -v`: wall seconds and peak RSS in KB (0 when absent).
fn timed(what: &str, program: &OsStr, args: &[&OsStr]) -> Result<(f64, f64)> {
    let tmp = tempfile::tempdir()?;
    let time_out = tmp.path().join("time.txt");
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg("-o")
        .arg(&time_out)
        .arg(program)
        .args(args)
        .output()
        .with_context(|| format!("running {what} under /usr/bin/time (apt-get install time)"))?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((secs, peak_rss_kb(&std::fs::read_to_string(&time_out)?)))
}

/// The peak RSS GNU `time -v` reported, in KB (0 when absent).
fn peak_rss_kb(time: &str) -> f64 {
    time.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `vipsthumbnail` making one preview of `file` under GNU time: seconds and peak RSS.
fn vips_heic(file: &Path) -> Result<Value> {
    let tmp = tempfile::tempdir()?;
    let preview = tmp.path().join("preview.jpg[Q=80]");
    let (secs, rss_kb) = timed(
        "vipsthumbnail (apt-get install libvips-tools)",
        "vipsthumbnail".as_ref(),
        &[
            file.as_os_str(),
            "--size".as_ref(),
            "1440x1440".as_ref(),
            "-o".as_ref(),
            preview.as_os_str(),
        ],
    )?;
    Ok(json!({"seconds": secs, "peak_rss_mb": rss_kb / 1024.0}))
}

fn vips(files: &[PathBuf]) -> Result<f64> {
    let tmp = tempfile::tempdir()?;
    let started = Instant::now();
    let chunks: Vec<Vec<PathBuf>> = (0..2)
        .map(|k| files.iter().skip(k).step_by(2).cloned().collect())
        .collect();
    std::thread::scope(|s| {
        for c in &chunks {
            let out = tmp.path().to_path_buf();
            s.spawn(move || {
                for (i, f) in c.iter().enumerate() {
                    for (size, name) in [("250x250", "t"), ("1440x1440", "p")] {
                        let _ = Command::new("vipsthumbnail")
                            .arg(f)
                            .args(["--size", size, "-o"])
                            .arg(out.join(format!("{name}{i}-%s.jpg[Q=80]")))
                            .output();
                    }
                }
            });
        }
    });
    Ok(started.elapsed().as_secs_f64())
}

fn variants(img: &DynamicImage) -> Vec<(String, DynamicImage)> {
    let (w, h) = (img.width(), img.height());
    let reencode = |q: u8| -> Option<DynamicImage> {
        let mut buf = Vec::new();
        let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, q);
        img.to_rgb8().write_with_encoder(enc).ok()?;
        image::load_from_memory(&buf).ok()
    };
    let mut v = vec![
        ("rotate90".to_owned(), img.rotate90()),
        ("rotate180".to_owned(), img.rotate180()),
        ("rotate270".to_owned(), img.rotate270()),
        (
            "crop5".to_owned(),
            img.crop_imm(w / 40, h / 40, w - w / 20, h - h / 20),
        ),
        (
            "resize50".to_owned(),
            img.resize(w / 2, h / 2, FilterType::Triangle),
        ),
        (
            "resize25".to_owned(),
            img.resize(w / 4, h / 4, FilterType::Triangle),
        ),
        ("brighter".to_owned(), img.brighten(20)),
    ];
    for q in [30u8, 60, 90] {
        if let Some(x) = reencode(q) {
            v.push((format!("jpeg_q{q}"), x));
        }
    }
    v
}

fn main() -> Result<()> {
    let out = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/import-bench.json"));
    let bin = env_path("TESSERA_SYNC_NODE_BIN")?;
    let corpus = env_path("TESSERA_CORPUS")?;
    let fixtures = env_path("TESSERA_FIXTURES")?;
    let twelve = PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cache/tessera/bench/12mp-420");

    // Near-duplicates over distinct real scenes only: piexif's camera files all hold one image
    // (one is used) and the corpus's phone HEICs/RAW (decoded by Tessera's own pipeline).
    // Corpus files converted from the same photo, and the generated 12-MP photos (one scene
    // with different noise), are left out.
    let mut sources: Vec<(String, DynamicImage)> = Vec::new();
    let mut paths: Vec<PathBuf> = vec![fixtures.join("r_canon.jpg")];
    for n in [
        "heic_iphone13pro.heic",
        "heic_iphonexs.heic",
        "heic_iphone8plus_portrait.heic",
        "heic_samsung_s25.heic",
        "heic_xiaomi.heic",
        "hif_sony_irot90.hif",
    ] {
        paths.push(corpus.join(n));
    }
    for p in paths {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = std::fs::read(&p).with_context(|| p.display().to_string())?;
        let mime = tessera_media::sniff_mime(&bytes[..bytes.len().min(64)], &name);
        let d = tessera_media::make_derivatives(&bytes, mime, None)
            .with_context(|| format!("decoding {name}"))?;
        sources.push((name, image::load_from_memory(&d.preview)?));
    }
    let faces = std::env::var("TESSERA_FACE_PHOTOS").ok().map(PathBuf::from);
    if let Some(f) = faces.filter(|f| f.is_dir()) {
        for e in std::fs::read_dir(f)?.flatten() {
            if let Ok(img) = image::open(e.path()) {
                sources.push((e.file_name().to_string_lossy().into_owned(), img));
            }
        }
    }
    // Thumbnail-sized hashing, as the node does (from the 250-px thumbnail).
    let thumb = |i: &DynamicImage| i.resize(400, 400, FilterType::Triangle);
    let mut items: Vec<(usize, String, u64)> = Vec::new();
    for (k, (name, img)) in sources.iter().enumerate() {
        items.push((k, name.to_string(), tessera_media::phash_image(&thumb(img))));
        for (vname, v) in variants(img) {
            items.push((
                k,
                format!("{name}:{vname}"),
                tessera_media::phash_image(&thumb(&v)),
            ));
        }
    }
    let originals: Vec<&(usize, String, u64)> =
        items.iter().filter(|x| !x.1.contains(':')).collect();
    for (i, a) in originals.iter().enumerate() {
        for b in &originals[i + 1..] {
            let d = tessera_core::dupes::distance(a.2, b.2);
            if d <= tessera_core::dupes::MAX_THRESHOLD {
                eprintln!("  close originals: {} ~ {} ({d} bits)", a.1, b.1);
            }
        }
    }
    let mut per_threshold = Vec::new();
    for t in 4..=tessera_core::dupes::MAX_THRESHOLD {
        let (mut tp, mut fp, mut fneg) = (0u64, 0u64, 0u64);
        for i in 0..items.len() {
            for j in (i + 1)..items.len() {
                let same = items[i].0 == items[j].0;
                let close = tessera_core::dupes::distance(items[i].2, items[j].2) <= t;
                match (same, close) {
                    (true, true) => tp += 1,
                    (false, true) => fp += 1,
                    (true, false) => fneg += 1,
                    _ => {}
                }
            }
        }
        let precision = tp as f64 / (tp + fp).max(1) as f64;
        let recall = tp as f64 / (tp + fneg).max(1) as f64;
        per_threshold.push(json!({"threshold": t, "precision": precision, "recall": recall, "tp": tp, "fp": fp, "fn": fneg}));
    }
    // Which variants get missed at the default threshold.
    let t = tessera_core::dupes::DEFAULT_THRESHOLD;
    let mut missed: std::collections::BTreeMap<String, u32> = Default::default();
    for (k, _, h) in items.iter().filter(|x| !x.1.contains(':')) {
        for (k2, name, h2) in &items {
            if k2 == k && name.contains(':') && tessera_core::dupes::distance(*h, *h2) > t {
                *missed
                    .entry(name.split(':').nth(1).unwrap_or_default().to_owned())
                    .or_default() += 1;
            }
        }
    }
    eprintln!(
        "near-duplicates: {} photos × {} variants",
        sources.len(),
        items.len() / sources.len().max(1) - 1
    );
    for p in &per_threshold {
        eprintln!(
            "  threshold {:>2}: precision {:.3} recall {:.3}",
            p["threshold"],
            p["precision"].as_f64().unwrap_or(0.0),
            p["recall"].as_f64().unwrap_or(0.0)
        );
    }
    eprintln!("  missed at {t}: {missed:?}");

    // The mixed corpus is its top-level files (`large/` is measured on its own below).
    let top = tempfile::tempdir()?;
    for e in std::fs::read_dir(&corpus)?.flatten() {
        if e.file_type()?.is_file() && !e.file_name().to_string_lossy().starts_with('.') {
            let to = top.path().join(e.file_name());
            if std::fs::hard_link(e.path(), &to).is_err() {
                std::fs::copy(e.path(), &to)?;
            }
        }
    }
    let mixed = import(&bin, top.path())?;
    eprintln!("import, mixed corpus: {mixed}");
    // The 200-MP HEIC grid (pillow-heif's test image): our tile-by-tile decode against
    // vipsthumbnail's (libheif decodes the whole grid) on the same file.
    let large = import(&bin, &corpus.join("large"))?;
    let vips_large = vips_heic(&corpus.join("large/heic_200mp.heic"))?;
    eprintln!("import, 200-MP HEIC: {large}\n  vipsthumbnail (preview only): {vips_large}");
    let mut jpegs: Vec<PathBuf> = std::fs::read_dir(&twelve)
        .with_context(|| format!("{} (run the ingest bench first)", twelve.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    jpegs.sort();
    let jpeg = import(&bin, &twelve)?;
    let vips_s = vips(&jpegs)?;
    let n = jpegs.len() as f64;
    let ours = jpeg["seconds"].as_f64().unwrap_or(0.0);
    eprintln!(
        "import, {} 12-MP JPEGs: {jpeg}\n  vipsthumbnail (thumbnail + preview, 2 workers): {:.2} files/s; import/vips = {:.2}",
        n,
        n / vips_s,
        (n / ours) / (n / vips_s)
    );
    let sharp = tessera_tests::sharp_reference(&jpegs, 2)?;
    if let Some(s) = &sharp {
        eprintln!("  {}", s.compare("import", n / ours));
    }
    let result = json!({
        "near_duplicates": {"photos": sources.len(), "items": items.len(), "default_threshold": t, "by_threshold": per_threshold, "missed_at_default": missed},
        "import_mixed": mixed,
        "import_200mp_heic": large,
        "vipsthumbnail_200mp_heic": vips_large,
        "import_12mp_jpeg": jpeg,
        "vipsthumbnail_12mp_files_per_s": n / vips_s,
        "import_vs_vipsthumbnail": (n / ours) / (n / vips_s),
        "sharp_12mp": sharp.as_ref().map(|s| &s.json),
        "import_vs_sharp": sharp.as_ref().map(|s| (n / ours) / s.immich),
        "import_vs_lean_sharp": sharp.as_ref().map(|s| (n / ours) / s.lean),
    });
    std::fs::write(&out, serde_json::to_vec_pretty(&result)?)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
