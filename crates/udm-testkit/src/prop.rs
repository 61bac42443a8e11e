//! Reproducible property tests: every proptest in the workspace takes its config from
//! [`config`], which fixes the RNG seed and prints it, so a CI failure replays exactly.

use proptest::test_runner::{Config, RngAlgorithm, RngSeed};

/// The seed used when `UDM_PROPTEST_SEED` is not set.
pub const DEFAULT_SEED: u64 = 0x0075_646d; // "udm"

/// The seed from `UDM_PROPTEST_SEED` (decimal or `0x` hex), else [`DEFAULT_SEED`].
/// Panics on a malformed value rather than silently falling back.
pub fn seed() -> u64 {
    crate::rng::env_u64("UDM_PROPTEST_SEED").unwrap_or(DEFAULT_SEED)
}

/// A proptest config running `cases` cases from the fixed seed; prints the seed to stderr.
pub fn config(cases: u32) -> Config {
    let seed = seed();
    eprintln!("proptest: seed {seed:#x} ({cases} cases; UDM_PROPTEST_SEED overrides)");
    Config {
        cases,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;

    #[test]
    fn the_seed_fixes_the_values() {
        let draw = || {
            let mut r = TestRunner::new(config(1));
            (0..8)
                .map(|_| (0u64..1 << 40).new_tree(&mut r).unwrap().current())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(), draw());
        assert_eq!(config(5).rng_seed, RngSeed::Fixed(seed()));
    }
}
