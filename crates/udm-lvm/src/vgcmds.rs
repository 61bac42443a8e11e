//! `pvcreate pvremove vgcreate vgextend vgreduce vgremove vgrename vgchange`: lvm2's
//! arguments and messages; every check happens before the first write.

use crate::activate;
use crate::devices;
use crate::fail;
use crate::session::{commit, confirm, find_vg, find_vg_rw, scan, Cmdline, Found};
use crate::ECMD_FAILED;
use std::io::Write;
use udm_formats::lvm::edit::{parse_size, SizeArg};
use udm_formats::lvm::{pvcreate, PvcreateOptions, Vg};

/// `pvcreate DEV…`: label each device; devices already in a VG are refused.
pub fn pvcreate_cmd(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    if cl.pos.is_empty() {
        return fail(err, "Please enter a physical volume path.");
    }
    let mut opts = PvcreateOptions::default();
    if let Some(m) = cl.val("--metadatacopies") {
        match m.parse() {
            Ok(n) => opts.metadata_copies = n,
            Err(_) => return fail(err, &format!("Invalid argument for --metadatacopies: {m}")),
        }
    }
    if let Some(a) = cl.val("--dataalignment") {
        match parse_size(a) {
            Ok(SizeArg::Sectors(_, s)) => opts.data_offset = (s * 512).max(1 << 20),
            _ => return fail(err, &format!("Invalid argument for --dataalignment: {a}")),
        }
    }
    if let Some(u) = cl.val("-u") {
        match u.parse() {
            Ok(id) => opts.uuid = Some(id),
            Err(_) => return fail(err, &format!("Invalid argument for --uuid: {u}")),
        }
    }
    let devs: Vec<String> = cl.pos.iter().map(|d| devices::canonical(d)).collect();
    // Check every device first.
    let mut disks = Vec::new();
    for (d, shown) in devs.iter().zip(&cl.pos) {
        let disk = match devices::open(d, true) {
            Ok(x) => x,
            Err(e) => return fail(err, &format!("Cannot use {shown}: {e}")),
        };
        if let Ok(p) = udm_formats::lvm::scan_pv(&*disk) {
            if let Some(vg) = p.vg {
                if !cl.flag("-f") || cl.flags.iter().filter(|f| *f == "-f").count() < 2 {
                    return fail(
                        err,
                        &format!(
                            "Can't initialize physical volume \"{shown}\" of volume group \"{vg}\" without -ff"
                        ),
                    );
                }
            }
        }
        let size = disk.size().unwrap_or(0);
        let need = opts.data_offset + (1 << 20);
        if size < need {
            return fail(
                err,
                &format!(
                    "Cannot use {shown}: device is too small (< {}).",
                    need / 1024
                ),
            );
        }
        disks.push(disk);
    }
    for (mut disk, shown) in disks.into_iter().zip(&cl.pos) {
        if let Err(e) = pvcreate(&mut *disk, &opts) {
            return fail(
                err,
                &format!("Failed to setup physical volume \"{shown}\": {e}"),
            );
        }
        let _ = writeln!(out, "  Physical volume \"{shown}\" successfully created.");
    }
    if cl.val("--devices").is_none() {
        let _ = devices::update_devices_file(&cl.devices_file(), &devs, &[]);
    }
    0
}

/// `pvremove DEV…`: wipe the labels of PVs in no VG.
pub fn pvremove_cmd(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let devs: Vec<String> = cl.pos.iter().map(|d| devices::canonical(d)).collect();
    let found = scan(&devs, true, err);
    for (d, shown) in devs.iter().zip(&cl.pos) {
        let Some(f) = found.iter().find(|f| &f.path == d) else {
            return fail(err, &format!("No PV found on device {shown}."));
        };
        if let Some(vg) = &f.vg {
            return fail(
                err,
                &format!(
                    "PV {shown} is used by VG {vg} so please use vgreduce first.\n  (If you are certain you need pvremove, then confirm by using --force twice.)"
                ),
            );
        }
    }
    for (mut f, shown) in found.into_iter().zip(&cl.pos) {
        let at = f.header.label_sector * 512;
        if let Err(e) = f
            .disk
            .write_at(at, &[0u8; 512])
            .and_then(|_| f.disk.flush())
        {
            return fail(err, &format!("Failed to wipe {shown}: {e}"));
        }
        let _ = writeln!(
            out,
            "  Labels on physical volume \"{shown}\" successfully wiped."
        );
    }
    if cl.val("--devices").is_none() {
        let _ = devices::update_devices_file(&cl.devices_file(), &[], &devs);
    }
    0
}

