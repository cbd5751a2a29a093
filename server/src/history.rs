//! Document history (SPEC §9), on top of the store: a version rendered as
//! it was, the diff between two versions, restore as forward operations,
//! and retention. The CRDT work (`tandem_crdt::history`) runs on blocking
//! threads, never on a room's.
//!
//! A version is a point of the document's log (`upto`). Until compaction
//! folds that point, the version is the history base plus the log up to
//! it; once folded, compaction has written its snapshot (state vector and
//! delete set), which the base, holding every deleted item since, renders.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tandem_crdt::history::{restore_update, snapshot_from_links, Attribution, HistoryDoc};
use tandem_crdt::DocState;
use tokio_util::sync::CancellationToken;

use crate::config::HistorySettings;
use crate::store::{DocId, DocLog, Store, StoreError, VersionId, VersionRow};

/// History reads, diffs and restores at once across the server: each costs
/// CPU and memory in proportion to the document's whole history, so
/// callers beyond this wait their turn instead of taking every core.
static HEAVY: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Reads with `read` and then runs `work` on what it read on a blocking
/// thread, all under a `HEAVY` permit: the read holds the history in memory
/// too, so waiting callers hold nothing.
async fn heavy<L: Send + 'static, T: Send + 'static>(
    read: impl std::future::Future<Output = Result<L, StoreError>>,
    work: impl FnOnce(L) -> Result<T, HistoryError> + Send + 'static,
) -> Result<T, HistoryError> {
    let _permit = HEAVY.acquire().await;
    let read = read.await?;
    tokio::task::spawn_blocking(move || work(read)).await?
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored history no longer holds this version (history was off
    /// when its point was compacted).
    #[error("the history this version needs is no longer stored")]
    Lost,
    #[error("the stored history does not decode: {0}")]
    Corrupt(String),
    #[error("a history task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl From<tandem_crdt::ApplyError> for HistoryError {
    fn from(e: tandem_crdt::ApplyError) -> Self {
        HistoryError::Corrupt(e.to_string())
    }
}

/// A history document at the start of what `log` holds: its base, or its
/// snapshot where it has none (compacted before history was kept), or empty.
fn start(log: &mut DocLog) -> (HistoryDoc, Attribution) {
    let mut doc = HistoryDoc::new();
    let history = log.history.take().unwrap_or_default();
    let base = history.base.or_else(|| log.snapshot.take());
    if let Some(base) = base {
        if let Err(e) = doc.apply(&base) {
            tracing::warn!(error = %e, "a stored history base does not decode; history starts empty");
            doc = HistoryDoc::new();
        }
    }
    let attribution = history
        .attribution
        .as_deref()
        .and_then(|a| Attribution::decode(a).ok())
        .unwrap_or_default();
    // Put the writers back for whoever reads the rows next.
    log.history = Some(crate::store::HistoryLog {
        users: history.users,
        snapshot_upto: history.snapshot_upto,
        ..Default::default()
    });
    (doc, attribution)
}

fn snapshot_upto(log: &DocLog) -> i64 {
    log.history.as_ref().map_or(0, |h| h.snapshot_upto)
}

/// The full snapshot of a version compaction has snapshotted: the union
/// of the chain's links up to it.
fn full_snapshot(log: &DocLog, version: &VersionRow) -> Option<Vec<u8>> {
    version.snapshot.as_ref()?;
    let links = log
        .history
        .as_ref()?
        .links
        .iter()
        .filter(|(id, upto, _)| (*upto, *id) <= (version.upto, version.id));
    match snapshot_from_links(links.map(|(_, _, l)| l.as_slice())) {
        Ok(full) => Some(full),
        Err(e) => {
            tracing::warn!(version = version.id, error = %e, "a version's snapshot chain does not decode");
            None
        }
    }
}

/// Merges a deleted version's link into the next one's.
pub fn merge_links(deleted: &[u8], next: &[u8]) -> Option<Vec<u8>> {
    snapshot_from_links([deleted, next]).ok()
}

/// The document as it was at `version`, as a document (garbage-collected:
/// what a client loading it would hold).
pub async fn render(
    store: &Arc<dyn Store>,
    version: &VersionRow,
) -> Result<DocState, HistoryError> {
    let version = version.clone();
    let read = store.read_history(version.doc_id, Some(version.upto));
    heavy(read, move |mut log| {
        if version.snapshot.is_none() && version.upto < snapshot_upto(&log) {
            return Err(HistoryError::Lost);
        }
        let full = full_snapshot(&log, &version);
        if version.snapshot.is_some() && full.is_none() {
            return Err(HistoryError::Lost);
        }
        let (mut doc, _) = start(&mut log);
        let update = match &full {
            Some(snapshot) => doc.encode_at(snapshot)?,
            None => {
                for (_, row) in &log.updates {
                    let _ = doc.apply(row);
                }
                doc.encode()
            }
        };
        let (state, _) = DocState::load(None, [update.as_slice()])?;
        Ok(state)
    })
    .await
}

/// What changed from `from` to `to` (the current state with `None`).
pub async fn diff(
    store: &Arc<dyn Store>,
    doc_id: DocId,
    from: VersionRow,
    to: Option<VersionRow>,
) -> Result<Value, HistoryError> {
    heavy(store.read_history(doc_id, None), move |mut log| {
        let upto = snapshot_upto(&log);
        let lost = |v: &VersionRow| v.snapshot.is_none() && v.upto < upto;
        if lost(&from) || to.as_ref().is_some_and(lost) {
            return Err(HistoryError::Lost);
        }
        let mut from_snapshot = full_snapshot(&log, &from);
        let mut to_snapshot = to.as_ref().and_then(|v| full_snapshot(&log, v));
        let unreadable =
            |v: &VersionRow, full: &Option<Vec<u8>>| v.snapshot.is_some() && full.is_none();
        if unreadable(&from, &from_snapshot)
            || to.as_ref().is_some_and(|v| unreadable(v, &to_snapshot))
        {
            return Err(HistoryError::Lost);
        }
        let (mut doc, mut attribution) = start(&mut log);
        let users = log.history.take().map(|h| h.users).unwrap_or_default();
        // Versions not yet folded by compaction are snapshotted here, right
        // after their last update, as compaction would.
        let take =
            |doc: &HistoryDoc, slot: &mut Option<Vec<u8>>, v: Option<&VersionRow>, next: i64| {
                if slot.is_none() && v.is_some_and(|v| v.upto < next) {
                    *slot = Some(doc.snapshot());
                }
            };
        for (i, (id, row)) in log.updates.iter().enumerate() {
            take(&doc, &mut from_snapshot, Some(&from), *id);
            take(&doc, &mut to_snapshot, to.as_ref(), *id);
            if doc.apply(row).is_ok() {
                if let Some(Some(user)) = users.get(i) {
                    let _ = attribution.record(user, row);
                }
            }
        }
        take(&doc, &mut from_snapshot, Some(&from), i64::MAX);
        take(&doc, &mut to_snapshot, to.as_ref(), i64::MAX);
        let from_snapshot = from_snapshot.ok_or(HistoryError::Lost)?;
        Ok(doc.diff(&from_snapshot, to_snapshot.as_deref(), &attribution)?)
    })
    .await
}

/// The update that turns the document whose full state is `current` into
/// `target`'s content, as new operations; `None` when they already agree.
pub async fn restoring_update(
    current: bytes::Bytes,
    target: DocState,
) -> Result<Option<Vec<u8>>, HistoryError> {
    heavy(async { Ok(()) }, move |()| {
        let target = target.encode_state();
        Ok(restore_update(&current, &target)?)
    })
    .await
}

/// Thins and expires automatic versions, then reclaims what only expired
/// history held, every `every` until `shutdown`.
pub async fn run_retention(
    store: Arc<dyn Store>,
    settings: HistorySettings,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(e) = retain(&store, settings.retention, crate::store::now_ms()).await {
            tracing::warn!(error = %e, "applying history retention failed; will retry");
        }
    }
}

