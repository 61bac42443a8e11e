//! The state file: every device's name, uuid, live table, read-only and suspended state,
//! written atomically (write, fsync, rename) after each change and read back when the daemon
//! starts, so devices outlive the daemon. One file per control socket in the state directory,
//! so two daemons never restore each other's devices.
//!
//! Key material is never written: a table that holds a key (a crypt key in hex, an integrity
//! key) is left out and its device waits until `udm luks open` creates it again; a table that
//! names a key in the key store (`:32:logon:DESC`) is kept, and its device waits until the key
//! is added again (`udm key add`) and the device resumed. `List`'s companion `Pending` request
//! says which devices wait and why.

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use udm_core::{DevSel, Registry, StatusType, TableLine};
use udm_io::Sectors;

/// The state directory: `--state-dir`, else `UDM_STATE_DIR`, else `$XDG_DATA_HOME/udm`,
/// `~/.local/share/udm`, `/var/lib/udm`.
pub fn default_state_dir() -> PathBuf {
    std::env::var_os("UDM_STATE_DIR")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_DATA_HOME").map(|d| PathBuf::from(d).join("udm")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share/udm")))
        .unwrap_or_else(|| PathBuf::from("/var/lib/udm"))
}

/// The state file for a control socket: `devices-<hash of the socket path>.json`.
pub fn state_file(dir: &Path, socket: &Path) -> PathBuf {
    // FNV-1a over the socket path: stable across runs and builds.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in socket.as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
    }
    dir.join(format!("devices-{h:016x}.json"))
}

/// One table line as saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedLine {
    pub start: u64,
    pub len: u64,
    pub ttype: String,
    pub params: String,
}

/// One device as saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedDevice {
    pub name: String,
    pub uuid: String,
    pub read_only: bool,
    pub suspended: bool,
    /// The live table (mapped devices named `/dev/mapper/NAME`); `None` when it had none,
    /// or when it holds a key (see `keyed`).
    pub table: Option<Vec<SavedLine>>,
    /// The table held key material and was not saved: the device comes back only when
    /// its owner opens it again.
    #[serde(default)]
    pub keyed: bool,
    /// Mapped devices the table uses (restored first).
    #[serde(default)]
    pub deps: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    socket: String,
    devices: Vec<SavedDevice>,
}

/// A device that could not be restored, and why.
#[derive(Debug, Clone)]
pub struct Pending {
    pub dev: SavedDevice,
    pub why: String,
}

/// The daemon's state file and the devices waiting to come back.
pub struct State {
    file: Option<PathBuf>,
    socket: PathBuf,
    pending: Mutex<Vec<Pending>>,
    /// Serialises snapshots and writes.
    write: Mutex<()>,
}

/// True when a table line carries key material itself (not a key-store reference).
fn holds_key(ttype: &str, params: &str) -> bool {
    let words = udm_core::split_args(params);
    match ttype {
        "crypt" => words
            .get(1)
            .is_some_and(|k| !k.starts_with(':') && k != "-"),
        "integrity" => words.iter().any(|w| {
            ["internal_hash:", "journal_crypt:", "journal_mac:"]
                .iter()
                .any(|p| w.strip_prefix(p).is_some_and(|r| r.contains(':')))
        }),
        _ => false,
    }
}

impl State {
    /// No state file (`--no-restore` still saves; this is for embedders that want neither).
    pub fn none(socket: &Path) -> State {
        State {
            file: None,
            socket: socket.to_path_buf(),
            pending: Mutex::new(Vec::new()),
            write: Mutex::new(()),
        }
    }

    pub fn new(file: PathBuf, socket: &Path) -> State {
        State {
            file: Some(file),
            ..State::none(socket)
        }
    }

    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Devices waiting to come back, with the reason.
    pub fn pending(&self) -> Vec<(String, String)> {
        let p = self.pending.lock();
        p.iter()
            .map(|p| (p.dev.name.clone(), p.why.clone()))
            .collect()
    }

    /// Forget a waiting device (its name was created anew, e.g. by `udm luks open`).
    pub fn forget(&self, name: &str) {
        self.pending.lock().retain(|p| p.dev.name != name);
    }

