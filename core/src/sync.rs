//! Sans-IO catalogue sync: automerge's sync protocol, many documents multiplexed per round trip.
//!
//! One exchange is a [`SyncEnvelope`] in each direction. A peer keeps one [`PeerSync`] per
//! remote peer; `generate` produces the messages to send, `receive` applies what arrived. The
//! transport (HTTP today, iroh streams later) only moves the encoded envelopes. A round trip
//! with nothing to say in either direction means the two peers have converged.
//!
//! A peer that says which documents it holds ([`SyncEnvelope::with_holds`]) is sent the
//! others whole, as saved documents ([`MsgKind::Snapshot`]), instead of automerge's
//! exchange of heads, Bloom filters and then every change one by one: a new browser or node
//! gets a large library at the speed of reading files, and the sender does not even load
//! documents it has not loaded (a lazily held node sends its saved bytes).
//!
//! A peer that starts a session afresh (a reopened browser, a restarted node) about a
//! document it holds but has not loaded sends only its heads ([`MsgKind::Heads`]), which it
//! knows without loading ([`Library::known_heads`]). A receiver with the same heads marks the
//! document quiet, also without loading it; one with other heads answers with automerge's
//! usual exchange. So a reconnect over a large, lazily held library loads only what differs.

use std::collections::{BTreeSet, HashMap};

use automerge::sync::{self, SyncDoc};
use automerge::{AutoCommit, ChangeHash};
use serde::{Deserialize, Serialize};

use crate::{DocId, DocIdError, Library};

/// Wire format version of [`SyncEnvelope`].
pub const PROTOCOL_VERSION: u8 = 4;
/// Upper bound on heads in one [`MsgKind::Heads`] message (concurrent changes; a document
/// rarely has more than a handful).
pub const MAX_HEADS: usize = 4_096;
/// Upper bound on documents in one envelope (a malformed or hostile message is refused).
pub const MAX_DOCS_PER_ENVELOPE: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("malformed sync envelope: {0}")]
    Envelope(#[from] postcard::Error),
    #[error("unsupported sync protocol version {0} (this peer speaks {PROTOCOL_VERSION})")]
    Version(u8),
    #[error("too many documents in one sync envelope ({0})")]
    TooManyDocs(usize),
    #[error(transparent)]
    DocId(#[from] DocIdError),
    #[error("malformed sync message for {doc}: {reason}")]
    Message { doc: String, reason: String },
    #[error(transparent)]
    Library(#[from] crate::LibraryError),
    #[error("not allowed to write document {0}")]
    Forbidden(String),
    #[error("change to {doc} refused: {reason}")]
    Refused { doc: String, reason: String },
    #[error("applying sync message to {doc}: {source}")]
    Apply {
        doc: String,
        #[source]
        source: Box<automerge::AutomergeError>,
    },
}

/// What a remote peer may do with a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: a message about it is refused (and no empty document is created for it).
    None,
    /// Sync it (heads, wants) but never send changes to it.
    Read,
    /// Changes are accepted only when the checker given to [`PeerSync::receive_checked`]
    /// approves the document they produce (an album member adding their own photos and
    /// comments); anything else refuses the whole envelope.
    Contribute,
    Write,
}

impl From<bool> for Access {
    fn from(write: bool) -> Self {
        if write {
            Access::Write
        } else {
            Access::None
        }
    }
}

/// What a [`DocMessage`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MsgKind {
    /// An automerge sync message.
    Sync,
    /// The whole document as saved (a full save, possibly followed by incremental chunks),
    /// sent to a peer that said it does not hold it. It counts as changes for access.
    Snapshot,
    /// The sender's heads (32-byte change hashes, concatenated), sent instead of a first
    /// automerge message about a document it has not loaded: equal heads end the exchange.
    Heads,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocMessage {
    pub doc: String,
    /// What [`DocMessage::kind`] says.
    pub msg: Vec<u8>,
    pub kind: MsgKind,
}

impl DocMessage {
    /// Whether the message carries changes (not just heads and wants): what a status line
    /// counts as "in flight".
    pub fn has_changes(&self) -> bool {
        match self.kind {
            MsgKind::Snapshot => true,
            MsgKind::Heads => false,
            MsgKind::Sync => sync::Message::decode(&self.msg).is_ok_and(|m| !m.changes.is_empty()),
        }
    }

    /// Whether it is a whole saved document ([`MsgKind::Snapshot`]).
    pub fn is_snapshot(&self) -> bool {
        self.kind == MsgKind::Snapshot
    }
}

/// Heads as a [`MsgKind::Heads`] message.
pub(crate) fn encode_heads(heads: &[ChangeHash]) -> Vec<u8> {
    heads.iter().flat_map(|h| h.0).collect()
}

pub(crate) fn decode_heads(msg: &[u8]) -> Result<Vec<ChangeHash>, String> {
    if !msg.len().is_multiple_of(32) {
        return Err(format!(
            "{} bytes of heads is not a whole number of hashes",
            msg.len()
        ));
    }
    if msg.len() / 32 > MAX_HEADS {
        return Err(format!("{} heads (at most {MAX_HEADS})", msg.len() / 32));
    }
    msg.chunks_exact(32)
        .map(|c| ChangeHash::try_from(c).map_err(|e| e.to_string()))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncEnvelope {
    pub version: u8,
    /// The sending device's id (stable for a device; names its sync state on the other side).
    pub peer: String,
    pub docs: Vec<DocMessage>,
    /// Documents the receiver must drop: it held them, it may no longer (a member removed from
    /// an album, a partner share stopped). Only a node sends these, to a user's device.
    pub dropped: Vec<String>,
    /// Every document the sender holds, when it says so (a user's device): the receiver
    /// sends the others whole ([`MsgKind::Snapshot`]). `None`: not said, sync as usual.
    pub holds: Option<Vec<String>>,
}

impl SyncEnvelope {
    pub fn new(peer: impl Into<String>, docs: Vec<DocMessage>) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            peer: peer.into(),
            docs,
            dropped: Vec::new(),
            holds: None,
        }
    }

    /// The envelope saying which documents the sender holds (see [`SyncEnvelope::holds`]).
    pub fn with_holds<'a>(mut self, holds: impl IntoIterator<Item = &'a DocId>) -> Self {
        self.holds = Some(holds.into_iter().map(|d| d.to_string()).collect());
        self
    }

    /// The envelope with documents the receiver must drop (see [`SyncEnvelope::dropped`]).
    pub fn with_dropped(mut self, dropped: Vec<DocId>) -> Self {
        self.dropped = dropped.into_iter().map(|d| d.to_string()).collect();
        self
    }

    /// The valid ids in [`SyncEnvelope::dropped`].
    pub fn dropped_ids(&self) -> Vec<DocId> {
        self.dropped
            .iter()
            .filter_map(|d| DocId::parse(d).ok())
            .collect()
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, SyncError> {
        let env: Self = postcard::from_bytes(bytes)?;
        if env.version != PROTOCOL_VERSION {
            return Err(SyncError::Version(env.version));
        }
        let holds = env.holds.as_ref().map_or(0, Vec::len);
        let most = env.docs.len().max(env.dropped.len()).max(holds);
        if most > MAX_DOCS_PER_ENVELOPE {
            return Err(SyncError::TooManyDocs(most));
        }
        Ok(env)
    }
}

/// A received [`DocMessage`], decoded.
#[derive(Clone)]
enum Incoming {
    Message(sync::Message),
    Snapshot(Vec<u8>),
    Heads(Vec<ChangeHash>),
}

impl Incoming {
    /// Whether it may change the document (access checks treat a snapshot as changes).
    fn writes(&self) -> bool {
        match self {
            Incoming::Message(m) => !m.changes.is_empty(),
            Incoming::Snapshot(_) => true,
            Incoming::Heads(_) => false,
        }
    }

