//! The signed-in shell: navigation, the selection bar, the panels (devices, ML, uploads, trash)
//! and the current view's page.

use std::collections::HashSet;

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::actions::{apply, delete_permanently, Action};
use crate::outbox::{enqueue_files, file_list};
use crate::pages::household::HouseholdPanel;
use crate::pages::ml_panel::MlPanel;
use crate::routes::set_view;
use crate::state::{is_admin, Ui};
use crate::timeline::{self, View};
use crate::{albums, dupes};

#[component]
pub(crate) fn SelectionBar(ui: Ui) -> impl IntoView {
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

#[component]
pub(crate) fn Nav(ui: Ui) -> impl IntoView {
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
            {item(View::Search, "nav-search", "⌕", "Search")}
            {item(View::Map, "nav-map", "◍", "Places")}
            {item(View::Albums, "nav-albums", "▤", "Albums")}
            {item(View::Sharing, "nav-sharing", "⇄", "Sharing")}
            <Show when=is_admin>
                {item(View::Members, "nav-members", "☺", "Members")}
            </Show>
        </nav>
    }
}

#[component]
pub(crate) fn Timeline(ui: Ui) -> impl IntoView {
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
        View::Duplicates
        | View::Albums
        | View::Members
        | View::Sharing
        | View::Search
        | View::Map => ("", ""),
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
                } else if ui.view.get() == View::Sharing {
                    view! { <crate::pages::sharing::SharingPage ui=ui/> }.into_any()
                } else if ui.view.get() == View::Map {
                    view! { <crate::pages::map_page::MapPage ui=ui/> }.into_any()
                } else if ui.view.get() == View::Search {
                    view! { <crate::pages::search_page::SearchPage ui=ui/> }.into_any()
                } else {
                    view! {
                        <Show when=move || ui.count.get() == 0>
                            <div class="empty">
                                <h2>{move || empty_text().0}</h2>
                                <p>{move || empty_text().1}</p>
                            </div>
                        </Show>
                        <Show when=move || ui.view.get() == View::Photos>
                            <crate::pages::search_page::MemoriesStrip ui=ui/>
                        </Show>
                        <timeline::TimelineView ui=ui/>
                    }.into_any()
                }}
            </main>
        </div>
    }
}
