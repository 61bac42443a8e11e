//! The cache's background work: promotions, demotions and writebacks the policy asks for,
//! run on the migration workers while `migration_threshold` sectors of migration are not
//! exceeded; the policy's tick (once a second); the cleaner's drain; unmapping on
//! discard and passthrough invalidation.
//!
//! Promotions let reads of the block go on to the origin while it is copied (only writes
//! wait); writebacks let reads go on to the cache; demotions and invalidations hold every
//! bio of the block, wait for its I/O to drain, and commit the unmapping before the cache
//! block can be reused.

use super::core::{Core, Slot, MIGRATORS};
use super::smq::{Work, WorkOp};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;
use udm_core::Loc;
use udm_io::Sectors;

/// Environment override of the policy tick (milliseconds), for tests that cannot wait for
/// the kernel's one-second periods.
pub const TICK_ENV: &str = "UDM_CACHE_TICK_MS";

impl Core {
    fn copy(&self, from: Loc, to: Loc, len: u64) -> bool {
        self.copier.copy_wait(from, vec![to], Sectors(len)).is_ok()
    }

    pub(super) fn block_len(&self, ob: u64) -> u64 {
        self.bs.min(self.origin_len - ob * self.bs)
    }

    /// Promote `w.oblock` by writing `bio` (the whole block) to its new cache block, which
    /// is then mapped dirty; the bio completes after the mapping is recorded.
    pub(super) fn start_overwrite(self: &Arc<Self>, w: Work, mut bio: udm_io::Bio) {
        let me = self.clone();
        let n = self.next_migrator.fetch_add(1, SeqCst) as usize % MIGRATORS;
        self.migrators[n].spawn(move || {
            let (ob, cb) = (w.oblock, w.cblock);
            me.wait_drained(ob, false);
            let buf = bio.take_buf();
            let r = udm_io::sync::write_at(&*me.cache, Sectors(cb * me.bs), buf.as_slice());
            bio.set_buf(buf);
            let inserted = r.is_ok() && {
                let mut md = me.md.lock();
                let r = md.insert(cb, ob);
                drop(md);
                if let Err(e) = &r {
                    me.fail("promotion", e);
                }
                r.is_ok()
            };
            {
                let mut st = me.st.lock();
                st.policy.complete(w, inserted);
                if inserted {
                    st.policy.set_dirty(cb);
                    st.slots[cb as usize] = Slot {
                        oblock: Some(ob),
                        dirty: true,
                    };
                    st.nr_dirty += 1;
                    me.counters.promotions.fetch_add(1, SeqCst);
                }
                st.migrations -= 1;
            }
            me.idle.notify_all();
            if inserted {
                bio.complete(Ok(()));
            } else if r.is_err() {
                bio.complete(r);
            } else {
                // The cache failed: the write goes to the origin.
                let bio = me.retrack(ob, bio);
                me.origin.submit(bio);
            }
            me.unlock(ob);
            me.kick();
        });
    }

    /// Run `w` (its block already locked, counted in `migrations`) on a migration worker.
    pub(super) fn start(self: &Arc<Self>, w: Work) {
        let me = self.clone();
        let n = self.next_migrator.fetch_add(1, SeqCst) as usize % MIGRATORS;
        self.migrators[n].spawn(move || {
            match w.op {
                WorkOp::Promote => me.promote(w),
                WorkOp::Demote => me.demote_work(w),
                WorkOp::Writeback => me.writeback_work(w),
            }
            me.st.lock().migrations -= 1;
            me.idle.notify_all();
            me.unlock(w.oblock);
            me.kick();
        });
    }

    /// Start the policy's background work while migration bandwidth is left.
    pub(super) fn kick(self: &Arc<Self>) {
        if !self.policy.promotes() {
            return;
        }
        for _ in 0..64 {
            let mut st = self.st.lock();
            if st.suspended
                || self.failed.load(SeqCst)
                || (st.migrations + 1) * self.bs > self.migration_threshold.load(SeqCst)
            {
                return;
            }
            let idle = self.is_idle();
            let Some(w) = st.policy.background_work(idle) else {
                return;
            };
            if !st.lock(w.oblock, w.op == WorkOp::Writeback) {
                st.policy.complete(w, false);
                continue;
            }
            st.migrations += 1;
            drop(st);
            self.start(w);
        }
    }

    /// Copy origin block `w.oblock` into cache block `w.cblock` and map it.
    fn promote(self: &Arc<Self>, w: Work) {
        self.wait_drained(w.oblock, true);
        let (ob, cb) = (w.oblock, w.cblock);
        let ok = self.copy(
            Loc::new(self.origin.clone(), Sectors(ob * self.bs)),
            Loc::new(self.cache.clone(), Sectors(cb * self.bs)),
            self.block_len(ob),
        );
        let inserted = ok && {
            let r = self.md.lock().insert(cb, ob);
            if let Err(e) = &r {
                self.fail("promotion", e);
            }
            r.is_ok()
        };
        let mut st = self.st.lock();
        st.policy.complete(w, inserted);
        if inserted {
            st.slots[cb as usize] = Slot {
                oblock: Some(ob),
                dirty: false,
            };
            self.counters.promotions.fetch_add(1, SeqCst);
        }
    }

