//! The update log's writer on PostgreSQL: the persister's own connection.
//!
//! The persister calls `LogWriter` from its own thread and expects each call
//! to block until the database answers. sqlx is async, so the writer owns a
//! small current-thread tokio runtime and one `PgConnection` (not a pool:
//! one writer, one session) and runs each call with `block_on`. A
//! current-thread runtime has no threads of its own; the connection's I/O is
//! driven only while a call runs, on the caller's thread. The `postgres`
//! sync crate would do the same (it wraps tokio-postgres in a runtime) and
//! add a second driver; sqlx is here already.
//!
//! A caller inside an async context (a test calling the writer from a tokio
//! task) cannot `block_on` on its own thread, so there the call runs on a
//! scoped thread instead; the persister's thread is no async context and
//! never pays for that.
//!
//! One batch is one transaction:
//! 1. `SELECT … FROM documents WHERE id = ANY($ids) ORDER BY id
//!    FOR NO KEY UPDATE` locks the batch's documents, always in id order, so
//!    writers on several nodes never deadlock; a document that is gone
//!    (deleted) is skipped. (`NO KEY`: two appenders, or an appender and a
//!    delete, exclude each other, but the foreign-key checks of a
//!    compaction's writes do not wait for an append);
//! 2. `UPDATE documents SET last_seq = last_seq + k, …` numbers the updates
//!    `last_seq + 1 ..= last_seq + k` and adds them to the counters;
//! 3. one `INSERT … SELECT FROM unnest(…)` writes them;
//! 4. the `document.updated` tally, when asked for (counts summed, users
//!    merged, times from the database's clock: any node may report it);
//! 5. `COMMIT`.
//!
//! The row lock is held until the commit, so a document's sequence numbers
//! commit in order with no holes, whatever number of writers append to it:
//! a reader that sees `seq = n` sees every row below it. Compaction relies
//! on that to delete exactly the rows it folded.
//!
//! Commits use `synchronous_commit = on` (set on the session, whatever the
//! server's default): a commit is on the database's disk when it returns,
//! so `sync` has nothing left to do. (Relaxing it would let a PostgreSQL
//! crash roll `last_seq` back below numbers other nodes have already seen.)

use std::collections::BTreeMap;
use std::future::Future;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Row};

use super::super::{now_ms, AppendedRange, DocId, LogWriter, PendingUpdate, StoreError, Track};
use super::{CONNECT_TIMEOUT, DB_NOW_MS};

pub struct PgLogWriter {
    /// Always `Some` until dropped.
    rt: Option<tokio::runtime::Runtime>,
    conn: PgConnection,
    /// Where the last append numbered each document's updates.
    appended: Vec<AppendedRange>,
}

impl Drop for PgLogWriter {
    fn drop(&mut self) {
        // A runtime dropped the ordinary way blocks until its tasks end,
        // which panics in an async context; this one runs none of its own.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl PgLogWriter {
    /// Connects to the database, which the store has migrated.
    pub fn open(options: &PgConnectOptions) -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StoreError::Sync)?;
        let options = options
            .clone()
            .options([("synchronous_commit", "on")])
            .application_name("tandem-log-writer");
        let conn = block(&rt, async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await
            {
                Ok(conn) => Ok(conn?),
                Err(_) => Err(StoreError::Database(sqlx::Error::PoolTimedOut)),
            }
        })?;
        Ok(PgLogWriter {
            rt: Some(rt),
            conn,
            appended: Vec::new(),
        })
    }
}

impl PgLogWriter {
    /// The runtime (there until the writer is dropped) and the connection.
    fn parts(&mut self) -> Result<(&tokio::runtime::Runtime, &mut PgConnection), StoreError> {
        match self.rt.as_ref() {
            Some(rt) => Ok((rt, &mut self.conn)),
            None => Err(StoreError::Database(sqlx::Error::PoolClosed)),
        }
    }
}

