//! The node's copy of the catalogue: automerge documents on disk, and sync sessions with peers.
//!
//! Each document is `<data>/docs/<doc id with / as ~>.am`, an append-only log: a full save
//! followed by incremental chunks (automerge loads the concatenation). Every append is fsynced
//! before the change is acknowledged.
//!
//! Start-up does not decode the catalogue: `<data>/docs/heads.idx` records, per document file,
//! its length and blake3 hash and the heads of the document it holds. A file that still
//! matches is held unloaded with those heads ([`Library::hold_unloaded`]) and read when first
//! used; any other file (appended since, torn by a crash, rewritten, or no index at all) is
//! read, a torn tail dropped, and compacted into one full save — as is a log grown past 1.5×
//! its last full save. The index is refreshed every half minute and at shutdown; being stale
//! only costs that check.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use tessera_core::{Access, DocId, Library, LibraryError, PeerSync, SyncEnvelope, SyncError};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalogue IO at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Library(#[from] LibraryError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error("catalogue lock poisoned")]
    Poisoned,
}

/// Documents that may be unloaded: the many month documents. Roots, people, albums and the
/// household are small and used by nearly every request.
fn unloadable(id: &DocId) -> bool {
    id.month().is_some() || id.ml_month().is_some()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CatalogError + '_ {
    move |source| CatalogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A loaded document's resident size is about this many times its saved size (automerge 0.12:
/// a 300k library saves to 14 MB and holds ≈250 MB).
pub const RESIDENT_PER_SAVED_BYTE: usize = 16;

pub struct Catalog {
    dir: PathBuf,
    lib: Mutex<Library>,
    /// Saved bytes of month documents (shards, ML) kept loaded; the least recently used clean
    /// ones beyond it are unloaded when the library is next locked.
    budget_saved_bytes: usize,
    /// Documents whose last write failed: automerge's incremental-save cursor has already moved
    /// past their unsaved changes, so they are rewritten whole (atomically) by the next persist.
    rewrite: Mutex<std::collections::BTreeSet<DocId>>,
    sessions: Mutex<HashMap<(String, String), PeerSync>>,
    /// Bumped whenever a change was persisted (live sync sessions push it to their peers).
    changes: tokio::sync::watch::Sender<u64>,
    /// What `heads.idx` should hold: documents whose file was not written since their entry.
    index: Mutex<IndexState>,
    /// One writer of `heads.idx` at a time (the periodic task and shutdown may meet).
    index_write: Mutex<()>,
    /// A document file was written since `heads.idx` was.
    index_stale: AtomicBool,
    opened: OpenStats,
}

/// How the catalogue was opened (logged, and asserted by tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenStats {
    /// Documents held unloaded from `heads.idx`, not decoded.
    pub held: usize,
    /// Documents read and checked (no or stale index entry).
    pub checked: usize,
    /// Of those, documents whose torn tail was dropped.
    pub torn: usize,
}

#[derive(Default)]
struct IndexState {
    entries: BTreeMap<DocId, Indexed>,
    /// The length of the last full save of documents written since their entry (a log much
    /// longer than its full save is compacted at the next start).
    fulls: HashMap<DocId, u64>,
}

/// `heads.idx`: what the node knew of a document file when it last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Indexed {
    len: u64,
    /// The length of the document's last full save (0: unknown). A log grown past 1.5× it is
    /// checked and compacted at start instead of held.
    full: u64,
    hash: [u8; 32],
    /// The document's heads, 32 bytes each ([`Library::known_heads_bytes`]).
    heads: Vec<u8>,
}

const INDEX_FILE: &str = "heads.idx";
const INDEX_MAGIC: &[u8; 8] = b"TSHEADS2";

