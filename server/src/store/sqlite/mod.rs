//! The SQLite store: WAL mode, one writer at a time. Every connection
//! commits with `synchronous = FULL` (the commit survives a crash of the
//! process and of the machine) except the update log's writer
//! (`log_writer`): its group commits use `NORMAL` (written to the file,
//! which a crash or `kill -9` of the process does not lose, but not waited
//! onto the disk) and its `sync` puts them on the disk, at most once per
//! `TANDEM_SYNC_INTERVAL`.

mod history;
mod log_writer;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, SqlitePool};

use self::log_writer::SqliteLogWriter;
use super::{
    now_ms, plan_collapse, AttemptRecord, AttemptRow, ChangesEvent, ChangesStamp, CollapseStep,
    CollapseTarget, Debounce, DeliveryBudget, DeliveryLimits, DeliveryPage, DeliveryRow,
    DocChanges, DocId, DocLog, DocMeta, DueMessage, EndpointPatch, EndpointRow, FoundDoc,
    HistoryFold, LogPage, LogWriter, MergeLinks, NewEvent, NewVersion, Outcome, PageLimits,
    PendingReport, Quarantined, Report, Retried, Store, StoreError, VersionEvent, VersionFilter,
    VersionId, VersionKind, VersionRow, ATTEMPT_BYTES, MAX_ATTEMPTS_SHOWN, TAKE_REPORTED_CHANGES,
    TAKE_REPORTED_USERS,
};
use crate::webhooks::events;

/// A time no change falls due at.
const NEVER: i64 = i64::MAX / 2;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// How long a connection waits for another one's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Documents loading at once; more wait for a connection (applying pages
/// is CPU work, so more would not finish sooner).
const LOAD_CONNECTIONS: u32 = 4;

/// Recounts the documents whose appends a log writer had not yet added to
/// their counters when it went away (migration 0004). Their `updated_at`
/// stays as it was: at most one sync interval old.
const RECOUNT_PENDING: &str = "UPDATE documents SET
       log_count = (SELECT COUNT(*) FROM doc_updates WHERE doc_id = documents.id),
       size_bytes = COALESCE((SELECT LENGTH(data) FROM doc_snapshots WHERE doc_id = documents.id), 0)
         + (SELECT COALESCE(SUM(LENGTH(data)), 0) FROM doc_updates WHERE doc_id = documents.id),
       counts_pending = 0
     WHERE counts_pending = 1";

pub struct SqliteStore {
    pool: SqlitePool,
    /// Document loads' own connections. A load keeps its read transaction
    /// open while its pages are applied (a long log takes a second or so),
    /// so several at once would take every connection of `pool` and make
    /// the API, joins and webhooks wait behind them.
    loads: SqlitePool,
    /// The database file, for the log writer's own connection.
    path: PathBuf,
}

impl SqliteStore {
    /// The snapshot and the oldest rows of the log (all for `None`), in
    /// one read transaction: WAL gives it one consistent view, so a
    /// compaction committing between the two reads cannot pair the old
    /// snapshot with the shortened log. With `limits`, the rows' lengths are
    /// read first (SQLite reads a blob's length from its header, not its
    /// content) and only the rows within the limits are fetched.
    async fn read_log_rows(
        &self,
        doc_id: DocId,
        limits: Option<PageLimits>,
        with_history: bool,
    ) -> Result<DocLog, StoreError> {
        let mut tx = self.pool.begin().await?;
        let snapshot: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT data FROM doc_snapshots WHERE doc_id = $1")
                .bind(doc_id)
                .fetch_optional(&mut *tx)
                .await?;
        let mut upto = i64::MAX;
        if let Some(limits) = limits {
            let mut lengths = sqlx::query_as::<_, (i64, i64)>(
                "SELECT id, LENGTH(data) FROM doc_updates WHERE doc_id = $1 ORDER BY id LIMIT $2",
            )
            .bind(doc_id)
            .bind(i64::try_from(limits.rows).unwrap_or(i64::MAX))
            .fetch(&mut *tx);
            let mut bytes = 0usize;
            let mut last = None;
            while let Some((id, len)) = lengths.try_next().await? {
                if last.is_some() && bytes >= limits.bytes {
                    break;
                }
                bytes = bytes.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
                last = Some(id);
            }
            drop(lengths);
            upto = last.unwrap_or(i64::MIN);
        }
        let rows = sqlx::query(
            "SELECT id, data FROM doc_updates WHERE doc_id = $1 AND id <= $2 ORDER BY id",
        )
        .bind(doc_id)
        .bind(upto)
        .fetch_all(&mut *tx)
        .await?;
        let mut updates = Vec::with_capacity(rows.len());
        for row in rows {
            updates.push((row.try_get(0)?, row.try_get(1)?));
        }
        let mut log = DocLog {
            snapshot,
            updates,
            history: None,
        };
        if with_history {
            log.history = Some(history::read_for_fold(&mut tx, doc_id, &log).await?);
        }
        tx.commit().await?;
        Ok(log)
    }

    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, true).await
    }

    /// As `open`; with `recount` false, the counters a log writer left
    /// pending are left alone: for tools that may run beside a server,
    /// whose log writer still holds them.
    pub async fn open_with(url: &str, recount: bool) -> Result<Self, StoreError> {
        let config_err = |reason: String| StoreError::Config {
            url: url.to_string(),
            reason,
        };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| config_err(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let path = options.get_filename().to_path_buf();
        // sqlx names an in-memory database `file:sqlx-in-memory-…`.
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Err(config_err(
                "an in-memory database is not supported: Tandem keeps documents in a file \
                 (give a path, e.g. sqlite:///tmp/tandem/tandem.db)"
                    .into(),
            ));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_dir(dir).map_err(|e| {
                config_err(format!("cannot create the folder {}: {e}", dir.display()))
            })?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // A local file does not drop connections behind our back.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(|e| config_err(format!("cannot open {}: {e}", path.display())))?;
        MIGRATOR.run(&pool).await?;
        if recount {
            sqlx::query(RECOUNT_PENDING).execute(&pool).await?;
        }
        // Opened as loads need them: a server that loads nothing holds none.
        let loads = SqlitePoolOptions::new()
            .max_connections(LOAD_CONNECTIONS)
            .test_before_acquire(false)
            .connect_lazy_with(options);
        Ok(SqliteStore { pool, loads, path })
    }

    /// Copies the database at `url` to the new file `dest` with `VACUUM
    /// INTO`: one read transaction, so the copy is consistent while
    /// writers go on, and it holds every commit made before it started.
    /// Refuses an existing `dest`.
    pub async fn backup(url: &str, dest: &Path) -> Result<(), StoreError> {
        use sqlx::Connection;
        let config_err = |reason: String| StoreError::Config {
            url: url.to_string(),
            reason,
        };
        if dest.exists() {
            return Err(config_err(format!("{} exists already", dest.display())));
        }
        let dest = dest
            .to_str()
            .ok_or_else(|| config_err("the backup path is not UTF-8".into()))?;
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| config_err(e.to_string()))?
            .busy_timeout(BUSY_TIMEOUT);
        let path = options.get_filename().to_path_buf();
        if !path.exists() {
            return Err(config_err(format!("{} does not exist", path.display())));
        }
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .map_err(|e| config_err(format!("cannot open {}: {e}", path.display())))?;
        sqlx::query("VACUUM INTO $1")
            .bind(dest)
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(())
    }

    /// A transaction that reads before it writes must take the write lock
    /// up front: a deferred one fails at once ("database is locked") when
    /// another connection wrote since its read, busy timeout or not.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

