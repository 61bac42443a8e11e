//! The report fields udm knows, as `udm_report` field definitions with lvm2's names,
//! headings, minimum widths (a width of 0 is the heading's, as lvm2 defines its columns) and
//! kinds, and their values for one PV, VG, LV or LV segment.

use super::attrs;
use super::units::{size, Units};
use crate::lvm::{Lv, Pv, PvHeader, ReadVg, Segment, Value, Vg};
use udm_report::report::{FieldDef, Kind, TypeDef};

/// The report object types (field groups), as `udm_report` type bits.
pub mod obj {
    pub const PV: u32 = 1;
    pub const VG: u32 = 2;
    pub const LV: u32 = 4;
    pub const SEG: u32 = 8;
}

/// The field groups, with lvm2's prefixes.
pub const TYPES: &[TypeDef] = &[
    TypeDef {
        id: obj::PV,
        desc: "Physical Volume",
        prefix: "pv_",
    },
    TypeDef {
        id: obj::VG,
        desc: "Volume Group",
        prefix: "vg_",
    },
    TypeDef {
        id: obj::LV,
        desc: "Logical Volume",
        prefix: "lv_",
    },
    TypeDef {
        id: obj::SEG,
        desc: "Logical Volume Segment",
        prefix: "seg_",
    },
];

const fn f(id: &'static str, heading: &'static str, width: usize, kind: Kind, ty: u32) -> FieldDef {
    FieldDef {
        ty,
        kind,
        heading,
        width: if width < heading.len() {
            heading.len()
        } else {
            width
        },
        id,
        desc: heading,
    }
}

const STR: Kind = Kind::Str;
const LIST: Kind = Kind::Str;
const NUM: Kind = Kind::Num;
const PCT: Kind = Kind::Num;
const SIZE: Kind = Kind::Size;
const PV: u32 = obj::PV;
const VG: u32 = obj::VG;
const LV: u32 = obj::LV;
const SEG: u32 = obj::SEG;

