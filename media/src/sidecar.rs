//! Capture time and place from outside the file: XMP sidecars (`IMG_1.jpg.xmp`, `IMG_1.xmp`),
//! Google Takeout JSON sidecars (`IMG_1.jpg.json`, `IMG_1.jpg.supplemental-metadata.json`),
//! dates in file names (`PXL_20230514_123456789.jpg`, `2023-05-14 12.34.56.jpg`,
//! `IMG-20230514-WA0001.jpg`…), and the order in which Tessera trusts them.
//!
//! Capture-time resolution order (first that is known wins):
//! 1. EXIF `DateTimeOriginal` (with `OffsetTimeOriginal` when the camera wrote one; else the
//!    local wall-clock time without an offset);
//! 2. QuickTime/MP4 metadata (Apple's `creationdate` with its offset, else `mvhd` in UTC);
//! 3. a sidecar: XMP (`exif:DateTimeOriginal`, `photoshop:DateCreated`, `xmp:CreateDate`) or
//!    Takeout's `photoTakenTime` (UTC);
//! 4. a date in the file name (local time, no offset);
//! 5. the file's modification time (as the client or the file system reports it).
//!
//! GPS: EXIF/QuickTime first, then the sidecar (Takeout's `geoData`, XMP `exif:GPS*`).

use quick_xml::events::Event;
use regex::Regex;
use std::sync::OnceLock;

/// What a sidecar says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sidecar {
    pub taken_at: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// Takeout: the user had starred it (Google Photos favorite).
    pub favorite: Option<bool>,
    /// Takeout's `title`: the file name the photo had in Google Photos.
    pub title: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("XMP sidecar is not well-formed XML: {0}")]
    Xml(String),
    #[error("JSON sidecar is not valid JSON: {0}")]
    Json(String),
    #[error("sidecar is neither XMP nor JSON")]
    Unknown,
}

/// Parses an XMP or Takeout JSON sidecar (told apart by content).
pub fn parse_sidecar(bytes: &[u8]) -> Result<Sidecar, SidecarError> {
    let head = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace() && *b != 0xEF && *b != 0xBB && *b != 0xBF);
    match head.map(|i| bytes[i]) {
        Some(b'{') => parse_takeout_json(bytes),
        Some(b'<') => parse_xmp(bytes),
        _ => Err(SidecarError::Unknown),
    }
}

/// Google Takeout's per-photo JSON.
pub fn parse_takeout_json(bytes: &[u8]) -> Result<Sidecar, SidecarError> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| SidecarError::Json(e.to_string()))?;
    let taken_at = ["photoTakenTime", "creationTime"].iter().find_map(|k| {
        let ts = &v[*k]["timestamp"];
        let secs = ts
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .or_else(|| ts.as_i64())?;
        // Takeout writes 0 for "unknown".
        (secs > 0).then(|| utc_iso(secs))?
    });
    let (mut lat, mut lon) = (None, None);
    for k in ["geoData", "geoDataExif"] {
        let (a, b) = (v[k]["latitude"].as_f64(), v[k]["longitude"].as_f64());
        if let (Some(a), Some(b)) = (a, b) {
            // 0, 0 is Takeout's "no location".
            if (a != 0.0 || b != 0.0) && a.abs() <= 90.0 && b.abs() <= 180.0 {
                lat = Some(a);
                lon = Some(b);
                break;
            }
        }
    }
    Ok(Sidecar {
        taken_at,
        lat,
        lon,
        favorite: v["favorited"].as_bool().filter(|f| *f),
        title: v["title"].as_str().map(str::to_owned),
    })
}

fn utc_iso(secs: i64) -> Option<String> {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string())
}

