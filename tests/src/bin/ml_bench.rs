//! `cargo xtask bench` (ML part): face detection, face embedding, CLIP preprocessing and text
//! embedding throughput of `tessera-ml` on this machine, against ONNX Runtime's Python API
//! running the same models on the same photos in the same run (Immich's ML service is Python
//! + ONNX Runtime). Writes JSON to the path given as the first argument.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;
use tessera_ml::engine::{ClipModels, FaceModels};
use tessera_ml::face::align;
use tessera_ml::{runtime::find_library, Manifest, Runtime};

const ROUNDS: usize = 10;

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn main() -> Result<()> {
    let out = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/ml-bench.json"));
    let models = PathBuf::from(std::env::var("TESSERA_MODELS").context("TESSERA_MODELS")?);
    let photos =
        PathBuf::from(std::env::var("TESSERA_FACE_PHOTOS").context("TESSERA_FACE_PHOTOS")?);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let rt = Runtime::init(&find_library(None, &models)?, None, threads)?;
    let m = Manifest::builtin()?;
    let faces = FaceModels::load(&rt, &m, &models, "yunet-sface")?;
    let clip = ClipModels::load(&rt, &m, &models, "clip-test-color")?;
    let names = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"];
    let images: Vec<_> = names
        .iter()
        .map(|n| {
            tessera_ml::prep::decode(&std::fs::read(photos.join(n))?).map_err(anyhow::Error::from)
        })
        .collect::<Result<_>>()?;
    let n_img = images.len() * ROUNDS;
    eprintln!(
        "{n_img} face photos ({}), {threads} intra-op threads, provider {}",
        names.join(", "),
        rt.provider().name()
    );

    // Warm-up (first runs allocate and optimise).
    for i in &images {
        faces.analyze(i, 0.7)?;
    }
    // Detection + alignment + embedding, as the ML node runs them.
    let t = Instant::now();
    let mut n_faces = 0;
    for _ in 0..ROUNDS {
        for i in &images {
            n_faces += faces.analyze(i, 0.7)?.len();
        }
    }
    let full = n_img as f64 / t.elapsed().as_secs_f64();
    // Embedding alone (aligned crops, batch 1: SFace's graph has a fixed batch of 1).
    let crops: Vec<_> = images
        .iter()
        .flat_map(|i| {
            faces
                .analyze(i, 0.7)
                .unwrap_or_default()
                .into_iter()
                .map(move |f| align(i, &f.detection))
        })
        .collect();
    let t = Instant::now();
    for _ in 0..ROUNDS {
        for c in &crops {
            faces_embed(&faces, c)?;
        }
    }
    let embed = (crops.len() * ROUNDS) as f64 / t.elapsed().as_secs_f64();
    // CLIP input preparation (resize + crop + normalise) and the visual tower of the test
    // model (not CLIP's real cost, which needs ViT-B-32's weights).
    let t = Instant::now();
    for _ in 0..ROUNDS {
        for i in &images {
            clip.visual.embed(i)?;
        }
    }
    let clip_rate = n_img as f64 / t.elapsed().as_secs_f64();
    // Text: tokenizer + textual tower, distinct queries (the cache is not hit).
    let t = Instant::now();
    let queries = 200;
    for q in 0..queries {
        clip.textual
            .embed(&format!("a photo of a red car number {q} at the beach"))?;
    }
    let text_ms = t.elapsed().as_secs_f64() * 1000.0 / queries as f64;
    let rss = peak_rss_mb();
    eprintln!("tessera-ml: faces (detect + align + embed) {full:.1} images/s, {n_faces} faces; embedding {embed:.1} faces/s; CLIP(test model) {clip_rate:.1} images/s; text {text_ms:.2} ms/query; peak RSS {rss:.0} MB");

    // The reference: ONNX Runtime's Python API with the oracle's implementation.
    let reference = std::env::var("TESSERA_PYTHON").ok().and_then(|py| {
        let script = format!(
            "import sys,time; sys.path.insert(0, {oracle:?}); import ml_oracle as o, onnxruntime as ort; from PIL import Image\n\
             ort.set_default_logger_severity(3); so=ort.SessionOptions(); so.intra_op_num_threads={threads}\n\
             det=ort.InferenceSession({d:?}, so); rec=ort.InferenceSession({r:?}, so)\n\
             imgs=[Image.open({p:?}+'/'+n).convert('RGB') for n in {names:?}]\n\
             [o.yunet(det,i) for i in imgs]\n\
             t=time.time()\n\
             for _ in range({ROUNDS}):\n  for i in imgs:\n    for f in o.yunet(det,i): o.sface(rec,i,f['landmarks'])\n\
             print(len(imgs)*{ROUNDS}/(time.time()-t))",
            oracle = tessera_tests::workspace_root().join("tests/oracle").display().to_string(),
            d = models.join("yunet-sface/detection/model.onnx").display().to_string(),
            r = models.join("yunet-sface/recognition/model.onnx").display().to_string(),
            p = photos.display().to_string(),
        );
        let o = Command::new(py).args(["-c", &script]).output().ok()?;
        String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok()
    });
    if let Some(r) = reference {
        eprintln!("reference (Python + ONNX Runtime, same models and photos): {r:.1} images/s");
    }
    // Projection for a 100k-photo import on this machine (faces only; CLIP ViT-B-32 cannot be
    // timed here without its weights).
    let hours_faces = 100_000.0 / full / 3600.0;
    let report = json!({
        "threads": threads,
        "provider": rt.provider().name(),
        "face_models": "yunet-sface (YuNet 2023mar 640x640 + SFace int8)",
        "faces_images_per_s": full,
        "faces_found": n_faces,
        "face_embedding_per_s_batch1": embed,
        "clip_test_model_images_per_s": clip_rate,
        "text_embedding_ms": text_ms,
        "peak_rss_mb": rss,
        "reference_python_onnxruntime_images_per_s": reference,
        "projected_100k_faces_hours": hours_faces,
    });
    std::fs::write(&out, serde_json::to_vec_pretty(&report)?)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn faces_embed(faces: &FaceModels, crop: &image::RgbImage) -> Result<()> {
    faces.embed(std::slice::from_ref(crop))?;
    Ok(())
}
