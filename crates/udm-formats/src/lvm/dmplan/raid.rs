//! The devices lvm2 activates for RAID and mirror LVs: each sub-LV (`vg-LV_rmeta_N`,
//! `vg-LV_rimage_N`, `vg-LV_mimage_N`, `vg-LV_mlog`) as its own device with the LV's plain
//! uuid, then the LV itself as `raid <type> <#params> <chunk> region_size <R> … <#devs>
//! <meta> <image>…` (raid5 as `raid5_ls`, raid6 as `raid6_zr`, raid0 with `-` for the
//! missing metadata) or `mirror disk 2 <log> <R> <#legs> <leg> 0… 1 handle_errors`.

use super::pools::{base_type, Ctx};
use super::{dm_name, dm_uuid, plain, DmDev, DmLine};
use crate::lvm::model::{Lv, Segment};
use crate::lvm::raid::sub_lvs;
use crate::lvm::text::Value;
use crate::lvm::LvmError;

fn int(seg: &Segment, key: &str) -> Option<u64> {
    seg.get(key).and_then(Value::as_int).map(|i| i as u64)
}

/// The kernel's raid type for an lvm2 segment type.
fn dm_raid_type(ty: &str) -> &str {
    match ty {
        "raid5" => "raid5_ls",
        "raid6" => "raid6_zr",
        t => t,
    }
}

/// A raid or mirror LV: its sub-LVs, then its own device.
pub(super) fn raid(c: &Ctx, lv: &Lv, seg: &Segment) -> Result<Vec<DmDev>, LvmError> {
    let vg = c.vg;
    let me = lv.name.as_str();
    let mut devs = Vec::new();
    let mut names = Vec::new();
    for sub in sub_lvs(seg) {
        let l = vg.lv(&sub).ok_or_else(|| {
            LvmError::Invalid(format!("{}/{me}: sub-volume {sub} not found", vg.name))
        })?;
        let d = c.dev(
            dm_name(&vg.name, &sub, None),
            dm_uuid(vg, l, None),
            plain(vg, l, c.dev, c.mode)?,
            me,
        );
        names.push((c.mapper)(&d.name));
        devs.push(d);
    }
    let ty = base_type(seg);
    let region = int(seg, "region_size").unwrap_or(crate::lvm::raid::DEFAULT_REGION);
    let params = if ty == "mirror" {
        let legs = int(seg, "mirror_count").unwrap_or(0) as usize;
        let (log, legs_names) = if seg.get("mirror_log").is_some() {
            let log = names.pop().unwrap_or_default();
            (format!("disk 2 {log} {region}"), names)
        } else {
            (format!("core 1 {region}"), names)
        };
        if legs_names.len() != legs {
            return Err(LvmError::Invalid(format!(
                "{}/{me}: mirror_count {legs} but {} legs",
                vg.name,
                legs_names.len()
            )));
        }
        let l: Vec<String> = legs_names.iter().map(|n| format!("{n} 0")).collect();
        format!("{log} {legs} {} 1 handle_errors", l.join(" "))
    } else if ty == "raid0" {
        let chunk = int(seg, "stripe_size").unwrap_or(0);
        let l: Vec<String> = names.iter().map(|n| format!("- {n}")).collect();
        format!("raid0 1 {chunk} {} {}", names.len(), l.join(" "))
    } else {
        let chunk = int(seg, "stripe_size").unwrap_or(0);
        let mut p = vec![chunk.to_string(), "region_size".into(), region.to_string()];
        if ty == "raid10" {
            p.push("raid10_copies".into());
            p.push(int(seg, "data_copies").unwrap_or(2).to_string());
        }
        let count = int(seg, "device_count").unwrap_or(0) as usize;
        if names.len() != 2 * count {
            return Err(LvmError::Invalid(format!(
                "{}/{me}: device_count {count} but {} sub-volumes",
                vg.name,
                names.len()
            )));
        }
        format!(
            "{} {} {} {count} {}",
            dm_raid_type(ty),
            p.len(),
            p.join(" "),
            names.join(" ")
        )
    };
    devs.push(c.dev(
        dm_name(&vg.name, me, None),
        dm_uuid(vg, lv, None),
        vec![DmLine {
            start: 0,
            len: lv.extents() * vg.extent_size,
            ttype: if ty == "mirror" { "mirror" } else { "raid" }.into(),
            params,
        }],
        me,
    ));
    Ok(devs)
}
