//! dmsetup's report fields (`help -c` lists them) and the object `info -c`/`splitname` report:
//! device info, deps, its place in the dependency tree and the LVM name split.

use super::mangle;
use super::tree::{self, DepTree};
use crate::report::{FieldDef, Kind, Obj, TypeDef, Value};
use udm_proto::{Dep, DevInfo};

pub const DR_TASK: u32 = 1;
pub const DR_INFO: u32 = 2;
pub const DR_DEPS: u32 = 4;
pub const DR_TREE: u32 = 8;
pub const DR_NAME: u32 = 16;
pub const DR_STATS: u32 = 32;
pub const DR_STATS_META: u32 = 64;

pub static TYPES: &[TypeDef] = &[
    TypeDef {
        id: DR_TASK,
        desc: "Mapped Device Name",
        prefix: "name_",
    },
    TypeDef {
        id: DR_INFO,
        desc: "Mapped Device Information",
        prefix: "info_",
    },
    TypeDef {
        id: DR_DEPS,
        desc: "Mapped Device Relationship Information",
        prefix: "deps_",
    },
    TypeDef {
        id: DR_TREE,
        desc: "Mapped Device Relationship Information",
        prefix: "tree_",
    },
    TypeDef {
        id: DR_NAME,
        desc: "Mapped Device Name Components",
        prefix: "splitname_",
    },
    TypeDef {
        id: DR_STATS,
        desc: "Mapped Device Statistics",
        prefix: "stats_",
    },
    TypeDef {
        id: DR_STATS_META,
        desc: "Mapped Device Statistics Region Information",
        prefix: "region_",
    },
];

const fn f(
    ty: u32,
    kind: Kind,
    heading: &'static str,
    width: usize,
    id: &'static str,
    desc: &'static str,
) -> FieldDef {
    FieldDef {
        ty,
        kind,
        heading,
        width,
        id,
        desc,
    }
}

use Kind::{Num as N, Size as Z, Str as S};