    /// Applies it; a snapshot's bytes come back, for [`Library::received_whole`].
    fn apply(
        self,
        id: &DocId,
        doc: &mut AutoCommit,
        state: &mut sync::State,
    ) -> Result<Option<Vec<u8>>, SyncError> {
        let apply_err = |source| SyncError::Apply {
            doc: id.to_string(),
            source: Box::new(source),
        };
        match self {
            Incoming::Message(m) => doc
                .sync()
                .receive_sync_message(state, m)
                .map(|()| None)
                .map_err(apply_err),
            // Handled before a document is loaded (`PeerSync::receive_checked`); on a loaded
            // document (a contribution check's copy) it changes nothing.
            Incoming::Heads(_) => Ok(None),
            Incoming::Snapshot(bytes) => {
                // A strict load: automerge checks the format and every change's hash, and a
                // torn or foreign byte string is an error (`load_incremental` would skip it).
                let whole = AutoCommit::load(&bytes).map_err(apply_err)?;
                if doc.is_empty() {
                    *doc = whole.with_actor(doc.get_actor().clone());
                    Ok(Some(bytes))
                } else {
                    let mut whole = whole;
                    doc.merge(&mut whole).map(|_| None).map_err(apply_err)
                }
            }
        }
    }
}

/// Sync state with one remote peer, for every document.
#[derive(Default)]
pub struct PeerSync {
    states: HashMap<DocId, sync::State>,
    /// Documents that had nothing to say at this library revision. Neither the document nor
    /// its sync state has changed since (a received message moves the revision too), so
    /// automerge would say nothing again: `generate` skips them without loading them. A
    /// session over a large, lazily held library then touches only what changed.
    quiet: HashMap<DocId, u64>,
    /// Shared documents the remote peer sent messages about but may no longer see.
    revoked: BTreeSet<DocId>,
    /// What the remote peer last said it holds ([`SyncEnvelope::holds`]): a document it
    /// lacks, and has not synced in this session, goes to it whole.
    peer_holds: Option<BTreeSet<DocId>>,
}

