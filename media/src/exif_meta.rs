//! EXIF metadata (kamadak-exif): capture time with offset, GPS, camera, exposure, orientation.

use std::io::Cursor;

use exif::{In, Reader, Tag, Value};

/// What Tessera keeps from an original's EXIF. Missing or unreadable fields are `None`; a file
/// without EXIF yields `Metadata::default()`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    /// Local capture time `YYYY-MM-DDTHH:MM:SS[.sss][+hh:mm]` (offset when recorded).
    pub taken_at: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub altitude: Option<f64>,
    pub make: Option<String>,
    pub model: Option<String>,
    pub lens: Option<String>,
    pub exposure_time: Option<f64>,
    pub f_number: Option<f64>,
    pub iso: Option<u32>,
    pub focal_length: Option<f64>,
    /// EXIF orientation 1–8.
    pub orientation: Option<u32>,
    /// Pixel dimensions as stored (before orientation), when EXIF records them.
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// Reads EXIF from a JPEG, TIFF/RAW, HEIF, PNG or WebP container. Never fails: a file without
/// (or with broken) EXIF simply has no metadata.
pub fn read_metadata(bytes: &[u8]) -> Metadata {
    // A JPEG's EXIF is an APP1 segment before the first scan, in practice within the first
    // few hundred KB (APP segments are ≤ 64 KB each): parse only the head of a JPEG.
    const HEAD: usize = 1024 * 1024;
    let is_jpeg = bytes.starts_with(&[0xFF, 0xD8]);
    let input = if is_jpeg {
        &bytes[..bytes.len().min(HEAD)]
    } else {
        bytes
    };
    // HEIF: the Exif item that libheif links to the primary image (`cdsc`). kamadak-exif reads
    // HEIF too, but takes the first Exif item in the file, which on real iPhone files can be
    // another image's (found on an iPhone XS HEIC: 2 s off). It stays the fallback.
    let from_heif = || {
        is_heif(bytes)
            .then(|| crate::heif::exif_block(bytes))
            .flatten()
            .and_then(|tiff| lenient(Reader::new().continue_on_error(true).read_raw(tiff)))
    };
    let exif = from_heif().or_else(|| {
        lenient(
            Reader::new()
                .continue_on_error(true)
                .read_from_container(&mut Cursor::new(input)),
        )
    });
    let mut md = exif.as_ref().map(from_exif).unwrap_or_default();
    if crate::raw::looks_raw(bytes) {
        // RAW: rawler knows CR3/RAF/CRW and the makers' tags; fill what EXIF did not say, and
        // the sensor dimensions.
        if let Some(raw) = crate::raw::raw_metadata(bytes) {
            md.fill_from(raw);
        }
    }
    md
}

/// Keeps every field that could be read. Writers such as PyPI's `piexif` leave a garbage
/// next-IFD pointer after the Exif/GPS sub-IFDs; strict parsing ("Unexpected next IFD") would
/// throw the whole block away, and with it the date, GPS, camera and orientation.
fn lenient(read: Result<exif::Exif, exif::Error>) -> Option<exif::Exif> {
    read.or_else(|e| e.distill_partial_result(|_errors| {}))
        .ok()
}

fn is_heif(bytes: &[u8]) -> bool {
    bytes.get(4..8) == Some(b"ftyp")
        && matches!(
            bytes.get(8..12),
            Some(b"heic" | b"heix" | b"heim" | b"heis" | b"mif1" | b"msf1" | b"avif" | b"avis")
        )
}

impl Metadata {
    /// Fills the fields that are `None` from `other`.
    fn fill_from(&mut self, other: Metadata) {
        macro_rules! fill {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = other.$f; } )* };
        }
        fill!(
            taken_at,
            make,
            model,
            lens,
            exposure_time,
            f_number,
            iso,
            focal_length,
            orientation,
            width,
            height
        );
        if self.lat.is_none() && self.lon.is_none() {
            self.lat = other.lat;
            self.lon = other.lon;
            if self.altitude.is_none() {
                self.altitude = other.altitude;
            }
        }
    }
}

