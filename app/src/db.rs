//! IndexedDB (rexie): catalogue documents, the outbox of originals, cached thumbnails.

use js_sys::{Object, Reflect, Uint8Array};
use rexie::{ObjectStore, Rexie, TransactionMode};
use wasm_bindgen::{JsCast, JsValue};

pub const DOCS: &str = "docs";
pub const OUTBOX: &str = "outbox";
pub const THUMBS: &str = "thumbs";

pub async fn open() -> Result<Rexie, String> {
    Rexie::builder("tessera")
        .version(1)
        .add_object_store(ObjectStore::new(DOCS))
        .add_object_store(ObjectStore::new(OUTBOX).key_path("id"))
        .add_object_store(ObjectStore::new(THUMBS))
        .build()
        .await
        .map_err(|e| format!("cannot open IndexedDB: {e}"))
}

/// A database of its own next to the catalogue's (which keeps its version: the service worker
/// opens it too), with `stores`, opened once per page and kept in `cell`.
pub async fn side_db(
    cell: &'static std::thread::LocalKey<std::cell::RefCell<Option<std::rc::Rc<Rexie>>>>,
    name: &str,
    stores: &[&str],
) -> Result<std::rc::Rc<Rexie>, String> {
    if let Some(d) = cell.with(|d| d.borrow().clone()) {
        return Ok(d);
    }
    let mut b = Rexie::builder(name).version(1);
    for s in stores {
        b = b.add_object_store(ObjectStore::new(s));
    }
    let d = std::rc::Rc::new(
        b.build()
            .await
            .map_err(|e| format!("cannot open {name}: {e}"))?,
    );
    cell.with(|x| *x.borrow_mut() = Some(d.clone()));
    Ok(d)
}

fn err(e: rexie::Error) -> String {
    e.to_string()
}

pub async fn put(
    db: &Rexie,
    store: &str,
    key: Option<&str>,
    value: &JsValue,
) -> Result<(), String> {
    let tx = db
        .transaction(&[store], TransactionMode::ReadWrite)
        .map_err(err)?;
    let s = tx.store(store).map_err(err)?;
    let k = key.map(JsValue::from_str);
    s.put(value, k.as_ref()).await.map_err(err)?;
    tx.done().await.map_err(err)?;
    Ok(())
}

/// Puts many (key, value) pairs in one transaction: one commit instead of one per document
/// (a first sync saves hundreds).
pub async fn put_many(db: &Rexie, store: &str, items: &[(String, JsValue)]) -> Result<(), String> {
    let tx = db
        .transaction(&[store], TransactionMode::ReadWrite)
        .map_err(err)?;
    let s = tx.store(store).map_err(err)?;
    for (k, v) in items {
        s.put(v, Some(&JsValue::from_str(k))).await.map_err(err)?;
    }
    tx.done().await.map_err(err)?;
    Ok(())
}

pub async fn get(db: &Rexie, store: &str, key: &str) -> Result<Option<JsValue>, String> {
    let tx = db
        .transaction(&[store], TransactionMode::ReadOnly)
        .map_err(err)?;
    let s = tx.store(store).map_err(err)?;
    let v = s.get(JsValue::from_str(key)).await.map_err(err)?;
    Ok(v.filter(|v| !v.is_undefined()))
}

pub async fn delete(db: &Rexie, store: &str, key: &str) -> Result<(), String> {
    let tx = db
        .transaction(&[store], TransactionMode::ReadWrite)
        .map_err(err)?;
    let s = tx.store(store).map_err(err)?;
    s.delete(JsValue::from_str(key)).await.map_err(err)?;
    tx.done().await.map_err(err)?;
    Ok(())
}

/// All (key, value) pairs of a store.
pub async fn all(db: &Rexie, store: &str) -> Result<Vec<(String, JsValue)>, String> {
    let tx = db
        .transaction(&[store], TransactionMode::ReadOnly)
        .map_err(err)?;
    let s = tx.store(store).map_err(err)?;
    let items = s.scan(None, None, None, None).await.map_err(err)?;
    Ok(items
        .into_iter()
        .filter_map(|(k, v)| Some((k.as_string()?, v)))
        .collect())
}

/// Whether a failed write (its error `e`) looks like the origin's storage being full: the
/// error names the quota, or the browser's estimate puts usage at 90% of the quota or more.
pub async fn storage_full(e: &str) -> bool {
    if e.contains("Quota") || e.contains("quota") {
        return true;
    }
    let estimate = async {
        let w = web_sys::window()?;
        let storage = Reflect::get(&w.navigator(), &"storage".into()).ok()?;
        let f: js_sys::Function = Reflect::get(&storage, &"estimate".into())
            .ok()?
            .dyn_into()
            .ok()?;
        let p: js_sys::Promise = f.call0(&storage).ok()?.dyn_into().ok()?;
        let est = wasm_bindgen_futures::JsFuture::from(p).await.ok()?;
        let n = |k: &str| Reflect::get(&est, &k.into()).ok()?.as_f64();
        Some((n("usage")?, n("quota")?))
    };
    estimate
        .await
        .is_some_and(|(usage, quota)| quota > 0.0 && usage >= 0.9 * quota)
}

/// Deletes everything in a store.
pub async fn clear(db: &Rexie, store: &str) -> Result<(), String> {
    let tx = db
        .transaction(&[store], TransactionMode::ReadWrite)
        .map_err(err)?;
    let s = tx.store(store).map_err(err)?;
    s.clear().await.map_err(err)?;
    tx.done().await.map_err(err)?;
    Ok(())
}

pub async fn count(db: &Rexie, store: &str) -> Result<u32, String> {
    let tx = db
        .transaction(&[store], TransactionMode::ReadOnly)
        .map_err(err)?;
    let s = tx.store(store).map_err(err)?;
    s.count(None).await.map_err(err)
}

pub fn bytes_value(b: &[u8]) -> JsValue {
    Uint8Array::from(b).into()
}

/// An outbox entry: the File itself (IndexedDB stores Blobs) and what the upload needs.
pub fn outbox_entry(id: &str, file: &web_sys::File) -> JsValue {
    let o = Object::new();
    let _ = Reflect::set(&o, &"id".into(), &id.into());
    let _ = Reflect::set(&o, &"name".into(), &file.name().into());
    let _ = Reflect::set(&o, &"size".into(), &file.size().into());
    let _ = Reflect::set(&o, &"lastModified".into(), &file.last_modified().into());
    let _ = Reflect::set(&o, &"blob".into(), file);
    o.into()
}

pub fn field_str(v: &JsValue, k: &str) -> Option<String> {
    Reflect::get(v, &k.into()).ok()?.as_string()
}

pub fn field_f64(v: &JsValue, k: &str) -> Option<f64> {
    Reflect::get(v, &k.into()).ok()?.as_f64()
}

pub fn field_blob(v: &JsValue, k: &str) -> Option<web_sys::Blob> {
    Reflect::get(v, &k.into()).ok()?.dyn_into().ok()
}
