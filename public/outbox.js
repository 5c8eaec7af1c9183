// Tessera's outbox in IndexedDB, for the service worker (Web Share Target) and the page
// (file handlers): the same database, store and entry shape the app's Rust code uses
// (app/src/db.rs: database "tessera" v1, store "outbox" keyed by "id", the File as "blob").
// The app uploads the outbox when it runs and is signed in; an entry leaves only when the node
// acknowledged it.
"use strict";
function tesseraOpenDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open("tessera", 1);
    req.onupgradeneeded = () => {
      const db = req.result;
      if (!db.objectStoreNames.contains("docs")) db.createObjectStore("docs");
      if (!db.objectStoreNames.contains("outbox")) db.createObjectStore("outbox", { keyPath: "id" });
      if (!db.objectStoreNames.contains("thumbs")) db.createObjectStore("thumbs");
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function tesseraId() {
  const b = new Uint8Array(12);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

// Media types the node accepts (by type, else by extension: phones send HEIC/DNG as octet-stream).
const TESSERA_MEDIA = /\.(jpe?g|png|webp|gif|heic|heif|hif|avif|tiff?|dng|cr2|cr3|nef|arw|orf|rw2|raf|mp4|m4v|mov|mkv|webm|3gp)$/i;
function tesseraIsMedia(f) {
  return f && f.size > 0 && (/^(image|video)\//.test(f.type) || TESSERA_MEDIA.test(f.name || ""));
}

// Puts files in the outbox; returns how many were queued (non-media files are skipped).
async function tesseraQueueFiles(files) {
  const media = files.filter(tesseraIsMedia);
  if (!media.length) return 0;
  const db = await tesseraOpenDb();
  await new Promise((resolve, reject) => {
    const tx = db.transaction("outbox", "readwrite");
    const store = tx.objectStore("outbox");
    for (const f of media) {
      store.put({ id: tesseraId(), name: f.name || "shared", size: f.size,
                  lastModified: f.lastModified || Date.now(), blob: f });
    }
    tx.oncomplete = resolve;
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
  db.close();
  return media.length;
}
