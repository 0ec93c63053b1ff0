//! Fetch, with long polls, and ListOffsets.
//!
//! A fetch returns durable records only (the high watermark is the store's
//! durable end), as one record batch (format v2, uncompressed) per
//! partition. Records the HTTP front end wrote go out with the JSON text of
//! their key and value as bytes (`crate::broker::payload::as_kafka`).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, ResponseKind, TopicName,
};

use super::Context;
use super::batch::{self, BatchRecord};
use super::reply::Reply;
use crate::broker::payload::{KafkaRecord, as_kafka};
use crate::broker::topics::{MaxTimestamp, TIMESTAMP_SEARCH_BYTES_MAX, TimeSearch, log_start};
use crate::broker::{Broker, FETCH_WAIT_MS_MAX};
use crate::log;
use crate::storage::keylog::read_by_views;

/// Most bytes of records one fetch returns over all its partitions,
/// whatever the client asks: bounds a reply's memory (librdkafka asks for
/// 50 MiB by default, `fetch.max.bytes`).
pub const FETCH_BYTES_MAX: usize = 64 << 20;

/// One partition to read.
#[derive(Clone)]
struct Wanted {
    topic: usize,
    partition: i32,
    offset: i64,
    max_bytes: usize,
}

/// What was read of one partition.
struct Read {
    error: i16,
    high_watermark: i64,
    log_start: i64,
    records: Vec<BatchRecord>,
    bytes: usize,
}

/// Bytes of records a fetch returns at most over all its partitions.
fn max_bytes(request: &FetchRequest) -> usize {
    usize::try_from(request.max_bytes)
        .unwrap_or(FETCH_BYTES_MAX)
        .min(FETCH_BYTES_MAX)
}

/// Bytes of records a fetch's reply may hold: its `max_bytes`, or one
/// record of the largest size when that is more (the first record always
/// comes, KIP-74). The connection reserves this much before the fetch
/// reads.
pub fn reply_bytes_max(ctx: &Context, request: &FetchRequest) -> usize {
    max_bytes(request).max(ctx.broker.limits.record_bytes)
}

pub fn fetch(ctx: &Arc<Context>, request: FetchRequest, version: i16) -> Reply {
    let broker = Arc::clone(&ctx.broker);
    let wait_ms = u64::try_from(request.max_wait_ms)
        .unwrap_or(0)
        .min(FETCH_WAIT_MS_MAX);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let max_bytes = max_bytes(&request);
    let mut names: Vec<TopicName> = Vec::new();
    let mut wanted = Vec::new();
    for (t, topic) in request.topics.into_iter().enumerate() {
        names.push(topic.topic);
        for p in topic.partitions {
            wanted.push(Wanted {
                topic: t,
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
            });
        }
    }
    Reply::Later(Box::pin(async move {
        let mut poll = broker.long_poll(std::time::Duration::from_millis(wait_ms));
        let reads = loop {
            poll.mark_seen();
            let (worker, names_now, wanted_now) =
                (Arc::clone(&broker), names.clone(), wanted.clone());
            let reads = tokio::task::spawn_blocking(move || {
                read_all(&worker, &names_now, &wanted_now, max_bytes)
            })
            .await
            .ok()?;
            let bytes: usize = reads.iter().map(|r| r.bytes).sum();
            let errors = reads.iter().any(|r| r.error != 0);
            // min_bytes 0 answers at once, as in Kafka.
            if bytes >= min_bytes || errors || poll.is_over() {
                break reads;
            }
            poll.wait().await;
        };
        let mut count = 0;
        let mut payload_bytes = 0;
        let mut response = FetchResponse::default();
        let mut topics: Vec<FetchableTopicResponse> = names
            .into_iter()
            .map(|name| {
                let mut topic = FetchableTopicResponse::default();
                topic.topic = name;
                topic
            })
            .collect();
        for (w, read) in wanted.iter().zip(reads) {
            count += read.records.len();
            payload_bytes += read.bytes;
            let mut data = PartitionData::default();
            data.partition_index = w.partition;
            data.error_code = read.error;
            data.high_watermark = read.high_watermark;
            data.last_stable_offset = read.high_watermark;
            // Version 4 lacks the field, and a set field must be encodable.
            if version >= 5 {
                data.log_start_offset = read.log_start;
            }
            data.records = Some(encode_batch(&read.records));
            if let Some(topic) = topics.get_mut(w.topic) {
                topic.partitions.push(data);
            }
        }
        broker.metrics.count_fetched(count, payload_bytes);
        response.responses = topics;
        Some(ResponseKind::Fetch(response))
    }))
}

