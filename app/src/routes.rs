//! Client-side routes without a router crate: the URL names the view, the open album and the
//! asset in the viewer; navigating pushes a history entry (`history.pushState`) and the back and
//! forward buttons (`popstate`) restore the state from the URL. The node serves `index.html` for
//! unknown non-API paths, so a deep link works on reload.
//!
//! | path                | shows                                              |
//! |---------------------|----------------------------------------------------|
//! | `/`                 | Photos                                             |
//! | `/favorites`        | Favorites                                          |
//! | `/archive`          | Archive                                            |
//! | `/trash`            | Trash                                              |
//! | `/duplicates`       | Duplicates                                         |
//! | `/albums`           | Albums                                             |
//! | `/albums/<album>`   | that album                                         |
//! | `/members`          | Members (admins; Photos for anyone else)           |
//! | `/sharing`          | Sharing: partners and public links                 |
//! | `/search`           | Search (and a person's photos)                     |
//! | `/map`              | Places: the offline map                            |
//! | `/photos/<asset>`   | the viewer on that asset, over the page under it   |
//!
//! Each entry's `history.state` is the path of the page under the viewer, so going back to a
//! `/photos/…` entry restores that page too. Any other path shows Photos. `/share/…` belongs to
//! the node (public share pages), never to the PWA. The query string (`?bench=N`) is kept.

use std::cell::RefCell;
use std::collections::HashSet;

use leptos::prelude::*;
use tessera_core::AssetRecord;
use wasm_bindgen::JsValue;

use crate::catalogue::find_record;
use crate::state::{is_admin, log, refresh_view, Screen, Ui};
use crate::timeline::{self, View};

