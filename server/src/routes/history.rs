//! History and versions (SPEC §9): list, make, name, delete and restore
//! versions, and the diff between two. The document at a version is served
//! by `docs.rs` (`/update?version=`, `/json?version=`).
//!
//! These routes take the API key, or a client token for the document (the
//! browser editor's history panel has only its token): read tokens may
//! look, write tokens may also change.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Perm;
use crate::doc_name::DocName;
use crate::error::ApiError;
use crate::history::{self, HistoryError};
use crate::room::task::RoomCmd;
use crate::state::AppState;
use crate::store::{now_ms, DocMeta, NewVersion, VersionFilter, VersionKind, VersionRow};
use crate::time::rfc3339;
use crate::webhooks::events;

use super::docs::{existing, parse_name, read_body};

/// How long a restore or a named version waits for storage.
const DURABLE_WAIT: Duration = Duration::from_secs(30);
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 1000;
const SMALL_BODY: usize = 16 * 1024;
/// Longest version name, in characters.
const MAX_NAME: usize = 200;

/// A version of a document.
#[derive(Serialize, ToSchema)]
pub struct Version {
    /// Opaque; unique within the server.
    pub id: String,
    /// Null for automatic versions.
    pub name: Option<String>,
    /// `auto`, `named` or `restore`.
    pub kind: String,
    /// RFC 3339.
    pub created_at: String,
    /// The token `sub` that made it; null for the API key and the server.
    pub created_by: Option<String>,
    /// Token `sub`s that wrote since the previous version.
    pub authors: Vec<String>,
    /// For a `restore` version: the version restored.
    pub restored_from: Option<String>,
}

impl From<VersionRow> for Version {
    fn from(v: VersionRow) -> Self {
        Version {
            id: v.id.to_string(),
            name: v.name,
            kind: v.kind.as_str().to_string(),
            created_at: rfc3339(v.created_at),
            created_by: v.created_by,
            authors: v.authors,
            restored_from: v.restored_from.map(|r| r.to_string()),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct VersionList {
    pub items: Vec<Version>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct VersionQuery {
    /// Only versions of this kind: `auto`, `named` or `restore`.
    #[param(pattern = "^(auto|named|restore)$")]
    pub kind: Option<String>,
    /// Page size, 1–1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct VersionName {
    /// 1–200 characters, none of them a control character.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]{1,200}$"
    )]
    pub name: String,
}

#[derive(Deserialize, IntoParams)]
pub struct DiffQuery {
    /// A version id.
    pub from: String,
    /// A version id, or `current` (the default).
    pub to: Option<String>,
}

/// Who is calling: the API key (no `sub`), or a client token for this
/// document with at least `need`. In dev mode, anyone.
pub fn caller(
    state: &AppState,
    req: &HttpRequest,
    doc: &DocName,
    need: Perm,
) -> Result<Option<String>, ApiError> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if state.auth.check_api_key(header).is_ok() {
        return Ok(None);
    }
    let token = crate::auth::bearer(header);
    let access = state.auth.authorize(token, doc)?;
    if need == Perm::Write && access.perm != Perm::Write {
        return Err(ApiError::Forbidden(
            "this token may only read this document".into(),
        ));
    }
    Ok(access.user)
}

fn history_failed(e: HistoryError) -> ApiError {
    match e {
        HistoryError::Store(e) => e.into(),
        HistoryError::Lost => ApiError::WrongState {
            code: "version_unavailable",
            message: e.to_string(),
        },
        other => ApiError::unexpected(other),
    }
}

fn history_on(state: &AppState) -> Result<(), ApiError> {
    if state.webhooks.history.enabled {
        Ok(())
    } else {
        Err(ApiError::WrongState {
            code: "history_disabled",
            message: "history is off on this server (TANDEM_HISTORY)".into(),
        })
    }
}

/// A version id from a path or query; anything else names no version.
fn parse_version_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::NotFound(format!("no version {raw:?}")))
}

/// The version `raw` of document `meta`, or 404.
pub async fn version_of(
    state: &AppState,
    meta: &DocMeta,
    raw: &str,
) -> Result<VersionRow, ApiError> {
    let id = parse_version_id(raw)?;
    state
        .store
        .get_version(meta.id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no version {raw:?} of {:?}", meta.name)))
}

fn read_name(body: &[u8]) -> Result<String, ApiError> {
    let req: VersionName = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
    let name = req.name;
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_version_name",
            format!("a version name is 1 to {MAX_NAME} characters, without control characters"),
        ));
    }
    Ok(name)
}

/// Makes a version of the document's current state once everything
/// accepted so far is committed; it is durable when this returns.
async fn make_version(
    state: &AppState,
    meta: &DocMeta,
    new: NewVersion,
    announce: Option<crate::store::VersionEvent<'_>>,
) -> Result<VersionRow, ApiError> {
    let persister = &state.registry.deps.persister;
    persister
        .flush_by(tokio::time::Instant::now() + DURABLE_WAIT)
        .await?;
    let row = state
        .store
        .create_version(meta.id, &new, now_ms(), announce)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no document named {:?}", meta.name)))?;
    // The version row is committed with the store's synchronous commit,
    // which puts every earlier commit of the log on the disk with it.
    Ok(row)
}

