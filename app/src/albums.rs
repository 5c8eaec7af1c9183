//! The Albums page (from the local catalogue: album documents sync like the rest, so the list
//! and an album's photos show offline, with the thumbnails this browser has seen), "Add to
//! album" for the selection, and the admin's Members page (online: accounts live on the node).

use leptos::prelude::*;
use leptos::task::spawn_local;
use tessera_core::{Activity, AlbumRole, AlbumView};

use crate::state::{user_id, Ui, CORE};
use crate::thumbs::load_thumb;
use crate::{net, routes};

thread_local! {
    /// Household members' names by id (from `GET /api/users` when online; kept in
    /// localStorage so that albums and comments show names offline too).
    static NAMES: std::cell::RefCell<std::collections::HashMap<String, String>> =
        std::cell::RefCell::new(load_names());
}

const NAMES_KEY: &str = "tessera.names";

fn load_names() -> std::collections::HashMap<String, String> {
    web_sys::window()
        .and_then(|w| w.local_storage().ok().flatten())
        .and_then(|s| s.get_item(NAMES_KEY).ok().flatten())
        .and_then(|v| serde_json::from_str(&v).ok())
        .unwrap_or_default()
}

/// A member's name for display: "you", their name, or the start of their id.
pub fn name_of(user: &str) -> String {
    if user_id().as_deref() == Some(user) {
        return "you".into();
    }
    NAMES
        .with(|n| n.borrow().get(user).cloned())
        .unwrap_or_else(|| short(user))
}

