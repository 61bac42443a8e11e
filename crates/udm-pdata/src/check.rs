//! A reference-count checker: walk every block reachable from a root, count how often
//! each metadata and data block is referenced (a shared node's children once), and
//! compare with what the space maps on disk say.

use crate::block_manager::BlockManager;
use crate::btree::read_node;
use crate::checksum::BlockKind;
use crate::error::{PdataError, Result};
use crate::io::MetaIo;
use crate::space_map::{metadata, DiskSpaceMap, SmCore, SmRoot, INDEX_ENTRY_SIZE};
use crate::thin::{unpack_block_time, ThinSuperblock, DETAILS_SIZE};
use crate::tm::SUPERBLOCK;
use crate::{le64, BlockBuf, BLOCK_SIZE};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// What a tree's leaf values refer to.
#[derive(Debug, Clone)]
pub enum Leaves {
    /// Nothing.
    Plain(u32),
    /// dm-thin mapping values (data blocks).
    DataBlocks,
    /// Roots of subtrees whose leaves are described by the inner value.
    Subtrees(Box<Leaves>),
    /// dm-array blocks (of values that refer to nothing).
    ArrayBlocks,
}

impl Leaves {
    fn value_size(&self) -> u32 {
        match self {
            Leaves::Plain(vs) => *vs,
            _ => 8,
        }
    }
}

/// Expected reference counts gathered by walking.
#[derive(Default)]
pub struct RefWalker {
    /// Metadata block → references found.
    pub meta: HashMap<u64, u32>,
    /// Data block → references found.
    pub data: HashMap<u64, u32>,
    seen: HashSet<u64>,
}

impl RefWalker {
    /// Count one reference to metadata block `b`.
    pub fn meta_ref(&mut self, b: u64) {
        *self.meta.entry(b).or_default() += 1;
    }

    /// Count the tree at `root` (one reference to the root), checking its shape: keys
    /// inside the range the parent gives, non-root nodes at least a third full, all leaves
    /// at one depth.
    pub fn tree(&mut self, bm: &mut BlockManager, root: u64, leaves: &Leaves) -> Result<()> {
        let mut leaf_depth = None;
        self.node(bm, root, leaves, (0, u64::MAX), 0, &mut leaf_depth)
    }

    fn node(
        &mut self,
        bm: &mut BlockManager,
        b: u64,
        leaves: &Leaves,
        range: (u64, u64),
        depth: usize,
        leaf_depth: &mut Option<usize>,
    ) -> Result<()> {
        self.meta_ref(b);
        if !self.seen.insert(b) {
            return Ok(());
        }
        let bad = |r: String| PdataError::corrupt(BlockKind::Node, b, r);
        if depth > crate::btree::MAX_DEPTH {
            return Err(bad("tree too deep".into()));
        }
        let node = read_node(bm, b, leaves.value_size())?;
        if depth > 0 && node.len() < node.min_entries() {
            return Err(bad(format!(
                "{} entries, a non-root node needs at least {}",
                node.len(),
                node.min_entries()
            )));
        }
        if let (Some(&first), Some(&last)) = (node.keys.first(), node.keys.last()) {
            if first < range.0 || last >= range.1 {
                return Err(bad(format!(
                    "keys {first}..={last} outside the parent's range {}..{}",
                    range.0, range.1
                )));
            }
        }
        if node.leaf && *leaf_depth.get_or_insert(depth) != depth {
            return Err(bad("leaves at different depths".into()));
        }
        for i in 0..node.len() {
            if !node.leaf {
                let hi = node.keys.get(i + 1).copied().unwrap_or(range.1);
                let lo = if i == 0 { range.0 } else { node.keys[i] };
                self.node(bm, node.child(i), leaves, (lo, hi), depth + 1, leaf_depth)?;
                continue;
            }
            match leaves {
                Leaves::Plain(_) => {}
                Leaves::DataBlocks => {
                    let (d, _) = unpack_block_time(le64(node.value(i), 0));
                    *self.data.entry(d).or_default() += 1;
                }
                Leaves::Subtrees(inner) => self.tree(bm, le64(node.value(i), 0), inner)?,
                Leaves::ArrayBlocks => self.meta_ref(le64(node.value(i), 0)),
            }
        }
        Ok(())
    }

    /// Count the metadata space map's own blocks.
    pub fn metadata_sm(&mut self, bm: &mut BlockManager, root: &SmRoot) -> Result<SmCore> {
        let sm = metadata::load(bm, root)?;
        self.meta_ref(root.bitmap_root);
        for e in &sm.index {
            self.meta_ref(e.blocknr);
        }
        self.tree(bm, root.ref_count_root, &Leaves::Plain(4))?;
        Ok(sm)
    }

