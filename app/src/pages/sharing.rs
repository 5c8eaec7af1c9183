//! The Sharing page: my library shared with a partner (from a month on, or all of it), the
//! partners who share theirs with me (and whether their photos show in my timeline — my own
//! choice, written to my catalogue so it works offline), and my public links (copy, revoke).
//! Partners and links are decided by the node; the page says so when it is offline.

use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::Value;

use crate::albums::local_change;
use crate::net;
use crate::state::{user_id, Ui};

#[component]
pub fn SharingPage(ui: Ui) -> impl IntoView {
    let users = RwSignal::new(Vec::<Value>::new());
    let by = RwSignal::new(Vec::<Value>::new());
    let with = RwSignal::new(Vec::<Value>::new());
    let links = RwSignal::new(Vec::<Value>::new());
    let message = RwSignal::new(None::<String>);
    let load = move || {
        spawn_local(async move {
            let get = |p: &'static str| net::json("GET", p, None);
            match get("/api/users").await {
                Ok(v) => users.set(v.as_array().cloned().unwrap_or_default()),
                Err(e) if e.is_offline() => {
                    message.set(Some(
                        "Offline: sharing is decided by the node. Partners' photos you already have still show."
                            .into(),
                    ));
                    return;
                }
                Err(e) => message.set(Some(e.message)),
            }
            if let Ok(v) = get("/api/partners?direction=shared-by").await {
                by.set(v.as_array().cloned().unwrap_or_default());
            }
            if let Ok(v) = get("/api/partners?direction=shared-with").await {
                with.set(v.as_array().cloned().unwrap_or_default());
            }
            if let Ok(v) = get("/api/shared-links").await {
                links.set(v.as_array().cloned().unwrap_or_default());
            }
        })
    };
    load();
    let partner = RwSignal::new(String::new());
    let since = RwSignal::new(String::new());
    let call = move |method: &'static str, path: String, body: Option<Value>, done: String| {
        spawn_local(async move {
            match net::json(method, &path, body).await {
                Ok(_) => {
                    message.set(Some(done));
                    load();
                    crate::catalogue::sync_now(ui).await;
                }
                Err(e) => message.set(Some(e.message)),
            }
        })
    };
    let me = user_id().unwrap_or_default();
    let origin = web_sys::window()
        .and_then(|w| w.location().origin().ok())
        .unwrap_or_default();
    view! {
        <div class="sharing" id="sharing-page">
            <h2>"Sharing"</h2>
            <h3>"My library"</h3>
            <p class="dim">"A partner sees all your photos (or those from a month on) and may show them in their own timeline."</p>
            <ul class="partner-list" id="shared-by">
                <For each=move || by.get() key=|p| p["id"].to_string() let:p>
                    {
                        let id = p["id"].as_str().unwrap_or_default().to_owned();
                        let label = format!("{} · {}{}", p["name"].as_str().unwrap_or_default(),
                            p["since"].as_str().map(|s| format!("from {s}")).unwrap_or_else(|| "everything".into()),
                            if p["inTimeline"] == true { " · in their timeline" } else { "" });
                        view! { <li class="partner">{label}" "
                            <button class="link danger" on:click=move |_| call("DELETE", format!("/api/partners/{id}"), None,
                                "Stopped: their devices drop your photos at their next sync.".into())>"Stop sharing"</button></li> }
                    }
                </For>
            </ul>
            <form id="partner-form" class="member-form" on:submit=move |ev| {
                ev.prevent_default();
                let id = partner.get_untracked();
                if id.is_empty() { return; }
                let s = since.get_untracked();
                let body = serde_json::json!({"sharedWithId": id, "since": s.trim()});
                call("POST", "/api/partners".into(), Some(body), "Shared.".into());
            }>
                <select id="partner-select" on:change=move |e| partner.set(event_target_value(&e))>
                    <option value="">"Share my library with…"</option>
                    {move || {
                        let me = me.clone();
                        users.get().into_iter().filter(|u| u["id"] != me.as_str()).map(|u| {
                            let id = u["id"].as_str().unwrap_or_default().to_owned();
                            view! { <option value=id>{u["name"].as_str().unwrap_or_default().to_owned()}</option> }
                        }).collect_view()
                    }}
                </select>
                <input id="partner-since" placeholder="from month (YYYY-MM, optional)" maxlength="7"
                    prop:value=move || since.get() on:input=move |e| since.set(event_target_value(&e))/>
                <button id="partner-share" class="button" type="submit">"Share"</button>
            </form>
            <h3>"Shared with me"</h3>
            <ul class="partner-list" id="shared-with">
                <For each=move || with.get() key=|p| p["id"].to_string() let:p>
                    {
                        let id = p["id"].as_str().unwrap_or_default().to_owned();
                        let on = RwSignal::new(p["inTimeline"] == true);
                        let name = p["name"].as_str().unwrap_or_default().to_owned();
                        let data_id = id.clone();
                        view! { <li class="partner" data-id=data_id>{name}" "
                            <label><input type="checkbox" class="partner-timeline" prop:checked=move || on.get() on:change=move |e| {
                                let v = event_target_checked(&e);
                                on.set(v);
                                let sharer = id.clone();
                                // My choice, in my own catalogue: works offline, syncs later.
                                if let Err(err) = local_change(ui, |lib, me| {
                                    lib.set_partner_in_timeline(me, &sharer, v).map_err(|e| e.to_string())
                                }) {
                                    message.set(Some(err));
                                }
                            }/>" show in my timeline"</label></li> }
                    }
                </For>
            </ul>
            <h3>"Public links"</h3>
            <p class="dim">"Anyone with a link sees what it shows, without an account. Make one from an album's page."</p>
            <ul class="link-list" id="link-list">
                <For each=move || links.get() key=|l| l["id"].to_string() let:l>
                    {
                        let id = l["id"].as_str().unwrap_or_default().to_owned();
                        let url = format!("{origin}/share/{}", l["key"].as_str().unwrap_or_default());
                        let what = l["album"]["albumName"].as_str().map(str::to_owned)
                            .unwrap_or_else(|| format!("{} photos", l["assets"].as_array().map_or(0, Vec::len)));
                        let extra = format!("{}{}{}",
                            if l["hasPassword"] == true { " · password" } else { "" },
                            l["expiresAt"].as_str().map(|e| format!(" · until {}", e.get(..10).unwrap_or(e))).unwrap_or_default(),
                            if l["allowDownload"] == true { "" } else { " · no downloads" });
                        view! { <li class="shared-link">{what}{extra}" "
                            <input class="link-url" readonly prop:value=url/>
                            <button class="link danger" on:click=move |_| call("DELETE", format!("/api/shared-links/{id}"), None,
                                "Revoked: the link and every photo it showed answer 404 now.".into())>"Revoke"</button></li> }
                    }
                </For>
            </ul>
            {move || message.get().map(|m| view! { <p class="hint" id="sharing-message">{m}</p> })}
        </div>
    }
}
