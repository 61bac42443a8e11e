//! Client-side helpers every tool personality shares when it talks to the daemon as libdm
//! talks to the kernel: connecting, reporting a failed request in libdm's words, and
//! libdm's load-then-resume second half of `create`.

use crate::{Client, ClientError, DevSel, Line, Request};
use std::io::Write;
use std::path::Path;

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
