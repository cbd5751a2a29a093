//! Group commit: rooms hand accepted updates to the `Persister` without
//! waiting; its thread writes everything queued so far in one transaction,
//! then everything that arrived meanwhile in the next. Under load batches
//! grow, so the database sees a few transactions per second, not one per
//! update; when idle an update is written as soon as it arrives.
//!
//! The writer is a thread of its own, not an async task: it blocks on the
//! database and the disk (`LogWriter`) so that nothing else does, and an
//! update costs its room one push onto the queue and, when the writer is
//! asleep, one wake-up.
//!
//! Two watermarks: *committed* (the write is in the database file, so no
//! crash or `kill -9` of the process loses it) and *synced* (it is on the
//! disk, so a power cut does not either). A commit does not wait for the
//! disk; the writer syncs at most `sync_interval` after a commit, and at
//! once when someone waits for it (an HTTP API update before its 2xx, a
//! graceful stop). With an interval of zero every commit is synced.
//!
//! Invariants: `enqueue` never blocks and never drops an update; a failed
//! write or sync is retried (with backoff) until it succeeds or the process
//! ends; a watermark only advances past a sequence number once that state
//! is reached. The compactor folds long logs into snapshots off the relay
//! path.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::store::{now_ms, DocId, LogWriter, PendingUpdate, Store, StoreError};
use crate::webhooks::Webhooks;

/// The handle rooms and the API use. Cloning it is cheap.
#[derive(Clone)]
pub struct Persister {
    inner: Arc<Inner>,
}

/// The writer thread. `stop` ends it once everything queued is written and
/// on the disk.
pub struct PersisterThread {
    inner: Arc<Inner>,
    done: oneshot::Receiver<()>,
}

struct Inner {
    store: Arc<dyn Store>,
    webhooks: Arc<Webhooks>,
    metrics: crate::metrics::Metrics,
    sync_interval: Duration,
    queue: Mutex<Queue>,
    /// Wakes the writer while it waits (`Queue::writer_waiting`).
    wake: Condvar,
    /// The highest sequence number whose write is committed.
    committed: watch::Sender<u64>,
    /// The highest sequence number whose write is on the disk.
    synced: watch::Sender<u64>,
}

#[derive(Default)]
struct Queue {
    updates: Vec<PendingUpdate>,
    /// The sequence number of the last update enqueued.
    last_seq: u64,
    /// The highest sequence number someone waits to see synced.
    sync_wanted: u64,
    /// The writer waits on `wake`: whoever gives it work notifies it (and
    /// only then, so a busy writer costs its rooms no system call).
    writer_waiting: bool,
    /// Set by `PersisterThread::stop`.
    stopping: bool,
}

const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Persister {
    /// Starts the writer thread.
    pub fn start(
        store: Arc<dyn Store>,
        metrics: crate::metrics::Metrics,
        webhooks: Arc<Webhooks>,
        sync_interval: Duration,
    ) -> std::io::Result<(Persister, PersisterThread)> {
        let inner = Arc::new(Inner {
            store,
            webhooks,
            metrics,
            sync_interval,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            committed: watch::channel(0).0,
            synced: watch::channel(0).0,
        });
        let (done_tx, done) = oneshot::channel();
        let writer = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("tandem-persist".into())
            .spawn(move || {
                write_loop(&writer);
                let _ = done_tx.send(());
            })?;
        Ok((
            Persister {
                inner: Arc::clone(&inner),
            },
            PersisterThread { inner, done },
        ))
    }

    /// Queues an update for the next commit and returns its sequence number.
    pub fn enqueue(&self, doc_id: DocId, data: Bytes, user: Option<Arc<str>>) -> u64 {
        let (seq, wake) = {
            let mut q = lock(&self.inner.queue);
            q.updates.push(PendingUpdate { doc_id, data, user });
            q.last_seq += 1;
            (q.last_seq, std::mem::take(&mut q.writer_waiting))
        };
        if wake {
            self.inner.wake.notify_one();
        }
        seq
    }

    /// Waits until the update with sequence number `seq` is on the disk,
    /// asking for a sync rather than waiting for the interval.
    pub async fn wait_durable(&self, seq: u64) {
        let wake = {
            let mut q = lock(&self.inner.queue);
            q.sync_wanted = q.sync_wanted.max(seq);
            std::mem::take(&mut q.writer_waiting)
        };
        if wake {
            self.inner.wake.notify_one();
        }
        wait_until(&self.inner.synced, seq).await;
    }

    /// Waits until everything enqueued so far is committed: readers of the
    /// database see it.
    pub async fn flush(&self) {
        let seq = lock(&self.inner.queue).last_seq;
        wait_until(&self.inner.committed, seq).await;
    }

    /// Waits until everything enqueued so far is on the disk.
    pub async fn flush_durable(&self) {
        let seq = lock(&self.inner.queue).last_seq;
        self.wait_durable(seq).await;
    }

    /// Updates queued but not yet committed.
    pub fn backlog(&self) -> usize {
        lock(&self.inner.queue).updates.len()
    }
}

