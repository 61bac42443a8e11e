//! Client-side helpers every tool personality shares when it talks to the daemon as libdm
//! talks to the kernel: connecting, reporting a failed request in libdm's words, and
//! libdm's load-then-resume second half of `create`.

use crate::{strerror, Client, ClientError, DevSel, Line, Request};
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

/// Print a daemon failure as libdm would (the kernel-style reason, then the ioctl line) and
/// return its errno.
pub fn report(err: &mut dyn Write, op: &str, name: &str, e: &ClientError) -> i32 {
    let _ = err.write_all(failure_lines(op, name, e).as_bytes());
    e.errno()
}

/// libdm's second half of `create` ([`try_load_and_resume`]), its failure printed on `err`
/// in libdm's words; the error is the errno.
pub fn load_and_resume(
    c: &mut Client,
    err: &mut dyn Write,
    name: &str,
    table: Vec<Line>,
    read_only: bool,
) -> Result<(), i32> {
    try_load_and_resume(c, name, table, read_only).map_err(|e| {
        let _ = err.write_all(e.libdm_lines().as_bytes());
        e.errno()
    })
}

/// A request of libdm's create sequence failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} ioctl on {name} failed: {source}")]
pub struct StepError {
    /// libdm's name for the ioctl (`reload`, `resume`, …).
    pub op: &'static str,
    /// The device.
    pub name: String,
    #[source]
    pub source: ClientError,
}

impl StepError {
    /// The errno the daemon (or the transport) failed with.
    pub fn errno(&self) -> i32 {
        self.source.errno()
    }

    /// The lines libdm prints for it: the kernel-style reason (when the daemon gave one
    /// beyond the errno's text), then the ioctl line.
    pub fn libdm_lines(&self) -> String {
        failure_lines(self.op, &self.name, &self.source)
    }
}

/// What libdm prints when `op` on `name` failed: `device-mapper: <reason>` (when the daemon
/// gave one beyond the errno's text) and `device-mapper: <op> ioctl on <name>  failed: …`.
pub fn failure_lines(op: &str, name: &str, e: &ClientError) -> String {
    let errno = e.errno();
    let mut s = String::new();
    if let ClientError::Remote(r) = e {
        if !r.message.is_empty() && r.message != strerror(errno) {
            let msg = r.message.strip_prefix("line 1: ").unwrap_or(&r.message);
            s.push_str(&format!("device-mapper: {msg}\n"));
        }
    }
    s.push_str(&format!(
        "device-mapper: {op} ioctl on {name}  failed: {}\n",
        strerror(errno)
    ));
    s
}

/// libdm's second half of `create`: load `table` into the new device `name` and resume it;
/// if either fails the device is removed again.
pub fn try_load_and_resume(
    c: &mut Client,
    name: &str,
    table: Vec<Line>,
    read_only: bool,
) -> Result<(), StepError> {
    let sel = DevSel::Name(name.to_string());
    let step = |op, source| StepError {
        op,
        name: name.to_string(),
        source,
    };
    let r = c
        .call(Request::Load {
            dev: sel.clone(),
            table,
            read_only,
        })
        .map_err(|e| step("reload", e))
        .and_then(|_| {
            c.call(Request::Resume {
                dev: sel.clone(),
                noflush: false,
                nolockfs: false,
            })
            .map_err(|e| step("resume", e))
        });
    if r.is_err() {
        let _ = c.call(Request::Remove {
            dev: sel,
            deferred: false,
        });
    }
    r.map(|_| ())
}
