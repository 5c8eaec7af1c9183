//! HEIC/HEIF and AVIF through libheif (system library, Debian bookworm's 1.15).
//!
//! libheif applies the file's `irot`/`imir`/`clap` transforms while decoding, so the pixels it
//! returns are already as displayed: callers must not apply EXIF orientation again.
//!
//! Speed: libheif's own scaling is nearest-neighbour on the fully decoded image (no decode-time
//! shortcut like a JPEG's DCT scaling), so it buys nothing; instead, when the file has a
//! thumbnail item that covers our preview (cameras writing HEIF store ≈1616 px ones; phones'
//! are ≈320 px and are skipped) with the same transforms as the primary, we decode that:
//! a 32 MP Sony `.HIF` goes from ≈4.1 s to ≈0.1 s. Otherwise the primary is decoded in full and
//! resized with our SIMD Catmull-Rom.

use std::panic::{catch_unwind, AssertUnwindSafe};

use image::RgbImage;
use libheif_rs::{ColorSpace, HeifContext, ItemId, LibHeif, RgbChroma};

use crate::derive::PREVIEW_LONG_SIDE;
use crate::MediaError;

fn format_name(mime: &str) -> &'static str {
    if mime == "image/avif" {
        "AVIF"
    } else {
        "HEIF"
    }
}

/// Decodes the primary image (or a thumbnail item that covers the preview) to 8-bit RGB,
/// transforms applied. Returns the image and the primary's displayed (transformed) dimensions.
pub(crate) fn decode_heif(bytes: &[u8], mime: &str) -> Result<(RgbImage, u32, u32), MediaError> {
    let format = format_name(mime);
    let err = |reason: String| MediaError::Decode { format, reason };
    // libheif is C (no unwinding), but guard the wrapper's own code too.
    catch_unwind(AssertUnwindSafe(|| decode_inner(bytes, format, true, true)))
        .map_err(|_| err("decoder panicked".into()))?
}

fn decode_inner(
    bytes: &[u8],
    format: &'static str,
    allow_thumbnail: bool,
    allow_tiles: bool,
) -> Result<(RgbImage, u32, u32), MediaError> {
    let err = |e: libheif_rs::HeifError| MediaError::Decode {
        format,
        reason: e.message.clone(),
    };
    let lib = LibHeif::new();
    let ctx = HeifContext::read_from_bytes(bytes).map_err(err)?;
    let handle = ctx.primary_image_handle().map_err(err)?;
    // The handle's width/height are after transformations (ispe is before).
    let (full_w, full_h) = (handle.width(), handle.height());
    crate::derive::check_dims(full_w, full_h)?;
    // Fast path: cameras (Sony, Canon, Fuji .HIF) store a ~1616 px thumbnail item, which
    // covers our preview at a fraction of the decode time of the 24–60 MP primary. Phones'
    // thumbnails (≈320 px) are too small and are skipped. A thumbnail whose displayed aspect
    // differs from the primary's (a transform mismatch) is not trusted.
    let wanted = PREVIEW_LONG_SIDE.min(full_w.max(full_h));
    // (libheif 1.15 reports handle sizes before irot, so the transforms come from our own
    // read of the item properties.)
    let aspect = |w: u32, h: u32| f64::from(w) / f64::from(h.max(1));
    let props = ItemTransforms::parse(bytes);
    let primary_tf = props.as_ref().and_then(|p| p.of(p.primary?));
    let mut ids: [ItemId; 8] = [0; 8];
    let n = if allow_thumbnail {
        handle.thumbnail_ids(&mut ids)
    } else {
        0
    };
    let thumb = match (&props, primary_tf) {
        (Some(p), Some(primary_tf)) => ids
            .get(..n)
            .unwrap_or_default()
            .iter()
            .filter(|&&id| p.of(id) == Some(primary_tf))
            .filter_map(|&id| handle.thumbnail(id).ok())
            .filter(|t| {
                t.width().max(t.height()) >= wanted
                    // A thumbnail is small (cameras: ≈ 1616 px); a huge one is not one.
                    && u64::from(t.width()) * u64::from(t.height())
                        <= 4 * u64::from(PREVIEW_LONG_SIDE).pow(2)
                    && crate::derive::check_dims(t.width(), t.height()).is_ok()
                    && (aspect(t.width(), t.height()) / aspect(full_w, full_h) - 1.0).abs() < 0.02
            })
            .min_by_key(|t| u64::from(t.width()) * u64::from(t.height())),
        _ => None,
    };
    let decoded = thumb
        .and_then(|t| lib.decode(&t, ColorSpace::Rgb(RgbChroma::Rgb), None).ok())
        .filter(|i| i.width().max(i.height()) >= wanted);
    if decoded.is_none() && allow_tiles {
        // A large grid (phones, 50–200 MP sensors): tile by tile at reduced size, never whole;
        // what that path does not take is decoded whole below, but a grid whose tile fails is
        // damaged (libheif would decode the same tile) and is not decoded whole.
        match crate::heif_grid::decode_scaled(bytes) {
            Ok(s) => return Ok((s.image, s.width, s.height)),
            Err(crate::heif_grid::TileError::Failed(reason)) => {
                return Err(MediaError::Decode { format, reason })
            }
            Err(crate::heif_grid::TileError::NotTiled(_)) => {}
        }
    }
    let (img, disp_w, disp_h) = match decoded {
        Some(i) => {
            let quarter = primary_tf.is_some_and(|t| t.rotation % 2 == 1);
            let (w, h) = if quarter {
                (full_h, full_w)
            } else {
                (full_w, full_h)
            };
            (i, w, h)
        }
        None => {
            let i = lib
                .decode(&handle, ColorSpace::Rgb(RgbChroma::Rgb), None)
                .map_err(err)?;
            let (w, h) = (i.width(), i.height());
            (i, w, h)
        }
    };
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
    Ok((rgb, disp_w, disp_h))
}

