//! kill -9 under writeback load: a child process (this test binary, re-run as a writer) drives
//! a writeback cache with batches of random writes, each ended by a flush it reports; the
//! parent SIGKILLs it at a random point of the next batch (fixed, printed seed), reopens the
//! cache in-process and checks that every acknowledged-after-flush write is there (each
//! sector holds its flushed value or a value the killed batch wrote to it), that the metadata
//! passes `cache_check`, and that the reopened cache counts every resident block dirty (an
//! unclean shutdown). Five kills, each continuing from the last one's state.
//!
//! The second test kills the writer while migrations run: the child also reads a hot region
//! from another thread and its smq ticks every 2 ms, so promotions (copies and whole-block
//! overwrites), demotions and their metadata commits are in flight when it dies; 24 kills at
//! seeded points (`UDM_CRASH_ROUNDS` overrides), the same checks after each.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use udm_testkit::crash::{kill_round, reconcile};
use udm_testkit::rng::XorShift;

const BS: u64 = 64;
const ORIGIN: u64 = 64 * 96;
const CACHE_BLOCKS: u64 = 16;
const BATCH: usize = 40;
const CHILD_ENV: &str = "UDM_CACHE_CRASH_CHILD";

fn table(dir: &Path) -> String {
    format!(
        "0 {ORIGIN} cache {} {} {} {BS} 2 metadata2 writeback smq 0",
        dir.join("meta").display(),
        dir.join("cache").display(),
        dir.join("origin").display()
    )
}

/// The writes of batch `n` of round `round`: (sector, data).
fn batch(seed: u64, round: u64, n: u64) -> Vec<(u64, Vec<u8>)> {
    let mut rng = XorShift::mixed(seed ^ (round << 32) ^ n);
    (0..BATCH)
        .map(|_| {
            let s = if rng.below(3) < 2 {
                rng.below(32 * BS)
            } else {
                rng.below(ORIGIN - 64)
            };
            let len = 1 + rng.below(64);
            (s, rng.bytes((len * 512) as usize))
        })
        .collect()
}

/// Child: write batches forever, flushing after each and reporting it, waiting for "go".
#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // only meaningful when the parent test starts it
    };
    std::env::set_var(udm_targets::cache::TICK_ENV, "2");
    let seed: u64 = std::env::var("UDM_CRASH_SEED").unwrap().parse().unwrap();
    let round: u64 = std::env::var("UDM_CRASH_ROUND").unwrap().parse().unwrap();
    let reg = registry();
    create(&reg, "c", &table(Path::new(&dir))).unwrap();
    let (dev, _g) = open(&reg, "c");
    udm_testkit::crash::child_writes(&*dev, |n| batch(seed, round, n));
}

/// Child: as `crash_child_writer`, with a reader keeping a hot region migrating.
#[test]
fn crash_child_migrating() {
    let Ok(dir) = std::env::var(MIGRATE_ENV) else {
        return;
    };
    std::env::set_var(udm_targets::cache::TICK_ENV, "2");
    let seed: u64 = std::env::var("UDM_CRASH_SEED").unwrap().parse().unwrap();
    let round: u64 = std::env::var("UDM_CRASH_ROUND").unwrap().parse().unwrap();
    let reg = registry();
    create(&reg, "c", &table(Path::new(&dir))).unwrap();
    let (dev, _g) = open(&reg, "c");
    let reader = dev.clone();
    std::thread::spawn(move || {
        let mut rng = XorShift::mixed(seed ^ round ^ 0x7ead);
        loop {
            let b = rng.below(40);
            let _ = udm_io::sync::read_at(&*reader, udm_io::Sectors(b * BS), 4096);
        }
    });
    udm_testkit::crash::child_writes(&*dev, |n| batch(seed, round, n));
}

const MIGRATE_ENV: &str = "UDM_CACHE_CRASH_MIGRATE";

#[test]
fn kill_9_under_writeback_loses_no_flushed_write() {
    if std::env::var(CHILD_ENV).is_ok() || std::env::var(MIGRATE_ENV).is_ok() {
        return;
    }
    kills(CHILD_ENV, "crash_child_writer", 5, 0x9, false);
}

#[test]
fn kill_9_during_promotion_and_demotion_loses_no_flushed_write() {
    if std::env::var(CHILD_ENV).is_ok() || std::env::var(MIGRATE_ENV).is_ok() {
        return;
    }
    let rounds = udm_testkit::rng::env_u64("UDM_CRASH_ROUNDS").unwrap_or(24);
    kills(MIGRATE_ENV, "crash_child_migrating", rounds, 0x11, true);
}

/// `rounds` kill -9 rounds of child test `child` (started with `env` set); `migrating`:
/// blocks must have been resident at some kill.
fn kills(env: &str, child_name: &str, rounds: u64, salt: u64, migrating: bool) {
    let seed = udm_testkit::prop::seed();
    eprintln!("cache kill -9 ({child_name}): seed {seed:#x} (UDM_PROPTEST_SEED overrides)");
    let mut rng = XorShift::mixed(seed ^ salt);
    let dir = tempfile::tempdir().unwrap();
    image(dir.path(), "meta", 4096, 0);
    image(dir.path(), "cache", CACHE_BLOCKS * BS, 0x5a);
    let mut model = udm_testkit::rng::pseudo((ORIGIN * 512) as usize, seed);
    std::fs::write(dir.path().join("origin"), &model).unwrap();
    let mut migrated = 0;
    for round in 0..rounds {
        let batches = 1 + rng.below(4);
        let mut child = udm_testkit::crash::child(child_name, env, dir.path(), seed, round);
        let kill_after = Duration::from_millis(rng.below(30));
        let maybe = kill_round(
            &mut child,
            batches,
            kill_after,
            |n| batch(seed, round, n),
            &mut model,
        );
        let meta = dir.path().join("meta");
        if udm_testkit::require_tool("cache_check") {
            let o = Command::new("cache_check").arg(&meta).output().unwrap();
            assert!(
                o.status.success(),
                "round {round}: cache_check after kill -9"
            );
        }
        let reg = registry();
        create(&reg, "c", &table(dir.path())).unwrap();
        {
            let (dev, _g) = open(&reg, "c");
            let (_, st) = reg
                .status(&sel("c"), false, udm_core::StatusType::Info)
                .unwrap();
            let f: Vec<&str> = st[0].params.split_whitespace().collect();
            migrated += f[3].split('/').next().unwrap().parse::<u64>().unwrap();
            assert_eq!(
                f[3].split('/').next(),
                Some(f[10]),
                "unclean: all resident dirty"
            );
            let got = read(&*dev, 0, model.len());
            let lost = reconcile(&got, &mut model, &maybe);
            assert!(
                lost.is_empty(),
                "round {round}: sectors {lost:?} lost a flushed write"
            );
        }
        reg.remove(&sel("c"), false).unwrap();
    }
    assert!(
        !migrating || migrated > 0,
        "no block was ever resident at a kill"
    );
}
