//! The docs protocol: a live catalogue sync session per connection, with what each role may
//! read and write, and bounded frame queues.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use iroh::endpoint::{Connection, RecvStream, SendStream};
use iroh::EndpointAddr;
use tessera_core::wire::{self, BlobRef, Frame, Role, Welcome};
use tessera_core::{Access, DocId, PeerSync, SyncEnvelope};
use tokio::sync::mpsc;

use super::*;
use crate::node::{AssetLocation, Node};
use tessera_core::album::AccessView;

impl Peer {
    pub(super) async fn accept_docs(
        self: Arc<Self>,
        conn: Connection,
        observed: Option<SocketAddr>,
    ) -> Result<(), PeerError> {
        // An unpaired key gets a few seconds to say hello, not a connection held open.
        let hello = tokio::time::timeout(Duration::from_secs(10), async {
            let (send, mut recv) = conn.accept_bi().await.map_err(proto)?;
            match read_frame(&mut recv).await? {
                Some(Frame::Hello(h)) => Ok((send, recv, h)),
                other => Err(proto(format!("expected Hello, got {other:?}"))),
            }
        })
        .await
        .map_err(|_| proto("no Hello within 10 s"))?;
        let (mut send, recv, hello) = hello?;
        let remote = conn.remote_id();
        let mut role = self.role_of(&remote).map(|(r, _)| r);
        if role.is_none() {
            if let Some(secret) = &hello.pair_secret {
                let node = self.node.clone();
                let s = secret.clone();
                let ok = tokio::task::spawn_blocking(move || node.auth.take_pairing_secret(&s))
                    .await
                    .map_err(proto)?
                    .map_err(proto)?;
                if ok {
                    self.node
                        .auth
                        .add_node(&remote.to_string(), &hello.name)
                        .map_err(proto)?;
                    tracing::info!(node = %remote, name = %hello.name, "a node joined the household");
                    role = Some(Role::Node);
                } else {
                    tracing::warn!(peer = %remote, "refused a pairing attempt with an unknown or expired ticket");
                }
            }
        }
        let Some(role) = role else {
            let reason = if hello.pair_secret.is_some() {
                "the pairing ticket is unknown, already used or expired: create a new one"
            } else {
                "this key is not paired with the household: sign in on this device, or pair it with a ticket"
            };
            write_frame(
                &mut send,
                &Frame::Denied {
                    reason: reason.into(),
                },
            )
            .await?;
            let _ = send.finish();
            // Give the frame time to leave before the connection goes away.
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
            return Ok(());
        };
        write_frame(
            &mut send,
            &Frame::Welcome(Welcome {
                role: role.clone(),
                name: self.name.clone(),
                // Another node learns what this one holds (and sends the rest whole); a
                // device never sends whole documents.
                holds: if role == Role::Node {
                    self.holds()
                } else {
                    None
                },
            }),
        )
        .await?;
        self.track(&conn);
        // Revoked between the check above and `track`: do not start the session.
        if self.role_of(&remote).is_none() {
            conn.close(4u32.into(), b"this device was unpaired");
            return Ok(());
        }
        tracing::info!(peer = %remote.fmt_short(), name = %hello.name, ?role, "peer connected");
        // Where to fetch blobs from a node that dialled us: the address it advertised, and
        // the one its packets came from.
        let peer_addr = hello
            .addr
            .as_deref()
            .and_then(|a| serde_json::from_str::<EndpointAddr>(a).ok())
            .filter(|a| a.id == remote)
            .unwrap_or_else(|| EndpointAddr::new(remote));
        let peer_addr = match observed {
            Some(o) => Some(peer_addr.with_ip_addr(o)),
            None => Some(peer_addr),
        };
        self.session(conn, send, recv, role, peer_addr, hello.holds)
            .await
    }

    // ---- dialing other nodes -------------------------------------------------------------

