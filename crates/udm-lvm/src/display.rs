//! `pvdisplay`, `vgdisplay`, `lvdisplay`: lvm2's long form (times in UTC). With the udm
//! daemon's devices an LV shows as lvm2 shows one with the kernel's driver (`LV Status`,
//! `# open`, its read-ahead and block device); under `activation=0` or without a daemon,
//! as lvm2 prints it without a driver.

use crate::session::{find_vg, long_size, scan, Cmdline, Found, VgHandle};
use crate::ECMD_FAILED;
use std::io::Write;
use udm_formats::lvm::edit::seg_str;
use udm_formats::lvm::model::ctime;
use udm_formats::lvm::report::attrs;
use udm_formats::lvm::report::live::Live;
use udm_formats::lvm::{Lv, Vg};

fn kv(out: &mut String, width: usize, k: &str, v: &str) {
    out.push_str(&format!("  {k:<width$}{v}\n"));
}

/// `2026-12-05 09:58:26 +0000`.
fn stamp(t: i64) -> String {
    // ctime gives `Sat Dec  5 09:13:40 2026`; rebuild it in ISO order.
    let c = ctime(t);
    let w: Vec<&str> = c.split_whitespace().collect();
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = MON.iter().position(|x| *x == w[1]).unwrap_or(0) + 1;
    format!("{}-{m:02}-{:0>2} {} +0000", w[4], w[2], w[3])
}

fn vg_block(h: &VgHandle, found: &[Found]) -> String {
    let vg = &h.meta.vg;
    let es = vg.extent_size;
    let total: u64 = vg.pvs.iter().map(|p| p.pe_count).sum();
    let free = vg.free_extents();
    let mdas: usize = h
        .slots
        .iter()
        .flatten()
        .map(|&i| found[i].header.metadata_areas.len())
        .sum();
    let mut s = String::from("  --- Volume group ---\n");
    let w = 22;
    kv(&mut s, w, "VG Name", &vg.name);
    kv(&mut s, w, "System ID", "");
    kv(&mut s, w, "Format", &vg.format);
    kv(&mut s, w, "Metadata Areas", &mdas.to_string());
    kv(&mut s, w, "Metadata Sequence No", &vg.seqno.to_string());
    let write = vg.status.iter().any(|x| x == "WRITE");
    kv(
        &mut s,
        w,
        "VG Access",
        if write { "read/write" } else { "read" },
    );
    let rs = vg.status.iter().any(|x| x == "RESIZEABLE");
    kv(&mut s, w, "VG Status", if rs { "resizable" } else { "" });
    kv(&mut s, w, "MAX LV", &vg.max_lv.to_string());
    kv(&mut s, w, "Cur LV", &attrs::counted(vg).to_string());
    kv(&mut s, w, "Open LV", "0");
    kv(&mut s, w, "Max PV", &vg.max_pv.to_string());
    kv(&mut s, w, "Cur PV", &vg.pvs.len().to_string());
    kv(
        &mut s,
        w,
        "Act PV",
        &h.slots.iter().flatten().count().to_string(),
    );
    kv(&mut s, w, "VG Size", &long_size(total * es));
    kv(&mut s, w, "PE Size", &long_size(es));
    kv(&mut s, w, "Total PE", &total.to_string());
    let alloc = total - free;
    kv(
        &mut s,
        w,
        "Alloc PE / Size",
        &format!("{alloc} / {}", long_size(alloc * es)),
    );
    kv(
        &mut s,
        w,
        "Free  PE / Size",
        &format!("{free} / {}", long_size(free * es)),
    );
    kv(&mut s, w, "VG UUID", &vg.id.to_string());
    s.push_str("   \n");
    s
}

fn snapshot_of<'a>(vg: &'a Vg, lv: &str) -> Option<&'a Lv> {
    vg.lvs.iter().find(|l| {
        l.segments
            .iter()
            .any(|s| s.seg_type == "snapshot" && seg_str(s, "cow_store") == Some(lv))
    })
}

