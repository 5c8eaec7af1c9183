//! Memories, computed from the catalogue with no IO (the PWA's home cards and Immich's
//! `GET /api/memories` are the same computation): "on this day" across the years, trips (runs
//! of days far from home) and people over the years.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use crate::search::PeopleIndex;
use crate::AssetRecord;

/// What memories read of a photo: the node passes whole records, the PWA its compact items
/// (it keeps no whole records for a 300k library).
pub trait Photo {
    fn id(&self) -> &str;
    fn taken_at(&self) -> Option<&str>;
    /// [`AssetRecord::in_timeline`].
    fn in_timeline(&self) -> bool;
    /// Dated by its upload (no capture date known): never a memory.
    fn dated_by_upload(&self) -> bool;
    /// (latitude, longitude).
    fn position(&self) -> Option<(f64, f64)>;
    fn city(&self) -> Option<Rc<str>>;
    fn country(&self) -> Option<Rc<str>>;
}

impl Photo for AssetRecord {
    fn id(&self) -> &str {
        &self.id
    }
    fn taken_at(&self) -> Option<&str> {
        self.taken_at.as_deref()
    }
    fn in_timeline(&self) -> bool {
        AssetRecord::in_timeline(self)
    }
    fn dated_by_upload(&self) -> bool {
        self.taken_at_source.as_deref() == Some("upload")
    }
    fn position(&self) -> Option<(f64, f64)> {
        Some((self.lat?, self.lon?))
    }
    fn city(&self) -> Option<Rc<str>> {
        self.city.as_deref().map(Rc::from)
    }
    fn country(&self) -> Option<Rc<str>> {
        self.country.as_deref().map(Rc::from)
    }
}

