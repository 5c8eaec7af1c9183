//! The media job queue: persisted in sled (`jobs`: asset id → job), worked by a bounded pool of
//! blocking workers, resumed after a restart. A job that fails (or panics) marks its asset with a
//! readable error and leaves the queue: one bad file never wedges it.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_core::record::status;
use tessera_media::MediaError;
use tokio::sync::{Notify, Semaphore};

use crate::blobs::BlobKind;
use crate::node::{Node, NodeError};

/// Largest still original decoded for previews (read whole into memory); larger ones are
/// stored and listed without a preview.
const MAX_STILL_BYTES: u64 = 512 << 20;

/// Longest an ffmpeg call for a poster frame may take.
const VIDEO_TIMEOUT: Duration = Duration::from_secs(120);

/// Jobs in flight for each core: while one job waits on the disk (fsyncs of its derivatives and
/// of the catalogue), another of the same core's share decodes.
pub const JOBS_PER_WORKER: usize = 2;

/// At most `workers` threads doing CPU-bound media work (decode, resize, encode) at once.
/// Jobs and imports run more threads than that ([`JOBS_PER_WORKER`]) so that the disk waits of
/// one overlap the decoding of another; the gate keeps the decodes themselves (and their
/// buffers) to one per core.
///
/// A job that outlives its time limit is abandoned with its thread still decoding
/// ([`run`]); [`CpuGate::abandon`] then gives its slot to the others at once, so hostile files
/// can never take every slot for good.
pub struct CpuGate {
    state: Mutex<GateState>,
    freed: Condvar,
}

#[derive(Default)]
struct GateState {
    free: usize,
    /// Assets whose job holds a slot.
    holders: HashSet<String>,
    /// Holders whose slot was given back by [`CpuGate::abandon`] before they finished.
    abandoned: HashSet<String>,
}

/// A held [`CpuGate`] slot, given back on drop.
pub struct CpuSlot<'a> {
    gate: &'a CpuGate,
    asset: String,
}

