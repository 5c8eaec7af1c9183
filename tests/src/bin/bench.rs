//! `cargo xtask bench`: Tessera's ingest and thumbnail throughput on this machine, against
//! `vipsthumbnail` and Immich's own sharp pipeline on the same files in the same run. Writes
//! JSON to the path given as the first argument and prints a summary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;
use tessera_tests::photos::synthetic_photo;

const N: usize = 24;
const W: u32 = 4000;
const H: u32 = 3000;

fn main() -> Result<()> {
    let out = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/bench.json"));
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let dir = PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cache/tessera/bench/12mp-420");
    std::fs::create_dir_all(&dir)?;
    let mut files = Vec::new();
    for i in 0..N {
        let p = dir.join(format!("photo-{i:02}.jpg"));
        if !p.exists() {
            eprintln!("generating {}", p.display());
            std::fs::write(&p, synthetic_photo(W, H, i as u64)?)?;
        }
        files.push(p);
    }
    let total_bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    eprintln!(
        "{N} photos, {W}x{H}, {:.1} MB average, {threads} threads",
        total_bytes as f64 / N as f64 / 1e6
    );

    // 1. The media pipeline alone: hash + EXIF + thumbnail + preview + thumbhash.
    let pipeline = parallel(&files, threads, |p| {
        let bytes = std::fs::read(p)?;
        let _h = tessera_media::hash_bytes(&bytes);
        let md = tessera_media::read_metadata(&bytes);
        let d = tessera_media::make_derivatives(&bytes, "image/jpeg", md.orientation)?;
        if d.thumbnail.is_empty() || d.preview.is_empty() {
            bail!("empty derivative");
        }
        Ok(())
    })?;
    let pipeline_rate = N as f64 / pipeline.as_secs_f64();
    eprintln!("tessera pipeline: {pipeline_rate:.1} photos/s");

    // 2. The same outputs from vipsthumbnail (two calls per photo, like two derivatives).
    let tmp = tempfile::tempdir()?;
    let vips = if Command::new("vipsthumbnail").arg("--help").output().is_ok() {
        let t = tmp.path().to_path_buf();
        let d = parallel(&files, threads, move |p| {
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("x");
            for (size, name) in [("x250", "thumb"), ("1440x1440", "preview")] {
                let o = t.join(format!("{stem}-{name}.jpg[Q=80]"));
                let st = Command::new("vipsthumbnail")
                    .arg(p)
                    .args(["--size", size, "-o"])
                    .arg(&o)
                    .status()?;
                if !st.success() {
                    bail!("vipsthumbnail failed on {}", p.display());
                }
            }
            Ok(())
        })?;
        Some(N as f64 / d.as_secs_f64())
    } else {
        eprintln!("vipsthumbnail not installed (Debian libvips-tools): skipping the reference");
        None
    };
    if let Some(v) = vips {
        eprintln!(
            "vipsthumbnail: {v:.1} photos/s (tessera/vips = {:.2}x)",
            pipeline_rate / v
        );
    }

    // 3. Immich's own pipeline (sharp: one shrink-on-load decode, preview, WebP thumbnail,
    //    thumbhash), two photos at a time.
    let sharp = tessera_tests::sharp_reference(&files, threads)?;
    if let Some(s) = &sharp {
        eprintln!("{}", s.compare("tessera", pipeline_rate));
    }

    // 4. Full ingest through a real node: HTTP upload, fsync, catalogue, queued media jobs,
    //    until every photo is ready.
    let (cpu0, wall0) = (process_cpu_seconds(), Instant::now());
    let ingest_rate = ingest_through_node(&files)?;
    // How busy both cores were: below 1, the node waited (disk, network, its own queue).
    let ingest_cpu =
        (process_cpu_seconds() - cpu0) / wall0.elapsed().as_secs_f64() / threads as f64;
    eprintln!(
        "full ingest through the node: {ingest_rate:.1} photos/s (cores {:.0} % busy)",
        ingest_cpu * 100.0
    );

    let wasm_gz = wasm_gzipped_size();
    let report = json!({
        "machine_threads": threads,
        "photos": N, "width": W, "height": H, "total_bytes": total_bytes,
        "pipeline_photos_per_s": pipeline_rate,
        "vipsthumbnail_photos_per_s": vips,
        "pipeline_vs_vips_ratio": vips.map(|v| pipeline_rate / v),
        "sharp": sharp.as_ref().map(|s| &s.json),
        "pipeline_vs_sharp_ratio": sharp.as_ref().map(|s| pipeline_rate / s.immich),
        "pipeline_vs_lean_sharp_ratio": sharp.as_ref().map(|s| pipeline_rate / s.lean),
        "node_ingest_photos_per_s": ingest_rate,
        "node_ingest_cpu_busy": ingest_cpu,
        "node_ingest_vs_sharp_ratio": sharp.as_ref().map(|s| ingest_rate / s.immich),
        "node_ingest_vs_lean_sharp_ratio": sharp.as_ref().map(|s| ingest_rate / s.lean),
        "wasm_gzipped_bytes": wasm_gz,
    });
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!("written to {}", out.display());
    Ok(())
}

/// This process's CPU time so far (user + system, every thread), from `/proc/self/stat`.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) end with ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn parallel(
    files: &[PathBuf],
    threads: usize,
    f: impl Fn(&Path) -> Result<()> + Send + Sync + 'static,
) -> Result<Duration> {
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let files = Arc::new(files.to_vec());
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (f, next, files) = (f.clone(), next.clone(), files.clone());
            std::thread::spawn(move || -> Result<()> {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(p) = files.get(i) else { return Ok(()) };
                    f(p)?;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
    }
    Ok(start.elapsed())
}

fn ingest_through_node(files: &[PathBuf]) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Runtime::new()?;
    let node =
        tessera_sync_node::Node::open(tessera_sync_node::NodeConfig::new(dir.path().join("data")))?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let router = tessera_sync_node::http::router(node.clone());
    rt.spawn(async move { axum::serve(listener, router).await });
    rt.spawn(tessera_sync_node::jobs::run(node.clone()));
    let mut api = tessera_tests::Api::new(&format!("http://{addr}"));
    api.bootstrap_admin()?;
    let api = Arc::new(api);
    let start = Instant::now();
    let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
    let a2 = api.clone();
    let ids2 = ids.clone();
    parallel(files, 2, move |p| {
        let bytes = std::fs::read(p)?;
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("x.jpg")
            .to_owned();
        let (code, body) = a2.upload(&name, bytes)?;
        if code != 201 {
            bail!("upload {name}: {code} {body}");
        }
        ids2.lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push(body["id"].as_str().unwrap_or_default().to_owned());
        Ok(())
    })?;
    let ids = ids.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    for id in &ids {
        let a = api.wait_processed(id, Duration::from_secs(600))?;
        if a["tessera"]["status"] != "ready" {
            bail!("{id} not processed: {a}");
        }
    }
    let rate = ids.len() as f64 / start.elapsed().as_secs_f64();
    drop(rt);
    Ok(rate)
}

fn wasm_gzipped_size() -> Option<u64> {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.join("dist");
    let wasm = std::fs::read_dir(&dist)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "wasm"))?;
    let out = Command::new("gzip").arg("-9c").arg(&wasm).output().ok()?;
    Some(out.stdout.len() as u64)
}
