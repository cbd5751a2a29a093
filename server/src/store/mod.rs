//! Storage: documents, their update logs and snapshots.
//!
//! `Store` moves bytes and rows and imports nothing else of Tandem's: it does
//! not know what an update means. Implementations: `sqlite` (default) and
//! `postgres`; `open` picks one by the URL's scheme.

use async_trait::async_trait;

pub mod cluster;
pub mod postgres;
pub mod sqlite;

pub type DocId = i64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot use the database at {url}: {reason}")]
    Config { url: String, reason: String },
    #[error("cannot put the database on the disk: {0}")]
    Sync(std::io::Error),
    #[error("database error: {0}")]
    Writer(#[from] rusqlite::Error),
    #[error("the update log's writer panicked")]
    Panicked,
    /// A compaction step would have left a version without a snapshot
    /// behind the new snapshot (it was made while the step ran); nothing
    /// was written, and the next step takes it in.
    #[error("a version was made while this compaction step ran; retrying")]
    VersionRace,
}

impl StoreError {
    /// Whether the error says that storage itself fails (the disk is full,
    /// the file read-only or unreadable, the database unreachable or
    /// locked), rather than that this call was wrong: such writes are
    /// refused as "storage unavailable" and retried when it is back.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(e) => match e {
                sqlx::Error::Database(db)
                    if db
                        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                        .is_some() =>
                {
                    db.code().is_some_and(|c| pg_unavailable(&c))
                }
                sqlx::Error::Database(db) => db
                    .code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .is_some_and(|c| UNAVAILABLE_CODES.contains(&(c & 0xff))),
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                _ => false,
            },
            StoreError::Writer(rusqlite::Error::SqliteFailure(e, _)) => {
                UNAVAILABLE_CODES.contains(&(e.extended_code & 0xff))
            }
            StoreError::Sync(_) => true,
            _ => false,
        }
    }
}

/// SQLite's primary result codes that mean storage fails: BUSY, LOCKED,
/// READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB.
const UNAVAILABLE_CODES: [i32; 8] = [5, 6, 8, 10, 11, 13, 14, 26];

/// Whether a PostgreSQL error (its SQLSTATE) says that the database fails
/// or is out of reach rather than that the call was wrong: connection
/// exceptions (class 08), insufficient resources (53: disk full, out of
/// memory, too many connections), operator intervention (57: shutting down,
/// not yet accepting connections; not 57014, a cancelled statement), system
/// errors (58: I/O), and a read-only server (25006: a standby).
fn pg_unavailable(code: &str) -> bool {
    let class = code.get(..2).unwrap_or_default();
    matches!(class, "08" | "53" | "58") || (class == "57" && code != "57014") || code == "25006"
}

/// Writes the update log. The persister owns one and calls it from its own
/// thread only: each call blocks that thread until the database answers, so
/// no async task makes them.
pub trait LogWriter: Send {
    /// Appends a batch of updates in one transaction: all or nothing.
    /// Updates of documents that no longer exist are skipped. The same
    /// transaction adds them to `doc_changes` as `track` says.
    fn append(&mut self, batch: &[PendingUpdate], track: Track) -> Result<(), StoreError>;

    /// Brings the documents' counters (`log_count`, `size_bytes`,
    /// `updated_at`) up to date with the appends, and puts every committed
    /// append on the disk. Appends are committed without waiting for the
    /// disk (a crash or `kill -9` of the process loses none of them); this
    /// makes them survive a power cut too.
    fn sync(&mut self) -> Result<(), StoreError>;

    /// A small write that tells whether the database takes writes again
    /// (after a failure elsewhere); it changes nothing anyone reads.
    fn probe(&mut self) -> Result<(), StoreError>;

    /// Where the last successful `append` numbered each document's updates.
    /// Only a log numbered per document (PostgreSQL's) says; the cluster
    /// relays these numbers so that other nodes can tell what they missed.
    fn appended(&mut self) -> Vec<AppendedRange> {
        Vec::new()
    }
}

/// What an append counts in `doc_changes` besides writing the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    Nothing,
    /// The changes the next `document.updated` reports.
    Changes,
    /// Those, and the window and authors of the next automatic version.
    ChangesAndHistory,
}

/// Where one batch put one document's updates in its log: numbers
/// `last_seq - count + 1 ..= last_seq`, in the batch's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendedRange {
    pub doc_id: DocId,
    pub last_seq: u64,
    pub count: u32,
}

/// A stored row set aside because it does not decode: never deleted for
/// that, it is moved to the quarantine table with its reason.
#[derive(Debug, Clone)]
pub struct Quarantined {
    /// Its id in the update log; `None` for the document's snapshot.
    pub row_id: Option<i64>,
    pub data: Vec<u8>,
    pub reason: String,
}

