//! Topic prefixes on Kafka requests ([`crate::auth::access`]): before a
//! request reaches its handler, the topics its user may not touch are
//! taken out of it; once the handler has answered the rest, they are put
//! back into the reply with TOPIC_AUTHORIZATION_FAILED (29), as Kafka
//! answers them. The handlers never see a topic they must not serve, so
//! nothing of it is read or written.
//!
//! Reading: Fetch, ListOffsets, OffsetCommit, OffsetFetch, OffsetDelete,
//! DescribeConfigs. Writing: Produce, CreateTopics, DeleteTopics,
//! CreatePartitions, DeleteRecords, AlterConfigs, IncrementalAlterConfigs.
//! Metadata lists the topics a user may read or write; one it may read
//! but not write is not created on first use. Consumer groups themselves
//! are not restricted (JoinGroup, ListGroups, DeleteGroups, ...).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalResourceResponse;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{RequestKind, ResponseKind, TopicName};

use super::Context;
use crate::auth::Access;

/// What puts the refused topics back into the handler's reply.
pub type Denied = Box<dyn FnOnce(&mut ResponseKind) + Send>;

/// Kafka's resource type of a topic in the config APIs.
const RESOURCE_TOPIC: i8 = 2;

/// The request without the topics `access` rules out, and what puts them
/// back into the reply; `None` when nothing was taken out.
pub fn guard(
    ctx: &Context,
    access: &Access,
    request: RequestKind,
) -> (RequestKind, Option<Denied>) {
    if access.is_unlimited() {
        return (request, None);
    }
    let read = |name: &TopicName| access.may_read(name.0.as_str());
    let write = |name: &TopicName| access.may_write(name.0.as_str());
    let denied = ResponseError::TopicAuthorizationFailed.code();
    match request {
        RequestKind::Produce(mut r) => {
            let out = refused(
                take(&mut r.topic_data, |t| write(&t.name)),
                |t| (t.name, t.partition_data),
                |p| {
                    PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_error_code(denied)
                        .with_base_offset(-1)
                        .with_log_start_offset(-1)
                },
                |name, parts| {
                    TopicProduceResponse::default()
                        .with_name(name)
                        .with_partition_responses(parts)
                },
            );
            then(RequestKind::Produce(r), out, |response, out| {
                if let ResponseKind::Produce(response) = response {
                    response.responses.extend(out);
                }
            })
        }
        RequestKind::Fetch(mut r) => {
            let out = refused(
                take(&mut r.topics, |t| read(&t.topic)),
                |t| (t.topic, t.partitions),
                |p| {
                    PartitionData::default()
                        .with_partition_index(p.partition)
                        .with_error_code(denied)
                        .with_high_watermark(-1)
                        .with_last_stable_offset(-1)
                        .with_log_start_offset(-1)
                        .with_records(Some(bytes::Bytes::new()))
                },
                |name, parts| {
                    FetchableTopicResponse::default()
                        .with_topic(name)
                        .with_partitions(parts)
                },
            );
            then(RequestKind::Fetch(r), out, |response, out| {
                if let ResponseKind::Fetch(response) = response {
                    response.responses.extend(out);
                }
            })
        }
        RequestKind::ListOffsets(mut r) => {
            let out = refused(
                take(&mut r.topics, |t| read(&t.name)),
                |t| (t.name, t.partitions),
                |p| {
                    ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(denied)
                        .with_offset(-1)
                        .with_timestamp(-1)
                },
                |name, parts| {
                    ListOffsetsTopicResponse::default()
                        .with_name(name)
                        .with_partitions(parts)
                },
            );
            then(RequestKind::ListOffsets(r), out, |response, out| {
                if let ResponseKind::ListOffsets(response) = response {
                    response.topics.extend(out);
                }
            })
        }
        RequestKind::Metadata(mut r) => {
            let Some(topics) = r.topics.as_mut() else {
                // Every topic: the reply keeps those the user may see.
                let access = access.clone();
                let filter: Denied = Box::new(move |response| {
                    if let ResponseKind::Metadata(response) = response {
                        response.topics.retain(|t| {
                            t.name
                                .as_ref()
                                .is_some_and(|n| access.may_see(n.0.as_str()))
                        });
                    }
                });
                return (RequestKind::Metadata(r), Some(filter));
            };
            let catalog = ctx.broker.catalog();
            let mut out = Vec::new();
            topics.retain(|t| {
                let Some(name) = &t.name else { return true };
                let code = if !access.may_see(name.0.as_str()) {
                    denied
                } else if !write(name) && catalog.get(name.0.as_str()).is_none() {
                    // Not created on first use by a user who may not write it.
                    ResponseError::UnknownTopicOrPartition.code()
                } else {
                    return true;
                };
                out.push(
                    MetadataResponseTopic::default()
                        .with_name(Some(name.clone()))
                        .with_error_code(code),
                );
                false
            });
            drop(catalog);
            // Always filtered too: in version 0 an empty list asks for every
            // topic, also once the refused ones were taken out of it.
            let access = access.clone();
            let filter: Denied = Box::new(move |response| {
                if let ResponseKind::Metadata(response) = response {
                    response.topics.retain(|t| {
                        t.name
                            .as_ref()
                            .is_some_and(|n| access.may_see(n.0.as_str()))
                    });
                    response.topics.extend(out);
                }
            });
            (RequestKind::Metadata(r), Some(filter))
        }
        RequestKind::CreateTopics(mut r) => {
            let out: Vec<_> = take(&mut r.topics, |t| write(&t.name))
                .into_iter()
                .map(|t| {
                    CreatableTopicResult::default()
                        .with_name(t.name)
                        .with_error_code(denied)
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                })
                .collect();
            then(RequestKind::CreateTopics(r), out, |response, out| {
                if let ResponseKind::CreateTopics(response) = response {
                    response.topics.extend(out);
                }
            })
        }
        RequestKind::DeleteTopics(mut r) => {
            // Versions 1-5 (those served) name topics in `topic_names`.
            let out: Vec<_> = take(&mut r.topic_names, |name| write(name))
                .into_iter()
                .map(|name| {
                    DeletableTopicResult::default()
                        .with_name(Some(name))
                        .with_error_code(denied)
                })
                .collect();
            then(RequestKind::DeleteTopics(r), out, |response, out| {
                if let ResponseKind::DeleteTopics(response) = response {
                    response.responses.extend(out);
                }
            })
        }
        RequestKind::CreatePartitions(mut r) => {
            let out: Vec<_> = take(&mut r.topics, |t| write(&t.name))
                .into_iter()
                .map(|t| {
                    CreatePartitionsTopicResult::default()
                        .with_name(t.name)
                        .with_error_code(denied)
                })
                .collect();
            then(RequestKind::CreatePartitions(r), out, |response, out| {
                if let ResponseKind::CreatePartitions(response) = response {
                    response.results.extend(out);
                }
            })
        }
        RequestKind::DeleteRecords(mut r) => {
            let out = refused(
                take(&mut r.topics, |t| write(&t.name)),
                |t| (t.name, t.partitions),
                |p| {
                    DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(denied)
                        .with_low_watermark(-1)
                },
                |name, parts| {
                    DeleteRecordsTopicResult::default()
                        .with_name(name)
                        .with_partitions(parts)
                },
            );
            then(RequestKind::DeleteRecords(r), out, |response, out| {
                if let ResponseKind::DeleteRecords(response) = response {
                    response.topics.extend(out);
                }
            })
        }
        RequestKind::OffsetCommit(mut r) => {
            let out = refused(
                take(&mut r.topics, |t| read(&t.name)),
                |t| (t.name, t.partitions),
                |p| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(denied)
                },
                |name, parts| {
                    OffsetCommitResponseTopic::default()
                        .with_name(name)
                        .with_partitions(parts)
                },
            );
            then(RequestKind::OffsetCommit(r), out, |response, out| {
                if let ResponseKind::OffsetCommit(response) = response {
                    response.topics.extend(out);
                }
            })
        }
        RequestKind::OffsetFetch(mut r) => {
            // Versions 1-7 (those served) ask for one group's `topics`.
            let Some(topics) = r.topics.as_mut() else {
                let access = access.clone();
                let filter: Denied = Box::new(move |response| {
                    if let ResponseKind::OffsetFetch(response) = response {
                        response
                            .topics
                            .retain(|t| access.may_read(t.name.0.as_str()));
                    }
                });
                return (RequestKind::OffsetFetch(r), Some(filter));
            };
            let out = refused(
                take(topics, |t| read(&t.name)),
                |t| (t.name, t.partition_indexes),
                |index| {
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(index)
                        .with_committed_offset(-1)
                        .with_error_code(denied)
                },
                |name, parts| {
                    OffsetFetchResponseTopic::default()
                        .with_name(name)
                        .with_partitions(parts)
                },
            );
            then(RequestKind::OffsetFetch(r), out, |response, out| {
                if let ResponseKind::OffsetFetch(response) = response {
                    response.topics.extend(out);
                }
            })
        }
        RequestKind::OffsetDelete(mut r) => {
            let out = refused(
                take(&mut r.topics, |t| read(&t.name)),
                |t| (t.name, t.partitions),
                |p| {
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(denied)
                },
                |name, parts| {
                    OffsetDeleteResponseTopic::default()
                        .with_name(name)
                        .with_partitions(parts)
                },
            );
            then(RequestKind::OffsetDelete(r), out, |response, out| {
                if let ResponseKind::OffsetDelete(response) = response {
                    response.topics.extend(out);
                }
            })
        }
        RequestKind::DescribeConfigs(mut r) => {
            let out: Vec<_> = take(&mut r.resources, |c| {
                c.resource_type != RESOURCE_TOPIC || access.may_read(c.resource_name.as_str())
            })
            .into_iter()
            .map(|c| {
                DescribeConfigsResult::default()
                    .with_resource_type(c.resource_type)
                    .with_resource_name(c.resource_name)
                    .with_error_code(denied)
            })
            .collect();
            then(RequestKind::DescribeConfigs(r), out, |response, out| {
                if let ResponseKind::DescribeConfigs(response) = response {
                    response.results.extend(out);
                }
            })
        }
        RequestKind::AlterConfigs(mut r) => {
            let out: Vec<_> = take(&mut r.resources, |c| {
                c.resource_type != RESOURCE_TOPIC || access.may_write(c.resource_name.as_str())
            })
            .into_iter()
            .map(|c| {
                AlterConfigsResourceResponse::default()
                    .with_resource_type(c.resource_type)
                    .with_resource_name(c.resource_name)
                    .with_error_code(denied)
            })
            .collect();
            then(RequestKind::AlterConfigs(r), out, |response, out| {
                if let ResponseKind::AlterConfigs(response) = response {
                    response.responses.extend(out);
                }
            })
        }
        RequestKind::IncrementalAlterConfigs(mut r) => {
            let out: Vec<_> = take(&mut r.resources, |c| {
                c.resource_type != RESOURCE_TOPIC || access.may_write(c.resource_name.as_str())
            })
            .into_iter()
            .map(|c| {
                IncrementalResourceResponse::default()
                    .with_resource_type(c.resource_type)
                    .with_resource_name(c.resource_name)
                    .with_error_code(denied)
            })
            .collect();
            then(
                RequestKind::IncrementalAlterConfigs(r),
                out,
                |response, out| {
                    if let ResponseKind::IncrementalAlterConfigs(response) = response {
                        response.responses.extend(out);
                    }
                },
            )
        }
        other => (other, None),
    }
}

