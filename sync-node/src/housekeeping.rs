//! Library housekeeping as catalogue state: archive, trash, restore, purge.
//!
//! Trash and archive are fields of the asset record (`trashed_at`, `archived`), so they sync
//! like any edit and work offline in the PWA. Purging is a record change too: `purged_at` is
//! set and the record is stripped to a tombstone; every node that sees a purged record deletes
//! its own copies of the original and derivatives (and remembers the hashes, so replication
//! does not bring them back). A node purges trashed assets older than the owner's
//! `trash_days` on its own schedule ([`run`]); every node reaches the same decision from the
//! same catalogue. Nothing but an explicit "delete permanently" or an expired trash deletes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tessera_core::{AssetRecord, DocId};

use crate::blobs::BlobKind;
use crate::catalog::CatalogError;
use crate::node::{Node, NodeError};

/// What to do with a set of assets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Trash,
    Restore,
    Purge,
    Archive(bool),
    Favorite(bool),
}

/// Every record of `user` (all shards), purged tombstones included.
pub fn user_assets(node: &Node, user: &str) -> Result<Vec<AssetRecord>, NodeError> {
    let mut out = Vec::new();
    for_each_shard(node, user, |_, records| {
        out.extend(records.iter().cloned());
        Ok(())
    })?;
    Ok(out)
}

/// Calls `f` with each shard's month and records (purged tombstones included), newest month
/// first. The catalogue is locked per shard, not for the walk, and records come from the
/// node's shard views: a walk over a 300k library neither loads every document nor holds
/// every record at once.
pub fn for_each_shard(
    node: &Node,
    user: &str,
    mut f: impl FnMut(&str, &[AssetRecord]) -> Result<(), NodeError>,
) -> Result<(), NodeError> {
    for_each_shard_while(node, user, |m, r| f(m, r).map(|()| true))
}

/// [`for_each_shard`] that stops (before reading the next shard) once `f` returns false.
pub fn for_each_shard_while(
    node: &Node,
    user: &str,
    mut f: impl FnMut(&str, &[AssetRecord]) -> Result<bool, NodeError>,
) -> Result<(), NodeError> {
    for (month, id) in user_months(node, user)? {
        let records = {
            let lib = node.catalog.lock()?;
            node.views.records(&lib, &id).map_err(CatalogError::from)?
        };
        if !f(&month, &records)? {
            break;
        }
    }
    Ok(())
}

/// The user's months (newest first) with their documents, as the root's summaries list them.
fn user_months(node: &Node, user: &str) -> Result<Vec<(String, DocId)>, NodeError> {
    let shards = node
        .catalog
        .lock()?
        .shards(user)
        .map_err(CatalogError::from)?;
    shards
        .into_iter()
        .map(|s| {
            let id = DocId::shard(user, &s.month).map_err(|e| NodeError::Corrupt(e.to_string()))?;
            Ok((s.month, id))
        })
        .collect()
}

