//! The node's CLIP index for smart search: sign codes in memory, vectors left in the packs.
//!
//! A user's CLIP vectors are their months' packs (blobs, f16 as the ML node writes them). At
//! 300k photos the packs are 300 MB and the int8 rows of a whole in-memory index 154 MB, more
//! than the node's memory budget. So per pack only the keys and the 1-bit sign codes stay in
//! memory (64 bytes per 512-d vector, 19 MB for 300k); stage one of the two-stage search
//! (core's [`hamming_candidates`]) runs over them, and stage two reads just its candidates'
//! rows (a thousand or two, 1 KB each) from the pack files and ranks them.
//!
//! Segments are cached by pack hash (packs are immutable, so a month's new pack replaces one
//! segment, not the index) and dropped once no search used them for [`IDLE`].

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tessera_core::pack::{dot, Layout, Pack, PackError};
use tessera_core::search::{hamming_candidates, rank, sign_code, MIN_CANDIDATES, OVERSAMPLE};

use crate::blobs::{BlobError, BlobKind, BlobStore};

/// A cached pack's segment is dropped after this long without a search.
pub const IDLE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum SmartIndexError {
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("embedding pack {hash}: {source}")]
    Pack { hash: String, source: PackError },
    #[error("embedding pack {hash}: reading vector {row}: {source}")]
    Read {
        hash: String,
        row: usize,
        source: std::io::Error,
    },
}

/// One pack: its keys (sorted, as in the pack), sign codes and where its vectors are.
#[derive(Debug)]
pub struct Segment {
    pub hash: String,
    pub model: String,
    pub keys: Vec<String>,
    codes: Vec<u64>,
    layout: Layout,
}

impl Segment {
    fn load(blobs: &BlobStore, hash: &str) -> Result<Self, SmartIndexError> {
        let bytes = blobs.read(BlobKind::Ml, hash)?;
        let (pack, layout) =
            Pack::decode_with_layout(&bytes).map_err(|source| SmartIndexError::Pack {
                hash: hash.to_owned(),
                source,
            })?;
        let codes = (0..pack.len())
            .flat_map(|i| sign_code(pack.vector(i)))
            .collect();
        Ok(Self {
            hash: hash.to_owned(),
            model: pack.model,
            keys: pack.keys,
            codes,
            layout,
        })
    }

    /// Bytes held in memory (codes and keys).
    pub fn bytes(&self) -> usize {
        self.codes.len() * 8 + self.keys.iter().map(|k| k.len() + 24).sum::<usize>()
    }
}

/// The segments of one user's packs of one model, in a fixed order (rows are numbered across
/// them).
#[derive(Debug, Clone)]
pub struct SmartIndex {
    pub dim: usize,
    pub segments: Vec<Arc<Segment>>,
}

type Cache = Mutex<HashMap<String, (Arc<Segment>, Instant)>>;

fn cache() -> &'static Cache {
    static C: OnceLock<Cache> = OnceLock::new();
    C.get_or_init(Default::default)
}

/// Drops the cached segments no search used for [`IDLE`]; returns how many (called by the
/// node's periodic memory release too, so an idle node gives the memory back).
pub fn prune_idle() -> usize {
    let Ok(mut c) = cache().lock() else { return 0 };
    let before = c.len();
    c.retain(|_, (_, used)| used.elapsed() < IDLE);
    before - c.len()
}

impl SmartIndex {
    /// The index of the packs `hashes` (the ones of `dim` dimensions; a pack of another
    /// dimension is skipped), each read from its blob unless cached.
    pub fn of(blobs: &BlobStore, hashes: &[String]) -> Result<Self, SmartIndexError> {
        let mut segments = Vec::with_capacity(hashes.len());
        for h in hashes {
            let cached = cache().lock().ok().and_then(|mut c| {
                let (seg, used) = c.get_mut(h)?;
                *used = Instant::now();
                Some(seg.clone())
            });
            let seg = match cached {
                Some(s) => s,
                None => {
                    let s = Arc::new(Segment::load(blobs, h)?);
                    if let Ok(mut c) = cache().lock() {
                        c.insert(h.clone(), (s.clone(), Instant::now()));
                    }
                    s
                }
            };
            segments.push(seg);
        }
        let dim = segments.first().map_or(0, |s| s.layout.dim);
        segments.retain(|s| s.layout.dim == dim);
        Ok(Self { dim, segments })
    }

