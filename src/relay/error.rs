//! The relay's error type: every failure becomes `{"ok":false,"error":{code,message}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::store::StoreError;
use crate::api::{ErrorBody, ErrorCode};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// The request field at fault, for `error.field`.
    pub field: Option<&'static str>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }
    /// Names the request field at fault.
    pub fn on(mut self, field: &'static str) -> ApiError {
        self.field = Some(field);
        self
    }
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn forbidden(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, code, message)
    }
    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            message,
        )
    }
    pub fn unauthorized(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    }
    pub fn rate_limited(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            message,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = ErrorBody::new(self.code, self.message);
        body.error.field = self.field.map(str::to_string);
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::UnknownRecipient(who) => ApiError::not_found(
                ErrorCode::UnknownRecipient,
                format!(
                    "no one on this relay has the address {who:?}; check the spelling or search the directory"
                ),
            ),
            StoreError::NotFound(m) => ApiError::not_found(ErrorCode::NotFound, m),
            StoreError::Forbidden(m) => ApiError::forbidden(ErrorCode::Forbidden, m),
            StoreError::NotMember(m) => ApiError::forbidden(ErrorCode::NotMember, m),
            StoreError::StreamReadOnly => ApiError::forbidden(
                ErrorCode::StreamReadOnly,
                "this is a stream group: only its writers (admins) post; members read",
            ),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, ErrorCode::Conflict, m),
            StoreError::InvalidAttachment(m) => {
                ApiError::bad_request(ErrorCode::InvalidAttachment, m)
            }
            // PostgreSQL's text holds no NUL characters (SQLite's does): the client's input.
            other if other.is_unstorable_text() => ApiError::bad_request(
                ErrorCode::InvalidRequest,
                "text must not contain NUL (\\u0000) characters; nothing was changed",
            ),
            other => {
                // Storage trouble is the relay's, not the client's: log it whole, answer 503
                // so clients retry rather than give up.
                tracing::error!(error = %other, "storage failure");
                metrics::counter!("gtsw_store_errors_total").increment(1);
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::StorageUnavailable,
                    "the relay could not reach its storage; nothing was changed, try again shortly",
                )
            }
        }
    }
}