impl PeerSync {
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages for the remote peer about `docs` (those with nothing to say are left out).
    pub fn generate<'a>(
        &mut self,
        lib: &mut Library,
        docs: impl IntoIterator<Item = &'a DocId>,
    ) -> Vec<DocMessage> {
        self.generate_within(lib, docs, usize::MAX)
    }

    /// Like [`PeerSync::generate`], but stops once the messages hold `budget` bytes (at
    /// least one message is always produced). Documents left out keep their state and are
    /// covered by the next call, so a large catalogue goes out in bounded rounds, in the
    /// order of `docs` (see [`DocId::sync_rank`]).
    pub fn generate_within<'a>(
        &mut self,
        lib: &mut Library,
        docs: impl IntoIterator<Item = &'a DocId>,
        budget: usize,
    ) -> Vec<DocMessage> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for id in docs {
            if bytes >= budget {
                break;
            }
            let rev = lib.revision(id);
            if rev.is_some() && self.quiet.get(id) == rev.as_ref() {
                continue;
            }
            let lacks = self.peer_holds.as_ref().is_some_and(|h| !h.contains(id));
            if lacks && !self.states.contains_key(id) {
                if let (Some(rev), Some(saved)) = (rev, lib.snapshot(id)) {
                    // The peer now holds what this side holds at `rev`: nothing more to say
                    // until the document changes (then automerge's exchange starts afresh).
                    self.states.insert(id.clone(), sync::State::new());
                    self.quiet.insert(id.clone(), rev);
                    bytes = bytes.saturating_add(saved.len());
                    out.push(DocMessage {
                        doc: id.to_string(),
                        msg: saved,
                        kind: MsgKind::Snapshot,
                    });
                    continue;
                }
            }
            if !self.states.contains_key(id) && !lib.is_loaded(id) {
                if let (Some(rev), Some(heads)) = (rev, lib.known_heads(id)) {
                    // A fresh session about a document not loaded here: its heads settle it
                    // if the peer has the same. Quiet until the peer answers otherwise (its
                    // automerge message then starts the usual exchange from a fresh state).
                    self.states.insert(id.clone(), sync::State::new());
                    self.quiet.insert(id.clone(), rev);
                    let msg = encode_heads(&heads);
                    bytes = bytes.saturating_add(msg.len());
                    out.push(DocMessage {
                        doc: id.to_string(),
                        msg,
                        kind: MsgKind::Heads,
                    });
                    continue;
                }
            }
            let state = self.states.entry(id.clone()).or_default();
            let doc = lib.doc_for_sync(id);
            let msg = doc.sync().generate_sync_message(state);
            match msg {
                Some(msg) => {
                    self.quiet.remove(id);
                    let msg = msg.encode();
                    bytes = bytes.saturating_add(msg.len());
                    out.push(DocMessage {
                        doc: id.to_string(),
                        msg,
                        kind: MsgKind::Sync,
                    });
                }
                None => {
                    if let Some(rev) = lib.revision(id) {
                        self.quiet.insert(id.clone(), rev);
                    }
                }
            }
        }
        out
    }

    /// Applies messages from the remote peer. Every message is decoded and checked against
    /// `access` (a `bool` means write-or-nothing) before any is applied, so a bad envelope
    /// changes nothing: changes to a read-only document are refused like messages about a
    /// document the peer may not see. A message about a *shared* document the peer may not see
    /// (an album or another user's month, see [`DocId::is_shared_kind`]) is ignored instead:
    /// the peer lost access and is told to drop it ([`PeerSync::take_dropped`]). Returns the
    /// ids of documents whose content changed.
    pub fn receive<A: Into<Access>>(
        &mut self,
        lib: &mut Library,
        msgs: Vec<DocMessage>,
        access: impl Fn(&DocId) -> A,
    ) -> Result<Vec<DocId>, SyncError> {
        self.receive_checked(lib, msgs, access, |_, _, _| {
            Err("no contributions are accepted here".into())
        })
    }

    /// [`PeerSync::receive`] where [`Access::Contribute`] documents take changes that `check`
    /// approves: it sees the document before and after the message, and answers why not.
    pub fn receive_checked<A: Into<Access>>(
        &mut self,
        lib: &mut Library,
        msgs: Vec<DocMessage>,
        access: impl Fn(&DocId) -> A,
        check: impl Fn(&DocId, &AutoCommit, &AutoCommit) -> Result<(), String>,
    ) -> Result<Vec<DocId>, SyncError> {
        let mut decoded = Vec::with_capacity(msgs.len());
        let mut revoked = Vec::new();
        for m in msgs {
            let id = DocId::parse(&m.doc)?;
            let access = access(&id).into();
            let revocable = id.album_id().is_some() || id.month().is_some() || id.is_root();
            if access == Access::None && !revocable {
                // Someone else's people or ML documents, the household…: refused unread.
                return Err(SyncError::Forbidden(id.to_string()));
            }
            let bad = |reason: String| SyncError::Message {
                doc: id.to_string(),
                reason,
            };
            let incoming = match m.kind {
                MsgKind::Snapshot => Incoming::Snapshot(m.msg),
                MsgKind::Heads => Incoming::Heads(decode_heads(&m.msg).map_err(bad)?),
                MsgKind::Sync => Incoming::Message(
                    sync::Message::decode(&m.msg).map_err(|e| bad(e.to_string()))?,
                ),
            };
            let writes = incoming.writes();
            if access == Access::None {
                let held = lib.contains(&id);
                if held && (id.album_id().is_some() || (id.month().is_some() && !writes)) {
                    // An album the peer was removed from (its pending changes go with it), a
                    // partner's month no longer shared: ignored, and the peer drops it. (A
                    // document this side does not hold was never shared: refused below.)
                    revoked.push(id);
                    continue;
                }
                if id.is_root() && !id.user().is_empty() {
                    // A device derives the summaries of another user's months it was given
                    // (a partner's) in a root document of its own making: ignored here.
                    continue;
                }
                // Writing someone else's months, people, household…: refused outright.
                return Err(SyncError::Forbidden(id.to_string()));
            }
            if access == Access::Read && writes {
                return Err(SyncError::Forbidden(id.to_string()));
            }
            if access == Access::Contribute && writes {
                // Try the message on a copy; the real document is touched only if every
                // message of the envelope passes.
                let mut state = self.states.get(&id).cloned().unwrap_or_default();
                let before = lib.doc_for_sync(&id);
                let mut after = before.fork();
                incoming.clone().apply(&id, &mut after, &mut state)?;
                if let Err(why) = check(&id, before, &after) {
                    return Err(SyncError::Refused {
                        doc: id.to_string(),
                        reason: why,
                    });
                }
            }
            decoded.push((id, incoming));
        }
        for id in revoked {
            self.states.remove(&id);
            self.quiet.remove(&id);
            self.revoked.insert(id);
        }
        let mut changed = Vec::new();
        for (id, incoming) in decoded {
            if let Incoming::Heads(theirs) = &incoming {
                // The peer starts afresh about this document: so does this side. Equal heads
                // (known without loading when possible) leave nothing to say on either side;
                // other heads, and automerge's exchange starts with this side's next message.
                self.states.insert(id.clone(), sync::State::new());
                let ours = match lib.known_heads(&id) {
                    Some(h) => Some(h),
                    None if lib.contains(&id) => Some(lib.doc_for_sync(&id).get_heads()),
                    None => None,
                };
                match (ours, lib.revision(&id)) {
                    (Some(mut ours), Some(rev)) => {
                        let mut theirs = theirs.clone();
                        ours.sort();
                        theirs.sort();
                        if ours == theirs {
                            self.quiet.insert(id, rev);
                        } else {
                            self.quiet.remove(&id);
                        }
                    }
                    _ if theirs.is_empty() => {}
                    _ => {
                        // Not held here: held empty from now on, so that this side asks for it.
                        self.quiet.remove(&id);
                        lib.doc_for_sync(&id);
                    }
                }
                continue;
            }
            // The sync state moves: the next `generate` must ask automerge again.
            self.quiet.remove(&id);
            let fresh = !self.states.contains_key(&id);
            let state = self.states.entry(id.clone()).or_default();
            let doc = lib.doc_for_sync(&id);
            let before = doc.get_heads();
            let whole = incoming.apply(&id, doc, state)?;
            if doc.get_heads() != before {
                lib.changed(&id);
                changed.push(id.clone());
            }
            // `whole` comes back only when the document was empty here: it is now exactly
            // what the sender saved.
            if let Some(bytes) = whole {
                // Stored as is, not encoded again.
                lib.received_whole(&id, bytes);
                if fresh {
                    // The sender marked the document quiet too: neither says anything until
                    // it changes. (A document that had content of its own here keeps the
                    // usual exchange, to send it.)
                    if let Some(rev) = lib.revision(&id) {
                        self.quiet.insert(id, rev);
                    }
                }
            }
        }
        // Summaries are derived: recompute them for shards that sync changed.
        lib.refresh_summaries(&changed)?;
        Ok(changed)
    }

    /// Shared documents the remote peer must drop: those it asked about without access, and
    /// those synced with it before that `covered` no longer includes. Their sync state is
    /// forgotten, so access given back later syncs them afresh.
    pub fn take_dropped(&mut self, covered: impl Fn(&DocId) -> bool) -> Vec<DocId> {
        let gone: Vec<DocId> = self
            .states
            .keys()
            .filter(|d| d.is_shared_kind() && !covered(d))
            .cloned()
            .collect();
        for d in &gone {
            self.states.remove(d);
            self.quiet.remove(d);
        }
        let mut out = std::mem::take(&mut self.revoked);
        out.extend(gone);
        out.retain(|d| !covered(d));
        out.into_iter().collect()
    }

    /// Whether this session has synced (or been asked about) a document.
    pub fn knows(&self, doc: &DocId) -> bool {
        self.states.contains_key(doc)
    }

    /// Records what the remote peer says it holds ([`SyncEnvelope::holds`]; `None` keeps what
    /// it said before). Unparseable ids are ignored: the documents simply count as lacking.
    pub fn note_holds(&mut self, holds: Option<&[String]>) {
        if let Some(h) = holds {
            self.peer_holds = Some(h.iter().filter_map(|d| DocId::parse(d).ok()).collect());
        }
    }

    /// Forget the sync state (after a reconnect to a peer that may have lost its state).
    pub fn reset(&mut self) {
        self.states.clear();
        self.quiet.clear();
        self.peer_holds = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AssetRecord;

    fn rec(id: &str, month: u32) -> AssetRecord {
        AssetRecord {
            id: id.into(),
            taken_at: Some(format!("2024-{month:02}-01T00:00:00")),
            ..Default::default()
        }
    }

    /// Runs request/response rounds (client → server → client) until neither side has anything
    /// to say; returns the number of rounds. The client says what it holds, as a device does,
    /// so documents it lacks come whole.
    pub(crate) fn converge(
        client: &mut Library,
        cs: &mut PeerSync,
        server: &mut Library,
        ss: &mut PeerSync,
        user: &str,
    ) -> usize {
        for round in 1..50 {
            let ids: Vec<DocId> = client.ids().cloned().collect();
            let up = SyncEnvelope::new("c", cs.generate(client, &ids))
                .with_holds(&ids)
                .encode();
            let up = SyncEnvelope::decode(&up).unwrap();
            let quiet_up = up.docs.is_empty();
            ss.note_holds(up.holds.as_deref());
            ss.receive(server, up.docs, |d| d.user() == user).unwrap();
            let ids: Vec<DocId> = server.ids().filter(|d| d.user() == user).cloned().collect();
            let down = SyncEnvelope::new("s", ss.generate(server, &ids));
            let quiet_down = down.docs.is_empty();
            cs.receive(client, down.docs, |_| true).unwrap();
            if quiet_up && quiet_down {
                return round;
            }
        }
        panic!("did not converge");
    }

    /// A lazily held library of user `u` with 20 photos in each month of 2024, every
    /// document saved to its in-memory disk.
    fn saved_year() -> (Library, crate::library::tests::Disk) {
        let (mut server, disk) = crate::library::tests::lazy_library();
        let recs: Vec<AssetRecord> = (1..=12)
            .flat_map(|m| (0..20).map(move |i| rec(&format!("{m}-{i}"), m)))
            .collect();
        server.upsert_assets("u", &recs).unwrap();
        for id in server.take_dirty() {
            let bytes = server.save(&id).unwrap();
            disk.lock().unwrap().insert(id, bytes);
        }
        (server, disk)
    }

    #[test]
    fn bounded_rounds_go_newest_first_and_quiet_documents_are_not_loaded() {
        let (mut server, _disk) = saved_year();
        let mut client = Library::new(&[2; 16]);
        let (mut cs, mut ss) = (PeerSync::new(), PeerSync::new());
        let mut months_in_order = Vec::new();
        let mut rounds = 0;
        loop {
            rounds += 1;
            assert!(rounds < 100, "did not converge");
            let ids: Vec<DocId> = client.ids().cloned().collect();
            let up = cs.generate(&mut client, &ids);
            let quiet_up = up.is_empty();
            ss.receive(&mut server, up, |_| true).unwrap();
            let mut ids: Vec<DocId> = server.ids().cloned().collect();
            ids.sort_by_key(DocId::sync_rank);
            // A small budget: a few months per round.
            let down = ss.generate_within(&mut server, &ids, 2_000);
            let quiet_down = down.is_empty();
            for m in &down {
                let id = DocId::parse(&m.doc).unwrap();
                if m.has_changes() && id.month().is_some() {
                    months_in_order.push(id.month().unwrap().to_owned());
                }
            }
            cs.receive(&mut client, down, |_| true).unwrap();
            if quiet_up && quiet_down {
                break;
            }
        }
        assert!(
            rounds > 4,
            "the budget split the catalogue: {rounds} rounds"
        );
        let mut newest_first = months_in_order.clone();
        newest_first.sort_by(|a, b| b.cmp(a));
        assert_eq!(months_in_order, newest_first);
        assert_eq!(months_in_order.len(), 12);
        let total: u64 = client.shards("u").unwrap().iter().map(|s| s.count).sum();
        assert_eq!(total, 240);

        // Converged: every clean document unloaded, another round loads none of them.
        server.evict(0, &|_| true);
        server.evict(0, &|_| true);
        let ids: Vec<DocId> = server.ids().cloned().collect();
        let loaded = |lib: &Library| ids.iter().filter(|d| lib.is_loaded(d)).count();
        let before = loaded(&server);
        assert!(before <= 1, "{before} documents stayed loaded");
        assert!(ss.generate(&mut server, &ids).is_empty());
        assert_eq!(loaded(&server), before, "a quiet round loaded documents");
        // A change is noticed and sent, and only its documents are read.
        let mut r = rec("new", 3);
        r.favorite = Some(true);
        server.upsert_assets("u", &[r]).unwrap();
        let down = ss.generate(&mut server, &ids);
        let docs: Vec<&str> = down.iter().map(|m| m.doc.as_str()).collect();
        assert!(docs.contains(&"u/u/m/2024-03"), "{docs:?}");
        assert!(docs.len() <= 2, "{docs:?}");
        cs.receive(&mut client, down, |_| true).unwrap();
        converge(&mut client, &mut cs, &mut server, &mut ss, "u");
        let total: u64 = client.shards("u").unwrap().iter().map(|s| s.count).sum();
        assert_eq!(total, 241);
    }

    /// A peer that kept its documents and their heads on disk (the ML node's state directory)
    /// starts again holding every document unloaded: its fresh session sends heads only, the
    /// server answers nothing about what is equal, and a change made meanwhile loads only its
    /// own documents on either side.
    #[test]
    fn a_peer_restarted_from_its_saved_heads_loads_only_what_changed() {
        let (mut server, _disk) = saved_year();
        let (mut client, _) = crate::library::tests::lazy_library_as(3);
        let (mut cs, mut ss) = (PeerSync::new(), PeerSync::new());
        converge(&mut client, &mut cs, &mut server, &mut ss, "u");
        server.take_dirty();
        // What the peer writes before it stops: each document's full save and its heads.
        let mut files = Vec::new();
        for id in client.ids().cloned().collect::<Vec<_>>() {
            let bytes = client.save(&id).unwrap();
            let heads = client.known_heads_bytes(&id).unwrap();
            files.push((id, heads, bytes));
        }
        let (mut restarted, rdisk) = crate::library::tests::lazy_library_as(4);
        let mut blank = Library::new(&[5; 16]);
        assert!(
            blank
                .hold_unloaded(files[0].0.clone(), &files[0].1, 1)
                .is_err(),
            "without a loader nothing could read it"
        );
        assert!(restarted
            .hold_unloaded(files[0].0.clone(), &[1; 33], 1)
            .is_err());
        for (id, heads, bytes) in &files {
            rdisk.lock().unwrap().insert(id.clone(), bytes.clone());
            assert!(restarted
                .hold_unloaded(id.clone(), heads, bytes.len())
                .unwrap());
        }
        assert!(!restarted
            .hold_unloaded(files[0].0.clone(), &files[0].1, 1)
            .unwrap());
        let ids: Vec<DocId> = files.iter().map(|f| f.0.clone()).collect();
        let loaded = |lib: &Library| ids.iter().filter(|d| lib.is_loaded(d)).count();
        server.evict(0, &|_| true);
        server.evict(0, &|_| true);
        let (mut rs, mut ss) = (PeerSync::new(), PeerSync::new());
        let up = rs.generate(&mut restarted, &ids);
        assert_eq!(up.len(), ids.len());
        assert!(up.iter().all(|m| m.kind == MsgKind::Heads));
        assert_eq!(loaded(&restarted), 0, "heads come from the files");
        ss.receive(&mut server, up, |_| true).unwrap();
        assert!(ss.generate(&mut server, &ids).is_empty(), "all equal");
        assert!(loaded(&server) <= 1);
        // A photo reaches the server in March while the peer is stopped… and the peer's own
        // edit in May, made before it synced again, goes up.
        server.upsert_assets("u", &[rec("new", 3)]).unwrap();
        restarted.upsert_assets("u", &[rec("mine", 5)]).unwrap();
        converge(&mut restarted, &mut rs, &mut server, &mut ss, "u");
        assert!(loaded(&restarted) <= 4, "{} loaded", loaded(&restarted));
        for id in &ids {
            assert_eq!(restarted.heads(id), server.heads(id), "{id}");
        }
        let total: u64 = server.shards("u").unwrap().iter().map(|s| s.count).sum();
        assert_eq!(total, 242);
    }

    /// A device that says what it holds gets the documents it lacks whole, read from the
    /// server's files without loading them; afterwards neither side says anything about them
    /// until they change, and changes on either side (even one made in a document the device
    /// did not declare) still go both ways.
    /// A reopened device and a restarted node, both holding the same library unloaded, start
    /// a fresh session: they exchange heads only, load nothing that is equal, and load and sync
    /// just what changed meanwhile.
    #[test]
    fn a_fresh_session_exchanges_heads_and_loads_only_what_differs() {
        let (mut server, _disk) = saved_year();
        let (mut client, cdisk) = crate::library::tests::lazy_library_as(3);
        let (mut cs, mut ss) = (PeerSync::new(), PeerSync::new());
        converge(&mut client, &mut cs, &mut server, &mut ss, "u");
        for id in client.take_dirty() {
            let bytes = client.save(&id).unwrap();
            cdisk.lock().unwrap().insert(id, bytes);
        }
        server.take_dirty();
        let mut sids: Vec<DocId> = server.ids().cloned().collect();
        sids.sort_by_key(DocId::sync_rank);
        for lib in [&mut client, &mut server] {
            lib.evict(0, &|_| true);
            lib.evict(0, &|_| true);
        }
        let loaded = |lib: &Library| sids.iter().filter(|d| lib.is_loaded(d)).count();
        // (Eviction keeps the document used last.)
        let was_loaded = |lib: &Library| -> BTreeSet<DocId> {
            sids.iter().filter(|d| lib.is_loaded(d)).cloned().collect()
        };
        let (c_loaded, s_loaded) = (was_loaded(&client), was_loaded(&server));
        assert!(c_loaded.len() <= 1 && s_loaded.len() <= 1);
        // Meanwhile a photo reached the server in March (its root's summaries change too).
        server.upsert_assets("u", &[rec("new", 3)]).unwrap();
        server.take_dirty();
        let march = DocId::shard("u", "2024-03").unwrap();
        let root = DocId::root("u").unwrap();
        // A fresh session on both sides.
        let (mut cs, mut ss) = (PeerSync::new(), PeerSync::new());
        let up = cs.generate(&mut client, &sids);
        assert_eq!(up.len(), sids.len());
        for m in &up {
            let id = DocId::parse(&m.doc).unwrap();
            let want = if c_loaded.contains(&id) {
                MsgKind::Sync
            } else {
                MsgKind::Heads
            };
            assert_eq!(m.kind, want, "{id}");
            assert!(!m.has_changes());
        }
        assert_eq!(
            loaded(&client),
            c_loaded.len(),
            "heads are known without loading"
        );
        let up = SyncEnvelope::decode(&SyncEnvelope::new("c", up).encode()).unwrap();
        assert!(ss
            .receive(&mut server, up.docs, |_| true)
            .unwrap()
            .is_empty());
        let down = ss.generate(&mut server, &sids);
        // The server answers about what differs (and about the one document the client sent
        // automerge's first message for).
        let about: BTreeSet<DocId> = down.iter().map(|m| DocId::parse(&m.doc).unwrap()).collect();
        let differs = BTreeSet::from([root.clone(), march.clone()]);
        assert!(about.is_superset(&differs), "{about:?}");
        assert!(
            about.difference(&differs).all(|d| c_loaded.contains(d)),
            "{about:?}"
        );
        assert!(down.iter().all(|m| m.kind == MsgKind::Sync));
        let most = differs.len() + c_loaded.len() + s_loaded.len();
        assert!(loaded(&server) <= most, "{} loaded", loaded(&server));
        cs.receive(&mut client, down, |_| true).unwrap();
        for round in 0.. {
            assert!(round < 10, "did not converge");
            let up = cs.generate(&mut client, &sids);
            let quiet_up = up.is_empty();
            ss.receive(&mut server, up, |_| true).unwrap();
            let down = ss.generate(&mut server, &sids);
            let quiet_down = down.is_empty();
            cs.receive(&mut client, down, |_| true).unwrap();
            if quiet_up && quiet_down {
                break;
            }
        }
        assert!(loaded(&client) <= most, "{} loaded", loaded(&client));
        assert!(loaded(&server) <= most, "{} loaded", loaded(&server));
        assert!(most * 3 <= sids.len(), "{most} of {}", sids.len());
        for id in &sids {
            assert_eq!(client.heads(id), server.heads(id), "{id}");
        }
        let total: u64 = client.shards("u").unwrap().iter().map(|s| s.count).sum();
        assert_eq!(total, 241);
        // Changes go both ways afterwards, through automerge's usual exchange.
        client.upsert_assets("u", &[rec("from-device", 5)]).unwrap();
        server.upsert_assets("u", &[rec("from-server", 7)]).unwrap();
        converge(&mut client, &mut cs, &mut server, &mut ss, "u");
        for id in &sids {
            assert_eq!(client.heads(id), server.heads(id), "{id}");
        }
        // A peer holding other heads than it says (or nothing) gets the usual exchange.
        let mut blank = Library::new(&[4; 16]);
        let mut bs = PeerSync::new();
        let mut ss2 = PeerSync::new();
        let heads = server.known_heads(&march).unwrap();
        let msg = DocMessage {
            doc: march.to_string(),
            msg: encode_heads(&heads),
            kind: MsgKind::Heads,
        };
        // The blank peer is told about March by heads: it holds it empty and asks for it.
        assert!(bs
            .receive(&mut blank, vec![msg], |_| true)
            .unwrap()
            .is_empty());
        assert!(blank.contains(&march));
        converge(&mut blank, &mut bs, &mut server, &mut ss2, "u");
        assert_eq!(blank.heads(&march), server.heads(&march));
    }

    #[test]
    fn a_device_that_says_what_it_holds_gets_the_rest_whole_without_loading() {
        let (mut server, disk) = saved_year();
        server.evict(0, &|_| true);
        server.evict(0, &|_| true);
        let mut sids: Vec<DocId> = server.ids().cloned().collect();
        sids.sort_by_key(DocId::sync_rank);
        let loaded = |lib: &Library| sids.iter().filter(|d| lib.is_loaded(d)).count();
        let before = loaded(&server);
        assert!(before <= 1, "{before} documents stayed loaded");
        // The device made a photo in January before its first sync, and did not say so.
        let mut client = Library::new(&[2; 16]);
        client.keep_received(true);
        client.upsert_assets("u", &[rec("local", 1)]).unwrap();
        let (mut cs, mut ss) = (PeerSync::new(), PeerSync::new());
        let mut snapshots = 0;
        for round in 1.. {
            assert!(round < 100, "did not converge");
            let ids: Vec<DocId> = client.ids().cloned().collect();
            let holds: Vec<DocId> = if round == 1 { Vec::new() } else { ids.clone() };
            let up = SyncEnvelope::new("c", cs.generate(&mut client, &ids)).with_holds(&holds);
            let up = SyncEnvelope::decode(&up.encode()).unwrap();
            let quiet_up = up.docs.is_empty();
            ss.note_holds(up.holds.as_deref());
            ss.receive(&mut server, up.docs, |_| true).unwrap();
            let down = ss.generate_within(&mut server, &sids, 2_000);
            let quiet_down = down.is_empty();
            snapshots += down.iter().filter(|m| m.is_snapshot()).count();
            if round == 1 {
                // The two documents the device sent messages about (its root and January)
                // take automerge's exchange; the rest come whole, summaries first.
                let whole: Vec<&str> = down
                    .iter()
                    .filter(|m| m.is_snapshot())
                    .map(|m| m.doc.as_str())
                    .collect();
                assert_eq!(whole.len(), down.len() - 1, "{whole:?}");
                assert_eq!(whole[0], "u/u/m/2024-12", "newest month first");
            }
            cs.receive(&mut client, down, |_| true).unwrap();
            if quiet_up && quiet_down {
                break;
            }
        }
        // Every document but the two the device had went whole; the only ones the server
        // loaded are those two, to take the device's own photo.
        assert_eq!(snapshots, sids.len() - 2);
        assert!(loaded(&server) <= before + 2, "{} loaded", loaded(&server));
        for lib in [&client, &server] {
            let total: u64 = lib.shards("u").unwrap().iter().map(|s| s.count).sum();
            assert_eq!(total, 241);
        }
        // The device stores what it received as it came (no encoding again), and writes
        // only what changes after it.
        let dec = DocId::shard("u", "2024-12").unwrap();
        assert!(client.take_dirty().contains(&dec));
        let stored = client.save(&dec).unwrap();
        assert_eq!(&stored, disk.lock().unwrap().get(&dec).unwrap());
        assert_eq!(heads_of(&dec, &stored), client.heads(&dec));
        // Quiet both ways now, without loading anything.
        server.take_dirty();
        let ids: Vec<DocId> = client.ids().cloned().collect();
        assert!(cs.generate(&mut client, &ids).is_empty());
        assert!(ss.generate(&mut server, &sids).is_empty());
        // A change on either side goes across.
        client.upsert_assets("u", &[rec("from-device", 5)]).unwrap();
        server.upsert_assets("u", &[rec("from-server", 7)]).unwrap();
        converge(&mut client, &mut cs, &mut server, &mut ss, "u");
        for lib in [&mut client, &mut server] {
            let total: u64 = lib.shards("u").unwrap().iter().map(|s| s.count).sum();
            assert_eq!(total, 243);
        }
        for id in &sids {
            assert_eq!(client.heads(id), server.heads(id), "{id}");
        }
        // A change after that is saved as itself, after the received bytes.
        client.upsert_assets("u", &[rec("later", 12)]).unwrap();
        let more = client.save_incremental(&dec).unwrap();
        assert!(
            !more.is_empty() && more.len() < stored.len() / 2,
            "{}",
            more.len()
        );
        let mut both = stored.clone();
        both.extend_from_slice(&more);
        assert_eq!(heads_of(&dec, &both), client.heads(&dec));
    }

    /// The heads of `bytes` loaded as `id` in a library of their own.
    fn heads_of(id: &DocId, bytes: &[u8]) -> Vec<String> {
        let mut lib = Library::new(&[5; 16]);
        lib.load(id.clone(), bytes).unwrap();
        lib.heads(id)
    }

    #[test]
    fn two_peers_converge_over_envelopes() {
        let mut a = Library::new(&[1; 16]);
        let mut b = Library::new(&[2; 16]);
        a.upsert_assets("u", &[rec("x", 1), rec("y", 2)]).unwrap();
        b.upsert_assets("u", &[rec("z", 2)]).unwrap();
        let (mut sa, mut sb) = (PeerSync::new(), PeerSync::new());
        converge(&mut a, &mut sa, &mut b, &mut sb, "u");
        for lib in [&a, &b] {
            let shards = lib.shards("u").unwrap();
            let total: u64 = shards.iter().map(|s| s.count).sum();
            assert_eq!(total, 3, "{shards:?}");
        }
        let ids: Vec<DocId> = a.ids().cloned().collect();
        for id in ids {
            assert_eq!(a.heads(&id), b.heads(&id), "{id}");
        }
    }

    #[test]
    fn a_reader_syncs_but_its_changes_are_refused() {
        let mut server = Library::new(&[1; 16]);
        server.upsert_assets("u", &[rec("x", 1)]).unwrap();
        let mut reader = Library::new(&[2; 16]);
        let (mut ss, mut rs) = (PeerSync::new(), PeerSync::new());
        let read_only = |_: &DocId| Access::Read;
        // The reader pulls everything with heads-only messages of its own.
        for _ in 0..10 {
            let ids: Vec<DocId> = reader.ids().cloned().collect();
            let up = rs.generate(&mut reader, &ids);
            ss.receive(&mut server, up, read_only).unwrap();
            let ids: Vec<DocId> = server.ids().cloned().collect();
            let down = ss.generate(&mut server, &ids);
            rs.receive(&mut reader, down, |_| true).unwrap();
        }
        let shard = DocId::shard("u", "2024-01").unwrap();
        assert_eq!(reader.heads(&shard), server.heads(&shard));
        // A change made by the reader is refused, and nothing is applied.
        reader.upsert_assets("u", &[rec("y", 1)]).unwrap();
        let heads = server.heads(&shard);
        let up = rs.generate(&mut reader, [&shard]);
        assert!(matches!(
            ss.receive(&mut server, up, read_only),
            Err(SyncError::Forbidden(_))
        ));
        assert_eq!(server.heads(&shard), heads);
    }

    #[test]
    fn bad_input_is_refused_and_changes_nothing() {
        let mut lib = Library::new(&[1; 16]);
        lib.upsert_assets("u", &[rec("x", 1)]).unwrap();
        let id = DocId::shard("u", "2024-01").unwrap();
        let heads = lib.heads(&id);
        let mut s = PeerSync::new();
        assert!(SyncEnvelope::decode(b"\xff\xff garbage").is_err());
        let forged = vec![DocMessage {
            doc: "u/other/people".into(),
            msg: vec![0x42],
            kind: MsgKind::Sync,
        }];
        assert!(matches!(
            s.receive(&mut lib, forged, |d| d.user() == "u"),
            Err(SyncError::Forbidden(_))
        ));
        let good_then_bad = vec![
            DocMessage {
                doc: id.to_string(),
                msg: vec![0x42, 1, 2, 3],
                kind: MsgKind::Sync,
            },
            DocMessage {
                doc: "../../etc".into(),
                msg: vec![],
                kind: MsgKind::Sync,
            },
        ];
        assert!(s.receive(&mut lib, good_then_bad, |_| true).is_err());
        let garbage = vec![DocMessage {
            doc: id.to_string(),
            msg: vec![0x42, 1, 2, 3],
            kind: MsgKind::Sync,
        }];
        assert!(matches!(
            s.receive(&mut lib, garbage, |_| true),
            Err(SyncError::Message { .. })
        ));
        // A "saved document" that is not one, and a whole document sent to a read-only one.
        let junk = |msg: Vec<u8>| {
            vec![DocMessage {
                doc: id.to_string(),
                msg,
                kind: MsgKind::Snapshot,
            }]
        };
        assert!(matches!(
            s.receive(
                &mut lib,
                junk(b"\x85\x6f\x4a\x83 not a document".to_vec()),
                |_| true
            ),
            Err(SyncError::Apply { .. })
        ));
        let mut other = Library::new(&[3; 16]);
        other.upsert_assets("u", &[rec("y", 1)]).unwrap();
        let whole = other.snapshot(&id).unwrap();
        assert!(matches!(
            s.receive(&mut lib, junk(whole), |_| Access::Read),
            Err(SyncError::Forbidden(_))
        ));
        // Heads that are not whole hashes, or too many of them.
        for msg in [vec![7u8; 33], vec![7u8; 32 * (MAX_HEADS + 1)]] {
            let bad = vec![DocMessage {
                doc: id.to_string(),
                msg,
                kind: MsgKind::Heads,
            }];
            assert!(matches!(
                s.receive(&mut lib, bad, |_| true),
                Err(SyncError::Message { .. })
            ));
        }
        assert_eq!(lib.heads(&id), heads);
    }
}

