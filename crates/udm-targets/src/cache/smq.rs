//! The `smq` policy (stochastic multiqueue), with the kernel's behaviour (6.1,
//! dm-cache-policy-smq.c, read for its rules; no code shared):
//!
//! - a hotspot table tracks misses at a coarse granularity (hotspot blocks of up to 16 cache
//!   blocks, at least 1024 of them) in a 64-level queue; a hotspot block hit for the first
//!   time in a period rises `level_jump` levels; each period the levels are redistributed
//!   so the top 8 levels hold only as many hotspot blocks as fit in the cache;
//! - cache blocks live in a clean and a dirty 64-level queue; a hit moves a block up one
//!   level (once per cache period); writeback and demote sentinels, moved to the back of
//!   every level each period, tell old entries from recent ones;
//! - a miss promotes when its hotspot block's level reaches the promote level (48, 32 or 0
//!   as the hotspot queue predicts hits poorly, fairly or well); with no free cache block it
//!   queues demotions of clean blocks from the bottom half of the clean queue until a
//!   quarter of the cache is free or being freed;
//! - dirty blocks are written back only when the device is idle (or by the cleaner);
//! - the hint of a cache block is its level, saved at a clean shutdown and used to place
//!   the block when the mappings are loaded again.
//!
//! Time is counted in ticks (the target ticks the policy once a second, as the kernel's
//! waker): the hotspot period is one tick, the cache period 10, the writeback sentinels
//! move every 10 ticks and the demote sentinels every 60.

use super::levels::{BlockMap, Entry, Queue, NR_LEVELS};
use std::collections::{BTreeSet, HashSet, VecDeque};

const HOTSPOT_PERIOD: u64 = 1;
const CACHE_PERIOD: u64 = 10;
const WRITEBACK_PERIOD: u64 = 10;
const DEMOTE_PERIOD: u64 = 60;
/// Percent of the cache kept free (or being freed) once it is full.
const FREE_TARGET: u64 = 25;
/// Background work queued at most.
const MAX_WORK: usize = 10240;

/// What background work does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkOp {
    Promote,
    Demote,
    Writeback,
}

/// One piece of background work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Work {
    pub op: WorkOp,
    pub oblock: u64,
    pub cblock: u64,
}

