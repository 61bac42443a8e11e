//! Kernel ground truth for `udm dmraid` (refvm, one VM boot): Intel Matrix and DDF1 sets
//! made by `mdadm -e imsm` / `mdadm -e ddf` over scsi_debug disks (dmraid needs SCSI serials; virtio disks have none
//! it can read), with data written through md, are listed, tabled and activated by real
//! dmraid 1.0.0.rc16 in the guest; the disks come back as images and `udm dmraid` must print
//! the same `-r`/`-s` listings and `-ay -t` tables, and activate the raid0 sets and the Intel
//! and DDF raid1 sets with md's data.

use std::path::{Path, PathBuf};
use udm_testkit::udmcli::UdmCli;
use udm_testkit::Daemon;

mod dmraid_common;
use dmraid_common::{disks, mapped, pattern, read, serials, sorted};

fn udm() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_udm"))
}

const SD: [&str; 8] = ["sde", "sdf", "sdg", "sdh", "sdi", "sdb", "sdc", "sdd"];

/// The guest's script: two IMSM containers (raid0 over three disks, raid1 over two) and a
/// DDF container (raid0 over three, raid1 over two of them) on
/// scsi_debug disks whose serials dmraid can read (≥ 5 characters: dmraid rc16 drops
/// 4-character ones), data through md, then dmraid's view; the disks are copied to the
/// virtio disks (the host's images) at the end.
const SCRIPT: &str = r#"
modprobe scsi_debug add_host=8 per_host_store=1 dev_size_mb=40 || exit 3
sleep 1
D="/dev/sde /dev/sdf /dev/sdg /dev/sdh /dev/sdi /dev/sdb /dev/sdc /dev/sdd"
export IMSM_NO_PLATFORM=1
mdadm -C /dev/md/imsm0 -e imsm -n 3 /dev/sde /dev/sdf /dev/sdg --run || exit 4
mdadm -C /dev/md/vol0 -l 0 -n 3 -z 4M -c 64 /dev/md/imsm0 --run || exit 5
mdadm -C /dev/md/imsm1 -e imsm -n 2 /dev/sdh /dev/sdi --run || exit 6
mdadm -C /dev/md/mir -l 1 -n 2 -z 2M /dev/md/imsm1 --run || exit 7
mdadm -C /dev/md/ddf -e ddf -n 3 /dev/sdb /dev/sdc /dev/sdd --run || exit 8
mdadm -C /dev/md/dvol0 -l 0 -n 3 -z 2M -c 64 /dev/md/ddf --run || exit 9
# mdadm's DDF virtual-disk GUIDs carry the creation second, and dmraid rc16 takes two
# virtual disks made in the same second for one set: create them seconds apart.
sleep 2
mdadm -C /dev/md/dvol1 -l 1 -n 2 -z 1M /dev/sdb /dev/sdc --run || exit 10
dd if=pattern2.bin of=/dev/md/dvol0 bs=1M oflag=direct status=none
dd if=pattern0.bin of=/dev/md/vol0 bs=1M oflag=direct status=none
dd if=pattern1.bin of=/dev/md/mir bs=1M oflag=direct status=none
dd if=pattern3.bin of=/dev/md/dvol1 bs=1M oflag=direct status=none
mdadm --wait /dev/md/mir /dev/md/dvol1
mdadm -S /dev/md/vol0 /dev/md/mir /dev/md/dvol0 /dev/md/dvol1; mdadm -S /dev/md/imsm0 /dev/md/imsm1 /dev/md/ddf
for d in $D; do b=${d#/dev/}; tail -c +5 /sys/block/$b/device/vpd_pg80 > $b.serial; done
dmraid -r > r.out 2>&1; dmraid -s > s.out 2>&1; dmraid -ay -t > t.out 2>&1
dmraid -ay > ay.out 2>&1; dmraid -s > sa.out 2>&1
: > cmp.out
cmp -n 12582912 /dev/mapper/isw_*_vol0 pattern0.bin && echo vol0-same >> cmp.out
cmp -n 2097152 /dev/mapper/isw_*_mir pattern1.bin && echo mir-same >> cmp.out
cmp -n 6291456 /dev/mapper/ddf1_dvol0 pattern2.bin && echo dvol0-same >> cmp.out
cmp -n 1048576 /dev/mapper/ddf1_dvol1 pattern3.bin && echo dvol1-same >> cmp.out
dmraid -an > an.out 2>&1
i=0; for v in /dev/vda /dev/vdb /dev/vdc /dev/vdd /dev/vde /dev/vdf /dev/vdg /dev/vdh; do i=$((i+1)); set -- $D; eval d=\${$i}; dd if=$d of=$v bs=1M status=none; done; sync
"#;

#[test]
fn kernel_dmraid_sets_match_dmraid() {
    let Some(run) = udm_testkit::refvm() else {
        return;
    };
    let (dir, share, imgs) = disks(&SD);
    let p0 = pattern(12 << 20, 0x5a);
    let p1 = pattern(2 << 20, 0xc3);
    std::fs::write(share.join("pattern0.bin"), &p0).unwrap();
    std::fs::write(share.join("pattern1.bin"), &p1).unwrap();
    let p2 = pattern(6 << 20, 0x3c);
    std::fs::write(share.join("pattern2.bin"), &p2).unwrap();
    let p3 = pattern(1 << 20, 0x96);
    std::fs::write(share.join("pattern3.bin"), &p3).unwrap();

    let d = Daemon::start(&udm());
    let e = UdmCli::on(udm(), &d, dir.path().join("state"));
    let img_args: Vec<&str> = imgs.iter().map(|p| p.to_str().unwrap()).collect();
    let dmraid = |extra: &[&str]| e.run(&[&["dmraid"][..], extra, &img_args].concat());
    // Blank disks: nothing found, as dmraid says it.
    let (o, err, c) = dmraid(&["-r"]);
    assert_eq!((o.as_str(), c), ("", 1), "{err}");
    assert!(err.starts_with("no raid disks and with names: \""), "{err}");

    let disks: Vec<&Path> = imgs.iter().map(|p| p.as_path()).collect();
    let (o, err, code) = udm_testkit::refvm_run(&run, &disks, Some(&share), SCRIPT);
    assert_eq!(code, 0, "refvm:\n{o}\n{err}");
    // The kernel (through real dmraid's tables) reads what md wrote.
    assert_eq!(
        read(&share.join("cmp.out")),
        "vol0-same\nmir-same\ndvol0-same\ndvol1-same\n",
        "dmraid -ay in the guest:\n{}\nrefvm:\n{o}\n{err}",
        read(&share.join("ay.out"))
    );
    serials(&share, &SD, &imgs);

    // -r: the same lines (dmraid lists in sysfs order, udm in argument order).
    let (o, err, c) = dmraid(&["-r"]);
    assert_eq!(c, 0, "{err}");
    let want = mapped(&read(&share.join("r.out")), &SD, &imgs);
    assert_eq!(sorted(&o), sorted(&want), "udm:\n{o}\ndmraid:\n{want}");
    assert_eq!(o.lines().count(), 8);
    assert_eq!(o.matches(": ddf1, \".ddf1_disks\", GROUP, ok, ").count(), 3);
    // Invoked as `dmraid`.
    let link = dir.path().join("dmraid");
    std::os::unix::fs::symlink(udm(), &link).unwrap();
    let (o2, _, c2) = e.run_prog(&link, &[&["-r"][..], &img_args].concat());
    assert_eq!((o2, c2), (o.clone(), 0));

    // -s, nothing active: byte-identical.
    let (o, err, c) = dmraid(&["-s"]);
    assert_eq!(c, 0, "{err}");
    assert_eq!(o, read(&share.join("s.out")));

    // -ay -t: the same tables, devices aside.
    let (o, err, c) = dmraid(&["-ay", "-t"]);
    assert_eq!(c, 0, "{err}");
    let tables = mapped(&read(&share.join("t.out")), &SD, &imgs);
    assert_eq!(o, tables);
    assert!(tables.contains(" striped 3 128 ") && tables.contains(" mirror core 2 64 nosync 2 "));
    assert_eq!(tables.lines().count(), 4, "{tables}");

    // -ay of the raid0 sets: md's data read back through udm's devices.
    let (o, err, c) = dmraid(&["-ay", "ddf1_dvol0"]);
    assert_eq!(c, 0, "{o}{err}");
    read_back(&d, "ddf1_dvol0", &tables, &p2);
    let vol0 = tables
        .lines()
        .find(|l| l.starts_with("isw_") && l.contains(" striped "))
        .and_then(|l| l.split(':').next())
        .unwrap()
        .to_string();
    let (o, err, c) = dmraid(&["-ay", &vol0]);
    assert_eq!(c, 0, "{o}{err}");
    let got_table = e.dm(&["table", &vol0]);
    let want_line = tables.lines().find(|l| l.starts_with(&vol0)).unwrap();
    assert_eq!(format!("{vol0}: {}", got_table.trim_end()), want_line);
    let info = e.dm(&["info", "-c", "--noheadings", "-o", "uuid", &vol0]);
    assert_eq!(info.trim(), format!("DMRAID-{vol0}"));
    read_back(&d, &vol0, &tables, &p0);
    // -s now shows it active, as dmraid does once a set is up.
    let (o, _, _) = dmraid(&["-s", &vol0]);
    assert!(
        o.contains(&format!("--> Active Subset\nname   : {vol0}\n")),
        "{o}"
    );
    assert!(read(&share.join("sa.out")).contains(&format!("--> Active Subset\nname   : {vol0}\n")));
    // The Intel raid1 set loads as dmraid's `mirror core … nosync` table and reads md's data.
    let mir = tables
        .lines()
        .find(|l| l.starts_with("isw_") && l.contains(" mirror "))
        .and_then(|l| l.split(':').next())
        .unwrap()
        .to_string();
    let (o, err, c) = dmraid(&["-ay", &mir]);
    assert_eq!(c, 0, "{o}{err}");
    let got_table = e.dm(&["table", &mir]);
    let want_line = tables.lines().find(|l| l.starts_with(&mir)).unwrap();
    assert_eq!(format!("{mir}: {}", got_table.trim_end()), want_line);
    read_back(&d, &mir, &tables, &p1);
    let (o, err, c) = dmraid(&["-an", &mir]);
    assert_eq!(c, 0, "{o}{err}");
    assert!(!e.dm(&["ls"]).contains(&mir));
    // The DDF raid1 set too: its members' data after the raid0 set's, on the mirror target.
    let want_line = tables
        .lines()
        .find(|l| l.starts_with("ddf1_dvol1: "))
        .unwrap_or_else(|| panic!("no ddf1_dvol1 table in\n{tables}"));
    assert!(want_line.contains(" mirror core 2 "), "{want_line}");
    let (o, err, c) = dmraid(&["-ay", "ddf1_dvol1"]);
    assert_eq!(c, 0, "{o}{err}");
    let got_table = e.dm(&["table", "ddf1_dvol1"]);
    assert_eq!(format!("ddf1_dvol1: {}", got_table.trim_end()), want_line);
    read_back(&d, "ddf1_dvol1", &tables, &p3);
    let (o, err, c) = dmraid(&["-an", "ddf1_dvol1"]);
    assert_eq!(c, 0, "{o}{err}");
    assert!(!e.dm(&["ls"]).contains("ddf1_dvol1"));
    // -an removes it.
    let (o, err, c) = dmraid(&["-an", &vol0]);
    assert_eq!(c, 0, "{o}{err}");
    let ls = e.dm(&["ls"]);
    assert!(!ls.contains(&vol0) && ls.contains("ddf1_dvol0"), "{ls}");
    let (o, err, c) = dmraid(&["-an", "ddf1_dvol0"]);
    assert_eq!(c, 0, "{o}{err}");
    assert!(!e.dm(&["ls"]).contains("ddf1_dvol0"));
}

/// udm's device `name` is as long as its table line in `tables` says and reads `want` first.
fn read_back(d: &Daemon, name: &str, tables: &str, want: &[u8]) {
    let line = tables
        .lines()
        .find(|l| l.starts_with(&format!("{name}: ")))
        .unwrap();
    let len: u64 = line.split(' ').nth(2).unwrap().parse().unwrap();
    let nbd = udm_nbd::NbdClient::connect_unix(&d.nbd_socket, name).unwrap();
    assert_eq!(nbd.size(), len * 512);
    let mut buf = vec![0u8; want.len()];
    nbd.read(0, &mut buf).unwrap();
    assert!(buf == want, "udm's {name} reads md's data");
}
