//! `pvscan`, `vgscan`, `lvscan`, `vgck`: lvm2's listings of what the devices hold, in lvm2's
//! order (VGs by name, their PVs and LVs in metadata order, PVs in no VG last) and words.
//! `lvscan` shows an LV `ACTIVE` when its device exists in the udm daemon.

use crate::session::{find_vg, long_size, scan, Cmdline, Found, VgHandle};
use crate::{activate, ECMD_FAILED, EINVALID_CMD_LINE};
use std::io::Write;
use udm_formats::lvm::report::attrs;
use udm_formats::lvm::Item;

/// The VGs found, by name, each read (or why it could not be).
fn vgs(found: &[Found]) -> Vec<(String, Result<VgHandle, String>)> {
    let mut names: Vec<String> = found.iter().filter_map(|f| f.vg.clone()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| {
            let h = find_vg(found, &n);
            (n, h)
        })
        .collect()
}

/// `pvscan [-s] [-e|-n] [-u]`.
pub fn pvscan_cmd(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    if cl.flag("--cache") {
        return pvscan_cache(cl, out, err);
    }
    let (exported, novg) = (cl.flag("--exported"), cl.flag("--novolumegroup"));
    if exported && novg {
        let _ = writeln!(err, "  Options -e and -n are incompatible");
        return EINVALID_CMD_LINE;
    }
    if exported || novg {
        let _ = writeln!(
            err,
            "  WARNING: Only considering physical volumes {}.",
            if exported {
                "of exported volume group(s)"
            } else {
                "in no volume group"
            }
        );
    }
    let found = scan(&cl.devices(), false, err);
    let vgs = vgs(&found);
    // lvm2 pads to the longest device and VG name (its orphan VG `#orphans_lvm2` counts).
    let pv_w = found.iter().map(|f| f.path.len()).max().unwrap_or(0) + 2;
    let vg_w = vgs.iter().map(|v| v.0.len()).chain([13]).max().unwrap_or(0) + 2;
    let uuid_w = pv_w + 50;
    let name = |f: &Found| -> (String, usize) {
        if cl.flag("-u") {
            let n = format!(
                "{:<w$} with UUID {}",
                f.path,
                f.header.pv_uuid,
                w = pv_w - 2
            );
            (n, uuid_w)
        } else {
            (f.path.clone(), pv_w)
        }
    };
    let (mut n, mut n_new, mut total, mut total_new) = (0u64, 0u64, 0u64, 0u64);
    let mut text = String::new();
    let mut line = |f: &Found, body: String| {
        if cl.flag("--short") {
            text.push_str(&format!("  {}\n", f.path));
        } else {
            let (shown, w) = name(f);
            text.push_str(&format!("  PV {shown:<w$}{body}\n"));
        }
    };
    let mut rc = 0;
    for (vgname, h) in &vgs {
        let h = match h {
            Ok(h) => h,
            Err(m) => {
                let _ = writeln!(err, "  {m}");
                rc = ECMD_FAILED;
                continue;
            }
        };
        let vg = &h.meta.vg;
        let is_exported = vg.status.iter().any(|s| s == "EXPORTED");
        if novg || (exported && !is_exported) {
            continue;
        }
        for (pv, slot) in vg.pvs.iter().zip(&h.slots) {
            let Some(f) = slot.map(|i| &found[i]) else {
                continue;
            };
            let size = pv.pe_count * vg.extent_size;
            let free: u64 =
                vg.free_runs(&pv.name).iter().map(|r| r.1).sum::<u64>() * vg.extent_size;
            n += 1;
            total += size;
            let sizes = format!("[{} / {} free]", long_size(size), long_size(free));
            if is_exported {
                line(f, format!(" is in exported VG {vgname} {sizes}"));
            } else {
                line(f, format!(" VG {vgname:<vg_w$} lvm2 {sizes}"));
            }
        }
    }
    let mut orphans: Vec<&Found> = found.iter().filter(|f| f.vg.is_none()).collect();
    orphans.sort_by(|a, b| a.path.cmp(&b.path));
    for f in orphans {
        // A PV without metadata areas that a VG claims is not an orphan.
        if vgs
            .iter()
            .filter_map(|v| v.1.as_ref().ok())
            .any(|h| h.meta.vg.pvs.iter().any(|p| p.id == f.header.pv_uuid))
        {
            continue;
        }
        if exported {
            continue;
        }
        let size = f.header.device_size / 512;
        n += 1;
        n_new += 1;
        total += size;
        total_new += size;
        line(f, format!("    {:<vg_w$} lvm2 [{}]", " ", long_size(size)));
    }
    if n == 0 {
        text.push_str("  No matching physical volumes found\n");
    } else {
        text.push_str(&format!(
            "  Total: {n} [{}] / in use: {} [{}] / in no VG: {n_new} [{}]\n",
            long_size(total),
            n - n_new,
            long_size(total - total_new),
            long_size(total_new)
        ));
    }
    let _ = out.write_all(text.as_bytes());
    rc
}

/// `vgscan`.
pub fn vgscan_cmd(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let found = scan(&cl.devices(), false, err);
    let mut rc = 0;
    for (name, h) in vgs(&found) {
        match h {
            Ok(h) => {
                let exported = h.meta.vg.status.iter().any(|s| s == "EXPORTED");
                let _ = writeln!(
                    out,
                    "  Found {}volume group \"{name}\" using metadata type {}",
                    if exported { "exported " } else { "" },
                    h.meta.vg.format
                );
            }
            Err(m) => {
                let _ = writeln!(err, "  {m}");
                rc = ECMD_FAILED;
            }
        }
    }
    rc
}