impl PersisterThread {
    /// Asks the writer to finish and waits until it has: it writes and syncs
    /// whatever is queued first. The app stops it after the rooms.
    pub async fn stop(self) {
        lock(&self.inner.queue).stopping = true;
        self.inner.wake.notify_one();
        // An error means the thread ended already.
        let _ = self.done.await;
    }
}

/// The writer thread's loop: commit what is queued, sync when due, sleep
/// until there is more.
fn write_loop(inner: &Inner) {
    let mut writer: Option<Box<dyn LogWriter>> = None;
    let mut backoff = RETRY_BACKOFF_MIN;
    // When the oldest commit not yet synced was made.
    let mut unsynced_since: Option<Instant> = None;
    loop {
        let (batch, last_seq, sync_wanted, stopping) = {
            let mut q = lock(&inner.queue);
            (
                std::mem::take(&mut q.updates),
                q.last_seq,
                q.sync_wanted,
                q.stopping,
            )
        };
        if !batch.is_empty() {
            // A panic below is a bug, but persisting must not stop for it:
            // it counts as a failed write (retried, the writer reopened; a
            // batch written twice is harmless, as updates are idempotent).
            let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                commit(inner, &mut writer, &batch)
            }))
            .unwrap_or_else(|_| {
                writer = None;
                Err(StoreError::Panicked)
            });
            match written {
                Ok(()) => {
                    backoff = RETRY_BACKOFF_MIN;
                    inner.committed.send_replace(last_seq);
                    unsynced_since.get_or_insert_with(Instant::now);
                }
                Err(e) => {
                    tracing::error!(error = %e, updates = batch.len(), retry_in_ms = backoff.as_millis() as u64, "writing updates failed; retrying");
                    // Put the batch back in front of what arrived meanwhile.
                    {
                        let mut q = lock(&inner.queue);
                        let newer = std::mem::replace(&mut q.updates, batch);
                        q.updates.extend(newer);
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                    continue;
                }
            }
        }
        let committed = *inner.committed.borrow();
        let synced = *inner.synced.borrow();
        let sync_due = unsynced_since.map(|t| t + inner.sync_interval);
        let wanted = sync_wanted > synced && committed > synced;
        let stopping = stopping && batch.is_empty();
        if unsynced_since.is_some() && (wanted || stopping || sync_due <= Some(Instant::now())) {
            match sync(inner, &mut writer) {
                Ok(()) => {
                    backoff = RETRY_BACKOFF_MIN;
                    unsynced_since = None;
                    inner.synced.send_replace(committed);
                }
                Err(e) => {
                    tracing::error!(error = %e, retry_in_ms = backoff.as_millis() as u64, "syncing the database to disk failed; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                }
            }
            continue;
        }
        if !batch.is_empty() {
            continue;
        }
        if stopping {
            return;
        }
        // Sleep until there is work, a sync is asked for or due, or the stop.
        let mut q = lock(&inner.queue);
        if !q.updates.is_empty() || q.stopping || (q.sync_wanted > synced && committed > synced) {
            continue;
        }
        q.writer_waiting = true;
        q = match sync_due {
            Some(due) => {
                let timeout = due.saturating_duration_since(Instant::now());
                match inner.wake.wait_timeout(q, timeout) {
                    Ok((q, _)) => q,
                    Err(p) => p.into_inner().0,
                }
            }
            None => inner.wake.wait(q).unwrap_or_else(|p| p.into_inner()),
        };
        q.writer_waiting = false;
    }
}

