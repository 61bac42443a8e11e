//! What reports show of LVs that are active (in udm's daemon): lvm2 prints the attribute
//! string's state and open characters, image sync and raid health, and the `Cpy%Sync`,
//! `Data%` and `Meta%` columns from the devices' status lines, as it does with the kernel.

use super::attrs::seg_type;
use crate::lvm::dmplan::dm_name;
use crate::lvm::{Lv, Vg};
use std::collections::BTreeMap;

/// One active device: its open count, number and first target's type and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevLive {
    pub open: u32,
    pub major: u32,
    pub minor: u32,
    pub ttype: String,
    pub status: String,
}

/// The active devices by dm name. A report given one prints the active form (an LV whose
/// device is absent is inactive); a report given none prints lvm2's no-driver form.
pub type Live = BTreeMap<String, DevLive>;

/// `num/den` as lvm2 prints a percentage: two decimals, never 100.00 before the end nor
/// 0.00 after the start.
pub fn percent(num: u64, den: u64) -> String {
    if den == 0 {
        return "0.00".into();
    }
    let p = num as f64 * 100.0 / den as f64;
    let p = if num > 0 && p < 0.01 {
        0.01
    } else if num < den && p > 99.99 {
        99.99
    } else {
        p
    };
    format!("{p:.2}")
}

fn ratio(w: &str) -> Option<(u64, u64)> {
    let (a, b) = w.split_once('/')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The device of `lv` when it is active.
pub fn dev<'a>(live: &'a Live, vg: &Vg, lv: &Lv) -> Option<&'a DevLive> {
    live.get(&dm_name(&vg.name, &lv.name, None))
}

/// Whether every region of the raid or mirror LV owning image `lv` is in sync (None when
/// the owner is not active).
pub fn owner_in_sync(live: &Live, vg: &Vg, owner: &Lv) -> Option<bool> {
    let d = dev(live, vg, owner)?;
    let (a, b) = d.status.split_whitespace().find_map(ratio)?;
    Some(a == b)
}

/// The raid health characters of an active raid LV (`AA…`).
pub fn raid_health(live: &Live, vg: &Vg, lv: &Lv) -> Option<String> {
    let d = dev(live, vg, lv)?;
    (d.ttype == "raid").then(|| d.status.split_whitespace().nth(2).unwrap_or("").to_string())
}

/// `Cpy%Sync`, `Data%` or `Meta%` of an active LV (empty when it has none).
pub fn percent_field(live: &Live, vg: &Vg, lv: &Lv, id: &str) -> String {
    let Some(d) = dev(live, vg, lv) else {
        return String::new();
    };
    let w: Vec<&str> = d.status.split_whitespace().collect();
    match (id, seg_type(lv)) {
        (
            "copy_percent" | "sync_percent",
            "mirror" | "raid1" | "raid4" | "raid5" | "raid6" | "raid10",
        ) => w
            .iter()
            .find_map(|x| ratio(x))
            .map_or(String::new(), |(a, b)| percent(a, b)),
        ("data_percent", "thin-pool") => w
            .get(2)
            .and_then(|x| ratio(x))
            .map_or(String::new(), |(a, b)| percent(a, b)),
        ("metadata_percent", "thin-pool") => w
            .get(1)
            .and_then(|x| ratio(x))
            .map_or(String::new(), |(a, b)| percent(a, b)),
        ("data_percent", "thin") => {
            let size = lv.extents() * vg.extent_size;
            w.first()
                .and_then(|x| x.parse::<u64>().ok())
                .map_or(String::new(), |m| percent(m, size))
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_as_lvm2() {
        assert_eq!(percent(16384, 16384), "100.00");
        assert_eq!(percent(0, 16384), "0.00");
        assert_eq!(percent(1, 1 << 30), "0.01");
        assert_eq!(percent((1 << 30) - 1, 1 << 30), "99.99");
        assert_eq!(percent(1, 3), "33.33");
    }
}
