//! Content-addressed blob store.
//!
//! Layout: `<data>/blobs/<kind>/<h[0..2]>/<h[2..4]>/<blake3 hex>`. A blob is written to
//! `<data>/tmp`, fsynced, renamed into place and its directory fsynced before anyone is told it
//! exists. The sled tree `blobs` (hash → size, kind) is an index only: `fsck --repair` rebuilds
//! it from the files, which are the truth.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tessera_media::{Hashes, StreamHasher};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store IO at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("blob index: {0}")]
    Index(#[from] sled::Error),
    #[error("invalid blob hash {0:?}")]
    BadHash(String),
    #[error("corrupt blob index entry for {0}")]
    BadEntry(String),
    /// The object store failed or could not be reached; nothing was acknowledged.
    #[error("object storage: {op} {key}: {source}")]
    Remote {
        op: &'static str,
        key: String,
        not_found: bool,
        #[source]
        source: Box<object_store::Error>,
    },
    /// Bytes read back do not hash to their name (a damaged copy): not used.
    #[error("{kind} blob {hash}: the copy at {at} hashes to {actual}; not used")]
    Mismatch {
        kind: &'static str,
        hash: String,
        at: String,
        actual: String,
    },
    #[error("object storage configuration: {0}")]
    Config(String),
}

impl BlobError {
    /// The blob is not there (no file, no object).
    pub fn is_not_found(&self) -> bool {
        match self {
            BlobError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            BlobError::Remote { not_found, .. } => *not_found,
            _ => false,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    Original,
    Thumb,
    Preview,
    /// Published by the ML node: embedding packs and face crops.
    Ml,
    /// The video part of a motion photo, cut out of its still (the original stays intact).
    Motion,
}

impl BlobKind {
    pub const ALL: [BlobKind; 5] = [
        BlobKind::Original,
        BlobKind::Thumb,
        BlobKind::Preview,
        BlobKind::Ml,
        BlobKind::Motion,
    ];

    pub fn from_dir(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.dir() == s)
    }

    pub fn dir(self) -> &'static str {
        match self {
            BlobKind::Original => "original",
            BlobKind::Thumb => "thumb",
            BlobKind::Preview => "preview",
            BlobKind::Ml => "ml",
            BlobKind::Motion => "motion",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobEntry {
    pub size: u64,
    pub kind: BlobKind,
    /// Stored in the object store ([`crate::objects`]); a local file is then only a cached
    /// copy that may be evicted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remote: bool,
}

/// A blob written to the temp dir and hashed, not yet committed.
pub struct PendingBlob {
    tmp: PathBuf,
    file: File,
    hasher: StreamHasher,
}

impl PendingBlob {
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        self.hasher.update(chunk);
        self.file.write_all(chunk).map_err(io(&self.tmp))
    }

    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    /// The BLAKE3 hash (hex) of what was written so far.
    pub fn blake3_so_far(&self) -> String {
        self.hasher.blake3_hex()
    }

    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// Discards the temp file.
    pub fn abort(self) {
        drop(self.file);
        let _ = fs::remove_file(&self.tmp);
    }
}

#[derive(Clone)]
pub struct BlobStore {
    root: PathBuf,
    tmp: PathBuf,
    index: sled::Tree,
    /// Tombstones of blobs deleted on purpose (hash → time).
    deleted: sled::Tree,
    /// Every newly stored blob (other nodes are told at once).
    events: tokio::sync::broadcast::Sender<tessera_core::wire::BlobRef>,
    /// Where originals live when the node uses object storage ([`crate::objects`]).
    tier: Option<Arc<crate::objects::ObjectTier>>,
    /// The local copies of blobs stored remotely (only with a tier).
    cache: Arc<Mutex<Cache>>,
}

/// Local copies of remote blobs, least recently used evicted beyond `budget` bytes. A copy in
/// use (a [`LocalBlob`] alive) is never evicted. The map is the truth about which copies
/// exist: a copy being evicted leaves it first, so nobody is handed a file about to go.
#[derive(Default)]
struct Cache {
    root: PathBuf,
    budget: u64,
    total: u64,
    tick: u64,
    files: HashMap<String, CachedFile>,
}

struct CachedFile {
    kind: BlobKind,
    size: u64,
    used: u64,
    pins: usize,
}

impl Cache {
    fn path(&self, kind: BlobKind, hash: &str) -> PathBuf {
        self.root
            .join(kind.dir())
            .join(&hash[..2])
            .join(&hash[2..4])
            .join(hash)
    }

    fn pin(&mut self, hash: &str) -> bool {
        self.tick += 1;
        match self.files.get_mut(hash) {
            Some(f) => {
                f.pins += 1;
                f.used = self.tick;
                true
            }
            None => false,
        }
    }

    fn insert(&mut self, hash: &str, kind: BlobKind, size: u64, pins: usize) {
        self.tick += 1;
        let tick = self.tick;
        let f = self.files.entry(hash.to_owned()).or_insert_with(|| {
            self.total += size;
            CachedFile {
                kind,
                size,
                used: tick,
                pins: 0,
            }
        });
        f.pins += pins;
        f.used = tick;
    }

    fn remove(&mut self, hash: &str) {
        if let Some(f) = self.files.remove(hash) {
            self.total -= f.size;
        }
    }

    /// Takes the least recently used unpinned copies out until the rest fit the budget
    /// (`keep` stays whatever its age); returns their paths for the caller to delete.
    fn evict(&mut self, keep: Option<&str>) -> Vec<PathBuf> {
        if self.total <= self.budget {
            return Vec::new();
        }
        let mut idle: Vec<(u64, String)> = self
            .files
            .iter()
            .filter(|(h, f)| f.pins == 0 && Some(h.as_str()) != keep)
            .map(|(h, f)| (f.used, h.clone()))
            .collect();
        idle.sort_unstable();
        let mut out = Vec::new();
        for (_, h) in idle {
            if self.total <= self.budget {
                break;
            }
            if let Some(f) = self.files.remove(&h) {
                self.total -= f.size;
                out.push(self.path(f.kind, &h));
            }
        }
        out
    }
}

fn trim(cache: &Mutex<Cache>, keep: Option<&str>) {
    let victims = match cache.lock() {
        Ok(mut c) => c.evict(keep),
        Err(_) => return,
    };
    for p in victims {
        if let Err(e) = fs::remove_file(&p) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %p.display(), "evicting a cached original: {e}");
            }
        }
    }
}

