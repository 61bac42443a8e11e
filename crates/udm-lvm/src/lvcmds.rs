//! `lvcreate lvremove lvrename lvextend lvresize lvreduce lvchange`: lvm2's arguments,
//! rounding and messages; new LVs are activated (unless `-a n`), resized active LVs are
//! reloaded, removed ones deactivated first.

use crate::activate;
use crate::fail;
use crate::session::{
    commit, confirm, find_vg_rw, hostname, long_size, now, scan, Cmdline, Found, VgHandle,
};
use crate::ECMD_FAILED;
use std::io::Write;
use udm_formats::lvm::alloc::Alloc;
use udm_formats::lvm::edit::{parse_extents, parse_size, Sign, SizeArg};

/// `VG/LV`, `/dev/VG/LV` or `/dev/mapper/VG-LV`-less forms: (vg, lv).
pub(crate) fn split_lv(arg: &str) -> Option<(String, String)> {
    let a = arg.strip_prefix("/dev/").unwrap_or(arg);
    let (vg, lv) = a.split_once('/')?;
    Some((vg.to_string(), lv.to_string()))
}

/// The devices a command on VG `vgname` reads (the configured ones and the PVs named after
/// the first positional argument), scanned writable, and the VG read for a change.
pub(crate) fn open_vg(
    cl: &Cmdline,
    vgname: &str,
    err: &mut dyn Write,
) -> Result<(Vec<Found>, VgHandle), String> {
    let mut devs = cl.devices();
    for p in cl.pos.iter().skip(1) {
        let c = crate::devices::canonical(p);
        if !devs.contains(&c) {
            devs.push(c);
        }
    }
    let found = scan(&devs, true, err);
    let h = find_vg_rw(&found, vgname)?;
    Ok((found, h))
}

/// The VG and LV named by the first positional argument, with the devices scanned and the
/// VG read for a change; the command's status (message printed) when either is missing.
pub(crate) fn open_lv_arg(
    cl: &Cmdline,
    err: &mut dyn Write,
) -> Result<(String, String, Vec<Found>, VgHandle), i32> {
    let Some((vgname, lv)) = cl.pos.first().and_then(|a| split_lv(a)) else {
        return Err(fail(err, "Please provide the logical volume name"));
    };
    match open_vg(cl, &vgname, err) {
        Ok((found, h)) => Ok((vgname, lv, found, h)),
        Err(m) => Err(fail(err, &m)),
    }
}

/// The PV names of the devices named after the first positional argument: where new
/// extents may come from (all PVs when none is named).
pub(crate) fn named_pvs(
    cl: &Cmdline,
    h: &VgHandle,
    found: &[Found],
    vgname: &str,
) -> Result<Vec<String>, String> {
    let paths = h.pv_paths(found);
    let mut only = Vec::new();
    for p in cl.pos.iter().skip(1) {
        let c = crate::devices::canonical(p);
        match paths.iter().find(|(_, d)| d.as_deref() == Some(c.as_str())) {
            Some((n, _)) => only.push(n.clone()),
            None => {
                return Err(format!(
                    "Physical Volume \"{p}\" not found in Volume Group \"{vgname}\"."
                ))
            }
        }
    }
    Ok(only)
}

/// `-i N` and `-I SIZE`: the stripe count (None when not given) and size in sectors
/// (64 KiB by default, a power of two of at least 4 KiB).
pub(crate) fn stripe_args(cl: &Cmdline) -> Result<(Option<usize>, u64), String> {
    let n = match cl.val("-i").map(str::parse) {
        None => None,
        Some(Ok(n)) if n >= 1 => Some(n),
        _ => return Err("Invalid argument for --stripes".into()),
    };
    let size = match cl.val("-I").map(parse_size) {
        None => 128,
        Some(Ok(SizeArg::Sectors(_, s))) if s >= 8 && s.is_power_of_two() => s,
        Some(_) => return Err("Invalid stripe size".into()),
    };
    Ok((n, size))
}

/// `-L`/`-l` as new extents for an LV of `cur` extents (`origin`: the origin's, for
/// `%ORIGIN`), with lvm2's rounding message on `out` (`create`: lvcreate's words).
pub(crate) fn new_extents(
    vg: &udm_formats::lvm::Vg,
    size: SizeArg,
    cur: u64,
    origin: Option<u64>,
    create: bool,
    out: &mut dyn Write,
) -> Result<u64, String> {
    let (n, rnd) = vg
        .extents_for(size, cur, origin)
        .map_err(|e| e.to_string())?;
    if let Some(r) = rnd.to_extent {
        let _ = if create {
            writeln!(
                out,
                "  Rounding up size to full physical extent {}",
                long_size(r)
            )
        } else {
            writeln!(
                out,
                "  Rounding size to boundary between physical extents: {}.",
                long_size(r)
            )
        };
    }
    Ok(n)
}

