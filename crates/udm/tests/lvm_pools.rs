//! Thin pools, thin volumes, caches and snapshot merges made by `udm lvm` on loop devices
//! with a running daemon: real lvm2 reads udm's metadata and reports it as udm does (`lvs`,
//! `lvscan`, `lvdisplay`, `vgck`), the live devices have the tables real lvm2 loaded for
//! the same commands in refvm (`udm-formats/tests/data/lvm2_thin_cache.tables`), data goes
//! through them, and a merged snapshot's data ends in its origin.

use std::path::PathBuf;
use udm_testkit::lvm2::{assert_same_lvs, loop_pvs, lv_section, LvmRig};
use udm_testkit::udmcli::UdmCli;
use udm_testkit::Daemon;

fn udm() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_udm"))
}

const NOACT: &str = "global{activation=0}";

/// `NAME UUID: TABLE` lines of the lvm2 fixture.
fn lvm2_tables() -> Vec<(String, String, String)> {
    udm_testkit::udmcli::fixture_tables(include_str!(
        "../../udm-formats/tests/data/lvm2_thin_cache.tables"
    ))
}

/// As lvm2 did for the fixtures: 8 MiB `vg/corig` (on `d[0]`) cached by the cache volume
/// `vg/cvol` (on `d[1]`), and 8 MiB `vg/porig` cached by the cache pool `vg/cpool`; `y`
/// goes to the plain lvcreates. Returns what caching `corig` printed.
fn caches(run: &dyn Fn(&str, &[&str]) -> String, d: &[&str], y: &[&str]) -> String {
    let lvcreate = |args: &[&str]| run("lvcreate", &[y, args].concat());
    lvcreate(&["-n", "cvol", "-L", "8M", "vg", d[1]]);
    lvcreate(&["-n", "corig", "-L", "8M", "vg", d[0]]);
    let cached = run(
        "lvconvert",
        &["-y", "--type", "cache", "--cachevol", "cvol", "vg/corig"],
    );
    lvcreate(&["-n", "porig", "-L", "8M", "vg", d[0]]);
    run(
        "lvcreate",
        &[
            "-y",
            "--type",
            "cache-pool",
            "-n",
            "cpool",
            "-L",
            "8M",
            "vg",
            d[1],
        ],
    );
    run(
        "lvconvert",
        &[
            "-y",
            "--type",
            "cache",
            "--cachepool",
            "vg/cpool",
            "vg/porig",
        ],
    );
    cached
}

