//! Tessera's PWA (leptos CSR). The catalogue lives in IndexedDB as automerge documents and is
//! synced with the node by `tessera-core`'s protocol; originals wait in an IndexedDB outbox
//! until the node acknowledges them durably stored.
//!
//! Architecture invariant: the UI renders from the local `Library` only, never from HTTP
//! responses directly, so it works the same offline.
//!
//! `lib.rs` holds the module list, `start()` and the `App` shell (header, current screen,
//! viewer); `routes.rs` maps the URL to the view and back.

mod actions;
mod albums;
mod boot;
mod catalogue;
mod db;
mod dupes;
mod items;
mod layout;
mod net;
mod outbox;
mod p2p;
mod pages;
mod perf;
mod routes;
mod search;
mod search_worker;
mod session;
mod state;
mod thumbs;
mod timeline;
mod viewer;

use std::collections::{HashMap, HashSet};

use leptos::prelude::*;
use leptos::task::spawn_local;
use tessera_core::ml::MlProgress;

use outbox::{enqueue_files, file_list};
use pages::auth_form::AuthForm;
use pages::timeline_page::Timeline;
use state::{Screen, Ui, CORE, SHARDS};
use timeline::View;
use viewer::{on_key, Viewer};

pub fn start() {
    console_error_panic_hook();
    leptos::mount::mount_to_body(App);
}

fn console_error_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&info.to_string().into())
    }));
}

#[component]
fn App() -> impl IntoView {
    let ui = Ui {
        screen: RwSignal::new(Screen::Loading),
        view: RwSignal::new(View::Photos),
        album: RwSignal::new(None),
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
        search_text: RwSignal::new(String::new()),
        search_person: RwSignal::new(None),
        search_place: RwSignal::new(None),
        library: RwSignal::new(Default::default()),
    };
    spawn_local(boot::boot(ui));
    let _ = window_event_listener(leptos::ev::keydown, move |ev: web_sys::KeyboardEvent| {
        on_key(ui, &ev)
    });
    let _ = window_event_listener(leptos::ev::popstate, move |ev: web_sys::PopStateEvent| {
        routes::on_popstate(ui, &ev)
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
                    {move || {
                        let p = ui.library.get();
                        p.label().map(|l| view! {
                            " · "<span id="library-progress" class="progress-note"
                                data-have=p.have.to_string() data-total=p.total.to_string()
                                data-opening=p.opening.is_some().to_string()>{l}</span>
                        })
                    }}
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