/// The named devices among `found` that are labelled PVs in no VG.
fn orphans(found: &[Found], names: &[String], err: &mut dyn Write) -> Result<Vec<usize>, i32> {
    let mut idx = Vec::new();
    for n in names {
        let d = devices::canonical(n);
        match found.iter().position(|f| f.path == d) {
            None => return Err(fail(err, &format!("No device found for {n}."))),
            Some(i) if found[i].vg.is_some() => {
                return Err(fail(
                    err,
                    &format!(
                        "Physical volume '{n}' is already in volume group '{}'",
                        found[i].vg.as_deref().unwrap_or("")
                    ),
                ))
            }
            Some(i) => idx.push(i),
        }
    }
    Ok(idx)
}

/// All devices this command reads: the configured ones plus the ones named.
fn with_named(cl: &Cmdline, named: &[String]) -> Vec<String> {
    let mut devs = cl.devices();
    for n in named {
        let c = devices::canonical(n);
        if !devs.contains(&c) {
            devs.push(c);
        }
    }
    devs
}

/// `vgcreate [-s SIZE] VG PV…` (unlabelled devices are made PVs first, as lvm2 does).
pub fn vgcreate_cmd(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let Some((name, pvs)) = cl.pos.split_first() else {
        return fail(err, "Please provide volume group name and physical volumes");
    };
    if pvs.is_empty() {
        return fail(err, "Please enter physical volume name(s)");
    }
    let extent = match cl.val("-s").map(parse_size) {
        None => 8192,
        Some(Ok(SizeArg::Sectors(_, s))) => s,
        Some(_) => return fail(err, "Invalid argument for --physicalextentsize"),
    };
    let devs = with_named(cl, pvs);
    let mut found = scan(&devs, true, err);
    if found.iter().any(|f| f.vg.as_deref() == Some(name)) {
        return fail(
            err,
            &format!("A volume group called {name} already exists."),
        );
    }
    // Unlabelled named devices become PVs (lvm2 does this implicitly).
    let mut fresh = Vec::new();
    for p in pvs {
        let c = devices::canonical(p);
        if !found.iter().any(|f| f.path == c) {
            fresh.push(p.clone());
        }
    }
    if !fresh.is_empty() {
        let sub = Cmdline {
            pos: fresh,
            vals: cl.vals.clone(),
            ..Default::default()
        };
        let r = pvcreate_cmd(&sub, out, err);
        if r != 0 {
            return r;
        }
        found = scan(&devs, true, err);
    }
    let idx = match orphans(&found, pvs, err) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let hdrs: Vec<_> = idx
        .iter()
        .map(|&i| (found[i].header.clone(), Some(found[i].path.clone())))
        .collect();
    let vg = match Vg::create(name, extent, &hdrs) {
        Ok(v) => v,
        Err(e) => return fail(err, &e.to_string()),
    };
    let mut vg = vg;
    vg.seqno = 0;
    let slots: Vec<Option<usize>> = idx.iter().map(|&i| Some(i)).collect();
    if let Err(m) = commit(&mut found, &slots, vg, cl) {
        return fail(err, &m);
    }
    if cl.val("--devices").is_none() {
        let add: Vec<String> = idx.iter().map(|&i| found[i].path.clone()).collect();
        let _ = devices::update_devices_file(&cl.devices_file(), &add, &[]);
    }
    let _ = writeln!(out, "  Volume group \"{name}\" successfully created");
    0
}

