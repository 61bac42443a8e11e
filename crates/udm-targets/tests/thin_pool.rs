//! thin-pool behaviour in process: out of data space (queue until the pool grows by reload,
//! queue until the no-space timeout, error_if_no_space), the data and metadata low-water
//! events, metadata
//! growth by reload, partial writes zeroing the rest of a new block (and not with
//! skip_block_zeroing), external origins, block status holes, constructor and message
//! errors, and `targets` listing as the kernel after loading the module.

use std::sync::Arc;
use std::time::{Duration, Instant};
use udm_core::{Registry, TargetTypes};
use udm_io::device::Extent;
use udm_io::{BlockDevice, Sectors};
use udm_targets::thin::{ThinPoolType, ThinType};
use udm_testkit::dm::{create, message, open, read, reg, sel, status, table, write};
use udm_testkit::thin::PoolFiles;

const BS: u64 = 128;
const BLOCK: usize = (BS * 512) as usize;

fn reg_timeout(t: Duration) -> Registry {
    let types = TargetTypes::new();
    udm_targets::register_builtin(&types);
    types.register(Arc::new(ThinType));
    types.register(Arc::new(ThinPoolType {
        no_space_timeout: t,
    }));
    udm_testkit::dm::reg_with(types)
}

fn pool_field(reg: &Registry, i: usize) -> String {
    status(reg, "pool")
        .split(' ')
        .nth(3 + i)
        .unwrap()
        .to_string()
}

/// Poll `f` (up to 20 s) until it is true.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn setup(reg: &Registry, files: &PoolFiles, extra: &str, thin_blocks: u64) -> Arc<dyn BlockDevice> {
    create(reg, "pool", &files.table(extra)).unwrap();
    message(reg, "pool", "create_thin 1").unwrap();
    create(
        reg,
        "thin",
        &format!("0 {} thin /dev/mapper/pool 1", thin_blocks * BS),
    )
    .unwrap();
    reg.open(&sel("thin")).unwrap().0
}

fn block(fill: u8) -> Vec<u8> {
    vec![fill; BLOCK]
}

#[test]
fn queue_until_the_pool_grows_by_reload() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = PoolFiles::new(dir.path(), 4, BS, 4);
    let reg = reg();
    let thin = setup(&reg, &files, "0", 16);
    for b in 0..4 {
        write(thin.as_ref(), b * BS, &block(b as u8 + 1)).unwrap();
    }
    assert_eq!(pool_field(&reg, 2), "4/4");
    let t2 = thin.clone();
    let pending = std::thread::spawn(move || write(t2.as_ref(), 9 * BS, &block(0x99)));
    eventually("out_of_data_space", || {
        pool_field(&reg, 4) == "out_of_data_space"
    });
    assert!(
        !pending.is_finished(),
        "the write must be queued, not failed"
    );
    // Grow the data device and reload the pool with the new length.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&files.data)
        .unwrap()
        .set_len(8 * BLOCK as u64)
        .unwrap();
    files.data_blocks = 8;
    let lines = udm_core::parse_table_text(&files.table("0")).unwrap();
    reg.load(&sel("pool"), &lines, false).unwrap();
    reg.resume(&sel("pool")).unwrap();
    pending.join().unwrap().unwrap();
    assert_eq!(read(thin.as_ref(), 9 * BS, BLOCK).unwrap(), block(0x99));
    assert_eq!(pool_field(&reg, 2), "5/8");
    assert_eq!(pool_field(&reg, 4), "rw");
    for b in 0..4 {
        assert_eq!(
            read(thin.as_ref(), b * BS, BLOCK).unwrap(),
            block(b as u8 + 1)
        );
    }
}

