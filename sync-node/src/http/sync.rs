//! Immich's sync stream, what its mobile app (3.x) fills its timeline from:
//! `POST /api/sync/stream` (JSON lines `{type, data, ack}`), `GET|POST|DELETE /api/sync/ack`.
//!
//! The stream is a view of the catalogue documents (see `crate::immich_sync`): each request
//! recomputes what the session may see and sends what changed since its acknowledgements.
//! Groups go in Immich's order, so that every row the app inserts finds the rows it refers to
//! (users before assets, assets before their EXIF and album links, albums before their members
//! and items); within a group deletes come first. Requested types Tessera does not have
//! (memories, stacks, people, edits…) are skipped.

use std::collections::{BTreeMap, HashMap};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tessera_core::{AssetRecord, DocId};

use crate::auth::{Auth, User};
use crate::catalog::CatalogError;
use crate::http::assets::{
    asset_kind, checksum_b64, exposure_string, immich_duration, live_video_id, visibility,
};
use crate::http::extract::{bearer, cookie_token};
use crate::http::*;
use crate::immich_sync::{hash_of, AckError, PendingLine};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/sync/stream", post(stream)).route(
        "/sync/ack",
        get(get_acks).post(send_acks).delete(delete_acks),
    )
}

/// A user signed in with a login session (Immich: sync endpoints cannot be used with API keys,
/// because checkpoints belong to a session).
pub struct LoginSession {
    pub user: User,
    pub session: String,
}

impl FromRequestParts<AppState> for LoginSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &AppState) -> Result<Self, ApiError> {
        let h = &parts.headers;
        if h.contains_key("x-api-key") {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Sync endpoints cannot be used with API keys",
            ));
        }
        let token = bearer(h)
            .or_else(|| cookie_token(h))
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "Authentication required"))?;
        let user = node
            .auth
            .user_by_token(&token)?
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "Invalid user token"))?;
        Ok(LoginSession {
            user,
            session: Auth::session_id(&token),
        })
    }
}

/// A checkpoint group: the request type that selects it, and the line types it sends.
struct Group {
    /// The request type (`AssetsV2`), also the checkpoint group's name.
    name: &'static str,
    upsert: &'static str,
    delete: Option<&'static str>,
}

/// In Immich's order (`SYNC_TYPES_ORDER`, server/src/services/sync.service.ts), whatever order
/// the app asks in: the app's tables have foreign keys, so users come before assets, assets
/// before albums (their cover), albums before their members and items, and EXIF last.
const GROUPS: &[Group] = &[
    Group {
        name: "AuthUsersV1",
        upsert: "AuthUserV1",
        delete: None,
    },
    Group {
        name: "UsersV1",
        upsert: "UserV1",
        delete: Some("UserDeleteV1"),
    },
    Group {
        name: "PartnersV1",
        upsert: "PartnerV1",
        delete: Some("PartnerDeleteV1"),
    },
    Group {
        name: "AssetsV1",
        upsert: "AssetV1",
        delete: Some("AssetDeleteV1"),
    },
    Group {
        name: "AssetsV2",
        upsert: "AssetV2",
        delete: Some("AssetDeleteV1"),
    },
    Group {
        name: "PartnerAssetsV1",
        upsert: "PartnerAssetV1",
        delete: Some("PartnerAssetDeleteV1"),
    },
    Group {
        name: "PartnerAssetsV2",
        upsert: "PartnerAssetV2",
        delete: Some("PartnerAssetDeleteV1"),
    },
    Group {
        name: "AlbumAssetsV1",
        upsert: "AlbumAssetCreateV1",
        delete: Some("AssetDeleteV1"),
    },
    Group {
        name: "AlbumAssetsV2",
        upsert: "AlbumAssetCreateV2",
        delete: Some("AssetDeleteV1"),
    },
    Group {
        name: "AlbumsV1",
        upsert: "AlbumV1",
        delete: Some("AlbumDeleteV1"),
    },
    Group {
        name: "AlbumsV2",
        upsert: "AlbumV2",
        delete: Some("AlbumDeleteV1"),
    },
    Group {
        name: "AlbumUsersV1",
        upsert: "AlbumUserV1",
        delete: Some("AlbumUserDeleteV1"),
    },
    Group {
        name: "AlbumToAssetsV1",
        upsert: "AlbumToAssetV1",
        delete: Some("AlbumToAssetDeleteV1"),
    },
    Group {
        name: "AssetExifsV1",
        upsert: "AssetExifV1",
        delete: None,
    },
    Group {
        name: "AlbumAssetExifsV1",
        upsert: "AlbumAssetExifCreateV1",
        delete: None,
    },
    Group {
        name: "PartnerAssetExifsV1",
        upsert: "PartnerAssetExifV1",
        delete: None,
    },
];

