//! An original, committed to the blob store, becoming an asset in its owner's catalogue.

use tessera_core::record::status;
use tessera_core::AssetRecord;
use tessera_media::Hashes;

use crate::blobs::BlobKind;
use crate::catalog::CatalogError;
use crate::node::{AssetLocation, Node, NodeError};

/// Mime types the media pipeline renders today; other accepted media are stored and listed.
pub const RENDERABLE: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/gif",
    "image/bmp",
    "image/tiff",
];

/// What the client told us about the file (Immich's upload fields).
#[derive(Debug, Clone, Default)]
pub struct UploadMeta {
    pub filename: String,
    pub device_asset_id: Option<String>,
    pub device_id: Option<String>,
    pub file_created_at: Option<String>,
    pub file_modified_at: Option<String>,
    pub is_favorite: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created(String),
    Duplicate(String),
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
    if let Some(loc) = node.location(&id)? {
        if loc.owner == owner {
            let shard = tessera_core::DocId::shard(owner, &loc.month)
                .map_err(|e| NodeError::Corrupt(e.to_string()))?;
            if node
                .catalog
                .lock()?
                .asset_in(&shard, &id)
                .map_err(CatalogError::from)?
                .is_some()
            {
                return Ok(Outcome::Duplicate(id));
            }
        }
    }
    let bytes = node.blobs.read(BlobKind::Original, &id)?;
    let mime = tessera_media::sniff_mime(&bytes[..bytes.len().min(64)], &meta.filename);
    let md = if mime.starts_with("image/") {
        tessera_media::read_metadata(&bytes)
    } else {
        Default::default()
    };
    drop(bytes);
    let now = crate::now_rfc3339();
    let created = meta.file_created_at.as_deref().and_then(normalise_time);
    let modified = meta.file_modified_at.as_deref().and_then(normalise_time);
    let (taken_at, source) = match (&md.taken_at, &created) {
        (Some(t), _) => (t.clone(), "exif"),
        (None, Some(c)) => (c.clone(), "file"),
        (None, None) => (now.clone(), "upload"),
    };
    let renderable = RENDERABLE.contains(&mime);
    let (width, height) = match (md.width, md.height, md.orientation) {
        (Some(w), Some(h), Some(5..=8)) => (Some(h), Some(w)),
        (w, h, _) => (w, h),
    };
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
        width,
        height,
        orientation: md.orientation,
        lat: md.lat,
        lon: md.lon,
        altitude: md.altitude,
        make: md.make,
        model: md.model,
        lens: md.lens,
        exposure_time: md.exposure_time,
        f_number: md.f_number,
        iso: md.iso,
        focal_length: md.focal_length,
        status: Some(
            if renderable {
                status::PENDING
            } else {
                status::UNSUPPORTED
            }
            .into(),
        ),
        error: (!renderable)
            .then(|| format!("{mime} is stored; previews for this type are not available yet")),
        favorite: meta.is_favorite.then_some(true),
        ..Default::default()
    };
    let month = record.month();
    {
        let mut lib = node.catalog.lock()?;
        lib.upsert_assets(owner, std::slice::from_ref(&record))
            .map_err(CatalogError::from)?;
        node.catalog.persist(&mut lib)?;
    }
    node.set_location(
        &id,
        &AssetLocation {
            owner: owner.to_owned(),
            month,
            sha1: hashes.sha1.clone(),
        },
    )?;
    if renderable {
        node.jobs.enqueue(&id, owner)?;
    }
    node.flush()?;
    Ok(Outcome::Created(id))
}
