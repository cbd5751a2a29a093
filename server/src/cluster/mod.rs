//! Several nodes serving the same documents (SPEC §7): PostgreSQL holds the
//! one ordered log of each document; Redis carries what nodes tell each
//! other, and stores nothing.
//!
//! - **Updates cross nodes only once committed.** The persister hands each
//!   committed batch here with the numbers the log gave it; the publisher
//!   sends it on the document's channel, and tells the local room which of
//!   its own updates got which numbers. An update relayed before it is
//!   stored could end up in every node's memory and in nobody's log.
//! - **Redis may lose anything.** Each room knows which numbers it has
//!   applied (`SeqSet`); a hole is filled from the database
//!   (`read_tail`), and every second every resident document's last number
//!   is compared with the database's (`last_seqs`), which also finds
//!   documents deleted meanwhile. So a dropped message, a Redis restart or
//!   a node cut off from Redis only slows delivery; when the subscription
//!   comes back, every resident document is caught up at once.
//! - **Awareness and connection counts** travel on the document's channel
//!   too: a room that opens asks (`Query`), the others answer. Nodes beat
//!   in `cluster_nodes` on the database's clock; when one stops beating,
//!   every room drops the awareness clients and the count it had
//!   announced.
//!
//! Nothing here ever makes a room wait: rooms hand messages over with
//! `try_send`, and the tasks here talk to Redis and the database.

pub mod frame;
mod redis_bus;
pub mod seqs;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::frame::{Body, Frame};
use crate::room::task::RoomCmd;
use crate::store::cluster::{ClusterStore, NodeId};
use crate::store::{AppendedRange, DocId, PendingUpdate};

/// How often a node beats, and how long without a beat makes it dead.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
const NODE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often every resident document is compared with the database.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// How long a hole may stay open before it is filled from the database: a
/// room learns the numbers of its own updates a moment after they are
/// committed, and another node's may still be on its way through Redis.
pub const FILL_DELAY: Duration = Duration::from_millis(30);

/// A fill reads at most this much of a log at once.
const FILL_ROWS: usize = 1_000;
const FILL_BYTES: usize = 4 << 20;

/// Updates larger than this together are not carried through Redis: a
/// doorbell tells the others to read them from the database.
const MAX_CARRIED_BYTES: usize = 256 << 10;

/// Frames waiting for the publisher. When it falls behind (Redis slow or
/// gone), more are dropped: other nodes catch up from the database.
const PUBLISH_QUEUE: usize = 8192;

/// A remote node's awareness clients are owned, in a room's awareness, by
/// this bit with the node's number: connection numbers never have it.
pub const REMOTE_OWNER: u64 = 1 << 63;

/// What the cluster tells a room (`RoomCmd::Cluster`).
#[derive(Debug)]
pub enum Inbound {
    /// Committed updates from another node or from the database, each with
    /// its number.
    Updates(Vec<(u64, Bytes)>),
    /// The compacted state up to `upto`, when the room is behind it.
    Snapshot {
        upto: u64,
        data: Bytes,
    },
    /// The room's own updates `first ..= last` were committed as these
    /// numbers.
    Committed {
        first: u64,
        last: u64,
    },
    Awareness {
        from: NodeId,
        payload: Bytes,
    },
    /// Another node opened the document.
    Query {
        from: NodeId,
    },
    Clients {
        from: NodeId,
        count: u32,
    },
    /// The document was deleted through another node.
    Deleted,
    /// A node stopped or died.
    NodeGone(NodeId),
    /// Redis came back after an outage: announce awareness and counts again.
    Reconnected,
}

/// What a resident room shares with the cluster.
struct Resident {
    /// The room's instance (a reload or a new room replaces it).
    room: u64,
    tx: mpsc::WeakSender<Box<RoomCmd>>,
    /// The room's watermark: every update numbered up to it is applied.
    applied: Arc<AtomicU64>,
}

