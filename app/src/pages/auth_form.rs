//! Sign-up (the first, admin account) and login.

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::boot::enter_timeline;
use crate::catalogue::sync_now;
use crate::net;
use crate::outbox::drain_outbox;
use crate::session::{self, Session};
use crate::state::Ui;

pub(crate) async fn login(ui: Ui, email: String, password: String) {
    match net::json(
        "POST",
        "/api/auth/login",
        Some(serde_json::json!({"email": email, "password": password})),
    )
    .await
    {
        Ok(r) => {
            let s = Session {
                user_id: r["userId"].as_str().unwrap_or_default().to_owned(),
                email: r["userEmail"].as_str().unwrap_or_default().to_owned(),
                name: r["name"].as_str().unwrap_or_default().to_owned(),
                token: r["accessToken"].as_str().unwrap_or_default().to_owned(),
                is_admin: r["isAdmin"].as_bool().unwrap_or(false),
            };
            session::save(&s);
            ui.error.set(None);
            let must_change = r["shouldChangePassword"].as_bool().unwrap_or(false);
            enter_timeline(ui, s).await;
            if must_change {
                // An admin set this password: ask for the member's own at once.
                ui.household.set(true);
                ui.error.set(Some(
                    "Your password was set by an admin: choose your own below (Change password)."
                        .into(),
                ));
            }
            sync_now(ui).await;
            drain_outbox(ui).await;
        }
        Err(e) => ui.error.set(Some(e.message)),
    }
}

pub(crate) async fn sign_up(ui: Ui, email: String, password: String, name: String) {
    let body = serde_json::json!({"email": email, "password": password, "name": name});
    match net::json("POST", "/api/auth/admin-sign-up", Some(body)).await {
        Ok(_) => login(ui, email, password).await,
        Err(e) => ui.error.set(Some(e.message)),
    }
}

#[component]
pub(crate) fn AuthForm(ui: Ui, signup: bool) -> impl IntoView {
    let email = NodeRef::<leptos::html::Input>::new();
    let password = NodeRef::<leptos::html::Input>::new();
    let name = NodeRef::<leptos::html::Input>::new();
    let val = |r: NodeRef<leptos::html::Input>| r.get().map(|e| e.value()).unwrap_or_default();
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let (e, p, n) = (val(email), val(password), val(name));
        if signup {
            spawn_local(sign_up(ui, e, p, n));
        } else {
            spawn_local(login(ui, e, p));
        }
    };
    view! {
        <form class="auth" id=if signup { "signup-form" } else { "login-form" } on:submit=on_submit>
            <h1>{if signup { "Welcome to Tessera" } else { "Sign in" }}</h1>
            <p class="hint">{if signup { "Create the admin account of this library." } else { "Your photos, on your own devices." }}</p>
            {signup.then(|| view! { <input id="name" node_ref=name placeholder="Name" required/> })}
            <input id="email" node_ref=email type="email" placeholder="Email" required/>
            <input id="password" node_ref=password type="password" placeholder="Password (8 characters or more)" required minlength="8"/>
            <button id="submit" type="submit" class="button">{if signup { "Create account" } else { "Sign in" }}</button>
        </form>
    }
}
