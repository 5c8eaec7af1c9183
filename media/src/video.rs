//! Video: metadata from the MP4/QuickTime box structure, poster frames from `ffmpeg`.
//!
//! The metadata parser is a small ISO-BMFF/QuickTime walker of our own (no crate): it reads
//! only the `moov` box (a file reader seeks over `mdat`), and covers what phones write —
//! `mvhd`/`tkhd`/`mdhd` (duration, matrix, dimensions), `stsd` (codec fourcc), QuickTime
//! `mdta` keys (`com.apple.quicktime.creationdate`, `…location.ISO6709`, make, model, Live
//! Photo content identifier), `udta` atoms (`©xyz`, `©day`, `©mak`, `©mod`, 3GPP `loci`).
//! Crates we looked at either lack the codec and display matrix (nom-exif) or the Apple keys
//! (mp4), and both want the whole file or a reader; this is bytes in, struct out, no panics.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{make_derivatives, Derivatives, MediaError};

/// What Tessera keeps from a video's container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VideoMeta {
    /// Seconds.
    pub duration: Option<f64>,
    /// Displayed dimensions (after the track matrix's rotation).
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Clockwise rotation the player applies for display: 0, 90, 180 or 270.
    pub rotation: u32,
    /// `h264`, `hevc`, `prores`, `av1`, `vp9`, `mpeg4`, `mjpeg`, or the sample entry fourcc.
    pub codec: Option<String>,
    /// `YYYY-MM-DDTHH:MM:SS[+hh:mm]`: local time with offset when the file records one (Apple's
    /// `com.apple.quicktime.creationdate`), else the UTC `mvhd` creation time with `+00:00`.
    pub taken_at: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub altitude: Option<f64>,
    pub make: Option<String>,
    pub model: Option<String>,
    /// Apple's `com.apple.quicktime.content.identifier` (pairs a Live Photo's MOV and HEIC).
    pub content_identifier: Option<String>,
}

fn bad(reason: impl Into<String>) -> MediaError {
    MediaError::Decode {
        format: "video",
        reason: reason.into(),
    }
}

/// Box header at `off` within `buf`: (type, header length, total size).
pub(crate) fn box_at(buf: &[u8], off: usize) -> Option<([u8; 4], usize, usize)> {
    let h = buf.get(off..off + 8)?;
    let size32 = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as u64;
    let kind = [h[4], h[5], h[6], h[7]];
    let (hdr, size) = match size32 {
        0 => (8, (buf.len() - off) as u64),
        1 => {
            let l = buf.get(off + 8..off + 16)?;
            (16, u64::from_be_bytes(l.try_into().ok()?))
        }
        s => (8, s),
    };
    let size = usize::try_from(size).ok()?;
    if size < hdr || off.checked_add(size)? > buf.len() {
        return None;
    }
    Some((kind, hdr, size))
}

/// Iterates the child boxes of `buf` (type, payload).
pub(crate) fn children(buf: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        let (kind, hdr, size) = box_at(buf, off)?;
        let payload = &buf[off + hdr..off + size];
        off += size;
        Some((kind, payload))
    })
}

pub(crate) fn child<'a>(buf: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    children(buf).find(|(k, _)| k == kind).map(|(_, p)| p)
}

pub(crate) fn be_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
pub(crate) fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn be_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Top-level brands a video starts with (QuickTime files may start with `wide`/`mdat`/`moov`).
fn is_video_container(bytes: &[u8]) -> bool {
    matches!(
        bytes.get(4..8),
        Some(b"ftyp" | b"moov" | b"mdat" | b"wide" | b"free" | b"skip" | b"pnot")
    )
}

/// Reads a video's metadata from its bytes (all of them, or at least every byte up to the end
/// of `moov`).
pub fn probe_video(bytes: &[u8]) -> Result<VideoMeta, MediaError> {
    if bytes.is_empty() {
        return Err(MediaError::Empty);
    }
    if !is_video_container(bytes) {
        return Err(MediaError::Unsupported(
            "video that is not MP4/QuickTime (metadata)".into(),
        ));
    }
    let mut off = 0;
    while off < bytes.len() {
        let Some((kind, hdr, size)) = box_at(bytes, off) else {
            break;
        };
        if &kind == b"moov" {
            return parse_moov(&bytes[off + hdr..off + size]);
        }
        // box_at checked `off + size <= len`, and size >= 8: always progresses.
        off += size;
    }
    Err(bad(
        "no complete moov box (truncated, or not an MP4/QuickTime file)",
    ))
}

