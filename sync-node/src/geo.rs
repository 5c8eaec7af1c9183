//! Offline reverse geocoding: a GPS position becomes city, state and country (Immich's
//! `exifInfo.city/state/country`) with no network.
//!
//! Data: the `reverse_geocoder` crate (crates.io) bundles GeoNames' cities of 1,000+ people
//! (144,563 places with their first- and second-level divisions; GeoNames data is CC BY 4.0),
//! searched with a k-d tree on the unit sphere, so the antimeridian and the poles need nothing
//! special. Country names come from ISO 3166 via `isocountry`. The table is built on first use
//! (about 20 MB); a node whose photos have no GPS never loads it, and an idle node drops it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reverse_geocoder::ReverseGeocoder;

/// Farther than this from the nearest town, a position is "at sea" (or in a wilderness too
/// empty to name): no place rather than a wrong one.
pub const MAX_KM: f64 = 100.0;
const EARTH_KM: f64 = 6371.0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub city: String,
    pub state: Option<String>,
    pub country: String,
}

/// The places table when loaded, and when it was last used.
static TABLE: Mutex<Option<(Arc<ReverseGeocoder>, Instant)>> = Mutex::new(None);

fn geocoder() -> Arc<ReverseGeocoder> {
    let mut t = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    let (g, used) = t.get_or_insert_with(|| {
        let started = Instant::now();
        let g = Arc::new(ReverseGeocoder::new());
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "places table loaded"
        );
        (g, Instant::now())
    });
    *used = Instant::now();
    g.clone()
}

/// Drops the places table (about 20 MB) when no position was placed for `idle`: an idle
/// node does not hold it, and the next upload with GPS loads it again (a fraction of a
/// second). Returns whether it was dropped.
pub fn drop_idle(idle: Duration) -> bool {
    let mut t = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    if t.as_ref().is_some_and(|(_, used)| used.elapsed() >= idle) {
        *t = None;
        return true;
    }
    false
}

/// The place at a position, or `None` for an invalid position or one farther than
/// [`MAX_KM`] from any town.
pub fn place(lat: f64, lon: f64) -> Option<Place> {
    if !lat.is_finite() || !lon.is_finite() || lat.abs() > 90.0 || lon.abs() > 180.0 {
        return None;
    }
    let table = geocoder();
    let hit = table.search((lat, lon));
    // The tree's distance is the squared chord on the unit sphere.
    let chord = hit.distance.max(0.0).sqrt();
    let km = 2.0 * EARTH_KM * (chord / 2.0).min(1.0).asin();
    if km > MAX_KM {
        return None;
    }
    let r = hit.record;
    let country = isocountry::CountryCode::for_alpha2(&r.cc)
        .map(|c| short_country(c.name()).to_owned())
        .unwrap_or_else(|_| r.cc.clone());
    Some(Place {
        city: r.name.clone(),
        state: (!r.admin1.is_empty()).then(|| r.admin1.clone()),
        country,
    })
}

/// The names people use for the countries whose ISO names are long.
fn short_country(iso: &str) -> &str {
    match iso {
        "United States of America" => "United States",
        "United Kingdom of Great Britain and Northern Ireland" => "United Kingdom",
        "Russian Federation" => "Russia",
        "Korea (Republic of)" | "Korea, Republic of" => "South Korea",
        "Iran (Islamic Republic of)" | "Iran, Islamic Republic of" => "Iran",
        "Viet Nam" => "Vietnam",
        "Taiwan, Province of China" => "Taiwan",
        "Bolivia (Plurinational State of)" => "Bolivia",
        "Venezuela (Bolivarian Republic of)" => "Venezuela",
        "Tanzania, United Republic of" => "Tanzania",
        "Syrian Arab Republic" => "Syria",
        "Lao People's Democratic Republic" => "Laos",
        "Czechia" => "Czech Republic",
        other => other,
    }
}

/// Sets `city`, `state` and `country` from the record's position; returns whether they
/// changed. A record without a position loses a place it had.
pub fn locate(r: &mut tessera_core::AssetRecord) -> bool {
    let p = match (r.lat, r.lon) {
        (Some(lat), Some(lon)) => place(lat, lon),
        _ => None,
    };
    let (city, state, country) = match p {
        Some(p) => (Some(p.city), p.state, Some(p.country)),
        None => (None, None, None),
    };
    let changed = (&r.city, &r.state, &r.country) != (&city, &state, &country);
    (r.city, r.state, r.country) = (city, state, country);
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_places() {
        let paris = place(48.8584, 2.2945).unwrap();
        assert_eq!(paris.country, "France");
        assert_eq!(paris.state.as_deref(), Some("Ile-de-France"));
        let tokyo = place(35.6762, 139.6503).unwrap();
        assert_eq!(tokyo.country, "Japan");
        // Central Park. (Times Square's nearest GeoNames town is Weehawken, New Jersey, 3 km
        // away across the river: nearest-town geocoding is only as fine as the towns.)
        let ny = place(40.7812, -73.9665).unwrap();
        assert_eq!(ny.country, "United States");
        assert_eq!(ny.state.as_deref(), Some("New York"));
        // Mid-Atlantic: nothing within 100 km.
        assert_eq!(place(30.0, -40.0), None);
        // Both sides of the antimeridian in Fiji (Taveuni at 179.9°E; Vanua Balavu's
        // neighbours near 180°): the nearest town is found across the ±180° seam.
        let east = place(-16.8, 179.99).unwrap();
        let west = place(-16.8, -179.99).unwrap();
        assert_eq!(east.country, "Fiji");
        assert_eq!(west.country, "Fiji");
        assert_eq!(place(f64::NAN, 0.0), None);
        assert_eq!(place(91.0, 0.0), None);
    }
}
