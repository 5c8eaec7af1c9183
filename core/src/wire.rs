//! The peer-to-peer wire protocol, sans IO: ALPNs, frames and their length-prefixed encoding.
//!
//! A connection on [`ALPN_DOCS`] carries one bidirectional stream of [`Frame`]s. The dialer
//! speaks first with [`Frame::Hello`]; the listener answers [`Frame::Welcome`] (with the role
//! it grants the dialer's key) or [`Frame::Denied`] and closes. After that both sides push
//! [`Frame::Sync`] envelopes whenever they have something to say (live: a local change is sent
//! at once), and sync nodes also announce the blobs they hold ([`Frame::Have`]).
//!
//! A connection on [`ALPN_BLOBS`] carries blob transfers, one bidirectional stream each:
//! [`BlobRequest`] → [`BlobResponse`] followed by the raw bytes from the requested offset. The
//! receiver hashes what it gets and keeps it only if the BLAKE3 hash matches the name.
//!
//! Who the peer is comes from the QUIC handshake (its key), never from a frame.

use serde::{Deserialize, Serialize};

use crate::SyncEnvelope;

/// Catalogue documents (and, between nodes, blob inventories).
pub const ALPN_DOCS: &[u8] = b"tessera/docs/1";
/// Blob transfers by BLAKE3 hash, with offsets (resume).
pub const ALPN_BLOBS: &[u8] = b"tessera/blobs/1";
/// Version carried in [`Hello`].
pub const WIRE_VERSION: u8 = 2;
/// Upper bound on one frame (a bigger length prefix is a protocol error, not an allocation).
pub const MAX_FRAME: usize = 64 << 20;
/// Upper bound on blob references in one [`Frame::Have`].
pub const MAX_HAVE: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("unsupported wire version {0} (this peer speaks {WIRE_VERSION})")]
    Version(u8),
    #[error("too many blob references in one frame ({0})")]
    TooManyBlobs(usize),
    #[error("too many documents in one frame ({0})")]
    TooManyDocs(usize),
}

/// The first frame on a docs connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u8,
    /// A human name for the device or node ("Chromium on Linux", "nas").
    pub name: String,
    /// A pairing secret from a ticket: a node joining the household presents it once.
    pub pair_secret: Option<String>,
    /// How to reach the dialer (an opaque address string the listener may dial back).
    pub addr: Option<String>,
    /// Every document the dialer holds (see [`crate::SyncEnvelope::holds`]): the listener
    /// sends the others whole from its first push on. `None`: not said.
    pub holds: Option<Vec<String>>,
}

/// What the listener grants the dialer's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A user's device: that user's documents, read and write.
    Device { user: String },
    /// A sync node of the same household: every document and every blob.
    Node,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub role: Role,
    /// The listener's name.
    pub name: String,
    /// Every document the listener holds, said to another node (which then sends it the
    /// others whole): a node joining with an empty library replicates at the speed of files.
    pub holds: Option<Vec<String>>,
}

