//! What the test binaries share: one copy of each helper, included by every
//! binary that needs it as `#[path = "support/mod.rs"] mod support;`.
//!
//! # Layout
//! - `tier`: `SEGLOG_TEST_TIER`, the suite's one switch between the default
//!   (short) sizes of the long scenarios and the full ones CI runs.
//! - `tools`: the programs the tests run besides seglog (cc, kcat, the Python
//!   Kafka clients); a missing one fails the test with the command that
//!   installs it. Builds the `LD_PRELOAD` shims with cc.
//! - `own_process`: runs one test in a process of its own, for a test that
//!   changes what the whole process shares (its descriptor limit).
//! - `dirs`: copies of directory trees.
//! - `kafka_wire`: raw Kafka request frames, replies and record batches.
//! - `node_process`: a `seglog` node process over its stdin and stdout.
//! - `serve_process`: a `seglog serve` process and an HTTP client for it.
//! - `workload/`: the Maelstrom-style workload harness and its checker.
//!   Only the node binary and the node bench use it, so it is not declared
//!   here: they include it as `mod workload`, and the other binaries do not
//!   compile it.
//! - `proxy.rs`: a fault-injecting TCP proxy (cut, delay, resume) between
//!   cluster nodes; the cluster binary includes it as `mod proxy`, as the
//!   workload is included.
//! - `cluster_process.rs`: three `seglog serve` processes as one cluster,
//!   with those proxies between them (kill -9, restart, cut, heal); the
//!   cluster binary includes it as `mod cluster_process`, beside `proxy`.
#![allow(dead_code, reason = "each test binary uses its own part")]

pub mod dirs;
pub mod kafka_wire;
pub mod node_process;
pub mod own_process;
pub mod serve_process;
pub mod tier;
pub mod tools;
