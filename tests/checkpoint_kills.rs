//! SIGKILL restarts through the Maelstrom-style workload while checkpoints
//! run all the time: a checkpoint every few kilobytes of journal, so kills
//! land before, during and after checkpoints and in the middle of
//! rotations. Its own test binary, because the checkpoint size reaches the
//! node through its environment.

#[allow(
    dead_code,
    reason = "shared with the CI tests and the node bench, each using a part"
)]
mod workload;

use std::time::Duration;

use workload::harness::{self, Config, Ending, KEEP_VAR};

/// A checkpoint every 16 KiB of journal: about one a second at Maelstrom's rate.
const CHECKPOINT_BYTES: &str = "16384";
const RUN: Duration = Duration::from_secs(15);
const CLIENTS: u32 = 4;
const KILLS_PLANNED: u32 = 8;
const KILLS_MIN: u32 = 5;
/// Checkpoints the run must have made (each one rotates the journal to the
/// next file number), so the kills had checkpoints to interrupt.
const CHECKPOINTS_MIN: u64 = 5;

/// SIGKILL at random moments, checkpoints constantly: every acknowledged
/// send and commit survives, and no anomaly appears.
#[test]
fn workload_with_kills_during_checkpoints_loses_nothing() {
    // SAFETY (of the environment): this binary's only test sets these before
    // it starts any thread of its own or any child; the nodes inherit them.
    unsafe {
        std::env::set_var(
            seglog::storage::checkpoint::CHECKPOINT_BYTES_VAR,
            CHECKPOINT_BYTES,
        );
        std::env::set_var(KEEP_VAR, "1");
    }
    let config = Config {
        kills: KILLS_PLANNED,
        ending: Ending::Kill,
        ..Config::new("checkpoint-kill", RUN, CLIENTS)
    };
    let report = harness::run(&config);
    eprintln!("{}", report.summary());
    assert!(report.is_valid(), "{}", report.details());
    assert!(report.kills >= KILLS_MIN, "only {} kills", report.kills);
    assert!(report.acked_sends() > 0, "{}", report.details());
    let kept = report.artifacts.clone().expect("kept with SEGLOG_KEEP");
    let store = kept.join("data").join(workload::node::NODE_ID);
    let found = seglog::storage::checkpoint::read(&seglog::storage::backend::RealFs, &store)
        .expect("read the checkpoint");
    let seglog::storage::checkpoint::Found::FirstLive(seq) = found else {
        panic!("no checkpoint in {}: {found:?}", store.display());
    };
    assert!(seq >= CHECKPOINTS_MIN, "only {seq} checkpoints");
    eprintln!("checkpoints: the journal is at file {seq}");
    std::fs::remove_dir_all(&kept).expect("remove the kept run directory");
}
