//! The UI's state: the reactive `Ui` signals, the non-reactive `Core` (catalogue, database,
//! session) and the rebuild of the current view from the local catalogue.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

use leptos::prelude::*;
use rexie::Rexie;
use tessera_core::ml::{MlProgress, PersonSummary};
use tessera_core::{AssetRecord, DocId, Library, PeerSync};

use crate::items::Item;

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
    /// How much of the catalogue this device holds (header progress while it opens or syncs).
    pub(crate) library: RwSignal<LibraryProgress>,
}

/// The catalogue's progress: opening from IndexedDB (documents read of those stored), then
/// photos held of those the month summaries announce (a new browser's first sync).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct LibraryProgress {
    pub(crate) opening: Option<(usize, usize)>,
    pub(crate) have: u64,
    pub(crate) total: u64,
}

impl LibraryProgress {
    /// What the header says, if anything.
    pub(crate) fn label(&self) -> Option<String> {
        if let Some((done, of)) = self.opening {
            return Some(format!("opening library {done}/{of}"));
        }
        (self.have < self.total).then(|| {
            format!(
                "receiving library: {} of {} photos",
                thousands(self.have),
                thousands(self.total)
            )
        })
    }
}

/// 300000 → "300,000".
pub(crate) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A shard's records (as compact [`Item`]s) and the document revision they were read at
/// ([`Library::revision`]: known without loading the document, and kept when it is unloaded
/// and read again).
pub(crate) type ShardCache = (u64, Vec<Arc<Item>>);

/// Saved size of the documents kept loaded beyond the roots (about 8× that in memory): the
/// rest are unloaded once their records are read, and read again from [`STORED`] when used.
const LOADED_BUDGET: usize = 4 << 20;

/// Non-reactive state: the catalogue and the database.
pub(crate) struct Core {
    pub(crate) db: Option<Rc<Rexie>>,
    pub(crate) lib: Library,
    pub(crate) sync: PeerSync,
    pub(crate) session: Option<Session>,
    pub(crate) syncing: bool,
    pub(crate) draining: bool,
    /// The catalogue is still being read from IndexedDB: no sync may run yet (a document
    /// received before its stored copy is loaded would be replaced by it).
    pub(crate) opening: bool,
}