/// Like [`probe_video`], reading only the `moov` box from the file (seeking over media data).
pub fn probe_video_file(path: &Path) -> Result<VideoMeta, MediaError> {
    const MAX_MOOV: u64 = 256 * 1024 * 1024;
    let io = |e: std::io::Error| bad(format!("{}: {e}", path.display()));
    let mut f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    if len == 0 {
        return Err(MediaError::Empty);
    }
    let mut pos = 0u64;
    let mut first = true;
    while pos + 8 <= len {
        f.seek(SeekFrom::Start(pos)).map_err(io)?;
        let mut h = [0u8; 16];
        let n = f.read(&mut h).map_err(io)?;
        if n < 8 {
            break;
        }
        if first && !is_video_container(&h) {
            return Err(MediaError::Unsupported(
                "video that is not MP4/QuickTime (metadata)".into(),
            ));
        }
        first = false;
        let size32 = u64::from(u32::from_be_bytes([h[0], h[1], h[2], h[3]]));
        let (hdr, size) = match size32 {
            0 => (8, len - pos),
            1 if n >= 16 => (
                16,
                u64::from_be_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]),
            ),
            s => (8, s),
        };
        // Checked: a crafted 64-bit size must not wrap `pos` back to the start (a hang).
        let Some(end) = pos.checked_add(size) else {
            break;
        };
        if size < hdr || end > len {
            break;
        }
        if &h[4..8] == b"moov" {
            if size > MAX_MOOV {
                return Err(bad(format!("moov box of {size} bytes is too large")));
            }
            let mut moov = vec![0u8; (size - hdr) as usize];
            f.seek(SeekFrom::Start(pos + hdr)).map_err(io)?;
            f.read_exact(&mut moov).map_err(io)?;
            return parse_moov(&moov);
        }
        pos = end;
    }
    Err(bad(
        "no complete moov box (truncated, or not an MP4/QuickTime file)",
    ))
}

