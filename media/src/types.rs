//! Media types: what Tessera accepts (Immich's list) and content sniffing.

/// Image extensions Immich accepts (`GET /api/server/media-types`).
pub const IMAGE_EXTENSIONS: &[&str] = &[
    ".3fr", ".ari", ".arw", ".avif", ".bmp", ".cap", ".cin", ".cr2", ".cr3", ".crw", ".dcr",
    ".dng", ".erf", ".fff", ".gif", ".heic", ".heif", ".hif", ".iiq", ".insp", ".jp2", ".jpe",
    ".jpeg", ".jpg", ".jxl", ".k25", ".kdc", ".mrw", ".nef", ".nrw", ".orf", ".ori", ".pef",
    ".png", ".psd", ".raf", ".raw", ".rw2", ".rwl", ".sr2", ".srf", ".srw", ".svg", ".tif",
    ".tiff", ".webp", ".x3f",
];
/// Video extensions Immich accepts.
pub const VIDEO_EXTENSIONS: &[&str] = &[
    ".3gp", ".3gpp", ".avi", ".flv", ".insv", ".m2t", ".m2ts", ".m4v", ".mkv", ".mov", ".mp4",
    ".mpe", ".mpeg", ".mpg", ".mts", ".vob", ".webm", ".wmv",
];
pub const SIDECAR_EXTENSIONS: &[&str] = &[".xmp"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Video,
}

fn ext_of(filename: &str) -> Option<String> {
    filename
        .rfind('.')
        .map(|i| filename[i..].to_ascii_lowercase())
}

pub fn is_supported_extension(filename: &str) -> bool {
    media_kind(filename).is_some()
}

pub fn media_kind(filename: &str) -> Option<MediaKind> {
    let ext = ext_of(filename)?;
    if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
        Some(MediaKind::Image)
    } else if VIDEO_EXTENSIONS.contains(&ext.as_str()) {
        Some(MediaKind::Video)
    } else {
        None
    }
}

/// Camera RAW extensions and the mime Tessera gives them (the `image/x-…` names in common use,
/// as in shared-mime-info).
pub(crate) const RAW_MIMES: &[(&str, &str)] = &[
    (".dng", "image/x-adobe-dng"),
    (".cr2", "image/x-canon-cr2"),
    (".cr3", "image/x-canon-cr3"),
    (".crw", "image/x-canon-crw"),
    (".nef", "image/x-nikon-nef"),
    (".nrw", "image/x-nikon-nrw"),
    (".arw", "image/x-sony-arw"),
    (".sr2", "image/x-sony-sr2"),
    (".srf", "image/x-sony-srf"),
    (".raf", "image/x-fuji-raf"),
    (".orf", "image/x-olympus-orf"),
    (".ori", "image/x-olympus-orf"),
    (".rw2", "image/x-panasonic-rw2"),
    (".rwl", "image/x-leica-rwl"),
    (".pef", "image/x-pentax-pef"),
    (".srw", "image/x-samsung-srw"),
    (".iiq", "image/x-phaseone-iiq"),
    (".3fr", "image/x-hasselblad-3fr"),
    (".fff", "image/x-hasselblad-fff"),
    (".erf", "image/x-epson-erf"),
    (".kdc", "image/x-kodak-kdc"),
    (".dcr", "image/x-kodak-dcr"),
    (".k25", "image/x-kodak-k25"),
    (".mrw", "image/x-minolta-mrw"),
    (".mos", "image/x-leaf-mos"),
    (".x3f", "image/x-sigma-x3f"),
    (".raw", "image/x-panasonic-raw"),
    (".cap", "image/x-phaseone-cap"),
    (".ari", "image/x-arri-ari"),
];

/// Whether the `ftyp` box at the start of `head` lists `brand` among its compatible brands.
fn ftyp_has_brand(head: &[u8], brand: &[u8; 4]) -> bool {
    let size = head
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .unwrap_or(0);
    head.get(16..size.min(head.len()))
        .is_some_and(|brands| brands.chunks_exact(4).any(|b| b == brand))
}

fn raw_mime_for(ext: Option<&str>) -> Option<&'static str> {
    let ext = ext?;
    RAW_MIMES.iter().find(|(e, _)| *e == ext).map(|(_, m)| *m)
}

