//! Near-duplicate detection over perceptual hashes (sans IO: the browser and the node group the
//! same way).
//!
//! The hash (made by `tessera-media`'s `phash`) is the sign of the 8×8 lowest-frequency DCT-II
//! coefficients of a 32×32 grey version of the oriented image: bit `8u + v` is set when
//! coefficient `(u, v)` is positive (`u` horizontal frequency, `v` vertical; bit 0, the DC
//! term, is always set). Signs of low frequencies survive recompression, resizing and small
//! crops or edits. They also transform exactly under rotation: mirroring `x` multiplies
//! coefficient `(u, v)` by `(-1)^u`, mirroring `y` by `(-1)^v`, and transposing swaps `u` and
//! `v`. So the hashes of a photo rotated by 90°, 180° or 270° are computed from its own hash,
//! and a rotated copy is found without hashing it four times.
//!
//! Grouping: two assets are near-duplicates when some rotation of one hash is within
//! `threshold` bits (Hamming) of the other. Candidates come from a multi-index: the 64 bits
//! are split into four 16-bit words, and by the pigeonhole principle two hashes within 11 bits
//! share a word up to 2 flipped bits, so probing each word's 137 neighbours finds every pair
//! without comparing all of them (thresholds are capped at [`MAX_THRESHOLD`]). Groups are the
//! connected components; pairs the user said are not duplicates are never joined directly.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::AssetRecord;

/// Default Hamming threshold (out of 64 bits); chosen on the generated set, see the bench.
pub const DEFAULT_THRESHOLD: u32 = 10;
/// Largest threshold the index finds every pair for.
pub const MAX_THRESHOLD: u32 = 11;

/// A group of near-duplicates, best candidate to keep first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DupGroup {
    /// Stable id: the smallest asset id of the group.
    pub id: String,
    pub assets: Vec<AssetRecord>,
    /// The suggested keeper (largest resolution, then largest file, then the one with
    /// camera metadata, then the earliest upload).
    pub keep: String,
    /// Largest Hamming distance of the matches that joined the group.
    pub distance: u32,
}

/// Parses the 16-hex-digit form stored in records.
pub fn parse_phash(s: &str) -> Option<u64> {
    (s.len() == 16).then(|| u64::from_str_radix(s, 16).ok())?
}

pub fn format_phash(h: u64) -> String {
    format!("{h:016x}")
}

fn bit(h: u64, u: usize, v: usize) -> u64 {
    (h >> (8 * u + v)) & 1
}

/// Mirror along x (`(-1)^u` sign change on odd horizontal frequencies).
fn mirror_x(h: u64) -> u64 {
    // Bits 8u+v with u odd: bytes 1, 3, 5, 7.
    h ^ 0xFF00_FF00_FF00_FF00
}

/// Mirror along y (odd vertical frequencies: bits with v odd in every byte).
fn mirror_y(h: u64) -> u64 {
    h ^ 0xAAAA_AAAA_AAAA_AAAA
}

fn transpose(h: u64) -> u64 {
    let mut out = 0u64;
    for u in 0..8 {
        for v in 0..8 {
            out |= bit(h, u, v) << (8 * v + u);
        }
    }
    out
}

/// The hashes of the image rotated by 0°, 90°, 180° and 270°.
pub fn rotations(h: u64) -> [u64; 4] {
    // 90° clockwise = transpose then mirror x; 180° = both mirrors; 270° = transpose, mirror y.
    // Signs of the DC bit are unaffected (u = v = 0 is even).
    let t = transpose(h);
    [h, mirror_x(t), mirror_x(mirror_y(h)), mirror_y(t)]
}

/// Smallest Hamming distance between `a` and any rotation of `b`.
pub fn distance(a: u64, b: u64) -> u32 {
    rotations(b)
        .iter()
        .map(|r| (a ^ r).count_ones())
        .min()
        .unwrap_or(64)
}

/// All 16-bit values within 2 bits of `w` (137 of them).
fn neighbours(w: u16) -> impl Iterator<Item = u16> {
    std::iter::once(w)
        .chain((0..16).map(move |i| w ^ (1 << i)))
        .chain((0..16).flat_map(move |i| ((i + 1)..16).map(move |j| w ^ (1 << i) ^ (1 << j))))
}

fn word(h: u64, k: usize) -> u16 {
    (h >> (16 * k)) as u16
}

