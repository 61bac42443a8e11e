//! `pvs`, `vgs`, `lvs`: lvm2's reports byte for byte over `udm_report`'s engine, with the
//! fields of `udm_formats::lvm::report`. Devices come from `--devices`, a devices file, or
//! (for `pvs`) the arguments — never from a scan of the host's disks. Reports do not consult
//! activation state, so the LV state and open columns show `X` (unknown), as lvm2 does
//! without a device-mapper driver.

use crate::devices;
use crate::{ECMD_FAILED, EINVALID_CMD_LINE};
use std::collections::BTreeMap;
use std::io::Write;
use udm_formats::lvm::report::{fields, lookup, obj, Ctx, PvInfo, Units, FIELDS, TYPES};
use udm_formats::lvm::{read_vg, scan_pv, Disk, LvmError, PvHeader, ReadVg};
use udm_report::report::{FieldDef, Flags, Obj, Report, Value};

/// Output style: headings, separator (unaligned when set), JSON, units.
#[derive(Clone, Debug, Default)]
pub struct Style {
    pub headings: bool,
    pub separator: Option<String>,
    pub json: bool,
    pub units: Units,
}

/// A parsed `pvs`/`vgs`/`lvs` command line.
#[derive(Clone, Debug, Default)]
pub struct ReportOpts {
    pub devices: Vec<String>,
    pub devicesfile: Option<String>,
    /// `-o` lists as given (`+LIST` appends to the defaults).
    pub options: Vec<String>,
    /// `-S` selection.
    pub select: Option<String>,
    pub all: bool,
    pub segments: bool,
    pub names: Vec<String>,
    pub style: Style,
    /// `--config 'global{activation=0}'`: the no-driver form, as lvm2 prints it.
    pub noactivation: bool,
}

/// The daemon's devices of the VGs reported (None without a daemon or under
/// `activation=0`: the no-driver form).
pub(crate) fn live_devices(noactivation: bool) -> Option<udm_formats::lvm::report::live::Live> {
    use udm_proto::{DevSel, Reply, Request};
    if noactivation {
        return None;
    }
    let mut c = udm_proto::Client::connect(&udm_proto::default_socket()).ok()?;
    let Ok(Reply::List(devs)) = c.call(Request::List) else {
        return None;
    };
    let mut live = udm_formats::lvm::report::live::Live::new();
    for d in devs.into_iter().filter(|d| d.uuid.starts_with("LVM-")) {
        let (ttype, status) = match c.call(Request::Status {
            dev: DevSel::Name(d.name.clone()),
            inactive: false,
            table: false,
            noflush: true,
        }) {
            Ok(Reply::Status { targets, .. }) => targets
                .first()
                .map(|t| (t.ttype.clone(), t.params.clone()))
                .unwrap_or_default(),
            _ => Default::default(),
        };
        live.insert(
            d.name.clone(),
            udm_formats::lvm::report::live::DevLive {
                open: d.open_count.max(0) as u32,
                major: d.major,
                minor: d.minor,
                ttype,
                status,
            },
        );
    }
    Some(live)
}

/// Everything read from the devices: labelled PVs and the VGs they make up.
pub(crate) struct Scan {
    /// Labelled devices (path, size in sectors, header) and the VG each names.
    pub pvs: Vec<(String, u64, PvHeader, Option<String>)>,
    /// Each VG with, per PV of the VG, its device path (`[unknown]` when missing).
    pub vgs: BTreeMap<String, (ReadVg, Vec<String>)>,
    pub failed: bool,
}

pub(crate) fn scan(devices: &[String], err: &mut dyn Write) -> Scan {
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
fn select(cmd: &str, o: &ReportOpts) -> Result<Vec<&'static FieldDef>, String> {
    let (default, prefix, allowed): (&str, &str, u32) = match cmd {
        "pvs" => (
            "pv_name,vg_name,pv_fmt,pv_attr,pv_size,pv_free",
            "pv_",
            obj::PV | obj::VG,
        ),
        "vgs" => (
            "vg_name,pv_count,lv_count,snap_count,vg_attr,vg_size,vg_free",
            "vg_",
            obj::VG,
        ),
        _ if o.segments => (
            "lv_name,vg_name,lv_attr,stripes,segtype,seg_size",
            "lv_",
            obj::LV | obj::SEG | obj::VG,
        ),
        _ => (
            "lv_name,vg_name,lv_attr,lv_size,pool_lv,origin,data_percent,metadata_percent,\
             move_pv,mirror_log,copy_percent,convert_lv",
            "lv_",
            obj::LV | obj::SEG | obj::VG,
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
        .map(|n| lookup(n, prefix, allowed).ok_or(format!("Unrecognised field: {n}")))
        .collect()
}

pub fn report_cmd(cmd: &str, o: &ReportOpts, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
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
    let live = live_devices(o.noactivation);
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
            lv_ctxs(&s, live.as_ref(), o, &sel, &mut ctxs, err, &mut failed);
            if o.segments {
                "seg"
            } else {
                "lv"
            }
        }
    };
    match render(&sel, &ctxs, o, name) {
        Some(text) => {
            let _ = out.write_all(text.as_bytes());
        }
        None => return EINVALID_CMD_LINE,
    }
    if failed {
        ECMD_FAILED
    } else {
        0
    }
}

/// One report row: a field's value is `udm_formats`' for the row's objects, in the units asked.
struct Row<'a> {
    ctx: &'a Ctx<'a>,
    units: Units,
}

impl Obj for Row<'_> {
    fn value(&self, f: usize) -> Value {
        fields::value(FIELDS[f].id, self.ctx).to_value(self.units)
    }
}

/// The report text for `ctxs` (already in lvm2's order), every line indented by two spaces
/// as lvm2 prints it; `None` when the selection does not parse.
fn render(sel: &[&FieldDef], ctxs: &[Ctx], o: &ReportOpts, name: &str) -> Option<String> {
    let st = &o.style;
    let flags = Flags {
        aligned: st.separator.is_none(),
        headings: st.headings,
        separator: st.separator.clone().unwrap_or_else(|| " ".into()),
        quoted: false,
        ..Flags::default()
    };
    let ids: Vec<&str> = sel.iter().map(|f| f.id).collect();
    let types = sel.iter().fold(0, |t, f| t | f.ty);
    let mut r = Report::new(
        FIELDS,
        TYPES,
        types,
        &ids.join(","),
        "",
        flags,
        o.select.as_deref(),
    )?;
    for c in ctxs {
        r.object(
            &Row {
                ctx: c,
                units: st.units,
            },
            true,
        );
    }
    let text = if st.json {
        r.render_json(name)
    } else {
        r.render()
    };
    Some(text.lines().map(|l| format!("  {l}\n")).collect())
}

/// lvs rows: LVs of each VG by name, one per segment when a segment field is shown.
fn lv_ctxs<'a>(
    s: &'a Scan,
    live: Option<&'a udm_formats::lvm::report::live::Live>,
    o: &ReportOpts,
    sel: &[&FieldDef],
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
    let per_seg = o.segments || sel.iter().any(|f| f.ty == obj::SEG);
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
            .filter(|l| udm_formats::lvm::report::attrs::seg_type(l) != "snapshot")
            .filter(|l| (o.all || udm_formats::lvm::report::attrs::shown(vg, l)) && wanted(&l.name))
            .collect();
        lvs.sort_by(|a, b| a.name.cmp(&b.name));
        for lv in lvs {
            let base = Ctx {
                vg: Some(r),
                lv: Some(lv),
                pv_paths: Some(paths),
                live,
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
