//! `udm lvm pvs/vgs/lvs` (and the `pvs`/`vgs`/`lvs` links) print byte-for-byte what lvm2's
//! reports print for the same PVs (defaults, -o fields, units, separators, segments, JSON): VGs made by lvm2 (full, rounded `<` sizes,
//! linear, striped, multi-segment, an orphan PV) and a VG made by udm's library.

use std::path::{Path, PathBuf};
use std::process::Command;
use udm_formats::lvm::ops::ImageFile;
use udm_formats::lvm::{pvcreate, write_vg, Disk, Metadata, PvcreateOptions, Vg};
use udm_testkit::loopdev::LoopDev;
use udm_testkit::lvm2::{attach_all, loop_pvs, pv_images, Lvm2};

fn udm() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_udm"))
}

/// Run `prog args…`, return (stdout, stderr, exit code).
fn run(prog: &Path, args: &[&str]) -> (String, String, i32) {
    let o = Command::new(prog).args(args).output().expect("spawn");
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        o.status.code().unwrap_or(-1),
    )
}

/// lvm2's stdout for `cmd args…` and udm's for `udm lvm cmd --devices … args…` must match.
fn same(lvm: &Lvm2, devs: &str, cmd: &str, args: &[&str]) -> String {
    let real = lvm.ok(cmd, args);
    let mut a = vec!["lvm", cmd, "--devices", devs];
    a.extend_from_slice(args);
    let (ours, err, code) = run(&udm(), &a);
    assert_eq!(code, 0, "udm lvm {cmd} {args:?}: {err}");
    assert_eq!(ours, real, "udm lvm {cmd} {args:?} differs from lvm2");
    real
}