/// An XMP packet (sidecar or embedded): dates and GPS, as attributes or elements.
pub fn parse_xmp(bytes: &[u8]) -> Result<Sidecar, SidecarError> {
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let mut found: Vec<(String, String)> = Vec::new();
    let mut current: Option<String> = None;
    let mut buf = Vec::new();
    const WANTED: &[&str] = &[
        "exif:DateTimeOriginal",
        "photoshop:DateCreated",
        "xmp:CreateDate",
        "exif:GPSLatitude",
        "exif:GPSLongitude",
    ];
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                for a in e.attributes().flatten() {
                    let key = AsRef::<str>::as_ref(&a.key).to_owned();
                    if WANTED.contains(&key.as_str()) {
                        let val = a.value.to_string();
                        found.push((key, val));
                    }
                }
                let name = AsRef::<str>::as_ref(&e.name()).to_owned();
                current = WANTED.contains(&name.as_str()).then_some(name);
            }
            Ok(Event::Text(t)) => {
                if let Some(name) = current.take() {
                    let text = AsRef::<str>::as_ref(&t).trim().to_owned();
                    if !text.is_empty() {
                        found.push((name, text));
                    }
                }
            }
            Ok(Event::End(_)) => current = None,
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(SidecarError::Xml(e.to_string())),
        }
        buf.clear();
    }
    let get = |k: &str| found.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let taken_at = [
        "exif:DateTimeOriginal",
        "photoshop:DateCreated",
        "xmp:CreateDate",
    ]
    .iter()
    .find_map(|k| get(k).and_then(xmp_date));
    let lat = get("exif:GPSLatitude").and_then(xmp_gps);
    let lon = get("exif:GPSLongitude").and_then(xmp_gps);
    let (lat, lon) = match (lat, lon) {
        (Some(a), Some(b)) if a.abs() <= 90.0 && b.abs() <= 180.0 => (Some(a), Some(b)),
        _ => (None, None),
    };
    Ok(Sidecar {
        taken_at,
        lat,
        lon,
        ..Default::default()
    })
}

/// XMP dates: `YYYY-MM-DDThh:mm[:ss[.s]][Z|±hh:mm]` (a date alone is noon-less: kept as-is at
/// midnight).
fn xmp_date(s: &str) -> Option<String> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    let re = RE
        .get_or_init(|| {
            Regex::new(r"^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$")
                .ok()
        })
        .as_ref()?;
    let c = re.captures(s.trim())?;
    let g = |i: usize| c.get(i).map(|m| m.as_str());
    let date = format!("{}-{}-{}", g(1)?, g(2)?, g(3)?);
    valid_date(&date)?;
    let time = format!(
        "{}:{}:{}",
        g(4).unwrap_or("00"),
        g(5).unwrap_or("00"),
        g(6).unwrap_or("00")
    );
    let off = match g(7) {
        Some("Z") => "+00:00",
        Some(o) => o,
        None => "",
    };
    Some(format!("{date}T{time}{off}"))
}

/// XMP GPS: `DDD,MM.mmmmK` or `DDD,MM,SSK` with K in NSEW; or a plain decimal.
fn xmp_gps(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Ok(v) = s.parse::<f64>() {
        return Some(v);
    }
    // The hemisphere is the last *character*: splitting at `len - 1` bytes panics when it is
    // not ASCII (`1ñ`), so split at its char boundary.
    let hemi = s.chars().next_back()?;
    let body = &s[..s.len() - hemi.len_utf8()];
    let sign = match hemi {
        'N' | 'E' => 1.0,
        'S' | 'W' => -1.0,
        _ => return None,
    };
    let parts: Vec<f64> = body
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .ok()?;
    let v = match parts.as_slice() {
        [d, m] => d + m / 60.0,
        [d, m, sec] => d + m / 60.0 + sec / 3600.0,
        _ => return None,
    };
    Some(sign * v)
}

fn valid_date(date: &str) -> Option<()> {
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .ok()
        .filter(|d| (1900..=2100).contains(&chrono::Datelike::year(d)))
        .map(|_| ())
}

