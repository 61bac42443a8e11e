//! Differential tests against the real `dmsetup` for everything that needs no kernel driver
//! (usage, field help, option and argument errors, splitname reports, udev helpers), plus the
//! message udm prints when no daemon is listening.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Command lines whose output never reaches the driver.
const CASES: &[&[&str]] = &[
    &[],
    &["help"],
    &["help", "-c"],
    &["-h"],
    &["--help"],
    &["-C", "--help"],
    &["help", "extra"],
    &["version", "extra"],
    &["bogus"],
    &["--foo"],
    &["--foo=1", "ls"],
    &["--no", "ls"],
    &["--nou", "ls"],
    &["-Z", "ls"],
    &["ls", "-o"],
    &["ls", "--options"],
    &["--noheadings=1", "ls"],
    &["--verbose", "version"],
    &["-j", "1", "info"],
    &["-m", "1", "info"],
    &["--table", "x", "--notable", "create", "a"],
    &["--addnodeonresume", "--addnodeoncreate", "ls"],
    &["info", "-o", "name"],
    &["deps", "-o", "foo"],
    &["ls", "-o", "devno,bogus"],
    &["ls", "--tree", "-o", "bogus"],
    &["ls", "--tree", "-o", "ascii,bogus,x"],
    &["info", "-c", "-o", "bogus"],
    &["info", "-c", "-O", "bogus"],
    &["status", "-c", "-O", "name"],
    &["--mode", "9", "ls"],
    &["--count", "-1", "ls"],
    &["--interval", "0", "ls"],
    &["--manglename", "bad", "ls"],
    &["--readahead", "-5", "ls"],
    &["setgeometry", "a", "1", "2"],
    &["splitname"],
    &["splitname", "a", "b", "c"],
    &["splitname", "vg-lv"],
    &["splitname", "vg--x-lv_tmeta-extra"],
    &["splitname", "vg-lv-layer-x"],
    &["splitname", "novg"],
    &["splitname", "x--y-z-"],
    &["splitname", "a-b", "OTHER"],
    &["splitname", "vg-lv", "--noheadings"],
    &["splitname", "vg-lv", "--nameprefixes"],
    &["splitname", "vg-lv", "--nameprefixes", "--noheadings"],
    &["splitname", "vg-lv", "--nameprefixes", "--unquoted"],
    &["splitname", "vg-lv", "--rows"],
    &["splitname", "vg-lv", "--rows", "--noheadings"],
    &["splitname", "vg-lv", "--separator", "|"],
    &["splitname", "vg-lv", "--sep=,"],
    &["splitname", "vg-lv", "-o", "help"],
    &["splitname", "vg-lv", "-o", "VGNAME"],
    &["splitname", "vg-lv", "-o", "splitname_all"],
    &["splitname", "vg-lv", "-o", "+subsystem"],
    &[
        "splitname",
        "vg-lv",
        "-o",
        "vg_name,subsystem,lv_name",
        "-O",
        "-lv_name",
    ],
    &["splitname", "vg-lv", "-o", "vg_name,selected"],
    &["splitname", "vg-lv", "-o", "bogus"],
    &["splitname", "vg-lv", "-o", "splitname_vg_name"],
    &["splitname", "vg-lv", "-O", "bogus"],
    &["splitname", "vg-lv", "-o", "name"],
    &["splitname", "vg-lv", "-S", "vg_name=vg"],
    &["splitname", "vg-lv", "-S", "vg_name=xx"],
    &["splitname", "vg-lv", "-S", "lv_name=~^l && vg_name!=x"],
    &[
        "splitname",
        "vg-lv",
        "-o",
        "vg_name,selected",
        "-S",
        "vg_name=xx",
    ],
    &["splitname", "vg-lv", "-S", "help"],
    &["-cv", "splitname", "a-b"],
    &["-ovg_name", "splitname", "a-b"],
    &["udevflags", "0x00410000"],
    &["udevflags", "0xffff0000"],
    &["udevflags", "0"],
    &["udevflags", "0x100000000"],
    &["udevflags", "12abc"],
    &["udevcomplete", "0x10000"],
    &["udevcomplete", "0"],
    &["udevcookies"],
    &["udevreleasecookie"],
    &["udevcomplete_all", "x"],
];

fn udm_as_dmsetup(dir: &Path) -> PathBuf {
    let link = dir.join("dmsetup");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_udm"), &link).unwrap();
    }
    link
}

fn run(prog: &Path, args: &[&str], socket: &Path) -> Output {
    use std::os::unix::process::CommandExt;
    Command::new(prog)
        .arg0("dmsetup")
        .args(args)
        .env("UDM_SOCKET", socket)
        .env("LANG", "C.UTF-8")
        .env_remove("LC_ALL")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn offline_commands_match_real_dmsetup() {
    if !udm_testkit::require_tool("dmsetup") {
        return;
    }
    let real = udm_testkit::which("dmsetup").unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Both run with argv[0] = `dmsetup`, so getopt's messages name the same program.
    let real_link = dir.path().join("real");
    std::fs::create_dir(&real_link).unwrap();
    std::os::unix::fs::symlink(&real, real_link.join("dmsetup")).unwrap();
    let ours = udm_as_dmsetup(dir.path());
    let socket = dir.path().join("no-daemon");
    let mut diffs = Vec::new();
    for args in CASES {
        let want = run(&real_link.join("dmsetup"), args, &socket);
        let got = run(&ours, args, &socket);
        if want.stdout != got.stdout
            || want.stderr != got.stderr
            || want.status.code() != got.status.code()
        {
            diffs.push(format!(
                "dmsetup {args:?}: rc {:?}/{:?}\n--- real stdout\n{}--- udm stdout\n{}--- real stderr\n{}--- udm stderr\n{}",
                want.status.code(),
                got.status.code(),
                String::from_utf8_lossy(&want.stdout),
                String::from_utf8_lossy(&got.stdout),
                String::from_utf8_lossy(&want.stderr),
                String::from_utf8_lossy(&got.stderr)
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differ:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

#[test]
fn no_daemon_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let ours = udm_as_dmsetup(dir.path());
    let socket = dir.path().join("nothing/control");
    for args in [&["ls"][..], &["create", "x", "--notable"], &["version"]] {
        let o = run(&ours, args, &socket);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let want = format!(
            "udm: no udm daemon is listening on {}\nudm: start one with: udm daemon   (or set UDM_SOCKET)\n",
            socket.display()
        );
        assert_eq!(String::from_utf8_lossy(&o.stderr), want, "{args:?}");
    }
    // `version` prints the library line before it needs the daemon.
    let o = run(&ours, &["version"], &socket);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "Library version:   1.02.185 (2022-05-18)\n"
    );
}
