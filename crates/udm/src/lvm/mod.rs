//! `udm lvm COMMAND` and the `lvm`, `pvs`, `lvcreate`, … links: lvm2's reports byte for
//! byte (`pvs`/`vgs`/`lvs` here, the `*display` long forms in [`display`]), and the commands
//! that change PVs, VGs and LVs ([`vgcmds`], [`lvcmds`]) and activate them through the
//! daemon ([`activate`]). Devices come from `--devices`, a devices file, or (for `pvs`) the
//! arguments — never from a scan of the host's disks. Reports do not consult activation
//! state, so the LV state and open columns show `X` (unknown), as lvm2 does without a
//! device-mapper driver.

mod activate;
mod attrs;
pub mod devices;
mod display;
mod fields;
mod lvcmds;
mod report;
mod session;
mod vgcmds;

use fields::{Ctx, Field, Obj, PvInfo};
use std::collections::BTreeMap;
use std::io::Write;
use udm_formats::lvm::{read_vg, scan_pv, Disk, LvmError, PvHeader, ReadVg};

/// lvm2's exit status for a command that failed.
const ECMD_FAILED: i32 = 5;
/// lvm2's exit status for a bad command line.
const EINVALID_CMD_LINE: i32 = 3;

const USAGE: &str = "\
Usage: udm lvm COMMAND [ARGS…]   (also as `lvm` and as links named after each command)
  reports:  pvs|vgs|lvs [-o [+]FIELD,…] [--units U] [--nosuffix] [--noheadings]
            [--separator S] [--reportformat basic|json] [-a] [--segments] [NAME…]
            pvdisplay|vgdisplay|lvdisplay [-a] [NAME…]
  PVs, VGs: pvcreate|pvremove DEV…; vgcreate [-s SIZE] VG PV…; vgextend|vgreduce VG PV…;
            vgremove [-f] VG…; vgrename OLD NEW; vgchange -a y|n [--activationmode partial] [VG…]
  LVs:      lvcreate -L SIZE|-l N[%VG|%FREE|%PVS|%ORIGIN] [-n NAME] [-i N [-I SIZE]]
            [--type linear|striped|snapshot] [-s VG/ORIGIN] [-a y|n] VG [PV…];
            lvremove|lvchange -a y|n VG/LV…; lvrename VG OLD NEW;
            lvextend|lvreduce|lvresize -L|-l [+|-]SIZE VG/LV
  common:   --devices PV[,PV…] (image files, block devices, /dev/mapper/NAME udm devices),
            --devicesfile FILE (default: lvm.devices in udm's state directory, kept by
            pvcreate/vgcreate), --config STRING (global{activation=0}: metadata only), -y, -f
";

/// The commands besides the reports (also the names the binary answers to).
pub const COMMANDS: &[&str] = &[
    "pvcreate",
    "pvremove",
    "vgcreate",
    "vgextend",
    "vgreduce",
    "vgremove",
    "vgrename",
    "vgchange",
    "lvcreate",
    "lvremove",
    "lvrename",
    "lvextend",
    "lvreduce",
    "lvresize",
    "lvchange",
    "pvdisplay",
    "vgdisplay",
    "lvdisplay",
];

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
    let cmd = if cmd == "lvm" { return main(args) } else { cmd };
    match cmd {
        "pvs" | "vgs" | "lvs" => match Opts::parse(args) {
            Ok(o) => report_cmd(cmd, &o, &mut out, &mut err),
            Err(m) => {
                let _ = writeln!(err, "  {m}");
                EINVALID_CMD_LINE
            }
        },
        c if COMMANDS.contains(&c) => match session::Cmdline::parse(c, args) {
            Ok(cl) => match c {
                "pvcreate" => vgcmds::pvcreate_cmd(&cl, &mut out, &mut err),
                "pvremove" => vgcmds::pvremove_cmd(&cl, &mut out, &mut err),
                "vgcreate" => vgcmds::vgcreate_cmd(&cl, &mut out, &mut err),
                "vgextend" => vgcmds::vgextend_cmd(&cl, &mut out, &mut err),
                "vgreduce" => vgcmds::vgreduce_cmd(&cl, &mut out, &mut err),
                "vgremove" => vgcmds::vgremove_cmd(&cl, &mut out, &mut err),
                "vgrename" => vgcmds::vgrename_cmd(&cl, &mut out, &mut err),
                "vgchange" => vgcmds::vgchange_cmd(&cl, &mut out, &mut err),
                "lvcreate" => lvcmds::lvcreate_cmd(&cl, &mut out, &mut err),
                "lvremove" => lvcmds::lvremove_cmd(&cl, &mut out, &mut err),
                "lvrename" => lvcmds::lvrename_cmd(&cl, &mut out, &mut err),
                "lvchange" => lvcmds::lvchange_cmd(&cl, &mut out, &mut err),
                "pvdisplay" | "vgdisplay" | "lvdisplay" => {
                    display::display_cmd(c, &cl, &mut out, &mut err)
                }
                _ => lvcmds::lvresize_cmd(c, &cl, &mut out, &mut err),
            },
            Err(m) => {
                let _ = writeln!(err, "  {m}");
                EINVALID_CMD_LINE
            }
        },
        _ => {
            let _ = writeln!(
                err,
                "  udm lvm: no such command '{cmd}' ({})",
                COMMANDS.join(", ")
            );
            EINVALID_CMD_LINE
        }
    }
}

