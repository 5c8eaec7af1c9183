//! Search in the browser, offline: filters and free text over the local catalogue
//! (`tessera_core::search`, the node's code), and smart search over the CLIP packs the ML node
//! published, kept in IndexedDB and scanned here with the same two-stage kernel as the node.
//!
//! A text query needs its CLIP embedding, which only the ML node can compute: the node is
//! asked once per query and the answer is kept in IndexedDB, so a query searched before works
//! with the node unreachable. Names of people in the query become person filters, and words
//! that match names, places, cameras, years or file names find photos without any embedding.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;

use js_sys::Uint8Array;
use rexie::Rexie;
use tessera_core::ml::PACK_CLIP;
use tessera_core::pack::Pack;
use tessera_core::search::{self, Filters, PeopleIndex, ShardScope, VectorIndex};
use wasm_bindgen::JsValue;

use crate::items::Item;
use crate::state::{now_ms, user_id, CORE};
use crate::{db, net, search_worker};

const PACKS: &str = "packs";
const EMBEDS: &str = "embeds";
/// Smart results shown after the exact matches.
pub const SMART_RESULTS: usize = 60;

thread_local! {
    static DB: RefCell<Option<Rc<Rexie>>> = const { RefCell::new(None) };
    /// The CLIP index and the pack hashes it was built from.
    static INDEX: RefCell<Option<(Vec<String>, Rc<VectorIndex>)>> = const { RefCell::new(None) };
}

/// The search cache: a database of its own ("tessera-search").
async fn cache_db() -> Option<Rc<Rexie>> {
    db::side_db(&DB, "tessera-search", &[PACKS, EMBEDS])
        .await
        .ok()
}

/// What a search found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Found {
    /// Exact matches (filters and every word), newest first.
    pub(crate) exact: Vec<Arc<Item>>,
    /// Ranked by CLIP similarity (not among `exact`).
    pub(crate) smart: Vec<Arc<Item>>,
    /// What worked and what did not (offline, no embedding, …).
    pub note: String,
    pub ms: f64,
}

impl Found {
    /// The same photos, as the same items (a month that changed makes new items), in the same
    /// order, with the same note.
    pub(crate) fn same_as(&self, other: &Found) -> bool {
        let same = |a: &[Arc<Item>], b: &[Arc<Item>]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y))
        };
        self.note == other.note
            && same(&self.exact, &other.exact)
            && same(&self.smart, &other.smart)
    }
}

/// The photos the user searches ([`tessera_core::Library::searchable_in`]'s rules: their own
/// months, then partners' shown in their timeline, a partner's photo they saved counted once
/// as theirs, no tombstones) as the lists hold them — shared with the shard cache, not copied
/// or decoded again (seconds and hundreds of MB at 300k) — and the people in them.
pub(crate) fn corpus() -> (Rc<Vec<Arc<Item>>>, PeopleIndex) {
    let Some(user) = user_id() else {
        return Default::default();
    };
    let t = now_ms();
    let found = CORE.with(|c| {
        let c = c.borrow();
        let shards = c.lib.search_shards(&user, None).unwrap_or_default();
        // What the photos searched are made of: each month at its revision. The same as the
        // last search's (nothing synced or edited since): the same photos.
        let key: Vec<(String, Option<u64>)> = shards
            .iter()
            .map(|(d, _)| (d.to_string(), c.lib.revision(d)))
            .collect();
        let items = match CORPUS.with(|k| {
            k.borrow()
                .as_ref()
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v.clone())
        }) {
            Some(items) => items,
            None => {
                let (items, complete) = corpus_items(&c.lib, &shards);
                let items = Rc::new(items);
                CORPUS.with(|k| *k.borrow_mut() = complete.then(|| (key, items.clone())));
                items
            }
        };
        (items, c.lib.people_index(&user).unwrap_or_default())
    });
    crate::perf::set("search.corpus_ms", now_ms() - t);
    found
}

thread_local! {
    /// The last [`corpus`]'s photos and what they were made of (months and revisions).
    #[allow(clippy::type_complexity)]
    static CORPUS: RefCell<Option<(Vec<(String, Option<u64>)>, Rc<Vec<Arc<Item>>>)>> =
        const { RefCell::new(None) };
}

