//! Views of the catalogue that outlive one request: each shard's records, decoded, in an LRU
//! bounded by a memory budget, and each shard's timeline counts (tiny, kept for every shard).
//!
//! Both are keyed by the shard's [`Library::revision`], so a change — local or by sync — is
//! seen by the next request without any invalidation call. Reading a 1,250-record month from
//! automerge takes ≈15 ms; a whole 300k library ≈3.5 s: the cache turns repeated whole-library
//! queries (search, map, memories, Immich's timeline) into a walk over decoded records, and the
//! counts let `GET /api/timeline/buckets` answer without reading a record.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tessera_core::ml::{MlProgress, PackRef};
use tessera_core::search::{MlDocPeople, PeopleIndex, PersonCount};
use tessera_core::{AssetRecord, DocId, Library, LibraryError};

/// Which of Immich's timelines an asset is on (by `isTrashed` / `visibility`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Shelf {
    Timeline,
    Archive,
    Trash,
}

/// `YYYY-MM-01` of a capture time (Immich's bucket key).
pub fn bucket_of(r: &AssetRecord) -> Option<String> {
    r.taken_at
        .as_deref()
        .and_then(tessera_core::record::month_of)
        .map(|m| format!("{m}-01"))
}

/// A shard's assets that stand alone in a timeline (not purged, not a Live Photo's video),
/// counted by (bucket, owner, shelf, favourite).
#[derive(Debug, Default)]
pub struct ShardCounts {
    pub counts: BTreeMap<(String, String, Shelf, bool), u32>,
}

impl ShardCounts {
    fn of(records: &[AssetRecord]) -> Self {
        let mut counts = BTreeMap::new();
        for r in records.iter().filter(|r| r.shown_alone() && !r.is_purged()) {
            let Some(b) = bucket_of(r) else { continue };
            let shelf = if r.is_trashed() {
                Shelf::Trash
            } else if r.archived == Some(true) {
                Shelf::Archive
            } else {
                Shelf::Timeline
            };
            let key = (
                b,
                r.owner.clone().unwrap_or_default(),
                shelf,
                r.favorite == Some(true),
            );
            *counts.entry(key).or_insert(0) += 1;
        }
        Self { counts }
    }
}

/// A record's id: 32 bytes for a BLAKE3 hex id (every asset the node stores), the text
/// otherwise (a peer may write any key).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum SlimId {
    Hash([u8; 32]),
    Other(Box<str>),
}

/// The searched fields of one record, as indexes into its shard's string table.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SlimRow {
    id: SlimId,
    /// filename, make, model, lens, city, state, country, taken_at, mime, trashed_at
    /// ([`NONE`]: absent).
    s: [u32; 10],
    /// [`FAVORITE`] | [`ARCHIVED`] | [`TRASHED`] | [`PURGED`] | [`NOT_ALONE`] | [`UNPLACED`].
    flags: u8,
}

const NONE: u32 = u32::MAX;
const FAVORITE: u8 = 1;
const ARCHIVED: u8 = 2;
const TRASHED: u8 = 4;
const PURGED: u8 = 8;
const NOT_ALONE: u8 = 16;
/// A position without a place yet: the housekeeping sweep geocodes it.
const UNPLACED: u8 = 32;

/// One record of a [`SlimShard`] as search tests it ([`tessera_core::search::Searched`]),
/// reading the shard's strings where they lie: a search over 300k records builds no record
/// ([`SlimShard::record`] is the same fields as a record, for tests and callers that keep it).
pub struct SlimRecord<'a> {
    shard: &'a SlimShard,
    row: &'a SlimRow,
    id: String,
}

impl SlimRecord<'_> {
    fn get(&self, k: usize) -> Option<&str> {
        let at = self.row.s[k];
        (at != NONE).then(|| self.shard.string(at)).flatten()
    }

    fn flag(&self, bit: u8) -> bool {
        self.row.flags & bit != 0
    }

    /// The id, given up (a hit keeps it).
    pub fn into_id(self) -> String {
        self.id
    }
}

impl tessera_core::search::Searched for SlimRecord<'_> {
    fn id(&self) -> &str {
        &self.id
    }
    fn taken_at(&self) -> Option<&str> {
        self.get(7)
    }
    fn with_field<R>(
        &self,
        field: tessera_core::search::Field,
        f: impl FnOnce(Option<&str>) -> R,
    ) -> R {
        use tessera_core::search::Field;
        f(self.get(match field {
            Field::Filename => 0,
            Field::Make => 1,
            Field::Model => 2,
            Field::Lens => 3,
            Field::City => 4,
            Field::State => 5,
            Field::Country => 6,
        }))
    }
    fn is_video(&self) -> bool {
        self.get(8).is_some_and(|m| m.starts_with("video/"))
    }
    fn is_purged(&self) -> bool {
        self.flag(PURGED)
    }
    fn is_trashed(&self) -> bool {
        self.flag(TRASHED) && !self.flag(PURGED)
    }
    fn shown_alone(&self) -> bool {
        !self.flag(NOT_ALONE)
    }
    fn archived(&self) -> bool {
        self.flag(ARCHIVED)
    }
    fn favorite(&self) -> bool {
        self.flag(FAVORITE)
    }
}

/// A shard's search index: for every record, what search filters and free text look at, with
/// the shard's repeated strings (cameras, places) stored once. About 150 bytes a record
/// against ≈1.4 KB decoded, so it is kept for every shard and a search over 300k records
/// reads no document. It also says what the housekeeping sweep looks for (trash and its
/// dates, tombstones, positions without a place), so the sweep reads only months that have
/// any. Saved per shard between runs ([`ShardViews::with_index_dir`]).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct SlimShard {
    /// Every distinct string of the shard, end to end (one allocation, not one per string).
    text: String,
    /// (start, end) in `text` of string `i`.
    spans: Vec<(u32, u32)>,
    rows: Vec<SlimRow>,
}

impl SlimShard {
    fn of(records: &[AssetRecord]) -> Self {
        let mut text = String::new();
        let mut spans: Vec<(u32, u32)> = Vec::new();
        let mut seen: HashMap<&str, u32> = HashMap::new();
        let mut rows = Vec::with_capacity(records.len());
        for r in records {
            let mut s = [NONE; 10];
            let fields = [
                &r.filename,
                &r.make,
                &r.model,
                &r.lens,
                &r.city,
                &r.state,
                &r.country,
                &r.taken_at,
                &r.mime,
                &r.trashed_at,
            ];
            for (slot, v) in s.iter_mut().zip(fields) {
                if let Some(v) = v.as_deref() {
                    *slot = *seen.entry(v).or_insert_with(|| {
                        let start = text.len() as u32;
                        text.push_str(v);
                        spans.push((start, text.len() as u32));
                        (spans.len() - 1) as u32
                    });
                }
            }
            let mut flags = 0;
            for (on, bit) in [
                (r.favorite == Some(true), FAVORITE),
                (r.archived == Some(true), ARCHIVED),
                (r.trashed_at.is_some(), TRASHED),
                (r.purged_at.is_some(), PURGED),
                (!r.shown_alone(), NOT_ALONE),
                (crate::housekeeping::needs_place(r), UNPLACED),
            ] {
                if on {
                    flags |= bit;
                }
            }
            let id = match data_encoding::HEXLOWER.decode(r.id.as_bytes()) {
                Ok(b) if b.len() == 32 => {
                    let mut h = [0u8; 32];
                    h.copy_from_slice(&b);
                    SlimId::Hash(h)
                }
                _ => SlimId::Other(r.id.as_str().into()),
            };
            rows.push(SlimRow { id, s, flags });
        }
        text.shrink_to_fit();
        spans.shrink_to_fit();
        Self { text, spans, rows }
    }

    fn string(&self, at: u32) -> Option<&str> {
        let (a, b) = *self.spans.get(at as usize)?;
        self.text.get(a as usize..b as usize)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn any(&self, bit: u8) -> bool {
        self.rows.iter().any(|r| r.flags & bit != 0)
    }

    /// Whether any record is a purged tombstone (the sweep deletes their blobs here).
    pub fn has_tombstones(&self) -> bool {
        self.any(PURGED)
    }

    /// Whether any record has a position and no place yet.
    pub fn has_unplaced(&self) -> bool {
        self.any(UNPLACED)
    }

    /// What the housekeeping sweep asks of it.
    pub fn sweep_facts(&self) -> SweepFacts {
        SweepFacts {
            trashed_at: self.trashed_at().map(str::to_owned).collect(),
            tombstones: self.has_tombstones(),
            unplaced: self.has_unplaced(),
        }
    }

    /// When each trashed record was trashed (RFC 3339).
    pub fn trashed_at(&self) -> impl Iterator<Item = &str> + '_ {
        self.rows
            .iter()
            .filter(|r| r.flags & TRASHED != 0 && r.flags & PURGED == 0)
            .filter_map(|r| self.string(r.s[9]))
    }

    /// The record's id.
    pub fn id(&self, i: usize) -> String {
        match &self.rows[i].id {
            SlimId::Hash(h) => data_encoding::HEXLOWER.encode(h),
            SlimId::Other(s) => s.to_string(),
        }
    }

