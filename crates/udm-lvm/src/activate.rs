//! Activation through the daemon: the devices and tables lvm2 would load for each LV
//! (`udm_formats::lvm::dmplan`), created lower devices first; deactivation removes them top
//! first; a resized active LV has its live tables reloaded. Under
//! `--config 'global{activation=0}'` nothing is sent, as lvm2 does.

use crate::session::{Cmdline, Found, VgHandle};
use std::io::Write;
use udm_formats::lvm::dmplan::{activation_order, dm_name, plan, DmDev, Mode};
use udm_formats::lvm::Vg;
use udm_proto::libdm as dmctl;
use udm_proto::{Client, DevSel, Line, Reply, Request};

fn client() -> Option<Client> {
    Client::connect(&udm_proto::default_socket()).ok()
}

fn exists(c: &mut Client, name: &str) -> bool {
    matches!(
        c.call(Request::Info {
            dev: DevSel::Name(name.into()),
            inactive: false,
        }),
        Ok(Reply::Info(_))
    )
}

/// The visible LVs of `vg` whose device exists in the daemon (none without a daemon).
pub fn active_lvs(vg: &Vg) -> Vec<String> {
    let Some(mut c) = client() else {
        return Vec::new();
    };
    activation_order(vg)
        .into_iter()
        .filter(|lv| exists(&mut c, &dm_name(&vg.name, lv, None)))
        .collect()
}

fn lines(d: &DmDev) -> Vec<Line> {
    d.table
        .iter()
        .map(|l| Line {
            start: l.start,
            len: l.len,
            ttype: l.ttype.clone(),
            params: l.params.clone(),
        })
        .collect()
}

/// The devices of one LV as planned from `h`'s metadata and the PVs found.
pub fn devices_of(
    h: &VgHandle,
    found: &[Found],
    lv: &str,
    mode: Mode,
) -> Result<Vec<DmDev>, String> {
    let paths = h.pv_paths(found);
    let dev = |pv: &str| pv_dev(&paths, pv);
    plan(&h.meta.vg, lv, &dev, mode, &|n| format!("/dev/mapper/{n}")).map_err(|e| e.to_string())
}

/// A PV's device as tables name it.
fn pv_dev(paths: &[(String, Option<String>)], pv: &str) -> Option<String> {
    paths
        .iter()
        .find(|(n, _)| n == pv)
        .and_then(|(_, p)| p.clone())
        .map(|p| udm_core::escape_arg(&p).into_owned())
}

/// After a snapshot went: when no other snapshot of `origin` is active, the origin goes
/// back to its plain table and its `-real` layer is removed, as lvm2 does.
fn drop_origin_layer(
    c: &mut Client,
    h: &VgHandle,
    found: &[Found],
    gone: &str,
    origin: &DmDev,
    real: &str,
    err: &mut dyn Write,
) -> Result<(), i32> {
    let vg = &h.meta.vg;
    let still = vg
        .snapshots_of(&origin.lv)
        .iter()
        .flat_map(|s| &s.segments)
        .filter_map(|s| udm_formats::lvm::edit::seg_str(s, "cow_store"))
        .filter(|cow| *cow != gone && *cow != origin.lv)
        .any(|cow| exists(c, &dm_name(&vg.name, cow, None)));
    if still || !exists(c, &origin.name) || !exists(c, real) {
        return Ok(());
    }
    let paths = h.pv_paths(found);
    let dev = |pv: &str| pv_dev(&paths, pv);
    let table = udm_formats::lvm::dmplan::plain_table(vg, &origin.lv, &dev, Mode::Partial)
        .map_err(|e| {
            let _ = writeln!(err, "  {e}");
            crate::ECMD_FAILED
        })?;
    let plain = DmDev {
        table,
        ..origin.clone()
    };
    reload_one(c, &plain, err)?;
    c.call(Request::Remove {
        dev: DevSel::Name(real.into()),
        deferred: false,
    })
    .map_err(|e| dmctl::report(err, "remove", real, &e))?;
    Ok(())
}

