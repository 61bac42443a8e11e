//! `lvcreate` for thin pools (`-T VG/POOL -L`, `--thinpool POOL`, `--type thin-pool`), thin
//! volumes (`-V SIZE -T VG/POOL`, `--thinpool POOL -V`, both at once), cache pools
//! (`--type cache-pool`) and cached LVs (`--type cache --cachepool|--cachevol`), and
//! `lvconvert --type thin-pool|cache-pool|cache`: lvm2's metadata and messages. A thin
//! volume is created in its pool through the daemon (`create_thin`, `set_transaction_id`)
//! before the metadata naming it is committed; a new pool's metadata starts zeroed, as lvm2
//! wipes it, so the pool target formats it on first activation.

use crate::fail;
use crate::lvcmds::{new_extents, open_lv_arg, open_vg, size_arg, split_lv, zero_start};
use crate::session::{commit, hostname, long_size, now, Cmdline, Found, VgHandle};
use crate::{activate, ECMD_FAILED};
use std::io::Write;
use udm_formats::lvm::edit::{parse_size, SizeArg};
use udm_formats::lvm::pools::{thin_max_data, ThinPoolOpts};
use udm_formats::lvm::Vg;

/// True when `lvcreate` is asked for a thin or cache LV (handled here).
pub fn wants(cl: &Cmdline) -> bool {
    matches!(
        cl.val("--type"),
        Some("thin-pool" | "thin" | "cache-pool" | "cache")
    ) || cl.flag("-T")
        || cl.val("-V").is_some()
        || cl.val("--thinpool").is_some()
        || cl.val("--cachepool").is_some()
        || cl.val("--cachevol").is_some()
}

/// `-c SIZE` in sectors (64 KiB by default).
fn chunk(cl: &Cmdline) -> Result<u64, String> {
    match cl.val("-c").map(parse_size) {
        None => Ok(128),
        Some(Ok(SizeArg::Sectors(_, s))) if s >= 64 && s % 64 == 0 => Ok(s),
        Some(_) => Err("Invalid argument for --chunksize".into()),
    }
}

fn pool_opts(cl: &Cmdline) -> Result<ThinPoolOpts, String> {
    let mut o = ThinPoolOpts {
        chunk: chunk(cl)?,
        ..Default::default()
    };
    match cl.val("-Z") {
        None | Some("y") => {}
        Some("n") => o.zero = false,
        Some(z) => return Err(format!("Invalid argument for --zero: {z}")),
    }
    o.discards = match cl.val("--discards") {
        None | Some("passdown") => "passdown",
        Some("nopassdown") => "nopassdown",
        Some("ignore") => "ignore",
        Some(d) => return Err(format!("Invalid argument for --discards: {d}")),
    };
    Ok(o)
}

/// Deactivate LV `name` when it is active (a volume about to become a cache volume).
fn deactivate(
    cl: &Cmdline,
    h: &VgHandle,
    found: &[Found],
    name: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), i32> {
    if cl.activation()
        && activate::active_lvs(&h.meta.vg).iter().any(|l| l == name)
        && activate::change_vg(cl, h, found, false, Some(name), out, err) != 0
    {
        return Err(ECMD_FAILED);
    }
    Ok(())
}

/// Zero the start of `lv` (a new pool's metadata), as lvm2 wipes it.
fn wipe(vg: &Vg, lv: &str, h: &VgHandle, found: &mut [Found]) -> Result<(), String> {
    zero_start(vg, lv, &h.slots, found)
}

/// Commit `vg`, then activate `lvs` (unless `-an` or activation is off).
pub(crate) fn commit_and_activate(
    cl: &Cmdline,
    found: &mut [Found],
    h: VgHandle,
    vg: Vg,
    lvs: &[&str],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    if let Err(m) = commit(found, &h.slots, vg.clone(), cl) {
        return fail(err, &m);
    }
    let on = !matches!(cl.val("-a"), Some("n" | "an"));
    if !on || !cl.activation() {
        return 0;
    }
    let mut h2 = h;
    h2.meta.vg = vg;
    for lv in lvs {
        let r = activate::change_vg(cl, &h2, found, true, Some(lv), out, err);
        if r != 0 {
            let _ = writeln!(err, "  Failed to activate new LV {}/{lv}.", h2.meta.vg.name);
            return r;
        }
    }
    0
}

