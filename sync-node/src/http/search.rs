//! Finding photos in Immich's shapes: `search/metadata` and `search/smart` with the same
//! filters (people, place, dates, camera, lens, type, favorites, visibility, file name, albums),
//! `search/suggestions`, `search/explore`, `search/person`, `search/cities`, and Tessera's
//! `tessera/search/embed` (a text query's CLIP embedding, for browsers that search offline
//! with the packs they hold). Filtering and ranking are `tessera_core::search`, the code the
//! PWA runs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tessera_core::ml::PACK_CLIP;
use tessera_core::search::{self, Filters, Media, PeopleIndex, Visibility};
use tessera_core::{AssetRecord, DocId};

use crate::catalog::CatalogError;
use crate::http::*;
use crate::smart_index::SmartIndex;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/search/smart", post(smart_search))
        .route("/search/metadata", post(metadata_search))
        .route("/search/suggestions", get(suggestions))
        .route("/search/explore", get(explore))
        .route("/search/person", get(search_person))
        .route("/search/cities", get(cities))
        .route("/tessera/search/embed", post(embed))
}

/// The filters of Immich's `MetadataSearchDto` and `SmartSearchDto` that Tessera has data
/// for; others (tags, ratings, OCR, library ids) are accepted and ignored.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct SearchDto {
    query: Option<String>,
    query_asset_id: Option<String>,
    city: Option<String>,
    state: Option<String>,
    country: Option<String>,
    make: Option<String>,
    model: Option<String>,
    lens_model: Option<String>,
    person_ids: Vec<String>,
    album_ids: Vec<String>,
    taken_after: Option<String>,
    taken_before: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    is_favorite: Option<bool>,
    is_archived: Option<bool>,
    visibility: Option<String>,
    with_deleted: Option<bool>,
    original_file_name: Option<String>,
    ocr: Option<String>,
    page: Option<Value>,
    size: Option<usize>,
    order: Option<String>,
}

impl SearchDto {
    fn filters(&self) -> ApiResult<Filters> {
        let media = match self.kind.as_deref() {
            None | Some("OTHER") => None,
            Some("IMAGE") => Some(Media::Image),
            Some("VIDEO") | Some("AUDIO") => Some(Media::Video),
            Some(t) => {
                return Err(ApiError::bad_request(format!(
                    "type must be IMAGE, VIDEO, AUDIO or OTHER, not {t}"
                )))
            }
        };
        let visibility = match (
            self.visibility.as_deref(),
            self.is_archived,
            self.with_deleted,
        ) {
            (_, _, Some(true)) => Visibility::All,
            (Some("archive"), ..) | (None, Some(true), _) => Visibility::Archive,
            (Some("timeline") | Some("hidden") | Some("locked") | None, ..) => Visibility::Timeline,
            (Some(v), ..) => {
                return Err(ApiError::bad_request(format!(
                    "visibility must be archive, timeline, hidden or locked, not {v}"
                )))
            }
        };
        let date = |s: &Option<String>| -> ApiResult<Option<String>> {
            match s.as_deref() {
                None => Ok(None),
                Some(t) => bound(t).map(Some).ok_or_else(|| {
                    ApiError::bad_request(format!("{t:?} is not a date (YYYY-MM-DD or RFC 3339)"))
                }),
            }
        };
        Ok(Filters {
            text: None,
            people: self.person_ids.clone(),
            country: self.country.clone(),
            state: self.state.clone(),
            city: self.city.clone(),
            taken_after: date(&self.taken_after)?,
            taken_before: date(&self.taken_before)?,
            make: self.make.clone(),
            model: self.model.clone(),
            lens: self.lens_model.clone(),
            media,
            favorite: self.is_favorite,
            visibility,
            filename: self.original_file_name.clone(),
            ocr: self.ocr.clone(),
        })
    }

