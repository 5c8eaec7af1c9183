//! Camera RAW (DNG, CR2, CR3, CRW, NEF, NRW, ARW, SR2, SRF, RAF, ORF, RW2, PEF, IIQ, 3FR, ERF,
//! KDC, DCR, MRW, MOS, X3F, …) through `rawler`.
//!
//! Why rawler and not a LibRaw binding: rawler (the dnglab project's decoder, pure Rust) covers
//! the formats phones and current cameras write — including CR3 and the lossless-JPEG/JPEG-XL
//! DNGs of recent phones — and is actively maintained against new bodies, whereas Debian
//! bookworm ships LibRaw 0.20 (2020: no CR3 from newer bodies, no JPEG-XL DNG) and the Rust
//! LibRaw bindings on crates.io are thin, unmaintained and would add a second system library to
//! every node. rawler builds with plain cargo (no C toolchain or pkg-config), costs about a
//! minute of compile time once, and needs no `unsafe` on our side. Its weak spots: it is known
//! to `panic!`/`todo!()` on unusual inputs (so every call is behind `catch_unwind`), and its
//! developer (PPG demosaic in f32) is slower than LibRaw's — which is why the fast path uses the
//! camera's embedded JPEG preview whenever it is large enough for our preview.

use std::panic::{catch_unwind, AssertUnwindSafe};

use image::RgbImage;
use rawler::decoders::{RawDecodeParams, RawMetadata};
use rawler::imgop::develop::RawDevelop;
use rawler::rawsource::RawSource;

use crate::derive::{check_dims, PREVIEW_LONG_SIDE};
use crate::exif_meta::format_time;
use crate::{MediaError, Metadata};

/// Where the pixels of a RAW decode came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawSourceKind {
    /// The camera's embedded JPEG preview (fast path).
    EmbeddedPreview,
    /// Full decode, demosaic and colour develop of the sensor data.
    Developed,
}

pub(crate) struct RawDecoded {
    pub image: RgbImage,
    /// Full-resolution (cropped sensor) dimensions, before orientation.
    pub width: u32,
    pub height: u32,
    /// EXIF orientation (1–8) as the RAW file records it.
    pub orientation: Option<u32>,
    /// Read by tests (which path ran); handy in a debugger.
    #[cfg_attr(not(test), allow(dead_code))]
    pub source: RawSourceKind,
}

fn decode_err(reason: impl Into<String>) -> MediaError {
    MediaError::Decode {
        format: "RAW",
        reason: reason.into(),
    }
}

/// Runs `f`, turning a panic inside rawler into a decode error.
fn guarded<T>(f: impl FnOnce() -> Result<T, MediaError>) -> Result<T, MediaError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(decode_err(format!("decoder panicked: {msg}")))
    })
}

/// Decodes a RAW file for derivatives: the embedded preview when its long side covers
/// `PREVIEW_LONG_SIDE` (or the whole sensor), else a full develop.
pub(crate) fn decode_raw(bytes: &[u8]) -> Result<RawDecoded, MediaError> {
    guarded(|| {
        sane_for_rawler(bytes)?;
        let src = RawSource::new_from_slice(bytes);
        let decoder = rawler::get_decoder(&src).map_err(|e| decode_err(e.to_string()))?;
        let params = RawDecodeParams::default();
        let orientation = decoder
            .raw_metadata(&src, &params)
            .ok()
            .and_then(|m| m.exif.orientation)
            .map(u32::from)
            .filter(|o| (1..=8).contains(o));
        // Sensor dimensions without decoding pixels.
        let dummy = decoder
            .raw_image(&src, &params, true)
            .map_err(|e| decode_err(e.to_string()))?;
        let (fw, fh) = match dummy.crop_area {
            Some(r) if r.d.w > 0 && r.d.h > 0 => (r.d.w as u32, r.d.h as u32),
            _ => (dummy.width as u32, dummy.height as u32),
        };
        check_dims(fw, fh)?;
        let wanted = PREVIEW_LONG_SIDE.min(fw.max(fh));
        // Largest first is not knowable without decoding: try full-size JPEG (CR2 IFD0 …),
        // then the preview, then the thumbnail (a DNG's IFD0); each is only a JPEG decode, made
        // only when the one before is missing or too small.
        for which in 0..3 {
            let candidate = match which {
                0 => decoder.full_image(&src, &params),
                1 => decoder.preview_image(&src, &params),
                _ => decoder.thumbnail_image(&src, &params),
            };
            if let Ok(Some(img)) = candidate {
                if img.width().max(img.height()) >= wanted {
                    return Ok(RawDecoded {
                        image: img.to_rgb8(),
                        width: fw,
                        height: fh,
                        orientation,
                        source: RawSourceKind::EmbeddedPreview,
                    });
                }
            }
        }
        let raw = decoder
            .raw_image(&src, &params, false)
            .map_err(|e| decode_err(e.to_string()))?;
        let developed = RawDevelop::default()
            .develop_intermediate(&raw)
            .map_err(|e| decode_err(e.to_string()))?
            .to_dynamic_image()
            .ok_or_else(|| decode_err("developed image has a bad size"))?;
        let image = developed.to_rgb8();
        let (w, h) = image.dimensions();
        check_dims(w, h)?;
        Ok(RawDecoded {
            image,
            width: w,
            height: h,
            orientation,
            source: RawSourceKind::Developed,
        })
    })
}

