//! The nemesis: SIGKILLs the node at random moments and restarts it on the same data directory,
//! sometimes killing the restarting process again in the middle of its recovery.

use std::thread;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;

use super::supervisor::Supervisor;

/// Longest pause between a kill and the restart, so clients see the node down for a while.
const DOWNTIME_MAX: Duration = Duration::from_millis(200);

/// Share of kills followed by a second kill of the restarting process, in percent.
const KILL_DURING_START_PERCENT: u32 = 25;

/// The second kill lands this soon after the process starts: within its recovery, or before it
/// even opened the data directory.
const KILL_DURING_START_MAX: Duration = Duration::from_millis(20);

/// Each kill falls at a random point of its own slot of the run, away from the slot's edges so
/// consecutive kills do not bunch up.
const SLOT_FRACTION_MIN: f64 = 0.1;
const SLOT_FRACTION_MAX: f64 = 0.9;

/// Kills the node `kills` times, spread over `duration` from `start`. Stops early when the
/// workload ends or the node fails (the supervisor records the failure).
pub fn run(
    supervisor: &Supervisor,
    mut rng: StdRng,
    start: Instant,
    duration: Duration,
    kills: u32,
) {
    if kills == 0 {
        return;
    }
    let slot = duration / kills;
    for index in 0..kills {
        let at = start
            + slot * index
            + slot.mul_f64(rng.gen_range(SLOT_FRACTION_MIN..SLOT_FRACTION_MAX));
        thread::sleep(at.saturating_duration_since(Instant::now()));
        if supervisor.workload_over() || supervisor.failure().is_some() {
            return;
        }
        if supervisor.kill().is_err() {
            return;
        }
        thread::sleep(DOWNTIME_MAX.mul_f64(rng.gen_range(0.0..1.0)));
        if rng.gen_range(0..100) < KILL_DURING_START_PERCENT {
            let after = KILL_DURING_START_MAX.mul_f64(rng.gen_range(0.0..1.0));
            if supervisor.kill_during_start(after).is_err() {
                return;
            }
        }
        if supervisor.restart().is_err() {
            return;
        }
    }
}