fn parse_moov(moov: &[u8]) -> Result<VideoMeta, MediaError> {
    let mut m = VideoMeta::default();
    let mvhd = child(moov, b"mvhd").ok_or_else(|| bad("moov has no mvhd"))?;
    let (created, timescale, duration) = match mvhd.first() {
        Some(1) => (be_u64(mvhd, 4), be_u32(mvhd, 20), be_u64(mvhd, 24)),
        _ => (
            be_u32(mvhd, 4).map(u64::from),
            be_u32(mvhd, 12),
            be_u32(mvhd, 16).map(u64::from),
        ),
    };
    if let (Some(ts), Some(d)) = (timescale, duration) {
        if ts > 0 && d > 0 && d != u64::from(u32::MAX) && d != u64::MAX {
            m.duration = Some(d as f64 / f64::from(ts));
        }
    }

    for (kind, trak) in children(moov) {
        if &kind != b"trak" {
            continue;
        }
        let Some(mdia) = child(trak, b"mdia") else {
            continue;
        };
        let handler = child(mdia, b"hdlr").and_then(|h| h.get(8..12));
        if handler != Some(b"vide") {
            continue;
        }
        let stsd = child(mdia, b"minf")
            .and_then(|x| child(x, b"stbl"))
            .and_then(|x| child(x, b"stsd"));
        let mut coded = None;
        if let Some(entry) = stsd.and_then(|s| s.get(8..)) {
            if let Some((fourcc, _, _)) = box_at(entry, 0) {
                m.codec = Some(codec_name(&fourcc));
                // VisualSampleEntry: 8 header, 6 reserved, 2 dref, 16 pre-defined, w, h.
                if let (Some(w), Some(h)) = (be_u16(entry, 32), be_u16(entry, 34)) {
                    coded = Some((u32::from(w), u32::from(h)));
                }
            }
        }
        if m.duration.is_none() {
            if let Some(mdhd) = child(mdia, b"mdhd") {
                let (ts, d) = match mdhd.first() {
                    Some(1) => (be_u32(mdhd, 20), be_u64(mdhd, 24)),
                    _ => (be_u32(mdhd, 12), be_u32(mdhd, 16).map(u64::from)),
                };
                if let (Some(ts), Some(d)) = (ts, d) {
                    if ts > 0 {
                        m.duration = Some(d as f64 / f64::from(ts));
                    }
                }
            }
        }
        let mut dims = coded;
        if let Some(tkhd) = child(trak, b"tkhd") {
            let base = if tkhd.first() == Some(&1) {
                4 + 32
            } else {
                4 + 20
            };
            // reserved 8, layer 2, alternate group 2, volume 2, reserved 2, matrix 36, w, h.
            let mat = base + 16;
            let v = |i: usize| be_i32(tkhd, mat + 4 * i);
            if let (Some(a), Some(b), Some(c), Some(d)) = (v(0), v(1), v(3), v(4)) {
                m.rotation = rotation_of(a, b, c, d);
            }
            if let (Some(w), Some(h)) = (be_u32(tkhd, mat + 36), be_u32(tkhd, mat + 40)) {
                let (w, h) = (w >> 16, h >> 16);
                if w > 0 && h > 0 {
                    dims = Some((w, h));
                }
            }
        }
        if let Some((w, h)) = dims {
            let (w, h) = if m.rotation % 180 == 90 {
                (h, w)
            } else {
                (w, h)
            };
            m.width = Some(w);
            m.height = Some(h);
        }
        break;
    }

    // QuickTime metadata (mdta keys), in moov/meta or moov/udta/meta.
    let metas = child(moov, b"meta")
        .into_iter()
        .chain(child(moov, b"udta").and_then(|u| child(u, b"meta")));
    for meta in metas {
        // ISO meta is a full box (4 bytes version/flags); QuickTime's is not.
        let meta = if meta.get(4..8) == Some(b"hdlr") {
            meta
        } else {
            meta.get(4..).unwrap_or_default()
        };
        read_mdta(meta, &mut m);
    }
    if let Some(udta) = child(moov, b"udta") {
        for (kind, p) in children(udta) {
            match &kind {
                b"\xa9xyz" if m.lat.is_none() => {
                    if let Some(s) = qt_string(p) {
                        set_iso6709(&mut m, &s);
                    }
                }
                b"\xa9day" if m.taken_at.is_none() => {
                    m.taken_at = qt_string(p).and_then(|s| iso_time(&s));
                }
                b"\xa9mak" if m.make.is_none() => m.make = qt_string(p),
                b"\xa9mod" if m.model.is_none() => m.model = qt_string(p),
                b"loci" if m.lat.is_none() => read_loci(p, &mut m),
                _ => {}
            }
        }
    }
    if m.taken_at.is_none() {
        // Seconds since 1904-01-01 UTC; 0 means unset.
        const EPOCH_1904_TO_1970: u64 = 2_082_844_800;
        if let Some(t) = created.filter(|&t| t > EPOCH_1904_TO_1970) {
            m.taken_at = Some(utc_string(t - EPOCH_1904_TO_1970));
        }
    }
    Ok(m)
}

fn codec_name(fourcc: &[u8; 4]) -> String {
    match fourcc {
        b"avc1" | b"avc3" => "h264".into(),
        b"hvc1" | b"hev1" => "hevc".into(),
        b"apch" | b"apcn" | b"apcs" | b"apco" | b"ap4h" | b"ap4x" => "prores".into(),
        b"av01" => "av1".into(),
        b"vp09" => "vp9".into(),
        b"vp08" => "vp8".into(),
        b"mp4v" => "mpeg4".into(),
        b"jpeg" | b"mjpa" | b"mjpb" => "mjpeg".into(),
        b"s263" | b"h263" => "h263".into(),
        other => String::from_utf8_lossy(other).trim().to_owned(),
    }
}

/// Clockwise display rotation from the tkhd matrix (16.16 fixed point a, b, c, d).
fn rotation_of(a: i32, b: i32, c: i32, d: i32) -> u32 {
    const ONE: i32 = 0x1_0000;
    match (a, b, c, d) {
        (0, ONE, x, 0) if x == -ONE => 90,
        (x, 0, 0, y) if x == -ONE && y == -ONE => 180,
        (0, x, ONE, 0) if x == -ONE => 270,
        _ => 0,
    }
}

