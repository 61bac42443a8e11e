//! Behaviour of the fault-injection and test targets on udm: data, errors and timing (with a
//! manual test clock where time matters), status lines, and messages.

use std::sync::Arc;
use std::time::{Duration, Instant};
use udm_core::clock::{Clock, ManualClock};
use udm_io::{sync, Bio, BlockDevice, IoBuf, IoError, Sectors};
use udm_targets::{delay::DelayType, flakey::FlakeyType};
use udm_testkit::dm::*;

fn manual_reg(clock: &ManualClock) -> udm_core::Registry {
    let types = udm_targets::builtin();
    let c: Arc<dyn Clock> = Arc::new(clock.clone());
    types.register(Arc::new(FlakeyType::with_clock(c.clone())));
    types.register(Arc::new(DelayType::with_clock(c)));
    reg_with(types)
}

fn img(dir: &std::path::Path, name: &str, sectors: u64, xor: u64) -> String {
    let p = dir.join(name);
    pattern_image(&p, sectors * 512, xor);
    p.display().to_string()
}

fn word(d: &dyn BlockDevice, sector: u64) -> u64 {
    let b = read(d, sector, 512).unwrap();
    u64::from_le_bytes(b[..8].try_into().unwrap())
}

/// Start a read; returns a receiver for its result.
fn start_read(d: &dyn BlockDevice, sector: u64) -> crossbeam_like::Rx {
    let (tx, rx) = std::sync::mpsc::channel();
    d.submit(Bio::read(
        Sectors(sector),
        IoBuf::zeroed(512),
        Box::new(move |r, b| {
            let _ = tx.send((r, b.into_vec()));
        }),
    ));
    rx
}

mod crossbeam_like {
    pub type Rx = std::sync::mpsc::Receiver<(Result<(), udm_io::IoError>, Vec<u8>)>;
}

#[test]
fn delay_serves_parallel_requests_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let a = img(dir.path(), "a.img", 4096, 0);
    let reg = reg();
    create(&reg, "d", &format!("0 4096 delay {a} 0 500")).unwrap();
    let (d, _g) = open(&reg, "d");
    let t0 = Instant::now();
    let rxs: Vec<_> = (0..16).map(|i| start_read(&*d, i * 8)).collect();
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(status(&reg, "d"), "0 4096 delay 16 0 0\n");
    for (i, rx) in rxs.into_iter().enumerate() {
        let (r, b) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        r.unwrap();
        assert_eq!(
            u64::from_le_bytes(b[..8].try_into().unwrap()),
            i as u64 * 8 * 512
        );
    }
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(480) && took < Duration::from_millis(1500),
        "16 parallel reads through a 500 ms delay took {took:?}"
    );
    assert_eq!(status(&reg, "d"), "0 4096 delay 0 0 0\n");
}

#[test]
fn delay_classes_follow_a_test_clock_and_their_devices() {
    let dir = tempfile::tempdir().unwrap();
    let a = img(dir.path(), "a.img", 4096, 0);
    let b = img(dir.path(), "b.img", 4096, B_XOR);
    let clock = ManualClock::new();
    let reg = manual_reg(&clock);
    create(
        &reg,
        "d",
        &format!("0 1024 delay {a} 100 1000 {b} 200 0 {a} 0 3000"),
    )
    .unwrap();
    assert_eq!(
        table(&reg, "d"),
        format!("0 1024 delay {a} 100 1000 {b} 200 0 {a} 0 3000\n")
    );
    let (d, _g) = open(&reg, "d");
    // Writes: no delay, second device at offset 200.
    write(&*d, 5, &[0xab; 512]).unwrap();
    let raw = std::fs::read(&b).unwrap();
    assert!(raw[205 * 512..206 * 512].iter().all(|&x| x == 0xab));
    // Reads wait for the clock, however long real time runs.
    let rx = start_read(&*d, 1);
    let (ftx, frx) = std::sync::mpsc::channel();
    d.submit(Bio::flush(Box::new(move |r, _| {
        let _ = ftx.send(r);
    })));
    std::thread::sleep(Duration::from_millis(100));
    assert!(rx.try_recv().is_err());
    assert_eq!(status(&reg, "d"), "0 1024 delay 1 0 1\n");
    clock.advance(Duration::from_millis(999));
    std::thread::sleep(Duration::from_millis(50));
    assert!(rx.try_recv().is_err(), "released early");
    clock.advance(Duration::from_millis(1));
    let (r, data) = rx.recv_timeout(Duration::from_secs(2)).unwrap();
    r.unwrap();
    assert_eq!(u64::from_le_bytes(data[..8].try_into().unwrap()), 101 * 512);
    assert!(frx.try_recv().is_err(), "flush has its own, longer delay");
    assert_eq!(status(&reg, "d"), "0 1024 delay 0 0 1\n");
    clock.advance(Duration::from_secs(2));
    frx.recv_timeout(Duration::from_secs(2)).unwrap().unwrap();
    // Suspending releases held bios at once and stops delaying until resume.
    let rx = start_read(&*d, 2);
    std::thread::sleep(Duration::from_millis(50));
    reg.suspend(&sel("d"), false, false).unwrap();
    rx.recv_timeout(Duration::from_secs(2)).unwrap().0.unwrap();
    reg.resume(&sel("d")).unwrap();
}

