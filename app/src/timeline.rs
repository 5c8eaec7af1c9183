//! The virtualised, justified timeline: the current view's records sorted newest first, a
//! precomputed [`Layout`], and only the blocks within one screen of the viewport in the DOM
//! (re-rendered on scroll through `requestAnimationFrame`). Also the date scrubber,
//! multi-selection and the bench mode (`?bench=N`).

use std::cell::{Cell as StdCell, RefCell};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use leptos::prelude::*;
use tessera_core::AssetRecord;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::items::Item;
use crate::layout::{self, Cell, Kind, Layout};
use crate::state::{log, now_ms, Screen, Ui};
use crate::thumbs::{self, observe_tile, reset_observer, thumbhash_url};

/// What the main area shows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum View {
    Photos,
    Favorites,
    Archive,
    Trash,
    Duplicates,
    Albums,
    Members,
    Sharing,
    Search,
    Map,
}

impl View {
    pub(crate) fn includes(self, r: &Item) -> bool {
        match self {
            View::Photos => r.in_timeline(),
            View::Favorites => r.favorite() && !r.is_trashed() && r.shown_alone(),
            View::Archive => r.archived() && !r.is_trashed() && r.shown_alone(),
            View::Trash => r.is_trashed() && r.shown_alone(),
            View::Duplicates
            | View::Albums
            | View::Members
            | View::Sharing
            | View::Search
            | View::Map => false,
        }
    }
}

/// The current view's items and their layout (not reactive: `Ui::ver` says when it changed).
#[derive(Default)]
pub struct ViewData {
    /// Shared with the shard cache (`state::SHARDS`): a 300k view holds pointers, not copies.
    pub(crate) items: Vec<Arc<Item>>,
    pub cells: Vec<Cell>,
    pub layout: Layout,
    /// Position of each id in `items` (the ids shared with the items).
    pub index: HashMap<Arc<str>, usize>,
    pub layout_ms: f64,
    pub sort_ms: f64,
}

/// Reactive state of the timeline's window onto the layout.
#[derive(Clone, Copy)]
pub struct Tl {
    /// (view version, first block, end block) in the DOM.
    win: RwSignal<(u64, usize, usize)>,
    /// The month/day at the top of the viewport (sticky header).
    head: RwSignal<(u32, u32)>,
    /// Scroll position as a fraction of the content (scrubber thumb).
    frac: RwSignal<f64>,
    /// The scroller's visible height.
    vh: RwSignal<f64>,
    /// Scrubber hover/drag label: (fraction, text).
    scrub: RwSignal<Option<(f64, String)>>,
}

thread_local! {
    pub static VIEW: RefCell<ViewData> = RefCell::new(ViewData::default());
    static SCROLLER: RefCell<Option<web_sys::HtmlElement>> = const { RefCell::new(None) };
    static TL: RefCell<Option<Tl>> = const { RefCell::new(None) };
    static RAF_PENDING: StdCell<bool> = const { StdCell::new(false) };
    static ANCHOR: StdCell<Option<usize>> = const { StdCell::new(None) };
    static WIDTH: StdCell<f64> = const { StdCell::new(1000.0) };
    pub static BENCH: StdCell<bool> = const { StdCell::new(false) };
    /// Elements the IntersectionObserver watches, swept when they leave the DOM.
    pub static OBSERVED: RefCell<Vec<web_sys::Element>> = const { RefCell::new(Vec::new()) };
    static PLACEHOLDERS: RefCell<HashMap<String, String>> = RefCell::new(HashMap::new());
    static FIRST_PAINT: StdCell<bool> = const { StdCell::new(false) };
}

pub fn scroller() -> Option<web_sys::HtmlElement> {
    SCROLLER.with(|s| s.borrow().clone())
}

