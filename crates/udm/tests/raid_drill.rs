//! Failure drills for the `raid` target through the daemon and NBD:
//! - raid1/5/6/10 under fio verify: a leg's data device turns into an `error` device
//!   mid-run; no error reaches the client, the status shows the leg 'D'; the leg is replaced
//!   and rebuilt (`rebuild 1`), fio's data verifies and a `check` finds every leg consistent;
//! - replication: a raid1 with a local leg and an `nbd://` leg on another daemon keeps
//!   serving through the remote's outage, and after it returns (suspend/resume) recovers
//!   only the regions the bitmap marked while it was away.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use udm_testkit::{require_tool, Daemon};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_udm"))
}

const LEG: u64 = 32768; // 16 MiB
const META: u64 = 64;

fn udm(d: &Daemon, args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(args)
        .env("UDM_SOCKET", &d.socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "udm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn reload(d: &Daemon, name: &str, table: &str) {
    udm(d, &["suspend", name]);
    udm(d, &["load", name, "--table", table]);
    udm(d, &["resume", name]);
}

/// Status fields after `start len raid`.
fn status(d: &Daemon, name: &str) -> Vec<String> {
    udm(d, &["status", name])
        .split_whitespace()
        .skip(3)
        .map(String::from)
        .collect()
}

fn wait_idle(d: &Daemon, name: &str) -> Vec<String> {
    let t = Instant::now();
    loop {
        let f = status(d, name);
        let (a, b) = f[3].split_once('/').unwrap();
        if f[4] == "idle" && a == b && !f[2].contains('a') {
            return f;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "{name}: {f:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn fio(uri: &str, size: u64, extra: &[&str]) -> std::process::Output {
    Command::new("fio")
        .args([
            "--name=drill",
            "--ioengine=nbd",
            &format!("--uri={uri}"),
            "--bs=64k",
            &format!("--size={size}"),
            "--iodepth=8",
            "--verify=crc32c",
            "--verify_fatal=1",
            "--randseed=11",
            "--verify_state_save=0",
        ])
        .args(extra)
        .output()
        .unwrap()
}

fn ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn raid_drill_leg_killed_under_fio_then_replaced_and_rebuilt() {
    if !require_tool("fio") {
        return;
    }
    for (ty, n, data, params) in [
        ("raid1", 2usize, 1u64, "0 region_size 1024"),
        ("raid5_ls", 4, 3, "64 region_size 1024"),
        ("raid6_zr", 5, 3, "64 region_size 1024"),
        ("raid10", 4, 2, "64 region_size 1024"),
    ] {
        let d = Daemon::start_with(bin(), &["--no-fuse"]);
        let dir = d.dir.path().to_path_buf();
        let mut devs = String::new();
        for i in 0..n {
            let m = udm_testkit::image(&dir, &format!("m{i}.img"), META * 512);
            let f = udm_testkit::image(&dir, &format!("d{i}.img"), LEG * 512);
            d.create(
                &format!("m{i}"),
                &format!("0 {META} linear {} 0", m.display()),
            );
            d.create(
                &format!("d{i}"),
                &format!("0 {LEG} linear {} 0", f.display()),
            );
            devs += &format!(" /dev/mapper/m{i} /dev/mapper/d{i}");
        }
        let len = LEG * data;
        let words = params.split_whitespace().count();
        let table = |extra: &str, w: usize| {
            format!("0 {len} raid {ty} {} {params}{extra} {n}{devs}", words + w)
        };
        d.create("r", &table("", 0));
        wait_idle(&d, "r");
        let uri = d.uri("r");
        let size = len * 512;
        let writer = {
            let uri = uri.clone();
            std::thread::spawn(move || fio(&uri, size, &["--rw=randwrite", "--rate=24m"]))
        };
        std::thread::sleep(Duration::from_millis(300));
        reload(&d, "d1", &format!("0 {LEG} error"));
        let out = writer.join().unwrap();
        ok(&out, &format!("{ty}: fio across the failure"));
        let f = status(&d, "r");
        assert_eq!(f[2].as_bytes()[1], b'D', "{ty}: {f:?}");
        // Replace leg 1 and rebuild it.
        let fresh = udm_testkit::image(&dir, "new1.img", LEG * 512);
        reload(&d, "d1", &format!("0 {LEG} linear {} 0", fresh.display()));
        std::fs::write(dir.join("m1.img"), vec![0u8; (META * 512) as usize]).unwrap();
        reload(&d, "r", &table(" rebuild 1", 2));
        let f = wait_idle(&d, "r");
        assert_eq!(f[2], "A".repeat(n), "{ty}: {f:?}");
        ok(
            &fio(&uri, size, &["--rw=randwrite", "--verify_only"]),
            &format!("{ty}: verify after rebuild"),
        );
        udm(&d, &["message", "r", "0", "check"]);
        let f = wait_idle(&d, "r");
        assert_eq!(f[5], "0", "{ty}: check after rebuild: {f:?}");
        if ty == "raid1" {
            let a = std::fs::read(dir.join("d0.img")).unwrap();
            let b = std::fs::read(&fresh).unwrap();
            assert!(a == b, "raid1: the rebuilt leg equals the other");
        }
        udm(&d, &["remove", "r"]);
    }
}

#[test]
fn raid_drill_replicated_raid1_resyncs_only_what_changed_during_an_outage() {
    if !require_tool("fio") {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut remote = Daemon::start_with(
        bin(),
        &["--no-fuse", "--nbd-insecure", "--nbd-listen", &listen],
    );
    let rimg = udm_testkit::image(remote.dir.path(), "remote.img", LEG * 512);
    remote.create("leg", &format!("0 {LEG} linear {} 0", rimg.display()));
    let d = Daemon::start_with(bin(), &["--no-fuse"]);
    let dir = d.dir.path().to_path_buf();
    let (m0, d0, m1) = (
        udm_testkit::image(&dir, "m0.img", META * 512),
        udm_testkit::image(&dir, "d0.img", LEG * 512),
        udm_testkit::image(&dir, "m1.img", META * 512),
    );
    let table = format!(
        "0 {LEG} raid raid1 5 0 daemon_sleep 1000 region_size 1024 2 {} {} {} nbd://{listen}/leg?outage=1",
        m0.display(),
        d0.display(),
        m1.display()
    );
    d.create("r", &table);
    wait_idle(&d, "r");
    let uri = d.uri("r");
    // The first half gets data while both legs are there.
    ok(
        &fio(&uri, LEG * 256, &["--rw=write"]),
        "writes before the outage",
    );
    // The bitmap daemon (every second) clears the bits of the first half's regions.
    std::thread::sleep(Duration::from_millis(2500));
    // Outage: the remote daemon dies; writes to the second half go on locally.
    remote.child.kill().unwrap();
    remote.child.wait().unwrap();
    let writer = {
        let uri = uri.clone();
        std::thread::spawn(move || {
            fio(
                &uri,
                LEG * 128,
                &["--rw=write", &format!("--offset={}", LEG * 256)],
            )
        })
    };
    ok(&writer.join().unwrap(), "writes during the outage");
    let f = wait_idle_or(&d, "r");
    assert_eq!(f[2], "AD", "{f:?}");
    // The remote comes back (with its device restored from its state file). Mark a byte of
    // the remote's first half, which the outage did not touch: a full resync would undo it.
    let mut img = std::fs::read(&rimg).unwrap();
    img[4096] ^= 0xff;
    std::fs::write(&rimg, &img).unwrap();
    remote.kill_and_restart(None);
    // As `lvchange --refresh`: a resume retries failed legs (the NBD client reconnects
    // on its own time, so try until the leg is taken back).
    let t = Instant::now();
    loop {
        udm(&d, &["suspend", "r"]);
        udm(&d, &["resume", "r"]);
        if !status(&d, "r")[2].contains('D') {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the remote leg never came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut saw_progress = false;
    let t = Instant::now();
    loop {
        let f = status(&d, "r");
        if f[2] == "Aa" && f[4] == "recover" {
            saw_progress = true;
        }
        if f[4] == "idle" && f[2] == "AA" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{f:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("recovery seen in progress: {saw_progress}");
    let local = std::fs::read(&d0).unwrap();
    let img = std::fs::read(&rimg).unwrap();
    let half = (LEG * 256) as usize;
    assert!(
        local[half..] == img[half..],
        "the outage's writes reached the remote"
    );
    assert_ne!(
        local[4096], img[4096],
        "regions clean in the bitmap were not copied"
    );
    ok(
        &fio(
            &uri,
            LEG * 128,
            &[
                "--rw=write",
                &format!("--offset={}", LEG * 256),
                "--verify_only",
            ],
        ),
        "verify after the resync",
    );
}

/// Status once the set noticed the failure (the outage limit passes first).
fn wait_idle_or(d: &Daemon, name: &str) -> Vec<String> {
    let t = Instant::now();
    loop {
        let f = status(d, name);
        if f[2].contains('D') || t.elapsed() > Duration::from_secs(10) {
            return f;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
