//! The access log: one line per HTTP request, WebSocket upgrades included,
//! at info level on the `tandem::access` target (filter it with
//! `RUST_LOG=info,tandem::access=off`). The path is logged without its
//! query string, which may carry a client token. Every request gets a
//! request id: the client's `x-request-id` when it is a short printable
//! string, a new UUID otherwise; the response echoes it.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest `x-request-id` taken from a client.
const MAX_REQUEST_ID: usize = 128;

pub async fn log(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = request_id(req.headers().get(&REQUEST_ID));
    let method = req.method().clone();
    let path = req.path().to_owned();
    let line = |status: u16| {
        tracing::info!(
            target: "tandem::access",
            method = %method,
            path = %path,
            status,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            request_id = %id,
            "request"
        );
    };
    let header = HeaderValue::from_str(&id).ok();
    match next.call(req).await {
        Ok(mut res) => {
            if let Some(value) = header {
                res.headers_mut().insert(REQUEST_ID, value);
            }
            line(res.status().as_u16());
            Ok(res)
        }
        // An error from a middleware (the API key check) becomes its
        // response only further out: it is built here to carry the id.
        Err(e) => {
            let mut response = e.error_response();
            if let Some(value) = header {
                response.headers_mut().insert(REQUEST_ID, value);
            }
            line(response.status().as_u16());
            Err(InternalError::from_response(e, response).into())
        }
    }
}

/// The client's id when it is usable, a new one otherwise.
fn request_id(given: Option<&HeaderValue>) -> String {
    given
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| {
            !v.is_empty() && v.len() <= MAX_REQUEST_ID && v.bytes().all(|b| b.is_ascii_graphic())
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usable_client_id_is_kept_and_others_replaced() {
        let keep = HeaderValue::from_static("abc-123");
        assert_eq!(request_id(Some(&keep)), "abc-123");
        let spaced = HeaderValue::from_static("a b");
        assert_ne!(request_id(Some(&spaced)), "a b");
        let long = HeaderValue::from_str(&"x".repeat(200)).expect("valid header");
        assert_eq!(request_id(Some(&long)).len(), 36);
        assert_eq!(request_id(None).len(), 36);
    }
}
