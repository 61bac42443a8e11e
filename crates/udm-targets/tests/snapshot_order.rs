//! Ordering guarantees of snapshot commits, on a gated RAM disk whose log orders every bio of
//! the origin and the COW: origin writes wait for the group commit of their chunk's copy (a
//! flush after the copy, then the area write with FUA) while later copies go on; an area that
//! fills is written after the area following it is durable, before any origin write it
//! covers; snapshot writes wait for their own commit while later snapshot writes go on.

use std::sync::Arc;
use std::time::Duration;
use udm_core::Registry;
use udm_io::{sync, Bio, BioFlags, IoBuf, MemDevice, Op, Sectors};
use udm_targets::snapshot::{Store, StoreKind};
use udm_testkit::dm::{create, open, read, reg, sel, write};
use udm_testkit::gate::{GateDevice, Record, RemapType};

const SECTORS: u64 = 8192; // 4 MiB origin, 4 MiB COW
const LONG: Duration = Duration::from_secs(20);

/// A write of a whole metadata area chunk of the COW (chunk 8: area `a` is COW chunk
/// `1 + 257 a`).
fn is_area_write(r: &Record) -> bool {
    let c = r.sector.0.wrapping_sub(SECTORS);
    r.op == Op::Write
        && r.sector.0 >= SECTORS
        && c.is_multiple_of(8)
        && (c / 8) % 257 == 1
        && r.len.0 == 8
}

/// Whether `log[at..to]` makes `log[at]` durable: a FUA write, or a flush after it.
fn durable_by(log: &[Record], at: usize, to: usize) -> bool {
    log[at].flags.contains(BioFlags::FUA) || log[at..to].iter().any(|r| r.op == Op::Flush)
}

/// Whether `log[from..to]` holds an area write made durable before `to` (a commit).
fn commit_between(log: &[Record], from: usize, to: usize) -> bool {
    log[from..to]
        .iter()
        .position(is_area_write)
        .is_some_and(|a| durable_by(log, from + a, to))
}

/// Origin and COW on one gated RAM disk (origin in its first half, 0x5a; COW in its second,
/// `cow_fill` but for a zeroed header chunk), so the gate's log orders every bio of both.
/// Returns the gate and the RAM disk under it (what a crash would leave).
fn gated_origin_and_cow(reg: &Registry, cow_fill: u8) -> (Arc<GateDevice>, Arc<MemDevice>) {
    let mem = Arc::new(MemDevice::new("m", Sectors(2 * SECTORS)));
    sync::write_at(&*mem, Sectors(0), &vec![0x5a; (SECTORS * 512) as usize]).unwrap();
    sync::write_at(
        &*mem,
        Sectors(SECTORS),
        &vec![cow_fill; (SECTORS * 512) as usize],
    )
    .unwrap();
    sync::write_at(&*mem, Sectors(SECTORS), &[0; 4096]).unwrap();
    let gate = GateDevice::new(mem.clone());
    gate.open();
    let remap = RemapType::new();
    reg.target_types().register(Arc::new(remap.clone()));
    remap.insert("g", gate.clone());
    create(reg, "g", &format!("0 {} testdev g", 2 * SECTORS)).unwrap();
    let g = reg.info(&sel("g"), false).unwrap().minor;
    create(reg, "O", &format!("0 {SECTORS} linear 253:{g} 0")).unwrap();
    create(reg, "C", &format!("0 {SECTORS} linear 253:{g} {SECTORS}")).unwrap();
    let (o, c) = (
        reg.info(&sel("O"), false).unwrap().minor,
        reg.info(&sel("C"), false).unwrap().minor,
    );
    create(
        reg,
        "s",
        &format!("0 {SECTORS} snapshot 253:{o} 253:{c} P 8"),
    )
    .unwrap();
    create(reg, "o", &format!("0 {SECTORS} snapshot-origin 253:{o}")).unwrap();
    (gate, mem)
}

