//! Thumbnail, preview and thumbhash from an original.
//!
//! JPEGs are decoded with DCT-domain downscaling by libjpeg-turbo (the IDCT produces M/8 of
//! the size directly, the smallest that still covers the preview) straight to their YCbCr
//! planes, which are resized and encoded as planes ([`crate::planar`]). What that path cannot
//! take (CMYK, unusual sampling, files with warnings) is decoded to RGB by libjpeg-turbo or,
//! failing that, the pure-Rust jpeg-decoder (1/2, 1/4, 1/8 scaling). Other formats decode to
//! RGB, are resized with SIMD convolution (fast_image_resize) and encoded with libjpeg-turbo.
//! One decode feeds both outputs; orientation is applied to the small images only.

use std::io::Cursor;

use base64::Engine;
use fast_image_resize::{
    images::Image as FirImage, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer,
};
use image::{metadata::Orientation, DynamicImage, RgbImage};

use crate::planar::Planes;
use crate::MediaError;

/// Short side of the thumbnail, in pixels.
pub const THUMB_SHORT_SIDE: u32 = 250;
/// Long side of the preview, in pixels.
pub const PREVIEW_LONG_SIDE: u32 = 1440;
const MAX_PIXELS: u64 = 250_000_000;
const JPEG_QUALITY: u8 = 80;
/// The most scans a JPEG may have. A progressive JPEG has about ten; thousands of tiny scans
/// make a decoder pass over the whole image again for each (a known way to hang one), and
/// libjpeg-turbo only warns about a bogus progression, which sends the file to the fallback.
const MAX_JPEG_SCANS: usize = 256;

#[derive(Debug, Clone)]
pub struct Derivatives {
    /// JPEG, `THUMB_SHORT_SIDE` short side (or smaller originals as they are), oriented.
    pub thumbnail: Vec<u8>,
    pub thumb_size: (u32, u32),
    /// JPEG, `PREVIEW_LONG_SIDE` long side at most, oriented.
    pub preview: Vec<u8>,
    pub preview_size: (u32, u32),
    /// Base64 thumbhash of the oriented image.
    pub thumbhash: String,
    /// Full-resolution dimensions after orientation.
    pub width: u32,
    pub height: u32,
}

/// Makes the derivatives of an image. `orientation` is the EXIF orientation (1–8), if any.
///
/// Formats: JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/HEIF and AVIF (libheif; the file's own
/// transforms are applied and `orientation` is ignored), and camera RAW (`image/x-…` mimes from
/// [`crate::sniff_mime`]; rawler: the embedded preview when large enough, else a develop; the
/// RAW's own orientation is used when `orientation` is `None`).
pub fn make_derivatives(
    bytes: &[u8],
    mime: &str,
    orientation: Option<u32>,
) -> Result<Derivatives, MediaError> {
    let mut orientation = orientation;
    if bytes.is_empty() {
        return Err(MediaError::Empty);
    }
    let (decoded, full_w, full_h) = match mime {
        "image/jpeg" => {
            check_jpeg_scans(bytes)?;
            match jpeg_via_planes(bytes, orientation) {
                Ok(d) => return Ok(d),
                Err(e @ (MediaError::TooLarge { .. } | MediaError::NoPixels { .. })) => {
                    return Err(e)
                }
                // CMYK, unusual sampling, warnings: decoded to RGB instead.
                Err(_) => match decode_jpeg_turbo(bytes, PREVIEW_LONG_SIDE) {
                    Ok(d) => d,
                    Err(turbo) => {
                        decode_jpeg_scaled(bytes, PREVIEW_LONG_SIDE).map_err(|e| match e {
                            // Both failed: report libjpeg-turbo's (clearer) message.
                            MediaError::Decode { .. } => turbo,
                            other => other,
                        })?
                    }
                },
            }
        }
        "image/png" | "image/webp" | "image/gif" | "image/bmp" | "image/tiff" => {
            decode_generic(bytes, mime)?
        }
        // libheif applies irot/imir itself: the pixels are as displayed, so EXIF orientation
        // must not be applied again.
        "image/heic" | "image/heif" | "image/avif" => {
            orientation = None;
            crate::heif::decode_heif(bytes, mime)?
        }
        m if is_raw_mime(m) => {
            let raw = crate::raw::decode_raw(bytes)?;
            orientation = orientation.or(raw.orientation);
            (raw.image, raw.width, raw.height)
        }
        other => return Err(MediaError::Unsupported(other.to_owned())),
    };
    from_rgb(&decoded, (full_w, full_h), orientation)
}

