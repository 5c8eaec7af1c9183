//! Peer-to-peer sync over iroh between real processes on loopback: device keys paired with a
//! user, unknown/forged/revoked keys refused, live pushes, and a second node joining the
//! household with a pairing ticket, replicating everything and taking over.

use std::time::{Duration, Instant};

use iroh::SecretKey;
use tessera_core::wire::{Frame, Role};
use tessera_core::{AssetRecord, DocId, Library, PeerSync, SyncEnvelope};
use tessera_tests::p2p::{
    asset_count, connect, endpoint, node_addr, read, sync_until_quiet, write,
};
use tessera_tests::photos::small_jpeg;
use tessera_tests::{run_sync_node, Api, Node};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn bind(api: &Api, key: &SecretKey) -> (u16, serde_json::Value) {
    let node = node_addr(api).unwrap().id;
    let user = tessera_tests::p2p::user_id(api).unwrap_or_default();
    bind_raw(
        api,
        tessera_tests::p2p::bind_body(key, &node, &user, "test phone"),
    )
}

fn bind_raw(api: &Api, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = api
        .req(reqwest::Method::POST, "/api/tessera/devices")
        .json(&body)
        .send()
        .unwrap();
    let code = r.status().as_u16();
    (code, r.json().unwrap_or_default())
}

fn upload_n(api: &Api, from: u64, n: u64) -> Vec<(String, Vec<u8>)> {
    (from..from + n)
        .map(|i| {
            let bytes = small_jpeg(i);
            let (code, body) = api.upload(&format!("p{i}.jpg"), bytes.clone()).unwrap();
            assert!(code == 201 || code == 200, "{code} {body}");
            (body["id"].as_str().unwrap().to_owned(), bytes)
        })
        .collect()
}