/// The PWA shares its items as `Arc`s.
impl<P: Photo + ?Sized> Photo for Arc<P> {
    fn id(&self) -> &str {
        (**self).id()
    }
    fn taken_at(&self) -> Option<&str> {
        (**self).taken_at()
    }
    fn in_timeline(&self) -> bool {
        (**self).in_timeline()
    }
    fn dated_by_upload(&self) -> bool {
        (**self).dated_by_upload()
    }
    fn position(&self) -> Option<(f64, f64)> {
        (**self).position()
    }
    fn city(&self) -> Option<Rc<str>> {
        (**self).city()
    }
    fn country(&self) -> Option<Rc<str>> {
        (**self).country()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Photos taken on this calendar day in an earlier year.
    OnThisDay { year: i32 },
    /// A run of days with photos far from home.
    Trip {
        place: String,
        first_day: String,
        last_day: String,
    },
    /// A named person's photos across the years.
    Person { id: String, name: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Memory {
    pub kind: Kind,
    pub title: String,
    /// Asset ids, in capture order.
    pub assets: Vec<String>,
}

/// How far from home a photo must be to count as travel.
pub const TRIP_KM: f64 = 100.0;
/// Fewest photos for a trip or a person's memory.
pub const MIN_PHOTOS: usize = 3;

fn day<P: Photo + ?Sized>(r: &P) -> Option<&str> {
    r.taken_at().filter(|t| t.len() >= 10).map(|t| &t[..10])
}

fn shown<P: Photo + ?Sized>(r: &P) -> bool {
    r.in_timeline() && !r.dated_by_upload()
}

/// Photos taken on `today`'s month and day (`YYYY-MM-DD`) in earlier years, one memory per
/// year, the most recent year first.
pub fn on_this_day<R: Photo>(records: &[R], today: &str) -> Vec<Memory> {
    let (Some(md), Ok(year)) = (
        today.get(5..10),
        today.get(..4).unwrap_or("").parse::<i32>(),
    ) else {
        return Vec::new();
    };
    let mut by_year: BTreeMap<i32, Vec<&R>> = BTreeMap::new();
    for r in records.iter().filter(|r| shown(*r)) {
        let Some(d) = day(r) else { continue };
        let Ok(y) = d[..4].parse::<i32>() else {
            continue;
        };
        if &d[5..10] == md && y < year {
            by_year.entry(y).or_default().push(r);
        }
    }
    by_year
        .into_iter()
        .rev()
        .map(|(y, mut rs)| {
            rs.sort_by(|a, b| a.taken_at().cmp(&b.taken_at()));
            let n = year - y;
            Memory {
                kind: Kind::OnThisDay { year: y },
                title: if n == 1 {
                    "1 year ago".to_owned()
                } else {
                    format!("{n} years ago")
                },
                assets: rs.into_iter().map(|r| r.id().to_owned()).collect(),
            }
        })
        .collect()
}

fn km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

/// Home: the position of the city with the most photos (its first photo's coordinates).
pub fn home<R: Photo>(records: &[R]) -> Option<(f64, f64)> {
    let mut count: HashMap<Rc<str>, (usize, (f64, f64))> = HashMap::new();
    for r in records.iter().filter(|r| shown(*r)) {
        if let (Some(p), Some(c)) = (r.position(), r.city()) {
            count.entry(c).or_insert((0, p)).0 += 1;
        }
    }
    count
        .into_iter()
        .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.0.cmp(&a.0)))
        .map(|(_, (_, p))| p)
}

/// Trips: days with photos more than [`TRIP_KM`] from home, joined across at most one day
/// without photos, with at least [`MIN_PHOTOS`] photos; named after the country (or city) seen most.
/// Newest first.
pub fn trips<R: Photo>(records: &[R]) -> Vec<Memory> {
    let Some(home) = home(records) else {
        return Vec::new();
    };
    let mut away: Vec<&R> = records
        .iter()
        .filter(|r| shown(*r) && day(*r).is_some())
        .filter(|r| r.position().is_some_and(|p| km(home, p) > TRIP_KM))
        .collect();
    away.sort_by(|a, b| a.taken_at().cmp(&b.taken_at()));
    let mut runs: Vec<Vec<&R>> = Vec::new();
    for r in away {
        let joined = runs.last().is_some_and(|run| {
            let last = run.last().and_then(|x| day(*x)).unwrap_or_default();
            days_between(last, day(r).unwrap_or_default()).is_some_and(|d| d <= 2)
        });
        if joined {
            if let Some(run) = runs.last_mut() {
                run.push(r);
            }
        } else {
            runs.push(vec![r]);
        }
    }
    let mut out: Vec<Memory> = runs
        .into_iter()
        .filter(|run| run.len() >= MIN_PHOTOS)
        .map(|run| {
            let mut places: HashMap<Rc<str>, usize> = HashMap::new();
            for r in &run {
                if let Some(p) = r.country().or_else(|| r.city()) {
                    *places.entry(p).or_default() += 1;
                }
            }
            let place = places
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
                .map(|(p, _)| p.to_string())
                .unwrap_or_else(|| "somewhere far".to_owned());
            let first = day(run[0]).unwrap_or_default().to_owned();
            let last = day(run[run.len() - 1]).unwrap_or_default().to_owned();
            Memory {
                title: format!("Trip to {place}, {}", month_year(&first)),
                kind: Kind::Trip {
                    place,
                    first_day: first,
                    last_day: last,
                },
                assets: run.iter().map(|r| r.id().to_owned()).collect(),
            }
        })
        .collect();
    out.reverse();
    out
}

/// Named people with photos in at least two different years: their photos across the years
/// (at most 30, spread evenly). Most photographed first.
pub fn people<R: Photo>(records: &[R], idx: &PeopleIndex) -> Vec<Memory> {
    let mut by: BTreeMap<&str, Vec<&R>> = BTreeMap::new();
    for r in records.iter().filter(|r| shown(*r)) {
        for p in idx.people_of(r.id()) {
            if idx.names.contains_key(&**p) {
                by.entry(&**p).or_default().push(r);
            }
        }
    }
    let mut out: Vec<(usize, Memory)> = by
        .into_iter()
        .filter(|(_, rs)| rs.len() >= MIN_PHOTOS)
        .filter_map(|(p, mut rs)| {
            rs.sort_by(|a, b| a.taken_at().cmp(&b.taken_at()));
            let years = |r: &&R| day(*r).map(|d| d[..4].to_owned());
            let (first, last) = (years(&rs[0])?, years(&rs[rs.len() - 1])?);
            if first == last {
                return None;
            }
            let n = rs.len();
            let step = n.div_ceil(30).max(1);
            let name = idx.names.get(p)?.clone();
            Some((
                n,
                Memory {
                    title: format!("{name} through the years"),
                    kind: Kind::Person {
                        id: p.to_owned(),
                        name,
                    },
                    assets: rs.iter().step_by(step).map(|r| r.id().to_owned()).collect(),
                },
            ))
        })
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.0));
    out.into_iter().map(|(_, m)| m).collect()
}

