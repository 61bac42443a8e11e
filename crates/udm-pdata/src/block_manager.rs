//! The block manager: validated reads of checksummed blocks through an LRU cache, and
//! write-back of dirty blocks.
//!
//! Locking is Rust's: a read hands out an immutable `Arc` snapshot of the block, and
//! writing needs `&mut BlockManager`, which the transaction manager owns alone. The
//! transaction manager decides which blocks may be written; this layer only buffers.

use crate::checksum::{seal, verify, BlockKind};
use crate::error::{PdataError, Result};
use crate::io::MetaIo;
use crate::BlockBuf;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Default number of clean blocks kept in the cache (16 MiB).
pub const DEFAULT_CACHE_BLOCKS: usize = 4096;

struct Cached {
    data: Arc<BlockBuf>,
    /// Kind the block was last validated as.
    kind: Option<BlockKind>,
    tick: u64,
}

/// A dirty block and the kind to seal it as at write-back (None: sealed already).
type Dirty = (Arc<BlockBuf>, Option<BlockKind>);

/// Reads, caches and writes 4096-byte metadata blocks.
pub struct BlockManager {
    io: Arc<dyn MetaIo>,
    clean: HashMap<u64, Cached>,
    lru: BTreeMap<u64, u64>,
    tick: u64,
    capacity: usize,
    /// Dirty blocks, with the kind to seal them as at write-back (None: sealed already).
    dirty: HashMap<u64, Dirty>,
    dirty_limit: usize,
}

impl BlockManager {
    /// A block manager over `io` caching up to `capacity` clean blocks.
    pub fn new(io: Arc<dyn MetaIo>, capacity: usize) -> BlockManager {
        BlockManager {
            io,
            clean: HashMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            capacity: capacity.max(16),
            dirty: HashMap::new(),
            dirty_limit: capacity.max(16),
        }
    }

    /// Change how many clean (and, before an early write-back, dirty) blocks are kept.
    pub fn set_capacity(&mut self, blocks: usize) -> Result<()> {
        self.capacity = blocks.max(16);
        self.dirty_limit = blocks.max(16);
        while self.clean.len() > self.capacity {
            let Some((&t, &victim)) = self.lru.iter().next() else {
                break;
            };
            self.lru.remove(&t);
            self.clean.remove(&victim);
        }
        if self.dirty.len() > self.dirty_limit {
            self.write_back()?;
        }
        Ok(())
    }

    /// The device underneath.
    pub fn io(&self) -> &Arc<dyn MetaIo> {
        &self.io
    }

    /// Number of blocks on the device.
    pub fn nr_blocks(&self) -> u64 {
        self.io.nr_blocks()
    }

    fn check_range(&self, b: u64) -> Result<()> {
        let nr_blocks = self.io.nr_blocks();
        if b >= nr_blocks {
            return Err(PdataError::OutOfRange {
                block: b,
                nr_blocks,
            });
        }
        Ok(())
    }

    /// Read block `b` without validation (dirty copy first, then cache, then device).
    pub fn read_raw(&mut self, b: u64) -> Result<Arc<BlockBuf>> {
        self.read_inner(b, None)
    }

    /// Read block `b` and check it is a valid block of `kind` at location `b`.
    pub fn read(&mut self, b: u64, kind: BlockKind) -> Result<Arc<BlockBuf>> {
        self.read_inner(b, Some(kind))
    }

