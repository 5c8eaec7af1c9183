//! Tessera's PWA (leptos CSR). The catalogue lives in IndexedDB as automerge documents and is
//! synced with the node by `tessera-core`'s protocol; originals wait in an IndexedDB outbox
//! until the node acknowledges them durably stored.
//!
//! Architecture invariant: the UI renders from the local `Library` only, never from HTTP
//! responses directly, so it works the same offline.

mod albums;
mod db;
mod dupes;
mod layout;
mod net;
mod p2p;
mod session;
mod timeline;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
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
use timeline::View;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Screen {
    Loading,
    SignUp,
    Login,
    Timeline,
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
    /// Which view the main area shows.
    view: RwSignal<View>,
    /// Bumped whenever the view's items (`timeline::VIEW`) change.
    ver: RwSignal<u64>,
    /// Bumped whenever an album document changes.
    albums_ver: RwSignal<u64>,
    /// Items in the current view.
    count: RwSignal<usize>,
    /// Multi-selection (asset ids).
    selected: RwSignal<HashSet<String>>,
    /// The library's trash retention.
    trash_days: RwSignal<u32>,
    /// Bumped when the duplicates page should regroup.
    dupes_ver: RwSignal<u64>,
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

/// A shard's records and the document heads they were read at.
type ShardCache = (Vec<String>, Vec<AssetRecord>);

/// A record edit applied to many records.
type Edit = Box<dyn Fn(&mut AssetRecord)>;

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
    /// Each shard's records, keyed by month, with the document heads they were read at.
    static SHARDS: RefCell<BTreeMap<String, ShardCache>> = const { RefCell::new(BTreeMap::new()) };
    static OBSERVER: RefCell<Option<web_sys::IntersectionObserver>> = const { RefCell::new(None) };
    /// The heads of every album document when the Albums page last read them.
    static ALBUM_SIG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
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

/// Rebuilds the current view from the local catalogue if it changed.
fn refresh(ui: Ui) {
    refresh_view(ui, false);
}

/// Re-reads the shards whose heads moved (all of them the first time), then rebuilds the
/// current view when something changed or `force`.
fn refresh_view(ui: Ui, force: bool) {
    let Some(user) = user_id() else { return };
    let view = ui.view.get_untracked();
    let (items, ml, trash_days, albums_changed) = CORE.with(|c| {
        let mut c = c.borrow_mut();
        let ml = (
            c.lib.ml_progress(&user).unwrap_or_default(),
            c.lib.people_with_faces(&user).unwrap_or_default(),
        );
        let trash_days = c.lib.trash_days(&user);
        // Albums: a signature of every album document's heads, to re-render the Albums page.
        let album_docs: Vec<DocId> = c
            .lib
            .ids()
            .filter(|d| d.album_id().is_some())
            .cloned()
            .collect();
        let album_sig: Vec<String> = album_docs.iter().flat_map(|d| c.lib.heads(d)).collect();
        let albums_changed = ALBUM_SIG.with(|s| {
            let mut s = s.borrow_mut();
            let changed = *s != album_sig;
            *s = album_sig;
            changed
        });
        let shards = c.lib.shards(&user).unwrap_or_default();
        let items = SHARDS.with(|cache| {
            let mut cache = cache.borrow_mut();
            let mut changed = false;
            let mut seen = HashSet::new();
            for s in shards {
                let Ok(id) = DocId::shard(&user, &s.month) else {
                    continue;
                };
                let heads = c.lib.heads(&id);
                seen.insert(s.month.clone());
                if cache.get(&s.month).map(|e| &e.0) != Some(&heads) {
                    let assets = c.lib.assets(&id).unwrap_or_default();
                    cache.insert(s.month, (heads, assets));
                    changed = true;
                }
            }
            let before = cache.len();
            cache.retain(|k, _| seen.contains(k));
            changed |= cache.len() != before;
            (changed || force).then(|| {
                cache
                    .values()
                    .flat_map(|(_, a)| a.iter().filter(|r| view.includes(r)).cloned())
                    .collect::<Vec<_>>()
            })
        });
        (items, ml, trash_days, albums_changed)
    });
    if albums_changed {
        ui.albums_ver.update(|v| *v += 1);
    }
    if ui.trash_days.get_untracked() != trash_days {
        ui.trash_days.set(trash_days);
    }
    if let Some(items) = items {
        timeline::set_items(ui, items);
        // The viewer shows the current version of its record.
        if let Some(cur) = ui.viewer.get_untracked() {
            if let Some(r) = find_record(&cur.id) {
                if r != cur {
                    ui.viewer.set(Some(r));
                }
            }
        }
        if view == View::Duplicates {
            ui.dupes_ver.update(|v| *v += 1);
        }
    }
    if ui.ml.get_untracked() != ml {
        ui.ml.set(ml);
    }
}

/// Every record of the catalogue (from the shard cache).
fn all_records() -> Vec<AssetRecord> {
    SHARDS.with(|c| {
        c.borrow()
            .values()
            .flat_map(|(_, a)| a.iter().cloned())
            .collect()
    })
}

fn find_record(id: &str) -> Option<AssetRecord> {
    SHARDS.with(|c| {
        c.borrow()
            .values()
            .find_map(|(_, a)| a.iter().find(|r| r.id == id).cloned())
    })
}

/// An RFC 3339 timestamp of now.
fn now_rfc3339() -> String {
    js_sys::Date::new_0()
        .to_iso_string()
        .as_string()
        .unwrap_or_default()
}

/// Applies `f` to each of `recs` in the local catalogue in one pass, saves, syncs.
fn edit_assets(ui: Ui, recs: &[AssetRecord], what: &str, f: impl Fn(&mut AssetRecord)) {
    let Some(user) = user_id() else { return };
    let mut changed = 0;
    let mut missing = 0;
    let mut err = None;
    CORE.with(|c| {
        let mut c = c.borrow_mut();
        for r in recs {
            match c.lib.update_asset(&user, &r.month(), &r.id, &f) {
                Ok(true) => changed += 1,
                Ok(false) => missing += 1,
                Err(e) => err = Some(e.to_string()),
            }
        }
    });
    if let Some(e) = err {
        ui.error.set(Some(format!("cannot {what}: {e}")));
    } else if missing > 0 {
        ui.error.set(Some(format!(
            "{missing} item(s) are not in the local catalogue yet"
        )));
    }
    if changed > 0 {
        refresh(ui);
        spawn_local(async move {
            save_docs().await;
            if !p2p::kick() {
                sync_now(ui).await;
            }
        });
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
pub(crate) async fn sync_now(ui: Ui) {
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
                    c.sync.receive(&mut c.lib, down.docs, |d| {
                        d.user() == user || d.album_id().is_some()
                    })
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
    let want = !rec.favorite.unwrap_or(false);
    edit_assets(ui, std::slice::from_ref(rec), "change favorite", |r| {
        r.favorite = Some(want)
    });
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

/// `?bench=N`: the scroll benchmark's synthetic library (no server).
fn bench_param() -> Option<usize> {
    let search = web_sys::window()?.location().search().ok()?;
    search
        .trim_start_matches('?')
        .split('&')
        .find_map(|kv| kv.strip_prefix("bench="))
        .and_then(|n| n.parse().ok())
}

async fn boot(ui: Ui) {
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
                is_admin: r["isAdmin"].as_bool().unwrap_or(false),
            };
            session::save(&s);
            ui.error.set(None);
            let must_change = r["shouldChangePassword"].as_bool().unwrap_or(false);
            enter_timeline(ui, s).await;
            if must_change {
                // An admin set this password: ask for the member's own at once.
                ui.household.set(true);
                ui.error.set(Some(
                    "Your password was set by an admin: choose your own below (Change password)."
                        .into(),
                ));
            }
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

/// Replaces the observer by one rooted at the current scroller; tiles it watched are watched
/// by the new one.
fn reset_observer(ui: Ui) {
    OBSERVER.with(|o| {
        if let Some(o) = o.borrow_mut().take() {
            o.disconnect();
        }
    });
    let watched = timeline::OBSERVED.with(|o| std::mem::take(&mut *o.borrow_mut()));
    for el in watched.iter().filter(|e| e.is_connected()) {
        observe_tile(ui, el);
    }
}

/// Loads a tile's thumbnail when it comes near the viewport (800 px ahead), once.
fn observe_tile(ui: Ui, el: &web_sys::Element) {
    timeline::OBSERVED.with(|o| o.borrow_mut().push(el.clone()));
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
            init.set_root_margin("800px 0px");
            if let Some(sc) = timeline::scroller() {
                init.set_root(Some(&sc));
            }
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
        view: RwSignal::new(View::Photos),
        ver: RwSignal::new(0),
        albums_ver: RwSignal::new(0),
        count: RwSignal::new(0),
        selected: RwSignal::new(HashSet::new()),
        trash_days: RwSignal::new(30),
        dupes_ver: RwSignal::new(0),
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
    let _ = window_event_listener(leptos::ev::keydown, move |ev: web_sys::KeyboardEvent| {
        on_key(ui, &ev)
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
                    SHARDS.with(|c| c.borrow_mut().clear());
                    ui.selected.set(HashSet::new());
                    timeline::set_items(ui, Vec::new());
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

/// Keyboard: the viewer's shortcuts, Escape clears the selection.
fn on_key(ui: Ui, ev: &web_sys::KeyboardEvent) {
    let typing = ev
        .target()
        .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
        .is_some();
    if typing {
        return;
    }
    let Some(cur) = ui.viewer.get_untracked() else {
        if ev.key() == "Escape" {
            ui.selected.set(HashSet::new());
        }
        return;
    };
    let (pos, prev, next) = timeline::VIEW.with(|v| {
        let v = v.borrow();
        let pos = v.index.get(&cur.id).copied();
        let prev = pos
            .and_then(|p| p.checked_sub(1))
            .and_then(|p| v.items.get(p).cloned());
        let next = pos.and_then(|p| v.items.get(p + 1).cloned());
        (pos, prev, next)
    });
    let _ = pos;
    match ev.key().as_str() {
        "Escape" => ui.viewer.set(None),
        "ArrowRight" => {
            if let Some(n) = next {
                ui.viewer.set(Some(n));
            }
        }
        "ArrowLeft" => {
            if let Some(p) = prev {
                ui.viewer.set(Some(p));
            }
        }
        "f" => toggle_favorite(ui, &cur),
        "Delete" if !cur.is_trashed() => viewer_action(ui, &cur, Action::Trash),
        "a" => viewer_action(
            ui,
            &cur,
            if cur.archived == Some(true) {
                Action::Unarchive
            } else {
                Action::Archive
            },
        ),
        _ => {}
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Action {
    Favorite,
    Unfavorite,
    Archive,
    Unarchive,
    Trash,
    Restore,
}

/// Applies an action to records (local catalogue edits, one pass).
fn apply(ui: Ui, recs: &[AssetRecord], a: Action) {
    let now = now_rfc3339();
    let (what, f): (&str, Edit) = match a {
        Action::Favorite => ("favorite", Box::new(|r| r.favorite = Some(true))),
        Action::Unfavorite => ("unfavorite", Box::new(|r| r.favorite = Some(false))),
        Action::Archive => ("archive", Box::new(|r| r.archived = Some(true))),
        Action::Unarchive => ("unarchive", Box::new(|r| r.archived = Some(false))),
        Action::Trash => (
            "move to trash",
            Box::new(move |r| r.trashed_at = Some(now.clone())),
        ),
        Action::Restore => ("restore", Box::new(|r| r.trashed_at = None)),
    };
    edit_assets(ui, recs, what, f);
}

/// An action from the viewer: the viewer moves on to the next item if this one leaves the view.
fn viewer_action(ui: Ui, cur: &AssetRecord, a: Action) {
    let next = timeline::VIEW.with(|v| {
        let v = v.borrow();
        let p = v.index.get(&cur.id).copied()?;
        v.items
            .get(p + 1)
            .or_else(|| v.items.get(p.checked_sub(1)?))
            .cloned()
    });
    apply(ui, std::slice::from_ref(cur), a);
    if ui.view.get_untracked() != View::Duplicates
        && timeline::VIEW.with(|v| !v.borrow().index.contains_key(&cur.id))
    {
        ui.viewer.set(next);
    }
}

/// Permanently deletes (on the node: only it can delete originals), then syncs.
async fn delete_permanently(ui: Ui, ids: Option<Vec<String>>) {
    let res = match ids {
        Some(ids) => {
            net::json(
                "DELETE",
                "/api/assets",
                Some(serde_json::json!({"ids": ids, "force": true})),
            )
            .await
        }
        None => net::json("POST", "/api/trash/empty", None).await,
    };
    match res {
        Ok(_) => {
            ui.selected.set(HashSet::new());
            CORE.with(|c| c.borrow_mut().sync.reset());
            sync_now(ui).await;
            refresh_view(ui, true);
        }
        Err(e) => ui
            .error
            .set(Some(format!("The node did not delete: {}", e.message))),
    }
}

#[component]
fn SelectionBar(ui: Ui) -> impl IntoView {
    let act = move |a: Action| {
        move |_| {
            let recs = timeline::selected_in_order(ui);
            apply(ui, &recs, a);
            ui.selected.set(HashSet::new());
        }
    };
    let trash = move || ui.view.get() == View::Trash;
    let album_name = RwSignal::new(String::new());
    let naming = RwSignal::new(false);
    view! {
        <Show when=move || ui.selected.with(|s| !s.is_empty())>
            <div id="selection-bar" class="selection-bar">
                <button id="sel-clear" class="link" title="Clear selection (Esc)" on:click=move |_| ui.selected.set(HashSet::new())>"✕"</button>
                <span id="selection-count">{move || format!("{} selected", ui.selected.with(|s| s.len()))}</span>
                <div class="spacer"></div>
                <Show when=move || !trash() fallback=move || view! {
                    <button id="sel-restore" class="button secondary" on:click=act(Action::Restore)>"Restore"</button>
                    <button id="sel-delete" class="button danger" on:click=move |_| {
                        let ids: Vec<String> = ui.selected.get_untracked().into_iter().collect();
                        spawn_local(delete_permanently(ui, Some(ids)));
                    }>"Delete permanently"</button>
                }>
                    <Show when=move || naming.get() fallback=move || view! {
                        <button id="sel-album" class="button secondary" on:click=move |_| naming.set(true)>"Add to album"</button>
                    }>
                        <form class="album-form" on:submit=move |ev| {
                            ev.prevent_default();
                            let ids: Vec<String> = timeline::selected_in_order(ui).into_iter().map(|r| r.id).collect();
                            let name = album_name.get_untracked();
                            spawn_local(async move {
                                match albums::add_to_album(ui, name, ids).await {
                                    Ok(_) => {
                                        naming.set(false);
                                        album_name.set(String::new());
                                        ui.selected.set(HashSet::new());
                                    }
                                    Err(m) => ui.error.set(Some(m)),
                                }
                            });
                        }>
                            <input id="album-name" placeholder="Album name" list="album-names"
                                prop:value=move || album_name.get() on:input=move |e| album_name.set(event_target_value(&e))/>
                            <datalist id="album-names">
                                {move || { ui.albums_ver.get(); albums::owned_album_names() }.into_iter().map(|n| view! { <option value=n/> }).collect_view()}
                            </datalist>
                            <button id="album-add" class="button" type="submit">"Add"</button>
                        </form>
                    </Show>
                    <button id="sel-favorite" class="button secondary" on:click=act(Action::Favorite)>"♥ Favorite"</button>
                    <button id="sel-unfavorite" class="button secondary" on:click=act(Action::Unfavorite)>"♡ Unfavorite"</button>
                    {move || if ui.view.get() == View::Archive {
                        view! { <button id="sel-unarchive" class="button secondary" on:click=act(Action::Unarchive)>"Unarchive"</button> }.into_any()
                    } else {
                        view! { <button id="sel-archive" class="button secondary" on:click=act(Action::Archive)>"Archive"</button> }.into_any()
                    }}
                    <button id="sel-trash" class="button danger" on:click=act(Action::Trash)>"Move to trash"</button>
                </Show>
            </div>
        </Show>
    }
}

fn set_view(ui: Ui, v: View) {
    if ui.view.get_untracked() == v {
        return;
    }
    ui.selected.set(HashSet::new());
    ui.view.set(v);
    refresh_view(ui, true);
    if let Some(sc) = timeline::scroller() {
        sc.set_scroll_top(0);
    }
}

fn is_admin() -> bool {
    CORE.with(|c| c.borrow().session.as_ref().is_some_and(|s| s.is_admin))
}

#[component]
fn Nav(ui: Ui) -> impl IntoView {
    let item = move |v: View, id: &'static str, icon: &'static str, label: &'static str| {
        view! {
            <button id=id class=move || if ui.view.get() == v { "nav-item active" } else { "nav-item" }
                on:click=move |_| set_view(ui, v)>
                <span class="icon">{icon}</span><span class="nav-label">{label}</span>
            </button>
        }
    };
    view! {
        <nav class="views">
            {item(View::Photos, "nav-photos", "▦", "Photos")}
            {item(View::Favorites, "nav-favorites", "♥", "Favorites")}
            {item(View::Archive, "nav-archive", "⬒", "Archive")}
            {item(View::Trash, "nav-trash", "✖", "Trash")}
            {item(View::Duplicates, "nav-duplicates", "❐", "Duplicates")}
            {item(View::Albums, "nav-albums", "▤", "Albums")}
            <Show when=is_admin>
                {item(View::Members, "nav-members", "☺", "Members")}
            </Show>
        </nav>
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
    let empty_text = move || match ui.view.get() {
        View::Photos => (
            "No photos yet",
            "Drop photos anywhere on this page, or use Upload.",
        ),
        View::Favorites => (
            "No favorites",
            "Open a photo and press f, or select photos and choose Favorite.",
        ),
        View::Archive => (
            "Nothing archived",
            "Archived photos are kept but hidden from Photos.",
        ),
        View::Trash => ("Trash is empty", ""),
        View::Duplicates | View::Albums | View::Members => ("", ""),
    };
    view! {
        <div class="shell">
            <Nav ui=ui/>
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
                <SelectionBar ui=ui/>
                <div class="panels">
                    <Show when=move || ui.household.get()>
                        <HouseholdPanel/>
                    </Show>
                    <MlPanel ui=ui/>
                    {move || total().map(|(done, n, frac)| view! {
                        <section class="uploads">
                            <div class="total">{format!("Uploaded {done} of {n}")}
                                <button class="link" on:click=move |_| ui.uploads.update(|u| u.retain(|x| x.progress < 1.0))>"Clear finished"</button>
                                <div class="progress"><div style:width=format!("{:.0}%", frac * 100.0)></div></div>
                            </div>
                            <div class="upload-list">
                                <For each=move || ui.uploads.get() key=|u| format!("{}:{:.2}:{}", u.key, u.progress, u.state) let:u>
                                    <div class="upload-item">
                                        <span class="name">{u.name.clone()}</span>
                                        <div class="progress"><div style:width=format!("{:.0}%", u.progress * 100.0)></div></div>
                                        <span class="ustate">{u.state.clone()}</span>
                                    </div>
                                </For>
                            </div>
                        </section>
                    })}
                    <Show when=move || ui.view.get() == View::Trash>
                        <div class="banner" id="trash-banner">
                            <span>{move || format!("Items are deleted permanently {} days after they are trashed", ui.trash_days.get())}</span>
                            <button id="empty-trash" class="button danger" on:click=move |_| spawn_local(delete_permanently(ui, None))>"Empty trash"</button>
                        </div>
                    </Show>
                </div>
                {move || if ui.view.get() == View::Duplicates {
                    view! { <dupes::DuplicatesPage ui=ui/> }.into_any()
                } else if ui.view.get() == View::Albums {
                    view! { <albums::AlbumsPage ui=ui/> }.into_any()
                } else if ui.view.get() == View::Members {
                    view! { <albums::MembersPage/> }.into_any()
                } else {
                    view! {
                        <Show when=move || ui.count.get() == 0>
                            <div class="empty">
                                <h2>{move || empty_text().0}</h2>
                                <p>{move || empty_text().1}</p>
                            </div>
                        </Show>
                        <timeline::TimelineView ui=ui/>
                    }.into_any()
                }}
            </main>
        </div>
    }
}

/// The ML node's work as the catalogue shows it: progress while it analyses, then people.
/// The user's paired devices (unpair one: its live connection closes at once) and, for the
/// admin, a pairing ticket for a new sync node.
#[component]
fn HouseholdPanel() -> impl IntoView {
    let devices = RwSignal::new(Vec::<serde_json::Value>::new());
    let sessions = RwSignal::new(Vec::<serde_json::Value>::new());
    let ticket = RwSignal::new(None::<String>);
    let message = RwSignal::new(None::<String>);
    let load = move || {
        spawn_local(async move {
            match net::json("GET", "/api/tessera/devices", None).await {
                Ok(v) => devices.set(v.as_array().cloned().unwrap_or_default()),
                Err(e) => message.set(Some(e.message)),
            }
            match net::json("GET", "/api/sessions", None).await {
                Ok(v) => sessions.set(v.as_array().cloned().unwrap_or_default()),
                Err(e) => message.set(Some(e.message)),
            }
        })
    };
    let (old_pw, new_pw) = (RwSignal::new(String::new()), RwSignal::new(String::new()));
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
            <h2>"Signed-in sessions"</h2>
            <ul id="sessions">
                <For each=move || sessions.get() key=|s| s["id"].as_str().unwrap_or_default().to_owned() let:s>
                    {
                        let id = s["id"].as_str().unwrap_or_default().to_owned();
                        let current = s["current"].as_bool().unwrap_or(false);
                        let agent = s["deviceType"].as_str().filter(|d| !d.is_empty()).unwrap_or("a client");
                        let label = format!(
                            "{}{} · signed in {} · last used {}",
                            if agent.contains("Mozilla") { p2p::describe_browser(agent) } else { agent.chars().take(40).collect() },
                            if current { " (this session)" } else { "" },
                            s["createdAt"].as_str().unwrap_or_default().get(..10).unwrap_or("earlier"),
                            s["updatedAt"].as_str().unwrap_or_default().get(..10).unwrap_or("—"),
                        );
                        view! {
                            <li class="session"><span>{label}</span>
                                <Show when=move || !current>
                                    {
                                        let id = id.clone();
                                        view! {
                                            <button class="link" on:click=move |_| {
                                                let id = id.clone();
                                                spawn_local(async move {
                                                    match net::json("DELETE", &format!("/api/sessions/{id}"), None).await {
                                                        Ok(_) => { message.set(Some("Signed out that session.".into())); load(); }
                                                        Err(e) => message.set(Some(e.message)),
                                                    }
                                                })
                                            }>"Sign out"</button>
                                        }
                                    }
                                </Show>
                            </li>
                        }
                    }
                </For>
            </ul>
            <button id="sign-out-others" class="button secondary" on:click=move |_| {
                spawn_local(async move {
                    match net::json("DELETE", "/api/sessions", None).await {
                        Ok(_) => { message.set(Some("Every other session is signed out.".into())); load(); }
                        Err(e) => message.set(Some(e.message)),
                    }
                })
            }>"Sign out everywhere else"</button>
            <form class="change-password" on:submit=move |ev| {
                ev.prevent_default();
                let body = serde_json::json!({"password": old_pw.get_untracked(), "newPassword": new_pw.get_untracked()});
                spawn_local(async move {
                    match net::json("POST", "/api/auth/change-password", Some(body)).await {
                        Ok(_) => {
                            old_pw.set(String::new());
                            new_pw.set(String::new());
                            message.set(Some("Password changed; every other session is signed out.".into()));
                            load();
                        }
                        Err(e) => message.set(Some(e.message)),
                    }
                })
            }>
                <input type="password" placeholder="Current password" autocomplete="current-password"
                    prop:value=move || old_pw.get() on:input=move |e| old_pw.set(event_target_value(&e))/>
                <input type="password" placeholder="New password (8+ characters)" autocomplete="new-password"
                    prop:value=move || new_pw.get() on:input=move |e| new_pw.set(event_target_value(&e))/>
                <button class="button secondary" type="submit">"Change password"</button>
            </form>
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

/// The `codecs` parameter a browser understands for a container's codec name.
fn codec_param(codec: &str) -> Option<&'static str> {
    Some(match codec.to_ascii_lowercase().as_str() {
        "h264" | "avc" | "avc1" => "avc1.42E01E",
        "hevc" | "h265" | "hvc1" | "hev1" => "hvc1.1.6.L93.B0",
        "av1" | "av01" => "av01.0.05M.08",
        "vp9" | "vp09" => "vp09.00.10.08",
        "vp8" => "vp8",
        _ => return None,
    })
}

/// `None` when the browser can (probably) play the video, else the codec it cannot play.
fn unplayable(r: &AssetRecord) -> Option<String> {
    let mime = r.mime.clone().unwrap_or_else(|| "video/mp4".into());
    let codec = r.codec.clone().unwrap_or_default();
    let doc = web_sys::window()?.document()?;
    let v: web_sys::HtmlMediaElement = doc.create_element("video").ok()?.dyn_into().ok()?;
    let ty = match codec_param(&codec) {
        Some(c) => format!("{mime}; codecs=\"{c}\""),
        None if codec.is_empty() => mime.clone(),
        // A codec browsers do not name (ProRes, DNxHD…): they cannot play it.
        None => return Some(codec),
    };
    let name = if codec.is_empty() { mime } else { codec };
    v.can_play_type(&ty).is_empty().then_some(name)
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
            let preview = format!("/api/assets/{id}/thumbnail?size=preview");
            let video = r.is_video();
            let cant = RwSignal::new(if video { unplayable(&r) } else { None });
            let codec_name = r
                .codec
                .clone()
                .or_else(|| r.mime.clone())
                .unwrap_or_else(|| "this video".into());
            let live = RwSignal::new(false);
            let has_motion = r.motion.is_some() && !video;
            let still = {
                let fallback = fallback.clone();
                let preview = preview.clone();
                move || view! {
                    <img class="preview" src=preview.clone()
                        on:error={
                            let fallback = fallback.clone();
                            move |ev| {
                                let img: web_sys::HtmlImageElement = event_target(&ev);
                                if !fallback.is_empty() && img.src() != fallback { img.set_src(&fallback); }
                            }
                        }/>
                }
            };
            let stage = if video {
                let still = still.clone();
                let src = format!("/api/assets/{id}/original");
                let poster = preview.clone();
                view! {
                    {move || match cant.get() {
                        Some(c) => view! {
                            <div class="stage">
                                {still()}
                                <p id="video-unsupported" class="video-msg">{format!("This browser cannot play {c}; download the original")}</p>
                            </div>
                        }.into_any(),
                        None => view! {
                            <video id="viewer-video" class="preview" controls=true autoplay=true muted=true playsinline=true
                                src=src.clone() poster=poster.clone()
                                on:error={
                                    let name = codec_name.clone();
                                    move |_| cant.set(Some(name.clone()))
                                }></video>
                        }.into_any(),
                    }}
                }.into_any()
            } else {
                let motion = format!("/api/assets/{id}/motion");
                view! {
                    <div class="stage">
                        {still()}
                        {move || live.get().then(|| view! {
                            <video id="live-video" class="preview live-video" src=motion.clone() autoplay=true muted=true playsinline=true
                                on:ended=move |_| live.set(false)
                                on:error=move |_| { live.set(false); ui.error.set(Some("The moving part of this photo is not available".into())); }></video>
                        })}
                    </div>
                }.into_any()
            };
            let archived = r.archived == Some(true);
            let trashed = r.is_trashed();
            view! {
                <div id="viewer" class="viewer" on:click=move |_| ui.viewer.set(None)>
                    <div class="viewer-body" on:click=|ev| ev.stop_propagation()>
                        {stage}
                        <aside id="viewer-meta">
                            <dl>
                                {meta.into_iter().map(|(k, v)| view! { <dt>{k}</dt><dd>{v}</dd> }).collect_view()}
                            </dl>
                            {osm.map(|u| view! { <a href=u target="_blank" rel="noopener">"Show on map"</a> })}
                            {has_motion.then(|| view! {
                                <button id="play-live" class="button secondary" on:click=move |_| live.update(|l| *l = !*l)>"▶ Live"</button>
                            })}
                            <button id="favorite" class="button secondary" on:click={
                                let r = r.clone();
                                move |_| toggle_favorite(ui, &r)
                            }>{if r.favorite.unwrap_or(false) { "♥ Favorite" } else { "♡ Add to favorites" }}</button>
                            <div class="viewer-actions">
                                <button id="viewer-archive" class="button secondary" title="a" on:click={
                                    let r = r.clone();
                                    move |_| viewer_action(ui, &r, if archived { Action::Unarchive } else { Action::Archive })
                                }>{if archived { "Unarchive" } else { "Archive" }}</button>
                                <button id="viewer-trash" class="button secondary" title="Delete" on:click={
                                    let r = r.clone();
                                    move |_| viewer_action(ui, &r, if trashed { Action::Restore } else { Action::Trash })
                                }>{if trashed { "Restore" } else { "Move to trash" }}</button>
                            </div>
                            <a id="download-original" class="button" href=format!("/api/assets/{id}/original") download="">"Download original"</a>
                            <p class="hint">"← → browse · f favorite · a archive · Del trash · Esc close"</p>
                            <button class="link" on:click=move |_| ui.viewer.set(None)>"Close (Esc)"</button>
                        </aside>
                    </div>
                </div>
            }
        })}
    }
}