fn encode_batch(records: &[BatchRecord]) -> Bytes {
    let mut buf = BytesMut::new();
    batch::encode(&mut buf, records);
    buf.freeze()
}

fn read_all(
    broker: &Broker,
    names: &[TopicName],
    wanted: &[Wanted],
    max_bytes: usize,
) -> Vec<Read> {
    let mut left = max_bytes;
    let mut sent_any = false;
    wanted
        .iter()
        .map(|w| {
            let name = names.get(w.topic).map_or("", |n| n.0.as_str());
            let read = read_partition(broker, name, w, left, sent_any);
            left = left.saturating_sub(read.bytes);
            sent_any |= !read.records.is_empty();
            read
        })
        .collect()
}

/// Reads one partition from `w.offset`, within its budget and what is
/// left of the request's; the first record of the whole reply always
/// comes, so a fetch makes progress past a large record (KIP-74).
fn read_partition(
    broker: &Broker,
    topic_name: &str,
    w: &Wanted,
    left: usize,
    sent_any: bool,
) -> Read {
    let mut read = Read {
        error: 0,
        high_watermark: -1,
        log_start: -1,
        records: Vec::new(),
        bytes: 0,
    };
    let key = match broker.catalog().get(topic_name) {
        Some(topic) if w.partition >= 0 && (w.partition as u32) < topic.partitions => {
            topic.key(w.partition as u32)
        }
        _ => {
            read.error = ResponseError::UnknownTopicOrPartition.code();
            return read;
        }
    };
    let applied_all = match reads_here(broker, topic_name, w.partition) {
        Ok(applied_all) => applied_all,
        Err(code) => {
            read.error = code;
            return read;
        }
    };
    let mut store = broker.store();
    let start = log_start(&mut store, &key);
    let (start, end) = match (start, store.durable_next_offset(&key)) {
        (Ok(start), Ok(end)) => (start, end),
        (Err(e), _) | (_, Err(e)) => {
            log::warn(format_args!("kafka: cannot read {key}: {e}"));
            read.error = ResponseError::KafkaStorageError.code();
            return read;
        }
    };
    read.log_start = start as i64;
    read.high_watermark = end as i64;
    let Ok(from) = u64::try_from(w.offset) else {
        read.error = ResponseError::OffsetOutOfRange.code();
        return read;
    };
    // On a node of a cluster, records past the durable end may be
    // committed and not yet applied here, or applied and not yet durable
    // (a new leader's): the client asks again (librdkafka and the Java
    // client retry this code, where OFFSET_OUT_OF_RANGE would reset it).
    let pending = |store: &mut crate::storage::store::Store| {
        !applied_all || store.next_offset(&key).is_ok_and(|next| from <= next)
    };
    if from > end && broker.cluster().is_some() && pending(&mut store) {
        read.error = ResponseError::OffsetNotAvailable.code();
        return read;
    }
    if from < start || from > end {
        read.error = ResponseError::OffsetOutOfRange.code();
        return read;
    }
    let budget = w.max_bytes.min(left);
    // The lock is held only to take each view of the records; they are
    // decoded and copied without it. The first view comes from the same
    // hold as the high watermark, and the read stops there.
    let view_bytes = budget.max(1) as u64;
    let mut first_view = Some(store.read_view(&key, from, view_bytes));
    drop(store);
    let mut take_view = |from| match first_view.take() {
        Some(view) => view,
        None => broker.store().read_view(&key, from, view_bytes),
    };
    let mut next = from;
    let records = &mut read.records;
    let bytes = &mut read.bytes;
    let result = read_by_views(from, &mut take_view, &mut |at, payload| {
        if at != next || at >= end {
            // Retention removed records between two reads: stop at the gap.
            return false;
        }
        let first = !sent_any && records.is_empty();
        if !first && *bytes + payload.len() > budget {
            return false;
        }
        records.push(record(at, payload));
        *bytes += payload.len();
        next = at + 1;
        true
    });
    if let Err(e) = result {
        log::warn(format_args!("kafka: cannot read {key}: {e}"));
        read.error = ResponseError::KafkaStorageError.code();
        read.records.clear();
        read.bytes = 0;
    }
    read
}

