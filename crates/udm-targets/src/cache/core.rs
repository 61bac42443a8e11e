//! The cache's data path.
//!
//! `map` never blocks: under one short lock it asks the policy ([`super::smq`]) where the
//! origin block lives and remaps the bio (a hit to the cache device, a miss to the origin),
//! counting it in flight per origin block. A hit costs one table lookup and, at most once
//! per cache period, a requeue; it writes no metadata (dirty bits reach the metadata at a
//! clean shutdown, as in the kernel). A miss the policy wants promoted goes to the origin as
//! it is, while the promotion copies the block in the background ([`super::migrate`]).
//! Flushes, FUA/PREFLUSH bios, discards and write-zeroes run on the target's own `Worker`.
//!
//! A block under migration is locked: writes (and, unless the migration allows it, reads)
//! wait in its list and are mapped again when the migration ends; a migration starts copying
//! once the block's writes in flight (and reads, when it will reuse the cache block) drained.
//!
//! Crash safety follows the kernel: data written to a cache block is reachable after a crash
//! once a flush (which commits the metadata first) has completed; a demoted block is unmapped
//! and committed before its cache block is reused; after an unclean shutdown every mapped block
//! is dirty.

use super::levels::BlockMap;
use super::policy::PolicyName;
use super::smq::Smq;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};
use udm_core::{Copier, MapResult, Worker};
use udm_io::{Bio, BioFlags, BlockDevice, IoBuf, IoError, Op, Sectors};
use udm_pdata::cache::CacheMetadata;

/// Migration workers (each mostly waits on its copy).
pub(super) const MIGRATORS: usize = 4;

/// The kernel keeps at most 2^14 discard blocks over the origin.
const MAX_DISCARD_BLOCKS: u64 = 1 << 14;

/// The discard block size the kernel computes: the cache block size, doubled until the
/// origin has at most 2^14 discard blocks; and the number of discard blocks.
pub fn discard_geometry(block: u64, origin_sectors: u64) -> (u64, u64) {
    let mut dbs = block;
    while origin_sectors / dbs > MAX_DISCARD_BLOCKS {
        dbs *= 2;
    }
    (dbs, origin_sectors.div_ceil(dbs))
}

/// What a clean shutdown saves: (cache block, dirty) of the mapped blocks, the hint of
/// every cache block, and the discard bits when they changed.
pub type Snapshot = (Vec<(u64, bool)>, Vec<u32>, Option<Vec<bool>>);

/// How writes are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    Writeback,
    Writethrough,
    Passthrough,
}

/// Per cache block state (the kernel's dirty bitset, plus the mapping for lookups by
/// cache block).
#[derive(Clone, Copy, Default)]
pub(super) struct Slot {
    pub oblock: Option<u64>,
    pub dirty: bool,
}

/// A migration's hold on an origin block.
pub(super) struct Lock {
    pub bios: Vec<Bio>,
    /// Reads may go on (to wherever the block is mapped) while it is held.
    pub reads_pass: bool,
}

/// I/O in flight on an origin block, and its lock.
#[derive(Default)]
pub(super) struct BlockIo {
    pub reads: u32,
    pub writes: u32,
    pub lock: Option<Lock>,
}

pub(super) struct State {
    pub policy: Smq,
    pub slots: Vec<Slot>,
    pub blocks: BlockMap<BlockIo>,
    pub migrations: u64,
    pub nr_dirty: u64,
    /// One bit per discard block: discarded and not written since.
    pub discards: Vec<u64>,
    pub discards_changed: bool,
    pub suspended: bool,
}

impl State {
    pub fn locked(&self, ob: u64) -> bool {
        self.blocks.get(&ob).is_some_and(|b| b.lock.is_some())
    }

