//! `lvcreate --type raid0|raid1|raid4|raid5|raid6|raid10|mirror` (and `-m N` alone, which
//! lvm2 makes raid1): lvm2's arguments, defaults, rounding and messages. The metadata
//! sub-LVs (`_rmeta_N`) and a mirror's log are wiped at their start, as lvm2 clears them,
//! so the kernel's raid and mirror targets start them fresh on first activation.

use crate::fail;
use crate::lvcmds::{named_pvs, new_extents, open_vg, size_arg, split_lv, zero_start};
use crate::pools::commit_and_activate;
use crate::session::{hostname, long_size, now, Cmdline};
use std::io::Write;
use udm_formats::lvm::edit::{parse_size, SizeArg};
use udm_formats::lvm::raid::{region_for, RaidKind, RaidShape, DEFAULT_REGION};

/// True when `lvcreate` asks for a raid or mirror LV.
pub fn wants(cl: &Cmdline) -> bool {
    match cl.val("--type") {
        Some(t) => t.parse::<RaidKind>().is_ok(),
        None => cl.val("-m").is_some_and(|m| m != "0"),
    }
}

fn num(cl: &Cmdline, key: &str, what: &str) -> Result<Option<u64>, String> {
    cl.val(key)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| format!("Invalid argument for --{what}: {v}"))
        })
        .transpose()
}

/// The shape asked for by `--type`, `-m`, `-i`, `-I`, `-R`.
fn shape(cl: &Cmdline, out: &mut dyn Write) -> Result<RaidShape, String> {
    let kind: RaidKind = match cl.val("--type") {
        Some(t) => t
            .parse()
            .map_err(|e: udm_formats::lvm::LvmError| e.to_string())?,
        None => RaidKind::Raid1,
    };
    let mirrors = num(cl, "-m", "mirrors")?;
    let stripes = num(cl, "-i", "stripes")?;
    let (def, min) = kind.stripes_default();
    let stripes = match (kind.striped(), stripes) {
        (false, Some(n)) if n > 1 => {
            return Err(format!("Stripes argument is not supported with {kind}."))
        }
        (false, _) => 1,
        (true, None) => def,
        (true, Some(n)) if n < min => {
            return Err(format!("Minimum of {min} stripes required for {kind}."))
        }
        (true, Some(n)) => n,
    };
    let mirrors = match kind {
        RaidKind::Raid1 | RaidKind::Mirror | RaidKind::Raid10 => mirrors.unwrap_or(1),
        _ if mirrors.is_some_and(|m| m > 0) => {
            return Err(format!("Mirrors argument is not supported with {kind}."))
        }
        _ => 0,
    };
    if matches!(kind, RaidKind::Raid1 | RaidKind::Mirror | RaidKind::Raid10) && mirrors == 0 {
        return Err(format!("{kind} needs at least one mirror (-m 1)."));
    }
    let stripe_size = match cl.val("-I").map(parse_size) {
        None if kind.striped() => {
            let _ = writeln!(out, "  Using default stripesize 64.00 KiB.");
            128
        }
        None => 0,
        Some(Ok(SizeArg::Sectors(_, s))) if s >= 8 && s.is_power_of_two() => s,
        Some(_) => return Err("Invalid stripe size".into()),
    };
    let region_size = match cl.val("-R").map(parse_size) {
        None => DEFAULT_REGION,
        Some(Ok(SizeArg::Sectors(_, s))) if s >= 8 && s.is_power_of_two() => s,
        Some(_) => return Err("Invalid argument for --regionsize".into()),
    };
    Ok(RaidShape {
        kind,
        stripes,
        mirrors,
        stripe_size,
        region_size,
    })
}

