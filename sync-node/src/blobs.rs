//! Content-addressed blob store.
//!
//! Layout: `<data>/blobs/<kind>/<h[0..2]>/<h[2..4]>/<blake3 hex>`. A blob is written to
//! `<data>/tmp`, fsynced, renamed into place and its directory fsynced before anyone is told it
//! exists. The sled tree `blobs` (hash → size, kind) is an index only: `fsck --repair` rebuilds
//! it from the files, which are the truth.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

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
        })
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
        if dest.exists() {
            drop(file);
            let _ = fs::remove_file(&tmp);
            self.index_put(&hashes.blake3, BlobEntry { size, kind })?;
            return Ok((hashes, true));
        }
        file.sync_all().map_err(io(&tmp))?;
        drop(file);
        let dir = dest
            .parent()
            .ok_or_else(|| BlobError::BadHash(hashes.blake3.clone()))?;
        create_dir_all_synced(dir)?;
        fs::rename(&tmp, &dest).map_err(io(&dest))?;
        sync_dir(dir)?;
        self.index_put(&hashes.blake3, BlobEntry { size, kind })?;
        // Stored again (uploaded anew after a purge): no longer deleted.
        self.deleted.remove(hashes.blake3.as_bytes())?;
        self.announce(kind, &hashes.blake3, size);
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
        for (kind, hash) in blobs {
            let p = self.path(*kind, hash)?;
            let size = match fs::metadata(&p) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                Err(e) => return Err(BlobError::Io { path: p, source: e }),
            };
            self.deleted.insert(hash.as_bytes(), now.as_bytes())?;
            if self.entry(hash)?.is_some_and(|e| e.kind == *kind) {
                self.index.remove(hash.as_bytes())?;
            }
            if size > 0 {
                files.push((p, size));
            }
        }
        if blobs.is_empty() {
            return Ok(0);
        }
        self.index.flush()?;
        let mut freed = 0;
        let mut dirs = std::collections::BTreeSet::new();
        for (p, size) in files {
            fs::remove_file(&p).map_err(io(&p))?;
            freed += size;
            if let Some(dir) = p.parent() {
                dirs.insert(dir.to_path_buf());
            }
        }
        for dir in dirs {
            sync_dir(&dir)?;
        }
        Ok(freed)
    }

    /// Drops the index entry of a blob whose file was moved away (the scrub's quarantine),
    /// without a tombstone: replication is welcome to bring the good bytes back.
    pub fn forget(&self, kind: BlobKind, hash: &str) -> Result<(), BlobError> {
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

    pub fn exists(&self, kind: BlobKind, hash: &str) -> bool {
        self.path(kind, hash).map(|p| p.is_file()).unwrap_or(false)
    }

    pub fn read(&self, kind: BlobKind, hash: &str) -> Result<Vec<u8>, BlobError> {
        let p = self.path(kind, hash)?;
        fs::read(&p).map_err(io(&p))
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
    /// The catalogue's side (records against blobs, index and jobs), when checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalogue: Option<crate::housekeeping::CatalogueReport>,
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

/// Verifies every blob's hash against its name and the index against the files. With
/// `repair`, corrupt files go to `<data>/quarantine` and the index is rebuilt from the files.
pub fn fsck(
    store: &BlobStore,
    repair: bool,
    progress: impl Fn(u64, u64),
) -> Result<FsckReport, BlobError> {
    let files = store.walk();
    let total = files.len() as u64;
    let mut report = FsckReport::default();
    let mut good = Vec::new();
    for (i, (kind, name, path)) in files.iter().enumerate() {
        progress(i as u64, total);
        report.files += 1;
        let (hash, size) = hash_file(path)?;
        report.bytes += size;
        if !valid_hash(name) || hash != *name {
            report.corrupt.push(path.display().to_string());
            continue;
        }
        match store.entry(name) {
            Ok(Some(e)) if e.size == size && e.kind == *kind => {}
            _ => report.missing_from_index.push(name.clone()),
        }
        good.push((name.clone(), BlobEntry { size, kind: *kind }));
    }
    progress(total, total);
    let on_disk: std::collections::HashSet<&str> = good.iter().map(|(h, _)| h.as_str()).collect();
    for (h, _) in store.index_entries() {
        if !on_disk.contains(h.as_str()) {
            report.index_without_file.push(h);
        }
    }
    if repair && !(report.is_clean() && report.missing_from_index.is_empty()) {
        for p in &report.corrupt {
            store.quarantine(Path::new(p))?;
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
