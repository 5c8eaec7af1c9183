//! Machine-learning results in the catalogue: faces, people and embedding-pack references.
//!
//! The ML node writes them with its own actor into two kinds of documents, never into asset
//! shards:
//! - `u/<user>/ml/<YYYY-MM>` (one per shard month):
//!   - `a/<asset>`: the asset was analysed (`faces` found, `face_model`, `clip_model`);
//!   - `f/<asset>/<n>`: a detected face: box (fractions of the displayed image), `score`,
//!     the ML node's `person`, the `crop` blob, and the user's decisions `user_person` /
//!     `not_person` which the ML node never writes;
//!   - `pack/clip`, `pack/face`: the embedding pack of the month (a blob, see [`crate::pack`]).
//! - `u/<user>/people`: `p/<person>` with `name`, `hidden`, `merged_into` (user decisions) and
//!   `cover` (a face key, chosen by the ML node).
//!
//! Entries are keyed by content (asset hash, face index, person id made from its first face),
//! so two ML nodes racing on the same photo write identical data.

use serde::{Deserialize, Serialize};
use serde_json::{Map as JsonMap, Value as Json};

use crate::{DocId, Library, LibraryError};

pub const MARK_PREFIX: &str = "a/";
pub const FACE_PREFIX: &str = "f/";
pub const PACK_PREFIX: &str = "pack/";
pub const PERSON_PREFIX: &str = "p/";

/// The CLIP pack of a month: one vector per asset.
pub const PACK_CLIP: &str = "pack/clip";
/// The face pack of a month: one vector per face key.
pub const PACK_FACE: &str = "pack/face";

/// "This asset was analysed" (written after its faces, so a reader that sees the mark sees
/// the faces too; automerge applies a change atomically).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MlMark {
    pub faces: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_model: Option<String>,
    /// The text model that read the photo, and the text it read (lines joined by newlines;
    /// empty when there is none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocr_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Why analysis failed, if it did (the asset is not retried until the models change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaceRecord {
    pub asset: String,
    /// Box corners as fractions (0..1) of the displayed (orientation-applied) image.
    pub x1: f64,
    pub y1: f64,
    pub x2: f64,
    pub y2: f64,
    pub score: f64,
    /// Person assigned by clustering (ML node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
    /// BLAKE3 of the face crop (JPEG blob).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<String>,
    /// Person chosen by the user; wins over `person` and is never changed by the ML node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_person: Option<String>,
    /// Comma-separated people the user said this face is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_person: Option<String>,
}

impl FaceRecord {
    /// The person this face shows: the user's choice, else the clustering's unless the user
    /// said "not this person" (an empty `user_person` is no choice).
    pub fn effective_person(&self) -> Option<&str> {
        self.user_person
            .as_deref()
            .filter(|p| !p.is_empty())
            .or(self.person.as_deref().filter(|p| !self.rejects(p)))
    }

    pub fn rejects(&self, person: &str) -> bool {
        self.rejected().iter().any(|p| p == person)
    }

    /// The people the user said this face is not.
    pub fn rejected(&self) -> Vec<String> {
        self.not_person
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    pub fn key(asset: &str, index: usize) -> String {
        format!("{FACE_PREFIX}{asset}/{index}")
    }
}

/// The asset of a face key ([`FaceRecord::key`]).
pub fn face_asset(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(FACE_PREFIX)?;
    Some(&rest[..rest.rfind('/')?])
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PersonRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<bool>,
    /// The user merged this person into another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    /// Face key shown as the person's picture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cover: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PackRef {
    pub hash: String,
    pub model: String,
    pub count: u64,
    pub dim: u64,
}

/// A typed value as the JSON field map that [`Library::merge_entries`] takes.
pub fn fields<T: Serialize>(v: &T) -> JsonMap<String, Json> {
    match serde_json::to_value(v) {
        Ok(Json::Object(m)) => m,
        _ => JsonMap::new(),
    }
}

pub(crate) fn typed<T: for<'de> Deserialize<'de>>(
    doc: &DocId,
    key: &str,
    m: JsonMap<String, Json>,
) -> Result<T, LibraryError> {
    serde_json::from_value(Json::Object(m)).map_err(|e| LibraryError::Malformed {
        doc: doc.to_string(),
        id: key.to_owned(),
        reason: e.to_string(),
    })
}

/// A person with the faces that resolve to them.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonSummary {
    pub id: String,
    pub record: PersonRecord,
    pub faces: usize,
    /// The chosen cover face, else the first face found.
    pub cover: Option<FaceRecord>,
}

