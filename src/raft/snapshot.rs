//! A group's snapshot: the records and committed offsets of its keys, and
//! which keys are its ([`Keys`]). In the Maelstrom node a key belongs to
//! the group its name hashes to (FNV-1a, 64 bits, modulo the number of
//! groups): fixed by the key alone, so every node agrees without asking.
//! A group that holds other keys (a partition's) is given its own rule.
//!
//! The encoding is JSON: `{"keys":[{"key":K,"start":S,"msgs":[M,...]}],
//! "commits":[[K,O],...],"values":[[K,O,V],...]}`: each message the text
//! the store holds when it is UTF-8 (the Maelstrom node's and HTTP's JSON),
//! else `{"b64":B}` (a Kafka record's bytes, base64); `values` the commits
//! that keep bytes beside their offset (an idempotent producer's state),
//! the value in base64.

use serde::{Deserialize, Serialize};

use super::log::RESERVED_KEY_PREFIX;
use super::types::Bytes64;
use crate::storage::error::{Error, Result};
use crate::storage::keyname::fnv1a64;
use crate::storage::offsets::Committed;
use crate::storage::store::Store;

/// The group a client key belongs to, of `groups`.
pub fn group_of(key: &str, groups: u32) -> u32 {
    (fnv1a64(key.as_bytes()) % u64::from(groups.max(1))) as u32
}

/// Whether `key` is one the Raft groups keep for themselves.
pub fn is_reserved(key: &str) -> bool {
    key.starts_with(RESERVED_KEY_PREFIX)
}

