//! Produce: `POST /topics/{topic}` and `POST /topics/{topic}/partitions/{p}`,
//! a batch of records checked whole, each partition's records appended all
//! or none, answered once durable.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::api::{AppState, body, check_partition, parse, path, topic_not_found};
use super::error::ApiError;
use super::records::{self, RecordIn};
use crate::broker::time::now_ms;
use crate::broker::{Broker, Error};

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

pub(super) async fn to_topic(
    State(app): AppState,
    topic: Result<Path<String>, PathRejection>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let topic = path(topic)?;
    produce_records(app, topic, None, bytes).await
}

pub(super) async fn to_partition(
    State(app): AppState,
    params: Result<Path<(String, u64)>, PathRejection>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (topic, partition) = path(params)?;
    produce_records(app, topic, Some(partition), bytes).await
}

/// Appends a batch of records and answers once they are durable.
pub(super) async fn produce_records(
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
        // Each partition's records are appended all or none
        // (`Writer::append_all`), in the order of their first record.
        let mut partitions: Vec<(u32, Vec<usize>)> = Vec::new();
        for (i, (partition, _)) in encoded.iter().enumerate() {
            match partitions.iter_mut().find(|(p, _)| p == partition) {
                Some((_, indexes)) => indexes.push(i),
                None => partitions.push((*partition, vec![i])),
            }
        }
        if app.cluster().is_some() {
            // Through the partitions' groups, after the catalog's lock is
            // let go (below).
            (Err((encoded, partitions)), None)
        } else {
            let mut writer = app.records_writer()?;
            let mut offsets = vec![0u64; encoded.len()];
            for (done, (partition, indexes)) in partitions.iter().enumerate() {
                let payloads: Vec<&[u8]> =
                    indexes.iter().map(|&i| encoded[i].1.as_slice()).collect();
                match writer.append_all(&topic.key(*partition), &payloads) {
                    Ok(first) => {
                        for (j, &i) in indexes.iter().enumerate() {
                            offsets[i] = first + j as u64;
                        }
                    }
                    Err(e) if done == 0 => return Err(ApiError::from(e)),
                    Err(Error::Storage { source, .. }) => {
                        // The partitions before this one stay appended, and
                        // become durable with whichever later sync point covers
                        // them (none, if the store is poisoned); none of this
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
            (Ok(produced), writer.finish())
        }
    };
    let produced = match produced {
        Ok(produced) => produced,
        Err((encoded, partitions)) => {
            through_cluster(&app, &topic_name, encoded, partitions).await?
        }
    };
    if let Some(durable) = synced {
        durable.wait().await?;
    }
    app.metrics.produce_latency.observe(started.elapsed());
    Ok(Json(ProduceReply { offsets: produced }).into_response())
}

/// Appends each partition's records through the cluster a node belongs
/// to, partition after partition; each record's partition and offset.
async fn through_cluster(
    app: &Broker,
    topic: &str,
    encoded: Vec<(u32, Vec<u8>)>,
    partitions: Vec<(u32, Vec<usize>)>,
) -> Result<Vec<Produced>, ApiError> {
    let Some(cluster) = app.cluster() else {
        return Err(ApiError::from(Error::Internal(
            "a cluster's produce on a node of none".into(),
        )));
    };
    let mut payloads: Vec<Option<Vec<u8>>> = encoded.iter().map(|_| None).collect();
    let mut produced: Vec<Produced> = Vec::with_capacity(encoded.len());
    for (i, (partition, payload)) in encoded.into_iter().enumerate() {
        produced.push(Produced {
            partition,
            offset: 0,
        });
        payloads[i] = Some(payload);
    }
    for (done, (partition, indexes)) in partitions.iter().enumerate() {
        let batch: Vec<Vec<u8>> = indexes.iter().filter_map(|&i| payloads[i].take()).collect();
        match cluster.append(topic, *partition, batch).await {
            Ok(offsets) => {
                for (&i, offset) in indexes.iter().zip(offsets) {
                    produced[i].offset = offset;
                }
            }
            Err(e) if done == 0 => return Err(ApiError::from(e)),
            Err(e) => {
                return Err(ApiError::from(Error::Unavailable {
                    why: format!(
                        "the records of the first {done} of the {} partitions were committed; \
                         partition {partition}'s: {e}",
                        partitions.len()
                    ),
                    written: crate::broker::Written::Maybe,
                }));
            }
        }
    }
    Ok(produced)
}
