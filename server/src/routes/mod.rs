//! HTTP routes: each handler parses, authorizes and calls into `room`,
//! `store` or `auth`; none holds business logic of its own. Nothing imports
//! `routes` but `app.rs`.

pub mod access_log;
pub mod browser;
pub mod docs;
pub mod editor;
pub mod health;
pub mod history;
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
    .service(resource("/ws/{doc:.*}", "GET").route(web::get().to(ws::connect)))
    // The editor's files are compressed; WebSocket frames and API bodies are not.
    .service(
        web::resource("/")
            .wrap(Compress::default())
            .route(web::get().to(editor::page)),
    )
    .service(
        web::resource("/admin")
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
    .service(resource("/healthz", "GET").route(web::get().to(health::healthz)))
    .service(resource("/readyz", "GET").route(web::get().to(health::readyz)))
    .service(resource("/metrics", "GET").route(web::get().to(health::metrics)))
    .service(
        web::scope("/api")
            .wrap(from_fn(require_api_key))
            .service(resource("/openapi.json", "GET").route(web::get().to(openapi::document)))
            .service(resource("/tokens", "POST").route(guarded(web::post().to(tokens::mint))))
            .service(
                resource("/docs", "GET, POST")
                    .route(web::get().to(docs::list))
                    .route(guarded(web::post().to(docs::create))),
            )
            .service(
                resource("/docs/{id}", "GET, DELETE")
                    .route(web::get().to(docs::get))
                    .route(guarded(web::delete().to(docs::delete))),
            )
            .service(
                resource("/docs/{id}/update", "GET, POST")
                    .route(web::get().to(docs::read_update))
                    .route(guarded(web::post().to(docs::apply_update))),
            )
            .service(resource("/docs/{id}/json", "GET").route(web::get().to(docs::json)))
            .service(
                resource("/docs/{id}/versions", "GET, POST")
                    .route(web::get().to(history::list))
                    .route(guarded(web::post().to(history::create))),
            )
            .service(
                resource("/docs/{id}/versions/{version}", "GET, PATCH, DELETE")
                    .route(web::get().to(history::get))
                    .route(guarded(web::patch().to(history::rename)))
                    .route(guarded(web::delete().to(history::delete))),
            )
            .service(
                resource("/docs/{id}/versions/{version}/restore", "POST")
                    .route(guarded(web::post().to(history::restore))),
            )
            .service(resource("/docs/{id}/diff", "GET").route(web::get().to(history::diff)))
            .service(
                resource("/webhooks", "GET, POST")
                    .route(web::get().to(webhooks::list))
                    .route(guarded(web::post().to(webhooks::create))),
            )
            .service(
                resource("/webhooks/{id}", "GET, PATCH, DELETE")
                    .route(web::get().to(webhooks::get))
                    .route(guarded(web::patch().to(webhooks::update)))
                    .route(guarded(web::delete().to(webhooks::delete))),
            )
            .service(
                resource("/webhooks/{id}/rotate-secret", "POST")
                    .route(guarded(web::post().to(webhooks::rotate_secret))),
            )
            .service(
                resource("/webhooks/{id}/test", "POST")
                    .route(guarded(web::post().to(webhooks::test))),
            )
            .service(
                resource("/webhooks/{id}/recover", "POST")
                    .route(guarded(web::post().to(webhooks::recover))),
            )
            .service(
                resource("/webhooks/{id}/deliveries", "GET")
                    .route(web::get().to(webhooks::deliveries)),
            )
            .service(
                resource("/webhooks/{id}/deliveries/{delivery}/retry", "POST")
                    .route(guarded(web::post().to(webhooks::retry))),
            )
            .default_service(web::to(not_found)),
    );
}

/// A resource answering the methods in `allow` (its routes) and any other
/// method with 405 and that `Allow` header, which lists what the OpenAPI
/// document lists for the path.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed { allow })
    }))
}

/// A state-changing API route, behind the dev-mode guard (routes/browser.rs).
/// Per route rather than for the whole scope, so that a method a path does
/// not have is answered 405 whatever its origin or body type.
fn guarded(route: actix_web::Route) -> actix_web::Route {
    route.wrap(from_fn(browser::guard_api))
}

/// Every `/api/*` call needs `Authorization: Bearer <api key>` (SPEC §3),
/// except in dev mode. The OpenAPI document is public.
async fn require_api_key(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if req.path() != "/api/openapi.json" && !checks_its_own_caller(&req) {
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

/// History's routes take a client token for their document as well as the
/// API key (the editor's history panel has only its token): their handlers
/// check the caller themselves (`history::caller`).
fn checks_its_own_caller(req: &ServiceRequest) -> bool {
    let path = req.path();
    let Some(rest) = path.strip_prefix("/api/docs/") else {
        return false;
    };
    let Some((_, tail)) = rest.split_once('/') else {
        return false;
    };
    let versioned = req
        .query_string()
        .split('&')
        .any(|kv| kv.starts_with("version="));
    tail == "versions"
        || tail.starts_with("versions/")
        || tail == "diff"
        || ((tail == "update" || tail == "json") && versioned && req.method() == "GET")
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
