//! The `mirror` target: resync makes the legs identical, random writes (fixed, printed seed)
//! reach every leg, reads are spread over the legs, the disk log holds the kernel's format,
//! and a leg that dies (a stacked udm device reloaded with `error`) is marked in the status
//! while I/O goes on.

mod common;
use common::*;
use std::time::{Duration, Instant};
use udm_core::StatusType;
use udm_testkit::rng::XorShift;

const SECTORS: u64 = 8192;

fn info(reg: &udm_core::Registry, name: &str) -> String {
    let (_, st) = reg.status(&sel(name), false, StatusType::Info).unwrap();
    st[0].params.clone()
}

fn table(reg: &udm_core::Registry, name: &str) -> String {
    let (_, st) = reg.status(&sel(name), false, StatusType::Table).unwrap();
    st[0].params.clone()
}

/// Wait (up to 30 s) until `name`'s status has `want` as its sync ratio.
fn wait_sync(reg: &udm_core::Registry, name: &str, want: &str) -> String {
    let t = Instant::now();
    loop {
        let s = info(reg, name);
        if s.split(' ').any(|f| f == want) {
            return s;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no {want} in {s}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reload `name` with `t` (suspend, swap, resume), as `dmsetup reload` + `resume`.
fn reload(reg: &udm_core::Registry, name: &str, t: &str) {
    reg.load(&sel(name), &lines(t), false).unwrap();
    reg.resume(&sel(name)).unwrap();
}

#[test]
fn resync_copies_the_default_leg_and_writes_reach_every_leg() {
    let seed = udm_testkit::prop::seed();
    eprintln!("mirror: seed {seed:#x} (UDM_PROPTEST_SEED overrides)");
    let mut rng = XorShift::mixed(seed);
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let mut model = udm_testkit::rng::pseudo((SECTORS * 512) as usize, seed);
    std::fs::write(&a, &model).unwrap();
    let b = image(dir.path(), "b", SECTORS + 64, 0x5a);
    let c = image(dir.path(), "c", SECTORS, 0);
    let t = format!(
        "0 {SECTORS} mirror core 1 512 3 {} 0 {} 64 {} 0",
        a.display(),
        b.display(),
        c.display()
    );
    let reg = registry();
    create(&reg, "m", &t).unwrap();
    assert_eq!(
        table(&reg, "m"),
        format!(
            "core 1 512 3 {} 0 {} 64 {} 0",
            a.display(),
            b.display(),
            c.display()
        )
    );
    let s = wait_sync(&reg, "m", "16/16");
    assert_eq!(
        s,
        format!(
            "3 {} {} {} 16/16 1 AAA 1 core",
            a.display(),
            b.display(),
            c.display()
        )
    );
    {
        let (dev, _g) = open(&reg, "m");
        for _ in 0..300 {
            let s = rng.below(SECTORS);
            let len = (1 + rng.below(1200)).min(SECTORS - s);
            let (x, y) = ((s * 512) as usize, ((s + len) * 512) as usize);
            if rng.below(3) == 0 {
                assert_eq!(read(&*dev, s, y - x), &model[x..y], "read at {s}+{len}");
            } else {
                let data = rng.bytes(y - x);
                model[x..y].copy_from_slice(&data);
                write(&*dev, s, &data);
            }
        }
        assert_eq!(read(&*dev, 0, model.len()), model);
    }
    reg.remove(&sel("m"), false).unwrap();
    let bb = std::fs::read(&b).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), model);
    assert_eq!(&bb[64 * 512..], &model[..]);
    assert_eq!(std::fs::read(&c).unwrap(), model);
}

#[test]
fn disk_log_is_written_in_the_kernel_format() {
    let dir = tempfile::tempdir().unwrap();
    let a = image(dir.path(), "a", SECTORS, 1);
    let b = image(dir.path(), "b", SECTORS, 2);
    let log = image(dir.path(), "log", 8, 0x77);
    let reg = registry();
    let t = |sync: &str| {
        format!(
            "0 {SECTORS} mirror disk {} {} 1024{sync} 2 {} 0 {} 0",
            if sync.is_empty() { 2 } else { 3 },
            log.display(),
            a.display(),
            b.display()
        )
    };
    create(&reg, "m", &t("")).unwrap();
    wait_sync(&reg, "m", "8/8");
    assert_eq!(
        info(&reg, "m"),
        format!(
            "2 {} {} 8/8 1 AA 3 disk {} A",
            a.display(),
            b.display(),
            log.display()
        )
    );
    {
        let (dev, _g) = open(&reg, "m");
        write(&*dev, 1500, &[9u8; 4096]);
    }
    reg.remove(&sel("m"), false).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let l = std::fs::read(&log).unwrap();
    assert_eq!(&l[0..16], b"rRiM\x02\0\0\0\x08\0\0\0\0\0\0\0");
    // Bytes between the header and the bits are kept as they were on the device.
    assert!(l[16..1024].iter().all(|&x| x == 0x77));
    assert_eq!(&l[1024..1028], &[0xff, 0, 0, 0]);
    assert!(l[1028..1536].iter().all(|&x| x == 0x77));
    assert!(l[1536..].iter().all(|&x| x == 0x77));
    // A reopened log trusts its clean bits: the legs differ on purpose and stay so.
    std::fs::write(&b, vec![3u8; (SECTORS * 512) as usize]).unwrap();
    create(&reg, "m", &t("")).unwrap();
    assert!(info(&reg, "m").contains(" 8/8 1 AA "));
    reg.remove(&sel("m"), false).unwrap();
    assert_eq!(
        std::fs::read(&b).unwrap(),
        vec![3u8; (SECTORS * 512) as usize]
    );
    // `sync` forces a full resync.
    create(&reg, "m", &t(" sync")).unwrap();
    wait_sync(&reg, "m", "8/8");
    reg.remove(&sel("m"), false).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn a_dead_leg_is_marked_and_io_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let a = image(dir.path(), "a", SECTORS, 0);
    let b = image(dir.path(), "b", SECTORS, 0);
    let reg = registry();
    let good = format!("0 {SECTORS} linear {} 0", b.display());
    create(&reg, "leg", &good).unwrap();
    let t = format!(
        "0 {SECTORS} mirror core 2 1024 nosync 2 {} 0 /dev/mapper/leg 0 2 handle_errors keep_log",
        a.display()
    );
    create(&reg, "m", &t).unwrap();
    let ev0 = reg.info(&sel("m"), false).unwrap().event_nr;
    let (dev, _g) = open(&reg, "m");
    write(&*dev, 0, &[1u8; 4096]);
    reload(&reg, "leg", &format!("0 {SECTORS} error"));
    // The write succeeds on the live leg; the dead one is marked D and an event raised.
    write(&*dev, 8, &[2u8; 4096]);
    let s = info(&reg, "m");
    assert!(s.contains(" 7/8 1 AD 1 core"), "{s}");
    assert!(reg.info(&sel("m"), false).unwrap().event_nr > ev0);
    // Reads only go to the healthy leg.
    for _ in 0..4 {
        assert_eq!(read(&*dev, 8, 4096), vec![2u8; 4096]);
    }
    // Failed reads of the default leg move to another leg.
    reload(&reg, "leg", &good);
    drop((dev, _g));
    reg.remove(&sel("m"), false).unwrap();
    let t2 = format!(
        "0 {SECTORS} mirror core 2 1024 nosync 2 /dev/mapper/leg 0 {} 0 1 handle_errors",
        a.display()
    );
    create(&reg, "m", &t2).unwrap();
    reload(&reg, "leg", &format!("0 {SECTORS} error"));
    let (dev, _g) = open(&reg, "m");
    for _ in 0..3 {
        assert_eq!(read(&*dev, 8, 4096), vec![2u8; 4096]);
    }
    let s = info(&reg, "m");
    assert!(s.contains(" 8/8 1 RA 1 core"), "{s}");
}

#[test]
fn reads_of_in_sync_regions_are_spread_over_the_legs() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry();
    for n in ["la", "lb"] {
        let f = image(dir.path(), n, SECTORS, 0);
        create(&reg, n, &format!("0 {SECTORS} linear {} 0", f.display())).unwrap();
    }
    let t = format!("0 {SECTORS} mirror core 2 1024 nosync 2 /dev/mapper/la 0 /dev/mapper/lb 0");
    create(&reg, "m", &t).unwrap();
    let ios = |n: &str| reg.get(&sel(n)).unwrap().stats().snapshot().ios;
    let (a0, b0) = (ios("la"), ios("lb"));
    {
        let (dev, _g) = open(&reg, "m");
        for i in 0..64 {
            read(&*dev, i * 8, 4096);
        }
        write(&*dev, 0, &[1u8; 4096]);
    }
    let (a1, b1) = (ios("la"), ios("lb"));
    let (ra, rb) = (a1[0] - a0[0], b1[0] - b0[0]);
    assert_eq!(ra + rb, 64);
    assert!(ra >= 16 && rb >= 16, "reads per leg: {ra} and {rb}");
    // The write reached both legs.
    assert!(a1[1] > a0[1] && b1[1] > b0[1]);
}

/// A table whose length asks for a core log bitmap no machine has (2^61 regions: 2^56
/// bytes, past any address space) is refused with ENOMEM before anything else, as the
/// kernel's failed bitmap allocation is — the process does not abort.
#[test]
fn a_core_log_that_cannot_be_allocated_is_enomem() {
    let dir = tempfile::tempdir().unwrap();
    let a = image(dir.path(), "a", 64, 0);
    let reg = registry();
    reg.create("huge", "").unwrap();
    let t = format!(
        "0 {} mirror core 1 2 2 {} 0 {} 0",
        1u64 << 62,
        a.display(),
        a.display()
    );
    let e = reg.load(&sel("huge"), &lines(&t), false).unwrap_err();
    assert_eq!(e.errno(), libc::ENOMEM, "{e}");
}
