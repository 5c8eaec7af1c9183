//! JPEG derivatives without leaving YCbCr: the original is decoded by libjpeg-turbo straight
//! to its planes (DCT-scaled, no chroma upsampling, no colour conversion), each plane is
//! resized on its own (the two chroma planes at a quarter of the pixels), and the preview and
//! thumbnail are encoded from 4:2:0 planes (no colour conversion or chroma downsampling
//! either). Against decoding to RGB, resizing RGB and encoding RGB, a 12-MP photo's
//! derivatives take about a quarter less time. Only the thumbhash's 100-px image is turned
//! into RGB.
//!
//! Files this path does not take (CMYK/YCCK, chroma sampling other than 4:2:0, a decode that
//! warns) return an error, and [`crate::derive`] decodes them to RGB instead.

use fast_image_resize::{
    images::{Image as FirImage, ImageRef},
    FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer,
};
use image::{metadata::Orientation, DynamicImage, GrayImage, RgbImage};

use crate::MediaError;

/// An image as JPEG's planes: luma `y` at full size, chroma `cb`/`cr` each of the same size
/// (4:2:0 after [`Planes::resized`]; the source's own sampling when just decoded).
#[derive(Debug, Clone)]
pub(crate) struct Planes {
    pub y: GrayImage,
    pub cb: GrayImage,
    pub cr: GrayImage,
}

fn decode_err(e: turbojpeg::Error) -> MediaError {
    MediaError::Decode {
        format: "JPEG",
        reason: e.to_string(),
    }
}

/// The chroma size of 4:2:0 for a `w`×`h` image.
fn half(w: u32, h: u32) -> (u32, u32) {
    (w.div_ceil(2), h.div_ceil(2))
}

/// Copies a `w`×`h` plane out of a buffer whose rows are `stride` bytes apart.
fn plane(buf: &[u8], stride: usize, w: usize, h: usize) -> Result<GrayImage, MediaError> {
    let short = || MediaError::Decode {
        format: "JPEG",
        reason: "short plane".into(),
    };
    let mut out = Vec::with_capacity(w * h);
    for row in 0..h {
        let start = row * stride;
        out.extend_from_slice(buf.get(start..start + w).ok_or_else(short)?);
    }
    GrayImage::from_raw(w as u32, h as u32, out).ok_or_else(short)
}

