//! The records as the page holds them for every month: [`Item`], only what the timeline, search,
//! memories, duplicates and the ML progress read, in about a fifth of a decoded
//! [`AssetRecord`]'s memory (≈ 1.1 KB each: forty optional fields and a dozen strings). At
//! 300k photos the records the page keeps for every month were most of its memory, and wasm
//! memory never shrinks. The whole record (the viewer's details, an edit) is read from the
//! month's document when asked for ([`crate::catalogue::find_record`]).
//!
//! Strings repeated across the library (cameras, places, types, owners) are interned once per
//! page ([`Sym`]); the per-photo ones (id, dates, file name, thumbhash) are kept as boxed
//! strings.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use tessera_core::dupes::{format_phash, parse_phash};
use tessera_core::memories::Photo;
use tessera_core::search::{Field, Searched};
use tessera_core::AssetRecord;

/// Interned strings: index → string, string → index (index 0 is "none").
type Table = (Vec<Rc<str>>, HashMap<Rc<str>, u32>);

thread_local! {
    static SYMS: RefCell<Table> = RefCell::new((vec![Rc::from("")], HashMap::new()));
}

/// An interned string (0: none). The table only grows, by the distinct values of a few
/// fields (cameras, lenses, places, types, owners): a few thousand strings in a big library.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
struct Sym(u32);

impl Sym {
    fn of(s: Option<&str>) -> Self {
        let Some(s) = s else { return Sym(0) };
        SYMS.with(|t| {
            let mut t = t.borrow_mut();
            if let Some(&i) = t.1.get(s) {
                return Sym(i);
            }
            let rc: Rc<str> = Rc::from(s);
            let i = t.0.len() as u32;
            t.0.push(rc.clone());
            t.1.insert(rc, i);
            Sym(i)
        })
    }

    fn get(self) -> Option<Rc<str>> {
        (self.0 != 0).then(|| SYMS.with(|t| t.borrow().0.get(self.0 as usize).cloned()))?
    }

    /// `f` with the string, borrowed from the table (which `f` must not add to).
    fn with<R>(self, f: impl FnOnce(Option<&str>) -> R) -> R {
        if self.0 == 0 {
            return f(None);
        }
        SYMS.with(|t| f(t.borrow().0.get(self.0 as usize).map(|s| &**s)))
    }

    fn string(self) -> Option<String> {
        self.get().map(|s| s.to_string())
    }
}

thread_local! {
    /// While a month is saved: its own table of the strings its items use (the page's symbols
    /// in order of first use) and the page's symbol → its place in that table.
    static MONTH_TABLE: RefCell<(Vec<Sym>, HashMap<u32, u32>)> = RefCell::new((Vec::new(), HashMap::new()));
}

/// Saved as its place in the month's own string table (0: none; `i` is the table's string
/// `i - 1`), which [`encode_saved`] writes once per month: the page's numbers mean nothing in
/// another page, and a string per field and photo would make the saved months as large as the
/// documents. Read back raw, then mapped through the table by [`decode_saved`].
impl Serialize for Sym {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let at = if self.0 == 0 {
            0
        } else {
            MONTH_TABLE.with(|t| {
                let (table, index) = &mut *t.borrow_mut();
                *index.entry(self.0).or_insert_with(|| {
                    table.push(*self);
                    table.len() as u32
                })
            })
        };
        at.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Sym {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Sym(u32::deserialize(d)?))
    }
}

const FAVORITE: u16 = 1;
const ARCHIVED: u16 = 1 << 1;
const PURGED: u16 = 1 << 2;
const HIDDEN: u16 = 1 << 3;
const LIVE_OF: u16 = 1 << 4;
const MOTION: u16 = 1 << 5;
const PREVIEW: u16 = 1 << 6;
const WIDTH: u16 = 1 << 8;
const HEIGHT: u16 = 1 << 9;
const PHASH: u16 = 1 << 10;
const SIZE: u16 = 1 << 11;
const POSITION: u16 = 1 << 12;
const DURATION: u16 = 1 << 13;

