//! Incremental, density-based face clustering with Immich's knobs and two-pass order.
//!
//! For each face without a person: its `min_faces` nearest faces within `max_distance`
//! (cosine distance, itself included) are its matches. A face matching only itself is noise.
//! A face with at least `min_faces` matches is a *core* face. Cores are handled first, then
//! the rest (Immich's "deferred" pass). A face joins the person of its nearest match that has
//! one (else of the nearest assigned face within `max_distance`); a core face with no such
//! person starts a new one. User decisions win: a face the user assigned is never touched,
//! and a face never joins a person the user said it is not.
//!
//! [`assign_changed`] does the same work incrementally: it tries only the faces a change can
//! have made assignable, so a library's thousands of unassigned faces (strangers, blurry
//! faces) are not compared with every face again each time a photo arrives.
//!
//! Distances are computed [`ROWS`] faces at a time against all the others as one matrix
//! product (ndarray's SIMD sgemm from `matrixmultiply`), on every core: what is left quadratic
//! (the first run after a start tries every unassigned face) runs at the machine's
//! floating-point peak instead of one dot product at a time.

use std::sync::Arc;

use ndarray::Array2;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClusterParams {
    /// Faces below this detection score are neither clustered nor stored.
    pub min_score: f32,
    /// Cosine distance (1 − cosine similarity) under which two faces match.
    pub max_distance: f32,
    /// Matches (itself included) a face needs to found a person.
    pub min_faces: usize,
}

