//! A Maelstrom-style kafka workload against real `seglog` processes, one node or a cluster of
//! them joined by a router, with SIGKILL restarts and network partitions, and the checker that
//! judges its history. Used by the node test binary (`tests/node.rs`, which also holds this
//! harness's unit tests) and by the node benchmark, each of which uses part of it.
//!
//! # Layout
//! - `history`: operations, outcomes and the final reads, as the checker sees them.
//! - `protocol`: request bodies out, strictly decoded reply bodies in.
//! - `checker`: the pure function from history and final reads to anomalies.
//! - `connection`: the multiplexer over one process's stdin and stdout, routing its lines.
//! - `traffic`: message counts for msgs-per-op, as Maelstrom counts them.
//! - `router`: the network between a cluster's nodes: delay, loss, partitions.
//! - `partition`: which nodes can reach which, and the shapes partitions take.
//! - `node`: one node process: start and init, SIGKILL, clean shutdown.
//! - `supervisor`: the nodes across restarts, as clients and the nemesis share them.
//! - `recorder`: performs an operation and appends it to the history.
//! - `keys`: the rotating keys and unique values clients send.
//! - `client`: one Maelstrom-like kafka client, pinned to one node.
//! - `nemesis`: SIGKILLs and restarts one node or all of them at random moments.
//! - `partition_nemesis`: partitions the network and heals it, a few cycles.
//! - `disk_nemesis`: fails one node's fdatasync now and then; the node heals in place.
//! - `timeline`: what the nemesis did and when, for a failed run's report.
//! - `final_read`: reads every key back: once for a lone node, until caught up for a cluster.
//! - `report`: summary line, failure details, kept artifacts.
//! - `harness`: one lone-node run from start to verdict, and the workload phase both kinds share.
//! - `cluster`: one cluster run from start to verdict.
//! - `seed`: the run's seed from `SEGLOG_SEED`.

pub mod checker;
pub mod client;
pub mod cluster;
pub mod connection;
pub mod disk_nemesis;
pub mod final_read;
pub mod harness;
pub mod history;
pub mod keys;
pub mod leader_nemesis;
pub mod nemesis;
pub mod node;
pub mod partition;
pub mod partition_nemesis;
pub mod protocol;
pub mod recorder;
pub mod report;
pub mod router;
pub mod seed;
pub mod supervisor;
pub mod timeline;
pub mod traffic;
