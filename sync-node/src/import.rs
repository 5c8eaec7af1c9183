//! Bulk import of a folder tree straight into a data directory (`sync-node import DIR`).
//!
//! Walks the tree, pairs each photo/video with its sidecars (`X.xmp`, `X.jpg.xmp`,
//! `X.jpg.json`, `X.jpg.supplemental-metadata.json`), and ingests files on `workers` threads:
//! the original is copied into the blob store (hashed while copied, fsynced under its hash),
//! recorded in the owner's catalogue, and its thumbnail/preview made right away. A file whose
//! content is already stored counts as a duplicate. Finished files are remembered in the
//! `import_done` tree (path → size, mtime, asset id), so a run stopped by Ctrl-C or a crash
//! resumes without hashing them again. Unsupported and failing files are collected in the
//! report; one bad file never stops the run.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::blobs::BlobKind;
use crate::ingest::{ingest_committed, Outcome, UploadMeta};
use crate::node::{Node, NodeError};

/// One file to import, with its sidecar if any.
#[derive(Debug, Clone)]
pub struct Item {
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: u128,
    pub sidecar: Option<PathBuf>,
}

impl Item {
    /// The file's modification time, RFC 3339 (what an upload's `fileModifiedAt` carries).
    pub fn modified_rfc3339(&self) -> Option<String> {
        chrono::DateTime::from_timestamp(
            (self.mtime_ns / 1_000_000_000) as i64,
            (self.mtime_ns % 1_000_000_000) as u32,
        )
        .map(|t| t.to_rfc3339())
    }
}

/// What a walk found.
#[derive(Debug, Default)]
pub struct Plan {
    pub items: Vec<Item>,
    /// Neither a photo, a video nor a sidecar of one.
    pub unsupported: Vec<PathBuf>,
    pub bytes: u64,
}

/// Sidecar names that belong to `file` (a Takeout name may carry `.supplemental-metadata`).
fn sidecar_candidates(file: &Path) -> Vec<PathBuf> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = file
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = file.parent().unwrap_or(Path::new(""));
    [
        format!("{name}.xmp"),
        format!("{name}.XMP"),
        format!("{stem}.xmp"),
        format!("{stem}.XMP"),
        format!("{name}.json"),
        format!("{name}.supplemental-metadata.json"),
    ]
    .into_iter()
    .map(|n| dir.join(n))
    .collect()
}

fn is_sidecar(p: &Path) -> bool {
    let n = p.to_string_lossy().to_ascii_lowercase();
    n.ends_with(".xmp") || n.ends_with(".json")
}

/// Walks `root` (symlinks are not followed; hidden files are skipped).
pub fn plan(root: &Path) -> Result<Plan, NodeError> {
    let mut files: Vec<(PathBuf, std::fs::Metadata)> = Vec::new();
    let mut errors = Vec::new();
    for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
        match entry {
            Ok(e) if e.file_type().is_file() => {
                if e.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                match e.metadata() {
                    Ok(m) => files.push((e.into_path(), m)),
                    Err(err) => errors.push(err.to_string()),
                }
            }
            Ok(_) => {}
            Err(err) => errors.push(err.to_string()),
        }
    }
    if files.is_empty() && !errors.is_empty() {
        return Err(NodeError::Corrupt(format!(
            "cannot read {}: {}",
            root.display(),
            errors.join("; ")
        )));
    }
    let present: std::collections::HashSet<PathBuf> =
        files.iter().map(|(p, _)| p.clone()).collect();
    let mut plan = Plan::default();
    let mut used_sidecars = std::collections::HashSet::new();
    for (path, meta) in &files {
        let name = path.to_string_lossy();
        if tessera_media::media_kind(&name).is_none() {
            continue;
        }
        let sidecar = sidecar_candidates(path)
            .into_iter()
            .find(|c| present.contains(c));
        if let Some(s) = &sidecar {
            used_sidecars.insert(s.clone());
        }
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        plan.bytes += meta.len();
        plan.items.push(Item {
            path: path.clone(),
            size: meta.len(),
            mtime_ns,
            sidecar,
        });
    }
    for (path, _) in files {
        let media = tessera_media::media_kind(&path.to_string_lossy()).is_some();
        let consumed = is_sidecar(&path) && used_sidecars.contains(&path);
        if !media && !consumed {
            plan.unsupported.push(path);
        }
    }
    Ok(plan)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Done {
    size: u64,
    mtime_ns: u128,
    asset: String,
}

