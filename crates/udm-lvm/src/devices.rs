//! Which devices the lvm commands read, and how they are opened. The list comes from
//! `--devices` (comma lists, repeatable), else a devices file (`--devicesfile FILE`, else
//! udm's own `lvm.devices` in the state directory, which `pvcreate` adds to and `pvremove`
//! takes from) — the host's disks are never scanned. Entries are image files (the default),
//! block devices, or udm devices (`/dev/mapper/NAME`, read and written through the daemon's
//! NBD export), and each has the form tables use for it.

use std::path::{Path, PathBuf};
use udm_formats::lvm::ops::ImageFile;
use udm_formats::lvm::{Disk, LvmError};
use udm_proto::{Client, Reply, Request};

/// udm's state directory: `$UDM_STATE_DIR`, else `$XDG_DATA_HOME/udm`, else
/// `~/.local/share/udm`.
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("UDM_STATE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("udm");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".local/share/udm")
}

/// The devices file used when none is named.
pub fn default_devices_file() -> PathBuf {
    state_dir().join("lvm.devices")
}

/// Entries of a devices file: plain paths, or lvm2's `IDTYPE=… DEVNAME=PATH …` lines.
pub fn read_devices_file(path: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("VERSION="))
        .filter_map(|l| {
            if l.contains('=') {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("DEVNAME="))
                    .map(String::from)
            } else {
                Some(l.to_string())
            }
        })
        .collect()
}

/// Add (`add`) or drop entries of the devices file, kept sorted and unique.
pub fn update_devices_file(path: &Path, add: &[String], drop: &[String]) -> std::io::Result<()> {
    let mut list = read_devices_file(path);
    list.extend(add.iter().cloned());
    list.retain(|d| !drop.contains(d));
    list.sort();
    list.dedup();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = String::from("# udm lvm devices file: one PV (image file or device) a line\n");
    for d in list {
        text.push_str(&d);
        text.push('\n');
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}

/// The canonical form of a device argument: udm devices as `/dev/mapper/NAME`, host
/// paths absolute.
pub fn canonical(dev: &str) -> String {
    if dev.starts_with("/dev/mapper/") && !Path::new(dev).exists() {
        return dev.to_string();
    }
    std::fs::canonicalize(dev)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| dev.to_string())
}

/// The name of a udm device argument (`/dev/mapper/NAME` not on the host).
pub fn udm_name(dev: &str) -> Option<&str> {
    dev.strip_prefix("/dev/mapper/")
        .filter(|_| !Path::new(dev).exists())
}

/// A udm device read and written through the daemon's NBD export.
struct NbdPv {
    name: String,
    c: udm_nbd::NbdClient,
}

fn nbd_err(what: &str, e: udm_nbd::NbdError) -> LvmError {
    LvmError::Io {
        what: what.into(),
        reason: e.to_string(),
        errno: e.errno(),
    }
}

impl NbdPv {
    /// The aligned byte range covering `offset..offset+len` (the export's minimum block).
    fn span(&self, offset: u64, len: usize) -> (u64, usize) {
        let b = u64::from(self.c.info().min_block.max(1));
        let start = offset / b * b;
        let end = (offset + len as u64).div_ceil(b) * b;
        (start, (end - start) as usize)
    }
}

impl Disk for NbdPv {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn size(&self) -> Result<u64, LvmError> {
        Ok(self.c.size())
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), LvmError> {
        let (start, len) = self.span(offset, buf.len());
        if (start, len) == (offset, buf.len()) {
            return self.c.read(offset, buf).map_err(|e| nbd_err(&self.name, e));
        }
        let mut b = vec![0u8; len];
        self.c
            .read(start, &mut b)
            .map_err(|e| nbd_err(&self.name, e))?;
        let at = (offset - start) as usize;
        buf.copy_from_slice(&b[at..at + buf.len()]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), LvmError> {
        let (start, len) = self.span(offset, buf.len());
        if (start, len) == (offset, buf.len()) {
            return self
                .c
                .write(offset, buf, false)
                .map_err(|e| nbd_err(&self.name, e));
        }
        // Read, modify, write the whole blocks.
        let mut b = vec![0u8; len];
        self.c
            .read(start, &mut b)
            .map_err(|e| nbd_err(&self.name, e))?;
        let at = (offset - start) as usize;
        b[at..at + buf.len()].copy_from_slice(buf);
        self.c
            .write(start, &b, false)
            .map_err(|e| nbd_err(&self.name, e))
    }
    fn flush(&mut self) -> Result<(), LvmError> {
        self.c.flush().map_err(|e| nbd_err(&self.name, e))
    }
}

/// Open one device as a PV candidate.
pub fn open(dev: &str, writable: bool) -> Result<Box<dyn Disk>, LvmError> {
    if let Some(name) = udm_name(dev) {
        let not = |reason: String| LvmError::Io {
            what: dev.into(),
            reason,
            errno: libc::ENODEV,
        };
        let mut c = Client::connect(&udm_proto::default_socket())
            .map_err(|e| not(format!("no udm daemon: {e}")))?;
        let sock = match c.call(Request::DaemonInfo) {
            Ok(Reply::Daemon {
                nbd_socket: Some(s),
                ..
            }) => s,
            _ => return Err(not("the daemon has no NBD export".into())),
        };
        let nbd = udm_nbd::NbdClient::connect_unix(Path::new(&sock), name)
            .map_err(|e| nbd_err(dev, e))?;
        return Ok(Box::new(NbdPv {
            name: dev.into(),
            c: nbd,
        }));
    }
    Ok(Box::new(ImageFile::open(Path::new(dev), writable)?))
}
