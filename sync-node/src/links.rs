//! Public shared links: an unguessable key that lets anyone without an account see one album
//! (as it is now, photos added later included) or a chosen set of photos, optionally behind a
//! password, until an expiry, with or without downloading originals.
//!
//! Links are household records (the `shared_links` sled tree, keyed by the BLAKE3 hash of the
//! key, replicated between nodes like API keys), never part of any device's catalogue. The key
//! itself is kept in the record so that its owner can copy the link again (it is a URL meant to
//! be handed out). A password is stored as an Argon2id hash; once a visitor typed it, they carry
//! a token derived from the key and that hash ([`SharedLink::token`]), so changing the password
//! or deleting the link invalidates every token at once.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use serde::{Deserialize, Serialize};

use crate::auth::{secret_hash, Auth, AuthError};

/// A shared link as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SharedLink {
    pub id: String,
    pub user_id: String,
    pub key: String,
    /// `ALBUM` or `INDIVIDUAL` (Immich's names).
    pub kind: String,
    pub album_id: Option<String>,
    #[serde(default)]
    pub asset_ids: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub password_hash: Option<String>,
    /// RFC 3339; `None`: never.
    #[serde(default)]
    pub expires_at: Option<String>,
    pub allow_download: bool,
    pub show_metadata: bool,
    pub created_at: String,
}

/// Why a link does not open.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkState {
    Open,
    Expired,
    NeedsPassword,
}

impl SharedLink {
    /// Whether the link's expiry has passed at `now`.
    pub fn is_expired(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.expires_at
            .as_deref()
            .and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok())
            .is_some_and(|e| e <= now)
    }

    /// The token a visitor who typed the password carries (a cookie): derived from the key
    /// and the password's hash, so a new password or a deleted link voids it.
    pub fn token(&self) -> Option<String> {
        let pw = self.password_hash.as_deref()?;
        let mut h = blake3::Hasher::new_derive_key("tessera shared-link token v1");
        h.update(self.key.as_bytes());
        h.update(&[0]);
        h.update(pw.as_bytes());
        Some(h.finalize().to_hex().to_string())
    }

    /// Whether a visitor with `token` (if any) may see the link now.
    pub fn state(&self, token: Option<&str>) -> LinkState {
        if self.is_expired(chrono::Utc::now()) {
            return LinkState::Expired;
        }
        match (self.token(), token) {
            (None, _) => LinkState::Open,
            (Some(t), Some(given)) if constant_eq(t.as_bytes(), given.as_bytes()) => {
                LinkState::Open
            }
            _ => LinkState::NeedsPassword,
        }
    }

    /// Checks a typed password (Argon2id: run it off the async executor).
    pub fn verify_password(&self, password: &str) -> bool {
        let Some(hash) = self.password_hash.as_deref() else {
            return true;
        };
        PasswordHash::new(hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The Argon2id hash of a link password (any non-empty password: it guards one link).
pub fn hash_link_password(password: &str) -> Result<String, AuthError> {
    if password.is_empty() || password.len() > 1024 {
        return Err(AuthError::Invalid(
            "a link password must be 1 to 1024 characters".into(),
        ));
    }
    Argon2::default()
        .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

fn decode(v: &[u8]) -> Result<SharedLink, AuthError> {
    serde_json::from_slice(v).map_err(|e| AuthError::Corrupt(e.to_string()))
}

impl Auth {
    /// Stores a new link (`id`, `key` and `created_at` are filled in); returns it.
    pub fn create_shared_link(&self, mut link: SharedLink) -> Result<SharedLink, AuthError> {
        link.id = crate::random_hex(16).map_err(|e| AuthError::Random(e.to_string()))?;
        link.key = crate::random_hex(24).map_err(|e| AuthError::Random(e.to_string()))?;
        link.created_at = crate::now_rfc3339();
        self.put_link(&link)?;
        Ok(link)
    }

    fn put_link(&self, link: &SharedLink) -> Result<(), AuthError> {
        let v = serde_json::to_vec(link).map_err(|e| AuthError::Corrupt(e.to_string()))?;
        self.links.insert(secret_hash(&link.key), v)?;
        self.db.flush()?;
        self.bump();
        Ok(())
    }

    /// Replaces a stored link (same key).
    pub fn update_shared_link(&self, link: &SharedLink) -> Result<(), AuthError> {
        self.put_link(link)
    }

    /// Every link, or those of one user.
    pub fn shared_links(&self, user: Option<&str>) -> Result<Vec<SharedLink>, AuthError> {
        let mut out = Vec::new();
        for kv in self.links.iter() {
            let (_, v) = kv?;
            let l = decode(&v)?;
            if user.is_none_or(|u| l.user_id == u) {
                out.push(l);
            }
        }
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        Ok(out)
    }

    /// A user's link by id.
    pub fn shared_link_of(&self, user: &str, id: &str) -> Result<Option<SharedLink>, AuthError> {
        Ok(self
            .shared_links(Some(user))?
            .into_iter()
            .find(|l| l.id == id))
    }

    /// The link a key opens (revoked links are gone: `None`).
    pub fn shared_link_by_key(&self, key: &str) -> Result<Option<SharedLink>, AuthError> {
        if key.is_empty() || key.len() > 200 {
            return Ok(None);
        }
        match self.links.get(secret_hash(key))? {
            Some(v) => decode(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Revokes a link: every page, thumbnail and download it opened stops at once.
    pub fn delete_shared_link(&self, user: &str, id: &str) -> Result<bool, AuthError> {
        let Some(l) = self.shared_link_of(user, id)? else {
            return Ok(false);
        };
        self.links.remove(secret_hash(&l.key))?;
        self.db.flush()?;
        self.bump();
        Ok(true)
    }

    /// Removes every link of a user (their account was deleted).
    pub fn delete_shared_links_of(&self, user: &str) -> Result<usize, AuthError> {
        let mine = self.shared_links(Some(user))?;
        for l in &mine {
            self.links.remove(secret_hash(&l.key))?;
        }
        if !mine.is_empty() {
            self.db.flush()?;
            self.bump();
        }
        Ok(mine.len())
    }
}
