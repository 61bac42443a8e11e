//! Shared by the cryptsetup-family tools (`udm luks`, `udm verity`, `udm kpartx`, `udm lvm`):
//! connecting to the daemon and printing a failed request in libdm's words
//! (`udm_proto::libdm`); the rules (absolute table paths, exit codes) are
//! `udm_daemon::client`'s.

use std::io::Write;

pub use udm_daemon::client::{abs, absolute_words, exit_code};
pub use udm_proto::libdm::{connect, load_and_resume, report};

/// The exit code for an action's result, with cryptsetup's `-v` summary line on `out`.
pub fn finish(out: &mut dyn Write, verbose: bool, errno: i32) -> i32 {
    let code = exit_code(errno);
    if verbose {
        let _ = writeln!(out, "{}", udm_daemon::client::exit_summary(code));
    }
    code
}