/// `vgextend VG PV…`.
pub fn vgextend_cmd(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let Some((name, pvs)) = cl.pos.split_first() else {
        return fail(err, "Please enter volume group name and physical volume(s)");
    };
    let devs = with_named(cl, pvs);
    let mut found = scan(&devs, true, err);
    let h = match find_vg_rw(&found, name) {
        Ok(h) => h,
        Err(m) => return fail(err, &m),
    };
    let idx = match orphans(&found, pvs, err) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let mut vg = h.meta.vg.clone();
    let hdrs: Vec<_> = idx
        .iter()
        .map(|&i| (found[i].header.clone(), Some(found[i].path.clone())))
        .collect();
    if let Err(e) = vg.add_pvs(&hdrs) {
        return fail(err, &e.to_string());
    }
    let mut slots = h.slots.clone();
    slots.extend(idx.iter().map(|&i| Some(i)));
    if let Err(m) = commit(&mut found, &slots, vg, cl) {
        return fail(err, &m);
    }
    let _ = writeln!(out, "  Volume group \"{name}\" successfully extended");
    0
}

/// `vgreduce VG PV…`: the PVs must hold no extents; their metadata is cleared.
pub fn vgreduce_cmd(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let Some((name, pvs)) = cl.pos.split_first() else {
        return fail(
            err,
            "Please give volume group name and physical volume paths",
        );
    };
    let devs = with_named(cl, pvs);
    let mut found = scan(&devs, true, err);
    let h = match find_vg_rw(&found, name) {
        Ok(h) => h,
        Err(m) => return fail(err, &m),
    };
    let mut vg = h.meta.vg.clone();
    let mut slots = h.slots.clone();
    let mut gone = Vec::new();
    for p in pvs {
        let c = devices::canonical(p);
        let Some(fi) = found.iter().position(|f| f.path == c) else {
            return fail(err, &format!("Failed to find physical volume \"{p}\"."));
        };
        let id = found[fi].header.pv_uuid;
        let Some(vi) = vg.pvs.iter().position(|x| x.id == id) else {
            return fail(
                err,
                &format!("Physical volume \"{p}\" not in volume group \"{name}\"."),
            );
        };
        if let Err(e) = vg.remove_pv(&id) {
            return fail(err, &e.to_string());
        }
        slots.remove(vi);
        gone.push((fi, p.clone()));
    }
    if let Err(m) = commit(&mut found, &slots, vg, cl) {
        return fail(err, &m);
    }
    for (fi, p) in gone {
        // The removed PV becomes an orphan: a fresh empty metadata area (same uuid).
        let f = &mut found[fi];
        let opts = udm_formats::lvm::PvcreateOptions {
            uuid: Some(f.header.pv_uuid),
            data_offset: f.header.data_areas.first().map_or(1 << 20, |d| d.offset),
            metadata_copies: f.header.metadata_areas.len().max(1) as u32,
        };
        if let Err(e) = pvcreate(&mut *f.disk, &opts) {
            return fail(err, &format!("Failed to clear {p}: {e}"));
        }
        let _ = writeln!(out, "  Removed \"{p}\" from volume group \"{name}\"");
    }
    0
}