/// The outcome of one file.
#[derive(Debug, Clone, PartialEq)]
pub enum FileResult {
    Imported(String),
    Duplicate(String),
    /// Finished by an earlier run (resume).
    AlreadyDone(String),
    Failed(String),
}

/// Totals and the files that need the user's attention.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub files: usize,
    pub imported: usize,
    pub duplicates: usize,
    pub resumed: usize,
    pub bytes: u64,
    pub seconds: f64,
    /// Files that could not be imported, and why.
    pub failed: Vec<(String, String)>,
    /// Stored, but no thumbnail could be made (corrupt or undecodable), and why.
    pub no_preview: Vec<(String, String)>,
    /// Not a photo or video Tessera accepts (left alone).
    pub unsupported: Vec<String>,
    pub album: Option<String>,
    /// Set when the run was interrupted before every file was done.
    pub interrupted: bool,
}

/// Imports one file into `node` for `owner`. Makes derivatives at once (the caller's thread)
/// unless `derive` is false.
pub fn import_file(
    node: &Node,
    owner: &str,
    item: &Item,
    done: &sled::Tree,
    derive: bool,
) -> Result<(FileResult, Option<String>), NodeError> {
    // Per user: importing the same folder into another member's library is not "done".
    let key = format!("{owner}\0{}", item.path.to_string_lossy());
    if let Some(v) = done.get(key.as_bytes())? {
        if let Ok(d) = serde_json::from_slice::<Done>(&v) {
            if d.size == item.size && d.mtime_ns == item.mtime_ns {
                return Ok((FileResult::AlreadyDone(d.asset), None));
            }
        }
    }
    let io = |e: std::io::Error| NodeError::Corrupt(format!("{}: {e}", item.path.display()));
    let mut f = std::fs::File::open(&item.path).map_err(io)?;
    let mut pending = node.blobs.begin()?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        pending.write(&buf[..n])?;
    }
    if pending.is_empty() {
        pending.abort();
        return Ok((FileResult::Failed("empty file (0 bytes)".into()), None));
    }
    let size = pending.len();
    let sidecar = match &item.sidecar {
        Some(p) => Some(std::fs::read(p).map_err(io)?),
        None => None,
    };
    let storing = node.storing();
    let (hashes, _) = node.blobs.commit(BlobKind::Original, pending)?;
    let meta = UploadMeta {
        filename: item
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into()),
        file_modified_at: item.modified_rfc3339(),
        sidecar,
        ..Default::default()
    };
    let outcome = ingest_committed(node, owner, &hashes, size, meta)?;
    drop(storing);
    let (result, id) = match outcome {
        Outcome::Created(id) => (FileResult::Imported(id.clone()), id),
        Outcome::Duplicate(id) | Outcome::Restored(id) => (FileResult::Duplicate(id.clone()), id),
    };
    let mut problem = None;
    if derive && matches!(result, FileResult::Imported(_)) && node.jobs.is_queued(&id) {
        crate::jobs::process(node, &id, owner)?;
        node.jobs.finish(&id);
        if let Some(loc) = node.location_of(owner, &id)? {
            let shard = tessera_core::DocId::shard(owner, &loc.month)
                .map_err(|e| NodeError::Corrupt(e.to_string()))?;
            let rec = node
                .catalog
                .lock()?
                .asset_in(&shard, &id)
                .map_err(crate::catalog::CatalogError::from)?;
            if let Some(r) = rec.filter(|r| r.status.as_deref() != Some("ready")) {
                problem = r.error;
            }
        }
    }
    let d = Done {
        size: item.size,
        mtime_ns: item.mtime_ns,
        asset: id,
    };
    done.insert(
        key.as_bytes(),
        serde_json::to_vec(&d).map_err(|e| NodeError::Corrupt(e.to_string()))?,
    )?;
    Ok((result, problem))
}