/// How a room attaches itself.
pub struct Attach {
    pub room: u64,
    pub tx: mpsc::WeakSender<Box<RoomCmd>>,
    pub applied: Arc<AtomicU64>,
}

/// What the publisher sends.
enum Outgoing {
    /// A committed batch of one document: its local room learns the
    /// numbers, other nodes get the updates.
    Committed {
        doc_id: DocId,
        first: u64,
        updates: Vec<Bytes>,
    },
    Frame {
        doc_id: DocId,
        body: Body,
    },
    /// On the cluster's own channel.
    Cluster(Body),
}

pub struct Cluster {
    node: NodeId,
    /// `{prefix}tandem:{cluster id}:`
    namespace: String,
    store: Arc<dyn ClusterStore>,
    resident: Mutex<HashMap<DocId, Resident>>,
    publish: mpsc::Sender<Outgoing>,
    /// Tells the subscriber that the resident set changed.
    subscriptions: mpsc::UnboundedSender<()>,
    fills: Mutex<HashSet<DocId>>,
    live: Mutex<HashSet<NodeId>>,
    redis_up: AtomicBool,
    /// The publisher's connection, while it has one, for reads.
    redis: Mutex<Option<redis::aio::MultiplexedConnection>>,
    client: redis::Client,
    metrics: crate::metrics::Metrics,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.node).finish()
    }
}

