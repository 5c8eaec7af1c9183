//! Albums: each album is its own document (`a/<id>`), so that its owner and every member's
//! devices can sync it without seeing anything else of each other's catalogues.
//!
//! Entries (root-level maps, written with [`Library::merge_entries`]):
//! - `meta`: `name`, `description`, `owner` (user id), `created_at`, `updated_at`, `cover`
//!   (asset id), `order` (`asc` | `desc`), `activity` (comments and likes enabled);
//! - `m/<user>`: a member: `role` (`editor` | `viewer`), `added_at`;
//! - `x/<asset>`: an asset in the album: `owner` (whose library holds it), `added_by`,
//!   `added_at`;
//! - `c/<id>`: an activity: `kind` (`comment` | `like`), `user`, `asset` (absent: the whole
//!   album), `comment`, `at`. Written by any member while activity is enabled; merged by the
//!   CRDT like everything else.
//!
//! [`Library::album_role`] and [`Library::access_for`] are the one place that decides who may
//! read or write which document; the HTTP layer and the iroh protocols both ask them.

use std::collections::BTreeMap;

use serde_json::{json, Value as Json};

use crate::library::Fields;
use crate::sync::Access;
use crate::{DocId, Library, LibraryError};

const META: &str = "meta";
const MEMBER: &str = "m/";
const ASSET: &str = "x/";
const ACTIVITY: &str = "c/";

/// What a user is to an album.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlbumRole {
    Viewer,
    Editor,
    Owner,
}

impl AlbumRole {
    /// Immich's name for a member's role.
    pub fn as_str(self) -> &'static str {
        match self {
            AlbumRole::Viewer => "viewer",
            AlbumRole::Editor => "editor",
            AlbumRole::Owner => "owner",
        }
    }

    /// A member's role from its name (`owner` is not a member role).
    pub fn member(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(AlbumRole::Viewer),
            "editor" => Some(AlbumRole::Editor),
            _ => None,
        }
    }
}

/// An asset in an album.
#[derive(Debug, Clone, PartialEq)]
pub struct AlbumItem {
    pub asset: String,
    /// The user whose library holds the asset (an editor's own photo stays theirs).
    pub owner: String,
    pub added_by: String,
    pub added_at: String,
}

/// A comment or a like on an album or one of its photos.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    pub id: String,
    pub kind: String,
    pub user: String,
    pub asset: Option<String>,
    pub comment: Option<String>,
    pub at: String,
}

/// An album as read from its document.
#[derive(Debug, Clone, PartialEq)]
pub struct AlbumView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub owner: String,
    pub created_at: String,
    pub updated_at: String,
    pub cover: Option<String>,
    pub order: String,
    pub activity: bool,
    /// Members other than the owner, with their roles.
    pub members: BTreeMap<String, AlbumRole>,
    pub items: Vec<AlbumItem>,
    /// Deleted by its owner: listed nowhere and grants no access to photos, but still synced
    /// to its members' devices so that they drop it too.
    pub deleted: bool,
}

impl AlbumView {
    /// What `user` is to this album, if anything.
    pub fn role_of(&self, user: &str) -> Option<AlbumRole> {
        if self.owner == user {
            Some(AlbumRole::Owner)
        } else {
            self.members.get(user).copied()
        }
    }
}

