//! The ML node's state directory (`serve --state-dir`): what it learnt from its sync node,
//! kept so a restart does not start from nothing.
//!
//! - `docs/<stem>.tsml`: every catalogue document as last saved, with the heads it was saved
//!   at and a checksum. A restart holds them all unloaded ([`Library::hold_unloaded`]): the
//!   first sync exchanges heads only and receives just what changed meanwhile, and documents
//!   are read from these files when used, not held in memory.
//! - `clustered.json`: per user, the person of every face when clustering last ran. The first
//!   clustering after a restart then tries only the faces that changed meanwhile instead of
//!   every unassigned face of the library (a quadratic pass).
//! - `packs/<blake3>.pack`: the face packs (every face's vector of a month) as fetched from
//!   the node or published, by their hash. Clustering after a restart reads them from here
//!   instead of fetching the library's face vectors again; a file that does not hash to its
//!   name is dropped and fetched again.
//! - `node.json`: which node (URL and API key's hash) the state came from. State from another
//!   node or key is discarded, never synced into this one.
//! - `lock`: one ML node per directory.
//!
//! Everything here is a copy of what the node holds: a lost or damaged file costs a re-sync or
//! a full clustering pass, never data. Files are replaced by rename; a file whose checksum does
//! not match is dropped (and the document fetched again).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tessera_core::library::DocLoader;
use tessera_core::DocId;

const MAGIC: &[u8; 8] = b"TSMLDOC1";
/// Magic, heads length (u32 LE), blake3 of the document bytes.
const HEADER: usize = 8 + 4 + 32;

/// Per user, face key → the (resolved) person it had when clustering last ran.
pub type Clustered = HashMap<String, HashMap<String, Option<String>>>;

#[derive(Serialize, Deserialize, PartialEq)]
struct Identity {
    node: String,
    key_blake3: String,
}

pub struct StateDir {
    dir: PathBuf,
    docs: PathBuf,
    packs: PathBuf,
    /// Held for the process's life: the advisory lock on `lock`.
    _lock: fs::File,
}

/// A document found in the state directory: its heads and saved size (the bytes stay on disk).
pub struct HeldDoc {
    pub id: DocId,
    pub heads: Vec<u8>,
    pub saved_bytes: usize,
}

