//! `udm lvm` commands against real lvm2, both ways: VGs that udm makes and changes pass
//! lvm2's `vgck`/`pvck` and show identically in lvm2's `lvs`; VGs lvm2 made (in refvm, with
//! the kernel's dm) activate in udm with the tables lvm2 loaded there and the data the
//! kernel wrote; the seed walkthrough (a 90G striped LV over three sparse PVs) through the
//! `pvcreate`/`vgcreate`/`lvcreate`/`lvs` links; missing PVs and failed commands.

use std::path::{Path, PathBuf};
use udm_testkit::lvm2::loop_pvs;
use udm_testkit::udmcli::UdmCli;
use udm_testkit::Daemon;

fn udm() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_udm"))
}

fn env(socket: &Path, state: PathBuf) -> UdmCli {
    UdmCli {
        bin: udm(),
        socket: socket.to_path_buf(),
        state,
    }
}

/// A running daemon, a temporary directory, and udm talking to that daemon with its state
/// in the directory.
fn daemon_env() -> (Daemon, tempfile::TempDir, UdmCli) {
    let d = Daemon::start(&udm());
    let dir = tempfile::tempdir().unwrap();
    let e = env(&d.socket, dir.path().join("state"));
    (d, dir, e)
}

fn no_daemon(dir: &Path) -> UdmCli {
    env(&dir.join("no-daemon"), dir.join("state"))
}

const NOACT: &str = "global{activation=0}";

