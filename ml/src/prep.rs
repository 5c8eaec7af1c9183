//! Image preparation shared by the models: decoding, SIMD resizing, letterboxing.

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

use crate::{MlError, Result};

/// Decodes JPEG/PNG/WebP bytes into RGB (no orientation is applied: Tessera's previews are
/// already upright, and Immich's `/predict` does not rotate either).
pub fn decode(bytes: &[u8]) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(MlError::Image("the image is empty (0 bytes)".into()));
    }
    image::load_from_memory(bytes)
        .map(|i| i.to_rgb8())
        .map_err(|e| MlError::Image(e.to_string()))
}

#[derive(Debug, Clone, Copy)]
pub enum Filter {
    Bilinear,
    /// Catmull-Rom, the kernel of PIL's bicubic.
    Bicubic,
}

/// Resizes to exactly `w × h`.
pub fn resize(src: &RgbImage, w: u32, h: u32, filter: Filter) -> Result<RgbImage> {
    let (w, h) = (w.max(1), h.max(1));
    if src.width() == w && src.height() == h {
        return Ok(src.clone());
    }
    let from = Image::from_slice_u8(
        src.width(),
        src.height(),
        &mut src.as_raw().clone(),
        PixelType::U8x3,
    )
    .map_err(|e| MlError::Image(e.to_string()))?
    .copy();
    let mut to = Image::new(w, h, PixelType::U8x3);
    let alg = match filter {
        Filter::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
        Filter::Bicubic => ResizeAlg::Convolution(FilterType::CatmullRom),
    };
    Resizer::new()
        .resize(&from, &mut to, &ResizeOptions::new().resize_alg(alg))
        .map_err(|e| MlError::Image(e.to_string()))?;
    RgbImage::from_raw(w, h, to.into_vec()).ok_or_else(|| MlError::Image("resize buffer".into()))
}

/// Scales `src` to fit `side × side` keeping its aspect ratio and pastes it at the top-left of
/// a black canvas (insightface's layout). Returns the canvas and the scale applied.
pub fn letterbox(src: &RgbImage, side: u32) -> Result<(RgbImage, f32)> {
    let (w, h) = (src.width().max(1), src.height().max(1));
    let scale = (side as f32 / w as f32).min(side as f32 / h as f32);
    let nw = ((w as f32 * scale) as u32).clamp(1, side);
    let nh = ((h as f32 * scale) as u32).clamp(1, side);
    let small = resize(src, nw, nh, Filter::Bilinear)?;
    let mut canvas = RgbImage::new(side, side);
    image::imageops::replace(&mut canvas, &small, 0, 0);
    Ok((canvas, nh as f32 / h as f32))
}

/// HWC RGB8 → NCHW f32 with `(x - mean[c]) / std[c]`; `bgr` swaps the channel order.
pub fn to_tensor(img: &RgbImage, mean: [f32; 3], std: [f32; 3], bgr: bool) -> ndarray::Array4<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut t = ndarray::Array4::<f32>::zeros((1, 3, h, w));
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            let src = if bgr { 2 - c } else { c };
            t[[0, c, y as usize, x as usize]] = (f32::from(p[src]) - mean[c]) / std[c];
        }
    }
    t
}

/// Concatenates single-image tensors into one batch.
pub fn stack(items: &[ndarray::Array4<f32>]) -> Result<ndarray::Array4<f32>> {
    let views: Vec<_> = items.iter().map(|a| a.view()).collect();
    ndarray::concatenate(ndarray::Axis(0), &views).map_err(|e| MlError::Image(e.to_string()))
}
