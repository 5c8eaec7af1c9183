//! XMP and Google Takeout JSON sidecars, and dates in file names.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tessera_media::parse_sidecar(data);
    let _ = tessera_media::parse_xmp(data);
    let _ = tessera_media::parse_takeout_json(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = tessera_media::date_from_filename(s);
    }
});
