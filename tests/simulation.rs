//! The real [`Store`](seglog::Store) on a simulated disk
//! ([`SimFs`](seglog::storage::sim::SimFs)): power loss at every operation
//! of a workload, a second power loss during recovery, and injected disk
//! faults. Everything runs in this process, in memory, and is reproducible
//! from the seeds printed on failure.
//!
//! `cargo test --release --test simulation -- --nocapture` prints how many
//! crash points, images and seeds each test checked. Environment variables
//! set the sizes, over the tier's (`support/tier.rs`): `SEGLOG_SIM_SEEDS`
//! (workloads crashed at every operation), `SEGLOG_SIM_IMAGES` (random
//! images per crash point), `SEGLOG_SIM_RANDOM_SEEDS` (random workloads
//! crashed at random points), `SEGLOG_SIM_SWEEP_SEEDS` (workloads of the
//! fault sweep) and `SEGLOG_SIM_RECOVERY_STRIDE` (1 gives a second power
//! loss at every operation of recovery after every crash point of one
//! workload). `SEGLOG_SIM_ONE=seed,crash SEGLOG_SIM_TRACE=1` reruns one
//! crash point and prints its workload's steps.
//!
//! The five engine bugs these tests found are fixed; each has a regression
//! test in `faults`, named after what the store must not do.

#[path = "support/mod.rs"]
mod support;

#[path = "simulation/faults.rs"]
mod faults;
#[path = "simulation/power_loss.rs"]
mod power_loss;
#[path = "simulation/workload.rs"]
mod workload;