/// Replaces the view's items: sorts them newest first, lays them out, re-renders.
pub(crate) fn set_items(ui: Ui, items: Vec<Arc<Item>>) {
    let t0 = now_ms();
    // Newest first. The day is computed once per item; the rest of the key is borrowed (no
    // copies of 300k strings).
    let mut keyed: Vec<(u32, Arc<Item>)> = items
        .into_iter()
        .map(|r| (layout::day_of(r.taken_at()), r))
        .collect();
    keyed.sort_by(|(da, a), (db, b)| {
        db.cmp(da)
            .then_with(|| b.taken_at().cmp(&a.taken_at()))
            .then_with(|| a.id.cmp(&b.id))
    });
    let items: Vec<Arc<Item>> = keyed.into_iter().map(|(_, r)| r).collect();
    let t1 = now_ms();
    let cells: Vec<Cell> = items
        .iter()
        .map(|r| Cell {
            aspect: match r.size_px() {
                Some((w, h)) if w > 0 && h > 0 => w as f32 / h as f32,
                _ => 1.0,
            },
            day: layout::day_of(r.taken_at()),
        })
        .collect();
    let width = WIDTH.get();
    let lay = Layout::build(&cells, width, layout::target_height(width));
    let t2 = now_ms();
    let index = items
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.clone(), i))
        .collect();
    let n = items.len();
    if n > 0 && !BENCH.get() {
        mark_first_paint();
    }
    VIEW.with(|v| {
        *v.borrow_mut() = ViewData {
            items,
            cells,
            layout: lay,
            index,
            layout_ms: t2 - t1,
            sort_ms: t1 - t0,
        }
    });
    ANCHOR.set(None);
    ui.count.set(n);
    ui.ver.update(|v| *v += 1);
    // Drop selected ids that left the view.
    let gone = ui.selected.with_untracked(|s| {
        VIEW.with(|v| {
            let v = v.borrow();
            s.iter().any(|id| !v.index.contains_key(id.as_str()))
        })
    });
    if gone {
        ui.selected
            .update(|s| VIEW.with(|v| s.retain(|id| v.borrow().index.contains_key(id.as_str()))));
    }
    update_window(ui);
}

/// Lays the same items out again for a new width, keeping the item at the top in place.
fn relayout(ui: Ui, width: f64) {
    if (WIDTH.get() - width).abs() < 1.0 {
        return;
    }
    WIDTH.set(width);
    let Some(sc) = scroller() else { return };
    let off = canvas_offset(&sc);
    let top = sc.scroll_top() as f64 - off;
    let anchor = VIEW.with(|v| {
        let v = v.borrow();
        let (a, b) = v.layout.visible(top, top + 1.0);
        (a..b).find_map(|i| match v.layout.blocks[i].kind {
            Kind::Row { start, .. } => Some((start as usize, top - v.layout.blocks[i].y)),
            _ => None,
        })
    });
    let new_y = VIEW.with(|v| {
        let mut v = v.borrow_mut();
        let t = now_ms();
        v.layout = Layout::build(&v.cells, width, layout::target_height(width));
        v.layout_ms = now_ms() - t;
        anchor.and_then(|(item, dy)| {
            let row = *v.layout.row_of.get(item)? as usize;
            Some(v.layout.blocks.get(row)?.y + dy)
        })
    });
    ui.ver.update(|v| *v += 1);
    if let Some(y) = new_y {
        sc.set_scroll_top((y + off) as i32);
    }
    update_window(ui);
}

/// The width rows are laid out in: the canvas's.
fn content_width(sc: &web_sys::HtmlElement) -> f64 {
    sc.query_selector(".tl-canvas")
        .ok()
        .flatten()
        .map(|e| e.client_width() as f64)
        .filter(|w| *w > 0.0)
        .unwrap_or(sc.client_width() as f64 - 76.0)
        .max(100.0)
}

fn canvas_offset(sc: &web_sys::HtmlElement) -> f64 {
    sc.query_selector(".tl-canvas")
        .ok()
        .flatten()
        .and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok())
        .map(|e| e.offset_top() as f64)
        .unwrap_or(0.0)
}