/// `MAGIC, count: u32, count × (stem len: u16, stem, file len: u64, full save len: u64, file
/// blake3, heads len: u32, heads), blake3 of everything before` (little-endian).
fn encode_index(entries: &BTreeMap<DocId, Indexed>) -> Vec<u8> {
    let mut out = INDEX_MAGIC.to_vec();
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (id, e) in entries {
        let stem = id.file_stem();
        out.extend_from_slice(&(stem.len() as u16).to_le_bytes());
        out.extend_from_slice(stem.as_bytes());
        out.extend_from_slice(&e.len.to_le_bytes());
        out.extend_from_slice(&e.full.to_le_bytes());
        out.extend_from_slice(&e.hash);
        out.extend_from_slice(&(e.heads.len() as u32).to_le_bytes());
        out.extend_from_slice(&e.heads);
    }
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

/// The entries of a `heads.idx`, by file stem; `None` for anything damaged or foreign.
fn decode_index(bytes: &[u8]) -> Option<HashMap<String, Indexed>> {
    let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
    if blake3::hash(body).as_bytes() != sum {
        return None;
    }
    let mut rest = body.strip_prefix(INDEX_MAGIC.as_slice())?;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (a, b) = rest.split_at_checked(n)?;
        rest = b;
        Some(a)
    };
    let count = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let mut out = HashMap::new();
    for _ in 0..count {
        let stem_len = u16::from_le_bytes(take(2)?.try_into().ok()?);
        let stem = std::str::from_utf8(take(stem_len.into())?).ok()?.to_owned();
        let len = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let full = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let hash: [u8; 32] = take(32)?.try_into().ok()?;
        let heads_len = u32::from_le_bytes(take(4)?.try_into().ok()?);
        let heads = take(heads_len as usize)?.to_vec();
        out.insert(
            stem,
            Indexed {
                len,
                full,
                hash,
                heads,
            },
        );
    }
    Some(out)
}

impl Catalog {
    /// Opens every document under `<data>/docs`, keeping every one loaded once used.
    pub fn open(data: &Path, actor: &[u8]) -> Result<Self, CatalogError> {
        Self::open_lazy(data, actor, usize::MAX)
    }