/// Hits at or above 3/4 of the levels count as hits.
#[derive(Default)]
struct Stats {
    hits: u32,
    misses: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Confidence {
    Poor,
    Fair,
    Well,
}

impl Stats {
    fn accessed(&mut self, level: u8) {
        if level as usize >= NR_LEVELS * 3 / 4 {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
    }
    fn assess(&self) -> Confidence {
        let total = self.hits + self.misses;
        let c = if total == 0 {
            0
        } else {
            ((self.hits as u64) << 8) / total as u64
        };
        if c < 16 {
            Confidence::Poor
        } else if c < 32 {
            Confidence::Fair
        } else {
            Confidence::Well
        }
    }
}

fn test_and_set(bits: &mut [u64], i: usize) -> bool {
    let (w, m) = (i / 64, 1u64 << (i % 64));
    let was = bits[w] & m != 0;
    bits[w] |= m;
    was
}

/// The kernel's `hash_32(cb, 9) & 63`: the level of a block loaded without a hint.
fn random_level(cb: u64) -> u8 {
    (((cb as u32).wrapping_mul(0x61C8_8647) >> 23) & (NR_LEVELS as u32 - 1)) as u8
}

/// (hotspot block size in sectors, number of hotspot blocks), as the kernel sizes them.
pub fn hotspot_params(origin_sectors: u64, block: u64, nr_cblocks: u64) -> (u64, u64) {
    let mut hs = block * 16;
    let nr = (nr_cblocks / 4).max(1024);
    while hs > block && hs * nr > origin_sectors {
        hs /= 2;
    }
    (hs, nr)
}

/// The policy state (kept under the cache's state lock).
pub struct Smq {
    es: Vec<Entry>,
    wb_base: u32,
    dm_base: u32,
    hs_base: u32,
    cache_base: u32,
    nr_hotspot: u32,
    hs_used: u32,
    nr_cache: u32,
    cache_free: BTreeSet<u32>,
    hotspot_hits: Vec<u64>,
    cache_hits: Vec<u64>,
    hotspot: Queue,
    clean: Queue,
    dirty: Queue,
    hs_stats: Stats,
    cache_stats: Stats,
    table: BlockMap<u32>,
    hs_table: BlockMap<u32>,
    cblocks_per_hs: u64,
    level_jump: u32,
    tick: u64,
    cur_wb: bool,
    next_wb: u64,
    cur_dm: bool,
    next_dm: u64,
    next_hs_period: u64,
    next_cache_period: u64,
    read_promote_level: u32,
    write_promote_level: u32,
    work: VecDeque<Work>,
    promoting: HashSet<u64>,
    demotions_queued: u64,
    migrations_allowed: bool,
    cleaner: bool,
}

impl Smq {
    /// A policy for `nr_cblocks` cache blocks of `block` sectors over `origin_sectors`.
    /// `cleaner`: no promotions, write every dirty block back.
    pub fn new(nr_cblocks: u64, origin_sectors: u64, block: u64, cleaner: bool) -> Smq {
        let (hs_size, nr_hs) = hotspot_params(origin_sectors, block, nr_cblocks);
        let per_queue = 2 * NR_LEVELS as u32;
        let (wb_base, dm_base, hs_base) = (0, per_queue, 2 * per_queue);
        let cache_base = hs_base + nr_hs as u32;
        let total = cache_base as usize + nr_cblocks as usize;
        let mut es = vec![Entry::default(); total];
        for e in &mut es[..hs_base as usize] {
            e.sentinel = true;
        }
        let cblocks_per_hs = hs_size / block;
        let mut hotspot = Queue::new(NR_LEVELS);
        hotspot.nr_top_levels = 8;
        hotspot.nr_in_top_levels =
            ((nr_hs / NR_LEVELS as u64).min(nr_cblocks / cblocks_per_hs)) as u32;
        let mut p = Smq {
            es,
            wb_base,
            dm_base,
            hs_base,
            cache_base,
            nr_hotspot: nr_hs as u32,
            hs_used: 0,
            nr_cache: nr_cblocks as u32,
            cache_free: (0..nr_cblocks as u32).collect(),
            hotspot_hits: vec![0; (nr_hs as usize).div_ceil(64)],
            cache_hits: vec![0; (nr_cblocks as usize).div_ceil(64)],
            hotspot,
            clean: Queue::new(NR_LEVELS),
            dirty: Queue::new(NR_LEVELS),
            hs_stats: Stats::default(),
            cache_stats: Stats::default(),
            table: BlockMap::with_capacity_and_hasher(nr_cblocks as usize, Default::default()),
            hs_table: BlockMap::with_capacity_and_hasher(nr_hs as usize, Default::default()),
            cblocks_per_hs,
            level_jump: 1,
            tick: 0,
            cur_wb: false,
            next_wb: WRITEBACK_PERIOD,
            cur_dm: false,
            next_dm: DEMOTE_PERIOD,
            next_hs_period: 0,
            next_cache_period: 0,
            read_promote_level: NR_LEVELS as u32,
            write_promote_level: NR_LEVELS as u32,
            work: VecDeque::new(),
            promoting: HashSet::new(),
            demotions_queued: 0,
            migrations_allowed: !cleaner,
            cleaner,
        };
        // Both sets of sentinels, in every level of the clean and dirty queues.
        for which in [false, true] {
            p.cur_wb = which;
            p.cur_dm = which;
            for level in 0..NR_LEVELS {
                let s = p.wb_sentinel(level);
                p.es[s as usize].level = level as u8;
                p.dirty.push(&mut p.es, s);
                let s = p.dm_sentinel(level);
                p.es[s as usize].level = level as u8;
                p.clean.push(&mut p.es, s);
            }
        }
        p
    }