impl Default for ClusterParams {
    /// Immich's defaults.
    fn default() -> Self {
        Self {
            min_score: 0.7,
            max_distance: 0.5,
            min_faces: 3,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClusterFace {
    pub key: String,
    /// L2-normalised embedding (shared: the ML node keeps it between runs).
    pub embedding: Arc<[f32]>,
    /// Current person (the user's choice if any, else the clustering's).
    pub person: Option<String>,
    /// The user assigned this face: never reassigned.
    pub locked: bool,
    /// People the user said this face is not.
    pub rejects: Vec<String>,
}

/// Assigns people to faces that have none. Returns `(face index, person)` for every face that
/// got one; `new_person` names a person founded by a face (deterministic ids keep two ML nodes
/// in agreement).
pub fn assign(
    faces: &[ClusterFace],
    params: &ClusterParams,
    new_person: impl Fn(&str) -> String,
) -> Vec<(usize, String)> {
    let mut person: Vec<Option<String>> = faces.iter().map(|f| f.person.clone()).collect();
    let todo: Vec<usize> = (0..faces.len())
        .filter(|&i| person[i].is_none() && !faces[i].locked)
        .collect();
    assign_among(faces, &mut person, &todo, params, &new_person)
}

/// Like [`assign`], for a library where only the faces at `changed` (new, or whose person
/// changed) differ from the last run: tries the unassigned faces among them or within
/// `max_distance` of one, then those near the faces that just got a person, until nothing
/// more is assigned. A face none of whose neighbours changed would fail again as it did last
/// time, so the result leaves nothing [`assign`] would still assign, for (changed × faces)
/// distances instead of (unassigned × faces). With every face in `changed` it is [`assign`]
/// run until nothing cascades.
pub fn assign_changed(
    faces: &[ClusterFace],
    changed: &[usize],
    params: &ClusterParams,
    new_person: impl Fn(&str) -> String,
) -> Vec<(usize, String)> {
    let mut person: Vec<Option<String>> = faces.iter().map(|f| f.person.clone()).collect();
    let open = |i: usize, person: &[Option<String>]| person[i].is_none() && !faces[i].locked;
    let mut changed: Vec<usize> = changed
        .iter()
        .copied()
        .filter(|&i| i < faces.len())
        .collect();
    let mut out = Vec::new();
    // Terminates: every round but the last assigns at least one face, and a face is
    // assigned at most once.
    while !changed.is_empty() {
        let mut tried = vec![false; faces.len()];
        for &i in &changed {
            tried[i] = open(i, &person);
        }
        let others: Vec<usize> = (0..faces.len())
            .filter(|&j| !tried[j] && open(j, &person))
            .collect();
        for rows in changed.chunks(ROWS) {
            for near in within(faces, rows, Some(&others), params.max_distance) {
                for (j, _) in near {
                    tried[j] = true;
                }
            }
        }
        let todo: Vec<usize> = (0..faces.len()).filter(|&i| tried[i]).collect();
        let got = assign_among(faces, &mut person, &todo, params, &new_person);
        changed = got.iter().map(|(i, _)| *i).collect();
        out.extend(got);
    }
    out
}

/// Faces handled per matrix product: bounds the memory of the neighbour lists (a face of a
/// person with thousands of faces has thousands of neighbours).
const ROWS: usize = 256;
/// Faces gathered per block of the other side of the product.
const COLS: usize = 2048;

/// For each face at `rows`, the faces (all, or those at `cols`) within `max_distance` of it,
/// itself included, nearest first (ties in index order).
fn within(
    faces: &[ClusterFace],
    rows: &[usize],
    cols: Option<&[usize]>,
    max_distance: f32,
) -> Vec<Vec<(usize, f32)>> {
    let mut out = vec![Vec::new(); rows.len()];
    let ncols = cols.map_or(faces.len(), <[usize]>::len);
    if rows.is_empty() || ncols == 0 {
        return out;
    }
    let col = |k: usize| cols.map_or(k, |c| c[k]);
    // Embeddings of unequal length (never from one model) are compared over the shorter one,
    // as `dot` does: zeros pad the rest.
    let dim = faces.iter().map(|f| f.embedding.len()).max().unwrap_or(0);
    let gather = |idx: &mut dyn Iterator<Item = usize>, n: usize| {
        let mut m = Array2::<f32>::zeros((n, dim));
        for (mut row, i) in m.rows_mut().into_iter().zip(idx) {
            for (d, s) in row.iter_mut().zip(faces[i].embedding.iter()) {
                *d = *s;
            }
        }
        m
    };
    let a = gather(&mut rows.iter().copied(), rows.len());
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(ncols.div_ceil(COLS))
        .max(1);
    let per = ncols.div_ceil(threads);
    let hits: Vec<Vec<(u32, usize, f32)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (a, gather, col) = (&a, &gather, &col);
                s.spawn(move || {
                    let mut hits = Vec::new();
                    let end = ((t + 1) * per).min(ncols);
                    let mut start = t * per;
                    while start < end {
                        let n = COLS.min(end - start);
                        let b = gather(&mut (start..start + n).map(col), n);
                        let c = a.dot(&b.t());
                        for (r, line) in c.rows().into_iter().enumerate() {
                            for (k, sim) in line.iter().enumerate() {
                                let d = 1.0 - sim;
                                if d <= max_distance {
                                    hits.push((r as u32, col(start + k), d));
                                }
                            }
                        }
                        start += n;
                    }
                    hits
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .collect()
    });
    // Threads cover ascending column ranges: concatenated, each row's hits are in index
    // order, and the stable sort keeps that order among equal distances.
    for (r, j, d) in hits.into_iter().flatten() {
        out[r as usize].push((j, d));
    }
    for near in &mut out {
        near.sort_by(|a, b| a.1.total_cmp(&b.1));
    }
    out
}

/// One face's turn in [`assign_among`]: records its person in `person` and `assigned`, or
/// returns its matches when it must wait for the deferred pass.
#[allow(clippy::too_many_arguments)]
fn decide(
    faces: &[ClusterFace],
    person: &mut [Option<String>],
    i: usize,
    near: Vec<(usize, f32)>,
    deferred_pass: bool,
    params: &ClusterParams,
    new_person: &impl Fn(&str) -> String,
    assigned: &mut Vec<(usize, String)>,
) -> Option<Vec<(usize, f32)>> {
    let matches = &near[..near.len().min(params.min_faces.max(1))];
    if params.min_faces > 1 && matches.len() <= 1 {
        return None;
    }
    let core = matches.len() >= params.min_faces;
    if !core && !deferred_pass {
        return Some(near);
    }
    let allowed = |p: &String| !faces[i].rejects.contains(p);
    let found = matches
        .iter()
        .chain(near.iter())
        .filter(|(j, _)| *j != i)
        .find_map(|(j, _)| person[*j].clone().filter(allowed));
    let p = match (found, core) {
        (Some(p), _) => p,
        (None, true) => new_person(&faces[i].key),
        (None, false) => return None,
    };
    person[i] = Some(p.clone());
    assigned.push((i, p));
    None
}

/// The two passes over `todo`, reading and updating `person`.
fn assign_among(
    faces: &[ClusterFace],
    person: &mut [Option<String>],
    todo: &[usize],
    params: &ClusterParams,
    new_person: &impl Fn(&str) -> String,
) -> Vec<(usize, String)> {
    let mut assigned = Vec::new();
    // Pass 0 decides the cores in `todo`'s order (a face sees the people given before it);
    // the rest wait for pass 1 with their few matches (a non-core face has fewer than
    // `min_faces` faces within `max_distance`, so keeping them costs nothing).
    let mut deferred: Vec<(usize, Vec<(usize, f32)>)> = Vec::new();
    for rows in todo.chunks(ROWS) {
        let lists = within(faces, rows, None, params.max_distance);
        for (&i, near) in rows.iter().zip(lists) {
            if let Some(near) = decide(
                faces,
                person,
                i,
                near,
                false,
                params,
                new_person,
                &mut assigned,
            ) {
                deferred.push((i, near));
            }
        }
    }
    for (i, near) in deferred {
        decide(
            faces,
            person,
            i,
            near,
            true,
            params,
            new_person,
            &mut assigned,
        );
    }
    assigned
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::pack::normalize;

    /// `n` noisy samples around `k` random unit centres in `dim` dimensions (deterministic).
    fn identities(k: usize, n: usize, dim: usize, noise: f32) -> Vec<(usize, Vec<f32>)> {
        let mut seed = 0x9e37_79b9_u32;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed as f32 / u32::MAX as f32) * 2.0 - 1.0
        };
        let centres: Vec<Vec<f32>> = (0..k)
            .map(|_| {
                let mut c: Vec<f32> = (0..dim).map(|_| rnd()).collect();
                normalize(&mut c);
                c
            })
            .collect();
        let mut out = Vec::new();
        for i in 0..n {
            for (id, c) in centres.iter().enumerate() {
                let mut v: Vec<f32> = c
                    .iter()
                    .map(|x| x + noise * rnd() / (dim as f32).sqrt() * 3.0)
                    .collect();
                normalize(&mut v);
                out.push((id, v));
                let _ = i;
            }
        }
        out
    }

    fn faces(v: &[(usize, Vec<f32>)]) -> Vec<ClusterFace> {
        v.iter()
            .enumerate()
            .map(|(i, (_, e))| ClusterFace {
                key: format!("f{i}"),
                embedding: e.clone().into(),
                person: None,
                locked: false,
                rejects: vec![],
            })
            .collect()
    }

    #[test]
    fn known_identities_become_one_person_each() {
        let data = identities(5, 8, 128, 0.35);
        let f = faces(&data);
        let got = assign(&f, &ClusterParams::default(), |k| format!("p-{k}"));
        assert_eq!(got.len(), data.len(), "every face is assigned");
        let mut map = std::collections::HashMap::new();
        for (i, p) in &got {
            let id = data[*i].0;
            // Pure clusters: one person per identity and one identity per person.
            assert_eq!(
                map.entry(p.clone()).or_insert(id),
                &id,
                "person {p} mixes identities"
            );
        }
        assert_eq!(map.len(), 5);
    }

    #[test]
    fn isolated_faces_are_noise_and_incremental_runs_join_existing_people() {
        let data = identities(2, 6, 64, 0.4);
        let mut f = faces(&data);
        let params = ClusterParams::default();
        for (i, p) in assign(&f, &params, |k| format!("p-{k}")) {
            f[i].person = Some(p);
        }
        let people: std::collections::HashSet<_> =
            f.iter().filter_map(|x| x.person.clone()).collect();
        // A new face of identity 0 joins identity 0's person; a lone stranger is left alone.
        let mut newcomer = data[0].1.clone();
        newcomer[0] += 0.01;
        normalize(&mut newcomer);
        let mut stranger = vec![0.0; 64];
        stranger[63] = 1.0;
        let mut more = f.clone();
        for (k, e) in [("new", newcomer), ("stranger", stranger)] {
            more.push(ClusterFace {
                key: k.into(),
                embedding: e.into(),
                person: None,
                locked: false,
                rejects: vec![],
            });
        }
        let got = assign(&more, &params, |k| format!("p-{k}"));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, more.len() - 2);
        assert_eq!(Some(&got[0].1), f[0].person.as_ref());
        assert!(people.contains(&got[0].1));
    }

