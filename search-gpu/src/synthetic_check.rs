//! One parity-and-speed run over generated vectors with known neighbours
//! ([`tessera_core::search::synthetic::planted`]): the CPU (native or wasm SIMD) kernel and the
//! GPU kernel answer the same queries. Callers compare the rows with the f32 reference; the
//! browser runs it in the search worker, `search-worker` natively, `cargo xtask bench` both.

use serde::Serialize;
use tessera_core::search::{synthetic, VectorIndex};

use crate::GpuIndex;

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Setup {
    pub n: usize,
    pub dim: usize,
    pub queries: usize,
    pub planted: usize,
    pub k: usize,
    pub seed: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Run {
    /// Per query, the rows found, best first.
    pub rows: Vec<Vec<usize>>,
    pub scores: Vec<Vec<f32>>,
    pub p50_ms: f64,
    pub p95_ms: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub rows_indexed: usize,
    pub build_ms: f64,
    /// Bytes of the CPU index (sign codes, int8 rows, scales).
    pub index_bytes: usize,
    pub cpu: Run,
    pub gpu: Option<Run>,
    pub gpu_adapter: Option<String>,
    pub gpu_bytes: Option<u64>,
    pub gpu_error: Option<String>,
    pub gpu_upload_ms: Option<f64>,
}

fn percentiles(mut ms: Vec<f64>) -> (f64, f64) {
    if ms.is_empty() {
        return (0.0, 0.0);
    }
    ms.sort_by(f64::total_cmp);
    let at = |p: usize| ms[(ms.len() * p / 100).min(ms.len() - 1)];
    (at(50), at(95))
}

/// Builds the index of `s` and runs its queries on the CPU and (if one is there) the GPU.
pub async fn run(s: &Setup, now: &dyn Fn() -> f64) -> Report {
    let t = now();
    let (rows, queries) = synthetic::planted(s.n, s.dim, s.queries, s.planted, s.seed);
    let mut idx = VectorIndex::new(s.dim);
    for (i, v) in rows.enumerate() {
        idx.push(&i.to_string(), &v);
    }
    let mut report = Report {
        rows_indexed: idx.len(),
        build_ms: now() - t,
        index_bytes: idx.bytes(),
        ..Default::default()
    };
    let mut ms = Vec::new();
    for q in &queries {
        let t = now();
        let hits = idx.search(q, s.k, |_| true);
        ms.push(now() - t);
        report.cpu.rows.push(hits.iter().map(|h| h.0).collect());
        report.cpu.scores.push(hits.iter().map(|h| h.1).collect());
    }
    (report.cpu.p50_ms, report.cpu.p95_ms) = percentiles(ms);
    let t = now();
    match GpuIndex::new(&idx).await {
        Err(e) => report.gpu_error = Some(e.to_string()),
        Ok(gpu) => {
            report.gpu_upload_ms = Some(now() - t);
            report.gpu_adapter = Some(gpu.adapter().to_owned());
            report.gpu_bytes = Some(gpu.bytes());
            let mut run = Run::default();
            let mut ms = Vec::new();
            for q in &queries {
                let t = now();
                match gpu.search(q, s.k, None).await {
                    Ok(hits) => {
                        ms.push(now() - t);
                        run.rows.push(hits.iter().map(|h| h.0).collect());
                        run.scores.push(hits.iter().map(|h| h.1).collect());
                    }
                    Err(e) => {
                        report.gpu_error = Some(e.to_string());
                        break;
                    }
                }
            }
            (run.p50_ms, run.p95_ms) = percentiles(ms);
            report.gpu = Some(run);
        }
    }
    report
}
