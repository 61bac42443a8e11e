//! Device lifecycle under I/O: suspend holds bios and resume releases them with nothing lost,
//! reloads swap atomically under concurrent readers, open devices can't be removed, stacking,
//! a removed device releases the devices below it at once.

mod common;
use common::*;
use crossbeam_channel::unbounded;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use udm_core::DmError;
use udm_io::{Bio, IoBuf, Sectors};

#[test]
fn suspend_holds_io_and_resume_releases_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = image(dir.path(), "a.img", 2048, 0);
    let reg = registry();
    create(&reg, "d", &format!("0 2048 linear {} 0", a.display())).unwrap();
    let (dev, _g) = open(&reg, "d");
    reg.suspend(&sel("d"), false, false).unwrap();
    assert!(reg.info(&sel("d"), false).unwrap().suspended);
    let (tx, rx) = unbounded();
    for i in 0..16u64 {
        let tx = tx.clone();
        dev.submit(Bio::write(
            Sectors(i * 8),
            IoBuf::from_slice(&[i as u8 + 1; 4096]),
            Box::new(move |r, _| tx.send((i, r)).unwrap()),
        ));
    }
    // Held, not failed.
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "I/O completed while suspended"
    );
    reg.resume(&sel("d")).unwrap();
    let mut done: Vec<_> = (0..16)
        .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    done.sort_by_key(|d| d.0);
    assert!(done.iter().all(|(_, r)| r.is_ok()));
    let file = std::fs::read(&a).unwrap();
    for i in 0..16usize {
        assert!(
            file[i * 4096..(i + 1) * 4096]
                .iter()
                .all(|&b| b == i as u8 + 1),
            "block {i}"
        );
    }
}

#[test]
fn suspend_waits_for_in_flight_io() {
    // `linear` over a device whose bios wait at a gate: they stay in flight until released,
    // so a suspend that did not drain would return while they are still held.
    let reg = registry();
    let remap = udm_testkit::gate::RemapType::new();
    reg.target_types().register(Arc::new(remap.clone()));
    let mem = Arc::new(udm_io::MemDevice::new("m", Sectors(8192)));
    let gate = udm_testkit::gate::GateDevice::new(mem.clone());
    remap.insert("g", gate.clone());
    create(&reg, "g", "0 8192 testdev g").unwrap();
    let g_minor = reg.info(&sel("g"), false).unwrap().minor;
    create(&reg, "d", &format!("0 8192 linear 253:{g_minor} 0")).unwrap();
    let (dev, _g) = open(&reg, "d");
    let (tx, rx) = unbounded();
    for i in 0..64u64 {
        let tx = tx.clone();
        dev.submit(Bio::write(
            Sectors(i * 128),
            IoBuf::from_slice(&[9; 65536]),
            Box::new(move |r, _| tx.send(("io", r)).unwrap()),
        ));
    }
    assert!(gate.wait_held(64, Duration::from_secs(20)));
    let reg2 = reg.clone();
    let (sus_tx, sus_rx) = unbounded();
    let suspender = std::thread::spawn(move || {
        reg2.suspend(&sel("d"), false, false).unwrap();
        // What the device below holds the moment the suspend returns.
        sus_tx.send(mem.snapshot()).unwrap();
    });
    // Held below, so the suspend cannot have finished.
    assert!(
        sus_rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "suspend returned while writes were in flight"
    );
    assert!(rx.try_recv().is_err());
    assert_eq!(gate.release_all(), 64);
    suspender.join().unwrap();
    // Every write had reached the device by the time the suspend returned.
    let data = sus_rx.recv().unwrap();
    assert!(data.iter().all(|&b| b == 9), "a write was still in flight");
    let done: Vec<_> = (0..64)
        .map(|_| rx.recv_timeout(Duration::from_secs(20)).unwrap())
        .collect();
    assert!(done.iter().all(|(_, r)| r.is_ok()));
    reg.resume(&sel("d")).unwrap();
}