/// The fields, as lvm2 names them.
pub const FIELDS: &[FieldDef] = &[
    f("lv_uuid", "LV UUID", 38, STR, LV),
    f("lv_name", "LV", 4, STR, LV),
    f("lv_full_name", "LV", 4, STR, LV),
    f("lv_path", "Path", 0, STR, LV),
    f("lv_dm_path", "DMPath", 0, STR, LV),
    f("lv_attr", "Attr", 0, STR, LV),
    f("lv_size", "LSize", 0, SIZE, LV),
    f("seg_count", "#Seg", 0, NUM, LV),
    f("origin", "Origin", 0, STR, LV),
    f("pool_lv", "Pool", 0, STR, LV),
    f("data_lv", "Data", 0, STR, LV),
    f("metadata_lv", "Meta", 0, STR, LV),
    f("move_pv", "Move", 0, STR, LV),
    f("convert_lv", "Convert", 0, STR, LV),
    f("mirror_log", "Log", 0, STR, LV),
    f("lv_tags", "LV Tags", 0, LIST, LV),
    f("lv_host", "Host", 10, STR, LV),
    f("data_percent", "Data%", 6, PCT, LV),
    f("snap_percent", "Snap%", 6, PCT, LV),
    f("metadata_percent", "Meta%", 6, PCT, LV),
    f("copy_percent", "Cpy%Sync", 0, PCT, LV),
    f("sync_percent", "Cpy%Sync", 0, PCT, LV),
    f("segtype", "Type", 0, STR, SEG),
    f("stripes", "#Str", 0, NUM, SEG),
    f("stripe_size", "Stripe", 0, SIZE, SEG),
    f("region_size", "Region", 0, SIZE, SEG),
    f("chunk_size", "Chunk", 0, SIZE, SEG),
    f("transaction_id", "TransId", 0, NUM, SEG),
    f("thin_id", "ThId", 0, NUM, SEG),
    f("seg_start", "Start", 0, SIZE, SEG),
    f("seg_start_pe", "Start", 0, NUM, SEG),
    f("seg_size", "SSize", 0, SIZE, SEG),
    f("seg_size_pe", "SSize", 0, NUM, SEG),
    f("seg_pe_ranges", "PE Ranges", 0, LIST, SEG),
    f("devices", "Devices", 0, LIST, SEG),
    f("vg_fmt", "Fmt", 0, STR, VG),
    f("vg_uuid", "VG UUID", 38, STR, VG),
    f("vg_name", "VG", 0, STR, VG),
    f("vg_attr", "Attr", 5, STR, VG),
    f("vg_size", "VSize", 0, SIZE, VG),
    f("vg_free", "VFree", 0, SIZE, VG),
    f("vg_extent_size", "Ext", 0, SIZE, VG),
    f("vg_extent_count", "#Ext", 0, NUM, VG),
    f("vg_free_count", "Free", 0, NUM, VG),
    f("max_lv", "MaxLV", 0, NUM, VG),
    f("max_pv", "MaxPV", 0, NUM, VG),
    f("pv_count", "#PV", 0, NUM, VG),
    f("vg_missing_pv_count", "#PV Missing", 0, NUM, VG),
    f("lv_count", "#LV", 0, NUM, VG),
    f("snap_count", "#SN", 0, NUM, VG),
    f("vg_seqno", "Seq", 0, NUM, VG),
    f("vg_tags", "VG Tags", 0, LIST, VG),
    f("pv_fmt", "Fmt", 0, STR, PV),
    f("pv_uuid", "PV UUID", 38, STR, PV),
    f("dev_size", "DevSize", 0, SIZE, PV),
    f("pv_name", "PV", 10, STR, PV),
    f("pv_ext_vsn", "PExtVsn", 0, NUM, PV),
    f("pe_start", "1st PE", 7, SIZE, PV),
    f("pv_size", "PSize", 0, SIZE, PV),
    f("pv_free", "PFree", 0, SIZE, PV),
    f("pv_used", "Used", 0, SIZE, PV),
    f("pv_attr", "Attr", 0, STR, PV),
    f("pv_pe_count", "PE", 3, NUM, PV),
    f("pv_pe_alloc_count", "Alloc", 0, NUM, PV),
    f("pv_tags", "PV Tags", 0, LIST, PV),
    f("pv_mda_count", "#PMda", 0, NUM, PV),
];

/// A field by name as lvm2 matches it: case and underscores ignored, the command's prefix
/// (`lv_`, `vg_`, `pv_`) optional, and only among the objects `allowed`.
pub fn lookup(name: &str, prefix: &str, allowed: u32) -> Option<&'static FieldDef> {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(|&c| c != '_')
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let want = norm(name);
    let with_prefix = norm(&format!("{prefix}{name}"));
    FIELDS
        .iter()
        .filter(|f| allowed & f.ty != 0)
        .find(|f| norm(f.id) == want)
        .or_else(|| {
            FIELDS
                .iter()
                .filter(|f| allowed & f.ty != 0)
                .find(|f| norm(f.id) == with_prefix)
        })
}

/// A value before formatting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    Str(String),
    Num(u64),
    /// Sectors.
    Size(u64),
    List(Vec<String>),
}

impl Val {
    /// The value as report text in `u` units, with its numeric sort key.
    pub fn to_value(&self, u: Units) -> udm_report::report::Value {
        match self {
            Val::Str(s) => udm_report::report::Value::Str(s.clone()),
            Val::Num(n) => udm_report::report::Value::Num(n.to_string(), *n),
            Val::Size(s) => udm_report::report::Value::Num(size(*s, u), *s),
            Val::List(l) => udm_report::report::Value::Str(l.join(",")),
        }
    }
}

/// A labelled device as the reports see it.
pub struct PvInfo<'a> {
    pub path: &'a str,
    /// Device size in sectors.
    pub dev_size: u64,
    pub header: &'a PvHeader,
}