/// The read-ahead lvm2's `auto` gives an active LV: two full stripes of a striped or
/// raid segment (all its areas), else the devices' 256 sectors.
fn read_ahead(lv: &Lv) -> u64 {
    let Some(seg) = lv.segments.first() else {
        return 256;
    };
    let size = seg.stripe_size().unwrap_or(0);
    let areas = match seg.stripes() {
        Ok(v) => v.len() as u64,
        Err(_) => seg
            .get("device_count")
            .and_then(|v| v.as_int())
            .unwrap_or(1) as u64,
    };
    if size > 0 && areas > 1 {
        (areas * size * 2).max(256)
    } else {
        256
    }
}

fn lv_block(vg: &Vg, lv: &Lv, live: Option<&Live>) -> String {
    let dev = live.and_then(|m| udm_formats::lvm::report::live::dev(m, vg, lv));
    let es = vg.extent_size;
    let mut s = String::from("  --- Logical volume ---\n");
    let w = 23;
    let ty = attrs::seg_type(lv);
    if attrs::shown(vg, lv) {
        if ty != "thin-pool" {
            kv(
                &mut s,
                w,
                "LV Path",
                &format!("/dev/{}/{}", vg.name, lv.name),
            );
        }
        kv(&mut s, w, "LV Name", &lv.name);
    } else {
        kv(&mut s, w, "Internal LV Name", &lv.name);
    }
    kv(&mut s, w, "VG Name", &vg.name);
    kv(&mut s, w, "LV UUID", &lv.id.to_string());
    let write = lv.status.iter().any(|x| x == "WRITE");
    kv(
        &mut s,
        w,
        "LV Write Access",
        if write { "read/write" } else { "read only" },
    );
    if let (Some(h), Some(t)) = (&lv.creation_host, lv.creation_time) {
        kv(
            &mut s,
            w,
            "LV Creation host, time",
            &format!("{h}, {}", stamp(t)),
        );
    }
    let snaps: Vec<&str> = vg
        .lvs
        .iter()
        .flat_map(|l| &l.segments)
        .filter(|g| g.seg_type == "snapshot" && seg_str(g, "origin") == Some(&lv.name))
        .filter_map(|g| seg_str(g, "cow_store"))
        .collect();
    let snap = snapshot_of(vg, &lv.name);
    let mut size_le = lv.extents();
    if !snaps.is_empty() {
        kv(&mut s, w, "LV snapshot status", "source of");
        for n in &snaps {
            s.push_str(&format!("  {:w$}{n} [INACTIVE]\n", ""));
        }
    }
    if let Some(sn) = snap {
        let origin = seg_str(&sn.segments[0], "origin").unwrap_or("");
        kv(
            &mut s,
            w,
            "LV snapshot status",
            &format!("INACTIVE destination for {origin}"),
        );
        size_le = vg.lv(origin).map_or(0, |o| o.extents());
    }
    let sub = |k: &str| {
        lv.segments
            .first()
            .and_then(|g| seg_str(g, k))
            .unwrap_or("")
    };
    match ty {
        "thin" => kv(&mut s, w, "LV Pool name", sub("thin_pool")),
        "thin-pool" => {
            kv(&mut s, w, "LV Pool metadata", sub("metadata"));
            kv(&mut s, w, "LV Pool data", sub("pool"));
        }
        "cache-pool" => {
            kv(&mut s, w, "LV Pool metadata", sub("metadata"));
            kv(&mut s, w, "LV Pool data", sub("data"));
        }
        _ => {
            if let Some(c) = vg.lvs.iter().find(|l| {
                attrs::seg_type(l) == "cache" && attrs::seg_str(l, "origin") == Some(&lv.name)
            }) {
                kv(&mut s, w, "LV origin of Cache LV", &c.name);
            }
        }
    }
    match (live, dev) {
        (None, _) => {}
        (Some(_), Some(d)) => {
            kv(&mut s, w, "LV Status", "available");
            kv(&mut s, w, "# open", &d.open.to_string());
        }
        (Some(_), None) => kv(&mut s, w, "LV Status", "NOT available"),
    }
    kv(&mut s, w, "LV Size", &long_size(size_le * es));
    kv(&mut s, w, "Current LE", &size_le.to_string());
    let mirrors = lv.segments.first().and_then(|g| match attrs::seg_type(lv) {
        "mirror" => g.get("mirror_count").and_then(|v| v.as_int()),
        "raid1" | "raid10" => g.get("device_count").and_then(|v| v.as_int()),
        _ => None,
    });
    if let Some(m) = mirrors {
        kv(&mut s, w, "Mirrored volumes", &m.to_string());
    }
    if let Some(sn) = snap {
        kv(&mut s, w, "COW-table size", &long_size(lv.extents() * es));
        kv(&mut s, w, "COW-table LE", &lv.extents().to_string());
        let chunk = sn.segments[0]
            .get("chunk_size")
            .and_then(|v| v.as_int())
            .unwrap_or(8) as u64;
        kv(&mut s, w, "Snapshot chunk size", &long_size(chunk));
    }
    kv(&mut s, w, "Segments", &lv.segments.len().to_string());
    kv(&mut s, w, "Allocation", "inherit");
    kv(&mut s, w, "Read ahead sectors", "auto");
    if let Some(d) = dev {
        kv(&mut s, w, "- currently set to", &read_ahead(lv).to_string());
        kv(
            &mut s,
            w,
            "Block device",
            &format!("{}:{}", d.major, d.minor),
        );
    }
    s.push_str("   \n");
    s
}

