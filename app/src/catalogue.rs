//! The local catalogue: documents loaded from and saved to IndexedDB, record look-ups, local
//! edits, and HTTP sync rounds with the node (while no iroh session is up).

use leptos::prelude::*;
use leptos::task::spawn_local;
use tessera_core::{AssetRecord, DocId, SyncEnvelope};
use wasm_bindgen::JsCast;

use std::collections::HashMap;
use std::sync::Arc;

use crate::items::Item;

use crate::state::{
    db, log, now_ms, opening, refresh, refresh_soon, user_id, Screen, Ui, CORE, SHARDS,
};
use crate::{db, net, p2p, perf, session, state};

/// An asset as the lists hold it, and the month document it is in: my own copy first (a
/// partner's photo I saved is in both).
pub(crate) fn find_item(id: &str) -> Option<(DocId, Arc<Item>)> {
    let mine = user_id().map(|u| format!("u/{u}/")).unwrap_or_default();
    SHARDS.with(|c| {
        let c = c.borrow();
        let find = |own: bool| {
            c.iter()
                .filter(|(k, _)| k.starts_with(&mine) == own)
                .find_map(|(k, (_, a))| {
                    let item = a.iter().find(|r| &*r.id == id)?;
                    Some((DocId::parse(k).ok()?, item.clone()))
                })
        };
        find(true).or_else(|| find(false))
    })
}

/// The whole record of an asset, read from its month's document (the lists hold only part
/// of each record: [`Item`]); `None` when no month this device holds has it.
pub(crate) fn find_record(id: &str) -> Option<AssetRecord> {
    let (doc, _) = find_item(id)?;
    CORE.with(|c| c.borrow().lib.asset_in(&doc, id).ok().flatten())
}

