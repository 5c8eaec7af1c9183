//! Tessera's PWA (leptos CSR). The catalogue lives in IndexedDB as automerge documents and is
//! synced with the node by `tessera-core`'s protocol; originals wait in an IndexedDB outbox
//! until the node acknowledges them durably stored.
//!
//! Architecture invariant: the UI renders from the local `Library` only, never from HTTP
//! responses directly, so it works the same offline.

mod db;
mod net;
mod p2p;
mod session;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use base64::Engine;
use leptos::prelude::*;
use leptos::task::spawn_local;
use rexie::Rexie;
use tessera_core::ml::{MlProgress, PersonSummary};
use tessera_core::{AssetRecord, DocId, Library, PeerSync, SyncEnvelope};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use session::Session;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Screen {
    Loading,
    SignUp,
    Login,
    Timeline,
}

#[derive(Clone, PartialEq, Debug)]
struct Month {
    month: String,
    count: u64,
    assets: Vec<AssetRecord>,
}

#[derive(Clone, PartialEq, Debug)]
struct Upload {
    key: String,
    name: String,
    progress: f64,
    state: String,
}

/// The reactive UI state (all `Copy` handles).
#[derive(Clone, Copy)]
struct Ui {
    screen: RwSignal<Screen>,
    months: RwSignal<Vec<Month>>,
    sync_state: RwSignal<String>,
    /// How the catalogue syncs right now: `iroh` (live) or `http` (rounds every few seconds).
    transport: RwSignal<String>,
    /// The devices & nodes panel is open.
    household: RwSignal<bool>,
    outbox: RwSignal<u32>,
    uploads: RwSignal<Vec<Upload>>,
    viewer: RwSignal<Option<AssetRecord>>,
    error: RwSignal<Option<String>>,
    thumbs: RwSignal<HashMap<String, String>>,
    /// What the ML node published: progress and people (from the local catalogue).
    ml: RwSignal<(MlProgress, Vec<PersonSummary>)>,
}

/// Non-reactive state: the catalogue and the database.
struct Core {
    db: Option<Rc<Rexie>>,
    lib: Library,
    sync: PeerSync,
    session: Option<Session>,
    syncing: bool,
    draining: bool,
}

thread_local! {
    static OBSERVER: RefCell<Option<web_sys::IntersectionObserver>> = const { RefCell::new(None) };
    static CORE: RefCell<Core> = RefCell::new(Core {
        db: None,
        lib: Library::new(&session::device().actor),
        sync: PeerSync::new(),
        session: None,
        syncing: false,
        draining: false,
    });
}

fn log(msg: &str) {
    web_sys::console::log_1(&msg.into());
}

fn db() -> Option<Rc<Rexie>> {
    CORE.with(|c| c.borrow().db.clone())
}

fn user_id() -> Option<String> {
    CORE.with(|c| c.borrow().session.as_ref().map(|s| s.user_id.clone()))
}

pub fn start() {
    console_error_panic_hook();
    leptos::mount::mount_to_body(App);
}

fn console_error_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&info.to_string().into())
    }));
}

/// Rebuilds the timeline view from the local catalogue.
fn refresh(ui: Ui) {
    let Some(user) = user_id() else { return };
    let (months, ml) = CORE.with(|c| {
        let c = c.borrow();
        let ml = (
            c.lib.ml_progress(&user).unwrap_or_default(),
            c.lib.people_with_faces(&user).unwrap_or_default(),
        );
        let shards = c.lib.shards(&user).unwrap_or_default();
        let months = shards
            .into_iter()
            .map(|s| {
                let assets = DocId::shard(&user, &s.month)
                    .ok()
                    .and_then(|id| c.lib.assets(&id).ok())
                    .unwrap_or_default();
                Month {
                    month: s.month,
                    count: s.count,
                    assets,
                }
            })
            .filter(|m| !m.assets.is_empty())
            .collect::<Vec<_>>();
        (months, ml)
    });
    ui.months.set(months);
    if ui.ml.get_untracked() != ml {
        ui.ml.set(ml);
    }
}

/// Loads the catalogue documents from IndexedDB.
async fn load_docs(ui: Ui) {
    let Some(db) = db() else { return };
    match db::all(&db, db::DOCS).await {
        Ok(items) => CORE.with(|c| {
            let mut c = c.borrow_mut();
            for (k, v) in items {
                if let (Ok(id), Some(bytes)) = (DocId::parse(&k), db::value_bytes(&v)) {
                    if let Err(e) = c.lib.load(id, &bytes) {
                        log(&format!("cannot load document {k}: {e}"));
                    }
                }
            }
        }),
        Err(e) => ui.error.set(Some(e)),
    }
    refresh(ui);
}

