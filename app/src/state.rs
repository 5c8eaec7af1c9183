//! The UI's state: the reactive `Ui` signals, the non-reactive `Core` (catalogue, database,
//! session) and the rebuild of the current view from the local catalogue.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use leptos::prelude::*;
use rexie::Rexie;
use tessera_core::ml::{MlProgress, PersonSummary};
use tessera_core::{AssetRecord, DocId, Library, PeerSync};

use crate::catalogue::find_record;
use crate::routes;
use crate::session::{self, Session};
use crate::timeline::{self, View};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Screen {
    Loading,
    SignUp,
    Login,
    Timeline,
}

#[derive(Clone, PartialEq, Debug)]
pub(crate) struct Upload {
    pub(crate) key: String,
    pub(crate) name: String,
    pub(crate) progress: f64,
    pub(crate) state: String,
}

/// The reactive UI state (all `Copy` handles).
#[derive(Clone, Copy)]
pub(crate) struct Ui {
    pub(crate) screen: RwSignal<Screen>,
    /// Which view the main area shows.
    pub(crate) view: RwSignal<View>,
    /// The album open on the Albums page.
    pub(crate) album: RwSignal<Option<String>>,
    /// Bumped whenever the view's items (`timeline::VIEW`) change.
    pub(crate) ver: RwSignal<u64>,
    /// Bumped whenever an album document changes.
    pub(crate) albums_ver: RwSignal<u64>,
    /// Items in the current view.
    pub(crate) count: RwSignal<usize>,
    /// Multi-selection (asset ids).
    pub(crate) selected: RwSignal<HashSet<String>>,
    /// The library's trash retention.
    pub(crate) trash_days: RwSignal<u32>,
    /// Bumped when the duplicates page should regroup.
    pub(crate) dupes_ver: RwSignal<u64>,
    pub(crate) sync_state: RwSignal<String>,
    /// How the catalogue syncs right now: `iroh` (live) or `http` (rounds every few seconds).
    pub(crate) transport: RwSignal<String>,
    /// The devices & nodes panel is open.
    pub(crate) household: RwSignal<bool>,
    pub(crate) outbox: RwSignal<u32>,
    pub(crate) uploads: RwSignal<Vec<Upload>>,
    pub(crate) viewer: RwSignal<Option<AssetRecord>>,
    pub(crate) error: RwSignal<Option<String>>,
    pub(crate) thumbs: RwSignal<HashMap<String, String>>,
    /// What the ML node published: progress and people (from the local catalogue).
    pub(crate) ml: RwSignal<(MlProgress, Vec<PersonSummary>)>,
    /// The Search page's text and chosen person (kept while navigating).
    pub(crate) search_text: RwSignal<String>,
    pub(crate) search_person: RwSignal<Option<String>>,
    /// A place to open on the Search page (country, city), e.g. from the map.
    pub(crate) search_place: RwSignal<Option<(String, String)>>,
}

/// A shard's records and the document heads they were read at.
pub(crate) type ShardCache = (Vec<String>, Vec<AssetRecord>);

/// Non-reactive state: the catalogue and the database.
pub(crate) struct Core {
    pub(crate) db: Option<Rc<Rexie>>,
    pub(crate) lib: Library,
    pub(crate) sync: PeerSync,
    pub(crate) session: Option<Session>,
    pub(crate) syncing: bool,
    pub(crate) draining: bool,
}

thread_local! {
    /// Each shard's records, keyed by month, with the document heads they were read at.
    pub(crate) static SHARDS: RefCell<BTreeMap<String, ShardCache>> = const { RefCell::new(BTreeMap::new()) };
    /// The heads of every album document when the Albums page last read them.
    static ALBUM_SIG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    pub(crate) static CORE: RefCell<Core> = RefCell::new(Core {
        db: None,
        lib: Library::new(&session::device().actor),
        sync: PeerSync::new(),
        session: None,
        syncing: false,
        draining: false,
    });
}

pub(crate) fn log(msg: &str) {
    web_sys::console::log_1(&msg.into());
}

pub(crate) fn db() -> Option<Rc<Rexie>> {
    CORE.with(|c| c.borrow().db.clone())
}

pub(crate) fn user_id() -> Option<String> {
    CORE.with(|c| c.borrow().session.as_ref().map(|s| s.user_id.clone()))
}

/// Rebuilds the current view from the local catalogue if it changed.
pub(crate) fn refresh(ui: Ui) {
    refresh_view(ui, false);
}

/// Re-reads the shards whose heads moved (all of them the first time), then rebuilds the
/// current view when something changed or `force`.
pub(crate) fn refresh_view(ui: Ui, force: bool) {
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
        // My months, and those of partners I chose to show in my timeline (their shares are
        // synced to this device read-only; its own root summaries list their months).
        let mut months: Vec<DocId> = Vec::new();
        let partners: Vec<String> = c
            .lib
            .ids()
            .filter(|d| d.is_root() && d.user() != user)
            .map(|d| d.user().to_owned())
            .filter(|p| c.lib.partner_in_timeline(&user, p))
            .collect();
        for who in std::iter::once(user.clone()).chain(partners) {
            for s in c.lib.shards(&who).unwrap_or_default() {
                if let Ok(id) = DocId::shard(&who, &s.month) {
                    if c.lib.contains(&id) {
                        months.push(id);
                    }
                }
            }
        }
        let mine = format!("u/{user}/");
        let items = SHARDS.with(|cache| {
            let mut cache = cache.borrow_mut();
            let mut changed = false;
            let mut seen = HashSet::new();
            for id in months {
                let heads = c.lib.heads(&id);
                let key = id.to_string();
                seen.insert(key.clone());
                if cache.get(&key).map(|e| &e.0) != Some(&heads) {
                    let assets = c.lib.assets(&id).unwrap_or_default();
                    cache.insert(key, (heads, assets));
                    changed = true;
                }
            }
            let before = cache.len();
            cache.retain(|k, _| seen.contains(k));
            changed |= cache.len() != before;
            (changed || force).then(|| {
                // A partner's photo I saved to my library shows once, as mine.
                let own: HashSet<&str> = cache
                    .iter()
                    .filter(|(k, _)| k.starts_with(&mine))
                    .flat_map(|(_, (_, a))| a.iter().map(|r| r.id.as_str()))
                    .collect();
                let own = &own;
                cache
                    .iter()
                    // A partner's photos show in Photos only (never in my trash or archive).
                    .filter(|(k, _)| k.starts_with(&mine) || view == View::Photos)
                    .flat_map(|(k, (_, a))| {
                        let partner = !k.starts_with(&mine);
                        a.iter().filter(move |r| {
                            view.includes(r) && !(partner && own.contains(r.id.as_str()))
                        })
                    })
                    .cloned()
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
        // The asset a URL named before it was in the local catalogue.
        routes::open_pending(ui);
    }
    if ui.ml.get_untracked() != ml {
        ui.ml.set(ml);
    }
}

/// An RFC 3339 timestamp of now.
pub(crate) fn now_rfc3339() -> String {
    js_sys::Date::new_0()
        .to_iso_string()
        .as_string()
        .unwrap_or_default()
}

pub(crate) fn is_admin() -> bool {
    CORE.with(|c| c.borrow().session.as_ref().is_some_and(|s| s.is_admin))
}