/// Content shorter than this is rendered whole (virtualising it would buy nothing).
const SMALL_PX: f64 = 8000.0;

/// Puts the blocks within a screen of the viewport in the DOM (if that changed).
pub fn update_window(ui: Ui) {
    let Some(tl) = TL.with(|t| *t.borrow()) else {
        return;
    };
    let Some(sc) = scroller() else { return };
    let st = sc.scroll_top() as f64;
    let ch = sc.client_height() as f64;
    let off = canvas_offset(&sc);
    let y = st - off;
    let (a, b, date, total) = VIEW.with(|v| {
        let l = &v.borrow().layout;
        // One screen either side (at least 1000 px, so short viewports still prefetch).
        let buf = ch.max(1000.0);
        // A small library (a few hundred photos) is simply rendered whole.
        let (a, b) = if l.total <= SMALL_PX {
            (0, l.blocks.len())
        } else {
            l.visible(y - buf, y + ch + buf)
        };
        (a, b, l.date_at(y.max(0.0) + 1.0), l.total)
    });
    let key = (ui.ver.get_untracked(), a, b);
    if tl.win.get_untracked() != key {
        tl.win.set(key);
    }
    let date = if y > 0.0 { date } else { (0, 0) };
    if tl.head.get_untracked() != date {
        tl.head.set(date);
    }
    let frac = (y / (total - ch).max(1.0)).clamp(0.0, 1.0);
    if (tl.frac.get_untracked() - frac).abs() > 0.001 {
        tl.frac.set(frac);
    }
    if (tl.vh.get_untracked() - ch).abs() > 0.5 {
        tl.vh.set(ch);
    }
    sweep_observed();
}

/// Stops observing tiles that left the DOM (the observer would keep them alive).
fn sweep_observed() {
    OBSERVED.with(|o| {
        let mut o = o.borrow_mut();
        if o.len() < 200 {
            return;
        }
        thumbs::OBSERVER.with(|obs| {
            let obs = obs.borrow();
            o.retain(|e| {
                let keep = e.is_connected();
                if !keep {
                    if let Some(obs) = obs.as_ref() {
                        obs.unobserve(e);
                    }
                }
                keep
            });
        });
    });
}

/// Records when the first tiles reach the screen (`paint.first_tile_ms` in `__tesseraPerf`,
/// ms since navigation started): the first animation frame that finds a tile in the DOM.
fn mark_first_paint() {
    if FIRST_PAINT.replace(true) {
        return;
    }
    fn check() {
        let Some(w) = web_sys::window() else { return };
        let tile = w
            .document()
            .and_then(|d| d.query_selector(".tile").ok().flatten())
            .is_some();
        if tile {
            crate::perf::set("paint.first_tile_ms", now_ms());
            crate::perf::publish();
        } else {
            check_soon(check);
        }
    }
    check_soon(check);
}

/// Runs `f` at the next animation frame.
fn check_soon(f: fn()) {
    let cb = Closure::once_into_js(f);
    if let Some(w) = web_sys::window() {
        let _ = w.request_animation_frame(cb.unchecked_ref());
    }
}

fn schedule(ui: Ui) {
    if RAF_PENDING.get() {
        return;
    }
    RAF_PENDING.set(true);
    let cb = Closure::once_into_js(move || {
        RAF_PENDING.set(false);
        update_window(ui);
    });
    if let Some(w) = web_sys::window() {
        if w.request_animation_frame(cb.unchecked_ref()).is_err() {
            RAF_PENDING.set(false);
        }
    }
}

/// Scrolls so that content fraction `frac` is at the top.
pub fn jump_to(frac: f64) {
    let Some(sc) = scroller() else { return };
    let off = canvas_offset(&sc);
    let total = VIEW.with(|v| v.borrow().layout.total);
    let ch = sc.client_height() as f64;
    let y = frac.clamp(0.0, 1.0) * (total - ch).max(0.0);
    sc.set_scroll_top((y + off) as i32);
}