#[test]
fn error_if_no_space_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let files = PoolFiles::new(dir.path(), 4, BS, 2);
    let reg = reg();
    let thin = setup(&reg, &files, "0 1 error_if_no_space", 8);
    write(thin.as_ref(), 0, &block(1)).unwrap();
    write(thin.as_ref(), BS, &block(2)).unwrap();
    assert_eq!(
        write(thin.as_ref(), 2 * BS, &block(3)),
        Err(udm_io::IoError::NoSpace)
    );
    let st = status(&reg, "pool");
    assert!(
        st.ends_with("2/2 - out_of_data_space discard_passdown error_if_no_space - 256 \n"),
        "{st}"
    );
    // Overwriting a provisioned block still works.
    write(thin.as_ref(), 0, &block(7)).unwrap();
    assert_eq!(read(thin.as_ref(), 0, BLOCK).unwrap(), block(7));
}

#[test]
fn queued_io_fails_after_the_no_space_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let files = PoolFiles::new(dir.path(), 4, BS, 1);
    let reg = reg_timeout(Duration::from_millis(300));
    let thin = setup(&reg, &files, "0", 8);
    write(thin.as_ref(), 0, &block(1)).unwrap();
    let r = write(thin.as_ref(), BS, &block(2));
    assert_eq!(r, Err(udm_io::IoError::NoSpace));
    // After the timeout the pool errors instead of queueing (as the kernel switches).
    assert_eq!(pool_field(&reg, 6), "error_if_no_space");
}

#[test]
fn low_water_mark_raises_one_event() {
    let dir = tempfile::tempdir().unwrap();
    let files = PoolFiles::new(dir.path(), 4, BS, 8);
    let reg = reg();
    let thin = setup(&reg, &files, "3", 8);
    let ev = || reg.info(&sel("pool"), false).unwrap().event_nr;
    let e0 = ev();
    for b in 0..4 {
        write(thin.as_ref(), b * BS, &block(1)).unwrap();
        assert_eq!(ev(), e0, "free {} > low water 3: no event", 8 - b - 1);
    }
    write(thin.as_ref(), 4 * BS, &block(1)).unwrap();
    assert_eq!(ev(), e0 + 1, "free 3 <= low water 3");
    write(thin.as_ref(), 5 * BS, &block(1)).unwrap();
    assert_eq!(ev(), e0 + 1, "edge-triggered: once until resume");
}

/// Free metadata blocks as the pool status shows them (used counts the reserve in).
fn meta_free(reg: &Registry) -> u64 {
    let f = pool_field(reg, 1);
    let (used, total) = f.split_once('/').unwrap();
    let (used, total): (u64, u64) = (used.parse().unwrap(), total.parse().unwrap());
    total - used + (total / 10).min(4096)
}

#[test]
fn metadata_low_water_raises_one_event_per_crossing() {
    let dir = tempfile::tempdir().unwrap();
    let files = PoolFiles::new(dir.path(), 1, BS, 8);
    let reg = reg();
    let _thin = setup(&reg, &files, "0", 8);
    // 256 metadata blocks: the mark is a quarter of them (4 MiB would be 1024 blocks).
    assert_eq!(pool_field(&reg, 8), "64");
    let ev = || reg.info(&sel("pool"), false).unwrap().event_nr;
    let e0 = ev();
    // Every thin device takes a metadata block for its mapping tree.
    let mut id = 2;
    let create_until = |limit: u64, id: &mut u64| {
        while meta_free(&reg) > limit {
            message(&reg, "pool", &format!("create_thin {id}")).unwrap();
            *id += 1;
            if meta_free(&reg) > 64 + 8 {
                assert_eq!(ev(), e0, "free {} well above 64: no event", meta_free(&reg));
            }
        }
    };
    create_until(64, &mut id);
    assert_eq!(ev(), e0 + 1, "free {} <= 64", meta_free(&reg));
    create_until(40, &mut id);
    assert_eq!(ev(), e0 + 1, "edge-triggered: once while below");
    // Growing the metadata device (2 MiB: mark 128) leaves it well above the mark; the
    // next allocations re-arm it and the next crossing raises one event.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&files.meta)
        .unwrap()
        .set_len(2 << 20)
        .unwrap();
    let lines = udm_core::parse_table_text(&files.table("0")).unwrap();
    reg.load(&sel("pool"), &lines, false).unwrap();
    reg.resume(&sel("pool")).unwrap();
    assert_eq!(pool_field(&reg, 8), "128");
    let e1 = ev();
    let free = meta_free(&reg);
    assert!(free > 200, "{free}");
    message(&reg, "pool", &format!("create_thin {id}")).unwrap();
    id += 1;
    assert_eq!(ev(), e1, "free {} > 128: no event", meta_free(&reg));
    while meta_free(&reg) > 128 {
        message(&reg, "pool", &format!("create_thin {id}")).unwrap();
        id += 1;
    }
    assert_eq!(ev(), e1 + 1, "second crossing, free {}", meta_free(&reg));
    udm_testkit::thin::thin_check(&files.meta).unwrap();
}

