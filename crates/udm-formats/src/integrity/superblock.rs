//! The dm-integrity superblock: the first 512 bytes of an 8-sector area at the table's offset
//! (on the metadata device when there is one). Field order and sizes follow the kernel's
//! format; every integer is little-endian.
//!
//! ```text
//!  0  magic "integrt\0"        8
//!  8  version                   1
//!  9  log2_interleave_sectors   1
//! 10  integrity_tag_size        2
//! 12  journal_sections          4
//! 16  provided_data_sectors     8
//! 24  flags                     4
//! 28  log2_sectors_per_block    1
//! 29  log2_blocks_per_bitmap_bit 1
//! 30  pad                       2
//! 32  recalc_sector             8
//! 40  pad                       8
//! 48  salt                     16
//! ```
//! With `SB_FLAG_FIXED_HMAC` and a journal MAC, the last digest-size bytes of the first sector
//! hold a MAC of everything before them.

use super::IntegrityFormatError;

pub const SB_MAGIC: &[u8; 8] = b"integrt\0";
/// The superblock area, in sectors.
pub const SB_SECTORS: u64 = 8;
pub const SALT_SIZE: usize = 16;

pub const FLAG_HAVE_JOURNAL_MAC: u32 = 0x1;
pub const FLAG_RECALCULATING: u32 = 0x2;
pub const FLAG_DIRTY_BITMAP: u32 = 0x4;
pub const FLAG_FIXED_PADDING: u32 = 0x8;
pub const FLAG_FIXED_HMAC: u32 = 0x10;
pub const FLAG_INLINE: u32 = 0x20;

/// The newest superblock version a 6.1 kernel reads.
pub const MAX_VERSION: u8 = 5;

/// The decoded superblock.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Superblock {
    pub version: u8,
    pub log2_interleave_sectors: u8,
    pub integrity_tag_size: u16,
    pub journal_sections: u32,
    pub provided_data_sectors: u64,
    pub flags: u32,
    pub log2_sectors_per_block: u8,
    pub log2_blocks_per_bitmap_bit: u8,
    pub recalc_sector: u64,
    pub salt: [u8; SALT_SIZE],
}

impl Superblock {
    /// True when `buf` starts with the magic.
    pub fn has_magic(buf: &[u8]) -> bool {
        buf.len() >= 8 && &buf[..8] == SB_MAGIC
    }

    /// Decode the first 512 bytes (the magic must be there; other checks are the target's).
    pub fn decode(buf: &[u8]) -> Result<Superblock, IntegrityFormatError> {
        if buf.len() < 64 {
            return Err(IntegrityFormatError::Short);
        }
        if !Self::has_magic(buf) {
            return Err(IntegrityFormatError::BadMagic);
        }
        let u16_at = |o: usize| u16::from_le_bytes([buf[o], buf[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(buf[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(buf[o..o + 8].try_into().unwrap());
        let mut salt = [0u8; SALT_SIZE];
        salt.copy_from_slice(&buf[48..64]);
        Ok(Superblock {
            version: buf[8],
            log2_interleave_sectors: buf[9],
            integrity_tag_size: u16_at(10),
            journal_sections: u32_at(12),
            provided_data_sectors: u64_at(16),
            flags: u32_at(24),
            log2_sectors_per_block: buf[28],
            log2_blocks_per_bitmap_bit: buf[29],
            recalc_sector: u64_at(32),
            salt,
        })
    }

    /// Encode into a zeroed superblock area (`SB_SECTORS` sectors).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; (SB_SECTORS * 512) as usize];
        b[..8].copy_from_slice(SB_MAGIC);
        b[8] = self.version;
        b[9] = self.log2_interleave_sectors;
        b[10..12].copy_from_slice(&self.integrity_tag_size.to_le_bytes());
        b[12..16].copy_from_slice(&self.journal_sections.to_le_bytes());
        b[16..24].copy_from_slice(&self.provided_data_sectors.to_le_bytes());
        b[24..28].copy_from_slice(&self.flags.to_le_bytes());
        b[28] = self.log2_sectors_per_block;
        b[29] = self.log2_blocks_per_bitmap_bit;
        b[32..40].copy_from_slice(&self.recalc_sector.to_le_bytes());
        b[48..64].copy_from_slice(&self.salt);
        b
    }

    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// The version the kernel writes for these flags and this mode (`sb_set_version`).
    pub fn version_for(&self, bitmap_mode: bool, meta_dev: bool) -> u8 {
        if self.has(FLAG_INLINE) {
            6
        } else if self.has(FLAG_FIXED_HMAC) {
            5
        } else if self.has(FLAG_FIXED_PADDING) {
            4
        } else if bitmap_mode || self.has(FLAG_DIRTY_BITMAP) {
            3
        } else if meta_dev || self.has(FLAG_RECALCULATING) {
            2
        } else {
            1
        }
    }

    /// The flag names `integritysetup dump` prints, in its order.
    pub fn flag_names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        for (f, n) in [
            (FLAG_HAVE_JOURNAL_MAC, "have_journal_mac"),
            (FLAG_RECALCULATING, "recalculating"),
            (FLAG_DIRTY_BITMAP, "dirty_bitmap"),
            (FLAG_FIXED_PADDING, "fix_padding"),
            (FLAG_FIXED_HMAC, "fix_hmac"),
        ] {
            if self.has(f) {
                v.push(n);
            }
        }
        v
    }
}
