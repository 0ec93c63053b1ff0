//! Reads relayed between the nodes of a cluster: a fetch for a partition
//! this node holds no replica of goes to a node that holds one (its leader
//! where known), which answers it as its own; the client gets that answer
//! as if this node had made it, so one address produces to and fetches
//! from every partition (issue 20, "Routing"). Produce needs no relay: a
//! node without a replica proposes the records to the partition's leader
//! itself (`cluster::node`). A partition's state (its log start, end and
//! bytes, `GET /topics/{t}/partitions/{p}`) is relayed the same way, and a
//! topic's description and groups' lags ask it of a replica for each
//! partition this node holds none of (`relayed_states`), so that every
//! node describes every partition alike.
//!
//! A relayed fetch asks for at most [`RELAY_FETCH_BYTES_MAX`] of records;
//! the receiving node serves at most `cluster::runtime::RELAYS_SERVING_MAX`
//! relayed fetches at once, and apart from them at most
//! `cluster::runtime::RELAYED_STATES_SERVING_MAX` relayed state reads, both
//! apart from the Raft groups' calls, and its answers go to the link after
//! the groups' traffic, never in its way.
//!
//! The request travels over the cluster's authenticated peer link
//! ([`Cluster::relay`]), not HTTP between nodes, so it needs neither TLS
//! nor credentials there: the relaying node has checked the client's, and
//! the receiving one serves a relayed request as open ([`Relayed`] marks
//! it, an extension no client can set). A relayed request found at a node
//! that holds no replica either (the partition moved meanwhile) is
//! answered 503, never relayed again, so a request makes one hop at most.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use super::error::{ApiError, code};
use super::topics::PartitionInfo;
use crate::broker::Broker;
use crate::broker::cluster::{
    Cluster, RELAY_BODY_BYTES_MAX, RelayKind, Relayer, RequestHead, ResponseHead,
};

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
/// naming the bound). Only reads of one partition are relayed (its records,
/// or its state); anything else is refused (403), whatever the peer that
/// sent it.
pub fn relayer(router: Router) -> Relayer {
    Arc::new(move |from, head, body| {
        let router = router.clone();
        Box::pin(async move {
            let answer = if !is_partition_read(&head) {
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    code::UNSUPPORTED,
                    format!(
                        "only reads of a partition are relayed between nodes, not {} {}",
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

/// Whether `head` reads one partition: a fetch,
/// `GET /topics/{topic}/partitions/{p}/records`, or its state,
/// `GET /topics/{topic}/partitions/{p}`.
fn is_partition_read(head: &RequestHead) -> bool {
    let path = head.uri.split('?').next().unwrap_or_default();
    let parts: Vec<&str> = path.split('/').collect();
    head.method == "GET"
        && matches!(parts.as_slice(),
            ["", "topics", topic, "partitions", p, "records"] | ["", "topics", topic, "partitions", p]
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

/// Relays the fetch `uri` (path and query) of partition `partition` of `topic` to a node
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
    relayed_once(relayed, topic, partition)?;
    let head = RequestHead {
        method: "GET".into(),
        uri,
        content_type: None,
    };
    let (answer, body) = cluster
        .relay(
            topic,
            partition,
            head,
            RelayKind::Fetch,
            waits + RELAY_PATIENCE,
        )
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

/// Whether this node answers reads of partition `partition` of `topic`
/// itself: a single node does, and a node of a cluster where it holds a
/// replica, or where the cluster's metadata places no such partition
/// (yet); otherwise a replica answers them, relayed.
pub(super) fn reads_here(app: &Broker, topic: &str, partition: u32) -> bool {
    app.cluster().is_none_or(|cluster| {
        cluster
            .placement(topic, partition)
            .is_none_or(|placement| placement.replicas.contains(&cluster.node_id()))
    })
}

/// Partition states one request has out at once at most: each holds one
/// of the node's turns (`cluster::node::RELAYED_STATES_AT_ONCE`), which
/// every request shares; the rest are started as these finish, not all at
/// once.
pub const RELAYED_STATES_PER_REQUEST: usize = 8;

/// The state of each of `wanted` (a topic's name and a partition of it,
/// none of which this node holds a replica of), asked of a node that holds
/// one as `GET /topics/{t}/partitions/{p}`, in the order asked, all within
/// [`RELAY_PATIENCE`]; `None` for a partition no replica knows the topic
/// of ([`relayed_state`]). The first that cannot be had otherwise fails
/// the whole: 503 where no replica answered (or a replica answered an
/// error of its own), so a partition is never shown empty for want of an
/// answer.
pub(super) async fn relayed_states(
    cluster: &Arc<dyn Cluster>,
    wanted: Vec<(String, u32)>,
) -> Result<Vec<Option<PartitionInfo>>, ApiError> {
    let deadline = Instant::now() + RELAY_PATIENCE;
    let count = wanted.len();
    let mut states: Vec<Option<PartitionInfo>> = (0..count).map(|_| None).collect();
    let mut wanted = wanted.into_iter().enumerate();
    let mut asking = JoinSet::new();
    loop {
        while asking.len() < RELAYED_STATES_PER_REQUEST
            && let Some((index, (topic, partition))) = wanted.next()
        {
            let cluster = Arc::clone(cluster);
            asking.spawn(async move {
                let patience = deadline.saturating_duration_since(Instant::now());
                let state = relayed_state(&cluster, &topic, partition, patience).await?;
                Ok::<_, ApiError>((index, state))
            });
        }
        // Returning drops the set, which cancels the requests still out.
        let Some(done) = asking.join_next().await else {
            return Ok(states);
        };
        let (index, state) =
            done.map_err(|e| ApiError::internal(format!("relaying a partition's state: {e}")))??;
        if let Some(slot) = states.get_mut(index) {
            *slot = state;
        }
    }
}

/// Partition `partition` of `topic`'s state, asked of a replica within
/// `patience` ([`state_answer`]).
pub(super) async fn relayed_state(
    cluster: &Arc<dyn Cluster>,
    topic: &str,
    partition: u32,
    patience: Duration,
) -> Result<Option<PartitionInfo>, ApiError> {
    let head = RequestHead {
        method: "GET".into(),
        // A topic's name needs no escaping in a path
        // (`broker::catalog::check_name`).
        uri: format!("/topics/{topic}/partitions/{partition}"),
        content_type: None,
    };
    let (answer, body) = cluster
        .relay(topic, partition, head, RelayKind::State, patience)
        .await?;
    state_answer(topic, partition, answer.status, &body)
}

/// What a replica's answer `status` and `body` to a state read of
/// partition `partition` of `topic` come to. 200: the state. 404 for the
/// topic or the partition (every replica answered it, the relay tried
/// them all): no replica has applied the topic's creation yet, or each
/// has applied its deletion already, so `None`; the caller shows the
/// partition empty (none holds records of it) or leaves it out. Anything
/// else is 503 50305 naming what the replica said: a replica that
/// predates the relaying of state reads refuses the route (403 50101)
/// during a rolling upgrade, and a retry once it is upgraded, or at a
/// node that holds a replica, gets the answer.
fn state_answer(
    topic: &str,
    partition: u32,
    status: u16,
    body: &[u8],
) -> Result<Option<PartitionInfo>, ApiError> {
    if status == StatusCode::OK.as_u16() {
        return serde_json::from_slice(body).map(Some).map_err(|e| {
            ApiError::internal(format!(
                "a replica's state of partition {partition} of '{topic}': {e}"
            ))
        });
    }
    let said: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let error_code = said["error_code"].as_u64();
    let unknown = [code::TOPIC_NOT_FOUND, code::PARTITION_NOT_FOUND].map(u64::from);
    if status == StatusCode::NOT_FOUND.as_u16() && error_code.is_some_and(|c| unknown.contains(&c))
    {
        return Ok(None);
    }
    let message = said["message"].as_str().unwrap_or("no message");
    let error_code = error_code.map_or_else(|| "none".to_string(), |c| c.to_string());
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        code::UNAVAILABLE,
        format!(
            "partition {partition} of '{topic}', asked of its replicas: {status} \
             (error code {error_code}): {message}; retry"
        ),
    ))
}

/// A request another node relayed here found no replica here either (the
/// partition moved meanwhile): answered 503, never relayed again, so a
/// request makes one hop at most.
pub(super) fn relayed_once(
    relayed: Option<Relayed>,
    topic: &str,
    partition: u32,
) -> Result<(), ApiError> {
    match relayed {
        Some(Relayed { from }) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code::UNAVAILABLE,
            format!(
                "node {from} relayed this read here, and this node holds no replica of \
                 partition {partition} of '{topic}' either (it moved): retry"
            ),
        )),
        None => Ok(()),
    }
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

    /// Review finding (topics-relay): a replica's 404 for a topic it has
    /// not applied yet (or has deleted already) failed the whole
    /// description or group listing; an older replica's refusal of the
    /// route came back as 403 50101. No replica knowing the topic is now
    /// `None`; any other answer is 503 50305, for the client to retry.
    #[test]
    fn a_replicas_answers_to_a_state_read_map_to_a_state_none_or_a_retry() {
        let state = br#"{"partition":3,"log_start_offset":1,"end_offset":5,"bytes":40}"#;
        let answered = state_answer("t", 3, 200, state).expect("a state");
        assert_eq!(
            answered.map(|s| (s.partition, s.log_start_offset, s.end_offset, s.bytes)),
            Some((3, 1, 5, 40))
        );
        for code in [code::TOPIC_NOT_FOUND, code::PARTITION_NOT_FOUND] {
            let body = format!(r#"{{"error_code":{code},"message":"not here"}}"#);
            let answered = state_answer("t", 3, 404, body.as_bytes()).expect("no state");
            assert!(answered.is_none(), "404 {code}");
        }
        for (status, body) in [
            (
                403,
                r#"{"error_code":50101,"message":"only reads of a partition"}"#,
            ),
            (404, r#"{"error_code":40400,"message":"no route"}"#),
            (500, "not JSON"),
            (503, r#"{"error_code":50305,"message":"busy"}"#),
        ] {
            match state_answer("t", 3, status, body.as_bytes()) {
                Err(refusal) => {
                    let answer = refusal.into_response();
                    assert_eq!(
                        answer.status(),
                        StatusCode::SERVICE_UNAVAILABLE,
                        "{status} {body}"
                    );
                }
                Ok(state) => panic!("{status} {body}: {:?}", state.map(|s| s.end_offset)),
            }
        }
    }

    #[test]
    fn only_reads_of_a_partition_are_served_relayed() {
        for uri in [
            "/topics/t/partitions/0/records?offset=0",
            "/topics/t/partitions/0/records",
            "/topics/t/partitions/0",
        ] {
            assert!(is_partition_read(&head("GET", uri)), "GET {uri}");
        }
        for (method, uri) in [
            ("POST", "/topics/t/partitions/0/records"),
            ("POST", "/topics/t/partitions/0"),
            ("DELETE", "/topics/t"),
            ("GET", "/topics/t"),
            ("GET", "/groups/g/offsets"),
            ("GET", "/topics//partitions/0/records"),
            ("GET", "/topics/t/partitions/0/records/more"),
            ("GET", "/cluster"),
            ("GET", "/topics/t/partitions"),
            ("GET", "/topics/t/partitions/"),
            ("GET", "/groups/g"),
        ] {
            assert!(!is_partition_read(&head(method, uri)), "{method} {uri}");
        }
    }
}
