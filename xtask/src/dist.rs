//! `cargo xtask dist`: the archives a user installs on a NAS or a Raspberry Pi. One command
//! builds the release PWA once and, for x86_64 and aarch64 Linux, the sync node and the ML node
//! (aarch64 cross-compiled with Debian's cross gcc and arm64 multiarch libheif), adds the ONNX
//! Runtime of that architecture (PyPI's onnxruntime wheel, checked against
//! models/manifest.json), packs `target/dist/tessera-<version>-linux-<arch>.tar.gz` and then
//! tries each archive as a user would: unpacked into a temporary directory, its sync node
//! (under `qemu-user` when the architecture is not this machine's) serves the PWA, takes a real
//! Pixel motion photo and an iPhone HEIC through the Immich upload API, makes their thumbnails and
//! gives the original back byte for byte; its ML node reads a page of text with the archive's
//! own ONNX Runtime.
//!
//! Layout of an archive: `bin/sync-node`, `bin/ml-node`, `lib/libonnxruntime.so`, `web/` (the
//! PWA, precompressed), `README.txt`. The binaries find `web/` and `lib/` next to their `bin/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{
    build_nodes, build_pwa, cache_dir, cargo, cargo_bin_on_path, check_runtime, ensure_apt,
    ensure_corpus, ensure_models, ensure_text_photos, free_port, http_bytes, is_root, output,
    pip_download, print_tail, setup, sh, target_dir, unzip, Killed, ORT_WHEEL,
};

/// One architecture Tessera's release archives are built for.
struct Arch {
    /// `uname -m` / Rust's `std::env::consts::ARCH`.
    name: &'static str,
    triple: &'static str,
    /// Debian's name of the architecture (multiarch packages: `libheif-dev:arm64`).
    debian: &'static str,
    /// Debian's cross toolchain package suffix (`gcc-<it>`) and binary prefix.
    cross_pkg: &'static str,
    gnu: &'static str,
    /// The platform tag of PyPI's onnxruntime wheel.
    wheel: &'static str,
    /// The key of its library's checksum in models/manifest.json's `runtime`.
    checksum_key: &'static str,
}

const ARCHES: [Arch; 2] = [
    Arch {
        name: "x86_64",
        triple: "x86_64-unknown-linux-gnu",
        debian: "amd64",
        cross_pkg: "x86-64-linux-gnu",
        gnu: "x86_64-linux-gnu",
        wheel: "manylinux_2_28_x86_64",
        checksum_key: "sha256",
    },
    Arch {
        name: "aarch64",
        triple: "aarch64-unknown-linux-gnu",
        debian: "arm64",
        cross_pkg: "aarch64-linux-gnu",
        gnu: "aarch64-linux-gnu",
        wheel: "manylinux_2_28_aarch64",
        checksum_key: "sha256_aarch64",
    },
];

impl Arch {
    fn is_host(&self) -> bool {
        self.name == std::env::consts::ARCH
    }

    /// Where cargo puts this architecture's release binaries.
    fn release_dir(&self, root: &Path) -> PathBuf {
        if self.is_host() {
            target_dir(root).join("release")
        } else {
            target_dir(root).join(self.triple).join("release")
        }
    }

    /// Debian's cross compiler, arm64 (or amd64) libheif and qemu-user.
    fn ensure_cross_tools(&self) -> Result<()> {
        let foreign =
            output(Command::new("dpkg").arg("--print-foreign-architectures")).unwrap_or_default();
        if !foreign.split_whitespace().any(|a| a == self.debian) {
            let mut c = if is_root() {
                Command::new("dpkg")
            } else {
                let mut c = Command::new("sudo");
                c.arg("dpkg");
                c
            };
            sh(c.args(["--add-architecture", self.debian]))
                .with_context(|| format!("enabling Debian's {} packages", self.debian))?;
        }
        ensure_apt(&[
            &format!("gcc-{}", self.cross_pkg),
            &format!("g++-{}", self.cross_pkg),
            &format!("libc6-dev-{}-cross", self.debian),
            &format!("libheif-dev:{}", self.debian),
            &format!("libc6:{}", self.debian),
            "qemu-user",
        ])?;
        sh(Command::new("rustup").args(["target", "add", self.triple]))
    }

