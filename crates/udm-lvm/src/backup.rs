//! `vgcfgbackup` and `vgcfgrestore`: a VG's metadata as lvm2's backup file (the text
//! metadata with its header first, one tab per level) and back onto the VG's PVs, found by
//! their UUIDs. Files default to `backup/VG` in udm's state directory (lvm2's
//! `/etc/lvm/backup`); real lvm2 restores udm's backups and udm restores lvm2's.

use crate::session::{commit, find_vg, host, now, scan, Cmdline, Found};
use crate::{devices, ECMD_FAILED, EINVALID_CMD_LINE};
use std::io::Write;
use std::path::PathBuf;
use udm_formats::lvm::{Document, Item, Metadata, Value};

/// Where the backup of `vg` goes: `-f FILE` (`%s` becomes the VG name) or the state
/// directory's `backup/VG`.
fn file_for(cl: &Cmdline, vg: &str) -> PathBuf {
    match cl.val("-f") {
        Some(f) => PathBuf::from(f.replace("%s", vg)),
        None => devices::state_dir().join("backup").join(vg),
    }
}

/// The backup file text for `meta` (header first, as lvm2 writes backups).
pub fn backup_text(meta: &Metadata) -> String {
    let mut items = Vec::new();
    if let Some(g) = &meta.generated {
        items.push(Item::Comment(g.clone()));
        items.push(Item::Blank);
    }
    items.push(Item::pair("contents", Value::str(&meta.contents)));
    items.push(Item::pair("version", Value::Int(meta.version)));
    items.push(Item::Blank);
    items.push(Item::pair("description", Value::str(&meta.description)));
    items.push(Item::Blank);
    items.push(Item::Pair {
        key: "creation_host".into(),
        value: Value::str(&meta.creation_host),
        comment: meta.creation_host_comment.clone(),
    });
    items.push(Item::Pair {
        key: "creation_time".into(),
        value: Value::Int(meta.creation_time),
        comment: meta.creation_time_comment.clone(),
    });
    items.push(Item::Blank);
    items.push(meta.vg.to_item());
    Document { items }.print(true)
}

/// `vgcfgbackup [-f FILE] [VG…]`.
pub fn vgcfgbackup_cmd(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let found = scan(&cl.devices(), false, err);
    let names: Vec<String> = if cl.pos.is_empty() {
        let mut v: Vec<String> = found.iter().filter_map(|f| f.vg.clone()).collect();
        v.sort();
        v.dedup();
        v
    } else {
        cl.pos.clone()
    };
    let mut rc = 0;
    for n in names {
        let h = match find_vg(&found, &n) {
            Ok(h) => h,
            Err(m) => {
                let _ = writeln!(err, "  {m}");
                rc = ECMD_FAILED;
                continue;
            }
        };
        let (hostname, uname) = host();
        let meta = Metadata::new(h.meta.vg.clone(), &cl.typed, &hostname, &uname, now());
        let path = file_for(cl, &n);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(&path, backup_text(&meta)));
        match written {
            Ok(()) => {
                let _ = writeln!(out, "  Volume group \"{n}\" successfully backed up.");
            }
            Err(e) => {
                let _ = writeln!(err, "  {}: write failed: {e}", path.display());
                rc = ECMD_FAILED;
            }
        }
    }
    rc
}

/// `vgcfgrestore [-f FILE] VG`.
pub fn vgcfgrestore_cmd(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let [name] = &cl.pos[..] else {
        let _ = writeln!(
            err,
            "  vgcfgrestore: Please specify a *single* volume group to restore."
        );
        return EINVALID_CMD_LINE;
    };
    let fail = |err: &mut dyn Write, lines: &[String]| {
        for l in lines {
            let _ = writeln!(err, "  {l}");
        }
        let _ = writeln!(err, "  Restore failed.");
        ECMD_FAILED
    };
    let path = file_for(cl, name);
    let shown = path.display().to_string();
    let meta = match std::fs::read(&path) {
        Err(e) => {
            return fail(
                err,
                &[
                    format!("{shown}: stat failed: {}", crate::session::strerror(&e)),
                    "WARNING: couldn't read volume group metadata from file.".into(),
                    format!("Failed to read VG {name} from {shown}"),
                ],
            )
        }
        Ok(text) => match Metadata::parse(&text) {
            Ok(m) => m,
            Err(e) => {
                return fail(
                    err,
                    &[
                        format!("{shown}: {e}"),
                        "WARNING: couldn't read volume group metadata from file.".into(),
                        format!("Failed to read VG {name} from {shown}"),
                    ],
                )
            }
        },
    };
    if &meta.vg.name != name {
        return fail(
            err,
            &[format!("'{shown}' does not contain volume group '{name}'.")],
        );
    }
    let mut found: Vec<Found> = scan(&cl.devices(), true, err);
    let mut vg = meta.vg;
    let mut slots = Vec::new();
    let mut missing = 0;
    for pv in &mut vg.pvs {
        match found.iter().position(|f| f.header.pv_uuid == pv.id) {
            Some(i) => {
                if let Some(other) = found[i].vg.as_deref().filter(|o| o != name) {
                    return fail(
                        err,
                        &[format!(
                            "PV {} is in volume group {other}, not {name}.",
                            found[i].path
                        )],
                    );
                }
                pv.device = Some(found[i].path.clone());
                slots.push(Some(i));
            }
            None => {
                let _ = writeln!(err, "  Couldn't find device with uuid {}.", pv.id);
                missing += 1;
                slots.push(None);
            }
        }
    }
    if missing > 0 {
        return fail(
            err,
            &[format!(
                "Cannot restore Volume Group {name} with {missing} PVs marked as missing."
            )],
        );
    }
    if let Err(m) = commit(&mut found, &slots, vg, cl) {
        return fail(err, &[m]);
    }
    let _ = writeln!(out, "  Restored volume group {name}.");
    0
}
