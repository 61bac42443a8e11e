//! `udm thin shrink`: shrink a pool's data device offline. Mapped blocks at or above the
//! new size move into free blocks below it; the copies land in blocks the committed
//! metadata calls free and are made durable before one transaction remaps every
//! reference (shared ones included, times kept) and shrinks the data space map, so a
//! crash at any point leaves either the old pool or the shrunk one.

use crate::error::{PdataError, Result};
use crate::io::MetaIo;
use crate::thin::{ThinMetadata, NEEDS_CHECK};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// The pool's data device, addressed in bytes.
pub trait DataDev {
    /// Read `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    /// Write `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()>;
    /// Make the writes durable.
    fn flush(&self) -> std::io::Result<()>;
}

impl DataDev for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.read_exact_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.write_all_at(buf, offset)
    }
    fn flush(&self) -> std::io::Result<()> {
        self.sync_data()
    }
}

/// What a shrink did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShrinkReport {
    /// Data blocks before.
    pub old_nr_blocks: u64,
    /// Data blocks after.
    pub new_nr_blocks: u64,
    /// Blocks moved, as (from, to).
    pub moves: Vec<(u64, u64)>,
    /// Data block size in sectors.
    pub data_block_size: u32,
}

/// Which blocks move where: the mapped blocks at or above `new_nr_blocks`, ascending,
/// into the free blocks below it, ascending. Refuses when they do not fit.
pub fn plan(md: &ThinMetadata, new_nr_blocks: u64) -> Result<Vec<(u64, u64)>> {
    let sm = md.data_sm();
    let nr = sm.core().nr_blocks();
    if new_nr_blocks > nr {
        return Err(PdataError::Invalid(format!(
            "cannot shrink the data device to {new_nr_blocks} blocks: it has only {nr}"
        )));
    }
    let high: Vec<u64> = (new_nr_blocks..nr).filter(|&b| sm.get(b) != 0).collect();
    let free: Vec<u64> = (0..new_nr_blocks)
        .filter(|&b| sm.get(b) == 0)
        .take(high.len())
        .collect();
    if free.len() < high.len() {
        let mapped = sm.core().nr_allocated();
        return Err(PdataError::Invalid(format!(
            "cannot shrink the data device to {new_nr_blocks} blocks: {mapped} blocks are mapped \
             and {} of them lie above the new end, but only {} blocks below it are free",
            high.len(),
            free.len()
        )));
    }
    Ok(high.into_iter().zip(free).collect())
}

/// Shrink the pool on `meta` with data device `data` to `new_nr_blocks` data blocks.
/// Nothing is written when the mapped blocks do not fit (or the pool holds a metadata
/// snapshot, or needs checking).
pub fn shrink(
    meta: Arc<dyn MetaIo>,
    data: &dyn DataDev,
    new_nr_blocks: u64,
) -> Result<ShrinkReport> {
    let mut md = ThinMetadata::open(meta)?;
    let sb = md.superblock().clone();
    if sb.flags & NEEDS_CHECK != 0 {
        return Err(PdataError::Invalid(
            "the metadata needs checking (run thin_check/thin_repair first)".into(),
        ));
    }
    if sb.metadata_snap != 0 {
        return Err(PdataError::Invalid(
            "a metadata snapshot is held (release_metadata_snap first)".into(),
        ));
    }
    let old_nr_blocks = md.data_sm().core().nr_blocks();
    let moves = plan(&md, new_nr_blocks)?;
    let bytes = sb.data_block_size as u64 * 512;
    // 1. Copy into blocks the committed metadata calls free, and make the copies durable.
    let mut buf = vec![0u8; bytes as usize];
    for &(from, to) in &moves {
        data.read_at(&mut buf, from * bytes)
            .map_err(|source| PdataError::DataIo {
                block: from,
                source,
            })?;
        data.write_at(&buf, to * bytes)
            .map_err(|source| PdataError::DataIo { block: to, source })?;
    }
    if !moves.is_empty() {
        data.flush()
            .map_err(|source| PdataError::DataIo { block: 0, source })?;
    }
    // 2. One transaction: remap every reference, shrink the space map, commit.
    let to: HashMap<u64, u64> = moves.iter().copied().collect();
    if !to.is_empty() {
        for (dev, _) in md.devices()? {
            for (vblock, block, time) in md.mappings(dev)? {
                if let Some(&new) = to.get(&block) {
                    md.remap(dev, vblock, new, time)?;
                }
            }
        }
    }
    md.shrink_data_sm(new_nr_blocks)?;
    md.commit()?;
    Ok(ShrinkReport {
        old_nr_blocks,
        new_nr_blocks,
        moves,
        data_block_size: sb.data_block_size,
    })
}

/// Shrink the pool whose metadata and data live at `meta` and `data` (files or block
/// devices); a regular data file is truncated to the new size once the shrink is
/// committed.
pub fn shrink_paths(
    meta: &std::path::Path,
    data: &std::path::Path,
    new_nr_blocks: u64,
) -> Result<ShrinkReport> {
    let io: Arc<dyn MetaIo> = Arc::new(crate::io::FileIo::open(meta).map_err(PdataError::from_io)?);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(data)
        .map_err(|source| PdataError::DataIo { block: 0, source })?;
    let r = shrink(io, &f, new_nr_blocks)?;
    let is_file = f
        .metadata()
        .map_err(|source| PdataError::DataIo { block: 0, source })?
        .is_file();
    if is_file {
        let len = new_nr_blocks * r.data_block_size as u64 * 512;
        f.set_len(len)
            .and_then(|_| f.sync_all())
            .map_err(|source| PdataError::DataIo {
                block: new_nr_blocks,
                source,
            })?;
    }
    Ok(r)
}
