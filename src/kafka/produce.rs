//! Produce: record batches (format v2, any compression the codec has) to
//! partitions, answered once durable.
//!
//! Every batch of a request is decoded and checked before anything is
//! appended, so a corrupt batch, a record over the size limit or a
//! transactional batch fails its partition whole. A batch of an idempotent
//! producer (one with a producer id) is checked against the producer's
//! state in its partition first (`broker::producers`): a retry of a batch
//! appended before is answered with its offsets once they are durable, and
//! appended again never; a gap gets OUT_OF_ORDER_SEQUENCE_NUMBER, an older
//! epoch INVALID_PRODUCER_EPOCH (Kafka's answer to a fenced producer in
//! Produce, at every version). The new state is committed with the records,
//! in the same sync point. The appends of a request
//! happen under one hold of the store's lock; the reply waits for the sync
//! point that covers them, for `acks=1` as for `acks=-1` (one node: its
//! disk is every replica). `acks=0` gets no reply, as in Kafka, but the
//! records still go through the same sync point.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::Context;
use super::batch::{self, BatchRecord};
use super::error::code;
use super::reply::Reply;
use crate::broker::Broker;
use crate::broker::cluster::{Cluster, Produced};
use crate::broker::payload::{KafkaRecord, encode_kafka, kafka_encoded_len};
use crate::broker::producers::{self, ProducerState, Sequenced, Verdict};
use crate::broker::time::now_ms;
use crate::broker::topics::log_start;

/// One partition's part of a request, checked.
struct Part {
    topic: usize,
    partition: i32,
    /// The store key, when the partition exists and its records decoded.
    key: Option<String>,
    payloads: Vec<Vec<u8>>,
    /// The batch's producer and sequence numbers, for an idempotent one.
    sequenced: Option<Sequenced>,
    error: i16,
    message: Option<String>,
    base_offset: i64,
    log_start: i64,
}

/// A partition's records, decoded: their payloads, and the producer and
/// sequence numbers of an idempotent producer's batch.
type Decoded = (Vec<Vec<u8>>, Option<Sequenced>);

/// Decodes one partition's batches into payloads, or an error code and
/// message for the whole partition. Compressed records inflate to at most
/// `*inflated_bytes_left` bytes, a budget shared by the request's
/// partitions. An idempotent producer's records come as one batch (as
/// every client sends them): its sequence numbers are the batch's.
fn payloads(
    records: Option<Bytes>,
    record_bytes_max: usize,
    inflated_bytes_left: &mut usize,
) -> Result<Decoded, (i16, String)> {
    let bytes = records.unwrap_or_default();
    let corrupt = ResponseError::CorruptMessage.code();
    let batches = batch::decode_within(&bytes, inflated_bytes_left).map_err(|e| match e {
        // Kafka's answer to a batch over its size limit.
        batch::DecodeError::TooLarge { .. } => (
            ResponseError::MessageTooLarge.code(),
            format!("a record batch refused: {e}"),
        ),
        batch::DecodeError::Corrupt(_) => {
            (corrupt, format!("a record batch that does not decode: {e}"))
        }
    })?;
    let now = now_ms() as i64;
    let mut out = Vec::new();
    let mut sequenced = None;
    let batch_count = batches.len();
    for batch in batches {
        if batch.transactional || batch.control {
            return Err((
                ResponseError::InvalidRecord.code(),
                "transactional and control batches are not supported (seglog serves no \
                 transactions)"
                    .into(),
            ));
        }
        if batch.producer_id >= 0 {
            if batch_count != 1 || batch.producer_epoch < 0 || batch.base_sequence < 0 {
                return Err((
                    ResponseError::InvalidRecord.code(),
                    format!(
                        "an idempotent producer's records come as one batch with an epoch and a \
                         sequence number (here {batch_count} batches, epoch {}, sequence {})",
                        batch.producer_epoch, batch.base_sequence
                    ),
                ));
            }
            sequenced = Some(Sequenced {
                producer_id: batch.producer_id,
                epoch: batch.producer_epoch,
                first_seq: batch.base_sequence,
                count: u32::try_from(batch.records.len()).unwrap_or(u32::MAX),
            });
        }
        for record in &batch.records {
            out.push(payload(record, now, record_bytes_max)?);
        }
    }
    if out.is_empty() {
        return Err((corrupt, "a produce request without records".into()));
    }
    Ok((out, sequenced))
}

