//! `pvscan`, `vgscan`, `lvscan`, `vgck`, `pvresize`, `vgcfgbackup`, `vgcfgrestore` against
//! real lvm2 on the same loop devices: listings byte for byte (udm reads the loop devices
//! lvm2 reads), resizes and restores that lvm2 then reads as it would have made them.

use std::path::{Path, PathBuf};
use udm_testkit::lvm2::{loop_pvs, Lvm2};
use udm_testkit::udmcli::UdmCli;

const NOACT: &str = "global{activation=0}";

fn cli(dir: &Path) -> UdmCli {
    UdmCli {
        bin: PathBuf::from(env!("CARGO_BIN_EXE_udm")),
        socket: dir.join("no-daemon"),
        state: dir.join("state"),
    }
}

/// `udm lvm CMD ARGS… --devices D --config NOACT`: (stdout, stderr, code).
fn udm(e: &UdmCli, devs: &str, cmd: &str, args: &[&str]) -> (String, String, i32) {
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["--devices", devs, "--config", NOACT]);
    e.lvm(cmd, &a)
}

/// lvm2's (stdout, code) for the same command.
fn real(lvm: &Lvm2, cmd: &str, args: &[&str]) -> (String, i32) {
    let o = lvm.cmd(cmd, args);
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        o.status.code().unwrap_or(-1),
    )
}

/// Each listing command prints what lvm2 prints over a VG lvm2 made plus an orphan PV, and
/// both exit alike (also for a VG that does not exist).
#[test]
fn scans_match_lvm2() {
    let Some((dir, _imgs, loops, lvm)) = loop_pvs(&[100, 100, 60]) else {
        return;
    };
    let d: Vec<&str> = loops.iter().map(|l| l.path()).collect();
    let devs = d.join(",");
    let e = cli(dir.path());
    lvm.ok("pvcreate", &d);
    lvm.ok("vgcreate", &["vgscan_t", d[0], d[1]]);
    lvm.ok("lvcreate", &["-n", "lin", "-L", "20M", "vgscan_t"]);
    lvm.ok(
        "lvcreate",
        &["-n", "st", "-L", "16M", "-i", "2", "vgscan_t"],
    );
    lvm.ok(
        "lvcreate",
        &["-n", "ctg", "-L", "8M", "--alloc", "contiguous", "vgscan_t"],
    );
    let cases: &[(&str, &[&str])] = &[
        ("pvscan", &[]),
        ("pvscan", &["-s"]),
        ("pvscan", &["-n"]),
        ("pvscan", &["-e"]),
        ("pvscan", &["-u"]),
        ("vgscan", &[]),
        ("lvscan", &[]),
        ("lvscan", &["-a"]),
        ("vgck", &["vgscan_t"]),
        ("vgck", &["nosuchvg"]),
    ];
    for (cmd, args) in cases {
        let (want, wcode) = real(&lvm, cmd, args);
        let (got, err, code) = udm(&e, &devs, cmd, args);
        assert_eq!(got, want, "{cmd} {args:?} (stderr: {err})");
        assert_eq!(code, wcode, "{cmd} {args:?} exit (stderr: {err})");
    }
    // The listings are not trivially empty.
    let (pvscan, _, _) = udm(&e, &devs, "pvscan", &[]);
    assert_eq!(pvscan.lines().count(), 4, "{pvscan}");
    let (lvscan, _, _) = udm(&e, &devs, "lvscan", &[]);
    assert!(lvscan.contains("contiguous"), "{lvscan}");
}

