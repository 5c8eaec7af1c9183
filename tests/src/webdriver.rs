//! A small W3C WebDriver client for the benchmark harnesses (the `it` tests use fantoccini):
//! Debian's chromedriver on a free loopback port, headless Chromium with a throw-away profile,
//! and the few commands the benches need.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// A chromedriver process and one headless Chromium session; both end when it is dropped.
pub struct Browser {
    http: reqwest::blocking::Client,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium (1280×900, the flags ENVIRONMENT.md lists).
    pub fn start() -> Result<Self> {
        let port = crate::free_port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("chromedriver (Debian: chromium-driver)")?;
        let profile = tempfile::tempdir()?;
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(900))
            .build()?;
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1280,900", format!("--user-data-dir={}", profile.path().display())]
        }, "goog:loggingPrefs": {"browser": "ALL"}}}});
        let base = format!("http://127.0.0.1:{port}");
        let mut b = Browser {
            http,
            session: String::new(),
            driver,
            _profile: profile,
        };
        let start = Instant::now();
        let id = loop {
            match b.call(
                reqwest::Method::POST,
                &format!("{base}/session"),
                Some(caps.clone()),
            ) {
                Ok(v) => break v["sessionId"].as_str().unwrap_or_default().to_owned(),
                Err(e) if start.elapsed() > Duration::from_secs(20) => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        };
        b.session = format!("{base}/session/{id}");
        b.cmd(
            reqwest::Method::POST,
            "/timeouts",
            Some(json!({"script": 600_000})),
        )?;
        Ok(b)
    }

    fn call(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> Result<Value> {
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send()?.json()?;
        if let Some(e) = v["value"]["error"].as_str() {
            bail!("webdriver {url}: {e}: {}", v["value"]["message"]);
        }
        Ok(v["value"].clone())
    }

    /// The page's console messages since the last call (chromedriver's log endpoint), one per
    /// line: what to print when a check on the page fails.
    pub fn console(&self) -> String {
        match self.cmd(
            reqwest::Method::POST,
            "/se/log",
            Some(json!({"type": "browser"})),
        ) {
            Ok(Value::Array(entries)) => entries
                .iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e["level"].as_str().unwrap_or(""),
                        e["message"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Ok(other) => other.to_string(),
            Err(e) => format!("(no console log: {e})"),
        }
    }

    /// A command of this session (`path` after `/session/ID`).
    pub fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        self.call(method, &format!("{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) -> Result<()> {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({"url": url})))?;
        Ok(())
    }

    /// Runs `script` (a function body) in the page and returns its value.
    pub fn js(&self, script: &str, args: Value) -> Result<Value> {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Runs `script` with a callback as its last argument and returns what it passes.
    pub fn js_async(&self, script: &str, args: Value) -> Result<Value> {
        self.cmd(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Polls `script` every 50 ms until it returns something other than null/false.
    pub fn wait_for(&self, what: &str, script: &str, timeout: Duration) -> Result<Value> {
        let t = Instant::now();
        loop {
            let v = self.js(script, json!([]))?;
            if !(v.is_null() || v == json!(false)) {
                return Ok(v);
            }
            if t.elapsed() > timeout {
                bail!("{what}: not after {} s", timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Result<Vec<u8>> {
        let png = self.cmd(reqwest::Method::GET, "/screenshot", None)?;
        Ok(b64decode(png.as_str().unwrap_or_default()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.call(reqwest::Method::DELETE, &self.session.clone(), None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (WebDriver's screenshots).
pub fn b64decode(s: &str) -> Vec<u8> {
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