    /// Runs a live sync session until the connection ends: both sides push what they have to
    /// say whenever something changes. Between nodes, blob inventories are exchanged too and
    /// what is missing is fetched. `peer_holds`: the documents the peer said it holds in its
    /// handshake; those it lacks go to it whole from the first push on.
    pub(super) async fn session(
        self: Arc<Self>,
        conn: Connection,
        mut send: SendStream,
        recv: RecvStream,
        role: Role,
        peer_addr: Option<EndpointAddr>,
        peer_holds: Option<Vec<String>>,
    ) -> Result<(), PeerError> {
        let node = self.node.clone();
        let mut changes = node.catalog.subscribe();
        let mut blob_events = node.blobs.subscribe();
        // The reader never waits for this loop: if it did, two peers both busy writing big
        // frames would each stop reading and QUIC flow control would block both writers for
        // good. So the queue cannot apply back-pressure; it is bounded instead by the bytes it
        // holds: a peer that gets more than QUEUE_BUDGET ahead of what this node applies is
        // flooding (automerge's sync never re-sends what is in flight), and the session ends
        // with an error (the peer resyncs from its sync state when it reconnects).
        const QUEUE_BUDGET: usize = 256 << 20;
        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (tx, mut rx) = mpsc::unbounded_channel::<Result<Frame, PeerError>>();
        let reader_queued = queued.clone();
        let reader = tokio::spawn(async move {
            let mut recv = recv;
            loop {
                let f = read_frame(&mut recv).await;
                let end = !matches!(f, Ok(Some(_)));
                let item = match f {
                    Ok(Some(f)) => {
                        let w = frame_weight(&f);
                        let now =
                            reader_queued.fetch_add(w, std::sync::atomic::Ordering::AcqRel) + w;
                        if now > QUEUE_BUDGET {
                            let _ = tx.send(Err(proto(format!(
                                "the peer sent more than {} MiB ahead of what this node has applied",
                                QUEUE_BUDGET >> 20
                            ))));
                            return;
                        }
                        Ok(f)
                    }
                    Ok(None) => Err(proto("stream closed")),
                    Err(e) => Err(e),
                };
                if tx.send(item).is_err() || end {
                    return;
                }
            }
        });
        let is_node = role == Role::Node;
        let (fetch_tx, fetch_rx) = mpsc::unbounded_channel::<BlobRef>();
        let fetcher = match (&peer_addr, is_node) {
            (Some(a), true) => Some(tokio::spawn(self.clone().fetcher(a.clone(), fetch_rx))),
            _ => None,
        };
        let mut first = PeerSync::new();
        first.note_holds(peer_holds.as_deref());
        let mut sync = Some(first);
        let result: Result<(), PeerError> = async {
            if is_node {
                let have = self.inventory().await;
                for chunk in have.chunks(wire::MAX_HAVE) {
                    write_frame(&mut send, &Frame::Have(chunk.to_vec())).await?;
                }
            }
            self.push(&mut sync, &role, &mut send).await?;
            loop {
                tokio::select! {
                    f = rx.recv() => {
                        let f = match f {
                            Some(Ok(f)) => f,
                            Some(Err(e)) => return Err(e),
                            None => return Ok(()),
                        };
                        queued.fetch_sub(frame_weight(&f), std::sync::atomic::Ordering::AcqRel);
                        match f {
                            Frame::Sync(env) => {
                                self.receive(&mut sync, &role, env).await?;
                                self.push(&mut sync, &role, &mut send).await?;
                            }
                            Frame::Have(refs) if is_node => {
                                for r in refs {
                                    if fetcher.is_some() && self.wants(&r) {
                                        let _ = fetch_tx.send(r);
                                    }
                                }
                            }
                            other => return Err(proto(format!("unexpected frame {other:?}"))),
                        }
                    }
                    c = changes.changed() => {
                        if c.is_err() { return Ok(()); }
                        self.push(&mut sync, &role, &mut send).await?;
                    }
                    b = blob_events.recv(), if is_node => {
                        match b {
                            Ok(r) => write_frame(&mut send, &Frame::Have(vec![r])).await?,
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                                let have = self.inventory().await;
                                for chunk in have.chunks(wire::MAX_HAVE) {
                                    write_frame(&mut send, &Frame::Have(chunk.to_vec())).await?;
                                }
                            }
                            Err(_) => return Ok(()),
                        }
                    }
                    _ = conn.closed() => return Ok(()),
                }
            }
        }
        .await;
        reader.abort();
        if let Some(f) = fetcher {
            f.abort();
            // What was queued for this session is wanted again by the next one.
            if let Ok(mut f) = self.fetching.lock() {
                f.clear();
            }
        }
        if let Err(e) = &result {
            conn.close(1u32.into(), e.to_string().as_bytes());
        }
        result
    }

    /// The documents a role covers, and what it may do with each: a node everything, a
    /// device what the library's one access decision gives its user ([`AccessView`], taken
    /// from the library before a message changes it).
    pub(super) fn access(role: &Role, view: Option<&AccessView>, id: &DocId) -> Access {
        match (role, view) {
            (Role::Node, _) => Access::Write,
            (Role::Device { .. }, Some(v)) => v.access(id),
            (Role::Device { .. }, None) => Access::None,
        }
    }

    /// The access view of a device's user (`None` for a node).
    pub(super) fn view(role: &Role, lib: &tessera_core::Library) -> Option<AccessView> {
        match role {
            Role::Device { user } => Some(lib.access_view(user)),
            Role::Node => None,
        }
    }

    /// Sends everything the peer is to hear now, in batches of at most
    /// [`crate::catalog::ROUND_BYTES`] of messages, newest months first: the catalogue lock is
    /// taken per batch and a big first sync is never held in memory whole. Ends when a batch
    /// has nothing to say (a document whose message is in flight says nothing until the peer
    /// answers, so this runs at most once per document).
    async fn push(
        &self,
        sync: &mut Option<PeerSync>,
        role: &Role,
        send: &mut SendStream,
    ) -> Result<(), PeerError> {
        loop {
            let frames = self.generate(sync, role).await?;
            if frames.is_empty() {
                return Ok(());
            }
            for f in &frames {
                write_frame(send, f).await?;
            }
        }
    }

    pub(super) async fn generate(
        &self,
        sync: &mut Option<PeerSync>,
        role: &Role,
    ) -> Result<Vec<Frame>, PeerError> {
        let node = self.node.clone();
        let role = role.clone();
        let mut s = sync.take().unwrap_or_default();
        let (s, out) = tokio::task::spawn_blocking(move || {
            let out = node.catalog.lock().map(|mut lib| {
                let view = Self::view(&role, &lib);
                let mut ids: Vec<DocId> = lib
                    .ids()
                    .filter(|d| match view.as_ref() {
                        Some(v) => v.syncs(d, &s),
                        None => Self::access(&role, None, d) != Access::None,
                    })
                    .cloned()
                    .collect();
                ids.sort_by_key(DocId::sync_rank);
                let msgs = s.generate_within(&mut lib, &ids, crate::catalog::ROUND_BYTES);
                let dropped =
                    s.take_dropped(|d| Self::access(&role, view.as_ref(), d) != Access::None);
                (msgs, dropped)
            });
            (s, out)
        })
        .await
        .map_err(proto)?;
        *sync = Some(s);
        let (msgs, dropped) = out.map_err(proto)?;
        let whole = msgs.iter().filter(|m| m.is_snapshot()).count();
        if whole > 0 {
            let bytes: usize = msgs
                .iter()
                .filter(|m| m.is_snapshot())
                .map(|m| m.msg.len())
                .sum();
            tracing::info!(docs = whole, bytes, "sent documents the peer lacks whole");
        }
        let heads = msgs
            .iter()
            .filter(|m| m.kind == tessera_core::MsgKind::Heads)
            .count();
        if heads > 0 {
            tracing::info!(
                docs = heads,
                "sent only the heads of documents not loaded here (a fresh session)"
            );
        }
        let mut frames = split_envelopes(&self.name, msgs).unwrap_or_default();
        if !dropped.is_empty() {
            // A member removed from an album (a partner share stopped) drops it at once.
            frames.push(Frame::Sync(
                SyncEnvelope::new(&self.name, Vec::new()).with_dropped(dropped),
            ));
        }
        Ok(frames)
    }

    pub(super) async fn receive(
        &self,
        sync: &mut Option<PeerSync>,
        role: &Role,
        env: SyncEnvelope,
    ) -> Result<(), PeerError> {
        let node = self.node.clone();
        let role2 = role.clone();
        let mut s = sync.take().unwrap_or_default();
        let (s, res) = tokio::task::spawn_blocking(move || {
            let res = apply(&node, &mut s, &role2, env);
            (s, res)
        })
        .await
        .map_err(proto)?;
        *sync = Some(s);
        let revoked = res?;
        for id in revoked {
            self.disconnect(&id);
        }
        Ok(())
    }

    // ---- blobs ---------------------------------------------------------------------------
}