fn month_name(m: u32) -> &'static str {
    tessera_core::record::MONTH_NAMES[(m.clamp(1, 12) - 1) as usize]
}

/// "May 2024 · 3 photos".
pub fn month_title(month: u32, count: u32) -> String {
    let photos = if count == 1 {
        "1 photo".to_owned()
    } else {
        format!("{count} photos")
    };
    if month == 0 {
        return format!("Undated · {photos}");
    }
    format!("{} {} · {photos}", month_name(month % 100), month / 100)
}

fn short_month(month: u32) -> String {
    if month == 0 {
        return "Undated".into();
    }
    format!("{} {}", &month_name(month % 100)[..3], month / 100)
}

/// "Fri, 3 May 2024".
fn day_title(day: u32) -> String {
    let (y, m, d) = (day / 10000, (day / 100) % 100, day % 100);
    let wd = js_sys::Date::new_with_year_month_day(y, m as i32 - 1, d as i32).get_day();
    const WD: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    format!(
        "{}, {d} {} {y}",
        WD[(wd as usize).min(6)],
        &month_name(m)[..3]
    )
}

pub fn fmt_duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// Days left before a trashed item is purged.
pub fn days_left(trashed_at: &str, trash_days: u32) -> i64 {
    let t = js_sys::Date::parse(trashed_at);
    if !t.is_finite() {
        return trash_days as i64;
    }
    let age = ((js_sys::Date::now() - t) / 86_400_000.0).floor() as i64;
    (trash_days as i64 - age).max(0)
}

fn placeholder(rec: &Item) -> String {
    const CLEAR: &str =
        "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7";
    let Some(h) = rec.thumbhash() else {
        return CLEAR.to_owned();
    };
    PLACEHOLDERS.with(|p| {
        let mut p = p.borrow_mut();
        if let Some(u) = p.get(&*rec.id) {
            return u.clone();
        }
        if p.len() > 3000 {
            p.clear();
        }
        let u = thumbhash_url(Some(h));
        p.insert(rec.id.to_string(), u.clone());
        u
    })
}

fn tint(id: &str) -> String {
    let h = id
        .bytes()
        .fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(b as u32));
    format!("hsl({} 22% {}%)", h % 360, 20 + (h / 360) % 12)
}

/// Selects (or toggles) on a click: range with shift from the last clicked item.
fn select_click(ui: Ui, idx: usize, id: &str, shift: bool) {
    match (shift, ANCHOR.get()) {
        (true, Some(a)) => {
            let (lo, hi) = (a.min(idx), a.max(idx));
            let ids: Vec<String> = VIEW.with(|v| {
                let v = v.borrow();
                v.items
                    .get(lo..=hi.min(v.items.len().saturating_sub(1)))
                    .map(|s| s.iter().map(|r| r.id.to_string()).collect())
                    .unwrap_or_default()
            });
            ui.selected.update(|s| s.extend(ids));
        }
        _ => ui.selected.update(|s| {
            if !s.remove(id) {
                s.insert(id.to_owned());
            }
        }),
    }
    ANCHOR.set(Some(idx));
}

