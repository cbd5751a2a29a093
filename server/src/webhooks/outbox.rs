//! Writing events into the outbox, off the relay path: the writer drains the
//! queue of connection events in one transaction per batch, and the
//! debouncer (every node runs one) turns the document changes every node
//! accumulates in the database into `document.updated` when a document has
//! been quiet for `debounce`, or changing for `max_wait`, by the database's
//! clock.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{events, lock, Webhooks};
use crate::store::{now_ms, ChangesStamp, Debounce, DocId, PendingReport, Report};

const RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// Writes queued events; after shutdown, once more, so none is left behind.
pub async fn run_writer(hooks: Arc<Webhooks>, shutdown: CancellationToken) {
    loop {
        let batch = std::mem::take(&mut *lock(&hooks.queue));
        if batch.is_empty() {
            if shutdown.is_cancelled() {
                return;
            }
            tokio::select! {
                _ = hooks.queue_wake.notified() => {}
                _ = shutdown.cancelled() => {}
            }
            continue;
        }
        match hooks.store.enqueue_events(&batch, now_ms()).await {
            Ok(()) => hooks.messages_written(),
            Err(e) => {
                tracing::error!(error = %e, events = batch.len(), "writing webhook events failed; retrying");
                {
                    let mut queue = lock(&hooks.queue);
                    let newer = std::mem::replace(&mut *queue, batch);
                    queue.extend(newer);
                }
                if shutdown.is_cancelled() {
                    return;
                }
                tokio::time::sleep(RETRY_BACKOFF).await;
            }
        }
    }
}

/// How often the reporter looks for due changes while some endpoint wants
/// them: changes written by other nodes reach it only through the
/// database. A report goes out at most this long after it falls due.
const REPORT_POLL: Duration = Duration::from_millis(250);
/// How long the reporter sleeps when no endpoint wants `document.updated`
/// and nothing is pending: changes written here, and endpoint changes, wake
/// it.
const REPORT_IDLE: Duration = Duration::from_secs(3600);
/// Documents looked at per round.
const REPORT_BATCH: u32 = 256;
/// Times a report's content is rendered again because another reporter
/// (on another node) took the window it was rendered for; then it goes out
/// without its content (saying `content_omitted`, as an oversized one
/// does). Changes that merely came in while it was rendered do not count:
/// the report takes the changes its content holds and leaves those for the
/// next one.
const RENDER_ROUNDS: usize = 3;

