//! The room task: drives one `RoomCore`. It loads the document before it
//! reads its mailbox, hands each command to the core, and carries out the
//! effects that come back: frames to outboxes (one io_uring submission for
//! a crowd), updates to the persister, presence to webhooks, closes, a
//! reload. Peers it cannot write to go back to the core as one `leave`, in
//! a loop rather than a recursion.
//!
//! Faults stay inside the room: each command runs under `catch_unwind`, and
//! a panic closes the room's sockets with 1011 and reloads the document
//! from storage; loading has a deadline; a room that has worked for a
//! whole turn's budget yields, so one busy room cannot starve the others
//! sharing its thread. Nothing here awaits a peer or the database while
//! relaying: only loading, reloading and deleting await the store.

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tandem_crdt::protocol::Incoming;
use tandem_crdt::{Applied, ApplyError, AwarenessLimits, DocState};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;
use yrs::StateVector;

use super::core::{CoreLimits, Effect, Peer, RoomCore, RoomFull};
use super::registry::Registry;
use super::ConnId;
use crate::cluster::frame::Body;
use crate::cluster::seqs::SeqSet;
use crate::cluster::{Attach, Cluster, Inbound, FILL_DELAY, REMOTE_OWNER};
use crate::doc_name::DocName;
use crate::net::outbox::{Fanout, Outbox, Overflow};
use crate::net::CloseCode;
use crate::store::cluster::NodeId;
use crate::store::DocId;
use crate::webhooks::events;

/// How long a room may take to load its document (the persister's flush
/// included) before its joiners and callers are told it is unavailable.
const LOAD_DEADLINE: Duration = Duration::from_secs(20);

/// Awareness is relayed by the tick: what changed during one is merged and
/// sent once. Short enough that a cursor still looks live, long enough that
/// a crowd of moving cursors costs a few frames per tick, not one per move
/// per peer.
pub const AWARENESS_TICK: Duration = Duration::from_millis(30);

/// Bytes of other nodes' updates a room holds while it waits for one before
/// them; past this it lets them go and reads them from the database.
const MAX_WAITING_BYTES: usize = 16 << 20;

/// How long yrs may hold back blocks, with nothing missing from the log
/// before them, before the room rebuilds its document from the database.
const HELD_BACK_LIMIT: Duration = Duration::from_secs(3);

/// How long a room works before it lets the other rooms on its thread run.
/// A frame holds up to a thousand messages, and a sync step 1 costs a diff
/// of the whole document: without a turn, one connection's burst would
/// hold every room of its thread.
const TURN_BUDGET: Duration = Duration::from_millis(2);

