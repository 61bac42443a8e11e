//! Hash-tree geometry: how many levels, where each level starts on the hash device, and where
//! the digest of any block sits — the arithmetic of the kernel's `verity_ctr` and veritysetup's
//! `VERITY_create_or_verify_hash`, which agree.
//!
//! Level 0 holds the digests of the data blocks; level `i+1` the digests of level `i`'s hash
//! blocks; the top level is one block whose digest is the root hash. Levels are stored top
//! first from `hash_start`. Each hash block holds `2^hash_per_block_bits` digests (the largest
//! power of two that fits); format 1 pads every digest to `block / 2^bits` bytes, format 0 packs
//! them. Unused bytes are zero.

use super::hash::{BlockHasher, Digest, HashAlg};
use super::VerityError;

/// The kernel's limit on tree depth.
pub const MAX_LEVELS: usize = 63;

/// On-disk hash format (`<version>` in the table, "Hash type" in veritysetup).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashType {
    /// 0: the original Chrome OS format (salt after the data, digests packed).
    ChromeOs,
    /// 1: the normal format (salt first, digests padded to a power of two).
    Normal,
}

impl HashType {
    pub fn from_u32(v: u32) -> Option<HashType> {
        match v {
            0 => Some(HashType::ChromeOs),
            1 => Some(HashType::Normal),
            _ => None,
        }
    }
    pub fn as_u32(self) -> u32 {
        match self {
            HashType::ChromeOs => 0,
            HashType::Normal => 1,
        }
    }
}

/// The shape of one verity hash tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    pub hash_type: HashType,
    pub alg: HashAlg,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    /// First hash block of the tree (in hash blocks from the start of the hash device).
    pub hash_start: u64,
    hash_per_block_bits: u32,
    /// Absolute first hash block of each level; index 0 is the lowest level.
    level_start: Vec<u64>,
    /// Number of hash blocks in each level.
    level_len: Vec<u64>,
    hash_end: u64,
}

impl Geometry {
    /// Compute the layout. Block sizes must be powers of two of at least 512 bytes and the hash
    /// block must hold at least two digests.
    pub fn new(
        hash_type: HashType,
        alg: HashAlg,
        data_block_size: u32,
        hash_block_size: u32,
        data_blocks: u64,
        hash_start: u64,
    ) -> Result<Geometry, VerityError> {
        for bs in [data_block_size, hash_block_size] {
            if bs < 512 || !bs.is_power_of_two() {
                return Err(VerityError::BadBlockSize);
            }
        }
        let ds = alg.digest_size() as u32;
        if hash_block_size < ds * 2 {
            return Err(VerityError::DigestTooBig);
        }
        let hash_per_block_bits = (hash_block_size / ds).ilog2();
        let mut levels = 0usize;
        if data_blocks > 0 {
            while (hash_per_block_bits as usize) * levels < 64
                && (data_blocks - 1) >> (hash_per_block_bits as usize * levels) != 0
            {
                levels += 1;
            }
        }
        if levels > MAX_LEVELS {
            return Err(VerityError::TooManyLevels);
        }
        let mut level_start = vec![0u64; levels];
        let mut level_len = vec![0u64; levels];
        let mut pos = hash_start;
        for i in (0..levels).rev() {
            let shift = (i as u32 + 1) * hash_per_block_bits;
            let len = if shift >= 64 {
                1
            } else {
                // ceil(data_blocks / 2^shift) without overflow.
                (data_blocks >> shift) + u64::from(data_blocks & ((1u64 << shift) - 1) != 0)
            };
            level_start[i] = pos;
            level_len[i] = len;
            pos = pos.checked_add(len).ok_or(VerityError::Overflow)?;
        }
        Ok(Geometry {
            hash_type,
            alg,
            data_block_size,
            hash_block_size,
            data_blocks,
            hash_start,
            hash_per_block_bits,
            level_start,
            level_len,
            hash_end: pos,
        })
    }

    pub fn levels(&self) -> usize {
        self.level_start.len()
    }
    pub fn digest_size(&self) -> usize {
        self.alg.digest_size()
    }
    pub fn hash_per_block_bits(&self) -> u32 {
        self.hash_per_block_bits
    }
    /// Absolute first hash block of `level`.
    pub fn level_start(&self, level: usize) -> u64 {
        self.level_start[level]
    }
    /// Hash blocks in `level`.
    pub fn level_len(&self, level: usize) -> u64 {
        self.level_len[level]
    }
    /// One past the last hash block of the tree (absolute; the kernel's `hash_blocks`).
    pub fn hash_end(&self) -> u64 {
        self.hash_end
    }
    /// Hash blocks in the tree (what veritysetup prints as "Hash blocks").
    pub fn tree_blocks(&self) -> u64 {
        self.hash_end - self.hash_start
    }
    /// Bytes between the starts of two digests in a hash block.
    pub fn stride(&self) -> usize {
        match self.hash_type {
            HashType::ChromeOs => self.digest_size(),
            HashType::Normal => (self.hash_block_size >> self.hash_per_block_bits) as usize,
        }
    }

    /// Where the digest of block `block` of the level below `level` is stored: (absolute hash
    /// block, byte offset in it). At level 0 `block` is a data block.
    pub fn position(&self, block: u64, level: usize) -> (u64, usize) {
        let shift = level as u32 * self.hash_per_block_bits;
        let pos = if shift >= 64 { 0 } else { block >> shift };
        let idx = pos & ((1u64 << self.hash_per_block_bits) - 1);
        let hb = self.level_start[level] + (pos >> self.hash_per_block_bits);
        (hb, idx as usize * self.stride())
    }