    /// What the registry holds now, as saved.
    fn snapshot(reg: &Registry) -> Vec<SavedDevice> {
        let mut out = Vec::new();
        for d in reg.list() {
            let sel = DevSel::Name(d.name.clone());
            let mut saved = SavedDevice {
                name: d.name.clone(),
                uuid: d.uuid.clone(),
                read_only: d.read_only,
                suspended: d.suspended,
                table: None,
                keyed: false,
                deps: Vec::new(),
            };
            if d.live_table {
                let Ok((_, deps)) = reg.deps(&sel, false) else {
                    continue;
                };
                let Ok((_, lines)) = reg.status(&sel, false, StatusType::Table) else {
                    continue;
                };
                let mapped: Vec<(String, String)> = deps
                    .into_iter()
                    .filter_map(|dep| Some((dep.id, dep.dm_name?)))
                    .collect();
                saved.deps = mapped.iter().map(|(_, n)| n.clone()).collect();
                if lines.iter().any(|l| holds_key(&l.ttype, &l.params)) {
                    saved.keyed = true;
                } else {
                    let table = lines
                        .into_iter()
                        .map(|l| SavedLine {
                            params: name_mapped(&l.params, &mapped),
                            start: l.start,
                            len: l.len,
                            ttype: l.ttype,
                        })
                        .collect();
                    saved.table = Some(table);
                }
            }
            out.push(saved);
        }
        out
    }

    /// Write the state file now (atomically); an empty state removes it.
    pub fn save(&self, reg: &Registry) {
        let Some(file) = &self.file else { return };
        let _g = self.write.lock();
        let mut devices = Self::snapshot(reg);
        let live: HashSet<String> = devices.iter().map(|d| d.name.clone()).collect();
        devices.extend(
            (self.pending.lock().iter())
                .filter(|p| !live.contains(&p.dev.name))
                .map(|p| p.dev.clone()),
        );
        if let Err(e) = write_atomic(file, &self.socket, devices) {
            tracing::warn!("state file {}: {e}", file.display());
        }
    }

