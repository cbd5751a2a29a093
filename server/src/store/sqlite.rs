//! The SQLite store: WAL mode, `synchronous = FULL` (a commit survives a
//! crash of the process and of the machine), one writer at a time.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, SqlitePool};

use super::{now_ms, DocId, DocLog, DocMeta, LoadedDoc, PendingUpdate, Store, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// SQLite allows 32766 bound parameters per statement; two per row.
const ROWS_PER_INSERT: usize = 4000;

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub async fn open(url: &str) -> Result<Self, StoreError> {
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
            .busy_timeout(Duration::from_secs(10));
        let path = options.get_filename().to_path_buf();
        if path.as_os_str() != ":memory:" {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                create_dir(dir).map_err(|e| {
                    config_err(format!("cannot create the folder {}: {e}", dir.display()))
                })?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| config_err(format!("cannot open {}: {e}", path.display())))?;
        MIGRATOR.run(&pool).await?;
        Ok(SqliteStore { pool })
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

fn create_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[async_trait]
impl Store for SqliteStore {
    async fn load_or_create(&self, name: &str) -> Result<LoadedDoc, StoreError> {
        if let Some(meta) = self.create(name).await? {
            return Ok(LoadedDoc {
                id: meta.id,
                created: true,
                log: DocLog::default(),
            });
        }
        let id: DocId = sqlx::query_scalar("SELECT id FROM documents WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(LoadedDoc {
            id,
            created: false,
            log: self.read_log(id).await?,
        })
    }

    async fn create(&self, name: &str) -> Result<Option<DocMeta>, StoreError> {
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO documents (name, created_at, updated_at) VALUES ($1, $2, $2)
             ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .bind(name)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(Some(DocMeta {
                id: row.try_get(0)?,
                name: name.to_string(),
                created_at: now,
                updated_at: now,
                size_bytes: 0,
            })),
            None => Ok(None),
        }
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

    async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        // Foreign keys cascade to the log and the snapshot.
        let done = sqlx::query("DELETE FROM documents WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn append(&self, batch: &[PendingUpdate]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for chunk in batch.chunks(ROWS_PER_INSERT) {
            // INSERT … SELECT skips the rows of documents deleted meanwhile.
            let mut q = QueryBuilder::new(
                "INSERT INTO doc_updates (doc_id, data) SELECT v.column1, v.column2 FROM (VALUES ",
            );
            let mut sep = q.separated(", ");
            for u in chunk {
                sep.push("(");
                sep.push_bind_unseparated(u.doc_id);
                sep.push_unseparated(", ");
                sep.push_bind_unseparated(u.data.as_ref());
                sep.push_unseparated(")");
            }
            q.push(") AS v JOIN documents d ON d.id = v.column1");
            q.build().execute(&mut *tx).await?;
        }
        let mut per_doc: std::collections::BTreeMap<DocId, (i64, i64)> = Default::default();
        for u in batch {
            let e = per_doc.entry(u.doc_id).or_default();
            e.0 += 1;
            e.1 += i64::try_from(u.data.len()).unwrap_or(i64::MAX);
        }
        let now = now_ms();
        for (doc_id, (count, bytes)) in per_doc {
            sqlx::query(
                "UPDATE documents SET updated_at = $1, log_count = log_count + $2,
                 size_bytes = size_bytes + $3 WHERE id = $4",
            )
            .bind(now)
            .bind(count)
            .bind(bytes)
            .bind(doc_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn compaction_candidates(&self, min_updates: u32) -> Result<Vec<DocId>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM documents WHERE log_count >= $1 ORDER BY log_count DESC LIMIT 64",
        )
        .bind(i64::from(min_updates))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn read_log(&self, doc_id: DocId) -> Result<DocLog, StoreError> {
        let snapshot: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT data FROM doc_snapshots WHERE doc_id = $1")
                .bind(doc_id)
                .fetch_optional(&self.pool)
                .await?;
        let rows = sqlx::query("SELECT id, data FROM doc_updates WHERE doc_id = $1 ORDER BY id")
            .bind(doc_id)
            .fetch_all(&self.pool)
            .await?;
        let mut updates = Vec::with_capacity(rows.len());
        for row in rows {
            updates.push((row.try_get(0)?, row.try_get(1)?));
        }
        Ok(DocLog { snapshot, updates })
    }

    async fn write_snapshot(
        &self,
        doc_id: DocId,
        snapshot: &[u8],
        upto_id: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
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
        sqlx::query("DELETE FROM doc_updates WHERE doc_id = $1 AND id <= $2")
            .bind(doc_id)
            .bind(upto_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE documents SET
               log_count = (SELECT COUNT(*) FROM doc_updates WHERE doc_id = $1),
               size_bytes = $2 + (SELECT COALESCE(SUM(LENGTH(data)), 0) FROM doc_updates WHERE doc_id = $1)
             WHERE id = $1",
        )
        .bind(doc_id)
        .bind(i64::try_from(snapshot.len()).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
