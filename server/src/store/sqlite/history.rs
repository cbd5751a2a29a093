//! History and versions on SQLite (SPEC §9): the versions table, the
//! history kept beside the snapshot, and the window of the next automatic
//! version in `doc_changes`. Positions in the log are `doc_updates` row ids,
//! which follow the order updates were accepted in within a document.

use futures_util::TryStreamExt;
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use super::super::{
    DocId, DocLog, HistoryFold, HistoryLog, MergeLinks, NewVersion, StoreError, VersionFilter,
    VersionId, VersionKind, VersionRow,
};

const VERSION_COLUMNS: &str =
    "id, doc_id, kind, name, created_at, created_by, authors, upto, snapshot, restored_from";

/// A stored row, read as hostile: authors that are not a JSON array of
/// strings read as none.
fn version(row: &sqlx::sqlite::SqliteRow) -> Result<VersionRow, StoreError> {
    let kind: String = row.try_get(2)?;
    let authors: String = row.try_get(6)?;
    Ok(VersionRow {
        id: row.try_get(0)?,
        doc_id: row.try_get(1)?,
        kind: VersionKind::parse(&kind),
        name: row.try_get(3)?,
        created_at: row.try_get(4)?,
        created_by: row.try_get(5)?,
        authors: serde_json::from_str(&authors).unwrap_or_default(),
        upto: row.try_get(7)?,
        snapshot: row.try_get(8)?,
        restored_from: row.try_get(9)?,
    })
}

/// The last update a document's stored state holds: its newest logged row,
/// or what its snapshot folded, or 0.
async fn position(tx: &mut Transaction<'_, Sqlite>, doc_id: DocId) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE((SELECT MAX(id) FROM doc_updates WHERE doc_id = $1),
                         (SELECT upto_id FROM doc_snapshots WHERE doc_id = $1), 0)",
    )
    .bind(doc_id)
    .fetch_one(&mut **tx)
    .await?)
}

/// Makes a version in `tx` (see `Store::create_version`).
pub(super) async fn create_version(
    tx: &mut Transaction<'_, Sqlite>,
    doc_id: DocId,
    new: &NewVersion,
    now: i64,
) -> Result<Option<VersionRow>, StoreError> {
    let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM documents WHERE id = $1")
        .bind(doc_id)
        .fetch_optional(&mut **tx)
        .await?;
    if exists.is_none() {
        return Ok(None);
    }
    let upto = position(tx, doc_id).await?;
    let mut authors: Vec<String> = sqlx::query_scalar(
        "SELECT user FROM doc_change_users WHERE doc_id = $1 AND for_history = 1",
    )
    .bind(doc_id)
    .fetch_all(&mut **tx)
    .await?;
    authors.extend(new.created_by.iter().cloned());
    authors.sort();
    authors.dedup();
    let authors_json = serde_json::to_string(&authors).unwrap_or_else(|_| "[]".into());
    let id: VersionId = sqlx::query_scalar(
        "INSERT INTO doc_versions (doc_id, kind, name, created_at, created_by, authors, upto, restored_from)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(doc_id)
    .bind(new.kind.as_str())
    .bind(&new.name)
    .bind(now)
    .bind(&new.created_by)
    .bind(&authors_json)
    .bind(upto)
    .bind(new.restored_from)
    .fetch_one(&mut **tx)
    .await?;
    // The next automatic version holds what comes after this one.
    sqlx::query("UPDATE doc_change_users SET for_history = 0 WHERE doc_id = $1")
        .bind(doc_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE doc_changes SET history_since = NULL WHERE doc_id = $1")
        .bind(doc_id)
        .execute(&mut **tx)
        .await?;
    forget_settled_changes(tx, doc_id).await?;
    Ok(Some(VersionRow {
        id,
        doc_id,
        kind: new.kind,
        name: new.name.clone(),
        created_at: now,
        created_by: new.created_by.clone(),
        authors,
        upto,
        snapshot: None,
        restored_from: new.restored_from,
    }))
}

/// Drops what neither the next report nor the next automatic version
/// still needs.
pub(super) async fn forget_settled_changes(
    tx: &mut Transaction<'_, Sqlite>,
    doc_id: DocId,
) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM doc_change_users WHERE doc_id = $1 AND for_report = 0 AND for_history = 0",
    )
    .bind(doc_id)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "DELETE FROM doc_changes WHERE doc_id = $1 AND updates = 0 AND history_since IS NULL",
    )
    .bind(doc_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Adds to a compaction step's read (in its transaction) what history
/// needs; `last` is the last row read.
pub(super) async fn read_for_fold(
    tx: &mut Transaction<'_, Sqlite>,
    doc_id: DocId,
    log: &DocLog,
) -> Result<HistoryLog, StoreError> {
    let mut history = read_base(tx, doc_id).await?;
    let (first, last) = match (log.updates.first(), log.updates.last()) {
        (Some((first, _)), Some((last, _))) => (*first, *last),
        _ => return Ok(history),
    };
    history.users = sqlx::query_scalar(
        "SELECT user FROM doc_updates WHERE doc_id = $1 AND id BETWEEN $2 AND $3 ORDER BY id",
    )
    .bind(doc_id)
    .bind(first)
    .bind(last)
    .fetch_all(&mut **tx)
    .await?;
    history.unsnapshotted = sqlx::query_as(
        "SELECT id, upto FROM doc_versions
         WHERE doc_id = $1 AND snapshot IS NULL AND upto <= $2 ORDER BY upto, id",
    )
    .bind(doc_id)
    .bind(last)
    .fetch_all(&mut **tx)
    .await?;
    history.links = read_links(tx, doc_id, i64::MAX).await?;
    Ok(history)
}

/// The snapshot links of versions up to `upto`, by `(upto, id)`.
async fn read_links(
    tx: &mut Transaction<'_, Sqlite>,
    doc_id: DocId,
    upto: i64,
) -> Result<Vec<(VersionId, i64, Vec<u8>)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, upto, snapshot FROM doc_versions
         WHERE doc_id = $1 AND snapshot IS NOT NULL AND upto <= $2 ORDER BY upto, id",
    )
    .bind(doc_id)
    .bind(upto)
    .fetch_all(&mut **tx)
    .await?)
}