/// The derivatives of a decoded RGB image (`full`: the original's size).
pub(crate) fn from_rgb(
    decoded: &RgbImage,
    (full_w, full_h): (u32, u32),
    orientation: Option<u32>,
) -> Result<Derivatives, MediaError> {
    let mut resizer = Resizer::new();
    // Catmull-Rom: sharp like Lanczos3 at two thirds of the taps.
    let filter = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));

    let (pw, ph) = fit_long_side(decoded.width(), decoded.height(), PREVIEW_LONG_SIDE);
    let preview = resize(&mut resizer, decoded, pw, ph, &filter)?;
    let (tw, th) = thumb_size((full_w, full_h), (pw, ph));
    // The thumbnail comes from the preview unless that is already too small on its short side.
    let thumb_src = if pw.min(ph) >= tw.min(th) {
        &preview
    } else {
        decoded
    };
    let thumb = resize(&mut resizer, thumb_src, tw, th, &filter)?;
    let (hw, hh) = fit_long_side(tw, th, 100);
    let tiny = resize(
        &mut resizer,
        &thumb,
        hw,
        hh,
        &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Box)),
    )?;
    let orient = orientation_of(orientation);
    let preview = orient_rgb(preview, orient)?;
    let thumb = orient_rgb(thumb, orient)?;
    let tiny = orient_rgb(tiny, orient)?;
    Ok(finish(
        (encode_jpeg(&preview)?, preview.dimensions()),
        (encode_jpeg(&thumb)?, thumb.dimensions()),
        &tiny,
        orient,
        (full_w, full_h),
    ))
}

/// A JPEG's derivatives from its YCbCr planes ([`crate::planar`]): the usual path for JPEGs.
fn jpeg_via_planes(bytes: &[u8], orientation: Option<u32>) -> Result<Derivatives, MediaError> {
    let orient = orientation_of(orientation);
    // A flip along an odd length would move each chroma sample by one pixel against the luma
    // (4:2:0 pairs pixels from the first one). A resized output is made a pixel longer along a
    // flipped axis instead, which nobody sees; one that is not resized, along an odd flipped
    // axis, is made through RGB.
    let (flip_x, flip_y) = match orient {
        Orientation::FlipHorizontal | Orientation::Rotate270 => (true, false),
        Orientation::FlipVertical | Orientation::Rotate90 => (false, true),
        Orientation::Rotate180 | Orientation::Rotate270FlipH => (true, true),
        _ => (false, false),
    };
    let even = |flip: bool, n: u32, from: u32| match (flip && n % 2 == 1, n < from) {
        (false, _) => Some(n),
        (true, true) => Some(n + 1),
        (true, false) => None,
    };
    let sizes = |(dw, dh): (u32, u32), full: (u32, u32)| {
        let (pw, ph) = fit_long_side(dw, dh, PREVIEW_LONG_SIDE);
        let preview = (even(flip_x, pw, dw)?, even(flip_y, ph, dh)?);
        let (tw, th) = thumb_size(full, preview);
        // Made from the preview, or from the decoded planes when the preview is smaller.
        let from_preview = preview.0.min(preview.1) >= tw.min(th);
        let from = if from_preview { preview } else { (dw, dh) };
        let thumb = (even(flip_x, tw, from.0)?, even(flip_y, th, from.1)?);
        Some((preview, thumb, from_preview))
    };
    let (decoded, full_w, full_h) = Planes::decode_jpeg(
        bytes,
        |h| turbo_scale(h, PREVIEW_LONG_SIDE),
        MAX_JPEG_SCANS as u32,
        |decoded, full| sizes(decoded, full).is_some(),
    )?;
    let mut resizer = Resizer::new();
    let ((pw, ph), (tw, th), from_preview) = sizes(decoded.dimensions(), (full_w, full_h))
        .ok_or_else(|| MediaError::Unsupported("this JPEG as planes".into()))?;
    let preview = decoded.resized(&mut resizer, pw, ph, FilterType::CatmullRom)?;
    let thumb_src = if from_preview { &preview } else { &decoded };
    let thumb = thumb_src.resized(&mut resizer, tw, th, FilterType::CatmullRom)?;
    let (hw, hh) = fit_long_side(tw, th, 100);
    // The thumbhash's image may be off by a pixel (it is a blur of it).
    let tiny = thumb.resized(&mut resizer, hw, hh, FilterType::Box)?;
    let preview = preview.oriented(orient);
    let thumb = thumb.oriented(orient);
    let tiny = tiny.oriented(orient).to_rgb();
    Ok(finish(
        (preview.encode(JPEG_QUALITY)?, preview.dimensions()),
        (thumb.encode(JPEG_QUALITY)?, thumb.dimensions()),
        &tiny,
        orient,
        (full_w, full_h),
    ))
}

