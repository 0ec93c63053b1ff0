//! The admin APIs of topics and the cluster: DescribeConfigs, AlterConfigs
//! and IncrementalAlterConfigs (the configs seglog has), CreatePartitions,
//! DeleteRecords and DescribeCluster.
//!
//! Configs: a topic's `retention.ms` and `retention.bytes` are its own
//! (the catalog's; -1 or a deletion leaves it to the server's default);
//! `segment.bytes`, `max.message.bytes` and `cleanup.policy` are the
//! server's and read-only. A request is checked whole for each resource
//! before anything of it is applied.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, BrokerId, CreatePartitionsRequest,
    CreatePartitionsResponse, DeleteRecordsRequest, DeleteRecordsResponse, DescribeClusterRequest,
    DescribeClusterResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;

use super::error::code;
use super::reply::Reply;
use super::{CLUSTER_ID, Context, NODE_ID};
use crate::broker::Error;
use crate::broker::catalog::{Catalog, Topic};

/// Resource types of the config APIs (Kafka's `ConfigResource.Type`).
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Where a config's value comes from (Kafka's `ConfigSource`).
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// Config value types (Kafka's `ConfigType`).
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_LIST: i8 = 7;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

/// The topic configs that may be altered.
const RETENTION_MS: &str = "retention.ms";
const RETENTION_BYTES: &str = "retention.bytes";

/// One config as DescribeConfigs lists it.
struct Config {
    name: &'static str,
    value: String,
    read_only: bool,
    source: i8,
    kind: i8,
}

/// A retention setting's value, source and whether it is read-only.
fn retention(own: Option<u64>, default: Option<u64>, topic: bool) -> (String, i8) {
    match (own, default) {
        (Some(v), _) if topic => (v.to_string(), SOURCE_DYNAMIC_TOPIC),
        (_, Some(v)) => (v.to_string(), SOURCE_STATIC_BROKER),
        _ => ("-1".to_string(), SOURCE_DEFAULT),
    }
}

/// The configs of a topic (`Some`) or of the broker (`None`).
fn configs(ctx: &Context, topic: Option<&Topic>) -> Vec<Config> {
    let broker = &ctx.broker;
    let default_ms = broker
        .default_retention
        .age
        .map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX));
    let default_bytes = broker.default_retention.bytes;
    let (ms, ms_source) = retention(
        topic.and_then(|t| t.retention_ms),
        default_ms,
        topic.is_some(),
    );
    let (bytes, bytes_source) = retention(
        topic.and_then(|t| t.retention_bytes),
        default_bytes,
        topic.is_some(),
    );
    let segment_bytes = broker.store().segment_bytes().to_string();
    let record_bytes = broker.limits.record_bytes.to_string();
    let names: [&'static str; 5] = match topic {
        Some(_) => [
            RETENTION_MS,
            RETENTION_BYTES,
            "segment.bytes",
            "max.message.bytes",
            "cleanup.policy",
        ],
        None => [
            "log.retention.ms",
            "log.retention.bytes",
            "log.segment.bytes",
            "message.max.bytes",
            "log.cleanup.policy",
        ],
    };
    let read_only = topic.is_none();
    vec![
        Config {
            name: names[0],
            value: ms,
            read_only,
            source: ms_source,
            kind: TYPE_LONG,
        },
        Config {
            name: names[1],
            value: bytes,
            read_only,
            source: bytes_source,
            kind: TYPE_LONG,
        },
        Config {
            name: names[2],
            value: segment_bytes,
            read_only: true,
            source: SOURCE_STATIC_BROKER,
            kind: TYPE_INT,
        },
        Config {
            name: names[3],
            value: record_bytes,
            read_only: true,
            source: SOURCE_STATIC_BROKER,
            kind: TYPE_INT,
        },
        Config {
            name: names[4],
            value: "delete".to_string(),
            read_only: true,
            source: SOURCE_DEFAULT,
            kind: TYPE_LIST,
        },
    ]
}