/// The commands lvm2 ran in refvm for the fixture, run by udm on the same PV sizes: the
/// same devices with the same tables (UUIDs differ only in their ids), lvm2's reports of
/// udm's metadata equal udm's, data goes through the thin and cached LVs, and removing the
/// thin volume deletes it from its pool (transaction 2).
#[test]
fn thin_and_cache_lvs_match_lvm2() {
    let Some(rig) = LvmRig::start(&[64, 64], &udm()) else {
        return;
    };
    let (lvm, daemon, e) = (&rig.lvm, &rig.daemon, &rig.e);
    let d = rig.paths();
    let run = |cmd: &str, args: &[&str]| rig.run(cmd, args);
    run("vgcreate", &["vg", d[0], d[1]]);
    assert_eq!(
        run("lvcreate", &["-T", "vg/pool", "-L", "12M"]),
        "  Thin pool volume with chunk size 64.00 KiB can address at most <15.88 TiB of data.\n  Logical volume \"pool\" created.\n"
    );
    assert_eq!(
        run(
            "lvcreate",
            &["-y", "-V", "40M", "-T", "vg/pool", "-n", "thin"]
        ),
        "  Logical volume \"thin\" created.\n"
    );
    run("lvcreate", &["-n", "lin", "-L", "8M", "vg"]);
    assert_eq!(
        caches(&run, &d, &[]),
        "  Logical volume vg/corig is now cached.\n"
    );
    run("lvcreate", &["-y", "--thinpool", "tp2", "-L", "8M", "vg"]);
    // Every device lvm2 loaded, with lvm2's table; UUIDs with lvm2's layer suffixes.
    let fixture = lvm2_tables();
    let ls = e.dm(&["ls"]);
    assert_eq!(ls.lines().count(), fixture.len(), "{ls}");
    for (name, uuid, table) in &fixture {
        assert_eq!(&e.live_table(name, &d), table, "{name}");
        let ours = e.uuid_of(name);
        let suffix = |u: &str| u.get(68..).unwrap_or("").to_string();
        assert_eq!(suffix(&ours), suffix(uuid), "{name}: {ours} vs {uuid}");
        assert!(
            ours.starts_with("LVM-") && ours.len() == uuid.len(),
            "{ours}"
        );
    }
    // lvm2 reads udm's metadata and shows what udm shows.
    lvm.ok("vgck", &["vg"]);
    let fields =
        "lv_name,lv_attr,lv_size,seg_type,devices,chunk_size,pool_lv,origin,data_lv,metadata_lv";
    for (cmd, args) in [
        ("lvs", vec!["-a", "-o", fields]),
        ("lvscan", vec!["-a"]),
        ("lvdisplay", vec!["-a"]),
        ("vgdisplay", vec![]),
    ] {
        let want = lvm.ok(cmd, &args);
        let mut a = args.clone();
        a.extend(["--config", NOACT]);
        assert_eq!(run(cmd, &a), want, "{cmd}");
    }
    // Data through the thin volume (beyond the pool's size: overprovisioned) and caches.
    for (name, len) in [
        ("vg-thin", 8u64 << 20),
        ("vg-corig", 8 << 20),
        ("vg-porig", 8 << 20),
    ] {
        let c = udm_nbd::NbdClient::connect_unix(&daemon.nbd_socket, name).unwrap();
        let data: Vec<u8> = (0..len).map(|i| ((i * 31) ^ (i >> 11)) as u8).collect();
        c.write(0, &data, true).unwrap();
        let mut back = vec![0u8; len as usize];
        c.read(0, &mut back).unwrap();
        assert!(back == data, "{name} reads back what was written");
    }
    // Removing the thin volume deletes it in the pool: transaction 2, no mapped blocks.
    assert_eq!(
        run("lvremove", &["-y", "vg/thin"]),
        "  Logical volume \"thin\" successfully removed.\n"
    );
    let st = e.dm(&["status", "vg-pool-tpool"]);
    let w: Vec<&str> = st.split_whitespace().collect();
    assert_eq!(w[3], "2", "transaction id: {st}");
    let tid = lvm.ok("lvs", &["--noheadings", "-o", "transaction_id", "vg/pool"]);
    assert_eq!(tid.trim(), "2");
    lvm.ok("vgck", &["vg"]);
    run("vgchange", &["-an", "vg"]);
    assert_eq!(e.dm(&["ls"]), "No devices found\n");
}

