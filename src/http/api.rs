//! The routes, and what every handler uses: the route table, the metrics
//! layer, JSON replies for unknown routes and methods, the extractors'
//! errors as [`ApiError`]s, `GET /health` and `GET /metrics`. The handlers
//! of each resource have a file of their own (`topics`, `produce`,
//! `fetch`, `groups`), and so does the console (`console`). Every body in and out is JSON; a request is checked
//! whole before anything is applied, so a bad request changes nothing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::console::{self, Console};
use super::error::{ApiError, ErrorCode, code, refuse_unread};
use super::metrics::HttpMetrics;
use super::{auth, fetch, groups, produce, topics};
use crate::auth::Authenticator;
use crate::broker::catalog::Topic;
use crate::broker::metrics::Gauges;
use crate::broker::{Broker, Error};
use crate::log;

/// What every handler gets: the broker.
pub(super) type AppState = State<Arc<Broker>>;

/// Every route, with the metrics layer and JSON replies for unknown routes
/// and methods, and the console's.
pub fn router(app: Arc<Broker>, console: Console, auth: Option<Arc<Authenticator>>) -> Router {
    let http_metrics = Arc::new(HttpMetrics::default());
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/cluster", get(cluster))
        .route("/topics", get(topics::list).post(topics::create))
        .route(
            "/topics/{topic}",
            get(topics::describe)
                .post(produce::to_topic)
                .delete(topics::delete),
        )
        .route(
            "/topics/{topic}/partitions/{partition}",
            get(topics::describe_partition).post(produce::to_partition),
        )
        .route(
            "/topics/{topic}/partitions/{partition}/records",
            get(fetch::fetch),
        )
        .route("/groups", get(groups::list_groups))
        .route("/groups/{group}", get(groups::describe))
        .route(
            "/groups/{group}/offsets",
            get(groups::list).post(groups::commit),
        )
        .route_layer(middleware::from_fn(guard_writes))
        .route_layer(middleware::from_fn(auth::topic_in_path))
        .merge(console::routes(console))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(
            app.limits.request_bytes,
        ))
        .layer(middleware::from_fn_with_state(auth, auth::authenticate))
        .layer(Extension(Arc::clone(&http_metrics)))
        .layer(middleware::from_fn_with_state(http_metrics, track))
        .with_state(app)
}

/// Refuses a write that a page of another site may have sent, before
/// its route sees it, since a browser sends such a request with the
/// user's access to this server (cross-site request forgery, against a
/// server on localhost or a private network as much as any):
/// - a write (any method but GET, HEAD and OPTIONS) whose browser says it
///   comes from another site (`Sec-Fetch-Site: cross-site`, which every
///   current browser sends and a page cannot change): 403;
/// - a POST (the routes that take a body) without `Content-Type:
///   application/json`: 415. A page of another site can send a form or
///   `text/plain` without asking, but not JSON: a browser asks the server
///   first (a CORS preflight), and this one allows no other origin.
///
/// Only the API's routes are guarded (`route_layer`): an unknown route or
/// method still gets its 404 or 405.
async fn guard_writes(request: Request, next: Next) -> Response {
    let method = request.method();
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    let headers = request.headers();
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    let refusal = if cross_site {
        ApiError::new(
            StatusCode::FORBIDDEN,
            code::CROSS_SITE,
            "a write from a page of another site is refused (Sec-Fetch-Site: cross-site)",
        )
    } else if *method == Method::POST && !is_json(headers.get(header::CONTENT_TYPE)) {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::NOT_JSON,
            "a write takes a JSON body: send it with 'Content-Type: application/json'",
        )
    } else {
        return next.run(request).await;
    };
    refuse_unread(request, refusal.into_response()).await
}

/// Whether a `Content-Type` is JSON: `application/json`, in any case,
/// with or without parameters (`; charset=utf-8`).
fn is_json(content_type: Option<&header::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// Counts each request by route and status, and each error by code.
async fn track(State(metrics): State<Arc<HttpMetrics>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::HEAD => "HEAD",
        _ => "other",
    };
    let response = next.run(request).await;
    let status = response.status().as_u16();
    metrics.count_request(method, route, status);
    if let Some(ErrorCode(code)) = response.extensions().get::<ErrorCode>() {
        metrics.count_error(*code);
        log::debug(format_args!("{method} {route}: {status} ({code})"));
    }
    response
}