/// A document's stored state: a snapshot (if compacted) and the log after it.
#[derive(Debug, Default)]
pub struct DocLog {
    pub snapshot: Option<Vec<u8>>,
    /// `(row id, update)` in the order they were accepted.
    pub updates: Vec<(i64, Vec<u8>)>,
    /// What history needs beside them, where the read asked for it.
    pub history: Option<HistoryLog>,
}

/// A document's history as stored beside its snapshot and log (SPEC §9).
#[derive(Debug, Default)]
pub struct HistoryLog {
    /// The last update the snapshot (and `base`) holds; 0 without one.
    pub snapshot_upto: i64,
    /// The full history up to the snapshot (nothing garbage-collected);
    /// `None` where the document was compacted before history was kept, or
    /// never: its history starts at the snapshot.
    pub base: Option<Vec<u8>>,
    /// Who inserted and deleted what, up to the snapshot.
    pub attribution: Option<Vec<u8>>,
    /// The writer of each of `DocLog::updates`, in the same order.
    pub users: Vec<Option<String>>,
    /// Versions whose snapshot is not written yet, as `(id, upto)`, oldest
    /// first: compaction writes it when it folds their last row.
    pub unsnapshotted: Vec<(VersionId, i64)>,
    /// The written snapshots, as `(version, upto, link)` by `(upto, id)`:
    /// each link holds only the deletions the ones before it lack
    /// (`tandem_crdt::history::snapshot_link`), so a version's snapshot is
    /// the union of the links up to it.
    pub links: Vec<(VersionId, i64, Vec<u8>)>,
}

/// What compaction writes for history, with the snapshot and in its
/// transaction.
#[derive(Debug)]
pub struct HistoryFold {
    pub base: Vec<u8>,
    pub attribution: Vec<u8>,
    /// `(version, its snapshot's link)` for versions whose last row was
    /// folded.
    pub snapshots: Vec<(VersionId, Vec<u8>)>,
}

pub type VersionId = i64;

/// A version as stored (SPEC §9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRow {
    pub id: VersionId,
    pub doc_id: DocId,
    pub kind: VersionKind,
    pub name: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub created_by: Option<String>,
    /// Sorted, distinct.
    pub authors: Vec<String>,
    /// The last update of the log it includes.
    pub upto: i64,
    /// Its snapshot's link in the chain (see `HistoryLog::links`), once
    /// compaction folded `upto`.
    pub snapshot: Option<Vec<u8>>,
    pub restored_from: Option<VersionId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionKind {
    Auto,
    Named,
    Restore,
}

impl VersionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionKind::Auto => "auto",
            VersionKind::Named => "named",
            VersionKind::Restore => "restore",
        }
    }

    /// A stored kind; an unknown one (a row written by a newer server)
    /// reads as automatic.
    pub fn parse(s: &str) -> Self {
        match s {
            "named" => VersionKind::Named,
            "restore" => VersionKind::Restore,
            _ => VersionKind::Auto,
        }
    }
}

/// A version to make of a document's current stored state.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub kind: VersionKind,
    pub name: Option<String>,
    pub created_by: Option<String>,
    pub restored_from: Option<VersionId>,
}

/// Which versions a list shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct VersionFilter {
    pub kind: Option<VersionKind>,
    /// Only versions older than this one (the cursor).
    pub before: Option<VersionId>,
    pub limit: u32,
}

#[derive(Debug)]
pub struct FoundDoc {
    pub id: DocId,
    /// True when this call created the document.
    pub created: bool,
}

/// How much of a log `read_log_pages` hands over at once: at most `rows`
/// rows, and no more rows once a page holds `bytes` bytes (a single row or
/// snapshot larger than that is a page of its own).
#[derive(Debug, Clone, Copy)]
pub struct PageLimits {
    pub rows: usize,
    pub bytes: usize,
}

impl PageLimits {
    /// At most `rows` rows, whatever their bytes.
    pub const fn rows(rows: usize) -> Self {
        PageLimits {
            rows,
            bytes: usize::MAX,
        }
    }
}

/// One page of a stored document, in order: the snapshot (if any) opens the
/// first page, then the log's updates as they were accepted.
pub type LogPage = Vec<Vec<u8>>;

/// A document's metadata row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocMeta {
    pub id: DocId,
    pub name: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
    /// Stored bytes: snapshot plus update log.
    pub size_bytes: i64,
}

/// One accepted update waiting to be written.
#[derive(Debug, Clone)]
pub struct PendingUpdate {
    pub doc_id: DocId,
    pub data: bytes::Bytes,
    /// Who wrote it (a token's `sub`), for `document.updated`.
    pub user: Option<std::sync::Arc<str>>,
}

/// A webhook event for the outbox. Writing it creates one message for each
/// enabled endpoint subscribed to `event_type`, in the same transaction.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_type: &'static str,
    /// The document it is about, if any: endpoints' `doc_prefix` filters
    /// on it, and undelivered `document.updated` collapse by it.
    pub doc: Option<String>,
    /// The JSON body endpoints receive.
    pub payload: String,
    /// The body for endpoints that asked for the document's content.
    pub payload_with_content: Option<String>,
}