/// Versions looked at per page of retention (at least 2).
const RETENTION_BATCH: u32 = 10_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// One round of retention at `now`.
pub async fn retain(
    store: &Arc<dyn Store>,
    retention: Duration,
    now: i64,
) -> Result<(), HistoryError> {
    retain_in_pages(store, retention, now, RETENTION_BATCH).await
}

/// `retain`, looking at `batch` versions at a time (at least 2).
pub async fn retain_in_pages(
    store: &Arc<dyn Store>,
    retention: Duration,
    now: i64,
    batch: u32,
) -> Result<(), HistoryError> {
    let batch = batch.max(2);
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let keep_all = retention_ms.min(DAY_MS);
    // A page at a time, after the last one's (document, version): the
    // versions thinning keeps would otherwise fill every page for ever.
    let mut after = (0, 0);
    let mut docs: Vec<DocId> = Vec::new();
    loop {
        let page = store
            .auto_versions_before(now.saturating_sub(keep_all), after, batch)
            .await?;
        if page.is_empty() {
            break;
        }
        let expired = thin(now, retention_ms, &page);
        if !expired.is_empty() {
            store.delete_versions(&expired, &merge_links).await?;
            docs.extend(
                page.iter()
                    .filter(|(_, id, _)| expired.contains(id))
                    .map(|(doc, _, _)| *doc),
            );
        }
        if page.len() < batch as usize {
            break;
        }
        // `thin` keeps a page's last version (no newer neighbour in sight):
        // the next page starts with it, beside its neighbour.
        let (doc, id, _) = page[page.len() - 2];
        after = (doc, id);
    }
    docs.sort_unstable();
    docs.dedup();
    for doc in docs {
        reclaim(store, doc).await?;
    }
    Ok(())
}

