//! Keeps pages of other origins from using the server through a visitor's
//! browser (SPEC §3). A page anywhere can open a WebSocket to
//! `127.0.0.1:8080` or post a form to it, and in dev mode nothing else
//! would stop it, so:
//!
//! - a WebSocket upgrade whose `Origin` is neither the server's own (the
//!   request's `Host`) nor listed in `TANDEM_ALLOWED_ORIGINS` is refused
//!   with 403 (in dev mode, and with an API key when the list is set);
//! - in dev mode, a state-changing API call from a foreign `Origin` is
//!   refused with 403, and one without a JSON body type (or
//!   `application/octet-stream` for an update) with 415: those are the
//!   types a page cannot send cross-origin without the browser asking
//!   first, and this server never says yes.
//!
//! Requests without an `Origin` (servers, command-line tools) pass.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest};

use crate::auth::AllowedOrigins;
use crate::error::ApiError;
use crate::state::AppState;

/// Whether the request's `Origin` (if any) is allowed.
pub fn origin_allowed_for(allowed: &AllowedOrigins, req: &HttpRequest) -> bool {
    origin_allowed(allowed, req.headers())
}

fn origin_allowed(allowed: &AllowedOrigins, headers: &header::HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    origin
        .to_str()
        .is_ok_and(|origin| allowed.allows(origin, host))
}

/// The middleware of every state-changing API route, for dev mode (with an
/// API key, a page cannot forge the `Authorization` header, so this adds
/// nothing there). Per route (routes/mod.rs), so that a method a path lacks
/// is 405 whatever the request's origin or body type.
pub async fn guard_api(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state_changing = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if state_changing {
        if let Some(state) = req.app_data::<web::Data<AppState>>() {
            if state.auth.dev_mode() {
                check_dev_mode_call(&state.auth.origins, &req)?;
            }
        }
    }
    next.call(req).await
}

fn check_dev_mode_call(allowed: &AllowedOrigins, req: &ServiceRequest) -> Result<(), ApiError> {
    if !origin_allowed(allowed, req.headers()) {
        tracing::warn!(path = req.path(), "API call from a foreign origin refused");
        return Err(ApiError::Forbidden(
            "this origin may not change this server (dev mode); see TANDEM_ALLOWED_ORIGINS".into(),
        ));
    }
    if *req.method() == Method::DELETE {
        return Ok(());
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let binary = req.path().ends_with("/update");
    let expected = if binary {
        "application/octet-stream"
    } else {
        "application/json"
    };
    if content_type.as_deref() != Some(expected) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "send the body as {expected} (dev mode refuses other types, which any web page could send)"
        )));
    }
    Ok(())
}
