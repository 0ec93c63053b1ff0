//! Consensus: the cluster's Raft groups, on openraft, over the store.
//!
//! Each group is an openraft Raft instance on each of its replicas (in the
//! Maelstrom node, every node, with keys hashed over a fixed number of
//! groups); groups are added and removed while a node runs. A group's log,
//! vote and applied state are records of one key of the store, made
//! durable by the front end's group commit: one fdatasync per sync point
//! covers every group's writes on the node. Its state machine is the key
//! logs: applying a committed entry appends its sends, whose offsets
//! follow from the log's order, so every replica gives a record the same
//! offset, and no offset is given before the entry is committed.
//!
//! This layer knows nothing of Maelstrom or of any wire format: a front
//! end carries [`transport`]'s batches between nodes its own way.
//!
//! # Layout
//! - [`types`]: openraft's type configuration; proposals and their results.
//! - [`durability`]: how writes learn they are durable (the group commit).
//! - [`log`]: a group's log key: its records and the log in memory.
//! - [`log_store`]: openraft's log storage on it.
//! - [`state_machine`]: openraft's state machine: the key logs.
//! - [`snapshot`]: a group's keys' records, and which keys are a group's.
//! - [`transport`]: every group's RPCs to a peer in one batch per message.
//! - [`standing`]: whether this node may vote in a group (a node that lost
//!   its disk may not until it caught up).
//! - [`groups`]: a node's groups: adding and removing them, who leads
//!   each, proposing to it.

pub mod durability;
pub mod groups;
pub mod log;
pub mod log_store;
pub mod snapshot;
pub mod standing;
pub mod state_machine;
pub mod transport;
pub mod types;

#[cfg(test)]
mod groups_tests;
#[cfg(test)]
mod suite_tests;