/// A webhook endpoint as stored. `Debug` hides the secrets.
#[derive(Clone)]
pub struct EndpointRow {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub include_content: bool,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub secret: String,
    pub previous_secret: Option<String>,
    /// Unix milliseconds.
    pub previous_secret_expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Only documents whose names start with this (SPEC §5); `None`: all.
    pub doc_prefix: Option<String>,
}

impl std::fmt::Debug for EndpointRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointRow")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// A change to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub enabled: Option<bool>,
    pub description: Option<Option<String>>,
    pub include_content: Option<bool>,
    /// `Some(None)` removes the filter.
    pub doc_prefix: Option<Option<String>>,
}

/// A message leased for an attempt.
#[derive(Debug, Clone)]
pub struct DueMessage {
    pub id: String,
    pub endpoint_id: String,
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// This lease's token: the attempt is recorded only while the message
    /// still holds it (see `record_attempt`).
    pub lease_token: String,
}

/// What became of an attempt, and so of its message.
#[derive(Debug, Clone)]
pub enum Outcome {
    Delivered,
    /// Failed; the next attempt is due this many milliseconds after the
    /// attempt is recorded, by the store's clock (the database's, on
    /// PostgreSQL, which every node's leases compare with).
    RetryIn(i64),
    /// Failed for the last time. The endpoint is disabled with this reason
    /// unless something was delivered to it since the message's first attempt.
    GaveUp {
        disable_reason: String,
    },
    /// The endpoint answered 410 Gone: the message has failed and the
    /// endpoint is disabled at once, with this reason.
    Gone {
        disable_reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub message_id: String,
    /// The token of the lease the attempt was made under.
    pub lease_token: String,
    pub endpoint_id: String,
    /// Unix milliseconds.
    pub attempted_at: i64,
    pub status_code: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub outcome: Outcome,
    /// Written, in the same transaction, if this attempt disables the
    /// endpoint (`webhook.endpoint_disabled` for the other endpoints).
    pub disabled_event: Option<NewEvent>,
}

/// One message in an endpoint's delivery log, with its attempts.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: String,
    pub event_type: String,
    pub status: String,
    pub payload: String,
    pub created_at: i64,
    pub next_attempt_at: Option<i64>,
    /// Position in the log, for the cursor.
    pub seq: i64,
    /// The newest `MAX_ATTEMPTS_SHOWN` attempts, oldest first.
    pub attempts: Vec<AttemptRow>,
    /// All attempts made, shown or not.
    pub attempts_total: i64,
    /// For a `collapsed` message: the one sent in its place.
    pub collapsed_into: Option<String>,
}

/// An undelivered `document.updated` a newer one merges into (SPEC §5),
/// as the stores read it.
#[derive(sqlx::FromRow)]
pub(crate) struct CollapseTarget {
    pub endpoint_id: String,
    pub include_content: bool,
    pub id: String,
    pub payload: String,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub first_attempt_at: Option<i64>,
    /// Some attempt sent it (its id may have reached the receiver).
    pub attempted: bool,
}

/// What collapsing a new `document.updated` into an endpoint's undelivered
/// one does to the stored messages (the stores run it in SQL).
#[derive(Debug)]
pub(crate) enum CollapseStep {
    /// No attempt has sent it: it takes the merged body under its own id.
    Rewrite { id: String, merged: String },
    /// It was attempted (its id may have reached the receiver): it becomes
    /// `collapsed`, and a new message `new_id` with the merged body takes
    /// its place in the queue and in the retry schedule.
    Replace {
        id: String,
        new_id: String,
        merged: String,
        attempts: i64,
        next_attempt_at: Option<i64>,
        first_attempt_at: Option<i64>,
    },
    /// Not a body this server wrote: it is left alone, but no longer counts
    /// as its document's (its `doc` is cleared), so the new one is sent
    /// beside it.
    Detach { id: String },
}

/// The steps that merge `event` (a `document.updated`) into `targets`, the
/// undelivered ones of its document, newest first per endpoint: each
/// endpoint's newest only (normally its only one).
pub(crate) fn plan_collapse(targets: Vec<CollapseTarget>, event: &NewEvent) -> Vec<CollapseStep> {
    let mut steps = Vec::new();
    let mut last_endpoint: Option<String> = None;
    for t in targets {
        if last_endpoint.as_deref() == Some(t.endpoint_id.as_str()) {
            continue;
        }
        last_endpoint = Some(t.endpoint_id);
        let newer = match &event.payload_with_content {
            Some(full) if t.include_content => full,
            _ => &event.payload,
        };
        let step = match crate::webhooks::events::merge_updated(&t.payload, newer) {
            None => CollapseStep::Detach { id: t.id },
            Some(merged) if !t.attempted => CollapseStep::Rewrite { id: t.id, merged },
            Some(merged) => CollapseStep::Replace {
                id: t.id,
                new_id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
                merged,
                attempts: t.attempts,
                next_attempt_at: t.next_attempt_at,
                first_attempt_at: t.first_attempt_at,
            },
        };
        steps.push(step);
    }
    steps
}

