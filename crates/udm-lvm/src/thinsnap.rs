//! `lvcreate -s VG/THIN [-n NAME]` without a size (a thin snapshot: `create_snap` in the
//! pool) and `lvcreate -s --thinpool POOL VG/LV [-n NAME]` (a thin volume over the
//! read-only external origin LV: `create_thin` in the pool), as lvm2: the pool messages go
//! first, then the metadata naming the new LV is committed. A thin snapshot is flagged
//! `ACTIVATION_SKIP` and stays inactive; an external-origin volume is activated.

use crate::activate;
use crate::fail;
use crate::lvcmds::{open_vg, split_lv};
use crate::pools::commit_and_activate;
use crate::session::{commit, hostname, now, Cmdline, VgHandle};
use std::io::Write;

/// True for `lvcreate -s` without `-L`/`-l`/`-V` (a thin snapshot or external origin).
pub fn wants(cl: &Cmdline) -> bool {
    cl.flag("-s") && cl.val("-L").is_none() && cl.val("-l").is_none() && cl.val("-V").is_none()
}

pub fn lvcreate(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let Some((vgname, origin)) = cl.pos.first().and_then(|t| split_lv(t)) else {
        return fail(
            err,
            "Please specify a logical volume to act as the snapshot origin.",
        );
    };
    let external = cl
        .val("--thinpool")
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_string());
    let (found, h) = match open_vg(cl, &vgname, err) {
        Ok(x) => x,
        Err(m) => return fail(err, &m),
    };
    let mut vg = h.meta.vg.clone();
    let name = match cl.val("-n") {
        Some(n) => n.to_string(),
        None => (0..)
            .map(|i| format!("lvol{i}"))
            .find(|n| vg.lv(n).is_none())
            .expect("a free name"),
    };
    if !cl.activation() {
        return fail(
            err,
            "Can't create snapshot without using device-mapper kernel driver.",
        );
    }
    if external.is_some() && activate::active_lvs(&vg).contains(&origin) {
        return fail(err, "Cannot use active LV for the external origin.");
    }
    let (host, time) = (hostname(), now());
    let (id, tid, origin_id) =
        match vg.create_thin_snapshot(&name, &origin, external.as_deref(), &host, time) {
            Ok(x) => x,
            Err(e) => return fail(err, &e.to_string()),
        };
    let pool = vg
        .lv(&name)
        .and_then(|l| l.segments.first())
        .and_then(|s| udm_formats::lvm::edit::seg_str(s, "thin_pool"))
        .unwrap_or("")
        .to_string();
    let first = match origin_id {
        Some(o) => vec!["create_snap".to_string(), id.to_string(), o.to_string()],
        None => vec!["create_thin".to_string(), id.to_string()],
    };
    let msgs = vec![
        first,
        vec![
            "set_transaction_id".to_string(),
            tid.to_string(),
            (tid + 1).to_string(),
        ],
    ];
    let h_new = VgHandle {
        meta: udm_formats::lvm::Metadata {
            vg: vg.clone(),
            ..h.meta.clone()
        },
        slots: h.slots.clone(),
    };
    let pool_was_active = match activate::pool_messages(&h_new, &found, &pool, &name, &msgs, err) {
        Ok(a) => a,
        Err(m) => return fail(err, &m),
    };
    let mut found = found;
    let mut lvs: Vec<&str> = Vec::new();
    if pool_was_active {
        lvs.push(&pool);
    }
    if external.is_some() {
        lvs.push(&name);
    }
    let r = if lvs.is_empty() {
        match commit(&mut found, &h.slots, vg, cl) {
            Ok(()) => 0,
            Err(m) => fail(err, &m),
        }
    } else {
        commit_and_activate(cl, &mut found, h, vg, &lvs, out, err)
    };
    if r == 0 {
        let _ = writeln!(out, "  Logical volume \"{name}\" created.");
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sizeless_snapshots_are_thin() {
        let mk = |vals: &[(&str, &str)], flags: &[&str]| Cmdline {
            vals: vals
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        };
        assert!(wants(&mk(&[], &["-s"])));
        assert!(wants(&mk(&[("--thinpool", "vg/pool")], &["-s"])));
        assert!(!wants(&mk(&[("-L", "4M")], &["-s"])));
        assert!(!wants(&mk(&[("-l", "10%ORIGIN")], &["-s"])));
        assert!(!wants(&mk(&[("-V", "1G")], &["-s"])));
        assert!(!wants(&mk(&[], &[])));
    }
}
