//! Status lines as the kernel prints them: the pool's INFO line (every field followed by a
//! space, the last too) and the thin device's `<mapped sectors> <highest mapped sector>`.

use super::pool::{Pool, PoolMode};
use udm_pdata::btree;
use udm_pdata::thin::ThinMetadata;
use udm_pdata::PdataError;

/// The pool's numbers for one INFO line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInfo {
    pub transaction_id: u64,
    pub used_meta: u64,
    pub total_meta: u64,
    pub used_data: u64,
    pub total_data: u64,
    /// Block of the held metadata snapshot (0: none).
    pub held_root: u64,
    pub mode: PoolMode,
    pub discard_enabled: bool,
    pub discard_passdown: bool,
    pub error_if_no_space: bool,
    pub needs_check: bool,
    /// Metadata low water mark in blocks.
    pub meta_threshold: u64,
}

impl std::fmt::Display for PoolInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}/{} {}/{} ",
            self.transaction_id, self.used_meta, self.total_meta, self.used_data, self.total_data
        )?;
        if self.held_root != 0 {
            write!(f, "{} ", self.held_root)?;
        } else {
            f.write_str("- ")?;
        }
        f.write_str(match self.mode {
            PoolMode::OutOfDataSpace => "out_of_data_space ",
            PoolMode::ReadOnly | PoolMode::Fail => "ro ",
            PoolMode::Write => "rw ",
        })?;
        f.write_str(if !self.discard_enabled {
            "ignore_discard "
        } else if self.discard_passdown {
            "discard_passdown "
        } else {
            "no_discard_passdown "
        })?;
        f.write_str(if self.error_if_no_space {
            "error_if_no_space "
        } else {
            "queue_if_no_space "
        })?;
        f.write_str(if self.needs_check {
            "needs_check "
        } else {
            "- "
        })?;
        write!(f, "{} ", self.meta_threshold)
    }
}

/// Gather the pool's INFO numbers (`meta_dev_blocks`: the metadata device's size in
/// blocks, capped at the format's limit).
pub fn pool_info(pool: &Pool, meta_dev_blocks: u64) -> Result<PoolInfo, PdataError> {
    let pf = pool.features();
    let mode = pool.mode();
    let (sb, meta, data) = pool
        .inspect(|md| {
            let sb = md.superblock().clone();
            let meta = (md.tm().sm().nr_allocated(), md.tm().sm().nr_blocks());
            let core = md.data_sm().core();
            Ok((sb, meta, (core.nr_allocated(), core.nr_blocks())))
        })
        .map_err(|e| match e {
            super::pool::MdError::Pdata(p) => p,
            super::pool::MdError::Mode(m) => PdataError::Invalid(format!("pool in {m:?} mode")),
        })?;
    // The kernel keeps a tenth of the metadata (at most 16 MiB) in reserve and reports it
    // as used (`metadata_reserve`).
    let reserve = (meta.1 / 10).min(4096);
    let free_meta = (meta.1 - meta.0).saturating_sub(reserve);
    Ok(PoolInfo {
        transaction_id: sb.trans_id,
        used_meta: meta.1 - free_meta,
        total_meta: meta.1,
        used_data: data.0,
        total_data: data.1,
        held_root: sb.metadata_snap,
        mode,
        discard_enabled: pf.discard_enabled,
        discard_passdown: pf.discard_passdown,
        error_if_no_space: pf.error_if_no_space,
        needs_check: sb.flags & udm_pdata::thin::NEEDS_CHECK != 0,
        meta_threshold: super::pool_target::meta_threshold(meta_dev_blocks),
    })
}

/// The root of device `dev`'s mapping tree.
pub fn dev_root(md: &mut ThinMetadata, dev: u64) -> Result<Option<u64>, PdataError> {
    let top = md.superblock().data_mapping_root;
    Ok(btree::lookup(md.tm(), top, dev, 8)?.map(|v| btree::value_u64(&v)))
}

/// The highest mapped virtual block of `dev` (the rightmost key of its tree).
pub fn highest_mapped(md: &mut ThinMetadata, dev: u64) -> Result<Option<u64>, PdataError> {
    let Some(mut b) = dev_root(md, dev)? else {
        return Ok(None);
    };
    for _ in 0..btree::MAX_DEPTH {
        let node = btree::read_node(md.tm(), b, 8)?;
        if node.keys.is_empty() {
            return Ok(None);
        }
        if node.leaf {
            return Ok(node.keys.last().copied());
        }
        b = node.child(node.len() - 1);
    }
    Err(PdataError::Inconsistent(format!(
        "mapping tree of device {dev} is too deep"
    )))
}

/// The thin INFO line from the mapped block count and highest mapped block.
pub fn thin_info(mapped: u64, highest: Option<u64>, block_size: u64) -> String {
    match highest {
        Some(h) => format!("{} {}", mapped * block_size, (h + 1) * block_size - 1),
        None => format!("{} -", mapped * block_size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_line_matches_the_kernel_layout() {
        let mut i = PoolInfo {
            transaction_id: 3,
            used_meta: 10,
            total_meta: 1024,
            used_data: 0,
            total_data: 160,
            held_root: 0,
            mode: PoolMode::Write,
            discard_enabled: true,
            discard_passdown: true,
            error_if_no_space: false,
            needs_check: false,
            meta_threshold: 256,
        };
        assert_eq!(
            i.to_string(),
            "3 10/1024 0/160 - rw discard_passdown queue_if_no_space - 256 "
        );
        i.held_root = 42;
        i.mode = PoolMode::OutOfDataSpace;
        i.discard_passdown = false;
        i.error_if_no_space = true;
        i.needs_check = true;
        assert_eq!(
            i.to_string(),
            "3 10/1024 0/160 42 out_of_data_space no_discard_passdown error_if_no_space needs_check 256 "
        );
        i.discard_enabled = false;
        i.mode = PoolMode::ReadOnly;
        assert!(i.to_string().contains(" ro ignore_discard "));
    }

    #[test]
    fn thin_line() {
        assert_eq!(thin_info(0, None, 128), "0 -");
        assert_eq!(thin_info(2, Some(9), 128), "256 1279");
    }
}
