//! The routes. Every body in and out is JSON; every error is an
//! [`ApiError`]. A request is checked whole before anything is applied, so
//! a bad request changes nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::{ApiError, ErrorCode, code};
use super::metrics::HttpMetrics;
use super::records::{self, RecordIn};
use crate::broker::catalog::{NewTopic, Topic};
use crate::broker::groups::{check_group, offset_key};
use crate::broker::metrics::Gauges;
use crate::broker::time::now_ms;
use crate::broker::{Broker, Error, FETCH_WAIT_MS_MAX, topics};
use crate::log;

/// Partitions of a topic created over HTTP without a count: the default of
/// the HTTP service seglog's API grew from. (A Kafka client's topic gets
/// Kafka's default, `kafka::topics::NUM_PARTITIONS_DEFAULT`.)
pub const CREATE_PARTITIONS_DEFAULT: u32 = 100;

/// Records a fetch returns when it names no `max_records` (Kafka's
/// `max.poll.records` default).
pub const FETCH_RECORDS_DEFAULT: usize = 500;
/// Most records one fetch returns: bounds the reply's memory with small records.
pub const FETCH_RECORDS_MAX: usize = 100_000;
/// Bytes of records a fetch returns when it names no `max_bytes` (Kafka's
/// `max.partition.fetch.bytes` default).
pub const FETCH_BYTES_DEFAULT: usize = 1 << 20;
/// Most bytes of records one fetch returns; a record larger than the limit
/// is still returned when it is the first, so a fetch always makes progress.
pub const FETCH_BYTES_MAX: usize = 64 << 20;

type AppState = State<Arc<Broker>>;

/// Every route, with the metrics layer and JSON replies for unknown routes
/// and methods.
pub fn router(app: Arc<Broker>) -> Router {
    let http_metrics = Arc::new(HttpMetrics::default());
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/topics", get(list_topics).post(create_topic))
        .route(
            "/topics/{topic}",
            get(describe_topic).post(produce).delete(delete_topic),
        )
        .route(
            "/topics/{topic}/partitions/{partition}",
            post(produce_to_partition),
        )
        .route("/topics/{topic}/partitions/{partition}/records", get(fetch))
        .route(
            "/groups/{group}/offsets",
            get(list_offsets).post(commit_offsets),
        )
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(
            app.limits.request_bytes,
        ))
        .layer(Extension(Arc::clone(&http_metrics)))
        .layer(middleware::from_fn_with_state(http_metrics, track))
        .with_state(app)
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
fn path<T>(extracted: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    extracted
        .map(|Path(value)| value)
        .map_err(|e| ApiError::malformed(format!("bad path: {}", e.body_text())))
}

/// A request body, or a 413 past the limit.
fn body(extracted: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
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
fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::malformed(format!("bad JSON body: {e}")))
}

/// A topic of the catalog, or a 404.
fn find_topic(app: &Broker, name: &str) -> Result<Topic, ApiError> {
    app.catalog()
        .get(name)
        .cloned()
        .ok_or_else(|| topic_not_found(name))
}

fn topic_not_found(name: &str) -> ApiError {
    ApiError::from(Error::TopicNotFound {
        topic: name.to_string(),
    })
}

/// Checks a partition number against the topic.
fn check_partition(topic: &Topic, partition: u64) -> Result<u32, ApiError> {
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
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("a worker thread failed: {e}")))?
}

// ---- health and metrics ----

async fn health(State(app): AppState) -> Response {
    let poisoned = app.store().is_poisoned();
    if poisoned {
        let body = json!({"status": "unavailable",
            "message": "a sync failed, so the store takes no writes until seglog restarts"});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    } else {
        Json(json!({"status": "ok"})).into_response()
    }
}