/// `lvconvert --merge` of a snapshot: with the origin inactive it waits for the next
/// activation (lvm2's metadata and words); with the origin active the merge runs to its end
/// at once: the origin holds the snapshot's data, the snapshot and its layers are gone, and
/// lvm2 accepts the result.
#[test]
fn snapshot_merge_as_lvm2() {
    let Some((dir, _imgs, loops, lvm)) = loop_pvs(&[64]) else {
        return;
    };
    let d: Vec<&str> = loops.iter().map(|l| l.path()).collect();
    let daemon = Daemon::start(&udm());
    let e = UdmCli::on(udm(), &daemon, dir.path().join("state"));
    let run = |cmd: &str, args: &[&str]| -> String {
        e.ok(cmd, &[&["--devices", d[0]][..], args].concat())
    };
    run("vgcreate", &["vg", d[0]]);
    run("lvcreate", &["-n", "lin", "-L", "8M", "vg"]);
    let len = 8usize << 20;
    let before: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let c = udm_nbd::NbdClient::connect_unix(&daemon.nbd_socket, "vg-lin").unwrap();
    c.write(0, &before, true).unwrap();
    drop(c);
    run("lvcreate", &["-n", "sn", "-s", "-L", "4M", "vg/lin"]);
    // The origin changes after the snapshot.
    let c = udm_nbd::NbdClient::connect_unix(&daemon.nbd_socket, "vg-lin").unwrap();
    c.write(4096 * 3, &[0xee; 65536], true).unwrap();
    drop(c);
    // Metadata only first: lvm2 shows the merging snapshot as udm does.
    run("vgchange", &["-an", "vg"]);
    assert_eq!(
        run("lvconvert", &["--merge", "vg/sn", "--config", NOACT]),
        "  Merging of snapshot vg/sn will occur on next activation of vg/lin.\n"
    );
    lvm.ok("vgck", &["vg"]);
    let want = lvm.ok("lvs", &["-a", "-o", "lv_name,lv_attr,origin,lv_size"]);
    assert_eq!(
        run(
            "lvs",
            &[
                "-a",
                "-o",
                "lv_name,lv_attr,origin,lv_size",
                "--config",
                NOACT
            ]
        ),
        want
    );
    // Activating the origin loads snapshot-merge over its -real and the -cow.
    run("vgchange", &["-ay", "vg"]);
    let t = e.dm(&["table", "vg-lin"]);
    assert!(t.contains(" snapshot-merge "), "{t}");
    // Running lvconvert again on the active origin follows the merge to its end.
    assert_eq!(
        run("lvconvert", &["--merge", "vg/sn"]),
        "  Merging of volume vg/sn started.\n  vg/lin: Merged: 100.00%\n"
    );
    let names = |e: &UdmCli| -> Vec<String> {
        e.dm(&["ls"])
            .lines()
            .map(|l| l.split('\t').next().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&e), ["vg-lin"]);
    let t = e.dm(&["table", "vg-lin"]);
    assert!(t.contains(" linear "), "{t}");
    let c = udm_nbd::NbdClient::connect_unix(&daemon.nbd_socket, "vg-lin").unwrap();
    let mut back = vec![0u8; len];
    c.read(0, &mut back).unwrap();
    assert!(back == before, "the origin holds the snapshot's data again");
    drop(c);
    lvm.ok("vgck", &["vg"]);
    let lvs = lvm.ok("lvs", &["-a", "--noheadings", "-o", "lv_name"]);
    assert_eq!(lvs.trim(), "lin");
    // And at once when the origin is active from the start.
    run("lvcreate", &["-n", "sn2", "-s", "-L", "4M", "vg/lin"]);
    let c = udm_nbd::NbdClient::connect_unix(&daemon.nbd_socket, "vg-lin").unwrap();
    c.write(0, &[0x11; 8192], true).unwrap();
    drop(c);
    assert_eq!(
        run("lvconvert", &["--merge", "vg/sn2"]),
        "  Merging of volume vg/sn2 started.\n  vg/lin: Merged: 100.00%\n"
    );
    let c = udm_nbd::NbdClient::connect_unix(&daemon.nbd_socket, "vg-lin").unwrap();
    c.read(0, &mut back).unwrap();
    assert!(back == before, "merged back again");
    assert_eq!(names(&e), ["vg-lin"]);
}

