//! Replaying a dm-log-writes log with consistency checks, in the spirit of xfstests'
//! replay-log: replay onto a device or image to any entry, flush or mark, running a check
//! command (such as `e2fsck -fn`) at every flush, FUA write and mark, or every N entries; and
//! listing a log. `udm log-writes` is the command line for it.

use super::format::{flags_str, LogError};
use super::reader::{replay, LogEntry, LogReader, Next, ReplayOptions};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use udm_io::{BlockDevice, FileDevice};

/// When to run the check command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckWhen {
    /// After every flush, FUA write and mark.
    Sync,
    Flush,
    Fua,
    Every(u64),
}

/// A `--check` mode that is not `flush`, `fua` or a positive count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid mode {0:?}")]
pub struct BadCheckMode(pub String);

impl BadCheckMode {
    pub fn errno(&self) -> i32 {
        libc::EINVAL
    }
}

/// replay-log's `--check flush|fua|N` (`sync` is udm's every flush, FUA write and mark).
impl std::str::FromStr for CheckWhen {
    type Err = BadCheckMode;
    fn from_str(s: &str) -> Result<CheckWhen, BadCheckMode> {
        match s {
            "sync" => Ok(CheckWhen::Sync),
            "flush" => Ok(CheckWhen::Flush),
            "fua" => Ok(CheckWhen::Fua),
            n => n
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .map(CheckWhen::Every)
                .ok_or_else(|| BadCheckMode(n.to_string())),
        }
    }
}

impl std::fmt::Display for CheckWhen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckWhen::Sync => f.write_str("sync"),
            CheckWhen::Flush => f.write_str("flush"),
            CheckWhen::Fua => f.write_str("fua"),
            CheckWhen::Every(n) => write!(f, "{n}"),
        }
    }
}

/// A replay with checks.
#[derive(Debug, Clone)]
pub struct CheckedReplay {
    /// The log device or image.
    pub log: String,
    /// The device or image replayed onto.
    pub dev: String,
    pub opts: ReplayOptions,
    /// The check command, and whether the device path is appended to it.
    pub check: Option<(String, bool)>,
    pub when: CheckWhen,
    /// Run every check even after one fails.
    pub keep_going: bool,
    /// Print each replayed entry.
    pub verbose: bool,
}

impl CheckedReplay {
    /// Replay all of `log` onto `dev`, no checks.
    pub fn new(log: impl Into<String>, dev: impl Into<String>) -> CheckedReplay {
        CheckedReplay {
            log: log.into(),
            dev: dev.into(),
            opts: ReplayOptions::default(),
            check: None,
            when: CheckWhen::Sync,
            keep_going: false,
            verbose: false,
        }
    }
}

/// The result of a replay with checks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplayReport {
    pub replayed: u64,
    pub checks: u64,
    /// Entries after which the check failed.
    pub failed: Vec<u64>,
}

/// Why a replay or a listing could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// A device or image could not be opened.
    #[error("{path}: {err}")]
    Open { path: String, err: std::io::Error },
    /// The log is malformed or could not be read.
    #[error("{path}: {err}")]
    Log { path: String, err: LogError },
}

impl ReplayError {
    pub fn errno(&self) -> i32 {
        match self {
            ReplayError::Open { err, .. } => err.raw_os_error().unwrap_or(libc::EIO),
            ReplayError::Log { .. } => libc::EINVAL,
        }
    }
}

fn open(path: &str, read_only: bool) -> Result<Arc<dyn BlockDevice>, ReplayError> {
    FileDevice::open(Path::new(path), read_only)
        .map(|d| Arc::new(d) as Arc<dyn BlockDevice>)
        .map_err(|err| ReplayError::Open {
            path: path.into(),
            err,
        })
}

/// Run a check command through `sh -c` (with the device path as `"$1"` appended when
/// `append_dev`); true when it succeeded.
pub fn run_check(cmd: &str, append_dev: bool, dev: &str) -> bool {
    let mut c = Command::new("sh");
    if append_dev {
        c.arg("-c")
            .arg(format!("{cmd} \"$1\""))
            .arg("udm-check")
            .arg(dev);
    } else {
        c.arg("-c").arg(cmd);
    }
    c.status().map(|s| s.success()).unwrap_or(false)
}

/// One entry as replay-log prints it.
pub fn entry_line(e: &LogEntry, sectorsize: u64) -> String {
    let mut s = format!(
        "{}@{}: sector {}, size {}, flags 0x{:x}({})",
        e.index,
        e.block,
        e.header.sector,
        e.header.nr_sectors as u128 * sectorsize as u128,
        e.header.flags,
        flags_str(e.header.flags)
    );
    if let Some(m) = &e.mark {
        s.push_str(&format!(", mark {m:?}"));
    }
    s
}

/// Replay per `a`, running checks; replayed entries (verbose) and failed checks are
/// reported on `out`.
pub fn replay_checked(
    a: &CheckedReplay,
    out: &mut dyn std::io::Write,
) -> Result<ReplayReport, ReplayError> {
    let log_err = |err| ReplayError::Log {
        path: a.log.clone(),
        err,
    };
    let log = open(&a.log, true)?;
    let dev = open(&a.dev, false)?;
    let mut r = LogReader::open(log).map_err(log_err)?;
    let ss = r.sectorsize();
    let mut rep = ReplayReport::default();
    let mut n = 0u64;
    let sum = replay(&mut r, &*dev, &a.opts, |e, d| {
        n += 1;
        if a.verbose {
            let _ = writeln!(out, "replaying {}", entry_line(e, ss));
        }
        let Some((cmd, append)) = &a.check else {
            return Ok(Next::Continue);
        };
        let due = match a.when {
            CheckWhen::Sync => e.is_flush() || e.is_fua() || e.is_mark(),
            CheckWhen::Flush => e.is_flush(),
            CheckWhen::Fua => e.is_fua(),
            CheckWhen::Every(k) => n.is_multiple_of(k),
        };
        if !due {
            return Ok(Next::Continue);
        }
        udm_io::sync::flush(d)?;
        rep.checks += 1;
        if run_check(cmd, *append, &a.dev) {
            return Ok(Next::Continue);
        }
        let _ = writeln!(out, "check failed after entry {}", e.index);
        rep.failed.push(e.index);
        Ok(if a.keep_going {
            Next::Continue
        } else {
            Next::Stop
        })
    })
    .map_err(log_err)?;
    rep.replayed = sum.replayed;
    Ok(rep)
}

/// List a log: the super block and every entry.
pub fn dump(log: &str, out: &mut dyn std::io::Write) -> Result<(), ReplayError> {
    let log_err = |err| ReplayError::Log {
        path: log.into(),
        err,
    };
    let dev = open(log, true)?;
    let mut r = LogReader::open(dev).map_err(log_err)?;
    let _ = writeln!(
        out,
        "Log version=1, sectorsize={}, entries={}",
        r.sectorsize(),
        r.sup.nr_entries
    );
    let ss = r.sectorsize();
    while let Some(e) = r.next_entry().map_err(log_err)? {
        let _ = writeln!(out, "{}", entry_line(&e, ss));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_modes_round_trip() {
        for w in [
            CheckWhen::Sync,
            CheckWhen::Flush,
            CheckWhen::Fua,
            CheckWhen::Every(7),
        ] {
            assert_eq!(w.to_string().parse::<CheckWhen>(), Ok(w));
        }
        assert_eq!("0".parse::<CheckWhen>(), Err(BadCheckMode("0".into())));
        assert_eq!(
            "x".parse::<CheckWhen>().unwrap_err().to_string(),
            "invalid mode \"x\""
        );
    }
}
