//! Shared by the cryptsetup-family tools (`udm luks`, `udm verity`, `udm kpartx`, `udm lvm`):
//! connecting to the daemon and printing a failed request in libdm's words. The rules
//! (create sequence, absolute table paths, exit codes) are `udm_daemon::client`'s.

use std::io::Write;
use std::path::Path;
use udm_proto::{Client, ClientError, Line};

pub use udm_daemon::client::{abs, absolute_words, exit_code};

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
    let _ = err.write_all(udm_daemon::client::failure_lines(op, name, e).as_bytes());
    e.errno()
}

/// The exit code for an action's result, with cryptsetup's `-v` summary line on `out`.
pub fn finish(out: &mut dyn Write, verbose: bool, errno: i32) -> i32 {
    let code = exit_code(errno);
    if verbose {
        let _ = writeln!(out, "{}", udm_daemon::client::exit_summary(code));
    }
    code
}

/// libdm's second half of `create` (`udm_daemon::client::load_and_resume`), its failure
/// printed on `err`; returns the errno.
pub fn load_and_resume(
    c: &mut Client,
    err: &mut dyn Write,
    name: &str,
    table: Vec<Line>,
    read_only: bool,
) -> Result<(), i32> {
    udm_daemon::client::load_and_resume(c, name, table, read_only).map_err(|e| {
        let _ = err.write_all(e.libdm_lines().as_bytes());
        e.errno()
    })
}