/// The commands lvm2 ran in refvm for `lvm2_thin_snap.*`, run by udm: a thin snapshot
/// (`create_snap` in the pool, flagged to skip activation until `-K`) and a thin volume over
/// a read-only external origin get lvm2's metadata (equal but for ids and times), lvm2's
/// tables, and lvm2 reports them as udm does; the snapshot keeps the data of its moment,
/// the external-origin volume reads its origin's data.
#[test]
fn thin_snapshot_and_external_origin_as_lvm2() {
    let Some(rig) = LvmRig::start(&[64, 64], &udm()) else {
        return;
    };
    let (dir, lvm, daemon, e) = (&rig.dir, &rig.lvm, &rig.daemon, &rig.e);
    let d = rig.paths();
    let run = |cmd: &str, args: &[&str]| rig.run(cmd, args);
    let fill = |name: &str, seed: u64, len: u64| -> Vec<u8> {
        let c = udm_nbd::NbdClient::connect_unix(&daemon.nbd_socket, name).unwrap();
        let data: Vec<u8> = (0..len).map(|i| ((i * seed) ^ (i >> 10)) as u8).collect();
        c.write(0, &data, true).unwrap();
        data
    };
    let read = |name: &str, len: u64| -> Vec<u8> {
        let c = udm_nbd::NbdClient::connect_unix(&daemon.nbd_socket, name).unwrap();
        let mut b = vec![0u8; len as usize];
        c.read(0, &mut b).unwrap();
        b
    };
    run("vgcreate", &["vg", d[0], d[1]]);
    run("lvcreate", &["-T", "vg/pool", "-L", "12M"]);
    run(
        "lvcreate",
        &["-y", "-V", "40M", "-T", "vg/pool", "-n", "thin"],
    );
    let a = fill("vg-thin", 7, 4 << 20);
    assert_eq!(
        run("lvcreate", &["-y", "-s", "vg/thin", "-n", "tsnap"]),
        "  Logical volume \"tsnap\" created.\n"
    );
    let b = fill("vg-thin", 11, 4 << 20);
    run("lvcreate", &["-y", "-n", "ro", "-L", "8M", "vg"]);
    let c = fill("vg-ro", 13, 8 << 20);
    run("lvchange", &["-an", "vg/ro"]);
    assert_eq!(
        run("lvchange", &["-pr", "vg/ro"]),
        "  Logical volume vg/ro changed.\n"
    );
    assert_eq!(
        run(
            "lvcreate",
            &["-y", "-s", "--thinpool", "vg/pool", "vg/ro", "-n", "ext"]
        ),
        "  Logical volume \"ext\" created.\n"
    );
    // The snapshot is skipped by activation unless -K.
    run("lvchange", &["-ay", "vg/tsnap"]);
    assert!(!e.dm(&["ls"]).contains("vg-tsnap"));
    run("lvchange", &["-ay", "-K", "vg/tsnap"]);
    // lvm2's metadata and tables.
    let backup = dir.path().join("vg.txt");
    run("vgcfgbackup", &["-f", backup.to_str().unwrap(), "vg"]);
    let ours = lv_section(&std::fs::read_to_string(&backup).unwrap());
    let theirs = lv_section(include_str!(
        "../../udm-formats/tests/data/lvm2_thin_snap.vg"
    ));
    assert_same_lvs(&ours, &theirs);
    let fixture = udm_testkit::udmcli::fixture_tables(include_str!(
        "../../udm-formats/tests/data/lvm2_thin_snap.tables"
    ));
    let ls = e.dm(&["ls"]);
    assert_eq!(ls.lines().count(), fixture.len(), "{ls}");
    for (name, uuid, table) in &fixture {
        assert_eq!(&e.live_table(name, &d), table, "{name}");
        let suffix = |u: &str| u.get(68..).unwrap_or("").to_string();
        assert_eq!(suffix(&e.uuid_of(name)), suffix(uuid), "{name}");
    }
    lvm.ok("vgck", &["vg"]);
    let fields = "lv_name,lv_attr,lv_size,pool_lv,origin,thin_id,transaction_id,seg_type";
    let want = lvm.ok("lvs", &["-a", "-o", fields]);
    assert_eq!(run("lvs", &["-a", "-o", fields, "--config", NOACT]), want);
    // The snapshot holds the data of its moment, the volume the new data, the
    // external-origin volume its origin's.
    assert!(read("vg-tsnap", 4 << 20) == a, "snapshot data");
    assert!(read("vg-thin", 4 << 20) == b, "origin data");
    assert!(read("vg-ext", 8 << 20) == c, "external origin data");
    run("vgchange", &["-an", "vg"]);
    assert_eq!(e.dm(&["ls"]), "No devices found\n");
}

