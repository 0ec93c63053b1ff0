//! Error replies: a status and a JSON body `{"error_code":N,"message":"..."}`,
//! as the Kafka REST Proxy writes them. The code is the status times 100
//! plus a number that tells errors of one status apart, and stays stable.
//! The broker's errors become replies here, and only here.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::broker::{Error, Written};

/// An error reply.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
    /// Where a search by time stopped ([`code::SEARCH_STOPPED`]): the
    /// reply's `next_offset`, to search on from.
    pub next_offset: Option<u64>,
}

/// The stable codes.
pub mod code {
    /// The body or a query parameter is not what the route takes.
    pub const MALFORMED: u32 = 40001;
    /// A field has a value out of its range.
    pub const INVALID: u32 = 40002;
    /// No user, or a wrong name or password, with `serve --users`.
    pub const UNAUTHENTICATED: u32 = 40101;
    /// A write sent by a page of another site (`Sec-Fetch-Site:
    /// cross-site`): refused against cross-site request forgery.
    pub const CROSS_SITE: u32 = 40301;
    /// A topic outside the user's read (or write) prefixes.
    pub const TOPIC_FORBIDDEN: u32 = 40302;
    /// No such route.
    pub const NO_ROUTE: u32 = 40400;
    pub const TOPIC_NOT_FOUND: u32 = 40401;
    pub const PARTITION_NOT_FOUND: u32 = 40402;
    /// No committed offset of the group (groups exist only through them).
    pub const GROUP_NOT_FOUND: u32 = 40403;
    /// The route exists, not with this method.
    pub const METHOD_NOT_ALLOWED: u32 = 40501;
    pub const TOPIC_EXISTS: u32 = 40901;
    pub const RECORD_TOO_LARGE: u32 = 41301;
    pub const REQUEST_TOO_LARGE: u32 = 41302;
    /// A body without `Content-Type: application/json`.
    pub const NOT_JSON: u32 = 41501;
    /// A fetch from past the end of the partition.
    pub const OFFSET_OUT_OF_RANGE: u32 = 41601;
    /// A fetch by time whose search read its bound of bytes without
    /// finding the record: the reply's `next_offset` says where to go on.
    pub const SEARCH_STOPPED: u32 = 42201;
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
    /// The cluster cannot decide now (its metadata group has no leader):
    /// retry.
    pub const UNAVAILABLE: u32 = 50305;
    /// Something this server does not do (yet).
    pub const UNSUPPORTED: u32 = 50101;
    /// A node of a cluster relayed a read to a node holding the partition,
    /// whose answer was over what a relayed answer carries.
    pub const RELAY_TOO_LARGE: u32 = 50201;
    /// Writes are refused until the disk has free space again
    /// (`--min-free-bytes`); reads go on. Retry later.
    pub const NO_SPACE: u32 = 50701;
}

impl ApiError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            next_offset: None,
        }
    }

    /// The same error, with where a search stopped.
    pub fn with_next_offset(mut self, next: u64) -> ApiError {
        self.next_offset = Some(next);
        self
    }

    pub fn malformed(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code::MALFORMED, message)
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code::INVALID, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, code::INTERNAL, message)
    }
}

impl From<Error> for ApiError {
    /// The status and stable code of each broker error. Only
    /// [`code::STORAGE`] may mean that the write happened: every other
    /// error is of a request refused before anything was applied.
    fn from(error: Error) -> ApiError {
        let (status, code) = match &error {
            Error::TopicNotFound { .. } => (StatusCode::NOT_FOUND, code::TOPIC_NOT_FOUND),
            Error::PartitionNotFound { .. } => (StatusCode::NOT_FOUND, code::PARTITION_NOT_FOUND),
            Error::TopicExists { .. } => (StatusCode::CONFLICT, code::TOPIC_EXISTS),
            Error::Invalid(_) => (StatusCode::BAD_REQUEST, code::INVALID),
            Error::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, code::RECORD_TOO_LARGE),
            Error::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, code::OVERLOADED),
            Error::NoSpace(_) => (StatusCode::INSUFFICIENT_STORAGE, code::NO_SPACE),
            Error::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, code::SHUTTING_DOWN),
            // HTTP produce is proposed at the leader by the node, so a
            // leader gone is the cluster's not deciding now: retry.
            Error::Unavailable { .. } | Error::NotLeader(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, code::UNAVAILABLE)
            }
            Error::Unsupported(_) => (StatusCode::NOT_IMPLEMENTED, code::UNSUPPORTED),
            Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, code::INTERNAL),
            Error::Storage { .. } if error.is_poisoned() => {
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    code::STORE_POISONED,
                    "a sync failed, so the store takes no writes while seglog reopens it; \
                     retry shortly (nothing of this request was written)",
                );
            }
            Error::Storage { written, .. } => {
                let message = match written {
                    Written::Maybe => error.to_string(),
                    Written::No if error.is_disk_full() => format!("the disk is full: {error}"),
                    Written::No => format!("storage error: {error}"),
                };
                return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code::STORAGE, message);
            }
        };
        ApiError::new(status, code, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({"error_code": self.code, "message": self.message});
        if let Some(next) = self.next_offset {
            body["next_offset"] = next.into();
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

/// Set on error responses, for the metrics layer.
#[derive(Clone, Copy, Debug)]
pub struct ErrorCode(pub u32);

/// Bytes of a refused request's body that [`refuse_unread`] reads and
/// drops so that its connection can carry the client's next request: a
/// JSON write is far smaller; past it, closing the connection is cheaper
/// than reading what will be thrown away.
pub const REFUSED_BODY_DRAIN_MAX: usize = 64 * 1024;

/// `response`, for a request refused before its body was read (by the
/// guards in front of the routes). The server cannot take the next request
/// off a connection whose body it left unread, and closes it; a client
/// that pools connections (ureq, browsers) would then send its next
/// request into a closed socket. So the body is read and dropped, up to
/// [`REFUSED_BODY_DRAIN_MAX`]; a larger one gets `Connection: close`, which
/// tells the client not to reuse the connection.
pub async fn refuse_unread(request: Request, response: Response) -> Response {
    let drained = axum::body::to_bytes(request.into_body(), REFUSED_BODY_DRAIN_MAX)
        .await
        .is_ok();
    let mut response = response;
    if !drained {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
