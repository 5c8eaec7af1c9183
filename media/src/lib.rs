//! Tessera's media pipeline.
//!
//! Architecture invariant: pure functions over bytes — no files, no threads of its own, no
//! global state — so the node decides where work runs (a bounded blocking pool) and tests and
//! benchmarks call the same code.

mod derive;
mod exif_meta;
mod hash;
mod types;

pub use derive::{make_derivatives, Derivatives, PREVIEW_LONG_SIDE, THUMB_SHORT_SIDE};
pub use exif_meta::{read_metadata, Metadata};
pub use hash::{hash_bytes, Hashes, StreamHasher};
pub use types::{
    is_supported_extension, media_kind, sniff_mime, MediaKind, IMAGE_EXTENSIONS,
    SIDECAR_EXTENSIONS, VIDEO_EXTENSIONS,
};

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
    #[error("image too large to process ({width}x{height})")]
    TooLarge { width: u32, height: u32 },
    #[error("{0} is stored but not rendered yet")]
    Unsupported(String),
    #[error("resize failed: {0}")]
    Resize(String),
    #[error("encode failed: {0}")]
    Encode(String),
}
