//! kill -9 during writes: a child process (this test binary, re-run as a writer) drives an
//! `integrity` device in J mode (and in B mode) with batches of random writes, each ended by
//! a flush it reports; the parent SIGKILLs it somewhere in the next batch (fixed, printed
//! seed), reopens the device in-process (journal replay, or bitmap recalculation) and checks
//! that every acknowledged write reads back, that each sector holds its flushed value or one
//! the killed batch wrote, and that no block fails its check. 100 kills in J mode, 30 in B.

mod common;
use common::*;
use std::path::Path;
use std::time::Duration;
use udm_testkit::crash::{kill_round, reconcile};
use udm_testkit::rng::XorShift;

const SECTORS: u64 = 8192;
const BATCH: usize = 12;
const CHILD_ENV: &str = "UDM_INTEGRITY_CRASH_CHILD";

fn rest(mode: &str) -> String {
    match mode {
        "J" => "4 J 3 journal_sectors:1024 commit_time:100000 internal_hash:crc32c".into(),
        _ => "4 B 3 sectors_per_bit:64 bitmap_flush_interval:100000 internal_hash:crc32c".into(),
    }
}

fn table(dir: &Path, mode: &str, p: u64) -> String {
    format!(
        "0 {p} integrity {} 0 {}",
        dir.join("disk").display(),
        rest(mode)
    )
}

/// The writes of batch `n` of round `round`: (sector, data).
fn batch(seed: u64, round: u64, n: u64, p: u64) -> Vec<(u64, Vec<u8>)> {
    let mut rng = XorShift::mixed(seed ^ (round << 32) ^ n);
    (0..BATCH)
        .map(|_| {
            let len = 1 + rng.below(16);
            let s = rng.below(p - len);
            (s, rng.bytes((len * 512) as usize))
        })
        .collect()
}

/// Child: write batches forever, flushing after each and reporting it, waiting for "go".
#[test]
fn integrity_crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // only meaningful when the parent test starts it
    };
    let seed: u64 = std::env::var("UDM_CRASH_SEED").unwrap().parse().unwrap();
    let round: u64 = std::env::var("UDM_CRASH_ROUND").unwrap().parse().unwrap();
    let mode = std::env::var("UDM_CRASH_MODE").unwrap();
    let p: u64 = std::env::var("UDM_CRASH_P").unwrap().parse().unwrap();
    let reg = registry();
    create(&reg, "c", &table(Path::new(&dir), &mode, p)).unwrap();
    let (dev, _g) = open(&reg, "c");
    udm_testkit::crash::child_writes(&*dev, |n| batch(seed, round, n, p));
}

fn kill_rounds(mode: &str, rounds: u64) {
    let seed = udm_testkit::prop::seed();
    eprintln!("integrity {mode} kill -9: seed {seed:#x} (UDM_PROPTEST_SEED overrides)");
    let mut rng = XorShift::mixed(seed ^ 0x17);
    let dir = tempfile::tempdir().unwrap();
    image(dir.path(), "disk", SECTORS, 0);
    let reg = registry();
    create(
        &reg,
        "f",
        &format!(
            "0 8 integrity {} 0 {}",
            dir.path().join("disk").display(),
            rest(mode)
        ),
    )
    .unwrap();
    let p: u64 = status_fields(&reg, "f")[1].parse().unwrap();
    reg.remove(&sel("f"), false).unwrap();
    let mut model = udm_testkit::rng::pseudo((p * 512) as usize, seed);
    create(&reg, "c", &table(dir.path(), mode, p)).unwrap();
    {
        let (dev, _g) = open(&reg, "c");
        write(&*dev, 0, &model);
    }
    reg.remove(&sel("c"), false).unwrap();
    for round in 0..rounds {
        let batches = 1 + rng.below(3);
        let mut child = udm_testkit::crash::child(
            "integrity_crash_child_writer",
            CHILD_ENV,
            dir.path(),
            seed,
            round,
        );
        child
            .env("UDM_CRASH_MODE", mode)
            .env("UDM_CRASH_P", p.to_string());
        let kill_after = Duration::from_micros(rng.below(20_000));
        let maybe = kill_round(
            &mut child,
            batches,
            kill_after,
            |n| batch(seed, round, n, p),
            &mut model,
        );
        create(&reg, "c", &table(dir.path(), mode, p)).unwrap();
        {
            let (dev, _g) = open(&reg, "c");
            if mode == "B" {
                wait_recalc(&reg, p);
            }
            let got = udm_io::sync::read_at(&*dev, udm_io::Sectors(0), model.len())
                .unwrap_or_else(|e| panic!("round {round}: a block fails its check: {e}"))
                .into_vec();
            let lost = reconcile(&got, &mut model, &maybe);
            assert!(
                lost.is_empty(),
                "round {round}: sectors {lost:?} lost a flushed write"
            );
            assert_eq!(status_fields(&reg, "c")[0], "0", "round {round}");
        }
        reg.remove(&sel("c"), false).unwrap();
    }
}

/// Wait until B mode's recalculation after an unclean stop has finished.
fn wait_recalc(reg: &udm_core::Registry, p: u64) {
    for _ in 0..2000 {
        let f = status_fields(reg, "c");
        if f[2] == "-" || f[2] == p.to_string() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("recalculation did not finish");
}

#[test]
fn integrity_kill_9_j_mode_loses_no_flushed_write() {
    if std::env::var(CHILD_ENV).is_err() {
        kill_rounds("J", 100);
    }
}

#[test]
fn integrity_kill_9_b_mode_loses_no_flushed_write() {
    if std::env::var(CHILD_ENV).is_err() {
        kill_rounds("B", 30);
    }
}