thread_local! {
    /// An asset the URL names that is not in the local catalogue yet: the viewer opens it when
    /// it arrives by sync (any navigation forgets it).
    static PENDING: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A page: a view and, on the Albums page, the open album.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Page {
    view: View,
    album: Option<String>,
}

/// What a path names.
#[derive(Clone, PartialEq, Eq, Debug)]
enum Target {
    Page(Page),
    /// The viewer on an asset (over whatever page is under it).
    Asset(String),
}

const VIEWS: [(View, &str); 10] = [
    (View::Photos, "/"),
    (View::Favorites, "/favorites"),
    (View::Archive, "/archive"),
    (View::Trash, "/trash"),
    (View::Duplicates, "/duplicates"),
    (View::Albums, "/albums"),
    (View::Members, "/members"),
    (View::Sharing, "/sharing"),
    (View::Search, "/search"),
    (View::Map, "/map"),
];

fn encode(id: &str) -> String {
    js_sys::encode_uri_component(id).into()
}

/// A non-empty path segment, percent-decoded.
fn segment(s: &str) -> Option<String> {
    if s.is_empty() || s.contains('/') {
        return None;
    }
    js_sys::decode_uri_component(s).ok().map(String::from)
}

fn page_path(p: &Page) -> String {
    match (&p.view, &p.album) {
        (View::Albums, Some(a)) => format!("/albums/{}", encode(a)),
        (v, _) => VIEWS
            .iter()
            .find(|(x, _)| x == v)
            .map_or("/", |(_, p)| p)
            .to_owned(),
    }
}

fn parse(path: &str) -> Target {
    let trimmed = path.trim_end_matches('/');
    let page = |view, album| Target::Page(Page { view, album });
    let path = if trimmed.is_empty() { "/" } else { trimmed };
    if let Some((v, _)) = VIEWS.iter().find(|(_, p)| *p == path) {
        return page(*v, None);
    }
    if let Some(id) = path.strip_prefix("/albums/").and_then(segment) {
        return page(View::Albums, Some(id));
    }
    if let Some(id) = path.strip_prefix("/photos/").and_then(segment) {
        return Target::Asset(id);
    }
    page(View::Photos, None)
}

/// The page the UI shows (under the viewer).
fn current_page(ui: Ui) -> Page {
    let view = ui.view.get_untracked();
    let album = (view == View::Albums)
        .then(|| ui.album.get_untracked())
        .flatten();
    Page { view, album }
}

/// Writes the UI's state to the URL: a new history entry (`push`) or the current one.
fn write(ui: Ui, push: bool) {
    let Some(w) = web_sys::window() else { return };
    let Ok(history) = w.history() else { return };
    let page = page_path(&current_page(ui));
    let path = match ui
        .viewer
        .with_untracked(|v| v.as_ref().map(|r| encode(&r.id)))
    {
        Some(id) => format!("/photos/{id}"),
        None => page.clone(),
    };
    let loc = w.location();
    if push && loc.pathname().ok().as_deref() == Some(path.as_str()) {
        return;
    }
    let url = format!("{path}{}", loc.search().unwrap_or_default());
    let state = JsValue::from_str(&page);
    let res = if push {
        history.push_state_with_url(&state, "", Some(&url))
    } else {
        history.replace_state_with_url(&state, "", Some(&url))
    };
    if let Err(e) = res {
        log(&format!("cannot write the URL {url}: {e:?}"));
    }
}

fn forget_pending() {
    PENDING.with_borrow_mut(|p| *p = None);
}

/// Shows view `v`: clears the selection, rebuilds the view, scrolls to the top. No history entry.
fn show_view(ui: Ui, v: View) {
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

/// Navigates to a view (the album list on Albums).
pub(crate) fn set_view(ui: Ui, v: View) {
    if ui.view.get_untracked() == v {
        return;
    }
    forget_pending();
    ui.album.set(None);
    show_view(ui, v);
    write(ui, true);
}

/// Opens an album of the Albums page (`None`: back to the list).
pub(crate) fn open_album(ui: Ui, id: Option<String>) {
    forget_pending();
    ui.album.set(id);
    write(ui, true);
}

/// Opens the viewer on `rec` (read whole from its month's document: the lists hold only part
/// of each record).
pub(crate) fn open_viewer(ui: Ui, rec: AssetRecord) {
    forget_pending();
    ui.viewer.set(Some(whole(rec)));
    write(ui, true);
}

/// The whole record of `rec` (it may come from a list, which holds part of it).
fn whole(rec: AssetRecord) -> AssetRecord {
    find_record(&rec.id).unwrap_or(rec)
}

/// Closes the viewer.
pub(crate) fn close_viewer(ui: Ui) {
    forget_pending();
    ui.viewer.set(None);
    write(ui, true);
}

/// Moves the open viewer to another asset (← →, or the next one after an action; `None`
/// closes it) in place: browsing does not add history entries.
pub(crate) fn show_in_viewer(ui: Ui, rec: Option<AssetRecord>) {
    forget_pending();
    ui.viewer.set(rec.map(whole));
    write(ui, false);
}

/// Restores the UI from the URL and the entry's state (the page under the viewer); then
/// canonicalises the URL in place. After a `popstate`, and once signed in with the catalogue
/// loaded.
fn restore(ui: Ui, state: &JsValue) {
    let Some(path) = web_sys::window().and_then(|w| w.location().pathname().ok()) else {
        return;
    };
    let (page, asset) = match parse(&path) {
        Target::Page(p) => (Some(p), None),
        Target::Asset(id) => {
            let under = state.as_string().and_then(|s| match parse(&s) {
                Target::Page(p) => Some(p),
                Target::Asset(_) => None,
            });
            (under, Some(id))
        }
    };
    forget_pending();
    if let Some(mut p) = page {
        if p.view == View::Members && !is_admin() {
            p = Page {
                view: View::Photos,
                album: None,
            };
        }
        if ui.album.get_untracked() != p.album {
            ui.album.set(p.album);
        }
        show_view(ui, p.view);
    }
    match asset.map(|id| (find_record(&id), id)) {
        Some((Some(r), _)) => {
            if ui.viewer.with_untracked(|v| v.as_ref() != Some(&r)) {
                ui.viewer.set(Some(r));
            }
        }
        Some((None, id)) => {
            PENDING.with_borrow_mut(|p| *p = Some(id));
            ui.viewer.set(None);
        }
        None => {
            if ui.viewer.with_untracked(Option::is_some) {
                ui.viewer.set(None);
            }
        }
    }
    write(ui, false);
}

/// Honours the URL the app was opened (or reloaded) at: once signed in, catalogue loaded.
pub(crate) fn restore_initial(ui: Ui) {
    let state = web_sys::window()
        .and_then(|w| w.history().ok())
        .and_then(|h| h.state().ok())
        .unwrap_or(JsValue::NULL);
    restore(ui, &state);
}

/// The back or forward button.
pub(crate) fn on_popstate(ui: Ui, ev: &web_sys::PopStateEvent) {
    // Signed out: the URL is honoured at the next sign-in.
    if ui.screen.get_untracked() == Screen::Timeline {
        restore(ui, &ev.state());
    }
}

/// Opens the asset the URL named once it is in the local catalogue (after a sync).
pub(crate) fn open_pending(ui: Ui) {
    let Some(id) = PENDING.with_borrow(Clone::clone) else {
        return;
    };
    if let Some(r) = find_record(&id) {
        forget_pending();
        ui.viewer.set(Some(r));
        write(ui, false);
    }
}
