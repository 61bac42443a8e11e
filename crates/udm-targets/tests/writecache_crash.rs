//! kill -9 under load: a child process (this test binary, re-run as a writer) drives a
//! writecache (small cache, writeback running, autocommits) with batches of random writes,
//! each ended by a flush it reports; the parent SIGKILLs it at a seeded point of the next
//! batch, reopens the cache in-process and checks that every sector holds its last flushed
//! value or one the killed batch wrote to it, that a clean reopen and the `flush` message
//! leave the origin equal to what the device read, and carries on from there. Eight kills.

mod common;
use common::*;
use std::path::Path;
use std::time::Duration;
use udm_testkit::crash::{kill_round, reconcile};
use udm_testkit::rng::XorShift;

const BS: u64 = 8;
const ORIGIN: u64 = 8192; // sectors: 1024 blocks
const BATCH: usize = 30;
const CHILD_ENV: &str = "UDM_WC_CRASH_CHILD";

fn table(dir: &Path) -> String {
    format!(
        "0 {ORIGIN} writecache s {} {} 4096 4 pause_writeback 0 autocommit_blocks 8",
        dir.join("origin").display(),
        dir.join("cache").display()
    )
}

/// The writes of batch `n` of round `round`: (sector, data), whole blocks.
fn batch(seed: u64, round: u64, n: u64) -> Vec<(u64, Vec<u8>)> {
    let mut rng = XorShift::mixed(seed ^ (round << 32) ^ n);
    (0..BATCH)
        .map(|_| {
            let b = if rng.below(3) < 2 {
                rng.below(120)
            } else {
                rng.below(ORIGIN / BS - 8)
            };
            let n = 1 + rng.below(6);
            (b * BS, rng.bytes((n * 4096) as usize))
        })
        .collect()
}

#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // only meaningful when the parent test starts it
    };
    let seed: u64 = std::env::var("UDM_CRASH_SEED").unwrap().parse().unwrap();
    let round: u64 = std::env::var("UDM_CRASH_ROUND").unwrap().parse().unwrap();
    let reg = registry();
    create(&reg, "w", &table(Path::new(&dir))).unwrap();
    let (dev, _g) = open(&reg, "w");
    udm_testkit::crash::child_writes(&*dev, |n| batch(seed, round, n));
}

#[test]
fn kill_9_loses_no_flushed_write() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let seed = udm_testkit::prop::seed();
    eprintln!("writecache kill -9: seed {seed:#x} (UDM_PROPTEST_SEED overrides)");
    let mut rng = XorShift::mixed(seed ^ 0x77);
    let dir = tempfile::tempdir().unwrap();
    zero_file(dir.path(), "cache", 72 * 4096);
    let mut model = udm_testkit::rng::pseudo((ORIGIN * 512) as usize, seed);
    std::fs::write(dir.path().join("origin"), &model).unwrap();
    for round in 0..8u64 {
        let batches = 1 + rng.below(4);
        let mut child =
            udm_testkit::crash::child("crash_child_writer", CHILD_ENV, dir.path(), seed, round);
        let delay = rng.below(25);
        let maybe = kill_round(
            &mut child,
            batches,
            Duration::from_millis(delay),
            |n| batch(seed, round, n),
            &mut model,
        );
        let reg = registry();
        create(&reg, "w", &table(dir.path())).unwrap();
        let got = {
            let (dev, _g) = open(&reg, "w");
            read(&*dev, 0, model.len())
        };
        let lost = reconcile(&got, &mut model, &maybe);
        assert!(
            lost.is_empty(),
            "round {round} (kill after {delay} ms): sectors {lost:?} hold neither their flushed value nor a new one"
        );
        let st = status_fields(&reg, "w");
        assert_eq!(
            st[0],
            "0",
            "no error after reopening: {st:?} {:?}",
            udm_core::klog::lines()
        );
        if round % 3 == 2 {
            reg.message(&sel("w"), 0, &["flush".to_string()]).unwrap();
            reg.remove(&sel("w"), false).unwrap();
            let o = std::fs::read(dir.path().join("origin")).unwrap();
            assert!(
                o == model,
                "round {round}: flush left the origin unlike the device"
            );
        } else {
            reg.remove(&sel("w"), false).unwrap();
        }
    }
}