/// Refreshes the members' names from the node (quietly does nothing offline).
pub async fn refresh_names(ui: Ui) {
    let Ok(v) = net::json("GET", "/api/users", None).await else {
        return;
    };
    let names: std::collections::HashMap<String, String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| {
                    Some((u["id"].as_str()?.to_owned(), u["name"].as_str()?.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(s) = web_sys::window().and_then(|w| w.local_storage().ok().flatten()) {
        if let Ok(json) = serde_json::to_string(&names) {
            let _ = s.set_item(NAMES_KEY, &json);
        }
    }
    let changed = NAMES.with(|n| {
        let mut n = n.borrow_mut();
        let changed = *n != names;
        *n = names;
        changed
    });
    if changed {
        ui.albums_ver.update(|v| *v += 1);
    }
}

/// The user's albums (owned and shared with them), from the local library.
fn my_albums() -> Vec<AlbumView> {
    let Some(me) = user_id() else {
        return Vec::new();
    };
    CORE.with(|c| c.borrow().lib.albums_of(&me).unwrap_or_default())
}

/// Names of my own albums (suggestions for "Add to album").
pub fn owned_album_names() -> Vec<String> {
    let me = user_id().unwrap_or_default();
    my_albums()
        .into_iter()
        .filter(|a| a.owner == me)
        .map(|a| a.name)
        .collect()
}

/// A change to the local catalogue made by me (offline too): saved to IndexedDB, then synced;
/// the node accepts what my role allows and refuses the rest.
pub fn local_change<T>(
    ui: Ui,
    f: impl FnOnce(&mut tessera_core::Library, &str) -> Result<T, String>,
) -> Result<T, String> {
    let me = user_id().ok_or("signed out")?;
    let out = CORE.with(|c| f(&mut c.borrow_mut().lib, &me))?;
    crate::state::refresh(ui);
    ui.albums_ver.update(|v| *v += 1);
    crate::catalogue::save_and_push(ui);
    Ok(out)
}

/// Puts the selection in the album called `name`: an album of mine or one I edit with that
/// name, else a new album of mine. Written to the album document on this device, so it works
/// offline; my own photos are added by me, anyone else's (a partner's) through the node.
pub async fn add_to_album(ui: Ui, name: String, ids: Vec<String>) -> Result<String, String> {
    let name = name.trim().to_owned();
    if name.is_empty() {
        return Err("Give the album a name".into());
    }
    let me = user_id().unwrap_or_default();
    let existing = my_albums().into_iter().find(|a| {
        a.name == name && matches!(a.role_of(&me), Some(AlbumRole::Owner | AlbumRole::Editor))
    });
    let (mine, others): (Vec<String>, Vec<String>) = ids.iter().cloned().partition(|id| {
        crate::catalogue::find_record(id).is_some_and(|r| {
            // A record of my own months (partners' photos are in their documents).
            CORE.with(|c| {
                tessera_core::DocId::shard(&me, &r.month())
                    .is_ok_and(|d| c.borrow().lib.asset_in(&d, id).ok().flatten().is_some())
            })
        })
    });
    let now = crate::state::now_rfc3339();
    let album_id = local_change(ui, |lib, me| {
        let doc = match &existing {
            Some(a) => tessera_core::DocId::album(&a.id).map_err(|e| e.to_string())?,
            None => {
                let id = crate::session::hex(&crate::session::random_bytes(16));
                lib.create_album(&id, me, &name, "", &now)
                    .map_err(|e| e.to_string())?
            }
        };
        let items: Vec<(String, String)> =
            mine.iter().map(|id| (id.clone(), me.to_owned())).collect();
        lib.add_album_items(&doc, &items, me, &now)
            .map_err(|e| e.to_string())?;
        Ok(doc.album_id().unwrap_or_default().to_owned())
    })?;
    if !others.is_empty() {
        // Let the album reach the node first, then add what only the node can vouch for.
        crate::catalogue::sync_now(ui).await;
        if let Err(e) = net::json(
            "PUT",
            &format!("/api/albums/{album_id}/assets"),
            Some(serde_json::json!({"ids": others})),
        )
        .await
        {
            return Err(if e.is_offline() {
                format!(
                    "Added {} of yours; the others need the node (offline)",
                    mine.len()
                )
            } else {
                e.message
            });
        }
        crate::catalogue::sync_now(ui).await;
    }
    Ok(format!("Added {} to \u{201c}{name}\u{201d}", ids.len()))
}

#[component]
pub fn AlbumsPage(ui: Ui) -> impl IntoView {
    spawn_local(refresh_names(ui));
    let albums = move || {
        ui.albums_ver.get();
        my_albums()
    };
    view! {
        <div class="albums" id="albums-page">
            {move || match ui.album.get().and_then(|id| albums().into_iter().find(|a| a.id == id)) {
                Some(a) => view! { <AlbumDetail ui=ui album=a/> }.into_any(),
                None => {
                    let list = albums();
                    if list.is_empty() {
                        view! {
                            <div class="empty"><h2>"No albums yet"</h2>
                                <p>"Select photos in Photos and choose \u{201c}Add to album\u{201d}."</p></div>
                        }.into_any()
                    } else {
                        let me = user_id().unwrap_or_default();
                        view! {
                            <h2>"Albums"</h2>
                            <div class="album-cards">
                                {list.into_iter().map(|a| {
                                    let cover = a.cover.clone().or_else(|| a.items.first().map(|i| i.asset.clone()));
                                    if let Some(c) = cover.clone() { spawn_local(load_thumb(ui, c)); }
                                    let id = a.id.clone();
                                    let shared = if a.owner != me {
                                        format!("shared by {}", name_of(&a.owner))
                                    } else if a.members.is_empty() {
                                        String::new()
                                    } else {
                                        format!("shared with {}", a.members.len())
                                    };
                                    view! {
                                        <figure class="album-card" id=format!("album-{}", a.id) on:click=move |_| routes::open_album(ui, Some(id.clone()))>
                                            {move || {
                                                let src = cover.as_ref().and_then(|c| ui.thumbs.with(|t| t.get(c).cloned())).unwrap_or_default();
                                                view! { <img src=src alt=""/> }
                                            }}
                                            <figcaption>
                                                <span class="album-name">{a.name.clone()}</span>
                                                <span class="dim album-count">{format!("{} photo{}", a.items.len(), if a.items.len() == 1 { "" } else { "s" })}</span>
                                                <span class="dim">{shared}</span>
                                                {activity_badge(&a.id)}
                                            </figcaption>
                                        </figure>
                                    }
                                }).collect_view()}
                            </div>
                        }.into_any()
                    }
                }
            }}
        </div>
    }
}

#[component]
fn AlbumDetail(ui: Ui, album: AlbumView) -> impl IntoView {
    for i in &album.items {
        spawn_local(load_thumb(ui, i.asset.clone()));
    }
    let me = user_id().unwrap_or_default();
    let role = album.role_of(&me);
    let members: Vec<String> = album
        .members
        .iter()
        .map(|(u, r)| format!("{} ({})", name_of(u), r.as_str()))
        .collect();
    let items = album.items.clone();
    let doc = tessera_core::DocId::album(&album.id).ok();
    let activities = {
        let doc = doc.clone();
        move || {
            ui.albums_ver.get();
            doc.as_ref()
                .map(|d| CORE.with(|c| c.borrow().lib.activities(d).unwrap_or_default()))
                .unwrap_or_default()
        }
    };
    let comment = RwSignal::new(String::new());
    let message = RwSignal::new(None::<String>);
    let write_activity = {
        let doc = doc.clone();
        move |kind: &str, text: Option<String>| {
            if let Some(doc) = &doc {
                if let Err(e) = add_activity(ui, doc, None, kind, text) {
                    message.set(Some(e));
                }
            }
        }
    };
    let unlike = {
        let doc = doc.clone();
        move |id: String| {
            if let Some(doc) = &doc {
                if let Err(e) = remove_activity(ui, doc, &id) {
                    message.set(Some(e));
                }
            }
        }
    };
    let liked = {
        let me = me.clone();
        let activities = activities.clone();
        move || {
            activities()
                .into_iter()
                .find(|a| a.kind == "like" && a.user == me && a.asset.is_none())
                .map(|a| a.id)
        }
    };
    let link = RwSignal::new(None::<String>);
    let album_id = album.id.clone();
    let make_link = move |_| {
        let album_id = album_id.clone();
        spawn_local(async move {
            let body = serde_json::json!({"type": "ALBUM", "albumId": album_id});
            match net::json("POST", "/api/shared-links", Some(body)).await {
                Ok(v) => {
                    let origin = web_sys::window()
                        .and_then(|w| w.location().origin().ok())
                        .unwrap_or_default();
                    link.set(Some(format!(
                        "{origin}/share/{}",
                        v["key"].as_str().unwrap_or_default()
                    )));
                }
                Err(e) if e.is_offline() => {
                    message.set(Some("Links are served by the node: you are offline".into()))
                }
                Err(e) => message.set(Some(e.message)),
            }
        })
    };
    let activity_on = album.activity && role.is_some();
    let write_comment = write_activity.clone();
    view! {
        <div class="album-detail" id="album-detail">
            <button id="album-back" class="link" on:click=move |_| routes::open_album(ui, None)>"← Albums"</button>
            <h2 id="album-title">{album.name.clone()}</h2>
            <p class="dim">{album.description.clone()}</p>
            <p class="dim">{format!("{} photo{}", album.items.len(), if album.items.len() == 1 { "" } else { "s" })}
                {(!members.is_empty()).then(|| format!(" · members: {}", members.join(", ")))}
                {role.map(|r| format!(" · you: {}", r.as_str()))}</p>
            {(role == Some(AlbumRole::Owner)).then(|| view! {
                <p><button id="album-link" class="button" on:click=make_link>"Create a public link"</button>
                {move || link.get().map(|l| view! { <input id="album-link-url" class="link-url" readonly prop:value=l/> })}</p>
            })}
            <div class="album-grid">
                {items.into_iter().map(|i| {
                    let id = i.asset.clone();
                    let data_id = id.clone();
                    let open_id = id.clone();
                    view! {
                        <div class="album-tile" data-id=data_id on:click=move |_| {
                            // Another member's photo is not in this device's catalogue: the
                            // viewer shows it from the node with what little it knows.
                            let r = crate::catalogue::find_record(&open_id).unwrap_or_else(|| tessera_core::AssetRecord {
                                id: open_id.clone(),
                                ..Default::default()
                            });
                            routes::open_viewer(ui, r);
                        }>
                            {move || {
                                let src = ui.thumbs.with(|t| t.get(&id).cloned());
                                match src {
                                    Some(s) => view! { <img class="loaded" src=s alt=""/> }.into_any(),
                                    None => view! { <div class="placeholder"></div> }.into_any(),
                                }
                            }}
                        </div>
                    }
                }).collect_view()}
            </div>
            {activity_on.then(|| {
                let write_like = write_activity.clone();
                let liked2 = liked.clone();
                let activities2 = activities.clone();
                view! {
                <section class="activity" id="album-activity">
                    <h3>"Comments"
                        <button id="album-like" class="link" on:click=move |_| match liked2() {
                            Some(id) => unlike(id),
                            None => write_like("like", None),
                        }>{move || if liked().is_some() { " ♥ liked" } else { " ♡ like" }}</button>
                        <span class="dim" id="album-likes">{move || {
                            let n = activities().iter().filter(|a| a.kind == "like").count();
                            format!(" {n} like{}", if n == 1 { "" } else { "s" })
                        }}</span>
                    </h3>
                    <ul class="comments" id="album-comments">
                        {move || activities2().into_iter().filter(|a| a.kind == "comment").map(|a| view! {
                            <li class="comment"><b>{name_of(&a.user)}</b>" "<span class="comment-text">{a.comment.clone().unwrap_or_default()}</span>
                                <span class="dim">{format!(" · {}", a.at.get(..16).unwrap_or(&a.at).replace('T', " "))}</span></li>
                        }).collect_view()}
                    </ul>
                    <form id="comment-form" on:submit=move |ev| {
                        ev.prevent_default();
                        let text = comment.get_untracked().trim().to_owned();
                        if !text.is_empty() {
                            write_comment("comment", Some(text));
                            comment.set(String::new());
                        }
                    }>
                        <input id="comment-input" placeholder="Say something (works offline)" maxlength="2000"
                            prop:value=move || comment.get() on:input=move |e| comment.set(event_target_value(&e))/>
                        <button class="button" type="submit">"Post"</button>
                    </form>
                </section>
            }})}
            {move || message.get().map(|m| view! { <p class="hint">{m}</p> })}
        </div>
    }
}

/// Writes a comment or like of mine on an album (`asset`: on one of its photos) on this
/// device; it syncs like any change.
fn add_activity(
    ui: Ui,
    doc: &tessera_core::DocId,
    asset: Option<String>,
    kind: &str,
    comment: Option<String>,
) -> Result<bool, String> {
    let a = Activity {
        id: crate::session::hex(&crate::session::random_bytes(12)),
        kind: kind.to_owned(),
        user: user_id().unwrap_or_default(),
        asset,
        comment,
        at: crate::state::now_rfc3339(),
    };
    local_change(ui, |lib, _| {
        lib.add_activity(doc, &a).map_err(|e| e.to_string())
    })
}

/// Removes one of my comments or likes (an unlike).
fn remove_activity(ui: Ui, doc: &tessera_core::DocId, id: &str) -> Result<bool, String> {
    local_change(ui, |lib, _| {
        lib.remove_activity(doc, id).map_err(|e| e.to_string())
    })
}

/// Comments and likes on one photo, in the first shared album of mine that holds it (shown
/// in the viewer). Written on this device, offline too, like the album's own comments.
#[component]
pub fn PhotoActivity(ui: Ui, asset: String) -> impl IntoView {
    let me = user_id().unwrap_or_default();
    let album = my_albums()
        .into_iter()
        .find(|a| a.activity && !a.members.is_empty() && a.items.iter().any(|i| i.asset == asset));
    let album = album?;
    let doc = tessera_core::DocId::album(&album.id).ok()?;
    let comment = RwSignal::new(String::new());
    let acts = {
        let (doc, asset) = (doc.clone(), asset.clone());
        move || {
            ui.albums_ver.get();
            CORE.with(|c| c.borrow().lib.activities(&doc).unwrap_or_default())
                .into_iter()
                .filter(|a| a.asset.as_deref() == Some(asset.as_str()))
                .collect::<Vec<_>>()
        }
    };
    let write = {
        let (doc, asset) = (doc.clone(), asset.clone());
        move |kind: &str, text: Option<String>| {
            if let Err(e) = add_activity(ui, &doc, Some(asset.clone()), kind, text) {
                ui.error.set(Some(e));
            }
        }
    };
    let my_like = {
        let acts = acts.clone();
        let me = me.clone();
        move || {
            acts()
                .into_iter()
                .find(|a| a.kind == "like" && a.user == me)
                .map(|a| a.id)
        }
    };
    let toggle_like = {
        let (doc, write, my_like) = (doc.clone(), write.clone(), my_like.clone());
        move |_| match my_like() {
            Some(id) => {
                if let Err(e) = remove_activity(ui, &doc, &id) {
                    ui.error.set(Some(e));
                }
            }
            None => write("like", None),
        }
    };
    let acts2 = acts.clone();
    Some(view! {
        <section class="photo-activity" id="photo-activity">
            <p class="dim">{format!("In \u{201c}{}\u{201d}", album.name)}
                <button id="photo-like" class="link" on:click=toggle_like>
                    {move || {
                        let n = acts().iter().filter(|a| a.kind == "like").count();
                        format!("{} {n}", if my_like().is_some() { "♥" } else { "♡" })
                    }}
                </button></p>
            <ul class="comments" id="photo-comments">
                {move || acts2().into_iter().filter(|a| a.kind == "comment").map(|a| view! {
                    <li><b>{name_of(&a.user)}</b>" "{a.comment.clone().unwrap_or_default()}</li>
                }).collect_view()}
            </ul>
            <form id="photo-comment-form" on:submit=move |ev| {
                ev.prevent_default();
                let text = comment.get_untracked().trim().to_owned();
                if !text.is_empty() {
                    write("comment", Some(text));
                    comment.set(String::new());
                }
            }>
                <input id="photo-comment-input" placeholder="Comment on this photo" maxlength="2000"
                    prop:value=move || comment.get() on:input=move |e| comment.set(event_target_value(&e))/>
            </form>
        </section>
    })
}

/// The album card's activity indicator: how many comments and likes it has.
fn activity_badge(album: &str) -> Option<impl IntoView> {
    let doc = tessera_core::DocId::album(album).ok()?;
    let acts = CORE.with(|c| c.borrow().lib.activities(&doc).unwrap_or_default());
    let comments = acts.iter().filter(|a| a.kind == "comment").count();
    let likes = acts.len() - comments;
    (!acts.is_empty()).then(|| {
        view! { <span class="dim album-activity">{format!("💬 {comments} · ♥ {likes}")}</span> }
    })
}

fn short(user: &str) -> String {
    user.chars().take(8).collect()
}

/// The admin's page: the household's accounts.
#[component]
pub fn MembersPage() -> impl IntoView {
    let users = RwSignal::new(Vec::<serde_json::Value>::new());
    let message = RwSignal::new(None::<String>);
    let load = move || {
        spawn_local(async move {
            match net::json("GET", "/api/admin/users?withDeleted=true", None).await {
                Ok(v) => users.set(v.as_array().cloned().unwrap_or_default()),
                Err(e) => message.set(Some(e.message)),
            }
        })
    };
    load();
    let (name, email, password, quota, admin) = (
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
        RwSignal::new(false),
    );
    let act = move |method: &'static str, path: String, done: &'static str| {
        spawn_local(async move {
            match net::json(method, &path, None).await {
                Ok(_) => {
                    message.set(Some(done.into()));
                    load();
                }
                Err(e) => message.set(Some(e.message)),
            }
        })
    };
    view! {
        <div class="members" id="members-page">
            <h2>"Household members"</h2>
            <table class="member-list">
                <thead><tr><th>"Name"</th><th>"Email"</th><th>"Role"</th><th>"Storage"</th><th></th><th></th></tr></thead>
                <tbody>
                <For each=move || users.get() key=|u| format!("{}{}", u["id"], u["status"]) let:u>
                    {
                        let id = u["id"].as_str().unwrap_or_default().to_owned();
                        let deleted = u["status"] == "deleted";
                        let used = u["quotaUsageInBytes"].as_u64().unwrap_or(0);
                        let quota = u["quotaSizeInBytes"].as_u64();
                        let storage = match quota {
                            Some(q) => format!("{} of {}", human(used), human(q)),
                            None => human(used),
                        };
                        let role = if u["isAdmin"] == true { "admin" } else { "member" };
                        let must = u["shouldChangePassword"] == true;
                        view! {
                            <tr class=if deleted { "member deleted" } else { "member" } data-email=u["email"].as_str().unwrap_or_default().to_owned()>
                                <td>{u["name"].as_str().unwrap_or_default().to_owned()}</td>
                                <td>{u["email"].as_str().unwrap_or_default().to_owned()}</td>
                                <td>{role}{must.then_some(" · must change password")}{deleted.then_some(" · deleted")}</td>
                                <td>{storage}</td>
                                <td>{(!deleted).then(|| {
                                    let id = id.clone();
                                    let pw = RwSignal::new(String::new());
                                    let open = RwSignal::new(false);
                                    view! {
                                        <Show when=move || open.get() fallback=move || view! {
                                            <button class="link reset-password" on:click=move |_| open.set(true)>"Reset password"</button>
                                        }>
                                            <form class="member-form" on:submit={
                                                let id = id.clone();
                                                move |ev| {
                                                    ev.prevent_default();
                                                    let body = serde_json::json!({"password": pw.get_untracked(), "shouldChangePassword": true});
                                                    let id = id.clone();
                                                    spawn_local(async move {
                                                        match net::json("PUT", &format!("/api/admin/users/{id}"), Some(body)).await {
                                                            Ok(_) => {
                                                                open.set(false);
                                                                pw.set(String::new());
                                                                message.set(Some("Password reset: they choose their own at their next sign-in.".into()));
                                                            }
                                                            Err(e) => message.set(Some(e.message)),
                                                        }
                                                    });
                                                }
                                            }>
                                                <input type="password" placeholder="New password (8+)" autocomplete="new-password"
                                                    prop:value=move || pw.get() on:input=move |e| pw.set(event_target_value(&e))/>
                                                <button class="button" type="submit">"Set"</button>
                                            </form>
                                        </Show>
                                    }
                                })}</td>
                                <td>{if deleted {
                                    let id = id.clone();
                                    view! { <button class="link" on:click=move |_| act("POST", format!("/api/admin/users/{id}/restore"), "Restored: they can sign in again; their photos are in their trash.")>"Restore"</button> }.into_any()
                                } else {
                                    let id = id.clone();
                                    view! { <button class="link danger" on:click=move |_| act("DELETE", format!("/api/admin/users/{id}"), "Deleted: they cannot sign in; their photos are in their trash.")>"Delete"</button> }.into_any()
                                }}</td>
                            </tr>
                        }
                    }
                </For>
                </tbody>
            </table>
            <h3>"Add a member"</h3>
            <form id="member-form" class="member-form" on:submit=move |ev| {
                ev.prevent_default();
                let gib: Option<f64> = quota.get_untracked().trim().parse().ok();
                let body = serde_json::json!({
                    "name": name.get_untracked(), "email": email.get_untracked(),
                    "password": password.get_untracked(), "isAdmin": admin.get_untracked(),
                    "shouldChangePassword": true,
                    "quotaSizeInBytes": gib.map(|g| (g * 1073741824.0) as u64),
                });
                spawn_local(async move {
                    match net::json("POST", "/api/admin/users", Some(body)).await {
                        Ok(_) => {
                            name.set(String::new());
                            email.set(String::new());
                            password.set(String::new());
                            quota.set(String::new());
                            message.set(Some("Added. At their first sign-in they are asked to choose their own password.".into()));
                            load();
                        }
                        Err(e) => message.set(Some(e.message)),
                    }
                })
            }>
                <input id="member-name" placeholder="Name" prop:value=move || name.get() on:input=move |e| name.set(event_target_value(&e))/>
                <input id="member-email" type="email" placeholder="Email" prop:value=move || email.get() on:input=move |e| email.set(event_target_value(&e))/>
                <input id="member-password" type="password" placeholder="Initial password (8+)" autocomplete="new-password"
                    prop:value=move || password.get() on:input=move |e| password.set(event_target_value(&e))/>
                <input id="member-quota" placeholder="Quota in GiB (empty: none)" prop:value=move || quota.get() on:input=move |e| quota.set(event_target_value(&e))/>
                <label class="dim"><input type="checkbox" prop:checked=move || admin.get() on:change=move |e| admin.set(event_target_checked(&e))/>" admin"</label>
                <button id="member-add" class="button" type="submit">"Add member"</button>
            </form>
            {move || message.get().map(|m| view! { <p class="hint" id="members-message">{m}</p> })}
            <ScrubPanel/>
        </div>
    }
}

/// The node's storage check (the scheduled scrub): progress of the running pass, the last
/// pass, corrupt files and whether each came back; "Check every file now".
#[component]
fn ScrubPanel() -> impl IntoView {
    let status = RwSignal::new(None::<serde_json::Value>);
    let message = RwSignal::new(None::<String>);
    let load = move || {
        spawn_local(async move {
            match net::json("GET", "/api/tessera/admin/scrub", None).await {
                Ok(v) => status.set(Some(v)),
                Err(e) => message.set(Some(e.message)),
            }
        })
    };
    load();
    // While a pass runs, the panel follows it.
    let ticker = set_interval_with_handle(
        move || {
            if status.get_untracked().is_some_and(|s| s["running"] == true) {
                load();
            }
        },
        std::time::Duration::from_secs(3),
    );
    on_cleanup(move || {
        if let Ok(t) = ticker {
            t.clear();
        }
    });
    let corrupt_list = |list: &serde_json::Value| {
        list.as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|c| {
                let state = if c["repaired"] == true {
                    "repaired"
                } else {
                    "quarantined, waiting for a copy from another node"
                };
                view! {
                    <li class="scrub-corrupt">{format!(
                        "{} {}… — {state}",
                        c["kind"].as_str().unwrap_or_default(),
                        c["hash"].as_str().unwrap_or_default().get(..12).unwrap_or_default()
                    )}</li>
                }
            })
            .collect_view()
    };
    // "2026-12-01T17:45:44Z" → "2026-12-01 17:45 UTC".
    let when = |v: Option<&serde_json::Value>| {
        let t = v.and_then(|v| v.as_str()).unwrap_or_default();
        match (t.get(..10), t.get(11..16)) {
            (Some(d), Some(h)) => format!("{d} {h} UTC"),
            _ => t.to_owned(),
        }
    };
    let summary = move || {
        let s = status.get()?;
        let cfg = &s["config"];
        let rate = cfg["rate"].as_f64().unwrap_or(0.0) / 1e6;
        let days = cfg["every"].as_f64().unwrap_or(0.0) / 86_400.0;
        let schedule = if rate > 0.0 {
            format!("Every file is re-read and checked against its hash every {days:.0} days, at {rate:.0} MB/s.")
        } else {
            "Scheduled checks are off (--scrub-rate-mb 0).".to_owned()
        };
        let current = s["current"].as_object().map(|c| {
            let done = c.get("filesDone").and_then(|v| v.as_u64()).unwrap_or(0);
            let total = c.get("filesTotal").and_then(|v| v.as_u64()).unwrap_or(0);
            let bytes = c.get("bytesDone").and_then(|v| v.as_u64()).unwrap_or(0);
            format!(
                "Checking: {done} of {total} files ({}), started {}.",
                human(bytes),
                when(c.get("started"))
            )
        });
        let last = s["lastPass"].as_object().map(|l| {
            let n = l
                .get("corrupt")
                .and_then(|c| c.as_array())
                .map_or(0, |c| c.len());
            format!(
                "Last check finished {}: {} files, {} in {:.0} s — {}.",
                when(l.get("finished")),
                l.get("files").and_then(|v| v.as_u64()).unwrap_or(0),
                human(l.get("bytes").and_then(|v| v.as_u64()).unwrap_or(0)),
                l.get("seconds").and_then(|v| v.as_f64()).unwrap_or(0.0),
                if n == 0 {
                    "every file intact".to_owned()
                } else {
                    format!("{n} damaged")
                }
            )
        });
        let next = s["nextPass"]
            .is_string()
            .then(|| format!("Next check: {}.", when(Some(&s["nextPass"]))));
        Some(view! {
            <p class="hint">{schedule}</p>
            {current.map(|c| view! { <p id="scrub-current">{c}</p> })}
            <p id="scrub-last">{last.unwrap_or_else(|| "No check has finished yet.".into())}</p>
            {next.map(|n| view! { <p class="hint">{n}</p> })}
            <ul>{corrupt_list(&s["current"]["corrupt"])}{corrupt_list(&s["lastPass"]["corrupt"])}</ul>
        })
    };
    view! {
        <section class="scrub" id="scrub-panel">
            <h3>"Storage check"</h3>
            {summary}
            <button id="scrub-now" class="button secondary" on:click=move |_| {
                let before = status.get_untracked().map(|s| s["lastPass"]["finished"].clone());
                spawn_local(async move {
                    match net::json("POST", "/api/tessera/admin/scrub", None).await {
                        Ok(_) => {
                            message.set(Some("Checking every file now.".into()));
                            // Until the pass shows as running (the ticker follows it from
                            // there) or a small library's pass has already finished.
                            for _ in 0..40 {
                                gloo_timers::future::TimeoutFuture::new(250).await;
                                let Ok(s) = net::json("GET", "/api/tessera/admin/scrub", None).await else {
                                    continue;
                                };
                                let done = s["running"] == false
                                    && Some(&s["lastPass"]["finished"]) != before.as_ref()
                                    && !s["lastPass"].is_null();
                                let running = s["running"] == true;
                                status.set(Some(s));
                                if done {
                                    message.set(None);
                                }
                                if done || running {
                                    break;
                                }
                            }
                        }
                        Err(e) => message.set(Some(e.message)),
                    }
                })
            }>"Check every file now"</button>
            {move || message.get().map(|m| view! { <p class="hint">{m}</p> })}
        </section>
    }
}

fn human(bytes: u64) -> String {
    const GIB: f64 = 1073741824.0;
    const MIB: f64 = 1048576.0;
    let b = bytes as f64;
    if b >= GIB {
        format!("{:.1} GiB", b / GIB)
    } else if b >= MIB {
        format!("{:.1} MiB", b / MIB)
    } else {
        format!("{} KiB", bytes / 1024)
    }
}