/// Applies `action` to the user's assets `ids` (unknown ids are skipped) in one catalogue
/// change per shard. A Live Photo's video half follows its still. Returns how many records
/// changed. Purging also deletes the local blobs.
pub fn apply(node: &Node, user: &str, ids: &[String], action: Action) -> Result<usize, NodeError> {
    let now = crate::now_rfc3339();
    let mut targets: BTreeMap<String, String> = BTreeMap::new(); // id → month
    let mut queue: Vec<String> = ids.to_vec();
    let mut changed = 0;
    let mut purged = Vec::new();
    let mut events: Vec<String> = Vec::new();
    {
        let mut lib = node.catalog.lock()?;
        while let Some(id) = queue.pop() {
            if targets.contains_key(&id) || !crate::blobs::valid_hash(&id) {
                continue;
            }
            let Some(loc) = node.location_of(user, &id)? else {
                continue;
            };
            let shard =
                DocId::shard(user, &loc.month).map_err(|e| NodeError::Corrupt(e.to_string()))?;
            let Some(rec) = lib.asset_in(&shard, &id).map_err(CatalogError::from)? else {
                continue;
            };
            if let Some(m) = rec.motion.as_ref().filter(|m| crate::blobs::valid_hash(m)) {
                if matches!(action, Action::Trash | Action::Restore | Action::Purge)
                    && node.location_of(user, m)?.is_some()
                {
                    queue.push(m.clone());
                }
            }
            targets.insert(id, loc.month);
        }
        for (id, month) in &targets {
            let mut blobs = Vec::new();
            let mut did_change = false;
            let did = lib
                .update_asset(user, month, id, |r| {
                    let before = r.clone();
                    match action {
                        Action::Trash if r.trashed_at.is_none() && !r.is_purged() => {
                            r.trashed_at = Some(now.clone())
                        }
                        Action::Restore if !r.is_purged() => r.trashed_at = None,
                        Action::Purge if !r.is_purged() => {
                            blobs = blob_refs(r);
                            *r = tombstone(r, &now);
                        }
                        Action::Archive(a) if !r.is_purged() => r.archived = a.then_some(true),
                        Action::Favorite(f) if !r.is_purged() => r.favorite = f.then_some(true),
                        _ => {}
                    }
                    if *r != before {
                        changed += 1;
                        did_change = true;
                        r.updated_at = Some(now.clone());
                    }
                })
                .map_err(CatalogError::from)?;
            if did {
                purged.extend(blobs);
            }
            if did_change {
                events.push(id.clone());
            }
        }
        node.catalog.persist(&mut lib)?;
    }
    let event = match action {
        Action::Trash => Some("asset.trashed"),
        Action::Purge => Some("asset.deleted"),
        _ => None,
    };
    if let Some(event) = event {
        for id in &events {
            node.webhooks
                .emit(user, event, serde_json::json!({ "assetId": id }));
        }
    }
    if purged.is_empty() {
        return Ok(changed);
    }
    let _purging = node.purging();
    let candidates: std::collections::HashSet<(BlobKind, String)> = purged.into_iter().collect();
    let in_use = live_blobs_among(node, &candidates)?;
    let unused: Vec<(BlobKind, String)> = candidates
        .into_iter()
        .filter(|b| !in_use.contains(b))
        .collect();
    if let Err(e) = node.blobs.remove_all(&unused) {
        tracing::error!("cannot delete purged blobs: {e}");
    }
    Ok(changed)
}