/// `--alloc POLICY` (inherit when not given).
pub(crate) fn alloc_arg(cl: &Cmdline) -> Result<Alloc, String> {
    cl.val("--alloc").map_or(Ok(Alloc::Inherit), |a| {
        a.parse()
            .map_err(|e: udm_formats::lvm::LvmError| e.to_string())
    })
}

pub(crate) fn size_arg(cl: &Cmdline) -> Result<Option<SizeArg>, String> {
    match (cl.val("-L"), cl.val("-l")) {
        (Some(_), Some(_)) => Err("Please specify either size or extents but not both.".into()),
        (Some(l), None) => parse_size(l).map(Some).map_err(|e| e.to_string()),
        (None, Some(l)) => parse_extents(l).map(Some).map_err(|e| e.to_string()),
        (None, None) => Ok(None),
    }
}

/// `lvcreate -L|-l SIZE [-n NAME] [-i N [-I SIZE]] [--type T] [-s ORIGIN] [-a y|n] VG [PV…]`.
pub fn lvcreate_cmd(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    if crate::thinsnap::wants(cl) {
        return crate::thinsnap::lvcreate(cl, out, err);
    }
    if crate::pools::wants(cl) {
        return crate::pools::lvcreate(cl, out, err);
    }
    if crate::raid::wants(cl) {
        return crate::raid::lvcreate(cl, out, err);
    }
    let size = match size_arg(cl) {
        Ok(Some(s)) => s,
        Ok(None) => return fail(err, "Please specify either size or extents (not both)."),
        Err(m) => return fail(err, &m),
    };
    let Some(target) = cl.pos.first() else {
        return fail(err, "Please provide a volume group name");
    };
    let ty = cl.val("--type");
    let snapshot = cl.flag("-s") || ty == Some("snapshot");
    // `-s VG/ORIGIN`, or `VG/NAME` naming the new LV, or just `VG`.
    let (vgname, origin, path_name) = match (snapshot, split_lv(target)) {
        (true, Some((v, l))) => (v, Some(l), None),
        (true, None) => {
            return fail(
                err,
                "Please specify a logical volume to act as the snapshot origin.",
            )
        }
        (false, Some((v, l))) => (v, None, Some(l)),
        (false, None) => (target.trim_start_matches("/dev/").to_string(), None, None),
    };
    let (stripes, stripe_size) = match stripe_args(cl) {
        Ok((n, sz)) => (n.unwrap_or(1), sz),
        Err(m) => return fail(err, &m),
    };
    let stripes = match ty {
        None | Some("linear") | Some("striped") | Some("snapshot") => stripes,
        Some(t) => {
            return fail(
                err,
                &format!("Segment type {t} is not supported by udm lvm"),
            )
        }
    };
    if ty == Some("linear") && stripes > 1 {
        return fail(err, "Linear segment type does not support stripes.");
    }
    if stripes > 1 && cl.val("-I").is_none() {
        let _ = writeln!(out, "  Using default stripesize 64.00 KiB.");
    }
    let chunk = match cl.val("-c").map(parse_size) {
        None => 8,
        Some(Ok(SizeArg::Sectors(_, s))) => s,
        Some(_) => return fail(err, "Invalid chunk size"),
    };
    let activate_it = match cl.val("-a") {
        None | Some("y") | Some("ay") => true,
        Some("n") | Some("an") => false,
        Some(a) => return fail(err, &format!("Invalid argument for --activate: {a}")),
    };
    let policy = match alloc_arg(cl) {
        Ok(p) => p,
        Err(m) => return fail(err, &m),
    };
    let (mut found, h) = match open_vg(cl, &vgname, err) {
        Ok(x) => x,
        Err(m) => return fail(err, &m),
    };
    let mut vg = h.meta.vg.clone();
    let origin_ext = origin.as_ref().and_then(|o| vg.lv(o)).map(|l| l.extents());
    let mut extents = match new_extents(&vg, size, 0, origin_ext, true, out) {
        Ok(x) => x,
        Err(m) => return fail(err, &m),
    };
    if extents % stripes as u64 != 0 {
        let up = extents.div_ceil(stripes as u64) * stripes as u64;
        let _ = writeln!(
            out,
            "  Rounding size {} ({extents} extents) up to stripe boundary size {} ({up} extents).",
            long_size(extents * vg.extent_size),
            long_size(up * vg.extent_size)
        );
        extents = up;
    }
    let name = match cl.val("-n").map(String::from).or(path_name) {
        Some(n) => n,
        None => (0..)
            .map(|i| format!("lvol{i}"))
            .find(|n| vg.lv(n).is_none())
            .expect("a free name"),
    };
    if vg.lv(&name).is_some() {
        return fail(
            err,
            &format!("Logical Volume \"{name}\" already exists in volume group \"{vgname}\""),
        );
    }
    if stripes > vg.pvs.len() && policy != Alloc::Anywhere {
        return fail(
            err,
            &format!(
                "Number of stripes ({stripes}) must not exceed number of physical volumes ({})",
                vg.pvs.len()
            ),
        );
    }
    let free = vg.free_extents();
    if extents > free {
        return fail(
            err,
            &format!(
                "Volume group \"{vgname}\" has insufficient free space ({free} extents): {extents} required."
            ),
        );
    }
    // PVs named after the VG restrict where the extents come from.
    let only = match named_pvs(cl, &h, &found, &vgname) {
        Ok(o) => o,
        Err(m) => return fail(err, &m),
    };
    let (host, time) = (hostname(), now());
    let made = vg.allocate_on(&only, |vg| match &origin {
        Some(o) if snapshot => vg.create_snapshot(&name, o, extents, chunk, &host, time),
        _ => vg.create_lv_alloc(&name, extents, stripes, stripe_size, policy, &host, time),
    });
    if let Err(e) = made {
        return fail(err, &e.to_string());
    }
    // A new COW store starts with a zeroed header chunk (as lvm2 wipes it), so the
    // snapshot target sees a fresh exception store.
    if snapshot {
        if let Err(m) = zero_start(&vg, &name, &h.slots, &mut found) {
            return fail(err, &m);
        }
    }
    if let Err(m) = commit(&mut found, &h.slots, vg.clone(), cl) {
        return fail(err, &m);
    }
    if activate_it {
        let mut back = h.meta.vg.clone();
        let slots = h.slots.clone();
        let mut h2 = h;
        h2.meta.vg = vg;
        let r = activate::change_vg(cl, &h2, &found, true, Some(&name), out, err);
        if r != 0 {
            // As lvm2: an LV that cannot be activated is not kept.
            let _ = writeln!(err, "  Failed to activate new LV {vgname}/{name}.");
            back.seqno += 1;
            if let Err(m) = commit(&mut found, &slots, back, cl) {
                let _ = writeln!(err, "  {m}");
            }
            return r;
        }
    }
    let _ = writeln!(out, "  Logical volume \"{name}\" created.");
    0
}

