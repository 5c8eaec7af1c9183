//! Document identifiers.
//!
//! A user's catalogue is a *root* document (`u/<user>/root`: settings and the shard index) plus
//! one *shard* document per capture month (`u/<user>/m/<YYYY-MM>`, or `u/<user>/m/undated`).
//! Machine-learning results live beside them, written by the ML node's own actor: one *ML
//! document* per shard (`u/<user>/ml/<YYYY-MM>`: faces, processed marks, embedding-pack refs)
//! and one *people* document (`u/<user>/people`: people, names, merges, user decisions).

use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DocIdError {
    #[error("invalid document id {0:?}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocId(String);

const HOUSEHOLD: &str = "n/household";
const ALBUM_PREFIX: &str = "a/";

/// An album id: 32 lowercase hex digits (random, made by whoever creates the album).
pub fn valid_album_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn valid_user(u: &str) -> bool {
    !u.is_empty() && u.len() <= 64 && u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn valid_month(m: &str) -> bool {
    if m == "undated" {
        return true;
    }
    let b = m.as_bytes();
    b.len() == 7
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..].iter().all(u8::is_ascii_digit)
        && matches!(
            &m[5..],
            "01" | "02" | "03" | "04" | "05" | "06" | "07" | "08" | "09" | "10" | "11" | "12"
        )
}

impl DocId {
    pub fn root(user: &str) -> Result<Self, DocIdError> {
        Self::parse(&format!("u/{user}/root"))
    }

    pub fn shard(user: &str, month: &str) -> Result<Self, DocIdError> {
        Self::parse(&format!("u/{user}/m/{month}"))
    }

    /// The ML results of a shard month.
    pub fn ml(user: &str, month: &str) -> Result<Self, DocIdError> {
        Self::parse(&format!("u/{user}/ml/{month}"))
    }

    /// A user's people (face clusters, names, merges, "not this person" decisions).
    pub fn people(user: &str) -> Result<Self, DocIdError> {
        Self::parse(&format!("u/{user}/people"))
    }

    /// The household's accounts (users, password hashes, API keys, sessions, paired devices),
    /// replicated between sync nodes only: no user's device may read or write it.
    pub fn household() -> Self {
        Self(HOUSEHOLD.to_owned())
    }

    /// An album (`a/<id>`): its own document, shared by its owner and members (see
    /// [`crate::album`]); it belongs to no single user's catalogue.
    pub fn album(id: &str) -> Result<Self, DocIdError> {
        Self::parse(&format!("{ALBUM_PREFIX}{id}"))
    }

    /// The album id of an album document.
    pub fn album_id(&self) -> Option<&str> {
        self.0.strip_prefix(ALBUM_PREFIX)
    }

    /// Whether this is a user's root document (`u/<user>/root`).
    pub fn is_root(&self) -> bool {
        self.tail() == "root"
    }

    /// Whether a user's device may hold this document without owning it (an album, or a month
    /// of a partner's library): access to it can be given and taken back.
    pub fn is_shared_kind(&self) -> bool {
        self.album_id().is_some() || self.month().is_some()
    }

    /// Whether this is a node-only document (see [`DocId::household`]).
    pub fn is_household(&self) -> bool {
        self.0 == HOUSEHOLD
    }

    /// Parses and validates an id received from a peer or read from disk.
    pub fn parse(s: &str) -> Result<Self, DocIdError> {
        if s == HOUSEHOLD {
            return Ok(Self::household());
        }
        let bad = || DocIdError::Invalid(s.chars().take(100).collect());
        if let Some(id) = s.strip_prefix(ALBUM_PREFIX) {
            return if valid_album_id(id) {
                Ok(Self(s.to_owned()))
            } else {
                Err(bad())
            };
        }
        let rest = s.strip_prefix("u/").ok_or_else(bad)?;
        let (user, tail) = rest.split_once('/').ok_or_else(bad)?;
        if !valid_user(user) {
            return Err(bad());
        }
        let month = tail.strip_prefix("m/").or_else(|| tail.strip_prefix("ml/"));
        match month {
            Some(month) if valid_month(month) => Ok(Self(s.to_owned())),
            None if tail == "root" || tail == "people" => Ok(Self(s.to_owned())),
            _ => Err(bad()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The user this document belongs to (empty for the household document, so it never
    /// matches a user).
    pub fn user(&self) -> &str {
        if self.is_household() || self.album_id().is_some() {
            return "";
        }
        self.0[2..].split('/').next().unwrap_or_default()
    }

    /// The month of a shard document (`None` for every other kind).
    pub fn month(&self) -> Option<&str> {
        self.tail().strip_prefix("m/")
    }

    /// What follows `u/<user>/`.
    fn tail(&self) -> &str {
        if self.is_household() || self.album_id().is_some() {
            return "";
        }
        self.0[2..]
            .split_once('/')
            .map(|(_, t)| t)
            .unwrap_or_default()
    }

    /// The order documents are synced in: what the first screen needs (roots with their month
    /// summaries, people, albums, the household) first, then months newest first, each month's
    /// assets before its ML results, `undated` last. A new device shows its newest photos while
    /// the rest of a large library is still on its way.
    pub fn sync_rank(&self) -> (u8, std::cmp::Reverse<String>, u8) {
        let month = |m: &str| {
            // `undated` sorts after every real month.
            std::cmp::Reverse(if m == "undated" {
                String::new()
            } else {
                m.to_owned()
            })
        };
        match (self.month(), self.ml_month()) {
            (Some(m), _) => (1, month(m), 0),
            (_, Some(m)) => (1, month(m), 1),
            _ => (
                0,
                std::cmp::Reverse(String::new()),
                u8::from(!self.is_root()),
            ),
        }
    }

    /// The month of an ML document (`None` for every other kind).
    pub fn ml_month(&self) -> Option<&str> {
        self.tail().strip_prefix("ml/")
    }

    /// Documents the ML node writes (ML results and people); everything else is read-only to it.
    pub fn is_ml_writable(&self) -> bool {
        self.ml_month().is_some() || self.tail() == "people"
    }

    /// A file-name-safe form (used by stores on disk).
    pub fn file_stem(&self) -> String {
        self.0.replace('/', "~")
    }

    pub fn from_file_stem(stem: &str) -> Result<Self, DocIdError> {
        Self::parse(&stem.replace('~', "/"))
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_order_is_summaries_first_then_newest_months() {
        let u = "abc-1";
        let mut ids = [
            DocId::shard(u, "2019-03").unwrap(),
            DocId::shard(u, "undated").unwrap(),
            DocId::ml(u, "2024-11").unwrap(),
            DocId::shard(u, "2024-11").unwrap(),
            DocId::people(u).unwrap(),
            DocId::root(u).unwrap(),
            DocId::shard(u, "2024-12").unwrap(),
        ];
        ids.sort_by_key(DocId::sync_rank);
        let got: Vec<&str> = ids.iter().map(DocId::as_str).collect();
        assert_eq!(
            got,
            [
                "u/abc-1/root",
                "u/abc-1/people",
                "u/abc-1/m/2024-12",
                "u/abc-1/m/2024-11",
                "u/abc-1/ml/2024-11",
                "u/abc-1/m/2019-03",
                "u/abc-1/m/undated",
            ]
        );
    }

    #[test]
    fn parses_valid_and_rejects_forged_ids() {
        let r = DocId::root("abc-1").unwrap();
        assert_eq!(r.user(), "abc-1");
        assert_eq!(r.month(), None);
        let s = DocId::shard("abc", "2024-05").unwrap();
        assert_eq!(s.month(), Some("2024-05"));
        assert_eq!(DocId::from_file_stem(&s.file_stem()).unwrap(), s);
        for bad in [
            "",
            "u//root",
            "u/../root",
            "u/a/m/2024-13",
            "u/a/m/../../x",
            "x/a/root",
            "u/a/root/x",
            "u/a b/root",
        ] {
            assert!(DocId::parse(bad).is_err(), "{bad}");
        }
        assert!(DocId::shard("a", "undated").is_ok());
        let ml = DocId::ml("a", "2024-05").unwrap();
        assert_eq!((ml.month(), ml.ml_month()), (None, Some("2024-05")));
        assert!(ml.is_ml_writable() && DocId::people("a").unwrap().is_ml_writable());
        assert!(!s.is_ml_writable() && !r.is_ml_writable());
        assert!(DocId::parse("u/a/ml/2024-13").is_err());
        assert!(DocId::parse("u/a/people/x").is_err());
        let h = DocId::parse("n/household").unwrap();
        assert!(h.is_household() && h.user().is_empty() && !h.is_ml_writable());
        assert_eq!(DocId::from_file_stem(&h.file_stem()).unwrap(), h);
        assert!(DocId::parse("n/other").is_err() && DocId::parse("n/household/x").is_err());
    }
}