impl StateDir {
    /// Opens (creating) the directory for the node at `node` reached with `key`. State left by
    /// another node or key is discarded.
    pub fn open(dir: &Path, node: &str, key: &str) -> Result<Self> {
        let docs = dir.join("docs");
        fs::create_dir_all(&docs).with_context(|| format!("creating {}", docs.display()))?;
        let packs = dir.join("packs");
        fs::create_dir_all(&packs).with_context(|| format!("creating {}", packs.display()))?;
        let lock_path = dir.join("lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        // SAFETY: flock takes the descriptor of a file this function owns; no pointers.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!(
                "{} is in use by another ML node (each needs its own --state-dir)",
                dir.display()
            );
        }
        let state = Self {
            dir: dir.to_owned(),
            docs,
            packs,
            _lock: lock,
        };
        let want = Identity {
            node: node.trim_end_matches('/').to_owned(),
            key_blake3: blake3::hash(key.as_bytes()).to_hex().to_string(),
        };
        let id_path = dir.join("node.json");
        let had: Option<Identity> = fs::read(&id_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if had.as_ref() != Some(&want) {
            if had.is_some() {
                tracing::warn!(
                    dir = %dir.display(),
                    "the state directory was kept for another node or API key: starting afresh"
                );
            }
            for d in [&state.docs, &state.packs] {
                for e in fs::read_dir(d)?.flatten() {
                    let _ = fs::remove_file(e.path());
                }
            }
            let _ = fs::remove_file(dir.join("clustered.json"));
            write_replacing(&id_path, &serde_json::to_vec_pretty(&want)?)?;
        }
        Ok(state)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn doc_path(&self, id: &DocId) -> PathBuf {
        doc_path(&self.docs, id)
    }

    /// Every document kept, checked against its checksum (a damaged file is removed: the
    /// document comes again from the node).
    pub fn held_docs(&self) -> Result<Vec<HeldDoc>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.docs)?.flatten() {
            let path = e.path();
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if path.extension().and_then(|x| x.to_str()) != Some("tsml") {
                // A temporary file left by a crash mid-write.
                let _ = fs::remove_file(&path);
                continue;
            }
            let Ok(id) = DocId::from_file_stem(stem) else {
                continue;
            };
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| split(&b).map(|(heads, doc)| (heads.to_vec(), doc.len())))
            {
                Ok((heads, saved_bytes)) => out.push(HeldDoc {
                    id,
                    heads,
                    saved_bytes,
                }),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "dropping a damaged state file: {e}");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        Ok(out)
    }

    /// Reads a kept document's saved bytes (for [`tessera_core::Library::set_loader`]).
    pub fn loader(&self) -> DocLoader {
        let docs = self.docs.clone();
        Box::new(move |id| {
            let path = doc_path(&docs, id);
            let bytes = fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            split(&bytes)
                .map(|(_, doc)| doc.to_vec())
                .map_err(|e| format!("{}: {e}", path.display()))
        })
    }

    /// Replaces a document's file with its full save and the heads it was saved at.
    pub fn write_doc(&self, id: &DocId, heads: &[u8], bytes: &[u8]) -> Result<()> {
        let mut out = Vec::with_capacity(HEADER + heads.len() + bytes.len());
        out.extend_from_slice(MAGIC);
        let n = u32::try_from(heads.len()).context("too many heads")?;
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(blake3::hash(bytes).as_bytes());
        out.extend_from_slice(heads);
        out.extend_from_slice(bytes);
        write_replacing(&self.doc_path(id), &out)
    }

    /// Where the pack with this hash is kept; `None` for anything but a blake3 hex digest
    /// (the hash comes from synced documents: never a path).
    fn pack_path(&self, hash: &str) -> Option<PathBuf> {
        (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then(|| {
            self.packs
                .join(format!("{}.pack", hash.to_ascii_lowercase()))
        })
    }

    /// The kept pack with this hash, checked; a damaged one is removed (`None`: fetch it).
    pub fn read_pack(&self, hash: &str) -> Option<Vec<u8>> {
        let path = self.pack_path(hash)?;
        let bytes = fs::read(&path).ok()?;
        if blake3::hash(&bytes).to_hex().as_str() != hash.to_ascii_lowercase() {
            tracing::warn!(path = %path.display(), "dropping a damaged pack file");
            let _ = fs::remove_file(&path);
            return None;
        }
        Some(bytes)
    }

    /// Keeps a pack under its hash (refused for bytes that do not hash to it).
    pub fn write_pack(&self, hash: &str, bytes: &[u8]) -> Result<()> {
        let Some(path) = self.pack_path(hash) else {
            bail!("{hash:?} is not a pack hash");
        };
        if blake3::hash(bytes).to_hex().as_str() != hash.to_ascii_lowercase() {
            bail!("the pack's bytes do not hash to {hash}");
        }
        write_replacing(&path, bytes)
    }

    /// Forgets a pack no document refers to any more (a month's newer pack replaced it).
    pub fn remove_pack(&self, hash: &str) {
        if let Some(path) = self.pack_path(hash) {
            let _ = fs::remove_file(path);
        }
    }

    /// Removes every kept pack whose hash is not in `live` (packs of months replaced while this
    /// node was stopped, or of a model no longer used). Returns how many were removed.
    pub fn prune_packs(&self, live: &HashSet<String>) -> usize {
        let Ok(entries) = fs::read_dir(&self.packs) else {
            return 0;
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(hash) = name.to_str().and_then(|n| n.strip_suffix(".pack")) else {
                continue;
            };
            if !live.contains(&hash.to_ascii_lowercase()) && fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// The clustering state kept, or an empty one (every face is tried once again).
    pub fn read_clustered(&self) -> Clustered {
        let path = self.dir.join("clustered.json");
        let Ok(mut f) = fs::File::open(&path) else {
            return Clustered::new();
        };
        let mut bytes = Vec::new();
        if let Err(e) = f.read_to_end(&mut bytes) {
            tracing::warn!(path = %path.display(), "{e}: every face is clustered again");
            return Clustered::new();
        }
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), "unreadable ({e}): every face is clustered again");
            Clustered::new()
        })
    }

    pub fn write_clustered(&self, c: &Clustered) -> Result<()> {
        write_replacing(&self.dir.join("clustered.json"), &serde_json::to_vec(c)?)
    }
}

fn doc_path(docs: &Path, id: &DocId) -> PathBuf {
    docs.join(format!("{}.tsml", id.file_stem()))
}