pub static FIELDS: &[FieldDef] = &[
    f(DR_TASK, S, "Name", 16, "name", "Name of mapped device."),
    f(
        DR_TASK,
        S,
        "MangledName",
        16,
        "mangled_name",
        "Mangled name of mapped device.",
    ),
    f(
        DR_TASK,
        S,
        "UnmangledName",
        16,
        "unmangled_name",
        "Unmangled name of mapped device.",
    ),
    f(
        DR_TASK,
        S,
        "UUID",
        32,
        "uuid",
        "Unique (optional) identifier for mapped device.",
    ),
    f(
        DR_TASK,
        S,
        "MangledUUID",
        32,
        "mangled_uuid",
        "Mangled unique (optional) identifier for mapped device.",
    ),
    f(
        DR_TASK,
        S,
        "UnmangledUUID",
        32,
        "unmangled_uuid",
        "Unmangled unique (optional) identifier for mapped device.",
    ),
    f(DR_TASK, N, "RAhead", 6, "read_ahead", "Read ahead value."),
    f(
        DR_INFO,
        S,
        "BlkDevName",
        16,
        "blkdevname",
        "Name of block device.",
    ),
    f(
        DR_INFO,
        S,
        "Stat",
        4,
        "attr",
        "(L)ive, (I)nactive, (s)uspended, (r)ead-only, read-(w)rite.",
    ),
    f(
        DR_INFO,
        S,
        "Tables",
        6,
        "tables_loaded",
        "Which of the live and inactive table slots are filled.",
    ),
    f(
        DR_INFO,
        S,
        "Suspended",
        9,
        "suspended",
        "Whether the device is suspended.",
    ),
    f(
        DR_INFO,
        S,
        "Read-only",
        9,
        "readonly",
        "Whether the device is read-only or writeable.",
    ),
    f(
        DR_INFO,
        S,
        "DevNo",
        5,
        "devno",
        "Device major and minor numbers",
    ),
    f(DR_INFO, N, "Maj", 3, "major", "Block device major number."),
    f(DR_INFO, N, "Min", 3, "minor", "Block device minor number."),
    f(
        DR_INFO,
        N,
        "Open",
        4,
        "open",
        "Number of references to open device, if requested.",
    ),
    f(
        DR_INFO,
        N,
        "Targ",
        4,
        "segments",
        "Number of segments in live table, if present.",
    ),
    f(
        DR_INFO,
        N,
        "Event",
        6,
        "events",
        "Number of most recent event.",
    ),
    f(
        DR_DEPS,
        N,
        "#Devs",
        5,
        "device_count",
        "Number of devices used by this one.",
    ),
    f(
        DR_TREE,
        S,
        "DevNamesUsed",
        16,
        "devs_used",
        "List of names of mapped devices used by this one.",
    ),
    f(
        DR_DEPS,
        S,
        "DevNosUsed",
        16,
        "devnos_used",
        "List of device numbers of devices used by this one.",
    ),
    f(
        DR_DEPS,
        S,
        "BlkDevNamesUsed",
        16,
        "blkdevs_used",
        "List of names of block devices used by this one.",
    ),
    f(
        DR_TREE,
        N,
        "#Refs",
        5,
        "device_ref_count",
        "Number of mapped devices referencing this one.",
    ),
    f(
        DR_TREE,
        S,
        "RefNames",
        8,
        "names_using_dev",
        "List of names of mapped devices using this one.",
    ),
    f(
        DR_TREE,
        S,
        "RefDevNos",
        9,
        "devnos_using_dev",
        "List of device numbers of mapped devices using this one.",
    ),
    f(
        DR_NAME,
        S,
        "Subsys",
        6,
        "subsystem",
        "Userspace subsystem responsible for this device.",
    ),
    f(DR_NAME, S, "VG", 4, "vg_name", "LVM Volume Group name."),
    f(DR_NAME, S, "LV", 4, "lv_name", "LVM Logical Volume name."),
    f(DR_NAME, S, "LVLayer", 7, "lv_layer", "LVM device layer."),
    f(
        DR_STATS,
        N,
        "#Reads",
        6,
        "read_count",
        "Count of reads completed.",
    ),
    f(
        DR_STATS,
        N,
        "#RdMrgs",
        7,
        "reads_merged_count",
        "Count of read requests merged.",
    ),
    f(
        DR_STATS,
        N,
        "#RdSectors",
        10,
        "read_sector_count",
        "Count of sectors read.",
    ),
    f(
        DR_STATS,
        N,
        "AccRdTime",
        11,
        "read_time",
        "Accumulated duration of all read requests (ns).",
    ),
    f(
        DR_STATS,
        N,
        "#Writes",
        7,
        "write_count",
        "Count of writes completed.",
    ),
    f(
        DR_STATS,
        N,
        "#WrMrgs",
        7,
        "writes_merged_count",
        "Count of write requests merged.",
    ),
    f(
        DR_STATS,
        N,
        "#WrSectors",
        10,
        "write_sector_count",
        "Count of sectors written.",
    ),
    f(
        DR_STATS,
        N,
        "AccWrTime",
        11,
        "write_time",
        "Accumulated duration of all writes (ns).",
    ),
    f(
        DR_STATS,
        N,
        "#InProg",
        7,
        "in_progress_count",
        "Count of requests currently in progress.",
    ),
    f(
        DR_STATS,
        N,
        "IoTicks",
        7,
        "io_ticks",
        "Nanoseconds spent servicing requests.",
    ),
    f(
        DR_STATS,
        N,
        "QueueTicks",
        10,
        "queue_ticks",
        "Total nanoseconds spent in queue.",
    ),
    f(
        DR_STATS,
        N,
        "RdTicks",
        7,
        "read_ticks",
        "Nanoseconds spent servicing reads.",
    ),
    f(
        DR_STATS,
        N,
        "WrTicks",
        7,
        "write_ticks",
        "Nanoseconds spent servicing writes.",
    ),
    f(
        DR_STATS,
        N,
        "RMrg/s",
        6,
        "reads_merged_per_sec",
        "Read requests merged per second.",
    ),
    f(
        DR_STATS,
        N,
        "WMrg/s",
        6,
        "writes_merged_per_sec",
        "Write requests merged per second.",
    ),
    f(DR_STATS, N, "R/s", 3, "reads_per_sec", "Reads per second."),
    f(
        DR_STATS,
        N,
        "W/s",
        3,
        "writes_per_sec",
        "Writes per second.",
    ),
    f(
        DR_STATS,
        N,
        "RSz/s",
        5,
        "read_size_per_sec",
        "Size of data read per second.",
    ),
    f(
        DR_STATS,
        N,
        "WSz/s",
        5,
        "write_size_per_sec",
        "Size of data written per second.",
    ),
    f(
        DR_STATS,
        N,
        "AvgRqSz",
        7,
        "avg_request_size",
        "Average request size.",
    ),
    f(DR_STATS, N, "QSize", 5, "queue_size", "Average queue size."),
    f(DR_STATS, N, "AWait", 5, "await", "Averate wait time."),
    f(
        DR_STATS,
        N,
        "RdAWait",
        7,
        "read_await",
        "Averate read wait time.",
    ),
    f(
        DR_STATS,
        N,
        "WrAWait",
        7,
        "write_await",
        "Averate write wait time.",
    ),
    f(DR_STATS, N, "Throughput", 10, "throughput", "Throughput."),
    f(DR_STATS, N, "SvcTm", 5, "service_time", "Service time."),
    f(DR_STATS, N, "Util%", 5, "util", "Utilization."),
    f(
        DR_STATS,
        S,
        "Histogram Counts",
        16,
        "hist_count",
        "Latency histogram counts.",
    ),
    f(
        DR_STATS,
        S,
        "Histogram Counts",
        16,
        "hist_count_bounds",
        "Latency histogram counts with bin boundaries.",
    ),
    f(
        DR_STATS,
        S,
        "Histogram Counts",
        16,
        "hist_count_ranges",
        "Latency histogram counts with bin ranges.",
    ),
    f(
        DR_STATS,
        S,
        "Histogram%",
        10,
        "hist_percent",
        "Relative latency histogram.",
    ),
    f(
        DR_STATS,
        S,
        "Histogram%",
        10,
        "hist_percent_bounds",
        "Relative latency histogram with bin boundaries.",
    ),
    f(
        DR_STATS,
        S,
        "Histogram%",
        10,
        "hist_percent_ranges",
        "Relative latency histogram with bin ranges.",
    ),
    f(
        DR_STATS,
        N,
        "IntervalNs",
        10,
        "interval_ns",
        "Sampling interval in nanoseconds.",
    ),
    f(DR_STATS, N, "Interval", 8, "interval", "Sampling interval."),
    f(DR_STATS_META, N, "RgID", 4, "region_id", "Region ID."),
    f(
        DR_STATS_META,
        Z,
        "RgStart",
        7,
        "region_start",
        "Region start.",
    ),
    f(
        DR_STATS_META,
        Z,
        "RgSize",
        6,
        "region_len",
        "Region length.",
    ),
    f(DR_STATS_META, N, "ArID", 4, "area_id", "Area ID."),
    f(
        DR_STATS_META,
        Z,
        "ArStart",
        7,
        "area_start",
        "Area offset from start of device.",
    ),
    f(DR_STATS_META, Z, "ArSize", 6, "area_len", "Area length."),
    f(
        DR_STATS_META,
        Z,
        "ArOff",
        5,
        "area_offset",
        "Area offset from start of region.",
    ),
    f(DR_STATS_META, N, "#Areas", 6, "area_count", "Area count."),
    f(DR_STATS_META, N, "GrpID", 5, "group_id", "Group ID."),
    f(DR_STATS_META, S, "ProgID", 6, "program_id", "Program ID."),
    f(
        DR_STATS_META,
        S,
        "UserData",
        8,
        "user_data",
        "Auxiliary data.",
    ),
    f(
        DR_STATS_META,
        S,
        "Precise",
        7,
        "precise",
        "Set if nanosecond precision counters are enabled.",
    ),
    f(
        DR_STATS_META,
        S,
        "#Bins",
        9,
        "hist_bins",
        "The number of histogram bins configured.",
    ),
    f(
        DR_STATS_META,
        S,
        "Histogram Bounds",
        16,
        "hist_bounds",
        "Latency histogram bin boundaries.",
    ),
    f(
        DR_STATS_META,
        S,
        "Histogram Ranges",
        16,
        "hist_ranges",
        "Latency histogram bin ranges.",
    ),
    f(
        DR_STATS_META,
        S,
        "Name",
        16,
        "stats_name",
        "Stats name of current object.",
    ),
    f(
        DR_STATS_META,
        S,
        "ObjType",
        7,
        "obj_type",
        "Type of stats object being reported.",
    ),
];