impl Planes {
    /// Decodes a JPEG to its planes at the smallest M/8 scale whose long side covers
    /// `long_side` (`scale` picks it from the full size). Returns the planes and the
    /// full-resolution size.
    pub fn decode_jpeg(
        bytes: &[u8],
        scale: impl Fn(&turbojpeg::DecompressHeader) -> turbojpeg::ScalingFactor,
        scan_limit: u32,
        accept: impl Fn((u32, u32), (u32, u32)) -> bool,
    ) -> Result<(Self, u32, u32), MediaError> {
        let mut d = turbojpeg::Decompressor::new().map_err(decode_err)?;
        let header = d.read_header(bytes).map_err(decode_err)?;
        let (fw, fh) = (header.width as u32, header.height as u32);
        crate::derive::check_dims(fw, fh)?;
        // 4:2:0 (what phones and most cameras write) and grey only: with full-size or
        // half-width chroma, resizing the chroma planes costs more than the colour conversions
        // the planes save (measured: a 4:4:4 12-MP photo took as long as through RGB).
        let planar = match header.subsamp {
            turbojpeg::Subsamp::Sub2x2 => header.colorspace == turbojpeg::Colorspace::YCbCr,
            turbojpeg::Subsamp::Gray => header.colorspace == turbojpeg::Colorspace::Gray,
            _ => false,
        };
        if !planar {
            return Err(MediaError::Unsupported(format!(
                "{:?} {:?} JPEG as planes",
                header.colorspace, header.subsamp
            )));
        }
        let factor = scale(&header);
        d.set_scaling_factor(factor).map_err(decode_err)?;
        d.set_scan_limit(scan_limit).map_err(decode_err)?;
        let s = header.scaled(factor);
        // The caller's last word, before anything is decoded (decoded size, full size).
        if !accept((s.width as u32, s.height as u32), (fw, fh)) {
            return Err(MediaError::Unsupported("this JPEG as planes".into()));
        }
        let layout = turbojpeg::YuvImage {
            pixels: (),
            width: s.width,
            align: 1,
            height: s.height,
            subsamp: header.subsamp,
        };
        let len =
            turbojpeg::yuv_pixels_len(s.width, 1, s.height, header.subsamp).map_err(decode_err)?;
        let mut pixels = vec![0u8; len];
        d.decompress_to_yuv(
            bytes,
            turbojpeg::YuvImage {
                pixels: pixels.as_mut_slice(),
                width: s.width,
                align: 1,
                height: s.height,
                subsamp: header.subsamp,
            },
        )
        .map_err(decode_err)?;
        let (yw, yh) = layout.y_size();
        let y = plane(&pixels, yw, s.width, s.height)?;
        let (cb, cr) = if header.subsamp == turbojpeg::Subsamp::Gray {
            let (cw, ch) = half(s.width as u32, s.height as u32);
            let grey = GrayImage::from_pixel(cw, ch, image::Luma([128]));
            (grey.clone(), grey)
        } else {
            let (uw, uh) = layout.uv_size();
            let at = yw * yh;
            let (cw, ch) = (
                s.width.div_ceil(header.subsamp.width()),
                s.height.div_ceil(header.subsamp.height()),
            );
            let rest = pixels.get(at..).unwrap_or_default();
            let cb = plane(rest, uw, cw, ch)?;
            let cr = plane(rest.get(uw * uh..).unwrap_or_default(), uw, cw, ch)?;
            (cb, cr)
        };
        Ok((Self { y, cb, cr }, fw, fh))
    }

    pub fn dimensions(&self) -> (u32, u32) {
        self.y.dimensions()
    }

    /// The image at `w`×`h` as 4:2:0 planes (chroma at half size each way, rounded up).
    pub fn resized(
        &self,
        resizer: &mut Resizer,
        w: u32,
        h: u32,
        filter: FilterType,
    ) -> Result<Self, MediaError> {
        let (cw, ch) = half(w, h);
        // The part of the chroma planes under the luma the output shows, in chroma samples:
        // the output's chroma covers `2·cw` output pixels (an odd width's last sample covers
        // the pixel the encoder pads with). An odd decoded length leaves half a sample past the
        // luma (cropped off); an odd output length needs a little more than the planes hold
        // (padded by repeating the last sample, as a JPEG encoder pads).
        let (dw, dh) = self.y.dimensions();
        let extent =
            |out_c: u32, out: u32, src: u32| f64::from(out_c) * f64::from(src) / f64::from(out);
        let crop = (extent(cw, w, dw), extent(ch, h, dh));
        let need = (crop.0.ceil() as u32, crop.1.ceil() as u32);
        Ok(Self {
            y: resize_plane(resizer, &self.y, w, h, filter, None)?,
            cb: resize_plane(resizer, &padded(&self.cb, need), cw, ch, filter, Some(crop))?,
            cr: resize_plane(resizer, &padded(&self.cr, need), cw, ch, filter, Some(crop))?,
        })
    }

    /// Turned as EXIF orientation `o` says (every plane the same way).
    pub fn oriented(self, o: Orientation) -> Self {
        if o == Orientation::NoTransforms {
            return self;
        }
        let turn = |p: GrayImage| {
            let mut d = DynamicImage::ImageLuma8(p);
            d.apply_orientation(o);
            d.into_luma8()
        };
        Self {
            y: turn(self.y),
            cb: turn(self.cb),
            cr: turn(self.cr),
        }
    }