/// Immich's `SyncRequestType` (3.2.2): anything else is refused before streaming, as Immich
/// does; known types Tessera has no data for (memories, stacks, people, edits, OCR…) are
/// skipped.
const REQUEST_TYPES: &[&str] = &[
    "AlbumsV1",
    "AlbumsV2",
    "AlbumUsersV1",
    "AlbumToAssetsV1",
    "AlbumAssetsV1",
    "AlbumAssetsV2",
    "AlbumAssetExifsV1",
    "AssetsV1",
    "AssetsV2",
    "AssetExifsV1",
    "AssetEditsV1",
    "AssetMetadataV1",
    "AssetOcrV1",
    "AuthUsersV1",
    "MemoriesV1",
    "MemoryToAssetsV1",
    "PartnersV1",
    "PartnerAssetsV1",
    "PartnerAssetsV2",
    "PartnerAssetExifsV1",
    "PartnerStacksV1",
    "StacksV1",
    "UsersV1",
    "PeopleV1",
    "AssetFacesV1",
    "AssetFacesV2",
    "UserMetadataV1",
];

/// The groups whose entities are rows of the app's `remote_asset` table.
const ASSET_GROUPS: &[&str] = &[
    "AssetsV1",
    "AssetsV2",
    "PartnerAssetsV1",
    "PartnerAssetsV2",
    "AlbumAssetsV1",
    "AlbumAssetsV2",
];

/// A record's time: with an offset (RFC 3339), or a camera's wall-clock time without one
/// (taken as UTC, as Immich does). (wall clock, instant)
fn parse_time(t: &str) -> Option<(chrono::NaiveDateTime, chrono::DateTime<chrono::Utc>)> {
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(t) {
        return Some((d.naive_local(), d.with_timezone(&chrono::Utc)));
    }
    let n = chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    Some((n, n.and_utc()))
}

