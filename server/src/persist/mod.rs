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
//! Failing storage (SPEC §6): a failed write or sync marks the storage
//! failing and is retried with backoff until it succeeds, which clears the
//! mark by itself; while the mark is set, or while the backlog (the bytes
//! of updates queued and not yet committed) is over its bound,
//! `accepting` says no, and rooms and the API refuse new writes (1013,
//! 503) instead of queueing them. `/readyz` reports the same through
//! `health`. When a write elsewhere (the API's own statements) fails for
//! storage reasons, `note_failure` sets the mark too, and the writer probes
//! the database with a small write until one succeeds.
//!
//! Invariants: `enqueue` never blocks and never drops an update (callers
//! check `accepting` before they accept one, so the queue's bytes stay near
//! their bound); a watermark only advances past a sequence number once that
//! state is reached; waits have deadlines; a stop gives up retrying at its
//! deadline and says what it could not write.

pub mod compactor;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{oneshot, watch};

use crate::store::{now_ms, DocId, LogWriter, PendingUpdate, Store, StoreError, Track};
use crate::webhooks::Webhooks;

/// Why the server refuses writes right now. Its text is the reason
/// `/readyz` and refused writes report.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageUnavailable {
    #[error("storage unavailable: writing to the database fails ({0})")]
    Failing(Arc<str>),
    #[error("storage unavailable: {bytes} bytes of updates wait to be written (limit {limit})")]
    Backlog { bytes: usize, limit: usize },
    #[error("storage unavailable: the database did not confirm the write in time")]
    Timeout,
}

/// What a stop could not write: the process must not report success.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{updates} accepted updates were not written to the database before the stop ({reason})")]
pub struct Unwritten {
    pub updates: u64,
    pub reason: String,
}

