//! Power loss at every operation of seeded workloads, at random operations
//! of random workloads, and a second power loss during recovery.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use seglog::storage::sim::{Keep, SimFs};

use crate::support::tier;
use crate::workload::*;

/// Workloads crashed at every operation (`SEGLOG_SIM_SEEDS`): by default
/// two, about 3 s in release; four in the long tier, about 10 s.
const EXHAUSTIVE_SEEDS_SHORT: u64 = 2;
const EXHAUSTIVE_SEEDS_LONG: u64 = 4;

/// Random images per crash point, besides the durable-only and the
/// keep-everything ones (`SEGLOG_SIM_IMAGES`): by default, and in the long
/// tier.
const RANDOM_IMAGES_SHORT: u64 = 1;
const RANDOM_IMAGES_LONG: u64 = 3;

/// Random workloads crashed at random points (`SEGLOG_SIM_RANDOM_SEEDS`):
/// by default, and in the long tier.
const RANDOM_SEEDS_SHORT: u64 = 100;
const RANDOM_SEEDS_LONG: u64 = 400;

/// Crash points per random workload.
const RANDOM_CRASHES_PER_SEED: usize = 4;

/// The random images per crash point of this tier, or `SEGLOG_SIM_IMAGES`.
fn random_images() -> u64 {
    tier::sized("SEGLOG_SIM_IMAGES", RANDOM_IMAGES_SHORT, RANDOM_IMAGES_LONG)
}

