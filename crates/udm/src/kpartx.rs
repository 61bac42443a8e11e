//! `udm kpartx` and `kpartx`: partition mappings through the udm daemon, as multipath-tools'
//! kpartx makes them. `-l` lists, `-a` adds, `-u` updates, `-d` deletes; `-p` delimiter,
//! `-r` read-only, `-v` verbose, `-g` force GPT, `-t` table type, `-s`/`-n`/`-f` accepted.
//!
//! The whole disk is an image file (mapped by its path; the partition names use its base
//! name where kpartx would use a loop device's), a block device such as a loop device (`7:N`
//! in the tables, as kpartx), or a udm device `/dev/mapper/NAME` (read through the daemon's
//! NBD export, `253:N` in the tables, the partitions' UUIDs `part<N>-<its UUID>`).
//!
//! Names are `<disk name><delimiter><N>`, the delimiter `p` when the disk name ends in a
//! digit. Logical partitions are mapped onto the whole disk at their absolute offsets; the
//! extended partition as its first two sectors. Without a parent UUID the partitions get
//! kpartx's made-up one, `part<N>-devnode_<MAJ>:<MIN>_Wh5pYvM` (image files:
//! `part<N>-file_<DEVMAJ>:<DEVMIN>:<INODE>_Wh5pYvM`). These rules live in
//! `udm_formats::part::kpartx`; here are the options, the daemon calls and the messages.

use crate::dmctl;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use udm_formats::part::kpartx::{self as rules, check_uuid, default_delim};
use udm_formats::part::{self, Disk, FileDisk, Kind, ScanOpts, Slice};
use udm_proto::{Client, DevInfo, DevSel, Line, Reply, Request};

const USAGE: &str = "\
multipath-tools v0.9.4 (12/19, 2022)
Usage:
  kpartx [-a|-d|-u|-l] [-r] [-p] [-f] [-g] [-s|-n] [-v] wholedisk
\t-a add partition devmappings
\t-r devmappings will be readonly
\t-d del partition devmappings
\t-u update partition devmappings
\t-l list partitions devmappings that would be added by -a
\t-p set device name-partition number delimiter
\t-g force GUID partition table (GPT)
\t-f force devmap create
\t-v verbose
\t-n nosync mode. Return before the partitions are created
\t-s sync mode (Default). Don't return until the partitions are created
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    List,
    Add,
    Delete,
    Update,
}

struct Opts {
    action: Action,
    ro: bool,
    verbose: bool,
    force_gpt: bool,
    force_devmap: bool,
    delim: Option<String>,
    /// `-t TYPE`: only this table type.
    only: Option<String>,
    device: String,
}

/// getopt("rladfgvp:t:snu") over `args`; `None` means print the usage and exit 1.
fn parse(args: &[String], err: &mut dyn Write) -> Option<Opts> {
    let mut o = Opts {
        action: Action::List,
        ro: false,
        verbose: false,
        force_gpt: false,
        force_devmap: false,
        delim: None,
        only: None,
        device: String::new(),
    };
    let mut pos = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            pos.extend(args[i..].iter().cloned());
            break;
        }
        if !a.starts_with('-') || a.len() == 1 {
            pos.push(a.clone());
            continue;
        }
        let chars: Vec<char> = a[1..].chars().collect();
        let mut k = 0;
        while k < chars.len() {
            let c = chars[k];
            k += 1;
            match c {
                'r' => o.ro = true,
                'l' => o.action = Action::List,
                'a' => o.action = Action::Add,
                'd' => o.action = Action::Delete,
                'u' => o.action = Action::Update,
                'f' => o.force_devmap = true,
                'g' => o.force_gpt = true,
                'v' => o.verbose = true,
                's' | 'n' => {}
                'p' | 't' => {
                    let val: String = if k < chars.len() {
                        let v = chars[k..].iter().collect();
                        k = chars.len();
                        v
                    } else if i < args.len() {
                        i += 1;
                        args[i - 1].clone()
                    } else {
                        let _ = writeln!(err, "kpartx: option requires an argument -- '{c}'");
                        return None;
                    };
                    if c == 'p' {
                        o.delim = Some(val);
                    } else {
                        o.only = Some(val);
                    }
                }
                _ => {
                    let _ = writeln!(err, "kpartx: invalid option -- '{c}'");
                    return None;
                }
            }
        }
    }
    // `kpartx [opts] device [diskdevice]`: the first names the disk.
    match pos.len() {
        1 | 2 => o.device = pos[0].clone(),
        _ => return None,
    }
    Some(o)
}

