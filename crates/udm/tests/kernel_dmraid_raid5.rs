//! Kernel ground truth for `udm dmraid` raid5 sets (refvm): an Intel Matrix
//! raid5 (`mdadm -e imsm`, `IMSM_NO_PLATFORM=1`) and a DDF raid5 (`mdadm -e ddf`) over
//! scsi_debug disks, a known pattern written through the guest's md. In the guest, real
//! dmraid lists them (`-s`) and prints its tables (`-ay -t`); the 6.1 kernel refuses dmraid's
//! own raid5 line (its region size is below the chunk size), loads the line with the region
//! raised to the chunk size and reads md's pattern through it, and reads it again with one
//! member given as `- -`. The disks come back as images: `udm dmraid` must print the same
//! `-s` listing, exactly the tables the kernel read md's data through, activate both sets and
//! read the pattern, do the same with one member of each set missing (dmraid's degraded
//! `-s` listing byte for byte), and refuse the sets with two members missing with dmraid's
//! message. All of that shares one VM boot; a second boot takes the images back after udm
//! wrote new data through both sets: md assembles them, reads udm's data and its `check`
//! pass finds udm's parity right.

use std::path::{Path, PathBuf};
use udm_testkit::udmcli::UdmCli;
use udm_testkit::Daemon;

mod dmraid_common;
use dmraid_common::{disks, mapped, pattern, read, serials, sorted};

fn udm() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_udm"))
}

/// The guest's scsi_debug disks, in image order: DDF on the first three (their 4-character
/// serials are too short for dmraid's Intel code), Intel on the last three.
const SD: [&str; 6] = ["sdb", "sdc", "sdd", "sde", "sdf", "sdg"];
/// md's array size for both sets (`-z 4M` per member, three members).
const ARRAY: usize = 8 << 20;

const SCRIPT: &str = r#"
modprobe scsi_debug add_host=6 per_host_store=1 dev_size_mb=40 || exit 3
sleep 1
D="/dev/sdb /dev/sdc /dev/sdd /dev/sde /dev/sdf /dev/sdg"
for d in $D; do [ "$(cat /sys/block/${d#/dev/}/size)" = 81920 ] || exit 2; done
export IMSM_NO_PLATFORM=1
mdadm -C /dev/md/imsm -e imsm -n 3 /dev/sde /dev/sdf /dev/sdg --run || exit 4
mdadm -C /dev/md/r5 -l 5 -n 3 -z 4M -c 64 /dev/md/imsm --run --assume-clean || exit 5
mdadm -C /dev/md/ddf -e ddf -n 3 /dev/sdb /dev/sdc /dev/sdd --run || exit 6
mdadm -C /dev/md/d5 -l 5 -n 3 -z 4M -c 64 /dev/md/ddf --run --assume-clean || exit 7
dd if=pattern0.bin of=/dev/md/r5 bs=1M oflag=direct status=none || exit 8
dd if=pattern1.bin of=/dev/md/d5 bs=1M oflag=direct status=none || exit 9
mdadm --detail /dev/md/r5 /dev/md/d5 > detail.out
mdadm -S /dev/md/r5 /dev/md/d5; mdadm -S /dev/md/imsm /dev/md/ddf
for d in $D; do b=${d#/dev/}; tail -c +5 /sys/block/$b/device/vpd_pg80 > $b.serial; done
dmraid -s > s.out 2>/dev/null; dmraid -ay -t > t.out 2>/dev/null
: > k.out; : > fixed.out; : > degraded.out; : > status.out; : > dstatus.out
for set in $(cut -d: -f1 t.out); do
  line=$(sed -n "s/^$set: //p" t.out)
  dmsetup create k --table "$line" 2>/dev/null && echo "$set dmraid-line-loaded" >> k.out
  dmsetup remove k 2>/dev/null
  fixed=$(echo "$line" | sed 's/ region_size [0-9]* / region_size 128 /')
  echo "$set: $fixed" >> fixed.out
  dmsetup create k --table "$fixed" || echo "$set fixed-refused" >> k.out
  echo "$set: $(dmsetup status k)" >> status.out
  p=pattern1.bin; case $set in isw_*) p=pattern0.bin;; esac
  cmp -n 8388608 /dev/mapper/k $p && echo "$set-same" >> k.out
  dmsetup remove k
  deg=$(echo "$fixed" | sed 's| - /dev/sdg| - -|; s| - /dev/sdc| - -|')
  echo "$set: $deg" >> degraded.out
  dmsetup create k --table "$deg" || echo "$set degraded-refused" >> k.out
  echo "$set: $(dmsetup status k)" >> dstatus.out
  cmp -n 8388608 /dev/mapper/k $p && echo "$set-degraded-same" >> k.out
  dmsetup remove k
