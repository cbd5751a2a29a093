//! The document API (SPEC §4): create, list, get, delete, read and apply
//! updates, and the JSON rendering. Live documents are reached through their
//! room (by command and reply), never by a shared lock.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tandem_crdt::{ApplyError, DocState};
use utoipa::{IntoParams, ToSchema};
use yrs::StateVector;

use crate::doc_name::DocName;
use crate::error::ApiError;
use crate::room::task::RoomCmd;
use crate::state::AppState;
use crate::store::{DocId, DocMeta, StoreError};
use crate::time::rfc3339;

use super::{decode_cursor, encode_cursor};
use crate::webhooks::events;

/// How long `POST …/update` waits for its write to become durable.
const DURABLE_WAIT: Duration = Duration::from_secs(30);
const DEFAULT_PAGE: u32 = 50;
/// Largest JSON body a small request (create) may carry.
const SMALL_BODY: usize = 64 * 1024;
const MAX_PAGE: u32 = 1000;

/// A document's metadata.
#[derive(Serialize, ToSchema)]
pub struct DocInfo {
    /// The document name.
    pub id: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339: the last time an update was stored.
    pub updated_at: String,
    /// Bytes stored: snapshot plus update log.
    pub size_bytes: i64,
    /// WebSocket connections right now.
    pub clients: usize,
}

#[derive(Serialize, ToSchema)]
pub struct DocList {
    pub items: Vec<DocInfo>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, ToSchema, Default)]
pub struct CreateDoc {
    /// The name (1-255 of A-Z a-z 0-9 - _ . ~ : @); a UUID is generated when absent.
    #[schema(pattern = r"^[A-Za-z0-9._~:@-]{1,255}$")]
    pub id: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    /// Only names starting with this.
    pub prefix: Option<String>,
    /// Page size, 1–1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct UpdateQuery {
    /// A base64 (standard or URL-safe, padded or not) Yjs state vector:
    /// only what it lacks is returned.
    #[param(pattern = r"^[A-Za-z0-9+/_-]+={0,2}$")]
    pub sv: Option<String>,
    /// A version id: the document as it was at that version (SPEC §9).
    pub version: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct JsonQuery {
    /// A version id: the document as it was at that version (SPEC §9).
    pub version: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Applied {
    /// False when the update carried nothing new.
    pub applied: bool,
}

/// Reads a request body of at most `limit` bytes (413 with the JSON error
/// shape beyond it), without buffering more than the limit.
pub(crate) async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(format!(
                "the body is larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn info(meta: DocMeta, clients: usize) -> DocInfo {
    DocInfo {
        clients,
        id: meta.name,
        created_at: rfc3339(meta.created_at),
        updated_at: rfc3339(meta.updated_at),
        size_bytes: meta.size_bytes,
    }
}

/// Each document with its connections across the cluster: a room loaded
/// here counts its own and what the other nodes announced to it; for the
/// others, what the nodes announced through Redis.
async fn infos(state: &AppState, metas: Vec<DocMeta>) -> Vec<DocInfo> {
    let here: Vec<Option<usize>> = metas
        .iter()
        .map(|m| state.registry.loaded_clients(&m.name))
        .collect();
    let mut elsewhere = vec![0; metas.len()];
    if let Some(cluster) = &state.registry.deps.cluster {
        let (at, ids): (Vec<usize>, Vec<DocId>) = here
            .iter()
            .zip(&metas)
            .enumerate()
            .filter(|(_, (h, _))| h.is_none())
            .map(|(i, (_, m))| (i, m.id))
            .unzip();
        if !ids.is_empty() {
            for (i, n) in at.into_iter().zip(cluster.clients_elsewhere(&ids).await) {
                elsewhere[i] = n;
            }
        }
    }
    metas
        .into_iter()
        .zip(here.into_iter().zip(elsewhere))
        .map(|(m, (here, elsewhere))| info(m, here.unwrap_or(elsewhere)))
        .collect()
}

async fn one_info(state: &AppState, meta: DocMeta) -> DocInfo {
    let clients = match (
        state.registry.loaded_clients(&meta.name),
        &state.registry.deps.cluster,
    ) {
        (Some(n), _) => n,
        (None, Some(cluster)) => cluster
            .clients_elsewhere(&[meta.id])
            .await
            .first()
            .copied()
            .unwrap_or(0),
        (None, None) => 0,
    };
    info(meta, clients)
}

pub fn parse_name(raw: &str) -> Result<DocName, ApiError> {
    DocName::parse(raw).map_err(|e| ApiError::bad_request("invalid_document_name", e.to_string()))
}

/// A write that failed: when storage itself fails, the persister is told,
/// so that `/readyz` and other writes say so until a write succeeds again.
fn write_failed(state: &AppState, e: StoreError) -> ApiError {
    if e.is_unavailable() {
        state.registry.deps.persister.note_failure(&e);
    }
    e.into()
}

/// Refuses a write while storage fails or is behind (503
/// `storage_unavailable`), rather than queueing it without bound.
fn accepting(state: &AppState) -> Result<(), ApiError> {
    Ok(state.registry.deps.persister.accepting()?)
}

/// The document, or 404.
pub(crate) async fn existing(state: &AppState, name: &DocName) -> Result<DocMeta, ApiError> {
    state
        .store
        .get(name.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no document named {name:?}")))
}

#[utoipa::path(post, path = "/api/docs", tag = "documents",
    request_body(content = Option<CreateDoc>, description = "Optional; `{}`, `null` or no body generates an id"),
    responses((status = 201, body = DocInfo), (status = 400), (status = 401), (status = 409)))]
pub async fn create(
    state: web::Data<AppState>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(body, SMALL_BODY).await?;
    // No body and a JSON `null` (what the document allows) both mean "no id".
    let req: CreateDoc = if body.iter().all(u8::is_ascii_whitespace) {
        CreateDoc::default()
    } else {
        serde_json::from_slice::<Option<CreateDoc>>(&body)
            .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?
            .unwrap_or_default()
    };
    let name = match req.id {
        Some(id) => parse_name(&id)?,
        None => parse_name(&uuid::Uuid::new_v4().to_string())?,
    };
    accepting(&state)?;
    let now = crate::store::now_ms();
    let created = state
        .webhooks
        .wants(events::DOCUMENT_CREATED)
        .then(|| events::document_created(name.as_str(), now, events::Source::Api));
    let meta = state
        .store
        .create(name.as_str(), now, created.as_ref())
        .await
        .map_err(|e| write_failed(&state, e))?
        .ok_or_else(|| ApiError::Conflict(format!("a document named {name:?} exists")))?;
    if created.is_some() {
        state.webhooks.messages_written();
    }
    tracing::info!(doc = %name, "document created through the API");
    Ok(HttpResponse::Created().json(one_info(&state, meta).await))
}

#[utoipa::path(get, path = "/api/docs", tag = "documents", params(ListQuery),
    responses((status = 200, body = DocList), (status = 400), (status = 401)))]