/// Saves documents changed since the last save to IndexedDB.
async fn save_docs() {
    let Some(db) = db() else { return };
    let dirty: Vec<(String, Vec<u8>)> = CORE.with(|c| {
        let mut c = c.borrow_mut();
        let ids = c.lib.take_dirty();
        ids.into_iter()
            .filter_map(|id| Some((id.to_string(), c.lib.save(&id)?)))
            .collect()
    });
    for (k, bytes) in dirty {
        if let Err(e) = db::put(&db, db::DOCS, Some(&k), &db::bytes_value(&bytes)).await {
            log(&format!("cannot save document {k}: {e}"));
        }
    }
}

/// Sync rounds with the node until neither side has anything to say.
async fn sync_now(ui: Ui) {
    let Some(user) = user_id() else { return };
    if p2p::connected() {
        // Live over iroh: changes are pushed as they happen.
        p2p::kick();
        return;
    }
    if CORE.with(|c| std::mem::replace(&mut c.borrow_mut().syncing, true)) {
        return;
    }
    ui.sync_state.set("syncing".into());
    let peer = session::device().id;
    let mut state = "online".to_owned();
    for _round in 0..20 {
        let up = CORE.with(|c| {
            let mut c = c.borrow_mut();
            let c = &mut *c;
            let ids: Vec<DocId> = c.lib.ids().cloned().collect();
            SyncEnvelope::new(peer.clone(), c.sync.generate(&mut c.lib, &ids))
        });
        let quiet_up = up.docs.is_empty();
        match net::post_bytes("/api/tessera/sync", &up.encode()).await {
            Ok(bytes) => {
                let down = match SyncEnvelope::decode(&bytes) {
                    Ok(d) => d,
                    Err(e) => {
                        state = "offline".into();
                        ui.error.set(Some(format!("bad sync answer: {e}")));
                        break;
                    }
                };
                let quiet_down = down.docs.is_empty();
                let res = CORE.with(|c| {
                    let mut c = c.borrow_mut();
                    let c = &mut *c;
                    c.sync.receive(&mut c.lib, down.docs, |d| d.user() == user)
                });
                if let Err(e) = res {
                    ui.error.set(Some(format!("sync: {e}")));
                }
                if quiet_up && quiet_down {
                    break;
                }
            }
            Err(e) => {
                if e.status == 401 {
                    session::clear();
                    ui.screen.set(Screen::Login);
                }
                // A lost connection may have lost the node's side of the sync state.
                CORE.with(|c| c.borrow_mut().sync.reset());
                state = "offline".into();
                break;
            }
        }
    }
    save_docs().await;
    refresh(ui);
    CORE.with(|c| c.borrow_mut().syncing = false);
    ui.sync_state.set(state);
}

async fn update_outbox_count(ui: Ui) {
    if let Some(db) = db() {
        if let Ok(n) = db::count(&db, db::OUTBOX).await {
            ui.outbox.set(n);
        }
    }
}

fn set_upload(ui: Ui, key: &str, f: impl FnOnce(&mut Upload)) {
    ui.uploads.update(|v| {
        if let Some(u) = v.iter_mut().find(|u| u.key == key) {
            f(u);
        }
    });
}

/// Puts dropped/picked files into the outbox, then uploads.
async fn enqueue_files(ui: Ui, files: Vec<web_sys::File>) {
    let Some(db) = db() else { return };
    for f in files {
        let key = session::hex(&session::random_bytes(12));
        if let Err(e) = db::put(&db, db::OUTBOX, None, &db::outbox_entry(&key, &f)).await {
            ui.error
                .set(Some(format!("cannot queue {}: {e}", f.name())));
            continue;
        }
        ui.uploads.update(|v| {
            v.push(Upload {
                key,
                name: f.name(),
                progress: 0.0,
                state: "waiting".into(),
            })
        });
    }
    update_outbox_count(ui).await;
    drain_outbox(ui).await;
}

