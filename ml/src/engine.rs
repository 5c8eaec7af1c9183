//! Loading the configured models and running them on an image.

use std::path::Path;

use image::RgbImage;
use serde::Serialize;

use crate::clip::{ClipTextual, ClipVisual, OPENAI_MEAN, OPENAI_STD};
use crate::face::{align, Detection, DetectorKind, EmbedderKind, FaceDetector, FaceEmbedder};
use crate::ocr::Ocr;
use crate::{Manifest, MlError, Result, Runtime};

pub struct FaceModels {
    pub name: String,
    pub dim: usize,
    detector: FaceDetector,
    embedder: FaceEmbedder,
}

pub struct ClipModels {
    pub name: String,
    pub dim: usize,
    pub visual: ClipVisual,
    pub textual: ClipTextual,
}

/// A face found in an image, with its raw embedding (as the model outputs it).
#[derive(Debug, Clone, Serialize)]
pub struct Face {
    pub detection: Detection,
    pub embedding: Vec<f32>,
}

fn missing(model: &str, what: &str) -> MlError {
    MlError::Model {
        model: model.to_owned(),
        reason: format!("the manifest does not say its {what}"),
    }
}

impl FaceModels {
    pub fn load(rt: &Runtime, manifest: &Manifest, models: &Path, name: &str) -> Result<Self> {
        let spec = manifest.get(name)?;
        if spec.task != "facial-recognition" {
            return Err(MlError::Model {
                model: name.into(),
                reason: format!("is a {} model, not a face model", spec.task),
            });
        }
        let det = spec.part("detection")?;
        let rec = spec.part("recognition")?;
        let dkind = match det.kind.as_deref() {
            Some("scrfd") => DetectorKind::Scrfd,
            Some("yunet") => DetectorKind::Yunet,
            _ => return Err(missing(name, "detector kind (scrfd or yunet)")),
        };
        let ekind = match rec.kind.as_deref() {
            Some("arcface") => EmbedderKind::Arcface,
            Some("sface") => EmbedderKind::Sface,
            _ => return Err(missing(name, "recogniser kind (arcface or sface)")),
        };
        Ok(Self {
            name: name.to_owned(),
            dim: rec.dim.ok_or_else(|| missing(name, "embedding size"))?,
            detector: FaceDetector::new(
                rt.session(&spec.path(models, det))?,
                dkind,
                det.input.unwrap_or(640),
            ),
            embedder: FaceEmbedder::new(rt.session(&spec.path(models, rec))?, ekind),
        })
    }

    /// Raw embeddings of aligned 112 x 112 crops.
    pub fn embed(&self, crops: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        self.embedder.embed(crops)
    }

    /// Detects faces scoring at least `min_score` and embeds each aligned crop.
    pub fn analyze(&self, img: &RgbImage, min_score: f32) -> Result<Vec<Face>> {
        let dets = self.detector.detect(img, min_score)?;
        if dets.is_empty() {
            return Ok(Vec::new());
        }
        let crops: Vec<RgbImage> = dets.iter().map(|d| align(img, d)).collect();
        let embs = self.embedder.embed(&crops)?;
        Ok(dets
            .into_iter()
            .zip(embs)
            .map(|(detection, embedding)| Face {
                detection,
                embedding,
            })
            .collect())
    }
}

impl ClipModels {
    pub fn load(rt: &Runtime, manifest: &Manifest, models: &Path, name: &str) -> Result<Self> {
        let spec = manifest.get(name)?;
        if spec.task != "clip" {
            return Err(MlError::Model {
                model: name.into(),
                reason: format!("is a {} model, not a CLIP model", spec.task),
            });
        }
        let vis = spec.part("visual")?;
        let txt = spec.part("textual")?;
        Ok(Self {
            name: name.to_owned(),
            dim: vis.dim.ok_or_else(|| missing(name, "embedding size"))?,
            visual: ClipVisual::new(
                rt.session(&spec.path(models, vis))?,
                vis.input.unwrap_or(224),
                vis.mean.unwrap_or(OPENAI_MEAN),
                vis.std.unwrap_or(OPENAI_STD),
            ),
            textual: ClipTextual::new(
                rt.session(&spec.path(models, txt))?,
                txt.context.unwrap_or(77),
            ),
        })
    }
}

/// Text detection + recognition (PP-OCRv4).
pub struct OcrModels {
    pub name: String,
    pub ocr: Ocr,
}

impl OcrModels {
    pub fn load(rt: &Runtime, manifest: &Manifest, models: &Path, name: &str) -> Result<Self> {
        let spec = manifest.get(name)?;
        if spec.task != "ocr" {
            return Err(MlError::Model {
                model: name.into(),
                reason: format!("is a {} model, not a text (OCR) model", spec.task),
            });
        }
        let det = spec.part("detection")?;
        let rec = spec.part("recognition")?;
        Ok(Self {
            name: name.to_owned(),
            ocr: Ocr::new(
                rt.session(&spec.path(models, det))?,
                rt.session(&spec.path(models, rec))?,
            )?,
        })
    }
}
