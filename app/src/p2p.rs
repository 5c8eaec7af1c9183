//! Live catalogue sync over iroh, in the browser: relay-only over WebSocket through the relay the
//! sync node embeds. The device's iroh key (localStorage) is paired with the signed-in user over
//! HTTP (`POST /api/tessera/devices`); the node then syncs that user's documents over a
//! `tessera/docs/1` connection, pushing every change as it happens, both ways.
//!
//! When the iroh connection cannot be made (no relay, a proxy in the way), the HTTP sync rounds
//! in `lib.rs` keep the catalogue in sync instead; the status shows which transport is in use.

use std::cell::RefCell;

use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use iroh::endpoint::{presets, Connection, RecvStream, SendStream};
use iroh::{Endpoint, EndpointAddr, EndpointId, RelayMode, RelayUrl, SecretKey};
use leptos::prelude::{GetUntracked, Set};
use leptos::task::spawn_local;
use tessera_core::wire::{self, Frame, Hello, Role, ALPN_DOCS, WIRE_VERSION};
use tessera_core::{DocId, PeerSync, SyncEnvelope};

use crate::catalogue::save_docs;
use crate::state::{log, refresh, user_id, Screen, Ui, CORE};
use crate::{net, session};

const KEY: &str = "tessera.iroh_key";

#[derive(Default)]
struct State {
    /// A live, welcomed connection to the node.
    connected: bool,
    /// Wakes the session when the local catalogue changed.
    kick: Option<mpsc::UnboundedSender<()>>,
    endpoint: Option<(Endpoint, RelayUrl)>,
}

thread_local! {
    static P2P: RefCell<State> = RefCell::new(State::default());
}

/// Whether the catalogue is synced live over iroh right now.
pub fn connected() -> bool {
    P2P.with(|p| p.borrow().connected)
}

/// Tells the live session that the local catalogue changed (sent at once when connected).
/// Returns false when there is no live session (the caller falls back to HTTP).
pub fn kick() -> bool {
    P2P.with(|p| {
        let p = p.borrow();
        p.connected
            && p.kick
                .as_ref()
                .is_some_and(|k| k.unbounded_send(()).is_ok())
    })
}

/// Signs out of live sync: closes the connection (the next user pairs again).
pub fn stop() {
    let ep = P2P.with(|p| {
        let mut p = p.borrow_mut();
        p.connected = false;
        p.kick = None;
        p.endpoint.take()
    });
    if let Some((ep, _)) = ep {
        spawn_local(async move { ep.close().await });
    }
    // The node unpairs this key at logout; the next user of this browser gets a fresh one.
    if let Some(s) = web_sys::window().and_then(|w| w.local_storage().ok().flatten()) {
        let _ = s.remove_item(KEY);
    }
}

/// This browser's iroh endpoint id (hex), as the node lists it.
pub fn device_id() -> String {
    secret_key().public().to_string()
}

fn secret_key() -> SecretKey {
    let st = web_sys::window().and_then(|w| w.local_storage().ok().flatten());
    if let Some(hex) = st.as_ref().and_then(|s| s.get_item(KEY).ok().flatten()) {
        if let Some(b) = tessera_core::wire::parse_hash(&hex) {
            return SecretKey::from_bytes(&b);
        }
    }
    let mut b = [0u8; 32];
    b.copy_from_slice(&session::random_bytes(32));
    if let Some(s) = st {
        let _ = s.set_item(KEY, &session::hex(&b));
    }
    SecretKey::from_bytes(&b)
}

fn set_state(ui: Ui, s: &str) {
    ui.sync_state.set(s.to_owned());
    ui.transport
        .set(if connected() { "iroh" } else { "http" }.into());
}

/// Runs forever: (re)connects while signed in, with backoff while the node is unreachable.
pub fn start(ui: Ui) {
    spawn_local(async move {
        let mut wait = 1_000u32;
        loop {
            if user_id().is_some() {
                match run_once(ui).await {
                    Ok(()) => wait = 1_000,
                    Err(e) => {
                        log(&format!("p2p sync: {e}"));
                        wait = (wait * 2).min(10_000);
                    }
                }
                P2P.with(|p| {
                    let mut p = p.borrow_mut();
                    p.connected = false;
                    p.kick = None;
                });
                if ui.sync_state.get_untracked() != "offline" {
                    ui.transport.set("http".into());
                }
            }
            gloo_timers::future::TimeoutFuture::new(wait).await;
        }
    });
}