/// Uploads everything in the outbox; an entry leaves it only when the node acknowledged it
/// (201 created / 200 duplicate) or refused it for good (4xx: it would never succeed).
async fn drain_outbox(ui: Ui) {
    let Some(db) = db() else { return };
    if user_id().is_none() || CORE.with(|c| std::mem::replace(&mut c.borrow_mut().draining, true)) {
        return;
    }
    let device = session::device().id;
    let entries = db::all(&db, db::OUTBOX).await.unwrap_or_default();
    let mut uploaded = 0;
    for (key, v) in entries {
        let (Some(name), Some(blob)) = (db::field_str(&v, "name"), db::field_blob(&v, "blob"))
        else {
            let _ = db::delete(&db, db::OUTBOX, &key).await;
            continue;
        };
        let size = db::field_f64(&v, "size").unwrap_or(0.0);
        let modified = db::field_f64(&v, "lastModified").unwrap_or_else(js_sys::Date::now);
        if !ui
            .uploads
            .with_untracked(|u| u.iter().any(|u| u.key == key))
        {
            ui.uploads.update(|u| {
                u.push(Upload {
                    key: key.clone(),
                    name: name.clone(),
                    progress: 0.0,
                    state: "waiting".into(),
                })
            });
        }
        set_upload(ui, &key, |u| u.state = "uploading".into());
        let Ok(form) = web_sys::FormData::new() else {
            break;
        };
        let iso = js_sys::Date::new(&JsValue::from_f64(modified))
            .to_iso_string()
            .as_string()
            .unwrap_or_default();
        let _ = form.append_with_blob_and_filename("assetData", &blob, &name);
        let _ = form.append_with_str("deviceAssetId", &format!("{name}-{size}-{modified}"));
        let _ = form.append_with_str("deviceId", &device);
        let _ = form.append_with_str("fileCreatedAt", &iso);
        let _ = form.append_with_str("fileModifiedAt", &iso);
        let _ = form.append_with_str("isFavorite", "false");
        let k2 = key.clone();
        match net::upload(&form, move |p| set_upload(ui, &k2, |u| u.progress = p)).await {
            Ok((200 | 201, body)) => {
                let dup = body.contains("duplicate");
                let _ = db::delete(&db, db::OUTBOX, &key).await;
                set_upload(ui, &key, |u| {
                    u.progress = 1.0;
                    u.state = if dup {
                        "already in the library".into()
                    } else {
                        "uploaded".into()
                    };
                });
                uploaded += 1;
            }
            Ok((status, body))
                if (400..500).contains(&status)
                    && status != 401
                    && status != 408
                    && status != 429 =>
            {
                let _ = db::delete(&db, db::OUTBOX, &key).await;
                let msg = net::error_message(status, &body);
                set_upload(ui, &key, |u| u.state = format!("refused: {msg}"));
            }
            Ok((status, body)) => {
                set_upload(ui, &key, |u| {
                    u.state = format!("will retry: {}", net::error_message(status, &body))
                });
                break;
            }
            Err(e) => {
                set_upload(ui, &key, |u| {
                    u.state = "waiting for the node (offline)".into()
                });
                ui.sync_state.set(if e.is_offline() {
                    "offline".into()
                } else {
                    e.message
                });
                break;
            }
        }
        update_outbox_count(ui).await;
    }
    update_outbox_count(ui).await;
    CORE.with(|c| c.borrow_mut().draining = false);
    if uploaded > 0 {
        sync_now(ui).await;
    }
}

/// Marks an asset favorite (or not) in the local catalogue; the change reaches the node and the
/// other devices by sync, and works offline like any other edit.
fn toggle_favorite(ui: Ui, rec: &AssetRecord) {
    let Some(user) = user_id() else { return };
    let month = rec.month();
    let want = !rec.favorite.unwrap_or(false);
    let res = CORE.with(|c| {
        c.borrow_mut()
            .lib
            .update_asset(&user, &month, &rec.id, |r| r.favorite = Some(want))
    });
    match res {
        Ok(true) => {
            let mut updated = rec.clone();
            updated.favorite = Some(want);
            ui.viewer.set(Some(updated));
            refresh(ui);
            spawn_local(async move {
                save_docs().await;
                if !p2p::kick() {
                    sync_now(ui).await;
                }
            });
        }
        Ok(false) => ui
            .error
            .set(Some("This photo is not in the local catalogue yet".into())),
        Err(e) => ui.error.set(Some(format!("cannot change favorite: {e}"))),
    }
}

