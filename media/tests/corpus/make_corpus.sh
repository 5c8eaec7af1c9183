#!/usr/bin/env bash
# Builds Tessera's media test corpus into $1 (one or more real files per format) and writes
# SOURCES.md next to the files. Idempotent: files that exist are kept. Downloads only from PyPI.
#
# Needs: bash, python3 (+venv), ffmpeg (Debian: libx264, libx265, prores_ks), and the real camera
# JPEGs that `cargo xtask test` unpacks from piexif's sdist (for the PNG/WebP/GIF sources).
set -euo pipefail

OUT=${1:?usage: make_corpus.sh OUTPUT_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
CACHE=${TESSERA_CACHE:-$HOME/.cache/tessera}
VENV=$CACHE/corpus-venv
DL=$CACHE/corpus-src
PIEXIF_IMAGES=$CACHE/fixtures/piexif-1.1.3/tests/images
PY_PKGS=(pillow==13.0.0 pillow-heif==1.8.1 numpy==2.4.6 tifffile==2026.3.3 piexif==1.1.3)

if [[ -f $OUT/.complete-v5 ]]; then
    echo "corpus: $OUT is complete"
    exit 0
fi
command -v ffmpeg >/dev/null || { echo "corpus: ffmpeg missing (apt-get install ffmpeg)" >&2; exit 1; }
[[ -f $PIEXIF_IMAGES/large.jpg ]] || { echo "corpus: $PIEXIF_IMAGES missing (run cargo xtask test once)" >&2; exit 1; }

# --- Python venv (PyPI only, pinned) ---
if ! "$VENV/bin/python" -c 'import PIL, pillow_heif, numpy, tifffile, piexif' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PKGS[@]}"
fi
PY=$VENV/bin/python

# --- pillow-heif sdist: real phone HEICs ---
mkdir -p "$DL"
HEIF_SRC=$DL/pillow_heif-1.8.1/tests/images
if [[ ! -d $HEIF_SRC ]]; then
    "$VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
        pillow-heif==1.8.1 -d "$DL"
    tar xzf "$DL/pillow_heif-1.8.1.tar.gz" -C "$DL"
fi

copy() { [[ -f $OUT/$2 ]] || cp "$1" "$OUT/$2"; }
copy "$HEIF_SRC/heif_other/pug.heic" heic_iphone13pro.heic
copy "$HEIF_SRC/heif_other/empty_icc.heic" heic_iphonexs.heic
copy "$HEIF_SRC/heif_other/arrow.heic" heic_iphone8plus_portrait.heic
copy "$HEIF_SRC/heif_special/aux_YCbCr.heic" heic_samsung_s25.heic
copy "$HEIF_SRC/heif_special/xiaomi.heic" heic_xiaomi.heic
copy "$HEIF_SRC/heif_special/guitar_cw90.hif" hif_sony_irot90.hif
copy "$HEIF_SRC/heif_other/pug.heic" IMG_0001.HEIC
copy "$HEIF_SRC/heif_special/transform_mismatch_thumbnail.heic" heic_transform_mismatch_thumbnail.heic
# Large files, kept apart from the mixed corpus that the import tests copy whole.
mkdir -p "$OUT/large"
copy "$HEIF_SRC/heif_special/200MP.heic" large/heic_200mp.heic
# Bad inputs.
[[ -f $OUT/bad_truncated.heic ]] || head -c 40000 "$HEIF_SRC/heif_other/pug.heic" >"$OUT/bad_truncated.heic"
[[ -f $OUT/bad_empty.jpg ]] || : >"$OUT/bad_empty.jpg"

# --- Stills made with Pillow from real photos: AVIF, PNG, WebP, GIF, DNG, motion-photo JPEG ---
"$PY" - "$OUT" "$HEIF_SRC" "$PIEXIF_IMAGES" <<'PY'
import io, os, struct, sys
import numpy as np
import pillow_heif
from PIL import Image

out, heif_src, piexif_images = sys.argv[1:4]
pillow_heif.register_heif_opener()

def target(name):
    p = os.path.join(out, name)
    return None if os.path.exists(p) else p

pug = Image.open(os.path.join(heif_src, "heif_other/pug.heic"))
pug_exif = pug.getexif()  # iPhone 13 Pro EXIF: DateTimeOriginal, offset, GPS
photo = pug.convert("RGB").resize((2016, 1512), Image.LANCZOS)

