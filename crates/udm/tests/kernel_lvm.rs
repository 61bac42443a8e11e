//! Kernel ground truth for `udm lvm` (refvm, one VM boot): VGs lvm2 made with the kernel's
//! dm activate in udm with the same tables and data, and a VG udm made activates in the
//! kernel with udm's tables and data.

use std::path::PathBuf;
use udm_testkit::udmcli::UdmCli;
use udm_testkit::Daemon;

fn udm() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_udm"))
}

use udm_testkit::{refvm_host_words, refvm_section as section};

/// lvm2 in refvm makes a VG (a two-segment linear LV, a striped LV, an origin with a
/// snapshot), activates it with the kernel's dm and writes data; udm then activates the
/// linear and striped LVs from the same images with the tables lvm2 loaded there (names,
/// UUIDs; devices as paths) and reads the kernel's data back, and plans the snapshot stack
/// (`-real`, `-cow`, snapshot-origin, snapshot) exactly as lvm2 loaded it. The other way
/// round, a VG udm made (two-segment linear, striped, an origin with a udm-made snapshot)
/// with data udm wrote passes `vgck` in refvm, and the kernel activates it with udm's tables
/// (the snapshot stack as udm plans it) and reads udm's data. One VM boot.
#[test]
fn kernel_lvm_activation_matches_lvm2() {
    let Some(run) = udm_testkit::refvm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let r0 = udm_testkit::image(dir.path(), "r0.img", 64 << 20);
    let r1 = udm_testkit::image(dir.path(), "r1.img", 64 << 20);
    // udm's own VG, with data written through udm, for lvm2 and the kernel to activate.
    let d = Daemon::start(&udm());
    let e = UdmCli::on(udm(), &d, dir.path().join("state"));
    let r2 = udm_testkit::image(dir.path(), "r2.img", 64 << 20);
    let r3 = udm_testkit::image(dir.path(), "r3.img", 64 << 20);
    let udevs = format!("{},{}", r2.display(), r3.display());
    let ud = ["--devices", udevs.as_str()];
    e.ok(
        "vgcreate",
        &[
            &ud[..],
            &["uvg", r2.to_str().unwrap(), r3.to_str().unwrap()],
        ]
        .concat(),
    );
    e.ok(
        "lvcreate",
        &[&ud[..], &["-n", "lin", "-L", "8M", "uvg"]].concat(),
    );
    e.ok(
        "lvcreate",
        &[
            &ud[..],
            &["-n", "st", "-L", "16M", "-i", "2", "-I", "64K", "uvg"],
        ]
        .concat(),
    );
    e.ok("lvextend", &[&ud[..], &["-L", "+8M", "uvg/lin"]].concat());
    let mut udm_side = Vec::new();
    for name in ["uvg-lin", "uvg-st"] {
        let c = udm_nbd::NbdClient::connect_unix(&d.nbd_socket, name).unwrap();
        let data: Vec<u8> = (0..c.size()).map(|i| ((i / 7) ^ (i >> 13)) as u8).collect();
        c.write(0, &data, true).unwrap();
        udm_side.push((name, e.dm(&["table", name]), udm_testkit::dm::cksum(&data)));
    }
    assert_eq!(
        udm_side[0].1.lines().count(),
        2,
        "two segments: {}",
        udm_side[0].1
    );
    // An origin with data, and a snapshot of it made by udm (metadata only here).
    e.ok(
        "lvcreate",
        &[&ud[..], &["-n", "orig", "-L", "8M", "uvg"]].concat(),
    );
    let orig_sum = {
        let c = udm_nbd::NbdClient::connect_unix(&d.nbd_socket, "uvg-orig").unwrap();
        let data: Vec<u8> = (0..c.size()).map(|i| (i % 253) as u8).collect();
        c.write(0, &data, true).unwrap();
        udm_testkit::dm::cksum(&data)
    };
    let noact = ["--config", "global{activation=0}"];
    e.ok(
        "lvcreate",
        &[
            &ud[..],
            &noact[..],
            &["-n", "osn", "-s", "-L", "4M", "uvg/orig"],
        ]
        .concat(),
    );
    e.ok("vgchange", &[&ud[..], &["-an", "uvg"]].concat());
    let (r4, r5, r6, r7, usums_tc) = udm_thin_cache_vg(&d, &e, dir.path());
    let script = r#"set -e
pvcreate -q /dev/vda /dev/vdb
vgcreate -q vg /dev/vda /dev/vdb
lvcreate -q -y -n lin -L 8M vg
lvcreate -q -y -n st -L 16M -i 2 -I 64K vg
lvextend -q -L +8M vg/lin
lvcreate -q -y -n orig -L 8M vg
lvcreate -q -y -n sn -s -L 12M vg/orig
for lv in lin st orig; do
  seq -w 100000000 199999999 | head -c $(blockdev --getsize64 /dev/vg/$lv) > /dev/vg/$lv
done
sync
echo "=== devs"; cat /sys/block/vda/dev /sys/block/vdb/dev
echo "=== table"; dmsetup table
echo "=== info"; dmsetup info -c --noheadings --separator ' ' -o name,uuid,major,minor
echo "=== cksum"; for lv in lin st sn orig; do cksum < /dev/vg/$lv; done
vgchange -an vg >/dev/null
vgck uvg
vgchange -ay uvg >/dev/null
echo "=== utable"; dmsetup table
echo "=== usum"; for lv in lin st orig osn; do cksum < /dev/uvg/$lv; done
echo "=== uinfo"; dmsetup info -c --noheadings --separator ' ' -o name,uuid,major,minor
vgchange -an uvg >/dev/null
echo "=== udevs"; cat /sys/block/vdc/dev /sys/block/vdd/dev
pvcreate -q /dev/vde /dev/vdf
vgcreate -q tv /dev/vde /dev/vdf
lvcreate -q -y -T tv/pool -L 12M
lvcreate -q -y -V 40M -T tv/pool -n thin
lvcreate -q -y -n cvol -L 8M tv /dev/vdf
lvcreate -q -y -n corig -L 8M tv /dev/vde
lvconvert -q -y --type cache --cachevol cvol tv/corig
lvcreate -q -y -n porig -L 8M tv /dev/vde
lvcreate -q -y --type cache-pool -n cpool -L 8M tv /dev/vdf
lvconvert -q -y --type cache --cachepool tv/cpool tv/porig
for lv in thin corig porig; do
  seq -w 300000000 399999999 | head -c 8388608 > /dev/tv/$lv
done
sync
echo "=== ttable"; dmsetup table
echo "=== tinfo"; dmsetup info -c --noheadings --separator ' ' -o name,uuid,major,minor
echo "=== tsum"; for lv in thin corig porig; do head -c 8388608 /dev/tv/$lv | cksum; done
vgchange -an tv >/dev/null
vgck utv
vgchange -ay utv >/dev/null
echo "=== uttable"; dmsetup table
echo "=== utinfo"; dmsetup info -c --noheadings --separator ' ' -o name,uuid,major,minor
echo "=== utsum"; for lv in thin corig; do head -c 8388608 /dev/utv/$lv | cksum; done
vgchange -an utv >/dev/null
echo "=== tdevs"; cat /sys/block/vde/dev /sys/block/vdf/dev /sys/block/vdg/dev /sys/block/vdh/dev
echo "=== end"
"#;
    // Two VGs' worth of lvm2 work under TCG: more than the default 300 s on a busy host.
    let (out, err, code) = udm_testkit::refvm_run_timeout(
        &run,
        &[&r0, &r1, &r2, &r3, &r4, &r5, &r6, &r7],
        None,
        script,
        900,
    );
    assert_eq!(code, 0, "refvm failed:\n{out}\n{err}");
    let mut devs: Vec<&str> = section(&out, "devs").lines().collect();
    devs.extend(section(&out, "udevs").lines());
    let paths = [
        r0.display().to_string(),
        r1.display().to_string(),
        r2.display().to_string(),
        r3.display().to_string(),
    ];
    // dm minors → names, for snapshot tables that refer to their layers.
    let info: Vec<Vec<&str>> = section(&out, "info")
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let uinfo: Vec<Vec<&str>> = section(&out, "uinfo")
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    // Kernel device numbers as udm's tables name them: disks as paths, dm devices as
    // /dev/mapper/NAME (by the minors of the activation the line comes from).
    let host_with = |line: &str, info: &[Vec<&str>]| refvm_host_words(line, &devs, &paths, info);
    let host_form = |line: &str| host_with(line, &info);
    let kernel_tables: Vec<(String, String)> = section(&out, "table")
        .lines()
        .map(|l| {
            let (n, t) = l.split_once(": ").unwrap();
            (n.to_string(), host_form(t))
        })
        .collect();
    let kernel_of = |name: &str| -> String {
        kernel_tables
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, t)| format!("{t}\n"))
            .collect()
    };
    let uuid_of = |name: &str| info.iter().find(|r| r[0] == name).map(|r| r[1]).unwrap();

    // The kernel, with lvm2, activates udm's VG with udm's tables and reads udm's data.
    let utables: Vec<(String, String)> = section(&out, "utable")
        .lines()
        .map(|l| {
            let (n, t) = l.split_once(": ").unwrap();
            (n.to_string(), host_with(t, &uinfo))
        })
        .collect();
    let usums: Vec<&str> = section(&out, "usum").lines().collect();
    for ((name, table, sum), ksum) in udm_side.iter().zip(&usums) {
        let k: String = utables
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, t)| format!("{t}\n"))
            .collect();
        assert_eq!(&k, table, "kernel table of udm's {name}");
        assert_eq!(sum, ksum, "kernel reads udm's data in {name}");
    }
    // udm's snapshot: the kernel loads the stack udm plans, and reads the origin's data in it.
    assert_eq!(usums[2], orig_sum, "origin data");
    assert_eq!(usums[3], orig_sum, "a fresh snapshot reads as its origin");
    let u2 = udm_formats::lvm::ops::ImageFile::open(&r2, false).unwrap();
    let u3 = udm_formats::lvm::ops::ImageFile::open(&r3, false).unwrap();
    let udisks: Vec<&dyn udm_formats::lvm::Disk> = vec![&u2, &u3];
    let ur = udm_formats::lvm::read_vg(&udisks, Some("uvg")).unwrap();
    let udev = |pv: &str| -> Option<String> {
        let i = ur.metadata.vg.pvs.iter().position(|p| p.name == pv)?;
        ur.pv_disks[i].map(|k| paths[2 + k].clone())
    };
    let mapper = |n: &str| format!("/dev/mapper/{n}");
    for dd in udm_formats::lvm::dmplan::plan(
        &ur.metadata.vg,
        "osn",
        &udev,
        udm_formats::lvm::dmplan::Mode::Complete,
        &mapper,
    )
    .unwrap()
    {
        let t: String = dd
            .table
            .iter()
            .map(|l| format!("{} {} {} {}\n", l.start, l.len, l.ttype, l.params))
            .collect();
        let k: String = utables
            .iter()
            .filter(|(n, _)| *n == dd.name)
            .map(|(_, t)| format!("{t}\n"))
            .collect();
        assert_eq!(t, k, "kernel table of udm's {}", dd.name);
        let ku = uinfo.iter().find(|r| r[0] == dd.name).map(|r| r[1]);
        assert_eq!(Some(dd.uuid.as_str()), ku, "{}", dd.name);
    }
    // udm activates the linear and striped LVs lvm2 made through its daemon.
    let both = paths.join(",");
    let o = e.ok("lvchange", &["--devices", &both, "-ay", "vg/lin", "vg/st"]);
    assert_eq!(o, "");
    for name in ["vg-lin", "vg-st"] {
        assert_eq!(e.dm(&["table", name]), kernel_of(name), "{name}");
        let ours = e.dm(&["info", "-c", "--noheadings", "-o", "uuid", name]);
        assert_eq!(ours.trim(), uuid_of(name), "{name}");
    }
    assert!(kernel_of("vg-lin").lines().count() == 2, "two segments");
    let sums: Vec<&str> = section(&out, "cksum").lines().collect();
    for (name, want) in ["vg-lin", "vg-st"].iter().zip(&sums) {
        let c = udm_nbd::NbdClient::connect_unix(&d.nbd_socket, name).unwrap();
        let mut buf = vec![0u8; c.size() as usize];
        c.read(0, &mut buf).unwrap();
        assert_eq!(udm_testkit::dm::cksum(&buf), *want, "data of {name}");
    }
    // The snapshot stack lvm2 loaded, planned from the same metadata.
    let img0 = udm_formats::lvm::ops::ImageFile::open(&r0, false).unwrap();
    let img1 = udm_formats::lvm::ops::ImageFile::open(&r1, false).unwrap();
    let disks: Vec<&dyn udm_formats::lvm::Disk> = vec![&img0, &img1];
    let r = udm_formats::lvm::read_vg(&disks, Some("vg")).unwrap();
    let dev = |pv: &str| -> Option<String> {
        let i = r.metadata.vg.pvs.iter().position(|p| p.name == pv)?;
        r.pv_disks[i].map(|k| paths[k].clone())
    };
    use udm_formats::lvm::dmplan::{plan, Mode};
    let mut planned = Vec::new();
    for lv in ["orig", "sn"] {
        for dd in plan(&r.metadata.vg, lv, &dev, Mode::Complete, &|n| {
            format!("/dev/mapper/{n}")
        })
        .unwrap()
        {
            let t: String = dd
                .table
                .iter()
                .map(|l| format!("{} {} {} {}\n", l.start, l.len, l.ttype, l.params))
                .collect();
            if !planned.iter().any(|(n, _, _)| *n == dd.name) {
                planned.push((dd.name, dd.uuid, t));
            }
        }
    }
    let names: Vec<&str> = planned.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(names, ["vg-orig-real", "vg-orig", "vg-sn-cow", "vg-sn"]);
    for (n, u, t) in &planned {
        assert_eq!(*t, kernel_of(n), "{n}");
        assert_eq!(u, uuid_of(n), "{n}");
    }
    // udm activates lvm2's snapshot (and so its origin) on its snapshot target: the same
    // tables, and the kernel's exception store read back (the snapshot still shows what
    // the origin held before the kernel wrote to it).
    let o = e.ok("lvchange", &["--devices", &both, "-ay", "vg/sn"]);
    assert_eq!(o, "");
    let ours_info = e.dm(&[
        "info",
        "-c",
        "--noheadings",
        "--separator",
        " ",
        "-o",
        "name,major,minor",
    ]);
    let ours: Vec<Vec<&str>> = ours_info
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    for n in ["vg-orig-real", "vg-orig", "vg-sn-cow", "vg-sn"] {
        let t: String = e
            .dm(&["table", n])
            .lines()
            .map(|l| {
                let words: Vec<String> = l
                    .split(' ')
                    .map(
                        |w| match ours.iter().find(|r| format!("{}:{}", r[1], r[2]) == w) {
                            Some(r) => format!("/dev/mapper/{}", r[0]),
                            None => w.to_string(),
                        },
                    )
                    .collect();
                format!("{}\n", words.join(" "))
            })
            .collect();
        assert_eq!(t, kernel_of(n), "udm's live {n}");
    }
    for (name, want) in ["vg-sn", "vg-orig"].iter().zip(&sums[2..]) {
        let c = udm_nbd::NbdClient::connect_unix(&d.nbd_socket, name).unwrap();
        let mut buf = vec![0u8; c.size() as usize];
        c.read(0, &mut buf).unwrap();
        assert_eq!(udm_testkit::dm::cksum(&buf), *want, "data of {name}");
    }
    assert_ne!(
        sums[2], sums[3],
        "the kernel wrote to the origin after the snapshot"
    );
    e.ok("lvchange", &["--devices", &both, "-an", "vg/sn"]);
    assert_eq!(
        e.dm(&["table", "vg-orig"]),
        kernel_of("vg-orig-real"),
        "the origin back on its own table"
    );
    assert_eq!(
        e.ok(
            "lvchange",
            &["--devices", &both, "-an", "vg/lin", "vg/st", "vg/orig"]
        ),
        ""
    );
    assert_eq!(e.dm(&["ls"]), "No devices found\n");
    thin_cache_both_ways(&d, &e, &out, [&r4, &r5, &r6, &r7], &usums_tc);
}