impl CpuGate {
    pub fn new(slots: usize) -> Self {
        Self {
            state: Mutex::new(GateState {
                free: slots.max(1),
                ..Default::default()
            }),
            freed: Condvar::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a free slot, for the job of `asset`.
    pub fn enter(&self, asset: &str) -> CpuSlot<'_> {
        let mut s = self.state();
        while s.free == 0 {
            s = self.freed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.free -= 1;
        s.holders.insert(asset.to_owned());
        CpuSlot {
            gate: self,
            asset: asset.to_owned(),
        }
    }

    /// The job of `asset` was abandoned: if it holds a slot, the slot is free again now (and
    /// not a second time when the abandoned thread ends).
    pub fn abandon(&self, asset: &str) {
        let mut s = self.state();
        if s.holders.remove(asset) {
            s.abandoned.insert(asset.to_owned());
            s.free += 1;
            self.freed.notify_one();
        }
    }
}

impl Drop for CpuSlot<'_> {
    fn drop(&mut self) {
        let mut s = self.gate.state();
        if !s.abandoned.remove(&self.asset) && s.holders.remove(&self.asset) {
            s.free += 1;
            self.gate.freed.notify_one();
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub owner: String,
    pub enqueued_at: String,
}

pub struct Jobs {
    tree: sled::Tree,
    notify: Arc<Notify>,
}

impl Jobs {
    pub fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        Ok(Self {
            tree: db.open_tree("jobs")?,
            notify: Arc::new(Notify::new()),
        })
    }

    pub fn enqueue(&self, asset: &str, owner: &str) -> Result<(), NodeError> {
        self.enqueue_quiet(asset, owner)?;
        self.notify.notify_one();
        Ok(())
    }

    /// Records a job without waking the dispatcher (ingest wakes it with [`Jobs::wake`] once
    /// the asset's record is persisted).
    pub fn enqueue_quiet(&self, asset: &str, owner: &str) -> Result<(), NodeError> {
        let job = Job {
            owner: owner.to_owned(),
            enqueued_at: crate::now_rfc3339(),
        };
        let v = serde_json::to_vec(&job).map_err(|e| NodeError::Corrupt(e.to_string()))?;
        self.tree.insert(asset.as_bytes(), v)?;
        Ok(())
    }

    /// Wakes the dispatcher.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    pub fn pending(&self) -> usize {
        self.tree.len()
    }

    fn snapshot(&self) -> Vec<(String, Job)> {
        self.tree
            .iter()
            .flatten()
            .filter_map(|(k, v)| {
                Some((
                    String::from_utf8(k.to_vec()).ok()?,
                    serde_json::from_slice(&v).ok()?,
                ))
            })
            .collect()
    }

    pub fn is_queued(&self, asset: &str) -> bool {
        self.tree.contains_key(asset.as_bytes()).unwrap_or(false)
    }

    /// Drops a job that was worked outside the queue (bulk import makes derivatives inline).
    pub fn finish(&self, asset: &str) {
        self.done(asset)
    }

    fn done(&self, asset: &str) {
        if let Err(e) = self.tree.remove(asset.as_bytes()) {
            tracing::error!(asset, error = %e, "cannot remove finished job");
        }
    }
}

/// What one media job's decode may take at its peak, in MiB: the original read whole, the
/// decoded pixels and the resize's buffers. JPEGs decode DCT-scaled (a preview-sized image, not
/// the full one); HEIF/AVIF, PNG, TIFF, WebP and RAW decode whole (libheif 1.15 cannot decode
/// at a reduced size); videos decode in ffmpeg's own process, a frame at a time.
pub fn decode_cost_mib(record: &tessera_core::AssetRecord) -> u64 {
    const MIB: f64 = 1048576.0;
    let file = record.size.unwrap_or(0) as f64;
    let mime = record.mime.as_deref().unwrap_or_default();
    let pixels = match (record.width, record.height) {
        (Some(w), Some(h)) => f64::from(w) * f64::from(h),
        // Unknown dimensions: as many pixels as a JPEG of this size usually holds.
        _ => file * 4.0,
    };
    let preview = f64::from(tessera_media::PREVIEW_LONG_SIDE).powi(2);
    let bytes = if mime.starts_with("video/") {
        file.min(64.0 * MIB) + 64.0 * MIB
    } else if mime == "image/jpeg" {
        // Scaled to at least the preview (at most 1/2 of each side in practice): ≈ pixels/4.
        file + (pixels / 4.0).max(preview) * 3.0 * 2.0
    } else {
        // RGB(A) 16-bit in the decoder plus the 8-bit copy, then the preview's buffers.
        file + pixels * (6.0 + 3.0) + preview * 3.0 * 2.0
    };
    (bytes / MIB).ceil().max(1.0) as u64
}

/// Works the queue forever with at most `node.config.workers` × [`JOBS_PER_WORKER`] jobs at a
/// time (of which `workers` decode at once, [`Node::cpu`]), and no more decodes at once than
/// their estimates fit in `node.config.decode_memory_mib`: a huge file waits for the memory
/// (the semaphore is fair, so it is not starved by small ones) and then runs with nothing else
/// decoding.
pub async fn run(node: Arc<Node>) {
    let sem = Arc::new(Semaphore::new(node.config.workers.max(1) * JOBS_PER_WORKER));
    let budget = node
        .config
        .decode_memory_mib
        .clamp(1, u64::from(u32::MAX >> 4));
    let memory = Arc::new(Semaphore::new(budget as usize));
    let inflight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let notify = node.jobs.notify.clone();
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let mut started = 0;
        for (asset, job) in node.jobs.snapshot() {
            if inflight.lock().map(|s| s.contains(&asset)).unwrap_or(true) {
                continue;
            }
            let Ok(permit) = sem.clone().acquire_owned().await else {
                return;
            };
            // The estimate reads the catalogue, and for a large HEIF the file's `meta` box.
            let cost = {
                let (n, a, o) = (node.clone(), asset.clone(), job.owner.clone());
                tokio::task::spawn_blocking(move || estimate(&n, &a, &o))
                    .await
                    .unwrap_or(budget)
                    .min(budget)
            };
            if cost * 2 > budget {
                tracing::info!(
                    asset,
                    estimate_mib = cost,
                    budget_mib = budget,
                    "a large decode: waiting for the memory budget, then running it alone"
                );
            }
            let Ok(memory_permit) = memory.clone().acquire_many_owned(cost as u32).await else {
                return;
            };
            if let Ok(mut s) = inflight.lock() {
                s.insert(asset.clone());
            }
            started += 1;
            let (node, inflight, notify) = (node.clone(), inflight.clone(), notify.clone());
            tokio::spawn(async move {
                let n = node.clone();
                let a = asset.clone();
                let o = job.owner.clone();
                let limit = node.config.job_timeout;
                let res = tokio::time::timeout(
                    limit,
                    tokio::task::spawn_blocking(move || process(&n, &a, &o)),
                )
                .await;
                match res {
                    Err(_elapsed) => {
                        // The blocking thread cannot be stopped from here (decoders are not
                        // cancellable); it is abandoned, its slot freed, and the job leaves the
                        // queue for good, so neither this run nor a restart stalls on the file.
                        tracing::error!(asset, secs = limit.as_secs(), "media job timed out");
                        node.cpu.abandon(&asset);
                        mark_error(
                            &node,
                            &asset,
                            &job.owner,
                            &format!(
                                "processing took longer than {} s and was stopped; the original is stored",
                                limit.as_secs()
                            ),
                        );
                    }
                    Ok(Ok(Ok(()))) => {}
                    Ok(Ok(Err(e))) => {
                        tracing::error!(asset, error = %e, "media job failed");
                        mark_error(
                            &node,
                            &asset,
                            &job.owner,
                            &format!("processing failed: {e}"),
                        );
                    }
                    Ok(Err(e)) => {
                        tracing::error!(asset, error = %e, "media job panicked");
                        mark_error(&node, &asset, &job.owner, "processing crashed on this file");
                    }
                }
                node.jobs.done(&asset);
                if let Ok(mut s) = inflight.lock() {
                    s.remove(&asset);
                }
                drop(permit);
                drop(memory_permit);
                notify.notify_one();
            });
        }
        if started == 0 {
            let _ = tokio::time::timeout(Duration::from_secs(5), notified).await;
        } else {
            // Let running jobs finish a little before rescanning.
            let _ = sem.acquire().await;
        }
    }
}

