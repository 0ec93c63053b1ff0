//! Metadata, CreateTopics and DeleteTopics, on the broker's topic
//! catalog: a topic made through either front end is the same topic.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    MetadataRequest, MetadataResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio::runtime::Handle;

use super::reply::Reply;
use super::{CLUSTER_ID, Context, NODE_ID};
use crate::broker::catalog::{NewTopic, PARTITIONS_MAX, Topic, check_name};
use crate::broker::cluster::{Cluster, Member, Placement};
use crate::broker::{Error, topics};
use crate::log;

/// Partitions of a topic created by a client that names no count (-1) or
/// by a Metadata request for a missing topic: Kafka's `num.partitions`
/// default. (A topic created over HTTP without a count gets the HTTP API's
/// own default, `http::api::CREATE_PARTITIONS_DEFAULT`.)
pub const NUM_PARTITIONS_DEFAULT: u32 = 1;

fn name(text: &str) -> TopicName {
    TopicName(StrBytes::from_string(text.to_string()))
}

/// The Kafka error code and message of a failed change to the catalog.
fn catalog_error(error: &Error) -> (i16, String) {
    let code = match error {
        // A bad partition count is refused before the catalog sees it
        // (`create_one`), so what the catalog finds invalid is the topic.
        Error::Invalid(_) => ResponseError::InvalidTopicException.code(),
        other => super::error::code(other),
    };
    (code, error.to_string())
}

fn topic_metadata(
    topic: &Topic,
    version: i16,
    cluster: Option<&dyn Cluster>,
) -> MetadataResponseTopic {
    let mut entry = MetadataResponseTopic::default();
    entry.name = Some(name(&topic.name));
    entry.partitions = (0..topic.partitions)
        .map(|p| {
            let mut partition = MetadataResponsePartition::default();
            partition.partition_index = p as i32;
            partition.leader_epoch = if version >= 7 { 0 } else { -1 };
            match cluster.map(|c| c.placement(&topic.name, p)) {
                None => {
                    partition.leader_id = BrokerId(NODE_ID);
                    partition.replica_nodes = vec![BrokerId(NODE_ID)];
                    partition.isr_nodes = vec![BrokerId(NODE_ID)];
                }
                Some(placement) => {
                    let placement = placement.unwrap_or(Placement {
                        replicas: Vec::new(),
                        leader: None,
                    });
                    // The replicas are Raft voters: in sync as Kafka
                    // counts them, a majority at any commit.
                    let replicas: Vec<BrokerId> =
                        placement.replicas.iter().map(|&id| broker_id(id)).collect();
                    partition.isr_nodes = replicas.clone();
                    partition.replica_nodes = replicas;
                    match placement.leader {
                        Some(leader) => partition.leader_id = broker_id(leader),
                        None => {
                            partition.leader_id = BrokerId(-1);
                            partition.error_code = ResponseError::LeaderNotAvailable.code();
                        }
                    }
                }
            }
            partition
        })
        .collect();
    entry
}

/// Creates a topic from a worker thread (the callers run on one): in the
/// catalog here, or through the cluster a node belongs to, waiting there
/// for its answer.
fn create_blocking(ctx: &Context, new: NewTopic) -> Result<Topic, Error> {
    match ctx.broker.cluster() {
        None => topics::create_here(&ctx.broker, new),
        Some(cluster) => Handle::current().block_on(cluster.create_topic(new)),
    }
}

/// A cluster node's id as a Kafka broker id (the metadata keeps ids
/// within Kafka's 32 bits).
fn broker_id(id: u64) -> BrokerId {
    BrokerId(i32::try_from(id).unwrap_or(-1))
}

/// A cluster member as a Kafka broker: its id, host and port, if it
/// serves Kafka.
pub fn member_broker(member: Member) -> Option<(BrokerId, String, i32)> {
    let kafka = member.kafka?;
    let (host, port) = kafka.rsplit_once(':')?;
    let port = i32::from(port.parse::<u16>().ok()?);
    Some((
        broker_id(member.id),
        host.trim_matches(['[', ']']).to_string(),
        port,
    ))
}

