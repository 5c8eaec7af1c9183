//! Search bench: the two-stage CLIP scan (`tessera_core::search::VectorIndex`, the kernel the
//! PWA and the node share) over N × 512-d vectors against the plain f32 full scan on the same
//! data, with recall of the planted neighbours; the offline reverse geocoder's lookups/s; and
//! the ML node's face clustering (`tessera_ml::cluster`) on N synthetic 512-d faces, 40% of
//! them strangers who never form a person: the first pass after a start, then a batch of 32
//! new faces clustered incrementally (`assign_changed`) against a full pass (`assign`, what
//! every batch cost before). Writes JSON to the path given (default `search-bench.json`).
//!
//! `tessera-search-bench [OUT] [--vectors N] [--faces N]` (default 300,000 and 20,000).

use std::time::Instant;

use anyhow::Result;
use serde_json::json;
use tessera_core::search::VectorIndex;

fn xorshift(seed: u64) -> impl FnMut() -> f32 {
    let mut s = seed | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
    }
}

fn unit(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-9);
    v.iter_mut().for_each(|x| *x /= n);
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args
        .iter()
        .find(|a| !a.starts_with("--") && a.parse::<usize>().is_err())
        .cloned()
        .unwrap_or_else(|| "search-bench.json".into());
    let n: usize = args
        .windows(2)
        .find(|w| w[0] == "--vectors")
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(300_000);
    let dim = 512;
    let queries = 50;
    let mut rnd = xorshift(42);
    let t = Instant::now();
    let mut idx = VectorIndex::new(dim);
    let mut v = vec![0f32; dim];
    let mut qs: Vec<Vec<f32>> = Vec::new();
    for _ in 0..queries {
        let mut q: Vec<f32> = (0..dim).map(|_| rnd()).collect();
        unit(&mut q);
        qs.push(q);
    }
    // Real CLIP vectors cluster; uniform random ones are the hard case for sign codes. Each
    // query gets 10 planted neighbours at decreasing similarity.
    for i in 0..n {
        let plant =
            i % (n / (queries * 10)).max(1) == 0 && i / (n / (queries * 10)).max(1) < queries * 10;
        if plant {
            let k = i / (n / (queries * 10)).max(1);
            let (q, j) = (&qs[k / 10], k % 10);
            for (d, x) in v.iter_mut().enumerate() {
                *x = q[d] + rnd() * (0.3 + j as f32 * 0.05);
            }
        } else {
            v.iter_mut().for_each(|x| *x = rnd());
        }
        unit(&mut v);
        idx.push(&format!("{i:07}"), &v);
    }
    let build_s = t.elapsed().as_secs_f64();
    let (mut two, mut exact) = (Vec::new(), Vec::new());
    let mut recall = 0usize;
    for q in &qs {
        let t = Instant::now();
        let got = idx.search(q, 10, |_| true);
        two.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let want = idx.exact_top_k(q, 10, |_| true);
        exact.push(t.elapsed().as_secs_f64() * 1000.0);
        recall += got
            .iter()
            .filter(|g| want.iter().any(|w| w.0 == g.0))
            .count();
    }
    two.sort_by(f64::total_cmp);
    exact.sort_by(f64::total_cmp);
    // The geocoder: first use builds its table; then lookups over the globe.
    let t = Instant::now();
    let _ = tessera_sync_node::geo::place(48.85, 2.35);
    let geo_load_s = t.elapsed().as_secs_f64();
    let mut r = xorshift(7);
    let lookups = 200_000;
    let t = Instant::now();
    let mut placed = 0;
    for _ in 0..lookups {
        let (lat, lon) = (f64::from(r()) * 60.0 + 10.0, f64::from(r()) * 180.0);
        placed += usize::from(tessera_sync_node::geo::place(lat, lon).is_some());
    }
    let geo_s = t.elapsed().as_secs_f64();
    let clustering = face_clustering(
        args.windows(2)
            .find(|w| w[0] == "--faces")
            .and_then(|w| w[1].parse().ok())
            .unwrap_or(20_000),
    );
    let report = json!({
        "face_clustering": clustering,
        "vectors": n, "dim": dim, "queries": queries,
        "index_build_s": build_s,
        "index_bytes": idx.bytes(),
        "two_stage_ms": {"p50": pct(&two, 0.5), "p95": pct(&two, 0.95)},
        "f32_full_scan_ms": {"p50": pct(&exact, 0.5), "p95": pct(&exact, 0.95)},
        "recall_at_10_vs_f32": recall as f64 / (queries * 10) as f64,
        "geocoder": {
            "first_use_s": geo_load_s,
            "lookups_per_s": lookups as f64 / geo_s,
            "placed_fraction": placed as f64 / lookups as f64,
        },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    Ok(())
}

/// Face clustering at `n` faces: 60% of them people with about 20 photos each, 40% strangers.
fn face_clustering(n: usize) -> serde_json::Value {
    use std::sync::Arc;
    use tessera_ml::cluster::{assign, assign_changed, ClusterFace, ClusterParams};
    let dim = 512;
    let mut rnd = xorshift(99);
    let people = (n * 3 / 5 / 20).max(1);
    let centres: Vec<Vec<f32>> = (0..people)
        .map(|_| {
            let mut c: Vec<f32> = (0..dim).map(|_| rnd()).collect();
            unit(&mut c);
            c
        })
        .collect();
    let face = |i: usize, rnd: &mut dyn FnMut() -> f32| {
        let mut e: Vec<f32> = if i % 5 < 3 {
            let c = &centres[(i / 5 * 3 + i % 5) % people];
            c.iter()
                .map(|x| x + 0.35 * rnd() * 3.0 / (dim as f32).sqrt())
                .collect()
        } else {
            (0..dim).map(|_| rnd()).collect()
        };
        unit(&mut e);
        ClusterFace {
            key: format!("f{i}"),
            embedding: Arc::from(e),
            person: None,
            locked: false,
            rejects: vec![],
        }
    };
    let params = ClusterParams::default();
    let mut faces: Vec<ClusterFace> = (0..n).map(|i| face(i, &mut rnd)).collect();
    let all: Vec<usize> = (0..n).collect();
    let t = Instant::now();
    let first = assign_changed(&faces, &all, &params, |k| format!("p-{k}"));
    let first_s = t.elapsed().as_secs_f64();
    for (i, p) in &first {
        faces[*i].person = Some(p.clone());
    }
    let batch = 32;
    faces.extend((n..n + batch).map(|i| face(i, &mut rnd)));
    let new: Vec<usize> = (n..n + batch).collect();
    let t = Instant::now();
    let incremental = assign_changed(&faces, &new, &params, |k| format!("p-{k}"));
    let incremental_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let full = assign(&faces, &params, |k| format!("p-{k}"));
    let full_ms = t.elapsed().as_secs_f64() * 1e3;
    json!({
        "faces": n, "people": people, "dim": dim,
        "first_pass_s": first_s,
        "assigned_first_pass": first.len(),
        "unassigned_after_first_pass": n - first.len(),
        "batch_of_new_faces": batch,
        "incremental_ms": incremental_ms,
        "incremental_assigned": incremental.len(),
        "full_pass_ms": full_ms,
        "full_pass_assigned": full.len(),
    })
}
