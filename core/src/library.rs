//! A set of catalogue documents and the schema operations on them.
//!
//! Layout of the documents:
//! - root `u/<user>/root`: `{ "shard/<YYYY-MM>": { count, first, last } }` — the compact
//!   per-shard summary a timeline paints from without loading every shard;
//! - shard `u/<user>/m/<YYYY-MM>`: `{ "<blake3>": { field: scalar, ... } }`.
//!
//! Containers hang directly off the document root: two peers that concurrently create the same
//! nested map would otherwise produce two conflicting objects, and one side's content would
//! disappear behind the winner. Summaries are derived data: every peer recomputes the summary
//! of a shard that changed (locally or by sync), and equal values written concurrently converge.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};

use automerge::{
    transaction::Transactable, ActorId, AutoCommit, ChangeHash, ObjId, ObjType, ReadDoc,
    ScalarValue, ScalarValueRef, Value, ValueRef, ROOT,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map as JsonMap, Number, Value as Json};

use crate::{AssetRecord, DocId, DocIdError};

#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error(transparent)]
    DocId(#[from] DocIdError),
    #[error("document {doc}: {source}")]
    Automerge {
        doc: String,
        #[source]
        source: Box<automerge::AutomergeError>,
    },
    #[error("document {doc} has a malformed asset record {id}: {reason}")]
    Malformed {
        doc: String,
        id: String,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
}

const SHARD_PREFIX: &str = "shard/";
/// Root-document entries `dupok/<a>/<b>`: the user said these two are not duplicates.
const DUPOK_PREFIX: &str = "dupok/";
/// Root-document entry holding library settings (`trash_days`).
const SETTINGS_KEY: &str = "settings";
/// Trashed assets are purged after this many days unless the library says otherwise.
pub const DEFAULT_TRASH_DAYS: u32 = 30;

/// The scalar fields of a map entry, as JSON.
pub type Fields = JsonMap<String, Json>;

/// The per-month summary kept in the root document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSummary {
    pub month: String,
    pub count: u64,
    pub first: Option<String>,
    pub last: Option<String>,
}

/// Reads a document's saved bytes for a library that holds documents lazily (the node's
/// catalogue on disk). Errors are the caller's words, reported through [`Library::take_load_errors`].
pub type DocLoader = Box<dyn Fn(&DocId) -> Result<Vec<u8>, String> + Send + Sync>;

/// One document: loaded on first use when the library has a loader, and unloaded again by
/// [`Library::evict`] when it is clean.
struct Slot {
    /// Loaded for writing (or given to the library): changes go here.
    doc: Option<AutoCommit>,
    /// Loaded on demand by a read (`&self`); moved into `doc` by the first write.
    lazy: OnceLock<AutoCommit>,
    /// Where the next incremental save starts, when the document was (re)loaded from its saved
    /// bytes: automerge's own cursor then covers nothing, and would save everything again.
    saved: Mutex<Option<Vec<ChangeHash>>>,
    /// Saved size of the document (its resident size is a multiple of it).
    bytes: AtomicUsize,
    used: AtomicU64,
    /// The revision last written out (saved, or loaded from the saved bytes): a document
    /// whose revision moved since may hold unsaved changes and is never unloaded.
    saved_rev: AtomicU64,
    /// The document as received whole from a peer, at the revision it arrived with
    /// ([`Library::received_whole`]): the next full save returns these bytes instead of
    /// encoding the document again.
    received: Option<(u64, Vec<u8>)>,
    /// The heads it had when last unloaded ([`Library::known_heads`]).
    heads: Option<Vec<ChangeHash>>,
    /// Its last read through the loader failed: it reads as empty until read again.
    unreadable: std::sync::atomic::AtomicBool,
}

impl Slot {
    fn empty() -> Self {
        Self {
            doc: None,
            lazy: OnceLock::new(),
            saved: Mutex::new(None),
            bytes: AtomicUsize::new(0),
            used: AtomicU64::new(0),
            saved_rev: AtomicU64::new(0),
            received: None,
            heads: None,
            unreadable: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn loaded(doc: AutoCommit, bytes: usize) -> Self {
        let mut s = Self::empty();
        s.bytes.store(bytes, Relaxed);
        s.doc = Some(doc);
        s
    }

    fn get(&self) -> Option<&AutoCommit> {
        self.doc.as_ref().or_else(|| self.lazy.get())
    }

    fn unload(&mut self) {
        if let Some(d) = self.doc.as_mut().or_else(|| self.lazy.get_mut()) {
            self.heads = Some(d.get_heads());
        }
        self.doc = None;
        self.lazy = OnceLock::new();
        *self.saved.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.received = None;
    }
}

fn am_err(doc: &DocId) -> impl Fn(automerge::AutomergeError) -> LibraryError + '_ {
    move |source| LibraryError::Automerge {
        doc: doc.to_string(),
        source: Box::new(source),
    }
}

/// Reads a document through the loader (an empty document, and a recorded error, if it fails).
fn load_doc(
    id: &DocId,
    slot: &Slot,
    loader: Option<&DocLoader>,
    actor: &ActorId,
    errors: &Mutex<Vec<(DocId, String)>>,
) -> AutoCommit {
    let loaded = match loader {
        Some(load) => load(id).and_then(|bytes| {
            let (d, _) = load_longest_prefix(&bytes).map_err(|e| e.to_string())?;
            let mut d = d.with_actor(actor.clone());
            slot.bytes.store(bytes.len(), Relaxed);
            *slot.saved.lock().unwrap_or_else(|p| p.into_inner()) = Some(d.get_heads());
            Ok(d)
        }),
        None => Err("not loaded, and the library has no loader".into()),
    };
    slot.unreadable.store(loaded.is_err(), Relaxed);
    loaded.unwrap_or_else(|e| {
        errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id.clone(), e));
        AutoCommit::new().with_actor(actor.clone())
    })
}

