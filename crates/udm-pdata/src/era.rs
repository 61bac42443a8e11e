//! dm-era's metadata on top of persistent-data: the era superblock (magic, version 1, space
//! map root, data block size, number of blocks, current era and its writeset, the writeset
//! tree and era array roots, the held metadata snapshot), the writeset tree (one level, key
//! = era, value = 12 bytes: `nr_bits` u32 + bitset root u64, each value holding a reference
//! to its bitset) and the era array (one u32 per block: the last era it was written in, as
//! far as archived writesets have been digested into it).
//!
//! [`EraMetadata`] is the front end of the era target and the tests: rollover and archive of
//! writesets, marking, digestion, metadata snapshots and commit, with the kernel's rules.

use crate::array::{self, bitset};
use crate::btree::{self, NoRefs, RefCounter};
use crate::checksum::{seal, BlockKind};
use crate::error::{PdataError, Result};
use crate::io::MetaIo;
use crate::space_map::SM_ROOT_SIZE;
use crate::superblock;
use crate::tm::{TransactionManager, SUPERBLOCK};
use crate::{le32, le64, put32, put64, BlockBuf, BLOCK_SIZE};
use std::sync::Arc;

/// Superblock magic.
pub const ERA_MAGIC: u64 = 2126579579;
/// Metadata version.
pub const ERA_VERSION: u32 = 1;
/// Bytes of a writeset tree value.
pub const WRITESET_SIZE: u32 = 12;

/// The era superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EraSuperblock {
    pub flags: u32,
    pub uuid: [u8; 16],
    pub version: u32,
    pub metadata_sm_root: [u8; SM_ROOT_SIZE],
    pub data_block_size: u32,
    pub metadata_block_size: u32,
    pub nr_blocks: u32,
    pub current_era: u32,
    /// The current writeset: (nr_bits, bitset root; 0 = none).
    pub current_writeset: (u32, u64),
    pub writeset_tree_root: u64,
    pub era_array_root: u64,
    /// Block of the held metadata snapshot (0: none).
    pub metadata_snap: u64,
}

impl EraSuperblock {
    /// Encode and seal for block `at`.
    pub fn encode_at(&self, at: u64) -> BlockBuf {
        let mut b = superblock::new_block(
            at,
            ERA_MAGIC,
            superblock::Header {
                flags: self.flags,
                uuid: self.uuid,
                version: self.version,
            },
        );
        b[44..172].copy_from_slice(&self.metadata_sm_root);
        put32(&mut b, 172, self.data_block_size);
        put32(&mut b, 176, self.metadata_block_size);
        put32(&mut b, 180, self.nr_blocks);
        put32(&mut b, 184, self.current_era);
        put32(&mut b, 188, self.current_writeset.0);
        put64(&mut b, 192, self.current_writeset.1);
        put64(&mut b, 200, self.writeset_tree_root);
        put64(&mut b, 208, self.era_array_root);
        put64(&mut b, 216, self.metadata_snap);
        seal(&mut b, BlockKind::EraSuperblock);
        b
    }

    /// Decode and validate a superblock read from block `at`.
    pub fn decode(b: &BlockBuf, at: u64) -> Result<EraSuperblock> {
        let h = superblock::check_block(
            b,
            BlockKind::EraSuperblock,
            at,
            ERA_MAGIC,
            ERA_VERSION..=ERA_VERSION,
            |v| {
                format!(
                    "Era metadata version {v} found, but only versions between 1 and 1 supported."
                )
            },
        )?;
        let mut sb = EraSuperblock {
            flags: h.flags,
            uuid: h.uuid,
            version: h.version,
            metadata_sm_root: [0; SM_ROOT_SIZE],
            data_block_size: le32(b, 172),
            metadata_block_size: le32(b, 176),
            nr_blocks: le32(b, 180),
            current_era: le32(b, 184),
            current_writeset: (le32(b, 188), le64(b, 192)),
            writeset_tree_root: le64(b, 200),
            era_array_root: le64(b, 208),
            metadata_snap: le64(b, 216),
        };
        sb.metadata_sm_root.copy_from_slice(&b[44..172]);
        Ok(sb)
    }
}

fn pack_ws(nr_bits: u32, root: u64) -> [u8; 12] {
    let mut v = [0u8; 12];
    put32(&mut v, 0, nr_bits);
    put64(&mut v, 4, root);
    v
}

/// Writeset tree values hold a reference to their bitset.
struct WritesetRefs;

impl RefCounter for WritesetRefs {
    fn inc(&mut self, tm: &mut TransactionManager, v: &[u8]) -> Result<()> {
        tm.inc(le64(v, 4)).map(|_| ())
    }
    fn dec(&mut self, tm: &mut TransactionManager, v: &[u8]) -> Result<()> {
        array::del(tm, le64(v, 4), 8, &mut NoRefs)
    }
}

/// An open era metadata device.
pub struct EraMetadata {
    tm: TransactionManager,
    sb: EraSuperblock,
    /// Archived writesets not yet digested into the era array.
    pending_digest: bool,
}

