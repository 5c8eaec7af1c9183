//! Bulk upload of a folder tree to a running node over its HTTP API (`sync-node upload DIR
//! --node URL --api-key KEY`): the remote twin of [`crate::import`], speaking only the
//! Immich-compatible endpoints (`/api/assets/bulk-upload-check`, `POST /api/assets` with
//! `sidecarData`), so it works against any Tessera node across the network.
//!
//! Files are hashed (SHA-1, what Immich's check speaks) and checked before they are sent;
//! bodies stream from disk. Finished files are appended to a state file (path, size, mtime,
//! asset id), so a stopped run resumes without hashing them again. One bad file never stops
//! the run: it ends up in the report.

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::import::{Item, Plan, Report};

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("{0}")]
    Http(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Done {
    path: String,
    size: u64,
    mtime_ns: u128,
    asset: String,
}

/// Remembers finished files (one JSON line each, appended and flushed per file).
struct State {
    file: Mutex<std::fs::File>,
    done: HashMap<String, Done>,
}

impl State {
    fn open(path: &Path) -> Result<Self, UploadError> {
        let io = |source| UploadError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut done = HashMap::new();
        if let Ok(f) = std::fs::File::open(path) {
            for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
                // A line cut short by a crash is simply not done.
                if let Ok(d) = serde_json::from_str::<Done>(&line) {
                    done.insert(d.path.clone(), d);
                }
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok(Self {
            file: Mutex::new(file),
            done,
        })
    }

    fn finished(&self, item: &Item) -> Option<String> {
        let d = self.done.get(item.path.to_string_lossy().as_ref())?;
        (d.size == item.size && d.mtime_ns == item.mtime_ns).then(|| d.asset.clone())
    }

    fn record(&self, item: &Item, asset: &str) {
        let d = Done {
            path: item.path.to_string_lossy().into_owned(),
            size: item.size,
            mtime_ns: item.mtime_ns,
            asset: asset.to_owned(),
        };
        if let (Ok(mut f), Ok(line)) = (self.file.lock(), serde_json::to_string(&d)) {
            let _ = writeln!(f, "{line}").and_then(|_| f.sync_data());
        }
    }
}

/// Where the resume state of uploading `dir` to `node` lives by default.
pub fn default_state_file(node: &str, dir: &Path) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let key = blake3::hash(format!("{node}\n{}", canonical.display()).as_bytes()).to_hex();
    base.join("tessera/upload")
        .join(format!("{}.jsonl", &key[..16]))
}

fn sha1_file(path: &Path) -> Result<String, UploadError> {
    let io = |source| UploadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = tessera_media::StreamHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish().sha1)
}

enum One {
    Uploaded,
    Duplicate,
    Resumed,
}

async fn upload_one(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    item: &Item,
    state: &State,
) -> Result<One, UploadError> {
    if state.finished(item).is_some() {
        return Ok(One::Resumed);
    }
    if item.size == 0 {
        return Err(UploadError::Http("empty file (0 bytes)".into()));
    }
    let path = item.path.clone();
    let sha1 = tokio::task::spawn_blocking(move || sha1_file(&path))
        .await
        .map_err(|e| UploadError::Http(e.to_string()))??;
    let name = item
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let http = |e: reqwest::Error| UploadError::Http(e.to_string());
    let check: Value = client
        .post(format!("{base}/api/assets/bulk-upload-check"))
        .header("x-api-key", key)
        .json(&json!({"assets": [{"id": name, "checksum": sha1}]}))
        .send()
        .await
        .map_err(http)?
        .error_for_status()
        .map_err(http)?
        .json()
        .await
        .map_err(http)?;
    let verdict = &check["results"][0];
    if verdict["action"] == "reject" {
        let id = verdict["assetId"].as_str().unwrap_or_default().to_owned();
        state.record(item, &id);
        return Ok(One::Duplicate);
    }
    let mtime = item.modified_rfc3339().unwrap_or_else(crate::now_rfc3339);
    let io = |source| UploadError::Io {
        path: item.path.clone(),
        source,
    };
    let file = tokio::fs::File::open(&item.path).await.map_err(io)?;
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    let mut form = reqwest::multipart::Form::new()
        .part(
            "assetData",
            reqwest::multipart::Part::stream_with_length(body, item.size).file_name(name.clone()),
        )
        .text("deviceAssetId", format!("{name}-{}", item.size))
        .text("deviceId", "tessera-upload")
        .text("fileCreatedAt", mtime.clone())
        .text("fileModifiedAt", mtime)
        .text("isFavorite", "false");
    if let Some(s) = &item.sidecar {
        let bytes = tokio::fs::read(s).await.map_err(|source| UploadError::Io {
            path: s.clone(),
            source,
        })?;
        form = form.part(
            "sidecarData",
            reqwest::multipart::Part::bytes(bytes).file_name("sidecar"),
        );
    }
    let resp = client
        .post(format!("{base}/api/assets"))
        .header("x-api-key", key)
        .multipart(form)
        .send()
        .await
        .map_err(http)?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(UploadError::Http(format!(
            "{status}: {}",
            v["message"].as_str().unwrap_or("upload refused")
        )));
    }
    let id = v["id"].as_str().unwrap_or_default().to_owned();
    state.record(item, &id);
    Ok(if v["status"] == "duplicate" {
        One::Duplicate
    } else {
        One::Uploaded
    })
}

/// Uploads a plan with `parallel` files in flight; `progress(bytes)` after each file.
pub async fn run(
    base: &str,
    key: &str,
    plan: Plan,
    parallel: usize,
    state_file: &Path,
    stop: Arc<AtomicBool>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Report, UploadError> {
    let started = Instant::now();
    let base = base.trim_end_matches('/').to_owned();
    let client = reqwest::Client::builder()
        .build()
        .map_err(|e| UploadError::Http(e.to_string()))?;
    // Fail early and clearly on a wrong URL or key.
    let me = client
        .get(format!("{base}/api/users/me"))
        .header("x-api-key", key)
        .send()
        .await
        .map_err(|e| UploadError::Http(format!("cannot reach {base}: {e}")))?;
    if !me.status().is_success() {
        return Err(UploadError::Http(format!(
            "{base} refused the API key ({})",
            me.status()
        )));
    }
    let state = State::open(state_file)?;
    let total = plan.items.len();
    let mut report = Report {
        files: total,
        unsupported: plan
            .unsupported
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        ..Default::default()
    };
    let results = futures_util::stream::iter(plan.items)
        .take_while(|_| {
            let go = !stop.load(Ordering::Relaxed);
            async move { go }
        })
        .map(|item| {
            let (client, base, state) = (&client, &base, &state);
            async move {
                let r = upload_one(client, base, key, &item, state).await;
                progress(item.size);
                (item, r)
            }
        })
        .buffer_unordered(parallel.max(1))
        .collect::<Vec<_>>()
        .await;
    report.interrupted = results.len() < total;
    for (item, r) in results {
        report.bytes += item.size;
        match r {
            Ok(One::Uploaded) => report.imported += 1,
            Ok(One::Duplicate) => report.duplicates += 1,
            Ok(One::Resumed) => report.resumed += 1,
            Err(e) => report
                .failed
                .push((item.path.display().to_string(), e.to_string())),
        }
    }
    report.failed.sort();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