/// udm makes and changes a VG; after every step lvm2's vgck and pvck pass, lvm2's `lvs`
/// shows what udm's shows, and `pvdisplay`/`vgdisplay`/`lvdisplay` print what lvm2's do.
#[test]
fn udm_made_vg_passes_lvm2_checks() {
    let Some((dir, imgs, loops, lvm)) = loop_pvs(&[100, 100, 100]) else {
        return;
    };
    let d: Vec<&str> = loops.iter().map(|l| l.path()).collect();
    let e = no_daemon(dir.path());
    let paths: Vec<String> = imgs.iter().map(|p| p.display().to_string()).collect();
    let devs = paths.join(",");
    let all = ["--config", NOACT, "--devices", &devs];
    let with = |extra: &[&'static str]| -> Vec<String> {
        all.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let check = |step: &str| {
        lvm.ok("vgck", &["vg"]);
        let pvck = lvm.cmd("pvck", &d);
        assert!(pvck.status.success(), "pvck after {step}: {pvck:?}");
        let fields = ["-a", "-o+devices,seg_type,stripes,stripe_size"];
        let real = lvm.ok("lvs", &fields);
        let mut ours = e.ok("lvs", &[&["--devices", &devs][..], &fields[..]].concat());
        for (p, l) in paths.iter().zip(&d) {
            ours = ours.replace(p.as_str(), l);
        }
        // Device columns are as wide as their paths: compare with runs of spaces squeezed.
        let squeeze = |s: &str| {
            s.lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
        };
        assert_eq!(squeeze(&ours), squeeze(&real), "lvs after {step}");
        assert!(real.lines().count() > 1, "{real}");
        // The long forms, byte for byte (device paths aside).
        for cmd in ["vgdisplay", "lvdisplay", "pvdisplay"] {
            let real = lvm.ok(cmd, &[]);
            let mut ours = e.ok(cmd, &["--devices", &devs]);
            for (p, l) in paths.iter().zip(&d) {
                ours = ours.replace(p.as_str(), l);
            }
            assert_eq!(ours, real, "{cmd} after {step}");
        }
    };
    let call = |cmd: &str, args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        e.ok(cmd, &a)
    };
    let out = call(
        "pvcreate",
        [&paths[..], &["--devices".into(), devs.clone()]].concat(),
    );
    assert!(out.contains("successfully created"), "{out}");
    let mut a = with(&[]);
    a.extend(["vg".into(), paths[0].clone(), paths[1].clone()]);
    assert_eq!(
        call("vgcreate", a),
        "  Volume group \"vg\" successfully created\n"
    );
    let mut a = with(&[]);
    a.extend(["vg".into(), paths[2].clone()]);
    assert_eq!(
        call("vgextend", a),
        "  Volume group \"vg\" successfully extended\n"
    );
    assert_eq!(
        call("lvcreate", with(&["-n", "lin", "-L", "20M", "vg"])),
        "  Logical volume \"lin\" created.\n"
    );
    check("lvcreate linear");
    let out = call(
        "lvcreate",
        with(&["-n", "st", "-L", "30M", "-i", "3", "-I", "64K", "vg"]),
    );
    assert_eq!(
        out,
        "  Rounding up size to full physical extent 32.00 MiB\n  Rounding size 32.00 MiB (8 extents) up to stripe boundary size 36.00 MiB (9 extents).\n  Logical volume \"st\" created.\n"
    );
    check("lvcreate striped");
    call("lvcreate", with(&["-n", "sn", "-s", "-L", "8M", "vg/lin"]));
    check("lvcreate -s");
    let out = call("lvextend", with(&["-L", "+8M", "vg/lin"]));
    assert_eq!(out, "  Size of logical volume vg/lin changed from 20.00 MiB (5 extents) to 28.00 MiB (7 extents).\n  Logical volume vg/lin successfully resized.\n");
    check("lvextend");
    call("lvextend", with(&["-l", "+3", "vg/st"]));
    check("lvextend striped");
    assert_eq!(
        call("lvrename", with(&["vg", "st", "st2"])),
        "  Renamed \"st\" to \"st2\" in volume group \"vg\"\n"
    );
    check("lvrename");
    call("lvremove", with(&["-y", "vg/sn"]));
    check("lvremove snapshot");
    call("lvreduce", with(&["-y", "-L", "-4M", "vg/lin"]));
    check("lvreduce");
    call("lvcreate", with(&["-n", "rest", "-l", "100%FREE", "vg"]));
    check("lvcreate 100%FREE");
    call("lvremove", with(&["-y", "vg/rest", "vg/st2"]));
    check("lvremove");
    let mut a = with(&[]);
    a.extend(["vg".into(), paths[2].clone()]);
    assert_eq!(
        call("vgreduce", a),
        format!("  Removed \"{}\" from volume group \"vg\"\n", paths[2])
    );
    check("vgreduce");
    let pvs = lvm.ok("pvs", &["--noheadings", "-o", "pv_name,vg_name"]);
    assert!(
        pvs.lines().any(|l| l.trim() == d[2]),
        "orphan after vgreduce: {pvs}"
    );
    assert_eq!(
        call("vgrename", with(&["vg", "vg2"])),
        "  Volume group \"vg\" successfully renamed to \"vg2\"\n"
    );
    lvm.ok("vgck", &["vg2"]);
    let out = call("vgremove", with(&["-f", "vg2"]));
    assert_eq!(out, "  Logical volume \"lin\" successfully removed.\n  Volume group \"vg2\" successfully removed\n");
    let vgs = lvm.cmd("vgs", &["vg2"]);
    assert!(!vgs.status.success(), "vg2 still there");
    // lvm2 takes the PVs back: a VG of its own over udm's (now orphan) PVs.
    lvm.ok("vgcreate", &["back", d[0], d[1], d[2]]);
    lvm.ok("vgck", &["back"]);
}

/// A directory of links named as lvm commands (`pvcreate`, `lvs`, …) to the udm binary.
fn links(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for n in ["pvcreate", "vgcreate", "lvcreate", "lvs", "vgchange", "lvm"] {
        std::os::unix::fs::symlink(udm(), bin.join(n)).unwrap();
    }
    bin
}

