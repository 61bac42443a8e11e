//! dm-thin's metadata on top of persistent-data: the superblock, device details, mapping
//! values, and [`ThinMetadata`], a small front end (devices, snapshots, mappings,
//! commit) that the thin-pool target and the tests build on.

use crate::btree::{self, lookup_nested, RefCounter, SubtreeRefs};
use crate::checksum::{seal, BlockKind};
use crate::error::{PdataError, Result};
use crate::io::MetaIo;
use crate::space_map::{DiskSpaceMap, SmRoot, SM_ROOT_SIZE};
use crate::superblock;
use crate::tm::{TransactionManager, SUPERBLOCK};
use crate::{le32, le64, put32, put64, BlockBuf, BLOCK_SIZE};
use std::sync::Arc;

/// Superblock magic.
pub const THIN_MAGIC: u64 = 27022010;
/// Metadata version written.
pub const THIN_VERSION: u32 = 2;
/// Superblock flag: the metadata needs checking.
pub const NEEDS_CHECK: u32 = 1;
/// Bytes of a device details value.
pub const DETAILS_SIZE: u32 = 24;

/// The thin-pool superblock (block 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinSuperblock {
    pub flags: u32,
    pub uuid: [u8; 16],
    pub version: u32,
    pub time: u32,
    pub trans_id: u64,
    /// Block of the held metadata snapshot's superblock copy (0: none).
    pub metadata_snap: u64,
    pub data_sm_root: [u8; SM_ROOT_SIZE],
    pub metadata_sm_root: [u8; SM_ROOT_SIZE],
    pub data_mapping_root: u64,
    pub device_details_root: u64,
    /// Data block size in 512-byte sectors.
    pub data_block_size: u32,
    /// Metadata block size in sectors (8).
    pub metadata_block_size: u32,
    pub metadata_nr_blocks: u64,
    pub compat_flags: u32,
    pub compat_ro_flags: u32,
    pub incompat_flags: u32,
}

impl ThinSuperblock {
    /// Encode and seal for block 0.
    pub fn encode(&self) -> BlockBuf {
        self.encode_at(SUPERBLOCK)
    }

    /// Encode and seal for block `at` (a metadata snapshot's copy lives elsewhere).
    pub fn encode_at(&self, at: u64) -> BlockBuf {
        let mut b = superblock::new_block(
            at,
            THIN_MAGIC,
            superblock::Header {
                flags: self.flags,
                uuid: self.uuid,
                version: self.version,
            },
        );
        put32(&mut b, 44, self.time);
        put64(&mut b, 48, self.trans_id);
        put64(&mut b, 56, self.metadata_snap);
        b[64..192].copy_from_slice(&self.data_sm_root);
        b[192..320].copy_from_slice(&self.metadata_sm_root);
        put64(&mut b, 320, self.data_mapping_root);
        put64(&mut b, 328, self.device_details_root);
        put32(&mut b, 336, self.data_block_size);
        put32(&mut b, 340, self.metadata_block_size);
        put64(&mut b, 344, self.metadata_nr_blocks);
        put32(&mut b, 352, self.compat_flags);
        put32(&mut b, 356, self.compat_ro_flags);
        put32(&mut b, 360, self.incompat_flags);
        seal(&mut b, BlockKind::ThinSuperblock);
        b
    }

    /// Decode and validate the superblock read from block `block`.
    pub fn decode(b: &BlockBuf, block: u64) -> Result<ThinSuperblock> {
        let h = superblock::check_block(
            b,
            BlockKind::ThinSuperblock,
            block,
            THIN_MAGIC,
            1..=THIN_VERSION,
            |v| format!("unsupported version {v}"),
        )?;
        let mut sb = ThinSuperblock {
            flags: h.flags,
            uuid: h.uuid,
            version: h.version,
            time: le32(b, 44),
            trans_id: le64(b, 48),
            metadata_snap: le64(b, 56),
            data_sm_root: [0; SM_ROOT_SIZE],
            metadata_sm_root: [0; SM_ROOT_SIZE],
            data_mapping_root: le64(b, 320),
            device_details_root: le64(b, 328),
            data_block_size: le32(b, 336),
            metadata_block_size: le32(b, 340),
            metadata_nr_blocks: le64(b, 344),
            compat_flags: le32(b, 352),
            compat_ro_flags: le32(b, 356),
            incompat_flags: le32(b, 360),
        };
        sb.data_sm_root.copy_from_slice(&b[64..192]);
        sb.metadata_sm_root.copy_from_slice(&b[192..320]);
        Ok(sb)
    }
}