pub enum RoomCmd {
    Join {
        conn: ConnId,
        /// The token's `sub`, for attribution and webhooks.
        user: Option<Arc<str>>,
        read_only: bool,
        outbox: Arc<Outbox>,
        reply: oneshot::Sender<Result<(), JoinRefused>>,
    },
    /// A decoded frame. `frame` is kept to relay it unchanged when it holds
    /// a single message. `budget` is the sender's share of bytes in flight,
    /// given back when the room has handled the frame.
    Frame {
        conn: ConnId,
        frame: Bytes,
        messages: Vec<Incoming>,
        budget: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    Leave {
        conn: ConnId,
    },
    /// An update from the HTTP API. Replies with the persister's sequence
    /// number to wait on (`None` when the update was empty).
    ApplyUpdate {
        update: Bytes,
        /// Who wrote it (a token's `sub`), for history's attribution.
        user: Option<Arc<str>>,
        reply: oneshot::Sender<Result<Option<u64>, ApplyError>>,
    },
    /// The document as one update, or the diff against a state vector.
    Encode {
        state_vector: Option<StateVector>,
        reply: oneshot::Sender<Bytes>,
    },
    /// Deletes the document: storage first, then every socket is closed
    /// with 4404 and the room unloads. Replies whether it existed.
    Delete {
        reply: oneshot::Sender<Result<bool, crate::store::StoreError>>,
    },
    /// From the other nodes of the cluster, or the database on their behalf.
    Cluster(crate::cluster::Inbound),
    /// Makes the room panic, to test that the fault stays inside it.
    #[cfg(test)]
    Panic,
    /// Makes the room stop reading its mailbox for a while, as a room
    /// busy with heavy work would.
    #[cfg(test)]
    Stall(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefused {
    /// The room holds `TANDEM_MAX_CONNECTIONS_PER_DOC` connections.
    Full,
    /// The document could not be loaded.
    Unavailable,
    /// The room was opened for the API and the document does not exist:
    /// a joiner tries again with a room that creates it.
    Absent,
}

/// Where a room is in its life, for callers whose reply never came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Loading = 0,
    Ready = 1,
    /// Opened without creating, and the document does not exist.
    Absent = 2,
    Stopped = 3,
}

/// A room's status, shared with its handle.
#[derive(Debug, Default)]
pub struct StatusCell(AtomicU8);

impl StatusCell {
    pub fn get(&self) -> Status {
        match self.0.load(Ordering::Acquire) {
            0 => Status::Loading,
            1 => Status::Ready,
            2 => Status::Absent,
            _ => Status::Stopped,
        }
    }

    fn set(&self, status: Status) {
        self.0.store(status as u8, Ordering::Release);
    }
}

/// Whether a room opened for a command may create its document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// A WebSocket joiner: the first connection creates the document.
    OrCreate,
    /// The API: a document that does not exist stays absent (a racing
    /// call must not bring a deleted document back).
    Existing,
}

pub struct Room {
    name: DocName,
    id: u64,
    open: Open,
    /// Connections in the room, shared with the registry for listings.
    clients: Arc<AtomicUsize>,
    status: Arc<StatusCell>,
    doc_bytes: Arc<AtomicUsize>,
    registry: Arc<Registry>,
    doc_id: DocId,
    core: RoomCore<Arc<Outbox>>,
    /// The effects of the command being handled, kept to reuse the buffer.
    effects: Vec<Effect<Arc<Outbox>>>,
    /// The buffers of a broadcast, kept to reuse them.
    fanout: Fanout,
    /// What the room shares with the rest of the cluster, when there is one.
    cluster: Option<Box<ClusterPart>>,
}

/// A room's part in a cluster: which numbered updates of the log it has
/// applied, and what the other nodes announced.
struct ClusterPart {
    cluster: Arc<Cluster>,
    /// Its own mailbox, for the cluster to reach it.
    tx: mpsc::WeakSender<Box<RoomCmd>>,
    seqs: SeqSet,
    /// Other nodes' updates that came before one they follow in the log,
    /// by number: applied once the hole before them is filled.
    waiting: BTreeMap<u64, Bytes>,
    waiting_bytes: usize,
    /// Since when yrs has held back blocks, if it does.
    held_back_since: Option<Instant>,
    /// `seqs`' watermark, for the cluster's checks.
    applied: Arc<AtomicU64>,
    /// Connections on other nodes, as each announced.
    remote_clients: HashMap<NodeId, u32>,
    /// The local count last announced.
    announced: Option<usize>,
}

impl ClusterPart {
    fn remote_clients(&self) -> usize {
        self.remote_clients.values().map(|&n| n as usize).sum()
    }
}

impl Drop for Room {
    /// However the room ends, the cluster stops bringing it messages, and
    /// the others learn that this node's connections to it are gone.
    fn drop(&mut self) {
        if let Some(part) = &self.cluster {
            if self.doc_id != 0 {
                if part.announced.is_some_and(|n| n > 0) {
                    part.cluster.send(self.doc_id, Body::Clients(0));
                }
                part.cluster.detach(self.doc_id, self.id);
            }
        }
    }
}

/// What the loop does after a command.
enum Next {
    Continue,
    Reload,
    Stop,
}

pub struct RoomArgs {
    /// The room's own mailbox, for the cluster to reach it.
    pub tx: mpsc::WeakSender<Box<RoomCmd>>,
    pub name: DocName,
    pub id: u64,
    pub open: Open,
    pub clients: Arc<AtomicUsize>,
    pub status: Arc<StatusCell>,
    pub doc_bytes: Arc<AtomicUsize>,
    pub registry: Arc<Registry>,
}

pub async fn run(args: RoomArgs, rx: mpsc::Receiver<Box<RoomCmd>>) {
    let span = tracing::info_span!("room", doc = %args.name);
    let limits = core_limits(&args.registry);
    let cluster = args.registry.deps.cluster.clone();
    let room = Room {
        name: args.name,
        id: args.id,
        open: args.open,
        clients: args.clients,
        status: args.status,
        doc_bytes: args.doc_bytes,
        registry: args.registry,
        doc_id: 0,
        core: RoomCore::new(DocState::new(), limits),
        effects: Vec::new(),
        fanout: Fanout::default(),
        cluster: cluster.map(|cluster| {
            Box::new(ClusterPart {
                cluster,
                tx: args.tx,
                seqs: SeqSet::new(0),
                waiting: BTreeMap::new(),
                waiting_bytes: 0,
                held_back_since: None,
                applied: Arc::new(AtomicU64::new(0)),
                remote_clients: HashMap::new(),
                announced: None,
            })
        }),
    };
    room.run(rx).instrument(span).await
}

fn core_limits(registry: &Registry) -> CoreLimits {
    let limits = &registry.deps.limits;
    CoreLimits {
        max_document_bytes: limits.max_document_bytes,
        max_connections_per_doc: limits.max_connections_per_doc,
        awareness: AwarenessLimits::default(),
    }
}

/// Why a load gave no document.
enum LoadFailed {
    Absent,
    Error(String),
}

/// Loads a document: first waits for the persister to write everything it
/// holds, so a room reloaded right after an unload sees every update.
/// While storage fails that wait ends early; the load goes on only if
/// nothing of this document waits to be written.
async fn load(
    registry: &Registry,
    name: &DocName,
    open: Open,
    deadline: tokio::time::Instant,
) -> Result<(DocId, DocState, u64), LoadFailed> {
    let deps = &registry.deps;
    let flushed = deps.persister.flush_by(deadline).await;
    // A write that fails for storage reasons tells the persister, so that
    // `/readyz` says so until a write succeeds again.
    let failed = |e: crate::store::StoreError| {
        if e.is_unavailable() {
            deps.persister.note_failure(&e);
        }
        LoadFailed::Error(e.to_string())
    };
    let doc_id = match open {
        Open::Existing => match deps.store.get(name.as_str()).await {
            Ok(Some(meta)) => meta.id,
            Ok(None) => return Err(LoadFailed::Absent),
            Err(e) => return Err(LoadFailed::Error(e.to_string())),
        },
        Open::OrCreate => {
            let now = crate::store::now_ms();
            let created = deps
                .webhooks
                .wants(events::DOCUMENT_CREATED)
                .then(|| events::document_created(name.as_str(), now, events::Source::WebSocket));
            let found = deps
                .store
                .find_or_create(name.as_str(), now, created.as_ref())
                .await
                .map_err(failed)?;
            if found.created {
                tracing::info!("document created");
                if created.is_some() {
                    deps.webhooks.messages_written();
                }
                return Ok((found.id, DocState::new(), 0));
            }
            found.id
        }
    };
    if let Err(e) = flushed {
        if deps.persister.has_pending(doc_id) {
            return Err(LoadFailed::Error(e.to_string()));
        }
    }
    let (state, report, seq) = super::load::load_stored(deps.store.as_ref(), doc_id)
        .await
        .map_err(|e| LoadFailed::Error(e.to_string()))?;
    if report.skipped > 0 {
        tracing::error!(
            skipped = report.skipped,
            "stored updates that do not decode were skipped"
        );
    }
    tracing::debug!(
        rows = report.applied + report.skipped,
        bytes = state.size_estimate(),
        "document loaded"
    );
    Ok((doc_id, state, seq))
}

impl Room {
    async fn run(mut self, mut rx: mpsc::Receiver<Box<RoomCmd>>) {
        let deadline = tokio::time::Instant::now() + LOAD_DEADLINE;
        // Boxed, as below: the task holds a future's state for as long as
        // the room lives, and loading's is large and needed once.
        let loaded = tokio::time::timeout_at(
            deadline,
            Box::pin(load(&self.registry, &self.name, self.open, deadline)),
        )
        .await
        .unwrap_or_else(|_| Err(LoadFailed::Error("loading took too long".into())));
        match loaded {
            Ok((doc_id, doc, seq)) => {
                self.doc_id = doc_id;
                self.doc_bytes.store(doc.size_estimate(), Ordering::Relaxed);
                self.core.replace_doc(doc);
                self.loaded_up_to(seq);
                if let Some(part) = &self.cluster {
                    self.core.set_clustered(true);
                    part.cluster.attach(
                        doc_id,
                        Attach {
                            room: self.id,
                            tx: part.tx.clone(),
                            applied: Arc::clone(&part.applied),
                        },
                    );
                }
                self.status.set(Status::Ready);
            }
            Err(failed) => {
                let refusal = match failed {
                    LoadFailed::Absent => {
                        self.status.set(Status::Absent);
                        JoinRefused::Absent
                    }
                    LoadFailed::Error(e) => {
                        tracing::error!(error = %e, "loading the document failed");
                        self.status.set(Status::Stopped);
                        JoinRefused::Unavailable
                    }
                };
                self.registry.remove_if(&self.name, self.id, || true);
                drain(&mut rx, Some(refusal));
                return;
            }
        }
        let idle_timeout = self.registry.deps.rooms.idle_timeout;
        let shutdown = self.registry.deps.shutdown.clone();
        let mut turn = Instant::now();
        // When the awareness changes waiting now go out.
        let mut tick: Option<tokio::time::Instant> = None;
        loop {
            if tick.is_none() && self.core.awareness_pending() {
                tick = Some(tokio::time::Instant::now() + AWARENESS_TICK);
            }
            let cmd = if let Some(at) = tick {
                tokio::select! {
                    cmd = rx.recv() => cmd,
                    _ = tokio::time::sleep_until(at) => {
                        tick = None;
                        self.contained(|room| {
                            let mut effects = std::mem::take(&mut room.effects);
                            room.core.flush_awareness(&mut effects);
                            room.effects = effects;
                            room.execute().1
                        });
                        continue;
                    }
                    _ = shutdown.cancelled() => return self.shut_down(&mut rx),
                }
            } else if self.core.peers().is_empty() {
                tokio::select! {
                    cmd = rx.recv() => cmd,
                    _ = tokio::time::sleep(idle_timeout) => {
                        let unloaded = self.registry.remove_if(&self.name, self.id, || rx.is_empty());
                        if unloaded {
                            tracing::debug!("idle: unloaded");
                            self.stop(&mut rx);
                            return;
                        }
                        continue;
                    }
                    _ = shutdown.cancelled() => return self.shut_down(&mut rx),
                }
            } else {
                tokio::select! {
                    cmd = rx.recv() => cmd,
                    _ = shutdown.cancelled() => return self.shut_down(&mut rx),
                }
            };
            let Some(cmd) = cmd else {
                self.status.set(Status::Stopped);
                return;
            };
            let next = match *cmd {
                RoomCmd::Frame {
                    conn,
                    frame,
                    messages,
                    budget,
                } => {
                    let next = self.frame(conn, frame, messages, &mut turn).await;
                    drop(budget);
                    next
                }
                RoomCmd::Delete { reply } => Box::pin(self.delete(reply)).await,
                #[cfg(test)]
                RoomCmd::Stall(pause) => {
                    tokio::time::sleep(pause).await;
                    Next::Continue
                }
                other => self.contained(|room| room.handle(other)),
            };
            match next {
                Next::Continue => {}
                Next::Reload => Box::pin(self.reload()).await,
                Next::Stop => {
                    self.stop(&mut rx);
                    return;
                }
            }
            if turn.elapsed() >= TURN_BUDGET {
                tokio::task::yield_now().await;
                turn = Instant::now();
            }
        }
    }

