//! Reads relayed between the nodes of a cluster: a fetch for a partition
//! this node holds no replica of goes to a node that holds one (its leader
//! where known), which answers it as its own; the client gets that answer
//! as if this node had made it, so one address serves every partition
//! (issue 20, "Routing"). Produce needs no relay: a node without a
//! replica proposes the records to the partition's leader itself
//! (`cluster::node`).
//!
//! The request travels over the cluster's authenticated peer link
//! ([`Cluster::relay`]), not HTTP between nodes, so it needs neither TLS
//! nor credentials there: the relaying node has checked the client's, and
//! the receiving one serves a relayed request as open ([`Relayed`] marks
//! it, an extension no client can set). A relayed request found at a node
//! that holds no replica either (the partition moved meanwhile) is
//! answered 503, never relayed again, so a request makes one hop at most.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt as _;

use super::error::{ApiError, code};
use crate::broker::cluster::{Cluster, RELAY_BODY_BYTES_MAX, Relayer, RequestHead, ResponseHead};

/// Marks a request another node relayed here, with that node's id.
#[derive(Clone, Copy, Debug)]
pub struct Relayed {
    pub from: u64,
}

/// How long a relayed read may take beyond its own long poll (`wait_ms`):
/// a few of the link's round trips, and a replica's read under load.
pub const RELAY_PATIENCE: Duration = Duration::from_secs(10);

/// What serves requests relayed to this node: `router`, this node's own
/// routes, as if a client had sent them, with the answer's body collected
/// up to [`RELAY_BODY_BYTES_MAX`] (a longer one is answered 502 instead,
/// naming the bound).
pub fn relayer(router: Router) -> Relayer {
    Arc::new(move |from, head, body| {
        let router = router.clone();
        Box::pin(async move {
            let answer = match request(from, &head, body) {
                Ok(request) => match router.oneshot(request).await {
                    Ok(answer) => answer,
                    Err(never) => match never {},
                },
                Err(refusal) => refusal.into_response(),
            };
            collect(answer).await
        })
    })
}

/// The request `head` and `body` describe, marked relayed from `from`.
fn request(from: u64, head: &RequestHead, body: Vec<u8>) -> Result<Request, ApiError> {
    let mut builder = Request::builder()
        .method(head.method.as_str())
        .uri(head.uri.as_str());
    if let Some(content_type) = &head.content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type.as_str());
    }
    let mut request = builder
        .body(Body::from(body))
        .map_err(|e| ApiError::malformed(format!("a relayed request: {e}")))?;
    request.extensions_mut().insert(Relayed { from });
    Ok(request)
}

/// An answer's status, content type and body, the body at most
/// [`RELAY_BODY_BYTES_MAX`].
async fn collect(answer: Response) -> (ResponseHead, Vec<u8>) {
    let status = answer.status().as_u16();
    let content_type = answer
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match axum::body::to_bytes(answer.into_body(), RELAY_BODY_BYTES_MAX).await {
        Ok(body) => (
            ResponseHead {
                status,
                content_type,
            },
            body.to_vec(),
        ),
        Err(e) => {
            let refusal = ApiError::new(
                StatusCode::BAD_GATEWAY,
                code::RELAY_TOO_LARGE,
                format!(
                    "the answer of the node that holds the partition is over the \
                     {RELAY_BODY_BYTES_MAX} bytes a relayed answer carries ({e}): ask for fewer \
                     (max_bytes, max_records), or ask a node that holds a replica"
                ),
            );
            Box::pin(collect(refusal.into_response())).await
        }
    }
}

/// Relays the read `uri` of partition `partition` of `topic` to a node
/// that holds a replica, and answers as it did. `relayed`: the request
/// came from another node already, which found no replica there either.
pub(super) async fn to_replica(
    cluster: &Arc<dyn Cluster>,
    topic: &str,
    partition: u32,
    uri: &Uri,
    waits: Duration,
    relayed: Option<Relayed>,
) -> Result<Response, ApiError> {
    if let Some(Relayed { from }) = relayed {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code::UNAVAILABLE,
            format!(
                "node {from} relayed this read here, and this node holds no replica of \
                 partition {partition} of '{topic}' either (it moved): retry"
            ),
        ));
    }
    let head = RequestHead {
        method: "GET".into(),
        uri: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_string(), ToString::to_string),
        content_type: None,
    };
    let (answer, body) = cluster
        .relay(topic, partition, head, waits + RELAY_PATIENCE)
        .await?;
    let status = StatusCode::from_u16(answer.status).map_err(|e| {
        ApiError::internal(format!("a relayed answer's status {}: {e}", answer.status))
    })?;
    let mut response = (status, body).into_response();
    if let Some(content_type) = answer
        .content_type
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    Ok(response)
}
