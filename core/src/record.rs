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
