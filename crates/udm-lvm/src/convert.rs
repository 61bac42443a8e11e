//! `lvconvert`: `--merge VG/SNAP` (a snapshot merged back into its origin, as lvm2 does:
//! at once when the origin is active — the origin's table becomes `snapshot-merge`, the
//! merge is followed to its end and the snapshot removed — else on the origin's next
//! activation), `--splitcache`/`--uncache` (an active cache goes down, its origin comes
//! back up plain), and the `--type` conversions of [`crate::pools`].

use crate::fail;
use crate::lvcmds::open_lv_arg;
use crate::session::{commit, Cmdline, Found, VgHandle};
use crate::{activate, ECMD_FAILED};
use std::io::Write;
use std::time::{Duration, Instant};
use udm_formats::lvm::dmplan::{dm_name, Mode};
use udm_proto::{Client, DevSel, Reply, Request};

/// `lvconvert …`.
pub fn lvconvert_cmd(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    if cl.flag("--merge") {
        return merge(cl, out, err);
    }
    if cl.flag("--splitcache") || cl.flag("--uncache") {
        return split_cache(cl, out, err);
    }
    crate::pools::lvconvert_type(cl, out, err)
}

/// The `snapshot-merge` status of `dev`: (allocated, metadata) sectors.
fn merge_status(c: &mut Client, dev: &str) -> Option<(u64, u64)> {
    let Ok(Reply::Status { targets, .. }) = c.call(Request::Status {
        dev: DevSel::Name(dev.into()),
        inactive: false,
        table: false,
        noflush: false,
    }) else {
        return None;
    };
    let t = targets.first()?;
    let (alloc, rest) = t.params.split_once('/')?;
    let meta = rest.split_whitespace().nth(1)?;
    Some((alloc.trim().parse().ok()?, meta.parse().ok()?))
}

/// Wait until the merge into `dev` is done (at most `limit`).
fn wait_merged(c: &mut Client, dev: &str, limit: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match merge_status(c, dev) {
            Some((a, m)) if a == m => return Ok(()),
            Some(_) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
            Some((a, m)) => {
                return Err(format!(
                    "Merge into {dev} did not finish ({a}/{m} sectors left)."
                ))
            }
            None => return Err(format!("{dev} is not merging.")),
        }
    }
}

/// `lvconvert --merge VG/SNAP`.
fn merge(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let (vgname, snap, mut found, h) = match open_lv_arg(cl, err) {
        Ok(x) => x,
        Err(rc) => return rc,
    };
    let mut vg = h.meta.vg.clone();
    let origin = match vg.start_merge(&snap) {
        Ok(o) => o,
        Err(e) => return fail(err, &e.to_string()),
    };
    let active = cl.activation() && activate::active_lvs(&h.meta.vg).contains(&origin);
    if !active {
        if let Err(m) = commit(&mut found, &h.slots, vg, cl) {
            return fail(err, &m);
        }
        let _ = writeln!(
            out,
            "  Merging of snapshot {vgname}/{snap} will occur on next activation of {vgname}/{origin}."
        );
        return 0;
    }
    // The snapshot goes, the origin starts merging; then the merge is followed to its end.
    if activate::change_vg(cl, &h, &found, false, Some(&snap), out, err) != 0 {
        return ECMD_FAILED;
    }
    if let Err(m) = commit(&mut found, &h.slots, vg.clone(), cl) {
        return fail(err, &m);
    }
    vg.seqno += 1;
    let h2 = VgHandle {
        meta: udm_formats::lvm::Metadata {
            vg: vg.clone(),
            ..h.meta.clone()
        },
        slots: h.slots.clone(),
    };
    if let Err(m) = activate::reload(cl, &h2, &found, &origin, err) {
        return fail(err, &m);
    }
    let _ = writeln!(out, "  Merging of volume {vgname}/{snap} started.");
    finish(cl, &mut found, h2, &origin, out, err)
}

