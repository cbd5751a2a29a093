//! Prometheus metrics (`GET /metrics`). Counters on the relay path are
//! handles resolved once, so counting costs an atomic add; gauges are read
//! when scraped, so they cost nothing in between. Names are `tandem_*` with
//! unit suffixes.

use std::sync::OnceLock;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls reuse it).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .ok()?
                .install_recorder()
                .map_err(|e| tracing::warn!(error = %e, "metrics recorder unavailable"))
                .ok()
        })
        .clone()
}

/// Handles to the counters the hot paths touch.
#[derive(Clone)]
pub struct Metrics {
    pub updates_received: Counter,
    pub update_bytes_received: Counter,
    pub frames_relayed: Counter,
    pub bytes_relayed: Counter,
    pub clients_dropped_slow: Counter,
    pub malformed_messages: Counter,
    pub persist_seconds: Histogram,
    pub persist_batch_updates: Histogram,
    pub sync_seconds: Histogram,
    /// Cluster messages not published (the publisher was behind, or Redis
    /// unreachable): other nodes catch up from the database.
    pub cluster_dropped: Counter,
    /// Updates (and snapshots) a node read from the database because Redis
    /// did not bring them.
    pub cluster_filled: Counter,
    /// Times the periodic check found a resident document behind the
    /// database.
    pub cluster_behind: Counter,
    pub cluster_malformed: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            updates_received: metrics::counter!("tandem_updates_received_total"),
            update_bytes_received: metrics::counter!("tandem_update_bytes_received_total"),
            frames_relayed: metrics::counter!("tandem_frames_relayed_total"),
            bytes_relayed: metrics::counter!("tandem_relayed_bytes_total"),
            clients_dropped_slow: metrics::counter!("tandem_clients_dropped_total", "reason" => "send_queue_full"),
            malformed_messages: metrics::counter!("tandem_malformed_messages_total"),
            persist_seconds: metrics::histogram!("tandem_persist_seconds"),
            persist_batch_updates: metrics::histogram!("tandem_persist_batch_updates"),
            sync_seconds: metrics::histogram!("tandem_sync_seconds"),
            cluster_dropped: metrics::counter!("tandem_cluster_messages_dropped_total"),
            cluster_filled: metrics::counter!("tandem_cluster_updates_filled_total"),
            cluster_behind: metrics::counter!("tandem_cluster_documents_behind_total"),
            cluster_malformed: metrics::counter!("tandem_cluster_malformed_messages_total"),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts one webhook attempt to `endpoint` (`delivered` or `failed`) and
/// its duration, and sets the endpoint's success ratio over its recent
/// attempts from this node.
pub fn webhook_attempt(endpoint: &str, delivered: bool, seconds: f64, success_ratio: f64) {
    let outcome = if delivered { "delivered" } else { "failed" };
    metrics::counter!("tandem_webhook_attempts_total", "endpoint" => endpoint.to_owned(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("tandem_webhook_attempt_seconds").record(seconds);
    metrics::gauge!("tandem_webhook_success_ratio", "endpoint" => endpoint.to_owned())
        .set(success_ratio);
}

/// Messages in the webhook outbox not yet delivered (read at scrape time).
pub fn set_webhook_outbox(pending: i64) {
    metrics::gauge!("tandem_webhook_outbox_pending").set(pending as f64);
}

/// Per endpoint, how long its oldest undelivered message has waited (read
/// at scrape time; 0 when nothing is pending).
pub fn set_webhook_oldest_pending(endpoints: &[(String, Option<i64>)], now_ms: i64) {
    for (endpoint, oldest) in endpoints {
        let age = oldest.map_or(0.0, |at| (now_ms.saturating_sub(at)).max(0) as f64 / 1000.0);
        metrics::gauge!("tandem_webhook_oldest_pending_seconds", "endpoint" => endpoint.clone())
            .set(age);
    }
}

/// What the persister holds, read at scrape time.
pub struct PersistGauges {
    pub backlog_updates: usize,
    pub backlog_bytes: usize,
    pub storage_healthy: bool,
}

/// Sets the gauges that are read at scrape time.
pub fn set_gauges(connections: usize, rooms: usize, persist: &PersistGauges) {
    metrics::gauge!("tandem_connections").set(connections as f64);
    metrics::gauge!("tandem_rooms_loaded").set(rooms as f64);
    metrics::gauge!("tandem_persist_backlog_updates").set(persist.backlog_updates as f64);
    metrics::gauge!("tandem_persist_backlog_bytes").set(persist.backlog_bytes as f64);
    set_storage_healthy(persist.storage_healthy);
}

/// 1 while storage takes writes, 0 while it fails (SPEC §6).
pub fn set_storage_healthy(healthy: bool) {
    metrics::gauge!("tandem_storage_healthy").set(if healthy { 1.0 } else { 0.0 });
}

/// Counts stored rows set aside because they do not decode.
pub fn rows_quarantined(rows: u64) {
    metrics::counter!("tandem_quarantined_rows_total").increment(rows);
}

/// 1 while this node is subscribed to Redis, 0 while not (it then serves
/// through the database alone).
pub fn set_redis_connected(up: bool) {
    metrics::gauge!("tandem_redis_connected").set(if up { 1.0 } else { 0.0 });
}