fn pv_block(f: &Found, vg: Option<&Vg>) -> String {
    let mut s = String::new();
    let w = 22;
    let size = f.disk.size().unwrap_or(0) / 512;
    let pv = vg.and_then(|v| {
        v.pvs
            .iter()
            .find(|p| p.id == f.header.pv_uuid)
            .map(|p| (v, p))
    });
    match pv {
        Some((vg, p)) => {
            let es = vg.extent_size;
            let free: u64 = vg.free_runs(&p.name).iter().map(|r| r.1).sum();
            s.push_str("  --- Physical volume ---\n");
            kv(&mut s, w, "PV Name", &f.path);
            kv(&mut s, w, "VG Name", &vg.name);
            let usable = p.pe_count * es;
            kv(
                &mut s,
                w,
                "PV Size",
                &format!(
                    "{} / not usable {}",
                    long_size(p.dev_size),
                    long_size(p.dev_size.saturating_sub(usable))
                ),
            );
            let alloc = p.status.iter().any(|x| x == "ALLOCATABLE");
            let a = match (alloc, free) {
                (false, _) => "NO",
                (true, 0) => "yes (but full)",
                (true, _) => "yes ",
            };
            kv(&mut s, w, "Allocatable", a);
            kv(&mut s, w, "PE Size", &long_size(es));
            kv(&mut s, w, "Total PE", &p.pe_count.to_string());
            kv(&mut s, w, "Free PE", &free.to_string());
            kv(&mut s, w, "Allocated PE", &(p.pe_count - free).to_string());
        }
        None => {
            s.push_str(&format!(
                "  \"{}\" is a new physical volume of \"{}\"\n",
                f.path,
                long_size(size)
            ));
            s.push_str("  --- NEW Physical volume ---\n");
            kv(&mut s, w, "PV Name", &f.path);
            kv(&mut s, w, "VG Name", "");
            kv(&mut s, w, "PV Size", &long_size(size));
            kv(&mut s, w, "Allocatable", "NO");
            kv(&mut s, w, "PE Size", "0   ");
            kv(&mut s, w, "Total PE", "0");
            kv(&mut s, w, "Free PE", "0");
            kv(&mut s, w, "Allocated PE", "0");
        }
    }
    kv(&mut s, w, "PV UUID", &f.header.pv_uuid.to_string());
    s.push_str("   \n");
    s
}

