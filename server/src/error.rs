//! The one place that knows the JSON error shape
//! `{"error": {"code": "snake_case", "message": "…"}}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// An error answered over HTTP. User errors carry their message; anything
/// unexpected is logged with its cause chain and answered with a bare 500.
#[derive(thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// 409 with its own code: the resource is in a state that forbids the call.
    #[error("{message}")]
    WrongState { code: &'static str, message: String },
    /// 405, with the methods the path has in `Allow`.
    #[error("this path answers only {allow}")]
    MethodNotAllowed { allow: &'static str },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the server is busy: {0}")]
    Unavailable(String),
    /// 503: storage fails or is behind, so writes are refused (SPEC §6).
    #[error("{0}")]
    StorageUnavailable(String),
    #[error("an internal error occurred")]
    Unexpected(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } => code,
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::WrongState { code, .. } => code,
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::StorageUnavailable(_) => "storage_unavailable",
            ApiError::Unexpected(_) => "internal_error",
        }
    }
}

impl ApiError {
    pub fn unexpected(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        ApiError::Unexpected(Box::new(e))
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError as A;
        match e {
            A::WrongDocument => ApiError::Forbidden(e.to_string()),
            A::BadPattern => ApiError::bad_request("invalid_document_pattern", e.to_string()),
            A::NoSigningSecret => ApiError::bad_request("no_signing_secret", e.to_string()),
            A::Missing | A::Invalid(_) | A::Expired | A::BadApiKey => {
                ApiError::Unauthorized(e.to_string())
            }
        }
    }
}

/// A store error that says storage fails is a 503 `storage_unavailable`
/// with its reason; any other is unexpected (500).
impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "a request failed: storage unavailable");
            ApiError::StorageUnavailable(format!("storage unavailable: {e}"))
        } else {
            ApiError::unexpected(e)
        }
    }
}

impl From<crate::persist::StorageUnavailable> for ApiError {
    fn from(e: crate::persist::StorageUnavailable) -> Self {
        ApiError::StorageUnavailable(e.to_string())
    }
}

impl From<crate::room::registry::RoomError> for ApiError {
    fn from(e: crate::room::registry::RoomError) -> Self {
        use crate::room::registry::RoomError;
        match e {
            RoomError::Unavailable => ApiError::Unavailable(e.to_string()),
            RoomError::Absent => ApiError::NotFound(e.to_string()),
        }
    }
}

impl std::fmt::Debug for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{self}")?;
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            writeln!(f, "caused by: {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::WrongState { .. } => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) | ApiError::StorageUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Unexpected(_) = self {
            tracing::error!(error = ?self, "request failed");
        }
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::MethodNotAllowed { allow } = self {
            response.insert_header((actix_web::http::header::ALLOW, *allow));
        }
        response.json(json!({
            "error": { "code": self.code(), "message": self.to_string() }
        }))
    }
}