/// Per-device details (24 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceDetails {
    pub mapped_blocks: u64,
    pub transaction_id: u64,
    pub creation_time: u32,
    pub snapshotted_time: u32,
}

impl DeviceDetails {
    /// Encode.
    pub fn pack(&self) -> [u8; DETAILS_SIZE as usize] {
        let mut b = [0u8; DETAILS_SIZE as usize];
        put64(&mut b, 0, self.mapped_blocks);
        put64(&mut b, 8, self.transaction_id);
        put32(&mut b, 16, self.creation_time);
        put32(&mut b, 20, self.snapshotted_time);
        b
    }
    /// Decode.
    pub fn unpack(b: &[u8]) -> DeviceDetails {
        DeviceDetails {
            mapped_blocks: le64(b, 0),
            transaction_id: le64(b, 8),
            creation_time: le32(b, 16),
            snapshotted_time: le32(b, 20),
        }
    }
}

/// A mapping value: data block in the high 40 bits, time in the low 24.
pub fn pack_block_time(block: u64, time: u32) -> u64 {
    (block << 24) | (time as u64 & 0xff_ffff)
}

/// Split a mapping value into (data block, time).
pub fn unpack_block_time(v: u64) -> (u64, u32) {
    (v >> 24, (v & 0xff_ffff) as u32)
}

/// Mapping values refer to data blocks.
pub struct DataRefs<'a>(pub &'a mut DiskSpaceMap);

impl RefCounter for DataRefs<'_> {
    fn inc(&mut self, _: &mut TransactionManager, v: &[u8]) -> Result<()> {
        self.0.inc(unpack_block_time(le64(v, 0)).0).map(|_| ())
    }
    fn dec(&mut self, _: &mut TransactionManager, v: &[u8]) -> Result<()> {
        self.0.dec(unpack_block_time(le64(v, 0)).0).map(|_| ())
    }
}

/// An open thin-pool metadata device.
pub struct ThinMetadata {
    tm: TransactionManager,
    data_sm: DiskSpaceMap,
    sb: ThinSuperblock,
}

impl ThinMetadata {
    /// Format `io` for a pool of `nr_data_blocks` blocks of `data_block_size` sectors and
    /// commit the empty pool.
    pub fn format(
        io: Arc<dyn MetaIo>,
        data_block_size: u32,
        nr_data_blocks: u64,
    ) -> Result<ThinMetadata> {
        let mut tm = TransactionManager::format(io)?;
        let data_sm = DiskSpaceMap::format(&mut tm, nr_data_blocks)?;
        let mapping = btree::empty(&mut tm, 8)?;
        let details = btree::empty(&mut tm, DETAILS_SIZE)?;
        let sb = ThinSuperblock {
            flags: 0,
            uuid: [0; 16],
            version: THIN_VERSION,
            time: 0,
            trans_id: 0,
            metadata_snap: 0,
            data_sm_root: [0; SM_ROOT_SIZE],
            metadata_sm_root: [0; SM_ROOT_SIZE],
            data_mapping_root: mapping,
            device_details_root: details,
            data_block_size,
            metadata_block_size: (BLOCK_SIZE / 512) as u32,
            metadata_nr_blocks: tm.sm().nr_blocks(),
            compat_flags: 0,
            compat_ro_flags: 0,
            incompat_flags: 0,
        };
        let mut md = ThinMetadata { tm, data_sm, sb };
        md.commit()?;
        Ok(md)
    }

    /// Open existing metadata.
    pub fn open(io: Arc<dyn MetaIo>) -> Result<ThinMetadata> {
        let buf = superblock::read_block0(&*io)?;
        let sb = ThinSuperblock::decode(&buf, SUPERBLOCK)?;
        let mut tm = TransactionManager::open(io, &sb.metadata_sm_root)?;
        let data_sm = DiskSpaceMap::open(&mut tm, &sb.data_sm_root)?;
        Ok(ThinMetadata { tm, data_sm, sb })
    }

    /// The superblock as of the last commit or change.
    pub fn superblock(&self) -> &ThinSuperblock {
        &self.sb
    }

    /// The transaction manager.
    pub fn tm(&mut self) -> &mut TransactionManager {
        &mut self.tm
    }

    /// The data space map.
    pub fn data_sm(&self) -> &DiskSpaceMap {
        &self.data_sm
    }