/// Whether this node serves reads of a partition (on a node of a cluster:
/// only its leader does), and whether it holds every record committed;
/// else the error code to answer.
fn reads_here(broker: &Broker, topic: &str, partition: i32) -> Result<bool, i16> {
    match (broker.cluster(), u32::try_from(partition)) {
        (None, _) => Ok(true),
        (Some(cluster), Ok(partition)) => cluster
            .reads_at(topic, partition)
            .map_err(|e| crate::kafka::error::code(&e)),
        (Some(_), Err(_)) => Err(ResponseError::UnknownTopicOrPartition.code()),
    }
}

/// A stored record as Kafka has it.
fn record(offset: u64, payload: &[u8]) -> BatchRecord {
    let fields = as_kafka(payload).unwrap_or_else(|e| {
        log::warn(format_args!(
            "kafka: the record at offset {offset} does not decode ({e}); served as its bytes"
        ));
        KafkaRecord {
            timestamp: -1,
            key: None,
            value: Some(payload),
            headers: Vec::new(),
        }
    });
    let copy = |field: Option<&[u8]>| field.map(Bytes::copy_from_slice);
    BatchRecord {
        offset: offset as i64,
        timestamp: fields.timestamp,
        key: copy(fields.key),
        value: copy(fields.value),
        headers: fields
            .headers
            .iter()
            .map(|(name, value)| (Bytes::copy_from_slice(name), copy(*value)))
            .collect(),
    }
}

/// Kafka's special timestamps of ListOffsets.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
/// The first ListOffsets version with [`MAX_TIMESTAMP`] (KIP-734): below
/// it, -3 is no special timestamp and is refused as Kafka refuses it.
const MAX_TIMESTAMP_VERSION: i16 = 7;

pub fn list_offsets(ctx: &Arc<Context>, request: ListOffsetsRequest, version: i16) -> Reply {
    let broker = Arc::clone(&ctx.broker);
    Reply::Later(Box::pin(async move {
        let topics = tokio::task::spawn_blocking(move || {
            request
                .topics
                .into_iter()
                .map(|topic| {
                    let mut out = ListOffsetsTopicResponse::default();
                    let name = topic.name.0.as_str().to_string();
                    out.name = topic.name;
                    out.partitions = topic
                        .partitions
                        .into_iter()
                        .map(|p| list_one(&broker, &name, p.partition_index, p.timestamp, version))
                        .collect();
                    out
                })
                .collect::<Vec<_>>()
        })
        .await
        .ok()?;
        let mut response = ListOffsetsResponse::default();
        response.topics = topics;
        Some(ResponseKind::ListOffsets(response))
    }))
}