fn mode_of(cl: &Cmdline, err: &mut dyn Write) -> Option<Mode> {
    match cl.val("--activationmode") {
        None | Some("complete") | Some("degraded") => Some(Mode::Complete),
        Some("partial") => Some(Mode::Partial),
        Some(m) => {
            let _ = writeln!(err, "  Invalid argument for --activationmode: {m}");
            None
        }
    }
}

/// Activate (`on`) or deactivate every LV of the VG, or only `only`; prints lvm2's count
/// line for a whole VG. Returns the exit status.
pub fn change_vg(
    cl: &Cmdline,
    h: &VgHandle,
    found: &[Found],
    on: bool,
    only: Option<&str>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let vg = &h.meta.vg;
    let Some(mode) = mode_of(cl, err) else {
        return 3;
    };
    h.warn_missing(err);
    if mode == Mode::Partial {
        let _ = writeln!(
            err,
            "  PARTIAL MODE. Incomplete logical volumes will be processed."
        );
    }
    let mut lvs = match only {
        Some(l) => vec![l.to_string()],
        None => activation_order(vg),
    };
    // LVs flagged ACTIVATION_SKIP (thin snapshots) come up only with -K, as lvm2.
    if on && !cl.flag("-K") {
        lvs.retain(|l| {
            !vg.lv(l)
                .is_some_and(|l| l.flags.iter().any(|f| f == "ACTIVATION_SKIP"))
        });
    }
    let count_line = |out: &mut dyn Write, n: usize| {
        if only.is_none() {
            let _ = writeln!(
                out,
                "  {n} logical volume(s) in volume group \"{}\" now active",
                vg.name
            );
        }
    };
    if !cl.activation() {
        let _ = writeln!(
            err,
            "  WARNING: Activation disabled. No device-mapper interaction will be attempted."
        );
        count_line(out, 0);
        return 0;
    }
    let Some(mut c) = dmctl::connect(&udm_proto::default_socket(), err) else {
        return crate::ECMD_FAILED;
    };
    let mut rc = 0;
    if on {
        for lv in &lvs {
            let devs = match devices_of(h, found, lv, mode) {
                Ok(d) => d,
                Err(m) => {
                    let _ = writeln!(err, "  {m}");
                    rc = crate::ECMD_FAILED;
                    continue;
                }
            };
            // Devices made for this LV, removed again if a later one fails (as lvm2 does).
            let mut made_here: Vec<&str> = Vec::new();
            for d in &devs {
                if exists(&mut c, &d.name) {
                    if d.replace && reload_one(&mut c, d, err).is_err() {
                        rc = crate::ECMD_FAILED;
                        for n in made_here.iter().rev() {
                            let _ = c.call(Request::Remove {
                                dev: DevSel::Name(n.to_string()),
                                deferred: false,
                            });
                        }
                        break;
                    }
                    continue;
                }
                let made = c
                    .call(Request::Create {
                        name: d.name.clone(),
                        uuid: d.uuid.clone(),
                    })
                    .map_err(|e| dmctl::report(err, "create", &d.name, &e))
                    .and_then(|_| {
                        dmctl::load_and_resume(&mut c, err, &d.name, lines(d), d.read_only)
                    });
                if made.is_err() {
                    rc = crate::ECMD_FAILED;
                    for n in made_here.iter().rev() {
                        let _ = c.call(Request::Remove {
                            dev: DevSel::Name(n.to_string()),
                            deferred: false,
                        });
                    }
                    break;
                }
                made_here.push(&d.name);
            }
        }
    } else {
        lvs.reverse();
        for lv in &lvs {
            let devs = match devices_of(h, found, lv, Mode::Partial) {
                Ok(d) => d,
                Err(m) => {
                    let _ = writeln!(err, "  {m}");
                    rc = crate::ECMD_FAILED;
                    continue;
                }
            };
            // An LV takes down its own devices; layers of other LVs (a snapshot's origin,
            // a thin volume's pool) stay.
            let mut own: Vec<String> = devs
                .iter()
                .filter(|d| !d.shared)
                .map(|d| d.name.clone())
                .collect();
            // A pool whose last thin volume went still runs as `-tpool` under its top.
            let tpool = dm_name(&vg.name, lv, Some("tpool"));
            if !own.is_empty() && !own.contains(&tpool) && exists(&mut c, &tpool) {
                own.insert(own.len() - 1, tpool);
            }
            for name in own.iter().rev() {
                if !exists(&mut c, name) {
                    continue;
                }
                if let Err(e) = c.call(Request::Remove {
                    dev: DevSel::Name(name.clone()),
                    deferred: false,
                }) {
                    dmctl::report(err, "remove", name, &e);
                    rc = crate::ECMD_FAILED;
                    break;
                }
            }
            // An external origin's `-real` layer goes with the last thin volume over it.
            if let Some(ext) = external_origin(vg, lv) {
                let others = vg.lvs.iter().any(|l| {
                    l.name != *lv
                        && external_origin(vg, &l.name) == Some(ext)
                        && exists(&mut c, &dm_name(&vg.name, &l.name, None))
                });
                let real = dm_name(&vg.name, ext, Some("real"));
                if rc == 0 && !others && exists(&mut c, &real) {
                    if let Err(e) = c.call(Request::Remove {
                        dev: DevSel::Name(real.clone()),
                        deferred: false,
                    }) {
                        dmctl::report(err, "remove", &real, &e);
                        rc = crate::ECMD_FAILED;
                    }
                }
            }
            let snapshot = devs.len() == 4 && devs[3].replace && devs[3].shared;
            if snapshot
                && rc == 0
                && drop_origin_layer(&mut c, h, found, lv, &devs[3], &devs[0].name, err).is_err()
            {
                rc = crate::ECMD_FAILED;
            }
        }
    }
    let n = activation_order(vg)
        .iter()
        .filter(|l| exists(&mut c, &dm_name(&vg.name, l, None)))
        .count();
    count_line(out, n);
    rc
}

