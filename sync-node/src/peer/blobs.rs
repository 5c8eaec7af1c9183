//! Blob replication between nodes: inventories, what this node wants, fetching (hashed while
//! written, kept only on a match) and serving.

use std::sync::Arc;

use iroh::endpoint::Connection;
use iroh::EndpointAddr;
use tessera_core::wire::{self, BlobRef, BlobRequest, BlobResponse, Role, ALPN_BLOBS};
use tokio::sync::mpsc;

use super::*;
use crate::blobs::BlobKind;

impl Peer {
    /// Every stored blob, by kind: the files (and with object storage the remote blobs), not
    /// the sled index alone: the index is keyed by hash, and one hash can be stored under two
    /// kinds (a small photo's thumbnail and preview can be the same bytes).
    pub(super) async fn inventory(&self) -> Vec<BlobRef> {
        let blobs = self.node.blobs.clone();
        tokio::task::spawn_blocking(move || {
            blobs
                .inventory()
                .into_iter()
                .filter_map(|(kind, h, size)| {
                    Some(BlobRef {
                        kind: kind.dir().to_owned(),
                        hash: wire::parse_hash(&h)?,
                        size,
                    })
                })
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    pub(super) fn wants(&self, r: &BlobRef) -> bool {
        let Some(kind) = BlobKind::from_dir(&r.kind) else {
            return false;
        };
        let hex = wire::hash_hex(&r.hash);
        if self.node.blobs.exists(kind, &hex) {
            return false;
        }
        if self.node.blobs.is_deleted(&hex) && !self.revived(&hex) {
            return false;
        }
        self.fetching
            .lock()
            .map(|mut f| f.insert((kind, r.hash)))
            .unwrap_or(false)
    }

    /// Whether a tombstoned original is live again (uploaded anew after a purge, on any node):
    /// then its tombstone and those of its derivatives are cleared so replication brings them.
    pub(super) fn revived(&self, hex: &str) -> bool {
        let live = self
            .node
            .locations(hex)
            .unwrap_or_default()
            .into_iter()
            .find_map(|loc| {
                let shard = tessera_core::DocId::shard(&loc.owner, &loc.month).ok()?;
                let lib = self.node.catalog.lock().ok()?;
                lib.asset_in(&shard, hex)
                    .ok()
                    .flatten()
                    .filter(|r| !r.is_purged())
            });
        let Some(rec) = live else {
            return false;
        };
        for h in [Some(rec.id.clone()), rec.thumb, rec.preview, rec.motion]
            .into_iter()
            .flatten()
        {
            if let Err(e) = self.node.blobs.undelete(&h) {
                tracing::warn!(hash = %h, "cannot clear a tombstone: {e}");
            }
        }
        tracing::info!(asset = %hex, "uploaded again after a purge: replicating it again");
        true
    }

    /// Fetches wanted blobs from a node over [`ALPN_BLOBS`], four at a time.
    pub(super) async fn fetcher(
        self: Arc<Self>,
        addr: EndpointAddr,
        mut rx: mpsc::UnboundedReceiver<BlobRef>,
    ) {
        let sem = Arc::new(tokio::sync::Semaphore::new(4));
        let mut conn: Option<Connection> = None;
        while let Some(r) = rx.recv().await {
            let c = match &conn {
                Some(c) if c.close_reason().is_none() => c.clone(),
                _ => match self.endpoint.connect(addr.clone(), ALPN_BLOBS).await {
                    Ok(c) => {
                        conn = Some(c.clone());
                        c
                    }
                    Err(e) => {
                        tracing::warn!("cannot open a blob connection: {e}");
                        self.done_fetching(&r);
                        continue;
                    }
                },
            };
            let Ok(permit) = sem.clone().acquire_owned().await else {
                return;
            };
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.fetch_one(&c, &r).await {
                    tracing::warn!(blob = %wire::hash_hex(&r.hash), kind = %r.kind, "blob not replicated: {e}");
                }
                me.done_fetching(&r);
                drop(permit);
            });
        }
    }

    pub(super) fn done_fetching(&self, r: &BlobRef) {
        if let (Ok(mut f), Some(kind)) = (self.fetching.lock(), BlobKind::from_dir(&r.kind)) {
            f.remove(&(kind, r.hash));
        }
    }

    pub(super) async fn fetch_one(&self, conn: &Connection, r: &BlobRef) -> Result<(), PeerError> {
        let kind = BlobKind::from_dir(&r.kind).ok_or_else(|| proto("unknown blob kind"))?;
        let want = wire::hash_hex(&r.hash);
        let (mut send, mut recv) = conn.open_bi().await.map_err(proto)?;
        write_frame(
            &mut send,
            &BlobRequest {
                kind: r.kind.clone(),
                hash: r.hash,
                offset: 0,
            },
        )
        .await?;
        let _ = send.finish();
        let resp: BlobResponse = read_msg(&mut recv).await?;
        let size = match resp {
            BlobResponse::Found { size } => size,
            BlobResponse::NotFound => return Err(proto("the other node no longer has it")),
            BlobResponse::Denied { reason } => return Err(proto(reason)),
        };
        let blobs = self.node.blobs.clone();
        let mut pending = blobs.begin().map_err(proto)?;
        let mut got = 0u64;
        let mut buf = vec![0u8; 256 << 10];
        let res: Result<(), PeerError> = async {
            while got < size {
                let n =
                    recv.read(&mut buf).await.map_err(proto)?.ok_or_else(|| {
                        proto(format!("stream ended after {got} of {size} bytes"))
                    })?;
                got += n as u64;
                if got > size {
                    return Err(proto("more bytes than announced"));
                }
                pending.write(&buf[..n]).map_err(proto)?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = res {
            pending.abort();
            return Err(e);
        }
        let (hashes, _) = tokio::task::spawn_blocking(move || {
            // Verify before committing: a blob whose bytes do not match its name is dropped.
            let actual = pending.blake3_so_far();
            if actual != want {
                pending.abort();
                return Err(proto(format!(
                    "hash mismatch: announced {want}, received {actual}; not stored"
                )));
            }
            blobs.commit(kind, pending).map_err(proto)
        })
        .await
        .map_err(proto)??;
        tracing::debug!(blob = %hashes.blake3, bytes = size, "replicated");
        Ok(())
    }

    /// Answers blob requests of another node (each on its own stream).
    pub(super) async fn serve_blobs(self: Arc<Self>, conn: Connection) -> Result<(), PeerError> {
        let remote = conn.remote_id();
        if !matches!(self.role_of(&remote), Some((Role::Node, _))) {
            conn.close(4u32.into(), b"not a node of this household");
            return Ok(());
        }
        self.track(&conn);
        loop {
            let (mut send, mut recv) = match conn.accept_bi().await {
                Ok(s) => s,
                Err(_) => return Ok(()),
            };
            let me = self.clone();
            tokio::spawn(async move {
                let res: Result<(), PeerError> = async {
                    let req: BlobRequest = read_msg(&mut recv).await?;
                    // Checked per request: an unpaired node stops getting blobs at once.
                    if !matches!(me.role_of(&remote), Some((Role::Node, _))) {
                        write_frame(
                            &mut send,
                            &BlobResponse::Denied {
                                reason: "not a node of this household".into(),
                            },
                        )
                        .await?;
                        return Ok(());
                    }
                    // An original in object storage is fetched to the cache first; its open
                    // file stays readable whatever the cache does next.
                    let blob = match BlobKind::from_dir(&req.kind) {
                        Some(k) => me
                            .node
                            .blobs
                            .local_async(k, &wire::hash_hex(&req.hash))
                            .await
                            .ok(),
                        None => None,
                    };
                    let file = match &blob {
                        Some(b) => tokio::fs::File::open(b.path()).await.ok(),
                        None => None,
                    };
                    drop(blob);
                    let Some(mut file) = file else {
                        write_frame(&mut send, &BlobResponse::NotFound).await?;
                        return Ok(());
                    };
                    let size = file.metadata().await.map_err(proto)?.len();
                    write_frame(&mut send, &BlobResponse::Found { size }).await?;
                    use tokio::io::{AsyncReadExt, AsyncSeekExt};
                    let offset = req.offset.min(size);
                    file.seek(std::io::SeekFrom::Start(offset))
                        .await
                        .map_err(proto)?;
                    let mut buf = vec![0u8; 256 << 10];
                    loop {
                        let n = file.read(&mut buf).await.map_err(proto)?;
                        if n == 0 {
                            break;
                        }
                        send.write_all(&buf[..n]).await.map_err(proto)?;
                    }
                    let _ = send.finish();
                    let _ = send.stopped().await;
                    Ok(())
                }
                .await;
                if let Err(e) = res {
                    tracing::debug!("blob request failed: {e}");
                }
            });
        }
    }

    // ---- household accounts ----------------------------------------------------------------
}