/// The seed walkthrough, run as written with image files: three sparse PVs, `lvcreate -n
/// striped_lv -L 90G -i 3 -I 64K vg_data`, the striped map in `dmsetup table`, and
/// `lvs -o lv_name,lv_dm_path,seg_type`; the PVs come from udm's devices file.
#[test]
fn seed_striped_90g_walkthrough() {
    let (_d, dir, e) = daemon_env();
    let bin = links(dir.path());
    let imgs: Vec<String> = (0..3)
        .map(|i| {
            udm_testkit::image(dir.path(), &format!("disk{i}.img"), 31 << 30)
                .display()
                .to_string()
        })
        .collect();
    let img: Vec<&str> = imgs.iter().map(String::as_str).collect();
    let (o, er, c) = e.run_prog(&bin.join("pvcreate"), &img);
    assert_eq!(c, 0, "{er}");
    assert_eq!(
        o,
        img.iter()
            .map(|p| format!("  Physical volume \"{p}\" successfully created.\n"))
            .collect::<String>()
    );
    let (o, er, c) = e.run_prog(&bin.join("vgcreate"), &[&["vg_data"][..], &img].concat());
    assert_eq!(
        (o.as_str(), c),
        ("  Volume group \"vg_data\" successfully created\n", 0),
        "{er}"
    );
    let (o, er, c) = e.run_prog(
        &bin.join("lvcreate"),
        &[
            "-n",
            "striped_lv",
            "-L",
            "90G",
            "-i",
            "3",
            "-I",
            "64K",
            "vg_data",
        ],
    );
    assert_eq!(
        (o.as_str(), c),
        ("  Logical volume \"striped_lv\" created.\n", 0),
        "{er}"
    );
    let table = e.dm(&["table"]);
    assert_eq!(
        table,
        format!(
            "vg_data-striped_lv: 0 188743680 striped 3 128 {} 2048 {} 2048 {} 2048\n",
            img[0], img[1], img[2]
        )
    );
    let info = e.dm(&["info", "-c", "--noheadings", "-o", "name,uuid"]);
    assert!(info.starts_with("vg_data-striped_lv:LVM-"), "{info}");
    let (o, er, c) = e.run_prog(
        &bin.join("lvs"),
        &["-o", "lv_name,lv_dm_path,seg_type", "vg_data"],
    );
    assert_eq!(c, 0, "{er}");
    assert_eq!(
        o,
        "  LV         DMPath                         Type   \n  striped_lv /dev/mapper/vg_data-striped_lv striped\n"
    );
    let (o, er, c) = e.run_prog(&bin.join("vgchange"), &["-an", "vg_data"]);
    assert_eq!(
        (o.as_str(), c),
        (
            "  0 logical volume(s) in volume group \"vg_data\" now active\n",
            0
        ),
        "{er}"
    );
    assert_eq!(e.dm(&["ls"]), "No devices found\n");
}

fn file_hashes(paths: &[&Path]) -> Vec<String> {
    paths
        .iter()
        .map(|p| udm_testkit::dm::cksum(&std::fs::read(p).unwrap()))
        .collect()
}

