//! Views of the catalogue that outlive one request: each shard's records, decoded, in an LRU
//! bounded by a memory budget, and each shard's timeline counts (tiny, kept for every shard).
//!
//! Both are keyed by the shard's [`Library::revision`], so a change — local or by sync — is
//! seen by the next request without any invalidation call. Reading a 1,250-record month from
//! automerge takes ≈15 ms; a whole 300k library ≈3.5 s: the cache turns repeated whole-library
//! queries (search, map, memories, Immich's timeline) into a walk over decoded records, and the
//! counts let `GET /api/timeline/buckets` answer without reading a record.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

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
#[derive(Debug, Clone, PartialEq, Eq)]
enum SlimId {
    Hash([u8; 32]),
    Other(Box<str>),
}

/// The searched fields of one record, as indexes into its shard's string table.
#[derive(Debug)]
struct SlimRow {
    id: SlimId,
    /// filename, make, model, lens, city, state, country, taken_at, mime ([`NONE`]: absent).
    s: [u32; 9],
    /// [`FAVORITE`] | [`ARCHIVED`] | [`TRASHED`] | [`PURGED`] | [`NOT_ALONE`].
    flags: u8,
}

const NONE: u32 = u32::MAX;
const FAVORITE: u8 = 1;
const ARCHIVED: u8 = 2;
const TRASHED: u8 = 4;
const PURGED: u8 = 8;
const NOT_ALONE: u8 = 16;

/// A shard's search index: for every record, what search filters and free text look at, with
/// the shard's repeated strings (cameras, places) stored once. About 150 bytes a record
/// against ≈1.4 KB decoded, so it is kept for every shard and a search over 300k records
/// reads no document.
#[derive(Debug, Default)]
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
            let mut s = [NONE; 9];
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

    /// The record's id.
    pub fn id(&self, i: usize) -> String {
        match &self.rows[i].id {
            SlimId::Hash(h) => data_encoding::HEXLOWER.encode(h),
            SlimId::Other(s) => s.to_string(),
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
            trashed_at: flag(TRASHED).then(String::new),
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

/// A shard's counts and (when built) search index at a revision.
type Derived = (u64, Arc<ShardCounts>, Option<Arc<SlimShard>>);

#[derive(Default)]
struct Inner {
    records: HashMap<DocId, Cached>,
    /// Per shard, at a revision: its counts and search index (kept for every shard). The
    /// index is `None` for counts read back from the last run ([`ShardViews::load_counts`]):
    /// it is built when first needed.
    derived: HashMap<DocId, Derived>,
    /// Counts were computed since they were last saved.
    counts_changed: bool,
    bytes: usize,
    tick: u64,
    hits: u64,
    misses: u64,
}

/// Cache statistics (`GET /api/tessera/admin/status`-style reporting and the scale bench).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ViewStats {
    pub shards: usize,
    /// Search indexes of every shard.
    pub index_bytes: usize,
    pub bytes: usize,
    pub budget: usize,
    pub hits: u64,
    pub misses: u64,
}

pub struct ShardViews {
    budget: usize,
    inner: Mutex<Inner>,
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
            inner: Mutex::new(Inner::default()),
        }
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
        let Some(revision) = lib.revision(doc) else {
            return Ok(Arc::new(Vec::new()));
        };
        let mut inner = self.inner();
        inner.tick += 1;
        let tick = inner.tick;
        if let Some(c) = inner.records.get_mut(doc) {
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
        inner.derived.insert(
            doc.clone(),
            (
                revision,
                Arc::new(ShardCounts::of(&records)),
                Some(Arc::new(SlimShard::of(&records))),
            ),
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
                .filter(|(r, _, _)| *r == revision)
                .map(|(_, c, _)| c.clone())
        };
        if let Some(c) = current(&self.inner()) {
            return Ok(c);
        }
        self.records(lib, doc)?;
        Ok(current(&self.inner()).unwrap_or_default())
    }

    /// The shard's search index, built once per revision (kept for every shard).
    pub fn slim(&self, lib: &Library, doc: &DocId) -> Result<Arc<SlimShard>, LibraryError> {
        let Some(revision) = lib.revision(doc) else {
            return Ok(Default::default());
        };
        let current = |inner: &Inner| {
            inner
                .derived
                .get(doc)
                .filter(|(r, _, _)| *r == revision)
                .and_then(|(_, _, s)| s.clone())
        };
        if let Some(s) = current(&self.inner()) {
            return Ok(s);
        }
        self.records(lib, doc)?;
        Ok(current(&self.inner()).unwrap_or_default())
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
                .map(|(id, (r, c, _))| (id.clone(), *r, c.clone()))
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
            inner.derived.insert(id, (revision, Arc::new(counts), None));
            n += 1;
        }
        n
    }

    pub fn stats(&self) -> ViewStats {
        let inner = self.inner();
        ViewStats {
            shards: inner.records.len(),
            index_bytes: inner
                .derived
                .values()
                .filter_map(|(_, _, s)| s.as_ref())
                .map(|s| s.heap_bytes())
                .sum(),
            bytes: inner.bytes,
            budget: self.budget,
            hits: inner.hits,
            misses: inner.misses,
        }
    }
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
pub async fn trim_memory_every(every: std::time::Duration) {
    loop {
        tokio::time::sleep(every).await;
        let _ = tokio::task::spawn_blocking(release_free_memory).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(fresh.slim(&next, &may).unwrap().len(), 1);

        // Damaged: nothing taken, nothing worse.
        let mut body = std::fs::read(&path).unwrap();
        let last = body.len() - 2;
        body[last] ^= 1;
        std::fs::write(&path, &body).unwrap();
        assert_eq!(ShardViews::new(0).load_counts(&mut next, &path), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