/// The tasks a cluster runs, to start once the rest of the server is up.
pub struct ClusterTasks {
    publish: mpsc::Receiver<Outgoing>,
    subscriptions: mpsc::UnboundedReceiver<()>,
    redis: Option<redis::Client>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("TANDEM_REDIS_URL needs a PostgreSQL database (TANDEM_DATABASE_URL=postgres://…): nodes share their documents through it")]
    NeedsPostgres,
    #[error("TANDEM_REDIS_URL is not a Redis URL ({url}): {reason}")]
    Url { url: String, reason: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl Cluster {
    /// Joins the cluster of `store`'s database: registers this node.
    /// Redis need not be reachable now; the node serves through the
    /// database alone until it is.
    pub async fn join(
        store: &dyn crate::store::Store,
        redis_url: &str,
        prefix: &str,
        metrics: crate::metrics::Metrics,
    ) -> Result<(Arc<Cluster>, ClusterTasks), ClusterError> {
        let cluster_store = store.cluster().ok_or(ClusterError::NeedsPostgres)?;
        let redis = redis::Client::open(redis_url).map_err(|e| ClusterError::Url {
            url: crate::store::redact_url(redis_url),
            reason: e.to_string(),
        })?;
        let id = cluster_store.cluster_id().await?;
        let node = cluster_store.register_node().await?;
        let live = cluster_store.live_nodes(NODE_TIMEOUT).await?;
        let (publish, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (subscriptions, subscriptions_rx) = mpsc::unbounded_channel();
        tracing::info!(node, cluster = %id, "joined the cluster");
        let cluster = Arc::new(Cluster {
            node,
            namespace: format!("{prefix}tandem:{id}:"),
            store: cluster_store,
            resident: Mutex::new(HashMap::new()),
            publish,
            subscriptions,
            fills: Mutex::new(HashSet::new()),
            live: Mutex::new(live.into_iter().collect()),
            redis_up: AtomicBool::new(false),
            redis: Mutex::new(None),
            client: redis.clone(),
            metrics,
        });
        Ok((
            cluster,
            ClusterTasks {
                publish: publish_rx,
                subscriptions: subscriptions_rx,
                redis: Some(redis),
            },
        ))
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Starts the publisher, the subscriber, the heartbeat and the
    /// database check. They end with `stop`.
    pub fn start(
        self: &Arc<Self>,
        tasks: ClusterTasks,
        tracker: &TaskTracker,
        runtime: &tokio::runtime::Handle,
        stop: CancellationToken,
    ) {
        let ClusterTasks {
            publish,
            subscriptions,
            redis,
        } = tasks;
        if let Some(client) = redis {
            tracker.spawn_on(
                redis_bus::publish_loop(Arc::clone(self), client.clone(), publish, stop.clone()),
                runtime,
            );
            tracker.spawn_on(
                redis_bus::subscribe_loop(Arc::clone(self), client, subscriptions, stop.clone()),
                runtime,
            );
        }
        tracker.spawn_on(Arc::clone(self).heartbeat_loop(stop.clone()), runtime);
        tracker.spawn_on(Arc::clone(self).check_loop(stop), runtime);
    }

    /// A graceful stop: the others drop this node's awareness and counts at
    /// once rather than after its beats lapse.
    pub async fn leave(&self) {
        let _ = self.publish.try_send(Outgoing::Cluster(Body::Leaving));
        if let Err(e) = self.store.leave(self.node).await {
            tracing::debug!(error = %e, "could not record leaving the cluster");
        }
    }

    fn channel(&self, doc_id: DocId) -> String {
        format!("{}d:{doc_id}", self.namespace)
    }

    fn cluster_channel(&self) -> String {
        format!("{}c", self.namespace)
    }

    fn clients_key(&self, doc_id: DocId) -> String {
        format!("{}clients:{doc_id}", self.namespace)
    }

    fn resident(&self) -> std::sync::MutexGuard<'_, HashMap<DocId, Resident>> {
        self.resident.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A room holds `doc_id` now: messages for it reach the room. It asks
    /// the others for their awareness and counts, and is caught up from
    /// the database shortly after (anything committed between its load and
    /// its subscription).
    pub fn attach(self: &Arc<Self>, doc_id: DocId, attach: Attach) {
        self.resident().insert(
            doc_id,
            Resident {
                room: attach.room,
                tx: attach.tx,
                applied: attach.applied,
            },
        );
        let _ = self.subscriptions.send(());
        self.send(doc_id, Body::Query);
        self.fill(doc_id, Duration::from_millis(200));
    }

    /// The room `room` no longer holds `doc_id`.
    pub fn detach(&self, doc_id: DocId, room: u64) {
        let mut resident = self.resident();
        if resident.get(&doc_id).is_some_and(|r| r.room == room) {
            resident.remove(&doc_id);
            drop(resident);
            let _ = self.subscriptions.send(());
        }
    }

    /// Sends `body` on the document's channel; dropped when the publisher
    /// is behind (what matters is caught up from the database).
    pub fn send(&self, doc_id: DocId, body: Body) {
        if self
            .publish
            .try_send(Outgoing::Frame { doc_id, body })
            .is_err()
        {
            self.metrics.cluster_dropped.increment(1);
        }
    }

    /// The persister committed `batch`, numbered as `appended` says. Called
    /// on the persister's thread: it only queues.
    pub fn committed(&self, batch: &[PendingUpdate], appended: &[AppendedRange]) {
        // One pass over the batch, however many documents it holds.
        let mut by_doc: HashMap<DocId, Vec<Bytes>> = HashMap::with_capacity(appended.len());
        for u in batch {
            by_doc.entry(u.doc_id).or_default().push(u.data.clone());
        }
        for range in appended {
            let Some(updates) = by_doc.remove(&range.doc_id) else {
                continue;
            };
            // The writer numbers exactly these; should the database say
            // otherwise, the others catch up from it anyway.
            let first = (range.last_seq + 1).checked_sub(u64::from(range.count));
            let (Some(first), true) = (
                first,
                updates.len() == range.count as usize && range.count > 0,
            ) else {
                continue;
            };
            let queued = self.publish.try_send(Outgoing::Committed {
                doc_id: range.doc_id,
                first,
                updates,
            });
            if queued.is_err() {
                self.metrics.cluster_dropped.increment(1);
            }
        }
    }

    /// Hands `inbound` to the room holding `doc_id`, if any; false when it
    /// could not take it now (its mailbox is full).
    fn deliver(&self, doc_id: DocId, inbound: Inbound) -> bool {
        let tx = match self.resident().get(&doc_id) {
            Some(r) => r.tx.clone(),
            None => return true,
        };
        let Some(tx) = tx.upgrade() else {
            return true;
        };
        match tx.try_send(Box::new(RoomCmd::Cluster(inbound))) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => true,
            Err(mpsc::error::TrySendError::Full(_)) => false,
        }
    }

    /// A frame from another node, on `doc_id`'s channel (`None`: the
    /// cluster's channel).
    fn received(self: &Arc<Self>, doc_id: Option<DocId>, frame: Frame) {
        if frame.node == self.node {
            return;
        }
        let from = frame.node;
        let Some(doc_id) = doc_id else {
            if frame.body == Body::Leaving {
                self.node_gone(from);
            }
            return;
        };
        if !self.resident().contains_key(&doc_id) {
            return;
        }
        match frame.body {
            Body::Updates { first_seq, updates } => {
                let numbered = (first_seq..).zip(updates).collect();
                if !self.deliver(doc_id, Inbound::Updates(numbered)) {
                    self.fill(doc_id, Duration::ZERO);
                }
            }
            Body::Doorbell { .. } => self.fill(doc_id, Duration::ZERO),
            Body::Awareness(payload) => {
                self.note_alive(from);
                self.deliver(doc_id, Inbound::Awareness { from, payload });
            }
            Body::Query => {
                self.note_alive(from);
                self.deliver(doc_id, Inbound::Query { from });
            }
            Body::Clients(count) => {
                self.note_alive(from);
                self.deliver(doc_id, Inbound::Clients { from, count });
            }
            Body::Deleted => {
                if !self.deliver(doc_id, Inbound::Deleted) {
                    // The database check finds it gone within a second.
                    tracing::debug!(doc_id, "deletion not delivered: the room is busy");
                }
            }
            Body::Leaving => {}
        }
    }

    fn note_alive(&self, node: NodeId) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node);
    }

    /// Every resident room drops what `node` had announced.
    fn node_gone(self: &Arc<Self>, node: NodeId) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&node);
        tracing::info!(node, "a node left the cluster");
        self.to_every_room(move || Inbound::NodeGone(node));
    }

    /// Sends a message to every resident room, waiting for room in busy
    /// mailboxes (from a task of its own: no caller waits).
    fn to_every_room(self: &Arc<Self>, make: impl Fn() -> Inbound + Send + 'static) {
        let rooms: Vec<mpsc::WeakSender<Box<RoomCmd>>> =
            self.resident().values().map(|r| r.tx.clone()).collect();
        tokio::spawn(async move {
            for tx in rooms {
                if let Some(tx) = tx.upgrade() {
                    let cmd = Box::new(RoomCmd::Cluster(make()));
                    let _ = tokio::time::timeout(Duration::from_secs(5), tx.send(cmd)).await;
                }
            }
        });
    }

    /// Redis is reachable again: catch every resident document up from the
    /// database, and let rooms announce themselves again.
    fn reconnected(self: &Arc<Self>) {
        let docs: Vec<DocId> = self.resident().keys().copied().collect();
        for doc_id in docs {
            self.fill(doc_id, Duration::ZERO);
        }
        self.to_every_room(|| Inbound::Reconnected);
    }

    /// Fills `doc_id`'s room from the database after `delay`, unless a
    /// fill is under way already.
    pub fn fill(self: &Arc<Self>, doc_id: DocId, delay: Duration) {
        if !self
            .fills
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(doc_id)
        {
            return;
        }
        let cluster = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            cluster.fill_now(doc_id).await;
            cluster
                .fills
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&doc_id);
        });
    }

    async fn fill_now(&self, doc_id: DocId) {
        loop {
            let (tx, applied) = match self.resident().get(&doc_id) {
                Some(r) => (r.tx.clone(), Arc::clone(&r.applied)),
                None => return,
            };
            let Some(tx) = tx.upgrade() else { return };
            let after = applied.load(Ordering::Acquire);
            let tail = match self
                .store
                .read_tail(doc_id, after, FILL_ROWS, FILL_BYTES)
                .await
            {
                Ok(Some(tail)) => tail,
                Ok(None) => {
                    let _ = tx.send(Box::new(RoomCmd::Cluster(Inbound::Deleted))).await;
                    return;
                }
                Err(e) => {
                    // The next check tries again.
                    tracing::warn!(doc_id, error = %e, "catching up from the database failed");
                    return;
                }
            };
            let more = tail.more;
            let last = tail.updates.last().map(|(seq, _)| *seq);
            if let Some((upto, data)) = tail.snapshot {
                self.metrics.cluster_filled.increment(1);
                let cmd = Inbound::Snapshot {
                    upto,
                    data: Bytes::from(data),
                };
                if tx.send(Box::new(RoomCmd::Cluster(cmd))).await.is_err() {
                    return;
                }
            }
            if !tail.updates.is_empty() {
                self.metrics
                    .cluster_filled
                    .increment(tail.updates.len() as u64);
                let updates = tail
                    .updates
                    .into_iter()
                    .map(|(seq, data)| (seq, Bytes::from(data)))
                    .collect();
                if tx
                    .send(Box::new(RoomCmd::Cluster(Inbound::Updates(updates))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if !more || last.is_none() {
                return;
            }
            // Wait until the room has applied this page before reading
            // the next one from where it stands.
            let target = last.unwrap_or(0);
            for _ in 0..100 {
                if applied.load(Ordering::Acquire) >= target {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    /// Beats every `HEARTBEAT_EVERY`, and drops nodes whose beats lapsed.
    async fn heartbeat_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval(HEARTBEAT_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.cancelled() => return,
            }
            if let Err(e) = self.store.heartbeat(self.node).await {
                tracing::warn!(error = %e, "could not beat in the database");
                continue;
            }
            let live = match self.store.live_nodes(NODE_TIMEOUT).await {
                Ok(live) => live.into_iter().collect::<HashSet<NodeId>>(),
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the cluster's nodes");
                    continue;
                }
            };
            let gone: Vec<NodeId> = {
                let mut known = self.live.lock().unwrap_or_else(|p| p.into_inner());
                let gone = known.difference(&live).copied().collect();
                *known = live;
                gone
            };
            for node in gone {
                if node != self.node {
                    self.node_gone(node);
                }
            }
        }
    }

    /// Every `CHECK_EVERY`, compares each resident document with the
    /// database: a room behind it is filled, one whose document is gone
    /// is told.
    async fn check_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval(CHECK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.cancelled() => return,
            }
            let docs: Vec<(DocId, u64)> = self
                .resident()
                .iter()
                .map(|(&id, r)| (id, r.applied.load(Ordering::Acquire)))
                .collect();
            if docs.is_empty() {
                continue;
            }
            let ids: Vec<DocId> = docs.iter().map(|(id, _)| *id).collect();
            let stored = match self.store.last_seqs(&ids).await {
                Ok(stored) => stored.into_iter().collect::<HashMap<DocId, u64>>(),
                Err(e) => {
                    tracing::warn!(error = %e, "could not compare documents with the database");
                    continue;
                }
            };
            for (doc_id, applied) in docs {
                match stored.get(&doc_id) {
                    None => {
                        self.deliver(doc_id, Inbound::Deleted);
                    }
                    Some(&last) if last > applied => {
                        self.metrics.cluster_behind.increment(1);
                        self.fill(doc_id, Duration::ZERO);
                    }
                    Some(_) => {}
                }
            }
        }
    }

    /// Whether the node is subscribed to Redis right now.
    pub fn redis_up(&self) -> bool {
        self.redis_up.load(Ordering::Relaxed)
    }

    /// Connections to each of `docs` on the other live nodes, as they
    /// announced them (through Redis; 0 where it cannot tell in time).
    pub async fn clients_elsewhere(&self, docs: &[DocId]) -> Vec<usize> {
        redis_bus::clients_elsewhere(self, docs).await
    }
}