# AVIF (libavif/aom in Pillow's wheel) carrying the iPhone's EXIF (time + GPS).
if p := target("avif_photo.avif"):
    photo.save(p, "AVIF", quality=60, exif=pug_exif.tobytes())

# A JPEG source for the videos (not itself a corpus entry).
if p := target(".video_src.jpg"):
    photo.resize((1280, 960), Image.LANCZOS).save(p, quality=90)

casio = Image.open(os.path.join(piexif_images, "large.jpg"))  # Casio QV-R51, 500x667 portrait
if p := target("png_casio_portrait.png"):
    casio.convert("RGB").save(p)
if p := target("webp_casio_portrait.webp"):
    casio.convert("RGB").save(p, "WEBP", quality=80)
if p := target("gif_casio_portrait.gif"):
    casio.convert("RGB").convert("P", palette=Image.ADAPTIVE).save(p)

# --- DNG: a Bayer (RGGB) CFA mosaic of the real photo, 12-bit linear, written tag by tag. ---
def tiff(ifds_spec, data_blobs):
    """ifds_spec: list of (name, entries); entries: list of (tag, type, values) where a value of
    ('ifd', name) / ('blob', i) is resolved to that IFD's / blob's offset. Little-endian TIFF."""
    sizes = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1, 10: 8}
    fmt = {1: "B", 2: "B", 3: "H", 4: "I", 7: "B"}

    def pack_vals(typ, vals):
        if typ in (5, 10):
            f = "<II" if typ == 5 else "<ii"
            return b"".join(struct.pack(f, n, d) for n, d in vals)
        return b"".join(struct.pack("<" + fmt[typ], v) for v in vals)

    def norm(typ, vals):
        if typ == 2:
            return list(vals.encode() + b"\0")
        return vals

    # First pass: sizes.
    layout, off = {}, 8
    for name, entries in ifds_spec:
        layout[name] = off
        extra = 0
        for tag, typ, vals in entries:
            n = len(norm(typ, vals)) if typ != 2 else len(vals) + 1
            sz = sizes[typ] * n
            if sz > 4:
                extra += sz + (sz & 1)
        off += 2 + 12 * len(entries) + 4 + extra
    blob_off = []
    for b in data_blobs:
        blob_off.append(off)
        off += len(b) + (len(b) & 1)

    def resolve(v):
        if isinstance(v, tuple) and len(v) == 2 and v[0] == "ifd":
            return layout[v[1]]
        if isinstance(v, tuple) and len(v) == 2 and v[0] == "blob":
            return blob_off[v[1]]
        return v

    buf = bytearray(b"II*\0" + struct.pack("<I", 8))
    for name, entries in ifds_spec:
        assert len(buf) == layout[name]
        entries = sorted(entries, key=lambda e: e[0])
        base = len(buf) + 2 + 12 * len(entries) + 4
        head, extra = bytearray(struct.pack("<H", len(entries))), bytearray()
        for tag, typ, vals in entries:
            vals = norm(typ, [resolve(v) for v in vals] if typ != 2 else vals)
            raw = pack_vals(typ, vals)
            head += struct.pack("<HHI", tag, typ, len(vals))
            if len(raw) <= 4:
                head += raw.ljust(4, b"\0")
            else:
                head += struct.pack("<I", base + len(extra))
                extra += raw + (b"\0" if len(raw) & 1 else b"")
        head += struct.pack("<I", 0)
        buf += head + extra
    for b in data_blobs:
        buf += b + (b"\0" if len(b) & 1 else b"")
    return bytes(buf)

