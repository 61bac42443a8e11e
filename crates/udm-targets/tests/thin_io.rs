//! Thin device I/O paths seen from below: partial-block and FUA writes to unprovisioned
//! blocks provisioned side by side (the pool's data device behind a gate counts what is in
//! flight; one commit covers every FUA write of a batch), and a suspended pool holding its
//! thin devices' I/O until it resumes (the kernel suspends every active thin with its
//! pool), a noflush suspend of a thin handing those bios back to the thin device.

use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Duration;
use udm_core::{Registry, SuspendOpts};
use udm_io::{Bio, BioFlags, BlockDevice, IoBuf, IoError, MemDevice, Op, Sectors};
use udm_testkit::dm::{create, message, open, read, reg, sel, status, write};
use udm_testkit::gate::{GateDevice, RemapType};
use udm_testkit::thin::PoolFiles;

const BS: u64 = 128;
const BLOCK: usize = (BS * 512) as usize;
const BLOCKS: u64 = 64;

/// A pool whose data device is `/dev/mapper/g` (a gate over RAM), with thin device 1
/// (`thin`, 32 blocks) active.
fn gated_pool(reg: &Registry, files: &PoolFiles) -> Arc<GateDevice> {
    let remap = RemapType::new();
    reg.target_types().register(Arc::new(remap.clone()));
    let mem = Arc::new(MemDevice::new("data", Sectors(BLOCKS * BS)));
    let gate = GateDevice::new(mem);
    gate.open();
    remap.insert("g", gate.clone());
    create(reg, "g", &format!("0 {} testdev g", BLOCKS * BS)).unwrap();
    let t = format!(
        "0 {} thin-pool {} /dev/mapper/g {BS} 0",
        BLOCKS * BS,
        files.meta.display()
    );
    create(reg, "pool", &t).unwrap();
    message(reg, "pool", "create_thin 1").unwrap();
    create(
        reg,
        "thin",
        &format!("0 {} thin /dev/mapper/pool 1", 32 * BS),
    )
    .unwrap();
    gate
}

/// Submit a write of `data` at `sector` with `flags`; its result arrives on the receiver.
fn submit_write(
    dev: &dyn BlockDevice,
    sector: u64,
    data: &[u8],
    flags: BioFlags,
) -> Receiver<Result<(), IoError>> {
    let (tx, rx) = channel();
    let bio = Bio::write(
        Sectors(sector),
        IoBuf::from_slice(data),
        Box::new(move |r, _| {
            let _ = tx.send(r);
        }),
    )
    .with_flags(flags);
    dev.submit(bio);
    rx
}

fn submit_read(dev: &dyn BlockDevice, sector: u64, len: usize) -> Receiver<Vec<u8>> {
    let (tx, rx) = channel();
    dev.submit(Bio::read(
        Sectors(sector),
        IoBuf::zeroed(len),
        Box::new(move |r, buf| {
            r.expect("read");
            drop(tx.send(buf.into_vec()));
        }),
    ));
    rx
}

fn data_used(reg: &Registry) -> String {
    status(reg, "pool").split(' ').nth(5).unwrap().to_string()
}