#[test]
fn metadata_grows_by_reload() {
    let dir = tempfile::tempdir().unwrap();
    let files = PoolFiles::new(dir.path(), 1, BS, 8);
    let reg = reg();
    let _thin = setup(&reg, &files, "0", 8);
    assert!(
        pool_field(&reg, 1).ends_with("/256"),
        "{}",
        status(&reg, "pool")
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&files.meta)
        .unwrap()
        .set_len(2 << 20)
        .unwrap();
    let lines = udm_core::parse_table_text(&files.table("0")).unwrap();
    reg.load(&sel("pool"), &lines, false).unwrap();
    reg.resume(&sel("pool")).unwrap();
    assert!(
        pool_field(&reg, 1).ends_with("/512"),
        "{}",
        status(&reg, "pool")
    );
    udm_testkit::thin::thin_check(&files.meta).unwrap();
}

#[test]
fn partial_writes_zero_the_rest_unless_skipped() {
    for (extra, zeroed) in [("0", true), ("0 1 skip_block_zeroing", false)] {
        let dir = tempfile::tempdir().unwrap();
        let files = PoolFiles::new(dir.path(), 4, BS, 4);
        // Old contents on the data device that a new block must not show.
        std::fs::write(&files.data, vec![0xEE; 4 * BLOCK]).unwrap();
        let reg = reg();
        let thin = setup(&reg, &files, extra, 8);
        write(thin.as_ref(), 8, &[0x11; 4096]).unwrap();
        let got = read(thin.as_ref(), 0, BLOCK).unwrap();
        assert_eq!(&got[4096..8192], &[0x11; 4096][..]);
        let rest_zero = got[..4096].iter().chain(&got[8192..]).all(|&b| b == 0);
        assert_eq!(rest_zero, zeroed, "{extra}");
    }
}

#[test]
fn external_origin_supplies_unprovisioned_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let files = PoolFiles::new(dir.path(), 4, BS, 8);
    // The origin covers 2.5 blocks.
    let origin = dir.path().join("origin.img");
    let odata: Vec<u8> = (0..BLOCK * 5 / 2).map(|i| (i % 251) as u8).collect();
    std::fs::write(&origin, &odata).unwrap();
    let reg = reg();
    create(&reg, "pool", &files.table("0")).unwrap();
    message(&reg, "pool", "create_thin 3").unwrap();
    let t = format!("0 {} thin /dev/mapper/pool 3 {}", 4 * BS, origin.display());
    create(&reg, "thin", &t).unwrap();
    assert_eq!(
        table(&reg, "thin"),
        format!("{t}\n").replace("/dev/mapper/pool", "253:0")
    );
    let (thin, _g) = open(&reg, "thin");
    let mut want = odata.clone();
    want.resize(4 * BLOCK, 0);
    assert!(read(thin.as_ref(), 0, 4 * BLOCK).unwrap() == want);
    // A partial write into block 2 copies what the origin has of it, zeroes the rest.
    write(thin.as_ref(), 2 * BS + 8, &[0x5A; 512]).unwrap();
    want[2 * BLOCK + 4096..2 * BLOCK + 4608].fill(0x5A);
    assert!(read(thin.as_ref(), 0, 4 * BLOCK).unwrap() == want);
    assert_eq!(
        std::fs::read(&origin).unwrap(),
        odata,
        "the origin is never written"
    );
    // Block status: block 2 is provisioned, block 3 is a hole, blocks 0-1 come from the origin.
    let ext = thin.extents(Sectors(0), Sectors(4 * BS));
    assert_eq!(
        ext,
        vec![(Sectors(3 * BS), Extent::Data), (Sectors(BS), Extent::Hole)]
    );
}

