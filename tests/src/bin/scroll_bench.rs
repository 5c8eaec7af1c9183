//! Timeline scroll benchmark: serves the built PWA (`dist/`) on loopback, opens
//! `/?bench=N` (N synthetic assets, no server data) in headless Chromium through chromedriver,
//! runs `window.__tesseraBench(frames, step)` — scrollTop += step every animation frame, then
//! scrubber jumps — and prints its JSON (frame-time p50/p95/max, long frames, layout time, DOM
//! nodes).
//!
//! ```text
//! tessera-scroll-bench [--dist DIR] [--assets 100000] [--frames 300] [--step 2000]
//!                      [--screenshot PATH]
//! ```
//! The PWA should be a release build (`trunk build --release --cargo-profile wasm-release`) for
//! meaningful numbers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn content_type(p: &Path) -> &'static str {
    match p.extension().and_then(|e| e.to_str()).unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript",
        "wasm" => "application/wasm",
        "json" | "webmanifest" => "application/json",
        "png" => "image/png",
        "css" => "text/css",
        _ => "application/octet-stream",
    }
}

/// A static file server for `dir` on a free loopback port (index.html for `/`).
fn serve(dir: PathBuf) -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("runtime: {e}");
                return;
            }
        };
        rt.block_on(async move {
            let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
                let dir = dir.clone();
                async move {
                    let rel = uri.path().trim_start_matches('/');
                    let rel = if rel.is_empty() { "index.html" } else { rel };
                    if rel.split('/').any(|c| c == "..") {
                        return (
                            axum::http::StatusCode::BAD_REQUEST,
                            [("content-type", "text/plain")],
                            Vec::new(),
                        );
                    }
                    let p = dir.join(rel);
                    match tokio::fs::read(&p).await {
                        Ok(b) => (
                            axum::http::StatusCode::OK,
                            [("content-type", content_type(&p))],
                            b,
                        ),
                        Err(_) => (
                            axum::http::StatusCode::NOT_FOUND,
                            [("content-type", "text/plain")],
                            Vec::new(),
                        ),
                    }
                }
            });
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => {
                    if let Err(e) = axum::serve(l, app).await {
                        eprintln!("static server: {e}");
                    }
                }
                Err(e) => eprintln!("static server: {e}"),
            }
        });
    });
    Ok(port)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dist = arg(&args, "--dist")
        .map(PathBuf::from)
        .or_else(tessera_tests::web_dir)
        .context("the PWA is not built: run `trunk build --release` (dist/index.html)")?;
    let assets: u64 = arg(&args, "--assets")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let frames: u64 = arg(&args, "--frames")
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let step: i64 = arg(&args, "--step")
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let shot = arg(&args, "--screenshot");

    let port = serve(dist.clone())?;
    let b = tessera_tests::webdriver::Browser::start()?;
    let res = (|| -> Result<Value> {
        b.goto(&format!("http://127.0.0.1:{port}/?bench={assets}"))?;
        let t = Instant::now();
        b.wait_for(
            "the bench page",
            "return typeof window.__tesseraBench === 'function'",
            Duration::from_secs(120),
        )?;
        let ready_ms = t.elapsed().as_millis();
        let out = b.js_async(
            "const done = arguments[arguments.length - 1]; window.__tesseraBench(arguments[0], arguments[1]).then(done, e => done(JSON.stringify({error: String(e)})));",
            json!([frames, step]),
        )?;
        let mut v: Value = serde_json::from_str(out.as_str().unwrap_or("null"))
            .map_err(|e| anyhow!("bench result: {e}: {out}"))?;
        v["page_ready_ms"] = json!(ready_ms);
        v["dist"] = json!(dist.display().to_string());
        if let Some(p) = &shot {
            // Somewhere in the middle, as the user would see it.
            b.js(
                "const s = document.querySelector('.scroller'); s.scrollTop = s.scrollHeight * 0.37; return 0;",
                json!([]),
            )?;
            std::thread::sleep(Duration::from_millis(500));
            std::fs::write(p, b.screenshot()?)?;
            v["screenshot"] = json!(p);
        }
        Ok(v)
    })();
    drop(b);
    let v = res?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}