/// The brokers of the cluster this node belongs to that serve Kafka.
fn cluster_brokers(cluster: &dyn Cluster) -> Vec<MetadataResponseBroker> {
    cluster
        .members()
        .into_iter()
        .filter_map(member_broker)
        .map(|(id, host, port)| {
            let mut broker = MetadataResponseBroker::default();
            broker.node_id = id;
            broker.host = StrBytes::from_string(host);
            broker.port = port;
            broker
        })
        .collect()
}

/// This broker, every topic asked for (or all), and missing topics
/// created when the client allows it and `--kafka-auto-create-partitions`
/// is not 0. A creation writes the catalog, so it runs off the event loop.
pub fn metadata(ctx: &Arc<Context>, request: MetadataRequest, version: i16) -> Reply {
    let ctx = Arc::clone(ctx);
    Reply::Later(Box::pin(async move {
        let worker = Arc::clone(&ctx);
        let topics =
            tokio::task::spawn_blocking(move || metadata_topics(&worker, request, version))
                .await
                .unwrap_or_default();
        let mut response = MetadataResponse::default();
        let cluster = ctx.broker.cluster();
        let this_node = match cluster {
            Some(cluster) => {
                response.brokers = cluster_brokers(cluster.as_ref());
                broker_id(cluster.node_id())
            }
            None => {
                let mut this = MetadataResponseBroker::default();
                this.node_id = BrokerId(NODE_ID);
                this.host = StrBytes::from_string(ctx.advertised.0.clone());
                this.port = ctx.advertised.1;
                response.brokers = vec![this];
                BrokerId(NODE_ID)
            }
        };
        // Fields a version lacks must keep their defaults to encode.
        if version >= 2 {
            response.cluster_id = Some(StrBytes::from_static_str(CLUSTER_ID));
        }
        if version >= 1 {
            // No controller of Kafka's kind: the node asked, as KRaft
            // answers with a random broker.
            response.controller_id = this_node;
        }
        response.topics = topics;
        Some(ResponseKind::Metadata(response))
    }))
}

fn metadata_topics(
    ctx: &Context,
    request: MetadataRequest,
    version: i16,
) -> Vec<MetadataResponseTopic> {
    let wanted: Option<Vec<String>> = match request.topics {
        // Version 0 has no null: an empty list means every topic.
        Some(topics) if version == 0 && topics.is_empty() => None,
        Some(topics) => Some(
            topics
                .into_iter()
                .filter_map(|t| t.name.map(|n| n.0.as_str().to_string()))
                .collect(),
        ),
        None => None,
    };
    // The cluster is asked with the catalog's lock let go: it takes its
    // own lock, then the catalog's, when it replaces the catalog.
    let cluster = ctx.broker.cluster().map(|c| c.as_ref());
    let Some(wanted) = wanted else {
        let topics: Vec<Topic> = ctx.broker.catalog().topics().cloned().collect();
        return topics
            .iter()
            .map(|t| topic_metadata(t, version, cluster))
            .collect();
    };
    // Before version 4 every Metadata request allowed creation.
    let may_create =
        (version < 4 || request.allow_auto_topic_creation) && ctx.auto_create_partitions > 0;
    let mut out = Vec::with_capacity(wanted.len());
    for topic_name in wanted {
        let found = ctx.broker.catalog().get(&topic_name).cloned();
        let topic = match found {
            Some(topic) => Ok(topic),
            None if may_create => {
                let new = NewTopic {
                    name: topic_name.clone(),
                    partitions: ctx.auto_create_partitions,
                    retention_ms: None,
                    retention_bytes: None,
                    replication_factor: None,
                };
                let created = create_blocking(ctx, new);
                match created {
                    Ok(topic) => {
                        log::info(format_args!(
                            "kafka: created topic '{}' on first use ({} partitions)",
                            topic.name, topic.partitions
                        ));
                        Ok(topic)
                    }
                    // Another request created it meanwhile.
                    Err(Error::TopicExists { .. }) => ctx
                        .broker
                        .catalog()
                        .get(&topic_name)
                        .cloned()
                        .ok_or(ResponseError::UnknownTopicOrPartition.code()),
                    Err(e) => Err(catalog_error(&e).0),
                }
            }
            None => Err(ResponseError::UnknownTopicOrPartition.code()),
        };
        out.push(match topic {
            Ok(topic) => topic_metadata(&topic, version, cluster),
            Err(code) => {
                let mut entry = MetadataResponseTopic::default();
                entry.name = Some(name(&topic_name));
                entry.error_code = code;
                entry
            }
        });
    }
    out
}

