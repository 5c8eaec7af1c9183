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

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tessera_core::pack::dot;

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
        for (j, t) in tried.iter_mut().enumerate() {
            if !*t
                && open(j, &person)
                && changed.iter().any(|&c| {
                    1.0 - dot(&faces[c].embedding, &faces[j].embedding) <= params.max_distance
                })
            {
                *t = true;
            }
        }
        let todo: Vec<usize> = (0..faces.len()).filter(|&i| tried[i]).collect();
        let got = assign_among(faces, &mut person, &todo, params, &new_person);
        changed = got.iter().map(|(i, _)| *i).collect();
        out.extend(got);
    }
    out
}

/// The two passes over `todo`, reading and updating `person`.
fn assign_among(
    faces: &[ClusterFace],
    person: &mut [Option<String>],
    todo: &[usize],
    params: &ClusterParams,
    new_person: &impl Fn(&str) -> String,
) -> Vec<(usize, String)> {
    let neighbours = |i: usize| -> Vec<(usize, f32)> {
        let mut v: Vec<(usize, f32)> = faces
            .iter()
            .enumerate()
            .map(|(j, f)| (j, 1.0 - dot(&faces[i].embedding, &f.embedding)))
            .filter(|(_, d)| *d <= params.max_distance)
            .collect();
        v.sort_by(|a, b| a.1.total_cmp(&b.1));
        v
    };
    let mut assigned = Vec::new();
    let mut deferred = Vec::new();
    for pass in 0..2 {
        let queue = if pass == 0 {
            todo.to_vec()
        } else {
            std::mem::take(&mut deferred)
        };
        for i in queue {
            let near = neighbours(i);
            let matches = &near[..near.len().min(params.min_faces.max(1))];
            if params.min_faces > 1 && matches.len() <= 1 {
                continue;
            }
            let core = matches.len() >= params.min_faces;
            if !core && pass == 0 {
                deferred.push(i);
                continue;
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
                (None, false) => continue,
            };
            person[i] = Some(p.clone());
            assigned.push((i, p));
        }
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