/// Applies `f` to each of `recs` in the local catalogue in one pass, saves, syncs.
pub(crate) fn edit_assets(ui: Ui, recs: &[AssetRecord], what: &str, f: impl Fn(&mut AssetRecord)) {
    let Some(user) = user_id() else { return };
    let mut changed = 0;
    let mut missing = 0;
    let mut err = None;
    let now = String::from(js_sys::Date::new_0().to_iso_string());
    CORE.with(|c| {
        let mut c = c.borrow_mut();
        for r in recs {
            let stamped = |r: &mut AssetRecord| {
                let before = r.clone();
                f(r);
                if *r != before {
                    r.updated_at = Some(now.clone());
                }
            };
            match c.lib.update_asset(&user, &r.month(), &r.id, stamped) {
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
        save_and_push(ui);
    }
}

/// After a local edit: saves the documents to IndexedDB, then pushes them to peers over iroh
/// (or, without a live connection, syncs over HTTP).
pub(crate) fn save_and_push(ui: Ui) {
    spawn_local(async move {
        save_docs().await;
        if !p2p::kick() {
            sync_now(ui).await;
        }
    });
}

/// The store of months' saved items ([`crate::items::encode_saved`]), keyed like the
/// documents, in a database of its own ("tessera-items") so the catalogue's database (also
/// opened by the service worker) keeps its version.
const MONTHS: &str = "months";

thread_local! {
    static ITEMS_DB: std::cell::RefCell<Option<std::rc::Rc<rexie::Rexie>>> = const { std::cell::RefCell::new(None) };
}

async fn items_db() -> Option<std::rc::Rc<rexie::Rexie>> {
    db::side_db(&ITEMS_DB, "tessera-items", &[MONTHS])
        .await
        .map_err(|e| log(&e))
        .ok()
}

/// Writes months' saved items (and deletes `stale` ones). A failure costs only speed: the
/// next open decodes those months.
/// `entries` are already JavaScript bytes ([`db::bytes_value`], made as each is encoded): a
/// whole catalogue's entries kept in wasm memory until written would raise its high-water mark
/// for good (about 35 MB at 300k photos).
async fn write_saved_months(entries: Vec<(String, wasm_bindgen::JsValue)>, stale: Vec<String>) {
    if entries.is_empty() && stale.is_empty() {
        return;
    }
    let Some(d) = items_db().await else { return };
    let t = now_ms();
    let n = entries.len();
    if let Err(e) = db::put_many(&d, MONTHS, &entries).await {
        log(&format!("cannot save {n} months' items: {e}"));
        if db::storage_full(&e).await {
            // The saved items are only a cache: they give their space to the catalogue.
            log("storage is nearly full: dropping every saved month to leave the space to the catalogue");
            drop_saved_months().await;
        }
        return;
    }
    for k in stale {
        let _ = db::delete(&d, MONTHS, &k).await;
    }
    perf::add("items.saved", n as f64);
    perf::add("items.save_ms", now_ms() - t);
}

/// Deletes every month's saved items (a cache: the next open decodes those months instead).
async fn drop_saved_months() {
    let Some(d) = items_db().await else { return };
    match db::clear(&d, MONTHS).await {
        Ok(()) => perf::add("items.dropped_for_space", 1.0),
        Err(e) => log(&format!("cannot clear the saved months: {e}")),
    }
}

/// Timeline records to read before the first paint: a screenful and then some.
const FIRST_SCREEN: u64 = 500;

/// Loads the catalogue documents from IndexedDB, in sync order: the roots (with their month
/// summaries), then months newest first. The view is painted once the first screen's months
/// are in, the rest loads in slices of about 40 ms between which the page stays responsive,
/// and the header counts the documents. No sync runs until every stored document is loaded.
pub(crate) async fn load_docs(ui: Ui) {
    let Some(db) = db() else { return };
    CORE.with(|c| c.borrow_mut().opening = true);
    let t0 = now_ms();
    // Both stores at once (the saved items are about as large as the documents).
    let (items, saved) = futures::join!(db::all(&db, db::DOCS), async {
        match items_db().await {
            Some(d) => db::all(&d, MONTHS).await.unwrap_or_default(),
            None => Vec::new(),
        }
    });
    let items = match items {
        Ok(items) => items,
        Err(e) => {
            ui.error.set(Some(e));
            Vec::new()
        }
    };
    let mut docs: Vec<(DocId, wasm_bindgen::JsValue)> = items
        .into_iter()
        .filter_map(|(k, v)| match DocId::parse(&k) {
            Ok(id) => Some((id, v)),
            Err(e) => {
                log(&format!("ignoring stored document {k}: {e}"));
                None
            }
        })
        .collect();
    docs.sort_by_cached_key(|d| d.0.sync_rank());
    let total = docs.len();
    // Months' items saved with their documents: a month whose entry names its stored bytes is
    // held unloaded with those items, not decoded.
    let mut saved: HashMap<String, js_sys::Uint8Array> = saved
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.dyn_into().ok()?)))
        .collect();
    // Entries to write for months decoded now, and to delete (their bytes changed).
    let mut to_save: Vec<(String, wasm_bindgen::JsValue)> = Vec::new();
    let mut stale: Vec<String> = Vec::new();
    let read_ms = now_ms() - t0;
    let user = user_id().unwrap_or_default();
    // Records per month document, from the root summaries (known once the roots are in).
    let mut counts: Option<HashMap<DocId, u64>> = None;
    let mut in_view = 0u64;
    let mut painted = false;
    let mut slice = now_ms();
    for (i, (id, v)) in docs.into_iter().enumerate() {
        if id.month().is_some() && counts.is_none() {
            counts = Some(CORE.with(|c| summary_counts(&c.borrow().lib, &user)));
        }
        in_view += counts
            .as_ref()
            .and_then(|c| c.get(&id))
            .copied()
            .unwrap_or(0);
        let t = now_ms();
        if let Some(stored) = v.dyn_ref::<js_sys::Uint8Array>() {
            let bytes = stored.to_vec();
            let entry = saved.remove(id.as_str());
            let held = entry.as_ref().and_then(|e| {
                let (heads, items) = crate::items::decode_saved(&e.to_vec(), &bytes)?;
                CORE.with(|c| {
                    let mut c = c.borrow_mut();
                    matches!(
                        c.lib.hold_unloaded(id.clone(), &heads, bytes.len()),
                        Ok(true)
                    )
                    .then(|| state::put_shard(&c.lib, &id, items))
                })
            });
            if held.is_some() {
                state::stored(&id, stored.clone());
                perf::add("open.months_from_items", 1.0);
            } else {
                if entry.is_some() {
                    stale.push(id.to_string());
                }
                CORE.with(|c| {
                    let mut c = c.borrow_mut();
                    match c.lib.load(id.clone(), &bytes) {
                        Ok(()) => {
                            state::stored(&id, stored.clone());
                            // A month's records are read now, so that the document can go;
                            // and saved, so that the next open does not decode it.
                            if let Some(e) = state::saved_month(&mut c.lib, &id, &bytes) {
                                to_save.push((id.to_string(), db::bytes_value(&e)));
                            }
                        }
                        Err(e) => log(&format!("cannot load document {id}: {e}")),
                    }
                });
            }
        }
        perf::add("open.load_ms", now_ms() - t);
        if !painted && in_view >= FIRST_SCREEN {
            painted = true;
            ui.library.update(|p| p.opening = Some((i + 1, total)));
            refresh(ui);
            perf::set("open.first_screen_ms", now_ms() - t0);
            yield_now().await;
            slice = now_ms();
        } else if now_ms() - slice > 40.0 {
            // Only the header moves until everything is read: rebuilding and re-rendering the
            // view on the way would cost more than the reading.
            ui.library.update(|p| p.opening = Some((i + 1, total)));
            CORE.with(|c| state::evict(&mut c.borrow_mut().lib));
            yield_now().await;
            slice = now_ms();
        }
    }
    CORE.with(|c| c.borrow_mut().opening = false);
    ui.library.update(|p| p.opening = None);
    refresh(ui);
    // Entries of documents no longer stored go too.
    stale.extend(saved.into_keys());
    stale.retain(|k| !to_save.iter().any(|(s, _)| s == k));
    spawn_local(write_saved_months(to_save, stale));
    perf::set("open.docs", total as f64);
    perf::set("open.read_ms", read_ms);
    perf::set("open.total_ms", now_ms() - t0);
    perf::publish();
}

