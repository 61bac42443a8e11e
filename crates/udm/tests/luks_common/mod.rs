//! Helpers shared by the `udm luks` tests: run udm's cryptsetup in-process (the test crate
//! includes `src/luks_cli.rs` as `crate::luks_cli`) or the real cryptsetup, and path text.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// (exit code, stdout, stderr) of `cryptsetup ARGS` run by udm in-process, talking to the
/// daemon on `socket` for commands that need one.
pub fn udm(args: &[&str], stdin: &[u8], socket: Option<&Path>) -> (i32, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut input = stdin;
    let mut io = crate::luks_cli::Io {
        out: &mut out,
        err: &mut err,
        input: &mut input,
        tty: false,
        socket: socket.map(Path::to_path_buf).unwrap_or_default(),
    };
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let code = crate::luks_cli::run(&mut io, "cryptsetup", &args);
    (
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// The same with the real cryptsetup.
pub fn real(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    use std::io::Write;
    let mut c = Command::new("cryptsetup")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run cryptsetup");
    // The tool may exit without reading its stdin (an error, or no passphrase needed).
    let _ = c.stdin.take().unwrap().write_all(stdin);
    let o = c.wait_with_output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A path as `&str` (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `qemu-img ARGS`, which must succeed.
pub fn qemu_img(args: &[&str]) {
    let o = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("run qemu-img");
    assert!(
        o.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}
