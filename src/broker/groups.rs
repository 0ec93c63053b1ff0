//! Consumer group offsets: the offset a group will read next in a
//! partition, kept as a committed offset of the store under a key of its
//! own, so it is durable by the same sync points as the records. Both front
//! ends commit and read them here; the Kafka front end adds the group
//! membership protocol on top (in memory, in `kafka/groups.rs`).

use super::catalog::Topic;
use super::error::{Error, Result};

/// Longest consumer group name, in bytes (Kafka's topic name limit, used
/// here too: a group name is part of each of its offsets' keys).
pub const GROUP_NAME_BYTES_MAX: usize = 249;

/// The store key of a group's committed offset for one partition. The
/// group name is quoted as a JSON string, so no two (group, partition)
/// pairs share a key whatever the name holds.
pub fn offset_key(group: &str, topic: &Topic, partition: u32) -> String {
    let quoted = serde_json::to_string(group).unwrap_or_default();
    format!("group {quoted} {}", topic.key(partition))
}

/// Checks a group name: 1 to [`GROUP_NAME_BYTES_MAX`] bytes, no control
/// characters.
pub fn check_group(group: &str) -> Result<()> {
    if group.is_empty() || group.len() > GROUP_NAME_BYTES_MAX || group.chars().any(char::is_control)
    {
        return Err(Error::Invalid(format!(
            "a group name has 1 to {GROUP_NAME_BYTES_MAX} bytes and no control characters"
        )));
    }
    Ok(())
}
