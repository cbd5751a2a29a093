//! The webhook API (SPEC §5): endpoints, secret rotation, the test event,
//! the delivery log and manual retries. Every change to an endpoint
//! refreshes what the server knows endpoints listen to.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::doc_name::DocName;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{now_ms, DeliveryLimits, DeliveryRow, EndpointPatch, EndpointRow, Retried};
use crate::time::rfc3339;
use crate::webhooks::events;

use super::{decode_cursor, encode_cursor};
use crate::webhooks::{signer, ssrf};

/// How long a rotated-out secret keeps signing beside the new one.
const ROTATION_OVERLAP_MS: i64 = 24 * 60 * 60 * 1000;
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;
/// The delivery log's page size in bytes (`max_bytes`): its default and range.
const DEFAULT_PAGE_BYTES: u32 = 1 << 20;
const MIN_PAGE_BYTES: u32 = 1 << 10;
const MAX_PAGE_BYTES: u32 = 8 << 20;
/// In bytes; the document says characters, and the URL pattern it gives
/// allows no multi-byte ones, so the two agree.
pub const MAX_URL_LEN: usize = 2048;
const MAX_DESCRIPTION_LEN: usize = 1024;
/// More than every type there is, repeats included; bounds the work per call.
const MAX_EVENTS: usize = 32;

/// A webhook endpoint. `secret` appears only when it is created or rotated.
#[derive(Serialize, ToSchema)]
pub struct Endpoint {
    /// `ep_…`
    pub id: String,
    pub url: String,
    /// Event types, or `["*"]`.
    pub events: Vec<String>,
    pub description: Option<String>,
    /// Whether `document.updated` carries the document's JSON.
    pub include_content: bool,
    pub enabled: bool,
    /// Why it was disabled, when it was.
    pub disabled_reason: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// The signing secret (`whsec_…`): shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Until when the previous secret also signs (RFC 3339), after a rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<String>,
    /// Only documents whose names start with this; null: every document.
    pub doc_prefix: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EndpointList {
    pub items: Vec<Endpoint>,
}

/// An event type, or `*` for all of them (documentation only: the server
/// checks the strings against `events::ALL`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum EventType {
    #[schema(rename = "document.created")]
    DocumentCreated,
    #[schema(rename = "document.updated")]
    DocumentUpdated,
    #[schema(rename = "document.deleted")]
    DocumentDeleted,
    #[schema(rename = "document.restored")]
    DocumentRestored,
    #[schema(rename = "client.connected")]
    ClientConnected,
    #[schema(rename = "client.disconnected")]
    ClientDisconnected,
    #[schema(rename = "webhook.test")]
    WebhookTest,
    #[schema(rename = "webhook.endpoint_disabled")]
    WebhookEndpointDisabled,
    #[schema(rename = "*")]
    All,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// Absolute `http://` or `https://` URL, without credentials; not a
    /// loopback, private or internal address unless
    /// TANDEM_WEBHOOK_ALLOW_PRIVATE is set.
    #[schema(
        max_length = 2048,
        pattern = r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#@\s]+([/?#]\S*)?$"
    )]
    pub url: String,
    /// Event types, or `["*"]`.
    #[schema(value_type = Vec<EventType>, min_items = 1, max_items = 32)]
    pub events: Vec<String>,
    /// At most 1024 characters.
    #[schema(max_length = 1024)]
    pub description: Option<String>,
    #[serde(default)]
    pub include_content: bool,
    /// Only documents whose names start with this (events about no
    /// document still come); `""` or absent: every document.
    #[schema(max_length = 255, pattern = r"^[A-Za-z0-9._~:@-]*$")]
    pub doc_prefix: Option<String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    /// As for creating one.
    #[schema(
        max_length = 2048,
        pattern = r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#@\s]+([/?#]\S*)?$"
    )]
    pub url: Option<String>,
    #[schema(value_type = Option<Vec<EventType>>, min_items = 1, max_items = 32)]
    pub events: Option<Vec<String>>,
    /// `true` re-enables a disabled endpoint and clears its reason.
    pub enabled: Option<bool>,
    /// With `enabled: true`: also recover (as `POST …/recover`) what failed
    /// since this time (RFC 3339).
    #[schema(format = DateTime)]
    pub replay_since: Option<String>,
    /// At most 1024 characters.
    #[schema(max_length = 1024)]
    pub description: Option<String>,
    pub include_content: Option<bool>,
    /// As for creating one; `""` removes the filter.
    #[schema(max_length = 255, pattern = r"^[A-Za-z0-9._~:@-]*$")]
    pub doc_prefix: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryRef {
    /// The message id (the `webhook-id` header).
    pub delivery: String,
    pub status: String,
}

