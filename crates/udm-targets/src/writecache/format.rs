//! dm-writecache's on-disk (SSD mode) format: a 64-byte superblock (magic, version,
//! block_size, pad, n_blocks, seq_count), then one 16-byte entry per cache block
//! (original_sector, seq_count; all ones when free), all rounded up to the block size, then
//! the data blocks. An entry is committed when its seq_count is below the superblock's.

/// `MEMORY_SUPERBLOCK_MAGIC`.
pub const MAGIC: u32 = 0x2348_9321;
/// `MEMORY_SUPERBLOCK_VERSION`.
pub const VERSION: u32 = 1;
/// Size of the superblock header (its `padding[8]` of u64s).
pub const SB_BYTES: u64 = 64;
/// Size of one metadata entry.
pub const ENTRY_BYTES: u64 = 16;
/// The kernel writes metadata back in regions of this many bytes (`BITMAP_GRANULARITY`).
pub const REGION_BYTES: u64 = 65536;
/// An entry field that is not set.
pub const NONE: u64 = u64::MAX;

/// The superblock fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    pub magic: u32,
    pub version: u32,
    pub block_size: u32,
    pub n_blocks: u64,
    pub seq_count: u64,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Superblock {
    /// Decode the first 64 bytes of `b`.
    pub fn decode(b: &[u8]) -> Superblock {
        Superblock {
            magic: le32(b, 0),
            version: le32(b, 4),
            block_size: le32(b, 8),
            n_blocks: le64(b, 16),
            seq_count: le64(b, 24),
        }
    }

    /// Encode into the first 64 bytes of `b` (padding zeroed).
    pub fn encode(&self, b: &mut [u8]) {
        b[..SB_BYTES as usize].fill(0);
        b[0..4].copy_from_slice(&self.magic.to_le_bytes());
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..12].copy_from_slice(&self.block_size.to_le_bytes());
        b[16..24].copy_from_slice(&self.n_blocks.to_le_bytes());
        b[24..32].copy_from_slice(&self.seq_count.to_le_bytes());
    }
}

/// Byte offset of entry `index` in the metadata area.
pub fn entry_offset(index: u64) -> usize {
    (SB_BYTES + index * ENTRY_BYTES) as usize
}

/// Entry `index`: (original_sector, seq_count).
pub fn read_entry(b: &[u8], index: u64) -> (u64, u64) {
    let at = entry_offset(index);
    (le64(b, at), le64(b, at + 8))
}

/// Set entry `index`.
pub fn write_entry(b: &mut [u8], index: u64, sector: u64, seq: u64) {
    let at = entry_offset(index);
    b[at..at + 8].copy_from_slice(&sector.to_le_bytes());
    b[at + 8..at + 16].copy_from_slice(&seq.to_le_bytes());
}

/// Bytes of metadata (superblock and entries) for `n_blocks`, rounded up to `block_size`.
pub fn metadata_bytes(n_blocks: u64, block_size: u64) -> u64 {
    (SB_BYTES + n_blocks * ENTRY_BYTES).div_ceil(block_size) * block_size
}

/// The kernel's `calculate_memory_size`: how many blocks fit in `device_bytes` with their
/// metadata in front. `None` when not even one does (`-ENOSPC`).
pub fn blocks_for(device_bytes: u64, block_size: u64) -> Option<u64> {
    let mut n = device_bytes / (block_size + ENTRY_BYTES);
    loop {
        if n == 0 {
            return None;
        }
        if metadata_bytes(n, block_size) + n * block_size <= device_bytes {
            return Some(n);
        }
        n -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_kernel() {
        // 4 MiB at 4 KiB: the 6.1 kernel reports 1020 blocks.
        assert_eq!(blocks_for(4 << 20, 4096), Some(1020));
        assert_eq!(metadata_bytes(1020, 4096), 16384);
        assert_eq!(blocks_for(4096, 4096), None);
        assert_eq!(blocks_for(8192, 4096), Some(1));
        let n = blocks_for(1 << 20, 512).unwrap();
        assert!(metadata_bytes(n, 512) + n * 512 <= 1 << 20);
        assert!(metadata_bytes(n + 1, 512) + (n + 1) * 512 > 1 << 20);
    }

    #[test]
    fn superblock_and_entries_round_trip() {
        let mut b = vec![0xffu8; 4096];
        let sb = Superblock {
            magic: MAGIC,
            version: VERSION,
            block_size: 4096,
            n_blocks: 7,
            seq_count: 9,
        };
        sb.encode(&mut b);
        assert_eq!(Superblock::decode(&b), sb);
        assert_eq!(&b[32..64], &[0u8; 32][..]);
        write_entry(&mut b, 3, 24, 8);
        assert_eq!(read_entry(&b, 3), (24, 8));
        assert_eq!(read_entry(&b, 2), (NONE, NONE));
        assert_eq!(&b[0..4], &[0x21, 0x93, 0x48, 0x23]);
    }
}