/// A udm device read through the daemon's NBD export.
struct NbdDisk(udm_nbd::NbdClient);

impl Disk for NbdDisk {
    fn sector_size(&self) -> u32 {
        512
    }
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.0
            .read(offset, buf)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }
}

/// The whole disk: what names, tables and UUIDs are made from, and a reader for it.
struct Parent {
    rules: rules::Parent,
    /// A udm device's own name (never deleted as one of its partitions).
    udm_name: Option<String>,
    disk: Option<Box<dyn Disk>>,
}

fn devno(rdev: u64) -> (u32, u32) {
    (libc::major(rdev), libc::minor(rdev))
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// A reader for a udm device: its NBD export, else its FUSE file.
fn udm_reader(c: &mut Client, dev: &str, name: &str) -> Result<Box<dyn Disk>, String> {
    let (nbd, fuse) = match c.call(Request::DaemonInfo) {
        Ok(Reply::Daemon {
            nbd_socket,
            fuse_dir,
            ..
        }) => (nbd_socket, fuse_dir),
        _ => (None, None),
    };
    if let Some(sock) = nbd {
        let nbd = udm_nbd::NbdClient::connect_unix(Path::new(&sock), name)
            .map_err(|e| format!("{dev}: {e}"))?;
        return Ok(Box::new(NbdDisk(nbd)));
    }
    if let Some(dir) = fuse {
        let path = Path::new(&dir).join(name);
        let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let size = file.metadata().map_err(|e| format!("{dev}: {e}"))?.len();
        return Ok(Box::new(FileDisk::image(file, size)));
    }
    Err(format!(
        "{dev}: the daemon exports it neither over NBD nor as a file"
    ))
}

/// Look a udm device up (`/dev/mapper/NAME`), with a reader over NBD when `read` is set.
fn udm_parent(c: &mut Client, dev: &str, name: &str, read: bool) -> Result<Parent, String> {
    let info = match c.call(Request::Info {
        dev: DevSel::Name(name.into()),
        inactive: false,
    }) {
        Ok(Reply::Info(i)) => i,
        _ => return Err(format!("failed to stat() {dev}")),
    };
    let uuid = if info.uuid.is_empty() {
        rules::devnode_uuid(info.major, info.minor)
    } else {
        info.uuid.clone()
    };
    let disk: Option<Box<dyn Disk>> = if read {
        Some(udm_reader(c, dev, name)?)
    } else {
        None
    };
    Ok(Parent {
        rules: rules::Parent {
            shown: dev.to_string(),
            mapname: name.to_string(),
            uuid,
            devarg: format!("{}:{}", info.major, info.minor),
        },
        udm_name: Some(name.to_string()),
        disk,
    })
}

/// Resolve the disk argument; failures are printed as kpartx prints them.
fn open_parent(
    o: &Opts,
    client: &mut Option<Client>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Parent, ()> {
    let dev = o.device.as_str();
    let read = o.action != Action::Delete;
    let meta = std::fs::metadata(dev);
    if let Some(name) = dev.strip_prefix("/dev/mapper/") {
        let host_block = meta.as_ref().is_ok_and(|m| m.file_type().is_block_device());
        if !host_block {
            if client.is_none() {
                *client = dmctl::connect(&udm_proto::default_socket(), err);
            }
            let Some(c) = client.as_mut() else {
                return Err(());
            };
            return udm_parent(c, dev, name, read).map_err(|m| {
                let _ = writeln!(out, "{m}");
            });
        }
    }
    let Ok(meta) = meta else {
        let _ = writeln!(out, "failed to stat() {dev}");
        return Err(());
    };
    let ft = meta.file_type();
    if ft.is_file() {
        let real: PathBuf = std::fs::canonicalize(dev).map_err(|e| {
            let _ = writeln!(err, "Error: {dev}: {e}");
        })?;
        let shown = real.display().to_string();
        let disk: Option<Box<dyn Disk>> = if read {
            let file = open(&real, err)?;
            Some(Box::new(FileDisk::image(file, meta.len())))
        } else {
            None
        };
        let (ma, mi) = devno(meta.dev());
        return Ok(Parent {
            rules: rules::Parent {
                mapname: basename(&shown).to_string(),
                uuid: rules::file_uuid(ma, mi, meta.ino()),
                devarg: udm_core::escape_arg(&shown).into_owned(),
                shown,
            },
            udm_name: None,
            disk,
        });
    }
    if !ft.is_block_device() {
        let _ = writeln!(err, "invalid device: {dev}");
        return Err(());
    }
    let (ma, mi) = devno(meta.rdev());
    let disk: Option<Box<dyn Disk>> = if read {
        let file = open(Path::new(dev), err)?;
        Some(Box::new(FileDisk::block_device(file)))
    } else {
        None
    };
    Ok(Parent {
        rules: rules::Parent {
            shown: dev.to_string(),
            mapname: basename(dev).to_string(),
            uuid: rules::devnode_uuid(ma, mi),
            devarg: format!("{ma}:{mi}"),
        },
        udm_name: None,
        disk,
    })
}

fn open(p: &Path, err: &mut dyn Write) -> Result<File, ()> {
    File::open(p).map_err(|e| {
        let _ = writeln!(err, "{}: {e}", p.display());
    })
}

/// The first table line of a device, when it has exactly one.
fn single_line(c: &mut Client, name: &str) -> Option<(String, String)> {
    match c.call(Request::Status {
        dev: DevSel::Name(name.into()),
        inactive: false,
        table: true,
        noflush: false,
    }) {
        Ok(Reply::Status { targets, .. }) if targets.len() == 1 => {
            let t = &targets[0];
            Some((t.ttype.clone(), t.params.clone()))
        }
        _ => None,
    }
}

fn list_devices(c: &mut Client) -> Vec<DevInfo> {
    match c.call(Request::List) {
        Ok(Reply::List(l)) => l,
        _ => Vec::new(),
    }
}

fn info(c: &mut Client, name: &str) -> Option<DevInfo> {
    match c.call(Request::Info {
        dev: DevSel::Name(name.into()),
        inactive: false,
    }) {
        Ok(Reply::Info(i)) => Some(i),
        _ => None,
    }
}

/// kpartx's `dm_find_part`: the partition map `name` if present; else one carrying
/// `part<N>-<uuid>` over the same disk, renamed to `name`.
fn find_part(
    c: &mut Client,
    p: &rules::Parent,
    name: &str,
    n: usize,
    verbose: bool,
    err: &mut dyn Write,
) -> Option<DevInfo> {
    if let Some(i) = info(c, name) {
        return Some(i);
    }
    let want = format!("part{n}-{}", p.uuid);
    let other = list_devices(c).into_iter().find(|d| d.uuid == want)?;
    let (ttype, params) = single_line(c, &other.name)?;
    if ttype != "linear" || !rules::maps_over(&params, &p.devarg) {
        return None;
    }
    if verbose {
        let _ = writeln!(
            err,
            "found map {} for uuid {want}, renaming to {name}",
            other.name
        );
    }
    match c.call(Request::Rename {
        dev: DevSel::Name(other.name.clone()),
        new_name: name.into(),
    }) {
        Ok(_) => info(c, name),
        Err(_) => {
            if verbose {
                let _ = writeln!(err, "renaming {}->{name} failed", other.name);
            }
            None
        }
    }
}

/// `-a`/`-u`: create or reload every partition map. Returns the failure count.
fn add(
    c: &mut Client,
    p: &rules::Parent,
    o: &Opts,
    delim: &str,
    slices: &[Slice],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let mut r = 0;
    for m in p.maps(delim, slices) {
        let name = &m.name;
        let existing = find_part(c, p, name, m.n, o.verbose, err);
        if let Some(e) = &existing {
            if !e.uuid.is_empty() {
                if let Err(why) = check_uuid(&p.uuid, &e.uuid) {
                    let _ = writeln!(err, "{name} is already in use, and {why}");
                    if !m.contained {
                        r += 1;
                    }
                    continue;
                }
            }
        }
        let line = Line {
            start: 0,
            len: m.len,
            ttype: "linear".into(),
            params: m.params.clone(),
        };
        let sel = DevSel::Name(name.clone());
        let ok = if existing.is_some() {
            c.call(Request::Load {
                dev: sel.clone(),
                table: vec![line],
                read_only: o.ro,
            })
            .is_ok()
                && c.call(Request::Resume {
                    dev: sel,
                    noflush: true,
                    nolockfs: true,
                })
                .is_ok()
        } else {
            c.call(Request::Create {
                name: name.clone(),
                uuid: m.uuid.clone(),
            })
            .map_err(|e| dmctl::report(err, "create", name, &e))
            .is_ok()
                && dmctl::load_and_resume(c, err, name, vec![line], o.ro).is_ok()
        };
        if !ok {
            let _ = writeln!(err, "create/reload failed on {name}");
            if !m.contained {
                r += 1;
            }
            continue;
        }
        if o.verbose {
            let (ma, mi) = info(c, name).map_or((0, 0), |i| (i.major, i.minor));
            let _ = writeln!(
                out,
                "add map {name} ({ma}:{mi}): 0 {} linear {}",
                m.len, m.params
            );
        }
    }
    if o.action == Action::Update {
        for (n, name) in p.stale(delim, slices) {
            let Some(e) = find_part(c, p, &name, n, o.verbose, err) else {
                continue;
            };
            if !e.uuid.is_empty() {
                if let Err(why) = check_uuid(&p.uuid, &e.uuid) {
                    let _ = writeln!(err, "{name} is {why}. Not removing");
                    continue;
                }
            }
            let gone = c.call(Request::Remove {
                dev: DevSel::Name(name.clone()),
                deferred: false,
            });
            if gone.is_err() {
                let _ = writeln!(err, "failed to remove {name}");
                r += 1;
                continue;
            }
            if o.verbose {
                let _ = writeln!(out, "del devmap : {name}");
            }
        }
    }
    r
}

/// `-d`: remove every linear map over the disk that is one of its kpartx partitions.
fn delete(c: &mut Client, p: &Parent, o: &Opts, out: &mut dyn Write) -> i32 {
    for d in list_devices(c) {
        if p.udm_name.as_deref() == Some(d.name.as_str()) {
            continue;
        }
        let Some((ttype, params)) = single_line(c, &d.name) else {
            continue;
        };
        match p.rules.deletable(&ttype, &params, &d.uuid, o.force_devmap) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(why) => {
                if o.verbose {
                    let _ = writeln!(out, "{}{why}", d.name);
                }
                continue;
            }
        }
        if d.open_count > 0 {
            if o.verbose {
                let _ = writeln!(out, "{} is in use. Not removing", d.name);
            }
            return 1;
        }
        let gone = c.call(Request::Remove {
            dev: DevSel::Name(d.name.clone()),
            deferred: false,
        });
        if gone.is_err() {
            if o.verbose {
                let _ = writeln!(out, "{}: failed to remove", d.name);
            }
            return 1;
        }
        if o.verbose {
            let _ = writeln!(out, "del devmap : {}", d.name);
        }
    }
    0
}

/// Run kpartx with `args` (after the program name); returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    run(args, &mut stdout.lock(), &mut stderr.lock())
}