/// Records in each month document of `user` and of the partners the root lists, from the
/// root summaries.
fn summary_counts(lib: &tessera_core::Library, user: &str) -> HashMap<DocId, u64> {
    let users: Vec<String> = lib
        .ids()
        .filter(|d| d.is_root())
        .map(|d| d.user().to_owned())
        .chain(std::iter::once(user.to_owned()))
        .collect();
    users
        .iter()
        .flat_map(|u| {
            lib.shards(u)
                .unwrap_or_default()
                .into_iter()
                .filter_map(move |s| Some((DocId::shard(u, &s.month).ok()?, s.count)))
        })
        .collect()
}

/// Lets the page render and handle input before going on: `scheduler.yield()` where the
/// browser has it (no timer clamping or throttling), else a zero timeout.
async fn yield_now() {
    let t = now_ms();
    let scheduled = web_sys::window()
        .and_then(|w| js_sys::Reflect::get(&w, &"scheduler".into()).ok())
        .filter(|s| s.is_object())
        .and_then(|s| {
            let f: js_sys::Function = js_sys::Reflect::get(&s, &"yield".into())
                .ok()?
                .dyn_into()
                .ok()?;
            f.call0(&s).ok()?.dyn_into::<js_sys::Promise>().ok()
        });
    match scheduled {
        Some(p) => {
            let _ = wasm_bindgen_futures::JsFuture::from(p).await;
        }
        None => gloo_timers::future::TimeoutFuture::new(0).await,
    }
    perf::add("open.yields", 1.0);
    perf::add("open.yield_ms", now_ms() - t);
}

/// Saves in the background what changed (the page answers meanwhile). `save.pending` counts
/// it from now, so the page never shows nothing pending while a save is still to start.
pub(crate) fn save_soon() {
    perf::add("save.pending", 1.0);
    spawn_local(async {
        save_docs().await;
        perf::add("save.pending", -1.0);
        perf::publish();
    });
}

/// Saves documents changed since the last save to IndexedDB.
pub(crate) async fn save_docs() {
    let Some(db) = db() else { return };
    let t = now_ms();
    // Each month saved is saved with its items, for the next open.
    let mut months: Vec<(String, wasm_bindgen::JsValue)> = Vec::new();
    let dirty: Vec<(String, Vec<u8>)> = CORE.with(|c| {
        let mut c = c.borrow_mut();
        let ids = c.lib.take_dirty();
        ids.into_iter()
            .filter_map(|id| {
                let bytes = c.lib.save(&id)?;
                if let Some(e) = state::saved_month(&mut c.lib, &id, &bytes) {
                    months.push((id.to_string(), db::bytes_value(&e)));
                }
                Some((id.to_string(), bytes))
            })
            .collect()
    });
    perf::add("save.automerge_ms", now_ms() - t);
    perf::add("save.docs", dirty.len() as f64);
    perf::add("save.pending", dirty.len() as f64);
    perf::publish();
    let t = now_ms();
    let n = dirty.len() as f64;
    let items: Vec<(String, wasm_bindgen::JsValue)> = dirty
        .into_iter()
        .map(|(k, b)| {
            let v = db::bytes_value(&b);
            // What the document reads from when unloaded: the bytes just saved (if the write
            // below fails, the document is saved again, so it is never unloaded meanwhile).
            if let (Ok(id), Some(arr)) = (DocId::parse(&k), v.dyn_ref::<js_sys::Uint8Array>()) {
                state::stored(&id, arr.clone());
            }
            (k, v)
        })
        .collect();
    let mut saved = db::put_many(&db, db::DOCS, &items).await;
    if let Err(e) = &saved {
        if db::storage_full(e).await {
            // The catalogue comes first: the saved months' items (a cache) make room, and the
            // documents are written again.
            log(&format!(
                "cannot save documents ({e}), storage is nearly full: dropping the saved months"
            ));
            drop_saved_months().await;
            months.clear();
            saved = db::put_many(&db, db::DOCS, &items).await;
        }
    }
    if let Err(e) = saved {
        // The documents stay in memory and are saved again with the next change or sync.
        let names: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
        log(&format!("cannot save documents {}: {e}", names.join(", ")));
        CORE.with(|c| {
            let mut c = c.borrow_mut();
            for (k, _) in &items {
                if let Ok(id) = DocId::parse(k) {
                    c.lib.mark_dirty(&id);
                }
            }
        });
    }
    perf::add("save.pending", -n);
    perf::add("save.indexeddb_ms", now_ms() - t);
    // After the documents: an entry names the bytes it was saved for, so one written for
    // bytes that did not reach IndexedDB is simply not used.
    write_saved_months(months, Vec::new()).await;
    CORE.with(|c| state::evict(&mut c.borrow_mut().lib));
    perf::publish();
}