/// [`decode_cost_mib`] of a queued asset (1 when its record cannot be read: the job itself
/// then reports the problem).
fn estimate(node: &Node, asset: &str, owner: &str) -> u64 {
    let record = (|| {
        let loc = node.location_of(owner, asset).ok()??;
        let shard = tessera_core::DocId::shard(owner, &loc.month).ok()?;
        node.catalog.lock().ok()?.asset_in(&shard, asset).ok()?
    })();
    let Some(record) = record else { return 1 };
    let whole = decode_cost_mib(&record);
    // A large HEIF/AVIF grid is decoded tile by tile (tessera_media::tiled_decode_mib): its
    // `meta` box says so (a few KB read). Read from the local original, else by range requests
    // from object storage (a few GETs of 64 KiB, not the whole original).
    let heif = matches!(
        record.mime.as_deref(),
        Some("image/heic" | "image/heif" | "image/avif")
    );
    if heif && whole > 64 {
        let local = node
            .blobs
            .path(BlobKind::Original, asset)
            .ok()
            .and_then(|p| std::fs::File::open(p).ok());
        let tiled = match local {
            Some(mut f) => tessera_media::tiled_decode_mib(&mut f),
            None => node.blobs.tier().and_then(|t| {
                let mut r = t.ranged(BlobKind::Original, asset).ok()?;
                let mib = tessera_media::tiled_decode_mib(&mut r);
                tracing::debug!(
                    asset,
                    requests = r.requests,
                    ?mib,
                    "estimated from object storage"
                );
                mib
            }),
        };
        if let Some(tiled) = tiled {
            let file = record.size.unwrap_or(0).div_ceil(1 << 20);
            return (file + tiled).min(whole);
        }
    }
    whole
}

