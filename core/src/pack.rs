//! Embedding packs: the vectors of one shard month for one model, stored as a blob.
//!
//! Embeddings are not CRDT values: the ML document of a month references its pack by hash
//! (`pack/clip`, `pack/face`), and peers sync packs like any blob. Layout (little endian):
//!
//! ```text
//! "TPK1" | dtype u8 (1 = f16, 2 = int8) | 0u8 | dim u16 | count u32
//! | model: len u16 + UTF-8 | count × (key: len u16 + UTF-8)
//! | count × vector  (f16: dim × 2 bytes; int8: scale f32 + dim × i8, value = i8 × scale)
//! ```
//!
//! Keys are sorted and unique, so the same vectors always make the same bytes (and hash):
//! re-publishing unchanged results is a no-op everywhere.

use half::f16;

const MAGIC: &[u8; 4] = b"TPK1";
/// Refuse absurd headers before allocating (a 300k-photo month does not exist).
const MAX_COUNT: usize = 1 << 22;
const MAX_DIM: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F16 = 1,
    Int8 = 2,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackError {
    #[error("not an embedding pack (bad magic)")]
    Magic,
    #[error("embedding pack truncated at byte {0}")]
    Truncated(usize),
    #[error("embedding pack has unknown dtype {0}")]
    Dtype(u8),
    #[error("embedding pack header out of range (dim {dim}, count {count})")]
    Header { dim: usize, count: usize },
    #[error("embedding pack has a key that is not UTF-8")]
    Utf8,
    #[error("embedding pack keys are not sorted and unique at {0:?}")]
    Order(String),
    #[error("vector for {key:?} has {got} dimensions, the pack has {dim}")]
    Dim { key: String, got: usize, dim: usize },
    #[error("{0} trailing bytes after the embedding pack")]
    Trailing(usize),
}

/// Decoded pack: keys (asset ids or face keys) and their vectors as f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Pack {
    pub model: String,
    pub dim: usize,
    pub keys: Vec<String>,
    /// Row-major, `keys.len() × dim`.
    pub vectors: Vec<f32>,
}