/// Which interned field is where in [`Item::syms`].
const MIME: usize = 0;
const STATUS: usize = 1;
const OWNER: usize = 2;
const MAKE: usize = 3;
const MODEL: usize = 4;
const LENS: usize = 5;
const CITY: usize = 6;
const STATE: usize = 7;
const COUNTRY: usize = 8;
const SOURCE: usize = 9;

/// A photo as the page's lists hold it (see the module's comment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Item {
    pub(crate) id: Arc<str>,
    taken_at: Option<Box<str>>,
    filename: Option<Box<str>>,
    thumbhash: Option<Box<str>>,
    trashed_at: Option<Box<str>>,
    uploaded_at: Option<Box<str>>,
    error: Option<Box<str>>,
    lat: f64,
    lon: f64,
    size: u64,
    phash: u64,
    duration: f32,
    width: u32,
    height: u32,
    syms: [Sym; 10],
    flags: u16,
}

fn boxed(s: &Option<String>) -> Option<Box<str>> {
    s.as_deref().map(Box::from)
}

impl Item {
    pub(crate) fn of(r: &AssetRecord) -> Self {
        let phash = r.phash.as_deref().and_then(parse_phash);
        let mut flags = 0;
        for (on, bit) in [
            (r.favorite == Some(true), FAVORITE),
            (r.archived == Some(true), ARCHIVED),
            (r.purged_at.is_some(), PURGED),
            (r.hidden == Some(true), HIDDEN),
            (r.live_of.is_some(), LIVE_OF),
            (r.motion.is_some(), MOTION),
            (r.preview.is_some(), PREVIEW),
            (r.width.is_some(), WIDTH),
            (r.height.is_some(), HEIGHT),
            (phash.is_some(), PHASH),
            (r.size.is_some(), SIZE),
            (r.lat.is_some() && r.lon.is_some(), POSITION),
            (r.duration.is_some(), DURATION),
        ] {
            if on {
                flags |= bit;
            }
        }
        let mut syms = [Sym(0); 10];
        for (k, v) in [
            (MIME, &r.mime),
            (STATUS, &r.status),
            (OWNER, &r.owner),
            (MAKE, &r.make),
            (MODEL, &r.model),
            (LENS, &r.lens),
            (CITY, &r.city),
            (STATE, &r.state),
            (COUNTRY, &r.country),
            (SOURCE, &r.taken_at_source),
        ] {
            syms[k] = Sym::of(v.as_deref());
        }
        Item {
            id: Arc::from(r.id.as_str()),
            taken_at: boxed(&r.taken_at),
            filename: boxed(&r.filename),
            thumbhash: boxed(&r.thumbhash),
            trashed_at: boxed(&r.trashed_at),
            uploaded_at: boxed(&r.uploaded_at),
            error: boxed(&r.error),
            lat: r.lat.unwrap_or(0.0),
            lon: r.lon.unwrap_or(0.0),
            size: r.size.unwrap_or(0),
            phash: phash.unwrap_or(0),
            duration: r.duration.unwrap_or(0.0) as f32,
            width: r.width.unwrap_or(0),
            height: r.height.unwrap_or(0),
            syms,
            flags,
        }
    }

    fn has(&self, bit: u16) -> bool {
        self.flags & bit != 0
    }

