//! Originals on S3-compatible object storage: a real S3 server (moto's, from PyPI, on
//! loopback) behind a real node. Moto speaks the S3 REST protocol the way AWS does, including
//! multipart uploads with their 5 MiB minimum part size and the `-N` ETags of multipart
//! objects, and runs with nothing but Python. The bucket is read back with boto3 (AWS's own
//! client), not with the node's code.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tessera_tests::photos::{small_jpeg, synthetic_photo_sampled};
use tessera_tests::{free_port, Api, Node};

const BUCKET: &str = "tessera";
const PREFIX: &str = "household";

/// boto3, used as an independent S3 client: `create`, `list`, `get KEY FILE`, `put KEY FILE`.
const S3_PY: &str = r#"
import sys, json, boto3
ep, bucket, cmd = sys.argv[1], sys.argv[2], sys.argv[3]
s3 = boto3.client("s3", endpoint_url=ep, aws_access_key_id="test",
                  aws_secret_access_key="test", region_name="us-east-1")
if cmd == "create":
    s3.create_bucket(Bucket=bucket)
elif cmd == "list":
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            out.append({"key": o["Key"], "size": o["Size"], "etag": o["ETag"].strip('"')})
    print(json.dumps(out))
elif cmd == "get":
    s3.download_file(bucket, sys.argv[4], sys.argv[5])
elif cmd == "put":
    s3.upload_file(sys.argv[5], bucket, sys.argv[4])
"#;

struct Moto {
    child: Child,
    url: String,
    python: PathBuf,
}

impl Moto {
    fn start(python: &Path, log: &Path) -> Self {
        let port = free_port();
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new(python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting moto_server");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            child,
            url,
            python: python.to_path_buf(),
        }
    }

