//! The cache's data path and background work.
//!
//! `map` never blocks: under one short lock it finds the origin block's cache block and
//! remaps the bio (a hit to the cache device, a miss to the origin), counting it in flight
//! per origin block. Promotions (with the demotion that frees their block) run on a few
//! migration workers, several at once, as each mostly waits on its copy from the slow origin;
//! anything else — writebacks, flushes, discards, FUA/PREFLUSH writes — runs on the target's
//! own `Worker`. Metadata changes are serialized by the metadata lock. A block being migrated is locked:
//! bios for it wait in its list and are mapped again when the migration ends, and a migration
//! starts copying only once the block's in-flight bios have drained.
//!
//! Crash safety follows the kernel: data written to a cache block is reachable after a crash
//! once a flush (which commits the metadata first) has completed; a demoted block is unmapped
//! and committed before its cache block is reused; after an unclean shutdown every mapped block
//! is dirty.

use super::policy::{PolicyName, Tracker};
use parking_lot::{Condvar, Mutex};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use udm_core::{Copier, Loc, MapResult, Worker};
use udm_io::{Bio, BioFlags, BlockDevice, IoBuf, IoError, Op, Sectors};
use udm_pdata::cache::CacheMetadata;

/// Promotions in flight at once at most (one per migration worker).
const MIGRATORS: usize = 4;

/// How writes are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    Writeback,
    Writethrough,
    Passthrough,
}

/// Per cache block state.
#[derive(Clone, Copy, Default)]
struct Slot {
    oblock: Option<u64>,
    dirty: bool,
    last_use: u64,
    hits: u32,
}

#[derive(Default)]
struct State {
    map: HashMap<u64, u64>,
    slots: Vec<Slot>,
    free: BTreeSet<u64>,
    inflight: HashMap<u64, u32>,
    locked: HashMap<u64, Vec<Bio>>,
    tracker: Tracker,
    migrations: u64,
    tick: u64,
    nr_dirty: u64,
}

/// Counters shown by status.
#[derive(Default)]
pub struct Counters {
    pub read_hits: AtomicU64,
    pub read_misses: AtomicU64,
    pub write_hits: AtomicU64,
    pub write_misses: AtomicU64,
    pub demotions: AtomicU64,
    pub promotions: AtomicU64,
}

/// Everything the data path and the worker share.
pub struct Core {
    pub bs: u64,
    pub origin_len: u64,
    pub nr_cblocks: u64,
    pub mode: IoMode,
    pub policy: PolicyName,
    pub passdown: bool,
    pub origin: Arc<dyn BlockDevice>,
    pub cache: Arc<dyn BlockDevice>,
    pub md: Arc<Mutex<CacheMetadata>>,
    pub worker: Arc<Worker>,
    /// Promotions run here, several at once (each waits on its copy from the origin).
    migrators: Vec<Arc<Worker>>,
    pub copier: Copier,
    pub migration_threshold: AtomicU64,
    pub counters: Counters,
    /// Metadata failed: the cache is read-only (`ro`), background work stops.
    pub failed: AtomicBool,
    st: Mutex<State>,
    idle: Condvar,
}

