//! The pages and panels of the signed-in app (the timeline view itself is `timeline.rs`).

pub(crate) mod auth_form;
pub(crate) mod household;
pub(crate) mod map_page;
pub(crate) mod ml_panel;
pub(crate) mod search_page;
pub mod sharing;
pub(crate) mod timeline_page;