/// Immich's date-times: UTC with milliseconds.
pub(crate) fn utc(t: Option<&str>) -> Value {
    match t.and_then(parse_time) {
        Some((_, d)) => json!(d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        None => Value::Null,
    }
}

/// Immich's `localDateTime`: the wall-clock time where the photo was taken, written as UTC.
fn local(t: Option<&str>) -> Value {
    match t.and_then(parse_time) {
        Some((n, _)) => json!(format!("{}Z", n.format("%Y-%m-%dT%H:%M:%S%.3f"))),
        None => Value::Null,
    }
}

/// `UTC`, `UTC+3`, `UTC-9:30`: Immich's names for a bare offset.
fn utc_offset_name(secs: i32) -> String {
    let (sign, s) = if secs < 0 { ('-', -secs) } else { ('+', secs) };
    match (s / 3600, (s % 3600) / 60) {
        (0, 0) => "UTC".into(),
        (h, 0) => format!("UTC{sign}{h}"),
        (h, m) => format!("UTC{sign}{h}:{m:02}"),
    }
}

fn auth_user(u: &User, usage: u64) -> Value {
    json!({
        "id": u.id, "name": u.name, "email": u.email,
        "avatarColor": u.avatar_color.as_deref().unwrap_or("primary"),
        "deletedAt": u.deleted_at, "hasProfileImage": false, "isAdmin": u.is_admin,
        "oauthId": "", "pinCode": null,
        "profileChangedAt": u.updated_at.as_deref().unwrap_or(&u.created_at),
        "quotaSizeInBytes": u.quota_bytes, "quotaUsageInBytes": usage,
        "storageLabel": u.storage_label,
    })
}

fn user(u: &User) -> Value {
    json!({
        "id": u.id, "name": u.name, "email": u.email,
        "avatarColor": u.avatar_color.as_deref().unwrap_or("primary"),
        "deletedAt": u.deleted_at, "hasProfileImage": false,
        "profileChangedAt": u.updated_at.as_deref().unwrap_or(&u.created_at),
    })
}

/// `SyncAssetV1` (duration "H:MM:SS.ffffff") or `SyncAssetV2` (duration in milliseconds).
fn asset(r: &AssetRecord, v2: bool) -> Value {
    let video = asset_kind(r) == "VIDEO";
    let duration = match (video, r.duration) {
        (false, _) | (true, None) => Value::Null,
        (true, Some(d)) if v2 => json!((d * 1000.0).round() as u64),
        (true, Some(d)) => json!(immich_duration(d)),
    };
    let taken = r.taken_at.as_deref();
    json!({
        "id": r.id, "ownerId": r.owner, "checksum": checksum_b64(r),
        "createdAt": utc(r.uploaded_at.as_deref()),
        "deletedAt": utc(r.trashed_at.as_deref()),
        "duration": duration,
        "fileCreatedAt": utc(r.file_created_at.as_deref().or(taken)),
        "fileModifiedAt": utc(r.file_modified_at.as_deref().or(taken)),
        "localDateTime": local(taken.or(r.file_created_at.as_deref())),
        "width": r.width, "height": r.height,
        "isEdited": false, "isFavorite": r.favorite.unwrap_or(false),
        "libraryId": null, "livePhotoVideoId": live_video_id(r),
        "originalFileName": r.filename.as_deref().unwrap_or(&r.id),
        "stackId": null, "thumbhash": r.thumbhash,
        "type": asset_kind(r), "visibility": visibility(r),
    })
}

fn exif(r: &AssetRecord) -> Value {
    json!({
        "assetId": r.id, "city": null, "state": null, "country": null,
        "dateTimeOriginal": utc(r.taken_at.as_deref()), "description": null,
        "exifImageWidth": r.width, "exifImageHeight": r.height,
        "exposureTime": r.exposure_time.map(exposure_string),
        "fNumber": r.f_number, "fileSizeInByte": r.size, "focalLength": r.focal_length,
        "fps": null, "iso": r.iso, "latitude": r.lat, "longitude": r.lon,
        "city": r.city, "state": r.state, "country": r.country,
        "lensModel": r.lens, "make": r.make, "model": r.model,
        "modifyDate": utc(r.file_modified_at.as_deref()),
        "orientation": r.orientation.map(|o| o.to_string()),
        "profileDescription": null, "projectionType": null, "rating": null,
        "timeZone": r.taken_at.as_deref().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .filter(|_| r.taken_at_source.as_deref() == Some("exif"))
            .map(|d| utc_offset_name(d.offset().local_minus_utc())),
    })
}

/// The delete line's data for a key of `group` (keys are built to carry it).
fn delete_data(group: &str, key: &str) -> Value {
    let (a, b) = key.split_once('/').unwrap_or((key, ""));
    match group {
        "UsersV1" => json!({"userId": key}),
        "PartnersV1" => json!({"sharedById": a, "sharedWithId": b}),
        "AlbumsV1" | "AlbumsV2" => json!({"albumId": key}),
        "AlbumUsersV1" => json!({"albumId": a, "userId": b}),
        "AlbumToAssetsV1" => json!({"albumId": a, "assetId": b}),
        _ => json!({"assetId": key}),
    }
}

/// What a session may see, computed once per stream from the catalogue.
struct View {
    me: User,
    usage: u64,
    users: Vec<User>,
    /// (sharer, partner, partner's in-timeline)
    partners: Vec<(String, String, bool)>,
    /// Ids of my live assets (their records are streamed shard by shard: see `produce`).
    own_live: std::collections::HashSet<String>,
    want_own: bool,
    /// Partners' photos in the months they share with me.
    partner_assets: Vec<AssetRecord>,
    /// Others' photos in albums I am in (not already a partner's).
    album_assets: Vec<AssetRecord>,
    albums: Vec<tessera_core::AlbumView>,
    /// (album, asset) pairs whose asset the session gets (own, partner's or album's).
    album_items: Vec<(String, String)>,
    /// Partners' and albums' asset ids the session gets.
    other_ids: std::collections::HashSet<String>,
}

impl View {
    /// An asset the session gets, in whichever group.
    fn has_asset(&self, id: &str) -> bool {
        (self.want_own && self.own_live.contains(id)) || self.other_ids.contains(id)
    }
}

/// `types`: what the app asked for. An album item or cover is sent only when its asset is
/// (the app's album tables refer to its asset table).
fn view_of(node: &crate::Node, me: User, types: &[String]) -> ApiResult<View> {
    let asked = |names: &[&str]| types.iter().any(|t| names.contains(&t.as_str()));
    let (want_own, want_partner, want_album) = (
        asked(&["AssetsV1", "AssetsV2"]),
        asked(&["PartnerAssetsV1", "PartnerAssetsV2"]),
        asked(&["AlbumAssetsV1", "AlbumAssetsV2"]),
    );
    let users: Vec<User> = node.auth.users(true)?;
    // My library shard by shard (a 300k library is never held whole): ids and usage only.
    let mut own_live = std::collections::HashSet::new();
    let mut usage = 0u64;
    crate::housekeeping::for_each_shard(node, &me.id, |_, records| {
        usage = usage.saturating_add(crate::http::users::usage(records));
        own_live.extend(
            records
                .iter()
                .filter(|r| !r.is_purged())
                .map(|r| r.id.clone()),
        );
        Ok(())
    })?;
    let lib = node.catalog.lock()?;
    let mut partners = Vec::new();
    let mut partner_assets = Vec::new();
    for s in lib.partners_of(&me.id).map_err(CatalogError::from)? {
        let inline = lib.partner_in_timeline(&s.partner, &me.id);
        partners.push((me.id.clone(), s.partner.clone(), inline));
    }
    for s in lib.shared_with(&me.id).map_err(CatalogError::from)? {
        let inline = lib.partner_in_timeline(&me.id, &s.sharer);
        partners.push((s.sharer.clone(), me.id.clone(), inline));
        if !want_partner {
            continue;
        }
        for m in lib.shards(&s.sharer).map_err(CatalogError::from)? {
            if !s.covers_month(&m.month) {
                continue;
            }
            let Ok(doc) = DocId::shard(&s.sharer, &m.month) else {
                continue;
            };
            partner_assets.extend(
                lib.assets(&doc)
                    .map_err(CatalogError::from)?
                    .into_iter()
                    // Immich shows partners nothing archived, and nothing of their trash.
                    // A photo I saved is mine (same id): it is sent once, as my asset.
                    .filter(|r| !r.is_purged() && !r.is_trashed() && r.archived != Some(true))
                    .filter(|r| !own_live.contains(&r.id)),
            );
        }
    }
    let albums: Vec<tessera_core::AlbumView> = lib
        .albums_of(&me.id)
        .map_err(CatalogError::from)?
        .into_iter()
        .filter(|a| !a.deleted)
        .collect();
    let partner_ids: std::collections::HashSet<String> =
        partner_assets.iter().map(|r| r.id.clone()).collect();
    let mut album_assets: BTreeMap<String, AssetRecord> = BTreeMap::new();
    let mut album_items = Vec::new();
    for a in &albums {
        for i in &a.items {
            let seen = if own_live.contains(&i.asset) {
                want_own
            } else if partner_ids.contains(&i.asset) {
                want_partner
            } else if !want_album {
                false
            } else if let Some(r) = crate::http::albums::item_record(node, &lib, &i.owner, &i.asset)
            {
                album_assets.entry(r.id.clone()).or_insert(r);
                true
            } else {
                false
            };
            if seen {
                album_items.push((a.id.clone(), i.asset.clone()));
            }
        }
    }
    let album_assets: Vec<AssetRecord> = album_assets.into_values().collect();
    let mut other_ids = std::collections::HashSet::new();
    other_ids.extend(partner_assets.iter().map(|r| r.id.clone()));
    other_ids.extend(album_assets.iter().map(|r| r.id.clone()));
    Ok(View {
        other_ids,
        me,
        usage,
        users,
        partners,
        own_live,
        want_own,
        partner_assets,
        album_assets,
        albums,
        album_items,
    })
}

/// Groups of my own assets: produced shard by shard, never as one map of the whole library.
const STREAMED: [&str; 3] = ["AssetsV1", "AssetsV2", "AssetExifsV1"];

/// A streamed group's data for one record.
fn streamed_entity(group: &str, r: &AssetRecord) -> Value {
    match group {
        "AssetExifsV1" => exif(r),
        g => asset(r, g == "AssetsV2"),
    }
}

/// The current entities of a group: key → data.
fn entities(group: &str, v: &View) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    match group {
        "AuthUsersV1" => {
            out.insert(v.me.id.clone(), auth_user(&v.me, v.usage));
        }
        "UsersV1" => {
            for u in &v.users {
                out.insert(u.id.clone(), user(u));
            }
        }
        "PartnersV1" => {
            for (by, with, inline) in &v.partners {
                out.insert(
                    format!("{by}/{with}"),
                    json!({"sharedById": by, "sharedWithId": with, "inTimeline": inline}),
                );
            }
        }
        // Streamed shard by shard in `produce`.
        g if STREAMED.contains(&g) => {}
        "PartnerAssetsV1" | "PartnerAssetsV2" => {
            for r in &v.partner_assets {
                out.insert(r.id.clone(), asset(r, group == "PartnerAssetsV2"));
            }
        }
        "PartnerAssetExifsV1" => {
            for r in &v.partner_assets {
                out.insert(r.id.clone(), exif(r));
            }
        }
        "AlbumAssetsV1" | "AlbumAssetsV2" => {
            for r in &v.album_assets {
                out.insert(r.id.clone(), asset(r, group == "AlbumAssetsV2"));
            }
        }
        "AlbumAssetExifsV1" => {
            for r in &v.album_assets {
                out.insert(r.id.clone(), exif(r));
            }
        }
        "AlbumsV1" | "AlbumsV2" => {
            for a in &v.albums {
                // The cover must be a photo the app has: the chosen one, else the first.
                let items: Vec<&String> = v
                    .album_items
                    .iter()
                    .filter(|(album, _)| *album == a.id)
                    .map(|(_, asset)| asset)
                    .collect();
                let cover = a
                    .cover
                    .as_ref()
                    .filter(|c| items.contains(c))
                    .or(items.first().copied());
                let mut d = json!({
                    "id": a.id, "name": a.name, "description": a.description,
                    "createdAt": utc(Some(&a.created_at)), "updatedAt": utc(Some(&a.updated_at)),
                    "thumbnailAssetId": cover, "isActivityEnabled": a.activity,
                    "order": a.order,
                });
                if group == "AlbumsV1" {
                    d["ownerId"] = json!(a.owner);
                }
                out.insert(a.id.clone(), d);
            }
        }
        "AlbumUsersV1" => {
            for a in &v.albums {
                for (u, role) in &a.members {
                    out.insert(
                        format!("{}/{u}", a.id),
                        json!({"albumId": a.id, "userId": u, "role": role.as_str()}),
                    );
                }
            }
        }
        "AlbumToAssetsV1" => {
            for (album, asset) in &v.album_items {
                out.insert(
                    format!("{album}/{asset}"),
                    json!({"albumId": album, "assetId": asset}),
                );
            }
        }
        _ => {}
    }
    out
}