/// An LV's allocation policy as lvm2 names it.
fn alloc_of(lv: &udm_formats::lvm::Lv) -> &str {
    lv.extra
        .iter()
        .find_map(|i| match i {
            Item::Pair { key, value, .. } if key == "allocation_policy" => value.as_str(),
            _ => None,
        })
        .unwrap_or("inherit")
}

/// `lvscan [-a] [VG…]`.
pub fn lvscan_cmd(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let found = scan(&cl.devices(), false, err);
    let mut rc = 0;
    let mut text = String::new();
    for (_, h) in vgs(&found) {
        let h = match h {
            Ok(h) => h,
            Err(m) => {
                let _ = writeln!(err, "  {m}");
                rc = ECMD_FAILED;
                continue;
            }
        };
        let vg = &h.meta.vg;
        if !cl.pos.is_empty() && !cl.pos.contains(&vg.name) {
            continue;
        }
        let active = if cl.activation() {
            activate::active_lvs(vg)
        } else {
            Vec::new()
        };
        for lv in attrs::process_order(vg) {
            if attrs::seg_type(lv) == "snapshot" || !(cl.flag("--all") || attrs::shown(vg, lv)) {
                continue;
            }
            let is_cow = vg.lvs.iter().any(|l| {
                attrs::seg_type(l) == "snapshot" && attrs::seg_str(l, "cow_store") == Some(&lv.name)
            });
            let is_origin = !vg.snapshots_of(&lv.name).is_empty();
            let role = if is_origin {
                "Original"
            } else if is_cow {
                "Snapshot"
            } else {
                "        "
            };
            // A snapshot's device is named after its COW store.
            let on = active.contains(&lv.name);
            text.push_str(&format!(
                "  {}{role} '/dev/{}/{}' [{}] {}\n",
                if on { "ACTIVE   " } else { "inactive " },
                vg.name,
                lv.name,
                long_size(lv.extents() * vg.extent_size),
                alloc_of(lv)
            ));
        }
    }
    let _ = out.write_all(text.as_bytes());
    rc
}

/// `vgck [VG…]`: read each VG from every metadata area; silent when all is well.
pub fn vgck_cmd(cl: &Cmdline, _out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let found = scan(&cl.devices(), false, err);
    let all = vgs(&found);
    let names: Vec<String> = if cl.pos.is_empty() {
        all.iter().map(|v| v.0.clone()).collect()
    } else {
        cl.pos.clone()
    };
    let mut rc = 0;
    for n in names {
        match find_vg(&found, &n) {
            Ok(h) if h.missing() => {
                h.warn_missing(err);
                rc = ECMD_FAILED;
            }
            Ok(h) => {
                if let Err(e) = h.meta.vg.validate() {
                    let _ = writeln!(err, "  {e}");
                    rc = ECMD_FAILED;
                }
            }
            Err(m) => {
                let _ = writeln!(err, "  {m}");
                rc = ECMD_FAILED;
            }
        }
    }
    rc
}

/// `pvscan --cache [-aay] [DEV…]`: each PV found is recorded online (a file named by its
/// uuid under `pvs_online/` in udm's state directory, as lvm2 keeps `/run/lvm/pvs_online`),
/// said as lvm2 says it; with `-aay` every VG whose PVs are all online is activated.
fn pvscan_cache(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let autoact = matches!(cl.val("-a"), Some("ay" | "y"));
    let mut devs = cl.devices();
    let named: Vec<String> = cl
        .pos
        .iter()
        .map(|p| crate::devices::canonical(p))
        .collect();
    for n in &named {
        if !devs.contains(n) {
            devs.push(n.clone());
        }
    }
    // Only the devices named are recorded; activation reads all.
    let found = if named.is_empty() {
        scan(&devs, false, err)
    } else {
        scan(&named, false, err)
    };
    let dir = crate::devices::state_dir().join("pvs_online");
    let _ = std::fs::create_dir_all(&dir);
    let pid = std::process::id();
    let ids = |f: &Found| f.header.pv_uuid.to_string().replace('-', "");
    for f in &found {
        let rec = format!("vg:{}\ndev:{}\n", f.vg.as_deref().unwrap_or(""), f.path);
        let _ = std::fs::write(dir.join(ids(f)), rec);
    }
    let online: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut complete: Vec<String> = Vec::new();
    for f in &found {
        let vg = match (&f.vg, autoact) {
            (Some(v), true) => v,
            _ => {
                let _ = writeln!(out, "  pvscan[{pid}] PV {} online.", f.path);
                continue;
            }
        };
        let missing = find_vg(&found, vg).map_or(0, |h| {
            h.meta
                .vg
                .pvs
                .iter()
                .filter(|p| !online.contains(&p.id.to_string().replace('-', "")))
                .count()
        });
        if missing == 0 {
            let _ = writeln!(
                out,
                "  pvscan[{pid}] PV {} online, VG {vg} is complete.",
                f.path
            );
            if !complete.contains(vg) {
                complete.push(vg.clone());
            }
        } else {
            let _ = writeln!(
                out,
                "  pvscan[{pid}] PV {} online, VG {vg} incomplete (need {missing}).",
                f.path
            );
        }
    }
    let mut rc = 0;
    let found = if complete.is_empty() || named.is_empty() {
        found
    } else {
        scan(&devs, false, err)
    };
    for vg in complete {
        let _ = writeln!(out, "  pvscan[{pid}] VG {vg} run autoactivation.");
        match find_vg(&found, &vg) {
            Ok(h) => {
                let r = activate::change_vg(cl, &h, &found, true, None, out, err);
                if r != 0 {
                    rc = r;
                }
            }
            Err(m) => {
                let _ = writeln!(err, "  {m}");
                rc = ECMD_FAILED;
            }
        }
    }
    rc
}
