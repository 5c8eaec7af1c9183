//! `sync-node`: serve a data directory, or check it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tessera_sync_node::{blobs, Node, NodeConfig};

#[derive(Parser)]
#[command(
    name = "sync-node",
    version,
    about = "Tessera sync node: stores originals, serves the PWA and the API"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
// Parsed once at start-up; boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Cmd {
    /// Serve the HTTP API and the PWA from a data directory.
    Serve {
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        #[arg(long, default_value = "127.0.0.1:2283")]
        listen: SocketAddr,
        /// The built PWA (trunk's dist/). Defaults to ./dist when it exists.
        #[arg(long)]
        web: Option<PathBuf>,
        /// Concurrent media jobs (default: number of cores).
        #[arg(long)]
        workers: Option<usize>,
        /// Accept uploads but leave media jobs queued (maintenance; they run at the next start).
        #[arg(long)]
        jobs_paused: bool,
        /// An ML node (`ml-node serve`) to embed smart-search queries, e.g. http://127.0.0.1:3003.
        #[arg(long, env = "TESSERA_ML_URL")]
        ml: Option<String>,
        /// Once an admin exists, write an API key with the `ml` permission here (mode 0600)
        /// for an ML node on this machine (`cargo xtask run` uses it).
        #[arg(long)]
        ml_key_file: Option<PathBuf>,
        /// UDP address of the iroh endpoint (devices and other nodes sync over it). Default:
        /// the --listen address (same port number, UDP).
        #[arg(long)]
        iroh: Option<SocketAddr>,
        /// TCP address of the embedded iroh relay that browsers connect through. Default: the
        /// --listen host, port + 1 (a random port if that one is taken).
        #[arg(long)]
        relay: Option<SocketAddr>,
        /// Run without the embedded relay (browsers then sync over HTTP only).
        #[arg(long)]
        no_relay: bool,
        /// The relay's URL as browsers reach it, when a reverse proxy serves it (e.g.
        /// `https://photos.example.org/relay` forwarded to --relay). Default: the host the PWA
        /// was loaded from, relay port, plain HTTP.
        #[arg(long)]
        relay_public_url: Option<String>,
        /// Join the household of another node with a pairing ticket
        /// (`POST /api/pairing/tickets` on that node): replicate every document, account and
        /// blob, and keep following it.
        #[arg(long)]
        join: Option<String>,
        /// This node's name as other nodes and devices see it.
        #[arg(long, default_value = "sync node")]
        name: String,
    },
    /// Verify every blob's hash and the index; with --repair, quarantine corrupt blobs and
    /// rebuild the index from the files.
    Fsck {
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        #[arg(long)]
        repair: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Writes an `ml` API key of the admin to `file` once an admin exists (a local ML node reads
/// it). Done once: an existing file is left alone.
async fn provision_ml_key(node: std::sync::Arc<Node>, file: PathBuf) {
    loop {
        if file.exists() {
            return;
        }
        match node.auth.admin() {
            Ok(Some(admin)) => {
                let made = node
                    .auth
                    .create_api_key(&admin, "ml-node (this machine)", vec!["ml".into()])
                    .map_err(anyhow::Error::from)
                    .and_then(|(_, secret)| {
                        use std::io::Write;
                        use std::os::unix::fs::OpenOptionsExt;
                        let tmp = file.with_extension("tmp");
                        let mut f = std::fs::OpenOptions::new()
                            .write(true)
                            .create(true)
                            .truncate(true)
                            .mode(0o600)
                            .open(&tmp)?;
                        f.write_all(secret.as_bytes())?;
                        f.sync_all()?;
                        std::fs::rename(&tmp, &file)?;
                        Ok(())
                    });
                match made {
                    Ok(()) => {
                        tracing::info!(file = %file.display(), "wrote an API key for the local ML node");
                        return;
                    }
                    Err(e) => tracing::warn!(
                        "cannot write the ML node's key to {}: {e:#}",
                        file.display()
                    ),
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("reading users: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .init();
    match Cli::parse().cmd {
        Cmd::Serve {
            data,
            listen,
            web,
            workers,
            jobs_paused,
            ml,
            ml_key_file,
            iroh,
            relay,
            no_relay,
            relay_public_url,
            join,
            name,
        } => {
            let mut cfg = NodeConfig::new(&data);
            cfg.ml = ml;
            cfg.web = web
                .or_else(|| Some(PathBuf::from("dist")).filter(|d| d.join("index.html").exists()));
            if let Some(w) = workers {
                cfg.workers = w.max(1);
            }
            let node = Node::open(cfg)
                .with_context(|| format!("opening data directory {}", data.display()))?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            let http = listener.local_addr().unwrap_or(listen);
            let relay = if no_relay {
                None
            } else {
                Some(match relay {
                    Some(r) => r,
                    None => {
                        let want = SocketAddr::new(http.ip(), http.port().wrapping_add(1));
                        match std::net::TcpListener::bind(want) {
                            Ok(l) => {
                                drop(l);
                                want
                            }
                            Err(_) => {
                                tracing::warn!("relay port {want} is taken; using a random port (pass --relay to choose)");
                                SocketAddr::new(http.ip(), 0)
                            }
                        }
                    }
                })
            };
            if let Some(u) = &relay_public_url {
                u.parse::<iroh::RelayUrl>()
                    .with_context(|| format!("--relay-public-url {u:?} is not a URL"))?;
            }
            let cfg = tessera_sync_node::peer::PeerConfig {
                iroh: iroh.unwrap_or(http),
                relay,
                name,
                relay_public_url,
            };
            let peer = tessera_sync_node::peer::Peer::start(node.clone(), cfg.clone())
                .await
                .with_context(|| {
                    format!(
                        "starting peer-to-peer sync (iroh on udp {}, relay on tcp {:?})",
                        cfg.iroh, cfg.relay
                    )
                })?;
            let _ = node.peer.set(peer.clone());
            if let Some(ticket) = join {
                peer.join(&ticket)
                    .await
                    .context("joining the household with the pairing ticket")?;
            }
            tracing::info!(
                data = %data.display(),
                pending_jobs = node.jobs.pending(),
                web = ?node.config.web,
                "sync node listening on http://{listen}"
            );
            if let Some(file) = ml_key_file {
                tokio::spawn(provision_ml_key(node.clone(), file));
            }
            if jobs_paused {
                tracing::warn!(
                    "media jobs are paused (--jobs-paused): uploads are stored and queued only"
                );
            } else {
                tokio::spawn(tessera_sync_node::jobs::run(node.clone()));
            }
            axum::serve(listener, tessera_sync_node::api::router(node.clone()))
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
                .context("serving HTTP")?;
            peer.shutdown().await;
            node.flush().context("flushing the index")?;
            Ok(())
        }
        Cmd::Fsck { data, repair, json } => {
            let node = Node::open(NodeConfig::new(&data))
                .with_context(|| format!("opening data directory {}", data.display()))?;
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} verifying blobs {pos}/{len} [{bar:40}] {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let report = blobs::fsck(&node.blobs, repair, |i, n| {
                bar.set_length(n);
                bar.set_position(i);
            })
            .context("fsck")?;
            bar.finish_and_clear();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{} blobs, {} bytes verified", report.files, report.bytes);
                for c in &report.corrupt {
                    println!("CORRUPT (hash does not match name): {c}");
                }
                for h in &report.missing_from_index {
                    println!("not indexed (harmless; --repair indexes it): {h}");
                }
                for h in &report.index_without_file {
                    println!("indexed but missing on disk: {h}");
                }
                if report.repaired {
                    println!("repaired: corrupt blobs quarantined, index rebuilt from the files");
                } else if report.is_clean() {
                    println!("clean");
                }
            }
            if !report.is_clean() && !report.repaired {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