def dng(path, img, orientation, when, offset, preview_jpeg=None):
    rgb = np.asarray(img, dtype=np.float32) / 255.0
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    black, white = 256, 4095
    h, w, _ = lin.shape
    cfa = np.empty((h, w), dtype=np.float32)
    cfa[0::2, 0::2] = lin[0::2, 0::2, 0]
    cfa[0::2, 1::2] = lin[0::2, 1::2, 1]
    cfa[1::2, 0::2] = lin[1::2, 0::2, 1]
    cfa[1::2, 1::2] = lin[1::2, 1::2, 2]
    raw = (black + cfa * (white - black)).round().astype("<u2").tobytes()
    r = lambda x, d=10000: (int(round(x * d)), d)
    # XYZ(D65) -> linear sRGB: our "camera" sees linear sRGB.
    xyz2cam = [3.2406, -1.5372, -0.4986, -0.9689, 1.8758, 0.0415, 0.0557, -0.2040, 1.0570]
    raw_ifd = [
        (254, 4, [0]), (256, 4, [w]), (257, 4, [h]), (258, 3, [16]), (259, 3, [1]),
        (262, 3, [32803]), (273, 4, [("blob", 0)]), (277, 3, [1]), (278, 4, [h]),
        (279, 4, [len(raw)]), (284, 3, [1]),
        (33421, 3, [2, 2]), (33422, 1, [0, 1, 1, 2]),
        (50713, 3, [1, 1]), (50714, 4, [black]), (50717, 4, [white]),
    ]
    common = [
        (271, 2, "Tessera"), (272, 2, "CorpusCam DNG-1"), (274, 3, [orientation]),
        (305, 2, "make_corpus.sh"), (306, 2, when),
        (34665, 4, [("ifd", "exif")]), (34853, 4, [("ifd", "gps")]),
        (50706, 1, [1, 4, 0, 0]), (50707, 1, [1, 1, 0, 0]),
        (50708, 2, "Tessera CorpusCam DNG-1"),
        (50721, 10, [r(v) for v in xyz2cam]), (50778, 3, [21]),
        (50728, 5, [r(1.0), r(1.0), r(1.0)]),
    ]
    exif = [
        (33434, 5, [(1, 125)]), (33437, 5, [(28, 10)]), (34855, 3, [200]),
        (36867, 2, when), (36881, 2, offset), (37386, 5, [(26, 1)]),
        (42036, 2, "Tessera 26mm f/2.8"),
    ]
    gps = [
        (0, 1, [2, 3, 0, 0]), (1, 2, "N"), (2, 5, [(48, 1), (51, 1), (2964, 100)]),
        (3, 2, "E"), (4, 5, [(2, 1), (17, 1), (4020, 100)]),
    ]
    if preview_jpeg is None:
        spec = [("ifd0", common + raw_ifd), ("exif", exif), ("gps", gps)]
        blobs = [raw]
    else:
        # Real-camera layout: IFD0 = preview JPEG (NewSubFileType 1), raw in a SubIFD.
        pw, ph = preview_jpeg[1]
        ifd0 = common + [
            (254, 4, [1]), (256, 4, [pw]), (257, 4, [ph]), (258, 3, [8, 8, 8]), (259, 3, [7]),
            (262, 3, [6]), (273, 4, [("blob", 1)]), (277, 3, [3]), (278, 4, [ph]),
            (279, 4, [len(preview_jpeg[0])]), (284, 3, [1]), (330, 4, [("ifd", "raw")]),
        ]
        spec = [("ifd0", ifd0), ("raw", raw_ifd), ("exif", exif), ("gps", gps)]
        blobs = [raw, preview_jpeg[0]]
    with open(path, "wb") as f:
        f.write(tiff(spec, blobs))

if p := target("dng_bayer_landscape.dng"):
    dng(p, photo, 1, "2024:05:03 14:22:01", "+02:00")
if p := target("dng_bayer_orient6.dng"):
    dng(p, photo.resize((1008, 756), Image.LANCZOS), 6, "2024:05:04 08:00:00", "+02:00")
if p := target("dng_with_preview.dng"):
    prev = io.BytesIO()
    small = photo.resize((1600, 1200), Image.LANCZOS)
    small.save(prev, "JPEG", quality=85)
    dng(p, photo, 1, "2024:05:05 10:30:00", "+02:00", preview_jpeg=(prev.getvalue(), small.size))
PY

# --- Videos (Debian's ffmpeg) ---
SRC=$OUT/.video_src.jpg
ff() { ffmpeg -nostdin -hide_banner -loglevel error -y "$@"; }
still() { echo -loop 1 -framerate 30 -t "$1" -i "$SRC"; }
if [[ ! -f $OUT/video_h264.mp4 ]]; then
    ff $(still 3) -f lavfi -t 3 -i "sine=frequency=440" -c:v libx264 -preset veryfast -pix_fmt yuv420p \
        -vf "scale=1280:960,zoompan=z='1+0.002*on':d=1:s=1280x960:fps=30" -c:a aac -shortest \
        -metadata creation_time=2024-05-03T12:34:56.000000Z \
        -metadata location=+48.8584+002.2945/ "$OUT/video_h264.mp4"
