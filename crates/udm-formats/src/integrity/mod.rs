//! dm-integrity's on-disk format: the superblock, the layout of journal, interleaved tag areas
//! and data (or a separate metadata device), the journal's sectors and entries, and the tag
//! hashes. Pure arithmetic and codecs; the `integrity` target in udm-targets does the I/O.
//!
//! Layout without a metadata device, from the table's offset `start` (sectors):
//! ```text
//! start: superblock (8) | journal (journal_sections × section_sectors)   = initial_sectors
//! then per area a: tags (metadata_run sectors) | data (interleave sectors)
//! ```
//! With a metadata device, it holds superblock, journal and one tag run; the data device
//! holds the data from sector 0.

mod crcx;
pub mod hash;
pub mod journal;
pub mod superblock;

pub use hash::TagHash;
pub use journal::JournalGeometry;
pub use superblock::*;

/// Why a superblock or parameter set is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityFormatError {
    #[error("superblock too short")]
    Short,
    #[error("no integrity superblock magic")]
    BadMagic,
    #[error("the device is too small")]
    TooSmall,
    #[error("unknown hash algorithm {0}")]
    UnknownHash(String),
    #[error("the hash needs a key")]
    NeedKey,
}

impl IntegrityFormatError {
    pub fn errno(&self) -> i32 {
        match self {
            IntegrityFormatError::UnknownHash(_) => libc::ENOENT,
            IntegrityFormatError::NeedKey => libc::ENOKEY,
            _ => libc::EINVAL,
        }
    }
}

pub const DEFAULT_INTERLEAVE_SECTORS: u32 = 32768;
pub const DEFAULT_JOURNAL_SIZE_FACTOR: u32 = 7;
pub const DEFAULT_SECTORS_PER_BITMAP_BIT: u64 = 32768;
pub const DEFAULT_BUFFER_SECTORS: u32 = 128;
pub const DEFAULT_JOURNAL_WATERMARK: u32 = 50;
pub const DEFAULT_SYNC_MSEC: u32 = 10000;
pub const DEFAULT_MAX_JOURNAL_SECTORS: u64 = 131072;
pub const MIN_LOG2_INTERLEAVE_SECTORS: u8 = 3;
pub const MAX_LOG2_INTERLEAVE_SECTORS: u8 = 31;
pub const METADATA_PADDING_SECTORS: u64 = 8;
pub const MAX_SECTORS_PER_BLOCK: u32 = 8;
pub const BITMAP_BLOCK_SIZE: u64 = 4096;
/// The byte a discarded block's tags are filled with.
pub const DISCARD_FILLER: u8 = 0xf6;

/// Everything placement needs: from the superblock plus the device sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    pub start: u64,
    pub tag_size: u32,
    pub log2_interleave: u8,
    pub log2_spb: u8,
    pub flags: u32,
    pub meta_dev: bool,
    pub journal: JournalGeometry,
    /// Sectors before the first tag run: superblock + journal.
    pub initial_sectors: u64,
    pub metadata_run: u64,
    pub provided_data_sectors: u64,
    pub log2_buffer_sectors: u8,
}

