//! Building verity metadata from a data file: hashing the data on all cores into a hash
//! tree, computing FEC parity, and comparing an on-disk tree with the computed one (with
//! veritysetup's messages). Plain files and block devices, positioned reads and writes;
//! progress is reported in units done through a callback.

use super::fec::FecSource;
use super::{BlockHasher, Digest, FecLayout, Geometry, ReedSolomon};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Told how many more units (data blocks hashed, FEC rounds encoded) are done.
pub type OnProgress<'a> = &'a (dyn Fn(u64) + Sync);

/// Where an on-disk tree differs from the computed one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeMismatch {
    /// A wrong digest; `pos` is the byte position of the block it covers.
    #[error("Verification failed at position {pos}.")]
    Digest { pos: u64 },
    /// Nonzero padding at byte `pos` of the hash device.
    #[error("Spare area is not zeroed at position {pos}.")]
    Spare { pos: u64 },
}

/// Bytes each worker reads at a time.
const CHUNK: usize = 1 << 20;

fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Read exactly `buf.len()` bytes at `off`; a short file is an error.
fn read_at(f: &File, buf: &mut [u8], off: u64) -> std::io::Result<()> {
    f.read_exact_at(buf, off)
}

/// Hash data blocks `0..geo.data_blocks` of `data` into level 0 of `tree` (the whole tree
/// buffer) on all cores. Returns the digest of data block 0 (the root when there are no
/// levels).
fn hash_level0(
    data: &File,
    geo: &Geometry,
    hasher: &BlockHasher,
    tree: &mut [u8],
    progress: OnProgress<'_>,
) -> std::io::Result<Option<Digest>> {
    let n = geo.data_blocks;
    let dbs = geo.data_block_size as usize;
    if n == 0 {
        return Ok(None);
    }
    if geo.levels() == 0 {
        let mut b = vec![0u8; dbs];
        read_at(data, &mut b, 0)?;
        progress(1);
        return Ok(Some(hasher.digest(&b)));
    }
    let hbs = geo.hash_block_size as usize;
    let per_hb = 1u64 << geo.hash_per_block_bits();
    let l0 = ((geo.level_start(0) - geo.hash_start) as usize) * hbs;
    let l0_len = geo.level_len(0) as usize * hbs;
    let region = &mut tree[l0..l0 + l0_len];
    // Whole hash blocks per worker.
    let hbs_per_worker = (geo.level_len(0) as usize).div_ceil(threads()).max(1);
    let stride = geo.stride();
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (w, part) in region.chunks_mut(hbs_per_worker * hbs).enumerate() {
            let first = w as u64 * hbs_per_worker as u64 * per_hb;
            let last = (first + (part.len() / hbs) as u64 * per_hb).min(n);
            handles.push(s.spawn(move || -> std::io::Result<()> {
                let mut buf = vec![0u8; CHUNK.max(dbs)];
                let mut b = first;
                while b < last {
                    let cnt = ((buf.len() / dbs) as u64).min(last - b);
                    let bytes = cnt as usize * dbs;
                    read_at(data, &mut buf[..bytes], b * dbs as u64)?;
                    for (i, blk) in buf[..bytes].chunks(dbs).enumerate() {
                        let d = hasher.digest(blk);
                        let e = (b - first) as usize + i;
                        let slot = (e / per_hb as usize) * hbs + (e % per_hb as usize) * stride;
                        part[slot..slot + d.len()].copy_from_slice(d.as_slice());
                    }
                    progress(cnt);
                    b += cnt;
                }
                Ok(())
            }));
        }
        for h in handles {
            h.join().expect("hash worker panicked")?;
        }
        Ok::<(), std::io::Error>(())
    })?;
    Ok(None)
}

/// Compute the whole tree of `data` (bytes from `hash_start`) and the root digest;
/// `progress` counts data blocks hashed.
pub fn build_tree(
    data: &File,
    geo: &Geometry,
    hasher: &BlockHasher,
    progress: OnProgress<'_>,
) -> std::io::Result<(Vec<u8>, Digest)> {
    let mut tree = vec![0u8; geo.tree_bytes() as usize];
    let first = hash_level0(data, geo, hasher, &mut tree, progress)?;
    let root = match geo.build_upper_levels(hasher, &mut tree) {
        Some(r) => r,
        None => first.unwrap_or(Digest::from_slice(&[])),
    };
    Ok((tree, root))
}

