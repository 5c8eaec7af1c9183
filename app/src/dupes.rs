//! Duplicates review: near-duplicate groups from the local catalogue (`tessera_core::dupes`),
//! side by side; the user confirms which to keep. Nothing is trashed without that confirmation,
//! and "Not duplicates" is remembered in the catalogue (so it syncs).

use leptos::prelude::*;
use leptos::task::spawn_local;
use std::sync::Arc;

use tessera_core::dupes::{dup_group, group_hashes, sort_groups, DupGroup, DEFAULT_THRESHOLD};
use tessera_core::{AssetRecord, DocId};

use crate::actions::{apply, Action};
use crate::catalogue::save_and_push;
use crate::items::Item;
use crate::routes;
use crate::state::{now_rfc3339, refresh_view, user_id, Ui, CORE, SHARDS};
use crate::thumbs::{load_thumb, thumbhash_url};

/// Near-duplicate groups among the photos the lists hold (their hashes are in the items);
/// the whole records are read for the grouped photos only.
fn groups() -> Vec<DupGroup> {
    let Some(user) = user_id() else {
        return Vec::new();
    };
    let rejected = CORE.with(|c| {
        c.borrow()
            .lib
            .rejected_duplicates(&user)
            .unwrap_or_default()
    });
    // (month document, item, hash) of every photo near_duplicate_groups would consider; a
    // partner's photo I saved to my library once, as mine.
    let mine = format!("u/{user}/");
    let live: Vec<(DocId, Arc<Item>, u64)> = SHARDS.with(|c| {
        let c = c.borrow();
        let own: std::collections::HashSet<&str> = c
            .iter()
            .filter(|(k, _)| k.starts_with(&mine))
            .flat_map(|(_, (_, a))| a.iter().map(|r| &*r.id))
            .collect();
        let own = &own;
        c.iter()
            .filter_map(|(k, (_, a))| Some((DocId::parse(k).ok()?, k.starts_with(&mine), a)))
            .flat_map(|(doc, is_mine, a)| {
                a.iter()
                    .filter(|r| r.trashed_at().is_none() && !r.is_purged() && r.shown_alone())
                    .filter(move |r| is_mine || !own.contains(&*r.id))
                    .filter_map(move |r| Some((doc.clone(), r.clone(), r.phash()?)))
            })
            .collect()
    });
    let ids: Vec<&str> = live.iter().map(|(_, r, _)| &*r.id).collect();
    let hashes: Vec<u64> = live.iter().map(|(_, _, h)| *h).collect();
    let mut out: Vec<DupGroup> = CORE.with(|c| {
        let c = c.borrow();
        group_hashes(&ids, &hashes, DEFAULT_THRESHOLD, &rejected)
            .into_iter()
            .map(|(members, distance)| {
                let whole = members
                    .iter()
                    .map(|&i| {
                        let (doc, item, _) = &live[i];
                        c.lib
                            .asset_in(doc, &item.id)
                            .ok()
                            .flatten()
                            .unwrap_or_else(|| item.record())
                    })
                    .collect();
                dup_group(whole, distance)
            })
            .collect()
    });
    sort_groups(&mut out);
    out
}

fn not_duplicates(ui: Ui, ids: Vec<String>) {
    let Some(user) = user_id() else { return };
    let at = now_rfc3339();
    let res = CORE.with(|c| c.borrow_mut().lib.reject_duplicates(&user, &ids, &at));
    match res {
        Ok(_) => {
            ui.dupes_ver.update(|v| *v += 1);
            save_and_push(ui);
        }
        Err(e) => ui.error.set(Some(format!("cannot remember this: {e}"))),
    }
}

fn card_facts(r: &AssetRecord) -> Vec<String> {
    let mut v = Vec::new();
    if let (Some(w), Some(h)) = (r.width, r.height) {
        v.push(format!("{w} × {h}"));
    }
    if let Some(s) = r.size {
        v.push(if s >= 1_000_000 {
            format!("{:.1} MB", s as f64 / 1e6)
        } else {
            format!("{:.0} KB", s as f64 / 1e3)
        });
    }
    if let Some(t) = &r.taken_at {
        v.push(t.replace('T', " "));
    }
    v
}