/// Zero the first 4 KiB of LV `name` on its PV.
pub(crate) fn zero_start(
    vg: &udm_formats::lvm::Vg,
    name: &str,
    slots: &[Option<usize>],
    found: &mut [crate::session::Found],
) -> Result<(), String> {
    let lv = vg.lv(name).ok_or("new LV missing")?;
    let seg = lv.segments.first().ok_or("new LV has no segments")?;
    let (pv, pe) = seg
        .stripes()
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or("new LV has no areas")?;
    let i = vg
        .pvs
        .iter()
        .position(|p| p.name == pv)
        .ok_or("unknown PV")?;
    let p = &vg.pvs[i];
    let f = slots[i].ok_or("PV missing")?;
    let at = (p.pe_start + pe * vg.extent_size) * 512;
    let disk = &mut found[f].disk;
    disk.write_at(at, &[0u8; 4096])
        .and_then(|_| disk.flush())
        .map_err(|e| format!("Failed to wipe the start of {}/{name}: {e}", vg.name))
}

/// The LVs named by `VG/LV` arguments, grouped per VG.
pub(crate) fn lv_args(cl: &Cmdline, err: &mut dyn Write) -> Result<Vec<(String, String)>, i32> {
    let mut v = Vec::new();
    for a in &cl.pos {
        match split_lv(a) {
            Some(x) => v.push(x),
            None => {
                return Err(fail(
                    err,
                    &format!("\"{a}\": Invalid path for Logical Volume."),
                ))
            }
        }
    }
    if v.is_empty() {
        return Err(fail(err, "Please enter one or more logical volume paths."));
    }
    Ok(v)
}