    fn sentinel(base: u32, level: usize, which: bool) -> u32 {
        base + if which { level } else { NR_LEVELS + level } as u32
    }
    fn wb_sentinel(&self, level: usize) -> u32 {
        Self::sentinel(self.wb_base, level, self.cur_wb)
    }
    fn dm_sentinel(&self, level: usize) -> u32 {
        Self::sentinel(self.dm_base, level, self.cur_dm)
    }
    fn cb_of(&self, i: u32) -> u64 {
        (i - self.cache_base) as u64
    }
    fn entry_of(&self, cb: u64) -> u32 {
        self.cache_base + cb as u32
    }

    fn push_queue(&mut self, i: u32, front: bool) {
        let d = self.es[i as usize].dirty;
        let (q, es) = if d {
            (&mut self.dirty, &mut self.es)
        } else {
            (&mut self.clean, &mut self.es)
        };
        if front {
            q.push_front(es, i)
        } else {
            q.push(es, i)
        }
    }
    fn del_queue(&mut self, i: u32) {
        let d = self.es[i as usize].dirty;
        let es = &mut self.es;
        let q = if d { &mut self.dirty } else { &mut self.clean };
        q.del(es, i);
    }

    /// Cache blocks in use (resident or being promoted).
    pub fn residency(&self) -> u64 {
        (self.nr_cache as usize - self.cache_free.len()) as u64
    }

    /// The cache block `ob` is mapped to, without touching any statistics.
    pub fn peek(&self, ob: u64) -> Option<u64> {
        self.table.get(&ob).map(|&i| self.cb_of(i))
    }

    /// Look `ob` up for a bio: a hit returns its cache block; a miss may return a promotion
    /// to start now (`allow_promote`: migration bandwidth is left), and may queue demotions.
    /// `fast`: a write that overwrites the whole block (no copy needed), promoted at once
    /// while the cache has free blocks.
    pub fn lookup(
        &mut self,
        ob: u64,
        write: bool,
        fast: bool,
        allow_promote: bool,
    ) -> Result<u64, Option<Work>> {
        if let Some(&i) = self.table.get(&ob) {
            self.cache_stats.accessed(self.es[i as usize].level);
            self.requeue(i);
            return Ok(self.cb_of(i));
        }
        self.cache_stats.misses += 1;
        let hs_level = self.update_hotspot(ob);
        let level = if write {
            self.write_promote_level
        } else {
            self.read_promote_level
        };
        let fast = write && fast && !self.cache_free.is_empty();
        if (fast || hs_level.is_some_and(|l| l as u32 >= level)) && allow_promote {
            return Err(self.queue_promotion(ob));
        }
        Err(None)
    }

    fn requeue(&mut self, i: u32) {
        let e = self.es[i as usize];
        if e.pending {
            return;
        }
        let cb = self.cb_of(i) as usize;
        if test_and_set(&mut self.cache_hits, cb) {
            return;
        }
        if e.dirty {
            let l = e.level as usize;
            let s1 = Self::sentinel(self.wb_base, l, !self.cur_wb);
            let s2 = Self::sentinel(self.wb_base, l, self.cur_wb);
            self.dirty.requeue(&mut self.es, i, 1, Some((s1, s2)));
        } else {
            self.clean.requeue(&mut self.es, i, 1, None);
        }
    }

    /// Count a miss against `ob`'s hotspot block; its level afterwards.
    fn update_hotspot(&mut self, ob: u64) -> Option<u8> {
        let hb = ob / self.cblocks_per_hs;
        if let Some(&i) = self.hs_table.get(&hb) {
            self.hs_stats.accessed(self.es[i as usize].level);
            let hi = (i - self.hs_base) as usize;
            let jump = if test_and_set(&mut self.hotspot_hits, hi) {
                0
            } else {
                self.level_jump
            };
            self.hotspot.requeue(&mut self.es, i, jump, None);
            return Some(self.es[i as usize].level);
        }
        self.hs_stats.misses += 1;
        let i = if self.hs_used < self.nr_hotspot {
            self.hs_used += 1;
            self.hs_base + self.hs_used - 1
        } else {
            let i = self.hotspot.pop(&mut self.es)?;
            let old = self.es[i as usize].oblock;
            self.hs_table.remove(&old);
            let hi = (i - self.hs_base) as usize;
            self.hotspot_hits[hi / 64] &= !(1u64 << (hi % 64));
            i
        };
        let e = &mut self.es[i as usize];
        e.oblock = hb;
        e.level = 0;
        e.allocated = true;
        self.hotspot.push(&mut self.es, i);
        self.hs_table.insert(hb, i);
        Some(0)
    }

