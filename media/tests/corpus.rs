//! The media corpus (`media/tests/corpus/make_corpus.sh`, run by `cargo xtask test` into
//! `$TESSERA_CORPUS`): every format sniffs, derives, and yields its metadata. Skipped (with a
//! message) when `TESSERA_CORPUS` is unset; a missing file fails when it is set.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tessera_media::{
    make_derivatives, motion_photo_video, probe_video, probe_video_file, read_metadata, sniff_mime,
    video_derivatives, Derivatives, MediaError,
};

const TIMEOUT: Duration = Duration::from_secs(60);

fn corpus() -> Option<PathBuf> {
    match std::env::var_os("TESSERA_CORPUS") {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            // `cargo xtask test` (and so CI) requires the corpus: no green without running.
            assert!(
                std::env::var_os("TESSERA_REQUIRE_CORPUS").is_none(),
                "TESSERA_REQUIRE_CORPUS is set but TESSERA_CORPUS is not"
            );
            eprintln!("TESSERA_CORPUS unset: skipping corpus tests (cargo xtask test sets it)");
            None
        }
    }
}

fn read(dir: &std::path::Path, name: &str) -> Vec<u8> {
    let p = dir.join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("corpus file {} missing: {e}", p.display()))
}

struct Still {
    file: &'static str,
    mime: &'static str,
    /// Displayed full-resolution size.
    size: (u32, u32),
    taken_at: Option<&'static str>,
    gps: Option<(f64, f64)>,
    make: Option<&'static str>,
}

const IPHONE13: (f64, f64) = (44.850478, 34.976647);

const STILLS: &[Still] = &[
    Still {
        file: "heic_iphone13pro.heic",
        mime: "image/heic",
        size: (4032, 3024),
        taken_at: Some("2023-02-21T14:33:08"),
        gps: Some(IPHONE13),
        make: Some("Apple"),
    },
    Still {
        file: "IMG_0001.HEIC",
        mime: "image/heic",
        size: (4032, 3024),
        taken_at: Some("2023-02-21T14:33:08"),
        gps: Some(IPHONE13),
        make: Some("Apple"),
    },
    Still {
        file: "heic_iphonexs.heic",
        mime: "image/heic",
        size: (1025, 900),
        taken_at: Some("2021-07-06T16:08:14"),
        gps: Some((46.754703, 33.336106)),
        make: Some("Apple"),
    },
    Still {
        file: "heic_iphone8plus_portrait.heic",
        mime: "image/heic",
        size: (3024, 4032),
        taken_at: Some("2018-07-31T14:52:07"),
        gps: None,
        make: Some("Apple"),
    },
    Still {
        file: "heic_samsung_s25.heic",
        mime: "image/heic",
        size: (4000, 1848),
        taken_at: Some("2025-06-02T14:07:50"),
        gps: Some((59.512817, 24.834306)),
        make: Some("samsung"),
    },
    Still {
        file: "heic_xiaomi.heic",
        mime: "image/heic",
        size: (2592, 1944),
        taken_at: Some("2023-04-27T19:44:18"),
        gps: Some((47.227289, 39.699992)),
        make: Some("Xiaomi"),
    },
    Still {
        file: "hif_sony_irot90.hif",
        mime: "image/heic",
        size: (4672, 7008),
        taken_at: Some("2023-03-15T14:05:22"),
        gps: None,
        make: Some("SONY"),
    },
    Still {
        file: "heic_transform_mismatch_thumbnail.heic",
        mime: "image/heic",
        size: (64, 64),
        taken_at: None,
        gps: None,
        make: None,
    },
    Still {
        file: "avif_photo.avif",
        mime: "image/avif",
        size: (2016, 1512),
        taken_at: Some("2023-02-21T14:33:08"),
        gps: Some(IPHONE13),
        make: Some("Apple"),
    },
    Still {
        file: "dng_bayer_landscape.dng",
        mime: "image/x-adobe-dng",
        size: (2016, 1512),
        taken_at: Some("2024-05-03T14:22:01+02:00"),
        gps: Some((48.858233, 2.2945)),
        make: Some("Tessera"),
    },
    Still {
        file: "dng_bayer_orient6.dng",
        mime: "image/x-adobe-dng",
        size: (756, 1008),
        taken_at: Some("2024-05-04T08:00:00+02:00"),
        gps: Some((48.858233, 2.2945)),
        make: Some("Tessera"),
    },
    Still {
        file: "dng_with_preview.dng",
        mime: "image/x-adobe-dng",
        size: (2016, 1512),
        taken_at: Some("2024-05-05T10:30:00+02:00"),
        gps: Some((48.858233, 2.2945)),
        make: Some("Tessera"),
    },
    Still {
        file: "png_casio_portrait.png",
        mime: "image/png",
        size: (500, 667),
        taken_at: None,
        gps: None,
        make: None,
    },
    Still {
        file: "webp_casio_portrait.webp",
        mime: "image/webp",
        size: (500, 667),
        taken_at: None,
        gps: None,
        make: None,
    },
    Still {
        file: "gif_casio_portrait.gif",
        mime: "image/gif",
        size: (500, 667),
        taken_at: None,
        gps: None,
        make: None,
    },
    Still {
        file: "PXL_20230221_113308123.MP.jpg",
        mime: "image/jpeg",
        size: (2016, 1512),
        taken_at: Some("2023-02-21T14:33:08"),
        gps: Some(IPHONE13),
        make: Some("Apple"),
    },
    Still {
        file: "samsung_motion.jpg",
        mime: "image/jpeg",
        size: (2016, 1512),
        taken_at: Some("2023-02-21T14:33:08"),
        gps: Some(IPHONE13),
        make: Some("Apple"),
    },
];