/// A capture time in a file name, as local wall-clock time without offset.
pub fn date_from_filename(name: &str) -> Option<String> {
    static RES: OnceLock<Vec<Regex>> = OnceLock::new();
    let res = RES.get_or_init(|| {
        [
            // IMG_20230514_123456, PXL_20230514_123456789, VID_…, MVIMG_…, 20230514_123456
            r"(?:^|[^0-9])((?:19|20)\d{2})(\d{2})(\d{2})[_-](\d{2})(\d{2})(\d{2})",
            // 2023-05-14 12.34.56, 2023-05-14_12-34-56, Screenshot_2023-05-14-12-34-56
            r"(?:^|[^0-9])((?:19|20)\d{2})-(\d{2})-(\d{2})[ _T-](\d{2})[.:-](\d{2})[.:-](\d{2})",
            // WhatsApp: IMG-20230514-WA0001 (date only)
            r"(?:^|[^0-9])((?:19|20)\d{2})(\d{2})(\d{2})-WA\d+",
        ]
        .iter()
        .filter_map(|p| Regex::new(p).ok())
        .collect()
    });
    for re in res {
        let Some(c) = re.captures(name) else { continue };
        let g = |i: usize| c.get(i).map(|m| m.as_str());
        let date = format!("{}-{}-{}", g(1)?, g(2)?, g(3)?);
        if valid_date(&date).is_none() {
            continue;
        }
        let (h, m, s) = (
            g(4).unwrap_or("00"),
            g(5).unwrap_or("00"),
            g(6).unwrap_or("00"),
        );
        let ok = h.parse::<u32>().ok()? < 24
            && m.parse::<u32>().ok()? < 60
            && s.parse::<u32>().ok()? < 60;
        if ok {
            return Some(format!("{date}T{h}:{m}:{s}"));
        }
    }
    None
}

/// Where a capture time came from (stored as the record's `taken_at_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    Exif,
    QuickTime,
    Sidecar,
    Filename,
    File,
}

impl TimeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exif => "exif",
            Self::QuickTime => "quicktime",
            Self::Sidecar => "sidecar",
            Self::Filename => "filename",
            Self::File => "file",
        }
    }
}

/// The candidates for one asset's capture time.
#[derive(Debug, Clone, Default)]
pub struct TimeCandidates<'a> {
    pub exif: Option<&'a str>,
    pub quicktime: Option<&'a str>,
    pub sidecar: Option<&'a str>,
    pub filename: Option<&'a str>,
    pub file_mtime: Option<&'a str>,
}