/// Follow the merge into active `origin` to its end, then drop the snapshot from the
/// metadata and put the origin back on its own table.
fn finish(
    cl: &Cmdline,
    found: &mut [Found],
    h: VgHandle,
    origin: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let vgname = h.meta.vg.name.clone();
    let Some(mut c) = udm_proto::libdm::connect(&udm_proto::default_socket(), err) else {
        return ECMD_FAILED;
    };
    let top = dm_name(&vgname, origin, None);
    if let Err(m) = wait_merged(&mut c, &top, Duration::from_secs(600)) {
        return fail(err, &m);
    }
    let _ = writeln!(out, "  {vgname}/{origin}: Merged: 100.00%");
    // The merging layers of the old plan, to remove once the origin is plain again.
    let layers = match activate::devices_of(&h, found, origin, Mode::Complete) {
        Ok(d) => d,
        Err(m) => return fail(err, &m),
    };
    let mut vg = h.meta.vg.clone();
    if let Err(e) = vg.finish_merge(origin) {
        return fail(err, &e.to_string());
    }
    if let Err(m) = commit(found, &h.slots, vg.clone(), cl) {
        return fail(err, &m);
    }
    vg.seqno += 1;
    let plain = VgHandle {
        meta: udm_formats::lvm::Metadata {
            vg,
            ..h.meta.clone()
        },
        slots: h.slots.clone(),
    };
    if let Err(m) = activate::reload(cl, &plain, found, origin, err) {
        return fail(err, &m);
    }
    for d in layers.iter().filter(|d| d.name != top).rev() {
        if let Err(e) = c.call(Request::Remove {
            dev: DevSel::Name(d.name.clone()),
            deferred: false,
        }) {
            udm_proto::libdm::report(err, "remove", &d.name, &e);
            return ECMD_FAILED;
        }
    }
    0
}

/// `lvconvert --splitcache|--uncache VG/LV`: LV keeps its origin's data; the cache pool or
/// volume is detached (shown again under its own name) or removed. An active writeback
/// cache is refused (its dirty blocks would have to be written back first).
fn split_cache(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let remove = cl.flag("--uncache");
    let (vgname, lv, mut found, h) = match open_lv_arg(cl, err) {
        Ok(x) => x,
        Err(rc) => return rc,
    };
    let mut vg = h.meta.vg.clone();
    let active = cl.activation() && activate::active_lvs(&vg).contains(&lv);
    let writeback = vg
        .lv(&lv)
        .and_then(|l| l.segments.first())
        .map(|s| {
            let pool = udm_formats::lvm::edit::seg_str(s, "cache_pool").unwrap_or("");
            let ps = vg.lv(pool).and_then(|p| p.segments.first());
            [Some(s), ps]
                .into_iter()
                .flatten()
                .any(|x| udm_formats::lvm::edit::seg_str(x, "cache_mode") == Some("writeback"))
        })
        .unwrap_or(false);
    if active && writeback {
        return fail(
            err,
            &format!("Splitting the active writeback cache of {vgname}/{lv} is not supported by udm lvm: deactivate it first."),
        );
    }
    let base = match vg.split_cache(&lv, remove) {
        Ok(b) => b,
        Err(e) => return fail(err, &e.to_string()),
    };
    if active && activate::change_vg(cl, &h, &found, false, Some(&lv), out, err) != 0 {
        return ECMD_FAILED;
    }
    if let Err(m) = commit(&mut found, &h.slots, vg.clone(), cl) {
        return fail(err, &m);
    }
    if active {
        let mut h2 = h;
        h2.meta.vg = vg;
        if activate::change_vg(cl, &h2, &found, true, Some(&lv), out, err) != 0 {
            return ECMD_FAILED;
        }
    }
    if remove {
        let _ = writeln!(out, "  Logical volume \"{base}\" successfully removed.");
        let _ = writeln!(
            out,
            "  Logical volume {vgname}/{lv} is not cached and {vgname}/{base} is removed."
        );
    } else {
        let _ = writeln!(
            out,
            "  Logical volume {vgname}/{lv} is not cached and {vgname}/{base} is unused."
        );
    }
    0
}
