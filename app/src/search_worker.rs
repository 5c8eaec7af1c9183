//! The search worker: the CLIP index lives in a Web Worker (`search-worker`, built by trunk
//! from `search-gpu/`), which scans it with WebGPU when the browser has a hardware adapter and with
//! wasm SIMD otherwise, so a 300k-photo scan never blocks the page and the GPU code is not
//! part of the page's own module. See `search-gpu/src/worker.rs` for the messages.
//!
//! When the worker cannot start (no Worker support, the script missing), [`get`] says so once
//! and the page scans in its own thread with the same CPU kernel.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use futures::channel::oneshot;
use futures::FutureExt;
use js_sys::{Array, Float32Array, Object, Reflect, Uint32Array, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{Blob, BlobPropertyBag, MessageEvent, Url, Worker};

type Reply = Result<JsValue, String>;
type Pending = Rc<RefCell<HashMap<u32, oneshot::Sender<Reply>>>>;
type OnMessage = Closure<dyn FnMut(MessageEvent)>;
type OnError = Closure<dyn FnMut(web_sys::ErrorEvent)>;

/// What the worker holds.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The pack hashes it was built from (sorted).
    pub hashes: Vec<String>,
    /// Asset id of each row.
    pub keys: Rc<Vec<String>>,
}

pub struct SearchWorker {
    worker: Worker,
    pending: Pending,
    next: Cell<u32>,
    loaded: RefCell<Option<Loaded>>,
    /// Set when the worker failed (out of memory, a crash): the next search starts another.
    dead: Rc<Cell<bool>>,
    _on: OnMessage,
    _on_error: OnError,
}

thread_local! {
    static WORKER: RefCell<Option<Rc<SearchWorker>>> = const { RefCell::new(None) };
    static FAILED: Cell<bool> = const { Cell::new(false) };
}

fn get_field(o: &JsValue, k: &str) -> JsValue {
    Reflect::get(o, &JsValue::from_str(k)).unwrap_or(JsValue::UNDEFINED)
}

/// A classic Web Worker running trunk's no-modules build of the worker crate `name`
/// (`dist/<name>.js` + `<name>_bg.wasm`; trunk never hashes workers' names). Shared by the
/// search worker and the sync worker (`p2p.rs`).
pub(crate) fn trunk_worker(name: &str) -> Result<Worker, JsValue> {
    let origin = web_sys::window().ok_or("no window")?.location().origin()?;
    let src =
        format!(r#"importScripts("{origin}/{name}.js"); wasm_bindgen("{origin}/{name}_bg.wasm");"#);
    let opts = BlobPropertyBag::new();
    opts.set_type("text/javascript");
    let blob = Blob::new_with_str_sequence_and_options(&Array::of1(&src.into()), &opts)?;
    let url = Url::create_object_url_with_blob(&blob)?;
    Worker::new(&url)
}

fn spawn() -> Result<(Worker, Pending, OnMessage), JsValue> {
    let worker = trunk_worker("search-worker")?;
    let pending: Pending = Rc::default();
    let p = pending.clone();
    let on = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
        let d = e.data();
        let op = get_field(&d, "op").as_string().unwrap_or_default();
        // "ready" answers request 0.
        let id = get_field(&d, "id").as_f64().unwrap_or(0.0) as u32;
        if let Some(tx) = p.borrow_mut().remove(&id) {
            let _ = tx.send(if op == "error" {
                Err(get_field(&d, "message").as_string().unwrap_or_default())
            } else {
                Ok(d)
            });
        }
    });
    worker.set_onmessage(Some(on.as_ref().unchecked_ref()));
    Ok((worker, pending, on))
}

