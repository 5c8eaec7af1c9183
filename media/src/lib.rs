//! Tessera's media pipeline.
//!
//! Architecture invariant: pure functions over bytes — no files, no threads of its own, no
//! global state — so the node decides where work runs (a bounded blocking pool) and tests and
//! benchmarks call the same code. The one exception is video: `video::poster_frame` runs the
//! `ffmpeg` program on a file (with a timeout) and drains its pipes on two short-lived threads.

mod derive;
mod exif_meta;
mod hash;
mod heif;
mod heif_grid;
mod motion;
mod phash;
mod planar;
mod raw;
mod sidecar;
mod types;
mod video;

/// The media corpus for tests (`TESSERA_CORPUS`, built by `cargo xtask test`); `None` skips
/// the test, unless `TESSERA_REQUIRE_CORPUS` says it must run (as in CI): no green without it.
#[cfg(test)]
pub(crate) fn test_corpus() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("TESSERA_CORPUS").map(std::path::PathBuf::from);
    if dir.is_none() {
        assert!(
            std::env::var_os("TESSERA_REQUIRE_CORPUS").is_none(),
            "TESSERA_REQUIRE_CORPUS is set but TESSERA_CORPUS is not"
        );
        eprintln!("TESSERA_CORPUS unset: skipping");
    }
    dir
}

pub use derive::{make_derivatives, Derivatives, PREVIEW_LONG_SIDE, THUMB_SHORT_SIDE};
pub use exif_meta::{read_metadata, Metadata};
pub use hash::{hash_bytes, Hashes, StreamHasher};
pub use heif_grid::tiled_decode_mib;
pub use motion::motion_photo_video;
pub use phash::{phash_encoded, phash_image};
pub use sidecar::{
    date_from_filename, parse_sidecar, parse_takeout_json, parse_xmp, resolve_capture_time,
    Sidecar, SidecarError, TimeCandidates, TimeSource,
};
pub use types::{
    is_supported_extension, media_kind, sniff_mime, MediaKind, IMAGE_EXTENSIONS,
    SIDECAR_EXTENSIONS, VIDEO_EXTENSIONS,
};
pub use video::{poster_frame, probe_video, probe_video_file, video_derivatives, VideoMeta};

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("empty file")]
    Empty,
    #[error("cannot decode {format}: {reason}")]
    Decode {
        format: &'static str,
        reason: String,
    },
    #[error("image has no pixels ({width}x{height})")]
    NoPixels { width: u32, height: u32 },
    /// A JPEG with more scans than any real one has (a decoder would run each over the
    /// whole image).
    #[error("cannot decode JPEG: more than {max} scans (a progressive JPEG has about ten)")]
    TooManyScans { max: usize },
    #[error("image too large to process ({width}x{height})")]
    TooLarge { width: u32, height: u32 },
    #[error("{0} is stored but not rendered yet")]
    Unsupported(String),
    #[error("resize failed: {0}")]
    Resize(String),
    #[error("encode failed: {0}")]
    Encode(String),
    /// The `ffmpeg` program is missing or failed (the message carries its stderr's tail).
    #[error("ffmpeg: {0}")]
    Ffmpeg(String),
    #[error("{tool} timed out after {secs:.1} s")]
    Timeout { tool: &'static str, secs: f64 },
}