/// `lvremove [-y|-f] VG/LV…`: active LVs are asked about (and deactivated) first.
pub fn lvremove_cmd(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let lvs = match lv_args(cl, err) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut found = scan(&cl.devices(), true, err);
    let mut rc = 0;
    for (vgname, lv) in lvs {
        let h = match find_vg_rw(&found, &vgname) {
            Ok(h) => h,
            Err(m) => {
                rc = fail(err, &m);
                continue;
            }
        };
        let mut vg = h.meta.vg.clone();
        if vg.lv(&lv).is_none() {
            rc = fail(
                err,
                &format!("Failed to find logical volume \"{vgname}/{lv}\""),
            );
            continue;
        }
        let active = cl.activation() && activate::active_lvs(&vg).contains(&lv);
        if active
            && !confirm(
                out,
                &format!("Do you really want to remove active logical volume {vgname}/{lv}?"),
                cl.yes(),
            )
        {
            let _ = writeln!(out, "  Logical volume {vgname}/{lv} not removed.");
            rc = ECMD_FAILED;
            continue;
        }
        // A thin volume is deleted from its pool too (when the daemon can be asked).
        let thin = if cl.activation() {
            vg.thin_delete(&lv)
        } else {
            None
        };
        let removed = match vg.remove_lv(&lv, cl.yes()) {
            Ok(r) => r,
            Err(e) => {
                rc = fail(err, &e.to_string());
                continue;
            }
        };
        if cl.activation() {
            let act = activate::active_lvs(&h.meta.vg);
            for r in removed.iter().filter(|r| act.contains(r)) {
                if activate::change_vg(cl, &h, &found, false, Some(r), out, err) != 0 {
                    return ECMD_FAILED;
                }
            }
        }
        if let Some((pool, msgs)) = thin {
            if let Err(m) = activate::pool_messages(&h, &found, &pool, &lv, &msgs, err) {
                rc = fail(err, &m);
                continue;
            }
        }
        if let Err(m) = commit(&mut found, &h.slots, vg, cl) {
            rc = fail(err, &m);
            continue;
        }
        for r in removed {
            let _ = writeln!(out, "  Logical volume \"{r}\" successfully removed.");
        }
    }
    rc
}

/// `lvrename VG OLD NEW` or `lvrename VG/OLD VG/NEW`.
pub fn lvrename_cmd(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let (vgname, old, new) = match &cl.pos[..] {
        [vg, o, n] => (vg.clone(), o.clone(), n.clone()),
        [o, n] => match (split_lv(o), split_lv(n)) {
            (Some((v1, o)), Some((v2, n))) if v1 == v2 => (v1, o, n),
            (Some((v1, o)), None) => (v1, o, n.clone()),
            _ => {
                return fail(
                    err,
                    "Old and new logical volume names must be in the same volume group",
                )
            }
        },
        _ => return fail(err, "Old and new logical volume names required"),
    };
    let mut found = scan(&cl.devices(), true, err);
    let h = match find_vg_rw(&found, &vgname) {
        Ok(h) => h,
        Err(m) => return fail(err, &m),
    };
    let mut vg = h.meta.vg.clone();
    if let Err(e) = vg.rename_lv(&old, &new) {
        return fail(err, &e.to_string());
    }
    if let Err(m) = commit(&mut found, &h.slots, vg.clone(), cl) {
        return fail(err, &m);
    }
    // An active LV keeps running under its new device names.
    if let Err(m) = activate::rename(cl, &h, &vg, &found, &old, &new, err) {
        return fail(err, &m);
    }
    let _ = writeln!(
        out,
        "  Renamed \"{old}\" to \"{new}\" in volume group \"{vgname}\""
    );
    0
}

