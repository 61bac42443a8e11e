//! lvm2's attribute strings and the LV relations reports show: `pv_attr`, `vg_attr`,
//! `lv_attr` (state and open as `X` without the daemon's devices, as lvm2 without a driver),
//! which LVs are listed, snapshot origins and thin pools.

use crate::lvm::{Item, Lv, Pv, ReadVg, Vg};

/// The 3-character PV attribute (allocatable, exported, missing).
pub fn pv_attr(vg: &Vg, pv: &Pv) -> String {
    format!(
        "{}{}{}",
        if pv.status.iter().any(|x| x == "ALLOCATABLE") {
            'a'
        } else {
            '-'
        },
        if vg.status.iter().any(|x| x == "EXPORTED") {
            'x'
        } else {
            '-'
        },
        if pv.flags.iter().any(|x| x == "MISSING") {
            'm'
        } else {
            '-'
        },
    )
}

pub fn vg_attr(r: &ReadVg) -> String {
    let vg = &r.metadata.vg;
    let has = |f: &str| vg.status.iter().any(|x| x == f);
    let alloc = vg
        .extra
        .iter()
        .find_map(|i| match i {
            Item::Pair { key, value, .. } if key == "allocation_policy" => {
                value.as_str().map(alloc_char)
            }
            _ => None,
        })
        .unwrap_or('n');
    let lock = vg
        .extra
        .iter()
        .any(|i| matches!(i, Item::Pair { key, .. } if key == "lock_type"));
    format!(
        "{}{}{}{}{}{}",
        if has("WRITE") { 'w' } else { 'r' },
        if has("RESIZEABLE") { 'z' } else { '-' },
        if has("EXPORTED") { 'x' } else { '-' },
        if r.pv_disks.iter().any(Option::is_none) {
            'p'
        } else {
            '-'
        },
        alloc,
        if has("CLUSTERED") {
            'c'
        } else if lock {
            's'
        } else {
            '-'
        },
    )
}

fn alloc_char(p: &str) -> char {
    match p {
        "contiguous" => 'c',
        "cling" | "cling_by_tags" => 'l',
        "normal" => 'n',
        "anywhere" => 'a',
        _ => 'i',
    }
}

/// The first segment's type without lvm2's `+FLAG` suffixes.
pub fn seg_type(lv: &Lv) -> &str {
    lv.segments
        .first()
        .map(crate::lvm::dmplan::pools::base_type)
        .unwrap_or("")
}

/// The LV whose first segment names `lv` under `key` among segments of type `ty`.
fn user_of<'a>(vg: &'a Vg, lv: &str, ty: &str, key: &str) -> Option<&'a Lv> {
    vg.lvs
        .iter()
        .find(|l| seg_type(l) == ty && seg_str(l, key) == Some(lv))
}

/// A cache's origin (`LV_corig`).
pub fn is_cache_origin(vg: &Vg, lv: &Lv) -> bool {
    user_of(vg, &lv.name, "cache", "origin").is_some()
}

pub fn seg_str<'a>(lv: &'a Lv, key: &str) -> Option<&'a str> {
    lv.segments
        .first()
        .and_then(|s| s.get(key))
        .and_then(|v| v.as_str())
}