    /// The planes as RGB (JFIF's full-range YCbCr), chroma repeated over each 2×2 block.
    /// Meant for small images (the thumbhash's).
    pub fn to_rgb(&self) -> RgbImage {
        let (w, h) = self.y.dimensions();
        let (cw, ch) = self.cb.dimensions();
        RgbImage::from_fn(w, h, |x, yy| {
            let (cx, cy) = ((x / 2).min(cw - 1), (yy / 2).min(ch - 1));
            let l = f32::from(self.y.get_pixel(x, yy)[0]);
            let b = f32::from(self.cb.get_pixel(cx, cy)[0]) - 128.0;
            let r = f32::from(self.cr.get_pixel(cx, cy)[0]) - 128.0;
            let c = |v: f32| v.round().clamp(0.0, 255.0) as u8;
            image::Rgb([
                c(l + 1.402 * r),
                c(l - 0.344_136 * b - 0.714_136 * r),
                c(l + 1.772 * b),
            ])
        })
    }

    /// A baseline 4:2:0 JPEG of these planes (which must be 4:2:0: [`Planes::resized`]).
    pub fn encode(&self, quality: u8) -> Result<Vec<u8>, MediaError> {
        let err = |e: turbojpeg::Error| MediaError::Encode(e.to_string());
        let (w, h) = self.y.dimensions();
        if self.cb.dimensions() != half(w, h) || self.cr.dimensions() != half(w, h) {
            return Err(MediaError::Encode("chroma planes are not 4:2:0".into()));
        }
        // libjpeg-turbo reads whole 2×2 blocks: the luma plane is padded to even sizes with
        // its last column and row.
        let (pw, ph) = (w.next_multiple_of(2), h.next_multiple_of(2));
        let padded;
        let y: &[u8] = if (pw, ph) == (w, h) {
            self.y.as_raw()
        } else {
            let mut buf = Vec::with_capacity((pw * ph) as usize);
            for row in 0..ph {
                let src = self.y.as_raw();
                let start = (row.min(h - 1) * w) as usize;
                let line = &src[start..start + w as usize];
                buf.extend_from_slice(line);
                if pw > w {
                    buf.push(line[w as usize - 1]);
                }
            }
            padded = buf;
            &padded
        };
        let cw = half(w, h).0 as usize;
        let mut c = turbojpeg::Compressor::new().map_err(err)?;
        c.set_quality(i32::from(quality)).map_err(err)?;
        c.compress_yuv_planes_to_vec(&turbojpeg::YuvPlanesImage {
            y_plane: y,
            u_plane: self.cb.as_raw().as_slice(),
            v_plane: self.cr.as_raw().as_slice(),
            width: w as usize,
            height: h as usize,
            y_stride: pw as usize,
            u_stride: cw,
            v_stride: cw,
            subsamp: turbojpeg::Subsamp::Sub2x2,
        })
        .map_err(err)
    }
}

/// `p` at least `need` large, grown by repeating its last column and row.
fn padded(p: &GrayImage, need: (u32, u32)) -> std::borrow::Cow<'_, GrayImage> {
    let (w, h) = p.dimensions();
    if (need.0 <= w && need.1 <= h) || w == 0 || h == 0 {
        return std::borrow::Cow::Borrowed(p);
    }
    let (nw, nh) = (need.0.max(w), need.1.max(h));
    let mut out = Vec::with_capacity(nw as usize * nh as usize);
    for row in p
        .as_raw()
        .chunks_exact(w as usize)
        .chain(std::iter::repeat_n(
            p.as_raw()
                .chunks_exact(w as usize)
                .last()
                .unwrap_or_default(),
            (nh - h) as usize,
        ))
    {
        out.extend_from_slice(row);
        let last = row.last().copied().unwrap_or_default();
        out.extend(std::iter::repeat_n(last, (nw - w) as usize));
    }
    match GrayImage::from_raw(nw, nh, out) {
        Some(img) => std::borrow::Cow::Owned(img),
        None => std::borrow::Cow::Borrowed(p),
    }
}