/// A missing PV: partial LVs are refused (the others activate) unless `--activationmode
/// partial`, which maps the missing extents to `error`; commands that change the VG fail
/// and write nothing; so do failed lvcreates and a pvcreate on a too-small file.
#[test]
fn missing_pv_and_failed_commands_write_nothing() {
    let (_d, dir, e) = daemon_env();
    let a = udm_testkit::image(dir.path(), "a.img", 16 << 20);
    let b = udm_testkit::image(dir.path(), "b.img", 16 << 20);
    let (sa, sb) = (a.display().to_string(), b.display().to_string());
    let both = format!("{sa},{sb}");
    e.ok("vgcreate", &["--devices", &both, "vg", &sa, &sb]);
    for (lv, extents) in [("first", "2"), ("span", "100%FREE")] {
        let a = ["--devices", &both, "-a", "n", "-n", lv, "-l", extents, "vg"];
        e.ok("lvcreate", &a);
    }
    let before = file_hashes(&[&a, &b]);
    // b is missing.
    let (o, er, c) = e.lvm("vgchange", &["--devices", &sa, "-ay", "vg"]);
    assert_eq!(c, 5, "{o}{er}");
    assert!(
        er.contains("  Refusing activation of partial LV vg/span.  Use '--activationmode partial' to override.\n"),
        "{er}"
    );
    assert_eq!(
        o,
        "  1 logical volume(s) in volume group \"vg\" now active\n"
    );
    assert!(
        er.starts_with("  WARNING: Couldn't find device with uuid "),
        "{er}"
    );
    assert!(er.contains(&format!("(last written to {sb}).\n")), "{er}");
    assert_eq!(e.dm(&["ls"]).split_whitespace().next(), Some("vg-first"));
    assert_eq!(e.dm(&["ls"]).lines().count(), 1);
    let o = e.ok(
        "vgchange",
        &["--devices", &sa, "-ay", "--activationmode", "partial", "vg"],
    );
    assert_eq!(
        o,
        "  2 logical volume(s) in volume group \"vg\" now active\n"
    );
    // As lvm2: b's area reads from its own error device, vg-span-missing_1_0.
    let t = e.dm(&["table", "vg-span-missing_1_0"]);
    assert_eq!(t, "0 24576 error \n");
    let info = e.dm(&[
        "info",
        "-c",
        "--noheadings",
        "-o",
        "major,minor,uuid",
        "vg-span-missing_1_0",
    ]);
    let w: Vec<&str> = info.trim().split(':').collect();
    assert!(w[2].ends_with("-missing_1_0"), "{info}");
    let t = e.dm(&["table", "vg-span"]);
    assert_eq!(
        t,
        format!(
            "0 8192 linear {sa} 18432\n8192 24576 linear {}:{} 0\n",
            w[0], w[1]
        ),
        "span: the rest of a, then b's extents from the error device"
    );
    assert_eq!(
        e.ok("vgchange", &["--devices", &sa, "-an", "vg"]),
        "  0 logical volume(s) in volume group \"vg\" now active\n"
    );
    let (_, er, c) = e.lvm(
        "lvcreate",
        &["--devices", &sa, "-a", "n", "-n", "x", "-l", "1", "vg"],
    );
    assert_eq!(c, 5);
    assert_eq!(er, "  Cannot change VG vg while PVs are missing.\n");
    // Failures with every PV present.
    let (_, er, c) = e.lvm(
        "lvcreate",
        &["--devices", &both, "-n", "big", "-L", "1G", "vg"],
    );
    assert_eq!(
        (er.as_str(), c),
        (
            "  Volume group \"vg\" has insufficient free space (0 extents): 256 required.\n",
            5
        )
    );
    let (_, er, c) = e.lvm(
        "lvcreate",
        &["--devices", &both, "-n", "first", "-l", "1", "vg"],
    );
    assert_eq!(
        (er.as_str(), c),
        (
            "  Logical Volume \"first\" already exists in volume group \"vg\"\n",
            5
        )
    );
    let (_, _, c) = e.lvm("lvrename", &["--devices", &both, "vg", "first", "span"]);
    assert_eq!(c, 5);
    let (_, _, c) = e.lvm("vgreduce", &["--devices", &both, "vg", &sb]);
    assert_eq!(c, 5, "b holds extents of span");
    assert_eq!(file_hashes(&[&a, &b]), before, "a failed command wrote");
    let tiny = udm_testkit::image(dir.path(), "tiny.img", 1 << 20);
    let (_, er, c) = e.lvm("pvcreate", &["--devices", "", tiny.to_str().unwrap()]);
    assert_eq!(c, 5, "{er}");
    assert!(er.contains("device is too small"), "{er}");
    assert!(std::fs::read(&tiny).unwrap().iter().all(|&x| x == 0));
    assert_eq!(e.dm(&["ls"]), "No devices found\n");
}

