//! `seglog serve` as a cluster: how nodes find and talk to each other.
//!
//! Built so far: the cluster's membership from the command line, the
//! TCP links between nodes that carry the Raft groups' per-peer batches
//! ([`crate::raft::transport::Batch`]), each peer authenticated by the
//! cluster secret and each frame by its session, the runtime that runs a
//! node's groups over those links, and the cluster's metadata as the fold
//! of group 0's log, and the node `seglog serve --peers` runs: group 0
//! over the broker's store, topics created and deleted through it, the
//! broker's catalog folded from it; partitions replicated by their own
//! groups (produce, HTTP and Kafka, through them), consumer group offsets
//! through group 0. Not built yet: forwarding from a node without a
//! replica, record deletions and config changes
//! (`docs/serve-cluster-design.md` has the plan; issue 20).
//!
//! This layer knows the Raft groups, the leaves and the broker's catalog
//! and name rules (a cluster's topics are the broker's topics); it knows
//! nothing of HTTP or Kafka, and the broker knows nothing of it.
//!
//! # Layout
//! - [`peers`]: `--cluster-id`, `--node-id` and `--peers`, parsed and
//!   checked: the cluster and its membership.
//! - [`secret`]: the cluster secret, read from `--cluster-secret-file`.
//! - [`handshake`]: how two nodes prove they hold the secret, and how each
//!   frame after that is authenticated, without I/O.
//! - [`frame`]: the peer link's frames and their codec, without I/O.
//! - [`link`]: the peer links over tokio: dialing, the handshake,
//!   keepalives, bounded queues, reconnecting (its outgoing and incoming
//!   sides in `link/`).
//! - [`runtime`]: the loop that joins the node's Raft groups to its links:
//!   the tick, each peer's batch to its link, each batch received to the
//!   groups.
//! - [`metadata`]: the cluster's metadata (nodes, topics, partitions'
//!   groups and replicas, committed offsets, id counters), folded from
//!   the records of group 0's key `cluster.metadata`.
//! - [`node`]: the node `seglog serve --peers` runs: the above started
//!   over the broker, its metadata followed into the broker's catalog,
//!   the broker's topic changes proposed to group 0; whose a data
//!   directory is.
//! - [`partition`]: how a partition's group applies its appends (an
//!   idempotent producer's batches judged at apply), and a produce's
//!   outcome from its proposals.

pub mod frame;
pub mod handshake;
pub mod leads;
pub mod link;
pub mod metadata;
pub mod node;
pub mod partition;
pub mod peers;
pub mod runtime;
pub mod secret;