/// Which client keys a group's state machine holds: those its snapshots
/// carry, an installed snapshot replaces, and removing the group deletes.
/// A rule on the key's name alone, the same on every node, so that every
/// replica agrees on a group's keys without asking. Never a reserved key.
#[derive(Clone)]
pub struct Keys(std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl Keys {
    /// The keys that hash to `group` of `groups` (the Maelstrom node).
    pub fn hashed(group: u32, groups: u32) -> Keys {
        Keys::matching(move |key| group_of(key, groups) == group)
    }

    /// The keys `rule` accepts (a partition group: its partition's log
    /// and the state kept beside it).
    pub fn matching(rule: impl Fn(&str) -> bool + Send + Sync + 'static) -> Keys {
        Keys(std::sync::Arc::new(rule))
    }

    /// Whether the group holds `key`.
    pub fn holds(&self, key: &str) -> bool {
        !is_reserved(key) && (self.0)(key)
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

/// One key's records in a snapshot.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct KeyRecords {
    pub key: String,
    /// The offset of the first message.
    pub start: u64,
    /// The messages from `start` on, as the store holds them.
    pub msgs: Vec<Message>,
    /// Where the messages end: the key's next offset when planned.
    #[serde(skip)]
    end: u64,
}

/// One message of a snapshot: its bytes, which travel as a JSON string
/// when they are UTF-8 and as `{"b64": ...}` otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message(pub Vec<u8>);

/// How a [`Message`] is written in the JSON.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum MessageForm<'a> {
    Text(std::borrow::Cow<'a, str>),
    Bytes { b64: Bytes64 },
}

impl Serialize for Message {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => MessageForm::Text(text.into()).serialize(serializer),
            Err(_) => MessageForm::Bytes {
                b64: Bytes64(self.0.clone()),
            }
            .serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        Ok(Message(match MessageForm::deserialize(deserializer)? {
            MessageForm::Text(text) => text.into_owned().into_bytes(),
            MessageForm::Bytes { b64 } => b64.0,
        }))
    }
}

/// What a snapshot holds.
#[derive(Serialize, Deserialize, Debug, Default, PartialEq, Eq)]
pub struct SnapshotData {
    pub keys: Vec<KeyRecords>,
    /// The committed offsets of its keys that keep no value.
    pub commits: Vec<(String, u64)>,
    /// The commits of its keys that keep a value beside the offset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<(String, u64, Bytes64)>,
}

impl SnapshotData {
    /// The group's keys and where each ends now, appends not yet durable
    /// included: the records a snapshot of the state as of now holds, to be
    /// read by [`SnapshotData::read`] once they are durable.
    pub fn plan(store: &mut Store, held: &Keys) -> Result<SnapshotData> {
        let mut keys = Vec::new();
        for key in store.keys()? {
            if !held.holds(&key) {
                continue;
            }
            let start = store.log_start(&key)?;
            let end = store.next_offset(&key)?;
            keys.push(KeyRecords {
                key,
                start,
                msgs: Vec::new(),
                end,
            });
        }
        Ok(SnapshotData {
            keys,
            commits: Vec::new(),
            values: Vec::new(),
        })
    }

    /// Reads the planned records, which must all be durable by now, and the
    /// group's committed offsets.
    pub fn read(&mut self, store: &mut Store) -> Result<()> {
        for key in &mut self.keys {
            let (start, end) = (key.start, key.end);
            let msgs = &mut key.msgs;
            store.read(&key.key, start, &mut |offset, payload| {
                if offset >= end {
                    return false;
                }
                msgs.push(Message(payload.to_vec()));
                true
            })?;
            if start + msgs.len() as u64 != end {
                return Err(Error::Busy(format!(
                    "{} holds {} durable records from {start}, not up to {end}",
                    key.key,
                    msgs.len()
                )));
            }
        }
        Ok(())
    }

    /// Adds the group's keys' commits, with their values, as the state
    /// machine holds them now (changes not yet durable included): called
    /// where the snapshot is planned, under the same hold of the store, so
    /// that no commit from an entry past the snapshot's gets in (an
    /// idempotent producer's state from after it would make a replica that
    /// installs it refuse the next batch as a duplicate). They are durable
    /// once the records are.
    pub fn read_commits(&mut self, store: &Store, held: &Keys) {
        self.commits.clear();
        self.values.clear();
        for key in store.committed_latest_keys() {
            if !held.holds(key) {
                continue;
            }
            let Some(committed) = store.committed_latest(key) else {
                continue;
            };
            if committed.value.is_empty() {
                self.commits.push((key.to_string(), committed.offset));
            } else {
                self.values.push((
                    key.to_string(),
                    committed.offset,
                    Bytes64(committed.value.clone()),
                ));
            }
        }
        self.commits.sort();
        self.values.sort_by(|a, b| a.0.cmp(&b.0));
    }

    pub fn encode(&self) -> Vec<u8> {
        // Strings and numbers always encode.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> std::result::Result<SnapshotData, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("a snapshot that does not decode: {e}"))
    }

    /// Brings the group's keys in `store` up to the snapshot: each key gets
    /// the records it lacks (its log is a prefix of the snapshot's, since
    /// both come from applying one log in order), and the committed
    /// offsets. A key holding more than the snapshot, or one the snapshot
    /// lacks that holds records, is an inconsistency: refused.
    pub fn install(
        &self,
        store: &mut Store,
        group: u32,
        held: &Keys,
    ) -> std::result::Result<(), String> {
        let fail = |e: Error| e.to_string();
        let mut named = std::collections::HashSet::new();
        for key in &self.keys {
            if !held.holds(&key.key) {
                return Err(format!(
                    "the snapshot of group {group} holds key {:?} of another",
                    key.key
                ));
            }
            named.insert(key.key.as_str());
            let next = store.next_offset(&key.key).map_err(fail)?;
            let end = key.start + key.msgs.len() as u64;
            if next > end {
                return Err(format!(
                    "{} holds records up to {next} here, past the snapshot's {end}",
                    key.key
                ));
            }
            if next < key.start {
                return Err(format!(
                    "{} ends at {next} here, before the snapshot's first record {}",
                    key.key, key.start
                ));
            }
            for (i, msg) in key
                .msgs
                .iter()
                .enumerate()
                .skip((next - key.start) as usize)
            {
                store
                    .append_at(&key.key, key.start + i as u64, &msg.0)
                    .map_err(fail)?;
            }
        }
        for key in store.keys().map_err(fail)? {
            if held.holds(&key)
                && !named.contains(key.as_str())
                && store.next_offset(&key).map_err(fail)? > 0
            {
                return Err(format!(
                    "{key} holds records the snapshot of group {group} lacks"
                ));
            }
        }
        // The commits become the snapshot's, as given (a consumer group's
        // may have gone back), and those of the group's keys it lacks go.
        let commits = self
            .commits
            .iter()
            .map(|(key, offset)| (key, *offset, Vec::new()))
            .chain(
                self.values
                    .iter()
                    .map(|(key, offset, value)| (key, *offset, value.0.clone())),
            );
        let mut given = std::collections::HashSet::new();
        for (key, offset, value) in commits {
            if !held.holds(key) {
                return Err(format!(
                    "the snapshot of group {group} holds the commit of {key:?}, another's"
                ));
            }
            given.insert(key.as_str());
            store
                .change_committed(key, Some(Committed { offset, value }))
                .map_err(fail)?;
        }
        let stale: Vec<String> = store
            .committed_latest_keys()
            .filter(|key| held.holds(key) && !given.contains(key))
            .map(str::to_string)
            .collect();
        for key in stale {
            store.change_committed(&key, None).map_err(fail)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::store::StoreConfig;

    fn records(store: &mut Store, key: &str) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        store
            .read(key, 0, &mut |_, payload| {
                out.push(payload.to_vec());
                true
            })
            .expect("a read");
        out
    }

    /// A partition's snapshot carries records that are not text (Kafka's)
    /// and commits that keep a value (a producer's state), and installs
    /// both byte for byte on an empty replica.
    #[test]
    fn binary_records_and_committed_values_survive_a_snapshot() {
        let held = Keys::matching(|key| key.ends_with("t.0"));
        let binary: &[u8] = &[0, 159, 146, 150, 255];
        let dir = tempfile::tempdir().expect("a directory");
        let mut store = Store::open(dir.path(), StoreConfig::default()).expect("a store");
        store
            .append_all("t.0", &[b"{\"text\":1}", binary])
            .expect("appends");
        let state = Committed {
            offset: 1,
            value: vec![1, 0, 255],
        };
        store
            .change_committed("producer 7 t.0", Some(state.clone()))
            .expect("a state");
        store.commit("group t.0", 2).expect("a commit");
        store.append("other", b"not held").expect("an append");
        store.sync().expect("a sync");
        let mut data = SnapshotData::plan(&mut store, &held).expect("a plan");
        data.read(&mut store).expect("the records");
        data.read_commits(&store, &held);
        let encoded = data.encode();
        let decoded = SnapshotData::decode(&encoded).expect("decodes");
        assert_eq!(decoded.encode(), encoded);
        // Text stays readable; other bytes go in base64.
        let json = String::from_utf8_lossy(&encoded);
        assert!(
            json.contains(r#""msgs":["{\"text\":1}",{"b64":"AJ+Slv8="}]"#),
            "{json}"
        );

        let empty = tempfile::tempdir().expect("a directory");
        let mut replica = Store::open(empty.path(), StoreConfig::default()).expect("a store");
        decoded.install(&mut replica, 1, &held).expect("installed");
        replica.sync().expect("a sync");
        assert_eq!(
            records(&mut replica, "t.0"),
            [b"{\"text\":1}".to_vec(), binary.to_vec()]
        );
        assert_eq!(replica.committed_latest("producer 7 t.0"), Some(&state));
        assert_eq!(replica.committed("group t.0"), Some(2));
        assert_eq!(replica.next_offset("other").expect("an end"), 0);
    }

    /// Found by the review of consumer offsets: a snapshot's commits are
    /// installed as given (a consumer group's may have gone back, and most
    /// carry no metadata), and a commit of the group's keys the snapshot
    /// lacks is removed.
    #[test]
    fn a_snapshot_installs_commits_as_given_and_removes_the_others() {
        let held = Keys::matching(|key| key.starts_with("group "));
        let commit = |offset| {
            Some(Committed {
                offset,
                value: Vec::new(),
            })
        };
        let dir = tempfile::tempdir().expect("a directory");
        let mut leader = Store::open(dir.path(), StoreConfig::default()).expect("a store");
        leader
            .change_committed("group a", commit(100))
            .expect("a commit");
        leader
            .change_committed("group a", commit(50))
            .expect("back");
        let mut data = SnapshotData::plan(&mut leader, &held).expect("a plan");
        data.read_commits(&leader, &held);
        leader.sync().expect("a sync");
        data.read(&mut leader).expect("the records");

        let other = tempfile::tempdir().expect("a directory");
        let mut follower = Store::open(other.path(), StoreConfig::default()).expect("a store");
        follower
            .change_committed("group a", commit(100))
            .expect("a commit");
        follower
            .change_committed("group b", commit(7))
            .expect("a commit");
        follower.commit("not held", 3).expect("a commit");
        follower.sync().expect("a sync");
        data.install(&mut follower, 0, &held).expect("installed");
        follower.sync().expect("a sync");
        assert_eq!(follower.committed("group a"), Some(50));
        assert_eq!(follower.committed("group b"), None);
        assert_eq!(follower.committed("not held"), Some(3));
    }

    /// Found by the review of Kafka produce: the commits are read where the
    /// snapshot is planned (as `StateMachine::build` does), so a change
    /// applied while the build waits for its records to be durable (a
    /// producer's state of a later batch) is not in it.
    #[test]
    fn a_snapshot_holds_the_commits_as_of_its_plan() {
        let held = Keys::matching(|key| key.ends_with("t.0"));
        let state = |offset| {
            Some(Committed {
                offset,
                value: vec![1, 2, 3],
            })
        };
        let dir = tempfile::tempdir().expect("a directory");
        let mut store = Store::open(dir.path(), StoreConfig::default()).expect("a store");
        store.append("t.0", b"r").expect("an append");
        store
            .change_committed_after("producer 1 t.0", state(0), "t.0")
            .expect("a state");
        let mut data = SnapshotData::plan(&mut store, &held).expect("a plan");
        data.read_commits(&store, &held);
        store.append("t.0", b"s").expect("a later append");
        store
            .change_committed_after("producer 1 t.0", state(1), "t.0")
            .expect("a later state");
        store.sync().expect("a sync");
        data.read(&mut store).expect("the records");
        assert_eq!(data.keys[0].msgs, [Message(b"r".to_vec())]);
        assert_eq!(
            data.values,
            [("producer 1 t.0".to_string(), 0, Bytes64(vec![1, 2, 3]))]
        );
    }
}
