// Tessera service worker: keeps the app shell available offline. The catalogue and thumbnails
// live in IndexedDB (the app's own code), so API requests are never cached here.
importScripts("/outbox.js");
const CACHE = "tessera-shell-v5";
// Files that exist under fixed names. The app's own module and wasm carry a content hash in
// their names (trunk's filehash); the install step reads them from the built index.html.
const FIXED = ["/", "/index.html", "/manifest.webmanifest", "/outbox.js", "/icon-192.png", "/icon-512.png", "/world.svg", "/search-worker.js", "/search-worker_bg.wasm", "/sync-worker.js", "/sync-worker_bg.wasm"];
// `name-<hex>.js` / `name-<hex>_bg.wasm`: content-addressed, never changes under its name.
const HASHED = /-[0-9a-f]{8,16}(?:_bg\.wasm|\.js|\.css)$/;

async function shellFiles() {
  const html = await (await fetch("/index.html", { cache: "no-cache" })).text();
  const linked = [...html.matchAll(/["'](\/[A-Za-z0-9_.\-]+\.(?:js|wasm|css))["']/g)].map((m) => m[1]);
  return [...new Set([...FIXED, ...linked])];
}

self.addEventListener("install", (event) => {
  event.waitUntil(
    Promise.all([caches.open(CACHE), shellFiles()])
      .then(([c, files]) => c.addAll(files))
      .then(() => self.skipWaiting())
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim())
  );
});

// Web Share Target ("Share → Tessera" in the phone's gallery): the browser POSTs the files
// here; they go straight into the outbox, offline too, and the app opens showing them.
async function shareTarget(req) {
  try {
    const form = await req.formData();
    const files = form.getAll("media").filter((f) => typeof f === "object");
    const n = await tesseraQueueFiles(files);
    return Response.redirect("/?shared=" + n, 303);
  } catch (e) {
    return Response.redirect("/?shared=error", 303);
  }
}

self.addEventListener("fetch", (event) => {
  const req = event.request;
  const url = new URL(req.url);
  if (req.method === "POST" && url.origin === self.location.origin && url.pathname === "/share-target") {
    event.respondWith(shareTarget(req));
    return;
  }
  if (req.method !== "GET" || url.origin !== self.location.origin || url.pathname.startsWith("/api/")) return;
  // A content-hashed file: the cache first (a second load reads nothing from the network).
  if (HASHED.test(url.pathname)) {
    event.respondWith(
      caches.match(req).then((hit) => hit || fetch(req).then((res) => {
        if (res.ok) {
          const copy = res.clone();
          caches.open(CACHE).then((c) => c.put(req, copy));
        }
        return res;
      }))
    );
    return;
  }
  // Everything else network first (so a new version arrives when online), the cached shell
  // when offline.
  event.respondWith(
    fetch(req)
      .then((res) => {
        if (res.ok) {
          const copy = res.clone();
          caches.open(CACHE).then((c) => c.put(req, copy));
        }
        return res;
      })
      .catch(() => caches.match(req).then((hit) => hit || (req.mode === "navigate" ? caches.match("/index.html") : Response.error())))
  );
});
