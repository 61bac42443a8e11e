//! Shared by the cryptsetup-family tools (`udm luks`, `udm verity`): connecting to the daemon,
//! reporting a failed request in libdm's words, absolute paths for table arguments (the daemon
//! resolves them, not the caller's directory), and cryptsetup's exit codes and `-v` summary.

use std::io::Write;
use std::path::Path;
use udm_proto::{Client, ClientError, DevSel, Line, Request};

/// Connect to the daemon, or say why not on `err`.
pub fn connect(socket: &Path, err: &mut dyn Write) -> Option<Client> {
    match Client::connect(socket) {
        Ok(c) => Some(c),
        Err(e) => {
            let _ = writeln!(
                err,
                "Cannot initialize device-mapper. Is the udm daemon running? ({e})"
            );
            None
        }
    }
}

/// `strerror(3)` text without Rust's " (os error N)" suffix.
pub fn strerror(errno: i32) -> String {
    let s = std::io::Error::from_raw_os_error(errno).to_string();
    match s.rfind(" (os error ") {
        Some(p) => s[..p].to_string(),
        None => s,
    }
}

/// Print a daemon failure as libdm would (the kernel-style reason, then the ioctl line) and
/// return its errno.
pub fn report(err: &mut dyn Write, op: &str, name: &str, e: &ClientError) -> i32 {
    let errno = e.errno();
    if let ClientError::Remote(r) = e {
        if !r.message.is_empty() && r.message != strerror(errno) {
            let msg = r.message.strip_prefix("line 1: ").unwrap_or(&r.message);
            let _ = writeln!(err, "device-mapper: {msg}");
        }
    }
    let _ = writeln!(
        err,
        "device-mapper: {op} ioctl on {name}  failed: {}",
        strerror(errno)
    );
    errno
}

/// The absolute form of a path argument (unchanged if it does not exist), escaped as one
/// word of a table line (`udm_core::escape_arg`).
pub fn abs(path: &str) -> String {
    let p = std::fs::canonicalize(path)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.to_string());
    udm_core::escape_arg(&p).into_owned()
}

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

/// The exit code for an action's result, with cryptsetup's `-v` summary line on `out`.
pub fn finish(out: &mut dyn Write, verbose: bool, errno: i32) -> i32 {
    let code = exit_code(errno);
    if verbose {
        if code == 0 {
            let _ = writeln!(out, "Command successful.");
        } else {
            let why = match code {
                1 => "wrong or missing parameters",
                2 => "no permission or bad passphrase",
                3 => "out of memory",
                4 => "wrong device or file specified",
                5 => "device already exists or device is busy",
                _ => "unknown error",
            };
            let _ = writeln!(out, "Command failed with code -{code} ({why}).");
        }
    }
    code
}

/// libdm's second half of `create`: load `table` into the new device `name` and resume it;
/// if either fails the device is removed again. Returns the errno reported on `err`.
pub fn load_and_resume(
    c: &mut Client,
    err: &mut dyn Write,
    name: &str,
    table: Vec<Line>,
    read_only: bool,
) -> Result<(), i32> {
    let sel = DevSel::Name(name.to_string());
    let r = c
        .call(Request::Load {
            dev: sel.clone(),
            table,
            read_only,
        })
        .map_err(|e| report(err, "reload", name, &e))
        .and_then(|_| {
            c.call(Request::Resume {
                dev: sel.clone(),
                noflush: false,
                nolockfs: false,
            })
            .map_err(|e| report(err, "resume", name, &e))
        });
    if r.is_err() {
        let _ = c.call(Request::Remove {
            dev: sel,
            deferred: false,
        });
    }
    r.map(|_| ())
}