/// lvm2's 10-character LV attribute string (state and open as `X`: not consulted).
pub fn lv_attr(r: &ReadVg, lv: &Lv, live: Option<&super::live::Live>) -> String {
    let vg = &r.metadata.vg;
    let ty = seg_type(lv);
    // Partial: a segment lies on a PV that was not found.
    let partial = lv.segments.iter().any(|s| {
        s.stripes().unwrap_or_default().iter().any(|(pv, _)| {
            vg.pvs
                .iter()
                .position(|p| &p.name == pv)
                .is_some_and(|i| r.pv_disks.get(i).is_some_and(Option::is_none))
        })
    });
    let snapshot_of = |name: &str| {
        vg.lvs
            .iter()
            .any(|l| seg_type(l) == "snapshot" && seg_str(l, "cow_store") == Some(name))
    };
    // A snapshot merging into its origin: both letters in capitals.
    let merging_cow = vg
        .lvs
        .iter()
        .any(|l| seg_type(l) == "snapshot" && seg_str(l, "merging_store") == Some(&lv.name));
    let merging_origin = crate::lvm::merge::merging_into(vg, &lv.name).is_some();
    let is_origin = vg
        .lvs
        .iter()
        .any(|l| seg_type(l) == "snapshot" && seg_str(l, "origin") == Some(&lv.name));
    let cache_vol = lv.flags.iter().any(|f| f == "CACHE_VOL");
    let cache_data = user_of(vg, &lv.name, "cache-pool", "data").is_some();
    let cache_meta = user_of(vg, &lv.name, "cache-pool", "metadata").is_some();
    let cache_origin = is_cache_origin(vg, lv);
    let ext_origin = vg
        .lvs
        .iter()
        .any(|l| seg_type(l) == "thin" && seg_str(l, "external_origin") == Some(&lv.name));
    // A raid or mirror LV's sub-LVs: the top's type (`r`/`m`) shows on them too.
    let owner = raid_owner(vg, &lv.name);
    let raid_top = owner.map(seg_type);
    // Active form: the LV's device, and whether its raid/mirror owner is in sync.
    let dev = live.and_then(|m| super::live::dev(m, vg, lv));
    let synced = match (live, owner) {
        (Some(m), Some(o)) => super::live::owner_in_sync(m, vg, o).unwrap_or(false),
        _ => false,
    };
    let kind = match ty {
        "thin-pool" => 't',
        "thin" => 'V',
        "cache" | "cache-pool" => 'C',
        "mirror" => 'm',
        t if t.starts_with("raid") => 'r',
        _ if cache_vol || cache_data => 'C',
        _ if cache_meta => 'e',
        _ if cache_origin => 'o',
        _ if merging_cow => 'S',
        _ if merging_origin => 'O',
        _ if snapshot_of(&lv.name) => 's',
        _ if ext_origin => 'o',
        _ if is_origin => 'o',
        _ if lv.name.ends_with("_tdata") => 'T',
        _ if lv.name.ends_with("_tmeta")
            || lv.name.ends_with("_pmspare")
            || lv.name.contains("_rmeta_") =>
        {
            'e'
        }
        // Without the driver lvm2 cannot tell an image is in sync: `I`.
        _ if raid_top.is_some()
            && !synced
            && (lv.name.contains("_mimage_") || lv.name.contains("_rimage_")) =>
        {
            'I'
        }
        _ if lv.name.contains("_mimage_") || lv.name.contains("_rimage_") => 'i',
        _ if lv.name.ends_with("_mlog") => 'l',
        _ => '-',
    };
    let has = |f: &str| lv.status.iter().any(|x| x == f);
    let policy = lv
        .extra
        .iter()
        .find_map(|i| match i {
            Item::Pair { key, value, .. } if key == "allocation_policy" => {
                value.as_str().map(alloc_char)
            }
            _ => None,
        })
        .unwrap_or('i');
    let policy = if has("LOCKED") {
        policy.to_ascii_uppercase()
    } else {
        policy
    };
    let target = match kind {
        't' | 'V' => 't',
        _ if cache_origin || cache_vol => 'C',
        'C' if !cache_data => 'C',
        'o' if ext_origin => '-',
        's' | 'o' | 'S' | 'O' => 's',
        'm' => 'm',
        'r' => 'r',
        _ => match raid_top {
            Some("mirror") => 'm',
            Some(_) => 'r',
            None => '-',
        },
    };
    // Raid health is unknown without the driver: `X` on raid LVs and their sub-LVs.
    let raidish = kind == 'r' || raid_top.is_some_and(|t| t != "mirror");
    let health = if raidish && live.is_none() {
        'X'
    } else if partial
        || (raidish
            && live
                .and_then(|m| super::live::raid_health(m, vg, lv))
                .is_some_and(|h| h.contains('D')))
    {
        'p'
    } else {
        '-'
    };
    // Zeroing shows on a thin pool and on its thin volumes.
    let pool = match ty {
        "thin" => seg_str(lv, "thin_pool").and_then(|p| vg.lv(p)),
        _ => Some(lv),
    };
    let zero = pool.is_some_and(|p| {
        seg_type(p) == "thin-pool"
            && p.segments[0]
                .get("zero_new_blocks")
                .and_then(|v| v.as_int())
                == Some(1)
    });
    format!(
        "{kind}{}{policy}{}{}{}{target}{}{}{}",
        if has("WRITE") { 'w' } else { 'r' },
        if has("FIXED_MINOR") { 'm' } else { '-' },
        match (live, dev) {
            (None, _) => 'X',
            (Some(_), Some(_)) => 'a',
            (Some(_), None) => '-',
        },
        match (live, dev) {
            (None, _) => 'X',
            (Some(_), Some(d)) if d.open > 0 => 'o',
            _ => '-',
        },
        if zero { 'z' } else { '-' },
        health,
        if lv.flags.iter().any(|f| f == "ACTIVATION_SKIP") {
            'k'
        } else {
            '-'
        },
    )
}

