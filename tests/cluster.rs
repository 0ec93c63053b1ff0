//! `seglog serve` as a cluster (issue 20): the peer links between nodes,
//! over real sockets, through a fault-injecting proxy; their
//! authentication against strangers, replays, reflections and forged
//! frames; the runtime that joins Raft groups to the links; the cluster
//! flags of the real binary; and three real processes as one cluster,
//! their metadata group before all, Kafka clients producing through
//! their partitions' groups across a kill and a cut, requests routed
//! from nodes that hold no replica of a partition, and a node restarted
//! with an empty data directory, caught up and then needed for a majority.

#[path = "support/cluster_process.rs"]
mod cluster_process;
#[path = "support/proxy.rs"]
mod proxy;
#[path = "support/mod.rs"]
mod support;

#[path = "cluster/auth.rs"]
mod auth;
#[path = "cluster/kafka.rs"]
mod kafka;
#[path = "cluster/links.rs"]
mod links;
#[path = "cluster/metadata.rs"]
mod metadata;
#[path = "cluster/partitions.rs"]
mod partitions;
#[path = "cluster/restart.rs"]
mod restart;
#[path = "cluster/routing.rs"]
mod routing;
#[path = "cluster/runtime.rs"]
mod runtime;
#[path = "cluster/serve_flags.rs"]
mod serve_flags;
