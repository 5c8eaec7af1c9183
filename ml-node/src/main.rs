//! `ml-node`: faces, CLIP and text in photos for a household's sync node, and an Immich-shaped
//! `/predict`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tessera_ml::cluster::ClusterParams;
use tessera_ml::{Manifest, Provider};

mod http;
mod models;
mod state;
mod worker;

#[derive(Parser)]
#[command(
    name = "ml-node",
    version,
    about = "Tessera's ML node: faces and smart search for a sync node"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct ModelArgs {
    /// Where models live (`<dir>/<model>/<file>`); also searched for libonnxruntime.so.
    #[arg(long, env = "TESSERA_MODELS", default_value_os_t = models::default_dir())]
    models: PathBuf,
    /// libonnxruntime.so to load (else ORT_DYLIB_PATH, else the models directory).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    ort_lib: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve /ping and /predict, and (with --node) analyse every photo of that sync node.
    Serve {
        #[arg(long, default_value = "127.0.0.1:3003")]
        listen: SocketAddr,
        /// The sync node to work for (its URL, e.g. http://nas.local:2283).
        #[arg(long)]
        node: Option<String>,
        /// An API key with the `ml` permission, created by an admin on that node.
        #[arg(long, env = "TESSERA_ML_KEY")]
        api_key: Option<String>,
        #[command(flatten)]
        m: ModelArgs,
        /// Face model (Immich's default; falls back to an installed one when unavailable).
        #[arg(long, default_value = "buffalo_l")]
        face_model: String,
        /// CLIP model for smart search.
        #[arg(long, default_value = "ViT-B-32__openai")]
        clip_model: String,
        /// Text-in-photos model (OCR), installed from PyPI by `cargo xtask models`; "" turns
        /// it off.
        #[arg(long, default_value = "pp-ocrv4")]
        ocr_model: String,
        /// Execution provider: cpu, or a GPU one compiled in (default: the best that loads).
        #[arg(long)]
        provider: Option<String>,
        /// Intra-op threads per model (default: the machine's cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Never download models from the hub.
        #[arg(long)]
        offline: bool,
        #[arg(long, default_value_t = ClusterParams::default().min_score)]
        min_score: f32,
        #[arg(long, default_value_t = ClusterParams::default().max_distance)]
        max_distance: f32,
        #[arg(long, default_value_t = ClusterParams::default().min_faces)]
        min_faces: usize,
        /// Photos analysed per batch before results are published.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Hours between passes that cluster every unassigned face again.
        #[arg(long, default_value_t = 24.0)]
        recluster_hours: f64,
        /// Saved size (MiB) of catalogue documents kept loaded between cycles (a loaded
        /// document takes about 8 times its saved size); the rest is held as saved bytes and
        /// read back when needed (0: unload all it may).
        #[arg(long, default_value_t = 4)]
        catalogue_memory_mib: usize,
        /// Keep the catalogue and clustering state in this directory (one per ML node), so a
        /// restart syncs only what changed and does not cluster every face again. Without it
        /// everything is held in memory and read again from the node after a restart.
        #[arg(long, env = "TESSERA_ML_STATE")]
        state_dir: Option<PathBuf>,
    },
    /// Read the text in image files (OCR) and print it with the time each took.
    Ocr {
        files: Vec<PathBuf>,
        #[arg(long, default_value = "pp-ocrv4")]
        ocr_model: String,
        /// Intra-op threads (default: the machine's cores).
        #[arg(long)]
        threads: Option<usize>,
        #[command(flatten)]
        m: ModelArgs,
    },
    /// Model management.
    Models {
        #[command(subcommand)]
        cmd: ModelsCmd,
    },
}

#[derive(Subcommand)]
enum ModelsCmd {
    /// What the manifest knows and what is installed.
    List {
        #[command(flatten)]
        m: ModelArgs,
    },
    /// Install models from a local directory (air-gapped homes); checksums are verified.
    Install {
        /// Directory holding `<model>/<file>` (or Immich's `<task>/<model>/<file>` cache).
        dir: PathBuf,
        /// Only this model (default: every model found in DIR).
        #[arg(long)]
        model: Option<String>,
        #[command(flatten)]
        m: ModelArgs,
    },
    /// Download a model from the public hub (verified against the pinned checksums).
    Fetch {
        model: String,
        #[command(flatten)]
        m: ModelArgs,
    },
}

