//! The room task: owns one document, its awareness and its peers.
//!
//! It loads the document before reading its mailbox, then handles one
//! command at a time: joins, frames from sessions, leaves. A valid update is
//! applied, relayed to every other peer (the same `Bytes` to all, usually the
//! very frame the sender sent) and handed to the persister. Nothing in here
//! awaits a peer or the database, except loading and reloading.

use std::sync::Arc;

use bytes::Bytes;
use tandem_crdt::protocol::{self, Incoming};
use tandem_crdt::{Applied, ApplyError, Awareness, DocState};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;
use yrs::StateVector;

use super::registry::Registry;
use super::ConnId;
use crate::doc_name::DocName;
use crate::net::outbox::{Outbox, Overflow};
use crate::net::send_ring;
use crate::net::CloseCode;
use crate::store::DocId;
use crate::webhooks::events;

pub enum RoomCmd {
    Join {
        conn: ConnId,
        /// The token's `sub`, for webhooks.
        user: Option<Arc<str>>,
        read_only: bool,
        outbox: Arc<Outbox>,
        reply: oneshot::Sender<Result<(), JoinRefused>>,
    },
    /// A decoded frame. `frame` is kept to relay it unchanged when it holds
    /// a single update or awareness message.
    Frame {
        conn: ConnId,
        read_only: bool,
        user: Option<Arc<str>>,
        frame: Bytes,
        messages: Vec<Incoming>,
    },
    Leave {
        conn: ConnId,
    },
    /// An update from the HTTP API. Replies with the persister's sequence
    /// number to wait on (`None` when the update was empty).
    ApplyUpdate {
        update: Bytes,
        reply: oneshot::Sender<Result<Option<u64>, ApplyError>>,
    },
    /// The document as one update, or the diff against a state vector.
    Encode {
        state_vector: Option<StateVector>,
        reply: oneshot::Sender<Vec<u8>>,
    },
    /// Deletes the document: storage first, then every socket is closed
    /// with 4404 and the room unloads. Replies whether it existed.
    Delete {
        reply: oneshot::Sender<Result<bool, String>>,
    },
}

