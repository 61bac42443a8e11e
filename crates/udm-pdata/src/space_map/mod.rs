//! Space maps: per-block reference counts, stored as bitmaps of 2-bit counts (3 meaning
//! "look in the overflow btree of `u32` counts"), an index of the bitmaps, and a
//! 32-byte root (`nr_blocks`, `nr_allocated`, `bitmap_root`, `ref_count_root`) that
//! superblocks keep in a 128-byte slot.
//!
//! [`SmCore`] is the in-memory state both kinds share; [`disk`] stores the index in a
//! btree (data space maps) and [`metadata`] in one fixed-format index block (the
//! metadata space map, which allocates from itself while it is written).

pub mod core;
pub mod disk;
pub mod metadata;

pub use self::core::SmCore;
pub use disk::DiskSpaceMap;

use crate::checksum::{seal, BlockKind};
use crate::error::{PdataError, Result};
use crate::{le32, le64, put32, put64, BlockBuf, BLOCK_SIZE};

/// Bytes of a bitmap block's header (csum, not_used, blocknr).
pub const BITMAP_HEADER_SIZE: usize = 16;
/// Reference counts held by one bitmap block.
pub const ENTRIES_PER_BITMAP: u64 = ((BLOCK_SIZE - BITMAP_HEADER_SIZE) * 4) as u64;
/// Bitmaps one metadata index block can list.
pub const MAX_METADATA_BITMAPS: usize = 255;
/// Largest metadata device the metadata space map can describe, in blocks.
pub const MAX_METADATA_BLOCKS: u64 = MAX_METADATA_BITMAPS as u64 * ENTRIES_PER_BITMAP;
/// Size of the slot a superblock reserves for a space map root.
pub const SM_ROOT_SIZE: usize = 128;
/// Size of an index entry.
pub const INDEX_ENTRY_SIZE: usize = 16;

/// Where one bitmap lives and a summary of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexEntry {
    /// Block holding the bitmap (0: not yet written).
    pub blocknr: u64,
    /// Entries in the bitmap that are zero (counted over the whole bitmap).
    pub nr_free: u32,
    /// No free entry in the bitmap before this one.
    pub none_free_before: u32,
}

impl IndexEntry {
    /// Decode from 16 bytes.
    pub fn unpack(b: &[u8]) -> IndexEntry {
        IndexEntry {
            blocknr: le64(b, 0),
            nr_free: le32(b, 8),
            none_free_before: le32(b, 12),
        }
    }
    /// Encode into 16 bytes.
    pub fn pack(&self, b: &mut [u8]) {
        put64(b, 0, self.blocknr);
        put32(b, 8, self.nr_free);
        put32(b, 12, self.none_free_before);
    }
}

/// The root of a space map as a superblock stores it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmRoot {
    /// Blocks the map covers.
    pub nr_blocks: u64,
    /// Blocks with a non-zero count.
    pub nr_allocated: u64,
    /// Index: a btree root (disk map) or the index block (metadata map).
    pub bitmap_root: u64,
    /// Root of the btree of counts above 2.
    pub ref_count_root: u64,
}

impl SmRoot {
    /// Decode from a (128-byte) slot.
    pub fn unpack(b: &[u8]) -> Result<SmRoot> {
        if b.len() < 32 {
            return Err(PdataError::Inconsistent("space map root too short".into()));
        }
        Ok(SmRoot {
            nr_blocks: le64(b, 0),
            nr_allocated: le64(b, 8),
            bitmap_root: le64(b, 16),
            ref_count_root: le64(b, 24),
        })
    }
    /// Encode into a zero-padded 128-byte slot.
    pub fn pack(&self) -> [u8; SM_ROOT_SIZE] {
        let mut out = [0u8; SM_ROOT_SIZE];
        put64(&mut out, 0, self.nr_blocks);
        put64(&mut out, 8, self.nr_allocated);
        put64(&mut out, 16, self.bitmap_root);
        put64(&mut out, 24, self.ref_count_root);
        out
    }
}

