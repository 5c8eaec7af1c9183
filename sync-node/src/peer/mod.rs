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

mod blobs;
mod docs;
mod household;
mod tickets;

pub use tickets::Ticket;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iroh::endpoint::{presets, Connection, RecvStream, SendStream};
use iroh::{Endpoint, EndpointAddr, EndpointId, RelayMode, RelayUrl, SecretKey};
use serde::{Deserialize, Serialize};
use tessera_core::wire::{self, Frame, Role, ALPN_BLOBS, ALPN_DOCS};

use crate::auth::Device;
use crate::blobs::BlobKind;
use crate::node::Node;

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

    /// Restarts the sessions with the household's other nodes (the dialing side reconnects
    /// within a second): both sides send their blob inventories again, so replication fetches
    /// whatever this node no longer has — how the scrub gets a quarantined original back.
    pub fn resync_nodes(&self, reason: &str) {
        let conns: Vec<Connection> = self
            .live
            .lock()
            .map(|l| {
                l.iter()
                    .filter(|(id, _)| matches!(self.role_of(id), Some((Role::Node, _))))
                    .flat_map(|(_, c)| c.iter().cloned())
                    .collect()
            })
            .unwrap_or_default();
        tracing::info!(
            connections = conns.len(),
            "restarting node sessions: {reason}"
        );
        for c in conns {
            c.close(5u32.into(), b"resync: inventories again");
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
}