    /// Record `i` as search reads it, in place ([`SlimRecord`]): the id is the one string
    /// made.
    pub fn searched(&self, i: usize) -> SlimRecord<'_> {
        SlimRecord {
            shard: self,
            row: &self.rows[i],
            id: self.id(i),
        }
    }

    /// The record with only its searched fields (and its id): what `Filters` and free text
    /// test, so a search over the index decides exactly as over whole records.
    pub fn record(&self, i: usize) -> AssetRecord {
        let row = &self.rows[i];
        let get = |k: usize| {
            let at = row.s[k];
            (at != NONE)
                .then(|| self.string(at))
                .flatten()
                .map(str::to_owned)
        };
        let flag = |b: u8| row.flags & b != 0;
        AssetRecord {
            id: self.id(i),
            filename: get(0),
            make: get(1),
            model: get(2),
            lens: get(3),
            city: get(4),
            state: get(5),
            country: get(6),
            taken_at: get(7),
            mime: get(8),
            favorite: flag(FAVORITE).then_some(true),
            archived: flag(ARCHIVED).then_some(true),
            trashed_at: flag(TRASHED).then(|| get(9).unwrap_or_default()),
            purged_at: flag(PURGED).then(String::new),
            hidden: flag(NOT_ALONE).then_some(true),
            ..Default::default()
        }
    }

    fn heap_bytes(&self) -> usize {
        self.rows.capacity() * std::mem::size_of::<SlimRow>()
            + self.text.capacity()
            + self.spans.capacity() * 8
            + self
                .rows
                .iter()
                .map(|r| match &r.id {
                    SlimId::Other(s) => s.len(),
                    SlimId::Hash(_) => 0,
                })
                .sum::<usize>()
    }
}

/// The counts file's format (and counting rules): a file of another version is not taken.
const COUNTS_VERSION: u32 = 1;

#[derive(serde::Serialize, serde::Deserialize)]
struct CountsFile {
    version: u32,
    shards: Vec<SavedCounts>,
}

/// One shard's counts as saved between runs, at the heads they were counted at.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedCounts {
    doc: String,
    heads: String,
    counts: Vec<(String, String, Shelf, bool, u32)>,
}

struct Cached {
    revision: u64,
    records: Arc<Vec<AssetRecord>>,
    bytes: usize,
    used: u64,
}

/// A shard's counts and search index at a revision. Either may be missing when it was read
/// back from the last run (the counts from the counts file, the index from its own file):
/// the other is read or built when first needed.
struct Derived {
    revision: u64,
    counts: Option<Arc<ShardCounts>>,
    slim: Option<Arc<SlimShard>>,
    /// What the housekeeping sweep asks of the search index, kept when the index is dropped
    /// while idle ([`ShardViews::sweep_facts`]).
    facts: Option<Arc<SweepFacts>>,
    /// The search index at this revision is in its file (read from it, or dropped by
    /// [`ShardViews::shed_idle`] after it was saved): [`ShardViews::records`] leaves it to be
    /// read back instead of building and saving the same index again.
    saved: bool,
    /// Built from a read that failed (the document read as empty): never saved. Noted when
    /// built, since a later successful load clears the library's own flag without changing
    /// the revision.
    unreadable: bool,
}

/// What the housekeeping sweep asks of a shard's search index: when its trashed records were
/// trashed, whether it holds tombstones, and positions without a place.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepFacts {
    pub trashed_at: Vec<String>,
    pub tombstones: bool,
    pub unplaced: bool,
}

/// The search index file's format: a file of another version is not taken. Bump it whenever
/// what `SlimShard::of` derives from a record changes (its fields, `needs_place`,
/// `shown_alone`): an index is believed for as long as its shard's heads are unchanged.
const SLIM_VERSION: u32 = 1;

#[derive(Default)]
struct Inner {
    records: HashMap<DocId, Cached>,
    /// Per shard, at a revision: its counts and search index (kept for every shard).
    derived: HashMap<DocId, Derived>,
    /// Counts were computed since they were last saved.
    counts_changed: bool,
    /// Shards whose search index was built from their records since it was last saved.
    slims_unsaved: HashSet<DocId>,
    /// Search indexes read back from their files (not built from the document).
    slims_read: u64,
    /// Per shard, the revision at which the housekeeping sweep last found nothing left to do
    /// but wait for trash to expire ([`ShardViews::settle`]).
    settled: HashMap<DocId, u64>,
    bytes: usize,
    tick: u64,
    hits: u64,
    misses: u64,
}

/// Cache statistics (`GET /api/tessera/admin/status`-style reporting and the scale bench).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ViewStats {
    pub shards: usize,
    /// Search indexes read back from the last run's files.
    pub indexes_read: u64,
    /// Search indexes of every shard.
    pub index_bytes: usize,
    pub bytes: usize,
    pub budget: usize,
    pub hits: u64,
    pub misses: u64,
}

pub struct ShardViews {
    budget: usize,
    /// Where each shard's search index is saved between runs (`None`: not saved).
    index_dir: Option<PathBuf>,
    inner: Mutex<Inner>,
    people: Mutex<PeopleCache>,
    /// Per (ML document, pack key), at a revision: the pack it refers to.
    packs: Mutex<HashMap<(DocId, &'static str), PackAt>>,
    /// When a search index or a people index was last asked for ([`ShardViews::shed_idle`]).
    last_use: Mutex<std::time::Instant>,
    /// Per shard, at its revision and its ML document's: the month's ML progress.
    progress: Mutex<HashMap<DocId, (u64, u64, MlProgress)>>,
}

/// A pack reference as read at a document revision.
type PackAt = (u64, Option<PackRef>);

/// An ML document's part of the people index, by document.
type Parts = Vec<(DocId, Arc<MlDocPeople>)>;

/// Who is in which photo, per user ([`ShardViews::people_index`]).
#[derive(Default)]
struct PeopleCache {
    /// Per ML document, at a revision: its faces' people and read text.
    parts: HashMap<DocId, (u64, Arc<MlDocPeople>)>,
    /// Per user: the revisions of their ML documents and people document, and what was made
    /// from the parts at those revisions.
    whole: HashMap<String, Whole>,
    /// A part was read since the parts were last saved ([`ShardViews::people_to_save`]).
    changed: bool,
}

/// The people parts file: a checksum, then the version and, per ML document, its file stem,
/// the heads its part was read at and the part. Bump it whenever `MlDocPeople`'s layout or
/// what `Library::ml_doc_people` derives from a document changes (postcard does not describe
/// its layout, and a part is believed for as long as its document's heads are unchanged).
const PEOPLE_VERSION: u32 = 1;

/// What [`ShardViews::write_people`] writes: per ML document, its file stem, the heads its
/// part was read at, and the part.
pub struct PeopleSave(Vec<(String, Vec<u8>, Arc<MlDocPeople>)>);

struct Whole {
    key: Vec<(DocId, u64)>,
    /// Every document was read (one that failed to load reads as empty: what is made from it
    /// is answered but not kept, and the part is read again next time).
    complete: bool,
    index: Option<Arc<PeopleIndex>>,
    counts: Option<Arc<Vec<PersonCount>>>,
}

impl PeopleCache {
    /// The user's entry at the documents' current revisions (a stale one emptied), and the
    /// parts of their ML documents, each read again only if its document changed.
    fn at(&mut self, lib: &Library, user: &str) -> Result<(&mut Whole, Parts), LibraryError> {
        let docs = lib.ml_doc_ids(user);
        let people_doc = DocId::people(user)?;
        let revision = |d: &DocId| lib.revision(d).unwrap_or(0);
        let mut key: Vec<(DocId, u64)> = docs.iter().map(|d| (d.clone(), revision(d))).collect();
        key.push((people_doc.clone(), revision(&people_doc)));
        let fresh = self
            .whole
            .get(user)
            .is_some_and(|w| w.complete && w.key == key);
        let mut parts = Vec::new();
        if !fresh {
            let mut complete = !lib.unreadable(&people_doc);
            for (d, rev) in &key[..docs.len()] {
                let part = match self.parts.get(d) {
                    Some((r, p)) if r == rev => p.clone(),
                    _ => {
                        let p = Arc::new(lib.ml_doc_people(d)?);
                        if lib.unreadable(d) {
                            complete = false;
                        } else {
                            self.parts.insert(d.clone(), (*rev, p.clone()));
                            self.changed = true;
                        }
                        p
                    }
                };
                parts.push((d.clone(), part));
            }
            self.whole.insert(
                user.to_owned(),
                Whole {
                    key,
                    complete,
                    index: None,
                    counts: None,
                },
            );
            // Entries of users whose documents are all gone, and parts of documents gone,
            // go. (Not parts no entry names: those read back at start wait for their user.)
            self.whole
                .retain(|u, w| u == user || w.key.iter().any(|(d, _)| lib.revision(d).is_some()));
            let before = self.parts.len();
            self.parts.retain(|d, _| lib.revision(d).is_some());
            self.changed |= self.parts.len() != before;
        } else {
            for (d, _) in &key[..docs.len()] {
                if let Some((_, p)) = self.parts.get(d) {
                    parts.push((d.clone(), p.clone()));
                }
            }
        }
        let whole = self
            .whole
            .get_mut(user)
            .ok_or_else(|| LibraryError::Malformed {
                doc: people_doc.to_string(),
                id: String::new(),
                reason: "people cache entry vanished".into(),
            })?;
        Ok((whole, parts))
    }
}

/// Roughly what a decoded record holds: the struct plus its strings (a JSON length is a
/// slight overestimate of the heap, which suits a budget).
fn approx_bytes(r: &AssetRecord) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, r);
    std::mem::size_of::<AssetRecord>() + c.0
}

