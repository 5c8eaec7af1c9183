//! Text in photos: PP-OCRv4 (RapidOCR's ONNX export, shipped in PyPI's
//! `rapidocr-onnxruntime`): DB text detection, then CRNN recognition with CTC decoding.
//!
//! Follows RapidOCR's pre- and post-processing (BGR input, `(x/255 − 0.5)/0.5`, probability
//! map thresholded at 0.3, regions scoring under 0.5 dropped, boxes grown by the "unclip"
//! distance `area × 1.6 / perimeter`, lines at height 48), with one simplification: regions are
//! axis-aligned rectangles (connected components of the map) rather than rotated ones, so
//! strongly slanted text reads worse than in RapidOCR. The 180° classifier is not run.
//! The recogniser's alphabet is read from the model's metadata (`character`), as RapidOCR does.

use image::RgbImage;

use crate::prep::{resize, to_tensor, Filter};
use crate::runtime::Model;
use crate::{MlError, Result};

/// The detector's input: the longer side at most this (multiples of 32).
const DET_MAX_SIDE: u32 = 960;
const DET_THRESH: f32 = 0.3;
const BOX_THRESH: f32 = 0.5;
const UNCLIP: f32 = 1.6;
const MAX_BOXES: usize = 1000;
const REC_HEIGHT: u32 = 48;
const REC_MIN_WIDTH: u32 = 320;
/// Lines read with less confidence are dropped (RapidOCR's `text_score`).
const TEXT_SCORE: f32 = 0.5;

/// One line of text found in an image.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TextLine {
    pub text: String,
    /// Mean probability of its characters.
    pub score: f32,
    /// x1, y1, x2, y2 in the image's pixels.
    pub bbox: [f32; 4],
}

pub struct Ocr {
    det: Model,
    rec: Model,
    /// Index 0 is CTC's blank; the last entry is the space.
    alphabet: Vec<String>,
}

const HALF: [f32; 3] = [127.5, 127.5, 127.5];

impl Ocr {
    pub fn new(det: Model, rec: Model) -> Result<Self> {
        let s = rec
            .session
            .lock()
            .map_err(|_| rec.err("session lock poisoned"))?;
        let chars = s
            .metadata()
            .map_err(|e| rec.err(e.to_string()))?
            .custom("character");
        drop(s);
        let chars = chars
            .ok_or_else(|| rec.err("the recogniser has no `character` list in its metadata"))?;
        let mut alphabet = vec![String::new()];
        alphabet.extend(chars.lines().map(str::to_owned));
        alphabet.push(" ".into());
        Ok(Self { det, rec, alphabet })
    }

    /// The lines of text in `img`, top to bottom, left to right.
    pub fn read(&self, img: &RgbImage) -> Result<Vec<TextLine>> {
        let mut lines = Vec::new();
        for b in self.detect(img)? {
            let (x1, y1) = (b[0] as u32, b[1] as u32);
            let (w, h) = ((b[2] - b[0]) as u32, (b[3] - b[1]) as u32);
            if w < 4 || h < 4 {
                continue;
            }
            let mut crop = image::imageops::crop_imm(img, x1, y1, w, h).to_image();
            // A tall narrow box is vertical text: read it turned.
            if h as f32 >= 1.5 * w as f32 {
                crop = image::imageops::rotate270(&crop);
            }
            let (text, score) = self.recognise(&crop)?;
            if score >= TEXT_SCORE && !text.trim().is_empty() {
                lines.push(TextLine {
                    text: text.trim().to_owned(),
                    score,
                    bbox: b,
                });
            }
        }
        Ok(lines)
    }

