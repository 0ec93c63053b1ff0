//! A Maelstrom-style kafka workload against the real `seglog` binary, with SIGKILL restarts, and
//! the checker that judges its history. Shared by the integration tests, the soak test and the
//! node benchmark, each of which uses part of it.
//!
//! # Layout
//! - `history`: operations, outcomes and the final read, as the checker sees them.
//! - `protocol`: request bodies out, strictly decoded reply bodies in.
//! - `checker`: the pure function from history and final read to anomalies.
//! - `connection`: the multiplexer over one process's stdin and stdout.
//! - `node`: one node process: start and init, SIGKILL, clean shutdown.
//! - `supervisor`: the node across restarts, as clients and the nemesis share it.
//! - `recorder`: performs an operation and appends it to the history.
//! - `keys`: the rotating keys and unique values clients send.
//! - `client`: one Maelstrom-like kafka client.
//! - `nemesis`: SIGKILLs and restarts the node at random moments.
//! - `final_read`: reads every key back after the last restart.
//! - `report`: summary line, failure details, kept artifacts.
//! - `harness`: one run from start to verdict.
//! - `seed`: the run's seed from `SEGLOG_SEED`.

pub mod checker;
pub mod client;
pub mod connection;
pub mod final_read;
pub mod harness;
pub mod history;
pub mod keys;
pub mod nemesis;
pub mod node;
pub mod protocol;
pub mod recorder;
pub mod report;
pub mod seed;
pub mod supervisor;
