//! Sector ranges in use on the data and tag areas (the kernel's `wait_and_add_new_range`):
//! a checked read and a write of overlapping blocks never run at once, so a read sees data
//! and tags of the same write, and a journal write-back never interleaves with a direct
//! write of the same blocks. Each holder takes one range at a time, except the journal
//! write-back, which takes its runs' ranges in ascending order while nothing else takes more
//! than one (no deadlock).

use parking_lot::{Condvar, Mutex};

/// The set of ranges held, `[start, end)` in logical sectors.
#[derive(Default)]
pub(crate) struct RangeLock {
    held: Mutex<Vec<(u64, u64)>>,
    freed: Condvar,
}

/// One held range; released on drop.
pub(crate) struct RangeGuard<'a> {
    lock: &'a RangeLock,
    range: (u64, u64),
}

impl RangeLock {
    /// Wait until no held range overlaps `[start, start + len)`, then hold it.
    pub(crate) fn lock(&self, start: u64, len: u64) -> RangeGuard<'_> {
        let range = (start, start + len);
        let mut h = self.held.lock();
        while h.iter().any(|&(s, e)| s < range.1 && range.0 < e) {
            self.freed.wait(&mut h);
        }
        h.push(range);
        RangeGuard { lock: self, range }
    }
}

impl Drop for RangeGuard<'_> {
    fn drop(&mut self) {
        let mut h = self.lock.held.lock();
        if let Some(i) = h.iter().position(|&r| r == self.range) {
            h.swap_remove(i);
        }
        drop(h);
        self.lock.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn overlapping_ranges_wait_disjoint_ones_do_not() {
        let l = Arc::new(RangeLock::default());
        let g = l.lock(8, 8);
        // Disjoint: taken at once.
        drop(l.lock(0, 8));
        drop(l.lock(16, 8));
        let done = Arc::new(AtomicBool::new(false));
        let (l2, d2) = (l.clone(), done.clone());
        let t = std::thread::spawn(move || {
            let _g = l2.lock(15, 2);
            d2.store(true, Ordering::SeqCst);
        });
        // The overlapping taker cannot finish while `g` is held (it sets `done` only
        // after taking the range, and the range is held until the drop below).
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!done.load(Ordering::SeqCst));
        drop(g);
        t.join().unwrap();
        assert!(done.load(Ordering::SeqCst));
    }
}
