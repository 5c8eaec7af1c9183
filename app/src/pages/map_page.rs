//! The Map page, offline: the bundled country shapes (`/world.svg`, generated at build time from
//! npm's world-atlas and cached by the service worker) under clustered markers of every located
//! photo in the local catalogue. A cluster zooms in and lists its photos.

use std::collections::BTreeMap;

use std::sync::Arc;

use leptos::prelude::*;
use tessera_core::memories::Photo;

use crate::items::Item;
use crate::pages::search_page::Grid;
use crate::state::Ui;

/// A located photo: (lat, lon, item).
type Located = (f64, f64, Arc<Item>);

/// The photos search finds (mine and partners' in my timeline) that are in the timeline and
/// have a position.
fn located() -> Vec<Located> {
    crate::search::corpus()
        .0
        .iter()
        .filter(|r| r.in_timeline())
        .filter_map(|r| {
            let (la, lo) = r.position()?;
            Some((la, lo, Arc::clone(r)))
        })
        .filter(|(la, lo, _)| la.abs() <= 90.0 && lo.abs() <= 180.0)
        .collect()
}

/// A cluster: centre (mean position), its photos (newest first).
#[derive(Clone, PartialEq)]
struct Cluster {
    lat: f64,
    lon: f64,
    items: Vec<Arc<Item>>,
}

/// Groups photos into grid cells of `cell` degrees.
fn clusters(points: &[Located], cell: f64) -> Vec<Cluster> {
    let mut by: BTreeMap<(i64, i64), Vec<&Located>> = BTreeMap::new();
    for p in points {
        let k = ((p.0 / cell).floor() as i64, (p.1 / cell).floor() as i64);
        by.entry(k).or_default().push(p);
    }
    by.into_values()
        .map(|ps| {
            let n = ps.len() as f64;
            let mut items: Vec<Arc<Item>> = ps.iter().map(|p| p.2.clone()).collect();
            items.sort_by(|a, b| b.taken_at().cmp(&a.taken_at()));
            Cluster {
                lat: ps.iter().map(|p| p.0).sum::<f64>() / n,
                lon: ps.iter().map(|p| p.1).sum::<f64>() / n,
                items,
            }
        })
        .collect()
}

#[component]
pub(crate) fn MapPage(ui: Ui) -> impl IntoView {
    let zoom = RwSignal::new(1.0f64);
    let center = RwSignal::new((0.0f64, 0.0f64)); // (x = lon, y = -lat)
    let chosen = RwSignal::new(None::<Cluster>);
    let points = Memo::new(move |_| {
        ui.ver.track();
        located()
    });
    let list = Memo::new(move |_| {
        let z = zoom.get();
        points.with(|p| clusters(p, 12.0 / z))
    });
    let view_box = move || {
        let (z, (cx, cy)) = (zoom.get(), center.get());
        let (w, h) = (360.0 / z, 180.0 / z);
        format!("{} {} {w} {h}", cx - w / 2.0, cy - h / 2.0)
    };
    let zoom_by = move |f: f64| zoom.update(|z| *z = (*z * f).clamp(1.0, 64.0));
    view! {
        <div id="map" class="map-page">
            <div class="map-bar">
                <h2>"Places"</h2>
                <span class="hint" id="map-count">{move || {
                    let n = points.with(|p| p.len());
                    format!("{n} located {} · {} places", if n == 1 { "photo" } else { "photos" }, list.with(|l| l.len()))
                }}</span>
                <div class="spacer"></div>
                <button id="map-out" class="button secondary" on:click=move |_| zoom_by(0.5)>"−"</button>
                <button id="map-in" class="button secondary" on:click=move |_| zoom_by(2.0)>"+"</button>
                <button id="map-reset" class="button secondary" on:click=move |_| { zoom.set(1.0); center.set((0.0, 0.0)); chosen.set(None); }>"World"</button>
            </div>
            // The chosen cluster's place, above the map so it shows without scrolling; its
            // photos below.
            {move || chosen.get().map(|c| {
                let place = c.items.iter().find_map(|r| r.city().map(|city| match r.country() {
                    Some(k) => format!("{city}, {k}"),
                    None => city.to_string(),
                })).unwrap_or_else(|| format!("{:.2}, {:.2}", c.lat, c.lon));
                // The place's page: every photo taken there (the Search page with its place).
                let open = c.items.iter().find_map(|r| r.city().map(|city| (r.country().map(|k| k.to_string()).unwrap_or_default(), city.to_string())));
                view! {
                    <div class="map-place-bar">
                        <h3 id="map-place">{format!("{place} · {} photos", c.items.len())}</h3>
                        {open.map(|(country, city)| {
                            let label = format!("All photos in {city}");
                            view! {
                                <button id="map-place-open" class="button secondary" on:click=move |_| {
                                    ui.search_place.set(Some((country.clone(), city.clone())));
                                    ui.search_person.set(None);
                                    ui.search_text.set(String::new());
                                    crate::routes::set_view(ui, crate::timeline::View::Search);
                                }>{label}</button>
                            }
                        })}
                    </div>
                }
            })}
            <svg class="map-svg" viewBox=view_box preserveAspectRatio="xMidYMid meet">
                <rect x="-180" y="-90" width="360" height="180" fill="#14171c"/>
                <image href="/world.svg" x="-180" y="-90" width="360" height="180"/>
                {move || {
                    let z = zoom.get();
                    list.get().into_iter().map(|c| {
                        let n = c.items.len();
                        let r = (1.2 + (n as f64).sqrt() * 0.6).min(6.0) / z.sqrt();
                        let (x, y) = (c.lon, -c.lat);
                        let c2 = c.clone();
                        view! {
                            <g class="cluster" data-count=n.to_string() on:click=move |_| {
                                center.set((x, y));
                                zoom.update(|z| *z = (*z * 2.0).min(64.0));
                                chosen.set(Some(c2.clone()));
                            }>
                                <circle cx=x cy=y r=r/>
                                <text x=x y=y font-size=r dy="0.35em" text-anchor="middle">{n.to_string()}</text>
                            </g>
                        }
                    }).collect_view()
                }}
            </svg>
            {move || chosen.get().map(|c| view! { <Grid ui=ui items=c.items.clone() class="map-hits"/> })}
        </div>
    }
}
