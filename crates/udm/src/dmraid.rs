//! `udm dmraid` and `dmraid`: ATARAID sets (Intel Matrix/isw and SNIA DDF1) read from the disks named on the
//! command line — image files or block devices; nothing is scanned by surprise. `-r` lists
//! the raid disks, `-s` the sets, `-ay` activates them through the daemon (`-t`: print the
//! tables instead), `-an` removes them. Formats and table rules live in
//! `udm_formats::ataraid`; here are the options, the serial look-up and the printing.
//!
//! A disk's serial (how Intel metadata knows its members) comes from `<path>.serial` when that
//! file exists (dmraid's own test convention), else from sysfs for a block device
//! (`device/vpd_pg80`, then `serial`).

use crate::dmctl;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use udm_formats::ataraid::ddf1::{ddf1_sets, Ddf1};
use udm_formats::ataraid::{self, AtaraidError, IswMember, Set};
use udm_formats::part::FileDisk;
use udm_proto::{DevSel, Line, Reply, Request};

const USAGE: &str = "\
udm dmraid: ATARAID sets (Intel Matrix, DDF1) on the named disks
Usage:
  dmraid -r DISK...                list the raid disks
  dmraid -s DISK... [SET...]       list the raid sets
  dmraid -ay [-t] DISK... [SET...] activate the sets (-t: print the tables only)
  dmraid -an DISK... [SET...]      remove the sets' devices
DISK: an image file or block device; SET: a set or group name (default: all found)
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Disks,
    Sets,
    Activate(bool),
    Deactivate,
}

fn parse(args: &[String]) -> Option<(Action, bool, Vec<String>)> {
    let mut action = None;
    let mut test = false;
    let mut disks = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-r" | "--raid_devices" => action = Some(Action::Disks),
            "-s" | "--sets" => action = Some(Action::Sets),
            "-t" | "--test" => test = true,
            "-ay" | "-ya" => action = Some(Action::Activate(false)),
            "-an" | "-na" => action = Some(Action::Deactivate),
            "-a" | "--activate" => match it.next().map(|s| s.as_str()) {
                Some("y" | "yes") => action = Some(Action::Activate(false)),
                Some("n" | "no") => action = Some(Action::Deactivate),
                _ => return None,
            },
            s if s.starts_with('-') => return None,
            s => disks.push(s.to_string()),
        }
    }
    let action = match action? {
        Action::Activate(_) => Action::Activate(test),
        a => a,
    };
    Some((action, test, disks))
}