#[test]
fn origin_writes_wait_for_the_group_commit_while_later_copies_go_on() {
    let reg = reg();
    let (gate, _) = gated_origin_and_cow(&reg, 0);
    let (o, _go) = open(&reg, "o");
    let (s, _gs) = open(&reg, "s");
    let (tx, rx) = crossbeam_channel::unbounded();
    let submit = |dev: &dyn udm_io::BlockDevice, name: &'static str, sector: u64, fill: u8| {
        let tx = tx.clone();
        dev.submit(Bio::write(
            Sectors(sector),
            IoBuf::from_slice(&[fill; 4096]),
            Box::new(move |r, _| tx.send((name, r)).unwrap()),
        ));
    };
    let long = LONG;
    let in_origin = |r: &Record| r.op == Op::Write && r.sector.0 < SECTORS;
    gate.close();
    let start = gate.log().len();
    // W1 copies chunk 0 out; let everything through up to its commit's flush, then hold it.
    submit(&*o, "w1", 0, 0xa1);
    loop {
        assert!(
            gate.wait_held(1, long),
            "the copy-out never reached the COW"
        );
        if gate.held_records()[0].op == Op::Flush {
            break;
        }
        gate.release(1);
    }
    // W2 rewrites chunk 0, whose copy is not committed: it must wait for that commit.
    submit(&*o, "w2", 0, 0xa2);
    assert!(
        !gate.wait_held(2, Duration::from_millis(500)),
        "an origin write went out before the commit of its chunk's copy: {:?}",
        gate.held_records()
    );
    // W3 needs a new copy: the origin's worker copies it while the first commit is held.
    submit(&*o, "w3", 8, 0xa3);
    assert!(
        gate.wait_held(2, long),
        "a later copy-out waited for an earlier commit"
    );
    assert!(!gate.held_records().iter().any(in_origin));
    gate.open();
    let mut done: Vec<_> = (0..3).map(|_| rx.recv_timeout(long).unwrap()).collect();
    done.sort_by_key(|d| d.0);
    assert_eq!(done, vec![("w1", Ok(())), ("w2", Ok(())), ("w3", Ok(()))]);
    // Writes acknowledged before they reached the origin (held) are there after a flush.
    sync::flush(&*o).unwrap();
    // In arrival order: each origin write comes after an area write and a flush following
    // the copy of its chunk (and the flush of that copy before the area write).
    let log = gate.log()[start..].to_vec();
    let origin_writes: Vec<_> = (0..log.len()).filter(|&i| in_origin(&log[i])).collect();
    assert_eq!(origin_writes.len(), 3, "{log:?}");
    let copy1 = log
        .iter()
        .position(|r| r.op == Op::Write && r.sector.0 >= SECTORS)
        .unwrap();
    let flush1 = copy1 + log[copy1..].iter().position(|r| r.op == Op::Flush).unwrap();
    assert!(
        origin_writes
            .iter()
            .all(|&i| commit_between(&log, flush1, i)),
        "{log:?}"
    );
    let w3 = origin_writes
        .iter()
        .find(|&&i| log[i].sector.0 == 8)
        .unwrap();
    let copy3 = log
        .iter()
        .position(|r| r.op == Op::Read && r.sector.0 == 8)
        .unwrap();
    let flush3 = copy3 + log[copy3..].iter().position(|r| r.op == Op::Flush).unwrap();
    assert!(commit_between(&log, flush3, *w3), "{log:?}");
    // A snapshot write into an exception an origin write made and whose commit is held is
    // not acknowledged before that commit.
    gate.close();
    submit(&*o, "w4", 16, 0xa4);
    loop {
        assert!(
            gate.wait_held(1, long),
            "the copy-out never reached the COW"
        );
        if gate.held_records()[0].op == Op::Flush {
            break;
        }
        gate.release(1);
    }
    // A plain origin write is acknowledged once its chunk is copied, held until the commit.
    assert_eq!(rx.recv_timeout(long).unwrap(), ("w4", Ok(())));
    assert!(!gate.held_records().iter().any(in_origin));
    submit(&*s, "s", 16, 0x5b);
    assert!(
        gate.wait_held(2, long),
        "the snapshot write never reached the COW"
    );
    gate.release(2);
    let area = run_to_area_write(&gate);
    assert!(
        area.flags.contains(BioFlags::FUA),
        "the commit's area write"
    );
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "a snapshot write completed before the commit it depends on"
    );
    gate.open();
    assert_eq!(rx.recv_timeout(long).unwrap(), ("s", Ok(())));
    // The snapshot kept chunk 1 and has its own write in chunk 2; the origin has W3, W4.
    assert_eq!(read(&*s, 0, 4096).unwrap(), vec![0x5a; 4096]);
    assert_eq!(read(&*s, 8, 4096).unwrap(), vec![0x5a; 4096]);
    assert_eq!(read(&*s, 16, 4096).unwrap(), vec![0x5b; 4096]);
    assert_eq!(read(&*o, 8, 4096).unwrap(), vec![0xa3; 4096]);
    assert_eq!(read(&*o, 16, 4096).unwrap(), vec![0xa4; 4096]);
}