#[derive(Serialize, ToSchema)]
pub struct Attempt {
    /// RFC 3339.
    pub attempted_at: String,
    /// The HTTP status answered, if any.
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
    /// RFC 3339: when the next attempt is due, after a failure.
    pub next_retry_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Delivery {
    /// The message id: the `webhook-id` header, the same on every attempt.
    pub id: String,
    pub event_type: String,
    /// `pending`, `delivered`, `failed`, `held` (written while the
    /// endpoint was disabled: `recover` sends it) or `collapsed` (merged
    /// into the newer `document.updated` that `collapsed_into` names, sent
    /// in its place).
    pub status: String,
    /// For a `collapsed` message: the message sent in its place.
    pub collapsed_into: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, while pending.
    pub next_attempt_at: Option<String>,
    /// The JSON body sent.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// The newest 50 attempts, oldest first.
    pub attempts: Vec<Attempt>,
    /// Every attempt made, shown or not.
    pub attempts_total: i64,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    pub items: Vec<Delivery>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct DeliveryQuery {
    /// `pending`, `delivered`, `failed`, `held` or `collapsed`.
    #[param(pattern = "^(pending|delivered|failed|held|collapsed)$")]
    pub status: Option<String>,
    /// Messages per page, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// Bytes of bodies and attempts per page, 1,024–8,388,608 (default
    /// 1,048,576): a page ends before the message that would pass it (the
    /// first is always shown), and `next_cursor` goes on from there.
    #[param(minimum = 1024, maximum = 8388608)]
    pub max_bytes: Option<u32>,
    pub cursor: Option<String>,
}

fn view(e: EndpointRow, show_secret: bool) -> Endpoint {
    Endpoint {
        previous_secret_expires_at: show_secret
            .then_some(e.previous_secret_expires_at)
            .flatten()
            .map(rfc3339),
        secret: show_secret.then_some(e.secret),
        id: e.id,
        url: e.url,
        events: e.events,
        description: e.description,
        include_content: e.include_content,
        enabled: e.enabled,
        disabled_reason: e.disabled_reason,
        created_at: rfc3339(e.created_at),
        updated_at: rfc3339(e.updated_at),
        doc_prefix: e.doc_prefix,
    }
}

fn delivery(d: DeliveryRow) -> Delivery {
    Delivery {
        payload: serde_json::from_str(&d.payload).unwrap_or(serde_json::Value::Null),
        id: d.id,
        event_type: d.event_type,
        status: d.status,
        collapsed_into: d.collapsed_into,
        created_at: rfc3339(d.created_at),
        next_attempt_at: d.next_attempt_at.map(rfc3339),
        attempts: d
            .attempts
            .into_iter()
            .map(|a| Attempt {
                attempted_at: rfc3339(a.attempted_at),
                status_code: a.status_code,
                latency_ms: a.latency_ms,
                error: a.error,
                next_retry_at: a.next_retry_at.map(rfc3339),
            })
            .collect(),
        attempts_total: d.attempts_total,
    }
}

/// An absolute http(s) URL, not a literal internal address unless allowed.
fn check_url(state: &AppState, raw: &str) -> Result<String, ApiError> {
    validate_url(raw, state.webhooks.settings.allow_private)
}

/// `check_url` without the state: pure, no DNS (the fuzz targets call it).
pub fn validate_url(raw: &str, allow_private: bool) -> Result<String, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_url", m);
    if raw.len() > MAX_URL_LEN {
        return Err(bad(format!("the URL is longer than {MAX_URL_LEN} bytes")));
    }
    let url = reqwest::Url::parse(raw).map_err(|e| bad(format!("not an absolute URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(bad(
            "the URL must be absolute and start with http:// or https://".into(),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("the URL may not carry credentials".into()));
    }
    if !allow_private {
        if let Some(ip) = ssrf::literal_ip(&url).filter(|ip| ssrf::is_forbidden(*ip)) {
            return Err(ApiError::bad_request(
                "forbidden_address",
                format!("{ip} is a loopback, private or internal address; set TANDEM_WEBHOOK_ALLOW_PRIVATE to allow it"),
            ));
        }
    }
    Ok(url.to_string())
}

fn check_events(events: &[String]) -> Result<Vec<String>, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_events", m);
    if events.len() > MAX_EVENTS {
        return Err(bad(format!(
            "at most {MAX_EVENTS} event types may be listed"
        )));
    }
    if events.is_empty() {
        return Err(bad(format!(
            "events must list at least one of {} or be [\"*\"]",
            events::ALL.join(", ")
        )));
    }
    let mut out: Vec<String> = Vec::new();
    for e in events {
        if e != "*" && !events::ALL.contains(&e.as_str()) {
            return Err(bad(format!(
                "unknown event type {e:?}; known: {}, or \"*\"",
                events::ALL.join(", ")
            )));
        }
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    Ok(out)
}

/// A prefix of document names (SPEC §2's alphabet); empty means none.
fn check_doc_prefix(p: Option<String>) -> Result<Option<String>, ApiError> {
    match p {
        None => Ok(None),
        Some(p) if p.is_empty() => Ok(None),
        Some(p) => DocName::parse(&p).map(|_| Some(p)).map_err(|_| {
            ApiError::bad_request(
                "invalid_doc_prefix",
                "doc_prefix is at most 255 characters of A-Z a-z 0-9 - _ . ~ : @",
            )
        }),
    }
}

fn check_description(d: Option<String>) -> Result<Option<String>, ApiError> {
    match d {
        Some(d) if d.chars().count() > MAX_DESCRIPTION_LEN => Err(ApiError::bad_request(
            "invalid_description",
            format!("the description is longer than {MAX_DESCRIPTION_LEN} characters"),
        )),
        d => Ok(d),
    }
}

async fn found(state: &AppState, id: &str) -> Result<EndpointRow, ApiError> {
    state
        .store
        .get_endpoint(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no webhook endpoint {id:?}")))
}

async fn refresh(state: &AppState) -> Result<(), ApiError> {
    state.webhooks.refresh().await.map_err(ApiError::from)
}

#[utoipa::path(post, path = "/api/webhooks", tag = "webhooks", request_body = CreateEndpoint,
    responses((status = 201, body = Endpoint, description = "created; the only time `secret` is shown"), (status = 400), (status = 401)))]
pub async fn create(
    state: web::Data<AppState>,
    body: web::Json<CreateEndpoint>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let now = now_ms();
    let row = EndpointRow {
        id: format!("ep_{}", uuid::Uuid::now_v7().simple()),
        url: check_url(&state, &body.url)?,
        events: check_events(&body.events)?,
        description: check_description(body.description)?,
        include_content: body.include_content,
        doc_prefix: check_doc_prefix(body.doc_prefix)?,
        enabled: true,
        disabled_reason: None,
        secret: signer::new_secret(),
        previous_secret: None,
        previous_secret_expires_at: None,
        created_at: now,
        updated_at: now,
    };
    state.store.create_endpoint(&row).await?;
    refresh(&state).await?;
    tracing::info!(endpoint = %row.id, url = %row.url, events = ?row.events, "webhook endpoint created");
    Ok(HttpResponse::Created().json(view(row, true)))
}

#[utoipa::path(get, path = "/api/webhooks", tag = "webhooks",
    responses((status = 200, body = EndpointList), (status = 401)))]
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let items = state
        .store
        .list_endpoints()
        .await?
        .into_iter()
        .map(|e| view(e, false))
        .collect();
    Ok(HttpResponse::Ok().json(EndpointList { items }))
}

