//! The devices panel: paired devices, signed-in sessions, password change, sync-node pairing.

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::{net, p2p};

/// The user's paired devices (unpair one: its live connection closes at once) and, for the
/// admin, a pairing ticket for a new sync node.
#[component]
pub(crate) fn HouseholdPanel() -> impl IntoView {
    let devices = RwSignal::new(Vec::<serde_json::Value>::new());
    let sessions = RwSignal::new(Vec::<serde_json::Value>::new());
    let ticket = RwSignal::new(None::<String>);
    let message = RwSignal::new(None::<String>);
    let load = move || {
        spawn_local(async move {
            match net::json("GET", "/api/tessera/devices", None).await {
                Ok(v) => devices.set(v.as_array().cloned().unwrap_or_default()),
                Err(e) => message.set(Some(e.message)),
            }
            match net::json("GET", "/api/sessions", None).await {
                Ok(v) => sessions.set(v.as_array().cloned().unwrap_or_default()),
                Err(e) => message.set(Some(e.message)),
            }
        })
    };
    let (old_pw, new_pw) = (RwSignal::new(String::new()), RwSignal::new(String::new()));
    load();
    let me = p2p::device_id();
    view! {
        <section class="household" id="household">
            <h2>"Devices and sync nodes"</h2>
            <ul>
                <For each=move || devices.get() key=|d| d["endpointId"].as_str().unwrap_or_default().to_owned() let:d>
                    {
                        let id = d["endpointId"].as_str().unwrap_or_default().to_owned();
                        let this = me == id;
                        let label = format!(
                            "{} · {}{} · paired {}",
                            d["name"].as_str().unwrap_or("device"),
                            d["kind"].as_str().unwrap_or("device"),
                            if this { " (this browser)" } else { "" },
                            d["createdAt"].as_str().unwrap_or_default().get(..10).unwrap_or_default(),
                        );
                        view! {
                            <li class="device"><span>{label}</span>
                                <button class="link" on:click=move |_| {
                                    let id = id.clone();
                                    spawn_local(async move {
                                        match net::json("DELETE", &format!("/api/tessera/devices/{id}"), None).await {
                                            Ok(_) => { message.set(Some("Unpaired: its connection was closed.".into())); load(); }
                                            Err(e) => message.set(Some(e.message)),
                                        }
                                    })
                                }>"Unpair"</button>
                            </li>
                        }
                    }
                </For>
            </ul>
            <h2>"Signed-in sessions"</h2>
            <ul id="sessions">
                <For each=move || sessions.get() key=|s| s["id"].as_str().unwrap_or_default().to_owned() let:s>
                    {
                        let id = s["id"].as_str().unwrap_or_default().to_owned();
                        let current = s["current"].as_bool().unwrap_or(false);
                        let agent = s["deviceType"].as_str().filter(|d| !d.is_empty()).unwrap_or("a client");
                        let label = format!(
                            "{}{} · signed in {} · last used {}",
                            if agent.contains("Mozilla") { p2p::describe_browser(agent) } else { agent.chars().take(40).collect() },
                            if current { " (this session)" } else { "" },
                            s["createdAt"].as_str().unwrap_or_default().get(..10).unwrap_or("earlier"),
                            s["updatedAt"].as_str().unwrap_or_default().get(..10).unwrap_or("—"),
                        );
                        view! {
                            <li class="session"><span>{label}</span>
                                <Show when=move || !current>
                                    {
                                        let id = id.clone();
                                        view! {
                                            <button class="link" on:click=move |_| {
                                                let id = id.clone();
                                                spawn_local(async move {
                                                    match net::json("DELETE", &format!("/api/sessions/{id}"), None).await {
                                                        Ok(_) => { message.set(Some("Signed out that session.".into())); load(); }
                                                        Err(e) => message.set(Some(e.message)),
                                                    }
                                                })
                                            }>"Sign out"</button>
                                        }
                                    }
                                </Show>
                            </li>
                        }
                    }
                </For>
            </ul>
            <button id="sign-out-others" class="button secondary" on:click=move |_| {
                spawn_local(async move {
                    match net::json("DELETE", "/api/sessions", None).await {
                        Ok(_) => { message.set(Some("Every other session is signed out.".into())); load(); }
                        Err(e) => message.set(Some(e.message)),
                    }
                })
            }>"Sign out everywhere else"</button>
            <form class="change-password" on:submit=move |ev| {
                ev.prevent_default();
                let body = serde_json::json!({"password": old_pw.get_untracked(), "newPassword": new_pw.get_untracked()});
                spawn_local(async move {
                    match net::json("POST", "/api/auth/change-password", Some(body)).await {
                        Ok(_) => {
                            old_pw.set(String::new());
                            new_pw.set(String::new());
                            message.set(Some("Password changed; every other session is signed out.".into()));
                            load();
                        }
                        Err(e) => message.set(Some(e.message)),
                    }
                })
            }>
                <input type="password" placeholder="Current password" autocomplete="current-password"
                    prop:value=move || old_pw.get() on:input=move |e| old_pw.set(event_target_value(&e))/>
                <input type="password" placeholder="New password (8+ characters)" autocomplete="new-password"
                    prop:value=move || new_pw.get() on:input=move |e| new_pw.set(event_target_value(&e))/>
                <button class="button secondary" type="submit">"Change password"</button>
            </form>
            <button id="pairing-ticket" class="button secondary" on:click=move |_| {
                spawn_local(async move {
                    match net::json("POST", "/api/pairing/tickets", None).await {
                        Ok(v) => ticket.set(v["usage"].as_str().map(str::to_owned)),
                        Err(e) => message.set(Some(e.message)),
                    }
                })
            }>"Add a sync node…"</button>
            {move || ticket.get().map(|t| view! {
                <p class="hint">"On the new node (valid for one hour, once):"</p>
                <pre id="ticket" class="ticket">{t}</pre>
            })}
            {move || message.get().map(|m| view! { <p class="hint">{m}</p> })}
            <WebhooksPanel/>
        </section>
    }
}

