//! The scheduled scrub: every blob file is read back and re-hashed at a bounded rate, so silent
//! corruption (bit rot, a failing disk) is found while a replica still has good bytes.
//!
//! - One pass walks the blob files in hash order at `rate` bytes/s (sleeping between 1 MiB
//!   reads), then the next pass starts `every` after this one started. The position is
//!   persisted in sled after each file, so a restart resumes the pass where it stopped.
//! - A file whose bytes no longer hash to its name is moved to `<data>/quarantine` (under the
//!   purge lock, after hashing it once more, so a re-upload committing the same hash is never
//!   the file moved away) and dropped from the index. Then:
//!   - derivatives are made again by their media job (the catalogue check re-queues them);
//!   - originals come back from another node of the household: the node's sessions with its
//!     nodes are restarted, both sides exchange inventories again, and replication fetches
//!     what this node no longer has (hash-checked before it is kept).
//! - The status — progress of the running pass, the last finished pass and every corrupt blob
//!   with whether it is back — is `GET /api/tessera/admin/scrub` and the admin page's panel.
//!
//! Architecture invariant: the scrub never deletes: a corrupt file is moved, never removed,
//! and a blob that cannot be read (gone meanwhile: purged) is skipped, not reported.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::blobs::{hash_file, hash_file_paced, BlobError, BlobKind};
use crate::node::{Node, NodeError};

/// How the scrub runs (`sync-node serve --scrub-rate-mb … --scrub-every-days …`).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScrubConfig {
    /// Bytes read per second (0: the scrub is off).
    pub rate: u64,
    /// From the start of one pass to the start of the next.
    #[serde(with = "secs")]
    pub every: Duration,
}

impl Default for ScrubConfig {
    fn default() -> Self {
        Self {
            rate: 16 << 20,
            every: Duration::from_secs(30 * 86_400),
        }
    }
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// One blob whose bytes did not match its name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CorruptBlob {
    pub kind: String,
    pub hash: String,
    /// What the bytes hashed to.
    pub found: String,
    pub quarantined_to: String,
    pub found_at: String,
    /// Filled in when the status is read: the blob is stored again (from a replica, or made
    /// again by its media job).
    #[serde(default)]
    pub repaired: bool,
}

/// A finished pass.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassReport {
    pub started: String,
    pub finished: String,
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub corrupt: Vec<CorruptBlob>,
}

/// The persisted state (sled key `scrub` in the default tree).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Persisted {
    /// The pass under way: when it started and the last `kind/hash` it checked.
    current: Option<Current>,
    last: Option<PassReport>,
    /// Start of the last finished pass (Unix seconds; the schedule counts from it).
    last_started_unix: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Current {
    started: String,
    started_unix: u64,
    after: Option<String>,
    files: u64,
    bytes: u64,
    corrupt: Vec<CorruptBlob>,
}

/// What `GET /api/tessera/admin/scrub` answers.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScrubStatus {
    pub config: ScrubConfig,
    pub running: bool,
    /// The pass under way (also one interrupted by a restart, resumed at the next start).
    pub current: Option<Progress>,
    pub last_pass: Option<PassReport>,
    /// When the next pass starts (RFC 3339), while none runs.
    pub next_pass: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub started: String,
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub corrupt: Vec<CorruptBlob>,
}

const KEY: &[u8] = b"scrub";

/// The scrub's shared state: the node holds one.
#[derive(Default)]
pub struct Scrub {
    config: Mutex<ScrubConfig>,
    running: AtomicBool,
    /// Set by `POST /api/tessera/admin/scrub`: start a pass now.
    wake: tokio::sync::Notify,
    total: Mutex<u64>,
}