/// A blob's local file, there for as long as this lives (a cached copy of a remote blob is
/// pinned against eviction; an open file stays readable after it anyway).
pub struct LocalBlob {
    path: PathBuf,
    pin: Option<(Arc<Mutex<Cache>>, String)>,
}

impl LocalBlob {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LocalBlob {
    fn drop(&mut self) {
        if let Some((cache, hash)) = self.pin.take() {
            if let Ok(mut c) = cache.lock() {
                if let Some(f) = c.files.get_mut(&hash) {
                    f.pins = f.pins.saturating_sub(1);
                }
            }
            trim(&cache, None);
        }
    }
}

pub fn valid_hash(h: &str) -> bool {
    h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl BlobStore {
    pub fn open(data: &Path, db: &sled::Db) -> Result<Self, BlobError> {
        let root = data.join("blobs");
        let tmp = data.join("tmp");
        for d in [&root, &tmp] {
            fs::create_dir_all(d).map_err(io(d))?;
        }
        // Leftovers of uploads interrupted by a crash were never acknowledged: drop them.
        if let Ok(entries) = fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(Self {
            root,
            tmp,
            index: db.open_tree("blobs")?,
            deleted: db.open_tree("blobs_deleted")?,
            events: tokio::sync::broadcast::channel(4096).0,
            tier: None,
            cache: Arc::default(),
        })
    }

    /// Keeps originals and motion videos in `tier` from now on, with at most `cache_bytes` of
    /// local copies. The copies already on disk are counted (and trimmed to the budget).
    pub fn with_tier(mut self, tier: crate::objects::ObjectTier, cache_bytes: u64) -> Self {
        let mut cache = Cache {
            root: self.root.clone(),
            budget: cache_bytes,
            ..Default::default()
        };
        for (hash, e) in self.index_entries() {
            let Some(e) = e.filter(|e| e.remote) else {
                continue;
            };
            if cache.path(e.kind, &hash).is_file() {
                cache.insert(&hash, e.kind, e.size, 0);
            }
        }
        self.cache = Arc::new(Mutex::new(cache));
        self.tier = Some(Arc::new(tier));
        trim(&self.cache, None);
        self
    }

    pub fn tier(&self) -> Option<&crate::objects::ObjectTier> {
        self.tier.as_deref()
    }

    /// The tier when `kind` goes to it (originals and motion videos).
    fn tier_for(&self, kind: BlobKind) -> Option<&crate::objects::ObjectTier> {
        self.tier
            .as_deref()
            .filter(|_| matches!(kind, BlobKind::Original | BlobKind::Motion))
    }

    /// Bytes of local copies of remote blobs, and the budget.
    pub fn cache_usage(&self) -> (u64, u64) {
        self.cache
            .lock()
            .map(|c| (c.total, c.budget))
            .unwrap_or_default()
    }

    /// The blob as a local file: its own path, or for a remote blob a cached copy, fetched
    /// from the object store (and its hash checked) when not cached. Errors with
    /// [`BlobError::is_not_found`] when it is nowhere.
    pub fn local(&self, kind: BlobKind, hash: &str) -> Result<LocalBlob, BlobError> {
        let path = self.path(kind, hash)?;
        let Some(tier) = self.tier_for(kind) else {
            return Ok(LocalBlob { path, pin: None });
        };
        let pinned = || Some((self.cache.clone(), hash.to_owned()));
        if self.cache.lock().map(|mut c| c.pin(hash)).unwrap_or(false) {
            return Ok(LocalBlob {
                path,
                pin: pinned(),
            });
        }
        if !self
            .entry(hash)?
            .is_some_and(|e| e.remote && e.kind == kind)
        {
            // Stored here before the node used object storage (or not at all).
            return Ok(LocalBlob { path, pin: None });
        }
        let tmp = self
            .tmp
            .join(crate::random_hex(16).map_err(|e| BlobError::Io {
                path: self.tmp.clone(),
                source: std::io::Error::other(e.to_string()),
            })?);
        let fetched = tier.download(kind, hash, &tmp).and_then(|(actual, size)| {
            if actual == hash {
                Ok(size)
            } else {
                Err(BlobError::Mismatch {
                    kind: kind.dir(),
                    hash: hash.to_owned(),
                    at: tier.key(kind, hash).to_string(),
                    actual,
                })
            }
        });
        let size = match fetched {
            Ok(size) => size,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let dir = path
            .parent()
            .ok_or_else(|| BlobError::BadHash(hash.to_owned()))?;
        create_dir_all_synced(dir)?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        if let Ok(mut c) = self.cache.lock() {
            c.insert(hash, kind, size, 1);
        }
        trim(&self.cache, Some(hash));
        Ok(LocalBlob {
            path,
            pin: pinned(),
        })
    }

    /// The object tier and size of a blob that is only there, with no local copy cached now:
    /// what [`crate::http`] streams byte ranges of instead of fetching the whole blob first.
    /// `None` for a blob on this disk or cached (and when the index cannot be read: the
    /// caller then takes the [`BlobStore::local`] path, which reports it).
    pub fn remote_only(
        &self,
        kind: BlobKind,
        hash: &str,
    ) -> Option<(Arc<crate::objects::ObjectTier>, u64)> {
        let tier = self
            .tier
            .clone()
            .filter(|_| self.tier_for(kind).is_some())?;
        if self
            .cache
            .lock()
            .map(|c| c.files.contains_key(hash))
            .unwrap_or(true)
        {
            return None;
        }
        let entry = self.entry(hash).ok()??;
        (entry.remote && entry.kind == kind).then_some((tier, entry.size))
    }

    /// [`BlobStore::local`] off the async runtime's threads.
    pub async fn local_async(&self, kind: BlobKind, hash: &str) -> Result<LocalBlob, BlobError> {
        let me = self.clone();
        let hash = hash.to_owned();
        tokio::task::spawn_blocking(move || me.local(kind, &hash))
            .await
            .map_err(|e| BlobError::Config(format!("blob fetch task: {e}")))?
    }

    /// Moves the originals stored on this disk before the node used object storage into it,
    /// one by one (each indexed as remote only once the store confirmed it; the local file
    /// then becomes a cached copy). Returns how many moved.
    pub fn move_to_tier(&self, stop: impl Fn() -> bool) -> Result<usize, BlobError> {
        let Some(tier) = self.tier.clone() else {
            return Ok(0);
        };
        let mut moved = 0;
        for (kind, hash, path) in self.walk() {
            if stop() {
                break;
            }
            if self.tier_for(kind).is_none() {
                continue;
            }
            let Some(e) = self.entry(&hash)? else {
                continue;
            };
            if e.remote || e.kind != kind {
                continue;
            }
            let (actual, size) = hash_file(&path)?;
            if actual != hash {
                tracing::warn!(blob = %hash, "not moved to object storage: its bytes no longer match (the scrub will handle it)");
                continue;
            }
            tier.upload(kind, &hash, &path)?;
            self.index_put(
                &hash,
                BlobEntry {
                    size,
                    kind,
                    remote: true,
                },
            )?;
            if let Ok(mut c) = self.cache.lock() {
                c.insert(&hash, kind, size, 0);
            }
            trim(&self.cache, None);
            moved += 1;
        }
        self.index.flush()?;
        Ok(moved)
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<tessera_core::wire::BlobRef> {
        self.events.subscribe()
    }

    fn announce(&self, kind: BlobKind, hash: &str, size: u64) {
        if self.events.receiver_count() == 0 {
            return;
        }
        if let Some(h) = tessera_core::wire::parse_hash(hash) {
            let _ = self.events.send(tessera_core::wire::BlobRef {
                kind: kind.dir().to_owned(),
                hash: h,
                size,
            });
        }
    }

    pub fn path(&self, kind: BlobKind, hash: &str) -> Result<PathBuf, BlobError> {
        if !valid_hash(hash) {
            return Err(BlobError::BadHash(hash.chars().take(80).collect()));
        }
        Ok(self
            .root
            .join(kind.dir())
            .join(&hash[..2])
            .join(&hash[2..4])
            .join(hash))
    }

    pub fn begin(&self) -> Result<PendingBlob, BlobError> {
        let name = crate::random_hex(16).map_err(|e| BlobError::Io {
            path: self.tmp.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let tmp = self.tmp.join(name);
        let file = File::create(&tmp).map_err(io(&tmp))?;
        Ok(PendingBlob {
            tmp,
            file,
            hasher: StreamHasher::new(),
        })
    }

    /// fsync → rename under its hash → fsync(dir) → index. Returns the hashes and whether the
    /// blob was already stored (then the temp copy is discarded and the stored one kept).
    pub fn commit(
        &self,
        kind: BlobKind,
        pending: PendingBlob,
    ) -> Result<(Hashes, bool), BlobError> {
        let PendingBlob { tmp, file, hasher } = pending;
        let size = hasher.len();
        let hashes = hasher.finish();
        let dest = self.path(kind, &hashes.blake3)?;
        let tier = self.tier_for(kind);
        // Already stored: in the object store (indexed so), or as a file here.
        let already = if tier.is_some()
            && self
                .entry(&hashes.blake3)?
                .is_some_and(|e| e.remote && e.kind == kind)
        {
            Some(true)
        } else if dest.exists() {
            Some(false)
        } else {
            None
        };
        if let Some(remote) = already {
            drop(file);
            let _ = fs::remove_file(&tmp);
            self.index_put(&hashes.blake3, BlobEntry { size, kind, remote })?;
            return Ok((hashes, true));
        }
        file.sync_all().map_err(io(&tmp))?;
        drop(file);
        if let Some(t) = tier {
            // Acknowledged only once the object store confirmed the whole object.
            if let Err(e) = t.upload(kind, &hashes.blake3, &tmp) {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        }
        let dir = dest
            .parent()
            .ok_or_else(|| BlobError::BadHash(hashes.blake3.clone()))?;
        create_dir_all_synced(dir)?;
        fs::rename(&tmp, &dest).map_err(io(&dest))?;
        sync_dir(dir)?;
        self.index_put(
            &hashes.blake3,
            BlobEntry {
                size,
                kind,
                remote: tier.is_some(),
            },
        )?;
        // Stored again (uploaded anew after a purge): no longer deleted.
        self.deleted.remove(hashes.blake3.as_bytes())?;
        self.announce(kind, &hashes.blake3, size);
        if tier.is_some() {
            if let Ok(mut c) = self.cache.lock() {
                c.insert(&hashes.blake3, kind, size, 0);
            }
            trim(&self.cache, Some(&hashes.blake3));
        }
        Ok((hashes, false))
    }

    pub fn put_bytes(&self, kind: BlobKind, bytes: &[u8]) -> Result<String, BlobError> {
        let mut p = self.begin()?;
        p.write(bytes)?;
        Ok(self.commit(kind, p)?.0.blake3)
    }

    fn index_put(&self, hash: &str, e: BlobEntry) -> Result<(), BlobError> {
        let v = serde_json::to_vec(&e).map_err(|_| BlobError::BadEntry(hash.to_owned()))?;
        self.index.insert(hash.as_bytes(), v)?;
        Ok(())
    }

    pub fn entry(&self, hash: &str) -> Result<Option<BlobEntry>, BlobError> {
        match self.index.get(hash.as_bytes())? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|_| BlobError::BadEntry(hash.to_owned())),
            None => Ok(None),
        }
    }

    /// Deletes a blob for good (a purged asset): the file, its index entry, and a tombstone so
    /// that replication does not bring it back from a peer that has not purged it yet.
    /// Returns the bytes freed.
    pub fn remove(&self, kind: BlobKind, hash: &str) -> Result<u64, BlobError> {
        self.remove_all(&[(kind, hash.to_owned())])
    }

    /// Removes many blobs: tombstones and index entries first, made durable once, then the
    /// files. A crash in between leaves files the index does not list (harmless; fsck finds
    /// them), never an index entry whose file is gone (found by the purge crash test) or a
    /// purged hash without its tombstone. Returns the bytes freed.
    pub fn remove_all(&self, blobs: &[(BlobKind, String)]) -> Result<u64, BlobError> {
        let now = crate::now_rfc3339();
        let mut files = Vec::new();
        let mut objects = Vec::new();
        let mut freed = 0;
        for (kind, hash) in blobs {
            let p = self.path(*kind, hash)?;
            let size = match fs::metadata(&p) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                Err(e) => return Err(BlobError::Io { path: p, source: e }),
            };
            self.deleted.insert(hash.as_bytes(), now.as_bytes())?;
            if let Some(e) = self.entry(hash)?.filter(|e| e.kind == *kind) {
                self.index.remove(hash.as_bytes())?;
                if e.remote {
                    objects.push((*kind, hash.clone()));
                    freed += e.size;
                }
            }
            if size > 0 {
                files.push((p, size, hash));
            }
        }
        if blobs.is_empty() {
            return Ok(0);
        }
        self.index.flush()?;
        let mut dirs = std::collections::BTreeSet::new();
        for (p, size, hash) in files {
            if let Ok(mut c) = self.cache.lock() {
                if c.files.contains_key(hash.as_str()) {
                    // A cached copy: its bytes were counted with the object.
                    c.remove(hash);
                    freed = freed.saturating_sub(size);
                }
            }
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(BlobError::Io { path: p, source: e }),
            }
            freed += size;
            if let Some(dir) = p.parent() {
                dirs.insert(dir.to_path_buf());
            }
        }
        for dir in dirs {
            sync_dir(&dir)?;
        }
        if let Some(tier) = &self.tier {
            for (kind, hash) in objects {
                // Tombstoned and unindexed already: a failure leaves an orphan object that
                // `fsck` lists, never a catalogue entry without its original.
                if let Err(e) = tier.delete(kind, &hash) {
                    tracing::warn!(blob = %hash, "deleting from object storage: {e}");
                }
            }
        }
        Ok(freed)
    }

    /// Drops the index entry of a blob whose file was moved away (the scrub's quarantine),
    /// without a tombstone: replication is welcome to bring the good bytes back.
    pub fn forget(&self, kind: BlobKind, hash: &str) -> Result<(), BlobError> {
        if let Some(e) = self.entry(hash)?.filter(|e| e.kind == kind && e.remote) {
            // Only a cached copy went bad: the object store still has the blob.
            if let Ok(mut c) = self.cache.lock() {
                c.remove(hash);
            }
            tracing::info!(blob = %hash, size = e.size, "dropped a damaged cached copy; the object store keeps the original");
            return Ok(());
        }
        if self.entry(hash)?.is_some_and(|e| e.kind == kind) {
            self.index.remove(hash.as_bytes())?;
            self.index.flush()?;
        }
        Ok(())
    }

    /// Clears a tombstone (the hash is in use again).
    pub fn undelete(&self, hash: &str) -> Result<(), BlobError> {
        self.deleted.remove(hash.as_bytes())?;
        Ok(())
    }

    /// Deleted on purpose (see [`BlobStore::remove`]).
    pub fn is_deleted(&self, hash: &str) -> bool {
        self.deleted.contains_key(hash.as_bytes()).unwrap_or(false)
    }

    /// Stored: a file here, or (with object storage) indexed as in the store.
    pub fn exists(&self, kind: BlobKind, hash: &str) -> bool {
        self.path(kind, hash).map(|p| p.is_file()).unwrap_or(false)
            || (self.tier_for(kind).is_some()
                && self
                    .entry(hash)
                    .ok()
                    .flatten()
                    .is_some_and(|e| e.remote && e.kind == kind))
    }

    pub fn read(&self, kind: BlobKind, hash: &str) -> Result<Vec<u8>, BlobError> {
        let b = self.local(kind, hash)?;
        fs::read(b.path()).map_err(io(b.path()))
    }

    /// Every blob file on disk.
    pub fn walk(&self) -> Vec<(BlobKind, String, PathBuf)> {
        let mut out = Vec::new();
        for kind in BlobKind::ALL {
            let mut stack = vec![self.root.join(kind.dir())];
            while let Some(d) = stack.pop() {
                let Ok(rd) = fs::read_dir(&d) else { continue };
                for e in rd.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
                        out.push((kind, name.to_owned(), p.clone()));
                    }
                }
            }
        }
        out.sort_by(|a, b| a.1.cmp(&b.1));
        out
    }

    /// Every stored blob with its size: the files on disk, and (with object storage) the
    /// blobs indexed as remote whose local copy is not cached.
    pub fn inventory(&self) -> Vec<(BlobKind, String, u64)> {
        let mut out: Vec<(BlobKind, String, u64)> = self
            .walk()
            .into_iter()
            .filter_map(|(kind, h, path)| Some((kind, h, fs::metadata(&path).ok()?.len())))
            .collect();
        if self.tier.is_some() {
            let local: std::collections::HashSet<(BlobKind, String)> =
                out.iter().map(|(k, h, _)| (*k, h.clone())).collect();
            for (h, e) in self.index_entries() {
                if let Some(e) = e.filter(|e| e.remote) {
                    if !local.contains(&(e.kind, h.clone())) {
                        out.push((e.kind, h, e.size));
                    }
                }
            }
        }
        out
    }

    pub fn index_len(&self) -> usize {
        self.index.len()
    }

    pub fn index_entries(&self) -> Vec<(String, Option<BlobEntry>)> {
        self.index
            .iter()
            .flatten()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(&k).into_owned(),
                    serde_json::from_slice(&v).ok(),
                )
            })
            .collect()
    }

    pub fn index_clear(&self) -> Result<(), BlobError> {
        self.index.clear()?;
        Ok(())
    }

    pub fn index_insert(&self, hash: &str, e: BlobEntry) -> Result<(), BlobError> {
        self.index_put(hash, e)
    }

    pub fn quarantine(&self, path: &Path) -> Result<PathBuf, BlobError> {
        let q = self.root.parent().unwrap_or(&self.root).join("quarantine");
        fs::create_dir_all(&q).map_err(io(&q))?;
        // `<kind>-<hash>`, and never over an earlier quarantined file (`.1`, `.2`, …).
        let kind = path
            .ancestors()
            .nth(3)
            .and_then(|p| p.file_name())
            .map(|k| k.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let base = format!("{kind}-{name}");
        let mut dest = q.join(&base);
        let mut n = 0;
        while dest.exists() {
            n += 1;
            dest = q.join(format!("{base}.{n}"));
        }
        fs::rename(path, &dest).map_err(io(path))?;
        Ok(dest)
    }
}