/// Reload the live tables of an active LV after its metadata changed (lower devices
/// first; missing layers are created).
pub fn reload(
    cl: &Cmdline,
    h: &VgHandle,
    found: &[Found],
    lv: &str,
    err: &mut dyn Write,
) -> Result<(), String> {
    if !cl.activation() {
        return Ok(());
    }
    let Some(mut c) = client() else {
        return Ok(());
    };
    if !exists(&mut c, &dm_name(&h.meta.vg.name, lv, None)) {
        return Ok(());
    }
    for d in devices_of(h, found, lv, Mode::Complete)? {
        if d.lv != lv {
            continue;
        }
        // A layer the new tables need (a merging snapshot's -cow) comes up first.
        if bring_up(&mut c, &d, err).map_err(|_| format!("Failed to activate {}", d.name))? {
            continue;
        }
        reload_one(&mut c, &d, err).map_err(|_| format!("Failed to reload {}", d.name))?;
    }
    Ok(())
}

/// Load `d`'s table over its live one and resume it.
fn reload_one(c: &mut Client, d: &DmDev, err: &mut dyn Write) -> Result<(), i32> {
    let sel = DevSel::Name(d.name.clone());
    c.call(Request::Load {
        dev: sel.clone(),
        table: lines(d),
        read_only: d.read_only,
    })
    .map_err(|e| dmctl::report(err, "reload", &d.name, &e))?;
    c.call(Request::Resume {
        dev: sel,
        noflush: false,
        nolockfs: false,
    })
    .map_err(|e| dmctl::report(err, "resume", &d.name, &e))?;
    Ok(())
}

