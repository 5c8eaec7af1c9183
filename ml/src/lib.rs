//! Tessera's inference library: ONNX Runtime sessions (CPU by default, GPU execution providers
//! by cargo feature), face detection + 5-point alignment + embedding, CLIP image and text
//! embeddings, incremental face clustering, and the model manifest.
//!
//! Architecture invariant: no network and no catalogue IO here. The `ml-node` binary decides
//! where images come from and where results go; this crate turns bytes into vectors.

pub mod clip;
pub mod cluster;
pub mod engine;
pub mod face;
pub mod manifest;
pub mod ocr;
pub mod prep;
pub mod runtime;

pub use manifest::{Manifest, ModelSpec, PartSpec};
pub use runtime::{Provider, Runtime};

#[derive(Debug, thiserror::Error)]
pub enum MlError {
    #[error("ONNX Runtime library not found ({0}); install it with `cargo xtask models` or point ORT_DYLIB_PATH / --ort-lib at libonnxruntime.so")]
    RuntimeMissing(String),
    #[error("ONNX Runtime: {0}")]
    Ort(String),
    #[error("model {model}: {reason}")]
    Model { model: String, reason: String },
    #[error("cannot decode the image: {0}")]
    Image(String),
    #[error("model file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("unknown model {0:?} (see `ml-node models list`)")]
    UnknownModel(String),
}

impl<T> From<ort::Error<T>> for MlError {
    fn from(e: ort::Error<T>) -> Self {
        MlError::Ort(e.to_string())
    }
}

pub type Result<T, E = MlError> = std::result::Result<T, E>;