    /// Set the transaction id stored at the next commit.
    pub fn set_transaction_id(&mut self, id: u64) {
        self.sb.trans_id = id;
    }

    /// Write everything and make it the committed state.
    pub fn commit(&mut self) -> Result<()> {
        let data_root = self.data_sm.commit(&mut self.tm)?;
        let meta_root = self.tm.pre_commit()?;
        self.sb.data_sm_root = data_root.pack();
        self.sb.metadata_sm_root = meta_root.pack();
        self.tm.commit(self.sb.encode())?;
        self.data_sm.begin();
        Ok(())
    }

    /// Grow the data device to `nr_blocks` blocks (at the next commit).
    pub fn resize_data(&mut self, nr_blocks: u64) -> Result<()> {
        self.data_sm.extend(nr_blocks)
    }

    /// Grow the metadata space map to `nr_blocks` (the device must already be that big).
    pub fn resize_metadata(&mut self, nr_blocks: u64) -> Result<()> {
        self.tm.extend(nr_blocks)?;
        self.sb.metadata_nr_blocks = nr_blocks;
        Ok(())
    }

    /// Details of device `dev`.
    pub fn details(&mut self, dev: u64) -> Result<Option<DeviceDetails>> {
        Ok(
            btree::lookup(&mut self.tm, self.sb.device_details_root, dev, DETAILS_SIZE)?
                .map(|v| DeviceDetails::unpack(&v)),
        )
    }

    /// Every device id with its details.
    pub fn devices(&mut self) -> Result<Vec<(u64, DeviceDetails)>> {
        Ok(
            btree::collect(&mut self.tm, self.sb.device_details_root, DETAILS_SIZE)?
                .into_iter()
                .map(|(k, v)| (k, DeviceDetails::unpack(&v)))
                .collect(),
        )
    }

    fn put_details(&mut self, dev: u64, d: DeviceDetails) -> Result<()> {
        self.sb.device_details_root = btree::insert(
            &mut self.tm,
            self.sb.device_details_root,
            dev,
            &d.pack(),
            &mut btree::NoRefs,
        )?;
        Ok(())
    }

    fn exists(&mut self, dev: u64) -> Result<bool> {
        Ok(self.details(dev)?.is_some())
    }

    /// Add `dev → root` to the top level of the mapping tree (whose values are subtree
    /// roots: copying a shared top-level node adds a reference to each).
    fn insert_subtree(&mut self, dev: u64, root: u64) -> Result<()> {
        let mut data = DataRefs(&mut self.data_sm);
        let mut hooks = SubtreeRefs {
            leaf_value_size: 8,
            inner: &mut data,
        };
        self.sb.data_mapping_root = btree::insert(
            &mut self.tm,
            self.sb.data_mapping_root,
            dev,
            &root.to_le_bytes(),
            &mut hooks,
        )?;
        Ok(())
    }

    /// Create an empty thin device.
    pub fn create_thin(&mut self, dev: u64) -> Result<()> {
        if self.exists(dev)? {
            return Err(PdataError::Invalid(format!(
                "thin device {dev} already exists"
            )));
        }
        let root = btree::empty(&mut self.tm, 8)?;
        self.insert_subtree(dev, root)?;
        let d = DeviceDetails {
            transaction_id: self.sb.trans_id,
            creation_time: self.sb.time,
            snapshotted_time: self.sb.time,
            ..Default::default()
        };
        self.put_details(dev, d)
    }

    /// Create `dev` as a snapshot of `origin` (sharing its mapping tree).
    pub fn create_snap(&mut self, dev: u64, origin: u64) -> Result<()> {
        if self.exists(dev)? {
            return Err(PdataError::Invalid(format!(
                "thin device {dev} already exists"
            )));
        }
        let mut od = self
            .details(origin)?
            .ok_or_else(|| PdataError::Invalid(format!("origin device {origin} does not exist")))?;
        let root = btree::lookup(&mut self.tm, self.sb.data_mapping_root, origin, 8)?.ok_or_else(
            || PdataError::Inconsistent(format!("device {origin} has no mapping tree")),
        )?;
        let root = le64(&root, 0);
        self.tm.inc(root)?;
        self.insert_subtree(dev, root)?;
        self.sb.time += 1;
        od.snapshotted_time = self.sb.time;
        self.put_details(origin, od)?;
        let d = DeviceDetails {
            mapped_blocks: od.mapped_blocks,
            transaction_id: self.sb.trans_id,
            creation_time: self.sb.time,
            snapshotted_time: self.sb.time,
        };
        self.put_details(dev, d)
    }

