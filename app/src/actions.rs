//! Batch actions on records (favorite, archive, trash, restore) as local catalogue edits, and
//! permanent deletion (on the node).

use std::collections::HashSet;

use leptos::prelude::*;
use tessera_core::AssetRecord;

use crate::catalogue::{edit_assets, sync_now};
use crate::net;
use crate::state::{now_rfc3339, refresh_view, Ui, CORE};

/// A record edit applied to many records.
pub(crate) type Edit = Box<dyn Fn(&mut AssetRecord)>;

/// Marks an asset favorite (or not) in the local catalogue; the change reaches the node and the
/// other devices by sync, and works offline like any other edit.
pub(crate) fn toggle_favorite(ui: Ui, rec: &AssetRecord) {
    let want = !rec.favorite.unwrap_or(false);
    edit_assets(ui, std::slice::from_ref(rec), "change favorite", |r| {
        r.favorite = Some(want)
    });
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Action {
    Favorite,
    Unfavorite,
    Archive,
    Unarchive,
    Trash,
    Restore,
}

/// Applies an action to records (local catalogue edits, one pass).
pub(crate) fn apply(ui: Ui, recs: &[AssetRecord], a: Action) {
    let now = now_rfc3339();
    let (what, f): (&str, Edit) = match a {
        Action::Favorite => ("favorite", Box::new(|r| r.favorite = Some(true))),
        Action::Unfavorite => ("unfavorite", Box::new(|r| r.favorite = Some(false))),
        Action::Archive => ("archive", Box::new(|r| r.archived = Some(true))),
        Action::Unarchive => ("unarchive", Box::new(|r| r.archived = Some(false))),
        Action::Trash => (
            "move to trash",
            Box::new(move |r| r.trashed_at = Some(now.clone())),
        ),
        Action::Restore => ("restore", Box::new(|r| r.trashed_at = None)),
    };
    edit_assets(ui, recs, what, f);
}

/// Permanently deletes (on the node: only it can delete originals), then syncs.
pub(crate) async fn delete_permanently(ui: Ui, ids: Option<Vec<String>>) {
    let res = match ids {
        Some(ids) => {
            net::json(
                "DELETE",
                "/api/assets",
                Some(serde_json::json!({"ids": ids, "force": true})),
            )
            .await
        }
        None => net::json("POST", "/api/trash/empty", None).await,
    };
    match res {
        Ok(_) => {
            ui.selected.set(HashSet::new());
            CORE.with(|c| c.borrow_mut().sync.reset());
            sync_now(ui).await;
            refresh_view(ui, true);
        }
        Err(e) => ui
            .error
            .set(Some(format!("The node did not delete: {}", e.message))),
    }
}