fi
if [[ ! -f $OUT/video_hevc_rot90.mov ]]; then
    ff $(still 2) -c:v libx265 -preset ultrafast -x265-params log-level=error -tag:v hvc1 -pix_fmt yuv420p \
        "$OUT/.hevc_unrotated.mov"
    # ffmpeg 5.1 only honours the legacy `rotate` tag when stream-copying; 270 there writes
    # Apple's portrait tkhd matrix [0 1 -1 0] (= 90 degrees clockwise for display).
    ff -i "$OUT/.hevc_unrotated.mov" -c copy -metadata:s:v:0 rotate=270 -movflags use_metadata_tags \
        -metadata com.apple.quicktime.creationdate=2024-06-01T09:15:00+0200 \
        -metadata com.apple.quicktime.location.ISO6709=+40.6892-074.0445+010.000/ \
        -metadata com.apple.quicktime.make=Apple -metadata "com.apple.quicktime.model=iPhone 15" \
        "$OUT/video_hevc_rot90.mov"
    rm -f "$OUT/.hevc_unrotated.mov"
fi
if [[ ! -f $OUT/video_prores_short.mov ]]; then
    ff $(still 0.5) -vf scale=640:480 -c:v prores_ks -profile:v 0 -pix_fmt yuv422p10le \
        -metadata creation_time=2022-12-24T18:00:00Z "$OUT/video_prores_short.mov"
fi
# Live Photo pair: IMG_0001.HEIC (iPhone 13 Pro, 2023:02:21 14:33:08 +03:00) + IMG_0001.MOV.
if [[ ! -f $OUT/IMG_0001.MOV ]]; then
    ff $(still 1.5) -c:v libx265 -preset ultrafast -x265-params log-level=error -tag:v hvc1 -pix_fmt yuv420p \
        -movflags use_metadata_tags \
        -metadata com.apple.quicktime.creationdate=2023-02-21T14:33:08+0300 \
        -metadata com.apple.quicktime.location.ISO6709=+44.8505+034.9766+100.000/ \
        -metadata com.apple.quicktime.make=Apple -metadata "com.apple.quicktime.model=iPhone 13 Pro" \
        -metadata com.apple.quicktime.content.identifier=5D9B4E8C-1F7A-4C1E-9B3D-0A1B2C3D4E5F \
        "$OUT/IMG_0001.MOV"
fi
[[ -f $OUT/video_h264.mkv ]] || ff -i "$OUT/video_h264.mp4" -c copy "$OUT/video_h264.mkv"
[[ -f $OUT/bad_truncated.mp4 ]] || head -c 20000 "$OUT/video_h264.mp4" >"$OUT/bad_truncated.mp4"

# --- Motion photos: real JPEG + XMP (Google) / marker (Samsung) + appended ffmpeg MP4 ---
MV=$OUT/.motion.mp4
[[ -f $MV ]] || ff $(still 1) -vf scale=640:480 -c:v libx264 -preset veryfast -pix_fmt yuv420p \
    -metadata creation_time=2024-05-03T12:00:00Z "$MV"
"$PY" - "$OUT" <<'PY'
import os, struct, sys
from PIL import Image
out = sys.argv[1]
mp4 = open(os.path.join(out, ".motion.mp4"), "rb").read()
src = Image.open(os.path.join(out, "avif_photo.avif"))
import io
b = io.BytesIO()
src.convert("RGB").save(b, "JPEG", quality=88, exif=src.getexif().tobytes())
jpeg = b.getvalue()

def with_xmp(jpeg, xmp):
    payload = b"http://ns.adobe.com/xap/1.0/\0" + xmp.encode()
    seg = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    # After SOI and the EXIF APP1.
    i = 2
    if jpeg[2:4] == b"\xff\xe1":
        i = 4 + struct.unpack(">H", jpeg[4:6])[0]
    return jpeg[:i] + seg + jpeg[i:]

