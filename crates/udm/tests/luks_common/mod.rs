//! Helpers shared by the `udm luks` tests: run the built udm as `cryptsetup` or the real
//! cryptsetup, and path text.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// (exit code, stdout, stderr) of the built udm run as `cryptsetup ARGS`, talking to the
/// daemon on `socket` for commands that need one.
pub fn udm(args: &[&str], stdin: &[u8], socket: Option<&Path>) -> (i32, String, String) {
    udm_testkit::tool::run_as(
        Path::new(env!("CARGO_BIN_EXE_udm")),
        "cryptsetup",
        args,
        stdin,
        socket,
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
