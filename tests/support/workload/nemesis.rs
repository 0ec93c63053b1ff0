//! The kill nemesis: SIGKILLs a node (or every node) at random moments and restarts it on the
//! same data directory with the same init, sometimes killing the restarting process again in the
//! middle of its recovery.

use std::thread;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;

use super::supervisor::Supervisor;
use super::timeline::Timeline;

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

/// Which nodes one kill takes down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Victims {
    /// One node picked at random (the lone node of a one-node run); the others keep serving.
    One,
    /// Every node at once, restarted together: nothing but the disks survives.
    All,
}

/// Kills `kills` times, spread over `duration` from `start`. Stops early when the workload ends
/// or a node fails (the supervisor records the failure).
pub fn run(
    supervisor: &Supervisor,
    mut rng: StdRng,
    start: Instant,
    duration: Duration,
    kills: u32,
    victims: Victims,
    timeline: &Timeline,
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
        let result = match victims {
            Victims::One => kill_one(supervisor, &mut rng, timeline),
            Victims::All => kill_all(supervisor, &mut rng, timeline),
        };
        if result.is_err() {
            return;
        }
    }
}

/// Kills one random node, leaves it down a while, and restarts it.
fn kill_one(supervisor: &Supervisor, rng: &mut StdRng, timeline: &Timeline) -> Result<(), String> {
    let node = rng.gen_range(0..supervisor.node_count());
    timeline.record(format_args!("kill n{node}"));
    supervisor.kill(node)?;
    thread::sleep(DOWNTIME_MAX.mul_f64(rng.gen_range(0.0..1.0)));
    maybe_kill_during_start(supervisor, rng, node, timeline)?;
    supervisor.restart(node)?;
    timeline.record(format_args!("n{node} restarted"));
    Ok(())
}

/// Kills every node, leaves the cluster down a while, and restarts all nodes at once.
fn kill_all(supervisor: &Supervisor, rng: &mut StdRng, timeline: &Timeline) -> Result<(), String> {
    timeline.record("kill every node");
    supervisor.kill_all()?;
    thread::sleep(DOWNTIME_MAX.mul_f64(rng.gen_range(0.0..1.0)));
    for node in 0..supervisor.node_count() {
        maybe_kill_during_start(supervisor, rng, node, timeline)?;
    }
    supervisor.restart_all()?;
    timeline.record("every node restarted");
    Ok(())
}

fn maybe_kill_during_start(
    supervisor: &Supervisor,
    rng: &mut StdRng,
    node: usize,
    timeline: &Timeline,
) -> Result<(), String> {
    if rng.gen_range(0..100) < KILL_DURING_START_PERCENT {
        let after = KILL_DURING_START_MAX.mul_f64(rng.gen_range(0.0..1.0));
        timeline.record(format_args!(
            "kill n{node} {} ms into a restart",
            after.as_millis()
        ));
        supervisor.kill_during_start(node, after)?;
    }
    Ok(())
}
