//! The viewer: one asset large with its metadata, video and Live playback, its actions and
//! the keyboard shortcuts.

use std::collections::HashSet;

use leptos::prelude::*;
use tessera_core::AssetRecord;
use wasm_bindgen::JsCast;

use crate::actions::{apply, toggle_favorite, Action};
use crate::routes;
use crate::state::Ui;
use crate::timeline::{self, View};

pub(crate) fn describe(r: &AssetRecord) -> Vec<(String, String)> {
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

/// Keyboard: the viewer's shortcuts, Escape clears the selection.
pub(crate) fn on_key(ui: Ui, ev: &web_sys::KeyboardEvent) {
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
        let pos = v.index.get(cur.id.as_str()).copied();
        let prev = pos
            .and_then(|p| p.checked_sub(1))
            .and_then(|p| v.items.get(p))
            .map(|r| r.record());
        let next = pos.and_then(|p| v.items.get(p + 1)).map(|r| r.record());
        (pos, prev, next)
    });
    let _ = pos;
    match ev.key().as_str() {
        "Escape" => routes::close_viewer(ui),
        "ArrowRight" => {
            if let Some(n) = next {
                routes::show_in_viewer(ui, Some(n));
            }
        }
        "ArrowLeft" => {
            if let Some(p) = prev {
                routes::show_in_viewer(ui, Some(p));
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

/// An action from the viewer: the viewer moves on to the next item if this one leaves the view.
pub(crate) fn viewer_action(ui: Ui, cur: &AssetRecord, a: Action) {
    let next = timeline::VIEW.with(|v| {
        let v = v.borrow();
        let p = v.index.get(cur.id.as_str()).copied()?;
        v.items
            .get(p + 1)
            .or_else(|| v.items.get(p.checked_sub(1)?))
            .map(|r| r.record())
    });
    apply(ui, std::slice::from_ref(cur), a);
    if ui.view.get_untracked() != View::Duplicates
        && timeline::VIEW.with(|v| !v.borrow().index.contains_key(cur.id.as_str()))
    {
        routes::show_in_viewer(ui, next);
    }
}

/// The `codecs` parameter a browser understands for a container's codec name.
pub(crate) fn codec_param(codec: &str) -> Option<&'static str> {
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
pub(crate) fn unplayable(r: &AssetRecord) -> Option<String> {
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
pub(crate) fn Viewer(ui: Ui) -> impl IntoView {
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
            // A photo someone shared with me (a partner's): mine only once I save it.
            // Reactive: "Save to my library" turns the photo into mine while the viewer is open.
            let mine = {
                let (id, month) = (r.id.clone(), r.month());
                Memo::new(move |_| {
                    ui.ver.track();
                    let me = crate::state::user_id().unwrap_or_default();
                    crate::state::CORE.with(|c| {
                        tessera_core::DocId::shard(&me, &month)
                            .is_ok_and(|d| c.borrow().lib.asset_in(&d, &id).ok().flatten().is_some())
                    })
                })
            };
            let saved = RwSignal::new(None::<String>);
            let save_id = r.id.clone();
            let save = move |_| {
                let id = save_id.clone();
                leptos::task::spawn_local(async move {
                    let path = format!("/api/tessera/assets/{id}/save");
                    match crate::net::json("POST", &path, None).await {
                        Ok(_) => {
                            saved.set(Some("Saved: it is in your library now (same file, no copy).".into()));
                            crate::catalogue::sync_now(ui).await;
                        }
                        Err(e) if e.is_offline() => saved.set(Some("Saving needs the node: you are offline".into())),
                        Err(e) => saved.set(Some(e.message)),
                    }
                });
            };
            view! {
                <div id="viewer" class="viewer" on:click=move |_| routes::close_viewer(ui)>
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
                            {move || (!mine.get()).then(|| view! {
                                <p class="dim">"Shared with you"</p>
                                <button id="save-to-library" class="button" on:click=save.clone()>"Save to my library"</button>
                            })}
                            {move || saved.get().map(|m| view! { <p class="hint">{m}</p> })}
                            <crate::albums::PhotoActivity ui=ui asset=r.id.clone()/>
                            {move || mine.get().then(|| { let r = r.clone(); view! {
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
                            }})}
                            <a id="download-original" class="button" href=format!("/api/assets/{id}/original") download="">"Download original"</a>
                            <p class="hint">"← → browse · f favorite · a archive · Del trash · Esc close"</p>
                            <button class="link" on:click=move |_| routes::close_viewer(ui)>"Close (Esc)"</button>
                        </aside>
                    </div>
                </div>
            }
        })}
    }
}
