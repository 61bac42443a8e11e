//! dm-cache's metadata on top of persistent-data: the cache superblock (magic, version 1 or 2,
//! flags with the clean-shutdown and needs-check bits, policy name/version/hint size, space
//! map root, array roots, discard geometry, statistics), the mapping array (`oblock << 16 |
//! flags` per cache block, `VALID` and, in version 1, `DIRTY`), the hint array (one `u32` per
//! cache block, written at a clean shutdown), the dirty bitset (version 2) and the discard
//! bitset. [`CacheMetadata`] is the front end the cache target and the tests use.
//!
//! Like the kernel: opening clears the clean-shutdown flag on disk at once, and a cache opened
//! after an unclean shutdown reports every mapped block dirty (the on-disk dirty bits may be
//! stale) and ignores the hints.

use crate::array::{self, bitset};
use crate::btree::NoRefs;
use crate::checksum::{seal, BlockKind};
use crate::error::{PdataError, Result};
use crate::io::MetaIo;
use crate::space_map::SM_ROOT_SIZE;
use crate::superblock;
use crate::tm::{TransactionManager, SUPERBLOCK};
use crate::{le32, le64, put32, put64, BlockBuf, BLOCK_SIZE};
use std::sync::Arc;

/// Superblock magic (06142003 octal in the kernel sources).
pub const CACHE_MAGIC: u64 = 0o6142003;
/// Superblock flag: the last shutdown was clean (dirty bits and hints are trustworthy).
pub const CLEAN_SHUTDOWN: u32 = 1;
/// Superblock flag: the metadata must be checked with the tools.
pub const NEEDS_CHECK: u32 = 2;
/// Mapping flag: the cache block holds a mapping.
pub const M_VALID: u64 = 1;
/// Mapping flag (version 1 only): the cache block differs from the origin.
pub const M_DIRTY: u64 = 2;
/// Bytes of the policy name field.
pub const POLICY_NAME_SIZE: usize = 16;
/// Metadata block size in sectors.
pub const METADATA_BLOCK_SECTORS: u32 = (BLOCK_SIZE / 512) as u32;

/// The cache superblock (block 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSuperblock {
    pub flags: u32,
    pub uuid: [u8; 16],
    pub version: u32,
    /// NUL-padded policy name.
    pub policy_name: [u8; POLICY_NAME_SIZE],
    pub policy_hint_size: u32,
    pub metadata_sm_root: [u8; SM_ROOT_SIZE],
    pub mapping_root: u64,
    pub hint_root: u64,
    pub discard_root: u64,
    pub discard_block_size: u64,
    pub discard_nr_blocks: u64,
    pub data_block_size: u32,
    pub metadata_block_size: u32,
    pub cache_blocks: u32,
    pub compat_flags: u32,
    pub compat_ro_flags: u32,
    pub incompat_flags: u32,
    pub read_hits: u32,
    pub read_misses: u32,
    pub write_hits: u32,
    pub write_misses: u32,
    pub policy_version: [u32; 3],
    /// Version 2 only.
    pub dirty_root: u64,
}

impl CacheSuperblock {
    /// Encode and seal for block 0.
    pub fn encode(&self) -> BlockBuf {
        let mut b = superblock::new_block(
            SUPERBLOCK,
            CACHE_MAGIC,
            superblock::Header {
                flags: self.flags,
                uuid: self.uuid,
                version: self.version,
            },
        );
        b[44..60].copy_from_slice(&self.policy_name);
        put32(&mut b, 60, self.policy_hint_size);
        b[64..192].copy_from_slice(&self.metadata_sm_root);
        put64(&mut b, 192, self.mapping_root);
        put64(&mut b, 200, self.hint_root);
        put64(&mut b, 208, self.discard_root);
        put64(&mut b, 216, self.discard_block_size);
        put64(&mut b, 224, self.discard_nr_blocks);
        put32(&mut b, 232, self.data_block_size);
        put32(&mut b, 236, self.metadata_block_size);
        put32(&mut b, 240, self.cache_blocks);
        put32(&mut b, 244, self.compat_flags);
        put32(&mut b, 248, self.compat_ro_flags);
        put32(&mut b, 252, self.incompat_flags);
        put32(&mut b, 256, self.read_hits);
        put32(&mut b, 260, self.read_misses);
        put32(&mut b, 264, self.write_hits);
        put32(&mut b, 268, self.write_misses);
        for (i, v) in self.policy_version.iter().enumerate() {
            put32(&mut b, 272 + 4 * i, *v);
        }
        if self.version >= 2 {
            put64(&mut b, 284, self.dirty_root);
        }
        seal(&mut b, BlockKind::CacheSuperblock);
        b
    }