fn payload(
    record: &BatchRecord,
    now: i64,
    record_bytes_max: usize,
) -> Result<Vec<u8>, (i16, String)> {
    let record = KafkaRecord {
        // A record without a timestamp gets the time it arrived.
        timestamp: if record.timestamp < 0 {
            now
        } else {
            record.timestamp
        },
        key: record.key.as_deref(),
        value: record.value.as_deref(),
        headers: record
            .headers
            .iter()
            .map(|(name, value)| (&name[..], value.as_deref()))
            .collect(),
    };
    let size = kafka_encoded_len(&record);
    if size > record_bytes_max {
        return Err((
            ResponseError::MessageTooLarge.code(),
            format!(
                "a record of {size} bytes stored, over the limit of {record_bytes_max} (--max-record-bytes)"
            ),
        ));
    }
    let mut out = Vec::with_capacity(size);
    encode_kafka(&mut out, &record);
    Ok(out)
}

/// Runs `work` (decoding and decompressing a request's batches, which may
/// take a while) where it does not stall the other connections' tasks: on
/// a multi-threaded runtime the worker hands its other tasks off first. It
/// still runs before the connection reads its next request, which keeps a
/// producer's pipelined batches in order.
fn off_reactor<T>(work: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

pub fn produce(ctx: &Arc<Context>, request: ProduceRequest, version: i16) -> Reply {
    let broker = &ctx.broker;
    let acks = request.acks;
    let (names, mut parts) = off_reactor(|| decode_parts(broker, request));
    if let Some(cluster) = broker.cluster() {
        return through_cluster(broker, cluster.as_ref(), names, parts, acks, version);
    }

    // Applied under the catalog's read lock (a topic deleted meanwhile
    // cannot get records after its logs were removed) and the store's.
    let synced;
    {
        let catalog = broker.catalog();
        for part in parts.iter_mut().filter(|p| p.error == 0) {
            let name = names[part.topic].0.as_str();
            match catalog.get(name) {
                Some(topic)
                    if (0..topic.partitions as i64).contains(&i64::from(part.partition)) =>
                {
                    part.key = Some(topic.key(part.partition as u32));
                }
                _ => {
                    part.error = ResponseError::UnknownTopicOrPartition.code();
                    part.message =
                        Some(format!("no partition {} of topic '{name}'", part.partition));
                }
            }
        }
        let mut writer = broker.records_writer();
        for part in parts.iter_mut().filter(|p| p.error == 0) {
            let writer = match &mut writer {
                Ok(writer) => writer,
                Err(e) => {
                    part.error = code(e);
                    part.message = Some(e.to_string());
                    continue;
                }
            };
            let key = part.key.as_deref().unwrap_or_default();
            let state = part.sequenced.map(|batch| {
                let state = producers::state_of(
                    writer.store(),
                    batch.producer_id,
                    key,
                    now_ms(),
                    ctx.producer_expiry,
                );
                let verdict = state
                    .as_ref()
                    .map_or(Verdict::Append, |s| s.verdict(&batch));
                (batch, state, verdict)
            });
            match &state {
                Some((_, _, Verdict::Duplicate { base_offset })) => {
                    // Answered once the first attempt's records are
                    // durable: the next sync point covers them.
                    part.base_offset = *base_offset as i64;
                    writer.wait_for_earlier_writes();
                    broker
                        .metrics
                        .duplicate_batches
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    part.log_start = log_start(writer.store(), key).map_or(-1, |s| s as i64);
                    continue;
                }
                Some((_, _, Verdict::Fenced { current })) => {
                    broker
                        .metrics
                        .refused_sequences
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    part.error = ResponseError::InvalidProducerEpoch.code();
                    part.message = Some(format!(
                        "producer epoch older than {current}: a newer instance of this producer \
                         took over"
                    ));
                    continue;
                }
                Some((batch, _, Verdict::OutOfOrder { expected })) => {
                    broker
                        .metrics
                        .refused_sequences
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    part.error = ResponseError::OutOfOrderSequenceNumber.code();
                    part.message = Some(format!(
                        "sequence {} where {expected} was expected",
                        batch.first_seq
                    ));
                    continue;
                }
                Some((_, _, Verdict::Append)) | None => {}
            }
            let payloads: Vec<&[u8]> = part.payloads.iter().map(Vec::as_slice).collect();
            // All or none: an error here means none of the partition's
            // records was appended. (A crash before the sync point is
            // durable is another matter: like any unacknowledged write,
            // the batch may then survive whole, in part or not at all, and
            // a client's retry may duplicate what survived: at least once,
            // as with Kafka without idempotence.)
            match writer.append_all(key, &payloads) {
                Ok(offset) => part.base_offset = offset as i64,
                Err(e) => {
                    part.error = code(&e);
                    part.message =
                        Some(format!("{e}; none of the partition's records was appended"));
                }
            }
            if let (Some((batch, state, _)), 0) = (&state, part.error) {
                let after =
                    ProducerState::after(state.as_ref(), batch, part.base_offset as u64, now_ms());
                let state_key = producers::state_key(batch.producer_id, key);
                let state = Some(producers::state_commit(&after));
                if let Err(e) = writer.change_after(&state_key, state, key) {
                    // Not expected (the append just passed the same
                    // checks); the records may become durable without
                    // their state, so a retry could append them again.
                    part.error = code(&e);
                    part.message = Some(format!("{e}; the producer's state was not recorded"));
                }
            }
            part.log_start = log_start(writer.store(), key).map_or(-1, |s| s as i64);
        }
        // Queued even for acks=0: a sync point happens only for a waiter.
        synced = writer.ok().and_then(crate::broker::Writer::finish);
    }
    if acks == 0 {
        return Reply::Nothing;
    }
    let started = std::time::Instant::now();
    let broker = Arc::clone(broker);
    Reply::Later(Box::pin(async move {
        if let Some(synced) = synced {
            match synced.wait().await {
                Ok(()) => broker.metrics.produce_latency.observe(started.elapsed()),
                Err(e) => {
                    for part in parts.iter_mut().filter(|p| p.error == 0) {
                        part.error = code(&e);
                        part.message = Some(e.to_string());
                    }
                }
            }
        }
        Some(ResponseKind::Produce(response(names, &parts, version)))
    }))
}

/// The reply to a request whose partitions are done.
fn response(names: Vec<TopicName>, parts: &[Part], version: i16) -> ProduceResponse {
    let mut response = ProduceResponse::default();
    response.responses = names
        .into_iter()
        .enumerate()
        .map(|(t, name)| {
            let mut topic = TopicProduceResponse::default();
            topic.name = name;
            topic.partition_responses = parts
                .iter()
                .filter(|p| p.topic == t)
                .map(|p| {
                    let mut out = PartitionProduceResponse::default();
                    out.index = p.partition;
                    out.error_code = p.error;
                    out.base_offset = if p.error == 0 { p.base_offset } else { -1 };
                    out.log_append_time_ms = -1;
                    // Fields a version lacks keep their defaults.
                    if version >= 5 {
                        out.log_start_offset = p.log_start;
                    }
                    if version >= 8 {
                        out.error_message = p.message.clone().map(StrBytes::from_string);
                    }
                    out
                })
                .collect();
            topic
        })
        .collect();
    response
}

/// Produce on a node of a cluster: each partition's records proposed to
/// its Raft group here, where this node leads it (NOT_LEADER_OR_FOLLOWER
/// elsewhere: the client refreshes its metadata and goes to the leader),
/// and answered once committed, durable on a majority of the partition's
/// replicas: for `acks=1` as for `acks=-1`, which is stronger than Kafka's
/// `acks=1`. The proposals are submitted in request order before this
/// returns, so a connection's pipelined batches keep their order; an
/// idempotent producer's batch is judged where it is applied
/// (`cluster/partition.rs`), so a retry after a failover is answered with
/// the offset the first attempt got.
fn through_cluster(
    broker: &Arc<Broker>,
    cluster: &dyn Cluster,
    names: Vec<TopicName>,
    mut parts: Vec<Part>,
    acks: i16,
    version: i16,
) -> Reply {
    let mut pending = Vec::new();
    for (i, part) in parts.iter_mut().enumerate().filter(|(_, p)| p.error == 0) {
        let topic = names[part.topic].0.as_str();
        let Ok(partition) = u32::try_from(part.partition) else {
            part.error = ResponseError::UnknownTopicOrPartition.code();
            part.message = Some(format!(
                "no partition {} of topic '{topic}'",
                part.partition
            ));
            continue;
        };
        let records = std::mem::take(&mut part.payloads);
        match cluster.produce(topic, partition, records, part.sequenced) {
            Ok(produced) => pending.push((i, produced)),
            Err(e) => {
                part.error = code(&e);
                part.message = Some(e.to_string());
            }
        }
    }
    if acks == 0 {
        return Reply::Nothing;
    }
    let started = std::time::Instant::now();
    let broker = Arc::clone(broker);
    Reply::Later(Box::pin(async move {
        let metrics = &broker.metrics;
        let mut committed = false;
        for (i, produced) in pending {
            let part = &mut parts[i];
            match produced.await {
                Ok(Produced::Appended(base)) => {
                    part.base_offset = base as i64;
                    committed = true;
                }
                Ok(Produced::Duplicate(base)) => {
                    part.base_offset = base as i64;
                    metrics.duplicate_batches.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Produced::Fenced { current }) => {
                    metrics.refused_sequences.fetch_add(1, Ordering::Relaxed);
                    part.error = ResponseError::InvalidProducerEpoch.code();
                    part.message = Some(format!(
                        "producer epoch older than {current}: a newer instance of this producer \
                         took over"
                    ));
                }
                Ok(Produced::OutOfOrder { expected }) => {
                    metrics.refused_sequences.fetch_add(1, Ordering::Relaxed);
                    part.error = ResponseError::OutOfOrderSequenceNumber.code();
                    part.message = Some(format!(
                        "sequence {} where {expected} was expected",
                        part.sequenced.map_or(-1, |s| s.first_seq)
                    ));
                }
                Err(e) => {
                    part.error = code(&e);
                    part.message = Some(e.to_string());
                }
            }
        }
        if committed {
            metrics.produce_latency.observe(started.elapsed());
        }
        {
            let catalog = broker.catalog();
            let mut store = broker.store();
            for part in parts.iter_mut().filter(|p| p.error == 0) {
                let key = catalog
                    .get(names[part.topic].0.as_str())
                    .map(|topic| topic.key(part.partition as u32));
                part.log_start = key
                    .and_then(|key| log_start(&mut store, &key).ok())
                    .map_or(-1, |s| s as i64);
            }
        }
        Some(ResponseKind::Produce(response(names, &parts, version)))
    }))
}

/// Decodes and checks every partition's records of a request. The
/// records of a request inflate to at most `--max-request-bytes` in all:
/// what the same records would be allowed to take uncompressed, and a
/// bound on the memory a small compressed batch can claim.
fn decode_parts(broker: &Broker, request: ProduceRequest) -> (Vec<TopicName>, Vec<Part>) {
    let mut inflated_bytes_left = broker.limits.request_bytes;
    let mut names = Vec::with_capacity(request.topic_data.len());
    let mut parts = Vec::new();
    for (t, topic_data) in request.topic_data.into_iter().enumerate() {
        names.push(topic_data.name.clone());
        for data in topic_data.partition_data {
            let mut part = Part {
                topic: t,
                partition: data.index,
                key: None,
                payloads: Vec::new(),
                sequenced: None,
                error: 0,
                message: None,
                base_offset: -1,
                log_start: -1,
            };
            if !(-1..=1).contains(&request.acks) {
                part.error = ResponseError::InvalidRequiredAcks.code();
                part.message = Some(format!("acks is 0, 1 or -1, not {}", request.acks));
            } else if request.transactional_id.is_some() {
                part.error = ResponseError::TransactionalIdAuthorizationFailed.code();
                part.message = Some("seglog does not support transactions".into());
            } else {
                match payloads(
                    data.records,
                    broker.limits.record_bytes,
                    &mut inflated_bytes_left,
                ) {
                    Ok((payloads, sequenced)) => {
                        part.payloads = payloads;
                        part.sequenced = sequenced;
                    }
                    Err((code, message)) => {
                        part.error = code;
                        part.message = Some(message);
                    }
                }
            }
            parts.push(part);
        }
    }
    (names, parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::catalog::{Catalog, NewTopic};
    use crate::storage::sim::{Fault, FaultOp, SimFs};
    use crate::storage::store::{PENDING_BYTES_MAX, Store, StoreConfig};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};

    /// Regression: records were appended one by one with `Store::append`,
    /// which runs a sync point first once the records waiting for one pass
    /// PENDING_BYTES_MAX; when that sync failed in the middle of a batch,
    /// the records before it stayed appended (and a client's retry would
    /// duplicate them). With `Store::append_all` a partition's records are
    /// all appended or none.
    #[test]
    fn a_failed_sync_in_the_middle_of_a_batch_leaves_none_or_all_of_it() {
        const VALUE_BYTES: usize = 1_000_000;
        const RECORDS: usize = 5;
        let dir = tempfile::tempdir().expect("temp dir");
        let fs = SimFs::new();
        let config = StoreConfig {
            fs: fs.clone(),
            ..StoreConfig::default()
        };
        let store = Store::open(std::path::Path::new("/sim"), config).expect("store");
        let mut catalog = Catalog::open(dir.path()).expect("catalog");
        let topic = catalog
            .create(
                NewTopic {
                    name: "t".into(),
                    partitions: 1,
                    retention_ms: None,
                    retention_bytes: None,
                    replication_factor: None,
                },
                0,
            )
            .expect("topic");
        let broker = crate::broker::test_broker(store, catalog);
        // Records waiting for a sync point on another key, a few short of
        // the bound (64 MB of 64 MiB): the batch's records pass it part
        // way, after its third record.
        let filler = vec![b'f'; VALUE_BYTES];
        let fillers = PENDING_BYTES_MAX / VALUE_BYTES - (RECORDS - 2);
        assert!(
            fillers * VALUE_BYTES < PENDING_BYTES_MAX
                && (fillers + RECORDS - 1) * VALUE_BYTES > PENDING_BYTES_MAX
        );
        {
            let mut store = broker.store();
            for _ in 0..fillers {
                store.append("filler", &filler).expect("append");
            }
        }
        // Every sync from now on fails.
        fs.fail(Fault::new(FaultOp::SyncData).persist());
        fs.fail(Fault::new(FaultOp::SyncAll).persist());
        let records: Vec<BatchRecord> = (0..RECORDS as i64)
            .map(|i| BatchRecord {
                offset: i,
                timestamp: 1,
                key: None,
                value: Some(Bytes::from(vec![b'v'; VALUE_BYTES])),
                headers: Vec::new(),
            })
            .collect();
        let mut encoded = bytes::BytesMut::new();
        batch::encode(&mut encoded, &records);
        let partition = PartitionProduceData::default()
            .with_index(0)
            .with_records(Some(encoded.freeze()));
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partition_data(vec![partition]),
            ]);
        let ctx = Arc::new(Context {
            broker: Arc::clone(&broker),
            advertised: ("127.0.0.1".into(), 9092),
            groups: Default::default(),
            auto_create_partitions: 0,
            producer_expiry: producers::EXPIRY_DEFAULT,
            auth: None,
            tls: None,
        });
        let _reply = produce(&ctx, request, 3);
        let appended = broker
            .store()
            .next_offset(&topic.key(0))
            .expect("next offset");
        assert!(
            appended == 0 || appended == RECORDS as u64,
            "{appended} of the batch's {RECORDS} records appended"
        );
    }
}
