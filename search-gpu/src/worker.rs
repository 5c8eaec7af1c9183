//! The PWA's search worker: holds the CLIP index off the page's thread and answers queries
//! with the WebGPU kernel when the browser has a hardware GPU adapter, else with the wasm SIMD
//! one (a software adapter, such as SwiftShader, is slower than SIMD on the same cores).
//!
//! Messages (plain objects; every request carries an `id` that its reply repeats):
//! - `{op: "load", id, packs: [Uint8Array]}` → `{op: "loaded", id, keys: [string], dim,
//!   backend, adapter?, gpu_error?, bytes, ms}`;
//! - `{op: "search", id, q: Float32Array, k, allow?: Uint32Array}` (bit `i` allows row `i`) →
//!   `{op: "found", id, rows: Uint32Array, scores: Float32Array, backend, ms}`;
//! - `{op: "selftest", id, setup: JSON string}` → `{op: "selftest", id, report: JSON string}`
//!   (see `synthetic_check`);
//! - an error answers `{op: "error", id, message}`.
//!
//! Requests are handled one at a time in arrival order. The worker posts `{op: "ready"}` once
//! its module runs (messages sent before that are lost).

use futures::channel::mpsc;
use futures::StreamExt;
use js_sys::{Array, Float32Array, Object, Reflect, Uint32Array, Uint8Array};
use tessera_core::pack::Pack;
use tessera_core::search::VectorIndex;
use tessera_search_gpu::synthetic_check::{self, Setup};
use tessera_search_gpu::GpuIndex;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

#[derive(Default)]
struct State {
    cpu: Option<VectorIndex>,
    gpu: Option<GpuIndex>,
}

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

fn now() -> f64 {
    scope().performance().map(|p| p.now()).unwrap_or_default()
}

fn get(o: &JsValue, k: &str) -> JsValue {
    Reflect::get(o, &JsValue::from_str(k)).unwrap_or(JsValue::UNDEFINED)
}

fn reply(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in pairs {
        let _ = Reflect::set(&o, &JsValue::from_str(k), v);
    }
    o.into()
}

pub fn start() {
    let (tx, mut rx) = mpsc::unbounded::<JsValue>();
    let on = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
        let _ = tx.unbounded_send(e.data());
    });
    scope().set_onmessage(Some(on.as_ref().unchecked_ref()));
    on.forget();
    wasm_bindgen_futures::spawn_local(async move {
        let mut state = State::default();
        while let Some(msg) = rx.next().await {
            let id = get(&msg, "id");
            let op = get(&msg, "op").as_string().unwrap_or_default();
            let out = match state.handle(&op, &msg).await {
                Ok(mut pairs) => {
                    pairs.push(("id", id));
                    reply(&pairs)
                }
                Err(message) => reply(&[
                    ("op", "error".into()),
                    ("id", id),
                    ("message", message.into()),
                ]),
            };
            let _ = scope().post_message(&out);
        }
    });
    let _ = scope().post_message(&reply(&[("op", "ready".into())]));
}

impl State {
    fn backend(&self) -> String {
        match &self.gpu {
            Some(g) => format!("WebGPU: {}", g.adapter()),
            None => "wasm SIMD".into(),
        }
    }

    async fn handle(
        &mut self,
        op: &str,
        msg: &JsValue,
    ) -> Result<Vec<(&'static str, JsValue)>, String> {
        match op {
            "load" => {
                let t = now();
                let packs = Array::from(&get(msg, "packs"));
                let mut idx: Option<VectorIndex> = None;
                for p in packs.iter() {
                    let bytes = Uint8Array::new(&p).to_vec();
                    let pack = Pack::decode(&bytes)
                        .map_err(|e| format!("a CLIP pack does not decode: {e}"))?;
                    idx.get_or_insert_with(|| VectorIndex::new(pack.dim))
                        .add_pack(&pack);
                }
                let idx = idx.unwrap_or_default();
                self.gpu = None;
                let mut gpu_error = JsValue::UNDEFINED;
                if !idx.is_empty() {
                    match GpuIndex::new(&idx).await {
                        // A software adapter emulates the GPU on the CPU: the SIMD kernel is
                        // faster on the same cores (300k × 512 in Chromium: 8.8 ms against 68 ms
                        // on SwiftShader), so only a real GPU is used.
                        Ok(g) if g.is_software() => {
                            gpu_error = format!("{} is a software adapter", g.adapter()).into()
                        }
                        Ok(g) => self.gpu = Some(g),
                        Err(e) => gpu_error = e.to_string().into(),
                    }
                }
                let keys: Array = idx.keys.iter().map(|k| JsValue::from_str(k)).collect();
                let bytes = idx.bytes() as f64;
                let dim = idx.dim as f64;
                self.cpu = Some(idx);
                Ok(vec![
                    ("op", "loaded".into()),
                    ("keys", keys.into()),
                    ("dim", dim.into()),
                    ("backend", self.backend().into()),
                    ("gpu_error", gpu_error),
                    ("bytes", bytes.into()),
                    ("ms", (now() - t).into()),
                ])
            }
            "search" => {
                let t = now();
                let idx = self.cpu.as_ref().ok_or("no index loaded")?;
                let q = Float32Array::new(&get(msg, "q")).to_vec();
                let k = get(msg, "k").as_f64().unwrap_or(50.0) as usize;
                let allow = get(msg, "allow");
                let allow: Option<Vec<u32>> = (!allow.is_undefined() && !allow.is_null())
                    .then(|| Uint32Array::new(&allow).to_vec());
                let mut hits = None;
                if let Some(g) = &self.gpu {
                    match g.search(&q, k, allow.as_deref()).await {
                        Ok(h) => hits = Some(h),
                        Err(e) => {
                            web_sys::console::warn_1(
                                &format!("GPU search failed, using the CPU from now on: {e}")
                                    .into(),
                            );
                            self.gpu = None;
                        }
                    }
                }
                let hits = match hits {
                    Some(h) => h,
                    None => idx.search(&q, k, |i| {
                        allow
                            .as_ref()
                            .is_none_or(|a| a.get(i / 32).is_some_and(|w| w >> (i % 32) & 1 == 1))
                    }),
                };
                let rows: Vec<u32> = hits.iter().map(|h| h.0 as u32).collect();
                let scores: Vec<f32> = hits.iter().map(|h| h.1).collect();
                Ok(vec![
                    ("op", "found".into()),
                    ("rows", Uint32Array::from(rows.as_slice()).into()),
                    ("scores", Float32Array::from(scores.as_slice()).into()),
                    ("backend", self.backend().into()),
                    ("ms", (now() - t).into()),
                ])
            }
            "selftest" => {
                let setup: Setup =
                    serde_json::from_str(&get(msg, "setup").as_string().unwrap_or_default())
                        .map_err(|e| format!("bad selftest setup: {e}"))?;
                let report = synthetic_check::run(&setup, &now).await;
                let json = serde_json::to_string(&report).map_err(|e| e.to_string())?;
                Ok(vec![("op", "selftest".into()), ("report", json.into())])
            }
            other => Err(format!("unknown request {other:?}")),
        }
    }
}