/// `lvcreate` of a thin pool, thin volume, cache pool or cached LV.
pub fn lvcreate(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let Some(target) = cl.pos.first() else {
        return fail(err, "Please provide a volume group name");
    };
    let ty = cl.val("--type");
    // The pool: `-T VG/POOL`, `--thinpool [VG/]POOL`, or `-n` with `--type thin-pool`.
    let (vgname, named) = match split_lv(target) {
        Some((v, l)) => (v, Some(l)),
        None => (target.trim_start_matches("/dev/").to_string(), None),
    };
    let thinpool = cl
        .val("--thinpool")
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_string());
    let virt = cl.val("-V");
    let wants_pool_here = cl.val("-L").is_some() || cl.val("-l").is_some();
    let (mut found, h) = match open_vg(cl, &vgname, err) {
        Ok(x) => x,
        Err(m) => return fail(err, &m),
    };
    let mut vg = h.meta.vg.clone();
    let (host, time) = (hostname(), now());
    if matches!(ty, Some("cache-pool" | "cache")) {
        return cache_create(cl, found, h, out, err);
    }
    let pool = thinpool
        .clone()
        .or_else(|| {
            named
                .clone()
                .filter(|_| cl.flag("-T") || ty == Some("thin-pool"))
        })
        .or_else(|| cl.val("-n").filter(|_| virt.is_none()).map(String::from));
    let Some(pool) = pool else {
        return fail(err, "Please specify the name of the thin pool.");
    };
    let mut made = Vec::new();
    if wants_pool_here && (virt.is_none() || vg.lv(&pool).is_none()) {
        let size = match size_arg(cl) {
            Ok(Some(s)) => s,
            Ok(None) => return fail(err, "Please specify either size or extents."),
            Err(m) => return fail(err, &m),
        };
        let extents = match new_extents(&vg, size, 0, None, true, out) {
            Ok(e) => e,
            Err(m) => return fail(err, &m),
        };
        let opts = match pool_opts(cl) {
            Ok(o) => o,
            Err(m) => return fail(err, &m),
        };
        let stripes = match crate::lvcmds::stripe_args(cl) {
            Ok((n, sz)) => (n.unwrap_or(1), sz),
            Err(m) => return fail(err, &m),
        };
        if let Err(e) = vg.create_thin_pool(&pool, extents, stripes, opts, &host, time) {
            return fail(err, &e.to_string());
        }
        let _ = writeln!(
            out,
            "  Thin pool volume with chunk size {} can address at most {} of data.",
            long_size(opts.chunk),
            long_size(thin_max_data(opts.chunk))
        );
        if let Err(m) = wipe(&vg, &format!("{pool}_tmeta"), &h, &mut found) {
            return fail(err, &m);
        }
        made.push(pool.clone());
    }
    let Some(v) = virt else {
        let r = commit_and_activate(cl, &mut found, h, vg, &[&pool], out, err);
        if r == 0 {
            let _ = writeln!(out, "  Logical volume \"{pool}\" created.");
        }
        return r;
    };
    // A thin volume in the pool.
    let size = match parse_size(v) {
        Ok(s @ SizeArg::Sectors(..)) => s,
        _ => return fail(err, &format!("Invalid argument for --virtualsize: {v}")),
    };
    let extents = match new_extents(&vg, size, 0, None, true, out) {
        Ok(e) => e,
        Err(m) => return fail(err, &m),
    };
    let name = match cl
        .val("-n")
        .map(String::from)
        .or_else(|| named.clone().filter(|n| *n != pool && thinpool.is_some()))
    {
        Some(n) => n,
        None => (0..)
            .map(|i| format!("lvol{i}"))
            .find(|n| vg.lv(n).is_none())
            .expect("a free name"),
    };
    if !cl.activation() {
        return fail(
            err,
            "Can't create thin volume without using device-mapper kernel driver.",
        );
    }
    // A new pool is committed first, so that a failed message leaves a usable pool.
    if !made.is_empty() {
        if let Err(m) = commit(&mut found, &h.slots, vg.clone(), cl) {
            return fail(err, &m);
        }
        vg.seqno += 1;
    }
    let (id, tid) = match vg.create_thin(&name, &pool, extents, &host, time) {
        Ok(x) => x,
        Err(e) => return fail(err, &e.to_string()),
    };
    let h_new = VgHandle {
        meta: udm_formats::lvm::Metadata {
            vg: vg.clone(),
            ..h.meta.clone()
        },
        slots: h.slots.clone(),
    };
    let msgs = vec![
        vec!["create_thin".to_string(), id.to_string()],
        vec![
            "set_transaction_id".to_string(),
            tid.to_string(),
            (tid + 1).to_string(),
        ],
    ];
    let pool_was_active = match activate::pool_messages(&h_new, &found, &pool, &name, &msgs, err) {
        Ok(a) => a,
        Err(m) => return fail(err, &m),
    };
    let pool_size = vg.lv(&pool).map_or(0, |l| l.extents() * vg.extent_size);
    let thin_total: u64 = vg
        .lvs
        .iter()
        .filter(|l| {
            l.segments.first().is_some_and(|s| {
                s.seg_type == "thin"
                    && udm_formats::lvm::edit::seg_str(s, "thin_pool") == Some(&pool)
            })
        })
        .map(|l| l.extents() * vg.extent_size)
        .sum();
    if thin_total > pool_size {
        let _ = writeln!(
            err,
            "  WARNING: Sum of all thin volume sizes ({}) exceeds the size of thin pool {}/{pool} ({}).",
            long_size(thin_total),
            vg.name,
            long_size(pool_size)
        );
        let _ = writeln!(
            err,
            "  WARNING: You have not turned on protection against thin pools running out of space."
        );
        let _ = writeln!(err, "  WARNING: Set activation/thin_pool_autoextend_threshold below 100 to trigger automatic extension of thin pools before they get full.");
    }
    let mut lvs: Vec<&str> = Vec::new();
    if pool_was_active || !made.is_empty() {
        lvs.push(&pool);
    }
    lvs.push(&name);
    let r = commit_and_activate(cl, &mut found, h, vg, &lvs, out, err);
    if r == 0 {
        for m in &made {
            let _ = writeln!(out, "  Logical volume \"{m}\" created.");
        }
        let _ = writeln!(out, "  Logical volume \"{name}\" created.");
    }
    r
}