    /// The record with the fields held here — what search, memories and duplicates test, the
    /// timeline shows. Fields not held (hashes of derivatives, the motion part, device ids,
    /// exposure, …) are empty; where only presence is held and tests need it (`live_of`,
    /// `purged_at`), the value is an empty string. For the whole record:
    /// [`crate::catalogue::find_record`].
    pub(crate) fn record(&self) -> AssetRecord {
        let s = |k: usize| self.syms[k].string();
        let text = |v: &Option<Box<str>>| v.as_deref().map(str::to_owned);
        let present = |bit: u16| self.has(bit).then(String::new);
        AssetRecord {
            id: self.id.to_string(),
            owner: s(OWNER),
            filename: text(&self.filename),
            mime: s(MIME),
            size: self.has(SIZE).then_some(self.size),
            taken_at: text(&self.taken_at),
            taken_at_source: s(SOURCE),
            uploaded_at: text(&self.uploaded_at),
            width: self.has(WIDTH).then_some(self.width),
            height: self.has(HEIGHT).then_some(self.height),
            lat: self.has(POSITION).then_some(self.lat),
            lon: self.has(POSITION).then_some(self.lon),
            make: s(MAKE),
            model: s(MODEL),
            lens: s(LENS),
            thumbhash: text(&self.thumbhash),
            status: s(STATUS),
            error: text(&self.error),
            favorite: self.has(FAVORITE).then_some(true),
            archived: self.has(ARCHIVED).then_some(true),
            trashed_at: text(&self.trashed_at),
            duration: self.has(DURATION).then_some(f64::from(self.duration)),
            phash: self.has(PHASH).then(|| format_phash(self.phash)),
            live_of: present(LIVE_OF),
            purged_at: present(PURGED),
            hidden: self.has(HIDDEN).then_some(true),
            city: s(CITY),
            state: s(STATE),
            country: s(COUNTRY),
            ..Default::default()
        }
    }

    pub(crate) fn taken_at(&self) -> Option<&str> {
        self.taken_at.as_deref()
    }

    pub(crate) fn filename(&self) -> Option<&str> {
        self.filename.as_deref()
    }

    pub(crate) fn thumbhash(&self) -> Option<&str> {
        self.thumbhash.as_deref()
    }

    pub(crate) fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    pub(crate) fn trashed_at(&self) -> Option<&str> {
        self.trashed_at.as_deref()
    }

    pub(crate) fn status(&self) -> Option<Rc<str>> {
        self.syms[STATUS].get()
    }

    pub(crate) fn make(&self) -> Option<Rc<str>> {
        self.syms[MAKE].get()
    }

    pub(crate) fn owned_by(&self, user: &str) -> bool {
        self.syms[OWNER].get().is_some_and(|o| &*o == user)
    }

    /// Displayed (width, height), when both are known.
    pub(crate) fn size_px(&self) -> Option<(u32, u32)> {
        (self.has(WIDTH) && self.has(HEIGHT)).then_some((self.width, self.height))
    }

    pub(crate) fn duration(&self) -> Option<f64> {
        self.has(DURATION).then_some(f64::from(self.duration))
    }

    pub(crate) fn favorite(&self) -> bool {
        self.has(FAVORITE)
    }

    pub(crate) fn archived(&self) -> bool {
        self.has(ARCHIVED)
    }

    pub(crate) fn has_motion(&self) -> bool {
        self.has(MOTION)
    }

    pub(crate) fn has_preview(&self) -> bool {
        self.has(PREVIEW)
    }

    pub(crate) fn phash(&self) -> Option<u64> {
        self.has(PHASH).then_some(self.phash)
    }

    pub(crate) fn is_video(&self) -> bool {
        self.syms[MIME].with(|m| m.is_some_and(|m| m.starts_with("video/")))
    }

    pub(crate) fn is_purged(&self) -> bool {
        self.has(PURGED)
    }

    /// [`AssetRecord::is_trashed`].
    pub(crate) fn is_trashed(&self) -> bool {
        self.trashed_at.is_some() && !self.is_purged()
    }

    /// [`AssetRecord::shown_alone`].
    pub(crate) fn shown_alone(&self) -> bool {
        !self.has(LIVE_OF) && !self.has(HIDDEN)
    }

