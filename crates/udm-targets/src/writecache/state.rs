//! The writecache's in-memory state: the metadata image (what the kernel keeps in
//! `memory_map`), the entries, the index of origin sectors, the LRU, and the sorted free list
//! with its rotating cursor (`current_free`).
//!
//! The index maps each cached sector to its newest entry; older entries for the same sector
//! (committed ones a newer write superseded, until the next commit releases them) hang off
//! it in a chain through `Entry::older`, newest to oldest, so a write allocates nothing.

use super::format::{self, Superblock, NONE, REGION_BYTES};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::iter::successors;
use std::time::Instant;
use udm_io::Bio;

/// One cache block.
#[derive(Clone, Copy)]
pub struct Entry {
    pub sector: u64,
    pub seq: u64,
    /// Being written back (`write_in_progress`).
    pub wb: bool,
    pub in_tree: bool,
    pub lru: u64,
    pub age: Instant,
    /// Data bios in flight to this block.
    pub writes: u32,
    pub reads: u32,
    /// The next older entry for the same sector ([`NIL`] if none).
    pub older: u32,
}

/// No entry.
pub const NIL: u32 = u32::MAX;

/// The metadata regions changed since they were last written: a flag per region and the
/// list of the set ones, so marking one on every write allocates nothing.
#[derive(Default)]
pub struct Dirty {
    flags: Vec<bool>,
    list: Vec<u64>,
}

