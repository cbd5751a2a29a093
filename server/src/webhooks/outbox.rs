//! Writing events into the outbox, off the relay path: the writer drains the
//! queue of connection events in one transaction per batch, and the
//! debouncer turns accumulated document changes into `document.updated`
//! when a document has been quiet for `debounce`, or changing for `max_wait`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{events, lock, Webhooks};
use crate::store::{now_ms, DocId};

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

/// Reports document changes as `document.updated` events. It sleeps until
/// the earliest report is due (a change noted later is never due earlier:
/// its time is at least every earlier change's), or until changes appear.
pub async fn run_debouncer(hooks: Arc<Webhooks>, shutdown: CancellationToken) {
    let debounce = millis(hooks.settings.debounce);
    let max_wait = millis(hooks.settings.max_wait);
    let due_at = |(first, last): (i64, i64)| (last + debounce).min(first + max_wait);
    loop {
        let earliest = lock(&hooks.changes).values().map(|c| due_at(*c)).min();
        let wait = match earliest {
            None => Duration::from_secs(3600),
            Some(at) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)),
        };
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = hooks.changes_wake.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
        let now = now_ms();
        let due: Vec<(DocId, (i64, i64))> = lock(&hooks.changes)
            .iter()
            .filter(|(_, c)| due_at(**c) <= now)
            .map(|(doc, seen)| (*doc, *seen))
            .collect();
        for (doc, seen) in due {
            match report(&hooks, doc).await {
                Ok(()) => {
                    let mut changes = lock(&hooks.changes);
                    match changes.get(&doc).copied() {
                        Some(now_seen) if now_seen != seen => {
                            // Changes noted meanwhile may have missed this report.
                            changes.insert(doc, (now_seen.1, now_seen.1));
                        }
                        _ => {
                            changes.remove(&doc);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(doc_id = doc, error = %e, "reporting document changes failed; will retry");
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
            }
        }
    }
}

async fn report(
    hooks: &Webhooks,
    doc: DocId,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // The content is rendered from storage, which holds every reported change.
    let content = if hooks.wants_content() {
        render(hooks, doc).await?
    } else {
        None
    };
    let now = now_ms();
    let build = |changes: &crate::store::DocChanges| {
        events::document_updated(changes, content.as_ref(), now)
    };
    if hooks.store.report_changes(doc, now, &build).await? {
        hooks.messages_written();
    }
    Ok(())
}

async fn render(
    hooks: &Webhooks,
    doc: DocId,
) -> Result<Option<serde_json::Value>, Box<dyn std::error::Error + Send + Sync>> {
    let (state, _, _) = crate::room::load::load_stored(hooks.store.as_ref(), doc).await?;
    let value = tokio::task::spawn_blocking(move || state.to_json()).await?;
    Ok(Some(value))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