#[derive(Default)]
struct Opts {
    devices: Vec<String>,
    devicesfile: Option<String>,
    options: Vec<String>,
    all: bool,
    segments: bool,
    names: Vec<String>,
    style: report::Style,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut o = Opts {
            style: report::Style {
                headings: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let (mut units, mut suffix) = (None, true);
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
                _ => (a.as_str(), None),
            };
            let mut val = |name: &str| -> Result<String, String> {
                match &inline {
                    Some(v) => Ok(v.clone()),
                    None => it.next().cloned().ok_or(format!("{name} needs a value")),
                }
            };
            match flag {
                "--devicesfile" => o.devicesfile = Some(val(flag)?),
                "--config" => {
                    val(flag)?;
                }
                "--devices" => o.devices.extend(
                    val(flag)?
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(String::from),
                ),
                "-o" | "--options" => o.options.push(val(flag)?),
                s if s.starts_with("-o") && s.len() > 2 => o.options.push(s[2..].to_string()),
                "--units" => units = Some(val(flag)?),
                "--nosuffix" => suffix = false,
                "--noheadings" => o.style.headings = false,
                "--separator" => o.style.separator = Some(val(flag)?),
                "--reportformat" => match val(flag)?.as_str() {
                    "json" => o.style.json = true,
                    "basic" => o.style.json = false,
                    f => return Err(format!("Invalid report format {f}")),
                },
                "-a" | "--all" => o.all = true,
                "--segments" => o.segments = true,
                s if s.starts_with('-') => return Err(format!("unrecognised option {s}")),
                s => o.names.push(s.to_string()),
            }
        }
        o.style.units = match units {
            None => report::Units {
                suffix,
                ..Default::default()
            },
            Some(u) => report::Units::parse(&u, suffix).ok_or(format!("Invalid units {u}"))?,
        };
        Ok(o)
    }
}

/// Everything read from the devices: labelled PVs and the VGs they make up.
struct Scan {
    /// Labelled devices (path, size in sectors, header) and the VG each names.
    pvs: Vec<(String, u64, PvHeader, Option<String>)>,
    /// Each VG with, per PV of the VG, its device path (`[unknown]` when missing).
    vgs: BTreeMap<String, (ReadVg, Vec<String>)>,
    failed: bool,
}