/// pvresize grows and shrinks a PV in a VG and an orphan PV as lvm2 does on twin devices:
/// the same sizes, extents and free space in lvm2's `pvs`; refusals as lvm2's.
#[test]
fn pvresize_matches_lvm2() {
    let Some((dir, imgs, loops, lvm)) = loop_pvs(&[60, 60, 60, 60]) else {
        return;
    };
    let d: Vec<&str> = loops.iter().map(|l| l.path()).collect();
    let e = cli(dir.path());
    let devs = d.join(",");
    // lvm2 on d[0] (VG) and d[1] (orphan); udm on d[2] (VG) and d[3] (orphan).
    lvm.ok("pvcreate", &d);
    lvm.ok("vgcreate", &["real", d[0]]);
    lvm.ok("vgcreate", &["ours", d[2]]);
    lvm.ok("lvcreate", &["-n", "l", "-L", "40M", "real"]);
    lvm.ok("lvcreate", &["-n", "l", "-L", "40M", "ours"]);
    let fields = [
        "--noheadings",
        "-o",
        "pv_size,pv_free,pv_pe_count,pv_pe_alloc_count",
        "--units",
        "s",
    ];
    let show = |dev: &str| lvm.ok("pvs", &[&fields[..], &[dev]].concat());
    let same = |step: &str| {
        assert_eq!(show(d[2]), show(d[0]), "VG PV after {step}");
        assert_eq!(show(d[3]), show(d[1]), "orphan PV after {step}");
        lvm.ok("vgck", &["ours"]);
    };
    // Grow the devices, then pvresize.
    for (img, l) in imgs.iter().zip(&loops) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(img)
            .unwrap()
            .set_len(90 << 20)
            .unwrap();
        let ok = std::process::Command::new("losetup")
            .args(["-c", l.path()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "losetup -c {}", l.path());
    }
    let want = lvm.ok("pvresize", &[d[0], d[1]]);
    let (got, err, code) = udm(&e, &devs, "pvresize", &[d[2], d[3]]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(got.replace(d[2], d[0]).replace(d[3], d[1]), want);
    same("grow");
    // Shrink to a given size.
    for (a, b) in [(d[0], d[2]), (d[1], d[3])] {
        lvm.ok("pvresize", &["-y", "--setphysicalvolumesize", "50M", a]);
        let (_, err, code) = udm(
            &e,
            &devs,
            "pvresize",
            &["-y", "--setphysicalvolumesize", "50M", b],
        );
        assert_eq!(code, 0, "{err}");
    }
    same("shrink");
    // Below the allocated extents: refused by both, nothing changes.
    let (want, wcode) = real(
        &lvm,
        "pvresize",
        &["-y", "--setphysicalvolumesize", "20M", d[0]],
    );
    let before = show(d[2]);
    let (got, _, code) = udm(
        &e,
        &devs,
        "pvresize",
        &["-y", "--setphysicalvolumesize", "20M", d[2]],
    );
    assert_eq!((got, code), (want, wcode));
    assert_ne!(code, 0);
    assert_eq!(show(d[2]), before);
}

/// vgcfgbackup/vgcfgrestore both ways: lvm2 restores udm's backup and udm restores lvm2's;
/// after either the VG reads back as it was backed up (LVs, sizes) at the backup's seqno
/// plus one, as lvm2 writes it. Errors as lvm2's.
#[test]
fn backup_and_restore_both_ways() {
    let Some((dir, _imgs, loops, lvm)) = loop_pvs(&[100, 100]) else {
        return;
    };
    let d: Vec<&str> = loops.iter().map(|l| l.path()).collect();
    let devs = d.join(",");
    let e = cli(dir.path());
    lvm.ok("pvcreate", &d);
    lvm.ok("vgcreate", &["vgb", d[0], d[1]]);
    lvm.ok("lvcreate", &["-n", "keep", "-L", "20M", "-i", "2", "vgb"]);
    let lvs_args = ["-a", "-o", "lv_name,lv_size,seg_type,devices"];
    let before = lvm.ok("lvs", &lvs_args);
    let seqno = || -> u64 {
        let s = lvm.ok("vgs", &["--noheadings", "-o", "vg_seqno", "vgb"]);
        s.trim().parse().unwrap()
    };
    let seq0 = seqno();
    let ubak = dir.path().join("udm.bak");
    let ubak_s = ubak.display().to_string();
    let (o, err, code) = udm(&e, &devs, "vgcfgbackup", &["-f", &ubak_s, "vgb"]);
    assert_eq!(
        (o.as_str(), code),
        ("  Volume group \"vgb\" successfully backed up.\n", 0),
        "{err}"
    );
    let rbak = dir.path().join("lvm2.bak");
    let rbak_s = rbak.display().to_string();
    lvm.ok("vgcfgbackup", &["-f", &rbak_s, "vgb"]);
    // Changes after the backups, then lvm2 restores udm's backup.
    lvm.ok("lvcreate", &["-n", "gone", "-L", "8M", "vgb"]);
    lvm.ok("lvextend", &["-L", "+8M", "vgb/keep"]);
    assert_ne!(lvm.ok("lvs", &lvs_args), before);
    assert_eq!(
        lvm.ok("vgcfgrestore", &["-f", &ubak_s, "vgb"]),
        "  Restored volume group vgb.\n"
    );
    let restored = lvm.ok("lvs", &lvs_args);
    lvm.ok("vgck", &["vgb"]);
    assert_eq!(restored, before, "lvm2 restoring udm's backup");
    assert_eq!(seqno(), seq0 + 1);
    // udm restores lvm2's backup over changed metadata.
    lvm.ok("lvcreate", &["-n", "gone2", "-L", "8M", "vgb"]);
    let (o, err, code) = udm(&e, &devs, "vgcfgrestore", &["-f", &rbak_s, "vgb"]);
    assert_eq!(
        (o.as_str(), code),
        ("  Restored volume group vgb.\n", 0),
        "{err}"
    );
    lvm.ok("vgck", &["vgb"]);
    let again = lvm.ok("lvs", &lvs_args);
    assert_eq!(again, before, "udm restoring lvm2's backup");
    // The seqno is the backup's plus one, as lvm2 writes a restore.
    assert_eq!(seqno(), seq0 + 1);
    // Errors: a missing file, a file of another VG.
    for args in [
        vec![
            "-f".to_string(),
            dir.path().join("nonexist").display().to_string(),
            "vgb".into(),
        ],
        vec!["-f".to_string(), rbak_s.clone(), "other".into()],
    ] {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (want, wcode) = real(&lvm, "vgcfgrestore", &a);
        let (got, err, code) = udm(&e, &devs, "vgcfgrestore", &a);
        assert_eq!((got, code), (want, wcode), "{a:?}: {err}");
        assert!(err.contains("Restore failed."), "{err}");
    }
}

/// `--alloc contiguous` and `cling` (and lvm2's largest-area-first choice) over a VG with
/// a hole: the same placements, refusals and messages as lvm2 running the same commands
/// on the same devices.
#[test]
fn alloc_policies_match_lvm2() {
    let Some((dir, _imgs, loops, lvm)) = loop_pvs(&[120, 100]) else {
        return;
    };
    let d: Vec<&str> = loops.iter().map(|l| l.path()).collect();
    let devs = d.join(",");
    let e = cli(dir.path());
    let steps: &[(&str, &[&str])] = &[
        ("lvcreate", &["-n", "a", "-l", "5", "vga"]),
        ("lvcreate", &["-n", "b", "-l", "5", "vga"]),
        ("lvcreate", &["-n", "c", "-l", "5", "vga"]),
        ("lvremove", &["-y", "vga/b"]),
        (
            "lvcreate",
            &["-n", "ct", "-l", "8", "--alloc", "contiguous", "vga"],
        ),
        (
            "lvcreate",
            &["-n", "ct2", "-l", "30", "--alloc", "contiguous", "vga"],
        ),
        (
            "lvcreate",
            &["-n", "cl", "-l", "3", "--alloc", "cling", "vga"],
        ),
        ("lvextend", &["-l", "+20", "vga/cl"]),
        ("lvextend", &["-l", "+2", "vga/ct"]),
        ("lvextend", &["-l", "+2", "vga/cl"]),
        // Three stripes over two PVs: only anywhere lets two share a PV.
        ("lvcreate", &["-n", "s3", "-l", "3", "-i", "3", "vga"]),
        (
            "lvcreate",
            &[
                "-n", "any", "-l", "3", "-i", "3", "--alloc", "anywhere", "vga",
            ],
        ),
    ];
    let refusal = |s: &str| -> String {
        s.lines()
            .filter(|l| l.contains("Insufficient"))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let fields = ["-a", "-o", "lv_name,lv_attr,devices,seg_pe_ranges"];
    // lvm2 first.
    lvm.ok("pvcreate", &d);
    lvm.ok("vgcreate", &["vga", d[0], d[1]]);
    let mut want = Vec::new();
    for (cmd, args) in steps {
        let o = lvm.cmd(cmd, args);
        want.push((
            String::from_utf8_lossy(&o.stdout).into_owned(),
            refusal(&String::from_utf8_lossy(&o.stderr)),
            o.status.code(),
        ));
    }
    let want_lvs = lvm.ok("lvs", &fields);
    lvm.ok("vgremove", &["-f", "vga"]);
    lvm.ok("pvremove", &d);
    // udm on the same devices.
    let (_, er, c) = udm(&e, &devs, "vgcreate", &["vga", d[0], d[1]]);
    assert_eq!(c, 0, "{er}");
    for ((cmd, args), (wo, we, wc)) in steps.iter().zip(&want) {
        let (o, er, c) = udm(&e, &devs, cmd, args);
        assert_eq!(
            (&o, &refusal(&er), Some(c)),
            (wo, we, *wc),
            "{cmd} {args:?}"
        );
    }
    assert!(want.iter().filter(|w| !w.1.is_empty()).count() >= 2);
    assert_eq!(lvm.ok("lvs", &fields), want_lvs);
    lvm.ok("vgck", &["vga"]);
}

/// Every change archives the metadata before it and backs up the one after it, as lvm2
/// does: lvm2's `vgcfgrestore --list` over udm's archive and backup directories prints what
/// udm's prints, lvm2 restores udm's archived metadata, and udm's archives hold the VG as it
/// was before each command.
#[test]
fn archives_list_and_restore_as_lvm2() {
    let Some((dir, _imgs, loops, lvm)) = loop_pvs(&[64]) else {
        return;
    };
    let e = cli(dir.path());
    let d = loops[0].path();
    for (cmd, args) in [
        ("vgcreate", vec!["vg", d]),
        ("lvcreate", vec!["-n", "l1", "-L", "4M", "vg"]),
        ("lvextend", vec!["-L", "+4M", "vg/l1"]),
        ("lvcreate", vec!["-n", "l2", "-L", "4M", "vg"]),
    ] {
        let (o, er, c) = udm(&e, d, cmd, &args);
        assert_eq!(c, 0, "{cmd}: {o}{er}");
    }
    let (ours, er, c) = udm(&e, d, "vgcfgrestore", &["--list", "vg"]);
    assert_eq!(c, 0, "{er}");
    let state = dir.path().join("state");
    let o = lvm
        .with_backup_dirs(&state.join("backup"), &state.join("archive"))
        .cmd("vgcfgrestore", &["--list", "vg"]);
    let theirs = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(ours, theirs);
    // Three archives (the VG before each change after vgcreate), then the backup.
    assert_eq!(
        ours.matches("Created *before* executing").count(),
        3,
        "{ours}"
    );
    assert_eq!(
        ours.matches("Created *after* executing").count(),
        1,
        "{ours}"
    );
    // The second archive is the VG before lvextend: l1 at 4 MiB; lvm2 restores it.
    let second = std::fs::read_dir(state.join("archive"))
        .unwrap()
        .map(|f| f.unwrap().path())
        .find(|p| p.to_string_lossy().contains("vg_00001-"))
        .unwrap();
    let path = second.to_str().unwrap();
    lvm.ok("vgcfgrestore", &["-f", path, "vg"]);
    let size = lvm.ok(
        "lvs",
        &[
            "--noheadings",
            "--units",
            "m",
            "-o",
            "lv_name,lv_size",
            "vg",
        ],
    );
    assert_eq!(size.split_whitespace().collect::<Vec<_>>(), ["l1", "4.00m"]);
}

/// `pvscan --cache` records PVs online and says so as lvm2 does (lvm2 2.03.16's words, its
/// pid replaced); with `-aay` a VG is activated once its last PV comes online.
#[test]
fn pvscan_cache_autoactivates_complete_vgs() {
    let Some((dir, _imgs, loops, _lvm)) = loop_pvs(&[64, 64]) else {
        return;
    };
    let daemon = udm_testkit::Daemon::start(&PathBuf::from(env!("CARGO_BIN_EXE_udm")));
    let e = UdmCli {
        socket: daemon.socket.clone(),
        ..cli(dir.path())
    };
    let (a, b) = (loops[0].path(), loops[1].path());
    let both = format!("{a},{b}");
    let run = |args: &[&str]| -> String {
        let out = e.ok(
            args[0],
            &[&["--devices", both.as_str()][..], &args[1..]].concat(),
        );
        // The pid lvm2 prints, as a placeholder.
        out.lines()
            .map(|l| match l.split_once("pvscan[") {
                Some((pre, rest)) => {
                    format!("{pre}pvscan[PID]{}\n", &rest[rest.find(']').unwrap() + 1..])
                }
                None => format!("{l}\n"),
            })
            .collect()
    };
    run(&["vgcreate", "vg", a, b]);
    run(&["lvcreate", "-a", "n", "-n", "lv", "-L", "8M", "vg"]);
    assert_eq!(
        run(&["pvscan", "--cache", "--config", NOACT]),
        format!("  pvscan[PID] PV {a} online.\n  pvscan[PID] PV {b} online.\n")
    );
    std::fs::remove_dir_all(dir.path().join("state/pvs_online")).unwrap();
    assert_eq!(
        run(&["pvscan", "--cache", "-aay", a]),
        format!("  pvscan[PID] PV {a} online, VG vg incomplete (need 1).\n")
    );
    assert_eq!(e.dm(&["ls"]), "No devices found\n");
    assert_eq!(
        run(&["pvscan", "--cache", "-aay", b]),
        format!(
            "  pvscan[PID] PV {b} online, VG vg is complete.\n  pvscan[PID] VG vg run autoactivation.\n  1 logical volume(s) in volume group \"vg\" now active\n"
        )
    );
    assert!(e.dm(&["ls"]).starts_with("vg-lv"), "activated");
}
