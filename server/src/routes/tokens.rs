//! `POST /api/tokens`: mints a client token for a document or a prefix.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Perm, DEFAULT_TTL, MAX_TTL};
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// A document name, or a prefix ending in `*` (`team:*`; `*` alone: every document).
    #[schema(pattern = r"^(\*|[A-Za-z0-9._~:@-]{1,255}\*?)$")]
    pub doc: String,
    pub perm: Perm,
    /// Lifetime in seconds (default 3600, at most 30 days).
    #[schema(minimum = 1, maximum = 2592000)]
    pub ttl_secs: Option<u64>,
    /// The user id, reported in webhooks and logs.
    pub sub: Option<String>,
    /// A display name.
    pub name: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    pub token: String,
    /// Unix seconds.
    pub expires_at: u64,
}

#[utoipa::path(post, path = "/api/tokens", tag = "tokens", request_body = TokenRequest,
    responses((status = 200, body = TokenResponse), (status = 400), (status = 401)))]
pub async fn mint(
    state: web::Data<AppState>,
    req: web::Json<TokenRequest>,
) -> Result<HttpResponse, ApiError> {
    let req = req.into_inner();
    let ttl = match req.ttl_secs {
        None => DEFAULT_TTL,
        Some(0) => {
            return Err(ApiError::bad_request(
                "invalid_ttl",
                "ttl_secs must be at least 1",
            ))
        }
        Some(s) if Duration::from_secs(s) > MAX_TTL => {
            return Err(ApiError::bad_request(
                "invalid_ttl",
                format!("ttl_secs must be at most {}", MAX_TTL.as_secs()),
            ))
        }
        Some(s) => Duration::from_secs(s),
    };
    let (token, expires_at) = state
        .auth
        .mint(&req.doc, req.perm, ttl, req.sub, req.name)?;
    Ok(HttpResponse::Ok().json(TokenResponse { token, expires_at }))
}