#[test]
fn block_status_reports_holes() {
    let dir = tempfile::tempdir().unwrap();
    let files = PoolFiles::new(dir.path(), 4, BS, 8);
    let reg = reg();
    let thin = setup(&reg, &files, "0", 8);
    write(thin.as_ref(), 2 * BS + 1, &[1; 512]).unwrap();
    write(thin.as_ref(), 5 * BS, &[1; 512]).unwrap();
    let want = vec![
        (Sectors(BS - 10), Extent::Hole),
        (Sectors(BS), Extent::Data),
        (Sectors(2 * BS), Extent::Hole),
        (Sectors(BS), Extent::Data),
        (Sectors(BS + 5), Extent::Hole),
    ];
    assert_eq!(thin.extents(Sectors(BS + 10), Sectors(6 * BS - 5)), want);
    // Discarding the block gives the space back and the hole returns.
    udm_io::sync::discard(thin.as_ref(), Sectors(5 * BS), Sectors(BS)).unwrap();
    assert_eq!(
        thin.extents(Sectors(4 * BS), Sectors(2 * BS)),
        vec![(Sectors(2 * BS), Extent::Hole)]
    );
    assert_eq!(pool_field(&reg, 2), "1/8");
}

#[test]
fn constructor_and_message_errors() {
    let dir = tempfile::tempdir().unwrap();
    let files = PoolFiles::new(dir.path(), 4, BS, 8);
    let reg = reg();
    let err = |name: &str, t: &str| create(&reg, name, t).unwrap_err().to_string();
    assert!(err("p", &files.table("")).contains("Invalid argument count"));
    assert!(err("p", &files.table("0 1 bogus")).contains("Unrecognised pool feature requested"));
    assert!(err("p", &files.table("0 1 read_only")).contains("Error creating metadata object"));
    let t = format!(
        "0 8 thin-pool {} {} 100 0",
        files.meta.display(),
        files.data.display()
    );
    assert!(err("p", &t).contains("Invalid block size"));
    create(&reg, "pool", &files.table("0")).unwrap();
    assert!(err("t", "0 8 thin /dev/mapper/pool 1").contains("Couldn't open thin internal device"));
    assert!(err("t", "0 8 thin /dev/mapper/pool x").contains("Invalid device id"));
    assert!(err("t", &format!("0 8 thin {} 1", files.data.display()))
        .contains("Couldn't get pool mapped device"));
    // A second pool on the same metadata.
    assert!(err("pool2", &files.table("0")).contains("metadata device already in use by a pool"));
    let m = |w: &str| message(&reg, "pool", w).map_err(|e| e.errno());
    assert_eq!(m("create_thin 1"), Ok(String::new()));
    assert_eq!(m("create_thin 1"), Err(libc::EEXIST));
    assert_eq!(m("create_snap 2 5"), Err(libc::ENODATA));
    assert_eq!(m("delete 9"), Err(libc::ENODATA));
    create(&reg, "t", "0 8 thin /dev/mapper/pool 1").unwrap();
    assert_eq!(m("delete 1"), Err(libc::EBUSY));
    assert_eq!(m("bogus"), Err(libc::EINVAL));
    assert_eq!(m("set_transaction_id 3 4"), Err(libc::EINVAL));
    assert_eq!(m("set_transaction_id 0 4"), Ok(String::new()));
    assert_eq!(pool_field(&reg, 0), "4");
    // The pool cannot be reloaded with discards turned off.
    let lines = udm_core::parse_table_text(&files.table("0 1 ignore_discard")).unwrap();
    let e = reg
        .load(&sel("pool"), &lines, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Discard support cannot be disabled once enabled"),
        "{e}"
    );
    // `targets` after the module loaded lists the pool first, as the kernel does.
    let v = reg.list_versions();
    let names: Vec<&str> = v.iter().map(|(n, _)| n.as_str()).collect();
    let i = names.iter().position(|n| *n == "thin-pool").unwrap();
    assert_eq!(names[i + 1], "thin");
    assert_eq!(v[i].1, [1, 22, 0]);
}

