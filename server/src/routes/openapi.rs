//! `GET /api/openapi.json`: the OpenAPI 3 document, generated from the
//! handlers' annotations so it cannot drift from the routes.

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{docs, health, tokens, webhooks, ws};

#[derive(OpenApi)]
#[openapi(
    info(title = "Tandem", description = "Self-hosted real-time collaboration server: the document and webhook API."),
    paths(
        docs::create, docs::list, docs::get, docs::delete,
        docs::read_update, docs::apply_update, docs::json,
        tokens::mint, ws::connect,
        webhooks::create, webhooks::list, webhooks::get, webhooks::update, webhooks::delete,
        webhooks::rotate_secret, webhooks::test, webhooks::deliveries, webhooks::retry,
        health::healthz, health::readyz, health::metrics, document,
    ),
    components(schemas(
        docs::DocInfo, docs::DocList, docs::CreateDoc, docs::Applied,
        tokens::TokenRequest, tokens::TokenResponse, crate::auth::Perm, ErrorBody, ErrorDetail,
        webhooks::Endpoint, webhooks::EndpointList, webhooks::CreateEndpoint,
        webhooks::UpdateEndpoint, webhooks::DeliveryRef, webhooks::Attempt, webhooks::Delivery,
        webhooks::DeliveryList,
    )),
    modifiers(&ApiKey),
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

#[utoipa::path(get, path = "/api/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "this OpenAPI document", content_type = "application/json")))]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