/// Every memory for `today`: on this day, then the newest trips (at most 3), then people (at
/// most 3).
pub fn all<R: Photo>(records: &[R], idx: &PeopleIndex, today: &str) -> Vec<Memory> {
    let mut v = on_this_day(records, today);
    v.extend(trips(records).into_iter().take(3));
    v.extend(people(records, idx).into_iter().take(3));
    v
}

fn month_year(d: &str) -> String {
    let m: usize = d.get(5..7).and_then(|m| m.parse().ok()).unwrap_or(1);
    format!(
        "{} {}",
        crate::record::MONTH_NAMES[m.clamp(1, 12) - 1],
        d.get(..4).unwrap_or("")
    )
}

/// Days from `a` to `b` (both `YYYY-MM-DD`), by the civil calendar.
fn days_between(a: &str, b: &str) -> Option<i64> {
    Some(day_number(b)? - day_number(a)?)
}

fn day_number(d: &str) -> Option<i64> {
    let y: i64 = d.get(..4)?.parse().ok()?;
    let m: i64 = d.get(5..7)?.parse().ok()?;
    let dd: i64 = d.get(8..10)?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(id: &str, t: &str, city: &str, lat: f64, lon: f64) -> AssetRecord {
        AssetRecord {
            id: id.into(),
            taken_at: Some(t.into()),
            taken_at_source: Some("exif".into()),
            city: Some(city.into()),
            country: Some(if city == "Paris" { "France" } else { "Japan" }.into()),
            lat: Some(lat),
            lon: Some(lon),
            ..Default::default()
        }
    }

    #[test]
    fn on_this_day_and_trips() {
        let mut rs = Vec::new();
        for i in 0..10 {
            rs.push(at(
                &format!("h{i}"),
                &format!("2024-03-{:02}T10:00:00", i + 1),
                "Paris",
                48.85,
                2.35,
            ));
        }
        rs.push(at("old1", "2022-12-01T09:00:00", "Paris", 48.85, 2.35));
        rs.push(at("old2", "2021-12-01T09:00:00", "Paris", 48.85, 2.35));
        rs.push(at("today", "2026-12-01T09:00:00", "Paris", 48.85, 2.35));
        // Four days in Tokyo, one gap day, then two more.
        for (i, d) in ["2025-04-01", "2025-04-02", "2025-04-04", "2025-04-05"]
            .iter()
            .enumerate()
        {
            rs.push(at(
                &format!("t{i}"),
                &format!("{d}T12:00:00+09:00"),
                "Tokyo",
                35.68,
                139.69,
            ));
        }
        let m = on_this_day(&rs, "2026-12-01");
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].title, "4 years ago");
        assert_eq!(m[0].assets, vec!["old1".to_owned()]);
        assert_eq!(m[1].kind, Kind::OnThisDay { year: 2021 });
        let t = trips(&rs);
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(t[0].title, "Trip to Japan, April 2025");
        assert_eq!(t[0].assets.len(), 4);
        assert_eq!(days_between("2024-02-28", "2024-03-01"), Some(2));
        assert_eq!(days_between("2023-12-31", "2024-01-01"), Some(1));
    }
}