    fn page(&self) -> usize {
        match &self.page {
            Some(Value::Number(n)) => n.as_u64().unwrap_or(1) as usize,
            Some(Value::String(s)) => s.parse().unwrap_or(1),
            _ => 1,
        }
        .max(1)
    }

    fn size(&self) -> usize {
        self.size.unwrap_or(250).clamp(1, 1000)
    }
}

/// A date bound as an ISO prefix that compares with capture times: dates and local times stay
/// as they are; a time with an offset keeps its local part (capture times are local).
fn bound(t: &str) -> Option<String> {
    let t = t.trim();
    let date_ok = t.len() >= 4 && t.as_bytes()[..4].iter().all(u8::is_ascii_digit);
    if !date_ok {
        return None;
    }
    let cut = t.len().min(19);
    let local = &t[..cut];
    local
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '-' | 'T' | ':' | ' '))
        .then(|| local.replace(' ', "T"))
}

/// What a user searches: their records (and partners' in their timeline) and who is in them.
pub(crate) fn corpus(
    node: &crate::Node,
    user: &str,
) -> ApiResult<(Vec<AssetRecord>, Arc<PeopleIndex>)> {
    let records = records_where(node, user, None)?;
    let lib = node.catalog.lock()?;
    let people = node
        .views
        .people_index(&lib, user)
        .map_err(CatalogError::from)?;
    Ok((records, people))
}

/// The records of [`corpus`] (no people), limited to one capture month (`YYYY-MM`) when
/// `month` is set.
pub(crate) fn records_where(
    node: &crate::Node,
    user: &str,
    month: Option<&str>,
) -> ApiResult<Vec<AssetRecord>> {
    let lib = node.catalog.lock()?;
    Ok(lib
        .searchable_in(user, month, &|_| true, &mut |lib, doc| {
            node.views.records(lib, doc)
        })
        .map_err(CatalogError::from)?)
}

/// A search hit from the shard indexes: where the record is, its id and capture time.
pub(crate) struct IndexHit {
    pub doc: DocId,
    pub id: String,
    pub taken_at: Option<String>,
}