#[test]
fn reload_swaps_atomically_under_concurrent_io() {
    let dir = tempfile::tempdir().unwrap();
    let a = image(dir.path(), "a.img", 4096, 0xaa);
    let b = image(dir.path(), "b.img", 4096, 0xbb);
    let reg = registry();
    create(&reg, "d", &format!("0 4096 linear {} 0", a.display())).unwrap();
    let (dev, _g) = open(&reg, "d");
    let stop = Arc::new(AtomicBool::new(false));
    let seen_b = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..4)
        .map(|t| {
            let (dev, stop, seen_b) = (dev.clone(), stop.clone(), seen_b.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // A 1 MiB read: one bio, so it must come wholly from one table.
                    let s = (n * 7 + t) % 2048;
                    let data = read(dev.as_ref(), s, 1 << 20);
                    let first = data[0];
                    assert!(first == 0xaa || first == 0xbb);
                    assert!(data.iter().all(|&x| x == first), "a read mixed two tables");
                    if first == 0xbb {
                        seen_b.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    reg.load(
        &sel("d"),
        &lines(&format!("0 4096 linear {} 0", b.display())),
        false,
    )
    .unwrap();
    // Loading alone changes nothing.
    assert_eq!(read(dev.as_ref(), 0, 512)[0], 0xaa);
    reg.resume(&sel("d")).unwrap();
    assert_eq!(read(dev.as_ref(), 0, 512)[0], 0xbb);
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert!(seen_b.load(Ordering::Relaxed) > 0);
    assert_eq!(
        reg.info(&sel("d"), false).unwrap().event_nr,
        0,
        "resumes raise no events"
    );
}

#[test]
fn open_devices_cannot_be_removed_and_deferred_remove_waits_for_close() {
    let reg = registry();
    create(&reg, "d", "0 64 zero").unwrap();
    let (dev, g) = open(&reg, "d");
    assert_eq!(reg.info(&sel("d"), false).unwrap().open_count, 1);
    let e = reg.remove(&sel("d"), false).unwrap_err();
    assert!(matches!(e, DmError::Busy(_)));
    assert_eq!(e.errno(), 16);
    // Still usable.
    assert_eq!(read(dev.as_ref(), 0, 512), vec![0; 512]);
    reg.remove(&sel("d"), true).unwrap();
    assert!(reg.info(&sel("d"), false).unwrap().deferred_remove);
    drop(g);
    for _ in 0..100 {
        if reg.info(&sel("d"), false).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("deferred remove did not happen on last close");
}

#[test]
fn stacking_two_levels() {
    let dir = tempfile::tempdir().unwrap();
    let a = image(dir.path(), "a.img", 1024, 0);
    let b = image(dir.path(), "b.img", 1024, 0);
    let reg = registry();
    create(
        &reg,
        "st",
        &format!("0 2048 striped 2 8 {} 0 {} 0", a.display(), b.display()),
    )
    .unwrap();
    // Level 1 by name, level 2 by major:minor.
    create(&reg, "mid", "0 1024 linear /dev/mapper/st 1024").unwrap();
    let mid = reg.info(&sel("mid"), false).unwrap();
    create(
        &reg,
        "top",
        &format!("0 512 linear {}:{} 256", mid.major, mid.minor),
    )
    .unwrap();
    assert_eq!(reg.info(&sel("st"), false).unwrap().open_count, 1);
    let (_, deps) = reg.deps(&sel("top"), false).unwrap();
    assert_eq!(deps[0].dm_name.as_deref(), Some("mid"));
    let (_, t) = reg
        .status(&sel("top"), false, udm_core::StatusType::Table)
        .unwrap();
    assert_eq!(t[0].params, format!("253:{} 256", mid.minor));
    let (dev, _g) = open(&reg, "top");
    let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    write(dev.as_ref(), 0, &data);
    // top 0 = mid 256 = st 1280 → chunk 160: leg 0, row 80 → leg sector 640.
    let fa = std::fs::read(&a).unwrap();
    assert_eq!(&fa[640 * 512..640 * 512 + 4096], &data[..]);
    // The lower device is busy while the upper exists.
    assert!(matches!(
        reg.remove(&sel("st"), false),
        Err(DmError::Busy(_))
    ));
    drop(_g);
    drop(dev);
    reg.remove(&sel("top"), false).unwrap();
    reg.remove(&sel("mid"), false).unwrap();
    reg.remove(&sel("st"), false).unwrap();
}

/// `dmsetup remove top && dmsetup remove bottom`: the kernel's destructor releases the
/// devices below before the remove returns, so they are free at once, even under targets
/// with background threads (integrity's commit and write-back threads, delay's timer) or
/// completions still returning on pool threads (mirror). Checked through the open counts,
/// without the remove's grace for departing clients.
#[test]
fn removing_the_top_releases_the_devices_below_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry();
    let tops = [
        "integrity /dev/mapper/b0 0 4 J 2 journal_sectors:704 internal_hash:crc32c",
        "integrity /dev/mapper/b0 0 4 B 1 internal_hash:crc32c",
        "delay /dev/mapper/b0 0 10 /dev/mapper/b1 0 0",
        "snapshot /dev/mapper/b0 /dev/mapper/b1 P 8",
        "snapshot-origin /dev/mapper/b0",
        "mirror core 1 1024 2 /dev/mapper/b0 0 /dev/mapper/b1 0",
    ];
    for round in 0..4u64 {
        for rest in tops {
            for n in ["b0", "b1"] {
                let a = image(dir.path(), &format!("{n}.img"), 8192, 0);
                create(&reg, n, &format!("0 8192 linear {} 0", a.display())).unwrap();
            }
            create(&reg, "top", &format!("0 2048 {rest}")).unwrap();
            {
                let (dev, _g) = open(&reg, "top");
                write(dev.as_ref(), round * 8, &[round as u8 + 1; 4096]);
                udm_io::sync::flush(dev.as_ref()).unwrap();
            }
            reg.remove(&sel("top"), false).unwrap();
            for n in ["b0", "b1"] {
                assert_eq!(
                    reg.info(&sel(n), false).unwrap().open_count,
                    0,
                    "round {round}: `{rest}` still holds {n} after its remove"
                );
                reg.remove(&sel(n), false).unwrap();
            }
        }
    }
}

#[test]
fn remove_all_unwinds_stacks() {
    let reg = registry();
    create(&reg, "a", "0 64 zero").unwrap();
    create(&reg, "b", "0 64 linear /dev/mapper/a 0").unwrap();
    create(&reg, "c", "0 64 linear /dev/mapper/b 0").unwrap();
    assert_eq!(reg.remove_all(false), 0);
    assert!(reg.list().is_empty());
}

#[test]
fn io_beyond_the_end_and_writes_to_read_only_fail() {
    let reg = registry();
    reg.create("ro", "").unwrap();
    reg.load(&sel("ro"), &lines("0 64 zero"), true).unwrap();
    reg.resume(&sel("ro")).unwrap();
    assert!(reg.info(&sel("ro"), false).unwrap().read_only);
    let (dev, _g) = open(&reg, "ro");
    assert!(udm_io::sync::write_at(dev.as_ref(), Sectors(0), &[1; 512]).is_err());
    assert!(udm_io::sync::read_at(dev.as_ref(), Sectors(64), 512).is_err());
    assert!(udm_io::sync::read_at(dev.as_ref(), Sectors(60), 4096).is_err());
    assert_eq!(read(dev.as_ref(), 56, 4096), vec![0; 4096]);
}

#[test]
fn error_target_fails_its_range_only() {
    let dir = tempfile::tempdir().unwrap();
    let a = image(dir.path(), "a.img", 204800, 0x5a);
    let reg = registry();
    let p = a.display();
    create(
        &reg,
        "bad_disk",
        &format!("0 8 linear {p} 0\n8 1 error\n9 204791 linear {p} 9"),
    )
    .unwrap();
    let (dev, _g) = open(&reg, "bad_disk");
    assert_eq!(read(dev.as_ref(), 0, 4096), vec![0x5a; 4096]);
    assert!(udm_io::sync::read_at(dev.as_ref(), Sectors(0), 5120).is_err());
    assert_eq!(read(dev.as_ref(), 9, 4096), vec![0x5a; 4096]);
}

/// A test target that raises a dm event when sent `poke`.
struct Poker;
struct PokerTarget(udm_core::EventTrigger);
impl udm_core::Target for PokerTarget {
    fn map(&self, bio: Bio) -> udm_core::MapResult {
        bio.complete(Ok(()));
        udm_core::MapResult::Submitted
    }
    fn message(&self, argv: &[String]) -> Result<Option<String>, udm_core::TargetError> {
        if argv == ["poke"] {
            (self.0)();
            return Ok(None);
        }
        Err(udm_core::TargetError::invalid("unknown"))
    }
}
impl udm_core::TargetType for Poker {
    fn name(&self) -> &'static str {
        "poker"
    }
    fn version(&self) -> [u32; 3] {
        [1, 0, 0]
    }
    fn construct(
        &self,
        ctx: &mut udm_core::TargetCtx<'_>,
        _: &[String],
    ) -> Result<Box<dyn udm_core::Target>, udm_core::TargetError> {
        Ok(Box::new(PokerTarget(ctx.event_trigger())))
    }
}

#[test]
fn target_events_bump_the_event_number_and_wake_waiters() {
    let types = udm_targets::builtin();
    types.register(Arc::new(Poker));
    let reg = udm_core::Registry::new(types);
    create(&reg, "p", "0 8 poker").unwrap();
    assert_eq!(reg.info(&sel("p"), false).unwrap().event_nr, 0);
    let r2 = reg.clone();
    let waiter = std::thread::spawn(move || {
        r2.wait(&sel("p"), 0, Some(Duration::from_secs(5)))
            .map(|i| i.event_nr)
    });
    std::thread::sleep(Duration::from_millis(100));
    reg.message(&sel("p"), 0, &["poke".to_string()]).unwrap();
    assert_eq!(waiter.join().unwrap().unwrap(), 1);
    assert!(
        reg.wait(&sel("p"), 1, Some(Duration::from_millis(100)))
            .is_err(),
        "no new event: times out"
    );
}

#[test]
fn a_grown_image_file_shows_its_new_size_to_the_next_table() {
    let dir = tempfile::tempdir().unwrap();
    let a = image(dir.path(), "a.img", 1024, 1);
    let reg = registry();
    let p = a.display();
    create(&reg, "g", &format!("0 1024 linear {p} 0")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&a)
        .unwrap()
        .set_len(2048 * 512)
        .unwrap();
    reg.load(&sel("g"), &lines(&format!("0 2048 linear {p} 0")), false)
        .unwrap();
    reg.resume(&sel("g")).unwrap();
    let (dev, _g) = open(&reg, "g");
    assert_eq!(dev.size(), Sectors(2048));
    write(dev.as_ref(), 2000, &[7; 512]);
    assert_eq!(read(dev.as_ref(), 0, 512), vec![1; 512]);
}