#[utoipa::path(get, path = "/api/docs/{id}/versions", tag = "history",
    params(("id" = String, Path, description = "document name: 1-255 of A-Z a-z 0-9 - _ . ~ : @", pattern = r"^[A-Za-z0-9._~:@-]{1,255}$"), VersionQuery),
    responses((status = 200, body = VersionList), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    query: web::Query<VersionQuery>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&id)?;
    caller(&state, &req, &name, Perm::Read)?;
    let meta = existing(&state, &name).await?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be 1 to {MAX_PAGE}"),
        ));
    }
    let kind = match query.kind.as_deref() {
        None => None,
        Some("auto") => Some(VersionKind::Auto),
        Some("named") => Some(VersionKind::Named),
        Some("restore") => Some(VersionKind::Restore),
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_kind",
                format!("kind {other:?}: one of auto, named, restore"),
            ))
        }
    };
    // The cursor is the last id of the previous page: versions are listed
    // by id, newest first.
    let before = match &query.cursor {
        Some(c) => Some(c.parse::<i64>().map_err(|_| super::bad_cursor())?),
        None => None,
    };
    let rows = state
        .store
        .list_versions(
            meta.id,
            VersionFilter {
                kind,
                before,
                limit: limit + 1,
            },
        )
        .await?;
    let more = rows.len() > limit as usize;
    let items: Vec<Version> = rows
        .into_iter()
        .take(limit as usize)
        .map(Version::from)
        .collect();
    let next_cursor = more.then(|| items.last().map(|v| v.id.clone())).flatten();
    Ok(HttpResponse::Ok().json(VersionList { items, next_cursor }))
}

#[utoipa::path(post, path = "/api/docs/{id}/versions", tag = "history",
    params(("id" = String, Path, description = "document name: 1-255 of A-Z a-z 0-9 - _ . ~ : @", pattern = r"^[A-Za-z0-9._~:@-]{1,255}$")),
    request_body = VersionName,
    responses((status = 201, body = Version, description = "a named version of the current state, durable"), (status = 400), (status = 401), (status = 403), (status = 404), (status = 409), (status = 503)))]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&id)?;
    let by = caller(&state, &req, &name, Perm::Write)?;
    history_on(&state)?;
    let body = read_body(body, SMALL_BODY).await?;
    let version_name = read_name(&body)?;
    let meta = existing(&state, &name).await?;
    let row = make_version(
        &state,
        &meta,
        NewVersion {
            kind: VersionKind::Named,
            name: Some(version_name),
            created_by: by,
            restored_from: None,
        },
        None,
    )
    .await?;
    tracing::info!(doc = %name, version = row.id, "named version made");
    Ok(HttpResponse::Created().json(Version::from(row)))
}

#[utoipa::path(get, path = "/api/docs/{id}/versions/{version}", tag = "history",
    params(("id" = String, Path, description = "document name: 1-255 of A-Z a-z 0-9 - _ . ~ : @", pattern = r"^[A-Za-z0-9._~:@-]{1,255}$"), ("version" = String, Path)),
    responses((status = 200, body = Version), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, version) = path.into_inner();
    let name = parse_name(&id)?;
    caller(&state, &req, &name, Perm::Read)?;
    let meta = existing(&state, &name).await?;
    let row = version_of(&state, &meta, &version).await?;
    Ok(HttpResponse::Ok().json(Version::from(row)))
}

