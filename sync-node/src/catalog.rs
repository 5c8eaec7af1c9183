//! The node's copy of the catalogue: automerge documents on disk, and sync sessions with peers.
//!
//! Each document is `<data>/docs/<doc id with / as ~>.am`, an append-only log: a full save
//! followed by incremental chunks (automerge loads the concatenation). Every append is fsynced
//! before the change is acknowledged. Logs are compacted into one full save at start-up.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
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
}

impl Catalog {
    /// Opens (and compacts) every document under `<data>/docs`, keeping every one loaded.
    pub fn open(data: &Path, actor: &[u8]) -> Result<Self, CatalogError> {
        Self::open_lazy(data, actor, usize::MAX)
    }

    /// Opens (and compacts) every document under `<data>/docs`; month documents (shards and
    /// ML results) stay loaded up to about `memory_bytes` of resident memory and are read again
    /// from their files when next used.
    pub fn open_lazy(data: &Path, actor: &[u8], memory_bytes: usize) -> Result<Self, CatalogError> {
        let dir = data.join("docs");
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let budget_saved_bytes = memory_bytes / RESIDENT_PER_SAVED_BYTE;
        let mut lib = Library::new(actor);
        let from = dir.clone();
        lib.set_loader(Box::new(move |id: &DocId| {
            let path = from.join(format!("{}.am", id.file_stem()));
            fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))
        }));
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
                tracing::warn!(doc = %id, "dropped a torn tail (a write cut short by a crash); rewriting the document");
            }
            if let Some(full) = lib.save(&id) {
                if torn || (full.len() as u64) * 3 / 2 < bytes.len() as u64 {
                    write_atomic(&path, &full)?;
                }
            }
            // Checked and compacted: it need not stay loaded.
            lib.evict(budget_saved_bytes, &unloadable);
        }
        Ok(Self {
            dir,
            budget_saved_bytes,
            lib: Mutex::new(lib),
            rewrite: Mutex::new(Default::default()),
            sessions: Mutex::new(HashMap::new()),
            changes: tokio::sync::watch::channel(0).0,
        })
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