    /// Restore the saved devices, each after the mapped devices its table uses; those that
    /// cannot come back yet wait (see `pending`).
    pub fn restore(&self, reg: &Registry) {
        let Some(file) = &self.file else { return };
        let text = match std::fs::read(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!("state file {}: {e}", file.display());
                return;
            }
        };
        let st: StateFile = match serde_json::from_slice(&text) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("state file {}: not restored: {e}", file.display());
                return;
            }
        };
        let waiting = st
            .devices
            .into_iter()
            .map(|dev| Pending {
                dev,
                why: String::new(),
            })
            .collect();
        *self.pending.lock() = waiting;
        self.retry(reg);
    }

    /// Set why `name` still waits.
    fn set_why(&self, name: &str, why: String) {
        if let Some(p) = self.pending.lock().iter_mut().find(|p| p.dev.name == name) {
            p.why = why;
        }
    }

    /// Bring back every waiting device that can come back now, in dependency order. A
    /// device leaves the waiting list only once it exists again, so a state file written
    /// meanwhile never loses it.
    pub fn retry(&self, reg: &Registry) {
        loop {
            let mut progressed = false;
            let todo: Vec<SavedDevice> =
                self.pending.lock().iter().map(|p| p.dev.clone()).collect();
            for dev in todo {
                let missing = (dev.deps.iter())
                    .find(|n| reg.info(&DevSel::Name((*n).clone()), false).is_err())
                    .cloned();
                if dev.keyed {
                    let why = "its table holds a key: open it again (udm luks open)";
                    self.set_why(&dev.name, why.into());
                } else if let Some(m) = missing {
                    self.set_why(&dev.name, format!("waiting for {m}"));
                } else {
                    match bring_back(reg, &dev) {
                        Ok(()) => {
                            tracing::info!(device = %dev.name, "restored");
                            self.forget(&dev.name);
                            progressed = true;
                        }
                        Err(e) => self.set_why(&dev.name, e),
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        for p in self.pending.lock().iter() {
            tracing::warn!(device = %p.dev.name, "not restored: {}", p.why);
        }
    }

    /// Restore the waiting device `name` now (`resume NAME` after `udm key add`).
    pub fn resume_pending(&self, reg: &Registry, name: &str) -> Option<Result<(), String>> {
        let dev = (self.pending.lock().iter())
            .find(|p| p.dev.name == name && !p.dev.keyed)
            .map(|p| p.dev.clone())?;
        let r = bring_back(reg, &dev);
        if let Err(e) = &r {
            self.set_why(name, e.clone());
        } else {
            self.forget(name);
            // Devices stacked on this one may come back now too.
            self.retry(reg);
        }
        Some(r)
    }
}

/// Replace `253:N` words naming mapped devices with `/dev/mapper/NAME` (minors change when
/// the devices are created again).
fn name_mapped(params: &str, mapped: &[(String, String)]) -> String {
    if mapped.is_empty() {
        return params.to_string();
    }
    let words: Vec<String> = udm_core::split_args(params)
        .into_iter()
        .map(|w| match mapped.iter().find(|(id, _)| *id == w) {
            Some((_, name)) => format!("/dev/mapper/{name}"),
            None => w,
        })
        .collect();
    let escaped: Vec<_> = words.iter().map(|w| udm_core::escape_arg(w)).collect();
    escaped.join(" ")
}

/// Create the device and, if it had a table, load and resume it (then suspend it again if
/// it was suspended). On failure the device is removed again.
fn bring_back(reg: &Registry, d: &SavedDevice) -> Result<(), String> {
    reg.create(&d.name, &d.uuid)
        .map_err(|e| format!("create: {e}"))?;
    let sel = DevSel::Name(d.name.clone());
    let Some(table) = &d.table else {
        return Ok(());
    };
    let lines: Vec<TableLine> = table
        .iter()
        .map(|l| TableLine {
            start: Sectors(l.start),
            len: Sectors(l.len),
            ttype: l.ttype.clone(),
            params: l.params.clone(),
        })
        .collect();
    let r = reg
        .load(&sel, &lines, d.read_only)
        .map_err(|e| format!("load: {e}"))
        .and_then(|_| reg.resume(&sel).map_err(|e| format!("resume: {e}")))
        .and_then(|_| match d.suspended {
            true => reg
                .suspend(&sel, false, false)
                .map(|_| ())
                .map_err(|e| format!("suspend: {e}")),
            false => Ok(()),
        });
    if r.is_err() {
        let _ = reg.remove(&sel, false);
    }
    r.map(|_| ())
}

fn write_atomic(file: &Path, socket: &Path, devices: Vec<SavedDevice>) -> std::io::Result<()> {
    if devices.is_empty() {
        return match std::fs::remove_file(file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let st = StateFile {
        socket: socket.display().to_string(),
        devices,
    };
    let body = serde_json::to_vec_pretty(&st).map_err(std::io::Error::other)?;
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, file)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_recognised_and_references_are_not() {
        assert!(holds_key("crypt", "aes-xts-plain64 00ff 0 /dev/x 0"));
        assert!(!holds_key(
            "crypt",
            "aes-xts-plain64 :32:logon:d 0 /dev/x 0"
        ));
        assert!(!holds_key("crypt", "aes-cbc-essiv:sha256 - 0 /dev/x 0"));
        assert!(holds_key(
            "integrity",
            "/dev/x 0 32 J 1 internal_hash:hmac(sha256):00ff"
        ));
        assert!(!holds_key(
            "integrity",
            "/dev/x 0 32 J 1 internal_hash:crc32c"
        ));
        assert!(!holds_key("linear", "/dev/x 0"));
    }

    #[test]
    fn mapped_devices_are_saved_by_name() {
        let m = vec![("253:0".to_string(), "a b".to_string())];
        assert_eq!(
            name_mapped("2 8 253:0 0 /x\\ y 0", &m),
            "2 8 /dev/mapper/a\\ b 0 /x\\ y 0"
        );
    }
}
