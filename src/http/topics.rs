//! Topics: `GET /topics`, `POST /topics` (create), `GET /topics/{topic}`
//! (describe its partitions) and `DELETE /topics/{topic}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::api::{AppState, blocking, body, find_topic, parse, path};
use super::auth::forbidden;
use super::error::ApiError;
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
    let described = partitions_of(&app, topic).await?;
    Ok((StatusCode::CREATED, Json(described)).into_response())
}

#[derive(Serialize)]
pub(super) struct PartitionInfo {
    partition: u32,
    log_start_offset: u64,
    end_offset: u64,
    bytes: u64,
}

#[derive(Serialize)]
pub(super) struct TopicInfo {
    name: String,
    partitions: Vec<PartitionInfo>,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    created_ms: u64,
}

/// A topic with the state of each partition.
async fn partitions_of(app: &Arc<Broker>, topic: Topic) -> Result<TopicInfo, ApiError> {
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

pub(super) async fn describe(
    State(app): AppState,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<TopicInfo>, ApiError> {
    let topic = find_topic(&app, &path(name)?)?;
    Ok(Json(partitions_of(&app, topic).await?))
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
