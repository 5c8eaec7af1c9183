//! Originals on S3-compatible object storage (Garage, MinIO, Ceph, AWS S3, B2) through the
//! `object_store` crate, for when the NAS's disks fill up.
//!
//! With `serve --object-store s3://bucket/prefix`, originals and motion-photo videos (the
//! large kinds) live in the bucket under `<prefix>/<kind>/<h[0..2]>/<blake3 hex>`; thumbnails,
//! previews and ML blobs stay on the node's disk (they are small and read all the time). The
//! node's `blobs/original` directory then becomes a bounded cache of recently used originals
//! (`--object-cache-mib`), see [`crate::blobs::BlobStore`].
//!
//! Credentials and the endpoint come from the standard `AWS_*` environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`); nothing
//! secret is written to the data directory. The bucket's URL is remembered in the node's
//! database, so `fsck` and a later `serve` without the flag still find the originals.
//!
//! The object store's calls are async; the blob store's are blocking (they run on blocking
//! threads). [`ObjectTier`] owns a small runtime of its own and waits for it, so it works from
//! any thread, inside or outside the node's runtime.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::blobs::{BlobError, BlobKind};

/// Objects at least this large go up in parts (S3's parts are ≥ 5 MiB but the last).
pub const MULTIPART_CHUNK: usize = 8 << 20;
/// Parts in flight at once per upload (memory: this × [`MULTIPART_CHUNK`]).
const PARTS_IN_FLIGHT: usize = 2;

pub struct ObjectTier {
    store: Arc<dyn ObjectStore>,
    prefix: Key,
    url: String,
    rt: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for ObjectTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectTier")
            .field("url", &self.url)
            .finish()
    }
}

impl Drop for ObjectTier {
    fn drop(&mut self) {
        // Dropping a runtime from inside another one's async context panics.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn remote_err(url: &str, op: &'static str, key: &Key, e: object_store::Error) -> BlobError {
    BlobError::Remote {
        op,
        key: format!("{url} {key}"),
        not_found: matches!(e, object_store::Error::NotFound { .. }),
        source: Box::new(e),
    }
}

impl ObjectTier {
    /// Opens `s3://bucket[/prefix]` with the `AWS_*` environment variables. Makes no request:
    /// see [`ObjectTier::check`].
    pub fn open(url: &str) -> Result<Self, BlobError> {
        Self::open_with(url, &[])
    }