#[test]
fn flakey_cycles_up_and_down_on_the_test_clock() {
    let dir = tempfile::tempdir().unwrap();
    let a = img(dir.path(), "a.img", 2048, 0);
    let clock = ManualClock::new();
    let reg = manual_reg(&clock);
    create(&reg, "f", &format!("0 1024 flakey {a} 8 2 1")).unwrap();
    assert_eq!(table(&reg, "f"), format!("0 1024 flakey {a} 8 2 1 0 \n"));
    assert_eq!(status(&reg, "f"), "0 1024 flakey \n");
    let (d, _g) = open(&reg, "f");
    // Up for 2 s.
    assert_eq!(word(&*d, 0), 8 * 512);
    write(&*d, 1, &[1; 512]).unwrap();
    clock.advance(Duration::from_millis(1999));
    assert!(read(&*d, 0, 512).is_ok());
    // Down for 1 s: everything fails, flushes too.
    clock.advance(Duration::from_millis(1));
    assert_eq!(read(&*d, 0, 512), Err(IoError::Io));
    assert_eq!(write(&*d, 1, &[2; 512]), Err(IoError::Io));
    assert_eq!(sync::flush(&*d), Err(IoError::Io));
    // Up again.
    clock.advance(Duration::from_secs(1));
    assert_eq!(read(&*d, 1, 512).unwrap(), vec![1; 512]);
    // Each period repeats.
    clock.advance(Duration::from_secs(2 + 3 * 10));
    assert!(read(&*d, 0, 512).is_err());
}

