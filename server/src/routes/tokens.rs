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
    #[serde(default, deserialize_with = "whole_seconds")]
    pub ttl_secs: Option<u64>,
    /// The user id, reported in webhooks and logs.
    pub sub: Option<String>,
    /// A display name.
    pub name: Option<String>,
}

/// `ttl_secs` as JSON Schema's `integer` has it: any whole number, `3600.0`
/// included (serde's `u64` alone refuses that one). A negative or huge one
/// comes out of range (0, `u64::MAX`), for the handler's 400; a fraction is
/// refused here.
fn whole_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(n) = n.as_u64() {
        return Ok(Some(n));
    }
    match n.as_f64() {
        // `as` saturates: a negative number becomes 0, a huge one u64::MAX.
        Some(f) if f.fract() == 0.0 => Ok(Some(f as u64)),
        _ => Err(serde::de::Error::custom(format!(
            "ttl_secs must be a whole number of seconds, not {n}"
        ))),
    }
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

#[cfg(test)]
mod tests {
    use super::TokenRequest;

    fn ttl(json: &str) -> Result<Option<u64>, String> {
        serde_json::from_str::<TokenRequest>(&format!(r#"{{"doc":"d","perm":"read"{json}}}"#))
            .map(|r| r.ttl_secs)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn ttl_secs_is_any_whole_number() {
        assert_eq!(ttl(""), Ok(None));
        assert_eq!(ttl(r#","ttl_secs":null"#), Ok(None));
        assert_eq!(ttl(r#","ttl_secs":3600"#), Ok(Some(3600)));
        // JSON Schema's integer, which the OpenAPI document says it is.
        assert_eq!(ttl(r#","ttl_secs":3600.0"#), Ok(Some(3600)));
        assert_eq!(ttl(r#","ttl_secs":1e3"#), Ok(Some(1000)));
        // Out of range, refused by the handler with invalid_ttl.
        assert_eq!(ttl(r#","ttl_secs":-5"#), Ok(Some(0)));
        assert_eq!(ttl(r#","ttl_secs":-5.0"#), Ok(Some(0)));
        assert_eq!(ttl(r#","ttl_secs":1e300"#), Ok(Some(u64::MAX)));
        assert!(ttl(r#","ttl_secs":1.5"#).is_err());
        assert!(ttl(r#","ttl_secs":"60""#).is_err());
    }
}
