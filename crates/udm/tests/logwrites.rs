//! `udm log-writes` replay tooling and the log-writes target, end to end: udm's log replays to
//! every flush with the bytes the device had; a log written by the kernel's dm-log-writes
//! (refvm) is byte-identical to udm's for the same bios and replays to the kernel's image;
//! and ext4 recorded in refvm replays to every flush point with `e2fsck -fn` clean.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use udm_io::{sync, Bio, BioFlags, BlockDevice, FileDevice, IoBuf, Sectors};
use udm_targets::log_writes::checked::{self, replay_checked, CheckWhen, CheckedReplay};
use udm_targets::log_writes::reader::{replay, LogReader, Next, ReplayOptions};
use udm_testkit::dm::*;

/// A replay of `log` onto `dev`, adjusted by `f`.
fn rp(log: &Path, dev: &Path, f: impl FnOnce(&mut CheckedReplay)) -> CheckedReplay {
    let mut a = CheckedReplay::new(log.display().to_string(), dev.display().to_string());
    f(&mut a);
    a
}

fn file_dev(p: &Path) -> Arc<dyn BlockDevice> {
    Arc::new(FileDevice::open(p, false).unwrap())
}

fn write_fua(d: &dyn BlockDevice, sector: u64, data: &[u8]) {
    let (r, _) = sync::submit_wait(d, |done| {
        Bio::write(Sectors(sector), IoBuf::from_slice(data), done).with_flags(BioFlags::FUA)
    });
    r.unwrap();
}

/// `lw`: log-writes over a zeroed 2048-sector data image `d.img` into a zeroed log image
/// `l.img` of `log_sectors`, in a new registry: (the images' directory, data, log, registry).
fn lw_on_zeros(log_sectors: u64) -> (tempfile::TempDir, PathBuf, PathBuf, udm_core::Registry) {
    let dir = tempfile::tempdir().unwrap();
    let data = zero_image(dir.path(), "d.img", 2048);
    let log = zero_image(dir.path(), "l.img", log_sectors);
    let reg = reg();
    let table = format!("0 2048 log-writes {} {}", data.display(), log.display());
    create(&reg, "lw", &table).unwrap();
    (dir, data, log, reg)
}