impl Geometry {
    /// Geometry for a superblock's fields; `meta_sectors`: size of the device holding the
    /// superblock (the data device without a metadata device). `provided` is checked.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        start: u64,
        tag_size: u32,
        log2_interleave: u8,
        log2_spb: u8,
        flags: u32,
        journal_sections: u32,
        meta_dev: bool,
        log2_buffer_sectors: u8,
    ) -> Geometry {
        let journal = JournalGeometry::new(
            tag_size,
            log2_spb,
            flags & FLAG_HAVE_JOURNAL_MAC != 0,
            journal_sections,
        );
        Geometry {
            start,
            tag_size,
            log2_interleave,
            log2_spb,
            flags,
            meta_dev,
            initial_sectors: SB_SECTORS + journal.sectors(),
            journal,
            metadata_run: 1,
            provided_data_sectors: 0,
            log2_buffer_sectors,
        }
    }

    pub fn sectors_per_block(&self) -> u64 {
        1 << self.log2_spb
    }

    /// The kernel's `calculate_device_limits` for `provided` data sectors on a metadata
    /// device of `meta_sectors`: sets `metadata_run`; false when it does not fit.
    pub fn fits(&mut self, provided: u64, meta_sectors: u64) -> bool {
        self.journal = JournalGeometry::new(
            self.tag_size,
            self.log2_spb,
            self.flags & FLAG_HAVE_JOURNAL_MAC != 0,
            self.journal.sections,
        );
        let initial = SB_SECTORS + self.journal.sectors();
        if initial + METADATA_PADDING_SECTORS >= meta_sectors || initial > u32::MAX as u64 {
            return false;
        }
        self.initial_sectors = initial;
        self.provided_data_sectors = provided;
        if !self.meta_dev {
            let padding: u64 = if self.flags & FLAG_FIXED_PADDING != 0 {
                METADATA_PADDING_SECTORS << 9
            } else {
                512 << METADATA_PADDING_SECTORS
            };
            let Some(bytes) = (self.tag_size as u64).checked_shl(
                (self.log2_interleave - self.log2_spb.min(self.log2_interleave)) as u32,
            ) else {
                return false;
            };
            self.metadata_run = (bytes.div_ceil(padding) * padding) >> 9;
            if provided == 0 {
                return false;
            }
            let (area, off) = self.area_offset(provided - 1);
            let last = self.data_sector(area, off);
            last >= self.start && last < meta_sectors
        } else {
            let bufb = 1u64 << (self.log2_buffer_sectors + 9);
            let meta = ((provided >> self.log2_spb) * self.tag_size as u64).div_ceil(bufb)
                << self.log2_buffer_sectors;
            self.metadata_run = 1;
            match initial.checked_add(meta) {
                Some(end) => end <= meta_sectors,
                None => false,
            }
        }
    }

    /// The kernel's `get_provided_data_sectors`: the most data sectors that fit.
    pub fn compute_provided(&mut self, data_sectors: u64, meta_sectors: u64) -> u64 {
        if self.meta_dev {
            let p = data_sectors & !(self.sectors_per_block() - 1);
            self.provided_data_sectors = p;
            return p;
        }
        let mut p = 0u64;
        if meta_sectors > 0 {
            let top = 63 - meta_sectors.leading_zeros();
            for bit in (3..=top).rev() {
                let t = p | (1u64 << bit);
                if self.fits(t, meta_sectors) {
                    p = t;
                }
            }
        }
        self.provided_data_sectors = p;
        p
    }

    /// (area, offset in area) of a logical sector.
    pub fn area_offset(&self, sector: u64) -> (u64, u64) {
        if self.meta_dev {
            (0, sector)
        } else {
            (
                sector >> self.log2_interleave,
                sector & ((1u64 << self.log2_interleave) - 1),
            )
        }
    }

    /// The data device sector of (area, offset).
    pub fn data_sector(&self, area: u64, offset: u64) -> u64 {
        if self.meta_dev {
            return offset;
        }
        (area << self.log2_interleave)
            + (area + 1) * self.metadata_run
            + self.initial_sectors
            + offset
            + self.start
    }

    /// Byte position of the tag of the block at (area, offset) on the metadata device.
    pub fn tag_byte(&self, area: u64, offset: u64) -> u64 {
        let area_start = (area << self.log2_interleave) + area * self.metadata_run;
        ((self.start + self.initial_sectors + area_start) << 9)
            + (offset >> self.log2_spb) * self.tag_size as u64
    }

    /// The data device sector of logical sector `s`, and the byte of its tag.
    pub fn locate(&self, s: u64) -> (u64, u64) {
        let (a, o) = self.area_offset(s);
        (self.data_sector(a, o), self.tag_byte(a, o))
    }

    /// Sectors from `s` to the end of its area (how far one contiguous run goes).
    pub fn run_len(&self, s: u64) -> u64 {
        if self.meta_dev {
            self.provided_data_sectors - s
        } else {
            let (_, o) = self.area_offset(s);
            (1u64 << self.log2_interleave) - o
        }
    }

    /// The journal area's first sector (on the metadata device).
    pub fn journal_start(&self) -> u64 {
        self.start + SB_SECTORS
    }
}

/// Number of bitmap blocks (4 KiB each, at the start of the journal area) for B mode.
pub fn bitmap_blocks(provided: u64, log2_spb: u8, log2_blocks_per_bit: u8) -> u64 {
    let bits = ((provided >> log2_spb) + (1u64 << log2_blocks_per_bit) - 1) >> log2_blocks_per_bit;
    bits.div_ceil(BITMAP_BLOCK_SIZE * 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Figures from real `integritysetup format` on a 16 MiB device (kernel 6.1).
    #[test]
    fn provided_sectors_match_the_kernel() {
        let mut g = Geometry::new(0, 4, 15, 0, FLAG_FIXED_PADDING, 1, false, 7);
        assert_eq!(g.journal.section_sectors, 176);
        assert_eq!(g.compute_provided(32768, 32768), 32328);
        let mut g = Geometry::new(0, 32, 15, 0, FLAG_FIXED_PADDING, 2, false, 7);
        assert_eq!(g.journal.section_sectors, 88);
        assert_eq!(g.compute_provided(32768, 32768), 30536);
    }

    #[test]
    fn superblock_round_trips() {
        let sb = Superblock {
            version: 5,
            log2_interleave_sectors: 15,
            integrity_tag_size: 4,
            journal_sections: 1,
            provided_data_sectors: 32328,
            flags: FLAG_FIXED_PADDING | FLAG_FIXED_HMAC,
            log2_sectors_per_block: 0,
            log2_blocks_per_bitmap_bit: 15,
            recalc_sector: 0,
            salt: [7; 16],
        };
        let b = sb.encode();
        assert_eq!(b.len(), 4096);
        assert_eq!(Superblock::decode(&b).unwrap(), sb);
        assert_eq!(sb.flag_names(), ["fix_padding", "fix_hmac"]);
    }
}
