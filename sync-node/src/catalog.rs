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

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CatalogError + '_ {
    move |source| CatalogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct Catalog {
    dir: PathBuf,
    lib: Mutex<Library>,
    sessions: Mutex<HashMap<(String, String), PeerSync>>,
    /// Bumped whenever a change was persisted (live sync sessions push it to their peers).
    changes: tokio::sync::watch::Sender<u64>,
}

impl Catalog {
    /// Opens (and compacts) every document under `<data>/docs`.
    pub fn open(data: &Path, actor: &[u8]) -> Result<Self, CatalogError> {
        let dir = data.join("docs");
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut lib = Library::new(actor);
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
        }
        Ok(Self {
            dir,
            lib: Mutex::new(lib),
            sessions: Mutex::new(HashMap::new()),
            changes: tokio::sync::watch::channel(0).0,
        })
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn lock(&self) -> Result<MutexGuard<'_, Library>, CatalogError> {
        self.lib.lock().map_err(|_| CatalogError::Poisoned)
    }

    /// Appends the changes of every dirty document to its log and fsyncs it.
    pub fn persist(&self, lib: &mut Library) -> Result<(), CatalogError> {
        let dirty = lib.take_dirty();
        let any = !dirty.is_empty();
        let res = self.persist_docs(lib, dirty);
        if any {
            self.changes.send_modify(|v| *v += 1);
        }
        res
    }

    fn persist_docs(&self, lib: &mut Library, dirty: Vec<DocId>) -> Result<(), CatalogError> {
        for id in dirty {
            let Some(chunk) = lib.save_incremental(&id) else {
                continue;
            };
            if chunk.is_empty() {
                continue;
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
        let mut sessions = self.sessions.lock().map_err(|_| CatalogError::Poisoned)?;
        let session = sessions
            .entry((user.to_owned(), env.peer.clone()))
            .or_default();
        let mut lib = self.lock()?;
        session.receive(&mut lib, env.docs, |d| d.user() == user)?;
        self.persist(&mut lib)?;
        let ids: Vec<DocId> = lib.ids().filter(|d| d.user() == user).cloned().collect();
        let out = session.generate(&mut lib, &ids);
        Ok(SyncEnvelope::new("node", out).encode())
    }
}

impl Catalog {
    /// One sync round with an ML node: it reads every user's documents and may write only the
    /// ML and people documents ([`DocId::is_ml_writable`]).
    pub fn sync_round_ml(&self, request: &[u8]) -> Result<Vec<u8>, CatalogError> {
        let env = SyncEnvelope::decode(request)?;
        let mut sessions = self.sessions.lock().map_err(|_| CatalogError::Poisoned)?;
        let session = sessions
            .entry(("*ml".to_owned(), env.peer.clone()))
            .or_default();
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
        let ids: Vec<DocId> = lib.ids().filter(|d| !d.is_household()).cloned().collect();
        let out = session.generate(&mut lib, &ids);
        Ok(SyncEnvelope::new("node", out).encode())
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
