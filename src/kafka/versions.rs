//! The APIs and versions this broker serves. Each range is what the
//! handlers implement, capped where a later version needs something seglog
//! does not have: Produce and Fetch stop before topic ids replace names
//! (v13), Metadata and OffsetCommit/OffsetFetch before the fields of the
//! new consumer group protocol (KIP-848), FindCoordinator before batched
//! keys (v4), DeleteTopics before topic ids (v6), DescribeCluster before
//! fenced brokers (v2), InitProducerId before transactions version 2 (v5).
//! A client picks the highest version both sides have, so older and newer
//! clients both find one. ApiVersions lists exactly this table, and
//! `connection.rs` dispatches exactly these; any other request is refused
//! (`refusals.rs`) or closes the connection.

use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};

/// (API, lowest version, highest version) served, always.
pub const SERVED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
];

/// What is served besides [`SERVED`] when users are configured (`serve
/// --users`): SASL. SaslHandshake v0 too (bare SASL tokens after it, not
/// SaslAuthenticate): librdkafka before 2.x looks for v0 in ApiVersions
/// before it uses SASL at all (kcat 1.7 does), though it then sends v1.
pub const SASL_SERVED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// Every API and version range served, with SASL's when `sasl`.
fn served(sasl: bool) -> impl Iterator<Item = &'static (ApiKey, i16, i16)> {
    let extra: &[_] = if sasl { SASL_SERVED } else { &[] };
    SERVED.iter().chain(extra)
}

/// Whether `version` of `key` is served (with SASL's APIs when `sasl`).
pub fn is_served(key: ApiKey, version: i16, sasl: bool) -> bool {
    served(sasl).any(|&(k, min, max)| k == key && (min..=max).contains(&version))
}

/// The ApiVersions reply, with `error_code` (0, or UNSUPPORTED_VERSION when
/// the client asked with a version this broker does not have: Kafka then
/// answers in version 0 so that the client can read it and retry lower).
pub fn api_versions(error_code: i16, sasl: bool) -> ApiVersionsResponse {
    let mut response = ApiVersionsResponse::default();
    response.error_code = error_code;
    response.api_keys = served(sasl)
        .map(|&(key, min, max)| {
            let mut version = ApiVersion::default();
            version.api_key = key as i16;
            version.min_version = min;
            version.max_version = max;
            version
        })
        .collect();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_range_is_one_the_codec_has() {
        for &(key, min, max) in served(true) {
            let codec = key.valid_versions();
            assert!(
                min <= max && codec.min <= min && max <= codec.max,
                "{key:?} {min}..={max} vs the codec's {codec}"
            );
        }
    }
}
