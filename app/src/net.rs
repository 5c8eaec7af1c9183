//! Talking to the sync node: fetch for JSON and sync bytes, XMLHttpRequest for uploads (it
//! reports upload progress, fetch does not).

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::Uint8Array;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{FormData, ProgressEvent, RequestCredentials, RequestInit, Response, XmlHttpRequest};

use crate::session;

/// A failed exchange: `status == 0` means the node was not reachable (offline).
#[derive(Debug, Clone)]
pub struct NetError {
    pub status: u16,
    pub message: String,
}

impl NetError {
    pub fn offline(e: impl std::fmt::Debug) -> Self {
        Self {
            status: 0,
            message: format!("node unreachable: {e:?}"),
        }
    }
    pub fn is_offline(&self) -> bool {
        self.status == 0
    }
}

fn js(e: JsValue) -> String {
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

/// The `message` of an Immich-style error body, or the body itself.
pub fn error_message(status: u16, body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            format!(
                "HTTP {status}: {}",
                body.chars().take(200).collect::<String>()
            )
        })
}

async fn fetch(
    method: &str,
    url: &str,
    body: Option<&JsValue>,
    content_type: Option<&str>,
) -> Result<Response, NetError> {
    let window = web_sys::window().ok_or_else(|| NetError::offline("no window"))?;
    let init = RequestInit::new();
    init.set_method(method);
    init.set_credentials(RequestCredentials::SameOrigin);
    let headers = web_sys::Headers::new().map_err(NetError::offline)?;
    if let Some(ct) = content_type {
        let _ = headers.set("content-type", ct);
    }
    if let Some(t) = session::token() {
        let _ = headers.set("authorization", &format!("Bearer {t}"));
    }
    init.set_headers(&headers);
    if let Some(b) = body {
        init.set_body(b);
    }
    let resp = JsFuture::from(window.fetch_with_str_and_init(url, &init))
        .await
        .map_err(NetError::offline)?;
    resp.dyn_into::<Response>().map_err(NetError::offline)
}

async fn text(resp: &Response) -> String {
    match resp.text() {
        Ok(p) => JsFuture::from(p)
            .await
            .ok()
            .and_then(|v| v.as_string())
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// JSON request → (status, JSON). Non-2xx statuses are errors carrying the node's message.
pub async fn json(
    method: &str,
    url: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, NetError> {
    let b = body.map(|b| JsValue::from_str(&b.to_string()));
    let resp = fetch(method, url, b.as_ref(), Some("application/json")).await?;
    let status = resp.status();
    let t = text(&resp).await;
    if !(200..300).contains(&status) {
        return Err(NetError {
            status,
            message: error_message(status, &t),
        });
    }
    Ok(serde_json::from_str(&t).unwrap_or(serde_json::Value::Null))
}

/// Binary POST (the catalogue sync endpoint).
pub async fn post_bytes(url: &str, bytes: &[u8]) -> Result<Vec<u8>, NetError> {
    let body = Uint8Array::from(bytes);
    let resp = fetch(
        "POST",
        url,
        Some(&body.into()),
        Some("application/octet-stream"),
    )
    .await?;
    let status = resp.status();
    if !(200..300).contains(&status) {
        let t = text(&resp).await;
        return Err(NetError {
            status,
            message: error_message(status, &t),
        });
    }
    let buf = JsFuture::from(resp.array_buffer().map_err(NetError::offline)?)
        .await
        .map_err(NetError::offline)?;
    Ok(Uint8Array::new(&buf).to_vec())
}

/// GET a binary resource as bytes (embedding packs).
pub async fn get_bytes(url: &str) -> Result<Vec<u8>, NetError> {
    let b = get_blob(url).await?;
    let buf = JsFuture::from(b.array_buffer())
        .await
        .map_err(NetError::offline)?;
    Ok(Uint8Array::new(&buf).to_vec())
}

/// GET a binary resource as a Blob (thumbnails).
pub async fn get_blob(url: &str) -> Result<web_sys::Blob, NetError> {
    let resp = fetch("GET", url, None, None).await?;
    let status = resp.status();
    if !(200..300).contains(&status) {
        let t = text(&resp).await;
        return Err(NetError {
            status,
            message: error_message(status, &t),
        });
    }
    let b = JsFuture::from(resp.blob().map_err(NetError::offline)?)
        .await
        .map_err(NetError::offline)?;
    b.dyn_into().map_err(NetError::offline)
}

/// Multipart upload with progress (0.0–1.0). Returns (status, body text).
pub async fn upload(
    form: &FormData,
    on_progress: impl Fn(f64) + 'static,
) -> Result<(u16, String), NetError> {
    let xhr = XmlHttpRequest::new().map_err(NetError::offline)?;
    xhr.open_with_async("POST", "/api/assets", true)
        .map_err(NetError::offline)?;
    if let Some(t) = session::token() {
        let _ = xhr.set_request_header("authorization", &format!("Bearer {t}"));
    }
    let (tx, rx) = futures::channel::oneshot::channel::<Result<(), String>>();
    let tx = Rc::new(RefCell::new(Some(tx)));
    let done = {
        let tx = tx.clone();
        Closure::<dyn FnMut()>::new(move || {
            if let Some(t) = tx.borrow_mut().take() {
                let _ = t.send(Ok(()));
            }
        })
    };
    let failed = {
        let tx = tx.clone();
        Closure::<dyn FnMut()>::new(move || {
            if let Some(t) = tx.borrow_mut().take() {
                let _ = t.send(Err("network error".into()));
            }
        })
    };
    let progress = Closure::<dyn FnMut(ProgressEvent)>::new(move |e: ProgressEvent| {
        if e.length_computable() && e.total() > 0.0 {
            on_progress(e.loaded() / e.total());
        }
    });
    xhr.set_onload(Some(done.as_ref().unchecked_ref()));
    xhr.set_onerror(Some(failed.as_ref().unchecked_ref()));
    xhr.set_onabort(Some(failed.as_ref().unchecked_ref()));
    xhr.set_ontimeout(Some(failed.as_ref().unchecked_ref()));
    if let Ok(up) = xhr.upload() {
        up.set_onprogress(Some(progress.as_ref().unchecked_ref()));
    }
    xhr.send_with_opt_form_data(Some(form))
        .map_err(NetError::offline)?;
    let outcome = rx
        .await
        .map_err(|_| NetError::offline("upload cancelled"))?;
    outcome.map_err(NetError::offline)?;
    let status = xhr.status().map_err(NetError::offline)?;
    if status == 0 {
        return Err(NetError::offline("no response"));
    }
    let body = xhr
        .response_text()
        .map_err(|e| NetError::offline(js(e)))?
        .unwrap_or_default();
    Ok((status, body))
}