#[test]
fn flakey_drops_errors_and_corrupts_by_feature() {
    let dir = tempfile::tempdir().unwrap();
    let a = img(dir.path(), "a.img", 2048, 0);
    let clock = ManualClock::new();
    let reg = manual_reg(&clock);
    // Always down (up 0).
    create(
        &reg,
        "drop",
        &format!("0 1024 flakey {a} 0 0 1 1 drop_writes"),
    )
    .unwrap();
    {
        let (d, _g) = open(&reg, "drop");
        write(&*d, 3, &[9; 512]).unwrap();
        assert_eq!(word(&*d, 3), 3 * 512, "the write was dropped");
        sync::flush(&*d).unwrap();
    }
    reg.remove(&sel("drop"), false).unwrap();
    create(
        &reg,
        "er",
        &format!("0 1024 flakey {a} 0 0 1 1 error_reads"),
    )
    .unwrap();
    assert_eq!(
        table(&reg, "er"),
        format!("0 1024 flakey {a} 0 0 1 1 error_reads \n")
    );
    {
        let (d, _g) = open(&reg, "er");
        assert!(read(&*d, 0, 512).is_err());
        write(&*d, 4, &[4; 512]).unwrap();
    }
    reg.remove(&sel("er"), false).unwrap();
    let raw = std::fs::read(&a).unwrap();
    assert!(raw[4 * 512..5 * 512].iter().all(|&x| x == 4));
    // Read corruption: byte 3 of each bio becomes 0x41; FUA-only writes get byte 1 = 0x5a.
    let t = format!("0 1024 flakey {a} 0 0 1 5 corrupt_bio_byte 3 r 65 0");
    create(&reg, "cr", &t).unwrap();
    {
        let (d, _g) = open(&reg, "cr");
        let b = read(&*d, 100, 1024).unwrap();
        assert_eq!(b[2], 65);
        let mut want = (100u64 * 512).to_le_bytes();
        want[2] = 65;
        assert_eq!(&b[..8], &want);
        assert_eq!(&b[512..520], &(101u64 * 512).to_le_bytes());
    }
    reg.remove(&sel("cr"), false).unwrap();
    let t = format!("0 1024 flakey {a} 0 0 1 5 corrupt_bio_byte 1 w 90 131072");
    create(&reg, "cw", &t).unwrap();
    {
        let (d, _g) = open(&reg, "cw");
        write(&*d, 6, &[6; 512]).unwrap();
        let mine = vec![7u8; 512];
        let (r, back) = sync::submit_wait(&*d, |done| {
            Bio::write(Sectors(7), IoBuf::from_slice(&mine), done).with_flags(udm_io::BioFlags::FUA)
        });
        r.unwrap();
        assert_eq!(
            back.as_slice(),
            &mine[..],
            "the caller's buffer is left alone"
        );
    }
    reg.remove(&sel("cw"), false).unwrap();
    let raw = std::fs::read(&a).unwrap();
    assert_eq!(
        raw[6 * 512],
        6,
        "flags mask: plain writes are not corrupted"
    );
    assert_eq!(raw[7 * 512], 90);
    assert!(raw[7 * 512 + 1..8 * 512].iter().all(|&x| x == 7));
    // Random corruption with probability 1: exactly one byte may change per read.
    let t = format!("0 1024 flakey {a} 0 0 1 2 random_read_corrupt 1000000000");
    create(&reg, "rr", &t).unwrap();
    assert_eq!(
        table(&reg, "rr"),
        format!("0 1024 flakey {a} 0 0 1 2 random_read_corrupt 1000000000 \n")
    );
    {
        let (d, _g) = open(&reg, "rr");
        let mut changed = 0;
        for s in 200..264u64 {
            let b = read(&*d, s, 512).unwrap();
            let mut want = Vec::new();
            for w in 0..64u64 {
                want.extend_from_slice(&(s * 512 + w * 8).to_le_bytes());
            }
            let diff = b.iter().zip(&want).filter(|(x, y)| x != y).count();
            assert!(diff <= 1);
            changed += diff;
        }
        assert!(changed > 50, "only {changed} of 64 reads corrupted");
    }
    reg.remove(&sel("rr"), false).unwrap();
    let err = create(
        &reg,
        "x",
        &format!("0 8 flakey {a} 0 1 1 3 error_reads error_writes"),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("Invalid number of feature args"),
        "{err}"
    );
}

#[test]
fn dust_one_bad_sector_example() {
    let dir = tempfile::tempdir().unwrap();
    let a = img(dir.path(), "a.img", 2048, 0);
    let reg = reg();
    create(&reg, "bad", &format!("0 2048 dust {a} 0 512")).unwrap();
    assert_eq!(
        status(&reg, "bad"),
        format!("0 2048 dust {a} bypass verbose\n")
    );
    assert_eq!(message(&reg, "bad", "addbadblock 100").unwrap(), "");
    assert_eq!(message(&reg, "bad", "addbadblock 101 1").unwrap(), "");
    let (d, _g) = open(&reg, "bad");
    // Bad blocks only fail once enabled.
    assert!(read(&*d, 100, 512).is_ok());
    message(&reg, "bad", "enable").unwrap();
    assert_eq!(read(&*d, 100, 512), Err(IoError::Io));
    assert_eq!(
        read(&*d, 99, 1024),
        Err(IoError::Io),
        "the bio is split per block"
    );
    assert!(read(&*d, 102, 512).is_ok());
    assert_eq!(
        message(&reg, "bad", "countbadblocks").unwrap(),
        "countbadblocks: 2 badblock(s) found\n"
    );
    // A write remaps the block: it leaves the list (after its write-fail count).
    write(&*d, 100, &[1; 512]).unwrap();
    assert_eq!(read(&*d, 100, 512).unwrap(), vec![1; 512]);
    assert_eq!(write(&*d, 101, &[2; 512]), Err(IoError::Io));
    write(&*d, 101, &[2; 512]).unwrap();
    assert_eq!(
        message(&reg, "bad", "listbadblocks").unwrap(),
        "No blocks in badblocklist\n"
    );
    assert!(message(&reg, "bad", "removebadblock 100").is_err());
    message(&reg, "bad", "quiet").unwrap();
    assert_eq!(
        status(&reg, "bad"),
        format!("0 2048 dust {a} fail_read_on_bad_block quiet\n")
    );
}

