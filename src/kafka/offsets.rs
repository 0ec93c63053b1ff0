//! OffsetCommit and OffsetFetch: consumer group offsets on the broker's
//! committed offsets (`broker::groups`), the same ones the HTTP front end's
//! group routes use. A commit from a group member is checked against the
//! group's membership ([`super::groups::Coordinator::check_commit`]).

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::Context;
use super::groups::{check_group, not_coordinator};
use super::reply::Reply;
use crate::broker::cluster::OffsetChange;
use crate::broker::groups::{check_metadata, offset_key};
use crate::log;
use crate::storage::offsets::Committed;

fn name_of(topic: &TopicName) -> &str {
    topic.0.as_str()
}

/// A commit's metadata string; null is stored as empty, as Kafka does.
fn metadata_of(metadata: &Option<StrBytes>) -> &str {
    metadata.as_ref().map_or("", |m| m.as_str())
}

/// Commits offsets to the store, durable before the reply. A commit that
/// names a generation must come from a current member; a generation of -1
/// (a consumer that assigns partitions itself) is always taken.
pub fn offset_commit(ctx: &Arc<Context>, request: OffsetCommitRequest) -> Reply {
    let broker = &ctx.broker;
    let group_id = request.group_id.0.as_str().to_string();
    let group_code = check_group(&group_id)
        .err()
        .or_else(|| not_coordinator(ctx))
        .or_else(|| {
            ctx.groups.check_commit(
                &group_id,
                request.generation_id_or_member_epoch,
                request.member_id.as_str(),
            )
        });
    // Each partition's key and commit, or the code it is refused with.
    let mut topics = Vec::with_capacity(request.topics.len());
    let mut changes: Vec<(usize, usize, OffsetChange)> = Vec::new();
    // Held until the commits are applied (a single node's): a topic
    // deleted meanwhile gets no commit after its keys were removed.
    let catalog = broker.catalog();
    {
        for (t, topic) in request.topics.into_iter().enumerate() {
            let mut out = OffsetCommitResponseTopic::default();
            let found = catalog.get(name_of(&topic.name)).cloned();
            out.name = topic.name;
            for (i, p) in topic.partitions.into_iter().enumerate() {
                let mut entry = OffsetCommitResponsePartition::default();
                entry.partition_index = p.partition_index;
                let metadata = metadata_of(&p.committed_metadata);
                entry.error_code = match (&group_code, &found) {
                    (Some(code), _) => *code,
                    (None, None) => ResponseError::UnknownTopicOrPartition.code(),
                    (None, Some(t))
                        if p.partition_index < 0 || p.partition_index as u32 >= t.partitions =>
                    {
                        ResponseError::UnknownTopicOrPartition.code()
                    }
                    (None, Some(_)) if p.committed_offset < 0 => {
                        ResponseError::InvalidCommitOffsetSize.code()
                    }
                    (None, Some(_)) if check_metadata(metadata).is_err() => {
                        ResponseError::OffsetMetadataTooLarge.code()
                    }
                    (None, Some(topic)) => {
                        let key = offset_key(&group_id, topic, p.partition_index as u32);
                        let commit = (p.committed_offset as u64, metadata.to_string());
                        changes.push((t, i, (key, Some(commit))));
                        0
                    }
                };
                out.partitions.push(entry);
            }
            topics.push(out);
        }
    }
    if let Some(cluster) = broker.cluster() {
        drop(catalog);
        let cluster = Arc::clone(cluster);
        return Reply::Later(Box::pin(async move {
            let (places, changes): (Vec<_>, Vec<_>) =
                changes.into_iter().map(|(t, i, c)| ((t, i), c)).unzip();
            if !changes.is_empty()
                && let Err(e) = cluster.commit_offsets(changes).await
            {
                log::warn(format_args!(
                    "kafka: cannot commit offsets of {group_id}: {e}"
                ));
                for (t, i) in places {
                    topics[t].partitions[i].error_code = super::error::code(&e);
                }
            }
            Some(offset_commit_response(topics))
        }));
    }
    let synced = match broker.writer() {
        Err(e) => {
            for (t, i, _) in &changes {
                topics[*t].partitions[*i].error_code = super::error::code(&e);
            }
            None
        }
        Ok(mut writer) => {
            for (t, i, (key, commit)) in &changes {
                let (offset, metadata) = commit.as_ref().expect("a commit, not a removal");
                if let Err(e) = writer.commit(key, *offset, metadata) {
                    log::warn(format_args!("kafka: cannot commit {key}: {e}"));
                    topics[*t].partitions[*i].error_code = ResponseError::KafkaStorageError.code();
                }
            }
            writer.finish()
        }
    };
    drop(catalog);
    Reply::Later(Box::pin(async move {
        if let Some(synced) = synced
            && synced.wait().await.is_err()
        {
            for topic in &mut topics {
                for p in &mut topic.partitions {
                    if p.error_code == 0 {
                        p.error_code = ResponseError::KafkaStorageError.code();
                    }
                }
            }
        }
        Some(offset_commit_response(topics))
    }))
}