/// Release held bios one at a time until the oldest held one is a write of `area` (any
/// area: `None`); returns it.
fn run_to_area(gate: &GateDevice, area: Option<Sectors>) -> Record {
    loop {
        assert!(gate.wait_held(1, LONG), "no commit reached the COW");
        let r = gate.held_records()[0];
        if is_area_write(&r) && area.is_none_or(|a| r.sector == a) {
            return r;
        }
        gate.release(1);
    }
}

fn run_to_area_write(gate: &GateDevice) -> Record {
    run_to_area(gate, None)
}

/// The exceptions a crash now would leave: the COW half of the RAM disk, opened as a store.
fn crash_exceptions(mem: &MemDevice) -> Vec<(u64, u64)> {
    let img = sync::read_at(mem, Sectors(SECTORS), (SECTORS * 512) as usize).unwrap();
    let copy = MemDevice::new("crash", Sectors(SECTORS));
    sync::write_at(&copy, Sectors(0), img.as_slice()).unwrap();
    let opened = Store::open(&copy, StoreKind::Persistent { overflow: false }, 8).unwrap();
    assert!(opened.valid);
    opened.store.exceptions()
}

#[test]
fn a_filled_area_is_written_after_the_next_one_and_before_the_origin_writes_it_covers() {
    // Chunk 8: 256 exceptions per area. Area 0 is chunk 1, its data chunks 2..=257, area 1
    // is chunk 258, so origin chunk 256 goes to chunk 259. The COW is full of 0xff: an area
    // after a full one that were not written first would read as garbage exceptions.
    let reg = reg();
    let (gate, mem) = gated_origin_and_cow(&reg, 0xff);
    let (o, _go) = open(&reg, "o");
    let (tx, rx) = crossbeam_channel::unbounded();
    gate.close();
    let start = gate.log().len();
    // One write over 257 chunks: the copy-out fills area 0 and puts one exception in area 1.
    o.submit(Bio::write(
        Sectors(0),
        IoBuf::from_slice(&vec![0xa1; 257 * 4096]),
        Box::new(move |r, _| tx.send(r).unwrap()),
    ));
    let area = |a: u64| Sectors(SECTORS + (1 + 257 * a) * 8);
    let full = run_to_area(&gate, Some(area(0)));
    let log = gate.log()[start..].to_vec();
    let next = log
        .iter()
        .position(|r| r.op == Op::Write && r.sector == area(1))
        .expect("the area after the full one is written before it");
    assert!(
        durable_by(&log, next, log.len()),
        "the next area is durable before the full one is written: {log:?}"
    );
    assert!(
        !log.iter()
            .any(|r| r.op == Op::Write && r.sector.0 < SECTORS),
        "an origin write went out before its chunk's exception was on disk"
    );
    // A crash before the full area's write: area 0 still ends the table on disk.
    assert_eq!(crash_exceptions(&mem), vec![]);
    gate.release(1);
    // A crash after it: both areas, nothing else (area 1 holds just its entry). The full
    // area's write is itself durable (FUA); the origin write comes after it.
    assert!(full.flags.contains(BioFlags::FUA), "the full area's write");
    gate.release(1);
    let mut want: Vec<_> = (0..256).map(|c| (c, c + 2)).collect();
    want.push((256, 259));
    assert!(gate.wait_held(1, LONG), "no origin write after the commit");
    assert_eq!(crash_exceptions(&mem), want);
    assert!(gate.held_records()[0].sector.0 < SECTORS);
    gate.open();
    assert_eq!(rx.recv_timeout(LONG).unwrap(), Ok(()));
    let (s, _gs) = open(&reg, "s");
    assert_eq!(read(&*s, 0, 257 * 4096).unwrap(), vec![0x5a; 257 * 4096]);
    assert_eq!(read(&*o, 0, 257 * 4096).unwrap(), vec![0xa1; 257 * 4096]);
}