/// Every pair `(i, j, d)` with `i < j` whose hashes are within `threshold` (capped at
/// [`MAX_THRESHOLD`]) under some rotation.
pub fn close_pairs(hashes: &[u64], threshold: u32) -> Vec<(usize, usize, u32)> {
    let threshold = threshold.min(MAX_THRESHOLD);
    let mut index: [HashMap<u16, Vec<u32>>; 4] = Default::default();
    for (i, &h) in hashes.iter().enumerate() {
        for (k, map) in index.iter_mut().enumerate() {
            map.entry(word(h, k)).or_default().push(i as u32);
        }
    }
    let mut best: BTreeMap<(usize, usize), u32> = BTreeMap::new();
    let mut seen: Vec<u32> = vec![u32::MAX; hashes.len()];
    for (i, &h) in hashes.iter().enumerate() {
        for (r, rh) in rotations(h).into_iter().enumerate() {
            // A rotation equal to an earlier one probes the same buckets.
            if rotations(h)[..r].contains(&rh) {
                continue;
            }
            let stamp = (i * 4 + r) as u32;
            for (k, map) in index.iter().enumerate() {
                for n in neighbours(word(rh, k)) {
                    let Some(bucket) = map.get(&n) else { continue };
                    for &j in bucket {
                        let j = j as usize;
                        if j <= i || seen[j] == stamp {
                            continue;
                        }
                        seen[j] = stamp;
                        let d = (rh ^ hashes[j]).count_ones();
                        if d <= threshold {
                            let e = best.entry((i, j)).or_insert(d);
                            *e = (*e).min(d);
                        }
                    }
                }
            }
        }
    }
    best.into_iter().map(|((i, j), d)| (i, j, d)).collect()
}

fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// The pair key used to remember "not duplicates": the two ids in order.
pub fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

/// Groups near-duplicate assets. Trashed assets and records without a hash are left out; so
/// are pairs in `rejected` (see [`pair`]). Groups come largest first, then by id.
pub fn near_duplicate_groups(
    records: &[AssetRecord],
    threshold: u32,
    rejected: &BTreeSet<(String, String)>,
) -> Vec<DupGroup> {
    let live: Vec<(&AssetRecord, u64)> = records
        .iter()
        .filter(|r| r.trashed_at.is_none() && r.purged_at.is_none() && r.shown_alone())
        .filter_map(|r| Some((r, parse_phash(r.phash.as_deref()?)?)))
        .collect();
    let ids: Vec<&str> = live.iter().map(|(r, _)| r.id.as_str()).collect();
    let hashes: Vec<u64> = live.iter().map(|(_, h)| *h).collect();
    let mut out: Vec<DupGroup> = group_hashes(&ids, &hashes, threshold, rejected)
        .into_iter()
        .map(|(members, distance)| {
            dup_group(
                members.iter().map(|&i| live[i].0.clone()).collect(),
                distance,
            )
        })
        .collect();
    sort_groups(&mut out);
    out
}

