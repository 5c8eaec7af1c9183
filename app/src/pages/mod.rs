//! The pages and panels of the signed-in app (the timeline view itself is `timeline.rs`).

pub(crate) mod auth_form;
pub(crate) mod household;
pub(crate) mod ml_panel;
pub mod sharing;
pub(crate) mod timeline_page;