    /// Text boxes (x1, y1, x2, y2 in `img`'s pixels), sorted in reading order.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<[f32; 4]>> {
        let (w, h) = (img.width().max(1), img.height().max(1));
        let ratio = (DET_MAX_SIDE as f32 / w.max(h) as f32).min(1.0);
        let snap = |x: u32| (((x as f32 * ratio) / 32.0).round() as u32 * 32).max(32);
        let (dw, dh) = (snap(w), snap(h));
        let small = resize(img, dw, dh, Filter::Bilinear)?;
        let out = self.det.run_f32(to_tensor(&small, HALF, HALF, true))?;
        let (shape, prob) = out
            .into_iter()
            .next()
            .ok_or_else(|| self.det.err("no output"))?;
        let (mh, mw) = match shape.as_slice() {
            [_, _, h, w] => (*h as usize, *w as usize),
            _ => return Err(self.det.err(format!("unexpected output shape {shape:?}"))),
        };
        if prob.len() < mh * mw {
            return Err(self.det.err("output smaller than its shape"));
        }
        let (sx, sy) = (w as f32 / mw as f32, h as f32 / mh as f32);
        let mut boxes: Vec<[f32; 4]> = regions(&prob[..mh * mw], mw, mh)
            .into_iter()
            .map(|[x1, y1, x2, y2]| {
                [
                    (x1 * sx).clamp(0.0, w as f32),
                    (y1 * sy).clamp(0.0, h as f32),
                    (x2 * sx).clamp(0.0, w as f32),
                    (y2 * sy).clamp(0.0, h as f32),
                ]
            })
            .collect();
        // Reading order: by line (centres within half a line's height), then left to right.
        boxes.sort_by(|a, b| a[1].total_cmp(&b[1]));
        let mut ordered: Vec<Vec<[f32; 4]>> = Vec::new();
        for b in boxes {
            let cy = (b[1] + b[3]) / 2.0;
            match ordered.last_mut() {
                Some(line)
                    if line.iter().any(|o| {
                        (cy - (o[1] + o[3]) / 2.0).abs() < (o[3] - o[1]).max(b[3] - b[1]) / 2.0
                    }) =>
                {
                    line.push(b)
                }
                _ => ordered.push(vec![b]),
            }
        }
        Ok(ordered
            .into_iter()
            .flat_map(|mut l| {
                l.sort_by(|a, b| a[0].total_cmp(&b[0]));
                l
            })
            .collect())
    }

    /// One line of text: height 48, width padded to at least 320; greedy CTC decoding.
    pub fn recognise(&self, line: &RgbImage) -> Result<(String, f32)> {
        let (w, h) = (line.width().max(1), line.height().max(1));
        let rw = ((REC_HEIGHT as f32 * w as f32 / h as f32).ceil() as u32).clamp(1, 4096);
        let width = rw.max(REC_MIN_WIDTH);
        let scaled = resize(line, rw, REC_HEIGHT, Filter::Bilinear)?;
        let mut canvas = RgbImage::new(width, REC_HEIGHT);
        image::imageops::replace(&mut canvas, &scaled, 0, 0);
        let mut t = to_tensor(&canvas, HALF, HALF, true);
        // Padding is zero after normalisation, as RapidOCR pads.
        for c in 0..3 {
            for y in 0..REC_HEIGHT as usize {
                for x in rw as usize..width as usize {
                    t[[0, c, y, x]] = 0.0;
                }
            }
        }
        let out = self.rec.run_f32(t)?;
        let (shape, probs) = out
            .into_iter()
            .next()
            .ok_or_else(|| self.rec.err("no output"))?;
        let (steps, classes) = match shape.as_slice() {
            [_, t, c] => (*t as usize, *c as usize),
            _ => return Err(self.rec.err(format!("unexpected output shape {shape:?}"))),
        };
        if classes != self.alphabet.len() || probs.len() < steps * classes {
            return Err(MlError::Model {
                model: self.rec.path.display().to_string(),
                reason: format!(
                    "{classes} output classes for an alphabet of {}",
                    self.alphabet.len()
                ),
            });
        }
        Ok(ctc_greedy(
            &probs[..steps * classes],
            classes,
            &self.alphabet,
        ))
    }
}

