//! Consumer group offsets: the offset a group will read next in a
//! partition, kept as a committed offset of the store under a key of its
//! own, with the commit's metadata string as its value, so it is durable by
//! the same sync points as the records. A commit stores the offset given,
//! lower ones included, as Kafka does (a consumer that seeks back commits
//! where it is); only the Maelstrom node keeps its offsets moving forward. Both front
//! ends commit and read them here; the Kafka front end adds the group
//! membership protocol on top (in memory, in `kafka/groups.rs`). A group
//! exists only through its commits: [`Broker::committed_offsets`] lists
//! them by reading the keys back, and [`Broker::group_lags`] puts them
//! beside each partition's end.

use std::collections::{BTreeMap, HashMap};

use super::Broker;
use super::catalog::{Topic, parse_key};
use super::error::{Error, Result};
use crate::storage::store::Store;

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

/// Longest commit metadata string, in bytes: what the store keeps beside a
/// commit, Kafka's default `offset.metadata.max.bytes`.
pub const METADATA_BYTES_MAX: usize = crate::storage::offsets::COMMIT_VALUE_BYTES_MAX;

/// Checks a commit's metadata string: at most [`METADATA_BYTES_MAX`] bytes.
pub fn check_metadata(metadata: &str) -> Result<()> {
    if metadata.len() > METADATA_BYTES_MAX {
        return Err(Error::TooLarge(format!(
            "commit metadata of {} bytes, over the limit of {METADATA_BYTES_MAX}",
            metadata.len()
        )));
    }
    Ok(())
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

/// One partition of a group's topics, beside the group's commit in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: u32,
    /// The group's committed offset (the next it reads); `None` where the
    /// group has committed nothing in this partition of a topic it reads.
    pub committed: Option<u64>,
    pub log_start: u64,
    pub end: u64,
    /// Records the group has still to read: `end - committed` (0 for a
    /// commit at or past the end); for a partition without a commit, every
    /// record it holds, since a consumer of the group starts at the log
    /// start there (`seglog consume --group` does, as a Kafka client with
    /// `auto.offset.reset=earliest`).
    pub lag: u64,
}

impl PartitionLag {
    /// Sets the partition's log start and end, read elsewhere (at a
    /// replica, by a node of a cluster that holds none), and the lag from
    /// them.
    pub fn set_offsets(&mut self, log_start: u64, end: u64) {
        self.log_start = log_start;
        self.end = end;
        self.lag = lag(self.committed, log_start, end);
    }
}

/// Records a group has still to read in a partition: see [`PartitionLag::lag`].
fn lag(committed: Option<u64>, log_start: u64, end: u64) -> u64 {
    end.saturating_sub(committed.unwrap_or(log_start))
}

/// A group's lag over every partition of the topics it has committed in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupLag {
    pub group: String,
    /// Sorted by topic and partition.
    pub partitions: Vec<PartitionLag>,
    /// The sum of the partitions' lags.
    pub lag: u64,
}

/// The prefix of every store key of `group`'s commits.
fn group_prefix(group: &str) -> String {
    format!(
        "group {} ",
        serde_json::to_string(group).unwrap_or_default()
    )
}