#[test]
fn thin_device_passes_the_block_device_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let files = PoolFiles::new(dir.path(), 4, BS, 512);
    let reg = reg();
    let thin = setup(&reg, &files, "0", 512);
    let spec = udm_testkit::conformance::Spec {
        write_zeroes: false,
        ..udm_testkit::conformance::Spec::writable(Sectors(512 * BS))
    };
    udm_testkit::conformance::run("thin", thin.as_ref(), &spec);
    // Every check's writes are in the metadata the real tools read.
    drop(thin);
    for n in ["thin", "pool"] {
        reg.remove(&sel(n), false).unwrap();
    }
    udm_testkit::thin::thin_check(&files.meta).unwrap();
}

#[test]
fn corrupt_mapping_tree_makes_the_pool_read_only_with_needs_check() {
    let dir = tempfile::tempdir().unwrap();
    let files = PoolFiles::new(dir.path(), 4, BS, 16);
    {
        let reg = reg();
        let thin = setup(&reg, &files, "0", 8);
        write(thin.as_ref(), 0, &block(1)).unwrap();
        drop(thin);
        for n in ["thin", "pool"] {
            reg.remove(&sel(n), false).unwrap();
        }
    }
    // Flip a byte in device 1's mapping tree root (a leaf): its checksum no longer matches.
    let root = {
        let io = std::sync::Arc::new(udm_pdata::io::FileIo::open(&files.meta).unwrap());
        let mut md = udm_pdata::thin::ThinMetadata::open(io).unwrap();
        udm_targets::thin::status::dev_root(&mut md, 1)
            .unwrap()
            .unwrap()
    };
    let mut meta = std::fs::read(&files.meta).unwrap();
    meta[root as usize * 4096 + 100] ^= 0xff;
    std::fs::write(&files.meta, &meta).unwrap();

    let reg = reg();
    create(&reg, "pool", &files.table("0")).unwrap();
    create(
        &reg,
        "thin",
        &format!("0 {} thin /dev/mapper/pool 1", 8 * BS),
    )
    .unwrap();
    let (thin, _g) = open(&reg, "thin");
    assert_eq!(read(thin.as_ref(), 0, BLOCK), Err(udm_io::IoError::Io));
    let st = status(&reg, "pool");
    assert!(st.contains(" ro ") && st.contains(" needs_check "), "{st}");
    assert_eq!(
        message(&reg, "pool", "create_thin 2").map_err(|e| e.errno()),
        Err(libc::EOPNOTSUPP)
    );
    assert_eq!(
        write(thin.as_ref(), 2 * BS, &block(2)),
        Err(udm_io::IoError::Io)
    );
}

