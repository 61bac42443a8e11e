//! Replays the real kernel + dmsetup transcript (`tests/golden/kernel/cases.tsv`, captured on
//! Debian kernel 6.1 / dmsetup 1.02.185) against `udm daemon` + the udm binary invoked as
//! `dmsetup`, and compares stdout, stderr and exit codes byte for byte after the documented
//! normalisations below.
//!
//! Normalisations (udm output → kernel form), each forced by a real environment difference:
//! * The guest's `/dev/vda` and `/dev/vdb` (block devices 254:0 and 254:16) are 64 MiB image
//!   files here. Commands get the image paths; in udm's output a path is printed where the
//!   kernel prints the device: `deps` shows `(254, 0)`, `-o devname|blkdevname` show `(vda)`,
//!   `ls --tree` shows `(254:0)` (and `<vda>` with `blkdevname`), everything else `254:0`.
//!   For the few aligned reports whose column widths depend on those values, runs of spaces
//!   are collapsed before comparing (listed in `LOOSE_SPACING`).
//! * The kernel log: `udm dmesg -C` runs before every case (as the capture ran `dmesg -C`)
//!   and `udm dmesg` after it; its lines must equal the case's `.dmesg` file, with the image
//!   paths in them named as the kernel names the disks (`vda`, `vdb`).
//! * Shell steps that inspect `/dev` or `/sys` are skipped. `setup_loop4k`/`teardown_loop4k`
//!   attach and detach a 4096-byte-sector loop device on a free loop number here; commands
//!   get it for `/dev/loop0`, and its kernel name (`loopN`) reads `loop0` in the log;
//!   `exec N</dev/mapper/X` (holding a device open) is done with an NBD connection to the
//!   daemon's export of X, which counts as an open like the kernel's.
//! * `KNOWN_GAPS` lists cases whose output still differs, each with the reason; they are run
//!   (to keep the state in step) but not compared.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Cases that are not dmsetup commands udm can run here.
const SKIP: &[(&str, &str)] = &[
    ("dev_mapper_nodes", "inspects /dev/mapper nodes"),
    ("dev_dm_nodes", "inspects /dev/dm-N nodes"),
    ("sysfs_dm_name", "inspects /sys/block"),
    ("control_node_after", "inspects /dev/mapper/control"),
    ("resume_empty_nodes", "inspects /dev/mapper nodes"),
    ("dev_mapper_final", "inspects /dev/mapper nodes"),
    (
        "create_control",
        "libdm node clash with /dev/mapper/control; udm reserves the name",
    ),
    ("create_control_remove", "see create_control"),
];

/// Cases run but not compared, with the reason the output differs.
const KNOWN_GAPS: &[(&str, &str)] = &[];

/// Set if udm's event numbers ever diverge from the kernel's again: event numbers are then
/// masked in both outputs and `wait` cases that depend on them are not compared.
const EVENT_NR_GAP: bool = false;
const EVENT_NR_CASES: &[&str] = &["wait_blocks", "wait_returns"];

/// Cases compared byte for byte today (the transcript minus `SKIP`, `KNOWN_GAPS` and the
/// `exec` steps): fewer means cases silently stopped being checked.
const MIN_COMPARED: usize = 269;

/// Aligned reports whose widths depend on device names/paths (compared with spaces collapsed).
const LOOSE_SPACING: &[&str] = &["info_c_deps", "info_c_deps_fields", "info_c_tree"];

