//! ONNX Runtime: loading the shared library, choosing an execution provider, making sessions.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ort::ep::ExecutionProviderDispatch;
use ort::session::Session;

use crate::{MlError, Result};

/// Execution providers Tessera knows. GPU ones exist only when compiled in (cargo features).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Cpu,
    Cuda,
    TensorRt,
    OpenVino,
    CoreMl,
    DirectMl,
}

impl Provider {
    pub fn name(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::TensorRt => "tensorrt",
            Provider::OpenVino => "openvino",
            Provider::CoreMl => "coreml",
            Provider::DirectMl => "directml",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::compiled()
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
    }

    /// Providers this build can use, best first (CPU always last).
    #[allow(clippy::vec_init_then_push)] // pushes are feature-gated
    pub fn compiled() -> Vec<Provider> {
        let mut v = Vec::new();
        #[cfg(feature = "tensorrt")]
        v.push(Provider::TensorRt);
        #[cfg(feature = "cuda")]
        v.push(Provider::Cuda);
        #[cfg(feature = "openvino")]
        v.push(Provider::OpenVino);
        #[cfg(feature = "coreml")]
        v.push(Provider::CoreMl);
        #[cfg(feature = "directml")]
        v.push(Provider::DirectMl);
        v.push(Provider::Cpu);
        v
    }

