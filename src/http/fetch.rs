//! Fetch: `GET /topics/{topic}/partitions/{p}/records`, records of one
//! partition from an offset (or from the first record at or after a
//! timestamp) as a JSON array, with long polls (`wait_ms`) and replies
//! streamed chunk by chunk so that a large fetch holds the store's lock
//! only briefly at a time.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::api::{AppState, blocking, check_partition, find_topic, path};
use super::error::{ApiError, code};
use super::records::{self};
use super::relay::{self, Relayed};
use crate::broker::catalog::Topic;
use crate::broker::topics::{TIMESTAMP_SEARCH_BYTES_MAX, TimeSearch};
use crate::broker::{Broker, Error, FETCH_WAIT_MS_MAX};
use crate::log;
use crate::storage::keylog::read_by_views;

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FetchParams {
    /// Where to start; with `timestamp`, where its search starts.
    #[serde(default)]
    offset: Option<u64>,
    /// Start at the first record whose timestamp (ms since the Unix epoch)
    /// is at or after this, found by the time index (`Broker::first_at_or_after`);
    /// at the partition's end when there is none.
    #[serde(default)]
    timestamp: Option<u64>,
    #[serde(default)]
    max_records: Option<usize>,
    #[serde(default)]
    max_bytes: Option<usize>,
    #[serde(default)]
    wait_ms: Option<u64>,
}

/// Records of one partition from an offset, as a JSON array; with
/// `wait_ms`, waits at the end of the partition until records arrive.
pub(super) async fn fetch(
    State(app): AppState,
    relayed: Option<Extension<Relayed>>,
    uri: Uri,
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
    if !relay::reads_here(&app, &topic.name, partition)
        && let Some(cluster) = app.cluster()
    {
        // Asked with at most `RELAY_FETCH_BYTES_MAX` of records, so that
        // the answer fits what a relayed answer carries; a fetch returns
        // fewer bytes than asked at will, and the client goes on from the
        // next offset.
        let mut asked = vec![
            format!("max_records={max_records}"),
            format!("max_bytes={}", max_bytes.min(relay::RELAY_FETCH_BYTES_MAX)),
            format!("wait_ms={wait_ms}"),
        ];
        asked.extend(query.offset.map(|o| format!("offset={o}")));
        asked.extend(query.timestamp.map(|t| format!("timestamp={t}")));
        let uri = format!("{}?{}", uri.path(), asked.join("&"));
        let waits = std::time::Duration::from_millis(wait_ms);
        let relayed = relayed.map(|Extension(relayed)| relayed);
        return relay::to_replica(cluster, &topic.name, partition, uri, waits, relayed).await;
    }
    let offset = match (query.offset, query.timestamp) {
        (Some(offset), None) => offset,
        (from, Some(timestamp)) => {
            offset_at(&app, &topic, partition, timestamp, from.unwrap_or(0)).await?
        }
        (None, None) => {
            return Err(ApiError::malformed(
                "a fetch needs the query parameter 'offset' or 'timestamp'",
            ));
        }
    };
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
        let topic = topic.clone();
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

/// The offset of the first record at or after `timestamp`, searching from
/// `from`, or the partition's durable end when there is none (a fetch from
/// there waits for the next record, which is newer). The time index
/// answers it, unless the first match in the partition is before `from`;
/// then it scans from `from`, and a scan that reads
/// [`TIMESTAMP_SEARCH_BYTES_MAX`] without finding one is a 422 whose
/// `next_offset` is where to search on from (`&offset=`).
async fn offset_at(
    app: &Arc<Broker>,
    topic: &Topic,
    partition: u32,
    timestamp: u64,
    from: u64,
) -> Result<u64, ApiError> {
    let Ok(timestamp) = i64::try_from(timestamp) else {
        return Err(ApiError::invalid(format!(
            "timestamp is at most {}, not {timestamp}",
            i64::MAX
        )));
    };
    let (worker, key) = (Arc::clone(app), topic.key(partition));
    blocking(move || {
        let found = worker
            .first_at_or_after(&key, timestamp, from, TIMESTAMP_SEARCH_BYTES_MAX)
            .map_err(Error::refused)?;
        match found {
            TimeSearch::Found { offset, .. } => Ok(offset),
            TimeSearch::None => Ok(worker
                .store()
                .durable_next_offset(&key)
                .map_err(Error::refused)?),
            TimeSearch::Stopped { next } => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                code::SEARCH_STOPPED,
                format!(
                    "no record at or after timestamp {timestamp} from offset {from} to {next} \
                     (a search by time reads at most {} MiB): search on with \
                     timestamp={timestamp}&offset={next}",
                    TIMESTAMP_SEARCH_BYTES_MAX >> 20
                ),
            )
            .with_next_offset(next)),
        }
    })
    .await
}

/// Bytes of records one chunk of a fetch reply holds: the first chunk goes
/// out while the next is read. The store's lock is held only while each
/// chunk's view is taken (`Store::read_view`), not while it is copied.
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
        // DeleteRecords may have set a log start inside a segment. The log
        // start and the first view come from one hold of the lock, so no
        // DeleteRecords or retention falls between them.
        let mut store = app.store();
        *next = (*next).max(
            crate::broker::topics::log_start(&mut store, &key)
                .map_err(|e| ApiError::from(crate::broker::Error::refused(e)))?,
        );
        let mut first_view = Some(store.read_view(&key, *next, FETCH_CHUNK_BYTES as u64));
        drop(store);
        // The lock is held only to take each view; records are decoded and
        // copied into the body without it.
        let mut take_view = |from| match first_view.take() {
            Some(view) => view,
            None => app.store().read_view(&key, from, FETCH_CHUNK_BYTES as u64),
        };
        read_by_views(*next, &mut take_view, &mut |at, payload| {
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