#[test]
fn devices_pair_by_key_and_unknown_forged_or_revoked_keys_get_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n")).unwrap();
    let mut api = Api::new(&node.url);
    api.bootstrap_admin().unwrap();
    let assets = upload_n(&api, 1, 2);
    let (_, me) = api.get_json("/api/users/me").unwrap();
    let user = me["id"].as_str().unwrap().to_owned();
    let addr = node_addr(&api).unwrap();
    let rt = rt();

    // An unknown key, and a forged pairing secret: refused, and nothing else is said.
    let stranger = SecretKey::generate();
    rt.block_on(async {
        let ep = endpoint(stranger.clone()).await.unwrap();
        let r = connect(&ep, addr.clone(), None).await.unwrap();
        let reason = r.err().expect("an unknown key must be refused");
        assert!(reason.contains("not paired"), "{reason}");
        let r = connect(&ep, addr.clone(), Some("00".repeat(16)))
            .await
            .unwrap();
        let reason = r.err().expect("a forged pairing secret must be refused");
        assert!(reason.contains("ticket"), "{reason}");
        ep.close().await;
    });

    // Binding checks its input and is per user.
    let (code, body) = {
        let r = api
            .req(reqwest::Method::POST, "/api/tessera/devices")
            .json(&serde_json::json!({"endpointId": "not-a-key"}))
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    assert_eq!(code, 400, "{body}");
    let anon = Api::new(&node.url);
    assert_eq!(bind(&anon, &stranger).0, 401);

    let key = SecretKey::generate();
    let (code, body) = bind(&api, &key);
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        body["node"]["nodeId"].as_str(),
        Some(addr.id.to_string().as_str())
    );
    assert!(body["node"]["relayUrl"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    assert_eq!(bind(&api, &key).0, 201, "binding again is idempotent");

    // Binding proves possession of the key: the node's own (public) id, a signature by another
    // key, a signature made for another user, a stale one, or none at all are refused.
    let mallory = SecretKey::generate();
    let mut forged = tessera_tests::p2p::bind_body(&mallory, &addr.id, &user, "x");
    forged["endpointId"] = addr.id.to_string().into();
    let (code, body) = bind_raw(&api, forged);
    assert_eq!(code, 403, "binding the node's own id: {body}");
    let victim = SecretKey::generate();
    let mut forged = tessera_tests::p2p::bind_body(&mallory, &addr.id, &user, "x");
    forged["endpointId"] = victim.public().to_string().into();
    assert_eq!(bind_raw(&api, forged).0, 403, "someone else's key");
    let other_user = tessera_tests::p2p::bind_body(&victim, &addr.id, "someone-else", "x");
    assert_eq!(bind_raw(&api, other_user).0, 403, "signed for another user");
    let mut stale = tessera_tests::p2p::bind_body(&victim, &addr.id, &user, "x");
    stale["signedAt"] = 1_000_000_000.into();
    assert_eq!(bind_raw(&api, stale).0, 400, "stale");
    let unsigned = serde_json::json!({"endpointId": victim.public().to_string()});
    assert_eq!(bind_raw(&api, unsigned).0, 400, "unsigned");

    rt.block_on(async {
        let ep = endpoint(key.clone()).await.unwrap();
        let mut s = connect(&ep, addr.clone(), None)
            .await
            .unwrap()
            .expect("a paired key is welcomed");
        assert_eq!(s.welcome.role, Role::Device { user: user.clone() });
        let mut lib = Library::new(&[9; 16]);
        let mut sync = PeerSync::new();
        sync_until_quiet(&mut s, &mut lib, &mut sync, Duration::from_secs(3))
            .await
            .unwrap();
        assert_eq!(asset_count(&lib, &user), 2);
        assert!(
            lib.ids().all(|d| d.user() == user),
            "only the user's documents: {:?}",
            lib.ids().collect::<Vec<_>>()
        );
        assert!(
            !lib.contains(&DocId::household()),
            "accounts never reach a device"
        );

        // Live push: an upload elsewhere arrives without asking.
        let base = node.url.clone();
        let k = api.key.clone();
        let t0 = Instant::now();
        tokio::task::spawn_blocking(move || {
            let mut a = Api::new(&base);
            a.key = k;
            upload_n(&a, 100, 1)
        })
        .await
        .unwrap();
        let acked = t0.elapsed();
        while asset_count(&lib, &user) < 3 {
            let f = tokio::time::timeout(Duration::from_secs(10), read(&mut s.recv))
                .await
                .expect("the new record is pushed within seconds")
                .unwrap();
            if let Some(Frame::Sync(env)) = f {
                sync.receive(&mut lib, env.docs, |_| true).unwrap();
                let ids: Vec<DocId> = lib.ids().cloned().collect();
                let m = sync.generate(&mut lib, &ids);
                if !m.is_empty() {
                    write(&mut s.send, &Frame::Sync(SyncEnvelope::new("t", m)))
                        .await
                        .unwrap();
                }
            }
        }
        println!(
            "live push: upload acknowledged after {acked:?}, on the device after {:?}",
            t0.elapsed()
        );

        // An edit on the device reaches the node.
        let (id, _) = &assets[0];
        let rec = (|| {
            for d in lib.ids() {
                if let Ok(Some(r)) = lib.asset_in(d, id) {
                    return Some(r);
                }
            }
            None
        })()
        .unwrap();
        lib.update_asset(&user, &rec.month(), id, |r: &mut AssetRecord| {
            r.favorite = Some(true)
        })
        .unwrap();
        sync_until_quiet(&mut s, &mut lib, &mut sync, Duration::from_secs(2))
            .await
            .unwrap();

        // A forged write to another user's document: the node drops the connection and stores
        // nothing.
        let mut evil = Library::new(&[6; 16]);
        evil.upsert_assets(
            "someone-else",
            &[AssetRecord {
                id: "f".repeat(64),
                taken_at: Some("2024-01-01T00:00:00".into()),
                ..Default::default()
            }],
        )
        .unwrap();
        let mut es = PeerSync::new();
        let ids: Vec<DocId> = evil.ids().cloned().collect();
        let msgs = es.generate(&mut evil, &ids);
        write(&mut s.send, &Frame::Sync(SyncEnvelope::new("evil", msgs)))
            .await
            .unwrap();
        let end = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match read(&mut s.recv).await {
                    Ok(Some(_)) => continue,
                    _ => return,
                }
            }
        })
        .await;
        assert!(
            end.is_ok(),
            "the node must close a session that forges writes"
        );
        ep.close().await;
    });
    let (_, a) = api
        .get_json(&format!("/api/assets/{}", assets[0].0))
        .unwrap();
    assert_eq!(
        a["isFavorite"], true,
        "the device's favorite reached the node: {a}"
    );
    let docs: Vec<String> = std::fs::read_dir(dir.path().join("n/docs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        docs.iter().all(|d| !d.contains("someone-else")),
        "forged document stored: {docs:?}"
    );

    // Revoking the key closes its live connection at once, and it is refused afterwards.
    rt.block_on(async {
        let ep = endpoint(key.clone()).await.unwrap();
        let mut s = connect(&ep, addr.clone(), None).await.unwrap().unwrap();
        let mut lib = Library::new(&[8; 16]);
        let mut sync = PeerSync::new();
        sync_until_quiet(&mut s, &mut lib, &mut sync, Duration::from_millis(300))
            .await
            .unwrap();
        let base = node.url.clone();
        let k = api.key.clone();
        let id = key.public().to_string();
        let t0 = Instant::now();
        let code = tokio::task::spawn_blocking(move || {
            let mut a = Api::new(&base);
            a.key = k;
            a.req(
                reqwest::Method::DELETE,
                &format!("/api/tessera/devices/{id}"),
            )
            .send()
            .unwrap()
            .status()
            .as_u16()
        })
        .await
        .unwrap();
        assert_eq!(code, 204);
        let closed = tokio::time::timeout(Duration::from_secs(30), s.conn.closed()).await;
        assert!(
            closed.is_ok(),
            "a revoked device's connection must close at once"
        );
        println!("revoked device disconnected after {:?}", t0.elapsed());
        let r = connect(&ep, addr.clone(), None).await.unwrap();
        assert!(r.is_err(), "a revoked key must be refused");
        ep.close().await;
    });

    // A browser pairs with its login session: logging out unpairs its key too.
    let login: serde_json::Value = api
        .client
        .post(format!("{}/api/auth/login", node.url))
        .json(&serde_json::json!({"email": "admin@example.com", "password": "correct horse"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let token = login["accessToken"].as_str().unwrap().to_owned();
    let browser_key = SecretKey::generate();
    let r = api
        .client
        .post(format!("{}/api/tessera/devices", node.url))
        .bearer_auth(&token)
        .json(&tessera_tests::p2p::bind_body(
            &browser_key,
            &addr.id,
            &tessera_tests::p2p::user_id(&api).unwrap(),
            "browser",
        ))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    rt.block_on(async {
        let ep = endpoint(browser_key.clone()).await.unwrap();
        let s = connect(&ep, addr.clone(), None).await.unwrap();
        assert!(s.is_ok(), "paired through the login session");
        let url = format!("{}/api/auth/logout", node.url);
        let client = api.client.clone();
        let t = token.clone();
        tokio::task::spawn_blocking(move || client.post(url).bearer_auth(t).send().unwrap())
            .await
            .unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(30), s.unwrap().conn.closed()).await;
        assert!(
            closed.is_ok(),
            "logging out closes the browser's connection"
        );
        let r = connect(&ep, addr.clone(), None).await.unwrap();
        assert!(r.is_err(), "a logged-out browser's key is refused");
        ep.close().await;
    });
}

#[test]
fn a_reverse_proxied_relay_url_is_what_browsers_are_told() {
    let dir = tempfile::tempdir().unwrap();
    let url = "https://photos.example.org/relay";
    let node = Node::start_with(&dir.path().join("n"), &["--relay-public-url", url]).unwrap();
    let mut api = Api::new(&node.url);
    api.bootstrap_admin().unwrap();
    let (code, v) = api.get_json("/api/tessera/peer").unwrap();
    assert_eq!((code, v["relayUrl"].as_str()), (200, Some(url)), "{v}");
    let (code, v) = bind(&api, &SecretKey::generate());
    assert_eq!(
        (code, v["node"]["relayUrl"].as_str()),
        (201, Some(url)),
        "{v}"
    );
}

fn count_originals(data: &std::path::Path) -> usize {
    count_files(&data.join("blobs/original"))
}

/// Files under `dir`, at any depth.
fn count_files(dir: &std::path::Path) -> usize {
    fn walk(p: &std::path::Path, n: &mut usize) {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, n);
                } else {
                    *n += 1;
                }
            }
        }
    }
    let mut n = 0;
    walk(dir, &mut n);
    n
}