/// Background work while signed in: sync and retry the outbox every few seconds.
fn start_background(ui: Ui) {
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

async fn enter_timeline(ui: Ui, s: Session) {
    CORE.with(|c| c.borrow_mut().session = Some(s));
    ui.screen.set(Screen::Timeline);
    load_docs(ui).await;
    update_outbox_count(ui).await;
}

async fn boot(ui: Ui) {
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

async fn login(ui: Ui, email: String, password: String) {
    match net::json(
        "POST",
        "/api/auth/login",
        Some(serde_json::json!({"email": email, "password": password})),
    )
    .await
    {
        Ok(r) => {
            let s = Session {
                user_id: r["userId"].as_str().unwrap_or_default().to_owned(),
                email: r["userEmail"].as_str().unwrap_or_default().to_owned(),
                name: r["name"].as_str().unwrap_or_default().to_owned(),
                token: r["accessToken"].as_str().unwrap_or_default().to_owned(),
            };
            session::save(&s);
            ui.error.set(None);
            enter_timeline(ui, s).await;
            sync_now(ui).await;
            drain_outbox(ui).await;
        }
        Err(e) => ui.error.set(Some(e.message)),
    }
}

async fn sign_up(ui: Ui, email: String, password: String, name: String) {
    let body = serde_json::json!({"email": email, "password": password, "name": name});
    match net::json("POST", "/api/auth/admin-sign-up", Some(body)).await {
        Ok(_) => login(ui, email, password).await,
        Err(e) => ui.error.set(Some(e.message)),
    }
}

/// A thumbhash as a data: URL (drawn on a canvas), the placeholder shown first.
fn thumbhash_url(hash: Option<&str>) -> String {
    let fallback =
        "data:image/gif;base64,R0lGODlhAQABAIAAAMLCwgAAACH5BAAAAAAALAAAAAABAAEAAAICRAEAOw=="
            .to_owned();
    let Some(bytes) = hash.and_then(|h| base64::engine::general_purpose::STANDARD.decode(h).ok())
    else {
        return fallback;
    };
    let Ok((w, h, rgba)) = thumbhash::thumb_hash_to_rgba(&bytes) else {
        return fallback;
    };
    let draw = || -> Option<String> {
        let doc = web_sys::window()?.document()?;
        let canvas: web_sys::HtmlCanvasElement =
            doc.create_element("canvas").ok()?.dyn_into().ok()?;
        canvas.set_width(w as u32);
        canvas.set_height(h as u32);
        let ctx: web_sys::CanvasRenderingContext2d =
            canvas.get_context("2d").ok()??.dyn_into().ok()?;
        let img = web_sys::ImageData::new_with_u8_clamped_array_and_sh(
            wasm_bindgen::Clamped(&rgba),
            w as u32,
            h as u32,
        )
        .ok()?;
        ctx.put_image_data(&img, 0.0, 0.0).ok()?;
        canvas.to_data_url().ok()
    };
    draw().unwrap_or(fallback)
}

/// The thumbnail as a blob: URL: from the IndexedDB cache, else fetched and cached.
async fn load_thumb(ui: Ui, id: String) {
    if ui.thumbs.with_untracked(|t| t.contains_key(&id)) {
        return;
    }
    let Some(db) = db() else { return };
    let blob = match db::get(&db, db::THUMBS, &id)
        .await
        .ok()
        .flatten()
        .and_then(|v| v.dyn_into::<web_sys::Blob>().ok())
    {
        Some(b) => b,
        None => match net::get_blob(&format!("/api/assets/{id}/thumbnail?size=thumbnail")).await {
            Ok(b) => {
                let _ = db::put(&db, db::THUMBS, Some(&id), &b).await;
                b
            }
            Err(_) => return,
        },
    };
    if let Ok(url) = web_sys::Url::create_object_url_with_blob(&blob) {
        ui.thumbs.update(|t| {
            t.insert(id, url);
        });
    }
}

/// Loads a tile's thumbnail when it comes near the viewport (400 px ahead), once.
fn observe_tile(ui: Ui, el: &web_sys::Element) {
    OBSERVER.with(|o| {
        let mut o = o.borrow_mut();
        if o.is_none() {
            let cb = Closure::<dyn FnMut(js_sys::Array, web_sys::IntersectionObserver)>::new(
                move |entries: js_sys::Array, obs: web_sys::IntersectionObserver| {
                    for e in entries.iter() {
                        let Ok(e) = e.dyn_into::<web_sys::IntersectionObserverEntry>() else {
                            continue;
                        };
                        if !e.is_intersecting() {
                            continue;
                        }
                        let target = e.target();
                        obs.unobserve(&target);
                        if let Some(id) = target.get_attribute("data-id") {
                            spawn_local(load_thumb(ui, id));
                        }
                    }
                },
            );
            let init = web_sys::IntersectionObserverInit::new();
            init.set_root_margin("400px");
            *o =
                web_sys::IntersectionObserver::new_with_options(cb.as_ref().unchecked_ref(), &init)
                    .ok();
            cb.forget();
        }
        match o.as_ref() {
            Some(obs) => obs.observe(el),
            // No IntersectionObserver: load right away.
            None => {
                if let Some(id) = el.get_attribute("data-id") {
                    spawn_local(load_thumb(ui, id));
                }
            }
        }
    });
}

fn month_title(m: &Month) -> String {
    const NAMES: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let n = m.count;
    let photos = if n == 1 {
        "1 photo".to_owned()
    } else {
        format!("{n} photos")
    };
    if m.month == "undated" {
        return format!("Undated · {photos}");
    }
    let mi: usize = m.month.get(5..7).and_then(|x| x.parse().ok()).unwrap_or(1);
    format!(
        "{} {} · {photos}",
        NAMES[(mi.clamp(1, 12)) - 1],
        &m.month[..4]
    )
}

fn describe(r: &AssetRecord) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut push = |k: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            out.push((k.to_owned(), v));
        }
    };
    push("File", r.filename.clone());
    push("Taken", r.taken_at.as_ref().map(|t| t.replace('T', " ")));
    push(
        "Camera",
        match (&r.make, &r.model) {
            (Some(a), Some(b)) if b.starts_with(a.as_str()) => Some(b.clone()),
            (Some(a), Some(b)) => Some(format!("{a} {b}")),
            (a, b) => a.clone().or(b.clone()),
        },
    );
    push("Lens", r.lens.clone());
    let mut exp = Vec::new();
    if let Some(t) = r.exposure_time {
        exp.push(if t < 1.0 && t > 0.0 {
            format!("1/{:.0} s", 1.0 / t)
        } else {
            format!("{t} s")
        });
    }
    if let Some(f) = r.f_number {
        exp.push(format!("ƒ/{f:.1}"));
    }
    if let Some(i) = r.iso {
        exp.push(format!("ISO {i}"));
    }
    if let Some(f) = r.focal_length {
        exp.push(format!("{f:.1} mm"));
    }
    push("Exposure", (!exp.is_empty()).then(|| exp.join("  ")));
    push(
        "Size",
        match (r.width, r.height, r.size) {
            (Some(w), Some(h), Some(s)) => Some(format!("{w} × {h} · {:.1} MB", s as f64 / 1e6)),
            (_, _, Some(s)) => Some(format!("{:.1} MB", s as f64 / 1e6)),
            _ => None,
        },
    );
    push(
        "Location",
        match (r.lat, r.lon) {
            (Some(a), Some(b)) => Some(format!("{a:.5}, {b:.5}")),
            _ => None,
        },
    );
    push("Problem", r.error.clone());
    out
}