/// What [`corpus`] and `keep` select, from the shards' search indexes (`views::SlimShard`):
/// `keep` sees records holding only the searched fields. Newest first. A search over 300k
/// records reads no document once the indexes are built or read back from the last run's files
/// (the housekeeping sweep reads or builds them at start).
pub(crate) fn indexed_search(
    node: &crate::Node,
    user: &str,
    keep: &dyn Fn(&crate::views::SlimRecord<'_>, &PeopleIndex) -> bool,
) -> ApiResult<Vec<IndexHit>> {
    newest_first(|visit| indexed_visit(node, user, keep, visit))
}

/// The records a walk visits as hits, newest first.
fn newest_first(
    walk: impl FnOnce(&mut dyn FnMut(&DocId, &crate::views::SlimRecord<'_>)) -> ApiResult<()>,
) -> ApiResult<Vec<IndexHit>> {
    use tessera_core::search::Searched;
    let mut hits = Vec::new();
    walk(&mut |doc, r| {
        let taken_at = r.taken_at().map(str::to_owned);
        hits.push(IndexHit {
            doc: doc.clone(),
            id: r.id().to_owned(),
            taken_at,
        });
    })?;
    hits.sort_by(|a, b| b.taken_at.cmp(&a.taken_at).then_with(|| a.id.cmp(&b.id)));
    Ok(hits)
}

/// [`indexed_search`]'s walk: `visit` sees each record `keep` accepts, shard by shard, and
/// keeps what it needs (a smart search over 300k photos keeps a hash and a shard number each).
pub(crate) fn indexed_visit(
    node: &crate::Node,
    user: &str,
    keep: &dyn Fn(&crate::views::SlimRecord<'_>, &PeopleIndex) -> bool,
    visit: &mut dyn FnMut(&DocId, &crate::views::SlimRecord<'_>),
) -> ApiResult<()> {
    use tessera_core::search::{Searched, SearchedOnce};
    let mut lib = node.catalog.lock()?;
    let people = node
        .views
        .people_index(&lib, user)
        .map_err(CatalogError::from)?;
    let shards = lib.search_shards(user, None).map_err(CatalogError::from)?;
    let mut once = SearchedOnce::<String>::new(&shards);
    for (doc, scope) in shards {
        let slim = node
            .views
            .slim(&mut lib, &doc)
            .map_err(CatalogError::from)?;
        for i in 0..slim.len() {
            // Tested in place: a record is built for no photo.
            let r = slim.searched(i);
            if once.admits(scope, &r, || r.id().to_owned()) && keep(&r, &people) {
                visit(&doc, &r);
            }
        }
    }
    Ok(())
}

/// The whole records of search hits, in the order given (a record gone meanwhile is skipped).
/// A shard with many hits is read whole (through the views' cache); one with a few — smart
/// search's hits are spread over the years — gives just those records.
pub(crate) fn whole_records(
    node: &crate::Node,
    hits: &[(DocId, String)],
) -> ApiResult<Vec<AssetRecord>> {
    /// From this many hits in one shard, its records are read whole.
    const WHOLE: usize = 16;
    let lib = node.catalog.lock()?;
    let mut per_doc: HashMap<&DocId, usize> = HashMap::new();
    for (doc, _) in hits {
        *per_doc.entry(doc).or_default() += 1;
    }
    let mut by_doc: HashMap<&DocId, Arc<Vec<AssetRecord>>> = HashMap::new();
    let mut out = Vec::with_capacity(hits.len());
    for (doc, id) in hits {
        if per_doc.get(doc).is_some_and(|n| *n < WHOLE) {
            if let Some(r) = lib.asset_in(doc, id).map_err(CatalogError::from)? {
                out.push(r);
            }
            continue;
        }
        if !by_doc.contains_key(doc) {
            let records = node.views.records(&lib, doc).map_err(CatalogError::from)?;
            by_doc.insert(doc, records);
        }
        if let Some(r) = by_doc
            .get(doc)
            .and_then(|rs| rs.iter().find(|r| &r.id == id))
        {
            out.push(r.clone());
        }
    }
    Ok(out)
}

/// The asset ids of the given albums the user is in.
fn album_assets(
    node: &crate::Node,
    user: &str,
    albums: &[String],
) -> ApiResult<Option<HashSet<String>>> {
    if albums.is_empty() {
        return Ok(None);
    }
    let lib = node.catalog.lock()?;
    let mut out = HashSet::new();
    for a in albums {
        let doc = DocId::album(a)
            .map_err(|_| ApiError::bad_request(format!("{a:?} is not an album id")))?;
        match lib.album(&doc).map_err(CatalogError::from)? {
            Some(v) if v.role_of(user).is_some() && !v.deleted => {
                out.extend(v.items.iter().map(|i| i.asset.clone()))
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "Not found or no album.read access: {a}"
                )))
            }
        }
    }
    Ok(Some(out))
}

fn response(items: Vec<Value>, total: usize, next: Option<usize>) -> Value {
    json!({
        "albums": {"total": 0, "count": 0, "items": [], "facets": []},
        "assets": {
            "total": total, "count": items.len(), "items": items, "facets": [],
            "nextPage": next.map(|n| n.to_string()),
        },
    })
}

fn parse_body(
    body: Result<Json<SearchDto>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<SearchDto> {
    body.map(|Json(d)| d)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

async fn metadata_search(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    body: Result<Json<SearchDto>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let q = parse_body(body)?;
    let filters = q.filters()?;
    blocking(move || {
        let matcher = filters.compile();
        let in_albums = album_assets(&node, &u.id, &q.album_ids)?;
        let mut hits = indexed_search(&node, &u.id, &|r, people| {
            in_albums
                .as_ref()
                .is_none_or(|set| set.contains(tessera_core::search::Searched::id(r)))
                && matcher.matches(r, people)
        })?;
        if q.order.as_deref() == Some("asc") {
            hits.reverse();
        }
        let (page, size) = (q.page(), q.size());
        let total = hits.len();
        let page_hits: Vec<(DocId, String)> = hits
            .into_iter()
            .skip((page - 1) * size)
            .take(size)
            .map(|h| (h.doc, h.id))
            .collect();
        let items: Vec<Value> = whole_records(&node, &page_hits)?
            .iter()
            .map(asset_json)
            .collect();
        let next = (page * size < total).then_some(page + 1);
        Ok(Json(response(items, total, next)))
    })
    .await
}

/// The ML node and its CLIP model: only packs of that model are comparable with a query.
async fn clip_model(node: &crate::Node) -> ApiResult<(String, String)> {
    let ml = node.config.ml.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Smart search needs an ML node: start the sync node with --ml URL",
        )
    })?;
    let status: Value = reqwest::Client::new()
        .get(format!("{}/status", ml.trim_end_matches('/')))
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| unreachable(&ml, e))?
        .json()
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("ML node status: {e}")))?;
    let Some(model) = status["clip"].as_str().map(str::to_owned) else {
        let why: Vec<String> = status["notes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|n| n.starts_with("smart search") || n.starts_with("clip"))
            .map(str::to_owned)
            .collect();
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Smart search is off on the ML node: {}", why.join("; ")),
        ));
    };
    Ok((ml, model))
}

