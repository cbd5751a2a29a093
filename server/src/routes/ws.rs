//! `GET /ws/{doc}`: checks the document name (400 before the upgrade),
//! upgrades, and hands the connection to a `Session`.
//!
//! The upgrade's response body is replaced by an `OutboxBody`, which writes
//! the room's frames without a copy per peer; actix-ws still parses what the
//! client sends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::{dev, web, FromRequest, HttpRequest, HttpResponse};
use tracing::Instrument;

use crate::app::AppState;
use crate::auth::{bearer, Perm};
use crate::doc_name::DocName;
use crate::error::{ApiError, CloseCode};
use crate::room::fanout::{Outbox, OutboxBody};
use crate::room::frame_guard::FrameGuard;
use crate::room::session::Session;
use crate::room::ConnId;

/// The client token: `?token=` or `Authorization: Bearer`.
fn token(req: &HttpRequest) -> Option<&str> {
    let from_query = req.query_string().split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "token" && !v.is_empty()).then_some(v)
    });
    from_query.or_else(|| {
        bearer(
            req.headers()
                .get(actix_web::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        )
    })
}

#[utoipa::path(get, path = "/ws/{doc}", tag = "websocket",
    params(("doc" = String, Path, description = "document name"), ("token" = Option<String>, Query, description = "client token")),
    responses((status = 101, description = "upgraded: the y-websocket protocol"), (status = 400), (status = 401), (status = 403)))]
pub async fn connect(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let name = DocName::parse(&path)
        .map_err(|e| ApiError::bad_request("invalid_document_name", e.to_string()))?;
    let access = state.auth.authorize(token(&req), &name).map_err(|e| {
        tracing::warn!(doc = %name, "WebSocket refused: {e}");
        ApiError::from(e)
    })?;
    let limits = &state.registry.deps.limits;
    // Frames over the size limit are refused from their header (see FrameGuard).
    let oversize = Arc::new(AtomicBool::new(false));
    let guarded = FrameGuard::new(
        body.into_inner(),
        limits.max_message_bytes,
        Arc::clone(&oversize),
    );
    let guarded: actix_http::BoxedPayloadStream = Box::pin(guarded);
    let mut guarded = dev::Payload::Stream { payload: guarded };
    let body = web::Payload::from_request(&req, &mut guarded)
        .await
        .map_err(|e| ApiError::Unexpected(e.to_string().into()))?;
    let (response, _unused_session, stream) = actix_ws::handle(&req, body).map_err(|e| {
        ApiError::bad_request(
            "websocket_upgrade_required",
            format!("expected a WebSocket upgrade: {e}"),
        )
    })?;
    let stream = stream
        .max_frame_size(limits.max_message_bytes)
        .aggregate_continuations()
        .max_continuation_size(limits.max_message_bytes);

    let outbox = Outbox::new(limits.send_queue_bytes);
    let (head, original_body) = response.into_parts();
    let response = head.set_body(OutboxBody::new(Arc::clone(&outbox)));

    let conn = ConnId::next();
    let registry = Arc::clone(&state.registry);
    let open = registry.connections.fetch_add(1, Ordering::Relaxed) + 1;
    if open > limits.max_connections {
        registry.connections.fetch_sub(1, Ordering::Relaxed);
        tracing::warn!(doc = %name, open, "server full; refusing the connection");
        outbox.close(CloseCode::TryAgainLater, "server full");
        return Ok(response.map_into_boxed_body());
    }
    let session = Session {
        conn,
        name: name.clone(),
        read_only: access.perm == Perm::Read,
        user: access.user.as_deref().map(Arc::from),
        expires_at: access.expires_at,
        oversize,
        outbox,
        registry,
    };
    let user = access.user.as_deref().unwrap_or("");
    let span = tracing::info_span!("conn", doc = %name, %conn, user);
    // The original body must outlive the session: dropping it would tell
    // actix-ws' reader that the connection closed.
    state
        .registry
        .deps
        .tracker
        .spawn_local(session.run(stream, original_body).instrument(span));
    Ok(response.map_into_boxed_body())
}
