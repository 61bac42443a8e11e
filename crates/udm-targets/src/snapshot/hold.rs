//! Origin writes acknowledged while their copies commit: a write-back stage in front of the
//! origin, like a disk's volatile write cache. A plain origin write takes a place here (and
//! its data: its own buffer when the submitter spares it, else a copy) as it arrives; it is
//! acknowledged once every snapshot has allocated the COW chunks for its chunks (in arrival
//! order, so allocation order is the kernel's), and its data goes to the origin when the
//! copies into those chunks are committed, exactly when the strict path would have sent the
//! write. So the client keeps its queue full while copies and commits run, and no origin
//! write reaches a chunk before the snapshot's copy of it is on disk.
//!
//! What sees a held write as done: a later read or write overlapping it waits until it is in
//! the origin (so nothing reads old data after the acknowledgement, and no later write is
//! overtaken); a flush (or a `PREFLUSH` write) waits for every write held before it, and
//! fails if one of them failed (the write-back error, reported once, as a write cache does);
//! suspending or removing the origin waits for all. As with any volatile write cache, a
//! daemon killed before the next flush loses writes it acknowledged since the last one,
//! never a snapshot's data. `UDM_SNAPSHOT_HOLD_MIB` caps the bytes held per origin (default
//! 32: enough to ride out a commit slowed by the disk's other work); 0 acknowledges origin
//! writes only once they are in the origin.

use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;
use udm_io::{Bio, IoError, SECTOR_SIZE};

/// Default cap on the bytes held per origin.
const DEFAULT_CAP_MIB: u64 = 32;

/// How long a suspend or removal waits for held writes before it gives up (they are then
/// written when their commit ends, after the call returned).
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// The cap from `UDM_SNAPSHOT_HOLD_MIB`, in bytes.
pub(crate) fn cap_from_env() -> u64 {
    std::env::var("UDM_SNAPSHOT_HOLD_MIB")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_CAP_MIB)
        .saturating_mul(1 << 20)
}

type Go = Box<dyn FnOnce(Bio) + Send>;

/// A bio waiting for held writes: those older than `before` that overlap `[start, end)`.
struct Parked {
    start: u64,
    end: u64,
    before: u64,
    bio: Bio,
    go: Go,
}

#[derive(Default)]
struct State {
    /// Held writes: (id, first sector, end sector, bytes), oldest first.
    held: Vec<(u64, u64, u64, u64)>,
    next: u64,
    parked: Vec<Parked>,
    /// The first error of a held write since the last flush that reported one.
    failed: Option<IoError>,
}

impl State {
    fn blocks(&self, start: u64, end: u64, before: u64) -> bool {
        self.held
            .iter()
            .any(|&(id, s, e, _)| id < before && s < end && start < e)
    }
}

/// The held writes of one origin.
pub(crate) struct Holds {
    cap: u64,
    /// Bytes held now (read without the lock on the fast path).
    bytes: AtomicU64,
    st: Mutex<State>,
    idle: Condvar,
}

impl Holds {
    pub(crate) fn new(cap: u64) -> Holds {
        Holds {
            cap,
            bytes: AtomicU64::new(0),
            st: Mutex::default(),
            idle: Condvar::new(),
        }
    }

    /// Hand `bio` back if nothing held overlaps `[start, end)`; otherwise keep it and run
    /// `go()(bio)` once the writes held now that overlap it are in the origin (`go` is only
    /// called then: nothing is made for a bio that passes). A flush passes the whole device.
    pub(crate) fn gate<F, G>(&self, bio: Bio, start: u64, end: u64, go: G) -> Option<Bio>
    where
        F: FnOnce(Bio) + Send + 'static,
        G: FnOnce() -> F,
    {
        if self.bytes.load(SeqCst) == 0 {
            return Some(bio);
        }
        let mut st = self.st.lock();
        let before = st.next;
        if !st.blocks(start, end, before) {
            return Some(bio);
        }
        st.parked.push(Parked {
            start,
            end,
            before,
            bio,
            go: Box::new(go()),
        });
        None
    }