/// Webhooks for scripts and home automation: add one (URL, events), see its last deliveries,
/// send a test event, delete it. The secret is shown once.
#[component]
fn WebhooksPanel() -> impl IntoView {
    let hooks = RwSignal::new(Vec::<serde_json::Value>::new());
    let log = RwSignal::new(None::<(String, Vec<serde_json::Value>)>);
    let note = RwSignal::new(None::<String>);
    let (url, events) = (RwSignal::new(String::new()), RwSignal::new(String::new()));
    let load = move || {
        spawn_local(async move {
            match net::json("GET", "/api/tessera/webhooks", None).await {
                Ok(v) => hooks.set(v.as_array().cloned().unwrap_or_default()),
                Err(e) => note.set(Some(e.message)),
            }
        })
    };
    load();
    let show_log = move |id: String| {
        spawn_local(async move {
            match net::json(
                "GET",
                &format!("/api/tessera/webhooks/{id}/deliveries"),
                None,
            )
            .await
            {
                Ok(v) => log.set(Some((id, v.as_array().cloned().unwrap_or_default()))),
                Err(e) => note.set(Some(e.message)),
            }
        })
    };
    view! {
        <h2>"Webhooks"</h2>
        <p class="hint">"Your node POSTs signed JSON (HMAC-SHA256) to these URLs when something happens, and retries until they answer."</p>
        <ul id="webhooks">
            <For each=move || hooks.get() key=|h| format!("{}{}", h["id"], h["lastDelivery"]) let:h>
                {
                    let id = h["id"].as_str().unwrap_or_default().to_owned();
                    let events: Vec<String> = h["events"].as_array().map(|a| a.iter().filter_map(|e| e.as_str().map(str::to_owned)).collect()).unwrap_or_default();
                    let last = match h["lastDelivery"]["outcome"].as_str() {
                        Some(o) => format!(" · last: {o}{}", h["lastDelivery"]["status"].as_u64().map(|s| format!(" ({s})")).unwrap_or_default()),
                        None => String::new(),
                    };
                    let label = format!(
                        "{} · {}{} · {} queued",
                        h["url"].as_str().unwrap_or_default(),
                        if events.is_empty() { "all events".to_owned() } else { events.join(", ") },
                        last,
                        h["queued"].as_u64().unwrap_or(0)
                    );
                    let (i1, i2, i3) = (id.clone(), id.clone(), id);
                    view! {
                        <li class="session"><span class="webhook">{label}</span>
                            <span>
                                <button class="link webhook-test" on:click=move |_| {
                                    let id = i1.clone();
                                    spawn_local(async move {
                                        match net::json("POST", &format!("/api/tessera/webhooks/{id}/test"), None).await {
                                            Ok(_) => note.set(Some("Test event queued.".into())),
                                            Err(e) => note.set(Some(e.message)),
                                        }
                                        gloo_timers::future::TimeoutFuture::new(1500).await;
                                        load();
                                    })
                                }>"Send test event"</button>
                                <button class="link webhook-log" on:click=move |_| show_log(i2.clone())>"Deliveries"</button>
                                <button class="link" on:click=move |_| {
                                    let id = i3.clone();
                                    spawn_local(async move {
                                        if let Err(e) = net::json("DELETE", &format!("/api/tessera/webhooks/{id}"), None).await {
                                            note.set(Some(e.message));
                                        }
                                        load();
                                    })
                                }>"Delete"</button>
                            </span>
                        </li>
                    }
                }
            </For>
        </ul>
        {move || log.get().map(|(_, entries)| view! {
            <table class="member-list" id="webhook-log">
                <tr><th>"When"</th><th>"Event"</th><th>"Attempt"</th><th>"Result"</th></tr>
                {entries.into_iter().take(20).map(|e| view! {
                    <tr>
                        <td>{e["at"].as_str().unwrap_or_default().get(..19).unwrap_or_default().replace('T', " ")}</td>
                        <td>{e["event"].as_str().unwrap_or_default().to_owned()}</td>
                        <td>{e["attempt"].as_u64().unwrap_or(0)}</td>
                        <td>{format!("{}{}", e["outcome"].as_str().unwrap_or_default(),
                            e["status"].as_u64().map(|s| format!(" · HTTP {s}")).or_else(|| e["error"].as_str().map(|m| format!(" · {m}"))).unwrap_or_default())}</td>
                    </tr>
                }).collect_view()}
            </table>
        })}
        <form class="change-password" id="webhook-form" on:submit=move |ev| {
            ev.prevent_default();
            let evs: Vec<String> = events.get_untracked().split(',').map(|e| e.trim().to_owned()).filter(|e| !e.is_empty()).collect();
            let body = serde_json::json!({"url": url.get_untracked().trim(), "events": evs});
            spawn_local(async move {
                match net::json("POST", "/api/tessera/webhooks", Some(body)).await {
                    Ok(v) => {
                        url.set(String::new());
                        events.set(String::new());
                        note.set(Some(format!("Webhook added. Its secret (shown once): {}", v["secret"].as_str().unwrap_or_default())));
                        load();
                    }
                    Err(e) => note.set(Some(e.message)),
                }
            })
        }>
            <input id="webhook-url" placeholder="https://… (where to POST)" prop:value=move || url.get() on:input=move |e| url.set(event_target_value(&e))/>
            <input id="webhook-events" placeholder="events, comma-separated (empty: all)" prop:value=move || events.get() on:input=move |e| events.set(event_target_value(&e))/>
            <button class="button secondary" type="submit">"Add webhook"</button>
        </form>
        {move || note.get().map(|m| view! { <p class="hint" id="webhook-note">{m}</p> })}
    }
}