/// Read a whole device through the daemon's NBD export.
fn read_all(d: &Daemon, name: &str) -> Vec<u8> {
    let c = udm_nbd::NbdClient::connect_unix(&d.nbd_socket, name).unwrap();
    let mut buf = vec![0u8; c.size() as usize];
    c.read(0, &mut buf).unwrap();
    buf
}

/// Active LVs through the daemon: lvcreate activates, lvextend/lvreduce reload the live
/// table (data kept), lvrename renames the device, lvremove and vgremove deactivate first.
#[test]
fn online_resize_rename_and_remove() {
    let (d, dir, e) = daemon_env();
    let a = udm_testkit::image(dir.path(), "a.img", 64 << 20)
        .display()
        .to_string();
    let b = udm_testkit::image(dir.path(), "b.img", 64 << 20)
        .display()
        .to_string();
    let devs = format!("{a},{b}");
    let dv = ["--devices", devs.as_str()];
    e.ok("vgcreate", &[&dv[..], &["vg-1", &a, &b]].concat());
    let o = e.ok(
        "lvcreate",
        &[&dv[..], &["-n", "data", "-L", "8M", "vg-1"]].concat(),
    );
    assert_eq!(o, "  Logical volume \"data\" created.\n");
    assert_eq!(
        e.dm(&["table", "vg--1-data"]),
        format!("0 16384 linear {a} 2048\n")
    );
    let pattern: Vec<u8> = (0..8u32 << 20).map(|i| (i / 512 % 251) as u8).collect();
    {
        let c = udm_nbd::NbdClient::connect_unix(&d.nbd_socket, "vg--1-data").unwrap();
        c.write(0, &pattern, true).unwrap();
    }
    e.ok(
        "lvcreate",
        &[&dv[..], &["-n", "blocker", "-L", "4M", "vg-1"]].concat(),
    );
    let o = e.ok("lvextend", &[&dv[..], &["-L", "+8M", "vg-1/data"]].concat());
    assert_eq!(o, "  Size of logical volume vg-1/data changed from 8.00 MiB (2 extents) to 16.00 MiB (4 extents).\n  Logical volume vg-1/data successfully resized.\n");
    assert_eq!(
        e.dm(&["table", "vg--1-data"]),
        format!("0 16384 linear {a} 2048\n16384 16384 linear {a} 26624\n")
    );
    let now = read_all(&d, "vg--1-data");
    assert_eq!(now.len(), 16 << 20);
    assert!(now[..8 << 20] == pattern[..], "data kept across the reload");
    e.ok(
        "lvreduce",
        &[&dv[..], &["-y", "-l", "2", "vg-1/data"]].concat(),
    );
    assert_eq!(
        e.dm(&["table", "vg--1-data"]),
        format!("0 16384 linear {a} 2048\n")
    );
    let uuid = e.dm(&["info", "-c", "--noheadings", "-o", "uuid", "vg--1-data"]);
    let o = e.ok(
        "lvrename",
        &[&dv[..], &["vg-1/data", "vg-1/renamed"]].concat(),
    );
    assert_eq!(
        o,
        "  Renamed \"data\" to \"renamed\" in volume group \"vg-1\"\n"
    );
    assert_eq!(
        e.dm(&["info", "-c", "--noheadings", "-o", "uuid", "vg--1-renamed"]),
        uuid
    );
    assert!(read_all(&d, "vg--1-renamed")[..] == pattern[..]);
    let o = e.ok("lvremove", &[&dv[..], &["-y", "vg-1/blocker"]].concat());
    assert_eq!(o, "  Logical volume \"blocker\" successfully removed.\n");
    assert_eq!(
        e.dm(&["ls"]).split_whitespace().next(),
        Some("vg--1-renamed")
    );
    let o = e.ok("vgremove", &[&dv[..], &["-f", "vg-1"]].concat());
    assert_eq!(o, "  Logical volume \"renamed\" successfully removed.\n  Volume group \"vg-1\" successfully removed\n");
    assert_eq!(e.dm(&["ls"]), "No devices found\n");
}

