//! Checkpoints of Immich's sync stream (`POST /api/sync/stream`, `/api/sync/ack`), per login
//! session.
//!
//! The stream is a *view* of the catalogue documents, not a second source of truth: every
//! stream recomputes the entities a session may see (its user, the household's users, its
//! partners, its assets and their EXIF, partners' and albums' assets, albums, their members and
//! items) and sends those whose content hash differs from what the session acknowledged, then a
//! delete for every acknowledged entity that is gone. What a session acknowledged is stored
//! here: `(session, group, key) → content hash`, in the sled tree `immich_sync`.
//!
//! Immich's app acknowledges only the *last* line of each type of a batch, and that stands for
//! every earlier line of the type. So the lines of the session's latest stream are kept in
//! memory ([`Pending`]); an ack `Type|<stream>-<index>|` applies every pending line of that type
//! up to the index. A restart loses the pending lines: the next stream sends them again, which
//! the app takes as upserts (nothing lost, a little resent).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::node::NodeError;

/// Bumped when the shape of what the stream sends changes: sessions with older checkpoints are
/// told `SyncResetV1` and start over.
pub const SCHEMA: &str = "1";

/// 16 bytes of BLAKE3 over an entity's JSON.
pub type Hash = [u8; 16];

pub fn hash_of(data: &[u8]) -> Hash {
    let h = blake3::hash(data);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.as_bytes()[..16]);
    out
}

/// One line of a stream, as far as acknowledging it is concerned.
#[derive(Debug, Clone)]
pub struct PendingLine {
    /// The line's entity type (`AssetV2`, `AssetDeleteV1`…): what an ack names.
    pub line_type: &'static str,
    /// The checkpoint group (the request type that produced it).
    pub group: &'static str,
    pub key: String,
    /// `None` for a delete.
    pub hash: Option<Hash>,
}

#[derive(Debug, Default)]
struct Pending {
    stream: u64,
    lines: Vec<PendingLine>,
}

#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("invalid ack {0:?}: expected `Type|stream-index|` as sent in the stream")]
    Invalid(String),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Sled(#[from] sled::Error),
}

pub struct SyncCheckpoints {
    tree: sled::Tree,
    pending: Mutex<HashMap<String, Pending>>,
    next_stream: std::sync::atomic::AtomicU64,
}

fn prefix(session: &str) -> Vec<u8> {
    let mut k = session.as_bytes().to_vec();
    k.push(0);
    k
}

