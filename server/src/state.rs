//! `AppState`: the handles every HTTP handler uses. It lives apart from
//! `app.rs` so that routes never import the app that assembles them.

use std::sync::Arc;

use crate::auth::Auth;
use crate::room::registry::Registry;
use crate::store::Store;
use crate::webhooks::Webhooks;

/// Shared by every handler (`web::Data` wraps it in an `Arc`).
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub auth: Auth,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub web: crate::routes::editor::WebAssets,
    pub webhooks: Arc<Webhooks>,
}