#[component]
fn Tile(ui: Ui, idx: usize, rec: Arc<Item>, x: f32, w: f32) -> impl IntoView {
    let id = rec.id.to_string();
    let status = rec.status().map(|s| s.to_string()).unwrap_or_default();
    let tile = NodeRef::<leptos::html::Div>::new();
    if status == "ready" && !BENCH.get() {
        Effect::new(move |_| {
            if let Some(el) = tile.get() {
                observe_tile(ui, &el);
            }
        });
    }
    let ph = placeholder(&rec);
    let id2 = id.clone();
    let src = move || {
        ui.thumbs
            .with(|t| t.get(&id2).cloned())
            .unwrap_or_else(|| ph.clone())
    };
    let title = match (rec.error(), rec.filename()) {
        (Some(e), Some(f)) => format!("{f}: {e}"),
        (_, Some(f)) => f.to_owned(),
        _ => String::new(),
    };
    let id3 = id.clone();
    let class = move || {
        let sel = ui.selected.with(|s| s.contains(&id3));
        format!("tile {status}{}", if sel { " selected" } else { "" })
    };
    let status = rec.status().map(|s| s.to_string()).unwrap_or_default();
    let label = (status == "unsupported" || status == "error")
        .then(|| rec.filename().unwrap_or_default().to_owned());
    let style = format!("left:{x:.1}px;width:{w:.1}px;background:{}", tint(&rec.id));
    let video = rec
        .is_video()
        .then(|| format!("▶ {}", rec.duration().map(fmt_duration).unwrap_or_default()));
    let live = rec.has_motion() && !rec.is_video();
    let left = rec
        .trashed_at()
        .map(|t| days_left(t, ui.trash_days.get_untracked()));
    let r = rec.clone();
    let id4 = id.clone();
    view! {
        <div node_ref=tile class=class data-id=id title=title style=style
            on:click=move |ev: web_sys::MouseEvent| {
                let on_check = ev
                    .target()
                    .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
                    .is_some_and(|e| e.class_list().contains("check"));
                if on_check || ui.selected.with_untracked(|s| !s.is_empty()) {
                    select_click(ui, idx, &id4, ev.shift_key());
                } else {
                    ANCHOR.set(Some(idx));
                    crate::routes::open_viewer(ui, r.record());
                }
            }>
            <img class="thumb" src=src alt="" decoding="async"/>
            <span class="check" title="Select"></span>
            {label.map(|l| view! { <span class="label">{l}</span> })}
            {(status == "pending").then(|| view! { <span class="spinner"></span> })}
            {rec.favorite().then(|| view! { <span class="fav">"♥"</span> })}
            {video.map(|v| view! { <span class="badge video">{v}</span> })}
            {live.then(|| view! { <span class="badge live">"LIVE"</span> })}
            {left.map(|d| view! { <span class="badge left">{format!("{d} days left")}</span> })}
        </div>
    }
}

fn block_view(ui: Ui, i: usize) -> AnyView {
    let Some(b) = VIEW.with(|v| v.borrow().layout.blocks.get(i).copied()) else {
        return ().into_any();
    };
    let pos = format!("top:{:.1}px;height:{:.1}px", b.y, b.h);
    match b.kind {
        Kind::Month { month, count } => view! {
            <div class="month-section" style=pos><h2>{month_title(month, count)}</h2></div>
        }
        .into_any(),
        Kind::Day { day, .. } => view! {
            <div class="day-header" style=pos>{day_title(day)}</div>
        }
        .into_any(),
        Kind::Row { start, end } => {
            let tiles: Vec<(usize, Arc<Item>, f32, f32)> = VIEW.with(|v| {
                let v = v.borrow();
                (start as usize..end as usize)
                    .filter_map(|k| {
                        Some((
                            k,
                            v.items.get(k)?.clone(),
                            *v.layout.x.get(k)?,
                            *v.layout.w.get(k)?,
                        ))
                    })
                    .collect()
            });
            view! {
                <div class="row" style=pos>
                    {tiles.into_iter().map(|(k, rec, x, w)| view! { <Tile ui=ui idx=k rec=rec x=x w=w/> }).collect_view()}
                </div>
            }
            .into_any()
        }
    }
}

/// Year labels and month ticks of the scrubber, proportional to content height.
fn scrubber_ticks(vh: f64) -> Vec<(f64, Option<String>)> {
    VIEW.with(|v| {
        let v = v.borrow();
        let l = &v.layout;
        let span = (l.total - vh).max(1.0);
        let mut out = Vec::new();
        let mut last_year = u32::MAX;
        let mut last_label_px = f64::NEG_INFINITY;
        let mut last_tick_px = f64::NEG_INFINITY;
        for (y, month, _) in l.months() {
            let f = (y / span).clamp(0.0, 1.0);
            let px = f * vh;
            let year = month / 100;
            if year != last_year && px - last_label_px >= 18.0 {
                last_label_px = px;
                last_tick_px = px;
                out.push((
                    f,
                    Some(if month == 0 {
                        "?".into()
                    } else {
                        year.to_string()
                    }),
                ));
            } else if px - last_tick_px >= 6.0 {
                last_tick_px = px;
                out.push((f, None));
            }
            last_year = year;
        }
        out
    })
}

