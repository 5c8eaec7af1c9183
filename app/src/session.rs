//! The signed-in user and this device's identity, in localStorage (so the app starts offline).

use serde::{Deserialize, Serialize};

const KEY: &str = "tessera.session";
const DEVICE: &str = "tessera.device";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Session {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub token: String,
    /// Admins see the Members page (the node checks again on every call).
    #[serde(default)]
    pub is_admin: bool,
}

/// This browser profile's device: a peer id for sync and 16 actor bytes for automerge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Device {
    pub id: String,
    pub actor: Vec<u8>,
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

pub fn load() -> Option<Session> {
    serde_json::from_str(&storage()?.get_item(KEY).ok()??).ok()
}

pub fn save(s: &Session) {
    if let (Some(st), Ok(v)) = (storage(), serde_json::to_string(s)) {
        let _ = st.set_item(KEY, &v);
    }
}

pub fn clear() {
    if let Some(st) = storage() {
        let _ = st.remove_item(KEY);
    }
}

pub fn token() -> Option<String> {
    load().map(|s| s.token)
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    if getrandom::fill(&mut b).is_err() {
        // Without crypto randomness, fall back to time-derived bytes (unique enough per device).
        let t = js_sys::Date::now().to_bits().to_le_bytes();
        for (i, x) in b.iter_mut().enumerate() {
            *x = t[i % 8] ^ (i as u8).wrapping_mul(31);
        }
    }
    b
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn device() -> Device {
    if let Some(d) = storage()
        .and_then(|s| s.get_item(DEVICE).ok().flatten())
        .and_then(|v| serde_json::from_str(&v).ok())
    {
        return d;
    }
    let actor = random_bytes(16);
    let d = Device {
        id: format!("web-{}", hex(&actor[..8])),
        actor,
    };
    if let (Some(st), Ok(v)) = (storage(), serde_json::to_string(&d)) {
        let _ = st.set_item(DEVICE, &v);
    }
    d
}
