//! The report fields udm knows, with lvm2's names, headings, minimum widths and kinds, and
//! their values for one PV, VG, LV or LV segment.

use super::attrs;
use udm_formats::lvm::{Lv, Pv, ReadVg, Segment, Value, Vg};

/// How a field's value is shown and aligned.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Str,
    Num,
    Size,
    List,
    Pct,
}

/// Which object a field describes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Obj {
    Pv,
    Vg,
    Lv,
    Seg,
}

/// One report field.
#[derive(Debug)]
pub struct Field {
    pub id: &'static str,
    pub heading: &'static str,
    pub width: usize,
    pub kind: Kind,
    pub obj: Obj,
}

const fn f(id: &'static str, heading: &'static str, width: usize, kind: Kind, obj: Obj) -> Field {
    Field {
        id,
        heading,
        width,
        kind,
        obj,
    }
}

use Kind::*;
use Obj::*;

/// The fields, as lvm2 names them.
pub const FIELDS: &[Field] = &[
    f("lv_uuid", "LV UUID", 38, Str, Lv),
    f("lv_name", "LV", 4, Str, Lv),
    f("lv_full_name", "LV", 4, Str, Lv),
    f("lv_path", "Path", 0, Str, Lv),
    f("lv_dm_path", "DMPath", 0, Str, Lv),
    f("lv_attr", "Attr", 0, Str, Lv),
    f("lv_size", "LSize", 0, Size, Lv),
    f("seg_count", "#Seg", 0, Num, Lv),
    f("origin", "Origin", 0, Str, Lv),
    f("pool_lv", "Pool", 0, Str, Lv),
    f("data_lv", "Data", 0, Str, Lv),
    f("metadata_lv", "Meta", 0, Str, Lv),
    f("move_pv", "Move", 0, Str, Lv),
    f("convert_lv", "Convert", 0, Str, Lv),
    f("mirror_log", "Log", 0, Str, Lv),
    f("lv_tags", "LV Tags", 0, List, Lv),
    f("lv_host", "Host", 10, Str, Lv),
    f("data_percent", "Data%", 6, Pct, Lv),
    f("snap_percent", "Snap%", 6, Pct, Lv),
    f("metadata_percent", "Meta%", 6, Pct, Lv),
    f("copy_percent", "Cpy%Sync", 0, Pct, Lv),
    f("sync_percent", "Cpy%Sync", 0, Pct, Lv),
    f("segtype", "Type", 0, Str, Seg),
    f("stripes", "#Str", 0, Num, Seg),
    f("stripe_size", "Stripe", 0, Size, Seg),
    f("chunk_size", "Chunk", 0, Size, Seg),
    f("transaction_id", "TransId", 0, Num, Seg),
    f("thin_id", "ThId", 0, Num, Seg),
    f("seg_start", "Start", 0, Size, Seg),
    f("seg_start_pe", "Start", 0, Num, Seg),
    f("seg_size", "SSize", 0, Size, Seg),
    f("seg_size_pe", "SSize", 0, Num, Seg),
    f("seg_pe_ranges", "PE Ranges", 0, List, Seg),
    f("devices", "Devices", 0, List, Seg),
    f("vg_fmt", "Fmt", 0, Str, Vg),
    f("vg_uuid", "VG UUID", 38, Str, Vg),
    f("vg_name", "VG", 0, Str, Vg),
    f("vg_attr", "Attr", 5, Str, Vg),
    f("vg_size", "VSize", 0, Size, Vg),
    f("vg_free", "VFree", 0, Size, Vg),
    f("vg_extent_size", "Ext", 0, Size, Vg),
    f("vg_extent_count", "#Ext", 0, Num, Vg),
    f("vg_free_count", "Free", 0, Num, Vg),
    f("max_lv", "MaxLV", 0, Num, Vg),
    f("max_pv", "MaxPV", 0, Num, Vg),
    f("pv_count", "#PV", 0, Num, Vg),
    f("vg_missing_pv_count", "#PV Missing", 0, Num, Vg),
    f("lv_count", "#LV", 0, Num, Vg),
    f("snap_count", "#SN", 0, Num, Vg),
    f("vg_seqno", "Seq", 0, Num, Vg),
    f("vg_tags", "VG Tags", 0, List, Vg),
    f("pv_fmt", "Fmt", 0, Str, Pv),
    f("pv_uuid", "PV UUID", 38, Str, Pv),
    f("dev_size", "DevSize", 0, Size, Pv),
    f("pv_name", "PV", 10, Str, Pv),
    f("pv_ext_vsn", "PExtVsn", 0, Num, Pv),
    f("pe_start", "1st PE", 7, Size, Pv),
    f("pv_size", "PSize", 0, Size, Pv),
    f("pv_free", "PFree", 0, Size, Pv),
    f("pv_used", "Used", 0, Size, Pv),
    f("pv_attr", "Attr", 0, Str, Pv),
    f("pv_pe_count", "PE", 3, Num, Pv),
    f("pv_pe_alloc_count", "Alloc", 0, Num, Pv),
    f("pv_tags", "PV Tags", 0, List, Pv),
    f("pv_mda_count", "#PMda", 0, Num, Pv),
];