#[component]
fn Scrubber(ui: Ui, tl: Tl) -> impl IntoView {
    let dragging = StoredValue::new(false);
    let label_at = move |ev: &web_sys::PointerEvent| -> Option<f64> {
        let el = ev.current_target()?.dyn_into::<web_sys::Element>().ok()?;
        let r = el.get_bounding_client_rect();
        // The track is inset 12 px at both ends (see `.scrub-track`).
        let f = ((ev.client_y() as f64 - r.top() - 12.0) / (r.height() - 24.0).max(1.0))
            .clamp(0.0, 1.0);
        let (m, d) = VIEW.with(|v| {
            let v = v.borrow();
            let span = (v.layout.total - tl.vh.get_untracked()).max(1.0);
            v.layout.date_at(f * span)
        });
        let text = if d != 0 {
            format!("{} {}", d % 100, short_month(m))
        } else {
            short_month(m)
        };
        tl.scrub.set(Some((f, text)));
        Some(f)
    };
    view! {
        <div id="scrubber" class="scrubber"
            on:pointerdown=move |ev: web_sys::PointerEvent| {
                dragging.set_value(true);
                if let Some(el) = ev.current_target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()) {
                    let _ = el.set_pointer_capture(ev.pointer_id());
                }
                if let Some(f) = label_at(&ev) { jump_to(f); }
            }
            on:pointermove=move |ev: web_sys::PointerEvent| {
                let f = label_at(&ev);
                if dragging.get_value() {
                    if let Some(f) = f { jump_to(f); }
                }
            }
            on:pointerup=move |_| dragging.set_value(false)
            on:pointerleave=move |_| { if !dragging.get_value() { tl.scrub.set(None); } }
        >
            <div class="scrub-track">
            {move || {
                ui.ver.track();
                scrubber_ticks(tl.vh.get() - 24.0).into_iter().map(|(f, label)| {
                    let style = format!("top:{:.2}%", f * 100.0);
                    match label {
                        Some(y) => view! { <span class="year" style=style>{y}</span> }.into_any(),
                        None => view! { <span class="tick" style=style></span> }.into_any(),
                    }
                }).collect_view()
            }}
            <span class="thumb-pos" style=move || format!("top:{:.2}%", tl.frac.get() * 100.0)></span>
            {move || tl.scrub.get().map(|(f, t)| view! {
                <span class="scrub-label" style=format!("top:{:.2}%", f * 100.0)>{t}</span>
            })}
            </div>
        </div>
    }
}