/// `mdta` keys + `ilst` values (QuickTime metadata).
fn read_mdta(meta: &[u8], m: &mut VideoMeta) {
    let Some(keys) = child(meta, b"keys") else {
        return;
    };
    let Some(ilst) = child(meta, b"ilst") else {
        return;
    };
    // keys: version/flags, count, then boxes of (size, namespace, name).
    let names: Vec<String> = keys
        .get(8..)
        .map(|k| {
            children(k)
                .map(|(_, name)| String::from_utf8_lossy(name).into_owned())
                .collect()
        })
        .unwrap_or_default();
    for (index, item) in children(ilst) {
        let i = u32::from_be_bytes(index) as usize;
        let Some(name) = i.checked_sub(1).and_then(|i| names.get(i)) else {
            continue;
        };
        // data box: type indicator (4), locale (4), value. Text types only (UTF-8 = 1).
        let Some(data) = child(item, b"data") else {
            continue;
        };
        if be_u32(data, 0).map(|t| t & 0xFF_FFFF) != Some(1) {
            continue;
        }
        let Some(value) = data
            .get(8..)
            .map(|v| {
                String::from_utf8_lossy(v)
                    .trim_matches('\0')
                    .trim()
                    .to_owned()
            })
            .filter(|v| !v.is_empty())
        else {
            continue;
        };
        match name.as_str() {
            "com.apple.quicktime.creationdate" => {
                if let Some(t) = iso_time(&value) {
                    m.taken_at = Some(t);
                }
            }
            "com.apple.quicktime.location.ISO6709" => set_iso6709(m, &value),
            "com.apple.quicktime.make" | "com.android.manufacturer" => m.make = Some(value),
            "com.apple.quicktime.model" | "com.android.model" => m.model = Some(value),
            "com.apple.quicktime.content.identifier" => m.content_identifier = Some(value),
            _ => {}
        }
    }
}

/// QuickTime user-data text: 16-bit length, 16-bit language, text.
fn qt_string(p: &[u8]) -> Option<String> {
    let len = usize::from(be_u16(p, 0)?);
    let s = p.get(4..4 + len).or_else(|| p.get(4..))?;
    let s = String::from_utf8_lossy(s)
        .trim_matches('\0')
        .trim()
        .to_owned();
    (!s.is_empty()).then_some(s)
}

/// 3GPP `loci`: full box, language, name (NUL-terminated), role, lon, lat, alt (16.16).
fn read_loci(p: &[u8], m: &mut VideoMeta) {
    let Some(rest) = p.get(6..) else { return };
    let Some(nul) = rest.iter().position(|&b| b == 0) else {
        return;
    };
    let at = 6 + nul + 1 + 1;
    let fixed = |i: usize| be_i32(p, at + 4 * i).map(|v| f64::from(v) / 65536.0);
    if let (Some(lon), Some(lat)) = (fixed(0), fixed(1)) {
        if lat.abs() <= 90.0 && lon.abs() <= 180.0 && !(lat == 0.0 && lon == 0.0) {
            m.lat = Some(lat);
            m.lon = Some(lon);
            m.altitude = fixed(2);
        }
    }
}

/// ISO 6709 `±DD.DDDD±DDD.DDDD[±AAA.AAA][CRS]/`.
fn set_iso6709(m: &mut VideoMeta, s: &str) {
    let mut nums = Vec::new();
    let mut cur = String::new();
    for c in s.chars() {
        if c == '+' || c == '-' {
            if !cur.is_empty() {
                nums.push(std::mem::take(&mut cur));
            }
            cur.push(c);
        } else if c.is_ascii_digit() || c == '.' {
            cur.push(c);
        } else {
            break;
        }
    }
    if !cur.is_empty() {
        nums.push(cur);
    }
    let parsed: Vec<f64> = nums.iter().map_while(|n| n.parse().ok()).collect();
    if let [lat, lon, rest @ ..] = parsed.as_slice() {
        if lat.abs() <= 90.0 && lon.abs() <= 180.0 && !(*lat == 0.0 && *lon == 0.0) {
            m.lat = Some(*lat);
            m.lon = Some(*lon);
            m.altitude = rest.first().copied();
        }
    }
}