#[component]
fn App() -> impl IntoView {
    let ui = Ui {
        screen: RwSignal::new(Screen::Loading),
        months: RwSignal::new(Vec::new()),
        sync_state: RwSignal::new("offline".into()),
        transport: RwSignal::new("http".into()),
        household: RwSignal::new(false),
        outbox: RwSignal::new(0),
        uploads: RwSignal::new(Vec::new()),
        viewer: RwSignal::new(None),
        error: RwSignal::new(None),
        thumbs: RwSignal::new(HashMap::new()),
        ml: RwSignal::new((MlProgress::default(), Vec::new())),
    };
    spawn_local(boot(ui));
    let ui2 = ui;
    let _ = window_event_listener(leptos::ev::keydown, move |ev: web_sys::KeyboardEvent| {
        let Some(cur) = ui2.viewer.get_untracked() else {
            return;
        };
        let all: Vec<AssetRecord> = ui2
            .months
            .with_untracked(|m| m.iter().flat_map(|m| m.assets.clone()).collect());
        let pos = all.iter().position(|a| a.id == cur.id).unwrap_or(0);
        match ev.key().as_str() {
            "Escape" => ui2.viewer.set(None),
            "ArrowRight" if pos + 1 < all.len() => ui2.viewer.set(Some(all[pos + 1].clone())),
            "ArrowLeft" if pos > 0 => ui2.viewer.set(Some(all[pos - 1].clone())),
            _ => {}
        }
    });
    view! {
        <header class="bar">
            <div class="logo">"▦ Tessera"</div>
            <div class="spacer"></div>
            <Show when=move || ui.screen.get() == Screen::Timeline>
                <span class="state">
                    <span id="sync-state" class=move || format!("dot {}", ui.sync_state.get().split(' ').next().unwrap_or_default())
                        data-transport=move || ui.transport.get()
                        title=move || if ui.transport.get() == "iroh" { "live sync over iroh (peer to peer, through the node's relay)" } else { "sync over HTTP" }>{move || ui.sync_state.get()}</span>
                    <span id="sync-transport">{move || if ui.transport.get() == "iroh" { " · live" } else { "" }}</span>
                    " · outbox "<span id="outbox-count">{move || ui.outbox.get()}</span>
                </span>
                <label class="button">"Upload"
                    <input id="file-input" type="file" multiple accept="image/*,video/*" style="display:none"
                        on:change=move |ev| {
                            let input: web_sys::HtmlInputElement = event_target(&ev);
                            let files = file_list(input.files());
                            input.set_value("");
                            spawn_local(enqueue_files(ui, files));
                        }/>
                </label>
                <button id="devices-button" class="link" on:click=move |_| ui.household.update(|o| *o = !*o)>"Devices"</button>
                <button class="link" on:click=move |_| {
                    session::clear();
                    p2p::stop();
                    spawn_local(async move { let _ = net::json("POST", "/api/auth/logout", None).await; });
                    CORE.with(|c| c.borrow_mut().session = None);
                    ui.months.set(Vec::new());
                    ui.screen.set(Screen::Login);
                }>"Log out"</button>
            </Show>
        </header>
        <Show when=move || ui.error.get().is_some()>
            <div class="error" on:click=move |_| ui.error.set(None)>{move || ui.error.get().unwrap_or_default()}</div>
        </Show>
        {move || match ui.screen.get() {
            Screen::Loading => view! { <p class="center">"Loading…"</p> }.into_any(),
            Screen::SignUp => view! { <AuthForm ui=ui signup=true/> }.into_any(),
            Screen::Login => view! { <AuthForm ui=ui signup=false/> }.into_any(),
            Screen::Timeline => view! { <Timeline ui=ui/> }.into_any(),
        }}
        <Viewer ui=ui/>
    }
}

