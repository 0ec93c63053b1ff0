//! Consumer groups: `GET /groups` (the groups with committed offsets),
//! `GET /groups/{group}` (its offsets with each partition's end and the
//! group's lag), and their offsets: `POST /groups/{group}/offsets`
//! (commit the offsets given, lower ones included, with an optional
//! metadata string, durable before the reply) and
//! `GET /groups/{group}/offsets`. In a cluster, the log start and end of a
//! partition this node holds no replica of are asked of a replica, so
//! that every node shows the same lag.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use axum::http::StatusCode;

use super::api::{AppState, blocking, body, check_partition, parse, path, topic_not_found};
use super::auth::forbidden;
use super::error::{ApiError, code};
use super::relay;
use crate::auth::Access;
use crate::broker::Broker;
use crate::broker::catalog::{Catalog, Topic};
use crate::broker::groups::{GroupLag, check_group, check_metadata, offset_key};

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupOffset {
    topic: String,
    partition: u32,
    offset: u64,
    /// The commit's metadata string (Kafka's), kept beside the offset;
    /// left out of replies when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    metadata: String,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupOffsets {
    offsets: Vec<GroupOffset>,
}

/// Commits offsets (each the next offset the group will read) as given,
/// lower ones than before included, and answers once durable with the
/// committed offsets.
pub(super) async fn commit(
    State(app): AppState,
    Extension(access): Extension<Access>,
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
    if let Some(entry) = request.offsets.iter().find(|e| !access.may_read(&e.topic)) {
        return Err(forbidden(&entry.topic, false));
    }
    if let Some(cluster) = app.cluster() {
        // Through the cluster's metadata group, at any node.
        let keys = offset_keys(&app.catalog(), &group, &request)?;
        let changes = keys
            .into_iter()
            .zip(&request.offsets)
            .map(|(key, entry)| (key, Some((entry.offset, entry.metadata.clone()))))
            .collect();
        cluster.commit_offsets(changes).await?;
        return Ok(Json(request));
    }
    let synced = {
        // Held across the commits: a topic deleted meanwhile gets none
        // after its keys were removed.
        let catalog = app.catalog();
        let keys = offset_keys(&catalog, &group, &request)?;
        let mut writer = app.writer()?;
        for (key, entry) in keys.iter().zip(&request.offsets) {
            writer.commit(key, entry.offset, &entry.metadata)?;
        }
        writer.finish()
    };
    if let Some(durable) = synced {
        durable.wait().await?;
    }
    Ok(Json(request))
}

/// The offset keys of a commit's entries, each checked.
fn offset_keys(
    catalog: &Catalog,
    group: &str,
    request: &GroupOffsets,
) -> Result<Vec<String>, ApiError> {
    let mut keys = Vec::with_capacity(request.offsets.len());
    for entry in &request.offsets {
        let topic = catalog
            .get(&entry.topic)
            .ok_or_else(|| topic_not_found(&entry.topic))?;
        let partition = check_partition(topic, u64::from(entry.partition))?;
        check_metadata(&entry.metadata)?;
        keys.push(offset_key(group, topic, partition));
    }
    Ok(keys)
}

/// The group's committed offsets, of every topic or of `?topic=`.
pub(super) async fn list(
    State(app): AppState,
    Extension(access): Extension<Access>,
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
        Some(name) if !access.may_read(name) => return Err(forbidden(name, false)),
        Some(name) => vec![catalog.get(name).ok_or_else(|| topic_not_found(name))?],
        None => catalog
            .topics()
            .filter(|t| access.may_read(&t.name))
            .collect(),
    };
    let store = app.store();
    let mut offsets = Vec::new();
    for topic in topics {
        for partition in 0..topic.partitions {
            if let Some(c) = store.committed_entry(&offset_key(&group, topic, partition)) {
                offsets.push(GroupOffset {
                    topic: topic.name.clone(),
                    partition,
                    offset: c.offset,
                    metadata: String::from_utf8_lossy(&c.value).into_owned(),
                });
            }
        }
    }
    Ok(Json(GroupOffsets { offsets }))
}

/// One group as `GET /groups` lists it.
#[derive(Serialize)]
pub(super) struct GroupSummary {
    group: String,
    /// The topics the group has committed offsets in, sorted.
    topics: Vec<String>,
    /// The partitions of those topics, and how many have a commit.
    partitions: usize,
    committed_partitions: usize,
    /// The sum of the partitions' lags (as `GET /groups/{group}` has it).
    lag: u64,
}

