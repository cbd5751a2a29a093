//! Outbound webhooks (SPEC §5).
//!
//! Events become rows of a durable outbox, one message per subscribed
//! endpoint, in the transaction of the change that caused them where there is
//! one (`store`): a document's creation and deletion, and its updates, whose
//! counts accumulate in `doc_changes` beside the updates themselves until the
//! reporter (`outbox`) of some node claims them when they fall due, by the
//! database's clock, and writes their event. Connection events, which change nothing
//! stored, go through a coalescing queue that `outbox` writes in batches.
//! The `dispatcher` leases due messages, signs (`signer`) and sends them
//! through an HTTP client that cannot reach internal addresses (`ssrf`), and
//! records each attempt. Nothing here is awaited by the relay path.

pub mod dispatcher;
pub mod events;
pub mod outbox;
pub mod signer;
pub mod ssrf;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{HistorySettings, WebhookSettings};
use crate::store::{DocId, NewEvent, Store, StoreError};

/// The handle every part of the server uses to report events.
pub struct Webhooks {
    store: Arc<dyn Store>,
    pub settings: WebhookSettings,
    /// Automatic versions are made with `document.updated`'s windows, by
    /// the same reporter (SPEC §9).
    pub history: HistorySettings,
    subscriptions: RwLock<Subscriptions>,
    /// Events waiting for the outbox writer.
    queue: Mutex<Vec<NewEvent>>,
    queue_wake: Notify,
    /// Wakes the dispatcher when new messages are in the outbox.
    dispatch_wake: Notify,
    /// Wakes the reporter of document changes: this node wrote some. (It
    /// polls the database too, for those written by other nodes.)
    changes_wake: Notify,
    /// Makes connection ids unique across restarts.
    instance: String,
}

/// How often every node reads the endpoints' change counter (one row) to
/// learn of changes made through other nodes: a change governs every
/// node's deliveries within this, plus a reload (SPEC §7: within 1 s).
const CONFIG_POLL: Duration = Duration::from_millis(250);

/// What the endpoints listen to, so that work nobody wants is skipped.
/// Disabled endpoints count: what they would have been sent is held for
/// them (`recover` sends it).
#[derive(Debug, Default)]
struct Subscriptions {
    /// The endpoints' change counter (`Store::webhook_config_version`) read
    /// before the endpoints were: a reload that read an older one never
    /// replaces this, and a counter that moved past it means reloading.
    version: i64,
    /// Some endpoint is enabled (so the dispatcher has something to poll for).
    any: bool,
    types: HashSet<String>,
    all: bool,
    updated_with_content: bool,
    /// Every endpoint's id, enabled or not.
    ids: HashSet<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Webhooks {
    /// Loads the endpoints. (Changes left unreported by the last run are in
    /// the database, where the reporter finds them.)
    pub async fn start(
        store: Arc<dyn Store>,
        settings: WebhookSettings,
        history: HistorySettings,
    ) -> Result<Arc<Self>, StoreError> {
        let hooks = Arc::new(Webhooks {
            store,
            settings,
            history,
            subscriptions: RwLock::new(Subscriptions::default()),
            queue: Mutex::new(Vec::new()),
            queue_wake: Notify::new(),
            dispatch_wake: Notify::new(),
            changes_wake: Notify::new(),
            instance: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
        });
        hooks.refresh().await?;
        Ok(hooks)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Re-reads which events enabled endpoints subscribe to; called after
    /// every change to an endpoint made here, and by `watch_config` when
    /// another node made one.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let mut subs = Subscriptions {
            version: self.store.webhook_config_version().await?,
            ..Subscriptions::default()
        };
        for e in self.store.list_endpoints().await?.iter() {
            let wants_updates = e
                .events
                .iter()
                .any(|t| t == "*" || t == events::DOCUMENT_UPDATED);
            subs.any |= e.enabled;
            subs.updated_with_content |= wants_updates && e.include_content;
            subs.all |= e.events.iter().any(|t| t == "*");
            subs.types.extend(e.events.iter().cloned());
            subs.ids.insert(e.id.clone());
        }
        {
            let mut current = self
                .subscriptions
                .write()
                .unwrap_or_else(|p| p.into_inner());
            // Of two reloads finishing out of order, the older is dropped.
            if subs.version >= current.version {
                *current = subs;
            }
        }
        self.dispatch_wake.notify_one();
        self.changes_wake.notify_one();
        Ok(())
    }

    /// Reloads the endpoints whenever their change counter moves, until
    /// shutdown: changes made through other nodes (which share the
    /// database, not this memory) govern this node's events and deliveries
    /// within `CONFIG_POLL` and a reload. A single-row read, so cheap
    /// enough to poll; no Redis needed.
    pub async fn watch_config(self: Arc<Self>, shutdown: CancellationToken) {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(CONFIG_POLL) => {}
                _ = shutdown.cancelled() => return,
            }
            let seen = self.config_version();
            let result = match self.store.webhook_config_version().await {
                Ok(version) if version != seen => self.refresh().await,
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => failing = false,
                // Said once per outage, not four times a second.
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "reloading webhook endpoints failed; will retry");
                }
                Err(_) => {}
            }
        }
    }

    /// The endpoints' change counter as of the last reload.
    pub fn config_version(&self) -> i64 {
        self.subscriptions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .version
    }

    /// Whether some endpoint listens to `event_type` (a disabled one has it
    /// held).
    pub fn wants(&self, event_type: &str) -> bool {
        let subs = self.subscriptions.read().unwrap_or_else(|p| p.into_inner());
        subs.all || subs.types.contains(event_type)
    }

    /// Whether any endpoint is enabled.
    /// Keeps only the entries of endpoints that exist (as of the last
    /// reload): what the dispatcher keeps per endpoint goes with it.
    fn retain_endpoints<T>(&self, per_endpoint: &mut HashMap<String, T>) {
        let subs = self.subscriptions.read().unwrap_or_else(|p| p.into_inner());
        per_endpoint.retain(|id, _| subs.ids.contains(id));
    }

    fn any_enabled(&self) -> bool {
        self.subscriptions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .any
    }

    fn wants_content(&self) -> bool {
        self.subscriptions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .updated_with_content
    }

    /// Queues an event for the outbox writer; never blocks, never drops.
    pub fn emit(&self, event: NewEvent) {
        lock(&self.queue).push(event);
        self.queue_wake.notify_one();
    }

    /// Notes that these documents' changes were committed at `now`. The
    /// changes themselves are counted in the database, by the transaction
    /// that wrote them, where every node's reporter sees them; this only
    /// wakes this node's reporter, which otherwise polls.
    pub fn note_changes(&self, docs: impl IntoIterator<Item = DocId>, _now: i64) {
        if docs.into_iter().next().is_some() {
            self.changes_wake.notify_one();
        }
    }

    /// Wakes the dispatcher: messages were written.
    pub fn messages_written(&self) {
        self.dispatch_wake.notify_one();
    }

    /// A connection's id in events: unique across restarts.
    pub fn connection_id(&self, conn: crate::room::ConnId) -> String {
        format!("{}-{}", self.instance, conn.0)
    }
}