/// `vgremove [-f] VG…`: its LVs go first (asked unless -f/-y); active ones are refused.
pub fn vgremove_cmd(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let devs = cl.devices();
    let mut found = scan(&devs, true, err);
    let mut rc = 0;
    for name in &cl.pos {
        let h = match find_vg(&found, name) {
            Ok(h) => h,
            Err(m) => {
                rc = fail(err, &m);
                continue;
            }
        };
        let vg = &h.meta.vg;
        let lvs = udm_formats::lvm::report::attrs::counted(vg);
        if lvs > 0 {
            let q = format!(
                "Do you really want to remove volume group \"{name}\" containing {lvs} logical volumes?"
            );
            if !confirm(out, &q, cl.yes()) {
                let _ = writeln!(err, "  Volume group \"{name}\" not removed");
                rc = ECMD_FAILED;
                continue;
            }
        }
        if cl.activation() {
            // Active LVs are deactivated first (snapshots before their origins).
            let mut active = activate::active_lvs(vg);
            active.reverse();
            let down = active
                .iter()
                .all(|lv| activate::change_vg(cl, &h, &found, false, Some(lv), out, err) == 0);
            if !down {
                rc = fail(err, &format!("Volume group \"{name}\" not removed"));
                continue;
            }
        }
        if h.missing() {
            rc = fail(
                err,
                &format!("Cannot change VG {name} while PVs are missing."),
            );
            continue;
        }
        for lv in vg.lvs.iter().filter(|l| {
            udm_formats::lvm::report::attrs::seg_type(l) != "snapshot"
                && udm_formats::lvm::report::attrs::shown(vg, l)
        }) {
            let _ = writeln!(
                out,
                "  Logical volume \"{}\" successfully removed.",
                lv.name
            );
        }
        for i in h.slots.iter().flatten() {
            let f = &mut found[*i];
            let opts = udm_formats::lvm::PvcreateOptions {
                uuid: Some(f.header.pv_uuid),
                data_offset: f.header.data_areas.first().map_or(1 << 20, |d| d.offset),
                metadata_copies: f.header.metadata_areas.len().max(1) as u32,
            };
            if let Err(e) = pvcreate(&mut *f.disk, &opts) {
                return fail(err, &format!("Failed to remove VG {name}: {e}"));
            }
        }
        let _ = writeln!(out, "  Volume group \"{name}\" successfully removed");
    }
    rc
}

/// `vgrename OLD NEW`.
pub fn vgrename_cmd(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let [old, new] = &cl.pos[..] else {
        return fail(err, "Old and new volume group names need specifying");
    };
    if !udm_formats::lvm::build::valid_name(new) {
        return fail(err, &format!("New volume group name \"{new}\" is invalid"));
    }
    let mut found = scan(&cl.devices(), true, err);
    if found.iter().any(|f| f.vg.as_deref() == Some(new)) {
        return fail(err, &format!("New volume group \"{new}\" already exists"));
    }
    let h = match find_vg_rw(&found, old) {
        Ok(h) => h,
        Err(m) => return fail(err, &m),
    };
    if cl.activation() && !activate::active_lvs(&h.meta.vg).is_empty() {
        return fail(err, &format!("Volume group \"{old}\" still has active LVs"));
    }
    let mut vg = h.meta.vg.clone();
    vg.name = new.clone();
    if let Err(m) = commit(&mut found, &h.slots, vg, cl) {
        return fail(err, &m);
    }
    let _ = writeln!(
        out,
        "  Volume group \"{old}\" successfully renamed to \"{new}\""
    );
    0
}

/// `vgchange -a y|n [--activationmode partial] [VG…]`.
pub fn vgchange_cmd(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let Some(a) = cl.val("-a") else {
        return fail(err, "Need one or more command options.");
    };
    let on = match a {
        "y" | "ay" | "ey" | "ly" | "sy" => true,
        "n" | "an" | "en" | "ln" | "sn" => false,
        _ => return fail(err, &format!("Invalid argument for --activate: {a}")),
    };
    let found = scan(&cl.devices(), false, err);
    let mut names: Vec<String> = if cl.pos.is_empty() {
        found.iter().filter_map(|f| f.vg.clone()).collect()
    } else {
        cl.pos.clone()
    };
    names.sort();
    names.dedup();
    let mut rc = 0;
    for name in names {
        let h = match find_vg(&found, &name) {
            Ok(h) => h,
            Err(m) => {
                rc = fail(err, &m);
                continue;
            }
        };
        let r = activate::change_vg(cl, &h, &found, on, None, out, err);
        if r != 0 {
            rc = r;
        }
    }
    rc
}
