//! The cluster's metadata: which nodes there are and where they listen,
//! the topics and the Raft group and replicas of each partition, consumer
//! groups' committed offsets, and the counters that hand out group ids and
//! producer ids. Group 0 (the metadata group, on every node) replicates it.
//!
//! # The metadata log is a key
//! As in KRaft, whose metadata is itself a log (`__cluster_metadata`), the
//! metadata is the fold of a log: group 0's key [`METADATA_KEY`]. A change
//! is an ordinary `Op::Send` of that key ([`send`]) whose message is a
//! versioned [`MetaOp`] in JSON. So group 0's apply needs nothing new: the
//! record gets its offset at apply, identically on every replica, and
//! group 0's snapshots carry the key like any other (its [`Keys`] rule is
//! [`keys`]). The state is [`Metadata`], a deterministic fold of the key's
//! records in offset order: [`Metadata::apply`] gives each record a
//! [`Verdict`], accepted with what it changed or refused with a reason.
//! Every replica folds the same records in the same order, so every
//! replica reaches the same verdicts; a proposer learns its own by folding
//! up to the offset its send got. Validation happens in the fold, not only
//! before proposing, because two proposals that were each valid alone (two
//! creations of one name) can be committed one after the other.
//!
//! The key follows the store's name rules (`cluster.metadata` is a plain
//! `k.` name), is not one of the Raft groups' reserved keys
//! ([`crate::raft::snapshot::is_reserved`]) and is never a partition's key
//! (those are `<topic>.<id>-<partition>`, with a `-`).
//!
//! # Versions
//! Every record is `{"version":V,"op":{...}}`. A record this build cannot
//! read at its own version is refused, the same way on every replica of
//! that build. A record of a *newer* version stops the fold instead
//! ([`FollowError::Newer`]): refusing it here while newer nodes accept it
//! would make replicas disagree. Writing a new version is for a cluster
//! whose nodes all read it (a cluster-wide feature level, as KRaft's
//! `metadata.version`; later).
//!
//! The fold's rules are part of the format: every limit and check it
//! applies is a constant or function of this module, frozen for version 1
//! (a test pins each), not the limits of the modules that run the result,
//! which may change for their own reasons. Two builds that fold one record
//! differently would diverge silently in a rolling upgrade, so changing a
//! rule needs a new [`METADATA_VERSION`]. For the same reason a record
//! with a field this build does not know is refused, never read without
//! it.
//!
//! # Keeping the log bounded (later)
//! The key grows with every change, and group 0's snapshots carry the
//! key's records, not the folded state. Until the log is bounded, the
//! runtime must not route consumer offset commits through group 0: a
//! consumer commits every few seconds, and the log, its snapshots and the
//! fold from offset 0 at every start would grow without limit. The plan: the leader of group 0 writes
//! the whole folded state as records of the key (`State` chunks, each
//! under the proposal limit, the last one naming the offset the state was
//! folded to; a chunk run that any other record interrupts is refused, so
//! the state taken at offset N is accepted only at N's successor), then
//! every replica may truncate the key's front ([`Store::truncate_front`])
//! up to that run, since folding starts from the run as well as from
//! offset 0. [`Metadata`] is serializable for this already; until it is
//! built, [`Metadata::follow`] refuses a log whose start has passed what it
//! folded ([`FollowError::Gap`]).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::broker::catalog::{self, Catalog, Topic};
use crate::cluster::peers::check_address;
use crate::raft::snapshot::Keys;
use crate::raft::types::{NodeId, Op};
use crate::storage::store::Store;

/// The store key whose records are the metadata log (group 0's only key).
pub const METADATA_KEY: &str = "cluster.metadata";

/// The Raft group that replicates the metadata, on every node.
pub const METADATA_GROUP: u32 = 0;

/// The record version this build writes and reads.
pub const METADATA_VERSION: u32 = 1;

/// Records one [`Metadata::follow`] folds at most: bounds the time the
/// runtime's tick spends in it (a fold of one record is microseconds; a
/// node catching up on a long log is caught up over several ticks).
pub const FOLLOW_RECORDS_MAX: usize = 1024;

// The fold's limits, frozen for version 1 (see "Versions" above): changing
// one needs a new metadata version. Each was chosen to match the limit of
// the module that runs the result at the time; a test checks that those
// still admit what the fold accepts.

/// Partition replicas one node may hold: each is a Raft group running on
/// it, and a node ran at most 4,096 groups (`raft::groups::
/// GROUPS_RUNNING_MAX`), group 0 among them. Refused in the fold, so that
/// no node is assigned groups it would then refuse to start.
pub const REPLICAS_PER_NODE_MAX: usize = 4_095;

/// Nodes a cluster may register (`cluster::peers::NODES_MAX`).
pub const NODES_MAX: usize = 16;

/// Largest node id: Kafka's Metadata names brokers by a signed 32-bit id.
pub const NODE_ID_MAX: NodeId = i32::MAX as NodeId;

