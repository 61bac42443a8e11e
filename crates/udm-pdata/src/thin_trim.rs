//! `thin_trim`'s plan: the runs of data blocks no thin device (nor a held metadata
//! snapshot) references, from the committed data space map.

use crate::error::Result;
use crate::io::MetaIo;
use crate::thin::ThinMetadata;
use std::sync::Arc;

/// The pool's data block size (sectors), its number of data blocks and the free runs as
/// `[begin, end)` block ranges.
pub fn free_runs(io: Arc<dyn MetaIo>) -> Result<(u32, u64, Vec<(u64, u64)>)> {
    let md = ThinMetadata::open(io)?;
    let sm = md.data_sm();
    let nr = sm.core().nr_blocks();
    let mut runs = Vec::new();
    let mut start = None;
    for b in 0..nr {
        match (sm.get(b) == 0, start) {
            (true, None) => start = Some(b),
            (false, Some(s)) => {
                runs.push((s, b));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push((s, nr));
    }
    Ok((md.superblock().data_block_size, nr, runs))
}
