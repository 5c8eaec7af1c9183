//! Motion photos: a still (JPEG or HEIC) with a short MP4 appended (Google "Motion Photo" /
//! "MicroVideo", Samsung "Motion Photo").

use std::ops::Range;

/// Where the embedded MP4 of a motion photo is, validated (it starts with an `ftyp` box and its
/// boxes fit in the file). Looks, in order, at XMP `GCamera:MicroVideoOffset` (bytes from the
/// end of the file), the XMP `Container:Directory` item with `Semantic="MotionPhoto"` and its
/// `Length`, Samsung's `MotionPhoto_Data` marker, and an `ftyp` box right after the JPEG's EOI.
pub fn motion_photo_video(bytes: &[u8]) -> Option<Range<usize>> {
    let len = bytes.len();
    let xmp = xmp_packet(bytes);
    let from_end = |n: usize| (n > 0 && n < len).then(|| len - n);
    let candidates = [
        xmp.and_then(|x| attr_number(x, "GCamera:MicroVideoOffset"))
            .and_then(from_end),
        xmp.and_then(container_motion_length).and_then(from_end),
        find(bytes, b"MotionPhoto_Data").map(|i| i + b"MotionPhoto_Data".len()),
        jpeg_end(bytes),
    ];
    candidates
        .into_iter()
        .flatten()
        .find_map(|start| mp4_extent(bytes, start))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    // SIMD substring search: this runs over every still the node ingests.
    memchr::memmem::find(hay, needle)
}

/// The XMP packet text (first `<x:xmpmeta` … `</x:xmpmeta>`), searched in the file's head
/// (JPEG APP1 or HEIF `mime` item; both sit before the image data in practice).
fn xmp_packet(bytes: &[u8]) -> Option<&str> {
    let head = &bytes[..bytes.len().min(1 << 20)];
    let start = find(head, b"<x:xmpmeta")?;
    let end = find(&head[start..], b"</x:xmpmeta>")? + start + b"</x:xmpmeta>".len();
    std::str::from_utf8(&head[start..end]).ok()
}

/// `name="123"` (attribute form) or `<name>123</name>` (element form).
fn attr_number(xmp: &str, name: &str) -> Option<usize> {
    let value = if let Some(i) = xmp.find(&format!("{name}=\"")) {
        let rest = &xmp[i + name.len() + 2..];
        &rest[..rest.find('"')?]
    } else {
        let open = format!("<{name}>");
        let i = xmp.find(&open)? + open.len();
        let rest = &xmp[i..];
        &rest[..rest.find('<')?]
    };
    value.trim().parse().ok()
}

/// `Length` of the `Container:Item` whose `Semantic` is `MotionPhoto`.
fn container_motion_length(xmp: &str) -> Option<usize> {
    let mut rest = xmp;
    while let Some(i) = rest.find("Container:Item") {
        rest = &rest[i + "Container:Item".len()..];
        let item = &rest[..rest.find('>').unwrap_or(rest.len())];
        if item.contains("Semantic=\"MotionPhoto\"") {
            return ["Item:Length", "GContainerItem:Length"]
                .iter()
                .find_map(|n| attr_number(item, n));
        }
    }
    None
}

/// End of a JPEG (just past the EOI that follows the entropy-coded data), by walking segments.
fn jpeg_end(b: &[u8]) -> Option<usize> {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut i = 2;
    loop {
        while b.get(i) == Some(&0xFF) && b.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        if b.get(i) != Some(&0xFF) {
            return None;
        }
        let marker = *b.get(i + 1)?;
        match marker {
            0xD9 => return Some(i + 2),
            0x01 | 0xD0..=0xD7 => i += 2,
            _ => {
                let seg = usize::from(u16::from_be_bytes([*b.get(i + 2)?, *b.get(i + 3)?]));
                i += 2 + seg;
                if marker == 0xDA {
                    // Entropy-coded data: skip to the next marker that is not a stuffed byte
                    // or a restart marker.
                    loop {
                        let j = i + memchr::memchr(0xFF, b.get(i..)?)?;
                        match *b.get(j + 1)? {
                            0x00 | 0xD0..=0xD7 | 0xFF => i = j + 1,
                            _ => {
                                i = j;
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// If an MP4 starts at `start` (an `ftyp` box), the range its top-level boxes cover.
fn mp4_extent(b: &[u8], start: usize) -> Option<Range<usize>> {
    if b.get(start.checked_add(4)?..start.checked_add(8)?)? != b"ftyp" {
        return None;
    }
    let mut off = start;
    let mut saw_moov = false;
    while off.checked_add(8).is_some_and(|e| e <= b.len()) {
        let size = u32::from_be_bytes(b.get(off..off + 4)?.try_into().ok()?) as u64;
        let kind = b.get(off + 4..off + 8)?;
        if !kind
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b' ' || *c == 0xA9)
        {
            break;
        }
        let size = match size {
            0 => (b.len() - off) as u64,
            1 => u64::from_be_bytes(b.get(off + 8..off + 16)?.try_into().ok()?),
            s => s,
        };
        let Ok(size) = usize::try_from(size) else {
            break;
        };
        // Checked: a crafted 64-bit size must not wrap `off` back (an endless loop).
        let Some(end) = off.checked_add(size) else {
            break;
        };
        if size < 8 || end > b.len() {
            break;
        }
        saw_moov |= kind == b"moov";
        off = end;
    }
    (saw_moov && off > start).then_some(start..off)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JPEG with an "MP4" appended whose second box has a 64-bit size that wraps `off`
    /// (before checked arithmetic: an endless loop that wedged the media queue).
    #[test]
    fn wrapping_box_sizes_end_the_walk() {
        for delta in 0..32u64 {
            let mut b = vec![0xFF, 0xD8, 0xFF, 0xD9];
            let start = b.len();
            b.extend_from_slice(&16u32.to_be_bytes());
            b.extend_from_slice(b"ftypisom\0\0\0\0");
            b.extend_from_slice(&1u32.to_be_bytes());
            b.extend_from_slice(b"moov");
            let wrap = u64::MAX - delta;
            b.extend_from_slice(&wrap.to_be_bytes());
            b.extend_from_slice(&[0u8; 32]);
            assert_eq!(motion_photo_video(&b), None);
            assert_eq!(mp4_extent(&b, start), None);
            assert_eq!(mp4_extent(&b, usize::MAX - 2), None);
        }
    }

    #[test]
    fn no_video_in_plain_or_garbage_files() {
        assert_eq!(motion_photo_video(b""), None);
        assert_eq!(motion_photo_video(b"\xFF\xD8\xFF\xD9"), None);
        assert_eq!(motion_photo_video(b"MotionPhoto_Data\0\0\0\x08ftyp"), None);
        assert_eq!(
            attr_number(
                r#"<a GCamera:MicroVideoOffset="42"/>"#,
                "GCamera:MicroVideoOffset"
            ),
            Some(42)
        );
        assert_eq!(
            attr_number(
                "<GCamera:MicroVideoOffset>7</GCamera:MicroVideoOffset>",
                "GCamera:MicroVideoOffset"
            ),
            Some(7)
        );
    }
}