fn done_submit(r: MapResult) {
    match r {
        MapResult::Remap(dev, bio) => dev.submit(bio),
        MapResult::Kill(bio, e) => bio.complete(Err(e)),
        MapResult::Requeue(bio) => bio.complete(Err(IoError::Io)),
        _ => {}
    }
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        bs: u64,
        origin_len: u64,
        nr_cblocks: u64,
        mode: IoMode,
        policy: PolicyName,
        passdown: bool,
        origin: Arc<dyn BlockDevice>,
        cache: Arc<dyn BlockDevice>,
        md: Arc<Mutex<CacheMetadata>>,
        worker: Arc<Worker>,
    ) -> Core {
        let st = State {
            slots: vec![Slot::default(); nr_cblocks as usize],
            free: (0..nr_cblocks).collect(),
            tracker: Tracker::new(4 * nr_cblocks as usize),
            ..State::default()
        };
        Core {
            bs,
            origin_len,
            nr_cblocks,
            mode,
            policy,
            passdown,
            origin,
            cache,
            md,
            worker,
            migrators: (0..MIGRATORS)
                .map(|_| Arc::new(Worker::new("cache-migrate")))
                .collect(),
            copier: Copier::new(Sectors(bs.min(1024)), 16),
            migration_threshold: AtomicU64::new(2048),
            counters: Counters::default(),
            failed: AtomicBool::new(false),
            st: Mutex::new(st),
            idle: Condvar::new(),
        }
    }

    /// Install the mappings loaded from metadata.
    pub fn load(&self, mappings: &[udm_pdata::cache::Mapping]) {
        let mut st = self.st.lock();
        let origin_blocks = self.origin_len.div_ceil(self.bs);
        for m in mappings {
            if m.cblock >= self.nr_cblocks || m.oblock >= origin_blocks {
                continue;
            }
            st.free.remove(&m.cblock);
            st.map.insert(m.oblock, m.cblock);
            let hits = m.hint.unwrap_or(0);
            st.slots[m.cblock as usize] = Slot {
                oblock: Some(m.oblock),
                dirty: m.dirty,
                last_use: hits as u64,
                hits,
            };
            if m.dirty {
                st.nr_dirty += 1;
            }
        }
        st.tick = st.slots.iter().map(|s| s.last_use).max().unwrap_or(0);
    }

    /// (resident blocks, dirty blocks).
    pub fn usage(&self) -> (u64, u64) {
        let st = self.st.lock();
        (st.map.len() as u64, st.nr_dirty)
    }

    /// Dirty bits and hints per cache block, for a clean shutdown.
    pub fn snapshot(&self) -> (Vec<(u64, bool)>, Vec<u32>) {
        let st = self.st.lock();
        let mapped = st
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.oblock.is_some())
            .map(|(cb, s)| (cb as u64, s.dirty))
            .collect();
        (mapped, st.slots.iter().map(|s| s.hits).collect())
    }

    /// Whether `cb` is mapped and clean (or unmapped).
    pub fn is_clean(&self, cb: u64) -> bool {
        let st = self.st.lock();
        !st.slots.get(cb as usize).is_some_and(|s| s.dirty)
    }

    fn track(self: &Arc<Self>, st: &mut State, ob: u64, bio: Bio) -> Bio {
        *st.inflight.entry(ob).or_insert(0) += 1;
        let me = self.clone();
        bio.on_end(move |r, _| {
            me.end_io(ob);
            r
        })
    }

    fn end_io(&self, ob: u64) {
        let mut st = self.st.lock();
        if let Some(n) = st.inflight.get_mut(&ob) {
            *n -= 1;
            if *n == 0 {
                st.inflight.remove(&ob);
                self.idle.notify_all();
            }
        }
    }

    /// Map a bio (target-relative sectors); never blocks.
    pub fn map(self: &Arc<Self>, bio: Bio) -> MapResult {
        match bio.op {
            Op::Read | Op::Write
                if !bio.flags.contains(BioFlags::PREFLUSH)
                    && !bio.flags.contains(BioFlags::FUA) =>
            {
                self.dispatch(bio)
            }
            _ => {
                let me = self.clone();
                self.worker.spawn(move || me.slow_bio(bio));
                MapResult::Submitted
            }
        }
    }

    fn dispatch(self: &Arc<Self>, bio: Bio) -> MapResult {
        let ob = bio.sector.0 / self.bs;
        let off = bio.sector.0 % self.bs;
        let write = bio.op == Op::Write;
        let mut st = self.st.lock();
        if let Some(q) = st.locked.get_mut(&ob) {
            q.push(bio);
            return MapResult::Submitted;
        }
        if let Some(&cb) = st.map.get(&ob) {
            let c = if write {
                &self.counters.write_hits
            } else {
                &self.counters.read_hits
            };
            c.fetch_add(1, SeqCst);
            st.tick += 1;
            let tick = st.tick;
            let slot = &mut st.slots[cb as usize];
            slot.last_use = tick;
            slot.hits = slot.hits.saturating_add(1);
            match self.mode {
                IoMode::Passthrough if write => {
                    // Invalidate, then write the origin.
                    st.locked.insert(ob, vec![bio]);
                    drop(st);
                    let me = self.clone();
                    self.worker.spawn(move || me.invalidate_locked(ob, cb));
                    return MapResult::Submitted;
                }
                IoMode::Passthrough => {
                    let bio = self.track(&mut st, ob, bio);
                    return MapResult::Remap(self.origin.clone(), bio);
                }
                IoMode::Writethrough if write => {
                    let bio = self.track(&mut st, ob, bio);
                    drop(st);
                    let mut kids = bio.fan_out(2);
                    let mut to_cache = kids.pop().expect("two");
                    to_cache.sector = Sectors(cb * self.bs + off);
                    self.origin.submit(kids.pop().expect("two"));
                    self.cache.submit(to_cache);
                    return MapResult::Submitted;
                }
                _ => {}
            }
            if write && !st.slots[cb as usize].dirty {
                st.slots[cb as usize].dirty = true;
                st.nr_dirty += 1;
                if self.policy == PolicyName::Cleaner {
                    let me = self.clone();
                    self.worker.spawn(move || me.clean_all());
                }
            }
            let mut bio = self.track(&mut st, ob, bio);
            bio.sector = Sectors(cb * self.bs + off);
            return MapResult::Remap(self.cache.clone(), bio);
        }
        let c = if write {
            &self.counters.write_misses
        } else {
            &self.counters.read_misses
        };
        c.fetch_add(1, SeqCst);
        if self.mode != IoMode::Passthrough
            && self.policy.promotes()
            && !self.failed.load(SeqCst)
            && (st.migrations + 1) * self.bs <= self.migration_threshold.load(SeqCst)
        {
            let have_free = !st.free.is_empty();
            if st.tracker.miss(ob, have_free) {
                st.migrations += 1;
                st.locked.insert(ob, vec![bio]);
                drop(st);
                let me = self.clone();
                let w = &self.migrators[ob as usize % MIGRATORS];
                w.spawn(move || me.promote(ob));
                return MapResult::Submitted;
            }
        }
        let bio = self.track(&mut st, ob, bio);
        MapResult::Remap(self.origin.clone(), bio)
    }

    /// Wait (on the worker) until `ob` has no bio in flight. The caller holds its lock.
    fn wait_idle(&self, ob: u64) {
        let mut st = self.st.lock();
        while st.inflight.contains_key(&ob) {
            self.idle.wait(&mut st);
        }
    }

    /// Release `ob`'s lock and map the bios that waited for it.
    fn unlock(self: &Arc<Self>, ob: u64) {
        let bios = self.st.lock().locked.remove(&ob).unwrap_or_default();
        for bio in bios {
            done_submit(self.dispatch(bio));
        }
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display) {
        tracing::error!("cache: {what} failed: {e}; switching to read-only metadata");
        self.failed.store(true, SeqCst);
    }

    fn copy(&self, from: Loc, to: Loc, len: u64) -> bool {
        self.copier.copy_wait(from, vec![to], Sectors(len)).is_ok()
    }

    fn block_len(&self, ob: u64) -> u64 {
        self.bs.min(self.origin_len - ob * self.bs)
    }

    /// Write cache block `cb` back to origin block `ob` (both locked by the caller).
    fn writeback(self: &Arc<Self>, cb: u64, ob: u64) -> bool {
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
        true
    }

    /// Unmap `cb` (whose origin block `ob` is locked) and commit before it can be reused.
    fn demote(&self, cb: u64, ob: u64) -> bool {
        let mut md = self.md.lock();
        if let Err(e) = md.remove(cb).and_then(|_| md.commit(false)) {
            drop(md);
            self.fail("demotion", e);
            return false;
        }
        drop(md);
        let mut st = self.st.lock();
        st.map.remove(&ob);
        if st.slots[cb as usize].dirty {
            st.nr_dirty -= 1;
        }
        st.slots[cb as usize] = Slot::default();
        self.counters.demotions.fetch_add(1, SeqCst);
        true
    }

    /// Pick a free cache block, or demote a victim (least recently used, clean first).
    fn get_cblock(self: &Arc<Self>) -> Option<u64> {
        let (cb, vob) = {
            let mut st = self.st.lock();
            if let Some(cb) = st.free.pop_first() {
                return Some(cb);
            }
            let victim = st
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.oblock.is_some_and(|o| !st.locked.contains_key(&o)))
                .min_by_key(|(_, s)| (s.dirty, s.last_use))
                .map(|(cb, s)| (cb as u64, s.oblock.expect("mapped")))?;
            st.locked.insert(victim.1, Vec::new());
            victim
        };
        self.wait_idle(vob);
        let dirty = !self.is_clean(cb);
        let ok = (!dirty || self.writeback(cb, vob)) && self.demote(cb, vob);
        self.unlock(vob);
        ok.then_some(cb)
    }

    /// Promote origin block `ob` (locked by `dispatch`).
    fn promote(self: &Arc<Self>, ob: u64) {
        self.wait_idle(ob);
        if let Some(cb) = self.get_cblock() {
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
            if inserted {
                st.map.insert(ob, cb);
                st.tick += 1;
                st.slots[cb as usize] = Slot {
                    oblock: Some(ob),
                    dirty: false,
                    last_use: st.tick,
                    hits: 0,
                };
                self.counters.promotions.fetch_add(1, SeqCst);
            } else {
                st.free.insert(cb);
            }
        }
        self.st.lock().migrations -= 1;
        self.unlock(ob);
    }

    /// Passthrough write hit: unmap the (clean) block, then let its bios go to the origin.
    fn invalidate_locked(self: &Arc<Self>, ob: u64, cb: u64) {
        self.wait_idle(ob);
        if self.demote(cb, ob) {
            self.st.lock().free.insert(cb);
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
            if st.locked.contains_key(&ob) {
                return;
            }
            st.locked.insert(ob, Vec::new());
            ob
        };
        self.invalidate_locked(ob, cb);
    }

    /// Write back every dirty block (the cleaner policy; also before a passthrough switch).
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
                    .find(|(_, s)| s.dirty && s.oblock.is_some_and(|o| !st.locked.contains_key(&o)))
                    .map(|(cb, s)| (cb as u64, s.oblock.expect("mapped")));
                if let Some((_, ob)) = found {
                    st.locked.insert(ob, Vec::new());
                }
                found
            };
            let Some((cb, ob)) = next else { return };
            self.wait_idle(ob);
            let ok = self.writeback(cb, ob);
            self.unlock(ob);
            if !ok {
                return;
            }
        }
    }

    /// Commit the metadata if anything changed (on the worker or a control-plane hook).
    pub fn commit(&self) -> bool {
        if self.failed.load(SeqCst) {
            return false;
        }
        let mut md = self.md.lock();
        if !md.changed() {
            return true;
        }
        if let Err(e) = md.commit(false) {
            drop(md);
            self.fail("commit", e);
            return false;
        }
        true
    }

    fn flush_all(&self) -> Result<(), IoError> {
        if !self.commit() {
            return Err(IoError::Io);
        }
        udm_io::sync::flush(&*self.cache)?;
        udm_io::sync::flush(&*self.origin)
    }

    /// Flushes, FUA/PREFLUSH bios, discards and write-zeroes, on the worker.
    fn slow_bio(self: &Arc<Self>, mut bio: Bio) {
        match bio.op {
            Op::Flush => {
                let r = self.flush_all();
                bio.complete(r);
            }
            Op::Discard => {
                self.discard_range(bio.sector.0, bio.len().0);
                let r = if self.passdown {
                    udm_io::sync::discard(&*self.origin, bio.sector, bio.len())
                } else {
                    Ok(())
                };
                bio.complete(r);
            }
            Op::WriteZeroes => self.write_zeroes(bio),
            _ => {
                if bio.flags.contains(BioFlags::PREFLUSH) {
                    if let Err(e) = self.flush_all() {
                        bio.complete(Err(e));
                        return;
                    }
                }
                // Nothing here may wait for the data I/O: it can be held behind a
                // migration queued on this worker.
                let fua = bio.flags.contains(BioFlags::FUA);
                let buf = bio.take_buf();
                let (sector, read) = (bio.sector, bio.op == Op::Read);
                let me = self.clone();
                let done: udm_io::bio::Completion = Box::new(move |r, b| {
                    bio.set_buf(b);
                    if r.is_ok() && fua {
                        let m2 = me.clone();
                        me.worker.spawn(move || {
                            let r = m2.flush_all();
                            bio.complete(r)
                        });
                    } else {
                        bio.complete(r);
                    }
                });
                let inner = if read {
                    Bio::read(sector, buf, done)
                } else {
                    Bio::write(sector, buf, done)
                };
                done_submit(self.dispatch(inner));
            }
        }
    }

    /// Write-zeroes as zero-filled writes, one per cache block, completing `bio` once.
    fn write_zeroes(self: &Arc<Self>, bio: Bio) {
        let (mut sector, end) = (bio.sector.0, bio.sector.0 + bio.len().0);
        let mut pieces = Vec::new();
        while sector < end {
            let n = (self.bs - sector % self.bs).min(end - sector);
            pieces.push((sector, n));
            sector += n;
        }
        if pieces.is_empty() {
            bio.complete(Ok(()));
            return;
        }
        let left = Arc::new(AtomicU64::new(pieces.len() as u64));
        let state = Arc::new(Mutex::new((Ok(()), Some(bio))));
        for (s, n) in pieces {
            let (left, state) = (left.clone(), state.clone());
            let b = Bio::write(
                Sectors(s),
                IoBuf::zeroed((n * 512) as usize),
                Box::new(move |r, _| {
                    let mut g = state.lock();
                    if g.0.is_ok() {
                        g.0 = r;
                    }
                    if left.fetch_sub(1, SeqCst) == 1 {
                        let r = g.0;
                        if let Some(b) = g.1.take() {
                            drop(g);
                            b.complete(r);
                        }
                    }
                }),
            );
            done_submit(self.dispatch(b));
        }
    }

    /// Unmap the cache blocks a discard covers completely (their data is now undefined).
    fn discard_range(self: &Arc<Self>, sector: u64, len: u64) {
        let first = sector.div_ceil(self.bs);
        let end = (sector + len) / self.bs;
        for ob in first..end {
            let cb = {
                let mut st = self.st.lock();
                let Some(&cb) = st.map.get(&ob) else { continue };
                if st.locked.contains_key(&ob) {
                    continue;
                }
                st.locked.insert(ob, Vec::new());
                cb
            };
            self.wait_idle(ob);
            if self.demote(cb, ob) {
                self.st.lock().free.insert(cb);
            }
            self.unlock(ob);
        }
    }

    /// Run `f` on the worker after everything queued before it, and wait.
    pub fn on_worker<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Arc<Core>) -> T + Send + 'static,
    ) -> T {
        let me = self.clone();
        self.worker.call(move || f(&me))
    }
}