    /// `cargo build` of both nodes for this architecture.
    fn build(&self) -> Result<()> {
        if self.is_host() {
            return build_nodes(true);
        }
        self.ensure_cross_tools()?;
        let t = self.triple.replace('-', "_");
        let mut c = cargo();
        c.args(["build", "--release", "--target", self.triple])
            .args(["-p", "tessera-sync-node", "--bin", "sync-node"])
            .args(["-p", "tessera-ml-node", "--bin", "ml-node"])
            .env(
                format!("CARGO_TARGET_{}_LINKER", t.to_uppercase()),
                format!("{}-gcc", self.gnu),
            )
            .env(format!("CC_{t}"), format!("{}-gcc", self.gnu))
            .env(format!("CXX_{t}"), format!("{}-g++", self.gnu))
            .env(format!("AR_{t}"), format!("{}-ar", self.gnu))
            .env("PKG_CONFIG_ALLOW_CROSS", "1")
            .env(
                format!("PKG_CONFIG_LIBDIR_{t}"),
                format!("/usr/lib/{}/pkgconfig:/usr/share/pkgconfig", self.gnu),
            );
        sh(&mut c).with_context(|| format!("cross-compiling the nodes for {}", self.triple))
    }

    /// How to run one of this architecture's binaries here: directly, or under qemu-user
    /// with the multiarch libc and libraries (`libc6:arm64`, found through the host's
    /// `/lib/ld-linux-aarch64.so.1` and ld.so.cache). Not `-L /usr/aarch64-linux-gnu`: that
    /// loader is the cross toolchain's, older than the multiarch libc it then loads, and the
    /// mix hangs in `pthread_create`.
    ///
    /// qemu-user 7.2 (Debian 12) passes the host's `/proc/cpuinfo` through, and ONNX
    /// Runtime's CPU detection (pytorch's cpuinfo) dereferences NULL on an x86 one. `-L` with
    /// a directory holding only `proc/cpuinfo` (two Cortex-A76 cores, a Raspberry Pi 5's)
    /// makes the guest read an ARM one; every other path still resolves on the host.
    fn command(&self, bin: &Path) -> Result<Command> {
        if self.is_host() {
            return Ok(Command::new(bin));
        }
        let prefix = cache_dir().join(format!("qemu-{}-prefix", self.name));
        std::fs::create_dir_all(prefix.join("proc"))?;
        let core = |n: u32| {
            format!(
                "processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull \
                 sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n\
                 CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\n\
                 CPU part\t: 0xd0b\nCPU revision\t: 1\n\n"
            )
        };
        std::fs::write(prefix.join("proc/cpuinfo"), core(0) + &core(1))?;
        let mut c = Command::new(format!("qemu-{}", self.name));
        c.arg("-L").arg(&prefix).arg(bin);
        Ok(c)
    }

    /// The ONNX Runtime library of PyPI's onnxruntime wheel for this architecture, checked
    /// against models/manifest.json.
    fn onnxruntime(&self, root: &Path) -> Result<PathBuf> {
        let dir = cache_dir().join("dist-src").join(self.name);
        let so = dir.join("onnxruntime/capi/libonnxruntime.so.1.32.0");
        if !so.exists() {
            let whl = pip_download(
                ORT_WHEEL,
                &[
                    "--only-binary=:all:",
                    "--platform",
                    self.wheel,
                    "--python-version",
                    "3.11",
                    "--implementation",
                    "cp",
                ],
                &dir,
            )?;
            unzip(&whl, &dir)?;
        }
        check_runtime(root, &so, self.checksum_key)?;
        Ok(so)
    }
}

