//! `vgcfgbackup` and `vgcfgrestore`: a VG's metadata as lvm2's backup file (the text
//! metadata with its header first, one tab per level) and back onto the VG's PVs, found by
//! their UUIDs. Files default to `backup/VG` in udm's state directory (lvm2's
//! `/etc/lvm/backup`); real lvm2 restores udm's backups and udm restores lvm2's. As lvm2,
//! every change archives the metadata before it (`archive/VG_NNNNN-RANDOM.vg`) and backs up
//! the one after it; `vgcfgrestore --list VG` lists them.

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

fn archive_dir() -> PathBuf {
    devices::state_dir().join("archive")
}

fn write_file(path: &std::path::Path, text: &str) {
    // As lvm2, a failed archive or backup does not fail the command.
    let _ = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|_| std::fs::write(path, text));
}

/// The `VG_NNNNN-R.vg` archives of `vg`, oldest first: (index, path).
fn archives(vg: &str) -> Vec<(u32, PathBuf)> {
    let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir(archive_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let rest = n.strip_prefix(vg)?.strip_prefix('_')?.strip_suffix(".vg")?;
            let (idx, _) = rest.split_once('-')?;
            Some((idx.parse().ok()?, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// Archive `old` (the metadata before the command `cl` changes it).
pub(crate) fn archive(old: &Metadata, cl: &Cmdline) {
    let name = &old.vg.name;
    let next = archives(name).last().map_or(0, |a| a.0 + 1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let rand = (nanos ^ std::process::id().rotate_left(16)) % 1_000_000_000;
    let (hostname, uname) = host();
    let meta = Metadata::new(
        old.vg.clone(),
        &format!("Created *before* executing '{}'", cl.typed),
        &hostname,
        &uname,
        now(),
    );
    let path = archive_dir().join(format!("{name}_{next:05}-{rand}.vg"));
    write_file(&path, &backup_text(&meta));
}

/// Back up `new` (the metadata the command `cl` wrote).
pub(crate) fn backup_after(new: &Metadata, cl: &Cmdline) {
    let (hostname, uname) = host();
    let meta = Metadata::new(
        new.vg.clone(),
        &format!("Created *after* executing '{}'", cl.typed),
        &hostname,
        &uname,
        now(),
    );
    let path = devices::state_dir().join("backup").join(&new.vg.name);
    write_file(&path, &backup_text(&meta));
}

/// `vgcfgrestore --list VG`: the archives and the backup of VG, as lvm2 lists them.
fn list(name: &str, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut files: Vec<PathBuf> = archives(name).into_iter().map(|a| a.1).collect();
    let backup = devices::state_dir().join("backup").join(name);
    if backup.is_file() {
        files.push(backup);
    }
    if files.is_empty() {
        let _ = writeln!(err, "  No archives found in {}.", archive_dir().display());
        return ECMD_FAILED;
    }
    for f in files {
        let Ok(m) = std::fs::read(&f)
            .map_err(|_| ())
            .and_then(|t| Metadata::parse(&t).map_err(|_| ()))
        else {
            continue;
        };
        let base = f
            .file_name()
            .map(|b| b.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = write!(
            out,
            "   \n  File:\t\t{}/{base}\n  VG name:    \t{}\n  Description:\t{}\n  Backup Time:\t{}\n\n",
            f.display(),
            m.vg.name,
            m.description,
            udm_formats::lvm::model::ctime(m.creation_time)
        );
    }
    0
}

/// `vgcfgrestore [-f FILE] VG`, `vgcfgrestore --list VG`.
pub fn vgcfgrestore_cmd(cl: &Cmdline, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    if cl.flag("--list") {
        let [name] = &cl.pos[..] else {
            let _ = writeln!(err, "  Please specify a *single* volume group.");
            return EINVALID_CMD_LINE;
        };
        return list(name, out, err);
    }
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