    fn read_inner(&mut self, b: u64, kind: Option<BlockKind>) -> Result<Arc<BlockBuf>> {
        if let Some((d, sealed_as)) = self.dirty.get(&b) {
            let d = d.clone();
            match (kind, *sealed_as) {
                (Some(k), Some(s)) if k != s => {
                    return Err(PdataError::corrupt(k, b, format!("block holds a {s}")));
                }
                (Some(k), None) => verify(&d, k, b)?,
                _ => {}
            }
            return Ok(d);
        }
        self.tick += 1;
        let tick = self.tick;
        if let Some(c) = self.clean.get_mut(&b) {
            self.lru.remove(&c.tick);
            c.tick = tick;
            self.lru.insert(tick, b);
            if let Some(k) = kind {
                if c.kind != Some(k) {
                    verify(&c.data, k, b)?;
                    c.kind = Some(k);
                }
            }
            return Ok(c.data.clone());
        }
        self.check_range(b)?;
        let mut buf = Box::new([0u8; crate::BLOCK_SIZE]);
        self.io
            .read_block(b, &mut buf)
            .map_err(|source| PdataError::Io { block: b, source })?;
        if let Some(k) = kind {
            verify(&buf, k, b)?;
        }
        let data: Arc<BlockBuf> = Arc::from(buf);
        self.insert_clean(b, data.clone(), kind);
        Ok(data)
    }

    fn insert_clean(&mut self, b: u64, data: Arc<BlockBuf>, kind: Option<BlockKind>) {
        while self.clean.len() >= self.capacity {
            let Some((&t, &victim)) = self.lru.iter().next() else {
                break;
            };
            self.lru.remove(&t);
            self.clean.remove(&victim);
        }
        self.tick += 1;
        self.lru.insert(self.tick, b);
        if let Some(old) = self.clean.insert(
            b,
            Cached {
                data,
                kind,
                tick: self.tick,
            },
        ) {
            self.lru.remove(&old.tick);
        }
    }

    fn drop_clean(&mut self, b: u64) {
        if let Some(old) = self.clean.remove(&b) {
            self.lru.remove(&old.tick);
        }
    }

    /// Buffer new contents for block `b` (already sealed with its checksum). They reach
    /// the device on [`BlockManager::write_back`] or when too many blocks are dirty.
    pub fn write(&mut self, b: u64, data: BlockBuf) -> Result<()> {
        self.buffer(b, data, None)
    }

    /// Buffer contents for block `b` whose checksum (as `kind`) is computed at write-back.
    pub fn write_unsealed(&mut self, b: u64, data: BlockBuf, kind: BlockKind) -> Result<()> {
        self.buffer(b, data, Some(kind))
    }

    fn buffer(&mut self, b: u64, data: BlockBuf, kind: Option<BlockKind>) -> Result<()> {
        self.check_range(b)?;
        self.drop_clean(b);
        self.dirty.insert(b, (Arc::new(data), kind));
        if self.dirty.len() > self.dirty_limit {
            self.write_back()?;
        }
        Ok(())
    }

    /// Forget any buffered contents of `b` (the block was freed).
    pub fn discard(&mut self, b: u64) {
        self.dirty.remove(&b);
        self.drop_clean(b);
    }

    /// Write every dirty block to the device (no flush), in block order.
    pub fn write_back(&mut self) -> Result<()> {
        let mut blocks: Vec<(u64, Dirty)> = self.dirty.drain().collect();
        blocks.sort_unstable_by_key(|(b, _)| *b);
        for (b, (mut data, kind)) in blocks {
            if let Some(k) = kind {
                seal(Arc::make_mut(&mut data), k);
            }
            self.io
                .write_block(b, &data)
                .map_err(|source| PdataError::Io { block: b, source })?;
            self.insert_clean(b, data, kind);
        }
        Ok(())
    }

    /// Write block `b` straight to the device (the superblock at commit).
    pub fn write_now(&mut self, b: u64, data: BlockBuf) -> Result<()> {
        self.check_range(b)?;
        self.dirty.remove(&b);
        self.io
            .write_block(b, &data)
            .map_err(|source| PdataError::Io { block: b, source })?;
        self.insert_clean(b, Arc::new(data), None);
        Ok(())
    }

    /// Flush the device's volatile cache.
    pub fn flush(&mut self) -> Result<()> {
        self.io
            .flush()
            .map_err(|source| PdataError::Io { block: 0, source })
    }

    /// Drop every cached and dirty block (used after a failed transaction).
    pub fn invalidate(&mut self) {
        self.dirty.clear();
        self.clean.clear();
        self.lru.clear();
    }

    /// Number of blocks waiting to be written.
    pub fn nr_dirty(&self) -> usize {
        self.dirty.len()
    }
}