    /// Runs `f` (a command, then its effects) so that a panic stays in the
    /// room: every socket is closed with 1011, callers waiting on a reply
    /// see it dropped, and the document is reloaded from storage.
    fn contained(&mut self, f: impl FnOnce(&mut Room) -> Next) -> Next {
        match catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(next) => next,
            Err(_) => {
                tracing::error!("the room panicked; closing its connections and reloading");
                // The core may be inconsistent: its peers are closed from
                // here and the room starts afresh from storage.
                for peer in self.core.peers() {
                    peer.port
                        .close(CloseCode::InternalError, "internal error; reconnect");
                }
                let limits = core_limits(&self.registry);
                self.core = RoomCore::new(DocState::new(), limits);
                self.core.set_clustered(self.cluster.is_some());
                self.effects.clear();
                self.clients.store(0, Ordering::Relaxed);
                Next::Reload
            }
        }
    }

    fn handle(&mut self, cmd: RoomCmd) -> Next {
        let mut effects = std::mem::take(&mut self.effects);
        match cmd {
            RoomCmd::Join {
                conn,
                user,
                read_only,
                outbox,
                reply,
            } => {
                let peer = Peer {
                    conn,
                    user,
                    read_only,
                    port: outbox,
                };
                let joined = self.core.join(peer, &mut effects);
                let answer = joined.map_err(|RoomFull| JoinRefused::Full);
                if reply.send(answer).is_err() && answer.is_ok() {
                    // The joiner gave up waiting: it is not here after all.
                    self.core.leave(&[conn], &mut effects);
                }
                tracing::debug!(%conn, peers = self.core.peers().len(), "joined");
            }
            RoomCmd::Leave { conn } => {
                self.core.leave(&[conn], &mut effects);
                tracing::debug!(%conn, peers = self.core.peers().len(), "left");
            }
            RoomCmd::ApplyUpdate {
                update,
                user,
                reply,
            } => {
                let applied = self.core.apply_from_api(update, user, &mut effects);
                self.effects = effects;
                let (seq, next) = self.execute();
                let _ = reply.send(match applied {
                    Ok(Applied::Changed | Applied::Trimmed(_)) => Ok(seq),
                    Ok(Applied::Empty) => Ok(None),
                    Err(e) => Err(e),
                });
                return next;
            }
            RoomCmd::Encode {
                state_vector,
                reply,
            } => {
                let _ = reply.send(self.core.encode(state_vector.as_ref()));
            }
            RoomCmd::Cluster(inbound) => {
                let next = self.cluster_inbound(inbound, &mut effects);
                self.effects = effects;
                let (_, after) = self.execute();
                return match next {
                    Next::Continue => after,
                    other => other,
                };
            }
            RoomCmd::Frame { .. } | RoomCmd::Delete { .. } => {
                unreachable!("handled by the loop")
            }
            #[cfg(test)]
            RoomCmd::Stall(_) => unreachable!("handled by the loop"),
            #[cfg(test)]
            RoomCmd::Panic => panic!("a test asked the room to panic"),
        }
        self.effects = effects;
        self.execute().1
    }