fn check_thumbnail(name: &str, d: &Derivatives, size: (u32, u32)) {
    assert_eq!((d.width, d.height), size, "{name}: displayed size");
    let thumb = image::load_from_memory_with_format(&d.thumbnail, image::ImageFormat::Jpeg)
        .unwrap_or_else(|e| panic!("{name}: thumbnail does not decode: {e}"));
    assert_eq!((thumb.width(), thumb.height()), d.thumb_size, "{name}");
    let preview = image::load_from_memory_with_format(&d.preview, image::ImageFormat::Jpeg)
        .unwrap_or_else(|e| panic!("{name}: preview does not decode: {e}"));
    assert_eq!(
        (preview.width(), preview.height()),
        d.preview_size,
        "{name}"
    );
    let landscape = size.0 >= size.1;
    assert_eq!(
        thumb.width() >= thumb.height(),
        landscape,
        "{name}: thumbnail orientation {:?} for a {size:?} original",
        d.thumb_size
    );
    assert!(
        d.preview_size.0.max(d.preview_size.1) <= 1440,
        "{name}: preview {:?}",
        d.preview_size
    );
    assert_eq!(
        d.thumb_size.0.min(d.thumb_size.1),
        250.min(size.0.min(size.1)),
        "{name}: thumbnail short side"
    );
    assert!(!d.thumbhash.is_empty());
}

fn close(a: Option<f64>, b: f64, tol: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < tol)
}

#[test]
fn stills_sniff_derive_and_read_metadata() {
    let Some(dir) = corpus() else { return };
    let mut timings = Vec::new();
    for s in STILLS {
        let bytes = read(&dir, s.file);
        assert_eq!(
            sniff_mime(&bytes[..64], s.file),
            s.mime,
            "{}: sniff",
            s.file
        );
        let md = read_metadata(&bytes);
        let t = Instant::now();
        let d = make_derivatives(&bytes, s.mime, md.orientation)
            .unwrap_or_else(|e| panic!("{}: {e}", s.file));
        timings.push((s.file, t.elapsed()));
        check_thumbnail(s.file, &d, s.size);
        match s.taken_at {
            Some(want) => assert!(
                md.taken_at.as_deref().is_some_and(|t| t.starts_with(want)),
                "{}: taken_at {:?}, want {want}…",
                s.file,
                md.taken_at
            ),
            None => assert_eq!(md.taken_at, None, "{}", s.file),
        }
        match s.gps {
            Some((lat, lon)) => assert!(
                close(md.lat, lat, 1e-4) && close(md.lon, lon, 1e-4),
                "{}: GPS {:?},{:?}, want {lat},{lon}",
                s.file,
                md.lat,
                md.lon
            ),
            None => assert_eq!((md.lat, md.lon), (None, None), "{}", s.file),
        }
        assert_eq!(md.make.as_deref(), s.make, "{}: make", s.file);
    }
    for (file, took) in timings {
        eprintln!(
            "timing: {file:<34} thumbnail+preview {:>6.0} ms",
            took.as_secs_f64() * 1000.0
        );
    }
}

