//! A stored document (snapshot and log) into a `DocState`, a page at a time.
//!
//! The store streams pages out of one read transaction into a bounded
//! channel; a blocking thread applies each as it arrives. So the memory a
//! load holds beyond the document is at most three pages (one being read,
//! one waiting, one being applied), however long the log has grown, and
//! the async threads never apply updates themselves.

use tandem_crdt::{ApplyError, DocLoader, DocState, LoadReport};

use crate::store::{DocId, LogPage, PageLimits, Store, StoreError};

/// Pages of at most 1,000 rows or 4 MiB.
const PAGE: PageLimits = PageLimits {
    rows: 1_000,
    bytes: 4 << 20,
};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading the document failed: {0}")]
    Store(#[from] StoreError),
    #[error("applying the stored updates failed: {0}")]
    Apply(#[from] ApplyError),
    #[error("the loading thread failed: {0}")]
    Thread(#[from] tokio::task::JoinError),
}

/// Builds document `doc_id` from storage. Stored rows that do not decode
/// are skipped and counted in the report; a read that fails part way fails
/// the load (a partial document is never returned). The number is how far
/// the log was read (see `Store::read_log_pages`).
pub async fn load_stored(
    store: &dyn Store,
    doc_id: DocId,
) -> Result<(DocState, LoadReport, u64), LoadError> {
    let (pages_tx, mut pages) = tokio::sync::mpsc::channel::<LogPage>(1);
    let apply = tokio::task::spawn_blocking(move || {
        let mut loader = DocLoader::new();
        while let Some(page) = pages.blocking_recv() {
            for row in &page {
                loader.apply(row)?;
            }
        }
        Ok::<_, ApplyError>(loader.finish())
    });
    let read = store.read_log_pages(doc_id, PAGE, pages_tx).await;
    let applied = apply.await?;
    let seq = read?;
    let (state, report) = applied?;
    Ok((state, report, seq))
}
