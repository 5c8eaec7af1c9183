//! Live catalogue sync over iroh, in the browser: relay-only over WebSocket through the relay the
//! sync node embeds. The device's iroh key (localStorage) is paired with the signed-in user over
//! HTTP (`POST /api/tessera/devices`); the node then syncs that user's documents over a
//! `tessera/docs/1` connection, pushing every change as it happens, both ways.
//!
//! The connection itself lives in the sync Web Worker (`sync-worker/`, its own wasm module):
//! iroh, QUIC and TLS are neither on the page's thread nor in the module the first paint
//! waits for. The page keeps the catalogue and the automerge sync state and exchanges encoded
//! frames with the worker (see `sync-worker/src/worker.rs` for the messages).
//!
//! When the iroh connection cannot be made (no relay, a proxy in the way, no worker), the HTTP
//! sync rounds in `lib.rs` keep the catalogue in sync instead; the status shows which
//! transport is in use.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use ed25519_dalek::{Signer, SigningKey};
use futures::channel::{mpsc, oneshot};
use futures::{FutureExt, StreamExt};
use js_sys::{Object, Reflect, Uint8Array};
use leptos::prelude::{GetUntracked, Set};
use leptos::task::spawn_local;
use tessera_core::wire::{self, Frame, Hello, Role, WIRE_VERSION};
use tessera_core::{DocId, PeerSync, SyncEnvelope};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{MessageEvent, Worker};

use crate::state::{log, refresh_soon, user_id, Screen, Ui, CORE};
use crate::{net, session};

const KEY: &str = "tessera.iroh_key";
/// Bytes of frames applied before the page renders and answers.
const BATCH_BYTES: usize = 4 << 20;

#[derive(Default)]
struct State {
    /// A live, welcomed connection to the node.
    connected: bool,
    /// Wakes the session when the local catalogue changed.
    kick: Option<mpsc::UnboundedSender<()>>,
}

/// What the worker reports about the current connection.
enum Event {
    Open,
    Frame(Vec<u8>),
    Closed(String),
}

struct SyncWorker {
    worker: Worker,
    /// Set when the worker failed: the next connection attempt starts another.
    dead: Rc<Cell<bool>>,
    _on: Closure<dyn FnMut(MessageEvent)>,
    _on_error: Closure<dyn FnMut(web_sys::ErrorEvent)>,
}

impl SyncWorker {
    fn post(&self, pairs: &[(&str, JsValue)]) {
        let o = Object::new();
        for (k, v) in pairs {
            let _ = Reflect::set(&o, &JsValue::from_str(k), v);
        }
        let _ = self.worker.post_message(&o);
    }
}

thread_local! {
    static P2P: RefCell<State> = RefCell::new(State::default());
    static WORKER: RefCell<Option<Rc<SyncWorker>>> = const { RefCell::new(None) };
    /// The connection the page listens to: its number and where its events go.
    static EVENTS: RefCell<Option<(f64, mpsc::UnboundedSender<Event>)>> = const { RefCell::new(None) };
    static READY: RefCell<Option<oneshot::Sender<()>>> = const { RefCell::new(None) };
    static GEN: Cell<f64> = const { Cell::new(0.0) };
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
    P2P.with(|p| {
        let mut p = p.borrow_mut();
        p.connected = false;
        p.kick = None;
    });
    EVENTS.with(|e| *e.borrow_mut() = None);
    if let Some(w) = WORKER.with(|w| w.borrow().clone()) {
        w.post(&[("op", "close".into())]);
    }
    // The node unpairs this key at logout; the next user of this browser gets a fresh one.
    if let Some(s) = web_sys::window().and_then(|w| w.local_storage().ok().flatten()) {
        let _ = s.remove_item(KEY);
    }
}

/// This browser's iroh endpoint id (hex), as the node lists it.
pub fn device_id() -> String {
    session::hex(&secret_key().verifying_key().to_bytes())
}

fn secret_key() -> SigningKey {
    let st = web_sys::window().and_then(|w| w.local_storage().ok().flatten());
    if let Some(hex) = st.as_ref().and_then(|s| s.get_item(KEY).ok().flatten()) {
        if let Some(b) = tessera_core::wire::parse_hash(&hex) {
            return SigningKey::from_bytes(&b);
        }
    }
    let mut b = [0u8; 32];
    b.copy_from_slice(&session::random_bytes(32));
    if let Some(s) = st {
        let _ = s.set_item(KEY, &session::hex(&b));
    }
    SigningKey::from_bytes(&b)
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
                EVENTS.with(|e| *e.borrow_mut() = None);
                if ui.sync_state.get_untracked() != "offline" {
                    ui.transport.set("http".into());
                }
            }
            gloo_timers::future::TimeoutFuture::new(wait).await;
        }
    });
}

