//! The disk space map (dm-thin's data space map): bitmaps in metadata blocks, indexed by
//! a btree of 16-byte index entries keyed by bitmap number, and counts above 2 in a btree
//! of u32s. Its blocks are allocated from the metadata space map.

use super::{decode_bitmap, encode_bitmap, IndexEntry, SmCore, SmRoot, INDEX_ENTRY_SIZE};
use crate::btree::{self, NoRefs};
use crate::checksum::BlockKind;
use crate::error::{PdataError, Result};
use crate::tm::{BlockReader, TransactionManager};

/// A space map for another device, stored in the metadata device.
pub struct DiskSpaceMap {
    core: SmCore,
}

impl DiskSpaceMap {
    /// A new, all-free map of `nr_blocks` blocks (its trees are created now, its bitmaps
    /// at the first commit).
    pub fn format(tm: &mut TransactionManager, nr_blocks: u64) -> Result<DiskSpaceMap> {
        // Each bitmap takes a metadata block: a map that cannot fit is refused before its
        // in-memory counts (a byte per block) are allocated.
        if super::nr_bitmaps(nr_blocks) as u64 > tm.bm().nr_blocks() {
            return Err(PdataError::NoSpace(
                "data space map bitmaps do not fit the metadata device",
            ));
        }
        let mut core = SmCore::new("data", nr_blocks);
        core.bitmap_root = btree::empty(tm, INDEX_ENTRY_SIZE as u32)?;
        core.ref_count_root = btree::empty(tm, 4)?;
        Ok(DiskSpaceMap { core })
    }

    /// Load the map whose root (as a superblock stores it) is `sm_root`.
    pub fn open<R: BlockReader + ?Sized>(r: &mut R, sm_root: &[u8]) -> Result<DiskSpaceMap> {
        let root = SmRoot::unpack(sm_root)?;
        let n = super::nr_bitmaps(root.nr_blocks);
        // `n` comes from the disk: nothing is sized by it until the index agrees.
        let mut index = Vec::new();
        for (i, (k, v)) in btree::collect(r, root.bitmap_root, INDEX_ENTRY_SIZE as u32)?
            .into_iter()
            .enumerate()
        {
            if k != i as u64 {
                return Err(PdataError::Inconsistent(format!(
                    "data space map index has bitmap {k} where {i} belongs"
                )));
            }
            index.push(IndexEntry::unpack(&v));
        }
        if index.len() != n {
            return Err(PdataError::Inconsistent(format!(
                "data space map of {} blocks needs {n} bitmaps, index lists {}",
                root.nr_blocks,
                index.len()
            )));
        }
        let mut bitmaps = Vec::with_capacity(n);
        for e in &index {
            bitmaps.push(decode_bitmap(&*r.read_block(e.blocknr, BlockKind::Bitmap)?));
        }
        let overflow = btree::collect_u32(r, root.ref_count_root)?;
        let core = SmCore::load("data", root.nr_blocks, index, &bitmaps, &overflow, &root)?;
        Ok(DiskSpaceMap { core })
    }

    /// The counts.
    pub fn core(&self) -> &SmCore {
        &self.core
    }

    /// Count of `b`.
    pub fn get(&self, b: u64) -> u32 {
        self.core.get(b)
    }

    /// Allocate a free block (count 1).
    pub fn alloc(&mut self) -> Result<u64> {
        self.core.alloc()
    }

    /// Add a reference.
    pub fn inc(&mut self, b: u64) -> Result<u32> {
        self.core.inc(b)
    }

    /// Drop a reference.
    pub fn dec(&mut self, b: u64) -> Result<u32> {
        self.core.dec(b)
    }

    /// Grow the map to `nr_blocks`.
    pub fn extend(&mut self, nr_blocks: u64) -> Result<()> {
        self.core.extend(nr_blocks)
    }

    /// Shrink the map to `nr_blocks` (the blocks dropped must be free): the index loses
    /// the bitmaps past the new end and their blocks are released.
    pub fn shrink(&mut self, tm: &mut TransactionManager, nr_blocks: u64) -> Result<()> {
        let old = self.core.index.clone();
        for i in self.core.shrink(nr_blocks)? {
            self.core.bitmap_root = btree::remove(
                tm,
                self.core.bitmap_root,
                i as u64,
                INDEX_ENTRY_SIZE as u32,
                &mut NoRefs,
            )?
            .0;
            if old[i].blocknr != 0 {
                tm.dec(old[i].blocknr)?;
            }
        }
        Ok(())
    }

    /// Write changed bitmaps, index entries and overflow counts; return the root for the
    /// superblock. Call before [`TransactionManager::pre_commit`].
    pub fn commit(&mut self, tm: &mut TransactionManager) -> Result<SmRoot> {
        for b in std::mem::take(&mut self.core.overflow_dirty) {
            let c = self.core.get(b);
            let root = self.core.ref_count_root;
            self.core.ref_count_root = if c > 2 {
                btree::insert(tm, root, b, &c.to_le_bytes(), &mut NoRefs)?
            } else {
                btree::remove(tm, root, b, 4, &mut NoRefs)?.0
            };
        }
        for i in std::mem::take(&mut self.core.dirty_bitmaps) {
            let old = self.core.index[i].blocknr;
            let blocknr = if old != 0 && tm.is_shadow(old) {
                old
            } else {
                let new = tm.alloc()?;
                if old != 0 {
                    tm.dec(old)?;
                }
                new
            };
            let (entries, _) = self.core.bitmap_entries(i);
            tm.write(blocknr, encode_bitmap(blocknr, &entries))?;
            let entry = self.core.summary(i, blocknr);
            self.core.index[i] = entry;
            let mut v = [0u8; INDEX_ENTRY_SIZE];
            entry.pack(&mut v);
            self.core.bitmap_root =
                btree::insert(tm, self.core.bitmap_root, i as u64, &v, &mut NoRefs)?;
        }
        Ok(self.core.root())
    }

    /// Start a new transaction once the superblock holding the last root is durable
    /// (blocks freed before it become reusable).
    pub fn begin(&mut self) {
        self.core.begin();
    }
}