/// BLAKE3 of a file, streamed.
pub fn hash_file(path: &Path) -> Result<(String, u64), BlobError> {
    hash_file_paced(path, |_| {})
}

/// [`hash_file`], calling `pace` with the size of every chunk read (the scrub sleeps there to
/// keep to its rate).
pub fn hash_file_paced(path: &Path, mut pace: impl FnMut(u64)) -> Result<(String, u64), BlobError> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(io(path))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
        pace(k as u64);
    }
    Ok((h.finalize().to_hex().to_string(), n))
}

fn sync_dir(dir: &Path) -> Result<(), BlobError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Creates missing directories and fsyncs each new one's parent so the entry is durable.
fn create_dir_all_synced(dir: &Path) -> Result<(), BlobError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all_synced(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => {
            return Err(BlobError::Io {
                path: dir.to_path_buf(),
                source: e,
            })
        }
    }
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// What `fsck` found.
#[derive(Debug, Default, Serialize)]
pub struct FsckReport {
    pub files: usize,
    pub bytes: u64,
    pub corrupt: Vec<String>,
    pub missing_from_index: Vec<String>,
    pub index_without_file: Vec<String>,
    pub repaired: bool,
    /// Objects in the object store (with `--object-store`), and how they were checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteReport>,
    /// The catalogue's side (records against blobs, index and jobs), when checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalogue: Option<crate::housekeeping::CatalogueReport>,
}