/// The items of `shards` by [`corpus`]'s rules, and whether every month came from the shard
/// cache (one the timeline has not read yet, still opening, is read here and not kept).
fn corpus_items(
    lib: &tessera_core::Library,
    shards: &[(tessera_core::DocId, ShardScope)],
) -> (Vec<Arc<Item>>, bool) {
    let mut out = Vec::new();
    let mut complete = true;
    let mut once = search::SearchedOnce::<Arc<str>>::new(shards);
    for (doc, scope) in shards {
        let cached = crate::state::SHARDS.with(|s| {
            s.borrow()
                .get(doc.as_str())
                .filter(|e| Some(e.0) == lib.revision(doc))
                .map(|e| e.1.clone())
        });
        let items = cached.unwrap_or_else(|| {
            complete = false;
            lib.assets(doc)
                .unwrap_or_default()
                .iter()
                .map(|r| Arc::new(Item::of(r)))
                .collect()
        });
        for r in items {
            if once.admits(*scope, &r, || r.id.clone()) {
                out.push(r);
            }
        }
    }
    (out, complete)
}

/// The CLIP packs of the user's months: (model, hash).
fn clip_packs() -> Vec<(String, String)> {
    let Some(user) = user_id() else {
        return Vec::new();
    };
    CORE.with(|c| {
        let c = c.borrow();
        c.lib
            .ml_doc_ids(&user)
            .iter()
            .filter_map(|d| c.lib.pack_ref(d, PACK_CLIP).ok().flatten())
            .map(|r| (r.model, r.hash))
            .collect()
    })
}

/// A pack's bytes from the search cache, else from the node if `fetch` (kept if it decodes).
async fn cached_pack_bytes(db: &Rexie, hash: &str, fetch: bool) -> Option<Vec<u8>> {
    match db::get(db, PACKS, hash).await.ok().flatten() {
        Some(v) => Some(Uint8Array::new(&v).to_vec()),
        None if fetch => {
            let b = net::get_bytes(&format!("/api/tessera/blobs/{hash}"))
                .await
                .ok()?;
            // Only what decodes is kept.
            Pack::decode(&b).ok()?;
            let _ = db::put(
                db,
                PACKS,
                Some(hash),
                &Uint8Array::from(b.as_slice()).into(),
            )
            .await;
            Some(b)
        }
        None => None,
    }
}

async fn cached_pack(db: &Rexie, hash: &str, fetch: bool) -> Option<Pack> {
    Pack::decode(&cached_pack_bytes(db, hash, fetch).await?).ok()
}

/// Fetches the packs this browser does not hold yet (while the node is reachable), so smart
/// search works offline later. Returns how many were fetched.
pub async fn prefetch_packs() -> usize {
    let Some(db) = cache_db().await else { return 0 };
    let mut n = 0;
    for (_, hash) in clip_packs() {
        if db::get(&db, PACKS, &hash).await.ok().flatten().is_none()
            && cached_pack(&db, &hash, true).await.is_some()
        {
            n += 1;
        }
    }
    n
}

/// The CLIP index of `model` from the packs held here (fetching missing ones if `online`).
async fn clip_index(model: &str, online: bool) -> (Rc<VectorIndex>, usize) {
    let hashes = clip_hashes(model);
    if let Some(i) = INDEX.with(|x| {
        x.borrow()
            .as_ref()
            .filter(|(h, _)| *h == hashes)
            .map(|(_, i)| i.clone())
    }) {
        return (i, 0);
    }
    let mut idx: Option<VectorIndex> = None;
    let mut missing = 0;
    if let Some(db) = cache_db().await {
        for h in &hashes {
            match cached_pack(&db, h, online).await {
                Some(p) => {
                    idx.get_or_insert_with(|| VectorIndex::new(p.dim))
                        .add_pack(&p);
                }
                None => missing += 1,
            }
        }
    }
    let idx = Rc::new(idx.unwrap_or_default());
    if missing == 0 {
        INDEX.with(|x| *x.borrow_mut() = Some((hashes, idx.clone())));
    }
    (idx, missing)
}

