//! Finding assets, with no IO: the filters every search surface shares (the PWA's search page,
//! Immich's `search/metadata` and `search/smart` on the node), free-text matching over what the
//! catalogue knows of a photo, and the two-stage vector scan over CLIP packs.
//!
//! Vector search is exact where it matters: sign codes (one bit per dimension) pick candidates
//! by Hamming distance, then the candidates are rescored with the int8 vectors (a dot product
//! with the f32 query). With the default oversampling the candidate set is hundreds of times
//! `k`, so planted neighbours are always among them; [`VectorIndex::exact_top_k`] is the plain
//! f32 reference the tests compare with.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ml::PersonRecord;
use crate::pack::Pack;
use crate::{AssetRecord, DocId, Library, LibraryError};

/// Photos or videos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Media {
    Image,
    Video,
}

/// Which of archived / trashed assets a search sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// The timeline: not archived, not trashed (Immich's default).
    #[default]
    Timeline,
    Archive,
    /// Timeline and archive.
    All,
    Trash,
}

/// Filters that combine (all must hold). Strings match case- and accent-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Filters {
    /// Free text: every word must match the file name, camera, lens, place, a person's name,
    /// the year or the month name of the photo.
    pub text: Option<String>,
    /// Person ids: the photo shows all of them.
    pub people: Vec<String>,
    pub country: Option<String>,
    pub state: Option<String>,
    pub city: Option<String>,
    /// Inclusive bounds on the capture time, compared as ISO 8601 prefixes (`2023`,
    /// `2023-06-01`, a full timestamp).
    pub taken_after: Option<String>,
    pub taken_before: Option<String>,
    pub make: Option<String>,
    pub model: Option<String>,
    pub lens: Option<String>,
    pub media: Option<Media>,
    pub favorite: Option<bool>,
    pub visibility: Visibility,
    /// A part of the file name.
    pub filename: Option<String>,
    /// Words read in the photo (OCR): every word must be there (Immich's `ocr`).
    pub ocr: Option<String>,
}

/// What a search knows of one asset beyond its record.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts<'a> {
    /// The people in the photo (effective person ids).
    pub people: &'a [Arc<str>],
    /// Their names (for free text).
    pub names: &'a [Arc<str>],
    /// Text read in the photo (OCR by the ML node).
    pub text: Option<&'a str>,
}

/// A text field search tests ([`Searched::with_field`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Filename,
    Make,
    Model,
    Lens,
    City,
    State,
    Country,
}

impl Field {
    /// The fields free text is matched against, in [`haystack`]'s order.
    pub const TEXT: [Field; 7] = [
        Field::Filename,
        Field::Make,
        Field::Model,
        Field::Lens,
        Field::City,
        Field::State,
        Field::Country,
    ];
}

/// What search reads of a photo: an [`AssetRecord`], or the PWA's compact item (which holds
/// cameras and places interned, and so lends a field to a closure rather than returning it).
/// Filters and free text test either without building a record.
pub trait Searched {
    fn id(&self) -> &str;
    fn taken_at(&self) -> Option<&str>;
    /// `f` with the field's value.
    fn with_field<R>(&self, field: Field, f: impl FnOnce(Option<&str>) -> R) -> R;
    fn is_video(&self) -> bool;
    fn is_purged(&self) -> bool;
    /// [`AssetRecord::is_trashed`].
    fn is_trashed(&self) -> bool;
    /// [`AssetRecord::shown_alone`].
    fn shown_alone(&self) -> bool;
    fn archived(&self) -> bool;
    fn favorite(&self) -> bool;
}

/// Lists hold references and the PWA `Arc`s: both are searched as what they point to.
macro_rules! searched_through {
    ($($ptr:ty),*) => {$(
        impl<T: Searched + ?Sized> Searched for $ptr {
            fn id(&self) -> &str {
                (**self).id()
            }
            fn taken_at(&self) -> Option<&str> {
                (**self).taken_at()
            }
            fn with_field<R>(&self, field: Field, f: impl FnOnce(Option<&str>) -> R) -> R {
                (**self).with_field(field, f)
            }
            fn is_video(&self) -> bool {
                (**self).is_video()
            }
            fn is_purged(&self) -> bool {
                (**self).is_purged()
            }
            fn is_trashed(&self) -> bool {
                (**self).is_trashed()
            }
            fn shown_alone(&self) -> bool {
                (**self).shown_alone()
            }
            fn archived(&self) -> bool {
                (**self).archived()
            }
            fn favorite(&self) -> bool {
                (**self).favorite()
            }
        }
    )*};
}
searched_through!(&T, Arc<T>);

impl Searched for AssetRecord {
    fn id(&self) -> &str {
        &self.id
    }
    fn taken_at(&self) -> Option<&str> {
        self.taken_at.as_deref()
    }
    fn with_field<R>(&self, field: Field, f: impl FnOnce(Option<&str>) -> R) -> R {
        f(match field {
            Field::Filename => self.filename.as_deref(),
            Field::Make => self.make.as_deref(),
            Field::Model => self.model.as_deref(),
            Field::Lens => self.lens.as_deref(),
            Field::City => self.city.as_deref(),
            Field::State => self.state.as_deref(),
            Field::Country => self.country.as_deref(),
        })
    }
    fn is_video(&self) -> bool {
        AssetRecord::is_video(self)
    }
    fn is_purged(&self) -> bool {
        AssetRecord::is_purged(self)
    }
    fn is_trashed(&self) -> bool {
        AssetRecord::is_trashed(self)
    }
    fn shown_alone(&self) -> bool {
        AssetRecord::shown_alone(self)
    }
    fn archived(&self) -> bool {
        self.archived == Some(true)
    }
    fn favorite(&self) -> bool {
        self.favorite == Some(true)
    }
}

const STOP_WORDS: [&str; 12] = [
    "a", "an", "and", "at", "in", "of", "on", "the", "with", "from", "to", "photo",
];

/// Lowercase without accents (the Latin letters people type without them).
pub fn fold(s: &str) -> String {
    s.chars()
        .flat_map(char::to_lowercase)
        .map(unaccent)
        .collect()
}

fn unaccent(c: char) -> char {
    match c {
        'à'..='å' | 'ā' | 'ă' | 'ą' => 'a',
        'ç' | 'ć' | 'č' => 'c',
        'ď' | 'đ' => 'd',
        'è'..='ë' | 'ē' | 'ė' | 'ę' | 'ě' => 'e',
        'ì'..='ï' | 'ī' | 'į' | 'ı' => 'i',
        'ñ' | 'ń' | 'ň' => 'n',
        'ò'..='ö' | 'ø' | 'ō' | 'ő' => 'o',
        'ù'..='ü' | 'ū' | 'ů' | 'ű' => 'u',
        'ý' | 'ÿ' => 'y',
        'ś' | 'š' | 'ş' => 's',
        'ź' | 'ż' | 'ž' => 'z',
        'ł' => 'l',
        'ř' => 'r',
        'ť' | 'ţ' => 't',
        'ğ' => 'g',
        c => c,
    }
}

