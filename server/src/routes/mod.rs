//! HTTP routes: each handler parses, authorizes and calls into `room`,
//! `store` or `auth`; none holds business logic of its own. Nothing imports
//! `routes` but `app.rs`.

pub mod access_log;
pub mod browser;
pub mod docs;
pub mod editor;
pub mod health;
pub mod openapi;
pub mod tokens;
pub mod webhooks;
pub mod ws;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Compress, Next};
use actix_web::{web, HttpResponse};

use crate::error::ApiError;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .error_handler(|e, _| ApiError::bad_request("invalid_body", e.to_string()).into()),
    )
    .app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| ApiError::bad_request("invalid_parameter", e.to_string()).into()),
    )
    .app_data(
        web::PathConfig::default()
            .error_handler(|e, _| ApiError::bad_request("invalid_parameter", e.to_string()).into()),
    )
    .route("/ws/{doc:.*}", web::get().to(ws::connect))
    // The editor's files are compressed; WebSocket frames and API bodies are not.
    .service(
        web::resource("/")
            .wrap(Compress::default())
            .route(web::get().to(editor::page)),
    )
    .service(
        web::resource("/d/{doc:.*}")
            .wrap(Compress::default())
            .route(web::get().to(editor::page)),
    )
    .service(
        web::resource("/assets/{file:.*}")
            .wrap(Compress::default())
            .route(web::get().to(editor::file)),
    )
    .service(
        web::resource("/favicon.svg")
            .wrap(Compress::default())
            .route(web::get().to(editor::file)),
    )
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz))
    .route("/metrics", web::get().to(health::metrics))
    .service(
        web::scope("/api")
            .wrap(from_fn(browser::guard_api))
            .wrap(from_fn(require_api_key))
            .route("/openapi.json", web::get().to(openapi::document))
            .route("/tokens", web::post().to(tokens::mint))
            .route("/docs", web::post().to(docs::create))
            .route("/docs", web::get().to(docs::list))
            .route("/docs/{id}", web::get().to(docs::get))
            .route("/docs/{id}", web::delete().to(docs::delete))
            .route("/docs/{id}/update", web::get().to(docs::read_update))
            .route("/docs/{id}/update", web::post().to(docs::apply_update))
            .route("/docs/{id}/json", web::get().to(docs::json))
            .route("/webhooks", web::post().to(webhooks::create))
            .route("/webhooks", web::get().to(webhooks::list))
            .route("/webhooks/{id}", web::get().to(webhooks::get))
            .route("/webhooks/{id}", web::patch().to(webhooks::update))
            .route("/webhooks/{id}", web::delete().to(webhooks::delete))
            .route(
                "/webhooks/{id}/rotate-secret",
                web::post().to(webhooks::rotate_secret),
            )
            .route("/webhooks/{id}/test", web::post().to(webhooks::test))
            .route(
                "/webhooks/{id}/deliveries",
                web::get().to(webhooks::deliveries),
            )
            .route(
                "/webhooks/{id}/deliveries/{delivery}/retry",
                web::post().to(webhooks::retry),
            )
            .default_service(web::to(not_found)),
    );
}

/// Every `/api/*` call needs `Authorization: Bearer <api key>` (SPEC §3),
/// except in dev mode. The OpenAPI document is public.
async fn require_api_key(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if req.path() != "/api/openapi.json" {
        if let Some(state) = req.app_data::<web::Data<AppState>>() {
            let header = req
                .headers()
                .get(actix_web::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if let Err(e) = state.auth.check_api_key(header) {
                tracing::warn!(path = req.path(), "API call refused: {e}");
                return Err(ApiError::from(e).into());
            }
        }
    }
    next.call(req).await
}

/// An opaque page cursor: the position, base64url-encoded.
pub(crate) fn encode_cursor(position: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(position)
}

/// The position a cursor of `encode_cursor` holds.
pub(crate) fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad_cursor())?;
    String::from_utf8(bytes).map_err(|_| bad_cursor())
}

pub(crate) fn bad_cursor() -> ApiError {
    ApiError::bad_request("invalid_cursor", "the cursor is not one this server issued")
}

/// Unknown paths get the JSON error shape too.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such route".into()))
}
