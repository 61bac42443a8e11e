//! The transaction manager: copy-on-write shadowing and two-phase commit over a
//! [`BlockManager`], owning the metadata space map.
//!
//! Invariant: a block reachable from the last committed superblock is never written.
//! Every write goes to a block allocated in the current transaction (a shadow); blocks
//! freed in this transaction are not reused before the next commit; and a commit writes
//! all other dirty blocks and flushes before it writes and flushes the superblock.

use crate::block_manager::{BlockManager, DEFAULT_CACHE_BLOCKS};
use crate::checksum::BlockKind;
use crate::error::{PdataError, Result};
use crate::io::MetaIo;
use crate::space_map::{metadata, SmCore, SmRoot};
use crate::BlockBuf;
use std::sync::Arc;

/// Location of the superblock.
pub const SUPERBLOCK: u64 = 0;

/// Something blocks can be read from (a transaction manager or a bare block manager).
pub trait BlockReader {
    /// Read block `b`, validated as `kind`.
    fn read_block(&mut self, b: u64, kind: BlockKind) -> Result<Arc<BlockBuf>>;
}

impl BlockReader for BlockManager {
    fn read_block(&mut self, b: u64, kind: BlockKind) -> Result<Arc<BlockBuf>> {
        self.read(b, kind)
    }
}

/// Shadowing, allocation and commit for one metadata device.
pub struct TransactionManager {
    bm: BlockManager,
    sm: SmCore,
    threshold: Threshold,
}

/// An edge-triggered low-space threshold on the metadata space map (the kernel's
/// `dm_sm_register_threshold_callback`): after an allocation leaves `free <= at`, it
/// fires once, unless the free count seen at the previous allocation was already at or
/// below the threshold. The last value seen survives a new threshold.
#[derive(Debug, Default)]
struct Threshold {
    at: Option<u64>,
    last: Option<u64>,
    fired: bool,
}

impl Threshold {
    fn below(&self, v: u64) -> bool {
        self.at.is_some_and(|t| v <= t)
    }
    fn check(&mut self, free: u64) {
        if self.below(free) && !self.last.is_some_and(|l| self.below(l)) {
            self.fired = true;
        }
        self.last = Some(free);
    }
}

impl BlockReader for TransactionManager {
    fn read_block(&mut self, b: u64, kind: BlockKind) -> Result<Arc<BlockBuf>> {
        self.bm.read(b, kind)
    }
}

impl TransactionManager {
    /// A fresh metadata space map over `io` (at most [`crate::space_map::MAX_METADATA_BLOCKS`]
    /// blocks are used) with block 0 reserved for the superblock. Nothing is written
    /// until the first commit.
    pub fn format(io: Arc<dyn MetaIo>) -> Result<TransactionManager> {
        let nr_blocks = io.nr_blocks().min(crate::space_map::MAX_METADATA_BLOCKS);
        if nr_blocks < 16 {
            return Err(PdataError::Invalid(format!(
                "metadata device of {nr_blocks} blocks is too small"
            )));
        }
        let mut sm = SmCore::new("metadata", nr_blocks);
        sm.set(SUPERBLOCK, 1)?;
        let mut tm = TransactionManager {
            bm: BlockManager::new(io, DEFAULT_CACHE_BLOCKS),
            sm,
            threshold: Threshold::default(),
        };
        tm.sm.ref_count_root = crate::btree::empty(&mut tm, 4)?;
        Ok(tm)
    }

    /// Open the metadata space map whose root (as a superblock stores it) is `sm_root`.
    pub fn open(io: Arc<dyn MetaIo>, sm_root: &[u8]) -> Result<TransactionManager> {
        let mut bm = BlockManager::new(io, DEFAULT_CACHE_BLOCKS);
        let root = SmRoot::unpack(sm_root)?;
        let sm = metadata::load(&mut bm, &root)?;
        Ok(TransactionManager {
            bm,
            sm,
            threshold: Threshold::default(),
        })
    }

    /// The block manager (for reads and cache statistics).
    pub fn bm(&mut self) -> &mut BlockManager {
        &mut self.bm
    }

    /// The metadata space map.
    pub fn sm(&self) -> &SmCore {
        &self.sm
    }

    pub(crate) fn sm_mut(&mut self) -> &mut SmCore {
        &mut self.sm
    }

    /// Read block `b` as `kind`.
    pub fn read(&mut self, b: u64, kind: BlockKind) -> Result<Arc<BlockBuf>> {
        self.bm.read(b, kind)
    }

