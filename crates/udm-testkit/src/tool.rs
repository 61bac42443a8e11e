//! Running the built `udm` binary as one of its tool personalities (`cryptsetup`,
//! `veritysetup`, `dmsetup` …) with given stdin and control socket, for CLI tests that used
//! to call the binary's modules in-process.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// A control socket path that does not exist (commands that need the daemon fail to reach it).
pub const NO_DAEMON: &str = "/nonexistent/udm-test/control";

/// (exit code, stdout, stderr) of `bin` run as `arg0` (the name a multi-call binary
/// dispatches on) with `args`, `stdin` piped in, and `UDM_SOCKET` set to `socket` (or to
/// [`NO_DAEMON`]).
pub fn run_as(
    bin: &Path,
    arg0: &str,
    args: &[&str],
    stdin: &[u8],
    socket: Option<&Path>,
) -> (i32, String, String) {
    let mut c = Command::new(bin);
    c.arg0(arg0)
        .args(args)
        .env("UDM_SOCKET", socket.unwrap_or(Path::new(NO_DAEMON)));
    piped(&mut c, stdin)
}

/// (exit code, stdout, stderr) of the installed tool `prog` (the real `cryptsetup`,
/// `veritysetup` …) with `args` and `stdin` piped in.
pub fn run_tool(prog: &str, args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    piped(Command::new(prog).args(args), stdin)
}

/// Runs `c` with `stdin` piped in: (exit code, stdout, stderr).
fn piped(c: &mut Command, stdin: &[u8]) -> (i32, String, String) {
    let mut c = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", c.get_program()));
    // The tool may exit without reading its stdin (an error, or no passphrase needed).
    let mut input = c.stdin.take().expect("piped stdin");
    let _ = input.write_all(stdin);
    drop(input);
    let o = c.wait_with_output().expect("wait for the tool");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The root hash `veritysetup format` prints (its `Root hash:` line); panics without one.
pub fn root_hash(format_out: &str) -> String {
    format_out
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .unwrap_or_else(|| panic!("no Root hash line in {format_out:?}"))
        .trim()
        .to_string()
}
