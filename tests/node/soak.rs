//! The long soak: many SIGKILL restarts over minutes, ignored by default.
//!
//! Run with
//! `cargo test --release --test node soak_with_many_kill_restarts -- --ignored --nocapture`.
//! Tune it with `SEGLOG_SOAK_SECS` (workload length), `SEGLOG_SOAK_CLIENTS`, `SEGLOG_SOAK_KILL_EVERY_SECS`
//! (mean time between kills), `SEGLOG_SOAK_RATE` (operations per second, 0 for flat out) and
//! `SEGLOG_SEED` (replay a run's choices).

use std::time::Duration;

use crate::support::tier;
use crate::workload::harness::{self, Config, Ending, MAELSTROM_RATE};

/// Five minutes: thousands of keys and about a hundred kills.
const SOAK_SECS_DEFAULT: u64 = 300;

/// Twice Maelstrom's `--concurrency 2n` for one node, to crowd the node harder than CI does.
const CLIENTS_DEFAULT: u64 = 8;

/// Mean seconds between kills; each kill falls in its own slot of this length.
const KILL_EVERY_SECS_DEFAULT: u64 = 3;

fn env_u64(name: &str, default: u64) -> u64 {
    tier::env_u64(name).unwrap_or(default)
}

#[test]
#[ignore = "minutes long; run with --ignored"]
fn soak_with_many_kill_restarts() {
    let secs = env_u64("SEGLOG_SOAK_SECS", SOAK_SECS_DEFAULT);
    let clients = u32::try_from(env_u64("SEGLOG_SOAK_CLIENTS", CLIENTS_DEFAULT))
        .expect("SEGLOG_SOAK_CLIENTS fits in u32");
    let kill_every = env_u64("SEGLOG_SOAK_KILL_EVERY_SECS", KILL_EVERY_SECS_DEFAULT).max(1);
    let rate = u32::try_from(env_u64("SEGLOG_SOAK_RATE", u64::from(MAELSTROM_RATE)))
        .expect("SEGLOG_SOAK_RATE fits in u32");
    let config = Config {
        kills: u32::try_from(secs / kill_every).expect("kill count fits in u32"),
        ending: Ending::Kill,
        rate: (rate > 0).then_some(rate),
        ..Config::new("soak", Duration::from_secs(secs), clients)
    };
    let report = harness::run(&config);
    eprintln!("{}", report.summary());
    assert!(report.is_valid(), "{}", report.details());
}