#[utoipa::path(get, path = "/api/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "endpoint id")),
    responses((status = 200, body = Endpoint), (status = 401), (status = 404)))]
pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(view(found(&state, &id).await?, false)))
}

#[utoipa::path(patch, path = "/api/webhooks/{id}", tag = "webhooks", request_body = UpdateEndpoint,
    params(("id" = String, Path, description = "endpoint id")),
    responses((status = 200, body = Endpoint), (status = 400), (status = 401), (status = 404)))]
pub async fn update(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<UpdateEndpoint>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let replay_since = match (&body.replay_since, body.enabled) {
        (None, _) => None,
        (Some(t), Some(true)) => Some(parse_time("replay_since", t)?),
        (Some(_), _) => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "replay_since goes with enabled: true",
            ))
        }
    };
    let patch = EndpointPatch {
        url: body
            .url
            .as_deref()
            .map(|u| check_url(&state, u))
            .transpose()?,
        events: body.events.as_deref().map(check_events).transpose()?,
        enabled: body.enabled,
        description: body
            .description
            .map(|d| check_description(Some(d)))
            .transpose()?,
        include_content: body.include_content,
        doc_prefix: body
            .doc_prefix
            .map(|p| check_doc_prefix(Some(p)))
            .transpose()?,
    };
    let row = state
        .store
        .update_endpoint(&id, &patch, now_ms())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no webhook endpoint {:?}", id.as_str())))?;
    refresh(&state).await?;
    if let Some(since) = replay_since {
        let now = now_ms();
        let n = state
            .store
            .recover_messages(&row.id, since, now + 1, now, RECOVER_LIMIT)
            .await?;
        state.webhooks.messages_written();
        tracing::info!(endpoint = %row.id, messages = n, "webhook messages recovered on re-enabling");
    }
    tracing::info!(endpoint = %row.id, enabled = row.enabled, "webhook endpoint changed");
    Ok(HttpResponse::Ok().json(view(row, false)))
}