    /// Take the write of `[sector, sector + len)` into the held set if its data fits under
    /// the cap; the id to pass to [`Holds::done`].
    pub(crate) fn try_hold(&self, sector: u64, len: u64) -> Option<u64> {
        let bytes = len.saturating_mul(SECTOR_SIZE);
        if self.cap == 0 {
            return None;
        }
        let mut st = self.st.lock();
        let now = self.bytes.load(SeqCst);
        if now.saturating_add(bytes) > self.cap {
            return None;
        }
        let id = st.next;
        st.next += 1;
        st.held
            .push((id, sector, sector.saturating_add(len), bytes));
        self.bytes.store(now + bytes, SeqCst);
        Some(id)
    }

    /// Held write `id` ended (in the origin, or failed): release what waited for it.
    pub(crate) fn done(&self, id: u64, res: Result<(), IoError>) {
        let ready = {
            let mut st = self.st.lock();
            if let Some(i) = st.held.iter().position(|h| h.0 == id) {
                let (_, _, _, b) = st.held.remove(i);
                self.bytes.fetch_sub(b, SeqCst);
            }
            if let Err(e) = res {
                tracing::error!("snapshot-origin: a write acknowledged early failed: {e}");
                st.failed.get_or_insert(e);
            }
            let parked = std::mem::take(&mut st.parked);
            let (ready, wait): (Vec<_>, Vec<_>) = parked
                .into_iter()
                .partition(|p| !st.blocks(p.start, p.end, p.before));
            st.parked = wait;
            if st.held.is_empty() {
                self.idle.notify_all();
            }
            ready
        };
        for p in ready {
            (p.go)(p.bio);
        }
    }

    /// The error of a held write since the last flush that took one (a flush reports it).
    pub(crate) fn take_failed(&self) -> Option<IoError> {
        self.st.lock().failed.take()
    }

    /// Wait until nothing is held (suspend, removal); false if that took too long.
    pub(crate) fn drain(&self) -> bool {
        let mut st = self.st.lock();
        let until = std::time::Instant::now() + DRAIN_LIMIT;
        while !st.held.is_empty() {
            if self.idle.wait_until(&mut st, until).timed_out() {
                tracing::warn!("snapshot-origin: held writes did not drain in time");
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use udm_io::{IoBuf, Sectors};

    fn bio(sector: u64, tx: &crossbeam_channel::Sender<u64>) -> Bio {
        let tx = tx.clone();
        Bio::write(
            Sectors(sector),
            IoBuf::zeroed(512),
            Box::new(move |_, _| {
                let _ = tx.send(sector);
            }),
        )
    }

    #[test]
    fn overlapping_bios_wait_for_older_holds_only() {
        let h = Arc::new(Holds::new(1 << 20));
        let (tx, rx) = crossbeam_channel::unbounded();
        let run = || |b: Bio| b.complete(Ok(()));
        let (quiet, _q) = crossbeam_channel::unbounded();
        // Nothing held: every bio passes.
        assert!(h.gate(bio(0, &quiet), 0, 8, run).is_some());
        let a = h.try_hold(0, 8).unwrap();
        let b = h.try_hold(16, 8).unwrap();
        // Beside the holds: passes; over the first: waits for it alone.
        assert!(h.gate(bio(8, &quiet), 8, 16, run).is_some());
        assert!(h.gate(bio(4, &tx), 4, 5, run).is_none());
        assert!(h.gate(bio(100, &tx), 0, u64::MAX, run).is_none());
        // A hold taken after a bio parked does not hold it back.
        let c = h.try_hold(4, 1).unwrap();
        h.done(a, Ok(()));
        assert_eq!(rx.try_recv(), Ok(4));
        assert!(
            rx.try_recv().is_err(),
            "the flush waits for the second hold"
        );
        h.done(b, Ok(()));
        assert_eq!(rx.try_recv(), Ok(100));
        h.done(c, Ok(()));
        assert!(h.drain());
        assert_eq!(h.bytes.load(SeqCst), 0);
    }

    #[test]
    fn the_cap_bounds_what_is_held_and_errors_are_reported_once() {
        let h = Holds::new(8192);
        assert!(Holds::new(0).try_hold(0, 8).is_none());
        let a = h.try_hold(0, 8).unwrap();
        let b = h.try_hold(8, 8).unwrap();
        assert!(h.try_hold(16, 8).is_none(), "over the cap");
        h.done(a, Err(IoError::Io));
        assert!(h.try_hold(16, 8).is_some());
        h.done(b, Err(IoError::NoSpace));
        assert_eq!(h.take_failed(), Some(IoError::Io));
        assert_eq!(h.take_failed(), None);
    }
}
