//! `GET /healthz` (the process answers) and `GET /readyz` (storage takes
//! writes and the database answers; 503 with the reason otherwise).

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

/// Also says whether `/api` needs the API key (`auth`: `api_key` or `open`),
/// so that the editor's start page knows what to show.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, description = "the process answers: `{status, auth}`")))]
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let auth = if state.auth.dev_mode() {
        "open"
    } else {
        "api_key"
    };
    HttpResponse::Ok().json(json!({ "status": "ok", "auth": auth }))
}

#[utoipa::path(get, path = "/readyz", tag = "operations", security(()), responses((status = 200, description = "storage takes writes and the database answers"), (status = 503, description = "`storage_unavailable`, with the reason: writes fail (disk full, file read-only, database unreachable) or too many wait to be written")))]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.registry.deps.persister.health()?;
    state.store.ping().await.map_err(|e| {
        ApiError::StorageUnavailable(format!("storage unavailable: database not reachable: {e}"))
    })?;
    Ok(HttpResponse::Ok().json(json!({ "status": "ready" })))
}

#[utoipa::path(get, path = "/metrics", tag = "operations", security(()), responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let registry = &state.registry;
    let persister = &registry.deps.persister;
    crate::metrics::set_gauges(
        registry
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
        registry.loaded(),
        &crate::metrics::PersistGauges {
            backlog_updates: persister.backlog(),
            backlog_bytes: persister.backlog_bytes(),
            storage_healthy: persister.health().is_ok(),
        },
    );
    match state.store.outbox_depth().await {
        Ok(pending) => crate::metrics::set_webhook_outbox(pending),
        Err(e) => tracing::warn!(error = %e, "counting the webhook outbox failed"),
    }
    match state.store.oldest_pending().await {
        Ok(endpoints) => {
            crate::metrics::set_webhook_oldest_pending(&endpoints, crate::store::now_ms())
        }
        Err(e) => tracing::warn!(error = %e, "reading the webhook endpoints' lag failed"),
    }
    let body = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body)
}