/// `lvextend|lvreduce|lvresize -L|-l [+-]SIZE [-i N [-I SIZE]] VG/LV [PV…]`.
pub fn lvresize_cmd(cmd: &str, cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    if let Some(m) = cl.val("--poolmetadatasize") {
        return pool_metadata(cl, m, out, err);
    }
    let size = match size_arg(cl) {
        Ok(Some(s)) => s,
        Ok(None) => return fail(err, "Please specify either size or extents but not both."),
        Err(m) => return fail(err, &m),
    };
    let bad_sign = match (cmd, size) {
        ("lvreduce", SizeArg::Sectors(Sign::Plus, _) | SizeArg::Extents(Sign::Plus, _)) => {
            Some("positive")
        }
        ("lvextend", SizeArg::Sectors(Sign::Minus, _) | SizeArg::Extents(Sign::Minus, _)) => {
            Some("negative")
        }
        _ => None,
    };
    if let Some(what) = bad_sign {
        let (opt, noun, v) = match cl.val("-L") {
            Some(v) => ("--size", "Size", v),
            None => ("--extents", "Extents", cl.val("-l").unwrap_or("")),
        };
        let _ = writeln!(err, "  {noun} may not be {what}.");
        let _ = writeln!(err, "  Invalid argument for {opt}: {v}");
        let _ = writeln!(err, "  Error during parsing of command line.");
        return 3;
    }
    let (vgname, lv, mut found, h) = match open_lv_arg(cl, err) {
        Ok(x) => x,
        Err(rc) => return rc,
    };
    let mut vg = h.meta.vg.clone();
    let Some(cur) = vg.lv(&lv).map(|l| l.extents()) else {
        return fail(
            err,
            &format!("Logical volume {lv} not found in volume group {vgname}."),
        );
    };
    let new = match new_extents(&vg, size, cur, None, false, out) {
        Ok(x) => x,
        Err(m) => return fail(err, &m),
    };
    if new == cur {
        return fail(
            err,
            &format!("New size ({new} extents) matches existing size ({cur} extents)."),
        );
    }
    if cmd == "lvextend" && new < cur {
        return fail(
            err,
            &format!(
                "New size given ({new} extents) not larger than existing size ({cur} extents)"
            ),
        );
    }
    if cmd == "lvreduce" && new > cur {
        return fail(
            err,
            &format!("New size given ({new} extents) not less than existing size ({cur} extents)"),
        );
    }
    // Thin volumes, thin pools and caches resize through their layers.
    let through = udm_formats::lvm::resize::resized_through(&vg, &lv);
    let shown = through.clone().flatten().unwrap_or_else(|| lv.clone());
    let shown_cur = vg.lv(&shown).map_or(cur, |l| l.extents());
    let raid = vg.lv(&lv).is_some_and(|l| {
        udm_formats::lvm::raid::is_raid_type(udm_formats::lvm::report::attrs::seg_type(l))
    });
    let r = if raid && new > cur {
        let seg = vg.lv(&lv).and_then(|l| l.segments.first());
        let ty = seg.map_or("", udm_formats::lvm::dmplan::pools::base_type);
        if matches!(ty, "raid1" | "mirror") {
            let n = seg
                .map(|s| {
                    udm_formats::lvm::raid::sub_lvs(s)
                        .iter()
                        .filter(|n| n.contains("image_"))
                        .count()
                })
                .unwrap_or(0);
            let _ = writeln!(out, "  Extending {n} mirror images.");
        } else if let Some(sz) = seg.and_then(|s| s.stripe_size()) {
            let _ = writeln!(out, "  Using stripesize of last segment {}", long_size(sz));
        }
        vg.extend_raid(&lv, new).map(|_| ())
    } else if raid {
        Err(udm_formats::lvm::LvmError::Refused(format!(
            "Unable to reduce RAID LV {vgname}/{lv}: not supported by udm lvm."
        )))
    } else if through.is_some() && new > cur {
        vg.resize_layered(&lv, new)
    } else if new > cur {
        let stripes = match stripe_args(cl) {
            Ok((n, sz)) => n.map(|n| (n, sz)),
            Err(m) => return fail(err, &m),
        };
        let policy = match alloc_arg(cl) {
            Ok(p) => p,
            Err(m) => return fail(err, &m),
        };
        vg.extend_lv_alloc(&lv, new, stripes, policy)
    } else {
        let _ = writeln!(
            err,
            "  WARNING: Reducing active logical volume to {}.",
            long_size(new * vg.extent_size)
        );
        let _ = writeln!(err, "  THIS MAY DESTROY YOUR DATA (filesystem etc.)");
        if !confirm(
            out,
            &format!("Do you really want to reduce {vgname}/{lv}?"),
            cl.yes(),
        ) {
            let _ = writeln!(out, "  Logical volume {vgname}/{lv} NOT reduced.");
            return ECMD_FAILED;
        }
        if through.is_some() {
            vg.resize_layered(&lv, new)
        } else {
            vg.reduce_lv(&lv, new)
        }
    };
    if let Err(e) = r {
        return fail(err, &e.to_string());
    }
    let (cur, got) = (shown_cur, vg.lv(&shown).map_or(new, |l| l.extents()));
    if let Err(m) = commit(&mut found, &h.slots, vg.clone(), cl) {
        return fail(err, &m);
    }
    let es = h.meta.vg.extent_size;
    let _ = writeln!(
        out,
        "  Size of logical volume {vgname}/{shown} changed from {} ({cur} extents) to {} ({got} extents).",
        long_size(cur * es),
        long_size(got * es)
    );
    let mut h2 = h;
    h2.meta.vg = vg;
    if let Err(m) = activate::reload(cl, &h2, &found, &lv, err) {
        return fail(err, &m);
    }
    let _ = writeln!(out, "  Logical volume {vgname}/{lv} successfully resized.");
    0
}