#[test]
fn snapshot_writes_wait_for_their_commit_while_later_ones_go_on() {
    let reg = reg();
    let (gate, mem) = gated_origin_and_cow(&reg, 0);
    let (s, _gs) = open(&reg, "s");
    let (tx, rx) = crossbeam_channel::unbounded();
    let submit = |sector: u64, fill: u8| {
        let tx = tx.clone();
        s.submit(Bio::write(
            Sectors(sector),
            IoBuf::from_slice(&[fill; 4096]),
            Box::new(move |r, _| tx.send((fill, r)).unwrap()),
        ));
    };
    gate.close();
    // S1 allocates chunk 2 of the COW for snapshot chunk 0; hold its commit's flush.
    submit(0, 0xb1);
    loop {
        assert!(gate.wait_held(1, LONG), "S1 never reached the COW");
        if gate.held_records()[0].op == Op::Flush {
            break;
        }
        gate.release(1);
    }
    // S2 is handled while S1's commit waits: its data reaches the COW.
    submit(8, 0xb2);
    assert!(
        gate.wait_held(2, LONG),
        "a later snapshot write waited for an earlier commit"
    );
    let s2 = gate.held_records()[1];
    assert_eq!((s2.op, s2.sector), (Op::Write, Sectors(SECTORS + 3 * 8)));
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "a snapshot write was acknowledged before its exception was committed"
    );
    // Let the flush and S2's data through, hold S1's area write: still nothing acknowledged.
    gate.release(2);
    let area = run_to_area_write(&gate);
    assert_eq!(area.sector, Sectors(SECTORS + 8));
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "a snapshot write was acknowledged before its exception was committed"
    );
    assert_eq!(crash_exceptions(&mem), vec![]);
    gate.open();
    let mut done: Vec<_> = (0..2).map(|_| rx.recv_timeout(LONG).unwrap()).collect();
    done.sort_by_key(|d| d.0);
    assert_eq!(done, vec![(0xb1, Ok(())), (0xb2, Ok(()))]);
    assert_eq!(crash_exceptions(&mem), vec![(0, 2), (1, 3)]);
    assert_eq!(read(&*s, 0, 4096).unwrap(), vec![0xb1; 4096]);
    assert_eq!(read(&*s, 8, 4096).unwrap(), vec![0xb2; 4096]);
    // The origin kept its data.
    let (o, _go) = open(&reg, "o");
    assert_eq!(read(&*o, 0, 8192).unwrap(), vec![0x5a; 8192]);
}

#[test]
fn flushes_reads_and_suspends_wait_for_held_origin_writes_and_a_failure_is_reported_once() {
    let reg = reg();
    let (gate, _) = gated_origin_and_cow(&reg, 0);
    let (o, _go) = open(&reg, "o");
    // Hold the origin's writes only: copies and commits go through.
    gate.hold_only(|r| r.op == Op::Write && r.sector.0 < SECTORS);
    gate.close();
    write(&*o, 0, &[0xa1; 4096]).unwrap();
    assert!(
        gate.wait_held(1, LONG),
        "the held write never reached the origin"
    );
    let (tx, rx) = crossbeam_channel::unbounded();
    o.submit(Bio::flush(Box::new(move |r, _| tx.send(r).unwrap())));
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "a flush completed before an acknowledged write reached the origin"
    );
    assert_eq!(gate.fail_held(1), 1);
    assert_eq!(rx.recv_timeout(LONG).unwrap(), Err(udm_io::IoError::Io));
    gate.open();
    sync::flush(&*o).unwrap();
    // A read overlapping a held write waits for it and sees its data.
    gate.close();
    write(&*o, 8, &[0xa2; 4096]).unwrap();
    assert!(gate.wait_held(1, LONG));
    let (tx, rx) = crossbeam_channel::unbounded();
    let o2 = o.clone();
    std::thread::spawn(move || tx.send(read(&*o2, 8, 4096).unwrap()).unwrap());
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    gate.open();
    assert_eq!(rx.recv_timeout(LONG).unwrap(), vec![0xa2; 4096]);
    // A suspend returns only once every held write is in the origin.
    gate.close();
    write(&*o, 16, &[0xa3; 4096]).unwrap();
    assert!(gate.wait_held(1, LONG));
    drop((o, _go));
    let (tx, rx) = crossbeam_channel::unbounded();
    let reg = Arc::new(reg);
    let r2 = reg.clone();
    std::thread::spawn(move || {
        tx.send(r2.suspend(&sel("o"), false, false).is_ok())
            .unwrap()
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "a suspend returned while an acknowledged write was still held"
    );
    gate.open();
    assert_eq!(rx.recv_timeout(LONG), Ok(true));
}

