//! `GET /ws/{doc}`: the handler checks the document name (400), the token
//! (401, 403) and the handshake, and answers 101 with the admitted
//! `Session` attached. `take_over`, the HTTP server's upgrade service, sends
//! that answer and hands the TCP stream itself to the session, which reads
//! and writes WebSocket frames on it directly: no HTTP buffers, channels or
//! tasks stay between a room and its sockets.

use std::convert::Infallible;
use std::rc::Rc;
use std::sync::Arc;

use actix_codec::Framed;
use actix_http::body::BodySize;
use actix_http::h1::{self, SendResponse};
use actix_http::ws::{hash_key, verify_handshake};
use actix_http::{ConnectionType, Request, Response, StatusCode};
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::SinkExt;
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::auth::{bearer, Perm};
use crate::doc_name::DocName;
use crate::error::ApiError;
use crate::room::session::{Seat, Session};
use crate::room::ConnId;
use crate::state::AppState;

/// Rides on a 101 response from `connect` to `take_over`.
struct Admitted(Session);

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

#[utoipa::path(get, path = "/ws/{doc}", tag = "websocket", security(()),
    params(("doc" = String, Path, description = "document name: 1-255 of A-Z a-z 0-9 - _ . ~ : @", pattern = r"^[A-Za-z0-9._~:@-]{1,255}$"),
        ("token" = Option<String>, Query, description = "client token (or `Authorization: Bearer`); optional in dev mode")),
    responses((status = 101, description = "upgraded: the y-websocket protocol"), (status = 400), (status = 401), (status = 403)))]
pub async fn connect(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let name = DocName::parse(&path)
        .map_err(|e| ApiError::bad_request("invalid_document_name", e.to_string()))?;
    let origins = &state.auth.origins;
    if (state.auth.dev_mode() || origins.configured)
        && !super::browser::origin_allowed_for(origins, &req)
    {
        tracing::warn!(doc = %name, "WebSocket from a foreign origin refused");
        return Err(ApiError::Forbidden(
            "this page's origin may not connect; see TANDEM_ALLOWED_ORIGINS".into(),
        ));
    }
    let access = state.auth.authorize(token(&req), &name).map_err(|e| {
        tracing::warn!(doc = %name, "WebSocket refused: {e}");
        ApiError::from(e)
    })?;
    let upgrade_required = |detail: String| {
        ApiError::bad_request(
            "websocket_upgrade_required",
            format!("expected a WebSocket upgrade: {detail}"),
        )
    };
    verify_handshake(req.head()).map_err(|e| upgrade_required(e.to_string()))?;
    let accept = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|key| hash_key(key.as_bytes()))
        .and_then(|accept| HeaderValue::from_bytes(&accept).ok())
        .ok_or_else(|| upgrade_required("no usable Sec-WebSocket-Key".into()))?;
    let mut response = HttpResponse::SwitchingProtocols()
        .upgrade("websocket")
        .insert_header((header::SEC_WEBSOCKET_ACCEPT, accept))
        .finish();
    response.extensions_mut().insert(Admitted(Session {
        conn: ConnId::next(),
        name,
        read_only: access.perm == Perm::Read,
        user: access.user.as_deref().map(Arc::from),
        expires_at: access.expires_at,
        seat: Seat::take(
            &state.registry.connections,
            state.registry.deps.limits.max_connections,
        ),
        registry: Arc::clone(&state.registry),
    }));
    Ok(response)
}

/// The upgrade service: every WebSocket upgrade request comes here with its
/// connection. The app answers it as any request; a 101 from `connect` is
/// sent and the connection becomes the session's, anything else is sent
/// and the connection closed.
pub async fn take_over<S, B>(
    app: Rc<S>,
    req: Request,
    mut framed: Framed<TcpStream, h1::Codec>,
) -> Result<(), Infallible>
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    let mut response = match app.call(req).await {
        Ok(res) => res.into_parts().1.map_into_boxed_body(),
        Err(e) => e.error_response(),
    };
    let admitted = response.extensions_mut().remove::<Admitted>();
    let mut response: Response<_> = response.into();
    match admitted {
        Some(Admitted(session)) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let (head, _) = response.into_parts();
            if let Err(e) = framed.send(h1::Message::Item((head, BodySize::None))).await {
                tracing::debug!(error = %e, "the upgrade response could not be sent");
                return Ok(());
            }
            // Keep the stream and any early bytes; the HTTP codec and its
            // write buffer are freed now, not when the session ends.
            let (io, early) = {
                let parts = framed.into_parts();
                (parts.io, parts.read_buf)
            };
            let user = session.user.as_deref().unwrap_or("").to_owned();
            let span = tracing::info_span!("conn", doc = %session.name, conn = %session.conn, user);
            // The session runs on the rooms' runtime: a frame read there reaches
            // its room without waking another thread.
            let io = match io.into_std() {
                Ok(io) => io,
                Err(e) => {
                    tracing::debug!(error = %e, "the socket could not be moved");
                    return Ok(());
                }
            };
            let registry = Arc::clone(&session.registry);
            // Graceful shutdown waits for sessions through the tracker.
            let tracked = registry.deps.tracker.token();
            let run = async move {
                let _tracked = tracked;
                match TcpStream::from_std(io) {
                    Ok(io) => session.run(io, early).await,
                    Err(e) => tracing::debug!(error = %e, "the socket could not be moved"),
                }
            };
            // Detached: the HTTP layer's connection task ends here rather than
            // keep its dispatcher (about 2.4 KB) for the session's whole life.
            // Sessions are counted by the registry (the connection limits) and
            // drained at shutdown through the tracker.
            drop(registry.deps.runtime.spawn(run.instrument(span)));
        }
        _ => {
            response
                .head_mut()
                .set_connection_type(ConnectionType::Close);
            let (head, body) = response.into_parts();
            // The app's bodies here are short (errors, or a page asked for
            // with an upgrade header); a body that fails is sent empty.
            let body = actix_web::body::to_bytes(body).await.unwrap_or_default();
            if let Err(e) = SendResponse::new(framed, head.set_body(body)).await {
                tracing::debug!(error = %e, "a refusal could not be sent");
            }
        }
    }
    Ok(())
}