/// `GET /groups`: each group that has committed offsets of topics that
/// exist, sorted, with its topics, partitions and lag, computed in one
/// pass over the commits ([`Broker::group_lags`](crate::broker::Broker::group_lags)):
/// a list of many groups costs one read of each partition's offsets, not
/// a description per group (in a cluster, one relayed request for each
/// partition this node holds no replica of).
pub(super) async fn list_groups(
    State(app): AppState,
    Extension(access): Extension<Access>,
) -> Result<Json<Vec<GroupSummary>>, ApiError> {
    let lags = {
        let app = Arc::clone(&app);
        blocking(move || {
            let mut lags = app.group_lags(None)?;
            // A user sees the groups' partitions of topics it may read only.
            for g in &mut lags {
                g.partitions.retain(|p| access.may_read(&p.topic));
            }
            lags.retain(|g| !g.partitions.is_empty());
            Ok(lags)
        })
        .await?
    };
    let lags = with_replicas_offsets(&app, lags).await?;
    Ok(Json(
        lags.into_iter()
            .map(|g| {
                let mut topics: Vec<String> =
                    g.partitions.iter().map(|p| p.topic.clone()).collect();
                topics.dedup();
                GroupSummary {
                    committed_partitions: g
                        .partitions
                        .iter()
                        .filter(|p| p.committed.is_some())
                        .count(),
                    partitions: g.partitions.len(),
                    topics,
                    group: g.group,
                    lag: g.lag,
                }
            })
            .collect(),
    ))
}

/// `lags` with the log start and end of each partition this node holds
/// no replica of read at a replica ([`relay::relayed_states`]; a node of a
/// cluster's store has nothing of it), and each group's lag summed anew.
async fn with_replicas_offsets(
    app: &Arc<Broker>,
    mut lags: Vec<GroupLag>,
) -> Result<Vec<GroupLag>, ApiError> {
    if let Some(cluster) = app.cluster() {
        let elsewhere: BTreeSet<(String, u32)> = lags
            .iter()
            .flat_map(|g| &g.partitions)
            .filter(|p| !relay::reads_here(app, &p.topic, p.partition))
            .map(|p| (p.topic.clone(), p.partition))
            .collect();
        let elsewhere: Vec<(String, u32)> = elsewhere.into_iter().collect();
        let states = relay::relayed_states(cluster, elsewhere.clone()).await?;
        // `None`: no replica knows the topic (its deletion applied there
        // first, or its creation not yet), and the partition drops out as
        // a deleted topic's do in `group_lags`.
        let read: HashMap<(String, u32), Option<(u64, u64)>> = elsewhere
            .into_iter()
            .zip(
                states
                    .iter()
                    .map(|s| s.as_ref().map(|s| (s.log_start_offset, s.end_offset))),
            )
            .collect();
        for g in &mut lags {
            g.partitions
                .retain_mut(|p| match read.get(&(p.topic.clone(), p.partition)) {
                    Some(None) => false,
                    Some(&Some((log_start, end))) => {
                        p.set_offsets(log_start, end);
                        true
                    }
                    None => true,
                });
        }
    }
    for g in &mut lags {
        g.lag = g.partitions.iter().map(|p| p.lag).sum();
    }
    Ok(lags)
}

/// One partition of a group's description.
#[derive(Serialize)]
pub(super) struct GroupPartition {
    topic: String,
    partition: u32,
    /// The committed offset: the next one the group will read; `null`
    /// where the group has committed nothing in this partition of a topic
    /// it reads.
    offset: Option<u64>,
    log_start_offset: u64,
    end_offset: u64,
    /// Records the group has still to read: `end_offset - offset` (0 for
    /// a commit at or past the end); every record the partition holds
    /// where it has no commit (a consumer of the group starts at the log
    /// start there).
    lag: u64,
}

/// `GET /groups/{group}`'s reply.
#[derive(Serialize)]
pub(super) struct GroupInfo {
    group: String,
    /// The sum of the partitions' lags.
    lag: u64,
    partitions: Vec<GroupPartition>,
}

/// `GET /groups/{group}`: every partition of the topics the group has
/// committed in, each with its commit (if any) beside the partition's log
/// start and end and the lag; 404 when the group has no committed offset
/// of a topic that exists.
pub(super) async fn describe(
    State(app): AppState,
    Extension(access): Extension<Access>,
    group: Result<Path<String>, PathRejection>,
) -> Result<Json<GroupInfo>, ApiError> {
    let group = path(group)?;
    check_group(&group)?;
    let lags = {
        let app = Arc::clone(&app);
        let group = group.clone();
        blocking(move || {
            let lag = app.group_lags(Some(&group))?.pop().map(|mut lag| {
                // A user sees the partitions of topics it may read only.
                lag.partitions.retain(|p| access.may_read(&p.topic));
                lag
            });
            Ok(lag
                .filter(|lag| !lag.partitions.is_empty())
                .into_iter()
                .collect())
        })
        .await?
    };
    let Some(lag) = with_replicas_offsets(&app, lags).await?.pop() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            code::GROUP_NOT_FOUND,
            format!("group '{group}' has no committed offsets (GET /groups lists the groups)"),
        ));
    };
    Ok(Json(GroupInfo {
        group: lag.group,
        lag: lag.lag,
        partitions: lag
            .partitions
            .into_iter()
            .map(|p| GroupPartition {
                topic: p.topic,
                partition: p.partition,
                offset: p.committed,
                log_start_offset: p.log_start,
                end_offset: p.end,
                lag: p.lag,
            })
            .collect(),
    }))
}