fn s(f: &Fields, k: &str) -> String {
    f.get(k)
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn obj(v: Json) -> Fields {
    match v {
        Json::Object(m) => m,
        _ => Fields::new(),
    }
}

impl Library {
    /// Creates an album document owned by `owner` (`id`: 32 random hex digits chosen by the
    /// caller; `now`: RFC 3339).
    pub fn create_album(
        &mut self,
        id: &str,
        owner: &str,
        name: &str,
        description: &str,
        now: &str,
    ) -> Result<DocId, LibraryError> {
        let doc = DocId::album(id)?;
        let meta = obj(json!({
            "name": name, "description": description, "owner": owner,
            "created_at": now, "updated_at": now, "order": "desc", "activity": true,
        }));
        self.merge_entries(&doc, &[(META.to_owned(), meta)])?;
        Ok(doc)
    }

    /// An album, if its document exists, has an owner and was not deleted.
    pub fn album(&self, doc: &DocId) -> Result<Option<AlbumView>, LibraryError> {
        Ok(self.read_album(doc)?.filter(|a| !a.deleted))
    }

    /// An album including a deleted one.
    fn read_album(&self, doc: &DocId) -> Result<Option<AlbumView>, LibraryError> {
        let Some(id) = doc.album_id() else {
            return Ok(None);
        };
        let Some(meta) = self.entry(doc, META)? else {
            return Ok(None);
        };
        let owner = s(&meta, "owner");
        if owner.is_empty() {
            return Ok(None);
        }
        let mut members = BTreeMap::new();
        for (k, f) in self.entries(doc, MEMBER)? {
            let user = &k[MEMBER.len()..];
            if let Some(role) = AlbumRole::member(&s(&f, "role")) {
                if user != owner {
                    members.insert(user.to_owned(), role);
                }
            }
        }
        let mut items: Vec<AlbumItem> = self
            .entries(doc, ASSET)?
            .into_iter()
            .map(|(k, f)| AlbumItem {
                asset: k[ASSET.len()..].to_owned(),
                owner: s(&f, "owner"),
                added_by: s(&f, "added_by"),
                added_at: s(&f, "added_at"),
            })
            .collect();
        items.sort_by(|a, b| a.added_at.cmp(&b.added_at).then(a.asset.cmp(&b.asset)));
        Ok(Some(AlbumView {
            id: id.to_owned(),
            name: s(&meta, "name"),
            description: s(&meta, "description"),
            owner,
            created_at: s(&meta, "created_at"),
            updated_at: s(&meta, "updated_at"),
            cover: meta
                .get("cover")
                .and_then(Json::as_str)
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
            order: meta
                .get("order")
                .and_then(Json::as_str)
                .unwrap_or("desc")
                .to_owned(),
            activity: meta.get("activity").and_then(Json::as_bool).unwrap_or(true),
            members,
            items,
            deleted: meta.get("deleted").and_then(Json::as_bool) == Some(true),
        }))
    }

    /// Every album `user` owns or is a member of, newest first.
    pub fn albums_of(&self, user: &str) -> Result<Vec<AlbumView>, LibraryError> {
        let docs: Vec<DocId> = self
            .ids()
            .filter(|d| d.album_id().is_some())
            .cloned()
            .collect();
        let mut out = Vec::new();
        for d in docs {
            if let Some(a) = self.album(&d)? {
                if a.role_of(user).is_some() {
                    out.push(a);
                }
            }
        }
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// What `user` is to the album `doc`.
    /// A deleted album keeps its roles (its members' devices still sync the deletion).
    pub fn album_role(&self, doc: &DocId, user: &str) -> Result<Option<AlbumRole>, LibraryError> {
        Ok(self.read_album(doc)?.and_then(|a| a.role_of(user)))
    }

    /// Changes the album's description fields (`None`: unchanged; a `null` JSON value clears).
    pub fn update_album_meta(
        &mut self,
        doc: &DocId,
        fields: Fields,
        now: &str,
    ) -> Result<bool, LibraryError> {
        let mut f = fields;
        f.insert("updated_at".into(), Json::String(now.to_owned()));
        // The owner is set at creation and never changes here.
        f.remove("owner");
        self.merge_entries(doc, &[(META.to_owned(), f)])
    }

    /// Deletes an album for everyone (a tombstone that syncs like any change; the photos in
    /// it are untouched, they belong to their owners' libraries).
    pub fn delete_album(&mut self, doc: &DocId, now: &str) -> Result<bool, LibraryError> {
        let f = obj(json!({"deleted": true, "updated_at": now}));
        self.merge_entries(doc, &[(META.to_owned(), f)])
    }

    /// Adds assets (`(asset, owner)`) to an album; returns those that were not in it yet.
    pub fn add_album_items(
        &mut self,
        doc: &DocId,
        items: &[(String, String)],
        added_by: &str,
        now: &str,
    ) -> Result<Vec<String>, LibraryError> {
        let present: std::collections::BTreeSet<String> = self
            .entries(doc, ASSET)?
            .into_iter()
            .map(|(k, _)| k[ASSET.len()..].to_owned())
            .collect();
        let mut added = Vec::new();
        let mut entries = Vec::new();
        for (asset, owner) in items {
            if present.contains(asset) || added.contains(asset) {
                continue;
            }
            entries.push((
                format!("{ASSET}{asset}"),
                obj(json!({"owner": owner, "added_by": added_by, "added_at": now})),
            ));
            added.push(asset.clone());
        }
        if !entries.is_empty() {
            entries.push((META.to_owned(), obj(json!({"updated_at": now}))));
            self.merge_entries(doc, &entries)?;
        }
        Ok(added)
    }

    /// Removes assets from an album; returns those that were in it.
    pub fn remove_album_items(
        &mut self,
        doc: &DocId,
        assets: &[String],
        now: &str,
    ) -> Result<Vec<String>, LibraryError> {
        let mut removed = Vec::new();
        for a in assets {
            if self.entry(doc, &format!("{ASSET}{a}"))?.is_some() && !removed.contains(a) {
                removed.push(a.clone());
            }
        }
        if !removed.is_empty() {
            let keys: Vec<String> = removed.iter().map(|a| format!("{ASSET}{a}")).collect();
            self.remove_entries(doc, &keys)?;
            self.merge_entries(doc, &[(META.to_owned(), obj(json!({"updated_at": now})))])?;
        }
        Ok(removed)
    }

    /// Adds a member or changes their role.
    pub fn set_album_member(
        &mut self,
        doc: &DocId,
        user: &str,
        role: AlbumRole,
        now: &str,
    ) -> Result<bool, LibraryError> {
        let f = obj(json!({"role": role.as_str(), "added_at": now}));
        self.merge_entries(doc, &[(format!("{MEMBER}{user}"), f)])
    }

    /// Removes a member.
    pub fn remove_album_member(&mut self, doc: &DocId, user: &str) -> Result<bool, LibraryError> {
        self.remove_entries(doc, &[format!("{MEMBER}{user}")])
    }

    /// The album's comments and likes, oldest first.
    pub fn activities(&self, doc: &DocId) -> Result<Vec<Activity>, LibraryError> {
        let mut out: Vec<Activity> = self
            .entries(doc, ACTIVITY)?
            .into_iter()
            .map(|(k, f)| Activity {
                id: k[ACTIVITY.len()..].to_owned(),
                kind: s(&f, "kind"),
                user: s(&f, "user"),
                asset: f.get("asset").and_then(Json::as_str).map(str::to_owned),
                comment: f.get("comment").and_then(Json::as_str).map(str::to_owned),
                at: s(&f, "at"),
            })
            .filter(|a| a.kind == "comment" || a.kind == "like")
            .collect();
        out.sort_by(|a, b| a.at.cmp(&b.at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Records a comment or a like (`id`: unique, chosen by the caller).
    pub fn add_activity(&mut self, doc: &DocId, a: &Activity) -> Result<bool, LibraryError> {
        let mut f = obj(json!({"kind": a.kind, "user": a.user, "at": a.at}));
        if let Some(x) = &a.asset {
            f.insert("asset".into(), json!(x));
        }
        if let Some(c) = &a.comment {
            f.insert("comment".into(), json!(c));
        }
        self.merge_entries(doc, &[(format!("{ACTIVITY}{}", a.id), f)])
    }

    /// Deletes a comment or a like.
    pub fn remove_activity(&mut self, doc: &DocId, id: &str) -> Result<bool, LibraryError> {
        self.remove_entries(doc, &[format!("{ACTIVITY}{id}")])
    }

    /// The owner of `asset` if `user` may see it through an album they own or are a member of
    /// (another member's photo added to a shared album).
    pub fn shared_asset_owner(
        &self,
        user: &str,
        asset: &str,
    ) -> Result<Option<String>, LibraryError> {
        for a in self.albums_of(user)? {
            if let Some(i) = a.items.iter().find(|i| i.asset == asset) {
                if !i.owner.is_empty() {
                    return Ok(Some(i.owner.clone()));
                }
            }
        }
        Ok(None)
    }

    /// What a user's device may do with a document, over any transport: their own catalogue
    /// documents are theirs to write; an album they own is theirs to write; to an album they
    /// are a member of they contribute what their role allows ([`check_contribution`]: an
    /// editor their own photos, everyone comments and likes); a partner's shared months are
    /// read-only; anything else (other users, the household) is closed.
    pub fn access_for(&self, user: &str, doc: &DocId) -> Access {
        if doc.is_household() {
            return Access::None;
        }
        if doc.album_id().is_some() {
            return match self.read_album(doc) {
                Ok(Some(a)) => match a.role_of(user) {
                    Some(AlbumRole::Owner) => Access::Write,
                    Some(_) => Access::Contribute,
                    None => Access::None,
                },
                // Not an album yet: a device may create it, as its owner (offline too).
                Ok(None) => Access::Contribute,
                Err(_) => Access::None,
            };
        }
        if !user.is_empty() && doc.user() == user {
            return Access::Write;
        }
        // A partner's shared months, read-only.
        match doc.month() {
            Some(month) if self.partner_covers(doc.user(), user, month) => Access::Read,
            _ => Access::None,
        }
    }

    /// [`Library::access_for`] for every document, computed once (to decide while the library
    /// is being changed by a sync message).
    pub fn access_view(&self, user: &str) -> AccessView {
        let albums = self
            .ids()
            .filter(|d| d.album_id().is_some())
            .map(|d| (d.clone(), self.access_for(user, d)))
            .collect();
        // Album documents without an owner yet: a device is creating them (its first sync
        // messages arrived before its changes). Only that device's session syncs them.
        let unclaimed = self
            .ids()
            .filter(|d| d.album_id().is_some())
            .filter(|d| matches!(self.read_album(d), Ok(None)))
            .cloned()
            .collect();
        let partners = self
            .shared_with(user)
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s.sharer.clone(), s))
            .collect();
        AccessView {
            user: user.to_owned(),
            albums,
            partners,
            unclaimed,
        }
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn field<'a>(f: &'a Option<Fields>, k: &str) -> &'a str {
    f.as_ref()
        .and_then(|f| f.get(k))
        .and_then(Json::as_str)
        .unwrap_or_default()
}

/// Whether `user`'s change to an album document (`before` → `after`) stays within their role,
/// judged on the documents' content (not on how the change was made):
/// - an editor adds photos of their own library (`x/<asset>` with `owner` and `added_by` =
///   them) and removes photos they added;
/// - any member adds comments and likes as themselves while activity is enabled, and removes
///   their own;
/// - nothing else: not the name, cover, members or anyone else's entries. The owner writes
///   freely ([`Access::Write`]) and is not checked here.
pub fn check_contribution(
    user: &str,
    before: &automerge::AutoCommit,
    after: &automerge::AutoCommit,
) -> Result<(), String> {
    let b = crate::library::root_entries(before);
    let a = crate::library::root_entries(after);
    let Some(Some(meta)) = b.get(META).cloned() else {
        // A new album: whoever creates it must be its owner.
        let created = a.get(META).cloned().flatten().unwrap_or_default();
        return if s(&created, "owner") == user && !user.is_empty() {
            Ok(())
        } else {
            Err(format!("a new album must be owned by its creator ({user})"))
        };
    };
    let role = if s(&meta, "owner") == user {
        None
    } else {
        b.get(&format!("{MEMBER}{user}"))
            .map(|m| field(m, "role"))
            .and_then(AlbumRole::member)
    };
    let Some(role) = role else {
        return Err(format!("{user} is not a member of this album"));
    };
    if meta.get("deleted").and_then(Json::as_bool) == Some(true) {
        return Err("the album was deleted".into());
    }
    let activity = meta.get("activity").and_then(Json::as_bool).unwrap_or(true);
    let keys: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    for k in keys {
        let (old, new) = (b.get(k), a.get(k));
        if old == new {
            continue;
        }
        let ok = match (old, new) {
            // Adding or removing photos moves the album's `updated_at`, nothing else of it.
            (Some(Some(o)), Some(Some(n))) if k == META => {
                let strip = |f: &Fields| {
                    let mut f = f.clone();
                    f.remove("updated_at");
                    f
                };
                strip(o) == strip(n)
            }
            (None, Some(e @ Some(_))) => {
                if let Some(asset) = k.strip_prefix(ASSET) {
                    role == AlbumRole::Editor
                        && is_hex64(asset)
                        && field(e, "owner") == user
                        && field(e, "added_by") == user
                } else if let Some(id) = k.strip_prefix(ACTIVITY) {
                    activity
                        && !id.is_empty()
                        && id.len() <= 64
                        && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                        && field(e, "user") == user
                        && matches!(field(e, "kind"), "comment" | "like")
                        && field(e, "comment").len() <= 10_000
                } else {
                    false
                }
            }
            (Some(e @ Some(_)), None) => {
                if k.starts_with(ASSET) {
                    role == AlbumRole::Editor && field(e, "added_by") == user
                } else if k.starts_with(ACTIVITY) {
                    field(e, "user") == user
                } else {
                    false
                }
            }
            _ => false,
        };
        if !ok {
            return Err(format!(
                "a{} {} may not make this change to {k:?}",
                if role == AlbumRole::Editor { "n" } else { "" },
                role.as_str()
            ));
        }
    }
    Ok(())
}

/// A snapshot of what one user's devices may do (see [`Library::access_view`]).
#[derive(Debug, Clone)]
pub struct AccessView {
    user: String,
    albums: BTreeMap<DocId, Access>,
    partners: BTreeMap<String, crate::PartnerShare>,
    unclaimed: std::collections::BTreeSet<DocId>,
}

impl AccessView {
    pub fn access(&self, doc: &DocId) -> Access {
        if doc.is_household() {
            Access::None
        } else if doc.album_id().is_some() {
            // An album not known yet may be created by this user's device, as its owner
            // (checked by [`check_contribution`]).
            self.albums.get(doc).copied().unwrap_or(Access::Contribute)
        } else if doc.user() == self.user {
            Access::Write
        } else {
            match (self.partners.get(doc.user()), doc.month()) {
                (Some(share), Some(month)) if share.covers_month(month) => Access::Read,
                _ => Access::None,
            }
        }
    }

    /// The documents the node offers this user's devices (an album being created is synced
    /// only with the session that mentioned it: see [`AccessView::syncs`]).
    pub fn covers(&self, doc: &DocId) -> bool {
        self.access(doc) != Access::None && !self.unclaimed.contains(doc)
    }

    /// The documents to sync with one session of this user: what [`AccessView::covers`], and
    /// what the session itself asked about and may see (an album it is creating).
    pub fn syncs(&self, doc: &DocId, session: &crate::PeerSync) -> bool {
        self.covers(doc) || (session.knows(doc) && self.access(doc) != Access::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn roles_decide_access_and_items_keep_their_owner() {
        let mut lib = Library::new(&[1; 16]);
        let doc = lib
            .create_album(A, "mum", "Holiday", "", "2024-01-01T00:00:00Z")
            .unwrap();
        lib.set_album_member(&doc, "kid", AlbumRole::Editor, "t")
            .unwrap();
        lib.set_album_member(&doc, "gran", AlbumRole::Viewer, "t")
            .unwrap();
        let added = lib
            .add_album_items(
                &doc,
                &[("p1".into(), "mum".into()), ("p2".into(), "kid".into())],
                "kid",
                "t2",
            )
            .unwrap();
        assert_eq!(added, ["p1", "p2"]);
        // Adding again adds nothing.
        assert!(lib
            .add_album_items(&doc, &[("p1".into(), "mum".into())], "mum", "t3")
            .unwrap()
            .is_empty());
        let a = lib.album(&doc).unwrap().unwrap();
        assert_eq!(
            (a.name.as_str(), a.owner.as_str(), a.items.len()),
            ("Holiday", "mum", 2)
        );
        assert_eq!(lib.access_for("mum", &doc), Access::Write);
        assert_eq!(lib.access_for("kid", &doc), Access::Contribute);
        assert_eq!(lib.access_for("gran", &doc), Access::Contribute);
        assert_eq!(lib.access_for("stranger", &doc), Access::None);
        assert_eq!(lib.access_for("mum", &DocId::household()), Access::None);
        assert_eq!(
            lib.access_for("kid", &DocId::root("mum").unwrap()),
            Access::None
        );
        assert_eq!(
            lib.shared_asset_owner("gran", "p2").unwrap().as_deref(),
            Some("kid")
        );
        assert_eq!(lib.shared_asset_owner("stranger", "p2").unwrap(), None);
        assert_eq!(lib.albums_of("gran").unwrap().len(), 1);
        // A removed member loses everything at once.
        lib.remove_album_member(&doc, "gran").unwrap();
        assert_eq!(lib.access_for("gran", &doc), Access::None);
        assert_eq!(lib.shared_asset_owner("gran", "p2").unwrap(), None);
        let view = lib.access_view("kid");
        assert!(view.covers(&doc));
        assert!(!lib.access_view("gran").covers(&doc));
        let removed = lib
            .remove_album_items(&doc, &["p1".into(), "nope".into()], "t4")
            .unwrap();
        assert_eq!(removed, ["p1"]);
        let like = Activity {
            id: "l1".into(),
            kind: "like".into(),
            user: "kid".into(),
            asset: Some("p2".into()),
            comment: None,
            at: "t4".into(),
        };
        lib.add_activity(&doc, &like).unwrap();
        assert_eq!(lib.activities(&doc).unwrap(), vec![like]);
        lib.remove_activity(&doc, "l1").unwrap();
        assert!(lib.activities(&doc).unwrap().is_empty());
        lib.delete_album(&doc, "t5").unwrap();
        assert!(lib.album(&doc).unwrap().is_none());
        // The owner's devices still sync the deletion; the album shows nowhere.
        assert_eq!(lib.access_for("mum", &doc), Access::Write);
        assert_eq!(lib.shared_asset_owner("kid", "p2").unwrap(), None);
        assert!(lib.albums_of("mum").unwrap().is_empty());
    }

    const P1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const P2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    /// The node's side of an album over sync: every member's device sends its own changes;
    /// the node accepts exactly what the member's role allows.
    #[test]
    fn members_contribute_within_their_role_and_nothing_else_spreads() {
        use crate::{PeerSync, SyncError};
        let mut node = Library::new(&[1; 16]);
        let doc = node
            .create_album(A, "mum", "Holiday", "", "2024-01-01T00:00:00Z")
            .unwrap();
        node.set_album_member(&doc, "kid", AlbumRole::Editor, "t")
            .unwrap();
        node.set_album_member(&doc, "gran", AlbumRole::Viewer, "t")
            .unwrap();
        // Each member's device gets the album, then changes it offline and syncs up.
        let attempt = |node: &mut Library,
                       user: &str,
                       actor: u8,
                       change: &dyn Fn(&mut Library)|
         -> Result<Vec<DocId>, SyncError> {
            let mut dev = Library::new(&[actor; 16]);
            let (mut ns, mut ds) = (PeerSync::new(), PeerSync::new());
            for _ in 0..6 {
                let ids: Vec<DocId> = node.ids().cloned().collect();
                let down = ns.generate(node, &ids);
                ds.receive(&mut dev, down, |_| true).unwrap();
                let ids: Vec<DocId> = dev.ids().cloned().collect();
                let up = ds.generate(&mut dev, &ids);
                ns.receive(node, up, |_| Access::Read).unwrap();
            }
            change(&mut dev);
            // A few rounds (a new document's changes follow the first exchange of heads).
            let mut changed = Vec::new();
            for _ in 0..4 {
                let ids: Vec<DocId> = dev.ids().cloned().collect();
                let up = ds.generate(&mut dev, &ids);
                let view = node.access_view(user);
                changed.extend(ns.receive_checked(
                    node,
                    up,
                    |d| view.access(d),
                    |_, b, a| check_contribution(user, b, a),
                )?);
                let view = node.access_view(user);
                let ids: Vec<DocId> = node.ids().filter(|d| view.syncs(d, &ns)).cloned().collect();
                let down = ns.generate(node, &ids);
                ds.receive(&mut dev, down, |_| true).unwrap();
            }
            changed.dedup();
            Ok(changed)
        };
        let comment = |user: &str, id: &str| Activity {
            id: id.into(),
            kind: "comment".into(),
            user: user.into(),
            asset: None,
            comment: Some("lovely".into()),
            at: "t9".into(),
        };
        // The editor adds their own photo and comments: accepted.
        let ok = attempt(&mut node, "kid", 2, &|dev| {
            dev.add_album_items(&doc, &[(P1.into(), "kid".into())], "kid", "t2")
                .unwrap();
            dev.add_activity(&doc, &comment("kid", "c1")).unwrap();
        });
        assert_eq!(ok.unwrap(), vec![doc.clone()]);
        let a = node.album(&doc).unwrap().unwrap();
        assert_eq!(a.items.len(), 1);
        assert_eq!(node.activities(&doc).unwrap().len(), 1);
        // The viewer comments: accepted.
        attempt(&mut node, "gran", 3, &|dev| {
            dev.add_activity(&doc, &comment("gran", "c2")).unwrap();
        })
        .unwrap();
        assert_eq!(node.activities(&doc).unwrap().len(), 2);
        let heads = node.heads(&doc);
        // Everything else is refused and changes nothing.
        type Change<'a> = Box<dyn Fn(&mut Library) + 'a>;
        let refused: Vec<(&str, Change)> = vec![
            (
                "gran",
                Box::new(|dev: &mut Library| {
                    dev.add_album_items(&doc, &[(P2.into(), "gran".into())], "gran", "t")
                        .unwrap();
                }),
            ),
            (
                "kid",
                Box::new(|dev: &mut Library| {
                    let mut f = Fields::new();
                    f.insert("name".into(), Json::String("Mine now".into()));
                    dev.update_album_meta(&doc, f, "t").unwrap();
                }),
            ),
            (
                "kid",
                Box::new(|dev: &mut Library| {
                    dev.set_album_member(&doc, "stranger", AlbumRole::Editor, "t")
                        .unwrap();
                }),
            ),
            (
                "kid",
                Box::new(|dev: &mut Library| {
                    // Someone else's photo, claimed as the editor's.
                    dev.add_album_items(&doc, &[(P2.into(), "mum".into())], "kid", "t")
                        .unwrap();
                }),
            ),
            (
                "gran",
                Box::new(|dev: &mut Library| {
                    dev.remove_activity(&doc, "c1").unwrap();
                }),
            ),
            (
                "gran",
                Box::new(|dev: &mut Library| {
                    dev.add_activity(&doc, &comment("kid", "c3")).unwrap();
                }),
            ),
            (
                "kid",
                Box::new(|dev: &mut Library| {
                    dev.delete_album(&doc, "t").unwrap();
                }),
            ),
        ];
        for (i, (user, change)) in refused.iter().enumerate() {
            let r = attempt(&mut node, user, 10 + i as u8, change.as_ref());
            assert!(
                matches!(r, Err(SyncError::Refused { .. })),
                "case {i}: {r:?}"
            );
            assert_eq!(node.heads(&doc), heads, "case {i}");
        }
        // An album made offline on a device is accepted as that device's user's own…
        const B: &str = "fedcba9876543210fedcba9876543210";
        let new_doc = DocId::album(B).unwrap();
        let made = attempt(&mut node, "gran", 20, &|dev| {
            dev.create_album(B, "gran", "Gran's", "", "t").unwrap();
        });
        assert_eq!(made.unwrap(), vec![new_doc.clone()]);
        assert_eq!(node.access_for("gran", &new_doc), Access::Write);
        // …but not in someone else's name.
        const C: &str = "00000000000000000000000000000001";
        let forged = attempt(&mut node, "gran", 21, &|dev| {
            dev.create_album(C, "mum", "Mum's?", "", "t").unwrap();
        });
        assert!(
            matches!(forged, Err(SyncError::Refused { .. })),
            "{forged:?}"
        );
        // A removed member's messages are ignored and they are told to drop the album.
        node.remove_album_member(&doc, "gran").unwrap();
        let mut dev = Library::new(&[40; 16]);
        let (mut ns, mut ds) = (PeerSync::new(), PeerSync::new());
        let down = ns.generate(&mut node, std::slice::from_ref(&doc));
        ds.receive(&mut dev, down, |_| true).unwrap();
        let up = ds.generate(&mut dev, std::slice::from_ref(&doc));
        let view = node.access_view("gran");
        assert!(ns
            .receive(&mut node, up, |d| view.access(d))
            .unwrap()
            .is_empty());
        assert_eq!(ns.take_dropped(|d| view.covers(d)), vec![doc.clone()]);
        // A live session of a member removed between rounds is told too.
        let mut ks = PeerSync::new();
        ks.generate(&mut node, std::slice::from_ref(&doc));
        assert!(ks
            .take_dropped(|d| node.access_view("kid").covers(d))
            .is_empty());
        node.remove_album_member(&doc, "kid").unwrap();
        let view = node.access_view("kid");
        assert_eq!(ks.take_dropped(|d| view.covers(d)), vec![doc.clone()]);
    }

    #[test]
    fn album_ids_are_validated() {
        assert!(DocId::album(A).is_ok());
        assert!(DocId::album("../x").is_err());
        assert!(DocId::parse("a/ABCDEF0123456789abcdef0123456789").is_err());
        let d = DocId::album(A).unwrap();
        assert_eq!(d.user(), "");
        assert_eq!(DocId::from_file_stem(&d.file_stem()).unwrap(), d);
    }
}
