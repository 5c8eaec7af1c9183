//! `search-worker`: in the browser (wasm32), the PWA's search Web Worker; natively, the same
//! parity-and-speed run over generated vectors (`cargo xtask bench` runs it on the machine's
//! GPU, or Mesa's lavapipe).

#[cfg(target_arch = "wasm32")]
mod worker;

#[cfg(target_arch = "wasm32")]
fn main() {
    worker::start();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> anyhow::Result<()> {
    use clap::Parser;
    use tessera_search_gpu::synthetic_check::{run, Setup};

    /// Two-stage vector search on the CPU and the GPU over generated vectors with known
    /// neighbours; prints a JSON report (rows found per query, p50/p95, adapter).
    #[derive(Parser)]
    struct Args {
        #[arg(long, default_value_t = 300_000)]
        n: usize,
        #[arg(long, default_value_t = 512)]
        dim: usize,
        #[arg(long, default_value_t = 30)]
        queries: usize,
        #[arg(long, default_value_t = 10)]
        planted: usize,
        #[arg(long, default_value_t = 50)]
        k: usize,
        #[arg(long, default_value_t = 3)]
        seed: u64,
    }
    let a = Args::parse();
    let setup = Setup {
        n: a.n,
        dim: a.dim,
        queries: a.queries,
        planted: a.planted,
        k: a.k,
        seed: a.seed,
    };
    let start = std::time::Instant::now();
    let now = move || start.elapsed().as_secs_f64() * 1000.0;
    let report = pollster::block_on(run(&setup, &now));
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