/// Topics a cluster holds (the single node catalog's `TOPICS_MAX`).
pub const TOPICS_MAX: usize = 10_000;

/// Partitions one topic may have (the catalog's `PARTITIONS_MAX`).
pub const PARTITIONS_MAX: u32 = 4_096;

/// Longest consumer group name, in bytes, as Kafka's topic names.
pub const GROUP_NAME_BYTES_MAX: usize = 249;

/// Longest metadata string of a committed offset, in bytes (the store's
/// `COMMIT_VALUE_BYTES_MAX`).
pub const COMMIT_METADATA_BYTES_MAX: usize = 4_096;

/// Consumer groups with committed offsets: ten thousand is the Kafka front
/// end's bound on live groups (`kafka::groups::GROUPS_MAX`). It bounds the
/// groups only; [`GROUP_PARTITIONS_MAX`] bounds what each holds.
pub const COMMITTED_GROUPS_MAX: usize = 10_000;

/// Partitions one consumer group may hold offsets of: with
/// [`COMMITTED_GROUPS_MAX`] and [`COMMIT_METADATA_BYTES_MAX`], what bounds
/// the offsets' part of the state. A group reads a few topics; one topic's
/// [`PARTITIONS_MAX`] is far more than a group of a small cluster uses.
pub const GROUP_PARTITIONS_MAX: usize = 4_096;

/// Kafka's `int64` values (offsets, retention, producer ids) are
/// non-negative here: a larger one could not be sent to a Kafka client.
pub const INT64_MAX: u64 = i64::MAX as u64;

/// Most producer ids one allocation hands out: a node asks for blocks of a
/// thousand (`docs/serve-cluster-design.md` §3); a bound keeps one record
/// from spending the id space.
pub const PRODUCER_IDS_PER_BLOCK_MAX: u64 = 1_000_000;

/// Producer ids are Kafka's non-negative `int64`.
pub const PRODUCER_ID_END: u64 = INT64_MAX;

/// The rule that gives group 0 its keys: the metadata log, and the
/// consumer groups' committed offsets (kept as the store's commits, one per
/// group and partition, so they take no more room however often they are
/// committed, and every node reads them where a single node does).
pub fn keys() -> Keys {
    Keys::matching(|key| {
        key == METADATA_KEY || crate::broker::groups::parse_offset_key(key).is_some()
    })
}

/// The operation that proposes `op` to group 0.
pub fn send(op: &MetaOp) -> Op {
    Op::Send {
        key: METADATA_KEY.to_string(),
        msg: encode(op),
    }
}

/// One record of the metadata log: `op` at `version`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record<T> {
    version: u32,
    op: T,
}

/// The record of `op`, as the metadata key holds it.
pub fn encode(op: &MetaOp) -> String {
    let record = Record {
        version: METADATA_VERSION,
        op,
    };
    // Strings, numbers, options and vectors always encode.
    serde_json::to_string(&record).expect("a metadata op encodes as JSON")
}

/// What a record of the metadata log holds, as this build reads it.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Op(MetaOp),
    /// Not a metadata op this build reads at its own version: refused.
    /// The text (serde's, with its line and column) is for the verdict
    /// only: it may differ between builds and never enters the state.
    Unreadable(String),
    /// A record of a later version: the fold must stop.
    Newer(u32),
}

/// Reads one record: its version first, so that a newer record is told
/// apart from a damaged one.
pub fn decode(bytes: &[u8]) -> Decoded {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let version = match serde_json::from_slice::<Version>(bytes) {
        Ok(v) => v.version,
        Err(e) => return Decoded::Unreadable(format!("no record version: {e}")),
    };
    if version > METADATA_VERSION {
        return Decoded::Newer(version);
    }
    if version < METADATA_VERSION {
        return Decoded::Unreadable(format!("version {version} was never written"));
    }
    match serde_json::from_slice::<Record<MetaOp>>(bytes) {
        Ok(record) => Decoded::Op(record.op),
        Err(e) => Decoded::Unreadable(format!("not a metadata op of version {version}: {e}")),
    }
}

/// A change to the metadata (`docs/serve-cluster-design.md` §1).
/// Externally tagged: a new kind of change is a new variant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum MetaOp {
    /// A node's addresses: registered on its first start, again when they
    /// change.
    RegisterNode {
        id: NodeId,
        http: String,
        kafka: Option<String>,
        peer: String,
    },
    /// A topic whose partition `p` has the replicas `assignment[p]`
    /// (the first its preferred leader); each partition gets the next
    /// group id in the fold. `created_ms` is the proposer's clock: the
    /// fold reads no clock.
    CreateTopic {
        name: String,
        partitions: u32,
        replication_factor: u32,
        config: TopicConfig,
        assignment: Vec<Vec<NodeId>>,
        created_ms: u64,
    },
    DeleteTopic {
        name: String,
    },
    /// Raises a topic's partition count to `count`; `assignment` holds the
    /// new partitions' replicas, in order.
    CreatePartitions {
        name: String,
        count: u32,
        assignment: Vec<Vec<NodeId>>,
    },
    AlterConfig {
        name: String,
        changes: Vec<ConfigChange>,
    },
    /// A consumer group's offsets, each stored as given (lower ones
    /// included, as Kafka does).
    CommitOffsets {
        group_id: String,
        offsets: Vec<OffsetCommit>,
    },
    DeleteGroup {
        group_id: String,
    },
    /// A block of `count` producer ids for `node` to hand out.
    AllocateProducerIds {
        node: NodeId,
        count: u64,
    },
}