/// How far the ML node got with a user's library.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MlProgress {
    /// Photos with a preview (what the ML node analyses).
    pub total: u64,
    pub analysed: u64,
    pub faces: u64,
}

impl MlProgress {
    pub fn add(&mut self, o: &MlProgress) {
        self.total += o.total;
        self.analysed += o.analysed;
        self.faces += o.faces;
    }
}

/// Typed reads of the ML and people documents.
impl Library {
    /// The ML documents of `user` (one per shard month that has results).
    pub fn ml_doc_ids(&self, user: &str) -> Vec<DocId> {
        self.ids()
            .filter(|d| d.user() == user && d.ml_month().is_some())
            .cloned()
            .collect()
    }

    /// Analysed / total photos of `user` (the PWA's and the node's progress display).
    pub fn ml_progress(&self, user: &str) -> Result<MlProgress, LibraryError> {
        let mut p = MlProgress::default();
        for s in self.shards(user)? {
            let records = self.assets(&DocId::shard(user, &s.month)?)?;
            p.add(&self.ml_progress_month(
                user,
                &s.month,
                records.iter().map(|r| (r.id.as_str(), r.preview.is_some())),
            )?);
        }
        Ok(p)
    }

    /// One month's share of [`Library::ml_progress`], given its records as (id, has a
    /// preview) (a caller that holds them already, like the PWA's shard cache, adds months up
    /// without reading them again).
    pub fn ml_progress_month<'a>(
        &self,
        user: &str,
        month: &str,
        records: impl IntoIterator<Item = (&'a str, bool)>,
    ) -> Result<MlProgress, LibraryError> {
        let mut p = MlProgress::default();
        let marks: std::collections::HashMap<String, MlMark> = self
            .ml_marks(&DocId::ml(user, month)?)?
            .into_iter()
            .collect();
        for (id, has_preview) in records {
            if !has_preview {
                continue;
            }
            p.total += 1;
            if let Some(m) = marks.get(id) {
                p.analysed += 1;
                p.faces += u64::from(m.faces);
            }
        }
        Ok(p)
    }

    /// People of `user` that have faces (merged people fold into their target), most faces
    /// first.
    pub fn people_with_faces(&self, user: &str) -> Result<Vec<PersonSummary>, LibraryError> {
        let docs = self.ml_doc_ids(user);
        let parts = docs
            .iter()
            .map(|d| self.ml_doc_people(d))
            .collect::<Result<Vec<_>, _>>()?;
        self.people_counts_of(user, docs.iter().zip(&parts))?
            .into_iter()
            .map(|c| self.person_summary(c))
            .collect()
    }

    /// A person's count, with its cover face read from its document.
    pub fn person_summary(
        &self,
        c: crate::search::PersonCount,
    ) -> Result<PersonSummary, LibraryError> {
        let cover = match &c.cover {
            Some((doc, key)) => self.entry(doc, key)?.and_then(|m| typed(doc, key, m).ok()),
            None => None,
        };
        Ok(PersonSummary {
            id: c.id,
            record: c.record,
            faces: c.faces,
            cover,
        })
    }

    /// Marks of an ML document. Entries that do not parse (written by a newer or a buggy peer)
    /// are skipped: one bad entry must not stop every reader.
    pub fn ml_marks(&self, doc: &DocId) -> Result<Vec<(String, MlMark)>, LibraryError> {
        Ok(self
            .entries(doc, MARK_PREFIX)?
            .into_iter()
            .filter_map(|(k, m)| {
                let asset = k[MARK_PREFIX.len()..].to_owned();
                typed(doc, &k, m).ok().map(|v| (asset, v))
            })
            .collect())
    }

    /// Faces of an ML document (`(key, face)`), optionally of one asset only.
    pub fn faces(
        &self,
        doc: &DocId,
        asset: Option<&str>,
    ) -> Result<Vec<(String, FaceRecord)>, LibraryError> {
        let prefix = match asset {
            Some(a) => format!("{FACE_PREFIX}{a}/"),
            None => FACE_PREFIX.to_owned(),
        };
        Ok(self
            .entries(doc, &prefix)?
            .into_iter()
            .filter_map(|(k, m)| typed(doc, &k, m).ok().map(|v| (k, v)))
            .collect())
    }

