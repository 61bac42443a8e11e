//! Reproducible property tests: every proptest in the workspace takes its config from
//! [`config`], which fixes the RNG seed and prints it, so a CI failure replays exactly.

use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestRunner};

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

/// A runner for a property test that needs a fixture built once (a server, a daemon):
/// [`config`]'s seed and `cases`, with failures saved to and replayed from
/// the regressions file proptest keeps beside `source_file` (pass `file!()`), as
/// `proptest!` does.
/// Use it as `runner(16, file!()).run(&strategy, |v| { ...; Ok(()) }).unwrap()`.
pub fn runner(cases: u32, source_file: &'static str) -> TestRunner {
    TestRunner::new(Config {
        source_file: Some(source_file),
        ..config(cases)
    })
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