fn meta(row: &sqlx::sqlite::SqliteRow) -> Result<DocMeta, StoreError> {
    Ok(DocMeta {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        created_at: row.try_get(2)?,
        updated_at: row.try_get(3)?,
        size_bytes: row.try_get(4)?,
    })
}

const ENDPOINT_COLUMNS: &str = "id, url, events, description, include_content, enabled, \
    disabled_reason, secret, previous_secret, previous_secret_expires_at, created_at, updated_at, \
    doc_prefix";

fn endpoint(row: &sqlx::sqlite::SqliteRow) -> Result<EndpointRow, StoreError> {
    let events: String = row.try_get(2)?;
    Ok(EndpointRow {
        id: row.try_get(0)?,
        url: row.try_get(1)?,
        // A row this server wrote; an unreadable one subscribes to nothing.
        events: serde_json::from_str(&events).unwrap_or_default(),
        description: row.try_get(3)?,
        include_content: row.try_get(4)?,
        enabled: row.try_get(5)?,
        disabled_reason: row.try_get(6)?,
        secret: row.try_get(7)?,
        previous_secret: row.try_get(8)?,
        previous_secret_expires_at: row.try_get(9)?,
        created_at: row.try_get(10)?,
        updated_at: row.try_get(11)?,
        doc_prefix: row.try_get(12)?,
    })
}

fn events_json(events: &[String]) -> String {
    serde_json::to_string(events).unwrap_or_else(|_| "[]".into())
}