/// The thumbnail's size: `THUMB_SHORT_SIDE` on the short side, from the original's size, or
/// smaller when the preview already is.
fn thumb_size(full: (u32, u32), preview: (u32, u32)) -> (u32, u32) {
    fit_short_side(full.0, full.1, THUMB_SHORT_SIDE).min_each(fit_short_side(
        preview.0,
        preview.1,
        THUMB_SHORT_SIDE,
    ))
}

fn orientation_of(orientation: Option<u32>) -> Orientation {
    orientation
        .and_then(|o| u8::try_from(o).ok())
        .and_then(Orientation::from_exif)
        .unwrap_or(Orientation::NoTransforms)
}

/// The derivatives from the encoded (and oriented) preview and thumbnail, and the oriented
/// ~100-px image the thumbhash is made of.
fn finish(
    preview: (Vec<u8>, (u32, u32)),
    thumbnail: (Vec<u8>, (u32, u32)),
    tiny: &RgbImage,
    orient: Orientation,
    (full_w, full_h): (u32, u32),
) -> Derivatives {
    let rgba: Vec<u8> = tiny
        .pixels()
        .flat_map(|p| [p[0], p[1], p[2], 255])
        .collect();
    let thumbhash = base64::engine::general_purpose::STANDARD.encode(
        thumbhash::rgba_to_thumb_hash(tiny.width() as usize, tiny.height() as usize, &rgba),
    );
    let swaps = matches!(
        orient,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    );
    let (width, height) = if swaps {
        (full_h, full_w)
    } else {
        (full_w, full_h)
    };
    Derivatives {
        thumbnail: thumbnail.0,
        thumb_size: thumbnail.1,
        preview: preview.0,
        preview_size: preview.1,
        thumbhash,
        width,
        height,
    }
}

trait MinEach {
    fn min_each(self, other: Self) -> Self;
}

impl MinEach for (u32, u32) {
    fn min_each(self, other: Self) -> Self {
        if self.0 * self.1 <= other.0 * other.1 {
            self
        } else {
            other
        }
    }
}

fn fit_long_side(w: u32, h: u32, max: u32) -> (u32, u32) {
    let long = w.max(h);
    if long <= max {
        return (w.max(1), h.max(1));
    }
    let s = f64::from(max) / f64::from(long);
    (
        ((f64::from(w) * s).round() as u32).max(1),
        ((f64::from(h) * s).round() as u32).max(1),
    )
}

fn fit_short_side(w: u32, h: u32, target: u32) -> (u32, u32) {
    let short = w.min(h);
    if short <= target {
        return (w.max(1), h.max(1));
    }
    let s = f64::from(target) / f64::from(short);
    (
        ((f64::from(w) * s).round() as u32).max(1),
        ((f64::from(h) * s).round() as u32).max(1),
    )
}