fn unreachable(ml: &str, e: reqwest::Error) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        format!("The ML node at {ml} did not answer: {e}"),
    )
}

/// Embeds a text query with the ML node's CLIP text tower: (model, vector). Recent queries are
/// answered from memory.
async fn embed_text(node: &crate::Node, query: &str) -> ApiResult<(String, Vec<f32>)> {
    let (ml, model) = clip_model(node).await?;
    let key = format!("{model}\n{query}");
    if let Some(v) = embed_cache().lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok((model, v));
    }
    let entries = json!({"clip": {"textual": {"modelName": model}}}).to_string();
    let form = reqwest::multipart::Form::new()
        .text("entries", entries)
        .text("text", query.to_owned());
    let resp = reqwest::Client::new()
        .post(format!("{}/predict", ml.trim_end_matches('/')))
        .multipart(form)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| unreachable(&ml, e))?;
    let code = resp.status();
    let v: Value = resp
        .json()
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("ML node answer: {e}")))?;
    if !code.is_success() {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("The ML node refused the query: {}", v["detail"]),
        ));
    }
    let emb: Vec<f32> = v["clip"]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "The ML node's answer has no clip embedding",
            )
        })?;
    if let Ok(mut c) = embed_cache().lock() {
        if c.len() >= 512 {
            c.clear();
        }
        c.insert(key, emb.clone());
    }
    Ok((model, emb))
}

fn embed_cache() -> &'static Mutex<HashMap<String, Vec<f32>>> {
    static C: OnceLock<Mutex<HashMap<String, Vec<f32>>>> = OnceLock::new();
    C.get_or_init(Default::default)
}

#[derive(Deserialize)]
struct EmbedDto {
    query: String,
}

/// A text query's CLIP embedding, for a browser that ranks its local packs itself (and caches
/// the answer, so the query works offline next time).
async fn embed(
    State(node): State<AppState>,
    AuthUser(_u): AuthUser,
    body: Result<Json<EmbedDto>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(q) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let query = q.query.trim();
    if query.is_empty() || query.len() > 1000 {
        return Err(ApiError::bad_request(
            "query must have 1 to 1000 characters",
        ));
    }
    let (model, v) = embed_text(&node, query).await?;
    Ok(Json(
        json!({"model": model, "dim": v.len(), "embedding": v}),
    ))
}

