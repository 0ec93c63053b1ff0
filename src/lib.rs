//! seglog: a persistent segmented log for Maelstrom's kafka workload.
//!
//! # Layout
//! Four layers, each a folder; a layer calls only the ones listed before it.
//! - [`storage`]: the engine. Segment files, the sparse index, the write-ahead
//!   journal, checkpoints, recovery, committed offsets and sync points; it
//!   knows nothing of any protocol or cluster.
//! - [`node`]: the Maelstrom front end: the protocol, the event loop, group commit
//!   replies, and the cluster (owners, forwarding, replication).
//! - [`payload`]: what a stored record's bytes mean: JSON text, or a Kafka
//!   record (binary key, value, headers and timestamp); both front ends read both.
//! - [`http`]: `seglog serve`, topics and consumer groups over HTTP on the
//!   same engine; it shares the node's group commit ([`node::syncer`]).
//! - [`kafka`]: the Kafka wire protocol listener of `seglog serve`, on the
//!   HTTP server's state: the same store, topics, group offsets and group commit.
//! - [`inspect`]: the offline inspector behind `seglog inspect`; reads files, never
//!   the engine's open state.
//! - [`log`]: stderr logging, quiet by default, shared by all of them.
//! - [`lazy_alloc`]: the binary's allocator, which maps huge allocations
//!   lazily (a Kafka request announcing a huge array must not abort).

pub mod http;
pub mod inspect;
pub mod kafka;
pub mod lazy_alloc;
pub mod log;
pub mod node;
pub mod payload;
pub mod storage;

pub use storage::error::{Error, Result};
pub use storage::store::{Store, StoreConfig, SyncPlan};
