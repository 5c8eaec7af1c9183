//! The node as an iroh peer: its endpoint, the embedded relay for browsers, live catalogue sync
//! with devices and other nodes, blob replication between nodes, and pairing tickets.
//!
//! Every exchange is driven by `tessera-core`'s sans-IO pieces ([`tessera_core::wire`] frames,
//! [`PeerSync`] sessions); this module only moves bytes and decides who may see what:
//! - the remote's key comes from the QUIC handshake; it must be paired ([`Auth::device`]):
//!   a user's device gets that user's documents, a node gets everything (and the household
//!   document with accounts); an unknown key gets [`Frame::Denied`] and nothing else;
//! - revoking a key closes its live connections at once;
//! - blobs fetched from another node are hashed while written and kept only if the BLAKE3 hash
//!   matches the name (then fsynced like an upload).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iroh::endpoint::{presets, Connection, RecvStream, SendStream};
use iroh::{Endpoint, EndpointAddr, EndpointId, RelayMode, RelayUrl, SecretKey};
use serde::{Deserialize, Serialize};
use tessera_core::wire::{
    self, BlobRef, BlobRequest, BlobResponse, Frame, Hello, Role, Welcome, ALPN_BLOBS, ALPN_DOCS,
    WIRE_VERSION,
};
use tessera_core::{Access, DocId, PeerSync, SyncEnvelope};
use tokio::sync::mpsc;

use crate::auth::Device;
use crate::blobs::BlobKind;
use crate::node::{AssetLocation, Node};

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("iroh endpoint: {0}")]
    Bind(String),
    #[error("embedded relay on {addr}: {reason}")]
    Relay { addr: SocketAddr, reason: String },
    #[error("node key file {path}: {source}")]
    Key {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid pairing ticket: {0}")]
    Ticket(String),
    #[error("connecting to {peer}: {reason}")]
    Connect { peer: String, reason: String },
    #[error("the other node refused to pair: {0}")]
    Refused(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error(transparent)]
    Wire(#[from] wire::WireError),
}

fn proto(e: impl std::fmt::Display) -> PeerError {
    PeerError::Protocol(e.to_string())
}

/// Where the node listens.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// UDP address of the iroh endpoint (QUIC).
    pub iroh: SocketAddr,
    /// TCP address of the embedded relay (browsers reach the node through it); `None`: no relay.
    pub relay: Option<SocketAddr>,
    /// A human name for this node.
    pub name: String,
    /// The relay's URL as browsers reach it when it is not the page's host + relay port (the
    /// node behind an HTTPS reverse proxy that forwards, e.g., `wss://photos.example/relay`).
    pub relay_public_url: Option<String>,
}

/// A pairing ticket: the inviting node's address and a one-time secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ticket {
    pub addr: EndpointAddr,
    pub secret: String,
}

const TICKET_PREFIX: &str = "tessera1";

impl Ticket {
    /// A QR-friendly string: `tessera1` + lowercase base32 of the postcard encoding.
    pub fn encode(&self) -> String {
        let bytes = postcard::to_allocvec(self).unwrap_or_default();
        format!(
            "{TICKET_PREFIX}{}",
            data_encoding::BASE32_NOPAD.encode(&bytes).to_lowercase()
        )
    }

    pub fn decode(s: &str) -> Result<Self, PeerError> {
        let body = s
            .trim()
            .strip_prefix(TICKET_PREFIX)
            .ok_or_else(|| PeerError::Ticket(format!("it must start with {TICKET_PREFIX}")))?;
        let bytes = data_encoding::BASE32_NOPAD
            .decode(body.to_uppercase().as_bytes())
            .map_err(|e| PeerError::Ticket(e.to_string()))?;
        postcard::from_bytes(&bytes).map_err(|e| PeerError::Ticket(e.to_string()))
    }
}

/// Live connections per remote key (so revoking a key can close them).
type Live = Mutex<HashMap<EndpointId, Vec<Connection>>>;

pub struct Peer {
    pub endpoint: Endpoint,
    relay: Mutex<Option<iroh_relay::server::Server>>,
    relay_port: Option<u16>,
    relay_public_url: Option<String>,
    name: String,
    node: Arc<Node>,
    live: Live,
    /// Blobs being fetched from other nodes (by hash), so two sessions do not fetch one twice.
    fetching: Mutex<HashSet<(BlobKind, [u8; 32])>>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.endpoint.id())
            .finish()
    }
}

