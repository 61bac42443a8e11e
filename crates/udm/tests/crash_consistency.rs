//! The README's crash-consistency workflow end to end: ext4 made on a udm log-writes device
//! (FUSE file + loop device), files written with fsyncs, then the log replayed into a fresh
//! image to the mkfs mark and on to every flush after it, `e2fsck -fn` clean at each point.

use std::path::Path;
use std::process::Command;
use udm_testkit::{require_tool, run, Daemon};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_udm"))
}

fn udm(d: &Daemon, args: &[&str]) -> String {
    run(Command::new(bin()).args(args).env("UDM_SOCKET", &d.socket))
}

#[test]
fn ext4_on_log_writes_replays_clean_at_every_flush() {
    for t in ["losetup", "mkfs.ext4", "e2fsck", "mount"] {
        if !require_tool(t) {
            return;
        }
    }
    if !Path::new("/dev/fuse").exists() {
        assert!(
            std::env::var("UDM_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "/dev/fuse is missing"
        );
        eprintln!("SKIP: no /dev/fuse");
        return;
    }
    let d = Daemon::start(bin());
    let dir = d.dir.path();
    let (data, log, replay) = (
        dir.join("data.img"),
        dir.join("log.img"),
        dir.join("replay.img"),
    );
    for f in [&data, &log, &replay] {
        std::fs::File::create(f)
            .unwrap()
            .set_len(128 << 20)
            .unwrap();
    }
    udm(
        &d,
        &[
            "create",
            "rec",
            "--table",
            &format!("0 262144 log-writes {} {}", data.display(), log.display()),
        ],
    );
    let file = dir.join("mapper/rec");
    assert!(file.exists(), "FUSE file missing: {}", d.log());
    let lo = run(Command::new("losetup").args(["-f", "--show"]).arg(&file))
        .trim()
        .to_string();
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let result = std::panic::catch_unwind(|| {
        run(Command::new("mkfs.ext4").args(["-q", &lo]));
        udm(&d, &["message", "rec", "0", "mark", "mkfs"]);
        run(Command::new("mount").arg(&lo).arg(&mnt));
        for i in 0..4 {
            let f = mnt.join(format!("f{i}"));
            std::fs::write(&f, vec![i as u8; 200_000]).unwrap();
            std::fs::File::open(&f).unwrap().sync_all().unwrap();
        }
        run(Command::new("umount").arg(&mnt));
    });
    let _ = Command::new("umount").arg(&mnt).status();
    let _ = Command::new("losetup").args(["-d", &lo]).status();
    result.unwrap();
    udm(&d, &["remove", "rec"]);

    let lw = |args: &[&str]| {
        let mut c = Command::new(bin());
        c.arg("log-writes").args(args);
        c.output().unwrap()
    };
    let (l, r) = (log.display().to_string(), replay.display().to_string());
    let o = lw(&["replay", &l, &r, "--end-mark", "mkfs"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = lw(&[
        "replay",
        &l,
        &r,
        "--start-mark",
        "mkfs",
        "--check",
        "e2fsck -fn",
    ]);
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}");
    let summary = out
        .lines()
        .rev()
        .find(|l| l.starts_with("replayed"))
        .unwrap_or_default()
        .to_string();
    assert!(summary.contains(" 0 failed"), "{summary}");
    let checks: usize = summary
        .split(", ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(checks >= 4, "one check per fsync at least: {summary}");
    // The replayed image is the recorded device's final state.
    assert!(std::fs::read(&data).unwrap() == std::fs::read(&replay).unwrap());
}