/// Every user's document ids of asset shards.
fn all_users(node: &Node) -> Result<Vec<String>, NodeError> {
    let lib = node.catalog.lock()?;
    let mut users: Vec<String> = lib
        .ids()
        .filter(|d| d.as_str().ends_with("/root"))
        .map(|d| d.user().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    users.dedup();
    Ok(users)
}

/// Which of `candidates` are still used by an asset that is not purged, in any library:
/// identical pixels make identical thumbnails, so two assets (an edited copy, the same photo
/// in two accounts) can share a derivative, and purging one must not take the other's away.
/// (Only the candidates are kept: the set of every live blob of 300k assets would not fit.)
fn live_blobs_among(
    node: &Node,
    candidates: &std::collections::HashSet<(BlobKind, String)>,
) -> Result<std::collections::HashSet<(BlobKind, String)>, NodeError> {
    let mut out = std::collections::HashSet::new();
    if candidates.is_empty() {
        return Ok(out);
    }
    for user in all_users(node)? {
        for_each_shard(node, &user, |_, records| {
            for r in records.iter().filter(|r| !r.is_purged()) {
                out.extend(blob_refs(r).into_iter().filter(|b| candidates.contains(b)));
            }
            Ok(())
        })?;
    }
    Ok(out)
}

/// The blobs that belong to one asset (its original and derivatives).
fn blob_refs(r: &AssetRecord) -> Vec<(BlobKind, String)> {
    let mut v = vec![(BlobKind::Original, r.id.clone())];
    if let Some(t) = &r.thumb {
        v.push((BlobKind::Thumb, t.clone()));
    }
    if let Some(p) = &r.preview {
        v.push((BlobKind::Preview, p.clone()));
    }
    if let Some(m) = &r.motion {
        // A motion photo's extracted video (a Live Photo's video is its own asset).
        v.push((BlobKind::Motion, m.clone()));
    }
    v
}

/// What is left of a purged record: enough to sync the deletion and keep its shard.
fn tombstone(r: &AssetRecord, now: &str) -> AssetRecord {
    AssetRecord {
        id: r.id.clone(),
        owner: r.owner.clone(),
        taken_at: r.taken_at.clone(),
        trashed_at: r.trashed_at.clone(),
        purged_at: Some(now.to_owned()),
        thumb: r.thumb.clone(),
        preview: r.preview.clone(),
        motion: r.motion.clone().filter(|_| r.live_of.is_none()),
        ..Default::default()
    }
}

/// Whether an RFC 3339 `trashed_at` is more than `days` before `now`.
fn expired(trashed_at: &str, days: u32, now: chrono::DateTime<chrono::Utc>) -> bool {
    chrono::DateTime::parse_from_rfc3339(trashed_at)
        .map(|t| now.signed_duration_since(t) >= chrono::Duration::days(i64::from(days)))
        .unwrap_or(false)
}

/// One pass: purge expired trash of every user, and delete local copies of assets purged
/// elsewhere.
///
/// A month is read only when its search index (`views::SlimShard`, read back from the last
/// run's file or kept since it was built; only its `views::SweepFacts` are kept) shows trash that has expired, or tombstones or
/// positions without a place that the sweep has not settled at the month's current revision:
/// a sweep over a quiet 300k library reads no document.
pub fn sweep(node: &Node) -> Result<SweepReport, NodeError> {
    let now = chrono::Utc::now();
    let mut purged = 0;
    // Blobs of tombstones that may still need deleting here (present, or not yet marked so
    // that replication never fetches them).
    let mut tomb_blobs: std::collections::HashSet<(BlobKind, String)> = Default::default();
    // One user's unreadable library must not stop the sweep for everyone else; but then the
    // set of blobs in use is incomplete, so no tombstone's blobs are deleted this time.
    let mut complete = true;
    let (mut read, mut skipped) = (0usize, 0usize);
    // Months read, and whether each still had tombstone blobs to delete: settled once the
    // pass has dealt with those (deleted, marked deleted, or kept for a live asset using them).
    let mut settle: Vec<(DocId, u64, bool)> = Vec::new();
    for user in all_users(node)? {
        let days = node.catalog.lock()?.trash_days(&user);
        let (mut expired_ids, mut unplaced) = (Vec::new(), Vec::new());
        let mut read_here: Vec<(DocId, u64, bool)> = Vec::new();
        let walked = (|| -> Result<(), NodeError> {
            for (_, id) in user_months(node, &user)? {
                let (revision, records) = {
                    let mut lib = node.catalog.lock()?;
                    let facts = node
                        .views
                        .sweep_facts(&mut lib, &id)
                        .map_err(CatalogError::from)?;
                    let Some(revision) = lib.revision(&id) else {
                        continue;
                    };
                    let expiring = facts.trashed_at.iter().any(|t| expired(t, days, now));
                    let pending =
                        (facts.tombstones || facts.unplaced) && !node.views.settled(&id, revision);
                    if !expiring && !pending {
                        skipped += 1;
                        continue;
                    }
                    let records = node.views.records(&lib, &id).map_err(CatalogError::from)?;
                    (revision, records)
                };
                read += 1;
                let (mut pending, mut expiring) = (false, false);
                for r in records.iter() {
                    if r.is_purged() {
                        for b in blob_refs(r) {
                            if node.blobs.exists(b.0, &b.1) || !node.blobs.is_deleted(&b.1) {
                                pending = true;
                                tomb_blobs.insert(b);
                            }
                        }
                    } else if r.is_trashed()
                        && r.trashed_at
                            .as_deref()
                            .is_some_and(|t| expired(t, days, now))
                    {
                        expired_ids.push(r.id.clone());
                        expiring = true;
                    } else if needs_place(r) {
                        unplaced.push(r.clone());
                    }
                }
                if !expiring {
                    read_here.push((id, revision, pending));
                }
            }
            Ok(())
        })();
        if let Err(e) = walked {
            tracing::error!(user, error = %e, "cannot read this library; skipping it in this sweep");
            complete = false;
            continue;
        }
        if !expired_ids.is_empty() {
            // `apply` deletes the blobs of what it purges itself.
            match apply(node, &user, &expired_ids, Action::Purge) {
                Ok(n) => purged += n,
                Err(e) => {
                    tracing::error!(user, error = %e, "purging expired trash failed");
                    complete = false;
                }
            }
        }
        match locate_missing(node, &user, &unplaced) {
            // Geocoded records changed their month (so it is read again); the others cannot be
            // placed, and are not tried again until their month changes.
            Ok(_) => settle.append(&mut read_here),
            Err(e) => tracing::error!(user, error = %e, "reverse geocoding failed"),
        }
    }
    let mut report = SweepReport {
        purged,
        read,
        skipped,
        ..Default::default()
    };
    // `blobs_done`: the tombstone pass ran, so months with pending blobs settle too.
    let settle_months = |blobs_done: bool| {
        for (id, revision, pending) in &settle {
            if blobs_done || !pending {
                node.views.settle(id, *revision);
            }
        }
    };
    if !complete || tomb_blobs.is_empty() {
        settle_months(false);
        return Ok(report);
    }
    let mut deleted = 0;
    // Tombstones that arrived by sync: delete the local copies nothing live still uses,
    // deciding under the purge guard from the records as they are now (an upload may have
    // brought one of these blobs back to life meanwhile).
    let _purging = node.purging();
    let in_use = live_blobs_among(node, &tomb_blobs)?;
    let mut remove = Vec::new();
    for (kind, hash) in tomb_blobs.into_iter().filter(|b| !in_use.contains(b)) {
        if node.blobs.exists(kind, &hash) {
            deleted += 1;
            remove.push((kind, hash));
        } else if !node.blobs.is_deleted(&hash) {
            // Not here yet: make sure replication never fetches it.
            remove.push((kind, hash));
        }
    }
    node.blobs.remove_all(&remove)?;
    // Every pending blob is now deleted (or marked so) or used by a live asset, which keeps
    // it: its tombstone's month need not be read again until it changes (the live asset's
    // purge makes a tombstone in its own month, which is read then).
    settle_months(true);
    report.blobs_deleted = deleted;
    Ok(report)
}

/// What one [`sweep`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct SweepReport {
    /// Assets purged here (expired trash).
    pub purged: usize,
    /// Local copies of assets purged elsewhere, deleted.
    pub blobs_deleted: usize,
    /// Months whose records were read.
    pub read: usize,
    /// Months skipped: their search index showed nothing to do.
    pub skipped: usize,
}

