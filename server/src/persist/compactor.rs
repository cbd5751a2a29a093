//! The compactor: folds long update logs into snapshots, off the relay
//! path. It reads the oldest rows of a log in pages bounded by bytes as
//! well as rows (a row may be as large as the largest message), merges
//! them on a blocking thread, and replaces exactly the rows it read, so
//! updates appended meanwhile are untouched.
//!
//! A log is compacted once it holds `min_updates` rows or `min_bytes`
//! bytes: a writer that inserts and deletes a megabyte at a time keeps the
//! document small while its log grows a megabyte per update, and only the
//! byte count notices.
//!
//! Invariant: a stored row is never deleted because it cannot be read. A
//! row (or snapshot) that does not decode is moved, in the transaction
//! that writes the new snapshot, to the quarantine table, and reported
//! (a warning and `tandem_quarantined_rows_total`).

use std::sync::Arc;
use std::time::Duration;

use tandem_crdt::history::{snapshot_from_links, snapshot_link, Attribution, HistoryDoc};
use tandem_crdt::DocLoader;
use tokio_util::sync::CancellationToken;

use crate::store::{DocId, DocLog, HistoryFold, HistoryLog, PageLimits, Quarantined, Store};

/// When a log is compacted, and how much of it one step reads.
#[derive(Debug, Clone, Copy)]
pub struct CompactConfig {
    /// A log with at least this many rows is compacted.
    pub min_updates: u32,
    /// A log of at least this many bytes is compacted.
    pub min_bytes: u64,
    /// How much of a log one step folds.
    pub page: PageLimits,
    /// How often the compactor looks for long logs.
    pub every: Duration,
    /// Keep history (SPEC §9): fold the log into the history base too, and
    /// write the snapshots of the versions whose rows it folds.
    pub history: bool,
}

/// Rows and bytes folded per step. A fold that read a long log whole held
/// every row in memory at once (several times what the document itself
/// takes, on a fast writer's log); in steps, a fold holds one step's rows.
/// The byte bound keeps a step of large rows (each up to the largest
/// message) as small.
pub const COMPACT_PAGE: PageLimits = PageLimits {
    rows: 10_000,
    bytes: 8 << 20,
};

/// Steps per document per pass: a document written faster than it is
/// folded does not hold the compactor; the rest waits for the next pass.
const COMPACT_MAX_PAGES: usize = 100;

pub type CompactError = Box<dyn std::error::Error + Send + Sync>;

/// Looks for long logs every `config.every` and folds them, until
/// `shutdown`.
pub async fn run_compactor(
    store: Arc<dyn Store>,
    config: CompactConfig,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(config.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let candidates = match store
            .compaction_candidates(config.min_updates, config.min_bytes)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "listing documents to compact failed");
                continue;
            }
        };
        for doc_id in candidates {
            if shutdown.is_cancelled() {
                return;
            }
            if let Err(e) = compact_document(&store, doc_id, config.page, config.history).await {
                tracing::warn!(doc_id, error = %e, "compaction failed; will retry");
            }
        }
    }
}

/// What one step folded.
struct Folded {
    snapshot: Vec<u8>,
    quarantined: Vec<Quarantined>,
    history: Option<HistoryFold>,
}

/// Folds a document's log into its snapshot, a page of its oldest rows at
/// a time, each step committed on its own. Rows that do not decode are
/// quarantined, not dropped.
pub async fn compact_document(
    store: &Arc<dyn Store>,
    doc_id: DocId,
    page: PageLimits,
    history: bool,
) -> Result<(), CompactError> {
    for _ in 0..COMPACT_MAX_PAGES {
        let log = if history {
            store.read_log_head_with_history(doc_id, page).await?
        } else {
            store.read_log_head(doc_id, page).await?
        };
        let Some(upto_id) = log.updates.last().map(|(id, _)| *id) else {
            return Ok(());
        };
        let rows = log.updates.len();
        let read_bytes: usize = log.updates.iter().map(|(_, u)| u.len()).sum();
        let folded = tokio::task::spawn_blocking(move || fold(log)).await??;
        if !folded.quarantined.is_empty() {
            crate::metrics::rows_quarantined(folded.quarantined.len() as u64);
            for q in &folded.quarantined {
                tracing::warn!(
                    doc_id,
                    row = ?q.row_id,
                    bytes = q.data.len(),
                    reason = %q.reason,
                    "a stored row does not decode; moved to the quarantine table (doc_updates_quarantine), not deleted"
                );
            }
        }
        store
            .write_fold(
                doc_id,
                &folded.snapshot,
                upto_id,
                &folded.quarantined,
                folded.history.as_ref(),
            )
            .await?;
        tracing::debug!(
            doc_id,
            rows,
            read_bytes,
            snapshot_bytes = folded.snapshot.len(),
            "compacted"
        );
        if rows < page.rows && read_bytes < page.bytes {
            break;
        }
    }
    Ok(())
}

