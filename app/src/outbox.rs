//! The outbox of originals in IndexedDB: files are queued first, then uploaded; an entry leaves
//! only when the node acknowledged it.

use leptos::prelude::*;
use wasm_bindgen::JsValue;

use crate::catalogue::sync_now;
use crate::state::{db, user_id, Ui, Upload, CORE};
use crate::{db, net, session};

pub(crate) async fn update_outbox_count(ui: Ui) {
    if let Some(db) = db() {
        if let Ok(n) = db::count(&db, db::OUTBOX).await {
            ui.outbox.set(n);
        }
    }
}

pub(crate) fn set_upload(ui: Ui, key: &str, f: impl FnOnce(&mut Upload)) {
    ui.uploads.update(|v| {
        if let Some(u) = v.iter_mut().find(|u| u.key == key) {
            f(u);
        }
    });
}

/// Lists what waits in the outbox (files shared to Tessera from another app go there through
/// the service worker, offline too) in the uploads panel, so a phone shows them at once.
pub(crate) async fn show_outbox(ui: Ui) {
    let Some(db) = db() else { return };
    let entries = db::all(&db, db::OUTBOX).await.unwrap_or_default();
    let shared = web_sys::window()
        .and_then(|w| w.location().search().ok())
        .is_some_and(|s| s.contains("shared="));
    for (key, v) in entries {
        let Some(name) = db::field_str(&v, "name") else {
            continue;
        };
        if ui
            .uploads
            .with_untracked(|u| u.iter().any(|u| u.key == key))
        {
            continue;
        }
        ui.uploads.update(|u| {
            u.push(Upload {
                key,
                name,
                progress: 0.0,
                state: if shared {
                    "shared · in the outbox"
                } else {
                    "in the outbox"
                }
                .into(),
            })
        });
    }
    if shared {
        // The share target's redirect (`/?shared=N`): not a route to keep in history.
        if let Some(h) = web_sys::window().and_then(|w| w.history().ok()) {
            let _ = h.replace_state_with_url(&JsValue::NULL, "", Some("/"));
        }
    }
    update_outbox_count(ui).await;
}

/// Puts dropped/picked files into the outbox, then uploads.
pub(crate) async fn enqueue_files(ui: Ui, files: Vec<web_sys::File>) {
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
pub(crate) async fn drain_outbox(ui: Ui) {
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

pub(crate) fn file_list(list: Option<web_sys::FileList>) -> Vec<web_sys::File> {
    let Some(list) = list else { return Vec::new() };
    (0..list.length()).filter_map(|i| list.get(i)).collect()
}
