//! The thin-provisioning walkthrough users try first, through the daemon and the CLI:
//! make a pool on two image files, create a thin device larger than the pool, put ext4 on
//! it (mkfs.ext4 and e2fsck over the FUSE file), see the pool's and the thin's status,
//! NBD block status showing the unprovisioned space as holes, a snapshot that checks
//! clean, and metadata the real `thin_check` accepts afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use udm_proto::{Client, Reply, Request};
use udm_testkit::{require_tool, Daemon};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_udm"))
}

fn udm(d: &Daemon, args: &[&str]) -> String {
    udm_testkit::run(Command::new(bin()).args(args).env("UDM_SOCKET", &d.socket))
}

fn fuse_file(d: &Daemon, name: &str) -> Option<PathBuf> {
    let dir = match Client::connect(&d.socket)
        .unwrap()
        .call(Request::DaemonInfo)
    {
        Ok(Reply::Daemon { fuse_dir, .. }) => fuse_dir.map(PathBuf::from)?,
        r => panic!("unexpected reply {r:?}"),
    };
    let p = dir.join(name);
    let t = Instant::now();
    while !p.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{} never appeared",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(p)
}

fn fuse_ok() -> bool {
    if udm_fuse::usable() {
        return true;
    }
    if std::env::var("UDM_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
        panic!("FUSE is not usable here (UDM_REQUIRE_TOOLS=1)");
    }
    eprintln!("SKIP: FUSE not usable");
    false
}

fn ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn thin_walkthrough_ext4_snapshot_and_holes() {
    let tools = ["mkfs.ext4", "e2fsck", "nbdinfo", "thin_check"];
    if !tools.iter().all(|t| require_tool(t)) || !fuse_ok() {
        return;
    }
    let d = Daemon::start(bin());
    let tmp = tempfile::tempdir().unwrap();
    let meta = udm_testkit::image(tmp.path(), "meta.img", 4 << 20);
    let data = udm_testkit::image(tmp.path(), "data.img", 1 << 30);
    let (m, dd) = (meta.display().to_string(), data.display().to_string());
    let pool = format!("0 2097152 thin-pool {m} {dd} 128 1024");
    udm(&d, &["create", "pool", "--table", &pool]);
    assert_eq!(
        udm(&d, &["status", "pool"]),
        "0 2097152 thin-pool 0 112/1024 0/16384 - rw discard_passdown queue_if_no_space - 256 \n"
    );
    assert_eq!(
        udm(&d, &["table", "pool"]),
        format!("0 2097152 thin-pool {m} {dd} 128 1024 0 \n")
    );
    udm(&d, &["message", "pool", "0", "create_thin", "0"]);
    // 2 GiB of thin device on a 1 GiB pool.
    udm(
        &d,
        &[
            "create",
            "thin",
            "--table",
            "0 4194304 thin /dev/mapper/pool 0",
        ],
    );
    assert_eq!(udm(&d, &["status", "thin"]), "0 4194304 thin 0 -\n");
    let f = fuse_file(&d, "thin").expect("FUSE dir");
    ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&f));
    ok(Command::new("e2fsck").args(["-f", "-n"]).arg(&f));
    let st = udm(&d, &["status", "thin"]);
    let mapped: u64 = st.split(' ').nth(3).unwrap().parse().unwrap();
    assert!(
        mapped > 0 && mapped < 4194304 / 4,
        "ext4 provisions a little: {st}"
    );
    // NBD block status: most of the device is a hole.
    let map = udm_testkit::run(Command::new("nbdinfo").arg("--map").arg(d.uri("thin")));
    let holes: u64 = map
        .lines()
        .filter(|l| l.contains("hole"))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(holes > (1 << 31) / 2, "holes {holes}:\n{map}");
    // A snapshot of the live filesystem (origin suspended, as the kernel requires).
    udm(&d, &["suspend", "thin"]);
    udm(&d, &["message", "pool", "0", "create_snap", "1", "0"]);
    udm(&d, &["resume", "thin"]);
    udm(
        &d,
        &[
            "create",
            "snap",
            "--table",
            "0 4194304 thin /dev/mapper/pool 1",
        ],
    );
    let s = fuse_file(&d, "snap").unwrap();
    ok(Command::new("e2fsck").args(["-f", "-n"]).arg(&s));
    // Writes to the origin break sharing; the snapshot stays clean.
    ok(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "again"])
        .arg(&f));
    ok(Command::new("e2fsck").args(["-f", "-n"]).arg(&s));
    let pst = udm(&d, &["status", "pool"]);
    assert!(pst.starts_with("0 2097152 thin-pool 0 "), "{pst}");
    for n in ["snap", "thin", "pool"] {
        udm(&d, &["remove", n]);
    }
    udm_testkit::thin::thin_check(&meta).unwrap();
}