/// True when lvm2 lists `lv` without `-a`: visible LVs, and a snapshot's COW store when its
/// `snapshotN` LV is visible (lvm2 shows the COW as the snapshot).
pub fn shown(vg: &Vg, lv: &Lv) -> bool {
    lv.visible()
        || vg.lvs.iter().any(|l| {
            seg_type(l) == "snapshot" && seg_str(l, "cow_store") == Some(&lv.name) && l.visible()
        })
}

/// The origin column: a snapshot's origin (for its COW store), a thin snapshot's origin,
/// or a cache's origin (`[LV_corig]`).
pub fn origin(vg: &Vg, lv: &Lv) -> String {
    if seg_type(lv) == "cache" {
        return seg_str(lv, "origin").map_or(String::new(), |o| format!("[{o}]"));
    }
    origin_name(vg, lv).to_string()
}

fn origin_name<'a>(vg: &'a Vg, lv: &'a Lv) -> &'a str {
    vg.lvs
        .iter()
        .find(|l| {
            seg_type(l) == "snapshot"
                && (seg_str(l, "cow_store") == Some(&lv.name)
                    || seg_str(l, "merging_store") == Some(&lv.name))
        })
        .and_then(|l| seg_str(l, "origin"))
        .or_else(|| {
            if seg_type(lv) == "thin" {
                seg_str(lv, "origin").or_else(|| seg_str(lv, "external_origin"))
            } else {
                None
            }
        })
        .unwrap_or("")
}

/// The LVs `vgs` counts in `#LV` and `lvs` lists (a snapshot counts as its COW store).
pub fn counted(vg: &Vg) -> usize {
    vg.lvs
        .iter()
        .filter(|l| seg_type(l) != "snapshot" && shown(vg, l))
        .count()
}

/// The order lvm2's per-LV commands (`lvscan`, `lvdisplay`) visit LVs: thin pools first,
/// the last one first, then the others in metadata order.
pub fn process_order(vg: &Vg) -> Vec<&Lv> {
    let (pools, rest): (Vec<&Lv>, Vec<&Lv>) =
        vg.lvs.iter().partition(|l| seg_type(l) == "thin-pool");
    pools.into_iter().rev().chain(rest).collect()
}

/// The raid or mirror LV whose segment lists `lv` as a sub-LV (image, metadata or log).
pub fn raid_owner<'a>(vg: &'a Vg, lv: &str) -> Option<&'a Lv> {
    vg.lvs.iter().find(|l| {
        l.segments.first().is_some_and(|s| {
            crate::lvm::raid::is_raid_type(crate::lvm::dmplan::pools::base_type(s))
                && crate::lvm::raid::sub_lvs(s).iter().any(|n| n == lv)
        })
    })
}