/// The sorted hashes of `model`'s packs.
fn clip_hashes(model: &str) -> Vec<String> {
    let mut hashes: Vec<String> = clip_packs()
        .into_iter()
        .filter(|(m, _)| m == model)
        .map(|(_, h)| h)
        .collect();
    hashes.sort();
    hashes
}

/// What a smart scan found: asset ids best first, rows scanned, months not downloaded yet,
/// and where it ran.
struct Smart {
    ids: Vec<String>,
    rows: usize,
    missing: usize,
    backend: String,
}

/// The smart scan in the search worker (WebGPU or wasm SIMD, off the page's thread).
async fn smart_in_worker(
    model: &str,
    q: &[f32],
    online: bool,
    allow: &dyn Fn(&str) -> bool,
) -> Result<Smart, String> {
    let w = search_worker::get()
        .await
        .ok_or("the search worker is unavailable")?;
    let hashes = clip_hashes(model);
    let mut missing = 0;
    let loaded = match w.loaded().filter(|l| l.hashes == hashes) {
        Some(l) => l,
        None => {
            let db = cache_db().await.ok_or("IndexedDB is unavailable")?;
            let mut packs = Vec::new();
            for h in &hashes {
                match cached_pack_bytes(&db, h, online).await {
                    Some(b) => packs.push(b),
                    None => missing += 1,
                }
            }
            // With months missing the index is rebuilt on the next search.
            let key = if missing == 0 { hashes } else { Vec::new() };
            w.load(key, packs).await?
        }
    };
    let keys = loaded.keys.clone();
    let (hits, backend) = w
        .search(q, SMART_RESULTS, |i| keys.get(i).is_some_and(|k| allow(k)))
        .await?;
    Ok(Smart {
        ids: hits
            .into_iter()
            .filter_map(|(i, _)| keys.get(i).cloned())
            .collect(),
        rows: keys.len(),
        missing,
        backend,
    })
}

/// The same scan on the page's thread (no worker here).
async fn smart_on_page(
    model: &str,
    q: &[f32],
    online: bool,
    allow: &dyn Fn(&str) -> bool,
) -> Smart {
    let (idx, missing) = clip_index(model, online).await;
    let hits = idx.search(q, SMART_RESULTS, |i| allow(&idx.keys[i]));
    Smart {
        ids: hits.into_iter().map(|(i, _)| idx.keys[i].clone()).collect(),
        rows: idx.len(),
        missing,
        backend: "wasm SIMD on the page".into(),
    }
}

/// A query's CLIP embedding: cached here, else asked of the node (and cached).
async fn embedding(query: &str) -> Result<(String, Vec<f32>), String> {
    let key = search::fold(query.trim());
    let db = cache_db().await;
    if let Some(db) = &db {
        if let Some(v) = db::get(db, EMBEDS, &key).await.ok().flatten() {
            if let Some(s) = v.as_string() {
                if let Ok(j) = serde_json::from_str::<serde_json::Value>(&s) {
                    let model = j["model"].as_str().unwrap_or_default().to_owned();
                    let e: Vec<f32> =
                        serde_json::from_value(j["embedding"].clone()).unwrap_or_default();
                    if !e.is_empty() {
                        return Ok((model, e));
                    }
                }
            }
        }
    }
    let j = net::json(
        "POST",
        "/api/tessera/search/embed",
        Some(serde_json::json!({ "query": query })),
    )
    .await
    .map_err(|e| {
        if e.is_offline() {
            "the node is unreachable, and this phrase was not searched before".to_owned()
        } else {
            e.message
        }
    })?;
    let model = j["model"].as_str().unwrap_or_default().to_owned();
    let e: Vec<f32> = serde_json::from_value(j["embedding"].clone()).map_err(|e| e.to_string())?;
    if let Some(db) = &db {
        let v = serde_json::json!({"model": model, "embedding": e}).to_string();
        let _ = db::put(db, EMBEDS, Some(&key), &JsValue::from_str(&v)).await;
    }
    Ok((model, e))
}