#[derive(Deserialize)]
struct StreamBody {
    types: Vec<String>,
    #[serde(default)]
    reset: bool,
}

/// Serialises stream lines into ~64 KiB chunks for the response body.
struct Lines {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl Lines {
    fn line(&mut self, t: &str, data: &Value, ack: &str) -> bool {
        let v = json!({"type": t, "data": data, "ack": ack});
        if serde_json::to_writer(&mut self.buf, &v).is_err() {
            return false;
        }
        self.buf.push(b'\n');
        if self.buf.len() >= 64 << 10 {
            return self.flush();
        }
        true
    }

    fn flush(&mut self) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx.blocking_send(Ok(chunk)).is_ok()
    }
}

async fn stream(
    State(node): State<AppState>,
    s: LoginSession,
    body: Result<Json<StreamBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let Json(b) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let Some(t) = b
        .types
        .iter()
        .find(|t| !REQUEST_TYPES.contains(&t.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "Invalid sync request type: {t}"
        )));
    }
    if b.reset {
        let n = node.clone();
        let sess = s.session.clone();
        blocking(move || Ok(n.immich_sync.clear(&sess, None)?)).await?;
    }
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut out = Lines {
            tx: tx.clone(),
            buf: Vec::new(),
        };
        if let Err(e) = produce(&node, &s, &b.types, &mut out) {
            tracing::warn!(error = %e.message, "sync stream ended early");
            let _ = out.flush();
            let _ = tx.blocking_send(Err(std::io::Error::other(e.message)));
            return;
        }
        out.flush();
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    Ok(([(header::CONTENT_TYPE, "application/jsonlines+json")], body).into_response())
}