/// The words of a text, folded (letters and digits; anything else separates).
pub fn words(s: &str) -> Vec<String> {
    fold(s)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The words of a query that must match (stop words dropped).
pub fn query_words(s: &str) -> Vec<String> {
    words(s)
        .into_iter()
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .collect()
}

/// Whether folded `hay` contains folded `needle` (ASCII: compared where they lie, since a
/// search tests every photo of the library).
fn contains_folded(hay: Option<&str>, needle: &str) -> bool {
    hay.is_some_and(|h| {
        if h.is_ascii() && needle.is_ascii() {
            let (h, n) = (h.as_bytes(), needle.as_bytes());
            n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
        } else {
            fold(h).contains(&fold(needle))
        }
    })
}

/// Whether `hay` and `want` are equal folded and trimmed.
fn equals_folded(hay: Option<&str>, want: &str) -> bool {
    hay.is_some_and(|h| {
        let (h, w) = (h.trim(), want.trim());
        if h.is_ascii() && w.is_ascii() {
            h.eq_ignore_ascii_case(w)
        } else {
            fold(h) == fold(w)
        }
    })
}

/// The words a photo can be found by: file name, camera, lens, place, people's names, year
/// and month name.
pub fn haystack(r: &AssetRecord, f: Facts<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for s in [
        r.filename.as_deref(),
        r.make.as_deref(),
        r.model.as_deref(),
        r.lens.as_deref(),
        r.city.as_deref(),
        r.state.as_deref(),
        r.country.as_deref(),
    ]
    .into_iter()
    .flatten()
    {
        out.extend(words(s));
    }
    for n in f.names {
        out.extend(words(n));
    }
    if let Some(t) = f.text {
        out.extend(words(t));
    }
    if let Some(t) = r.taken_at.as_deref().filter(|t| t.len() >= 7) {
        // (`get`: a synced date is not trusted to be ASCII.)
        out.extend(t.get(..4).map(str::to_owned));
        if let Some(Ok(m)) = t.get(5..7).map(str::parse::<usize>) {
            if (1..=12).contains(&m) {
                out.push(crate::record::MONTH_NAMES[m - 1].to_lowercase());
            }
        }
    }
    if r.is_video() {
        out.push("video".into());
    }
    out
}

/// Every query word is a prefix of some word of the photo ("par" finds Paris, "2023" the
/// year). An empty query matches everything.
pub fn text_matches(query: &[String], hay: &[String]) -> bool {
    query
        .iter()
        .all(|q| hay.iter().any(|h| h.starts_with(q.as_str())))
}

/// Whether a word of `s` ([`words`]) starts with `q` (a folded query word). ASCII text —
/// nearly every camera, place and file name — is tested where it lies, without folding it
/// into new strings: a search tests every photo of the library.
fn has_word_starting(s: &str, q: &str) -> bool {
    if s.is_ascii() {
        s.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| {
            w.len() >= q.len() && w.as_bytes()[..q.len()].eq_ignore_ascii_case(q.as_bytes())
        })
    } else {
        words(s).iter().any(|w| w.starts_with(q))
    }
}

/// [`text_matches`] of `query` (folded words) against [`haystack`]`(r, f)`, without building
/// the haystack.
pub fn text_matches_photo<S: Searched + ?Sized>(query: &[String], r: &S, f: Facts<'_>) -> bool {
    let taken = r.taken_at().filter(|t| t.len() >= 7);
    let month = taken
        .and_then(|t| t.get(5..7)?.parse::<usize>().ok())
        .filter(|m| (1..=12).contains(m))
        .map(|m| crate::record::MONTH_NAMES[m - 1]);
    query.iter().all(|q| {
        let q = q.as_str();
        Field::TEXT
            .iter()
            .any(|&field| r.with_field(field, |v| v.is_some_and(|v| has_word_starting(v, q))))
            || f.names.iter().any(|n| has_word_starting(n, q))
            || f.text.is_some_and(|t| has_word_starting(t, q))
            || taken.is_some_and(|t| t.get(..4).is_some_and(|y| y.starts_with(q)))
            || month.is_some_and(|m| has_word_starting(m, q))
            || (r.is_video() && "video".starts_with(q))
    })
}

/// [`Filters::compile`]: filters ready to test records.
pub struct CompiledFilters<'a> {
    filters: &'a Filters,
    words: Vec<String>,
}

impl CompiledFilters<'_> {
    pub fn matches<S: Searched + ?Sized>(&self, r: &S, people: &PeopleIndex) -> bool {
        let facts = people.facts(r.id());
        self.filters.matches_fields(r, facts)
            && (self.words.is_empty() || text_matches_photo(&self.words, r, facts))
    }
}

impl Filters {
    /// The filters and free text as one test of a record (`people`: who is in it, its text).
    pub fn matcher<'a>(&'a self, people: &'a PeopleIndex) -> impl Fn(&AssetRecord) -> bool + 'a {
        let m = self.compile();
        move |r| m.matches(r, people)
    }

    /// The filters with the free text split into words once, to test many records.
    pub fn compile(&self) -> CompiledFilters<'_> {
        CompiledFilters {
            filters: self,
            words: self.text.as_deref().map(query_words).unwrap_or_default(),
        }
    }
    /// Whether nothing but visibility is asked for.
    pub fn is_empty(&self) -> bool {
        let Filters { visibility, .. } = self;
        *self
            == Filters {
                visibility: *visibility,
                ..Default::default()
            }
    }

    /// Whether the asset passes every filter (free text included).
    pub fn matches<S: Searched + ?Sized>(&self, r: &S, f: Facts<'_>) -> bool {
        self.matches_fields(r, f)
            && self
                .text
                .as_deref()
                .map(query_words)
                .is_none_or(|q| q.is_empty() || text_matches_photo(&q, r, f))
    }

    /// Every filter but free text (smart search ranks by the text instead).
    pub fn matches_fields<S: Searched + ?Sized>(&self, r: &S, f: Facts<'_>) -> bool {
        if r.is_purged() || !r.shown_alone() {
            return false;
        }
        let archived = r.archived();
        let visible = match self.visibility {
            Visibility::Timeline => !archived && !r.is_trashed(),
            Visibility::Archive => archived && !r.is_trashed(),
            Visibility::All => !r.is_trashed(),
            Visibility::Trash => r.is_trashed(),
        };
        if !visible {
            return false;
        }
        if !self
            .people
            .iter()
            .all(|p| f.people.iter().any(|q| **q == **p))
        {
            return false;
        }
        let exact = [
            (&self.country, Field::Country),
            (&self.state, Field::State),
            (&self.city, Field::City),
            (&self.make, Field::Make),
            (&self.model, Field::Model),
            (&self.lens, Field::Lens),
        ];
        if exact.iter().any(|(want, field)| {
            want.as_deref()
                .is_some_and(|w| !r.with_field(*field, |have| equals_folded(have, w)))
        }) {
            return false;
        }
        if let Some(n) = self.filename.as_deref() {
            if !r.with_field(Field::Filename, |have| contains_folded(have, n)) {
                return false;
            }
        }
        if let Some(t) = self.ocr.as_deref().filter(|t| !t.trim().is_empty()) {
            let have = words(f.text.unwrap_or_default());
            if !text_matches(&query_words(t), &have) {
                return false;
            }
        }
        if let Some(m) = self.media {
            if r.is_video() != (m == Media::Video) {
                return false;
            }
        }
        if let Some(fav) = self.favorite {
            if r.favorite() != fav {
                return false;
            }
        }
        let taken = r.taken_at();
        if let Some(a) = self.taken_after.as_deref() {
            // A prefix bound: "2023-06" includes all of June.
            if taken.is_none_or(|t| t < a) {
                return false;
            }
        }
        if let Some(b) = self.taken_before.as_deref() {
            if taken.is_none_or(|t| t.get(..b.len()).is_none_or(|p| p > b)) {
                return false;
            }
        }
        true
    }
}

