//! The Search page (free text, people, places, camera, type, dates, favorites; results from
//! the local catalogue, offline), a person's page (their photos, rename, hide), and the
//! memories on the home screen with their slideshow.

use std::sync::Arc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use tessera_core::memories::Photo;
use tessera_core::memories::{self, Memory};
use tessera_core::ml::{fields, FaceRecord, PersonRecord, PERSON_PREFIX};
use tessera_core::search::{Filters, Media};
use tessera_core::DocId;

use crate::catalogue::{find_item, save_and_push};
use crate::items::Item;
use crate::routes;
use crate::search::{self, Found};
use crate::state::{thousands, user_id, Ui, CORE};
use crate::thumbs::{load_thumb, thumbhash_url};

/// Results a grid shows at first, and adds with each "Show more": a search or a map place can
/// match tens of thousands of photos in a big library, and each shown one is an image and a
/// thumbnail fetch.
const GRID_PAGE: usize = 300;

/// A grid of thumbnails that open the viewer: the first [`GRID_PAGE`], then more on request.
#[component]
pub(crate) fn Grid(ui: Ui, items: Vec<Arc<Item>>, class: &'static str) -> impl IntoView {
    let total = items.len();
    // `localStorage["tessera-grid-page"]` sets another page size (the browser tests page a
    // grid of two).
    let page = web_sys::window()
        .and_then(|w| w.local_storage().ok().flatten())
        .and_then(|s| s.get_item("tessera-grid-page").ok().flatten())
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(GRID_PAGE);
    let shown = RwSignal::new(page.min(total));
    let items = StoredValue::new(items);
    let hit = move |i: usize| {
        let Some(r) = items.with_value(|v| v.get(i).cloned()) else {
            return ().into_any();
        };
        let id = r.id.to_string();
        let id2 = id.clone();
        let ph = thumbhash_url(r.thumbhash());
        if r.status().as_deref() == Some("ready") {
            spawn_local(load_thumb(ui, id.clone()));
        }
        let src = move || {
            ui.thumbs
                .with(|t| t.get(&id2).cloned())
                .unwrap_or_else(|| ph.clone())
        };
        let title = r.filename().unwrap_or_default().to_owned();
        view! {
            <img class="search-hit" data-id=id src=src alt="" title=title
                on:click=move |_| routes::open_viewer(ui, r.record())/>
        }
        .into_any()
    };
    view! {
        <div class=format!("search-grid {class}")>
            <For each=move || 0..shown.get() key=|i| *i children=hit/>
        </div>
        {move || (shown.get() < total).then(|| {
            let n = shown.get();
            view! {
                <button class="button secondary grid-more"
                    on:click=move |_| shown.update(|s| *s = (*s + page).min(total))>
                    {format!("Show more · {} of {} shown", thousands(n as u64), thousands(total as u64))}
                </button>
            }
        })}
    }
}

/// Writes a person's record (name, hidden) into the people document, saves and syncs.
fn update_person(ui: Ui, id: &str, f: impl FnOnce(&mut PersonRecord)) {
    let Some(user) = user_id() else { return };
    let res = CORE.with(|c| -> Result<bool, String> {
        let mut c = c.borrow_mut();
        let doc = DocId::people(&user).map_err(|e| e.to_string())?;
        let mut rec = c
            .lib
            .people(&user)
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|(p, _)| p == id)
            .map(|(_, r)| r)
            .unwrap_or_default();
        f(&mut rec);
        c.lib
            .merge_entries(&doc, &[(format!("{PERSON_PREFIX}{id}"), fields(&rec))])
            .map_err(|e| e.to_string())
    });
    match res {
        Err(e) => ui
            .error
            .set(Some(format!("cannot change this person: {e}"))),
        Ok(false) => {}
        Ok(true) => {
            crate::state::refresh_view(ui, true);
            save_and_push(ui);
        }
    }
}