/// The grouping of [`near_duplicate_groups`] over bare hashes (`ids[i]` has `hashes[i]`):
/// groups of two or more indexes, each with its largest distance to a neighbour. For a
/// caller that holds hashes and ids but not whole records (the PWA): it reads the records
/// of the few grouped assets only.
pub fn group_hashes(
    ids: &[&str],
    hashes: &[u64],
    threshold: u32,
    rejected: &BTreeSet<(String, String)>,
) -> Vec<(Vec<usize>, u32)> {
    let pairs = close_pairs(hashes, threshold);
    let mut parent: Vec<usize> = (0..hashes.len()).collect();
    let mut dist: Vec<u32> = vec![0; hashes.len()];
    for (i, j, d) in pairs {
        if rejected.contains(&pair(ids[i], ids[j])) {
            continue;
        }
        let (a, b) = (find(&mut parent, i), find(&mut parent, j));
        dist[i] = dist[i].max(d);
        dist[j] = dist[j].max(d);
        if a != b {
            parent[a.max(b)] = a.min(b);
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..hashes.len() {
        let root = find(&mut parent, i);
        groups.entry(root).or_default().push(i);
    }
    groups
        .into_values()
        .filter(|m| m.len() > 1)
        .map(|members| {
            let d = members.iter().map(|&i| dist[i]).max().unwrap_or(0);
            (members, d)
        })
        .collect()
}

/// A group of near-duplicate records, the best keeper first (then by id); named by its
/// smallest id.
pub fn dup_group(mut assets: Vec<AssetRecord>, distance: u32) -> DupGroup {
    assets.sort_by(|a, b| keeper_rank(b).cmp(&keeper_rank(a)).then(a.id.cmp(&b.id)));
    let id = assets
        .iter()
        .map(|a| a.id.as_str())
        .min()
        .unwrap_or_default()
        .to_owned();
    DupGroup {
        id,
        keep: assets.first().map(|a| a.id.clone()).unwrap_or_default(),
        distance,
        assets,
    }
}

/// Largest groups first, then by id.
pub fn sort_groups(groups: &mut [DupGroup]) {
    groups.sort_by(|a, b| b.assets.len().cmp(&a.assets.len()).then(a.id.cmp(&b.id)));
}

/// Higher is a better keeper.
fn keeper_rank(r: &AssetRecord) -> (u64, u64, bool, std::cmp::Reverse<String>) {
    let pixels = u64::from(r.width.unwrap_or(0)) * u64::from(r.height.unwrap_or(0));
    (
        pixels,
        r.size.unwrap_or(0),
        r.taken_at_source.as_deref() == Some("exif"),
        std::cmp::Reverse(r.uploaded_at.clone().unwrap_or_default()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(id: &str, h: u64, w: u32) -> AssetRecord {
        AssetRecord {
            id: id.into(),
            phash: Some(format_phash(h)),
            width: Some(w),
            height: Some(w),
            ..Default::default()
        }
    }

    /// The DCT sign rule on a real 8×8 coefficient grid: rotating the coefficients the way a
    /// rotated image's would be must equal the bit-level rotation.
    fn hash_of(c: &[[f64; 8]; 8]) -> u64 {
        let mut h = 0;
        for (u, row) in c.iter().enumerate() {
            for (v, x) in row.iter().enumerate() {
                if *x > 0.0 || (u == 0 && v == 0) {
                    h |= 1 << (8 * u + v);
                }
            }
        }
        h
    }

    proptest! {
        #[test]
        fn rotations_match_coefficient_algebra(c in proptest::array::uniform8(proptest::array::uniform8(-1.0f64..1.0))) {
            let h = hash_of(&c);
            // Rotating an image 90° clockwise: new(x, y) = old(y, N-1-x), so
            // C'(u, v) = (-1)^u C(v, u).
            let mut r = [[0.0; 8]; 8];
            for u in 0..8 { for v in 0..8 {
                r[u][v] = if u % 2 == 1 { -c[v][u] } else { c[v][u] };
            }}
            prop_assert_eq!(rotations(h)[1], hash_of(&r));
            prop_assert_eq!(distance(hash_of(&r), h), 0);
            // Four quarter turns are the identity.
            let mut x = h;
            for _ in 0..4 { x = rotations(x)[1]; }
            prop_assert_eq!(x, h);
        }

        #[test]
        fn index_finds_every_close_pair(base in any::<u64>(), flips in proptest::collection::vec((0u32..64, 0u32..64, 0u32..64), 1..30), threshold in 0u32..=11) {
            let mut hashes = vec![base];
            for (a, b, c) in flips {
                hashes.push(base ^ (1 << a) ^ (1 << b) ^ (1 << c) ^ (u64::from(a % 7 == 0) << ((a + 5) % 64)));
            }
            let found: BTreeSet<(usize, usize)> = close_pairs(&hashes, threshold).into_iter().map(|(i, j, _)| (i, j)).collect();
            for i in 0..hashes.len() { for j in (i + 1)..hashes.len() {
                let d = distance(hashes[i], hashes[j]);
                prop_assert_eq!(found.contains(&(i, j)), d <= threshold, "pair {} {} d={}", i, j, d);
            }}
        }
    }

    #[test]
    fn groups_suggest_the_largest_and_honour_rejections() {
        let a = 0x1234_5678_9abc_def1u64;
        let records = vec![
            rec("a", a, 1000),
            rec("b", a ^ 0b111, 4000),
            rec("c", rotations(a)[2] ^ 0b1, 2000),
            rec("d", !a, 4000),
            AssetRecord {
                trashed_at: Some("2024-01-01T00:00:00Z".into()),
                ..rec("e", a, 9000)
            },
        ];
        let g = near_duplicate_groups(&records, DEFAULT_THRESHOLD, &BTreeSet::new());
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].keep, "b");
        let ids: Vec<&str> = g[0].assets.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["b", "c", "a"]);
        assert_eq!(g[0].id, "a");
        let mut rejected = BTreeSet::new();
        rejected.insert(pair("b", "a"));
        rejected.insert(pair("a", "c"));
        rejected.insert(pair("c", "b"));
        assert!(near_duplicate_groups(&records, DEFAULT_THRESHOLD, &rejected).is_empty());
    }

    #[test]
    fn phash_text_round_trip() {
        assert_eq!(parse_phash(&format_phash(42)), Some(42));
        assert_eq!(parse_phash("xyz"), None);
        assert_eq!(parse_phash("00000000000000zz"), None);
    }
}