impl EraMetadata {
    /// Format `io` for blocks of `block_size` sectors (no blocks, era 0) and commit.
    pub fn format(io: Arc<dyn MetaIo>, block_size: u32) -> Result<EraMetadata> {
        let mut tm = TransactionManager::format(io)?;
        let writeset_tree_root = btree::empty(&mut tm, WRITESET_SIZE)?;
        let era_array_root = array::empty(&mut tm)?;
        let sb = EraSuperblock {
            flags: 0,
            uuid: [0; 16],
            version: ERA_VERSION,
            metadata_sm_root: [0; SM_ROOT_SIZE],
            data_block_size: block_size,
            metadata_block_size: (BLOCK_SIZE / 512) as u32,
            nr_blocks: 0,
            current_era: 0,
            current_writeset: (0, 0),
            writeset_tree_root,
            era_array_root,
            metadata_snap: 0,
        };
        let mut md = EraMetadata {
            tm,
            sb,
            pending_digest: false,
        };
        md.commit()?;
        Ok(md)
    }

    /// Read the superblock of `io`.
    pub fn read_superblock(io: &dyn MetaIo) -> Result<EraSuperblock> {
        let buf = superblock::read_block0(io)?;
        EraSuperblock::decode(&buf, SUPERBLOCK)
    }

    /// Open existing metadata for blocks of `block_size` sectors.
    pub fn open(io: Arc<dyn MetaIo>, block_size: u32) -> Result<EraMetadata> {
        let sb = Self::read_superblock(&*io)?;
        if sb.data_block_size != block_size {
            return Err(PdataError::Invalid(format!(
                "changing the data block size (from {} to {block_size}) is not supported",
                sb.data_block_size
            )));
        }
        let tm = TransactionManager::open(io, &sb.metadata_sm_root)?;
        Ok(EraMetadata {
            tm,
            sb,
            pending_digest: true,
        })
    }

    /// Whether block 0 of `io` is all zeroes.
    pub fn is_unformatted(io: &dyn MetaIo) -> Result<bool> {
        crate::cache::CacheMetadata::is_unformatted(io)
    }

    pub fn superblock(&self) -> &EraSuperblock {
        &self.sb
    }

    pub fn current_era(&self) -> u32 {
        self.sb.current_era
    }

    pub fn nr_blocks(&self) -> u32 {
        self.sb.nr_blocks
    }

    /// (free, total) metadata blocks.
    pub fn metadata_usage(&self) -> (u64, u64) {
        (self.tm.sm().nr_free(), self.tm.sm().nr_blocks())
    }

    /// Resize to `nr` blocks (new era array entries are era 0).
    pub fn resize(&mut self, nr: u32) -> Result<()> {
        if nr as u64 >= 1 << 31 {
            return Err(PdataError::Invalid(format!(
                "Invalid number of origin blocks {nr}"
            )));
        }
        let meta = self.tm.bm().nr_blocks();
        array::ensure_fits("era blocks", nr as u64, 4, meta)?;
        self.sb.era_array_root = array::resize(
            &mut self.tm,
            self.sb.era_array_root,
            4,
            self.sb.nr_blocks as u64,
            nr as u64,
            &[0; 4],
            &mut NoRefs,
        )?;
        self.sb.nr_blocks = nr;
        Ok(())
    }

    /// Move the current writeset into the writeset tree under the current era.
    pub fn archive(&mut self) -> Result<()> {
        let (nr_bits, root) = self.sb.current_writeset;
        if root == 0 {
            return Ok(());
        }
        self.sb.writeset_tree_root = btree::insert(
            &mut self.tm,
            self.sb.writeset_tree_root,
            self.sb.current_era as u64,
            &pack_ws(nr_bits, root),
            &mut WritesetRefs,
        )?;
        self.sb.current_writeset = (0, 0);
        self.pending_digest = true;
        Ok(())
    }

    /// Archive the current writeset (if any) and start the next era with an empty one.
    pub fn rollover(&mut self) -> Result<()> {
        self.archive()?;
        let n = self.sb.nr_blocks as u64;
        let mut root = bitset::empty(&mut self.tm)?;
        root = bitset::resize(&mut self.tm, root, 0, n, false)?;
        self.sb.current_writeset = (n as u32, root);
        self.sb.current_era += 1;
        Ok(())
    }

    /// Whether `block` is marked in the current writeset.
    pub fn marked(&mut self, block: u64) -> Result<bool> {
        let root = self.sb.current_writeset.1;
        if root == 0 {
            return Ok(false);
        }
        bitset::test(&mut self.tm, root, block)
    }

    /// Mark `block` written in the current era; true when it was not marked before.
    pub fn mark(&mut self, block: u64) -> Result<bool> {
        if self.sb.current_writeset.1 == 0 || self.marked(block)? {
            return Ok(false);
        }
        self.sb.current_writeset.1 =
            bitset::set(&mut self.tm, self.sb.current_writeset.1, block, true)?;
        Ok(true)
    }

    /// The current writeset's bits.
    pub fn current_bits(&mut self) -> Result<Vec<bool>> {
        let (n, root) = self.sb.current_writeset;
        if root == 0 {
            return Ok(Vec::new());
        }
        bitset::collect(&mut self.tm, root, n as u64)
    }