/// The faces shown as `person` (merges resolved): (ML document, face key, face).
fn faces_of(person: &str) -> Vec<(DocId, String, FaceRecord)> {
    let Some(user) = user_id() else {
        return Vec::new();
    };
    CORE.with(|c| {
        let c = c.borrow();
        let mut out = Vec::new();
        for doc in c.lib.ml_doc_ids(&user) {
            for (key, f) in c.lib.faces(&doc, None).unwrap_or_default() {
                let Some(p) = f.effective_person() else {
                    continue;
                };
                if c.lib.resolve_person(&user, p).ok().as_deref() == Some(person) {
                    out.push((doc.clone(), key, f));
                }
            }
        }
        out
    })
}

/// "Not this person": the face leaves `person` at once (core's `effective_person` honours the
/// rejection), and the ML node's clustering never puts it back.
fn not_this_person(ui: Ui, doc: &DocId, key: &str, face: &FaceRecord, person: &str) {
    let mut rejected = face.rejected();
    for p in [
        Some(person),
        face.person.as_deref(),
        face.user_person.as_deref(),
    ]
    .into_iter()
    .flatten()
    .filter(|p| !p.is_empty())
    {
        if !rejected.iter().any(|x| x == p) {
            rejected.push(p.to_owned());
        }
    }
    let mut m = serde_json::Map::new();
    m.insert("not_person".into(), rejected.join(",").into());
    m.insert("user_person".into(), "".into());
    let res = CORE.with(|c| {
        c.borrow_mut()
            .lib
            .merge_entries(doc, &[(key.to_owned(), m)])
            .map_err(|e| e.to_string())
    });
    match res {
        Err(e) => ui.error.set(Some(format!("cannot change this face: {e}"))),
        Ok(_) => {
            crate::state::refresh_view(ui, true);
            save_and_push(ui);
        }
    }
}

