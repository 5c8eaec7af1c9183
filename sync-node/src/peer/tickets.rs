//! Joining a household: pairing tickets, dialling the nodes we know, following them.

use std::sync::Arc;
use std::time::Duration;

use iroh::{EndpointAddr, EndpointId};
use serde::{Deserialize, Serialize};
use tessera_core::wire::{Frame, Hello, Role, ALPN_DOCS, WIRE_VERSION};

use super::*;

impl Peer {
    /// A new pairing ticket (one-time, expires after an hour).
    pub fn ticket(&self) -> Result<String, crate::auth::AuthError> {
        let secret = self.node.auth.create_pairing_secret()?;
        Ok(Ticket {
            addr: self.addr(),
            secret,
        }
        .encode())
    }

    /// Nodes this one dials (recorded when it joined through a ticket): id → address.
    /// Whether this node joined another node's household (its accounts come from there).
    pub fn joined_household(&self) -> bool {
        !self.dial_list().is_empty()
    }

    pub(super) fn dial_list(&self) -> Vec<(EndpointId, EndpointAddr)> {
        let Ok(t) = self.node.db.open_tree("dial_nodes") else {
            return Vec::new();
        };
        t.iter()
            .flatten()
            .filter_map(|(_, v)| serde_json::from_slice::<EndpointAddr>(&v).ok())
            .map(|a| (a.id, a))
            .collect()
    }

    pub(super) fn remember_dial(&self, addr: &EndpointAddr) -> Result<(), PeerError> {
        let t = self.node.db.open_tree("dial_nodes").map_err(proto)?;
        let v = serde_json::to_vec(addr).map_err(proto)?;
        t.insert(addr.id.to_string().as_bytes(), v).map_err(proto)?;
        t.flush().map_err(proto)?;
        Ok(())
    }

    pub(super) fn hello(&self, pair_secret: Option<String>) -> Hello {
        Hello {
            version: WIRE_VERSION,
            name: self.name.clone(),
            pair_secret,
            addr: serde_json::to_string(&self.addr()).ok(),
            holds: self.holds(),
        }
    }

    /// Every document this node holds, for a node it syncs with (which sends it the others
    /// whole): `None` if the catalogue cannot be read now (the usual exchange then runs).
    pub(super) fn holds(&self) -> Option<Vec<String>> {
        let lib = self.node.catalog.lock().ok()?;
        Some(lib.ids().map(|d| d.to_string()).collect())
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
                        .session(conn, send, recv, Role::Node, Some(addr.clone()), w.holds)
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
    pub(super) async fn follow(self: Arc<Self>, id: EndpointId, addr: EndpointAddr) {
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

    pub(super) async fn dial(self: &Arc<Self>, addr: EndpointAddr) -> Result<(), PeerError> {
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
                    .session(conn, send, recv, Role::Node, Some(addr), w.holds)
                    .await
            }
            Some(Frame::Denied { reason }) => Err(PeerError::Refused(reason)),
            other => Err(proto(format!("unexpected answer {other:?}"))),
        }
    }

    // ---- the live session ----------------------------------------------------------------
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
