use sha1::{Digest, Sha1};

/// BLAKE3 (the asset id) and SHA-1 (what the Immich API speaks) of an original, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashes {
    pub blake3: String,
    pub sha1: String,
}

/// Hashes bytes that arrive in chunks (uploads are streamed to disk, never held whole).
#[derive(Default)]
pub struct StreamHasher {
    b3: blake3::Hasher,
    s1: Sha1,
    len: u64,
}

impl StreamHasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.b3.update(chunk);
        self.s1.update(chunk);
        self.len += chunk.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The BLAKE3 hash of what was written so far (hex), without finishing.
    pub fn blake3_hex(&self) -> String {
        self.b3.finalize().to_hex().to_string()
    }

    pub fn finish(self) -> Hashes {
        Hashes {
            blake3: self.b3.finalize().to_hex().to_string(),
            sha1: hex(&self.s1.finalize()),
        }
    }
}

pub fn hash_bytes(bytes: &[u8]) -> Hashes {
    let mut h = StreamHasher::new();
    h.update(bytes);
    h.finish()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_vectors() {
        let h = super::hash_bytes(b"abc");
        assert_eq!(h.sha1, "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            h.blake3,
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
    }
}