    fn free_target_met(&self) -> bool {
        self.cache_free.len() as u64 + self.demotions_queued
            >= self.nr_cache as u64 * FREE_TARGET / 100
    }

    fn clean_target_met(&self, idle: bool) -> bool {
        if idle || self.cleaner {
            self.dirty.size() == 0
        } else {
            true
        }
    }

    fn queue_promotion(&mut self, ob: u64) -> Option<Work> {
        if !self.migrations_allowed {
            return None;
        }
        if self.cache_free.is_empty() {
            if !self.free_target_met() {
                self.queue_demotion();
            }
            return None;
        }
        if self.promoting.contains(&ob) {
            return None;
        }
        let cb = self.cache_free.pop_first()?;
        let i = self.entry_of(cb as u64);
        self.es[i as usize] = Entry {
            allocated: true,
            pending: true,
            oblock: ob,
            ..Entry::default()
        };
        self.promoting.insert(ob);
        Some(Work {
            op: WorkOp::Promote,
            oblock: ob,
            cblock: cb as u64,
        })
    }

    fn queue_demotion(&mut self) {
        if self.work.len() >= MAX_WORK {
            return;
        }
        let Some(i) = self.clean.peek(&self.es, NR_LEVELS / 2, true) else {
            if !self.clean_target_met(true) {
                self.queue_writeback(false);
            }
            return;
        };
        self.es[i as usize].pending = true;
        self.clean.del(&mut self.es, i);
        self.demotions_queued += 1;
        self.work.push_back(Work {
            op: WorkOp::Demote,
            oblock: self.es[i as usize].oblock,
            cblock: self.cb_of(i),
        });
    }

    fn queue_writeback(&mut self, idle: bool) {
        if self.work.len() >= MAX_WORK {
            return;
        }
        let Some(i) = self.dirty.peek(&self.es, NR_LEVELS, idle) else {
            return;
        };
        self.es[i as usize].pending = true;
        self.dirty.del(&mut self.es, i);
        self.work.push_back(Work {
            op: WorkOp::Writeback,
            oblock: self.es[i as usize].oblock,
            cblock: self.cb_of(i),
        });
    }

    /// Next background work: queued demotions/writebacks, else a writeback when the
    /// device is idle (or always for the cleaner).
    pub fn background_work(&mut self, idle: bool) -> Option<Work> {
        if self.work.is_empty() && !self.clean_target_met(idle) {
            self.queue_writeback(idle);
        }
        let w = self.work.pop_front()?;
        if w.op == WorkOp::Demote {
            self.demotions_queued -= 1;
        }
        Some(w)
    }

    /// Whether background work is queued.
    pub fn has_work(&self) -> bool {
        !self.work.is_empty()
    }

    /// Background work ended (successfully or not).
    pub fn complete(&mut self, w: Work, ok: bool) {
        let i = self.entry_of(w.cblock);
        match w.op {
            WorkOp::Promote => {
                self.promoting.remove(&w.oblock);
                self.es[i as usize].pending = false;
                if ok {
                    self.es[i as usize].level = NR_LEVELS as u8 - 1;
                    self.table.insert(w.oblock, i);
                    self.push_queue(i, false);
                } else {
                    self.es[i as usize].allocated = false;
                    self.cache_free.insert(w.cblock as u32);
                }
            }
            WorkOp::Demote => {
                if ok {
                    self.table.remove(&w.oblock);
                    self.es[i as usize] = Entry::default();
                    self.cache_free.insert(w.cblock as u32);
                } else {
                    self.es[i as usize].pending = false;
                    self.push_queue(i, false);
                }
            }
            WorkOp::Writeback => {
                self.es[i as usize].pending = false;
                self.push_queue(i, false);
            }
        }
    }