    /// A frame's messages, one at a time, yielding between them when the
    /// turn's budget is spent.
    async fn frame(
        &mut self,
        conn: ConnId,
        frame: Bytes,
        messages: Vec<Incoming>,
        turn: &mut Instant,
    ) -> Next {
        let single = messages.len() == 1;
        for message in messages {
            if let Err(e) = self.accepts_write(conn, &message) {
                // Not applied, so not relayed or queued: the client keeps
                // the update and sends it again in its sync step 2 when it
                // reconnects, once storage takes writes again.
                tracing::warn!(%conn, reason = %e, "update refused; closing the connection with 1013");
                let mut effects = std::mem::take(&mut self.effects);
                self.core.close(
                    conn,
                    CloseCode::TryAgainLater,
                    "storage unavailable",
                    &mut effects,
                );
                self.effects = effects;
                return self.execute().1;
            }
            let next = self.contained(|room| {
                let mut effects = std::mem::take(&mut room.effects);
                room.core
                    .message(conn, message, single.then_some(&frame), &mut effects);
                room.effects = effects;
                room.execute().1
            });
            if !matches!(next, Next::Continue) || self.core.peer(conn).is_none() {
                return next;
            }
            if turn.elapsed() >= TURN_BUDGET {
                tokio::task::yield_now().await;
                *turn = Instant::now();
            }
        }
        Next::Continue
    }

    /// Whether a message from `conn` may be applied: one that would write
    /// (a non-empty update from a peer that may write) is refused while
    /// storage fails or is behind (SPEC §6).
    fn accepts_write(
        &self,
        conn: ConnId,
        message: &Incoming,
    ) -> Result<(), crate::persist::StorageUnavailable> {
        // The common case first: two atomic loads.
        let Err(refused) = self.registry.deps.persister.accepting() else {
            return Ok(());
        };
        let (Incoming::Update(update) | Incoming::SyncStep2(update)) = message else {
            return Ok(());
        };
        // An empty update (a sync step 2 with nothing new is `[0, 0]`)
        // writes nothing; a read-only peer's update is dropped anyway.
        if update.is_empty() || update.as_ref() == [0, 0] {
            return Ok(());
        }
        if self.core.peer(conn).is_none_or(|p| p.read_only) {
            return Ok(());
        }
        Err(refused)
    }