/// `2024-06-01T09:15:00+0200` / `…+02:00` / `…Z` / `2024-06-01T09:15:00.123456Z` →
/// `2024-06-01T09:15:00+02:00` (`Z` → `+00:00`; no zone → local time without offset).
fn iso_time(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if !(digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b[10] == b'T' || b[10] == b' ')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19))
    {
        return None;
    }
    let mut out = format!("{}T{}", &s[..10], &s[11..19]);
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    if rest.starts_with('Z') {
        out.push_str("+00:00");
    } else if let Some(sign) = rest.chars().next().filter(|c| *c == '+' || *c == '-') {
        let d: String = rest[1..].chars().filter(char::is_ascii_digit).collect();
        if d.len() == 4 {
            out.push_str(&format!("{sign}{}:{}", &d[..2], &d[2..]));
        } else if d.len() == 2 {
            out.push_str(&format!("{sign}{d}:00"));
        }
    }
    Some(out)
}

/// Unix seconds → `YYYY-MM-DDTHH:MM:SS+00:00`.
fn utc_string(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Where to take the poster frame: 10% into the clip, at most 1 s.
fn poster_time(duration: Option<f64>) -> f64 {
    match duration {
        Some(d) if d.is_finite() && d > 0.0 => (d * 0.1).min(1.0),
        _ => 0.0,
    }
}

/// One frame of the video as a JPEG, made by the `ffmpeg` program (which applies the display
/// rotation itself: derive from it with orientation `None`). Kills ffmpeg after `timeout`.
pub fn poster_frame(path: &Path, timeout: Duration) -> Result<Vec<u8>, MediaError> {
    let meta = probe_video_file(path).ok();
    let at = poster_time(meta.and_then(|m| m.duration));
    let started = Instant::now();
    let frame = run_ffmpeg(path, at, timeout)?;
    if !frame.is_empty() || at == 0.0 {
        return if frame.is_empty() {
            Err(MediaError::Ffmpeg(format!(
                "{}: ffmpeg produced no frame",
                path.display()
            )))
        } else {
            Ok(frame)
        };
    }
    // Seeking past the last frame (a wrong duration) yields nothing: take the first frame.
    let left = timeout.saturating_sub(started.elapsed());
    let frame = run_ffmpeg(path, 0.0, left)?;
    if frame.is_empty() {
        return Err(MediaError::Ffmpeg(format!(
            "{}: ffmpeg produced no frame",
            path.display()
        )));
    }
    Ok(frame)
}

fn run_ffmpeg(path: &Path, at: f64, timeout: Duration) -> Result<Vec<u8>, MediaError> {
    let mut child = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error"])
        .args(["-ss", &format!("{at:.3}")])
        // Only local files: a hostile container (HLS, concat, …) cannot make ffmpeg open network
        // or other protocols; the input is named with `file:` so no path reads as a protocol.
        .args(["-protocol_whitelist", "file"])
        .arg("-i")
        .arg({
            let mut p = std::ffi::OsString::from("file:");
            p.push(path.as_os_str());
            p
        })
        .args([
            "-an", "-sn", "-dn", "-frames:v", "1", "-f", "image2pipe", "-c:v", "mjpeg", "-q:v",
            "2", "-",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                MediaError::Ffmpeg(
                    "ffmpeg not found: install ffmpeg (apt-get install ffmpeg) to get video thumbnails"
                        .into(),
                )
            } else {
                MediaError::Ffmpeg(format!("cannot start ffmpeg: {e}"))
            }
        })?;
    // Drain both pipes while waiting, so a chatty ffmpeg never blocks on a full pipe.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = out.join();
                let _ = err.join();
                return Err(MediaError::Timeout {
                    tool: "ffmpeg",
                    secs: timeout.as_secs_f64(),
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(MediaError::Ffmpeg(format!("waiting for ffmpeg: {e}"))),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        let text = String::from_utf8_lossy(&stderr);
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(MediaError::Ffmpeg(format!(
            "{} ({status}): {}",
            path.display(),
            tail.join(" | ")
        )));
    }
    Ok(stdout)
}

/// Metadata, then a poster frame through ffmpeg, then thumbnail/preview/thumbhash from it.
/// The derivatives' width/height are the video's displayed dimensions when the container
/// records them. Containers other than MP4/QuickTime (MKV, WebM, AVI, MTS) get an empty
/// `VideoMeta` and the poster frame's dimensions.
pub fn video_derivatives(
    path: &Path,
    timeout: Duration,
) -> Result<(VideoMeta, Derivatives), MediaError> {
    // Matroska/WebM/AVI/MPEG-TS: no box metadata, but ffmpeg still makes the poster frame.
    let meta = match probe_video_file(path) {
        Err(MediaError::Unsupported(_)) => VideoMeta::default(),
        other => other?,
    };
    let frame = poster_frame(path, timeout)?;
    let mut d = make_derivatives(&frame, "image/jpeg", None)?;
    if let (Some(w), Some(h)) = (meta.width, meta.height) {
        d.width = w;
        d.height = h;
    }
    Ok((meta, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ftyp` then a box whose 64-bit size makes `pos + size` wrap to 0 (found by reading the
    /// walker; before checked arithmetic it looped forever at 100% CPU).
    fn wrapping_mp4() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&16u32.to_be_bytes());
        b.extend_from_slice(b"ftypisom\0\0\0\0");
        b.extend_from_slice(&1u32.to_be_bytes());
        b.extend_from_slice(b"free");
        b.extend_from_slice(&(u64::MAX - 15).to_be_bytes());
        b.extend_from_slice(&[0u8; 64]);
        b
    }

    #[test]
    fn wrapping_box_sizes_end_the_walk() {
        let b = wrapping_mp4();
        assert!(probe_video(&b).is_err());
        let dir = std::env::temp_dir().join(format!("tessera-wrap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("wrap.mp4");
        std::fs::write(&p, &b).unwrap();
        let started = Instant::now();
        let e = probe_video_file(&p).unwrap_err();
        assert!(e.to_string().contains("moov"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // Every largesize near the wrap point, and a moov claiming the whole address space.
        for delta in 0..32u64 {
            let mut b = wrapping_mp4();
            b[24..32].copy_from_slice(&(u64::MAX - delta).to_be_bytes());
            std::fs::write(&p, &b).unwrap();
            assert!(probe_video_file(&p).is_err());
            assert!(probe_video(&b).is_err());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn parses_times_and_places() {
        assert_eq!(
            iso_time("2024-06-01T09:15:00+0200").as_deref(),
            Some("2024-06-01T09:15:00+02:00")
        );
        assert_eq!(
            iso_time("2024-05-03T12:34:56.000000Z").as_deref(),
            Some("2024-05-03T12:34:56+00:00")
        );
        assert_eq!(
            iso_time("2024-05-03 12:34:56").as_deref(),
            Some("2024-05-03T12:34:56")
        );
        assert_eq!(iso_time("yesterday"), None);
        assert_eq!(utc_string(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(utc_string(1_714_739_696), "2024-05-03T12:34:56+00:00");
        let mut m = VideoMeta::default();
        set_iso6709(&mut m, "+40.6892-074.0445+010.000/");
        assert_eq!(
            (m.lat, m.lon, m.altitude),
            (Some(40.6892), Some(-74.0445), Some(10.0))
        );
        assert_eq!(rotation_of(0, 0x10000, -0x10000, 0), 90);
        assert_eq!(rotation_of(0x10000, 0, 0, 0x10000), 0);
        assert_eq!(poster_time(Some(0.5)), 0.05);
        assert_eq!(poster_time(Some(60.0)), 1.0);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(probe_video(b""), Err(MediaError::Empty)));
        assert!(probe_video(b"\0\0\0\x10ftypisom\0\0\0\0\xff\xff\xff\xffmoov").is_err());
        assert!(probe_video(b"not a video at all").is_err());
        // A moov whose children lie about their sizes.
        let mut v = b"\0\0\0\x08ftyp".to_vec();
        v.extend_from_slice(b"\0\0\0\x18moov\0\0\x10\0mvhd\0\0\0\0\0\0\0\0");
        assert!(probe_video(&v).is_err());
    }
}