fn produce(
    node: &crate::Node,
    s: &LoginSession,
    types: &[String],
    out: &mut Lines,
) -> ApiResult<()> {
    let cp = &node.immich_sync;
    let stream = cp.begin(&s.session);
    let emit = |out: &mut Lines, line: PendingLine, data: &Value| -> bool {
        let t = line.line_type;
        match cp.push(&s.session, stream, line) {
            Some(i) => out.line(t, data, &format!("{t}|{stream}-{i}|")),
            None => false,
        }
    };
    if cp.needs_reset(&s.session)? {
        emit(
            out,
            PendingLine {
                line_type: "SyncResetV1",
                group: "",
                key: String::new(),
                hash: None,
            },
            &json!({}),
        );
        return Ok(());
    }
    let view = view_of(node, s.user.clone(), types)?;
    for g in GROUPS {
        if !types.iter().any(|t| t == g.name) {
            continue;
        }
        let acked: HashMap<String, [u8; 16]> = cp.acked(&s.session, g.name)?;
        let streamed = STREAMED.contains(&g.name);
        let now = entities(g.name, &view);
        let current = |key: &str| {
            if streamed {
                view.own_live.contains(key)
            } else {
                now.contains_key(key)
            }
        };
        // Deletes first (Immich's order), then what is new or changed.
        if let Some(del) = g.delete {
            for key in acked.keys().filter(|k| !current(k)) {
                // An asset that moved to another of the app's asset groups (a partner's photo
                // I saved, an album photo now shared by a partner) is still on the device:
                // deleting it would delete the row the other group keeps.
                if ASSET_GROUPS.contains(&g.name) && view.has_asset(key) {
                    cp.forget(&s.session, g.name, key)?;
                    continue;
                }
                let data = delete_data(g.name, key);
                let line = PendingLine {
                    line_type: del,
                    group: g.name,
                    key: key.clone(),
                    hash: None,
                };
                if !emit(out, line, &data) {
                    return Ok(());
                }
            }
        }
        let upsert = |out: &mut Lines, key: &str, data: &Value| -> bool {
            let h = hash_of(data.to_string().as_bytes());
            if acked.get(key) == Some(&h) {
                return true;
            }
            let line_type = match g.name {
                "AlbumAssetsV2" if acked.contains_key(key) => "AlbumAssetUpdateV2",
                "AlbumAssetsV1" if acked.contains_key(key) => "AlbumAssetUpdateV1",
                "AlbumAssetExifsV1" if acked.contains_key(key) => "AlbumAssetExifUpdateV1",
                _ => g.upsert,
            };
            let line = PendingLine {
                line_type,
                group: g.name,
                key: key.to_owned(),
                hash: Some(h),
            };
            emit(out, line, data)
        };
        if streamed {
            // Newest month first, one shard's records at a time.
            let mut full = false;
            crate::housekeeping::for_each_shard_while(node, &view.me.id, |_, records| {
                for r in records.iter().filter(|r| !r.is_purged()) {
                    if !upsert(out, &r.id, &streamed_entity(g.name, r)) {
                        full = true;
                        return Ok(false);
                    }
                }
                Ok(true)
            })?;
            if full {
                return Ok(());
            }
        } else {
            for (key, data) in &now {
                if !upsert(out, key, data) {
                    return Ok(());
                }
            }
        }
    }
    emit(
        out,
        PendingLine {
            line_type: "SyncCompleteV1",
            group: "",
            key: String::new(),
            hash: None,
        },
        &json!({}),
    );
    Ok(())
}