    /// Opens every document under `<data>/docs` (see the module's doc for what is checked);
    /// month documents (shards and ML results) stay loaded up to about `memory_bytes` of
    /// resident memory and are read again from their files when next used.
    pub fn open_lazy(data: &Path, actor: &[u8], memory_bytes: usize) -> Result<Self, CatalogError> {
        let started = std::time::Instant::now();
        let dir = data.join("docs");
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let budget_saved_bytes = memory_bytes / RESIDENT_PER_SAVED_BYTE;
        let mut lib = Library::new(actor);
        let from = dir.clone();
        lib.set_loader(Box::new(move |id: &DocId| {
            let path = from.join(format!("{}.am", id.file_stem()));
            fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))
        }));
        let index_path = dir.join(INDEX_FILE);
        let known = match fs::read(&index_path) {
            Ok(bytes) => decode_index(&bytes).unwrap_or_else(|| {
                tracing::warn!(path = %index_path.display(), "the heads index is damaged; checking every document");
                HashMap::new()
            }),
            Err(_) => HashMap::new(),
        };
        let mut index = BTreeMap::new();
        let mut opened = OpenStats::default();
        for e in fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
            let path = e.path();
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if path.extension().and_then(|x| x.to_str()) != Some("am") {
                continue;
            }
            let Ok(id) = DocId::from_file_stem(stem) else {
                tracing::warn!(path = %path.display(), "ignoring file with an invalid document id");
                continue;
            };
            let bytes = fs::read(&path).map_err(io(&path))?;
            let hash = *blake3::hash(&bytes).as_bytes();
            // A log grown past 1.5× its last full save is checked, which compacts it.
            if let Some(e) = known.get(stem).filter(|e| {
                e.len == bytes.len() as u64 && e.hash == hash && e.len <= e.full * 3 / 2
            }) {
                match lib.hold_unloaded(id.clone(), &e.heads, bytes.len()) {
                    Ok(_) => {
                        index.insert(id, e.clone());
                        opened.held += 1;
                        continue;
                    }
                    Err(err) => {
                        tracing::warn!(doc = %id, error = %err, "bad heads index entry; checking the document")
                    }
                }
            }
            opened.checked += 1;
            let torn = match lib.load_recovering(id.clone(), &bytes) {
                Ok(torn) => torn,
                Err(e) => {
                    // Keep the file for inspection and carry on: one bad document must not take the
                    // node down. It is re-fetched from peers by sync.
                    tracing::error!(doc = %id, error = %e, "cannot load document; moving it aside");
                    let _ = fs::rename(&path, path.with_extension("am.corrupt"));
                    continue;
                }
            };
            if torn {
                opened.torn += 1;
                tracing::warn!(doc = %id, "dropped a torn tail (a write cut short by a crash); rewriting the document");
            }
            let mut file = bytes;
            let mut full_len = 0;
            if let Some(full) = lib.save(&id) {
                full_len = full.len() as u64;
                if torn || full_len * 3 / 2 < file.len() as u64 {
                    write_atomic(&path, &full)?;
                    file = full;
                }
            }
            if let Some(heads) = lib.known_heads_bytes(&id) {
                let (len, hash) = (file.len() as u64, *blake3::hash(&file).as_bytes());
                index.insert(
                    id,
                    Indexed {
                        len,
                        full: full_len,
                        hash,
                        heads,
                    },
                );
            }
            // Checked and compacted: it need not stay loaded.
            lib.evict(budget_saved_bytes, &unloadable);
        }
        if opened.checked > 0 || index.len() != known.len() {
            if let Err(e) = write_atomic(&index_path, &encode_index(&index)) {
                tracing::warn!(error = %e, "cannot write the heads index; the next start checks every document");
            }
        }
        tracing::info!(
            documents = opened.held + opened.checked,
            held_unloaded = opened.held,
            checked = opened.checked,
            torn = opened.torn,
            ms = started.elapsed().as_millis() as u64,
            "catalogue opened"
        );
        Ok(Self {
            dir,
            budget_saved_bytes,
            lib: Mutex::new(lib),
            rewrite: Mutex::new(Default::default()),
            sessions: Mutex::new(HashMap::new()),
            changes: tokio::sync::watch::channel(0).0,
            index: Mutex::new(IndexState {
                entries: index,
                fulls: HashMap::new(),
            }),
            index_write: Mutex::new(()),
            index_stale: AtomicBool::new(false),
            opened,
        })
    }

    /// How the catalogue was opened.
    pub fn open_stats(&self) -> OpenStats {
        self.opened
    }

    /// Brings `heads.idx` up to date with the document files written since it was (the next
    /// start then decodes none of them). Documents with unsaved changes or a failed write
    /// keep no entry until they are written. Cheap when nothing was written.
    pub fn save_heads_index(&self) -> Result<(), CatalogError> {
        let _writer = self.index_write.lock().unwrap_or_else(|p| p.into_inner());
        if !self.index_stale.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let res = self.write_heads_index();
        if !matches!(res, Ok(true)) {
            // Tried again at the next call.
            self.index_stale.store(true, Ordering::Release);
        }
        res.map(|_| ())
    }

    /// Writes `heads.idx`; `Ok(false)` when some document could not have its entry yet.
    fn write_heads_index(&self) -> Result<bool, CatalogError> {
        let mut lib = self.lock()?;
        let failed = match self.rewrite.lock() {
            Ok(r) => r.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let missing: Vec<DocId> = lib
            .ids()
            .filter(|id| !index.entries.contains_key(*id))
            .cloned()
            .collect();
        let mut complete = true;
        for id in missing {
            if !lib.is_clean(&id) || lib.unreadable(&id) || failed.contains(&id) {
                complete = false;
                continue;
            }
            let path = self.dir.join(format!("{}.am", id.file_stem()));
            let file = match fs::read(&path) {
                Ok(f) => f,
                // Never written (an empty document nobody changed): nothing to index.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&path)(e)),
            };
            // A log grown past 1.5× its last full save (or never fully saved: a document
            // created since the start) is measured against a fresh full save, and compacted
            // into it when longer: logs do not grow forever between restarts.
            let mut full = index.fulls.get(&id).copied().unwrap_or(0);
            let mut file = file;
            if file.len() as u64 > full * 3 / 2 {
                let Some(save) = lib.save(&id) else { continue };
                full = save.len() as u64;
                if file.len() as u64 > full * 3 / 2 {
                    write_atomic(&path, &save)?;
                    file = save;
                }
                index.fulls.insert(id.clone(), full);
            }
            if let Some(heads) = lib.known_heads_bytes(&id) {
                let (len, hash) = (file.len() as u64, *blake3::hash(&file).as_bytes());
                index.entries.insert(
                    id,
                    Indexed {
                        len,
                        full,
                        hash,
                        heads,
                    },
                );
            }
        }
        drop(lib);
        let bytes = encode_index(&index.entries);
        drop(index);
        // A stale entry written here (a document appended meanwhile) no longer matches its
        // file, so it is checked at start: nothing wrong is believed.
        write_atomic(&self.dir.join(INDEX_FILE), &bytes)?;
        Ok(complete)
    }

    /// A document's file changed: its index entry no longer holds.
    fn written(&self, id: &DocId, full_save: Option<u64>) {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let before = index.entries.remove(id).map(|e| e.full);
        if let Some(full) = full_save.or(before) {
            index.fulls.insert(id.clone(), full);
        }
        self.index_stale.store(true, Ordering::Release);
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The library. A panic while another thread held it does not take the node down: every
    /// catalogue edit is a whole automerge change, so the library is consistent and is used on
    /// (the panic was already reported where it happened).
    ///
    /// Month documents used least recently beyond the memory budget are unloaded first (never
    /// one with unsaved changes or a failed write).
    pub fn lock(&self) -> Result<MutexGuard<'_, Library>, CatalogError> {
        let mut lib = self.lib.lock().unwrap_or_else(|poisoned| {
            tracing::error!("a thread panicked while holding the catalogue; carrying on");
            self.lib.clear_poison();
            poisoned.into_inner()
        });
        for (doc, error) in lib.take_load_errors() {
            tracing::error!(%doc, %error, "cannot read a catalogue document; it reads as empty until sync brings it back");
        }
        if self.budget_saved_bytes != usize::MAX {
            let failed: std::collections::BTreeSet<DocId> = match self.rewrite.lock() {
                Ok(r) => r.clone(),
                Err(p) => p.into_inner().clone(),
            };
            lib.evict(self.budget_saved_bytes, &|id| {
                unloadable(id) && !failed.contains(id)
            });
        }
        Ok(lib)
    }

    /// Appends the changes of every dirty document to its log and fsyncs it. On failure nothing
    /// is forgotten: the failed document is rewritten whole, and the others stay dirty, at the
    /// next persist (or [`Catalog::retry_failed`]); the caller must not acknowledge.
    pub fn persist(&self, lib: &mut Library) -> Result<(), CatalogError> {
        let dirty = lib.take_dirty();
        let any = !dirty.is_empty();
        let res = self.persist_docs(lib, dirty);
        if any {
            self.changes.send_modify(|v| *v += 1);
        }
        res
    }

    /// Retries writes that failed (a full disk, a read-only file); called periodically.
    pub fn retry_failed(&self) -> Result<(), CatalogError> {
        let pending = self.rewrite.lock().map(|r| !r.is_empty()).unwrap_or(true);
        if !pending {
            return Ok(());
        }
        let mut lib = self.lock()?;
        self.persist(&mut lib)
    }

    fn persist_docs(&self, lib: &mut Library, dirty: Vec<DocId>) -> Result<(), CatalogError> {
        let rewrite: Vec<DocId> = match self.rewrite.lock() {
            Ok(mut r) => std::mem::take(&mut *r).into_iter().collect(),
            Err(p) => std::mem::take(&mut *p.into_inner()).into_iter().collect(),
        };
        let mut first_err = None;
        for id in &rewrite {
            let path = self.dir.join(format!("{}.am", id.file_stem()));
            let Some(full) = lib.save(id) else { continue };
            self.written(id, Some(full.len() as u64));
            if let Err(e) = write_atomic(&path, &full) {
                tracing::error!(doc = %id, error = %e, "catalogue rewrite failed; will retry");
                self.remember_failed(id);
                first_err.get_or_insert(e);
            }
        }
        for (i, id) in dirty.iter().enumerate() {
            if rewrite.contains(id) {
                continue;
            }
            if let Err(e) = self.append_doc(lib, id) {
                tracing::error!(doc = %id, error = %e, "catalogue write failed; will retry");
                self.remember_failed(id);
                // The cursors of the documents not reached yet did not move: keep them dirty.
                for rest in &dirty[i + 1..] {
                    lib.mark_dirty(rest);
                }
                return Err(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn remember_failed(&self, id: &DocId) {
        match self.rewrite.lock() {
            Ok(mut r) => r.insert(id.clone()),
            Err(p) => p.into_inner().insert(id.clone()),
        };
    }

    fn append_doc(&self, lib: &mut Library, id: &DocId) -> Result<(), CatalogError> {
        {
            let Some(chunk) = lib.save_incremental(id) else {
                return Ok(());
            };
            if chunk.is_empty() {
                return Ok(());
            }
            let path = self.dir.join(format!("{}.am", id.file_stem()));
            self.written(id, None);
            let fresh = !path.exists();
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io(&path))?;
            f.write_all(&chunk).map_err(io(&path))?;
            f.sync_all().map_err(io(&path))?;
            if fresh {
                File::open(&self.dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io(&self.dir))?;
            }
        }
        Ok(())
    }

    /// One request/response round of the sync protocol with a user's device.
    pub fn sync_round(&self, user: &str, request: &[u8]) -> Result<Vec<u8>, CatalogError> {
        let env = SyncEnvelope::decode(request)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        bound_sessions(&mut sessions, (user.to_owned(), env.peer.clone()));
        let session = sessions
            .entry((user.to_owned(), env.peer.clone()))
            .or_default();
        session.note_holds(env.holds.as_deref());
        let mut lib = self.lock()?;
        // The one access decision (the user's own documents, albums by role), taken before
        // the message changes anything.
        let view = lib.access_view(user);
        session.receive_checked(
            &mut lib,
            env.docs,
            |d| view.access(d),
            |_, before, after| tessera_core::album::check_contribution(user, before, after),
        )?;
        self.persist(&mut lib)?;
        let view = lib.access_view(user);
        let mut ids: Vec<DocId> = lib
            .ids()
            .filter(|d| view.syncs(d, session))
            .cloned()
            .collect();
        // Newest months first, at most ROUND_BYTES of messages per answer: a new browser shows
        // its newest photos after the first rounds while the rest of the library follows.
        ids.sort_by_key(DocId::sync_rank);
        let out = session.generate_within(&mut lib, &ids, ROUND_BYTES);
        let dropped = session.take_dropped(|d| view.access(d) != Access::None);
        Ok(SyncEnvelope::new("node", out)
            .with_dropped(dropped)
            .encode())
    }
}

impl Catalog {
    /// One sync round with an ML node: it reads every user's documents and may write only the
    /// ML and people documents ([`DocId::is_ml_writable`]).
    pub fn sync_round_ml(&self, request: &[u8]) -> Result<Vec<u8>, CatalogError> {
        let env = SyncEnvelope::decode(request)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        bound_sessions(&mut sessions, ("*ml".to_owned(), env.peer.clone()));
        let session = sessions
            .entry(("*ml".to_owned(), env.peer.clone()))
            .or_default();
        session.note_holds(env.holds.as_deref());
        let mut lib = self.lock()?;
        session.receive(&mut lib, env.docs, |d| {
            if d.is_household() {
                Access::None
            } else if d.is_ml_writable() {
                Access::Write
            } else {
                Access::Read
            }
        })?;
        self.persist(&mut lib)?;
        let mut ids: Vec<DocId> = lib.ids().filter(|d| !d.is_household()).cloned().collect();
        // Newest first and at most ROUND_BYTES per answer, as for a browser: an ML node reads
        // a large catalogue round by round and unloads it as it goes, instead of receiving
        // (and loading) the whole library in one answer.
        ids.sort_by_key(DocId::sync_rank);
        let out = session.generate_within(&mut lib, &ids, ROUND_BYTES);
        Ok(SyncEnvelope::new("node", out).encode())
    }
}

/// Bytes of sync messages per HTTP sync answer (at least one document's message always goes;
/// the client asks again while answers are not empty).
pub const ROUND_BYTES: usize = 2 << 20;

/// Most HTTP sync sessions kept (each is a client-chosen peer name): beyond it, arbitrary old
/// sessions are dropped (a dropped peer simply starts its sync state afresh).
const MAX_SESSIONS: usize = 1024;

fn bound_sessions(sessions: &mut HashMap<(String, String), PeerSync>, key: (String, String)) {
    if sessions.len() >= MAX_SESSIONS && !sessions.contains_key(&key) {
        let drop: Vec<_> = sessions.keys().take(MAX_SESSIONS / 4).cloned().collect();
        for k in drop {
            sessions.remove(&k);
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CatalogError> {
    let tmp = path.with_extension("am.tmp");
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::AssetRecord;

    const USER: &str = "0123456789abcdef0123456789abcdef";

    fn rec(id: char, taken: &str) -> AssetRecord {
        AssetRecord {
            id: id.to_string().repeat(64),
            owner: Some(USER.into()),
            taken_at: Some(taken.into()),
            ..Default::default()
        }
    }

    fn open(dir: &Path) -> Catalog {
        Catalog::open_lazy(dir, b"test-actor-0001", 0).unwrap()
    }

    fn heads(cat: &Catalog, id: &DocId) -> Vec<u8> {
        cat.lock().unwrap().known_heads_bytes(id).unwrap()
    }

    #[test]
    fn a_restart_holds_unchanged_documents_unloaded_and_checks_the_rest() {
        let dir = std::env::temp_dir().join(format!("tessera-catalog-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let may = DocId::shard(USER, "2024-05").unwrap();
        let jan = DocId::shard(USER, "2023-01").unwrap();
        let docs = dir.join("docs");
        let file = |id: &DocId| docs.join(format!("{}.am", id.file_stem()));
        let (may_heads, jan_heads) = {
            let cat = open(&dir);
            assert_eq!(cat.open_stats(), OpenStats::default());
            let mut lib = cat.lock().unwrap();
            lib.upsert_assets(
                USER,
                &[
                    rec('a', "2024-05-03T10:00:00"),
                    rec('b', "2023-01-04T10:00:00"),
                ],
            )
            .unwrap();
            cat.persist(&mut lib).unwrap();
            drop(lib);
            cat.save_heads_index().unwrap();
            (heads(&cat, &may), heads(&cat, &jan))
        };
        let n = fs::read_dir(&docs)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("am".as_ref()))
            .count();
        assert!(n >= 3, "a root and two months: {n}");

        // Nothing changed: every document is held from the index, none decoded.
        let cat = open(&dir);
        assert_eq!(cat.open_stats().held, n);
        assert_eq!(cat.open_stats().checked, 0);
        {
            let mut lib = cat.lock().unwrap();
            assert!(!lib.is_loaded(&may) && !lib.is_loaded(&jan));
            assert_eq!(lib.known_heads_bytes(&may).unwrap(), may_heads);
            assert_eq!(lib.known_heads_bytes(&jan).unwrap(), jan_heads);
            // Read from its file when used.
            assert_eq!(lib.assets(&may).unwrap().len(), 1);
            // A change appended to May; the index is not written again (a crash, say).
            lib.upsert_assets(USER, &[rec('c', "2024-05-09T10:00:00")])
                .unwrap();
            cat.persist(&mut lib).unwrap();
        }
        let may_heads = heads(&cat, &may);
        drop(cat);

        // May's file no longer matches its entry: it alone (and the root it changed) is
        // checked; the change is there.
        let cat = open(&dir);
        let s = cat.open_stats();
        assert!(s.checked >= 1 && s.checked < n, "{s:?}");
        assert_eq!(s.held + s.checked, n);
        assert_eq!(heads(&cat, &may), may_heads);
        assert_eq!(cat.lock().unwrap().assets(&may).unwrap().len(), 2);
        drop(cat);

        // The reopen wrote the index: now everything is held again.
        let cat = open(&dir);
        assert_eq!(cat.open_stats().checked, 0);
        drop(cat);

        // A log appended to many times is compacted by the index's next write, not left to
        // grow until a restart that would no longer check it.
        let cat = open(&dir);
        for i in 0..40 {
            let mut lib = cat.lock().unwrap();
            lib.update_asset(USER, "2024-05", &"a".repeat(64), |r| {
                r.favorite = Some(i % 2 == 0)
            })
            .unwrap();
            cat.persist(&mut lib).unwrap();
        }
        let grown = fs::metadata(file(&may)).unwrap().len();
        cat.save_heads_index().unwrap();
        let compacted = fs::metadata(file(&may)).unwrap().len();
        assert!(compacted < grown, "{compacted} < {grown}");
        let may_heads = heads(&cat, &may);
        drop(cat);
        let cat = open(&dir);
        assert_eq!(cat.open_stats().checked, 0);
        assert_eq!(heads(&cat, &may), may_heads);
        assert_eq!(cat.lock().unwrap().assets(&may).unwrap().len(), 2);
        drop(cat);

        // A torn append (a crash mid-write) is seen, dropped and the file rewritten.
        let mut f = OpenOptions::new().append(true).open(file(&jan)).unwrap();
        f.write_all(&[0x85, 0x6f, 0x4a, 0x83, 1, 2, 3]).unwrap();
        drop(f);
        let cat = open(&dir);
        assert_eq!(cat.open_stats().checked, 1);
        assert_eq!(cat.open_stats().torn, 1);
        assert_eq!(heads(&cat, &jan), jan_heads);
        drop(cat);

        // A file changed in place (same length) is not believed: it is checked.
        let mut bytes = fs::read(file(&may)).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        fs::write(file(&may), &bytes).unwrap();
        let cat = open(&dir);
        assert_eq!(cat.open_stats().checked, 1);
        assert_eq!(cat.open_stats().held, n - 1);
        drop(cat);

        // A damaged index means checking everything, nothing worse.
        let mut idx = fs::read(docs.join(INDEX_FILE)).unwrap();
        idx[12] ^= 1;
        fs::write(docs.join(INDEX_FILE), &idx).unwrap();
        let cat = open(&dir);
        assert_eq!(cat.open_stats().held, 0);
        assert!(cat.open_stats().checked >= n - 1);
        assert_eq!(heads(&cat, &jan), jan_heads);
        drop(cat);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_index_round_trips_and_refuses_anything_damaged() {
        let mut entries = BTreeMap::new();
        entries.insert(
            DocId::shard(USER, "2024-05").unwrap(),
            Indexed {
                len: 1234,
                full: 1000,
                hash: [7; 32],
                heads: vec![9; 64],
            },
        );
        entries.insert(
            DocId::root(USER).unwrap(),
            Indexed {
                len: 1,
                full: 0,
                hash: [1; 32],
                heads: Vec::new(),
            },
        );
        let bytes = encode_index(&entries);
        let back = decode_index(&bytes).unwrap();
        assert_eq!(back.len(), 2);
        for (id, e) in &entries {
            assert_eq!(back.get(&id.file_stem()), Some(e));
        }
        for cut in [0, 8, 31, 32, bytes.len() - 1] {
            assert!(decode_index(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        for at in [0, 9, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(decode_index(&bad).is_none(), "flipped at {at}");
        }
    }
}
