//! The run's seed: `SEGLOG_SEED` to replay a run's random choices, else a fresh one.
//!
//! Thread timing still differs between runs, so a seed replays the workload's choices (keys,
//! operation mix, kill moments), not the exact interleaving.

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

/// The environment variable that fixes the seed.
pub const SEED_VAR: &str = "SEGLOG_SEED";

/// The seed from `SEGLOG_SEED`, or a random one.
pub fn from_env() -> u64 {
    match std::env::var(SEED_VAR) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{SEED_VAR}={text:?} is not a u64: {e}")),
        Err(_) => rand::random(),
    }
}

/// A generator for one participant (a client, the nemesis), derived from the run's generator.
pub fn fork(master: &mut StdRng) -> StdRng {
    StdRng::seed_from_u64(master.next_u64())
}
