//! Working for a sync node: follow its catalogue, analyse every photo without results (newest
//! first), publish faces, people and embedding packs back as catalogue edits of this node's
//! own actor. Idempotent: what is published is derived from content, so re-running changes
//! nothing; a crash before publishing only means the batch is analysed again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use image::RgbImage;
use serde_json::{json, Value};
use tessera_core::ml::{
    fields, FaceRecord, MlMark, PackRef, PersonRecord, PACK_CLIP, PACK_FACE, PERSON_PREFIX,
};
use tessera_core::pack::{normalize, Dtype, Pack};
use tessera_core::record::status;
use tessera_core::{DocId, Library, MsgKind, PeerSync, SyncEnvelope};
use tessera_ml::cluster::{assign_changed, ClusterFace, ClusterParams};

use crate::models::Engine;
use crate::state::StateDir;

/// Where the ML node keeps the documents it unloads.
enum Store {
    /// In memory (no `--state-dir`): a restart syncs everything again.
    Memory(Arc<Mutex<HashMap<DocId, Vec<u8>>>>),
    /// In the state directory, with the ids written there (the ones that may be unloaded).
    Disk {
        state: StateDir,
        written: HashSet<DocId>,
    },
}

/// Progress, shown by `/status` (and in the PWA, which computes the same from the catalogue).
#[derive(Default)]
pub struct Status {
    analysed: AtomicU64,
    total: AtomicU64,
    faces: AtomicU64,
    rate_milli: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Status {
    pub fn snapshot(&self) -> Value {
        json!({
            "analysed": self.analysed.load(Ordering::Relaxed),
            "total": self.total.load(Ordering::Relaxed),
            "facesFound": self.faces.load(Ordering::Relaxed),
            "photosPerSecond": self.rate_milli.load(Ordering::Relaxed) as f64 / 1000.0,
            "lastError": self.last_error.lock().ok().and_then(|e| e.clone()),
        })
    }

    fn error(&self, e: Option<String>) {
        if let Ok(mut l) = self.last_error.lock() {
            *l = e;
        }
    }
}

#[derive(Default)]
struct ModelVecs {
    /// Hash of the published pack these vectors were last read from.
    loaded: Option<String>,
    /// L2-normalised, shared with the clustering's face cache (one copy of each vector).
    vecs: BTreeMap<String, Arc<[f32]>>,
}

#[derive(Default)]
struct ShardVecs {
    clip: ModelVecs,
    face: ModelVecs,
}

/// The node answered with an error status.
#[derive(Debug)]
struct Refused(u16);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.0)
    }
}

impl std::error::Error for Refused {}

#[derive(Clone)]
struct Work {
    user: String,
    month: String,
    asset: String,
    taken_at: Option<String>,
}

struct FaceOut {
    bbox: [f32; 4],
    score: f32,
    embedding: Vec<f32>,
    crop: Vec<u8>,
}

struct Outcome {
    work: Work,
    faces: Vec<FaceOut>,
    clip: Option<Vec<f32>>,
    /// Text read in the photo (lines joined by newlines), when OCR ran.
    text: Option<String>,
    size: (u32, u32),
    error: Option<String>,
}

/// An ML document's faces, read again only when the document or its face pack changed.
struct FaceCache {
    revision: u64,
    pack: Option<String>,
    /// Persons as stored (not resolved through merges), embeddings shared with `vecs`.
    faces: Vec<ClusterFace>,
}

/// A month's analysis work, listed again only when its assets or its ML document changed.
struct MonthWork {
    revisions: (u64, u64),
    total: u64,
    todo: Vec<Work>,
}

pub struct Worker {
    http: reqwest::Client,
    base: String,
    key: String,
    engine: Arc<Engine>,
    params: ClusterParams,
    batch: usize,
    status: Arc<Status>,
    lib: Library,
    sync: PeerSync,
    peer: String,
    vecs: HashMap<DocId, ShardVecs>,
    face_cache: HashMap<DocId, FaceCache>,
    /// Face packs read so far: (from the state directory, fetched from the node).
    face_packs_read: (u64, u64),
    /// Per user: the (resolved) person of every face when clustering last ran.
    clustered: HashMap<String, HashMap<String, Option<String>>>,
    work_cache: HashMap<DocId, MonthWork>,
    recluster_every: Duration,
    /// Where every document is as last saved: what the catalogue reads an unloaded document
    /// back from.
    store: Store,
    /// `clustered` differs from what the state directory holds.
    clustered_dirty: bool,
    clustered_written: Instant,
    /// The first sync since the start is done (and was logged).
    synced_once: bool,
    /// Saved size of the documents kept loaded between cycles (the least recently used beyond
    /// it are unloaded): the months being analysed and the people stay, a 300k library's
    /// years go.
    loaded_budget: usize,
}

fn person_id(face_key: &str) -> String {
    blake3::hash(face_key.as_bytes()).to_hex()[..20].to_owned()
}