/// RAW mimes that [`crate::sniff_mime`] returns.
pub(crate) fn is_raw_mime(mime: &str) -> bool {
    crate::types::RAW_MIMES.iter().any(|(_, m)| *m == mime)
}

pub(crate) fn check_dims(width: u32, height: u32) -> Result<(), MediaError> {
    if width == 0 || height == 0 {
        return Err(MediaError::NoPixels { width, height });
    }
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(MediaError::TooLarge { width, height });
    }
    Ok(())
}

/// Refuses a JPEG with more than [`MAX_JPEG_SCANS`] start-of-scan markers before any decoder
/// sees it (both decoders would run every scan). Markers inside embedded previews count too:
/// the count can only be too high, never too low, and a real file is far from the limit.
fn check_jpeg_scans(bytes: &[u8]) -> Result<(), MediaError> {
    let scans = memchr::memmem::find_iter(bytes, &[0xFF, 0xDA])
        .take(MAX_JPEG_SCANS + 1)
        .count();
    if scans > MAX_JPEG_SCANS {
        return Err(MediaError::TooManyScans {
            max: MAX_JPEG_SCANS,
        });
    }
    Ok(())
}

/// The smallest M/8 DCT scale whose long side covers `long_side` (or the whole image).
fn turbo_scale(header: &turbojpeg::DecompressHeader, long_side: u32) -> turbojpeg::ScalingFactor {
    let full = (header.width.max(header.height)) as u32;
    (1..=8)
        .map(|m| turbojpeg::ScalingFactor::new(m, 8))
        .find(|f| {
            let s = header.scaled(*f);
            s.width.max(s.height) as u32 >= long_side.min(full)
        })
        .unwrap_or(turbojpeg::ScalingFactor::ONE)
}

/// libjpeg-turbo: decodes at the smallest M/8 DCT scale whose long side covers `long_side`.
pub(crate) fn decode_jpeg_turbo(
    bytes: &[u8],
    long_side: u32,
) -> Result<(RgbImage, u32, u32), MediaError> {
    let err = |e: turbojpeg::Error| MediaError::Decode {
        format: "JPEG",
        reason: e.to_string(),
    };
    let mut d = turbojpeg::Decompressor::new().map_err(err)?;
    let header = d.read_header(bytes).map_err(err)?;
    let (fw, fh) = (header.width as u32, header.height as u32);
    check_dims(fw, fh)?;
    let factor = turbo_scale(&header, long_side);
    d.set_scaling_factor(factor).map_err(err)?;
    d.set_scan_limit(MAX_JPEG_SCANS as u32).map_err(err)?;
    let s = header.scaled(factor);
    let mut img = turbojpeg::Image {
        pixels: vec![0u8; s.width * s.height * 3],
        width: s.width,
        pitch: s.width * 3,
        height: s.height,
        format: turbojpeg::PixelFormat::RGB,
    };
    d.decompress(bytes, img.as_deref_mut()).map_err(err)?;
    let rgb = RgbImage::from_raw(s.width as u32, s.height as u32, img.pixels).ok_or(
        MediaError::Decode {
            format: "JPEG",
            reason: "bad buffer size".into(),
        },
    )?;
    Ok((rgb, fw, fh))
}

