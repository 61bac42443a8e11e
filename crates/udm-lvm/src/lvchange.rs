//! `lvchange`: `-a y|n` (activation through the daemon, `-K` for LVs that skip it) and
//! `-p r|rw` (the LV's write permission, for inactive LVs), with lvm2's messages.

use crate::activate;
use crate::fail;
use crate::lvcmds::{lv_args, open_vg};
use crate::session::{commit, find_vg, scan, Cmdline};
use std::io::Write;

/// `lvchange -p r|rw VG/LV…`: the LV's `WRITE` status (inactive LVs).
fn permission(cl: &Cmdline, p: &str, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let write = match p {
        "r" => false,
        "rw" => true,
        _ => return fail(err, &format!("Invalid argument for --permission: {p}")),
    };
    let lvs = match lv_args(cl, err) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut rc = 0;
    for (vgname, lv) in lvs {
        let (mut found, h) = match open_vg(cl, &vgname, err) {
            Ok(x) => x,
            Err(m) => {
                rc = fail(err, &m);
                continue;
            }
        };
        let mut vg = h.meta.vg.clone();
        let Some(l) = vg.lvs.iter_mut().find(|l| l.name == lv) else {
            rc = fail(
                err,
                &format!("Failed to find logical volume \"{vgname}/{lv}\""),
            );
            continue;
        };
        if l.status.iter().any(|s| s == "WRITE") == write {
            let m = if write { "read/write" } else { "read only" };
            rc = fail(
                err,
                &format!("Logical volume {vgname}/{lv} is already {m}."),
            );
            continue;
        }
        if activate::active_lvs(&h.meta.vg).contains(&lv) {
            rc = fail(
                err,
                &format!(
                    "Changing the permission of active {vgname}/{lv} is not supported by udm lvm."
                ),
            );
            continue;
        }
        if write {
            let at = l
                .status
                .iter()
                .position(|s| s == "READ")
                .map_or(0, |i| i + 1);
            l.status.insert(at, "WRITE".into());
        } else {
            l.status.retain(|s| s != "WRITE");
        }
        if let Err(m) = commit(&mut found, &h.slots, vg, cl) {
            rc = fail(err, &m);
            continue;
        }
        let _ = writeln!(out, "  Logical volume {vgname}/{lv} changed.");
    }
    rc
}

/// `lvchange -a y|n VG/LV…`, `lvchange -p r|rw VG/LV…`.
pub fn lvchange_cmd(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    if let Some(p) = cl.val("-p") {
        return permission(cl, p, out, err);
    }
    let Some(a) = cl.val("-a") else {
        return fail(err, "Need one or more command options.");
    };
    let on = match a {
        "y" | "ay" | "ey" | "ly" => true,
        "n" | "an" | "en" | "ln" => false,
        _ => return fail(err, &format!("Invalid argument for --activate: {a}")),
    };
    let lvs = match lv_args(cl, err) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let found = scan(&cl.devices(), false, err);
    let mut rc = 0;
    for (vgname, lv) in lvs {
        let h = match find_vg(&found, &vgname) {
            Ok(h) => h,
            Err(m) => {
                rc = fail(err, &m);
                continue;
            }
        };
        if h.meta.vg.lv(&lv).is_none() {
            rc = fail(
                err,
                &format!("Failed to find logical volume \"{vgname}/{lv}\""),
            );
            continue;
        }
        let r = activate::change_vg(cl, &h, &found, on, Some(&lv), out, err);
        if r != 0 {
            rc = r;
        }
    }
    rc
}
