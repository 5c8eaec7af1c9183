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
        </section>
    }
}