impl std::fmt::Debug for Scrub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrub")
            .field("running", &self.running.load(Ordering::Relaxed))
            .finish()
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn rfc3339(unix: u64) -> String {
    chrono::DateTime::from_timestamp(unix as i64, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn load(node: &Node) -> Result<Persisted, NodeError> {
    Ok(node
        .db
        .get(KEY)?
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or_default())
}

fn store(node: &Node, p: &Persisted) -> Result<(), NodeError> {
    let v = serde_json::to_vec(p).map_err(|e| NodeError::Corrupt(e.to_string()))?;
    node.db.insert(KEY, v)?;
    Ok(())
}

impl Scrub {
    pub fn configure(&self, config: ScrubConfig) {
        if let Ok(mut c) = self.config.lock() {
            *c = config;
        }
    }

    pub fn config(&self) -> ScrubConfig {
        self.config.lock().map(|c| *c).unwrap_or_default()
    }

    /// Starts a pass now (when none runs).
    pub fn start_now(&self) {
        self.wake.notify_one();
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }
}

/// The status, with each corrupt blob's `repaired` looked up now.
pub fn status(node: &Node) -> Result<ScrubStatus, NodeError> {
    let p = load(node)?;
    let config = node.scrub.config();
    let mark = |list: &mut Vec<CorruptBlob>| {
        for c in list.iter_mut() {
            c.repaired = BlobKind::from_dir(&c.kind).is_some_and(|k| node.blobs.exists(k, &c.hash));
        }
    };
    let running = node.scrub.is_running();
    let current = p.current.clone().map(|mut c| {
        mark(&mut c.corrupt);
        Progress {
            started: c.started,
            files_done: c.files,
            files_total: node.scrub.total.lock().map(|t| *t).unwrap_or(0),
            bytes_done: c.bytes,
            corrupt: c.corrupt,
        }
    });
    let mut last_pass = p.last.clone();
    if let Some(l) = last_pass.as_mut() {
        mark(&mut l.corrupt);
    }
    let next_pass = (!running && config.rate > 0).then(|| {
        rfc3339(
            p.last_started_unix
                .map(|s| s + config.every.as_secs())
                .unwrap_or_else(now_unix)
                .max(now_unix()),
        )
    });
    Ok(ScrubStatus {
        config,
        running,
        current,
        last_pass,
        next_pass,
    })
}

/// Runs passes on schedule (and on [`Scrub::start_now`]) for as long as the node runs.
pub async fn run(node: Arc<Node>) {
    loop {
        let config = node.scrub.config();
        let wait = match load(&node) {
            Ok(p) if p.current.is_some() => Duration::ZERO,
            Ok(p) => p
                .last_started_unix
                .map(|s| {
                    Duration::from_secs((s + config.every.as_secs()).saturating_sub(now_unix()))
                })
                // A first pass a minute after start, not while the node is busy starting.
                .unwrap_or(Duration::from_secs(60)),
            Err(e) => {
                tracing::error!("scrub state unreadable: {e}");
                Duration::from_secs(3600)
            }
        };
        if config.rate == 0 {
            // Off: only a request starts one.
            node.scrub.wake.notified().await;
        } else {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = node.scrub.wake.notified() => {}
            }
        }
        let n = node.clone();
        node.scrub.running.store(true, Ordering::Release);
        let res = tokio::task::spawn_blocking(move || pass(&n)).await;
        node.scrub.running.store(false, Ordering::Release);
        match res {
            Ok(Ok(report)) => {
                let repairs = report.corrupt.len();
                if repairs > 0 {
                    tracing::error!(
                        corrupt = repairs,
                        files = report.files,
                        "scrub found blobs whose bytes no longer match their hash: quarantined, repairing"
                    );
                    repair(&node);
                } else {
                    tracing::info!(
                        files = report.files,
                        bytes = report.bytes,
                        seconds = report.seconds,
                        "scrub pass clean"
                    );
                }
            }
            Ok(Err(e)) => {
                tracing::error!("scrub pass failed: {e}");
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
            Err(e) => tracing::error!("scrub pass crashed: {e}"),
        }
    }
}

/// After corruption: derivatives are queued again, originals are asked of the other nodes.
fn repair(node: &Arc<Node>) {
    if let Err(e) = crate::housekeeping::check_catalogue(node, true) {
        tracing::warn!("re-queueing derivatives after the scrub failed: {e}");
    }
    if let Some(peer) = node.peer.get() {
        peer.resync_nodes("the scrub quarantined corrupt blobs");
    }
}

/// One pass (resuming an interrupted one). Blocking: run on a blocking thread.
pub fn pass(node: &Node) -> Result<PassReport, NodeError> {
    let mut p = load(node)?;
    if p.current.is_none() {
        let started_unix = now_unix();
        p.current = Some(Current {
            started: rfc3339(started_unix),
            started_unix,
            ..Default::default()
        });
    }
    store(node, &p)?;
    let clock = Instant::now();
    // In the cursor's order (`kind/hash`), so a resumed pass skips exactly what was checked.
    let mut files = node.blobs.walk();
    files.sort_by(|a, b| (a.0.dir(), &a.1).cmp(&(b.0.dir(), &b.1)));
    if let Ok(mut t) = node.scrub.total.lock() {
        *t = files.len() as u64;
    }
    // Scheduled passes off (rate 0): a pass asked for by the admin runs at the default rate.
    let rate = match node.scrub.config().rate {
        0 => ScrubConfig::default().rate,
        r => r,
    } as f64;
    let mut read_in_window = 0u64;
    let window = Instant::now();
    for (kind, hash, path) in files {
        let key = format!("{}/{hash}", kind.dir());
        let Some(cur) = p.current.as_mut() else { break };
        if cur.after.as_ref().is_some_and(|a| key <= *a) {
            continue;
        }
        match hash_throttled(&path, rate, &mut read_in_window, window) {
            Ok((found, size)) => {
                cur.files += 1;
                cur.bytes += size;
                if found != hash {
                    if let Some(c) = quarantine(node, kind, &hash, &path)? {
                        tracing::error!(blob = %hash, kind = kind.dir(), found = %c.found, "corrupt blob quarantined");
                        cur.corrupt.push(c);
                    }
                }
            }
            // Purged or replaced meanwhile: nothing to check.
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                tracing::warn!(blob = %hash, "scrub cannot read a blob: {e}");
            }
        }
        cur.after = Some(key);
        store(node, &p)?;
    }
    let cur = p.current.take().unwrap_or_default();
    let report = PassReport {
        started: cur.started,
        finished: rfc3339(now_unix()),
        files: cur.files,
        bytes: cur.bytes,
        seconds: clock.elapsed().as_secs_f64(),
        corrupt: cur.corrupt,
    };
    p.last = Some(report.clone());
    p.last_started_unix = Some(cur.started_unix);
    store(node, &p)?;
    node.db.flush()?;
    Ok(report)
}

fn is_not_found(e: &BlobError) -> bool {
    matches!(e, BlobError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

/// BLAKE3 of a file, reading no faster than `rate` bytes/s over the pass.
fn hash_throttled(
    path: &std::path::Path,
    rate: f64,
    read: &mut u64,
    since: Instant,
) -> Result<(String, u64), BlobError> {
    hash_file_paced(path, |k| {
        *read += k;
        let due = Duration::from_secs_f64(*read as f64 / rate);
        if let Some(ahead) = due.checked_sub(since.elapsed()) {
            std::thread::sleep(ahead);
        }
    })
}

/// Moves a corrupt blob to the quarantine and drops it from the index — after hashing it once
/// more under the purge lock (an upload of the same bytes may have replaced it meanwhile).
fn quarantine(
    node: &Node,
    kind: BlobKind,
    hash: &str,
    path: &std::path::Path,
) -> Result<Option<CorruptBlob>, NodeError> {
    let _guard = node
        .purge_guard
        .write()
        .map_err(|_| NodeError::Corrupt("purge lock poisoned".into()))?;
    let found = match hash_file(path) {
        Ok((found, _)) if found != hash => found,
        _ => return Ok(None),
    };
    let to = node.blobs.quarantine(path)?;
    node.blobs.forget(kind, hash)?;
    Ok(Some(CorruptBlob {
        kind: kind.dir().to_owned(),
        hash: hash.to_owned(),
        found,
        quarantined_to: to.display().to_string(),
        found_at: rfc3339(now_unix()),
        repaired: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NodeConfig;

    #[test]
    fn a_pass_moves_rot_aside_and_an_interrupted_one_resumes_after_its_cursor() {
        let dir = std::env::temp_dir().join(format!("tessera-scrub-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let node = Node::open(NodeConfig::new(&dir)).unwrap();
        let a = node
            .blobs
            .put_bytes(BlobKind::Original, b"first original")
            .unwrap();
        let b = node
            .blobs
            .put_bytes(BlobKind::Thumb, b"a thumbnail")
            .unwrap();
        let c = node
            .blobs
            .put_bytes(BlobKind::Original, b"second original")
            .unwrap();
        let rotten = node.blobs.path(BlobKind::Original, &c).unwrap();
        std::fs::write(&rotten, b"second originaX").unwrap();
        let report = pass(&node).unwrap();
        assert_eq!(report.files, 3);
        assert_eq!(report.corrupt.len(), 1);
        assert_eq!(report.corrupt[0].hash, c);
        assert!(!rotten.exists());
        assert!(std::path::Path::new(&report.corrupt[0].quarantined_to).is_file());
        assert!(node.blobs.entry(&c).unwrap().is_none());
        assert!(
            !node.blobs.is_deleted(&c),
            "no tombstone: replication may bring it back"
        );
        // A pass interrupted after its first file resumes after it.
        let mut keys = [format!("original/{a}"), format!("thumb/{b}")];
        keys.sort();
        store(
            &node,
            &Persisted {
                current: Some(Current {
                    started: "2026-01-01T00:00:00Z".into(),
                    started_unix: 1,
                    after: Some(keys[0].clone()),
                    files: 1,
                    bytes: 0,
                    corrupt: Vec::new(),
                }),
                ..Default::default()
            },
        )
        .unwrap();
        let report = pass(&node).unwrap();
        assert_eq!(report.files, 2, "one before the interruption, one after");
        assert!(report.corrupt.is_empty());
        let s = status(&node).unwrap();
        assert!(s.current.is_none() && s.last_pass.is_some());
        drop(node);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
