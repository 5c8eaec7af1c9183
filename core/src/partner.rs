//! Partner sharing: "share my whole library with my partner", optionally only from a month on.
//!
//! Stored in the catalogue, so a device can share (or stop sharing) offline and the decision
//! syncs like any other change:
//! - the sharer's root document holds `partner/<partner>`: `since` (`YYYY-MM`, empty: from the
//!   beginning; undated photos are shared only then), `added_at`;
//! - the partner's root document holds `partnerview/<sharer>`: `in_timeline` (whether the
//!   partner shows those photos in their own timeline — their choice, not the sharer's).
//!
//! A partner's devices sync the sharer's month documents that the share covers, read-only
//! ([`crate::Library::access_for`]); nothing else of the sharer's (not their root, ML or people
//! documents). The share is by month document, so that a device never holds a record it may not
//! see: a share "from 2023-05" covers every photo taken in May 2023 or later.

use serde_json::{json, Value as Json};

use crate::library::Fields;
use crate::{DocId, Library, LibraryError};

const SHARE: &str = "partner/";
const VIEW: &str = "partnerview/";

/// One user's library shared with another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerShare {
    pub sharer: String,
    pub partner: String,
    /// First month shared (`YYYY-MM`); `None`: everything, undated photos too.
    pub since: Option<String>,
    pub added_at: String,
}

impl PartnerShare {
    /// Whether the share covers a month document's month (`YYYY-MM` or `undated`).
    pub fn covers_month(&self, month: &str) -> bool {
        match &self.since {
            None => true,
            Some(_) if month == "undated" => false,
            Some(since) => month >= since.as_str(),
        }
    }
}

/// Whether `s` is a valid `since` month.
pub fn valid_since(s: &str) -> bool {
    DocId::shard("x", s).is_ok() && s != "undated"
}

fn share_of(sharer: &str, partner: &str, f: &Fields) -> PartnerShare {
    let since = f
        .get("since")
        .and_then(Json::as_str)
        .filter(|s| valid_since(s))
        .map(str::to_owned);
    PartnerShare {
        sharer: sharer.to_owned(),
        partner: partner.to_owned(),
        since,
        added_at: f
            .get("added_at")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned(),
    }
}

impl Library {
    /// The users `sharer` shares their library with.
    pub fn partners_of(&self, sharer: &str) -> Result<Vec<PartnerShare>, LibraryError> {
        let root = DocId::root(sharer)?;
        if !self.contains(&root) {
            return Ok(Vec::new());
        }
        Ok(self
            .entries(&root, SHARE)?
            .into_iter()
            .map(|(k, f)| share_of(sharer, &k[SHARE.len()..], &f))
            .filter(|s| !s.partner.is_empty() && s.partner != sharer)
            .collect())
    }

    /// The share of `sharer`'s library with `partner`, if any.
    pub fn partner_share(
        &self,
        sharer: &str,
        partner: &str,
    ) -> Result<Option<PartnerShare>, LibraryError> {
        if sharer == partner || sharer.is_empty() || partner.is_empty() {
            return Ok(None);
        }
        let Ok(root) = DocId::root(sharer) else {
            return Ok(None);
        };
        if !self.contains(&root) {
            return Ok(None);
        }
        Ok(self
            .entry(&root, &format!("{SHARE}{partner}"))?
            .map(|f| share_of(sharer, partner, &f)))
    }

    /// Every share with `partner` (whose libraries they may see).
    pub fn shared_with(&self, partner: &str) -> Result<Vec<PartnerShare>, LibraryError> {
        let sharers: Vec<String> = self
            .ids()
            .filter(|d| d.as_str().ends_with("/root"))
            .map(|d| d.user().to_owned())
            .filter(|u| u != partner)
            .collect();
        let mut out = Vec::new();
        for s in sharers {
            if let Some(share) = self.partner_share(&s, partner)? {
                out.push(share);
            }
        }
        Ok(out)
    }

    /// Shares `sharer`'s library with `partner` (from `since` on), or changes the month.
    pub fn set_partner(
        &mut self,
        sharer: &str,
        partner: &str,
        since: Option<&str>,
        now: &str,
    ) -> Result<bool, LibraryError> {
        if let Some(s) = since {
            if !valid_since(s) {
                return Err(LibraryError::Invalid(format!(
                    "since must be a month YYYY-MM, not {s:?}"
                )));
            }
        }
        if sharer == partner {
            return Err(LibraryError::Invalid(
                "a library cannot be shared with its own owner".into(),
            ));
        }
        let root = DocId::root(sharer)?;
        let key = format!("{SHARE}{partner}");
        let added = self
            .entry(&root, &key)?
            .and_then(|f| f.get("added_at").and_then(Json::as_str).map(str::to_owned))
            .unwrap_or_else(|| now.to_owned());
        let f = match json!({"since": since.unwrap_or(""), "added_at": added}) {
            Json::Object(m) => m,
            _ => Fields::new(),
        };
        self.merge_entries(&root, &[(key, f)])
    }

