//! In-memory reference counts shared by the disk and metadata space maps, with the
//! bookkeeping a commit needs (which bitmaps and overflow entries changed) and the
//! allocation rule that keeps crash safety: a block freed in this transaction that the
//! last committed state still uses is not handed out again until the next commit.

use super::{nr_bitmaps, summarise, IndexEntry, ENTRIES_PER_BITMAP};
use crate::error::{PdataError, Result};
use std::collections::{BTreeSet, HashMap, HashSet};

const BIG: u8 = u8::MAX;

/// Reference counts of `nr_blocks` blocks plus commit bookkeeping.
#[derive(Clone)]
pub struct SmCore {
    name: &'static str,
    nr_blocks: u64,
    small: Vec<u8>,
    big: HashMap<u64, u32>,
    nr_allocated: u64,
    /// Where each bitmap lives and its summary, as of the last commit (blocknr may be 0
    /// for a bitmap never written).
    pub(crate) index: Vec<IndexEntry>,
    /// Bitmaps whose counts changed since the last commit.
    pub(crate) dirty_bitmaps: BTreeSet<usize>,
    /// Blocks whose count went above 2 or came down from above 2.
    pub(crate) overflow_dirty: BTreeSet<u64>,
    /// Root of the btree of counts above 2.
    pub(crate) ref_count_root: u64,
    /// The index: a btree root (disk map) or the index block (metadata map).
    pub(crate) bitmap_root: u64,
    /// Blocks allocated in this transaction.
    new_this_txn: HashSet<u64>,
    /// Blocks freed in this transaction that the committed state still references.
    pending_free: HashSet<u64>,
    cursor: u64,
}

impl SmCore {
    /// All-zero counts for `nr_blocks` blocks; every bitmap is dirty (never written).
    pub fn new(name: &'static str, nr_blocks: u64) -> SmCore {
        let n = nr_bitmaps(nr_blocks);
        SmCore {
            name,
            nr_blocks,
            small: vec![0; nr_blocks as usize],
            big: HashMap::new(),
            nr_allocated: 0,
            index: vec![IndexEntry::default(); n],
            dirty_bitmaps: (0..n).collect(),
            overflow_dirty: BTreeSet::new(),
            ref_count_root: 0,
            bitmap_root: 0,
            new_this_txn: HashSet::new(),
            pending_free: HashSet::new(),
            cursor: 0,
        }
    }

    /// Load from decoded bitmaps (`bitmaps[i]` is bitmap `i`'s 2-bit entries) and the
    /// overflow tree's contents.
    pub fn load(
        name: &'static str,
        nr_blocks: u64,
        index: Vec<IndexEntry>,
        bitmaps: &[Vec<u8>],
        overflow: &HashMap<u64, u32>,
        root: &super::SmRoot,
    ) -> Result<SmCore> {
        let ref_count_root = root.ref_count_root;
        let mut sm = SmCore::new(name, nr_blocks);
        sm.dirty_bitmaps.clear();
        sm.index = index;
        sm.ref_count_root = ref_count_root;
        sm.bitmap_root = root.bitmap_root;
        for b in 0..nr_blocks {
            let bm = &bitmaps[(b / ENTRIES_PER_BITMAP) as usize];
            let e = bm[(b % ENTRIES_PER_BITMAP) as usize];
            let count = if e == 3 {
                *overflow.get(&b).ok_or_else(|| {
                    PdataError::Inconsistent(format!(
                        "{name} space map: block {b} has count 3+ in its bitmap but no overflow entry"
                    ))
                })?
            } else {
                e as u32
            };
            if count != 0 {
                sm.store(b, count);
                sm.nr_allocated += 1;
            }
        }
        Ok(sm)
    }

    /// Name used in errors ("metadata" or "data").
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Blocks covered.
    pub fn nr_blocks(&self) -> u64 {
        self.nr_blocks
    }

    /// Blocks with a non-zero count.
    pub fn nr_allocated(&self) -> u64 {
        self.nr_allocated
    }

    /// Blocks with a zero count.
    pub fn nr_free(&self) -> u64 {
        self.nr_blocks - self.nr_allocated
    }

    /// Reference count of `b` (0 beyond the end).
    pub fn get(&self, b: u64) -> u32 {
        match self.small.get(b as usize) {
            None => 0,
            Some(&BIG) => self.big[&b],
            Some(&c) => c as u32,
        }
    }

    fn store(&mut self, b: u64, v: u32) {
        if v >= BIG as u32 {
            self.small[b as usize] = BIG;
            self.big.insert(b, v);
        } else {
            self.small[b as usize] = v as u8;
            self.big.remove(&b);
        }
    }

    fn check(&self, b: u64) -> Result<()> {
        if b >= self.nr_blocks {
            return Err(PdataError::OutOfRange {
                block: b,
                nr_blocks: self.nr_blocks,
            });
        }
        Ok(())
    }

    /// Set the count of `b`.
    pub fn set(&mut self, b: u64, new: u32) -> Result<()> {
        self.check(b)?;
        let old = self.get(b);
        if old == new {
            return Ok(());
        }
        self.store(b, new);
        self.dirty_bitmaps.insert((b / ENTRIES_PER_BITMAP) as usize);
        if old > 2 || new > 2 {
            self.overflow_dirty.insert(b);
        }
        if old == 0 {
            self.nr_allocated += 1;
        } else if new == 0 {
            self.nr_allocated -= 1;
            if !self.new_this_txn.contains(&b) {
                self.pending_free.insert(b);
            }
        }
        Ok(())
    }