/// Deletes version `id` in `tx`, merging its link into the next one's.
async fn remove_version(
    tx: &mut Transaction<'_, Sqlite>,
    doc_id: Option<DocId>,
    id: VersionId,
    merge: MergeLinks<'_>,
) -> Result<bool, StoreError> {
    let row: Option<(DocId, i64, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT doc_id, upto, snapshot FROM doc_versions WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
    let Some((doc, upto, link)) = row.filter(|(d, _, _)| doc_id.is_none_or(|want| want == *d))
    else {
        return Ok(false);
    };
    if let Some(link) = link {
        let next: Option<(VersionId, Vec<u8>)> = sqlx::query_as(
            "SELECT id, snapshot FROM doc_versions
             WHERE doc_id = $1 AND snapshot IS NOT NULL AND (upto > $2 OR (upto = $2 AND id > $3))
             ORDER BY upto, id LIMIT 1",
        )
        .bind(doc)
        .bind(upto)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some((next_id, next_link)) = next {
            match merge(&link, &next_link) {
                Some(merged) => {
                    sqlx::query("UPDATE doc_versions SET snapshot = $2 WHERE id = $1")
                        .bind(next_id)
                        .bind(merged)
                        .execute(&mut **tx)
                        .await?;
                }
                None => tracing::warn!(
                    version = id,
                    "a version's snapshot does not decode; the next keeps its own"
                ),
            }
        }
    }
    sqlx::query("DELETE FROM doc_versions WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(true)
}

async fn read_base(
    tx: &mut Transaction<'_, Sqlite>,
    doc_id: DocId,
) -> Result<HistoryLog, StoreError> {
    let row =
        sqlx::query("SELECT upto_id, history, attribution FROM doc_snapshots WHERE doc_id = $1")
            .bind(doc_id)
            .fetch_optional(&mut **tx)
            .await?;
    let mut history = HistoryLog::default();
    if let Some(row) = row {
        history.snapshot_upto = row.try_get(0)?;
        history.base = row.try_get(1)?;
        history.attribution = row.try_get(2)?;
    }
    Ok(history)
}

/// Writes a compaction step's history in its transaction, after the
/// snapshot row was written.
pub(super) async fn write_fold(
    tx: &mut Transaction<'_, Sqlite>,
    doc_id: DocId,
    upto_id: i64,
    history: Option<&HistoryFold>,
) -> Result<(), StoreError> {
    match history {
        Some(h) => {
            sqlx::query(
                "UPDATE doc_snapshots SET history = $2, attribution = $3 WHERE doc_id = $1",
            )
            .bind(doc_id)
            .bind(&h.base)
            .bind(&h.attribution)
            .execute(&mut **tx)
            .await?;
            for (id, snapshot) in &h.snapshots {
                sqlx::query("UPDATE doc_versions SET snapshot = $3 WHERE id = $1 AND doc_id = $2")
                    .bind(id)
                    .bind(doc_id)
                    .bind(snapshot)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        None => {
            sqlx::query(
                "UPDATE doc_snapshots SET history = NULL, attribution = NULL WHERE doc_id = $1",
            )
            .bind(doc_id)
            .execute(&mut **tx)
            .await?;
        }
    }
    let behind: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM doc_versions WHERE doc_id = $1 AND snapshot IS NULL AND upto < $2",
    )
    .bind(doc_id)
    .bind(upto_id)
    .fetch_one(&mut **tx)
    .await?;
    if behind > 0 && history.is_some() {
        return Err(StoreError::VersionRace);
    }
    Ok(())
}

pub(super) async fn read_history(
    pool: &SqlitePool,
    doc_id: DocId,
    upto: Option<i64>,
) -> Result<DocLog, StoreError> {
    let mut tx = pool.begin().await?;
    let snapshot: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT data FROM doc_snapshots WHERE doc_id = $1")
            .bind(doc_id)
            .fetch_optional(&mut *tx)
            .await?;
    let mut history = read_base(&mut tx, doc_id).await?;
    history.links = read_links(&mut tx, doc_id, upto.unwrap_or(i64::MAX)).await?;
    let mut updates = Vec::new();
    {
        let mut rows = sqlx::query_as::<_, (i64, Vec<u8>, Option<String>)>(
            "SELECT id, data, user FROM doc_updates WHERE doc_id = $1 AND id <= $2 ORDER BY id",
        )
        .bind(doc_id)
        .bind(upto.unwrap_or(i64::MAX))
        .fetch(&mut *tx);
        while let Some((id, data, user)) = rows.try_next().await? {
            updates.push((id, data));
            history.users.push(user);
        }
    }
    tx.commit().await?;
    Ok(DocLog {
        snapshot,
        updates,
        history: Some(history),
    })
}

pub(super) async fn list_versions(
    pool: &SqlitePool,
    doc_id: DocId,
    filter: VersionFilter,
) -> Result<Vec<VersionRow>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {} FROM doc_versions
         WHERE doc_id = $1 AND ($2 IS NULL OR kind = $2) AND ($3 IS NULL OR id < $3)
         ORDER BY id DESC LIMIT $4",
        VERSION_COLUMNS.replace("snapshot", "NULL")
    ))
    .bind(doc_id)
    .bind(filter.kind.map(VersionKind::as_str))
    .bind(filter.before)
    .bind(i64::from(filter.limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(version).collect()
}

pub(super) async fn get_version(
    pool: &SqlitePool,
    doc_id: DocId,
    id: VersionId,
) -> Result<Option<VersionRow>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {VERSION_COLUMNS} FROM doc_versions WHERE doc_id = $1 AND id = $2"
    ))
    .bind(doc_id)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(version).transpose()
}