/// What this device takes from its node: everything the node sends (it decides what this
/// user may see: their own documents, albums they are in, partners' shared months) except the
/// household's accounts, which never leave the nodes.
pub(crate) fn from_node(d: &DocId) -> bool {
    !d.is_household()
}

/// Forgets documents the node says this user may no longer see (removed from an album, a
/// partner stopped sharing): from memory and from IndexedDB, at once.
pub(crate) async fn drop_docs(ids: Vec<DocId>) {
    if ids.is_empty() {
        return;
    }
    CORE.with(|c| {
        let mut c = c.borrow_mut();
        for d in &ids {
            c.lib.remove_doc(d);
            state::unstored(d);
        }
    });
    if let Some(db) = db() {
        for d in &ids {
            if let Err(e) = db::delete(&db, db::DOCS, d.as_str()).await {
                log(&format!("cannot drop document {d}: {e}"));
            }
        }
    }
    // Their saved items too (what was in them: file names, places).
    let months: Vec<String> = ids
        .iter()
        .filter(|d| d.month().is_some())
        .map(|d| d.to_string())
        .collect();
    write_saved_months(Vec::new(), months).await;
    log(&format!(
        "dropped {} shared document(s) no longer shared with me",
        ids.len()
    ));
}

/// Sync rounds with the node until neither side has anything to say.
pub(crate) async fn sync_now(ui: Ui) {
    if user_id().is_none() || opening() {
        return;
    }
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
    // Each answer carries at most the node's round budget (2 MiB of messages), so a new
    // device's first sync of a large library takes many rounds: go on while either side has
    // something to say (bounded: 300k photos take about 20).
    for _round in 0..5_000 {
        let up = CORE.with(|c| {
            let mut c = c.borrow_mut();
            let c = &mut *c;
            let ids: Vec<DocId> = c.lib.ids().cloned().collect();
            // Saying what this browser holds gets it the rest whole: a new browser reads
            // the library as saved documents, not change by change.
            SyncEnvelope::new(peer.clone(), c.sync.generate(&mut c.lib, &ids)).with_holds(&ids)
        });
        let quiet_up = up.docs.is_empty();
        perf::add("sync.up_docs", up.docs.len() as f64);
        let t = now_ms();
        let answer = net::post_bytes("/api/tessera/sync", &up.encode()).await;
        perf::add("sync.rounds", 1.0);
        perf::add("sync.wait_ms", now_ms() - t);
        match answer {
            Ok(bytes) => {
                perf::add("sync.bytes", bytes.len() as f64);
                let t = now_ms();
                let down = match SyncEnvelope::decode(&bytes) {
                    Ok(d) => d,
                    Err(e) => {
                        state = "offline".into();
                        ui.error.set(Some(format!("bad sync answer: {e}")));
                        break;
                    }
                };
                let quiet_down = down.docs.is_empty();
                drop_docs(down.dropped_ids()).await;
                let res = CORE.with(|c| {
                    let mut c = c.borrow_mut();
                    let c = &mut *c;
                    c.sync.receive(&mut c.lib, down.docs, from_node)
                });
                perf::add("sync.apply_ms", now_ms() - t);
                match res {
                    Err(e) => {
                        // Asking again would get the same answer: stop until the next sync.
                        ui.error.set(Some(format!("sync: {e}")));
                        break;
                    }
                    Ok(changed) if !changed.is_empty() => {
                        // Show what arrived and keep it (IndexedDB writes in the background
                        // while the next round is fetched).
                        save_soon();
                        refresh_soon(ui);
                    }
                    Ok(_) => {}
                }
                perf::publish();
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