#[test]
fn raw_metadata_is_complete() {
    let Some(dir) = corpus() else { return };
    let md = read_metadata(&read(&dir, "dng_bayer_landscape.dng"));
    assert_eq!(md.taken_at.as_deref(), Some("2024-05-03T14:22:01+02:00"));
    assert_eq!(md.make.as_deref(), Some("Tessera"));
    assert_eq!(md.model.as_deref(), Some("CorpusCam DNG-1"));
    assert_eq!(md.lens.as_deref(), Some("Tessera 26mm f/2.8"));
    assert!(close(md.exposure_time, 1.0 / 125.0, 1e-9));
    assert!(close(md.f_number, 2.8, 1e-9));
    assert!(close(md.focal_length, 26.0, 1e-9));
    assert_eq!(md.iso, Some(200));
    assert_eq!((md.width, md.height), (Some(2016), Some(1512)));
    let md = read_metadata(&read(&dir, "dng_bayer_orient6.dng"));
    assert_eq!(md.orientation, Some(6));
    assert_eq!((md.width, md.height), (Some(1008), Some(756)));
}

struct Clip {
    file: &'static str,
    mime: &'static str,
    duration: f64,
    size: (u32, u32),
    rotation: u32,
    codec: &'static str,
    taken_at: &'static str,
    gps: Option<(f64, f64)>,
    model: Option<&'static str>,
}

const CLIPS: &[Clip] = &[
    Clip {
        file: "video_h264.mp4",
        mime: "video/mp4",
        duration: 3.0,
        size: (1280, 960),
        rotation: 0,
        codec: "h264",
        taken_at: "2024-05-03T12:34:56+00:00",
        gps: Some((48.8584, 2.2945)),
        model: None,
    },
    Clip {
        file: "video_hevc_rot90.mov",
        mime: "video/quicktime",
        duration: 2.0,
        size: (960, 1280),
        rotation: 90,
        codec: "hevc",
        taken_at: "2024-06-01T09:15:00+02:00",
        gps: Some((40.6892, -74.0445)),
        model: Some("iPhone 15"),
    },
    Clip {
        file: "video_prores_short.mov",
        mime: "video/quicktime",
        duration: 0.5,
        size: (640, 480),
        rotation: 0,
        codec: "prores",
        taken_at: "2022-12-24T18:00:00+00:00",
        gps: None,
        model: None,
    },
    Clip {
        file: "IMG_0001.MOV",
        mime: "video/quicktime",
        duration: 1.5,
        size: (1280, 960),
        rotation: 0,
        codec: "hevc",
        taken_at: "2023-02-21T14:33:08+03:00",
        gps: Some((44.8505, 34.9766)),
        model: Some("iPhone 13 Pro"),
    },
];

#[test]
fn videos_probe_and_poster_frames() {
    let Some(dir) = corpus() else { return };
    let mut timings = Vec::new();
    for c in CLIPS {
        let bytes = read(&dir, c.file);
        assert_eq!(
            sniff_mime(&bytes[..64], c.file),
            c.mime,
            "{}: sniff",
            c.file
        );
        let m = probe_video(&bytes).unwrap_or_else(|e| panic!("{}: {e}", c.file));
        assert_eq!(
            m,
            probe_video_file(&dir.join(c.file)).unwrap(),
            "{}",
            c.file
        );
        assert!(close(m.duration, c.duration, 0.05), "{}: {m:?}", c.file);
        assert_eq!(
            (m.width, m.height),
            (Some(c.size.0), Some(c.size.1)),
            "{}",
            c.file
        );
        assert_eq!(m.rotation, c.rotation, "{}", c.file);
        assert_eq!(m.codec.as_deref(), Some(c.codec), "{}", c.file);
        assert_eq!(m.taken_at.as_deref(), Some(c.taken_at), "{}", c.file);
        match c.gps {
            Some((lat, lon)) => assert!(
                close(m.lat, lat, 1e-3) && close(m.lon, lon, 1e-3),
                "{}: {m:?}",
                c.file
            ),
            None => assert_eq!((m.lat, m.lon), (None, None), "{}", c.file),
        }
        assert_eq!(m.model.as_deref(), c.model, "{}", c.file);
        let t = Instant::now();
        let (m2, d) = video_derivatives(&dir.join(c.file), TIMEOUT)
            .unwrap_or_else(|e| panic!("{}: {e}", c.file));
        timings.push((c.file, t.elapsed()));
        assert_eq!(m2, m);
        check_thumbnail(c.file, &d, c.size);
    }
    // Matroska: no box metadata, the poster frame still comes.
    let mkv = dir.join("video_h264.mkv");
    let head = read(&dir, "video_h264.mkv");
    assert_eq!(
        sniff_mime(&head[..64], "video_h264.mkv"),
        "video/x-matroska"
    );
    assert!(matches!(
        probe_video_file(&mkv),
        Err(MediaError::Unsupported(_))
    ));
    let (m, d) = video_derivatives(&mkv, TIMEOUT).unwrap();
    assert_eq!(m, tessera_media::VideoMeta::default());
    check_thumbnail("video_h264.mkv", &d, (1280, 960));
    // Live Photo: the HEIC and the MOV share basename and capture second.
    let still = read_metadata(&read(&dir, "IMG_0001.HEIC"));
    let clip = probe_video(&read(&dir, "IMG_0001.MOV")).unwrap();
    assert_eq!(
        still.taken_at.as_deref().map(|t| &t[..19]),
        clip.taken_at.as_deref().map(|t| &t[..19])
    );
    assert!(clip.content_identifier.is_some());
    for (file, took) in timings {
        eprintln!(
            "timing: {file:<34} probe+ffmpeg+thumbnail+preview {:>6.0} ms",
            took.as_secs_f64() * 1000.0
        );
    }
}

