//! Start-up: the database, the stored session (else sign-up or login), background sync and
//! the outbox retries, the service worker; `?bench=N` skips all of it.

use std::rc::Rc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::catalogue::{load_docs, sync_now};
use crate::outbox::drain_outbox;
use crate::session::{self, Session};
use crate::state::{refresh, user_id, Screen, Ui, CORE};
use crate::{db, net, p2p, routes, timeline};

/// Background work while signed in: sync and retry the outbox every few seconds.
pub(crate) fn start_background(ui: Ui) {
    p2p::start(ui);
    spawn_local(async move {
        loop {
            if user_id().is_some() {
                sync_now(ui).await;
                drain_outbox(ui).await;
                // Load thumbnails that arrived by sync.
                refresh(ui);
            }
            gloo_timers::future::TimeoutFuture::new(5_000).await;
        }
    });
    if let Some(w) = web_sys::window() {
        let cb = Closure::<dyn FnMut()>::new(move || {
            spawn_local(async move {
                sync_now(ui).await;
                drain_outbox(ui).await;
            })
        });
        let _ = w.add_event_listener_with_callback("online", cb.as_ref().unchecked_ref());
        cb.forget();
    }
}

pub(crate) async fn enter_timeline(ui: Ui, s: Session) {
    CORE.with(|c| c.borrow_mut().session = Some(s));
    ui.screen.set(Screen::Timeline);
    // The page the URL names first: what the user does while the catalogue loads (opening
    // another page) must not be undone when it has loaded. An asset the URL names is opened
    // once its record is there.
    routes::restore_initial(ui);
    load_docs(ui).await;
    routes::open_pending(ui);
    crate::outbox::show_outbox(ui).await;
}

/// `?bench=N`: the scroll benchmark's synthetic library (no server).
pub(crate) fn bench_param() -> Option<usize> {
    let search = web_sys::window()?.location().search().ok()?;
    search
        .trim_start_matches('?')
        .split('&')
        .find_map(|kv| kv.strip_prefix("bench="))
        .and_then(|n| n.parse().ok())
}

pub(crate) async fn boot(ui: Ui) {
    if let Some(n) = bench_param() {
        timeline::start_bench(ui, n.min(2_000_000));
        return;
    }
    match db::open().await {
        Ok(db) => CORE.with(|c| c.borrow_mut().db = Some(Rc::new(db))),
        Err(e) => ui.error.set(Some(e)),
    }
    if let Some(s) = session::load() {
        enter_timeline(ui, s).await;
    } else {
        match net::json("GET", "/api/server/config", None).await {
            Ok(cfg) if cfg["isInitialized"] == false => ui.screen.set(Screen::SignUp),
            Ok(_) => ui.screen.set(Screen::Login),
            Err(e) => {
                ui.screen.set(Screen::Login);
                ui.error.set(Some(format!(
                    "The Tessera node is not reachable ({})",
                    e.message
                )));
            }
        }
    }
    start_background(ui);
    if let Some(w) = web_sys::window() {
        let _ = w.navigator().service_worker().register("/sw.js");
    }
}