/// Runs a search: `filters` (from the page's controls) and the free text in `filters.text`.
/// Its time goes to the page's figures (`search.*`, for the scale bench).
pub async fn run(filters: Filters) -> Found {
    let found = find(filters).await;
    crate::perf::add("search.runs", 1.0);
    crate::perf::set("search.last_ms", found.ms);
    crate::perf::set(
        "search.last_results",
        (found.exact.len() + found.smart.len()) as f64,
    );
    crate::perf::publish();
    found
}

async fn find(mut filters: Filters) -> Found {
    let t0 = now_ms();
    let (items, people) = corpus();
    let text = filters.text.take().unwrap_or_default();
    let (named, rest) = search::people_in_query(&text, &people);
    filters.people.extend(named);
    filters.text = (!rest.is_empty()).then(|| rest.clone());
    // Each item tested as it is held (`search::filter_records`'s test and order).
    let test = filters.compile();
    let mut exact: Vec<Arc<Item>> = items
        .iter()
        .filter(|r| test.matches(*r, &people))
        .cloned()
        .collect();
    exact.sort_by(|a, b| {
        b.taken_at()
            .cmp(&a.taken_at())
            .then_with(|| a.id.cmp(&b.id))
    });
    crate::perf::set("search.last_exact_ms", now_ms() - t0);
    let mut found = Found {
        exact,
        ..Default::default()
    };
    let words = search::query_words(&rest);
    if words.is_empty() {
        found.ms = now_ms() - t0;
        return found;
    }
    // Smart search for the words (among photos passing the other filters).
    let packs = clip_packs();
    if packs.is_empty() {
        found.note = "Smart search: the ML node has not analysed these photos yet.".into();
        found.ms = now_ms() - t0;
        return found;
    }
    match embedding(&rest).await {
        Err(why) => {
            found.note = format!(
                "Smart search unavailable: {why}. Names, places, cameras, dates, file names and text in photos are searched on this device."
            );
        }
        Ok((model, q)) => {
            let online = web_sys::window().is_some_and(|w| w.navigator().on_line());
            let seen: HashSet<&str> = found.exact.iter().map(|r| &*r.id).collect();
            let by_id: std::collections::HashMap<&str, &Arc<Item>> =
                items.iter().map(|r| (&*r.id, r)).collect();
            let allow = |k: &str| {
                !seen.contains(k)
                    && by_id
                        .get(k)
                        .is_some_and(|r| filters.matches_fields(*r, people.facts(k)))
            };
            let smart = match smart_in_worker(&model, &q, online, &allow).await {
                Ok(s) => s,
                Err(why) => {
                    web_sys::console::warn_1(&format!("search worker: {why}").into());
                    smart_on_page(&model, &q, online, &allow).await
                }
            };
            found.smart = smart
                .ids
                .iter()
                .filter_map(|k| by_id.get(k.as_str()).map(|r| Arc::clone(r)))
                .collect();
            found.note = if smart.missing > 0 {
                format!(
                    "Smart search over the photos analysed so far on this device ({} months not downloaded yet; {}).",
                    smart.missing, smart.backend
                )
            } else {
                format!(
                    "Smart search ran on this device over {} photos ({}).",
                    smart.rows, smart.backend
                )
            };
        }
    }
    found.ms = now_ms() - t0;
    found
}

/// The distinct values of a field in the local catalogue (for the filter menus).
pub(crate) fn values(f: impl Fn(&Item) -> Option<Rc<str>>) -> Vec<String> {
    let (items, _) = corpus();
    let mut v: Vec<Rc<str>> = items
        .iter()
        .filter(|r| r.shown_alone())
        .filter_map(|r| f(r))
        .filter(|s| !s.trim().is_empty())
        .collect();
    // Interned: equal values are one string, so dedup by pointer first (cheap), then fold.
    v.sort_by_key(|s| s.as_ptr());
    v.dedup_by(|a, b| Rc::ptr_eq(a, b));
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort_by_key(|s| search::fold(s));
    v.dedup();
    v
}