/// The fake 8 TB disk seed as written: a udm device (1024 real sectors, then `zero`) becomes
/// a PV through the daemon, a 100%FREE LV on it (<8.00t) maps onto it, and a snapshot of
/// that LV on a real PV can be written anywhere in its 8 TB; `vgchange -a n` cleans up.
#[test]
fn seed_fake_8tb_pv_on_udm_device() {
    let (d, dir, e) = daemon_env();
    let small = udm_testkit::image(dir.path(), "sdb1.img", 1 << 20);
    e.dm(&[
        "create",
        "pv_8tb",
        "--table",
        &format!("0 1024 linear {} 0\n1024 17179868160 zero", small.display()),
    ]);
    let o = e.ok("pvcreate", &["/dev/mapper/pv_8tb"]);
    assert_eq!(
        o,
        "  Physical volume \"/dev/mapper/pv_8tb\" successfully created.\n"
    );
    e.ok("vgcreate", &["vg_8tb", "/dev/mapper/pv_8tb"]);
    let o = e.ok(
        "lvcreate",
        &[
            "-n",
            "lv_fake_8tb",
            "-l",
            "100%FREE",
            "vg_8tb",
            "/dev/mapper/pv_8tb",
        ],
    );
    assert_eq!(o, "  Logical volume \"lv_fake_8tb\" created.\n");
    let mm = e.dm(&[
        "info",
        "-c",
        "--noheadings",
        "--separator",
        ":",
        "-o",
        "major,minor",
        "pv_8tb",
    ]);
    assert_eq!(
        e.dm(&["table", "vg_8tb-lv_fake_8tb"]),
        format!("0 17179860992 linear {} 2048\n", mm.trim())
    );
    let lvs = e.ok("lvs", &["--noheadings", "-o", "lv_name,lv_size,devices"]);
    assert_eq!(
        lvs.split_whitespace().collect::<Vec<_>>(),
        ["lv_fake_8tb", "<8.00t", "/dev/mapper/pv_8tb(0)"]
    );
    // A PV argument the VG does not have is refused, and nothing is written.
    let other = udm_testkit::image(dir.path(), "sdh1.img", 64 << 20);
    let (_, er, c) = e.lvm(
        "lvcreate",
        &["-n", "x", "-l", "1", "vg_8tb", other.to_str().unwrap()],
    );
    assert_eq!(c, 5, "{er}");
    // The snapshot over the fake disk, on a real PV: writable anywhere in its 8 TB.
    let sdh1 = other.to_str().unwrap();
    e.ok("pvcreate", &[sdh1]);
    e.ok("vgextend", &["vg_8tb", sdh1]);
    let o = e.ok(
        "lvcreate",
        &[
            "-n",
            "lv_real_8tb",
            "-s",
            "-l",
            "100%FREE",
            "vg_8tb/lv_fake_8tb",
            sdh1,
        ],
    );
    assert_eq!(o, "  Logical volume \"lv_real_8tb\" created.\n");
    assert_eq!(
        e.dm(&["table", "vg_8tb-lv_real_8tb-cow"]),
        format!("0 122880 linear {sdh1} 2048\n")
    );
    let snap = udm_nbd::NbdClient::connect_unix(&d.nbd_socket, "vg_8tb-lv_real_8tb").unwrap();
    assert_eq!(snap.size(), 17179860992 * 512);
    let far = 5u64 << 40;
    snap.write(far, &[0xa5u8; 4096], true).unwrap();
    let mut back = vec![0u8; 8192];
    snap.read(far - 4096, &mut back).unwrap();
    assert!(back[..4096].iter().all(|&b| b == 0) && back[4096..].iter().all(|&b| b == 0xa5));
    drop(snap);
    assert_eq!(
        e.ok("vgchange", &["-a", "n", "vg_8tb"]),
        "  0 logical volume(s) in volume group \"vg_8tb\" now active\n"
    );
    assert_eq!(e.dm(&["ls"]).split_whitespace().next(), Some("pv_8tb"));
    assert_eq!(e.dm(&["ls"]).lines().count(), 1);
    let o = e.ok("lvremove", &["vg_8tb/lv_real_8tb"]);
    assert_eq!(
        o,
        "  Logical volume \"lv_real_8tb\" successfully removed.\n"
    );
    let o = e.ok("lvremove", &["vg_8tb/lv_fake_8tb"]);
    assert_eq!(
        o,
        "  Logical volume \"lv_fake_8tb\" successfully removed.\n"
    );
}