    /// [`AssetRecord::in_timeline`].
    pub(crate) fn in_timeline(&self) -> bool {
        !self.archived() && self.trashed_at.is_none() && self.shown_alone() && !self.is_purged()
    }
}

/// Format of a saved month ([`encode_saved`]); another version is read as absent.
const SAVED_VERSION: u8 = 3;

/// What decides a month's items besides its document: this build's [`Item`] layout and
/// [`Item::of`] (a record with every held field, as saved) and the workspace version. An entry
/// saved by a build where these differ is not used, so a change there never leaves old items
/// in place for months that do not change.
fn schema() -> [u8; 32] {
    thread_local! {
        static SCHEMA: std::cell::OnceCell<[u8; 32]> = const { std::cell::OnceCell::new() };
    }
    SCHEMA.with(|s| {
        *s.get_or_init(|| {
            let every = AssetRecord {
                id: "i".into(),
                owner: Some("o".into()),
                filename: Some("f".into()),
                mime: Some("video/m".into()),
                size: Some(1),
                taken_at: Some("t".into()),
                taken_at_source: Some("s".into()),
                uploaded_at: Some("u".into()),
                width: Some(2),
                height: Some(3),
                lat: Some(4.0),
                lon: Some(5.0),
                make: Some("ma".into()),
                model: Some("mo".into()),
                lens: Some("le".into()),
                thumbhash: Some("th".into()),
                thumb: Some("tb".into()),
                preview: Some("pr".into()),
                status: Some("st".into()),
                error: Some("er".into()),
                favorite: Some(true),
                archived: Some(true),
                trashed_at: Some("tr".into()),
                duration: Some(6.0),
                phash: Some(format_phash(7)),
                motion: Some("mn".into()),
                live_of: Some("lo".into()),
                purged_at: Some("pu".into()),
                hidden: Some(true),
                city: Some("ci".into()),
                state: Some("sa".into()),
                country: Some("co".into()),
                ..Default::default()
            };
            let mut b = encode_items(&[Arc::new(Item::of(&every))]).0;
            b.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
            sha256(&b)
        })
    })
}

/// A month's items as saved next to its document: read back on the next open instead of
/// decoding the document (the whole catalogue's automerge documents took 13 s to decode at
/// 300k photos). Valid only for the exact bytes it names: `sha256` is of the document's saved
/// bytes that `heads` describe and `items` were read from.
#[derive(Serialize, Deserialize)]
struct Saved {
    version: u8,
    schema: [u8; 32],
    sha256: [u8; 32],
    heads: Vec<u8>,
    /// The month's table of interned strings (see [`Sym`]'s `Serialize`).
    strings: Vec<String>,
    /// postcard of the items, their symbols as places in `strings`.
    items: Vec<u8>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(Sha256::digest(bytes).as_slice());
    out
}

/// A month's saved items: `doc_bytes` are the document's saved bytes, `heads` its heads in
/// them (`Library::known_heads_bytes`), `items` read from it at those heads.
pub(crate) fn encode_saved(doc_bytes: &[u8], heads: Vec<u8>, items: &[Arc<Item>]) -> Vec<u8> {
    let (items, strings) = encode_items(items);
    let saved = Saved {
        version: SAVED_VERSION,
        schema: schema(),
        sha256: sha256(doc_bytes),
        heads,
        strings,
        items,
    };
    postcard::to_allocvec(&saved).unwrap_or_default()
}

/// The items (their symbols as places in the month's table) and that table.
fn encode_items(items: &[Arc<Item>]) -> (Vec<u8>, Vec<String>) {
    MONTH_TABLE.with(|t| {
        let mut t = t.borrow_mut();
        t.0.clear();
        t.1.clear();
    });
    let list: Vec<&Item> = items.iter().map(|i| &**i).collect();
    let bytes = postcard::to_allocvec(&list).unwrap_or_default();
    let strings = MONTH_TABLE.with(|t| {
        let (table, index) = &mut *t.borrow_mut();
        index.clear();
        table
            .drain(..)
            .map(|s| s.string().unwrap_or_default())
            .collect()
    });
    (bytes, strings)
}