/// `lvcreate --type cache-pool -n NAME -L SIZE VG [PV…]` and `lvcreate --type cache
/// --cachepool POOL|--cachevol VOL -n NAME -L SIZE VG [PV…]`.
fn cache_create(
    cl: &Cmdline,
    mut found: Vec<Found>,
    h: VgHandle,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let mut vg = h.meta.vg.clone();
    let vgname = vg.name.clone();
    let (host, time) = (hostname(), now());
    let size = match size_arg(cl) {
        Ok(Some(s)) => s,
        Ok(None) => return fail(err, "Please specify either size or extents."),
        Err(m) => return fail(err, &m),
    };
    let extents = match new_extents(&vg, size, 0, None, true, out) {
        Ok(e) => e,
        Err(m) => return fail(err, &m),
    };
    let chunk = match chunk(cl) {
        Ok(c) => c,
        Err(m) => return fail(err, &m),
    };
    let only = match crate::lvcmds::named_pvs(cl, &h, &found, &vgname) {
        Ok(o) => o,
        Err(m) => return fail(err, &m),
    };
    let name = match cl.val("-n") {
        Some(n) => n.to_string(),
        None => (0..)
            .map(|i| format!("lvol{i}"))
            .find(|n| vg.lv(n).is_none())
            .expect("a free name"),
    };
    if cl.val("--type") == Some("cache-pool") {
        if let Err(e) = vg.allocate_on(&only, |vg| {
            vg.create_cache_pool(&name, extents, chunk, &host, time)
        }) {
            return fail(err, &e.to_string());
        }
        if let Err(m) = commit(&mut found, &h.slots, vg, cl) {
            return fail(err, &m);
        }
        let _ = writeln!(out, "  Logical volume \"{name}\" created.");
        return 0;
    }
    let Some(pool) = cl.val("--cachepool").or(cl.val("--cachevol")) else {
        return fail(
            err,
            "Please specify the cache pool or cache volume (--cachepool, --cachevol).",
        );
    };
    let pool = pool.rsplit('/').next().unwrap_or(pool).to_string();
    if let Err(r) = deactivate(cl, &h, &found, &pool, out, err) {
        return r;
    }
    if let Err(e) = vg.allocate_on(&only, |vg| {
        vg.create_lv(&name, extents, 1, 0, &host, time).map(|_| ())
    }) {
        return fail(err, &e.to_string());
    }
    if let Err(e) = vg.attach_cache(&name, &pool, chunk) {
        return fail(err, &e.to_string());
    }
    if let Err(m) = wipe_cache(&vg, &name, &h, &mut found) {
        return fail(err, &m);
    }
    let r = commit_and_activate(cl, &mut found, h, vg, &[&name], out, err);
    if r == 0 {
        let _ = writeln!(out, "  Logical volume \"{name}\" created.");
    }
    r
}