/// jpeg-decoder: decodes at the smallest DCT scale whose long side still covers `long_side`.
/// Returns the (scaled) RGB image and the full-resolution dimensions.
fn decode_jpeg_scaled(bytes: &[u8], long_side: u32) -> Result<(RgbImage, u32, u32), MediaError> {
    let err = |e: jpeg_decoder::Error| MediaError::Decode {
        format: "JPEG",
        reason: e.to_string(),
    };
    let mut dec = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    dec.read_info().map_err(err)?;
    let info = dec.info().ok_or(MediaError::Decode {
        format: "JPEG",
        reason: "no frame header".into(),
    })?;
    let (fw, fh) = (u32::from(info.width), u32::from(info.height));
    check_dims(fw, fh)?;
    let (rw, rh) = fit_long_side(fw, fh, long_side);
    dec.scale(
        rw.min(u32::from(u16::MAX)) as u16,
        rh.min(u32::from(u16::MAX)) as u16,
    )
    .map_err(err)?;
    let pixels = dec.decode().map_err(err)?;
    let info = dec.info().ok_or(MediaError::Decode {
        format: "JPEG",
        reason: "no frame header".into(),
    })?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    let n = (w * h) as usize;
    let rgb: Vec<u8> = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => pixels,
        jpeg_decoder::PixelFormat::L8 => pixels.iter().flat_map(|&l| [l, l, l]).collect(),
        jpeg_decoder::PixelFormat::L16 => pixels
            .chunks_exact(2)
            .flat_map(|c| [c[0], c[0], c[0]])
            .collect(),
        jpeg_decoder::PixelFormat::CMYK32 => pixels
            .chunks_exact(4)
            .flat_map(|c| {
                let k = u16::from(c[3]);
                [c[0], c[1], c[2]].map(|v| ((u16::from(v) * k) / 255) as u8)
            })
            .collect(),
    };
    if rgb.len() < n * 3 {
        return Err(MediaError::Decode {
            format: "JPEG",
            reason: "truncated pixel data".into(),
        });
    }
    let img = RgbImage::from_raw(w, h, rgb).ok_or(MediaError::Decode {
        format: "JPEG",
        reason: "bad buffer size".into(),
    })?;
    Ok((img, fw, fh))
}

fn decode_generic(bytes: &[u8], mime: &str) -> Result<(RgbImage, u32, u32), MediaError> {
    let format = image::ImageFormat::from_mime_type(mime)
        .ok_or_else(|| MediaError::Unsupported(mime.to_owned()))?;
    let name = match format {
        image::ImageFormat::Png => "PNG",
        image::ImageFormat::WebP => "WebP",
        image::ImageFormat::Gif => "GIF",
        image::ImageFormat::Tiff => "TIFF",
        _ => "image",
    };
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(image::Limits::default());
    let (w, h) = reader.into_dimensions().map_err(|e| MediaError::Decode {
        format: name,
        reason: e.to_string(),
    })?;
    check_dims(w, h)?;
    let img =
        image::load_from_memory_with_format(bytes, format).map_err(|e| MediaError::Decode {
            format: name,
            reason: e.to_string(),
        })?;
    let rgb = flatten_on_white(img);
    Ok((rgb, w, h))
}

fn flatten_on_white(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.to_rgb8();
    }
    let rgba = img.to_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = RgbImage::new(w, h);
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let a = u16::from(p[3]);
        for c in 0..3 {
            o[c] = ((u16::from(p[c]) * a + 255 * (255 - a)) / 255) as u8;
        }
    }
    out
}

fn resize(
    resizer: &mut Resizer,
    src: &RgbImage,
    w: u32,
    h: u32,
    opts: &ResizeOptions,
) -> Result<RgbImage, MediaError> {
    if src.dimensions() == (w, h) {
        return Ok(src.clone());
    }
    let src_view = fast_image_resize::images::ImageRef::new(
        src.width(),
        src.height(),
        src.as_raw(),
        PixelType::U8x3,
    )
    .map_err(|e| MediaError::Resize(e.to_string()))?;
    let mut dst = FirImage::new(w, h, PixelType::U8x3);
    resizer
        .resize(&src_view, &mut dst, opts)
        .map_err(|e| MediaError::Resize(e.to_string()))?;
    RgbImage::from_raw(w, h, dst.into_vec())
        .ok_or_else(|| MediaError::Resize("bad buffer size".into()))
}

fn orient_rgb(img: RgbImage, o: Orientation) -> Result<RgbImage, MediaError> {
    if o == Orientation::NoTransforms {
        return Ok(img);
    }
    let mut d = DynamicImage::ImageRgb8(img);
    d.apply_orientation(o);
    Ok(d.to_rgb8())
}