/// What asking to send a message again did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retried {
    /// It is pending, due now.
    Queued,
    /// The endpoint has no such message.
    NotFound,
    /// It was merged into this newer message, which carries its counts.
    Collapsed { into: String },
}

/// A page of the delivery log.
#[derive(Debug, Clone, Default)]
pub struct DeliveryPage {
    pub items: Vec<DeliveryRow>,
    /// Whether older messages follow.
    pub more: bool,
}

/// Attempts shown per message in the delivery log: retries by hand can
/// add any number, and a page must stay bounded.
pub const MAX_ATTEMPTS_SHOWN: i64 = 50;

/// How much one page of the delivery log may hold: at most `count`
/// messages, and no more once their bodies and attempts pass `bytes`
/// (a first message is always shown, whatever its size: bodies are
/// bounded by `TANDEM_WEBHOOK_MAX_CONTENT_BYTES`).
#[derive(Debug, Clone, Copy)]
pub struct DeliveryLimits {
    pub count: u32,
    pub bytes: usize,
}

/// Counts a page of the delivery log against its `DeliveryLimits`.
pub(crate) struct DeliveryBudget {
    bytes_left: usize,
    taken: usize,
}

impl DeliveryBudget {
    pub(crate) fn new(limits: DeliveryLimits) -> Self {
        Self {
            bytes_left: limits.bytes,
            taken: 0,
        }
    }

    /// Whether a message this large (body and attempts) still fits.
    pub(crate) fn admit(&mut self, bytes: usize) -> bool {
        if self.taken > 0 && bytes > self.bytes_left {
            return false;
        }
        self.bytes_left = self.bytes_left.saturating_sub(bytes);
        self.taken += 1;
        true
    }
}

/// What an attempt adds to a page, beside its error text: its other
/// fields as JSON, generously.
pub(crate) const ATTEMPT_BYTES: usize = 160;

#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub attempted_at: i64,
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub next_retry_at: Option<i64>,
}

/// A document's changes not yet reported in a `document.updated` event.
#[derive(Debug, Clone)]
pub struct DocChanges {
    pub doc_id: DocId,
    pub name: String,
    pub updates: i64,
    pub bytes: i64,
    /// Sorted, distinct.
    pub users: Vec<String>,
    pub first_change_at: i64,
    pub last_change_at: i64,
    /// The automatic version made for this window, if one was.
    pub version: Option<VersionId>,
}

/// Merges a deleted version's snapshot link into the next one's
/// (`(deleted, next) -> merged`); `None` when either does not decode.
pub type MergeLinks<'a> = &'a (dyn Fn(&[u8], &[u8]) -> Option<Vec<u8>> + Send + Sync);

/// Builds the webhook event of a version, written in its transaction.
pub type VersionEvent<'a> = &'a (dyn Fn(&VersionRow) -> NewEvent + Send + Sync);

/// Builds a `document.updated` event from the changes it reports.
pub type ChangesEvent<'a> = &'a (dyn Fn(&DocChanges) -> NewEvent + Send + Sync);

/// One state of a document's unreported changes: the window they began
/// (`first_change_at`) and how far they have come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangesStamp {
    pub first_change_at: i64,
    pub updates: i64,
    pub bytes: i64,
    pub last_change_at: i64,
}

impl ChangesStamp {
    /// Whether these changes are `earlier` with more added since: the same
    /// window, not reported in between. Its first `earlier.updates` can then
    /// be reported on their own.
    pub fn continues(&self, earlier: &ChangesStamp) -> bool {
        self.first_change_at == earlier.first_change_at
            && self.updates >= earlier.updates
            && self.bytes >= earlier.bytes
            && self.last_change_at >= earlier.last_change_at
    }

    /// The changes a report takes: all of them, or, when `expect` is an
    /// earlier state of the same window, only those it held (the rest stay
    /// for the next report). `None` when the window is another one.
    pub fn reported(&self, expect: Option<ChangesStamp>) -> Option<ChangesStamp> {
        match expect {
            None => Some(*self),
            Some(e) if self.continues(&e) => Some(e),
            Some(_) => None,
        }
    }
}

/// Takes a report's changes (`$2` updates, `$3` bytes, the last of them
/// at `$4`) off a document's (`$1`) unreported ones; what was counted
/// after them stays, as a window that began no earlier than their last
/// change. The same statement on both backends.
pub(crate) const TAKE_REPORTED_CHANGES: &str =
    "UPDATE doc_changes SET updates = updates - $2, bytes = bytes - $3,
       first_change_at = CASE WHEN updates > $2 THEN $4 ELSE first_change_at END
     WHERE doc_id = $1";