#[test]
fn lvm2_made_vgs_report_identically() {
    let Some((dir, _imgs, loops, lvm)) = loop_pvs(&[64, 64, 3000, 100, 100]) else {
        return;
    };
    let d: Vec<&str> = loops.iter().map(|l| l.path()).collect();
    lvm.ok("pvcreate", &d);
    lvm.ok("vgcreate", &["vg1", d[0]]);
    lvm.ok("lvcreate", &["-n", "full", "-l", "100%FREE", "vg1"]);
    lvm.ok("vgcreate", &["-s", "1M", "vg2", d[2]]);
    lvm.ok("lvcreate", &["-n", "odd", "-L", "2043M", "vg2"]);
    lvm.ok("vgcreate", &["--addtag", "t", "data", d[3], d[4]]);
    lvm.ok("lvcreate", &["-n", "lin", "-L", "12M", "data"]);
    lvm.ok(
        "lvcreate",
        &[
            "-n",
            "striped_lv",
            "-L",
            "40M",
            "-i",
            "2",
            "-I",
            "64K",
            "data",
        ],
    );
    lvm.ok("lvextend", &["-L", "+20M", "data/lin"]);
    lvm.ok("lvcreate", &["-n", "ro", "-l", "1", "-p", "r", "data"]);
    let devs = d.join(",");
    for cmd in ["pvs", "vgs", "lvs"] {
        let out = same(&lvm, &devs, cmd, &[]);
        assert!(out.lines().count() > 2, "{out}");
        same(&lvm, &devs, cmd, &["--noheadings"]);
    }
    same(&lvm, &devs, "lvs", &["-a"]);
    // Report options: fields, units, suffixes, separators, segments, JSON.
    let variants: &[(&str, &[&str])] = &[
        ("lvs", &["-a", "-o+devices,seg_type,stripes,stripe_size"]),
        ("lvs", &["-o", "lv_name,lv_dm_path,seg_type"]),
        ("lvs", &["--reportformat", "json"]),
        (
            "lvs",
            &[
                "-o+devices",
                "--separator",
                ":",
                "--units",
                "m",
                "--nosuffix",
            ],
        ),
        (
            "lvs",
            &[
                "-o",
                "name,lv_path,lv_tags,seg_start,seg_size,stripe_size",
                "--units",
                "k",
            ],
        ),
        ("lvs", &["--segments"]),
        (
            "lvs",
            &["--segments", "--reportformat", "json", "--units", "s"],
        ),
        (
            "lvs",
            &[
                "-o",
                "lv_full_name,seg_count,lv_uuid,seg_pe_ranges,seg_start_pe,seg_size_pe",
            ],
        ),
        ("pvs", &["-o+pe_start,dev_size,pv_used", "--units", "s"]),
        (
            "pvs",
            &[
                "-o",
                "pv_name,pv_uuid,pv_pe_count,pv_pe_alloc_count,pv_mda_count,pv_ext_vsn",
            ],
        ),
        ("pvs", &["--reportformat", "json", "--units", "H"]),
        (
            "vgs",
            &[
                "-o+vg_extent_size,vg_seqno",
                "--units",
                "b",
                "--nosuffix",
                "--noheadings",
            ],
        ),
        (
            "vgs",
            &[
                "-o",
                "vg_name,vg_uuid,vg_extent_count,vg_free_count,max_lv,vg_tags,vg_fmt",
            ],
        ),
        ("vgs", &["--units", "g", "--separator", ","]),
    ];
    for (cmd, args) in variants {
        same(&lvm, &devs, cmd, args);
    }
    // A VG with a PV missing: lvm2's [unknown] rows, partial attributes and warnings.
    let part = Lvm2::new(&[d[3]]).unwrap();
    for (cmd, args) in [
        ("vgs", &[][..]),
        ("pvs", &[][..]),
        ("lvs", &["-o+devices"][..]),
    ] {
        let out = same(&part, d[3], cmd, args);
        assert!(out.contains("[unknown]") || out.contains("wz-pn-"), "{out}");
    }
    let (_, err, _) = run(&udm(), &["lvm", "vgs", "--devices", d[3]]);
    let real = String::from_utf8_lossy(&part.cmd("vgs", &[]).stderr).into_owned();
    let real: Vec<&str> = real
        .lines()
        .filter(|l| !l.contains("Activation disabled"))
        .collect();
    assert_eq!(err.lines().collect::<Vec<_>>(), real);
    let (_, err, code) = run(&udm(), &["lvm", "lvs", "--devices", &devs, "-o", "nofield"]);
    assert_eq!(code, 3);
    assert!(err.contains("Unrecognised field: nofield"), "{err}");
    same(&lvm, &devs, "lvs", &["data"]);
    same(&lvm, &devs, "lvs", &["data/lin", "vg2"]);
    same(&lvm, &devs, "vgs", &["vg2", "data"]);
    let pvs_some = lvm.ok("pvs", &[d[1], d[3]]);
    let (ours, _, code) = run(&udm(), &["lvm", "pvs", d[1], d[3]]);
    assert_eq!((ours, code), (pvs_some, 0));
    // As a link named `vgs`.
    let link = dir.path().join("vgs");
    std::os::unix::fs::symlink(udm(), &link).unwrap();
    let (ours, _, _) = run(&link, &["--devices", &devs]);
    assert_eq!(ours, lvm.ok("vgs", &[]));
    // Errors as lvm2 words them, with its exit status.
    let (_, err, code) = run(&udm(), &["lvm", "vgs", "--devices", &devs, "nosuch"]);
    assert_eq!(code, 5);
    assert!(err.contains("Volume group \"nosuch\" not found"), "{err}");
    let (_, err, code) = run(&udm(), &["lvm", "lvs"]);
    assert_eq!(code, 5);
    assert!(err.contains("--devices"), "{err}");
}

#[test]
fn udm_made_vg_reports_as_lvm2_does() {
    if !udm_testkit::require_tool("lvm") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let imgs = pv_images(dir.path(), &[200, 200, 200]);
    {
        let mut files: Vec<ImageFile> = imgs
            .iter()
            .map(|p| ImageFile::open(p, true).unwrap())
            .collect();
        let hdrs: Vec<_> = files
            .iter_mut()
            .map(|f| (pvcreate(f, &PvcreateOptions::default()).unwrap(), None))
            .collect();
        let mut vg = Vg::create("vg_data", 8192, &hdrs).unwrap();
        vg.create_lv("db_lv", 10, 1, 0, "h", 1_700_000_000).unwrap();
        vg.create_lv("striped_lv", 30, 3, 128, "h", 1_700_000_000)
            .unwrap();
        vg.create_lv("spill", 60, 1, 0, "h", 1_700_000_000).unwrap();
        let m = Metadata::new(vg, "udm", "h", "Linux h", 1_700_000_000);
        let mut disks: Vec<&mut dyn Disk> = files.iter_mut().map(|f| f as &mut dyn Disk).collect();
        write_vg(&m, &mut disks).unwrap();
    }
    let Some(loops) = attach_all(&imgs) else {
        return;
    };
    let d: Vec<&str> = loops.iter().map(|l| l.path()).collect();
    let lvm = Lvm2::new(&d).unwrap();
    let devs = d.join(",");
    for cmd in ["pvs", "vgs", "lvs"] {
        same(&lvm, &devs, cmd, &[]);
    }
    // The same report from the image files themselves (no loop devices needed by udm).
    let files = imgs
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let (ours, _, code) = run(&udm(), &["lvm", "lvs", "--devices", &files]);
    assert_eq!((ours, code), (lvm.ok("lvs", &[]), 0));
}

