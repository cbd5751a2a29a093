//! `App`: builds the server from `Settings` (opens the store, starts the
//! persister and compactor, binds the listener — port 0 works and the real
//! port is kept), runs it, and shuts it down in order: stop accepting, close
//! sockets with 1001, let rooms finish, flush the persister, close the pool.
//! Every step of the stop has a deadline; a stop that could not write every
//! accepted update ends with an error, so the process exits non-zero.

use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_http::HttpService;
use actix_service::{
    fn_factory, fn_service, map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt,
};
use actix_web::dev::{AppConfig, Server};
use actix_web::web;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::cluster::Cluster;
use crate::config::Settings;
use crate::net::keepalive::Keepalive;
use crate::persist::compactor::{self, CompactConfig, COMPACT_PAGE};
use crate::persist::{PersistConfig, Persister, PersisterThread, Unwritten};
use crate::room::registry::{Registry, RoomDeps};
use crate::routes;
use crate::state::AppState;
use crate::store::{self, Store, StoreError};
use crate::webhooks::dispatcher::{DeliveryError, Dispatcher};
use crate::webhooks::{outbox, Webhooks};

/// How often the compactor looks for long update logs.
const COMPACT_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid settings: {0}")]
    Settings(#[from] crate::config::SettingsError),
    #[error(transparent)]
    Key(#[from] crate::auth::KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why a run did not end cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The final flush failed: accepted updates were not written.
    #[error("stopped without writing everything: {0}")]
    Unwritten(#[from] Unwritten),
}

pub struct App {
    grace: Duration,
    /// Rooms, the persister and the compactor run on this runtime.
    core: CoreRuntime,
    addr: SocketAddr,
    server: Server,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    persister: Persister,
    persister_thread: PersisterThread,
    /// The webhook outbox writer and dispatcher, stopped after the rooms
    /// so that the last connection events are written.
    outbox_tasks: TaskTracker,
    outbox_stop: CancellationToken,
}

impl App {
    pub async fn build(settings: Settings) -> Result<App, StartError> {
        settings.validate()?;
        let metrics = crate::metrics::install();
        let auth = Auth::new(&settings.auth)?;
        if let Some(secret) = &settings.auth.token_secret {
            if secret.0.len() < crate::auth::MIN_SECRET_BYTES {
                tracing::warn!(
                    min_bytes = crate::auth::MIN_SECRET_BYTES,
                    "TANDEM_TOKEN_SECRET is short: anyone holding a client token can try guesses at it offline; use at least 32 random bytes"
                );
            }
        }
        if auth.dev_mode() {
            tracing::warn!("DEV MODE: no TANDEM_API_KEY is set, so the API and every document are open to anyone who can reach {}. Set TANDEM_API_KEY before exposing this server.", settings.bind);
        }
        raise_open_file_limit(settings.limits.max_connections);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let workers = settings.workers.unwrap_or(cores);
        // One core is left to the HTTP workers and SQLite's thread: every
        // update goes through SQLite, and a multi-thread runtime wakes idle
        // siblings to look for work. On 2 cores, one room thread against two:
        // CPU per update at N = 1 lower or equal in 4 of 4 runs of benchmark (a).
        let room_threads = settings
            .room_threads
            .unwrap_or(cores.saturating_sub(1).max(1));
        crate::net::send_ring::set_enabled(settings.io_uring);
        let core = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(room_threads)
            .thread_name("tandem-core")
            .enable_all()
            .build()
            .map(|rt| CoreRuntime(Some(rt)))
            .map_err(StartError::Runtime)?;
        let store = store::open(&settings.database_url).await?;
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();

        let metrics_handles = crate::metrics::Metrics::new();
        let cluster = match &settings.redis_url {
            Some(url) => Some(
                Cluster::join(
                    store.as_ref(),
                    url,
                    &settings.redis_prefix,
                    metrics_handles.clone(),
                )
                .await?,
            ),
            None => None,
        };
        let (cluster, cluster_tasks) = match cluster {
            Some((c, t)) => (Some(c), Some(t)),
            None => (None, None),
        };
        let webhooks = Webhooks::start(
            Arc::clone(&store),
            settings.webhooks.clone(),
            settings.history.clone(),
        )
        .await?;
        let dispatcher = Dispatcher::new(Arc::clone(&webhooks))?;
        // The persister outlives the rooms: it stops once they have stopped
        // and everything they queued is on the disk.
        let (persister, persister_thread) = Persister::start(
            Arc::clone(&store),
            metrics_handles.clone(),
            Arc::clone(&webhooks),
            PersistConfig {
                sync_interval: settings.sync_interval,
                backlog_bytes: settings.persist_backlog_bytes,
                cluster: cluster.clone(),
            },
        )
        .map_err(StartError::Runtime)?;
        let core_handle = core.handle();
        // So do the outbox writer and the dispatcher (which finishes its
        // attempts in flight); the debouncer stops with the rooms.
        let outbox_tasks = TaskTracker::new();
        let outbox_stop = CancellationToken::new();
        outbox_tasks.spawn_on(
            outbox::run_writer(Arc::clone(&webhooks), outbox_stop.clone()),
            &core_handle,
        );
        outbox_tasks.spawn_on(dispatcher.run(outbox_stop.clone()), &core_handle);
        // The cluster's tasks too: the last commits are published.
        if let (Some(c), Some(tasks)) = (&cluster, cluster_tasks) {
            c.start(tasks, &outbox_tasks, &core_handle, outbox_stop.clone());
        }
        outbox_tasks.close();
        tracker.spawn_on(
            outbox::run_debouncer(Arc::clone(&webhooks), shutdown.clone()),
            &core_handle,
        );
        tracker.spawn_on(
            outbox::run_log_sweeper(Arc::clone(&webhooks), shutdown.clone()),
            &core_handle,
        );
        // Endpoint changes made through other nodes sharing the database.
        tracker.spawn_on(
            Arc::clone(&webhooks).watch_config(shutdown.clone()),
            &core_handle,
        );
        tracker.spawn_on(
            compactor::run_compactor(
                Arc::clone(&store),
                CompactConfig {
                    min_updates: settings.rooms.compact_after_updates,
                    min_bytes: settings.rooms.compact_after_bytes,
                    page: COMPACT_PAGE,
                    every: COMPACT_EVERY,
                    history: settings.history.enabled,
                },
                shutdown.clone(),
            ),
            &core_handle,
        );

        if settings.history.enabled {
            // Often enough that a short retention (tests) is seen within a
            // fraction of itself; at most hourly.
            let every = (settings.history.retention / 4)
                .clamp(Duration::from_secs(1), Duration::from_secs(3600));
            tracker.spawn_on(
                crate::history::run_retention(
                    Arc::clone(&store),
                    settings.history.clone(),
                    every,
                    shutdown.clone(),
                ),
                &core_handle,
            );
        }

        let registry = Registry::new(RoomDeps {
            store: Arc::clone(&store),
            persister: persister.clone(),
            limits: settings.limits.clone(),
            rooms: settings.rooms.clone(),
            metrics: metrics_handles,
            tracker: tracker.clone(),
            shutdown: shutdown.clone(),
            runtime: core_handle.clone(),
            webhooks: Arc::clone(&webhooks),
            cluster: cluster.clone(),
            keepalive: Keepalive::start(
                settings.rooms.ping_interval,
                settings.rooms.ping_timeout,
                crate::room::session::KEEPALIVE,
                shutdown.clone(),
            )
            .map_err(StartError::Runtime)?,
        });
        let app_registry = Arc::clone(&registry);
        let state = web::Data::new(AppState {
            store: Arc::clone(&store),
            registry: Arc::clone(&registry),
            auth,
            metrics,
            web: match settings.web_dir.clone() {
                Some(dir) => {
                    tracing::info!(dir = %dir.display(), "serving the editor from a folder");
                    crate::routes::editor::WebAssets::Dir(dir)
                }
                None => crate::routes::editor::WebAssets::Embedded,
            },
            webhooks,
        });

        let listener = TcpListener::bind(&settings.bind).map_err(|source| StartError::Bind {
            addr: settings.bind.clone(),
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: settings.bind.clone(),
            source,
        })?;
        let make_app = move || {
            actix_web::App::new()
                .app_data(state.clone())
                .configure(routes::configure)
                .default_service(web::to(routes::not_found))
                .wrap(actix_web::middleware::from_fn(routes::access_log::log))
        };
        // actix-web's `HttpServer` has no upgrade hook, so the same HTTP
        // service is assembled here with one: WebSocket upgrades go to
        // `ws::take_over`, which answers them through the app and keeps the
        // socket (see routes/ws.rs).
        let builder = Server::build();
        // Idle keep-alive connections close as soon as a graceful stop
        // starts (a request in progress finishes first); without this, a
        // stop waited for every idle client's keep-alive to run out.
        let stopping = builder.graceful_shutdown_signal();
        let server = builder
            .workers(workers)
            .disable_signals()
            .shutdown_timeout(settings.rooms.shutdown_timeout.as_secs().max(1))
            .listen("tandem-http", listener, move || {
                let upgrade_app = make_app.clone();
                let upgrade = fn_factory(move || {
                    let app = upgrade_app()
                        .into_factory()
                        .new_service(AppConfig::default());
                    async move {
                        let app = Rc::new(app.await?);
                        Ok::<_, ()>(fn_service(move |(req, framed)| {
                            routes::ws::take_over(Rc::clone(&app), req, framed)
                        }))
                    }
                });
                let app = make_app()
                    .into_factory()
                    .map_err(|e: actix_web::Error| e.error_response());
                let stopping = stopping.clone();
                HttpService::build()
                    .graceful_shutdown_signal(move || {
                        let stopping = stopping.clone();
                        async move { stopping.notified().await }
                    })
                    .client_request_timeout(Duration::from_secs(5))
                    .client_disconnect_timeout(Duration::from_secs(1))
                    // Small frames must leave at once: Nagle's algorithm would hold
                    // one back until the previous is acknowledged.
                    .tcp_nodelay(true)
                    .local_addr(addr)
                    .upgrade(upgrade)
                    .h1(map_config(app, |()| AppConfig::default()))
                    .tcp()
            })
            .map_err(|source| StartError::Bind {
                addr: settings.bind.clone(),
                source,
            })?
            .run();
        tracing::info!("listening on http://{addr}");
        Ok(App {
            grace: settings.rooms.shutdown_timeout,
            core,
            addr,
            server,
            shutdown,
            tracker,
            store,
            registry: app_registry,
            persister,
            persister_thread,
            outbox_tasks,
            outbox_stop,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The rooms (for tests that drive a room directly).
    pub fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry)
    }

    /// Cancelling this token stops the server gracefully (tests use it in
    /// place of a signal).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until SIGTERM, SIGINT or the shutdown token, then stops in
    /// order. An error when accepted updates could not be written before
    /// the stop's deadline (storage failing): the caller exits non-zero.
    pub async fn run_until_stopped(self) -> Result<(), RunError> {
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received; shutting down");
            shutdown.cancel();
        });
        let handle = self.server.handle();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            // Stop accepting; sessions see the token and close with 1001.
            handle.stop(true).await;
        });
        self.server.await?;

        self.tracker.close();
        if tokio::time::timeout(self.grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some rooms did not stop in time");
        }
        // The persister gets the grace period to write and sync what the
        // rooms queued, retrying while storage fails; then it gives up.
        let deadline = tokio::time::Instant::now() + self.grace;
        let flushed = self.persister.flush_durable_by(deadline).await;
        let backlog = self.persister.backlog();
        let stopped = self.persister_thread.stop_by(deadline).await;
        if let Err(e) = &flushed {
            tracing::error!(backlog, error = %e, "could not write every update before stopping");
        }
        if let Some(cluster) = &self.registry.deps.cluster {
            cluster.leave().await;
        }
        // Events queued by the last leaves are written; attempts in flight finish.
        self.outbox_stop.cancel();
        if tokio::time::timeout(self.grace, self.outbox_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("webhook deliveries still in flight at stop; they will be retried after the next start");
        }
        if tokio::time::timeout(self.grace, self.store.close())
            .await
            .is_err()
        {
            tracing::warn!("the database's connections did not close in time");
        }
        drop(self.core);
        match stopped {
            Ok(()) => {
                tracing::info!("stopped");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "stopped; accepted updates were not written");
                Err(e.into())
            }
        }
    }
}

