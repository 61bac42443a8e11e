//! Replays the real kernel's crypt and verity transcript (`tests/golden/kernel/crypt`,
//! captured in refvm by `tests/kernel/capture.sh --cases tests/kernel/crypt_cases.tsv
//! --disks 4`: Debian kernel 6.1, cryptsetup/veritysetup 2.6.1, dmsetup 1.02.185) against
//! `udm daemon` + the udm binary invoked as `dmsetup`, `cryptsetup` and `veritysetup`, and
//! compares stdout, stderr, exit codes and the kernel log byte for byte.
//!
//! Normalisations, each forced by an environment difference:
//! * The guest's disks `/dev/vda`…`/dev/vdd` (254:0, 254:16, 254:32, 254:48) are image files
//!   here: commands get the image paths; in output an image path is printed as the kernel's
//!   `maj:min` by `dmsetup`, as `/dev/vdX` by cryptsetup/veritysetup, as `vdX` in the log.
//! * `/dev/mapper/NAME` (read and written with plain `dd`) is the daemon's FUSE file of NAME;
//!   `/tmp/` is the test's directory. Formatting steps run the real `/usr/sbin/cryptsetup`
//!   and `/usr/sbin/veritysetup` on both sides (only opening, status and I/O are udm's).
//! * Of the kernel log only `device-mapper:` lines count (the guest also logs crypto-module
//!   loading), and dm-verity's `<alg> using implementation "<kernel crypto driver>"` line
//!   names a kernel crypto driver udm does not have.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use udm_testkit::Daemon;

const DISKS: [(&str, &str); 4] = [
    ("vda", "254:0"),
    ("vdb", "254:16"),
    ("vdc", "254:32"),
    ("vdd", "254:48"),
];

/// Cases compared byte for byte: fewer means cases silently stopped being checked.
const MIN_COMPARED: usize = 44;

struct Env {
    // Dropped first: the daemon unmounts the FUSE dir before its parent goes.
    d: Daemon,
    bin: PathBuf,
    fuse: PathBuf,
    _fuse_parent: tempfile::TempDir,
}

impl Env {
    fn tmp(&self) -> String {
        self.d.dir.path().display().to_string()
    }
    fn img(&self, disk: &str) -> String {
        format!("{}/{disk}.img", self.tmp())
    }
}

fn start() -> Option<Env> {
    if !udm_fuse::usable() {
        assert!(
            std::env::var("UDM_REQUIRE_TOOLS").map_or(true, |v| v != "1"),
            "FUSE is not usable here (UDM_REQUIRE_TOOLS=1)"
        );
        eprintln!("SKIP: FUSE not usable");
        return None;
    }
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_udm"));
    let dir = tempfile::tempdir().unwrap();
    let fuse = dir.path().join("mapper");
    let d = Daemon::start_with(&exe, &["--fuse", fuse.to_str().unwrap()]);
    let bin = d.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for tool in ["dmsetup", "cryptsetup", "veritysetup"] {
        std::os::unix::fs::symlink(&exe, bin.join(tool)).unwrap();
    }
    for (disk, _) in DISKS {
        udm_testkit::image(d.dir.path(), &format!("{disk}.img"), 64 << 20);
    }
    // The FUSE mount shows up asynchronously.
    for _ in 0..500 {
        if is_mount(&fuse) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Some(Env {
        d,
        bin,
        fuse,
        _fuse_parent: dir,
    })
}

fn is_mount(p: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| m.contains(&format!(" {} ", p.display())))
        .unwrap_or(false)
}

fn run_case(env: &Env, cmd: &str) -> (String, String, i32) {
    let tmp = env.tmp();
    let mut cmd = cmd.replace("/tmp/", &format!("{tmp}/"));
    for (disk, _) in DISKS {
        cmd = cmd.replace(&format!("/dev/{disk}"), &env.img(disk));
    }
    let cmd = cmd.replace("/dev/mapper/", &format!("{}/", env.fuse.display()));
    let path = format!(
        "{}:{}",
        env.bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new("bash")
        .arg("-c")
        .arg(&cmd)
        .current_dir(env.d.dir.path())
        .env("PATH", path)
        .env("UDM_SOCKET", &env.d.socket)
        .env("LANG", "C.UTF-8")
        .env_remove("LC_ALL")
        .env("TERM", "dumb")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        o.status.code().unwrap_or(-1),
    )
}

/// Image paths as the kernel-side tool printed the disk.
fn normalise(env: &Env, cmd: &str, s: &str) -> String {
    let dmsetup = cmd.starts_with("dmsetup");
    let mut s = s.to_string();
    for (disk, devno) in DISKS {
        let to = if dmsetup {
            devno.to_string()
        } else {
            format!("/dev/{disk}")
        };
        s = s.replace(&env.img(disk), &to);
    }
    s
}

fn udm_dmesg(env: &Env, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_udm"))
        .arg("dmesg")
        .args(args)
        .env("UDM_SOCKET", &env.d.socket)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
    for (disk, _) in DISKS {
        s = s.replace(&env.img(disk), disk);
    }
    s
}

/// The `device-mapper:` lines of a log, without dm-verity's crypto-driver line.
fn dm_lines(log: &str) -> String {
    log.lines()
        .filter(|l| l.starts_with("device-mapper: "))
        .filter(|l| {
            !(l.starts_with("device-mapper: verity: ") && l.contains(" using implementation \""))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn kernel_crypt_transcript() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/kernel/crypt");
    let cases = std::fs::read_to_string(golden.join("cases.tsv")).unwrap_or_else(|e| {
        panic!(
            "golden transcript {} missing ({e}); it is part of the repository",
            golden.display()
        )
    });
    for tool in ["bash", "dd", "od", "cksum", "cryptsetup", "veritysetup"] {
        if !udm_testkit::require_tool(tool) {
            return;
        }
    }
    let Some(env) = start() else { return };
    let mut failures = Vec::new();
    let mut compared = 0;
    for line in cases.lines().filter(|l| !l.trim().is_empty()) {
        let (case, cmd) = line.split_once('\t').expect("case<TAB>command");
        udm_dmesg(&env, &["-C"]);
        let (out, err, rc) = run_case(&env, cmd);
        let log = dm_lines(&udm_dmesg(&env, &[]));
        let read = |ext: &str| std::fs::read_to_string(golden.join(format!("{case}.{ext}")));
        let want_out = read("out").unwrap_or_default();
        let want_err = read("err").unwrap_or_default();
        let want_rc: i32 = read("rc").unwrap_or_default().trim().parse().unwrap_or(0);
        let want_log = dm_lines(&read("dmesg").unwrap_or_default());
        let out = normalise(&env, cmd, &out);
        let err = normalise(&env, cmd, &err);
        compared += 1;
        if out != want_out || err != want_err || rc != want_rc || log != want_log {
            failures.push(format!(
                "--- {case}: {cmd}\nrc: udm {rc} / kernel {want_rc}\nstdout udm:\n{out}stdout kernel:\n{want_out}stderr udm:\n{err}stderr kernel:\n{want_err}log udm:\n{log}log kernel:\n{want_log}"
            ));
        }
    }
    eprintln!("{compared} crypt/verity transcript cases compared");
    assert!(
        compared >= MIN_COMPARED,
        "only {compared} cases were compared, expected at least {MIN_COMPARED}"
    );
    assert!(
        failures.is_empty(),
        "{} of {compared} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