/// What one report row describes.
#[derive(Default, Clone, Copy)]
pub struct Ctx<'a> {
    pub pv_dev: Option<&'a PvInfo<'a>>,
    pub pv: Option<&'a Pv>,
    pub vg: Option<&'a ReadVg>,
    pub lv: Option<&'a Lv>,
    pub seg: Option<&'a Segment>,
    /// Device path of each PV of the VG (in VG order), `[unknown]` when missing.
    pub pv_paths: Option<&'a [String]>,
    /// The active devices (the active form), or None (lvm2's no-driver form).
    pub live: Option<&'a super::live::Live>,
}

fn free_extents(vg: &Vg, pv: &str) -> u64 {
    vg.free_runs(pv).iter().map(|r| r.1).sum()
}

fn seg_int(s: &Segment, key: &str) -> Option<u64> {
    s.get(key).and_then(Value::as_int).map(|i| i as u64)
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// The value of field `id` for the row `c`.
pub fn value(id: &str, c: &Ctx) -> Val {
    let s = |x: &str| Val::Str(x.to_string());
    let vg = c.vg.map(|r| &r.metadata.vg);
    let ext = vg.map_or(0, |v| v.extent_size);
    if let (Some(vg), Some(lv)) = (vg, c.lv) {
        let seg = c.seg.or(lv.segments.first());
        let path = |pv: &str| -> String {
            vg.pvs
                .iter()
                .position(|p| p.name == pv)
                .and_then(|i| c.pv_paths.and_then(|p| p.get(i)).cloned())
                .unwrap_or_else(|| pv.to_string())
        };
        let areas = || -> Vec<(String, u64, u64)> {
            let Some(seg) = seg else { return vec![] };
            let st = seg.stripes().unwrap_or_default();
            let n = st.len().max(1) as u64;
            st.into_iter()
                .map(|(pv, pe)| (path(&pv), pe, seg.extent_count / n))
                .collect()
        };
        match id {
            "lv_uuid" => return s(&lv.id.to_string()),
            "lv_name" => {
                return if attrs::shown(vg, lv) {
                    s(&lv.name)
                } else {
                    Val::Str(format!("[{}]", lv.name))
                }
            }
            "lv_full_name" => return Val::Str(format!("{}/{}", vg.name, lv.name)),
            "lv_path" => {
                return if attrs::shown(vg, lv) && attrs::seg_type(lv) != "thin-pool" {
                    Val::Str(format!("/dev/{}/{}", vg.name, lv.name))
                } else {
                    s("")
                }
            }
            "lv_dm_path" => {
                return Val::Str(format!(
                    "/dev/mapper/{}",
                    crate::lvm::dmplan::dm_name(&vg.name, &lv.name, None)
                ))
            }
            "lv_attr" => {
                return Val::Str(attrs::lv_attr(
                    c.vg.expect("an LV row has its VG"),
                    lv,
                    c.live,
                ))
            }
            "copy_percent" | "sync_percent" | "data_percent" | "metadata_percent"
                if c.live.is_some() =>
            {
                return s(&super::live::percent_field(
                    c.live.expect("checked"),
                    vg,
                    lv,
                    id,
                ))
            }
            "lv_size" => return Val::Size(lv.extents() * ext),
            "seg_count" => return Val::Num(lv.segments.len() as u64),
            "origin" => return Val::Str(attrs::origin(vg, lv)),
            "pool_lv" => {
                return match attrs::seg_type(lv) {
                    "thin" => s(attrs::seg_str(lv, "thin_pool").unwrap_or("")),
                    "cache" => attrs::seg_str(lv, "cache_pool")
                        .map_or(s(""), |p| Val::Str(format!("[{p}]"))),
                    _ => s(""),
                }
            }
            "data_lv" | "metadata_lv"
                if matches!(attrs::seg_type(lv), "thin-pool" | "cache-pool") =>
            {
                let key = match (id, attrs::seg_type(lv)) {
                    ("data_lv", "thin-pool") => "pool",
                    ("data_lv", _) => "data",
                    _ => "metadata",
                };
                let sub = attrs::seg_str(lv, key).unwrap_or("");
                return match vg.lv(sub) {
                    Some(l) if !attrs::shown(vg, l) => Val::Str(format!("[{sub}]")),
                    _ => s(sub),
                };
            }
            "mirror_log" => {
                return match attrs::seg_str(lv, "mirror_log") {
                    Some(l) if attrs::seg_type(lv) == "mirror" => Val::Str(format!("[{l}]")),
                    _ => s(""),
                }
            }
            "lv_tags" => return Val::List(sorted(&lv.tags)),
            "lv_host" => return s(lv.creation_host.as_deref().unwrap_or("")),
            "data_lv" | "metadata_lv" | "move_pv" | "convert_lv" | "data_percent"
            | "snap_percent" | "metadata_percent" | "copy_percent" | "sync_percent" => {
                return s("")
            }
            _ => {}
        }
        if let Some(seg) = seg {
            let striped = seg.seg_type == "striped";
            match id {
                "segtype" => {
                    let n = seg.stripes().map(|v| v.len()).unwrap_or(0);
                    return s(if striped && n == 1 {
                        "linear"
                    } else {
                        crate::lvm::dmplan::pools::base_type(seg)
                    });
                }
                "stripes" if crate::lvm::raid::is_raid_type(attrs::seg_type(lv)) => {
                    return Val::Num(raid_images(seg).len() as u64)
                }
                "stripes" => return Val::Num(if striped { areas().len() as u64 } else { 0 }),
                "stripe_size" => return Val::Size(seg.stripe_size().unwrap_or(0)),
                "region_size" => return Val::Size(seg_int(seg, "region_size").unwrap_or(0)),
                "chunk_size" => {
                    // A snapshot's chunk size shows on its COW store.
                    let snap = vg.lvs.iter().find(|l| {
                        attrs::seg_type(l) == "snapshot"
                            && attrs::seg_str(l, "cow_store") == Some(&lv.name)
                    });
                    let mut from = snap.and_then(|l| l.segments.first()).unwrap_or(seg);
                    // A cache over a cache pool takes its chunk size from the pool.
                    if attrs::seg_type(lv) == "cache" && seg_int(seg, "chunk_size").is_none() {
                        let pool = attrs::seg_str(lv, "cache_pool").and_then(|p| vg.lv(p));
                        from = pool.and_then(|p| p.segments.first()).unwrap_or(seg);
                    }
                    return Val::Size(seg_int(from, "chunk_size").unwrap_or(0));
                }
                // Blank where the segment has none (not a thin pool or thin volume).
                "transaction_id" => return seg_int(seg, "transaction_id").map_or(s(""), Val::Num),
                "thin_id" => return seg_int(seg, "device_id").map_or(s(""), Val::Num),
                "seg_start" => return Val::Size(seg.start_extent * ext),
                "seg_start_pe" => return Val::Num(seg.start_extent),
                "seg_size" => return Val::Size(seg.extent_count * ext),
                "seg_size_pe" => return Val::Num(seg.extent_count),
                "seg_pe_ranges" => {
                    return Val::List(vec![areas()
                        .iter()
                        .map(|(p, pe, n)| format!("{p}:{pe}-{}", pe + n - 1))
                        .collect::<Vec<_>>()
                        .join(" ")])
                }
                "devices" => {
                    let mut v: Vec<String> = areas()
                        .iter()
                        .map(|(p, pe, _)| format!("{p}({pe})"))
                        .collect();
                    let sub = match attrs::seg_type(lv) {
                        "thin-pool" => Some("pool"),
                        "cache" => Some("origin"),
                        "cache-pool" => Some("data"),
                        _ => None,
                    };
                    if crate::lvm::raid::is_raid_type(attrs::seg_type(lv)) {
                        v = raid_images(seg).iter().map(|n| format!("{n}(0)")).collect();
                    }
                    if let Some(key) = sub {
                        v = attrs::seg_str(lv, key)
                            .map(|p| format!("{p}(0)"))
                            .into_iter()
                            .collect();
                    }
                    return Val::List(vec![v.join(",")]);
                }
                _ => {}
            }
        }
    }
    if let Some(r) = c.vg {
        let vg = &r.metadata.vg;
        let total: u64 = vg.pvs.iter().map(|p| p.pe_count).sum();
        match id {
            "vg_fmt" => return s("lvm2"),
            "vg_uuid" => return s(&vg.id.to_string()),
            "vg_name" => return s(&vg.name),
            "vg_attr" => return Val::Str(attrs::vg_attr(r)),
            "vg_size" => return Val::Size(total * ext),
            "vg_free" => return Val::Size(vg.free_extents() * ext),
            "vg_extent_size" => return Val::Size(ext),
            "vg_extent_count" => return Val::Num(total),
            "vg_free_count" => return Val::Num(vg.free_extents()),
            "max_lv" => return Val::Num(vg.max_lv),
            "max_pv" => return Val::Num(vg.max_pv),
            "pv_count" => return Val::Num(vg.pvs.len() as u64),
            "vg_missing_pv_count" => {
                return Val::Num(r.pv_disks.iter().filter(|d| d.is_none()).count() as u64)
            }
            "lv_count" => return Val::Num(attrs::counted(vg) as u64),
            "snap_count" => {
                return Val::Num(
                    vg.lvs
                        .iter()
                        .filter(|l| attrs::seg_type(l) == "snapshot")
                        .count() as u64,
                )
            }
            "vg_seqno" => return Val::Num(vg.seqno),
            "vg_tags" => return Val::List(sorted(&vg.tags)),
            _ => {}
        }
    } else if id.starts_with("vg_") {
        return s("");
    }
    let d = c.pv_dev;
    let in_vg = vg.zip(c.pv);
    match id {
        "pv_fmt" => s("lvm2"),
        "pv_uuid" => s(&d.map(|d| d.header.pv_uuid.to_string()).unwrap_or_default()),
        "dev_size" => Val::Size(d.map_or(0, |d| d.dev_size)),
        "pv_name" => s(d.map_or("[unknown]", |d| d.path)),
        "pv_ext_vsn" => Val::Num(d.map_or(0, |d| d.header.ext_version as u64)),
        "pe_start" => Val::Size(match (in_vg, d) {
            (Some((_, pv)), _) => pv.pe_start,
            (None, Some(d)) => d.header.data_areas.first().map_or(0, |a| a.offset / 512),
            _ => 0,
        }),
        "pv_size" => {
            Val::Size(in_vg.map_or(d.map_or(0, |d| d.dev_size), |(_, p)| p.pe_count * ext))
        }
        "pv_free" => Val::Size(in_vg.map_or(d.map_or(0, |d| d.dev_size), |(v, p)| {
            free_extents(v, &p.name) * ext
        })),
        "pv_used" => {
            Val::Size(in_vg.map_or(0, |(v, p)| (p.pe_count - free_extents(v, &p.name)) * ext))
        }
        "pv_attr" => Val::Str(in_vg.map_or("---".into(), |(v, p)| {
            let mut a = attrs::pv_attr(v, p);
            if d.is_none() {
                a.replace_range(2..3, "m");
            }
            a
        })),
        "pv_pe_count" => Val::Num(in_vg.map_or(0, |(_, p)| p.pe_count)),
        "pv_pe_alloc_count" => {
            Val::Num(in_vg.map_or(0, |(v, p)| p.pe_count - free_extents(v, &p.name)))
        }
        "pv_tags" => Val::List(c.pv.map_or(vec![], |p| sorted(&p.tags))),
        "pv_mda_count" => Val::Num(d.map_or(0, |d| d.header.metadata_areas.len() as u64)),
        _ => s(""),
    }
}

/// A raid or mirror segment's images (not its metadata sub-LVs or log).
fn raid_images(seg: &crate::lvm::Segment) -> Vec<String> {
    crate::lvm::raid::sub_lvs(seg)
        .into_iter()
        .filter(|n| !n.contains("_rmeta_") && !n.ends_with("_mlog"))
        .collect()
}