/// Reports document changes as `document.updated` events. Every node runs
/// one: it reads which documents' changes fall due (`debounce` after the
/// last change, at most `max_wait` after the first) by the database's clock,
/// and claims each; of several nodes claiming one at once, one reports it.
/// Changes from every node accumulate in the same rows, so a report counts
/// them all.
pub async fn run_debouncer(hooks: Arc<Webhooks>, shutdown: CancellationToken) {
    let debounce = Debounce {
        debounce_ms: millis(hooks.settings.debounce),
        max_wait_ms: millis(hooks.settings.max_wait),
        history_ms: hooks.history.interval().map(millis),
    };
    loop {
        // Changes are counted only while some endpoint wants them; without
        // one, what is pending is reported when due and nothing is polled.
        let mut wait = if hooks.wants(events::DOCUMENT_UPDATED) {
            REPORT_POLL
        } else {
            REPORT_IDLE
        };
        let mut more = false;
        match hooks.store.pending_reports(debounce, REPORT_BATCH).await {
            Ok(pending) => {
                more = pending.len() == REPORT_BATCH as usize;
                for p in &pending {
                    // Sorted by when they fall due: the first not yet due
                    // says how long to sleep.
                    if p.due_in_ms > 0 {
                        more = false;
                        wait = wait.min(Duration::from_millis(
                            u64::try_from(p.due_in_ms).unwrap_or(0),
                        ));
                        break;
                    }
                    if shutdown.is_cancelled() {
                        return;
                    }
                    if let Err(e) = report(&hooks, p, debounce).await {
                        tracing::warn!(doc_id = p.doc_id, error = %e, "reporting document changes failed; will retry");
                        more = false;
                        wait = wait.min(RETRY_BACKOFF);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading document changes failed; will retry");
                wait = wait.min(RETRY_BACKOFF);
            }
        }
        if more {
            continue;
        }
        // While polling anyway, the wake-ups of this node's own writes are
        // not needed (they come with every commit).
        let idle = wait == REPORT_IDLE;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = hooks.changes_wake.notified(), if idle => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn report(
    hooks: &Webhooks,
    pending: &PendingReport,
    debounce: Debounce,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let doc = pending.doc_id;
    let mut expect = pending.stamp;
    for round in 1..=RENDER_ROUNDS {
        // The content is rendered from storage after the changes' state was
        // read: the report counts only the changes of that state, so the
        // content holds every change it counts.
        let content = if hooks.wants_content() {
            render(hooks, doc).await?
        } else {
            None
        };
        let last_round = round == RENDER_ROUNDS;
        let expected = Some(expect).filter(|_| content.is_some() && !last_round);
        let now = now_ms();
        let max = hooks.settings.max_content_bytes;
        let content_arg = match &content {
            None => events::Content::None,
            Some((_, size)) if *size > max => events::Content::Omitted,
            Some((value, _)) => events::Content::Some(value),
        };
        let build = |changes: &crate::store::DocChanges| {
            // The last round reports whatever is there; content rendered
            // before changes it did not see must not stand for them.
            let stamp = ChangesStamp {
                first_change_at: changes.first_change_at,
                updates: changes.updates,
                bytes: changes.bytes,
                last_change_at: changes.last_change_at,
            };
            let content = match content_arg {
                events::Content::Some(_) if stamp != expect => events::Content::Omitted,
                other => other,
            };
            events::document_updated(changes, content, now)
        };
        match hooks
            .store
            .report_changes(doc, debounce, expected, now, &build)
            .await?
        {
            Report::Sent => {
                hooks.messages_written();
                return Ok(());
            }
            Report::Nothing => return Ok(()),
            Report::Changed(stamp) => expect = stamp,
        }
    }
    Ok(())
}

/// The document's JSON and the size of its serialization.
async fn render(
    hooks: &Webhooks,
    doc: DocId,
) -> Result<Option<(serde_json::Value, usize)>, Box<dyn std::error::Error + Send + Sync>> {
    let (state, _, _) = crate::room::load::load_stored(hooks.store.as_ref(), doc).await?;
    let rendered = tokio::task::spawn_blocking(move || {
        let value = state.to_json();
        let size = serde_json::to_vec(&value).map_or(usize::MAX, |v| v.len());
        (value, size)
    })
    .await?;
    Ok(Some(rendered))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Messages deleted per round of the delivery log's retention: rounds stay
/// short transactions however much has expired.
const SWEEP_BATCH: u32 = 1000;

/// Deletes delivered and failed messages older than
/// `TANDEM_WEBHOOK_LOG_RETENTION`, in bounded batches, until shutdown.
pub async fn run_log_sweeper(hooks: Arc<Webhooks>, shutdown: CancellationToken) {
    let retention = millis(hooks.settings.log_retention);
    let every =
        (hooks.settings.log_retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        loop {
            let before = now_ms().saturating_sub(retention);
            match hooks.store.delete_old_messages(before, SWEEP_BATCH).await {
                Ok(n) if n == u64::from(SWEEP_BATCH) && !shutdown.is_cancelled() => {
                    tokio::task::yield_now().await;
                }
                Ok(n) => {
                    if n > 0 {
                        tracing::debug!(messages = n, "expired webhook deliveries deleted");
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "deleting expired webhook deliveries failed; will retry");
                    break;
                }
            }
        }
    }
}