/// The embedded relay serves this node and the household's paired keys only (a stranger
/// cannot use it as a free relay).
struct HouseholdOnly {
    auth: crate::auth::Auth,
    me: EndpointId,
}

impl std::fmt::Debug for HouseholdOnly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HouseholdOnly")
    }
}

impl iroh_relay::server::AccessControl for HouseholdOnly {
    async fn on_connect(
        &self,
        req: &iroh_relay::server::ClientRequest,
    ) -> iroh_relay::server::Access {
        let id = req.endpoint_id();
        if id == self.me || matches!(self.auth.device(&id.to_string()), Ok(Some(_))) {
            iroh_relay::server::Access::Allow
        } else {
            tracing::debug!(peer = %id.fmt_short(), "relay refused an unpaired key");
            iroh_relay::server::Access::Deny {
                reason: Some("this key is not paired with the household".into()),
            }
        }
    }
}

/// Dead peers are noticed within seconds (a browser shows "offline", a node reconnects).
pub fn transport() -> iroh::endpoint::QuicTransportConfig {
    let mut b =
        iroh::endpoint::QuicTransportConfig::builder().keep_alive_interval(Duration::from_secs(2));
    if let Ok(t) = Duration::from_secs(8).try_into() {
        b = b.max_idle_timeout(Some(t));
    }
    b.build()
}

fn load_or_create_key(data: &Path) -> Result<SecretKey, PeerError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data.join("node.key");
    let err = |source| PeerError::Key {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read(&path) {
        Ok(b) => {
            let arr: [u8; 32] = b.as_slice().try_into().map_err(|_| {
                err(std::io::Error::other(
                    "not a 32-byte key (restore it from a backup, or move it aside to make a new identity)",
                ))
            })?;
            Ok(SecretKey::from_bytes(&arr))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SecretKey::generate();
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(err)?;
            f.write_all(&key.to_bytes()).map_err(err)?;
            f.sync_all().map_err(err)?;
            std::fs::rename(&tmp, &path).map_err(err)?;
            Ok(key)
        }
        Err(e) => Err(err(e)),
    }
}

