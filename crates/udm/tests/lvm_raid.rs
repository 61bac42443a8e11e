//! RAID and mirror LVs made by `udm lvm` on loop devices with a running daemon, checked
//! against what real lvm2 2.03.16 made and loaded for the same commands in refvm
//! (`udm-formats/tests/data/lvm2_raid.*`): the same sub-LVs, metadata text, placement and
//! sizes; the same devices with the same tables; lvm2 reads udm's metadata and reports it as
//! udm does; data written goes through and lands on every raid1/mirror leg.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use udm_testkit::lvm2::{assert_same_lvs, lv_section, LvmRig};
use udm_testkit::udmcli::fixture_tables;

fn udm() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_udm"))
}

const NOACT: &str = "global{activation=0}";

/// The commands lvm2 ran in refvm for the fixture.
const CREATES: &[&[&str]] = &[
    &["-y", "--type", "raid1", "-m1", "-n", "r1", "-L", "8M", "vg"],
    &["-y", "--type", "raid5", "-i2", "-n", "r5", "-L", "8M", "vg"],
    &[
        "-y", "--type", "raid6", "-i3", "-n", "r6", "-L", "12M", "vg",
    ],
    &[
        "-y", "--type", "raid10", "-i2", "-m1", "-n", "r10", "-L", "8M", "vg",
    ],
    &[
        "-y", "--type", "mirror", "-m1", "-n", "mi", "-L", "8M", "vg",
    ],
    &["-y", "--type", "raid0", "-i2", "-n", "r0", "-L", "8M", "vg"],
];

/// udm runs lvm2's commands on five 64 MiB PVs: every LV, sub-LV, segment and placement is
/// lvm2's (metadata text equal but for ids and times), every device has lvm2's table and a
/// uuid of lvm2's form, lvm2 accepts the VG and reports it as udm does, data goes through
/// each LV, both legs of the raid1 and of the mirror hold it, and `lvremove` takes the
/// sub-LVs with the LV.
#[test]
fn raid_and_mirror_lvs_match_lvm2() {
    let Some(rig) = LvmRig::start(&[64, 64, 64, 64, 64], &udm()) else {
        return;
    };
    let (dir, lvm, daemon, e) = (&rig.dir, &rig.lvm, &rig.daemon, &rig.e);
    let d = rig.paths();
    let run = |cmd: &str, args: &[&str]| rig.run(cmd, args);
    let mut vgc = vec!["vg"];
    vgc.extend(&d);
    run("vgcreate", &vgc);
    for (i, c) in CREATES.iter().enumerate() {
        let name = c[c.iter().position(|a| *a == "-n").unwrap() + 1];
        let mut want = String::new();
        if i != 0 && i != 4 {
            want.push_str("  Using default stripesize 64.00 KiB.\n");
        }
        want.push_str(&format!("  Logical volume \"{name}\" created.\n"));
        assert_eq!(run("lvcreate", c), want, "{c:?}");
    }
    // The metadata lvm2 wrote, but for ids and times.
    let backup = dir.path().join("vg.txt");
    run("vgcfgbackup", &["-f", backup.to_str().unwrap(), "vg"]);
    let ours = std::fs::read_to_string(&backup).unwrap();
    let theirs = include_str!("../../udm-formats/tests/data/lvm2_raid.vg");
    assert_same_lvs(&lv_section(&ours), &lv_section(theirs));
    // Every device lvm2 loaded, with lvm2's table.
    let fixture = fixture_tables(include_str!(
        "../../udm-formats/tests/data/lvm2_raid.tables"
    ));
    let ls = e.dm(&["ls"]);
    assert_eq!(ls.lines().count(), fixture.len(), "{ls}");
    for (name, uuid, table) in &fixture {
        assert_eq!(&e.live_table(name, &d), table, "{name}");
        let u = e.uuid_of(name);
        assert!(
            u.starts_with("LVM-") && u.len() == uuid.len(),
            "{name}: {u}"
        );
    }
    // lvm2 reads udm's metadata and shows what udm shows.
    lvm.ok("vgck", &["vg"]);
    for (cmd, args) in [
        ("lvs", vec!["-a", "-o+devices,seg_type,stripes,stripe_size"]),
        (
            "lvs",
            vec!["-a", "-o", "lv_name,copy_percent,mirror_log,region_size"],
        ),
        ("lvscan", vec!["-a"]),
        ("lvdisplay", vec!["-a"]),
        ("vgs", vec![]),
    ] {
        let want = lvm.ok(cmd, &args);
        let mut a = args.clone();
        a.extend(["--config", NOACT]);
        let ours = run(cmd, &a);
        for (i, (x, y)) in ours.lines().zip(want.lines()).enumerate() {
            assert_eq!(x, y, "{cmd} {args:?} line {i}");
        }
        assert_eq!(ours, want, "{cmd} {args:?}");
    }
    // Data through every LV.
    let mut sums = Vec::new();
    for name in ["vg-r1", "vg-r5", "vg-r6", "vg-r10", "vg-mi", "vg-r0"] {
        let c = udm_nbd::NbdClient::connect_unix(&daemon.nbd_socket, name).unwrap();
        let len = c.size();
        let data: Vec<u8> = (0..len).map(|i| ((i * 13) ^ (i >> 9)) as u8).collect();
        c.write(0, &data, true).unwrap();
        let mut back = vec![0u8; len as usize];
        c.read(0, &mut back).unwrap();
        assert!(back == data, "{name} reads back what was written");
        sums.push(data);
    }
    run("vgchange", &["-an", "vg"]);
    assert_eq!(e.dm(&["ls"]), "No devices found\n");
    // Both raid1 images (pv0 and pv1 at extent 1) and both mirror legs (extent 9) hold it.
    let leg = |pv: usize, extent: u64, len: usize| -> Vec<u8> {
        let f = std::fs::File::open(d[pv]).unwrap();
        let mut b = vec![0u8; len];
        f.read_exact_at(&mut b, (2048 + extent * 8192) * 512)
            .unwrap();
        b
    };
    for pv in [0, 1] {
        assert!(leg(pv, 1, sums[0].len()) == sums[0], "raid1 leg on pv{pv}");
        assert!(leg(pv, 9, sums[4].len()) == sums[4], "mirror leg on pv{pv}");
    }
    // lvremove takes the sub-LVs along; lvm2 agrees.
    assert_eq!(
        run("lvremove", &["-y", "vg/r5"]),
        "  Logical volume \"r5\" successfully removed.\n"
    );
    let left = lvm.ok("lvs", &["-a", "--noheadings", "-o", "lv_name"]);
    assert!(!left.contains("r5"), "{left}");
    assert_eq!(left.lines().count(), fixture.len() - 7, "{left}");
    lvm.ok("vgck", &["vg"]);
}