/// Runs `fut` to its end on `rt`, on this thread when it is no async
/// context, else on a scoped thread of its own.
fn block<F>(rt: &tokio::runtime::Runtime, fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return rt.block_on(fut);
    }
    std::thread::scope(|s| match s.spawn(|| rt.block_on(fut)).join() {
        Ok(out) => out,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

impl LogWriter for PgLogWriter {
    fn append(&mut self, batch: &[PendingUpdate], track: Track) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.appended.clear();
        let (rt, conn) = self.parts()?;
        self.appended = block(rt, append(conn, batch, track))?;
        Ok(())
    }

    fn appended(&mut self) -> Vec<AppendedRange> {
        std::mem::take(&mut self.appended)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        // Every commit was synchronous: on the disk already.
        Ok(())
    }

    fn probe(&mut self) -> Result<(), StoreError> {
        let (rt, conn) = self.parts()?;
        block(rt, async move {
            sqlx::query(
                "INSERT INTO storage_probe (id, at) VALUES (1, $1)
                 ON CONFLICT (id) DO UPDATE SET at = excluded.at",
            )
            .bind(now_ms())
            .execute(&mut *conn)
            .await?;
            Ok(())
        })
    }
}

/// What one batch appends to one document.
#[derive(Default)]
struct PerDoc {
    updates: i64,
    bytes: i64,
    /// The sequence number the next of its updates gets.
    next_seq: i64,
    users: Vec<String>,
}

/// Appends one batch in one transaction (see the module comment).
pub(super) async fn append(
    conn: &mut PgConnection,
    batch: &[PendingUpdate],
    track: Track,
) -> Result<Vec<AppendedRange>, StoreError> {
    let now = now_ms();
    let mut per_doc: BTreeMap<DocId, PerDoc> = BTreeMap::new();
    for u in batch {
        let d = per_doc.entry(u.doc_id).or_default();
        d.updates += 1;
        d.bytes += i64::try_from(u.data.len()).unwrap_or(i64::MAX);
        if let Some(user) = &u.user {
            if !d.users.iter().any(|x| **x == **user) {
                d.users.push(user.to_string());
            }
        }
    }
    let ids: Vec<DocId> = per_doc.keys().copied().collect();

    let mut tx = conn.begin().await?;
    let alive: Vec<DocId> = sqlx::query_scalar(
        "SELECT id FROM documents WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    // Documents deleted meanwhile: their updates are skipped.
    per_doc.retain(|id, _| alive.binary_search(id).is_ok());
    if per_doc.is_empty() {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    let ids: Vec<DocId> = per_doc.keys().copied().collect();
    let counts: Vec<i64> = per_doc.values().map(|d| d.updates).collect();
    let bytes: Vec<i64> = per_doc.values().map(|d| d.bytes).collect();
    let rows = sqlx::query(
        "UPDATE documents d SET last_seq = d.last_seq + v.k, log_count = d.log_count + v.k,
           size_bytes = d.size_bytes + v.b, updated_at = GREATEST(d.updated_at, $4)
         FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS v(id, k, b)
         WHERE d.id = v.id
         RETURNING d.id, d.last_seq",
    )
    .bind(&ids)
    .bind(&counts)
    .bind(&bytes)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    for row in rows {
        let id: DocId = row.try_get(0)?;
        let last: i64 = row.try_get(1)?;
        if let Some(d) = per_doc.get_mut(&id) {
            d.next_seq = last - d.updates + 1;
        }
    }
    let appended = per_doc
        .iter()
        .map(|(&doc_id, d)| AppendedRange {
            doc_id,
            last_seq: u64::try_from(d.next_seq + d.updates - 1).unwrap_or(0),
            count: u32::try_from(d.updates).unwrap_or(u32::MAX),
        })
        .collect();
    let mut doc_ids = Vec::with_capacity(batch.len());
    let mut seqs = Vec::with_capacity(batch.len());
    let mut data: Vec<&[u8]> = Vec::with_capacity(batch.len());
    let mut users: Vec<Option<&str>> = Vec::with_capacity(batch.len());
    for u in batch {
        if let Some(d) = per_doc.get_mut(&u.doc_id) {
            doc_ids.push(u.doc_id);
            seqs.push(d.next_seq);
            d.next_seq += 1;
            data.push(u.data.as_ref());
            users.push(u.user.as_deref());
        }
    }
    sqlx::query(
        "INSERT INTO doc_updates (doc_id, seq, data, user_name)
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::text[])",
    )
    .bind(&doc_ids)
    .bind(&seqs)
    .bind(&data)
    .bind(&users)
    .execute(&mut *tx)
    .await?;
    if track != Track::Nothing {
        track_changes(&mut tx, &per_doc, track == Track::ChangesAndHistory).await?;
    }
    tx.commit().await?;
    Ok(appended)
}

/// Adds a batch to the changes `document.updated` will report and, with
/// `history`, to those the next automatic version will hold.
async fn track_changes(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    per_doc: &BTreeMap<DocId, PerDoc>,
    history: bool,
) -> Result<(), StoreError> {
    let ids: Vec<DocId> = per_doc.keys().copied().collect();
    let counts: Vec<i64> = per_doc.values().map(|d| d.updates).collect();
    let bytes: Vec<i64> = per_doc.values().map(|d| d.bytes).collect();
    // The times are the database's (see `DB_NOW_MS`): every node's reporter
    // compares them with its clock to tell when they are due.
    sqlx::query(&format!(
        "INSERT INTO doc_changes (doc_id, updates, bytes, first_change_at, last_change_at, history_since)
         SELECT v.id, v.k, v.b, {DB_NOW_MS}, {DB_NOW_MS}, CASE WHEN $4 THEN {DB_NOW_MS} END
         FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS v(id, k, b)
         ON CONFLICT (doc_id) DO UPDATE SET updates = doc_changes.updates + excluded.updates,
           bytes = doc_changes.bytes + excluded.bytes,
           first_change_at = CASE WHEN doc_changes.updates = 0 THEN excluded.first_change_at
             ELSE LEAST(doc_changes.first_change_at, excluded.first_change_at) END,
           last_change_at = GREATEST(doc_changes.last_change_at, excluded.last_change_at),
           history_since = COALESCE(doc_changes.history_since, excluded.history_since)"
    ))
    .bind(&ids)
    .bind(&counts)
    .bind(&bytes)
    .bind(history)
    .execute(&mut **tx)
    .await?;
    let mut user_docs = Vec::new();
    let mut users = Vec::new();
    for (id, d) in per_doc {
        for user in &d.users {
            user_docs.push(*id);
            users.push(user.as_str());
        }
    }
    if !users.is_empty() {
        sqlx::query(
            "INSERT INTO doc_change_users (doc_id, user_name, for_report, for_history, last_mark)
             SELECT v.d, v.u, TRUE, $3, c.updates
             FROM unnest($1::bigint[], $2::text[]) AS v(d, u)
             JOIN doc_changes c ON c.doc_id = v.d
             ON CONFLICT (doc_id, user_name) DO UPDATE SET for_report = TRUE,
               last_mark = excluded.last_mark,
               for_history = doc_change_users.for_history OR excluded.for_history",
        )
        .bind(&user_docs)
        .bind(&users)
        .bind(history)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