impl Peer {
    /// Starts the relay (if configured) and the endpoint, and accepts connections.
    pub async fn start(node: Arc<Node>, cfg: PeerConfig) -> Result<Arc<Self>, PeerError> {
        let key = load_or_create_key(node.data())?;
        let (relay, relay_url, relay_port) = match cfg.relay {
            Some(addr) => {
                let mut sc = iroh_relay::server::ServerConfig::default();
                let mut rc = iroh_relay::server::RelayConfig::new(addr);
                rc.access = Arc::new(HouseholdOnly {
                    auth: node.auth.clone(),
                    me: key.public(),
                });
                sc.relay = Some(rc);
                let server =
                    iroh_relay::server::Server::spawn(sc)
                        .await
                        .map_err(|e| PeerError::Relay {
                            addr,
                            reason: e.to_string(),
                        })?;
                let bound = server.http_addr().unwrap_or(addr);
                let host = if bound.ip().is_unspecified() {
                    "127.0.0.1".to_owned()
                } else {
                    bound.ip().to_string()
                };
                let url: RelayUrl =
                    format!("http://{host}:{}", bound.port())
                        .parse()
                        .map_err(|e| PeerError::Relay {
                            addr,
                            reason: format!("{e}"),
                        })?;
                (Some(server), Some(url), Some(bound.port()))
            }
            None => (None, None, None),
        };
        let mut b = Endpoint::builder(presets::Minimal)
            .secret_key(key)
            .alpns(vec![ALPN_DOCS.to_vec(), ALPN_BLOBS.to_vec()])
            .transport_config(transport())
            .relay_mode(match &relay_url {
                Some(u) => RelayMode::custom([u.clone()]),
                None => RelayMode::Disabled,
            })
            .clear_ip_transports();
        b = b
            .bind_addr(cfg.iroh)
            .map_err(|e| PeerError::Bind(e.to_string()))?;
        let endpoint = b.bind().await.map_err(|e| PeerError::Bind(e.to_string()))?;
        tracing::info!(
            id = %endpoint.id(),
            iroh = ?endpoint.bound_sockets(),
            relay = ?relay_url.as_ref().map(|u| u.to_string()),
            "iroh endpoint up"
        );
        let peer = Arc::new(Self {
            endpoint,
            relay: Mutex::new(relay),
            relay_port,
            relay_public_url: cfg.relay_public_url,
            name: cfg.name,
            node,
            live: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashSet::new()),
        });
        tokio::spawn(peer.clone().accept_loop());
        tokio::spawn(peer.clone().mirror_household());
        for (id, addr) in peer.dial_list() {
            tokio::spawn(peer.clone().follow(id, addr));
        }
        Ok(peer)
    }

    pub fn id(&self) -> EndpointId {
        self.endpoint.id()
    }

    /// The relay's port (browsers build the relay URL from the host they loaded the PWA from).
    pub fn relay_port(&self) -> Option<u16> {
        self.relay_port
    }

    /// The relay URL configured for browsers (`--relay-public-url`), if any.
    pub fn relay_public_url(&self) -> Option<&str> {
        self.relay_public_url.as_deref()
    }

    /// This node's address for a ticket (its id and bound UDP sockets).
    pub fn addr(&self) -> EndpointAddr {
        let mut addr = EndpointAddr::new(self.endpoint.id());
        // The interface addresses iroh found (a LAN address when bound to 0.0.0.0), then the
        // bound sockets themselves.
        for s in self.endpoint.addr().ip_addrs() {
            addr = addr.with_ip_addr(*s);
        }
        for s in self.endpoint.bound_sockets() {
            let s = if s.ip().is_unspecified() {
                SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), s.port())
            } else {
                s
            };
            addr = addr.with_ip_addr(s);
        }
        addr
    }

    /// A new pairing ticket (one-time, expires after an hour).
    pub fn ticket(&self) -> Result<String, crate::auth::AuthError> {
        let secret = self.node.auth.create_pairing_secret()?;
        Ok(Ticket {
            addr: self.addr(),
            secret,
        }
        .encode())
    }

    /// Closes every live connection of a key (after it was revoked).
    pub fn disconnect(&self, id: &str) {
        let Ok(id) = id.parse::<EndpointId>() else {
            return;
        };
        let conns = self
            .live
            .lock()
            .map(|mut l| l.remove(&id).unwrap_or_default())
            .unwrap_or_default();
        for c in conns {
            c.close(4u32.into(), b"this device was unpaired");
        }
    }

    /// Closes every connection (peers see a clean close) and stops the relay.
    pub async fn shutdown(&self) {
        self.endpoint.close().await;
        let relay = self.relay.lock().ok().and_then(|mut r| r.take());
        if let Some(r) = relay {
            if let Err(e) = r.shutdown().await {
                tracing::warn!("stopping the relay: {e}");
            }
        }
    }

    fn track(&self, conn: &Connection) {
        if let Ok(mut l) = self.live.lock() {
            let v = l.entry(conn.remote_id()).or_default();
            v.retain(|c| c.close_reason().is_none());
            v.push(conn.clone());
        }
    }

    // ---- accepting ---------------------------------------------------------------------

    async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            let me = self.clone();
            tokio::spawn(async move {
                let observed = match incoming.remote_addr() {
                    iroh::endpoint::IncomingAddr::Ip(a) => Some(a),
                    _ => None,
                };
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!("incoming connection failed: {e}");
                        return;
                    }
                };
                let alpn = conn.alpn().to_vec();
                let remote = conn.remote_id();
                let res = if alpn == ALPN_DOCS {
                    me.accept_docs(conn, observed).await
                } else if alpn == ALPN_BLOBS {
                    me.serve_blobs(conn).await
                } else {
                    Ok(())
                };
                if let Err(e) = res {
                    tracing::debug!(peer = %remote.fmt_short(), "connection ended: {e}");
                }
            });
        }
    }

    /// The role of a remote key, from the paired devices.
    fn role_of(&self, remote: &EndpointId) -> Option<(Role, Device)> {
        let d = self.node.auth.device(&remote.to_string()).ok()??;
        let role = if d.is_node() {
            Role::Node
        } else {
            Role::Device {
                user: d.user_id.clone(),
            }
        };
        Some((role, d))
    }

    async fn accept_docs(
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
        self.session(conn, send, recv, role, peer_addr).await
    }

    // ---- dialing other nodes -------------------------------------------------------------

    /// Nodes this one dials (recorded when it joined through a ticket): id → address.
    /// Whether this node joined another node's household (its accounts come from there).
    pub fn joined_household(&self) -> bool {
        !self.dial_list().is_empty()
    }

    fn dial_list(&self) -> Vec<(EndpointId, EndpointAddr)> {
        let Ok(t) = self.node.db.open_tree("dial_nodes") else {
            return Vec::new();
        };
        t.iter()
            .flatten()
            .filter_map(|(_, v)| serde_json::from_slice::<EndpointAddr>(&v).ok())
            .map(|a| (a.id, a))
            .collect()
    }

    fn remember_dial(&self, addr: &EndpointAddr) -> Result<(), PeerError> {
        let t = self.node.db.open_tree("dial_nodes").map_err(proto)?;
        let v = serde_json::to_vec(addr).map_err(proto)?;
        t.insert(addr.id.to_string().as_bytes(), v).map_err(proto)?;
        t.flush().map_err(proto)?;
        Ok(())
    }

    fn hello(&self, pair_secret: Option<String>) -> Hello {
        Hello {
            version: WIRE_VERSION,
            name: self.name.clone(),
            pair_secret,
            addr: serde_json::to_string(&self.addr()).ok(),
        }
    }

    /// Joins the household of the node that issued `ticket`: presents the secret once, then
    /// follows that node for good (also after restarts).
    pub async fn join(self: &Arc<Self>, ticket: &str) -> Result<(), PeerError> {
        let t = Ticket::decode(ticket)?;
        if self.dial_list().iter().any(|(id, _)| *id == t.addr.id) {
            tracing::info!(node = %t.addr.id, "already joined this household; following it");
            return Ok(());
        }
        if self.node.auth.is_initialized() {
            return Err(PeerError::Refused(
                "this data directory already has its own accounts; join a household with an empty data directory".into(),
            ));
        }
        let conn = self
            .endpoint
            .connect(t.addr.clone(), ALPN_DOCS)
            .await
            .map_err(|e| PeerError::Connect {
                peer: t.addr.id.to_string(),
                reason: e.to_string(),
            })?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(proto)?;
        write_frame(&mut send, &Frame::Hello(self.hello(Some(t.secret.clone())))).await?;
        match read_frame(&mut recv).await? {
            Some(Frame::Welcome(w)) if w.role == Role::Node => {
                self.node
                    .auth
                    .add_node(&t.addr.id.to_string(), &w.name)
                    .map_err(proto)?;
                self.remember_dial(&t.addr)?;
                tracing::info!(node = %t.addr.id, name = %w.name, "joined the household");
                self.track(&conn);
                let me = self.clone();
                let waiter = self.node.clone();
                let addr = t.addr.clone();
                tokio::spawn(async move {
                    if let Err(e) = me
                        .clone()
                        .session(conn, send, recv, Role::Node, Some(addr.clone()))
                        .await
                    {
                        tracing::warn!("household session ended: {e}");
                    }
                    me.follow(addr.id, addr).await;
                });
                // Serve HTTP only once the household's accounts are here: until then a
                // sign-up on this node would make a second admin for the whole household.
                for _ in 0..300 {
                    if waiter.auth.is_initialized() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(())
            }
            Some(Frame::Denied { reason }) => Err(PeerError::Refused(reason)),
            other => Err(proto(format!("unexpected answer {other:?}"))),
        }
    }

    /// Keeps a connection to another node of the household, reconnecting with backoff.
    async fn follow(self: Arc<Self>, id: EndpointId, addr: EndpointAddr) {
        let mut wait = Duration::from_millis(500);
        loop {
            if self.endpoint.is_closed() {
                return;
            }
            let connected = self
                .live
                .lock()
                .map(|l| {
                    l.get(&id)
                        .is_some_and(|v| v.iter().any(|c| c.close_reason().is_none()))
                })
                .unwrap_or(false);
            if !connected {
                match self.dial(addr.clone()).await {
                    Ok(()) => wait = Duration::from_millis(500),
                    Err(e) => {
                        tracing::info!(node = %id.fmt_short(), "household node unreachable: {e}");
                        wait = (wait * 2).min(Duration::from_secs(10));
                    }
                }
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn dial(self: &Arc<Self>, addr: EndpointAddr) -> Result<(), PeerError> {
        let conn = self
            .endpoint
            .connect(addr.clone(), ALPN_DOCS)
            .await
            .map_err(|e| PeerError::Connect {
                peer: addr.id.to_string(),
                reason: e.to_string(),
            })?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(proto)?;
        write_frame(&mut send, &Frame::Hello(self.hello(None))).await?;
        match read_frame(&mut recv).await? {
            Some(Frame::Welcome(w)) if w.role == Role::Node => {
                self.track(&conn);
                tracing::info!(node = %addr.id.fmt_short(), name = %w.name, "connected to household node");
                self.clone()
                    .session(conn, send, recv, Role::Node, Some(addr))
                    .await
            }
            Some(Frame::Denied { reason }) => Err(PeerError::Refused(reason)),
            other => Err(proto(format!("unexpected answer {other:?}"))),
        }
    }

    // ---- the live session ----------------------------------------------------------------

    /// Runs a live sync session until the connection ends: both sides push what they have to
    /// say whenever something changes. Between nodes, blob inventories are exchanged too and
    /// what is missing is fetched.
    async fn session(
        self: Arc<Self>,
        conn: Connection,
        mut send: SendStream,
        recv: RecvStream,
        role: Role,
        peer_addr: Option<EndpointAddr>,
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
        let mut sync = Some(PeerSync::new());
        let result: Result<(), PeerError> = async {
            if is_node {
                let have = self.inventory().await;
                for chunk in have.chunks(wire::MAX_HAVE) {
                    write_frame(&mut send, &Frame::Have(chunk.to_vec())).await?;
                }
            }
            for f in self.generate(&mut sync, &role).await? {
                write_frame(&mut send, &f).await?;
            }
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
                                for f in self.generate(&mut sync, &role).await? {
                                    write_frame(&mut send, &f).await?;
                                }
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
                        for f in self.generate(&mut sync, &role).await? {
                            write_frame(&mut send, &f).await?;
                        }
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

    /// The documents a role covers, and what it may do with each.
    fn access(role: &Role, id: &DocId) -> Access {
        match role {
            Role::Node => Access::Write,
            Role::Device { user } if id.user() == user.as_str() => Access::Write,
            Role::Device { .. } => Access::None,
        }
    }

    async fn generate(
        &self,
        sync: &mut Option<PeerSync>,
        role: &Role,
    ) -> Result<Vec<Frame>, PeerError> {
        let node = self.node.clone();
        let role = role.clone();
        let mut s = sync.take().unwrap_or_default();
        let (s, out) = tokio::task::spawn_blocking(move || {
            let out = node.catalog.lock().map(|mut lib| {
                let ids: Vec<DocId> = lib
                    .ids()
                    .filter(|d| Self::access(&role, d) != Access::None)
                    .cloned()
                    .collect();
                s.generate(&mut lib, &ids)
            });
            (s, out)
        })
        .await
        .map_err(proto)?;
        *sync = Some(s);
        let msgs = out.map_err(proto)?;
        Ok(split_envelopes(&self.name, msgs).unwrap_or_default())
    }

    async fn receive(
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

    /// Every blob file, by kind. The files, not the sled index: the index is keyed by hash
    /// alone, and one hash can be stored under two kinds (a small photo's thumbnail and
    /// preview can be the same bytes).
    async fn inventory(&self) -> Vec<BlobRef> {
        let blobs = self.node.blobs.clone();
        tokio::task::spawn_blocking(move || {
            blobs
                .walk()
                .into_iter()
                .filter_map(|(kind, h, path)| {
                    Some(BlobRef {
                        kind: kind.dir().to_owned(),
                        hash: wire::parse_hash(&h)?,
                        size: std::fs::metadata(&path).ok()?.len(),
                    })
                })
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    fn wants(&self, r: &BlobRef) -> bool {
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
    fn revived(&self, hex: &str) -> bool {
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
    async fn fetcher(
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

    fn done_fetching(&self, r: &BlobRef) {
        if let (Ok(mut f), Some(kind)) = (self.fetching.lock(), BlobKind::from_dir(&r.kind)) {
            f.remove(&(kind, r.hash));
        }
    }

    async fn fetch_one(&self, conn: &Connection, r: &BlobRef) -> Result<(), PeerError> {
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
    async fn serve_blobs(self: Arc<Self>, conn: Connection) -> Result<(), PeerError> {
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
                    let path = BlobKind::from_dir(&req.kind)
                        .and_then(|k| me.node.blobs.path(k, &wire::hash_hex(&req.hash)).ok());
                    let file = match path {
                        Some(p) => tokio::fs::File::open(p).await.ok(),
                        None => None,
                    };
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

    /// Mirrors the account trees into the household document after every change (so other
    /// nodes receive them by sync).
    async fn mirror_household(self: Arc<Self>) {
        let mut rx = self.node.auth.subscribe();
        loop {
            let node = self.node.clone();
            let r = tokio::task::spawn_blocking(move || mirror(&node)).await;
            match r {
                Ok(Err(e)) => tracing::warn!("mirroring accounts to the household document: {e}"),
                Err(e) => tracing::warn!("mirroring accounts: {e}"),
                Ok(Ok(())) => {}
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Household document keys: `<tree>/<hex key>` → `{"v": base64 value}`.
fn mirror(node: &Node) -> Result<(), PeerError> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let doc = DocId::household();
    // Export under the catalogue lock: `apply` imports under it too, so a stale export can
    // never overwrite (or delete) what a sync just brought in.
    let mut lib = node.catalog.lock().map_err(proto)?;
    let exported = node.auth.export().map_err(proto)?;
    let current: BTreeMap<String, String> = lib
        .entries(&doc, "")
        .map_err(proto)?
        .into_iter()
        .filter_map(|(k, f)| Some((k, f.get("v")?.as_str()?.to_owned())))
        .collect();
    let mut set = Vec::new();
    for (k, v) in &exported {
        let enc = b64.encode(v);
        if current.get(k) != Some(&enc) {
            let mut f = tessera_core::library::Fields::new();
            f.insert("v".into(), serde_json::Value::String(enc));
            set.push((k.clone(), f));
        }
    }
    // Keys of trees this node does not know (a newer node's) are left alone.
    let gone: Vec<String> = current
        .keys()
        .filter(|k| !exported.contains_key(*k))
        .filter(|k| {
            k.split_once('/')
                .is_some_and(|(t, _)| crate::auth::REPLICATED.contains(&t))
        })
        .cloned()
        .collect();
    if set.is_empty() && gone.is_empty() {
        return Ok(());
    }
    if !set.is_empty() {
        lib.merge_entries(&doc, &set).map_err(proto)?;
    }
    if !gone.is_empty() {
        lib.remove_entries(&doc, &gone).map_err(proto)?;
    }
    node.catalog.persist(&mut lib).map_err(proto)?;
    Ok(())
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
    let changed = sync
        .receive(&mut lib, env.docs, |d| Peer::access(role, d))
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
    node.catalog.persist(&mut lib).map_err(proto)?;
    if *role == Role::Node {
        // New records from another node: index where they live (downloads, dedupe).
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
    }
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

fn unhex_str(s: &str) -> Option<String> {
    String::from_utf8(crate::auth::unhex(s)?).ok()
}

async fn write_frame<T: Serialize>(send: &mut SendStream, f: &T) -> Result<(), PeerError> {
    send.write_all(&wire::encode(f)).await.map_err(proto)
}

/// The next frame, or `None` at a clean end of stream.
async fn read_frame(recv: &mut RecvStream) -> Result<Option<Frame>, PeerError> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(iroh::endpoint::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(proto(e)),
    }
    let n = wire::body_len(len)?;
    let mut body = vec![0u8; n];
    recv.read_exact(&mut body).await.map_err(proto)?;
    Ok(Some(wire::decode_frame(&body)?))
}

async fn read_msg<T: for<'de> Deserialize<'de>>(recv: &mut RecvStream) -> Result<T, PeerError> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.map_err(proto)?;
    let n = wire::body_len(len)?;
    let mut body = vec![0u8; n];
    recv.read_exact(&mut body).await.map_err(proto)?;
    Ok(wire::decode(&body)?)
}
