//! `thin_trim`'s plan: the runs of data blocks no thin device (nor a held metadata
//! snapshot) references, from the committed data space map.

use crate::error::Result;
use crate::io::MetaIo;
use crate::thin::ThinMetadata;
use std::sync::Arc;

/// What to discard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrimPlan {
    /// Data block size in sectors.
    pub data_block_size: u32,
    /// Data blocks in the pool.
    pub nr_blocks: u64,
    /// Unreferenced runs, as `[begin, end)` block ranges.
    pub runs: Vec<(u64, u64)>,
}

/// The plan for the committed metadata on `io`.
pub fn free_runs(io: Arc<dyn MetaIo>) -> Result<TrimPlan> {
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
    Ok(TrimPlan {
        data_block_size: md.superblock().data_block_size,
        nr_blocks: nr,
        runs,
    })
}