#[component]
pub(crate) fn SearchPage(ui: Ui) -> impl IntoView {
    let text = ui.search_text;
    let person = ui.search_person;
    // A place opened from the map (or elsewhere) presets the place filters.
    let (c0, p0) = ui
        .search_place
        .try_update(Option::take)
        .flatten()
        .unwrap_or_default();
    let country = RwSignal::new(c0);
    let city = RwSignal::new(p0);
    let make = RwSignal::new(String::new());
    let media = RwSignal::new(String::new());
    let favorite = RwSignal::new(false);
    let after = RwSignal::new(String::new());
    let before = RwSignal::new(String::new());
    let found = RwSignal::new(None::<Found>);
    // The text the results shown answer (on the summary as `data-query`).
    let answered = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    // Searches overlap (a smart search waits for the node; a sync starts another): only the
    // one started last may show its results, whichever finishes last.
    let latest = StoredValue::new(0u64);
    let opt = |s: String| (!s.trim().is_empty()).then(|| s.trim().to_owned());
    let go = move || {
        let f = Filters {
            text: opt(text.get_untracked()),
            people: person.get_untracked().into_iter().collect(),
            country: opt(country.get_untracked()),
            city: opt(city.get_untracked()),
            make: opt(make.get_untracked()),
            media: match media.get_untracked().as_str() {
                "image" => Some(Media::Image),
                "video" => Some(Media::Video),
                _ => None,
            },
            favorite: favorite.get_untracked().then_some(true),
            taken_after: opt(after.get_untracked()),
            taken_before: opt(before.get_untracked()),
            ..Default::default()
        };
        let n = latest.get_value() + 1;
        latest.set_value(n);
        if f.is_empty() {
            found.set(None);
            busy.set(false);
            return;
        }
        busy.set(true);
        let query = f.text.clone().unwrap_or_default();
        spawn_local(async move {
            let r = search::run(f).await;
            if latest.get_value() == n {
                // A search run again (a sync, an ML result) that finds the very same photos
                // leaves the results as they are: the user's place in them ("Show more") stays.
                let same = answered.get_untracked() == query
                    && found.with_untracked(|f| f.as_ref().is_some_and(|f| f.same_as(&r)));
                if !same {
                    answered.set(query);
                    found.set(Some(r));
                }
                busy.set(false);
            }
        });
    };
    // Search again when a filter changes or the catalogue does.
    Effect::new(move |_| {
        person.track();
        country.track();
        city.track();
        make.track();
        media.track();
        favorite.track();
        after.track();
        before.track();
        ui.ver.track();
        go();
    });
    // Keep the packs on this device while the node is reachable.
    spawn_local(async move {
        let n = search::prefetch_packs().await;
        if n > 0 {
            crate::state::log(&format!("search: {n} embedding packs kept for offline use"));
        }
    });
    let countries = search::values(|r| r.country());
    let cities = Memo::new(move |_| {
        let c = country.get();
        search::values(|r| {
            r.city()
                .filter(|_| c.is_empty() || r.country().as_deref() == Some(c.as_str()))
        })
    });
    let makes = search::values(|r| r.make());
    let people = move || {
        ui.ml
            .get()
            .1
            .into_iter()
            .filter(|p| p.record.hidden != Some(true))
            .collect::<Vec<_>>()
    };
    let person_name = RwSignal::new(String::new());
    // The name field shows the chosen person's name, and follows it while the user has not
    // typed in it: ML results stream in while a name is being typed and must not wipe it.
    Effect::new(move |prev: Option<(Option<String>, String)>| {
        let p = person.get();
        let name = ui.ml.with(|(_, people)| {
            people
                .iter()
                .find(|x| Some(&x.id) == p.as_ref())
                .and_then(|x| x.record.name.clone())
                .unwrap_or_default()
        });
        let typing =
            matches!(&prev, Some((q, shown)) if *q == p && person_name.get_untracked() != *shown);
        if !typing {
            person_name.set(name.clone());
        }
        (p, name)
    });
    let select = |sig: RwSignal<String>| move |e| sig.set(event_target_value(&e));
    view! {
        <div id="search" class="search-page">
            <form class="search-form" on:submit=move |ev| { ev.prevent_default(); go(); }>
                <input id="search-input" type="search" placeholder="Search people, places, things, cameras, dates, file names…"
                    prop:value=move || text.get() on:input=move |e| text.set(event_target_value(&e))/>
                <button id="search-go" class="button" type="submit">"Search"</button>
            </form>
            <div class="search-filters">
                <select id="f-country" on:change=select(country) prop:value=move || country.get()>
                    <option value="">"Any country"</option>
                    {countries.into_iter().map(|c| { let v = c.clone(); view! { <option value=v>{c}</option> } }).collect_view()}
                </select>
                <select id="f-city" on:change=select(city) prop:value=move || city.get()>
                    <option value="">"Any city"</option>
                    {move || cities.get().into_iter().map(|c| { let v = c.clone(); view! { <option value=v>{c}</option> } }).collect_view()}
                </select>
                <select id="f-make" on:change=select(make)>
                    <option value="">"Any camera"</option>
                    {makes.into_iter().map(|c| { let v = c.clone(); view! { <option value=v>{c}</option> } }).collect_view()}
                </select>
                <select id="f-media" on:change=select(media)>
                    <option value="">"Photos and videos"</option>
                    <option value="image">"Photos"</option>
                    <option value="video">"Videos"</option>
                </select>
                <label>"From "<input id="f-after" type="date" on:change=select(after)/></label>
                <label>"To "<input id="f-before" type="date" on:change=select(before)/></label>
                <label><input id="f-favorite" type="checkbox" on:change=move |e| favorite.set(event_target_checked(&e))/>" Favorites"</label>
            </div>
            {move || {
                let (k, c) = (country.get(), city.get());
                (!c.is_empty()).then(|| view! {
                    <h2 id="place-title" class="place-title">{if k.is_empty() { c.clone() } else { format!("{c}, {k}") }}</h2>
                })
            }}
            <div class="people search-people">
                {move || people().into_iter().map(|x| {
                    let id = x.id.clone();
                    let id2 = id.clone();
                    let src = x.cover.and_then(|c| c.crop).map(|h| format!("/api/tessera/blobs/{h}")).unwrap_or_default();
                    let name = x.record.name.filter(|n| !n.is_empty()).unwrap_or_else(|| "Unnamed".into());
                    view! {
                        <figure class=move || if person.get().as_deref() == Some(id.as_str()) { "person chosen" } else { "person" }
                            data-person=id2.clone()
                            on:click=move |_| person.update(|p| *p = if p.as_deref() == Some(id2.as_str()) { None } else { Some(id2.clone()) })>
                            <img src=src alt=""/>
                            <figcaption>{name}<span class="count">{format!("{} photos", x.faces)}</span></figcaption>
                        </figure>
                    }
                }).collect_view()}
            </div>
            {move || person.get().map(|p| {
                let p2 = p.clone();
                let p3 = p.clone();
                let p4 = p.clone();
                let p5 = p.clone();
                // Only the list of other people follows the ML results: the form around it
                // (and the name being typed in it) is not rebuilt when they change.
                let others = move || -> Vec<(String, String)> {
                    people()
                        .into_iter()
                        .filter(|x| x.id != p5)
                        .map(|x| {
                            let name = x.record.name.clone().filter(|n| !n.is_empty());
                            (x.id.clone(), name.unwrap_or_else(|| format!("Unnamed ({} photos)", x.faces)))
                        })
                        .collect()
                };
                view! {
                    <form id="person-edit" class="person-edit" on:submit=move |ev| {
                        ev.prevent_default();
                        let n = person_name.get_untracked().trim().to_owned();
                        update_person(ui, &p2, |r| r.name = (!n.is_empty()).then_some(n));
                    }>
                        <input id="person-name" placeholder="Name this person" prop:value=move || person_name.get()
                            on:input=move |e| person_name.set(event_target_value(&e))/>
                        <button id="person-rename" class="button secondary" type="submit">"Rename"</button>
                        <button id="person-hide" class="button secondary" type="button" on:click=move |_| {
                            update_person(ui, &p3, |r| r.hidden = Some(true));
                            person.set(None);
                        }>"Hide person"</button>
                        <select id="person-merge" on:change=move |e| {
                            let into = event_target_value(&e);
                            if !into.is_empty() && into != p4 {
                                // A user decision the ML node never undoes; faces follow
                                // `merged_into` when people are resolved.
                                update_person(ui, &p4, |r| r.merged_into = Some(into.clone()));
                                person.set(Some(into));
                            }
                        }>
                            <option value="">"Same person as…"</option>
                            {move || others().into_iter().map(|(id, name)| view! { <option value=id>{name}</option> }).collect_view()}
                        </select>
                        <span class="dim">{p.clone()}</span>
                    </form>
                    <div id="person-faces" class="person-faces">
                        {move || {
                            ui.ver.track();
                            let cover = people().into_iter().find(|x| x.id == p).and_then(|x| x.record.cover);
                            faces_of(&p).into_iter().map(|(doc, key, f)| {
                                let src = f.crop.clone().map(|h| format!("/api/tessera/blobs/{h}")).unwrap_or_default();
                                let is_cover = cover.as_deref() == Some(key.as_str());
                                let asset = f.asset.clone();
                                let (k1, k2, p5, p6) = (key.clone(), key.clone(), p.clone(), p.clone());
                                view! {
                                    <figure class=if is_cover { "face cover" } else { "face" } data-face=key.clone() data-asset=asset>
                                        <img src=src alt=""/>
                                        <button class="face-cover" title="Use as this person's picture"
                                            on:click=move |_| update_person(ui, &p5, |r| r.cover = Some(k1.clone()))>"★"</button>
                                        <button class="face-not" title="Not this person"
                                            on:click=move |_| not_this_person(ui, &doc, &k2, &f, &p6)>"✕"</button>
                                    </figure>
                                }
                            }).collect_view()
                        }}
                    </div>
                }
            })}
            {move || busy.get().then(|| view! { <p class="hint">"Searching…"</p> })}
            {move || found.get().map(|f| {
                let n = f.exact.len() + f.smart.len();
                view! {
                    <p id="search-summary" class="hint" data-query=answered.get_untracked()>
                        {format!("{n} {} · {:.0} ms on this device", if n == 1 { "result" } else { "results" }, f.ms)}
                    </p>
                    {(!f.note.is_empty()).then(|| view! { <p id="search-note" class="hint">{f.note.clone()}</p> })}
                    {(!f.exact.is_empty()).then(|| view! {
                        <h3>"Matches"</h3>
                        <Grid ui=ui items=f.exact.clone() class="exact"/>
                    })}
                    {(!f.smart.is_empty()).then(|| view! {
                        <h3>"Smart search"</h3>
                        <Grid ui=ui items=f.smart.clone() class="smart"/>
                    })}
                    {(n == 0).then(|| view! { <div class="empty"><h2>"Nothing found"</h2></div> })}
                }
            })}
        </div>
    }
}