/// Vectors of one model, ready for two-stage search.
#[derive(Debug, Clone, Default)]
pub struct VectorIndex {
    pub dim: usize,
    pub keys: Vec<String>,
    /// Sign bits, `words` u64 per row.
    codes: Vec<u64>,
    words: usize,
    /// int8 rows, `dim` per row, value = q × scale.
    quant: Vec<i8>,
    scales: Vec<f32>,
}

/// How many candidates stage one keeps per result asked for (at least [`MIN_CANDIDATES`]).
pub const OVERSAMPLE: usize = 16;
pub const MIN_CANDIDATES: usize = 1024;

impl VectorIndex {
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            words: dim.div_ceil(64),
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Bytes held by the index (codes, int8 rows, scales; keys excluded).
    pub fn bytes(&self) -> usize {
        self.codes.len() * 8 + self.quant.len() + self.scales.len() * 4
    }

    /// Adds a pack's vectors (of this index's dimension; other packs are skipped, and the
    /// return says so).
    pub fn add_pack(&mut self, p: &Pack) -> bool {
        if p.dim != self.dim {
            return false;
        }
        for (k, v) in p.items() {
            self.push(k, v);
        }
        true
    }

    pub fn push(&mut self, key: &str, v: &[f32]) {
        debug_assert_eq!(v.len(), self.dim);
        self.keys.push(key.to_owned());
        self.codes.extend(sign_code(v));
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        self.scales.push(scale);
        self.quant.extend(
            v.iter()
                .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8),
        );
    }

    /// The stored (int8) vector of a row as f32.
    pub fn vector(&self, i: usize) -> Vec<f32> {
        let s = self.scales[i];
        self.quant[i * self.dim..(i + 1) * self.dim]
            .iter()
            .map(|&q| f32::from(q) * s)
            .collect()
    }

    fn score(&self, q: &[f32], i: usize) -> f32 {
        let row = &self.quant[i * self.dim..(i + 1) * self.dim];
        // Eight lanes, so the compiler vectorises (wasm simd128, SSE/AVX, NEON).
        let mut acc = [0f32; 8];
        let mut qc = q.chunks_exact(8);
        let mut rc = row.chunks_exact(8);
        for (a, b) in (&mut qc).zip(&mut rc) {
            for l in 0..8 {
                acc[l] += a[l] * f32::from(b[l]);
            }
        }
        let mut s: f32 = acc.iter().sum();
        for (a, b) in qc.remainder().iter().zip(rc.remainder()) {
            s += a * f32::from(*b);
        }
        s * self.scales[i]
    }

    /// The `k` best rows for `q` among those `allow` accepts: Hamming distance of the sign
    /// codes picks `max(k × OVERSAMPLE, MIN_CANDIDATES)` candidates, the int8 dot product
    /// ranks them. Scores descend; ties break by row.
    pub fn search(&self, q: &[f32], k: usize, allow: impl Fn(usize) -> bool) -> Vec<(usize, f32)> {
        self.search_with(q, k, (k * OVERSAMPLE).max(MIN_CANDIDATES), allow)
    }

    pub fn search_with(
        &self,
        q: &[f32],
        k: usize,
        candidates: usize,
        allow: impl Fn(usize) -> bool,
    ) -> Vec<(usize, f32)> {
        if q.len() != self.dim || k == 0 || self.is_empty() {
            return Vec::new();
        }
        let found = hamming_candidates([&self.codes[..]], q, candidates, allow);
        let mut scored: Vec<(usize, f32)> =
            found.into_iter().map(|i| (i, self.score(q, i))).collect();
        rank(&mut scored, k);
        scored
    }

    /// The plain f32 reference: every allowed row scored with its stored vector.
    pub fn exact_top_k(
        &self,
        q: &[f32],
        k: usize,
        allow: impl Fn(usize) -> bool,
    ) -> Vec<(usize, f32)> {
        let mut scored: Vec<(usize, f32)> = (0..self.len())
            .filter(|&i| allow(i))
            .map(|i| (i, self.vector(i).iter().zip(q).map(|(a, b)| a * b).sum()))
            .collect();
        rank(&mut scored, k);
        scored
    }
}

/// Stage one of the two-stage search over sign codes held in parts (one per pack, say; rows
/// are numbered across the parts in order): the rows `allow` accepts within the Hamming cut
/// that keeps at least `candidates` of them (see [`candidate_threshold`]), in row order.
/// Stage two scores them with the stored vectors.
pub fn hamming_candidates<'a>(
    parts: impl IntoIterator<Item = &'a [u64]>,
    q: &[f32],
    candidates: usize,
    allow: impl Fn(usize) -> bool,
) -> Vec<usize> {
    let qc = sign_code(q);
    let words = qc.len().max(1);
    let dist: Vec<u32> = parts
        .into_iter()
        .flat_map(|codes| codes.chunks_exact(words))
        .enumerate()
        .map(|(i, row)| {
            if !allow(i) {
                return u32::MAX;
            }
            row.iter().zip(&qc).map(|(a, b)| (a ^ b).count_ones()).sum()
        })
        .collect();
    let mut hist = vec![0u32; words * 64 + 1];
    for &d in &dist {
        if let Some(h) = hist.get_mut(d as usize) {
            *h += 1;
        }
    }
    let (threshold, _) = candidate_threshold(&hist, candidates);
    dist.iter()
        .enumerate()
        .filter(|(_, &d)| d <= threshold)
        .map(|(i, _)| i)
        .collect()
}

/// A vector's sign code: bit `j` of word `j / 64` set when component `j` is positive.
pub fn sign_code(v: &[f32]) -> Vec<u64> {
    v.chunks(64)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u64, |w, (i, x)| if *x > 0.0 { w | (1 << i) } else { w })
        })
        .collect()
}