#[test]
fn switch_routes_regions_by_message() {
    let dir = tempfile::tempdir().unwrap();
    let a = img(dir.path(), "a.img", 4096, 0);
    let b = img(dir.path(), "b.img", 4096, B_XOR);
    let reg = reg();
    create(&reg, "sw", &format!("0 1024 switch 2 64 0 {a} 0 {b} 1024")).unwrap();
    let (d, _g) = open(&reg, "sw");
    let path_of = |s: u64| {
        let w = word(&*d, s);
        if w & B_XOR == B_XOR {
            assert_eq!(w ^ B_XOR, (s + 1024) * 512);
            1
        } else {
            assert_eq!(w, s * 512);
            0
        }
    };
    // Round robin to start with.
    let got: Vec<u32> = (0..16).map(|r| path_of(r * 64 + 5)).collect();
    assert_eq!(got, (0..16).map(|r| r % 2).collect::<Vec<_>>());
    // 0->1, 1->1, then copy the last two regions' mapping over the next 4 (R2,4).
    message(&reg, "sw", "set_region_mappings 0:1 :1 2:0 R2,4").unwrap();
    let got: Vec<u32> = (0..8).map(|r| path_of(r * 64)).collect();
    assert_eq!(got, vec![1, 1, 0, 1, 0, 1, 0, 1]);
    assert!(message(&reg, "sw", "set_region_mappings 10:0").is_err());
    assert!(message(&reg, "sw", "set_region_mappings 0:2").is_err());
    assert!(message(&reg, "sw", "nonsense").is_err());
    // A bio crossing a region boundary is split between paths.
    let w = read(&*d, 60, 8 * 512).unwrap();
    assert_eq!(
        u64::from_le_bytes(w[..8].try_into().unwrap()),
        ((60 + 1024) * 512) ^ B_XOR
    );
}

#[test]
fn unstriped_exposes_one_stripe_of_a_striped_layout() {
    let dir = tempfile::tempdir().unwrap();
    // The image is the striped layout itself: 16-sector chunks, alternating stripes 0, 1, 2.
    let a = img(dir.path(), "a.img", 4096, 0);
    let reg = reg();
    create(&reg, "u1", &format!("0 1024 unstriped 3 16 1 {a} 64")).unwrap();
    assert_eq!(
        table(&reg, "u1"),
        format!("0 1024 unstriped 3 16 1 {a} 64\n")
    );
    assert_eq!(status(&reg, "u1"), "0 1024 unstriped \n");
    let (d, _g) = open(&reg, "u1");
    for s in [0u64, 15, 16, 100, 1023] {
        let chunk = s / 16;
        let on_dev = 64 + (chunk * 3 + 1) * 16 + s % 16;
        assert_eq!(word(&*d, s), on_dev * 512, "sector {s}");
    }
    // A write spanning two chunks lands in both, with the other stripes' chunks between.
    write(&*d, 10, &vec![0x11; 12 * 512]).unwrap();
    let raw = std::fs::read(&a).unwrap();
    let sec = |n: u64| &raw[(n * 512) as usize..(n * 512 + 512) as usize];
    assert!((64 + 16 + 10..64 + 32).all(|n| sec(n).iter().all(|&x| x == 0x11)));
    assert_eq!(&sec(64 + 32)[..8], &((64 + 32) * 512u64).to_le_bytes());
    assert!((64 + 64..64 + 64 + 6).all(|n| sec(n).iter().all(|&x| x == 0x11)));
    let e = create(&reg, "bad", &format!("0 1000 unstriped 2 16 0 {a} 0")).unwrap_err();
    assert!(
        e.to_string()
            .contains("Target length not divisible by chunk size"),
        "{e}"
    );
}

