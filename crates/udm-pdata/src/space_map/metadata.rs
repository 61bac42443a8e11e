//! The metadata space map: counts for the metadata device itself, indexed by one index
//! block of up to 255 entries. Writing it allocates from it (new bitmap and index
//! locations), so a commit relocates until nothing new is dirtied, then writes.

use super::{
    decode_bitmap, decode_metadata_index, encode_bitmap, encode_metadata_index, nr_bitmaps, SmCore,
    SmRoot, MAX_METADATA_BLOCKS,
};
use crate::block_manager::BlockManager;
use crate::btree::{self, NoRefs};
use crate::checksum::BlockKind;
use crate::error::{PdataError, Result};
use crate::tm::TransactionManager;

/// Load the metadata space map described by `root`.
pub fn load(bm: &mut BlockManager, root: &SmRoot) -> Result<SmCore> {
    if root.nr_blocks > MAX_METADATA_BLOCKS || root.nr_blocks > bm.nr_blocks() {
        return Err(PdataError::Inconsistent(format!(
            "metadata space map covers {} blocks, device has {}",
            root.nr_blocks,
            bm.nr_blocks()
        )));
    }
    let idx = bm.read(root.bitmap_root, BlockKind::Index)?;
    let index = decode_metadata_index(&idx, root.bitmap_root, nr_bitmaps(root.nr_blocks))?;
    let mut bitmaps = Vec::with_capacity(index.len());
    for e in &index {
        bitmaps.push(decode_bitmap(&*bm.read(e.blocknr, BlockKind::Bitmap)?));
    }
    let overflow = btree::collect_u32(bm, root.ref_count_root)?;
    SmCore::load("metadata", root.nr_blocks, index, &bitmaps, &overflow, root)
}

/// Write the overflow tree, bitmaps and index of the metadata space map; return its root.
pub fn commit(tm: &mut TransactionManager) -> Result<SmRoot> {
    update_overflow(tm)?;
    // Relocate everything that will be written, until the relocations themselves
    // dirty nothing new.
    loop {
        let mut changed = false;
        let old = tm.sm().bitmap_root;
        if old == 0 || !tm.is_shadow(old) {
            let new = tm.alloc()?;
            if old != 0 {
                tm.dec(old)?;
            }
            tm.sm_mut().bitmap_root = new;
            changed = true;
        }
        let dirty: Vec<usize> = tm.sm().dirty_bitmaps.iter().copied().collect();
        for i in dirty {
            let old = tm.sm().index[i].blocknr;
            if old == 0 || !tm.is_shadow(old) {
                let new = tm.alloc()?;
                if old != 0 {
                    tm.dec(old)?;
                }
                tm.sm_mut().index[i].blocknr = new;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let dirty: Vec<usize> = std::mem::take(&mut tm.sm_mut().dirty_bitmaps)
        .into_iter()
        .collect();
    for i in dirty {
        let blocknr = tm.sm().index[i].blocknr;
        let (entries, _) = tm.sm().bitmap_entries(i);
        let summary = tm.sm().summary(i, blocknr);
        tm.sm_mut().index[i] = summary;
        tm.write(blocknr, encode_bitmap(blocknr, &entries))?;
    }
    let root = tm.sm().bitmap_root;
    let buf = encode_metadata_index(root, &tm.sm().index)?;
    tm.write(root, buf)?;
    Ok(tm.sm().root())
}

/// Bring the overflow btree in line with the counts above 2.
fn update_overflow(tm: &mut TransactionManager) -> Result<()> {
    loop {
        let todo = std::mem::take(&mut tm.sm_mut().overflow_dirty);
        if todo.is_empty() {
            return Ok(());
        }
        for b in todo {
            let c = tm.sm().get(b);
            let root = tm.sm().ref_count_root;
            let new_root = if c > 2 {
                btree::insert(tm, root, b, &c.to_le_bytes(), &mut NoRefs)?
            } else {
                btree::remove(tm, root, b, 4, &mut NoRefs)?.0
            };
            tm.sm_mut().ref_count_root = new_root;
        }
    }
}