/// Whether the room keeps running after a command.
enum Flow {
    Continue,
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefused {
    /// The room holds `TANDEM_MAX_CONNECTIONS_PER_DOC` connections.
    Full,
    /// The document could not be loaded.
    Unavailable,
}

struct Peer {
    conn: ConnId,
    outbox: Arc<Outbox>,
    user: Option<Arc<str>>,
    read_only: bool,
}

pub struct Room {
    name: DocName,
    id: u64,
    /// Shared with the registry so that listings can show client counts.
    clients: Arc<std::sync::atomic::AtomicUsize>,
    registry: Arc<Registry>,
    doc_id: DocId,
    doc: DocState,
    awareness: Awareness,
    peers: Vec<Peer>,
    /// `broadcast`'s buffers, kept to spare an allocation per update.
    scratch: RelayScratch,
}

/// The peers a broadcast writes to directly, their sockets, and what each
/// took.
#[derive(Default)]
struct RelayScratch {
    peers: Vec<usize>,
    fds: Vec<std::os::fd::RawFd>,
    results: Vec<std::io::Result<usize>>,
}

pub fn spawn_args(
    name: DocName,
    id: u64,
    clients: Arc<std::sync::atomic::AtomicUsize>,
    registry: Arc<Registry>,
) -> Room {
    Room {
        name,
        id,
        clients,
        registry,
        doc_id: 0,
        doc: DocState::new(),
        awareness: Awareness::new(),
        peers: Vec::new(),
        scratch: RelayScratch::default(),
    }
}

pub async fn run(room: Room, rx: mpsc::Receiver<Box<RoomCmd>>) {
    let span = tracing::info_span!("room", doc = %room.name);
    room.run(rx).instrument(span).await
}

/// Loads a document: first waits for the persister to write everything it
/// holds, so a room reloaded right after an unload sees every update.
async fn load(registry: &Registry, name: &DocName) -> Result<(DocId, DocState), String> {
    let deps = &registry.deps;
    deps.persister.flush().await;
    let now = crate::store::now_ms();
    let created = deps
        .webhooks
        .wants(events::DOCUMENT_CREATED)
        .then(|| events::document_created(name.as_str(), now, events::Source::WebSocket));
    let found = deps
        .store
        .find_or_create(name.as_str(), now, created.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    if found.created {
        tracing::info!("document created");
        if created.is_some() {
            deps.webhooks.messages_written();
        }
        return Ok((found.id, DocState::new()));
    }
    let (state, report) = super::load::load_stored(deps.store.as_ref(), found.id)
        .await
        .map_err(|e| e.to_string())?;
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
    Ok((found.id, state))
}

impl Room {
    async fn run(mut self, mut rx: mpsc::Receiver<Box<RoomCmd>>) {
        match load(&self.registry, &self.name).await {
            Ok((doc_id, doc)) => {
                self.doc_id = doc_id;
                self.doc = doc;
            }
            Err(e) => {
                tracing::error!(error = %e, "loading the document failed");
                self.registry.remove_if(&self.name, self.id, || true);
                drain(&mut rx, Some(JoinRefused::Unavailable));
                return;
            }
        }
        let idle_timeout = self.registry.deps.rooms.idle_timeout;
        let shutdown = self.registry.deps.shutdown.clone();
        loop {
            let cmd = if self.peers.is_empty() {
                tokio::select! {
                    cmd = rx.recv() => cmd,
                    _ = tokio::time::sleep(idle_timeout) => {
                        let unloaded = self.registry.remove_if(&self.name, self.id, || rx.is_empty());
                        if unloaded {
                            tracing::debug!("idle: unloaded");
                            drain(&mut rx, None);
                            return;
                        }
                        continue;
                    }
                    _ = shutdown.cancelled() => return,
                }
            } else {
                tokio::select! {
                    cmd = rx.recv() => cmd,
                    _ = shutdown.cancelled() => {
                        // Sessions close their sockets with 1001 themselves.
                        let open = self.peers.len();
                        for (i, peer) in self.peers.iter().enumerate() {
                            self.client_event(peer, false, open - i - 1);
                        }
                        return;
                    }
                }
            };
            let Some(cmd) = cmd else { return };
            if let Flow::Stop = self.handle(cmd).await {
                drain(&mut rx, None);
                return;
            }
        }
    }

    async fn handle(&mut self, cmd: Box<RoomCmd>) -> Flow {
        match *cmd {
            RoomCmd::Join {
                conn,
                user,
                read_only,
                outbox,
                reply,
            } => self.join(
                Peer {
                    conn,
                    outbox,
                    user,
                    read_only,
                },
                reply,
            ),
            RoomCmd::Frame {
                conn,
                read_only,
                user,
                frame,
                messages,
            } => self.frame(conn, read_only, user, frame, messages).await,
            RoomCmd::Leave { conn } => self.leave(conn),
            RoomCmd::ApplyUpdate { update, reply } => {
                let _ = reply.send(self.apply_from_api(update).await);
            }
            RoomCmd::Encode {
                state_vector,
                reply,
            } => {
                let _ = reply.send(self.doc.diff(&state_vector.unwrap_or_default()));
            }
            RoomCmd::Delete { reply } => return self.delete(reply).await,
        }
        Flow::Continue
    }

    async fn apply_from_api(&mut self, update: Bytes) -> Result<Option<u64>, ApplyError> {
        let limit = self.registry.deps.limits.max_document_bytes;
        match self.doc.apply_update(&update, limit) {
            Ok(Applied::Changed) => {
                self.broadcast(None, &protocol::encode_update(&update));
                Ok(Some(self.registry.deps.persister.enqueue(
                    self.doc_id,
                    update,
                    None,
                )))
            }
            Ok(Applied::Empty) => Ok(None),
            Err(e @ ApplyError::Poisoned(_)) => {
                tracing::error!(error = %e, "API update failed inside yrs; reloading the document");
                self.reload().await;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn delete(&mut self, reply: oneshot::Sender<Result<bool, String>>) -> Flow {
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
                self.close_all(CloseCode::Deleted, "document deleted");
                self.registry.remove_if(&self.name, self.id, || true);
                tracing::info!("document deleted");
                let _ = reply.send(Ok(existed));
                Flow::Stop
            }
            Err(e) => {
                let _ = reply.send(Err(e.to_string()));
                Flow::Continue
            }
        }
    }

    fn join(&mut self, peer: Peer, reply: oneshot::Sender<Result<(), JoinRefused>>) {
        if self.peers.len() >= self.registry.deps.limits.max_connections_per_doc {
            let _ = reply.send(Err(JoinRefused::Full));
            return;
        }
        // Sync step 1, then every awareness state (as the reference server does).
        let outbox = &peer.outbox;
        let mut ok = outbox
            .push(protocol::encode_sync_step1(&self.doc.state_vector()))
            .is_ok();
        if let Some(all) = self.awareness.encode_all() {
            ok &= outbox.push(protocol::encode_awareness(&all)).is_ok();
        }
        if ok && reply.send(Ok(())).is_ok() {
            let conn = peer.conn;
            self.client_event(&peer, true, self.peers.len() + 1);
            self.peers.push(peer);
            self.count_clients();
            tracing::debug!(%conn, peers = self.peers.len(), "joined");
        }
    }

    fn leave(&mut self, conn: ConnId) {
        if let Some(i) = self.peers.iter().position(|p| p.conn == conn) {
            let peer = self.peers.swap_remove(i);
            self.count_clients();
            self.client_event(&peer, false, self.peers.len());
        }
        if let Some(removal) = self.awareness.remove_owner(conn.0) {
            self.broadcast(None, &protocol::encode_awareness(&removal));
        }
        if self.peers.is_empty() {
            self.doc.drop_caches();
        }
        tracing::debug!(%conn, peers = self.peers.len(), "left");
    }

    /// `client.connected` / `client.disconnected`, when an endpoint listens.
    fn client_event(&self, peer: &Peer, connected: bool, clients: usize) {
        let webhooks = &self.registry.deps.webhooks;
        let event_type = if connected {
            events::CLIENT_CONNECTED
        } else {
            events::CLIENT_DISCONNECTED
        };
        if !webhooks.wants(event_type) {
            return;
        }
        let connection = webhooks.connection_id(peer.conn);
        webhooks.emit(events::client(
            &events::ClientEvent {
                connected,
                doc: self.name.as_str(),
                connection: &connection,
                user: peer.user.as_deref(),
                read_only: peer.read_only,
                clients,
            },
            crate::store::now_ms(),
        ));
    }

    async fn frame(
        &mut self,
        conn: ConnId,
        read_only: bool,
        user: Option<Arc<str>>,
        frame: Bytes,
        messages: Vec<Incoming>,
    ) {
        let single = messages.len() == 1;
        for message in messages {
            match message {
                Incoming::SyncStep1(sv) => {
                    let reply = self.doc.sync_step2_frame(&sv);
                    self.send_to(conn, reply);
                }
                Incoming::SyncStep2(update) | Incoming::Update(update) if read_only => {
                    if !update.is_empty() && update.as_ref() != [0, 0] {
                        tracing::warn!(%conn, bytes = update.len(), "dropped an update from a read-only connection");
                    }
                }
                Incoming::Update(update) => {
                    let relay = single.then(|| frame.clone());
                    if !self.apply(conn, &user, update, relay).await {
                        return;
                    }
                }
                Incoming::SyncStep2(update) => {
                    if !self.apply(conn, &user, update, None).await {
                        return;
                    }
                }
                Incoming::Awareness { update, raw } => {
                    if self.awareness.apply(conn.0, &update) {
                        let relay = if single {
                            frame.clone()
                        } else {
                            protocol::encode_awareness(&raw)
                        };
                        // Echoed to the sender too: the stock client counts it as a sign of life.
                        self.broadcast(None, &relay);
                    }
                }
                Incoming::QueryAwareness => {
                    if let Some(all) = self.awareness.encode_all() {
                        self.send_to(conn, protocol::encode_awareness(&all));
                    }
                }
            }
        }
    }

    /// Applies, relays and persists one update. Returns false when the
    /// sender was closed for it.
    async fn apply(
        &mut self,
        conn: ConnId,
        user: &Option<Arc<str>>,
        update: Bytes,
        relay: Option<Bytes>,
    ) -> bool {
        let limit = self.registry.deps.limits.max_document_bytes;
        match self.doc.apply_update(&update, limit) {
            Ok(Applied::Changed) => {
                let metrics = &self.registry.deps.metrics;
                metrics.updates_received.increment(1);
                metrics.update_bytes_received.increment(update.len() as u64);
                let frame = relay.unwrap_or_else(|| protocol::encode_update(&update));
                self.broadcast(Some(conn), &frame);
                self.registry
                    .deps
                    .persister
                    .enqueue(self.doc_id, update, user.clone());
                true
            }
            Ok(Applied::Empty) => true,
            Err(e @ ApplyError::Malformed(_)) => {
                self.registry.deps.metrics.malformed_messages.increment(1);
                tracing::warn!(%conn, error = %e, "malformed update; closing the connection");
                self.close_peer(conn, CloseCode::Malformed, "malformed update");
                false
            }
            Err(e @ ApplyError::TooLarge { .. }) => {
                tracing::warn!(%conn, error = %e, "update refused: document too large");
                self.close_peer(conn, CloseCode::TooLarge, "document too large");
                false
            }
            Err(e @ ApplyError::Poisoned(_)) => {
                tracing::error!(%conn, error = %e, "update failed inside yrs; reloading the document from storage");
                self.close_peer(conn, CloseCode::Malformed, "update could not be applied");
                self.reload().await;
                false
            }
        }
    }

    /// Replaces the in-memory document with the stored one (which never saw
    /// the update that failed). Peers stay: they hold what was stored.
    async fn reload(&mut self) {
        match load(&self.registry, &self.name).await {
            Ok((doc_id, doc)) => {
                self.doc_id = doc_id;
                self.doc = doc;
            }
            Err(e) => {
                tracing::error!(error = %e, "reloading failed; closing the room");
                self.close_all(CloseCode::InternalError, "document unavailable");
                self.registry.remove_if(&self.name, self.id, || true);
            }
        }
    }

    fn send_to(&mut self, conn: ConnId, frame: Bytes) {
        if let Some(i) = self.peers.iter().position(|p| p.conn == conn) {
            if self.peers[i].outbox.push(frame).is_err() {
                self.drop_peer(i);
            }
        }
    }

    /// Sends `payload` to every peer except `except`. A peer whose queue
    /// overflows is closed (1013) and removed; the rest are not delayed.
    ///
    /// Peers with nothing queued get the frame with one system call for all
    /// of them (`send_ring`); the others queue it behind what they hold.
    fn broadcast(&mut self, except: Option<ConnId>, payload: &Bytes) {
        let frame = crate::net::wire::binary_frame(payload);
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut failed = Vec::new();
        let mut sent = 0u64;
        for (i, peer) in self.peers.iter().enumerate() {
            if Some(peer.conn) == except {
                continue;
            }
            match peer.outbox.begin_direct(&frame) {
                Ok(Some(fd)) => {
                    scratch.fds.push(fd);
                    scratch.peers.push(i);
                }
                Ok(None) => sent += 1,
                Err(Overflow) => failed.push(peer.conn),
            }
        }
        let batched = scratch.fds.len() > 1
            && send_ring::send_all(&frame, &scratch.fds, &mut scratch.results);
        for (k, &i) in scratch.peers.iter().enumerate() {
            let peer = &self.peers[i];
            let written = if batched {
                std::mem::replace(&mut scratch.results[k], Ok(0))
            } else {
                peer.outbox.write_direct(&frame)
            };
            match peer.outbox.end_direct(&frame, written) {
                Ok(()) => sent += 1,
                Err(Overflow) => failed.push(peer.conn),
            }
        }
        scratch.peers.clear();
        scratch.fds.clear();
        self.scratch = scratch;
        let metrics = &self.registry.deps.metrics;
        metrics.frames_relayed.increment(sent);
        metrics.bytes_relayed.increment(sent * payload.len() as u64);
        for conn in failed {
            // By connection, not index: each removal may broadcast again.
            if let Some(i) = self.peers.iter().position(|p| p.conn == conn) {
                self.drop_peer(i);
            }
        }
    }

    fn count_clients(&self) {
        self.clients
            .store(self.peers.len(), std::sync::atomic::Ordering::Relaxed);
    }

    fn drop_peer(&mut self, i: usize) {
        let peer = self.peers.swap_remove(i);
        self.count_clients();
        self.client_event(&peer, false, self.peers.len());
        if peer.outbox.close_code() == Some(CloseCode::TryAgainLater) {
            self.registry.deps.metrics.clients_dropped_slow.increment(1);
        }
        tracing::info!(conn = %peer.conn, "peer removed: its send queue overflowed or it is gone");
        if let Some(removal) = self.awareness.remove_owner(peer.conn.0) {
            self.broadcast(None, &protocol::encode_awareness(&removal));
        }
    }

    /// Closes every connection (each gets its `client.disconnected`).
    fn close_all(&mut self, code: CloseCode, reason: &'static str) {
        while let Some(peer) = self.peers.pop() {
            peer.outbox.close(code, reason);
            self.client_event(&peer, false, self.peers.len());
        }
        self.count_clients();
    }

    fn close_peer(&mut self, conn: ConnId, code: CloseCode, reason: &'static str) {
        if let Some(i) = self.peers.iter().position(|p| p.conn == conn) {
            self.peers[i].outbox.close(code, reason);
            self.drop_peer(i);
        }
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