done
i=0; for v in /dev/vda /dev/vdb /dev/vdc /dev/vdd /dev/vde /dev/vdf; do i=$((i+1)); set -- $D; eval d=\${$i}; dd if=$d of=$v bs=1M status=none; done; sync
dd if=/dev/zero of=/dev/sdg bs=1M status=none; dd if=/dev/zero of=/dev/sdc bs=1M status=none
dmraid -s > sd.out 2>/dev/null
dd if=/dev/zero of=/dev/sdf bs=1M status=none; dd if=/dev/zero of=/dev/sdd bs=1M status=none
dmraid -ay -t > two.out 2>&1
true
"#;

/// The second boot: the images back on the same scsi_debug disks (same serials), md
/// assembles both sets, reads what udm wrote and checks the parity udm computed.
const SCRIPT_BACK: &str = r#"
modprobe scsi_debug add_host=6 per_host_store=1 dev_size_mb=40 || exit 3
sleep 1
D="/dev/sdb /dev/sdc /dev/sdd /dev/sde /dev/sdf /dev/sdg"
i=0; for v in /dev/vda /dev/vdb /dev/vdc /dev/vdd /dev/vde /dev/vdf; do i=$((i+1)); set -- $D; eval d=\${$i}; dd if=$v of=$d bs=1M status=none; done; sync
export IMSM_NO_PLATFORM=1
mdadm -A /dev/md/imsm0 /dev/sde /dev/sdf /dev/sdg > asm.out 2>&1
mdadm -A /dev/md/ddf0 /dev/sdb /dev/sdc /dev/sdd >> asm.out 2>&1
timeout 60 mdadm -I /dev/md/imsm0 >> asm.out 2>&1
timeout 60 mdadm -I /dev/md/ddf0 >> asm.out 2>&1
cat /proc/mdstat >> asm.out
imsm=$(basename $(readlink -f /dev/md/imsm0)); ddf=$(basename $(readlink -f /dev/md/ddf0))
: > back.out
for m in r5 d5; do
  c=$imsm; p=pattern2.bin; [ $m = d5 ] && { c=$ddf; p=pattern3.bin; }
  md=
  for b in /sys/block/md*; do
    case "$(cat $b/md/metadata_version 2>/dev/null)" in */$c/*) md=$(basename $b);; esac
  done
  [ -n "$md" ] || { echo "$m not assembled" >> back.out; continue; }
  timeout 60 cmp -n 8388608 /dev/$md $p && echo $m-same >> back.out
  timeout 20 mdadm --readwrite /dev/$md >> asm.out 2>&1
  echo check > /sys/block/$md/md/sync_action; sleep 1; timeout 60 mdadm --wait /dev/$md
  echo "$m $(cat /sys/block/$md/md/sync_action) mismatch $(cat /sys/block/$md/md/mismatch_cnt)" >> back.out
done
cat /proc/mdstat >> asm.out
true
"#;

/// udm's device `name` has the table line `want` (`name: table`) and reads `data` first.
fn check_dev(e: &UdmCli, d: &Daemon, name: &str, want: &str, data: &[u8]) {
    let got = e.dm(&["table", name]);
    assert_eq!(format!("{name}: {}", got.trim_end()), want);
    let len: u64 = want.split(' ').nth(2).unwrap().parse().unwrap();
    let nbd = udm_nbd::NbdClient::connect_unix(&d.nbd_socket, name).unwrap();
    assert_eq!(nbd.size(), len * 512);
    let mut buf = vec![0u8; data.len()];
    nbd.read(0, &mut buf).unwrap();
    assert!(buf == data, "udm's {name} reads md's data ({want})");
}

#[test]
fn kernel_dmraid_raid5_sets_activate_with_mds_data() {
    let Some(run) = udm_testkit::refvm() else {
        return;
    };
    let (dir, share, imgs) = disks(&SD);
    let p_isw = pattern(ARRAY, 0x5a);
    let p_ddf = pattern(ARRAY, 0xa7);
    std::fs::write(share.join("pattern0.bin"), &p_isw).unwrap();
    std::fs::write(share.join("pattern1.bin"), &p_ddf).unwrap();
    let disks: Vec<&Path> = imgs.iter().map(|p| p.as_path()).collect();
    let (o, err, code) = udm_testkit::refvm_run(&run, &disks, Some(&share), SCRIPT);
    assert_eq!(code, 0, "refvm:\n{o}\n{err}");
    let detail = read(&share.join("detail.out"));
    assert!(
        detail.contains("Layout : left-asymmetric") && detail.contains("Layout : left-symmetric"),
        "{detail}"
    );
    serials(&share, &SD, &imgs);
    let t = read(&share.join("t.out"));
    let isw = t
        .lines()
        .find(|l| l.starts_with("isw_"))
        .and_then(|l| l.split(':').next())
        .unwrap_or_else(|| panic!("no Intel set in dmraid's tables:\n{t}"))
        .to_string();
    // dmraid's own lines: the raid target, md's layouts, a region below the chunk size…
    assert!(
        t.contains(" raid raid5_la 4 128 nosync region_size 64 3 - "),
        "{t}"
    );
    assert!(t.contains("ddf1_d5: 0 16384 raid raid5_ls 4 128 nosync region_size 64 3 - "));
    // …which the kernel refuses, and reads md's data through the chunk-sized region, whole
    // and with a member missing.
    assert_eq!(
        read(&share.join("k.out")),
        format!("ddf1_d5-same\nddf1_d5-degraded-same\n{isw}-same\n{isw}-degraded-same\n")
    );

    let d = Daemon::start(&udm());
    let e = UdmCli::on(udm(), &d, dir.path().join("state"));
    let dmraid = |extra: &[&str], disks: &[&PathBuf]| {
        let paths: Vec<&str> = disks.iter().map(|p| p.to_str().unwrap()).collect();
        e.run(&[&["dmraid"][..], extra, &paths].concat())
    };
    let all: Vec<&PathBuf> = imgs.iter().collect();
    // -s: byte-identical to dmraid's.
    let (o, err, c) = dmraid(&["-s"], &all);
    assert_eq!(
        (o.as_str(), c),
        (read(&share.join("s.out")).as_str(), 0),
        "{err}"
    );
    // -ay -t: the tables the kernel read md's data through.
    let fixed = mapped(&read(&share.join("fixed.out")), &SD, &imgs);
    let (o, err, c) = dmraid(&["-ay", "-t"], &all);
    assert_eq!(c, 0, "{err}");
    assert_eq!(sorted(&o), sorted(&fixed));
    // -ay: both sets up, md's pattern read back.
    let (o, err, c) = dmraid(&["-ay"], &all);
    assert_eq!(c, 0, "{o}{err}");
    let line = |text: &str, set: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{set}: ")))
            .unwrap()
            .to_string()
    };
    check_dev(&e, &d, &isw, &line(&fixed, &isw), &p_isw);
    check_dev(&e, &d, "ddf1_d5", &line(&fixed, "ddf1_d5"), &p_ddf);
    // The kernel's status lines for the same tables.
    let kstatus = read(&share.join("status.out"));
    assert!(kstatus.contains(" raid raid5_ls 3 AAA "), "{kstatus}");
    for set in [isw.as_str(), "ddf1_d5"] {
        let status = e.dm(&["status", set]);
        assert_eq!(format!("{set}: {}", status.trim_end()), line(&kstatus, set));
    }
    let (o, _, _) = dmraid(&["-s"], &all);
    assert_eq!(o.matches("--> Active Subset").count(), 2, "{o}");
    let (o, err, c) = dmraid(&["-an"], &all);
    assert_eq!(c, 0, "{o}{err}");
    let ls = e.dm(&["ls"]);
    assert!(!ls.contains(&isw) && !ls.contains("ddf1_d5"), "{ls}");

    // One member of each set missing (sdc, sdg): dmraid's degraded listing, the degraded
    // tables the kernel read through, and md's data.
    let three: Vec<&PathBuf> = [0, 2, 3, 4].iter().map(|&i| &imgs[i]).collect();
    let (o, err, c) = dmraid(&["-s"], &three);
    assert_eq!(c, 0, "{err}");
    assert_eq!(o, read(&share.join("sd.out")));
    assert!(
        o.contains("*Inconsistent*") && o.contains("status : inconsistent"),
        "{o}"
    );
    assert!(err.contains(&format!(
        "wrong number of devices in RAID set \"{isw}\" [2/3]"
    )));
    let degraded = mapped(&read(&share.join("degraded.out")), &SD, &imgs);
    let (o, err, c) = dmraid(&["-ay", "-t"], &three);
    assert_eq!(c, 0, "{err}");
    assert_eq!(sorted(&o), sorted(&degraded));
    assert_eq!(o.matches(" - -").count(), 2, "{o}");
    let (o, err, c) = dmraid(&["-ay"], &three);
    assert_eq!(c, 0, "{o}{err}");
    check_dev(&e, &d, &isw, &line(&degraded, &isw), &p_isw);
    check_dev(&e, &d, "ddf1_d5", &line(&degraded, "ddf1_d5"), &p_ddf);
    // The kernel's status for a `- -` slot too (`-` in the health characters).
    let dstatus = read(&share.join("dstatus.out"));
    for set in [isw.as_str(), "ddf1_d5"] {
        let status = e.dm(&["status", set]);
        assert_eq!(format!("{set}: {}", status.trim_end()), line(&dstatus, set));
        assert_eq!(status.split(' ').nth(5).unwrap().matches('-').count(), 1);
    }
    let (o, err, c) = dmraid(&["-an"], &three);
    assert_eq!(c, 0, "{o}{err}");

    // Two missing: refused with dmraid's message, nothing created.
    let one: Vec<&PathBuf> = vec![&imgs[0], &imgs[3]];
    let (o, err, c) = dmraid(&["-ay"], &one);
    assert_eq!((o.as_str(), c), ("", 1), "{err}");
    let two = mapped(&read(&share.join("two.out")), &SD, &imgs);
    for want in [
        format!(
            "ERROR: isw: wrong number of devices in RAID set \"{isw}\" [1/3] on {}",
            imgs[3].display()
        ),
        format!(
            "ERROR: ddf1: wrong # of devices in RAID set \"ddf1_d5\" [1/3] on {}",
            imgs[0].display()
        ),
    ] {
        assert!(err.contains(&want), "udm: {err}\nwant {want}");
        assert!(two.contains(&want), "dmraid: {two}\nwant {want}");
    }
    let ls = e.dm(&["ls"]);
    assert!(!ls.contains(&isw) && !ls.contains("ddf1_d5"), "{ls}");

    // udm writes new data through both sets; the guest's md reads it and finds udm's parity
    // right (a `check` pass counts no mismatches).
    let (o, err, c) = dmraid(&["-ay"], &all);
    assert_eq!(c, 0, "{o}{err}");
    let p2 = pattern(ARRAY, 0x3c);
    let p3 = pattern(ARRAY, 0xe1);
    for (set, data) in [(isw.as_str(), &p2), ("ddf1_d5", &p3)] {
        let nbd = udm_nbd::NbdClient::connect_unix(&d.nbd_socket, set).unwrap();
        // Partial-stripe writes first (read-modify-write), then the rest in 1 MiB pieces.
        nbd.write(4096, &data[4096..8192], false).unwrap();
        nbd.write(200 << 10, &data[200 << 10..(200 << 10) + 12288], false)
            .unwrap();
        for at in (0..ARRAY).step_by(1 << 20) {
            nbd.write(at as u64, &data[at..at + (1 << 20)], false)
                .unwrap();
        }
        nbd.flush().unwrap();
    }
    let (o, err, c) = dmraid(&["-an"], &all);
    assert_eq!(c, 0, "{o}{err}");
    std::fs::write(share.join("pattern2.bin"), &p2).unwrap();
    std::fs::write(share.join("pattern3.bin"), &p3).unwrap();
    let (o, err, code) = udm_testkit::refvm_run(&run, &disks, Some(&share), SCRIPT_BACK);
    assert_eq!(code, 0, "refvm:\n{o}\n{err}");
    assert_eq!(
        read(&share.join("back.out")),
        "r5-same\nr5 idle mismatch 0\nd5-same\nd5 idle mismatch 0\n",
        "{}",
        read(&share.join("asm.out"))
    );
}