    /// Decode and validate block 0.
    pub fn decode(b: &BlockBuf) -> Result<CacheSuperblock> {
        let h = superblock::check_block(
            b,
            BlockKind::CacheSuperblock,
            SUPERBLOCK,
            CACHE_MAGIC,
            1..=2,
            |v| {
                format!(
                    "Cache metadata version {v} found, but only versions between 1 and 2 supported"
                )
            },
        )?;
        let version = h.version;
        let mut sb = CacheSuperblock {
            flags: h.flags,
            uuid: h.uuid,
            version,
            policy_name: b[44..60].try_into().expect("16 bytes"),
            policy_hint_size: le32(b, 60),
            metadata_sm_root: [0; SM_ROOT_SIZE],
            mapping_root: le64(b, 192),
            hint_root: le64(b, 200),
            discard_root: le64(b, 208),
            discard_block_size: le64(b, 216),
            discard_nr_blocks: le64(b, 224),
            data_block_size: le32(b, 232),
            metadata_block_size: le32(b, 236),
            cache_blocks: le32(b, 240),
            compat_flags: le32(b, 244),
            compat_ro_flags: le32(b, 248),
            incompat_flags: le32(b, 252),
            read_hits: le32(b, 256),
            read_misses: le32(b, 260),
            write_hits: le32(b, 264),
            write_misses: le32(b, 268),
            policy_version: [le32(b, 272), le32(b, 276), le32(b, 280)],
            dirty_root: if version >= 2 { le64(b, 284) } else { 0 },
        };
        sb.metadata_sm_root.copy_from_slice(&b[64..192]);
        Ok(sb)
    }

    /// The policy name as text.
    pub fn policy(&self) -> String {
        let end = self
            .policy_name
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(POLICY_NAME_SIZE);
        String::from_utf8_lossy(&self.policy_name[..end]).into_owned()
    }
}

/// Pack a mapping value.
pub fn pack_mapping(oblock: u64, flags: u64) -> u64 {
    (oblock << 16) | (flags & 0xffff)
}

/// Split a mapping value into (origin block, flags).
pub fn unpack_mapping(v: u64) -> (u64, u64) {
    (v >> 16, v & 0xffff)
}

/// One loaded mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub cblock: u64,
    pub oblock: u64,
    pub dirty: bool,
    /// The policy hint, when hints are valid for the loading policy.
    pub hint: Option<u32>,
}

/// The policy a cache runs, as the metadata records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyId {
    pub name: String,
    pub version: [u32; 3],
    pub hint_size: u32,
}

/// Hit/miss counters kept in the superblock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub read_hits: u32,
    pub read_misses: u32,
    pub write_hits: u32,
    pub write_misses: u32,
}

/// An open cache metadata device.
pub struct CacheMetadata {
    tm: TransactionManager,
    sb: CacheSuperblock,
    clean_when_opened: bool,
    changed: bool,
}

impl CacheMetadata {
    /// Format `io` empty (no cache blocks yet: size it with [`CacheMetadata::resize`]) for
    /// data blocks of `data_block_size` sectors, metadata `version` 1 or 2, and commit.
    pub fn format(
        io: Arc<dyn MetaIo>,
        data_block_size: u32,
        version: u32,
    ) -> Result<CacheMetadata> {
        if !(1..=2).contains(&version) {
            return Err(PdataError::Invalid(format!(
                "cache metadata version {version}"
            )));
        }
        let mut tm = TransactionManager::format(io)?;
        let mapping_root = array::empty(&mut tm)?;
        let dirty_root = if version >= 2 {
            bitset::empty(&mut tm)?
        } else {
            0
        };
        let discard_root = bitset::empty(&mut tm)?;
        let sb = CacheSuperblock {
            flags: 0,
            uuid: [0; 16],
            version,
            policy_name: [0; POLICY_NAME_SIZE],
            policy_hint_size: 0,
            metadata_sm_root: [0; SM_ROOT_SIZE],
            mapping_root,
            hint_root: 0,
            discard_root,
            discard_block_size: 0,
            discard_nr_blocks: 0,
            data_block_size,
            metadata_block_size: METADATA_BLOCK_SECTORS,
            cache_blocks: 0,
            compat_flags: 0,
            compat_ro_flags: 0,
            incompat_flags: 0,
            read_hits: 0,
            read_misses: 0,
            write_hits: 0,
            write_misses: 0,
            policy_version: [0; 3],
            dirty_root,
        };
        let mut md = CacheMetadata {
            tm,
            sb,
            clean_when_opened: true,
            changed: true,
        };
        md.commit(false)?;
        Ok(md)
    }