#[test]
fn thin_devices_and_snapshots_written_concurrently() {
    use udm_testkit::rng::XorShift;
    let dir = tempfile::tempdir().unwrap();
    let files = PoolFiles::new(dir.path(), 8, BS, 256);
    let reg = reg();
    let base = setup(&reg, &files, "0", 32);
    let origin: Vec<u8> = XorShift::new(99).bytes(32 * BLOCK);
    write(base.as_ref(), 0, &origin).unwrap();
    drop(base);
    // Snapshots 2 and 3 of 1, and 4 of snapshot 2; then all four written at once.
    for (new, of) in [(2, 1), (3, 1), (4, 2)] {
        message(&reg, "pool", &format!("create_snap {new} {of}")).unwrap();
    }
    let names: Vec<String> = (1..=4).map(|i| format!("t{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            create(
                &reg,
                n,
                &format!("0 {} thin /dev/mapper/pool {}", 32 * BS, i + 1),
            )
            .unwrap();
        }
    }
    reg.rename(&sel("thin"), "t1").unwrap();
    let devs: Vec<_> = names.iter().map(|n| reg.open(&sel(n)).unwrap()).collect();
    let handles: Vec<_> = devs
        .iter()
        .enumerate()
        .map(|(i, (d, _))| {
            let d = d.clone();
            let mut model = origin.clone();
            std::thread::spawn(move || {
                let mut rng = XorShift::mixed(i as u64);
                for _ in 0..150 {
                    let s = rng.below(32 * BS - 16);
                    let n = 1 + rng.below(16) as usize;
                    let data = rng.bytes(n * 512);
                    write(d.as_ref(), s, &data).unwrap();
                    model[s as usize * 512..s as usize * 512 + n * 512].copy_from_slice(&data);
                }
                model
            })
        })
        .collect();
    for ((d, _), h) in devs.iter().zip(handles) {
        let model = h.join().unwrap();
        assert!(read(d.as_ref(), 0, 32 * BLOCK).unwrap() == model);
    }
    drop(devs);
    for n in names.iter().chain([&"pool".to_string()]) {
        reg.remove(&sel(n), false).unwrap();
    }
    udm_testkit::thin::thin_check(&files.meta).unwrap();
}

#[test]
fn whole_block_writes_in_flight_together_provision_and_break_sharing() {
    use udm_io::{Bio, IoBuf};
    let dir = tempfile::tempdir().unwrap();
    let files = PoolFiles::new(dir.path(), 4, BS, 64);
    let reg = reg();
    let thin = setup(&reg, &files, "0", 32);
    // Blocks 0..8 mapped, then shared with snapshot 2.
    for b in 0..8 {
        write(thin.as_ref(), b * BS, &block(0x10 + b as u8)).unwrap();
    }
    message(&reg, "pool", "create_snap 2 1").unwrap();
    // 24 whole-block writes at once: 8 break sharing, 16 provision new blocks.
    let (tx, rx) = std::sync::mpsc::channel();
    for b in 0..24u64 {
        let tx = tx.clone();
        thin.submit(Bio::write(
            Sectors(b * BS),
            IoBuf::from_slice(&block(0x80 + b as u8)),
            Box::new(move |r, _| tx.send(r).unwrap()),
        ));
    }
    for _ in 0..24 {
        rx.recv().unwrap().unwrap();
    }
    udm_io::sync::flush(thin.as_ref()).unwrap();
    for b in 0..24u64 {
        assert_eq!(
            read(thin.as_ref(), b * BS, BLOCK).unwrap(),
            block(0x80 + b as u8),
            "block {b}"
        );
    }
    create(
        &reg,
        "snap",
        &format!("0 {} thin /dev/mapper/pool 2", 32 * BS),
    )
    .unwrap();
    let (snap, _g) = open(&reg, "snap");
    for b in 0..8u64 {
        assert_eq!(
            read(snap.as_ref(), b * BS, BLOCK).unwrap(),
            block(0x10 + b as u8)
        );
    }
    // 8 shared + 8 broken away + 16 new: 32 of 64 data blocks.
    assert_eq!(pool_field(&reg, 2), "32/64");
    drop((snap, _g, thin));
    reg.remove_all(false);
    udm_testkit::thin::thin_check(&files.meta).unwrap();
}