/// The heads and document bytes of a state file, checked.
fn split(b: &[u8]) -> Result<(&[u8], &[u8]), String> {
    if b.len() < HEADER || &b[..8] != MAGIC {
        return Err("not a state file (bad header)".into());
    }
    let mut n = [0u8; 4];
    n.copy_from_slice(&b[8..12]);
    let n = u32::from_le_bytes(n) as usize;
    let sum = &b[12..HEADER];
    let rest = &b[HEADER..];
    if n > rest.len() || !n.is_multiple_of(32) {
        return Err(format!("{n} bytes of heads do not fit"));
    }
    let (heads, doc) = rest.split_at(n);
    if blake3::hash(doc).as_bytes() != sum {
        return Err("checksum mismatch (a torn or damaged write)".into());
    }
    Ok((heads, doc))
}

/// Writes to a temporary file beside `path`, then renames it over `path`.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_round_trip_and_damage_or_another_node_discards_state() {
        let t = tempfile::tempdir().unwrap();
        let id = DocId::shard("u", "2024-03").unwrap();
        let s = StateDir::open(t.path(), "http://n:2283/", "k").unwrap();
        assert!(
            StateDir::open(t.path(), "http://n:2283", "k").is_err(),
            "one ML node per directory"
        );
        s.write_doc(&id, &[7; 64], b"automerge bytes").unwrap();
        let mut c = Clustered::new();
        c.entry("u".into())
            .or_default()
            .insert("face".into(), Some("p".into()));
        s.write_clustered(&c).unwrap();
        let held = s.held_docs().unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].id, id);
        assert_eq!(held[0].heads, vec![7; 64]);
        assert_eq!(held[0].saved_bytes, 15);
        assert_eq!(s.loader()(&id).unwrap(), b"automerge bytes");
        assert!(s.read_clustered() == c);
        drop(s);

        // Same node and key (URL spelt with or without its slash): kept.
        let s = StateDir::open(t.path(), "http://n:2283", "k").unwrap();
        assert_eq!(s.held_docs().unwrap().len(), 1);
        // A flipped byte: the file is dropped, not believed.
        let path = s.doc_path(&id);
        let mut b = fs::read(&path).unwrap();
        let last = b.len() - 1;
        b[last] ^= 1;
        fs::write(&path, &b).unwrap();
        assert!(s.loader()(&id).is_err());
        assert!(s.held_docs().unwrap().is_empty());
        assert!(!path.exists());
        s.write_doc(&id, &[], b"x").unwrap();
        drop(s);

        // Packs: kept under their hash, checked when read, never a path from a document.
        let s = StateDir::open(t.path(), "http://n:2283", "k").unwrap();
        let pack = b"face vectors".to_vec();
        let hash = blake3::hash(&pack).to_hex().to_string();
        assert!(s.read_pack(&hash).is_none());
        s.write_pack(&hash, &pack).unwrap();
        assert_eq!(s.read_pack(&hash).unwrap(), pack);
        assert!(s.write_pack(&hash, b"other bytes").is_err());
        assert!(s.write_pack("../../etc/passwd", &pack).is_err());
        assert!(s.read_pack("../docs/x").is_none());
        let path = s.pack_path(&hash).unwrap();
        fs::write(&path, b"face vectorz").unwrap();
        assert!(
            s.read_pack(&hash).is_none(),
            "a damaged pack is not believed"
        );
        assert!(!path.exists());
        s.write_pack(&hash, &pack).unwrap();
        s.remove_pack(&hash);
        assert!(s.read_pack(&hash).is_none());
        // Pruning keeps exactly the live packs.
        let other = b"another month".to_vec();
        let other_hash = blake3::hash(&other).to_hex().to_string();
        s.write_pack(&hash, &pack).unwrap();
        s.write_pack(&other_hash, &other).unwrap();
        let live: HashSet<String> = [hash.clone()].into_iter().collect();
        assert_eq!(s.prune_packs(&live), 1);
        assert_eq!(s.read_pack(&hash).unwrap(), pack);
        assert!(s.read_pack(&other_hash).is_none());
        assert_eq!(s.prune_packs(&live), 0);
        s.write_pack(&hash, &pack).unwrap();
        drop(s);

        // Another key: everything goes.
        let s = StateDir::open(t.path(), "http://n:2283", "other").unwrap();
        assert!(s.held_docs().unwrap().is_empty());
        assert!(s.read_clustered().is_empty());
        assert!(s.read_pack(&hash).is_none());
    }
}