    /// Delete device `dev` and release what only it used.
    pub fn delete(&mut self, dev: u64) -> Result<()> {
        if !self.exists(dev)? {
            return Err(PdataError::Invalid(format!(
                "thin device {dev} does not exist"
            )));
        }
        let mut data = DataRefs(&mut self.data_sm);
        let mut hooks = SubtreeRefs {
            leaf_value_size: 8,
            inner: &mut data,
        };
        self.sb.data_mapping_root =
            btree::remove(&mut self.tm, self.sb.data_mapping_root, dev, 8, &mut hooks)?.0;
        self.sb.device_details_root = btree::remove(
            &mut self.tm,
            self.sb.device_details_root,
            dev,
            DETAILS_SIZE,
            &mut btree::NoRefs,
        )?
        .0;
        Ok(())
    }

    /// The data block `vblock` of `dev` maps to, with its time.
    pub fn lookup(&mut self, dev: u64, vblock: u64) -> Result<Option<(u64, u32)>> {
        Ok(
            lookup_nested(&mut self.tm, self.sb.data_mapping_root, &[dev, vblock], 8)?
                .map(|v| unpack_block_time(le64(&v, 0))),
        )
    }

    /// Allocate a data block (count 1, owned by the caller until passed to [`Self::insert`]).
    pub fn alloc_data_block(&mut self) -> Result<u64> {
        self.data_sm.alloc()
    }

    /// Give back a block from [`Self::alloc_data_block`] that was never mapped (its
    /// copy or write failed).
    pub fn free_data_block(&mut self, data_block: u64) -> Result<()> {
        self.data_sm.dec(data_block).map(|_| ())
    }

    /// Set the superblock's needs_check flag (written at the next commit).
    pub fn set_needs_check(&mut self) {
        self.sb.flags |= NEEDS_CHECK;
    }

    /// Map `vblock` of `dev` to `data_block` (whose reference passes to the mapping); a
    /// previous mapping's block is released.
    pub fn insert(&mut self, dev: u64, vblock: u64, data_block: u64) -> Result<()> {
        let mut d = self
            .details(dev)?
            .ok_or_else(|| PdataError::Invalid(format!("thin device {dev} does not exist")))?;
        let v = pack_block_time(data_block, self.sb.time);
        if !self.insert_mapping(dev, vblock, v)? {
            d.mapped_blocks += 1;
            self.put_details(dev, d)?;
        }
        Ok(())
    }

    /// Map `vblock` of `dev` to the packed block/time `v` (the data reference is taken by
    /// the caller); returns whether it replaced a mapping.
    fn insert_mapping(&mut self, dev: u64, vblock: u64, v: u64) -> Result<bool> {
        let (root, old) = btree::insert_nested(
            &mut self.tm,
            self.sb.data_mapping_root,
            &[dev, vblock],
            &v.to_le_bytes(),
            &mut DataRefs(&mut self.data_sm),
        )?;
        self.sb.data_mapping_root = root;
        Ok(old.is_some())
    }

    /// Point `vblock` of `dev` at `data_block`, keeping the mapping's `time`: the new
    /// block gains a reference and the old one loses it (moving blocks when shrinking).
    pub(crate) fn remap(
        &mut self,
        dev: u64,
        vblock: u64,
        data_block: u64,
        time: u32,
    ) -> Result<()> {
        self.data_sm.inc(data_block)?;
        let v = pack_block_time(data_block, time);
        if !self.insert_mapping(dev, vblock, v)? {
            return Err(PdataError::Inconsistent(format!(
                "device {dev} block {vblock} was not mapped"
            )));
        }
        Ok(())
    }

    /// Shrink the data space map to `nr_blocks` (the dropped blocks must be free).
    pub(crate) fn shrink_data_sm(&mut self, nr_blocks: u64) -> Result<()> {
        self.data_sm.shrink(&mut self.tm, nr_blocks)
    }

    /// Set the superblock's time (restoring from a dump).
    pub fn set_time(&mut self, time: u32) {
        self.sb.time = time;
    }

    /// Set the superblock's flags (restoring from a dump).
    pub fn set_flags(&mut self, flags: u32) {
        self.sb.flags = flags;
    }

