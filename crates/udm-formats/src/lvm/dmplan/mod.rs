//! The device-mapper devices lvm2 activates for an LV: names (`vg-lv`, dashes doubled),
//! UUIDs (`LVM-<vg id><lv id>[-layer]`, ids without dashes), and tables (one `linear` or
//! `striped` line per segment; a snapshot origin as `snapshot-origin` over its hidden
//! `-real` device, a snapshot as `snapshot` over the origin's `-real` and its `-cow`; thin
//! pools, thin volumes and caches as [`pools`] describes, raid and mirror LVs as [`raid`]),
//! listed lower devices first (a snapshot's plan ends with its origin switched over): the
//! daemon loads them in order.

pub mod pools;
pub mod raid;

use super::edit::seg_str;
use super::model::{Lv, Segment, Vg};
use super::LvmError;

/// One table line: start and length in sectors, target type, parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmLine {
    pub start: u64,
    pub len: u64,
    pub ttype: String,
    pub params: String,
}

/// One device-mapper device of an activated LV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmDev {
    pub name: String,
    pub uuid: String,
    pub table: Vec<DmLine>,
    pub read_only: bool,
    /// The visible LV this device belongs to.
    pub lv: String,
    /// Load this table over the device when it is already active (an origin that becomes
    /// `snapshot-origin` when its first snapshot comes up).
    pub replace: bool,
    /// A device of another LV this one needs (a snapshot's origin layers, a thin volume's
    /// pool): deactivating this LV leaves it.
    pub shared: bool,
}

/// `vg-lv[-layer]` with every dash inside a name doubled.
pub fn dm_name(vg: &str, lv: &str, layer: Option<&str>) -> String {
    let mut n = format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"));
    if let Some(l) = layer {
        n.push('-');
        n.push_str(l);
    }
    n
}

/// `LVM-<vg id><lv id>[-layer]`.
pub fn dm_uuid(vg: &Vg, lv: &Lv, layer: Option<&str>) -> String {
    let ids = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut u = format!("LVM-{}{}", ids(&vg.id.0), ids(&lv.id.0));
    if let Some(l) = layer {
        u.push('-');
        u.push_str(l);
    }
    u
}

/// How a PV's device appears in tables (`None` for a missing PV).
pub type PvDev<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Whether missing PVs are tolerated (`--activationmode partial`: their extents read as
/// errors, as lvm2's missing-stripe filler does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Complete,
    Partial,
}

/// The device lvm2 puts in place of area `area` of segment `segno` of `lv` on a missing PV
/// (`--activationmode partial`): `vg-lv-missing_SEG_AREA`, an `error` target as long as
/// the segment.
fn missing_name(vg: &Vg, lv: &Lv, segno: usize, area: usize) -> String {
    dm_name(&vg.name, &lv.name, Some(&format!("missing_{segno}_{area}")))
}

fn seg_lines(
    vg: &Vg,
    lv: &Lv,
    segno: usize,
    seg: &Segment,
    dev: PvDev,
    mode: Mode,
) -> Result<DmLine, LvmError> {
    let es = vg.extent_size;
    let start = seg.start_extent * es;
    let len = seg.extent_count * es;
    if seg.seg_type != "striped" {
        return Err(LvmError::Invalid(format!(
            "{}/{}: activating {} segments is not supported",
            vg.name, lv.name, seg.seg_type
        )));
    }
    let areas = seg.stripes()?;
    let mut devs = Vec::new();
    for (pv, pe) in &areas {
        let p = vg
            .pv(pv)
            .ok_or_else(|| LvmError::Invalid(format!("unknown PV {pv}")))?;
        match dev(pv) {
            Some(d) => devs.push(format!("{d} {}", p.pe_start + pe * es)),
            None if mode == Mode::Partial => devs.push(format!(
                "/dev/mapper/{} 0",
                missing_name(vg, lv, segno, devs.len())
            )),
            None => {
                return Err(LvmError::NotFound(format!(
                    "Refusing activation of partial LV {}/{}.  Use '--activationmode partial' to override.",
                    vg.name, lv.name
                )))
            }
        }
    }
    Ok(if devs.len() == 1 {
        DmLine {
            start,
            len,
            ttype: "linear".into(),
            params: devs.pop().expect("one"),
        }
    } else {
        DmLine {
            start,
            len,
            ttype: "striped".into(),
            params: format!(
                "{} {} {}",
                devs.len(),
                seg.stripe_size().unwrap_or(0),
                devs.join(" ")
            ),
        }
    })
}

pub(crate) fn plain(vg: &Vg, lv: &Lv, dev: PvDev, mode: Mode) -> Result<Vec<DmLine>, LvmError> {
    lv.segments
        .iter()
        .enumerate()
        .map(|(i, s)| seg_lines(vg, lv, i, s, dev, mode))
        .collect()
}