/// automerge's storage chunk: magic, 4-byte checksum, type byte, uLEB128 length, data.
const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// Where each whole chunk at the start of `bytes` ends, stopping at the first one cut short or
/// not a chunk at all (what a crash leaves after an append: a prefix, or zeroed blocks).
fn chunk_ends(bytes: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut at = 0;
    while let Some(head) = bytes.get(at..at + 9) {
        if head[..4] != CHUNK_MAGIC {
            break;
        }
        let (mut len, mut shift, mut p) = (0u64, 0u32, at + 9);
        loop {
            let Some(&b) = bytes.get(p) else {
                return ends;
            };
            p += 1;
            if shift > 63 {
                return ends;
            }
            len |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let end = usize::try_from(len).ok().and_then(|l| p.checked_add(l));
        let Some(end) = end.filter(|&e| e <= bytes.len()) else {
            break;
        };
        ends.push(end);
        at = end;
    }
    ends
}

/// The document in `bytes`, or else in its longest prefix of whole chunks that loads, with the
/// length used. (automerge's own partial load keeps a leading document chunk but drops every
/// change chunk when the tail is torn: a log never compacted would load empty.)
fn load_longest_prefix(bytes: &[u8]) -> Result<(AutoCommit, usize), automerge::AutomergeError> {
    let whole = match AutoCommit::load(bytes) {
        Ok(d) => return Ok((d, bytes.len())),
        Err(e) => e,
    };
    // Prefixes up to the first bad chunk load and longer ones do not: the longest is found by
    // bisection, in a few loads however long the log.
    let ends: Vec<usize> = chunk_ends(bytes)
        .into_iter()
        .filter(|&e| e < bytes.len())
        .collect();
    let (mut lo, mut hi) = (0, ends.len());
    let mut best = None;
    while lo < hi {
        let mid = (lo + hi) / 2;
        match AutoCommit::load(&bytes[..ends[mid]]) {
            Ok(d) => {
                best = Some((d, ends[mid]));
                lo = mid + 1;
            }
            Err(_) => hi = mid,
        }
    }
    best.ok_or(whole)
}

/// All catalogue documents a peer holds, with the set changed since the caller last persisted.
///
/// With a [`DocLoader`] the library knows every document but keeps only those in use loaded:
/// reads load a document on demand, [`Library::evict`] unloads the least recently used clean
/// ones. Without one (the browser) every document is held, as loaded.
pub struct Library {
    actor: ActorId,
    docs: BTreeMap<DocId, Slot>,
    dirty: BTreeSet<DocId>,
    /// A number per document that changes whenever the document may have: a fresh value of
    /// `next_revision` at every load or mutable access. Views cached outside the library
    /// (the node's per-shard records and counts) are keyed by it. Unloading and reloading a
    /// clean document keeps it.
    revisions: BTreeMap<DocId, u64>,
    next_revision: u64,
    loader: Option<DocLoader>,
    /// Keep documents received whole for their next full save ([`Library::keep_received`]).
    keep_received: bool,
    tick: AtomicU64,
    load_errors: Mutex<Vec<(DocId, String)>>,
}

impl Library {
    /// `actor` identifies this peer's changes (stable per device/node; 16 random bytes is usual).
    pub fn new(actor: &[u8]) -> Self {
        Self {
            actor: ActorId::from(actor),
            docs: BTreeMap::new(),
            dirty: BTreeSet::new(),
            revisions: BTreeMap::new(),
            next_revision: 0,
            loader: None,
            keep_received: false,
            tick: AtomicU64::new(0),
            load_errors: Mutex::new(Vec::new()),
        }
    }

    /// Holds documents lazily from now on: evicted documents are read through `loader` when
    /// next used.
    pub fn set_loader(&mut self, loader: DocLoader) {
        self.loader = Some(loader);
    }

    fn touch(&mut self, id: &DocId) {
        self.next_revision += 1;
        self.revisions.insert(id.clone(), self.next_revision);
    }

    /// The document's revision: equal values (for this library) mean identical content. `None`
    /// when the document is not held.
    pub fn revision(&self, id: &DocId) -> Option<u64> {
        self.docs
            .contains_key(id)
            .then(|| self.revisions.get(id).copied().unwrap_or(0))
    }

    /// Whether the document is loaded now (not only known).
    pub fn is_loaded(&self, id: &DocId) -> bool {
        self.docs.get(id).is_some_and(|s| s.get().is_some())
    }

    /// The document's heads, without loading it: those of the loaded document, else those it
    /// had when it was last unloaded (only clean documents are unloaded, so they still hold).
    /// `None` when it is not held or has not been loaded since this library started.
    pub fn known_heads(&mut self, id: &DocId) -> Option<Vec<ChangeHash>> {
        let slot = self.docs.get_mut(id)?;
        match slot.doc.as_mut().or_else(|| slot.lazy.get_mut()) {
            Some(d) => Some(d.get_heads()),
            None => slot.heads.clone(),
        }
    }

    /// [`Library::known_heads`] as bytes (32 per head), for a peer that stores them next to the
    /// document's saved bytes and gives them back to [`Library::hold_unloaded`] when it starts.
    pub fn known_heads_bytes(&mut self, id: &DocId) -> Option<Vec<u8>> {
        self.known_heads(id).map(|h| crate::sync::encode_heads(&h))
    }

    /// Holds a document without loading it: known by the heads it was saved with (as
    /// [`Library::known_heads_bytes`] gave them) and its saved size, read through the loader
    /// when first used. A peer that keeps its documents and their heads on disk starts this
    /// way without decoding its catalogue, and a fresh sync session exchanges heads only.
    /// Returns `false` (and changes nothing) when the document is already held. Refused
    /// without a loader (nothing could read it) and for malformed heads.
    pub fn hold_unloaded(
        &mut self,
        id: DocId,
        heads: &[u8],
        saved_bytes: usize,
    ) -> Result<bool, LibraryError> {
        if self.loader.is_none() {
            return Err(LibraryError::Invalid(format!(
                "{id}: a document held unloaded needs a loader"
            )));
        }
        let heads = crate::sync::decode_heads(heads)
            .map_err(|e| LibraryError::Invalid(format!("{id}: {e}")))?;
        if self.docs.contains_key(&id) {
            return Ok(false);
        }
        self.touch(&id);
        let slot = Slot::empty();
        slot.bytes.store(saved_bytes, Relaxed);
        slot.saved_rev.store(self.next_revision, Relaxed);
        let mut slot = slot;
        slot.heads = Some(heads);
        self.docs.insert(id, slot);
        Ok(true)
    }

    /// Whether everything the document holds has been written out ([`Library::save`],
    /// [`Library::save_incremental`], or it was loaded or held from saved bytes and not changed
    /// since): its saved bytes then have exactly its [`Library::known_heads`]. `false` when it
    /// is not held.
    pub fn is_clean(&self, id: &DocId) -> bool {
        let rev = self.revisions.get(id).copied().unwrap_or(0);
        !self.dirty.contains(id)
            && self
                .docs
                .get(id)
                .is_some_and(|s| s.saved_rev.load(Relaxed) == rev)
    }

    /// Whether the document's last read through the loader failed, so that it reads as empty:
    /// nothing derived from it (counts, heads) should be kept beyond this run.
    pub fn unreadable(&self, id: &DocId) -> bool {
        self.docs
            .get(id)
            .is_some_and(|s| s.unreadable.load(Relaxed))
    }

    /// Documents that failed to load on demand since the last call (they read as empty).
    pub fn take_load_errors(&self) -> Vec<(DocId, String)> {
        std::mem::take(&mut *self.load_errors.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn get_doc(&self, id: &DocId) -> Option<&AutoCommit> {
        let slot = self.docs.get(id)?;
        self.tick.fetch_add(1, Relaxed);
        slot.used.store(self.tick.load(Relaxed), Relaxed);
        Some(match slot.get() {
            Some(d) => d,
            None => slot.lazy.get_or_init(|| {
                load_doc(
                    id,
                    slot,
                    self.loader.as_ref(),
                    &self.actor,
                    &self.load_errors,
                )
            }),
        })
    }

    fn get_doc_mut(&mut self, id: &DocId) -> Option<&mut AutoCommit> {
        self.tick.fetch_add(1, Relaxed);
        let Library {
            docs,
            loader,
            actor,
            load_errors,
            tick,
            ..
        } = self;
        let slot = docs.get_mut(id)?;
        slot.used.store(tick.load(Relaxed), Relaxed);
        if slot.doc.is_none() {
            let d = match slot.lazy.take() {
                Some(d) => d,
                None => load_doc(id, slot, loader.as_ref(), actor, load_errors),
            };
            slot.doc = Some(d);
        }
        slot.doc.as_mut()
    }

    /// Unloads the least recently used documents (never the one used last) that `may_unload`
    /// allows and that have no unsaved changes, until the saved size of what stays loaded is at most `budget_bytes`
    /// (documents `may_unload` refuses count too). Returns how many were unloaded. Without a
    /// loader nothing is unloaded (nothing could bring it back).
    pub fn evict(&mut self, budget_bytes: usize, may_unload: &dyn Fn(&DocId) -> bool) -> usize {
        if self.loader.is_none() {
            return 0;
        }
        let mut total = 0;
        let mut loaded: Vec<(u64, usize, DocId)> = Vec::new();
        for (id, s) in self.docs.iter().filter(|(_, s)| s.get().is_some()) {
            let bytes = s.bytes.load(Relaxed);
            total += bytes;
            if may_unload(id) {
                loaded.push((s.used.load(Relaxed), bytes, id.clone()));
            }
        }
        if total <= budget_bytes {
            return 0;
        }
        loaded.sort();
        // Of the documents that may go, the one used last stays whatever its size: it is the
        // one being worked on (a month receiving uploads), and reading it again for every
        // change would cost more than it saves.
        loaded.pop();
        let mut n = 0;
        for (_, bytes, id) in loaded {
            if total <= budget_bytes {
                break;
            }
            if !self.is_clean(&id) {
                continue;
            }
            if let Some(slot) = self.docs.get_mut(&id) {
                slot.unload();
                total -= bytes;
                n += 1;
            }
        }
        n
    }

    /// Loaded documents and their saved size in bytes.
    pub fn loaded_size(&self) -> (usize, usize) {
        self.docs
            .values()
            .filter(|s| s.get().is_some())
            .fold((0, 0), |(n, b), s| (n + 1, b + s.bytes.load(Relaxed)))
    }

    /// Loads a document from saved bytes (a full save followed by any incremental chunks).
    pub fn load(&mut self, id: DocId, bytes: &[u8]) -> Result<(), LibraryError> {
        let doc = AutoCommit::load(bytes)
            .map_err(am_err(&id))?
            .with_actor(self.actor.clone());
        self.touch(&id);
        let slot = Slot::loaded(doc, bytes.len());
        slot.saved_rev.store(self.next_revision, Relaxed);
        self.docs.insert(id, slot);
        Ok(())
    }

    /// Like [`Library::load`], but a torn tail (an append cut short by a crash) is dropped
    /// instead of failing the whole document: it loads the longest run of whole chunks that
    /// loads. Returns `true` if something was dropped: the caller should then rewrite its copy
    /// from [`Library::save`].
    pub fn load_recovering(&mut self, id: DocId, bytes: &[u8]) -> Result<bool, LibraryError> {
        let (doc, used) = load_longest_prefix(bytes).map_err(am_err(&id))?;
        let doc = doc.with_actor(self.actor.clone());
        self.touch(&id);
        let slot = Slot::loaded(doc, used);
        slot.saved_rev.store(self.next_revision, Relaxed);
        self.docs.insert(id, slot);
        Ok(used < bytes.len())
    }

    pub fn ids(&self) -> impl Iterator<Item = &DocId> {
        self.docs.keys()
    }

    /// Forgets a document (a device told to drop what it may no longer see); returns whether
    /// it was there.
    pub fn remove_doc(&mut self, id: &DocId) -> bool {
        self.dirty.remove(id);
        self.revisions.remove(id);
        self.docs.remove(id).is_some()
    }

    pub fn contains(&self, id: &DocId) -> bool {
        self.docs.contains_key(id)
    }

    /// Ids of documents changed since the last [`Library::take_dirty`].
    pub fn take_dirty(&mut self) -> Vec<DocId> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    pub fn mark_dirty(&mut self, id: &DocId) {
        self.dirty.insert(id.clone());
    }

    /// The document, created empty if missing.
    pub fn doc_mut(&mut self, id: &DocId) -> &mut AutoCommit {
        self.touch(id);
        if !self.docs.contains_key(id) {
            let mut slot = Slot::empty();
            slot.doc = Some(AutoCommit::new().with_actor(self.actor.clone()));
            self.docs.insert(id.clone(), slot);
        }
        self.get_doc_mut(id);
        let actor = self.actor.clone();
        let slot = self.docs.entry(id.clone()).or_insert_with(Slot::empty);
        slot.doc
            .get_or_insert_with(|| AutoCommit::new().with_actor(actor))
    }

    /// The document for the sync protocol (created empty if missing): loaded if needed, but
    /// its revision does not move, since generating or receiving a message that brings nothing
    /// changes no content. Whoever changes it through this calls [`Library::changed`].
    pub(crate) fn doc_for_sync(&mut self, id: &DocId) -> &mut AutoCommit {
        if !self.docs.contains_key(id) {
            return self.doc_mut(id);
        }
        self.get_doc_mut(id);
        let actor = self.actor.clone();
        let slot = self.docs.entry(id.clone()).or_insert_with(Slot::empty);
        slot.doc
            .get_or_insert_with(|| AutoCommit::new().with_actor(actor))
    }

    /// Records that a document's content changed through [`Library::doc_for_sync`]: a new
    /// revision, and it is saved next time.
    pub(crate) fn changed(&mut self, id: &DocId) {
        self.touch(id);
        self.dirty.insert(id.clone());
    }

    pub fn doc(&self, id: &DocId) -> Option<&AutoCommit> {
        self.get_doc(id)
    }

    /// Keeps each document received whole from a peer (a sync snapshot) as those bytes until
    /// its next full [`Library::save`], which then returns them instead of encoding the
    /// document again: for a device that stores whole documents (the browser). Off by default
    /// (a peer that never saves would hold the bytes twice).
    pub fn keep_received(&mut self, on: bool) {
        self.keep_received = on;
    }

    /// Records that the document is now exactly `bytes`, a saved document received whole.
    pub(crate) fn received_whole(&mut self, id: &DocId, bytes: Vec<u8>) {
        // Its saved size, for the memory budget of `evict`, before it is first saved here.
        if let Some(slot) = self.docs.get(id) {
            slot.bytes.store(bytes.len(), Relaxed);
        }
        if !self.keep_received {
            return;
        }
        let rev = self.revisions.get(id).copied().unwrap_or(0);
        if let Some(slot) = self.docs.get_mut(id) {
            slot.received = Some((rev, bytes));
        }
    }

    /// Full save of one document.
    pub fn save(&mut self, id: &DocId) -> Option<Vec<u8>> {
        let rev = self.revisions.get(id).copied().unwrap_or(0);
        let received = self
            .docs
            .get_mut(id)
            .and_then(|s| s.received.take())
            .and_then(|(at, bytes)| (at == rev).then_some(bytes));
        if let Some(bytes) = received {
            // Unchanged since it arrived whole: those bytes are its full save. The next
            // incremental save starts at its heads (automerge's own cursor did not move).
            let heads = self.get_doc_mut(id)?.get_heads();
            if let Some(slot) = self.docs.get(id) {
                *slot.saved.lock().unwrap_or_else(|p| p.into_inner()) = Some(heads);
                slot.bytes.store(bytes.len(), Relaxed);
                slot.saved_rev.store(rev, Relaxed);
            }
            return Some(bytes);
        }
        let d = self.get_doc_mut(id)?.save();
        if let Some(slot) = self.docs.get(id) {
            *slot.saved.lock().unwrap_or_else(|p| p.into_inner()) = None;
            slot.bytes.store(d.len(), Relaxed);
            slot.saved_rev.store(rev, Relaxed);
        }
        Some(d)
    }

    /// The whole document as saved bytes, for a peer that lacks it: what the loader reads
    /// when the document is not loaded (no load, no re-encoding: a lazily held node sends a
    /// month it has not loaded straight from its file; only clean documents are ever
    /// unloaded), a fresh full save of the loaded document otherwise. The document's saved
    /// state is untouched. `None` when it is not held.
    pub fn snapshot(&mut self, id: &DocId) -> Option<Vec<u8>> {
        let slot = self.docs.get(id)?;
        if let (None, Some(load)) = (slot.get(), self.loader.as_ref()) {
            if let Ok(bytes) = load(id) {
                return Some(bytes);
            }
        }
        Some(self.get_doc_mut(id)?.document().save())
    }

    /// Changes since the previous save/save_incremental of this document (or since it was
    /// loaded).
    pub fn save_incremental(&mut self, id: &DocId) -> Option<Vec<u8>> {
        let since = self
            .docs
            .get(id)?
            .saved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let doc = self.get_doc_mut(id)?;
        let out = match &since {
            Some(heads) => {
                let out = doc.save_after(heads);
                let now = (!out.is_empty()).then(|| doc.get_heads());
                if let (Some(now), Some(slot)) = (now, self.docs.get(id)) {
                    *slot.saved.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
                }
                out
            }
            None => doc.save_incremental(),
        };
        let rev = self.revisions.get(id).copied().unwrap_or(0);
        if let Some(slot) = self.docs.get(id) {
            slot.bytes
                .store(slot.bytes.load(Relaxed) + out.len(), Relaxed);
            slot.saved_rev.store(rev, Relaxed);
        }
        Some(out)
    }

    pub fn heads(&mut self, id: &DocId) -> Vec<String> {
        self.get_doc_mut(id)
            .map(|d| d.get_heads().iter().map(|h| h.to_string()).collect())
            .unwrap_or_default()
    }

    /// Inserts or updates asset records of `user` in one change per shard document, and
    /// refreshes the shard summaries in the root document.
    pub fn upsert_assets(
        &mut self,
        user: &str,
        records: &[AssetRecord],
    ) -> Result<(), LibraryError> {
        let mut by_month: BTreeMap<String, Vec<&AssetRecord>> = BTreeMap::new();
        for r in records {
            by_month.entry(r.month()).or_default().push(r);
        }
        for (month, recs) in by_month {
            let id = DocId::shard(user, &month)?;
            let doc = self.doc_mut(&id);
            for r in recs {
                let obj = ensure_map(doc, &ROOT, &r.id).map_err(am_err(&id))?;
                write_record(doc, &obj, r).map_err(am_err(&id))?;
            }
            doc.commit();
            self.dirty.insert(id.clone());
            self.refresh_summary(user, &id)?;
        }
        Ok(())
    }

    /// Applies `f` to an existing record (found in `month`'s shard) and writes what changed.
    /// Returns `false` if the record does not exist. A change of capture month moves the record.
    pub fn update_asset(
        &mut self,
        user: &str,
        month: &str,
        asset: &str,
        f: impl FnOnce(&mut AssetRecord),
    ) -> Result<bool, LibraryError> {
        let id = DocId::shard(user, month)?;
        let Some(mut rec) = self.asset_in(&id, asset)? else {
            return Ok(false);
        };
        f(&mut rec);
        if rec.month() != month {
            let doc = self.doc_mut(&id);
            doc.delete(ROOT, asset).map_err(am_err(&id))?;
            doc.commit();
            self.dirty.insert(id.clone());
            self.refresh_summary(user, &id)?;
        }
        self.upsert_assets(user, &[rec])?;
        Ok(true)
    }

    /// One record from a shard document.
    pub fn asset_in(
        &self,
        doc_id: &DocId,
        asset: &str,
    ) -> Result<Option<AssetRecord>, LibraryError> {
        let Some(doc) = self.get_doc(doc_id) else {
            return Ok(None);
        };
        let Some((Value::Object(ObjType::Map), obj)) =
            doc.get(ROOT, asset).map_err(am_err(doc_id))?
        else {
            return Ok(None);
        };
        read_record(doc, doc_id, asset, &obj).map(Some)
    }

    /// Every record of a shard document, newest capture time first.
    pub fn assets(&self, doc_id: &DocId) -> Result<Vec<AssetRecord>, LibraryError> {
        match self.get_doc(doc_id) {
            Some(doc) => assets_of(doc, doc_id),
            None => Ok(Vec::new()),
        }
    }

    /// [`Library::assets`] without loading the document for good when it is not loaded (a
    /// walk over every month reads each once and keeps none).
    pub fn assets_passing(&self, doc_id: &DocId) -> Result<Vec<AssetRecord>, LibraryError> {
        match self.docs.get(doc_id) {
            None => Ok(Vec::new()),
            Some(slot) if slot.get().is_some() || self.loader.is_none() => self.assets(doc_id),
            Some(slot) => {
                let doc = load_doc(
                    doc_id,
                    slot,
                    self.loader.as_ref(),
                    &self.actor,
                    &self.load_errors,
                );
                assets_of(&doc, doc_id)
            }
        }
    }

    /// Root-level map entries of a document whose key starts with `prefix`, in key order.
    /// Used for the ML and people documents (`a/<asset>`, `f/<asset>/<n>`, `p/<person>`...).
    pub fn entries(
        &self,
        doc_id: &DocId,
        prefix: &str,
    ) -> Result<Vec<(String, Fields)>, LibraryError> {
        let Some(doc) = self.get_doc(doc_id) else {
            return Ok(Vec::new());
        };
        entries_of(doc, doc_id, prefix)
    }

    /// [`Library::entries`] without loading the document for good when it is not loaded (a
    /// cache built from every month's ML document keeps what it read, not the documents).
    pub fn entries_passing(
        &self,
        doc_id: &DocId,
        prefix: &str,
    ) -> Result<Vec<(String, Fields)>, LibraryError> {
        match self.docs.get(doc_id) {
            None => Ok(Vec::new()),
            Some(slot) if slot.get().is_some() || self.loader.is_none() => {
                self.entries(doc_id, prefix)
            }
            Some(slot) => entries_of(
                &load_doc(
                    doc_id,
                    slot,
                    self.loader.as_ref(),
                    &self.actor,
                    &self.load_errors,
                ),
                doc_id,
                prefix,
            ),
        }
    }

    /// One root-level map entry of a document.
    pub fn entry(&self, doc_id: &DocId, key: &str) -> Result<Option<Fields>, LibraryError> {
        let Some(doc) = self.get_doc(doc_id) else {
            return Ok(None);
        };
        match doc.get(ROOT, key).map_err(am_err(doc_id))? {
            Some((Value::Object(ObjType::Map), obj)) => Ok(Some(read_fields(doc, &obj))),
            _ => Ok(None),
        }
    }

    /// Sets the given scalar fields of root-level entries (each created if missing), in one
    /// change. A `null` field is deleted; fields not mentioned are kept, so two writers (the ML
    /// node and a user) can own different fields of the same entry. Writing values that are
    /// already there records nothing. Returns whether the document changed.
    pub fn merge_entries(
        &mut self,
        doc_id: &DocId,
        items: &[(String, Fields)],
    ) -> Result<bool, LibraryError> {
        let doc = self.doc_mut(doc_id);
        let before = doc.get_heads();
        for (key, fields) in items {
            let obj = ensure_map(doc, &ROOT, key).map_err(am_err(doc_id))?;
            for (k, v) in fields {
                if v.is_null() {
                    if get_scalar(doc, &obj, k).is_some() {
                        doc.delete(&obj, k.as_str()).map_err(am_err(doc_id))?;
                    }
                } else if let Some(s) = json_to_scalar(v) {
                    put_if_changed(doc, &obj, k, s).map_err(am_err(doc_id))?;
                }
            }
        }
        doc.commit();
        let changed = doc.get_heads() != before;
        if changed {
            self.dirty.insert(doc_id.clone());
        }
        Ok(changed)
    }

    /// Deletes root-level entries (one change); returns whether the document changed.
    pub fn remove_entries(
        &mut self,
        doc_id: &DocId,
        keys: &[String],
    ) -> Result<bool, LibraryError> {
        if !self.docs.contains_key(doc_id) {
            return Ok(false);
        }
        self.touch(doc_id);
        let Some(doc) = self.get_doc_mut(doc_id) else {
            return Ok(false);
        };
        let before = doc.get_heads();
        for k in keys {
            if doc.get(ROOT, k.as_str()).map_err(am_err(doc_id))?.is_some() {
                doc.delete(ROOT, k.as_str()).map_err(am_err(doc_id))?;
            }
        }
        doc.commit();
        let changed = doc.get_heads() != before;
        if changed {
            self.dirty.insert(doc_id.clone());
        }
        Ok(changed)
    }

    /// Pairs of assets the user said are not duplicates (see [`crate::dupes::pair`]).
    pub fn rejected_duplicates(
        &self,
        user: &str,
    ) -> Result<BTreeSet<(String, String)>, LibraryError> {
        let root = DocId::root(user)?;
        Ok(self
            .entries(&root, DUPOK_PREFIX)?
            .into_iter()
            .filter_map(|(k, _)| {
                let rest = k.strip_prefix(DUPOK_PREFIX)?;
                let (a, b) = rest.split_once('/')?;
                Some(crate::dupes::pair(a, b))
            })
            .collect())
    }

    /// Remembers every pair of `ids` as "not duplicates" (`at`: RFC 3339 time of the decision).
    pub fn reject_duplicates(
        &mut self,
        user: &str,
        ids: &[String],
        at: &str,
    ) -> Result<bool, LibraryError> {
        let root = DocId::root(user)?;
        let mut items = Vec::new();
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                if a == b {
                    continue;
                }
                let (x, y) = crate::dupes::pair(a, b);
                let mut f = Fields::new();
                f.insert("at".into(), Json::String(at.to_owned()));
                items.push((format!("{DUPOK_PREFIX}{x}/{y}"), f));
            }
        }
        self.merge_entries(&root, &items)
    }

    /// Days a trashed asset stays restorable before it is purged (library setting, default 30).
    pub fn trash_days(&self, user: &str) -> u32 {
        DocId::root(user)
            .ok()
            .and_then(|root| self.entry(&root, SETTINGS_KEY).ok().flatten())
            .and_then(|f| f.get("trash_days").and_then(Json::as_u64))
            .map(|d| d.min(3650) as u32)
            .unwrap_or(DEFAULT_TRASH_DAYS)
    }

    pub fn set_trash_days(&mut self, user: &str, days: u32) -> Result<bool, LibraryError> {
        let root = DocId::root(user)?;
        let mut f = Fields::new();
        f.insert("trash_days".into(), Json::Number(Number::from(days)));
        self.merge_entries(&root, &[(SETTINGS_KEY.to_owned(), f)])
    }

    /// Shard summaries of `user`, newest month first (`undated` last).
    pub fn shards(&self, user: &str) -> Result<Vec<ShardSummary>, LibraryError> {
        let root = DocId::root(user)?;
        let Some(doc) = self.get_doc(&root) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for key in doc.keys(ROOT) {
            let Some(month) = key.strip_prefix(SHARD_PREFIX).map(str::to_owned) else {
                continue;
            };
            let Some((Value::Object(ObjType::Map), obj)) =
                doc.get(ROOT, &key).map_err(am_err(&root))?
            else {
                continue;
            };
            let count = match get_scalar(doc, &obj, "count") {
                Some(ScalarValue::Uint(n)) => n,
                Some(ScalarValue::Int(n)) => n.max(0) as u64,
                _ => 0,
            };
            let str_of = |k| match get_scalar(doc, &obj, k) {
                Some(ScalarValue::Str(s)) => Some(s.to_string()),
                _ => None,
            };
            out.push(ShardSummary {
                count,
                first: str_of("first"),
                last: str_of("last"),
                month,
            });
        }
        out.sort_by(|a, b| match (a.month.as_str(), b.month.as_str()) {
            ("undated", "undated") => std::cmp::Ordering::Equal,
            ("undated", _) => std::cmp::Ordering::Greater,
            (_, "undated") => std::cmp::Ordering::Less,
            (x, y) => y.cmp(x),
        });
        Ok(out)
    }

    /// Recomputes the root summaries of the given shard documents (call after sync changed them).
    pub fn refresh_summaries(&mut self, changed: &[DocId]) -> Result<(), LibraryError> {
        for id in changed {
            if id.month().is_some() {
                let user = id.user().to_owned();
                self.refresh_summary(&user, id)?;
            }
        }
        Ok(())
    }

    fn refresh_summary(&mut self, user: &str, shard: &DocId) -> Result<(), LibraryError> {
        let Some(month) = shard.month().map(str::to_owned) else {
            return Ok(());
        };
        // Only the capture times are read (not whole records): this runs after every upsert.
        let (count, first, last) = {
            let mut count = 0u64;
            let (mut first, mut last): (Option<String>, Option<String>) = (None, None);
            if let Some(doc) = self.get_doc(shard) {
                for key in doc.keys(ROOT) {
                    let Some((Value::Object(ObjType::Map), obj)) =
                        doc.get(ROOT, &key).map_err(am_err(shard))?
                    else {
                        continue;
                    };
                    count += 1;
                    if let Some(ScalarValue::Str(t)) = get_scalar(doc, &obj, "taken_at") {
                        let t = t.to_string();
                        if first.as_ref().is_none_or(|f| &t < f) {
                            first = Some(t.clone());
                        }
                        if last.as_ref().is_none_or(|l| &t > l) {
                            last = Some(t);
                        }
                    }
                }
            }
            (count, first, last)
        };
        let root = DocId::root(user)?;
        let doc = self.doc_mut(&root);
        let key = format!("{SHARD_PREFIX}{month}");
        if count == 0 {
            if doc
                .get(ROOT, key.as_str())
                .map_err(am_err(&root))?
                .is_some()
            {
                doc.delete(ROOT, key.as_str()).map_err(am_err(&root))?;
            }
        } else {
            let obj = ensure_map(doc, &ROOT, &key).map_err(am_err(&root))?;
            put_if_changed(doc, &obj, "count", ScalarValue::Uint(count)).map_err(am_err(&root))?;
            for (k, v) in [("first", first), ("last", last)] {
                match v {
                    Some(s) => put_if_changed(doc, &obj, k, ScalarValue::Str(s.into()))
                        .map_err(am_err(&root))?,
                    None => {
                        if get_scalar(doc, &obj, k).is_some() {
                            doc.delete(&obj, k).map_err(am_err(&root))?
                        }
                    }
                }
            }
        }
        doc.commit();
        self.dirty.insert(root);
        Ok(())
    }
}

fn ensure_map(
    doc: &mut AutoCommit,
    parent: &ObjId,
    key: &str,
) -> Result<ObjId, automerge::AutomergeError> {
    match doc.get(parent, key)? {
        Some((Value::Object(ObjType::Map), id)) => Ok(id),
        _ => doc.put_object(parent, key, ObjType::Map),
    }
}

fn get_scalar(doc: &AutoCommit, obj: &ObjId, key: &str) -> Option<ScalarValue> {
    match doc.get(obj, key) {
        Ok(Some((Value::Scalar(s), _))) => Some(s.into_owned()),
        _ => None,
    }
}

fn put_if_changed(
    doc: &mut AutoCommit,
    obj: &ObjId,
    key: &str,
    v: ScalarValue,
) -> Result<(), automerge::AutomergeError> {
    if get_scalar(doc, obj, key).as_ref() != Some(&v) {
        doc.put(obj, key, v)?;
    }
    Ok(())
}

fn json_to_scalar(v: &Json) -> Option<ScalarValue> {
    match v {
        Json::Bool(b) => Some(ScalarValue::Boolean(*b)),
        Json::Number(n) => n
            .as_u64()
            .map(ScalarValue::Uint)
            .or_else(|| n.as_i64().map(ScalarValue::Int))
            .or_else(|| n.as_f64().map(ScalarValue::F64)),
        Json::String(s) => Some(ScalarValue::Str(s.as_str().into())),
        _ => None,
    }
}

fn write_record(
    doc: &mut AutoCommit,
    obj: &ObjId,
    r: &AssetRecord,
) -> Result<(), automerge::AutomergeError> {
    let Ok(Json::Object(fields)) = serde_json::to_value(r) else {
        return Ok(());
    };
    // Fields absent from the record are removed (a cleared error, for example).
    let existing: Vec<String> = doc.keys(obj).collect();
    for k in existing {
        if !fields.contains_key(&k) {
            doc.delete(obj, k.as_str())?;
        }
    }
    for (k, v) in &fields {
        if let Some(s) = json_to_scalar(v) {
            put_if_changed(doc, obj, k, s)?;
        }
    }
    Ok(())
}

/// Every root-level key of a document with its fields (`None`: not a map), to compare two
/// versions of a document (see [`crate::album::check_contribution`]).
pub(crate) fn root_entries(doc: &AutoCommit) -> BTreeMap<String, Option<Fields>> {
    doc.keys(ROOT)
        .map(|k| {
            let v = match doc.get(ROOT, &k) {
                Ok(Some((Value::Object(ObjType::Map), obj))) => Some(read_fields(doc, &obj)),
                _ => None,
            };
            (k, v)
        })
        .collect()
}

/// Every record of a shard document, newest capture time first: one ordered pass over the root
/// map and each record's map (`map_range`), not a lookup per key — at 300k records this is what
/// every whole-library view costs.
fn assets_of(doc: &AutoCommit, doc_id: &DocId) -> Result<Vec<AssetRecord>, LibraryError> {
    let mut out = Vec::new();
    for item in doc.map_range(ROOT, ..) {
        if let ValueRef::Object(ObjType::Map) = item.value {
            let obj = item.id();
            out.push(read_record(doc, doc_id, &item.key, &obj)?);
        }
    }
    out.sort_by(|a, b| b.taken_at.cmp(&a.taken_at).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

fn entries_of(
    doc: &AutoCommit,
    doc_id: &DocId,
    prefix: &str,
) -> Result<Vec<(String, Fields)>, LibraryError> {
    let mut out = Vec::new();
    for key in doc.keys(ROOT).filter(|k| k.starts_with(prefix)) {
        if let Some((Value::Object(ObjType::Map), obj)) =
            doc.get(ROOT, &key).map_err(am_err(doc_id))?
        {
            out.push((key, read_fields(doc, &obj)));
        }
    }
    Ok(out)
}

fn read_fields(doc: &AutoCommit, obj: &ObjId) -> Fields {
    let mut m = JsonMap::new();
    for item in doc.map_range(obj, ..) {
        if let ValueRef::Scalar(s) = &item.value {
            m.insert(item.key.into_owned(), scalar_ref_to_json(s));
        }
    }
    m
}

/// A scalar as JSON (borrowed from `map_range`: the value is not copied first).
fn scalar_ref_to_json(v: &ScalarValueRef<'_>) -> Json {
    match v {
        ScalarValueRef::Boolean(b) => Json::Bool(*b),
        ScalarValueRef::Uint(n) => Json::Number((*n).into()),
        ScalarValueRef::Int(n) | ScalarValueRef::Timestamp(n) | ScalarValueRef::Counter(n) => {
            Json::Number((*n).into())
        }
        ScalarValueRef::F64(f) => Number::from_f64(*f).map(Json::Number).unwrap_or(Json::Null),
        ScalarValueRef::Str(s) => Json::String(s.to_string()),
        _ => Json::Null,
    }
}

fn read_record(
    doc: &AutoCommit,
    doc_id: &DocId,
    id: &str,
    obj: &ObjId,
) -> Result<AssetRecord, LibraryError> {
    let mut m = read_fields(doc, obj);
    m.insert("id".into(), Json::String(id.to_owned()));
    let m = Json::Object(m);
    match AssetRecord::deserialize(&m) {
        Ok(r) => Ok(r),
        // A peer wrote a field with the wrong type (a bug, another version, or malice): keep
        // every field that reads on its own and drop the rest, so one bad value never hides
        // the record — or fails the whole shard and everything that scans it.
        Err(first) => {
            let mut kept = serde_json::Map::new();
            kept.insert("id".into(), Json::String(id.to_owned()));
            let fields = match m {
                Json::Object(m) => m,
                _ => JsonMap::new(),
            };
            for (k, v) in fields {
                if k == "id" {
                    continue;
                }
                let mut one = kept.clone();
                one.insert(k.clone(), v.clone());
                if serde_json::from_value::<AssetRecord>(Json::Object(one)).is_ok() {
                    kept.insert(k, v);
                }
            }
            serde_json::from_value(Json::Object(kept)).map_err(|_| LibraryError::Malformed {
                doc: doc_id.to_string(),
                id: id.to_owned(),
                reason: first.to_string(),
            })
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn rec(id: &str, taken: Option<&str>) -> AssetRecord {
        AssetRecord {
            id: id.into(),
            taken_at: taken.map(Into::into),
            filename: Some(format!("{id}.jpg")),
            ..Default::default()
        }
    }

    /// A log of incremental saves cut anywhere (a crash mid-append), or followed by zeroed
    /// blocks, loads every whole chunk before the cut. It used to load empty when the log
    /// held no full save (automerge's partial load drops the change chunks).
    #[test]
    fn a_torn_log_keeps_every_whole_chunk() {
        let shard = DocId::shard("u1", "2024-05").unwrap();
        let mut lib = Library::new(&[1; 16]);
        let mut log = Vec::new();
        let mut heads_at = Vec::new();
        for i in 0..4 {
            let day = format!("2024-05-0{}T10:00:00", i + 1);
            lib.upsert_assets("u1", &[rec(&format!("a{i}"), Some(&day))])
                .unwrap();
            log.extend(lib.save_incremental(&shard).unwrap());
            heads_at.push((log.len(), lib.known_heads_bytes(&shard).unwrap()));
        }
        let (whole, heads) = heads_at.last().cloned().unwrap();
        let (before_last, heads_before) = heads_at[2].clone();
        let mut cuts: Vec<usize> = (before_last + 1..whole).collect();
        cuts.push(before_last);
        for cut in cuts {
            let mut peer = Library::new(&[2; 16]);
            let torn = peer.load_recovering(shard.clone(), &log[..cut]).unwrap();
            assert_eq!(torn, cut != before_last, "cut at {cut}");
            assert_eq!(
                peer.known_heads_bytes(&shard).unwrap(),
                heads_before,
                "cut at {cut}"
            );
            assert_eq!(peer.assets(&shard).unwrap().len(), 3);
        }
        let mut zeroed = log.clone();
        zeroed.extend([0u8; 4096]);
        let mut peer = Library::new(&[2; 16]);
        assert!(peer.load_recovering(shard.clone(), &zeroed).unwrap());
        assert_eq!(peer.known_heads_bytes(&shard).unwrap(), heads);
        // Nothing whole at all is an error, not an empty document.
        assert!(Library::new(&[2; 16])
            .load_recovering(shard.clone(), &log[..heads_at[0].0 - 1])
            .is_err());
        // Through the loader (a lazily held document read again) the same.
        let torn_log = log[..whole - 3].to_vec();
        let mut lazy = Library::new(&[3; 16]);
        lazy.set_loader(Box::new(move |_| Ok(torn_log.clone())));
        assert!(lazy
            .hold_unloaded(shard.clone(), &heads_before, 10)
            .unwrap());
        assert_eq!(lazy.assets(&shard).unwrap().len(), 3);
        assert!(lazy.take_load_errors().is_empty());
    }

    /// A synced record with a wrongly typed field keeps its other fields and does not fail
    /// the shard (it used to abort every scan of the shard, the purge sweep included).
    #[test]
    fn malformed_field_is_dropped_not_the_shard() {
        let mut lib = Library::new(&[1; 16]);
        lib.upsert_assets(
            "u1",
            &[
                rec("a1", Some("2024-05-01T10:00:00")),
                rec("a2", Some("2024-05-02T10:00:00")),
            ],
        )
        .unwrap();
        let shard = DocId::shard("u1", "2024-05").unwrap();
        {
            let doc = lib.doc_mut(&shard);
            let (_, obj) = doc.get(ROOT, "a1").unwrap().unwrap();
            doc.put(&obj, "width", "not a number").unwrap();
        }
        let all = lib.assets(&shard).unwrap();
        assert_eq!(all.len(), 2);
        let a1 = all.iter().find(|r| r.id == "a1").unwrap();
        assert_eq!(a1.width, None);
        assert_eq!(a1.filename.as_deref(), Some("a1.jpg"));
    }

    #[test]
    fn upsert_groups_by_month_and_summarises() {
        let mut lib = Library::new(&[1; 16]);
        lib.upsert_assets(
            "u1",
            &[
                rec("a", Some("2024-05-01T10:00:00+02:00")),
                rec("b", Some("2024-05-09T10:00:00")),
                rec("c", None),
            ],
        )
        .unwrap();
        let shards = lib.shards("u1").unwrap();
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[0].month, "2024-05");
        assert_eq!(shards[0].count, 2);
        assert_eq!(shards[0].last.as_deref(), Some("2024-05-09T10:00:00"));
        assert_eq!(shards[1].month, "undated");
        let may = lib.assets(&DocId::shard("u1", "2024-05").unwrap()).unwrap();
        assert_eq!(
            may.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["b", "a"]
        );
        assert_eq!(may[1], rec("a", Some("2024-05-01T10:00:00+02:00")));
    }

    #[test]
    fn update_moves_between_months_and_roundtrips_through_save() {
        let mut lib = Library::new(&[1; 16]);
        lib.upsert_assets("u1", &[rec("a", None)]).unwrap();
        assert!(lib
            .update_asset("u1", "undated", "a", |r| {
                r.taken_at = Some("2020-01-02T03:04:05".into());
                r.width = Some(640);
                r.lat = Some(48.5);
            })
            .unwrap());
        assert!(!lib.update_asset("u1", "undated", "zz", |_| {}).unwrap());
        let shards = lib.shards("u1").unwrap();
        assert_eq!(
            shards.iter().map(|s| s.month.as_str()).collect::<Vec<_>>(),
            ["2020-01"]
        );
        let id = DocId::shard("u1", "2020-01").unwrap();
        let bytes = lib.save(&id).unwrap();
        let mut other = Library::new(&[2; 16]);
        other.load(id.clone(), &bytes).unwrap();
        let a = other.asset_in(&id, "a").unwrap().unwrap();
        assert_eq!(a.width, Some(640));
        assert_eq!(a.lat, Some(48.5));
    }

    /// Saved documents "on disk" (in memory), shared with a library's loader.
    pub(crate) type Disk = std::sync::Arc<std::sync::Mutex<BTreeMap<DocId, Vec<u8>>>>;

    /// A library that reads its documents from a [`Disk`] on demand.
    pub(crate) fn lazy_library() -> (Library, Disk) {
        lazy_library_as(1)
    }

    /// [`lazy_library`] for another peer (`actor` names its changes).
    pub(crate) fn lazy_library_as(actor: u8) -> (Library, Disk) {
        let disk: Disk = Default::default();
        let mut lib = Library::new(&[actor; 16]);
        let d2 = disk.clone();
        lib.set_loader(Box::new(move |id| {
            d2.lock()
                .unwrap()
                .get(id)
                .cloned()
                .ok_or_else(|| format!("{id} is not on disk"))
        }));
        (lib, disk)
    }

    /// A library with a loader: documents are read on demand, unloaded when clean, read again
    /// with the same content and revision, and a write after a reload appends only itself.
    #[test]
    fn lazy_documents_unload_when_clean_and_reload_unchanged() {
        let (mut lib, disk) = lazy_library();
        lib.upsert_assets(
            "u1",
            &[
                rec("a", Some("2020-01-02T03:04:05")),
                rec("b", Some("2021-06-02T03:04:05")),
            ],
        )
        .unwrap();
        let jan = DocId::shard("u1", "2020-01").unwrap();
        let jun = DocId::shard("u1", "2021-06").unwrap();
        // Nothing is unloaded while it has unsaved changes.
        assert_eq!(lib.evict(0, &|_| true), 0);
        for id in lib.take_dirty() {
            let bytes = lib.save_incremental(&id).unwrap();
            disk.lock().unwrap().entry(id).or_default().extend(bytes);
        }
        let rev = lib.revision(&jan);
        let root = DocId::root("u1").unwrap();
        // June was used last: it stays, whatever the budget.
        lib.assets(&jun).unwrap();
        assert_eq!(lib.evict(0, &|id| *id != root), 1);
        assert!(!lib.is_loaded(&jan) && lib.is_loaded(&jun) && lib.is_loaded(&root));
        assert_eq!(lib.revision(&jan), rev, "unloading changes no content");
        // A read loads it again.
        assert_eq!(lib.assets(&jan).unwrap()[0].id, "a");
        assert!(lib.is_loaded(&jan));
        // A write after the reload saves only itself, and the file still loads whole.
        lib.evict(0, &|id| *id != root);
        assert!(lib
            .update_asset("u1", "2020-01", "a", |r| r.width = Some(9))
            .unwrap());
        assert_ne!(lib.revision(&jan), rev);
        let before = disk.lock().unwrap()[&jan].len();
        let chunk = lib.save_incremental(&jan).unwrap();
        assert!(
            !chunk.is_empty() && chunk.len() < before,
            "{} vs {before}",
            chunk.len()
        );
        disk.lock().unwrap().get_mut(&jan).unwrap().extend(chunk);
        lib.take_dirty();
        lib.assets(&jun).unwrap();
        lib.evict(0, &|id| *id != root);
        assert!(!lib.is_loaded(&jan), "read again from the appended file");
        assert_eq!(lib.asset_in(&jan, "a").unwrap().unwrap().width, Some(9));
        assert_eq!(lib.assets(&jun).unwrap().len(), 1);
        assert!(lib.take_load_errors().is_empty());
        // A document the loader cannot read reads as empty, and says so.
        disk.lock().unwrap().remove(&jun);
        lib.assets(&jan).unwrap();
        lib.evict(0, &|id| *id != root);
        assert!(
            !lib.is_loaded(&jun) && lib.is_loaded(&jan),
            "the last used stays"
        );
        assert!(lib.assets(&jun).unwrap().is_empty());
        assert_eq!(lib.take_load_errors().len(), 1);
    }
}
