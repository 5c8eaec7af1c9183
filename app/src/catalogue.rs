//! The local catalogue: documents loaded from and saved to IndexedDB, record look-ups, local
//! edits, and HTTP sync rounds with the node (while no iroh session is up).

use leptos::prelude::*;
use leptos::task::spawn_local;
use tessera_core::{AssetRecord, DocId, SyncEnvelope};

use crate::state::{db, log, refresh, user_id, Screen, Ui, CORE, SHARDS};
use crate::{db, net, p2p, session};

/// Every record of the catalogue (from the shard cache).
pub(crate) fn all_records() -> Vec<AssetRecord> {
    SHARDS.with(|c| {
        c.borrow()
            .values()
            .flat_map(|(_, a)| a.iter().cloned())
            .collect()
    })
}

/// The record of an asset: my own copy first (a partner's photo I saved is in both).
pub(crate) fn find_record(id: &str) -> Option<AssetRecord> {
    let mine = user_id().map(|u| format!("u/{u}/")).unwrap_or_default();
    SHARDS.with(|c| {
        let c = c.borrow();
        let find = |own: bool| {
            c.iter()
                .filter(|(k, _)| k.starts_with(&mine) == own)
                .find_map(|(_, (_, a))| a.iter().find(|r| r.id == id).cloned())
        };
        find(true).or_else(|| find(false))
    })
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

/// Loads the catalogue documents from IndexedDB.
pub(crate) async fn load_docs(ui: Ui) {
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
pub(crate) async fn save_docs() {
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
        }
    });
    if let Some(db) = db() {
        for d in &ids {
            if let Err(e) = db::delete(&db, db::DOCS, d.as_str()).await {
                log(&format!("cannot drop document {d}: {e}"));
            }
        }
    }
    log(&format!(
        "dropped {} shared document(s) no longer shared with me",
        ids.len()
    ));
}

/// Sync rounds with the node until neither side has anything to say.
pub(crate) async fn sync_now(ui: Ui) {
    if user_id().is_none() {
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
                drop_docs(down.dropped_ids()).await;
                let res = CORE.with(|c| {
                    let mut c = c.borrow_mut();
                    let c = &mut *c;
                    c.sync.receive(&mut c.lib, down.docs, from_node)
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
