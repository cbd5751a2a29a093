//! The update log's writer: the persister's own SQLite connection.
//!
//! It runs on the persister's thread and calls SQLite directly (rusqlite,
//! linked to the same SQLite library as sqlx). Through sqlx, every group
//! commit was a round trip to the connection's worker thread: two thread
//! wake-ups and sqlx's statement machinery around a commit that costs
//! SQLite itself about 45 µs. At one update per commit that overhead was
//! most of the server's CPU per update (benchmark (a), N = 1).
//!
//! Commits use `synchronous = NORMAL`: a commit is in the database file when
//! it returns (a crash or `kill -9` of the process loses nothing) but not
//! yet on the disk; `sync` puts it there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};

use super::super::{now_ms, DocId, LogWriter, PendingUpdate, StoreError};

/// Appends one update; one of a document deleted meanwhile is skipped. A
/// trigger keeps the document's counters (migration 0003).
const INSERT_UPDATE: &str = "INSERT INTO doc_updates (doc_id, data)
     SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM documents WHERE id = ?1)";

pub struct SqliteLogWriter {
    conn: Connection,
    /// The write-ahead log that `sync` flushes.
    wal_path: PathBuf,
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
        let mut wal_path = path.as_os_str().to_owned();
        wal_path.push("-wal");
        Ok(SqliteLogWriter {
            conn,
            wal_path: wal_path.into(),
        })
    }
}

impl LogWriter for SqliteLogWriter {
    fn append(&mut self, batch: &[PendingUpdate], track_changes: bool) -> Result<(), StoreError> {
        match batch {
            [] => Ok(()),
            // The common case when idle: one statement, its own transaction
            // (no BEGIN and COMMIT to parse and run).
            [u] if !track_changes => {
                self.conn
                    .prepare_cached(INSERT_UPDATE)?
                    .execute(params![u.doc_id, u.data.as_ref()])?;
                Ok(())
            }
            _ => {
                // IMMEDIATE: the inserts read `documents` before they write,
                // and a deferred transaction could not wait for the write
                // lock then.
                let tx = self
                    .conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)?;
                {
                    let mut insert = tx.prepare_cached(INSERT_UPDATE)?;
                    for u in batch {
                        insert.execute(params![u.doc_id, u.data.as_ref()])?;
                    }
                }
                if track_changes {
                    track(&tx, batch)?;
                }
                tx.commit()?;
                Ok(())
            }
        }
    }

    fn sync(&mut self) -> Result<(), StoreError> {
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
}

/// Adds a batch to the changes `document.updated` will report.
fn track(tx: &rusqlite::Transaction<'_>, batch: &[PendingUpdate]) -> Result<(), StoreError> {
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
        "INSERT INTO doc_changes (doc_id, updates, bytes, first_change_at, last_change_at)
         SELECT ?1, ?2, ?3, ?4, ?4 WHERE EXISTS (SELECT 1 FROM documents WHERE id = ?1)
         ON CONFLICT (doc_id) DO UPDATE SET updates = updates + excluded.updates,
           bytes = bytes + excluded.bytes, last_change_at = excluded.last_change_at",
    )?;
    let mut users = tx.prepare_cached(
        "INSERT INTO doc_change_users (doc_id, user)
         SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM doc_changes WHERE doc_id = ?1)
         ON CONFLICT DO NOTHING",
    )?;
    for (doc_id, (count, bytes, who)) in &per_doc {
        changes.execute(params![doc_id, count, bytes, now])?;
        for user in who {
            users.execute(params![doc_id, user])?;
        }
    }
    Ok(())
}