fn entity_key(session: &str, group: &str, key: &str) -> Vec<u8> {
    let mut k = prefix(session);
    k.extend_from_slice(group.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// Where the last ack of an entity type is kept (`GET /api/sync/ack`).
fn ack_key(session: &str, line_type: &str) -> Vec<u8> {
    let mut k = prefix(session);
    k.extend_from_slice(b"#ack\0");
    k.extend_from_slice(line_type.as_bytes());
    k
}

fn schema_key(session: &str) -> Vec<u8> {
    let mut k = prefix(session);
    k.extend_from_slice(b"#schema");
    k
}

impl SyncCheckpoints {
    pub fn open(db: &sled::Db) -> Result<Self, NodeError> {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        Ok(Self {
            tree: db.open_tree("immich_sync")?,
            pending: Mutex::new(HashMap::new()),
            // Stream numbers are unique across restarts (an ack of a stream from before a
            // restart names no pending stream and is ignored, never misapplied).
            next_stream: std::sync::atomic::AtomicU64::new(start),
        })
    }

    /// What `session` acknowledged of `group`: key → content hash.
    pub fn acked(&self, session: &str, group: &str) -> Result<HashMap<String, Hash>, NodeError> {
        let mut p = prefix(session);
        p.extend_from_slice(group.as_bytes());
        p.push(0);
        let mut out = HashMap::new();
        for kv in self.tree.scan_prefix(&p) {
            let (k, v) = kv?;
            let key = String::from_utf8_lossy(&k[p.len()..]).into_owned();
            let hash: Hash = v
                .as_ref()
                .try_into()
                .map_err(|_| NodeError::Corrupt(format!("sync checkpoint of {key}")))?;
            out.insert(key, hash);
        }
        Ok(out)
    }

    /// Whether the session's checkpoints were written by another [`SCHEMA`] (it must reset).
    pub fn needs_reset(&self, session: &str) -> Result<bool, NodeError> {
        Ok(match self.tree.get(schema_key(session))? {
            Some(v) => v.as_ref() != SCHEMA.as_bytes(),
            None => self.tree.scan_prefix(prefix(session)).next().is_some(),
        })
    }

    /// A new stream for `session`: its number (used in the acks of its lines).
    pub fn begin(&self, session: &str) -> u64 {
        let n = self
            .next_stream
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut p) = self.pending.lock() {
            p.insert(
                session.to_owned(),
                Pending {
                    stream: n,
                    lines: Vec::new(),
                },
            );
        }
        n
    }

    /// Records the next line of stream `stream`; returns its index.
    pub fn push(&self, session: &str, stream: u64, line: PendingLine) -> Option<usize> {
        let mut p = self.pending.lock().ok()?;
        let pending = p.get_mut(session).filter(|p| p.stream == stream)?;
        pending.lines.push(line);
        Some(pending.lines.len() - 1)
    }

    /// Applies acks (`POST /api/sync/ack`). All or nothing: one malformed ack refuses the batch.
    /// `SyncResetV1` clears the session's checkpoints and ends the batch (as in Immich).
    pub fn ack(&self, session: &str, acks: &[String]) -> Result<(), AckError> {
        enum Parsed<'a> {
            Reset,
            Line(&'a str, u64, usize, &'a str),
        }
        let mut parsed = Vec::with_capacity(acks.len());
        for a in acks {
            let mut parts = a.split('|');
            let (Some(t), Some(pos)) = (parts.next(), parts.next()) else {
                return Err(AckError::Invalid(a.clone()));
            };
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(AckError::Invalid(a.clone()));
            }
            if t == "SyncResetV1" {
                parsed.push(Parsed::Reset);
                continue;
            }
            let Some((stream, index)) = pos
                .split_once('-')
                .and_then(|(s, i)| Some((s.parse::<u64>().ok()?, i.parse::<usize>().ok()?)))
            else {
                return Err(AckError::Invalid(a.clone()));
            };
            parsed.push(Parsed::Line(t, stream, index, a));
        }
        for p in parsed {
            let (t, stream, index, raw) = match p {
                Parsed::Reset => {
                    self.clear(session, None)?;
                    self.tree.insert(schema_key(session), SCHEMA.as_bytes())?;
                    return Ok(());
                }
                Parsed::Line(t, stream, index, raw) => (t, stream, index, raw),
            };
            let lines: Vec<PendingLine> = {
                let p = self
                    .pending
                    .lock()
                    .map_err(|_| NodeError::Corrupt("sync pending lock poisoned".into()))?;
                match p.get(session).filter(|p| p.stream == stream) {
                    Some(p) => p
                        .lines
                        .iter()
                        .take(index.saturating_add(1))
                        .filter(|l| l.line_type == t)
                        .cloned()
                        .collect(),
                    // An older stream (or one from before a restart): its lines come again.
                    None => Vec::new(),
                }
            };
            let mut batch = sled::Batch::default();
            for l in &lines {
                let k = entity_key(session, l.group, &l.key);
                match l.hash {
                    Some(h) => batch.insert(k, &h[..]),
                    None => batch.remove(k),
                }
            }
            batch.insert(ack_key(session, t), raw.as_bytes());
            batch.insert(schema_key(session), SCHEMA.as_bytes());
            self.tree.apply_batch(batch)?;
        }
        Ok(())
    }

    /// Drops one checkpoint without telling the app (the entity is still on the device
    /// through another group).
    pub fn forget(&self, session: &str, group: &str, key: &str) -> Result<(), NodeError> {
        self.tree.remove(entity_key(session, group, key))?;
        Ok(())
    }

    /// The last ack of each entity type (`GET /api/sync/ack`).
    pub fn acks(&self, session: &str) -> Result<Vec<(String, String)>, NodeError> {
        let p = ack_key(session, "");
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(&p) {
            let (k, v) = kv?;
            out.push((
                String::from_utf8_lossy(&k[p.len()..]).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            ));
        }
        Ok(out)
    }

    /// Forgets what the session acknowledged: of the given checkpoint groups, or everything
    /// (`DELETE /api/sync/ack`, `reset: true`, `SyncResetV1`).
    pub fn clear(&self, session: &str, groups: Option<&[&str]>) -> Result<(), NodeError> {
        let mut batch = sled::Batch::default();
        match groups {
            None => {
                for k in self.tree.scan_prefix(prefix(session)).keys() {
                    batch.remove(k?);
                }
            }
            Some(groups) => {
                for g in groups {
                    let mut p = prefix(session);
                    p.extend_from_slice(g.as_bytes());
                    p.push(0);
                    for k in self.tree.scan_prefix(&p).keys() {
                        batch.remove(k?);
                    }
                }
            }
        }
        self.tree.apply_batch(batch)?;
        if let Ok(mut p) = self.pending.lock() {
            p.remove(session);
        }
        Ok(())
    }

    /// Removes the ack record of some entity types (they are sent again in full).
    pub fn forget_acks(&self, session: &str, line_types: &[&str]) -> Result<(), NodeError> {
        for t in line_types {
            self.tree.remove(ack_key(session, t))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(t: &'static str, key: &str, h: u8) -> PendingLine {
        PendingLine {
            line_type: t,
            group: "AssetsV2",
            key: key.into(),
            hash: (h != 0).then_some([h; 16]),
        }
    }

    #[test]
    fn the_last_ack_of_a_type_stands_for_the_lines_before_it() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let c = SyncCheckpoints::open(&db).unwrap();
        let s = c.begin("s1");
        assert_eq!(c.push("s1", s, line("AssetV2", "a", 1)), Some(0));
        assert_eq!(c.push("s1", s, line("AssetV2", "b", 2)), Some(1));
        assert_eq!(c.push("s1", s, line("AssetV2", "c", 3)), Some(2));
        c.ack("s1", &[format!("AssetV2|{s}-1|")]).unwrap();
        let acked = c.acked("s1", "AssetsV2").unwrap();
        assert_eq!(acked.len(), 2);
        assert_eq!(acked["b"], [2; 16]);
        assert!(!acked.contains_key("c"));
        // A delete removes the checkpoint; another session is untouched.
        let s2 = c.begin("s1");
        c.push("s1", s2, line("AssetDeleteV1", "a", 0));
        c.ack("s1", &[format!("AssetDeleteV1|{s2}-0|")]).unwrap();
        assert_eq!(c.acked("s1", "AssetsV2").unwrap().len(), 1);
        assert!(c.acked("s2", "AssetsV2").unwrap().is_empty());
        assert_eq!(c.acks("s1").unwrap().len(), 2);
        // Acks of an older stream are ignored; garbage is refused and changes nothing.
        c.ack("s1", &[format!("AssetV2|{s}-2|")]).unwrap();
        assert_eq!(c.acked("s1", "AssetsV2").unwrap().len(), 1);
        assert!(c.ack("s1", &["nonsense".into()]).is_err());
        assert!(c.ack("s1", &["AssetV2|x-y|".into()]).is_err());
        assert!(!c.needs_reset("s1").unwrap());
        c.ack("s1", &["SyncResetV1|reset|".into()]).unwrap();
        assert!(c.acked("s1", "AssetsV2").unwrap().is_empty());
    }
}
