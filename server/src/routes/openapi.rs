//! `GET /api/openapi.json`: the OpenAPI 3 document, generated from the
//! handlers' annotations so it cannot drift from the routes.

use actix_web::{web, HttpResponse};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::schema::{ObjectBuilder, SchemaType};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Required, Response};
use utoipa::{Modify, OpenApi};

use crate::state::AppState;

use super::{docs, health, history, tokens, webhooks, ws};

#[derive(OpenApi)]
#[openapi(
    info(title = "Tandem", description = "Self-hosted real-time collaboration server: the document and webhook API."),
    paths(
        docs::create, docs::list, docs::get, docs::delete,
        docs::read_update, docs::apply_update, docs::json,
        history::list, history::create, history::get, history::rename, history::delete,
        history::restore, history::diff,
        tokens::mint, ws::connect,
        webhooks::create, webhooks::list, webhooks::get, webhooks::update, webhooks::delete,
        webhooks::rotate_secret, webhooks::test, webhooks::deliveries, webhooks::retry,
        webhooks::recover,
        health::healthz, health::readyz, health::metrics, document,
    ),
    components(schemas(
        docs::DocInfo, docs::DocList, docs::CreateDoc, docs::Applied,
        history::Version, history::VersionList, history::VersionName,
        tokens::TokenRequest, tokens::TokenResponse, crate::auth::Perm, ErrorBody, ErrorDetail,
        webhooks::Endpoint, webhooks::EndpointList, webhooks::CreateEndpoint,
        webhooks::UpdateEndpoint, webhooks::DeliveryRef, webhooks::Attempt, webhooks::Delivery,
        webhooks::DeliveryList, webhooks::EventType, webhooks::Recover, webhooks::Recovered,
    )),
    modifiers(&ApiKey, &Conventions),
    security(("api_key" = [])),
)]
pub struct ApiDoc;

/// The error shape every failing call answers with.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documentation only; error.rs builds the JSON
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// A stable snake_case code.
    code: String,
    message: String,
}

struct ApiKey;

impl Modify for ApiKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// What every operation has in common, added here rather than on each
/// handler: the JSON error shape on every error response, 401 on the calls
/// that need the API key, and the dev-mode guard's answers (routes/browser.rs)
/// on every state-changing call: 503 while storage refuses writes (SPEC §6),
/// 403 for a foreign `Origin` and, but for
/// DELETE, 415 for a body type other than JSON (octet-stream for updates),
/// so even the calls without a body of their own take an (ignored) JSON one.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let api = path.starts_with("/api/");
            for (method, op) in operations(item) {
                if api && op.security.is_none() {
                    respond(op, "401", "the API key is missing or wrong");
                }
                if api && method != "get" {
                    respond(op, "503", "`storage_unavailable`: storage fails or is behind, so writes are refused for now (see /readyz)");
                    respond(op, "403", "dev mode: the call came from a foreign `Origin` (see TANDEM_ALLOWED_ORIGINS)");
                    if method != "delete" {
                        respond(op, "415", "dev mode: the body is not `application/json` (`application/octet-stream` for updates)");
                        op.request_body.get_or_insert_with(|| {
                            let any = ObjectBuilder::new()
                                .schema_type(SchemaType::AnyValue)
                                .build();
                            let mut body = RequestBody::new();
                            body.description = Some(
                                "Ignored. In dev mode, send `{}` as `application/json`.".into(),
                            );
                            body.required = Some(Required::False);
                            body.content
                                .insert("application/json".into(), Content::new(Some(any)));
                            body
                        });
                    }
                }
                for (status, response) in op.responses.responses.iter_mut() {
                    if let RefOr::T(response) = response {
                        if status.as_str() >= "400" && response.content.is_empty() {
                            response.content.insert(
                                "application/json".into(),
                                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                            );
                        }
                    }
                }
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("patch", &mut item.patch),
    ]
    .into_iter()
    .filter_map(|(method, op)| Some((method, op.as_mut()?)))
}

fn respond(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.into())
        .or_insert_with(|| RefOr::T(Response::new(description)));
}

/// The document for this server: in dev mode no call needs the API key, and
/// every state-changing call but DELETE needs its JSON (or octet-stream) body.
pub fn for_server(dev_mode: bool) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    if dev_mode {
        doc.security = None;
        if let Some(info) = doc.info.description.as_mut() {
            info.push_str(" This server runs in dev mode: no API key is needed.");
        }
        for item in doc.paths.paths.values_mut() {
            for (method, op) in operations(item) {
                if method != "get" && method != "delete" {
                    if let Some(body) = op.request_body.as_mut() {
                        body.required = Some(Required::True);
                    }
                }
            }
        }
    }
    doc
}

#[utoipa::path(get, path = "/api/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "this OpenAPI document", content_type = "application/json")))]
pub async fn document(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(for_server(state.auth.dev_mode()))
}