fn encode_jpeg(img: &RgbImage) -> Result<Vec<u8>, MediaError> {
    let err = |e: turbojpeg::Error| MediaError::Encode(e.to_string());
    let mut c = turbojpeg::Compressor::new().map_err(err)?;
    c.set_quality(i32::from(JPEG_QUALITY)).map_err(err)?;
    c.set_subsamp(turbojpeg::Subsamp::Sub2x2).map_err(err)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let view = turbojpeg::Image {
        pixels: img.as_raw().as_slice(),
        width: w,
        pitch: w * 3,
        height: h,
        format: turbojpeg::PixelFormat::RGB,
    };
    c.compress_to_vec(view).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        });
        encode_jpeg(&img).unwrap()
    }

    #[test]
    fn thumbnail_and_preview_sizes_and_orientation() {
        let d = make_derivatives(&jpeg(4000, 3000), "image/jpeg", None).unwrap();
        assert_eq!(d.preview_size, (1440, 1080));
        assert_eq!(d.thumb_size, (333, 250));
        assert_eq!((d.width, d.height), (4000, 3000));
        let d = make_derivatives(&jpeg(4000, 3000), "image/jpeg", Some(6)).unwrap();
        assert_eq!(d.preview_size, (1080, 1440));
        assert_eq!(d.thumb_size, (250, 333));
        assert_eq!((d.width, d.height), (3000, 4000));
        assert!(image::load_from_memory(&d.thumbnail).is_ok());
        assert!(!d.thumbhash.is_empty());
        let small = make_derivatives(&jpeg(120, 90), "image/jpeg", None).unwrap();
        assert_eq!(small.preview_size, (120, 90));
        assert_eq!(small.thumb_size, (120, 90));
    }

    #[test]
    fn truncated_and_garbage_jpeg_are_errors() {
        let full = jpeg(800, 600);
        let truncated = &full[..full.len() / 2];
        assert!(
            make_derivatives(truncated, "image/jpeg", None).is_err(),
            "a truncated JPEG must not pass"
        );
        assert!(make_derivatives(b"\xFF\xD8\xFFnot a jpeg at all", "image/jpeg", None).is_err());
        assert!(matches!(
            make_derivatives(b"", "image/jpeg", None),
            Err(MediaError::Empty)
        ));
        assert!(matches!(
            make_derivatives(b"xx", "image/heic", None),
            Err(MediaError::Decode { format: "HEIF", .. })
        ));
        assert!(matches!(
            make_derivatives(b"II*\0garbage", "image/x-adobe-dng", None),
            Err(MediaError::Decode { format: "RAW", .. })
        ));
        assert!(matches!(
            make_derivatives(b"xx", "image/svg+xml", None),
            Err(MediaError::Unsupported(_))
        ));
    }

    #[test]
    fn a_jpeg_with_thousands_of_scans_is_refused_before_decoding() {
        let img = turbojpeg::Image::mandelbrot(64, 48, turbojpeg::PixelFormat::RGB);
        let mut c = turbojpeg::Compressor::new().unwrap();
        c.set_progressive(true).unwrap();
        let progressive = c.compress_to_vec(img.as_deref()).unwrap();
        // A real progressive JPEG decodes.
        let d = make_derivatives(&progressive, "image/jpeg", None).unwrap();
        assert_eq!(d.preview_size, (64, 48));
        // Its last scan repeated 2,000 times: refused with a clear reason, not decoded.
        let last = progressive
            .windows(2)
            .rposition(|w| w == [0xFF, 0xDA])
            .unwrap();
        let eoi = progressive.len() - 2;
        let mut hostile = progressive[..eoi].to_vec();
        for _ in 0..2000 {
            hostile.extend_from_slice(&progressive[last..eoi]);
        }
        hostile.extend_from_slice(&[0xFF, 0xD9]);
        let e = make_derivatives(&hostile, "image/jpeg", None).unwrap_err();
        assert!(
            matches!(
                e,
                MediaError::TooManyScans {
                    max: MAX_JPEG_SCANS
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("scans"), "{e}");
    }
}