fn mark_error(node: &Node, asset: &str, owner: &str, msg: &str) {
    node.webhooks.emit(
        owner,
        "job.failed",
        serde_json::json!({"assetId": asset, "job": "derivatives", "error": msg}),
    );
    let res = (|| -> Result<(), NodeError> {
        let Some(loc) = node.location_of(owner, asset)? else {
            return Ok(());
        };
        let mut lib = node.catalog.lock()?;
        lib.update_asset(owner, &loc.month, asset, |r| {
            r.status = Some(status::ERROR.into());
            r.error = Some(msg.to_owned());
        })
        .map_err(crate::catalog::CatalogError::from)?;
        node.catalog.persist(&mut lib)?;
        Ok(())
    })();
    if let Err(e) = res {
        tracing::error!(asset, error = %e, "cannot record processing error");
    }
}

/// Makes thumbnail, preview and thumbhash of one asset and records them in the catalogue.
pub fn process(node: &Node, asset: &str, owner: &str) -> Result<(), NodeError> {
    let Some(loc) = node.location_of(owner, asset)? else {
        tracing::warn!(asset, "job for an unknown asset dropped");
        return Ok(());
    };
    let shard = tessera_core::DocId::shard(owner, &loc.month)
        .map_err(|e| NodeError::Corrupt(e.to_string()))?;
    let record = node
        .catalog
        .lock()?
        .asset_in(&shard, asset)
        .map_err(crate::catalog::CatalogError::from)?;
    let Some(record) = record else { return Ok(()) };
    let mime = record.mime.clone().unwrap_or_default();
    let started = std::time::Instant::now();
    let mut video = None;
    let mut motion = None;
    let result = if mime.starts_with("video/") {
        let blob = node.blobs.local(BlobKind::Original, asset)?;
        let _cpu = node.cpu.enter(asset);
        tessera_media::video_derivatives(blob.path(), VIDEO_TIMEOUT).map(|(m, d)| {
            video = Some(m);
            d
        })
    } else if record.size.is_some_and(|s| s > MAX_STILL_BYTES) {
        Err(MediaError::Unsupported(format!(
            "a still of {} MB (over the {} MB this node decodes)",
            record.size.unwrap_or(0) >> 20,
            MAX_STILL_BYTES >> 20
        )))
    } else {
        let bytes = node.blobs.read(BlobKind::Original, asset)?;
        // An Android/Samsung motion photo carries its video after the still: keep a copy of
        // that part as its own blob so the viewer can play it (the original stays intact).
        if let Some(range) = tessera_media::motion_photo_video(&bytes) {
            motion = Some(node.blobs.put_bytes(BlobKind::Motion, &bytes[range])?);
        }
        let _cpu = node.cpu.enter(asset);
        tessera_media::make_derivatives(&bytes, &mime, record.orientation)
    };
    let update: Box<dyn FnOnce(&mut tessera_core::AssetRecord)> = match result {
        Ok(d) => {
            let thumb = node.blobs.put_bytes(BlobKind::Thumb, &d.thumbnail)?;
            let preview = node.blobs.put_bytes(BlobKind::Preview, &d.preview)?;
            let phash = match tessera_media::phash_encoded(&d.thumbnail) {
                Ok(h) => Some(tessera_core::dupes::format_phash(h)),
                Err(e) => {
                    tracing::warn!(asset, "no perceptual hash: {e}");
                    None
                }
            };
            tracing::info!(
                asset,
                ms = started.elapsed().as_millis() as u64,
                "derivatives made"
            );
            Box::new(move |r| {
                r.status = Some(status::READY.into());
                r.error = None;
                r.thumb = Some(thumb);
                r.preview = Some(preview);
                r.thumbhash = Some(d.thumbhash);
                r.width = Some(d.width);
                r.height = Some(d.height);
                r.phash = phash;
                if let Some(v) = video {
                    r.duration = v.duration.or(r.duration);
                    r.codec = v.codec.or(r.codec.take());
                }
                if let (Some(m), None) = (motion, &r.motion) {
                    r.motion = Some(m);
                }
            })
        }
        Err(MediaError::Unsupported(m)) => Box::new(move |r| {
            r.status = Some(status::UNSUPPORTED.into());
            r.error = Some(format!(
                "{m} is stored; previews for this type are not available yet"
            ));
        }),
        Err(e) => {
            tracing::warn!(asset, error = %e, "cannot make derivatives");
            let msg = e.to_string();
            node.webhooks.emit(
                owner,
                "job.failed",
                serde_json::json!({"assetId": asset, "job": "derivatives", "error": msg}),
            );
            Box::new(move |r| {
                r.status = Some(status::ERROR.into());
                r.error = Some(msg);
            })
        }
    };
    let mut lib = node.catalog.lock()?;
    lib.update_asset(owner, &loc.month, asset, update)
        .map_err(crate::catalog::CatalogError::from)?;
    node.catalog.persist(&mut lib)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::AssetRecord;

    fn rec(mime: &str, size: u64, w: u32, h: u32) -> AssetRecord {
        AssetRecord {
            mime: Some(mime.into()),
            size: Some(size),
            width: Some(w),
            height: Some(h),
            ..Default::default()
        }
    }

    fn free(g: &CpuGate) -> usize {
        g.state().free
    }

    #[test]
    fn cpu_gate_lets_workers_in_and_an_abandoned_job_gives_its_slot_back_once() {
        let g = CpuGate::new(2);
        let a = g.enter("a");
        let b = g.enter("b");
        assert_eq!(free(&g), 0);
        // A third waits until a slot is dropped.
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let _c = g.enter("c");
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(!waiter.is_finished(), "entered a full gate");
            drop(a);
            waiter.join().unwrap();
        });
        assert_eq!(free(&g), 1);
        // "b" hangs and is abandoned: its slot is free at once…
        g.abandon("b");
        assert_eq!(free(&g), 2);
        // …abandoning what holds no slot changes nothing…
        g.abandon("b");
        g.abandon("nobody");
        assert_eq!(free(&g), 2);
        let d = g.enter("d");
        let e = g.enter("e");
        assert_eq!(free(&g), 0);
        // …and when the abandoned thread ends at last, its slot is not freed a second time.
        drop(b);
        assert_eq!(free(&g), 0);
        drop((d, e));
        assert_eq!(free(&g), 2);
    }

    #[test]
    fn decode_estimates_let_small_photos_share_and_huge_ones_run_alone() {
        // A 12-MP phone JPEG: DCT-scaled, tens of MiB.
        let jpeg = decode_cost_mib(&rec("image/jpeg", 5 << 20, 4000, 3000));
        assert!((15..60).contains(&jpeg), "{jpeg}");
        // A 200-MP HEIC decoded whole (libheif took 1.2 GB on pillow-heif's): what `estimate`
        // keeps when the file's head does not show a grid it will decode tile by tile.
        let heic = decode_cost_mib(&rec("image/heic", 60 << 20, 16384, 12288));
        assert!(heic > 1024, "{heic}");
        // With the default 1 GiB budget: many JPEGs at once, the HEIC alone (it is capped to
        // the whole budget when admitted).
        assert!(1024 / jpeg >= 16);
        assert!(heic.min(1024) * 2 > 1024);
        // Videos decode in ffmpeg, a frame at a time.
        let video = decode_cost_mib(&rec("video/mp4", 2 << 30, 3840, 2160));
        assert!(video <= 128, "{video}");
        // Unknown dimensions: estimated from the file.
        let unknown = decode_cost_mib(&AssetRecord {
            mime: Some("image/png".into()),
            size: Some(10 << 20),
            ..Default::default()
        });
        assert!(unknown > 300, "{unknown}");
    }
}