fn scan(devices: &[String], err: &mut dyn Write) -> Scan {
    let mut s = Scan {
        pvs: Vec::new(),
        vgs: BTreeMap::new(),
        failed: false,
    };
    let mut files: Vec<(String, Box<dyn Disk>, Option<String>)> = Vec::new();
    for d in devices {
        let f = match devices::open(d, false) {
            Ok(f) => f,
            Err(e) => {
                let _ = writeln!(err, "  Cannot use {d}: {e}");
                s.failed = true;
                continue;
            }
        };
        match scan_pv(&*f) {
            Ok(p) => {
                for w in &p.warnings {
                    let _ = writeln!(err, "  WARNING: {w}");
                }
                let size = f.size().unwrap_or(0) / 512;
                s.pvs
                    .push((d.clone(), size, p.header.clone(), p.vg.clone()));
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
        // PVs without metadata of their own (ignored or no areas) may belong to this VG.
        let group: Vec<&(String, Box<dyn Disk>, Option<String>)> = files
            .iter()
            .filter(|f| f.2.is_none() || f.2.as_deref() == Some(&name))
            .collect();
        let disks: Vec<&dyn Disk> = group.iter().map(|f| &*f.1).collect();
        match read_vg(&disks, Some(&name)) {
            Ok(r) => {
                for w in &r.warnings {
                    let _ = writeln!(err, "  WARNING: {w}");
                }
                for (pv, d) in r.metadata.vg.pvs.iter().zip(&r.pv_disks) {
                    if d.is_none() {
                        let _ =
                            writeln!(err, "  WARNING: Couldn't find device with uuid {}.", pv.id);
                        let _ = writeln!(
                            err,
                            "  WARNING: VG {name} is missing PV {} (last written to {}).",
                            pv.id,
                            pv.device.as_deref().unwrap_or("[unknown]")
                        );
                    }
                }
                let paths: Vec<String> = r
                    .pv_disks
                    .iter()
                    .map(|d| d.map_or("[unknown]".to_string(), |i| group[i].0.clone()))
                    .collect();
                for p in s.pvs.iter_mut().filter(|p| p.3.is_none()) {
                    if paths.contains(&p.0) {
                        p.3 = Some(name.clone());
                    }
                }
                s.vgs.insert(name, (r, paths));
            }
            Err(e) => {
                let _ = writeln!(err, "  Volume group \"{name}\" not found: {e}");
                s.failed = true;
            }
        }
    }
    s
}

/// The fields `-o` selects (`+` appends to the defaults), among those `cmd` reports.
fn select(cmd: &str, o: &Opts) -> Result<Vec<&'static Field>, String> {
    let (default, prefix, allowed): (&str, &str, &[Obj]) = match cmd {
        "pvs" => (
            "pv_name,vg_name,pv_fmt,pv_attr,pv_size,pv_free",
            "pv_",
            &[Obj::Pv, Obj::Vg],
        ),
        "vgs" => (
            "vg_name,pv_count,lv_count,snap_count,vg_attr,vg_size,vg_free",
            "vg_",
            &[Obj::Vg],
        ),
        _ if o.segments => (
            "lv_name,vg_name,lv_attr,stripes,segtype,seg_size",
            "lv_",
            &[Obj::Lv, Obj::Seg, Obj::Vg],
        ),
        _ => (
            "lv_name,vg_name,lv_attr,lv_size,pool_lv,origin,data_percent,metadata_percent,\
             move_pv,mirror_log,copy_percent,convert_lv",
            "lv_",
            &[Obj::Lv, Obj::Seg, Obj::Vg],
        ),
    };
    let mut names: Vec<String> = Vec::new();
    if o.options.is_empty() {
        names.extend(default.split(',').map(String::from));
    }
    for opt in &o.options {
        let list = match opt.strip_prefix('+') {
            Some(rest) => {
                if names.is_empty() {
                    names.extend(default.split(',').map(String::from));
                }
                rest
            }
            None => opt.as_str(),
        };
        names.extend(list.split(',').filter(|s| !s.is_empty()).map(String::from));
    }
    names
        .iter()
        .map(|n| fields::lookup(n, prefix, allowed).ok_or(format!("Unrecognised field: {n}")))
        .collect()
}

fn report_cmd(cmd: &str, o: &Opts, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let sel = match select(cmd, o) {
        Ok(f) => f,
        Err(m) => {
            let _ = writeln!(err, "  {m}");
            return EINVALID_CMD_LINE;
        }
    };
    let mut devices = if o.devices.is_empty() && cmd == "pvs" {
        o.names.clone()
    } else {
        o.devices.clone()
    };
    if devices.is_empty() {
        let file = o
            .devicesfile
            .as_ref()
            .map(std::path::PathBuf::from)
            .unwrap_or_else(devices::default_devices_file);
        devices = devices::read_devices_file(&file);
    }
    if devices.is_empty() {
        let _ = writeln!(
            err,
            "  No devices to read: name the PVs (image files or devices) with --devices."
        );
        return ECMD_FAILED;
    }
    let s = scan(&devices, err);
    let mut failed = s.failed;
    let infos: Vec<PvInfo> = s
        .pvs
        .iter()
        .map(|(path, size, header, _)| PvInfo {
            path,
            dev_size: *size,
            header,
        })
        .collect();
    let mut ctxs: Vec<Ctx> = Vec::new();
    let name = match cmd {
        "pvs" => {
            for n in &o.names {
                if !s.pvs.iter().any(|p| &p.0 == n) {
                    let _ = writeln!(err, "  Failed to find physical volume \"{n}\".");
                    failed = true;
                }
            }
            for (info, (path, _, header, vgname)) in infos.iter().zip(&s.pvs) {
                if !o.names.is_empty() && !o.names.contains(path) {
                    continue;
                }
                let vg = vgname.as_ref().and_then(|n| s.vgs.get(n));
                let pv =
                    vg.and_then(|v| v.0.metadata.vg.pvs.iter().find(|p| p.id == header.pv_uuid));
                ctxs.push(Ctx {
                    pv_dev: Some(info),
                    pv,
                    vg: vg.filter(|_| pv.is_some()).map(|v| &v.0),
                    ..Default::default()
                });
            }
            if o.names.is_empty() {
                for (r, paths) in s.vgs.values() {
                    for (pv, p) in r.metadata.vg.pvs.iter().zip(paths) {
                        if p == "[unknown]" {
                            ctxs.push(Ctx {
                                pv: Some(pv),
                                vg: Some(r),
                                ..Default::default()
                            });
                        }
                    }
                }
            }
            ctxs.sort_by_key(|c| c.pv_dev.map_or("[unknown]", |d| d.path));
            "pv"
        }
        "vgs" => {
            for n in &o.names {
                if !s.vgs.contains_key(n) {
                    let _ = writeln!(err, "  Volume group \"{n}\" not found");
                    failed = true;
                }
            }
            for (r, _) in s.vgs.values() {
                if o.names.is_empty() || o.names.contains(&r.metadata.vg.name) {
                    ctxs.push(Ctx {
                        vg: Some(r),
                        ..Default::default()
                    });
                }
            }
            "vg"
        }
        _ => {
            lv_ctxs(&s, o, &sel, &mut ctxs, err, &mut failed);
            if o.segments {
                "seg"
            } else {
                "lv"
            }
        }
    };
    let rows: Vec<Vec<fields::Val>> = ctxs
        .iter()
        .map(|c| sel.iter().map(|f| fields::value(f.id, c)).collect())
        .collect();
    if !rows.is_empty() || o.style.json {
        let _ = out.write_all(report::render(&sel, &rows, &o.style, name).as_bytes());
    }
    if failed {
        ECMD_FAILED
    } else {
        0
    }
}

/// lvs rows: LVs of each VG by name, one per segment when a segment field is shown.
fn lv_ctxs<'a>(
    s: &'a Scan,
    o: &Opts,
    sel: &[&Field],
    ctxs: &mut Vec<Ctx<'a>>,
    err: &mut dyn Write,
    failed: &mut bool,
) {
    for n in &o.names {
        let (vgn, lvn) = n
            .split_once('/')
            .map_or((n.as_str(), None), |(a, b)| (a, Some(b)));
        match (s.vgs.get(vgn), lvn) {
            (None, _) => {
                let _ = writeln!(err, "  Volume group \"{vgn}\" not found");
                *failed = true;
            }
            (Some((r, _)), Some(l)) if r.metadata.vg.lv(l).is_none() => {
                let _ = writeln!(err, "  Failed to find logical volume \"{n}\"");
                *failed = true;
            }
            _ => {}
        }
    }
    let per_seg = o.segments || sel.iter().any(|f| f.obj == Obj::Seg);
    for (r, paths) in s.vgs.values() {
        let vg = &r.metadata.vg;
        let wanted = |lv: &str| {
            o.names.is_empty()
                || o.names
                    .iter()
                    .any(|n| *n == vg.name || *n == format!("{}/{lv}", vg.name))
        };
        let mut lvs: Vec<_> = vg
            .lvs
            .iter()
            .filter(|l| attrs::seg_type(l) != "snapshot")
            .filter(|l| (o.all || attrs::shown(vg, l)) && wanted(&l.name))
            .collect();
        lvs.sort_by(|a, b| a.name.cmp(&b.name));
        for lv in lvs {
            let base = Ctx {
                vg: Some(r),
                lv: Some(lv),
                pv_paths: Some(paths),
                ..Default::default()
            };
            if per_seg {
                for seg in &lv.segments {
                    ctxs.push(Ctx {
                        seg: Some(seg),
                        ..base
                    });
                }
            } else {
                ctxs.push(base);
            }
        }
    }
}