/// A user's CLIP index of one model: their months' packs of that model (segments cached by
/// pack hash, see [`crate::smart_index`]).
fn clip_index(node: &crate::Node, user: &str, model: &str) -> ApiResult<SmartIndex> {
    let refs: Vec<String> = {
        let lib = node.catalog.lock()?;
        let mut refs = Vec::new();
        for doc in lib.ml_doc_ids(user) {
            let r = node
                .views
                .pack_ref(&lib, &doc, PACK_CLIP)
                .map_err(CatalogError::from)?;
            if let Some(r) = r {
                if r.model == model {
                    refs.push(r.hash);
                }
            }
        }
        refs.sort();
        refs
    };
    SmartIndex::of(&node.blobs, &refs).map_err(|e| ApiError::internal(e.to_string()))
}

/// Immich's smart search: ranked by CLIP similarity to the query (embedded by the ML node) or
/// to another asset (`queryAssetId`), among the assets that pass the filters. Names of people
/// in the query filter by those people ("Anna at the beach").
async fn smart_search(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    body: Result<Json<SearchDto>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let q = parse_body(body)?;
    let mut filters = q.filters()?;
    let text = q
        .query
        .as_deref()
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    let people = {
        let n = node.clone();
        let uid = u.id.clone();
        blocking(move || {
            let lib = n.catalog.lock()?;
            Ok(n.views
                .people_index(&lib, &uid)
                .map_err(CatalogError::from)?)
        })
        .await?
    };
    let (named, rest) = search::people_in_query(&text, &people);
    filters.people.extend(named);
    let (page, size) = (q.page(), q.size());
    let in_albums = {
        let n = node.clone();
        let (uid, albums) = (u.id.clone(), q.album_ids.clone());
        blocking(move || album_assets(&n, &uid, &albums)).await?
    };
    // The photos that pass the filters, from the shards' search indexes (no record built).
    let passing =
        move |node: &crate::Node,
              uid: &str,
              visit: &mut dyn FnMut(&DocId, &crate::views::SlimRecord<'_>)| {
            let matcher = filters.compile();
            indexed_visit(
                node,
                uid,
                &|r, people| {
                    in_albums
                        .as_ref()
                        .is_none_or(|set| set.contains(search::Searched::id(r)))
                        && matcher.matches(r, people)
                },
                visit,
            )
        };
    let (model, emb) = match (&q.query_asset_id, rest.is_empty()) {
        (Some(id), _) => {
            let (_, model) = clip_model(&node).await?;
            let n = node.clone();
            let (uid, id, m) = (u.id.clone(), id.clone(), model.clone());
            let v = blocking(move || {
                clip_index(&n, &uid, &m)?
                    .vector_of(&n.blobs, &id)
                    .map_err(|e| ApiError::internal(e.to_string()))?
                    .ok_or_else(|| ApiError::bad_request("That asset has no CLIP embedding yet"))
            })
            .await?;
            (model, v)
        }
        (None, false) => embed_text(&node, &rest).await?,
        (None, true) if !text.is_empty() => {
            // Only names: the people's photos, newest first.
            let uid = u.id.clone();
            return blocking(move || {
                let hits = newest_first(|visit| passing(&node, &uid, visit))?;
                let first: Vec<(DocId, String)> = hits
                    .iter()
                    .take(size)
                    .map(|h| (h.doc.clone(), h.id.clone()))
                    .collect();
                let items: Vec<Value> = whole_records(&node, &first)?
                    .iter()
                    .map(asset_json)
                    .collect();
                Ok(Json(response(items, hits.len(), None)))
            })
            .await;
        }
        (None, true) => return Err(ApiError::bad_request("query or queryAssetId is required")),
    };
    let uid = u.id.clone();
    let items = blocking(move || {
        let t = std::time::Instant::now();
        let idx = clip_index(&node, &uid, &model)?;
        let index_ms = t.elapsed().as_millis();
        // Asset ids are BLAKE3 hashes: 32 bytes and a shard number each (a 300k library's
        // whole hits would hold 100 MB of strings for a moment).
        let mut docs: Vec<DocId> = Vec::new();
        let mut by_id: HashMap<[u8; 32], u32> = HashMap::new();
        passing(&node, &uid, &mut |doc, r| {
            let Ok(h) = blake3::Hash::from_hex(search::Searched::id(r)) else {
                return;
            };
            if docs.last() != Some(doc) {
                docs.push(doc.clone());
            }
            by_id.insert(*h.as_bytes(), (docs.len() - 1) as u32);
        })?;
        let doc_of = |id: &str| {
            let h = blake3::Hash::from_hex(id).ok()?;
            docs.get(*by_id.get(h.as_bytes())? as usize)
        };
        let filter_ms = t.elapsed().as_millis() - index_ms;
        let hits = idx
            .search(&node.blobs, &emb, page * size, |key| doc_of(key).is_some())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        tracing::debug!(
            index_ms,
            filter_ms,
            rank_ms = t.elapsed().as_millis() - index_ms - filter_ms,
            vectors = idx.len(),
            index_mib = idx.bytes() >> 20,
            "smart search"
        );
        // More may follow when the ranking filled the pages asked for (a record gone since
        // the filter ran shortens this page, not the answer to "is there more").
        let more = hits.len() == page * size;
        let page_hits: Vec<(DocId, String)> = hits
            .into_iter()
            .skip((page - 1) * size)
            .filter_map(|(id, _)| Some((doc_of(&id)?.clone(), id)))
            .collect();
        let t = std::time::Instant::now();
        let items = whole_records(&node, &page_hits)?
            .iter()
            .map(asset_json)
            .collect::<Vec<Value>>();
        tracing::debug!(records_ms = t.elapsed().as_millis(), "smart search results");
        Ok((items, more))
    })
    .await?;
    let (items, more) = items;
    let total = items.len();
    let next = more.then_some(page + 1);
    Ok(Json(response(items, total, next)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SuggestionQuery {
    #[serde(rename = "type")]
    kind: String,
    country: Option<String>,
    state: Option<String>,
    make: Option<String>,
    model: Option<String>,
    include_null: Option<bool>,
}

/// Values that exist in the user's library for a field, narrowed by the fields above it
/// (country → state → city; make → model).
async fn suggestions(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Query(q): Query<SuggestionQuery>,
) -> ApiResult<Json<Value>> {
    type Field = fn(&AssetRecord) -> Option<&String>;
    let field: Field = match q.kind.as_str() {
        "country" => |r| r.country.as_ref(),
        "state" => |r| r.state.as_ref(),
        "city" => |r| r.city.as_ref(),
        "camera-make" => |r| r.make.as_ref(),
        "camera-model" => |r| r.model.as_ref(),
        "camera-lens-model" => |r| r.lens.as_ref(),
        t => {
            return Err(ApiError::bad_request(format!(
                "type must be one of country, state, city, camera-make, camera-model, camera-lens-model, not {t}"
            )))
        }
    };
    blocking(move || {
        let (records, _) = corpus(&node, &u.id)?;
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_deref().is_none_or(|w| {
                have.as_deref()
                    .is_some_and(|h| search::fold(h) == search::fold(w))
            })
        };
        let mut out: Vec<String> = Vec::new();
        let mut null = false;
        for r in records
            .iter()
            .filter(|r| !r.is_trashed() && r.shown_alone())
        {
            if !(eq(&q.country, &r.country)
                && eq(&q.state, &r.state)
                && eq(&q.make, &r.make)
                && eq(&q.model, &r.model))
            {
                continue;
            }
            match field(r) {
                Some(v) if !v.trim().is_empty() => out.push(v.trim().to_owned()),
                _ => null = true,
            }
        }
        out.sort_by_key(|s| search::fold(s));
        out.dedup();
        let mut v: Vec<Value> = out.into_iter().map(Value::String).collect();
        if null && q.include_null == Some(true) {
            v.push(Value::Null);
        }
        Ok(Json(Value::Array(v)))
    })
    .await
}

/// One photo per city (the newest), most photographed cities first.
fn per_city(records: &[AssetRecord]) -> Vec<(String, usize, &AssetRecord)> {
    let mut by: BTreeMap<&str, (usize, &AssetRecord)> = BTreeMap::new();
    for r in records.iter().filter(|r| r.in_timeline()) {
        if let Some(c) = r.city.as_deref() {
            let e = by.entry(c).or_insert((0, r));
            e.0 += 1;
            if r.taken_at > e.1.taken_at {
                e.1 = r;
            }
        }
    }
    let mut v: Vec<(String, usize, &AssetRecord)> = by
        .into_iter()
        .map(|(c, (n, r))| (c.to_owned(), n, r))
        .collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

async fn cities(State(node): State<AppState>, AuthUser(u): AuthUser) -> ApiResult<Json<Value>> {
    blocking(move || {
        let (records, _) = corpus(&node, &u.id)?;
        Ok(Json(Value::Array(
            per_city(&records)
                .into_iter()
                .map(|(_, _, r)| asset_json(r))
                .collect(),
        )))
    })
    .await
}

/// Immich's explore page: places (one photo per city) and people (one photo each).
async fn explore(State(node): State<AppState>, AuthUser(u): AuthUser) -> ApiResult<Json<Value>> {
    blocking(move || {
        let (records, people) = corpus(&node, &u.id)?;
        let places: Vec<Value> = per_city(&records)
            .into_iter()
            .take(12)
            .map(|(c, _, r)| json!({"value": c, "data": asset_json(r)}))
            .collect();
        let mut newest: BTreeMap<&str, &AssetRecord> = BTreeMap::new();
        for r in records.iter().filter(|r| r.in_timeline()) {
            for p in people.people_of(&r.id) {
                let e = newest.entry(&**p).or_insert(r);
                if r.taken_at > e.taken_at {
                    *e = r;
                }
            }
        }
        let named: Vec<Value> = newest
            .into_iter()
            .filter_map(|(p, r)| {
                people
                    .names
                    .get(p)
                    .map(|n| json!({"value": n, "data": asset_json(r)}))
            })
            .collect();
        Ok(Json(json!([
            {"fieldName": "exifInfo.city", "items": places},
            {"fieldName": "people", "items": named},
        ])))
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PersonQuery {
    name: String,
    with_hidden: Option<bool>,
}

/// People whose name starts (any word) with `name`.
async fn search_person(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Query(q): Query<PersonQuery>,
) -> ApiResult<Json<Value>> {
    blocking(move || {
        let lib = node.catalog.lock()?;
        let want = search::query_words(&q.name);
        let out: Vec<Value> = crate::http::people::people_of(&node, &lib, &u.id)?
            .into_iter()
            .filter(|p| q.with_hidden == Some(true) || p.record.hidden != Some(true))
            .filter(|p| {
                let name = p.record.name.as_deref().unwrap_or_default();
                !name.is_empty() && search::text_matches(&want, &search::words(name))
            })
            .map(|p| {
                json!({
                    "id": p.id, "name": p.record.name, "birthDate": null,
                    "thumbnailPath": format!("/api/people/{}/thumbnail", p.id),
                    "isHidden": p.record.hidden.unwrap_or(false), "isFavorite": false,
                })
            })
            .collect();
        Ok(Json(Value::Array(out)))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::bound;

    #[test]
    fn date_bounds() {
        assert_eq!(bound("2023-06-01").as_deref(), Some("2023-06-01"));
        assert_eq!(
            bound("2023-06-01T10:00:00.000Z").as_deref(),
            Some("2023-06-01T10:00:00")
        );
        assert_eq!(
            bound("2023-06-01 10:00").as_deref(),
            Some("2023-06-01T10:00")
        );
        assert_eq!(bound("yesterday"), None);
        assert_eq!(bound("2023-06-01<script>"), None);
    }
}