    fn set_clear_dirty(&mut self, cb: u64, dirty: bool) {
        let i = self.entry_of(cb);
        if !self.es[i as usize].allocated || self.es[i as usize].dirty == dirty {
            return;
        }
        if self.es[i as usize].pending {
            self.es[i as usize].dirty = dirty;
        } else {
            self.del_queue(i);
            self.es[i as usize].dirty = dirty;
            self.push_queue(i, false);
        }
    }

    pub fn set_dirty(&mut self, cb: u64) {
        self.set_clear_dirty(cb, true);
    }

    pub fn clear_dirty(&mut self, cb: u64) {
        self.set_clear_dirty(cb, false);
    }

    /// Load a mapping from the metadata; pushed ahead of the sentinels so it can be
    /// demoted or cleaned at once.
    pub fn load_mapping(&mut self, ob: u64, cb: u64, dirty: bool, hint: Option<u32>) {
        if !self.cache_free.remove(&(cb as u32)) {
            return;
        }
        let i = self.entry_of(cb);
        let level = match hint {
            Some(h) => h.min(NR_LEVELS as u32 - 1) as u8,
            None => random_level(cb),
        };
        self.es[i as usize] = Entry {
            allocated: true,
            dirty,
            level,
            oblock: ob,
            ..Entry::default()
        };
        self.table.insert(ob, i);
        self.push_queue(i, true);
    }

    /// Forget cache block `cb` (invalidation, discard): it is free at once.
    pub fn invalidate(&mut self, cb: u64) {
        let i = self.entry_of(cb);
        let e = self.es[i as usize];
        if !e.allocated || e.pending {
            return;
        }
        self.del_queue(i);
        self.table.remove(&e.oblock);
        self.es[i as usize] = Entry::default();
        self.cache_free.insert(cb as u32);
    }

    /// The hint saved for `cb`: its level.
    pub fn hint(&self, cb: u64) -> u32 {
        let e = &self.es[self.entry_of(cb) as usize];
        if e.allocated {
            e.level as u32
        } else {
            0
        }
    }

    fn update_promote_levels(&mut self) {
        // As 6.1: the threshold is never below the number of levels, so only the hotspot
        // queue's confidence decides (the cache's hit ratio table is moot).
        let mut threshold = if self.cache_free.is_empty() {
            self.default_promote_level()
        } else {
            NR_LEVELS as u32 / 2
        };
        threshold = threshold.max(NR_LEVELS as u32);
        threshold = match self.hs_stats.assess() {
            Confidence::Poor => threshold / 4,
            Confidence::Fair => threshold / 2,
            Confidence::Well => threshold,
        };
        self.read_promote_level = NR_LEVELS as u32 - threshold;
        self.write_promote_level = NR_LEVELS as u32 - threshold;
    }

    fn default_promote_level(&self) -> u32 {
        const TABLE: [u32; 17] = [1, 1, 1, 2, 4, 6, 7, 8, 7, 6, 4, 4, 3, 3, 2, 2, 1];
        let (h, m) = (self.cache_stats.hits, self.cache_stats.misses);
        let idx = if h + m == 0 {
            0
        } else {
            ((h as u64) << 4) / (h + m) as u64
        };
        TABLE[idx as usize]
    }

