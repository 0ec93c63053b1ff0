//! The workload against one real node: two runs, one without faults and
//! one with SIGKILL restarts. Print their summaries with `--nocapture`.

use std::time::Duration;

use crate::support::tier;
use crate::workload::harness::{self, Config, Ending};

/// Run lengths, by default and in the long tier: long enough for hundreds
/// of keys at Maelstrom's rate, short enough for CI.
const CLEAN_RUN_SHORT: Duration = Duration::from_secs(4);
const KILL_RUN_SHORT: Duration = Duration::from_secs(7);
const CLEAN_RUN_LONG: Duration = Duration::from_secs(10);
const KILL_RUN_LONG: Duration = Duration::from_secs(15);
const CLIENTS: u32 = 4;

/// Kill cycles during the kill run, one per slot of the run (15 s / 8 in the long tier); the test
/// asks for at least `KILLS_MIN` in total, leaving room for a late one skipped at the end of the
/// run.
const KILLS_PLANNED_SHORT: u32 = 4;
const KILLS_MIN_SHORT: u32 = 3;
const KILLS_PLANNED_LONG: u32 = 8;
const KILLS_MIN_LONG: u32 = 5;

/// Without faults, every kind of operation succeeds and the history is valid, through a clean
/// shutdown (exit 0) and a restart before the final read.
#[test]
fn workload_without_faults_is_valid() {
    let config = Config::new(
        "clean",
        tier::pick(CLEAN_RUN_SHORT, CLEAN_RUN_LONG),
        CLIENTS,
    );
    let report = harness::run(&config);
    eprintln!("{}", report.summary());
    assert!(report.is_valid(), "{}", report.details());
    report.assert_every_kind_succeeded();
    assert_eq!(report.kills, 0, "{}", report.details());
}

/// SIGKILL at random moments and restart on the same directory: every acknowledged send and
/// every polled record survives, and no anomaly appears.
#[test]
fn workload_with_kill_restarts_loses_nothing() {
    let kills_min = tier::pick(KILLS_MIN_SHORT, KILLS_MIN_LONG);
    let config = Config {
        kills: tier::pick(KILLS_PLANNED_SHORT, KILLS_PLANNED_LONG),
        ending: Ending::Kill,
        ..Config::new("kill", tier::pick(KILL_RUN_SHORT, KILL_RUN_LONG), CLIENTS)
    };
    let report = harness::run(&config);
    eprintln!("{}", report.summary());
    assert!(report.is_valid(), "{}", report.details());
    assert!(
        report.kills >= kills_min,
        "only {} kills\n{}",
        report.kills,
        report.details()
    );
    assert!(report.acked_sends() > 0, "{}", report.details());
}