/// Whether `name` is this broker as a config resource ("0", or "" for
/// the cluster's default).
fn is_this_broker(name: &str) -> bool {
    name.is_empty() || name == NODE_ID.to_string()
}

pub fn describe_configs(ctx: &Arc<Context>, request: DescribeConfigsRequest) -> Reply {
    let mut response = DescribeConfigsResponse::default();
    for resource in request.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        let name = resource.resource_name.as_str().to_string();
        result.resource_name = resource.resource_name;
        let listed = match resource.resource_type {
            RESOURCE_TOPIC => {
                let topic = ctx.broker.catalog().get(&name).cloned();
                match topic {
                    Some(topic) => Ok(configs(ctx, Some(&topic))),
                    None => Err((
                        ResponseError::UnknownTopicOrPartition.code(),
                        format!("no topic '{name}'"),
                    )),
                }
            }
            RESOURCE_BROKER if is_this_broker(&name) => Ok(configs(ctx, None)),
            RESOURCE_BROKER => Err((
                ResponseError::InvalidRequest.code(),
                format!("no broker '{name}': this is broker {NODE_ID}"),
            )),
            other => Err((
                ResponseError::InvalidRequest.code(),
                format!("resources of type {other} have no configs here (topics 2, the broker 4)"),
            )),
        };
        match listed {
            Ok(all) => {
                let wanted = resource.configuration_keys.as_ref();
                result.configs = all
                    .into_iter()
                    .filter(|c| wanted.is_none_or(|keys| keys.iter().any(|k| k.as_str() == c.name)))
                    .map(|c| {
                        let mut out = DescribeConfigsResourceResult::default();
                        out.name = StrBytes::from_static_str(c.name);
                        out.value = Some(StrBytes::from_string(c.value));
                        out.read_only = c.read_only;
                        out.config_source = c.source;
                        out.config_type = c.kind;
                        out
                    })
                    .collect();
            }
            Err((error, message)) => {
                result.error_code = error;
                result.error_message = Some(StrBytes::from_string(message));
            }
        }
        response.results.push(result);
    }
    Reply::now(ResponseKind::DescribeConfigs(response))
}

/// A topic's retention as an alteration leaves it.
#[derive(Clone, Copy)]
struct Retention {
    ms: Option<u64>,
    bytes: Option<u64>,
}

/// An alteration refused: INVALID_CONFIG (or another code) and why.
type Refused = (i16, String);

fn invalid_config(message: String) -> Refused {
    (ResponseError::InvalidConfig.code(), message)
}

/// The value of a retention config: a positive number, or -1 for none of
/// the topic's own (unlimited, unless the server has a default, which a
/// topic cannot lift: refused then).
fn retention_value(
    name: &str,
    value: Option<&str>,
    default: Option<u64>,
) -> Result<Option<u64>, Refused> {
    let text = value.unwrap_or("");
    match text.trim().parse::<i64>() {
        Ok(-1) if default.is_none() => Ok(None),
        Ok(-1) => Err(invalid_config(format!(
            "{name}=-1 (unlimited) cannot lift the server's default of {}; delete the setting \
             to follow it, or set a larger value",
            default.unwrap_or(0)
        ))),
        Ok(v) if v > 0 => Ok(u64::try_from(v).ok()),
        _ => Err(invalid_config(format!(
            "{name} is a positive number (or -1), not {text:?}"
        ))),
    }
}

/// Checks one config alteration of a topic: `Ok(change)` to apply to its
/// retention, or why it is refused.
fn alter_one(
    ctx: &Context,
    name: &str,
    operation: i8,
    value: Option<&str>,
    into: &mut Retention,
) -> Result<(), Refused> {
    let default = &ctx.broker.default_retention;
    let default_ms = default
        .age
        .map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX));
    let slot = match name {
        RETENTION_MS => &mut into.ms,
        RETENTION_BYTES => &mut into.bytes,
        "segment.bytes" | "max.message.bytes" | "cleanup.policy" => {
            return Err(invalid_config(format!(
                "{name} is read-only here: the server's (--segment-bytes, --max-record-bytes; \
                 retention deletes, no compaction)"
            )));
        }
        other => {
            return Err(invalid_config(format!(
                "unknown config {other:?} (this server has retention.ms and retention.bytes)"
            )));
        }
    };
    let server_default = if name == RETENTION_MS {
        default_ms
    } else {
        default.bytes
    };
    *slot = match operation {
        OP_SET => retention_value(name, value, server_default)?,
        OP_DELETE => None,
        other => {
            return Err(invalid_config(format!(
                "operation {other} on {name}: only SET (0) and DELETE (1) apply to a number"
            )));
        }
    };
    Ok(())
}

