//! `sync-node`: serve a data directory, or check it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
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
        /// The built PWA (trunk's dist/). Defaults to ./dist when it exists, else to `web/` next
        /// to the `bin/` holding this binary (the layout of `cargo xtask dist`'s archives).
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
        /// Seconds between housekeeping passes (purging trash older than the library's
        /// `trashDays`, deleting copies of assets purged on another node).
        #[arg(long, default_value_t = 3600)]
        purge_every: u64,
        /// The scrub re-reads every blob and checks its hash at this rate (MB/s; 0 turns the
        /// schedule off, leaving passes started from the admin page).
        #[arg(long, default_value_t = 16.0)]
        scrub_rate_mb: f64,
        /// Days from the start of one scrub pass to the start of the next.
        #[arg(long, default_value_t = 30.0)]
        scrub_every_days: f64,
        /// Longest one media job (thumbnail, preview, poster frame) may take, in seconds.
        #[arg(long, default_value_t = 300)]
        job_timeout: u64,
        /// Largest original an upload may send, in MiB.
        #[arg(long, default_value_t = 65536)]
        max_upload_mib: u64,
        /// Uploads received at the same time (more wait their turn).
        #[arg(long, default_value_t = 8)]
        max_concurrent_uploads: usize,
        /// Memory the media jobs' decodes may take together, in MiB: each job is admitted
        /// with its estimate (a 200-MP HEIC ≈ 1 GB runs alone, 12-MP JPEGs side by side).
        #[arg(long, default_value_t = 1024)]
        decode_memory_mib: u64,
        /// Memory for catalogue records kept decoded between requests, in MiB (search, map and
        /// timeline views re-read only the months that changed).
        #[arg(long, default_value_t = 16)]
        view_cache_mib: u64,
        /// Resident memory for loaded month documents, in MiB (estimated): the least recently
        /// used are unloaded and read again from disk when needed.
        #[arg(long, default_value_t = 32)]
        catalogue_memory_mib: u64,
        /// First webhook retry delay in milliseconds (doubling per attempt, at most an hour).
        #[arg(long, default_value_t = 5000)]
        webhook_retry_ms: u64,
        /// Keep originals and motion videos on S3-compatible object storage
        /// (`s3://bucket/prefix`; Garage, MinIO, Ceph, AWS S3, B2). Credentials and endpoint
        /// from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL. Once
        /// set, the node remembers it; originals already on disk are moved there.
        #[arg(long, env = "TESSERA_OBJECT_STORE")]
        object_store: Option<String>,
        /// Local copies of originals kept from the object store, in MiB (least recently used
        /// evicted).
        #[arg(long, default_value_t = 2048)]
        object_cache_mib: u64,
    },
    /// Import a folder tree (a camera roll, a Takeout export, an old library) into a data
    /// directory while the node is stopped: all cores, progress, resumable, with a report.
    Import {
        /// The folder to import.
        dir: PathBuf,
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        /// Whose library (email); default: the admin.
        #[arg(long)]
        user: Option<String>,
        /// Also put every imported file in this album.
        #[arg(long)]
        album: Option<String>,
        /// Parallel files (default: number of cores).
        #[arg(long)]
        workers: Option<usize>,
        /// Write the report as JSON to this file as well.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Upload a folder tree to a running node (this machine or another) over its HTTP API:
    /// skips what the node already has, resumable, with progress and a report.
    Upload {
        /// The folder to upload.
        dir: PathBuf,
        /// The node's URL, e.g. http://nas:2283
        #[arg(long, env = "TESSERA_NODE")]
        node: String,
        /// An API key of the account to upload into (Account settings → API keys, or
        /// `POST /api/api-keys`).
        #[arg(long, env = "TESSERA_API_KEY")]
        api_key: String,
        /// Files in flight at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Where finished files are remembered (default: under ~/.local/state/tessera).
        #[arg(long)]
        state: Option<PathBuf>,
        /// Write the report as JSON to this file as well.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Verify every blob's hash and the index; with --repair, quarantine corrupt blobs and
    /// rebuild the index from the files.
    Fsck {
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        #[arg(long)]
        repair: bool,
        /// With object storage: read and hash every object (a full download) instead of
        /// comparing the bucket's listing with the index.
        #[arg(long)]
        remote_hash: bool,
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

async fn import(
    dir: PathBuf,
    data: PathBuf,
    user: Option<String>,
    album: Option<String>,
    workers: Option<usize>,
    report_file: Option<PathBuf>,
) -> Result<()> {
    use std::sync::atomic::AtomicBool;
    if !dir.is_dir() {
        bail!("{} is not a folder", dir.display());
    }
    let mut config = NodeConfig::new(&data);
    if let Some(w) = workers {
        config.workers = w.max(1);
    }
    let workers = config.workers;
    let node = Node::open(config).with_context(|| {
        format!(
            "opening data directory {} (is `sync-node serve` running on it? Stop it first: \
             import writes to the data directory directly)",
            data.display()
        )
    })?;
    let owner = match &user {
        Some(email) => node
            .auth
            .user_by_email(email)?
            .with_context(|| format!("no user {email} in this library"))?,
        None => node.auth.admin()?.context(
            "this library has no account yet: start `sync-node serve`, create the admin in the \
             PWA, stop it, then import",
        )?,
    };
    eprintln!("Scanning {} …", dir.display());
    let plan = tessera_sync_node::import::plan(&dir)?;
    let (files, bytes) = (plan.items.len() as u64, plan.bytes);
    eprintln!(
        "{files} photos and videos ({:.1} MB), {} other files; importing into {}'s library with {workers} workers",
        bytes as f64 / 1e6,
        plan.unsupported.len(),
        owner.email
    );
    let bar = progress_bar(files);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    stop_on_ctrl_c(&stop, "in progress");
    let started = std::time::Instant::now();
    let (n, b, s) = (node.clone(), bar.clone(), stop.clone());
    let report = tokio::task::spawn_blocking(move || {
        tessera_sync_node::import::run(
            &n,
            &owner.id,
            plan,
            album.as_deref(),
            &s,
            &|_, bytes_done| {
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                b.set_message(format!("{:.1} MB/s", bytes_done as f64 / 1e6 / secs));
                b.inc(1);
            },
        )
    })
    .await
    .context("import crashed")??;
    bar.finish_and_clear();
    node.flush()?;
    print_report(&report, "Imported");
    if let Some(f) = report_file {
        std::fs::write(&f, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", f.display()))?;
    }
    if report.interrupted {
        bail!("interrupted: run the same command again to import the rest");
    }
    Ok(())
}

/// Ctrl-C sets `stop`: bulk commands finish the files they are on and report.
/// Ctrl-C, or SIGTERM where there are signals (what systemd and `docker stop` send).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn stop_on_ctrl_c(stop: &std::sync::Arc<std::sync::atomic::AtomicBool>, which: &'static str) {
    let stop = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "\nStopping after the files {which} (run the same command again to resume) …"
            );
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
}

fn progress_bar(files: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(files);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} files · {per_sec} · {msg} · ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

fn print_report(report: &tessera_sync_node::import::Report, verb: &str) {
    eprintln!(
        "{verb} {} new, {} already in the library, {} done by an earlier run, {} failed, in {:.1} s ({:.1} files/s, {:.1} MB/s){}",
        report.imported,
        report.duplicates,
        report.resumed,
        report.failed.len(),
        report.seconds,
        report.files as f64 / report.seconds.max(1e-3),
        report.bytes as f64 / 1e6 / report.seconds.max(1e-3),
        report.album.as_ref().map(|a| format!("; album \"{a}\"")).unwrap_or_default(),
    );
    for (p, why) in &report.failed {
        eprintln!("  failed: {p}: {why}");
    }
    for (p, why) in &report.no_preview {
        eprintln!("  stored without preview: {p}: {why}");
    }
    for p in &report.unsupported {
        eprintln!("  not imported (not a photo or video): {p}");
    }
}

async fn upload(
    dir: PathBuf,
    node: String,
    api_key: String,
    parallel: usize,
    state: Option<PathBuf>,
    report_file: Option<PathBuf>,
) -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    if !dir.is_dir() {
        bail!("{} is not a folder", dir.display());
    }
    let state = state.unwrap_or_else(|| tessera_sync_node::upload::default_state_file(&node, &dir));
    eprintln!("Scanning {} …", dir.display());
    let plan = tessera_sync_node::import::plan(&dir)?;
    eprintln!(
        "{} photos and videos ({:.1} MB), {} other files; uploading to {node} ({parallel} at a time)",
        plan.items.len(),
        plan.bytes as f64 / 1e6,
        plan.unsupported.len()
    );
    let bar = progress_bar(plan.items.len() as u64);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    stop_on_ctrl_c(&stop, "in flight");
    let started = std::time::Instant::now();
    let sent = std::sync::atomic::AtomicU64::new(0);
    let b = bar.clone();
    let report =
        tessera_sync_node::upload::run(&node, &api_key, plan, parallel, &state, stop, &|bytes| {
            let total = sent.fetch_add(bytes, Ordering::Relaxed) + bytes;
            b.set_message(format!(
                "{:.1} MB/s",
                total as f64 / 1e6 / started.elapsed().as_secs_f64().max(1e-3)
            ));
            b.inc(1);
        })
        .await?;
    bar.finish_and_clear();
    print_report(&report, "Uploaded");
    if let Some(f) = report_file {
        std::fs::write(&f, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", f.display()))?;
    }
    if report.interrupted {
        bail!("interrupted: run the same command again to upload the rest");
    }
    Ok(())
}

fn main() -> Result<()> {
    // Before any thread allocates: see `limit_malloc_arenas`.
    tessera_sync_node::views::limit_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run())
}

async fn run() -> Result<()> {
    let cli = Cli::parse();
    // Bulk commands draw a progress bar and print a report: only warnings in between.
    let quiet = matches!(cli.cmd, Cmd::Import { .. } | Cmd::Upload { .. });
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                if quiet {
                    "warn".into()
                } else {
                    "info,tower_http=warn".into()
                }
            }),
        )
        // Plain text in a service's journal or a log file; colours on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    match cli.cmd {
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
            purge_every,
            scrub_rate_mb,
            scrub_every_days,
            job_timeout,
            max_upload_mib,
            max_concurrent_uploads,
            decode_memory_mib,
            view_cache_mib,
            catalogue_memory_mib,
            webhook_retry_ms,
            object_store,
            object_cache_mib,
        } => {
            let mut cfg = NodeConfig::new(&data);
            cfg.ml = ml;
            cfg.job_timeout = std::time::Duration::from_secs(job_timeout.max(1));
            cfg.max_upload = max_upload_mib.max(1).saturating_mul(1 << 20);
            cfg.max_concurrent_uploads = max_concurrent_uploads.max(1);
            cfg.decode_memory_mib = decode_memory_mib.max(64);
            cfg.view_cache_mib = view_cache_mib;
            cfg.catalogue_memory_mib = catalogue_memory_mib;
            cfg.object_store = object_store;
            cfg.object_cache_mib = object_cache_mib;
            cfg.web = web.or_else(|| {
                let packaged = std::env::current_exe()
                    .ok()
                    .and_then(|e| Some(e.parent()?.parent()?.join("web")));
                [Some(PathBuf::from("dist")), packaged]
                    .into_iter()
                    .flatten()
                    .find(|d| d.join("index.html").exists())
            });
            if let Some(w) = workers {
                cfg.workers = w.max(1);
            }
            let node = Node::open(cfg)
                .with_context(|| format!("opening data directory {}", data.display()))?;
            node.webhooks.backoff.store(
                webhook_retry_ms.max(1),
                std::sync::atomic::Ordering::Relaxed,
            );
            if node.blobs.tier().is_some() {
                // Originals stored on disk before object storage was configured move there in
                // the background, each acknowledged by the store before it counts as moved.
                let n = node.clone();
                tokio::task::spawn_blocking(move || {
                    match n.blobs.move_to_tier(|| false) {
                    Ok(0) => {}
                    Ok(moved) => {
                        tracing::info!(moved, "originals moved from this disk to object storage")
                    }
                    Err(e) => tracing::error!(
                        "moving originals to object storage stopped (retried at the next start): {e}"
                    ),
                }
                });
            }
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
            tokio::spawn(tessera_sync_node::webhooks::run(node.clone()));
            if !(scrub_rate_mb >= 0.0 && scrub_every_days > 0.0) {
                anyhow::bail!("--scrub-rate-mb must be ≥ 0 and --scrub-every-days > 0");
            }
            node.scrub.configure(tessera_sync_node::scrub::ScrubConfig {
                rate: (scrub_rate_mb * 1e6) as u64,
                every: std::time::Duration::from_secs_f64(scrub_every_days * 86_400.0),
            });
            tokio::spawn(tessera_sync_node::scrub::run(node.clone()));
            tokio::spawn(tessera_sync_node::views::trim_memory_every(
                std::time::Duration::from_secs(20),
                node.clone(),
            ));
            tokio::spawn(tessera_sync_node::housekeeping::run(
                node.clone(),
                std::time::Duration::from_secs(purge_every.max(1)),
            ));
            {
                // A catalogue write that failed (full disk, read-only file) is retried until it
                // lands; nothing acknowledged is forgotten.
                // Every 30 s the heads index and the timeline counts catch up with the
                // documents written, so a restart decodes only what changed in the last half
                // minute, and Immich's timeline answers at once.
                let node = node.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
                    for round in 0u64.. {
                        tick.tick().await;
                        let n = node.clone();
                        let res =
                            tokio::task::spawn_blocking(move || n.catalog.retry_failed()).await;
                        if let Ok(Err(e)) = res {
                            tracing::warn!(error = %e, "catalogue write still failing");
                        }
                        if round % 6 == 5 {
                            let n = node.clone();
                            let res = tokio::task::spawn_blocking(move || n.save_indexes()).await;
                            if let Ok(Err(e)) = res {
                                tracing::warn!(error = %e, "cannot write the start-up indexes");
                            }
                        }
                    }
                });
            }
            // Ctrl-C or SIGTERM (a service manager's stop): requests in flight get up to
            // 10 s (a browser's live sync stream would otherwise hold the stop forever), then
            // the indexes are written and the node exits.
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                stop_signal().await;
                tracing::info!("stopping: finishing requests in flight (at most 10 s)");
                let _ = stop_tx.send(true);
            });
            let mut graceful = stop_rx.clone();
            let serve = axum::serve(
                listener,
                tessera_sync_node::http::router(node.clone())
                    .into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = graceful.wait_for(|stop| *stop).await;
            });
            let mut stopping = stop_rx;
            tokio::select! {
                served = std::future::IntoFuture::into_future(serve) => served.context("serving HTTP")?,
                _ = async {
                    let _ = stopping.wait_for(|stop| *stop).await;
                    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                } => tracing::warn!("requests still open after 10 s; stopping anyway"),
            }
            peer.shutdown().await;
            node.flush().context("flushing the index")?;
            if let Err(e) = node.save_indexes() {
                // Nothing is lost: the next start checks the files the index does not vouch for.
                tracing::warn!(error = %e, "cannot write the catalogue's start-up indexes");
            }
            Ok(())
        }
        Cmd::Import {
            dir,
            data,
            user,
            album,
            workers,
            report,
        } => import(dir, data, user, album, workers, report).await,
        Cmd::Upload {
            dir,
            node,
            api_key,
            parallel,
            state,
            report,
        } => upload(dir, node, api_key, parallel, state, report).await,
        Cmd::Fsck {
            data,
            repair,
            remote_hash,
            json,
        } => {
            let node = Node::open(NodeConfig::new(&data))
                .with_context(|| format!("opening data directory {}", data.display()))?;
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} verifying blobs {pos}/{len} [{bar:40}] {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let report = blobs::fsck(&node.blobs, repair, remote_hash, |i, n| {
                bar.set_length(n);
                bar.set_position(i);
            })
            .context("fsck")?;
            bar.finish_and_clear();
            let mut report = report;
            // The catalogue against the (repaired) blobs: index entries and media jobs are
            // rebuilt from the documents and files.
            let cat = tessera_sync_node::housekeeping::check_catalogue(&node, repair)
                .context("checking the catalogue")?;
            let cat_repaired = repair && cat.repaired > 0;
            report.catalogue = Some(cat);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{} blobs, {} bytes verified", report.files, report.bytes);
                if let Some(r) = &report.remote {
                    println!(
                        "{} objects, {} bytes in {} ({})",
                        r.objects,
                        r.bytes,
                        r.url,
                        if r.hashed {
                            "each read and hashed"
                        } else {
                            "sizes checked; --remote-hash reads them"
                        }
                    );
                }
                for c in &report.corrupt {
                    println!("CORRUPT (hash does not match name): {c}");
                }
                for h in &report.missing_from_index {
                    println!("not indexed (harmless; --repair indexes it): {h}");
                }
                for h in &report.index_without_file {
                    println!("indexed but missing on disk: {h}");
                }
                if let Some(c) = &report.catalogue {
                    println!("{} asset records checked", c.records);
                    for a in &c.missing_original {
                        println!("MISSING ORIGINAL (record without its file): {a}");
                    }
                    for a in &c.unindexed {
                        println!("not in the location index (--repair re-indexes it): {a}");
                    }
                    for a in &c.needs_job {
                        println!(
                            "derivatives missing or never made (--repair queues its job): {a}"
                        );
                    }
                    if cat_repaired {
                        println!(
                            "repaired: {} index entries and media jobs rebuilt from the documents",
                            c.repaired
                        );
                    }
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