    /// Count a disk space map's blocks (in the metadata device).
    pub fn disk_sm(&mut self, bm: &mut BlockManager, sm_root: &[u8]) -> Result<DiskSpaceMap> {
        let root = SmRoot::unpack(sm_root)?;
        let sm = DiskSpaceMap::open(bm, sm_root)?;
        self.tree(
            bm,
            root.bitmap_root,
            &Leaves::Plain(INDEX_ENTRY_SIZE as u32),
        )?;
        self.tree(bm, root.ref_count_root, &Leaves::Plain(4))?;
        for e in &sm.core().index {
            self.meta_ref(e.blocknr);
        }
        Ok(sm)
    }
}

/// Differences between walked and stored counts (empty when consistent).
pub fn compare(name: &str, expected: &HashMap<u64, u32>, sm: &SmCore) -> Vec<String> {
    let mut out = Vec::new();
    for &b in expected.keys() {
        if b >= sm.nr_blocks() {
            out.push(format!(
                "{name} block {b} referenced but beyond the map's {} blocks",
                sm.nr_blocks()
            ));
        }
    }
    for b in 0..sm.nr_blocks() {
        let want = expected.get(&b).copied().unwrap_or(0);
        let have = sm.get(b);
        if want != have {
            out.push(format!(
                "{name} block {b}: {want} references found, space map says {have}"
            ));
        }
    }
    let used = (0..sm.nr_blocks()).filter(|&b| sm.get(b) != 0).count() as u64;
    if used != sm.nr_allocated() {
        out.push(format!(
            "{name} space map: {used} blocks in use, root says {}",
            sm.nr_allocated()
        ));
    }
    out
}

/// Summary of a consistent thin metadata device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinCheck {
    /// Metadata blocks in use.
    pub metadata_used: u64,
    /// Data blocks in use.
    pub data_used: u64,
    /// Thin devices.
    pub devices: usize,
}

/// Check thin metadata on `io`: every tree readable and well formed, and both space maps
/// agreeing with the references found.
pub fn check_thin(io: Arc<dyn MetaIo>) -> Result<ThinCheck> {
    let mut bm = BlockManager::new(io, 1024);
    let sb_buf: BlockBuf = *bm.read_raw(SUPERBLOCK)?;
    let sb = ThinSuperblock::decode(&sb_buf, SUPERBLOCK)?;
    let mut w = RefWalker::default();
    w.meta_ref(SUPERBLOCK);
    let meta_root = SmRoot::unpack(&sb.metadata_sm_root)?;
    let meta_sm = w.metadata_sm(&mut bm, &meta_root)?;
    let data_sm = w.disk_sm(&mut bm, &sb.data_sm_root)?;
    w.tree(
        &mut bm,
        sb.device_details_root,
        &Leaves::Plain(DETAILS_SIZE),
    )?;
    let mapping = Leaves::Subtrees(Box::new(Leaves::DataBlocks));
    w.tree(&mut bm, sb.data_mapping_root, &mapping)?;
    if sb.metadata_snap != 0 {
        let held: BlockBuf = *bm.read(sb.metadata_snap, BlockKind::ThinSuperblock)?;
        let held = ThinSuperblock::decode(&held, sb.metadata_snap)?;
        w.meta_ref(sb.metadata_snap);
        w.tree(
            &mut bm,
            held.device_details_root,
            &Leaves::Plain(DETAILS_SIZE),
        )?;
        w.tree(&mut bm, held.data_mapping_root, &mapping)?;
    }
    let devices = crate::btree::collect(&mut bm, sb.device_details_root, DETAILS_SIZE)?.len();
    let mut problems = compare("metadata", &w.meta, &meta_sm);
    problems.extend(compare("data", &w.data, data_sm.core()));
    if !problems.is_empty() {
        problems.truncate(20);
        return Err(PdataError::Inconsistent(problems.join("; ")));
    }
    Ok(ThinCheck {
        metadata_used: meta_sm.nr_allocated(),
        data_used: data_sm.core().nr_allocated(),
        devices,
    })
}

/// Read every block of `io` that validates as `kind` somewhere (diagnostics).
pub fn blocks_of_kind(io: &dyn MetaIo, kind: BlockKind) -> Vec<u64> {
    let mut buf = [0u8; BLOCK_SIZE];
    (0..io.nr_blocks())
        .filter(|&b| {
            io.read_block(b, &mut buf).is_ok() && crate::checksum::verify(&buf, kind, b).is_ok()
        })
        .collect()
}
