//! The partition nemesis: cuts the network into a random partition and heals it, a few cycles,
//! as Maelstrom's `--nemesis partition` does on a shorter period.

use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;

use super::partition::Shape;
use super::router::Router;
use super::supervisor::Supervisor;
use super::timeline::Timeline;

/// Each cycle is one slot of the run: healthy until this fraction of the slot, partitioned
/// until [`HEAL_AT`], then healed again, so every partition is followed by a healed stretch in
/// which the cluster must catch up while the workload still runs.
const PARTITION_AT: f64 = 0.2;
const HEAL_AT: f64 = 0.7;

/// Runs `cycles` partition-and-heal cycles spread over `duration` from `start`, rotating through
/// every [`Shape`] from a random first one. Leaves the network healed, also when it stops early
/// because the run failed.
pub fn run(
    router: &Router,
    supervisor: &Supervisor,
    mut rng: StdRng,
    start: Instant,
    duration: Duration,
    cycles: u32,
    timeline: &Timeline,
) {
    if cycles == 0 {
        return;
    }
    let slot = duration / cycles;
    let first_shape = rng.gen_range(0..Shape::ALL.len());
    for index in 0..cycles {
        let slot_start = start + slot * index;
        supervisor.wait_until(slot_start + slot.mul_f64(PARTITION_AT));
        if supervisor.workload_over() || supervisor.failure().is_some() {
            break;
        }
        let cycle = usize::try_from(index).expect("cycle fits in usize");
        let shape = Shape::ALL[(first_shape + cycle) % Shape::ALL.len()];
        let partition = shape.draw(router.node_ids().len(), &mut rng);
        timeline.record(format_args!(
            "partition {}: {}",
            shape.name(),
            partition.describe(router.node_ids())
        ));
        router.partition(partition);
        supervisor.wait_until(slot_start + slot.mul_f64(HEAL_AT));
        router.heal();
        timeline.record("heal");
    }
    router.heal();
}