/// Compare an on-disk tree with the computed one in veritysetup's order: level 0 first (a bad
/// digest reports the byte position of the block it covers, nonzero padding the position of
/// the padding), then upwards. `hash_base` is the byte offset of block 0 of the hash device
/// numbering (0 for a hash device of its own).
pub fn compare_tree(geo: &Geometry, computed: &[u8], disk: &[u8]) -> Result<(), TreeMismatch> {
    let hbs = geo.hash_block_size as u64;
    let ds = geo.digest_size();
    let stride = geo.stride();
    let per_hb = 1usize << geo.hash_per_block_bits();
    for level in 0..geo.levels() {
        let entries = if level == 0 {
            geo.data_blocks
        } else {
            geo.level_len(level - 1)
        };
        let input_pos = |j: u64| -> u64 {
            if level == 0 {
                j * geo.data_block_size as u64
            } else {
                (geo.level_start(level - 1) + j) * hbs
            }
        };
        let start = ((geo.level_start(level) - geo.hash_start) * hbs) as usize;
        for k in 0..geo.level_len(level) as usize {
            let blk = start + k * hbs as usize;
            let mut used = 0;
            for e in 0..per_hb {
                let j = (k * per_hb + e) as u64;
                if j >= entries {
                    break;
                }
                let o = blk + e * stride;
                if computed[o..o + ds] != disk[o..o + ds] {
                    return Err(TreeMismatch::Digest { pos: input_pos(j) });
                }
                if disk[o + ds..o + stride].iter().any(|&x| x != 0) {
                    let pos = (geo.hash_start * hbs) as usize + o + ds;
                    return Err(TreeMismatch::Spare { pos: pos as u64 });
                }
                used = (e + 1) * stride;
            }
            if disk[blk + used..blk + hbs as usize].iter().any(|&x| x != 0) {
                let pos = (geo.hash_start * hbs) as usize + blk + used;
                return Err(TreeMismatch::Spare { pos: pos as u64 });
            }
        }
    }
    Ok(())
}

/// Where FEC reads its protected blocks from.
pub struct FecInputs<'a> {
    pub data: &'a File,
    pub hash: &'a File,
}

/// Compute FEC parity for `layout` (all rounds, on all cores) and write it at `offset` of
/// `out`; `progress` counts rounds.
pub fn write_fec(
    layout: &FecLayout,
    inputs: &FecInputs<'_>,
    out: &File,
    offset: u64,
    progress: OnProgress<'_>,
) -> std::io::Result<()> {
    let rs = ReedSolomon::new(layout.roots as usize);
    let bs = layout.block_size as usize;
    let per = bs * layout.roots as usize;
    let next = AtomicU64::new(0);
    {
        std::thread::scope(|s| {
            let mut hs = Vec::new();
            for _ in 0..threads() {
                hs.push(s.spawn(|| -> std::io::Result<()> {
                    let rsn = layout.rsn() as usize;
                    let mut blocks = vec![vec![0u8; bs]; rsn];
                    let mut parity = vec![0u8; per];
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= layout.rounds {
                            return Ok(());
                        }
                        for (i, vb) in layout.round_blocks(n).enumerate() {
                            let b = &mut blocks[i];
                            match layout.source(vb) {
                                FecSource::Zero => b.fill(0),
                                FecSource::Data(d) => read_at(inputs.data, b, d * bs as u64)?,
                                FecSource::Hash(h) => read_at(inputs.hash, b, h * bs as u64)?,
                            }
                        }
                        let refs: Vec<&[u8]> = blocks.iter().map(|b| b.as_slice()).collect();
                        layout.encode_round(&rs, &refs, &mut parity);
                        out.write_all_at(&parity, offset + layout.round_parity_offset(n))?;
                        progress(1);
                    }
                }));
            }
            for h in hs {
                h.join().expect("fec worker panicked")?;
            }
            Ok(())
        })
    }
}
