//! What every changing lvm command shares: its parsed command line (options under their
//! canonical short spellings), the devices it may read, the PVs
//! found on them, a VG with its disks in VG order, and writing a changed VG back (seqno +1,
//! every metadata area, lvm2's description line). Messages are lvm2's.

use crate::devices;
use std::io::{BufRead, Write};
use udm_formats::lvm::{read_vg, scan_pv, write_vg, Disk, LvmError, Metadata, PvHeader, Vg};

/// One parsed command line: options that take a value and flags under their canonical
/// names (`-L`, `--type`, `-y`, …), and positional arguments.
#[derive(Debug, Default)]
pub struct Cmdline {
    pub vals: Vec<(String, String)>,
    pub flags: Vec<String>,
    pub pos: Vec<String>,
    /// The command and its arguments as typed (for the metadata description).
    pub typed: String,
}

impl Cmdline {
    /// A command line of `NAME VALUE` options only (for tests).
    #[cfg(test)]
    pub(crate) fn with_vals(vals: &[(&str, &str)]) -> Cmdline {
        Cmdline {
            vals: vals
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    pub fn val(&self, name: &str) -> Option<&str> {
        self.vals
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    /// `-y` or `-f`: no questions.
    pub fn yes(&self) -> bool {
        self.flag("-y") || self.flag("-f")
    }

    /// False under `--config 'global{activation=0}'` (metadata only, as lvm2).
    pub fn activation(&self) -> bool {
        let cfg: String = self
            .vals
            .iter()
            .filter(|(k, _)| k == "--config")
            .map(|(_, v)| v.replace(' ', ""))
            .collect();
        !cfg.contains("activation=0")
    }

    /// False when `--config` turns `backup{KEY=0}` off (`backup`, `archive`).
    pub fn config_on(&self, key: &str) -> bool {
        let cfg: String = self
            .vals
            .iter()
            .filter(|(k, _)| k == "--config")
            .map(|(_, v)| v.replace(' ', ""))
            .collect();
        !cfg.contains(&format!("{key}=0"))
    }

    /// The devices this command may read.
    pub fn devices(&self) -> Vec<String> {
        let given: Vec<String> = self
            .vals
            .iter()
            .filter(|(k, _)| k == "--devices")
            .flat_map(|(_, v)| {
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(devices::canonical)
            })
            .collect();
        if !given.is_empty() {
            return given;
        }
        devices::read_devices_file(&self.devices_file())
    }

    pub fn devices_file(&self) -> std::path::PathBuf {
        self.val("--devicesfile")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(devices::default_devices_file)
    }
}

/// Ask `question [y/n]: ` on stdout and read the answer; `yes` answers for the user.
pub fn confirm(out: &mut dyn Write, question: &str, yes: bool) -> bool {
    if yes {
        return true;
    }
    let _ = write!(out, "{question} [y/n]: ");
    let _ = out.flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    line.trim_start().starts_with(['y', 'Y'])
}

/// A labelled device.
pub struct Found {
    pub path: String,
    pub disk: Box<dyn Disk>,
    pub header: PvHeader,
    pub vg: Option<String>,
}

/// Every labelled device among `devs` (unlabelled and unreadable ones are skipped, the
/// latter with a warning).
pub fn scan(devs: &[String], writable: bool, err: &mut dyn Write) -> Vec<Found> {
    let mut out = Vec::new();
    for d in devs {
        let disk = match devices::open(d, writable) {
            Ok(x) => x,
            Err(e) => {
                let _ = writeln!(err, "  WARNING: Cannot use {d}: {e}");
                continue;
            }
        };
        match scan_pv(&*disk) {
            Ok(p) => out.push(Found {
                path: d.clone(),
                disk,
                header: p.header,
                vg: p.vg,
            }),
            Err(LvmError::NoLabel) => {}
            Err(e) => {
                let _ = writeln!(err, "  WARNING: {d}: {e}");
            }
        }
    }
    out
}

/// A VG read for a change: its metadata, and per PV of the VG the index into `found`.
pub struct VgHandle {
    pub meta: Metadata,
    pub slots: Vec<Option<usize>>,
}

/// Read the VG `name` from `found`.
pub fn find_vg(found: &[Found], name: &str) -> Result<VgHandle, String> {
    let idx: Vec<usize> = (0..found.len())
        .filter(|&i| found[i].vg.is_none() || found[i].vg.as_deref() == Some(name))
        .collect();
    if !idx.iter().any(|&i| found[i].vg.as_deref() == Some(name)) {
        return Err(format!(
            "Volume group \"{name}\" not found\n  Cannot process volume group {name}"
        ));
    }
    let disks: Vec<&dyn Disk> = idx.iter().map(|&i| &*found[i].disk).collect();
    let r = read_vg(&disks, Some(name)).map_err(|e| format!("Volume group \"{name}\": {e}"))?;
    let slots = r.pv_disks.iter().map(|d| d.map(|k| idx[k])).collect();
    Ok(VgHandle {
        meta: r.metadata,
        slots,
    })
}

/// [`find_vg`] for a command that changes the VG: every PV must be present.
pub fn find_vg_rw(found: &[Found], name: &str) -> Result<VgHandle, String> {
    let h = find_vg(found, name)?;
    if h.missing() {
        return Err(format!("Cannot change VG {name} while PVs are missing."));
    }
    Ok(h)
}

impl VgHandle {
    /// The table form of each PV's device, by PV name (None when missing).
    pub fn pv_paths(&self, found: &[Found]) -> Vec<(String, Option<String>)> {
        self.meta
            .vg
            .pvs
            .iter()
            .zip(&self.slots)
            .map(|(p, s)| (p.name.clone(), s.map(|i| found[i].path.clone())))
            .collect()
    }

    /// lvm2's warnings for each PV of the VG that was not found.
    pub fn warn_missing(&self, err: &mut dyn Write) {
        for (p, s) in self.meta.vg.pvs.iter().zip(&self.slots) {
            if s.is_none() {
                let _ = writeln!(err, "  WARNING: Couldn't find device with uuid {}.", p.id);
                let _ = writeln!(
                    err,
                    "  WARNING: VG {} is missing PV {} (last written to {}).",
                    self.meta.vg.name,
                    p.id,
                    p.device.as_deref().unwrap_or("[unknown]")
                );
            }
        }
    }

    /// True when a PV of the VG was not found.
    pub fn missing(&self) -> bool {
        self.slots.iter().any(Option::is_none)
    }
}

/// This host's name and `uname -a`-like line, for the metadata header.
pub fn host() -> (String, String) {
    let rd = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let h = rd("/proc/sys/kernel/hostname");
    let uname = format!(
        "{} {h} {} {} {}",
        rd("/proc/sys/kernel/ostype"),
        rd("/proc/sys/kernel/osrelease"),
        rd("/proc/sys/kernel/version"),
        std::env::consts::ARCH
    );
    (h, uname)
}

/// `strerror` text of an I/O error, without Rust's ` (os error N)` suffix.
pub fn strerror(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(p) => s[..p].to_string(),
        None => s,
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn hostname() -> String {
    host().0
}

/// Write `vg` (seqno one higher than read) to the PVs at `slots` in `found`.
pub fn commit(
    found: &mut [Found],
    slots: &[Option<usize>],
    mut vg: Vg,
    cl: &Cmdline,
) -> Result<(), String> {
    if slots.iter().any(Option::is_none) {
        return Err(format!(
            "Cannot change VG {} while PVs are missing.",
            vg.name
        ));
    }
    vg.seqno += 1;
    let (h, uname) = host();
    let name = vg.name.clone();
    let meta = Metadata::new(vg, &format!("Write from {}.", cl.typed), &h, &uname, now());
    let want: Vec<usize> = slots.iter().map(|s| s.expect("checked")).collect();
    // As lvm2: the metadata before the change goes to the archive first.
    if cl.config_on("archive") {
        let disks: Vec<&dyn Disk> = want.iter().map(|&i| &*found[i].disk).collect();
        if let Ok(old) = read_vg(&disks, Some(&name)) {
            crate::backup::archive(&old.metadata, cl);
        }
    }
    let mut disks: Vec<&mut dyn Disk> = Vec::new();
    // Borrow the chosen entries mutably, in VG order.
    let mut rest: Vec<Option<&mut Found>> = found.iter_mut().map(Some).collect();
    for i in want {
        let f = rest[i].take().ok_or("a PV is listed twice")?;
        disks.push(&mut *f.disk);
    }
    write_vg(&meta, &mut disks).map_err(|e| format!("Failed to write VG {name}: {e}"))?;
    if cl.config_on("backup") {
        crate::backup::backup_after(&meta, cl);
    }
    Ok(())
}

pub use udm_formats::lvm::report::long_size;
