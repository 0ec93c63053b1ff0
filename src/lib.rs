//! seglog: a persistent segmented log for Maelstrom's kafka workload, and a
//! Kafka-compatible and HTTP log server on the same engine.
//!
//! # Layout
//! Layers, each a folder; a layer calls only the ones listed before it
//! (`ARCHITECTURE.md` has the map, and `tidy.rs` checks it).
//! - [`storage`]: the engine. Segment files, the sparse index, the write-ahead
//!   journal, checkpoints, recovery, committed offsets, sync points and the
//!   group commit; it knows nothing of any protocol or cluster.
//! - [`node`]: the Maelstrom front end: the protocol, the event loop, and
//!   the cluster (owners, forwarding, replication).
//! - [`auth`]: who may connect to `seglog serve` and what they may do: TLS,
//!   the users file, SASL and basic auth's password checks, topic prefixes.
//! - [`cluster`]: `seglog serve` as a cluster: the membership (`--peers`)
//!   and the TCP peer links that carry the Raft groups' batches.
//! - [`broker`]: what `seglog serve`'s front ends share: topics, consumer
//!   group offsets, retention, metrics, record payloads, and one typed error.
//! - [`http`]: topics, produce, fetch and group offsets over HTTP, on the broker.
//! - [`kafka`]: the Kafka wire protocol, on the broker.
//! - [`serve`]: `seglog serve`'s arguments, start, listeners and shutdown,
//!   above both front ends.
//! - [`inspect`]: the offline inspector behind `seglog inspect`; reads files, never
//!   the engine's open state.
//! - [`cli`]: the command-line client (`seglog topic`, `produce`, `consume`,
//!   `group`) of a running server's HTTP API; it imports no server module.
//! - Leaf modules any layer may use: [`table`] (aligned columns), [`log`] (stderr logging), [`lock`]
//!   (locks that survive a panicked holder), [`data_dir`] (where a process
//!   keeps its data), [`lazy_alloc`] (the binary's allocator, which maps
//!   huge allocations lazily: a Kafka request announcing a huge array must
//!   not abort).

pub mod auth;
pub mod broker;
pub mod cli;
pub mod cluster;
pub mod data_dir;
pub mod http;
pub mod inspect;
pub mod kafka;
pub mod lazy_alloc;
pub mod lock;
pub mod log;
pub mod node;
pub mod raft;
pub mod serve;
pub mod storage;
pub mod table;
#[cfg(test)]
mod tidy;

pub use storage::error::{Error, Result};
pub use storage::store::{Store, StoreConfig, SyncPlan};