/// Stage one's cut: the smallest Hamming distance `t` such that at least `candidates` rows
/// are within `t` (all rows when fewer), and how many rows that keeps. A threshold rather
/// than an exact count keeps every row tied at the cut, so the CPU, wasm and GPU kernels
/// (which count in parallel) pick the same candidates.
pub fn candidate_threshold(hist: &[u32], candidates: usize) -> (u32, usize) {
    let mut total = 0usize;
    for (d, &c) in hist.iter().enumerate() {
        total += c as usize;
        if total >= candidates {
            return (d as u32, total);
        }
    }
    (hist.len().saturating_sub(1) as u32, total)
}

/// Parts of the index for other kernels (the GPU one): sign codes as little-endian u32 words,
/// int8 rows packed four to a u32, and the per-row scales.
impl VectorIndex {
    pub fn words32(&self) -> usize {
        self.words * 2
    }

    pub fn codes_u32(&self) -> Vec<u32> {
        self.codes
            .iter()
            .flat_map(|w| [*w as u32, (*w >> 32) as u32])
            .collect()
    }

    /// int8 rows packed little-endian four to a u32; rows are padded to a multiple of four.
    pub fn quant_u32(&self) -> Vec<u32> {
        let per = self.dim.div_ceil(4);
        let mut out = Vec::with_capacity(self.len() * per);
        for row in self.quant.chunks(self.dim.max(1)) {
            for c in row.chunks(4) {
                let mut b = [0u8; 4];
                for (x, y) in b.iter_mut().zip(c) {
                    *x = *y as u8;
                }
                out.push(u32::from_le_bytes(b));
            }
            out.extend(std::iter::repeat_n(0, per - row.len().div_ceil(4)));
        }
        out
    }

    pub fn scales(&self) -> &[f32] {
        &self.scales
    }
}

/// Generated vectors with known neighbours, for parity tests and benches of every kernel
/// (native, wasm, GPU): deterministic, no RNG crate.
pub mod synthetic {
    /// Pseudo-random unit vectors (xorshift), one at a time (300k × 512 need not be held).
    pub fn vectors_iter(n: usize, dim: usize, seed: u64) -> impl Iterator<Item = Vec<f32>> {
        let mut s = seed | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
        };
        (0..n).map(move |_| normalise((0..dim).map(|_| next()).collect()))
    }

    pub fn vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        vectors_iter(n, dim, seed).collect()
    }

    pub fn normalise(v: Vec<f32>) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-9);
        v.into_iter().map(|x| x / n).collect()
    }

    /// `n` random rows, then `planted` near neighbours for each of `queries` queries (the
    /// query plus growing noise, so their order is known: row `n + qi × planted + j` is the
    /// `j`-th nearest of query `qi`). Returns (rows, queries); rows come one at a time.
    pub fn planted(
        n: usize,
        dim: usize,
        queries: usize,
        planted: usize,
        seed: u64,
    ) -> (impl Iterator<Item = Vec<f32>>, Vec<Vec<f32>>) {
        let qs = vectors(queries, dim, seed.wrapping_mul(31).wrapping_add(7));
        let noise = vectors(queries * planted, dim, seed.wrapping_add(5));
        let near: Vec<Vec<f32>> = qs
            .iter()
            .enumerate()
            .flat_map(|(qi, q)| {
                let noise = &noise;
                (0..planted).map(move |j| {
                    normalise(
                        q.iter()
                            .zip(&noise[qi * planted + j])
                            .map(|(a, b)| a + b * (0.2 + j as f32 * 0.05))
                            .collect(),
                    )
                })
            })
            .collect();
        (vectors_iter(n, dim, seed).chain(near), qs)
    }
}

/// Keeps the `k` best of `scored`: scores descend, ties break by row.
pub fn rank(scored: &mut Vec<(usize, f32)>, k: usize) {
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(k);
}

/// A vector's sign code as little-endian u32 words (the layout of [`VectorIndex::codes_u32`],
/// what the GPU kernel compares against).
pub fn sign_code_u32(v: &[f32]) -> Vec<u32> {
    sign_code(v)
        .iter()
        .flat_map(|w| [*w as u32, (*w >> 32) as u32])
        .collect()
}

/// People ids or names, each held once and shared by every photo they are in.
type Shared = Vec<Arc<str>>;

/// Who is in which photo, for search: effective people (merges resolved, hidden people left
/// out) and their names. Each person's id and name is held once and shared by their photos
/// (75k photos with faces at 300k).
#[derive(Debug, Clone, Default)]
pub struct PeopleIndex {
    by_asset: HashMap<Box<str>, (Shared, Shared)>,
    /// Person id → name (named people only).
    pub names: HashMap<String, String>,
    /// Asset id → text read in it (OCR).
    pub text: HashMap<String, String>,
}

impl PeopleIndex {
    pub fn facts(&self, asset: &str) -> Facts<'_> {
        let text = self.text.get(asset).map(String::as_str);
        match self.by_asset.get(asset) {
            Some((p, n)) => Facts {
                people: p,
                names: n,
                text,
            },
            None => Facts {
                text,
                ..Facts::default()
            },
        }
    }

    /// The people in a photo.
    pub fn people_of(&self, asset: &str) -> &[Arc<str>] {
        self.by_asset.get(asset).map_or(&[], |(p, _)| p)
    }
}

/// Reads a shard's records for [`Library::searchable_in`].
pub type ReadShard<'a> =
    dyn FnMut(&Library, &DocId) -> Result<Arc<Vec<AssetRecord>>, LibraryError> + 'a;

/// Whose shard a searched document is ([`Library::search_shards`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardScope {
    Own,
    Partner,
}

/// Whether a partner's record shows in the user's timeline and search (not purged, trashed
/// or archived by the partner).
pub fn partner_record_shown<S: Searched + ?Sized>(r: &S) -> bool {
    !r.is_purged() && !r.is_trashed() && !r.archived()
}

/// Which records of [`Library::search_shards`]' months, taken in that order (the user's own
/// first), are searched: none purged; a partner's only if [`partner_record_shown`] and not
/// also the user's own (a partner's photo saved to this library counts once, as theirs).
/// `K` is how the user's own ids are kept (`String`, or the PWA's shared `Arc<str>`); they are
/// kept only when partners' months follow.
pub struct SearchedOnce<K> {
    partners: bool,
    own: HashSet<K>,
}

impl<K: std::hash::Hash + Eq + std::borrow::Borrow<str>> SearchedOnce<K> {
    pub fn new(shards: &[(DocId, ShardScope)]) -> Self {
        Self {
            partners: shards.iter().any(|(_, s)| *s == ShardScope::Partner),
            own: HashSet::new(),
        }
    }

    /// Whether `r`, read from a month of `scope`, is searched; `key` makes its id to keep.
    pub fn admits<S: Searched + ?Sized>(
        &mut self,
        scope: ShardScope,
        r: &S,
        key: impl FnOnce() -> K,
    ) -> bool {
        if r.is_purged() {
            return false;
        }
        match scope {
            ShardScope::Own => {
                if self.partners {
                    self.own.insert(key());
                }
                true
            }
            ShardScope::Partner => partner_record_shown(r) && !self.own.contains(r.id()),
        }
    }
}