    /// Carries out `self.effects`, then the effects of removing the peers
    /// that could not be written to, until none are left. Returns the
    /// persister's sequence number of the last update stored, and whether
    /// the document must be reloaded.
    fn execute(&mut self) -> (Option<u64>, Next) {
        let mut effects = std::mem::take(&mut self.effects);
        let mut dead = Vec::new();
        let mut seq = None;
        let mut next = Next::Continue;
        while !effects.is_empty() {
            for effect in effects.drain(..) {
                match effect {
                    Effect::Send { to, frame } => {
                        if let Some(peer) = self.core.peer(to) {
                            if peer.port.push(frame).is_err() {
                                dead.push(to);
                            }
                        }
                    }
                    Effect::Broadcast { except, frame } => {
                        self.broadcast(except, &frame, &mut dead)
                    }
                    Effect::Persist { update, user } => {
                        let metrics = &self.registry.deps.metrics;
                        metrics.updates_received.increment(1);
                        metrics.update_bytes_received.increment(update.len() as u64);
                        let persister = &self.registry.deps.persister;
                        seq = Some(persister.enqueue(self.doc_id, update, user));
                    }
                    Effect::Presence {
                        conn,
                        user,
                        read_only,
                        connected,
                        clients,
                    } => self.presence(conn, user.as_deref(), read_only, connected, clients),
                    Effect::Close {
                        port, code, reason, ..
                    } => {
                        if code == CloseCode::Malformed {
                            self.registry.deps.metrics.malformed_messages.increment(1);
                        }
                        port.close(code, reason);
                    }
                    Effect::Reload => next = Next::Reload,
                    Effect::ShareAwareness(payload) => {
                        if let Some(part) = &self.cluster {
                            part.cluster.send(self.doc_id, Body::Awareness(payload));
                        }
                    }
                }
            }
            if !dead.is_empty() {
                for conn in &dead {
                    tracing::info!(%conn, "peer removed: its send queue overflowed or it is gone");
                }
                self.core.leave(&dead, &mut effects);
                dead.clear();
            }
        }
        self.effects = effects;
        let local = self.core.peers().len();
        let mut clients = local;
        if let Some(part) = &mut self.cluster {
            clients += part.remote_clients();
            if part.announced != Some(local) && self.doc_id != 0 {
                part.announced = Some(local);
                part.cluster.send(
                    self.doc_id,
                    Body::Clients(u32::try_from(local).unwrap_or(u32::MAX)),
                );
            }
        }
        self.clients.store(clients, Ordering::Relaxed);
        self.doc_bytes
            .store(self.core.doc().size_estimate(), Ordering::Relaxed);
        (seq, next)
    }

    /// Sends `payload` to every peer except `except`. Peers with nothing
    /// queued get the frame with one system call for all of them
    /// (`send_ring`); the others queue it behind what they hold. A peer
    /// whose queue overflows is closed (1013) and listed in `dead`.
    fn broadcast(&mut self, except: Option<ConnId>, payload: &Bytes, dead: &mut Vec<ConnId>) {
        let frame = crate::net::wire::binary_frame(payload);
        let peers = self.core.peers();
        let mut sent = 0u64;
        let targets = (0..peers.len()).filter(|&i| Some(peers[i].conn) != except);
        self.fanout.push_frame(
            &frame,
            targets,
            |i| &peers[i].port,
            |i, outcome| match outcome {
                Ok(()) => sent += 1,
                Err(Overflow) => dead.push(peers[i].conn),
            },
        );
        let metrics = &self.registry.deps.metrics;
        metrics.frames_relayed.increment(sent);
        metrics.bytes_relayed.increment(sent * payload.len() as u64);
        for conn in dead.iter() {
            let slow = self
                .core
                .peer(*conn)
                .is_some_and(|p| p.port.close_code() == Some(CloseCode::TryAgainLater));
            if slow {
                metrics.clients_dropped_slow.increment(1);
            }
        }
    }

    /// `client.connected` / `client.disconnected`, when an endpoint listens.
    fn presence(
        &self,
        conn: ConnId,
        user: Option<&str>,
        read_only: bool,
        connected: bool,
        clients: usize,
    ) {
        let webhooks = &self.registry.deps.webhooks;
        let event_type = if connected {
            events::CLIENT_CONNECTED
        } else {
            events::CLIENT_DISCONNECTED
        };
        if !webhooks.wants(event_type) {
            return;
        }
        let connection = webhooks.connection_id(conn);
        // Cluster-wide: the other nodes' connections as they announced them.
        let clients = clients + self.cluster.as_ref().map_or(0, |p| p.remote_clients());
        webhooks.emit(events::client(
            &events::ClientEvent {
                connected,
                doc: self.name.as_str(),
                connection: &connection,
                user,
                read_only,
                clients,
            },
            crate::store::now_ms(),
        ));
    }

