//! The client side of the control socket as the cryptsetup-family tools use it (`udm luks`,
//! `udm verity`, `udm kpartx`, `udm lvm`): libdm's create sequence (load, resume, remove
//! again on failure), libdm's words for a failed request, table arguments made absolute for
//! the daemon (whose working directory is not the caller's), and cryptsetup's exit codes.

use std::path::Path;
use std::time::{Duration, Instant};
use udm_proto::{Client, ClientError, Request};

/// Why `udm daemon stop` did not stop the daemon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StopError {
    /// Connecting or the stop request failed (refused while devices are open, unless forced).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The daemon still answers after the limit.
    #[error("the daemon at {socket} is still running after {secs} s")]
    StillRunning { socket: String, secs: u64 },
}

impl StopError {
    pub fn errno(&self) -> i32 {
        match self {
            StopError::Client(e) => e.errno(),
            StopError::StillRunning { .. } => libc::ETIMEDOUT,
        }
    }
}

/// Ask the daemon on `socket` to shut down (drain, flush, close the exports, as SIGTERM) and
/// wait until it is gone: it removes its socket last. `limit` only guards against a hang.
pub fn stop_daemon(socket: &Path, force: bool, limit: Duration) -> Result<(), StopError> {
    let mut c = Client::connect(socket)?;
    c.call(Request::Stop { force })?;
    let t = Instant::now();
    while socket.exists() && Client::connect(socket).is_ok() {
        if t.elapsed() > limit {
            return Err(StopError::StillRunning {
                socket: socket.display().to_string(),
                secs: limit.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

pub use udm_proto::libdm::{failure_lines, try_load_and_resume as load_and_resume, StepError};

/// cryptsetup's exit code for an errno (0 ok, 1 bad parameters, 2 no permission or bad
/// passphrase, 3 out of memory, 4 wrong device, 5 busy or exists).
pub fn exit_code(errno: i32) -> i32 {
    match errno {
        0 => 0,
        libc::EEXIST | libc::EBUSY => 5,
        libc::ENOTBLK | libc::ENODEV => 4,
        libc::ENOMEM => 3,
        libc::EPERM => 2,
        _ => 1,
    }
}

/// cryptsetup's `-v` summary line for an exit code.
pub fn exit_summary(code: i32) -> String {
    if code == 0 {
        return "Command successful.".to_string();
    }
    let why = match code {
        1 => "wrong or missing parameters",
        2 => "no permission or bad passphrase",
        3 => "out of memory",
        4 => "wrong device or file specified",
        5 => "device already exists or device is busy",
        _ => "unknown error",
    };
    format!("Command failed with code -{code} ({why}).")
}

/// The absolute form of a path argument (unchanged if it does not exist), escaped as one
/// word of a table line (`udm_core::escape_arg`).
pub fn abs(path: &str) -> String {
    let p = std::fs::canonicalize(path)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.to_string());
    udm_core::escape_arg(&p).into_owned()
}

/// A table line's params with every relative path that names an existing file or block
/// device (from the caller's working directory) made absolute, so the daemon, whose working
/// directory differs, opens the same file. Words are split and re-escaped as the kernel
/// splits them (`udm_core::split_args`/`escape_arg`); params without such a word come back
/// unchanged, byte for byte.
pub fn absolute_words(params: &str) -> String {
    match std::env::current_dir() {
        Ok(cwd) => absolute_words_in(params, &cwd),
        Err(_) => params.to_string(),
    }
}

/// `absolute_words` with relative paths taken from `base`.
pub fn absolute_words_in(params: &str, base: &Path) -> String {
    let words = udm_core::split_args(params);
    let mut changed = false;
    let out: Vec<String> = words
        .into_iter()
        .map(|w| match relative_device(&w, base) {
            Some(abs) => {
                changed = true;
                abs
            }
            None => w,
        })
        .collect();
    if !changed {
        return params.to_string();
    }
    let escaped: Vec<_> = out.iter().map(|w| udm_core::escape_arg(w)).collect();
    escaped.join(" ")
}

/// The absolute path of `word` when it is a relative path to an existing regular file or
/// block device; numbers, `major:minor`, keys (`:32:logon:…`) and options never are.
fn relative_device(word: &str, base: &Path) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    if word.is_empty()
        || word.starts_with('/')
        || word.starts_with(':')
        || word.contains("://")
        || word.chars().all(|c| c.is_ascii_digit() || c == ':')
    {
        return None;
    }
    let path = base.join(word);
    let m = std::fs::metadata(&path).ok()?;
    if !(m.is_file() || m.file_type().is_block_device()) {
        return None;
    }
    let abs = std::fs::canonicalize(path).ok()?;
    Some(abs.to_str()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use udm_proto::{strerror, RemoteError};

    #[test]
    fn relative_paths_become_absolute_and_stay_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let spaced = dir.path().join("an image");
        std::fs::write(&spaced, b"x").unwrap();
        std::fs::write(dir.path().join("0"), b"x").unwrap();
        let got = absolute_words_in("an\\ image 0", dir.path());
        let untouched = absolute_words_in("2  8 253:0 0 missing.img 0", dir.path());
        let abs = std::fs::canonicalize(&spaced).unwrap();
        let want = format!("{} 0", udm_core::escape_arg(abs.to_str().unwrap()));
        assert_eq!(got, want);
        assert_eq!(udm_core::split_args(&got)[0], abs.to_str().unwrap());
        assert_eq!(untouched, "2  8 253:0 0 missing.img 0");
    }

    #[test]
    fn stopping_without_a_daemon_fails() {
        let dir = tempfile::tempdir().unwrap();
        let e = stop_daemon(&dir.path().join("none"), false, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, StopError::Client(_)));
        assert_eq!(e.errno(), libc::ENOENT);
    }

    #[test]
    fn exit_codes_and_failure_text() {
        assert_eq!(exit_code(libc::EBUSY), 5);
        assert_eq!(exit_code(libc::ENODEV), 4);
        assert_eq!(exit_code(libc::EPERM), 2);
        assert_eq!(exit_code(libc::EINVAL), 1);
        assert_eq!(exit_summary(0), "Command successful.");
        assert_eq!(
            exit_summary(5),
            "Command failed with code -5 (device already exists or device is busy)."
        );
        let e = ClientError::Remote(RemoteError {
            errno: libc::EINVAL,
            kind: "table".into(),
            message: "line 1: linear: Invalid argument count".into(),
        });
        assert_eq!(
            failure_lines("reload", "x", &e),
            "device-mapper: linear: Invalid argument count\n\
             device-mapper: reload ioctl on x  failed: Invalid argument\n"
        );
        let e = ClientError::Remote(RemoteError {
            errno: libc::ENXIO,
            kind: "ioctl".into(),
            message: strerror(libc::ENXIO),
        });
        assert_eq!(
            failure_lines("resume", "y", &e),
            "device-mapper: resume ioctl on y  failed: No such device or address\n"
        );
    }
}