impl Pack {
    /// Builds a pack from `(key, vector)` pairs; sorts by key, the last of duplicate keys wins.
    pub fn new(
        model: impl Into<String>,
        dim: usize,
        mut items: Vec<(String, Vec<f32>)>,
    ) -> Result<Self, PackError> {
        items.sort_by(|a, b| a.0.cmp(&b.0));
        items.reverse();
        items.dedup_by(|later, kept| later.0 == kept.0);
        items.reverse();
        if dim == 0 || dim > MAX_DIM || items.len() > MAX_COUNT {
            return Err(PackError::Header {
                dim,
                count: items.len(),
            });
        }
        let mut keys = Vec::with_capacity(items.len());
        let mut vectors = Vec::with_capacity(items.len() * dim);
        for (k, v) in items {
            if v.len() != dim {
                return Err(PackError::Dim {
                    key: k,
                    got: v.len(),
                    dim,
                });
            }
            keys.push(k);
            vectors.extend_from_slice(&v);
        }
        Ok(Self {
            model: model.into(),
            dim,
            keys,
            vectors,
        })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn vector(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }

    pub fn get(&self, key: &str) -> Option<&[f32]> {
        self.keys
            .binary_search_by(|k| k.as_str().cmp(key))
            .ok()
            .map(|i| self.vector(i))
    }

    pub fn items(&self) -> impl Iterator<Item = (&str, &[f32])> {
        self.keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_str(), self.vector(i)))
    }

    pub fn encode(&self, dtype: Dtype) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.keys.len() * (70 + self.dim * 2));
        out.extend_from_slice(MAGIC);
        out.push(dtype as u8);
        out.push(0);
        out.extend_from_slice(&(self.dim as u16).to_le_bytes());
        out.extend_from_slice(&(self.keys.len() as u32).to_le_bytes());
        put_str(&mut out, &self.model);
        for k in &self.keys {
            put_str(&mut out, k);
        }
        for i in 0..self.len() {
            let v = self.vector(i);
            match dtype {
                Dtype::F16 => {
                    for x in v {
                        out.extend_from_slice(&f16::from_f32(*x).to_le_bytes());
                    }
                }
                Dtype::Int8 => {
                    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
                    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
                    out.extend_from_slice(&scale.to_le_bytes());
                    for x in v {
                        out.push(((x / scale).round().clamp(-127.0, 127.0) as i8) as u8);
                    }
                }
            }
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<Self, PackError> {
        Self::decode_with_layout(b).map(|(p, _)| p)
    }

    /// [`Pack::decode`], and where its vectors are in `b` (for a reader that leaves them in
    /// the blob and reads only the rows it needs).
    pub fn decode_with_layout(b: &[u8]) -> Result<(Self, Layout), PackError> {
        let mut r = Reader { b, at: 0 };
        if r.take(4)? != MAGIC {
            return Err(PackError::Magic);
        }
        let dtype = match r.take(2)?[0] {
            1 => Dtype::F16,
            2 => Dtype::Int8,
            d => return Err(PackError::Dtype(d)),
        };
        let dim = u16::from_le_bytes(r.array()?) as usize;
        let count = u32::from_le_bytes(r.array()?) as usize;
        if dim == 0 || dim > MAX_DIM || count > MAX_COUNT {
            return Err(PackError::Header { dim, count });
        }
        let model = r.str()?;
        let mut keys: Vec<String> = Vec::with_capacity(count.min(b.len() / 2));
        for _ in 0..count {
            let k = r.str()?;
            if keys.last().is_some_and(|p| *p >= k) {
                return Err(PackError::Order(k));
            }
            keys.push(k);
        }
        let layout = Layout {
            dtype,
            dim,
            count,
            body: r.at,
        };
        let per = layout.row_len();
        // Checked: on 32-bit targets (wasm) dim × count can overflow.
        let len = per
            .checked_mul(count)
            .ok_or(PackError::Header { dim, count })?;
        let body = r.take(len)?;
        let mut vectors = Vec::with_capacity(body.len() / per.max(1) * dim);
        for row in body.chunks_exact(per) {
            layout.read_row(row, &mut vectors);
        }
        if r.at != b.len() {
            return Err(PackError::Trailing(b.len() - r.at));
        }
        let pack = Self {
            model,
            dim,
            keys,
            vectors,
        };
        Ok((pack, layout))
    }

    /// 1-bit sign codes (`dim / 8` bytes per vector): the first, cheap stage of search.
    pub fn sign_codes(&self) -> Vec<u8> {
        let bytes = self.dim.div_ceil(8);
        let mut out = vec![0u8; bytes * self.len()];
        for (i, x) in self.vectors.iter().enumerate() {
            if *x > 0.0 {
                let (row, col) = (i / self.dim, i % self.dim);
                out[row * bytes + col / 8] |= 1 << (col % 8);
            }
        }
        out
    }

    /// The `k` entries most similar to `query` (dot product; vectors are L2-normalised),
    /// best first.
    pub fn top_k(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        let mut scored: Vec<(usize, f32)> = (0..self.len())
            .map(|i| (i, dot(self.vector(i), query)))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored.truncate(k);
        scored
    }
}

/// Where a decoded pack's vectors are in its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub dtype: Dtype,
    pub dim: usize,
    pub count: usize,
    /// Offset of the first vector.
    pub body: usize,
}

impl Layout {
    /// Bytes of one stored vector.
    pub fn row_len(&self) -> usize {
        match self.dtype {
            Dtype::F16 => self.dim * 2,
            Dtype::Int8 => 4 + self.dim,
        }
    }

    /// Offset of vector `i` in the pack's bytes.
    pub fn row_offset(&self, i: usize) -> u64 {
        self.body as u64 + i as u64 * self.row_len() as u64
    }

