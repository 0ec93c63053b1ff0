//! The node and the cluster: the binary over stdin and stdout, random
//! requests against an in-process node, nodes in one process message by
//! message, and the Maelstrom-style kafka workload with its checker against
//! one real node (with `kill -9` restarts, and with checkpoints all the
//! time) and against a cluster joined by a router (partitions, kills); the
//! harness's own unit tests; and the soak, ignored unless asked for.

#[path = "support/mod.rs"]
mod support;
#[allow(
    dead_code,
    reason = "shared with the node bench, which uses other parts"
)]
#[path = "support/workload/mod.rs"]
mod workload;

#[path = "node/checker_tests.rs"]
mod checker_tests;
#[path = "node/checkpoint_kills.rs"]
mod checkpoint_kills;
#[path = "node/cluster.rs"]
mod cluster;
#[path = "node/cluster_protocol.rs"]
mod cluster_protocol;
#[path = "node/fuzz.rs"]
mod fuzz;
#[path = "node/lone_node.rs"]
mod lone_node;
#[path = "node/partition_tests.rs"]
mod partition_tests;
#[path = "node/protocol_tests.rs"]
mod protocol_tests;
#[path = "node/router_tests.rs"]
mod router_tests;
#[path = "node/soak.rs"]
mod soak;
#[path = "node/soak_disk.rs"]
mod soak_disk;
#[path = "node/stdio.rs"]
mod stdio;