    /// Take `ob`'s lock; false when another migration holds it.
    pub fn lock(&mut self, ob: u64, reads_pass: bool) -> bool {
        let b = self.blocks.entry(ob).or_default();
        if b.lock.is_some() {
            return false;
        }
        b.lock = Some(Lock {
            bios: Vec::new(),
            reads_pass,
        });
        true
    }
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

/// Everything the data path and the background work share.
pub struct Core {
    pub bs: u64,
    pub origin_len: u64,
    pub nr_cblocks: u64,
    pub mode: IoMode,
    pub policy: PolicyName,
    pub passdown: bool,
    pub discard_bs: u64,
    pub nr_discard: u64,
    pub origin: Arc<dyn BlockDevice>,
    pub cache: Arc<dyn BlockDevice>,
    pub md: Arc<Mutex<CacheMetadata>>,
    pub worker: Arc<Worker>,
    /// Promotions, demotions and writebacks run here, several at once.
    pub(super) migrators: Vec<Arc<Worker>>,
    pub copier: Copier,
    pub migration_threshold: AtomicU64,
    pub counters: Counters,
    /// Metadata failed: the cache is read-only (`ro`), background work stops.
    pub failed: AtomicBool,
    pub(super) st: Mutex<State>,
    pub(super) idle: Condvar,
    /// When the last bio was mapped (ms since `epoch`), for the policy's idle test.
    pub(super) last_io: AtomicU64,
    pub(super) epoch: Instant,
    pub(super) next_migrator: AtomicU64,
}

pub(super) fn done_submit(r: MapResult) {
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
        let origin_sectors = origin.size().0;
        let (discard_bs, nr_discard) = discard_geometry(bs, origin_sectors);
        let st = State {
            policy: Smq::new(
                nr_cblocks,
                origin_sectors,
                bs,
                policy == PolicyName::Cleaner,
            ),
            slots: vec![Slot::default(); nr_cblocks as usize],
            blocks: BlockMap::default(),
            migrations: 0,
            nr_dirty: 0,
            discards: vec![0; (nr_discard as usize).div_ceil(64)],
            discards_changed: false,
            suspended: true,
        };
        Core {
            bs,
            origin_len,
            nr_cblocks,
            mode,
            policy,
            passdown,
            discard_bs,
            nr_discard,
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
            last_io: AtomicU64::new(0),
            epoch: Instant::now(),
            next_migrator: AtomicU64::new(0),
        }
    }

    /// Install the mappings (and discard bits) loaded from metadata.
    pub fn load(&self, mappings: &[udm_pdata::cache::Mapping], discards: &[bool]) {
        let mut st = self.st.lock();
        let origin_blocks = self.origin_len.div_ceil(self.bs);
        for m in mappings {
            if m.cblock >= self.nr_cblocks || m.oblock >= origin_blocks {
                continue;
            }
            st.policy.load_mapping(m.oblock, m.cblock, m.dirty, m.hint);
            st.slots[m.cblock as usize] = Slot {
                oblock: Some(m.oblock),
                dirty: m.dirty,
            };
            if m.dirty {
                st.nr_dirty += 1;
            }
        }
        for (b, _) in discards.iter().enumerate().filter(|(_, d)| **d) {
            if (b as u64) < self.nr_discard {
                st.discards[b / 64] |= 1 << (b % 64);
            }
        }
    }

    /// (resident blocks, dirty blocks).
    pub fn usage(&self) -> (u64, u64) {
        let st = self.st.lock();
        (st.policy.residency(), st.nr_dirty)
    }