/// A topic's own settings; `None` takes the server's default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
}

/// A topic setting the metadata holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigKey {
    #[serde(rename = "retention.ms")]
    RetentionMs,
    #[serde(rename = "retention.bytes")]
    RetentionBytes,
}

/// One setting changed: `None` returns it to the server's default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigChange {
    pub key: ConfigKey,
    pub value: Option<u64>,
}

/// One partition's committed offset in a [`MetaOp::CommitOffsets`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsetCommit {
    pub topic: String,
    pub partition: u32,
    /// The next offset the group will read.
    pub offset: u64,
    pub metadata: Option<String>,
}

/// A registered node's addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `host:port` of its HTTP front end.
    pub http: String,
    /// `host:port` of its Kafka front end, if it runs one.
    pub kafka: Option<String>,
    /// `host:port` its peers dial.
    pub peer: String,
}

/// One partition of a topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    /// Its Raft group: never reused, so a deleted topic's late messages
    /// cannot reach a new topic's group.
    pub group: u32,
    /// Its replicas, the preferred leader first.
    pub replicas: Vec<NodeId>,
}

/// One topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// Unique over the cluster's life, as the single node's catalog's ids:
    /// part of every partition's store key.
    pub id: u64,
    pub replication_factor: u32,
    pub config: TopicConfig,
    pub created_ms: u64,
    /// Partition `p` is `partitions[p]`.
    pub partitions: Vec<PartitionMeta>,
}

/// A partition whose group a node runs: what the runtime compares with
/// the groups it runs, to add and remove them as the metadata changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionOf {
    pub topic: String,
    pub partition: u32,
    /// The partition's store key ([`catalog::partition_key`]).
    pub key: String,
    /// Its replicas, the preferred leader first.
    pub replicas: Vec<NodeId>,
}

/// A committed offset of a consumer group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOffset {
    pub offset: u64,
    pub metadata: Option<String>,
}

/// A consumer group's committed offsets: topic → partition → offset.
pub type GroupOffsets = BTreeMap<String, BTreeMap<u32, GroupOffset>>;

/// What an accepted op changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// `changed` is false for a node that registered the same addresses.
    NodeRegistered {
        id: NodeId,
        changed: bool,
    },
    TopicCreated {
        name: String,
        id: u64,
        groups: Range<u32>,
    },
    /// The groups the topic's partitions ran in: each replica removes its own.
    TopicDeleted {
        name: String,
        groups: Vec<u32>,
    },
    PartitionsCreated {
        name: String,
        groups: Range<u32>,
    },
    ConfigAltered {
        name: String,
    },
    OffsetsCommitted {
        group_id: String,
        count: usize,
    },
    GroupDeleted {
        group_id: String,
    },
    ProducerIds {
        node: NodeId,
        ids: Range<u64>,
    },
}

/// Why an op was refused: the kinds a front end maps to its own codes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// Not a metadata op this build reads.
    Unreadable(String),
    TopicExists(String),
    UnknownTopic(String),
    UnknownPartition {
        topic: String,
        partition: u32,
    },
    UnknownNode(NodeId),
    UnknownGroup(String),
    /// A replication factor of 0 or above the registered nodes.
    ReplicationFactor(String),
    /// A partition count of 0, above the limit, or not above the current.
    Partitions(String),
    /// Replicas that are repeated, unregistered, or not the factor's count.
    Assignment(String),
    /// A value out of its range: a name, an address, a count.
    Invalid(String),
    /// A limit of the cluster is reached.
    Limit(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unreadable(why) => write!(f, "unreadable metadata record: {why}"),
            Refusal::TopicExists(name) => write!(f, "topic '{name}' exists already"),
            Refusal::UnknownTopic(name) => write!(f, "no topic '{name}'"),
            Refusal::UnknownPartition { topic, partition } => {
                write!(f, "topic '{topic}' has no partition {partition}")
            }
            Refusal::UnknownNode(id) => write!(f, "node {id} is not registered"),
            Refusal::UnknownGroup(group) => write!(f, "group '{group}' has no offsets"),
            Refusal::ReplicationFactor(why)
            | Refusal::Partitions(why)
            | Refusal::Assignment(why)
            | Refusal::Invalid(why)
            | Refusal::Limit(why) => f.write_str(why),
        }
    }
}