    /// Whether block 0 of `io` is all zeroes (an unformatted device).
    pub fn is_unformatted(io: &dyn MetaIo) -> Result<bool> {
        let buf = superblock::read_block0(io)?;
        Ok(buf.iter().all(|&b| b == 0))
    }

    /// Read the superblock of `io` without opening the metadata.
    pub fn read_superblock(io: &dyn MetaIo) -> Result<CacheSuperblock> {
        let buf = superblock::read_block0(io)?;
        CacheSuperblock::decode(&buf)
    }

    /// Open existing metadata for data blocks of `data_block_size` sectors; the
    /// clean-shutdown flag is remembered and cleared on disk at once.
    pub fn open(io: Arc<dyn MetaIo>, data_block_size: u32) -> Result<CacheMetadata> {
        let sb = Self::read_superblock(&*io)?;
        if sb.data_block_size != data_block_size {
            return Err(PdataError::Invalid(format!(
                "changing the data block size (from {} to {data_block_size}) is not supported",
                sb.data_block_size
            )));
        }
        if sb.incompat_flags != 0 {
            return Err(PdataError::Invalid(format!(
                "could not access metadata due to unsupported optional features ({:x}).",
                sb.incompat_flags
            )));
        }
        let tm = TransactionManager::open(io, &sb.metadata_sm_root)?;
        let clean_when_opened = sb.flags & CLEAN_SHUTDOWN != 0;
        let mut md = CacheMetadata {
            tm,
            sb,
            clean_when_opened,
            changed: true,
        };
        md.commit(false)?;
        Ok(md)
    }

    /// The superblock as of the last commit or change.
    pub fn superblock(&self) -> &CacheSuperblock {
        &self.sb
    }

    /// Metadata version (1 or 2).
    pub fn version(&self) -> u32 {
        self.sb.version
    }

    /// Whether the device had been shut down cleanly when it was opened.
    pub fn clean_when_opened(&self) -> bool {
        self.clean_when_opened
    }

    /// Whether anything changed since the last commit.
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// Number of cache blocks the arrays cover.
    pub fn cache_blocks(&self) -> u64 {
        self.sb.cache_blocks as u64
    }

    /// The needs-check flag.
    pub fn needs_check(&self) -> bool {
        self.sb.flags & NEEDS_CHECK != 0
    }

    /// Set the needs-check flag (written at the next commit).
    pub fn set_needs_check(&mut self) {
        self.sb.flags |= NEEDS_CHECK;
        self.changed = true;
    }

    /// (free, total) metadata blocks.
    pub fn metadata_usage(&self) -> (u64, u64) {
        (self.tm.sm().nr_free(), self.tm.sm().nr_blocks())
    }