pub fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let Some(o) = (if args.is_empty() {
        None
    } else {
        parse(args, err)
    }) else {
        let _ = out.write_all(USAGE.as_bytes());
        return 1;
    };
    let mut client = None;
    if o.action != Action::List {
        client = dmctl::connect(&udm_proto::default_socket(), err);
        if client.is_none() {
            let _ = writeln!(err, "device mapper prerequisites not met");
            return 1;
        }
    }
    let Ok(mut p) = open_parent(&o, &mut client, out, err) else {
        return 1;
    };
    let delim = o
        .delim
        .clone()
        .unwrap_or_else(|| default_delim(&p.rules.mapname).to_string());
    if o.action == Action::Delete {
        let c = client.as_mut().expect("connected above");
        return delete(c, &p, &o, out);
    }
    let Some(disk) = p.disk.as_mut() else {
        return 1;
    };
    let only = match o.only.as_deref() {
        None => None,
        Some("gpt") => Some(Kind::Gpt),
        Some("dos") => Some(Kind::Dos),
        // A type udm does not read (bsd, sun, mac, …): nothing found.
        Some(_) => return 0,
    };
    let opts = ScanOpts {
        force_gpt: o.force_gpt,
        only,
    };
    let scan = match part::read_slices(disk.as_mut(), opts) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(err, "{}: {e}", p.rules.shown);
            return 1;
        }
    };
    let Some(scan) = scan else {
        return 0;
    };
    for w in &scan.warnings {
        let _ = writeln!(err, "{w}");
    }
    match o.action {
        Action::List => {
            let _ = out.write_all(p.rules.list(&delim, &scan.slices).as_bytes());
            0
        }
        _ => {
            let c = client.as_mut().expect("connected above");
            add(c, &p.rules, &o, &delim, &scan.slices, out, err)
        }
    }
}
