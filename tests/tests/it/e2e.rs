//! End to end in real headless Chromium (chromedriver + fantoccini), against a real node
//! serving the built PWA: sign up, upload through the page, see thumbnails, stop the node,
//! reload offline, still see the timeline, drop a photo offline, see it upload on reconnect.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tessera_tests::photos::{fixture, small_jpeg, with_exif, ExifSpec};
use tessera_tests::{free_port, web_dir, workspace_root, Node};

/// chromedriver's CDP passthrough (`POST /session/{id}/goog/cdp/execute`).
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
}

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"cmd": self.cmd, "params": {}}).to_string()),
        )
    }
}

/// chromedriver (in its own process group) and the profile its Chromium uses. Dropping it —
/// also when a test fails and unwinds — kills the whole group and any Chromium process still
/// using the profile, so no browser outlives the test.
struct Driver(Child, PathBuf);

impl Drop for Driver {
    fn drop(&mut self) {
        let pgid = self.0.id();
        // `-s KILL -- -<pgid>`, never `-KILL -<pgid>`: procps-ng 4.0.2 reads `-KILL -123456`
        // as kill(-1, SIGKILL) — every process the user may signal — which is what killed
        // whole test runs (and CI) whenever chromedriver's pid began with a 1.
        if pgid > 1 {
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{pgid}")])
                .status();
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = Command::new("pkill")
            .args(["-KILL", "-f"])
            .arg(format!("user-data-dir={}", self.1.display()))
            .status();
    }
}

/// The built PWA's directory when a browser test can run: the PWA is built and Debian's
/// chromium and chromium-driver are installed (else a skip, or a failure under
/// `cargo xtask test`).
fn browser_ready() -> Option<PathBuf> {
    let Some(web) = web_dir() else {
        skip("the PWA is not built (dist/index.html missing)");
        return None;
    };
    if !Path::new("/usr/bin/chromedriver").exists() || !Path::new("/usr/bin/chromium").exists() {
        skip("Debian's chromium and chromium-driver are not installed");
        return None;
    }
    Some(web)
}

fn skip(why: &str) -> bool {
    if std::env::var("TESSERA_REQUIRE_E2E").is_ok() {
        panic!("end-to-end test cannot run: {why}");
    }
    eprintln!(
        "SKIPPED e2e: {why} (run `cargo xtask test`, which installs and builds what it needs)"
    );
    true
}

/// The page's text, and what the app logged since [`capture_logs`] (for failure messages).
async fn texts(c: &Client) -> String {
    c.execute("return document.body.innerText + (window.__logs ? '\\n--- console ---\\n' + window.__logs.join('\\n') : '')", vec![])
        .await
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Keeps the page's console output (log, warn, error) for failure messages.
async fn capture_logs(c: &Client) {
    let _ = c
        .execute(
            "if(!window.__logs){window.__logs=[];for(const k of ['log','warn','error']){const o=console[k];console[k]=(...a)=>{window.__logs.push(k+': '+a.join(' '));if(window.__logs.length>200)window.__logs.shift();o.apply(console,a)}}}",
            vec![],
        )
        .await;
}

/// Polls `check` every 250 ms until it returns `Some`, or fails with the page's text.
async fn wait_for<T, F, Fut>(c: &Client, what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > timeout {
            let msg = format!(
                "timed out after {timeout:?} waiting for {what}; page shows:\n{}",
                texts(c).await
            );
            // Also on disk: a killed test run loses its captured output.
            let dir = std::env::var("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| workspace_root().join("target"));
            let _ = std::fs::write(dir.join("e2e-failure.txt"), &msg);
            panic!("{msg}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// (tiles, tiles whose thumbnail is a blob: URL from IndexedDB/network)
async fn tile_state(c: &Client) -> (usize, usize) {
    let v = c
        .execute(
            "const t=[...document.querySelectorAll('.tile img.thumb')]; return [t.length, t.filter(i=>i.src.startsWith('blob:') && i.complete && i.naturalWidth>0).length];",
            vec![],
        )
        .await
        .unwrap_or(json!([0, 0]));
    (
        v[0].as_u64().unwrap_or(0) as usize,
        v[1].as_u64().unwrap_or(0) as usize,
    )
}

async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until the text of `css` contains `needle`.
async fn wait_text(c: &Client, what: &str, timeout: Duration, css: &str, needle: &str) {
    wait_for(c, what, timeout, || async {
        text_of(c, css).await.contains(needle).then_some(())
    })
    .await;
}

async fn screenshot(c: &Client, name: &str) -> PathBuf {
    let dir = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"));
    let _ = std::fs::create_dir_all(&dir);
    let p = dir.join(name);
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(&p, png).expect("write screenshot");
    println!("screenshot: {}", p.display());
    p
}

fn write_photos(dir: &Path) -> Vec<PathBuf> {
    let gps = ExifSpec {
        make: Some("Google".into()),
        model: Some("Pixel 6".into()),
        date_time_original: Some("2023:07:14 18:45:12".into()),
        offset: Some("+02:00".into()),
        gps: Some((48.858_37, 2.294_481)),
        exposure: Some((1, 250)),
        f_number: Some((185, 100)),
        iso: Some(64),
        ..Default::default()
    };
    let files = [
        (
            "prague.jpg",
            with_exif(&fixture("large.jpg").unwrap(), &gps).unwrap(),
        ),
        ("canon.jpg", fixture("r_canon.jpg").unwrap()),
        ("sony.jpg", fixture("r_sony.jpg").unwrap()),
        ("offline.jpg", small_jpeg(4242)),
    ];
    files
        .into_iter()
        .map(|(n, b)| {
            let p = dir.join(n);
            std::fs::write(&p, b).unwrap();
            p
        })
        .collect()
}

/// chromedriver + headless Chromium with a fresh profile under `dir`.
async fn browser(dir: &Path) -> (Driver, Client) {
    browser_with(dir, false).await
}

/// The same with WebGPU on (SwiftShader's software adapter: see ENVIRONMENT.md).
async fn browser_with(dir: &Path, webgpu: bool) -> (Driver, Client) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dport = free_port();
    let profile = dir.join("chrome-profile");
    let _driver = Driver(
        Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={dport}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver"),
        profile.clone(),
    );
    let mut caps = serde_json::Map::new();
    let mut args = vec![
        "--headless=new".to_owned(),
        "--no-sandbox".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--no-first-run".into(),
        "--disable-dev-shm-usage".into(),
        "--window-size=1280,900".into(),
        format!("--user-data-dir={}", profile.display()),
    ];
    if webgpu {
        args.extend([
            "--enable-unsafe-webgpu".into(),
            "--use-angle=swiftshader".into(),
            "--enable-features=Vulkan".into(),
        ]);
    } else {
        args.push("--disable-gpu".into());
    }
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium", "args": args}),
    );
    let mut client = None;
    for _ in 0..40 {
        match ClientBuilder::rustls()
            .expect("tls")
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{dport}"))
            .await
        {
            Ok(c) => {
                client = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    (_driver, client.expect("chromedriver session"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pwa_upload_timeline_offline_and_outbox() {
    let Some(_web) = browser_ready() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let photos = write_photos(dir.path());
    let port = free_port();
    let mut node = tokio::task::block_in_place(|| Node::start_on(&data, port)).unwrap();

    let (_driver, c) = browser(dir.path()).await;
    let t = Duration::from_secs(60);

    // Sign up: the app shows the admin sign-up form on a fresh node, then logs in.
    c.goto(&node.url).await.unwrap();
    wait_for(&c, "the sign-up form", t, || async {
        c.find(Locator::Css("#signup-form")).await.ok()
    })
    .await;
    c.find(Locator::Css("#name"))
        .await
        .unwrap()
        .send_keys("Ada")
        .await
        .unwrap();
    c.find(Locator::Css("#email"))
        .await
        .unwrap()
        .send_keys("ada@example.com")
        .await
        .unwrap();
    c.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys("correct horse battery")
        .await
        .unwrap();
    c.find(Locator::Css("#submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&c, "the timeline", t, || async {
        c.find(Locator::Css("#file-input")).await.ok()
    })
    .await;

    // Upload three photos through the page's file input.
    let three: Vec<String> = photos[..3]
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    c.find(Locator::Css("#file-input"))
        .await
        .unwrap()
        .send_keys(&three.join("\n"))
        .await
        .unwrap();
    wait_for(&c, "3 tiles with real thumbnails", t, || async {
        let (n, loaded) = tile_state(&c).await;
        (n == 3 && loaded == 3).then_some(())
    })
    .await;
    assert!(
        c.find_all(Locator::Css(".upload-item"))
            .await
            .unwrap()
            .len()
            >= 3,
        "per-file progress is shown"
    );
    let months = c.find_all(Locator::Css(".month-section h2")).await.unwrap();
    let mut headings = Vec::new();
    for m in months {
        headings.push(m.text().await.unwrap());
    }
    assert!(
        headings.iter().any(|h| h.starts_with("July 2023")),
        "month headings from EXIF dates: {headings:?}"
    );
    assert!(
        headings.iter().any(|h| h.starts_with("December 2013")),
        "{headings:?}"
    );
    screenshot(&c, "e2e-timeline.png").await;

    // The viewer shows metadata and a download link for the original.
    let prague = blake3::hash(&std::fs::read(&photos[0]).unwrap())
        .to_hex()
        .to_string();
    c.find(Locator::Css(&format!(".tile[data-id='{prague}']")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let meta = wait_for(&c, "the viewer", t, || async {
        let m = text_of(&c, "#viewer-meta").await;
        (!m.is_empty()).then_some(m)
    })
    .await;
    assert!(
        meta.contains("Pixel 6")
            && meta.contains("48.85837")
            && meta.contains("2023-07-14 18:45:12"),
        "viewer metadata: {meta}"
    );
    let href = c
        .find(Locator::Css("#download-original"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(
        href.ends_with(&format!("/api/assets/{prague}/original")),
        "{href}"
    );
    screenshot(&c, "e2e-viewer.png").await;

    // A favorite set in the browser is a local catalogue edit that syncs up to the node.
    click(&c, "#favorite").await;
    let url = node.url.clone();
    let api = tokio::task::block_in_place(|| {
        let mut api = tessera_tests::Api::new(&url);
        api.login("ada@example.com", "correct horse battery")
            .map(|_| api)
    })
    .unwrap();
    let api = std::sync::Arc::new(api);
    wait_for(&c, "the favorite to reach the node", t, || {
        let (api, id) = (api.clone(), prague.clone());
        async move {
            let asset = tokio::task::block_in_place(|| api.get_json(&format!("/api/assets/{id}")))
                .ok()?
                .1;
            (asset["isFavorite"] == json!(true)).then_some(())
        }
    })
    .await;
    assert!(
        text_of(&c, "#favorite").await.contains("♥"),
        "the viewer shows the favorite"
    );
    c.execute("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'})); window.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}));", vec![]).await.unwrap();

    // The service worker must control the page before the node goes away.
    wait_for(&c, "the service worker", t, || async {
        let v = c
            .execute(
                "return !!(navigator.serviceWorker && navigator.serviceWorker.controller)",
                vec![],
            )
            .await
            .ok()?;
        (v == json!(true)).then_some(())
    })
    .await;

    // Chromium considers the PWA installable (manifest, icons, service worker): no errors.
    let inst = c
        .issue_cmd(Cdp {
            cmd: "Page.getInstallabilityErrors",
        })
        .await
        .expect("CDP");
    println!("installability: {inst}");
    let errors = inst["installabilityErrors"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        inst.get("installabilityErrors").is_some() && errors.is_empty(),
        "not installable: {inst}"
    );

    // Offline: stop the node, reload — the timeline comes from IndexedDB, thumbnails too.
    node.kill();
    c.refresh().await.unwrap();
    wait_for(
        &c,
        "the offline timeline with cached thumbnails",
        t,
        || async {
            let (n, loaded) = tile_state(&c).await;
            let state = text_of(&c, "#sync-state").await;
            (n == 3 && loaded == 3 && state == "offline").then_some(())
        },
    )
    .await;
    screenshot(&c, "e2e-offline.png").await;

    // A photo dropped while offline waits in the outbox...
    c.find(Locator::Css("#file-input"))
        .await
        .unwrap()
        .send_keys(&photos[3].display().to_string())
        .await
        .unwrap();
    wait_for(&c, "the outbox to hold 1 photo", t, || async {
        (text_of(&c, "#outbox-count").await == "1").then_some(())
    })
    .await;
    // ...and uploads by itself when the node is back.
    let _node = tokio::task::block_in_place(|| Node::start_on(&data, port)).unwrap();
    wait_for(
        &c,
        "the offline photo to upload and appear",
        Duration::from_secs(90),
        || async {
            let (n, loaded) = tile_state(&c).await;
            (n == 4 && loaded == 4 && text_of(&c, "#outbox-count").await == "0").then_some(())
        },
    )
    .await;
    screenshot(&c, "e2e-reconnected.png").await;
    c.close().await.unwrap();
}

/// The ML node's work shows in the PWA from the synced catalogue: progress, then people with
/// their face crops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pwa_shows_ml_progress_and_people() {
    let Some(_web) = browser_ready() else {
        return;
    };
    let (Some(models), Some(faces)) = (
        tessera_tests::ml::models_dir(),
        tessera_tests::ml::face_photos(),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The node embeds search phrases with the ML node (`--ml`).
    let ml_port = free_port();
    let ml_url = format!("http://127.0.0.1:{ml_port}");
    let (node, key) = tokio::task::block_in_place(|| {
        let node = Node::start_full_on(&data, free_port(), &["--ml", &ml_url]).unwrap();
        let mut api = tessera_tests::Api::new(&node.url);
        api.bootstrap_admin().unwrap();
        for n in ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"] {
            let (code, v) = api
                .upload(n, std::fs::read(faces.join(n)).unwrap())
                .unwrap();
            assert_eq!(code, 201, "{v}");
            api.wait_processed(v["id"].as_str().unwrap(), Duration::from_secs(60))
                .unwrap();
        }
        let made: serde_json::Value = api
            .req(reqwest::Method::POST, "/api/api-keys")
            .json(&json!({"name": "ml-node", "permissions": ["ml"]}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        (node, made["secret"].as_str().unwrap().to_owned())
    });
    let args: Vec<String> = [
        "--node",
        &node.url,
        "--api-key",
        &key,
        "--face-model",
        "yunet-sface",
        "--clip-model",
        "clip-test-color",
    ]
    .map(str::to_owned)
    .to_vec();
    let _ml = tokio::task::block_in_place(|| {
        tessera_tests::ml::MlNode::start_with(&models, &dir.path().join("ml.log"), ml_port, &args)
    })
    .unwrap();

    let (_driver, c) = browser(dir.path()).await;
    let t = Duration::from_secs(90);
    c.goto(&node.url).await.unwrap();
    wait_for(&c, "the login form", t, || async {
        c.find(Locator::Css("#login-form")).await.ok()
    })
    .await;
    c.find(Locator::Css("#email"))
        .await
        .unwrap()
        .send_keys("admin@example.com")
        .await
        .unwrap();
    c.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys("correct horse")
        .await
        .unwrap();
    c.find(Locator::Css("#submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let panel = wait_for(
        &c,
        "the ML panel to show every photo analysed",
        t,
        || async {
            // The faces and the person arrive in other documents, maybe another sync round.
            let p = text_of(&c, "#ml-progress").await;
            (p.contains("all 4 photos analysed") && p.contains("4 faces") && p.contains("1 person"))
                .then_some(p)
        },
    )
    .await;
    assert!(panel.contains("all 4 photos analysed"), "{panel}");
    wait_for(&c, "the person's face crop", t, || async {
        let v = c
            .execute("return [...document.querySelectorAll('#people .person img')].filter(i => i.complete && i.naturalWidth > 0).length", vec![])
            .await
            .ok()?;
        (v.as_u64()? == 1).then_some(())
    })
    .await;
    wait_text(&c, "the person's photo count", t, "#people", "3 photos").await;
    screenshot(&c, "e2e-ml-people.png").await;

    // Search. A photo with GPS taken on this day some years ago: a place and a memory.
    let today = std::process::Command::new("date")
        .args(["-u", "+%m:%d"])
        .output()
        .unwrap();
    let md = String::from_utf8_lossy(&today.stdout).trim().to_owned();
    let paris = tokio::task::block_in_place(|| {
        let mut api = tessera_tests::Api::new(&node.url);
        api.login("admin@example.com", "correct horse").unwrap();
        let spec = tessera_tests::photos::ExifSpec {
            make: Some("Canon".into()),
            date_time_original: Some(format!("2020:{md} 10:00:00")),
            // Notre-Dame (the Eiffel tower's nearest town is Neuilly-sur-Seine).
            gps: Some((48.8530, 2.3499)),
            ..Default::default()
        };
        let jpeg =
            tessera_tests::photos::with_exif(&tessera_tests::photos::small_jpeg(7), &spec).unwrap();
        let (code, v) = api.upload("eiffel.jpg", jpeg).unwrap();
        assert_eq!(code, 201, "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        api.wait_processed(&id, Duration::from_secs(60)).unwrap();
        // And a page of print, which the ML node reads (OCR).
        let pages = tessera_tests::ml::text_photos().expect("tesserocr's eurotext.png");
        let (code, v) = api
            .upload(
                "scan.png",
                std::fs::read(pages.join("eurotext.png")).unwrap(),
            )
            .unwrap();
        assert_eq!(code, 201, "{v}");
        let page = v["id"].as_str().unwrap().to_owned();
        api.wait_processed(&page, Duration::from_secs(60)).unwrap();
        (id, page)
    });
    let (paris, page) = paris;
    // The new photos analysed too before the person's page is edited (the page follows every
    // ML result) and so the CLIP packs stop changing before the rankings are compared.
    wait_text(
        &c,
        "the ML node to analyse the new photos",
        t,
        "#ml-progress",
        "all 6 photos analysed",
    )
    .await;
    // A person's photos: click their face in the ML panel, then name them.
    click(&c, "#people .person").await;
    let hits = |want: usize, css: &'static str| {
        let c = &c;
        async move {
            wait_for(c, css, Duration::from_secs(60), || async {
                let v = c
                    .execute(
                        &format!(
                            "return [...document.querySelectorAll('{css}')].map(e => e.dataset.id)"
                        ),
                        vec![],
                    )
                    .await
                    .ok()?;
                let ids: Vec<String> = serde_json::from_value(v).ok()?;
                (ids.len() == want).then_some(ids)
            })
            .await
        }
    };
    hits(3, "#search .exact .search-hit").await;
    c.find(Locator::Css("#person-name"))
        .await
        .unwrap()
        .send_keys("Barack")
        .await
        .unwrap();
    click(&c, "#person-rename").await;
    wait_text(
        &c,
        "the new name in the people row",
        t,
        "#search .search-people",
        "Barack",
    )
    .await;
    // A cover face for the person, then "not this person" on one face: that photo leaves the
    // person's page at once (and clustering never puts it back).
    let faces = c
        .execute("return [...document.querySelectorAll('#person-faces .face')].map(e => e.dataset.asset)", vec![])
        .await
        .unwrap();
    let faces: Vec<String> = serde_json::from_value(faces).unwrap();
    assert_eq!(faces.len(), 3, "{faces:?}");
    // The second face: the ML node made the first one the cover already.
    click(&c, "#person-faces .face:nth-child(2) .face-cover").await;
    wait_for(&c, "the cover face", t, || async {
        c.find(Locator::Css("#person-faces .face.cover:nth-child(2)"))
            .await
            .ok()
    })
    .await;
    click(&c, "#person-faces .face:last-child .face-not").await;
    let left = hits(2, "#search .exact .search-hit").await;
    assert!(!left.contains(&faces[2]), "{left:?} still has {}", faces[2]);
    screenshot(&c, "e2e-person-page.png").await;
    // Deselect the person, then search by text.
    click(&c, "#search .search-people .person.chosen").await;
    let search = |q: &'static str| {
        let c = &c;
        async move {
            let input = c.find(Locator::Css("#search-input")).await.unwrap();
            input.clear().await.unwrap();
            input.send_keys(q).await.unwrap();
            click(c, "#search-go").await;
            // The results shown are this query's (not the last one's, still on screen while
            // this one runs).
            wait_for(c, "the results of the query", Duration::from_secs(60), || async {
                let v = c
                    .execute(
                        "const s = document.getElementById('search-summary'); return s ? s.dataset.query : null",
                        vec![],
                    )
                    .await
                    .ok()?;
                (v.as_str()? == q).then_some(())
            })
            .await;
        }
    };
    // A grid shows a page of results, then more on request (here pages of one).
    c.execute("localStorage.setItem('tessera-grid-page', '1')", vec![])
        .await
        .unwrap();
    search("barack").await;
    hits(1, "#search .exact .search-hit").await;
    show_more(&c).await;
    c.execute("localStorage.removeItem('tessera-grid-page')", vec![])
        .await
        .unwrap();
    search("paris 2020").await;
    assert_eq!(
        hits(1, "#search .exact .search-hit").await,
        vec![paris.clone()]
    );
    // Smart search: the node embeds the phrase once; the ranking runs in the page.
    search("a man in a suit").await;
    let online = wait_for(&c, "smart search results", t, || async {
        let note = text_of(&c, "#search-note").await;
        let v = c
            .execute("return [...document.querySelectorAll('#search .smart .search-hit')].map(e => e.dataset.id)", vec![])
            .await
            .ok()?;
        let ids: Vec<String> = serde_json::from_value(v).ok()?;
        (note.contains("ran on this device") && !ids.is_empty()).then_some(ids)
    })
    .await;
    // In the search worker (not the page's fallback); no GPU in this browser.
    assert!(
        text_of(&c, "#search-note").await.contains("(wasm SIMD)"),
        "{}",
        texts(&c).await
    );
    screenshot(&c, "e2e-search-online.png").await;
    let online_note = text_of(&c, "#search-note").await;

    // The node goes away: every search still answers, from this device (with what it has
    // saved: the test waits until nothing received is still waiting to be saved).
    wait_for(&c, "everything received saved to IndexedDB", t, || async {
        let v = c
            .execute(
                "return (window.__tesseraPerf || {})['save.pending'] || 0",
                vec![],
            )
            .await
            .ok()?;
        (v.as_f64()? == 0.0).then_some(())
    })
    .await;
    let mut node = node;
    node.kill();
    c.refresh().await.unwrap();
    wait_for(&c, "the offline app", t, || async {
        (text_of(&c, "#sync-state").await == "offline").then_some(())
    })
    .await;
    click(&c, "#nav-photos").await;
    // On this day, six years ago or so: a memory card over the timeline, and its slideshow.
    wait_text(&c, "an on-this-day memory", t, "#memories", "years ago").await;
    click(&c, "#memories .memory-card").await;
    wait_for(&c, "the slideshow", t, || async {
        let v = c
            .execute("const i = document.querySelector('#slideshow img'); return !!(i && i.complete && i.naturalWidth > 0)", vec![])
            .await
            .ok()?;
        v.as_bool()?.then_some(())
    })
    .await;
    screenshot(&c, "e2e-memory-slideshow.png").await;
    click(&c, "#slide-close").await;
    // The map, offline: country shapes from the service worker's cache, the photo's marker.
    let t0 = std::time::Instant::now();
    click(&c, "#nav-map").await;
    wait_for(&c, "a marker on the offline map", t, || async {
        let v = c
            .execute(
                "return document.querySelectorAll('#map .cluster').length",
                vec![],
            )
            .await
            .ok()?;
        (v.as_u64()? >= 1).then_some(())
    })
    .await;
    eprintln!(
        "map page offline: markers drawn {:.0} ms after the click",
        t0.elapsed().as_secs_f64() * 1000.0
    );
    let shapes = c
        .execute("return fetch('/world.svg').then(r => r.text()).then(t => (t.match(/<path/g) || []).length)", vec![])
        .await
        .unwrap();
    assert!(
        shapes.as_u64().unwrap() > 150,
        "country shapes offline: {shapes}"
    );
    screenshot(&c, "e2e-map-offline.png").await;
    click(&c, "#map .cluster").await;
    wait_for(&c, "the cluster's photos", t, || async {
        let v = c
            .execute("const h = document.getElementById('map-place'); return [h ? h.textContent : '', document.querySelectorAll('#map .map-hits .search-hit').length]", vec![])
            .await
            .ok()?;
        (v[0].as_str()?.contains("Paris, France") && v[1].as_u64()? == 1).then_some(())
    })
    .await;
    // The place's page: its photos, offline.
    screenshot(&c, "e2e-map-place.png").await;
    click(&c, "#map-place-open").await;
    wait_text(&c, "the place's page", t, "#place-title", "Paris, France").await;
    assert_eq!(
        hits(1, "#search .exact .search-hit").await,
        vec![paris.clone()]
    );
    screenshot(&c, "e2e-place-page.png").await;
    select_value(&c, "#f-city", "").await;
    select_value(&c, "#f-country", "").await;
    click(&c, "#nav-search").await;
    search("paris").await;
    assert_eq!(
        hits(1, "#search .exact .search-hit").await,
        vec![paris.clone()]
    );
    // A grid shows a page of results, then more on request (here pages of one).
    c.execute("localStorage.setItem('tessera-grid-page', '1')", vec![])
        .await
        .unwrap();
    search("barack").await;
    hits(1, "#search .exact .search-hit").await;
    show_more(&c).await;
    c.execute("localStorage.removeItem('tessera-grid-page')", vec![])
        .await
        .unwrap();
    // Words read in a photo (OCR), found on this device.
    search("aspammer fuchs").await;
    assert_eq!(
        hits(1, "#search .exact .search-hit").await,
        vec![page.clone()]
    );
    screenshot(&c, "e2e-search-text-in-photo.png").await;
    search("a man in a suit").await;
    let offline = wait_for(&c, "smart search results offline", t, || async {
        let v = c
            .execute("return [...document.querySelectorAll('#search .smart .search-hit')].map(e => e.dataset.id)", vec![])
            .await
            .ok()?;
        let ids: Vec<String> = serde_json::from_value(v).ok()?;
        (!ids.is_empty()).then_some(ids)
    })
    .await;
    assert_eq!(
        online,
        offline,
        "the same ranking offline; online the page said {online_note:?}, offline {:?}",
        text_of(&c, "#search-note").await
    );
    screenshot(&c, "e2e-search-offline.png").await;
    // A phrase never searched before says what works offline.
    search("a red bicycle at night").await;
    wait_text(&c, "the offline note", t, "#search-note", "unreachable").await;
    c.close().await.unwrap();
}

/// A search's results shown a page of one at a time: "Show more" says so, and shows the second.
/// (Clicked again if a sync re-ran the search meanwhile and showed the first page again.)
async fn show_more(c: &Client) {
    let t = Duration::from_secs(60);
    wait_for(c, "Show more · 1 of 2 shown", t, || async {
        (text_of(c, "#search .exact ~ .grid-more").await == "Show more · 1 of 2 shown")
            .then_some(())
    })
    .await;
    wait_for(c, "the second result shown", t, || async {
        let n = c
            .execute(
                "return document.querySelectorAll('#search .exact .search-hit').length",
                vec![],
            )
            .await
            .ok()?
            .as_u64()?;
        if n == 2 {
            return Some(());
        }
        if let Ok(more) = c.find(Locator::Css("#search .exact ~ .grid-more")).await {
            let _ = more.click().await;
        }
        None
    })
    .await;
}

/// Sets a <select>'s value as a user would (and fires its change event).
async fn select_value(c: &Client, css: &str, value: &str) {
    c.execute(
        "const s = document.querySelector(arguments[0]); s.value = arguments[1]; s.dispatchEvent(new Event('change', {bubbles: true}));",
        vec![json!(css), json!(value)],
    )
    .await
    .unwrap();
}

/// Logs in through the page's form.
async fn log_in(c: &Client, url: &str, email: &str, password: &str) {
    let t = Duration::from_secs(60);
    c.goto(url).await.unwrap();
    wait_for(c, "the login form", t, || async {
        c.find(Locator::Css("#login-form")).await.ok()
    })
    .await;
    c.find(Locator::Css("#email"))
        .await
        .unwrap()
        .send_keys(email)
        .await
        .unwrap();
    c.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    c.find(Locator::Css("#submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Waits until the page syncs live over iroh (`#sync-state[data-transport=iroh]`, online).
async fn wait_live(c: &Client, what: &str) {
    wait_for(c, what, Duration::from_secs(60), || async {
        let v = c
            .execute(
                "const s=document.querySelector('#sync-state'); return s ? [s.dataset.transport, s.innerText] : null;",
                vec![],
            )
            .await
            .ok()?;
        (v[0] == "iroh" && v[1].as_str()?.starts_with("online")).then_some(())
    })
    .await;
}

async fn tile_ids(c: &Client) -> Vec<String> {
    c.execute(
        "return [...document.querySelectorAll('.tile')].map(t=>t.dataset.id)",
        vec![],
    )
    .await
    .ok()
    .and_then(|v| serde_json::from_value(v).ok())
    .unwrap_or_default()
}

async fn is_fav(c: &Client, id: &str) -> bool {
    c.execute(
        &format!("return !!document.querySelector(\".tile[data-id='{id}'] .fav\")"),
        vec![],
    )
    .await
    .ok()
    .and_then(|v| v.as_bool())
    .unwrap_or(false)
}

async fn favorite_in_viewer(c: &Client, id: &str) {
    // Found and clicked in one step, again if a sync re-rendered the element in between
    // (a stale element reference).
    let tile = format!(".tile[data-id='{id}']");
    wait_for(c, "the tile", Duration::from_secs(20), || async {
        c.find(Locator::Css(&tile)).await.ok()?.click().await.ok()
    })
    .await;
    wait_for(c, "the viewer", Duration::from_secs(20), || async {
        c.find(Locator::Css("#favorite"))
            .await
            .ok()?
            .click()
            .await
            .ok()
    })
    .await;
    let _ = c
        .execute(
            "document.dispatchEvent(new KeyboardEvent('keydown',{key:'Escape'}))",
            vec![],
        )
        .await;
    let _ = c
        .execute(
            "window.dispatchEvent(new KeyboardEvent('keydown',{key:'Escape'}))",
            vec![],
        )
        .await;
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Two browser profiles of one household account, both syncing live over iroh through the
/// node's relay: uploads and favorites in one appear in the other without a reload, and edits
/// made while the node is down merge when it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_sync_live_over_iroh() {
    let Some(_web) = browser_ready() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut node = tokio::task::block_in_place(|| Node::start_on(&data, port)).unwrap();
    let url = node.url.clone();
    let api = tokio::task::block_in_place(|| {
        let mut api = tessera_tests::Api::new(&url);
        api.bootstrap_admin().unwrap();
        api
    });
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    let (_d1, a) = browser(&da).await;
    let (_d2, b) = browser(&db).await;
    log_in(&a, &node.url, "admin@example.com", "correct horse").await;
    log_in(&b, &node.url, "admin@example.com", "correct horse").await;
    wait_live(&a, "browser A live over iroh").await;
    wait_live(&b, "browser B live over iroh").await;
    let (_, devices) =
        tokio::task::block_in_place(|| api.get_json("/api/tessera/devices")).unwrap();
    assert_eq!(
        devices
            .as_array()
            .map(|d| d.iter().filter(|x| x["kind"] == "device").count()),
        Some(2),
        "both browsers paired their keys: {devices}"
    );

    // An upload through browser A's page appears in browser B.
    let p = dir.path().join("from-a.jpg");
    std::fs::write(&p, small_jpeg(777)).unwrap();
    let from_a = blake3::hash(&std::fs::read(&p).unwrap())
        .to_hex()
        .to_string();
    a.find(Locator::Css("#file-input"))
        .await
        .unwrap()
        .send_keys(&p.display().to_string())
        .await
        .unwrap();
    wait_for(&b, "A's upload in B", Duration::from_secs(30), || async {
        tile_ids(&b).await.contains(&from_a).then_some(())
    })
    .await;

    // Latency from upload acknowledged to visible in B, over 50 photos.
    b.execute(
        "window.__seen={}; const mark=()=>{for(const t of document.querySelectorAll('.tile')){if(!(t.dataset.id in __seen)) __seen[t.dataset.id]=Date.now();}}; mark(); new MutationObserver(mark).observe(document.body,{childList:true,subtree:true});",
        vec![],
    )
    .await
    .unwrap();
    let n = 50;
    let mut acked = Vec::new();
    for i in 0..n {
        let bytes = small_jpeg(10_000 + i);
        let (code, body) =
            tokio::task::block_in_place(|| api.upload(&format!("l{i}.jpg"), bytes)).unwrap();
        assert_eq!(code, 201, "{body}");
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as f64;
        acked.push((body["id"].as_str().unwrap().to_owned(), at));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ids: Vec<String> = acked.iter().map(|(i, _)| i.clone()).collect();
    wait_for(
        &b,
        "all 50 uploads in B",
        Duration::from_secs(60),
        || async {
            let have = tile_ids(&b).await;
            ids.iter().all(|i| have.contains(i)).then_some(())
        },
    )
    .await;
    let seen = b.execute("return window.__seen", vec![]).await.unwrap();
    let mut lat: Vec<f64> = acked
        .iter()
        .map(|(id, at)| seen[id].as_f64().unwrap_or(f64::MAX) - at)
        .collect();
    lat.sort_by(|x, y| x.total_cmp(y));
    println!(
        "upload acknowledged → visible in the second browser over {n} photos: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.95),
        lat[lat.len() - 1]
    );

    // A favorite in A shows in B without a reload.
    favorite_in_viewer(&a, &from_a).await;
    wait_for(&b, "A's favorite in B", Duration::from_secs(20), || async {
        is_fav(&b, &from_a).await.then_some(())
    })
    .await;
    screenshot(&b, "e2e-two-browsers.png").await;

    // The node goes away: both keep working offline, each favorites another photo.
    node.kill();
    for c in [&a, &b] {
        wait_for(c, "offline state", Duration::from_secs(30), || async {
            let s = text_of(c, "#sync-state").await;
            (s == "offline" || !s.starts_with("online")).then_some(())
        })
        .await;
    }
    let (x, y) = (ids[0].clone(), ids[1].clone());
    favorite_in_viewer(&a, &x).await;
    favorite_in_viewer(&b, &y).await;
    assert!(is_fav(&a, &x).await && !is_fav(&a, &y).await);
    assert!(is_fav(&b, &y).await && !is_fav(&b, &x).await);
    screenshot(&b, "e2e-two-browsers-offline.png").await;

    // The node is back: both offline edits merge everywhere, without a reload.
    let node = tokio::task::block_in_place(|| Node::start_on(&data, port)).unwrap();
    for (c, name) in [(&a, "A"), (&b, "B")] {
        wait_for(
            c,
            &format!("both offline favorites in {name}"),
            Duration::from_secs(60),
            || async { (is_fav(c, &x).await && is_fav(c, &y).await).then_some(()) },
        )
        .await;
    }
    let api2 = tessera_tests::Api {
        base: node.url.clone(),
        client: api.client.clone(),
        key: api.key.clone(),
    };
    for id in [&x, &y, &from_a] {
        let (_, v) =
            tokio::task::block_in_place(|| api2.get_json(&format!("/api/assets/{id}"))).unwrap();
        assert_eq!(v["isFavorite"], true, "{id} on the node");
    }
    screenshot(&a, "e2e-two-browsers-merged.png").await;

    // Browser A unpairs browser B from its Devices panel: B's live connection is closed, its
    // login session ends, and B is back at the login screen.
    a.find(Locator::Css("#devices-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let other = wait_for(
        &a,
        "two devices listed",
        Duration::from_secs(20),
        || async {
            let items = a.find_all(Locator::Css("#household .device")).await.ok()?;
            if items.len() != 2 {
                return None;
            }
            for it in items {
                if !it.text().await.ok()?.contains("this browser") {
                    return Some(it);
                }
            }
            None
        },
    )
    .await;
    screenshot(&a, "e2e-devices.png").await;
    other
        .find(Locator::Css("button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(
        &b,
        "B signed out after being unpaired",
        Duration::from_secs(30),
        || async { b.find(Locator::Css("#login-form")).await.ok() },
    )
    .await;
    let (_, devices) =
        tokio::task::block_in_place(|| api2.get_json("/api/tessera/devices")).unwrap();
    assert_eq!(
        devices
            .as_array()
            .map(|d| d.iter().filter(|x| x["kind"] == "device").count()),
        Some(1),
        "{devices}"
    );
}

/// The tiles of the current view, in order, after the view re-rendered.
async fn view_ids(c: &Client, what: &str, want: usize) -> Vec<String> {
    wait_for(c, what, Duration::from_secs(30), || async {
        let ids = tile_ids(c).await;
        (ids.len() == want).then_some(ids)
    })
    .await
}

/// Clicks a tile's check circle (or the tile itself, with shift) as a user would.
async fn select_tile(c: &Client, id: &str, shift: bool) {
    let js = format!(
        "const t = document.querySelector(\".tile[data-id='{id}']\"); \
         const el = {}; \
         el.dispatchEvent(new MouseEvent('click', {{bubbles: true, shiftKey: {shift}}})); return true;",
        if shift { "t" } else { "t.querySelector('.check')" }
    );
    c.execute(&js, vec![]).await.unwrap();
}

async fn click(c: &Client, css: &str) {
    // Found and clicked in one try, again until it works: the page may rebuild the element
    // between the two (a sync or an ML result re-renders it), leaving a stale reference.
    wait_for(c, css, Duration::from_secs(20), || async {
        c.find(Locator::Css(css)).await.ok()?.click().await.ok()
    })
    .await;
}

/// Multi-select with click + shift-click, archive, trash, restore: local catalogue edits that
/// survive a reload (IndexedDB) and reach the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pwa_select_archive_trash_restore() {
    let Some(_web) = browser_ready() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let photos = write_photos(dir.path());
    let node = tokio::task::block_in_place(|| Node::start(&data)).unwrap();
    let (_driver, c) = browser(dir.path()).await;
    let t = Duration::from_secs(60);

    c.goto(&node.url).await.unwrap();
    wait_for(&c, "the sign-up form", t, || async {
        c.find(Locator::Css("#signup-form")).await.ok()
    })
    .await;
    for (css, text) in [
        ("#name", "Ada"),
        ("#email", "ada@example.com"),
        ("#password", "correct horse battery"),
    ] {
        c.find(Locator::Css(css))
            .await
            .unwrap()
            .send_keys(text)
            .await
            .unwrap();
    }
    click(&c, "#submit").await;
    capture_logs(&c).await;
    let three: Vec<String> = photos[..3]
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    wait_for(&c, "the timeline", t, || async {
        c.find(Locator::Css("#file-input")).await.ok()
    })
    .await
    .send_keys(&three.join("\n"))
    .await
    .unwrap();
    wait_for(&c, "3 tiles with real thumbnails", t, || async {
        let (n, loaded) = tile_state(&c).await;
        (n == 3 && loaded == 3).then_some(())
    })
    .await;
    let ids = view_ids(&c, "3 tiles", 3).await;
    let (a, b, rest) = (ids[0].clone(), ids[1].clone(), ids[2].clone());

    // Check circle on the first, shift-click on the second: both selected.
    select_tile(&c, &a, false).await;
    select_tile(&c, &b, true).await;
    let count = wait_for(&c, "the selection bar", t, || async {
        let s = text_of(&c, "#selection-count").await;
        (!s.is_empty()).then_some(s)
    })
    .await;
    assert_eq!(count, "2 selected");
    screenshot(&c, "e2e-select.png").await;
    click(&c, "#sel-archive").await;
    assert_eq!(
        view_ids(&c, "archived items gone from Photos", 1).await,
        vec![rest.clone()]
    );
    click(&c, "#nav-archive").await;
    let mut archived = view_ids(&c, "the archive", 2).await;
    archived.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(archived, want);

    // Trash one from the archive.
    select_tile(&c, &a, false).await;
    click(&c, "#sel-trash").await;
    assert_eq!(view_ids(&c, "a trashed", 1).await, vec![b.clone()]);
    click(&c, "#nav-trash").await;
    assert_eq!(view_ids(&c, "the trash", 1).await, vec![a.clone()]);
    assert!(
        text_of(&c, "#trash-banner")
            .await
            .contains("deleted permanently 30 days after"),
        "trash retention is shown"
    );
    screenshot(&c, "e2e-trash.png").await;

    // The node learns it by sync.
    let url = node.url.clone();
    let api = std::sync::Arc::new(
        tokio::task::block_in_place(|| {
            let mut api = tessera_tests::Api::new(&url);
            api.login("ada@example.com", "correct horse battery")
                .map(|_| api)
        })
        .unwrap(),
    );
    let node_flags = |id: String| {
        let api = api.clone();
        async move {
            let v = tokio::task::block_in_place(|| api.get_json(&format!("/api/assets/{id}")))
                .ok()?
                .1;
            Some((
                v["isArchived"] == json!(true),
                v["isTrashed"] == json!(true),
            ))
        }
    };
    wait_for(&c, "archive and trash to reach the node", t, || async {
        let fa = node_flags(a.clone()).await?;
        let fb = node_flags(b.clone()).await?;
        let fr = node_flags(rest.clone()).await?;
        (fa == (true, true) && fb == (true, false) && fr == (false, false)).then_some(())
    })
    .await;

    // A reload starts from IndexedDB: still in the trash. From now on the page keeps no
    // document loaded beyond its roots (as a 300k library does with most of its months): each
    // is read back from its stored bytes when an edit or a sync needs it.
    c.execute("localStorage.setItem('tessera-loaded-budget', '0')", vec![])
        .await
        .unwrap();
    c.refresh().await.unwrap();
    click(&c, "#nav-trash").await;
    assert_eq!(
        view_ids(&c, "the trash after a reload", 1).await,
        vec![a.clone()]
    );
    // The month was not decoded: its items were read back as saved with its document (and
    // the trash above shows them right); restoring below edits the month held unloaded.
    let from_items = c
        .execute(
            "return (window.__tesseraPerf || {})['open.months_from_items'] || 0",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        from_items.as_f64().unwrap_or(0.0) >= 1.0,
        "months were read from their saved items: {from_items}"
    );

    // Restore brings it back (to the archive, where it was).
    select_tile(&c, &a, false).await;
    click(&c, "#sel-restore").await;
    view_ids(&c, "an empty trash", 0).await;
    click(&c, "#nav-archive").await;
    let mut archived = view_ids(&c, "the archive after restore", 2).await;
    archived.sort();
    assert_eq!(archived, want);
    wait_for(&c, "the restore to reach the node", t, || async {
        (node_flags(a.clone()).await? == (true, false)).then_some(())
    })
    .await;
    // (The month was read from its stored bytes to be edited. Whether it is unloaded again
    // right after its save is not asserted: the library keeps the document used last loaded,
    // and whether another month was used after it depends on the order of sync rounds —
    // this wait failed once under load. Unloading is covered by core's
    // `lazy_documents_unload_when_clean_and_reload_unchanged`.)
    c.refresh().await.unwrap();
    click(&c, "#nav-photos").await;
    assert_eq!(
        view_ids(&c, "Photos after a reload", 1).await,
        vec![rest.clone()]
    );

    // A second copy of canon.jpg (other bytes, the same picture): the Duplicates page groups
    // the two from the hashes the page keeps for every photo, and its cards show what only
    // the whole records (read from the month's document) hold with the lists' fields.
    let copy = dir.path().join("canon-copy.jpg");
    let mut bytes = std::fs::read(&photos[1]).unwrap();
    bytes.extend_from_slice(b"\0a trailing copy marker");
    std::fs::write(&copy, &bytes).unwrap();
    c.find(Locator::Css("#file-input"))
        .await
        .unwrap()
        .send_keys(&copy.display().to_string())
        .await
        .unwrap();
    view_ids(&c, "the copy in Photos", 2).await;
    click(&c, "#nav-duplicates").await;
    // (piexif's sample photos are the same 80 × 80 picture: sony.jpg joins the group.)
    let cards = wait_for(&c, "the copy's group on the Duplicates page", t, || async {
        let v = c
            .execute(
                "return [...document.querySelectorAll('.dup-group .dup-card')].map(f => f.textContent)",
                vec![],
            )
            .await
            .ok()?;
        let cards: Vec<String> = serde_json::from_value(v).ok()?;
        cards
            .iter()
            .any(|f| f.contains("canon-copy.jpg"))
            .then_some(cards)
    })
    .await;
    screenshot(&c, "e2e-duplicates.png").await;
    let size = format!("{:.0} KB", bytes.len() as f64 / 1e3);
    assert!(
        cards
            .iter()
            .any(|f| f.contains("canon-copy.jpg") && f.contains(&size) && f.contains(" × ")),
        "the copy's card shows its name, size and dimensions: {cards:?}"
    );
    assert!(
        cards.iter().any(|f| f.contains("canon.jpg")),
        "the original's card: {cards:?}"
    );
    click(&c, ".dup-group .dup-not").await;
    wait_for(&c, "no group once they are not duplicates", t, || async {
        let n = c
            .execute(
                "return document.querySelectorAll('.dup-group').length",
                vec![],
            )
            .await
            .ok()?;
        (n == json!(0)).then_some(())
    })
    .await;
    c.close().await.unwrap();
}

/// Albums and the admin's Members page, as a user sees them: select two photos, "Add to album",
/// the album document syncs back and the Albums page lists it (from the local catalogue) with
/// its thumbnails; the admin adds a member, who must choose their own password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pwa_albums_and_members() {
    let Some(_web) = browser_ready() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let photos = write_photos(dir.path());
    // No scheduled storage check (the first would start a minute after the node): the test
    // starts one from the page.
    let node =
        tokio::task::block_in_place(|| Node::start_with(&data, &["--scrub-rate-mb", "0"])).unwrap();
    let (_driver, c) = browser(dir.path()).await;
    let t = Duration::from_secs(60);
    c.goto(&node.url).await.unwrap();
    wait_for(&c, "the sign-up form", t, || async {
        c.find(Locator::Css("#signup-form")).await.ok()
    })
    .await;
    for (css, text) in [
        ("#name", "Ada"),
        ("#email", "ada@example.com"),
        ("#password", "correct horse battery"),
    ] {
        c.find(Locator::Css(css))
            .await
            .unwrap()
            .send_keys(text)
            .await
            .unwrap();
    }
    click(&c, "#submit").await;
    let three: Vec<String> = photos[..3]
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    wait_for(&c, "the timeline", t, || async {
        c.find(Locator::Css("#file-input")).await.ok()
    })
    .await
    .send_keys(&three.join("\n"))
    .await
    .unwrap();
    wait_for(&c, "3 tiles with real thumbnails", t, || async {
        let (n, loaded) = tile_state(&c).await;
        (n == 3 && loaded == 3).then_some(())
    })
    .await;
    // Uploads must have reached the node before the node can put them in an album.
    wait_for(&c, "an empty outbox", t, || async {
        (text_of(&c, "#outbox-count").await == "0").then_some(())
    })
    .await;
    let ids = view_ids(&c, "3 tiles", 3).await;
    select_tile(&c, &ids[0], false).await;
    select_tile(&c, &ids[1], true).await;
    click(&c, "#sel-album").await;
    wait_for(&c, "the album name field", t, || async {
        c.find(Locator::Css("#album-name")).await.ok()
    })
    .await
    .send_keys("Holiday")
    .await
    .unwrap();
    click(&c, "#album-add").await;
    click(&c, "#nav-albums").await;
    let card = wait_for(&c, "the album on the Albums page", t, || async {
        let s = text_of(&c, ".album-card").await;
        (s.contains("Holiday") && s.contains("2 photos")).then_some(s)
    })
    .await;
    assert!(!card.contains("shared"), "{card}");
    wait_for(&c, "the album cover", t, || async {
        let v = c
            .execute("const i=document.querySelector('.album-card img'); return !!(i && i.src.startsWith('blob:') && i.complete && i.naturalWidth>0);", vec![])
            .await
            .ok()?;
        (v == json!(true)).then_some(())
    })
    .await;
    screenshot(&c, "e2e-albums.png").await;
    click(&c, ".album-card").await;
    wait_for(&c, "the album's two photos", t, || async {
        let v = c
            .execute("return [...document.querySelectorAll('.album-tile img.loaded')].filter(i=>i.complete && i.naturalWidth>0).length", vec![])
            .await
            .ok()?;
        (v == json!(2)).then_some(())
    })
    .await;
    assert_eq!(text_of(&c, "#album-title").await, "Holiday");
    screenshot(&c, "e2e-album.png").await;

    // The admin's Members page: add a member with a temporary password.
    click(&c, "#nav-members").await;
    wait_for(&c, "the members table", t, || async {
        let s = text_of(&c, ".member-list").await;
        s.contains("ada@example.com").then_some(())
    })
    .await;
    for (css, text) in [
        ("#member-name", "Kid"),
        ("#member-email", "kid@example.com"),
        ("#member-password", "temporary1"),
        ("#member-quota", "5"),
    ] {
        c.find(Locator::Css(css))
            .await
            .unwrap()
            .send_keys(text)
            .await
            .unwrap();
    }
    click(&c, "#member-add").await;
    let row = wait_for(&c, "the new member in the table", t, || async {
        let s = text_of(&c, "tr[data-email='kid@example.com']").await;
        (!s.is_empty()).then_some(s)
    })
    .await;
    assert!(
        row.contains("must change password") && row.contains("of 5.0 GiB"),
        "{row}"
    );
    // The storage check on the same page: a pass started from it re-reads every file.
    let before = text_of(&c, "#scrub-panel").await;
    assert!(before.contains("No check has finished yet"), "{before}");
    click(&c, "#scrub-now").await;
    let last = wait_for(&c, "the storage check's result", t, || async {
        let s = text_of(&c, "#scrub-last").await;
        s.contains("every file intact").then_some(s)
    })
    .await;
    assert!(!last.contains(" 0 files"), "{last}");
    screenshot(&c, "e2e-members.png").await;
    let url = node.url.clone();
    let albums = tokio::task::block_in_place(|| {
        let mut api = tessera_tests::Api::new(&url);
        api.login("ada@example.com", "correct horse battery")
            .unwrap();
        api.get_json("/api/albums").unwrap().1
    });
    assert_eq!(albums[0]["albumName"], "Holiday", "{albums}");
    assert_eq!(albums[0]["assetCount"], 2, "{albums}");
    c.close().await.unwrap();
}

/// Signs in through the login form.
async fn sign_in(c: &Client, url: &str, email: &str, password: &str) {
    c.goto(url).await.unwrap();
    wait_for(c, "the login form", Duration::from_secs(60), || async {
        c.find(Locator::Css("#login-form")).await.ok()
    })
    .await;
    for (css, text) in [("#email", email), ("#password", password)] {
        c.find(Locator::Css(css))
            .await
            .unwrap()
            .send_keys(text)
            .await
            .unwrap();
    }
    click(c, "#submit").await;
    capture_logs(c).await;
    wait_for(c, "the timeline", Duration::from_secs(60), || async {
        c.find(Locator::Css("#file-input")).await.ok()
    })
    .await;
}

/// (photos in the open album view with a loaded thumbnail, comments' text)
async fn album_state(c: &Client) -> (u64, String) {
    let n = c
        .execute("return [...document.querySelectorAll('.album-tile img.loaded')].filter(i=>i.complete && i.naturalWidth>0).length", vec![])
        .await
        .ok()
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    (n, text_of(c, "#album-comments").await)
}

/// Two members in two browser profiles: the owner shares an album with the other as editor;
/// with the node down, the editor adds a photo of their own and comments; when the node is
/// back, both see the photo and the comment. Then the owner shares their library as a partner
/// (the other chooses to show it in their timeline) and makes a public link, which a third,
/// account-less browser opens: the gallery, its page size and time to first image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pwa_shared_album_two_members_offline_then_public_link() {
    let Some(_web) = browser_ready() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut node = tokio::task::block_in_place(|| Node::start_on(&data, port)).unwrap();
    let url = node.url.clone();
    // The household, the owner's photo and the shared album, through the API.
    let (album_id, kid_id) = tokio::task::block_in_place(|| {
        let mut api = tessera_tests::Api::new(&url);
        api.bootstrap_admin().unwrap();
        let kid = api
            .req(reqwest::Method::POST, "/api/admin/users")
            .json(
                &json!({"email": "kid@example.com", "password": "password1", "name": "Kid",
                          "shouldChangePassword": false}),
            )
            .send()
            .unwrap()
            .json::<serde_json::Value>()
            .unwrap();
        let (code, up) = api.upload("sea.jpg", small_jpeg(77)).unwrap();
        assert_eq!(code, 201, "{up}");
        let album = api
            .req(reqwest::Method::POST, "/api/albums")
            .json(&json!({"albumName": "Seaside", "assetIds": [up["id"]],
                          "albumUsers": [{"userId": kid["id"], "role": "editor"}]}))
            .send()
            .unwrap()
            .json::<serde_json::Value>()
            .unwrap();
        (
            album["id"].as_str().unwrap().to_owned(),
            kid["id"].as_str().unwrap().to_owned(),
        )
    });
    let t = Duration::from_secs(60);
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    let (_driver_a, a) = browser(&da).await;
    let (_driver_b, b) = browser(&db).await;
    sign_in(&a, &url, "admin@example.com", "correct horse").await;
    sign_in(&b, &url, "kid@example.com", "password1").await;
    let album_url = format!("{url}/albums/{album_id}");
    println!("e2e phase: Both open the album");
    // Both open the album (a deep link: the client-side route).
    for c in [&a, &b] {
        c.goto(&album_url).await.unwrap();
        capture_logs(c).await;
        wait_for(c, "the shared album with its photo", t, || async {
            (album_state(c).await.0 == 1).then_some(())
        })
        .await;
    }
    println!("e2e phase: The editor uploads a photo");
    // The editor uploads a photo of their own while online.
    let kid_photo = dir.path().join("kid.jpg");
    std::fs::write(&kid_photo, small_jpeg(78)).unwrap();
    click(&b, "#nav-photos").await;
    wait_for(&b, "the file input", t, || async {
        b.find(Locator::Css("#file-input")).await.ok()
    })
    .await
    .send_keys(&kid_photo.display().to_string())
    .await
    .unwrap();
    wait_for(&b, "the upload to finish", t, || async {
        (text_of(&b, "#outbox-count").await == "0" && tile_state(&b).await.1 == 1).then_some(())
    })
    .await;
    let kid_ids = view_ids(&b, "the editor's one photo", 1).await;

    println!("e2e phase: The node goes down.");
    // The node goes down. The editor adds the photo to the album and comments, offline.
    node.kill();
    select_tile(&b, &kid_ids[0], false).await;
    click(&b, "#sel-album").await;
    wait_for(&b, "the album name field", t, || async {
        b.find(Locator::Css("#album-name")).await.ok()
    })
    .await
    .send_keys("Seaside")
    .await
    .unwrap();
    click(&b, "#album-add").await;
    // (no reload: the node that serves the page is down; navigate inside the app)
    click(&b, "#nav-albums").await;
    click(&b, &format!("#album-{album_id}")).await;
    wait_for(
        &b,
        "the album's two photos on the editor's device",
        t,
        || async { (album_state(&b).await.0 == 2).then_some(()) },
    )
    .await;
    b.find(Locator::Css("#comment-input"))
        .await
        .unwrap()
        .send_keys("Found a crab!")
        .await
        .unwrap();
    click(&b, "#comment-form button").await;
    wait_for(&b, "the comment, offline", t, || async {
        album_state(&b)
            .await
            .1
            .contains("Found a crab!")
            .then_some(())
    })
    .await;

    println!("e2e phase: The node is back");
    // The node is back: both devices converge; the owner sees the photo and the comment.
    let start = Instant::now();
    let _node = tokio::task::block_in_place(|| Node::start_on(&data, port)).unwrap();
    wait_for(
        &a,
        "the editor's photo and comment on the owner's device",
        Duration::from_secs(120),
        || async {
            let (n, comments) = album_state(&a).await;
            (n == 2 && comments.contains("Found a crab!")).then_some(())
        },
    )
    .await;
    println!(
        "offline edits reached the other member {:?} after the node came back",
        start.elapsed()
    );
    screenshot(&a, "e2e-shared-album.png").await;
    println!("e2e phase: The owner opens the editor");
    // The owner opens the editor's photo from the album and comments on that photo.
    click(&a, &format!(".album-tile[data-id='{}']", kid_ids[0])).await;
    wait_for(&a, "the photo's comment box", t, || async {
        a.find(Locator::Css("#photo-comment-input")).await.ok()
    })
    .await
    .send_keys("Nice crab\n")
    .await
    .unwrap();
    wait_for(&a, "the comment on the photo", t, || async {
        text_of(&a, "#photo-comments")
            .await
            .contains("Nice crab")
            .then_some(())
    })
    .await;
    screenshot(&a, "e2e-photo-comment.png").await;
    a.execute(
        "[...document.querySelectorAll('#viewer button')].find(b => b.textContent.startsWith('Close')).click(); return 1",
        vec![],
    )
    .await
    .unwrap();

    println!("e2e phase: Partner sharing");
    // Partner sharing: the owner shares their library; the other shows it in their timeline.
    click(&a, "#nav-sharing").await;
    wait_for(&a, "the partner choice", t, || async {
        let n = a
            .execute(
                "return document.querySelectorAll('#partner-select option').length",
                vec![],
            )
            .await
            .ok()?;
        (n.as_u64()? >= 2).then_some(())
    })
    .await;
    a.execute(
        &format!("const s=document.getElementById('partner-select'); s.value='{kid_id}'; s.dispatchEvent(new Event('change',{{bubbles:true}})); return 1"),
        vec![],
    )
    .await
    .unwrap();
    click(&a, "#partner-share").await;
    wait_for(&a, "the partner in the list", t, || async {
        text_of(&a, "#shared-by")
            .await
            .contains("Kid")
            .then_some(())
    })
    .await;
    screenshot(&a, "e2e-sharing.png").await;
    click(&b, "#nav-sharing").await;
    click(&b, ".partner-timeline").await;
    click(&b, "#nav-photos").await;
    wait_for(
        &b,
        "the partner's photo in the editor's timeline",
        Duration::from_secs(90),
        || async { (tile_state(&b).await.1 == 2).then_some(()) },
    )
    .await;

    println!("e2e phase: The partner's photo is not theirs");
    // The partner's photo is not theirs until saved: "Save to my library" (by reference).
    let both = view_ids(&b, "the editor's and the partner's photo", 2).await;
    let theirs = both.into_iter().find(|i| *i != kid_ids[0]).unwrap();
    b.execute(
        &format!("document.querySelector(\".tile[data-id='{theirs}']\").dispatchEvent(new MouseEvent('click', {{bubbles: true}})); return 1"),
        vec![],
    )
    .await
    .unwrap();
    click(&b, "#save-to-library").await;
    // Saved, the viewer shows it as the editor's own (no "Save" any more), and the timeline
    // shows it once.
    wait_for(&b, "the photo saved to the editor's library", t, || async {
        let page = texts(&b).await;
        (page.contains("sea.jpg") && !page.contains("Save to my library")).then_some(())
    })
    .await;
    assert_eq!(tile_ids(&b).await.len(), 2);
    screenshot(&b, "e2e-saved.png").await;

    println!("e2e phase: A public link,");
    // A public link, opened in a browser with no account.
    a.goto(&album_url).await.unwrap();
    click(&a, "#album-link").await;
    let link = wait_for(&a, "the public link", t, || async {
        let v = a
            .execute(
                "const i=document.getElementById('album-link-url'); return i ? i.value : ''",
                vec![],
            )
            .await
            .ok()?;
        let s = v.as_str()?.to_owned();
        s.contains("/share/").then_some(s)
    })
    .await;
    let dc = dir.path().join("c");
    std::fs::create_dir_all(&dc).unwrap();
    let (_driver_c, v) = browser(&dc).await;
    v.goto(&link).await.unwrap();
    let perf = wait_for(&v, "the public gallery's two photos", t, || async {
        let p = v
            .execute(
                "const im=[...document.images]; if (im.length!==2 || !im.every(i=>i.complete && i.naturalWidth>0)) return null; \
                 const n=performance.getEntriesByType('navigation')[0]; \
                 const r=performance.getEntriesByType('resource').filter(e=>e.initiatorType==='img').map(e=>e.responseEnd); \
                 return {bytes: n.encodedBodySize, firstImage: Math.min(...r), html: n.responseEnd};",
                vec![],
            )
            .await
            .ok()?;
        (!p.is_null()).then_some(p)
    })
    .await;
    println!(
        "public link page: {} bytes of HTML, HTML done at {:.0} ms, first image at {:.0} ms",
        perf["bytes"],
        perf["html"].as_f64().unwrap_or(0.0),
        perf["firstImage"].as_f64().unwrap_or(0.0)
    );
    let page = text_of(&v, "header").await;
    assert!(
        page.contains("Seaside") && page.contains("2 photos"),
        "{page}"
    );
    screenshot(&v, "e2e-public-link.png").await;
    for c in [a, b, v] {
        c.close().await.unwrap();
    }
}

/// Android's "Share → Tessera": the browser POSTs the shared files (multipart, field `media`)
/// to the manifest's share target. With the node stopped, the service worker puts them in the
/// outbox and opens the app, which lists them; when the node is back they upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pwa_share_target_queues_offline_and_uploads_later() {
    let Some(web) = browser_ready() else {
        return;
    };
    // The manifest declares the share target and file handlers.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(web.join("manifest.webmanifest")).unwrap()).unwrap();
    assert_eq!(manifest["share_target"]["action"], "/share-target");
    assert_eq!(
        manifest["share_target"]["params"]["files"][0]["name"],
        "media"
    );
    assert!(manifest["file_handlers"][0]["accept"]["image/*"].is_array());

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut node = tokio::task::block_in_place(|| Node::start_on(&data, port)).unwrap();
    let url = node.url.clone();
    tokio::task::block_in_place(|| {
        let mut api = tessera_tests::Api::new(&url);
        api.bootstrap_admin().unwrap();
    });
    let (_driver, c) = browser(dir.path()).await;
    let t = Duration::from_secs(60);
    sign_in(&c, &url, "admin@example.com", "correct horse").await;
    // The service worker controls the page (it is what receives a share).
    wait_for(&c, "the service worker in control", t, || async {
        c.execute("return !!navigator.serviceWorker.controller", vec![])
            .await
            .ok()?
            .as_bool()
            .filter(|b| *b)
    })
    .await;

    // The node goes away; the phone shares two photos and a text file.
    tokio::task::block_in_place(|| node.kill());
    let (p1, p2) = (small_jpeg(91), small_jpeg(92));
    c.execute(
        "const [p1, p2] = arguments;
         const file = (bytes, name, type) => new File([new Uint8Array(bytes)], name, {type});
         const dt = new DataTransfer();
         dt.items.add(file(p1, 'shared-1.jpg', 'image/jpeg'));
         dt.items.add(file(p2, 'shared-2.jpg', 'image/jpeg'));
         dt.items.add(new File(['hello'], 'note.txt', {type: 'text/plain'}));
         const f = document.createElement('form');
         f.method = 'POST'; f.enctype = 'multipart/form-data'; f.action = '/share-target';
         const i = document.createElement('input');
         i.type = 'file'; i.name = 'media'; i.multiple = true; i.files = dt.files;
         f.appendChild(i); document.body.appendChild(f); f.submit(); return 1;",
        vec![json!(p1), json!(p2)],
    )
    .await
    .unwrap();
    // The app opens (offline, from the service worker's cache) and shows them in its outbox.
    wait_for(&c, "the shared photos listed in the outbox", t, || async {
        let page = texts(&c).await;
        (page.contains("shared-1.jpg")
            && page.contains("shared-2.jpg")
            && page.contains("in the outbox")
            && page.contains("outbox 2"))
        .then_some(())
    })
    .await;
    let page = texts(&c).await;
    assert!(
        !page.contains("note.txt"),
        "only photos and videos are queued"
    );
    let here = c.current_url().await.unwrap();
    assert_eq!(
        here.path(),
        "/",
        "the share target's redirect is not kept: {here}"
    );
    screenshot(&c, "e2e-share-target.png").await;

    // The node is back: the outbox uploads, the photos reach the timeline.
    node = tokio::task::block_in_place(|| Node::start_on(&data, port)).unwrap();
    wait_for(
        &c,
        "the shared photos uploaded",
        Duration::from_secs(90),
        || async {
            let (n, loaded) = tile_state(&c).await;
            (n == 2 && loaded == 2 && texts(&c).await.contains("outbox 0")).then_some(())
        },
    )
    .await;
    drop(node);
}

/// Runs the search worker's self-test in the page: the worker builds the index of generated
/// vectors with known neighbours and answers every query with its wasm SIMD kernel and (when
/// the browser has an adapter) its WebGPU kernel.
async fn worker_selftest(
    c: &Client,
    setup: &tessera_search_gpu::synthetic_check::Setup,
) -> serde_json::Value {
    let script = r#"
        const [setup, done] = arguments;
        const src = `importScripts("${location.origin}/search-worker.js"); wasm_bindgen("${location.origin}/search-worker_bg.wasm");`;
        const w = new Worker(URL.createObjectURL(new Blob([src], {type: "text/javascript"})));
        w.onerror = (e) => done({error: "worker error: " + e.message});
        w.onmessage = (e) => {
            if (e.data.op === "ready") w.postMessage({op: "selftest", id: 1, setup});
            else if (e.data.op === "selftest") { done({report: e.data.report}); w.terminate(); }
            else done({error: JSON.stringify(e.data)});
        };
    "#;
    let r = c
        .execute_async(script, vec![json!(serde_json::to_string(setup).unwrap())])
        .await
        .expect("the self-test ran");
    if let Some(e) = r.get("error") {
        panic!("search worker: {e}");
    }
    serde_json::from_str(r["report"].as_str().unwrap()).unwrap()
}

async fn script_timeout(c: &Client, secs: u64) {
    let mut t = fantoccini::wd::TimeoutConfiguration::default();
    t.set_script(Some(Duration::from_secs(secs)));
    c.update_timeouts(t).await.unwrap();
}

/// The f32 reference's rows for every query of `setup`.
fn reference_rows(setup: &tessera_search_gpu::synthetic_check::Setup) -> Vec<Vec<usize>> {
    use tessera_core::search::{synthetic, VectorIndex};
    let (rows, queries) =
        synthetic::planted(setup.n, setup.dim, setup.queries, setup.planted, setup.seed);
    let mut idx = VectorIndex::new(setup.dim);
    for (i, v) in rows.enumerate() {
        idx.push(&i.to_string(), &v);
    }
    queries
        .iter()
        .map(|q| {
            idx.exact_top_k(q, setup.k, |_| true)
                .into_iter()
                .map(|x| x.0)
                .collect()
        })
        .collect()
}

/// wasm SIMD and WebGPU (SwiftShader) in headless Chromium find exactly the f32 reference's
/// top k on generated vectors with known neighbours; so does each planted neighbour's rank.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_kernels_in_the_browser_match_the_reference() {
    use tessera_search_gpu::synthetic_check::Setup;
    let Some(_web) = browser_ready() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let node =
        tokio::task::block_in_place(|| Node::start_on(&dir.path().join("data"), free_port()))
            .unwrap();
    let (_driver, c) = browser_with(dir.path(), true).await;
    script_timeout(&c, 300).await;
    c.goto(&node.url).await.unwrap();
    let setup = Setup {
        n: 20_000,
        dim: 512,
        queries: 12,
        planted: 10,
        k: 10,
        seed: 5,
    };
    let report = worker_selftest(&c, &setup).await;
    let want = reference_rows(&setup);
    let rows = |run: &serde_json::Value| -> Vec<Vec<usize>> {
        serde_json::from_value(run["rows"].clone()).unwrap()
    };
    assert_eq!(
        rows(&report["cpu"]),
        want,
        "wasm SIMD against the f32 reference"
    );
    // Row n + qi × planted + j is the j-th nearest of query qi.
    for (qi, r) in want.iter().enumerate() {
        let planted: Vec<usize> = (0..setup.planted)
            .map(|j| setup.n + qi * setup.planted + j)
            .collect();
        assert_eq!(r, &planted);
    }
    assert!(
        report["gpu_error"].is_null(),
        "WebGPU in headless Chromium: {}",
        report["gpu_error"]
    );
    assert_eq!(
        rows(&report["gpu"]),
        want,
        "WebGPU against the f32 reference"
    );
    let cpu_scores: Vec<Vec<f32>> =
        serde_json::from_value(report["cpu"]["scores"].clone()).unwrap();
    let gpu_scores: Vec<Vec<f32>> =
        serde_json::from_value(report["gpu"]["scores"].clone()).unwrap();
    for (a, b) in cpu_scores.iter().flatten().zip(gpu_scores.iter().flatten()) {
        assert!((a - b).abs() < 1e-4, "scores {a} and {b}");
    }
    eprintln!(
        "browser search kernels at {} rows: wasm SIMD p50 {:.1} ms, WebGPU ({}) p50 {:.1} ms",
        report["rows_indexed"],
        report["cpu"]["p50_ms"],
        report["gpu_adapter"],
        report["gpu"]["p50_ms"]
    );
    c.close().await.unwrap();
}

/// `cargo xtask bench`: the same at 300k × 512 in headless Chromium, figures to
/// `$TESSERA_BENCH_OUT` (JSON).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn browser_search_bench() {
    use tessera_search_gpu::synthetic_check::Setup;
    let Some(_web) = browser_ready() else {
        return;
    };
    let n: usize = std::env::var("TESSERA_BENCH_VECTORS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let dir = tempfile::tempdir().unwrap();
    let node =
        tokio::task::block_in_place(|| Node::start_on(&dir.path().join("data"), free_port()))
            .unwrap();
    let (_driver, c) = browser_with(dir.path(), true).await;
    script_timeout(&c, 1800).await;
    c.goto(&node.url).await.unwrap();
    let setup = Setup {
        n,
        dim: 512,
        queries: 30,
        planted: 10,
        k: 50,
        seed: 3,
    };
    let mut report = worker_selftest(&c, &setup).await;
    // Recall of the planted neighbours (the top 10 of each query).
    for run in ["cpu", "gpu"] {
        if let Ok(rows) = serde_json::from_value::<Vec<Vec<usize>>>(report[run]["rows"].clone()) {
            let found: usize = rows
                .iter()
                .enumerate()
                .map(|(qi, r)| {
                    r.iter()
                        .filter(|&&x| x >= n + qi * 10 && x < n + qi * 10 + 10)
                        .count()
                })
                .sum();
            report[run]["recall_at_10"] = json!(found as f64 / (rows.len() * 10).max(1) as f64);
            report[run]["rows"] = json!(null);
            report[run]["scores"] = json!(null);
        }
    }
    let out =
        std::env::var("TESSERA_BENCH_OUT").unwrap_or_else(|_| "browser-search-bench.json".into());
    std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    c.close().await.unwrap();
}