/// The timeline of the current view (Photos, Favorites, Archive, Trash).
#[component]
pub fn TimelineView(ui: Ui) -> impl IntoView {
    let tl = Tl {
        win: RwSignal::new((0, 0, 0)),
        head: RwSignal::new((0, 0)),
        frac: RwSignal::new(0.0),
        vh: RwSignal::new(800.0),
        scrub: RwSignal::new(None),
    };
    TL.with(|t| *t.borrow_mut() = Some(tl));
    let sc = NodeRef::<leptos::html::Div>::new();
    Effect::new(move |_| {
        if let Some(el) = sc.get() {
            let el: web_sys::HtmlElement = el.into();
            SCROLLER.with(|s| *s.borrow_mut() = Some(el.clone()));
            // The observer's root is the scroller (its margin then applies to it).
            reset_observer(ui);
            let w = content_width(&el);
            if (WIDTH.get() - w).abs() >= 1.0 {
                relayout(ui, w);
            } else {
                update_window(ui);
            }
        }
    });
    let resize = window_event_listener(leptos::ev::resize, move |_| {
        if let Some(el) = scroller() {
            relayout(ui, content_width(&el));
            update_window(ui);
        }
    });
    on_cleanup(move || {
        resize.remove();
        SCROLLER.with(|s| *s.borrow_mut() = None);
        TL.with(|t| *t.borrow_mut() = None);
    });
    let head = move || {
        let (m, d) = tl.head.get();
        (m != 0 || d != 0).then(|| {
            let text = if d != 0 {
                format!("{} · {}", short_month(m), day_title(d))
            } else {
                short_month(m)
            };
            view! { <div class="sticky-head">{text}</div> }
        })
    };
    view! {
        <div class=move || if ui.selected.with(|s| s.is_empty()) { "tl-wrap" } else { "tl-wrap selecting" }>
            <div class="scroller" node_ref=sc data-count=move || ui.count.get().to_string() on:scroll=move |_| schedule(ui)>
                {head}
                <div class="tl-canvas" style=move || { ui.ver.track(); format!("height:{:.0}px", VIEW.with(|v| v.borrow().layout.total)) }>
                    <For each=move || { let (v, a, b) = tl.win.get(); (a..b).map(|i| (v, i)).collect::<Vec<_>>() }
                        key=|k| *k
                        children=move |(_, i)| block_view(ui, i)/>
                </div>
            </div>
            <Show when=move || { ui.count.get() != 0 }>
                <Scrubber ui=ui tl=tl/>
            </Show>
        </div>
    }
}

/// Deterministic synthetic records for the scroll benchmark (no thumbnails).
pub fn synthetic(n: usize) -> Vec<AssetRecord> {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    const SHAPES: [(u32, u32); 7] = [
        (4032, 3024),
        (3024, 4032),
        (1920, 1080),
        (1080, 1920),
        (3000, 3000),
        (6000, 4000),
        (4000, 6000),
    ];
    // Days since 1970-01-01 → civil date (Howard Hinnant's algorithm).
    let civil = |z: i64| {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        (yoe + era * 400 + i64::from(m <= 2), m, d)
    };
    let start = 16_071i64; // 2014-01-01
    (0..n)
        .map(|i| {
            let r = next();
            let day = start + (r % 3653) as i64;
            let (y, m, d) = civil(day);
            let secs = (r >> 20) % 86_400;
            let (w, h) = SHAPES[((r >> 40) % 7) as usize];
            let kind = (r >> 50) % 100;
            AssetRecord {
                id: format!("{:016x}{:08x}", r, i),
                filename: Some(format!("IMG_{i:06}.jpg")),
                mime: Some(if kind < 5 { "video/mp4" } else { "image/jpeg" }.into()),
                taken_at: Some(format!(
                    "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
                    secs / 3600,
                    (secs / 60) % 60,
                    secs % 60
                )),
                width: Some(w),
                height: Some(h),
                status: Some("ready".into()),
                duration: (kind < 5).then_some((r % 300) as f64),
                motion: (5..8).contains(&kind).then(|| "m".into()),
                favorite: (kind == 9).then_some(true),
                ..Default::default()
            }
        })
        .collect()
}

async fn next_frame() -> f64 {
    let p = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.request_animation_frame(&resolve);
        }
    });
    wasm_bindgen_futures::JsFuture::from(p)
        .await
        .ok()
        .and_then(|v| v.as_f64())
        .unwrap_or_else(now_ms)
}

fn dom_nodes() -> u32 {
    web_sys::window()
        .and_then(|w| w.document())
        .map(|d| d.get_elements_by_tag_name("*").length())
        .unwrap_or(0)
}

fn stats(mut v: Vec<f64>) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::json!(null);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    let r = |x: f64| (x * 100.0).round() / 100.0;
    serde_json::json!({
        "n": v.len(),
        "p50": r(p(0.5)),
        "p95": r(p(0.95)),
        "max": r(v[v.len() - 1]),
        "long_frames": v.iter().filter(|&&x| x > 17.5).count(),
        "dropped_frames": v.iter().filter(|&&x| x > 25.0).count(),
    })
}