fn field(o: &JsValue, k: &str) -> JsValue {
    Reflect::get(o, &JsValue::from_str(k)).unwrap_or(JsValue::UNDEFINED)
}

/// Routes the worker's events to the connection the page listens to.
fn on_event(d: JsValue) {
    let ev = field(&d, "ev").as_string().unwrap_or_default();
    if ev == "ready" {
        if let Some(tx) = READY.with(|r| r.borrow_mut().take()) {
            let _ = tx.send(());
        }
        return;
    }
    let gen = field(&d, "gen").as_f64().unwrap_or(-1.0);
    let event = match ev.as_str() {
        "open" => Event::Open,
        "frame" => Event::Frame(Uint8Array::new(&field(&d, "body")).to_vec()),
        "closed" => Event::Closed(field(&d, "reason").as_string().unwrap_or_default()),
        _ => return,
    };
    EVENTS.with(|e| {
        if let Some((g, tx)) = e.borrow().as_ref() {
            if *g == gen {
                let _ = tx.unbounded_send(event);
            }
        }
    });
}

/// The running sync worker, started on first use.
async fn worker() -> Result<Rc<SyncWorker>, String> {
    if let Some(w) = WORKER.with(|w| w.borrow().clone()) {
        if !w.dead.get() {
            return Ok(w);
        }
        w.worker.terminate();
        WORKER.with(|x| *x.borrow_mut() = None);
    }
    let worker = crate::search_worker::trunk_worker("sync-worker")
        .map_err(|e| format!("the sync worker cannot start: {e:?}"))?;
    let on = Closure::<dyn FnMut(MessageEvent)>::new(|e: MessageEvent| on_event(e.data()));
    worker.set_onmessage(Some(on.as_ref().unchecked_ref()));
    let dead = Rc::new(Cell::new(false));
    let d = dead.clone();
    let on_error = Closure::<dyn FnMut(web_sys::ErrorEvent)>::new(move |e: web_sys::ErrorEvent| {
        d.set(true);
        let why = format!("the sync worker failed: {}", e.message());
        EVENTS.with(|x| {
            if let Some((_, tx)) = x.borrow().as_ref() {
                let _ = tx.unbounded_send(Event::Closed(why.clone()));
            }
        });
    });
    worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    let (tx, rx) = oneshot::channel();
    READY.with(|r| *r.borrow_mut() = Some(tx));
    let timeout = gloo_timers::future::TimeoutFuture::new(15_000);
    futures::select! {
        r = rx.fuse() => if r.is_err() { worker.terminate(); return Err("the sync worker stopped".into()) },
        _ = timeout.fuse() => { worker.terminate(); return Err("the sync worker did not start within 15 s".into()) },
    }
    let w = Rc::new(SyncWorker {
        worker,
        dead,
        _on: on,
        _on_error: on_error,
    });
    WORKER.with(|x| *x.borrow_mut() = Some(w.clone()));
    Ok(w)
}

/// One connection through the worker.
struct Link {
    worker: Rc<SyncWorker>,
    gen: f64,
}

impl Link {
    fn write(&self, f: &Frame) {
        let bytes = Uint8Array::from(&wire::encode(f)[..]);
        self.worker.post(&[
            ("op", "send".into()),
            ("gen", self.gen.into()),
            ("bytes", bytes.into()),
        ]);
    }
}

fn decode(body: &[u8]) -> Result<Frame, String> {
    wire::decode_frame(body).map_err(|e| e.to_string())
}