async fn metrics(State(app): AppState, Extension(http): Extension<Arc<HttpMetrics>>) -> Response {
    let topics = app.catalog().len();
    let (open_keys, poisoned) = {
        let store = app.store();
        (store.open_key_count(), store.is_poisoned())
    };
    let text = http.render(
        &app.metrics,
        &Gauges {
            open_keys,
            topics,
            poisoned,
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

// ---- topics ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTopic {
    name: String,
    #[serde(default)]
    partitions: Option<u32>,
    #[serde(default)]
    retention_ms: Option<u64>,
    #[serde(default)]
    retention_bytes: Option<u64>,
}

async fn list_topics(State(app): AppState) -> Json<Vec<String>> {
    Json(app.catalog().topics().map(|t| t.name.clone()).collect())
}

async fn create_topic(
    State(app): AppState,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body(bytes, app.limits.request_bytes)?;
    let request: CreateTopic = parse(&bytes)?;
    let new = NewTopic {
        name: request.name,
        partitions: request.partitions.unwrap_or(CREATE_PARTITIONS_DEFAULT),
        retention_ms: request.retention_ms,
        retention_bytes: request.retention_bytes,
    };
    let worker = Arc::clone(&app);
    let topic = blocking(move || topics::create(&worker, new).map_err(ApiError::from)).await?;
    log::info(format_args!(
        "created topic '{}' (id {}, {} partitions)",
        topic.name, topic.id, topic.partitions
    ));
    let described = describe(&app, topic).await?;
    Ok((StatusCode::CREATED, Json(described)).into_response())
}

#[derive(Serialize)]
struct PartitionInfo {
    partition: u32,
    log_start_offset: u64,
    end_offset: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct TopicInfo {
    name: String,
    partitions: Vec<PartitionInfo>,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    created_ms: u64,
}

/// A topic with the state of each partition.
async fn describe(app: &Arc<Broker>, topic: Topic) -> Result<TopicInfo, ApiError> {
    let app = Arc::clone(app);
    blocking(move || {
        let mut partitions = Vec::with_capacity(topic.partitions as usize);
        for partition in 0..topic.partitions {
            let state = app.partition_state(&topic.key(partition))?;
            partitions.push(PartitionInfo {
                partition,
                log_start_offset: state.log_start,
                end_offset: state.end,
                bytes: state.bytes,
            });
        }
        Ok(TopicInfo {
            name: topic.name,
            partitions,
            retention_ms: topic.retention_ms,
            retention_bytes: topic.retention_bytes,
            created_ms: topic.created_ms,
        })
    })
    .await
}

async fn describe_topic(
    State(app): AppState,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<TopicInfo>, ApiError> {
    let topic = find_topic(&app, &path(name)?)?;
    Ok(Json(describe(&app, topic).await?))
}

async fn delete_topic(
    State(app): AppState,
    name: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let name = path(name)?;
    let topic = topics::delete(&app, name).await?;
    log::info(format_args!(
        "deleted topic '{}' (id {})",
        topic.name, topic.id
    ));
    Ok(StatusCode::NO_CONTENT)
}

// ---- produce ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProduceBody<'a> {
    #[serde(borrow)]
    records: Vec<RecordIn<'a>>,
}

#[derive(Serialize)]
struct ProduceReply {
    offsets: Vec<Produced>,
}

#[derive(Serialize)]
struct Produced {
    partition: u32,
    offset: u64,
}

async fn produce(
    State(app): AppState,
    topic: Result<Path<String>, PathRejection>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let topic = path(topic)?;
    produce_records(app, topic, None, bytes).await
}

async fn produce_to_partition(
    State(app): AppState,
    params: Result<Path<(String, u64)>, PathRejection>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (topic, partition) = path(params)?;
    produce_records(app, topic, Some(partition), bytes).await
}

/// Appends a batch of records and answers once they are durable.
async fn produce_records(
    app: Arc<Broker>,
    topic_name: String,
    path_partition: Option<u64>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let bytes = body(bytes, app.limits.request_bytes)?;
    let request: ProduceBody = parse(&bytes)?;
    if request.records.is_empty() {
        return Err(ApiError::invalid(
            "a produce request needs at least one record",
        ));
    }
    let now = now_ms();
    let (produced, synced) = {
        let catalog = app.catalog();
        let topic = catalog
            .get(&topic_name)
            .ok_or_else(|| topic_not_found(&topic_name))?;
        let fixed = path_partition
            .map(|p| check_partition(topic, p))
            .transpose()?;
        // Keyless records of one request share a partition.
        let mut keyless = None;
        let mut encoded = Vec::with_capacity(request.records.len());
        for (i, record) in request.records.iter().enumerate() {
            let partition = match (fixed, record.partition, record.key) {
                (Some(p), None, _) => p,
                (Some(p), Some(q), _) if u64::from(q) == u64::from(p) => p,
                (Some(p), Some(q), _) => {
                    return Err(ApiError::invalid(format!(
                        "record {i} names partition {q} in a request to partition {p}"
                    )));
                }
                (None, Some(q), _) => check_partition(topic, u64::from(q))?,
                (None, None, Some(key)) => records::partition_for_key(key, topic.partitions),
                (None, None, None) => {
                    *keyless.get_or_insert_with(|| app.next_partition(topic.partitions))
                }
            };
            let payload =
                records::encode(record.key, record.value, record.timestamp.unwrap_or(now));
            if payload.len() > app.limits.record_bytes {
                return Err(ApiError::from(Error::TooLarge(format!(
                    "record {i} is {} bytes stored, over the limit of {} (--max-record-bytes)",
                    payload.len(),
                    app.limits.record_bytes
                ))));
            }
            encoded.push((partition, payload));
        }
        let mut writer = app.writer()?;
        // Each partition's records are appended all or none
        // (`Writer::append_all`), in the order of their first record.
        let mut partitions: Vec<(u32, Vec<usize>)> = Vec::new();
        for (i, (partition, _)) in encoded.iter().enumerate() {
            match partitions.iter_mut().find(|(p, _)| p == partition) {
                Some((_, indexes)) => indexes.push(i),
                None => partitions.push((*partition, vec![i])),
            }
        }
        let mut offsets = vec![0u64; encoded.len()];
        for (done, (partition, indexes)) in partitions.iter().enumerate() {
            let payloads: Vec<&[u8]> = indexes.iter().map(|&i| encoded[i].1.as_slice()).collect();
            match writer.append_all(&topic.key(*partition), &payloads) {
                Ok(first) => {
                    for (j, &i) in indexes.iter().enumerate() {
                        offsets[i] = first + j as u64;
                    }
                }
                Err(e) if done == 0 => return Err(ApiError::from(e)),
                Err(Error::Storage { source, .. }) => {
                    // The partitions before this one are appended and will
                    // be made durable by the next sync point; none of this
                    // one's records is. So the request may have been
                    // written in part: a storage error that says so.
                    return Err(ApiError::from(Error::Storage {
                        context: format!(
                            "the records of the first {done} of the {} partitions were \
                             appended and may become durable, none of partition {partition}'s",
                            partitions.len()
                        ),
                        source,
                        written: crate::broker::Written::Maybe,
                    }));
                }
                Err(e) => return Err(ApiError::from(e)),
            }
        }
        let produced: Vec<Produced> = encoded
            .iter()
            .zip(offsets)
            .map(|((partition, _), offset)| Produced {
                partition: *partition,
                offset,
            })
            .collect();
        (produced, writer.finish())
    };
    if let Some(durable) = synced {
        durable.wait().await?;
    }
    app.metrics.produce_latency.observe(started.elapsed());
    Ok(Json(ProduceReply { offsets: produced }).into_response())
}

// ---- fetch ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchParams {
    offset: u64,
    #[serde(default)]
    max_records: Option<usize>,
    #[serde(default)]
    max_bytes: Option<usize>,
    #[serde(default)]
    wait_ms: Option<u64>,
}

/// Records of one partition from an offset, as a JSON array; with
/// `wait_ms`, waits at the end of the partition until records arrive.
async fn fetch(
    State(app): AppState,
    params: Result<Path<(String, u64)>, PathRejection>,
    query: Result<Query<FetchParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (topic_name, partition) = path(params)?;
    let Query(query) =
        query.map_err(|e| ApiError::malformed(format!("bad query: {}", e.body_text())))?;
    let max_records = query.max_records.unwrap_or(FETCH_RECORDS_DEFAULT);
    if max_records == 0 || max_records > FETCH_RECORDS_MAX {
        return Err(ApiError::invalid(format!(
            "max_records is 1 to {FETCH_RECORDS_MAX}, not {max_records}"
        )));
    }
    let max_bytes = query.max_bytes.unwrap_or(FETCH_BYTES_DEFAULT);
    if max_bytes == 0 || max_bytes > FETCH_BYTES_MAX {
        return Err(ApiError::invalid(format!(
            "max_bytes is 1 to {FETCH_BYTES_MAX}, not {max_bytes}"
        )));
    }
    let wait_ms = query.wait_ms.unwrap_or(0);
    if wait_ms > FETCH_WAIT_MS_MAX {
        return Err(ApiError::invalid(format!(
            "wait_ms is at most {FETCH_WAIT_MS_MAX}, not {wait_ms}"
        )));
    }
    let topic = find_topic(&app, &topic_name)?;
    let partition = check_partition(&topic, partition)?;
    let mut poll = app.long_poll(std::time::Duration::from_millis(wait_ms));
    let budget = Budget {
        records: max_records,
        bytes: max_bytes,
        sent_any: false,
    };
    loop {
        // Marked seen before the read: a sync point that lands during it
        // wakes the wait below.
        poll.mark_seen();
        let worker = Arc::clone(&app);
        let (topic, offset) = (topic.clone(), query.offset);
        let mut budget = budget;
        let first = blocking(move || {
            let mut chunk = Chunk::new(&topic, partition, offset);
            chunk.body.push(b'[');
            chunk.check_offset(&worker)?;
            chunk.read(&worker, &mut budget)?;
            Ok((chunk, budget))
        })
        .await?;
        let (mut chunk, budget) = first;
        let done = chunk.count > 0 || wait_ms == 0 || poll.is_over();
        if !done {
            poll.wait().await;
            continue;
        }
        app.metrics.count_fetched(chunk.count, chunk.payload_bytes);
        let body = if chunk.stop == Stop::ChunkFull {
            // More to send: the rest is read chunk by chunk while the
            // first goes out, each under the store's lock only briefly.
            let (tx, rx) = tokio::sync::mpsc::channel(FETCH_CHUNKS_AHEAD);
            let first = Bytes::from(std::mem::take(&mut chunk.body));
            let _ = tx.try_send(Ok(first));
            let worker = Arc::clone(&app);
            tokio::task::spawn_blocking(move || stream_chunks(&worker, chunk, budget, &tx));
            axum::body::Body::new(ChunkBody { rx })
        } else {
            chunk.body.push(b']');
            axum::body::Body::from(chunk.body)
        };
        return Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response());
    }
}

/// Bytes of records one chunk of a fetch reply holds: the store's lock is
/// held while one is read, so a large fetch holds up writes by no more
/// than a chunk's copy (about 100 µs), and the first chunk goes out while
/// the next is read.
pub const FETCH_CHUNK_BYTES: usize = 1 << 20;

/// Chunks read ahead of the connection (each [`FETCH_CHUNK_BYTES`]).
const FETCH_CHUNKS_AHEAD: usize = 4;

/// What a fetch may still return.
#[derive(Clone, Copy)]
struct Budget {
    records: usize,
    /// Bytes of record payloads.
    bytes: usize,
    /// Whether a record was returned already: the first is returned even
    /// if it is over `bytes`, so a fetch always makes progress.
    sent_any: bool,
}

/// Why a chunk's read stopped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stop {
    /// The fetch's `max_records` or `max_bytes` is reached.
    Budget,
    /// The chunk is full: read on from `next`.
    ChunkFull,
    /// The partition's durable records are all read.
    End,
}