/// The (heads, items) saved for `doc_bytes`, if `entry` is a month saved by
/// [`encode_saved`] for exactly those bytes; `None` for anything else (other bytes, another
/// version, a damaged entry).
pub(crate) fn decode_saved(entry: &[u8], doc_bytes: &[u8]) -> Option<(Vec<u8>, Vec<Arc<Item>>)> {
    let saved: Saved = postcard::from_bytes(entry).ok()?;
    if saved.version != SAVED_VERSION
        || saved.schema != schema()
        || saved.sha256 != sha256(doc_bytes)
    {
        return None;
    }
    // The month's strings as this page's symbols, once each.
    let syms: Vec<Sym> = saved.strings.iter().map(|s| Sym::of(Some(s))).collect();
    let items: Vec<Item> = postcard::from_bytes(&saved.items).ok()?;
    let mut out = Vec::with_capacity(items.len());
    for mut item in items {
        for s in item.syms.iter_mut() {
            *s = match s.0 {
                0 => Sym(0),
                at => *syms.get(at as usize - 1)?,
            };
        }
        out.push(Arc::new(item));
    }
    Some((saved.heads, out))
}

/// Search tests items as they are held (no record built per photo and query).
impl Searched for Item {
    fn id(&self) -> &str {
        &self.id
    }
    fn taken_at(&self) -> Option<&str> {
        self.taken_at.as_deref()
    }
    fn with_field<R>(&self, field: Field, f: impl FnOnce(Option<&str>) -> R) -> R {
        let sym = match field {
            Field::Filename => return f(self.filename.as_deref()),
            Field::Make => MAKE,
            Field::Model => MODEL,
            Field::Lens => LENS,
            Field::City => CITY,
            Field::State => STATE,
            Field::Country => COUNTRY,
        };
        self.syms[sym].with(f)
    }
    fn is_video(&self) -> bool {
        Item::is_video(self)
    }
    fn is_purged(&self) -> bool {
        Item::is_purged(self)
    }
    fn is_trashed(&self) -> bool {
        Item::is_trashed(self)
    }
    fn shown_alone(&self) -> bool {
        Item::shown_alone(self)
    }
    fn archived(&self) -> bool {
        Item::archived(self)
    }
    fn favorite(&self) -> bool {
        Item::favorite(self)
    }
}

impl Photo for Item {
    fn id(&self) -> &str {
        &self.id
    }

    fn taken_at(&self) -> Option<&str> {
        self.taken_at.as_deref()
    }

    fn in_timeline(&self) -> bool {
        Item::in_timeline(self)
    }

    fn dated_by_upload(&self) -> bool {
        self.syms[SOURCE].get().is_some_and(|s| &*s == "upload")
    }

    fn position(&self) -> Option<(f64, f64)> {
        self.has(POSITION).then_some((self.lat, self.lon))
    }

    fn city(&self) -> Option<Rc<str>> {
        self.syms[CITY].get()
    }

