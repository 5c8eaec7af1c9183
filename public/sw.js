// Tessera service worker: keeps the app shell available offline. The catalogue and thumbnails
// live in IndexedDB (the app's own code), so API requests are never cached here.
importScripts("/outbox.js");
const CACHE = "tessera-shell-v4";
const SHELL = ["/", "/index.html", "/tessera-app.js", "/tessera-app_bg.wasm", "/manifest.webmanifest", "/outbox.js", "/icon-192.png", "/icon-512.png", "/world.svg", "/search-worker.js", "/search-worker_bg.wasm"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
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
  // Network first (so a new version arrives when online), the cached shell when offline.
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
