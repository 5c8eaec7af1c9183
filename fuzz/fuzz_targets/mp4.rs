//! The MP4/QuickTime `moov` walker and the motion-photo locator: any bytes end in a value or
//! an error, never a panic, a hang or a huge allocation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tessera_media::probe_video(data);
    let _ = tessera_media::motion_photo_video(data);
    // The same bytes behind a JPEG (how motion photos carry their video).
    let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xD9];
    jpeg.extend_from_slice(data);
    let _ = tessera_media::motion_photo_video(&jpeg);
});