#[test]
fn motion_photos_embedded_video() {
    let Some(dir) = corpus() else { return };
    let mp4 = read(&dir, ".motion.mp4");
    // Google: XMP MicroVideoOffset + Container:Directory; the MP4 runs to the end of the file.
    let pxl = read(&dir, "PXL_20230221_113308123.MP.jpg");
    let r = motion_photo_video(&pxl).expect("Google motion photo");
    assert_eq!(r.end, pxl.len());
    assert_eq!(&pxl[r.clone()], &mp4[..]);
    let m = probe_video(&pxl[r]).unwrap();
    assert!(close(m.duration, 1.0, 0.05), "{m:?}");
    assert_eq!((m.width, m.height), (Some(640), Some(480)));
    // Samsung: marker, then the MP4, then an SEF trailer that is not part of it.
    let sam = read(&dir, "samsung_motion.jpg");
    let r = motion_photo_video(&sam).expect("Samsung motion photo");
    assert_eq!(&sam[r.clone()], &mp4[..]);
    assert!(r.end < sam.len());
    // Plain stills have none.
    for f in ["heic_iphone13pro.heic", ".video_src.jpg", "bad_empty.jpg"] {
        assert_eq!(motion_photo_video(&read(&dir, f)), None, "{f}");
    }

    // Built here: a real JPEG + a Container:Directory-only XMP (no MicroVideoOffset) + MP4 …
    let img = image::RgbImage::from_fn(320, 240, |x, y| image::Rgb([x as u8, y as u8, 90]));
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    let xmp = format!(
        "<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"><rdf:RDF><rdf:Description \
         xmlns:Container=\"http://ns.google.com/photos/1.0/container/\" \
         xmlns:Item=\"http://ns.google.com/photos/1.0/container/item/\">\
         <Container:Directory><rdf:Seq>\
         <rdf:li rdf:parseType=\"Resource\"><Container:Item Item:Mime=\"image/jpeg\" Item:Semantic=\"Primary\" Item:Length=\"0\"/></rdf:li>\
         <rdf:li rdf:parseType=\"Resource\"><Container:Item Item:Mime=\"video/mp4\" Item:Semantic=\"MotionPhoto\" Item:Length=\"{}\"/></rdf:li>\
         </rdf:Seq></Container:Directory></rdf:Description></rdf:RDF></x:xmpmeta>",
        mp4.len()
    );
    let mut payload = b"http://ns.adobe.com/xap/1.0/\0".to_vec();
    payload.extend_from_slice(xmp.as_bytes());
    let mut file = jpeg[..2].to_vec();
    file.extend_from_slice(&[0xFF, 0xE1]);
    file.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    file.extend_from_slice(&payload);
    file.extend_from_slice(&jpeg[2..]);
    let still_len = file.len();
    file.extend_from_slice(&mp4);
    assert_eq!(motion_photo_video(&file), Some(still_len..file.len()));
    // … and with no XMP at all: the ftyp right after the EOI.
    let mut bare = jpeg.clone();
    bare.extend_from_slice(&mp4);
    assert_eq!(motion_photo_video(&bare), Some(jpeg.len()..bare.len()));
    // A lying offset that does not land on an ftyp is rejected, not trusted.
    let mut lying = file.clone();
    lying.truncate(file.len() - 100);
    assert_eq!(motion_photo_video(&lying), None);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let Some(dir) = corpus() else { return };
    let truncated = read(&dir, "bad_truncated.heic");
    assert_eq!(sniff_mime(&truncated, "bad_truncated.heic"), "image/heic");
    let e = make_derivatives(&truncated, "image/heic", None).unwrap_err();
    eprintln!("truncated HEIC: {e}");
    assert!(
        matches!(e, MediaError::Decode { format: "HEIF", .. }),
        "{e:?}"
    );
    let _ = read_metadata(&truncated); // must not panic
    let empty = read(&dir, "bad_empty.jpg");
    assert!(matches!(
        make_derivatives(&empty, "image/jpeg", None),
        Err(MediaError::Empty)
    ));
    assert!(matches!(probe_video(&empty), Err(MediaError::Empty)));
    assert!(matches!(
        video_derivatives(&dir.join("bad_empty.jpg"), TIMEOUT),
        Err(MediaError::Empty)
    ));
    let mp4 = read(&dir, "bad_truncated.mp4");
    let e = probe_video(&mp4).unwrap_err();
    eprintln!("truncated MP4: {e}");
    assert!(e.to_string().contains("moov"), "{e}");
    let e = video_derivatives(&dir.join("bad_truncated.mp4"), TIMEOUT).unwrap_err();
    eprintln!("truncated MP4 derivatives: {e}");
    // ffmpeg on the truncated file directly: an error with its stderr, not a panic.
    let e = tessera_media::poster_frame(&dir.join("bad_truncated.mp4"), TIMEOUT).unwrap_err();
    eprintln!("truncated MP4 poster: {e}");
    assert!(matches!(e, MediaError::Ffmpeg(_)), "{e:?}");
    // A truncated RAW: half of the DNG.
    let dng = read(&dir, "dng_bayer_landscape.dng");
    let e = make_derivatives(&dng[..dng.len() / 2], "image/x-adobe-dng", None).unwrap_err();
    eprintln!("truncated DNG: {e}");
    assert!(
        matches!(e, MediaError::Decode { format: "RAW", .. }),
        "{e:?}"
    );
    let _ = read_metadata(&dng[..1000]);
    let e = make_derivatives(&dng[..1000], "image/x-adobe-dng", None).unwrap_err();
    eprintln!("truncated DNG head: {e}");
}