/// One chunk of a fetch reply, and where the next starts.
struct Chunk {
    topic: Topic,
    partition: u32,
    next: u64,
    body: Vec<u8>,
    count: usize,
    payload_bytes: usize,
    stop: Stop,
}

impl Chunk {
    fn new(topic: &Topic, partition: u32, from: u64) -> Chunk {
        Chunk {
            topic: topic.clone(),
            partition,
            next: from,
            body: Vec::new(),
            count: 0,
            payload_bytes: 0,
            stop: Stop::End,
        }
    }

    /// A fetch from past the end is an error (at the end, it waits).
    fn check_offset(&self, app: &Broker) -> Result<(), ApiError> {
        let end = app
            .store()
            .durable_next_offset(&self.topic.key(self.partition))
            .map_err(Error::refused)?;
        if self.next > end {
            return Err(ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                code::OFFSET_OUT_OF_RANGE,
                format!(
                    "offset {} is past the end of partition {} of '{}', which is {end}",
                    self.next, self.partition, self.topic.name
                ),
            ));
        }
        Ok(())
    }

    /// Appends records from `next` on to the body until the chunk is full,
    /// the budget is spent or the partition ends.
    fn read(&mut self, app: &Broker, budget: &mut Budget) -> Result<(), ApiError> {
        let key = self.topic.key(self.partition);
        // Room for a full chunk and the JSON around its records, allocated
        // once (untouched pages of a large allocation cost nothing).
        let room = FETCH_CHUNK_BYTES.min(budget.bytes) + FETCH_CHUNK_BYTES / 4 + 4096;
        self.body.reserve(room);
        let chunk_start = self.body.len();
        let mut stop = Stop::End;
        let Chunk {
            topic,
            partition,
            next,
            body,
            count,
            payload_bytes,
            ..
        } = self;
        app.store()
            .read(&key, *next, &mut |at, payload| {
                if budget.sent_any && at != *next {
                    // Retention deleted the next records between two
                    // chunks: end the reply rather than skip them; the
                    // next fetch starts at the new log start.
                    stop = Stop::End;
                    return false;
                }
                if budget.records == 0 || (budget.sent_any && payload.len() > budget.bytes) {
                    stop = Stop::Budget;
                    return false;
                }
                if body.len() - chunk_start >= FETCH_CHUNK_BYTES {
                    stop = Stop::ChunkFull;
                    return false;
                }
                if budget.sent_any {
                    body.push(b',');
                }
                records::push_fetched(body, &topic.name, *partition, at, payload);
                budget.records -= 1;
                budget.bytes = budget.bytes.saturating_sub(payload.len());
                budget.sent_any = true;
                *next = at + 1;
                *count += 1;
                *payload_bytes += payload.len();
                if budget.records == 0 {
                    stop = Stop::Budget;
                    return false;
                }
                true
            })
            .map_err(Error::refused)?;
        self.stop = stop;
        Ok(())
    }
}

