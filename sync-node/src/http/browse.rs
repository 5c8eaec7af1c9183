//! Browsing in Immich's shapes: map markers, memories and the timeline's time buckets (with
//! their column arrays). All computed from the catalogue documents (and the code the PWA runs:
//! `tessera_core::search`, `tessera_core::memories`).

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tessera_core::memories::{self, Kind};
use tessera_core::AssetRecord;

use crate::catalog::CatalogError;
use crate::http::search::{corpus, records_where};
use crate::http::*;
use crate::views::{bucket_of, Shelf};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/map/markers", get(markers))
        .route("/memories", get(list_memories))
        .route("/timeline/buckets", get(buckets))
        .route("/timeline/bucket", get(bucket))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct MarkerQuery {
    is_archived: Option<bool>,
    is_favorite: Option<bool>,
    file_created_after: Option<String>,
    file_created_before: Option<String>,
    with_partners: Option<bool>,
}

/// Every located photo: `{id, lat, lon, city, state, country}`.
async fn markers(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Query(q): Query<MarkerQuery>,
) -> ApiResult<Json<Value>> {
    blocking(move || {
        let (records, _) = corpus(&node, &u.id)?;
        let out: Vec<Value> = records
            .iter()
            .filter(|r| r.shown_alone() && !r.is_trashed())
            .filter(|r| q.with_partners == Some(true) || r.owner.as_deref() == Some(u.id.as_str()))
            .filter(|r| match q.is_archived {
                Some(true) => true,
                _ => r.archived != Some(true),
            })
            .filter(|r| {
                q.is_favorite
                    .is_none_or(|f| (r.favorite == Some(true)) == f)
            })
            .filter(|r| {
                let t = r.taken_at.as_deref().unwrap_or_default();
                q.file_created_after.as_deref().is_none_or(|a| t >= a)
                    && q.file_created_before.as_deref().is_none_or(|b| t <= b)
            })
            .filter_map(|r| {
                let (lat, lon) = (r.lat?, r.lon?);
                Some(json!({
                    "id": r.id, "lat": lat, "lon": lon,
                    "city": r.city, "state": r.state, "country": r.country,
                }))
            })
            .collect();
        Ok(Json(Value::Array(out)))
    })
    .await
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MemoryQuery {
    #[serde(rename = "for")]
    day: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Immich's memories for a day (default today, UTC): one `on_this_day` memory per earlier
/// year with photos on this date. Tessera's trips and people memories are in `tessera.kind`
/// of extra entries when `type` is not given.
async fn list_memories(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Query(q): Query<MemoryQuery>,
) -> ApiResult<Json<Value>> {
    let today = match q.day.as_deref() {
        Some(d) if d.len() >= 10 && tessera_core::record::month_of(d).is_some() => {
            d[..10].to_owned()
        }
        Some(d) => {
            return Err(ApiError::bad_request(format!(
                "for must be a date, not {d:?}"
            )))
        }
        None => crate::now_rfc3339()[..10].to_owned(),
    };
    let only_on_this_day = match q.kind.as_deref() {
        None => false,
        Some("on_this_day") => true,
        Some(t) => {
            return Err(ApiError::bad_request(format!(
                "type must be on_this_day, not {t}"
            )))
        }
    };
    blocking(move || {
        let (records, people) = corpus(&node, &u.id)?;
        let mine: Vec<AssetRecord> =
            records.into_iter().filter(|r| r.owner.as_deref() == Some(u.id.as_str())).collect();
        let by_id: BTreeMap<&str, &AssetRecord> = mine.iter().map(|r| (r.id.as_str(), r)).collect();
        let list = if only_on_this_day {
            memories::on_this_day(&mine, &today)
        } else {
            memories::all(&mine, &people, &today)
        };
        let now = format!("{today}T00:00:00.000Z");
        let out: Vec<Value> = list
            .iter()
            .map(|m| {
                let (kind, year, memory_at, extra) = match &m.kind {
                    Kind::OnThisDay { year } => {
                        ("on_this_day", *year, format!("{year}{}T00:00:00.000Z", &today[4..]), json!({}))
                    }
                    Kind::Trip { place, first_day, last_day } => (
                        "trip",
                        first_day[..4].parse().unwrap_or(0),
                        format!("{first_day}T00:00:00.000Z"),
                        json!({"place": place, "firstDay": first_day, "lastDay": last_day}),
                    ),
                    Kind::Person { id, name } => {
                        ("person", 0, now.clone(), json!({"personId": id, "name": name}))
                    }
                };
                let id = blake3::hash(format!("{}\n{kind}\n{}", u.id, m.assets.join(",")).as_bytes());
                json!({
                    "id": uuid_like(id.as_bytes()),
                    "createdAt": now, "updatedAt": now, "memoryAt": memory_at,
                    "showAt": now, "hideAt": format!("{today}T23:59:59.999Z"),
                    "ownerId": u.id, "type": "on_this_day", "data": {"year": year},
                    "isSaved": false,
                    "assets": m.assets.iter().filter_map(|a| by_id.get(a.as_str())).map(|r| asset_json(r)).collect::<Vec<_>>(),
                    "tessera": {"kind": kind, "title": m.title, "details": extra},
                })
            })
            .collect();
        Ok(Json(Value::Array(out)))
    })
    .await
}

/// A stable id in UUID form (Immich's clients expect UUIDs).
fn uuid_like(b: &[u8; 32]) -> String {
    let h = data_encoding::HEXLOWER.encode(&b[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct BucketQuery {
    time_bucket: Option<String>,
    album_id: Option<String>,
    person_id: Option<String>,
    is_favorite: Option<bool>,
    is_trashed: Option<bool>,
    visibility: Option<String>,
    with_partners: Option<bool>,
    order: Option<String>,
    user_id: Option<String>,
    with_coordinates: Option<bool>,
}

/// The assets a timeline request selects, newest first (or oldest with `order=asc`).
///
/// `month` (`YYYY-MM`) limits the shards read to that capture month: a bucket reads one month.
fn timeline_assets(
    node: &crate::Node,
    user: &str,
    q: &BucketQuery,
    month: Option<&str>,
) -> ApiResult<Vec<AssetRecord>> {
    let records = records_where(node, user, month)?;
    // Who is in the photos only for a person's timeline.
    let people = match &q.person_id {
        Some(_) => {
            let lib = node.catalog.lock()?;
            Some(
                node.views
                    .people_index(&lib, user)
                    .map_err(CatalogError::from)?,
            )
        }
        None => None,
    };
    let album: Option<std::collections::HashSet<String>> = match &q.album_id {
        Some(a) => {
            let lib = node.catalog.lock()?;
            let doc = tessera_core::DocId::album(a)
                .map_err(|_| ApiError::bad_request(format!("{a:?} is not an album id")))?;
            match lib.album(&doc).map_err(CatalogError::from)? {
                Some(v) if v.role_of(user).is_some() && !v.deleted => {
                    Some(v.items.iter().map(|i| i.asset.clone()).collect())
                }
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "Not found or no album.read access: {a}"
                    )))
                }
            }
        }
        None => None,
    };
    // An album's timeline shows its photos whoever owns them: those not in my corpus come
    // from the album's owners' shards.
    let mut records = records;
    if let Some(set) = &album {
        let have: std::collections::HashSet<String> =
            records.iter().map(|r| r.id.clone()).collect();
        for id in set.iter().filter(|id| !have.contains(*id)) {
            if let Ok(r) = record_of(node, id) {
                records.push(r);
            }
        }
    }
    let mut out: Vec<AssetRecord> = records
        .into_iter()
        .filter(|r| r.shown_alone() && !r.is_purged())
        .filter(|r| match (q.is_trashed, q.visibility.as_deref()) {
            (Some(true), _) => r.is_trashed(),
            (_, Some("archive")) => r.archived == Some(true) && !r.is_trashed(),
            _ => !r.is_trashed() && (album.is_some() || r.archived != Some(true)),
        })
        .filter(|r| album.as_ref().is_none_or(|s| s.contains(&r.id)))
        .filter(|r| {
            album.is_some()
                || q.with_partners == Some(true)
                || r.owner.as_deref() == Some(q.user_id.as_deref().unwrap_or(user))
        })
        .filter(|r| {
            q.is_favorite
                .is_none_or(|f| (r.favorite == Some(true)) == f)
        })
        .filter(|r| {
            q.person_id.as_ref().is_none_or(|p| {
                people
                    .as_ref()
                    .is_some_and(|people| people.people_of(&r.id).iter().any(|q| **q == **p))
            })
        })
        .collect();
    out.sort_by(|a, b| b.taken_at.cmp(&a.taken_at).then_with(|| a.id.cmp(&b.id)));
    if q.order.as_deref() == Some("asc") {
        out.reverse();
    }
    Ok(out)
}

/// The bucket counts of the plain timeline (the user's own assets; favourites, archive or
/// trash), summed from each shard's cached counts without reading a record. `None` when the
/// query needs records (an album, a person, partners).
fn counted_buckets(
    node: &crate::Node,
    user: &str,
    q: &BucketQuery,
) -> ApiResult<Option<Vec<(String, u32)>>> {
    if q.album_id.is_some()
        || q.person_id.is_some()
        || q.with_partners == Some(true)
        || q.user_id.as_deref().is_some_and(|u| u != user)
    {
        return Ok(None);
    }
    let shelf = match (q.is_trashed, q.visibility.as_deref()) {
        (Some(true), _) => Shelf::Trash,
        (_, Some("archive")) => Shelf::Archive,
        _ => Shelf::Timeline,
    };
    let lib = node.catalog.lock()?;
    let mut sums: std::collections::BTreeMap<String, u32> = Default::default();
    for s in lib.shards(user).map_err(CatalogError::from)? {
        let doc = tessera_core::DocId::shard(user, &s.month).map_err(ApiError::internal)?;
        let counts = node.views.counts(&lib, &doc).map_err(CatalogError::from)?;
        for ((bucket, owner, sh, fav), n) in &counts.counts {
            if owner == user && *sh == shelf && q.is_favorite.is_none_or(|f| f == *fav) {
                *sums.entry(bucket.clone()).or_insert(0) += n;
            }
        }
    }
    let mut out: Vec<(String, u32)> = sums.into_iter().collect();
    if q.order.as_deref() != Some("asc") {
        out.reverse();
    }
    Ok(Some(out))
}

async fn buckets(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Query(q): Query<BucketQuery>,
) -> ApiResult<Json<Value>> {
    blocking(move || {
        if let Some(counts) = counted_buckets(&node, &u.id, &q)? {
            return Ok(Json(Value::Array(
                counts
                    .into_iter()
                    .map(|(b, n)| json!({"timeBucket": b, "count": n}))
                    .collect(),
            )));
        }
        let assets = timeline_assets(&node, &u.id, &q, None)?;
        let mut counts: Vec<(String, usize)> = Vec::new();
        for r in &assets {
            let Some(b) = bucket_of(r) else { continue };
            match counts.last_mut() {
                Some((k, n)) if *k == b => *n += 1,
                _ => counts.push((b, 1)),
            }
        }
        Ok(Json(Value::Array(
            counts
                .into_iter()
                .map(|(b, n)| json!({"timeBucket": b, "count": n}))
                .collect(),
        )))
    })
    .await
}

/// The UTC offset of a capture time in hours (0 when it has none).
fn offset_hours(t: &str) -> f64 {
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| f64::from(d.offset().local_minus_utc()) / 3600.0)
        .unwrap_or(0.0)
}

