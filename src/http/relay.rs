//! Reads relayed between the nodes of a cluster: a fetch for a partition
//! this node holds no replica of goes to a node that holds one (its leader
//! where known), which answers it as its own; the client gets that answer
//! as if this node had made it, so one address produces to and fetches
//! from every partition (issue 20, "Routing"). Produce needs no relay: a
//! node without a replica proposes the records to the partition's leader
//! itself (`cluster::node`). Not relayed (yet): a topic's description and
//! groups' lag, which show the partitions a node holds no replica of as
//! empty there.
//!
//! A relayed fetch asks for at most [`RELAY_FETCH_BYTES_MAX`] of records;
//! the receiving node serves relayed fetches only, at most
//! `cluster::runtime::RELAYS_SERVING_MAX` at once, apart from the Raft
//! groups' calls, and its answers go to the link after the groups'
//! traffic, never in its way.
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
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt as _;

use super::error::{ApiError, code};
use crate::broker::cluster::{Cluster, RELAY_BODY_BYTES_MAX, Relayer, RequestHead, ResponseHead};

/// Marks a request another node relayed here, with that node's id.
#[derive(Clone, Copy, Debug)]
pub struct Relayed {
    pub from: u64,
}

/// Bytes of records a relayed fetch asks for at most (the client's
/// `max_bytes` is lowered to it): their JSON, with keys and headers in
/// base64, stays within [`RELAY_BODY_BYTES_MAX`].
pub const RELAY_FETCH_BYTES_MAX: usize = 4 << 20;

/// How long a relayed read may take beyond its own long poll (`wait_ms`):
/// a few of the link's round trips, and a replica's read under load.
pub const RELAY_PATIENCE: Duration = Duration::from_secs(10);

/// What serves requests relayed to this node: `router`, this node's own
/// routes, as if a client had sent them, with the answer's body collected
/// up to [`RELAY_BODY_BYTES_MAX`] (a longer one is answered 502 instead,
/// naming the bound). Only reads of records are relayed; anything else is
/// refused (403), whatever the peer that sent it.
pub fn relayer(router: Router) -> Relayer {
    Arc::new(move |from, head, body| {
        let router = router.clone();
        Box::pin(async move {
            let answer = if !is_records_read(&head) {
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    code::UNSUPPORTED,
                    format!(
                        "only fetches are relayed between nodes, not {} {}",
                        head.method, head.uri
                    ),
                )
                .into_response()
            } else {
                match request(from, &head, body) {
                    Ok(request) => match router.oneshot(request).await {
                        Ok(answer) => answer,
                        Err(never) => match never {},
                    },
                    Err(refusal) => refusal.into_response(),
                }
            };
            collect(answer).await
        })
    })
}

/// Whether `head` is a fetch: `GET /topics/{topic}/partitions/{p}/records`.
fn is_records_read(head: &RequestHead) -> bool {
    let path = head.uri.split('?').next().unwrap_or_default();
    let parts: Vec<&str> = path.split('/').collect();
    head.method == "GET"
        && matches!(parts.as_slice(), ["", "topics", topic, "partitions", p, "records"]
            if !topic.is_empty() && !p.is_empty())
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

/// Relays the read `uri` (path and query) of partition `partition` of `topic` to a node
/// that holds a replica, and answers as it did. `relayed`: the request
/// came from another node already, which found no replica there either.
pub(super) async fn to_replica(
    cluster: &Arc<dyn Cluster>,
    topic: &str,
    partition: u32,
    uri: String,
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
        uri,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, uri: &str) -> RequestHead {
        RequestHead {
            method: method.into(),
            uri: uri.into(),
            content_type: None,
        }
    }

    #[test]
    fn only_fetches_are_served_relayed() {
        assert!(is_records_read(&head(
            "GET",
            "/topics/t/partitions/0/records?offset=0"
        )));
        assert!(is_records_read(&head(
            "GET",
            "/topics/t/partitions/0/records"
        )));
        for (method, uri) in [
            ("POST", "/topics/t/partitions/0/records"),
            ("POST", "/topics/t/partitions/0"),
            ("DELETE", "/topics/t"),
            ("GET", "/topics/t"),
            ("GET", "/groups/g/offsets"),
            ("GET", "/topics//partitions/0/records"),
            ("GET", "/topics/t/partitions/0/records/more"),
            ("GET", "/cluster"),
        ] {
            assert!(!is_records_read(&head(method, uri)), "{method} {uri}");
        }
    }
}