/// Imports a plan on `node.config.workers` × [`crate::jobs::JOBS_PER_WORKER`] threads (of
/// which `node.config.workers` decode at once, [`Node::cpu`]), reporting progress through
/// `progress(done_files, done_bytes)`. Stops early (between files) when `stop` is set.
pub fn run(
    node: &Node,
    owner: &str,
    plan: Plan,
    album: Option<&str>,
    stop: &AtomicBool,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Report, NodeError> {
    let started = Instant::now();
    let done_tree = node.db.open_tree("import_done")?;
    let total = plan.items.len();
    let queue = Mutex::new(plan.items.into_iter());
    let results: Mutex<Vec<(PathBuf, FileResult, Option<String>)>> = Mutex::new(Vec::new());
    let (files_done, bytes_done) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for _ in 0..node.config.workers.max(1) * crate::jobs::JOBS_PER_WORKER {
            s.spawn(|| loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let next = queue.lock().ok().and_then(|mut q| q.next());
                let Some(item) = next else { return };
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    import_file(node, owner, &item, &done_tree, true)
                }));
                let (r, problem) = match outcome {
                    Ok(Ok(x)) => x,
                    Ok(Err(e)) => (FileResult::Failed(e.to_string()), None),
                    Err(_) => (
                        FileResult::Failed("crashed while importing this file".into()),
                        None,
                    ),
                };
                if let Ok(mut v) = results.lock() {
                    v.push((item.path.clone(), r, problem));
                }
                let f = files_done.fetch_add(1, Ordering::Relaxed) + 1;
                let b = bytes_done.fetch_add(item.size, Ordering::Relaxed) + item.size;
                progress(f, b);
            });
        }
    });
    let results = results.into_inner().unwrap_or_default();
    let mut report = Report {
        files: total,
        bytes: bytes_done.load(Ordering::Relaxed),
        unsupported: plan
            .unsupported
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        interrupted: results.len() < total,
        ..Default::default()
    };
    let mut ids = Vec::new();
    for (path, r, problem) in results {
        let p = path.display().to_string();
        match r {
            FileResult::Imported(id) => {
                report.imported += 1;
                ids.push(id);
            }
            FileResult::Duplicate(id) => {
                report.duplicates += 1;
                ids.push(id);
            }
            FileResult::AlreadyDone(id) => {
                report.resumed += 1;
                ids.push(id);
            }
            FileResult::Failed(why) => report.failed.push((p.clone(), why.trim().to_owned())),
        }
        if let Some(why) = problem {
            report.no_preview.push((p, why.trim().to_owned()));
        }
    }
    report.failed.sort();
    report.no_preview.sort();
    if let Some(name) = album {
        add_to_album(node, owner, name, &ids)?;
        report.album = Some(name.to_owned());
    }
    node.flush()?;
    // Everything is imported: an index not written only means checking more at next start.
    if let Err(e) = node.save_indexes() {
        tracing::warn!(error = %e, "cannot write the catalogue's start-up indexes");
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Puts `ids` (the owner's assets) in the owner's album called `name`, creating it if the
/// owner has no album of that name yet (what Immich's CLI does with `--album-name`).
pub fn add_to_album(node: &Node, owner: &str, name: &str, ids: &[String]) -> Result<(), NodeError> {
    let now = crate::now_rfc3339();
    let mut lib = node.catalog.lock()?;
    let existing = lib
        .albums_of(owner)
        .map_err(crate::catalog::CatalogError::from)?
        .into_iter()
        .find(|a| a.owner == owner && a.name == name);
    let doc = match existing {
        Some(a) => {
            tessera_core::DocId::album(&a.id).map_err(|e| NodeError::Corrupt(e.to_string()))?
        }
        None => {
            let id = crate::random_hex(16).map_err(|e| NodeError::Corrupt(e.to_string()))?;
            lib.create_album(&id, owner, name, "", &now)
                .map_err(crate::catalog::CatalogError::from)?
        }
    };
    let unique: BTreeMap<&String, ()> = ids.iter().map(|i| (i, ())).collect();
    let items: Vec<(String, String)> = unique
        .into_keys()
        .map(|id| (id.clone(), owner.to_owned()))
        .collect();
    lib.add_album_items(&doc, &items, owner, &now)
        .map_err(crate::catalog::CatalogError::from)?;
    node.catalog.persist(&mut lib)?;
    Ok(())
}