/// `lvcreate --type raid*|mirror [-m N] [-i N] [-I S] [-R S] -L|-l SIZE [-n NAME] VG [PV…]`.
pub fn lvcreate(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let Some(target) = cl.pos.first() else {
        return fail(err, "Please provide a volume group name");
    };
    let (vgname, path_name) = match split_lv(target) {
        Some((v, l)) => (v, Some(l)),
        None => (target.trim_start_matches("/dev/").to_string(), None),
    };
    let size = match size_arg(cl) {
        Ok(Some(s)) => s,
        Ok(None) => return fail(err, "Please specify either size or extents (not both)."),
        Err(m) => return fail(err, &m),
    };
    let mut shape = match shape(cl, out) {
        Ok(s) => s,
        Err(m) => return fail(err, &m),
    };
    let (mut found, h) = match open_vg(cl, &vgname, err) {
        Ok(x) => x,
        Err(m) => return fail(err, &m),
    };
    let mut vg = h.meta.vg.clone();
    let mut extents = match new_extents(&vg, size, 0, None, true, out) {
        Ok(x) => x,
        Err(m) => return fail(err, &m),
    };
    let data = shape.stripes;
    if extents % data != 0 {
        let up = extents.div_ceil(data) * data;
        let _ = writeln!(
            out,
            "  Rounding size {} ({extents} extents) up to stripe boundary size {} ({up} extents).",
            long_size(extents * vg.extent_size),
            long_size(up * vg.extent_size)
        );
        extents = up;
    }
    shape.region_size = region_for(shape.region_size, extents * vg.extent_size);
    let name = match cl.val("-n").map(String::from).or(path_name) {
        Some(n) => n,
        None => (0..)
            .map(|i| format!("lvol{i}"))
            .find(|n| vg.lv(n).is_none())
            .expect("a free name"),
    };
    if shape.devices() > vg.pvs.len() as u64 {
        return fail(
            err,
            &format!(
                "Insufficient suitable allocatable extents for logical volume {name}: {} more required",
                (shape.devices() - vg.pvs.len() as u64) * (shape.image_extents(extents) + 1)
            ),
        );
    }
    let only = match named_pvs(cl, &h, &found, &vgname) {
        Ok(o) => o,
        Err(m) => return fail(err, &m),
    };
    let (host, time) = (hostname(), now());
    if let Err(e) = vg.allocate_on(&only, |vg| {
        vg.create_raid(&name, extents, shape, &host, time)
    }) {
        return fail(err, &e.to_string());
    }
    // Metadata sub-LVs and the mirror log start cleared.
    let cleared: Vec<String> = vg
        .lvs
        .iter()
        .map(|l| l.name.clone())
        .filter(|n| {
            n.strip_prefix(name.as_str())
                .is_some_and(|r| r.starts_with("_rmeta_") || r == "_mlog")
        })
        .collect();
    for lv in &cleared {
        if let Err(m) = zero_start(&vg, lv, &h.slots, &mut found) {
            return fail(err, &m);
        }
    }
    let r = commit_and_activate(cl, &mut found, h, vg, &[&name], out, err);
    if r == 0 {
        let _ = writeln!(out, "  Logical volume \"{name}\" created.");
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvm2_defaults_and_refusals() {
        let mut out = Vec::new();
        // `-m1` alone is raid1 (lvm2's mirror_segtype_default), no stripe size message.
        let s = shape(&Cmdline::with_vals(&[("-m", "1")]), &mut out).unwrap();
        assert_eq!(
            (s.kind, s.devices(), s.stripe_size),
            (RaidKind::Raid1, 2, 0)
        );
        assert!(out.is_empty());
        // raid5 defaults to 2 data stripes and 64 KiB, saying so.
        let s = shape(&Cmdline::with_vals(&[("--type", "raid5")]), &mut out).unwrap();
        assert_eq!((s.devices(), s.stripe_size), (3, 128));
        assert_eq!(out, b"  Using default stripesize 64.00 KiB.\n");
        let s = shape(
            &Cmdline::with_vals(&[("--type", "raid10"), ("-i", "3")]),
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!((s.devices(), s.image_extents(6)), (6, 2));
        let s = shape(
            &Cmdline::with_vals(&[("--type", "mirror"), ("-R", "512K")]),
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!((s.kind, s.region_size), (RaidKind::Mirror, 1024));
        for bad in [
            vec![("--type", "raid6"), ("-i", "2")],
            vec![("--type", "raid5"), ("-m", "1")],
            vec![("--type", "raid1"), ("-i", "2")],
            vec![("--type", "raid1"), ("-m", "0")],
            vec![("--type", "raid5"), ("-I", "3K")],
        ] {
            assert!(
                shape(&Cmdline::with_vals(&bad), &mut Vec::new()).is_err(),
                "{bad:?}"
            );
        }
        assert!(wants(&Cmdline::with_vals(&[("-m", "2")])));
        assert!(!wants(&Cmdline::with_vals(&[("-m", "0")])));
        assert!(wants(&Cmdline::with_vals(&[("--type", "raid10")])));
        assert!(!wants(&Cmdline::with_vals(&[("--type", "thin-pool")])));
    }
}
