//! The one place errors become HTTP: every failure is a JSON body
//! `{"error": {"code", "message", "field"?, "records"?}}` with a 4xx for the
//! caller's mistakes and a generic 5xx (details only in the logs) for ours.

use super::bodies::ErrorBody;
use crate::ingest::RecordError;
use crate::store::StoreError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The Content-Type is not one this endpoint reads.
    #[error("unsupported content type `{got}`; send one of: {}", expected.join(", "))]
    UnsupportedMediaType {
        /// What was sent.
        got: String,
        /// What is accepted.
        expected: &'static [&'static str],
    },
    /// The body is over the limit.
    #[error("request body over the {limit}-byte limit; send smaller batches")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body cannot be read at all.
    #[error("{0}")]
    BadBody(String),
    /// Some records are invalid; nothing was stored.
    #[error("{} invalid record(s); nothing was stored, fix them and resend the batch", .0.len())]
    InvalidRecords(Vec<RecordError>),
    /// A query parameter is invalid.
    #[error("query parameter `{field}`: {message}")]
    BadQuery {
        /// Parameter.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Nothing there.
    #[error("{0} not found")]
    NotFound(String),
    /// Not ready or shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// The body did not arrive in time.
    #[error("the request body did not arrive within {secs} s")]
    BodyTimeout {
        /// The limit.
        secs: u64,
    },
    /// No or a wrong token.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// The `Host` header names another host (DNS rebinding).
    #[error("host `{0}` is not served here: this service answers only to its loopback names")]
    Host(String),
    /// A request target longer than the service reads.
    #[error("the request URI is {len} bytes; at most {max} are read")]
    UriTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A route exists but not for this method.
    #[error("method {method} is not allowed here")]
    MethodNotAllowed {
        /// The method.
        method: String,
    },
    /// A store failure.
    #[error("storage failure: {0}")]
    Store(#[from] StoreError),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadBody(_) | ApiError::BadQuery { .. } => StatusCode::BAD_REQUEST,
            ApiError::InvalidRecords(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::Auth(crate::auth::AuthError::Forbidden { .. }) => StatusCode::FORBIDDEN,
            ApiError::Auth(_) => StatusCode::UNAUTHORIZED,
            ApiError::Host(_) => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ApiError::Store(StoreError::Full(_)) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Store(StoreError::Busy(_) | StoreError::SyncFailed(_) | StoreError::Stopped(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::UnsupportedMediaType { .. } => "unsupported_media_type",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::BadBody(_) => "bad_body",
            ApiError::InvalidRecords(_) => "invalid_records",
            ApiError::BadQuery { .. } => "bad_query",
            ApiError::NotFound(_) => "not_found",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::BodyTimeout { .. } => "body_timeout",
            ApiError::Auth(crate::auth::AuthError::Forbidden { .. }) => "forbidden",
            ApiError::Auth(_) => "unauthorized",
            ApiError::Host(_) => "host_not_allowed",
            ApiError::UriTooLong { .. } => "uri_too_long",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Store(StoreError::Full(_)) => "disk_full",
            ApiError::Store(StoreError::Busy(_)) => "retry",
            ApiError::Store(StoreError::SyncFailed(_)) => "store_failed",
            ApiError::Store(StoreError::Stopped(_)) => "unavailable",
            ApiError::Store(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Store(e) = &self {
            tracing::error!(error = %e, "store failure while serving a request");
        }
        let mut body = ErrorBody::new(self.code(), self.to_string());
        match &self {
            ApiError::InvalidRecords(errors) => {
                body.error.records = Some(errors.iter().take(100).cloned().collect());
                body.error.invalid = Some(errors.len());
                body.error.field = errors.first().and_then(|e| e.field.clone());
            }
            ApiError::BadQuery { field, .. } => body.error.field = Some(field.clone()),
            _ => {}
        }
        let mut resp = (self.status(), Json(body)).into_response();
        let headers = resp.headers_mut();
        match &self {
            // A passing shortage: the client should come back shortly.
            ApiError::Store(StoreError::Busy(_)) => {
                headers.insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                );
            }
            ApiError::Auth(_) => {
                headers.insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer realm=\"agentdrift\""),
                );
            }
            _ => {}
        }
        resp
    }
}
