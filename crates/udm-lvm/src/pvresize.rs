//! `pvresize [--setphysicalvolumesize SIZE] PV…`: a PV takes its device's size (or the one
//! given). In a VG the PV's `dev_size` and `pe_count` change as lvm2 computes them (the size
//! less the data start, whole extents) and the VG is written; allocated extents past the new
//! end are refused. A PV in no VG has its label's device size rewritten.

use crate::session::{commit, confirm, find_vg_rw, long_size, scan, Cmdline};
use crate::{devices, ECMD_FAILED, EINVALID_CMD_LINE};
use std::io::Write;
use udm_formats::lvm::edit::{parse_size, Sign, SizeArg};
use udm_formats::lvm::PvHeader;

/// Resize one PV (`shown` as typed, `dev` canonical) to `new` sectors (None: its device's).
fn resize_one(
    cl: &Cmdline,
    dev: &str,
    shown: &str,
    new: Option<u64>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), String> {
    let mut devs = cl.devices();
    if !devs.iter().any(|d| d == dev) {
        devs.push(dev.to_string());
    }
    let mut found = scan(&devs, true, err);
    let i = found
        .iter()
        .position(|f| f.path == dev)
        .ok_or_else(|| format!("Failed to find physical volume \"{shown}\"."))?;
    let real = found[i].disk.size().map_err(|e| e.to_string())? / 512;
    let size = match new {
        Some(n) if n > real => {
            let _ = writeln!(
                err,
                "  WARNING: {shown}: Overriding real size {}. You could lose data.",
                long_size(real)
            );
            let q = format!(
                "{shown}: Requested size {} exceeds real size {}. Proceed? ",
                long_size(n),
                long_size(real)
            );
            if !confirm(out, &q, cl.yes()) {
                return Err(format!("Physical Volume {shown} not resized."));
            }
            n
        }
        Some(n) if n < real => {
            let q = format!(
                "{shown}: Requested size {} is less than real size {}. Proceed? ",
                long_size(n),
                long_size(real)
            );
            if !confirm(out, &q, cl.yes()) {
                return Err(format!("Physical Volume {shown} not resized."));
            }
            let _ = writeln!(
                err,
                "  WARNING: {shown}: Pretending size is {n} not {real} sectors."
            );
            n
        }
        _ => real,
    };
    let Some(vgname) = found[i].vg.clone() else {
        // In no VG: only the label's device size changes.
        let hdr = PvHeader {
            device_size: size * 512,
            ..found[i].header.clone()
        };
        let label = hdr.encode().map_err(|e| e.to_string())?;
        let disk = &mut found[i].disk;
        return disk
            .write_at(hdr.label_sector * 512, &label)
            .and_then(|_| disk.flush())
            .map_err(|e| format!("Failed to store physical volume \"{shown}\": {e}"));
    };
    let h = find_vg_rw(&found, &vgname)?;
    if found[i].header.metadata_areas.len() > 1 {
        return Err(format!(
            "{shown}: resizing a PV with a metadata area at its end is not supported."
        ));
    }
    let mut vg = h.meta.vg.clone();
    let es = vg.extent_size;
    let uuid = found[i].header.pv_uuid;
    let pvi = vg
        .pvs
        .iter()
        .position(|p| p.id == uuid)
        .ok_or_else(|| format!("{shown}: not in the metadata of VG {vgname}"))?;
    let pe_start = vg.pvs[pvi].pe_start;
    if size < pe_start {
        return Err(format!(
            "Size must exceed physical extent start of {pe_start} sectors on PV {shown}."
        ));
    }
    let dev_size = size - pe_start;
    let new_pe = dev_size / es;
    if new_pe == 0 {
        return Err(format!(
            "Size must leave space for at least one physical extent of {es} sectors on PV {shown}."
        ));
    }
    let name = vg.pvs[pvi].name.clone();
    let old_pe = vg.pvs[pvi].pe_count;
    if new_pe < old_pe {
        let free: u64 = vg.free_runs(&name).iter().map(|r| r.1).sum();
        let alloc = old_pe - free;
        if new_pe < alloc {
            return Err(format!(
                "{shown}: cannot resize to {new_pe} extents as {alloc} are allocated."
            ));
        }
        // Every extent from the new end on must be free.
        let tail_free = vg
            .free_runs(&name)
            .iter()
            .any(|&(start, n)| start <= new_pe && start + n >= old_pe);
        if !tail_free {
            return Err(format!(
                "{shown}: cannot resize to {new_pe} extents as later ones are allocated."
            ));
        }
    }
    vg.pvs[pvi].pe_count = new_pe;
    vg.pvs[pvi].dev_size = dev_size;
    commit(&mut found, &h.slots, vg, cl)
}

/// `pvresize [--setphysicalvolumesize SIZE] [-y] PV…`.
pub fn pvresize_cmd(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    if cl.pos.is_empty() {
        let _ = writeln!(err, "  Please supply physical volume(s)");
        return EINVALID_CMD_LINE;
    }
    let new = match cl.val("--setphysicalvolumesize").map(parse_size) {
        None => None,
        Some(Ok(SizeArg::Sectors(Sign::Minus, _))) => {
            let _ = writeln!(err, "  Physical volume size may not be negative");
            return EINVALID_CMD_LINE;
        }
        Some(Ok(SizeArg::Sectors(_, s))) => Some(s),
        Some(_) => {
            let _ = writeln!(err, "  Invalid argument for --setphysicalvolumesize");
            return EINVALID_CMD_LINE;
        }
    };
    let (mut done, mut rc) = (0, 0);
    for p in &cl.pos {
        match resize_one(cl, &devices::canonical(p), p, new, out, err) {
            Ok(()) => {
                let _ = writeln!(out, "  Physical volume \"{p}\" changed");
                done += 1;
            }
            Err(m) => {
                let _ = writeln!(err, "  {m}");
                rc = ECMD_FAILED;
            }
        }
    }
    let _ = writeln!(
        out,
        "  {done} physical volume(s) resized or updated / {} physical volume(s) not resized",
        cl.pos.len() - done
    );
    rc
}