#[component]
fn Group(ui: Ui, g: DupGroup) -> impl IntoView {
    let keep = RwSignal::new(g.keep.clone());
    let assets = g.assets.clone();
    let all_ids: Vec<String> = g.assets.iter().map(|a| a.id.clone()).collect();
    let n = assets.len();
    let trash_others = {
        let assets = assets.clone();
        move |_| {
            let k = keep.get_untracked();
            let others: Vec<AssetRecord> = assets.iter().filter(|a| a.id != k).cloned().collect();
            apply(ui, &others, Action::Trash);
            ui.dupes_ver.update(|v| *v += 1);
        }
    };
    view! {
        <section class="dup-group" data-id=g.id.clone()>
            <h3>{format!("{n} similar photos")}<span class="dim">{format!(" · distance {}", g.distance)}</span></h3>
            <div class="dup-cards">
                {assets.into_iter().map(|a| {
                    let id = a.id.clone();
                    let id2 = id.clone();
                    let id3 = id.clone();
                    let ph = thumbhash_url(a.thumbhash.as_deref());
                    let src = move || ui.thumbs.with(|t| t.get(&id2).cloned()).unwrap_or_else(|| ph.clone());
                    if a.status.as_deref() == Some("ready") {
                        spawn_local(load_thumb(ui, id.clone()));
                    }
                    let name = a.filename.clone().unwrap_or_default();
                    let facts = card_facts(&a);
                    let rec = a.clone();
                    view! {
                        <figure class=move || if keep.get() == id3 { "dup-card dup-keep" } else { "dup-card" } data-id=id.clone()
                            on:click=move |_| keep.set(id.clone())>
                            <img class="thumb" src=src alt="" on:dblclick=move |_| routes::open_viewer(ui, rec.clone())/>
                            <figcaption>
                                <label><input type="radio" name=format!("keep-{}", g.id) prop:checked={let id = a.id.clone(); move || keep.get() == id}/>" Keep"</label>
                                <span class="fname">{name}</span>
                                {facts.into_iter().map(|f| view! { <span class="fact">{f}</span> }).collect_view()}
                            </figcaption>
                        </figure>
                    }
                }).collect_view()}
            </div>
            <div class="dup-actions">
                <button class="button danger dup-trash" on:click=trash_others>{format!("Keep selected, move {} to trash", n - 1)}</button>
                <button class="button secondary dup-not" on:click=move |_| not_duplicates(ui, all_ids.clone())>"Not duplicates"</button>
            </div>
        </section>
    }
}

#[component]
pub fn DuplicatesPage(ui: Ui) -> impl IntoView {
    // The shard cache holds every photo; make sure it is current.
    refresh_view(ui, false);
    let list = Memo::new(move |_| {
        ui.dupes_ver.track();
        ui.ver.track();
        groups()
    });
    let hashed = move || {
        ui.ver.track();
        SHARDS.with(|c| {
            c.borrow()
                .values()
                .flat_map(|(_, a)| a.iter())
                .filter(|r| r.phash().is_some())
                .count()
        })
    };
    view! {
        <div id="duplicates" class="duplicates">
            <h2>"Duplicates"</h2>
            <p class="hint">{move || format!(
                "Near-duplicates among {} analysed photos. Pick the one to keep; nothing is deleted until you confirm, and trashed items can be restored for {} days.",
                hashed(), ui.trash_days.get())}</p>
            <Show when=move || list.with(|l| l.is_empty())>
                <div class="empty"><h2>"No duplicates found"</h2></div>
            </Show>
            <For each=move || list.get() key=|g| format!("{}:{}", g.id, g.assets.len()) let:g>
                <Group ui=ui g=g/>
            </For>
        </div>
    }
}