#[test]
fn ebs_read_modify_writes_partial_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let a = img(dir.path(), "a.img", 4096, 0);
    let reg = reg();
    create(&reg, "e", &format!("0 2048 ebs {a} 1024 1 8")).unwrap();
    assert_eq!(table(&reg, "e"), format!("0 2048 ebs {a} 1024 1 8\n"));
    let info = reg.open(&sel("e")).unwrap();
    let (d, _g) = info;
    assert_eq!(d.limits().logical_block_size, 512);
    assert_eq!(d.limits().physical_block_size, 4096);
    // Unaligned writes land exactly, neighbours untouched.
    write(&*d, 3, &[0xee; 512]).unwrap();
    write(&*d, 13, &vec![0xdd; 9 * 512]).unwrap();
    let raw = std::fs::read(&a).unwrap();
    let at = |s: u64| &raw[((1024 + s) * 512) as usize..((1025 + s) * 512) as usize];
    assert!(at(3).iter().all(|&x| x == 0xee));
    assert_eq!(&at(2)[..8], &((1024 + 2) * 512u64).to_le_bytes());
    assert_eq!(&at(4)[..8], &((1024 + 4) * 512u64).to_le_bytes());
    assert!((13..22).all(|s| at(s).iter().all(|&x| x == 0xdd)));
    assert_eq!(&at(22)[..8], &((1024 + 22) * 512u64).to_le_bytes());
    assert_eq!(read(&*d, 3, 512).unwrap(), vec![0xee; 512]);
    // Many concurrent unaligned writes to one block all land (the worker is ordered).
    let rxs: Vec<_> = (0..8u64)
        .map(|i| {
            let (tx, rx) = std::sync::mpsc::channel();
            d.submit(Bio::write(
                Sectors(40 + i),
                IoBuf::from_slice(&[i as u8 + 1; 512]),
                Box::new(move |r, _| {
                    let _ = tx.send(r);
                }),
            ));
            rx
        })
        .collect();
    for rx in rxs {
        rx.recv().unwrap().unwrap();
    }
    for i in 0..8u64 {
        assert_eq!(read(&*d, 40 + i, 512).unwrap(), vec![i as u8 + 1; 512]);
    }
    let e = create(&reg, "bad", &format!("0 2048 ebs {a} 4 1 8")).unwrap_err();
    assert!(
        e.to_string().contains("Device offset must be multiple"),
        "{e}"
    );
}

#[test]
fn faults_switch_by_table_reload_while_io_runs() {
    let dir = tempfile::tempdir().unwrap();
    let a = img(dir.path(), "a.img", 2048, 0);
    let clock = ManualClock::new();
    let reg = manual_reg(&clock);
    create(&reg, "f", &format!("0 1024 delay {a} 0 0")).unwrap();
    let (d, _g) = open(&reg, "f");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let worker = {
        let (d, stop, errors) = (d.clone(), stop.clone(), errors.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if read(&*d, n % 1024, 512).is_err() {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                n += 1;
            }
        })
    };
    let reload = |t: String| {
        let l = udm_core::parse_table_text(&t).unwrap();
        reg.load(&sel("f"), &l, false).unwrap();
        reg.resume(&sel("f")).unwrap();
    };
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(errors.load(std::sync::atomic::Ordering::Relaxed), 0);
    // Into an always-down flakey: reads start failing.
    reload(format!("0 1024 flakey {a} 0 0 1"));
    std::thread::sleep(Duration::from_millis(50));
    let failing = errors.load(std::sync::atomic::Ordering::Relaxed);
    assert!(failing > 0);
    // Back to a healthy mapping: the errors stop.
    reload(format!("0 1024 flakey {a} 0 1 0"));
    std::thread::sleep(Duration::from_millis(20));
    let settled = errors.load(std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(errors.load(std::sync::atomic::Ordering::Relaxed), settled);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    worker.join().unwrap();
}

/// A region table no machine could hold (2^50 one-sector regions over a huge stacked zero
/// device) is refused with ENOMEM, as in the kernel, rather than aborting the process.
#[test]
fn switch_region_table_that_cannot_be_allocated_is_enomem() {
    let reg = reg();
    let len = 1u64 << 50;
    create(&reg, "z", &format!("0 {len} zero")).unwrap();
    reg.create("sw", "").unwrap();
    let t = format!("0 {len} switch 1 1 0 253:0 0");
    let e = reg
        .load(&sel("sw"), &udm_core::parse_table_text(&t).unwrap(), false)
        .unwrap_err();
    assert_eq!(e.errno(), libc::ENOMEM, "{e}");
}