fn random_hex() -> String {
    let mut b = [0u8; 16];
    let seed = format!("{:?}{:?}", std::time::SystemTime::now(), std::process::id());
    b.copy_from_slice(&blake3::hash(seed.as_bytes()).as_bytes()[..16]);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Worker {
    pub fn new(
        base: String,
        key: String,
        engine: Arc<Engine>,
        params: ClusterParams,
        batch: usize,
        status: Arc<Status>,
    ) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .build()?;
        let peer = format!("ml-{}", random_hex());
        // The actor names this node's edits in every document; one per ML node process is
        // enough (edits are idempotent, so a new actor after a restart changes nothing).
        let actor: Vec<u8> = blake3::hash(peer.as_bytes()).as_bytes()[..16].to_vec();
        let stored: Arc<Mutex<HashMap<DocId, Vec<u8>>>> = Arc::default();
        let mut lib = Library::new(&actor);
        // Documents received whole are kept as they came: saving them costs nothing.
        lib.keep_received(true);
        let from = stored.clone();
        lib.set_loader(Box::new(move |id| {
            from.lock()
                .map_err(|_| "the stored documents' lock is poisoned".to_owned())?
                .get(id)
                .cloned()
                .ok_or_else(|| format!("{id} is not held by this ML node"))
        }));
        Ok(Self {
            store: Store::Memory(stored),
            clustered_dirty: false,
            clustered_written: Instant::now(),
            synced_once: false,
            loaded_budget: 4 << 20,
            http,
            base: base.trim_end_matches('/').to_owned(),
            key,
            engine,
            params,
            batch,
            status,
            lib,
            sync: PeerSync::new(),
            peer,
            vecs: HashMap::new(),
            face_cache: HashMap::new(),
            face_packs_read: (0, 0),
            clustered: HashMap::new(),
            work_cache: HashMap::new(),
            recluster_every: Duration::from_secs(24 * 3600),
        })
    }

    /// Saved bytes of documents kept loaded between cycles (default 4 MiB, about 30 MB loaded).
    pub fn loaded_budget(mut self, bytes: usize) -> Self {
        self.loaded_budget = bytes;
        self
    }

    /// Keeps documents and clustering state in `dir` ([`StateDir`]) instead of memory, and
    /// starts from what it holds: every kept document is held unloaded (read from its file when
    /// used), so the first sync exchanges heads only, and the first clustering tries only the
    /// faces that changed while this node was stopped.
    pub fn state_dir(mut self, dir: &Path) -> Result<Self> {
        let started = Instant::now();
        let state = StateDir::open(dir, &self.base, &self.key)?;
        self.lib.set_loader(state.loader());
        let mut written = HashSet::new();
        let mut bytes = 0;
        for d in state.held_docs()? {
            bytes += d.saved_bytes;
            match self
                .lib
                .hold_unloaded(d.id.clone(), &d.heads, d.saved_bytes)
            {
                Ok(_) => {
                    written.insert(d.id);
                }
                Err(e) => tracing::warn!("{e}: the document is fetched again"),
            }
        }
        self.clustered = state.read_clustered();
        let faces: usize = self.clustered.values().map(HashMap::len).sum();
        tracing::info!(
            dir = %state.dir().display(),
            documents = written.len(),
            mib = bytes >> 20,
            faces_clustered = faces,
            ms = started.elapsed().as_millis() as u64,
            "resuming from the state directory"
        );
        self.store = Store::Disk { state, written };
        Ok(self)
    }

    /// How often every user's unassigned faces are clustered again (default daily).
    pub fn recluster_every(mut self, d: Duration) -> Self {
        self.recluster_every = d.max(Duration::from_secs(60));
        self
    }

    pub async fn run(mut self) {
        tracing::info!(node = %self.base, "working for the sync node");
        let mut backoff = Duration::from_secs(1);
        let mut last_recluster = Instant::now();
        loop {
            // Nightly-style pass: cluster every user's faces even when no new photo arrived
            // (what changed meanwhile: people merged or faces reassigned by the user).
            if last_recluster.elapsed() >= self.recluster_every {
                last_recluster = Instant::now();
                if let Err(e) = self.recluster_all().await {
                    tracing::warn!("re-clustering: {e:#}");
                }
            }
            let outcome = self.cycle().await;
            self.unload_idle(matches!(outcome, Ok(false)));
            match outcome {
                Ok(true) => backoff = Duration::from_secs(1),
                Ok(false) => tokio::time::sleep(Duration::from_secs(1)).await,
                Err(e) => {
                    tracing::warn!("{e:#}; retrying in {}s", backoff.as_secs());
                    self.status.error(Some(format!("{e:#}")));
                    // The node may have restarted and lost our sync state.
                    self.sync.reset();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// After each cycle: [`Worker::shed`] (the ML node holds a large catalogue as saved bytes,
    /// and the caches, work lists and face cache, let a cycle read only the documents that
    /// changed), then the clustering state to the state directory when it is due.
    fn unload_idle(&mut self, idle: bool) {
        let unloaded = self.shed();
        // The clustering state (megabytes at 100k faces) is written when the node goes idle,
        // and at most every 30 s while it works: a restart after a crash compares with an
        // older state, so it only tries more faces again, never fewer.
        let due = idle || self.clustered_written.elapsed() >= Duration::from_secs(30);
        if let (Store::Disk { state, .. }, true) = (&self.store, self.clustered_dirty && due) {
            match state.write_clustered(&self.clustered) {
                Ok(()) => {
                    self.clustered_dirty = false;
                    self.clustered_written = Instant::now();
                }
                Err(e) => tracing::warn!("keeping the clustering state: {e:#}"),
            }
        }
        if unloaded > 0 {
            tracing::info!(unloaded, "documents unloaded (kept as saved bytes)");
        }
        for (doc, e) in self.lib.take_load_errors() {
            tracing::warn!(%doc, "cannot read a stored document back: {e}");
        }
    }

    /// Saves the documents that changed (to memory or the state directory) and unloads the
    /// least recently used beyond `loaded_budget`. Returns how many were unloaded.
    fn shed(&mut self) -> usize {
        let unloaded = self.save_and_evict();
        if unloaded > 0 {
            // An unloaded document frees thousands of small allocations scattered over the
            // heap; glibc keeps them mapped unless asked to give whole free pages back.
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only returns free memory to the system; it takes no pointer.
            unsafe {
                libc::malloc_trim(0);
            }
        }
        unloaded
    }

    fn save_and_evict(&mut self) -> usize {
        let dirty = self.lib.take_dirty();
        match &mut self.store {
            Store::Memory(stored) => {
                let Ok(mut stored) = stored.lock() else {
                    return 0;
                };
                for id in dirty {
                    if let Some(bytes) = self.lib.save(&id) {
                        stored.insert(id, bytes);
                    }
                }
                self.lib
                    .evict(self.loaded_budget, &|id| stored.contains_key(id))
            }
            Store::Disk { state, written } => {
                for id in dirty {
                    let Some(bytes) = self.lib.save(&id) else {
                        continue;
                    };
                    let heads = self.lib.known_heads_bytes(&id).unwrap_or_default();
                    match state.write_doc(&id, &heads, &bytes) {
                        Ok(()) => {
                            written.insert(id);
                        }
                        Err(e) => {
                            // Kept loaded (an unsaved document is never unloaded) and tried
                            // again at the next save.
                            tracing::warn!(%id, "keeping a document in the state directory: {e:#}");
                            written.remove(&id);
                            self.lib.mark_dirty(&id);
                        }
                    }
                }
                self.lib
                    .evict(self.loaded_budget, &|id| written.contains(id))
            }
        }
    }

    /// [`Worker::shed`] while a pass reads many documents (a first sync, the first work list
    /// or clustering of a large library), so that what it reads does not all stay loaded.
    fn shed_if_over(&mut self) {
        if self.lib.loaded_size().1 > self.loaded_budget + (self.loaded_budget / 4).max(1 << 20) {
            self.shed();
        }
    }

    async fn recluster_all(&mut self) -> Result<()> {
        self.sync_now().await?;
        let users: BTreeSet<String> = self.lib.ids().map(|d| d.user().to_owned()).collect();
        for u in users {
            self.cluster(&u).await?;
        }
        // Every month's face pack was just brought up to date: any other kept pack is one a
        // month replaced while this node was stopped (or of an old model), never read again.
        if let Store::Disk { state, .. } = &self.store {
            let live: HashSet<String> = self
                .vecs
                .values()
                .filter_map(|v| v.face.loaded.as_deref())
                .map(str::to_ascii_lowercase)
                .collect();
            let removed = state.prune_packs(&live);
            if removed > 0 {
                tracing::info!(removed, kept = live.len(), "face packs pruned");
            }
        }
        self.sync_now().await
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("x-api-key", &self.key);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/octet-stream")
                .body(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let code = resp.status();
        let bytes = resp
            .bytes()
            .await
            .with_context(|| format!("{method} {url}"))?;
        if !code.is_success() {
            let msg = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect());
            return Err(anyhow::Error::new(Refused(code.as_u16()))
                .context(format!("{method} {url}: {code}: {msg}")));
        }
        Ok(bytes.to_vec())
    }

    /// Sync rounds until neither side has anything to say. The first after a start says what
    /// it took (a start from the state directory receives only what changed meanwhile).
    async fn sync_now(&mut self) -> Result<()> {
        let started = Instant::now();
        let held = self.lib.ids().count();
        let (mut whole, mut changed) = (0usize, 0usize);
        // The node answers at most 2 MiB a round: 500 rounds is a library of a few million
        // photos; anything left is taken up by the next cycle's sync.
        for round in 1..=500 {
            let ids: Vec<DocId> = self.lib.ids().cloned().collect();
            let out = self.sync.generate(&mut self.lib, &ids);
            let quiet_up = out.is_empty();
            // Saying what it holds gets it the rest whole (a first start reads a 300k
            // catalogue as saved documents, not change by change).
            let body = SyncEnvelope::new(self.peer.clone(), out)
                .with_holds(&ids)
                .encode();
            let resp = self
                .request(reqwest::Method::POST, "/api/tessera/ml/sync", Some(body))
                .await?;
            let env = SyncEnvelope::decode(&resp).context("the node's sync answer")?;
            let quiet_down = env.docs.is_empty();
            whole += env
                .docs
                .iter()
                .filter(|m| m.kind == MsgKind::Snapshot)
                .count();
            changed += self.sync.receive(&mut self.lib, env.docs, |_| true)?.len();
            // What came is saved (to the state directory) and what is beyond the budget
            // unloaded, round by round.
            self.shed();
            if (quiet_up && quiet_down) || round == 500 {
                if !self.synced_once {
                    self.synced_once = true;
                    tracing::info!(
                        held,
                        whole,
                        changed,
                        rounds = round,
                        ms = started.elapsed().as_millis() as u64,
                        "first sync with the node done"
                    );
                }
                return Ok(());
            }
        }
        Ok(())
    }

    /// The next batch of photos to analyse, newest first (undated last), as Immich's queue
    /// does. A month's list is made again only when its assets or its ML document changed,
    /// so a cycle does not decode a 300k library's records.
    fn work_list(&mut self) -> Result<Vec<Work>> {
        let faces = self.engine.faces.as_ref().map(|f| f.name.clone());
        let clip = self.engine.clip.as_ref().map(|c| c.name.clone());
        let ocr = self.engine.ocr.as_ref().map(|c| c.name.clone());
        let months: Vec<DocId> = self
            .lib
            .ids()
            .filter(|id| id.month().is_some())
            .cloned()
            .collect();
        self.work_cache.retain(|d, _| months.contains(d));
        let (mut total, mut done) = (0u64, 0u64);
        for id in &months {
            self.shed_if_over();
            let Some(month) = id.month() else { continue };
            let user = id.user();
            let ml = DocId::ml(user, month)?;
            let revisions = (
                self.lib.revision(id).unwrap_or(0),
                self.lib.revision(&ml).unwrap_or(0),
            );
            if self
                .work_cache
                .get(id)
                .is_none_or(|w| w.revisions != revisions)
            {
                let marks: HashMap<String, MlMark> = self.lib.ml_marks(&ml)?.into_iter().collect();
                let mut w = MonthWork {
                    revisions,
                    total: 0,
                    todo: Vec::new(),
                };
                for rec in self.lib.assets(id)? {
                    if rec.status.as_deref() != Some(status::READY) || rec.preview.is_none() {
                        continue;
                    }
                    w.total += 1;
                    let fresh = marks.get(&rec.id).is_some_and(|m| {
                        (faces.is_none() || m.face_model == faces)
                            && (clip.is_none() || m.clip_model == clip)
                            && (ocr.is_none() || m.ocr_model == ocr)
                    });
                    if !fresh {
                        w.todo.push(Work {
                            user: user.to_owned(),
                            month: month.to_owned(),
                            asset: rec.id.clone(),
                            taken_at: rec.taken_at.clone(),
                        });
                    }
                }
                self.work_cache.insert(id.clone(), w);
            }
            if let Some(w) = self.work_cache.get(id) {
                total += w.total;
                done += w.total - w.todo.len() as u64;
            }
        }
        self.status.total.store(total, Ordering::Relaxed);
        self.status.analysed.store(done, Ordering::Relaxed);
        let mut todo: Vec<&Work> = self.work_cache.values().flat_map(|w| &w.todo).collect();
        todo.sort_by(|a, b| {
            b.taken_at
                .cmp(&a.taken_at)
                .then_with(|| a.asset.cmp(&b.asset))
        });
        Ok(todo.into_iter().take(self.batch).cloned().collect())
    }

    /// One pass: sync, analyse one batch, publish, cluster, sync. `false` when idle.
    async fn cycle(&mut self) -> Result<bool> {
        self.sync_now().await?;
        // The first work list after a start reads every month (seconds at 300k photos): the
        // runtime moves its other tasks (the HTTP API: `/ping`, the node's smart-search
        // queries) off this thread meanwhile instead of stalling them.
        let todo = tokio::task::block_in_place(|| self.work_list())?;
        if todo.is_empty() {
            self.status.error(None);
            return Ok(false);
        }
        let started = Instant::now();
        let mut outcomes = Vec::with_capacity(todo.len());
        for w in todo {
            let path = format!("/api/tessera/ml/assets/{}/preview", w.asset);
            let outcome = match self.request(reqwest::Method::GET, &path, None).await {
                Ok(bytes) => {
                    let engine = self.engine.clone();
                    let min_score = self.params.min_score;
                    tokio::task::spawn_blocking(move || analyse(&engine, &bytes, min_score, w))
                        .await?
                }
                // The node refused (e.g. the preview blob is gone): recorded on the asset, so
                // one broken photo does not stall the queue. Network trouble: retry later.
                Err(e)
                    if e.downcast_ref::<Refused>()
                        .is_some_and(|r| matches!(r.0, 404 | 410 | 422)) =>
                {
                    Outcome {
                        work: w,
                        faces: vec![],
                        clip: None,
                        text: None,
                        size: (0, 0),
                        error: Some(format!("preview unavailable: {e:#}")),
                    }
                }
                Err(e) => return Err(e),
            };
            outcomes.push(outcome);
        }
        let n = outcomes.len();
        let users: BTreeSet<String> = outcomes.iter().map(|o| o.work.user.clone()).collect();
        self.publish(outcomes).await?;
        for u in users {
            self.cluster(&u).await?;
        }
        self.sync_now().await?;
        let rate = n as f64 / started.elapsed().as_secs_f64().max(1e-3);
        self.status
            .rate_milli
            .store((rate * 1000.0) as u64, Ordering::Relaxed);
        self.status.analysed.fetch_add(n as u64, Ordering::Relaxed);
        let (done, total) = (
            self.status.analysed.load(Ordering::Relaxed),
            self.status.total.load(Ordering::Relaxed),
        );
        let eta = total.saturating_sub(done) as f64 / rate.max(1e-3);
        tracing::info!("analysed {done}/{total} photos ({rate:.1}/s, about {eta:.0}s left)");
        self.status.error(None);
        Ok(true)
    }

    /// Brings the month's vectors up to date with its published packs: read again when the
    /// pack changed (another ML node published). A pack of another model (before an upgrade)
    /// is not mixed in; a pack that cannot be fetched or decoded counts as empty, and the
    /// assets it should hold are analysed again (see `publish`). `clip`: the CLIP pack too
    /// (only publishing needs it; clustering reads faces).
    async fn load_vecs(&mut self, doc: &DocId, clip: bool) -> Result<()> {
        let face_model = self.engine.faces.as_ref().map(|f| f.name.clone());
        let clip_model = clip
            .then(|| self.engine.clip.as_ref().map(|c| c.name.clone()))
            .flatten();
        for (key, model) in [(PACK_CLIP, clip_model), (PACK_FACE, face_model)] {
            let Some(model) = model else { continue };
            let Some(r) = self.lib.pack_ref(doc, key)?.filter(|r| r.model == model) else {
                continue;
            };
            let sv = self.vecs.entry(doc.clone()).or_default();
            let slot = if key == PACK_CLIP { &sv.clip } else { &sv.face };
            if slot.loaded.as_deref() == Some(r.hash.as_str()) {
                continue;
            }
            let replaced = slot.loaded.clone();
            // Face packs are kept in the state directory: clustering after a restart reads
            // every month's, and they then come from disk instead of the node.
            let keep = match &self.store {
                Store::Disk { state, .. } if key == PACK_FACE => Some(state),
                _ => None,
            };
            let fetched = match keep.and_then(|s| s.read_pack(&r.hash)) {
                Some(bytes) => {
                    self.face_packs_read.0 += 1;
                    Ok(bytes)
                }
                None => {
                    if key == PACK_FACE {
                        self.face_packs_read.1 += 1;
                    }
                    let path = format!("/api/tessera/ml/blobs/{}", r.hash);
                    let got = self.request(reqwest::Method::GET, &path, None).await;
                    if let (Ok(bytes), Some(state)) = (&got, keep) {
                        if let Err(e) = state.write_pack(&r.hash, bytes) {
                            tracing::warn!(%doc, pack = %r.hash, "cannot keep the face pack: {e:#}");
                        }
                    }
                    got
                }
            };
            if let (Some(state), Some(old)) = (keep, replaced.as_deref()) {
                // The month's face pack was replaced: the old one is not read again.
                state.remove_pack(old);
            }
            let vecs = match fetched {
                Ok(bytes) => match Pack::decode(&bytes) {
                    Ok(p) => p
                        .items()
                        .map(|(k, v)| {
                            // Stored unit-length; normalised again after the pack's rounding.
                            let mut v = v.to_vec();
                            normalize(&mut v);
                            (k.to_owned(), Arc::from(v))
                        })
                        .collect(),
                    Err(e) => {
                        tracing::warn!(%doc, pack = %r.hash, "unreadable pack, its assets will be analysed again: {e}");
                        BTreeMap::new()
                    }
                },
                Err(e) if e.downcast_ref::<Refused>().is_some() => {
                    tracing::warn!(%doc, pack = %r.hash, "pack unavailable, its assets will be analysed again: {e:#}");
                    BTreeMap::new()
                }
                Err(e) => return Err(e),
            };
            let sv = self.vecs.entry(doc.clone()).or_default();
            let slot = if key == PACK_CLIP {
                &mut sv.clip
            } else {
                &mut sv.face
            };
            slot.vecs = vecs;
            slot.loaded = Some(r.hash);
        }
        Ok(())
    }

    async fn put_blob(&self, bytes: Vec<u8>) -> Result<String> {
        let hash = blake3::hash(&bytes).to_hex().to_string();
        self.request(
            reqwest::Method::PUT,
            &format!("/api/tessera/ml/blobs/{hash}"),
            Some(bytes),
        )
        .await?;
        Ok(hash)
    }

    async fn publish(&mut self, outcomes: Vec<Outcome>) -> Result<()> {
        let face_model = self.engine.faces.as_ref().map(|f| (f.name.clone(), f.dim));
        let clip_model = self.engine.clip.as_ref().map(|c| (c.name.clone(), c.dim));
        let mut groups: BTreeMap<DocId, Vec<Outcome>> = BTreeMap::new();
        for o in outcomes {
            groups
                .entry(DocId::ml(&o.work.user, &o.work.month)?)
                .or_default()
                .push(o);
        }
        // CLIP vectors are held only for the months being published (a 300k library's would
        // take 600 MB): the others' are read again from their packs when they get new photos.
        for (doc, sv) in self.vecs.iter_mut() {
            if !groups.contains_key(doc) {
                sv.clip = ModelVecs::default();
            }
        }
        for (doc, group) in groups {
            self.load_vecs(&doc, true).await?;
            self.vecs.entry(doc.clone()).or_default();
            let mut items = Vec::new();
            let mut stale = Vec::new();
            let mut marks = Vec::new();
            let mut batch_marks: Vec<(String, MlMark)> = Vec::new();
            for o in group {
                let asset = &o.work.asset;
                let old: Vec<String> = self
                    .lib
                    .faces(&doc, Some(asset))?
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect();
                let (w, h) = (o.size.0.max(1) as f64, o.size.1.max(1) as f64);
                let mut keys = Vec::new();
                for (i, f) in o.faces.into_iter().enumerate() {
                    let key = FaceRecord::key(asset, i);
                    let crop = self.put_blob(f.crop).await?;
                    let mut m = fields(&FaceRecord {
                        asset: asset.clone(),
                        x1: f.bbox[0] as f64 / w,
                        y1: f.bbox[1] as f64 / h,
                        x2: f.bbox[2] as f64 / w,
                        y2: f.bbox[3] as f64 / h,
                        score: f.score as f64,
                        crop: Some(crop),
                        ..Default::default()
                    });
                    // Only the ML node's own fields: a person set by clustering or by the user stays.
                    m.remove("person");
                    items.push((key.clone(), m));
                    if let Some(v) = self.vecs.get_mut(&doc) {
                        v.face.vecs.insert(key.clone(), f.embedding.into());
                    }
                    keys.push(key);
                }
                stale.extend(old.into_iter().filter(|k| !keys.contains(k)));
                if let (Some(v), Some(sv)) = (o.clip, self.vecs.get_mut(&doc)) {
                    sv.clip.vecs.insert(asset.clone(), v.into());
                }
                let mark = MlMark {
                    faces: keys.len() as u32,
                    face_model: face_model.as_ref().map(|m| m.0.clone()),
                    clip_model: clip_model.as_ref().map(|m| m.0.clone()),
                    // Like the other models: set even when reading failed (the error says so),
                    // so a photo is not retried until the model changes.
                    ocr_model: self.engine.ocr.as_ref().map(|m| m.name.clone()),
                    text: o.text.filter(|t| !t.is_empty()),
                    error: o.error,
                };
                if let Some(e) = &mark.error {
                    tracing::warn!(asset = %asset, "not analysed: {e}");
                }
                marks.push((
                    format!("{}{asset}", tessera_core::ml::MARK_PREFIX),
                    fields(&mark),
                ));
                batch_marks.push((asset.clone(), mark));
                self.status
                    .faces
                    .fetch_add(keys.len() as u64, Ordering::Relaxed);
            }
            if !stale.is_empty() {
                for k in &stale {
                    if let Some(v) = self.vecs.get_mut(&doc) {
                        v.face.vecs.remove(k);
                    }
                }
                self.lib.remove_entries(&doc, &stale)?;
            }
            // Packs switch atomically per month: published once every analysed asset of the
            // month has this model's vectors (during a model upgrade the old pack stays). An
            // asset marked done whose vectors are missing (lost in a restart mid-upgrade, or a
            // pack that could not be read) is analysed again instead of silently left out.
            let mut eff: BTreeMap<String, MlMark> = self.lib.ml_marks(&doc)?.into_iter().collect();
            eff.extend(batch_marks);
            let sv = self.vecs.entry(doc.clone()).or_default();
            let mut redo = Vec::new();
            for (a, m) in &eff {
                if m.error.is_some() {
                    continue;
                }
                let clip_missing = clip_model.as_ref().is_some_and(|(cm, _)| {
                    m.clip_model.as_ref() == Some(cm) && !sv.clip.vecs.contains_key(a)
                });
                let face_missing = face_model.as_ref().is_some_and(|(fm, _)| {
                    m.face_model.as_ref() == Some(fm)
                        && (0..m.faces as usize)
                            .any(|i| !sv.face.vecs.contains_key(&FaceRecord::key(a, i)))
                });
                if clip_missing || face_missing {
                    redo.push(format!("{}{a}", tessera_core::ml::MARK_PREFIX));
                }
            }
            let mut pack_items = Vec::new();
            if redo.is_empty() {
                let done = |used: fn(&MlMark) -> Option<&String>, model: &str| {
                    eff.values()
                        .all(|m| m.error.is_some() || used(m).map(String::as_str) == Some(model))
                };
                if let Some((model, dim)) = &clip_model {
                    if done(|m| m.clip_model.as_ref(), model) && !sv.clip.vecs.is_empty() {
                        pack_items.push((PACK_CLIP, build_pack(model, *dim, &sv.clip)?));
                    }
                }
                if let Some((model, dim)) = &face_model {
                    if done(|m| m.face_model.as_ref(), model) && !sv.face.vecs.is_empty() {
                        pack_items.push((PACK_FACE, build_pack(model, *dim, &sv.face)?));
                    }
                }
            } else {
                tracing::warn!(%doc, photos = redo.len(), "marked analysed but their vectors are missing: analysing them again");
                self.lib.remove_entries(&doc, &redo)?;
            }
            for (key, pack) in pack_items {
                let r = PackRef {
                    hash: String::new(),
                    model: pack.model.clone(),
                    count: pack.len() as u64,
                    dim: pack.dim as u64,
                };
                let bytes = pack.encode(Dtype::F16);
                let kept = bytes.clone();
                let hash = self.put_blob(bytes).await?;
                if let (Store::Disk { state, .. }, true) = (&self.store, key == PACK_FACE) {
                    // What is read back when the month is next loaded (or after a restart).
                    if let Err(e) = state.write_pack(&hash, &kept) {
                        tracing::warn!(%doc, pack = %hash, "cannot keep the face pack: {e:#}");
                    }
                }
                items.push((key.to_owned(), fields(&PackRef { hash, ..r })));
            }
            // Faces and packs first, the marks last, all in one change.
            items.extend(marks);
            self.lib.merge_entries(&doc, &items)?;
        }
        Ok(())
    }

    /// Clusters the user's faces that have no person yet. Only the faces a change can have
    /// made assignable are tried (`assign_changed`): faces that are new or whose person
    /// changed since the last run, and unassigned faces near them. An ML document's faces
    /// are read and normalised again only when the document or its face pack changed. The
    /// first run after a start tries every unassigned face.
    async fn cluster(&mut self, user: &str) -> Result<()> {
        let docs = self.lib.ml_doc_ids(user);
        let mut faces = Vec::new();
        let mut home = Vec::new();
        let mut changed = Vec::new();
        let before = self.clustered.remove(user).unwrap_or_default();
        let mut now: HashMap<String, Option<String>> = HashMap::with_capacity(before.len());
        let mut resolved: HashMap<String, String> = HashMap::new();
        let packs_before = self.face_packs_read;
        for doc in &docs {
            self.shed_if_over();
            self.load_vecs(doc, false).await?;
            let revision = self.lib.revision(doc).unwrap_or(0);
            let pack = self.vecs.get(doc).and_then(|v| v.face.loaded.clone());
            let fresh = self
                .face_cache
                .get(doc)
                .is_some_and(|c| c.revision == revision && c.pack == pack);
            if !fresh {
                let empty = BTreeMap::new();
                let vecs = self.vecs.get(doc).map(|v| &v.face.vecs).unwrap_or(&empty);
                let mut list = Vec::new();
                for (key, f) in self.lib.faces(doc, None)? {
                    let Some(v) = vecs.get(&key) else { continue };
                    list.push(ClusterFace {
                        embedding: v.clone(),
                        person: f.effective_person().map(str::to_owned),
                        locked: f.user_person.is_some(),
                        rejects: f.rejected(),
                        key,
                    });
                }
                self.face_cache.insert(
                    doc.clone(),
                    FaceCache {
                        revision,
                        pack,
                        faces: list,
                    },
                );
            }
            let Some(cache) = self.face_cache.get(doc) else {
                continue;
            };
            for f in &cache.faces {
                let person = match &f.person {
                    Some(p) => Some(match resolved.get(p) {
                        Some(r) => r.clone(),
                        None => {
                            let r = self.lib.resolve_person(user, p)?;
                            resolved.insert(p.clone(), r.clone());
                            r
                        }
                    }),
                    None => None,
                };
                if before.get(&f.key) != Some(&person) {
                    changed.push(faces.len());
                }
                now.insert(f.key.clone(), person.clone());
                faces.push(ClusterFace {
                    person,
                    ..f.clone()
                });
                home.push(doc.clone());
            }
        }
        let (kept, fetched) = (
            self.face_packs_read.0 - packs_before.0,
            self.face_packs_read.1 - packs_before.1,
        );
        if kept + fetched > 0 {
            tracing::info!(
                user,
                from_state_dir = kept,
                from_node = fetched,
                "face packs read"
            );
        }
        // Faces that were removed leave nobody more assignable.
        self.face_cache
            .retain(|d, _| d.user() != user || docs.contains(d));
        if !changed.is_empty() || now.len() != before.len() {
            self.clustered_dirty = true;
        }
        if changed.is_empty() || faces.iter().all(|f| f.person.is_some()) {
            self.clustered.insert(user.to_owned(), now);
            return Ok(());
        }
        let params = self.params;
        let started = Instant::now();
        let tried = changed.len();
        let (assigned, faces) = tokio::task::spawn_blocking(move || {
            (assign_changed(&faces, &changed, &params, person_id), faces)
        })
        .await?;
        for (i, p) in &assigned {
            now.insert(faces[*i].key.clone(), Some(p.clone()));
        }
        self.clustered.insert(user.to_owned(), now);
        tracing::info!(
            user,
            faces = faces.len(),
            tried,
            ms = started.elapsed().as_millis() as u64,
            "clustering pass"
        );
        if assigned.is_empty() {
            return Ok(());
        }
        let people_doc = DocId::people(user)?;
        let known: BTreeSet<String> = self
            .lib
            .people(user)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let mut by_doc: BTreeMap<DocId, Vec<(String, tessera_core::library::Fields)>> =
            BTreeMap::new();
        let mut new_people = Vec::new();
        for (i, p) in &assigned {
            let mut m = serde_json::Map::new();
            m.insert("person".into(), p.clone().into());
            by_doc
                .entry(home[*i].clone())
                .or_default()
                .push((faces[*i].key.clone(), m));
            if !known.contains(p)
                && !new_people
                    .iter()
                    .any(|(k, _): &(String, _)| k.ends_with(p.as_str()))
            {
                new_people.push((
                    format!("{PERSON_PREFIX}{p}"),
                    fields(&PersonRecord {
                        cover: Some(faces[*i].key.clone()),
                        ..Default::default()
                    }),
                ));
            }
        }
        if !new_people.is_empty() {
            self.lib.merge_entries(&people_doc, &new_people)?;
        }
        for (doc, items) in by_doc {
            self.lib.merge_entries(&doc, &items)?;
        }
        tracing::info!(
            user,
            faces = assigned.len(),
            new_people = new_people.len(),
            "clustered faces"
        );
        Ok(())
    }
}

fn build_pack(model: &str, dim: usize, vecs: &ModelVecs) -> Result<Pack> {
    let items = vecs
        .vecs
        .iter()
        .map(|(k, v)| (k.clone(), v.to_vec()))
        .collect();
    Ok(Pack::new(model.to_owned(), dim, items)?)
}

/// Runs the models on one preview (blocking).
fn analyse(engine: &Engine, bytes: &[u8], min_score: f32, work: Work) -> Outcome {
    let mut out = Outcome {
        work,
        faces: vec![],
        clip: None,
        text: None,
        size: (0, 0),
        error: None,
    };
    let img = match tessera_ml::prep::decode(bytes) {
        Ok(i) => i,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    out.size = (img.width(), img.height());
    if let Some(f) = &engine.faces {
        match f.analyze(&img, min_score) {
            Ok(faces) => {
                out.faces = faces
                    .into_iter()
                    .map(|face| {
                        let mut e = face.embedding;
                        normalize(&mut e);
                        FaceOut {
                            bbox: face.detection.bbox,
                            score: face.detection.score,
                            crop: crop_jpeg(&img, face.detection.bbox),
                            embedding: e,
                        }
                    })
                    .collect()
            }
            Err(e) => out.error = Some(format!("faces: {e}")),
        }
    }
    if let Some(o) = &engine.ocr {
        match o.ocr.read(&img) {
            Ok(lines) => {
                out.text = Some(
                    lines
                        .into_iter()
                        .map(|l| l.text)
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
            }
            Err(e) => {
                let ocr = format!("text: {e}");
                out.error = Some(match out.error.take() {
                    Some(other) => format!("{other}; {ocr}"),
                    None => ocr,
                });
            }
        }
    }
    if let Some(c) = &engine.clip {
        match c.visual.embed(&img) {
            Ok(v) => out.clip = Some(v),
            Err(e) => {
                let clip = format!("clip: {e}");
                out.error = Some(match out.error.take() {
                    Some(faces) => format!("{faces}; {clip}"),
                    None => clip,
                });
            }
        }
    }
    out
}

/// A face thumbnail: the box grown by 30 %, at most 200 px, JPEG.
fn crop_jpeg(img: &RgbImage, b: [f32; 4]) -> Vec<u8> {
    let (w, h) = (b[2] - b[0], b[3] - b[1]);
    let side = (w.max(h) * 1.3).max(8.0);
    let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
    let x0 = (cx - side / 2.0).clamp(0.0, img.width().saturating_sub(1) as f32) as u32;
    let y0 = (cy - side / 2.0).clamp(0.0, img.height().saturating_sub(1) as f32) as u32;
    let cw = (side as u32).min(img.width() - x0).max(1);
    let ch = (side as u32).min(img.height() - y0).max(1);
    let crop = image::imageops::crop_imm(img, x0, y0, cw, ch).to_image();
    let scale = (200.0 / cw.max(ch) as f32).min(1.0);
    let small = tessera_ml::prep::resize(
        &crop,
        ((cw as f32 * scale) as u32).max(1),
        ((ch as f32 * scale) as u32).max(1),
        tessera_ml::prep::Filter::Bicubic,
    )
    .unwrap_or(crop);
    let mut out = Cursor::new(Vec::new());
    let _ = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85).encode_image(&small);
    out.into_inner()
}