/// The node notices a closed tab, and this page a vanished node, within seconds.
fn transport() -> iroh::endpoint::QuicTransportConfig {
    let mut b = iroh::endpoint::QuicTransportConfig::builder()
        .keep_alive_interval(std::time::Duration::from_secs(2));
    if let Ok(t) = std::time::Duration::from_secs(8).try_into() {
        b = b.max_idle_timeout(Some(t));
    }
    b.build()
}

async fn endpoint(relay: &RelayUrl) -> Result<Endpoint, String> {
    if let Some((ep, url)) = P2P.with(|p| p.borrow().endpoint.clone()) {
        if &url == relay && !ep.is_closed() {
            return Ok(ep);
        }
        ep.close().await;
    }
    let ep = Endpoint::builder(presets::Minimal)
        .secret_key(secret_key())
        .relay_mode(RelayMode::custom([relay.clone()]))
        .transport_config(transport())
        .bind()
        .await
        .map_err(|e| format!("iroh endpoint: {e}"))?;
    P2P.with(|p| p.borrow_mut().endpoint = Some((ep.clone(), relay.clone())));
    Ok(ep)
}

async fn run_once(ui: Ui) -> Result<(), String> {
    let user = user_id().ok_or("signed out")?;
    let key = secret_key();
    let name = web_sys::window()
        .and_then(|w| w.navigator().user_agent().ok())
        .map(|ua| describe_browser(&ua))
        .unwrap_or_else(|| "Browser".into());
    // Pair this device's key with the user (idempotent) and learn where the node is. The
    // device proves it holds the key: it signs a statement naming the node, the user and now.
    let peer_info = net::json("GET", "/api/tessera/peer", None)
        .await
        .map_err(|e| {
            if e.is_offline() {
                set_state(ui, "offline");
            }
            e.message
        })?;
    let node_hex = peer_info["nodeId"]
        .as_str()
        .ok_or("the node does not run peer-to-peer sync")?
        .to_owned();
    let signed_at = (js_sys::Date::now() / 1000.0) as i64;
    let signature: String = key
        .sign(&wire::device_binding_statement(&node_hex, &user, signed_at))
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let r = net::json(
        "POST",
        "/api/tessera/devices",
        Some(serde_json::json!({
            "endpointId": key.public().to_string(), "name": name,
            "signedAt": signed_at, "signature": signature,
        })),
    )
    .await
    .map_err(|e| {
        if e.is_offline() {
            set_state(ui, "offline");
        }
        if e.status == 401 {
            // Signed out elsewhere (or this device was unpaired): back to the login screen.
            session::clear();
            ui.screen.set(Screen::Login);
        }
        e.message
    })?;
    let node_id: EndpointId = r["node"]["nodeId"]
        .as_str()
        .ok_or("the node does not run peer-to-peer sync")?
        .parse()
        .map_err(|e| format!("node id: {e}"))?;
    let relay: RelayUrl = r["node"]["relayUrl"]
        .as_str()
        .ok_or("the node has no relay for browsers")?
        .parse()
        .map_err(|e| format!("relay url: {e}"))?;
    let ep = endpoint(&relay).await?;
    let addr = EndpointAddr::new(node_id).with_relay_url(relay);
    let conn = ep
        .connect(addr, ALPN_DOCS)
        .await
        .map_err(|e| format!("connecting to the node over iroh: {e}"))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    write(
        &mut send,
        &Frame::Hello(Hello {
            version: WIRE_VERSION,
            name,
            pair_secret: None,
            addr: None,
        }),
    )
    .await?;
    match read(&mut recv).await? {
        Some(Frame::Welcome(w)) if w.role == (Role::Device { user: user.clone() }) => {}
        Some(Frame::Denied { reason }) => {
            return Err(format!("the node refused this device: {reason}"))
        }
        other => return Err(format!("unexpected answer {other:?}")),
    }
    session_loop(ui, &user, conn, send, recv).await
}