/// The fixed bio workload of logwrites.sh part 1, on udm. Returns (status before, after).
fn workload1(data: &Path, log: &Path) -> (String, String, String) {
    let reg = reg();
    let size = std::fs::metadata(data).unwrap().len() / 512;
    let table = format!("0 {size} log-writes {} {}", data.display(), log.display());
    create(&reg, "lw", &table).unwrap();
    let st0 = status(&reg, "lw");
    let p = pat();
    {
        let (d, _g) = open(&reg, "lw");
        write(&*d, 8, &p[0..4096]).unwrap();
        write(&*d, 16, &p[4096..8192]).unwrap();
        write(&*d, 10, &p[9 * 512..10 * 512]).unwrap();
        sync::flush(&*d).unwrap();
        message(&reg, "lw", "mark one").unwrap();
        // `dd oflag=direct,dsync` in the VM: a FUA write, then a flush.
        write_fua(&*d, 40, &p[5 * 4096..6 * 4096]);
        sync::flush(&*d).unwrap();
        sync::discard(&*d, Sectors(2048), Sectors(128)).unwrap();
        write(&*d, 3000, &p[3 * 1024..4 * 1024]).unwrap();
        message(&reg, "lw", "mark two").unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let st1 = status(&reg, "lw");
    let tb = table_of(&reg, "lw", data, log);
    reg.remove(&sel("lw"), false).unwrap();
    (st0, st1, tb)
}

fn table_of(reg: &udm_core::Registry, name: &str, data: &Path, log: &Path) -> String {
    table(reg, name)
        .replace(&data.display().to_string(), "$D")
        .replace(&log.display().to_string(), "$L")
}

#[test]
fn udm_log_describes_the_workload() {
    let dir = tempfile::tempdir().unwrap();
    let data = zero_image(dir.path(), "d.img", 32768);
    let log = zero_image(dir.path(), "l.img", 131072);
    let (st0, st1, tb) = workload1(&data, &log);
    assert_eq!(st0, "0 32768 log-writes 0 0\n");
    // 3 writes + flush + mark one + FUA write + flush + mark two, logged before removal.
    assert_eq!(st1, "0 32768 log-writes 8 33\n");
    assert_eq!(tb, "0 32768 log-writes $D $L\n");
    let mut out = Vec::new();
    checked::dump(&log.display().to_string(), &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    let want = "\
Log version=1, sectorsize=512, entries=11
0@1: sector 8, size 4096, flags 0x0(NONE)
1@10: sector 16, size 4096, flags 0x0(NONE)
2@19: sector 10, size 512, flags 0x0(NONE)
3@21: sector 0, size 0, flags 0x1(FLUSH)
4@22: sector 0, size 0, flags 0x8(MARK), mark \"one\"
5@23: sector 40, size 4096, flags 0x2(FUA)
6@32: sector 0, size 0, flags 0x1(FLUSH)
7@33: sector 0, size 0, flags 0x8(MARK), mark \"two\"
8@34: sector 2048, size 65536, flags 0x4(DISCARD)
9@35: sector 3000, size 1024, flags 0x0(NONE)
10@38: sector 0, size 0, flags 0x8(MARK), mark \"dm-log-writes-end\"
";
    assert_eq!(out, want);
    // Replaying everything gives the data disk; replaying to "one" only the first writes.
    let img = zero_image(dir.path(), "r.img", 32768);
    let rep = replay_checked(&rp(&log, &img, |_| {}), &mut Vec::new()).unwrap();
    assert_eq!(rep.replayed, 11);
    assert!(std::fs::read(&img).unwrap() == std::fs::read(&data).unwrap());
    let img1 = zero_image(dir.path(), "r1.img", 32768);
    let a = rp(&log, &img1, |a| a.opts.end_mark = Some("one".into()));
    assert_eq!(replay_checked(&a, &mut Vec::new()).unwrap().replayed, 5);
    let got = std::fs::read(&img1).unwrap();
    let p = pat();
    assert!(got[8 * 512..10 * 512] == p[0..1024], "first write");
    assert!(
        got[10 * 512..11 * 512] == p[9 * 512..10 * 512],
        "512-byte write over it"
    );
    assert!(
        got[11 * 512..16 * 512] == p[1536..4096],
        "rest of the first write"
    );
    assert!(
        got[40 * 512..48 * 512].iter().all(|&b| b == 0),
        "FUA write is after mark one"
    );
    // --limit and --start-mark.
    let img2 = zero_image(dir.path(), "r2.img", 32768);
    let a = rp(&log, &img2, |a| {
        a.opts.start_mark = Some("two".into());
        a.opts.limit = Some(2);
    });
    assert_eq!(replay_checked(&a, &mut Vec::new()).unwrap().replayed, 2);
    let got = std::fs::read(&img2).unwrap();
    assert!(got[3000 * 512..3002 * 512] == p[3 * 1024..4 * 1024]);
    assert!(got[8 * 512..16 * 512].iter().all(|&b| b == 0));
}

#[test]
fn replay_reaches_every_flush_with_the_bytes_written_before_it() {
    let (dir, data, log, reg) = lw_on_zeros(65536);
    let mut snaps = Vec::new();
    {
        let (d, _g) = open(&reg, "lw");
        let mut x: u64 = 0x1234_5678;
        for round in 0..12u64 {
            for _ in 0..5 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let sector = x % 2040;
                let n = 1 + (x >> 20) % 8;
                let n = n.min(2048 - sector);
                let buf = vec![(x >> 40) as u8 | 1; (n * 512) as usize];
                if x.is_multiple_of(7) {
                    sync::discard(&*d, Sectors(sector), Sectors(n)).unwrap();
                } else {
                    write(&*d, sector, &buf).unwrap();
                }
            }
            if round % 3 == 2 {
                write_fua(&*d, round, &[round as u8; 512]);
            }
            sync::flush(&*d).unwrap();
            snaps.push(std::fs::read(&data).unwrap());
        }
    }
    reg.remove(&sel("lw"), false).unwrap();
    // Walk the log: at each flush entry the replayed image equals the snapshot (a FUA entry
    // only promises itself: writes before it wait for the next flush).
    let mut r = LogReader::open(file_dev(&log)).unwrap();
    let out = zero_image(dir.path(), "o.img", 2048);
    let dev = file_dev(&out);
    let mut seen = 0;
    replay(&mut r, &*dev, &ReplayOptions::default(), |e, _| {
        if e.is_flush() {
            let got = std::fs::read(&out).unwrap();
            assert!(got == snaps[seen], "replay differs at sync point {seen}");
            seen += 1;
        }
        Ok(Next::Continue)
    })
    .unwrap();
    assert_eq!(seen, snaps.len());
}

#[test]
fn logging_stops_when_the_log_is_full() {
    let (_dir, _, log, reg) = lw_on_zeros(64);
    {
        let (d, _g) = open(&reg, "lw");
        for i in 0..10 {
            write_fua(&*d, i * 8, &[7u8; 4096]);
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    // 9 sectors per entry: entries end at 10, 19, 28, 37, 46, 55; the 7th reaches 64, the
    // end of the log, so it is dropped and logging stops (next_sector stays advanced).
    assert_eq!(
        status(&reg, "lw"),
        "0 2048 log-writes 6 63 logging_disabled\n"
    );
    assert!(message(&reg, "lw", "mark x y").is_err());
    assert!(message(&reg, "lw", "bogus x").is_err());
    reg.remove(&sel("lw"), false).unwrap();
    let mut r = LogReader::open(file_dev(&log)).unwrap();
    assert_eq!(r.sup.nr_entries, 6);
    assert_eq!(r.entries().unwrap().len(), 6);
}

fn cmp_images(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(x.len(), y.len());
    if let Some(i) = x.iter().zip(&y).position(|(p, q)| p != q) {
        panic!("{} and {} differ at byte {i}", a.display(), b.display());
    }
}

#[test]
fn kernel_log_writes_both_ways_and_ext4_replays_clean() {
    let Some(run) = refvm() else { return };
    if !udm_testkit_e2fsck() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let kd = zero_image(dir.path(), "kd.img", 32768);
    let kl = zero_image(dir.path(), "kl.img", 131072);
    let ke = zero_image(dir.path(), "ke.img", 131072);
    let kel = zero_image(dir.path(), "kel.img", 524288);
    std::fs::write(share.join("pat.bin"), pat()).unwrap();
    let script = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../udm-targets/tests/kernel4/logwrites.sh"),
    )
    .unwrap();
    std::fs::write(share.join("logwrites.sh"), script).unwrap();
    run_vm(&run, &[&kd, &kl, &ke, &kel], &share, "bash ./logwrites.sh");
    let rd = |n: &str| std::fs::read_to_string(share.join(n)).unwrap();

    // 1. The same bios on udm: same status lines, same data disk, the same log bytes.
    let ud = zero_image(dir.path(), "ud.img", 32768);
    let ul = zero_image(dir.path(), "ul.img", 131072);
    let (st0, st1, tb) = workload1(&ud, &ul);
    assert_eq!(st0, rd("st0"));
    assert_eq!(st1, rd("st1"));
    assert_eq!(tb, rd("table"));
    cmp_images(&kd, &ud);
    cmp_images(&kl, &ul);
    // The kernel's log replays (with udm) to the kernel's data disk.
    let rk = zero_image(dir.path(), "rk.img", 32768);
    replay_checked(&rp(&kl, &rk, |_| {}), &mut Vec::new()).unwrap();
    cmp_images(&rk, &kd);

    // 2. ext4: replay to the mkfs mark, then on to every flush/FUA/mark with e2fsck -fn.
    let re = zero_image(dir.path(), "re.img", 131072);
    let img = re.display().to_string();
    let a = rp(&kel, &re, |a| a.opts.end_mark = Some("mkfs".into()));
    replay_checked(&a, &mut Vec::new()).unwrap();
    let a = rp(&kel, &re, |a| {
        a.opts.start_mark = Some("mkfs".into());
        a.check = Some((format!("e2fsck -fn {img} >/dev/null 2>&1"), false));
    });
    let mut out = Vec::new();
    let rep = replay_checked(&a, &mut out).unwrap();
    eprintln!(
        "ext4: {} entries replayed after mkfs, e2fsck -fn at {} points, {} failed",
        rep.replayed,
        rep.checks,
        rep.failed.len()
    );
    assert!(rep.checks >= 5, "only {} check points", rep.checks);
    assert!(rep.failed.is_empty(), "{}", String::from_utf8_lossy(&out));
    cmp_images(&re, &ke);
}

fn udm_testkit_e2fsck() -> bool {
    let found = ["/sbin/e2fsck", "/usr/sbin/e2fsck", "/usr/bin/e2fsck"]
        .iter()
        .any(|p| Path::new(p).is_file());
    if !found && std::env::var("UDM_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
        panic!("e2fsck missing (UDM_REQUIRE_TOOLS=1)");
    }
    found
}

#[test]
fn a_failing_check_stops_the_replay_unless_told_to_keep_going() {
    let dir = tempfile::tempdir().unwrap();
    let data = zero_image(dir.path(), "d.img", 32768);
    let log = zero_image(dir.path(), "l.img", 131072);
    workload1(&data, &log);
    let img = zero_image(dir.path(), "r.img", 32768);
    let check = |cmd: &str, append: bool| Some((cmd.to_string(), append));
    // Checks run after entries 3 (flush), 4 (mark), 5 (FUA), 6 (flush), 7 (mark), 10 (mark).
    let a = rp(&log, &img, |a| a.check = check("false", true));
    let mut out = Vec::new();
    let rep = replay_checked(&a, &mut out).unwrap();
    assert_eq!(
        (rep.replayed, rep.checks, rep.failed.clone()),
        (4, 1, vec![3])
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "check failed after entry 3\n"
    );
    let a = rp(&log, &img, |a| {
        a.check = check("false", true);
        a.keep_going = true;
    });
    let rep = replay_checked(&a, &mut Vec::new()).unwrap();
    assert_eq!(rep.failed, vec![3, 4, 5, 6, 7, 10]);
    // The device path is appended to the command.
    let a = rp(&log, &img, |a| a.check = check("test -f", true));
    assert!(replay_checked(&a, &mut Vec::new())
        .unwrap()
        .failed
        .is_empty());
    // replay-log style: --fsck CMD --check N runs CMD (as given) every N entries.
    let a = rp(&log, &img, |a| {
        a.check = check("true", false);
        a.when = CheckWhen::Every(4);
    });
    let rep = replay_checked(&a, &mut Vec::new()).unwrap();
    assert_eq!((rep.replayed, rep.checks), (11, 2));
}

#[test]
fn the_command_line_replays_with_checks() {
    let dir = tempfile::tempdir().unwrap();
    let data = zero_image(dir.path(), "d.img", 32768);
    let log = zero_image(dir.path(), "l.img", 131072);
    workload1(&data, &log);
    let img = zero_image(dir.path(), "r.img", 32768);
    let bin = Path::new(env!("CARGO_BIN_EXE_udm"));
    let (l, i) = (log.display().to_string(), img.display().to_string());
    let args = ["log-writes", "replay", &l, &i, "--check", "test -f"];
    let (code, out, err) = udm_testkit::tool::run_as(bin, "udm", &args, b"", None);
    assert_eq!(
        (code, out.as_str()),
        (0, "replayed 11 entries, 6 checks, 0 failed\n"),
        "{err}"
    );
    assert!(std::fs::read(&img).unwrap() == std::fs::read(&data).unwrap());
    let args = [
        "log-writes",
        "replay",
        &l,
        &i,
        "--fsck",
        "false",
        "--check",
        "4",
    ];
    let (code, out, _) = udm_testkit::tool::run_as(bin, "udm", &args, b"", None);
    assert_eq!(
        (code, out.as_str()),
        (
            1,
            "check failed after entry 3\nreplayed 4 entries, 1 checks, 1 failed\n"
        )
    );
    let (code, _, err) =
        udm_testkit::tool::run_as(bin, "udm", &["log-writes", "replay", &l], b"", None);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("udm log-writes: need LOG and DEV\n"),
        "{err}"
    );
}