    /// Archived writesets: era → bits.
    pub fn writesets(&mut self) -> Result<Vec<(u32, Vec<bool>)>> {
        let mut out = Vec::new();
        for (era, v) in btree::collect(&mut self.tm, self.sb.writeset_tree_root, WRITESET_SIZE)? {
            let bits = bitset::collect(&mut self.tm, le64(&v, 4), le32(&v, 0) as u64)?;
            out.push((era as u32, bits));
        }
        Ok(out)
    }

    /// The era array.
    pub fn era_array(&mut self) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        array::walk(&mut self.tm, self.sb.era_array_root, 4, &mut |_, v| {
            out.push(le32(v, 0));
            Ok(())
        })?;
        Ok(out)
    }

    /// Whether archived writesets wait to be digested.
    pub fn needs_digest(&self) -> bool {
        self.pending_digest
    }

    /// Digest the oldest archived writeset into the era array (its marked blocks get its
    /// era) and drop it from the tree; false when none is left.
    pub fn digest_one(&mut self) -> Result<bool> {
        let sets = btree::collect(&mut self.tm, self.sb.writeset_tree_root, WRITESET_SIZE)?;
        let Some((era, v)) = sets.into_iter().next() else {
            self.pending_digest = false;
            return Ok(false);
        };
        let n = (le32(&v, 0) as u64).min(self.sb.nr_blocks as u64);
        let bits = bitset::collect(&mut self.tm, le64(&v, 4), n)?;
        for (b, set) in bits.into_iter().enumerate() {
            if set {
                self.sb.era_array_root = array::set(
                    &mut self.tm,
                    self.sb.era_array_root,
                    4,
                    b as u64,
                    &(era as u32).to_le_bytes(),
                    &mut NoRefs,
                )?;
            }
        }
        self.sb.writeset_tree_root = btree::remove(
            &mut self.tm,
            self.sb.writeset_tree_root,
            era,
            WRITESET_SIZE,
            &mut WritesetRefs,
        )?
        .0;
        Ok(true)
    }

    /// `take_metadata_snap`: roll over, commit, and keep a copy of the superblock (with
    /// its writeset tree and era array) at a new block.
    pub fn take_snap(&mut self) -> Result<u64> {
        if self.sb.metadata_snap != 0 {
            return Err(PdataError::Invalid(
                "metadata snapshot already exists".into(),
            ));
        }
        self.rollover()?;
        self.commit()?;
        let clone = self.tm.alloc()?;
        let copy = self.sb.clone();
        self.tm.write(clone, copy.encode_at(clone))?;
        self.tm.inc(self.sb.writeset_tree_root)?;
        self.tm.inc(self.sb.era_array_root)?;
        self.sb.metadata_snap = clone;
        Ok(clone)
    }

    /// `drop_metadata_snap`: release the held copy.
    pub fn drop_snap(&mut self) -> Result<()> {
        let at = self.sb.metadata_snap;
        if at == 0 {
            return Err(PdataError::Invalid("no snap to drop".into()));
        }
        let snap = EraSuperblock::decode(&*self.tm.read(at, BlockKind::EraSuperblock)?, at)?;
        self.sb.metadata_snap = 0;
        btree::del(
            &mut self.tm,
            snap.writeset_tree_root,
            WRITESET_SIZE,
            &mut WritesetRefs,
        )?;
        array::del(&mut self.tm, snap.era_array_root, 4, &mut NoRefs)?;
        self.tm.dec(at)?;
        Ok(())
    }

    /// Load a whole state at once (`era_restore`): the current era, archived writesets
    /// (era, bits) and the era array values (one per block; the array must be sized).
    pub fn restore_state(
        &mut self,
        current_era: u32,
        writesets: &[(u32, Vec<bool>)],
        eras: &[u32],
    ) -> Result<()> {
        self.sb.current_era = current_era;
        for (era, bits) in writesets {
            let mut root = bitset::empty(&mut self.tm)?;
            root = bitset::resize(&mut self.tm, root, 0, bits.len() as u64, false)?;
            for (i, &b) in bits.iter().enumerate() {
                if b {
                    root = bitset::set(&mut self.tm, root, i as u64, true)?;
                }
            }
            self.sb.writeset_tree_root = btree::insert(
                &mut self.tm,
                self.sb.writeset_tree_root,
                *era as u64,
                &pack_ws(bits.len() as u32, root),
                &mut WritesetRefs,
            )?;
        }
        for (b, &era) in eras.iter().enumerate() {
            if era != 0 {
                self.sb.era_array_root = array::set(
                    &mut self.tm,
                    self.sb.era_array_root,
                    4,
                    b as u64,
                    &era.to_le_bytes(),
                    &mut NoRefs,
                )?;
            }
        }
        Ok(())
    }

    /// Write everything and make it the committed state.
    pub fn commit(&mut self) -> Result<()> {
        let root = self.tm.pre_commit()?;
        self.sb.metadata_sm_root = root.pack();
        self.tm.commit(self.sb.encode_at(SUPERBLOCK))
    }
}
