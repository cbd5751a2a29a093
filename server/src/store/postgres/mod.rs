//! The PostgreSQL store (`TANDEM_DATABASE_URL=postgres://…`), with its own
//! migrations in `migrations/postgres/`: the same tables as SQLite's, in
//! PostgreSQL's types (BYTEA, BIGINT unix milliseconds, BOOLEAN, JSONB).
//!
//! It is built for several nodes sharing one database:
//! - The update log is numbered per document (`doc_updates.seq`), gap-free
//!   and in commit order: the log writer (`log_writer`) locks the
//!   document's row while it numbers and inserts. The `i64` row ids of the
//!   `Store` trait (`DocLog::updates`, `write_snapshot`'s `upto_id`,
//!   `Quarantined::row_id`) are these sequence numbers.
//! - Compaction deletes exactly the rows it folded (`seq <= upto`), and a
//!   snapshot only moves forward: compactors of one document take turns
//!   (`pg_advisory_xact_lock`), and one that finds a snapshot as new as its
//!   own already written does nothing.
//! - Reads of a snapshot with its log use one `REPEATABLE READ` snapshot.
//! - The outbox is claimed with `FOR UPDATE SKIP LOCKED`, so senders on
//!   several nodes never claim one message twice, and each lease carries a
//!   token that recording its attempt requires (a sender whose lease ran
//!   out cannot overwrite a newer attempt). Every time nodes compare with
//!   each other's (`next_attempt_at` of new, leased and retried messages,
//!   `first_attempt_at` and `last_success_at`, the unreported changes of a
//!   document) is the database's clock (`DB_NOW_MS`), never a node's.
//! - Migrations take sqlx's advisory lock: nodes starting at once on an
//!   empty database run them once.
//!
//! A password in the URL is never printed: errors carry `redact_url`'s form.

mod cluster;
mod history;
mod log_writer;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::Row;

pub use self::log_writer::PgLogWriter;
use super::{
    now_ms, plan_collapse, redact_url, AttemptRecord, AttemptRow, ChangesEvent, ChangesStamp,
    CollapseStep, CollapseTarget, Debounce, DeliveryBudget, DeliveryLimits, DeliveryPage,
    DeliveryRow, DocChanges, DocId, DocLog, DocMeta, DueMessage, EndpointPatch, EndpointRow,
    FoundDoc, HistoryFold, LogPage, LogWriter, MergeLinks, NewEvent, NewVersion, Outcome,
    PageLimits, PendingReport, Quarantined, Report, Retried, Store, StoreError, VersionEvent,
    VersionFilter, VersionId, VersionKind, VersionRow, ATTEMPT_BYTES, MAX_ATTEMPTS_SHOWN,
    TAKE_REPORTED_CHANGES, TAKE_REPORTED_USERS,
};
use crate::webhooks::events;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// How long opening a connection may take before storage counts as
/// unreachable (and a call waits for a free connection of the pool).
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections of the main pool: API calls, joins, webhooks, compaction.
const POOL_CONNECTIONS: u32 = 8;

/// Documents loading at once; more wait for a connection (applying pages
/// is CPU work, so more would not finish sooner).
const LOAD_CONNECTIONS: u32 = 4;

/// The database's clock in unix milliseconds (the transaction's start).
/// Times that nodes compare with each other's (the unreported changes of a
/// document, which any node may report) are taken from it, never from a
/// node's clock: nodes whose clocks disagree still agree on what is due.
pub(super) const DB_NOW_MS: &str = "(floor(extract(epoch FROM now()) * 1000)::bigint)";

/// The cluster's own connections: heartbeats, catching up.
const CLUSTER_CONNECTIONS: u32 = 2;

/// The reads that pair a snapshot with its log.
/// A time no change falls due at.
const NEVER: i64 = i64::MAX / 2;

const READ_SNAPSHOT: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

