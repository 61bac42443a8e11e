//! `udm lvm pvs|vgs|lvs` and the `pvs`/`vgs`/`lvs` links: lvm2's default reports, byte for
//! byte, read from the devices or image files named by `--devices` (or, for `pvs`, its
//! arguments) — never from a scan of the host's disks. Activation state is not consulted
//! yet, so the LV state and open columns show `X` (unknown), as lvm2 does without a
//! device-mapper driver.

mod report;

use std::collections::BTreeMap;
use std::io::Write;
use udm_formats::lvm::ops::ImageFile;
use udm_formats::lvm::{read_vg, scan_pv, Disk, Lv, LvmError, ReadVg, Vg};

/// lvm2's exit status for a command that failed.
const ECMD_FAILED: i32 = 5;
/// lvm2's exit status for a bad command line.
const EINVALID_CMD_LINE: i32 = 3;

const USAGE: &str = "\
Usage: udm lvm pvs|vgs|lvs [--devices PV[,PV…]]… [--noheadings] [-a] [NAME…]
  (also as the `pvs`, `vgs` and `lvs` links). PVs are image files or block devices,
  listed with --devices; `pvs PV…` reads the PVs it names.
";

/// `udm lvm COMMAND ARGS…`.
pub fn main(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("--help" | "-h" | "help") | None => {
            print!("{USAGE}");
            if args.is_empty() {
                EINVALID_CMD_LINE
            } else {
                0
            }
        }
        Some(cmd) => run(cmd, &args[1..]),
    }
}

/// Run one lvm command (`pvs`, `vgs`, `lvs`) with its arguments.
pub fn run(cmd: &str, args: &[String]) -> i32 {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let (mut out, mut err) = (stdout.lock(), stderr.lock());
    match cmd {
        "pvs" | "vgs" | "lvs" => match Opts::parse(args) {
            Ok(o) => report_cmd(cmd, &o, &mut out, &mut err),
            Err(m) => {
                let _ = writeln!(err, "  {m}");
                EINVALID_CMD_LINE
            }
        },
        _ => {
            let _ = writeln!(err, "  udm lvm: no such command '{cmd}' (pvs, vgs, lvs)");
            EINVALID_CMD_LINE
        }
    }
}

#[derive(Default)]
struct Opts {
    devices: Vec<String>,
    noheadings: bool,
    all: bool,
    names: Vec<String>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut o = Opts::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--devices" => {
                    let v = it.next().ok_or("--devices needs a value")?;
                    o.devices
                        .extend(v.split(',').filter(|s| !s.is_empty()).map(String::from));
                }
                s if s.starts_with("--devices=") => o.devices.extend(
                    s["--devices=".len()..]
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(String::from),
                ),
                "--noheadings" => o.noheadings = true,
                "-a" | "--all" => o.all = true,
                s if s.starts_with('-') => return Err(format!("unrecognised option {s}")),
                s => o.names.push(s.to_string()),
            }
        }
        Ok(o)
    }
}

/// Everything read from the devices: labelled PVs and the VGs they make up.
struct Scan {
    /// (device path, device size in sectors, VG name) of every labelled device.
    pvs: Vec<(String, u64, Option<String>, udm_formats::lvm::LvmId)>,
    vgs: BTreeMap<String, ReadVg>,
    failed: bool,
}

fn scan(devices: &[String], err: &mut dyn Write) -> Scan {
    let mut s = Scan {
        pvs: Vec::new(),
        vgs: BTreeMap::new(),
        failed: false,
    };
    let mut files: Vec<(String, ImageFile, Option<String>)> = Vec::new();
    for d in devices {
        let f = match ImageFile::open(std::path::Path::new(d), false) {
            Ok(f) => f,
            Err(e) => {
                let _ = writeln!(err, "  Cannot use {d}: {e}");
                s.failed = true;
                continue;
            }
        };
        match scan_pv(&f) {
            Ok(p) => {
                for w in &p.warnings {
                    let _ = writeln!(err, "  WARNING: {w}");
                }
                let size = f.size().unwrap_or(0) / 512;
                s.pvs
                    .push((d.clone(), size, p.vg.clone(), p.header.pv_uuid));
                files.push((d.clone(), f, p.vg));
            }
            Err(LvmError::NoLabel) => {}
            Err(e) => {
                let _ = writeln!(err, "  WARNING: {d}: {e}");
                s.failed = true;
            }
        }
    }
    let names: std::collections::BTreeSet<String> =
        files.iter().filter_map(|f| f.2.clone()).collect();
    for name in names {
        let group: Vec<&dyn Disk> = files
            .iter()
            .filter(|f| f.2.as_deref() == Some(&name))
            .map(|f| &f.1 as &dyn Disk)
            .collect();
        match read_vg(&group, Some(&name)) {
            Ok(r) => {
                for w in &r.warnings {
                    let _ = writeln!(err, "  WARNING: {w}");
                }
                s.vgs.insert(name, r);
            }
            Err(e) => {
                let _ = writeln!(err, "  Volume group \"{name}\" not found: {e}");
                s.failed = true;
            }
        }
    }
    s
}

