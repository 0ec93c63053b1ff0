//! Error replies: a status and a JSON body `{"error_code":N,"message":"..."}`,
//! as the Kafka REST Proxy writes them. The code is the status times 100
//! plus a number that tells errors of one status apart, and stays stable.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::storage::error::Error as StoreError;

/// An error reply.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
}

/// The stable codes.
pub mod code {
    /// The body or a query parameter is not what the route takes.
    pub const MALFORMED: u32 = 40001;
    /// A field has a value out of its range.
    pub const INVALID: u32 = 40002;
    /// No such route.
    pub const NO_ROUTE: u32 = 40400;
    pub const TOPIC_NOT_FOUND: u32 = 40401;
    pub const PARTITION_NOT_FOUND: u32 = 40402;
    /// The route exists, not with this method.
    pub const METHOD_NOT_ALLOWED: u32 = 40501;
    pub const TOPIC_EXISTS: u32 = 40901;
    pub const RECORD_TOO_LARGE: u32 = 41301;
    pub const REQUEST_TOO_LARGE: u32 = 41302;
    /// A fetch from past the end of the partition.
    pub const OFFSET_OUT_OF_RANGE: u32 = 41601;
    /// A bug or an unexpected failure of the server itself.
    pub const INTERNAL: u32 = 50001;
    /// A sync failed earlier: writes are refused until a restart.
    pub const STORE_POISONED: u32 = 50301;
    /// The disk is full, or another I/O error: the write did not happen,
    /// unless the message says it may have.
    pub const STORAGE: u32 = 50302;
    /// Too many writes wait for a sync point; try again.
    pub const OVERLOADED: u32 = 50303;
    /// The server is shutting down.
    pub const SHUTTING_DOWN: u32 = 50304;
}

impl ApiError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn malformed(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code::MALFORMED, message)
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code::INVALID, message)
    }

    pub fn topic_not_found(topic: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            code::TOPIC_NOT_FOUND,
            format!("topic '{topic}' not found"),
        )
    }

    pub fn partition_not_found(topic: &str, partition: u64, partitions: u32) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            code::PARTITION_NOT_FOUND,
            format!(
                "topic '{topic}' has partitions 0 to {}, not {partition}",
                partitions - 1
            ),
        )
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, code::INTERNAL, message)
    }

    /// A store error on a write that did not happen: the store refused it
    /// before changing anything.
    pub fn from_store(error: &StoreError) -> ApiError {
        match error {
            StoreError::Poisoned => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                code::STORE_POISONED,
                "a sync failed earlier, so the store takes no writes until seglog restarts",
            ),
            StoreError::Io { source, .. } if is_disk_full(source) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                code::STORAGE,
                format!("the disk is full: {error}"),
            ),
            _ => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                code::STORAGE,
                format!("storage error: {error}"),
            ),
        }
    }
}

fn is_disk_full(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::StorageFull
        || error.raw_os_error() == Some(libc::ENOSPC)
        || error.raw_os_error() == Some(libc::EDQUOT)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error_code": self.code, "message": self.message});
        let mut response = (self.status, axum::Json(body)).into_response();
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

/// Set on error responses, for the metrics layer.
#[derive(Clone, Copy, Debug)]
pub struct ErrorCode(pub u32);