    pub fn pack_ref(&self, doc: &DocId, key: &str) -> Result<Option<PackRef>, LibraryError> {
        Ok(self.entry(doc, key)?.and_then(|m| typed(doc, key, m).ok()))
    }

    pub fn people(&self, user: &str) -> Result<Vec<(String, PersonRecord)>, LibraryError> {
        let doc = DocId::people(user)?;
        Ok(self
            .entries(&doc, PERSON_PREFIX)?
            .into_iter()
            .filter_map(|(k, m)| {
                let id = k[PERSON_PREFIX.len()..].to_owned();
                typed(&doc, &k, m).ok().map(|v| (id, v))
            })
            .collect())
    }

    /// Follows `merged_into` links (bounded, so a cycle made by concurrent merges ends).
    pub fn resolve_person(&self, user: &str, person: &str) -> Result<String, LibraryError> {
        let doc = DocId::people(user)?;
        let mut cur = person.to_owned();
        for _ in 0..16 {
            let next = self
                .entry(&doc, &format!("{PERSON_PREFIX}{cur}"))?
                .and_then(|m| {
                    m.get("merged_into")
                        .and_then(|v| v.as_str().map(str::to_owned))
                });
            match next {
                Some(n) if n != cur => cur = n,
                _ => break,
            }
        }
        Ok(cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_fields_survive_ml_rewrites_and_no_op_writes_record_nothing() {
        let mut lib = Library::new(&[3; 16]);
        let doc = DocId::ml("u", "2024-05").unwrap();
        let face = FaceRecord {
            asset: "ab".into(),
            x1: 0.1,
            y1: 0.2,
            x2: 0.3,
            y2: 0.4,
            score: 0.93,
            person: Some("p1".into()),
            ..Default::default()
        };
        let key = FaceRecord::key("ab", 0);
        assert!(lib
            .merge_entries(&doc, &[(key.clone(), fields(&face))])
            .unwrap());
        // The user says "this is p2, and not p1".
        let mut user = JsonMap::new();
        user.insert("user_person".into(), "p2".into());
        user.insert("not_person".into(), "p1".into());
        assert!(lib.merge_entries(&doc, &[(key.clone(), user)]).unwrap());
        // The ML node writes its own fields again: nothing of the user's is lost, and an
        // identical write is not a change.
        assert!(!lib
            .merge_entries(&doc, &[(key.clone(), fields(&face))])
            .unwrap());
        let faces = lib.faces(&doc, Some("ab")).unwrap();
        assert_eq!(faces.len(), 1);
        let f = &faces[0].1;
        assert_eq!(f.effective_person(), Some("p2"));
        assert!(f.rejects("p1") && !f.rejects("p2"));
        // "Not this person" wins over the clustering at once (before the ML node re-clusters).
        let g = FaceRecord {
            person: Some("p1".into()),
            not_person: Some("p1".into()),
            user_person: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(g.effective_person(), None);
        assert!(lib.faces(&doc, Some("zz")).unwrap().is_empty());
    }

    #[test]
    fn malformed_entries_are_skipped_not_fatal() {
        let mut lib = Library::new(&[3; 16]);
        let doc = DocId::ml("u", "2024-05").unwrap();
        let mut bad = JsonMap::new();
        bad.insert("faces".into(), "many".into());
        let good = fields(&MlMark {
            faces: 1,
            ..Default::default()
        });
        lib.merge_entries(&doc, &[("a/x".into(), bad), ("a/y".into(), good)])
            .unwrap();
        let marks = lib.ml_marks(&doc).unwrap();
        assert_eq!(marks.len(), 1);
        assert_eq!(marks[0].0, "y");
    }

    #[test]
    fn merged_people_resolve_and_cycles_end() {
        let mut lib = Library::new(&[3; 16]);
        let doc = DocId::people("u").unwrap();
        let merged = |to: &str| {
            fields(&PersonRecord {
                merged_into: Some(to.into()),
                ..Default::default()
            })
        };
        lib.merge_entries(
            &doc,
            &[
                ("p/a".into(), merged("b")),
                ("p/b".into(), merged("c")),
                ("p/x".into(), merged("y")),
                ("p/y".into(), merged("x")),
            ],
        )
        .unwrap();
        assert_eq!(lib.resolve_person("u", "a").unwrap(), "c");
        assert_eq!(lib.resolve_person("u", "q").unwrap(), "q");
        let r = lib.resolve_person("u", "x").unwrap();
        assert!(r == "x" || r == "y");
        assert_eq!(lib.people("u").unwrap().len(), 4);
    }
}
