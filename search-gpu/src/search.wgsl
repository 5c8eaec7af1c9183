// Two-stage vector search (see tessera_core::search::VectorIndex, the CPU twin).
// Stage one: Hamming distance of sign codes, with a histogram of distances (the host picks
// the cut from it). Stage two: every row within the cut is scored, int8 row · f32 query ×
// the row's scale, and appended to `out` as (row, score bits).

struct Params {
    n: u32,
    words: u32,
    dim4: u32,
    threshold: u32,
    hist_len: u32,
    rows_per_line: u32,
    // The shard's first row in the whole index (rows are split into shards that fit the
    // GPU's largest binding).
    base: u32,
    pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> codes: array<u32>;
@group(0) @binding(2) var<storage, read> allow: array<u32>;
@group(0) @binding(3) var<storage, read> qcode: array<u32>;
@group(0) @binding(4) var<storage, read_write> dist: array<u32>;
@group(0) @binding(5) var<storage, read_write> hist: array<atomic<u32>>;
@group(0) @binding(6) var<storage, read> quant: array<u32>;
@group(0) @binding(7) var<storage, read> scales: array<f32>;
@group(0) @binding(8) var<storage, read> query: array<f32>;
@group(0) @binding(9) var<storage, read_write> out: array<vec2<u32>>;

fn row_of(gid: vec3<u32>) -> u32 {
    return gid.y * params.rows_per_line + gid.x;
}

@compute @workgroup_size(256)
fn hamming(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = row_of(gid);
    if (gid.x >= params.rows_per_line || i >= params.n) {
        return;
    }
    if (((allow[i / 32u] >> (i % 32u)) & 1u) == 0u) {
        dist[i] = 0xffffffffu;
        return;
    }
    var d = 0u;
    let base = i * params.words;
    for (var w = 0u; w < params.words; w += 1u) {
        d += countOneBits(codes[base + w] ^ qcode[w]);
    }
    dist[i] = d;
    atomicAdd(&hist[d], 1u);
}

@compute @workgroup_size(256)
fn rescore(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = row_of(gid);
    if (gid.x >= params.rows_per_line || i >= params.n) {
        return;
    }
    if (dist[i] > params.threshold) {
        return;
    }
    var acc = 0.0;
    let base = i * params.dim4;
    for (var w = 0u; w < params.dim4; w += 1u) {
        let x = bitcast<i32>(quant[base + w]);
        let j = w * 4u;
        acc += query[j] * f32((x << 24u) >> 24u);
        acc += query[j + 1u] * f32((x << 16u) >> 24u);
        acc += query[j + 2u] * f32((x << 8u) >> 24u);
        acc += query[j + 3u] * f32(x >> 24u);
    }
    let slot = atomicAdd(&hist[params.hist_len], 1u);
    out[slot] = vec2<u32>(params.base + i, bitcast<u32>(acc * scales[i]));
}