/// After `lvrename`: the devices of an active LV (its snapshot layers too) take the names
/// the renamed metadata gives them; their UUIDs do not change.
pub fn rename(
    cl: &Cmdline,
    h: &VgHandle,
    new_vg: &Vg,
    found: &[Found],
    old: &str,
    new: &str,
    err: &mut dyn Write,
) -> Result<(), String> {
    if !cl.activation() {
        return Ok(());
    }
    let Some(mut c) = client() else {
        return Ok(());
    };
    let before = devices_of(h, found, old, Mode::Partial)?;
    let renamed = VgHandle {
        meta: udm_formats::lvm::Metadata {
            vg: new_vg.clone(),
            ..h.meta.clone()
        },
        slots: h.slots.clone(),
    };
    let after = devices_of(&renamed, found, new, Mode::Partial)?;
    for (b, a) in before.iter().zip(&after) {
        if b.name == a.name || !exists(&mut c, &b.name) {
            continue;
        }
        c.call(Request::Rename {
            dev: DevSel::Name(b.name.clone()),
            new_name: a.name.clone(),
        })
        .map_err(|e| {
            dmctl::report(err, "rename", &b.name, &e);
            format!("Failed to rename {}", b.name)
        })?;
    }
    Ok(())
}

/// Bring up `d` unless it exists (create, load, resume; removed again if that fails).
fn bring_up(c: &mut Client, d: &DmDev, err: &mut dyn Write) -> Result<bool, i32> {
    if exists(c, &d.name) {
        return Ok(false);
    }
    c.call(Request::Create {
        name: d.name.clone(),
        uuid: d.uuid.clone(),
    })
    .map_err(|e| dmctl::report(err, "create", &d.name, &e))?;
    dmctl::load_and_resume(c, err, &d.name, lines(d), d.read_only)?;
    Ok(true)
}

/// Send thin pool messages (`create_thin N`, `set_transaction_id OLD NEW`, …) for the
/// metadata in `new` to the pool of thin volume `thin`, bringing the pool's devices up
/// first; a pool active on its own (no thin volume yet: `vg-POOL` is the `thin-pool`)
/// moves to `vg-POOL-tpool` first, as lvm2 layers it once used. Returns whether the pool
/// LV itself was active (its top device is then re-made by activating it).
pub fn pool_messages(
    h_new: &VgHandle,
    found: &[Found],
    pool: &str,
    thin: &str,
    msgs: &[Vec<String>],
    err: &mut dyn Write,
) -> Result<bool, String> {
    let Some(mut c) = dmctl::connect(&udm_proto::default_socket(), err) else {
        return Err("Can't send thin pool messages without the udm daemon.".into());
    };
    let vg = &h_new.meta.vg;
    let top = dm_name(&vg.name, pool, None);
    let tpool = dm_name(&vg.name, pool, Some("tpool"));
    let mut pool_active = false;
    if exists(&mut c, &top) && !exists(&mut c, &tpool) {
        pool_active = true;
        let is_pool = matches!(
            c.call(Request::Status {
                dev: DevSel::Name(top.clone()),
                inactive: false,
                table: true,
                noflush: false,
            }),
            Ok(Reply::Status { targets, .. }) if targets.first().is_some_and(|t| t.ttype == "thin-pool")
        );
        if is_pool {
            c.call(Request::Rename {
                dev: DevSel::Name(top.clone()),
                new_name: tpool.clone(),
            })
            .map_err(|e| {
                dmctl::report(err, "rename", &top, &e);
                format!("Failed to rename {top}")
            })?;
        }
    } else if exists(&mut c, &top) {
        pool_active = true;
    }
    let devs = devices_of(h_new, found, thin, Mode::Complete)?;
    for d in devs.iter().filter(|d| d.shared) {
        bring_up(&mut c, d, err).map_err(|_| format!("Failed to activate {}", d.name))?;
    }
    for m in msgs {
        c.call(Request::Message {
            dev: DevSel::Name(tpool.clone()),
            sector: 0,
            argv: m.clone(),
        })
        .map_err(|e| {
            dmctl::report(err, "message", &tpool, &e);
            format!("Failed to send message \"{}\" to {tpool}", m.join(" "))
        })?;
    }
    Ok(pool_active)
}

/// The external origin of thin volume `lv`, if it has one.
fn external_origin<'a>(vg: &'a Vg, lv: &str) -> Option<&'a str> {
    vg.lv(lv)
        .and_then(|l| l.segments.first())
        .and_then(|s| udm_formats::lvm::edit::seg_str(s, "external_origin"))
}
