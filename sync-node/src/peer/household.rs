//! Mirroring the household document (accounts, devices) from the node that invited us.

use std::collections::BTreeMap;
use std::sync::Arc;

use tessera_core::DocId;

use super::*;
use crate::node::Node;

impl Peer {
    /// Mirrors the account trees into the household document after every change (so other
    /// nodes receive them by sync).
    pub(super) async fn mirror_household(self: Arc<Self>) {
        let mut rx = self.node.auth.subscribe();
        loop {
            let node = self.node.clone();
            let r = tokio::task::spawn_blocking(move || mirror(&node)).await;
            match r {
                Ok(Err(e)) => tracing::warn!("mirroring accounts to the household document: {e}"),
                Err(e) => tracing::warn!("mirroring accounts: {e}"),
                Ok(Ok(())) => {}
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Household document keys: `<tree>/<hex key>` → `{"v": base64 value}`.
fn mirror(node: &Node) -> Result<(), PeerError> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let doc = DocId::household();
    // Export under the catalogue lock: `apply` imports under it too, so a stale export can
    // never overwrite (or delete) what a sync just brought in.
    let mut lib = node.catalog.lock().map_err(proto)?;
    let exported = node.auth.export().map_err(proto)?;
    let current: BTreeMap<String, String> = lib
        .entries(&doc, "")
        .map_err(proto)?
        .into_iter()
        .filter_map(|(k, f)| Some((k, f.get("v")?.as_str()?.to_owned())))
        .collect();
    let mut set = Vec::new();
    for (k, v) in &exported {
        let enc = b64.encode(v);
        if current.get(k) != Some(&enc) {
            let mut f = tessera_core::library::Fields::new();
            f.insert("v".into(), serde_json::Value::String(enc));
            set.push((k.clone(), f));
        }
    }
    // Keys of trees this node does not know (a newer node's) are left alone.
    let gone: Vec<String> = current
        .keys()
        .filter(|k| !exported.contains_key(*k))
        .filter(|k| {
            k.split_once('/')
                .is_some_and(|(t, _)| crate::auth::REPLICATED.contains(&t))
        })
        .cloned()
        .collect();
    if set.is_empty() && gone.is_empty() {
        return Ok(());
    }
    if !set.is_empty() {
        lib.merge_entries(&doc, &set).map_err(proto)?;
    }
    if !gone.is_empty() {
        lib.remove_entries(&doc, &gone).map_err(proto)?;
    }
    node.catalog.persist(&mut lib).map_err(proto)?;
    Ok(())
}