/// MIME type from the first bytes, falling back to the file name's extension.
///
/// Most RAW formats are TIFF inside (`II*\0` / `MM\0*`): for those the extension decides
/// between the camera's RAW mime and `image/tiff`.
pub fn sniff_mime(head: &[u8], filename: &str) -> &'static str {
    let starts = |p: &[u8]| head.starts_with(p);
    let ext = ext_of(filename);
    if starts(b"II*\0") || starts(b"MM\0*") {
        return raw_mime_for(ext.as_deref()).unwrap_or("image/tiff");
    }
    // RAW formats with their own magic.
    if starts(b"FUJIFILMCCD-RAW") {
        return "image/x-fuji-raf";
    }
    if starts(b"IIRO") || starts(b"IIRS") || starts(b"MMOR") {
        return "image/x-olympus-orf";
    }
    if starts(b"IIU\0") {
        return if ext.as_deref() == Some(".rwl") {
            "image/x-leica-rwl"
        } else {
            "image/x-panasonic-rw2"
        };
    }
    if starts(b"\0MRM") {
        return "image/x-minolta-mrw";
    }
    if starts(b"FOVb") {
        return "image/x-sigma-x3f";
    }
    if head.len() >= 14 && &head[6..14] == b"HEAPCCDR" {
        return "image/x-canon-crw";
    }
    if starts(&[0xFF, 0xD8, 0xFF]) {
        return "image/jpeg";
    }
    if starts(b"\x89PNG\r\n\x1a\n") {
        return "image/png";
    }
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return "image/webp";
    }
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return "image/gif";
    }
    if starts(b"BM") && matches!(ext_of(filename).as_deref(), Some(".bmp")) {
        return "image/bmp";
    }
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        match &head[8..12] {
            b"mif1" | b"msf1" if ftyp_has_brand(head, b"avif") => return "image/avif",
            b"heic" | b"heix" | b"heim" | b"heis" | b"mif1" | b"msf1" => return "image/heic",
            b"avif" | b"avis" => return "image/avif",
            b"qt  " => return "video/quicktime",
            b"crx " => return "image/x-canon-cr3",
            _ => return "video/mp4",
        }
    }
    if let Some(m) = raw_mime_for(ext.as_deref()) {
        return m;
    }
    let by_ext = match ext.as_deref() {
        Some(".jpg" | ".jpeg" | ".jpe") => "image/jpeg",
        Some(".png") => "image/png",
        Some(".webp") => "image/webp",
        Some(".gif") => "image/gif",
        Some(".heic" | ".heif" | ".hif") => "image/heic",
        Some(".avif") => "image/avif",
        Some(".tif" | ".tiff") => "image/tiff",
        Some(".mp4" | ".m4v") => "video/mp4",
        Some(".mov") => "video/quicktime",
        Some(".mkv") => "video/x-matroska",
        Some(".webm") => "video/webm",
        Some(".avi") => "video/x-msvideo",
        Some(".mts" | ".m2ts" | ".m2t") => "video/mp2t",
        Some(".3gp" | ".3gpp") => "video/3gpp",
        Some(".svg") => "image/svg+xml",
        _ => "application/octet-stream",
    };
    by_ext
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_content_before_extension() {
        assert_eq!(sniff_mime(&[0xFF, 0xD8, 0xFF, 0xE1], "x.png"), "image/jpeg");
        assert_eq!(
            sniff_mime(b"\0\0\0\x18ftypheic", "IMG_1.HEIC"),
            "image/heic"
        );
        assert_eq!(sniff_mime(b"????", "clip.MOV"), "video/quicktime");
        assert_eq!(
            sniff_mime(b"II*\0\x08\0\0\0", "IMG_1.DNG"),
            "image/x-adobe-dng"
        );
        assert_eq!(
            sniff_mime(b"II*\0\x10\0\0\0CR", "IMG_1.CR2"),
            "image/x-canon-cr2"
        );
        assert_eq!(
            sniff_mime(b"MM\0*\0\0\0\x08", "DSC_1.NEF"),
            "image/x-nikon-nef"
        );
        assert_eq!(
            sniff_mime(b"II*\0\x08\0\0\0", "DSC_1.ARW"),
            "image/x-sony-arw"
        );
        assert_eq!(sniff_mime(b"II*\0\x08\0\0\0", "scan.tif"), "image/tiff");
        assert_eq!(sniff_mime(b"II*\0\x08\0\0\0", "noext"), "image/tiff");
        assert_eq!(
            sniff_mime(b"\0\0\0\x18ftypcrx \0\0\0\x01", "a.CR3"),
            "image/x-canon-cr3"
        );
        assert_eq!(
            sniff_mime(b"FUJIFILMCCD-RAW 0201", "DSCF1.RAF"),
            "image/x-fuji-raf"
        );
        assert_eq!(
            sniff_mime(b"IIRO\x08\0\0\0", "P1.ORF"),
            "image/x-olympus-orf"
        );
        assert_eq!(
            sniff_mime(b"IIU\0\x18\0\0\0", "P1.RW2"),
            "image/x-panasonic-rw2"
        );
        assert_eq!(sniff_mime(b"????", "x.nef"), "image/x-nikon-nef");
        assert_eq!(media_kind("a.JPG"), Some(MediaKind::Image));
        assert_eq!(media_kind("a.mp4"), Some(MediaKind::Video));
        assert_eq!(media_kind("notes.txt"), None);
        assert_eq!(media_kind("noext"), None);
    }
}
