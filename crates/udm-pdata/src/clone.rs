//! dm-clone's metadata on top of persistent-data: a superblock (magic, version 1, space map
//! root, region size and target size in sectors, bitset root) and one bitset with a bit per
//! region, set once the region is hydrated on the destination device.

use crate::array::bitset;
use crate::checksum::{seal, BlockKind};
use crate::error::{PdataError, Result};
use crate::io::MetaIo;
use crate::space_map::SM_ROOT_SIZE;
use crate::superblock;
use crate::tm::{TransactionManager, SUPERBLOCK};
use crate::{le64, put64, BlockBuf};
use std::sync::Arc;

/// Superblock magic.
pub const CLONE_MAGIC: u64 = 0x8af2_7f64;
/// Metadata version.
pub const CLONE_VERSION: u32 = 1;

/// The clone superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneSuperblock {
    pub flags: u32,
    pub uuid: [u8; 16],
    pub version: u32,
    pub metadata_sm_root: [u8; SM_ROOT_SIZE],
    pub region_size: u64,
    pub target_size: u64,
    pub bitset_root: u64,
}

impl CloneSuperblock {
    /// Encode and seal for block 0.
    pub fn encode(&self) -> BlockBuf {
        let mut b = superblock::new_block(
            SUPERBLOCK,
            CLONE_MAGIC,
            superblock::Header {
                flags: self.flags,
                uuid: self.uuid,
                version: self.version,
            },
        );
        b[44..172].copy_from_slice(&self.metadata_sm_root);
        put64(&mut b, 172, self.region_size);
        put64(&mut b, 180, self.target_size);
        put64(&mut b, 188, self.bitset_root);
        seal(&mut b, BlockKind::CloneSuperblock);
        b
    }

    /// Decode and validate block 0.
    pub fn decode(b: &BlockBuf) -> Result<CloneSuperblock> {
        let h = superblock::check_block(
            b,
            BlockKind::CloneSuperblock,
            SUPERBLOCK,
            CLONE_MAGIC,
            CLONE_VERSION..=CLONE_VERSION,
            |v| {
                format!(
                    "Clone metadata version {v} found, but only versions between 1 and 1 supported."
                )
            },
        )?;
        let mut sb = CloneSuperblock {
            flags: h.flags,
            uuid: h.uuid,
            version: h.version,
            metadata_sm_root: [0; SM_ROOT_SIZE],
            region_size: le64(b, 172),
            target_size: le64(b, 180),
            bitset_root: le64(b, 188),
        };
        sb.metadata_sm_root.copy_from_slice(&b[44..172]);
        Ok(sb)
    }
}

/// An open clone metadata device.
pub struct CloneMetadata {
    tm: TransactionManager,
    sb: CloneSuperblock,
    nr_regions: u64,
}

impl CloneMetadata {
    /// Open the metadata on `io`, formatting it when block 0 is all zeroes; the region and
    /// target sizes (sectors) must match what it records.
    pub fn open_or_format(
        io: Arc<dyn MetaIo>,
        region_size: u64,
        target_size: u64,
    ) -> Result<CloneMetadata> {
        let nr_regions = target_size.div_ceil(region_size);
        if crate::cache::CacheMetadata::is_unformatted(&*io)? {
            let mut tm = TransactionManager::format(io)?;
            let mut root = bitset::empty(&mut tm)?;
            root = bitset::resize(&mut tm, root, 0, nr_regions, false)?;
            let sb = CloneSuperblock {
                flags: 0,
                uuid: [0; 16],
                version: CLONE_VERSION,
                metadata_sm_root: [0; SM_ROOT_SIZE],
                region_size,
                target_size,
                bitset_root: root,
            };
            let mut md = CloneMetadata { tm, sb, nr_regions };
            md.commit()?;
            return Ok(md);
        }
        let buf = superblock::read_block0(&*io)?;
        let sb = CloneSuperblock::decode(&buf)?;
        if sb.region_size != region_size || sb.target_size != target_size {
            return Err(PdataError::Invalid(
                "Region and/or target size don't match the ones in metadata".into(),
            ));
        }
        let tm = TransactionManager::open(io, &sb.metadata_sm_root)?;
        Ok(CloneMetadata { tm, sb, nr_regions })
    }

    pub fn superblock(&self) -> &CloneSuperblock {
        &self.sb
    }

    pub fn nr_regions(&self) -> u64 {
        self.nr_regions
    }

    /// The hydrated bit of every region.
    pub fn hydrated(&mut self) -> Result<Vec<bool>> {
        bitset::collect(&mut self.tm, self.sb.bitset_root, self.nr_regions)
    }

    /// Mark region `r` hydrated (committed by the next [`CloneMetadata::commit`]).
    pub fn set_hydrated(&mut self, r: u64) -> Result<()> {
        self.sb.bitset_root = bitset::set(&mut self.tm, self.sb.bitset_root, r, true)?;
        Ok(())
    }

    /// (free, total) metadata blocks.
    pub fn metadata_usage(&self) -> (u64, u64) {
        (self.tm.sm().nr_free(), self.tm.sm().nr_blocks())
    }

    /// Write everything and make it the committed state.
    pub fn commit(&mut self) -> Result<()> {
        let root = self.tm.pre_commit()?;
        self.sb.metadata_sm_root = root.pack();
        self.tm.commit(self.sb.encode())
    }
}