    /// Appends one stored vector (`row_len` bytes) to `out` as f32.
    pub fn read_row(&self, row: &[u8], out: &mut Vec<f32>) {
        match self.dtype {
            Dtype::F16 => out.extend(
                row.chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()),
            ),
            Dtype::Int8 => {
                if let Some((s, q)) = row.split_first_chunk::<4>() {
                    let scale = f32::from_le_bytes(*s);
                    out.extend(q.iter().map(|&q| f32::from(q as i8) * scale));
                }
            }
        }
    }
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums the compiler keeps in SIMD lanes: one running sum must be added in
    // order and does not vectorise (4-6x slower on 512-d faces).
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut acc = [0f32; 8];
    for (x, y) in ca.zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PackError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or(PackError::Truncated(self.at))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PackError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn str(&mut self) -> Result<String, PackError> {
        let n = u16::from_le_bytes(self.array()?) as usize;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| PackError::Utf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unit(seed: u32, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim)
            .map(|i| ((seed as f32 + 1.0) * (i as f32 + 0.5)).sin())
            .collect();
        normalize(&mut v);
        v
    }

    #[test]
    fn dot_is_the_sum_of_products_at_any_length() {
        for dim in [0, 1, 7, 8, 9, 15, 16, 17, 512, 515] {
            let (a, b) = (unit(1, dim), unit(2, dim));
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(x * y)).sum();
            assert!((f64::from(dot(&a, &b)) - plain).abs() < 1e-5, "dim {dim}");
            if dim > 0 {
                assert!((dot(&a, &a) - 1.0).abs() < 1e-5, "dim {dim}");
            }
        }
        // Unequal lengths: the common prefix.
        assert_eq!(dot(&[1.0, 2.0, 3.0], &[4.0, 5.0]), 14.0);
    }

    #[test]
    fn roundtrip_f16_and_int8_is_close_and_deterministic() {
        let items: Vec<(String, Vec<f32>)> = (0..20)
            .map(|i| (format!("k{:02}", 19 - i), unit(i, 512)))
            .collect();
        let p = Pack::new("clip-test", 512, items.clone()).unwrap();
        assert_eq!(p.keys[0], "k00");
        for dtype in [Dtype::F16, Dtype::Int8] {
            let bytes = p.encode(dtype);
            let q = Pack::decode(&bytes).unwrap();
            assert_eq!(q.keys, p.keys);
            assert_eq!(q.model, "clip-test");
            for (k, v) in p.items() {
                let cos = dot(v, q.get(k).unwrap());
                assert!(cos > 0.999, "{dtype:?} {k} {cos}");
            }
            let mut shuffled = items.clone();
            shuffled.rotate_left(7);
            assert_eq!(
                Pack::new("clip-test", 512, shuffled).unwrap().encode(dtype),
                bytes
            );
        }
        let best = p.top_k(p.get("k05").unwrap(), 3);
        assert_eq!(p.keys[best[0].0], "k05");
        assert_eq!(p.sign_codes().len(), 20 * 64);
    }

    #[test]
    fn malformed_packs_are_refused() {
        let p = Pack::new("m", 4, vec![("a".into(), vec![1.0, 0.0, 0.0, 0.0])]).unwrap();
        let b = p.encode(Dtype::F16);
        assert_eq!(Pack::decode(b"nope"), Err(PackError::Magic));
        for cut in 0..b.len() {
            assert!(Pack::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = b.clone();
        extra.push(0);
        assert_eq!(Pack::decode(&extra), Err(PackError::Trailing(1)));
        let mut huge = b.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Pack::decode(&huge), Err(PackError::Header { .. })));
        assert!(matches!(
            Pack::new("m", 4, vec![("a".into(), vec![1.0])]),
            Err(PackError::Dim { .. })
        ));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Pack::decode(&bytes);
            let mut b = b"TPK1".to_vec();
            b.extend_from_slice(&bytes);
            let _ = Pack::decode(&b);
        }
    }
}
