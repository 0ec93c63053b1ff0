//! The test tier: how big the long-running scenarios are, for the whole
//! suite at once.
//!
//! `SEGLOG_TEST_TIER` unset (or `short`) is the default: every scenario runs,
//! smaller (fewer keys, shorter workloads, fewer crash points and kills), so
//! that `cargo test --release` is quick on a laptop. `SEGLOG_TEST_TIER=long`
//! runs each at its full size; CI (`.ci/run`) runs that. A scenario's own
//! variable (`SEGLOG_MANY_KEYS`, `SEGLOG_POWERLOSS_*`, `SEGLOG_SIM_*`,
//! `SEGLOG_CLUSTER_SECS`, ...) still sets its size, over either tier. The
//! property tests take `PROPTEST_CASES` and are the same in both tiers
//! (they take about two seconds). What each scenario runs in each tier is in the README
//! ("Set up and test on a fresh machine") and beside its constants.

/// The variable that picks the tier.
pub const TIER_VAR: &str = "SEGLOG_TEST_TIER";

/// How big the long scenarios run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// The default: every scenario, at a size that keeps the suite short.
    Short,
    /// The full sizes, as CI runs them.
    Long,
}

/// The tier `SEGLOG_TEST_TIER` asks for; any value but `short` and `long`
/// fails the test rather than run a tier nobody asked for.
pub fn tier() -> Tier {
    match std::env::var(TIER_VAR) {
        Err(std::env::VarError::NotPresent) => Tier::Short,
        Ok(text) if text.is_empty() || text == "short" => Tier::Short,
        Ok(text) if text == "long" => Tier::Long,
        Ok(text) => panic!("{TIER_VAR}={text:?}: the tiers are `short` (the default) and `long`"),
        Err(e) => panic!("{TIER_VAR}: {e}"),
    }
}

/// `short` in the default tier, `long` in the long one.
pub fn pick<T>(short: T, long: T) -> T {
    match tier() {
        Tier::Short => short,
        Tier::Long => long,
    }
}

/// The number in the environment variable `var` if it is set (it overrides
/// the tier), else the tier's: `short` or `long`.
pub fn sized(var: &str, short: u64, long: u64) -> u64 {
    env_u64(var).unwrap_or_else(|| pick(short, long))
}

/// The number in the environment variable `name`, if set; a value that is
/// not a number fails the test rather than be ignored.
pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|text| {
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={text:?} is not a number: {e}"))
    })
}