/// The plain (linear/striped) table of LV `name`, whatever snapshots it has: what an
/// origin goes back to when its last snapshot goes.
pub fn plain_table(vg: &Vg, name: &str, dev: PvDev, mode: Mode) -> Result<Vec<DmLine>, LvmError> {
    let lv = vg.lv(name).ok_or_else(|| {
        LvmError::NotFound(format!(
            "Failed to find logical volume \"{}/{name}\"",
            vg.name
        ))
    })?;
    plain(vg, lv, dev, mode)
}

/// The snapshot segment of `snapshotN` whose COW store is `lv`, if any.
fn snapshot_seg<'a>(vg: &'a Vg, lv: &str) -> Option<&'a Segment> {
    vg.lvs
        .iter()
        .flat_map(|l| &l.segments)
        .find(|s| s.seg_type == "snapshot" && seg_str(s, "cow_store") == Some(lv))
}

/// The devices for visible LV `name`, lower devices first; `mapper` turns a dm name into
/// the form tables use for it (`/dev/mapper/NAME`).
pub fn plan(
    vg: &Vg,
    name: &str,
    dev: PvDev,
    mode: Mode,
    mapper: &dyn Fn(&str) -> String,
) -> Result<Vec<DmDev>, LvmError> {
    let devs = plan_layers(vg, name, dev, mode, mapper)?;
    if mode == Mode::Complete {
        return Ok(devs);
    }
    // Partial: each area on a missing PV reads from its own `error` device, made just
    // before the first device that maps it.
    let mut missing = Vec::new();
    for lv in &vg.lvs {
        for (i, seg) in lv.segments.iter().enumerate() {
            if seg.seg_type != "striped" {
                continue;
            }
            for (j, (pv, _)) in seg.stripes()?.iter().enumerate() {
                if dev(pv).is_none() {
                    let n = missing_name(vg, lv, i, j);
                    let u = dm_uuid(vg, lv, Some(&format!("missing_{i}_{j}")));
                    missing.push((n, u, seg.extent_count * vg.extent_size));
                }
            }
        }
    }
    let mut out: Vec<DmDev> = Vec::new();
    for d in devs {
        for (n, u, len) in &missing {
            let word = format!("/dev/mapper/{n}");
            let uses = d
                .table
                .iter()
                .any(|l| l.params.split(' ').any(|w| w == word));
            if uses && !out.iter().any(|o| &o.name == n) {
                out.push(DmDev {
                    name: n.clone(),
                    uuid: u.clone(),
                    table: vec![DmLine {
                        start: 0,
                        len: *len,
                        ttype: "error".into(),
                        params: String::new(),
                    }],
                    read_only: false,
                    lv: d.lv.clone(),
                    replace: false,
                    shared: d.shared,
                });
            }
        }
        out.push(d);
    }
    Ok(out)
}