/// Applies the checked retention to a topic unless only validating.
fn apply(
    catalog: &mut Catalog,
    topic: &str,
    retention: Retention,
    validate_only: bool,
) -> Result<(), Refused> {
    if validate_only {
        return Ok(());
    }
    catalog
        .set_retention(topic, retention.ms, retention.bytes)
        .map(|_| ())
        .map_err(|e| (code(&e), e.to_string()))
}

/// The topic a config alteration names, or why it is refused.
fn altered_topic(catalog: &Catalog, resource_type: i8, name: &str) -> Result<Topic, Refused> {
    match resource_type {
        RESOURCE_TOPIC => catalog.get(name).cloned().ok_or_else(|| {
            (
                ResponseError::UnknownTopicOrPartition.code(),
                format!("no topic '{name}'"),
            )
        }),
        RESOURCE_BROKER => Err(invalid_config(
            "the broker's configs are set on its command line".into(),
        )),
        other => Err((
            ResponseError::InvalidRequest.code(),
            format!("resources of type {other} have no configs here"),
        )),
    }
}

/// Checks one resource's alterations whole, starting from the topic's
/// own retention (`incremental`, IncrementalAlterConfigs) or from none
/// (AlterConfigs, whose configs replace the topic's), and applies them
/// unless only validating. The catalog is held for writing from the read
/// to the write: two requests altering one topic's configs at once (an
/// incremental one builds on the other's) apply one after the other,
/// neither undoing the other's change.
fn alter_resource<'a>(
    ctx: &Context,
    (resource_type, name): (i8, &str),
    incremental: bool,
    configs: impl Iterator<Item = (&'a str, i8, Option<&'a str>)>,
    validate_only: bool,
) -> Result<(), Refused> {
    let mut catalog = ctx.broker.catalog_mut();
    let topic = altered_topic(&catalog, resource_type, name)?;
    let mut retention = Retention {
        ms: topic.retention_ms.filter(|_| incremental),
        bytes: topic.retention_bytes.filter(|_| incremental),
    };
    for (config, operation, value) in configs {
        alter_one(ctx, config, operation, value, &mut retention)?;
    }
    apply(&mut catalog, name, retention, validate_only)
}

/// A response's error code and message for an alteration's outcome.
fn error_of(outcome: Result<(), Refused>) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (0, None),
        Err((error, message)) => (error, Some(StrBytes::from_string(message))),
    }
}

/// IncrementalAlterConfigs: SET or DELETE a topic's retention.ms and
/// retention.bytes.
pub fn incremental_alter_configs(
    ctx: &Arc<Context>,
    request: IncrementalAlterConfigsRequest,
) -> Reply {
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    let mut response = IncrementalAlterConfigsResponse::default();
    for resource in request.resources {
        let configs = resource.configs.iter().map(|c| {
            let value = c.value.as_ref().map(|v| v.as_str());
            (c.name.as_str(), c.config_operation, value)
        });
        let at = (resource.resource_type, resource.resource_name.as_str());
        let outcome = alter_resource(ctx, at, true, configs, request.validate_only);
        let mut out = AlterConfigsResourceResponse::default();
        (out.error_code, out.error_message) = error_of(outcome);
        out.resource_type = resource.resource_type;
        out.resource_name = resource.resource_name;
        response.responses.push(out);
    }
    Reply::now(ResponseKind::IncrementalAlterConfigs(response))
}