/// Applies the resolution order (module docs).
pub fn resolve_capture_time(c: &TimeCandidates<'_>) -> Option<(String, TimeSource)> {
    let from_name = c.filename.and_then(date_from_filename);
    [
        (c.exif.map(str::to_owned), TimeSource::Exif),
        (c.quicktime.map(str::to_owned), TimeSource::QuickTime),
        (c.sidecar.map(str::to_owned), TimeSource::Sidecar),
        (from_name, TimeSource::Filename),
        (c.file_mtime.map(str::to_owned), TimeSource::File),
    ]
    .into_iter()
    .find_map(|(t, s)| t.filter(|t| !t.is_empty()).map(|t| (t, s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A non-ASCII last character used to panic (`split_at` inside a UTF-8 sequence).
    #[test]
    fn gps_with_non_ascii_hemisphere_is_no_gps_not_a_panic() {
        assert_eq!(xmp_gps("1ñ"), None);
        assert_eq!(xmp_gps("ñ"), None);
        assert_eq!(xmp_gps("52,31.2€"), None);
        assert!(xmp_gps("52,31.2N").is_some_and(|v| (v - 52.52).abs() < 1e-9));
        let xmp = r#"<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description exif:GPSLatitude="1ñ" exif:GPSLongitude="13,24.6Ö"/></rdf:RDF></x:xmpmeta>"#;
        let s = parse_xmp(xmp.as_bytes()).unwrap();
        assert_eq!((s.lat, s.lon), (None, None));
    }

    #[test]
    fn takeout_json() {
        let j = br#"{"title":"IMG_1.jpg","photoTakenTime":{"timestamp":"1684067696","formatted":"-"},
            "geoData":{"latitude":0.0,"longitude":0.0},"geoDataExif":{"latitude":50.0875,"longitude":14.4213},"favorited":true}"#;
        let s = parse_sidecar(j).unwrap();
        assert_eq!(s.taken_at.as_deref(), Some("2023-05-14T12:34:56+00:00"));
        assert_eq!((s.lat, s.lon), (Some(50.0875), Some(14.4213)));
        assert_eq!(s.favorite, Some(true));
        assert_eq!(s.title.as_deref(), Some("IMG_1.jpg"));
        let none = parse_sidecar(br#"{"photoTakenTime":{"timestamp":"0"}}"#).unwrap();
        assert_eq!(none, Sidecar::default());
        assert!(matches!(
            parse_sidecar(b"{ nope"),
            Err(SidecarError::Json(_))
        ));
    }

    #[test]
    fn xmp_attributes_and_elements() {
        let attr = br#"<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
          <rdf:Description exif:DateTimeOriginal="2021-07-04T18:30:12.50+02:00" exif:GPSLatitude="48,51.4000N" exif:GPSLongitude="2,21,3.6E"/>
          </rdf:RDF></x:xmpmeta>"#;
        let s = parse_sidecar(attr).unwrap();
        assert_eq!(s.taken_at.as_deref(), Some("2021-07-04T18:30:12+02:00"));
        assert!((s.lat.unwrap() - 48.856_666).abs() < 1e-5);
        assert!((s.lon.unwrap() - 2.351).abs() < 1e-5);
        let elem = br#"<?xml version="1.0"?><x:xmpmeta><rdf:RDF><rdf:Description>
            <xmp:CreateDate>2019-01-02T03:04Z</xmp:CreateDate>
            <exif:GPSLatitude>33,52.0S</exif:GPSLatitude></rdf:Description></rdf:RDF></x:xmpmeta>"#;
        let s = parse_sidecar(elem).unwrap();
        assert_eq!(s.taken_at.as_deref(), Some("2019-01-02T03:04:00+00:00"));
        // A latitude without a longitude is no position.
        assert_eq!((s.lat, s.lon), (None, None));
        assert!(parse_sidecar(b"<a><b></a>").is_err());
        assert!(matches!(
            parse_sidecar(b"GIF89a"),
            Err(SidecarError::Unknown)
        ));
    }

    #[test]
    fn filename_dates() {
        let cases = [
            ("PXL_20230514_123456789.jpg", Some("2023-05-14T12:34:56")),
            ("IMG_20191231_235959.HEIC", Some("2019-12-31T23:59:59")),
            ("VID_20200101_000001.mp4", Some("2020-01-01T00:00:01")),
            ("2023-05-14 12.34.56.jpg", Some("2023-05-14T12:34:56")),
            (
                "Screenshot_2022-02-03-04-05-06.png",
                Some("2022-02-03T04:05:06"),
            ),
            ("IMG-20230514-WA0001.jpg", Some("2023-05-14T00:00:00")),
            ("IMG_1234.JPG", None),
            ("20231340_123456.jpg", None),
            ("IMG_20230514_256060.jpg", None),
        ];
        for (name, want) in cases {
            assert_eq!(date_from_filename(name).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn resolution_order() {
        let all = TimeCandidates {
            exif: Some("2020-01-01T10:00:00+01:00"),
            quicktime: Some("2020-01-02T00:00:00+00:00"),
            sidecar: Some("2020-01-03T00:00:00+00:00"),
            filename: Some("IMG_20200104_000000.jpg"),
            file_mtime: Some("2020-01-05T00:00:00+00:00"),
        };
        let mut c = all.clone();
        let mut seen = Vec::new();
        while let Some((t, s)) = resolve_capture_time(&c) {
            seen.push((t, s));
            match s {
                TimeSource::Exif => c.exif = None,
                TimeSource::QuickTime => c.quicktime = None,
                TimeSource::Sidecar => c.sidecar = None,
                TimeSource::Filename => c.filename = None,
                TimeSource::File => c.file_mtime = None,
            }
        }
        let order: Vec<_> = seen.iter().map(|(_, s)| *s).collect();
        assert_eq!(
            order,
            [
                TimeSource::Exif,
                TimeSource::QuickTime,
                TimeSource::Sidecar,
                TimeSource::Filename,
                TimeSource::File
            ]
        );
        assert_eq!(seen[3].0, "2020-01-04T00:00:00");
    }
}