/// The running worker, started on first use (None if it cannot start here).
pub async fn get() -> Option<Rc<SearchWorker>> {
    if let Some(w) = WORKER.with(|w| w.borrow().clone()) {
        if !w.dead.get() {
            return Some(w);
        }
        w.worker.terminate();
        WORKER.with(|x| *x.borrow_mut() = None);
    }
    if FAILED.with(Cell::get) {
        return None;
    }
    let fail = |why: String| {
        web_sys::console::warn_1(
            &format!("search worker unavailable, searching on the page: {why}").into(),
        );
        FAILED.with(|f| f.set(true));
        None
    };
    let (worker, pending, on) = match spawn() {
        Ok(x) => x,
        Err(e) => return fail(format!("{e:?}")),
    };
    // A failing worker answers every pending request with the error (no search hangs).
    let dead = Rc::new(Cell::new(false));
    let (p, d) = (pending.clone(), dead.clone());
    let on_error = Closure::<dyn FnMut(web_sys::ErrorEvent)>::new(move |e: web_sys::ErrorEvent| {
        d.set(true);
        let why = format!("the search worker failed: {}", e.message());
        web_sys::console::warn_1(&why.clone().into());
        for (_, tx) in p.borrow_mut().drain() {
            let _ = tx.send(Err(why.clone()));
        }
    });
    worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    let (tx, rx) = oneshot::channel();
    pending.borrow_mut().insert(0, tx);
    let timeout = gloo_timers::future::TimeoutFuture::new(15_000);
    futures::select! {
        r = rx.fuse() => match r {
            Ok(Ok(_)) => {}
            Ok(Err(why)) => { worker.terminate(); return fail(why) }
            Err(_) => { worker.terminate(); return fail("it stopped".into()) }
        },
        _ = timeout.fuse() => { worker.terminate(); return fail("it did not start within 15 s".into()) },
    }
    let w = Rc::new(SearchWorker {
        worker,
        pending,
        next: Cell::new(1),
        loaded: RefCell::new(None),
        dead,
        _on: on,
        _on_error: on_error,
    });
    // A worker that dies (out of memory, a crash) is replaced on the next search.
    WORKER.with(|x| *x.borrow_mut() = Some(w.clone()));
    Some(w)
}

impl SearchWorker {
    async fn request(&self, msg: Object, transfer: &Array) -> Reply {
        let id = self.next.get();
        self.next.set(id + 1);
        let _ = Reflect::set(&msg, &"id".into(), &f64::from(id).into());
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        if let Err(e) = self.worker.post_message_with_transfer(&msg, transfer) {
            self.pending.borrow_mut().remove(&id);
            return Err(format!("{e:?}"));
        }
        rx.await
            .map_err(|_| "the search worker stopped".to_owned())?
    }

    /// What the worker holds now.
    pub fn loaded(&self) -> Option<Loaded> {
        self.loaded.borrow().clone()
    }

    /// Gives the worker these packs (their bytes are moved, not copied).
    pub async fn load(&self, hashes: Vec<String>, packs: Vec<Vec<u8>>) -> Result<Loaded, String> {
        let arr = Array::new();
        let transfer = Array::new();
        for p in &packs {
            let u = Uint8Array::from(p.as_slice());
            transfer.push(&u.buffer());
            arr.push(&u);
        }
        drop(packs);
        let msg = Object::new();
        let _ = Reflect::set(&msg, &"op".into(), &"load".into());
        let _ = Reflect::set(&msg, &"packs".into(), &arr);
        let r = self.request(msg, &transfer).await?;
        let keys: Vec<String> = Array::from(&get_field(&r, "keys"))
            .iter()
            .filter_map(|k| k.as_string())
            .collect();
        if let Some(e) = get_field(&r, "gpu_error").as_string() {
            web_sys::console::info_1(&format!("search: no WebGPU ({e}); wasm SIMD").into());
        }
        let l = Loaded {
            hashes,
            keys: Rc::new(keys),
        };
        *self.loaded.borrow_mut() = Some(l.clone());
        Ok(l)
    }

    /// The `k` best rows for `q` among those `allow` accepts, and the backend that ran it.
    pub async fn search(
        &self,
        q: &[f32],
        k: usize,
        allow: impl Fn(usize) -> bool,
    ) -> Result<(Vec<(usize, f32)>, String), String> {
        let n = self.loaded().map(|l| l.keys.len()).unwrap_or(0);
        let mut bits = vec![0u32; n.div_ceil(32)];
        for i in (0..n).filter(|&i| allow(i)) {
            bits[i / 32] |= 1 << (i % 32);
        }
        let qa = Float32Array::from(q);
        let ba = Uint32Array::from(bits.as_slice());
        let msg = Object::new();
        let _ = Reflect::set(&msg, &"op".into(), &"search".into());
        let _ = Reflect::set(&msg, &"q".into(), &qa);
        let _ = Reflect::set(&msg, &"k".into(), &(k as f64).into());
        let _ = Reflect::set(&msg, &"allow".into(), &ba);
        let r = self
            .request(msg, &Array::of2(&qa.buffer(), &ba.buffer()))
            .await?;
        let rows = Uint32Array::new(&get_field(&r, "rows")).to_vec();
        let scores = Float32Array::new(&get_field(&r, "scores")).to_vec();
        let backend = get_field(&r, "backend").as_string().unwrap_or_default();
        Ok((
            rows.into_iter().map(|r| r as usize).zip(scores).collect(),
            backend,
        ))
    }
}
