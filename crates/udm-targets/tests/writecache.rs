//! The `writecache` target: random reads, writes and flushes against a model (fixed,
//! printed seed; `UDM_PROPTEST_SEED` overrides) through a cache smaller than the hot set, so
//! watermark writeback runs under load, with reloads (other options) and remove/recreate in
//! between; the `flush` message leaves the origin equal to the model. The status counters
//! follow the kernel's rules (the numbers a 6.1 kernel printed for the same I/O), discards
//! drop cached blocks, and the constructor's errors are the kernel's.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use udm_io::BlockDevice;
use udm_testkit::rng::XorShift;

const BS: u64 = 8; // 4096-byte blocks
const ORIGIN: u64 = 16384; // sectors: 2048 blocks
const CACHE_BYTES: u64 = 72 * 4096; // 71 blocks after the metadata

fn table(origin: &Path, cache: &Path, opts: &str) -> String {
    format!(
        "0 {ORIGIN} writecache s {} {} 4096 {opts}",
        origin.display(),
        cache.display()
    )
}

fn fields(reg: &udm_core::Registry, name: &str) -> Vec<u64> {
    status_fields(reg, name)
        .iter()
        .map(|f| f.parse().unwrap())
        .collect()
}

fn setup(seed: u64) -> (tempfile::TempDir, PathBuf, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let origin = dir.path().join("origin");
    let model = udm_testkit::rng::pseudo((ORIGIN * 512) as usize, seed);
    std::fs::write(&origin, &model).unwrap();
    let cache = zero_file(dir.path(), "cache", CACHE_BYTES);
    (dir, origin, cache, model)
}

fn workload(dev: &dyn BlockDevice, model: &mut [u8], rng: &mut XorShift, ops: usize) {
    let hot = 160; // blocks, over twice the cache
    for _ in 0..ops {
        let block = if rng.below(4) < 3 {
            rng.below(hot)
        } else {
            rng.below(ORIGIN / BS)
        };
        let n = (1 + rng.below(8)).min(ORIGIN / BS - block);
        let (a, b) = ((block * 4096) as usize, ((block + n) * 4096) as usize);
        match rng.below(10) {
            0 => udm_io::sync::flush(dev).unwrap(),
            1..=5 => {
                let data = rng.bytes(b - a);
                write(dev, block * BS, &data);
                model[a..b].copy_from_slice(&data);
            }
            _ => {
                let got = read(dev, block * BS, b - a);
                assert!(got == model[a..b], "read of blocks {block}+{n} differs");
            }
        }
    }
}

#[test]
fn random_io_matches_the_model_through_reloads_and_flush() {
    let seed = udm_testkit::prop::seed();
    eprintln!("writecache model: seed {seed:#x} (UDM_PROPTEST_SEED overrides)");
    let (_dir, origin, cache, mut model) = setup(seed);
    let mut rng = XorShift::mixed(seed);
    let reg = registry();
    let variants = [
        "2 pause_writeback 0",
        "4 high_watermark 20 low_watermark 10",
        "6 autocommit_blocks 3 pause_writeback 0 writeback_jobs 2",
        "2 autocommit_time 1",
    ];
    create(&reg, "w", &table(&origin, &cache, variants[0])).unwrap();
    for (round, v) in variants
        .iter()
        .enumerate()
        .skip(1)
        .chain([(0, &variants[0])])
    {
        {
            let (dev, _g) = open(&reg, "w");
            workload(&*dev, &mut model, &mut rng, 300);
        }
        eprintln!("round {round}: status {:?}", fields(&reg, "w"));
        if round % 2 == 1 {
            reg.load(&sel("w"), &lines(&table(&origin, &cache, v)), false)
                .unwrap();
            reg.suspend(&sel("w"), false, false).unwrap();
            reg.resume(&sel("w")).unwrap();
        } else {
            reg.remove(&sel("w"), false).unwrap();
            create(&reg, "w", &table(&origin, &cache, v)).unwrap();
        }
        let (dev, _g) = open(&reg, "w");
        let got = read(&*dev, 0, model.len());
        assert!(
            got == model,
            "round {round}: the device differs from the model"
        );
    }
    {
        let (dev, _g) = open(&reg, "w");
        workload(&*dev, &mut model, &mut rng, 100);
    }
    let st = fields(&reg, "w");
    assert_eq!(st[0], 0, "no error: {st:?}");
    assert!(st[6] > 0 && st[10] > 0, "writes went to the cache: {st:?}");
    reg.message(&sel("w"), 0, &["flush".to_string()]).unwrap();
    let st = fields(&reg, "w");
    assert_eq!((st[2], st[3]), (st[1], 0), "flush left every block free");
    reg.remove(&sel("w"), false).unwrap();
    assert!(
        std::fs::read(&origin).unwrap() == model,
        "the flush message left the origin unlike the model"
    );
}