/// AlterConfigs (the older API): the configs given replace the topic's
/// own; a retention config left out goes back to the server's default.
pub fn alter_configs(ctx: &Arc<Context>, request: AlterConfigsRequest) -> Reply {
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
    let mut response = AlterConfigsResponse::default();
    for resource in request.resources {
        let configs = resource.configs.iter().map(|c| {
            let value = c.value.as_ref().map(|v| v.as_str());
            (c.name.as_str(), OP_SET, value)
        });
        let at = (resource.resource_type, resource.resource_name.as_str());
        let outcome = alter_resource(ctx, at, false, configs, request.validate_only);
        let mut out = AlterConfigsResourceResponse::default();
        (out.error_code, out.error_message) = error_of(outcome);
        out.resource_type = resource.resource_type;
        out.resource_name = resource.resource_name;
        response.responses.push(out);
    }
    Reply::now(ResponseKind::AlterConfigs(response))
}

/// Whether CreatePartitions' assignments (`given` of them, `None` when the
/// request has none) name one per new partition, from `current` to
/// `count`, as Kafka requires. A count not above the current one is
/// refused by the catalog, whatever the assignments.
fn assignments_fit(given: Option<usize>, current: u32, count: u32) -> bool {
    match given {
        None => true,
        Some(_) if count <= current => true,
        Some(given) => u64::try_from(given).is_ok_and(|g| g == u64::from(count - current)),
    }
}

/// CreatePartitions: raises a topic's partition count (one node: every
/// replica assignment given must be this broker alone).
pub fn create_partitions(ctx: &Arc<Context>, request: CreatePartitionsRequest) -> Reply {
    let mut response = CreatePartitionsResponse::default();
    for topic in request.topics {
        let name = topic.name.0.as_str().to_string();
        let mut result = CreatePartitionsTopicResult::default();
        result.name = topic.name;
        let on_this_broker = topic.assignments.iter().flatten().all(|a| {
            a.broker_ids.len() == 1 && a.broker_ids.first().is_some_and(|b| b.0 == NODE_ID)
        });
        let outcome =
            if !on_this_broker {
                Err((
                    ResponseError::InvalidReplicaAssignment.code(),
                    format!("one node: every new partition's replicas are broker {NODE_ID} alone"),
                ))
            } else {
                let mut catalog = ctx.broker.catalog_mut();
                match (u32::try_from(topic.count), catalog.get(&name)) {
                    (_, None) => Err((
                        ResponseError::UnknownTopicOrPartition.code(),
                        format!("no topic '{name}'"),
                    )),
                    (Ok(count), Some(t))
                        if !assignments_fit(
                            topic.assignments.as_ref().map(Vec::len),
                            t.partitions,
                            count,
                        ) =>
                    {
                        Err((
                            ResponseError::InvalidReplicaAssignment.code(),
                            format!(
                                "{} assignments for {} new partitions",
                                topic.assignments.as_ref().map_or(0, Vec::len),
                                count.saturating_sub(t.partitions)
                            ),
                        ))
                    }
                    (Ok(count), Some(t)) if count > t.partitions && request.validate_only => {
                        if count > crate::broker::catalog::PARTITIONS_MAX {
                            Err((
                                ResponseError::InvalidPartitions.code(),
                                format!(
                                    "at most {} partitions",
                                    crate::broker::catalog::PARTITIONS_MAX
                                ),
                            ))
                        } else {
                            Ok(())
                        }
                    }
                    (Ok(count), Some(_)) => catalog
                        .add_partitions(&name, count)
                        .map(|_| ())
                        .map_err(|e| {
                            let error = match e {
                                Error::Invalid(_) => ResponseError::InvalidPartitions.code(),
                                ref other => code(other),
                            };
                            (error, e.to_string())
                        }),
                    (Err(_), Some(_)) => Err((
                        ResponseError::InvalidPartitions.code(),
                        format!("a partition count of {}", topic.count),
                    )),
                }
            };
        if let Err((error, message)) = outcome {
            result.error_code = error;
            result.error_message = Some(StrBytes::from_string(message));
        }
        response.results.push(result);
    }
    Reply::now(ResponseKind::CreatePartitions(response))
}

