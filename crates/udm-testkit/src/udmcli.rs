//! Running the udm binary in tests with a given daemon socket and state directory (where
//! `udm lvm` keeps its devices file and `udm open` its records).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The udm binary bound to one daemon socket and state directory.
pub struct UdmCli {
    pub bin: PathBuf,
    pub socket: PathBuf,
    pub state: PathBuf,
}

impl UdmCli {
    /// `prog args…` (prog: the udm binary or a link named after a tool); stdin is empty.
    /// Returns (stdout, stderr, exit code).
    pub fn run_prog(&self, prog: &Path, args: &[&str]) -> (String, String, i32) {
        let o = Command::new(prog)
            .args(args)
            .env("UDM_SOCKET", &self.socket)
            .env("UDM_STATE_DIR", &self.state)
            .stdin(Stdio::null())
            .output()
            .expect("spawn udm");
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
            o.status.code().unwrap_or(-1),
        )
    }

    /// `udm ARGS…`; (stdout, stderr, exit code).
    pub fn run(&self, args: &[&str]) -> (String, String, i32) {
        self.run_prog(&self.bin, args)
    }

    /// `udm lvm CMD args…`; (stdout, stderr, exit code).
    pub fn lvm(&self, cmd: &str, args: &[&str]) -> (String, String, i32) {
        let mut a = vec!["lvm", cmd];
        a.extend_from_slice(args);
        self.run(&a)
    }

    /// `udm lvm CMD args…`, which must succeed; its stdout.
    pub fn ok(&self, cmd: &str, args: &[&str]) -> String {
        let (o, e, c) = self.lvm(cmd, args);
        assert_eq!(c, 0, "udm lvm {cmd} {args:?} failed:\n{o}\n{e}");
        o
    }

    /// `udm ARGS…` (dmsetup commands and the rest), which must succeed; its stdout.
    pub fn dm(&self, args: &[&str]) -> String {
        let (o, e, c) = self.run(args);
        assert_eq!(c, 0, "udm {args:?} failed:\n{o}\n{e}");
        o
    }
}