    #[test]
    fn incremental_runs_leave_nothing_a_full_run_would_assign() {
        // Five people and three strangers arrive three faces at a time, in a scrambled order:
        // early faces are noise until their neighbours arrive.
        let data = identities(5, 8, 128, 0.35);
        let mut pool: Vec<(Option<usize>, ClusterFace)> = faces(&data)
            .into_iter()
            .zip(&data)
            .map(|(f, (id, _))| (Some(*id), f))
            .collect();
        for s in 0..3 {
            let mut e = vec![0.0; 128];
            e[125 + s] = 1.0;
            pool.push((
                None,
                ClusterFace {
                    key: format!("stranger{s}"),
                    embedding: e.into(),
                    person: None,
                    locked: false,
                    rejects: vec![],
                },
            ));
        }
        let n = pool.len();
        assert_eq!(n, 43);
        let params = ClusterParams::default();
        let mut shown: Vec<ClusterFace> = Vec::new();
        let mut who: Vec<Option<usize>> = Vec::new();
        let order: Vec<usize> = (0..n).map(|k| (k * 7) % n).collect();
        for chunk in order.chunks(3) {
            let start = shown.len();
            for &i in chunk {
                who.push(pool[i].0);
                shown.push(pool[i].1.clone());
            }
            let changed: Vec<usize> = (start..shown.len()).collect();
            for (i, p) in assign_changed(&shown, &changed, &params, |k| format!("p-{k}")) {
                assert!(shown[i].person.is_none(), "face {i} assigned twice");
                shown[i].person = Some(p);
            }
        }
        assert!(
            assign(&shown, &params, |k| format!("p-{k}")).is_empty(),
            "a full run finds nothing left to assign"
        );
        let mut map = std::collections::HashMap::new();
        for (f, id) in shown.iter().zip(&who) {
            match (id, &f.person) {
                (Some(id), Some(p)) => assert_eq!(
                    map.entry(p.clone()).or_insert(*id),
                    id,
                    "person {p} mixes identities"
                ),
                (Some(id), None) => panic!("a face of identity {id} was left behind"),
                (None, Some(p)) => panic!("a stranger joined {p}"),
                (None, None) => {}
            }
        }
        assert_eq!(map.len(), 5);
        // Nothing changed: nothing is tried, nothing assigned.
        assert!(assign_changed(&shown, &[], &params, |k| format!("p-{k}")).is_empty());
    }

