//! What the nodes of a cluster read and write in their shared database
//! beside documents and webhooks: who they are (`cluster_nodes`, beating on
//! the database's clock), and how far each document's log has gone, so a
//! node that missed a relayed update fills the hole from the database.

use async_trait::async_trait;

use super::{DocId, StoreError};

/// A node's number in `cluster_nodes`.
pub type NodeId = u64;

/// A document's log after a point: what a node that has applied every
/// update up to that point lacks.
#[derive(Debug, Default)]
pub struct Tail {
    /// The compacted state, when compaction has folded updates after the
    /// point into it: `(upto_seq, data)`. Applying it is harmless even
    /// where part of it was applied already (merges are idempotent).
    pub snapshot: Option<(u64, Vec<u8>)>,
    /// The updates after the point (or after the snapshot), in order, as
    /// `(seq, data)`.
    pub updates: Vec<(u64, Vec<u8>)>,
    /// The read stopped at its limits: more updates follow.
    pub more: bool,
}

#[async_trait]
pub trait ClusterStore: Send + Sync {
    /// The cluster's identity (one per database), which names its Redis
    /// channels.
    async fn cluster_id(&self) -> Result<String, StoreError>;

    /// Registers this node; returns its number.
    async fn register_node(&self) -> Result<NodeId, StoreError>;

    /// Records that `node` is alive (its row made again if it was removed,
    /// say after the node was paused for a day).
    async fn heartbeat(&self, node: NodeId) -> Result<(), StoreError>;

    /// The nodes whose last beat is at most `timeout` old, by the
    /// database's clock.
    async fn live_nodes(&self, timeout: std::time::Duration) -> Result<Vec<NodeId>, StoreError>;

    /// A node that stops gracefully leaves at once.
    async fn leave(&self, node: NodeId) -> Result<(), StoreError>;

    /// The number of the last update of each document that exists among
    /// `docs` (a missing one was deleted).
    async fn last_seqs(&self, docs: &[DocId]) -> Result<Vec<(DocId, u64)>, StoreError>;

    /// A document's log after `after`, at most `max_rows` rows and about
    /// `max_bytes` bytes; `None` when the document does not exist.
    async fn read_tail(
        &self,
        doc_id: DocId,
        after: u64,
        max_rows: usize,
        max_bytes: usize,
    ) -> Result<Option<Tail>, StoreError>;
}