    /// Demote a (clean, unless written since it was chosen) block.
    fn demote_work(self: &Arc<Self>, w: Work) {
        self.wait_drained(w.oblock, false);
        let ok = (self.is_clean(w.cblock) || self.writeback(w.cblock, w.oblock))
            && self.unmap(w.cblock, w.oblock);
        self.st.lock().policy.complete(w, ok);
    }

    fn writeback_work(self: &Arc<Self>, w: Work) {
        self.wait_drained(w.oblock, true);
        let ok = self.writeback(w.cblock, w.oblock);
        self.st.lock().policy.complete(w, ok);
    }

    /// Write cache block `cb` back to origin block `ob` (both locked by the caller).
    pub(super) fn writeback(self: &Arc<Self>, cb: u64, ob: u64) -> bool {
        let ok = self.copy(
            Loc::new(self.cache.clone(), Sectors(cb * self.bs)),
            Loc::new(self.origin.clone(), Sectors(ob * self.bs)),
            self.block_len(ob),
        ) && udm_io::sync::flush(&*self.origin).is_ok();
        if !ok {
            return false;
        }
        if let Err(e) = self.md.lock().set_dirty(cb, false) {
            self.fail("clearing a dirty bit", e);
        }
        let mut st = self.st.lock();
        if st.slots[cb as usize].dirty {
            st.slots[cb as usize].dirty = false;
            st.nr_dirty -= 1;
        }
        st.policy.clear_dirty(cb);
        true
    }

    /// Unmap `cb` (whose origin block `ob` is locked and drained) and commit before the
    /// cache block can be reused. The policy entry is the caller's business.
    fn unmap(&self, cb: u64, ob: u64) -> bool {
        let mut md = self.md.lock();
        if let Err(e) = md.remove(cb).and_then(|_| md.commit(false)) {
            drop(md);
            self.fail("demotion", e);
            return false;
        }
        drop(md);
        let mut st = self.st.lock();
        debug_assert_eq!(st.slots[cb as usize].oblock, Some(ob));
        if st.slots[cb as usize].dirty {
            st.nr_dirty -= 1;
        }
        st.slots[cb as usize] = Slot::default();
        self.counters.demotions.fetch_add(1, SeqCst);
        true
    }

    /// Unmap a locked, mapped block outside the policy's own work (passthrough write,
    /// `invalidate_cblocks`, discard), then release it.
    pub(super) fn invalidate_locked(self: &Arc<Self>, ob: u64, cb: u64) {
        self.wait_drained(ob, false);
        if self.unmap(cb, ob) {
            self.st.lock().policy.invalidate(cb);
        }
        self.unlock(ob);
    }

    /// `invalidate_cblocks`: unmap clean cache block `cb` if mapped (passthrough only).
    pub fn invalidate_cblock(self: &Arc<Self>, cb: u64) {
        let ob = {
            let mut st = self.st.lock();
            let Some(ob) = st.slots[cb as usize].oblock else {
                return;
            };
            if !st.lock(ob, false) {
                return;
            }
            ob
        };
        self.invalidate_locked(ob, cb);
    }

    /// Unmap the cache blocks a discard covers completely (their data is now undefined).
    pub(super) fn discard_range(self: &Arc<Self>, sector: u64, len: u64) {
        let first = sector.div_ceil(self.bs);
        let end = (sector + len) / self.bs;
        for ob in first..end {
            let cb = {
                let mut st = self.st.lock();
                let Some(cb) = st.policy.peek(ob) else {
                    continue;
                };
                if !st.lock(ob, false) {
                    continue;
                }
                cb
            };
            self.invalidate_locked(ob, cb);
        }
    }

    /// Write back every dirty block (the cleaner policy).
    pub fn clean_all(self: &Arc<Self>) {
        loop {
            if self.failed.load(SeqCst) {
                return;
            }
            let next = {
                let mut st = self.st.lock();
                let found = st
                    .slots
                    .iter()
                    .enumerate()
                    .find(|(_, s)| s.dirty && s.oblock.is_some_and(|o| !st.locked(o)))
                    .map(|(cb, s)| (cb as u64, s.oblock.expect("mapped")));
                if let Some((_, ob)) = found {
                    st.lock(ob, true);
                }
                found
            };
            let Some((cb, ob)) = next else { return };
            self.wait_drained(ob, true);
            let ok = self.writeback(cb, ob);
            self.unlock(ob);
            if !ok {
                return;
            }
        }
    }

    /// Stop background work and wait for the migrations running (suspend).
    pub fn quiesce(&self) {
        let mut st = self.st.lock();
        st.suspended = true;
        while st.migrations > 0 {
            self.idle.wait_for(&mut st, Duration::from_millis(100));
        }
    }

    /// Let background work run again (resume).
    pub fn unquiesce(self: &Arc<Self>) {
        self.st.lock().suspended = false;
        self.kick();
    }

    /// One policy tick, then start whatever background work it allows.
    fn tick(self: &Arc<Self>) {
        self.st.lock().policy.tick();
        self.kick();
    }
}

/// The tick thread: ticks the policy every second (or `UDM_CACHE_TICK_MS`) while the
/// core lives.
pub fn start_ticker(core: &Arc<Core>) {
    let period = std::env::var(TICK_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(1));
    let weak = Arc::downgrade(core);
    let spawned = std::thread::Builder::new()
        .name("cache-tick".into())
        .spawn(move || loop {
            std::thread::sleep(period);
            let Some(c) = weak.upgrade() else { return };
            if !c.st.lock().suspended {
                c.tick();
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cache: no policy tick thread: {e}");
    }
}