/// A record with a position and no place yet (from before the geocoder, or whose position
/// arrived by sync).
pub(crate) fn needs_place(r: &AssetRecord) -> bool {
    !r.is_purged() && r.lat.is_some() && r.lon.is_some() && r.country.is_none()
}

/// Gives a place (city, state, country) to the user's records that have a position but no
/// place yet: assets from before the geocoder, or whose position arrived by sync from a peer.
/// Returns how many records changed.
pub fn locate_missing(
    node: &Node,
    user: &str,
    records: &[AssetRecord],
) -> Result<usize, NodeError> {
    let todo: Vec<&AssetRecord> = records.iter().filter(|r| needs_place(r)).collect();
    let mut changed = 0;
    // In batches, so the catalogue lock is never held for long.
    for batch in todo.chunks(500) {
        let located: Vec<AssetRecord> = batch
            .iter()
            .filter_map(|r| {
                let mut r = (*r).clone();
                (crate::geo::locate(&mut r) && r.country.is_some()).then_some(r)
            })
            .collect();
        if located.is_empty() {
            continue;
        }
        let mut lib = node.catalog.lock()?;
        for r in &located {
            let done = lib
                .update_asset(user, &r.month(), &r.id, |cur| {
                    if cur.lat == r.lat && cur.lon == r.lon && cur.country.is_none() {
                        (cur.city, cur.state, cur.country) =
                            (r.city.clone(), r.state.clone(), r.country.clone());
                    }
                })
                .map_err(CatalogError::from)?;
            changed += usize::from(done);
        }
        node.catalog.persist(&mut lib)?;
    }
    if changed > 0 {
        tracing::info!(
            user,
            places = changed,
            "photos placed by the offline geocoder"
        );
    }
    Ok(changed)
}

