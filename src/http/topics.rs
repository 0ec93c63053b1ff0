//! Topics: `GET /topics`, `POST /topics` (create), `GET /topics/{topic}`
//! (describe its partitions), `GET /topics/{topic}/partitions/{partition}`
//! (one partition's state) and `DELETE /topics/{topic}`. In a cluster, the
//! state of a partition this node holds no replica of is asked of a node
//! that holds one (`relay`), so that every node describes it alike.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::api::{AppState, blocking, body, check_partition, find_topic, parse, path};
use super::auth::forbidden;
use super::error::ApiError;
use super::relay::{self, Relayed};
use crate::auth::Access;
use crate::broker::catalog::{NewTopic, Topic};
use crate::broker::{Broker, topics as broker_topics};
use crate::log;

/// Partitions of a topic created over HTTP without a count: the default of
/// the HTTP service seglog's API grew from. (A Kafka client's topic gets
/// Kafka's default, `kafka::topics::NUM_PARTITIONS_DEFAULT`.)
pub const CREATE_PARTITIONS_DEFAULT: u32 = 100;

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
    /// How many nodes of a cluster hold each partition.
    #[serde(default)]
    replication_factor: Option<u32>,
}

/// The topics, those the user may read or write only.
pub(super) async fn list(
    State(app): AppState,
    Extension(access): Extension<Access>,
) -> Json<Vec<String>> {
    Json(
        app.catalog()
            .topics()
            .filter(|t| access.may_see(&t.name))
            .map(|t| t.name.clone())
            .collect(),
    )
}

pub(super) async fn create(
    State(app): AppState,
    Extension(access): Extension<Access>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body(bytes, app.limits.request_bytes)?;
    let request: CreateTopic = parse(&bytes)?;
    if !access.may_write(&request.name) {
        return Err(forbidden(&request.name, true));
    }
    let new = NewTopic {
        name: request.name,
        partitions: request.partitions.unwrap_or(CREATE_PARTITIONS_DEFAULT),
        retention_ms: request.retention_ms,
        retention_bytes: request.retention_bytes,
        replication_factor: request.replication_factor,
    };
    let topic = broker_topics::create(&app, new).await?;
    log::info(format_args!(
        "created topic '{}' (id {}, {} partitions)",
        topic.name, topic.id, topic.partitions
    ));
    // Every partition is new, and empty: none is asked of another node,
    // so that the creation's answer never waits for a replica's.
    let described = partitions_of(&app, topic, Held::Anywhere).await?;
    Ok((StatusCode::CREATED, Json(described)).into_response())
}

/// One partition's state: `GET /topics/{topic}/partitions/{partition}`,
/// and each of a topic's description; read back from a replica's answer
/// where relayed.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PartitionInfo {
    pub(super) partition: u32,
    pub(super) log_start_offset: u64,
    pub(super) end_offset: u64,
    pub(super) bytes: u64,
}

#[derive(Serialize)]
pub(super) struct TopicInfo {
    name: String,
    partitions: Vec<PartitionInfo>,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    created_ms: u64,
}

/// Where [`partitions_of`] reads a partition's state.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Held {
    /// Here, where this node holds a replica; at a replica otherwise.
    Replicas,
    /// Here, for every partition: of a topic just created, whose
    /// partitions are empty wherever they are.
    Anywhere,
}

/// A topic with the state of each partition.
async fn partitions_of(app: &Arc<Broker>, topic: Topic, held: Held) -> Result<TopicInfo, ApiError> {
    let (here, elsewhere): (Vec<u32>, Vec<u32>) = (0..topic.partitions)
        .partition(|&p| held == Held::Anywhere || relay::reads_here(app, &topic.name, p));
    let mut partitions = {
        let app = Arc::clone(app);
        let topic = topic.clone();
        blocking(move || {
            here.into_iter()
                .map(|partition| local_state(&app, &topic, partition))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?
    };
    if let Some(cluster) = app.cluster() {
        let wanted = elsewhere.iter().map(|&p| (topic.name.clone(), p)).collect();
        let states = relay::relayed_states(cluster, wanted).await?;
        partitions.extend(
            elsewhere
                .into_iter()
                .zip(states)
                .map(|(partition, state)| state.unwrap_or_else(|| unapplied(partition))),
        );
    }
    partitions.sort_by_key(|p| p.partition);
    Ok(TopicInfo {
        name: topic.name,
        partitions,
        retention_ms: topic.retention_ms,
        retention_bytes: topic.retention_bytes,
        created_ms: topic.created_ms,
    })
}

/// The state of a partition whose topic no replica knows yet (or any
/// longer): none has applied its creation, so none holds records of it.
fn unapplied(partition: u32) -> PartitionInfo {
    PartitionInfo {
        partition,
        log_start_offset: 0,
        end_offset: 0,
        bytes: 0,
    }
}

/// Partition `partition` of `topic`'s state as this node's store has it.
fn local_state(app: &Broker, topic: &Topic, partition: u32) -> Result<PartitionInfo, ApiError> {
    let state = app.partition_state(&topic.key(partition))?;
    Ok(PartitionInfo {
        partition,
        log_start_offset: state.log_start,
        end_offset: state.end,
        bytes: state.bytes,
    })
}

pub(super) async fn describe(
    State(app): AppState,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<TopicInfo>, ApiError> {
    let topic = find_topic(&app, &path(name)?)?;
    Ok(Json(partitions_of(&app, topic, Held::Replicas).await?))
}

/// `GET /topics/{topic}/partitions/{partition}`: the partition's log start,
/// end and bytes; in a cluster, relayed to a replica where this node holds
/// none, as a fetch is.
pub(super) async fn describe_partition(
    State(app): AppState,
    relayed: Option<Extension<Relayed>>,
    params: Result<Path<(String, u64)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (name, partition) = path(params)?;
    let topic = find_topic(&app, &name)?;
    let partition = check_partition(&topic, partition)?;
    if !relay::reads_here(&app, &topic.name, partition)
        && let Some(cluster) = app.cluster()
    {
        relay::relayed_once(relayed.map(|Extension(r)| r), &topic.name, partition)?;
        let state =
            relay::relayed_state(cluster, &topic.name, partition, relay::RELAY_PATIENCE).await?;
        return Ok(Json(state.unwrap_or_else(|| unapplied(partition))).into_response());
    }
    let state = blocking(move || local_state(&app, &topic, partition)).await?;
    Ok(Json(state).into_response())
}

pub(super) async fn delete(
    State(app): AppState,
    name: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let name = path(name)?;
    let topic = broker_topics::delete(&app, name).await?;
    log::info(format_args!(
        "deleted topic '{}' (id {})",
        topic.name, topic.id
    ));
    Ok(StatusCode::NO_CONTENT)
}