/// Greedy CTC: the best class per step, repeats merged, blanks (class 0) dropped. The score is
/// the mean probability of the kept characters.
pub fn ctc_greedy(probs: &[f32], classes: usize, alphabet: &[String]) -> (String, f32) {
    let mut text = String::new();
    let (mut sum, mut n) = (0f32, 0usize);
    let mut prev = 0usize;
    for step in probs.chunks_exact(classes.max(1)) {
        let (best, p) =
            step.iter()
                .enumerate()
                .fold((0, f32::MIN), |m, (i, &p)| if p > m.1 { (i, p) } else { m });
        if best != 0 && best != prev {
            if let Some(c) = alphabet.get(best) {
                text.push_str(c);
                sum += p;
                n += 1;
            }
        }
        prev = best;
    }
    (text, if n == 0 { 0.0 } else { sum / n as f32 })
}

/// Regions of the probability map `prob` (`w × h`): pixels over the threshold, dilated by
/// one pixel right and down, grouped into 8-connected components; each kept component's
/// bounding box grown by the unclip distance. Boxes in map pixels.
pub fn regions(prob: &[f32], w: usize, h: usize) -> Vec<[f32; 4]> {
    let mut on = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            if prob[y * w + x] > DET_THRESH {
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx < w && ny < h {
                        on[ny * w + nx] = true;
                    }
                }
            }
        }
    }
    let mut seen = vec![false; w * h];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..w * h {
        if !on[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut x1, mut y1, mut x2, mut y2) = (usize::MAX, usize::MAX, 0, 0);
        let (mut sum, mut count) = (0f32, 0usize);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            x1 = x1.min(x);
            y1 = y1.min(y);
            x2 = x2.max(x);
            y2 = y2.max(y);
            sum += prob[i];
            count += 1;
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if on[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        let (bw, bh) = ((x2 - x1 + 1) as f32, (y2 - y1 + 1) as f32);
        if bw.min(bh) < 3.0 || sum / (count as f32) < BOX_THRESH {
            continue;
        }
        let d = bw * bh * UNCLIP / (2.0 * (bw + bh));
        out.push([
            x1 as f32 - d,
            y1 as f32 - d,
            x2 as f32 + 1.0 + d,
            y2 as f32 + 1.0 + d,
        ]);
        if out.len() >= MAX_BOXES {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctc_merges_repeats_and_drops_blanks() {
        let alphabet: Vec<String> = ["", "a", "b", " "].iter().map(|s| s.to_string()).collect();
        // steps: a a blank a b b blank
        let steps = [1, 1, 0, 1, 2, 2, 0];
        let mut probs = Vec::new();
        for s in steps {
            let mut row = vec![0.0f32; 4];
            row[s] = 0.9;
            probs.extend(row);
        }
        let (t, score) = ctc_greedy(&probs, 4, &alphabet);
        assert_eq!(t, "aab");
        assert!((score - 0.9).abs() < 1e-6);
        assert_eq!(
            ctc_greedy(&[0.9, 0.1, 0.0, 0.0], 4, &alphabet),
            (String::new(), 0.0)
        );
    }

    #[test]
    fn regions_are_components_grown_by_the_unclip_distance() {
        let (w, h) = (40, 20);
        let mut prob = vec![0.0f32; w * h];
        // A 10 × 4 block of text at (5, 5), and a faint one (score 0.35) at (25, 5).
        for y in 5..9 {
            for x in 5..15 {
                prob[y * w + x] = 0.9;
            }
            for x in 25..35 {
                prob[y * w + x] = 0.35;
            }
        }
        let r = regions(&prob, w, h);
        assert_eq!(r.len(), 1, "{r:?}");
        // Dilated to 11 × 5, then grown by 11·5·1.6 / 32 = 2.75 on every side.
        let b = r[0];
        assert!(
            (b[0] - 2.25).abs() < 1e-4 && (b[1] - 2.25).abs() < 1e-4,
            "{b:?}"
        );
        assert!(
            (b[2] - 18.75).abs() < 1e-4 && (b[3] - 12.75).abs() < 1e-4,
            "{b:?}"
        );
    }
}