/// The VGs of `found`, by name.
fn all_vgs(found: &[Found]) -> Vec<String> {
    let mut v: Vec<String> = found.iter().filter_map(|f| f.vg.clone()).collect();
    v.sort();
    v.dedup();
    v
}

/// `pvdisplay|vgdisplay|lvdisplay [NAME…]`.
pub fn display_cmd(cmd: &str, cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut devs = cl.devices();
    if cmd == "pvdisplay" {
        for p in &cl.pos {
            let c = crate::devices::canonical(p);
            if !devs.contains(&c) {
                devs.push(c);
            }
        }
    }
    let found = scan(&devs, false, err);
    let mut rc = 0;
    let mut text = String::new();
    let vg_of = |name: &str| find_vg(&found, name);
    match cmd {
        "vgdisplay" => {
            let names = if cl.pos.is_empty() {
                all_vgs(&found)
            } else {
                cl.pos.clone()
            };
            for n in names {
                match vg_of(&n) {
                    Ok(h) => text.push_str(&vg_block(&h, &found)),
                    Err(m) => {
                        let _ = writeln!(err, "  {m}");
                        rc = ECMD_FAILED;
                    }
                }
            }
        }
        "lvdisplay" => {
            let live = crate::report::live_devices(!cl.activation());
            for n in all_vgs(&found) {
                let Ok(h) = vg_of(&n) else { continue };
                let vg = &h.meta.vg;
                for lv in udm_formats::lvm::report::attrs::process_order(vg) {
                    let listed = if cl.flag("--all") {
                        !lv.segments.iter().any(|g| g.seg_type == "snapshot")
                    } else {
                        attrs::seg_type(lv) != "snapshot" && attrs::shown(vg, lv)
                    };
                    let full = format!("{}/{}", vg.name, lv.name);
                    let wanted = cl.pos.is_empty()
                        || cl
                            .pos
                            .iter()
                            .any(|p| p.trim_start_matches("/dev/") == full || *p == vg.name);
                    if listed && wanted {
                        text.push_str(&lv_block(vg, lv, live.as_ref()));
                    }
                }
            }
            for p in &cl.pos {
                let p = p.trim_start_matches("/dev/");
                let known = found
                    .iter()
                    .any(|f| f.vg.as_deref() == Some(p.split('/').next().unwrap_or("")));
                if !known {
                    let _ = writeln!(
                        err,
                        "  Volume group \"{}\" not found",
                        p.split('/').next().unwrap_or("")
                    );
                    rc = ECMD_FAILED;
                }
            }
        }
        _ => {
            let vgs: Vec<(String, Option<VgHandle>)> = all_vgs(&found)
                .into_iter()
                .map(|n| {
                    let h = vg_of(&n).ok();
                    (n, h)
                })
                .collect();
            // PVs of VGs first (by VG), then orphans, as lvm2 lists them.
            let mut order: Vec<&Found> = found.iter().collect();
            order.sort_by_key(|f| (f.vg.is_none(), f.vg.clone()));
            for f in order {
                let want = cl.pos.is_empty()
                    || cl
                        .pos
                        .iter()
                        .any(|p| crate::devices::canonical(p) == f.path);
                if !want {
                    continue;
                }
                let vg = f.vg.as_ref().and_then(|n| {
                    vgs.iter()
                        .find(|v| &v.0 == n)
                        .and_then(|v| v.1.as_ref())
                        .map(|h| &h.meta.vg)
                });
                text.push_str(&pv_block(f, vg));
            }
            for p in &cl.pos {
                let c = crate::devices::canonical(p);
                if !found.iter().any(|f| f.path == c) {
                    let _ = writeln!(err, "  Failed to find physical volume \"{p}\".");
                    rc = ECMD_FAILED;
                }
            }
        }
    }
    let _ = out.write_all(text.as_bytes());
    rc
}