pub async fn list(
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be 1-{MAX_PAGE}"),
        ));
    }
    let after = match &query.cursor {
        Some(c) => Some(decode_cursor(c)?),
        None => None,
    };
    let prefix = query.prefix.as_deref().unwrap_or("");
    let page = state.store.list(prefix, after.as_deref(), limit).await?;
    let next_cursor = (page.len() == limit as usize)
        .then(|| page.last().map(|m| encode_cursor(&m.name)))
        .flatten();
    let items = infos(&state, page).await;
    Ok(HttpResponse::Ok().json(DocList { items, next_cursor }))
}

#[utoipa::path(get, path = "/api/docs/{id}", tag = "documents",
    params(("id" = String, Path, description = "document name: 1-255 of A-Z a-z 0-9 - _ . ~ : @", pattern = r"^[A-Za-z0-9._~:@-]{1,255}$")),
    responses((status = 200, body = DocInfo), (status = 400), (status = 401), (status = 404)))]
pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&id)?;
    let meta = existing(&state, &name).await?;
    Ok(HttpResponse::Ok().json(one_info(&state, meta).await))
}

#[utoipa::path(delete, path = "/api/docs/{id}", tag = "documents",
    params(("id" = String, Path, description = "document name: 1-255 of A-Z a-z 0-9 - _ . ~ : @", pattern = r"^[A-Za-z0-9._~:@-]{1,255}$")),
    responses((status = 204, description = "deleted; its sockets were closed with 4404"), (status = 400), (status = 401), (status = 404)))]
pub async fn delete(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&id)?;
    existing(&state, &name).await?;
    accepting(&state)?;
    // Through the room, so that its sockets close and no joiner sees it half-deleted.
    let existed = state
        .registry
        .call(&name, |reply| RoomCmd::Delete { reply })
        .await?
        .map_err(|e| write_failed(&state, e))?;
    if !existed {
        return Err(ApiError::NotFound(format!("no document named {name:?}")));
    }
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/api/docs/{id}/update", tag = "documents",
    params(("id" = String, Path, description = "document name: 1-255 of A-Z a-z 0-9 - _ . ~ : @", pattern = r"^[A-Za-z0-9._~:@-]{1,255}$"), UpdateQuery),
    responses((status = 200, description = "a Yjs v1 update", content_type = "application/octet-stream", body = Vec<u8>), (status = 400), (status = 401), (status = 404)))]
