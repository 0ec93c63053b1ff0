//! `seglog serve` as a cluster: how nodes find and talk to each other.
//!
//! Built so far: the cluster's membership from the command line, and the
//! TCP links between nodes that carry the Raft groups' per-peer batches
//! ([`crate::raft::transport::Batch`]). Not built yet: the metadata group,
//! replicated partitions and routing (`notes/design-20.md` in the project
//! notes has the plan; issue 20). Until they are, `seglog serve` refuses to
//! start with `--peers` rather than run a cluster that is not one.
//!
//! This layer knows the Raft groups and the leaves; it knows nothing of
//! HTTP, Kafka or the broker.
//!
//! # Layout
//! - [`peers`]: `--node-id` and `--peers`, parsed and checked: the membership.
//! - [`frame`]: the peer link's frames and their codec, without I/O.
//! - [`link`]: the peer links over tokio: dialing, the hello, keepalives,
//!   bounded queues, reconnecting.

pub mod frame;
pub mod link;
pub mod peers;