/// Scrolls `frames` frames by `step` px, then jumps through the scrubber; frame-time stats.
async fn run_bench(ui: Ui, frames: usize, step: i32) -> serde_json::Value {
    let Some(sc) = scroller() else {
        return serde_json::json!({"error": "no timeline"});
    };
    sc.set_scroll_top(0);
    next_frame().await;
    let mut last = next_frame().await;
    let mut times = Vec::with_capacity(frames);
    let mut max_nodes = 0;
    let mut wraps = 0;
    for i in 0..frames {
        let before = sc.scroll_top();
        sc.set_scroll_top(before + step);
        if sc.scroll_top() == before {
            sc.set_scroll_top(0);
            wraps += 1;
        }
        let t = next_frame().await;
        times.push(t - last);
        last = t;
        if i % 10 == 0 {
            max_nodes = max_nodes.max(dom_nodes());
        }
    }
    let mut jumps = Vec::new();
    for k in 0..20u32 {
        let f = ((k * 7919) % 100) as f64 / 100.0;
        jump_to(f);
        let t = next_frame().await;
        jumps.push(t - last);
        last = t;
        max_nodes = max_nodes.max(dom_nodes());
    }
    let (n, layout_ms, sort_ms, total, blocks) = VIEW.with(|v| {
        let v = v.borrow();
        (
            v.items.len(),
            v.layout_ms,
            v.sort_ms,
            v.layout.total,
            v.layout.blocks.len(),
        )
    });
    // A full relayout at another width, as a resize would do.
    let t = now_ms();
    VIEW.with(|v| {
        let v = v.borrow();
        let _ = Layout::build(&v.cells, 900.0, 150.0);
    });
    let relayout_ms = now_ms() - t;
    let _ = ui;
    serde_json::json!({
        "assets": n,
        "scroll_step_px": step,
        "wrapped_to_top": wraps,
        "frames": stats(times),
        "scrubber_jumps": stats(jumps),
        "layout_ms": (layout_ms * 100.0).round() / 100.0,
        "relayout_ms": (relayout_ms * 100.0).round() / 100.0,
        "sort_ms": (sort_ms * 100.0).round() / 100.0,
        "content_height_px": total.round(),
        "layout_blocks": blocks,
        "dom_nodes_max": max_nodes,
        "dom_nodes_end": dom_nodes(),
    })
}

/// `?bench=N`: N synthetic assets, no server; `window.__tesseraBench(frames, step)` runs it.
pub fn start_bench(ui: Ui, n: usize) {
    BENCH.set(true);
    ui.screen.set(Screen::Timeline);
    let t = now_ms();
    let recs = synthetic(n);
    log(&format!(
        "bench: {n} synthetic assets in {:.0} ms",
        now_ms() - t
    ));
    set_items(ui, recs.iter().map(|r| Arc::new(Item::of(r))).collect());
    let f = Closure::<dyn FnMut(JsValue, JsValue) -> js_sys::Promise>::new(
        move |frames: JsValue, step: JsValue| {
            let frames = frames.as_f64().unwrap_or(300.0).max(1.0) as usize;
            let step = step.as_f64().unwrap_or(2000.0) as i32;
            wasm_bindgen_futures::future_to_promise(async move {
                let v = run_bench(ui, frames, step).await;
                Ok(JsValue::from_str(&v.to_string()))
            })
        },
    );
    if let Some(w) = web_sys::window() {
        let _ = js_sys::Reflect::set(&w, &"__tesseraBench".into(), f.as_ref());
    }
    f.forget();
}

/// Ids currently selected, in view order.
pub fn selected_in_order(ui: Ui) -> Vec<AssetRecord> {
    let sel: HashSet<String> = ui.selected.get_untracked();
    VIEW.with(|v| {
        v.borrow()
            .items
            .iter()
            .filter(|r| sel.contains(&*r.id))
            .map(|r| r.record())
            .collect()
    })
}