async fn run_once(ui: Ui) -> Result<(), String> {
    // Not before the stored catalogue is loaded (see `Core::opening`), nor while HTTP sync
    // rounds run (a new device's first sync: the node would send everything twice).
    while crate::state::opening() || CORE.with(|c| c.borrow().syncing) {
        gloo_timers::future::TimeoutFuture::new(100).await;
    }
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
    let signature = session::hex(
        &key.sign(&wire::device_binding_statement(&node_hex, &user, signed_at))
            .to_bytes(),
    );
    let r = net::json(
        "POST",
        "/api/tessera/devices",
        Some(serde_json::json!({
            "endpointId": session::hex(&key.verifying_key().to_bytes()), "name": name,
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
    let node_id = r["node"]["nodeId"]
        .as_str()
        .ok_or("the node does not run peer-to-peer sync")?
        .to_owned();
    let relay = r["node"]["relayUrl"]
        .as_str()
        .ok_or("the node has no relay for browsers")?
        .to_owned();
    let worker = worker().await?;
    let gen = GEN.with(|g| {
        g.set(g.get() + 1.0);
        g.get()
    });
    let (tx, mut events) = mpsc::unbounded::<Event>();
    EVENTS.with(|e| *e.borrow_mut() = Some((gen, tx)));
    worker.post(&[
        ("op", "connect".into()),
        ("gen", gen.into()),
        ("key", session::hex(&key.to_bytes()).into()),
        ("relay", relay.into()),
        ("node", node_id.into()),
    ]);
    match events.next().await {
        Some(Event::Open) => {}
        Some(Event::Closed(why)) => return Err(why),
        Some(Event::Frame(_)) => return Err("a frame before the connection opened".into()),
        None => return Err("the sync worker went away".into()),
    }
    let link = Link { worker, gen };
    // Saying what this browser holds gets it what it lacks whole (see `SyncEnvelope::holds`).
    let holds = CORE.with(|c| c.borrow().lib.ids().map(|d| d.to_string()).collect());
    link.write(&Frame::Hello(Hello {
        version: WIRE_VERSION,
        name,
        pair_secret: None,
        addr: None,
        holds: Some(holds),
    }));
    match events.next().await {
        Some(Event::Frame(body)) => match decode(&body)? {
            Frame::Welcome(w) if w.role == (Role::Device { user: user.clone() }) => {}
            Frame::Denied { reason } => {
                return Err(format!("the node refused this device: {reason}"))
            }
            other => return Err(format!("unexpected answer {other:?}")),
        },
        Some(Event::Closed(why)) => return Err(why),
        Some(Event::Open) | None => return Err("the sync worker went away".into()),
    }
    session_loop(ui, link, events).await
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
    link: Link,
    mut events: mpsc::UnboundedReceiver<Event>,
) -> Result<(), String> {
    let (kick_tx, mut kick_rx) = mpsc::unbounded::<()>();
    P2P.with(|p| {
        let mut p = p.borrow_mut();
        p.connected = true;
        p.kick = Some(kick_tx);
    });
    let frame = |e: Option<Event>| -> Result<Frame, String> {
        match e {
            Some(Event::Frame(body)) => decode(&body),
            Some(Event::Closed(why)) => Err(why),
            Some(Event::Open) => Err("the connection opened twice".into()),
            None => Err("connection lost".into()),
        }
    };
    let mut sync = PeerSync::new();
    send_changes(ui, &mut sync, &link);
    loop {
        futures::select! {
            e = events.next() => {
                // Apply everything that has arrived, then render, save and answer once: under
                // a burst of changes the page does the expensive part once per batch.
                // At most BATCH_BYTES per batch: a first sync arrives as many frames, and the
                // newest months (sent first) are shown before the rest is applied.
                let mut batch = vec![frame(e)?];
                let mut bytes = 0usize;
                while bytes < BATCH_BYTES {
                    let Ok(more) = events.try_recv() else { break };
                    if let Event::Frame(b) = &more {
                        bytes += b.len();
                    }
                    batch.push(frame(Some(more))?);
                }
                let mut any = false;
                let t = crate::state::now_ms();
                crate::perf::add("p2p.batches", 1.0);
                crate::perf::add("p2p.bytes", bytes as f64);
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
                crate::perf::add("p2p.apply_ms", crate::state::now_ms() - t);
                if any {
                    refresh_soon(ui);
                    // IndexedDB writes in the background while the page answers.
                    crate::catalogue::save_soon();
                }
                crate::perf::publish();
                send_changes(ui, &mut sync, &link);
            }
            k = kick_rx.next() => {
                if k.is_none() { return Ok(()); }
                send_changes(ui, &mut sync, &link);
            }
        }
    }
}

/// Sends what the node does not have yet; the status says how many documents are in flight.
fn send_changes(ui: Ui, sync: &mut PeerSync, link: &Link) {
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
        return;
    }
    let peer = session::device().id;
    link.write(&Frame::Sync(SyncEnvelope::new(peer, msgs)));
}