/// The core runtime. It is dropped from async code (at the end of a run, or
/// when a start fails half-way), where a plain `Runtime` would panic, so it
/// shuts down in the background instead: by then every task is finished.
struct CoreRuntime(Option<tokio::runtime::Runtime>);

impl CoreRuntime {
    fn handle(&self) -> tokio::runtime::Handle {
        match &self.0 {
            Some(rt) => rt.handle().clone(),
            None => tokio::runtime::Handle::current(),
        }
    }
}

impl Drop for CoreRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                tracing::error!("cannot listen for signals; stop the server with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Every connection holds a socket, and distributions start services with a
/// soft limit of 1,024 open files, far below what one node serves: raise the
/// soft limit to the hard one, and say so, or warn when even the hard limit
/// cannot hold `max_connections`.
fn raise_open_file_limit(max_connections: usize) {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft);
    match (before, rlimit::increase_nofile_limit(u64::MAX)) {
        (Ok(before), Ok(after)) => {
            if after > before {
                tracing::info!(before, after, "raised the soft limit on open files");
            }
            if after < max_connections as u64 {
                tracing::warn!(
                    limit = after,
                    max_connections,
                    "the open-file limit is below TANDEM_MAX_CONNECTIONS: connections past it will be refused by the kernel; raise the hard limit (ulimit -Hn, LimitNOFILE=)"
                );
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "could not read or raise the open-file limit");
        }
    }
}