/// Takes a report's users off a document's (`$1`) unreported ones: those
/// whose latest write was among its `$2` updates; the others stay, their
/// marks counted from the next report's first update.
pub(crate) const TAKE_REPORTED_USERS: &str =
    "UPDATE doc_change_users SET for_report = last_mark > $2, last_mark = last_mark - $2
     WHERE doc_id = $1 AND for_report";

/// When a `document.updated` falls due: `debounce` after a document's last
/// change, at most `max_wait` after its first unreported one. Milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Debounce {
    pub debounce_ms: i64,
    pub max_wait_ms: i64,
    /// An automatic version falls due this long after the first change it
    /// will hold (`TANDEM_HISTORY_INTERVAL`); `None` with history off.
    pub history_ms: Option<i64>,
}

/// A document with unreported changes, by when their report falls due.
#[derive(Debug, Clone, Copy)]
pub struct PendingReport {
    pub doc_id: DocId,
    pub stamp: ChangesStamp,
    /// Milliseconds until it is due by the database's clock; zero or less
    /// when due.
    pub due_in_ms: i64,
}

impl From<(DocId, i64, i64, i64, i64, i64)> for PendingReport {
    /// A row of `doc_id, first_change_at, updates, bytes, last_change_at,
    /// due_in`, as both backends select it.
    fn from(
        (doc_id, first_change_at, updates, bytes, last_change_at, due_in_ms): (
            DocId,
            i64,
            i64,
            i64,
            i64,
            i64,
        ),
    ) -> Self {
        PendingReport {
            doc_id,
            stamp: ChangesStamp {
                first_change_at,
                updates,
                bytes,
                last_change_at,
            },
            due_in_ms,
        }
    }
}

