//! EXIF in any container (JPEG APP1, TIFF, HEIF, PNG, WebP) through `read_metadata`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: {
    // RAW decoders (rawler) may panic on crafted files; `tessera_media` catches those panics
    // and returns a decode error, which is the behaviour under test. libFuzzer's hook would
    // abort on the caught panic, so a quiet hook replaces it: a panic that escapes our code
    // still reaches libfuzzer-sys's catch_unwind and is reported as a crash.
    std::panic::set_hook(Box::new(|_| {}));
}, |data: &[u8]| {
    let _ = tessera_media::read_metadata(data);
    // As a bare TIFF block inside a JPEG APP1 "Exif" segment.
    if data.len() < 60_000 {
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE1];
        jpeg.extend_from_slice(&((data.len() + 8) as u16).to_be_bytes());
        jpeg.extend_from_slice(b"Exif\0\0");
        jpeg.extend_from_slice(data);
        jpeg.extend_from_slice(&[0xFF, 0xD9]);
        let _ = tessera_media::read_metadata(&jpeg);
    }
});
