//! `ClusterStore` on PostgreSQL. Times are the database's (`now()`), never
//! a node's: nodes' clocks may disagree, and a node judged by its own
//! clock could think itself alive, or another dead, wrongly.

use async_trait::async_trait;
use futures_util::TryStreamExt;
use sqlx::postgres::PgPool;

use super::super::cluster::{ClusterStore, NodeId, Tail};
use super::super::{DocId, StoreError};
use super::READ_SNAPSHOT;

pub struct PgCluster {
    pool: PgPool,
}

impl PgCluster {
    pub fn new(pool: PgPool) -> Self {
        PgCluster { pool }
    }
}

/// A number from the database, which never stores a negative one here.
fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl ClusterStore for PgCluster {
    async fn cluster_id(&self) -> Result<String, StoreError> {
        Ok(sqlx::query_scalar("SELECT id FROM cluster_identity")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn register_node(&self) -> Result<NodeId, StoreError> {
        let id: i64 = sqlx::query_scalar("INSERT INTO cluster_nodes DEFAULT VALUES RETURNING id")
            .fetch_one(&self.pool)
            .await?;
        Ok(unsigned(id))
    }

    async fn heartbeat(&self, node: NodeId) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cluster_nodes (id) OVERRIDING SYSTEM VALUE VALUES ($1)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
        )
        .bind(signed(node))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn live_nodes(&self, timeout: std::time::Duration) -> Result<Vec<NodeId>, StoreError> {
        let millis = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM cluster_nodes
             WHERE heartbeat_at > now() - make_interval(secs => $1::double precision / 1000)",
        )
        .bind(millis)
        .fetch_all(&self.pool)
        .await?;
        // Rows of nodes dead for long are of no more use to anyone.
        sqlx::query("DELETE FROM cluster_nodes WHERE heartbeat_at < now() - interval '1 day'")
            .execute(&self.pool)
            .await?;
        Ok(ids.into_iter().map(unsigned).collect())
    }

    async fn leave(&self, node: NodeId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM cluster_nodes WHERE id = $1")
            .bind(signed(node))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn last_seqs(&self, docs: &[DocId]) -> Result<Vec<(DocId, u64)>, StoreError> {
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT id, last_seq FROM documents WHERE id = ANY($1)")
                .bind(docs)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(id, seq)| (id, unsigned(seq)))
            .collect())
    }

    async fn read_tail(
        &self,
        doc_id: DocId,
        after: u64,
        max_rows: usize,
        max_bytes: usize,
    ) -> Result<Option<Tail>, StoreError> {
        // One snapshot: a compaction committing meanwhile cannot delete
        // rows between reading the snapshot and reading the log.
        let mut tx = self.pool.begin_with(READ_SNAPSHOT).await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM documents WHERE id = $1")
            .bind(doc_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            tx.commit().await?;
            return Ok(None);
        }
        let mut tail = Tail::default();
        let mut from = after;
        let upto: Option<i64> =
            sqlx::query_scalar("SELECT upto_seq FROM doc_snapshots WHERE doc_id = $1")
                .bind(doc_id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(upto) = upto.map(unsigned).filter(|&upto| upto > after) {
            // Rows after `after` were folded and deleted: they are only in
            // the snapshot now.
            let data: Vec<u8> =
                sqlx::query_scalar("SELECT data FROM doc_snapshots WHERE doc_id = $1")
                    .bind(doc_id)
                    .fetch_one(&mut *tx)
                    .await?;
            tail.snapshot = Some((upto, data));
            from = upto;
        }
        let limit = i64::try_from(max_rows.saturating_add(1)).unwrap_or(i64::MAX);
        let mut bytes = 0usize;
        {
            let mut rows = sqlx::query_as::<_, (i64, Vec<u8>)>(
                "SELECT seq, data FROM doc_updates WHERE doc_id = $1 AND seq > $2
                 ORDER BY seq LIMIT $3",
            )
            .bind(doc_id)
            .bind(signed(from))
            .bind(limit)
            .fetch(&mut *tx);
            while let Some((seq, data)) = rows.try_next().await? {
                if tail.updates.len() >= max_rows
                    || (!tail.updates.is_empty() && bytes >= max_bytes)
                {
                    tail.more = true;
                    break;
                }
                bytes += data.len();
                tail.updates.push((unsigned(seq), data));
            }
        }
        tx.commit().await?;
        Ok(Some(tail))
    }
}