fn file_list(list: Option<web_sys::FileList>) -> Vec<web_sys::File> {
    let Some(list) = list else { return Vec::new() };
    (0..list.length()).filter_map(|i| list.get(i)).collect()
}

#[component]
fn AuthForm(ui: Ui, signup: bool) -> impl IntoView {
    let email = NodeRef::<leptos::html::Input>::new();
    let password = NodeRef::<leptos::html::Input>::new();
    let name = NodeRef::<leptos::html::Input>::new();
    let val = |r: NodeRef<leptos::html::Input>| r.get().map(|e| e.value()).unwrap_or_default();
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let (e, p, n) = (val(email), val(password), val(name));
        if signup {
            spawn_local(sign_up(ui, e, p, n));
        } else {
            spawn_local(login(ui, e, p));
        }
    };
    view! {
        <form class="auth" id=if signup { "signup-form" } else { "login-form" } on:submit=on_submit>
            <h1>{if signup { "Welcome to Tessera" } else { "Sign in" }}</h1>
            <p class="hint">{if signup { "Create the admin account of this library." } else { "Your photos, on your own devices." }}</p>
            {signup.then(|| view! { <input id="name" node_ref=name placeholder="Name" required/> })}
            <input id="email" node_ref=email type="email" placeholder="Email" required/>
            <input id="password" node_ref=password type="password" placeholder="Password (8 characters or more)" required minlength="8"/>
            <button id="submit" type="submit" class="button">{if signup { "Create account" } else { "Sign in" }}</button>
        </form>
    }
}