fn list_one(
    broker: &Broker,
    topic_name: &str,
    partition: i32,
    timestamp: i64,
    version: i16,
) -> ListOffsetsPartitionResponse {
    let mut out = ListOffsetsPartitionResponse::default();
    out.partition_index = partition;
    out.timestamp = -1;
    out.offset = -1;
    if timestamp == MAX_TIMESTAMP && version < MAX_TIMESTAMP_VERSION {
        out.error_code = ResponseError::UnsupportedVersion.code();
        return out;
    }
    let key = match broker.catalog().get(topic_name) {
        Some(topic) if partition >= 0 && (partition as u32) < topic.partitions => {
            topic.key(partition as u32)
        }
        _ => {
            out.error_code = ResponseError::UnknownTopicOrPartition.code();
            return out;
        }
    };
    if let Err(code) = reads_here(broker, topic_name, partition) {
        out.error_code = code;
        return out;
    }
    let storage = |e: crate::storage::error::Error| {
        log::warn(format_args!("kafka: ListOffsets of {key}: {e}"));
        ResponseError::KafkaStorageError.code()
    };
    let found = match timestamp {
        EARLIEST => log_start(&mut broker.store(), &key)
            .map(|o| Some((o, -1)))
            .map_err(storage),
        LATEST => broker
            .store()
            .durable_next_offset(&key)
            .map(|o| Some((o, -1)))
            .map_err(storage),
        t if t >= 0 => match broker.first_at_or_after(&key, t, 0, TIMESTAMP_SEARCH_BYTES_MAX) {
            Ok(TimeSearch::Found { offset, timestamp }) => Ok(Some((offset, timestamp))),
            Ok(TimeSearch::None) => Ok(None),
            // The time index answers unless the first match is below a
            // log start DeleteRecords set inside a segment and records
            // after it are out of time order; then the search scans, and
            // ListOffsets has no way to say "go on from here": it fails as
            // one that took too long, after a bounded read.
            Ok(TimeSearch::Stopped { next }) => {
                log::warn(format_args!(
                    "kafka: ListOffsets of {key} by time {t}: nothing found in the first \
                     {} MiB after the log start (to offset {next})",
                    TIMESTAMP_SEARCH_BYTES_MAX >> 20
                ));
                Err(ResponseError::RequestTimedOut.code())
            }
            Err(e) => Err(storage(e)),
        },
        MAX_TIMESTAMP => match broker.max_timestamp(&key, TIMESTAMP_SEARCH_BYTES_MAX) {
            Ok(MaxTimestamp::Found { offset, timestamp }) => Ok(Some((offset, timestamp))),
            Ok(MaxTimestamp::None) => Ok(None),
            Ok(MaxTimestamp::TooLong) => {
                log::warn(format_args!(
                    "kafka: ListOffsets of {key} by largest timestamp: the partition holds \
                     over {} MiB; refused until a time index exists",
                    TIMESTAMP_SEARCH_BYTES_MAX >> 20
                ));
                Err(ResponseError::RequestTimedOut.code())
            }
            Err(e) => Err(storage(e)),
        },
        _ => Err(ResponseError::UnsupportedVersion.code()),
    };
    match found {
        Ok(Some((offset, ts))) => {
            out.offset = offset as i64;
            out.timestamp = ts;
        }
        Ok(None) => {}
        Err(code) => out.error_code = code,
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::catalog::{Catalog, NewTopic};
    use crate::storage::store::{Store, StoreConfig};

    /// The largest-timestamp spec (-3) exists from ListOffsets version 7:
    /// below it the request is refused, not answered as if it were v7.
    #[test]
    fn the_max_timestamp_spec_is_refused_below_version_7() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("store"), StoreConfig::default()).expect("store");
        let mut catalog = Catalog::open(dir.path()).expect("catalog");
        let topic = NewTopic {
            name: "t".into(),
            partitions: 1,
            retention_ms: None,
            retention_bytes: None,
            replication_factor: None,
        };
        catalog.create(topic, 0).expect("topic");
        let broker = crate::broker::test_broker(store, catalog);
        let unsupported = ResponseError::UnsupportedVersion.code();
        for version in 1..MAX_TIMESTAMP_VERSION {
            let out = list_one(&broker, "t", 0, MAX_TIMESTAMP, version);
            assert_eq!(out.error_code, unsupported, "version {version}");
        }
        let out = list_one(&broker, "t", 0, MAX_TIMESTAMP, MAX_TIMESTAMP_VERSION);
        assert_eq!(out.error_code, 0);
        let out = list_one(&broker, "t", 0, EARLIEST, 1);
        assert_eq!((out.error_code, out.offset), (0, 0));
    }
}
