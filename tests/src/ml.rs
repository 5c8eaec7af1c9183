//! ML test support: the models directory, real face photos, the Python oracle, and `ml-node`
//! processes on loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bin_path;

/// Prints why an ML test cannot run and returns `None`, or panics when `cargo xtask test`
/// (which installs everything) requires ML tests (`TESSERA_REQUIRE_ML`).
pub fn require(what: &str, var: &str) -> Option<PathBuf> {
    match std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.exists())
    {
        Some(p) => Some(p),
        None => {
            if std::env::var_os("TESSERA_REQUIRE_ML").is_some() {
                panic!("ML test cannot run: {what} missing (${var})");
            }
            eprintln!("SKIPPED: {what} missing (${var}); `cargo xtask test` installs it");
            None
        }
    }
}

/// `~/.cache/tessera/models` as installed by `cargo xtask models`.
pub fn models_dir() -> Option<PathBuf> {
    require(
        "the models directory (cargo xtask models)",
        "TESSERA_MODELS",
    )
}

/// face_recognition's test photos (obama.jpg, obama2.jpg, obama3.jpg, biden.jpg).
pub fn face_photos() -> Option<PathBuf> {
    require(
        "real face photos (PyPI face_recognition sdist)",
        "TESSERA_FACE_PHOTOS",
    )
}

/// The Python with onnxruntime + numpy + PIL used as the test oracle.
/// tesserocr's `eurotext.png` (a page of printed text with a known transcription).
pub fn text_photos() -> Option<PathBuf> {
    require(
        "a page of text (tesserocr's eurotext.png)",
        "TESSERA_TEXT_PHOTOS",
    )
}

pub fn oracle_python() -> Option<PathBuf> {
    require("the Python oracle environment", "TESSERA_PYTHON")
}

/// A JPEG of one flat colour with a little noise (what the colour-CLIP test model sees).
pub fn colour_jpeg(rgb: [u8; 3], seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(400, 300, |x, y| {
        let n = ((x * 7 + y * 13 + seed * 31) % 17) as i16 - 8;
        image::Rgb(rgb.map(|c| (i16::from(c) + n).clamp(0, 255) as u8))
    });
    let mut out = Vec::new();
    let _ = jpeg_encoder::Encoder::new(&mut out, 90).encode(
        img.as_raw(),
        400,
        300,
        jpeg_encoder::ColorType::Rgb,
    );
    out
}

/// An `ml-node serve` process on loopback, killed on drop.
pub struct MlNode {
    pub url: String,
    pub log_path: PathBuf,
    child: Option<Child>,
}

impl MlNode {
    /// Starts `ml-node serve --listen 127.0.0.1:<port> --models DIR --offline <extra>` and
    /// waits for `/ping`.
    pub fn start_with(models: &Path, log_path: &Path, port: u16, extra: &[String]) -> Result<Self> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)?;
        let child = Command::new(bin_path("ml-node")?)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--offline",
                "--models",
            ])
            .arg(models)
            .args(extra)
            .env("RUST_LOG", "info,ort=warn")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting ml-node")?;
        let mut n = Self {
            url: format!("http://127.0.0.1:{port}"),
            log_path: log_path.to_path_buf(),
            child: Some(child),
        };
        let client = reqwest::blocking::Client::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Some(c) = n.child.as_mut() {
                if let Some(s) = c.try_wait()? {
                    bail!("ml-node exited early ({s}); log: {}", n.log());
                }
            }
            if client
                .get(format!("{}/ping", n.url))
                .send()
                .map(|r| r.status().is_success())
                .unwrap_or(false)
            {
                return Ok(n);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("ml-node did not answer; log: {}", n.log())
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for MlNode {
    fn drop(&mut self) {
        self.kill();
    }
}