fn report_cmd(cmd: &str, o: &Opts, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let devices = if o.devices.is_empty() && cmd == "pvs" {
        o.names.clone()
    } else {
        o.devices.clone()
    };
    if devices.is_empty() {
        let _ = writeln!(
            err,
            "  No devices to read: name the PVs (image files or devices) with --devices."
        );
        return ECMD_FAILED;
    }
    let s = scan(&devices, err);
    let mut failed = s.failed;
    let (cols, rows): (&[report::Column], Vec<Vec<String>>) = match cmd {
        "pvs" => {
            for n in &o.names {
                if !s.pvs.iter().any(|p| &p.0 == n) {
                    let _ = writeln!(err, "  Failed to find physical volume \"{n}\".");
                    failed = true;
                }
            }
            (&report::PVS, pv_rows(&s, &o.names))
        }
        "vgs" => {
            for n in &o.names {
                if !s.vgs.contains_key(n) {
                    let _ = writeln!(err, "  Volume group \"{n}\" not found");
                    failed = true;
                }
            }
            (&report::VGS, vg_rows(&s, &o.names))
        }
        _ => (&report::LVS, lv_rows(&s, &o.names, o.all, err, &mut failed)),
    };
    if !rows.is_empty() {
        let _ = out.write_all(report::render(cols, &rows, !o.noheadings).as_bytes());
    }
    if failed {
        ECMD_FAILED
    } else {
        0
    }
}

fn free_extents(vg: &Vg, pv: &str) -> u64 {
    vg.free_runs(pv).iter().map(|r| r.1).sum()
}

fn pv_rows(s: &Scan, only: &[String]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for (path, size, vgname, id) in &s.pvs {
        if !only.is_empty() && !only.contains(path) {
            continue;
        }
        let vg = vgname
            .as_ref()
            .and_then(|n| s.vgs.get(n))
            .map(|r| &r.metadata.vg);
        let pv = vg.and_then(|v| v.pvs.iter().find(|p| p.id == *id));
        match (vg, pv) {
            (Some(vg), Some(pv)) => {
                let attr = format!(
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
                );
                rows.push(vec![
                    path.clone(),
                    vg.name.clone(),
                    "lvm2".into(),
                    attr,
                    report::size(pv.pe_count * vg.extent_size),
                    report::size(free_extents(vg, &pv.name) * vg.extent_size),
                ]);
            }
            _ => rows.push(vec![
                path.clone(),
                String::new(),
                "lvm2".into(),
                "---".into(),
                report::size(*size),
                report::size(*size),
            ]),
        }
    }
    if only.is_empty() {
        for r in s.vgs.values() {
            let vg = &r.metadata.vg;
            for (pv, disk) in vg.pvs.iter().zip(&r.pv_disks) {
                if disk.is_none() {
                    rows.push(vec![
                        "[unknown]".into(),
                        vg.name.clone(),
                        "lvm2".into(),
                        "a-m".into(),
                        report::size(pv.pe_count * vg.extent_size),
                        report::size(free_extents(vg, &pv.name) * vg.extent_size),
                    ]);
                }
            }
        }
    }
    rows.sort_by(|a, b| a[0].cmp(&b[0]));
    rows
}

fn vg_attr(r: &ReadVg) -> String {
    let vg = &r.metadata.vg;
    let has = |f: &str| vg.status.iter().any(|x| x == f);
    let alloc = vg
        .extra
        .iter()
        .find_map(|i| match i {
            udm_formats::lvm::Item::Pair { key, value, .. } if key == "allocation_policy" => {
                value.as_str().map(alloc_char)
            }
            _ => None,
        })
        .unwrap_or('n');
    let lock = vg
        .extra
        .iter()
        .any(|i| matches!(i, udm_formats::lvm::Item::Pair { key, .. } if key == "lock_type"));
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

fn vg_rows(s: &Scan, only: &[String]) -> Vec<Vec<String>> {
    s.vgs
        .values()
        .filter(|r| only.is_empty() || only.contains(&r.metadata.vg.name))
        .map(|r| {
            let vg = &r.metadata.vg;
            let total: u64 = vg.pvs.iter().map(|p| p.pe_count).sum();
            let snaps = vg.lvs.iter().filter(|l| seg_type(l) == "snapshot").count();
            vec![
                vg.name.clone(),
                vg.pvs.len().to_string(),
                vg.lvs.iter().filter(|l| l.visible()).count().to_string(),
                snaps.to_string(),
                vg_attr(r),
                report::size(total * vg.extent_size),
                report::size(vg.free_extents() * vg.extent_size),
            ]
        })
        .collect()
}

fn seg_type(lv: &Lv) -> &str {
    lv.segments
        .first()
        .map(|s| s.seg_type.as_str())
        .unwrap_or("")
}

fn seg_str<'a>(lv: &'a Lv, key: &str) -> Option<&'a str> {
    lv.segments
        .first()
        .and_then(|s| s.get(key))
        .and_then(|v| v.as_str())
}