pub(crate) fn dist(root: &Path, args: &[String]) -> Result<()> {
    let started = Instant::now();
    let mut names: Vec<String> = Vec::new();
    let mut smoke = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--arch" => names.push(it.next().cloned().context("--arch needs x86_64 or aarch64")?),
            "--no-smoke" => smoke = false,
            other => bail!("unknown argument {other} (cargo xtask dist [--arch x86_64|aarch64]... [--no-smoke])"),
        }
    }
    let arches: Vec<&Arch> = if names.is_empty() {
        ARCHES.iter().collect()
    } else {
        names
            .iter()
            .map(|n| {
                ARCHES
                    .iter()
                    .find(|a| a.name == n)
                    .with_context(|| format!("unknown architecture {n} (x86_64 or aarch64)"))
            })
            .collect::<Result<_>>()?
    };
    cargo_bin_on_path();
    setup(false)?;
    build_pwa(true)?;
    let web = root.join("dist");
    let out = target_dir(root).join("dist");
    std::fs::create_dir_all(&out)?;
    let mut archives = Vec::new();
    for arch in &arches {
        let t = Instant::now();
        arch.build()?;
        let archive = package(root, arch, &web, &out)?;
        eprintln!(
            "dist: {} ({:.1} MB) in {:.0} s",
            archive.display(),
            std::fs::metadata(&archive)?.len() as f64 / 1e6,
            t.elapsed().as_secs_f64()
        );
        archives.push(archive);
    }
    if smoke {
        // The ML check needs the test OCR model, installed by the host's ml-node.
        let host = ARCHES
            .iter()
            .find(|a| a.is_host())
            .context("this machine's architecture has no release archive")?;
        if !arches.iter().any(|a| a.is_host()) {
            host.build()?;
        }
        let models = ensure_models(root, &host.release_dir(root).join("ml-node"))?;
        for (arch, archive) in arches.iter().zip(&archives) {
            let t = Instant::now();
            smoke_archive(arch, archive, &models)
                .with_context(|| format!("trying {}", archive.display()))?;
            eprintln!(
                "dist: {} works{} ({:.0} s)",
                archive.display(),
                if arch.is_host() {
                    ""
                } else {
                    " under qemu-user"
                },
                t.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!(
        "cargo xtask dist: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Stages and packs one architecture's archive; returns its path.
fn package(root: &Path, arch: &Arch, web: &Path, out: &Path) -> Result<PathBuf> {
    let name = format!("tessera-{}-linux-{}", env!("CARGO_PKG_VERSION"), arch.name);
    let stage = out.join(&name);
    let _ = std::fs::remove_dir_all(&stage);
    for d in ["bin", "lib"] {
        std::fs::create_dir_all(stage.join(d))?;
    }
    let release = arch.release_dir(root);
    let mut needed = Vec::new();
    let mut glibc = (2u32, 17u32);
    for bin in ["sync-node", "ml-node"] {
        let from = release.join(bin);
        let to = stage.join("bin").join(bin);
        std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
        // Symbols are most of a release binary (the sync node: 72 MB before, about a third
        // after); panics still name their source location.
        let strip = if arch.is_host() {
            "strip".to_owned()
        } else {
            format!("{}-strip", arch.gnu)
        };
        sh(Command::new(&strip).arg(&to)).with_context(|| format!("{strip} {}", to.display()))?;
        // The newest glibc symbol version it uses: the oldest system it runs on.
        let syms =
            output(Command::new("readelf").args(["-W", "--dyn-syms"]).arg(&to)).unwrap_or_default();
        for v in syms.split("GLIBC_").skip(1) {
            let mut parts = v
                .split(|c: char| !c.is_ascii_digit())
                .take(2)
                .map(|p| p.parse::<u32>().unwrap_or(0));
            let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
            glibc = glibc.max(version);
        }
        // The shared libraries it links (the rest are glibc's).
        let dynamic = output(Command::new("readelf").arg("-d").arg(&to)).unwrap_or_default();
        for l in dynamic.lines().filter(|l| l.contains("(NEEDED)")) {
            if let Some(lib) = l.split('[').nth(1).and_then(|s| s.split(']').next()) {
                let base = [
                    "libc.so",
                    "libm.so",
                    "libgcc_s.so",
                    "ld-linux",
                    "libpthread.so",
                    "libdl.so",
                ];
                if !base.iter().any(|b| lib.starts_with(b))
                    && !needed.iter().any(|n: &String| n == lib)
                {
                    needed.push(lib.to_owned());
                }
            }
        }
    }
    std::fs::copy(arch.onnxruntime(root)?, stage.join("lib/libonnxruntime.so"))?;
    sh(Command::new("cp").arg("-r").arg(web).arg(stage.join("web")))?;
    std::fs::write(
        stage.join("README.txt"),
        readme(&name, arch, &needed, glibc),
    )?;
    let archive = out.join(format!("{name}.tar.gz"));
    sh(Command::new("tar")
        .arg("-C")
        .arg(out)
        .arg("-czf")
        .arg(&archive)
        .arg(&name))?;
    let sum =
        output(Command::new("sha256sum").arg(&archive).current_dir(out)).context("sha256sum")?;
    std::fs::write(out.join(format!("{name}.tar.gz.sha256")), sum)?;
    Ok(archive)
}

fn readme(name: &str, arch: &Arch, needed: &[String], glibc: (u32, u32)) -> String {
    let heif = if needed.iter().any(|l| l.starts_with("libheif")) {
        "\nOn Debian and Ubuntu: apt install libheif1 (HEIC/HEIF photos).\n"
    } else {
        ""
    };
    format!(
        "{name}: Tessera's sync node and ML node for {arch} Linux ({triple}) with glibc {}.{}\n\
         or newer (Debian 12 and Raspberry Pi OS 12 have 2.36, Ubuntu 22.04 has 2.35).\n\
         \n\
         Start the sync node (it serves the PWA from web/ and the HTTP API):\n\
         \n    bin/sync-node serve --data /srv/tessera --listen 0.0.0.0:2283\n\
         \n\
         then open http://<this machine>:2283/ and create the admin account. The node writes an\n\
         API key for a local ML node to <data>/ml-node.key when started with\n\
         --ml http://127.0.0.1:3003 --ml-key-file /srv/tessera/ml-node.key; start the ML node\n\
         with it (it loads lib/libonnxruntime.so and fetches its models from the public hub on\n\
         first use, or see `bin/ml-node models --help`):\n\
         \n    bin/ml-node serve --listen 127.0.0.1:3003 --node http://127.0.0.1:2283 \\\n        --api-key \"$(cat /srv/tessera/ml-node.key)\" --models /srv/tessera/models \\\n        --state-dir /srv/tessera/ml-node-state\n\
         \n\
         Shared libraries the binaries need besides glibc and libgcc: {}.\n{heif}",
        glibc.0,
        glibc.1,
        if needed.is_empty() {
            "none".to_owned()
        } else {
            needed.join(", ")
        },
        arch = arch.name,
        triple = arch.triple,
    )
}

/// Unpacks `archive` into a temporary directory and uses it as a user would.
fn smoke_archive(arch: &Arch, archive: &Path, models: &Path) -> Result<()> {
    let tmp =
        std::env::temp_dir().join(format!("tessera-dist-{}-{}", arch.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    sh(Command::new("tar")
        .arg("-C")
        .arg(&tmp)
        .arg("-xzf")
        .arg(archive))?;
    let pkg = std::fs::read_dir(&tmp)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .context("the archive holds no directory")?;
    let res = smoke_node(arch, &pkg, &tmp).and_then(|()| smoke_ml(arch, &pkg, &tmp, models));
    if res.is_err() {
        eprintln!("--- sync-node.log (last lines) ---");
        print_tail(
            &std::fs::read_to_string(tmp.join("sync-node.log")).unwrap_or_default(),
            30,
        );
    } else {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    res
}

/// The archive's sync node, started without `--web` (it finds `web/` itself): the PWA page,
/// an admin, a phone's motion-photo JPEG and an iPhone HEIC uploaded through the Immich API, their
/// thumbnails, and the JPEG's original back byte for byte.
fn smoke_node(arch: &Arch, pkg: &Path, tmp: &Path) -> Result<()> {
    let listen = format!("127.0.0.1:{}", free_port()?);
    let base = format!("http://{listen}");
    let log = std::fs::File::create(tmp.join("sync-node.log"))?;
    let mut node = Killed(
        arch.command(&pkg.join("bin/sync-node"))?
            .args([
                "serve",
                "--listen",
                &listen,
                "--no-relay",
                "--iroh",
                "127.0.0.1:0",
            ])
            .arg("--data")
            .arg(tmp.join("data"))
            .current_dir(tmp)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting the archive's sync-node")?,
    );
    crate::wait_http(&format!("{base}/api/server/ping"), "pong", 180, &mut node)?;
    let page = crate::http_get(&format!("{base}/"))?;
    if !page.contains("<html") || !page.contains("wasm") {
        bail!("the archive's node does not serve the PWA from its web/: {page:.300}");
    }
    crate::http_request(
        "POST",
        &format!("{base}/api/auth/admin-sign-up"),
        Some(r#"{"email":"dist@example.com","password":"dist-smoke-pw","name":"Dist"}"#),
    )?;
    let login = crate::body_json(&crate::http_request(
        "POST",
        &format!("{base}/api/auth/login"),
        Some(r#"{"email":"dist@example.com","password":"dist-smoke-pw"}"#),
    )?)?;
    let token = login["accessToken"].as_str().context("no accessToken")?;
    let auth = format!("Bearer {token}");
    let long = Duration::from_secs(120);
    let get = |path: &str| {
        http_bytes(
            "GET",
            &format!("{base}{path}"),
            &[("Authorization", &auth)],
            &[],
            long,
        )
    };
    // A Pixel motion photo (2016x1512 JPEG with its MP4 appended) and an iPhone HEIC.
    let corpus = ensure_corpus()?;
    let jpeg = corpus.join("PXL_20230221_113308123.MP.jpg");
    let heic = corpus.join("heic_iphonexs.heic");
    for photo in [&jpeg, &heic] {
        let bytes = std::fs::read(photo).with_context(|| format!("reading {}", photo.display()))?;
        let file = photo
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("photo");
        let (body, boundary) = multipart(file, &bytes);
        let (status, answer) = http_bytes(
            "POST",
            &format!("{base}/api/assets"),
            &[
                ("Authorization", &auth),
                (
                    "Content-Type",
                    &format!("multipart/form-data; boundary={boundary}"),
                ),
            ],
            &body,
            long,
        )?;
        if status != 201 {
            bail!(
                "uploading {file}: HTTP {status} {}",
                String::from_utf8_lossy(&answer)
            );
        }
        let answer: serde_json::Value = serde_json::from_slice(&answer)?;
        let id = answer["id"].as_str().context("no asset id")?;
        let deadline = Instant::now() + Duration::from_secs(180);
        let asset = loop {
            let (s, b) = get(&format!("/api/assets/{id}"))?;
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
            if s == 200 && v["tessera"]["status"].as_str() != Some("pending") {
                break v;
            }
            if Instant::now() > deadline {
                bail!("{file} was not processed within 180 s: {v}");
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        if asset["tessera"]["status"].as_str() != Some("ready") {
            bail!("{file} was not processed: {}", asset["tessera"]);
        }
        let (s, thumb) = get(&format!("/api/assets/{id}/thumbnail"))?;
        let image = thumb.starts_with(&[0xff, 0xd8]) || thumb.get(8..12) == Some(b"WEBP");
        if s != 200 || !image {
            bail!(
                "{file}'s thumbnail: HTTP {s}, {} bytes, not an image",
                thumb.len()
            );
        }
        let (s, original) = get(&format!("/api/assets/{id}/original"))?;
        if s != 200 || original != bytes {
            bail!(
                "{file}'s original came back different: HTTP {s}, {} bytes of {}",
                original.len(),
                bytes.len()
            );
        }
        eprintln!(
            "  {}: {file} stored, processed ({}x{}), thumbnail {} bytes, original byte-identical",
            arch.name,
            asset["exifInfo"]["exifImageWidth"],
            asset["exifInfo"]["exifImageHeight"],
            thumb.len()
        );
    }
    Ok(())
}

/// The archive's ML node reads a page of printed text with the archive's ONNX Runtime
/// (`lib/libonnxruntime.so`, found next to its `bin/`).
fn smoke_ml(arch: &Arch, pkg: &Path, tmp: &Path, models: &Path) -> Result<()> {
    let only_models = tmp.join("models");
    std::fs::create_dir_all(&only_models)?;
    let ocr = models.join("pp-ocrv4");
    std::os::unix::fs::symlink(&ocr, only_models.join("pp-ocrv4"))
        .with_context(|| format!("linking {}", ocr.display()))?;
    let page = ensure_text_photos()?.join("eurotext.png");
    let out = arch
        .command(&pkg.join("bin/ml-node"))?
        .args(["ocr", "--threads", "2", "--models"])
        .arg(&only_models)
        .arg(&page)
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .context("running the archive's ml-node")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains("quick") || !text.contains("brown") {
        bail!(
            "the archive's ml-node did not read eurotext.png ({}):\n{text}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!(
        "  {}: ml-node read eurotext.png with lib/libonnxruntime.so: {:?}",
        arch.name,
        text.lines().nth(1).unwrap_or_default()
    );
    Ok(())
}

/// An Immich-style upload form holding `bytes` as `assetData`; (body, boundary).
fn multipart(file: &str, bytes: &[u8]) -> (Vec<u8>, String) {
    let boundary = "tessera-dist-smoke-7d1c0f".to_owned();
    let mut body = Vec::new();
    let when = "2021-03-04T05:06:07.000Z";
    for (k, v) in [
        ("deviceAssetId", format!("{file}-dist")),
        ("deviceId", "dist-smoke".to_owned()),
        ("fileCreatedAt", when.to_owned()),
        ("fileModifiedAt", when.to_owned()),
    ] {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"assetData\"; filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (body, boundary)
}