/// Reads the chunks after the first and sends them to the reply body,
/// ending it with `]`; stops early if the client is gone. An error after
/// the reply started can only cut it short: the client sees invalid JSON.
fn stream_chunks(
    app: &Broker,
    mut chunk: Chunk,
    mut budget: Budget,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    loop {
        chunk.count = 0;
        chunk.payload_bytes = 0;
        chunk.body = Vec::new();
        let read = chunk.read(app, &mut budget);
        if let Err(e) = read {
            log::warn(format_args!(
                "a fetch of {} failed after its reply started: {}",
                chunk.topic.key(chunk.partition),
                e.message
            ));
            let _ = tx.blocking_send(Err(std::io::Error::other(e.message)));
            return;
        }
        app.metrics.count_fetched(chunk.count, chunk.payload_bytes);
        let last = chunk.stop != Stop::ChunkFull;
        if last {
            chunk.body.push(b']');
        }
        if tx
            .blocking_send(Ok(Bytes::from(std::mem::take(&mut chunk.body))))
            .is_err()
            || last
        {
            return;
        }
    }
}

/// A reply body fed chunk by chunk from [`stream_chunks`].
struct ChunkBody {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl http_body::Body for ChunkBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| chunk.map(http_body::Frame::data)))
    }
}

// ---- consumer group offsets ----

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct GroupOffset {
    topic: String,
    partition: u32,
    offset: u64,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct GroupOffsets {
    offsets: Vec<GroupOffset>,
}

/// Commits offsets (each the next offset the group will read), forward
/// only, and answers once durable with the committed offsets, which are
/// the ones given unless a later commit was already higher.
async fn commit_offsets(
    State(app): AppState,
    group: Result<Path<String>, PathRejection>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<GroupOffsets>, ApiError> {
    let group = path(group)?;
    check_group(&group)?;
    let bytes = body(bytes, app.limits.request_bytes)?;
    let request: GroupOffsets = parse(&bytes)?;
    if request.offsets.is_empty() {
        return Err(ApiError::invalid("a commit needs at least one offset"));
    }
    let (keys, synced) = {
        let catalog = app.catalog();
        let mut keys = Vec::with_capacity(request.offsets.len());
        for entry in &request.offsets {
            let topic = catalog
                .get(&entry.topic)
                .ok_or_else(|| topic_not_found(&entry.topic))?;
            let partition = check_partition(topic, u64::from(entry.partition))?;
            keys.push((offset_key(&group, topic, partition), entry.offset));
        }
        let mut writer = app.writer()?;
        for (key, offset) in &keys {
            writer.commit(key, *offset)?;
        }
        (keys, writer.finish())
    };
    if let Some(durable) = synced {
        durable.wait().await?;
    }
    let store = app.store();
    let offsets: Vec<GroupOffset> = request
        .offsets
        .into_iter()
        .zip(&keys)
        .map(|(entry, (key, offset))| GroupOffset {
            offset: store.committed(key).unwrap_or(*offset),
            ..entry
        })
        .collect();
    Ok(Json(GroupOffsets { offsets }))
}

/// The group's committed offsets, of every topic or of `?topic=`.
async fn list_offsets(
    State(app): AppState,
    group: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<GroupOffsets>, ApiError> {
    let group = path(group)?;
    check_group(&group)?;
    let Query(query) =
        query.map_err(|e| ApiError::malformed(format!("bad query: {}", e.body_text())))?;
    if let Some(unknown) = query.keys().find(|k| k.as_str() != "topic") {
        return Err(ApiError::malformed(format!(
            "unknown query parameter '{unknown}' (this route takes 'topic')"
        )));
    }
    let catalog = app.catalog();
    let topics: Vec<&Topic> = match query.get("topic") {
        Some(name) => vec![catalog.get(name).ok_or_else(|| topic_not_found(name))?],
        None => catalog.topics().collect(),
    };
    let store = app.store();
    let mut offsets = Vec::new();
    for topic in topics {
        for partition in 0..topic.partitions {
            if let Some(offset) = store.committed(&offset_key(&group, topic, partition)) {
                offsets.push(GroupOffset {
                    topic: topic.name.clone(),
                    partition,
                    offset,
                });
            }
        }
    }
    Ok(Json(GroupOffsets { offsets }))
}