/// Sections of `out` as (name, table) with kernel device numbers as udm names them: the
/// disks `disks` (dev numbers in `devs`) as paths, dm devices as `/dev/mapper/NAME`.
fn kernel_tables(
    out: &str,
    table: &str,
    info: &str,
    devs: &[&str],
    disks: &[String],
) -> Vec<(String, String)> {
    let info: Vec<Vec<&str>> = section(out, info)
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    section(out, table)
        .lines()
        .map(|l| {
            let (n, t) = l.split_once(": ").unwrap();
            (
                n.to_string(),
                refvm_host_words(t.trim_end(), devs, disks, &info),
            )
        })
        .collect()
}

/// udm's own thin pool, thin volume and cache (over a cache volume) on two new images,
/// with data written through udm: (the images for lvm2's VG, udm's images, data sums).
fn udm_thin_cache_vg(
    d: &Daemon,
    e: &UdmCli,
    dir: &std::path::Path,
) -> (PathBuf, PathBuf, PathBuf, PathBuf, Vec<String>) {
    let imgs: Vec<PathBuf> = (4..8)
        .map(|i| udm_testkit::image(dir, &format!("r{i}.img"), 64 << 20))
        .collect();
    let devs = format!("{},{}", imgs[2].display(), imgs[3].display());
    let run = |args: &[&str]| -> String {
        let (cmd, rest) = args.split_first().unwrap();
        e.ok(cmd, &[&["--devices", devs.as_str()][..], rest].concat())
    };
    let (a, b) = (imgs[2].to_str().unwrap(), imgs[3].to_str().unwrap());
    run(&["vgcreate", "utv", a, b]);
    run(&["lvcreate", "-T", "utv/pool", "-L", "12M"]);
    run(&[
        "lvcreate", "-y", "-V", "40M", "-T", "utv/pool", "-n", "thin",
    ]);
    run(&["lvcreate", "-n", "cvol", "-L", "8M", "utv", b]);
    run(&["lvcreate", "-n", "corig", "-L", "8M", "utv", a]);
    run(&[
        "lvconvert",
        "-y",
        "--type",
        "cache",
        "--cachevol",
        "cvol",
        "utv/corig",
    ]);
    let mut sums = Vec::new();
    for (name, seed) in [("utv-thin", 3u64), ("utv-corig", 5)] {
        let c = udm_nbd::NbdClient::connect_unix(&d.nbd_socket, name).unwrap();
        let data: Vec<u8> = (0..8u64 << 20)
            .map(|i| ((i * seed) ^ (i >> 12)) as u8)
            .collect();
        c.write(0, &data, true).unwrap();
        sums.push(udm_testkit::dm::cksum(&data));
    }
    run(&["vgchange", "-an", "utv"]);
    let mut it = imgs.into_iter();
    let mut next = || it.next().unwrap();
    (next(), next(), next(), next(), sums)
}

