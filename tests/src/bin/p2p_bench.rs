//! Peer-to-peer numbers (`cargo xtask bench`), written as JSON to the path given:
//! - a fresh device syncing a 10,000-asset catalogue over iroh (native client, loopback), and
//!   Immich's mobile sync stream (`POST /api/sync/stream`) over the same catalogue;
//! - node → node replication throughput of originals on loopback, against `cp` (and `cp` +
//!   `sync`, since replication fsyncs every blob) of the same blob files.
//!
//! Both nodes are real `sync-node` release processes; the data is written straight into the
//! first node's stores (the catalogue with `tessera-core`, blobs with the blob store), so the
//! numbers measure sync, not ingest.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::{RngCore, SeedableRng};
use tessera_core::{AssetRecord, Library, PeerSync};
use tessera_sync_node::blobs::BlobKind;
use tessera_sync_node::{Node as NodeStore, NodeConfig};
use tessera_tests::p2p::{asset_count, connect, endpoint, node_addr, sync_until_quiet};
use tessera_tests::{Api, Node};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A data directory with an admin and `n` asset records over 24 months (no originals).
fn catalogue_dir(dir: &Path, n: u64) -> Result<()> {
    let node = NodeStore::open(NodeConfig::new(dir))?;
    let admin = node
        .auth
        .admin_sign_up("admin@example.com", "correct horse", "Admin")?;
    let mut lib = node.catalog.lock()?;
    let recs: Vec<AssetRecord> = (0..n)
        .map(|i| AssetRecord {
            id: blake3::hash(&i.to_le_bytes()).to_hex().to_string(),
            owner: Some(admin.id.clone()),
            filename: Some(format!("IMG_{i:05}.jpg")),
            mime: Some("image/jpeg".into()),
            size: Some(3_000_000 + i),
            taken_at: Some(format!(
                "{}-{:02}-{:02}T12:00:00",
                2023 + (i % 24) / 12,
                1 + (i % 12),
                1 + (i % 28)
            )),
            width: Some(4032),
            height: Some(3024),
            status: Some("ready".into()),
            ..Default::default()
        })
        .collect();
    for chunk in recs.chunks(500) {
        lib.upsert_assets(&admin.id, chunk)?;
    }
    node.catalog.persist(&mut lib)?;
    drop(lib);
    node.flush()?;
    Ok(())
}

/// Immich's mobile sync stream on this catalogue: the first (full) stream's time to the last
/// byte, size and lines; then, after acking it, a stream with nothing new.
fn sync_stream(url: &str) -> Result<serde_json::Value> {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let login: serde_json::Value = http
        .post(format!("{url}/api/auth/login"))
        .json(&serde_json::json!({"email": "admin@example.com", "password": "correct horse"}))
        .send()?
        .json()?;
    let token = login["accessToken"]
        .as_str()
        .context("access token")?
        .to_owned();
    let types = serde_json::json!({"types": ["AuthUsersV1", "UsersV1", "AssetsV2", "AssetExifsV1",
        "PartnersV1", "PartnerAssetsV2", "PartnerAssetExifsV1", "AlbumsV2", "AlbumUsersV1",
        "AlbumAssetsV2", "AlbumAssetExifsV1", "AlbumToAssetsV1"]});
    let run = || -> Result<(f64, usize, Vec<serde_json::Value>)> {
        let t = Instant::now();
        let body = http
            .post(format!("{url}/api/sync/stream"))
            .bearer_auth(&token)
            .json(&types)
            .send()?
            .error_for_status()?
            .text()?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let lines: Vec<serde_json::Value> = body
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        Ok((ms, body.len(), lines))
    };
    let (full_ms, full_bytes, lines) = run()?;
    let mut last = std::collections::BTreeMap::new();
    for l in &lines {
        last.insert(
            l["type"].as_str().unwrap_or_default().to_owned(),
            l["ack"].clone(),
        );
    }
    let t = Instant::now();
    http.post(format!("{url}/api/sync/ack"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"acks": last.values().collect::<Vec<_>>()}))
        .send()?
        .error_for_status()?;
    let ack_ms = t.elapsed().as_secs_f64() * 1000.0;
    let (quiet_ms, quiet_bytes, quiet) = run()?;
    let assets = lines.iter().filter(|l| l["type"] == "AssetV2").count();
    eprintln!(
        "sync stream: {} lines ({assets} assets), {:.1} MB in {full_ms:.0} ms; ack {ack_ms:.0} ms; \
         then {} line(s) in {quiet_ms:.0} ms",
        lines.len(),
        full_bytes as f64 / 1e6,
        quiet.len()
    );
    Ok(serde_json::json!({
        "full": {"ms": full_ms, "bytes": full_bytes, "lines": lines.len(), "assets": assets},
        "ack_ms": ack_ms,
        "nothing_new": {"ms": quiet_ms, "bytes": quiet_bytes, "lines": quiet.len()},
    }))
}