p = os.path.join(out, "PXL_20230221_113308123.MP.jpg")
if not os.path.exists(p):
    xmp = f'''<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="Adobe XMP Core 5.1.0-jc003">
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:GCamera="http://ns.google.com/photos/1.0/camera/"
 xmlns:Container="http://ns.google.com/photos/1.0/container/"
 xmlns:Item="http://ns.google.com/photos/1.0/container/item/"
 GCamera:MotionPhoto="1" GCamera:MotionPhotoVersion="1" GCamera:MotionPhotoPresentationTimestampUs="500000"
 GCamera:MicroVideo="1" GCamera:MicroVideoVersion="1" GCamera:MicroVideoOffset="{len(mp4)}"
 GCamera:MicroVideoPresentationTimestampUs="500000">
<Container:Directory><rdf:Seq>
<rdf:li rdf:parseType="Resource"><Container:Item Item:Mime="image/jpeg" Item:Semantic="Primary" Item:Length="0" Item:Padding="0"/></rdf:li>
<rdf:li rdf:parseType="Resource"><Container:Item Item:Mime="video/mp4" Item:Semantic="MotionPhoto" Item:Length="{len(mp4)}" Item:Padding="0"/></rdf:li>
</rdf:Seq></Container:Directory>
</rdf:Description></rdf:RDF></x:xmpmeta>'''
    open(p, "wb").write(with_xmp(jpeg, xmp) + mp4)
p = os.path.join(out, "samsung_motion.jpg")
if not os.path.exists(p):
    # Samsung: the MP4 follows a "MotionPhoto_Data" marker after the JPEG; an SEF trailer ends it.
    trailer = b"SEFH" + struct.pack("<II", 106, 1) + b"\0" * 12 + struct.pack("<I", 24) + b"SEFT"
    open(p, "wb").write(jpeg + b"MotionPhoto_Data" + mp4 + trailer)
PY

# --- EXIF written by other tools (v4): PyPI's piexif, as many photo scripts use it ---
"$PY" - "$OUT" "$PIEXIF_IMAGES" <<'PY'
import io, os, sys
import piexif
from PIL import Image
out, piexif_images = sys.argv[1:3]
p = os.path.join(out, "piexif_written.jpg")
if not os.path.exists(p):
    # A real photo without its EXIF, then EXIF written by piexif.dump (0th + Exif + GPS IFDs).
    im = Image.open(os.path.join(piexif_images, "large.jpg")).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    exif = {
        "0th": {
            piexif.ImageIFD.Make: b"PiexifCam",
            piexif.ImageIFD.Model: b"Model P-1",
            piexif.ImageIFD.Orientation: 6,
            piexif.ImageIFD.DateTime: b"2021:08:14 10:11:12",
        },
        "Exif": {
            piexif.ExifIFD.DateTimeOriginal: b"2021:08:14 10:11:12",
            piexif.ExifIFD.OffsetTimeOriginal: b"+02:00",
            piexif.ExifIFD.FNumber: (28, 10),
            piexif.ExifIFD.ISOSpeedRatings: 400,
        },
        "GPS": {
            piexif.GPSIFD.GPSLatitudeRef: b"N",
            piexif.GPSIFD.GPSLatitude: ((52, 1), (31, 1), (1200, 100)),
            piexif.GPSIFD.GPSLongitudeRef: b"E",
            piexif.GPSIFD.GPSLongitude: ((13, 1), (24, 1), (3600, 100)),
        },
    }
    piexif.insert(piexif.dump(exif), buf.getvalue(), p)
PY

# --- SOURCES.md ---
cat >"$OUT/SOURCES.md" <<'EOF'
# Tessera media test corpus

Built by `media/tests/corpus/make_corpus.sh` (only PyPI downloads; Debian ffmpeg 5.1).
"pillow-heif" = `pillow-heif==1.8.1` sdist (BSD-3; test images from their authors/devices),
"piexif" = `piexif==1.1.3` sdist `tests/images/` (real camera JPEGs, MIT).