/// What `report_changes` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// The event was written and the changes cleared.
    Sent,
    /// Nothing to report: no changes, not due yet, or another reporter
    /// (another node) is reporting them right now.
    Nothing,
    /// The changes are due but are no longer the window the caller
    /// expected (another reporter took it); this is their stamp now.
    /// Nothing was written.
    Changed(ChangesStamp),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Finds the document named `name`, creating it (empty, at `now`) when
    /// absent; `created` is written with the document when it is created.
    async fn find_or_create(
        &self,
        name: &str,
        now: i64,
        created: Option<&NewEvent>,
    ) -> Result<FoundDoc, StoreError>;

    /// Creates a document holding `snapshot` (a whole Yjs v1 state) at
    /// `now`, in one transaction; with `replace`, a document of that name
    /// is deleted in the same transaction (so a crash leaves either the old
    /// one or the new one, never neither). `None` when the name is taken
    /// and `replace` is false; else the document and whether it replaced
    /// one. For `tandem import`: no event is written.
    async fn create_from_state(
        &self,
        name: &str,
        now: i64,
        snapshot: &[u8],
        replace: bool,
    ) -> Result<Option<(DocMeta, bool)>, StoreError>;

    /// Creates an empty document at `now`, with its `created` event; `None`
    /// when the name is taken.
    async fn create(
        &self,
        name: &str,
        now: i64,
        created: Option<&NewEvent>,
    ) -> Result<Option<DocMeta>, StoreError>;

    /// The document named `name`, if it exists.
    async fn get(&self, name: &str) -> Result<Option<DocMeta>, StoreError>;

    /// Up to `limit` documents whose names start with `prefix` and sort
    /// after `after`, in name order (keyset pagination: a document is never
    /// listed twice, and one created behind the cursor is not missed by
    /// later pages if its name sorts after it).
    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DocMeta>, StoreError>;

    /// Deletes the document, its log and its snapshot in one transaction,
    /// with its `deleted` event. Returns whether it existed.
    async fn delete(&self, name: &str, deleted: Option<&NewEvent>) -> Result<bool, StoreError>;

    /// Opens the update log's writer, for the persister's thread. It blocks
    /// that thread while it opens.
    fn log_writer(&self) -> Result<Box<dyn LogWriter>, StoreError>;

    /// What nodes sharing this database need of it, where several may
    /// (PostgreSQL); `None` for a database one node serves alone.
    fn cluster(&self) -> Option<std::sync::Arc<dyn cluster::ClusterStore>> {
        None
    }

    /// Documents whose log holds at least `min_updates` updates or
    /// `min_bytes` bytes.
    async fn compaction_candidates(
        &self,
        min_updates: u32,
        min_bytes: u64,
    ) -> Result<Vec<DocId>, StoreError>;

    /// A document's snapshot and log, read as of one moment (a compaction
    /// committing meanwhile cannot pair the old snapshot with the new log).
    async fn read_log(&self, doc_id: DocId) -> Result<DocLog, StoreError>;

    /// As `read_log`, as of one moment too, but handed to `pages` a page at
    /// a time while it is read, so that loading a long log holds a few pages
    /// of it in memory, not all of it. Stops early, without an error,
    /// when `pages` is closed. The read lasts as long as its receiver takes,
    /// so loads must not take the connections other calls need.
    ///
    /// Returns how far the read reached: the number of the log's last
    /// update it includes where the log is numbered per document
    /// (PostgreSQL), 0 elsewhere.
    async fn read_log_pages(
        &self,
        doc_id: DocId,
        limits: PageLimits,
        pages: tokio::sync::mpsc::Sender<LogPage>,
    ) -> Result<u64, StoreError>;

    /// As `read_log`, with only the oldest updates of the log: at most
    /// `limits.rows` rows, and no more once they hold `limits.bytes` bytes
    /// (at least one row). What compaction folds in one step, so that its
    /// memory stays bounded however long the log has grown and however
    /// large its rows are.
    async fn read_log_head(&self, doc_id: DocId, limits: PageLimits) -> Result<DocLog, StoreError>;

    /// Replaces the snapshot with `snapshot`, which holds every update up to
    /// row `upto_id`, and deletes those rows, in one transaction; the rows
    /// (and old snapshot) in `quarantine` are moved to the quarantine table
    /// in the same transaction.
    async fn write_snapshot(
        &self,
        doc_id: DocId,
        snapshot: &[u8],
        upto_id: i64,
        quarantine: &[Quarantined],
    ) -> Result<(), StoreError> {
        self.write_fold(doc_id, snapshot, upto_id, quarantine, None)
            .await
    }

    /// Rows of a document in the quarantine table.
    async fn quarantined(&self, doc_id: DocId) -> Result<i64, StoreError>;

    // --- history (SPEC §9) ---

    /// As `read_log_head`, with what compaction needs to keep history:
    /// the history base, the attribution, the rows' writers and the
    /// versions whose last row is among those read.
    async fn read_log_head_with_history(
        &self,
        doc_id: DocId,
        limits: PageLimits,
    ) -> Result<DocLog, StoreError>;

    /// As `write_snapshot`, writing `history` in the same transaction. It
    /// fails, writing nothing, if a version without a snapshot would be
    /// left behind the new snapshot (made while this step was computed).
    async fn write_fold(
        &self,
        doc_id: DocId,
        snapshot: &[u8],
        upto_id: i64,
        quarantine: &[Quarantined],
        history: Option<&HistoryFold>,
    ) -> Result<(), StoreError>;

    /// The history base, the attribution and the log up to update `upto`
    /// (all of it with `None`), with each row's writer, as of one moment.
    async fn read_history(&self, doc_id: DocId, upto: Option<i64>) -> Result<DocLog, StoreError>;

    /// Makes a version of the document's current stored state (its last
    /// committed update), listing who wrote since the previous version;
    /// the next automatic version starts after it. `None` when the
    /// document is gone.
    async fn create_version(
        &self,
        doc_id: DocId,
        version: &NewVersion,
        now: i64,
        announce: Option<VersionEvent<'_>>,
    ) -> Result<Option<VersionRow>, StoreError>;

    /// Newest first, without their snapshots.
    async fn list_versions(
        &self,
        doc_id: DocId,
        filter: VersionFilter,
    ) -> Result<Vec<VersionRow>, StoreError>;

    async fn get_version(
        &self,
        doc_id: DocId,
        id: VersionId,
    ) -> Result<Option<VersionRow>, StoreError>;

    /// Names a version; an automatic one becomes named (it stays until
    /// deleted).
    async fn rename_version(
        &self,
        doc_id: DocId,
        id: VersionId,
        name: &str,
    ) -> Result<Option<VersionRow>, StoreError>;

    /// Deletes a version; its snapshot's link is merged (`merge(its link,
    /// the next one's)`) into the next version's, in the same transaction,
    /// so that the versions after it keep every deletion.
    async fn delete_version(
        &self,
        doc_id: DocId,
        id: VersionId,
        merge: MergeLinks<'_>,
    ) -> Result<bool, StoreError>;

    /// Automatic versions made before `before` (unix ms), by document and
    /// then oldest first, from after `(document, version)` `after`, as
    /// `(document, version, created_at)`: what retention looks at.
    async fn auto_versions_before(
        &self,
        before: i64,
        after: (DocId, VersionId),
        limit: u32,
    ) -> Result<Vec<(DocId, VersionId, i64)>, StoreError>;

    /// The document's oldest version (with its snapshot): how much history
    /// retention must keep.
    async fn oldest_version(&self, doc_id: DocId) -> Result<Option<VersionRow>, StoreError>;

    /// Deletes these versions (of any document) as `delete_version` does;
    /// returns how many.
    async fn delete_versions(
        &self,
        ids: &[VersionId],
        merge: MergeLinks<'_>,
    ) -> Result<u64, StoreError>;

    /// Replaces the history base kept with the snapshot up to `upto`
    /// (retention shrinking it), unless compaction moved the snapshot on
    /// meanwhile; true when written.
    async fn write_history_base(
        &self,
        doc_id: DocId,
        upto: i64,
        base: &[u8],
    ) -> Result<bool, StoreError>;

    // --- webhooks ---

    /// Writes events to the outbox in one transaction.
    async fn enqueue_events(&self, events: &[NewEvent], now: i64) -> Result<(), StoreError>;

    /// Writes one message for one endpoint (the test event).
    async fn enqueue_message(
        &self,
        endpoint_id: &str,
        message_id: &str,
        event: &NewEvent,
        now: i64,
    ) -> Result<(), StoreError>;

    /// Counts the changes to endpoints: every call below that changes one
    /// (and `record_attempt` when it disables one) adds one in its own
    /// transaction, so a node that sees it move knows to reload them.
    async fn webhook_config_version(&self) -> Result<i64, StoreError>;

    async fn create_endpoint(&self, endpoint: &EndpointRow) -> Result<(), StoreError>;
    async fn list_endpoints(&self) -> Result<Vec<EndpointRow>, StoreError>;
    async fn get_endpoint(&self, id: &str) -> Result<Option<EndpointRow>, StoreError>;
    async fn update_endpoint(
        &self,
        id: &str,
        patch: &EndpointPatch,
        now: i64,
    ) -> Result<Option<EndpointRow>, StoreError>;
    /// Replaces the secret, keeping the old one until `previous_expires_at`.
    async fn rotate_secret(
        &self,
        id: &str,
        secret: &str,
        previous_expires_at: i64,
        now: i64,
    ) -> Result<Option<EndpointRow>, StoreError>;
    async fn delete_endpoint(&self, id: &str) -> Result<bool, StoreError>;

    /// Leases up to `limit` due messages of enabled endpoints (at most
    /// `per_endpoint` each, none of `busy` endpoints) for `lease_ms`
    /// milliseconds, each with a new lease token. Due, and the lease's end,
    /// are by the store's clock (the database's on PostgreSQL), so senders
    /// on nodes whose clocks disagree agree on them.
    async fn lease_due(
        &self,
        lease_ms: i64,
        limit: u32,
        per_endpoint: u32,
        busy: &[String],
    ) -> Result<Vec<DueMessage>, StoreError>;

    /// Records an attempt and its outcome in one transaction, if the
    /// message still holds the attempt's lease token: a sender whose lease
    /// ran out, and which another sender has leased since, records nothing
    /// (the newer attempt's result stands). Returns whether the endpoint
    /// was disabled by it.
    async fn record_attempt(&self, attempt: &AttemptRecord) -> Result<bool, StoreError>;

    /// An endpoint's delivery log, newest first (by `created_at`, then
    /// position), after the `(created_at, seq)` of the previous page's last.
    async fn list_deliveries(
        &self,
        endpoint_id: &str,
        status: Option<&str>,
        before: Option<(i64, i64)>,
        limits: DeliveryLimits,
    ) -> Result<DeliveryPage, StoreError>;

    /// Makes a message due now, unless it was collapsed into a newer one
    /// (sending its old body again would report its window twice).
    async fn retry_message(
        &self,
        endpoint_id: &str,
        message_id: &str,
        now: i64,
    ) -> Result<Retried, StoreError>;

    /// Queues again, as new (a fresh retry schedule, the same ids), up to
    /// `limit` messages to the endpoint that failed or were held (written
    /// while it was disabled), created in
    /// `[since, until)`, oldest first; returns how many. On a disabled
    /// endpoint they wait until it is enabled.
    async fn recover_messages(
        &self,
        endpoint_id: &str,
        since: i64,
        until: i64,
        now: i64,
        limit: u32,
    ) -> Result<u64, StoreError>;

    /// Messages waiting for delivery (pending), across endpoints.
    async fn outbox_depth(&self) -> Result<i64, StoreError>;

    /// Each endpoint with the creation time of its oldest undelivered
    /// message, pending or held (`None` when there is none).
    async fn oldest_pending(&self) -> Result<Vec<(String, Option<i64>)>, StoreError>;

    /// Deletes up to `limit` messages that are not pending (delivered,
    /// failed, held, collapsed; with their attempts) created before
    /// `before`; returns how many.
    async fn delete_old_messages(&self, before: i64, limit: u32) -> Result<u64, StoreError>;

    /// Documents with unreported changes: `(doc_id, first_change_at, last_change_at)`.
    async fn pending_changes(&self) -> Result<Vec<(DocId, i64, i64)>, StoreError>;

    /// Up to `limit` documents with unreported changes, those due soonest
    /// first. Due means by the database's clock, which the changes' times
    /// are written in, so that nodes whose clocks disagree agree on it.
    async fn pending_reports(
        &self,
        debounce: Debounce,
        limit: u32,
    ) -> Result<Vec<PendingReport>, StoreError>;

    /// The name of the document `doc_id`, if it exists.
    async fn doc_name(&self, doc_id: DocId) -> Result<Option<String>, StoreError>;

    /// Turns a document's unreported changes into an event (built by
    /// `event`) and clears them, in one transaction, if they are due (by
    /// the database's clock) and no other reporter holds them: of several
    /// nodes reporting at once, one writes the event. With `expect` (the
    /// event's content was rendered after it was read), only the changes
    /// of that state are reported, so that the content holds every change
    /// the event counts; changes counted since stay for the next report,
    /// with their users. Its users are everyone who wrote in the window up
    /// to now: a user whose only write came after `expect` is named in
    /// both reports.
    async fn report_changes(
        &self,
        doc_id: DocId,
        debounce: Debounce,
        expect: Option<ChangesStamp>,
        now: i64,
        event: ChangesEvent<'_>,
    ) -> Result<Report, StoreError>;

    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Closes the connection pool.
    async fn close(&self);
}