/// `VG-LV[-layer]` split of an LVM name (`dm_split_lvm_name`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SplitName {
    pub subsystem: String,
    pub vg: String,
    pub lv: String,
    pub layer: String,
}

/// One component: up to a single `-` (a doubled `--` is a literal `-`; a final `-` is kept).
fn unquote(s: &str) -> (String, &str) {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if i + 1 < b.len() && b[i] == b'-' {
            if b[i + 1] == b'-' {
                i += 1;
            } else {
                return (String::from_utf8_lossy(&out).into_owned(), &s[i + 1..]);
            }
        }
        out.push(b[i]);
        i += 1;
    }
    (String::from_utf8_lossy(&out).into_owned(), "")
}

impl SplitName {
    /// `subsystem` decides: only `LVM` names are split.
    pub fn new(subsystem: &str, name: &str) -> SplitName {
        let mut s = SplitName {
            subsystem: subsystem.to_string(),
            ..SplitName::default()
        };
        if subsystem == "LVM" {
            let (vg, rest) = unquote(name);
            let (lv, rest) = unquote(rest);
            let (layer, _) = unquote(rest);
            s.vg = vg;
            s.lv = lv;
            s.layer = layer;
        }
        s
    }
    /// For a device: the subsystem is the uuid prefix before the first `-`.
    pub fn for_device(uuid: &str, name: &str) -> SplitName {
        let sub = uuid.split_once('-').map(|(a, _)| a).unwrap_or("");
        SplitName::new(sub, name)
    }
}