    fn dispatch(self) -> Option<ExecutionProviderDispatch> {
        match self {
            Provider::Cpu => None,
            #[cfg(feature = "cuda")]
            Provider::Cuda => Some(ort::ep::CUDA::default().build().error_on_failure()),
            #[cfg(feature = "tensorrt")]
            Provider::TensorRt => Some(ort::ep::TensorRT::default().build().error_on_failure()),
            #[cfg(feature = "openvino")]
            Provider::OpenVino => Some(ort::ep::OpenVINO::default().build().error_on_failure()),
            #[cfg(feature = "coreml")]
            Provider::CoreMl => Some(ort::ep::CoreML::default().build().error_on_failure()),
            #[cfg(feature = "directml")]
            Provider::DirectMl => Some(ort::ep::DirectML::default().build().error_on_failure()),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }
}

/// A loaded ONNX Runtime with the chosen execution provider.
pub struct Runtime {
    env: ort::environment::Environment,
    provider: Provider,
    threads: usize,
    /// Why `provider` was picked (for the start-up log line and `/ping`-style status).
    pub reason: String,
}

/// Where to find `libonnxruntime.so`: the explicit path, `ORT_DYLIB_PATH`, the models
/// directory (where `cargo xtask models` / `ml-node models install` put it), then `lib/` next to
/// the `bin/` holding the running binary (the layout of `cargo xtask dist`'s archives).
pub fn find_library(explicit: Option<&Path>, models_dir: &Path) -> Result<PathBuf> {
    let mut tried = Vec::new();
    let candidates = explicit
        .map(Path::to_path_buf)
        .into_iter()
        .chain(std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
        .chain([
            models_dir.join("onnxruntime/libonnxruntime.so"),
            models_dir.join("libonnxruntime.so"),
        ])
        .chain(
            std::env::current_exe()
                .ok()
                .and_then(|e| Some(e.parent()?.parent()?.join("lib/libonnxruntime.so"))),
        );
    for c in candidates {
        if c.is_file() {
            return Ok(c);
        }
        tried.push(c.display().to_string());
    }
    Err(MlError::RuntimeMissing(format!(
        "tried {}",
        tried.join(", ")
    )))
}

impl Runtime {
    /// Loads ONNX Runtime from `lib` and picks a provider: `wanted` if given (falling back to
    /// CPU with a warning when it cannot be registered), else the best compiled-in one that
    /// registers.
    pub fn init(lib: &Path, wanted: Option<Provider>, threads: usize) -> Result<Self> {
        let env = ort::init_from(lib)
            .map_err(|e| MlError::RuntimeMissing(format!("{}: {e}", lib.display())))?
            .with_name("tessera-ml")
            .build()?;
        let candidates = match wanted {
            Some(p) => vec![p, Provider::Cpu],
            None => Provider::compiled(),
        };
        let mut failures = Vec::new();
        let mut chosen = Provider::Cpu;
        for p in candidates {
            let Some(ep) = p.dispatch() else {
                chosen = p;
                break;
            };
            let ok = Session::builder(&env)
                .map_err(MlError::from)
                .and_then(|b| b.with_execution_providers([ep]).map_err(MlError::from));
            match ok {
                Ok(_) => {
                    chosen = p;
                    break;
                }
                Err(e) => failures.push(format!("{} failed to load: {e}", p.name())),
            }
        }
        let reason = match (wanted, failures.is_empty()) {
            (Some(w), true) if w == chosen => format!("{} as requested", chosen.name()),
            (_, true) if chosen == Provider::Cpu && Provider::compiled().len() == 1 => {
                "cpu: this build has no GPU execution providers (cargo features cuda, tensorrt, openvino, coreml, directml)".to_owned()
            }
            (_, true) => format!("{}: the best provider compiled in", chosen.name()),
            (_, false) => format!("{} (fallback: {})", chosen.name(), failures.join("; ")),
        };
        Ok(Self {
            env,
            provider: chosen,
            threads: threads.max(1),
            reason,
        })
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// A session for one model file, on the chosen provider with `threads` intra-op threads.
    pub fn session(&self, model: &Path) -> Result<Model> {
        let mut b = Session::builder(&self.env)?
            .with_intra_threads(self.threads)?
            .with_inter_threads(1)?;
        if let Some(ep) = self.provider.dispatch() {
            b = b.with_execution_providers([ep])?;
        }
        let session = b.commit_from_file(model).map_err(|e| MlError::Model {
            model: model.display().to_string(),
            reason: e.to_string(),
        })?;
        let inputs = session
            .inputs()
            .iter()
            .map(|o| (o.name().to_owned(), dims(o.dtype())))
            .collect();
        let input_i64 = session
            .inputs()
            .first()
            .and_then(|o| o.dtype().tensor_type())
            == Some(ort::value::TensorElementType::Int64);
        let outputs = session
            .outputs()
            .iter()
            .map(|o| o.name().to_owned())
            .collect();
        Ok(Model {
            session: Arc::new(Mutex::new(session)),
            path: model.to_path_buf(),
            inputs,
            input_i64,
            outputs,
        })
    }
}

fn dims(t: &ort::value::ValueType) -> Vec<i64> {
    t.tensor_shape().map(|s| s.to_vec()).unwrap_or_default()
}

/// A session plus what the code needs to know of its signature.
#[derive(Clone)]
pub struct Model {
    pub session: Arc<Mutex<Session>>,
    pub path: PathBuf,
    /// Input names and dims (`-1` for dynamic dimensions).
    pub inputs: Vec<(String, Vec<i64>)>,
    /// The first input takes int64 (token ids of some text models) rather than int32.
    pub input_i64: bool,
    pub outputs: Vec<String>,
}

impl Model {
    pub fn err(&self, reason: impl Into<String>) -> MlError {
        MlError::Model {
            model: self.path.display().to_string(),
            reason: reason.into(),
        }
    }

    /// Whether the first input takes a batch larger than one.
    pub fn batched(&self) -> bool {
        self.inputs.first().and_then(|(_, d)| d.first()).copied() != Some(1)
    }

    pub fn input_name(&self) -> Result<&str> {
        self.inputs
            .first()
            .map(|(n, _)| n.as_str())
            .ok_or_else(|| self.err("the model has no inputs"))
    }

    /// Runs the model on one f32 NCHW tensor and returns every output as `(shape, data)`.
    pub fn run_f32(&self, input: ndarray::Array4<f32>) -> Result<Vec<(Vec<i64>, Vec<f32>)>> {
        let name = self.input_name()?.to_owned();
        let tensor = ort::value::Tensor::from_array(input)?;
        let mut s = self
            .session
            .lock()
            .map_err(|_| self.err("session lock poisoned"))?;
        let out = s.run(ort::inputs![name => tensor])?;
        let mut v = Vec::with_capacity(out.len());
        for (_, value) in out.iter() {
            let (shape, data) = value.try_extract_tensor::<f32>()?;
            v.push((shape.to_vec(), data.to_vec()));
        }
        Ok(v)
    }
}
