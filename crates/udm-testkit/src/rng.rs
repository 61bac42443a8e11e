//! Deterministic pseudo-random data for tests: one xorshift64 generator instead of a copy in
//! every test file. The same seed always gives the same bytes, on every machine.

/// Multiplier used to spread small seeds (0, 1, 2 …) over the state space.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// xorshift64 (shifts 13, 7, 17). Not for cryptography; for test data and test choices.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator starting from `seed` (made odd, so 0 is a valid seed).
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed | 1)
    }

    /// A generator whose small seeds give unrelated streams (the seed is scrambled first).
    pub fn mixed(seed: u64) -> XorShift {
        XorShift::new(seed.wrapping_mul(GOLDEN))
    }

    /// The next 64-bit value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        self.next_u64() % n
    }

    /// Fill `buf` with the low byte of successive values.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next_u64() as u8;
        }
    }

    /// `n` bytes (the low byte of successive values).
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

/// The number in the environment variable `var` (decimal or `0x` hex), if it is set.
/// Panics on a malformed value rather than silently falling back.
pub fn env_u64(var: &str) -> Option<u64> {
    let v = std::env::var(var).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{var}={v:?} is not a number")))
}

/// A test's seed: `var` from the environment ([`env_u64`]) or `default`, printed to
/// stderr so that a failing run can be replayed.
pub fn seed(var: &str, default: u64) -> u64 {
    let seed = env_u64(var).unwrap_or(default);
    eprintln!("seed {seed:#x} (set {var} to change)");
    seed
}

/// `n` pseudo-random bytes from `seed` (`XorShift::new(seed)`).
pub fn pseudo(n: usize, seed: u64) -> Vec<u8> {
    XorShift::new(seed).bytes(n)
}

/// `n` pseudo-random bytes from a scrambled `seed` (`XorShift::mixed(seed)`), so that
/// neighbouring seeds give unrelated data.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    XorShift::mixed(seed).bytes(n)
}

/// `n` bytes `hex`-encoded from `pseudo(n, seed)` (keys for table lines).
pub fn hex_key(n: usize, seed: u64) -> String {
    pseudo(n, seed).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_fixed_and_seeds_differ() {
        // The first values of xorshift64(13, 7, 17) from state 1, computed by hand.
        let mut r = XorShift::new(0);
        assert_eq!(r.next_u64(), 0x4082_2041);
        assert_eq!(pseudo(64, 7), pseudo(64, 7));
        assert_ne!(pseudo(64, 7), pseudo(64, 9));
        assert_ne!(noise(64, 2), noise(64, 3));
        assert_eq!(noise(16, 5), pseudo(16, 5u64.wrapping_mul(GOLDEN)));
        assert_eq!(hex_key(4, 1).len(), 8);
        let mut r = XorShift::new(3);
        assert!((0..1000).all(|_| r.below(10) < 10));
    }

    #[test]
    fn seeds_come_from_the_environment_or_the_default() {
        assert_eq!(seed("UDM_TESTKIT_SEED_UNSET", 42), 42);
        std::env::set_var("UDM_TESTKIT_SEED_HEX", "0x2a");
        assert_eq!(env_u64("UDM_TESTKIT_SEED_HEX"), Some(42));
        std::env::set_var("UDM_TESTKIT_SEED_DEC", "42");
        assert_eq!(seed("UDM_TESTKIT_SEED_DEC", 7), 42);
        std::env::set_var("UDM_TESTKIT_SEED_BAD", "4x2");
        assert!(std::panic::catch_unwind(|| env_u64("UDM_TESTKIT_SEED_BAD")).is_err());
    }
}