/// Applies the snapshot and the rows in order, setting aside those that do
/// not decode.
fn fold(mut log: DocLog) -> Result<Folded, tandem_crdt::ApplyError> {
    let history = log
        .history
        .take()
        .map(|h| fold_history(log.snapshot.as_deref(), &log.updates, h));
    let mut loader = DocLoader::new();
    let mut quarantined = Vec::new();
    let mut skipped = 0;
    if let Some(snapshot) = log.snapshot {
        loader.apply(&snapshot)?;
        if loader.report().skipped > skipped {
            skipped = loader.report().skipped;
            quarantined.push(Quarantined {
                row_id: None,
                data: snapshot,
                reason: "the snapshot does not decode as a Yjs update".into(),
            });
        }
    }
    for (id, update) in log.updates {
        loader.apply(&update)?;
        if loader.report().skipped > skipped {
            skipped = loader.report().skipped;
            quarantined.push(Quarantined {
                row_id: Some(id),
                data: update,
                reason: "the row does not decode as a Yjs update".into(),
            });
        }
    }
    let (state, _) = loader.finish();
    Ok(Folded {
        snapshot: state.encode_state(),
        quarantined,
        history,
    })
}

/// The history base with `updates` added (nothing garbage-collected), who
/// wrote them, and the snapshots of the versions whose last update is among
/// them, each taken right after that update. Rows that do not decode are
/// left out here as they are from the snapshot (`fold` quarantines them).
fn fold_history(
    snapshot: Option<&[u8]>,
    updates: &[(i64, Vec<u8>)],
    stored: HistoryLog,
) -> HistoryFold {
    let mut doc = HistoryDoc::new();
    // A document compacted before history was kept starts its history at
    // its snapshot; so does one whose stored base no longer decodes (it is
    // kept until this step replaces it, and said).
    let base_ok = match &stored.base {
        Some(base) => match doc.apply(base) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "a stored history base does not decode; history restarts at the snapshot");
                doc = HistoryDoc::new();
                false
            }
        },
        None => false,
    };
    if !base_ok {
        if let Some(snapshot) = snapshot {
            let _ = doc.apply(snapshot);
        }
    }
    let mut attribution = stored
        .attribution
        .as_deref()
        .and_then(|a| Attribution::decode(a).ok())
        .unwrap_or_default();
    // Each version's snapshot is stored as its link after the one before
    // (only the deletions that one lacks).
    let mut previous = (!stored.links.is_empty())
        .then(|| snapshot_from_links(stored.links.iter().map(|(_, _, l)| l.as_slice())).ok())
        .flatten();
    let mut snapshots = Vec::with_capacity(stored.unsnapshotted.len());
    let mut take = |doc: &HistoryDoc, version: i64| {
        let full = doc.snapshot();
        match snapshot_link(previous.as_deref(), &full) {
            Ok(link) => snapshots.push((version, link)),
            // Not a link of a chain that decodes: the whole snapshot, which
            // is a correct link after any chain.
            Err(_) => snapshots.push((version, full.clone())),
        }
        previous = Some(full);
    };
    let mut versions = stored.unsnapshotted.iter().peekable();
    for (i, (id, update)) in updates.iter().enumerate() {
        while let Some((version, _)) = versions.next_if(|(_, upto)| upto < id) {
            take(&doc, *version);
        }
        if doc.apply(update).is_ok() {
            if let Some(Some(user)) = stored.users.get(i) {
                let _ = attribution.record(user, update);
            }
        }
    }
    for (version, _) in versions {
        take(&doc, *version);
    }
    HistoryFold {
        base: doc.encode(),
        attribution: attribution.encode(),
        snapshots,
    }
}
