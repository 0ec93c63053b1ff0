//! Consumer group offsets: the offset a group will read next in a
//! partition, kept as a committed offset of the store under a key of its
//! own, so it is durable by the same sync points as the records. Both front
//! ends commit and read them here; the Kafka front end adds the group
//! membership protocol on top (in memory, in `kafka/groups.rs`). A group
//! exists only through its commits: [`Broker::committed_offsets`] lists
//! them by reading the keys back.

use super::Broker;
use super::catalog::{Topic, parse_key};
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

/// Splits a key made by [`offset_key`] into the group name and the
/// partition's store key; `None` for any other key.
pub fn parse_offset_key(key: &str) -> Option<(String, &str)> {
    let quoted = key.strip_prefix("group ")?;
    let mut names = serde_json::Deserializer::from_str(quoted).into_iter::<String>();
    let group = names.next()?.ok()?;
    let partition_key = quoted.get(names.byte_offset()..)?.strip_prefix(' ')?;
    Some((group, partition_key))
}

/// One committed offset of a consumer group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub group: String,
    pub topic: String,
    pub partition: u32,
    /// The next offset the group will read.
    pub offset: u64,
}

impl Broker {
    /// Every durable committed offset of every group, sorted by group,
    /// topic and partition; `only` keeps one group's. Offsets of a topic
    /// since deleted (they name its old id) are left out. Groups exist only
    /// through their commits, whichever front end made them.
    pub fn committed_offsets(&self, only: Option<&str>) -> Vec<Committed> {
        let catalog = self.catalog();
        let store = self.store();
        let mut found: Vec<Committed> = store
            .committed_offsets()
            .filter_map(|(key, offset)| {
                let (group, partition_key) = parse_offset_key(key)?;
                if only.is_some_and(|only| only != group) {
                    return None;
                }
                let (name, id, partition) = parse_key(partition_key)?;
                let topic = catalog.get(name)?;
                (topic.id == id && partition < topic.partitions).then(|| Committed {
                    group,
                    topic: name.to_string(),
                    partition,
                    offset,
                })
            })
            .collect();
        found.sort_by(|a, b| {
            (&a.group, &a.topic, a.partition).cmp(&(&b.group, &b.topic, b.partition))
        });
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> Topic {
        Topic {
            name: name.into(),
            id: 7,
            partitions: 3,
            retention_ms: None,
            retention_bytes: None,
            created_ms: 0,
        }
    }

    #[test]
    fn an_offset_key_parses_back_whatever_the_group_name_holds() {
        for group in [
            "billing",
            "a \"quoted\" name",
            "with spaces and ünïcode",
            "g\\",
        ] {
            let key = offset_key(group, &topic("orders.v2-x"), 2);
            let (parsed, partition_key) = parse_offset_key(&key).expect("parses");
            assert_eq!(parsed, group);
            assert_eq!(partition_key, "orders.v2-x.7-2");
        }
        assert_eq!(parse_offset_key("orders.7-2"), None);
        assert_eq!(parse_offset_key("group \"unterminated"), None);
        assert_eq!(parse_offset_key("group \"g\"orders.7-2"), None);
    }
}