impl Library {
    /// The assets `user` searches: their own, and those of partners whose photos they chose
    /// to see in their timeline (not archived or trashed there; a partner's photo saved to
    /// this library counts once, as the user's). Purged tombstones are left out.
    pub fn searchable(&self, user: &str) -> Result<Vec<AssetRecord>, LibraryError> {
        self.searchable_in(user, None, &|_| true, &mut |lib, doc| {
            lib.assets(doc).map(Arc::new)
        })
    }

    /// The shard documents `user` searches (their own, then partners' shown in their
    /// timeline), limited to one capture month (`YYYY-MM`) when `month` is set. A partner's
    /// record counts only if [`partner_record_shown`] (and it is not also the user's own).
    pub fn search_shards(
        &self,
        user: &str,
        month: Option<&str>,
    ) -> Result<Vec<(DocId, ShardScope)>, LibraryError> {
        let wanted = |m: &str| month.is_none_or(|w| w == m);
        let mut out = Vec::new();
        for s in self.shards(user)? {
            if wanted(&s.month) {
                out.push((DocId::shard(user, &s.month)?, ShardScope::Own));
            }
        }
        for share in self.shared_with(user)? {
            if !self.partner_in_timeline(user, &share.sharer) {
                continue;
            }
            for s in self.shards(&share.sharer)? {
                if share.covers_month(&s.month) && wanted(&s.month) {
                    out.push((DocId::shard(&share.sharer, &s.month)?, ShardScope::Partner));
                }
            }
        }
        Ok(out)
    }

    /// [`Library::searchable`] limited to one capture month (`YYYY-MM`) when `month` is set,
    /// and to the records `keep` accepts (only those are copied), reading each shard through
    /// `read` (the node answers from its cache of shard records).
    pub fn searchable_in(
        &self,
        user: &str,
        month: Option<&str>,
        keep: &dyn Fn(&AssetRecord) -> bool,
        read: &mut ReadShard<'_>,
    ) -> Result<Vec<AssetRecord>, LibraryError> {
        let mut out = Vec::new();
        let shards = self.search_shards(user, month)?;
        let mut once = SearchedOnce::<String>::new(&shards);
        for (doc, scope) in shards {
            for r in read(self, &doc)?.iter() {
                if once.admits(scope, r, || r.id.clone()) && keep(r) {
                    out.push(r.clone());
                }
            }
        }
        Ok(out)
    }

    /// Who is in which of `user`'s photos.
    pub fn people_index(&self, user: &str) -> Result<PeopleIndex, LibraryError> {
        let parts = self
            .ml_doc_ids(user)
            .iter()
            .map(|doc| self.ml_doc_people(doc))
            .collect::<Result<Vec<_>, _>>()?;
        self.people_index_of(user, &parts)
    }

    /// What one ML document says for search: each face's person as recorded (merges not
    /// resolved, hidden people not left out) and the text read in each photo. A peer keeps
    /// these per document and revision, so a change to one month reads one month again.
    pub fn ml_doc_people(&self, doc: &DocId) -> Result<MlDocPeople, LibraryError> {
        use crate::ml::{typed, FaceRecord, MlMark, FACE_PREFIX, MARK_PREFIX};
        let mut part = MlDocPeople::default();
        let mut persons = HashMap::new();
        // One read of the document, not kept loaded: the caller keeps the part.
        for (key, m) in self.entries_passing(doc, "")? {
            if let Some(asset) = key.strip_prefix(MARK_PREFIX) {
                let Ok(m) = typed::<MlMark>(doc, &key, m) else {
                    continue;
                };
                if let Some(t) = m.text.filter(|t| !t.trim().is_empty()) {
                    part.push_text(asset, &t);
                }
            } else if key.starts_with(FACE_PREFIX) {
                let Ok(f) = typed::<FaceRecord>(doc, &key, m) else {
                    continue;
                };
                if let Some(p) = f.effective_person() {
                    if part.push_face_with(&key, p, &mut persons).is_none() {
                        return Err(LibraryError::Malformed {
                            doc: doc.to_string(),
                            id: key,
                            reason: "too many faces in one ML document".into(),
                        });
                    }
                }
            }
        }
        part.shrink();
        Ok(part)
    }

    /// Resolves the people faces record to whom they are now: merges followed, `None` for a
    /// hidden person; each person once however many faces they have.
    fn person_resolver<'a>(
        &'a self,
        user: &'a str,
        records: &'a HashMap<String, PersonRecord>,
    ) -> impl FnMut(&str) -> Result<Option<String>, LibraryError> + 'a {
        let mut resolved: HashMap<String, Option<String>> = HashMap::new();
        move |p: &str| {
            if let Some(r) = resolved.get(p) {
                return Ok(r.clone());
            }
            let r = self.resolve_person(user, p)?;
            let r = records
                .get(&r)
                .is_none_or(|r| r.hidden != Some(true))
                .then_some(r);
            resolved.insert(p.to_owned(), r.clone());
            Ok(r)
        }
    }

    /// People of `user` that have faces in `parts` (one per ML document), merged people folded
    /// into their target, hidden ones included, most faces first; each with where its cover
    /// face is (the chosen cover, else the first face found).
    pub fn people_counts_of<'a>(
        &self,
        user: &str,
        parts: impl IntoIterator<Item = (&'a DocId, &'a MlDocPeople)>,
    ) -> Result<Vec<PersonCount>, LibraryError> {
        let records: HashMap<String, PersonRecord> = self.people(user)?.into_iter().collect();
        let mut resolved: HashMap<&str, String> = HashMap::new();
        let mut out: HashMap<String, PersonCount> = HashMap::new();
        for (doc, part) in parts {
            for (key, p) in part.faces() {
                let p = match resolved.get(p) {
                    Some(r) => r.clone(),
                    None => {
                        let r = self.resolve_person(user, p)?;
                        resolved.insert(p, r.clone());
                        r
                    }
                };
                let v = out.entry(p.clone()).or_insert_with(|| PersonCount {
                    record: records.get(&p).cloned().unwrap_or_default(),
                    id: p,
                    faces: 0,
                    cover: None,
                });
                v.faces += 1;
                if v.cover.is_none() || v.record.cover.as_deref() == Some(key) {
                    v.cover = Some((doc.clone(), key.to_owned()));
                }
            }
        }
        let mut v: Vec<PersonCount> = out.into_values().collect();
        v.sort_by(|a, b| b.faces.cmp(&a.faces).then_with(|| a.id.cmp(&b.id)));
        Ok(v)
    }

    /// [`Library::people_index`] from the parts of `user`'s ML documents: merges resolved,
    /// hidden people left out, names from the people document.
    pub fn people_index_of<'a>(
        &self,
        user: &str,
        parts: impl IntoIterator<Item = &'a MlDocPeople>,
    ) -> Result<PeopleIndex, LibraryError> {
        let records: HashMap<String, PersonRecord> = self.people(user)?.into_iter().collect();
        let mut idx = PeopleIndex::default();
        for (id, r) in &records {
            if let Some(n) = r.name.as_deref().filter(|n| !n.trim().is_empty()) {
                idx.names.insert(id.clone(), n.to_owned());
            }
        }
        let mut resolve = self.person_resolver(user, &records);
        // Each person's id and name once, shared by every photo they are in.
        let mut shared: HashMap<String, (Arc<str>, Option<Arc<str>>)> = HashMap::new();
        for part in parts {
            for (asset, t) in part.text() {
                idx.text.insert(asset.to_owned(), t.to_owned());
            }
            for (key, p) in part.faces() {
                let Some(p) = resolve(p)? else { continue };
                let Some(asset) = crate::ml::face_asset(key) else {
                    continue;
                };
                let (id, name) = shared
                    .entry(p)
                    .or_insert_with_key(|p| {
                        (
                            Arc::from(p.as_str()),
                            idx.names.get(p).map(|n| Arc::from(n.as_str())),
                        )
                    })
                    .clone();
                let e = idx.by_asset.entry(Box::from(asset)).or_default();
                if !e.0.contains(&id) {
                    e.1.extend(name);
                    e.0.push(id);
                }
            }
        }
        for (p, n) in idx.by_asset.values_mut() {
            p.shrink_to_fit();
            n.shrink_to_fit();
        }
        idx.by_asset.shrink_to_fit();
        idx.text.shrink_to_fit();
        Ok(idx)
    }
}

