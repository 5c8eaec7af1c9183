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

/// MIME type from the first bytes, falling back to the file name's extension.
pub fn sniff_mime(head: &[u8], filename: &str) -> &'static str {
    let starts = |p: &[u8]| head.starts_with(p);
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
            b"heic" | b"heix" | b"heim" | b"heis" | b"mif1" | b"msf1" => return "image/heic",
            b"avif" | b"avis" => return "image/avif",
            b"qt  " => return "video/quicktime",
            b"crx " => return "image/x-canon-cr3",
            _ => return "video/mp4",
        }
    }
    let by_ext = match ext_of(filename).as_deref() {
        Some(".jpg" | ".jpeg" | ".jpe") => "image/jpeg",
        Some(".png") => "image/png",
        Some(".webp") => "image/webp",
        Some(".gif") => "image/gif",
        Some(".heic" | ".heif" | ".hif") => "image/heic",
        Some(".avif") => "image/avif",
        Some(".tif" | ".tiff") => "image/tiff",
        Some(".dng") => "image/x-adobe-dng",
        Some(".cr2") => "image/x-canon-cr2",
        Some(".nef") => "image/x-nikon-nef",
        Some(".arw") => "image/x-sony-arw",
        Some(".raf") => "image/x-fuji-raf",
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
        assert_eq!(media_kind("a.JPG"), Some(MediaKind::Image));
        assert_eq!(media_kind("a.mp4"), Some(MediaKind::Video));
        assert_eq!(media_kind("notes.txt"), None);
        assert_eq!(media_kind("noext"), None);
    }
}