fn resize_plane(
    resizer: &mut Resizer,
    src: &GrayImage,
    w: u32,
    h: u32,
    filter: FilterType,
    crop: Option<(f64, f64)>,
) -> Result<GrayImage, MediaError> {
    let whole = (f64::from(src.width()), f64::from(src.height()));
    let crop = crop.unwrap_or(whole);
    if src.dimensions() == (w, h) && crop == whole {
        return Ok(src.clone());
    }
    let e = |e: &dyn std::fmt::Display| MediaError::Resize(e.to_string());
    let view =
        ImageRef::new(src.width(), src.height(), src.as_raw(), PixelType::U8).map_err(|x| e(&x))?;
    let mut dst = FirImage::new(w, h, PixelType::U8);
    resizer
        .resize(
            &view,
            &mut dst,
            &ResizeOptions::new()
                .resize_alg(ResizeAlg::Convolution(filter))
                .crop(0.0, 0.0, crop.0, crop.1),
        )
        .map_err(|x| e(&x))?;
    GrayImage::from_raw(w, h, dst.into_vec()).ok_or_else(|| e(&"bad buffer size"))
}

#[cfg(test)]
mod tests {
    use crate::make_derivatives;
    use image::RgbImage;

    /// A photo-like test image: smooth colour gradients with some detail.
    fn source(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            let ripple = ((x as f32 / 9.0).sin() * (y as f32 / 7.0).cos() * 20.0) as i32;
            let c = |v: f32| (v * 255.0) as i32;
            image::Rgb([
                (c(fx) + ripple).clamp(0, 255) as u8,
                (c(fy) + ripple).clamp(0, 255) as u8,
                (c(1.0 - fx * fy) - ripple).clamp(0, 255) as u8,
            ])
        })
    }

    fn jpeg(
        img: &RgbImage,
        subsamp: turbojpeg::Subsamp,
        format: turbojpeg::PixelFormat,
    ) -> Vec<u8> {
        let mut c = turbojpeg::Compressor::new().unwrap();
        c.set_quality(95).unwrap();
        c.set_subsamp(subsamp).unwrap();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let pixels: Vec<u8> = match format {
            turbojpeg::PixelFormat::RGB => img.as_raw().clone(),
            turbojpeg::PixelFormat::GRAY => img.pixels().map(|p| p[1]).collect(),
            turbojpeg::PixelFormat::CMYK => img
                .pixels()
                .flat_map(|p| [255 - p[0], 255 - p[1], 255 - p[2], 0])
                .collect(),
            _ => unreachable!(),
        };
        let pitch = w * format.size();
        c.compress_to_vec(turbojpeg::Image {
            pixels: pixels.as_slice(),
            width: w,
            pitch,
            height: h,
            format,
        })
        .unwrap()
    }

    /// Mean absolute difference per channel between two images of the same size.
    fn mad(a: &RgbImage, b: &RgbImage) -> f64 {
        assert_eq!(a.dimensions(), b.dimensions());
        let sum: u64 = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| u64::from(x.abs_diff(*y)))
            .sum();
        sum as f64 / a.as_raw().len() as f64
    }

    /// The source resized to `(w, h)` the plain way (RGB, Catmull-Rom): what the derivatives
    /// should look like.
    fn reference(src: &RgbImage, w: u32, h: u32) -> RgbImage {
        image::imageops::resize(src, w, h, image::imageops::FilterType::CatmullRom)
    }

    #[test]
    fn planes_give_the_same_pictures_as_rgb_for_every_sampling_and_odd_sizes() {
        use turbojpeg::Subsamp::*;
        for (w, h) in [(3000, 2001), (1001, 751), (640, 480)] {
            let src = source(w, h);
            for sub in [Sub2x2, Sub2x1, None, Sub1x2, Sub4x1] {
                let bytes = jpeg(&src, sub, turbojpeg::PixelFormat::RGB);
                let planes = super::Planes::decode_jpeg(
                    &bytes,
                    |_| turbojpeg::ScalingFactor::ONE,
                    256,
                    |_, _| true,
                );
                if sub == Sub2x2 {
                    let (planes, fw, fh) = planes.unwrap();
                    assert_eq!((fw, fh), (w, h));
                    assert_eq!(planes.dimensions(), (w, h), "{sub:?}");
                } else {
                    // Other samplings go through RGB.
                    assert!(planes.is_err(), "{sub:?}");
                }
                let d = make_derivatives(&bytes, "image/jpeg", Option::None).unwrap();
                let (pw, ph) = d.preview_size;
                assert_eq!(pw.max(ph), w.max(h).min(1440), "{w}x{h} {sub:?}");
                let preview = image::load_from_memory(&d.preview).unwrap().to_rgb8();
                let thumb = image::load_from_memory(&d.thumbnail).unwrap().to_rgb8();
                // Against the same source resized the plain way, and against the RGB path's
                // derivatives (decode to RGB, resize RGB, encode RGB).
                let (dp, dt) = (
                    mad(&preview, &reference(&src, pw, ph)),
                    mad(&thumb, &reference(&src, d.thumb_size.0, d.thumb_size.1)),
                );
                let (decoded, fw, fh) = crate::derive::decode_jpeg_turbo(&bytes, 1440).unwrap();
                let rgb = crate::derive::from_rgb(&decoded, (fw, fh), Option::None).unwrap();
                let rgb_preview = image::load_from_memory(&rgb.preview).unwrap().to_rgb8();
                let rgb_thumb = image::load_from_memory(&rgb.thumbnail).unwrap().to_rgb8();
                let (rp, rt) = (
                    mad(&rgb_preview, &reference(&src, pw, ph)),
                    mad(&rgb_thumb, &reference(&src, d.thumb_size.0, d.thumb_size.1)),
                );
                eprintln!("{w}x{h} {sub:?}: planes {dp:.2} / {dt:.2}, RGB {rp:.2} / {rt:.2}");
                assert!(
                    dp < rp + 0.5 && dt < rt + 0.5,
                    "{w}x{h} {sub:?}: planes {dp:.2} / {dt:.2}, RGB {rp:.2} / {rt:.2}"
                );
            }
        }
    }

    #[test]
    fn orientation_turns_every_plane_and_odd_sizes_survive() {
        let src = source(1001, 751);
        let bytes = jpeg(
            &src,
            turbojpeg::Subsamp::Sub2x2,
            turbojpeg::PixelFormat::RGB,
        );
        for o in 1..=8u32 {
            let d = make_derivatives(&bytes, "image/jpeg", Some(o)).unwrap();
            let turned = {
                let mut i = image::DynamicImage::ImageRgb8(src.clone());
                i.apply_orientation(image::metadata::Orientation::from_exif(o as u8).unwrap());
                i.to_rgb8()
            };
            let preview = image::load_from_memory(&d.preview).unwrap().to_rgb8();
            assert_eq!(preview.dimensions(), turned.dimensions(), "orientation {o}");
            assert_eq!((d.width, d.height), turned.dimensions(), "orientation {o}");
            let e = mad(&preview, &turned);
            assert!(e < 4.0, "orientation {o}: {e:.2}");
            assert!(!d.thumbhash.is_empty());
        }
    }

    /// Chroma lands under the luma it belongs to for every parity of decoded and output
    /// length: a sharp chroma step at luma x = 1400 must cross half-way exactly where the step
    /// lands in the output (an odd output's chroma covers one padded pixel more; an odd decoded
    /// length has half a chroma sample past the luma).
    #[test]
    fn resized_chroma_stays_under_its_luma() {
        use image::GrayImage;
        let mut resizer = fast_image_resize::Resizer::new();
        for (dw, w) in [
            (1440u32, 333u32),
            (1440, 334),
            (1440, 335),
            (1441, 333),
            (1441, 334),
            (1439, 721),
        ] {
            for vertical in [false, true] {
                let (cw, step) = (dw.div_ceil(2), 700u32);
                let plane = |f: &dyn Fn(u32) -> u8, len: u32| {
                    if vertical {
                        GrayImage::from_fn(40, len, |_, y| image::Luma([f(y)]))
                    } else {
                        GrayImage::from_fn(len, 40, |x, _| image::Luma([f(x)]))
                    }
                };
                let planes = super::Planes {
                    y: plane(&|_| 128, dw),
                    cb: plane(&|c| if c < step { 60 } else { 200 }, cw),
                    cr: plane(&|_| 128, cw),
                };
                let (ow, oh) = if vertical { (40, w) } else { (w, 40) };
                let out = planes
                    .resized(
                        &mut resizer,
                        ow,
                        oh,
                        fast_image_resize::FilterType::CatmullRom,
                    )
                    .unwrap();
                let row: Vec<f64> = (0..w.div_ceil(2))
                    .map(|i| {
                        let (x, y) = if vertical { (5, i) } else { (i, 5) };
                        f64::from(out.cb.get_pixel(x, y)[0])
                    })
                    .collect();
                // Where the samples (centred at i + 0.5) cross 130, half-way from 60 to 200.
                let i = row.iter().position(|v| *v >= 130.0).unwrap();
                let crossing = i as f64 + 0.5 - (row[i] - 130.0) / (row[i] - row[i - 1]);
                let expected = f64::from(2 * step) * f64::from(w) / f64::from(dw) / 2.0;
                assert!(
                    (crossing - expected).abs() < 0.1,
                    "{dw} -> {w} ({}): chroma step at {crossing:.3}, luma's at {expected:.3}",
                    if vertical { "rows" } else { "columns" }
                );
            }
        }
    }

    /// A red/blue checkerboard of `cell`-px squares and its 4:2:0 JPEG.
    fn checkerboard(w: u32, h: u32, cell: u32) -> (RgbImage, Vec<u8>) {
        let src = RgbImage::from_fn(w, h, |x, y| {
            if (x / cell + y / cell).is_multiple_of(2) {
                image::Rgb([220, 30, 30])
            } else {
                image::Rgb([30, 30, 220])
            }
        });
        let bytes = jpeg(
            &src,
            turbojpeg::Subsamp::Sub2x2,
            turbojpeg::PixelFormat::RGB,
        );
        (src, bytes)
    }

    /// A flip along an odd length must not move the colours against the detail: 4:2:0 pairs
    /// pixels from the first one, so a flipped chroma plane would sit one pixel off. Such
    /// derivatives are made the RGB way (decode to RGB, turn, resize, encode), exactly; the
    /// others from the planes, no worse than the RGB way against the source (a sharp
    /// red/blue checkerboard, where a pixel's shift shows).
    #[test]
    fn flips_along_odd_lengths_keep_colours_registered() {
        let (src, bytes) = checkerboard(1001, 751, 4);
        let (decoded, fw, fh) = crate::derive::decode_jpeg_turbo(&bytes, 1440).unwrap();
        for o in 1..=8u32 {
            let d = make_derivatives(&bytes, "image/jpeg", Some(o)).unwrap();
            let rgb = crate::derive::from_rgb(&decoded, (fw, fh), Some(o)).unwrap();
            let load = |b: &[u8]| image::load_from_memory(b).unwrap().to_rgb8();
            let (preview, rgb_preview) = (load(&d.preview), load(&rgb.preview));
            let (thumb, rgb_thumb) = (load(&d.thumbnail), load(&rgb.thumbnail));
            let mut turned = image::DynamicImage::ImageRgb8(src.clone());
            turned.apply_orientation(image::metadata::Orientation::from_exif(o as u8).unwrap());
            let turned = turned.to_rgb8();
            let (e, e_rgb) = (mad(&preview, &turned), mad(&rgb_preview, &turned));
            eprintln!("orientation {o}: planes {e:.2}, RGB {e_rgb:.2} against the source");
            assert!(
                e < e_rgb + 0.5,
                "orientation {o}: planes {e:.2}, RGB {e_rgb:.2}"
            );
            // Flipped along the odd width (2, 3, 4 along the odd height, 6, 7, 8 after a turn).
            if o != 1 && o != 5 {
                let (p, t) = (mad(&preview, &rgb_preview), mad(&thumb, &rgb_thumb));
                assert!(
                    p < 0.01 && t < 0.01,
                    "orientation {o}: {p:.2} / {t:.2} off RGB"
                );
            }
        }
        // Resized (about a third): the planes (a pixel longer where a flipped length would be
        // odd, the chroma planes cropped to what lies under the luma) against the RGB way, both
        // against the turned source at their own sizes. The thumbnail's chroma, resized at half
        // resolution, is softer than the RGB way's on a hard checkerboard (photos: the same).
        let (src, bytes) = checkerboard(4002, 2998, 96);
        let (decoded, fw, fh) = crate::derive::decode_jpeg_turbo(&bytes, 1440).unwrap();
        // The source resized to each size once (resizing and turning commute).
        let mut references = std::collections::HashMap::new();
        for o in 1..=8u32 {
            let d = make_derivatives(&bytes, "image/jpeg", Some(o)).unwrap();
            let rgb = crate::derive::from_rgb(&decoded, (fw, fh), Some(o)).unwrap();
            let turn = image::metadata::Orientation::from_exif(o as u8).unwrap();
            let mut against = |b: &[u8]| {
                let i = image::load_from_memory(b).unwrap().to_rgb8();
                let upright = if o >= 5 {
                    (i.height(), i.width())
                } else {
                    i.dimensions()
                };
                let r = references
                    .entry(upright)
                    .or_insert_with(|| reference(&src, upright.0, upright.1));
                let mut turned = image::DynamicImage::ImageRgb8(r.clone());
                turned.apply_orientation(turn);
                mad(&i, &turned.to_rgb8())
            };
            let (p, p_rgb) = (against(&d.preview), against(&rgb.preview));
            let (t, t_rgb) = (against(&d.thumbnail), against(&rgb.thumbnail));
            eprintln!("resized, orientation {o}: planes {p:.2} / {t:.2}, RGB {p_rgb:.2} / {t_rgb:.2} ({:?})", d.thumb_size);
            assert!(
                p < p_rgb + 0.5 && t < t_rgb * 1.35,
                "resized, orientation {o}: planes {p:.2} / {t:.2}, RGB {p_rgb:.2} / {t_rgb:.2}"
            );
        }
    }

    #[test]
    fn grey_and_cmyk_jpegs_make_derivatives_too() {
        let src = source(900, 600);
        let grey = jpeg(&src, turbojpeg::Subsamp::Gray, turbojpeg::PixelFormat::GRAY);
        let d = make_derivatives(&grey, "image/jpeg", None).unwrap();
        let preview = image::load_from_memory(&d.preview).unwrap().to_rgb8();
        let expected = RgbImage::from_fn(900, 600, |x, y| {
            let g = src.get_pixel(x, y)[1];
            image::Rgb([g, g, g])
        });
        let e = mad(&preview, &expected);
        assert!(e < 4.0, "grey: {e:.2}");
        // CMYK (Adobe YCCK): not for the planes; decoded to RGB instead.
        let cmyk = jpeg(&src, turbojpeg::Subsamp::None, turbojpeg::PixelFormat::CMYK);
        assert!(super::Planes::decode_jpeg(
            &cmyk,
            |_| turbojpeg::ScalingFactor::ONE,
            256,
            |_, _| true
        )
        .is_err());
        let d = make_derivatives(&cmyk, "image/jpeg", None).unwrap();
        assert_eq!(d.preview_size, (900, 600));
    }
}
