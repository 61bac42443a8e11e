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
    /// `bin` talking to `daemon`, with its state directory `state`.
    pub fn on(bin: PathBuf, daemon: &crate::Daemon, state: PathBuf) -> UdmCli {
        UdmCli {
            bin,
            socket: daemon.socket.clone(),
            state,
        }
    }

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

    /// The live table of `name` with dm device numbers written `/dev/mapper/NAME` and the
    /// block devices in `pvs` written `pv0`, `pv1`, … (as lvm2 fixtures record tables).
    pub fn live_table(&self, name: &str, pvs: &[&str]) -> String {
        let info = self.dm(&[
            "info",
            "-c",
            "--noheadings",
            "--separator",
            " ",
            "-o",
            "name,major,minor",
        ]);
        let rows: Vec<Vec<&str>> = info.lines().map(|l| l.split(' ').collect()).collect();
        let nums: Vec<String> = pvs
            .iter()
            .map(|p| {
                let n = p.rsplit('/').next().unwrap();
                std::fs::read_to_string(format!("/sys/class/block/{n}/dev"))
                    .unwrap()
                    .trim()
                    .to_string()
            })
            .collect();
        self.dm(&["table", name])
            .lines()
            .map(|l| {
                l.split(' ')
                    .map(|w| {
                        if let Some(i) = nums.iter().position(|p| p == w) {
                            return format!("pv{i}");
                        }
                        match rows.iter().find(|r| format!("{}:{}", r[1], r[2]) == w) {
                            Some(r) => format!("/dev/mapper/{}", r[0]),
                            None => w.to_string(),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
                    .trim_end()
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The dm uuid of device `name`.
    pub fn uuid_of(&self, name: &str) -> String {
        self.dm(&["info", "-c", "--noheadings", "-o", "uuid", name])
            .trim()
            .to_string()
    }
}

/// `NAME UUID: TABLE` lines of an lvm2 table fixture (`#` lines are comments).
pub fn fixture_tables(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (head, t) = l.split_once(": ").unwrap();
            let (n, u) = head.split_once(' ').unwrap();
            (n.to_string(), u.to_string(), t.trim_end().to_string())
        })
        .collect()
}
