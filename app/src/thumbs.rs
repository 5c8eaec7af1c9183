//! Thumbnails: thumbhash placeholders, the blob: URLs cached in IndexedDB, and the
//! IntersectionObserver that loads them as tiles come near the viewport.

use std::cell::RefCell;

use base64::Engine;
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::state::{db, Ui};
use crate::{db, net, timeline};

thread_local! {
    pub(crate) static OBSERVER: RefCell<Option<web_sys::IntersectionObserver>> = const { RefCell::new(None) };
}

/// A thumbhash as a data: URL (drawn on a canvas), the placeholder shown first.
pub(crate) fn thumbhash_url(hash: Option<&str>) -> String {
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
pub(crate) async fn load_thumb(ui: Ui, id: String) {
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
pub(crate) fn reset_observer(ui: Ui) {
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
pub(crate) fn observe_tile(ui: Ui, el: &web_sys::Element) {
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
