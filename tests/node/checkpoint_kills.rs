//! SIGKILL restarts through the Maelstrom-style workload while checkpoints
//! run all the time: a checkpoint every few kilobytes of journal, so kills
//! land before, during and after checkpoints and in the middle of
//! rotations. The checkpoint size reaches the node through its environment.

use std::time::Duration;

use crate::support::tier;
use crate::workload::harness::{self, Config, Ending};
use crate::workload::node::NODE_ID;

/// A checkpoint every 16 KiB of journal: about one a second at Maelstrom's rate.
const CHECKPOINT_BYTES: &str = "16384";
const CLIENTS: u32 = 4;
/// The run's length and kills, by default and in the long tier: one kill
/// per slot of the run, and at least `KILLS_MIN` of them, leaving room for
/// a late one skipped at the end of the run.
const RUN_SHORT: Duration = Duration::from_secs(7);
const KILLS_PLANNED_SHORT: u32 = 4;
const KILLS_MIN_SHORT: u32 = 3;
const RUN_LONG: Duration = Duration::from_secs(15);
const KILLS_PLANNED_LONG: u32 = 8;
const KILLS_MIN_LONG: u32 = 5;
/// Checkpoints the run must have made (each one rotates the journal to the
/// next file number), so the kills had checkpoints to interrupt: by
/// default and in the long tier (a run makes about one a second on a
/// loaded 2-core machine).
const CHECKPOINTS_MIN_SHORT: u64 = 3;
const CHECKPOINTS_MIN_LONG: u64 = 5;

/// SIGKILL at random moments, checkpoints constantly: every acknowledged
/// send and commit survives, and no anomaly appears.
#[test]
fn workload_with_kills_during_checkpoints_loses_nothing() {
    let kills_min = tier::pick(KILLS_MIN_SHORT, KILLS_MIN_LONG);
    let config = Config {
        kills: tier::pick(KILLS_PLANNED_SHORT, KILLS_PLANNED_LONG),
        ending: Ending::Kill,
        node_env: vec![(
            seglog::storage::checkpoint::CHECKPOINT_BYTES_VAR.to_owned(),
            CHECKPOINT_BYTES.to_owned(),
        )],
        keep: true,
        ..Config::new("checkpoint-kill", tier::pick(RUN_SHORT, RUN_LONG), CLIENTS)
    };
    let report = harness::run(&config);
    eprintln!("{}", report.summary());
    assert!(report.is_valid(), "{}", report.details());
    assert!(report.kills >= kills_min, "only {} kills", report.kills);
    assert!(report.acked_sends() > 0, "{}", report.details());
    let kept = report.artifacts.clone().expect("kept with `keep`");
    let store = kept.join("data").join(NODE_ID);
    let found = seglog::storage::checkpoint::read(&seglog::storage::backend::RealFs, &store)
        .expect("read the checkpoint");
    let seglog::storage::checkpoint::Found::FirstLive(seq) = found else {
        panic!("no checkpoint in {}: {found:?}", store.display());
    };
    let checkpoints_min = tier::pick(CHECKPOINTS_MIN_SHORT, CHECKPOINTS_MIN_LONG);
    assert!(seq >= checkpoints_min, "only {seq} checkpoints");
    eprintln!("checkpoints: the journal is at file {seq}");
    std::fs::remove_dir_all(&kept).expect("remove the kept run directory");
}