#[component]
fn Timeline(ui: Ui) -> impl IntoView {
    let dragging = RwSignal::new(false);
    let total = move || {
        let u = ui.uploads.get();
        if u.is_empty() {
            return None;
        }
        let done = u.iter().filter(|x| x.progress >= 1.0).count();
        let sum: f64 = u.iter().map(|x| x.progress).sum();
        Some((done, u.len(), sum / u.len() as f64))
    };
    view! {
        <main
            class=move || if dragging.get() { "timeline dragging" } else { "timeline" }
            on:dragover=move |ev: web_sys::DragEvent| { ev.prevent_default(); dragging.set(true); }
            on:dragleave=move |_| dragging.set(false)
            on:drop=move |ev: web_sys::DragEvent| {
                ev.prevent_default();
                dragging.set(false);
                let files = file_list(ev.data_transfer().and_then(|d| d.files()));
                spawn_local(enqueue_files(ui, files));
            }
        >
            <Show when=move || ui.household.get()>
                <HouseholdPanel/>
            </Show>
            <MlPanel ui=ui/>
            {move || total().map(|(done, n, frac)| view! {
                <section class="uploads">
                    <div class="total">{format!("Uploaded {done} of {n}")}
                        <div class="progress"><div style:width=format!("{:.0}%", frac * 100.0)></div></div>
                    </div>
                    <For each=move || ui.uploads.get() key=|u| format!("{}:{:.2}:{}", u.key, u.progress, u.state) let:u>
                        <div class="upload-item">
                            <span class="name">{u.name.clone()}</span>
                            <div class="progress"><div style:width=format!("{:.0}%", u.progress * 100.0)></div></div>
                            <span class="ustate">{u.state.clone()}</span>
                        </div>
                    </For>
                </section>
            })}
            <Show when=move || ui.months.with(|m| m.is_empty())>
                <div class="empty">
                    <h2>"No photos yet"</h2>
                    <p>"Drop photos anywhere on this page, or use Upload."</p>
                </div>
            </Show>
            <For each=move || ui.months.get() key=|m| format!("{}:{}:{}", m.month, m.count, m.assets.iter().map(|a| format!("{}{}", a.status.as_deref().unwrap_or_default(), a.favorite.unwrap_or(false))).collect::<String>()) let:m>
                <section class="month-section">
                    <h2>{month_title(&m)}</h2>
                    <div class="grid">
                        {m.assets.into_iter().map(|a| view! { <Tile ui=ui rec=a/> }).collect_view()}
                    </div>
                </section>
            </For>
        </main>
    }
}

/// The ML node's work as the catalogue shows it: progress while it analyses, then people.
/// The user's paired devices (unpair one: its live connection closes at once) and, for the
/// admin, a pairing ticket for a new sync node.
#[component]
fn HouseholdPanel() -> impl IntoView {
    let devices = RwSignal::new(Vec::<serde_json::Value>::new());
    let ticket = RwSignal::new(None::<String>);
    let message = RwSignal::new(None::<String>);
    let load = move || {
        spawn_local(async move {
            match net::json("GET", "/api/tessera/devices", None).await {
                Ok(v) => devices.set(v.as_array().cloned().unwrap_or_default()),
                Err(e) => message.set(Some(e.message)),
            }
        })
    };
    load();
    let me = p2p::device_id();
    view! {
        <section class="household" id="household">
            <h2>"Devices and sync nodes"</h2>
            <ul>
                <For each=move || devices.get() key=|d| d["endpointId"].as_str().unwrap_or_default().to_owned() let:d>
                    {
                        let id = d["endpointId"].as_str().unwrap_or_default().to_owned();
                        let this = me == id;
                        let label = format!(
                            "{} · {}{} · paired {}",
                            d["name"].as_str().unwrap_or("device"),
                            d["kind"].as_str().unwrap_or("device"),
                            if this { " (this browser)" } else { "" },
                            d["createdAt"].as_str().unwrap_or_default().get(..10).unwrap_or_default(),
                        );
                        view! {
                            <li class="device"><span>{label}</span>
                                <button class="link" on:click=move |_| {
                                    let id = id.clone();
                                    spawn_local(async move {
                                        match net::json("DELETE", &format!("/api/tessera/devices/{id}"), None).await {
                                            Ok(_) => { message.set(Some("Unpaired: its connection was closed.".into())); load(); }
                                            Err(e) => message.set(Some(e.message)),
                                        }
                                    })
                                }>"Unpair"</button>
                            </li>
                        }
                    }
                </For>
            </ul>
            <button id="pairing-ticket" class="button secondary" on:click=move |_| {
                spawn_local(async move {
                    match net::json("POST", "/api/pairing/tickets", None).await {
                        Ok(v) => ticket.set(v["usage"].as_str().map(str::to_owned)),
                        Err(e) => message.set(Some(e.message)),
                    }
                })
            }>"Add a sync node…"</button>
            {move || ticket.get().map(|t| view! {
                <p class="hint">"On the new node (valid for one hour, once):"</p>
                <pre id="ticket" class="ticket">{t}</pre>
            })}
            {move || message.get().map(|m| view! { <p class="hint">{m}</p> })}
        </section>
    }
}

