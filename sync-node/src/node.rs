//! The node: its data directory, stores, and the asset index.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::auth::{Auth, AuthError};
use crate::blobs::{BlobError, BlobStore};
use crate::catalog::{Catalog, CatalogError};
use crate::jobs::Jobs;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot open the node database in {path}: {source} (is another sync-node using this data directory?)")]
    Db {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error(transparent)]
    Sled(#[from] sled::Error),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("data directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("randomness unavailable: {0}")]
    Random(String),
    #[error("corrupt index record: {0}")]
    Corrupt(String),
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data: PathBuf,
    /// Directory of the built PWA to serve at `/`.
    pub web: Option<PathBuf>,
    /// Concurrent media jobs (default: available cores).
    pub workers: usize,
    /// An ML node's base URL (`ml-node serve`), used to embed smart-search queries.
    pub ml: Option<String>,
    /// Longest one media job may run: after it the asset is marked with an error and the
    /// queue moves on (one hostile file can never stall it).
    pub job_timeout: std::time::Duration,
    /// Largest original accepted by `POST /api/assets` (bytes).
    pub max_upload: u64,
    /// Uploads received at the same time; more wait for a slot (memory and disk bandwidth).
    pub max_concurrent_uploads: usize,
    /// Memory the media jobs' decodes may take together (MiB); see `jobs::decode_cost_mib`.
    pub decode_memory_mib: u64,
    /// Memory for decoded shard records kept between requests (MiB); see `views`.
    pub view_cache_mib: u64,
    /// Resident memory for loaded month documents (MiB, estimated); see `Catalog::open_lazy`.
    pub catalogue_memory_mib: u64,
    /// `s3://bucket/prefix` for originals ([`crate::objects`]); remembered once used.
    pub object_store: Option<String>,
    /// Local copies of remote originals (MiB).
    pub object_cache_mib: u64,
}

impl NodeConfig {
    pub fn new(data: impl Into<PathBuf>) -> Self {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Self {
            data: data.into(),
            web: None,
            workers,
            ml: None,
            job_timeout: std::time::Duration::from_secs(300),
            max_upload: 64 << 30,
            max_concurrent_uploads: 8,
            decode_memory_mib: 1024,
            view_cache_mib: 16,
            catalogue_memory_mib: 32,
            object_store: None,
            object_cache_mib: 2048,
        }
    }
}

/// The object store for originals: the one given, or the one this data directory already
/// uses (remembered in the database, so that a start without the flag, `fsck` or `import`
/// still find the originals). A newly given store must answer; a remembered one that does not
/// is reported and the node starts anyway (uploads then fail until it is back).
fn object_tier(
    db: &sled::Db,
    given: Option<&str>,
) -> Result<Option<crate::objects::ObjectTier>, NodeError> {
    const KEY: &[u8] = b"object_store_url";
    let known = db
        .get(KEY)?
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    let url = match (given, known.as_deref()) {
        (None, None) => return Ok(None),
        (Some(g), Some(k)) if g.trim_end_matches('/') != k.trim_end_matches('/') => {
            return Err(BlobError::Config(format!(
                "this node's originals are in {k}; it cannot switch to {g} (copy the objects \
                 over and start with --object-store {k}, or move the bucket)"
            ))
            .into())
        }
        (_, Some(k)) => k.to_owned(),
        (Some(g), None) => g.to_owned(),
    };
    let tier = crate::objects::ObjectTier::open(&url)?;
    match tier.check() {
        Ok(()) => tracing::info!(url = %url, "originals go to object storage"),
        Err(e) if known.is_some() => {
            tracing::error!(url = %url, "object storage does not answer (uploads fail until it does): {e}")
        }
        Err(e) => return Err(e.into()),
    }
    if known.is_none() {
        db.insert(KEY, url.as_bytes())?;
        db.flush()?;
    }
    Ok(Some(tier))
}

/// Where an asset lives: its owner and capture month (the shard document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetLocation {
    pub owner: String,
    pub month: String,
    pub sha1: String,
}