pub async fn read_update(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    query: web::Query<UpdateQuery>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&id)?;
    if query.version.is_some() {
        // A versioned read takes a client token too: who is asking is
        // checked before anything else is.
        super::history::caller(&state, &req, &name, crate::auth::Perm::Read)?;
    }
    let state_vector = match &query.sv {
        Some(sv) => Some(parse_state_vector(sv)?),
        None => None,
    };
    let update = match &query.version {
        Some(version) => {
            let doc = super::history::document_at(&state, &req, &name, version).await?;
            let sv = state_vector.unwrap_or_default();
            Bytes::from(
                tokio::task::spawn_blocking(move || doc.diff(&sv))
                    .await
                    .map_err(ApiError::unexpected)?,
            )
        }
        None => encode(&state, &name, state_vector).await?,
    };
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(update))
}

/// An existing document as one update, or its diff against `state_vector`,
/// from its room.
async fn encode(
    state: &AppState,
    name: &DocName,
    state_vector: Option<StateVector>,
) -> Result<bytes::Bytes, ApiError> {
    existing(state, name).await?;
    Ok(state
        .registry
        .call(name, |reply| RoomCmd::Encode {
            state_vector: state_vector.clone(),
            reply,
        })
        .await?)
}

fn parse_state_vector(sv: &str) -> Result<StateVector, ApiError> {
    let bad = |why: &str| ApiError::bad_request("invalid_state_vector", format!("sv: {why}"));
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let bytes = engines
        .iter()
        .find_map(|e| e.decode(sv).ok())
        .ok_or_else(|| bad("not base64"))?;
    tandem_crdt::wellformed::decode_state_vector(&bytes).map_err(|_| bad("not a Yjs state vector"))
}

#[utoipa::path(post, path = "/api/docs/{id}/update", tag = "documents",
    params(("id" = String, Path, description = "document name: 1-255 of A-Z a-z 0-9 - _ . ~ : @", pattern = r"^[A-Za-z0-9._~:@-]{1,255}$")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "a Yjs v1 update"),
    responses((status = 200, body = Applied, description = "applied, relayed and durable"), (status = 400), (status = 401), (status = 404), (status = 413), (status = 503, description = "`storage_unavailable`: storage fails or is behind; try again later")))]
pub async fn apply_update(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&id)?;
    let body = read_body(body, state.registry.deps.limits.max_message_bytes).await?;
    existing(&state, &name).await?;
    accepting(&state)?;
    let result = state
        .registry
        .call(&name, |reply| RoomCmd::ApplyUpdate {
            update: body.clone(),
            user: None,
            reply,
        })
        .await?;
    let seq = match result {
        Ok(seq) => seq,
        Err(e @ ApplyError::TooLarge { .. }) => {
            return Err(ApiError::PayloadTooLarge(e.to_string()))
        }
        Err(e) => return Err(ApiError::bad_request("invalid_update", e.to_string())),
    };
    if let Some(seq) = seq {
        // The update is applied and queued: on a 503 it is written once
        // storage is back (a retry of it is harmless, updates are idempotent).
        let persister = &state.registry.deps.persister;
        persister
            .wait_durable_by(seq, tokio::time::Instant::now() + DURABLE_WAIT)
            .await?;
    }
    Ok(HttpResponse::Ok().json(Applied {
        applied: seq.is_some(),
    }))
}

#[utoipa::path(get, path = "/api/docs/{id}/json", tag = "documents",
    params(("id" = String, Path, description = "document name: 1-255 of A-Z a-z 0-9 - _ . ~ : @", pattern = r"^[A-Za-z0-9._~:@-]{1,255}$"), JsonQuery),
    responses((status = 200, description = "root types as JSON: Text as string, Map as object, Array as array, XML as string", body = Object), (status = 400), (status = 401), (status = 403), (status = 404), (status = 409)))]
pub async fn json(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    query: web::Query<JsonQuery>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&id)?;
    if let Some(version) = &query.version {
        let doc = super::history::document_at(&state, &req, &name, version).await?;
        let value = tokio::task::spawn_blocking(move || doc.to_json())
            .await
            .map_err(ApiError::unexpected)?;
        return Ok(HttpResponse::Ok().json(value));
    }
    let update = encode(&state, &name, None).await?;
    // Rendered off the room, on a blocking thread: a large document never delays the relay.
    let value = tokio::task::spawn_blocking(move || {
        DocState::load(None, [update.as_ref()]).map(|(doc, _)| doc.to_json())
    })
    .await
    .map_err(ApiError::unexpected)?
    .map_err(ApiError::unexpected)?;
    Ok(HttpResponse::Ok().json(value))
}
