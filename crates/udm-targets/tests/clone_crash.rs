//! kill -9 during hydration: a child process (this test binary, re-run) opens a clone of a
//! slow source (a `delay` device) whose background hydration runs, and writes batches of random writes,
//! each ended by a flush it reports; the parent SIGKILLs it at a seeded point of the next
//! batch (`udm_testkit::crash`), reopens the clone with hydration off and checks that every
//! sector reads its flushed value or a value of the killed batch (no acknowledged write lost,
//! no region reads stale source data over a write), and that the source never changed. 16
//! kills (`UDM_CRASH_ROUNDS` overrides), each continuing from the last one's state; at the end
//! hydration finishes and the destination equals the model byte for byte.

mod common;
use common::*;
use std::path::Path;
use std::time::Duration;
use udm_core::StatusType;
use udm_testkit::crash::{kill_round, reconcile};
use udm_testkit::rng::XorShift;

const REGION: u64 = 8;
const REGIONS: u64 = 8192;
const SECTORS: u64 = REGION * REGIONS;
const BATCH: usize = 40;
const CHILD_ENV: &str = "UDM_CLONE_CRASH_CHILD";

fn table(dir: &Path, source: &str, features: &str) -> String {
    format!(
        "0 {SECTORS} clone {} {} {source} {REGION}{features}",
        dir.join("meta").display(),
        dir.join("dest").display(),
    )
}

fn source_path(dir: &Path) -> String {
    dir.join("source").display().to_string()
}

/// The writes of batch `n` of round `round`: (sector, data).
fn batch(seed: u64, round: u64, n: u64) -> Vec<(u64, Vec<u8>)> {
    let mut rng = XorShift::mixed(seed ^ (round << 32) ^ n);
    (0..BATCH)
        .map(|_| {
            let s = rng.below(SECTORS - 64);
            let len = 1 + rng.below(3 * REGION);
            (s, rng.bytes((len * 512) as usize))
        })
        .collect()
}

/// Child: hydrate in the background while writing batches (see `udm_testkit::crash`).
#[test]
fn clone_crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // only meaningful when the parent test starts it
    };
    let seed: u64 = std::env::var("UDM_CRASH_SEED").unwrap().parse().unwrap();
    let round: u64 = std::env::var("UDM_CRASH_ROUND").unwrap().parse().unwrap();
    let reg = registry();
    // A slow source (5 ms per I/O), so hydration is still running at the kills.
    let dir = Path::new(&dir);
    create(
        &reg,
        "src",
        &format!("0 {SECTORS} delay {} 0 5", source_path(dir)),
    )
    .unwrap();
    create(&reg, "c", &table(dir, "/dev/mapper/src", "")).unwrap();
    let (dev, _g) = open(&reg, "c");
    udm_testkit::crash::child_writes(&*dev, |n| batch(seed, round, n));
}

fn hydrated(reg: &udm_core::Registry) -> u64 {
    let (_, st) = reg.status(&sel("c"), false, StatusType::Info).unwrap();
    st[0]
        .params
        .split(' ')
        .nth(3)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn kill_9_during_hydration_loses_no_flushed_write() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let seed = udm_testkit::prop::seed();
    eprintln!("clone kill -9: seed {seed:#x} (UDM_PROPTEST_SEED overrides)");
    let mut rng = XorShift::mixed(seed ^ 0xc1);
    let dir = tempfile::tempdir().unwrap();
    image(dir.path(), "meta", 8192, 0);
    image(dir.path(), "dest", SECTORS, 0xdd);
    let source = udm_testkit::rng::pseudo((SECTORS * 512) as usize, seed);
    std::fs::write(dir.path().join("source"), &source).unwrap();
    let mut model = source.clone();
    let rounds = udm_testkit::rng::env_u64("UDM_CRASH_ROUNDS").unwrap_or(16);
    let mut last = 0;
    for round in 0..rounds {
        let batches = 1 + rng.below(4);
        let mut child =
            udm_testkit::crash::child("clone_crash_child", CHILD_ENV, dir.path(), seed, round);
        let kill_after = Duration::from_millis(rng.below(30));
        let maybe = kill_round(
            &mut child,
            batches,
            kill_after,
            |n| batch(seed, round, n),
            &mut model,
        );
        let reg = registry();
        let t = table(dir.path(), &source_path(dir.path()), " 1 no_hydration");
        create(&reg, "c", &t).unwrap();
        {
            let h = hydrated(&reg);
            assert!(
                h >= last,
                "round {round}: hydrated regions went back {last} -> {h}"
            );
            last = h;
            let (dev, _g) = open(&reg, "c");
            let got = read(&*dev, 0, model.len());
            let lost = reconcile(&got, &mut model, &maybe);
            assert!(
                lost.is_empty(),
                "round {round}: sectors {lost:?} lost a flushed write"
            );
        }
        reg.remove(&sel("c"), false).unwrap();
        assert!(
            std::fs::read(dir.path().join("source")).unwrap() == source,
            "round {round}: the source changed"
        );
    }
    eprintln!("clone kill -9: {last}/{REGIONS} regions hydrated at the last kill");
    assert!(
        last > 0 && last < REGIONS,
        "the kills fell during hydration"
    );
    // Finish the hydration: the destination is the model.
    let reg = registry();
    let t = table(
        dir.path(),
        &source_path(dir.path()),
        " 0 2 hydration_batch_size 64",
    );
    create(&reg, "c", &t).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while hydrated(&reg) < REGIONS {
        assert!(std::time::Instant::now() < deadline, "hydration stuck");
        std::thread::sleep(Duration::from_millis(20));
    }
    reg.remove(&sel("c"), false).unwrap();
    assert!(
        std::fs::read(dir.path().join("dest")).unwrap() == model,
        "hydrated destination equals the model"
    );
}