/// The fold's answer to one record, the same on every replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Accepted(Change),
    Refused(Refusal),
}

/// Why [`Metadata::follow`] stopped short of the key's end.
#[derive(Debug)]
pub enum FollowError {
    /// The store failed reading the key.
    Store(crate::storage::error::Error),
    /// The key's log starts at `start`, past `next`, the next record to
    /// fold: records were cut that this state never folded.
    Gap { start: u64, next: u64 },
    /// The record at `offset` is of `version`, newer than this build's.
    Newer { offset: u64, version: u32 },
    /// A record at `offset` was given to fold, but `next` is the next one:
    /// a caller's bug, refused so that no record is skipped or folded twice.
    OutOfOrder { offset: u64, next: u64 },
}

impl fmt::Display for FollowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FollowError::Store(e) => write!(f, "reading the metadata log: {e}"),
            FollowError::Gap { start, next } => write!(
                f,
                "the metadata log starts at offset {start}, past offset {next} folded so far"
            ),
            FollowError::Newer { offset, version } => write!(
                f,
                "the metadata record at offset {offset} is of version {version}; this seglog \
                 reads version {METADATA_VERSION}: upgrade it"
            ),
            FollowError::OutOfOrder { offset, next } => write!(
                f,
                "the metadata record at offset {offset} is not the next to fold, {next}"
            ),
        }
    }
}

/// What one [`Metadata::follow`] folded, and why it stopped short, if it
/// did.
#[derive(Debug, Default)]
#[must_use = "the verdicts are reported once, and a stop must be handled"]
pub struct Followed {
    /// Each record's offset and verdict, in order: every record folded,
    /// also when the call then stopped.
    pub verdicts: Vec<(u64, Verdict)>,
    /// Whether every durable record of the key is folded now.
    pub caught_up: bool,
    /// Why the fold stopped before the key's end: the records after the
    /// verdicts are not folded. The same stop comes again on the next call
    /// until its cause is gone (a newer build, a store repaired).
    pub stopped: Option<FollowError>,
}

/// The metadata as folded up to some offset of [`METADATA_KEY`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The offset of the next record to fold: everything below is folded.
    next_offset: u64,
    nodes: BTreeMap<NodeId, NodeInfo>,
    topics: BTreeMap<String, TopicMeta>,
    /// Consumer group → its committed offsets.
    offsets: BTreeMap<String, GroupOffsets>,
    next_topic_id: u64,
    /// The group the next partition gets: from 1 (0 is this metadata's),
    /// never reused.
    next_group: u32,
    next_producer_id: u64,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata {
            next_offset: 0,
            nodes: BTreeMap::new(),
            topics: BTreeMap::new(),
            offsets: BTreeMap::new(),
            next_topic_id: 0,
            next_group: METADATA_GROUP + 1,
            next_producer_id: 0,
        }
    }
}

/// Shorthand inside the fold.
type Checked<T> = Result<T, Refusal>;

/// A group name: 1 to [`GROUP_NAME_BYTES_MAX`] bytes, no control characters
/// (the rule of `broker::groups::check_group`, frozen here).
fn check_group_name(group: &str) -> Checked<()> {
    if group.is_empty() || group.len() > GROUP_NAME_BYTES_MAX || group.chars().any(char::is_control)
    {
        return Err(Refusal::Invalid(format!(
            "a group name has 1 to {GROUP_NAME_BYTES_MAX} bytes and no control characters"
        )));
    }
    Ok(())
}

/// A topic setting's value: Kafka carries each as an `int64`.
fn check_config_value(value: Option<u64>) -> Checked<()> {
    match value {
        Some(value) if value > INT64_MAX => Err(Refusal::Invalid(format!(
            "a topic setting of {value} is over Kafka's int64 {INT64_MAX}"
        ))),
        _ => Ok(()),
    }
}

impl Metadata {
    /// The metadata of an empty log.
    pub fn new() -> Metadata {
        Metadata::default()
    }

    /// The offset of the next record to fold.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Registered nodes and their addresses, by id.
    pub fn nodes(&self) -> &BTreeMap<NodeId, NodeInfo> {
        &self.nodes
    }

    /// Topics by name.
    pub fn topics(&self) -> &BTreeMap<String, TopicMeta> {
        &self.topics
    }

    /// Consumer groups' committed offsets, by group.
    pub fn offsets(&self) -> &BTreeMap<String, GroupOffsets> {
        &self.offsets
    }

    /// The group id the next partition gets.
    pub fn next_group(&self) -> u32 {
        self.next_group
    }

    /// The first producer id the next allocation hands out.
    pub fn next_producer_id(&self) -> u64 {
        self.next_producer_id
    }