/// Whether the bytes look like a container rawler may understand (so `read_metadata` asks it).
pub(crate) fn looks_raw(head: &[u8]) -> bool {
    let starts = |p: &[u8]| head.starts_with(p);
    starts(b"II*\0")
        || starts(b"MM\0*")
        || starts(b"IIRO")
        || starts(b"IIRS")
        || starts(b"IIU\0")
        || starts(b"FUJIFILMCCD-RAW")
        || starts(b"\0MRM")
        || starts(b"FOVb")
        || (head.len() >= 12 && &head[4..12] == b"ftypcrx ")
        || (head.len() >= 14 && &head[6..14] == b"HEAPCCDR")
}

/// Whether every TIFF directory entry in `tiff` (IFD chain plus EXIF and sub-IFDs, bounded)
/// claims no more bytes than the block holds. rawler 0.8 trusts those counts and allocates
/// them up front: 482 crafted bytes of MRW asked for a 4 GiB buffer (found by
/// `cargo xtask fuzz exif`), which aborts a node on a small NAS. Such files are refused first.
fn tiff_entries_fit(tiff: &[u8]) -> bool {
    let (le, first) = match tiff.get(..4) {
        Some(b"II*\0") => (true, 4usize),
        Some(b"MM\0*") => (false, 4),
        _ => return true, // not TIFF-structured: nothing to check here
    };
    let first = match tiff.get(first..first + 4) {
        Some(b) => {
            let a = [b[0], b[1], b[2], b[3]];
            (if le {
                u32::from_le_bytes(a)
            } else {
                u32::from_be_bytes(a)
            }) as usize
        }
        None => return false,
    };
    ifd_entries_fit(tiff, first, le)
}

