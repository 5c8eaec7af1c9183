//! CLIP: image embeddings (OpenAI preprocessing) and text embeddings (CLIP's BPE tokenizer in
//! Rust, cached), both L2-normalised, output 0 of the model whatever its name (Immich's
//! exporters named it `embedding`, `image_embedding` or `text_embedding` over time).

use std::collections::HashMap;
use std::sync::Mutex;

use image::RgbImage;
use instant_clip_tokenizer::{Token, Tokenizer};
use tessera_core::pack::normalize;

use crate::prep::{resize, to_tensor, Filter};
use crate::runtime::Model;
use crate::{MlError, Result};

pub const OPENAI_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)] // OpenAI's published values, kept as written
pub const OPENAI_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

pub struct ClipVisual {
    model: Model,
    side: u32,
    mean: [f32; 3],
    std: [f32; 3],
}

/// Shortest side to `side` (bicubic), centre crop `side × side` (Immich's `resize_pil` +
/// `crop_pil`, truncating like they do).
pub fn crop_square(img: &RgbImage, side: u32) -> Result<RgbImage> {
    let (w, h) = (img.width().max(1) as f32, img.height().max(1) as f32);
    let s = side as f32;
    let (nw, nh) = if w < h {
        (side, ((h / w) * s) as u32)
    } else {
        (((w / h) * s) as u32, side)
    };
    let scaled = resize(img, nw.max(side), nh.max(side), Filter::Bicubic)?;
    let left = (scaled.width() as f32 / 2.0 - s / 2.0) as u32;
    let top = (scaled.height() as f32 / 2.0 - s / 2.0) as u32;
    Ok(image::imageops::crop_imm(&scaled, left, top, side, side).to_image())
}

impl ClipVisual {
    pub fn new(model: Model, side: u32, mean: [f32; 3], std: [f32; 3]) -> Self {
        Self {
            model,
            side,
            mean,
            std,
        }
    }

    /// The preprocessed input tensor (exposed for tests against the Python reference).
    pub fn tensor(&self, img: &RgbImage) -> Result<ndarray::Array4<f32>> {
        let sq = crop_square(img, self.side)?;
        let mean = self.mean.map(|m| m * 255.0);
        let std = self.std.map(|s| s * 255.0);
        Ok(to_tensor(&sq, mean, std, false))
    }

    pub fn embed(&self, img: &RgbImage) -> Result<Vec<f32>> {
        let out = self.model.run_f32(self.tensor(img)?)?;
        let (_, mut v) = out
            .into_iter()
            .next()
            .ok_or_else(|| self.model.err("no output"))?;
        normalize(&mut v);
        Ok(v)
    }
}

pub struct ClipTextual {
    model: Model,
    tokenizer: Tokenizer,
    context: usize,
    cache: Mutex<HashMap<String, Vec<f32>>>,
}

const TEXT_CACHE: usize = 4096;

impl ClipTextual {
    pub fn new(model: Model, context: usize) -> Self {
        Self {
            model,
            tokenizer: Tokenizer::new(),
            context: context.max(2),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// `<start> tokens… <end>` padded with 0 to the context length (truncated keeping `<end>`).
    pub fn tokens(&self, text: &str) -> Vec<i64> {
        let clean = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut toks = vec![self.tokenizer.start_of_text()];
        self.tokenizer.encode(&clean, &mut toks);
        toks.truncate(self.context - 1);
        toks.push(self.tokenizer.end_of_text());
        let mut ids: Vec<i64> = toks
            .into_iter()
            .map(|t: Token| i64::from(t.to_u16()))
            .collect();
        ids.resize(self.context, 0);
        ids
    }

    pub fn embed(&self, text: &str) -> Result<Vec<f32>> {
        if let Some(v) = self.cache.lock().ok().and_then(|c| c.get(text).cloned()) {
            return Ok(v);
        }
        let ids = self.tokens(text);
        let name = self.model.input_name()?.to_owned();
        let shape = [1usize, self.context];
        let mut s = self
            .model
            .session
            .lock()
            .map_err(|_| self.model.err("session lock poisoned"))?;
        let out = if self.model.input_i64 {
            let t = ort::value::Tensor::from_array((shape, ids))?;
            s.run(ort::inputs![name => t])?
        } else {
            let ids: Vec<i32> = ids.into_iter().map(|i| i as i32).collect();
            let t = ort::value::Tensor::from_array((shape, ids))?;
            s.run(ort::inputs![name => t])?
        };
        let (_, value) = out.iter().next().ok_or_else(|| MlError::Model {
            model: self.model.path.display().to_string(),
            reason: "no output".into(),
        })?;
        let (_, data) = value.try_extract_tensor::<f32>()?;
        let mut v = data.to_vec();
        drop(out);
        drop(s);
        normalize(&mut v);
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= TEXT_CACHE {
                c.clear();
            }
            c.insert(text.to_owned(), v.clone());
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_square_keeps_the_centre() {
        let mut img = RgbImage::new(400, 200);
        for (x, _, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([if (100..300).contains(&x) { 255 } else { 0 }, 0, 0]);
        }
        let sq = crop_square(&img, 100).unwrap();
        assert_eq!((sq.width(), sq.height()), (100, 100));
        // The middle half of the image was red, the crop is the middle: all red.
        assert!(sq.pixels().all(|p| p[0] > 200), "{:?}", sq.get_pixel(0, 0));
    }
}
