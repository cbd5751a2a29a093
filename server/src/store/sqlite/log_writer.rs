//! The update log's writer: the persister's own SQLite connection.
//!
//! It runs on the persister's thread and calls SQLite directly (rusqlite,
//! linked to the same SQLite library as sqlx). Through sqlx, every group
//! commit was a round trip to the connection's worker thread: two thread
//! wake-ups and sqlx's statement machinery around a commit that costs
//! SQLite itself much less. At one update per commit that overhead was
//! most of the server's CPU per update (benchmark (a), N = 1).
//!
//! Commits use `synchronous = NORMAL`: a commit is in the database file when
//! it returns (a crash or `kill -9` of the process loses nothing) but not
//! yet on the disk; `sync` puts it there.
//!
//! The documents' counters follow at `sync` too (migration 0004): a commit
//! of one update then writes only the log's table and index pages.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};

use super::super::{now_ms, DocId, LogWriter, PendingUpdate, StoreError, Track};

/// Appends one update; one of a document deleted meanwhile is skipped.
/// The row gets the writer's next id, or the largest id plus one if a row
/// was added some other way (a repair tool, a test) past it.
const INSERT_UPDATE: &str = "INSERT INTO doc_updates (id, doc_id, data, user)
     SELECT MAX(?4, COALESCE((SELECT MAX(id) FROM doc_updates), 0) + 1), ?1, ?2, ?3
     WHERE EXISTS (SELECT 1 FROM documents WHERE id = ?1)";

/// Past every position the database has ever named: row ids of the log,
/// what snapshots folded, where versions point.
const NEXT_ID: &str = "SELECT MAX(
       COALESCE((SELECT MAX(id) FROM doc_updates), 0),
       COALESCE((SELECT MAX(upto_id) FROM doc_snapshots), 0),
       COALESCE((SELECT MAX(upto) FROM doc_versions), 0)) + 1";

pub struct SqliteLogWriter {
    conn: Connection,
    /// The write-ahead log that `sync` flushes.
    wal_path: PathBuf,
    /// What was appended to each document since the counters were last
    /// written. A document is here exactly when its `counts_pending` is set.
    counts: HashMap<DocId, Counts>,
    /// The id the next row gets. Ids are a document's positions in its log
    /// (versions point at them), so they must never go back: SQLite would
    /// hand out the largest id in the table plus one, which falls back once
    /// compaction has deleted the largest rows. The writer is the log's one
    /// appender, so it numbers the rows itself.
    next_id: i64,
}

/// Appended to one document and not yet in its counters.
#[derive(Default)]
struct Counts {
    updates: i64,
    bytes: i64,
    /// Unix milliseconds of the last append.
    last_at: i64,
}

impl Counts {
    fn add(&mut self, u: &PendingUpdate, now: i64) {
        self.updates += 1;
        self.bytes += i64::try_from(u.data.len()).unwrap_or(i64::MAX);
        self.last_at = now;
    }
}

impl SqliteLogWriter {
    /// Opens the database at `path`, which the store has created and
    /// migrated.
    pub fn open(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(busy_timeout)?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // A writer before this one may have appended without writing the
        // counters (a crash, or an error that dropped it): recount those
        // documents. This writer has appended nothing yet.
        conn.execute(super::RECOUNT_PENDING, [])?;
        let next_id = conn.query_row(NEXT_ID, [], |row| row.get(0))?;
        let mut wal_path = path.as_os_str().to_owned();
        wal_path.push("-wal");
        Ok(SqliteLogWriter {
            conn,
            wal_path: wal_path.into(),
            counts: HashMap::new(),
            next_id,
        })
    }

    /// Adds what was appended to the documents' counters, in one
    /// transaction, and clears `counts_pending`.
    fn write_counts(&mut self) -> Result<(), StoreError> {
        if self.counts.is_empty() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut update = tx.prepare_cached(
                "UPDATE documents SET log_count = log_count + ?2, size_bytes = size_bytes + ?3,
                   updated_at = max(updated_at, ?4), counts_pending = 0
                 WHERE id = ?1",
            )?;
            for (doc_id, c) in &self.counts {
                update.execute(params![doc_id, c.updates, c.bytes, c.last_at])?;
            }
        }
        tx.commit()?;
        self.counts.clear();
        Ok(())
    }
}