pub(crate) fn describe_browser(ua: &str) -> String {
    let browser = ["Edg/", "Firefox/", "Chrome/", "Safari/"]
        .iter()
        .find(|b| ua.contains(*b))
        .map(|b| b.trim_end_matches('/').replace("Edg", "Edge"))
        .unwrap_or_else(|| "Browser".into());
    let os = ["Android", "iPhone", "iPad", "Windows", "Mac OS", "Linux"]
        .iter()
        .find(|o| ua.contains(*o))
        .copied()
        .unwrap_or("");
    format!("{browser} {os}").trim().to_owned()
}

async fn session_loop(
    ui: Ui,
    _user: &str,
    conn: Connection,
    mut send: SendStream,
    recv: RecvStream,
) -> Result<(), String> {
    let (kick_tx, mut kick_rx) = mpsc::unbounded::<()>();
    let (frame_tx, mut frames) = mpsc::unbounded::<Result<Frame, String>>();
    spawn_local(async move {
        let mut recv = recv;
        loop {
            let f = read(&mut recv).await;
            let end = !matches!(f, Ok(Some(_)));
            let item = match f {
                Ok(Some(f)) => Ok(f),
                Ok(None) => Err("the node closed the connection".to_owned()),
                Err(e) => Err(e),
            };
            if frame_tx.unbounded_send(item).is_err() || end {
                return;
            }
        }
    });
    P2P.with(|p| {
        let mut p = p.borrow_mut();
        p.connected = true;
        p.kick = Some(kick_tx);
    });
    let mut sync = PeerSync::new();
    send_changes(ui, &mut sync, &mut send).await?;
    loop {
        futures::select! {
            f = frames.next() => {
                // Apply everything that has arrived, then render, save and answer once: under
                // a burst of changes the page does the expensive part once per batch.
                let mut batch = vec![f.ok_or("connection lost")??];
                while let Ok(more) = frames.try_recv() {
                    batch.push(more?);
                }
                let mut any = false;
                for f in batch {
                    let Frame::Sync(env) = f else {
                        return Err(format!("unexpected frame {f:?}"));
                    };
                    let dropped = env.dropped_ids();
                    any |= !dropped.is_empty();
                    crate::catalogue::drop_docs(dropped).await;
                    let res = CORE.with(|c| {
                        let mut c = c.borrow_mut();
                        let c = &mut *c;
                        sync.receive(&mut c.lib, env.docs, crate::catalogue::from_node)
                    });
                    match res {
                        Ok(changed) => any |= !changed.is_empty(),
                        Err(e) => return Err(format!("sync: {e}")),
                    }
                }
                if any {
                    refresh(ui);
                    save_docs().await;
                }
                send_changes(ui, &mut sync, &mut send).await?;
            }
            k = kick_rx.next() => {
                if k.is_none() { return Ok(()); }
                send_changes(ui, &mut sync, &mut send).await?;
            }
            _ = conn.closed().fuse() => return Err("connection closed".into()),
        }
    }
}

/// Sends what the node does not have yet; the status says how many documents are in flight.
async fn send_changes(ui: Ui, sync: &mut PeerSync, send: &mut SendStream) -> Result<(), String> {
    let msgs = CORE.with(|c| {
        let mut c = c.borrow_mut();
        let c = &mut *c;
        let ids: Vec<DocId> = c.lib.ids().cloned().collect();
        sync.generate(&mut c.lib, &ids)
    });
    let pending = msgs.iter().filter(|m| m.has_changes()).count();
    if pending == 0 {
        set_state(ui, "online");
    } else {
        set_state(ui, &format!("syncing {pending}"));
    }
    if msgs.is_empty() {
        return Ok(());
    }
    let peer = session::device().id;
    write(send, &Frame::Sync(SyncEnvelope::new(peer, msgs))).await
}

async fn write(send: &mut SendStream, f: &Frame) -> Result<(), String> {
    send.write_all(&wire::encode(f))
        .await
        .map_err(|e| format!("sending: {e}"))
}

async fn read(recv: &mut RecvStream) -> Result<Option<Frame>, String> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(iroh::endpoint::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(format!("receiving: {e}")),
    }
    let n = wire::body_len(len).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; n];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| format!("receiving: {e}"))?;
    wire::decode_frame(&body)
        .map(Some)
        .map_err(|e| e.to_string())
}
