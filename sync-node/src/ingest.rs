//! An original, committed to the blob store, becoming an asset in its owner's catalogue.

use tessera_core::record::status;
use tessera_core::AssetRecord;
use tessera_media::{Hashes, TimeCandidates};

use crate::blobs::BlobKind;
use crate::catalog::CatalogError;
use crate::node::{AssetLocation, Node, NodeError};

/// Whether the media pipeline makes thumbnails for this mime type: every image and video
/// container Tessera accepts (decoders that fail say why on the asset).
pub fn renderable(mime: &str) -> bool {
    (mime.starts_with("image/") && mime != "image/svg+xml") || mime.starts_with("video/")
}

/// What the client told us about the file (Immich's upload fields).
#[derive(Debug, Clone, Default)]
pub struct UploadMeta {
    pub filename: String,
    pub device_asset_id: Option<String>,
    pub device_id: Option<String>,
    pub file_created_at: Option<String>,
    pub file_modified_at: Option<String>,
    pub is_favorite: bool,
    /// An XMP or Google Takeout JSON sidecar (Immich's `sidecarData`).
    pub sidecar: Option<Vec<u8>>,
    /// Immich's `visibility: archive`.
    pub archived: bool,
    /// Immich's `visibility: hidden`: a Live Photo's video, uploaded before its photo.
    pub hidden: bool,
    /// Immich's `livePhotoVideoId` on a Live Photo's photo: the video uploaded before it.
    pub live_photo_video_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created(String),
    Duplicate(String),
    /// The user had this photo in the trash: uploading it again took it out (a client that
    /// backs it up again wants it kept; the purge would otherwise delete it).
    Restored(String),
}

/// Normalises a client timestamp (RFC 3339) to `YYYY-MM-DDTHH:MM:SS(.sss)+hh:mm`.
pub fn normalise_time(s: &str) -> Option<String> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, false))
}