    async fn delete(
        &mut self,
        reply: oneshot::Sender<Result<bool, crate::store::StoreError>>,
    ) -> Next {
        let deps = &self.registry.deps;
        let deleted = deps
            .webhooks
            .wants(events::DOCUMENT_DELETED)
            .then(|| events::document_deleted(self.name.as_str(), crate::store::now_ms()));
        match deps
            .store
            .delete(self.name.as_str(), deleted.as_ref())
            .await
        {
            Ok(existed) => {
                if existed && deleted.is_some() {
                    deps.webhooks.messages_written();
                }
                if let Some(part) = &self.cluster {
                    part.cluster.send(self.doc_id, Body::Deleted);
                }
                let mut effects = std::mem::take(&mut self.effects);
                self.core
                    .close_all(CloseCode::Deleted, "document deleted", &mut effects);
                self.effects = effects;
                self.execute();
                self.registry.remove_if(&self.name, self.id, || true);
                tracing::info!("document deleted");
                let _ = reply.send(Ok(existed));
                Next::Stop
            }
            Err(e) => {
                let _ = reply.send(Err(e));
                Next::Continue
            }
        }
    }

    /// Replaces the in-memory document with the stored one (which never saw
    /// the update that failed). Peers stay: they hold what was stored.
    async fn reload(&mut self) {
        let deadline = tokio::time::Instant::now() + LOAD_DEADLINE;
        let loaded = tokio::time::timeout_at(
            deadline,
            Box::pin(load(&self.registry, &self.name, Open::Existing, deadline)),
        )
        .await
        .unwrap_or_else(|_| Err(LoadFailed::Error("loading took too long".into())));
        match loaded {
            Ok((doc_id, doc, seq)) => {
                self.doc_id = doc_id;
                self.core.replace_doc(doc);
                self.loaded_up_to(seq);
            }
            Err(failed) => {
                if let LoadFailed::Error(e) = failed {
                    tracing::error!(error = %e, "reloading failed; closing the room");
                }
                let mut effects = std::mem::take(&mut self.effects);
                self.core.close_all(
                    CloseCode::InternalError,
                    "document unavailable",
                    &mut effects,
                );
                self.effects = effects;
                self.execute();
                self.registry.remove_if(&self.name, self.id, || true);
            }
        }
    }

    /// The document was loaded as of update number `seq` of its log.
    fn loaded_up_to(&mut self, seq: u64) {
        if let Some(part) = &mut self.cluster {
            part.seqs = SeqSet::new(seq);
            part.waiting.clear();
            part.waiting_bytes = 0;
            part.applied.store(seq, Ordering::Release);
        }
    }

    /// What the cluster brought: updates and snapshots are applied and
    /// relayed to local peers; the numbers of what was applied are kept,
    /// and a hole in them is filled from the database.
    fn cluster_inbound(
        &mut self,
        inbound: Inbound,
        effects: &mut Vec<Effect<Arc<Outbox>>>,
    ) -> Next {
        let Some(part) = self.cluster.as_deref_mut() else {
            return Next::Continue;
        };
        let is_local = |owner: u64| owner & REMOTE_OWNER == 0;
        match inbound {
            Inbound::Updates(updates) => {
                for (seq, update) in updates {
                    if part.seqs.contains(seq) || part.waiting.contains_key(&seq) {
                        continue;
                    }
                    part.waiting_bytes += update.len();
                    part.waiting.insert(seq, update);
                }
                if part.waiting_bytes > MAX_WAITING_BYTES {
                    // Read again from the database, in order, once the hole is filled.
                    part.waiting.clear();
                    part.waiting_bytes = 0;
                }
            }
            Inbound::Snapshot { upto, data } => {
                if upto > part.seqs.watermark() {
                    self.core.apply_remote(&data, effects);
                    part.seqs.advance_to(upto);
                }
            }
            Inbound::Committed { first, last } => part.seqs.insert_range(first, last),
            Inbound::Awareness { from, payload } => {
                self.core.remote_awareness(REMOTE_OWNER | from, &payload);
                return Next::Continue;
            }
            Inbound::Query { .. } | Inbound::Reconnected => {
                if let Some(mine) = self.core.local_awareness(is_local) {
                    part.cluster.send(self.doc_id, Body::Awareness(mine));
                }
                let local = self.core.peers().len();
                part.announced = Some(local);
                part.cluster.send(
                    self.doc_id,
                    Body::Clients(u32::try_from(local).unwrap_or(u32::MAX)),
                );
                if matches!(inbound, Inbound::Reconnected) {
                    part.cluster.send(self.doc_id, Body::Query);
                }
                return Next::Continue;
            }
            Inbound::Clients { from, count } => {
                if count == 0 {
                    part.remote_clients.remove(&from);
                } else {
                    part.remote_clients.insert(from, count);
                }
                return Next::Continue;
            }
            Inbound::NodeGone(node) => {
                self.core.remove_remote(REMOTE_OWNER | node);
                part.remote_clients.remove(&node);
                return Next::Continue;
            }
            Inbound::Deleted => {
                tracing::info!("document deleted through another node");
                self.core
                    .close_all(CloseCode::Deleted, "document deleted", effects);
                self.registry.remove_if(&self.name, self.id, || true);
                return Next::Stop;
            }
        }
        // Other nodes' updates are applied in the order of the log, never
        // past a hole: the log's order follows causality (a node commits in
        // the order it applied, and nodes see each other's updates only once
        // committed), while yrs, given an update whose predecessors are
        // missing, may integrate part of it around the hole and then skip
        // the missing part when it comes, as already seen.
        loop {
            let watermark = part.seqs.watermark();
            while part
                .waiting
                .first_key_value()
                .is_some_and(|(&seq, _)| seq <= watermark)
            {
                if let Some((_, stale)) = part.waiting.pop_first() {
                    part.waiting_bytes -= stale.len();
                }
            }
            let Some(update) = part.waiting.remove(&(watermark + 1)) else {
                break;
            };
            part.waiting_bytes -= update.len();
            self.core.apply_remote(&update, effects);
            part.seqs.insert(watermark + 1);
        }
        part.applied.store(part.seqs.watermark(), Ordering::Release);
        // A backstop: blocks yrs keeps holding back while every numbered
        // update before them is applied will not integrate by themselves
        // (their dependency was skipped); the database has the whole log in
        // order, so the document is rebuilt from it.
        if self.core.doc().holds_back() {
            let since = *part.held_back_since.get_or_insert_with(Instant::now);
            if since.elapsed() > HELD_BACK_LIMIT && !part.seqs.has_hole() && part.waiting.is_empty()
            {
                tracing::warn!(
                    "blocks held back with nothing missing from the log; reloading the document"
                );
                part.held_back_since = None;
                return Next::Reload;
            }
        } else {
            part.held_back_since = None;
        }
        if part.seqs.has_hole() || !part.waiting.is_empty() {
            part.cluster.fill(self.doc_id, FILL_DELAY);
        }
        Next::Continue
    }

