//! Helpers shared by the `udm luks` tests: run the built udm as `cryptsetup` or the real
//! cryptsetup, format a volume with either, and path text.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
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
    udm_testkit::tool::run_tool("cryptsetup", args, stdin)
}

/// The keyslot options the tests format with when speed matters more than strength.
pub const PBKDF2_FAST: [&str; 4] = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];

/// A 24 MiB image `name` in `dir` that `who` ("udm" or "cryptsetup") formats with `opts`
/// (`luksFormat -q --key-file - OPTS IMAGE`), the passphrase `pass` coming on stdin.
pub fn format(dir: &Path, name: &str, who: &str, opts: &[&str], pass: &[u8]) -> PathBuf {
    let p = udm_testkit::image(dir, name, 24 << 20);
    let mut a = vec!["luksFormat", "-q", "--key-file", "-"];
    a.extend_from_slice(opts);
    a.push(s(&p));
    let (code, _, err) = match who {
        "udm" => udm(&a, pass, None),
        "cryptsetup" => real(&a, pass),
        _ => panic!("who formats {name}: {who}?"),
    };
    assert_eq!(code, 0, "{who} luksFormat {opts:?} {name}: {err}");
    p
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

/// `qemu-img convert -f raw -O raw FROM TO` (paths or NBD URIs), which must succeed.
pub fn raw_copy(from: &str, to: &str) {
    qemu_img(&["convert", "-f", "raw", "-O", "raw", from, to]);
}

/// The same into the existing `to` (`-n`: not created, not truncated).
pub fn raw_copy_into(from: &str, to: &str) {
    qemu_img(&["convert", "-n", "-f", "raw", "-O", "raw", from, to]);
}