/// Messages one recover call queues again at most.
const RECOVER_LIMIT: u32 = 10_000;

#[derive(Deserialize, ToSchema)]
pub struct Recover {
    /// RFC 3339: messages created at or after this.
    #[schema(format = DateTime)]
    pub since: String,
    /// RFC 3339: and before this (default: now).
    #[schema(format = DateTime)]
    pub until: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Recovered {
    /// How many messages were queued again (at most 10,000 per call; call
    /// again with a later `since` for more).
    pub messages: u64,
}

fn parse_time(field: &str, value: &str) -> Result<i64, ApiError> {
    crate::time::parse_rfc3339(value).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_time",
            format!("{field}: not an RFC 3339 time (like 2026-01-31T12:00:00Z)"),
        )
    })
}

#[utoipa::path(post, path = "/api/webhooks/{id}/recover", tag = "webhooks",
    params(("id" = String, Path, description = "endpoint id")),
    request_body = Recover,
    responses((status = 202, body = Recovered, description = "the endpoint's failed messages created in the window are queued again with their webhook-ids; on a disabled endpoint they wait until it is enabled"), (status = 400), (status = 401), (status = 404)))]
pub async fn recover(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<Recover>,
) -> Result<HttpResponse, ApiError> {
    let endpoint = found(&state, &id).await?;
    let now = now_ms();
    let since = parse_time("since", &body.since)?;
    let until = match &body.until {
        Some(u) => parse_time("until", u)?,
        None => now + 1,
    };
    let messages = state
        .store
        .recover_messages(&endpoint.id, since, until, now, RECOVER_LIMIT)
        .await?;
    state.webhooks.messages_written();
    tracing::info!(endpoint = %endpoint.id, messages, "webhook messages recovered");
    Ok(HttpResponse::Accepted().json(Recovered { messages }))
}

#[utoipa::path(delete, path = "/api/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "endpoint id")),
    responses((status = 204, description = "deleted, with its pending messages and log"), (status = 401), (status = 404)))]
pub async fn delete(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !state.store.delete_endpoint(&id).await? {
        return Err(ApiError::NotFound(format!(
            "no webhook endpoint {:?}",
            id.as_str()
        )));
    }
    refresh(&state).await?;
    tracing::info!(endpoint = %id, "webhook endpoint deleted");
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/api/webhooks/{id}/rotate-secret", tag = "webhooks",
    params(("id" = String, Path, description = "endpoint id")),
    responses((status = 200, body = Endpoint, description = "the new `secret`; the old one signs beside it for 24 h"), (status = 401), (status = 404)))]
pub async fn rotate_secret(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let now = now_ms();
    let row = state
        .store
        .rotate_secret(&id, &signer::new_secret(), now + ROTATION_OVERLAP_MS, now)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no webhook endpoint {:?}", id.as_str())))?;
    tracing::info!(endpoint = %row.id, "webhook secret rotated");
    Ok(HttpResponse::Ok().json(view(row, true)))
}

#[utoipa::path(post, path = "/api/webhooks/{id}/test", tag = "webhooks",
    params(("id" = String, Path, description = "endpoint id")),
    responses((status = 202, body = DeliveryRef), (status = 401), (status = 404), (status = 409, description = "the endpoint is disabled")))]
pub async fn test(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let endpoint = found(&state, &id).await?;
    enabled(&endpoint)?;
    let now = now_ms();
    let message = format!("msg_{}", uuid::Uuid::new_v4().simple());
    state
        .store
        .enqueue_message(
            &endpoint.id,
            &message,
            &events::test(&endpoint.id, now),
            now,
        )
        .await?;
    state.webhooks.messages_written();
    Ok(HttpResponse::Accepted().json(DeliveryRef {
        delivery: message,
        status: "pending".into(),
    }))
}

