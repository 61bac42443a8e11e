//! Shared by the tools that drive the daemon the way libdm drives the kernel (`udm luks`,
//! `udm verity`): connecting, reporting a failed request in libdm's words, and absolute
//! paths for table arguments (the daemon resolves them, not the caller's directory).

use std::io::Write;
use std::path::Path;
use udm_proto::{Client, ClientError};

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

/// The absolute form of a path argument (unchanged if it does not exist).
pub fn abs(path: &str) -> String {
    std::fs::canonicalize(path)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.to_string())
}