    /// [`ObjectTier::open`] with `AWS_*` variables given here instead of taken from the
    /// environment (`("AWS_ENDPOINT_URL", …)`): what a process that must not change its
    /// environment (a test among threads) uses.
    pub fn open_with(url: &str, vars: &[(&str, &str)]) -> Result<Self, BlobError> {
        let var = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
                .ok_or(std::env::VarError::NotPresent)
                .or_else(|_| std::env::var(k))
        };
        let bad = |m: String| BlobError::Config(m);
        let parsed = url::Url::parse(url).map_err(|e| bad(format!("{url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "s3" | "s3a") {
            return Err(bad(format!(
                "{url:?}: only S3-compatible stores are supported (s3://bucket/prefix; the \
                 endpoint comes from AWS_ENDPOINT_URL)"
            )));
        }
        let prefix = Key::parse(parsed.path().trim_matches('/'))
            .map_err(|e| bad(format!("{url:?}: bad prefix: {e}")))?;
        let mut b = object_store::aws::AmazonS3Builder::from_env().with_url(url);
        for (k, v) in vars {
            if let Ok(key) = k
                .to_ascii_lowercase()
                .parse::<object_store::aws::AmazonS3ConfigKey>()
            {
                b = b.with_config(key, *v);
            }
        }
        let endpoint = var("AWS_ENDPOINT_URL")
            .or_else(|_| var("AWS_ENDPOINT"))
            .unwrap_or_default();
        if endpoint.starts_with("http://") {
            b = b.with_allow_http(true);
        }
        if var("AWS_REGION").is_err() && var("AWS_DEFAULT_REGION").is_err() {
            b = b.with_region("us-east-1");
        }
        if !endpoint.is_empty() && var("AWS_VIRTUAL_HOSTED_STYLE_REQUEST").is_err() {
            // Self-hosted servers (Garage, MinIO, Ceph) answer path-style requests.
            b = b.with_virtual_hosted_style_request(false);
        }
        let store = b
            .with_retry(object_store::RetryConfig {
                max_retries: 3,
                retry_timeout: std::time::Duration::from_secs(30),
                ..Default::default()
            })
            .build()
            .map_err(|e| bad(format!("{url:?}: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("object-store")
            .enable_all()
            .build()
            .map_err(|e| bad(format!("object store runtime: {e}")))?;
        Ok(Self {
            store: Arc::new(store),
            prefix,
            url: url.to_owned(),
            rt: Some(rt),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `f` on the tier's runtime and waits for it (from any thread).
    fn run<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, BlobError> {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| BlobError::Config("object store is shut down".into()))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(f.await);
        });
        let wait = move || rx.recv();
        let got = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            _ => wait(),
        };
        got.map_err(|_| BlobError::Config("object store task ended".into()))
    }

    pub fn key(&self, kind: BlobKind, hash: &str) -> Key {
        let rel = format!("{}/{}/{hash}", kind.dir(), &hash[..2]);
        if self.prefix.as_ref().is_empty() {
            Key::from(rel)
        } else {
            Key::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// One request that proves the bucket answers and the credentials work.
    pub fn check(&self) -> Result<(), BlobError> {
        let store = self.store.clone();
        let prefix = self.prefix.clone();
        let url = self.url.clone();
        self.run(async move {
            let mut list = store.list(Some(&prefix));
            match list.next().await {
                Some(Err(e)) => Err(remote_err(&url, "list", &prefix, e)),
                _ => Ok(()),
            }
        })?
    }

    /// Uploads the file at `path` under `kind/hash`: one PUT when small, parts of
    /// [`MULTIPART_CHUNK`] otherwise. Returns once the store confirmed the whole object.
    pub fn upload(&self, kind: BlobKind, hash: &str, path: &Path) -> Result<(), BlobError> {
        let key = self.key(kind, hash);
        let size = std::fs::metadata(path)
            .map_err(|source| BlobError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        let store = self.store.clone();
        let url = self.url.clone();
        let path = path.to_path_buf();
        self.run(async move {
            let read_err = |source| BlobError::Io {
                path: path.clone(),
                source,
            };
            let mut file = std::fs::File::open(&path).map_err(read_err)?;
            if size < MULTIPART_CHUNK as u64 {
                let mut bytes = Vec::with_capacity(size as usize);
                file.read_to_end(&mut bytes).map_err(read_err)?;
                store
                    .put(&key, PutPayload::from(bytes))
                    .await
                    .map_err(|e| remote_err(&url, "put", &key, e))?;
                return Ok(());
            }
            let upload = store
                .put_multipart(&key)
                .await
                .map_err(|e| remote_err(&url, "start multipart upload", &key, e))?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, MULTIPART_CHUNK);
            let mut buf = vec![0u8; MULTIPART_CHUNK];
            loop {
                let n = read_full(&mut file, &mut buf).map_err(read_err)?;
                if n == 0 {
                    break;
                }
                if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    let err = remote_err(&url, "upload part", &key, e);
                    let _ = w.abort().await;
                    return Err(err);
                }
                w.write(&buf[..n]);
            }
            w.finish()
                .await
                .map_err(|e| remote_err(&url, "complete multipart upload", &key, e))?;
            Ok(())
        })?
    }

    /// Streams `kind/hash` into `dest` (fsynced) and returns its BLAKE3 and size; the caller
    /// compares the hash with the name before using the bytes.
    pub fn download(
        &self,
        kind: BlobKind,
        hash: &str,
        dest: &Path,
    ) -> Result<(String, u64), BlobError> {
        self.read(kind, hash, Some(dest.to_path_buf()))
    }

    /// Streams `kind/hash` through BLAKE3 without keeping it (fsck).
    pub fn hash(&self, kind: BlobKind, hash: &str) -> Result<(String, u64), BlobError> {
        self.read(kind, hash, None)
    }

    /// GETs `kind/hash`, hashing it and writing it to `dest` when given.
    fn read(
        &self,
        kind: BlobKind,
        hash: &str,
        dest: Option<std::path::PathBuf>,
    ) -> Result<(String, u64), BlobError> {
        let key = self.key(kind, hash);
        let store = self.store.clone();
        let url = self.url.clone();
        self.run(async move {
            let got = store
                .get(&key)
                .await
                .map_err(|e| remote_err(&url, "get", &key, e))?;
            let mut file = match &dest {
                Some(d) => Some(std::fs::File::create(d).map_err(|source| BlobError::Io {
                    path: d.clone(),
                    source,
                })?),
                None => None,
            };
            let write_err = |source| BlobError::Io {
                path: dest.clone().unwrap_or_default(),
                source,
            };
            let mut hasher = blake3::Hasher::new();
            let mut n = 0u64;
            let mut stream = got.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| remote_err(&url, "get", &key, e))?;
                hasher.update(&chunk);
                n += chunk.len() as u64;
                if let Some(f) = file.as_mut() {
                    f.write_all(&chunk).map_err(write_err)?;
                }
            }
            if let Some(f) = file {
                f.sync_all().map_err(write_err)?;
            }
            Ok((hasher.finalize().to_hex().to_string(), n))
        })?
    }

    /// `kind/hash` as a seekable reader that GETs only the ranges read, a window of
    /// [`RANGE_WINDOW`] at a time: what the job queue reads of a large HEIF's `meta` box to
    /// estimate its decode, without downloading the original.
    pub fn ranged(&self, kind: BlobKind, hash: &str) -> Result<RangedObject<'_>, BlobError> {
        let key = self.key(kind, hash);
        let (store, url, k) = (self.store.clone(), self.url.clone(), key.clone());
        let size = self.run(async move {
            match tokio::time::timeout(RANGE_TIMEOUT, store.head(&k)).await {
                Ok(got) => got
                    .map(|m| m.size)
                    .map_err(|e| remote_err(&url, "head", &k, e)),
                Err(_) => Err(BlobError::Config(format!("{url} {k}: no answer to HEAD"))),
            }
        })??;
        Ok(RangedObject {
            tier: self,
            key,
            size,
            pos: 0,
            window: (0, Vec::new()),
            requests: 0,
        })
    }

    /// Bytes `range` of `kind/hash`, streamed: read from the store in parts of
    /// [`STREAM_PART`], one ahead of what the client has taken. This is what the HTTP API sends
    /// for a byte range of an original that is not cached here, so that a video starts
    /// playing, or seeks, without the node first downloading the whole file.
    /// - Memory is bounded: about two parts per response.
    /// - A client that stops reading (a player whose buffer is full) holds no request open:
    ///   each part is one ranged GET, read whole before it is sent on.
    /// - Errors when the first part cannot be read (not found: [`BlobError::is_not_found`]).
    ///   A later failure ends the stream with an error, so the client sees a cut-off
    ///   response, never wrong bytes presented as whole.
    /// - Unlike [`ObjectTier::download`], nothing is hashed: a range cannot be checked against
    ///   its name. Scrub and `fsck --remote-hash` check the objects.
    pub async fn stream_range(
        &self,
        kind: BlobKind,
        hash: &str,
        range: std::ops::Range<u64>,
    ) -> Result<
        impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static,
        BlobError,
    > {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| BlobError::Config("object store is shut down".into()))?;
        let key = self.key(kind, hash);
        let (store, url) = (self.store.clone(), self.url.clone());
        let (start, end) = (range.start, range.end);
        let part = move |at: u64| {
            let (store, url, key) = (store.clone(), url.clone(), key.clone());
            let part = at..end.min(at + STREAM_PART);
            async move {
                match tokio::time::timeout(STREAM_PART_TIMEOUT, store.get_range(&key, part)).await {
                    Ok(got) => got.map_err(|e| remote_err(&url, "get", &key, e)),
                    Err(_) => Err(remote_err(
                        &url,
                        "get",
                        &key,
                        object_store::Error::Generic {
                            store: "S3",
                            source: "no answer to a range GET in time".into(),
                        },
                    )),
                }
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
        let first = rt
            .spawn(part(start))
            .await
            .map_err(|e| BlobError::Config(format!("object store task: {e}")))??;
        rt.spawn(async move {
            let mut at = start + first.len() as u64;
            let mut next = Some(first);
            while let Some(bytes) = next.take() {
                if bytes.is_empty() && at < end {
                    let _ = tx
                        .send(Err(std::io::Error::other("the object ended early")))
                        .await;
                    return;
                }
                // The receiver is gone when the client hung up: stop reading.
                if tx.send(Ok(bytes)).await.is_err() {
                    return;
                }
                if at >= end {
                    return;
                }
                match part(at).await {
                    Ok(b) => {
                        at += b.len() as u64;
                        next = Some(b);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                        return;
                    }
                }
            }
        });
        Ok(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|c| (c, rx))
        }))
    }