fn enabled(endpoint: &EndpointRow) -> Result<(), ApiError> {
    if endpoint.enabled {
        Ok(())
    } else {
        Err(ApiError::WrongState {
            code: "endpoint_disabled",
            message: format!(
                "the endpoint is disabled ({}); enable it with PATCH {{\"enabled\": true}} first",
                endpoint
                    .disabled_reason
                    .as_deref()
                    .unwrap_or("no reason given")
            ),
        })
    }
}

#[utoipa::path(get, path = "/api/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "endpoint id"), DeliveryQuery),
    responses((status = 200, body = DeliveryList), (status = 400), (status = 401), (status = 404)))]
pub async fn deliveries(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<DeliveryQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be 1-{MAX_PAGE}"),
        ));
    }
    let status = match query.status.as_deref() {
        None => None,
        Some(s @ ("pending" | "delivered" | "failed" | "held" | "collapsed")) => Some(s),
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_status",
                format!(
                    "status {other:?} is not one of pending, delivered, failed, held, collapsed"
                ),
            ))
        }
    };
    let max_bytes = query.max_bytes.unwrap_or(DEFAULT_PAGE_BYTES);
    if !(MIN_PAGE_BYTES..=MAX_PAGE_BYTES).contains(&max_bytes) {
        return Err(ApiError::bad_request(
            "invalid_max_bytes",
            format!("max_bytes must be {MIN_PAGE_BYTES}-{MAX_PAGE_BYTES}"),
        ));
    }
    let before = query.cursor.as_deref().map(log_position).transpose()?;
    let endpoint = found(&state, &id).await?;
    let page = state
        .store
        .list_deliveries(
            &endpoint.id,
            status,
            before,
            DeliveryLimits {
                count: limit,
                bytes: max_bytes as usize,
            },
        )
        .await?;
    let next_cursor = page
        .more
        .then(|| page.items.last().map(|d| log_cursor(d.created_at, d.seq)))
        .flatten();
    let items = page.items.into_iter().map(delivery).collect();
    Ok(HttpResponse::Ok().json(DeliveryList { items, next_cursor }))
}

/// The log's position: `(created_at, seq)` of the last delivery shown.
fn log_cursor(created_at: i64, seq: i64) -> String {
    encode_cursor(&format!("{created_at}.{seq}"))
}

fn log_position(cursor: &str) -> Result<(i64, i64), ApiError> {
    decode_cursor(cursor)?
        .split_once('.')
        .and_then(|(at, seq)| Some((at.parse().ok()?, seq.parse().ok()?)))
        .ok_or_else(super::bad_cursor)
}

#[utoipa::path(post, path = "/api/webhooks/{id}/deliveries/{delivery}/retry", tag = "webhooks",
    params(("id" = String, Path, description = "endpoint id"), ("delivery" = String, Path, description = "message id from the delivery log")),
    responses((status = 202, body = DeliveryRef), (status = 401), (status = 404), (status = 409, description = "the endpoint is disabled (`endpoint_disabled`), or the message was merged into a newer one (`collapsed`)")))]
pub async fn retry(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, message) = path.into_inner();
    let endpoint = found(&state, &id).await?;
    enabled(&endpoint)?;
    match state
        .store
        .retry_message(&endpoint.id, &message, now_ms())
        .await?
    {
        Retried::Queued => {}
        Retried::NotFound => {
            return Err(ApiError::NotFound(format!(
                "no delivery {message:?} for this endpoint"
            )))
        }
        Retried::Collapsed { into } => {
            return Err(ApiError::WrongState {
                code: "collapsed",
                message: format!(
                    "delivery {message:?} was merged into {into:?}, which carries its counts: retry that one"
                ),
            })
        }
    }
    state.webhooks.messages_written();
    tracing::info!(endpoint = %endpoint.id, %message, "webhook delivery retried by hand");
    Ok(HttpResponse::Accepted().json(DeliveryRef {
        delivery: message,
        status: "pending".into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn event_lists_are_checked_and_deduplicated() {
        assert_eq!(
            check_events(&strings(&["document.updated", "*", "document.updated"])).unwrap(),
            strings(&["document.updated", "*"])
        );
        assert!(check_events(&[]).is_err());
        assert!(check_events(&strings(&["document.upserted"])).is_err());
        assert!(check_events(&vec!["*".to_string(); MAX_EVENTS + 1]).is_err());
    }
}