fn fresh_device(root: &Path, n: u64) -> Result<serde_json::Value> {
    let data = root.join("catalogue");
    let t = Instant::now();
    catalogue_dir(&data, n)?;
    eprintln!("made a {n}-asset catalogue in {:?}", t.elapsed());
    let node = Node::start(&data)?;
    let mut api = Api::new(&node.url);
    api.login("admin@example.com", "correct horse")?;
    let (_, me) = api.get_json("/api/users/me")?;
    let user = me["id"].as_str().context("user id")?.to_owned();
    let stream = sync_stream(&node.url)?;
    let addr = node_addr(&api)?;
    let rt = tokio::runtime::Runtime::new()?;
    let mut runs = Vec::new();
    for _ in 0..3 {
        let key = iroh::SecretKey::generate();
        let r = api
            .req(reqwest::Method::POST, "/api/tessera/devices")
            .json(&tessera_tests::p2p::bind_body(
                &key, &addr.id, &user, "bench",
            ))
            .send()?;
        if r.status().as_u16() != 201 {
            bail!("binding a device: {}", r.text()?);
        }
        let secs = rt.block_on(async {
            let ep = endpoint(key).await?;
            let t = Instant::now();
            let mut s = connect(&ep, addr.clone(), None)
                .await?
                .map_err(anyhow::Error::msg)?;
            let mut lib = Library::new(&[7; 16]);
            let mut sync = PeerSync::new();
            let quiet = Duration::from_millis(300);
            sync_until_quiet(&mut s, &mut lib, &mut sync, quiet).await?;
            let secs = t.elapsed().saturating_sub(quiet).as_secs_f64();
            let got = asset_count(&lib, &user);
            ep.close().await;
            if got as u64 != n {
                bail!("synced {got} of {n} assets");
            }
            anyhow::Ok(secs)
        })?;
        eprintln!("fresh device synced {n} assets in {secs:.2} s");
        runs.push(secs);
    }
    let docs_bytes: u64 = std::fs::read_dir(data.join("docs"))?
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    Ok(serde_json::json!({
        "assets": n,
        "catalogue_bytes_on_node": docs_bytes,
        "seconds": runs,
        "best_seconds": runs.iter().cloned().fold(f64::MAX, f64::min),
        "immich_sync_stream": stream,
    }))
}

fn replication(root: &Path, count: u64, size: usize) -> Result<serde_json::Value> {
    let da = root.join("repl-a");
    {
        let node = NodeStore::open(NodeConfig::new(&da))?;
        node.auth
            .admin_sign_up("admin@example.com", "correct horse", "Admin")?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut buf = vec![0u8; size];
        for _ in 0..count {
            rng.fill_bytes(&mut buf);
            node.blobs.put_bytes(BlobKind::Original, &buf)?;
        }
        node.flush()?;
    }
    let bytes = count * size as u64;
    let a = Node::start(&da)?;
    let mut api = Api::new(&a.url);
    api.login("admin@example.com", "correct horse")?;
    let r = api
        .req(reqwest::Method::POST, "/api/pairing/tickets")
        .send()?;
    let ticket: serde_json::Value = r.json()?;
    let ticket = ticket["ticket"].as_str().context("ticket")?.to_owned();
    let db = root.join("repl-b");
    let t = Instant::now();
    let b = Node::start_with(&db, &["--join", &ticket])?;
    let count_files = |d: &Path| -> u64 { walk_count(&d.join("blobs/original")) };
    let deadline = Instant::now() + Duration::from_secs(1800);
    while count_files(&db) < count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = t.elapsed().as_secs_f64();
    if count_files(&db) < count {
        bail!(
            "replicated {} of {count} blobs; log: {}",
            count_files(&db),
            b.log()
        );
    }
    drop(b);
    drop(a);
    let dc = root.join("cp-target");
    let t = Instant::now();
    let ok = Command::new("cp")
        .arg("-r")
        .arg(da.join("blobs"))
        .arg(&dc)
        .status()?
        .success();
    let cp_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let _ = Command::new("sync").status();
    let sync_secs = t.elapsed().as_secs_f64();
    if !ok {
        bail!("cp failed");
    }
    let mb = bytes as f64 / 1e6;
    eprintln!(
        "replication: {mb:.0} MB in {secs:.2} s = {:.0} MB/s; cp {:.0} MB/s; cp+sync {:.0} MB/s",
        mb / secs,
        mb / cp_secs,
        mb / (cp_secs + sync_secs)
    );
    Ok(serde_json::json!({
        "blobs": count,
        "bytes": bytes,
        "seconds": secs,
        "mb_per_s": mb / secs,
        "cp_seconds": cp_secs,
        "cp_mb_per_s": mb / cp_secs,
        "cp_plus_sync_mb_per_s": mb / (cp_secs + sync_secs),
    }))
}

fn walk_count(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                n += walk_count(&p);
            } else {
                n += 1;
            }
        }
    }
    n
}

fn main() -> Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "p2p-bench.json".into());
    let dir =
        tempfile::tempdir_in(std::env::var("TESSERA_BENCH_DIR").unwrap_or_else(|_| ".".into()))?;
    let n = env_num("TESSERA_BENCH_CATALOGUE", 10_000);
    let fresh = fresh_device(dir.path(), n)?;
    let count = env_num("TESSERA_BENCH_REPL_BLOBS", 100);
    let size = env_num("TESSERA_BENCH_REPL_BLOB_MB", 4) as usize * 1_000_000;
    let repl = replication(dir.path(), count, size)?;
    let report = serde_json::json!({"fresh_device": fresh, "replication": repl});
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