#[cfg(test)]
mod proptests {
    use super::tests::converge;
    use super::*;
    use crate::AssetRecord;
    use proptest::prelude::*;
    use serde_json::{json, Map, Value};

    /// Cases per property: `default` in `cargo xtask test`, `TESSERA_SOAK_CASES` (≥ 1,000 in
    /// `cargo xtask soak`) when set.
    fn cases(default: u32) -> u32 {
        std::env::var("TESSERA_SOAK_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases(256)))]
        /// Random edits on two peers with random sync points always converge to the same heads
        /// and the same visible catalogue.
        #[test]
        fn random_edits_converge(ops in proptest::collection::vec((0u8..2, 0u8..6, 1u32..4, any::<bool>()), 1..30)) {
            let mut libs = [Library::new(&[1; 16]), Library::new(&[2; 16])];
            let mut states = [PeerSync::new(), PeerSync::new()];
            for (peer, asset, month, sync_now) in ops {
                let r = AssetRecord { id: format!("a{asset}"), taken_at: Some(format!("2024-{month:02}-01T00:00:00")), size: Some(u64::from(month)), ..Default::default() };
                libs[peer as usize].upsert_assets("u", &[r]).unwrap();
                if sync_now {
                    let [a, b] = &mut libs;
                    let [sa, sb] = &mut states;
                    converge(a, sa, b, sb, "u");
                }
            }
            let [a, b] = &mut libs;
            let [sa, sb] = &mut states;
            converge(a, sa, b, sb, "u");
            let ids: Vec<DocId> = a.ids().cloned().collect();
            for id in &ids {
                prop_assert_eq!(a.heads(id), b.heads(id));
                prop_assert_eq!(a.assets(id).unwrap(), b.assets(id).unwrap());
            }
        }
    }
    /// One direction of a link between two of three peers: messages queued, not yet delivered.
    type Queue = Vec<Vec<DocMessage>>;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases(256)))]
        /// Three peers (say two browsers and a node) make random edits (new assets, favorites)
        /// while links go down and come back at random. A link that goes down loses what was in
        /// flight and both ends forget their sync state (as after a real disconnect). Once every
        /// link is healed, all three always end with identical heads and identical catalogues.
        /// Peers hold their documents lazily, save after every step and unload everything when
        /// a link flips, so fresh sessions start with heads about unloaded documents.
        #[test]
        fn three_peers_under_random_partitions_converge(
            steps in proptest::collection::vec((0u8..3, 0u8..8, 1u32..4, 0u8..4, 0u8..3, any::<bool>()), 1..60)
        ) {
            let lazy = crate::library::tests::lazy_library_as;
            let [(l1, d1), (l2, d2), (l3, d3)] = [lazy(1), lazy(2), lazy(3)];
            let mut libs = [l1, l2, l3];
            let disks = [d1, d2, d3];
            // states[i][j]: peer i's sync state with peer j; queues[i][j]: messages i → j.
            let mut states: Vec<Vec<PeerSync>> = (0..3).map(|_| (0..3).map(|_| PeerSync::new()).collect()).collect();
            let mut queues: Vec<Vec<Queue>> = vec![vec![Vec::new(); 3]; 3];
            let mut up = [[true; 3]; 3];
            let ids_of = |l: &Library| -> Vec<DocId> { l.ids().cloned().collect() };
            for (peer, asset, month, action, link, toggle) in steps {
                let p = peer as usize;
                let id = format!("a{asset}");
                match action {
                    0 | 1 => {
                        let r = AssetRecord { id, taken_at: Some(format!("2024-{month:02}-01T00:00:00")), size: Some(u64::from(month)), ..Default::default() };
                        libs[p].upsert_assets("u", &[r]).unwrap();
                    }
                    2 => {
                        // Favorite an asset this peer knows (in any month).
                        libs[p].update_asset("u", &format!("2024-{month:02}"), &id, |r| r.favorite = Some(toggle)).unwrap();
                    }
                    _ => {
                        // Flip one link; a link going down drops what was in flight.
                        let (i, j) = [(0, 1), (0, 2), (1, 2)][link as usize];
                        up[i][j] = !up[i][j];
                        up[j][i] = up[i][j];
                        if !up[i][j] {
                            queues[i][j].clear();
                            queues[j][i].clear();
                            states[i][j].reset();
                            states[j][i].reset();
                        }
                    }
                }
                // Every peer pushes what it has to say on its live links, then one delivery each.
                for i in 0..3 {
                    for j in 0..3 {
                        if i != j && up[i][j] {
                            let ids = ids_of(&libs[i]);
                            let m = states[i][j].generate(&mut libs[i], &ids);
                            if !m.is_empty() {
                                queues[i][j].push(m);
                            }
                        }
                    }
                }
                for i in 0..3 {
                    for j in 0..3 {
                        if i != j && up[i][j] && !queues[i][j].is_empty() {
                            let m = queues[i][j].remove(0);
                            states[j][i].receive(&mut libs[j], m, |_| true).unwrap();
                        }
                    }
                }
                for (lib, disk) in libs.iter_mut().zip(&disks) {
                    for id in lib.take_dirty() {
                        let bytes = lib.save(&id).unwrap();
                        disk.lock().unwrap().insert(id, bytes);
                    }
                    if action == 3 {
                        lib.evict(0, &|_| true);
                        lib.evict(0, &|_| true);
                    }
                }
            }
            // Heal everything and pump until quiet.
            for i in 0..3 {
                for j in 0..3 {
                    if i != j && !up[i][j] {
                        states[i][j].reset();
                    }
                }
            }
            let mut quiet = false;
            for _ in 0..200 {
                quiet = true;
                for i in 0..3 {
                    for j in 0..3 {
                        if i == j { continue; }
                        for m in std::mem::take(&mut queues[i][j]) {
                            states[j][i].receive(&mut libs[j], m, |_| true).unwrap();
                        }
                        let ids = ids_of(&libs[i]);
                        let m = states[i][j].generate(&mut libs[i], &ids);
                        if !m.is_empty() {
                            quiet = false;
                            states[j][i].receive(&mut libs[j], m, |_| true).unwrap();
                        }
                    }
                }
                if quiet { break; }
            }
            prop_assert!(quiet, "did not converge");
            let mut all: Vec<DocId> = libs.iter().flat_map(|l| l.ids().cloned().collect::<Vec<_>>()).collect();
            all.sort();
            all.dedup();
            for id in &all {
                let h0 = libs[0].heads(id);
                prop_assert_eq!(&h0, &libs[1].heads(id));
                prop_assert_eq!(&h0, &libs[2].heads(id));
                let a0 = libs[0].assets(id).unwrap();
                prop_assert_eq!(&a0, &libs[1].assets(id).unwrap());
                prop_assert_eq!(&a0, &libs[2].assets(id).unwrap());
            }
            let s0 = libs[0].shards("u").unwrap();
            prop_assert_eq!(&s0, &libs[1].shards("u").unwrap());
            prop_assert_eq!(&s0, &libs[2].shards("u").unwrap());
        }
    }

    /// One edit on one peer, touching every kind of document a library has.
    #[derive(Debug, Clone)]
    enum Edit {
        /// A new or re-described asset (shard + root summaries).
        Upsert {
            asset: u8,
            month: u32,
        },
        Favorite {
            asset: u8,
            month: u32,
            on: bool,
        },
        Trash {
            asset: u8,
            month: u32,
        },
        Restore {
            asset: u8,
            month: u32,
        },
        Purge {
            asset: u8,
            month: u32,
        },
        /// A person in the people document: rename, hide, merge into another.
        Person {
            person: u8,
            name: u8,
            hidden: bool,
            merged_into: Option<u8>,
        },
        DeletePerson {
            person: u8,
        },
        /// A face found by the ML node, in the month's ML document.
        Face {
            asset: u8,
            month: u32,
            person: u8,
        },
        /// Library settings and "not duplicates" decisions (root document).
        TrashDays {
            days: u32,
        },
        NotDuplicates {
            a: u8,
            b: u8,
        },
        /// The household document (accounts, devices), written by nodes.
        Household {
            key: u8,
            value: u8,
        },
    }

    fn edit() -> impl Strategy<Value = Edit> {
        let a = 0u8..6;
        let m = 1u32..4;
        prop_oneof![
            3 => (a.clone(), m.clone()).prop_map(|(asset, month)| Edit::Upsert { asset, month }),
            1 => (a.clone(), m.clone(), any::<bool>()).prop_map(|(asset, month, on)| Edit::Favorite { asset, month, on }),
            1 => (a.clone(), m.clone()).prop_map(|(asset, month)| Edit::Trash { asset, month }),
            1 => (a.clone(), m.clone()).prop_map(|(asset, month)| Edit::Restore { asset, month }),
            1 => (a.clone(), m.clone()).prop_map(|(asset, month)| Edit::Purge { asset, month }),
            1 => (0u8..4, 0u8..4, any::<bool>(), proptest::option::of(0u8..4)).prop_map(|(person, name, hidden, merged_into)| Edit::Person { person, name, hidden, merged_into }),
            1 => (0u8..4).prop_map(|person| Edit::DeletePerson { person }),
            1 => (a.clone(), m.clone(), 0u8..4).prop_map(|(asset, month, person)| Edit::Face { asset, month, person }),
            1 => (1u32..90).prop_map(|days| Edit::TrashDays { days }),
            1 => (a.clone(), a).prop_map(|(a, b)| Edit::NotDuplicates { a, b }),
            1 => (0u8..3, 0u8..3).prop_map(|(key, value)| Edit::Household { key, value }),
        ]
    }

    fn apply_edit(lib: &mut Library, e: &Edit) {
        let month_of = |m: u32| format!("2024-{m:02}");
        let obj = |v: Value| -> Map<String, Value> { v.as_object().cloned().unwrap_or_default() };
        match e {
            Edit::Upsert { asset, month } => {
                let r = AssetRecord {
                    id: format!("a{asset}"),
                    taken_at: Some(format!("2024-{month:02}-01T00:00:00")),
                    size: Some(u64::from(*month)),
                    ..Default::default()
                };
                lib.upsert_assets("u", &[r]).unwrap();
            }
            Edit::Favorite { asset, month, on } => {
                lib.update_asset("u", &month_of(*month), &format!("a{asset}"), |r| {
                    r.favorite = Some(*on)
                })
                .unwrap();
            }
            Edit::Trash { asset, month } => {
                lib.update_asset("u", &month_of(*month), &format!("a{asset}"), |r| {
                    r.trashed_at = Some("2024-06-01T00:00:00Z".into())
                })
                .unwrap();
            }
            Edit::Restore { asset, month } => {
                lib.update_asset("u", &month_of(*month), &format!("a{asset}"), |r| {
                    r.trashed_at = None;
                    r.purged_at = None;
                })
                .unwrap();
            }
            Edit::Purge { asset, month } => {
                lib.update_asset("u", &month_of(*month), &format!("a{asset}"), |r| {
                    r.purged_at = Some("2024-07-01T00:00:00Z".into())
                })
                .unwrap();
            }
            Edit::Person {
                person,
                name,
                hidden,
                merged_into,
            } => {
                let doc = DocId::people("u").unwrap();
                let merged = merged_into
                    .filter(|m| m != person)
                    .map(|m| json!(format!("p{m}")))
                    .unwrap_or(Value::Null);
                let f = obj(
                    json!({"name": format!("name{name}"), "hidden": hidden, "merged_into": merged}),
                );
                lib.merge_entries(&doc, &[(format!("p/p{person}"), f)])
                    .unwrap();
            }
            Edit::DeletePerson { person } => {
                let doc = DocId::people("u").unwrap();
                lib.remove_entries(&doc, &[format!("p/p{person}")]).unwrap();
            }
            Edit::Face {
                asset,
                month,
                person,
            } => {
                let doc = DocId::ml("u", &month_of(*month)).unwrap();
                let f = obj(json!({"person": format!("p{person}"), "x": 0.25, "score": 0.9}));
                lib.merge_entries(
                    &doc,
                    &[
                        (format!("f/a{asset}/0"), f),
                        (format!("a/a{asset}"), obj(json!({"faces": 1}))),
                    ],
                )
                .unwrap();
            }
            Edit::TrashDays { days } => {
                lib.set_trash_days("u", *days).unwrap();
            }
            Edit::NotDuplicates { a, b } => {
                lib.reject_duplicates(
                    "u",
                    &[format!("a{a}"), format!("a{b}")],
                    "2024-08-01T00:00:00Z",
                )
                .unwrap();
            }
            Edit::Household { key, value } => {
                let f = obj(json!({"v": value}));
                lib.merge_entries(&DocId::household(), &[(format!("k{key}"), f)])
                    .unwrap();
            }
        }
    }

    /// What the network does to one delivery.
    #[derive(Debug, Clone, Copy)]
    enum Net {
        Deliver,
        /// Lost in flight: the connection breaks, both ends forget their sync state.
        Lose,
        /// Delivered twice.
        Duplicate,
        /// A later message overtakes this one.
        Reorder,
    }

    fn net() -> impl Strategy<Value = Net> {
        prop_oneof![5 => Just(Net::Deliver), 1 => Just(Net::Lose), 1 => Just(Net::Duplicate), 1 => Just(Net::Reorder)]
    }

    /// What one document shows: its id, heads, assets and every root-level entry.
    type DocView = (
        DocId,
        Vec<String>,
        Vec<AssetRecord>,
        Vec<(String, crate::library::Fields)>,
    );

    /// Everything a library shows, per document.
    fn snapshot(lib: &mut Library) -> Vec<DocView> {
        let mut ids: Vec<DocId> = lib.ids().cloned().collect();
        ids.sort();
        ids.into_iter()
            .map(|id| {
                let heads = lib.heads(&id);
                let assets = lib.assets(&id).unwrap_or_default();
                let entries = lib.entries(&id, "").unwrap_or_default();
                (id, heads, assets, entries)
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases(256)))]
        /// Three peers edit every kind of document (assets, trash and purge, people, ML faces,
        /// settings, duplicates decisions, household) while the network loses, duplicates and
        /// reorders sync messages. Once the network is good again, all three always end with
        /// identical heads, catalogues, entries and shard summaries.
        #[test]
        fn every_document_kind_converges_under_loss_duplication_and_reordering(
            steps in proptest::collection::vec((0u8..3, edit(), 0u8..3, net()), 1..80)
        ) {
            let mut libs = [Library::new(&[1; 16]), Library::new(&[2; 16]), Library::new(&[3; 16])];
            let mut states: Vec<Vec<PeerSync>> = (0..3).map(|_| (0..3).map(|_| PeerSync::new()).collect()).collect();
            let mut queues: Vec<Vec<Queue>> = vec![vec![Vec::new(); 3]; 3];
            let links = [(0usize, 1usize), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)];
            for (peer, e, link, fault) in steps {
                apply_edit(&mut libs[peer as usize], &e);
                for i in 0..3 {
                    for j in 0..3 {
                        if i != j {
                            let ids: Vec<DocId> = libs[i].ids().cloned().collect();
                            let m = states[i][j].generate(&mut libs[i], &ids);
                            if !m.is_empty() {
                                queues[i][j].push(m);
                            }
                        }
                    }
                }
                // The faulty link this step (one direction), then every link delivers one.
                let (fi, fj) = links[(link as usize * 2 + peer as usize) % 6];
                match fault {
                    Net::Lose if !queues[fi][fj].is_empty() => {
                        queues[fi][fj].clear();
                        queues[fj][fi].clear();
                        states[fi][fj].reset();
                        states[fj][fi].reset();
                    }
                    Net::Duplicate if !queues[fi][fj].is_empty() => {
                        let m = queues[fi][fj][0].clone();
                        states[fj][fi].receive(&mut libs[fj], m, |_| true).unwrap();
                    }
                    Net::Reorder if queues[fi][fj].len() > 1 => {
                        let m = queues[fi][fj].remove(1);
                        states[fj][fi].receive(&mut libs[fj], m, |_| true).unwrap();
                    }
                    _ => {}
                }
                for &(i, j) in &links {
                    if !queues[i][j].is_empty() {
                        let m = queues[i][j].remove(0);
                        states[j][i].receive(&mut libs[j], m, |_| true).unwrap();
                    }
                }
            }
            // The network is good again: deliver what is queued, then pump until quiet.
            let mut quiet = false;
            for _ in 0..300 {
                quiet = true;
                for &(i, j) in &links {
                    for m in std::mem::take(&mut queues[i][j]) {
                        states[j][i].receive(&mut libs[j], m, |_| true).unwrap();
                    }
                    let ids: Vec<DocId> = libs[i].ids().cloned().collect();
                    let m = states[i][j].generate(&mut libs[i], &ids);
                    if !m.is_empty() {
                        quiet = false;
                        states[j][i].receive(&mut libs[j], m, |_| true).unwrap();
                    }
                }
                if quiet { break; }
            }
            prop_assert!(quiet, "did not converge");
            let s0 = snapshot(&mut libs[0]);
            prop_assert_eq!(&s0, &snapshot(&mut libs[1]));
            prop_assert_eq!(&s0, &snapshot(&mut libs[2]));
            let sum0 = libs[0].shards("u").unwrap();
            prop_assert_eq!(&sum0, &libs[1].shards("u").unwrap());
            prop_assert_eq!(&sum0, &libs[2].shards("u").unwrap());
            prop_assert_eq!(libs[0].trash_days("u"), libs[1].trash_days("u"));
            prop_assert_eq!(libs[0].people("u").unwrap(), libs[2].people("u").unwrap());
        }
    }
}