/// An LV with one segment of `seg_type` whose keys are given as they appear in metadata.
fn generic_lv(
    name: &str,
    visible: bool,
    extents: u64,
    seg_type: &str,
    body: Vec<(&str, udm_formats::lvm::Value)>,
) -> udm_formats::lvm::Lv {
    let mut status = vec!["READ".to_string(), "WRITE".to_string()];
    if visible {
        status.push("VISIBLE".into());
    }
    udm_formats::lvm::Lv {
        name: name.into(),
        id: udm_formats::lvm::LvmId::random(),
        status,
        flags: vec![],
        tags: vec![],
        creation_time: Some(1_700_000_000),
        creation_host: Some("h".into()),
        segments: vec![udm_formats::lvm::Segment {
            start_extent: 0,
            extent_count: extents,
            seg_type: seg_type.into(),
            body: body
                .into_iter()
                .map(|(k, v)| udm_formats::lvm::Item::pair(k, v))
                .collect(),
        }],
        extra: vec![],
    }
}

#[test]
fn thin_and_snapshot_lvs_report_as_lvm2_does() {
    use udm_formats::lvm::Value;
    if !udm_testkit::require_tool("lvm") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let imgs = pv_images(dir.path(), &[200]);
    {
        let mut f = ImageFile::open(&imgs[0], true).unwrap();
        let hdr = pvcreate(&mut f, &PvcreateOptions::default()).unwrap();
        let mut vg = Vg::create("vgt", 8192, &[(hdr, None)]).unwrap();
        for (n, e) in [
            ("pool_tmeta", 1),
            ("pool_tdata", 10),
            ("lvol0_pmspare", 1),
            ("lin", 5),
            ("snap", 2),
        ] {
            vg.create_lv(n, e, 1, 0, "h", 1_700_000_000).unwrap();
        }
        for l in vg.lvs.iter_mut().filter(|l| l.name != "lin") {
            l.status.retain(|s| s != "VISIBLE");
        }
        vg.lvs.push(generic_lv(
            "pool",
            true,
            10,
            "thin-pool",
            vec![
                ("metadata", Value::str("pool_tmeta")),
                ("pool", Value::str("pool_tdata")),
                ("transaction_id", Value::Int(1)),
                ("chunk_size", Value::Int(128)),
                ("discards", Value::str("passdown")),
                ("zero_new_blocks", Value::Int(1)),
            ],
        ));
        vg.lvs.push(generic_lv(
            "thin1",
            true,
            25,
            "thin",
            vec![
                ("thin_pool", Value::str("pool")),
                ("transaction_id", Value::Int(0)),
                ("device_id", Value::Int(1)),
            ],
        ));
        vg.lvs.push(generic_lv(
            "snapshot0",
            true,
            5,
            "snapshot",
            vec![
                ("chunk_size", Value::Int(8)),
                ("origin", Value::str("lin")),
                ("cow_store", Value::str("snap")),
            ],
        ));
        let m = Metadata::new(vg, "udm", "h", "Linux h", 1_700_000_000);
        write_vg(&m, &mut [&mut f as &mut dyn Disk]).unwrap();
    }
    let Some(lp) = LoopDev::attach(&imgs[0]) else {
        return;
    };
    let lvm = Lvm2::new(&[lp.path()]).unwrap();
    let ck = lvm.cmd("vgck", &["vgt"]);
    assert!(
        ck.status.success(),
        "vgck: {}",
        String::from_utf8_lossy(&ck.stderr)
    );
    for cmd in ["pvs", "vgs", "lvs"] {
        same(&lvm, lp.path(), cmd, &[]);
    }
    let all = same(&lvm, lp.path(), "lvs", &["-a"]);
    same(
        &lvm,
        lp.path(),
        "lvs",
        &["-a", "-o+devices,segtype,data_lv,metadata_lv,chunk_size"],
    );
    same(
        &lvm,
        lp.path(),
        "lvs",
        &["-o", "name,transaction_id,thin_id,pool_lv,origin"],
    );
    assert!(
        all.contains("[pool_tdata]") && all.contains("thin1"),
        "{all}"
    );
}