/// lvm2's 10-character LV attribute string (state and open as `X`: not consulted).
fn lv_attr(vg: &Vg, lv: &Lv) -> String {
    let ty = seg_type(lv);
    let snapshot_of = |name: &str| {
        vg.lvs
            .iter()
            .any(|l| seg_type(l) == "snapshot" && seg_str(l, "cow_store") == Some(name))
    };
    let is_origin = vg
        .lvs
        .iter()
        .any(|l| seg_type(l) == "snapshot" && seg_str(l, "origin") == Some(&lv.name));
    let kind = match ty {
        "thin-pool" => 't',
        "thin" => 'V',
        "cache" | "cache-pool" => 'C',
        "mirror" => 'm',
        t if t.starts_with("raid") => 'r',
        _ if snapshot_of(&lv.name) => 's',
        _ if is_origin => 'o',
        _ if lv.name.ends_with("_tdata") || lv.name.contains("_cdata") => 'T',
        _ if lv.name.ends_with("_tmeta")
            || lv.name.ends_with("_pmspare")
            || lv.name.contains("_rmeta_") =>
        {
            'e'
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
            udm_formats::lvm::Item::Pair { key, value, .. } if key == "allocation_policy" => {
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
        's' | 'o' => 's',
        'm' => 'm',
        'r' => 'r',
        'C' => 'C',
        _ => '-',
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
        "{kind}{}{policy}{}XX{target}{}-{}",
        if has("WRITE") { 'w' } else { 'r' },
        if has("FIXED_MINOR") { 'm' } else { '-' },
        if zero { 'z' } else { '-' },
        if lv.flags.iter().any(|f| f == "ACTIVATION_SKIP") {
            'k'
        } else {
            '-'
        },
    )
}

/// True when lvm2 lists `lv` without `-a`: visible LVs, and a snapshot's COW store when its
/// `snapshotN` LV is visible (lvm2 shows the COW as the snapshot).
fn shown(vg: &Vg, lv: &Lv) -> bool {
    lv.visible()
        || vg.lvs.iter().any(|l| {
            seg_type(l) == "snapshot" && seg_str(l, "cow_store") == Some(&lv.name) && l.visible()
        })
}

fn lv_rows(
    s: &Scan,
    only: &[String],
    all: bool,
    err: &mut dyn Write,
    failed: &mut bool,
) -> Vec<Vec<String>> {
    for n in only {
        let (vgn, lvn) = n
            .split_once('/')
            .map_or((n.as_str(), None), |(a, b)| (a, Some(b)));
        match (s.vgs.get(vgn), lvn) {
            (None, _) => {
                let _ = writeln!(err, "  Volume group \"{vgn}\" not found");
                *failed = true;
            }
            (Some(r), Some(l)) if r.metadata.vg.lv(l).is_none() => {
                let _ = writeln!(err, "  Failed to find logical volume \"{n}\"");
                *failed = true;
            }
            _ => {}
        }
    }
    let wanted = |vg: &str, lv: &str| {
        only.is_empty() || only.iter().any(|n| n == vg || *n == format!("{vg}/{lv}"))
    };
    let mut rows = Vec::new();
    for r in s.vgs.values() {
        let vg = &r.metadata.vg;
        let mut lvs: Vec<&Lv> = vg
            .lvs
            .iter()
            .filter(|l| seg_type(l) != "snapshot")
            .filter(|l| (all || shown(vg, l)) && wanted(&vg.name, &l.name))
            .collect();
        lvs.sort_by(|a, b| a.name.cmp(&b.name));
        for lv in lvs {
            let name = if shown(vg, lv) {
                lv.name.clone()
            } else {
                format!("[{}]", lv.name)
            };
            let origin = vg
                .lvs
                .iter()
                .find(|l| seg_type(l) == "snapshot" && seg_str(l, "cow_store") == Some(&lv.name))
                .and_then(|l| seg_str(l, "origin"))
                .or_else(|| {
                    if seg_type(lv) == "thin" {
                        seg_str(lv, "origin")
                    } else {
                        None
                    }
                })
                .unwrap_or("");
            let pool = if seg_type(lv) == "thin" {
                seg_str(lv, "thin_pool")
            } else {
                None
            };
            let log = if seg_type(lv) == "mirror" {
                seg_str(lv, "mirror_log")
            } else {
                None
            };
            rows.push(vec![
                name,
                vg.name.clone(),
                lv_attr(vg, lv),
                report::size(lv.extents() * vg.extent_size),
                pool.unwrap_or("").into(),
                origin.into(),
                String::new(),
                String::new(),
                String::new(),
                log.map(|l| format!("[{l}]")).unwrap_or_default(),
                String::new(),
                String::new(),
            ]);
        }
    }
    rows
}
