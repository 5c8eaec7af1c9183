//! The worker's side of the page ↔ worker messages. The page keeps the catalogue and the
//! automerge sync state; the worker is the transport: one iroh connection to the node over the
//! node's relay, carrying `tessera/docs/1` frames.
//!
//! Page → worker (plain objects):
//! - `{op: "connect", gen, key: hex secret key, relay: url, node: hex endpoint id}`: connect
//!   (closing the previous connection) and open the frame stream;
//! - `{op: "send", gen, bytes: Uint8Array}`: one encoded frame (length prefix included), sent in
//!   order;
//! - `{op: "close"}`: close the connection and the endpoint (sign-out).
//!
//! Worker → page: `{ev: "ready"}` once the module runs; `{ev: "open", gen}`;
//! `{ev: "frame", gen, body: Uint8Array}` for every frame received (the body without its length
//! prefix, the buffer transferred); `{ev: "closed", gen, reason}` when the connection or a
//! `connect` fails or ends. `gen` is the page's connection number: events of an older one are
//! ignored there.

use std::cell::RefCell;

use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use iroh::endpoint::{presets, Connection, RecvStream, SendStream};
use iroh::{Endpoint, EndpointAddr, EndpointId, RelayMode, RelayUrl, SecretKey};
use js_sys::{Array, Object, Reflect, Uint8Array};
use tessera_core::wire::{self, ALPN_DOCS};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::spawn_local;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

struct Link {
    gen: f64,
    out: mpsc::UnboundedSender<Vec<u8>>,
    conn: Connection,
}

#[derive(Default)]
struct State {
    endpoint: Option<(Endpoint, [u8; 32], RelayUrl)>,
    link: Option<Link>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::default();
}

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

fn get(o: &JsValue, k: &str) -> JsValue {
    Reflect::get(o, &JsValue::from_str(k)).unwrap_or(JsValue::UNDEFINED)
}

fn object(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in pairs {
        let _ = Reflect::set(&o, &JsValue::from_str(k), v);
    }
    o.into()
}

fn post(pairs: &[(&str, JsValue)]) {
    let _ = scope().post_message(&object(pairs));
}

fn closed(gen: f64, reason: &str) {
    post(&[
        ("ev", "closed".into()),
        ("gen", gen.into()),
        ("reason", reason.into()),
    ]);
}

pub fn start() {
    let on = Closure::<dyn FnMut(MessageEvent)>::new(|e: MessageEvent| handle(e.data()));
    scope().set_onmessage(Some(on.as_ref().unchecked_ref()));
    on.forget();
    post(&[("ev", "ready".into())]);
}

fn handle(msg: JsValue) {
    let op = get(&msg, "op").as_string().unwrap_or_default();
    let gen = get(&msg, "gen").as_f64().unwrap_or(0.0);
    match op.as_str() {
        "connect" => {
            let field = |k| get(&msg, k).as_string().unwrap_or_default();
            let (key, relay, node) = (field("key"), field("relay"), field("node"));
            spawn_local(async move {
                if let Err(e) = connect(gen, &key, &relay, &node).await {
                    closed(gen, &e);
                }
            });
        }
        "send" => {
            let bytes = Uint8Array::new(&get(&msg, "bytes")).to_vec();
            STATE.with(|s| {
                if let Some(l) = s.borrow().link.as_ref().filter(|l| l.gen == gen) {
                    let _ = l.out.unbounded_send(bytes);
                }
            });
        }
        "close" => {
            let (link, ep) = STATE.with(|s| {
                let mut s = s.borrow_mut();
                (s.link.take(), s.endpoint.take())
            });
            if let Some(l) = link {
                l.conn.close(0u32.into(), b"signed out");
            }
            if let Some((ep, _, _)) = ep {
                spawn_local(async move { ep.close().await });
            }
        }
        other => web_sys::console::warn_1(&format!("sync worker: unknown op {other:?}").into()),
    }
}