/// `lvextend` of live raid1, raid5 and mirror LVs as lvm2 did in refvm: lvm2's words, each
/// image grown on its own PV (metadata equal but for ids and times), lvm2's tables after,
/// the data written before still there and the new space usable; lvm2 accepts the VG.
#[test]
fn raid_and_mirror_extend_as_lvm2() {
    let Some(rig) = LvmRig::start(&[64, 64, 64], &udm()) else {
        return;
    };
    let (dir, lvm, daemon, e) = (&rig.dir, &rig.lvm, &rig.daemon, &rig.e);
    let d = rig.paths();
    let run = |cmd: &str, args: &[&str]| rig.run(cmd, args);
    run("vgcreate", &["vg", d[0], d[1], d[2]]);
    run(
        "lvcreate",
        &["-y", "-n", "r1", "--type", "raid1", "-m1", "-L", "8M", "vg"],
    );
    run(
        "lvcreate",
        &["-y", "-n", "r5", "--type", "raid5", "-i2", "-L", "8M", "vg"],
    );
    run(
        "lvcreate",
        &[
            "-y", "-n", "mi", "--type", "mirror", "-m1", "-L", "8M", "vg",
        ],
    );
    run("lvcreate", &["-y", "-n", "lin", "-L", "4M", "vg"]);
    let pattern = |seed: u64, len: u64| -> Vec<u8> {
        (0..len).map(|i| ((i * seed) ^ (i >> 9)) as u8).collect()
    };
    for (i, n) in ["vg-r1", "vg-r5", "vg-mi"].iter().enumerate() {
        let c = udm_nbd::NbdClient::connect_unix(&daemon.nbd_socket, n).unwrap();
        c.write(0, &pattern(i as u64 + 3, 8 << 20), true).unwrap();
    }
    for (lv, add, want) in [
        ("vg/r1", "+4M", "  Extending 2 mirror images.\n  Size of logical volume vg/r1 changed from 8.00 MiB (2 extents) to 12.00 MiB (3 extents).\n  Logical volume vg/r1 successfully resized.\n"),
        ("vg/r5", "+8M", "  Using stripesize of last segment 64.00 KiB\n  Size of logical volume vg/r5 changed from 8.00 MiB (2 extents) to 16.00 MiB (4 extents).\n  Logical volume vg/r5 successfully resized.\n"),
        ("vg/mi", "+4M", "  Extending 2 mirror images.\n  Size of logical volume vg/mi changed from 8.00 MiB (2 extents) to 12.00 MiB (3 extents).\n  Logical volume vg/mi successfully resized.\n"),
    ] {
        assert_eq!(run("lvextend", &["-L", add, lv]), want, "{lv}");
    }
    let backup = dir.path().join("vg.txt");
    run("vgcfgbackup", &["-f", backup.to_str().unwrap(), "vg"]);
    assert_same_lvs(
        &lv_section(&std::fs::read_to_string(&backup).unwrap()),
        &lv_section(include_str!(
            "../../udm-formats/tests/data/lvm2_raid_extend.vg"
        )),
    );
    let text = include_str!("../../udm-formats/tests/data/lvm2_raid_extend.tables");
    let mut want: Vec<(String, String)> = Vec::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let (n, t) = l.split_once(": ").unwrap();
        match want.iter_mut().find(|w| w.0 == n) {
            Some(w) => w.1 = format!("{}\n{t}", w.1),
            None => want.push((n.to_string(), t.to_string())),
        }
    }
    assert_eq!(e.dm(&["ls"]).lines().count(), want.len());
    for (n, t) in &want {
        assert_eq!(&e.live_table(n, &d), t, "{n}");
    }
    lvm.ok("vgck", &["vg"]);
    for (i, n) in ["vg-r1", "vg-r5", "vg-mi"].iter().enumerate() {
        let c = udm_nbd::NbdClient::connect_unix(&daemon.nbd_socket, n).unwrap();
        let size = c.size();
        assert!(size > 8 << 20, "{n} grew: {size}");
        let mut back = vec![0u8; 8 << 20];
        c.read(0, &mut back).unwrap();
        assert!(back == pattern(i as u64 + 3, 8 << 20), "{n} keeps its data");
        let tail = pattern(7, size - (8 << 20));
        c.write(8 << 20, &tail, true).unwrap();
        let mut b2 = vec![0u8; tail.len()];
        c.read(8 << 20, &mut b2).unwrap();
        assert!(b2 == tail, "{n}: the new space holds data");
    }
    run("vgchange", &["-an", "vg"]);
    assert_eq!(e.dm(&["ls"]), "No devices found\n");
}