impl ShardViews {
    /// `budget_bytes` bounds the decoded records kept (0 keeps none; counts are always kept).
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            budget: budget_bytes,
            index_dir: None,
            inner: Mutex::new(Inner::default()),
            people: Mutex::default(),
            packs: Mutex::default(),
            last_use: Mutex::new(std::time::Instant::now()),
            progress: Mutex::default(),
        }
    }

    /// The pack an ML document refers to under `key` (`pack/clip`, `pack/face`), read from
    /// the document only when it changed: a smart search asks every month's, and reading
    /// them loaded every month's ML document again (5 s at 300k photos).
    pub fn pack_ref(
        &self,
        lib: &Library,
        doc: &DocId,
        key: &'static str,
    ) -> Result<Option<PackRef>, LibraryError> {
        let rev = lib.revision(doc).unwrap_or(0);
        let mut c = self.packs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((r, p)) = c.get(&(doc.clone(), key)) {
            if *r == rev {
                return Ok(p.clone());
            }
        }
        // Read without keeping the document loaded (the reference is what is kept).
        let p = lib
            .entries_passing(doc, key)?
            .into_iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, m)| serde_json::from_value(serde_json::Value::Object(m)).ok());
        // Documents gone go; a document that failed to load is read again next time.
        c.retain(|(d, _), _| lib.revision(d).is_some());
        if !lib.unreadable(doc) {
            c.insert((doc.clone(), key), (rev, p.clone()));
        }
        Ok(p)
    }

    /// How far the ML node got with `user`'s library ([`Library::ml_progress`]), each month
    /// counted again only when its shard or its ML document changed: the PWA and the ML test
    /// poll it, and counting 300k photos held the catalogue for seconds per call.
    pub fn ml_progress(&self, lib: &Library, user: &str) -> Result<MlProgress, LibraryError> {
        let mut total = MlProgress::default();
        let mut seen = HashSet::new();
        for s in lib.shards(user)? {
            let shard = DocId::shard(user, &s.month)?;
            let ml = DocId::ml(user, &s.month)?;
            let at = (
                lib.revision(&shard).unwrap_or(0),
                lib.revision(&ml).unwrap_or(0),
            );
            let cached = self
                .progress
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&shard)
                .filter(|(a, b, _)| (*a, *b) == at)
                .map(|(_, _, p)| *p);
            let p = match cached {
                Some(p) => p,
                None => {
                    let records = self.records(lib, &shard)?;
                    let p = lib.ml_progress_month(
                        user,
                        &s.month,
                        records.iter().map(|r| (r.id.as_str(), r.preview.is_some())),
                    )?;
                    // What a failed read gave is not kept.
                    if !lib.unreadable(&shard) && !lib.unreadable(&ml) {
                        self.progress
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(shard.clone(), (at.0, at.1, p));
                    }
                    p
                }
            };
            total.add(&p);
            seen.insert(shard);
        }
        // Months of this user gone (purged) go.
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|d, _| d.user() != user || seen.contains(d));
        Ok(total)
    }

    /// `user`'s [`PeopleIndex`] (who is in which photo, text read in photos), kept while none
    /// of their ML documents nor their people document changed; when one did, only the ML
    /// documents that changed are read again (at 300k photos and 100k faces, reading every
    /// month's faces took 5 s per search).
    pub fn people_index(
        &self,
        lib: &Library,
        user: &str,
    ) -> Result<Arc<PeopleIndex>, LibraryError> {
        self.used();
        let mut c = self.people.lock().unwrap_or_else(|p| p.into_inner());
        let (whole, parts) = c.at(lib, user)?;
        if let Some(i) = &whole.index {
            return Ok(i.clone());
        }
        let i = Arc::new(lib.people_index_of(user, parts.iter().map(|(_, p)| &**p))?);
        if whole.complete {
            whole.index = Some(i.clone());
        }
        Ok(i)
    }

    /// `user`'s people with faces and their counts (Immich's people list), kept and made
    /// again like [`ShardViews::people_index`].
    pub fn people_counts(
        &self,
        lib: &Library,
        user: &str,
    ) -> Result<Arc<Vec<PersonCount>>, LibraryError> {
        self.used();
        let mut c = self.people.lock().unwrap_or_else(|p| p.into_inner());
        let (whole, parts) = c.at(lib, user)?;
        if let Some(v) = &whole.counts {
            return Ok(v.clone());
        }
        let v = Arc::new(lib.people_counts_of(user, parts.iter().map(|(d, p)| (d, &**p)))?);
        if whole.complete {
            whole.counts = Some(v.clone());
        }
        Ok(v)
    }

    fn used(&self) {
        *self.last_use.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
    }

    /// When no request asked for a search index, a people index or a month's records for
    /// `idle` (the housekeeping sweep's facts do not count), drops what is
    /// read back quickly when next asked: every shard's search index (saved in its file: 30 MB
    /// at 300k photos, read back in about 0.3 s), the decoded records kept, and each user's
    /// people index and counts (made again from the parts kept). An index not saved yet stays.
    /// Returns the bytes of search indexes dropped.
    pub fn shed_idle(&self, idle: std::time::Duration) -> usize {
        if self
            .last_use
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
            < idle
        {
            return 0;
        }
        let mut freed = 0;
        {
            let mut inner = self.inner();
            let Inner {
                derived,
                slims_unsaved,
                records,
                bytes,
                ..
            } = &mut *inner;
            if self.index_dir.is_some() {
                for (id, d) in derived.iter_mut() {
                    if !slims_unsaved.contains(id) {
                        if let Some(s) = d.slim.take() {
                            freed += s.heap_bytes();
                            d.saved = true;
                        }
                    }
                }
            }
            records.clear();
            *bytes = 0;
        }
        self.people
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .whole
            .clear();
        freed
    }

    /// Bytes held by the people cache's parts (statistics).
    pub fn people_bytes(&self) -> usize {
        let c = self.people.lock().unwrap_or_else(|p| p.into_inner());
        c.parts.values().map(|(_, p)| p.bytes()).sum()
    }

    /// The people parts to save when any was read since the last call (`None`: nothing to
    /// write), each with the heads it was read at. Called holding the library, so heads and
    /// revisions agree; [`ShardViews::write_people`] encodes and writes without it.
    pub fn people_to_save(&self, lib: &mut Library) -> Option<PeopleSave> {
        let entries: Vec<(DocId, u64, Arc<MlDocPeople>)> = {
            let mut c = self.people.lock().unwrap_or_else(|p| p.into_inner());
            if !std::mem::take(&mut c.changed) {
                return None;
            }
            c.parts
                .iter()
                .map(|(d, (r, p))| (d.clone(), *r, p.clone()))
                .collect()
        };
        let mut out = Vec::with_capacity(entries.len());
        for (id, rev, part) in entries {
            // Read from what the document held then: changed since, it is read again.
            if lib.revision(&id) != Some(rev) || lib.unreadable(&id) {
                continue;
            }
            if let Some(heads) = lib.known_heads_bytes(&id) {
                out.push((id.file_stem(), heads, part));
            }
        }
        Some(PeopleSave(out))
    }

    /// Writes what [`ShardViews::people_to_save`] gave to `path` (replaced atomically; not
    /// synced: a torn file fails its checksum and the parts are read from the documents
    /// again). On failure the parts are written again at the next save.
    pub fn write_people(&self, path: &Path, save: PeopleSave) -> std::io::Result<()> {
        let parts: Vec<(&str, &[u8], &MlDocPeople)> = save
            .0
            .iter()
            .map(|(s, h, p)| (s.as_str(), h.as_slice(), &**p))
            .collect();
        let written = postcard::to_allocvec(&(PEOPLE_VERSION, parts))
            .map_err(std::io::Error::other)
            .and_then(|payload| {
                let tmp = path.with_extension("tmp");
                let mut body = blake3::hash(&payload).as_bytes().to_vec();
                body.extend_from_slice(&payload);
                std::fs::write(&tmp, &body)?;
                std::fs::rename(&tmp, path)
            });
        if written.is_err() {
            self.people
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .changed = true;
        }
        written
    }

    /// Takes back the people parts [`ShardViews::write_people`] saved, for every ML document
    /// whose heads are still those its part was read at: the first people list, search or
    /// timeline after a start reads none of the ML documents those cover (5–6 s at 300k
    /// photos). A missing, damaged or other version's file is nothing worse than no parts.
    /// Returns how many parts were taken.
    pub fn load_people(&self, lib: &mut Library, path: &Path) -> usize {
        let Ok(body) = std::fs::read(path) else {
            return 0;
        };
        let parsed = body
            .split_at_checked(32)
            .filter(|(sum, payload)| blake3::hash(payload).as_bytes() == *sum)
            .and_then(|(_, payload)| {
                postcard::from_bytes::<(u32, Vec<(String, Vec<u8>, MlDocPeople)>)>(payload).ok()
            })
            .filter(|(v, _)| *v == PEOPLE_VERSION);
        let Some((_, saved)) = parsed else {
            tracing::warn!(path = %path.display(), "the saved people parts are damaged or of another version; reading the ML documents again");
            return 0;
        };
        let mut c = self.people.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for (stem, heads, part) in saved {
            let Ok(id) = DocId::from_file_stem(&stem) else {
                continue;
            };
            let (Some(rev), Some(now)) = (lib.revision(&id), lib.known_heads_bytes(&id)) else {
                continue;
            };
            if now == heads && !lib.unreadable(&id) {
                c.parts.insert(id, (rev, Arc::new(part)));
                n += 1;
            }
        }
        n
    }

    /// Saves each shard's search index in `dir` ([`ShardViews::encode_slims`]) and reads it
    /// back when the shard's heads are those it was built at, instead of decoding the month.
    pub fn with_index_dir(mut self, dir: PathBuf) -> Self {
        self.index_dir = Some(dir);
        self
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The cache holds derived data only: after a panic elsewhere it is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shard's records (newest first), decoded once per revision.
    pub fn records(
        &self,
        lib: &Library,
        doc: &DocId,
    ) -> Result<Arc<Vec<AssetRecord>>, LibraryError> {
        self.used();
        let Some(revision) = lib.revision(doc) else {
            return Ok(Arc::new(Vec::new()));
        };
        let mut inner = self.inner();
        inner.tick += 1;
        let tick = inner.tick;
        // What a failed read gave (nothing) is read again next time, not kept.
        let failed = inner
            .derived
            .get(doc)
            .is_some_and(|d| d.revision == revision && d.unreadable);
        if let Some(c) = inner.records.get_mut(doc).filter(|_| !failed) {
            if c.revision == revision {
                c.used = tick;
                let records = c.records.clone();
                inner.hits += 1;
                return Ok(records);
            }
        }
        inner.misses += 1;
        if let Some(old) = inner.records.remove(doc) {
            inner.bytes -= old.bytes;
        }
        let records = Arc::new(lib.assets_passing(doc)?);
        let unreadable = lib.unreadable(doc);
        // An index already there at this revision (read back from its file, built and
        // waiting to be saved, or in its file after an idle shed) is kept or left to be read
        // back: building it would only write the same file again. What the sweep asked of it
        // is kept too.
        let (slim, facts, saved) = match inner.derived.get(doc) {
            Some(d) if d.revision == revision && !d.unreadable && !unreadable => {
                (d.slim.clone(), d.facts.clone(), d.saved)
            }
            _ => (None, None, false),
        };
        let slim = match slim {
            Some(s) => Some(s),
            None if saved => None,
            None => {
                if !unreadable {
                    inner.slims_unsaved.insert(doc.clone());
                }
                Some(Arc::new(SlimShard::of(&records)))
            }
        };
        inner.derived.insert(
            doc.clone(),
            Derived {
                revision,
                counts: Some(Arc::new(ShardCounts::of(&records))),
                slim,
                facts,
                saved,
                unreadable,
            },
        );
        inner.counts_changed = true;
        let bytes: usize = records.iter().map(approx_bytes).sum();
        if bytes <= self.budget {
            inner.bytes += bytes;
            inner.records.insert(
                doc.clone(),
                Cached {
                    revision,
                    records: records.clone(),
                    bytes,
                    used: tick,
                },
            );
            while inner.bytes > self.budget {
                let Some(victim) = inner
                    .records
                    .iter()
                    .filter(|(id, _)| *id != doc)
                    .min_by_key(|(_, c)| c.used)
                    .map(|(id, _)| id.clone())
                else {
                    break;
                };
                if let Some(old) = inner.records.remove(&victim) {
                    inner.bytes -= old.bytes;
                }
            }
        }
        Ok(records)
    }

    /// The shard's timeline counts, computed once per revision.
    pub fn counts(&self, lib: &Library, doc: &DocId) -> Result<Arc<ShardCounts>, LibraryError> {
        let Some(revision) = lib.revision(doc) else {
            return Ok(Default::default());
        };
        let current = |inner: &Inner| {
            inner
                .derived
                .get(doc)
                .filter(|d| d.revision == revision && !d.unreadable)
                .and_then(|d| d.counts.clone())
        };
        if let Some(c) = current(&self.inner()) {
            return Ok(c);
        }
        self.records(lib, doc)?;
        Ok(current(&self.inner()).unwrap_or_default())
    }

    /// The shard's search index, once per revision (kept for every shard): read back from its
    /// file when that was saved at the shard's current heads, else built from its records.
    pub fn slim(&self, lib: &mut Library, doc: &DocId) -> Result<Arc<SlimShard>, LibraryError> {
        self.used();
        let Some(revision) = lib.revision(doc) else {
            return Ok(Default::default());
        };
        self.slim_at(lib, doc, revision)
    }

    fn slim_at(
        &self,
        lib: &mut Library,
        doc: &DocId,
        revision: u64,
    ) -> Result<Arc<SlimShard>, LibraryError> {
        let current = |inner: &Inner| {
            inner
                .derived
                .get(doc)
                .filter(|d| d.revision == revision && !d.unreadable)
                .and_then(|d| d.slim.clone())
        };
        if let Some(s) = current(&self.inner()) {
            return Ok(s);
        }
        if let Some(slim) = self.read_slim(lib, doc) {
            let slim = Arc::new(slim);
            let mut inner = self.inner();
            inner.slims_read += 1;
            match inner.derived.get_mut(doc) {
                Some(d) if d.revision == revision => {
                    d.slim = Some(slim.clone());
                    d.saved = true;
                }
                _ => {
                    inner.derived.insert(
                        doc.clone(),
                        Derived {
                            revision,
                            counts: None,
                            slim: Some(slim.clone()),
                            facts: None,
                            saved: true,
                            unreadable: false,
                        },
                    );
                }
            }
            return Ok(slim);
        }
        // Not in its file after all (removed, damaged): built from the records, and saved.
        if let Some(d) = self.inner().derived.get_mut(doc) {
            d.saved = false;
        }
        self.records(lib, doc)?;
        Ok(current(&self.inner()).unwrap_or_default())
    }

    /// What the housekeeping sweep asks of the shard's search index, kept per revision even
    /// while the index itself is dropped (idle): the sweep does not bring 300k photos' indexes
    /// back into memory, nor count as a use of them.
    pub fn sweep_facts(
        &self,
        lib: &mut Library,
        doc: &DocId,
    ) -> Result<Arc<SweepFacts>, LibraryError> {
        let Some(revision) = lib.revision(doc) else {
            return Ok(Default::default());
        };
        fn at<'a>(
            inner: &'a mut Inner,
            doc: &DocId,
            revision: u64,
        ) -> Option<&'a mut Option<Arc<SweepFacts>>> {
            inner
                .derived
                .get_mut(doc)
                .filter(|d| d.revision == revision && !d.unreadable)
                .map(|d| &mut d.facts)
        }
        if let Some(Some(f)) = at(&mut self.inner(), doc, revision) {
            return Ok(f.clone());
        }
        let facts = Arc::new(self.slim_at(lib, doc, revision)?.sweep_facts());
        if let Some(f) = at(&mut self.inner(), doc, revision) {
            *f = Some(facts.clone());
        }
        Ok(facts)
    }

    fn slim_path(&self, doc: &DocId) -> Option<PathBuf> {
        Some(
            self.index_dir
                .as_ref()?
                .join(format!("{}.slim", doc.file_stem())),
        )
    }

    /// The shard's saved search index if it was built at the shard's current heads. A missing,
    /// damaged or older file is nothing worse than building the index again.
    fn read_slim(&self, lib: &mut Library, doc: &DocId) -> Option<SlimShard> {
        let path = self.slim_path(doc)?;
        let body = std::fs::read(&path).ok()?;
        let heads = lib.known_heads_bytes(doc)?;
        let decoded = decode_slim(&body, &heads);
        if let Err(true) = decoded {
            tracing::warn!(path = %path.display(), "a saved search index is damaged or of another version; building it again");
        }
        decoded.ok()
    }

    /// Up to `max` search indexes built since they were last saved, encoded with the heads
    /// they were built at: `(doc, Some(file bytes))`, or `(doc, None)` for a shard that is
    /// gone (its file is removed). Called holding the library, so heads and revisions agree;
    /// [`ShardViews::write_slims`] writes them without it. Empty when nothing is left to save.
    pub fn encode_slims(&self, lib: &mut Library, max: usize) -> Vec<(DocId, Option<Vec<u8>>)> {
        if self.index_dir.is_none() {
            return Vec::new();
        }
        let mut out = Vec::new();
        loop {
            let next = {
                let mut inner = self.inner();
                let Some(doc) = inner.slims_unsaved.iter().next().cloned() else {
                    break;
                };
                inner.slims_unsaved.remove(&doc);
                let d = inner
                    .derived
                    .get(&doc)
                    .filter(|d| !d.unreadable)
                    .map(|d| (d.revision, d.slim.clone()));
                (doc, d)
            };
            let (doc, derived) = next;
            match (lib.revision(&doc), derived) {
                (None, _) => out.push((doc, None)),
                // Built from what was read: an unreadable document read as empty, and that
                // must not outlive this run. Changed since: saved when built again.
                (Some(rev), Some((built, Some(slim)))) if rev == built && !lib.unreadable(&doc) => {
                    if let Some(heads) = lib.known_heads_bytes(&doc) {
                        if let Some(body) = encode_slim(&heads, &slim) {
                            out.push((doc, Some(body)));
                        }
                    }
                }
                _ => {}
            }
            if out.len() >= max {
                break;
            }
        }
        out
    }

    /// Writes (or removes) what [`ShardViews::encode_slims`] made, each file replaced
    /// atomically. Not synced: a file torn by a crash fails its checksum and the index is built
    /// again. A shard whose write failed is written again at the next save.
    pub fn write_slims(&self, files: Vec<(DocId, Option<Vec<u8>>)>) -> std::io::Result<usize> {
        let Some(dir) = &self.index_dir else {
            return Ok(0);
        };
        std::fs::create_dir_all(dir)?;
        let mut first_error = None;
        let mut written = 0;
        for (doc, body) in files {
            let Some(path) = self.slim_path(&doc) else {
                continue;
            };
            let res = match body {
                None => match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                },
                Some(body) => {
                    let tmp = path.with_extension("tmp");
                    std::fs::write(&tmp, &body).and_then(|()| std::fs::rename(&tmp, &path))
                }
            };
            match res {
                Ok(()) => written += 1,
                Err(e) => {
                    self.inner().slims_unsaved.insert(doc);
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(written),
        }
    }

    /// Removes the saved search indexes of shards the library no longer holds (a deleted
    /// account's months) and files left by a write cut short. Called at start.
    pub fn prune_index_files(&self, lib: &Library) -> usize {
        let Some(dir) = &self.index_dir else {
            return 0;
        };
        let mut removed = 0;
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = e.path();
            let stale = match path.extension().and_then(|x| x.to_str()) {
                Some("slim") => path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| DocId::from_file_stem(s).ok())
                    .is_none_or(|id| lib.revision(&id).is_none()),
                Some("tmp") => true,
                _ => false,
            };
            if stale && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Whether the housekeeping sweep found nothing left to do in the shard at this revision.
    pub fn settled(&self, doc: &DocId, revision: u64) -> bool {
        self.inner().settled.get(doc) == Some(&revision)
    }

    /// Records that the sweep found nothing left to do in the shard at `revision` (its
    /// tombstones' blobs are gone, its positions were geocoded or cannot be): the next sweep
    /// skips it until it changes, unless its trash expires.
    pub fn settle(&self, doc: &DocId, revision: u64) {
        self.inner().settled.insert(doc.clone(), revision);
    }

    /// Writes every shard's counts with the heads they were counted at to `path` (replaced
    /// atomically), when any changed since the last call: the next start reads them back
    /// ([`ShardViews::load_counts`]) and Immich's timeline answers without reading a month.
    pub fn save_counts(&self, lib: &mut Library, path: &Path) -> std::io::Result<()> {
        match self.encode_counts(lib) {
            Some(body) => self.write_counts(path, &body),
            None => Ok(()),
        }
    }

    /// The counts file's bytes when counts changed since the last call (`None`: nothing to
    /// write). Called holding the library, so heads and revisions agree; the write
    /// ([`ShardViews::write_counts`]) need not hold it.
    pub fn encode_counts(&self, lib: &mut Library) -> Option<Vec<u8>> {
        let entries: Vec<(DocId, u64, Arc<ShardCounts>)> = {
            let mut inner = self.inner();
            if !std::mem::take(&mut inner.counts_changed) {
                return None;
            }
            inner
                .derived
                .iter()
                .filter(|(_, d)| !d.unreadable)
                .filter_map(|(id, d)| Some((id.clone(), d.revision, d.counts.clone()?)))
                .collect()
        };
        let mut shards = Vec::with_capacity(entries.len());
        for (id, revision, counts) in entries {
            // Counted from what was read: a document that could not be read counted as empty,
            // and that must not outlive this run.
            if lib.revision(&id) != Some(revision) || lib.unreadable(&id) {
                continue;
            }
            let Some(heads) = lib.known_heads_bytes(&id) else {
                continue;
            };
            shards.push(SavedCounts {
                doc: id.file_stem(),
                heads: data_encoding::HEXLOWER.encode(&heads),
                counts: counts
                    .counts
                    .iter()
                    .map(|((b, o, s, f), n)| (b.clone(), o.clone(), *s, *f, *n))
                    .collect(),
            });
        }
        let file = CountsFile {
            version: COUNTS_VERSION,
            shards,
        };
        let json = serde_json::to_vec(&file).ok()?;
        let mut body = blake3::hash(&json).to_hex().as_bytes().to_vec();
        body.push(b'\n');
        body.extend_from_slice(&json);
        Some(body)
    }

    /// Writes what [`ShardViews::encode_counts`] made (replaced atomically); on failure the
    /// counts are written again at the next call.
    pub fn write_counts(&self, path: &Path, body: &[u8]) -> std::io::Result<()> {
        let written = (|| {
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if written.is_err() {
            self.inner().counts_changed = true;
        }
        written
    }

    /// Takes back the counts [`ShardViews::save_counts`] wrote, for every shard whose heads
    /// are still the same (the others are counted again when asked). A missing or damaged
    /// file is nothing worse than no counts. Returns how many shards were taken.
    pub fn load_counts(&self, lib: &mut Library, path: &Path) -> usize {
        let Ok(body) = std::fs::read(path) else {
            return 0;
        };
        let parsed = body
            .split_at_checked(65)
            .filter(|(sum, json)| &sum[..64] == blake3::hash(json).to_hex().as_bytes())
            .and_then(|(_, json)| serde_json::from_slice::<CountsFile>(json).ok())
            // Counts made by another version may have counted differently.
            .filter(|f| f.version == COUNTS_VERSION)
            .map(|f| f.shards);
        let Some(saved) = parsed else {
            tracing::warn!(path = %path.display(), "the saved timeline counts are damaged or of another version; counting again");
            return 0;
        };
        let mut inner = self.inner();
        let mut n = 0;
        for s in saved {
            let Ok(id) = DocId::from_file_stem(&s.doc) else {
                continue;
            };
            let (Some(revision), Some(heads)) = (lib.revision(&id), lib.known_heads_bytes(&id))
            else {
                continue;
            };
            if data_encoding::HEXLOWER.encode(&heads) != s.heads {
                continue;
            }
            let counts = ShardCounts {
                counts: s
                    .counts
                    .into_iter()
                    .map(|(b, o, sh, f, n)| ((b, o, sh, f), n))
                    .collect(),
            };
            inner.derived.insert(
                id,
                Derived {
                    revision,
                    counts: Some(Arc::new(counts)),
                    slim: None,
                    facts: None,
                    saved: false,
                    unreadable: false,
                },
            );
            n += 1;
        }
        n
    }

    pub fn stats(&self) -> ViewStats {
        let inner = self.inner();
        ViewStats {
            shards: inner.records.len(),
            indexes_read: inner.slims_read,
            index_bytes: inner
                .derived
                .values()
                .filter_map(|d| d.slim.as_ref())
                .map(|s| s.heap_bytes())
                .sum(),
            bytes: inner.bytes,
            budget: self.budget,
            hits: inner.hits,
            misses: inner.misses,
        }
    }
}

/// A search index file: the BLAKE3 of the rest, then postcard of (version, heads, index).
fn encode_slim(heads: &[u8], slim: &SlimShard) -> Option<Vec<u8>> {
    let payload = postcard::to_allocvec(&(SLIM_VERSION, heads, slim)).ok()?;
    let mut body = blake3::hash(&payload).as_bytes().to_vec();
    body.extend_from_slice(&payload);
    Some(body)
}

/// The index of a search index file saved at `heads`. `Err(false)`: saved at other heads
/// (found before the checksum and the index are decoded); `Err(true)`: damaged or of
/// another version.
fn decode_slim(body: &[u8], heads: &[u8]) -> Result<SlimShard, bool> {
    let (sum, payload) = body.split_at_checked(32).ok_or(true)?;
    let ((version, saved), rest) =
        postcard::take_from_bytes::<(u32, Vec<u8>)>(payload).map_err(|_| true)?;
    if version != SLIM_VERSION {
        return Err(true);
    }
    if saved != heads {
        return Err(false);
    }
    if blake3::hash(payload).as_bytes() != sum {
        return Err(true);
    }
    postcard::from_bytes(rest).map_err(|_| true)
}

/// Returns freed heap memory to the system after a walk over the whole library (glibc keeps
/// it otherwise, and the walk's transient documents and records would stay in the RSS).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Caps glibc's malloc at two arenas. By default every thread that meets contention gets an
/// arena of its own (up to 8 per core); the node's blocking threads (uploads, media decodes,
/// catalogue walks) then leave free memory scattered over a dozen 64 MB heaps that trimming
/// cannot give back. Measured on the 300k library, 100 uploads of 12-MP photos by 20 clients:
/// 145 → 285 MB idle afterwards, 389 MB after 100 more; with two arenas 145 → 161 → 178 MB.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tuning; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Gives freed heap memory back every `every`: requests that walk many months (a search, the
/// map, Immich's sync stream) free what they decoded when they end, but glibc keeps it in the
/// process unless asked (measured at 300k: 222 MB stayed after queries that raced the
/// start-up sweep, against ≈ 150 MB once trimmed). A trim with little to give back is cheap.
pub async fn trim_memory_every(every: std::time::Duration, node: Arc<crate::node::Node>) {
    loop {
        tokio::time::sleep(every).await;
        let node = node.clone();
        let _ = tokio::task::spawn_blocking(move || {
            // Smart search's cached sign codes, when no search used them for a while.
            if crate::smart_index::prune_idle() > 0 {
                tracing::debug!("smart search index dropped (idle)");
            }
            // The same for the search and people indexes and the places table.
            let freed = node.views.shed_idle(crate::smart_index::IDLE);
            if freed > 0 {
                tracing::debug!(bytes = freed, "search indexes dropped (idle)");
            }
            if crate::geo::drop_idle(crate::smart_index::IDLE) {
                tracing::debug!("places table dropped (idle)");
            }
            release_free_memory()
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[Arc<str>]) -> Vec<&str> {
        v.iter().map(|s| &**s).collect()
    }

    /// Search over the index in place decides exactly as over the record it stands for.
    #[test]
    fn searching_a_slim_record_in_place_decides_as_its_record() {
        use tessera_core::search::{Filters, Media, PeopleIndex, Visibility};
        let rec = |n: u8, f: &dyn Fn(&mut AssetRecord)| {
            let mut r = AssetRecord {
                id: blake3::hash(&[n]).to_hex().to_string(),
                filename: Some(format!("IMG_{n}.JPG")),
                make: Some("Canon".into()),
                model: Some("EOS 5D".into()),
                city: Some("Lyon".into()),
                state: Some("Auvergne-Rhône-Alpes".into()),
                country: Some("France".into()),
                taken_at: Some(format!("2015-0{}-01T10:00:00Z", 1 + n % 9)),
                mime: Some("image/jpeg".into()),
                ..Default::default()
            };
            f(&mut r);
            r
        };
        let records = vec![
            rec(1, &|_| {}),
            rec(2, &|r| r.mime = Some("video/mp4".into())),
            rec(3, &|r| r.favorite = Some(true)),
            rec(4, &|r| r.archived = Some(true)),
            rec(5, &|r| r.trashed_at = Some("2024-01-01T00:00:00Z".into())),
            rec(6, &|r| r.purged_at = Some("2024-01-02T00:00:00Z".into())),
            rec(7, &|r| r.hidden = Some(true)),
            rec(8, &|r| {
                r.city = Some("Zürich".into());
                r.make = None;
                r.taken_at = None;
            }),
            AssetRecord {
                id: "not-a-hash".into(),
                ..Default::default()
            },
        ];
        let slim = SlimShard::of(&records);
        let people = PeopleIndex::default();
        let text = |t: &str| Filters {
            text: Some(t.into()),
            ..Default::default()
        };
        let filters = [
            Filters::default(),
            text("canon 2015"),
            text("img_3"),
            text("zurich"),
            text("video"),
            text("june"),
            Filters {
                city: Some("LYON".into()),
                make: Some("canon".into()),
                ..Default::default()
            },
            Filters {
                state: Some("auvergne-rhone-alpes".into()),
                ..Default::default()
            },
            Filters {
                filename: Some("img_".into()),
                visibility: Visibility::All,
                ..Default::default()
            },
            Filters {
                visibility: Visibility::Trash,
                ..Default::default()
            },
            Filters {
                visibility: Visibility::Archive,
                ..Default::default()
            },
            Filters {
                favorite: Some(true),
                ..Default::default()
            },
            Filters {
                media: Some(Media::Video),
                taken_after: Some("2015-02".into()),
                taken_before: Some("2015-03".into()),
                ..Default::default()
            },
        ];
        let mut matched = 0;
        for f in &filters {
            let m = f.compile();
            for (i, r) in records.iter().enumerate() {
                let fast = m.matches(&slim.searched(i), &people);
                let whole = m.matches(&slim.record(i), &people);
                assert_eq!(fast, whole, "{f:?} on {r:?}");
                matched += usize::from(fast);
            }
        }
        assert!(matched > filters.len(), "the filters match something");
    }

    fn rec(id: &str, taken: &str, fav: bool) -> AssetRecord {
        AssetRecord {
            id: id.into(),
            owner: Some("u1".into()),
            taken_at: Some(taken.into()),
            favorite: fav.then_some(true),
            ..Default::default()
        }
    }

    #[test]
    fn records_follow_revisions_and_stay_within_the_budget() {
        let mut lib = Library::new(b"test-actor-0001");
        let user = "0123456789abcdef0123456789abcdef";
        lib.upsert_assets(
            user,
            &[
                rec(&"a".repeat(64), "2024-05-03T10:00:00", false),
                rec(&"b".repeat(64), "2024-05-04T10:00:00", true),
                rec(&"c".repeat(64), "2023-01-04T10:00:00", false),
            ],
        )
        .unwrap();
        let may = DocId::shard(user, "2024-05").unwrap();
        let jan = DocId::shard(user, "2023-01").unwrap();
        let one = approx_bytes(&rec(&"a".repeat(64), "2024-05-03T10:00:00", false));
        // Room for about two records: the two shards cannot both stay.
        let views = ShardViews::new(one * 2 + one / 2);
        assert_eq!(views.records(&lib, &may).unwrap().len(), 2);
        assert_eq!(views.records(&lib, &may).unwrap().len(), 2);
        assert_eq!(views.stats().hits, 1);
        assert_eq!(views.records(&lib, &jan).unwrap().len(), 1);
        let s = views.stats();
        assert!(s.bytes <= s.budget, "{s:?}");
        assert_eq!(s.shards, 1, "May was evicted for January: {s:?}");

        let counts = views.counts(&lib, &may).unwrap();
        let key = |fav| {
            (
                "2024-05-01".to_string(),
                "u1".to_string(),
                Shelf::Timeline,
                fav,
            )
        };
        assert_eq!(counts.counts.get(&key(true)), Some(&1));
        assert_eq!(counts.counts.get(&key(false)), Some(&1));

        // A change is seen by the next read: the revision moved.
        lib.update_asset(user, "2024-05", &"a".repeat(64), |r| {
            r.archived = Some(true)
        })
        .unwrap();
        let counts = views.counts(&lib, &may).unwrap();
        assert_eq!(counts.counts.get(&key(false)), None);
        assert_eq!(
            counts
                .counts
                .get(&("2024-05-01".into(), "u1".into(), Shelf::Archive, false)),
            Some(&1)
        );
        assert_eq!(views.records(&lib, &may).unwrap()[1].archived, Some(true));
    }

    /// Counts saved by one run are taken by the next for the shards whose heads did not
    /// change, and only for those; the search index is then built on demand.
    #[test]
    fn saved_counts_come_back_for_unchanged_shards_only() {
        let user = "0123456789abcdef0123456789abcdef";
        let dir = std::env::temp_dir().join(format!("tessera-counts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("counts.json");
        let mut lib = Library::new(b"test-actor-0001");
        lib.upsert_assets(
            user,
            &[
                rec(&"a".repeat(64), "2024-05-03T10:00:00", true),
                rec(&"c".repeat(64), "2023-01-04T10:00:00", false),
            ],
        )
        .unwrap();
        let may = DocId::shard(user, "2024-05").unwrap();
        let jan = DocId::shard(user, "2023-01").unwrap();
        let views = ShardViews::new(1 << 20);
        let may_counts = views.counts(&lib, &may).unwrap();
        views.counts(&lib, &jan).unwrap();
        views.save_counts(&mut lib, &path).unwrap();

        // The "next run": the same documents (same heads), January changed since.
        let mut next = Library::new(b"test-actor-0002");
        let may_bytes = lib.save(&may).unwrap();
        next.load(may.clone(), &may_bytes).unwrap();
        lib.update_asset(user, "2023-01", &"c".repeat(64), |r| {
            r.favorite = Some(true)
        })
        .unwrap();
        let jan_bytes = lib.save(&jan).unwrap();
        next.load(jan.clone(), &jan_bytes).unwrap();
        let fresh = ShardViews::new(1 << 20);
        assert_eq!(fresh.load_counts(&mut next, &path), 1);
        assert_eq!(fresh.counts(&next, &may).unwrap().counts, may_counts.counts);
        assert_eq!(fresh.stats().misses, 0, "May counted without reading it");
        // January is counted again, from its records (favourite now).
        let jan_counts = fresh.counts(&next, &jan).unwrap();
        let fav = (
            "2023-01-01".to_string(),
            "u1".to_string(),
            Shelf::Timeline,
            true,
        );
        assert_eq!(jan_counts.counts.get(&fav), Some(&1));
        // May's search index is built when first asked.
        assert_eq!(fresh.slim(&mut next, &may).unwrap().len(), 1);

        // Damaged: nothing taken, nothing worse.
        let mut body = std::fs::read(&path).unwrap();
        let last = body.len() - 2;
        body[last] ^= 1;
        std::fs::write(&path, &body).unwrap();
        assert_eq!(ShardViews::new(0).load_counts(&mut next, &path), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A month whose read failed (it reads as empty) is neither saved, counts or index, even
    /// once a later read of it succeeded at the same revision, and is read again next time.
    #[test]
    fn an_index_built_from_a_failed_read_is_never_saved() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let user = "0123456789abcdef0123456789abcdef";
        let dir = std::env::temp_dir().join(format!("tessera-unread-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut src = Library::new(b"test-actor-0001");
        src.upsert_assets(user, &[rec(&"a".repeat(64), "2024-05-03T10:00:00", true)])
            .unwrap();
        let may = DocId::shard(user, "2024-05").unwrap();
        let bytes = src.save(&may).unwrap();
        let heads = src.known_heads_bytes(&may).unwrap();
        let fail = Arc::new(AtomicBool::new(true));
        let mut lib = Library::new(b"test-actor-0002");
        let (f, b) = (fail.clone(), bytes.clone());
        lib.set_loader(Box::new(move |_| {
            if f.load(Ordering::SeqCst) {
                Err("EIO".into())
            } else {
                Ok(b.clone())
            }
        }));
        lib.hold_unloaded(may.clone(), &heads, bytes.len()).unwrap();
        let views = ShardViews::new(1 << 20).with_index_dir(dir.clone());
        assert!(
            views.slim(&mut lib, &may).unwrap().is_empty(),
            "read as empty"
        );
        // The disk is back; a read elsewhere succeeds and clears the library's flag, at the
        // same revision.
        fail.store(false, Ordering::SeqCst);
        assert_eq!(lib.assets_passing(&may).unwrap().len(), 1);
        assert!(!lib.unreadable(&may));
        assert!(
            views.encode_slims(&mut lib, 16).is_empty(),
            "the empty index is not saved"
        );
        let counts = views.encode_counts(&mut lib).unwrap();
        assert!(
            !String::from_utf8_lossy(&counts).contains("2024-05"),
            "nor its counts"
        );
        // Asked again, the month is read again, and that index is saved.
        assert_eq!(views.slim(&mut lib, &may).unwrap().len(), 1);
        assert_eq!(views.counts(&lib, &may).unwrap().counts.len(), 1);
        assert_eq!(views.encode_slims(&mut lib, 16).len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Search indexes saved by one run are read back by the next for the shards whose heads
    /// did not change, and only for those; they say what the sweep looks for; a damaged or
    /// cut file is built again; a shard that is gone loses its file.
    #[test]
    fn saved_search_indexes_come_back_for_unchanged_shards_only() {
        let user = "0123456789abcdef0123456789abcdef";
        let dir = std::env::temp_dir().join(format!("tessera-slims-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut lib = Library::new(b"test-actor-0001");
        let trashed = AssetRecord {
            trashed_at: Some("2024-06-01T00:00:00Z".into()),
            make: Some("Canon".into()),
            ..rec(&"b".repeat(64), "2024-05-04T10:00:00", false)
        };
        let unplaced = AssetRecord {
            lat: Some(48.85),
            lon: Some(2.35),
            ..rec(&"c".repeat(64), "2023-01-04T10:00:00", false)
        };
        lib.upsert_assets(
            user,
            &[
                rec(&"a".repeat(64), "2024-05-03T10:00:00", true),
                trashed,
                unplaced,
            ],
        )
        .unwrap();
        let may = DocId::shard(user, "2024-05").unwrap();
        let jan = DocId::shard(user, "2023-01").unwrap();
        let views = ShardViews::new(1 << 20).with_index_dir(dir.clone());
        let may_slim = views.slim(&mut lib, &may).unwrap();
        let jan_slim = views.slim(&mut lib, &jan).unwrap();
        assert_eq!(views.stats().misses, 2);
        // What the sweep looks for, without the records.
        assert_eq!(
            may_slim.trashed_at().collect::<Vec<_>>(),
            ["2024-06-01T00:00:00Z"]
        );
        assert!(!may_slim.has_unplaced() && !may_slim.has_tombstones());
        assert!(jan_slim.has_unplaced() && jan_slim.trashed_at().next().is_none());
        let files = views.encode_slims(&mut lib, 16);
        assert_eq!(files.len(), 2);
        assert_eq!(views.write_slims(files).unwrap(), 2);
        assert!(
            views.encode_slims(&mut lib, 16).is_empty(),
            "nothing new to save"
        );
        // Idle: the saved indexes are dropped, and read back from their files when next asked.
        let idle = std::time::Duration::from_secs(3600);
        let facts = views.sweep_facts(&mut lib, &may).unwrap();
        assert_eq!(facts.trashed_at, ["2024-06-01T00:00:00Z"]);
        assert!(!facts.tombstones && !facts.unplaced);
        assert_eq!(views.shed_idle(idle), 0, "used just now");
        assert!(views.shed_idle(std::time::Duration::ZERO) > 0);
        // A month's records read after the shed leave its index to be read back from its
        // file, not built and written again.
        assert_eq!(views.records(&lib, &jan).unwrap().len(), 1);
        assert!(views.encode_slims(&mut lib, 16).is_empty());
        let read = views.stats().indexes_read;
        // The sweep's facts outlive the index: asking them reads nothing back.
        assert_eq!(views.sweep_facts(&mut lib, &may).unwrap(), facts);
        assert!(views.sweep_facts(&mut lib, &jan).unwrap().unplaced);
        assert_eq!(
            views.stats().indexes_read,
            read + 1,
            "January's facts were not kept"
        );
        let read = read + 1;
        let again = views.slim(&mut lib, &may).unwrap();
        assert_eq!(views.stats().indexes_read, read + 1);
        assert!(!Arc::ptr_eq(&again, &may_slim));
        assert_eq!(
            again.trashed_at().collect::<Vec<_>>(),
            ["2024-06-01T00:00:00Z"]
        );

        // The "next run": the same documents (same heads), January changed since.
        let mut next = Library::new(b"test-actor-0002");
        let may_bytes = lib.save(&may).unwrap();
        next.load(may.clone(), &may_bytes).unwrap();
        lib.update_asset(user, "2023-01", &"c".repeat(64), |r| {
            r.country = Some("France".into())
        })
        .unwrap();
        let jan_bytes = lib.save(&jan).unwrap();
        next.load(jan.clone(), &jan_bytes).unwrap();
        let fresh = ShardViews::new(1 << 20).with_index_dir(dir.clone());
        let read = fresh.slim(&mut next, &may).unwrap();
        assert_eq!(fresh.stats().misses, 0, "May's index read back, not built");
        assert_eq!(fresh.stats().indexes_read, 1);
        assert_eq!(read.len(), may_slim.len());
        for i in 0..read.len() {
            assert_eq!(read.record(i), may_slim.record(i));
        }
        // January's file was saved at other heads: built again from its records.
        let jan_again = fresh.slim(&mut next, &jan).unwrap();
        assert_eq!(fresh.stats().misses, 1);
        assert!(
            !jan_again.has_unplaced(),
            "the new record is used, not the file"
        );
        // Only what was built is saved again.
        let files = fresh.encode_slims(&mut next, 16);
        assert_eq!(
            files.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>(),
            std::slice::from_ref(&jan)
        );
        fresh.write_slims(files).unwrap();
        // Counts come from the records when the index was read back without them.
        assert_eq!(fresh.counts(&next, &may).unwrap().counts.len(), 2);

        // Damaged (a flipped byte, a cut): built again, never believed.
        let path = dir.join(format!("{}.slim", may.file_stem()));
        let good = std::fs::read(&path).unwrap();
        for bad in [
            {
                let mut b = good.clone();
                let last = b.len() - 1;
                b[last] ^= 1;
                b
            },
            good[..good.len() / 2].to_vec(),
            Vec::new(),
        ] {
            std::fs::write(&path, &bad).unwrap();
            let again = ShardViews::new(1 << 20).with_index_dir(dir.clone());
            assert_eq!(again.slim(&mut next, &may).unwrap().len(), 2);
            assert_eq!(again.stats().indexes_read, 0);
            assert_eq!(again.stats().misses, 1);
        }

        // A shard that is gone has its file removed.
        let gone = ShardViews::new(1 << 20).with_index_dir(dir.clone());
        gone.slim(&mut lib, &may).unwrap();
        let mut empty = Library::new(b"test-actor-0003");
        let files = gone.encode_slims(&mut empty, 16);
        assert_eq!(files.len(), 1);
        assert!(files[0].1.is_none());
        gone.write_slims(files).unwrap();
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The people cache answers what the library answers read whole, after changes to one
    /// month's faces and to the people document, and reads nothing while nothing changed.
    #[test]
    fn cached_people_follow_changes_to_one_month_and_to_people() {
        use tessera_core::ml::{fields, FaceRecord, PersonRecord, PERSON_PREFIX};
        let mut lib = Library::new(&[4; 16]);
        let views = ShardViews::new(0);
        let face = |asset: &str, n: usize, person: &str| {
            (
                FaceRecord::key(asset, n),
                fields(&FaceRecord {
                    asset: asset.into(),
                    person: Some(person.into()),
                    ..Default::default()
                }),
            )
        };
        let person = |id: &str, r: PersonRecord| (format!("{PERSON_PREFIX}{id}"), fields(&r));
        let (jan, feb) = (
            DocId::ml("u", "2024-01").unwrap(),
            DocId::ml("u", "2024-02").unwrap(),
        );
        let people = DocId::people("u").unwrap();
        lib.merge_entries(
            &jan,
            &[face("a", 0, "p1"), face("a", 1, "p2"), face("b", 0, "p1")],
        )
        .unwrap();
        lib.merge_entries(&feb, &[face("c", 0, "p2")]).unwrap();
        let same = |lib: &Library| {
            let (cached, whole) = (
                views.people_index(lib, "u").unwrap(),
                lib.people_index("u").unwrap(),
            );
            for a in ["a", "b", "c", "d"] {
                assert_eq!(cached.people_of(a), whole.people_of(a), "{a}");
                assert_eq!(cached.facts(a).names, whole.facts(a).names, "{a}");
            }
            let counts: Vec<(String, usize)> = views
                .people_counts(lib, "u")
                .unwrap()
                .iter()
                .map(|p| (p.id.clone(), p.faces))
                .collect();
            let want: Vec<(String, usize)> = lib
                .people_with_faces("u")
                .unwrap()
                .into_iter()
                .map(|p| (p.id, p.faces))
                .collect();
            assert_eq!(counts, want);
            cached
        };
        // A user with no ML results and no people document: empty, no error.
        assert!(views
            .people_index(&lib, "nobody")
            .unwrap()
            .people_of("a")
            .is_empty());
        assert!(views.people_counts(&lib, "nobody").unwrap().is_empty());
        let first = same(&lib);
        assert_eq!(strs(first.people_of("a")), ["p1", "p2"]);
        assert!(Arc::ptr_eq(&first, &views.people_index(&lib, "u").unwrap()));
        // One month changes: a new face, and the user reassigns one.
        lib.merge_entries(&feb, &[face("d", 0, "p1")]).unwrap();
        let mut moved = FaceRecord {
            asset: "c".into(),
            person: Some("p2".into()),
            user_person: Some("p1".into()),
            ..Default::default()
        };
        lib.merge_entries(&feb, &[(FaceRecord::key("c", 0), fields(&moved))])
            .unwrap();
        let second = same(&lib);
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(strs(second.people_of("c")), ["p1"]);
        // People change: p2 merged into p1, then p1 named and p3 hidden.
        lib.merge_entries(
            &people,
            &[person(
                "p2",
                PersonRecord {
                    merged_into: Some("p1".into()),
                    ..Default::default()
                },
            )],
        )
        .unwrap();
        assert_eq!(strs(same(&lib).people_of("a")), ["p1"]);
        lib.merge_entries(
            &people,
            &[person(
                "p1",
                PersonRecord {
                    name: Some("Anna".into()),
                    ..Default::default()
                },
            )],
        )
        .unwrap();
        assert_eq!(strs(same(&lib).facts("b").names), ["Anna"]);
        moved.user_person = Some("p3".into());
        lib.merge_entries(&feb, &[(FaceRecord::key("c", 0), fields(&moved))])
            .unwrap();
        lib.merge_entries(
            &people,
            &[person(
                "p3",
                PersonRecord {
                    hidden: Some(true),
                    ..Default::default()
                },
            )],
        )
        .unwrap();
        assert!(same(&lib).people_of("c").is_empty());
    }

    /// People parts saved by one run are taken back by the next for documents whose heads
    /// did not change, answer the same, and a damaged file is nothing worse than no parts.
    #[test]
    fn people_parts_saved_are_read_back_while_their_documents_hold() {
        use tessera_core::ml::{fields, FaceRecord, MlMark, MARK_PREFIX};
        let mut lib = Library::new(&[5; 16]);
        let face = |asset: &str, n: usize, person: &str| {
            (
                FaceRecord::key(asset, n),
                fields(&FaceRecord {
                    asset: asset.into(),
                    person: Some(person.into()),
                    ..Default::default()
                }),
            )
        };
        let (jan, feb) = (
            DocId::ml("u", "2024-01").unwrap(),
            DocId::ml("u", "2024-02").unwrap(),
        );
        let text = (
            format!("{MARK_PREFIX}c"),
            fields(&MlMark {
                text: Some("hello world".into()),
                ..Default::default()
            }),
        );
        lib.merge_entries(
            &jan,
            &[face("a", 0, "p1"), face("a", 1, "p2"), face("b", 0, "p1")],
        )
        .unwrap();
        lib.merge_entries(&feb, &[face("c", 0, "p2"), text])
            .unwrap();
        let dir = std::env::temp_dir().join(format!("tessera-people-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("people-index.bin");

        let first = ShardViews::new(0);
        let want = first.people_index(&lib, "u").unwrap();
        let counts = first.people_counts(&lib, "u").unwrap();
        let save = first.people_to_save(&mut lib).expect("parts were read");
        assert_eq!(save.0.len(), 2);
        first.write_people(&path, save).unwrap();
        assert!(first.people_to_save(&mut lib).is_none(), "nothing new");

        let second = ShardViews::new(0);
        assert_eq!(second.load_people(&mut lib, &path), 2);
        let got = second.people_index(&lib, "u").unwrap();
        for a in ["a", "b", "c"] {
            assert_eq!(got.people_of(a), want.people_of(a), "{a}");
        }
        assert_eq!(got.text.get("c").map(String::as_str), Some("hello world"));
        assert_eq!(*second.people_counts(&lib, "u").unwrap(), *counts);

        // February changed since: only January's part is taken; February's is read again.
        lib.merge_entries(&feb, &[face("d", 0, "p1")]).unwrap();
        let third = ShardViews::new(0);
        assert_eq!(third.load_people(&mut lib, &path), 1);
        assert_eq!(
            strs(third.people_index(&lib, "u").unwrap().people_of("d")),
            ["p1"]
        );

        // A damaged file: no parts, no error.
        let mut body = std::fs::read(&path).unwrap();
        let last = body.len() - 1;
        body[last] ^= 0xff;
        std::fs::write(&path, &body).unwrap();
        assert_eq!(ShardViews::new(0).load_people(&mut lib, &path), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The cached ML progress answers what the library counts read whole, after an analysis
    /// lands in one month and a photo is added to another.
    #[test]
    fn ml_progress_follows_changes_to_shards_and_ml_documents() {
        use tessera_core::ml::{fields, MlMark, MARK_PREFIX};
        let mut lib = Library::new(b"test-actor-0009");
        let user = "0123456789abcdef0123456789abcdef";
        let shown = |id: &str, taken: &str| AssetRecord {
            preview: Some("e".repeat(64)),
            ..rec(id, taken, false)
        };
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        lib.upsert_assets(
            user,
            &[
                shown(&a, "2024-05-03T10:00:00"),
                shown(&b, "2024-05-04T10:00:00"),
                shown(&c, "2024-01-04T10:00:00"),
            ],
        )
        .unwrap();
        let views = ShardViews::new(1 << 20);
        let same = |lib: &Library| {
            let p = views.ml_progress(lib, user).unwrap();
            assert_eq!(p, lib.ml_progress(user).unwrap());
            p
        };
        assert_eq!((same(&lib).total, same(&lib).analysed), (3, 0));
        let mark = MlMark {
            faces: 2,
            ..Default::default()
        };
        lib.merge_entries(
            &DocId::ml(user, "2024-05").unwrap(),
            &[(format!("{MARK_PREFIX}{a}"), fields(&mark))],
        )
        .unwrap();
        let p = same(&lib);
        assert_eq!((p.total, p.analysed, p.faces), (3, 1, 2));
        lib.upsert_assets(user, &[shown(&"d".repeat(64), "2024-01-05T10:00:00")])
            .unwrap();
        assert_eq!(same(&lib).total, 4);
    }
}