/// Records an asset for an original already durably stored under `hashes.blake3`. Returns
/// once the record is persisted and its media job queued (durably).
pub fn ingest_committed(
    node: &Node,
    owner: &str,
    hashes: &Hashes,
    size: u64,
    meta: UploadMeta,
) -> Result<Outcome, NodeError> {
    let id = hashes.blake3.clone();
    if let Some(loc) = node.location_of(owner, &id)? {
        {
            let shard = tessera_core::DocId::shard(owner, &loc.month)
                .map_err(|e| NodeError::Corrupt(e.to_string()))?;
            let existing = node
                .catalog
                .lock()?
                .asset_in(&shard, &id)
                .map_err(CatalogError::from)?;
            // A purged asset uploaded again comes back as new; a trashed one is restored.
            match existing {
                Some(r) if r.is_purged() => {}
                Some(r) if r.is_trashed() => {
                    crate::housekeeping::apply(
                        node,
                        owner,
                        std::slice::from_ref(&id),
                        crate::housekeeping::Action::Restore,
                    )?;
                    return Ok(Outcome::Restored(id));
                }
                Some(_) => return Ok(Outcome::Duplicate(id)),
                None => {}
            }
        }
    }
    // With object storage, a cached copy (commit just left one; fetched again if evicted).
    let blob = node.blobs.local(BlobKind::Original, &id)?;
    let path = blob.path();
    let head = read_head(path, 64)?;
    let mime = tessera_media::sniff_mime(&head, &meta.filename);
    let mut record = AssetRecord::default();
    let mut exif_time = None;
    let mut qt_time = None;
    if mime.starts_with("video/") {
        match tessera_media::probe_video_file(path) {
            Ok(v) => {
                qt_time = v.taken_at;
                record.duration = v.duration;
                record.codec = v.codec;
                record.width = v.width;
                record.height = v.height;
                record.lat = v.lat;
                record.lon = v.lon;
                record.altitude = v.altitude;
                record.make = v.make;
                record.model = v.model;
            }
            Err(e) => tracing::info!(asset = %id, "no video metadata: {e}"),
        }
    } else if mime.starts_with("image/") {
        // A JPEG's EXIF sits in its first APP segments: read_metadata looks at 1 MB of it.
        // Other stills are read whole (HEIF's Exif item may sit anywhere), but never more than
        // MAX_METADATA_READ: a huge upload must not take the node's memory on the request path.
        let bytes = if mime == "image/jpeg" {
            read_head(path, 1 << 20)?
        } else if size > MAX_METADATA_READ {
            read_head(path, MAX_METADATA_READ as usize)?
        } else {
            node.blobs.read(BlobKind::Original, &id)?
        };
        let md = tessera_media::read_metadata(&bytes);
        drop(bytes);
        exif_time = md.taken_at;
        (record.width, record.height) = match (md.width, md.height, md.orientation) {
            (Some(w), Some(h), Some(5..=8)) => (Some(h), Some(w)),
            (w, h, _) => (w, h),
        };
        record.orientation = md.orientation;
        record.lat = md.lat;
        record.lon = md.lon;
        record.altitude = md.altitude;
        record.make = md.make;
        record.model = md.model;
        record.lens = md.lens;
        record.exposure_time = md.exposure_time;
        record.f_number = md.f_number;
        record.iso = md.iso;
        record.focal_length = md.focal_length;
    }
    let sidecar = match meta.sidecar.as_deref().map(tessera_media::parse_sidecar) {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            tracing::warn!(asset = %id, file = %meta.filename, "sidecar ignored: {e}");
            Default::default()
        }
        None => Default::default(),
    };
    if record.lat.is_none() {
        (record.lat, record.lon) = (sidecar.lat, sidecar.lon);
    }
    crate::geo::locate(&mut record);
    let now = crate::now_rfc3339();
    let created = meta.file_created_at.as_deref().and_then(normalise_time);
    let modified = meta.file_modified_at.as_deref().and_then(normalise_time);
    // EXIF → QuickTime → sidecar → file name → the file's own dates → the upload time.
    let file_time = created.as_deref().or(modified.as_deref());
    let (taken_at, source) = tessera_media::resolve_capture_time(&TimeCandidates {
        exif: exif_time.as_deref(),
        quicktime: qt_time.as_deref(),
        sidecar: sidecar.taken_at.as_deref(),
        filename: Some(&meta.filename),
        file_mtime: file_time,
    })
    .map(|(t, s)| (t, s.as_str()))
    .unwrap_or_else(|| (now.clone(), "upload"));
    let render = renderable(mime);
    let record = AssetRecord {
        id: id.clone(),
        sha1: Some(hashes.sha1.clone()),
        owner: Some(owner.to_owned()),
        filename: Some(meta.filename.clone()),
        mime: Some(mime.to_owned()),
        size: Some(size),
        taken_at: Some(taken_at),
        taken_at_source: Some(source.into()),
        uploaded_at: Some(now),
        file_created_at: created,
        file_modified_at: modified,
        device_asset_id: meta.device_asset_id.clone(),
        device_id: meta.device_id.clone(),
        status: Some(
            if render {
                status::PENDING
            } else {
                status::UNSUPPORTED
            }
            .into(),
        ),
        error: (!render)
            .then(|| format!("{mime} is stored; previews for this type are not available yet")),
        favorite: (meta.is_favorite || sidecar.favorite == Some(true)).then_some(true),
        archived: meta.archived.then_some(true),
        hidden: (meta.hidden && mime.starts_with("video/")).then_some(true),
        ..record
    };
    let month = record.month();
    {
        // Index and job first, durably, then the record, all under the catalogue lock (so the
        // job cannot run before its record exists). A crash in between leaves an index entry
        // and a job without a record: harmless (a lookup answers 404, the job is dropped, a
        // re-upload creates the asset). The reverse order would leave a persisted record that
        // nothing indexes and no job processes.
        let mut lib = node.catalog.lock()?;
        node.set_location(
            &id,
            &AssetLocation {
                owner: owner.to_owned(),
                month,
                sha1: hashes.sha1.clone(),
            },
        )?;
        if render {
            node.jobs.enqueue_quiet(&id, owner)?;
        }
        node.flush()?;
        lib.upsert_assets(owner, std::slice::from_ref(&record))
            .map_err(CatalogError::from)?;
        node.catalog.persist(&mut lib)?;
    }
    node.jobs.wake();
    let paired = match meta.live_photo_video_id.as_deref() {
        Some(video) => pair_named_video(node, owner, &record, video),
        None => pair_live_photo(node, owner, &record),
    };
    if let Err(e) = paired {
        tracing::warn!(asset = %id, "Live Photo pairing skipped: {e}");
    }
    node.flush()?;
    node.webhooks.emit(
        owner,
        "asset.created",
        serde_json::json!({"assetId": id, "originalFileName": record.filename,
                           "mimeType": record.mime, "size": record.size,
                           "takenAt": record.taken_at}),
    );
    Ok(Outcome::Created(id))
}

/// The first bytes of a stored original (for type sniffing).
/// The first `len` bytes of a stored original (fewer if it is shorter).
/// Most bytes of a non-JPEG still read to find its metadata.
const MAX_METADATA_READ: u64 = 64 << 20;

fn read_head(path: &std::path::Path, len: usize) -> Result<Vec<u8>, NodeError> {
    use std::io::Read;
    let mut head = vec![0u8; len];
    let mut f = std::fs::File::open(path)
        .map_err(|e| NodeError::Corrupt(format!("{}: {e}", path.display())))?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(NodeError::Corrupt(format!("{}: {e}", path.display()))),
        }
    }
    head.truncate(n);
    Ok(head)
}

fn stem(name: &str) -> &str {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    base.rsplit_once('.').map(|(s, _)| s).unwrap_or(base)
}

