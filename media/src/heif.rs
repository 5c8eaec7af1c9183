//! HEIC/HEIF and AVIF through libheif (system library, Debian bookworm's 1.15).
//!
//! libheif applies the file's `irot`/`imir`/`clap` transforms while decoding, so the pixels it
//! returns are already as displayed: callers must not apply EXIF orientation again. libheif's
//! own scaling is nearest-neighbour on the fully decoded image (no decode-time shortcut like a
//! JPEG's DCT scaling), so we take the full decode and resize with our SIMD Catmull-Rom.

use std::panic::{catch_unwind, AssertUnwindSafe};

use image::RgbImage;
use libheif_rs::{ColorSpace, HeifContext, ItemId, LibHeif, RgbChroma};

use crate::MediaError;

fn format_name(mime: &str) -> &'static str {
    if mime == "image/avif" {
        "AVIF"
    } else {
        "HEIF"
    }
}

/// Decodes the primary image to 8-bit RGB, transforms applied. Returns the image and its
/// displayed (transformed) dimensions.
pub(crate) fn decode_heif(bytes: &[u8], mime: &str) -> Result<(RgbImage, u32, u32), MediaError> {
    let format = format_name(mime);
    let err = |reason: String| MediaError::Decode { format, reason };
    // libheif is C (no unwinding), but guard the wrapper's own code too.
    catch_unwind(AssertUnwindSafe(|| decode_inner(bytes, format)))
        .map_err(|_| err("decoder panicked".into()))?
}

fn decode_inner(bytes: &[u8], format: &'static str) -> Result<(RgbImage, u32, u32), MediaError> {
    let err = |e: libheif_rs::HeifError| MediaError::Decode {
        format,
        reason: e.message.clone(),
    };
    let lib = LibHeif::new();
    let ctx = HeifContext::read_from_bytes(bytes).map_err(err)?;
    let handle = ctx.primary_image_handle().map_err(err)?;
    // The handle's width/height are after transformations (ispe is before).
    crate::derive::check_dims(handle.width(), handle.height())?;
    let img = lib
        .decode(&handle, ColorSpace::Rgb(RgbChroma::Rgb), None)
        .map_err(err)?;
    let (w, h) = (img.width(), img.height());
    crate::derive::check_dims(w, h)?;
    let planes = img.planes();
    let plane = planes.interleaved.ok_or(MediaError::Decode {
        format,
        reason: "no interleaved RGB plane".into(),
    })?;
    let row = w as usize * 3;
    let mut out = Vec::with_capacity(row * h as usize);
    for y in 0..h as usize {
        let start = y * plane.stride;
        let line = plane
            .data
            .get(start..start + row)
            .ok_or(MediaError::Decode {
                format,
                reason: "short pixel plane".into(),
            })?;
        out.extend_from_slice(line);
    }
    let rgb = RgbImage::from_raw(w, h, out).ok_or(MediaError::Decode {
        format,
        reason: "bad buffer size".into(),
    })?;
    Ok((rgb, w, h))
}

/// The primary image's EXIF block (TIFF header onwards), as libheif extracts it.
pub(crate) fn exif_block(bytes: &[u8]) -> Option<Vec<u8>> {
    catch_unwind(AssertUnwindSafe(|| {
        let ctx = HeifContext::read_from_bytes(bytes).ok()?;
        let handle = ctx.primary_image_handle().ok()?;
        let mut ids: [ItemId; 4] = [0; 4];
        let n = handle.metadata_block_ids(&mut ids, b"Exif");
        let id = *ids.get(..n)?.first()?;
        let data = handle.metadata(id).ok()?;
        // ISO/IEC 23008-12 Annex A: a 4-byte big-endian offset to the TIFF header precedes it.
        let skip = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
        data.get(4 + skip..).map(<[u8]>::to_vec)
    }))
    .ok()
    .flatten()
}