#[test]
fn power_loss_at_every_operation() {
    let started = Instant::now();
    let seeds = tier::sized(
        "SEGLOG_SIM_SEEDS",
        EXHAUSTIVE_SEEDS_SHORT,
        EXHAUSTIVE_SEEDS_LONG,
    );
    let random = random_images();
    let mut counts = Counts::default();
    let mut covered = Done::default();
    for seed in 0..seeds {
        let (ops, done) = count_ops(seed);
        covered.checkpoints += done.checkpoints;
        covered.detached_checkpoints += done.detached_checkpoints;
        covered.syncs_beside_checkpoint += done.syncs_beside_checkpoint;
        covered.truncations += done.truncations;
        covered.removals += done.removals;
        covered.split_syncs += done.split_syncs;
        assert!(done.closed, "seed {seed}: the clean close failed");
        let keeps = images(random, seed);
        for crash in 0..ops {
            crash_and_check(seed, SHAPE, crash, &keeps, &mut counts);
        }
    }
    // The crash points covered every kind of step the test claims.
    assert!(
        covered.checkpoints > 0
            && covered.detached_checkpoints > 0
            && covered.syncs_beside_checkpoint > 0
            && covered.truncations > 0
            && covered.removals > 0
            && covered.split_syncs > 0,
        "the workloads did not cover every step: {covered:?}"
    );
    println!(
        "power_loss_at_every_operation: {seeds} workload seeds, {} crash points, {} images \
         ({random} random per crash point), {} second power losses in recovery, {} kill -9 restarts (each then \
         power-lost twice), {} checkpoints ({} detached, {} sync points acknowledged beside one), {:.1} s",
        counts.crash_points,
        counts.images,
        counts.recovery_crashes,
        counts.restarts,
        covered.checkpoints,
        covered.detached_checkpoints,
        covered.syncs_beside_checkpoint,
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn power_loss_at_random_operations_of_many_workloads() {
    let started = Instant::now();
    let seeds = tier::sized(
        "SEGLOG_SIM_RANDOM_SEEDS",
        RANDOM_SEEDS_SHORT,
        RANDOM_SEEDS_LONG,
    );
    let mut counts = Counts::default();
    for seed in RANDOM_SEED_BASE..RANDOM_SEED_BASE + seeds {
        let fs = SimFs::new();
        let shape = shape_for(seed);
        run_workload_shaped(seed, &fs, shape)
            .unwrap_or_else(|e| panic!("workload seed {seed} ({shape:?}): {e}"));
        let ops = fs.ops();
        let mut rng = StdRng::seed_from_u64(seed);
        for _ in 0..RANDOM_CRASHES_PER_SEED {
            let crash = rng.gen_range(0..ops);
            crash_and_check(seed, shape, crash, &images(1, seed ^ crash), &mut counts);
        }
    }
    println!(
        "power_loss_at_random_operations_of_many_workloads: {seeds} workload seeds, {} crash \
         points, {} images, {} second power losses in recovery, {} kill -9 restarts (each then \
         power-lost twice), {:.1} s",
        counts.crash_points,
        counts.images,
        counts.recovery_crashes,
        counts.restarts,
        started.elapsed().as_secs_f64()
    );
}

/// Reruns one crash point named by `SEGLOG_SIM_ONE=seed,crash` (with
/// `SEGLOG_SIM_TRACE=1` to see the workload's steps), for debugging a
/// failure of the sweeps above: `cargo test --release --test simulation
/// one_crash_point -- --ignored`.
#[test]
#[ignore = "a debugging aid: set SEGLOG_SIM_ONE=seed,crash and run it with --ignored"]
fn one_crash_point() {
    let spec =
        std::env::var("SEGLOG_SIM_ONE").expect("SEGLOG_SIM_ONE=seed,crash names the crash point");
    let (seed, crash) = spec.split_once(',').expect("SEGLOG_SIM_ONE=seed,crash");
    let seed = seed.trim().parse().expect("a seed");
    let crash = crash.trim().parse().expect("a crash point");
    let random = random_images();
    crash_and_check(
        seed,
        shape_for(seed),
        crash,
        &images(random, seed),
        &mut Counts::default(),
    );
}

/// Crash points of the exhaustive workload whose images get a second power
/// loss at every operation of their recovery, one in this many
/// (`SEGLOG_SIM_RECOVERY_STRIDE`): recovery runs 10 to 60 counted
/// operations, so this keeps the test to about 3 s in the long tier and 1 s
/// by default while every phase of the workload is sampled.
const RECOVERY_SWEEP_STRIDE_SHORT: u64 = 9;
const RECOVERY_SWEEP_STRIDE_LONG: u64 = 3;

#[test]
fn a_second_power_loss_at_every_operation_of_recovery() {
    let started = Instant::now();
    let seed = 0;
    let (ops, _) = count_ops(seed);
    let (mut images_checked, mut second_crashes) = (0, 0);
    let stride = tier::sized(
        "SEGLOG_SIM_RECOVERY_STRIDE",
        RECOVERY_SWEEP_STRIDE_SHORT,
        RECOVERY_SWEEP_STRIDE_LONG,
    )
    .max(1);
    for crash in (0..ops).step_by(stride as usize) {
        let fs = SimFs::new();
        fs.crash_at(crash);
        let model = run_workload(seed, &fs).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        // A random image, leaning by crash point to the durable or the
        // live state; recovery has the most to do on it.
        let image = fs.power_loss(Keep::Random(crash));
        images_checked += 1;
        let probe = image.power_loss(Keep::Everything);
        if let Ok(mut store) = open(&probe) {
            let _ = verify(&mut store, &model);
        }
        for second in 0..probe.ops() {
            let disk = image.power_loss(Keep::Everything);
            disk.crash_at(second);
            if let Ok(mut store) = open(&disk) {
                let _ = verify(&mut store, &model);
            }
            for keep in [Keep::Nothing, Keep::Random(second)] {
                let after = disk.power_loss(keep);
                second_crashes += 1;
                let checked = open_and_verify(&after, &model)
                    .and_then(|(store, observed)| append_after_recovery(&after, store, observed));
                if let Err(e) = checked {
                    panic!(
                        "workload seed {seed}, power loss at operation {crash}, image \
                         Random({crash}), second power loss at operation {second} of recovery, \
                         image {keep:?}: {e}"
                    );
                }
            }
        }
    }
    println!(
        "a_second_power_loss_at_every_operation_of_recovery: {images_checked} images, \
         {second_crashes} second power losses, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
