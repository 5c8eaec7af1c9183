//! The two-stage vector search of [`tessera_core::search::VectorIndex`] on the GPU, through
//! wgpu: WebGPU in the PWA's search worker, Vulkan (or Metal/DX12) natively.
//!
//! The CPU kernel and this one pick the same candidates (every row within the Hamming cut of
//! [`tessera_core::search::candidate_threshold`]) and score them with the same int8 rows, so
//! results agree up to float rounding; `tests/it/gpu_search.rs` and the browser e2e test check
//! it against the plain f32 reference.
//!
//! Per query: stage one runs over every row and reads back the histogram of distances (at
//! most `dim + 1` counters); the host picks the cut; stage two scores the rows within it and
//! reads back only those (row, score) pairs.

use tessera_core::search::{
    candidate_threshold, sign_code_u32, VectorIndex, MIN_CANDIDATES, OVERSAMPLE,
};
use wgpu::util::DeviceExt;

pub mod synthetic_check;

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    #[error("the GPU refused a device: {0}")]
    Device(String),
    #[error("the index needs a {need}-byte buffer; this GPU binds at most {max}")]
    TooLarge { need: u64, max: u64 },
    #[error("reading results back from the GPU failed: {0}")]
    Map(String),
    #[error("the query has {got} dimensions; the index has {want}")]
    Dimension { got: usize, want: usize },
}

const WORKGROUP: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    words: u32,
    dim4: u32,
    threshold: u32,
    hist_len: u32,
    rows_per_line: u32,
    base: u32,
    pad: u32,
}

/// Rows `base..base + n` of the index, in buffers no larger than the GPU binds.
struct Shard {
    base: u32,
    n: u32,
    lines: u32,
    rows_per_line: u32,
    params: wgpu::Buffer,
    allow: wgpu::Buffer,
    hamming: wgpu::BindGroup,
    rescore: wgpu::BindGroup,
}

/// A [`VectorIndex`] uploaded to a GPU.
pub struct GpuIndex {
    device: wgpu::Device,
    queue: wgpu::Queue,
    adapter: String,
    software: bool,
    n: u32,
    dim: usize,
    words: u32,
    dim4: u32,
    hist_len: u32,
    qcode: wgpu::Buffer,
    query: wgpu::Buffer,
    hist: wgpu::Buffer,
    out: wgpu::Buffer,
    read_hist: wgpu::Buffer,
    read_out: wgpu::Buffer,
    hamming: wgpu::ComputePipeline,
    rescore: wgpu::ComputePipeline,
    shards: Vec<Shard>,
    bytes: u64,
}

/// The GPU's adapter and device, or why there is none.
async fn device() -> Result<(wgpu::Adapter, wgpu::Device, wgpu::Queue), GpuError> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = if cfg!(target_arch = "wasm32") {
        wgpu::Backends::BROWSER_WEBGPU
    } else {
        wgpu::Backends::all()
    };
    let instance = wgpu::Instance::new(desc);
    let adapter = instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        })
        .await
        .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
    let (device, queue) = adapter
        .request_device(&wgpu::DeviceDescriptor {
            label: Some("tessera-search"),
            required_limits: adapter.limits(),
            ..Default::default()
        })
        .await
        .map_err(|e| GpuError::Device(e.to_string()))?;
    Ok((adapter, device, queue))
}

impl GpuIndex {
    /// Uploads `index` to the first GPU adapter there is, in as many shards as the GPU's
    /// largest storage binding requires.
    pub async fn new(index: &VectorIndex) -> Result<Self, GpuError> {
        Self::with_shard_rows(index, None).await
    }