async fn bucket(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Query(q): Query<BucketQuery>,
) -> ApiResult<Json<Value>> {
    let want = q
        .time_bucket
        .clone()
        .filter(|b| b.len() >= 7 && tessera_core::record::month_of(b).is_some())
        .map(|b| format!("{}-01", &b[..7]))
        .ok_or_else(|| ApiError::bad_request("timeBucket must be a date (YYYY-MM-DD)"))?;
    blocking(move || {
        let assets = timeline_assets(&node, &u.id, &q, Some(&want[..7]))?;
        let rs: Vec<&AssetRecord> = assets.iter().filter(|r| bucket_of(r).as_deref() == Some(&want)).collect();
        let col = |f: &dyn Fn(&AssetRecord) -> Value| Value::Array(rs.iter().map(|r| f(r)).collect());
        let mut out = json!({
            "id": col(&|r| json!(r.id)),
            "ownerId": col(&|r| json!(r.owner)),
            "ratio": col(&|r| {
                let (w, h) = (r.width.unwrap_or(1).max(1), r.height.unwrap_or(1).max(1));
                json!(f64::from(w) / f64::from(h))
            }),
            "isFavorite": col(&|r| json!(r.favorite == Some(true))),
            "visibility": col(&|r| json!(if r.archived == Some(true) { "archive" } else { "timeline" })),
            "isTrashed": col(&|r| json!(r.is_trashed())),
            "isImage": col(&|r| json!(!r.is_video())),
            "thumbhash": col(&|r| json!(r.thumbhash)),
            "fileCreatedAt": col(&|r| json!(crate::http::sync::utc(r.taken_at.as_deref()))),
            "createdAt": col(&|r| json!(r.uploaded_at)),
            "localOffsetHours": col(&|r| json!(offset_hours(r.taken_at.as_deref().unwrap_or_default()))),
            "duration": col(&|r| json!(r.duration.map(|d| (d * 1000.0).round() as i64))),
            "projectionType": col(&|_| Value::Null),
            "livePhotoVideoId": col(&|r| json!(crate::http::assets::live_video_id(r))),
            "city": col(&|r| json!(r.city)),
            "country": col(&|r| json!(r.country)),
        });
        if q.with_coordinates == Some(true) {
            out["latitude"] = col(&|r| json!(r.lat));
            out["longitude"] = col(&|r| json!(r.lon));
        }
        Ok(Json(out))
    })
    .await
}