#[utoipa::path(patch, path = "/api/docs/{id}/versions/{version}", tag = "history",
    params(("id" = String, Path, description = "document name: 1-255 of A-Z a-z 0-9 - _ . ~ : @", pattern = r"^[A-Za-z0-9._~:@-]{1,255}$"), ("version" = String, Path)),
    request_body = VersionName,
    responses((status = 200, body = Version, description = "renamed; an automatic version becomes named"), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn rename(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (id, version) = path.into_inner();
    let name = parse_name(&id)?;
    caller(&state, &req, &name, Perm::Write)?;
    let body = read_body(body, SMALL_BODY).await?;
    let version_name = read_name(&body)?;
    let meta = existing(&state, &name).await?;
    let vid = parse_version_id(&version)?;
    let row = state
        .store
        .rename_version(meta.id, vid, &version_name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no version {version:?} of {name:?}")))?;
    Ok(HttpResponse::Ok().json(Version::from(row)))
}

#[utoipa::path(delete, path = "/api/docs/{id}/versions/{version}", tag = "history",
    params(("id" = String, Path, description = "document name: 1-255 of A-Z a-z 0-9 - _ . ~ : @", pattern = r"^[A-Za-z0-9._~:@-]{1,255}$"), ("version" = String, Path)),
    responses((status = 204), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn delete(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, version) = path.into_inner();
    let name = parse_name(&id)?;
    caller(&state, &req, &name, Perm::Write)?;
    let meta = existing(&state, &name).await?;
    let vid = parse_version_id(&version)?;
    if !state
        .store
        .delete_version(meta.id, vid, &history::merge_links)
        .await?
    {
        return Err(ApiError::NotFound(format!(
            "no version {version:?} of {name:?}"
        )));
    }
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/api/docs/{id}/versions/{version}/restore", tag = "history",
    params(("id" = String, Path, description = "document name: 1-255 of A-Z a-z 0-9 - _ . ~ : @", pattern = r"^[A-Za-z0-9._~:@-]{1,255}$"), ("version" = String, Path)),
    responses((status = 201, body = Version, description = "the document's content is the version's, through a new update that is durable and was relayed live; this is the `restore` version made after it"), (status = 400), (status = 401), (status = 403), (status = 404), (status = 409), (status = 503)))]
pub async fn restore(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, version) = path.into_inner();
    let name = parse_name(&id)?;
    let by = caller(&state, &req, &name, Perm::Write)?;
    history_on(&state)?;
    let meta = existing(&state, &name).await?;
    let target = version_of(&state, &meta, &version).await?;
    state.registry.deps.persister.accepting()?;
    // The state before the restore is a version of its own first.
    make_version(
        &state,
        &meta,
        NewVersion {
            kind: VersionKind::Auto,
            name: None,
            created_by: None,
            restored_from: None,
        },
        None,
    )
    .await?;
    let rendered = history::render(&state.store, &target)
        .await
        .map_err(history_failed)?;
    let current = state
        .registry
        .call(&name, |reply| RoomCmd::Encode {
            state_vector: None,
            reply,
        })
        .await?;
    let update = history::restoring_update(current, rendered)
        .await
        .map_err(history_failed)?;
    if let Some(update) = update {
        let user = by.as_deref().map(std::sync::Arc::<str>::from);
        let applied = state
            .registry
            .call(&name, |reply| RoomCmd::ApplyUpdate {
                update: bytes::Bytes::from(update.clone()),
                user: user.clone(),
                reply,
            })
            .await?
            .map_err(ApiError::unexpected)?;
        if let Some(seq) = applied {
            state
                .registry
                .deps
                .persister
                .wait_durable_by(seq, tokio::time::Instant::now() + DURABLE_WAIT)
                .await?;
        }
    }
    let wants = state.webhooks.wants(events::DOCUMENT_RESTORED);
    let target_id = target.id;
    let doc_name = name.as_str().to_string();
    let caller_sub = by.clone();
    let announce = move |v: &VersionRow| {
        events::document_restored(
            &doc_name,
            v.id,
            target_id,
            caller_sub.as_deref(),
            v.created_at,
        )
    };
    let row = make_version(
        &state,
        &meta,
        NewVersion {
            kind: VersionKind::Restore,
            name: None,
            created_by: by,
            restored_from: Some(target_id),
        },
        wants.then_some(&announce as crate::store::VersionEvent<'_>),
    )
    .await?;
    if wants {
        state.webhooks.messages_written();
    }
    tracing::info!(doc = %name, version = row.id, restored_from = target_id, "version restored");
    Ok(HttpResponse::Created().json(Version::from(row)))
}

#[utoipa::path(get, path = "/api/docs/{id}/diff", tag = "history",
    params(("id" = String, Path, description = "document name: 1-255 of A-Z a-z 0-9 - _ . ~ : @", pattern = r"^[A-Za-z0-9._~:@-]{1,255}$"), DiffQuery),
    responses((status = 200, description = "for each root: its type, its JSON before and after, and for Text roots the spans inserted, deleted and unchanged with the `sub` that wrote (or deleted) them", body = Object), (status = 400), (status = 401), (status = 403), (status = 404), (status = 409), (status = 503)))]
pub async fn diff(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    query: web::Query<DiffQuery>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&id)?;
    caller(&state, &req, &name, Perm::Read)?;
    let meta = existing(&state, &name).await?;
    let from = version_of(&state, &meta, &query.from).await?;
    let to = match query.to.as_deref() {
        None | Some("current") => {
            // What the room accepted is in the log the diff reads.
            state
                .registry
                .deps
                .persister
                .flush_by(tokio::time::Instant::now() + DURABLE_WAIT)
                .await?;
            None
        }
        Some(v) => Some(version_of(&state, &meta, v).await?),
    };
    let value = history::diff(&state.store, meta.id, from, to)
        .await
        .map_err(history_failed)?;
    Ok(HttpResponse::Ok().json(value))
}

/// The document at version `raw` (for `docs.rs`).
pub async fn document_at(
    state: &AppState,
    req: &HttpRequest,
    name: &DocName,
    raw: &str,
) -> Result<tandem_crdt::DocState, ApiError> {
    caller(state, req, name, Perm::Read)?;
    let meta = existing(state, name).await?;
    let version = version_of(state, &meta, raw).await?;
    history::render(&state.store, &version)
        .await
        .map_err(history_failed)
}