    /// Folds the record at `offset` (the bytes the key holds), which must
    /// be the next ([`FollowError::OutOfOrder`] otherwise). `Err` also for a
    /// newer record, which is not folded.
    pub fn apply_record(&mut self, offset: u64, bytes: &[u8]) -> Result<Verdict, FollowError> {
        self.check_next(offset)?;
        match decode(bytes) {
            Decoded::Op(op) => self.apply(offset, &op),
            Decoded::Newer(version) => Err(FollowError::Newer { offset, version }),
            Decoded::Unreadable(why) => {
                self.next_offset = offset + 1;
                Ok(Verdict::Refused(Refusal::Unreadable(why)))
            }
        }
    }

    /// Folds `op`, the record at `offset`, which must be the next
    /// ([`FollowError::OutOfOrder`] otherwise, and nothing changes): a
    /// refused op changes nothing but the offset folded.
    pub fn apply(&mut self, offset: u64, op: &MetaOp) -> Result<Verdict, FollowError> {
        self.check_next(offset)?;
        self.next_offset = offset + 1;
        let done = match op {
            MetaOp::RegisterNode {
                id,
                http,
                kafka,
                peer,
            } => self.register_node(*id, http, kafka.as_deref(), peer),
            MetaOp::CreateTopic {
                name,
                partitions,
                replication_factor,
                config,
                assignment,
                created_ms,
            } => self.create_topic(
                name,
                *partitions,
                *replication_factor,
                config,
                assignment,
                *created_ms,
            ),
            MetaOp::DeleteTopic { name } => self.delete_topic(name),
            MetaOp::CreatePartitions {
                name,
                count,
                assignment,
            } => self.create_partitions(name, *count, assignment),
            MetaOp::AlterConfig { name, changes } => self.alter_config(name, changes),
            MetaOp::CommitOffsets { group_id, offsets } => self.commit_offsets(group_id, offsets),
            MetaOp::DeleteGroup { group_id } => self.delete_group(group_id),
            MetaOp::AllocateProducerIds { node, count } => {
                self.allocate_producer_ids(*node, *count)
            }
        };
        Ok(match done {
            Ok(change) => Verdict::Accepted(change),
            Err(refusal) => Verdict::Refused(refusal),
        })
    }

    /// Records are folded each once, in offset order, none skipped; and
    /// `offset + 1` must not wrap.
    fn check_next(&self, offset: u64) -> Result<(), FollowError> {
        if offset != self.next_offset || offset == u64::MAX {
            return Err(FollowError::OutOfOrder {
                offset,
                next: self.next_offset,
            });
        }
        Ok(())
    }

    fn register_node(
        &mut self,
        id: NodeId,
        http: &str,
        kafka: Option<&str>,
        peer: &str,
    ) -> Checked<Change> {
        if id > NODE_ID_MAX {
            return Err(Refusal::Invalid(format!(
                "node id {id} is over {NODE_ID_MAX} (Kafka's broker ids are 32-bit)"
            )));
        }
        let addresses: Vec<&str> = [Some(http), kafka, Some(peer)]
            .into_iter()
            .flatten()
            .collect();
        for (i, address) in addresses.iter().enumerate() {
            // Pinned by the test of its boundaries: a change to it changes the fold.
            check_address(address)
                .map_err(|why| Refusal::Invalid(format!("node {id}'s address: {why}")))?;
            if addresses[..i]
                .iter()
                .any(|a| a.eq_ignore_ascii_case(address))
            {
                return Err(Refusal::Invalid(format!(
                    "node {id} lists the address {address} twice"
                )));
            }
        }
        for (other, node) in self.nodes.iter().filter(|(other, _)| **other != id) {
            let theirs = [Some(&node.http), node.kafka.as_ref(), Some(&node.peer)];
            // Host names are case-insensitive, and so are IPv6's hex digits.
            if let Some(taken) = theirs
                .into_iter()
                .flatten()
                .find(|a| addresses.iter().any(|mine| a.eq_ignore_ascii_case(mine)))
            {
                return Err(Refusal::Invalid(format!(
                    "node {other} has the address {taken} already"
                )));
            }
        }
        if !self.nodes.contains_key(&id) && self.nodes.len() >= NODES_MAX {
            return Err(Refusal::Limit(format!(
                "a cluster has at most {NODES_MAX} nodes"
            )));
        }
        let node = NodeInfo {
            http: http.to_string(),
            kafka: kafka.map(str::to_string),
            peer: peer.to_string(),
        };
        let changed = self.nodes.insert(id, node.clone()).as_ref() != Some(&node);
        Ok(Change::NodeRegistered { id, changed })
    }

    fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        factor: u32,
        config: &TopicConfig,
        assignment: &[Vec<NodeId>],
        created_ms: u64,
    ) -> Checked<Change> {
        // Pinned by the test of its boundaries: a change to it changes the fold.
        catalog::check_name(name).map_err(Refusal::Invalid)?;
        if self.topics.contains_key(name) {
            return Err(Refusal::TopicExists(name.to_string()));
        }
        if self.topics.len() >= TOPICS_MAX {
            return Err(Refusal::Limit(format!(
                "the cluster holds at most {TOPICS_MAX} topics"
            )));
        }
        if partitions == 0 || partitions > PARTITIONS_MAX {
            return Err(Refusal::Partitions(format!(
                "a topic has 1 to {PARTITIONS_MAX} partitions, not {partitions}"
            )));
        }
        check_config_value(config.retention_ms)?;
        check_config_value(config.retention_bytes)?;
        self.check_factor(factor)?;
        let groups = self.check_new_partitions(partitions, factor, assignment)?;
        let topic = TopicMeta {
            id: self.next_topic_id,
            replication_factor: factor,
            config: config.clone(),
            created_ms,
            partitions: self.place(assignment),
        };
        self.next_topic_id += 1;
        let id = topic.id;
        self.topics.insert(name.to_string(), topic);
        Ok(Change::TopicCreated {
            name: name.to_string(),
            id,
            groups,
        })
    }

    fn delete_topic(&mut self, name: &str) -> Checked<Change> {
        let topic = self
            .topics
            .remove(name)
            .ok_or_else(|| Refusal::UnknownTopic(name.to_string()))?;
        // Kafka drops a deleted topic's committed offsets; a topic created
        // again under the name starts without them.
        for group in self.offsets.values_mut() {
            group.remove(name);
        }
        self.offsets.retain(|_, group| !group.is_empty());
        Ok(Change::TopicDeleted {
            name: name.to_string(),
            groups: topic.partitions.iter().map(|p| p.group).collect(),
        })
    }

    fn create_partitions(
        &mut self,
        name: &str,
        count: u32,
        assignment: &[Vec<NodeId>],
    ) -> Checked<Change> {
        let topic = self.topic(name)?;
        let (now, factor) = (topic.partitions.len() as u32, topic.replication_factor);
        if count <= now || count > PARTITIONS_MAX {
            return Err(Refusal::Partitions(format!(
                "topic '{name}' has {now} partitions: a new count is more than that and at most \
                 {PARTITIONS_MAX}, not {count}"
            )));
        }
        // The factor was checked at creation, and nodes are never removed.
        let groups = self.check_new_partitions(count - now, factor, assignment)?;
        let placed = self.place(assignment);
        if let Some(topic) = self.topics.get_mut(name) {
            topic.partitions.extend(placed);
        }
        Ok(Change::PartitionsCreated {
            name: name.to_string(),
            groups,
        })
    }

    fn alter_config(&mut self, name: &str, changes: &[ConfigChange]) -> Checked<Change> {
        let topic = self
            .topics
            .get_mut(name)
            .ok_or_else(|| Refusal::UnknownTopic(name.to_string()))?;
        for change in changes {
            check_config_value(change.value)?;
        }
        for change in changes {
            match change.key {
                ConfigKey::RetentionMs => topic.config.retention_ms = change.value,
                ConfigKey::RetentionBytes => topic.config.retention_bytes = change.value,
            }
        }
        Ok(Change::ConfigAltered {
            name: name.to_string(),
        })
    }

    /// Every offset is checked before any is stored: a commit is taken
    /// whole or not at all.
    fn commit_offsets(&mut self, group_id: &str, offsets: &[OffsetCommit]) -> Checked<Change> {
        check_group_name(group_id)?;
        for commit in offsets {
            let topic = self.topic(&commit.topic)?;
            if commit.partition as usize >= topic.partitions.len() {
                return Err(Refusal::UnknownPartition {
                    topic: commit.topic.clone(),
                    partition: commit.partition,
                });
            }
            if commit.offset > INT64_MAX {
                return Err(Refusal::Invalid(format!(
                    "offset {} is over Kafka's int64 {INT64_MAX}",
                    commit.offset
                )));
            }
            let metadata = commit.metadata.as_deref().unwrap_or_default();
            if metadata.len() > COMMIT_METADATA_BYTES_MAX {
                return Err(Refusal::Invalid(format!(
                    "commit metadata of {} bytes, over the limit of {COMMIT_METADATA_BYTES_MAX}",
                    metadata.len()
                )));
            }
        }
        self.check_group_partitions(group_id, offsets)?;
        if !self.offsets.contains_key(group_id) && self.offsets.len() >= COMMITTED_GROUPS_MAX {
            return Err(Refusal::Limit(format!(
                "the cluster keeps offsets of at most {COMMITTED_GROUPS_MAX} groups"
            )));
        }
        if offsets.is_empty() {
            return Ok(Change::OffsetsCommitted {
                group_id: group_id.to_string(),
                count: 0,
            });
        }
        let group = self.offsets.entry(group_id.to_string()).or_default();
        for commit in offsets {
            let stored = GroupOffset {
                offset: commit.offset,
                metadata: commit.metadata.clone(),
            };
            group
                .entry(commit.topic.clone())
                .or_default()
                .insert(commit.partition, stored);
        }
        Ok(Change::OffsetsCommitted {
            group_id: group_id.to_string(),
            count: offsets.len(),
        })
    }

    /// A group holds offsets of at most [`GROUP_PARTITIONS_MAX`] partitions,
    /// the ones it has and the ones `offsets` adds.
    fn check_group_partitions(&self, group_id: &str, offsets: &[OffsetCommit]) -> Checked<()> {
        let empty = GroupOffsets::new();
        let held = self.offsets.get(group_id).unwrap_or(&empty);
        let mut added = std::collections::BTreeSet::new();
        for commit in offsets {
            let has = held
                .get(&commit.topic)
                .is_some_and(|partitions| partitions.contains_key(&commit.partition));
            if !has {
                added.insert((commit.topic.as_str(), commit.partition));
            }
        }
        let count = held.values().map(BTreeMap::len).sum::<usize>() + added.len();
        if count > GROUP_PARTITIONS_MAX {
            return Err(Refusal::Limit(format!(
                "group '{group_id}' would hold offsets of {count} partitions, over \
                 {GROUP_PARTITIONS_MAX}"
            )));
        }
        Ok(())
    }

    fn delete_group(&mut self, group_id: &str) -> Checked<Change> {
        self.offsets
            .remove(group_id)
            .ok_or_else(|| Refusal::UnknownGroup(group_id.to_string()))?;
        Ok(Change::GroupDeleted {
            group_id: group_id.to_string(),
        })
    }

    fn allocate_producer_ids(&mut self, node: NodeId, count: u64) -> Checked<Change> {
        if !self.nodes.contains_key(&node) {
            return Err(Refusal::UnknownNode(node));
        }
        if count == 0 || count > PRODUCER_IDS_PER_BLOCK_MAX {
            return Err(Refusal::Invalid(format!(
                "a block has 1 to {PRODUCER_IDS_PER_BLOCK_MAX} producer ids, not {count}"
            )));
        }
        let first = self.next_producer_id;
        let end = first
            .checked_add(count)
            .filter(|end| *end <= PRODUCER_ID_END)
            .ok_or_else(|| Refusal::Limit("the producer ids are spent".into()))?;
        self.next_producer_id = end;
        Ok(Change::ProducerIds {
            node,
            ids: first..end,
        })
    }

    fn topic(&self, name: &str) -> Checked<&TopicMeta> {
        self.topics
            .get(name)
            .ok_or_else(|| Refusal::UnknownTopic(name.to_string()))
    }

    fn check_factor(&self, factor: u32) -> Checked<()> {
        if factor == 0 || factor as usize > self.nodes.len() {
            return Err(Refusal::ReplicationFactor(format!(
                "a replication factor is 1 to the {} registered nodes, not {factor}",
                self.nodes.len()
            )));
        }
        Ok(())
    }

    /// Checks the replicas of `count` new partitions, and that their groups
    /// and replicas fit the limits; the groups they will get.
    fn check_new_partitions(
        &self,
        count: u32,
        factor: u32,
        assignment: &[Vec<NodeId>],
    ) -> Checked<Range<u32>> {
        if assignment.len() != count as usize {
            return Err(Refusal::Assignment(format!(
                "{} replica lists for {count} partitions",
                assignment.len()
            )));
        }
        let mut held = self.replicas_per_node();
        for (p, replicas) in assignment.iter().enumerate() {
            if replicas.len() != factor as usize {
                return Err(Refusal::Assignment(format!(
                    "partition {p} has {} replicas, not the factor {factor}",
                    replicas.len()
                )));
            }
            for (i, node) in replicas.iter().enumerate() {
                if !self.nodes.contains_key(node) {
                    return Err(Refusal::UnknownNode(*node));
                }
                if replicas[..i].contains(node) {
                    return Err(Refusal::Assignment(format!(
                        "partition {p} lists node {node} twice"
                    )));
                }
                let count = held.entry(*node).or_default();
                *count += 1;
                if *count > REPLICAS_PER_NODE_MAX {
                    return Err(Refusal::Limit(format!(
                        "node {node} would hold more than {REPLICAS_PER_NODE_MAX} partitions"
                    )));
                }
            }
        }
        let end = self
            .next_group
            .checked_add(count)
            .ok_or_else(|| Refusal::Limit("the group ids are spent".into()))?;
        Ok(self.next_group..end)
    }

    /// Gives each replica list of a checked assignment the next group id.
    fn place(&mut self, assignment: &[Vec<NodeId>]) -> Vec<PartitionMeta> {
        assignment
            .iter()
            .map(|replicas| {
                let group = self.next_group;
                self.next_group += 1;
                PartitionMeta {
                    group,
                    replicas: replicas.clone(),
                }
            })
            .collect()
    }

    /// How many partition replicas each node holds.
    fn replicas_per_node(&self) -> BTreeMap<NodeId, usize> {
        let mut held = BTreeMap::new();
        let replicas = self.topics.values().flat_map(|t| &t.partitions);
        for node in replicas.flat_map(|p| &p.replicas) {
            *held.entry(*node).or_default() += 1;
        }
        held
    }

    /// The replicas the proposer gives `count` new partitions of factor
    /// `factor`: Kafka's round robin over the registered nodes, partition
    /// `p` led by the node after the one that leads `p - 1`, its followers
    /// the nodes after its leader. The first leader rotates with the next
    /// group id, so that topics of one partition each do not all start on
    /// the same node; preferred leaders (`replicas[0]`) spread evenly. The
    /// fold checks the result, so a proposer whose state is behind gets a
    /// refusal, never an invalid topic.
    /// `count` is checked first: it sizes what is allocated.
    pub fn assign(&self, count: u32, factor: u32) -> Checked<Vec<Vec<NodeId>>> {
        if count > PARTITIONS_MAX {
            return Err(Refusal::Partitions(format!(
                "a topic has at most {PARTITIONS_MAX} partitions, not {count}"
            )));
        }
        self.check_factor(factor)?;
        let nodes: Vec<NodeId> = self.nodes.keys().copied().collect();
        let n = nodes.len();
        let start = self.next_group as usize % n;
        Ok((0..count as usize)
            .map(|p| {
                (0..factor as usize)
                    .map(|r| nodes[(start + p + r) % n])
                    .collect()
            })
            .collect())
    }

    /// The partitions `node` is a replica of, by group.
    pub fn groups_on(&self, node: NodeId) -> BTreeMap<u32, PartitionOf> {
        let mut groups = BTreeMap::new();
        for (name, topic) in &self.topics {
            for (p, partition) in topic.partitions.iter().enumerate() {
                if partition.replicas.contains(&node) {
                    let of = PartitionOf {
                        topic: name.clone(),
                        partition: p as u32,
                        key: catalog::partition_key(name, topic.id, p as u32),
                        replicas: partition.replicas.clone(),
                    };
                    groups.insert(partition.group, of);
                }
            }
        }
        groups
    }

    /// The topics as the broker's [`Catalog`] holds them, so that the
    /// front ends' reads (`GET /topics`, Kafka Metadata) serve a cluster's
    /// topics unchanged. The catalog refuses changes: a cluster's topics
    /// change through group 0.
    pub fn catalog(&self) -> Catalog {
        let topics = self.topics.iter().map(|(name, topic)| Topic {
            name: name.clone(),
            id: topic.id,
            partitions: topic.partitions.len() as u32,
            retention_ms: topic.config.retention_ms,
            retention_bytes: topic.config.retention_bytes,
            created_ms: topic.created_ms,
        });
        Catalog::replica(self.next_topic_id, topics)
    }

    /// Folds the durable records of [`METADATA_KEY`] from [`Metadata::next_offset`]
    /// on, at most [`FOLLOW_RECORDS_MAX`] of them: what the runtime calls
    /// after each sync point of group 0's applies. A record that is only
    /// applied, not yet durable, is folded by a later call. The verdicts
    /// of what was folded come back even when the call then stops
    /// ([`Followed::stopped`]): the next call starts after them, so they
    /// would otherwise never be reported.
    pub fn follow(&mut self, store: &mut Store) -> Followed {
        let mut followed = Followed::default();
        if let Err(stop) = self.follow_into(store, &mut followed) {
            followed.stopped = Some(stop);
        }
        followed
    }

    /// [`Metadata::follow`]'s work; each verdict is in `followed` as soon
    /// as its record is folded.
    fn follow_into(
        &mut self,
        store: &mut Store,
        followed: &mut Followed,
    ) -> Result<(), FollowError> {
        let start = store.log_start(METADATA_KEY).map_err(FollowError::Store)?;
        if start > self.next_offset {
            return Err(FollowError::Gap {
                start,
                next: self.next_offset,
            });
        }
        let mut stopped = None;
        store
            .read(METADATA_KEY, self.next_offset, &mut |offset, bytes| {
                match self.apply_record(offset, bytes) {
                    Ok(verdict) => followed.verdicts.push((offset, verdict)),
                    Err(stop) => {
                        stopped = Some(stop);
                        return false;
                    }
                }
                followed.verdicts.len() < FOLLOW_RECORDS_MAX
            })
            .map_err(FollowError::Store)?;
        if let Some(stop) = stopped {
            return Err(stop);
        }
        let end = store
            .durable_next_offset(METADATA_KEY)
            .map_err(FollowError::Store)?;
        followed.caught_up = self.next_offset >= end;
        Ok(())
    }
}

#[cfg(test)]
#[path = "metadata_tests.rs"]
mod tests;