/// A field by name as lvm2 matches it: case and underscores ignored, the command's prefix
/// (`lv_`, `vg_`, `pv_`) optional, and only among the objects `allowed`.
pub fn lookup(name: &str, prefix: &str, allowed: &[Obj]) -> Option<&'static Field> {
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
        .filter(|f| allowed.contains(&f.obj))
        .find(|f| norm(f.id) == want)
        .or_else(|| {
            FIELDS
                .iter()
                .filter(|f| allowed.contains(&f.obj))
                .find(|f| norm(f.id) == with_prefix)
        })
}

/// A value before formatting.
pub enum Val {
    Str(String),
    Num(u64),
    /// Sectors.
    Size(u64),
    List(Vec<String>),
}

/// A labelled device as the reports see it.
pub struct PvInfo<'a> {
    pub path: &'a str,
    /// Device size in sectors.
    pub dev_size: u64,
    pub header: &'a udm_formats::lvm::PvHeader,
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
}

fn free_extents(vg: &Vg, pv: &str) -> u64 {
    vg.free_runs(pv).iter().map(|r| r.1).sum()
}

fn seg_int(s: &Segment, key: &str) -> Option<u64> {
    s.get(key).and_then(Value::as_int).map(|i| i as u64)
}

fn dm_name(vg: &str, lv: &str) -> String {
    format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
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
                return Val::Str(format!("/dev/mapper/{}", dm_name(&vg.name, &lv.name)))
            }
            "lv_attr" => return Val::Str(attrs::lv_attr(c.vg.expect("an LV row has its VG"), lv)),
            "lv_size" => return Val::Size(lv.extents() * ext),
            "seg_count" => return Val::Num(lv.segments.len() as u64),
            "origin" => return s(attrs::origin(vg, lv)),
            "pool_lv" => {
                return s(if attrs::seg_type(lv) == "thin" {
                    attrs::seg_str(lv, "thin_pool").unwrap_or("")
                } else {
                    ""
                })
            }
            "data_lv" | "metadata_lv" if attrs::seg_type(lv) == "thin-pool" => {
                let key = if id == "data_lv" { "pool" } else { "metadata" };
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
                        &seg.seg_type
                    });
                }
                "stripes" => return Val::Num(if striped { areas().len() as u64 } else { 0 }),
                "stripe_size" => return Val::Size(seg.stripe_size().unwrap_or(0)),
                "chunk_size" => {
                    // A snapshot's chunk size shows on its COW store.
                    let snap = vg.lvs.iter().find(|l| {
                        attrs::seg_type(l) == "snapshot"
                            && attrs::seg_str(l, "cow_store") == Some(&lv.name)
                    });
                    let from = snap.and_then(|l| l.segments.first()).unwrap_or(seg);
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
                    if seg.seg_type == "thin-pool" {
                        v = attrs::seg_str(lv, "pool")
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