    /// One tick (a second): move sentinels, end the hotspot and cache periods when due.
    pub fn tick(&mut self) {
        self.tick += 1;
        let t = self.tick;
        if t >= self.next_wb {
            for level in 0..NR_LEVELS {
                let s = self.wb_sentinel(level);
                self.dirty.del(&mut self.es, s);
                self.dirty.push(&mut self.es, s);
            }
            self.next_wb = t + WRITEBACK_PERIOD;
            self.cur_wb = !self.cur_wb;
        }
        if t >= self.next_dm {
            for level in 0..NR_LEVELS {
                let s = self.dm_sentinel(level);
                self.clean.del(&mut self.es, s);
                self.clean.push(&mut self.es, s);
            }
            self.next_dm = t + DEMOTE_PERIOD;
            self.cur_dm = !self.cur_dm;
        }
        self.hotspot_hits.iter_mut().for_each(|w| *w = 0);
        self.update_promote_levels();
        if t >= self.next_hs_period {
            self.level_jump = match self.hs_stats.assess() {
                Confidence::Poor => 4,
                Confidence::Fair => 2,
                Confidence::Well => 1,
            };
            self.hotspot.redistribute(&mut self.es);
            self.hs_stats = Stats::default();
            self.next_hs_period = t + HOTSPOT_PERIOD;
        }
        if t >= self.next_cache_period {
            self.cache_hits.iter_mut().for_each(|w| *w = 0);
            self.dirty.redistribute(&mut self.es);
            self.clean.redistribute(&mut self.es);
            self.cache_stats = Stats::default();
            self.next_cache_period = t + CACHE_PERIOD;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hotspot_geometry_follows_the_kernel() {
        // 256 MiB origin, 64 KiB blocks, 1024 cache blocks: 4 cache blocks per hotspot block.
        assert_eq!(hotspot_params(524288, 128, 1024), (512, 1024));
        // A tiny origin: the hotspot block shrinks to the cache block.
        assert_eq!(hotspot_params(10240, 64, 24), (64, 1024));
    }

    #[test]
    fn promotes_once_hot_then_demotes_from_the_bottom_half() {
        // 512 origin blocks, each its own hotspot block; 4 cache blocks.
        let mut p = Smq::new(4, 512 * 64, 64, false);
        // Before the first tick nothing is promoted (promote level above every level).
        for ob in 0..512 {
            assert_eq!(p.lookup(ob, false, false, true), Err(None));
        }
        p.tick();
        // A hot set of 8 climbs the hotspot levels until it is promoted.
        let mut promoted = Vec::new();
        for _ in 0..40 {
            for ob in 100..108 {
                if let Err(Some(w)) = p.lookup(ob, false, false, true) {
                    p.complete(w, true);
                    promoted.push(ob);
                }
            }
            p.tick();
        }
        assert_eq!(p.residency(), 4, "the cache fills: {promoted:?}");
        assert!(promoted.iter().all(|ob| (100..108).contains(ob)));
        // Full: a hot miss queues a demotion of a clean block from the bottom half.
        let mut demoted = None;
        for _ in 0..40 {
            for ob in 100..108 {
                let _ = p.lookup(ob, false, false, true);
            }
            if let Some(w) = p.background_work(false) {
                demoted = Some(w);
                break;
            }
            p.tick();
        }
        let w = demoted.expect("a demotion queued");
        assert_eq!(w.op, WorkOp::Demote);
        assert!(p.hint(w.cblock) < 32, "bottom half");
        p.complete(w, true);
        assert_eq!(p.residency(), 3);
        assert_eq!(p.peek(w.oblock), None);
    }

    #[test]
    fn dirty_blocks_are_written_back_only_when_idle() {
        let mut p = Smq::new(4, 64 * 64, 64, false);
        p.load_mapping(3, 0, true, Some(5));
        assert_eq!(p.background_work(false), None);
        let w = p.background_work(true).expect("idle writeback");
        assert_eq!((w.op, w.oblock, w.cblock), (WorkOp::Writeback, 3, 0));
        p.clear_dirty(0);
        p.complete(w, true);
        assert_eq!(p.background_work(true), None);
        assert_eq!(p.hint(0), 5);
        let mut c = Smq::new(4, 64 * 64, 64, true);
        c.load_mapping(3, 1, true, None);
        assert_eq!(c.lookup(9, false, false, true), Err(None));
        assert!(
            c.background_work(false).is_some(),
            "the cleaner writes back when busy"
        );
    }
}
