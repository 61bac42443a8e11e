//! What `thin_ls` reports per thin device: mapped blocks, how many of them no other
//! device maps (exclusive) or some other device does (shared), transaction and times, and
//! the tool's size rendering: whole units, stepping up by 1024 while above 1 MiB of the
//! current unit, then once more (rounded) when above 8 KiB of it.

use crate::thin_xml::ThinDump;
use std::collections::HashMap;

/// One device's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsRow {
    pub dev: u64,
    pub mapped: u64,
    pub exclusive: u64,
    pub transaction: u64,
    pub create_time: u32,
    pub snap_time: u32,
}

impl LsRow {
    /// Mapped blocks some other device (or another block of this one) maps too (the
    /// device details' count less the exclusive ones, wrapping as the tool's does).
    pub fn shared(&self) -> u64 {
        self.mapped.wrapping_sub(self.exclusive)
    }
}

/// Rows for every device of a dump (taken with its mappings).
pub fn rows(d: &ThinDump) -> Vec<LsRow> {
    let mut users: HashMap<u64, u32> = HashMap::new();
    for dev in &d.devices {
        for &(_, b, _) in &dev.mappings {
            *users.entry(b).or_default() += 1;
        }
    }
    d.devices
        .iter()
        .map(|dev| LsRow {
            dev: dev.dev_id,
            mapped: dev.details.mapped_blocks,
            exclusive: dev.mappings.iter().filter(|m| users[&m.1] == 1).count() as u64,
            transaction: dev.details.transaction_id,
            create_time: dev.details.creation_time,
            snap_time: dev.details.snapshotted_time,
        })
        .collect()
}

/// `bytes` rendered as thin_ls does (`0`, `64KiB`, `1088KiB`, `94MiB`, …).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes;
    let mut u = 0;
    while v > 1 << 20 {
        v /= 1024;
        u += 1;
    }
    if v > 8 << 10 {
        v = (v as f64 / 1024.0).round() as u64;
        u += 1;
    }
    format!("{v}{}", UNITS[u])
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0");
        assert_eq!(human_size(1114112), "1088KiB");
        assert_eq!(human_size(2621440000), "2500MiB");
        assert_eq!(human_size(1 << 30), "1024MiB");
        assert_eq!(human_size(98304000), "94MiB");
        assert_eq!(human_size(65536), "64KiB");
    }
}
