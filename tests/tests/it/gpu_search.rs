//! The wgpu search kernel natively (Mesa's lavapipe under `cargo xtask test`, which installs
//! it; any Vulkan GPU elsewhere) against the f32 reference and the CPU kernel, on generated
//! vectors with known neighbours, with filters, and at the edges (empty index, odd dimension).

use tessera_core::search::{synthetic, VectorIndex};
use tessera_search_gpu::{GpuError, GpuIndex};

fn gpu(idx: &VectorIndex) -> Option<GpuIndex> {
    match pollster::block_on(GpuIndex::new(idx)) {
        Ok(g) => Some(g),
        Err(e) if std::env::var("TESSERA_REQUIRE_GPU").is_err() => {
            eprintln!(
                "SKIPPED gpu_search: {e} (install mesa-vulkan-drivers, or run `cargo xtask test`)"
            );
            None
        }
        Err(e) => panic!("no GPU for the search kernel test: {e}"),
    }
}

fn index(rows: impl Iterator<Item = Vec<f32>>, dim: usize) -> VectorIndex {
    let mut idx = VectorIndex::new(dim);
    for (i, v) in rows.enumerate() {
        idx.push(&i.to_string(), &v);
    }
    idx
}

fn rows(v: &[(usize, f32)]) -> Vec<usize> {
    v.iter().map(|x| x.0).collect()
}

#[test]
fn the_gpu_kernel_finds_the_reference_top_k() {
    let (n, dim, planted) = (30_000, 512, 10);
    let (all, queries) = synthetic::planted(n, dim, 16, planted, 9);
    let idx = index(all, dim);
    let Some(g) = gpu(&idx) else { return };
    eprintln!("GPU adapter: {}", g.adapter());
    for (qi, q) in queries.iter().enumerate() {
        let want = idx.exact_top_k(q, 10, |_| true);
        let got = pollster::block_on(g.search(q, 10, None)).unwrap();
        let cpu = idx.search(q, 10, |_| true);
        assert_eq!(rows(&got), rows(&want), "query {qi}");
        assert_eq!(rows(&got), rows(&cpu), "query {qi}");
        assert_eq!(
            rows(&got),
            (0..planted)
                .map(|j| n + qi * planted + j)
                .collect::<Vec<_>>()
        );
        for ((_, a), (_, b)) in got.iter().zip(&cpu) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }
    // A filter: only even rows, and rows 0..32 excluded wholesale; the GPU and CPU agree.
    let mut allow = vec![0x5555_5555u32; idx.len().div_ceil(32)];
    allow[0] = 0;
    let ok = |i: usize| i >= 32 && i.is_multiple_of(2);
    for q in &queries[..4] {
        let got = pollster::block_on(g.search(q, 20, Some(&allow))).unwrap();
        let cpu = idx.search(q, 20, ok);
        assert!(got.iter().all(|(i, _)| ok(*i)));
        assert_eq!(rows(&got), rows(&cpu));
    }
    // Fewer candidates than asked: every allowed row comes back.
    let none_but_two = {
        let mut a = vec![0u32; idx.len().div_ceil(32)];
        a[1] = 0b101;
        a
    };
    let got = pollster::block_on(g.search(&queries[0], 10, Some(&none_but_two))).unwrap();
    assert_eq!(rows(&got).len(), 2);
    let mut r = rows(&got);
    r.sort();
    assert_eq!(r, vec![32, 34]);
    // Split into shards (as a GPU whose largest binding is smaller than the index): the same
    // answers, filters included.
    let sharded = pollster::block_on(GpuIndex::with_shard_rows(&idx, Some(7_000))).unwrap();
    assert_eq!(sharded.shards(), 5);
    for q in &queries[..4] {
        let a = pollster::block_on(sharded.search(q, 10, None)).unwrap();
        assert_eq!(
            rows(&a),
            rows(&pollster::block_on(g.search(q, 10, None)).unwrap())
        );
        let b = pollster::block_on(sharded.search(q, 20, Some(&allow))).unwrap();
        assert_eq!(rows(&b), rows(&idx.search(q, 20, ok)));
    }
}

#[test]
fn odd_dimensions_small_and_empty_indexes() {
    // 70 dimensions: padded words and int8 lanes.
    let (all, queries) = synthetic::planted(500, 70, 3, 5, 4);
    let idx = index(all, 70);
    let Some(g) = gpu(&idx) else { return };
    for q in &queries {
        let got = pollster::block_on(g.search_with(q, 7, idx.len(), None)).unwrap();
        let want = idx.exact_top_k(q, 7, |_| true);
        assert_eq!(rows(&got), rows(&want));
    }
    assert!(matches!(
        pollster::block_on(g.search(&[0.0; 3], 5, None)),
        Err(GpuError::Dimension { got: 3, want: 70 })
    ));
    let empty = VectorIndex::new(512);
    let g = gpu(&empty).unwrap();
    assert!(pollster::block_on(g.search(&vec![0.1; 512], 5, None))
        .unwrap()
        .is_empty());
}
