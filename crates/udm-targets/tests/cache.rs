//! The `cache` target against a model: random reads, writes and flushes (fixed, printed seed;
//! `UDM_PROPTEST_SEED` overrides) through a cache much smaller than its hot set, in
//! writethrough and writeback, with reloads and remove/recreate in between; every read must
//! equal the model. Afterwards the metadata passes the real `cache_check`, `cache_dump` lists
//! the mappings udm holds, writethrough leaves the origin equal to the model, and the
//! `cleaner` policy writes a writeback cache's dirty blocks back until the origin equals it.
//! A crash image taken after a flush (what `kill -9` leaves) reopens with every
//! acknowledged write readable.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use udm_core::StatusType;
use udm_io::BlockDevice;
use udm_testkit::require_tool;
use udm_testkit::rng::XorShift;

const BS: u64 = 64; // cache block, sectors
const ORIGIN: u64 = 64 * 160; // 160 blocks
const CACHE_BLOCKS: u64 = 24;

struct Files {
    _dir: tempfile::TempDir,
    meta: PathBuf,
    cache: PathBuf,
    origin: PathBuf,
}

fn files(seed: u64) -> (Files, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let meta = image(dir.path(), "meta", 8192, 0);
    let cache = image(dir.path(), "cache", CACHE_BLOCKS * BS, 0xcc);
    let origin = dir.path().join("origin");
    let data = udm_testkit::rng::pseudo((ORIGIN * 512) as usize, seed);
    std::fs::write(&origin, &data).unwrap();
    (
        Files {
            _dir: dir,
            meta,
            cache,
            origin,
        },
        data,
    )
}

/// The table line; `policy` without arguments gets `0` policy arguments.
fn table(f: &Files, features: &str, policy: &str) -> String {
    let policy = if policy.contains(' ') {
        policy.to_string()
    } else {
        format!("{policy} 0")
    };
    format!(
        "0 {ORIGIN} cache {} {} {} {BS} {features} {policy}",
        f.meta.display(),
        f.cache.display(),
        f.origin.display()
    )
}

fn status(reg: &udm_core::Registry, name: &str) -> Vec<String> {
    let (_, st) = reg.status(&sel(name), false, StatusType::Info).unwrap();
    assert!(
        st[0].params.ends_with(' '),
        "trailing space: {:?}",
        st[0].params
    );
    st[0].params.split_whitespace().map(String::from).collect()
}

/// Random I/O through `name`, checked against `model`. Returns nothing; panics on mismatch.
fn workload(dev: &dyn BlockDevice, model: &mut [u8], rng: &mut XorShift, ops: usize) {
    let hot = 48 * BS; // twice the cache
    for i in 0..ops {
        let sector = if rng.below(4) < 3 {
            rng.below(hot)
        } else {
            rng.below(ORIGIN)
        };
        let len = (1 + rng.below(150)).min(ORIGIN - sector);
        let (a, b) = ((sector * 512) as usize, ((sector + len) * 512) as usize);
        match rng.below(20) {
            0 => udm_io::sync::flush(dev).unwrap(),
            1..=9 => {
                let data = rng.bytes(b - a);
                write(dev, sector, &data);
                model[a..b].copy_from_slice(&data);
            }
            _ => {
                let got = read(dev, sector, b - a);
                assert!(
                    got == model[a..b],
                    "op {i}: read of {len} sectors at {sector} differs from the model"
                );
            }
        }
    }
}

fn check_all(dev: &dyn BlockDevice, model: &[u8]) {
    let got = read(dev, 0, model.len());
    assert!(got == model, "whole-device read differs from the model");
}

