//! Storage: documents, their update logs and snapshots.
//!
//! `Store` moves bytes and rows and imports nothing else of Tandem's: it does
//! not know what an update means. Implementations: `sqlite` (default);
//! PostgreSQL joins behind the same trait.

use async_trait::async_trait;

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
}

/// A document's stored state: a snapshot (if compacted) and the log after it.
#[derive(Debug, Default)]
pub struct DocLog {
    pub snapshot: Option<Vec<u8>>,
    /// `(row id, update)` in the order they were accepted.
    pub updates: Vec<(i64, Vec<u8>)>,
}

#[derive(Debug)]
pub struct LoadedDoc {
    pub id: DocId,
    /// True when this call created the document.
    pub created: bool,
    pub log: DocLog,
}

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
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Loads the document named `name`, creating it (empty) when absent.
    async fn load_or_create(&self, name: &str) -> Result<LoadedDoc, StoreError>;

    /// Creates an empty document; `None` when the name is taken.
    async fn create(&self, name: &str) -> Result<Option<DocMeta>, StoreError>;

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

    /// Deletes the document, its log and its snapshot in one transaction.
    /// Returns whether it existed.
    async fn delete(&self, name: &str) -> Result<bool, StoreError>;

    /// Appends a batch of updates in one transaction: all or nothing.
    /// Updates of documents that no longer exist are skipped.
    async fn append(&self, batch: &[PendingUpdate]) -> Result<(), StoreError>;

    /// Documents whose log holds at least `min_updates` updates.
    async fn compaction_candidates(&self, min_updates: u32) -> Result<Vec<DocId>, StoreError>;

    /// A document's snapshot and log.
    async fn read_log(&self, doc_id: DocId) -> Result<DocLog, StoreError>;

    /// Replaces the snapshot with `snapshot`, which holds every update up to
    /// row `upto_id`, and deletes those rows, in one transaction.
    async fn write_snapshot(
        &self,
        doc_id: DocId,
        snapshot: &[u8],
        upto_id: i64,
    ) -> Result<(), StoreError>;

    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Closes the connection pool.
    async fn close(&self);
}

/// Opens the store that `url` names, running migrations.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(sqlite::SqliteStore::open(url).await?))
    } else {
        Err(StoreError::Config {
            url: url.to_string(),
            reason: "only sqlite:// is supported by this build so far".into(),
        })
    }
}

pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
