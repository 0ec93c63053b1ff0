//! A nemesis that fails one node's disk now and then: the node runs with the `LD_PRELOAD`
//! shim of `tests/durability/faults.c` (built by the test), and each fault is the flag file that
//! makes its next fdatasync fail with EIO. The node must heal its store in place, in the same
//! process: each heal is waited for in the node's log and recorded in the timeline, so a test
//! can count them.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::supervisor::Supervisor;
use super::timeline::Timeline;

/// The shim's flag for one failed fdatasync, which the shim removes when it fires.
pub const FDATASYNC_EIO: &str = "fdatasync-eio";

/// What the node logs once its store is healed in place (`src/node/server.rs`).
pub const HEALED: &str = "store healed in place";

/// What the timeline records for each heal seen.
pub const HEALED_EVENT: &str = "healed in place";

/// How long a fault may wait for the node's next fdatasync, and then for its heal: under the
/// workload a sync point comes every few milliseconds, and a heal takes its backoff (100 ms to
/// 1 s) plus a reopen and the groups' start.
const PATIENCE: Duration = Duration::from_secs(10);

/// How often the flag and the log are looked at.
const LOOK_EVERY: Duration = Duration::from_millis(10);

/// Fails `faults` fdatasyncs of node `node`, spread over `duration` from `start`, through the
/// flag directory `flags`; waits for each heal in the node's log at `log`. A fault that does
/// not fire, or a heal that does not come, fails the run.
#[expect(
    clippy::too_many_arguments,
    reason = "the nemesis's inputs, as its callers hold them"
)]
pub fn run(
    supervisor: &Supervisor,
    timeline: &Timeline,
    node: usize,
    flags: &Path,
    log: &Path,
    start: Instant,
    duration: Duration,
    faults: u32,
) {
    let slot = duration / faults.max(1);
    for index in 0..faults {
        thread::sleep((start + slot * index + slot / 2).saturating_duration_since(Instant::now()));
        if supervisor.workload_over() || supervisor.failure().is_some() {
            return;
        }
        let heals_before = heals(log);
        let flag = flags.join(FDATASYNC_EIO);
        if let Err(e) = fs::write(&flag, b"") {
            supervisor.fail(format!("arming {}: {e}", flag.display()));
            return;
        }
        timeline.record(format_args!("n{node}: the next fdatasync fails with EIO"));
        let deadline = Instant::now() + PATIENCE;
        while flag.exists() {
            if Instant::now() >= deadline {
                supervisor.fail(format!("n{node} made no fdatasync within {PATIENCE:?}"));
                return;
            }
            thread::sleep(LOOK_EVERY);
        }
        timeline.record(format_args!("n{node}: an fdatasync failed"));
        while heals(log) <= heals_before {
            if Instant::now() >= deadline {
                supervisor.fail(format!("n{node} did not heal in place within {PATIENCE:?}"));
                return;
            }
            thread::sleep(LOOK_EVERY);
        }
        timeline.record(format_args!("n{node}: {HEALED_EVENT}"));
    }
}

/// How many heals the node's log reports.
fn heals(log: &Path) -> usize {
    fs::read_to_string(log).map_or(0, |text| text.matches(HEALED).count())
}
