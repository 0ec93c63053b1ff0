//! Answers to requests of APIs this broker does not serve (ApiVersions
//! does not list them), where Kafka's protocol has an error for the case,
//! so that a client that sends one anyway gets a reason instead of a
//! closed connection: the transaction APIs get
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED (as InitProducerId does for a
//! transactional id: seglog serves no transactions), the ACL APIs
//! SECURITY_DISABLED (Kafka's answer without an authorizer), and
//! SaslHandshake UNSUPPORTED_SASL_MECHANISM with no mechanism (without
//! `serve --users` the listener has no SASL; with it, `sasl.rs` serves
//! SaslHandshake). Any other unserved request closes the connection, as
//! Kafka does.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::DeleteAclsFilterResult;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnResponse, AddPartitionsToTxnResponse, CreateAclsResponse, DeleteAclsResponse,
    DescribeAclsResponse, EndTxnResponse, ProducerId, RequestKind, ResponseKind,
    SaslHandshakeResponse, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::StrBytes;

/// `count` results, each filled in by `fill`: one per item of a request.
fn each<T: Default>(count: usize, mut fill: impl FnMut(&mut T)) -> Vec<T> {
    (0..count)
        .map(|_| {
            let mut result = T::default();
            fill(&mut result);
            result
        })
        .collect()
}

/// The refusal of `request`, of version `version`, if Kafka's protocol
/// has one; `None`: close the connection.
pub fn refusal(request: RequestKind, version: i16) -> Option<ResponseKind> {
    let no_txn = ResponseError::TransactionalIdAuthorizationFailed.code();
    let no_acl = ResponseError::SecurityDisabled.code();
    let no_acl_message = || Some(StrBytes::from_static_str("seglog has no ACLs"));
    Some(match request {
        RequestKind::AddPartitionsToTxn(r) => {
            let topics = |topics: Vec<
                kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic,
            >| {
                topics
                    .into_iter()
                    .map(|t| {
                        let mut out = AddPartitionsToTxnTopicResult::default();
                        out.name = t.name;
                        out.results_by_partition = t
                            .partitions
                            .into_iter()
                            .map(|p| {
                                let mut result = AddPartitionsToTxnPartitionResult::default();
                                result.partition_index = p;
                                result.partition_error_code = no_txn;
                                result
                            })
                            .collect();
                        out
                    })
                    .collect()
            };
            let mut response = AddPartitionsToTxnResponse::default();
            if version <= 3 {
                response.results_by_topic_v3_and_below = topics(r.v3_and_below_topics);
            } else {
                response.error_code = no_txn;
                response.results_by_transaction = r
                    .transactions
                    .into_iter()
                    .map(|t| {
                        let mut out = AddPartitionsToTxnResult::default();
                        out.transactional_id = t.transactional_id;
                        out.topic_results = topics(t.topics);
                        out
                    })
                    .collect();
            }
            ResponseKind::AddPartitionsToTxn(response)
        }
        RequestKind::AddOffsetsToTxn(_) => {
            let mut response = AddOffsetsToTxnResponse::default();
            response.error_code = no_txn;
            ResponseKind::AddOffsetsToTxn(response)
        }
        RequestKind::EndTxn(_) => {
            let mut response = EndTxnResponse::default();
            response.error_code = no_txn;
            response.producer_id = ProducerId(-1);
            response.producer_epoch = -1;
            ResponseKind::EndTxn(response)
        }
        RequestKind::TxnOffsetCommit(r) => {
            let mut response = TxnOffsetCommitResponse::default();
            response.topics = r
                .topics
                .into_iter()
                .map(|t| {
                    let mut out = TxnOffsetCommitResponseTopic::default();
                    out.name = t.name;
                    out.partitions = t
                        .partitions
                        .into_iter()
                        .map(|p| {
                            let mut result = TxnOffsetCommitResponsePartition::default();
                            result.partition_index = p.partition_index;
                            result.error_code = no_txn;
                            result
                        })
                        .collect();
                    out
                })
                .collect();
            ResponseKind::TxnOffsetCommit(response)
        }
        RequestKind::DescribeAcls(_) => {
            let mut response = DescribeAclsResponse::default();
            response.error_code = no_acl;
            response.error_message = no_acl_message();
            ResponseKind::DescribeAcls(response)
        }
        RequestKind::CreateAcls(r) => {
            let mut response = CreateAclsResponse::default();
            response.results = each(r.creations.len(), |result: &mut AclCreationResult| {
                result.error_code = no_acl;
                result.error_message = no_acl_message();
            });
            ResponseKind::CreateAcls(response)
        }
        RequestKind::DeleteAcls(r) => {
            let mut response = DeleteAclsResponse::default();
            response.filter_results =
                each(r.filters.len(), |result: &mut DeleteAclsFilterResult| {
                    result.error_code = no_acl;
                    result.error_message = no_acl_message();
                });
            ResponseKind::DeleteAcls(response)
        }
        RequestKind::SaslHandshake(_) => {
            let mut response = SaslHandshakeResponse::default();
            response.error_code = ResponseError::UnsupportedSaslMechanism.code();
            ResponseKind::SaslHandshake(response)
        }
        _ => return None,
    })
}