pub struct Node {
    pub config: NodeConfig,
    pub db: sled::Db,
    pub blobs: BlobStore,
    pub auth: Auth,
    pub catalog: Catalog,
    pub jobs: Jobs,
    assets: sled::Tree,
    checksums: sled::Tree,
    /// Upload slots (`config.max_concurrent_uploads`).
    pub uploads: tokio::sync::Semaphore,
    /// Storing an original and recording it (read) versus deciding which blobs are unused and
    /// deleting them (write): a re-upload of bytes being purged is either seen as live by the
    /// purge, or stored after the deletion — never acknowledged and then deleted.
    pub purge_guard: std::sync::RwLock<()>,
    /// The iroh side (set once at start by `serve`; absent in tools like `fsck`).
    pub peer: std::sync::OnceLock<Arc<crate::peer::Peer>>,
    /// What each login session acknowledged of Immich's sync stream.
    pub immich_sync: crate::immich_sync::SyncCheckpoints,
    /// Users' webhooks and their persisted delivery queue.
    pub webhooks: crate::webhooks::Webhooks,
    /// The scheduled scrub's configuration and live state ([`crate::scrub`]).
    pub scrub: crate::scrub::Scrub,
    /// Decoded shard records and timeline counts, by shard revision.
    pub views: crate::views::ShardViews,
    /// CPU-bound media work: `config.workers` at once ([`crate::jobs::CpuGate`]).
    pub cpu: crate::jobs::CpuGate,
}

/// Every shard's timeline counts at the heads they were counted at ([`crate::views`]).
const COUNTS_FILE: &str = "timeline-counts.json";
/// Each shard's search index, saved with the heads it was built at (`views::SlimShard`).
const INDEX_DIR: &str = "search-index";
/// Who is in which photo and the text read in it, per ML document, with the heads it was read
/// at ([`crate::views::ShardViews::write_people`]).
const PEOPLE_FILE: &str = "people-index.bin";

impl Node {
    pub fn open(config: NodeConfig) -> Result<Arc<Self>, NodeError> {
        let data = &config.data;
        std::fs::create_dir_all(data).map_err(|source| NodeError::Io {
            path: data.clone(),
            source,
        })?;
        let db_path = data.join("index.sled");
        let db = sled::Config::new()
            .path(&db_path)
            // sled's page cache defaults to 1 GiB; on a 4 GB NAS holding 300k assets the
            // indexes are read in hash order rarely enough that 32 MiB keeps the hot part.
            .cache_capacity(32 << 20)
            .flush_every_ms(Some(500))
            .open()
            .map_err(|source| NodeError::Db {
                path: db_path.clone(),
                source,
            })?;
        let actor = match db.get(b"actor")? {
            Some(a) => a.to_vec(),
            None => {
                let mut a = vec![0u8; 16];
                getrandom::fill(&mut a).map_err(|e| NodeError::Random(e.to_string()))?;
                db.insert(b"actor", a.as_slice())?;
                db.flush()?;
                a
            }
        };
        let mut blobs = BlobStore::open(data, &db)?;
        if let Some(tier) = object_tier(&db, config.object_store.as_deref())? {
            blobs = blobs.with_tier(tier, config.object_cache_mib << 20);
        }
        let auth = Auth::open(&db)?;
        let catalog =
            Catalog::open_lazy(data, &actor, (config.catalogue_memory_mib << 20) as usize)?;
        let jobs = Jobs::open(&db)?;
        let assets = db.open_tree("assets")?;
        let checksums = db.open_tree("checksums")?;
        let immich_sync = crate::immich_sync::SyncCheckpoints::open(&db)?;
        let webhooks = crate::webhooks::Webhooks::open(&db)?;
        let views = crate::views::ShardViews::new((config.view_cache_mib << 20) as usize)
            .with_index_dir(data.join(INDEX_DIR));
        let seeded = views.load_counts(&mut *catalog.lock()?, &data.join(COUNTS_FILE));
        if seeded > 0 {
            tracing::info!(shards = seeded, "timeline counts taken from the last run");
        }
        let parts = views.load_people(&mut *catalog.lock()?, &data.join(PEOPLE_FILE));
        if parts > 0 {
            tracing::info!(
                documents = parts,
                "people index parts taken from the last run"
            );
        }
        let pruned = views.prune_index_files(&*catalog.lock()?);
        if pruned > 0 {
            tracing::info!(
                files = pruned,
                "search indexes of shards no longer held removed"
            );
        }
        Ok(Arc::new(Self {
            cpu: crate::jobs::CpuGate::new(config.workers),
            views,
            immich_sync,
            webhooks,
            purge_guard: std::sync::RwLock::new(()),
            uploads: tokio::sync::Semaphore::new(config.max_concurrent_uploads.max(1)),
            config,
            db,
            blobs,
            auth,
            catalog,
            jobs,
            assets,
            checksums,
            peer: std::sync::OnceLock::new(),
            scrub: Default::default(),
        }))
    }

