//! `cache_writeback`: copy a cache's dirty blocks from the fast device to the origin
//! (every mapped block when the metadata was not shut down cleanly), then clear their dirty
//! flags and commit a clean shutdown. As in 0.9 a block is dirty when its mapping says so.
//! (0.9.0 itself crashes while updating the metadata; here the update completes.)

use super::getopt::{getopt_long, Key};
use super::{long, open_meta, Streams, VERSION};
use crate::array;
use crate::block_manager::BlockManager;
use crate::cache::{unpack_mapping, CacheMetadata, CLEAN_SHUTDOWN, M_DIRTY, M_VALID};
use crate::le64;
use std::os::unix::fs::FileExt;

fn usage() -> &'static str {
    "Usage: cache_writeback [options]\n\t\t--metadata-device <dev>\n\t\t--origin-device <dev>\n\t\t--fast-device <dev>\n\t\t--buffer-size-meg <size>\n\t\t--list-failed-blocks\n\t\t--no-metadata-update\nOptions:\n  {-h|--help}\n  {-V|--version}\n"
}

/// What to write back: (cache block, origin block) pairs, the data block size in sectors,
/// and whether the mapping walk was complete.
pub struct ToCopy {
    pub blocks: Vec<(u64, u64)>,
    pub block_size: u32,
    pub complete: bool,
}

/// The blocks `cache_writeback` copies.
pub fn blocks_to_copy(meta: &str) -> Result<ToCopy, String> {
    let io = open_meta(meta, false)?;
    let sb = super::cache_tools::read_superblock(&*io)?;
    let clean = sb.flags & CLEAN_SHUTDOWN != 0;
    let mut bm = BlockManager::new(io, 1024);
    let mut out = Vec::new();
    let nr = sb.cache_blocks as u64;
    let r = array::walk(&mut bm, sb.mapping_root, 8, &mut |cb, v| {
        let (ob, flags) = unpack_mapping(le64(v, 0));
        if cb < nr && flags & M_VALID != 0 && (!clean || flags & M_DIRTY != 0) {
            out.push((cb, ob));
        }
        Ok(())
    });
    Ok(ToCopy {
        blocks: out,
        block_size: sb.data_block_size,
        complete: r.is_ok(),
    })
}

/// `cache_writeback`.
pub fn writeback(args: &[String], io: &mut Streams<'_>) -> i32 {
    let lo = long(&[
        ("metadata-device", true, Key::Long(0)),
        ("origin-device", true, Key::Long(1)),
        ("fast-device", true, Key::Long(2)),
        ("buffer-size-meg", true, Key::Long(3)),
        ("list-failed-blocks", false, Key::Long(4)),
        ("no-metadata-update", false, Key::Long(5)),
        ("help", false, Key::Short('h')),
        ("version", false, Key::Short('V')),
    ]);
    let p = match getopt_long(&io.prog.clone(), args, "hV", &lo) {
        Ok(p) if p.operands.is_empty() => p,
        Ok(_) => {
            let _ = io.err.write_all(usage().as_bytes());
            return 1;
        }
        Err(m) => {
            io.e(&m);
            let _ = io.err.write_all(usage().as_bytes());
            return 1;
        }
    };
    let (mut meta, mut origin, mut fast, mut list, mut update) = (None, None, None, false, true);
    for o in &p.opts {
        match o.key {
            Key::Long(0) => meta = o.value.clone(),
            Key::Long(1) => origin = o.value.clone(),
            Key::Long(2) => fast = o.value.clone(),
            Key::Long(3) => {
                if o.value
                    .as_deref()
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_none()
                {
                    io.e("couldn't parse buffer size");
                    return 1;
                }
            }
            Key::Long(4) => list = true,
            Key::Long(5) => update = false,
            Key::Short('h') => {
                io.o(usage());
                return 0;
            }
            _ => {
                io.o(&format!("{VERSION}\n"));
                return 0;
            }
        }
    }
    let missing = |io: &mut Streams<'_>, what: &str| {
        let _ = write!(io.err, "No {what} device provided.\n\n{}", usage());
        1
    };
    let Some(meta) = meta else {
        return missing(io, "metadata");
    };
    let Some(origin) = origin else {
        return missing(io, "origin");
    };
    let Some(fast) = fast else {
        return missing(io, "fast");
    };
    let (blocks, bs, complete) = match blocks_to_copy(&meta) {
        Ok(v) => (v.blocks, v.block_size, v.complete),
        Err(m) => {
            io.e(&m);
            return 1;
        }
    };
    let open = |p: &str, w: bool| std::fs::OpenOptions::new().read(true).write(w).open(p);
    let (src, dst) = match (open(&fast, false), open(&origin, true)) {
        (Ok(s), Ok(d)) => (s, d),
        (Err(e), _) | (_, Err(e)) => {
            io.e(&e.to_string());
            return 1;
        }
    };
    let bytes = bs as u64 * 512;
    let mut buf = vec![0u8; bytes as usize];
    let mut failed = Vec::new();
    for &(cb, ob) in &blocks {
        let ok = src.read_exact_at(&mut buf, cb * bytes).is_ok()
            && dst.write_all_at(&buf, ob * bytes).is_ok();
        if !ok {
            failed.push(cb);
        }
    }
    let synced = dst.sync_all().is_ok();
    if !synced {
        failed = blocks.iter().map(|b| b.0).collect();
    }
    io.o("Copying data: [==================================================]   100%");
    io.e("");
    io.o(&format!(
        "{}/{} blocks successfully copied.\n",
        blocks.len() - failed.len(),
        blocks.len()
    ));
    if !failed.is_empty() {
        io.o(&format!("{} blocks were not copied\n", failed.len()));
        if list {
            for cb in &failed {
                io.e(&format!("{cb}"));
            }
        }
    }
    if !complete {
        io.o("Metadata corruption was found, some data may not have been copied.\n");
        if update {
            io.o("Unable to update metadata.\n");
        }
    } else if update {
        io.o("Updating metadata ... ");
        let r = open_meta(&meta, true).and_then(|m| {
            let mut md = CacheMetadata::open(m, bs).map_err(|e| e.to_string())?;
            for &(cb, _) in blocks.iter().filter(|b| !failed.contains(&b.0)) {
                io.e(&format!("clearing dirty flag for block {cb}"));
                md.set_dirty(cb, false).map_err(|e| e.to_string())?;
            }
            md.commit(true).map_err(|e| e.to_string())
        });
        if let Err(m) = r {
            io.e(&m);
            return 1;
        }
        io.o("done\n");
    }
    if failed.is_empty() && complete {
        0
    } else {
        1
    }
}