    /// Byte offset, within a buffer holding the whole tree (from `hash_start`), of the digest
    /// slot for entry `entry` of the level below `level`.
    pub fn slot_offset(&self, level: usize, entry: u64) -> usize {
        let hb = self.level_start[level] - self.hash_start + (entry >> self.hash_per_block_bits);
        let idx = entry & ((1u64 << self.hash_per_block_bits) - 1);
        hb as usize * self.hash_block_size as usize + idx as usize * self.stride()
    }

    /// Bytes of a buffer holding the whole tree.
    pub fn tree_bytes(&self) -> u64 {
        self.tree_blocks() * self.hash_block_size as u64
    }

    /// Fill the levels above 0 of `tree` (the whole tree, zeroed, with level 0 already filled)
    /// and return the root digest. With no levels (a single data block) there is nothing to
    /// build: the root is that block's digest, which the caller has, so this returns `None`.
    pub fn build_upper_levels(&self, hasher: &BlockHasher, tree: &mut [u8]) -> Option<Digest> {
        let hbs = self.hash_block_size as usize;
        let levels = self.levels();
        if levels == 0 {
            return None;
        }
        for level in 1..levels {
            let below = (self.level_start[level - 1] - self.hash_start) as usize;
            for j in 0..self.level_len[level - 1] {
                let off = (below + j as usize) * hbs;
                let d = hasher.digest(&tree[off..off + hbs]);
                let slot = self.slot_offset(level, j);
                tree[slot..slot + d.len()].copy_from_slice(d.as_slice());
            }
        }
        let top = (self.level_start[levels - 1] - self.hash_start) as usize * hbs;
        Some(hasher.digest(&tree[top..top + hbs]))
    }

    /// Build a whole tree in memory from the data blocks' digests (for small images and tests;
    /// tools fill level 0 in parallel and call `build_upper_levels`). Returns (tree, root).
    pub fn build_from_leaves(&self, hasher: &BlockHasher, leaves: &[Digest]) -> (Vec<u8>, Digest) {
        let mut tree = vec![0u8; self.tree_bytes() as usize];
        if self.levels() > 0 {
            for (i, d) in leaves.iter().enumerate() {
                let slot = self.slot_offset(0, i as u64);
                tree[slot..slot + d.len()].copy_from_slice(d.as_slice());
            }
        }
        let root = match self.build_upper_levels(hasher, &mut tree) {
            Some(r) => r,
            None => leaves.first().copied().unwrap_or(Digest::from_slice(&[])),
        };
        (tree, root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(ds: u32, hs: u32, n: u64, alg: HashAlg) -> Geometry {
        Geometry::new(HashType::Normal, alg, ds, hs, n, 1).unwrap()
    }

    #[test]
    fn veritysetup_hash_block_counts() {
        // Figures printed by veritysetup 2.6.1 ("Hash blocks").
        assert_eq!(geo(4096, 4096, 256, HashAlg::Sha256).tree_blocks(), 3);
        assert_eq!(geo(4096, 4096, 1024, HashAlg::Sha256).tree_blocks(), 9);
        let g = geo(4096, 4096, 1, HashAlg::Sha256);
        assert_eq!((g.levels(), g.tree_blocks()), (0, 0));
    }

    #[test]
    fn levels_top_first() {
        let g = geo(512, 512, 1000, HashAlg::Sha256); // 16 digests per block
        assert_eq!(g.levels(), 3); // 1000 -> 63 -> 4 -> 1
        assert_eq!(g.level_len(0), 63);
        assert_eq!(g.level_len(1), 4);
        assert_eq!(g.level_len(2), 1);
        assert_eq!(g.level_start(2), 1);
        assert_eq!(g.level_start(1), 2);
        assert_eq!(g.level_start(0), 6);
        assert_eq!(g.hash_end(), 69);
        assert_eq!(g.position(999, 0), (6 + 62, 7 * 32));
        assert_eq!(g.position(999, 1), (2 + 3, 14 * 32));
    }

    #[test]
    fn sha1_digests_are_padded_in_format_1() {
        let g = geo(4096, 4096, 1000, HashAlg::Sha1);
        assert_eq!(g.hash_per_block_bits(), 7);
        assert_eq!(g.stride(), 32);
        let g0 = Geometry::new(HashType::ChromeOs, HashAlg::Sha1, 4096, 4096, 1000, 0).unwrap();
        assert_eq!(g0.stride(), 20);
    }

    #[test]
    fn absurd_parameters_are_errors() {
        let e = |ds, hs, n, hstart| {
            Geometry::new(HashType::Normal, HashAlg::Sha512, ds, hs, n, hstart).unwrap_err()
        };
        assert_eq!(e(4096, 64, 10, 0), VerityError::BadBlockSize);
        assert_eq!(e(4096, 3000, 10, 0), VerityError::BadBlockSize);
        assert_eq!(e(0, 4096, 10, 0), VerityError::BadBlockSize);
        assert_eq!(e(4096, 4096, 10, u64::MAX), VerityError::Overflow);
        // A huge block count still gives a finite tree (no panic).
        let g = Geometry::new(HashType::Normal, HashAlg::Sha512, 512, 512, u64::MAX, 0).unwrap();
        assert!(g.levels() <= MAX_LEVELS);
    }
}