    /// The stored statistics.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            read_hits: self.sb.read_hits,
            read_misses: self.sb.read_misses,
            write_hits: self.sb.write_hits,
            write_misses: self.sb.write_misses,
        }
    }

    /// Store statistics (at the next commit).
    pub fn set_stats(&mut self, s: CacheStats) {
        self.sb.read_hits = s.read_hits;
        self.sb.read_misses = s.read_misses;
        self.sb.write_hits = s.write_hits;
        self.sb.write_misses = s.write_misses;
    }

    /// Resize the mapping array (and dirty bitset) to `nr` cache blocks. Shrinking drops
    /// only unmapped or clean blocks.
    pub fn resize(&mut self, nr: u64) -> Result<()> {
        let old = self.cache_blocks();
        if nr > u32::MAX as u64 {
            return Err(PdataError::Invalid(format!("{nr} cache blocks")));
        }
        // The mapping array (and the dirty bitset's words) must fit the metadata device:
        // a hostile count is refused here rather than allocated until space runs out.
        let meta = self.tm.bm().nr_blocks();
        let dirty_words = if self.sb.version >= 2 {
            nr.div_ceil(64)
        } else {
            0
        };
        // Both are arrays of 8-byte values, so their summed length bounds their leaves.
        array::ensure_fits("cache blocks", nr + dirty_words, 8, meta)?;
        if nr < old {
            for cb in nr..old {
                if self.is_dirty(cb)? {
                    return Err(PdataError::Invalid(format!(
                        "unable to shrink cache due to dirty blocks (cache block {cb} is dirty)"
                    )));
                }
            }
        }
        let null = pack_mapping(0, 0).to_le_bytes();
        self.sb.mapping_root = array::resize(
            &mut self.tm,
            self.sb.mapping_root,
            8,
            old,
            nr,
            &null,
            &mut NoRefs,
        )?;
        if self.sb.version >= 2 {
            self.sb.dirty_root = bitset::resize(&mut self.tm, self.sb.dirty_root, old, nr, false)?;
        }
        self.sb.cache_blocks = nr as u32;
        self.changed = true;
        Ok(())
    }

    fn is_dirty(&mut self, cb: u64) -> Result<bool> {
        let (_, flags) = self.raw_mapping(cb)?;
        if flags & M_VALID == 0 {
            return Ok(false);
        }
        if self.sb.version >= 2 {
            bitset::test(&mut self.tm, self.sb.dirty_root, cb)
        } else {
            Ok(flags & M_DIRTY != 0)
        }
    }

    fn raw_mapping(&mut self, cb: u64) -> Result<(u64, u64)> {
        let v = array::get(&mut self.tm, self.sb.mapping_root, 8, cb)?.ok_or_else(|| {
            PdataError::Invalid(format!(
                "cache block {cb} beyond {} blocks",
                self.sb.cache_blocks
            ))
        })?;
        Ok(unpack_mapping(le64(&v, 0)))
    }

    fn set_raw(&mut self, cb: u64, v: u64) -> Result<()> {
        self.sb.mapping_root = array::set(
            &mut self.tm,
            self.sb.mapping_root,
            8,
            cb,
            &v.to_le_bytes(),
            &mut NoRefs,
        )?;
        self.changed = true;
        Ok(())
    }

    /// Map cache block `cb` to origin block `ob` (clean).
    pub fn insert(&mut self, cb: u64, ob: u64) -> Result<()> {
        self.set_raw(cb, pack_mapping(ob, M_VALID))?;
        if self.sb.version >= 2 {
            self.sb.dirty_root = bitset::set(&mut self.tm, self.sb.dirty_root, cb, false)?;
        }
        Ok(())
    }

    /// Unmap cache block `cb`.
    pub fn remove(&mut self, cb: u64) -> Result<()> {
        self.set_raw(cb, pack_mapping(0, 0))?;
        if self.sb.version >= 2 {
            self.sb.dirty_root = bitset::set(&mut self.tm, self.sb.dirty_root, cb, false)?;
        }
        Ok(())
    }

    /// Record cache block `cb`'s dirty state (the mapping flag in version 1, the dirty
    /// bitset in version 2).
    pub fn set_dirty(&mut self, cb: u64, dirty: bool) -> Result<()> {
        if self.sb.version >= 2 {
            let root = bitset::set(&mut self.tm, self.sb.dirty_root, cb, dirty)?;
            if root != self.sb.dirty_root {
                self.changed = true;
            }
            self.sb.dirty_root = root;
            return Ok(());
        }
        let (ob, flags) = self.raw_mapping(cb)?;
        let new = if dirty {
            flags | M_DIRTY
        } else {
            flags & !M_DIRTY
        };
        if new != flags {
            self.set_raw(cb, pack_mapping(ob, new))?;
        }
        Ok(())
    }

    /// Every valid mapping in cache-block order. After an unclean shutdown every mapping is
    /// dirty; hints are given when the metadata was clean and `policy` matches what it
    /// records (name, major version, hint size).
    pub fn mappings(&mut self, policy: Option<&PolicyId>) -> Result<Vec<Mapping>> {
        let nr = self.cache_blocks();
        let mut raw = Vec::with_capacity(nr as usize);
        array::walk(&mut self.tm, self.sb.mapping_root, 8, &mut |_, v| {
            raw.push(le64(v, 0));
            Ok(())
        })?;
        if (raw.len() as u64) < nr {
            return Err(PdataError::Inconsistent(format!(
                "mapping array holds {} entries, superblock says {nr}",
                raw.len()
            )));
        }
        let dirty_bits = if self.sb.version >= 2 && nr > 0 {
            bitset::collect(&mut self.tm, self.sb.dirty_root, nr)?
        } else {
            Vec::new()
        };
        let hints_valid = self.clean_when_opened
            && self.sb.hint_root != 0
            && self.sb.policy_hint_size == 4
            && policy.is_some_and(|p| {
                p.name == self.sb.policy()
                    && p.version[0] == self.sb.policy_version[0]
                    && p.hint_size == self.sb.policy_hint_size
            });
        let mut hints = Vec::new();
        if hints_valid {
            array::walk(&mut self.tm, self.sb.hint_root, 4, &mut |_, v| {
                hints.push(le32(v, 0));
                Ok(())
            })?;
        }
        let mut out = Vec::new();
        for (cb, v) in raw.into_iter().enumerate().take(nr as usize) {
            let (ob, flags) = unpack_mapping(v);
            if flags & M_VALID == 0 {
                continue;
            }
            let dirty = if !self.clean_when_opened {
                true
            } else if self.sb.version >= 2 {
                dirty_bits[cb]
            } else {
                flags & M_DIRTY != 0
            };
            out.push(Mapping {
                cblock: cb as u64,
                oblock: ob,
                dirty,
                hint: hints.get(cb).copied(),
            });
        }
        Ok(out)
    }

    /// Replace the hint array with `hints` (one per cache block) and record `policy`.
    pub fn write_hints(&mut self, policy: &PolicyId, hints: &[u32]) -> Result<()> {
        if policy.name.is_empty() || policy.name.len() > POLICY_NAME_SIZE - 1 {
            return Err(PdataError::Invalid(format!(
                "policy name '{}'",
                policy.name
            )));
        }
        self.sb.policy_name = [0; POLICY_NAME_SIZE];
        self.sb.policy_name[..policy.name.len()].copy_from_slice(policy.name.as_bytes());
        self.sb.policy_version = policy.version;
        self.changed = true;
        if policy.hint_size == 0 {
            return Ok(());
        }
        if policy.hint_size != 4 {
            return Err(PdataError::Invalid(format!(
                "hint size {}",
                policy.hint_size
            )));
        }
        self.sb.policy_hint_size = 4;
        if self.sb.hint_root != 0 {
            array::del(&mut self.tm, self.sb.hint_root, 4, &mut NoRefs)?;
        }
        let mut root = array::empty(&mut self.tm)?;
        let nr = self.cache_blocks();
        root = array::resize(&mut self.tm, root, 4, 0, nr, &[0; 4], &mut NoRefs)?;
        for (cb, h) in hints.iter().enumerate().take(nr as usize) {
            if *h != 0 {
                root = array::set(
                    &mut self.tm,
                    root,
                    4,
                    cb as u64,
                    &h.to_le_bytes(),
                    &mut NoRefs,
                )?;
            }
        }
        self.sb.hint_root = root;
        Ok(())
    }

    /// Resize the discard bitset to `nr_blocks` blocks of `block_size` sectors (new bits
    /// clear) and record the geometry.
    pub fn resize_discards(&mut self, block_size: u64, nr_blocks: u64) -> Result<()> {
        self.sb.discard_root = bitset::resize(
            &mut self.tm,
            self.sb.discard_root,
            self.sb.discard_nr_blocks,
            nr_blocks,
            false,
        )?;
        self.sb.discard_block_size = block_size;
        self.sb.discard_nr_blocks = nr_blocks;
        self.changed = true;
        Ok(())
    }

    /// Set discard bit `b`.
    pub fn set_discard(&mut self, b: u64, discarded: bool) -> Result<()> {
        let root = bitset::set(&mut self.tm, self.sb.discard_root, b, discarded)?;
        if root != self.sb.discard_root {
            self.changed = true;
        }
        self.sb.discard_root = root;
        Ok(())
    }

    /// The discard bits (all clear after an unclean shutdown, as the kernel loads them).
    pub fn discards(&mut self) -> Result<Vec<bool>> {
        let nr = self.sb.discard_nr_blocks;
        if nr == 0 {
            return Ok(Vec::new());
        }
        if !self.clean_when_opened {
            return Ok(vec![false; nr as usize]);
        }
        bitset::collect(&mut self.tm, self.sb.discard_root, nr)
    }

    /// Write everything and make it the committed state; `clean_shutdown` sets the
    /// clean-shutdown flag (else it is cleared).
    pub fn commit(&mut self, clean_shutdown: bool) -> Result<()> {
        if clean_shutdown {
            self.sb.flags |= CLEAN_SHUTDOWN;
        } else {
            self.sb.flags &= !CLEAN_SHUTDOWN;
        }
        let root = self.tm.pre_commit()?;
        self.sb.metadata_sm_root = root.pack();
        self.tm.commit(self.sb.encode())?;
        self.changed = false;
        Ok(())
    }
}
