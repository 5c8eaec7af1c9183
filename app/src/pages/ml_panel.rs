//! The ML panel.

use leptos::prelude::*;
use tessera_core::ml::PersonSummary;

use crate::state::Ui;

/// The ML node's work as the catalogue shows it: progress while it analyses, then people.
#[component]
pub(crate) fn MlPanel(ui: Ui) -> impl IntoView {
    move || {
        let (p, people) = ui.ml.get();
        (p.analysed > 0).then(|| {
            let people: Vec<PersonSummary> = people
                .into_iter()
                .filter(|x| x.record.hidden != Some(true))
                .collect();
            let title = if p.analysed < p.total {
                format!("Faces & smart search: analysed {} of {} photos", p.analysed, p.total)
            } else {
                format!(
                    "Faces & smart search: all {} photos analysed · {} faces · {} {}",
                    p.total,
                    p.faces,
                    people.len(),
                    if people.len() == 1 { "person" } else { "people" }
                )
            };
            let frac = p.analysed as f64 / p.total.max(1) as f64;
            view! {
                <section class="uploads ml" id="ml-progress">
                    <div class="total">{title}
                        <div class="progress"><div style:width=format!("{:.0}%", frac * 100.0)></div></div>
                    </div>
                    <div class="people" id="people">
                        {people.into_iter().map(|x| {
                            let src = x.cover.and_then(|c| c.crop).map(|h| format!("/api/tessera/blobs/{h}")).unwrap_or_default();
                            let name = x.record.name.filter(|n| !n.is_empty()).unwrap_or_else(|| "Unnamed".into());
                            let id = x.id.clone();
                            view! {
                                <figure class="person" data-person=id.clone() title="Show this person's photos" on:click=move |_| {
                                    ui.search_person.set(Some(id.clone()));
                                    ui.search_text.set(String::new());
                                    crate::routes::set_view(ui, crate::timeline::View::Search);
                                }>
                                    <img src=src alt=""/>
                                    <figcaption>{name}<span class="count">{format!("{} photos", x.faces)}</span></figcaption>
                                </figure>
                            }
                        }).collect_view()}
                    </div>
                </section>
            }
        })
    }
}