/// Intra-op threads when not given: the machine's cores.
fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,ort=warn".into()),
        )
        // Colours for a terminal only: a log file (a service's journal) gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let cli = Cli::parse();
    let manifest = Manifest::builtin().context("reading the built-in model manifest")?;
    match cli.cmd {
        Cmd::Models { cmd } => match cmd {
            ModelsCmd::List { m } => {
                for spec in &manifest.models {
                    let state = if spec.installed(&m.models) {
                        "installed"
                    } else {
                        "not installed"
                    };
                    let tag = if spec.test_only { " (tests only)" } else { "" };
                    println!(
                        "{:<20} {:<20} {state}{tag}\n    {}\n    licence: {}",
                        spec.name, spec.task, spec.source, spec.license
                    );
                }
                Ok(())
            }
            ModelsCmd::Install { dir, model, m } => {
                let mut n = 0;
                for spec in &manifest.models {
                    if model.as_deref().is_some_and(|x| x != spec.name) {
                        continue;
                    }
                    match spec.install_from_dir(&dir, &m.models) {
                        Ok(files) => {
                            n += 1;
                            println!(
                                "installed {} ({} files, checksums verified)",
                                spec.name,
                                files.len()
                            );
                        }
                        Err(e) if model.is_some() => {
                            return Err(e).with_context(|| format!("installing {}", spec.name))
                        }
                        Err(e) => tracing::debug!("{}: {e}", spec.name),
                    }
                }
                if n == 0 {
                    anyhow::bail!("no model of the manifest found under {}", dir.display());
                }
                Ok(())
            }
            ModelsCmd::Fetch { model, m } => {
                let spec = manifest.get(&model)?.clone();
                models::download(&manifest, &spec, &m.models).await
            }
        },
        Cmd::Ocr {
            files,
            ocr_model,
            threads,
            m,
        } => {
            let lib = tessera_ml::runtime::find_library(m.ort_lib.as_deref(), &m.models)?;
            let threads = threads.unwrap_or_else(default_threads);
            let rt = tessera_ml::Runtime::init(&lib, None, threads)
                .with_context(|| format!("loading ONNX Runtime from {}", lib.display()))?;
            let ocr = tessera_ml::engine::OcrModels::load(&rt, &manifest, &m.models, &ocr_model)
                .with_context(|| {
                    format!("loading {ocr_model} (install it with `cargo xtask models`)")
                })?;
            let mut total = 0.0;
            for f in &files {
                let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
                let img = tessera_ml::prep::decode(&bytes)
                    .with_context(|| format!("decoding {}", f.display()))?;
                let t = std::time::Instant::now();
                let lines = ocr.ocr.read(&img)?;
                let secs = t.elapsed().as_secs_f64();
                total += secs;
                println!(
                    "== {} ({}x{}, {} lines, {:.2} s)",
                    f.display(),
                    img.width(),
                    img.height(),
                    lines.len(),
                    secs
                );
                for l in lines {
                    println!("{}", l.text);
                }
            }
            if !files.is_empty() {
                println!(
                    "{} images in {total:.2} s: {:.2} images/s",
                    files.len(),
                    files.len() as f64 / total.max(1e-9)
                );
            }
            Ok(())
        }
        Cmd::Serve {
            listen,
            node,
            api_key,
            m,
            face_model,
            clip_model,
            ocr_model,
            provider,
            threads,
            offline,
            min_score,
            max_distance,
            min_faces,
            batch,
            recluster_hours,
            catalogue_memory_mib,
            state_dir,
        } => {
            let wanted = match provider.as_deref() {
                None => None,
                Some(p) => Some(Provider::parse(p).with_context(|| {
                    format!(
                        "execution provider {p:?} is not compiled in (this build has: {})",
                        Provider::compiled()
                            .iter()
                            .map(|p| p.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?),
            };
            let threads = threads.unwrap_or_else(default_threads);
            let engine = models::Engine::start(models::StartOptions {
                manifest,
                dir: m.models,
                ort_lib: m.ort_lib,
                provider: wanted,
                threads,
                face_model,
                clip_model,
                ocr_model,
                offline,
            })
            .await?;
            let engine = Arc::new(engine);
            let params = ClusterParams {
                min_score,
                max_distance,
                min_faces,
            };
            let status = Arc::new(worker::Status::default());
            if let Some(url) = node {
                let key = api_key.context(
                    "--node needs --api-key (an API key with the `ml` permission from that node)",
                )?;
                let w = worker::Worker::new(
                    url,
                    key,
                    engine.clone(),
                    params,
                    batch.max(1),
                    status.clone(),
                )?
                .recluster_every(std::time::Duration::from_secs_f64(
                    recluster_hours.max(0.02) * 3600.0,
                ))
                .loaded_budget(catalogue_memory_mib << 20);
                let w = match &state_dir {
                    Some(dir) => w
                        .state_dir(dir)
                        .with_context(|| format!("--state-dir {}", dir.display()))?,
                    None => {
                        tracing::info!("no --state-dir: a restart reads the whole catalogue from the node again and clusters every face");
                        w
                    }
                };
                tokio::spawn(w.run());
            } else {
                tracing::info!("no --node given: serving /predict only");
            }
            http::serve(listen, engine, status, params).await
        }
    }
}