/// Seconds between two capture times (`None` if either does not parse).
fn seconds_apart(a: &str, b: &str) -> Option<i64> {
    let p = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.naive_local())
            .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f"))
            .ok()
    };
    Some((p(a)? - p(b)?).num_seconds().abs())
}

/// Pairs the two halves of a Live Photo (`IMG_1234.HEIC` + `IMG_1234.MOV`, captured within a
/// few seconds of each other, same owner) whichever arrives second: the still gets `motion`
/// (the video's id) and the video `live_of` (it then shows as part of the still).
pub fn pair_live_photo(node: &Node, owner: &str, rec: &AssetRecord) -> Result<bool, NodeError> {
    let (Some(name), Some(taken)) = (rec.filename.as_deref(), rec.taken_at.as_deref()) else {
        return Ok(false);
    };
    let is_video = rec.is_video();
    if !is_video && !rec.mime.as_deref().is_some_and(|m| m.starts_with("image/")) {
        return Ok(false);
    }
    // Candidates by name stem (sled tree `live_stems`: owner, lowercase stem, id), not by
    // scanning the month: a bulk import into one busy month stays linear.
    let stems = node.db.open_tree("live_stems")?;
    let prefix = format!("{owner}\0{}\0", stem(name).to_lowercase());
    stems.insert(format!("{prefix}{}", rec.id).as_bytes(), &[])?;
    let candidates: Vec<String> = stems
        .scan_prefix(prefix.as_bytes())
        .keys()
        .filter_map(|k| k.ok())
        .filter_map(|k| String::from_utf8(k[prefix.len()..].to_vec()).ok())
        .filter(|id| *id != rec.id)
        .collect();
    let mut lib = node.catalog.lock()?;
    let mut mate = None;
    for id in candidates {
        let Some(loc) = node.location_of(owner, &id)? else {
            continue;
        };
        let shard = tessera_core::DocId::shard(owner, &loc.month)
            .map_err(|e| NodeError::Corrupt(e.to_string()))?;
        let Some(o) = lib.asset_in(&shard, &id).map_err(CatalogError::from)? else {
            continue;
        };
        let fits = o.is_video() != is_video
            && !o.is_purged()
            && o.mime
                .as_deref()
                .is_some_and(|m| m.starts_with("image/") || m.starts_with("video/"))
            && o.taken_at
                .as_deref()
                .and_then(|t| seconds_apart(t, taken))
                .is_some_and(|d| d <= 3);
        if fits {
            mate = Some(o);
            break;
        }
    }
    let Some(mate) = mate else { return Ok(false) };
    let (still, video) = if is_video { (&mate, rec) } else { (rec, &mate) };
    link_live(node, &mut lib, owner, still, video)
}

/// The still gets `motion` (the video's id), the video `live_of` (it then shows as part of the
/// still, and is no longer hidden on its own).
fn link_live(
    node: &Node,
    lib: &mut tessera_core::Library,
    owner: &str,
    still: &AssetRecord,
    video: &AssetRecord,
) -> Result<bool, NodeError> {
    let (still_id, video_id) = (still.id.clone(), video.id.clone());
    let now = crate::now_rfc3339();
    lib.update_asset(owner, &still.month(), &still_id, |r| {
        r.motion = Some(video_id.clone());
        r.updated_at = Some(now.clone());
    })
    .map_err(CatalogError::from)?;
    lib.update_asset(owner, &video.month(), &video_id, |r| {
        r.live_of = Some(still_id.clone());
        r.hidden = None;
        r.updated_at = Some(now.clone());
    })
    .map_err(CatalogError::from)?;
    node.catalog.persist(lib)?;
    tracing::info!(still = %still_id, video = %video_id, "Live Photo paired");
    Ok(true)
}

/// Immich's app names the video of a Live Photo (`livePhotoVideoId`, uploaded first): pairs
/// them when that id is a video of the same owner; anything else is ignored (logged), as the
/// photo itself is fine.
pub fn pair_named_video(
    node: &Node,
    owner: &str,
    still: &AssetRecord,
    video_id: &str,
) -> Result<bool, NodeError> {
    if still.is_video() || video_id == still.id {
        return Ok(false);
    }
    let Some(loc) = node.location_of(owner, video_id)? else {
        tracing::warn!(still = %still.id, video = video_id, "livePhotoVideoId names no asset of this user");
        return Ok(false);
    };
    let mut lib = node.catalog.lock()?;
    let shard = tessera_core::DocId::shard(owner, &loc.month)
        .map_err(|e| NodeError::Corrupt(e.to_string()))?;
    let Some(video) = lib.asset_in(&shard, video_id).map_err(CatalogError::from)? else {
        return Ok(false);
    };
    if !video.is_video() || video.is_purged() {
        tracing::warn!(still = %still.id, video = video_id, "livePhotoVideoId is not a video");
        return Ok(false);
    }
    link_live(node, &mut lib, owner, still, &video)
}
