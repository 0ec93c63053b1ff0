//! The admin APIs of consumer groups: ListGroups, DescribeGroups,
//! DeleteGroups and OffsetDelete. A group is known through its members
//! (the coordinator, in memory) or its commits (the store, durable), as in
//! Kafka; deleting one removes its commits, durable before the reply.

use std::collections::BTreeSet;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    ListGroupsRequest, ListGroupsResponse, OffsetDeleteRequest, OffsetDeleteResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;

use super::Context;
use super::error::code;
use super::groups::{GroupView, subscribed_topics};
use super::reply::Reply;
use crate::broker::groups::{group_keys, groups_with_commits, offset_key};

/// The protocol type of the groups `subscribe()` forms.
const CONSUMER_PROTOCOL: &str = "consumer";

/// ListGroups: every group with members or commits, with its state
/// (Empty for one known by its commits only), filtered by state (version
/// 4 and later) as asked.
pub fn list_groups(ctx: &Arc<Context>, request: ListGroupsRequest) -> Reply {
    let mut listed: Vec<(String, String, &'static str)> = ctx
        .groups
        .views()
        .into_iter()
        .map(|(name, view)| (name, view.protocol_type, view.state))
        .collect();
    let with_members: BTreeSet<String> = listed.iter().map(|(n, _, _)| n.clone()).collect();
    for group in groups_with_commits(&ctx.broker.store()) {
        if !with_members.contains(&group) {
            listed.push((group, CONSUMER_PROTOCOL.to_string(), "Empty"));
        }
    }
    listed.sort();
    let states: Vec<&str> = request.states_filter.iter().map(|s| s.as_str()).collect();
    let mut response = ListGroupsResponse::default();
    response.groups = listed
        .into_iter()
        .filter(|(_, _, state)| states.is_empty() || states.contains(state))
        .map(|(name, protocol_type, state)| {
            let mut group = ListedGroup::default();
            group.group_id = StrBytes::from_string(name).into();
            group.protocol_type = StrBytes::from_string(protocol_type);
            group.group_state = StrBytes::from_static_str(state);
            group.group_type = StrBytes::from_static_str("classic");
            group
        })
        .collect();
    Reply::now(ResponseKind::ListGroups(response))
}

/// DescribeGroups: each group's state, protocol and members; a group known
/// by its commits only is Empty, and one unknown is Dead with no members
/// (Kafka's answer, not an error).
pub fn describe_groups(ctx: &Arc<Context>, request: DescribeGroupsRequest) -> Reply {
    let with_commits = groups_with_commits(&ctx.broker.store());
    let mut response = DescribeGroupsResponse::default();
    for name in request.groups {
        let id = name.0.as_str().to_string();
        let mut group = DescribedGroup::default();
        group.group_id = name;
        group.authorized_operations = i32::MIN;
        match ctx.groups.view(&id) {
            Some(GroupView {
                state,
                protocol_type,
                protocol,
                members,
            }) => {
                group.group_state = StrBytes::from_static_str(state);
                group.protocol_type = StrBytes::from_string(protocol_type);
                group.protocol_data = StrBytes::from_string(protocol);
                group.members = members
                    .into_iter()
                    .map(|m| {
                        let mut member = DescribedGroupMember::default();
                        member.member_id = StrBytes::from_string(m.member_id);
                        member.client_id = StrBytes::from_string(m.client_id);
                        member.client_host = StrBytes::from_static_str("");
                        member.member_metadata = m.metadata;
                        member.member_assignment = m.assignment;
                        member
                    })
                    .collect();
            }
            None if with_commits.contains(&id) => {
                group.group_state = StrBytes::from_static_str("Empty");
                group.protocol_type = StrBytes::from_static_str(CONSUMER_PROTOCOL);
            }
            None => group.group_state = StrBytes::from_static_str("Dead"),
        }
        response.groups.push(group);
    }
    Reply::now(ResponseKind::DescribeGroups(response))
}

/// DeleteGroups: a group without members loses its commits (durable
/// before the reply); one with members gets NON_EMPTY_GROUP, one unknown
/// GROUP_ID_NOT_FOUND.
pub fn delete_groups(ctx: &Arc<Context>, request: DeleteGroupsRequest) -> Reply {
    let mut results = Vec::with_capacity(request.groups_names.len());
    let mut writer = ctx.broker.writer();
    for name in request.groups_names {
        let id = name.0.as_str().to_string();
        let mut result = DeletableGroupResult::default();
        result.group_id = name;
        result.error_code = match &mut writer {
            Err(e) => code(e),
            Ok(writer) => {
                let keys = group_keys(writer.store(), &id);
                let known = ctx.groups.view(&id).is_some() || !keys.is_empty();
                if !known {
                    ResponseError::GroupIdNotFound.code()
                } else if !ctx.groups.forget_if_empty(&id) {
                    ResponseError::NonEmptyGroup.code()
                } else {
                    keys.iter()
                        .try_for_each(|key| writer.change(key, None))
                        .map_or_else(|e| code(&e), |()| 0)
                }
            }
        };
        results.push(result);
    }
    let synced = writer.ok().and_then(crate::broker::Writer::finish);
    Reply::Later(Box::pin(async move {
        if let Some(synced) = synced
            && let Err(e) = synced.wait().await
        {
            for result in results.iter_mut().filter(|r| r.error_code == 0) {
                result.error_code = code(&e);
            }
        }
        let mut response = DeleteGroupsResponse::default();
        response.results = results;
        Some(ResponseKind::DeleteGroups(response))
    }))
}

/// OffsetDelete: removes a group's commits of the partitions given
/// (durable before the reply); a partition of a topic a member of the
/// group subscribes to gets GROUP_SUBSCRIBED_TO_TOPIC and keeps its commit.
pub fn offset_delete(ctx: &Arc<Context>, request: OffsetDeleteRequest) -> Reply {
    let group_id = request.group_id.0.as_str().to_string();
    let mut response = OffsetDeleteResponse::default();
    let view = ctx.groups.view(&group_id);
    let subscribed: BTreeSet<String> = view
        .iter()
        .filter(|v| v.protocol_type == CONSUMER_PROTOCOL)
        .flat_map(|v| {
            v.members
                .iter()
                .flat_map(|m| subscribed_topics(&m.metadata))
        })
        .collect();
    // Catalog first, then the store: the broker's lock order.
    let catalog = ctx.broker.catalog();
    let mut writer = match ctx.broker.writer() {
        Ok(writer) => writer,
        Err(e) => {
            response.error_code = code(&e);
            return Reply::now(ResponseKind::OffsetDelete(response));
        }
    };
    if view.is_none() && group_keys(writer.store(), &group_id).is_empty() {
        response.error_code = ResponseError::GroupIdNotFound.code();
        return Reply::now(ResponseKind::OffsetDelete(response));
    }
    for topic in request.topics {
        let name = topic.name.0.as_str().to_string();
        let found = catalog.get(&name).cloned();
        let mut out = OffsetDeleteResponseTopic::default();
        out.name = topic.name;
        for p in topic.partitions {
            let mut entry = OffsetDeleteResponsePartition::default();
            entry.partition_index = p.partition_index;
            entry.error_code = match &found {
                Some(t) if (0..t.partitions as i64).contains(&i64::from(p.partition_index)) => {
                    if subscribed.contains(&name) {
                        ResponseError::GroupSubscribedToTopic.code()
                    } else {
                        let key = offset_key(&group_id, t, p.partition_index as u32);
                        writer.change(&key, None).map_or_else(|e| code(&e), |()| 0)
                    }
                }
                _ => ResponseError::UnknownTopicOrPartition.code(),
            };
            out.partitions.push(entry);
        }
        response.topics.push(out);
    }
    let synced = writer.finish();
    drop(catalog);
    Reply::Later(Box::pin(async move {
        if let Some(synced) = synced
            && let Err(e) = synced.wait().await
        {
            response.error_code = code(&e);
        }
        Some(ResponseKind::OffsetDelete(response))
    }))
}