    /// Dirty bits, hints and (when changed since the last call) discard bits, for a clean
    /// shutdown.
    pub fn snapshot(&self) -> Snapshot {
        let mut st = self.st.lock();
        let mapped = st
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.oblock.is_some())
            .map(|(cb, s)| (cb as u64, s.dirty))
            .collect();
        let hints = (0..self.nr_cblocks).map(|cb| st.policy.hint(cb)).collect();
        let discards = std::mem::take(&mut st.discards_changed).then(|| {
            (0..self.nr_discard as usize)
                .map(|b| st.discards[b / 64] & (1 << (b % 64)) != 0)
                .collect()
        });
        (mapped, hints, discards)
    }

    /// Whether `cb` is mapped and clean (or unmapped).
    pub fn is_clean(&self, cb: u64) -> bool {
        let st = self.st.lock();
        !st.slots.get(cb as usize).is_some_and(|s| s.dirty)
    }

    fn dblock(&self, ob: u64) -> usize {
        (ob * self.bs / self.discard_bs) as usize
    }

    pub(super) fn is_discarded(&self, st: &State, ob: u64) -> bool {
        let d = self.dblock(ob);
        st.discards
            .get(d / 64)
            .is_some_and(|w| w & (1 << (d % 64)) != 0)
    }

    fn clear_discard(&self, st: &mut State, ob: u64) {
        let d = self.dblock(ob);
        if let Some(w) = st.discards.get_mut(d / 64) {
            if *w & (1 << (d % 64)) != 0 {
                *w &= !(1 << (d % 64));
                st.discards_changed = true;
            }
        }
    }

    /// Mark the discard blocks `[sector, sector + len)` covers completely.
    pub(super) fn set_discards(&self, sector: u64, len: u64) {
        let (b, e) = (
            sector.div_ceil(self.discard_bs),
            (sector + len) / self.discard_bs,
        );
        let mut st = self.st.lock();
        for d in b..e.min(self.nr_discard) {
            st.discards[d as usize / 64] |= 1 << (d % 64);
            st.discards_changed = true;
        }
    }

    fn track(self: &Arc<Self>, st: &mut State, ob: u64, write: bool, bio: Bio) -> Bio {
        let b = st.blocks.entry(ob).or_default();
        if write {
            b.writes += 1;
        } else {
            b.reads += 1;
        }
        let me = self.clone();
        bio.on_end(move |r, _| {
            me.end_io(ob, write);
            r
        })
    }

    /// Count a write to `ob` in flight again (a bio re-sent from a migration).
    pub(super) fn retrack(self: &Arc<Self>, ob: u64, bio: Bio) -> Bio {
        let mut st = self.st.lock();
        self.track(&mut st, ob, true, bio)
    }

    fn end_io(&self, ob: u64, write: bool) {
        let mut st = self.st.lock();
        if let Some(b) = st.blocks.get_mut(&ob) {
            if write {
                b.writes -= 1;
            } else {
                b.reads -= 1;
            }
            if b.reads == 0 && b.writes == 0 {
                if b.lock.is_none() {
                    st.blocks.remove(&ob);
                }
                self.idle.notify_all();
            }
        }
    }

    /// Map a bio (target-relative sectors); never blocks.
    pub fn map(self: &Arc<Self>, bio: Bio) -> MapResult {
        self.last_io
            .store(self.epoch.elapsed().as_millis() as u64, SeqCst);
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

    /// No bio mapped for a second.
    pub(super) fn is_idle(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        now.saturating_sub(self.last_io.load(SeqCst)) >= 1000
    }

    pub(super) fn dispatch(self: &Arc<Self>, bio: Bio) -> MapResult {
        let ob = bio.sector.0 / self.bs;
        let off = bio.sector.0 % self.bs;
        let write = bio.op == Op::Write;
        let mut st = self.st.lock();
        if let Some(l) = st.blocks.get_mut(&ob).and_then(|b| b.lock.as_mut()) {
            if write || !l.reads_pass {
                l.bios.push(bio);
                return MapResult::Submitted;
            }
        }
        if write {
            self.clear_discard(&mut st, ob);
        }
        let allow = self.mode != IoMode::Passthrough
            && self.policy.promotes()
            && !st.suspended
            && !self.failed.load(SeqCst)
            && (st.migrations + 1) * self.bs <= self.migration_threshold.load(SeqCst)
            && !self.is_discarded(&st, ob);
        // A write of the whole block (in writeback mode) needs no copy: it is promoted with
        // its data, as the kernel's overwrite.
        let fast = write
            && self.mode == IoMode::Writeback
            && off == 0
            && bio.len().0 == self.block_len(ob);
        let work = match st.policy.lookup(ob, write, fast, allow) {
            Ok(cb) => return self.hit(st, bio, ob, cb, off, write),
            Err(w) => w,
        };
        let c = if write {
            &self.counters.write_misses
        } else {
            &self.counters.read_misses
        };
        c.fetch_add(1, SeqCst);
        if let Some(w) = work.filter(|_| fast) {
            if st.lock(ob, false) {
                st.migrations += 1;
                drop(st);
                self.start_overwrite(w, bio);
            } else {
                st.policy.complete(w, false);
                let bio = self.track(&mut st, ob, write, bio);
                return MapResult::Remap(self.origin.clone(), bio);
            }
            return MapResult::Submitted;
        }
        let bio = self.track(&mut st, ob, write, bio);
        if let Some(w) = work {
            if st.lock(ob, true) {
                st.migrations += 1;
                drop(st);
                self.start(w);
            } else {
                st.policy.complete(w, false);
            }
        } else if self.policy.promotes() && st.policy.has_work() {
            drop(st);
            let me = self.clone();
            self.worker.spawn(move || me.kick());
        }
        MapResult::Remap(self.origin.clone(), bio)
    }

    fn hit(
        self: &Arc<Self>,
        mut st: parking_lot::MutexGuard<'_, State>,
        bio: Bio,
        ob: u64,
        cb: u64,
        off: u64,
        write: bool,
    ) -> MapResult {
        let c = if write {
            &self.counters.write_hits
        } else {
            &self.counters.read_hits
        };
        c.fetch_add(1, SeqCst);
        match self.mode {
            IoMode::Passthrough if write => {
                // Invalidate, then write the origin.
                st.lock(ob, false);
                st.blocks
                    .get_mut(&ob)
                    .and_then(|b| b.lock.as_mut())
                    .expect("just locked")
                    .bios
                    .push(bio);
                drop(st);
                let me = self.clone();
                self.worker.spawn(move || me.invalidate_locked(ob, cb));
                return MapResult::Submitted;
            }
            IoMode::Passthrough => {
                let bio = self.track(&mut st, ob, write, bio);
                return MapResult::Remap(self.origin.clone(), bio);
            }
            IoMode::Writethrough if write => {
                let bio = self.track(&mut st, ob, write, bio);
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
            st.policy.set_dirty(cb);
            if self.policy == PolicyName::Cleaner {
                let me = self.clone();
                self.worker.spawn(move || me.clean_all());
            }
        }
        let mut bio = self.track(&mut st, ob, write, bio);
        bio.sector = Sectors(cb * self.bs + off);
        MapResult::Remap(self.cache.clone(), bio)
    }

    /// Wait until `ob` has no write (and, unless `writes_only`, no read) in flight. The
    /// caller holds its lock.
    pub(super) fn wait_drained(&self, ob: u64, writes_only: bool) {
        let mut st = self.st.lock();
        loop {
            let busy = st
                .blocks
                .get(&ob)
                .is_some_and(|b| b.writes > 0 || (!writes_only && b.reads > 0));
            if !busy {
                return;
            }
            self.idle.wait_for(&mut st, Duration::from_millis(100));
        }
    }

    /// Release `ob`'s lock and map the bios that waited for it.
    pub(super) fn unlock(self: &Arc<Self>, ob: u64) {
        let bios = {
            let mut st = self.st.lock();
            let Some(b) = st.blocks.get_mut(&ob) else {
                return;
            };
            let bios = b.lock.take().map(|l| l.bios).unwrap_or_default();
            if b.reads == 0 && b.writes == 0 {
                st.blocks.remove(&ob);
            }
            bios
        };
        for bio in bios {
            done_submit(self.dispatch(bio));
        }
    }

    pub(super) fn fail(&self, what: &str, e: impl std::fmt::Display) {
        tracing::error!("cache: {what} failed: {e}; switching to read-only metadata");
        self.failed.store(true, SeqCst);
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
                self.set_discards(bio.sector.0, bio.len().0);
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
                // migration.
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

    /// Run `f` on the worker after everything queued before it, and wait.
    pub fn on_worker<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Arc<Core>) -> T + Send + 'static,
    ) -> T {
        let me = self.clone();
        self.worker.call(move || f(&me))
    }
}