/// Applies a sync envelope from a peer with `role`, persists, then updates what derives from
/// the documents: the asset index for new records, and (from another node) the accounts.
/// Returns the device keys that were revoked by the change.
fn apply(
    node: &Node,
    sync: &mut PeerSync,
    role: &Role,
    env: SyncEnvelope,
) -> Result<Vec<String>, PeerError> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let household = DocId::household();
    let mut lib = node.catalog.lock().map_err(proto)?;
    let touches_household = env.docs.iter().any(|m| m.doc == household.as_str());
    let read_household = |lib: &tessera_core::Library| -> BTreeMap<String, String> {
        lib.entries(&household, "")
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, f)| Some((k, f.get("v")?.as_str()?.to_owned())))
            .collect()
    };
    let before = if touches_household {
        read_household(&lib)
    } else {
        BTreeMap::new()
    };
    let view = Peer::view(role, &lib);
    let contributor = match role {
        Role::Device { user } => user.clone(),
        Role::Node => String::new(),
    };
    sync.note_holds(env.holds.as_deref());
    let changed = sync
        .receive_checked(
            &mut lib,
            env.docs,
            |d| Peer::access(role, view.as_ref(), d),
            |_, before, after| tessera_core::album::check_contribution(&contributor, before, after),
        )
        .map_err(proto)?;
    let mut revoked = Vec::new();
    if *role == Role::Node && changed.contains(&household) {
        // Accounts first, then the document: after a crash in between, the peer sends the
        // change again; the reverse order could let a restart mirror stale accounts back.
        let after = read_household(&lib);
        let mut ops = Vec::new();
        for (k, v) in &after {
            if before.get(k) != Some(v) {
                if let Ok(bytes) = b64.decode(v) {
                    ops.push((k.clone(), Some(bytes)));
                }
            }
        }
        for k in before.keys() {
            if !after.contains_key(k) {
                if let Some(hex) = k.strip_prefix("devices/") {
                    if let Some(id) = unhex_str(hex) {
                        revoked.push(id);
                    }
                }
                ops.push((k.clone(), None));
            }
        }
        node.auth.import(&ops).map_err(proto)?;
    }
    if *role == Role::Node {
        // New records from another node: index where they live (downloads, dedupe), durably,
        // before the documents are persisted. A crash in between leaves an index entry whose
        // record is not there yet (harmless: the peer sends the change again); the reverse
        // order would leave a persisted record the index never learns about.
        // Only keys not indexed yet are read in full: a busy shard changes often.
        for id in &changed {
            let Some(month) = id.month() else { continue };
            let keys: Vec<String> = match lib.doc(id) {
                Some(doc) => automerge::ReadDoc::keys(doc, automerge::ROOT).collect(),
                None => continue,
            };
            for key in keys {
                if node.location_of(id.user(), &key).map_err(proto)?.is_some() {
                    continue;
                }
                let Some(rec) = lib.asset_in(id, &key).map_err(proto)? else {
                    continue;
                };
                {
                    node.set_location(
                        &rec.id,
                        &AssetLocation {
                            owner: id.user().to_owned(),
                            month: month.to_owned(),
                            sha1: rec.sha1.clone().unwrap_or_default(),
                        },
                    )
                    .map_err(proto)?;
                }
            }
        }
        node.flush().map_err(proto)?;
    }
    node.catalog.persist(&mut lib).map_err(proto)?;
    Ok(revoked)
}

