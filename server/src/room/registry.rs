//! The registry maps document names to running rooms. `handle` is the one
//! get-or-load: the first caller spawns the room, whose task loads the
//! document before it reads its mailbox, so every later command (and every
//! joiner's sync step 2) sees the loaded document: there is no load race.
//! Only a WebSocket joiner's room may create its document; a room opened
//! for the API finds it absent and says so (`RoomError::Absent`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::task::{self, Open, RoomArgs, RoomCmd, Status, StatusCell};
use crate::config::{Limits, RoomSettings};
use crate::doc_name::DocName;
use crate::persist::Persister;
use crate::store::Store;

/// Commands a room has not handled yet. Bounded so that a flood of writers
/// waits (and TCP pushes back on them) instead of growing memory; large
/// enough that a burst from a thousand peers does not make them wait.
const ROOM_MAILBOX: usize = 1024;

#[derive(Clone)]
pub struct RoomHandle {
    pub id: u64,
    /// Commands are boxed so that the mailbox's slots stay small: an idle
    /// room's mailbox is one block of 32 slots.
    pub tx: mpsc::Sender<Box<RoomCmd>>,
    /// Connections in the room, kept by the room.
    pub clients: Arc<AtomicUsize>,
    /// Whether the room loaded, found nothing, or stopped.
    pub status: Arc<StatusCell>,
    /// The document's encoded size (an upper estimate), kept by the room:
    /// sessions charge a sync step 1 by it.
    pub doc_bytes: Arc<AtomicUsize>,
}

#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    /// The room could not be reached (it kept unloading, or failed to load).
    #[error("the document is unavailable right now")]
    Unavailable,
    /// The document does not exist (it may have just been deleted).
    #[error("the document does not exist")]
    Absent,
}

/// How often a command is retried when the room it was sent to unloads.
const CALL_ATTEMPTS: usize = 5;

/// What rooms need from the rest of the server.
pub struct RoomDeps {
    pub store: Arc<dyn Store>,
    pub persister: Persister,
    pub limits: Limits,
    pub rooms: RoomSettings,
    pub metrics: crate::metrics::Metrics,
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
    /// Rooms run here, apart from the HTTP workers that drive the sockets,
    /// so a busy room never delays the writing of its own frames.
    pub runtime: tokio::runtime::Handle,
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// The other nodes serving the same database, when there are.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Pings and keepalives for every connection.
    pub keepalive: crate::net::keepalive::Keepalive,
}

pub struct Registry {
    rooms: Mutex<HashMap<DocName, RoomHandle>>,
    next_id: AtomicU64,
    /// Open WebSocket connections, across all rooms.
    pub connections: Arc<AtomicUsize>,
    pub deps: RoomDeps,
}

impl Registry {
    pub fn new(deps: RoomDeps) -> Arc<Self> {
        Arc::new(Registry {
            rooms: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            connections: Arc::new(AtomicUsize::new(0)),
            deps,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DocName, RoomHandle>> {
        // Held for a map lookup or insert only.
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The room of `name`, spawning (and so loading) it when none runs;
    /// `open` says whether that room may create the document.
    pub fn handle(self: &Arc<Self>, name: &DocName, open: Open) -> RoomHandle {
        let mut rooms = self.lock();
        if let Some(h) = rooms.get(name) {
            if !h.tx.is_closed() {
                return h.clone();
            }
        }
        let (tx, rx) = mpsc::channel(ROOM_MAILBOX);
        let handle = RoomHandle {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            tx,
            clients: Arc::new(AtomicUsize::new(0)),
            status: Arc::new(StatusCell::default()),
            doc_bytes: Arc::new(AtomicUsize::new(0)),
        };
        rooms.insert(name.clone(), handle.clone());
        drop(rooms);
        let args = RoomArgs {
            tx: handle.tx.downgrade(),
            name: name.clone(),
            id: handle.id,
            open,
            clients: Arc::clone(&handle.clients),
            status: Arc::clone(&handle.status),
            doc_bytes: Arc::clone(&handle.doc_bytes),
            registry: Arc::clone(self),
        };
        self.deps
            .tracker
            .spawn_on(task::run(args, rx), &self.deps.runtime);
        handle
    }

    /// Removes the room `id` of `name` if it is still the registered one.
    /// Called by a room that unloads or fails; `still_idle` is checked under
    /// the registry's lock, so no joiner can be handed the room in between.
    pub fn remove_if(&self, name: &DocName, id: u64, still_idle: impl FnOnce() -> bool) -> bool {
        let mut rooms = self.lock();
        match rooms.get(name) {
            Some(h) if h.id == id => {
                if still_idle() {
                    rooms.remove(name);
                    true
                } else {
                    false
                }
            }
            _ => true,
        }
    }

    /// Sends a command built by `make` to the room of `name` (loading it if
    /// needed, never creating the document) and waits for the reply,
    /// retrying on a fresh room when the one it reached was unloading.
    pub async fn call<T>(
        self: &Arc<Self>,
        name: &DocName,
        make: impl Fn(oneshot::Sender<T>) -> RoomCmd,
    ) -> Result<T, RoomError> {
        for _ in 0..CALL_ATTEMPTS {
            let room = self.handle(name, Open::Existing);
            let (reply, answer) = oneshot::channel();
            if room.tx.send(Box::new(make(reply))).await.is_err() {
                if room.status.get() == Status::Absent {
                    return Err(RoomError::Absent);
                }
                continue;
            }
            match answer.await {
                Ok(value) => return Ok(value),
                Err(_) if room.status.get() == Status::Absent => return Err(RoomError::Absent),
                Err(_) => continue,
            }
        }
        Err(RoomError::Unavailable)
    }

    /// Connections to `name` right now (0 when it is not loaded).
    pub fn clients(&self, name: &str) -> usize {
        let rooms = self.lock();
        DocName::parse(name)
            .ok()
            .and_then(|n| rooms.get(&n).map(|h| h.clients.load(Ordering::Relaxed)))
            .unwrap_or(0)
    }

    /// Connections to `name` as its room counts them (across the cluster),
    /// when it is loaded here.
    pub fn loaded_clients(&self, name: &str) -> Option<usize> {
        let rooms = self.lock();
        let name = DocName::parse(name).ok()?;
        rooms.get(&name).map(|h| h.clients.load(Ordering::Relaxed))
    }

    /// Rooms currently loaded.
    pub fn loaded(&self) -> usize {
        self.lock().len()
    }
}