    pub fn delete(&self, kind: BlobKind, hash: &str) -> Result<(), BlobError> {
        let key = self.key(kind, hash);
        let store = self.store.clone();
        let url = self.url.clone();
        self.run(async move {
            match store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(remote_err(&url, "delete", &key, e)),
            }
        })?
    }

    /// Moves a corrupt object to `<prefix>/quarantine/<kind>-<hash>` (kept for inspection).
    pub fn quarantine(&self, kind: BlobKind, hash: &str) -> Result<String, BlobError> {
        let key = self.key(kind, hash);
        let name = format!("{}-{hash}", kind.dir());
        let to = if self.prefix.as_ref().is_empty() {
            Key::from(format!("quarantine/{name}"))
        } else {
            Key::from(format!("{}/quarantine/{name}", self.prefix))
        };
        let store = self.store.clone();
        let url = self.url.clone();
        let shown = format!("{} {to}", self.url);
        self.run(async move {
            store
                .rename(&key, &to)
                .await
                .map_err(|e| remote_err(&url, "rename", &key, e))
        })??;
        Ok(shown)
    }

    /// Every blob object in the bucket under the prefix: (kind, hash, size).
    pub fn list(&self, kinds: &[BlobKind]) -> Result<Vec<(BlobKind, String, u64)>, BlobError> {
        let mut out = Vec::new();
        for &kind in kinds {
            let dir = if self.prefix.as_ref().is_empty() {
                Key::from(kind.dir())
            } else {
                Key::from(format!("{}/{}", self.prefix, kind.dir()))
            };
            let store = self.store.clone();
            let url = self.url.clone();
            let found = self.run(async move {
                let mut list = store.list(Some(&dir));
                let mut found = Vec::new();
                while let Some(meta) = list.next().await {
                    let meta = meta.map_err(|e| remote_err(&url, "list", &dir, e))?;
                    if let Some(name) = meta.location.filename() {
                        found.push((name.to_owned(), meta.size));
                    }
                }
                Ok::<_, BlobError>(found)
            })??;
            out.extend(found.into_iter().map(|(h, s)| (kind, h, s)));
        }
        out.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(out)
    }
}