    #[test]
    fn matrix_neighbours_are_the_dot_products_within_the_distance() {
        // More faces than one block of columns and of rows, so blocks, threads and the
        // column subset all take part; one face has a shorter embedding.
        let data = identities(60, 50, 32, 0.5);
        let mut f = faces(&data);
        assert!(f.len() > COLS + ROWS);
        f[7].embedding = f[7].embedding[..20].to_vec().into();
        let brute = |i: usize, cols: &[usize], max: f32| -> Vec<usize> {
            cols.iter()
                .copied()
                .filter(|&j| 1.0 - tessera_core::pack::dot(&f[i].embedding, &f[j].embedding) <= max)
                .collect()
        };
        let all: Vec<usize> = (0..f.len()).collect();
        let odd: Vec<usize> = (0..f.len()).filter(|j| j % 3 == 1).collect();
        let rows: Vec<usize> = (0..ROWS + 40)
            .map(|k| (k * 11) % f.len())
            .chain([7])
            .collect();
        for (cols, sub) in [(None, &all), (Some(odd.as_slice()), &odd)] {
            let got = within(&f, &rows, cols, 0.5);
            assert_eq!(got.len(), rows.len());
            let mut found = 0;
            for (&i, near) in rows.iter().zip(&got) {
                assert!(near.windows(2).all(|w| w[0].1 <= w[1].1), "nearest first");
                let mut js: Vec<usize> = near.iter().map(|(j, _)| *j).collect();
                js.sort_unstable();
                // The products may round differently from `dot` right at the boundary.
                let inner = brute(i, sub, 0.5 - 1e-4);
                let outer = brute(i, sub, 0.5 + 1e-4);
                assert!(
                    inner.iter().all(|j| js.contains(j)),
                    "face {i} lost a neighbour"
                );
                assert!(
                    js.iter().all(|j| outer.contains(j)),
                    "face {i} gained a stranger"
                );
                if cols.is_none() {
                    assert_eq!(near.first().map(|n| n.0), Some(i), "itself, nearest");
                }
                found += js.len();
            }
            assert!(
                found > rows.len() * 3,
                "the data has neighbours to find: {found}"
            );
        }
        assert!(within(&f, &[], None, 0.5).is_empty());
        assert_eq!(within(&f, &[1, 2], Some(&[]), 0.5), vec![vec![], vec![]]);
    }

    #[test]
    fn user_decisions_are_respected() {
        let data = identities(1, 6, 64, 0.3);
        let mut f = faces(&data);
        f[0].person = Some("named".into());
        f[0].locked = true;
        // The user said face 1 is not "named": it must not join it, so it founds its own.
        f[1].rejects = vec!["named".into()];
        let got = assign(&f, &ClusterParams::default(), |k| format!("p-{k}"));
        assert!(
            got.iter().all(|(i, _)| *i != 0),
            "a locked face is never reassigned"
        );
        let one = got.iter().find(|(i, _)| *i == 1).map(|(_, p)| p.clone());
        assert!(one.is_some_and(|p| p != "named"));
        assert!(got
            .iter()
            .filter(|(i, _)| *i > 1)
            .any(|(_, p)| p == "named"));
    }
}