#[derive(Deserialize)]
struct AckBody {
    acks: Vec<String>,
}

async fn send_acks(
    State(node): State<AppState>,
    s: LoginSession,
    body: Result<Json<AckBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(b) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if b.acks.len() > 1000 {
        return Err(ApiError::bad_request(
            "acks must contain no more than 1000 elements",
        ));
    }
    blocking(move || match node.immich_sync.ack(&s.session, &b.acks) {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(AckError::Invalid(m)) => Err(ApiError::bad_request(format!("invalid ack {m:?}"))),
        Err(AckError::Node(e)) => Err(e.into()),
        Err(AckError::Sled(e)) => Err(crate::node::NodeError::from(e).into()),
    })
    .await
}

async fn get_acks(State(node): State<AppState>, s: LoginSession) -> ApiResult<Json<Value>> {
    blocking(move || {
        let acks = node.immich_sync.acks(&s.session)?;
        Ok(Json(Value::Array(
            acks.into_iter()
                .map(|(t, ack)| json!({"type": t, "ack": ack}))
                .collect(),
        )))
    })
    .await
}

#[derive(Deserialize, Default)]
struct DeleteBody {
    types: Option<Vec<String>>,
}

async fn delete_acks(
    State(node): State<AppState>,
    s: LoginSession,
    body: Option<Json<DeleteBody>>,
) -> ApiResult<StatusCode> {
    let b = body.map(|Json(b)| b).unwrap_or_default();
    blocking(move || {
        match &b.types {
            None => node.immich_sync.clear(&s.session, None)?,
            Some(types) => {
                // Entity types name the groups that send them.
                let groups: Vec<&str> = GROUPS
                    .iter()
                    .filter(|g| {
                        types
                            .iter()
                            .any(|t| t == g.upsert || Some(t.as_str()) == g.delete)
                    })
                    .map(|g| g.name)
                    .collect();
                node.immich_sync.clear(&s.session, Some(&groups))?;
                let ts: Vec<&str> = types.iter().map(String::as_str).collect();
                node.immich_sync.forget_acks(&s.session, &ts)?;
            }
        }
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