/// Refused commands print what lvm2 prints (its activation/backup warnings aside) and exit
/// as lvm2 does, on a VG lvm2 made.
#[test]
fn refusals_match_lvm2() {
    let Some((dir, imgs, loops, lvm)) = loop_pvs(&[100, 100, 100]) else {
        return;
    };
    let d: Vec<&str> = loops.iter().map(|l| l.path()).collect();
    lvm.ok("vgcreate", &["vg", d[0], d[1], d[2]]);
    lvm.ok("lvcreate", &["-n", "lin", "-L", "28M", "vg"]);
    lvm.ok("lvcreate", &["-n", "st", "-L", "12M", "-i", "3", "vg"]);
    let e = no_daemon(dir.path());
    let devs = imgs
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let cases: &[&[&str]] = &[
        &["lvcreate", "-n", "x", "-L", "4M", "nope"],
        &["lvremove", "-y", "vg/nope"],
        &["lvextend", "-L", "1M", "vg/lin"],
        &["lvrename", "vg", "lin", "st"],
        &["lvcreate", "-n", "lin", "-L", "4M", "vg"],
        &["lvcreate", "-n", "y", "-L", "4M", "-i", "5", "vg"],
        &["lvreduce", "-y", "-L", "+4M", "vg/lin"],
        &["lvextend", "-l", "-1", "vg/lin"],
        &["lvcreate", "-n", "z", "-L", "400M", "vg"],
        &["vgremove", "nope"],
        &["vgcreate", "vg", d[0]],
    ];
    let quiet = |s: &str| -> String {
        s.lines()
            .filter(|l| !l.contains("WARNING"))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let before: Vec<Vec<u8>> = imgs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    for c in cases {
        let real = lvm.cmd(c[0], &c[1..]);
        let mut args = vec!["--config", NOACT, "--devices", &devs];
        let mut rest: Vec<&str> = c[1..].to_vec();
        // udm names the same PV by its image file.
        for r in rest.iter_mut() {
            if let Some(i) = d.iter().position(|x| x == r) {
                *r = imgs[i].to_str().unwrap();
            }
        }
        args.extend(rest);
        let (o, er, code) = e.lvm(c[0], &args);
        assert_eq!(code, real.status.code().unwrap(), "{c:?}: {er}");
        let real_out = String::from_utf8_lossy(&real.stdout);
        let real_err = String::from_utf8_lossy(&real.stderr);
        assert_eq!(
            quiet(&(o + &er)),
            quiet(&format!("{real_out}{real_err}")),
            "{c:?}"
        );
    }
    let after: Vec<Vec<u8>> = imgs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(before == after, "a refused command wrote");
}

/// `major:minor` of a udm device, as tables print it.
fn devno(e: &UdmCli, name: &str) -> String {
    let s = e.dm(&[
        "info",
        "-c",
        "--noheadings",
        "--separator",
        ":",
        "-o",
        "major,minor",
        name,
    ]);
    s.trim().to_string()
}

/// Snapshot LVs on the daemon's snapshot target: `lvcreate -s` on an active origin loads
/// lvm2's stack (`-real`, `-cow`, `snapshot`, the origin switched to `snapshot-origin`);
/// the snapshot keeps the data the origin had; lvremove takes the snapshot away and the
/// origin back to its linear table.
#[test]
fn snapshot_lv_activation() {
    let (d, dir, e) = daemon_env();
    let a = udm_testkit::image(dir.path(), "a.img", 64 << 20);
    let a = a.to_str().unwrap();
    let dv = ["--devices", a];
    e.ok("vgcreate", &[&dv[..], &["vg", a]].concat());
    e.ok(
        "lvcreate",
        &[&dv[..], &["-n", "orig", "-L", "8M", "vg"]].concat(),
    );
    let before: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    udm_nbd::NbdClient::connect_unix(&d.nbd_socket, "vg-orig")
        .unwrap()
        .write(0, &before, true)
        .unwrap();
    let o = e.ok(
        "lvcreate",
        &[&dv[..], &["-n", "sn", "-s", "-L", "4M", "vg/orig"]].concat(),
    );
    assert_eq!(o, "  Logical volume \"sn\" created.\n");
    let (real, cow) = (devno(&e, "vg-orig-real"), devno(&e, "vg-sn-cow"));
    assert_eq!(
        e.dm(&["table", "vg-orig-real"]),
        format!("0 16384 linear {a} 2048\n")
    );
    assert_eq!(
        e.dm(&["table", "vg-sn-cow"]),
        format!("0 8192 linear {a} 18432\n")
    );
    assert_eq!(
        e.dm(&["table", "vg-sn"]),
        format!("0 16384 snapshot {real} {cow} P 8\n")
    );
    assert_eq!(
        e.dm(&["table", "vg-orig"]),
        format!("0 16384 snapshot-origin {real}\n")
    );
    let after = vec![0x5au8; 1 << 20];
    udm_nbd::NbdClient::connect_unix(&d.nbd_socket, "vg-orig")
        .unwrap()
        .write(0, &after, true)
        .unwrap();
    assert!(
        read_all(&d, "vg-sn") == before,
        "the snapshot keeps the old data"
    );
    let now = read_all(&d, "vg-orig");
    assert!(now[..1 << 20] == after[..] && now[1 << 20..] == before[1 << 20..]);
    // Down and up again: the persistent exception store brings the old data back.
    assert_eq!(
        e.ok("vgchange", &[&dv[..], &["-an", "vg"]].concat()),
        "  0 logical volume(s) in volume group \"vg\" now active\n"
    );
    assert_eq!(e.dm(&["ls"]), "No devices found\n");
    assert_eq!(
        e.ok("vgchange", &[&dv[..], &["-ay", "vg"]].concat()),
        "  2 logical volume(s) in volume group \"vg\" now active\n"
    );
    assert_eq!(e.dm(&["ls"]).lines().count(), 4);
    assert!(
        read_all(&d, "vg-sn") == before,
        "the snapshot survives deactivation"
    );
    assert!(read_all(&d, "vg-orig")[..1 << 20] == after[..]);
    let o = e.ok("lvremove", &[&dv[..], &["-y", "vg/sn"]].concat());
    assert_eq!(o, "  Logical volume \"sn\" successfully removed.\n");
    // The origin goes back to its own table; its -real layer goes.
    assert_eq!(
        e.dm(&["ls"]).split_whitespace().collect::<Vec<_>>()[0],
        "vg-orig"
    );
    assert_eq!(e.dm(&["ls"]).lines().count(), 1);
    assert_eq!(
        e.dm(&["table", "vg-orig"]),
        format!("0 16384 linear {a} 2048\n")
    );
    assert!(read_all(&d, "vg-orig")[..1 << 20] == after[..]);
    e.ok("vgchange", &[&dv[..], &["-an", "vg"]].concat());
    assert_eq!(e.dm(&["ls"]), "No devices found\n");
}
