//! Where the page's time goes on a large library, summed since the page loaded: milliseconds
//! and counts by name, published as `window.__tesseraPerf` (with the wasm memory's size) for
//! the scale bench and for anyone looking from the devtools console.

use std::cell::RefCell;
use std::collections::BTreeMap;

use js_sys::{Object, Reflect};
use wasm_bindgen::JsCast;

thread_local! {
    static PERF: RefCell<BTreeMap<&'static str, f64>> = const { RefCell::new(BTreeMap::new()) };
}

/// Adds `v` to the figure `key`.
pub(crate) fn add(key: &'static str, v: f64) {
    PERF.with(|p| *p.borrow_mut().entry(key).or_default() += v);
}

/// Sets the figure `key` to `v`.
pub(crate) fn set(key: &'static str, v: f64) {
    PERF.with(|p| p.borrow_mut().insert(key, v));
}

/// Publishes the figures on `window.__tesseraPerf` (call after a batch of `add`s).
pub(crate) fn publish() {
    let Some(w) = web_sys::window() else { return };
    let o = Object::new();
    PERF.with(|p| {
        for (k, v) in p.borrow().iter() {
            let _ = Reflect::set(&o, &(*k).into(), &(v.round()).into());
        }
    });
    if let Ok(m) = wasm_bindgen::memory().dyn_into::<js_sys::WebAssembly::Memory>() {
        if let Ok(b) = m.buffer().dyn_into::<js_sys::ArrayBuffer>() {
            let _ = Reflect::set(
                &o,
                &"wasm_mb".into(),
                &(b.byte_length() as f64 / 1e6).into(),
            );
        }
    }
    let _ = Reflect::set(&w, &"__tesseraPerf".into(), &o);
}