    /// Create device `dev` with the given details and an empty mapping tree (restoring).
    pub fn restore_device(&mut self, dev: u64, d: DeviceDetails) -> Result<()> {
        if self.exists(dev)? {
            return Err(PdataError::Invalid(format!(
                "thin device {dev} already exists"
            )));
        }
        let root = btree::empty(&mut self.tm, 8)?;
        self.insert_subtree(dev, root)?;
        self.put_details(dev, d)
    }

    /// Map `vblock` of `dev` to `data_block` at `time`, taking a new reference on the data
    /// block (it may be shared); details are left as they are (restoring).
    pub fn restore_mapping(
        &mut self,
        dev: u64,
        vblock: u64,
        data_block: u64,
        time: u32,
    ) -> Result<()> {
        if data_block >= self.data_sm.core().nr_blocks() {
            return Err(PdataError::Invalid(format!(
                "data block {data_block} beyond the end of the data device"
            )));
        }
        self.data_sm.inc(data_block)?;
        let v = pack_block_time(data_block, time);
        if self.insert_mapping(dev, vblock, v)? {
            return Err(PdataError::Invalid(format!(
                "device {dev} block {vblock} mapped twice"
            )));
        }
        Ok(())
    }

    /// Unmap `vblock` of `dev`; returns whether it was mapped.
    pub fn remove(&mut self, dev: u64, vblock: u64) -> Result<bool> {
        let (root, old) = btree::remove_nested(
            &mut self.tm,
            self.sb.data_mapping_root,
            &[dev, vblock],
            8,
            &mut DataRefs(&mut self.data_sm),
        )?;
        self.sb.data_mapping_root = root;
        if old.is_some() {
            if let Some(mut d) = self.details(dev)? {
                d.mapped_blocks = d.mapped_blocks.saturating_sub(1);
                self.put_details(dev, d)?;
            }
        }
        Ok(old.is_some())
    }

    /// Every mapping of `dev`: (virtual block, data block, time).
    pub fn mappings(&mut self, dev: u64) -> Result<Vec<(u64, u64, u32)>> {
        let Some(root) = btree::lookup(&mut self.tm, self.sb.data_mapping_root, dev, 8)? else {
            return Ok(Vec::new());
        };
        Ok(btree::collect(&mut self.tm, le64(&root, 0), 8)?
            .into_iter()
            .map(|(k, v)| {
                let (b, t) = unpack_block_time(le64(&v, 0));
                (k, b, t)
            })
            .collect())
    }

    /// Hold a metadata snapshot of the current state: a copy of the superblock (without
    /// space map roots) in a new block, holding a reference to the mapping and details
    /// trees; its location goes into `metadata_snap`, and all of it is committed (in one
    /// transaction) before this returns.
    pub fn reserve_metadata_snap(&mut self) -> Result<u64> {
        if self.sb.metadata_snap != 0 {
            return Err(PdataError::Invalid(
                "a metadata snapshot is already held".into(),
            ));
        }
        let b = self.tm.alloc()?;
        let mut copy = self.sb.clone();
        copy.data_sm_root = [0; SM_ROOT_SIZE];
        copy.metadata_sm_root = [0; SM_ROOT_SIZE];
        self.tm.write(b, copy.encode_at(b))?;
        self.tm.inc(self.sb.data_mapping_root)?;
        self.tm.inc(self.sb.device_details_root)?;
        self.sb.metadata_snap = b;
        self.commit()?;
        Ok(b)
    }

    /// Drop the held metadata snapshot and everything only it references.
    pub fn release_metadata_snap(&mut self) -> Result<()> {
        let b = self.sb.metadata_snap;
        if b == 0 {
            return Err(PdataError::Invalid("no metadata snapshot is held".into()));
        }
        let copy = ThinSuperblock::decode(&*self.tm.read(b, BlockKind::ThinSuperblock)?, b)?;
        self.tm.dec(b)?;
        let mut data = DataRefs(&mut self.data_sm);
        let mut hooks = SubtreeRefs {
            leaf_value_size: 8,
            inner: &mut data,
        };
        btree::del(&mut self.tm, copy.data_mapping_root, 8, &mut hooks)?;
        btree::del(
            &mut self.tm,
            copy.device_details_root,
            DETAILS_SIZE,
            &mut btree::NoRefs,
        )?;
        self.sb.metadata_snap = 0;
        Ok(())
    }

    /// Data space map root as of the last commit.
    pub fn data_sm_root(&self) -> Result<SmRoot> {
        SmRoot::unpack(&self.sb.data_sm_root)
    }
}