#[test]
fn watermark_writeback_frees_blocks_without_a_flush() {
    let (_dir, origin, cache, mut model) = setup(3);
    let reg = registry();
    create(&reg, "w", &table(&origin, &cache, "2 pause_writeback 0")).unwrap();
    let (dev, _g) = open(&reg, "w");
    let n = fields(&reg, "w")[1];
    assert_eq!(n, 71);
    // 50% high watermark: writeback starts at 36 free blocks and stops above the low
    // watermark (45% used: 39 free).
    for b in 0..40u64 {
        let data = udm_testkit::rng::pseudo(4096, 100 + b);
        write(&*dev, b * 2 * BS, &data);
        model[(b * 2 * 4096) as usize..][..4096].copy_from_slice(&data);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while fields(&reg, "w")[2] < 40 {
        assert!(
            Instant::now() < deadline,
            "no writeback: {:?}",
            fields(&reg, "w")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let on_origin = std::fs::read(&origin).unwrap();
    assert!(
        on_origin[..4096] == model[..4096],
        "the oldest block was written back first"
    );
    assert!(read(&*dev, 0, model.len()) == model);
}

#[test]
fn status_counts_follow_the_kernel() {
    // The first four lines are what a 6.1 kernel printed for the same I/O (16 MiB origin,
    // 4 MiB cache, 4096-byte blocks); kernel_writecache checks the whole sequence in refvm.
    let dir = tempfile::tempdir().unwrap();
    let origin = zero_file(dir.path(), "o", 16 << 20);
    let cache = zero_file(dir.path(), "c", 4 << 20);
    let reg = registry();
    let t = format!(
        "0 32768 writecache s {} {} 4096 0",
        origin.display(),
        cache.display()
    );
    create(&reg, "w", &t).unwrap();
    let line = |reg: &udm_core::Registry| status_fields(reg, "w").join(" ");
    assert_eq!(line(&reg), "0 1020 1020 0 0 0 0 0 0 0 0 0 0 0");
    let (dev, _g) = open(&reg, "w");
    write(&*dev, 5 * BS, &[7u8; 3 * 4096]);
    assert_eq!(line(&reg), "0 1020 1017 0 0 0 3 0 0 0 3 0 0 0");
    let _ = read(&*dev, 0, 10 * 4096);
    assert_eq!(line(&reg), "0 1020 1017 0 10 3 3 0 0 0 3 0 0 0");
    write(&*dev, 5 * BS, &[8u8; 4096]);
    udm_io::sync::flush(&*dev).unwrap();
    assert_eq!(line(&reg), "0 1020 1017 0 10 3 4 1 0 0 3 0 1 0");
    write(&*dev, 6 * BS, &[9u8; 4096]);
    assert_eq!(line(&reg), "0 1020 1017 0 10 3 5 1 1 0 3 0 1 0");
    reg.message(&sel("w"), 0, &["flush".to_string()]).unwrap();
    assert_eq!(line(&reg), "0 1020 1020 0 10 3 5 1 1 0 3 0 1 0");
    reg.message(&sel("w"), 0, &["clear_stats".to_string()])
        .unwrap();
    assert_eq!(line(&reg), "0 1020 1020 0 0 0 0 0 0 0 0 0 0 0");
    // Cleaner: new writes go around the cache.
    reg.message(&sel("w"), 0, &["cleaner".to_string()]).unwrap();
    write(&*dev, 100 * BS, &[1u8; 2 * 4096]);
    assert_eq!(line(&reg), "0 1020 1020 0 0 0 2 0 0 2 0 0 0 0");
    let o = std::fs::read(&origin).unwrap();
    assert!(o[100 * 4096..102 * 4096].iter().all(|&b| b == 1));
    assert!(o[5 * 4096..6 * 4096].iter().all(|&b| b == 8));
    assert!(o[6 * 4096..7 * 4096].iter().all(|&b| b == 9));
    let (_, tb) = reg
        .status(&sel("w"), false, udm_core::StatusType::Table)
        .unwrap();
    assert!(tb[0].params.ends_with(" 4096 0"), "{}", tb[0].params);
}

#[test]
fn discard_drops_cached_blocks() {
    let (_dir, origin, cache, _) = setup(5);
    let reg = registry();
    create(&reg, "w", &table(&origin, &cache, "0")).unwrap();
    let (dev, _g) = open(&reg, "w");
    write(&*dev, 0, &[0xaa; 4 * 4096]);
    udm_io::sync::flush(&*dev).unwrap();
    let before = fields(&reg, "w");
    udm_io::sync::discard(&*dev, udm_io::Sectors(BS), udm_io::Sectors(2 * BS)).unwrap();
    let after = fields(&reg, "w");
    assert_eq!(after[2], before[2] + 2, "two blocks freed: {after:?}");
    assert_eq!(after[13], 2, "discards counted in blocks");
    let got = read(&*dev, 0, 4 * 4096);
    assert!(got[..4096].iter().all(|&b| b == 0xaa));
    assert!(got[3 * 4096..].iter().all(|&b| b == 0xaa));
    let o = std::fs::read(&origin).unwrap();
    assert!(
        got[4096..3 * 4096] == o[4096..3 * 4096],
        "discarded blocks read from the origin"
    );
}

#[test]
fn constructor_errors_are_the_kernels() {
    let (dir, origin, cache, _) = setup(1);
    let reg = registry();
    let o = origin.display();
    let c = cache.display();
    let err = |t: String| {
        let e = create(&reg, "e", &t).unwrap_err();
        let _ = reg.remove(&sel("e"), false);
        let log = udm_core::klog::lines().join("\n");
        (e.errno(), log)
    };
    let cases = [
        (
            format!("0 8 writecache p {o} {c} 4096 0"),
            "Persistent memory or DAX not supported on this system",
            libc::EOPNOTSUPP,
        ),
        (
            format!("0 8 writecache x {o} {c} 4096 0"),
            "Bad arguments",
            libc::EINVAL,
        ),
        (
            format!("0 8 writecache s {o} {c} 4096"),
            "Invalid number of feature args",
            libc::EINVAL,
        ),
        (
            format!("0 8 writecache s {o} {c} 8192 0"),
            "Invalid block size",
            libc::EINVAL,
        ),
        (
            format!("0 8 writecache s {o} {c} 4096 1 fua"),
            "Invalid optional argument",
            libc::EINVAL,
        ),
        (
            format!("0 8 writecache s {o} {c} 4096 4 high_watermark 10 low_watermark 20"),
            "High watermark must be greater than or equal to low watermark",
            libc::EINVAL,
        ),
        (
            format!("0 8 writecache s {o} {c} 512 0"),
            "Block size does not match superblock",
            libc::EINVAL,
        ),
        (
            format!("0 8 writecache s {o} {c} 4096 2 start_sector 1"),
            "Invalid magic in the superblock",
            libc::EINVAL,
        ),
    ];
    // Format the cache first (4096-byte blocks) so the later cases see a superblock.
    create(&reg, "f", &table(&origin, &cache, "0")).unwrap();
    reg.remove(&sel("f"), false).unwrap();
    std::fs::write(dir.path().join("tiny"), vec![0u8; 4096]).unwrap();
    let tiny = dir.path().join("tiny");
    let mut all = cases.to_vec();
    all.push((
        format!("0 8 writecache s {o} {} 4096 0", tiny.display()),
        "Invalid device size",
        libc::ENOSPC,
    ));
    for (t, msg, errno) in all {
        udm_core::klog::clear();
        let (e, log) = err(t.clone());
        assert_eq!(e, errno, "{t}");
        assert!(log.contains(&format!("writecache: {msg}")), "{t}: {log}");
    }
}

#[test]
fn a_write_to_a_block_in_writeback_waits_for_a_free_one() {
    // The origin sits behind a gate, so writeback copies stay in flight until it opens.
    let reg = registry();
    let remap = udm_testkit::gate::RemapType::new();
    reg.target_types()
        .register(std::sync::Arc::new(remap.clone()));
    let mem = std::sync::Arc::new(udm_io::MemDevice::new("m", udm_io::Sectors(8192)));
    let gate = udm_testkit::gate::GateDevice::new(mem.clone());
    remap.insert("g", gate.clone());
    create(&reg, "o", "0 8192 testdev g").unwrap();
    let minor = reg.info(&sel("o"), false).unwrap().minor;
    let dir = tempfile::tempdir().unwrap();
    let cache = zero_file(dir.path(), "c", 5 * 4096); // 4 blocks
    let t = format!(
        "0 8192 writecache s 253:{minor} {} 4096 2 pause_writeback 0",
        cache.display()
    );
    create(&reg, "w", &t).unwrap();
    let (dev, _g) = open(&reg, "w");
    let block = |b: u64, v: u8| (b * BS, vec![v; 4096]);
    for (s, d) in [block(0, 1), block(1, 2)] {
        write(&*dev, s, &d);
    }
    // Two of four blocks free: the high watermark; both go to writeback and wait at the gate.
    assert!(gate.wait_held(1, Duration::from_secs(20)), "no writeback");
    for (s, d) in [block(2, 3), block(3, 4)] {
        write(&*dev, s, &d);
    }
    assert_eq!(
        fields(&reg, "w")[2..4],
        [0, 2],
        "no free block, two in writeback"
    );
    let d2 = dev.clone();
    let writer = std::thread::spawn(move || write(&*d2, 0, &[5u8; 4096]));
    let deadline = Instant::now() + Duration::from_secs(20);
    while fields(&reg, "w")[11] == 0 {
        assert!(
            Instant::now() < deadline,
            "the write did not wait for a block"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !writer.is_finished(),
        "the write completed while no block was free"
    );
    gate.open();
    writer.join().unwrap();
    let got = read(&*dev, 0, 4 * 4096);
    for (b, v) in [5u8, 2, 3, 4].iter().enumerate() {
        assert!(
            got[b * 4096..(b + 1) * 4096].iter().all(|x| x == v),
            "block {b}"
        );
    }
    let m = read(&*mem, 0, 2 * 4096);
    assert!(m[..4096].iter().all(|&x| x == 1) && m[4096..].iter().all(|&x| x == 2));
}

#[test]
fn corrupt_entries_never_panic() {
    // Random entries (sectors and sequence counts) behind a valid superblock: the cache opens,
    // keeps the newest committed entry per sector as the kernel does, and serves I/O.
    let seed = udm_testkit::prop::seed();
    eprintln!("writecache corrupt entries: seed {seed:#x} (UDM_PROPTEST_SEED overrides)");
    let mut rng = XorShift::mixed(seed ^ 0xc0);
    let (_dir, origin, cache, _) = setup(9);
    let reg = registry();
    create(&reg, "w", &table(&origin, &cache, "0")).unwrap();
    reg.remove(&sel("w"), false).unwrap();
    let pristine = std::fs::read(&cache).unwrap();
    for round in 0..20 {
        let mut img = pristine.clone();
        img[24..32].copy_from_slice(&rng.below(8).to_le_bytes()); // superblock seq_count
        for i in 0..71usize {
            let at = 64 + i * 16;
            let sector = match rng.below(4) {
                0 => u64::MAX,
                1 => rng.next_u64(),
                _ => rng.below(64) * BS + rng.below(2),
            };
            img[at..at + 8].copy_from_slice(&sector.to_le_bytes());
            img[at + 8..at + 16].copy_from_slice(&rng.below(10).to_le_bytes());
        }
        std::fs::write(&cache, &img).unwrap();
        create(&reg, "w", &table(&origin, &cache, "2 pause_writeback 0")).unwrap();
        // Two committed entries for one sector with one sequence count are the kernel's
        // "two identical entries" error: the cache then fails writes and still reads.
        let failed = status_fields(&reg, "w")[0] == "1";
        eprintln!("round {round}: error state {failed}");
        {
            let (dev, _g) = open(&reg, "w");
            let _ = read(&*dev, 0, 64 * 4096);
            let data = [round as u8; 4096];
            let w = udm_io::sync::write_at(&*dev, udm_io::Sectors(3 * BS), &data);
            assert_eq!(
                w.is_err(),
                failed,
                "round {round}: write result vs error state"
            );
            if !failed {
                assert!(read(&*dev, 3 * BS, 4096).iter().all(|&b| b == round as u8));
            }
        }
        let st = status_fields(&reg, "w");
        assert_eq!(st.len(), 14, "{st:?}");
        let _ = reg.message(&sel("w"), 0, &["flush".to_string()]);
        reg.remove(&sel("w"), false).unwrap();
    }
}