/// Geometric transforms of an item: `irot` (quarter turns, anticlockwise), `imir` axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Transform {
    rotation: u8,
    mirror: Option<u8>,
    cropped: bool,
}

/// The `irot`/`imir`/`clap` properties of every item (from `meta/iprp/ipma`) and the primary
/// item id (`meta/pitm`).
struct ItemTransforms {
    primary: Option<ItemId>,
    items: Vec<(ItemId, Transform)>,
}

impl ItemTransforms {
    fn parse(bytes: &[u8]) -> Option<Self> {
        use crate::video::{child, children};
        let meta = children(bytes).find(|(k, _)| k == b"meta")?.1.get(4..)?;
        let primary = child(meta, b"pitm").and_then(|p| match p.first()? {
            0 => p
                .get(4..6)
                .map(|b| u32::from(u16::from_be_bytes([b[0], b[1]]))),
            _ => p
                .get(4..8)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        });
        let props = crate::heif_grid::Properties::parse(child(meta, b"iprp")?)?;
        let items = props
            .items()
            .map(|id| {
                let mut t = Transform::default();
                for (_, prop) in props.of(id) {
                    let Some((kind, payload)) = crate::heif_grid::kind_and_payload(prop) else {
                        continue;
                    };
                    match &kind {
                        b"irot" => t.rotation = payload.first()? & 3,
                        b"imir" => t.mirror = Some(payload.first()? & 1),
                        b"clap" => t.cropped = true,
                        _ => {}
                    }
                }
                Some((id, t))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self { primary, items })
    }

    fn of(&self, id: ItemId) -> Option<Transform> {
        self.items.iter().find(|(i, _)| *i == id).map(|(_, t)| *t)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Mean absolute difference of two images scaled to 24x24.
    fn diff(a: &RgbImage, b: &RgbImage) -> f64 {
        let small = |i: &RgbImage| {
            image::imageops::resize(i, 24, 24, image::imageops::FilterType::Triangle)
        };
        let (a, b) = (small(a), small(b));
        let sum: u64 = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| u64::from(x.abs_diff(*y)))
            .sum();
        sum as f64 / a.as_raw().len() as f64
    }

    #[test]
    fn thumbnail_fast_path_matches_the_primary() {
        let Some(dir) = crate::test_corpus() else {
            return;
        };
        for (file, expect_fast) in [
            ("hif_sony_irot90.hif", true),
            ("heic_transform_mismatch_thumbnail.heic", false),
            ("heic_iphone13pro.heic", false),
        ] {
            let bytes = std::fs::read(dir.join(file)).unwrap();
            let tf = ItemTransforms::parse(&bytes).unwrap();
            eprintln!("{file}: primary {:?} items {:?}", tf.primary, tf.items);
            let (fast, fw, fh) = decode_inner(&bytes, "HEIF", true, false).unwrap();
            let (full, w, h) = decode_inner(&bytes, "HEIF", false, false).unwrap();
            assert_eq!((fw, fh), (w, h), "{file}");
            assert_eq!(
                fast.dimensions() != full.dimensions(),
                expect_fast,
                "{file}"
            );
            let d = diff(&fast, &full);
            eprintln!(
                "{file}: fast {:?} full {:?} diff {d:.1}",
                fast.dimensions(),
                full.dimensions()
            );
            assert!(
                d < 12.0,
                "{file}: the thumbnail differs from the primary ({d:.1})"
            );
        }
    }

    /// `img` averaged over k x k cells from its top-left corner (partial cells at the right and
    /// bottom edges), rounded as the tile path rounds.
    fn box_average(img: &RgbImage, k: u32) -> RgbImage {
        let (w, h) = img.dimensions();
        let (dw, dh) = (w.div_ceil(k), h.div_ceil(k));
        RgbImage::from_fn(dw, dh, |dx, dy| {
            let mut sum = [0u64; 3];
            let mut n = 0u64;
            for y in dy * k..((dy + 1) * k).min(h) {
                for x in dx * k..((dx + 1) * k).min(w) {
                    let p = img.get_pixel(x, y);
                    for c in 0..3 {
                        sum[c] += u64::from(p[c]);
                    }
                    n += 1;
                }
            }
            image::Rgb(sum.map(|v| ((v + n / 2) / n) as u8))
        })
    }

    /// Every grid photo of the corpus decodes tile by tile to what libheif's whole decode
    /// shows (same displayed size, same picture), rotation included.
    #[test]
    fn grids_decode_tile_by_tile_to_the_whole_picture() {
        let Some(dir) = crate::test_corpus() else {
            return;
        };
        // The corpus holds irot 0 and 3; the portrait iPhone photo with its irot made 1 and 2
        // covers the other turns.
        let arrow = std::fs::read(dir.join("heic_iphone8plus_portrait.heic")).unwrap();
        let irot = arrow
            .windows(8)
            .position(|w| w == b"\0\0\0\x09irot")
            .expect("arrow.heic has an irot property");
        let turned = |turn: u8| {
            let mut t = arrow.clone();
            t[irot + 8] = turn;
            t
        };
        let mut cases: Vec<(&str, Vec<u8>, bool)> =
            vec![("irot1", turned(1), true), ("irot2", turned(2), true)];
        for (file, tiled) in [
            ("heic_iphone13pro.heic", true),
            ("heic_iphone8plus_portrait.heic", true),
            ("heic_samsung_s25.heic", true),
            ("heic_xiaomi.heic", false),
            ("heic_iphonexs.heic", false),
            // 200 MP: libheif's whole decode takes ≈ 1.2 GB; this path ≈ 40 MB.
            ("large/heic_200mp.heic", true),
        ] {
            cases.push((file, std::fs::read(dir.join(file)).unwrap(), tiled));
        }
        for (file, bytes, tiled) in cases {
            let (full, w, h) = decode_inner(&bytes, "HEIF", false, false).unwrap();
            let got = crate::heif_grid::decode_scaled(&bytes);
            assert_eq!(got.is_ok(), tiled, "{file}: {:?}", got.as_ref().err());
            let Ok(s) = got else { continue };
            assert_eq!((s.width, s.height), (w, h), "{file}");
            let (sw, sh) = s.image.dimensions();
            assert!(sw.max(sh) >= PREVIEW_LONG_SIDE, "{file}: {sw}x{sh}");
            assert_eq!(sw > sh, w > h, "{file}: orientation");
            // Pixel by pixel against libheif's whole decode averaged over the same k x k
            // cells (both turned back to the stored orientation, where the cells start).
            let rotation = ItemTransforms::parse(&bytes)
                .and_then(|t| t.of(t.primary?))
                .map_or(0, |t| t.rotation);
            if let Some(turn) = file.strip_prefix("irot") {
                assert_eq!(rotation.to_string(), turn, "the primary's irot was patched");
            }
            let back = |i: &RgbImage| match rotation {
                1 => image::imageops::rotate90(i),
                2 => image::imageops::rotate180(i),
                3 => image::imageops::rotate270(i),
                _ => i.clone(),
            };
            let (full_back, tiled_back) = (back(&full), back(&s.image));
            let k = full_back.width().max(full_back.height()) / PREVIEW_LONG_SIDE;
            let expected = box_average(&full_back, k);
            assert_eq!(expected.dimensions(), tiled_back.dimensions(), "{file}");
            let (mut max, mut sum) = (0u8, 0u64);
            for (a, b) in expected.as_raw().iter().zip(tiled_back.as_raw()) {
                max = max.max(a.abs_diff(*b));
                sum += u64::from(a.abs_diff(*b));
            }
            let mean = sum as f64 / expected.as_raw().len() as f64;
            eprintln!(
                "{file}: {w}x{h} tiled to {sw}x{sh} (k {k}, irot {rotation}): mean {mean:.3}, max {max}"
            );
            assert!(
                max <= 1 && mean < 0.01,
                "{file}: tiled decode differs (mean {mean:.3}, max {max})"
            );
            // And through the public path.
            let (via, vw, vh) = decode_inner(&bytes, "HEIF", true, true).unwrap();
            assert_eq!((via.dimensions(), vw, vh), ((sw, sh), w, h), "{file}");
        }
        // A truncated grid is a failed tile decode, reported as an error.
        let cut = std::fs::read(dir.join("bad_truncated.heic")).unwrap();
        assert!(matches!(
            crate::heif_grid::decode_scaled(&cut),
            Err(crate::heif_grid::TileError::Failed(_))
        ));
        assert!(decode_heif(&cut, "image/heic").is_err());
    }
}