/// Every store key of `group`'s commits, durable or not (pending, or in a
/// sync point in flight), those of topics since deleted included: what
/// deleting the group removes, so a commit just made does not outlive it.
pub fn group_keys(store: &Store, group: &str) -> Vec<String> {
    let prefix = group_prefix(group);
    store
        .committed_latest_keys()
        .filter(|key| key.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// Every group with a durable commit (of a topic since deleted too).
pub fn groups_with_commits(store: &Store) -> std::collections::BTreeSet<String> {
    store
        .committed_offsets()
        .filter_map(|(key, _)| parse_offset_key(key).map(|(group, _)| group))
        .collect()
}

impl Broker {
    /// Every durable committed offset of every group, sorted by group,
    /// topic and partition; `only` keeps one group's. Offsets of a topic
    /// since deleted (they name its old id) are left out. Groups exist only
    /// through their commits, whichever front end made them.
    ///
    /// The store's lock is held for one pass over its committed offsets
    /// that copies the keys of groups (of `only`, by the key's prefix),
    /// nothing more: the keys are parsed and checked against the catalog
    /// after it is released.
    pub fn committed_offsets(&self, only: Option<&str>) -> Vec<Committed> {
        let prefix = match only {
            Some(group) => group_prefix(group),
            None => "group ".to_string(),
        };
        let copied: Vec<(String, u64)> = self
            .store()
            .committed_offsets()
            .filter(|(key, _)| key.starts_with(&prefix))
            .map(|(key, offset)| (key.to_string(), offset))
            .collect();
        let catalog = self.catalog();
        let mut found: Vec<Committed> = copied
            .iter()
            .filter_map(|(key, offset)| {
                let (group, partition_key) = parse_offset_key(key)?;
                let (name, id, partition) = parse_key(partition_key)?;
                let topic = catalog.get(name)?;
                (topic.id == id && partition < topic.partitions).then(|| Committed {
                    group,
                    topic: name.to_string(),
                    partition,
                    offset: *offset,
                })
            })
            .collect();
        found.sort_by(|a, b| {
            (&a.group, &a.topic, a.partition).cmp(&(&b.group, &b.topic, b.partition))
        });
        found
    }

    /// Each group's lag (of `only`, or of every group), in one pass over
    /// the commits: every partition of each topic a group committed in,
    /// with its commit if any, its log start and end. Each partition's
    /// offsets are read once, under a hold of the store's lock of its own,
    /// however many groups read it. Sorted by group.
    pub fn group_lags(&self, only: Option<&str>) -> Result<Vec<GroupLag>> {
        let mut groups: BTreeMap<String, BTreeMap<(String, u32), u64>> = BTreeMap::new();
        for c in self.committed_offsets(only) {
            groups
                .entry(c.group)
                .or_default()
                .insert((c.topic, c.partition), c.offset);
        }
        let mut offsets: HashMap<(String, u32), (u64, u64)> = HashMap::new();
        let mut lags = Vec::with_capacity(groups.len());
        for (group, commits) in groups {
            let mut topics: Vec<&str> = commits.keys().map(|(t, _)| t.as_str()).collect();
            topics.dedup();
            let mut partitions = Vec::new();
            for name in topics {
                // Listed from the catalog a moment ago; a topic deleted
                // since drops out rather than failing the whole reply.
                let Some(topic) = self.catalog().get(name).cloned() else {
                    continue;
                };
                for partition in 0..topic.partitions {
                    let at = (topic.name.clone(), partition);
                    let (log_start, end) = match offsets.get(&at) {
                        Some(known) => *known,
                        None => {
                            let read = self.partition_offsets(&topic.key(partition))?;
                            offsets.insert(at.clone(), read);
                            read
                        }
                    };
                    let committed = commits.get(&at).copied();
                    partitions.push(PartitionLag {
                        lag: lag(committed, log_start, end),
                        topic: at.0,
                        partition,
                        committed,
                        log_start,
                        end,
                    });
                }
            }
            lags.push(GroupLag {
                lag: partitions.iter().map(|p| p.lag).sum(),
                group,
                partitions,
            });
        }
        Ok(lags)
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

    /// An unchanged commit (offset and metadata as the latest, durable)
    /// writes nothing and needs no sync point; new metadata or another
    /// offset is a change.
    #[test]
    fn an_unchanged_commit_costs_no_sync_point() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("store"), Default::default()).expect("store");
        let catalog = crate::broker::catalog::Catalog::open(dir.path()).expect("catalog");
        let broker = crate::broker::test_broker(store, catalog);
        let key = offset_key("g", &topic("a"), 0);
        let commit = |offset, metadata| {
            let mut writer = broker.writer().expect("writer");
            writer.commit(&key, offset, metadata).expect("commit");
            writer.finish()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let wait = |durable: Option<crate::broker::Durable>| {
            runtime
                .block_on(durable.expect("a change waits for a sync point").wait())
                .expect("durable");
        };
        wait(commit(5, "m"));
        let sync_points = broker.sync_points().borrow().to_owned();
        assert!(commit(5, "m").is_none(), "unchanged: nothing to wait for");
        assert_eq!(*broker.sync_points().borrow(), sync_points);
        wait(commit(5, "other"));
        wait(commit(4, "other"));
        assert_eq!(
            broker.store().committed_entry(&key).map(|c| c.offset),
            Some(4)
        );
    }

    /// Deleting a group removes its commits not yet durable too: one
    /// pending, one in a sync point in flight.
    #[test]
    fn a_groups_keys_include_commits_not_yet_durable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = Store::open(dir.path(), Default::default()).expect("store");
        let (durable, in_flight, pending) = (
            offset_key("g", &topic("a"), 0),
            offset_key("g", &topic("a"), 1),
            offset_key("g", &topic("a"), 2),
        );
        let commit = |offset| {
            Some(crate::storage::offsets::Committed {
                offset,
                value: Vec::new(),
            })
        };
        store.change_committed(&durable, commit(1)).expect("commit");
        store.sync().expect("sync");
        store
            .change_committed(&in_flight, commit(2))
            .expect("commit");
        let plan = store.prepare_sync().expect("prepare");
        store.change_committed(&pending, commit(3)).expect("commit");
        store
            .change_committed(&offset_key("other", &topic("a"), 0), commit(4))
            .expect("commit");
        let mut keys = group_keys(&store, "g");
        keys.sort();
        assert_eq!(keys, [durable, in_flight, pending]);
        let executed = plan.execute();
        store.complete_sync(plan, executed).expect("complete");
    }
}
