//! `seglog serve` as a cluster: how nodes find and talk to each other.
//!
//! Built so far: the cluster's membership from the command line, and the
//! TCP links between nodes that carry the Raft groups' per-peer batches
//! ([`crate::raft::transport::Batch`]), each peer authenticated by the
//! cluster secret and each frame by its session. Not built yet: the
//! metadata group, replicated partitions and routing
//! (`docs/serve-cluster-design.md` has the plan; issue 20). Until they
//! are, `seglog serve` refuses to start with `--peers` rather than run a
//! cluster that is not one.
//!
//! This layer knows the Raft groups and the leaves; it knows nothing of
//! HTTP, Kafka or the broker.
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

pub mod frame;
pub mod handshake;
pub mod link;
pub mod metadata;
pub mod peers;
pub mod secret;