#[derive(Debug, Default, Serialize)]
pub struct RemoteReport {
    pub url: String,
    pub objects: usize,
    pub bytes: u64,
    /// Every object was read and hashed (`--remote-hash`); otherwise sizes were compared.
    pub hashed: bool,
}

impl FsckReport {
    /// No corrupt blob and no index entry without its file. Blobs missing from the index are
    /// reported but are not damage: the files are the truth, and a blob written by an upload
    /// that was cut short before its acknowledgement is legitimately unindexed.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty()
            && self.index_without_file.is_empty()
            && self
                .catalogue
                .as_ref()
                .is_none_or(|c| c.missing_original.is_empty())
    }
}

/// Verifies every blob's hash against its name and the index against the files (and, with
/// object storage, against the bucket's objects: their sizes, or with `remote_hash` their
/// bytes). With `repair`, corrupt files go to `<data>/quarantine` (corrupt objects to the
/// bucket's `quarantine/`) and the index is rebuilt from the files and objects.
pub fn fsck(
    store: &BlobStore,
    repair: bool,
    remote_hash: bool,
    progress: impl Fn(u64, u64),
) -> Result<FsckReport, BlobError> {
    let files = store.walk();
    let objects = match store.tier() {
        Some(t) => t.list(&[BlobKind::Original, BlobKind::Motion])?,
        None => Vec::new(),
    };
    let total = (files.len() + objects.len()) as u64;
    let mut report = FsckReport::default();
    let mut good: HashMap<String, BlobEntry> = HashMap::new();
    let mut corrupt_objects = Vec::new();
    for (i, (kind, name, path)) in files.iter().enumerate() {
        progress(i as u64, total);
        report.files += 1;
        let (hash, size) = hash_file(path)?;
        report.bytes += size;
        if !valid_hash(name) || hash != *name {
            report.corrupt.push(path.display().to_string());
            continue;
        }
        let entry = store.entry(name).ok().flatten();
        match &entry {
            Some(e) if e.size == size && e.kind == *kind => {}
            _ => report.missing_from_index.push(name.clone()),
        }
        let remote = entry.is_some_and(|e| e.remote) && store.tier_for(*kind).is_some();
        good.insert(
            name.clone(),
            BlobEntry {
                size,
                kind: *kind,
                remote,
            },
        );
    }
    if let Some(tier) = store.tier() {
        let mut r = RemoteReport {
            url: tier.url().to_owned(),
            hashed: remote_hash,
            ..Default::default()
        };
        for (i, (kind, name, size)) in objects.iter().enumerate() {
            progress((files.len() + i) as u64, total);
            r.objects += 1;
            r.bytes += size;
            let shown = tier.key(*kind, name).to_string();
            let entry = store.entry(name).ok().flatten();
            let ok = valid_hash(name)
                && if remote_hash {
                    tier.hash(*kind, name)? == (name.clone(), *size)
                } else {
                    entry.as_ref().is_none_or(|e| e.size == *size)
                };
            if !ok {
                report.corrupt.push(shown);
                corrupt_objects.push((*kind, name.clone()));
                // A good local copy (it hashed right above) is not the object.
                good.remove(name);
                continue;
            }
            match &entry {
                Some(e) if e.remote && e.size == *size && e.kind == *kind => {}
                _ => report.missing_from_index.push(name.clone()),
            }
            good.insert(
                name.clone(),
                BlobEntry {
                    size: *size,
                    kind: *kind,
                    remote: true,
                },
            );
        }
        report.remote = Some(r);
    }
    progress(total, total);
    for (h, e) in store.index_entries() {
        // A remote entry needs its object; a local one its file.
        let found = good
            .get(&h)
            .is_some_and(|g| !e.as_ref().is_some_and(|e| e.remote) || g.remote);
        if !found {
            report.index_without_file.push(h);
        }
    }
    if repair && !(report.is_clean() && report.missing_from_index.is_empty()) {
        for p in &report.corrupt {
            if Path::new(p).is_file() {
                store.quarantine(Path::new(p))?;
            }
        }
        if let Some(tier) = store.tier() {
            for (kind, hash) in &corrupt_objects {
                tier.quarantine(*kind, hash)?;
                if let Ok(mut c) = store.cache.lock() {
                    c.remove(hash);
                }
                let local = store.path(*kind, hash)?;
                if local.is_file() {
                    // Its cached copy is good: upload it again.
                    tier.upload(*kind, hash, &local)?;
                    good.insert(
                        hash.clone(),
                        BlobEntry {
                            size: fs::metadata(&local).map_err(io(&local))?.len(),
                            kind: *kind,
                            remote: true,
                        },
                    );
                }
            }
        }
        store.index_clear()?;
        for (h, e) in good {
            store.index_insert(&h, e)?;
        }
        store.index.flush()?;
        report.repaired = true;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(budget: u64) -> Cache {
        Cache {
            root: PathBuf::from("/nowhere"),
            budget,
            ..Default::default()
        }
    }

    fn h(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    #[test]
    fn cache_evicts_least_recently_used_unpinned_copies_to_the_budget() {
        let mut c = cache(250);
        for x in ['a', 'b', 'c'] {
            c.insert(&h(x), BlobKind::Original, 100, 0);
        }
        assert_eq!(c.total, 300);
        // `a` is used again: `b` is now the least recently used.
        assert!(c.pin(&h('a')));
        let gone = c.evict(None);
        assert_eq!(gone.len(), 1);
        assert!(gone[0].ends_with(h('b')), "{gone:?}");
        assert_eq!(c.total, 200);
        // Over budget again, but `a` is pinned and `d` (just stored) is kept by the caller.
        c.budget = 0;
        c.insert(&h('d'), BlobKind::Motion, 50, 0);
        let gone = c.evict(Some(&h('d')));
        assert_eq!(gone.len(), 1);
        assert!(gone[0].ends_with(h('c')));
        assert!(gone[0].starts_with("/nowhere/original/cc/cc"));
        assert!(!c.pin(&h('c')), "an evicted copy is never handed out");
        assert_eq!(c.total, 150);
        // Unpinned, `a` goes too; `d` once nobody keeps it.
        if let Some(f) = c.files.get_mut(&h('a')) {
            f.pins = 0;
        }
        assert_eq!(c.evict(Some(&h('d'))).len(), 1);
        assert_eq!(c.evict(None).len(), 1);
        assert_eq!((c.total, c.files.len()), (0, 0));
        // The same blob inserted twice is counted once.
        c.insert(&h('e'), BlobKind::Original, 10, 1);
        c.insert(&h('e'), BlobKind::Original, 10, 1);
        assert_eq!((c.total, c.files[&h('e')].pins), (10, 2));
    }
}