struct Env {
    dir: tempfile::TempDir,
    bin: PathBuf,
    daemon: Child,
    socket: PathBuf,
    nbd: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

fn start() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_udm"));
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(&exe, bin.join("dmsetup")).unwrap();
    udm_testkit::image(dir.path(), "vda.img", 64 << 20);
    udm_testkit::image(dir.path(), "vdb.img", 64 << 20);
    let socket = dir.path().join("control");
    let nbd = dir.path().join("nbd.sock");
    let daemon = Command::new(&exe)
        .args(["daemon", "--socket"])
        .arg(&socket)
        .arg("--nbd-socket")
        .arg(&nbd)
        .env("UDM_LOG", "warn")
        .env("UDM_STATE_DIR", dir.path().join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !(socket.exists() && nbd.exists()) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Env {
        dir,
        bin,
        daemon,
        socket,
        nbd,
    }
}

/// Open `name` the way `exec N</dev/mapper/NAME` does: an NBD connection (fixed newstyle,
/// NBD_OPT_GO) to the daemon's export, kept until dropped.
fn nbd_hold(sock: &Path, name: &str) -> UnixStream {
    let mut s = UnixStream::connect(sock).unwrap();
    let mut hello = [0u8; 18];
    s.read_exact(&mut hello).unwrap();
    assert_eq!(&hello[..8], b"NBDMAGIC");
    s.write_all(&3u32.to_be_bytes()).unwrap();
    let mut data = Vec::new();
    data.extend_from_slice(&(name.len() as u32).to_be_bytes());
    data.extend_from_slice(name.as_bytes());
    data.extend_from_slice(&0u16.to_be_bytes());
    let mut opt = Vec::new();
    opt.extend_from_slice(b"IHAVEOPT");
    opt.extend_from_slice(&7u32.to_be_bytes());
    opt.extend_from_slice(&(data.len() as u32).to_be_bytes());
    opt.extend_from_slice(&data);
    s.write_all(&opt).unwrap();
    loop {
        let mut h = [0u8; 20];
        s.read_exact(&mut h).unwrap();
        let typ = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        let mut body = vec![0u8; len as usize];
        s.read_exact(&mut body).unwrap();
        if typ == 1 {
            return s;
        }
        assert!(typ & 0x8000_0000 == 0, "NBD_OPT_GO {name} failed: {typ:#x}");
    }
}

struct Outcome {
    out: String,
    err: String,
    rc: i32,
}

/// `udm dmesg [args]` against the test daemon.
fn dmesg(env: &Env, args: &[&str]) -> String {
    let o = Command::new(env.bin.join("dmsetup").canonicalize().unwrap())
        .arg("dmesg")
        .args(args)
        .env("UDM_SOCKET", &env.socket)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "udm dmesg failed: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn run_case(env: &Env, cmd: &str, loop4k: Option<&str>) -> Outcome {
    let tmp = env.dir.path().display().to_string();
    let cmd = cmd.replace("/dev/loop0", loop4k.unwrap_or("/dev/loop0"));
    let cmd = cmd
        .replace("/dev/vda", &format!("{tmp}/vda.img"))
        .replace("/dev/vdb", &format!("{tmp}/vdb.img"))
        .replace("/tmp/table.txt", &format!("{tmp}/table.txt"));
    let path = format!(
        "{}:{}",
        env.bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new("bash")
        .arg("-c")
        .arg(&cmd)
        .current_dir(env.dir.path())
        .env("PATH", path)
        .env("UDM_SOCKET", &env.socket)
        .env("LANG", "C.UTF-8")
        .env_remove("LC_ALL")
        .env("TERM", "dumb")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Outcome {
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
        rc: o.status.code().unwrap_or(-1),
    }
}

/// Map image paths in udm output to what the kernel prints for /dev/vda, /dev/vdb.
fn normalise(env: &Env, cmd: &str, s: &str) -> String {
    let tmp = env.dir.path().display().to_string();
    let disks = [
        (format!("{tmp}/vda.img"), "vda", "254:0", "254, 0"),
        (format!("{tmp}/vdb.img"), "vdb", "254:16", "254, 16"),
    ];
    let mut s = s.to_string();
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let is_deps = words.contains(&"deps");
    let names = words.windows(2).any(|w| {
        w[0] == "-o"
            && (w[1].contains("devname") || w[1].contains("blkdevname"))
            && !w[1].contains(',')
    });
    let tree = words.contains(&"--tree");
    let tree_blk = tree && cmd.contains("blkdevname");
    for (path, name, devno, comma) in &disks {
        if tree {
            let to = if tree_blk {
                format!(" <{name}> ({devno})")
            } else {
                format!(" ({devno})")
            };
            s = s.replace(&format!(" ({path})"), &to);
        } else if is_deps && names {
            s = s.replace(&format!("({path})"), &format!("({name})"));
        } else if is_deps {
            s = s.replace(&format!("({path})"), &format!("({comma})"));
        }
        if cmd.contains("blkdevs_used") {
            s = report_paths(&s, cmd, path, name, devno);
        }
        s = s.replace(path.as_str(), devno);
        s = s.replace(&format!("{tmp}/vda.img"), "vda");
    }
    s
}

/// In a report with both `devnos_used` and `blkdevs_used`, the n-th path-bearing value of a
/// row belongs to the n-th of those fields in `-o` order: devno there, kernel name here.
fn report_paths(s: &str, cmd: &str, path: &str, name: &str, devno: &str) -> String {
    let opts = cmd
        .split_whitespace()
        .skip_while(|w| *w != "-o")
        .nth(1)
        .unwrap_or("");
    let order: Vec<bool> = opts
        .split(',')
        .filter(|f| *f == "devnos_used" || *f == "blkdevs_used")
        .map(|f| f == "blkdevs_used")
        .collect();
    s.lines()
        .map(|l| {
            let mut i = 0;
            let words: Vec<String> = l
                .split(' ')
                .map(|w| {
                    if !w.contains(path) {
                        return w.to_string();
                    }
                    let blk = order.get(i).copied().unwrap_or(false);
                    i += 1;
                    w.replace(path, if blk { name } else { devno })
                })
                .collect();
            words.join(" ") + "\n"
        })
        .collect()
}

/// Hide event numbers (see `EVENT_NR_GAP`).
fn mask_events(s: &str) -> String {
    let mut out = String::new();
    let mut event_col: Option<usize> = None;
    for l in s.lines() {
        let mut l = l.to_string();
        if l.starts_with("Event number:") {
            l = "Event number: #".into();
        } else if let Some(rest) = l.strip_prefix("Event ") {
            if rest.bytes().all(|b| b.is_ascii_digit()) {
                l = "Event #".into();
            }
        }
        while let Some(p) = l.find("DM_EVENTS='") {
            let start = p + "DM_EVENTS='".len();
            let end = start + l[start..].find('\'').unwrap_or(0);
            l.replace_range(p..end, "DM_EVENTS=#");
        }
        if let Some(c) = event_col {
            if l.len() >= c + 6 {
                let span: String = l[c..c + 6]
                    .chars()
                    .map(|ch| if ch.is_ascii_digit() { '#' } else { ch })
                    .collect();
                l.replace_range(c..c + 6, &span);
            }
        }
        if l.contains(" Event ") && l.starts_with("Name ") {
            event_col = l.find(" Event ").map(|p| p + 1);
        }
        for sep in [':', ','] {
            let f: Vec<&str> = l.split(sep).collect();
            if f.len() == 8 && f[6].bytes().all(|b| b.is_ascii_digit()) && !f[6].is_empty() {
                let mut f: Vec<String> = f.iter().map(|x| x.to_string()).collect();
                f[6] = "#".into();
                l = f.join(&sep.to_string());
            }
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

fn collapse(s: &str) -> String {
    s.lines()
        .map(|l| {
            l.split(' ')
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn kernel_transcript() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/kernel");
    // The transcript is committed with the repository (`tests/golden/kernel`, re-captured by
    // `tests/kernel/capture.sh` in refvm): missing, the checkout is broken, never a skip.
    let cases = std::fs::read_to_string(golden.join("cases.tsv")).unwrap_or_else(|e| {
        panic!(
            "golden transcript {} missing ({e}); it is part of the repository",
            golden.join("cases.tsv").display()
        )
    });
    if !udm_testkit::require_tool("bash") || !udm_testkit::require_tool("timeout") {
        return;
    }
    let env = start();
    let mut held: HashMap<String, UnixStream> = HashMap::new();
    let mut loop4k: Option<udm_testkit::loopdev::LoopDev> = None;
    let mut failures = Vec::new();
    let mut compared = 0;
    for line in cases.lines().filter(|l| !l.trim().is_empty()) {
        let (case, cmd) = line.split_once('\t').expect("case<TAB>command");
        if SKIP.iter().any(|(c, _)| *c == case) {
            continue;
        }
        if let Some(rest) = cmd.strip_prefix("exec ") {
            // `exec 3</dev/mapper/lin` or `exec 3<&-`.
            let (fd, target) = rest.split_once('<').unwrap();
            if target == "&-" {
                held.remove(fd);
                std::thread::sleep(Duration::from_millis(300));
            } else {
                let name = target.trim_start_matches("/dev/mapper/");
                held.insert(fd.to_string(), nbd_hold(&env.nbd, name));
            }
            continue;
        }
        match case {
            "setup_loop4k" => {
                let img = udm_testkit::image(env.dir.path(), "l4k.img", 16 << 20);
                loop4k =
                    udm_testkit::loopdev::LoopDev::attach_with(&img, &["--sector-size", "4096"]);
                assert!(loop4k.is_some(), "no 4096-byte-sector loop device");
                continue;
            }
            "teardown_loop4k" => {
                loop4k = None;
                continue;
            }
            _ => {}
        }
        let loop_path = loop4k.as_ref().map(|l| l.path().to_string());
        dmesg(&env, &["-C"]);
        let got = run_case(&env, cmd, loop_path.as_deref());
        let tmp = env.dir.path().display().to_string();
        let mut got_dmesg = dmesg(&env, &[])
            .replace(&format!("{tmp}/vda.img"), "vda")
            .replace(&format!("{tmp}/vdb.img"), "vdb");
        if let Some(l) = &loop_path {
            let kname = l.trim_start_matches("/dev/");
            got_dmesg = got_dmesg
                .replace(&format!("{kname} "), "loop0 ")
                .replace(&format!("{kname}\n"), "loop0\n");
        }
        if KNOWN_GAPS.iter().any(|(c, _)| *c == case)
            || (EVENT_NR_GAP && EVENT_NR_CASES.contains(&case))
        {
            continue;
        }
        let read = |ext: &str| std::fs::read_to_string(golden.join(format!("{case}.{ext}")));
        let want_out = read("out").unwrap_or_default();
        let want_err = read("err").unwrap_or_default();
        let want_rc: i32 = read("rc").unwrap_or_default().trim().parse().unwrap_or(0);
        let want_dmesg = read("dmesg").unwrap_or_default();
        let mut out = normalise(&env, cmd, &got.out);
        let mut err = normalise(&env, cmd, &got.err);
        let (mut want_out, mut want_err) = (want_out, want_err);
        if EVENT_NR_GAP {
            out = mask_events(&out);
            want_out = mask_events(&want_out);
        }
        if LOOSE_SPACING.contains(&case) {
            out = collapse(&out);
            want_out = collapse(&want_out);
            err = collapse(&err);
            want_err = collapse(&want_err);
        }
        compared += 1;
        if out != want_out || err != want_err || got.rc != want_rc || got_dmesg != want_dmesg {
            failures.push(format!(
                "--- {case}: {cmd}\nrc: udm {} / kernel {want_rc}\nstdout udm:\n{out}stdout kernel:\n{want_out}stderr udm:\n{err}stderr kernel:\n{want_err}dmesg udm:\n{got_dmesg}dmesg kernel:\n{want_dmesg}",
                got.rc
            ));
        }
    }
    drop(held);
    eprintln!("{compared} transcript cases compared");
    assert!(
        compared >= MIN_COMPARED,
        "only {compared} transcript cases were compared, expected at least {MIN_COMPARED}"
    );
    assert!(
        failures.is_empty(),
        "{} of {compared} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