    pub fn data(&self) -> &Path {
        &self.config.data
    }

    /// Where an asset lives, for every owner that has it (the same bytes uploaded by two
    /// members are two assets, one per library, sharing the blob).
    pub fn locations(&self, asset: &str) -> Result<Vec<AssetLocation>, NodeError> {
        let Some(v) = self.assets.get(asset.as_bytes())? else {
            return Ok(Vec::new());
        };
        // Older nodes stored one location (an object); now a list per owner.
        serde_json::from_slice::<Vec<AssetLocation>>(&v)
            .or_else(|_| serde_json::from_slice::<AssetLocation>(&v).map(|l| vec![l]))
            .map_err(|e| NodeError::Corrupt(e.to_string()))
    }

    /// Where `owner`'s asset lives.
    pub fn location_of(
        &self,
        owner: &str,
        asset: &str,
    ) -> Result<Option<AssetLocation>, NodeError> {
        Ok(self
            .locations(asset)?
            .into_iter()
            .find(|l| l.owner == owner))
    }

    /// Where some owner's copy of an asset lives (for work on the bytes, not on a library).
    pub fn location(&self, asset: &str) -> Result<Option<AssetLocation>, NodeError> {
        Ok(self.locations(asset)?.into_iter().next())
    }

    pub fn set_location(&self, asset: &str, loc: &AssetLocation) -> Result<(), NodeError> {
        let mut all = self.locations(asset)?;
        match all.iter_mut().find(|l| l.owner == loc.owner) {
            Some(l) => *l = loc.clone(),
            None => all.push(loc.clone()),
        }
        let v = serde_json::to_vec(&all).map_err(|e| NodeError::Corrupt(e.to_string()))?;
        self.assets.insert(asset.as_bytes(), v)?;
        self.checksums.insert(
            format!("{}/{}", loc.owner, loc.sha1).as_bytes(),
            asset.as_bytes(),
        )?;
        Ok(())
    }

    /// The asset of `owner` with this SHA-1 (hex), if any.
    pub fn by_sha1(&self, owner: &str, sha1_hex: &str) -> Result<Option<String>, NodeError> {
        Ok(self
            .checksums
            .get(format!("{owner}/{sha1_hex}").as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Held while an original is committed and recorded (see `purge_guard`).
    pub fn storing(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.purge_guard.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Held while unused blobs are chosen and deleted (see `purge_guard`).
    pub fn purging(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.purge_guard.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn flush(&self) -> Result<(), NodeError> {
        self.db.flush()?;
        Ok(())
    }

    /// Brings what the next start reads instead of the catalogue up to date: the catalogue's
    /// heads index, every shard's timeline counts and the search indexes built since the last
    /// save. Cheap when nothing changed (every 30 s while serving, at shutdown and at the end
    /// of `import`). Takes the catalogue's lock: never call it holding the library.
    pub fn save_indexes(&self) -> Result<(), NodeError> {
        self.catalog.save_heads_index()?;
        let path = self.data().join(COUNTS_FILE);
        // Encoded holding the library (heads and counts agree), written without it.
        let body = self.views.encode_counts(&mut *self.catalog.lock()?);
        if let Some(body) = body {
            self.views
                .write_counts(&path, &body)
                .map_err(|source| NodeError::Io { path, source })?;
        }
        let save = self.views.people_to_save(&mut *self.catalog.lock()?);
        if let Some(save) = save {
            let path = self.data().join(PEOPLE_FILE);
            self.views
                .write_people(&path, save)
                .map_err(|source| NodeError::Io { path, source })?;
        }
        // A few shards at a time, so no request waits long for the library.
        loop {
            let files = self.views.encode_slims(&mut *self.catalog.lock()?, 16);
            if files.is_empty() {
                return Ok(());
            }
            self.views
                .write_slims(files)
                .map_err(|source| NodeError::Io {
                    path: self.data().join(INDEX_DIR),
                    source,
                })?;
        }
    }
}
