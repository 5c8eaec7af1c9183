//! Test photos: the real camera JPEGs shipped in PyPI's `piexif` sdist (fetched by
//! `cargo xtask test` into `$TESSERA_FIXTURES`), EXIF written into them for fields those files
//! lack (GPS, offset, orientation), and large generated photos for benchmarks.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};

/// Directory of the real camera JPEGs.
pub fn fixtures_dir() -> Result<PathBuf> {
    let dir = std::env::var("TESSERA_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/tessera/fixtures/piexif-1.1.3/tests/images")
        });
    if !dir.join("r_canon.jpg").exists() {
        bail!(
            "test photos not found in {} (run `cargo xtask test`, which fetches them from PyPI)",
            dir.display()
        );
    }
    Ok(dir)
}

pub fn fixture(name: &str) -> Result<Vec<u8>> {
    let p = fixtures_dir()?.join(name);
    std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
}

/// EXIF fields to write.
#[derive(Debug, Clone, Default)]
pub struct ExifSpec {
    pub make: Option<String>,
    pub model: Option<String>,
    pub lens: Option<String>,
    pub orientation: Option<u16>,
    /// `YYYY:MM:DD HH:MM:SS`
    pub date_time_original: Option<String>,
    /// `+hh:mm`
    pub offset: Option<String>,
    /// (lat, lon) in degrees, signed.
    pub gps: Option<(f64, f64)>,
    pub exposure: Option<(u32, u32)>,
    pub f_number: Option<(u32, u32)>,
    pub iso: Option<u16>,
    pub focal_length: Option<(u32, u32)>,
}

struct Entry {
    tag: u16,
    typ: u16,
    count: u32,
    data: Vec<u8>,
}

fn ascii(tag: u16, s: &str) -> Entry {
    let mut data = s.as_bytes().to_vec();
    data.push(0);
    Entry {
        tag,
        typ: 2,
        count: data.len() as u32,
        data,
    }
}
fn short(tag: u16, v: u16) -> Entry {
    Entry {
        tag,
        typ: 3,
        count: 1,
        data: v.to_le_bytes().to_vec(),
    }
}
fn long(tag: u16, v: u32) -> Entry {
    Entry {
        tag,
        typ: 4,
        count: 1,
        data: v.to_le_bytes().to_vec(),
    }
}
fn rationals(tag: u16, v: &[(u32, u32)]) -> Entry {
    let data = v
        .iter()
        .flat_map(|(n, d)| n.to_le_bytes().into_iter().chain(d.to_le_bytes()))
        .collect();
    Entry {
        tag,
        typ: 5,
        count: v.len() as u32,
        data,
    }
}

/// One IFD placed at `offset` in the TIFF stream, values after the directory.
fn ifd(mut entries: Vec<Entry>, offset: u32) -> Vec<u8> {
    entries.sort_by_key(|e| e.tag);
    let mut data_off = offset + 2 + entries.len() as u32 * 12 + 4;
    let mut out = (entries.len() as u16).to_le_bytes().to_vec();
    let mut extra = Vec::new();
    for e in &entries {
        out.extend(e.tag.to_le_bytes());
        out.extend(e.typ.to_le_bytes());
        out.extend(e.count.to_le_bytes());
        if e.data.len() <= 4 {
            let mut v = e.data.clone();
            v.resize(4, 0);
            out.extend(v);
        } else {
            out.extend(data_off.to_le_bytes());
            extra.extend(&e.data);
            if e.data.len() % 2 == 1 {
                extra.push(0);
            }
            data_off += e.data.len().div_ceil(2) as u32 * 2;
        }
    }
    out.extend(0u32.to_le_bytes());
    out.extend(extra);
    out
}

fn dms(v: f64) -> [(u32, u32); 3] {
    let v = v.abs();
    let d = v.trunc();
    let m = ((v - d) * 60.0).trunc();
    let s = ((v - d) * 60.0 - m) * 60.0;
    [
        (d as u32, 1),
        (m as u32, 1),
        ((s * 10_000.0).round() as u32, 10_000),
    ]
}