    /// The server is stopping: peers are reported gone (their sessions
    /// close the sockets with 1001).
    fn shut_down(mut self, rx: &mut mpsc::Receiver<Box<RoomCmd>>) {
        let mut effects = std::mem::take(&mut self.effects);
        self.core.shut_down(&mut effects);
        self.effects = effects;
        self.execute();
        self.status.set(Status::Stopped);
        rx.close();
    }

    fn stop(&mut self, rx: &mut mpsc::Receiver<Box<RoomCmd>>) {
        self.status.set(Status::Stopped);
        drain(rx, None);
    }
}

/// Closes the mailbox and answers every queued join: with `refusal`, or,
/// when `None`, by dropping the reply so that the session retries on a
/// fresh room.
fn drain(rx: &mut mpsc::Receiver<Box<RoomCmd>>, refusal: Option<JoinRefused>) {
    rx.close();
    while let Ok(cmd) = rx.try_recv() {
        if let (RoomCmd::Join { reply, .. }, Some(refusal)) = (*cmd, refusal) {
            let _ = reply.send(Err(refusal));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::App;
    use crate::config::Settings;
    use crate::room::registry::RoomError;
    use clap::Parser;
    use futures_util::{SinkExt, StreamExt};
    use tandem_crdt::protocol;
    use tokio_tungstenite::tungstenite::Message;
    use yrs::{Text, Transact};

    type Ws = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    async fn start(
        dir: &tempfile::TempDir,
    ) -> (Arc<Registry>, String, tokio_util::sync::CancellationToken) {
        let db = format!("sqlite://{}/t.db", dir.path().display());
        let settings =
            Settings::try_parse_from(["tandem", "--bind", "127.0.0.1:0", "--database-url", &db])
                .expect("settings");
        let app = App::build(settings).await.expect("starts");
        let registry = app.registry();
        let url = format!("ws://{}/ws", app.addr());
        let stop = app.shutdown_token();
        actix_web::rt::spawn(async move {
            let _ = app.run_until_stopped().await;
        });
        (registry, url, stop)
    }

    /// Connects, syncs, and returns the socket and the text it holds.
    async fn connect(url: &str) -> (Ws, String) {
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connects");
        let doc = yrs::Doc::new();
        ws.send(Message::Binary(
            protocol::encode_sync_step1(&[0]).to_vec().into(),
        ))
        .await
        .expect("send");
        loop {
            let Some(Ok(Message::Binary(frame))) = ws.next().await else {
                panic!("closed while syncing");
            };
            let frame = Bytes::copy_from_slice(&frame);
            for m in protocol::decode_frame(&frame).expect("valid") {
                if let Incoming::SyncStep2(u) = m {
                    use yrs::updates::decoder::Decode;
                    let update = yrs::Update::decode_v1(&u).expect("decodes");
                    doc.transact_mut().apply_update(update).expect("applies");
                    let text = doc.get_or_insert_text("t");
                    let s = yrs::GetString::get_string(&text, &doc.transact());
                    return (ws, s);
                }
            }
        }
    }

    async fn close_code(ws: &mut Ws) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => {}
                _ => return None,
            }
        }
    }

    /// A room's task is allocated for as long as the room is loaded, idle
    /// or not, so what it holds across its awaits is memory per room: the
    /// rare, large futures (loading, deleting) go on the heap only while
    /// they run.
    #[actix_web::test]
    async fn a_rooms_task_stays_small() {
        let dir = tempfile::tempdir().expect("dir");
        let (registry, _url, stop) = start(&dir).await;
        let (tx, rx) = mpsc::channel(1);
        let args = RoomArgs {
            tx: tx.downgrade(),
            name: DocName::parse("size").expect("a name"),
            id: 0,
            open: Open::OrCreate,
            clients: Arc::new(AtomicUsize::new(0)),
            status: Arc::new(StatusCell::default()),
            doc_bytes: Arc::new(AtomicUsize::new(0)),
            registry,
        };
        let task = run(args, rx);
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= 2048,
            "a room's task holds {size} bytes (the room itself {})",
            std::mem::size_of::<Room>()
        );
        drop(task);
        stop.cancel();
    }

    #[actix_web::test]
    async fn a_panic_closes_the_rooms_sockets_with_1011_and_the_room_reloads() {
        let dir = tempfile::tempdir().expect("dir");
        let (registry, url, stop) = start(&dir).await;
        let (mut writer, _) = connect(&format!("{url}/p")).await;
        let (mut bystander, _) = connect(&format!("{url}/other")).await;
        let update = {
            let doc = yrs::Doc::new();
            let text = doc.get_or_insert_text("t");
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, "kept");
            txn.encode_update_v1()
        };
        writer
            .send(Message::Binary(
                protocol::encode_update(&update).to_vec().into(),
            ))
            .await
            .expect("send");
        // Once a second client sees it, the room has applied and queued it.
        loop {
            let (_, text) = connect(&format!("{url}/p")).await;
            if text == "kept" {
                break;
            }
        }
        let name = DocName::parse("p").expect("valid");
        let room = registry.handle(&name, Open::Existing);
        room.tx
            .send(Box::new(RoomCmd::Panic))
            .await
            .expect("delivered");
        assert_eq!(close_code(&mut writer).await, Some(1011));
        // The room reloaded from storage, and the process and other rooms live.
        let (_, text) = connect(&format!("{url}/p")).await;
        assert_eq!(text, "kept");
        bystander
            .send(Message::Binary(
                protocol::encode_sync_step1(&[0]).to_vec().into(),
            ))
            .await
            .expect("the other room's socket is open");
        stop.cancel();
    }

    #[actix_web::test]
    async fn a_session_waiting_on_a_full_mailbox_still_serves_its_socket() {
        let dir = tempfile::tempdir().expect("dir");
        let (registry, url, stop) = start(&dir).await;
        let (ws, _) = connect(&format!("{url}/full")).await;
        let name = DocName::parse("full").expect("valid");
        let room = registry.handle(&name, Open::Existing);
        room.tx
            .send(Box::new(RoomCmd::Stall(Duration::from_secs(3))))
            .await
            .expect("delivered");
        // More frames than the mailbox holds: the session ends up waiting.
        let (mut sink, mut stream) = futures_util::StreamExt::split(ws);
        let feeding = actix_web::rt::spawn(async move {
            for _ in 0..3_000 {
                let frame = protocol::encode_sync_step1(&[0]).to_vec();
                if sink.feed(Message::Binary(frame.into())).await.is_err() {
                    break;
                }
            }
            let _ = sink.flush().await;
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The server stops: the waiting session hears it and closes with
        // 1001 at once, not when the room finally lets go of its mailbox.
        stop.cancel();
        let code = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(message) = stream.next().await {
                if let Ok(Message::Close(frame)) = message {
                    return frame.map(|f| u16::from(f.code));
                }
            }
            None
        })
        .await
        .expect("the session closed before the room woke up");
        assert_eq!(code, Some(1001));
        feeding.abort();
    }

    #[actix_web::test]
    async fn a_connection_cannot_make_its_room_hold_more_than_its_budget() {
        let dir = tempfile::tempdir().expect("dir");
        let (registry, url, stop) = start(&dir).await;
        let (ws, _) = connect(&format!("{url}/heavy")).await;
        let name = DocName::parse("heavy").expect("valid");
        let room = registry.handle(&name, Open::Existing);
        room.tx
            .send(Box::new(RoomCmd::Stall(Duration::from_secs(3))))
            .await
            .expect("delivered");
        // A hundred frames of a megabyte each, while the room is busy.
        let (mut sink, _stream) = futures_util::StreamExt::split(ws);
        let feeding = actix_web::rt::spawn(async move {
            for _ in 0..100 {
                let frame = protocol::encode_update(&vec![0u8; 1 << 20]).to_vec();
                if sink.feed(Message::Binary(frame.into())).await.is_err() {
                    break;
                }
            }
            let _ = sink.flush().await;
        });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // What the room holds for this connection is bounded by its
        // in-flight budget (16 MiB by default: the largest message), not
        // by the mailbox's thousand slots.
        let queued = room.tx.max_capacity() - room.tx.capacity();
        assert!(queued <= 17, "{queued} megabyte frames wait in the room");
        feeding.abort();
        stop.cancel();
    }

    #[actix_web::test]
    async fn an_api_call_never_creates_or_revives_a_document() {
        let dir = tempfile::tempdir().expect("dir");
        let (registry, _, stop) = start(&dir).await;
        let name = DocName::parse("never").expect("valid");
        let encoded = registry
            .call(&name, |reply| RoomCmd::Encode {
                state_vector: None,
                reply,
            })
            .await;
        assert!(
            matches!(encoded, Err(RoomError::Absent)),
            "the API found a document that was never made"
        );
        let stored = registry.deps.store.get("never").await.expect("reads");
        assert!(stored.is_none(), "the API call created the document");
        stop.cancel();
    }
}