/// Sweeps every `every` (and once at start).
pub async fn run(node: Arc<Node>, every: Duration) {
    loop {
        let n = node.clone();
        let mut months = (0, 0);
        match tokio::task::spawn_blocking(move || sweep(&n)).await {
            Ok(Ok(r)) => {
                if r.purged > 0 || r.blobs_deleted > 0 {
                    tracing::info!(
                        purged = r.purged,
                        blobs_deleted = r.blobs_deleted,
                        "trash purged"
                    );
                }
                months = (r.read, r.skipped);
            }
            Ok(Err(e)) => tracing::error!("housekeeping failed: {e}"),
            Err(e) => tracing::error!("housekeeping crashed: {e}"),
        }
        crate::views::release_free_memory();
        let views = node.views.stats();
        if let Ok(lib) = node.catalog.lock() {
            let (docs, saved) = lib.loaded_size();
            tracing::info!(
                months_read = months.0,
                months_skipped = months.1,
                indexes_read = views.indexes_read,
                loaded_docs = docs,
                loaded_saved_kb = saved >> 10,
                cached_shards = views.shards,
                cached_mb = views.bytes >> 20,
                index_mb = views.index_bytes >> 20,
                "catalogue memory after the sweep"
            );
        }
        tokio::time::sleep(every).await;
    }
}

/// What `fsck` found in the catalogue (beside the blobs).
#[derive(Debug, Default, serde::Serialize)]
pub struct CatalogueReport {
    /// Live (not purged) asset records checked.
    pub records: usize,
    /// `user/asset` whose original is not in the blob store (damage, unless replication is
    /// still bringing it).
    pub missing_original: Vec<String>,
    /// `user/asset` not in the location index, or indexed under another month (a crash between
    /// writing the record and indexing it); `--repair` re-indexes them.
    pub unindexed: Vec<String>,
    /// `user/asset` still waiting for derivatives with no job queued, or whose thumbnail or
    /// preview file is gone; `--repair` queues their media job again.
    pub needs_job: Vec<String>,
    pub repaired: usize,
}

impl CatalogueReport {
    pub fn is_clean(&self) -> bool {
        self.missing_original.is_empty() && self.unindexed.is_empty() && self.needs_job.is_empty()
    }
}

/// Checks every live record against the blob store, the location index and the job queue;
/// with `repair`, rebuilds the index entries and queues the jobs (the documents and the blob
/// files are the truth, the sled trees are derived from them).
pub fn check_catalogue(node: &Node, repair: bool) -> Result<CatalogueReport, NodeError> {
    use tessera_core::record::status;
    let mut report = CatalogueReport::default();
    for user in all_users(node)? {
        for_each_shard(node, &user, |month, records| {
            for r in records.iter().filter(|r| !r.is_purged()) {
                report.records += 1;
                let name = format!("{user}/{}", r.id);
                if !node.blobs.exists(BlobKind::Original, &r.id) {
                    report.missing_original.push(name);
                    continue;
                }
                let indexed = node
                    .location_of(&user, &r.id)?
                    .is_some_and(|l| l.month == month);
                if !indexed {
                    report.unindexed.push(name.clone());
                    if repair {
                        node.set_location(
                            &r.id,
                            &crate::node::AssetLocation {
                                owner: user.clone(),
                                month: month.to_owned(),
                                sha1: r.sha1.clone().unwrap_or_default(),
                            },
                        )?;
                        report.repaired += 1;
                    }
                }
                let gone = |kind, h: &Option<String>| {
                    h.as_ref().is_some_and(|h| !node.blobs.exists(kind, h))
                };
                let waiting = r.status.as_deref().is_none_or(|s| s == status::PENDING)
                    && !node.jobs.is_queued(&r.id);
                if waiting || gone(BlobKind::Thumb, &r.thumb) || gone(BlobKind::Preview, &r.preview)
                {
                    report.needs_job.push(name);
                    if repair {
                        node.jobs.enqueue(&r.id, &user)?;
                        report.repaired += 1;
                    }
                }
            }
            Ok(())
        })?;
    }
    if repair {
        node.flush()?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trash_expiry() {
        let now = chrono::DateTime::parse_from_rfc3339("2024-02-01T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert!(expired("2024-01-01T00:00:00+00:00", 30, now));
        assert!(!expired("2024-01-15T00:00:00+00:00", 30, now));
        assert!(expired("2024-02-01T00:00:00+00:00", 0, now));
        assert!(!expired("garbage", 0, now));
    }
}