| file | source | expected |
|---|---|---|
| heic_iphone13pro.heic | pillow-heif `tests/images/heif_other/pug.heic` (iPhone 13 Pro) | 4032x3024 landscape, 2023-02-21T14:33:08+03:00, GPS 44.8505 N 34.9767 E |
| heic_iphonexs.heic | pillow-heif `heif_other/empty_icc.heic` (iPhone XS) | 1025x900, 2021-07-06T16:08:14+03:00, GPS 46.7547 N 33.3361 E |
| heic_iphone8plus_portrait.heic | pillow-heif `heif_other/arrow.heic` (iPhone 8 Plus) | 3024x4032 portrait, 2018-07-31T14:52:07, no GPS |
| heic_samsung_s25.heic | pillow-heif `heif_special/aux_YCbCr.heic` (Galaxy S25 Ultra) | 4000x1848, 2025-06-02T14:07:50+03:00, GPS 59.5128 N 24.8343 E |
| heic_xiaomi.heic | pillow-heif `heif_special/xiaomi.heic` (Xiaomi M2012K11AG) | 2592x1944, 2023-04-27T19:44:18, GPS 47.2273 N 39.7000 E |
| hif_sony_irot90.hif | pillow-heif `heif_special/guitar_cw90.hif` (Sony ILCE-7M4, irot 90) | displayed 4672x7008 portrait, 2023-03-15T14:05:22+08:00 |
| IMG_0001.HEIC | = heic_iphone13pro.heic (Live Photo still) | as heic_iphone13pro.heic |
| heic_transform_mismatch_thumbnail.heic | pillow-heif `heif_special/transform_mismatch_thumbnail.heic` | 64x64; its thumbnail's transforms differ from the primary's (must not be used) |
| IMG_0001.MOV | ffmpeg libx265 from the pug photo; Apple keys creationdate/location/make/model/content.identifier | 1.5 s, 1280x960, hevc, 2023-02-21T14:33:08+03:00, GPS 44.8505 34.9766 |
| avif_photo.avif | Pillow 13 (libavif) from pug.heic at 2016x1512 with its EXIF | 2016x1512, 2023-02-21T14:33:08+03:00, GPS 44.8505 N 34.9767 E |
| png/webp/gif_casio_portrait.* | Pillow from piexif `large.jpg` (Casio QV-R51) | 500x667 portrait, no EXIF |
| dng_bayer_landscape.dng | RGGB CFA mosaic (12-bit linear) of the pug photo, DNG 1.4 tags written by the script | 2016x1512, 2024-05-03T14:22:01+02:00, Tessera CorpusCam DNG-1, GPS 48.8582 N 2.2945 E, 1/125 s f/2.8 ISO 200 26 mm |
| dng_bayer_orient6.dng | same, 1008x756, Orientation 6 | displayed 756x1008 portrait, 2024-05-04T08:00:00+02:00 |
| dng_with_preview.dng | same 2016x1512 raw in a SubIFD, IFD0 = 1600x1200 JPEG preview (camera layout) | 2016x1512, derivatives from the embedded preview (fast path), 2024-05-05T10:30:00+02:00 |
| video_h264.mp4 | ffmpeg libx264 + AAC, `creation_time`, `location` | 3 s, 1280x960, h264, 2024-05-03T12:34:56+00:00, GPS 48.8584 2.2945 |
| video_hevc_rot90.mov | ffmpeg libx265 hvc1, tkhd matrix [0 1 -1 0] (iPhone portrait), Apple `com.apple.quicktime.*` keys | 2 s, displayed 960x1280, rotation 90, 2024-06-01T09:15:00+02:00, GPS 40.6892 -74.0445, Apple iPhone 15 |
| video_h264.mkv | video_h264.mp4 remuxed to Matroska (`-c copy`) | poster frame 1280x960; no box metadata |
| video_prores_short.mov | ffmpeg prores_ks | 0.5 s, 640x480, prores, 2022-12-24T18:00:00+00:00 |
| PXL_20230221_113308123.MP.jpg | JPEG (Pillow) of avif_photo + XMP GCamera:MicroVideo* / Container:Directory + appended ffmpeg MP4 | 2016x1512, embedded 1 s 640x480 h264 MP4 |
| samsung_motion.jpg | same JPEG + `MotionPhoto_Data` + MP4 + SEF trailer | embedded MP4 |
| piexif_written.jpg | piexif `large.jpg` re-encoded by Pillow, EXIF written by `piexif==1.1.3` (`dump` + `insert`) | 2021-08-14T10:11:12+02:00, PiexifCam Model P-1, orientation 6, GPS 52.5200 N 13.4100 E, f/2.8 ISO 400 |
| large/heic_200mp.heic | pillow-heif `heif_special/200MP.heic` | 200 MP grid of HEVC tiles (decoded tile by tile at reduced size) |
| bad_truncated.heic | first 40,000 bytes of pug.heic | error |
| bad_truncated.mp4 | first 20,000 bytes of video_h264.mp4 | error |
| bad_empty.jpg | zero bytes | error |
EOF
touch "$OUT/.complete-v5"
echo "corpus: built $OUT"