    pub fn len(&self) -> usize {
        self.segments.iter().map(|s| s.keys.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held in memory by the segments.
    pub fn bytes(&self) -> usize {
        self.segments.iter().map(|s| s.bytes()).sum()
    }

    /// The stored vector of `key`, if a pack has it.
    pub fn vector_of(
        &self,
        blobs: &BlobStore,
        key: &str,
    ) -> Result<Option<Vec<f32>>, SmartIndexError> {
        for s in &self.segments {
            if let Ok(i) = s.keys.binary_search_by(|k| k.as_str().cmp(key)) {
                return Ok(self.read_rows(blobs, s, &[i])?.pop());
            }
        }
        Ok(None)
    }

    fn read_rows(
        &self,
        blobs: &BlobStore,
        s: &Segment,
        rows: &[usize],
    ) -> Result<Vec<Vec<f32>>, SmartIndexError> {
        let local = match blobs.local(BlobKind::Ml, &s.hash) {
            Ok(l) => l,
            // Replaced and removed since the index was made: its rows are not searched.
            Err(e) if e.is_not_found() => {
                tracing::warn!(pack = %s.hash, "embedding pack gone during a search; skipped");
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        let err = |row: usize| {
            let hash = s.hash.clone();
            move |source| SmartIndexError::Read { hash, row, source }
        };
        let file = match File::open(local.path()) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(pack = %s.hash, "embedding pack gone during a search; skipped");
                return Ok(Vec::new());
            }
            Err(e) => return Err(err(0)(e)),
        };
        let mut buf = vec![0u8; s.layout.row_len()];
        rows.iter()
            .map(|&i| {
                file.read_exact_at(&mut buf, s.layout.row_offset(i))
                    .map_err(err(i))?;
                let mut v = Vec::with_capacity(s.layout.dim);
                s.layout.read_row(&buf, &mut v);
                Ok(v)
            })
            .collect()
    }

    /// The `k` keys most similar to `q` (dot product with the stored vectors) among those
    /// `allow` accepts, best first: sign codes pick `max(k × OVERSAMPLE, MIN_CANDIDATES)`
    /// candidates, their vectors read from the packs rank them.
    pub fn search(
        &self,
        blobs: &BlobStore,
        q: &[f32],
        k: usize,
        allow: impl Fn(&str) -> bool,
    ) -> Result<Vec<(String, f32)>, SmartIndexError> {
        if q.len() != self.dim || k == 0 || self.is_empty() {
            return Ok(Vec::new());
        }
        let keys = || self.segments.iter().flat_map(|s| s.keys.iter());
        let allowed: Vec<bool> = keys().map(|key| allow(key)).collect();
        let found = hamming_candidates(
            self.segments.iter().map(|s| &s.codes[..]),
            q,
            (k * OVERSAMPLE).max(MIN_CANDIDATES),
            |i| allowed[i],
        );
        // Candidates by segment (rows are numbered across segments in order).
        let mut scored = Vec::with_capacity(found.len());
        let mut start = 0;
        let mut next = found.iter().peekable();
        for s in &self.segments {
            let end = start + s.keys.len();
            let mut rows = Vec::new();
            while let Some(&&g) = next.peek() {
                if g >= end {
                    break;
                }
                rows.push(g - start);
                next.next();
            }
            if !rows.is_empty() {
                // Empty when the pack went meanwhile (zip then scores none of its rows).
                let vectors = self.read_rows(blobs, s, &rows)?;
                scored.extend(
                    rows.iter()
                        .zip(vectors)
                        .map(|(&i, v)| (start + i, dot(&v, q))),
                );
            }
            start = end;
        }
        rank(&mut scored, k);
        let all: Vec<&String> = keys().collect();
        Ok(scored
            .into_iter()
            .map(|(g, score)| (all[g].clone(), score))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::pack::Dtype;
    use tessera_core::search::{synthetic, VectorIndex};

    /// Two packs of planted neighbours: the on-disk index finds what core's in-memory index
    /// finds (same candidates, scores from the f16 rows instead of int8), and a query by a
    /// stored key reads that key's vector back.
    #[test]
    fn finds_what_the_in_memory_index_finds() {
        let dir =
            std::env::temp_dir().join(format!("smart-index-{}", crate::random_hex(8).unwrap()));
        let db = sled::Config::new().temporary(true).open().unwrap();
        let blobs = BlobStore::open(&dir, &db).unwrap();
        let (rows, queries) = synthetic::planted(3000, 512, 4, 10, 9);
        let rows: Vec<(String, Vec<f32>)> = rows
            .enumerate()
            .map(|(i, v)| (format!("{i:06}"), v))
            .collect();
        let mut mem = VectorIndex::new(512);
        let mut hashes = Vec::new();
        for part in [&rows[..1700], &rows[1700..]] {
            let pack = Pack::new("m", 512, part.to_vec()).unwrap();
            mem.add_pack(&Pack::decode(&pack.encode(Dtype::F16)).unwrap());
            hashes.push(
                blobs
                    .put_bytes(BlobKind::Ml, &pack.encode(Dtype::F16))
                    .unwrap(),
            );
        }
        let idx = SmartIndex::of(&blobs, &hashes).unwrap();
        assert_eq!((idx.len(), idx.dim), (3040, 512));
        for (qi, q) in queries.iter().enumerate() {
            let got = idx.search(&blobs, q, 10, |k| k != "003000").unwrap();
            let want = mem.search(q, 10, |i| mem.keys[i] != "003000");
            let got_keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
            let want_keys: Vec<&str> = want.iter().map(|(i, _)| mem.keys[*i].as_str()).collect();
            // The planted neighbours, nearest first (the first one excluded for query 0).
            let planted: Vec<String> = (0..10)
                .map(|j| format!("{:06}", 3000 + qi * 10 + j))
                .filter(|k| k != "003000")
                .collect();
            assert_eq!(
                got_keys[..planted.len()],
                planted.iter().map(String::as_str).collect::<Vec<_>>()[..]
            );
            assert_eq!(got_keys[..planted.len()], want_keys[..planted.len()]);
        }
        let v = idx.vector_of(&blobs, "000042").unwrap().unwrap();
        assert!(dot(&v, &rows[42].1) > 0.999);
        assert_eq!(idx.vector_of(&blobs, "nope").unwrap(), None);
        // A pack replaced and removed after the index was made: its rows are skipped, the
        // search still answers from the others (the planted rows are all in the second).
        std::fs::remove_file(blobs.path(BlobKind::Ml, &hashes[0]).unwrap()).unwrap();
        let got = idx.search(&blobs, &queries[1], 10, |_| true).unwrap();
        assert_eq!(got[0].0, "003010");
        assert!(got.iter().all(|(k, _)| k.as_str() >= "001700"));
        drop(blobs);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
