//! udm-pdata: the kernel's `drivers/md/persistent-data` on-disk format, written from the
//! format's facts (field orders, magic numbers, checksum xor constants), not from its code.
//!
//! Layers, bottom up:
//! - [`io`]: a synchronous 4096-byte metadata block device ([`io::MetaIo`]) with a file
//!   backend and an in-memory backend that can simulate crashes;
//! - [`checksum`]: crc32c and the per-block-type xor salts;
//! - [`block_manager`]: validated reads, an LRU cache and write-back of dirty blocks;
//! - [`tm`]: the transaction manager (shadowing, two-phase commit) that owns the
//!   metadata space map;
//! - [`btree`]: copy-on-write btrees in the kernel node format, nested trees, value
//!   reference counting;
//! - [`space_map`]: the disk and metadata space maps (2-bit bitmaps, index, overflow
//!   btree of `u32` counts) and their 128-byte `sm_root` blobs;
//! - [`thin`]: the dm-thin superblock, device details and mapping values, a small
//!   metadata front end used by tests and by the thin-pool target;
//! - [`array`]: dm-array and the bitset on top of it (cache and era metadata);
//! - [`cache`]: the dm-cache superblock, mapping/hint arrays, dirty and discard bitsets;
//! - [`era`]: the dm-era superblock, writeset tree and era array;
//! - [`clone`]: the dm-clone superblock and its hydrated-region bitset;
//! - [`check`]: a checker that walks all reachable blocks and compares reference counts;
//! - [`thin_shrink`]: shrinking a pool's data device offline;
//! - [`tools`]: the thin tools' personalities and the tool family's option parser.

pub mod array;
pub mod block_manager;
pub mod btree;
pub mod cache;
pub mod check;
pub mod checksum;
pub mod clone;
pub mod era;
pub mod error;
pub mod io;
pub mod space_map;
mod superblock;
pub mod thin;
pub mod thin_delta;
pub mod thin_ls;
pub mod thin_shrink;
pub mod thin_size;
pub mod thin_trim;
pub mod thin_xml;
pub mod tm;
pub mod tools;

pub use error::{PdataError, Result};

/// Size of every metadata block, in bytes.
pub const BLOCK_SIZE: usize = 4096;

/// One metadata block's bytes.
pub type BlockBuf = [u8; BLOCK_SIZE];

/// Read a little-endian u32 at `off`.
pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

/// Read a little-endian u64 at `off`.
pub(crate) fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// Write a little-endian u32 at `off`.
pub(crate) fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Write a little-endian u64 at `off`.
pub(crate) fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