/// Bytes of an original asked for by one GET when a byte range is streamed
/// ([`ObjectTier::stream_range`]).
pub const STREAM_PART: u64 = 2 << 20;
/// How long one part of a streamed range may take (the store's retries included).
const STREAM_PART_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Bytes a [`RangedObject`] asks for at once (a box header's read brings its neighbours).
pub const RANGE_WINDOW: u64 = 64 << 10;
/// How long a [`RangedObject`] waits for one request (retries included): it serves estimates
/// made while the job queue waits, which fall back to a guess rather than stall it.
const RANGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// An object read by ranges ([`ObjectTier::ranged`]).
pub struct RangedObject<'a> {
    tier: &'a ObjectTier,
    key: Key,
    size: u64,
    pos: u64,
    /// The bytes last fetched and where they start.
    window: (u64, Vec<u8>),
    /// Range requests made so far.
    pub requests: u32,
}

impl RangedObject<'_> {
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Read for RangedObject<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() || self.pos >= self.size {
            return Ok(0);
        }
        let (start, bytes) = &self.window;
        // The whole read from the window, or a new window from here: a short read would make a
        // box parser that reads a header once think the file ends.
        let want = (buf.len() as u64).min(self.size - self.pos);
        let in_window = self.pos >= *start && self.pos + want <= start + bytes.len() as u64;
        if !in_window {
            let end = self.size.min(self.pos + RANGE_WINDOW.max(buf.len() as u64));
            let (store, url, key) = (
                self.tier.store.clone(),
                self.tier.url.clone(),
                self.key.clone(),
            );
            let range = self.pos..end;
            let got = self
                .tier
                .run(async move {
                    match tokio::time::timeout(RANGE_TIMEOUT, store.get_range(&key, range)).await {
                        Ok(got) => got.map_err(|e| remote_err(&url, "get", &key, e)),
                        Err(_) => Err(BlobError::Config(format!(
                            "{url} {key}: no answer to a range GET"
                        ))),
                    }
                })
                .and_then(|r| r)
                .map_err(std::io::Error::other)?;
            if got.is_empty() {
                return Ok(0);
            }
            self.requests += 1;
            self.window = (self.pos, got.to_vec());
        }
        let (start, bytes) = &self.window;
        let at = (self.pos - start) as usize;
        let n = buf.len().min(bytes.len() - at);
        buf[..n].copy_from_slice(&bytes[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for RangedObject<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            std::io::SeekFrom::Start(p) => Some(p),
            std::io::SeekFrom::End(d) => self.size.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        Ok(self.pos)
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
