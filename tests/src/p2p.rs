//! A native iroh device for tests and the bench: pairs a key, dials a node directly on loopback,
//! speaks `tessera/docs/1` and syncs a local catalogue.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use iroh::endpoint::{presets, Connection, RecvStream, SendStream};
use iroh::{Endpoint, EndpointAddr, EndpointId, RelayMode, SecretKey};
use tessera_core::wire::{self, Frame, Hello, Welcome, ALPN_DOCS, WIRE_VERSION};
use tessera_core::{DocId, Library, PeerSync, SyncEnvelope};

/// Where a node listens for iroh (from `GET /api/tessera/peer`).
pub fn node_addr(api: &crate::Api) -> Result<EndpointAddr> {
    let (code, v) = api.get_json("/api/tessera/peer")?;
    if code != 200 {
        bail!("GET /api/tessera/peer: {code} {v}");
    }
    let id: EndpointId = v["nodeId"].as_str().context("nodeId")?.parse()?;
    let mut addr = EndpointAddr::new(id);
    for a in v["addrs"].as_array().context("addrs")? {
        let s: SocketAddr = a.as_str().context("addr")?.parse()?;
        addr = addr.with_ip_addr(s);
    }
    Ok(addr)
}

/// The body of `POST /api/tessera/devices` for `key`, signed the way the PWA signs it (proof of
/// possession of the key for this node and user, now).
pub fn bind_body(key: &SecretKey, node: &EndpointId, user: &str, name: &str) -> serde_json::Value {
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let sig = key.sign(&wire::device_binding_statement(&node.to_string(), user, at));
    let hex: String = sig.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
    serde_json::json!({"endpointId": key.public().to_string(), "name": name, "signedAt": at, "signature": hex})
}

/// The signed-in user's id (`GET /api/users/me`).
pub fn user_id(api: &crate::Api) -> Result<String> {
    let (_, me) = api.get_json("/api/users/me")?;
    Ok(me["id"].as_str().context("user id")?.to_owned())
}

pub async fn endpoint(key: SecretKey) -> Result<Endpoint> {
    Endpoint::builder(presets::Minimal)
        .secret_key(key)
        .relay_mode(RelayMode::Disabled)
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")?
        .bind()
        .await
        .context("binding a test endpoint")
}

/// A connected session after the handshake.
pub struct Session {
    pub conn: Connection,
    pub send: SendStream,
    pub recv: RecvStream,
    pub welcome: Welcome,
}

/// Dials and says hello: `Ok(Err(reason))` when the node refuses the key.
pub async fn connect(
    ep: &Endpoint,
    addr: EndpointAddr,
    pair_secret: Option<String>,
) -> Result<std::result::Result<Session, String>> {
    let conn = ep.connect(addr, ALPN_DOCS).await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    write(
        &mut send,
        &Frame::Hello(Hello {
            version: WIRE_VERSION,
            name: "test device".into(),
            pair_secret,
            addr: None,
            holds: None,
        }),
    )
    .await?;
    match read(&mut recv).await? {
        Some(Frame::Welcome(welcome)) => Ok(Ok(Session {
            conn,
            send,
            recv,
            welcome,
        })),
        Some(Frame::Denied { reason }) => Ok(Err(reason)),
        other => bail!("unexpected answer {other:?}"),
    }
}

pub async fn write(send: &mut SendStream, f: &Frame) -> Result<()> {
    send.write_all(&wire::encode(f)).await?;
    Ok(())
}

pub async fn read(recv: &mut RecvStream) -> Result<Option<Frame>> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(iroh::endpoint::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let n = wire::body_len(len)?;
    let mut body = vec![0u8; n];
    recv.read_exact(&mut body).await?;
    Ok(Some(wire::decode_frame(&body)?))
}

/// Syncs `lib` with the node until neither side has said anything for `quiet`. Returns the
/// number of frames received.
pub async fn sync_until_quiet(
    s: &mut Session,
    lib: &mut Library,
    sync: &mut PeerSync,
    quiet: Duration,
) -> Result<usize> {
    let mut frames = 0;
    loop {
        let ids: Vec<DocId> = lib.ids().cloned().collect();
        let msgs = sync.generate(lib, &ids);
        if !msgs.is_empty() {
            write(&mut s.send, &Frame::Sync(SyncEnvelope::new("test", msgs))).await?;
        }
        match tokio::time::timeout(quiet, read(&mut s.recv)).await {
            Err(_) => return Ok(frames),
            Ok(f) => match f? {
                Some(Frame::Sync(env)) => {
                    frames += 1;
                    // Documents this user may no longer see (removed from an album…).
                    for d in env.dropped_ids() {
                        lib.remove_doc(&d);
                    }
                    sync.receive(lib, env.docs, |d: &DocId| !d.is_household())?;
                }
                Some(other) => bail!("unexpected frame {other:?}"),
                None => bail!("the node closed the stream"),
            },
        }
    }
}

/// Total assets of `user` in a catalogue.
pub fn asset_count(lib: &Library, user: &str) -> usize {
    lib.ids()
        .filter(|d| d.user() == user && d.month().is_some())
        .map(|d| lib.assets(d).map(|a| a.len()).unwrap_or(0))
        .sum()
}