#[test]
fn poster_frame_timeout_kills_ffmpeg() {
    let Some(dir) = corpus() else { return };
    let e = tessera_media::poster_frame(&dir.join("video_h264.mp4"), Duration::from_millis(1))
        .unwrap_err();
    assert!(matches!(e, MediaError::Timeout { .. }), "{e:?}");
}

/// EXIF written by PyPI's piexif (which many photo scripts use) leaves a garbage next-IFD
/// pointer after its sub-IFDs: strict parsing threw the whole block away ("Unexpected next
/// IFD") and the photo lost its date, GPS, camera and orientation.
#[test]
fn exif_written_by_piexif_keeps_every_field() {
    let Some(dir) = corpus() else { return };
    let b = read(&dir, "piexif_written.jpg");
    let strict = exif::Reader::new().read_from_container(&mut std::io::Cursor::new(&b));
    eprintln!(
        "strict kamadak-exif on piexif's EXIF: {:?}",
        strict.as_ref().err()
    );
    let md = read_metadata(&b);
    assert_eq!(md.taken_at.as_deref(), Some("2021-08-14T10:11:12+02:00"));
    assert_eq!(md.make.as_deref(), Some("PiexifCam"));
    assert_eq!(md.model.as_deref(), Some("Model P-1"));
    assert_eq!(md.orientation, Some(6));
    assert!(close(md.lat, 52.52, 1e-4), "{:?}", md.lat);
    assert!(close(md.lon, 13.41, 1e-4), "{:?}", md.lon);
    assert!(close(md.f_number, 2.8, 1e-6), "{:?}", md.f_number);
    assert_eq!(md.iso, Some(400));
}