fn cache_check(meta: &Path) {
    if !require_tool("cache_check") {
        return;
    }
    let out = Command::new("cache_check").arg(meta).output().unwrap();
    assert!(
        out.status.success(),
        "cache_check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = Command::new("cache_dump").arg(meta).output().unwrap();
    assert!(dump.status.success());
}

/// The policy ticks every 5 ms instead of every second, so its periods pass during a test.
fn fast_ticks() {
    std::env::set_var(udm_targets::cache::TICK_ENV, "5");
}

fn run_model(features: &str, seed_salt: u64) -> (Files, Vec<u8>, Vec<String>) {
    fast_ticks();
    let seed = udm_testkit::prop::seed() ^ seed_salt;
    eprintln!("cache model ({features}): seed {seed:#x} (UDM_PROPTEST_SEED overrides)");
    let mut rng = XorShift::mixed(seed);
    let (f, mut model) = files(seed);
    let reg = registry();
    create(&reg, "c", &table(&f, features, "smq")).unwrap();
    let last_status;
    {
        let (dev, _g) = open(&reg, "c");
        workload(&*dev, &mut model, &mut rng, 1500);
        // smq promotes once a block's hotspot climbed (a few policy periods) and demotes
        // once the cache is full: go on until both happened (bounded).
        let mut st = status(&reg, "c");
        for _ in 0..200 {
            let promotions: u64 = st[9].parse().unwrap();
            let demotions: u64 = st[8].parse().unwrap();
            if promotions > 0 && demotions > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            workload(&*dev, &mut model, &mut rng, 100);
            st = status(&reg, "c");
        }
        let promotions: u64 = st[9].parse().unwrap();
        let demotions: u64 = st[8].parse().unwrap();
        assert!(promotions > 0 && demotions > 0, "no migrations: {st:?}");
        // Reload the same table while live (shared metadata), then go on.
        reg.load(&sel("c"), &lines(&table(&f, features, "smq")), false)
            .unwrap();
        reg.suspend(&sel("c"), false, false).unwrap();
        reg.resume(&sel("c")).unwrap();
        workload(&*dev, &mut model, &mut rng, 1000);
        check_all(&*dev, &model);
        // Suspended, background work has stopped: the status is what the metadata keeps.
        reg.suspend(&sel("c"), false, false).unwrap();
        last_status = status(&reg, "c");
    }
    reg.remove(&sel("c"), false).unwrap();
    cache_check(&f.meta);
    // Reopen from the metadata (a clean shutdown): same data. No migration bandwidth, so
    // no idle writeback changes the counts before they are compared.
    create(
        &reg,
        "c",
        &table(&f, features, "smq 2 migration_threshold 0"),
    )
    .unwrap();
    {
        let (dev, _g) = open(&reg, "c");
        let st = status(&reg, "c");
        assert_eq!(
            st[3], last_status[3],
            "resident blocks survive a clean reopen"
        );
        assert_eq!(
            st[10], last_status[10],
            "dirty blocks survive a clean reopen"
        );
        check_all(&*dev, &model);
        workload(&*dev, &mut model, &mut rng, 500);
        check_all(&*dev, &model);
    }
    reg.remove(&sel("c"), false).unwrap();
    cache_check(&f.meta);
    (f, model, last_status)
}

#[test]
fn writethrough_matches_model_and_origin() {
    let (f, model, st) = run_model("2 metadata2 writethrough", 1);
    assert_eq!(st[10], "0", "writethrough never has dirty blocks: {st:?}");
    let origin = std::fs::read(&f.origin).unwrap();
    assert!(
        origin == model,
        "writethrough left the origin behind the model"
    );
}

#[test]
fn writeback_matches_model_then_cleaner_drains() {
    let (f, model, st) = run_model("1 writeback", 2);
    assert!(
        st[10].parse::<u64>().unwrap() > 0,
        "writeback left dirty blocks: {st:?}"
    );
    let origin = std::fs::read(&f.origin).unwrap();
    assert!(origin != model, "the dirty blocks are only in the cache");
    let reg = registry();
    create(&reg, "c", &table(&f, "1 writeback", "cleaner")).unwrap();
    {
        let (dev, _g) = open(&reg, "c");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let st = status(&reg, "c");
            assert_eq!(st[16], "cleaner", "{st:?}");
            if st[10] == "0" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "cleaner stuck: {st:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        check_all(&*dev, &model);
    }
    reg.remove(&sel("c"), false).unwrap();
    let origin = std::fs::read(&f.origin).unwrap();
    assert!(origin == model, "the cleaner wrote every dirty block back");
    cache_check(&f.meta);
    // Clean now: passthrough is allowed and serves the origin.
    create(&reg, "c", &table(&f, "1 passthrough", "smq")).unwrap();
    let (dev, _g) = open(&reg, "c");
    check_all(&*dev, &model);
}

#[test]
fn crash_image_after_flush_keeps_acknowledged_writes() {
    fast_ticks();
    let seed = udm_testkit::prop::seed() ^ 3;
    eprintln!("cache crash: seed {seed:#x}");
    let mut rng = XorShift::mixed(seed);
    let (f, mut model) = files(seed);
    let reg = registry();
    create(&reg, "c", &table(&f, "2 metadata2 writeback", "smq")).unwrap();
    let (dev, g) = open(&reg, "c");
    workload(&*dev, &mut model, &mut rng, 1200);
    udm_io::sync::flush(&*dev).unwrap();
    // What kill -9 leaves: the files as they are now, the process state gone.
    let crash = tempfile::tempdir().unwrap();
    let copy = |p: &Path| {
        let to = crash.path().join(p.file_name().unwrap());
        std::fs::copy(p, &to).unwrap();
        to
    };
    let cf = Files {
        meta: copy(&f.meta),
        cache: copy(&f.cache),
        origin: copy(&f.origin),
        _dir: crash,
    };
    drop(g);
    drop(dev);
    let sb = udm_pdata::cache::CacheMetadata::read_superblock(
        &udm_pdata::io::FileIo::open(&cf.meta).unwrap(),
    )
    .unwrap();
    assert_eq!(
        sb.flags & udm_pdata::cache::CLEAN_SHUTDOWN,
        0,
        "live metadata is not clean"
    );
    cache_check(&cf.meta);
    let reg2 = registry();
    create(&reg2, "r", &table(&cf, "2 metadata2 writeback", "smq")).unwrap();
    let (dev2, _g2) = open(&reg2, "r");
    let st = status(&reg2, "r");
    assert_eq!(
        st[3].split('/').next(),
        Some(st[10].as_str()),
        "unclean: all resident blocks dirty"
    );
    check_all(&*dev2, &model);
    reg.remove(&sel("c"), false).unwrap();
}

#[test]
fn table_status_and_messages() {
    fast_ticks();
    let (f, _) = files(9);
    let reg = registry();
    let t = table(&f, "2 metadata2 writethrough", "mq");
    create(&reg, "c", &t).unwrap();
    let (_, st) = reg.status(&sel("c"), false, StatusType::Table).unwrap();
    assert!(
        st[0].params.ends_with(" 64 2 metadata2 writethrough mq 0"),
        "{}",
        st[0].params
    );
    let s = status(&reg, "c");
    assert_eq!(s[0], "8");
    assert_eq!(s[2], "64");
    assert_eq!(s[3], format!("0/{CACHE_BLOCKS}"));
    assert_eq!(
        s[11..].join(" "),
        "2 metadata2 writethrough 2 migration_threshold 2048 mq 10 random_threshold 0 \
         sequential_threshold 0 discard_promote_adjustment 0 read_promote_adjustment 0 \
         write_promote_adjustment 0 rw -"
    );
    let msg = |a: &[&str]| {
        reg.message(
            &sel("c"),
            0,
            &a.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    };
    {
        let (dev, _g) = open(&reg, "c");
        let l = dev.limits();
        assert_eq!(
            (l.io_min, l.io_opt),
            (BS as u32 * 512, BS as u32 * 512),
            "io hints"
        );
    }
    msg(&["migration_threshold", "4096"]).unwrap();
    assert_eq!(status(&reg, "c")[16], "4096");
    msg(&["sequential_threshold", "7"]).unwrap();
    assert!(msg(&["bogus", "1"]).is_err());
    let e = msg(&["invalidate_cblocks", "0-3"]).unwrap_err();
    assert!(e.to_string().contains("passthrough"), "{e}");
    reg.remove(&sel("c"), false).unwrap();
    for (bad, why) in [
        ("0 10240 cache M C O 100 0 smq 0", "Invalid data block size"),
        (
            "0 10240 cache M C O 64 1 bogus smq 0",
            "Unrecognised cache feature requested",
        ),
        (
            "0 10240 cache M C O 64 2 writeback writethrough smq 0",
            "Duplicate cache io_mode features requested",
        ),
        (
            "0 10240 cache M C O 64 0 lru 0",
            "Error creating cache's policy",
        ),
        (
            "0 10240 cache M C O 64 0 smq 1 x",
            "Error setting cache policy's config values",
        ),
        (
            "0 99999999 cache M C O 64 0 smq 0",
            "Device size larger than cached device",
        ),
    ] {
        let t = bad
            .replace(" M ", &format!(" {} ", f.meta.display()))
            .replace(" C ", &format!(" {} ", f.cache.display()))
            .replace(" O ", &format!(" {} ", f.origin.display()));
        let e = create(&reg, "bad", &t).unwrap_err();
        assert!(e.to_string().contains(why), "{bad}: {e}");
    }
}

#[test]
fn cache_grows_by_reload_and_passthrough_invalidates() {
    fast_ticks();
    let seed = udm_testkit::prop::seed() ^ 4;
    eprintln!("cache resize: seed {seed:#x}");
    let mut rng = XorShift::mixed(seed);
    let (f, mut model) = files(seed);
    let reg = registry();
    create(&reg, "c", &table(&f, "1 writethrough", "smq")).unwrap();
    let (dev, g) = open(&reg, "c");
    let full = format!("{CACHE_BLOCKS}/{CACHE_BLOCKS}");
    workload(&*dev, &mut model, &mut rng, 400);
    for _ in 0..200 {
        if status(&reg, "c")[3] == full {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        workload(&*dev, &mut model, &mut rng, 100);
    }
    assert_eq!(status(&reg, "c")[3], full);
    // Grow the cache device and reload: the metadata follows at resume.
    let grown = CACHE_BLOCKS + 16;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f.cache)
        .unwrap()
        .set_len(grown * BS * 512)
        .unwrap();
    reg.load(
        &sel("c"),
        &lines(&table(&f, "1 writethrough", "smq")),
        false,
    )
    .unwrap();
    reg.suspend(&sel("c"), false, false).unwrap();
    reg.resume(&sel("c")).unwrap();
    let st = status(&reg, "c");
    assert_eq!(st[3], format!("{CACHE_BLOCKS}/{grown}"), "{st:?}");
    workload(&*dev, &mut model, &mut rng, 400);
    check_all(&*dev, &model);
    drop(g);
    drop(dev);
    reg.remove(&sel("c"), false).unwrap();
    cache_check(&f.meta);
    // Passthrough (the cache is clean): invalidate cache blocks by message.
    create(&reg, "c", &table(&f, "1 passthrough", "smq")).unwrap();
    let resident = |reg: &udm_core::Registry| -> u64 {
        status(reg, "c")[3]
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = resident(&reg);
    assert!(before > 0);
    let msg = |a: &[&str]| {
        reg.message(
            &sel("c"),
            0,
            &a.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    };
    assert!(msg(&["invalidate_cblocks", &format!("{grown}")]).is_err());
    assert!(msg(&["invalidate_cblocks", "5-5"]).is_err());
    msg(&["invalidate_cblocks", "0-8", "9"]).unwrap();
    let after = resident(&reg);
    assert!(
        after < before && after + 10 >= before,
        "{before} -> {after}"
    );
    {
        let (dev, _g) = open(&reg, "c");
        check_all(&*dev, &model);
        // Writes in passthrough reach the origin and drop stale cache copies.
        workload(&*dev, &mut model, &mut rng, 300);
        check_all(&*dev, &model);
    }
    reg.remove(&sel("c"), false).unwrap();
    assert!(std::fs::read(&f.origin).unwrap() == model);
    cache_check(&f.meta);
}

#[test]
fn discards_are_kept_in_the_metadata_and_not_promoted() {
    fast_ticks();
    let seed = udm_testkit::prop::seed() ^ 5;
    eprintln!("cache discards: seed {seed:#x}");
    let (f, model) = files(seed);
    // The kernel's geometry: 160 origin blocks of 64 sectors need no doubling.
    assert_eq!(udm_targets::cache::discard_geometry(BS, ORIGIN), (BS, 160));
    assert_eq!(
        udm_targets::cache::discard_geometry(128, 524288 * 64),
        (2048, 16384),
        "2^14 discard blocks at most"
    );
    let reg = registry();
    create(&reg, "c", &table(&f, "1 writeback", "smq")).unwrap();
    {
        let (dev, _g) = open(&reg, "c");
        udm_io::sync::discard(&*dev, udm_io::Sectors(10 * BS), udm_io::Sectors(10 * BS)).unwrap();
        // A write clears its discard block's bit.
        write(&*dev, 15 * BS + 8, &vec![7u8; 512]);
        // Read the discarded blocks and as many others, hot, until the others are
        // promoted: the discarded ones never are.
        for round in 0..200 {
            for b in (10..20).chain(40..50) {
                let _ = read(&*dev, b * BS, 4096);
            }
            let resident: u64 = status(&reg, "c")[3]
                .split('/')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            if resident >= 8 && round > 20 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        reg.suspend(&sel("c"), false, false).unwrap();
    }
    reg.remove(&sel("c"), false).unwrap();
    cache_check(&f.meta);
    let io = std::sync::Arc::new(udm_pdata::io::FileIo::open(&f.meta).unwrap());
    let mut md = udm_pdata::cache::CacheMetadata::open(io, BS as u32).unwrap();
    let sb = md.superblock().clone();
    assert_eq!((sb.discard_block_size, sb.discard_nr_blocks), (BS, 160));
    let bits = md.discards().unwrap();
    let set: Vec<usize> = (0..bits.len()).filter(|&b| bits[b]).collect();
    let want: Vec<usize> = (10..20).filter(|&b| b != 15).collect();
    assert_eq!(set, want, "discard bits after a clean shutdown");
    let mapped: Vec<u64> = md
        .mappings(None)
        .unwrap()
        .iter()
        .map(|m| m.oblock)
        .collect();
    assert!(
        mapped.iter().filter(|&&o| (40..50).contains(&o)).count() >= 8,
        "the hot blocks were promoted: {mapped:?}"
    );
    assert!(
        !mapped.iter().any(|o| (10..20).contains(o) && *o != 15),
        "a discarded block was promoted: {mapped:?}"
    );
    drop(md);
    // Reopened, the bits are loaded again and kept at the next clean shutdown.
    create(
        &reg,
        "c",
        &table(&f, "1 writeback", "smq 2 migration_threshold 0"),
    )
    .unwrap();
    {
        let (dev, _g) = open(&reg, "c");
        let got = read(&*dev, 40 * BS, 512);
        assert!(got == model[(40 * BS * 512) as usize..][..512]);
    }
    reg.remove(&sel("c"), false).unwrap();
    let io = std::sync::Arc::new(udm_pdata::io::FileIo::open(&f.meta).unwrap());
    let mut md = udm_pdata::cache::CacheMetadata::open(io, BS as u32).unwrap();
    let bits = md.discards().unwrap();
    assert_eq!(
        (0..bits.len()).filter(|&b| bits[b]).collect::<Vec<_>>(),
        want
    );
    drop(md);
    // The real tools: cache_check passes, and udm's cache_dump prints what the real one
    // prints (0.9 lists no discards).
    cache_check(&f.meta);
    if require_tool("cache_dump") {
        let real = Command::new("cache_dump").arg(&f.meta).output().unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let rc = udm_pdata::tools::run(
            "cache_dump",
            "cache_dump",
            &[f.meta.display().to_string()],
            &mut out,
            &mut err,
        );
        assert_eq!(rc, 0);
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&real.stdout),
            "udm's cache_dump equals the real one"
        );
    }
}
