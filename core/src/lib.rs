//! Tessera's core: the catalogue schema (automerge documents) and the sans-IO sync protocol.
//!
//! Architecture invariant: this crate does no IO (no files, sockets, clocks or randomness of its
//! own) and compiles for `wasm32-unknown-unknown` as well as natively. Callers move bytes.

pub mod album;
pub mod docid;
pub mod dupes;
pub mod library;
pub mod memories;
pub mod ml;
pub mod pack;
pub mod partner;
pub mod record;
pub mod search;
pub mod sync;
pub mod wire;

pub use album::{Activity, AlbumRole, AlbumView};
pub use docid::{DocId, DocIdError};
pub use library::{Library, LibraryError, ShardSummary};
pub use partner::PartnerShare;
pub use record::AssetRecord;
pub use sync::{Access, DocMessage, MsgKind, PeerSync, SyncEnvelope, SyncError};
