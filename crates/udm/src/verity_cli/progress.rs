//! A progress line on stderr while `udm verity` hashes data or encodes FEC, shown only when
//! stderr is a terminal.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Units done out of `total`.
pub struct Progress {
    done: AtomicU64,
    total: u64,
    stop: AtomicBool,
}

impl Progress {
    pub fn new(total: u64) -> Progress {
        Progress {
            done: AtomicU64::new(0),
            total: total.max(1),
            stop: AtomicBool::new(false),
        }
    }
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
    /// Run `f` (handed a callback counting units done) while showing progress labelled
    /// `what`.
    pub fn run<T>(&self, what: &str, f: impl FnOnce(&(dyn Fn(u64) + Sync)) -> T) -> T {
        let add = |n| self.add(n);
        if !std::io::stderr().is_terminal() {
            return f(&add);
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                while !self.stop.load(Ordering::Relaxed) {
                    let pct = self.done.load(Ordering::Relaxed) * 100 / self.total;
                    eprint!("\r{what}: {pct:3}%");
                    std::thread::sleep(Duration::from_millis(200));
                }
                eprint!("\r\x1b[K");
            });
            let r = f(&add);
            self.stop.store(true, Ordering::Relaxed);
            r
        })
    }
}