/// Memories as cards over the Photos timeline: on this day, trips, people; a card opens a
/// full-screen slideshow.
#[component]
pub(crate) fn MemoriesStrip(ui: Ui) -> impl IntoView {
    let list = Memo::new(move |prev: Option<&Vec<Memory>>| {
        ui.ver.track();
        // Not while the library is still being read or received: cards computed from part of
        // it would come and go (a "trip" that is only the newest months), and every round
        // would pay for them again. Shown once it is all here.
        if ui.library.with(|p| p.label().is_some()) {
            return prev.cloned().unwrap_or_default();
        }
        let Some(user) = user_id() else {
            return Vec::new();
        };
        let today: String = String::from(js_sys::Date::new_0().to_iso_string())
            .chars()
            .take(10)
            .collect();
        // The records the timeline already decoded (shared, not copied): reading them again
        // from the documents cost seconds at 300k photos, on every rebuild.
        let mine = format!("u/{user}/");
        let recs: Vec<Arc<Item>> = crate::state::SHARDS.with(|s| {
            s.borrow()
                .iter()
                .filter(|(k, _)| k.starts_with(&mine))
                .flat_map(|(_, (_, a))| a.iter())
                .filter(|r| !r.is_purged() && r.owned_by(&user))
                .cloned()
                .collect()
        });
        let people = CORE.with(|c| c.borrow().lib.people_index(&user).unwrap_or_default());
        memories::all(&recs, &people, &today)
    });
    let show = RwSignal::new(None::<(Memory, usize)>);
    view! {
        <Show when=move || !list.with(|l| l.is_empty())>
            <div id="memories" class="memories">
                {move || list.get().into_iter().map(|m| {
                    let cover = m.assets.first().cloned().unwrap_or_default();
                    let c2 = cover.clone();
                    spawn_local(load_thumb(ui, cover.clone()));
                    let ph = thumbhash_url(find_item(&cover).as_ref().and_then(|(_, r)| r.thumbhash()));
                    let src = move || ui.thumbs.with(|t| t.get(&c2).cloned()).unwrap_or_else(|| ph.clone());
                    let title = m.title.clone();
                    let n = m.assets.len();
                    view! {
                        <button class="memory-card" on:click=move |_| show.set(Some((m.clone(), 0)))>
                            <img src=src alt=""/>
                            <span class="memory-title">{title}</span>
                            <span class="memory-count">{format!("{n} photos")}</span>
                        </button>
                    }
                }).collect_view()}
            </div>
        </Show>
        {move || show.get().map(|(m, i)| {
            let n = m.assets.len();
            let id = m.assets.get(i).cloned().unwrap_or_default();
            spawn_local(load_thumb(ui, id.clone()));
            for next in m.assets.iter().skip(i + 1).take(2) {
                spawn_local(load_thumb(ui, next.clone()));
            }
            let id2 = id.clone();
            let src = move || ui.thumbs.with(|t| t.get(&id2).cloned()).unwrap_or_default();
            let step = move |d: isize| {
                show.update(|s| {
                    if let Some((_, i)) = s {
                        *i = (*i as isize + d).rem_euclid(n.max(1) as isize) as usize;
                    }
                })
            };
            // Advance every four seconds (a memory of one photo stays as it is).
            let tick = gloo_timers::callback::Timeout::new(4000, move || {
                if n > 1 && show.get_untracked().is_some_and(|(_, j)| j == i) {
                    step(1);
                }
            });
            tick.forget();
            view! {
                <div id="slideshow" class="slideshow" on:click=move |_| show.set(None)>
                    <img src=src alt="" on:click=move |e| { e.stop_propagation(); step(1); }/>
                    <div class="slide-caption">{format!("{} · {} of {n}", m.title, i + 1)}</div>
                    <button class="slide-prev link" on:click=move |e| { e.stop_propagation(); step(-1); }>"‹"</button>
                    <button class="slide-next link" on:click=move |e| { e.stop_propagation(); step(1); }>"›"</button>
                    <button id="slide-close" class="slide-close link" title="Close" on:click=move |e| { e.stop_propagation(); show.set(None); }>"✕"</button>
                </div>
            }
        })}
    }
}