/// Roughly the memory a queued frame holds (for the session's queue budget).
fn frame_weight(f: &Frame) -> usize {
    match f {
        Frame::Sync(env) => {
            env.docs
                .iter()
                .map(|d| d.msg.len() + d.doc.len() + 32)
                .sum::<usize>()
                + 64
        }
        Frame::Have(refs) => refs.len() * 64 + 64,
        _ => 256,
    }
}

/// Splits sync messages into frames below the receiver's limits (documents per envelope and
/// frame size): a first sync of a big household must not be one oversized frame.
fn split_envelopes(name: &str, msgs: Vec<tessera_core::DocMessage>) -> Option<Vec<Frame>> {
    if msgs.is_empty() {
        return None;
    }
    let budget = wire::MAX_FRAME / 2;
    let mut frames = Vec::new();
    let mut cur = Vec::new();
    let mut size = 0usize;
    for m in msgs {
        let n = m.msg.len() + m.doc.len() + 16;
        if !cur.is_empty()
            && (cur.len() >= tessera_core::sync::MAX_DOCS_PER_ENVELOPE || size + n > budget)
        {
            frames.push(Frame::Sync(SyncEnvelope::new(
                name,
                std::mem::take(&mut cur),
            )));
            size = 0;
        }
        size += n;
        cur.push(m);
    }
    frames.push(Frame::Sync(SyncEnvelope::new(name, cur)));
    Some(frames)
}