#[test]
fn an_origin_write_is_acknowledged_before_its_copy_lands_and_exceptions_keep_their_order() {
    // The origin's worker only allocates the COW chunk; the snapshot's writer copies. With
    // the copy held at the gate: the plain origin write is acknowledged, the snapshot still
    // reads the old data (from the origin, untouched), and a snapshot write to another chunk
    // waits for the copy, so the table keeps allocation order.
    let reg = reg();
    let (gate, mem) = gated_origin_and_cow(&reg, 0);
    let cow_data =
        |r: &Record| r.op == Op::Write && r.sector.0 >= SECTORS + 16 && !is_area_write(r);
    gate.hold_only(cow_data);
    gate.close();
    let (o, _go) = open(&reg, "o");
    write(&*o, 0, &[0xa1; 4096]).unwrap();
    assert!(gate.wait_held(1, LONG), "the copy never reached the COW");
    let (s, _gs) = open(&reg, "s");
    assert_eq!(read(&*s, 0, 4096).unwrap(), vec![0x5a; 4096]);
    let snap_write = {
        let s = s.clone();
        std::thread::spawn(move || write(&*s, 16, &[0x5b; 4096]))
    };
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(gate.held(), 1, "a snapshot write overtook a queued copy");
    assert!(!snap_write.is_finished());
    gate.open();
    snap_write.join().unwrap().unwrap();
    sync::flush(&*o).unwrap();
    assert_eq!(read(&*o, 0, 4096).unwrap(), vec![0xa1; 4096]);
    assert_eq!(read(&*s, 0, 4096).unwrap(), vec![0x5a; 4096]);
    assert_eq!(read(&*s, 16, 4096).unwrap(), vec![0x5b; 4096]);
    // Area 0 (COW chunk 1): origin chunk 0 → COW chunk 2 first, then 2 → 3.
    let area = sync::read_at(&*mem, Sectors(SECTORS + 8), 4096).unwrap();
    let entry = |i| udm_targets::snapshot::cow::area_entry(area.as_slice(), i);
    assert_eq!((entry(0), entry(1), entry(2)), ((0, 2), (2, 3), (0, 0)));
}

#[test]
fn removing_a_snapshot_waits_for_its_queued_copies_and_their_commit() {
    // As the kernel's destructor waits for pending exceptions: the COW is complete (copy
    // and exception on disk) once the removal returns.
    let reg = reg();
    let (gate, mem) = gated_origin_and_cow(&reg, 0);
    gate.hold_only(|r: &Record| {
        (r.op == Op::Write && r.sector.0 >= SECTORS + 16) || is_area_write(r)
    });
    gate.close();
    {
        let (o, _go) = open(&reg, "o");
        write(&*o, 0, &[0xa1; 4096]).unwrap();
    }
    assert!(gate.wait_held(1, LONG), "the copy never reached the COW");
    let remove = {
        let reg = reg.clone();
        std::thread::spawn(move || reg.remove(&sel("s"), false))
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(!remove.is_finished(), "removed with a copy in flight");
    // The copy lands; its commit's area write is held.
    run_to_area_write(&gate);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !remove.is_finished(),
        "removed before its copies were committed"
    );
    gate.open();
    remove.join().unwrap().unwrap();
    let area = sync::read_at(&*mem, Sectors(SECTORS + 8), 4096).unwrap();
    assert_eq!(
        udm_targets::snapshot::cow::area_entry(area.as_slice(), 0),
        (0, 2)
    );
    let copy = sync::read_at(&*mem, Sectors(SECTORS + 16), 4096).unwrap();
    assert!(copy.as_slice() == [0x5a; 4096]);
}