/// lvm2's thin pool, thin volume and caches (made in refvm, data written by the kernel)
/// activate in udm with the tables lvm2 loaded and the kernel's data; udm's thin pool
/// (metadata formatted by udm's target) and cache pass `vgck` and `thin_check` in refvm and
/// the kernel reads udm's data through them.
fn thin_cache_both_ways(
    d: &Daemon,
    e: &UdmCli,
    out: &str,
    imgs: [&PathBuf; 4],
    udm_sums: &[String],
) {
    let disks: Vec<String> = imgs.iter().map(|p| p.display().to_string()).collect();
    let devs: Vec<&str> = section(out, "tdevs").lines().collect();
    // The kernel reads udm's data through udm's thin volume and cache.
    let ksums: Vec<&str> = section(out, "utsum").lines().collect();
    assert_eq!(ksums.len(), 2);
    for (k, u) in ksums.iter().zip(udm_sums) {
        assert_eq!(
            k.split_whitespace().next(),
            u.split_whitespace().next(),
            "kernel reads udm's data"
        );
    }
    let ut = kernel_tables(out, "uttable", "utinfo", &devs, &disks);
    assert!(
        ut.iter()
            .any(|(n, t)| n == "utv-thin" && t.contains(" thin ")),
        "{ut:?}"
    );
    assert!(ut
        .iter()
        .any(|(n, t)| n == "utv-corig" && t.contains(" cache ")));
    // udm activates lvm2's VG with lvm2's tables and reads the kernel's data.
    let kt = kernel_tables(out, "ttable", "tinfo", &devs, &disks);
    let both = disks.join(",");
    let o = e.ok(
        "lvchange",
        &[
            "--devices",
            &both,
            "-ay",
            "tv/pool",
            "tv/thin",
            "tv/corig",
            "tv/porig",
        ],
    );
    assert_eq!(o, "");
    let mut compared = 0;
    for (name, table) in kt.iter().filter(|(n, _)| n.starts_with("tv-")) {
        assert_eq!(&e.live_table(name, &[]), table, "udm's {name}");
        compared += 1;
    }
    assert!(compared >= 14, "{kt:?}");
    let sums: Vec<&str> = section(out, "tsum").lines().collect();
    for (name, want) in ["tv-thin", "tv-corig", "tv-porig"].iter().zip(&sums) {
        let c = udm_nbd::NbdClient::connect_unix(&d.nbd_socket, name).unwrap();
        let mut buf = vec![0u8; 8 << 20];
        c.read(0, &mut buf).unwrap();
        assert_eq!(
            udm_testkit::dm::cksum(&buf).split_whitespace().next(),
            want.split_whitespace().next(),
            "kernel's data in {name}"
        );
    }
    e.ok("vgchange", &["--devices", &both, "-an", "tv"]);
    assert_eq!(e.dm(&["ls"]), "No devices found\n");
}
