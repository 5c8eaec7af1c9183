//! Faces: detection (SCRFD as in Immich's buffalo_l, or YuNet), alignment of the five
//! landmarks onto the ArcFace template by a least-squares similarity transform, and embedding
//! (ArcFace or SFace).

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use crate::prep::{letterbox, stack, to_tensor};
use crate::runtime::Model;
use crate::{MlError, Result};

/// A detected face in pixels of the analysed image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
    pub score: f32,
    /// Left eye, right eye, nose, left mouth corner, right mouth corner (image left/right).
    pub landmarks: [[f32; 2]; 5],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectorKind {
    /// insightface SCRFD (buffalo_l `det_10g`): RGB, (x − 127.5) / 128, 2 anchors per cell.
    Scrfd,
    /// OpenCV YuNet 2023mar: BGR 0–255, one anchor per cell, sigmoid scores inside the model.
    Yunet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbedderKind {
    /// ArcFace (buffalo_l `w600k_r50`): RGB, (x − 127.5) / 127.5, 512-d.
    Arcface,
    /// OpenCV SFace: RGB 0–255, 128-d.
    Sface,
}

const STRIDES: [usize; 3] = [8, 16, 32];

pub struct FaceDetector {
    model: Model,
    kind: DetectorKind,
    side: u32,
}

impl FaceDetector {
    pub fn new(model: Model, kind: DetectorKind, side: u32) -> Self {
        Self { model, kind, side }
    }

    /// Faces scoring at least `min_score`, best first, after non-maximum suppression.
    pub fn detect(&self, img: &RgbImage, min_score: f32) -> Result<Vec<Detection>> {
        let (canvas, scale) = letterbox(img, self.side)?;
        let input = match self.kind {
            DetectorKind::Scrfd => to_tensor(&canvas, [127.5; 3], [128.0; 3], false),
            DetectorKind::Yunet => to_tensor(&canvas, [0.0; 3], [1.0; 3], true),
        };
        let outputs = self.model.run_f32(input)?;
        let names = &self.model.outputs;
        let mut dets = match self.kind {
            DetectorKind::Scrfd => decode_scrfd(&outputs, self.side as usize, min_score)
                .ok_or_else(|| self.model.err("outputs are not SCRFD's (9 outputs: scores, boxes, landmarks for strides 8/16/32)"))?,
            DetectorKind::Yunet => decode_yunet(names, &outputs, self.side as usize, min_score)
                .ok_or_else(|| self.model.err("outputs are not YuNet's (cls/obj/bbox/kps for strides 8/16/32)"))?,
        };
        let iou = match self.kind {
            DetectorKind::Scrfd => 0.4,
            DetectorKind::Yunet => 0.3,
        };
        let (w, h) = (img.width() as f32, img.height() as f32);
        for d in &mut dets {
            for v in &mut d.bbox {
                *v /= scale;
            }
            d.bbox = [
                d.bbox[0].clamp(0.0, w),
                d.bbox[1].clamp(0.0, h),
                d.bbox[2].clamp(0.0, w),
                d.bbox[3].clamp(0.0, h),
            ];
            for p in &mut d.landmarks {
                p[0] /= scale;
                p[1] /= scale;
            }
        }
        Ok(nms(dets, iou))
    }
}

/// SCRFD: outputs `[score_8, score_16, score_32, bbox_8.., kps_8..]`, two anchors per cell,
/// distances in units of the stride from the cell's corner.
pub fn decode_scrfd(
    outputs: &[(Vec<i64>, Vec<f32>)],
    side: usize,
    min_score: f32,
) -> Option<Vec<Detection>> {
    if outputs.len() < 9 {
        return None;
    }
    let mut out = Vec::new();
    for (i, s) in STRIDES.iter().enumerate() {
        let cols = side / s;
        let n = cols * cols * 2;
        let (scores, boxes, kps) = (&outputs[i].1, &outputs[i + 3].1, &outputs[i + 6].1);
        if scores.len() < n || boxes.len() < n * 4 || kps.len() < n * 10 {
            return None;
        }
        let sf = *s as f32;
        for a in 0..n {
            let score = scores[a];
            if score < min_score {
                continue;
            }
            let cell = a / 2;
            let (cx, cy) = ((cell % cols) as f32 * sf, (cell / cols) as f32 * sf);
            let b = &boxes[a * 4..a * 4 + 4];
            let k = &kps[a * 10..a * 10 + 10];
            let mut landmarks = [[0f32; 2]; 5];
            for (j, p) in landmarks.iter_mut().enumerate() {
                *p = [cx + k[2 * j] * sf, cy + k[2 * j + 1] * sf];
            }
            out.push(Detection {
                bbox: [
                    cx - b[0] * sf,
                    cy - b[1] * sf,
                    cx + b[2] * sf,
                    cy + b[3] * sf,
                ],
                score,
                landmarks,
            });
        }
    }
    Some(out)
}

/// YuNet: `cls_s`, `obj_s` (sigmoid applied), `bbox_s` (cx, cy offsets and log sizes in
/// strides), `kps_s` (offsets in strides); one anchor per cell, row-major.
pub fn decode_yunet(
    names: &[String],
    outputs: &[(Vec<i64>, Vec<f32>)],
    side: usize,
    min_score: f32,
) -> Option<Vec<Detection>> {
    let get = |n: String| names.iter().position(|x| *x == n).map(|i| &outputs[i].1);
    let mut out = Vec::new();
    for s in STRIDES {
        let cols = side / s;
        let n = cols * cols;
        let (cls, obj, bbox, kps) = (
            get(format!("cls_{s}"))?,
            get(format!("obj_{s}"))?,
            get(format!("bbox_{s}"))?,
            get(format!("kps_{s}"))?,
        );
        if cls.len() < n || obj.len() < n || bbox.len() < n * 4 || kps.len() < n * 10 {
            return None;
        }
        let sf = s as f32;
        for i in 0..n {
            let score = (cls[i].clamp(0.0, 1.0) * obj[i].clamp(0.0, 1.0)).sqrt();
            if score < min_score {
                continue;
            }
            let (c, r) = ((i % cols) as f32, (i / cols) as f32);
            let b = &bbox[i * 4..i * 4 + 4];
            let (cx, cy) = ((c + b[0]) * sf, (r + b[1]) * sf);
            let (w, h) = (b[2].exp() * sf, b[3].exp() * sf);
            let k = &kps[i * 10..i * 10 + 10];
            let mut landmarks = [[0f32; 2]; 5];
            for (j, p) in landmarks.iter_mut().enumerate() {
                *p = [(k[2 * j] + c) * sf, (k[2 * j + 1] + r) * sf];
            }
            out.push(Detection {
                bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
                score,
                landmarks,
            });
        }
    }
    Some(out)
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// Greedy non-maximum suppression, best score first.
pub fn nms(mut dets: Vec<Detection>, threshold: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut keep: Vec<Detection> = Vec::new();
    for d in dets {
        if keep.iter().all(|k| iou(&k.bbox, &d.bbox) <= threshold) {
            keep.push(d);
        }
    }
    keep
}

/// insightface's `arcface_dst` / OpenCV's SFace template for a 112 × 112 crop.
pub const ARCFACE_TEMPLATE: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// Least-squares similarity transform (rotation, uniform scale, translation; no reflection)
/// taking `src` points onto `dst`: `[a, -b, tx; b, a, ty]`. This is Umeyama's estimate in 2-D.
pub fn similarity(src: &[[f32; 2]; 5], dst: &[[f32; 2]; 5]) -> [[f32; 3]; 2] {
    let n = src.len() as f32;
    let mean = |p: &[[f32; 2]; 5]| {
        let (x, y) = p.iter().fold((0.0, 0.0), |(x, y), q| (x + q[0], y + q[1]));
        (x / n, y / n)
    };
    let ((sx, sy), (dx, dy)) = (mean(src), mean(dst));
    let (mut num_a, mut num_b, mut den) = (0f32, 0f32, 0f32);
    for (s, d) in src.iter().zip(dst) {
        let (xs, ys, xd, yd) = (s[0] - sx, s[1] - sy, d[0] - dx, d[1] - dy);
        num_a += xs * xd + ys * yd;
        num_b += xs * yd - ys * xd;
        den += xs * xs + ys * ys;
    }
    let (a, b) = if den > 0.0 {
        (num_a / den, num_b / den)
    } else {
        (1.0, 0.0)
    };
    [
        [a, -b, dx - (a * sx - b * sy)],
        [b, a, dy - (b * sx + a * sy)],
    ]
}

/// Warps `img` by the affine map `m` (source → destination) into a `side × side` crop,
/// sampling bilinearly with a black border (OpenCV `warpAffine`'s defaults).
pub fn warp(img: &RgbImage, m: &[[f32; 3]; 2], side: u32) -> RgbImage {
    let (a, b, c, d) = (m[0][0], m[0][1], m[1][0], m[1][1]);
    let det = a * d - b * c;
    let mut out = RgbImage::new(side, side);
    if det.abs() < 1e-12 {
        return out;
    }
    let (ia, ib, ic, id) = (d / det, -b / det, -c / det, a / det);
    let (w, h) = (img.width() as i64, img.height() as i64);
    let px = |x: i64, y: i64, ch: usize| -> f32 {
        if x < 0 || y < 0 || x >= w || y >= h {
            0.0
        } else {
            f32::from(img.get_pixel(x as u32, y as u32)[ch])
        }
    };
    for (x, y, p) in out.enumerate_pixels_mut() {
        let (u, v) = (x as f32 - m[0][2], y as f32 - m[1][2]);
        let (sx, sy) = (ia * u + ib * v, ic * u + id * v);
        let (x0, y0) = (sx.floor(), sy.floor());
        let (fx, fy) = (sx - x0, sy - y0);
        let (x0, y0) = (x0 as i64, y0 as i64);
        let mut rgb = [0u8; 3];
        for (ch, v) in rgb.iter_mut().enumerate() {
            let top = px(x0, y0, ch) * (1.0 - fx) + px(x0 + 1, y0, ch) * fx;
            let bot = px(x0, y0 + 1, ch) * (1.0 - fx) + px(x0 + 1, y0 + 1, ch) * fx;
            *v = (top * (1.0 - fy) + bot * fy).round().clamp(0.0, 255.0) as u8;
        }
        *p = Rgb(rgb);
    }
    out
}

/// The aligned 112 × 112 crop of a face.
pub fn align(img: &RgbImage, d: &Detection) -> RgbImage {
    warp(img, &similarity(&d.landmarks, &ARCFACE_TEMPLATE), 112)
}

pub struct FaceEmbedder {
    model: Model,
    kind: EmbedderKind,
}

impl FaceEmbedder {
    pub fn new(model: Model, kind: EmbedderKind) -> Self {
        Self { model, kind }
    }

    /// Raw embeddings (as the model outputs them) of aligned 112 × 112 crops, batched when the
    /// model takes a batch.
    pub fn embed(&self, crops: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        let tensors: Vec<_> = crops
            .iter()
            .map(|c| match self.kind {
                EmbedderKind::Arcface => to_tensor(c, [127.5; 3], [127.5; 3], false),
                EmbedderKind::Sface => to_tensor(c, [0.0; 3], [1.0; 3], false),
            })
            .collect();
        let mut out = Vec::with_capacity(crops.len());
        let chunk = if self.model.batched() { 16 } else { 1 };
        for group in tensors.chunks(chunk) {
            let n = group.len();
            let outputs = self.model.run_f32(stack(group)?)?;
            let (_, data) = outputs
                .into_iter()
                .next()
                .ok_or_else(|| self.model.err("no output"))?;
            if n == 0 || data.is_empty() || data.len() % n != 0 {
                return Err(MlError::Model {
                    model: self.model.path.display().to_string(),
                    reason: format!("{} output values for {n} faces", data.len()),
                });
            }
            out.extend(data.chunks(data.len() / n).map(<[f32]>::to_vec));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_recovers_a_known_transform() {
        // Rotate by 30°, scale 2, shift (5, -3): the estimate maps the points back exactly.
        let (c, s) = (
            30f32.to_radians().cos() * 2.0,
            30f32.to_radians().sin() * 2.0,
        );
        let mut src = ARCFACE_TEMPLATE;
        for p in &mut src {
            let (x, y) = (p[0], p[1]);
            *p = [c * x - s * y + 5.0, s * x + c * y - 3.0];
        }
        let m = similarity(&src, &ARCFACE_TEMPLATE);
        for (p, q) in src.iter().zip(ARCFACE_TEMPLATE) {
            let x = m[0][0] * p[0] + m[0][1] * p[1] + m[0][2];
            let y = m[1][0] * p[0] + m[1][1] * p[1] + m[1][2];
            assert!(
                (x - q[0]).abs() < 1e-3 && (y - q[1]).abs() < 1e-3,
                "{x},{y} vs {q:?}"
            );
        }
    }

    #[test]
    fn warp_identity_copies_and_nms_keeps_the_best() {
        let mut img = RgbImage::new(112, 112);
        img.put_pixel(10, 20, Rgb([200, 100, 50]));
        let same = warp(&img, &[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], 112);
        assert_eq!(same.get_pixel(10, 20), &Rgb([200, 100, 50]));
        let d = |x: f32, score: f32| Detection {
            bbox: [x, 0.0, x + 10.0, 10.0],
            score,
            landmarks: [[0.0; 2]; 5],
        };
        let kept = nms(vec![d(0.0, 0.8), d(1.0, 0.9), d(50.0, 0.7)], 0.4);
        assert_eq!(kept.iter().map(|k| k.score).collect::<Vec<_>>(), [0.9, 0.7]);
    }

    #[test]
    fn scrfd_and_yunet_decoding_place_boxes_on_the_grid() {
        // One confident anchor per model at stride 8, cell (col 2, row 1).
        let side = 64;
        let mut outs: Vec<(Vec<i64>, Vec<f32>)> = Vec::new();
        for s in STRIDES {
            let n = (side / s) * (side / s) * 2;
            let mut sc = vec![0.0; n];
            if s == 8 {
                sc[(8 + 2) * 2] = 0.95;
            }
            outs.push((vec![n as i64, 1], sc));
        }
        for s in STRIDES {
            let n = (side / s) * (side / s) * 2;
            outs.push((vec![n as i64, 4], vec![1.0; n * 4]));
        }
        for s in STRIDES {
            let n = (side / s) * (side / s) * 2;
            outs.push((vec![n as i64, 10], vec![0.5; n * 10]));
        }
        let d = decode_scrfd(&outs, side, 0.5).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].bbox, [8.0, 0.0, 24.0, 16.0]);
        assert_eq!(d[0].landmarks[0], [20.0, 12.0]);

        let mut names = Vec::new();
        let mut outs = Vec::new();
        for s in STRIDES {
            let n = (side / s) * (side / s);
            let mut cls = vec![0.0; n];
            if s == 8 {
                cls[8 + 2] = 0.81;
            }
            for (name, v) in [
                ("cls", cls),
                ("obj", vec![1.0; n]),
                ("bbox", vec![0.0; n * 4]),
                ("kps", vec![0.0; n * 10]),
            ] {
                names.push(format!("{name}_{s}"));
                outs.push((vec![1, n as i64, 1], v));
            }
        }
        let d = decode_yunet(&names, &outs, side, 0.5).unwrap();
        assert_eq!(d.len(), 1);
        assert!((d[0].score - 0.9).abs() < 1e-6);
        assert_eq!(d[0].bbox, [12.0, 4.0, 20.0, 12.0]);
        assert!(decode_yunet(&names[..3], &outs[..3], side, 0.5).is_none());
    }
}