#[test]
fn partial_and_fua_writes_to_new_blocks_are_in_flight_together() {
    let dir = tempfile::tempdir().unwrap();
    let files = PoolFiles::new(dir.path(), 4, BS, BLOCKS);
    let reg = reg();
    let gate = gated_pool(&reg, &files);
    let (thin, _g) = open(&reg, "thin");
    gate.close();
    // A first write keeps the pool's worker busy (its data write waits at the gate) while
    // the next ones queue up, so they form one batch.
    let blocker = submit_write(&*thin, 20 * BS, &vec![0x20; BLOCK], BioFlags::NONE);
    assert!(
        gate.wait_held(1, Duration::from_secs(20)),
        "first write never came"
    );
    let before = gate.log().len();
    // Blocks 0..8: 4 KiB in the middle of each; blocks 8..16: whole blocks with FUA.
    let small = vec![0x5au8; 4096];
    let mut partial = Vec::new();
    for b in 0..8u64 {
        partial.push(submit_write(&*thin, b * BS + 16, &small, BioFlags::NONE));
    }
    let mut fua = Vec::new();
    for b in 8..16u64 {
        fua.push(submit_write(
            &*thin,
            b * BS,
            &vec![b as u8; BLOCK],
            BioFlags::FUA,
        ));
    }
    assert_eq!(gate.release(1), 1);
    blocker
        .recv_timeout(Duration::from_secs(20))
        .unwrap()
        .unwrap();
    // Every data write is at the gate at once (one at a time, the first would block the
    // rest behind it).
    let data_writes = |gate: &GateDevice| {
        gate.held_records()
            .iter()
            .filter(|r| r.op == Op::Write && (r.len.0 == 8 || r.len.0 == BS))
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while data_writes(&gate) < 16 {
        if std::time::Instant::now() >= deadline {
            let n = data_writes(&gate);
            let recs = gate.held_records();
            // Let everything go so the devices can be torn down, then fail.
            gate.open();
            gate.release_all();
            panic!("only {n} of 16 data writes in flight together: {recs:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    gate.open();
    gate.release_all();
    for rx in partial.iter().chain(&fua) {
        rx.recv_timeout(Duration::from_secs(20)).unwrap().unwrap();
    }
    // One commit covered the eight FUA writes: its data flush, and the flush after it.
    let flushes = gate.log()[before..]
        .iter()
        .filter(|r| r.op == Op::Flush)
        .count();
    assert!(
        (1..=2).contains(&flushes),
        "{flushes} flushes for one batch"
    );
    // The FUA writes' mappings are committed.
    let (_, devs) = udm_testkit::thin::thin_dump(&files.meta);
    for b in 8..16u64 {
        assert!(devs[&1].contains_key(&b), "FUA block {b} not committed");
    }
    for b in 0..8u64 {
        let got = read(&*thin, b * BS, BLOCK).unwrap();
        assert!(got[..8192].iter().all(|&x| x == 0), "block {b} head");
        assert_eq!(&got[8192..12288], &small[..], "block {b} data");
        assert!(got[12288..].iter().all(|&x| x == 0), "block {b} tail");
    }
    for b in 8..16u64 {
        assert_eq!(read(&*thin, b * BS, BLOCK).unwrap(), vec![b as u8; BLOCK]);
    }
    assert_eq!(data_used(&reg), format!("17/{BLOCKS}"));
    udm_io::sync::flush(&*thin).unwrap();
    drop((thin, _g));
    reg.remove_all(false);
    udm_testkit::thin::thin_check(&files.meta).unwrap();
}

/// Nothing arrives on `rx` for a while (the bio is held).
fn held<T: std::fmt::Debug>(rx: &Receiver<T>, what: &str) {
    if let Ok(v) = rx.recv_timeout(Duration::from_millis(300)) {
        panic!("{what} completed ({v:?}) while it should be held");
    }
}

#[test]
fn suspended_pool_holds_its_thins_io_and_noflush_hands_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let files = PoolFiles::new(dir.path(), 4, BS, BLOCKS);
    let reg = reg();
    create(&reg, "pool", &files.table("0")).unwrap();
    message(&reg, "pool", "create_thin 1").unwrap();
    create(
        &reg,
        "thin",
        &format!("0 {} thin /dev/mapper/pool 1", 32 * BS),
    )
    .unwrap();
    let (thin, _g) = open(&reg, "thin");
    write(&*thin, 0, &vec![0x11; BLOCK]).unwrap();
    write(&*thin, 3 * BS, &vec![0x13; BLOCK]).unwrap();
    udm_io::sync::flush(&*thin).unwrap();

    reg.suspend(&sel("pool"), false, false).unwrap();
    let meta_at_suspend = std::fs::read(&files.meta).unwrap();
    // The thin device itself stays active, as the kernel's (suspended only internally).
    assert!(!reg.info(&sel("thin"), false).unwrap().suspended);
    // A read of a mapped block, a large write to a mapped one, a new whole block, a
    // partial write to a new block: all held, nothing allocated.
    let r0 = submit_read(&*thin, 0, BLOCK);
    let w3 = submit_write(&*thin, 3 * BS, &vec![0x33; BLOCK], BioFlags::NONE);
    let w1 = submit_write(&*thin, BS, &vec![0x21; BLOCK], BioFlags::NONE);
    let w2 = submit_write(&*thin, 2 * BS + 8, &[0x22; 4096], BioFlags::NONE);
    held(&r0, "read of block 0");
    held(&w3, "write to block 3");
    held(&w1, "write to new block 1");
    held(&w2, "partial write to new block 2");
    assert_eq!(data_used(&reg), format!("2/{BLOCKS}"));

    // A noflush suspend of the thin takes its held bios back and completes at once.
    let opts = SuspendOpts {
        noflush: true,
        drain_timeout: Some(Duration::from_secs(10)),
    };
    reg.suspend_with(&sel("thin"), opts).unwrap();
    reg.resume(&sel("pool")).unwrap();
    held(&w1, "write requeued to the suspended thin");
    assert_eq!(std::fs::read(&files.meta).unwrap(), meta_at_suspend);
    reg.resume(&sel("thin")).unwrap();
    assert_eq!(
        r0.recv_timeout(Duration::from_secs(20)).unwrap(),
        vec![0x11; BLOCK]
    );
    for rx in [&w3, &w1, &w2] {
        rx.recv_timeout(Duration::from_secs(20)).unwrap().unwrap();
    }

    // Suspended again: a new write waits for the pool's resume, then completes.
    reg.suspend(&sel("pool"), false, false).unwrap();
    let w4 = submit_write(&*thin, 4 * BS, &vec![0x44; BLOCK], BioFlags::FUA);
    held(&w4, "write to new block 4");
    reg.resume(&sel("pool")).unwrap();
    w4.recv_timeout(Duration::from_secs(20)).unwrap().unwrap();

    let mut want2 = vec![0u8; BLOCK];
    want2[4096..8192].fill(0x22);
    for (b, want) in [
        (0, vec![0x11; BLOCK]),
        (1, vec![0x21; BLOCK]),
        (2, want2),
        (3, vec![0x33; BLOCK]),
        (4, vec![0x44; BLOCK]),
    ] {
        assert_eq!(read(&*thin, b * BS, BLOCK).unwrap(), want, "block {b}");
    }
    assert_eq!(data_used(&reg), format!("5/{BLOCKS}"));
    drop((thin, _g));
    reg.remove_all(false);
    udm_testkit::thin::thin_check(&files.meta).unwrap();
}