fn from_exif(exif: &exif::Exif) -> Metadata {
    let field = |tag| exif.get_field(tag, In::PRIMARY);
    let text = |tag| field(tag).and_then(|f| ascii(&f.value));
    let rational = |tag| field(tag).and_then(|f| first_rational(&f.value));
    let uint = |tag| field(tag).and_then(|f| f.value.get_uint(0));

    let taken_at = [
        (
            Tag::DateTimeOriginal,
            Tag::OffsetTimeOriginal,
            Tag::SubSecTimeOriginal,
        ),
        (
            Tag::DateTimeDigitized,
            Tag::OffsetTimeDigitized,
            Tag::SubSecTimeDigitized,
        ),
        (Tag::DateTime, Tag::OffsetTime, Tag::SubSecTime),
    ]
    .into_iter()
    .find_map(|(dt, off, sub)| format_time(&text(dt)?, text(sub).as_deref(), text(off).as_deref()));

    let coord = |tag, ref_tag, neg: u8| {
        let f = field(tag)?;
        let Value::Rational(v) = &f.value else {
            return None;
        };
        if v.len() < 3 || v.iter().any(|r| r.denom == 0) {
            return None;
        }
        let deg = v[0].to_f64() + v[1].to_f64() / 60.0 + v[2].to_f64() / 3600.0;
        let sign = match field(ref_tag).and_then(|f| ascii(&f.value)) {
            Some(s) if s.as_bytes().first() == Some(&neg) => -1.0,
            _ => 1.0,
        };
        Some(sign * deg)
    };
    let lat = coord(Tag::GPSLatitude, Tag::GPSLatitudeRef, b'S').filter(|v| v.abs() <= 90.0);
    let lon = coord(Tag::GPSLongitude, Tag::GPSLongitudeRef, b'W').filter(|v| v.abs() <= 180.0);
    // (0, 0) is how many cameras say "no fix".
    let (lat, lon) = match (lat, lon) {
        (Some(a), Some(b)) if a == 0.0 && b == 0.0 => (None, None),
        (Some(a), Some(b)) => (Some(a), Some(b)),
        _ => (None, None),
    };
    let altitude = rational(Tag::GPSAltitude).map(|a| {
        if uint(Tag::GPSAltitudeRef) == Some(1) {
            -a
        } else {
            a
        }
    });

    Metadata {
        taken_at,
        lat,
        lon,
        altitude,
        make: text(Tag::Make),
        model: text(Tag::Model),
        lens: text(Tag::LensModel),
        exposure_time: rational(Tag::ExposureTime),
        f_number: rational(Tag::FNumber),
        iso: uint(Tag::PhotographicSensitivity),
        focal_length: rational(Tag::FocalLength),
        orientation: uint(Tag::Orientation).filter(|o| (1..=8).contains(o)),
        width: uint(Tag::PixelXDimension).filter(|&w| w > 0),
        height: uint(Tag::PixelYDimension).filter(|&h| h > 0),
    }
}

fn ascii(v: &Value) -> Option<String> {
    let Value::Ascii(parts) = v else { return None };
    let s = String::from_utf8_lossy(parts.first()?)
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_owned();
    (!s.is_empty()).then_some(s)
}

fn first_rational(v: &Value) -> Option<f64> {
    match v {
        Value::Rational(r) => r.first().filter(|r| r.denom != 0).map(|r| r.to_f64()),
        Value::SRational(r) => r.first().filter(|r| r.denom != 0).map(|r| r.to_f64()),
        _ => None,
    }
}

/// `2024:05:03 14:22:01` + subsec `123` + offset `+02:00` → `2024-05-03T14:22:01.123+02:00`.
pub(crate) fn format_time(dt: &str, subsec: Option<&str>, offset: Option<&str>) -> Option<String> {
    let b = dt.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if !(digits(0..4)
        && digits(5..7)
        && digits(8..10)
        && digits(11..13)
        && digits(14..16)
        && digits(17..19))
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| dt[r].parse::<u32>().ok();
    let (y, mo, d, h, mi, s) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if y == 0 || !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut out = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
    if let Some(sub) = subsec.filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())) {
        out.push('.');
        out.push_str(&sub[..sub.len().min(3)]);
    }
    if let Some(off) = offset {
        let o = off.as_bytes();
        if o.len() == 6
            && (o[0] == b'+' || o[0] == b'-')
            && o[3] == b':'
            && off[1..3]
                .bytes()
                .chain(off[4..].bytes())
                .all(|c| c.is_ascii_digit())
        {
            out.push_str(off);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_exif_time() {
        assert_eq!(
            format_time("2024:05:03 14:22:01", Some("12"), Some("+02:00")).as_deref(),
            Some("2024-05-03T14:22:01.12+02:00")
        );
        assert_eq!(
            format_time("2024:05:03 14:22:01", None, None).as_deref(),
            Some("2024-05-03T14:22:01")
        );
        assert_eq!(format_time("0000:00:00 00:00:00", None, None), None);
        assert_eq!(format_time("    :  :     :  :  ", None, None), None);
        assert_eq!(
            format_time("2024:05:03 14:22:01", None, Some("bogus!")).as_deref(),
            Some("2024-05-03T14:22:01")
        );
    }

    #[test]
    fn no_exif_is_empty_metadata() {
        assert_eq!(read_metadata(b""), Metadata::default());
        assert_eq!(
            read_metadata(&[0xFF, 0xD8, 0xFF, 0xE1, 0, 4, b'E', b'x']),
            Metadata::default()
        );
    }
}