    /// [`GpuIndex::new`] with at most `rows` rows per shard (rounded down to a multiple of
    /// 32; tests use it to split small indexes).
    pub async fn with_shard_rows(
        index: &VectorIndex,
        rows: Option<usize>,
    ) -> Result<Self, GpuError> {
        let (adapter, device, queue) = device().await?;
        let info = adapter.get_info();
        let adapter_name = format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type);
        let limits = device.limits();
        let total = index.len();
        let words = index.words32() as u32;
        let dim4 = index.dim.div_ceil(4) as u32;
        let hist_len = words * 32 + 1;
        let max = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        // Rows per shard: the int8 rows (the widest buffer) fit one binding; a multiple of 32
        // so each shard's allow-bitset is whole words of the caller's.
        let row_bytes = u64::from(dim4.max(words)) * 4;
        let fits = (max / row_bytes.max(1)) as usize;
        let per_shard = (rows.unwrap_or(fits).min(fits) / 32 * 32).max(32);
        let out_bytes = (total.max(1) as u64) * 8;
        if out_bytes > max {
            return Err(GpuError::TooLarge {
                need: out_bytes,
                max,
            });
        }
        let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        let empty = |label: &str, size: u64, usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: size.max(16),
                usage,
                mapped_at_creation: false,
            })
        };
        let qcode = empty("qcode", u64::from(words) * 4, storage);
        let query = empty("query", u64::from(dim4) * 16, storage);
        let copy_src = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
        let hist = empty(
            "hist",
            u64::from(hist_len + 1) * 4,
            copy_src | wgpu::BufferUsages::COPY_DST,
        );
        let out = empty("out", out_bytes, copy_src);
        let read = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
        let read_hist = empty("read_hist", u64::from(hist_len + 1) * 4, read);
        let read_out = empty("read_out", out_bytes, read);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("search.wgsl"),
            source: wgpu::ShaderSource::Wgsl(include_str!("search.wgsl").into()),
        });
        let pipeline = |entry: &str| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let hamming = pipeline("hamming");
        let rescore = pipeline("rescore");
        let group = |p: &wgpu::ComputePipeline, label: &str, bindings: &[(u32, &wgpu::Buffer)]| {
            let entries: Vec<wgpu::BindGroupEntry> = bindings
                .iter()
                .map(|(b, buf)| wgpu::BindGroupEntry {
                    binding: *b,
                    resource: buf.as_entire_binding(),
                })
                .collect();
            device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(label),
                layout: &p.get_bind_group_layout(0),
                entries: &entries,
            })
        };
        let all_quant = index.quant_u32();
        let all_codes = index.codes_u32();
        let all_scales = index.scales();
        let mut shards = Vec::new();
        let mut bytes = hist.size() + out.size() * 2;
        let mut base = 0usize;
        // An empty index still gets one (padded) shard: zero-sized bindings are invalid.
        while base < total || shards.is_empty() {
            let n = per_shard.min(total - base);
            let rows = n.max(1);
            // Slices of the index's arrays (no second copy of 150 MB of rows); only the empty
            // index's one padded row is made here.
            let pad_quant = vec![0u32; dim4 as usize];
            let pad_codes = vec![0u32; words as usize];
            let (quant, codes, scales): (&[u32], &[u32], &[f32]) = if n == 0 {
                (&pad_quant, &pad_codes, &[0.0])
            } else {
                (
                    &all_quant[base * dim4 as usize..(base + n) * dim4 as usize],
                    &all_codes[base * words as usize..(base + n) * words as usize],
                    &all_scales[base..base + n],
                )
            };
            let init = |label: &str, contents: &[u8]| {
                device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents,
                    usage: storage,
                })
            };
            let codes = init("codes", bytemuck::cast_slice(codes));
            let quant = init("quant", bytemuck::cast_slice(quant));
            let scales = init("scales", bytemuck::cast_slice(scales));
            let params = empty(
                "params",
                std::mem::size_of::<Params>() as u64,
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            );
            let allow = empty("allow", rows.div_ceil(32) as u64 * 4, storage);
            let dist = empty("dist", rows as u64 * 4, wgpu::BufferUsages::STORAGE);
            let groups = (rows as u32).div_ceil(WORKGROUP);
            let per_line = groups.min(limits.max_compute_workgroups_per_dimension.max(1));
            bytes += codes.size() + quant.size() + scales.size() + dist.size();
            shards.push(Shard {
                base: base as u32,
                n: n as u32,
                lines: groups.div_ceil(per_line),
                rows_per_line: per_line * WORKGROUP,
                hamming: group(
                    &hamming,
                    "hamming",
                    &[
                        (0, &params),
                        (1, &codes),
                        (2, &allow),
                        (3, &qcode),
                        (4, &dist),
                        (5, &hist),
                    ],
                ),
                rescore: group(
                    &rescore,
                    "rescore",
                    &[
                        (0, &params),
                        (4, &dist),
                        (5, &hist),
                        (6, &quant),
                        (7, &scales),
                        (8, &query),
                        (9, &out),
                    ],
                ),
                params,
                allow,
            });
            base += n;
            if n == 0 {
                break;
            }
        }
        Ok(Self {
            device,
            queue,
            adapter: adapter_name,
            software: info.device_type == wgpu::DeviceType::Cpu,
            n: total as u32,
            dim: index.dim,
            words,
            dim4,
            hist_len,
            qcode,
            query,
            hist,
            out,
            read_hist,
            read_out,
            hamming,
            rescore,
            shards,
            bytes,
        })
    }

    /// How many shards the index was split into (the GPU's binding limit).
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The adapter's name, backend and kind (e.g. "SwiftShader Device (BrowserWebGpu, Cpu)").
    /// The adapter is a CPU emulation (SwiftShader, lavapipe, WARP): correct, but slower than
    /// the SIMD kernel on the same cores.
    pub fn is_software(&self) -> bool {
        self.software
    }

    pub fn adapter(&self) -> &str {
        &self.adapter
    }

    /// Bytes of GPU memory the index holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The `k` best rows for `q` among those whose bit is set in `allow` (bit `i % 32` of
    /// word `i / 32`; `None` allows every row). Same contract as [`VectorIndex::search`].
    pub async fn search(
        &self,
        q: &[f32],
        k: usize,
        allow: Option<&[u32]>,
    ) -> Result<Vec<(usize, f32)>, GpuError> {
        self.search_with(q, k, (k * OVERSAMPLE).max(MIN_CANDIDATES), allow)
            .await
    }

    pub async fn search_with(
        &self,
        q: &[f32],
        k: usize,
        candidates: usize,
        allow: Option<&[u32]>,
    ) -> Result<Vec<(usize, f32)>, GpuError> {
        if q.len() != self.dim {
            return Err(GpuError::Dimension {
                got: q.len(),
                want: self.dim,
            });
        }
        if k == 0 || self.n == 0 {
            return Ok(Vec::new());
        }
        let words = self.n.div_ceil(32) as usize;
        let mut bits = vec![0u32; words];
        match allow {
            Some(a) => {
                for (b, x) in bits.iter_mut().zip(a) {
                    *b = *x;
                }
            }
            None => bits.fill(u32::MAX),
        }
        let code = sign_code_u32(q);
        let mut query = q.to_vec();
        query.resize(self.dim4 as usize * 4, 0.0);
        let write_params = |threshold: u32| {
            for sh in &self.shards {
                let p = Params {
                    n: sh.n,
                    words: self.words,
                    dim4: self.dim4,
                    threshold,
                    hist_len: self.hist_len,
                    rows_per_line: sh.rows_per_line,
                    base: sh.base,
                    pad: 0,
                };
                self.queue
                    .write_buffer(&sh.params, 0, bytemuck::bytes_of(&p));
            }
        };
        write_params(0);
        for sh in &self.shards {
            let from = (sh.base / 32) as usize;
            let to = (from + (sh.n as usize).div_ceil(32)).min(bits.len());
            if from < to {
                self.queue
                    .write_buffer(&sh.allow, 0, bytemuck::cast_slice(&bits[from..to]));
            }
        }
        self.queue
            .write_buffer(&self.qcode, 0, bytemuck::cast_slice(&code));
        self.queue
            .write_buffer(&self.query, 0, bytemuck::cast_slice(&query));
        let hist_bytes = u64::from(self.hist_len) * 4;
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.clear_buffer(&self.hist, 0, None);
        for sh in &self.shards {
            Self::dispatch(&mut enc, &self.hamming, &sh.hamming, sh);
        }
        enc.copy_buffer_to_buffer(&self.hist, 0, &self.read_hist, 0, hist_bytes);
        self.queue.submit([enc.finish()]);
        let hist: Vec<u32> = self.read(&self.read_hist, hist_bytes).await?;
        let (threshold, total) = candidate_threshold(&hist, candidates);
        if total == 0 {
            return Ok(Vec::new());
        }
        write_params(threshold);
        let out_bytes = total as u64 * 8;
        let mut enc = self.device.create_command_encoder(&Default::default());
        for sh in &self.shards {
            Self::dispatch(&mut enc, &self.rescore, &sh.rescore, sh);
        }
        enc.copy_buffer_to_buffer(&self.out, 0, &self.read_out, 0, out_bytes);
        self.queue.submit([enc.finish()]);
        let pairs: Vec<u32> = self.read(&self.read_out, out_bytes).await?;
        let mut scored: Vec<(usize, f32)> = pairs
            .chunks_exact(2)
            .map(|p| (p[0] as usize, f32::from_bits(p[1])))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(k);
        Ok(scored)
    }

    fn dispatch(
        enc: &mut wgpu::CommandEncoder,
        pipeline: &wgpu::ComputePipeline,
        group: &wgpu::BindGroup,
        sh: &Shard,
    ) {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, group, &[]);
        pass.dispatch_workgroups(sh.rows_per_line / WORKGROUP, sh.lines, 1);
    }

    async fn read(&self, buf: &wgpu::Buffer, bytes: u64) -> Result<Vec<u32>, GpuError> {
        let (tx, rx) = futures::channel::oneshot::channel();
        buf.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Map(e.to_string()))?;
        rx.await
            .map_err(|e| GpuError::Map(e.to_string()))?
            .map_err(|e| GpuError::Map(e.to_string()))?;
        let v = {
            let view = buf
                .get_mapped_range(0..bytes)
                .map_err(|e| GpuError::Map(e.to_string()))?;
            bytemuck::cast_slice::<u8, u32>(&view).to_vec()
        };
        buf.unmap();
        Ok(v)
    }
}
