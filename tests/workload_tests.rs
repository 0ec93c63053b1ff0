//! The workload in CI: the checker's unit tests, and two short runs against the real binary, one
//! without faults and one with SIGKILL restarts. Print their summaries with `--nocapture`.

#[allow(
    dead_code,
    reason = "shared with the soak test and the node bench, each using a part"
)]
mod workload;

// Not declared in `workload/mod.rs`, so only this test binary runs these unit tests.
#[path = "workload/checker_tests.rs"]
mod checker_tests;
#[path = "workload/protocol_tests.rs"]
mod protocol_tests;

use std::time::Duration;

use workload::harness::{self, Config, Ending};
use workload::history::{OpKind, OutcomeClass};

/// Long enough for hundreds of keys at Maelstrom's rate, short enough for CI.
const CLEAN_RUN: Duration = Duration::from_secs(10);
const KILL_RUN: Duration = Duration::from_secs(15);
const CLIENTS: u32 = 4;

/// Kill cycles during the kill run, one per slot of 15 s / 8; the test asks for at least
/// `KILLS_MIN` in total, leaving room for a late one skipped at the end of the run.
const KILLS_PLANNED: u32 = 8;
const KILLS_MIN: u32 = 5;

/// Without faults, every kind of operation succeeds and the history is valid, through a clean
/// shutdown (exit 0) and a restart before the final read.
#[test]
fn workload_without_faults_is_valid() {
    let config = Config::new("clean", CLEAN_RUN, CLIENTS);
    let report = harness::run(&config);
    eprintln!("{}", report.summary());
    assert!(report.is_valid(), "{}", report.details());
    for kind in OpKind::ALL {
        assert!(
            report.count(kind, OutcomeClass::Ok) > 0,
            "no {} succeeded\n{}",
            kind.name(),
            report.details()
        );
    }
    assert_eq!(report.kills, 0, "{}", report.details());
}

/// SIGKILL at random moments and restart on the same directory: every acknowledged send and
/// every polled record survives, and no anomaly appears.
#[test]
fn workload_with_kill_restarts_loses_nothing() {
    let config = Config {
        kills: KILLS_PLANNED,
        ending: Ending::Kill,
        ..Config::new("kill", KILL_RUN, CLIENTS)
    };
    let report = harness::run(&config);
    eprintln!("{}", report.summary());
    assert!(report.is_valid(), "{}", report.details());
    assert!(
        report.kills >= KILLS_MIN,
        "only {} kills\n{}",
        report.kills,
        report.details()
    );
    assert!(report.acked_sends() > 0, "{}", report.details());
}