/// DeleteRecords: each partition's records below the offset given (-1:
/// its end) are gone; its new log start (the low watermark) is durable
/// before the reply. An offset past the end gets OFFSET_OUT_OF_RANGE.
pub fn delete_records(ctx: &Arc<Context>, request: DeleteRecordsRequest) -> Reply {
    let mut topics = Vec::with_capacity(request.topics.len());
    let mut waits = Vec::new();
    {
        let catalog = ctx.broker.catalog();
        for topic in request.topics {
            let found = catalog.get(topic.name.0.as_str()).cloned();
            let mut out = DeleteRecordsTopicResult::default();
            out.name = topic.name;
            for p in topic.partitions {
                let mut entry = DeleteRecordsPartitionResult::default();
                entry.partition_index = p.partition_index;
                entry.low_watermark = -1;
                let key = match &found {
                    Some(t) if (0..t.partitions as i64).contains(&i64::from(p.partition_index)) => {
                        t.key(p.partition_index as u32)
                    }
                    _ => {
                        entry.error_code = ResponseError::UnknownTopicOrPartition.code();
                        out.partitions.push(entry);
                        continue;
                    }
                };
                let before = match p.offset {
                    -1 => ctx.broker.partition_offsets(&key).map(|(_, end)| end),
                    offset => u64::try_from(offset).map_err(|_| {
                        Error::Invalid(format!("offset {offset} is neither -1 nor an offset"))
                    }),
                };
                match before.and_then(|before| ctx.broker.delete_records(&key, before)) {
                    Ok((start, durable)) => {
                        entry.low_watermark = i64::try_from(start).unwrap_or(i64::MAX);
                        waits.extend(durable);
                    }
                    Err(Error::Invalid(_)) => {
                        entry.error_code = ResponseError::OffsetOutOfRange.code();
                    }
                    Err(e) => entry.error_code = code(&e),
                }
                out.partitions.push(entry);
            }
            topics.push(out);
        }
    }
    Reply::Later(Box::pin(async move {
        let mut failed = None;
        for durable in waits {
            if let Err(e) = durable.wait().await {
                failed = Some(code(&e));
            }
        }
        if let Some(error) = failed {
            for p in topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                if p.error_code == 0 {
                    p.error_code = error;
                }
            }
        }
        let mut response = DeleteRecordsResponse::default();
        response.topics = topics;
        Some(ResponseKind::DeleteRecords(response))
    }))
}

/// DescribeCluster: this node, the only broker and the controller.
pub fn describe_cluster(ctx: &Arc<Context>, request: DescribeClusterRequest) -> Reply {
    let _ = request;
    let mut response = DescribeClusterResponse::default();
    response.cluster_id = StrBytes::from_static_str(CLUSTER_ID);
    response.controller_id = BrokerId(NODE_ID);
    response.endpoint_type = 1;
    response.cluster_authorized_operations = i32::MIN;
    let mut broker = DescribeClusterBroker::default();
    broker.broker_id = BrokerId(NODE_ID);
    broker.host = StrBytes::from_string(ctx.advertised.0.clone());
    broker.port = ctx.advertised.1;
    response.brokers = vec![broker];
    Reply::now(ResponseKind::DescribeCluster(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One assignment per new partition, or none at all; any other number
    /// is refused (Kafka's INVALID_REPLICA_ASSIGNMENT), not ignored.
    #[test]
    fn create_partitions_wants_one_assignment_per_new_partition() {
        assert!(assignments_fit(None, 3, 6));
        assert!(assignments_fit(Some(3), 3, 6));
        assert!(!assignments_fit(Some(1), 3, 6));
        assert!(!assignments_fit(Some(4), 3, 6));
        assert!(!assignments_fit(Some(0), 3, 6));
        assert!(
            assignments_fit(Some(2), 3, 3),
            "the catalog refuses the count"
        );
    }
}