/// A person with faces, and where its cover face is: (ML document, face key).
#[derive(Debug, Clone, PartialEq)]
pub struct PersonCount {
    pub id: String,
    pub record: PersonRecord,
    pub faces: usize,
    pub cover: Option<(DocId, String)>,
}

/// One ML document's part of a [`PeopleIndex`] (see [`Library::ml_doc_people`]), held
/// compactly: a peer keeps one per ML document (150k faces at 300k photos), so the face keys
/// lie end to end in one string and each distinct person is held once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MlDocPeople {
    /// The persons faces record, each once.
    persons: Vec<String>,
    /// The face keys, one after another.
    keys: String,
    /// Per face: where its key ends in `keys`, and its person (index into `persons`).
    faces: Vec<(u32, u32)>,
    /// (asset, text read in it).
    text: Vec<(String, String)>,
}

impl MlDocPeople {
    /// Adds a face and the person it records. `None` when the part is full (4 GiB of keys, or
    /// 2^32 people: never at a month's size).
    pub fn push_face(&mut self, key: &str, person: &str) -> Option<()> {
        let p = match self.persons.iter().rposition(|q| q == person) {
            Some(i) => i,
            None => {
                self.persons.push(person.to_owned());
                self.persons.len() - 1
            }
        };
        self.push_face_of(key, u32::try_from(p).ok()?)
    }

    /// [`MlDocPeople::push_face`] with the person found through `persons` (person → its
    /// index), for a caller adding many faces.
    fn push_face_with(
        &mut self,
        key: &str,
        person: &str,
        persons: &mut HashMap<String, u32>,
    ) -> Option<()> {
        let p = match persons.get(person) {
            Some(&i) => i,
            None => {
                let i = u32::try_from(self.persons.len()).ok()?;
                self.persons.push(person.to_owned());
                persons.insert(person.to_owned(), i);
                i
            }
        };
        self.push_face_of(key, p)
    }

    fn push_face_of(&mut self, key: &str, person: u32) -> Option<()> {
        let end = u32::try_from(self.keys.len() + key.len()).ok()?;
        self.keys.push_str(key);
        self.faces.push((end, person));
        Some(())
    }

    /// Adds the text read in an asset.
    pub fn push_text(&mut self, asset: &str, text: &str) {
        self.text.push((asset.to_owned(), text.to_owned()));
    }

    /// Each face's key and the person it records, in the order pushed. A part decoded from a
    /// damaged file may not hold together: what does not is skipped.
    pub fn faces(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let mut start = 0usize;
        self.faces.iter().filter_map(move |&(end, p)| {
            let key = self.keys.get(start..end as usize);
            start = end as usize;
            Some((key?, self.persons.get(p as usize)?.as_str()))
        })
    }

    /// Each asset's text.
    pub fn text(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.text.iter().map(|(a, t)| (a.as_str(), t.as_str()))
    }

    /// How many faces.
    pub fn len(&self) -> usize {
        self.faces.len()
    }

    /// Whether it holds neither faces nor text.
    pub fn is_empty(&self) -> bool {
        self.faces.is_empty() && self.text.is_empty()
    }

    /// Rough heap bytes held (for a cache's statistics).
    pub fn bytes(&self) -> usize {
        self.keys.capacity()
            + self.faces.capacity() * 8
            + self
                .persons
                .iter()
                .map(|p| p.capacity() + 24)
                .sum::<usize>()
            + self
                .text
                .iter()
                .map(|(a, t)| a.capacity() + t.capacity() + 48)
                .sum::<usize>()
    }

    /// Gives back memory reserved beyond what is held (a part is kept long after it is made).
    pub fn shrink(&mut self) {
        self.keys.shrink_to_fit();
        self.faces.shrink_to_fit();
        self.persons.shrink_to_fit();
        self.text.shrink_to_fit();
    }
}

/// Metadata search: the records passing `f`, newest capture first.
pub fn filter_records<'a>(
    records: &'a [AssetRecord],
    people: &PeopleIndex,
    f: &Filters,
) -> Vec<&'a AssetRecord> {
    let matches = f.matcher(people);
    let mut out: Vec<&AssetRecord> = records.iter().filter(|r| matches(r)).collect();
    out.sort_by(|a, b| b.taken_at.cmp(&a.taken_at).then_with(|| a.id.cmp(&b.id)));
    out
}