/// The serial dmraid would see for `path`.
fn serial(path: &str) -> Option<String> {
    if let Ok(s) = std::fs::read_to_string(format!("{path}.serial")) {
        return Some(s.trim().to_string());
    }
    let md = std::fs::metadata(path).ok()?;
    if !md.file_type().is_block_device() {
        return None;
    }
    let (maj, min) = (libc::major(md.rdev()), libc::minor(md.rdev()));
    let dir = format!("/sys/dev/block/{maj}:{min}");
    if let Ok(b) = std::fs::read(format!("{dir}/device/vpd_pg80")) {
        if b.len() > 4 {
            return Some(String::from_utf8_lossy(&b[4..]).trim().to_string());
        }
    }
    std::fs::read_to_string(format!("{dir}/serial"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn open(path: &str) -> std::io::Result<FileDisk> {
    let f = File::open(path)?;
    let md = f.metadata()?;
    if md.file_type().is_block_device() {
        Ok(FileDisk::block_device(f))
    } else {
        Ok(FileDisk::image(f, md.len()))
    }
}

/// The raid disks found: Intel members and DDF disks, each in argument order.
#[derive(Default)]
struct Found {
    isw: Vec<IswMember>,
    ddf: Vec<(String, Ddf1)>,
    /// `-r` lines in argument order.
    lines: Vec<String>,
}

/// Read every named disk (Intel first, then DDF); disks with neither are skipped, errors
/// printed.
fn members(disks: &[String], err: &mut dyn Write) -> Found {
    let mut out = Found::default();
    for p in disks {
        let mut d = match open(p) {
            Ok(d) => d,
            Err(e) => {
                let _ = writeln!(err, "ERROR: opening \"{p}\": {e}");
                continue;
            }
        };
        let serial = serial(p).unwrap_or_default();
        match IswMember::read(p, &mut d, &serial) {
            Ok(m) => {
                out.lines.push(m.raid_dev_line());
                out.isw.push(m);
                continue;
            }
            Err(AtaraidError::NotFound(_)) => {}
            Err(e) => {
                let _ = writeln!(err, "ERROR: {e}");
                continue;
            }
        }
        match Ddf1::read(&mut d) {
            Ok(m) => {
                out.lines.push(m.raid_dev_line(p));
                out.ddf.push((p.clone(), m));
            }
            Err(AtaraidError::NotFound(_)) => {}
            Err(e) => {
                let _ = writeln!(err, "ERROR: {e}");
            }
        }
    }
    out
}

fn no_disks(disks: &[String], what: &str, err: &mut dyn Write) -> i32 {
    let _ = writeln!(
        err,
        "no raid {what} and with names: \"{}\"",
        disks.join(",")
    );
    1
}

/// The names of the daemon's devices (none when no daemon answers).
fn active_names() -> Vec<String> {
    match udm_proto::Client::connect(&udm_proto::default_socket()) {
        Ok(mut c) => match c.call(Request::List) {
            Ok(Reply::List(l)) => l.into_iter().map(|d| d.name).collect(),
            _ => Vec::new(),
        },
        Err(_) => Vec::new(),
    }
}

/// `dmraid -s` for one volume set under its group.
fn set_lines(s: &Set, active: bool, out: &mut dyn Write) {
    let _ = write!(
        out,
        "--> {}{}Subset\nname   : {}\nsize   : {}\nstride : {}\ntype   : {}\nstatus : {}\nsubsets: 0\ndevs   : {}\nspares : 0\n",
        if s.status == "inconsistent" { "*Inconsistent* " } else { "" },
        if active { "Active " } else { "" },
        s.name,
        s.size(),
        s.stride,
        s.kind,
        s.status,
        s.devs.len()
    );
}

pub fn main(args: &[String]) -> i32 {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    run(args, &mut stdout.lock(), &mut stderr.lock())
}

pub fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let Some((action, _test, disks)) = parse(args) else {
        let _ = err.write_all(USAGE.as_bytes());
        return 1;
    };
    // Existing paths are disks; any other word names a set (or group) to act on, as
    // dmraid's own trailing arguments do.
    let (disks, names): (Vec<String>, Vec<String>) = disks
        .into_iter()
        .partition(|a| std::path::Path::new(a).exists());
    if disks.is_empty() {
        let _ = writeln!(err, "dmraid: name the disks (image files or block devices)");
        return 1;
    }
    let found = members(&disks, err);
    if found.lines.is_empty() {
        return no_disks(&disks, "disks", err);
    }
    if action == Action::Disks {
        for l in &found.lines {
            let _ = writeln!(out, "{l}");
        }
        return 0;
    }
    let sets = match ataraid::isw_sets(&found.isw).and_then(|mut s| {
        s.extend(ddf1_sets(&found.ddf)?);
        s.sort_by(|a, b| a.group.cmp(&b.group));
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(err, "ERROR: {e}");
            return 1;
        }
    };
    let sets: Vec<Set> = sets
        .into_iter()
        .filter(|s| names.is_empty() || names.iter().any(|n| *n == s.name || *n == s.group))
        .collect();
    if sets.is_empty() {
        return no_disks(&disks, "sets", err);
    }
    match action {
        Action::Sets => {
            let active = active_names();
            let mut group = "";
            for s in &sets {
                if s.group != group {
                    group = &s.group;
                    let _ = writeln!(out, "*** Group superset {group}");
                }
                if s.devs.len() < s.expected {
                    let short = AtaraidError::WrongDevices {
                        format: s.format,
                        name: s.name.clone(),
                        found: s.devs.len(),
                        expected: s.expected,
                    };
                    refused(s, &short, err);
                }
                set_lines(s, active.contains(&s.name), out);
            }
            0
        }
        Action::Activate(true) => {
            let mut rc = 0;
            for s in &sets {
                match s.table() {
                    Ok(t) => {
                        for l in t {
                            let _ = writeln!(out, "{}: {l}", s.name);
                        }
                    }
                    Err(e) => rc = refused(s, &e, err),
                }
            }
            rc
        }
        Action::Activate(false) => activate(&sets, err),
        Action::Deactivate => deactivate(&sets, err),
        Action::Disks => unreachable!("handled above"),
    }
}

/// dmraid's words for a set it cannot map: a short set named once per member found.
fn refused(s: &Set, e: &AtaraidError, err: &mut dyn Write) -> i32 {
    match e {
        AtaraidError::WrongDevices { .. } => {
            for d in &s.devs {
                let _ = writeln!(err, "ERROR: {e} on {}", d.path);
            }
        }
        _ => {
            let _ = writeln!(err, "ERROR: {e}");
        }
    }
    1
}

fn to_lines(table: &[String]) -> Vec<Line> {
    table
        .iter()
        .filter_map(|l| {
            let mut w = l.splitn(4, ' ');
            Some(Line {
                start: w.next()?.parse().ok()?,
                len: w.next()?.parse().ok()?,
                ttype: w.next()?.to_string(),
                params: dmctl::absolute_words(w.next().unwrap_or("")),
            })
        })
        .collect()
}

fn activate(sets: &[Set], err: &mut dyn Write) -> i32 {
    let Some(mut c) = dmctl::connect(&udm_proto::default_socket(), err) else {
        return 1;
    };
    let mut rc = 0;
    for s in sets {
        let t = match s.table() {
            Ok(t) => t,
            Err(e) => {
                rc = refused(s, &e, err);
                continue;
            }
        };
        let created = c
            .call(Request::Create {
                name: s.name.clone(),
                uuid: format!("DMRAID-{}", s.name),
            })
            .map_err(|e| dmctl::report(err, "create", &s.name, &e));
        if created.is_err()
            || dmctl::load_and_resume(&mut c, err, &s.name, to_lines(&t), false).is_err()
        {
            let _ = writeln!(err, "ERROR: dos: activating \"{}\"", s.name);
            rc = 1;
        }
    }
    rc
}

fn deactivate(sets: &[Set], err: &mut dyn Write) -> i32 {
    let Some(mut c) = dmctl::connect(&udm_proto::default_socket(), err) else {
        return 1;
    };
    let mut rc = 0;
    for s in sets {
        if let Err(e) = c.call(Request::Remove {
            dev: DevSel::Name(s.name.clone()),
            deferred: false,
        }) {
            dmctl::report(err, "remove", &s.name, &e);
            rc = 1;
        }
    }
    rc
}