/// How the persister is set up.
#[derive(Debug, Clone)]
pub struct PersistConfig {
    /// How long a commit may wait to be synced to the disk.
    pub sync_interval: Duration,
    /// Bytes of updates queued and not yet committed above which new
    /// writes are refused.
    pub backlog_bytes: usize,
    /// Where committed updates go next when several nodes share the
    /// database: to the other nodes.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// The handle rooms and the API use. Cloning it is cheap.
#[derive(Clone)]
pub struct Persister {
    inner: Arc<Inner>,
}

/// The writer thread. `stop_by` ends it once everything queued is written
/// and on the disk, or at its deadline.
pub struct PersisterThread {
    inner: Arc<Inner>,
    done: oneshot::Receiver<()>,
}

struct Inner {
    store: Arc<dyn Store>,
    webhooks: Arc<Webhooks>,
    metrics: crate::metrics::Metrics,
    config: PersistConfig,
    queue: Mutex<Queue>,
    /// Wakes the writer while it waits (`Queue::writer_waiting`).
    wake: Condvar,
    /// The highest sequence number whose write is committed.
    committed: watch::Sender<u64>,
    /// The highest sequence number whose write is on the disk.
    synced: watch::Sender<u64>,
    /// Bytes of updates enqueued and not yet committed. Read on the relay
    /// path (`accepting`), so it is an atomic, not a field of `queue`.
    backlog_bytes: AtomicUsize,
    /// Set while storage fails: from a failed write until one succeeds.
    failing: AtomicBool,
    /// Why it fails (the last error), while `failing`.
    failure: Mutex<Option<Arc<str>>>,
    /// `failing`, for those who wait on it to change.
    healthy: watch::Sender<bool>,
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
    /// Set by `PersisterThread::stop_by`, with the moment the writer stops
    /// retrying.
    stopping: Option<Instant>,
    /// Someone else's write failed for storage reasons: the writer probes
    /// until a write succeeds.
    probe: bool,
}

/// The first wait after a failure; it doubles up to the maximum, which is
/// short so that service resumes soon after storage comes back.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// While storage keeps failing, the error is logged again this often.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(30);

/// How long a stop waits for the writer thread beyond its deadline: it may
/// be inside one call to SQLite (its busy timeout is longer).
const STOP_MARGIN: Duration = Duration::from_secs(1);

impl Persister {
    /// Starts the writer thread.
    pub fn start(
        store: Arc<dyn Store>,
        metrics: crate::metrics::Metrics,
        webhooks: Arc<Webhooks>,
        config: PersistConfig,
    ) -> std::io::Result<(Persister, PersisterThread)> {
        let inner = Arc::new(Inner {
            store,
            webhooks,
            metrics,
            config,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            committed: watch::channel(0).0,
            synced: watch::channel(0).0,
            backlog_bytes: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
            failure: Mutex::new(None),
            healthy: watch::channel(true).0,
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

    /// Whether a new write may be accepted: storage works and the backlog
    /// is within its bound. Cheap (two atomic loads when it does).
    pub fn accepting(&self) -> Result<(), StorageUnavailable> {
        let inner = &self.inner;
        if inner.failing.load(Ordering::Acquire) {
            return Err(inner.failure());
        }
        let bytes = inner.backlog_bytes.load(Ordering::Relaxed);
        let limit = inner.config.backlog_bytes;
        if bytes > limit {
            return Err(StorageUnavailable::Backlog { bytes, limit });
        }
        Ok(())
    }

    /// For `/readyz`: the same answer as `accepting`, with its reason.
    pub fn health(&self) -> Result<(), StorageUnavailable> {
        self.accepting()
    }

    /// Says that a write outside the update log failed for storage reasons:
    /// the storage counts as failing until the writer's probe succeeds.
    pub fn note_failure(&self, error: &StoreError) {
        self.inner.set_failing(error);
        let wake = {
            let mut q = lock(&self.inner.queue);
            q.probe = true;
            std::mem::take(&mut q.writer_waiting)
        };
        if wake {
            self.inner.wake.notify_one();
        }
    }

    /// Queues an update for the next commit and returns its sequence number.
    pub fn enqueue(&self, doc_id: DocId, data: Bytes, user: Option<Arc<str>>) -> u64 {
        self.inner
            .backlog_bytes
            .fetch_add(data.len(), Ordering::Relaxed);
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
    /// asking for a sync rather than waiting for the interval. Gives up at
    /// `deadline`, or as soon as storage is failing: the update stays
    /// queued and is written when storage is back.
    pub async fn wait_durable_by(
        &self,
        seq: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(), StorageUnavailable> {
        self.ask_sync(seq);
        self.wait_by(&self.inner.synced, seq, deadline, true).await
    }

    /// Waits until everything enqueued so far is committed (readers of the
    /// database see it), until `deadline` or until storage is failing.
    pub async fn flush_by(&self, deadline: tokio::time::Instant) -> Result<(), StorageUnavailable> {
        let seq = lock(&self.inner.queue).last_seq;
        self.wait_by(&self.inner.committed, seq, deadline, true)
            .await
    }

    /// Waits until everything enqueued so far is on the disk, until
    /// `deadline` even while storage fails (it may come back): for a stop.
    pub async fn flush_durable_by(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<(), StorageUnavailable> {
        let seq = lock(&self.inner.queue).last_seq;
        self.ask_sync(seq);
        self.wait_by(&self.inner.synced, seq, deadline, false).await
    }

    /// Whether an update of `doc_id` waits to be committed. It looks through
    /// the queue, so it is for rare paths (a load while storage fails).
    pub fn has_pending(&self, doc_id: DocId) -> bool {
        lock(&self.inner.queue)
            .updates
            .iter()
            .any(|u| u.doc_id == doc_id)
    }

    /// Updates queued but not yet committed.
    pub fn backlog(&self) -> usize {
        lock(&self.inner.queue).updates.len()
    }

    /// Bytes of updates queued but not yet committed.
    pub fn backlog_bytes(&self) -> usize {
        self.inner.backlog_bytes.load(Ordering::Relaxed)
    }

    fn ask_sync(&self, seq: u64) {
        let wake = {
            let mut q = lock(&self.inner.queue);
            q.sync_wanted = q.sync_wanted.max(seq);
            std::mem::take(&mut q.writer_waiting)
        };
        if wake {
            self.inner.wake.notify_one();
        }
    }

    /// Waits until `watermark` reaches `seq`; an error at `deadline`, or,
    /// with `fail_fast`, once storage is failing.
    async fn wait_by(
        &self,
        watermark: &watch::Sender<u64>,
        seq: u64,
        deadline: tokio::time::Instant,
        fail_fast: bool,
    ) -> Result<(), StorageUnavailable> {
        let mut reached = watermark.subscribe();
        let mut healthy = self.inner.healthy.subscribe();
        let failed = async {
            if fail_fast && healthy.wait_for(|h| !*h).await.is_ok() {
                return;
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            biased;
            r = reached.wait_for(|&c| c >= seq) => match r {
                Ok(_) => Ok(()),
                // The writer is gone: what it had not written is not.
                Err(_) => Err(StorageUnavailable::Timeout),
            },
            () = failed => Err(self.inner.failure()),
            () = tokio::time::sleep_until(deadline) => Err(StorageUnavailable::Timeout),
        }
    }
}

impl Inner {
    fn failure(&self) -> StorageUnavailable {
        let reason = lock(&self.failure)
            .clone()
            .unwrap_or_else(|| Arc::from("unknown error"));
        StorageUnavailable::Failing(reason)
    }

    /// Marks storage failing; returns whether it was not already.
    fn set_failing(&self, error: &StoreError) -> bool {
        *lock(&self.failure) = Some(Arc::from(error.to_string()));
        let was = self.failing.swap(true, Ordering::AcqRel);
        self.healthy.send_replace(false);
        crate::metrics::set_storage_healthy(false);
        !was
    }

    /// Clears the mark after a write succeeded; returns whether it was set.
    fn set_working(&self) -> bool {
        if !self.failing.swap(false, Ordering::AcqRel) {
            return false;
        }
        *lock(&self.failure) = None;
        self.healthy.send_replace(true);
        crate::metrics::set_storage_healthy(true);
        true
    }
}

impl PersisterThread {
    /// Asks the writer to finish and waits until it has: it writes and syncs
    /// whatever is queued first, retrying failures until `deadline`, then
    /// gives up. The app stops it after the rooms. An error says what was
    /// accepted and never written.
    pub async fn stop_by(self, deadline: tokio::time::Instant) -> Result<(), Unwritten> {
        lock(&self.inner.queue).stopping = Some(deadline.into_std());
        self.inner.wake.notify_one();
        // An error means the thread ended already.
        let ended = tokio::time::timeout_at(deadline + STOP_MARGIN, self.done).await;
        let last = lock(&self.inner.queue).last_seq;
        let synced = *self.inner.synced.borrow();
        if synced >= last {
            return Ok(());
        }
        let reason = match (ended, self.inner.failing.load(Ordering::Acquire)) {
            (Err(_), _) => "the writer was still inside a database call".to_string(),
            (Ok(_), true) => self.inner.failure().to_string(),
            (Ok(_), false) => "the stop's deadline passed".to_string(),
        };
        Err(Unwritten {
            updates: last - synced,
            reason,
        })
    }
}

/// The writer's state between turns of its loop.
struct Writer<'a> {
    inner: &'a Inner,
    log: Option<Box<dyn LogWriter>>,
    backoff: Duration,
    /// When the failure was last logged, while storage fails.
    logged_at: Option<Instant>,
}

impl Writer<'_> {
    fn succeeded(&mut self) {
        self.backoff = RETRY_BACKOFF_MIN;
        if self.inner.set_working() {
            tracing::info!("storage works again; accepting writes");
        }
        self.logged_at = None;
    }

    /// Records a failure, then waits out the backoff (a stop cuts it
    /// short). Returns false when the writer must give up: it is stopping
    /// and the stop's deadline has passed.
    fn failed(&mut self, what: &str, e: &StoreError, updates: usize) -> bool {
        let first = self.inner.set_failing(e);
        let now = Instant::now();
        if first || self.logged_at.is_none_or(|t| now >= t + FAILURE_LOG_EVERY) {
            tracing::error!(error = %e, updates, retry_in_ms = self.backoff.as_millis() as u64,
                "{what} failed; refusing new writes and retrying until storage works again");
            self.logged_at = Some(now);
        } else {
            tracing::debug!(error = %e, updates, "{what} failed again");
        }
        let mut q = lock(&self.inner.queue);
        let mut wait = self.backoff;
        if let Some(stop) = q.stopping {
            if now >= stop {
                return false;
            }
            wait = wait.min(stop - now);
        }
        self.backoff = (self.backoff * 2).min(RETRY_BACKOFF_MAX);
        // Woken early only by a stop; work arriving meanwhile waits for
        // the retry anyway.
        let until = now + wait;
        while q.stopping.is_none_or(|s| s > Instant::now()) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let before = q.stopping;
            q = match self.inner.wake.wait_timeout(q, left) {
                Ok((q, _)) => q,
                Err(p) => p.into_inner().0,
            };
            if q.stopping != before {
                break;
            }
        }
        true
    }
}

/// The writer thread's loop: commit what is queued, sync when due, sleep
/// until there is more.
fn write_loop(inner: &Inner) {
    let mut w = Writer {
        inner,
        log: None,
        backoff: RETRY_BACKOFF_MIN,
        logged_at: None,
    };
    // When the oldest commit not yet synced was made.
    let mut unsynced_since: Option<Instant> = None;
    loop {
        let (batch, last_seq, sync_wanted, stopping, probe) = {
            let mut q = lock(&inner.queue);
            (
                std::mem::take(&mut q.updates),
                q.last_seq,
                q.sync_wanted,
                q.stopping.is_some(),
                q.probe,
            )
        };
        if !batch.is_empty() {
            // A panic below is a bug, but persisting must not stop for it:
            // it counts as a failed write (retried, the writer reopened; a
            // batch written twice is harmless, as updates are idempotent).
            let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                commit(inner, &mut w.log, &batch)
            }))
            .unwrap_or_else(|_| {
                w.log = None;
                Err(StoreError::Panicked)
            });
            match written {
                Ok(()) => {
                    let bytes = batch.iter().map(|u| u.data.len()).sum();
                    inner.backlog_bytes.fetch_sub(bytes, Ordering::Relaxed);
                    inner.committed.send_replace(last_seq);
                    unsynced_since.get_or_insert_with(Instant::now);
                    lock(&inner.queue).probe = false;
                    w.succeeded();
                }
                Err(e) => {
                    let updates = batch.len();
                    // Put the batch back in front of what arrived meanwhile.
                    {
                        let mut q = lock(&inner.queue);
                        let newer = std::mem::replace(&mut q.updates, batch);
                        q.updates.extend(newer);
                    }
                    if !w.failed("writing updates", &e, updates) {
                        return;
                    }
                    continue;
                }
            }
        } else if probe {
            match probe_write(inner, &mut w.log) {
                Ok(()) => {
                    lock(&inner.queue).probe = false;
                    w.succeeded();
                }
                Err(e) => {
                    if !w.failed("probing the database", &e, 0) {
                        return;
                    }
                }
            }
            continue;
        }
        let committed = *inner.committed.borrow();
        let synced = *inner.synced.borrow();
        let sync_due = unsynced_since.map(|t| t + inner.config.sync_interval);
        let wanted = sync_wanted > synced && committed > synced;
        let stopping = stopping && batch.is_empty();
        if unsynced_since.is_some() && (wanted || stopping || sync_due <= Some(Instant::now())) {
            match sync(inner, &mut w.log) {
                Ok(()) => {
                    unsynced_since = None;
                    inner.synced.send_replace(committed);
                    w.succeeded();
                }
                Err(e) => {
                    if !w.failed("syncing the database to disk", &e, 0) {
                        return;
                    }
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
        if !q.updates.is_empty()
            || q.stopping.is_some()
            || q.probe
            || (q.sync_wanted > synced && committed > synced)
        {
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
    // Changes are counted for `document.updated` only when someone listens,
    // and for automatic versions while history is on.
    let track = if inner.webhooks.history.enabled {
        Track::ChangesAndHistory
    } else if inner
        .webhooks
        .wants(crate::webhooks::events::DOCUMENT_UPDATED)
    {
        Track::Changes
    } else {
        Track::Nothing
    };
    let log = open(inner, writer)?;
    if let Err(e) = log.append(batch, track) {
        *writer = None;
        return Err(e);
    }
    let appended = log.appended();
    if let Some(cluster) = &inner.config.cluster {
        cluster.committed(batch, &appended);
    }
    if track != Track::Nothing {
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
    if let Err(e) = open(inner, writer)?.sync() {
        *writer = None;
        return Err(e);
    }
    inner
        .metrics
        .sync_seconds
        .record(started.elapsed().as_secs_f64());
    Ok(())
}

fn probe_write(inner: &Inner, writer: &mut Option<Box<dyn LogWriter>>) -> Result<(), StoreError> {
    if let Err(e) = open(inner, writer)?.probe() {
        *writer = None;
        return Err(e);
    }
    Ok(())
}

/// The queue's lock is only held to push or swap a `Vec`; a poisoned lock
/// (a panic while pushing) leaves it consistent, so it is taken anyway.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