    /// Stops sharing `sharer`'s library with `partner`.
    pub fn remove_partner(&mut self, sharer: &str, partner: &str) -> Result<bool, LibraryError> {
        let root = DocId::root(sharer)?;
        self.remove_entries(&root, &[format!("{SHARE}{partner}")])
    }

    /// Whether `partner` shows `sharer`'s shared photos in their timeline.
    pub fn partner_in_timeline(&self, partner: &str, sharer: &str) -> bool {
        DocId::root(partner)
            .ok()
            .filter(|r| self.contains(r))
            .and_then(|r| self.entry(&r, &format!("{VIEW}{sharer}")).ok().flatten())
            .and_then(|f| f.get("in_timeline").and_then(Json::as_bool))
            .unwrap_or(false)
    }

    /// `partner`'s choice to show (or not) `sharer`'s photos in their timeline.
    pub fn set_partner_in_timeline(
        &mut self,
        partner: &str,
        sharer: &str,
        on: bool,
    ) -> Result<bool, LibraryError> {
        let root = DocId::root(partner)?;
        let mut f = Fields::new();
        f.insert("in_timeline".into(), Json::Bool(on));
        self.merge_entries(&root, &[(format!("{VIEW}{sharer}"), f)])
    }

    /// Whether `viewer` may see `owner`'s photos of `month` through a partner share.
    pub fn partner_covers(&self, owner: &str, viewer: &str, month: &str) -> bool {
        self.partner_share(owner, viewer)
            .ok()
            .flatten()
            .is_some_and(|s| s.covers_month(month))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::Access;
    use crate::AssetRecord;

    fn rec(id: &str, date: Option<&str>) -> AssetRecord {
        AssetRecord {
            id: id.into(),
            taken_at: date.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn a_share_opens_exactly_the_covered_months_read_only() {
        let mut lib = Library::new(&[1; 16]);
        lib.upsert_assets(
            "mum",
            &[
                rec("p1", Some("2022-12-24T10:00:00Z")),
                rec("p2", Some("2023-06-01T10:00:00Z")),
                rec("p3", None),
            ],
        )
        .unwrap();
        let dec = DocId::shard("mum", "2022-12").unwrap();
        let jun = DocId::shard("mum", "2023-06").unwrap();
        let undated = DocId::shard("mum", "undated").unwrap();
        let root = DocId::root("mum").unwrap();
        assert_eq!(lib.access_for("dad", &jun), Access::None);
        lib.set_partner("mum", "dad", None, "t").unwrap();
        for d in [&dec, &jun, &undated] {
            assert_eq!(lib.access_for("dad", d), Access::Read, "{d}");
        }
        // Never the sharer's root, ML or people documents.
        assert_eq!(lib.access_for("dad", &root), Access::None);
        assert_eq!(
            lib.access_for("dad", &DocId::people("mum").unwrap()),
            Access::None
        );
        // The other way round nothing is shared.
        lib.upsert_assets("dad", &[rec("d1", Some("2023-06-02T00:00:00Z"))])
            .unwrap();
        assert_eq!(
            lib.access_for("mum", &DocId::shard("dad", "2023-06").unwrap()),
            Access::None
        );
        // From a month on.
        lib.set_partner("mum", "dad", Some("2023-01"), "t2")
            .unwrap();
        let s = lib.partner_share("mum", "dad").unwrap().unwrap();
        assert_eq!(
            (s.since.as_deref(), s.added_at.as_str()),
            (Some("2023-01"), "t")
        );
        assert_eq!(lib.access_for("dad", &dec), Access::None);
        assert_eq!(lib.access_for("dad", &undated), Access::None);
        assert_eq!(lib.access_for("dad", &jun), Access::Read);
        let view = lib.access_view("dad");
        assert!(view.covers(&jun) && !view.covers(&dec));
        assert!(lib.partner_covers("mum", "dad", "2023-06"));
        assert_eq!(lib.shared_with("dad").unwrap(), vec![s]);
        assert!(lib.set_partner("mum", "dad", Some("2023-13"), "t").is_err());
        assert!(lib.set_partner("mum", "mum", None, "t").is_err());
        // The partner's own choice, in their own root.
        assert!(!lib.partner_in_timeline("dad", "mum"));
        lib.set_partner_in_timeline("dad", "mum", true).unwrap();
        assert!(lib.partner_in_timeline("dad", "mum"));
        // Stopping closes everything at once.
        lib.remove_partner("mum", "dad").unwrap();
        assert_eq!(lib.access_for("dad", &jun), Access::None);
        assert!(!lib.access_view("dad").covers(&jun));
        assert!(lib.partners_of("mum").unwrap().is_empty());
    }
}