pub(super) async fn oldest_version(
    pool: &SqlitePool,
    doc_id: DocId,
) -> Result<Option<VersionRow>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {VERSION_COLUMNS} FROM doc_versions WHERE doc_id = $1 ORDER BY id LIMIT 1"
    ))
    .bind(doc_id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(version).transpose()
}

pub(super) async fn rename_version(
    pool: &SqlitePool,
    doc_id: DocId,
    id: VersionId,
    name: &str,
) -> Result<Option<VersionRow>, StoreError> {
    let row = sqlx::query(&format!(
        "UPDATE doc_versions SET name = $3,
           kind = CASE WHEN kind = 'auto' THEN 'named' ELSE kind END
         WHERE doc_id = $1 AND id = $2 RETURNING {VERSION_COLUMNS}"
    ))
    .bind(doc_id)
    .bind(id)
    .bind(name)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(version).transpose()
}

pub(super) async fn delete_version(
    pool: &SqlitePool,
    doc_id: DocId,
    id: VersionId,
    merge: MergeLinks<'_>,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let deleted = remove_version(&mut tx, Some(doc_id), id, merge).await?;
    tx.commit().await?;
    Ok(deleted)
}

pub(super) async fn auto_versions_before(
    pool: &SqlitePool,
    before: i64,
    after: (DocId, VersionId),
    limit: u32,
) -> Result<Vec<(DocId, VersionId, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT doc_id, id, created_at FROM doc_versions
         WHERE kind = 'auto' AND created_at < $1 AND (doc_id, id) > ($3, $4)
         ORDER BY doc_id, id LIMIT $2",
    )
    .bind(before)
    .bind(i64::from(limit))
    .bind(after.0)
    .bind(after.1)
    .fetch_all(pool)
    .await?)
}

pub(super) async fn delete_versions(
    pool: &SqlitePool,
    ids: &[VersionId],
    merge: MergeLinks<'_>,
) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    let mut deleted = 0;
    for id in ids {
        if remove_version(&mut tx, None, *id, merge).await? {
            deleted += 1;
        }
    }
    tx.commit().await?;
    Ok(deleted)
}

pub(super) async fn write_history_base(
    pool: &SqlitePool,
    doc_id: DocId,
    upto: i64,
    base: &[u8],
) -> Result<bool, StoreError> {
    let done =
        sqlx::query("UPDATE doc_snapshots SET history = $3 WHERE doc_id = $1 AND upto_id = $2")
            .bind(doc_id)
            .bind(upto)
            .bind(base)
            .execute(pool)
            .await?;
    Ok(done.rows_affected() > 0)
}
