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
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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

fn b64decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

struct Wd {
    http: reqwest::blocking::Client,
    base: String,
}

impl Wd {
    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send()?.json()?;
        if let Some(e) = v["value"]["error"].as_str() {
            bail!("webdriver {path}: {e}: {}", v["value"]["message"]);
        }
        Ok(v["value"].clone())
    }
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
    let dport = tessera_tests::free_port();
    let _driver = Kill(
        Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={dport}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("chromedriver (Debian: chromium-driver)")?,
    );
    let profile = tempfile::tempdir()?;
    let wd = Wd {
        http: reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(900))
            .build()?,
        base: format!("http://127.0.0.1:{dport}"),
    };
    let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
        "binary": "/usr/bin/chromium",
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
            "--window-size=1280,900", format!("--user-data-dir={}", profile.path().display())]
    }}}});
    let start = Instant::now();
    let session = loop {
        match wd.call(reqwest::Method::POST, "/session", Some(caps.clone())) {
            Ok(v) => break v["sessionId"].as_str().unwrap_or_default().to_owned(),
            Err(e) if start.elapsed() > Duration::from_secs(20) => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    };
    let s = format!("/session/{session}");
    let res = (|| -> Result<Value> {
        wd.call(
            reqwest::Method::POST,
            &format!("{s}/timeouts"),
            Some(json!({"script": 600_000})),
        )?;
        wd.call(
            reqwest::Method::POST,
            &format!("{s}/url"),
            Some(json!({"url": format!("http://127.0.0.1:{port}/?bench={assets}")})),
        )?;
        let t = Instant::now();
        loop {
            let v = wd.call(
                reqwest::Method::POST,
                &format!("{s}/execute/sync"),
                Some(json!({"script": "return typeof window.__tesseraBench === 'function'", "args": []})),
            )?;
            if v == json!(true) {
                break;
            }
            if t.elapsed() > Duration::from_secs(120) {
                bail!("the bench page did not start");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let ready_ms = t.elapsed().as_millis();
        let out = wd.call(
            reqwest::Method::POST,
            &format!("{s}/execute/async"),
            Some(json!({
                "script": "const done = arguments[arguments.length - 1]; window.__tesseraBench(arguments[0], arguments[1]).then(done, e => done(JSON.stringify({error: String(e)})));",
                "args": [frames, step],
            })),
        )?;
        let mut v: Value = serde_json::from_str(out.as_str().unwrap_or("null"))
            .map_err(|e| anyhow!("bench result: {e}: {out}"))?;
        v["page_ready_ms"] = json!(ready_ms);
        v["dist"] = json!(dist.display().to_string());
        if let Some(p) = &shot {
            // Somewhere in the middle, as the user would see it.
            wd.call(
                reqwest::Method::POST,
                &format!("{s}/execute/sync"),
                Some(json!({"script": "const s = document.querySelector('.scroller'); s.scrollTop = s.scrollHeight * 0.37; return 0;", "args": []})),
            )?;
            std::thread::sleep(Duration::from_millis(500));
            let png = wd.call(reqwest::Method::GET, &format!("{s}/screenshot"), None)?;
            std::fs::write(p, b64decode(png.as_str().unwrap_or_default()))?;
            v["screenshot"] = json!(p);
        }
        Ok(v)
    })();
    let _ = wd.call(reqwest::Method::DELETE, &s, None);
    let v = res?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}