/// The node notices a closed tab, and the page a vanished node, within seconds.
fn transport() -> iroh::endpoint::QuicTransportConfig {
    let mut b = iroh::endpoint::QuicTransportConfig::builder()
        .keep_alive_interval(std::time::Duration::from_secs(2));
    if let Ok(t) = std::time::Duration::from_secs(8).try_into() {
        b = b.max_idle_timeout(Some(t));
    }
    b.build()
}

/// The endpoint for this key and relay (kept between connections).
async fn endpoint(key: [u8; 32], relay: &RelayUrl) -> Result<Endpoint, String> {
    let current = STATE.with(|s| s.borrow().endpoint.clone());
    if let Some((ep, k, url)) = current {
        if k == key && &url == relay && !ep.is_closed() {
            return Ok(ep);
        }
        ep.close().await;
    }
    let ep = Endpoint::builder(presets::Minimal)
        .secret_key(SecretKey::from_bytes(&key))
        .relay_mode(RelayMode::custom([relay.clone()]))
        .transport_config(transport())
        .bind()
        .await
        .map_err(|e| format!("iroh endpoint: {e}"))?;
    STATE.with(|s| s.borrow_mut().endpoint = Some((ep.clone(), key, relay.clone())));
    Ok(ep)
}

async fn connect(gen: f64, key: &str, relay: &str, node: &str) -> Result<(), String> {
    if let Some(old) = STATE.with(|s| s.borrow_mut().link.take()) {
        old.conn.close(0u32.into(), b"reconnecting");
    }
    let key = wire::parse_hash(key).ok_or("the device key is not 32 hex bytes")?;
    let relay: RelayUrl = relay.parse().map_err(|e| format!("relay url: {e}"))?;
    let node: EndpointId = node.parse().map_err(|e| format!("node id: {e}"))?;
    let ep = endpoint(key, &relay).await?;
    let conn = ep
        .connect(EndpointAddr::new(node).with_relay_url(relay), ALPN_DOCS)
        .await
        .map_err(|e| format!("connecting to the node over iroh: {e}"))?;
    let (send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let (out, rx) = mpsc::unbounded();
    STATE.with(|s| {
        s.borrow_mut().link = Some(Link {
            gen,
            out,
            conn: conn.clone(),
        })
    });
    post(&[("ev", "open".into()), ("gen", gen.into())]);
    spawn_local(writer(gen, send, rx));
    spawn_local(async move {
        let reason = reader(gen, recv, &conn).await;
        conn.close(0u32.into(), b"closed");
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            if s.link.as_ref().is_some_and(|l| l.gen == gen) {
                s.link = None;
            }
        });
        closed(gen, &reason);
    });
    Ok(())
}

/// Sends the page's frames in order.
async fn writer(gen: f64, mut send: SendStream, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(bytes) = rx.next().await {
        if let Err(e) = send.write_all(&bytes).await {
            closed(gen, &format!("sending: {e}"));
            return;
        }
    }
    let _ = send.finish();
}

/// Posts every frame that arrives; returns why the stream ended.
async fn reader(gen: f64, mut recv: RecvStream, conn: &Connection) -> String {
    loop {
        let frame = futures::select! {
            f = read(&mut recv).fuse() => f,
            _ = conn.closed().fuse() => return "connection closed".into(),
        };
        match frame {
            Ok(Some(body)) => {
                let arr = Uint8Array::from(&body[..]);
                let msg = object(&[
                    ("ev", "frame".into()),
                    ("gen", gen.into()),
                    ("body", arr.clone().into()),
                ]);
                let _ = scope().post_message_with_transfer(&msg, &Array::of1(&arr.buffer()));
            }
            Ok(None) => return "the node closed the connection".into(),
            Err(e) => return e,
        }
    }
}

/// One frame's body (its length prefix checked against the wire's limit).
async fn read(recv: &mut RecvStream) -> Result<Option<Vec<u8>>, String> {
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
    Ok(Some(body))
}
