//! crc32c and the per-block-type salts persistent-data xors into each block's checksum.
//!
//! A block's first four bytes hold `crc32c(bytes[4..]) ^ salt`, where the crc is the
//! kernel's raw form: seeded with `!0` and not inverted at the end (the standard
//! CRC-32C value xored with `0xffffffff`).

use crate::error::{PdataError, Result};
use crate::{le32, le64, put32, BlockBuf};

/// The kinds of checksummed metadata block and their xor salts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockKind {
    /// dm-thin superblock.
    ThinSuperblock,
    /// dm-cache superblock.
    CacheSuperblock,
    /// dm-era superblock.
    EraSuperblock,
    /// dm-clone superblock.
    CloneSuperblock,
    /// btree node.
    Node,
    /// space map bitmap.
    Bitmap,
    /// metadata space map index block.
    Index,
    /// dm-array block.
    Array,
}

impl BlockKind {
    /// The xor salt of this kind.
    pub const fn salt(self) -> u32 {
        match self {
            BlockKind::ThinSuperblock => 160774,
            BlockKind::CacheSuperblock => 9031977,
            BlockKind::EraSuperblock => 146538381,
            BlockKind::CloneSuperblock => 257649492,
            BlockKind::Node => 121107,
            BlockKind::Bitmap => 240779,
            BlockKind::Index => 160478,
            BlockKind::Array => 595846735,
        }
    }
}

impl BlockKind {
    /// Byte offset of the block's self-reported location (`blocknr`) in its header.
    pub const fn blocknr_offset(self) -> usize {
        match self {
            BlockKind::Array => 16,
            _ => 8,
        }
    }
}

impl std::fmt::Display for BlockKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BlockKind::ThinSuperblock => "thin superblock",
            BlockKind::CacheSuperblock => "cache superblock",
            BlockKind::EraSuperblock => "era superblock",
            BlockKind::CloneSuperblock => "clone superblock",
            BlockKind::Node => "btree node",
            BlockKind::Bitmap => "space map bitmap",
            BlockKind::Index => "space map index",
            BlockKind::Array => "array",
        })
    }
}

const fn make_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut j = 0;
        while j < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            j += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static TABLE: [u32; 256] = make_table();

/// The kernel's `crc32c(seed, data)`: no pre- or post-inversion.
pub fn crc32c_raw(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU supports SSE4.2, checked just above.
            return unsafe { crc32c_sse42(crc, data) };
        }
    }
    crc32c_table(crc, data)
}

/// CRC-32C with the SSE4.2 `crc32` instruction (same polynomial, same raw register).
///
/// # Safety
/// The CPU must support SSE4.2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn crc32c_sse42(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut c = crc as u64;
    let words = data.chunks_exact(8);
    let tail = words.remainder();
    for w in words {
        c = _mm_crc32_u64(c, u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
    let mut crc = c as u32;
    for &b in tail {
        crc = _mm_crc32_u8(crc, b);
    }
    crc
}

/// Table-driven CRC-32C, for CPUs without the instruction.
fn crc32c_table(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// Standard CRC-32C (iSCSI) of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    !crc32c_raw(!0, data)
}

/// The checksum persistent-data stores for `data` with `salt` (`dm_bm_checksum`).
pub fn bm_checksum(data: &[u8], salt: u32) -> u32 {
    crc32c_raw(!0, data) ^ salt
}

/// Compute and store the checksum of a block of `kind` (over bytes 4..).
pub fn seal(buf: &mut BlockBuf, kind: BlockKind) {
    let c = bm_checksum(&buf[4..], kind.salt());
    put32(buf, 0, c);
}

/// Check a block's checksum and its self-reported location.
pub fn verify(buf: &BlockBuf, kind: BlockKind, block: u64) -> Result<()> {
    let stored = le32(buf, 0);
    let computed = bm_checksum(&buf[4..], kind.salt());
    if stored != computed {
        return Err(PdataError::Checksum {
            kind,
            block,
            stored,
            computed,
        });
    }
    let found = le64(buf, kind.blocknr_offset());
    if found != block {
        return Err(PdataError::BlockNr { kind, block, found });
    }
    Ok(())
}

/// Which kind a block claims to be, judged by which salt makes its checksum match.
pub fn identify(buf: &BlockBuf) -> Option<BlockKind> {
    let raw = crc32c_raw(!0, &buf[4..]) ^ le32(buf, 0);
    [
        BlockKind::ThinSuperblock,
        BlockKind::CacheSuperblock,
        BlockKind::EraSuperblock,
        BlockKind::CloneSuperblock,
        BlockKind::Node,
        BlockKind::Bitmap,
        BlockKind::Index,
        BlockKind::Array,
    ]
    .into_iter()
    .find(|k| k.salt() == raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(!crc32c_table(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn hardware_and_table_agree() {
        let data: Vec<u8> = (0..4099u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for len in [0, 1, 7, 8, 9, 100, 4092, 4099] {
            assert_eq!(
                crc32c_raw(!0, &data[..len]),
                crc32c_table(!0, &data[..len]),
                "len {len}"
            );
        }
    }

    #[test]
    fn seal_then_verify_and_identify() {
        let mut b = [0u8; crate::BLOCK_SIZE];
        b[8..16].copy_from_slice(&7u64.to_le_bytes());
        b[100] = 42;
        seal(&mut b, BlockKind::Bitmap);
        verify(&b, BlockKind::Bitmap, 7).unwrap();
        assert_eq!(identify(&b), Some(BlockKind::Bitmap));
        assert!(matches!(
            verify(&b, BlockKind::Node, 7),
            Err(PdataError::Checksum { .. })
        ));
        assert!(matches!(
            verify(&b, BlockKind::Bitmap, 8),
            Err(PdataError::BlockNr { found: 7, .. })
        ));
        b[200] ^= 1;
        assert!(verify(&b, BlockKind::Bitmap, 7).is_err());
    }
}