fn stats_total(api: &Api) -> u64 {
    api.get_json("/api/assets/statistics")
        .ok()
        .and_then(|(c, v)| (c == 200).then(|| v["total"].as_u64()).flatten())
        .unwrap_or(0)
}

#[test]
fn a_second_node_joins_with_a_ticket_replicates_everything_and_can_take_over() {
    let n: u64 = std::env::var("TESSERA_REPLICATION_ASSETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    let mut a = Node::start(&da).unwrap();
    let mut api_a = Api::new(&a.url);
    api_a.bootstrap_admin().unwrap();
    let t0 = Instant::now();
    // Four uploaders at once (a phone backup does the same).
    let assets: Vec<(String, Vec<u8>)> = std::thread::scope(|s| {
        let per = n.div_ceil(4);
        let handles: Vec<_> = (0..4u64)
            .map(|k| {
                let api = &api_a;
                let from = 1 + k * per;
                let count = per.min((n + 1).saturating_sub(from));
                s.spawn(move || upload_n(api, from, count))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(assets.len() as u64, n);
    println!("uploaded {n} photos to node A in {:?}", t0.elapsed());

    // Only an admin gets a ticket; a malformed ticket is refused with a clear error.
    let r = Api::new(&a.url)
        .req(reqwest::Method::POST, "/api/pairing/tickets")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (ok, out) = run_sync_node(&[
        "serve",
        "--data",
        dir.path().join("bad").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--iroh",
        "127.0.0.1:0",
        "--relay",
        "127.0.0.1:0",
        "--join",
        "tessera1notaticket",
    ])
    .unwrap();
    assert!(!ok && out.contains("invalid pairing ticket"), "{out}");

    let r = api_a
        .req(reqwest::Method::POST, "/api/pairing/tickets")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let t: serde_json::Value = r.json().unwrap();
    let ticket = t["ticket"].as_str().unwrap().to_owned();
    assert!(ticket.starts_with("tessera1"), "{ticket}");

    let t0 = Instant::now();
    let b = Node::start_with(&db, &["--join", &ticket, "--name", "offsite"]).unwrap();
    let mut api_b = Api::new(&b.url);
    api_b.key = api_a.key.clone(); // the same API key works on the new node
                                   // A joined node never offers a sign-up of its own (that would split the household).
    let r = Api::new(&b.url)
        .req(reqwest::Method::POST, "/api/auth/admin-sign-up")
        .json(&serde_json::json!({"email": "intruder@example.com", "password": "longenough", "name": "I"}))
        .send()
        .unwrap();
    assert!(
        matches!(r.status().as_u16(), 400 | 409),
        "sign-up on a joined node: {}",
        r.status()
    );
    let deadline = Instant::now() + Duration::from_secs(240);
    while (stats_total(&api_b) < n || count_originals(&db) < n as usize)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = t0.elapsed();
    assert_eq!(stats_total(&api_b), n, "catalogue on B; log: {}", b.log());
    assert_eq!(count_originals(&db), n as usize, "originals on B");
    println!("node B replicated {n} assets (catalogue + originals) in {took:?}");
    // B joined with nothing and said so: A sent it the catalogue as whole documents, not
    // change by change.
    assert!(
        a.log().contains("sent documents the peer lacks whole"),
        "A's log: {}",
        a.log()
    );

    // Every original on B is byte-identical (spot-check through the API; fsck at the end checks
    // every blob by hash), and thumbnails made on A arrive as A makes them.
    for (id, bytes) in assets.iter().step_by((n as usize / 20).max(1)) {
        let (code, got) = api_b
            .get_bytes(&format!("/api/assets/{id}/original"))
            .unwrap();
        assert_eq!(code, 200);
        assert!(got == *bytes, "original {id} differs on B");
        api_a.wait_processed(id, Duration::from_secs(120)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, body) = api_b
                .get_bytes(&format!("/api/assets/{id}/thumbnail"))
                .unwrap();
            if code == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "thumbnail of {id} not on B: {code} {}; log: {}",
                String::from_utf8_lossy(&body),
                b.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // The ticket was single-use.
    let (ok, out) = run_sync_node(&[
        "serve",
        "--data",
        dir.path().join("c").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--iroh",
        "127.0.0.1:0",
        "--relay",
        "127.0.0.1:0",
        "--join",
        &ticket,
    ])
    .unwrap();
    assert!(!ok && out.contains("already used"), "{out}");

    // Replication goes both ways: an upload to B reaches A with its original.
    let extra = upload_n(&api_b, 5000, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while (stats_total(&api_a) < n + 1 || count_originals(&da) < n as usize + 1)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, got) = api_a
        .get_bytes(&format!("/api/assets/{}/original", extra[0].0))
        .unwrap();
    assert_eq!((code, got == extra[0].1), (200, true), "B's upload on A");

    // A device paired on A is known to B (the household document), and unpairing it on A
    // closes its live connection to B.
    let phone = SecretKey::generate();
    assert_eq!(bind(&api_a, &phone).0, 201);
    let addr_b = node_addr(&api_b).unwrap();
    let rt = rt();
    rt.block_on(async {
        let ep = endpoint(phone.clone()).await.unwrap();
        let mut s = None;
        for _ in 0..300 {
            if let Ok(Ok(ok)) = connect(&ep, addr_b.clone(), None).await {
                s = Some(ok);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let s = s.expect("B welcomes a device paired on A");
        let (base, key, id) = (a.url.clone(), api_a.key.clone(), phone.public().to_string());
        let code = tokio::task::spawn_blocking(move || {
            let mut api = Api::new(&base);
            api.key = key;
            api.req(
                reqwest::Method::DELETE,
                &format!("/api/tessera/devices/{id}"),
            )
            .send()
            .unwrap()
            .status()
            .as_u16()
        })
        .await
        .unwrap();
        assert_eq!(code, 204);
        let closed = tokio::time::timeout(Duration::from_secs(30), s.conn.closed()).await;
        assert!(
            closed.is_ok(),
            "unpairing on A closes the device's connection to B"
        );
        assert!(connect(&ep, addr_b.clone(), None).await.unwrap().is_err());
        ep.close().await;
    });

    // Node A is lost: B carries on with the same logins and keys.
    a.kill();
    let mut login_b = Api::new(&b.url);
    login_b
        .login("admin@example.com", "correct horse")
        .expect("the household's password works on B");
    assert_eq!(stats_total(&login_b), n + 1);
    let (code, got) = api_b
        .get_bytes(&format!("/api/assets/{}/original", assets[0].0))
        .unwrap();
    assert_eq!((code, got == assets[0].1), (200, true));
    let (code, _) = api_b
        .get_bytes(&format!("/api/assets/{}/thumbnail", assets[0].0))
        .unwrap();
    assert_eq!(code, 200, "derivatives replicated too");
    drop(b);
    let (ok, out) = run_sync_node(&["fsck", "--data", db.to_str().unwrap()]).unwrap();
    assert!(ok, "fsck on B: {out}");
}

/// A device of `email` (logged in over HTTP, key paired) connected over iroh and synced once.
struct Member {
    api: Api,
    user: String,
    ep: iroh::Endpoint,
    s: tessera_tests::p2p::Session,
    lib: Library,
    sync: PeerSync,
}

async fn member(url: &str, email: &str, password: &str, actor: u8) -> Member {
    let (api, key, addr, user) = tokio::task::block_in_place(|| {
        let mut api = Api::new(url);
        api.login(email, password).unwrap();
        let key = SecretKey::generate();
        assert_eq!(bind(&api, &key).0, 201);
        let addr = node_addr(&api).unwrap();
        let user = tessera_tests::p2p::user_id(&api).unwrap();
        (api, key, addr, user)
    });
    let ep = endpoint(key).await.unwrap();
    let s = connect(&ep, addr, None).await.unwrap().expect("welcomed");
    let mut m = Member {
        api,
        user,
        ep,
        s,
        lib: Library::new(&[actor; 16]),
        sync: PeerSync::new(),
    };
    sync_until_quiet(&mut m.s, &mut m.lib, &mut m.sync, Duration::from_secs(2))
        .await
        .unwrap();
    m
}

/// Shared albums over iroh: an editor's device adds its own photo and a comment (accepted and
/// spread to the owner's other device; the time that takes, p50/p95 over 50, is printed); a
/// viewer's device adding a photo is refused and nothing spreads; a member removed while their
/// session is live is told to drop the album at once.
#[test]
fn shared_album_contributions_over_iroh() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("n")).unwrap();
    let mut admin = Api::new(&node.url);
    admin.bootstrap_admin().unwrap();
    let mut ids = std::collections::BTreeMap::new();
    for name in ["kid", "gran"] {
        let (code, u) = {
            let r = admin
                .req(reqwest::Method::POST, "/api/admin/users")
                .json(&serde_json::json!({"email": format!("{name}@example.com"),
                    "password": "password1", "name": name, "shouldChangePassword": false}))
                .send()
                .unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().unwrap())
        };
        assert_eq!(code, 201, "{u}");
        ids.insert(name, u["id"].as_str().unwrap().to_owned());
    }
    let mine = upload_n(&admin, 1, 1);
    let r = admin
        .req(reqwest::Method::POST, "/api/albums")
        .json(&serde_json::json!({"albumName": "Holiday", "assetIds": [mine[0].0],
            "albumUsers": [{"userId": ids["kid"], "role": "editor"}, {"userId": ids["gran"], "role": "viewer"}]}))
        .send()
        .unwrap();
    let album: serde_json::Value = r.json().unwrap();
    let doc = DocId::album(album["id"].as_str().unwrap()).unwrap();
    let rt = rt();
    rt.block_on(async {
        let url = node.url.clone();
        let mut owner_dev = member(&url, "admin@example.com", "correct horse", 1).await;
        let mut kid = member(&url, "kid@example.com", "password1", 2).await;
        let mut gran = member(&url, "gran@example.com", "password1", 3).await;
        assert!(kid.lib.album(&doc).unwrap().is_some(), "the editor's device has the album");
        assert!(gran.lib.album(&doc).unwrap().is_some(), "the viewer's device has the album");

        // The editor's device adds its own photos (uploaded first) and comments; each addition
        // reaches the owner's device over the node. Timed 50 times.
        let kid_photos: Vec<String> = tokio::task::block_in_place(|| {
            (100..150)
                .map(|i| {
                    let (code, b) = kid.api.upload(&format!("k{i}.jpg"), small_jpeg(i)).unwrap();
                    assert!(code == 201, "{code} {b}");
                    b["id"].as_str().unwrap().to_owned()
                })
                .collect()
        });
        sync_until_quiet(&mut kid.s, &mut kid.lib, &mut kid.sync, Duration::from_secs(1))
            .await
            .unwrap();
        let mut times = Vec::new();
        for (n, p) in kid_photos.iter().enumerate() {
            let t0 = Instant::now();
            kid.lib
                .add_album_items(&doc, &[(p.clone(), kid.user.clone())], &kid.user, "2024-01-01T00:00:00Z")
                .unwrap();
            let ids: Vec<DocId> = kid.lib.ids().cloned().collect();
            let msgs = kid.sync.generate(&mut kid.lib, &ids);
            write(&mut kid.s.send, &Frame::Sync(SyncEnvelope::new("kid", msgs)))
                .await
                .unwrap();
            // The owner's device: read what the node pushes until the photo is in the album.
            loop {
                let f = tokio::time::timeout(Duration::from_secs(10), read(&mut owner_dev.s.recv))
                    .await
                    .expect("the owner's device hears of the addition")
                    .unwrap();
                if let Some(Frame::Sync(env)) = f {
                    owner_dev.sync.receive(&mut owner_dev.lib, env.docs, |_| true).unwrap();
                    let ids: Vec<DocId> = owner_dev.lib.ids().cloned().collect();
                    let msgs = owner_dev.sync.generate(&mut owner_dev.lib, &ids);
                    if !msgs.is_empty() {
                        write(&mut owner_dev.s.send, &Frame::Sync(SyncEnvelope::new("o", msgs)))
                            .await
                            .unwrap();
                    }
                }
                let a = owner_dev.lib.album(&doc).unwrap().unwrap();
                if a.items.len() == n + 2 {
                    break;
                }
            }
            times.push(t0.elapsed());
            // Let the editor's session settle (acks) before the next addition.
            sync_until_quiet(&mut kid.s, &mut kid.lib, &mut kid.sync, Duration::from_millis(30))
                .await
                .unwrap();
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "shared album over iroh: editor's device → owner's device, n={} p50={:.1} ms p95={:.1} ms max={:.1} ms",
            times.len(),
            ms(times[times.len() / 2]),
            ms(times[times.len() * 95 / 100]),
            ms(times[times.len() - 1])
        );
        let got = tokio::task::block_in_place(|| {
            owner_dev.api.get_json(&format!("/api/albums/{}", album["id"].as_str().unwrap())).unwrap().1
        });
        assert_eq!(got["assetCount"], 51, "the node's album has every addition");
        // The editor's photo is the editor's: the owner's API shows it with its owner.
        let a = owner_dev.lib.album(&doc).unwrap().unwrap();
        assert!(a.items.iter().filter(|i| i.owner == kid.user).count() == 50);

        // The viewer's device adds a photo of its own: refused, the album does not change.
        let gran_photo = tokio::task::block_in_place(|| {
            let (code, b) = gran.api.upload("g.jpg", small_jpeg(999)).unwrap();
            assert_eq!(code, 201, "{b}");
            b["id"].as_str().unwrap().to_owned()
        });
        sync_until_quiet(&mut gran.s, &mut gran.lib, &mut gran.sync, Duration::from_secs(1))
            .await
            .unwrap();
        gran.lib
            .add_album_items(&doc, &[(gran_photo.clone(), gran.user.clone())], &gran.user, "t")
            .unwrap();
        let refused = sync_until_quiet(&mut gran.s, &mut gran.lib, &mut gran.sync, Duration::from_secs(10)).await;
        assert!(refused.is_err(), "the node ends a session that writes beyond its role");
        let got = tokio::task::block_in_place(|| {
            owner_dev.api.get_json(&format!("/api/albums/{}", album["id"].as_str().unwrap())).unwrap().1
        });
        assert_eq!(got["assetCount"], 51, "nothing spread: {got}");

        // The editor is removed while connected: their device is told to drop the album.
        let code = tokio::task::block_in_place(|| {
            owner_dev
                .api
                .req(reqwest::Method::DELETE, &format!("/api/albums/{}/user/{}", album["id"].as_str().unwrap(), ids["kid"]))
                .send()
                .unwrap()
                .status()
                .as_u16()
        });
        assert_eq!(code, 204);
        let t0 = Instant::now();
        while kid.lib.contains(&doc) {
            assert!(t0.elapsed() < Duration::from_secs(30), "the removed member still holds the album");
            sync_until_quiet(&mut kid.s, &mut kid.lib, &mut kid.sync, Duration::from_millis(200))
                .await
                .unwrap();
        }
        println!("a removed member's live device dropped the album in {:?}", t0.elapsed());
        for m in [owner_dev, kid, gran] {
            m.ep.close().await;
        }
    });
}

/// Bit rot on the second node: the scrub re-reads every blob, quarantines the original and the
/// thumbnail whose bytes no longer match their hashes, and gets both back — the original from
/// the first node (replication, hash-checked), the thumbnail by replication or its media job —
/// while the admin's status says what it found and that it is repaired.
#[test]
fn the_scrub_finds_rotten_blobs_and_gets_them_back_from_the_other_node() {
    let dir = tempfile::tempdir().unwrap();
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    let a = Node::start(&da).unwrap();
    let mut api_a = Api::new(&a.url);
    api_a.bootstrap_admin().unwrap();
    let assets = upload_n(&api_a, 1, 3);
    for (id, _) in &assets {
        api_a.wait_processed(id, Duration::from_secs(60)).unwrap();
    }
    let r = api_a
        .req(reqwest::Method::POST, "/api/pairing/tickets")
        .send()
        .unwrap();
    let ticket = r.json::<serde_json::Value>().unwrap()["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    // Scheduled passes off: this test starts the one pass it wants.
    let b = Node::start_with(
        &db,
        &[
            "--join",
            &ticket,
            "--scrub-rate-mb",
            "0",
            "--name",
            "offsite",
        ],
    )
    .unwrap();
    let mut api_b = Api::new(&b.url);
    api_b.key = api_a.key.clone();
    let (id, bytes) = assets[1].clone();
    let original = db.join(format!("blobs/original/{}/{}/{id}", &id[..2], &id[2..4]));
    let deadline = Instant::now() + Duration::from_secs(60);
    while count_originals(&db) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(count_originals(&db), 3, "replicated; log: {}", b.log());
    let asset = api_b.wait_processed(&id, Duration::from_secs(60)).unwrap();
    let thumb_hash = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, _) = api_b
                .get_bytes(&format!("/api/assets/{id}/thumbnail"))
                .unwrap();
            let found = std::fs::read_dir(db.join("blobs/thumb"))
                .map(|rd| rd.count() > 0)
                .unwrap_or(false);
            if code == 200 && found {
                break;
            }
            assert!(Instant::now() < deadline, "no thumbnail on B: {asset}");
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut files = Vec::new();
        let mut stack = vec![db.join("blobs/thumb")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    files.push(e.path());
                }
            }
        }
        files.sort();
        files[0].clone()
    };
    // Every blob on B first (previews and the other thumbnails may still be arriving, and
    // the pass counts what it reads).
    let deadline = Instant::now() + Duration::from_secs(60);
    while count_files(&db.join("blobs")) < count_files(&da.join("blobs"))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Rot: one flipped byte in the middle of each file, sizes unchanged.
    for path in [&original, &thumb_hash] {
        let mut b = std::fs::read(path).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x40;
        std::fs::write(path, b).unwrap();
    }
    let (code, status) = api_b.get_json("/api/tessera/admin/scrub").unwrap();
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["running"], false, "{status}");
    assert!(status["lastPass"].is_null(), "{status}");
    // Admins only.
    let r = Api::new(&b.url)
        .req(reqwest::Method::POST, "/api/tessera/admin/scrub")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = api_b
        .req(reqwest::Method::POST, "/api/tessera/admin/scrub")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        let (_, s) = api_b.get_json("/api/tessera/admin/scrub").unwrap();
        if s["running"] == false && !s["lastPass"].is_null() {
            break s;
        }
        assert!(Instant::now() < deadline, "scrub did not finish: {s}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let last = &status["lastPass"];
    let corrupt = last["corrupt"].as_array().unwrap();
    assert_eq!(corrupt.len(), 2, "{status}");
    let kinds: Vec<&str> = corrupt
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"original") && kinds.contains(&"thumb"),
        "{status}"
    );
    assert!(corrupt.iter().any(|c| c["hash"] == id.as_str()), "{status}");
    assert!(last["files"].as_u64().unwrap() >= 9, "{status}");
    for c in corrupt {
        let q = std::path::Path::new(c["quarantinedTo"].as_str().unwrap());
        assert!(
            q.starts_with(db.join("quarantine")) && q.is_file(),
            "{status}"
        );
    }
    // Both come back, and the status says so.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, s) = api_b.get_json("/api/tessera/admin/scrub").unwrap();
        if s["lastPass"]["corrupt"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["repaired"] == true)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not repaired: {s}; log: {}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        std::fs::read(&original).unwrap(),
        bytes,
        "the original is whole again on B"
    );
    let (code, got) = api_b
        .get_bytes(&format!("/api/assets/{id}/original"))
        .unwrap();
    assert_eq!((code, got == bytes), (200, true));
    // A second pass finds every file intact.
    let r = api_b
        .req(reqwest::Method::POST, "/api/tessera/admin/scrub")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let first_finished = last["finished"].clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, s) = api_b.get_json("/api/tessera/admin/scrub").unwrap();
        let new_pass = s["lastPass"]["finished"] != first_finished
            || s["lastPass"]["corrupt"]
                .as_array()
                .is_some_and(|c| c.is_empty());
        if s["running"] == false && new_pass {
            assert_eq!(s["lastPass"]["corrupt"].as_array().unwrap().len(), 0, "{s}");
            break;
        }
        assert!(Instant::now() < deadline, "second pass: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(a);
}