    /// Add one reference to `b`; returns the new count.
    pub fn inc(&mut self, b: u64) -> Result<u32> {
        let c = self.get(b) + 1;
        self.set(b, c)?;
        Ok(c)
    }

    /// Drop one reference to `b`; returns the new count.
    pub fn dec(&mut self, b: u64) -> Result<u32> {
        self.check(b)?;
        let c = self.get(b);
        if c == 0 {
            return Err(PdataError::Inconsistent(format!(
                "{} space map: dropping a reference to free block {b}",
                self.name
            )));
        }
        self.set(b, c - 1)?;
        Ok(c - 1)
    }

    /// Allocate a free block (count 0 now and not freed from the committed state in
    /// this transaction); its count becomes 1.
    pub fn alloc(&mut self) -> Result<u64> {
        let n = self.nr_blocks;
        for i in 0..n {
            let b = (self.cursor + i) % n;
            if self.small[b as usize] == 0 && !self.pending_free.contains(&b) {
                self.set(b, 1)?;
                self.new_this_txn.insert(b);
                self.cursor = (b + 1) % n;
                return Ok(b);
            }
        }
        Err(PdataError::NoSpace(self.name))
    }

    /// Whether `b` was allocated in the current transaction (so it is not reachable
    /// from the committed state and may be written in place).
    pub fn is_new(&self, b: u64) -> bool {
        self.new_this_txn.contains(&b)
    }

    /// Start a new transaction after a commit.
    pub fn begin(&mut self) {
        self.new_this_txn.clear();
        self.pending_free.clear();
        // Each transaction allocates from the lowest free block, reusing what the last
        // one freed and keeping the metadata compact.
        self.cursor = 0;
    }

    /// Grow to `nr_blocks` (new blocks free, new bitmaps dirty).
    pub fn extend(&mut self, nr_blocks: u64) -> Result<()> {
        if nr_blocks < self.nr_blocks {
            return Err(PdataError::Invalid(format!(
                "{} space map cannot shrink from {} to {nr_blocks} blocks",
                self.name, self.nr_blocks
            )));
        }
        let old_bitmaps = self.index.len();
        self.nr_blocks = nr_blocks;
        self.small.resize(nr_blocks as usize, 0);
        let n = nr_bitmaps(nr_blocks);
        self.index.resize(n, IndexEntry::default());
        // The last old bitmap may cover new blocks too; rewrite it.
        self.dirty_bitmaps.extend(old_bitmaps.saturating_sub(1)..n);
        Ok(())
    }

    /// Shrink to `nr_blocks`; every block being dropped must be free. The last remaining
    /// bitmap becomes dirty; the bitmaps past it are returned (their index positions) for
    /// the caller to release.
    pub fn shrink(&mut self, nr_blocks: u64) -> Result<std::ops::Range<usize>> {
        if nr_blocks > self.nr_blocks {
            return Err(PdataError::Invalid(format!(
                "{} space map cannot shrink from {} to {nr_blocks} blocks",
                self.name, self.nr_blocks
            )));
        }
        if let Some(b) = (nr_blocks..self.nr_blocks).find(|&b| self.get(b) != 0) {
            return Err(PdataError::Invalid(format!(
                "{} space map: block {b} is still in use, cannot shrink to {nr_blocks} blocks",
                self.name
            )));
        }
        let old_bitmaps = self.index.len();
        let n = nr_bitmaps(nr_blocks);
        self.nr_blocks = nr_blocks;
        self.small.truncate(nr_blocks as usize);
        self.index.truncate(n);
        self.dirty_bitmaps.retain(|&i| i < n);
        if n > 0 {
            self.dirty_bitmaps.insert(n - 1);
        }
        self.new_this_txn.retain(|&b| b < nr_blocks);
        self.pending_free.retain(|&b| b < nr_blocks);
        self.cursor = 0;
        Ok(n..old_bitmaps)
    }

    /// The root a superblock stores for this map.
    pub fn root(&self) -> super::SmRoot {
        super::SmRoot {
            nr_blocks: self.nr_blocks,
            nr_allocated: self.nr_allocated,
            bitmap_root: self.bitmap_root,
            ref_count_root: self.ref_count_root,
        }
    }

    /// The 2-bit entries of bitmap `i` and how many of them lie inside the map.
    pub fn bitmap_entries(&self, i: usize) -> (Vec<u8>, usize) {
        let start = i as u64 * ENTRIES_PER_BITMAP;
        let end = (start + ENTRIES_PER_BITMAP).min(self.nr_blocks);
        let mut out = vec![0u8; ENTRIES_PER_BITMAP as usize];
        for b in start..end {
            out[(b - start) as usize] = self.get(b).min(3) as u8;
        }
        (out, (end - start) as usize)
    }

    /// The index entry bitmap `i` gets when written at `blocknr`.
    pub fn summary(&self, i: usize, blocknr: u64) -> IndexEntry {
        let (entries, len) = self.bitmap_entries(i);
        summarise(blocknr, &entries, len)
    }
}