impl LogWriter for SqliteLogWriter {
    fn append(&mut self, batch: &[PendingUpdate], track: Track) -> Result<(), StoreError> {
        let now = now_ms();
        if let [u] = batch {
            if track == Track::Nothing && self.counts.contains_key(&u.doc_id) {
                // The common case: one statement, its own transaction (no
                // BEGIN and COMMIT to parse and run).
                let inserted = self.conn.prepare_cached(INSERT_UPDATE)?.execute(params![
                    u.doc_id,
                    u.data.as_ref(),
                    u.user.as_deref(),
                    self.next_id
                ])?;
                self.next_id = self.conn.last_insert_rowid().max(self.next_id) + 1;
                if inserted == 1 {
                    self.counts.entry(u.doc_id).or_default().add(u, now);
                }
                return Ok(());
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        // IMMEDIATE: the inserts read `documents` before they write, and a
        // deferred transaction could not wait for the write lock then.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut inserted = Vec::with_capacity(batch.len());
        {
            let mut insert = tx.prepare_cached(INSERT_UPDATE)?;
            let mut mark = tx.prepare_cached(
                "UPDATE documents SET counts_pending = 1 WHERE id = ?1 AND counts_pending = 0",
            )?;
            let mut marked = BTreeSet::new();
            for u in batch {
                let ok = insert.execute(params![
                    u.doc_id,
                    u.data.as_ref(),
                    u.user.as_deref(),
                    self.next_id
                ])? == 1;
                self.next_id = tx.last_insert_rowid().max(self.next_id) + 1;
                if ok && !self.counts.contains_key(&u.doc_id) && marked.insert(u.doc_id) {
                    mark.execute(params![u.doc_id])?;
                }
                inserted.push(ok);
            }
        }
        if track != Track::Nothing {
            track_changes(&tx, batch, track == Track::ChangesAndHistory)?;
        }
        tx.commit()?;
        for (u, ok) in batch.iter().zip(inserted) {
            if ok {
                self.counts.entry(u.doc_id).or_default().add(u, now);
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.write_counts()?;
        // An fsync of the log through any handle puts every frame written to
        // it on the disk, which is what a `FULL` commit would have waited for.
        match std::fs::File::open(&self.wal_path) {
            Ok(file) => file.sync_data().map_err(StoreError::Sync),
            // No log: everything is checkpointed into the database file, which
            // SQLite syncs when it checkpoints.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Sync(e)),
        }
    }

    fn probe(&mut self) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO storage_probe (id, at) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET at = excluded.at",
            )?
            .execute(params![now_ms()])?;
        Ok(())
    }
}

/// Adds a batch to the changes `document.updated` will report and, with
/// `history`, to those the next automatic version will hold.
fn track_changes(
    tx: &rusqlite::Transaction<'_>,
    batch: &[PendingUpdate],
    history: bool,
) -> Result<(), StoreError> {
    let mut per_doc: BTreeMap<DocId, (i64, i64, BTreeSet<&str>)> = BTreeMap::new();
    for u in batch {
        let e = per_doc.entry(u.doc_id).or_default();
        e.0 += 1;
        e.1 += i64::try_from(u.data.len()).unwrap_or(i64::MAX);
        if let Some(user) = &u.user {
            e.2.insert(user);
        }
    }
    let now = now_ms();
    let mut changes = tx.prepare_cached(
        "INSERT INTO doc_changes (doc_id, updates, bytes, first_change_at, last_change_at, history_since)
         SELECT ?1, ?2, ?3, ?4, ?4, CASE WHEN ?5 THEN ?4 END
         WHERE EXISTS (SELECT 1 FROM documents WHERE id = ?1)
         ON CONFLICT (doc_id) DO UPDATE SET
           first_change_at = CASE WHEN updates = 0 THEN excluded.first_change_at ELSE first_change_at END,
           updates = updates + excluded.updates,
           bytes = bytes + excluded.bytes, last_change_at = excluded.last_change_at,
           history_since = COALESCE(history_since, excluded.history_since)",
    )?;
    let mut users = tx.prepare_cached(
        "INSERT INTO doc_change_users (doc_id, user, for_report, for_history, last_mark)
         SELECT ?1, ?2, 1, ?3, updates FROM doc_changes WHERE doc_id = ?1
         ON CONFLICT DO UPDATE SET for_report = 1, last_mark = excluded.last_mark,
           for_history = max(for_history, excluded.for_history)",
    )?;
    for (doc_id, (count, bytes, who)) in &per_doc {
        changes.execute(params![doc_id, count, bytes, now, history])?;
        for user in who {
            users.execute(params![doc_id, user, history])?;
        }
    }
    Ok(())
}