/// Counts a change to the endpoints, in the transaction that makes it (see
/// `Store::webhook_config_version`).
async fn bump_config(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>) -> Result<(), StoreError> {
    sqlx::query("UPDATE webhook_config SET version = version + 1 WHERE id = 1")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Writes one message per endpoint subscribed to the event's type whose
/// `doc_prefix` the event's document matches (events about no document go
/// to every subscriber): pending for an enabled endpoint, held for a
/// disabled one (`recover` queues it), except `skip`. A `document.updated`
/// for an endpoint that has one for the same document still undelivered
/// is merged into it instead (see `collapse_updated`).
async fn fan_out(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    event: &NewEvent,
    now: i64,
    skip: Option<&str>,
) -> Result<(), StoreError> {
    if event.event_type == events::DOCUMENT_UPDATED {
        collapse_updated(tx, event, now, skip).await?;
    }
    sqlx::query(&format!(
        "INSERT INTO webhook_messages
           (id, endpoint_id, event_type, payload, status, next_attempt_at, created_at, doc)
         SELECT 'msg_' || lower(hex(randomblob(16))), e.id, $1,
           CASE WHEN e.include_content AND $3 IS NOT NULL THEN $3 ELSE $2 END,
           CASE WHEN e.enabled THEN 'pending' ELSE 'held' END,
           CASE WHEN e.enabled THEN $4 END, $4, $5
         FROM webhook_endpoints e
         WHERE {SUBSCRIBED} AND e.id IS NOT $6
           AND NOT EXISTS (SELECT 1 FROM webhook_messages m
             WHERE m.endpoint_id = e.id AND m.doc = $5 AND {COLLAPSIBLE})"
    ))
    .bind(event.event_type)
    .bind(&event.payload)
    .bind(&event.payload_with_content)
    .bind(now)
    .bind(&event.doc)
    .bind(skip)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Endpoint `e` wants event type `$1` about document `$5`.
const SUBSCRIBED: &str = "EXISTS (SELECT 1 FROM json_each(e.events) j WHERE j.value IN ($1, '*'))
    AND (e.doc_prefix IS NULL OR $5 IS NULL
         OR substr($5, 1, length(e.doc_prefix)) = e.doc_prefix)";

/// Message `m` of event type `$1` is an undelivered `document.updated` that a
/// newer one may merge into: not being attempted right now (no lease).
const COLLAPSIBLE: &str = "$1 = 'document.updated' AND m.event_type = 'document.updated'
    AND m.status IN ('pending', 'held') AND m.lease_token IS NULL";

/// Merges a `document.updated` into each subscribed endpoint's undelivered
/// one for the same document (SPEC §5: one message per document while an
/// endpoint is backlogged or disabled; when it is healthy the last one was
/// delivered and there is nothing to merge into), as `plan_collapse`
/// decides.
async fn collapse_updated(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    event: &NewEvent,
    now: i64,
    skip: Option<&str>,
) -> Result<(), StoreError> {
    let targets: Vec<CollapseTarget> = sqlx::query_as(&format!(
        "SELECT e.id AS endpoint_id, e.include_content, m.id, m.payload, m.attempts,
               m.next_attempt_at, m.first_attempt_at,
               EXISTS (SELECT 1 FROM webhook_attempts a WHERE a.message_id = m.id) AS attempted
             FROM webhook_endpoints e JOIN webhook_messages m ON m.endpoint_id = e.id
             WHERE {SUBSCRIBED} AND e.id IS NOT $6 AND m.doc = $5 AND {COLLAPSIBLE}
             ORDER BY e.id, m.created_at DESC, m.rowid DESC"
    ))
    .bind(event.event_type)
    .bind(&event.payload)
    .bind(&event.payload_with_content)
    .bind(now)
    .bind(&event.doc)
    .bind(skip)
    .fetch_all(&mut **tx)
    .await?;
    for step in plan_collapse(targets, event) {
        match step {
            CollapseStep::Detach { id } => {
                sqlx::query("UPDATE webhook_messages SET doc = NULL WHERE id = $1")
                    .bind(&id)
                    .execute(&mut **tx)
                    .await?;
            }
            CollapseStep::Rewrite { id, merged } => {
                sqlx::query("UPDATE webhook_messages SET payload = $2 WHERE id = $1")
                    .bind(&id)
                    .bind(&merged)
                    .execute(&mut **tx)
                    .await?;
            }
            CollapseStep::Replace {
                id,
                new_id,
                merged,
                attempts,
                next_attempt_at,
                first_attempt_at,
            } => {
                sqlx::query(
                    "INSERT INTO webhook_messages (id, endpoint_id, event_type, payload, status,
                       attempts, next_attempt_at, first_attempt_at, created_at, doc)
                     SELECT $2, endpoint_id, event_type, $3, status, $4, $5, $6, $7, doc
                     FROM webhook_messages WHERE id = $1",
                )
                .bind(&id)
                .bind(&new_id)
                .bind(&merged)
                .bind(attempts)
                .bind(next_attempt_at)
                .bind(first_attempt_at)
                .bind(now)
                .execute(&mut **tx)
                .await?;
                sqlx::query(
                    "UPDATE webhook_messages SET status = 'collapsed', collapsed_into = $2,
                       next_attempt_at = NULL WHERE id = $1",
                )
                .bind(&id)
                .bind(&new_id)
                .execute(&mut **tx)
                .await?;
            }
        }
    }
    Ok(())
}

fn create_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[async_trait]
impl Store for SqliteStore {
    async fn find_or_create(
        &self,
        name: &str,
        now: i64,
        created: Option<&NewEvent>,
    ) -> Result<FoundDoc, StoreError> {
        if let Some(meta) = self.create(name, now, created).await? {
            return Ok(FoundDoc {
                id: meta.id,
                created: true,
            });
        }
        let id: DocId = sqlx::query_scalar("SELECT id FROM documents WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(FoundDoc { id, created: false })
    }

    async fn create_from_state(
        &self,
        name: &str,
        now: i64,
        snapshot: &[u8],
        replace: bool,
    ) -> Result<Option<(DocMeta, bool)>, StoreError> {
        let mut tx = self.write_tx().await?;
        // Foreign keys cascade to the old one's log, snapshot, versions and
        // unreported changes.
        let replaced = replace
            && sqlx::query("DELETE FROM documents WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                > 0;
        let size = i64::try_from(snapshot.len()).unwrap_or(i64::MAX);
        let id: Option<DocId> = sqlx::query_scalar(
            "INSERT INTO documents (name, created_at, updated_at, size_bytes) VALUES ($1, $2, $2, $3)
             ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .bind(name)
        .bind(now)
        .bind(size)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            return Ok(None);
        };
        // Up to row 0: the new document has no log to fold.
        sqlx::query("INSERT INTO doc_snapshots (doc_id, data, upto_id) VALUES ($1, $2, 0)")
            .bind(id)
            .bind(snapshot)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let meta = DocMeta {
            id,
            name: name.to_string(),
            created_at: now,
            updated_at: now,
            size_bytes: size,
        };
        Ok(Some((meta, replaced)))
    }

    async fn create(
        &self,
        name: &str,
        now: i64,
        created: Option<&NewEvent>,
    ) -> Result<Option<DocMeta>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO documents (name, created_at, updated_at) VALUES ($1, $2, $2)
             ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .bind(name)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        if let Some(event) = created {
            fan_out(&mut tx, event, now, None).await?;
        }
        tx.commit().await?;
        Ok(Some(DocMeta {
            id: row.try_get(0)?,
            name: name.to_string(),
            created_at: now,
            updated_at: now,
            size_bytes: 0,
        }))
    }

    async fn get(&self, name: &str) -> Result<Option<DocMeta>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, created_at, updated_at, size_bytes FROM documents WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| meta(&r)).transpose()
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DocMeta>, StoreError> {
        // Prefix match with substr, not LIKE: names may contain `_`.
        let rows = sqlx::query(
            "SELECT id, name, created_at, updated_at, size_bytes FROM documents
             WHERE substr(name, 1, length($1)) = $1 AND ($2 IS NULL OR name > $2)
             ORDER BY name LIMIT $3",
        )
        .bind(prefix)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(meta).collect()
    }

    async fn delete(&self, name: &str, deleted: Option<&NewEvent>) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Foreign keys cascade to the log, the snapshot and unreported changes.
        let done = sqlx::query("DELETE FROM documents WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let existed = done.rows_affected() > 0;
        if let (true, Some(event)) = (existed, deleted) {
            fan_out(&mut tx, event, now_ms(), None).await?;
        }
        tx.commit().await?;
        Ok(existed)
    }

    fn log_writer(&self) -> Result<Box<dyn LogWriter>, StoreError> {
        Ok(Box::new(SqliteLogWriter::open(&self.path, BUSY_TIMEOUT)?))
    }

    async fn compaction_candidates(
        &self,
        min_updates: u32,
        min_bytes: u64,
    ) -> Result<Vec<DocId>, StoreError> {
        // The log's bytes are the document's stored bytes less its snapshot.
        Ok(sqlx::query_scalar(
            "SELECT id FROM (
               SELECT id, log_count, size_bytes
                 - COALESCE((SELECT LENGTH(data) FROM doc_snapshots WHERE doc_id = documents.id), 0)
                 AS log_bytes
               FROM documents WHERE log_count > 0)
             WHERE log_count >= $1 OR log_bytes >= $2
             ORDER BY log_bytes DESC LIMIT 64",
        )
        .bind(i64::from(min_updates))
        .bind(i64::try_from(min_bytes).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn read_log(&self, doc_id: DocId) -> Result<DocLog, StoreError> {
        self.read_log_rows(doc_id, None, false).await
    }

    async fn read_log_head(&self, doc_id: DocId, limits: PageLimits) -> Result<DocLog, StoreError> {
        self.read_log_rows(doc_id, Some(limits), false).await
    }

    async fn read_log_head_with_history(
        &self,
        doc_id: DocId,
        limits: PageLimits,
    ) -> Result<DocLog, StoreError> {
        self.read_log_rows(doc_id, Some(limits), true).await
    }

    async fn read_history(&self, doc_id: DocId, upto: Option<i64>) -> Result<DocLog, StoreError> {
        history::read_history(&self.pool, doc_id, upto).await
    }

    async fn create_version(
        &self,
        doc_id: DocId,
        version: &NewVersion,
        now: i64,
        announce: Option<VersionEvent<'_>>,
    ) -> Result<Option<VersionRow>, StoreError> {
        let mut tx = self.write_tx().await?;
        let made = history::create_version(&mut tx, doc_id, version, now).await?;
        if let (Some(row), Some(announce)) = (&made, announce) {
            fan_out(&mut tx, &announce(row), now, None).await?;
        }
        tx.commit().await?;
        Ok(made)
    }

    async fn list_versions(
        &self,
        doc_id: DocId,
        filter: VersionFilter,
    ) -> Result<Vec<VersionRow>, StoreError> {
        history::list_versions(&self.pool, doc_id, filter).await
    }

    async fn get_version(
        &self,
        doc_id: DocId,
        id: VersionId,
    ) -> Result<Option<VersionRow>, StoreError> {
        history::get_version(&self.pool, doc_id, id).await
    }

    async fn rename_version(
        &self,
        doc_id: DocId,
        id: VersionId,
        name: &str,
    ) -> Result<Option<VersionRow>, StoreError> {
        history::rename_version(&self.pool, doc_id, id, name).await
    }

    async fn delete_version(
        &self,
        doc_id: DocId,
        id: VersionId,
        merge: MergeLinks<'_>,
    ) -> Result<bool, StoreError> {
        history::delete_version(&self.pool, doc_id, id, merge).await
    }

    async fn auto_versions_before(
        &self,
        before: i64,
        after: (DocId, VersionId),
        limit: u32,
    ) -> Result<Vec<(DocId, VersionId, i64)>, StoreError> {
        history::auto_versions_before(&self.pool, before, after, limit).await
    }

    async fn oldest_version(&self, doc_id: DocId) -> Result<Option<VersionRow>, StoreError> {
        history::oldest_version(&self.pool, doc_id).await
    }

    async fn delete_versions(
        &self,
        ids: &[VersionId],
        merge: MergeLinks<'_>,
    ) -> Result<u64, StoreError> {
        history::delete_versions(&self.pool, ids, merge).await
    }

    async fn write_history_base(
        &self,
        doc_id: DocId,
        upto: i64,
        base: &[u8],
    ) -> Result<bool, StoreError> {
        history::write_history_base(&self.pool, doc_id, upto, base).await
    }

    async fn quarantined(&self, doc_id: DocId) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM doc_updates_quarantine WHERE doc_id = $1")
                .bind(doc_id)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn read_log_pages(
        &self,
        doc_id: DocId,
        limits: PageLimits,
        pages: tokio::sync::mpsc::Sender<LogPage>,
    ) -> Result<u64, StoreError> {
        // One read transaction, as in `read_log_rows`. Rows are streamed
        // (sqlx steps the statement as they are taken), and `pages` is
        // bounded, so the reader never runs more than its capacity ahead of
        // whoever applies them: it holds its connection that long, one of
        // the loads' own.
        let mut tx = self.loads.begin().await?;
        let mut page: LogPage = Vec::new();
        let mut bytes = 0;
        let snapshot: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT data FROM doc_snapshots WHERE doc_id = $1")
                .bind(doc_id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(snapshot) = snapshot {
            bytes += snapshot.len();
            page.push(snapshot);
        }
        {
            let mut rows = sqlx::query_scalar::<_, Vec<u8>>(
                "SELECT data FROM doc_updates WHERE doc_id = $1 ORDER BY id",
            )
            .bind(doc_id)
            .fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                if !page.is_empty() && (page.len() >= limits.rows || bytes >= limits.bytes) {
                    if pages.send(std::mem::take(&mut page)).await.is_err() {
                        return Ok(0);
                    }
                    bytes = 0;
                }
                bytes += row.len();
                page.push(row);
            }
        }
        tx.commit().await?;
        if !page.is_empty() {
            // A closed receiver has stopped wanting pages: not an error here.
            let _ = pages.send(page).await;
        }
        Ok(0)
    }

    async fn write_fold(
        &self,
        doc_id: DocId,
        snapshot: &[u8],
        upto_id: i64,
        quarantine: &[Quarantined],
        history: Option<&HistoryFold>,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        // Set aside before the rows they came from are deleted, in the same
        // transaction: a row that cannot be read is never lost.
        let now = now_ms();
        for q in quarantine {
            sqlx::query(
                "INSERT INTO doc_updates_quarantine (doc_id, row_id, data, reason, quarantined_at)
                 SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM documents WHERE id = $1)",
            )
            .bind(doc_id)
            .bind(q.row_id)
            .bind(&q.data)
            .bind(&q.reason)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        // The counters change by what is folded (the log writer adds what it
        // appends the same way): deltas, so their order does not matter.
        let (rows, bytes): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM doc_updates
             WHERE doc_id = $1 AND id <= $2",
        )
        .bind(doc_id)
        .bind(upto_id)
        .fetch_one(&mut *tx)
        .await?;
        let old: i64 = sqlx::query_scalar(
            "SELECT COALESCE((SELECT LENGTH(data) FROM doc_snapshots WHERE doc_id = $1), 0)",
        )
        .bind(doc_id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO doc_snapshots (doc_id, data, upto_id)
             SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM documents WHERE id = $1)
             ON CONFLICT (doc_id) DO UPDATE SET data = excluded.data, upto_id = excluded.upto_id",
        )
        .bind(doc_id)
        .bind(snapshot)
        .bind(upto_id)
        .execute(&mut *tx)
        .await?;
        history::write_fold(&mut tx, doc_id, upto_id, history).await?;
        sqlx::query("DELETE FROM doc_updates WHERE doc_id = $1 AND id <= $2")
            .bind(doc_id)
            .bind(upto_id)
            .execute(&mut *tx)
            .await?;
        let new = i64::try_from(snapshot.len()).unwrap_or(i64::MAX);
        sqlx::query(
            "UPDATE documents SET log_count = log_count - $2, size_bytes = size_bytes - $3 + $4
             WHERE id = $1",
        )
        .bind(doc_id)
        .bind(rows)
        .bind(bytes + old)
        .bind(new)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn enqueue_events(&self, events: &[NewEvent], now: i64) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for event in events {
            fan_out(&mut tx, event, now, None).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn enqueue_message(
        &self,
        endpoint_id: &str,
        message_id: &str,
        event: &NewEvent,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO webhook_messages
               (id, endpoint_id, event_type, payload, status, next_attempt_at, created_at)
             VALUES ($1, $2, $3, $4, 'pending', $5, $5)",
        )
        .bind(message_id)
        .bind(endpoint_id)
        .bind(event.event_type)
        .bind(&event.payload)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn webhook_config_version(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT version FROM webhook_config WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn create_endpoint(&self, e: &EndpointRow) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, url, events, description, include_content, enabled,
               disabled_reason, secret, previous_secret, previous_secret_expires_at, created_at, updated_at,
               doc_prefix)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&e.id)
        .bind(&e.url)
        .bind(events_json(&e.events))
        .bind(&e.description)
        .bind(e.include_content)
        .bind(e.enabled)
        .bind(&e.disabled_reason)
        .bind(&e.secret)
        .bind(&e.previous_secret)
        .bind(e.previous_secret_expires_at)
        .bind(e.created_at)
        .bind(e.updated_at)
        .bind(&e.doc_prefix)
        .execute(&mut *tx)
        .await?;
        bump_config(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_endpoints(&self) -> Result<Vec<EndpointRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(endpoint).collect()
    }

    async fn get_endpoint(&self, id: &str) -> Result<Option<EndpointRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(endpoint).transpose()
    }

    async fn update_endpoint(
        &self,
        id: &str,
        patch: &EndpointPatch,
        now: i64,
    ) -> Result<Option<EndpointRow>, StoreError> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(mut e) = row.as_ref().map(endpoint).transpose()? else {
            return Ok(None);
        };
        if let Some(url) = &patch.url {
            e.url = url.clone();
        }
        if let Some(events) = &patch.events {
            e.events = events.clone();
        }
        if let Some(description) = &patch.description {
            e.description = description.clone();
        }
        if let Some(include_content) = patch.include_content {
            e.include_content = include_content;
        }
        if let Some(doc_prefix) = &patch.doc_prefix {
            e.doc_prefix = doc_prefix.clone();
        }
        if let Some(enabled) = patch.enabled {
            if enabled {
                e.disabled_reason = None;
            } else if e.enabled {
                e.disabled_reason = Some("disabled through the API".into());
            }
            e.enabled = enabled;
        }
        e.updated_at = now;
        sqlx::query(
            "UPDATE webhook_endpoints SET url = $2, events = $3, description = $4,
               include_content = $5, enabled = $6, disabled_reason = $7, updated_at = $8,
               doc_prefix = $9
             WHERE id = $1",
        )
        .bind(id)
        .bind(&e.url)
        .bind(events_json(&e.events))
        .bind(&e.description)
        .bind(e.include_content)
        .bind(e.enabled)
        .bind(&e.disabled_reason)
        .bind(now)
        .bind(&e.doc_prefix)
        .execute(&mut *tx)
        .await?;
        bump_config(&mut tx).await?;
        tx.commit().await?;
        Ok(Some(e))
    }

    async fn rotate_secret(
        &self,
        id: &str,
        secret: &str,
        previous_expires_at: i64,
        now: i64,
    ) -> Result<Option<EndpointRow>, StoreError> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE webhook_endpoints SET previous_secret = secret,
               previous_secret_expires_at = $3, secret = $2, updated_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(secret)
        .bind(previous_expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        bump_config(&mut tx).await?;
        tx.commit().await?;
        self.get_endpoint(id).await
    }

    async fn delete_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        bump_config(&mut tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn lease_due(
        &self,
        lease_ms: i64,
        limit: u32,
        per_endpoint: u32,
        busy: &[String],
    ) -> Result<Vec<DueMessage>, StoreError> {
        // One process writes a SQLite file: its clock is the database's.
        let now = now_ms();
        let mut q = QueryBuilder::new("UPDATE webhook_messages SET next_attempt_at = ");
        q.push_bind(now.saturating_add(lease_ms));
        q.push(", lease_token = lower(hex(randomblob(16))), first_attempt_at = COALESCE(first_attempt_at, ");
        q.push_bind(now);
        q.push(
            ") WHERE rowid IN (SELECT m.rowid FROM webhook_endpoints e CROSS JOIN webhook_messages m
               WHERE m.rowid IN (SELECT d.rowid FROM webhook_messages d
                 WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.next_attempt_at <= ",
        );
        q.push_bind(now);
        q.push(" ORDER BY d.next_attempt_at LIMIT ");
        q.push_bind(i64::from(per_endpoint));
        // Each enabled endpoint's first due messages, read through
        // `webhook_messages_due_by_endpoint`: a disabled endpoint's backlog
        // (or a backlogged one's tail) is never scanned. `CROSS JOIN` keeps
        // the endpoints the outer loop (SQLite's planner would otherwise
        // scan every message and test each against the subquery).
        q.push(") AND e.enabled = 1");
        if !busy.is_empty() {
            q.push(" AND e.id NOT IN (");
            let mut sep = q.separated(", ");
            for id in busy {
                sep.push_bind(id);
            }
            q.push(")");
        }
        q.push(" ORDER BY m.next_attempt_at LIMIT ");
        q.push_bind(i64::from(limit));
        q.push(") RETURNING id, endpoint_id, payload, attempts, lease_token");
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(DueMessage {
                    id: r.try_get(0)?,
                    endpoint_id: r.try_get(1)?,
                    payload: r.try_get(2)?,
                    attempts: u32::try_from(r.try_get::<i64, _>(3)?).unwrap_or(u32::MAX),
                    lease_token: r.try_get(4)?,
                })
            })
            .collect()
    }

    async fn record_attempt(&self, a: &AttemptRecord) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let now = now_ms();
        let (status, next_retry_at) = match a.outcome {
            Outcome::Delivered => ("delivered", None),
            Outcome::RetryIn(ms) => ("pending", Some(now.saturating_add(ms))),
            Outcome::GaveUp { .. } | Outcome::Gone { .. } => ("failed", None),
        };
        // Only while the message holds this attempt's lease: not once
        // another sender leased it after this lease ran out, nor once it
        // was deleted with its endpoint. The token goes with the record.
        let done = sqlx::query(
            "UPDATE webhook_messages SET status = $2, next_attempt_at = $3,
               attempts = attempts + 1, lease_token = NULL
             WHERE id = $1 AND lease_token = $4",
        )
        .bind(&a.message_id)
        .bind(status)
        .bind(next_retry_at)
        .bind(&a.lease_token)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tracing::info!(message = %a.message_id, "an attempt whose lease was taken over is not recorded");
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO webhook_attempts (message_id, attempted_at, status_code, latency_ms, error, next_retry_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&a.message_id)
        .bind(a.attempted_at)
        .bind(a.status_code.map(i64::from))
        .bind(a.latency_ms)
        .bind(&a.error)
        .bind(next_retry_at)
        .execute(&mut *tx)
        .await?;
        let mut disabled = false;
        match &a.outcome {
            // The store's clock, as `first_attempt_at`'s, which it is
            // compared with.
            Outcome::Delivered => {
                sqlx::query("UPDATE webhook_endpoints SET last_success_at = $2 WHERE id = $1")
                    .bind(&a.endpoint_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            Outcome::GaveUp { disable_reason } => {
                let done = sqlx::query(
                    "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = $2, updated_at = $3
                     WHERE id = $1 AND enabled = 1 AND (last_success_at IS NULL OR last_success_at <
                       (SELECT COALESCE(first_attempt_at, 0) FROM webhook_messages WHERE id = $4))",
                )
                .bind(&a.endpoint_id)
                .bind(disable_reason)
                .bind(a.attempted_at)
                .bind(&a.message_id)
                .execute(&mut *tx)
                .await?;
                disabled = done.rows_affected() > 0;
                if disabled {
                    bump_config(&mut tx).await?;
                    if let Some(event) = &a.disabled_event {
                        fan_out(&mut tx, event, now, Some(&a.endpoint_id)).await?;
                    }
                }
            }
            Outcome::Gone { disable_reason } => {
                let done = sqlx::query(
                    "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = $2, updated_at = $3
                     WHERE id = $1 AND enabled = 1",
                )
                .bind(&a.endpoint_id)
                .bind(disable_reason)
                .bind(a.attempted_at)
                .execute(&mut *tx)
                .await?;
                disabled = done.rows_affected() > 0;
                if disabled {
                    bump_config(&mut tx).await?;
                    if let Some(event) = &a.disabled_event {
                        fan_out(&mut tx, event, now, Some(&a.endpoint_id)).await?;
                    }
                }
            }
            Outcome::RetryIn(_) => {}
        }
        tx.commit().await?;
        Ok(disabled)
    }

    async fn list_deliveries(
        &self,
        endpoint_id: &str,
        status: Option<&str>,
        before: Option<(i64, i64)>,
        limits: DeliveryLimits,
    ) -> Result<DeliveryPage, StoreError> {
        // Sizes first, bodies only for what fits: a page never holds more
        // than its limits in memory.
        let rows: Vec<(
            i64,
            String,
            String,
            String,
            i64,
            Option<i64>,
            Option<String>,
            i64,
            i64,
            i64,
        )> = sqlx::query_as(
            "SELECT m.rowid, m.id, m.event_type, m.status, m.created_at, m.next_attempt_at,
                   m.collapsed_into, length(CAST(m.payload AS BLOB)),
                   (SELECT COUNT(*) FROM webhook_attempts a WHERE a.message_id = m.id),
                   (SELECT COALESCE(SUM(length(CAST(a.error AS BLOB))), 0) FROM
                      (SELECT error FROM webhook_attempts WHERE message_id = m.id
                       ORDER BY id DESC LIMIT $6) a)
                 FROM webhook_messages m
                 WHERE m.endpoint_id = $1 AND ($2 IS NULL OR m.status = $2)
                   AND ($3 IS NULL OR m.created_at < $3 OR (m.created_at = $3 AND m.rowid < $4))
                 ORDER BY m.created_at DESC, m.rowid DESC LIMIT $5",
        )
        .bind(endpoint_id)
        .bind(status)
        .bind(before.map(|(at, _)| at))
        .bind(before.map(|(_, seq)| seq))
        .bind(i64::from(limits.count).saturating_add(1))
        .bind(MAX_ATTEMPTS_SHOWN)
        .fetch_all(&self.pool)
        .await?;
        let mut page = DeliveryPage::default();
        let mut budget = DeliveryBudget::new(limits);
        for (
            seq,
            id,
            event_type,
            status,
            created_at,
            next_attempt_at,
            collapsed_into,
            size,
            attempts_total,
            errors,
        ) in rows
        {
            let shown = attempts_total.min(MAX_ATTEMPTS_SHOWN);
            let bytes = usize::try_from(size.saturating_add(errors))
                .unwrap_or(usize::MAX)
                .saturating_add(
                    usize::try_from(shown)
                        .unwrap_or(0)
                        .saturating_mul(ATTEMPT_BYTES),
                );
            if page.items.len() == limits.count as usize || !budget.admit(bytes) {
                page.more = true;
                break;
            }
            let payload: String =
                sqlx::query_scalar("SELECT payload FROM webhook_messages WHERE id = $1")
                    .bind(&id)
                    .fetch_optional(&self.pool)
                    .await?
                    .unwrap_or_default();
            let mut attempts = sqlx::query(
                "SELECT attempted_at, status_code, latency_ms, error, next_retry_at
                 FROM webhook_attempts WHERE message_id = $1 ORDER BY id DESC LIMIT $2",
            )
            .bind(&id)
            .bind(MAX_ATTEMPTS_SHOWN)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|a| {
                Ok(AttemptRow {
                    attempted_at: a.try_get(0)?,
                    status_code: a.try_get(1)?,
                    latency_ms: a.try_get(2)?,
                    error: a.try_get(3)?,
                    next_retry_at: a.try_get(4)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
            attempts.reverse();
            // Attempts recorded since the count was read are shown too.
            let attempts_total = attempts_total.max(attempts.len() as i64);
            page.items.push(DeliveryRow {
                seq,
                id,
                event_type,
                status,
                payload,
                created_at,
                next_attempt_at,
                attempts,
                attempts_total,
                collapsed_into,
            });
        }
        Ok(page)
    }

    async fn retry_message(
        &self,
        endpoint_id: &str,
        message_id: &str,
        now: i64,
    ) -> Result<Retried, StoreError> {
        let done = sqlx::query(
            "UPDATE webhook_messages SET status = 'pending', next_attempt_at = $3
             WHERE id = $2 AND endpoint_id = $1 AND status <> 'collapsed'",
        )
        .bind(endpoint_id)
        .bind(message_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() > 0 {
            return Ok(Retried::Queued);
        }
        let into: Option<Option<String>> = sqlx::query_scalar(
            "SELECT collapsed_into FROM webhook_messages WHERE id = $2 AND endpoint_id = $1",
        )
        .bind(endpoint_id)
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match into {
            Some(Some(into)) => Retried::Collapsed { into },
            // Never there, or removed meanwhile by retention.
            _ => Retried::NotFound,
        })
    }

    async fn recover_messages(
        &self,
        endpoint_id: &str,
        since: i64,
        until: i64,
        now: i64,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE webhook_messages SET status = 'pending', next_attempt_at = $4, attempts = 0,
               first_attempt_at = NULL, lease_token = NULL
             WHERE id IN (SELECT id FROM webhook_messages
               WHERE endpoint_id = $1 AND status IN ('failed', 'held')
                 AND created_at >= $2 AND created_at < $3
               ORDER BY created_at LIMIT $5)",
        )
        .bind(endpoint_id)
        .bind(since)
        .bind(until)
        .bind(now)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn oldest_pending(&self) -> Result<Vec<(String, Option<i64>)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT e.id, MIN(m.created_at) FROM webhook_endpoints e
             LEFT JOIN webhook_messages m ON m.endpoint_id = e.id AND m.status IN ('pending', 'held')
             GROUP BY e.id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn delete_old_messages(&self, before: i64, limit: u32) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM webhook_messages WHERE id IN (SELECT id FROM webhook_messages
               WHERE status IN ('delivered', 'failed', 'held', 'collapsed') AND created_at < $1
               ORDER BY created_at LIMIT $2)",
        )
        .bind(before)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn outbox_depth(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM webhook_messages WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn pending_changes(&self) -> Result<Vec<(DocId, i64, i64)>, StoreError> {
        let rows = sqlx::query("SELECT doc_id, first_change_at, last_change_at FROM doc_changes")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    async fn doc_name(&self, doc_id: DocId) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT name FROM documents WHERE id = $1")
                .bind(doc_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn pending_reports(
        &self,
        debounce: Debounce,
        limit: u32,
    ) -> Result<Vec<PendingReport>, StoreError> {
        // One process writes a SQLite file: its clock is the database's,
        // the one the log writer stamps changes with.
        // A report falls due `debounce` after the last change or
        // `max_wait` after the first; an automatic version `history` after
        // the first change it holds (never, with history off: -1).
        let rows: Vec<(DocId, i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT doc_id, first_change_at, updates, bytes, last_change_at, MIN(
               CASE WHEN updates > 0 THEN MIN(last_change_at + $1, first_change_at + $2)
                    ELSE $6 END,
               CASE WHEN history_since IS NOT NULL AND $5 >= 0 THEN history_since + $5
                    ELSE $6 END) - $3 AS due_in
             FROM doc_changes ORDER BY due_in LIMIT $4",
        )
        .bind(debounce.debounce_ms)
        .bind(debounce.max_wait_ms)
        .bind(now_ms())
        .bind(i64::from(limit))
        .bind(debounce.history_ms.unwrap_or(-1))
        .bind(NEVER)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(PendingReport::from).collect())
    }

    async fn report_changes(
        &self,
        doc_id: DocId,
        debounce: Debounce,
        expect: Option<ChangesStamp>,
        now: i64,
        event: ChangesEvent<'_>,
    ) -> Result<Report, StoreError> {
        // A write transaction: appends and other reporters wait for it.
        let mut tx = self.write_tx().await?;
        let now_db = now_ms();
        let row = sqlx::query(
            "SELECT d.name, c.updates, c.bytes, c.first_change_at, c.last_change_at,
               c.updates > 0 AND (c.last_change_at + $2 <= $4 OR c.first_change_at + $3 <= $4),
               c.history_since IS NOT NULL AND $5 >= 0 AND c.history_since + $5 <= $4
             FROM doc_changes c JOIN documents d ON d.id = c.doc_id
             WHERE c.doc_id = $1",
        )
        .bind(doc_id)
        .bind(debounce.debounce_ms)
        .bind(debounce.max_wait_ms)
        .bind(now_db)
        .bind(debounce.history_ms.unwrap_or(-1))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(Report::Nothing);
        };
        let version_due: bool = row.try_get(6)?;
        let updates: i64 = row.try_get(1)?;
        // A version made with changes not yet reported takes them with it:
        // that `document.updated` carries the version (SPEC §9).
        let report_due: bool = row.try_get::<bool, _>(5)? || (version_due && updates > 0);
        if !report_due && !version_due {
            return Ok(Report::Nothing);
        }
        let stamp = ChangesStamp {
            first_change_at: row.try_get(3)?,
            updates,
            bytes: row.try_get(2)?,
            last_change_at: row.try_get(4)?,
        };
        let reported = match stamp.reported(expect) {
            Some(r) => r,
            None if report_due => return Ok(Report::Changed(stamp)),
            None => stamp,
        };
        let users: Vec<String> = sqlx::query_scalar(
            "SELECT user FROM doc_change_users WHERE doc_id = $1 AND for_report = 1 ORDER BY user",
        )
        .bind(doc_id)
        .fetch_all(&mut *tx)
        .await?;
        let version = if version_due {
            let auto = NewVersion {
                kind: VersionKind::Auto,
                name: None,
                created_by: None,
                restored_from: None,
            };
            history::create_version(&mut tx, doc_id, &auto, now)
                .await?
                .map(|v| v.id)
        } else {
            None
        };
        if report_due {
            let changes = DocChanges {
                doc_id,
                name: row.try_get(0)?,
                updates: reported.updates,
                bytes: reported.bytes,
                users,
                first_change_at: reported.first_change_at,
                last_change_at: reported.last_change_at,
                version,
            };
            fan_out(&mut tx, &event(&changes), now, None).await?;
            sqlx::query(TAKE_REPORTED_CHANGES)
                .bind(doc_id)
                .bind(reported.updates)
                .bind(reported.bytes)
                .bind(reported.last_change_at)
                .execute(&mut *tx)
                .await?;
            sqlx::query(TAKE_REPORTED_USERS)
                .bind(doc_id)
                .bind(reported.updates)
                .execute(&mut *tx)
                .await?;
            history::forget_settled_changes(&mut tx, doc_id).await?;
        }
        tx.commit().await?;
        Ok(Report::Sent)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.loads.close().await;
        self.pool.close().await;
    }
}