/// [`plan`] before missing areas get their devices.
fn plan_layers(
    vg: &Vg,
    name: &str,
    dev: PvDev,
    mode: Mode,
    mapper: &dyn Fn(&str) -> String,
) -> Result<Vec<DmDev>, LvmError> {
    let lv = vg.lv(name).ok_or_else(|| {
        LvmError::NotFound(format!(
            "Failed to find logical volume \"{}/{name}\"",
            vg.name
        ))
    })?;
    let ro = !lv.status.iter().any(|s| s == "WRITE");
    let size = lv.extents() * vg.extent_size;
    let dmdev = |n: String, u: String, table: Vec<DmLine>| DmDev {
        name: n,
        uuid: u,
        table,
        read_only: ro,
        lv: name.into(),
        replace: false,
        shared: false,
    };
    let ctx = pools::Ctx {
        vg,
        dev,
        mode,
        mapper,
        top: name,
    };
    if let Some(seg) = lv.segments.first() {
        match pools::base_type(seg) {
            "thin-pool" => return Ok(pools::thin_pool(&ctx, name, true)?.0),
            "thin" => return pools::thin(&ctx, lv, seg),
            "cache" => return pools::cache(&ctx, lv, seg),
            t if crate::lvm::raid::is_raid_type(t) => return raid::raid(&ctx, lv, seg),
            _ => {}
        }
    }
    // An origin a snapshot merges into: `snapshot-merge` over its -real and the -cow.
    if let Some(m) = super::merge::merging_into(vg, name) {
        let cow_name = seg_str(m, "merging_store").unwrap_or("");
        let cow_lv = vg.lv(cow_name).ok_or_else(|| {
            LvmError::Invalid(format!("merging snapshot {cow_name} of {name} not found"))
        })?;
        let chunk = m.get("chunk_size").and_then(|v| v.as_int()).unwrap_or(8);
        let real = dm_name(&vg.name, name, Some("real"));
        let cow = dm_name(&vg.name, cow_name, Some("cow"));
        return Ok(vec![
            dmdev(
                real.clone(),
                dm_uuid(vg, lv, Some("real")),
                plain(vg, lv, dev, mode)?,
            ),
            dmdev(
                cow.clone(),
                dm_uuid(vg, cow_lv, Some("cow")),
                plain(vg, cow_lv, dev, mode)?,
            ),
            DmDev {
                replace: true,
                ..dmdev(
                    dm_name(&vg.name, name, None),
                    dm_uuid(vg, lv, None),
                    vec![DmLine {
                        start: 0,
                        len: size,
                        ttype: "snapshot-merge".into(),
                        params: format!("{} {} P {chunk}", mapper(&real), mapper(&cow)),
                    }],
                )
            },
        ]);
    }
    // A snapshot: its origin's -real, its own -cow, then the snapshot itself.
    if let Some(seg) = snapshot_seg(vg, name) {
        let origin_name = seg_str(seg, "origin").unwrap_or("");
        let origin = vg.lv(origin_name).ok_or_else(|| {
            LvmError::Invalid(format!("snapshot {name}: origin {origin_name} not found"))
        })?;
        let chunk = seg.get("chunk_size").and_then(|v| v.as_int()).unwrap_or(8);
        let real = dm_name(&vg.name, origin_name, Some("real"));
        let cow = dm_name(&vg.name, name, Some("cow"));
        let osize = origin.extents() * vg.extent_size;
        let origin_top = DmDev {
            replace: true,
            shared: true,
            lv: origin_name.into(),
            read_only: !origin.status.iter().any(|s| s == "WRITE"),
            ..dmdev(
                dm_name(&vg.name, origin_name, None),
                dm_uuid(vg, origin, None),
                vec![DmLine {
                    start: 0,
                    len: osize,
                    ttype: "snapshot-origin".into(),
                    params: mapper(&real),
                }],
            )
        };
        // The origin is switched over last, once its snapshot is up.
        return Ok(vec![
            DmDev {
                shared: true,
                ..dmdev(
                    real.clone(),
                    dm_uuid(vg, origin, Some("real")),
                    plain(vg, origin, dev, mode)?,
                )
            },
            dmdev(
                cow.clone(),
                dm_uuid(vg, lv, Some("cow")),
                plain(vg, lv, dev, mode)?,
            ),
            dmdev(
                dm_name(&vg.name, name, None),
                dm_uuid(vg, lv, None),
                vec![DmLine {
                    start: 0,
                    len: osize,
                    ttype: "snapshot".into(),
                    params: format!("{} {} P {chunk}", mapper(&real), mapper(&cow)),
                }],
            ),
            origin_top,
        ]);
    }
    let has_snaps = vg
        .lvs
        .iter()
        .flat_map(|l| &l.segments)
        .any(|s| s.seg_type == "snapshot" && seg_str(s, "origin") == Some(name));
    if has_snaps {
        let real = dm_name(&vg.name, name, Some("real"));
        return Ok(vec![
            dmdev(
                real.clone(),
                dm_uuid(vg, lv, Some("real")),
                plain(vg, lv, dev, mode)?,
            ),
            DmDev {
                replace: true,
                ..dmdev(
                    dm_name(&vg.name, name, None),
                    dm_uuid(vg, lv, None),
                    vec![DmLine {
                        start: 0,
                        len: size,
                        ttype: "snapshot-origin".into(),
                        params: mapper(&real),
                    }],
                )
            },
        ]);
    }
    Ok(vec![dmdev(
        dm_name(&vg.name, name, None),
        dm_uuid(vg, lv, None),
        plain(vg, lv, dev, mode)?,
    )])
}

/// The LVs `vgchange -ay` activates, in order: thin pools, then the other plain LVs and
/// thin volumes, then snapshots, each by name. Hidden LVs come up as layers of the visible
/// ones.
pub fn activation_order(vg: &Vg) -> Vec<String> {
    let mut pools = Vec::new();
    let mut plain = Vec::new();
    let mut snaps = Vec::new();
    for l in &vg.lvs {
        // Snapshot LVs come up with their COW stores; an unused cache pool is never active.
        if l.segments
            .iter()
            .any(|s| s.seg_type == "snapshot" || pools::base_type(s) == "cache-pool")
        {
            continue;
        }
        if snapshot_seg(vg, &l.name).is_some() {
            snaps.push(l.name.clone());
        } else if l.visible() {
            let pool = l.segments.first().map(pools::base_type) == Some("thin-pool");
            if pool { &mut pools } else { &mut plain }.push(l.name.clone());
        }
    }
    pools.extend(plain);
    pools.extend(snaps);
    pools
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_double_dashes() {
        assert_eq!(dm_name("vg-a", "lv-b", None), "vg--a-lv--b");
        assert_eq!(dm_name("vg", "lin", Some("real")), "vg-lin-real");
    }
}