/// Splits a free-text query into the people it names (by their full name, folded) and the
/// rest: "Anna at the beach" → (Anna's id, "at the beach"). Smart search filters by the
/// people and ranks by the rest.
pub fn people_in_query(text: &str, people: &PeopleIndex) -> (Vec<String>, String) {
    let mut rest = fold(text);
    let mut found = Vec::new();
    // Longest names first, so "Anna Maria" wins over "Anna".
    let mut names: Vec<(&String, String)> =
        people.names.iter().map(|(id, n)| (id, fold(n))).collect();
    names.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    for (id, n) in names {
        let hit = words_at(&rest, &n);
        if let Some(at) = hit {
            rest.replace_range(at..at + n.len(), " ");
            found.push(id.clone());
        }
    }
    (found, rest.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Where `needle` occurs in `hay` as whole words.
fn words_at(hay: &str, needle: &str) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    hay.match_indices(needle).map(|(i, _)| i).find(|&i| {
        let before = hay[..i].chars().next_back();
        let after = hay[i + needle.len()..].chars().next();
        before.is_none_or(|c| !c.is_alphanumeric()) && after.is_none_or(|c| !c.is_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_partners_photo_is_searched_once_and_only_when_shown() {
        let own = DocId::shard("me", "2023-06").unwrap();
        let theirs = DocId::shard("mum", "2023-06").unwrap();
        let shards = [
            (own.clone(), ShardScope::Own),
            (theirs.clone(), ShardScope::Partner),
        ];
        let mut once = SearchedOnce::<String>::new(&shards);
        let mut purged = rec("p");
        purged.purged_at = Some("2024-01-01T00:00:00Z".into());
        let admitted = |once: &mut SearchedOnce<String>, scope, r: &AssetRecord| {
            once.admits(scope, r, || r.id.clone())
        };
        assert!(admitted(&mut once, ShardScope::Own, &rec("saved")));
        assert!(admitted(&mut once, ShardScope::Own, &rec("mine")));
        assert!(!admitted(&mut once, ShardScope::Own, &purged));
        // Saved from the partner: counted once, as mine.
        assert!(!admitted(&mut once, ShardScope::Partner, &rec("saved")));
        assert!(admitted(&mut once, ShardScope::Partner, &rec("hers")));
        let mut trashed = rec("trashed");
        trashed.trashed_at = Some("2024-01-01T00:00:00Z".into());
        let mut archived = rec("archived");
        archived.archived = Some(true);
        for hidden in [&trashed, &archived, &purged] {
            assert!(
                !admitted(&mut once, ShardScope::Partner, hidden),
                "{}",
                hidden.id
            );
        }
        // No partners' months: nothing of mine is kept, everything not purged is searched.
        let mut alone = SearchedOnce::<String>::new(&shards[..1]);
        assert!(alone.admits(ShardScope::Own, &trashed, || unreachable!("no partners")));
        assert!(alone.own.is_empty());
    }

    fn rec(id: &str) -> AssetRecord {
        AssetRecord {
            id: id.into(),
            taken_at: Some("2023-06-14T18:30:00+02:00".into()),
            filename: Some("IMG_0042.HEIC".into()),
            make: Some("Apple".into()),
            model: Some("iPhone 14 Pro".into()),
            city: Some("Paris".into()),
            state: Some("Île-de-France".into()),
            country: Some("France".into()),
            mime: Some("image/heic".into()),
            ..Default::default()
        }
    }

    #[test]
    fn free_text_matches_people_places_years_and_cameras() {
        let r = rec("a");
        let people: Vec<Arc<str>> = vec!["p1".into()];
        let names: Vec<Arc<str>> = vec!["Anna Müller".into()];
        let f = Facts {
            people: &people,
            names: &names,
            text: Some("TOTAL 12,50 EUR\nBoulangerie Dupont"),
        };
        let hay = haystack(&r, f);
        // Words read in the photo (OCR).
        for q in ["boulangerie", "dupont total"] {
            assert!(text_matches(&query_words(q), &hay), "{q}");
        }
        for q in [
            "Anna in Paris 2023",
            "anna muller",
            "ILE de france",
            "iphone 14",
            "june",
            "img_0042",
            "par",
        ] {
            assert!(text_matches(&query_words(q), &hay), "{q}");
        }
        for q in ["Anna in Tokyo", "2022", "canon", "video"] {
            assert!(!text_matches(&query_words(q), &hay), "{q}");
        }
    }

    #[test]
    fn filters_combine() {
        let mut r = rec("a");
        let people: Vec<Arc<str>> = vec!["p1".into(), "p2".into()];
        let f = Facts {
            people: &people,
            names: &[],
            text: None,
        };
        // Immich's `ocr`: words read in the photo.
        let o = Filters {
            ocr: Some("dupont boul".into()),
            ..Default::default()
        };
        let read = Facts {
            text: Some("Boulangerie DUPONT"),
            ..f
        };
        assert!(o.matches_fields(&r, read));
        assert!(!o.matches_fields(&r, f));
        let mut q = Filters {
            people: vec!["p1".into()],
            city: Some("paris".into()),
            make: Some("APPLE".into()),
            taken_after: Some("2023-06".into()),
            taken_before: Some("2023-06-14".into()),
            media: Some(Media::Image),
            ..Default::default()
        };
        assert!(q.matches(&r, f));
        q.taken_before = Some("2023-06-13".into());
        assert!(!q.matches(&r, f));
        q.taken_before = None;
        q.people.push("p3".into());
        assert!(!q.matches(&r, f));
        q.people.pop();
        r.archived = Some(true);
        assert!(!q.matches(&r, f));
        q.visibility = Visibility::Archive;
        assert!(q.matches(&r, f));
        r.trashed_at = Some("2024-01-01T00:00:00Z".into());
        assert!(!q.matches(&r, f));
        q.visibility = Visibility::Trash;
        assert!(q.matches(&r, f));
        q.media = Some(Media::Video);
        assert!(!q.matches(&r, f));
        assert!(Filters::default().is_empty());
        assert!(!q.is_empty());
    }

    use super::synthetic::{normalise, vectors};

    #[test]
    fn planted_neighbours_are_found_exactly() {
        let dim = 512;
        let base = vectors(20_000, dim, 7);
        let queries = vectors(20, dim, 99);
        let mut idx = VectorIndex::new(dim);
        for (i, v) in base.iter().enumerate() {
            idx.push(&format!("k{i:05}"), v);
        }
        // Plant 10 near neighbours per query (the query plus small noise).
        let noise = vectors(200, dim, 5);
        for (qi, q) in queries.iter().enumerate() {
            for j in 0..10 {
                let v: Vec<f32> = q
                    .iter()
                    .zip(&noise[qi * 10 + j])
                    .map(|(a, b)| a + b * (0.2 + j as f32 * 0.05))
                    .collect();
                idx.push(&format!("q{qi:02}-{j}"), &normalise(v));
            }
        }
        for (qi, q) in queries.iter().enumerate() {
            let got = idx.search(q, 10, |_| true);
            let want = idx.exact_top_k(q, 10, |_| true);
            let rows = |v: &[(usize, f32)]| v.iter().map(|x| x.0).collect::<Vec<_>>();
            assert_eq!(rows(&got), rows(&want), "query {qi}");
            for ((_, a), (_, b)) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4);
            }
            for (i, _) in &got {
                assert!(idx.keys[*i].starts_with(&format!("q{qi:02}-")));
            }
        }
        // A filter applies before ranking.
        let only_even = idx.search(&queries[0], 5, |i| i % 2 == 0);
        assert!(only_even.iter().all(|(i, _)| i % 2 == 0));
        assert_eq!(only_even.len(), 5);
    }

    #[test]
    fn the_cut_keeps_every_row_tied_at_it() {
        assert_eq!(candidate_threshold(&[0, 2, 3, 0, 5], 4), (2, 5));
        assert_eq!(candidate_threshold(&[0, 2, 3, 0, 5], 2), (1, 2));
        assert_eq!(candidate_threshold(&[0, 2, 3, 0, 5], 100), (4, 10));
        assert_eq!(candidate_threshold(&[], 1), (0, 0));
    }

    #[test]
    fn the_gpu_layout_holds_the_same_numbers() {
        let mut idx = VectorIndex::new(70);
        let v: Vec<f32> = (0..70).map(|i| (i as f32 - 35.0) / 35.0).collect();
        idx.push("a", &v);
        idx.push("b", &v.iter().map(|x| -x).collect::<Vec<_>>());
        let q = idx.quant_u32();
        assert_eq!(q.len(), 2 * 18);
        for row in 0..2 {
            for j in 0..70 {
                let b = (q[row * 18 + j / 4] >> (8 * (j % 4))) as u8 as i8;
                assert_eq!(b, idx.quant[row * 70 + j]);
            }
        }
        let codes = idx.codes_u32();
        assert_eq!(codes.len(), 2 * idx.words32());
        for row in 0..2 {
            for j in 0..70 {
                let bit = codes[row * idx.words32() + j / 32] >> (j % 32) & 1;
                assert_eq!(bit == 1, (if row == 0 { v[j] } else { -v[j] }) > 0.0);
            }
        }
        assert_eq!(sign_code_u32(&v), codes[..idx.words32()].to_vec());
    }

    #[test]
    fn names_in_a_query_become_people() {
        let mut idx = PeopleIndex::default();
        idx.names.insert("p1".into(), "Anna".into());
        idx.names.insert("p2".into(), "Anna Maria".into());
        idx.names.insert("p3".into(), "Zoë".into());
        let (p, rest) = people_in_query("Anna Maria and zoe at the beach", &idx);
        assert_eq!(p, vec!["p2".to_owned(), "p3".to_owned()]);
        assert_eq!(rest, "and at the beach");
        let (p, rest) = people_in_query("Annabel", &idx);
        assert!(p.is_empty());
        assert_eq!(rest, "annabel");
    }

    /// `cargo test -p tessera-core --release -- --ignored scan_300k --nocapture`: the two-stage
    /// scan against the f32 full scan at 300k × 512 (the figures `cargo xtask bench` reports).
    #[test]
    #[ignore]
    fn scan_300k() {
        let (n, dim) = (300_000, 512);
        let mut idx = VectorIndex::new(dim);
        for (i, v) in vectors(n, dim, 3).iter().enumerate() {
            idx.push(&i.to_string(), v);
        }
        let qs = vectors(30, dim, 11);
        let time = |f: &dyn Fn(&[f32])| {
            let mut ms: Vec<f64> = qs
                .iter()
                .map(|q| {
                    let t = std::time::Instant::now();
                    f(q);
                    t.elapsed().as_secs_f64() * 1000.0
                })
                .collect();
            ms.sort_by(f64::total_cmp);
            (ms[ms.len() / 2], ms[ms.len() * 95 / 100])
        };
        let two = time(&|q| drop(idx.search(q, 50, |_| true)));
        let full = time(&|q| drop(idx.exact_top_k(q, 50, |_| true)));
        eprintln!(
            "300k x 512: two-stage p50 {:.1} ms p95 {:.1} ms; f32 full scan p50 {:.1} ms p95 {:.1} ms; index {} MB",
            two.0,
            two.1,
            full.0,
            full.1,
            idx.bytes() >> 20
        );
    }

    proptest! {
        /// The free-text test over a photo's fields in place is the test over its haystack,
        /// for text with accents, capitals, digits, punctuation and other scripts, and
        /// queries cut anywhere in those words.
        #[test]
        fn free_text_in_place_is_the_haystack_test(
            fields in proptest::collection::vec(
                proptest::option::of("[A-Za-z0-9 _.\\-]{0,12}|[a-zÀ-ÿłśż日本 ]{0,8}"), 7),
            name in "[A-Za-zÀ-ÿ ]{0,10}",
            ocr in proptest::option::of("[A-Za-z0-9,\n ]{0,16}"),
            taken in proptest::option::of("(19|20)[0-9]{2}-(0[0-9]|1[0-4])-01|[0-9€é-]{0,9}"),
            video in any::<bool>(),
            query in "[A-Za-z0-9À-ÿ日 ]{0,10}",
            cut in 0usize..6,
        ) {
            let field = |i: usize| fields[i].clone();
            let r = AssetRecord {
                id: "a".into(),
                filename: field(0),
                make: field(1),
                model: field(2),
                lens: field(3),
                city: field(4),
                state: field(5),
                country: field(6),
                taken_at: taken,
                mime: Some(if video { "video/mp4" } else { "image/jpeg" }.into()),
                ..Default::default()
            };
            let names: Vec<Arc<str>> = vec![name.into()];
            let f = Facts { people: &[], names: &names, text: ocr.as_deref() };
            // Queries from the photo's own words cut short (so that some match), and the
            // generated one.
            let hay = haystack(&r, f);
            let mut queries: Vec<Vec<String>> = hay
                .iter()
                .map(|w| vec![w.chars().take(cut.max(1)).collect::<String>()])
                .collect();
            queries.push(query_words(&query));
            for q in queries {
                prop_assert_eq!(
                    text_matches_photo(&q, &r, f),
                    text_matches(&q, &hay),
                    "query {:?} haystack {:?}", q, hay
                );
            }
        }

        /// The ASCII paths of the file-name and exact-field filters are the folded tests.
        #[test]
        fn folded_filters_in_place_are_the_folded_comparisons(
            hay in "[A-Za-z0-9 _.-]{0,12}|[a-zA-ZÀ-ÿ ]{0,8}",
            needle in "[A-Za-z0-9 _.-]{0,4}|[a-zA-ZÀ-ÿ ]{0,3}",
            cut in 0usize..8,
        ) {
            let inner: String = hay.chars().skip(cut / 2).take(cut).collect();
            for n in [needle.as_str(), inner.as_str(), &inner.to_uppercase()] {
                prop_assert_eq!(
                    contains_folded(Some(&hay), n),
                    fold(&hay).contains(&fold(n)),
                    "{:?} in {:?}", n, hay
                );
                prop_assert_eq!(
                    equals_folded(Some(&hay), n),
                    fold(hay.trim()) == fold(n.trim()),
                    "{:?} = {:?}", n, hay
                );
            }
            let upper = hay.to_uppercase();
            prop_assert_eq!(equals_folded(Some(&hay), &upper), fold(hay.trim()) == fold(upper.trim()));
        }

        #[test]
        fn with_every_row_a_candidate_the_scan_is_the_reference(
            n in 1usize..200, dim in 1usize..130, k in 1usize..20, seed in 1u64..1000
        ) {
            let base = vectors(n, dim, seed);
            let mut idx = VectorIndex::new(dim);
            for (i, v) in base.iter().enumerate() {
                idx.push(&i.to_string(), v);
            }
            let q = &vectors(1, dim, seed + 1)[0];
            let got = idx.search_with(q, k, n, |_| true);
            let want = idx.exact_top_k(q, k, |_| true);
            prop_assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                prop_assert!((g.1 - w.1).abs() < 1e-4);
            }
        }
    }
}
