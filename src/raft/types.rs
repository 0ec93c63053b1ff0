//! What a Raft group's log carries, and the openraft type configuration.
//!
//! An entry's application data is a [`Proposal`]: client operations (sends
//! and commits) that the leader puts into one entry, so that one log entry,
//! one fsync of the journal and one round of replication serve a batch of
//! requests. Applying it returns one [`OpResult`] per operation, in order:
//! the offset a send got, identical on every replica, because every
//! replica applies the same entries in the same order to the same state.

use serde::{Deserialize, Serialize};

/// A node's id in the Raft groups: its index in the cluster's `node_ids`.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The type configuration of seglog's Raft groups.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A log entry of a group.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log entry's position: its term (and leader) and its index.
pub type LogId = openraft::LogId<NodeId>;
/// A node's vote: the term and the candidate it voted for.
pub type Vote = openraft::Vote<NodeId>;
/// A membership with the id of the entry that set it.
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
/// What openraft's storage calls fail with.
pub type StorageError = openraft::StorageError<NodeId>;

/// Who proposed an entry's operations, and which of its proposals it was:
/// unique over the cluster's life (the node's id and a counter that starts
/// at the node's start time in microseconds, so a restarted node never
/// repeats one). A proposer learns from it whether the entry was appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProposalId {
    pub node: NodeId,
    pub seq: u64,
}

/// One client operation, applied in log order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Append `msg` (JSON text, as the store keeps it) to `key`'s log.
    Send { key: String, msg: String },
    /// Record that `key` is processed up to `offset` (forward only).
    Commit { key: String, offset: u64 },
    /// Append `records` (bytes, as the store keeps them) to `key`'s log, all
    /// or none, through the group's [`super::state_machine::Appender`], which judges an
    /// idempotent producer's `sequence` against the state kept beside the
    /// log first. `at_ms` is when the proposer took the records: the time
    /// the state records, the same on every replica.
    Append {
        key: String,
        records: Vec<Bytes64>,
        sequence: Option<Sequence>,
        at_ms: u64,
    },
    /// Record `key`'s commit as given, a lower offset than the last
    /// included (Kafka's rule for a consumer group's offsets), with `value`
    /// beside it; `None` removes the key's commit.
    SetCommit {
        key: String,
        commit: Option<(u64, Bytes64)>,
    },
}

/// An idempotent producer's batch: who sent it, its epoch, the sequence
/// number of its first record and how many records it holds (Kafka's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequence {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub count: u32,
}

/// Bytes that travel in an entry's JSON as one base64 string (RFC 4648,
/// with padding): a third larger than the bytes, where JSON arrays of
/// numbers would be three or four times.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bytes64(pub Vec<u8>);

impl std::fmt::Debug for Bytes64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes", self.0.len())
    }
}

impl Serialize for Bytes64 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes64 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use base64::Engine;
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Bytes64)
            .map_err(serde::de::Error::custom)
    }
}

/// An entry's application data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: ProposalId,
    pub ops: Vec<Op>,
}

impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "proposal {}:{} of {} ops",
            self.id.node,
            self.id.seq,
            self.ops.len()
        )
    }
}

/// What applying one operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// The send got this offset (an append: its first record).
    Offset(u64),
    /// The commit is recorded.
    Committed,
    /// An [`Op::Append`] of an idempotent producer's batch appended before:
    /// nothing appended, its records were at this offset.
    Duplicate(u64),
    /// An [`Op::Append`] refused by its sequence: nothing appended.
    Refused(SequenceRefusal),
}

/// Why an idempotent producer's batch was refused (Kafka's answers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SequenceRefusal {
    /// An epoch older than the partition has seen: a newer instance of the
    /// producer took over.
    Fenced { current: i16 },
    /// A sequence number that does not follow the producer's last one.
    OutOfOrder { expected: i32 },
}

/// What applying an entry did: one result per operation of its proposal
/// (none for a blank or membership entry).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub results: Vec<OpResult>,
}

/// An InstallSnapshot chunk as it travels between nodes (`#[serde(with)]`
/// on the transport's call): openraft's fields, its data one base64
/// string ([`Bytes64`]) rather than serde's array of numbers, a third
/// larger than the chunk where the array is about four times (measured:
/// 16.5 MB of JSON for a 4 MiB chunk of a snapshot). A chunk is encoded
/// and decoded once per round trip of a snapshot's transfer, and its size
/// is what a peer frame and the receiver's budget must hold.
pub mod snapshot_chunk {
    use openraft::raft::InstallSnapshotRequest;
    use openraft::{BasicNode, SnapshotMeta};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Bytes64, NodeId, TypeConfig, Vote};

    /// The chunk's bytes, encoded where they lie.
    struct Data<'a>(&'a [u8]);

    impl Serialize for Data<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use base64::Engine;
            serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(self.0))
        }
    }

    #[derive(Serialize)]
    struct Out<'a> {
        vote: &'a Vote,
        meta: &'a SnapshotMeta<NodeId, BasicNode>,
        offset: u64,
        data: Data<'a>,
        done: bool,
    }

    #[derive(Deserialize)]
    struct In {
        vote: Vote,
        meta: SnapshotMeta<NodeId, BasicNode>,
        offset: u64,
        data: Bytes64,
        done: bool,
    }

    pub fn serialize<S: Serializer>(
        chunk: &InstallSnapshotRequest<TypeConfig>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        Out {
            vote: &chunk.vote,
            meta: &chunk.meta,
            offset: chunk.offset,
            data: Data(&chunk.data),
            done: chunk.done,
        }
        .serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<InstallSnapshotRequest<TypeConfig>, D::Error> {
        let chunk = In::deserialize(deserializer)?;
        Ok(InstallSnapshotRequest {
            vote: chunk.vote,
            meta: chunk.meta,
            offset: chunk.offset,
            data: chunk.data.0,
            done: chunk.done,
        })
    }
}