    fn s3(&self, args: &[&str]) -> String {
        let out = Command::new(&self.python)
            .args(["-c", S3_PY, &self.url, BUCKET])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "boto3 {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// key → (size, etag)
    fn objects(&self) -> std::collections::BTreeMap<String, (u64, String)> {
        let v: serde_json::Value = serde_json::from_str(&self.s3(&["list"])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["key"].as_str().unwrap().to_owned(),
                    (
                        o["size"].as_u64().unwrap(),
                        o["etag"].as_str().unwrap().to_owned(),
                    ),
                )
            })
            .collect()
    }

    fn get(&self, key: &str, dir: &Path) -> Vec<u8> {
        let f = dir.join("got");
        self.s3(&["get", key, f.to_str().unwrap()]);
        std::fs::read(f).unwrap()
    }

    fn put(&self, key: &str, bytes: &[u8], dir: &Path) {
        let f = dir.join("put");
        std::fs::write(&f, bytes).unwrap();
        self.s3(&["put", key, f.to_str().unwrap()]);
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn key(hash: &str) -> String {
    format!("{PREFIX}/original/{}/{hash}", &hash[..2])
}

/// Files under `<data>/blobs/original` (the local copies).
fn local_originals(data: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![data.join("blobs/original")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out
}

fn blake3_hex(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

#[test]
fn originals_live_in_s3_compatible_storage() {
    let Some(python) = tessera_tests::ml::require("Python with moto (S3 server)", "TESSERA_PYTHON")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start(&python, &dir.path().join("moto.log"));
    moto.s3(&["create"]);
    let endpoint = moto.url.clone();
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    let store = format!("s3://{BUCKET}/{PREFIX}");
    let data = dir.path().join("a");

    // A library that starts on the NAS's disk.
    let port = free_port();
    let mut a = Node::start_full_on(&data, port, &[]).unwrap();
    let mut api = Api::new(&a.url);
    api.bootstrap_admin().unwrap();
    let early = small_jpeg(31);
    let (code, _) = api.upload("early.jpg", early.clone()).unwrap();
    assert_eq!(code, 201);
    api.wait_processed(&blake3_hex(&early), Duration::from_secs(60))
        .unwrap();
    a.kill();

    // A store that does not answer is refused at start, with a clear error.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let out = Command::new(tessera_tests::bin_path("sync-node").unwrap())
        .args(["serve", "--data", data.to_str().unwrap(), "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .args([
            "--iroh",
            "127.0.0.1:0",
            "--no-relay",
            "--object-store",
            &store,
        ])
        .envs(env.iter().copied())
        .env("AWS_ENDPOINT_URL", &closed)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("object storage"),
        "start against a closed port: {text}"
    );

    // The node now keeps originals in the bucket, with no local copies kept (cache 0): the one
    // already on disk moves there.
    let flags = ["--object-store", &store, "--object-cache-mib", "0"];
    let a = Node::start_env(&data, port, &flags, &env).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !moto.objects().contains_key(&key(&blake3_hex(&early))) {
        assert!(Instant::now() < deadline, "not moved: {}", a.log());
        std::thread::sleep(Duration::from_millis(200));
    }

    // A 30-MP photo (over the 8 MiB part size: a multipart upload) and a small one.
    // 4:4:4: a larger file for its pixels (4:2:0 would be just under 9 MiB).
    let big = synthetic_photo_sampled(6800, 4500, 7, jpeg_encoder::SamplingFactor::F_1_1).unwrap();
    assert!(big.len() > 9 << 20, "big photo is {} bytes", big.len());
    let small = small_jpeg(32);
    for (name, bytes) in [("big.jpg", &big), ("small.jpg", &small)] {
        let (code, body) = api.upload(name, bytes.clone()).unwrap();
        assert_eq!(code, 201, "{name}: {body}");
        let id = body["id"].as_str().unwrap().to_owned();
        assert_eq!(id, blake3_hex(bytes));
        // Thumbnails come from a copy fetched back from the bucket.
        let asset = api.wait_processed(&id, Duration::from_secs(120)).unwrap();
        assert_eq!(asset["tessera"]["status"], "ready", "{name}: {asset}");
        let (code, thumb) = api
            .get_bytes(&format!("/api/assets/{id}/thumbnail?size=thumbnail"))
            .unwrap();
        assert_eq!(code, 200);
        assert!(image::load_from_memory(&thumb).is_ok());
    }
    let objects = moto.objects();
    for bytes in [&early, &big, &small] {
        let h = blake3_hex(bytes);
        let (size, etag) = &objects[&key(&h)];
        assert_eq!(*size, bytes.len() as u64);
        // Read back with boto3: byte-identical.
        assert!(
            moto.get(&key(&h), dir.path()) == *bytes,
            "object {h} differs"
        );
        // S3 marks a multipart object's ETag with its part count.
        assert_eq!(
            etag.contains('-'),
            bytes.len() >= 8 << 20,
            "{h} ({} bytes): etag {etag}",
            bytes.len()
        );
    }
    // Nothing but originals went to the bucket (thumbnails and previews stay on the disk).
    assert_eq!(objects.len(), 3, "{objects:?}");
    assert!(objects
        .keys()
        .all(|k| k.starts_with(&format!("{PREFIX}/original/"))));
    // No local copies are left with a zero cache.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !local_originals(&data).is_empty() {
        assert!(
            Instant::now() < deadline,
            "local copies left: {:?}",
            local_originals(&data)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Downloads and byte ranges come back from the bucket, byte-identical.
    let big_id = blake3_hex(&big);
    let (code, got) = api
        .get_bytes(&format!("/api/assets/{big_id}/original"))
        .unwrap();
    assert_eq!(code, 200);
    assert!(got == big, "downloaded original differs");
    let r = api
        .req(
            reqwest::Method::GET,
            &format!("/api/assets/{big_id}/original"),
        )
        .header("Range", "bytes=1000-1999")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 206);
    assert!(r.bytes().unwrap().as_ref() == &big[1000..2000]);
    // Those ranges were streamed from the bucket (moto's log shows the node's ranged GETs,
    // answered 206), not fetched whole first: a video held there plays and seeks at once.
    // What a player asks for — the end of the file, all of it from 0, past the end — works
    // as HTTP says.
    let gets = |status: &str| {
        let log = std::fs::read_to_string(dir.path().join("moto.log")).unwrap();
        log.lines()
            .filter(|l| l.contains(&format!("GET /{BUCKET}/{}", key(&big_id))))
            .filter(|l| l.contains(&format!("\" {status} ")))
            .count()
    };
    let (whole_before, ranged_before) = (gets("200"), gets("206"));
    assert!(ranged_before >= 1, "the range above was not read by range");
    let ranged = |h: &str| {
        api.req(
            reqwest::Method::GET,
            &format!("/api/assets/{big_id}/original"),
        )
        .header("Range", h)
        .send()
        .unwrap()
    };
    let n = big.len();
    let r = ranged("bytes=-500");
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(
        r.headers()["content-range"].to_str().unwrap(),
        format!("bytes {}-{}/{n}", n - 500, n - 1)
    );
    assert!(r.bytes().unwrap().as_ref() == &big[n - 500..]);
    // (a suffix longer than the file is all of it)
    let r = ranged(&format!("bytes=-{}", n + 10));
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(
        r.headers()["content-range"].to_str().unwrap(),
        format!("bytes 0-{}/{n}", n - 1)
    );
    assert_eq!(r.bytes().unwrap().len(), n);
    let r = ranged("bytes=0-");
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(
        r.headers()["content-length"].to_str().unwrap(),
        n.to_string()
    );
    assert!(r.bytes().unwrap().as_ref() == &big[..], "bytes=0- differs");
    let r = ranged(&format!("bytes={n}-"));
    assert_eq!(r.status().as_u16(), 416);
    assert_eq!(
        r.headers()["content-range"].to_str().unwrap(),
        format!("bytes */{n}")
    );
    assert_eq!(
        gets("200"),
        whole_before,
        "a range fetched the whole object"
    );
    // (the end: one GET; all of it, twice: a GET per part)
    let parts = (n as u64).div_ceil(tessera_sync_node::objects::STREAM_PART) as usize;
    assert_eq!(gets("206"), ranged_before + 1 + 2 * parts);

    // Another node of the household replicates from this one: it gets the originals byte-
    // identical, served from the bucket.
    let t = api
        .req(reqwest::Method::POST, "/api/pairing/tickets")
        .send()
        .unwrap();
    assert_eq!(t.status().as_u16(), 201);
    let ticket = t.json::<serde_json::Value>().unwrap()["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let bdata = dir.path().join("b");
    let b = Node::start_with(&bdata, &["--join", &ticket, "--name", "offsite"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while local_originals(&bdata).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "replica has {:?}",
            local_originals(&bdata)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(b);
    for bytes in [&early, &big, &small] {
        let h = blake3_hex(bytes);
        let p = bdata
            .join("blobs/original")
            .join(&h[..2])
            .join(&h[2..4])
            .join(&h);
        assert!(
            std::fs::read(p).unwrap() == *bytes,
            "replica of {h} differs"
        );
    }

    // A damaged object is never served: its bytes are checked against its name.
    let small_id = blake3_hex(&small);
    let mut rotten = small.clone();
    rotten[500] ^= 0x40;
    moto.put(&key(&small_id), &rotten, dir.path());
    let (code, body) = api
        .get_bytes(&format!("/api/assets/{small_id}/original"))
        .unwrap();
    assert!(code >= 500, "a damaged object was served: {code}");
    assert!(
        String::from_utf8_lossy(&body).contains("not used"),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // fsck (node stopped) checks the bucket against the index: sizes by default, every
    // object's bytes with --remote-hash, which finds the damaged one.
    drop(a);
    let fsck = |extra: &[&str]| {
        let out = Command::new(tessera_tests::bin_path("sync-node").unwrap())
            .args(["fsck", "--data", data.to_str().unwrap()])
            .args(extra)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    let (ok, out) = fsck(&[]);
    assert!(ok && out.contains("3 objects"), "fsck (sizes): {out}");
    let (ok, out) = fsck(&["--remote-hash"]);
    assert!(
        !ok && out.contains("CORRUPT") && out.contains(&key(&small_id)),
        "fsck --remote-hash: {out}"
    );
    moto.put(&key(&small_id), &small, dir.path());
    let (ok, out) = fsck(&["--remote-hash"]);
    assert!(
        ok && out.contains("each read and hashed"),
        "fsck after the repair: {out}"
    );

    // The bucket goes away: uploads fail clearly and nothing is recorded; the library still
    // browses (thumbnails are on the node's disk), and the node still starts.
    drop(moto);
    let a = Node::start_env(&data, port, &flags, &env).unwrap();
    let late = small_jpeg(33);
    let t0 = Instant::now();
    let (code, body) = api.upload("late.jpg", late.clone()).unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("object storage"),
        "{body}"
    );
    println!("upload with the bucket down failed in {:?}", t0.elapsed());
    let (code, _) = api
        .get_json(&format!("/api/assets/{}", blake3_hex(&late)))
        .unwrap();
    assert_eq!(code, 404, "an unstored upload was recorded");
    let (code, _) = api
        .get_bytes(&format!("/api/assets/{big_id}/thumbnail?size=thumbnail"))
        .unwrap();
    assert_eq!(code, 200);
    assert!(
        a.log().contains("object storage does not answer"),
        "{}",
        a.log()
    );
}

/// The job queue estimates a large HEIF grid held only in object storage from its `meta` box,
/// read by range requests (a few windows of 64 KiB), not by downloading the original: the same
/// estimate as from the local file, for the 200-MP photo whose `meta` comes after `mdat`.
#[test]
fn a_large_heif_in_object_storage_is_estimated_from_a_few_ranges() {
    let Some(python) = tessera_tests::ml::require("Python with moto (S3 server)", "TESSERA_PYTHON")
    else {
        return;
    };
    let Some(corpus) = std::env::var_os("TESSERA_CORPUS").map(PathBuf::from) else {
        assert!(
            std::env::var_os("TESSERA_REQUIRE_CORPUS").is_none(),
            "TESSERA_REQUIRE_CORPUS is set but TESSERA_CORPUS is not"
        );
        eprintln!("SKIPPED: TESSERA_CORPUS is not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start(&python, &dir.path().join("moto.log"));
    moto.s3(&["create"]);
    let path = corpus.join("large/heic_200mp.heic");
    let bytes = std::fs::read(&path).unwrap();
    let hash = blake3_hex(&bytes);
    moto.put(&key(&hash), &bytes, dir.path());
    let tier = tessera_sync_node::objects::ObjectTier::open_with(
        &format!("s3://{BUCKET}/{PREFIX}"),
        &[
            ("AWS_ENDPOINT_URL", moto.url.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ],
    )
    .unwrap();
    use tessera_sync_node::blobs::BlobKind;
    let mut remote = tier.ranged(BlobKind::Original, &hash).unwrap();
    assert_eq!(remote.size(), bytes.len() as u64);
    let local = tessera_media::tiled_decode_mib(&mut std::fs::File::open(&path).unwrap());
    assert!(local.is_some(), "the 200-MP grid is tiled");
    assert_eq!(tessera_media::tiled_decode_mib(&mut remote), local);
    assert!(
        remote.requests <= 4,
        "{} range requests for a {} MB file",
        remote.requests,
        bytes.len() >> 20
    );
    // Whatever is read by ranges is the object's bytes.
    use std::io::{Read, Seek, SeekFrom};
    let mut tail = Vec::new();
    remote.seek(SeekFrom::End(-100_000)).unwrap();
    remote.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, bytes[bytes.len() - 100_000..]);
    // An object that is not there is an error, not an estimate.
    assert!(tier.ranged(BlobKind::Original, &"0".repeat(64)).is_err());
}
