//! The asset record: one per original, stored as a map in its capture month's shard document.

use serde::{Deserialize, Serialize};

/// Processing state of an asset's derivatives.
pub mod status {
    /// Stored; thumbnail/preview not made yet.
    pub const PENDING: &str = "pending";
    /// Thumbnail, preview and thumbhash are available.
    pub const READY: &str = "ready";
    /// The original is kept, but it could not be processed (`error` says why).
    pub const ERROR: &str = "error";
    /// A media type Tessera stores but cannot render yet (HEIC, RAW, video...).
    pub const UNSUPPORTED: &str = "unsupported";
}

/// Every field but `id` is optional so that records written by older or newer peers still load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssetRecord {
    /// BLAKE3 of the original's bytes, lowercase hex.
    pub id: String,
    /// SHA-1 of the original, lowercase hex (the Immich API speaks SHA-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Capture time as local wall-clock ISO 8601, with `+hh:mm` offset when known
    /// (`2024-05-03T14:22:01+02:00`), without it when the camera did not record one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_at: Option<String>,
    /// Where `taken_at` came from: `exif`, `file` (the client's file dates) or `upload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_at_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploaded_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_modified_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_asset_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Displayed dimensions (after orientation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orientation: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub altitude: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub make: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lens: Option<String>,
    /// Exposure time in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure_time: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f_number: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iso: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub focal_length: Option<f64>,
    /// Base64 thumbhash (placeholder shown before the thumbnail loads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbhash: Option<String>,
    /// BLAKE3 of the thumbnail blob (JPEG, ~250 px short side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumb: Option<String>,
    /// BLAKE3 of the preview blob (JPEG, ~1440 px long side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Human-readable processing error (the original is kept regardless).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub favorite: Option<bool>,
    /// Archived: kept and searchable, hidden from the timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived: Option<bool>,
    /// In the trash since this RFC 3339 time; purged (original deleted) after the library's
    /// `trash_days`. Restoring clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trashed_at: Option<String>,
    /// Video (or motion part) duration in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    /// Video codec as the container names it (`h264`, `hevc`, `prores`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
    /// 64-bit perceptual hash of the oriented image, 16 hex digits (see `crate::dupes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phash: Option<String>,
    /// The moving part of a Live Photo or motion photo: the asset id of the paired video
    /// (Live Photo) or the hash of the video blob extracted from the still (motion photo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub motion: Option<String>,
    /// On the video half of a Live Photo: the still it belongs to. Such videos are shown
    /// as part of the still, not as their own timeline items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_of: Option<String>,
    /// Deleted for good at this RFC 3339 time (trash emptied or expired): every node deletes
    /// its copies of the original and derivatives. The record stays as a small tombstone so
    /// that the deletion syncs; uploading the same file again brings the asset back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged_at: Option<String>,
    /// Uploaded as Immich's `visibility: hidden` (a Live Photo's video, sent before its still):
    /// not shown on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<bool>,
    /// Last change of the record by a user or the node (RFC 3339): Immich's `updatedAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Place from the GPS position by the node's offline reverse geocoder (GeoNames cities of
    /// 1,000+ people): Immich's `exifInfo.city`, `.state` (first-level division), `.country`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

impl AssetRecord {
    /// Shown in the main timeline: not archived, not trashed, not the hidden half of a Live Photo.
    pub fn in_timeline(&self) -> bool {
        self.archived != Some(true)
            && self.trashed_at.is_none()
            && self.shown_alone()
            && self.purged_at.is_none()
    }

    /// Shown as an item of its own (not a Live Photo's video, paired or still waiting for
    /// its photo).
    pub fn shown_alone(&self) -> bool {
        self.live_of.is_none() && self.hidden != Some(true)
    }

    /// In the trash (restorable); purged assets are not.
    pub fn is_trashed(&self) -> bool {
        self.trashed_at.is_some() && self.purged_at.is_none()
    }

    pub fn is_purged(&self) -> bool {
        self.purged_at.is_some()
    }

    pub fn is_video(&self) -> bool {
        self.mime
            .as_deref()
            .is_some_and(|m| m.starts_with("video/"))
    }
}

impl AssetRecord {
    /// The shard month this asset belongs to: `YYYY-MM` of its local capture date, or `undated`.
    pub fn month(&self) -> String {
        self.taken_at
            .as_deref()
            .and_then(month_of)
            .unwrap_or_else(|| "undated".to_owned())
    }
}

/// English month names, January first (timeline headers, memories, free-text search).
pub const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// `YYYY-MM` of an ISO 8601 date-time, if it starts with a plausible date.
pub fn month_of(ts: &str) -> Option<String> {
    let b = ts.as_bytes();
    if b.len() >= 7
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
    {
        let m: u32 = ts[5..7].parse().ok()?;
        (1..=12).contains(&m).then(|| ts[..7].to_owned())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_from_capture_time() {
        let mut r = AssetRecord {
            id: "x".into(),
            ..Default::default()
        };
        assert_eq!(r.month(), "undated");
        r.taken_at = Some("2023-11-02T10:00:00+01:00".into());
        assert_eq!(r.month(), "2023-11");
        r.taken_at = Some("2023-13-02T10:00:00".into());
        assert_eq!(r.month(), "undated");
    }
}