pub struct PgStore {
    pool: PgPool,
    /// Document loads' own connections: a load keeps its read transaction
    /// open while its pages are applied, and must not take the connections
    /// the API, joins and webhooks need.
    loads: PgPool,
    /// Heartbeats and catching up, for nodes sharing the database.
    cluster: std::sync::Arc<cluster::PgCluster>,
    /// For the log writer's own connection.
    options: PgConnectOptions,
}

/// The database error PostgreSQL gives for a database that does not exist.
const INVALID_CATALOG_NAME: &str = "3D000";
/// ... for one that exists already ...
const DUPLICATE_DATABASE: &str = "42P04";
/// ... and, when two sessions create it at the same moment, for the loser.
const UNIQUE_VIOLATION: &str = "23505";

fn has_code(e: &sqlx::Error, code: &str) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some(code))
}

impl PgStore {
    /// Connects, creates the database when it does not exist (and the user
    /// may), and runs the migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let config_err = |reason: String| StoreError::Config {
            url: redact_url(url),
            reason,
        };
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| config_err(e.to_string()))?
            .application_name("tandem");
        let pool_options = || {
            PgPoolOptions::new()
                .max_connections(POOL_CONNECTIONS)
                .acquire_timeout(CONNECT_TIMEOUT)
        };
        let pool = match pool_options().connect_with(options.clone()).await {
            Ok(pool) => pool,
            Err(e) if has_code(&e, INVALID_CATALOG_NAME) => {
                match sqlx::Postgres::create_database(url).await {
                    Ok(()) => {}
                    // Another node created it meanwhile.
                    Err(e)
                        if has_code(&e, DUPLICATE_DATABASE) || has_code(&e, UNIQUE_VIOLATION) => {}
                    Err(e) => {
                        return Err(config_err(format!("cannot create the database: {e}")));
                    }
                }
                pool_options()
                    .connect_with(options.clone())
                    .await
                    .map_err(|e| config_err(format!("cannot connect: {e}")))?
            }
            Err(e) => return Err(config_err(format!("cannot connect: {e}"))),
        };
        MIGRATOR.run(&pool).await?;
        let loads = PgPoolOptions::new()
            .max_connections(LOAD_CONNECTIONS)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with(options.clone());
        // The cluster's reads are few and short, and must not wait behind
        // the API's or the loads' (a node that cannot beat looks dead).
        let cluster = PgPoolOptions::new()
            .max_connections(CLUSTER_CONNECTIONS)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with(options.clone());
        Ok(PgStore {
            pool,
            loads,
            cluster: std::sync::Arc::new(cluster::PgCluster::new(cluster)),
            options,
        })
    }

    /// The snapshot and the oldest rows of the log (all for `None`), as of
    /// one moment. With `limits`, the rows' lengths are read first
    /// (`octet_length` reads a stored value's header, not its content) and
    /// only the rows within the limits are fetched.
    async fn read_log_rows(
        &self,
        doc_id: DocId,
        limits: Option<PageLimits>,
        with_history: bool,
    ) -> Result<DocLog, StoreError> {
        let mut tx = self.pool.begin_with(READ_SNAPSHOT).await?;
        let snapshot: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT data FROM doc_snapshots WHERE doc_id = $1")
                .bind(doc_id)
                .fetch_optional(&mut *tx)
                .await?;
        let mut upto = i64::MAX;
        if let Some(limits) = limits {
            let mut lengths = sqlx::query_as::<_, (i64, i32)>(
                "SELECT seq, octet_length(data) FROM doc_updates WHERE doc_id = $1
                 ORDER BY seq LIMIT $2",
            )
            .bind(doc_id)
            .bind(i64::try_from(limits.rows).unwrap_or(i64::MAX))
            .fetch(&mut *tx);
            let mut bytes = 0usize;
            let mut last = None;
            while let Some((seq, len)) = lengths.try_next().await? {
                if last.is_some() && bytes >= limits.bytes {
                    break;
                }
                bytes = bytes.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
                last = Some(seq);
            }
            drop(lengths);
            upto = last.unwrap_or(i64::MIN);
        }
        let rows = sqlx::query(
            "SELECT seq, data FROM doc_updates WHERE doc_id = $1 AND seq <= $2 ORDER BY seq",
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
}

fn meta(row: &sqlx::postgres::PgRow) -> Result<DocMeta, StoreError> {
    Ok(DocMeta {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        created_at: row.try_get(2)?,
        updated_at: row.try_get(3)?,
        size_bytes: row.try_get(4)?,
    })
}

const ENDPOINT_COLUMNS: &str = "id, url, events::text, description, include_content, enabled, \
    disabled_reason, secret, previous_secret, previous_secret_expires_at, created_at, updated_at, \
    doc_prefix";

fn endpoint(row: &sqlx::postgres::PgRow) -> Result<EndpointRow, StoreError> {
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
async fn bump_config(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), StoreError> {
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
/// is merged into it instead (see `collapse_updated`). As in
/// `store/sqlite`, where the reasons are given.
async fn fan_out(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    event: &NewEvent,
    now: i64,
    skip: Option<&str>,
) -> Result<(), StoreError> {
    if event.event_type == events::DOCUMENT_UPDATED {
        collapse_updated(tx, event, now, skip).await?;
    }
    // Due at once by the database's clock, which senders compare with.
    sqlx::query(&format!(
        "INSERT INTO webhook_messages
           (id, endpoint_id, event_type, payload, status, next_attempt_at, created_at, doc)
         SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), e.id, $1,
           CASE WHEN e.include_content AND $3::text IS NOT NULL THEN $3 ELSE $2 END,
           CASE WHEN e.enabled THEN 'pending' ELSE 'held' END,
           CASE WHEN e.enabled THEN {DB_NOW_MS} END, $4, $5
         FROM webhook_endpoints e
         WHERE {} AND e.id IS DISTINCT FROM $6
           AND NOT EXISTS (SELECT 1 FROM webhook_messages m
             WHERE m.endpoint_id = e.id AND m.doc = $5 AND {})",
        subscribed("$1", "$5"),
        collapsible("$1"),
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

/// Endpoint `e` wants event type `ty` about document `doc` (placeholders).
fn subscribed(ty: &str, doc: &str) -> String {
    format!(
        "e.events ?| ARRAY[{ty}::text, '*'] AND (e.doc_prefix IS NULL OR {doc}::text IS NULL
           OR starts_with({doc}::text, e.doc_prefix))"
    )
}

/// Message `m` is an undelivered `document.updated`, not being attempted,
/// that one of type `ty` may merge into.
fn collapsible(ty: &str) -> String {
    format!(
        "{ty}::text = 'document.updated' AND m.event_type = 'document.updated'
           AND m.status IN ('pending', 'held') AND m.lease_token IS NULL"
    )
}

/// As `store/sqlite`'s `collapse_updated`. The messages merged into are
/// locked first: a sender on another node that leased one meanwhile has
/// made it not collapsible (checked again once the lock is had), and one
/// it has not leased it cannot lease until this commits.
async fn collapse_updated(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    event: &NewEvent,
    now: i64,
    skip: Option<&str>,
) -> Result<(), StoreError> {
    let targets: Vec<CollapseTarget> = sqlx::query_as(&format!(
        "SELECT e.id AS endpoint_id, e.include_content, m.id, m.payload, m.attempts,
               m.next_attempt_at, m.first_attempt_at,
               EXISTS (SELECT 1 FROM webhook_attempts a WHERE a.message_id = m.id) AS attempted
             FROM webhook_endpoints e JOIN webhook_messages m ON m.endpoint_id = e.id
             WHERE {} AND e.id IS DISTINCT FROM $3 AND m.doc = $2 AND {}
             ORDER BY e.id, m.created_at DESC, m.seq DESC
             FOR UPDATE OF m",
        subscribed("$1", "$2"),
        collapsible("$1"),
    ))
    .bind(event.event_type)
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

#[async_trait]
impl Store for PgStore {
    async fn find_or_create(
        &self,
        name: &str,
        now: i64,
        created: Option<&NewEvent>,
    ) -> Result<FoundDoc, StoreError> {
        // Of several nodes creating one name at once, `create` lets one
        // insert it and write its event; the others find it. One that is
        // deleted between the two (by a node's API call) is created again.
        let mut tries = 0;
        loop {
            if let Some(meta) = self.create(name, now, created).await? {
                return Ok(FoundDoc {
                    id: meta.id,
                    created: true,
                });
            }
            let id: Option<DocId> = sqlx::query_scalar("SELECT id FROM documents WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
            tries += 1;
            match id {
                Some(id) => return Ok(FoundDoc { id, created: false }),
                None if tries < 3 => continue,
                None => return Err(StoreError::Database(sqlx::Error::RowNotFound)),
            }
        }
    }

    async fn create_from_state(
        &self,
        name: &str,
        now: i64,
        snapshot: &[u8],
        replace: bool,
    ) -> Result<Option<(DocMeta, bool)>, StoreError> {
        let mut tx = self.pool.begin().await?;
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
        sqlx::query("INSERT INTO doc_snapshots (doc_id, data, upto_seq) VALUES ($1, $2, 0)")
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
        // Of several nodes creating one name at once, one gets the row (and
        // writes the event); the others find it taken.
        let id: Option<DocId> = sqlx::query_scalar(
            "INSERT INTO documents (name, created_at, updated_at) VALUES ($1, $2, $2)
             ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .bind(name)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            return Ok(None);
        };
        if let Some(event) = created {
            fan_out(&mut tx, event, now, None).await?;
        }
        tx.commit().await?;
        Ok(Some(DocMeta {
            id,
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
        // starts_with, not LIKE: names may contain `_` and `%`.
        let rows = sqlx::query(
            "SELECT id, name, created_at, updated_at, size_bytes FROM documents
             WHERE starts_with(name, $1) AND ($2::text IS NULL OR name > $2)
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
        // Foreign keys cascade to the log, the snapshot and unreported
        // changes. An append in flight holds the row: this waits for it.
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
        Ok(Box::new(PgLogWriter::open(&self.options)?))
    }

    fn cluster(&self) -> Option<std::sync::Arc<dyn super::cluster::ClusterStore>> {
        Some(self.cluster.clone())
    }

    async fn compaction_candidates(
        &self,
        min_updates: u32,
        min_bytes: u64,
    ) -> Result<Vec<DocId>, StoreError> {
        // The log's bytes are the document's stored bytes less its snapshot.
        Ok(sqlx::query_scalar(
            "SELECT id FROM (
               SELECT d.id, d.log_count,
                 d.size_bytes - COALESCE(octet_length(s.data), 0) AS log_bytes
               FROM documents d LEFT JOIN doc_snapshots s ON s.doc_id = d.id
               WHERE d.log_count > 0) c
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

    async fn read_log_pages(
        &self,
        doc_id: DocId,
        limits: PageLimits,
        pages: tokio::sync::mpsc::Sender<LogPage>,
    ) -> Result<u64, StoreError> {
        // One snapshot, as in `read_log_rows`. Rows are streamed as they
        // arrive and `pages` is bounded, so the reader runs at most its
        // capacity (and the socket's buffers) ahead of whoever applies them.
        let mut tx = self.loads.begin_with(READ_SNAPSHOT).await?;
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
                "SELECT data FROM doc_updates WHERE doc_id = $1 ORDER BY seq",
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
        // In the same snapshot: the log is gap-free and numbered in commit
        // order, so this is the number of the last row read.
        let last_seq: Option<i64> =
            sqlx::query_scalar("SELECT last_seq FROM documents WHERE id = $1")
                .bind(doc_id)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        if !page.is_empty() {
            // A closed receiver has stopped wanting pages: not an error here.
            let _ = pages.send(page).await;
        }
        Ok(u64::try_from(last_seq.unwrap_or(0)).unwrap_or(0))
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
        let mut tx = self.pool.begin().await?;
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

    async fn write_fold(
        &self,
        doc_id: DocId,
        snapshot: &[u8],
        upto_id: i64,
        quarantine: &[Quarantined],
        history: Option<&HistoryFold>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // Compactors of one document take turns (on any node). Appenders do
        // not take this lock: they only add rows above the ones folded.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(doc_id)
            .execute(&mut *tx)
            .await?;
        let current: Option<(i64, i32)> = sqlx::query_as(
            "SELECT upto_seq, octet_length(data) FROM doc_snapshots WHERE doc_id = $1",
        )
        .bind(doc_id)
        .fetch_optional(&mut *tx)
        .await?;
        // The snapshot only moves forward. One already as new as this one
        // holds every row this one folded: another compactor won, and this
        // one leaves everything as it is. An older one holds a prefix of
        // what this one folded (it started from the same snapshot or an
        // older one, and rows are gap-free and commit-ordered), so this one
        // may replace it and delete the rows up to `upto_id`: exactly the
        // rows it read, less those the other one deleted.
        if current.is_some_and(|(upto, _)| upto >= upto_id) {
            tx.rollback().await?;
            return Ok(());
        }
        let old = current.map_or(0, |(_, len)| i64::from(len));
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
            "WITH gone AS (DELETE FROM doc_updates WHERE doc_id = $1 AND seq <= $2
                           RETURNING octet_length(data) AS len)
             SELECT COUNT(*), COALESCE(SUM(len), 0)::bigint FROM gone",
        )
        .bind(doc_id)
        .bind(upto_id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO doc_snapshots (doc_id, data, upto_seq)
             SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM documents WHERE id = $1)
             ON CONFLICT (doc_id) DO UPDATE SET data = excluded.data, upto_seq = excluded.upto_seq",
        )
        .bind(doc_id)
        .bind(snapshot)
        .bind(upto_id)
        .execute(&mut *tx)
        .await?;
        history::write_fold(&mut tx, doc_id, upto_id, history).await?;
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

    async fn quarantined(&self, doc_id: DocId) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM doc_updates_quarantine WHERE doc_id = $1")
                .bind(doc_id)
                .fetch_one(&self.pool)
                .await?,
        )
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
        sqlx::query(&format!(
            "INSERT INTO webhook_messages
               (id, endpoint_id, event_type, payload, status, next_attempt_at, created_at)
             VALUES ($1, $2, $3, $4, 'pending', {DB_NOW_MS}, $5)"
        ))
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
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, url, events, description, include_content, enabled,
               disabled_reason, secret, previous_secret, previous_secret_expires_at, created_at, updated_at,
               doc_prefix)
             VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
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
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 FOR UPDATE"
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
            "UPDATE webhook_endpoints SET url = $2, events = $3::jsonb, description = $4,
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
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!(
            "UPDATE webhook_endpoints SET previous_secret = secret,
               previous_secret_expires_at = $3, secret = $2, updated_at = $4 WHERE id = $1
             RETURNING {ENDPOINT_COLUMNS}"
        ))
        .bind(id)
        .bind(secret)
        .bind(previous_expires_at)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let e = endpoint(&row)?;
        bump_config(&mut tx).await?;
        tx.commit().await?;
        Ok(Some(e))
    }

    async fn delete_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
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
        // Up to `per_endpoint` due messages of each enabled endpoint,
        // locked (and those another sender holds skipped), then the `limit`
        // due first among them. Rows locked but not chosen are free again
        // when this statement's transaction ends, a moment later. Each
        // chosen row gets a token of its own with its lease.
        let rows = sqlx::query(&format!(
            "WITH chosen AS (
               SELECT c.id FROM webhook_endpoints e
               CROSS JOIN LATERAL (
                 SELECT m.id, m.next_attempt_at FROM webhook_messages m
                 WHERE m.endpoint_id = e.id AND m.status = 'pending'
                   AND m.next_attempt_at <= {DB_NOW_MS}
                 ORDER BY m.next_attempt_at LIMIT $2
                 FOR UPDATE SKIP LOCKED) c
               WHERE e.enabled AND NOT (e.id = ANY($4))
               ORDER BY c.next_attempt_at LIMIT $3)
             UPDATE webhook_messages m SET next_attempt_at = {DB_NOW_MS} + $1,
               first_attempt_at = COALESCE(m.first_attempt_at, {DB_NOW_MS}),
               lease_token = gen_random_uuid()::text
             FROM chosen WHERE m.id = chosen.id
             RETURNING m.id, m.endpoint_id, m.payload, m.attempts, m.lease_token"
        ))
        .bind(lease_ms)
        .bind(i64::from(per_endpoint))
        .bind(i64::from(limit))
        .bind(busy)
        .fetch_all(&self.pool)
        .await?;
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
        let mut tx = self.pool.begin().await?;
        let (status, retry_in) = match a.outcome {
            Outcome::Delivered => ("delivered", None),
            Outcome::RetryIn(ms) => ("pending", Some(ms)),
            Outcome::GaveUp { .. } | Outcome::Gone { .. } => ("failed", None),
        };
        // Only while the message holds this attempt's lease: not once
        // another sender leased it after this lease ran out, nor once it
        // was deleted with its endpoint. The token goes with the record.
        let next: Option<Option<i64>> = sqlx::query_scalar(&format!(
            "UPDATE webhook_messages SET status = $2, next_attempt_at = {DB_NOW_MS} + $3,
               attempts = attempts + 1, lease_token = NULL
             WHERE id = $1 AND lease_token = $4
             RETURNING next_attempt_at"
        ))
        .bind(&a.message_id)
        .bind(status)
        .bind(retry_in)
        .bind(&a.lease_token)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(next_retry_at) = next else {
            tracing::info!(message = %a.message_id, "an attempt whose lease was taken over is not recorded");
            return Ok(false);
        };
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
            // The database's clock, as `first_attempt_at`'s, which it is
            // compared with.
            Outcome::Delivered => {
                sqlx::query(&format!(
                    "UPDATE webhook_endpoints SET last_success_at = {DB_NOW_MS} WHERE id = $1"
                ))
                .bind(&a.endpoint_id)
                .execute(&mut *tx)
                .await?;
            }
            Outcome::GaveUp { disable_reason } => {
                let done = sqlx::query(
                    "UPDATE webhook_endpoints SET enabled = FALSE, disabled_reason = $2, updated_at = $3
                     WHERE id = $1 AND enabled AND (last_success_at IS NULL OR last_success_at <
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
                        fan_out(&mut tx, event, a.attempted_at, Some(&a.endpoint_id)).await?;
                    }
                }
            }
            Outcome::Gone { disable_reason } => {
                let done = sqlx::query(
                    "UPDATE webhook_endpoints SET enabled = FALSE, disabled_reason = $2, updated_at = $3
                     WHERE id = $1 AND enabled",
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
                        fan_out(&mut tx, event, a.attempted_at, Some(&a.endpoint_id)).await?;
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
        // Sizes first, bodies only for what fits (as in `store/sqlite`).
        let rows: Vec<(i64, String, String, String, i64, Option<i64>, Option<String>, i32, i64, i64)> =
            sqlx::query_as(
                "SELECT m.seq, m.id, m.event_type, m.status, m.created_at, m.next_attempt_at,
                   m.collapsed_into, octet_length(m.payload),
                   (SELECT COUNT(*) FROM webhook_attempts a WHERE a.message_id = m.id),
                   (SELECT COALESCE(SUM(octet_length(a.error)), 0)::bigint FROM
                      (SELECT error FROM webhook_attempts WHERE message_id = m.id
                       ORDER BY id DESC LIMIT $6) a)
                 FROM webhook_messages m
                 WHERE m.endpoint_id = $1 AND ($2::text IS NULL OR m.status = $2)
                   AND ($3::bigint IS NULL OR m.created_at < $3 OR (m.created_at = $3 AND m.seq < $4))
                 ORDER BY m.created_at DESC, m.seq DESC LIMIT $5",
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
            let bytes = usize::try_from(i64::from(size).saturating_add(errors))
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
        _now: i64,
    ) -> Result<Retried, StoreError> {
        // Due now by the database's clock, which senders compare with.
        let done = sqlx::query(&format!(
            "UPDATE webhook_messages SET status = 'pending', next_attempt_at = {DB_NOW_MS}
             WHERE id = $2 AND endpoint_id = $1 AND status <> 'collapsed'"
        ))
        .bind(endpoint_id)
        .bind(message_id)
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
        // As on SQLite, with the database's clock.
        let rows: Vec<(DocId, i64, i64, i64, i64, i64)> = sqlx::query_as(&format!(
            "SELECT doc_id, first_change_at, updates, bytes, last_change_at, LEAST(
               CASE WHEN updates > 0 THEN LEAST(last_change_at + $1, first_change_at + $2)
                    ELSE $5 END,
               CASE WHEN history_since IS NOT NULL AND $4 >= 0 THEN history_since + $4
                    ELSE $5 END) - {DB_NOW_MS} AS due_in
             FROM doc_changes ORDER BY due_in LIMIT $3"
        ))
        .bind(debounce.debounce_ms)
        .bind(debounce.max_wait_ms)
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
        let mut tx = self.pool.begin().await?;
        // Claimed: locked until the changes are deleted, with the event
        // written in the same transaction. A reporter on another node skips
        // the locked row (and, once this commits, finds it gone), and so
        // does one here while an append is adding to it: it is due again a
        // moment later, with that append counted.
        let row = sqlx::query(&format!(
            "SELECT d.name, c.updates, c.bytes, c.first_change_at, c.last_change_at,
               c.updates > 0 AND (c.last_change_at + $2 <= {DB_NOW_MS}
                                  OR c.first_change_at + $3 <= {DB_NOW_MS}),
               c.history_since IS NOT NULL AND $4 >= 0 AND c.history_since + $4 <= {DB_NOW_MS}
             FROM doc_changes c JOIN documents d ON d.id = c.doc_id
             WHERE c.doc_id = $1
             FOR UPDATE OF c SKIP LOCKED"
        ))
        .bind(doc_id)
        .bind(debounce.debounce_ms)
        .bind(debounce.max_wait_ms)
        .bind(debounce.history_ms.unwrap_or(-1))
        .fetch_optional(&mut *tx)
        .await?;
        // The early answers end the transaction at once: a dropped one is
        // rolled back only when its connection is next used, and until then
        // its row lock makes every reporter skip the document.
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(Report::Nothing);
        };
        let version_due: bool = row.try_get(6)?;
        let updates: i64 = row.try_get(1)?;
        // A version made with changes not yet reported takes them with it:
        // that `document.updated` carries the version (SPEC §9).
        let report_due: bool = row.try_get::<bool, _>(5)? || (version_due && updates > 0);
        if !report_due && !version_due {
            tx.rollback().await?;
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
            None if report_due => {
                tx.rollback().await?;
                return Ok(Report::Changed(stamp));
            }
            None => stamp,
        };
        let users: Vec<String> = sqlx::query_scalar(
            "SELECT user_name FROM doc_change_users WHERE doc_id = $1 AND for_report
             ORDER BY user_name",
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