/// Creates topics: partitions as asked (-1: [`NUM_PARTITIONS_DEFAULT`]),
/// replication factor -1 or the server's (1 for one node, min(3, nodes) for
/// a cluster), no manual assignment, and of the
/// configs only `retention.ms` and `retention.bytes`, which seglog has.
pub fn create(ctx: &Arc<Context>, request: CreateTopicsRequest, version: i16) -> Reply {
    let ctx = Arc::clone(ctx);
    Reply::Later(Box::pin(async move {
        let topics = tokio::task::spawn_blocking(move || {
            request
                .topics
                .into_iter()
                .map(|topic| create_one(&ctx, topic, request.validate_only))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut response = CreateTopicsResponse::default();
        response.topics = topics;
        for t in &mut response.topics {
            if version < 1 {
                t.error_message = None;
            }
            if version < 5 {
                t.num_partitions = -1;
                t.replication_factor = -1;
            }
        }
        Some(ResponseKind::CreateTopics(response))
    }))
}

fn create_one(
    ctx: &Context,
    topic: kafka_protocol::messages::create_topics_request::CreatableTopic,
    validate_only: bool,
) -> CreatableTopicResult {
    let mut result = CreatableTopicResult::default();
    result.name = topic.name.clone();
    let topic_name = topic.name.0.as_str().to_string();
    let fail = |mut result: CreatableTopicResult, code: i16, message: String| {
        log::debug(format_args!(
            "kafka: CreateTopics '{topic_name}': {message}"
        ));
        result.error_code = code;
        result.error_message = Some(StrBytes::from_string(message));
        result
    };
    // One node: 1. A cluster: what the request asks for (-1: the
    // cluster's default, min(3, nodes)); the cluster refuses more
    // replicas than nodes.
    let factor = match (ctx.broker.cluster(), topic.replication_factor) {
        (None, -1 | 1) => Ok(1),
        (None, asked) => Err(format!(
            "replication factor {asked}: seglog serve is one node, so 1 (or -1)"
        )),
        (Some(cluster), -1) => Ok(i16::try_from(cluster.replication_factor()).unwrap_or(i16::MAX)),
        (Some(_), asked) if asked < 1 => Err(format!(
            "replication factor {asked}: at least 1 (or -1, the cluster's default)"
        )),
        // As Kafka checks the brokers it knows of: here, the registered ones.
        (Some(cluster), asked) => {
            let nodes = cluster.members().len();
            if usize::try_from(asked).is_ok_and(|a| a > nodes) {
                Err(format!(
                    "replication factor {asked}: larger than the {nodes} nodes of this cluster"
                ))
            } else {
                Ok(asked)
            }
        }
    };
    let factor = match factor {
        Ok(factor) => factor,
        Err(message) => {
            return fail(
                result,
                ResponseError::InvalidReplicationFactor.code(),
                message,
            );
        }
    };
    if !topic.assignments.is_empty() {
        let message = "manual replica assignment: seglog serve is one node".to_string();
        return fail(
            result,
            ResponseError::InvalidReplicaAssignment.code(),
            message,
        );
    }
    let partitions = match topic.num_partitions {
        -1 => NUM_PARTITIONS_DEFAULT,
        n => match u32::try_from(n) {
            Ok(n) if (1..=PARTITIONS_MAX).contains(&n) => n,
            _ => {
                let message = format!("a topic has 1 to {PARTITIONS_MAX} partitions, not {n}");
                return fail(result, ResponseError::InvalidPartitions.code(), message);
            }
        },
    };
    let mut retention_ms = None;
    let mut retention_bytes = None;
    for config in &topic.configs {
        let value = config.value.as_ref().map(|v| v.as_str());
        let parsed = value.and_then(|v| v.parse::<i64>().ok());
        let slot = match config.name.as_str() {
            "retention.ms" => &mut retention_ms,
            "retention.bytes" => &mut retention_bytes,
            other => {
                let message = format!(
                    "config '{other}' is not one seglog has (it has retention.ms and retention.bytes)"
                );
                return fail(result, ResponseError::InvalidConfig.code(), message);
            }
        };
        match parsed {
            // -1 is Kafka's "no limit".
            Some(-1) => *slot = None,
            Some(n) if n >= 0 => *slot = Some(n as u64),
            _ => {
                let message = format!(
                    "config '{}' = {value:?} is not a number of at least -1",
                    config.name.as_str()
                );
                return fail(result, ResponseError::InvalidConfig.code(), message);
            }
        }
    }
    let new = NewTopic {
        name: topic_name.clone(),
        partitions,
        retention_ms,
        retention_bytes,
        replication_factor: u32::try_from(factor).ok(),
    };
    if validate_only {
        if let Err(e) = check_name(&topic_name) {
            return fail(result, ResponseError::InvalidTopicException.code(), e);
        }
        if ctx.broker.catalog().get(&topic_name).is_some() {
            let (code, message) = catalog_error(&Error::TopicExists {
                topic: topic_name.clone(),
            });
            return fail(result, code, message);
        }
        result.num_partitions = partitions as i32;
        result.replication_factor = factor;
        return result;
    }
    let created = create_blocking(ctx, new);
    match created {
        Ok(topic) => {
            log::info(format_args!(
                "kafka: created topic '{}' (id {}, {} partitions)",
                topic.name, topic.id, topic.partitions
            ));
            result.num_partitions = topic.partitions as i32;
            result.replication_factor = factor;
            result
        }
        Err(e) => {
            let (code, message) = catalog_error(&e);
            fail(result, code, message)
        }
    }
}

/// Deletes topics by name (the catalog first, durably, then the
/// partitions' logs, as the HTTP front end does).
pub fn delete(ctx: &Arc<Context>, request: DeleteTopicsRequest, version: i16) -> Reply {
    let ctx = Arc::clone(ctx);
    Reply::Later(Box::pin(async move {
        let _ = version;
        let mut responses = Vec::with_capacity(request.topic_names.len());
        for topic_name in request.topic_names {
            let text = topic_name.0.as_str().to_string();
            let deleted = topics::delete(&ctx.broker, text).await;
            let mut result = DeletableTopicResult::default();
            result.name = Some(topic_name);
            match deleted {
                Ok(topic) => {
                    log::info(format_args!(
                        "kafka: deleted topic '{}' (id {})",
                        topic.name, topic.id
                    ));
                }
                Err(e) => {
                    let (code, message) = catalog_error(&e);
                    result.error_code = code;
                    result.error_message = Some(StrBytes::from_string(message));
                }
            }
            responses.push(result);
        }
        if version < 5 {
            for r in &mut responses {
                r.error_message = None;
            }
        }
        let mut response = DeleteTopicsResponse::default();
        response.responses = responses;
        Some(ResponseKind::DeleteTopics(response))
    }))
}