/// Opens the store that `url` names, running migrations: `sqlite:…` or
/// `postgres:…` (`postgresql:…`).
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    open_with(url, true).await
}

/// As `open`, for a tool (export, import, check) that may run beside a
/// server on the same database: it runs migrations but leaves alone what
/// belongs to the server's log writer.
pub async fn open_for_tool(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    open_with(url, false).await
}

async fn open_with(url: &str, recount: bool) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(
            sqlite::SqliteStore::open_with(url, recount).await?,
        ))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(std::sync::Arc::new(postgres::PgStore::open(url).await?))
    } else {
        Err(StoreError::Config {
            url: redact_url(url),
            reason: "the URL must start with sqlite:// or postgres://".into(),
        })
    }
}

/// A consistent copy of the database at `url` in the new file `dest`,
/// taken while the server runs.
pub async fn backup(url: &str, dest: &std::path::Path) -> Result<(), StoreError> {
    if url.starts_with("sqlite:") {
        sqlite::SqliteStore::backup(url, dest).await
    } else {
        Err(StoreError::Config {
            url: redact_url(url),
            reason: "`tandem backup` copies SQLite databases; back up PostgreSQL with pg_dump"
                .into(),
        })
    }
}

/// `url` as it may be printed: a password in it (`user:password@`, or a
/// `password=` parameter) replaced by `***`. Works on any string, parsable
/// or not, so that an unparsable URL is not printed whole either.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    // The authority: after `scheme://`, up to the path, query or fragment.
    let start = out.find("://").map_or(0, |i| i + 3);
    let end = out[start..]
        .find(['/', '?', '#'])
        .map_or(out.len(), |i| start + i);
    if let Some(at) = out[start..end].rfind('@') {
        let userinfo = start..start + at;
        if let Some(colon) = out[userinfo.clone()].find(':') {
            out.replace_range(start + colon + 1..userinfo.end, "***");
        }
    }
    // `password=` in the query string (libpq's form).
    let mut from = 0;
    while let Some(i) = out[from..].to_ascii_lowercase().find("password=") {
        let value = from + i + "password=".len();
        let value_end = out[value..]
            .find(['&', '#'])
            .map_or(out.len(), |j| value + j);
        out.replace_range(value..value_end, "***");
        from = value + 3;
    }
    out
}

pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_failures_are_told_apart_from_wrong_calls() {
        let sqlite = |code| {
            StoreError::Writer(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        // FULL, READONLY, IOERR_WRITE (an extended code), BUSY.
        for code in [13, 8, 778, 5] {
            assert!(sqlite(code).is_unavailable(), "{code}");
        }
        // CONSTRAINT, and a plain error.
        for code in [19, 1] {
            assert!(!sqlite(code).is_unavailable(), "{code}");
        }
        assert!(StoreError::Sync(std::io::Error::other("EIO")).is_unavailable());
        assert!(StoreError::Database(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(!StoreError::Database(sqlx::Error::RowNotFound).is_unavailable());
    }

    #[test]
    fn postgres_failures_are_told_apart_by_sqlstate() {
        for code in [
            "08006", "08001", "53100", "57P01", "57P03", "58030", "25006",
        ] {
            assert!(pg_unavailable(code), "{code}");
        }
        for code in ["23505", "40001", "57014", "42P01", ""] {
            assert!(!pg_unavailable(code), "{code}");
        }
    }

    #[test]
    fn passwords_in_database_urls_are_redacted() {
        let cases = [
            (
                "postgres://tandem:s3cret@db.example:5432/tandem",
                "postgres://tandem:***@db.example:5432/tandem",
            ),
            ("postgres://tandem@db/tandem", "postgres://tandem@db/tandem"),
            ("postgres://u:p%40ss@db", "postgres://u:***@db"),
            ("postgres://u:a@b@db/x", "postgres://u:***@db/x"),
            (
                "postgres://db/x?user=u&password=s3cret&sslmode=require",
                "postgres://db/x?user=u&password=***&sslmode=require",
            ),
            (
                "sqlite://./tandem-data/tandem.db",
                "sqlite://./tandem-data/tandem.db",
            ),
            ("not a url:s3cret@", "not a url:***@"),
        ];
        for (url, redacted) in cases {
            assert_eq!(redact_url(url), redacted, "{url}");
            assert!(!redact_url(url).contains("s3cret"));
        }
    }
}
