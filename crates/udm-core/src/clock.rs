//! `Clock`: the time source targets read (flakey's up/down cycle, delay's deadlines), with a
//! real monotonic implementation and a manual one that tests move by hand.

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A monotonic time source. `now` is the time since the clock's own origin.
pub trait Clock: Send + Sync {
    fn now(&self) -> Duration;
    /// The longest a waiter should sleep before looking at `now` again. A real clock says
    /// `None` (sleep until the deadline); a manual clock jumps when a test moves it, so waiters
    /// must poll.
    fn poll_interval(&self) -> Option<Duration> {
        None
    }
}

/// Wall-clock monotonic time (`Instant`) since the clock was made.
#[derive(Debug, Clone, Copy)]
pub struct RealClock {
    origin: Instant,
}

impl RealClock {
    pub fn new() -> RealClock {
        RealClock {
            origin: Instant::now(),
        }
    }
    /// A shared real clock, ready to hand to a target type.
    pub fn shared() -> Arc<dyn Clock> {
        Arc::new(RealClock::new())
    }
}

impl Default for RealClock {
    fn default() -> RealClock {
        RealClock::new()
    }
}

impl Clock for RealClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that only moves when told to (`advance`, `set`). Cheap to clone; clones share time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<Mutex<Duration>>,
}

impl ManualClock {
    pub fn new() -> ManualClock {
        ManualClock::default()
    }
    /// Move time forward by `d`.
    pub fn advance(&self, d: Duration) {
        *self.now.lock() += d;
    }
    /// Set the time (it may not go backwards: earlier values are ignored).
    pub fn set(&self, t: Duration) {
        let mut g = self.now.lock();
        if t > *g {
            *g = t;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self.now.lock()
    }
    fn poll_interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new();
        let shared = c.clone();
        assert_eq!(c.now(), Duration::ZERO);
        c.advance(Duration::from_secs(3));
        assert_eq!(shared.now(), Duration::from_secs(3));
        c.set(Duration::from_secs(1));
        assert_eq!(c.now(), Duration::from_secs(3));
        c.set(Duration::from_secs(10));
        assert_eq!(shared.now(), Duration::from_secs(10));
    }

    #[test]
    fn real_clock_is_monotonic() {
        let c = RealClock::new();
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
    }
}