fn offset_commit_response(topics: Vec<OffsetCommitResponseTopic>) -> ResponseKind {
    let mut response = OffsetCommitResponse::default();
    response.topics = topics;
    ResponseKind::OffsetCommit(response)
}

/// The group's committed offsets (-1 for none), of the partitions asked
/// for, or of every topic when the list is null (version 2 and later).
pub fn offset_fetch(ctx: &Arc<Context>, request: OffsetFetchRequest, version: i16) -> Reply {
    let _ = version;
    let broker = &ctx.broker;
    let group_id = request.group_id.0.as_str().to_string();
    let mut response = OffsetFetchResponse::default();
    if let Err(code) = check_group(&group_id) {
        response.error_code = code;
        return Reply::now(ResponseKind::OffsetFetch(response));
    }
    let catalog = broker.catalog();
    let store = broker.store();
    let entry = |index: i32, committed: Option<&Committed>, code: i16| {
        let mut p = OffsetFetchResponsePartition::default();
        p.partition_index = index;
        p.committed_offset = committed.map_or(-1, |c| c.offset as i64);
        p.committed_leader_epoch = -1;
        let metadata = committed.map_or_else(String::new, |c| {
            String::from_utf8_lossy(&c.value).into_owned()
        });
        p.metadata = Some(StrBytes::from_string(metadata));
        p.error_code = code;
        p
    };
    let wanted: Vec<(String, Option<Vec<i32>>)> = match request.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.name.0.as_str().to_string(), Some(t.partition_indexes)))
            .collect(),
        None => catalog.topics().map(|t| (t.name.clone(), None)).collect(),
    };
    for (name, partitions) in wanted {
        let mut out = OffsetFetchResponseTopic::default();
        out.name = TopicName(StrBytes::from_string(name.clone()));
        match catalog.get(&name) {
            None => {
                for index in partitions.unwrap_or_default() {
                    out.partitions.push(entry(
                        index,
                        None,
                        ResponseError::UnknownTopicOrPartition.code(),
                    ));
                }
            }
            Some(topic) => {
                let all = request_all(topic.partitions);
                for index in partitions.unwrap_or(all) {
                    if index < 0 || index as u32 >= topic.partitions {
                        out.partitions.push(entry(
                            index,
                            None,
                            ResponseError::UnknownTopicOrPartition.code(),
                        ));
                        continue;
                    }
                    let key = offset_key(&group_id, topic, index as u32);
                    out.partitions
                        .push(entry(index, store.committed_entry(&key), 0));
                }
            }
        }
        response.topics.push(out);
    }
    Reply::now(ResponseKind::OffsetFetch(response))
}

fn request_all(partitions: u32) -> Vec<i32> {
    (0..partitions as i32).collect()
}
