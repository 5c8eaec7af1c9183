//! The sync node: Tessera's always-on peer.
//!
//! Codemap: [`blobs`] (content-addressed originals and derivatives, sled index, fsck),
//! [`catalog`] (the automerge documents on disk, sync sessions with peers), [`auth`] (users,
//! sessions, API keys), [`ingest`] (an upload becoming an asset), [`jobs`] (the persisted,
//! bounded media queue), [`http`] (axum: a router per feature, Immich-shaped API + PWA hosting,
//! and the access table every route is checked against), [`housekeeping`] (archive, trash,
//! purge, duplicates, catalogue checks), [`import`] (bulk import of a folder tree).
//!
//! Architecture invariant: an upload is acknowledged only after the original is fsynced under
//! its hash and its catalogue record is persisted. The blob files are the truth; the sled index
//! can always be rebuilt from them (`sync-node fsck --repair`).

pub mod auth;
pub mod blobs;
pub mod catalog;
pub mod geo;
pub mod housekeeping;
pub mod http;
pub mod immich_sync;
pub mod import;
pub mod ingest;
pub mod jobs;
pub mod links;
pub mod node;
pub mod objects;
pub mod peer;
pub mod scrub;
pub mod smart_index;
pub mod upload;
pub mod views;
pub mod webhooks;

pub use node::{Node, NodeConfig, NodeError};

/// Current UTC time, RFC 3339 with milliseconds.
pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Random bytes as lowercase hex (tokens, ids).
pub(crate) fn random_hex(n: usize) -> Result<String, getrandom::Error> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