/// A blob a node holds: its kind (`original`, `thumb`, `preview`, `ml`), BLAKE3 hash and size.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlobRef {
    pub kind: String,
    pub hash: [u8; 32],
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    Hello(Hello),
    Welcome(Welcome),
    Denied { reason: String },
    Sync(SyncEnvelope),
    Have(Vec<BlobRef>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRequest {
    pub kind: String,
    pub hash: [u8; 32],
    /// Resume from this byte (a partial copy already received).
    pub offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobResponse {
    /// `size` is the whole blob; `size - offset` raw bytes follow.
    Found {
        size: u64,
    },
    NotFound,
    Denied {
        reason: String,
    },
}

/// Length prefix + postcard body.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let body = postcard::to_allocvec(msg).unwrap_or_default();
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// The body length announced by a 4-byte prefix, refused above [`MAX_FRAME`].
pub fn body_len(prefix: [u8; 4]) -> Result<usize, WireError> {
    let n = u32::from_be_bytes(prefix) as usize;
    if n > MAX_FRAME {
        return Err(WireError::TooLarge(n));
    }
    Ok(n)
}

/// Decodes a frame body and checks what postcard cannot (versions, bounds).
pub fn decode_frame(body: &[u8]) -> Result<Frame, WireError> {
    let f: Frame = postcard::from_bytes(body)?;
    match &f {
        Frame::Hello(h) if h.version != WIRE_VERSION => return Err(WireError::Version(h.version)),
        Frame::Sync(env) if env.version != crate::sync::PROTOCOL_VERSION => {
            return Err(WireError::Version(env.version))
        }
        Frame::Sync(env) if env.docs.len() > crate::sync::MAX_DOCS_PER_ENVELOPE => {
            return Err(WireError::TooManyDocs(env.docs.len()))
        }
        Frame::Have(refs) if refs.len() > MAX_HAVE => {
            return Err(WireError::TooManyBlobs(refs.len()))
        }
        _ => {}
    }
    let holds = match &f {
        Frame::Hello(h) => h.holds.as_ref(),
        Frame::Welcome(w) => w.holds.as_ref(),
        Frame::Sync(env) => env.holds.as_ref(),
        _ => None,
    };
    let most = holds.map_or(0, Vec::len);
    if most > crate::sync::MAX_DOCS_PER_ENVELOPE {
        return Err(WireError::TooManyDocs(most));
    }
    Ok(f)
}

pub fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, WireError> {
    Ok(postcard::from_bytes(body)?)
}

/// Splits a byte stream into frame bodies (for transports that deliver arbitrary chunks).
#[derive(Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if one has fully arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let n = body_len([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])?;
        if self.buf.len() < 4 + n {
            return Ok(None);
        }
        let f = decode_frame(&self.buf[4..4 + n]);
        self.buf.drain(..4 + n);
        f.map(Some)
    }
}

/// Lowercase hex of a BLAKE3 hash, as blob files are named.
/// What a device signs with its iroh key to pair with a user on a node (proof that it holds
/// the key it asks to bind: nobody can bind a key they do not own, such as a node's own id, which
/// is public). Binds the node, the user and the time, so a signature is good for nothing else.
pub fn device_binding_statement(node_id: &str, user_id: &str, signed_at: i64) -> Vec<u8> {
    format!("tessera-device-binding-v1\nnode {node_id}\nuser {user_id}\nat {signed_at}\n")
        .into_bytes()
}

/// How far a binding's `signed_at` may be from the node's clock (seconds).
pub const BINDING_MAX_SKEW_SECS: i64 = 600;

pub fn hash_hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a 64-digit hex hash.
pub fn parse_hash(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip_through_a_chunked_stream() {
        let frames = vec![
            Frame::Hello(Hello {
                version: WIRE_VERSION,
                name: "phone".into(),
                pair_secret: None,
                addr: None,
                holds: Some(vec!["u/u1/root".into()]),
            }),
            Frame::Welcome(Welcome {
                role: Role::Device { user: "u1".into() },
                name: "nas".into(),
                holds: None,
            }),
            Frame::Sync(SyncEnvelope::new("p", vec![])),
            Frame::Have(vec![BlobRef {
                kind: "original".into(),
                hash: [7; 32],
                size: 9,
            }]),
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(encode).collect();
        let mut r = FrameReader::default();
        let mut got = Vec::new();
        for chunk in bytes.chunks(3) {
            r.push(chunk);
            while let Some(f) = r.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn bad_frames_are_refused() {
        assert!(matches!(
            body_len(u32::MAX.to_be_bytes()),
            Err(WireError::TooLarge(_))
        ));
        let hello = Frame::Hello(Hello {
            version: 9,
            name: String::new(),
            pair_secret: None,
            addr: None,
            holds: None,
        });
        let enc = encode(&hello);
        assert!(matches!(
            decode_frame(&enc[4..]),
            Err(WireError::Version(9))
        ));
        assert!(decode_frame(&[0xff, 0xff, 0xff]).is_err());
        let flood = Frame::Welcome(Welcome {
            role: Role::Node,
            name: String::new(),
            holds: Some(vec![String::new(); crate::sync::MAX_DOCS_PER_ENVELOPE + 1]),
        });
        assert!(matches!(
            decode_frame(&encode(&flood)[4..]),
            Err(WireError::TooManyDocs(_))
        ));
        let h = [0xab; 32];
        assert_eq!(parse_hash(&hash_hex(&h)), Some(h));
        assert_eq!(parse_hash("zz"), None);
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_frame(&bytes);
            let mut r = FrameReader::default();
            r.push(&bytes);
            let _ = r.next_frame();
        }
    }
}