async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, code::NO_ROUTE, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        code::METHOD_NOT_ALLOWED,
        "the route does not take this method",
    )
}

/// A path's parameters, or a 400 naming what is wrong.
pub(super) fn path<T>(extracted: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    extracted
        .map(|Path(value)| value)
        .map_err(|e| ApiError::malformed(format!("bad path: {}", e.body_text())))
}

/// A request body, or a 413 past the limit.
pub(super) fn body(
    extracted: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    extracted.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                code::REQUEST_TOO_LARGE,
                format!(
                    "the request body is over the limit of {limit} bytes (--max-request-bytes)"
                ),
            )
        } else {
            ApiError::malformed(format!("cannot read the request body: {}", e.body_text()))
        }
    })
}

/// Parses a JSON body, naming the line and column of the first problem.
pub(super) fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::malformed(format!("bad JSON body: {e}")))
}

/// A topic of the catalog, or a 404.
pub(super) fn find_topic(app: &Broker, name: &str) -> Result<Topic, ApiError> {
    app.catalog()
        .get(name)
        .cloned()
        .ok_or_else(|| topic_not_found(name))
}

pub(super) fn topic_not_found(name: &str) -> ApiError {
    ApiError::from(Error::TopicNotFound {
        topic: name.to_string(),
    })
}

/// Checks a partition number against the topic.
pub(super) fn check_partition(topic: &Topic, partition: u64) -> Result<u32, ApiError> {
    match u32::try_from(partition) {
        Ok(p) if p < topic.partitions => Ok(p),
        _ => Err(ApiError::from(Error::PartitionNotFound {
            topic: topic.name.clone(),
            partition,
            partitions: topic.partitions,
        })),
    }
}

/// Runs blocking store work off the event loop's threads.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("a worker thread failed: {e}")))?
}

// ---- health and metrics ----

/// The cluster as this node sees it (`seglog serve --peers`): its nodes
/// and their addresses, which peers it is linked to, the metadata group's
/// leader. 404 on a single node.
async fn cluster(State(app): AppState) -> Result<Response, ApiError> {
    match app.cluster() {
        Some(cluster) => Ok(Json(cluster.status()).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            code::NO_ROUTE,
            "this server is a single node, not part of a cluster (it was started without --peers)",
        )),
    }
}

async fn health(State(app): AppState) -> Response {
    // Without the store's lock: a reopen in place holds it while it runs.
    let poisoned = app.is_poisoned();
    let space = app.space().status();
    if poisoned {
        // The group commit reopens it in place (`storage/group_commit.rs`);
        // reads are served meanwhile.
        let body = json!({"status": "healing",
            "message": "a sync failed: the store takes no writes while seglog reopens it"});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    } else if !space.admitting {
        // Reads are served; writes resume by themselves once space is back.
        let body = json!({"status": "read_only",
            "message": app.space().refusal(),
            "free_bytes": space.free_bytes,
            "min_free_bytes": space.min_free_bytes});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    } else {
        Json(json!({"status": "ok"})).into_response()
    }
}

async fn metrics(State(app): AppState, Extension(http): Extension<Arc<HttpMetrics>>) -> Response {
    let topics = app.catalog().len();
    let poisoned = app.is_poisoned();
    let open_keys = app.open_keys();
    let text = http.render(
        &app.metrics,
        &Gauges {
            open_keys,
            topics,
            poisoned,
            space: app.space().status(),
        },
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_is_json() {
        let is = |text: &str| is_json(Some(&header::HeaderValue::from_str(text).expect("value")));
        assert!(is("application/json"));
        assert!(is("Application/JSON; charset=utf-8"));
        assert!(is(" application/json ;x=y"));
        assert!(!is("text/plain"));
        assert!(!is("application/x-www-form-urlencoded"));
        assert!(!is("multipart/form-data; boundary=x"));
        assert!(!is("application/jsonp"));
        assert!(!is(""));
        assert!(!is_json(None));
    }
}