/// Which of `versions` (`(doc, id, created_at)`, automatic, oldest first)
/// retention removes at `now`: those older than the retention, and of the
/// rest, past a day all but the newest of each hour, past a week all but
/// the newest of each day.
pub fn thin(now: i64, retention_ms: i64, versions: &[(DocId, VersionId, i64)]) -> Vec<VersionId> {
    let mut expired = Vec::new();
    // Oldest first: a version is dropped when the next one of the same
    // document falls in the same bucket (the newest of a bucket stays).
    for (i, &(doc, id, at)) in versions.iter().enumerate() {
        let age = now.saturating_sub(at);
        if age >= retention_ms {
            expired.push(id);
            continue;
        }
        let bucket = |t: i64| -> Option<i64> {
            let age = now.saturating_sub(t);
            if age >= 7 * DAY_MS {
                Some(t.div_euclid(DAY_MS) * 2)
            } else if age >= DAY_MS {
                Some(t.div_euclid(HOUR_MS) * 2 + 1)
            } else {
                None
            }
        };
        let Some(mine) = bucket(at) else { continue };
        let newer_in_bucket = versions
            .get(i + 1)
            .is_some_and(|&(d, _, t)| d == doc && bucket(t) == Some(mine));
        if newer_in_bucket {
            expired.push(id);
        }
    }
    expired
}

/// Forgets what no remaining version can show: every item deleted as of
/// the document's oldest version (or, with none left, as of its base).
pub async fn reclaim(store: &Arc<dyn Store>, doc_id: DocId) -> Result<(), HistoryError> {
    let oldest = store.oldest_version(doc_id).await?;
    let mut log = store.read_history(doc_id, Some(i64::MIN)).await?;
    let upto = snapshot_upto(&log);
    let has_base = log.history.as_ref().is_some_and(|h| h.base.is_some());
    if !has_base {
        return Ok(());
    }
    let shrunk = tokio::task::spawn_blocking(move || -> Result<Option<Vec<u8>>, HistoryError> {
        let (mut doc, _) = start(&mut log);
        let before = doc.encode().len();
        let keep_from = match oldest.and_then(|v| v.snapshot) {
            Some(snapshot) => snapshot,
            // No version, or the oldest is past the base: nothing deleted
            // in the base is shown by any.
            None => doc.snapshot(),
        };
        doc.forget_before(&keep_from)?;
        let after = doc.encode();
        Ok((after.len() < before).then_some(after))
    })
    .await??;
    if let Some(base) = shrunk {
        let bytes = base.len();
        if store.write_history_base(doc_id, upto, &base).await? {
            tracing::debug!(doc_id, bytes, "history reclaimed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_the_newest_of_each_hour_after_a_day_and_of_each_day_after_a_week() {
        let now = 100 * DAY_MS;
        let retention = 30 * DAY_MS;
        let at = |days_ago: i64, minutes: i64| now - days_ago * DAY_MS + minutes * 60_000;
        let versions = vec![
            (1, 1, at(40, 0)), // expired
            (1, 2, at(10, 0)), // same day as 3: dropped
            (1, 3, at(10, 30)),
            (1, 4, at(2, 0)), // same hour as 5: dropped
            (1, 5, at(2, 10)),
            (1, 6, at(2, 70)), // another hour: kept
            (2, 7, at(2, 15)), // another document: kept
        ];
        assert_eq!(thin(now, retention, &versions), vec![1, 2, 4]);
    }

    #[test]
    fn a_short_retention_expires_everything_older() {
        let versions = vec![(1, 1, 0), (1, 2, 500), (1, 3, 900)];
        assert_eq!(thin(1_000, 200, &versions), vec![1, 2]);
    }
}
