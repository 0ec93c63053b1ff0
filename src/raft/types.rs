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
    /// The send got this offset.
    Offset(u64),
    /// The commit is recorded.
    Committed,
}

/// What applying an entry did: one result per operation of its proposal
/// (none for a blank or membership entry).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub results: Vec<OpResult>,
}
