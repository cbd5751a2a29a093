//! HTTP routes: each handler parses, authorizes and calls into `room` or
//! `store`; none holds business logic of its own. Nothing imports `routes`
//! but `app.rs`.

pub mod health;
pub mod ws;

use actix_web::{web, HttpResponse};

use crate::error::ApiError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ws/{doc:.*}", web::get().to(ws::connect))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz));
}

/// Unknown paths get the JSON error shape too.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such route".into()))
}