thread_local! {
    /// Each shard's records, keyed by month, with the document revision they were read at.
    pub(crate) static SHARDS: RefCell<BTreeMap<String, ShardCache>> = const { RefCell::new(BTreeMap::new()) };
    /// Each own month's share of the ML progress, with the shard and ML revisions it was read at.
    static ML_CACHE: RefCell<BTreeMap<String, ([u64; 2], MlProgress)>> = const { RefCell::new(BTreeMap::new()) };
    /// People with faces, with the revisions of the ML and people documents they were read at.
    static PEOPLE_CACHE: RefCell<(Vec<u64>, Vec<PersonSummary>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    /// The revisions of every album document when the Albums page last read them.
    static ALBUM_SIG: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    /// Every document as stored in IndexedDB (kept in JavaScript memory, outside wasm): what
    /// the catalogue reads an unloaded document from.
    static STORED: RefCell<HashMap<DocId, js_sys::Uint8Array>> = RefCell::new(HashMap::new());
    pub(crate) static CORE: RefCell<Core> = RefCell::new(Core {
        db: None,
        lib: {
            // Documents received whole are stored in IndexedDB as they came.
            let mut lib = Library::new(&session::device().actor);
            lib.keep_received(true);
            // Documents are unloaded when clean and read again from their stored bytes.
            lib.set_loader(Box::new(|id| {
                STORED
                    .with(|s| s.borrow().get(id).map(|b| b.to_vec()))
                    .ok_or_else(|| format!("{id} is not stored on this device"))
            }));
            lib
        },
        sync: PeerSync::new(),
        session: None,
        syncing: false,
        draining: false,
        opening: false,
    });
    /// When the last rebuild of the view ended and what it cost (ms), and whether a deferred
    /// one is scheduled: see [`refresh_soon`].
    static REFRESH: std::cell::Cell<(f64, f64, bool)> = const { std::cell::Cell::new((0.0, 0.0, false)) };
    /// The shard cache changed since the view was last built from it (months are also read
    /// while the catalogue opens, before any view is built).
    static SHARDS_CHANGED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Records a document's bytes as stored in IndexedDB (loaded or just saved).
pub(crate) fn stored(id: &DocId, bytes: js_sys::Uint8Array) {
    STORED.with(|s| s.borrow_mut().insert(id.clone(), bytes));
}

/// Forgets a document's stored bytes (dropped from IndexedDB).
pub(crate) fn unstored(id: &DocId) {
    STORED.with(|s| s.borrow_mut().remove(id));
}

/// Unloads the documents used least recently beyond [`LOADED_BUDGET`]: never a root (the month
/// summaries are read all the time), one not stored as it is now, or a month whose records
/// the view has not read yet.
pub(crate) fn evict(lib: &mut Library) {
    let t = now_ms();
    let unloadable: HashSet<DocId> = SHARDS.with(|cache| {
        let cache = cache.borrow();
        STORED.with(|st| {
            let st = st.borrow();
            lib.ids()
                .filter(|id| !id.is_root() && st.contains_key(id))
                .filter(|id| {
                    id.month().is_none()
                        || cache.get(id.as_str()).map(|e| Some(e.0)) == Some(lib.revision(id))
                })
                .cloned()
                .collect()
        })
    });
    let n = lib.evict(loaded_budget(), &|id| unloadable.contains(id));
    crate::perf::add("evict.docs", n as f64);
    crate::perf::add("evict.ms", now_ms() - t);
    for (doc, e) in lib.take_load_errors() {
        log(&format!("cannot read stored document {doc}: {e}"));
    }
}

/// [`LOADED_BUDGET`], or the bytes `localStorage["tessera-loaded-budget"]` says (read once per
/// page): the browser tests set 0 to run a small library fully unloaded.
fn loaded_budget() -> usize {
    thread_local! {
        static BUDGET: std::cell::OnceCell<usize> = const { std::cell::OnceCell::new() };
    }
    BUDGET.with(|b| {
        *b.get_or_init(|| {
            web_sys::window()
                .and_then(|w| w.local_storage().ok().flatten())
                .and_then(|s| s.get_item("tessera-loaded-budget").ok().flatten())
                .and_then(|v| v.parse().ok())
                .unwrap_or(LOADED_BUDGET)
        })
    })
}

/// Puts a month's items, read back as saved for the document held now, in the shard cache
/// at its current revision.
pub(crate) fn put_shard(lib: &Library, id: &DocId, items: Vec<Arc<Item>>) {
    let Some(rev) = lib.revision(id) else { return };
    SHARDS.with(|cache| cache.borrow_mut().insert(id.to_string(), (rev, items)));
    SHARDS_CHANGED.set(true);
}

/// What to save of a month so that the next open reads its items instead of decoding it
/// ([`crate::items::encode_saved`]): `doc_bytes` must be the document's saved bytes at this
/// moment (just saved or just loaded: the library holds it at exactly their heads).
pub(crate) fn saved_month(lib: &mut Library, id: &DocId, doc_bytes: &[u8]) -> Option<Vec<u8>> {
    id.month()?;
    read_shard(lib, id);
    let heads = lib.known_heads_bytes(id)?;
    let rev = lib.revision(id)?;
    SHARDS.with(|cache| {
        let cache = cache.borrow();
        let (at, items) = cache.get(id.as_str())?;
        (*at == rev).then(|| crate::items::encode_saved(doc_bytes, heads, items))
    })
}

/// Reads a month's records into the shard cache unless they are there at its revision.
/// Returns whether they were read.
pub(crate) fn read_shard(lib: &Library, id: &DocId) -> bool {
    let Some(rev) = lib.revision(id) else {
        return false;
    };
    SHARDS.with(|cache| {
        let mut cache = cache.borrow_mut();
        let key = id.to_string();
        if cache.get(&key).map(|e| e.0) == Some(rev) {
            return false;
        }
        // One month's whole records at a time (≈ 1.4 MB at 1,250 photos), kept as items.
        let items = lib
            .assets(id)
            .unwrap_or_default()
            .iter()
            .map(|r| Arc::new(Item::of(r)))
            .collect();
        cache.insert(key, (rev, items));
        SHARDS_CHANGED.set(true);
        true
    })
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

/// Whether the catalogue is still being read from IndexedDB.
pub(crate) fn opening() -> bool {
    CORE.with(|c| c.borrow().opening)
}

/// [`refresh`] for a stream of changes (sync rounds): at once when the last rebuild was cheap
/// and at least 500 ms ago, else deferred so that rebuilding takes at most a quarter of the
/// time (a 300k-photo view costs hundreds of ms to sort and lay out) — the last change of a
/// burst is always shown.
pub(crate) fn refresh_soon(ui: Ui) {
    let (end, cost, pending) = REFRESH.get();
    // The view's re-render after a rebuild is not in `cost`: at least 500 ms apart.
    let wait = end + (3.0 * cost).max(500.0) - now_ms();
    if wait <= 0.0 {
        refresh(ui);
    } else if !pending {
        REFRESH.set((end, cost, true));
        leptos::task::spawn_local(async move {
            gloo_timers::future::TimeoutFuture::new(wait.ceil() as u32).await;
            let (end, cost, _) = REFRESH.get();
            REFRESH.set((end, cost, false));
            refresh(ui);
        });
    }
}

pub(crate) fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map(|p| p.now())
        .unwrap_or_else(js_sys::Date::now)
}

/// Re-reads the shards whose heads moved (all of them the first time), then rebuilds the
/// current view when something changed or `force`.
pub(crate) fn refresh_view(ui: Ui, force: bool) {
    let Some(user) = user_id() else { return };
    let t0 = now_ms();
    let view = ui.view.get_untracked();
    // (photos held, photos the summaries announce), for the header.
    let mut held = (0u64, 0u64);
    let (items, ml, trash_days, albums_changed) = CORE.with(|c| {
        let mut c = c.borrow_mut();
        let trash_days = c.lib.trash_days(&user);
        // Albums: a signature of every album document's revision, to re-render the Albums page.
        let album_sig: Vec<u64> = c
            .lib
            .ids()
            .filter(|d| d.album_id().is_some())
            .filter_map(|d| c.lib.revision(d))
            .collect();
        let albums_changed = ALBUM_SIG.with(|s| {
            let mut s = s.borrow_mut();
            let changed = *s != album_sig;
            *s = album_sig;
            changed
        });
        // My months, and those of partners I chose to show in my timeline (their shares are
        // synced to this device read-only; its own root summaries list their months).
        let mut months: Vec<DocId> = Vec::new();
        let mut total = 0u64;
        let partners: Vec<String> = c
            .lib
            .ids()
            .filter(|d| d.is_root() && d.user() != user)
            .map(|d| d.user().to_owned())
            .filter(|p| c.lib.partner_in_timeline(&user, p))
            .collect();
        for who in std::iter::once(user.clone()).chain(partners) {
            for s in c.lib.shards(&who).unwrap_or_default() {
                total += s.count;
                if let Ok(id) = DocId::shard(&who, &s.month) {
                    if c.lib.contains(&id) {
                        months.push(id);
                    }
                }
            }
        }
        let mine = format!("u/{user}/");
        let mut seen = HashSet::new();
        let t = now_ms();
        for id in months {
            read_shard(&c.lib, &id);
            seen.insert(id.to_string());
        }
        crate::perf::add("refresh.read_ms", now_ms() - t);
        let items = SHARDS.with(|cache| {
            let mut cache = cache.borrow_mut();
            let before = cache.len();
            cache.retain(|k, _| seen.contains(k));
            let changed = SHARDS_CHANGED.replace(false) || cache.len() != before;
            held = (cache.values().map(|(_, a)| a.len() as u64).sum(), total);
            (changed || force).then(|| {
                // A partner's photo I saved to my library shows once, as mine.
                let own: HashSet<&str> = cache
                    .iter()
                    .filter(|(k, _)| k.starts_with(&mine))
                    .flat_map(|(_, (_, a))| a.iter().map(|r| &*r.id))
                    .collect();
                let own = &own;
                cache
                    .iter()
                    // A partner's photos show in Photos only (never in my trash or archive).
                    .filter(|(k, _)| k.starts_with(&mine) || view == View::Photos)
                    .flat_map(|(k, (_, a))| {
                        let partner = !k.starts_with(&mine);
                        a.iter()
                            .filter(move |r| view.includes(r) && !(partner && own.contains(&*r.id)))
                    })
                    .cloned()
                    .collect::<Vec<_>>()
            })
        });
        let ml = (ml_progress(&mut c.lib, &user), people(&mut c.lib, &user));
        evict(&mut c.lib);
        (items, ml, trash_days, albums_changed)
    });
    if albums_changed {
        ui.albums_ver.update(|v| *v += 1);
    }
    if ui.trash_days.get_untracked() != trash_days {
        ui.trash_days.set(trash_days);
    }
    let t = now_ms();
    crate::perf::add("refresh.count", 1.0);
    crate::perf::add("refresh.catalogue_ms", t - t0);
    if let Some(items) = items {
        timeline::set_items(ui, items);
        crate::perf::add("refresh.set_items_ms", now_ms() - t);
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
    let p = ui.library.get_untracked();
    if (p.have, p.total) != held {
        ui.library.update(|p| (p.have, p.total) = held);
    }
    let end = now_ms();
    REFRESH.set((end, end - t0, REFRESH.get().2));
    crate::perf::add("refresh.ms", end - t0);
    crate::perf::publish();
}

/// The ML node's progress on my library, summed by month from the shard cache; a month is
/// recomputed only when its shard or ML document changed (reading every record and mark on
/// every refresh cost seconds at 300k).
fn ml_progress(lib: &mut Library, user: &str) -> MlProgress {
    let mine = format!("u/{user}/");
    ML_CACHE.with(|m| {
        let mut m = m.borrow_mut();
        let mut total = MlProgress::default();
        let mut seen = HashSet::new();
        SHARDS.with(|cache| {
            for (key, (rev, recs)) in cache.borrow().iter() {
                if !key.starts_with(&mine) {
                    continue;
                }
                let Ok(id) = DocId::parse(key) else { continue };
                let Some(month) = id.month() else { continue };
                let Ok(ml_id) = DocId::ml(user, month) else {
                    continue;
                };
                let sig = [*rev, lib.revision(&ml_id).unwrap_or(u64::MAX)];
                seen.insert(key.clone());
                let p = match m.get(key) {
                    Some((s, p)) if *s == sig => *p,
                    _ => {
                        let p = lib
                            .ml_progress_month(
                                user,
                                month,
                                recs.iter().map(|r| (&*r.id, r.has_preview())),
                            )
                            .unwrap_or_default();
                        m.insert(key.clone(), (sig, p));
                        p
                    }
                };
                total.add(&p);
            }
        });
        m.retain(|k, _| seen.contains(k));
        total
    })
}

/// People with faces, recomputed only when an ML or the people document changed.
fn people(lib: &mut Library, user: &str) -> Vec<PersonSummary> {
    let mut docs = lib.ml_doc_ids(user);
    docs.extend(DocId::people(user).ok().filter(|d| lib.contains(d)));
    let sig: Vec<u64> = docs.iter().filter_map(|d| lib.revision(d)).collect();
    PEOPLE_CACHE.with(|p| {
        let mut p = p.borrow_mut();
        if p.0 != sig || p.0.is_empty() {
            *p = (sig, lib.people_with_faces(user).unwrap_or_default());
        }
        p.1.clone()
    })
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