/// Zero the start of a new cache's metadata (its cache pool's `_cmeta`, or the start of
/// its cache volume).
fn wipe_cache(vg: &Vg, lv: &str, h: &VgHandle, found: &mut [Found]) -> Result<(), String> {
    let seg = vg
        .lv(lv)
        .and_then(|l| l.segments.first())
        .ok_or("no cache segment")?;
    let pool = udm_formats::lvm::edit::seg_str(seg, "cache_pool").ok_or("no cache pool")?;
    let p = vg.lv(pool).ok_or("no cache pool LV")?;
    let meta = match p.segments.first() {
        Some(s) if s.seg_type.starts_with("cache-pool") => {
            udm_formats::lvm::edit::seg_str(s, "metadata").unwrap_or(pool)
        }
        _ => pool,
    };
    wipe(vg, meta, h, found)
}

/// `lvconvert --type thin-pool|cache-pool VG/LV`, `lvconvert --type cache
/// --cachepool POOL|--cachevol VOL VG/LV`.
pub fn lvconvert_type(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let (vgname, lv, mut found, h) = match open_lv_arg(cl, err) {
        Ok(x) => x,
        Err(rc) => return rc,
    };
    let mut vg = h.meta.vg.clone();
    if vg.lv(&lv).is_none() {
        return fail(
            err,
            &format!("Failed to find logical volume \"{vgname}/{lv}\""),
        );
    };
    let (host, time) = (hostname(), now());
    let chunk = match chunk(cl) {
        Ok(c) => c,
        Err(m) => return fail(err, &m),
    };
    match cl.val("--type") {
        Some("cache") => {
            let Some(pool) = cl.val("--cachepool").or(cl.val("--cachevol")) else {
                return fail(
                    err,
                    "Please specify the cache pool or cache volume (--cachepool, --cachevol).",
                );
            };
            let pool = pool.rsplit('/').next().unwrap_or(pool).to_string();
            if let Err(r) = deactivate(cl, &h, &found, &pool, out, err) {
                return r;
            }
            if let Err(e) = vg.attach_cache(&lv, &pool, chunk) {
                return fail(err, &e.to_string());
            }
            if let Err(m) = wipe_cache(&vg, &lv, &h, &mut found) {
                return fail(err, &m);
            }
            let was_active = cl.activation() && activate::active_lvs(&h.meta.vg).contains(&lv);
            if was_active && activate::change_vg(cl, &h, &found, false, Some(&lv), out, err) != 0 {
                return ECMD_FAILED;
            }
            if let Err(m) = commit(&mut found, &h.slots, vg.clone(), cl) {
                return fail(err, &m);
            }
            if was_active {
                let mut h2 = h;
                h2.meta.vg = vg;
                if activate::change_vg(cl, &h2, &found, true, Some(&lv), out, err) != 0 {
                    return ECMD_FAILED;
                }
            }
            let _ = writeln!(out, "  Logical volume {vgname}/{lv} is now cached.");
            0
        }
        Some(t @ ("thin-pool" | "cache-pool")) => {
            let thin = if t == "thin-pool" {
                match pool_opts(cl) {
                    Ok(o) => Some(o),
                    Err(m) => return fail(err, &m),
                }
            } else {
                None
            };
            if cl.activation() && activate::active_lvs(&h.meta.vg).contains(&lv) {
                return fail(
                    err,
                    &format!(
                        "Cannot convert active logical volume {vgname}/{lv}; deactivate it first."
                    ),
                );
            }
            if let Err(e) = vg.convert_to_pool(&lv, thin, chunk, &host, time) {
                return fail(err, &e.to_string());
            }
            let meta = if thin.is_some() {
                format!("{lv}_tmeta")
            } else {
                format!("{lv}_cmeta")
            };
            if let Err(m) = wipe(&vg, &meta, &h, &mut found) {
                return fail(err, &m);
            }
            if let Err(m) = commit(&mut found, &h.slots, vg, cl) {
                return fail(err, &m);
            }
            let kind = if thin.is_some() { "thin" } else { "cache" };
            let _ = writeln!(out, "  Converted {vgname}/{lv} to {kind} pool.");
            0
        }
        Some(t) => fail(
            err,
            &format!("Conversion to {t} is not supported by udm lvm."),
        ),
        None => fail(err, "Please specify the conversion (--type or --merge)."),
    }
}