/// What a row of `info -c` is made of.
pub struct InfoObj<'a> {
    pub info: Option<&'a DevInfo>,
    pub read_ahead: u32,
    pub deps: Option<&'a [Dep]>,
    pub tree: Option<(&'a DepTree, usize)>,
    pub split: Option<&'a SplitName>,
}

fn dep_blk(d: &Dep) -> String {
    match (&d.dm_name, d.devno) {
        (Some(_), Some((_, m))) => format!("dm-{m}"),
        (None, Some((a, b))) => tree::sysfs_name(a, b).unwrap_or_else(|| format!("{a}:{b}")),
        _ => d.id.clone(),
    }
}

fn dep_devno(d: &Dep) -> String {
    match d.devno {
        Some((a, b)) => format!("{a}:{b}"),
        None => d.id.clone(),
    }
}

impl Obj for InfoObj<'_> {
    fn value(&self, fld: usize) -> Value {
        let id = FIELDS[fld].id;
        let s = |v: &str| Value::Str(v.to_string());
        if let Some(sp) = self.split {
            match id {
                "subsystem" => return s(&sp.subsystem),
                "vg_name" => return s(&sp.vg),
                "lv_name" => return s(&sp.lv),
                "lv_layer" => return s(&sp.layer),
                _ => {}
            }
        }
        if let Some(deps) = self.deps {
            let join = |f: fn(&Dep) -> String| deps.iter().map(f).collect::<Vec<_>>().join(",");
            match id {
                "device_count" => return Value::num(deps.len() as i64),
                "devnos_used" => return Value::Str(join(dep_devno)),
                "blkdevs_used" => return Value::Str(join(dep_blk)),
                _ => {}
            }
        }
        if let Some((t, n)) = self.tree {
            let names = |inv: bool| {
                t.children(n, inv)
                    .iter()
                    .map(|&c| t.nodes[c].name.clone())
                    .filter(|x| !x.is_empty())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            match id {
                "devs_used" => return Value::Str(names(false)),
                "names_using_dev" => return Value::Str(names(true)),
                "device_ref_count" => return Value::num(t.num_children(n, true) as i64),
                "devnos_using_dev" => {
                    let v: Vec<String> = t
                        .children(n, true)
                        .iter()
                        .filter_map(|&c| t.nodes[c].devno)
                        .filter(|d| *d != (0, 0))
                        .map(|(a, b)| format!("{a}:{b}"))
                        .collect();
                    return Value::Str(v.join(","));
                }
                _ => {}
            }
        }
        let Some(i) = self.info else {
            return match FIELDS[fld].kind {
                Kind::Str => s(""),
                _ => Value::num(0),
            };
        };
        match id {
            "name" => s(&i.name),
            "unmangled_name" => s(&unmangled(&i.name)),
            "mangled_name" => s(&mangle::mangle(&i.name, mangle::Mode::Auto)),
            "uuid" => s(&i.uuid),
            "unmangled_uuid" => s(&unmangled(&i.uuid)),
            "mangled_uuid" => s(&mangle::mangle(&i.uuid, mangle::Mode::Auto)),
            "read_ahead" => Value::num(i64::from(self.read_ahead)),
            "blkdevname" => Value::Str(format!("dm-{}", i.minor)),
            "attr" => Value::Str(format!(
                "{}{}{}{}",
                if i.live_table { 'L' } else { '-' },
                if i.inactive_table { 'I' } else { '-' },
                if i.suspended { 's' } else { '-' },
                if i.read_only { 'r' } else { 'w' }
            )),
            "tables_loaded" => s(match (i.live_table, i.inactive_table) {
                (true, true) => "Both",
                (true, false) => "Live",
                (false, true) => "Inactive",
                (false, false) => "None",
            }),
            "suspended" => s(if i.suspended { "Suspended" } else { "Active" }),
            "readonly" => s(if i.read_only {
                "Read-only"
            } else {
                "Writeable"
            }),
            "devno" => Value::Str(format!("{}:{}", i.major, i.minor)),
            "major" => Value::num(i64::from(i.major)),
            "minor" => Value::num(i64::from(i.minor)),
            "open" => Value::num(i64::from(i.open_count)),
            "segments" => Value::num(i64::from(i.target_count)),
            "events" => Value::num(i64::from(i.event_nr)),
            _ => match FIELDS[fld].kind {
                Kind::Str => s(""),
                _ => Value::num(0),
            },
        }
    }
}

/// A name or uuid with any `\xNN` sequences decoded.
fn unmangled(s: &str) -> String {
    mangle::unmangle(s, "name", mangle::Mode::Hex).unwrap_or_else(|_| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvm_name_split() {
        let t = |n: &str| {
            let s = SplitName::new("LVM", n);
            (s.vg, s.lv, s.layer)
        };
        assert_eq!(
            t("vg--x-lv_tmeta-extra"),
            ("vg-x".into(), "lv_tmeta".into(), "extra".into())
        );
        assert_eq!(
            t("vg-lv-layer-x"),
            ("vg".into(), "lv".into(), "layer".into())
        );
        assert_eq!(t("novg"), ("novg".into(), "".into(), "".into()));
        assert_eq!(t("x--y-z-"), ("x-y".into(), "z-".into(), "".into()));
        assert_eq!(SplitName::new("c", "a-b").vg, "");
        assert_eq!(SplitName::for_device("LVM-abc", "vg-lv").lv, "lv");
    }
}