    /// Grow the metadata space map to `nr_blocks` (the device must already be that big).
    pub fn extend(&mut self, nr_blocks: u64) -> Result<()> {
        if nr_blocks > self.bm.nr_blocks() || nr_blocks > crate::space_map::MAX_METADATA_BLOCKS {
            return Err(PdataError::Invalid(format!(
                "cannot grow metadata to {nr_blocks} blocks (device {}, format limit {})",
                self.bm.nr_blocks(),
                crate::space_map::MAX_METADATA_BLOCKS
            )));
        }
        self.sm.extend(nr_blocks)
    }

    /// Allocate a new block for this transaction (count 1).
    pub fn alloc(&mut self) -> Result<u64> {
        let b = self.sm.alloc()?;
        self.threshold.check(self.sm.nr_free());
        Ok(b)
    }

    /// Arm the low-space threshold: an allocation that leaves `blocks` or fewer blocks
    /// free raises [`TransactionManager::take_threshold_event`] (once per crossing).
    pub fn set_threshold(&mut self, blocks: u64) {
        self.threshold.at = Some(blocks);
    }

    /// Whether the threshold was crossed since the last call.
    pub fn take_threshold_event(&mut self) -> bool {
        std::mem::take(&mut self.threshold.fired)
    }

    /// Add a reference to metadata block `b`.
    pub fn inc(&mut self, b: u64) -> Result<u32> {
        self.sm.inc(b)
    }

    /// Drop a reference to metadata block `b`; returns the new count.
    pub fn dec(&mut self, b: u64) -> Result<u32> {
        let c = self.sm.dec(b)?;
        if c == 0 && self.sm.is_new(b) {
            self.bm.discard(b);
        }
        Ok(c)
    }

    /// Reference count of metadata block `b`.
    pub fn ref_count(&self, b: u64) -> u32 {
        self.sm.get(b)
    }

    /// Whether `b` was allocated in this transaction (writable in place).
    pub fn is_shadow(&self, b: u64) -> bool {
        self.sm.is_new(b)
    }

    /// Get a writable copy of block `b` (validated as `kind`): `b` itself when it is
    /// already this transaction's and not shared, else a new block holding `b`'s contents, with `b`'s
    /// count dropped. The flag says whether `b` was shared (count > 1), in which case the
    /// caller must add a reference to everything the block points to.
    pub fn shadow(&mut self, b: u64, kind: BlockKind) -> Result<(u64, Arc<BlockBuf>, bool)> {
        let data = self.bm.read(b, kind)?;
        let shared = self.sm.get(b) > 1;
        if self.is_shadow(b) && !shared {
            return Ok((b, data, false));
        }
        let new = self.alloc()?;
        self.sm.dec(b)?;
        Ok((new, data, shared))
    }

    /// Write `data` (sealed) to `b`, which must have been allocated in this transaction.
    pub fn write(&mut self, b: u64, data: BlockBuf) -> Result<()> {
        if !self.is_shadow(b) {
            return Err(PdataError::Invalid(format!(
                "write to metadata block {b}, which the committed state may still use"
            )));
        }
        self.bm.write(b, data)
    }

    /// Write `data` to `b` like [`TransactionManager::write`], leaving the checksum of a
    /// block of `kind` to be computed once, when the block leaves the cache.
    pub fn write_unsealed(&mut self, b: u64, data: BlockBuf, kind: BlockKind) -> Result<()> {
        if !self.is_shadow(b) {
            return Err(PdataError::Invalid(format!(
                "write to metadata block {b}, which the committed state may still use"
            )));
        }
        self.bm.write_unsealed(b, data, kind)
    }

    /// Write the metadata space map's own structures and return its root, to be put in
    /// the superblock passed to [`TransactionManager::commit`]. No allocation may happen
    /// between the two calls.
    pub fn pre_commit(&mut self) -> Result<SmRoot> {
        metadata::commit(self)
    }

    /// Phase one: write every dirty block and flush. Phase two: write the (sealed)
    /// superblock at block 0 and flush. Then start a new transaction.
    pub fn commit(&mut self, superblock: BlockBuf) -> Result<()> {
        self.bm.write_back()?;
        self.bm.flush()?;
        self.bm.write_now(SUPERBLOCK, superblock)?;
        self.bm.flush()?;
        self.sm.begin();
        Ok(())
    }
}