/// The replies of refused topics: for each, `topic` of its name and the
/// results `partition` makes of its partitions (`parts` splits a topic of
/// the request into its name and partitions).
fn refused<T, P, R, O>(
    topics: Vec<T>,
    parts: impl Fn(T) -> (TopicName, Vec<P>),
    partition: impl Fn(P) -> R,
    topic: impl Fn(TopicName, Vec<R>) -> O,
) -> Vec<O> {
    topics
        .into_iter()
        .map(|t| {
            let (name, partitions) = parts(t);
            topic(name, partitions.into_iter().map(&partition).collect())
        })
        .collect()
}

/// Takes the items `keep` refuses out of `items`, in order.
fn take<T>(items: &mut Vec<T>, mut keep: impl FnMut(&T) -> bool) -> Vec<T> {
    let (kept, out) = std::mem::take(items)
        .into_iter()
        .partition(|item| keep(item));
    *items = kept;
    out
}

/// The request, and (if anything was taken out) `merge` of the refused
/// results into the reply.
fn then<T: Send + 'static>(
    request: RequestKind,
    out: Vec<T>,
    merge: impl FnOnce(&mut ResponseKind, Vec<T>) + Send + 'static,
) -> (RequestKind, Option<Denied>) {
    if out.is_empty() {
        return (request, None);
    }
    (
        request,
        Some(Box::new(move |response| merge(response, out))),
    )
}