    fn country(&self) -> Option<Rc<str>> {
        self.syms[COUNTRY].get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field an item holds comes back from `record()` as it was; the rest is empty.
    #[test]
    fn an_item_gives_back_the_fields_it_holds() {
        let r = AssetRecord {
            id: "ab".repeat(32),
            sha1: Some("s".into()),
            owner: Some("u1".into()),
            filename: Some("IMG_1.HEIC".into()),
            mime: Some("image/heic".into()),
            size: Some(123),
            taken_at: Some("2024-05-03T14:22:01+02:00".into()),
            taken_at_source: Some("exif".into()),
            uploaded_at: Some("2024-05-04T00:00:00Z".into()),
            width: Some(4032),
            height: Some(3024),
            lat: Some(45.76),
            lon: Some(4.83),
            make: Some("Apple".into()),
            model: Some("iPhone 15".into()),
            lens: Some("main".into()),
            thumbhash: Some("1QcSHQRnh493V4dIh4eXh1h4kJUI".into()),
            status: Some("ready".into()),
            favorite: Some(true),
            phash: Some(format_phash(0x0123_4567_89ab_cdef)),
            city: Some("Lyon".into()),
            state: Some("Auvergne-Rhône-Alpes".into()),
            country: Some("France".into()),
            ..Default::default()
        };
        let back = Item::of(&r).record();
        assert_eq!(
            back,
            AssetRecord {
                sha1: None,
                ..r.clone()
            }
        );
        let i = Item::of(&r);
        assert!(i.in_timeline() && i.favorite() && !i.is_video());
        assert_eq!(i.position(), Some((45.76, 4.83)));
        assert!(i.owned_by("u1") && !i.owned_by("u2"));
        // Flags held as presence only.
        let v = AssetRecord {
            id: "v".into(),
            mime: Some("video/mp4".into()),
            live_of: Some("still".into()),
            trashed_at: Some("2024-01-01T00:00:00Z".into()),
            duration: Some(2.5),
            ..Default::default()
        };
        let i = Item::of(&v);
        assert!(i.is_video() && !i.shown_alone() && i.is_trashed() && !i.in_timeline());
        assert_eq!(i.duration(), Some(2.5));
        assert_eq!(i.record().live_of.as_deref(), Some(""));
        assert_eq!(
            Item::of(&AssetRecord::default()).record(),
            AssetRecord::default()
        );
    }

    /// Saved items come back only for the document bytes they were saved with.
    #[test]
    fn saved_items_come_back_for_their_document_only() {
        let recs: Vec<AssetRecord> = (0..3)
            .map(|i| AssetRecord {
                id: format!("{i:064x}"),
                taken_at: Some(format!("2024-05-0{}T10:00:00", i + 1)),
                make: Some("Canon".into()),
                favorite: (i == 1).then_some(true),
                ..Default::default()
            })
            .collect();
        let items: Vec<Arc<Item>> = recs.iter().map(|r| Arc::new(Item::of(r))).collect();
        let doc = b"the month's saved document".to_vec();
        let entry = encode_saved(&doc, vec![7; 32], &items);
        let (heads, back) = decode_saved(&entry, &doc).expect("read back");
        assert_eq!(heads, vec![7; 32]);
        assert_eq!(back, items);
        let back_records: Vec<AssetRecord> = back.iter().map(|i| i.record()).collect();
        assert_eq!(back_records, recs);
        // A camera the three share is written once, in the month's table.
        assert_eq!(entry.windows(5).filter(|w| w == b"Canon").count(), 1);
        // Saved in another page (another interning order) it reads the same.
        let other_page = std::thread::spawn(move || {
            Sym::of(Some("something interned first elsewhere"));
            decode_saved(&entry, b"the month's saved document")
                .map(|(_, i)| i.iter().map(|i| i.record()).collect::<Vec<_>>())
        })
        .join()
        .unwrap();
        assert_eq!(other_page, Some(recs.clone()));
        let entry = encode_saved(&doc, vec![7; 32], &items);
        // Other bytes (the document changed since), a damaged entry, another version: none.
        assert!(decode_saved(&entry, b"the month's saved document, changed").is_none());
        let mut cut = entry.clone();
        cut.truncate(entry.len() / 2);
        assert!(decode_saved(&cut, &doc).is_none());
        let mut other = entry.clone();
        other[0] = SAVED_VERSION + 1;
        assert!(decode_saved(&other, &doc).is_none());
        // Saved by a build whose items differ (another schema fingerprint): none.
        let mut other = entry.clone();
        other[1] ^= 1;
        assert!(decode_saved(&other, &doc).is_none());
        assert!(decode_saved(&[], &doc).is_none());
    }
}