/// A TIFF/EXIF block for `spec`.
pub fn exif_block(spec: &ExifSpec) -> Vec<u8> {
    let ifd0_entries = |exif_ptr: u32, gps_ptr: u32| {
        let mut v = vec![long(0x8769, exif_ptr)];
        if spec.gps.is_some() {
            v.push(long(0x8825, gps_ptr));
        }
        if let Some(m) = &spec.make {
            v.push(ascii(0x010F, m));
        }
        if let Some(m) = &spec.model {
            v.push(ascii(0x0110, m));
        }
        if let Some(o) = spec.orientation {
            v.push(short(0x0112, o));
        }
        v
    };
    let exif_entries = || {
        let mut v = Vec::new();
        if let Some(d) = &spec.date_time_original {
            v.push(ascii(0x9003, d));
        }
        if let Some(o) = &spec.offset {
            v.push(ascii(0x9011, o));
        }
        if let Some(e) = spec.exposure {
            v.push(rationals(0x829A, &[e]));
        }
        if let Some(f) = spec.f_number {
            v.push(rationals(0x829D, &[f]));
        }
        if let Some(i) = spec.iso {
            v.push(short(0x8827, i));
        }
        if let Some(f) = spec.focal_length {
            v.push(rationals(0x920A, &[f]));
        }
        if let Some(l) = &spec.lens {
            v.push(ascii(0xA434, l));
        }
        v
    };
    let l0 = ifd(ifd0_entries(0, 0), 8).len() as u32;
    let exif_at = 8 + l0;
    let le = ifd(exif_entries(), exif_at).len() as u32;
    let gps_at = exif_at + le;
    let mut tiff = b"II*\0".to_vec();
    tiff.extend(8u32.to_le_bytes());
    tiff.extend(ifd(ifd0_entries(exif_at, gps_at), 8));
    tiff.extend(ifd(exif_entries(), exif_at));
    if let Some((lat, lon)) = spec.gps {
        let gps = vec![
            ascii(1, if lat < 0.0 { "S" } else { "N" }),
            rationals(2, &dms(lat)),
            ascii(3, if lon < 0.0 { "W" } else { "E" }),
            rationals(4, &dms(lon)),
        ];
        tiff.extend(ifd(gps, gps_at));
    }
    tiff
}

/// Replaces a JPEG's EXIF (APP1 `Exif`) segment with one for `spec`; everything else is kept.
pub fn with_exif(jpeg: &[u8], spec: &ExifSpec) -> Result<Vec<u8>> {
    if !jpeg.starts_with(&[0xFF, 0xD8]) {
        bail!("not a JPEG");
    }
    let tiff = exif_block(spec);
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
    out.extend(((tiff.len() + 8) as u16).to_be_bytes());
    out.extend(b"Exif\0\0");
    out.extend(&tiff);
    let mut i = 2;
    while i + 4 <= jpeg.len() && jpeg[i] == 0xFF {
        let marker = jpeg[i + 1];
        if marker == 0xDA {
            break; // start of scan: copy the rest as is
        }
        let len = u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize;
        let seg = jpeg.get(i..i + 2 + len).context("truncated segment")?;
        let is_exif = marker == 0xE1 && seg.get(4..10) == Some(b"Exif\0\0");
        if !is_exif {
            out.extend(seg);
        }
        i += 2 + len;
    }
    out.extend(&jpeg[i..]);
    Ok(out)
}

/// A photo-like JPEG of `w`×`h`: a real camera photo upscaled plus sensor-like noise, so it
/// compresses like a phone photo (≈ 0.3 bytes/pixel at q90, 4:2:0 as phones and most cameras
/// write them). Deterministic per `seed`.
pub fn synthetic_photo(w: u32, h: u32, seed: u64) -> Result<Vec<u8>> {
    synthetic_photo_sampled(w, h, seed, jpeg_encoder::SamplingFactor::F_2_2)
}

/// [`synthetic_photo`] with the given chroma sampling (4:4:4, `F_1_1`, makes a file about half
/// as large again).
pub fn synthetic_photo_sampled(
    w: u32,
    h: u32,
    seed: u64,
    sampling: jpeg_encoder::SamplingFactor,
) -> Result<Vec<u8>> {
    let base = image::load_from_memory(&fixture("large.jpg")?)?.to_rgb8();
    let base = image::imageops::resize(&base, w, h, image::imageops::FilterType::Triangle);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tint: [i16; 3] = [
        rng.random_range(-30..30),
        rng.random_range(-30..30),
        rng.random_range(-30..30),
    ];
    let mut raw = base.into_raw();
    for (i, px) in raw.iter_mut().enumerate() {
        let n: i16 = rng.random_range(-12..=12);
        *px = (i16::from(*px) + n + tint[i % 3]).clamp(0, 255) as u8;
    }
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, 90);
    enc.set_sampling_factor(sampling);
    enc.encode(&raw, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)?;
    Ok(out)
}

/// A small valid JPEG of a solid-ish colour (distinct per seed).
pub fn small_jpeg(seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let c = [rng.random::<u8>(), rng.random::<u8>(), rng.random::<u8>()];
    let img = image::RgbImage::from_fn(320, 240, |x, y| {
        image::Rgb([c[0].wrapping_add(x as u8), c[1].wrapping_add(y as u8), c[2]])
    });
    let mut out = Vec::new();
    let _ = jpeg_encoder::Encoder::new(&mut out, 85).encode(
        img.as_raw(),
        320,
        240,
        jpeg_encoder::ColorType::Rgb,
    );
    out
}