/// `lvextend --poolmetadatasize +SIZE VG/POOL`: the pool's metadata (and its spare) grow.
fn pool_metadata(cl: &Cmdline, m: &str, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let (vgname, lv, mut found, h) = match open_lv_arg(cl, err) {
        Ok(x) => x,
        Err(rc) => return rc,
    };
    let mut vg = h.meta.vg.clone();
    let es = vg.extent_size;
    let meta = vg
        .lv(&lv)
        .and_then(|l| l.segments.first())
        .and_then(|s| udm_formats::lvm::edit::seg_str(s, "metadata"))
        .map(String::from)
        .unwrap_or_default();
    let Some(cur) = vg.lv(&meta).map(|l| l.extents()) else {
        return fail(
            err,
            &format!("Logical volume {vgname}/{lv} is not a thin pool."),
        );
    };
    let add = match parse_size(m) {
        Ok(SizeArg::Sectors(Sign::Plus, s)) => s.div_ceil(es),
        Ok(SizeArg::Sectors(Sign::Set, s)) if s.div_ceil(es) > cur => s.div_ceil(es) - cur,
        _ => {
            return fail(
                err,
                &format!("Invalid argument for --poolmetadatasize: {m}"),
            )
        }
    };
    let name = match vg.extend_pool_metadata(&lv, add) {
        Ok(n) => n,
        Err(e) => return fail(err, &e.to_string()),
    };
    let got = vg.lv(&name).map_or(cur, |l| l.extents());
    if let Err(m) = commit(&mut found, &h.slots, vg.clone(), cl) {
        return fail(err, &m);
    }
    let _ = writeln!(
        out,
        "  Size of logical volume {vgname}/{name} changed from {} ({cur} extents) to {} ({got} extents).",
        long_size(cur * es),
        long_size(got * es)
    );
    let mut h2 = h;
    h2.meta.vg = vg;
    if let Err(m) = activate::reload(cl, &h2, &found, &lv, err) {
        return fail(err, &m);
    }
    let _ = writeln!(
        out,
        "  Logical volume {vgname}/{name} successfully resized."
    );
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lv_paths_split_as_lvm2_names_them() {
        assert_eq!(split_lv("vg/lv"), Some(("vg".into(), "lv".into())));
        assert_eq!(split_lv("/dev/vg/lv"), Some(("vg".into(), "lv".into())));
        assert_eq!(split_lv("vg"), None);
    }

    #[test]
    fn stripes_sizes_and_policies_parse_as_lvm2() {
        assert_eq!(stripe_args(&Cmdline::with_vals(&[])).unwrap(), (None, 128));
        assert_eq!(
            stripe_args(&Cmdline::with_vals(&[("-i", "3"), ("-I", "4K")])).unwrap(),
            (Some(3), 8)
        );
        assert!(stripe_args(&Cmdline::with_vals(&[("-i", "0")])).is_err());
        assert!(stripe_args(&Cmdline::with_vals(&[("-I", "6K")])).is_err());
        assert!(size_arg(&Cmdline::with_vals(&[("-L", "1G"), ("-l", "10")])).is_err());
        assert_eq!(size_arg(&Cmdline::with_vals(&[])).unwrap(), None);
        assert!(size_arg(&Cmdline::with_vals(&[("-l", "50%FREE")]))
            .unwrap()
            .is_some());
        assert_eq!(alloc_arg(&Cmdline::with_vals(&[])).unwrap(), Alloc::Inherit);
        assert_eq!(
            alloc_arg(&Cmdline::with_vals(&[("--alloc", "cling")])).unwrap(),
            Alloc::Cling
        );
        assert!(alloc_arg(&Cmdline::with_vals(&[("--alloc", "sideways")])).is_err());
    }
}