impl Dirty {
    pub fn mark(&mut self, r: u64) {
        let r_us = r as usize;
        if r_us >= self.flags.len() {
            self.flags.resize(r_us + 1, false);
        }
        if !self.flags[r_us] {
            self.flags[r_us] = true;
            self.list.push(r);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The marked regions in ascending order; none stays marked.
    pub fn take(&mut self) -> Vec<u64> {
        let mut v = std::mem::take(&mut self.list);
        for &r in &v {
            self.flags[r as usize] = false;
        }
        v.sort_unstable();
        v
    }
}

/// The kernel's event counters (6.1 status fields 5..14).
#[derive(Default, Clone, Copy)]
pub struct Stats {
    pub reads: u64,
    pub read_hits: u64,
    pub writes: u64,
    pub write_hits_uncommitted: u64,
    pub write_hits_committed: u64,
    pub writes_around: u64,
    pub writes_allocate: u64,
    pub writes_blocked_on_freelist: u64,
    pub flushes: u64,
    pub discards: u64,
}

pub struct State {
    pub meta: Vec<u8>,
    /// Regions of `meta` changed since they were last written.
    pub dirty: Dirty,
    pub entries: Vec<Entry>,
    /// Sector -> newest entry for it.
    tree: BTreeMap<u64, u32>,
    /// Sectors with more than one entry.
    pub dups: BTreeSet<u64>,
    pub lru: BTreeMap<u64, u32>,
    lru_tick: u64,
    pub free: BTreeSet<u32>,
    cursor: Option<u32>,
    /// Freed in memory, usable once the free is on disk.
    pub pending_free: Vec<u32>,
    pub seq_count: u64,
    pub uncommitted_blocks: u32,
    pub writeback_size: u64,
    pub overwrote_committed: bool,
    /// Data writes to the cache in flight, by the sequence count they were mapped under.
    pub gen_writes: BTreeMap<u64, u32>,
    pub waiting_reads: HashMap<u32, Vec<Bio>>,
    pub blocked: VecDeque<Bio>,
    pub stats: Stats,
    pub error: bool,
    pub loaded: bool,
    pub suspended: bool,
    pub flush_on_suspend: bool,
    pub cleaner: bool,
    pub writeback_all: u32,
    pub high_wm: u64,
    pub low_wm: u64,
    pub writeback_queued: bool,
    pub origin_writes: u32,
    pub origin_idle_since: Instant,
    /// Blocks whose writeback copy is in flight.
    pub wb_inflight: usize,
    /// Writeback runs whose copy ended (entries, copied), for the end-of-writeback job.
    pub wb_done: Vec<(Vec<u32>, bool)>,
    /// The end-of-writeback job is queued or running.
    pub endio_busy: bool,
}

impl State {
    pub fn new(meta_bytes: usize, n_blocks: u64) -> State {
        let now = Instant::now();
        let e = Entry {
            sector: NONE,
            seq: NONE,
            wb: false,
            in_tree: false,
            lru: 0,
            age: now,
            writes: 0,
            reads: 0,
            older: NIL,
        };
        State {
            meta: vec![0; meta_bytes],
            dirty: Dirty::default(),
            entries: vec![e; n_blocks as usize],
            tree: BTreeMap::new(),
            dups: BTreeSet::new(),
            lru: BTreeMap::new(),
            lru_tick: 0,
            free: BTreeSet::new(),
            cursor: None,
            pending_free: Vec::new(),
            seq_count: 0,
            uncommitted_blocks: 0,
            writeback_size: 0,
            overwrote_committed: false,
            gen_writes: BTreeMap::new(),
            waiting_reads: HashMap::new(),
            blocked: VecDeque::new(),
            stats: Stats::default(),
            error: false,
            loaded: false,
            suspended: false,
            flush_on_suspend: false,
            cleaner: false,
            writeback_all: 0,
            high_wm: 0,
            low_wm: 0,
            writeback_queued: false,
            origin_writes: 0,
            origin_idle_since: now,
            wb_inflight: 0,
            wb_done: Vec::new(),
            endio_busy: false,
        }
    }

    pub fn committed(&self, i: u32) -> bool {
        self.entries[i as usize].seq < self.seq_count
    }

    /// Free blocks as the kernel counts them (`freelist_size`).
    pub fn free_count(&self) -> u64 {
        (self.free.len() + self.pending_free.len()) as u64
    }

    /// `writecache_verify_watermark`: whether writeback should run.
    pub fn below_high(&self) -> bool {
        self.free_count() + self.writeback_size <= self.high_wm
    }

    fn mark(&mut self, offset: usize) {
        self.dirty.mark(offset as u64 / REGION_BYTES);
    }

    /// Set entry `i` in the image and mark its region for writing.
    pub fn set_entry(&mut self, i: u32, sector: u64, seq: u64) {
        format::write_entry(&mut self.meta, i as u64, sector, seq);
        self.mark(format::entry_offset(i as u64));
        let e = &mut self.entries[i as usize];
        e.sector = sector;
        e.seq = seq;
    }

    /// `clear_seq_count`: the entry is free on disk once its region is written.
    pub fn clear_seq(&mut self, i: u32) {
        let sector = self.entries[i as usize].sector;
        self.set_entry(i, sector, NONE);
    }

    /// The newest entry for exactly `sector`.
    pub fn find(&self, sector: u64) -> Option<u32> {
        self.tree.get(&sector).copied()
    }

    /// Entry `i` and the older entries for its sector, newest to oldest.
    pub fn chain(&self, i: u32) -> impl Iterator<Item = u32> + '_ {
        successors(Some(i), |&x| {
            let o = self.entries[x as usize].older;
            (o != NIL).then_some(o)
        })
    }

    /// The oldest entry in `i`'s chain.
    pub fn oldest(&self, i: u32) -> u32 {
        self.chain(i).last().expect("the chain holds i")
    }

    /// Whether `sector` has more than one entry.
    pub fn is_dup(&self, sector: u64) -> bool {
        self.find(sector)
            .is_some_and(|i| self.entries[i as usize].older != NIL)
    }

    /// Whether `sector` has an entry.
    pub fn cached(&self, sector: u64) -> bool {
        self.tree.contains_key(&sector)
    }

    /// The first cached sector at or after `sector` and its newest entry.
    pub fn next_cached(&self, sector: u64) -> Option<(u64, u32)> {
        self.tree.range(sector..).next().map(|(&s, &i)| (s, i))
    }

    /// Every entry of the sectors in `[start, end)`.
    pub fn entries_in(&self, start: u64, end: u64) -> Vec<u32> {
        let heads: Vec<u32> = self.tree.range(start..end).map(|(_, &i)| i).collect();
        heads.into_iter().flat_map(|i| self.chain(i)).collect()
    }

    /// The newest entry for `sector`, or the oldest entry of the first sector after it
    /// (`WFE_RETURN_FOLLOWING`).
    pub fn find_following(&self, sector: u64) -> Option<(u64, u32)> {
        let (s, i) = self.next_cached(sector)?;
        Some((s, if s == sector { i } else { self.oldest(i) }))
    }

    pub fn insert(&mut self, i: u32) {
        let sector = self.entries[i as usize].sector;
        let older = match self.tree.insert(sector, i) {
            Some(o) => {
                self.dups.insert(sector);
                o
            }
            None => NIL,
        };
        self.lru_tick += 1;
        let tick = self.lru_tick;
        self.lru.insert(tick, i);
        let e = &mut self.entries[i as usize];
        e.in_tree = true;
        e.lru = tick;
        e.age = Instant::now();
        e.older = older;
    }

    /// Take `i` out of the index and the LRU (`writecache_unlink`).
    pub fn unlink(&mut self, i: u32) {
        let e = self.entries[i as usize];
        if !e.in_tree {
            return;
        }
        self.lru.remove(&e.lru);
        let head = self.tree[&e.sector];
        if head == i {
            if e.older == NIL {
                self.tree.remove(&e.sector);
            } else {
                self.tree.insert(e.sector, e.older);
            }
        } else {
            let prev = self
                .chain(head)
                .find(|&x| self.entries[x as usize].older == i)
                .expect("an entry in the index is in its sector's chain");
            self.entries[prev as usize].older = e.older;
        }
        if !self.is_dup(e.sector) {
            self.dups.remove(&e.sector);
        }
        let e = &mut self.entries[i as usize];
        e.in_tree = false;
        e.older = NIL;
    }

    /// Put `i` back on the LRU as its oldest member (a writeback that failed).
    pub fn relink_oldest(&mut self, i: u32) {
        let first = self.lru.keys().next().copied().unwrap_or(1);
        let tick = first.saturating_sub(1);
        self.lru.insert(tick, i);
        self.entries[i as usize].lru = tick;
    }

    /// `writecache_add_to_freelist` (the sorted tree variant).
    pub fn add_free(&mut self, i: u32) {
        if self.free.is_empty() {
            self.cursor = Some(i);
        }
        self.free.insert(i);
    }

    /// `writecache_pop_from_freelist`: the block at the cursor, only if it is `expected`.
    pub fn pop_free(&mut self, expected: Option<u32>) -> Option<u32> {
        let cur = self.cursor?;
        if expected.is_some_and(|x| x != cur) {
            return None;
        }
        self.free.remove(&cur);
        self.cursor = self
            .free
            .range(cur + 1..)
            .next()
            .or_else(|| self.free.iter().next())
            .copied();
        Some(cur)
    }

    /// No writeback copy is in flight or waiting for its end-of-writeback job.
    pub fn writeback_idle(&self) -> bool {
        self.wb_inflight == 0 && self.wb_done.is_empty() && !self.endio_busy
    }

    /// The newest LRU entry is uncommitted: a commit has work to do.
    pub fn has_uncommitted(&self) -> bool {
        self.lru
            .values()
            .next_back()
            .is_some_and(|&i| !self.committed(i))
    }

    /// Rebuild everything from a metadata image read from disk (`writecache_resume`).
    /// Returns whether the image was changed (and must be written back), and the sectors of
    /// duplicate entries with equal sequence numbers (the kernel's "two identical entries").
    /// Entries for sectors not aligned to `bs` (only corrupt metadata has them) are freed.
    pub fn load(&mut self, image: Vec<u8>, bs: u64) -> (bool, Vec<(u64, u64, u64)>) {
        self.meta = image;
        self.dirty.take();
        self.tree.clear();
        self.dups.clear();
        self.lru.clear();
        self.free.clear();
        self.cursor = None;
        self.pending_free.clear();
        self.writeback_size = 0;
        self.uncommitted_blocks = 0;
        self.overwrote_committed = false;
        self.seq_count = Superblock::decode(&self.meta).seq_count;
        let (mut changed, mut identical) = (false, Vec::new());
        for b in 0..self.entries.len() as u32 {
            let (sector, seq) = format::read_entry(&self.meta, b as u64);
            let e = &mut self.entries[b as usize];
            (e.sector, e.seq, e.wb, e.in_tree) = (sector, seq, false, false);
            if seq >= self.seq_count || sector % bs != 0 {
                if seq != NONE {
                    self.clear_seq(b);
                    changed = true;
                }
                self.add_free(b);
                continue;
            }
            match self.find(sector) {
                None => self.insert(b),
                Some(old) => {
                    let old_seq = self.entries[old as usize].seq;
                    if old_seq == seq {
                        identical.push((b as u64, sector, seq));
                    }
                    if old_seq > seq {
                        self.clear_seq(b);
                        self.add_free(b);
                    } else {
                        self.unlink(old);
                        self.clear_seq(old);
                        self.add_free(old);
                        self.insert(b);
                    }
                    changed = true;
                }
            }
        }
        self.loaded = true;
        (changed, identical)
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