/// Encode a bitmap block at `blocknr` holding `counts` (values 0..=3, at most
/// [`ENTRIES_PER_BITMAP`]). Entry `e` of each little-endian word uses bit `2e` as the
/// high bit of the count and bit `2e + 1` as the low bit.
pub fn encode_bitmap(blocknr: u64, counts: &[u8]) -> BlockBuf {
    let mut buf = [0u8; BLOCK_SIZE];
    put64(&mut buf, 8, blocknr);
    for (w, chunk) in counts.chunks(32).enumerate() {
        let mut word = 0u64;
        for (e, &c) in chunk.iter().enumerate() {
            let c = c.min(3) as u64;
            word |= ((c >> 1) & 1) << (2 * e);
            word |= (c & 1) << (2 * e + 1);
        }
        put64(&mut buf, BITMAP_HEADER_SIZE + w * 8, word);
    }
    seal(&mut buf, BlockKind::Bitmap);
    buf
}

/// Decode every entry (0..=3) of a bitmap block whose checksum was already verified.
pub fn decode_bitmap(buf: &BlockBuf) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENTRIES_PER_BITMAP as usize);
    for w in 0..(BLOCK_SIZE - BITMAP_HEADER_SIZE) / 8 {
        let word = le64(buf, BITMAP_HEADER_SIZE + w * 8);
        for e in 0..32 {
            let hi = (word >> (2 * e)) & 1;
            let lo = (word >> (2 * e + 1)) & 1;
            out.push(((hi << 1) | lo) as u8);
        }
    }
    out
}

/// Summarise a bitmap's counts (`len` of which are inside the map) as an index entry.
pub fn summarise(blocknr: u64, counts: &[u8], len: usize) -> IndexEntry {
    let used = counts.iter().filter(|&&c| c != 0).count() as u32;
    let first_free = counts[..len].iter().position(|&c| c == 0).unwrap_or(len);
    IndexEntry {
        blocknr,
        nr_free: ENTRIES_PER_BITMAP as u32 - used,
        none_free_before: first_free as u32,
    }
}

/// Encode the metadata space map's index block at `blocknr`.
pub fn encode_metadata_index(blocknr: u64, entries: &[IndexEntry]) -> Result<BlockBuf> {
    if entries.len() > MAX_METADATA_BITMAPS {
        return Err(PdataError::Invalid(format!(
            "{} bitmaps exceed the metadata index's {MAX_METADATA_BITMAPS}",
            entries.len()
        )));
    }
    let mut buf = [0u8; BLOCK_SIZE];
    put64(&mut buf, 8, blocknr);
    for (i, e) in entries.iter().enumerate() {
        e.pack(&mut buf[16 + i * INDEX_ENTRY_SIZE..16 + (i + 1) * INDEX_ENTRY_SIZE]);
    }
    seal(&mut buf, BlockKind::Index);
    Ok(buf)
}

/// Decode the first `nr_bitmaps` entries of a verified metadata index block.
pub fn decode_metadata_index(
    buf: &BlockBuf,
    block: u64,
    nr_bitmaps: usize,
) -> Result<Vec<IndexEntry>> {
    if nr_bitmaps > MAX_METADATA_BITMAPS {
        return Err(PdataError::corrupt(
            BlockKind::Index,
            block,
            format!("{nr_bitmaps} bitmaps needed, the index holds {MAX_METADATA_BITMAPS}"),
        ));
    }
    Ok((0..nr_bitmaps)
        .map(|i| IndexEntry::unpack(&buf[16 + i * INDEX_ENTRY_SIZE..]))
        .collect())
}

/// Number of bitmaps covering `nr_blocks`.
pub fn nr_bitmaps(nr_blocks: u64) -> usize {
    nr_blocks.div_ceil(ENTRIES_PER_BITMAP) as usize
}