/// [`tiff_entries_fit`] from a known first directory offset and byte order.
fn ifd_entries_fit(tiff: &[u8], first: usize, le: bool) -> bool {
    let u16_at = |o: usize| -> Option<u32> {
        let b = tiff.get(o..o.checked_add(2)?)?;
        Some(u32::from(if le {
            u16::from_le_bytes([b[0], b[1]])
        } else {
            u16::from_be_bytes([b[0], b[1]])
        }))
    };
    let u32_at = |o: usize| -> Option<u32> {
        let b = tiff.get(o..o.checked_add(4)?)?;
        let a = [b[0], b[1], b[2], b[3]];
        Some(if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    };
    let mut todo = vec![first];
    let mut seen = 0;
    while let Some(ifd) = todo.pop() {
        seen += 1;
        if seen > 64 || ifd == 0 {
            continue;
        }
        let Some(n) = u16_at(ifd) else { continue };
        for i in 0..n.min(1024) as usize {
            let e = ifd + 2 + i * 12;
            let (Some(tag), Some(typ), Some(count)) = (u16_at(e), u16_at(e + 2), u32_at(e + 4))
            else {
                break;
            };
            let unit: u64 = match typ {
                1 | 2 | 6 | 7 => 1,
                3 | 8 => 2,
                4 | 9 | 11 | 13 => 4,
                5 | 10 | 12 => 8,
                _ => 1,
            };
            if unit * u64::from(count) > tiff.len() as u64 {
                return false;
            }
            // EXIF, GPS and sub-IFDs are directories too (rawler follows those tags whatever
            // type they claim); several sub-IFDs are a list of offsets.
            if matches!(tag, 0x8769 | 0x8825 | 0x014a) || typ == 13 {
                // A directory pointer of another type is never written by a camera; rawler
                // would still follow it, reading the offset its own way.
                if !matches!(typ, 4 | 13) {
                    return false;
                }
                let offsets = if count <= 1 {
                    u32_at(e + 8).map(|o| vec![o])
                } else {
                    u32_at(e + 8).map(|at| {
                        (0..count.min(16) as usize)
                            .filter_map(|k| u32_at(at as usize + 4 * k))
                            .collect()
                    })
                };
                todo.extend(offsets.unwrap_or_default().into_iter().map(|o| o as usize));
            }
        }
        if let Some(next) = u32_at(ifd + 2 + n.min(1024) as usize * 12) {
            todo.push(next as usize);
        }
    }
    true
}

/// Checks the TIFF structures rawler would trust (a bare TIFF-based RAW, or a Minolta MRW's
/// `TTW` block) before rawler sees the file.
fn sane_for_rawler(bytes: &[u8]) -> Result<(), MediaError> {
    let ok = if bytes.starts_with(b"\0MRM") {
        // MRW, walked as rawler walks it: blocks (u32 BE tag, u32 BE length) from offset 8 up
        // to the data offset; the `TTW` block holds a big-endian TIFF whose first directory is
        // at 8 (without a `TTW` block rawler reads one from the start of the file).
        let be32 = |o: usize| -> Option<usize> {
            let b = bytes.get(o..o + 4)?;
            Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        let data_offset = be32(4).unwrap_or(0).saturating_add(8);
        let mut pos = 8usize;
        let mut tiffpos = 0usize;
        while pos.saturating_add(20) < data_offset {
            let (Some(tag), Some(len)) = (be32(pos), be32(pos + 4)) else {
                break;
            };
            if tag == 0x0054_5457 {
                tiffpos = pos + 8;
            }
            pos = match pos.checked_add(len.saturating_add(8)) {
                Some(p) => p,
                None => break,
            };
        }
        ifd_entries_fit(bytes.get(tiffpos..).unwrap_or_default(), 8, false)
    } else {
        tiff_entries_fit(bytes)
    };
    if ok {
        Ok(())
    } else {
        Err(decode_err(
            "a TIFF directory entry claims more bytes than the file holds",
        ))
    }
}

/// Metadata as rawler reads it (works for CR3, RAF, CRW and others kamadak-exif cannot open),
/// plus the sensor dimensions. `None` when rawler does not recognise the file.
pub(crate) fn raw_metadata(bytes: &[u8]) -> Option<Metadata> {
    guarded(|| {
        sane_for_rawler(bytes)?;
        let src = RawSource::new_from_slice(bytes);
        let decoder = rawler::get_decoder(&src).map_err(|e| decode_err(e.to_string()))?;
        let params = RawDecodeParams::default();
        let md = decoder
            .raw_metadata(&src, &params)
            .map_err(|e| decode_err(e.to_string()))?;
        let dims = decoder
            .raw_image(&src, &params, true)
            .ok()
            .map(|r| match r.crop_area {
                Some(c) if c.d.w > 0 && c.d.h > 0 => (c.d.w as u32, c.d.h as u32),
                _ => (r.width as u32, r.height as u32),
            });
        Ok(convert(&md, dims))
    })
    .ok()
}

fn convert(md: &RawMetadata, dims: Option<(u32, u32)>) -> Metadata {
    let e = &md.exif;
    let rat =
        |r: &rawler::formats::tiff::Rational| (r.d != 0).then(|| f64::from(r.n) / f64::from(r.d));
    let taken_at = [
        (
            &e.date_time_original,
            &e.sub_sec_time_original,
            &e.offset_time_original,
        ),
        (
            &e.create_date,
            &e.sub_sec_time_digitized,
            &e.offset_time_digitized,
        ),
        (&e.modify_date, &e.sub_sec_time, &e.offset_time),
    ]
    .into_iter()
    .find_map(|(dt, sub, off)| format_time(dt.as_deref()?, sub.as_deref(), off.as_deref()));
    let coord = |v: &Option<[rawler::formats::tiff::Rational; 3]>, r: &Option<String>, neg: u8| {
        let v = v.as_ref()?;
        let d = rat(&v[0])? + rat(&v[1])? / 60.0 + rat(&v[2])? / 3600.0;
        Some(
            if r.as_deref().and_then(|s| s.bytes().next()) == Some(neg) {
                -d
            } else {
                d
            },
        )
    };
    let (lat, lon, altitude) = match &e.gps {
        Some(g) => {
            let lat = coord(&g.gps_latitude, &g.gps_latitude_ref, b'S').filter(|v| v.abs() <= 90.0);
            let lon =
                coord(&g.gps_longitude, &g.gps_longitude_ref, b'W').filter(|v| v.abs() <= 180.0);
            let alt = g.gps_altitude.as_ref().and_then(rat).map(|a| {
                if g.gps_altitude_ref == Some(1) {
                    -a
                } else {
                    a
                }
            });
            match (lat, lon) {
                (Some(a), Some(b)) if !(a == 0.0 && b == 0.0) => (Some(a), Some(b), alt),
                _ => (None, None, alt),
            }
        }
        None => (None, None, None),
    };
    let nonempty = |s: &str| {
        let t = s.trim_matches(|c: char| c == '\0' || c.is_whitespace());
        (!t.is_empty()).then(|| t.to_owned())
    };
    let lens = md
        .lens
        .as_ref()
        .and_then(|l| nonempty(&format!("{} {}", l.lens_make, l.lens_model)))
        .or_else(|| e.lens_model.as_deref().and_then(nonempty));
    Metadata {
        taken_at,
        lat,
        lon,
        altitude,
        make: nonempty(&md.make),
        model: nonempty(&md.model),
        lens,
        exposure_time: e.exposure_time.as_ref().and_then(rat),
        f_number: e.fnumber.as_ref().and_then(rat),
        iso: e
            .iso_speed_ratings
            .map(u32::from)
            .or(e.iso_speed)
            .or(e.recommended_exposure_index),
        focal_length: e.focal_length.as_ref().and_then(rat),
        orientation: e.orientation.map(u32::from).filter(|o| (1..=8).contains(o)),
        width: dims.map(|d| d.0),
        height: dims.map(|d| d.1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `cargo xtask fuzz exif`: 482 bytes of MRW, and a TIFF whose EXIF pointer has an
    /// odd type, with a directory entry claiming 4 GiB that rawler 0.8 would allocate. Both
    /// are refused before rawler sees them.
    #[test]
    fn a_tiff_entry_larger_than_the_file_is_refused_before_rawler() {
        for crafted in [
            &include_bytes!("../../fuzz/corpus/exif/mrw-4gib-entry")[..],
            &include_bytes!("../../fuzz/corpus/exif/tiff-exif-pointer-odd-type")[..],
            &include_bytes!("../../fuzz/corpus/exif/tiff-exif-pointer-odd-type-2")[..],
        ] {
            let err = sane_for_rawler(crafted).unwrap_err();
            assert!(err.to_string().contains("claims more bytes"), "{err}");
            assert!(raw_metadata(crafted).is_none());
        }
        // Real RAW files pass the check.
        let Some(dir) = crate::test_corpus() else {
            return;
        };
        for f in ["dng_with_preview.dng", "dng_bayer_landscape.dng"] {
            let bytes = std::fs::read(dir.join(f)).unwrap();
            sane_for_rawler(&bytes).unwrap();
        }
    }

    /// Found by `cargo xtask fuzz exif`: rawler 0.8.0 panics on this crafted X3F header
    /// (decoders/x3f.rs:43). The panic is contained: no metadata, a decode error, no crash.
    #[test]
    fn a_panicking_raw_decoder_is_a_decode_error() {
        let crafted: [u8; 54] = [
            70, 79, 86, 98, 0, 154, 69, 120, 102, 27, 15, 0, 2, 0, 0, 0, 4, 67, 97, 109, 255, 216,
            255, 225, 0, 154, 105, 120, 69, 77, 102, 0, 0, 0, 18, 45, 0, 77, 1, 129, 150, 231, 11,
            63, 0, 1, 42, 0, 0, 0, 6, 0, 42, 0,
        ];
        assert!(raw_metadata(&crafted).is_none());
        let err = decode_raw(&crafted).err().expect("a decode error");
        assert!(err.to_string().contains("RAW"), "{err}");
        // The metadata reader as a whole answers (with nothing) instead of crashing.
        let m = crate::read_metadata(&crafted);
        assert!(m.taken_at.is_none());
    }

    #[test]
    fn embedded_preview_fast_path_and_develop() {
        let Some(dir) = crate::test_corpus() else {
            return;
        };
        let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
        let d = decode_raw(&read("dng_with_preview.dng")).unwrap();
        assert_eq!(d.source, RawSourceKind::EmbeddedPreview);
        assert_eq!(d.image.dimensions(), (1600, 1200));
        assert_eq!((d.width, d.height), (2016, 1512));
        let d = decode_raw(&read("dng_bayer_landscape.dng")).unwrap();
        assert_eq!(d.source, RawSourceKind::Developed);
        assert_eq!(d.image.dimensions(), (2016, 1512));
        assert_eq!(d.orientation, Some(1));
        // The develop reproduces the photo the mosaic was made from: not flat, not clipped.
        let mean = d.image.pixels().map(|p| u64::from(p[1])).sum::<u64>()
            / u64::from(d.image.width() * d.image.height());
        assert!((40..220).contains(&mean), "mean green {mean}");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode_raw(b"").is_err());
        assert!(decode_raw(b"II*\0\x08\0\0\0\xff\xff").is_err());
        assert_eq!(raw_metadata(b"MM\0*"), None);
    }
}