#[component]
fn MlPanel(ui: Ui) -> impl IntoView {
    move || {
        let (p, people) = ui.ml.get();
        (p.analysed > 0).then(|| {
            let people: Vec<PersonSummary> = people
                .into_iter()
                .filter(|x| x.record.hidden != Some(true))
                .collect();
            let title = if p.analysed < p.total {
                format!("Faces & smart search: analysed {} of {} photos", p.analysed, p.total)
            } else {
                format!(
                    "Faces & smart search: all {} photos analysed · {} faces · {} {}",
                    p.total,
                    p.faces,
                    people.len(),
                    if people.len() == 1 { "person" } else { "people" }
                )
            };
            let frac = p.analysed as f64 / p.total.max(1) as f64;
            view! {
                <section class="uploads ml" id="ml-progress">
                    <div class="total">{title}
                        <div class="progress"><div style:width=format!("{:.0}%", frac * 100.0)></div></div>
                    </div>
                    <div class="people" id="people">
                        {people.into_iter().map(|x| {
                            let src = x.cover.and_then(|c| c.crop).map(|h| format!("/api/tessera/blobs/{h}")).unwrap_or_default();
                            let name = x.record.name.filter(|n| !n.is_empty()).unwrap_or_else(|| "Unnamed".into());
                            view! {
                                <figure class="person">
                                    <img src=src alt=""/>
                                    <figcaption>{name}<span class="count">{format!("{} photos", x.faces)}</span></figcaption>
                                </figure>
                            }
                        }).collect_view()}
                    </div>
                </section>
            }
        })
    }
}

#[component]
fn Tile(ui: Ui, rec: AssetRecord) -> impl IntoView {
    let placeholder = thumbhash_url(rec.thumbhash.as_deref());
    let id = rec.id.clone();
    let status = rec.status.clone().unwrap_or_default();
    let tile = NodeRef::<leptos::html::Div>::new();
    if status == "ready" {
        Effect::new(move |_| {
            if let Some(el) = tile.get() {
                observe_tile(ui, &el);
            }
        });
    }
    let id2 = id.clone();
    let src = move || {
        ui.thumbs
            .with(|t| t.get(&id2).cloned())
            .unwrap_or_else(|| placeholder.clone())
    };
    let title = match (&rec.error, &rec.filename) {
        (Some(e), Some(f)) => format!("{f}: {e}"),
        (_, Some(f)) => f.clone(),
        _ => String::new(),
    };
    let class = format!("tile {status}");
    let label = (status == "unsupported" || status == "error")
        .then(|| rec.filename.clone().unwrap_or_default());
    let r = rec.clone();
    view! {
        <div node_ref=tile class=class data-id=id title=title on:click=move |_| ui.viewer.set(Some(r.clone()))>
            <img class="thumb" src=src alt=""/>
            {label.map(|l| view! { <span class="label">{l}</span> })}
            {(status == "pending").then(|| view! { <span class="spinner"></span> })}
            {rec.favorite.unwrap_or(false).then(|| view! { <span class="fav">"♥"</span> })}
        </div>
    }
}

#[component]
fn Viewer(ui: Ui) -> impl IntoView {
    view! {
        {move || ui.viewer.get().map(|r| {
            let id = r.id.clone();
            let fallback = ui.thumbs.with_untracked(|t| t.get(&id).cloned()).unwrap_or_default();
            let meta = describe(&r);
            let osm = match (r.lat, r.lon) {
                (Some(a), Some(b)) => Some(format!("https://www.openstreetmap.org/?mlat={a}&mlon={b}#map=15/{a}/{b}")),
                _ => None,
            };
            view! {
                <div id="viewer" class="viewer" on:click=move |_| ui.viewer.set(None)>
                    <div class="viewer-body" on:click=|ev| ev.stop_propagation()>
                        <img class="preview" src=format!("/api/assets/{id}/thumbnail?size=preview")
                            on:error=move |ev| {
                                let img: web_sys::HtmlImageElement = event_target(&ev);
                                if !fallback.is_empty() && img.src() != fallback { img.set_src(&fallback); }
                            }/>
                        <aside id="viewer-meta">
                            <dl>
                                {meta.into_iter().map(|(k, v)| view! { <dt>{k}</dt><dd>{v}</dd> }).collect_view()}
                            </dl>
                            {osm.map(|u| view! { <a href=u target="_blank" rel="noopener">"Show on map"</a> })}
                            <button id="favorite" class="button secondary" on:click={
                                let r = r.clone();
                                move |_| toggle_favorite(ui, &r)
                            }>{if r.favorite.unwrap_or(false) { "♥ Favorite" } else { "♡ Add to favorites" }}</button>
                            <a id="download-original" class="button" href=format!("/api/assets/{id}/original") download="">"Download original"</a>
                            <button class="link" on:click=move |_| ui.viewer.set(None)>"Close (Esc)"</button>
                        </aside>
                    </div>
                </div>
            }
        })}
    }
}