#[test]
fn pv_with_ignored_metadata_reports_as_lvm2_does() {
    let Some((_dir, _imgs, loops, lvm)) = loop_pvs(&[64, 64]) else {
        return;
    };
    let d: Vec<&str> = loops.iter().map(|l| l.path()).collect();
    lvm.ok("pvcreate", &d);
    lvm.ok("vgcreate", &["vgi", d[0], d[1]]);
    lvm.ok("pvchange", &["--metadataignore", "y", d[1]]);
    lvm.ok("lvcreate", &["-n", "s", "-l", "4", "-i", "2", "vgi"]);
    let devs = d.join(",");
    same(&lvm, &devs, "pvs", &[]);
    same(&lvm, &devs, "vgs", &[]);
    let out = same(&lvm, &devs, "lvs", &["-o+devices"]);
    assert!(out.contains(&format!("{}(0),{}(0)", d[0], d[1])), "{out}");
}

/// The seed walkthrough: `lvcreate -n striped_lv -L 90G -i 3 -I 64K vg_data` over three
/// sparse 40 GiB PVs, then `lvs -o lv_name,lv_dm_path,seg_type` — made by lvm2 and read by
/// udm, and made by udm's library and read by lvm2.
#[test]
fn seed_striped_walkthrough_both_ways() {
    if !udm_testkit::require_tool("lvm") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let by_lvm = pv_images(dir.path(), &[40 << 10, 40 << 10, 40 << 10]);
    let sub = dir.path().join("udm");
    std::fs::create_dir(&sub).unwrap();
    let by_udm = pv_images(&sub, &[40 << 10, 40 << 10, 40 << 10]);
    {
        let mut files: Vec<ImageFile> = by_udm
            .iter()
            .map(|p| ImageFile::open(p, true).unwrap())
            .collect();
        let hdrs: Vec<_> = files
            .iter_mut()
            .map(|f| (pvcreate(f, &PvcreateOptions::default()).unwrap(), None))
            .collect();
        let mut vg = Vg::create("vg_data", 8192, &hdrs).unwrap();
        // 90 GiB in 4 MiB extents, 3 stripes of 64 KiB (128 sectors).
        vg.create_lv("striped_lv", 90 * 256, 3, 128, "h", 1_700_000_000)
            .unwrap();
        let m = Metadata::new(vg, "udm", "h", "Linux h", 1_700_000_000);
        let mut disks: Vec<&mut dyn Disk> = files.iter_mut().map(|f| f as &mut dyn Disk).collect();
        write_vg(&m, &mut disks).unwrap();
    }
    for (made_by_lvm, imgs) in [(true, &by_lvm), (false, &by_udm)] {
        let Some(loops) = attach_all(imgs) else {
            return;
        };
        let d: Vec<&str> = loops.iter().map(|l| l.path()).collect();
        let lvm = Lvm2::new(&d).unwrap();
        if made_by_lvm {
            lvm.ok("pvcreate", &d);
            lvm.ok("vgcreate", &[&["vg_data"][..], &d].concat());
            lvm.ok(
                "lvcreate",
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
        } else {
            assert!(lvm.cmd("vgck", &["vg_data"]).status.success());
        }
        let devs = d.join(",");
        let out = same(&lvm, &devs, "lvs", &["-o", "lv_name,lv_dm_path,seg_type"]);
        let dm_path = "/dev/mapper/vg_data-striped_lv";
        assert_eq!(
            out,
            format!(
                "  LV         {:<30} Type   \n  striped_lv {dm_path} striped\n",
                "DMPath"
            )
        );
        let out = same(&lvm, &devs, "lvs", &["-o+devices,stripes,stripe_size"]);
        assert!(out.contains(" 90.00g ") && out.contains("64.00k"), "{out}");
        same(&lvm, &devs, "vgs", &[]);
        same(&lvm, &devs, "pvs", &[]);
    }
}