/// The resizes and cache splits lvm2 ran in refvm for `lvm2_resize.*`, run by udm on live
/// LVs: a thin pool's data and metadata grow (with its spare), a thin volume grows and
/// shrinks, a cache over a cache pool grows through its origin then is split, a cache over
/// a cache volume is uncached. The metadata is lvm2's (but for ids and times), the live
/// tables are the ones lvm2 left, lvm2 reports udm's VG as udm does, the messages are
/// lvm2's, and the data written before survives.
#[test]
fn resizes_and_cache_splits_as_lvm2() {
    let Some(rig) = LvmRig::start(&[64, 64], &udm()) else {
        return;
    };
    let (dir, lvm, daemon, e) = (&rig.dir, &rig.lvm, &rig.daemon, &rig.e);
    let d = rig.paths();
    let run = |cmd: &str, args: &[&str]| rig.run(cmd, args);
    let nbd = |name: &str| udm_nbd::NbdClient::connect_unix(&daemon.nbd_socket, name).unwrap();
    run("vgcreate", &["vg", d[0], d[1]]);
    run("lvcreate", &["-T", "vg/pool", "-L", "12M"]);
    run(
        "lvcreate",
        &["-y", "-V", "40M", "-T", "vg/pool", "-n", "thin"],
    );
    caches(&run, &d, &["-y"]);
    let mut data = Vec::new();
    for (name, seed) in [("vg-thin", 3u64), ("vg-corig", 5), ("vg-porig", 9)] {
        let v: Vec<u8> = (0..8u64 << 20)
            .map(|i| ((i * seed) ^ (i >> 11)) as u8)
            .collect();
        nbd(name).write(0, &v, true).unwrap();
        data.push((name, v));
    }
    let steps: [(&str, &[&str], &str); 7] = [
        ("lvextend", &["-L+8M", "vg/pool"],
         "  Size of logical volume vg/pool_tdata changed from 12.00 MiB (3 extents) to 20.00 MiB (5 extents).\n  Logical volume vg/pool successfully resized.\n"),
        ("lvextend", &["--poolmetadatasize", "+4M", "vg/pool"],
         "  Size of logical volume vg/pool_tmeta changed from 4.00 MiB (1 extents) to 8.00 MiB (2 extents).\n  Logical volume vg/pool_tmeta successfully resized.\n"),
        ("lvextend", &["-L+8M", "vg/thin"],
         "  Size of logical volume vg/thin changed from 40.00 MiB (10 extents) to 48.00 MiB (12 extents).\n  Logical volume vg/thin successfully resized.\n"),
        ("lvreduce", &["-y", "-L-8M", "vg/thin"],
         "  Size of logical volume vg/thin changed from 48.00 MiB (12 extents) to 40.00 MiB (10 extents).\n  Logical volume vg/thin successfully resized.\n"),
        ("lvextend", &["-L+4M", "vg/porig"],
         "  Size of logical volume vg/porig_corig changed from 8.00 MiB (2 extents) to 12.00 MiB (3 extents).\n  Logical volume vg/porig successfully resized.\n"),
        ("lvconvert", &["-y", "--splitcache", "vg/porig"],
         "  Logical volume vg/porig is not cached and vg/cpool is unused.\n"),
        ("lvconvert", &["-y", "--uncache", "vg/corig"],
         "  Logical volume \"cvol\" successfully removed.\n  Logical volume vg/corig is not cached and vg/cvol is removed.\n"),
    ];
    for (cmd, args, want) in steps {
        assert_eq!(run(cmd, args), want, "{cmd} {args:?}");
    }
    let backup = dir.path().join("vg.txt");
    run("vgcfgbackup", &["-f", backup.to_str().unwrap(), "vg"]);
    assert_same_lvs(
        &lv_section(&std::fs::read_to_string(&backup).unwrap()),
        &lv_section(include_str!("../../udm-formats/tests/data/lvm2_resize.vg")),
    );
    let text = include_str!("../../udm-formats/tests/data/lvm2_resize.tables");
    let mut want: Vec<(String, String)> = Vec::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let (n, t) = l.split_once(": ").unwrap();
        match want.iter_mut().find(|w| w.0 == n) {
            Some(w) => w.1 = format!("{}\n{t}", w.1),
            None => want.push((n.to_string(), t.to_string())),
        }
    }
    let ls = e.dm(&["ls"]);
    assert_eq!(ls.lines().count(), want.len(), "{ls}");
    for (n, t) in &want {
        assert_eq!(&e.live_table(n, &d), t, "{n}");
    }
    lvm.ok("vgck", &["vg"]);
    let fields = "lv_name,lv_attr,lv_size,seg_type,devices,data_lv,metadata_lv";
    let w = lvm.ok("lvs", &["-a", "-o", fields]);
    assert_eq!(run("lvs", &["-a", "-o", fields, "--config", NOACT]), w);
    for (name, v) in &data {
        let mut back = vec![0u8; v.len()];
        nbd(name).read(0, &mut back).unwrap();
        assert!(&back == v, "{name} keeps its data");
    }
    run("vgchange", &["-an", "vg"]);
    assert_eq!(e.dm(&["ls"]), "No devices found\n");
}
