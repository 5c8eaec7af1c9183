//! Perceptual hash for near-duplicate detection: signs of the 8×8 lowest DCT-II coefficients of
//! a 32×32 grey version of the oriented image (bit `8u + v`, `u` horizontal frequency). The
//! exact definition matters: `tessera_core::dupes` derives the hashes of rotated copies from
//! these bits, so keep the two in step.

use image::{imageops::FilterType, DynamicImage, GrayImage};

use crate::MediaError;

const N: usize = 32;

/// Hash of an already decoded, oriented image (a thumbnail is plenty).
pub fn phash_image(img: &DynamicImage) -> u64 {
    let grey: GrayImage = img.to_luma8();
    let small = image::imageops::resize(&grey, N as u32, N as u32, FilterType::Triangle);
    let f: Vec<f64> = small.pixels().map(|p| f64::from(p.0[0])).collect();
    // cos[k][x] = cos(π (2x + 1) k / 2N), k < 8.
    let mut cos = [[0.0f64; N]; 8];
    for (k, row) in cos.iter_mut().enumerate() {
        for (x, c) in row.iter_mut().enumerate() {
            *c = (std::f64::consts::PI * (2 * x + 1) as f64 * k as f64 / (2 * N) as f64).cos();
        }
    }
    // Rows first: r[y][u] = Σx f(x, y) cos[u][x]; then c(u, v) = Σy r[y][u] cos[v][y].
    let mut r = [[0.0f64; 8]; N];
    for (y, ry) in r.iter_mut().enumerate() {
        let line = &f[y * N..(y + 1) * N];
        for (u, out) in ry.iter_mut().enumerate() {
            *out = line.iter().zip(cos[u].iter()).map(|(a, b)| a * b).sum();
        }
    }
    let mut h = 1u64; // DC: always set
    for u in 0..8 {
        for (v, cv) in cos.iter().enumerate() {
            if u == 0 && v == 0 {
                continue;
            }
            let c: f64 = r.iter().zip(cv.iter()).map(|(ry, c)| ry[u] * c).sum();
            if c > 0.0 {
                h |= 1 << (8 * u + v);
            }
        }
    }
    h
}

/// Hash of an encoded image (the JPEG thumbnail the pipeline made).
pub fn phash_encoded(bytes: &[u8]) -> Result<u64, MediaError> {
    let img = image::load_from_memory(bytes).map_err(|e| MediaError::Decode {
        format: "thumbnail",
        reason: e.to_string(),
    })?;
    Ok(phash_image(&img))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    fn scene(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            let r = (255.0 * fx) as u8;
            let g = (255.0 * (1.0 - fy) * fx.sin().abs()) as u8;
            let b = if (fx - 0.3).powi(2) + (fy - 0.6).powi(2) < 0.04 {
                250
            } else {
                30
            };
            Rgb([r, g, b])
        }))
    }

    #[test]
    fn rotated_and_resized_copies_match_their_derived_hashes() {
        let img = scene(400, 300);
        let h = phash_image(&img);
        let small = img.resize_exact(200, 150, FilterType::Triangle);
        let d = (phash_image(&small) ^ h).count_ones();
        assert!(d <= 4, "resized copy at distance {d}");
        let rot = phash_image(&img.rotate90());
        let derived = tessera_core_rotations(h);
        assert!(
            (rot ^ derived).count_ones() <= 4,
            "rotated copy at distance {}",
            (rot ^ derived).count_ones()
        );
        let other = phash_image(&img.fliph().flipv().huerotate(120).blur(8.0).rotate90());
        assert_ne!(other, h);
    }

    /// Same bit algebra as `tessera_core::dupes::rotations()[1]` (media does not depend on
    /// core): transpose, then flip the odd horizontal frequencies.
    fn tessera_core_rotations(h: u64) -> u64 {
        let mut t = 0u64;
        for u in 0..8 {
            for v in 0..8 {
                t |= ((h >> (8 * u + v)) & 1) << (8 * v + u);
            }
        }
        t ^ 0xFF00_FF00_FF00_FF00
    }
}