/// Writes one batch. A failed write drops the writer: it may be broken or inside a transaction, and
/// the retry gets a new one.
fn commit(
    inner: &Inner,
    writer: &mut Option<Box<dyn LogWriter>>,
    batch: &[PendingUpdate],
) -> Result<(), StoreError> {
    let started = Instant::now();
    // Changes are counted for `document.updated` only when someone listens.
    let track = inner
        .webhooks
        .wants(crate::webhooks::events::DOCUMENT_UPDATED);
    if let Err(e) = open(inner, writer)?.append(batch, track) {
        *writer = None;
        return Err(e);
    }
    if track {
        inner
            .webhooks
            .note_changes(batch.iter().map(|u| u.doc_id), now_ms());
    }
    let metrics = &inner.metrics;
    metrics
        .persist_seconds
        .record(started.elapsed().as_secs_f64());
    metrics.persist_batch_updates.record(batch.len() as f64);
    tracing::debug!(
        updates = batch.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "committed"
    );
    Ok(())
}

/// The writer, opened first when there is none.
fn open<'a>(
    inner: &Inner,
    writer: &'a mut Option<Box<dyn LogWriter>>,
) -> Result<&'a mut Box<dyn LogWriter>, StoreError> {
    Ok(match writer {
        Some(w) => w,
        None => writer.insert(inner.store.log_writer()?),
    })
}

fn sync(inner: &Inner, writer: &mut Option<Box<dyn LogWriter>>) -> Result<(), StoreError> {
    let started = Instant::now();
    open(inner, writer)?.sync()?;
    inner
        .metrics
        .sync_seconds
        .record(started.elapsed().as_secs_f64());
    Ok(())
}

/// Waits until a watermark reaches `seq`. An error means the persister is
/// gone; callers then time out or shut down.
async fn wait_until(watermark: &watch::Sender<u64>, seq: u64) {
    let mut rx = watermark.subscribe();
    let _ = rx.wait_for(|&c| c >= seq).await;
}

/// The queue's lock is only held to push or swap a `Vec`; a poisoned lock
/// (a panic while pushing) leaves it consistent, so it is taken anyway.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Folds long update logs into snapshots, off the relay path: it reads the
/// stored rows, merges them on a blocking thread, and replaces exactly the
/// rows it read, so updates appended meanwhile are untouched.
pub async fn run_compactor(
    store: Arc<dyn Store>,
    min_updates: u32,
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
        let candidates = match store.compaction_candidates(min_updates).await {
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
            if let Err(e) = compact_document(&store, doc_id, COMPACT_PAGE_ROWS).await {
                tracing::warn!(doc_id, error = %e, "compaction failed; will retry");
            }
        }
    }
}

/// Rows folded per step. A log read whole cost the benchmark's trace
/// replay (d) 80 MiB of peak memory (about 125,000 rows every 5 s; 6 MiB
/// with compaction off); in steps of this many, 20 to 25 MiB.
const COMPACT_PAGE_ROWS: u32 = 10_000;

/// Steps per document per pass: a document written faster than it is
/// folded does not hold the compactor; the rest waits for the next pass.
const COMPACT_MAX_PAGES: usize = 100;

/// Folds a document's log into its snapshot, `page_rows` of the oldest
/// rows at a time, each step committed on its own.
pub async fn compact_document(
    store: &Arc<dyn Store>,
    doc_id: DocId,
    page_rows: u32,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    for _ in 0..COMPACT_MAX_PAGES {
        let log = store.read_log_head(doc_id, page_rows).await?;
        let Some(upto_id) = log.updates.last().map(|(id, _)| *id) else {
            return Ok(());
        };
        let rows = log.updates.len();
        let merged = tokio::task::spawn_blocking(move || {
            tandem_crdt::compact(
                log.snapshot.as_deref(),
                log.updates.iter().map(|(_, u)| u.as_slice()),
            )
        })
        .await??;
        let (snapshot, report) = merged;
        if report.skipped > 0 {
            tracing::error!(
                doc_id,
                skipped = report.skipped,
                "stored updates that do not decode were dropped by compaction"
            );
        }
        store.write_snapshot(doc_id, &snapshot, upto_id).await?;
        tracing::debug!(doc_id, rows, snapshot_bytes = snapshot.len(), "compacted");
        if rows < page_rows as usize {
            break;
        }
    }
    Ok(())
}
