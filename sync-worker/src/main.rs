//! `sync-worker`: in the browser (wasm32), the PWA's sync Web Worker — the iroh endpoint and
//! its connection to the sync node, so that iroh, QUIC and TLS are neither on the page's
//! thread nor in the page's wasm module (they were a quarter of it). Natively it does nothing.

#[cfg(target_arch = "wasm32")]
mod worker;

#[cfg(target_arch = "wasm32")]
fn main() {
    worker::start();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!(
        "sync-worker is the PWA's sync Web Worker: trunk builds it for wasm32 into dist/; natively it does nothing"
    );
    std::process::exit(2);
}
