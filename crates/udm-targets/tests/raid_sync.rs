//! The raid sync pipeline's checkpoint: with one sync job's write held at a gate below a
//! leg, later jobs still run and finish (a rolling pipeline, not windows waiting for their
//! slowest job), while the status sync ratio and the superblocks (resync offset, a
//! rebuilt leg's recovery offset) stay at the held job's start; a copy of the legs taken
//! then (a kill) resyncs or rebuilds from there to consistent legs, as does the set itself
//! once the write is let through.

mod common;
use common::*;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use udm_core::Registry;
use udm_io::{FileDevice, Op, Sectors};
use udm_targets::raid::meta::Superblock;
use udm_testkit::gate::{GateDevice, RemapType};

const META: u64 = 64;
const CHUNK: u64 = 64;
/// 16 MiB legs: eight 2 MiB sync jobs per leg, twice the jobs in flight at once.
const LEG: u64 = 32768;
/// One sync job per leg (2 MiB): raid1 units and parity rows alike.
const JOB: u64 = 4096;
/// The job whose write is held: device sectors [HELD, HELD + JOB).
const HELD: u64 = 2 * JOB;

fn table(ty: &str, n: usize, len: u64, extra: &[&str], prefix: &str) -> String {
    let mut devs = format!("{n}");
    for i in 0..n {
        devs.push_str(&format!(
            " /dev/mapper/{prefix}m{i} /dev/mapper/{prefix}d{i}"
        ));
    }
    format!(
        "0 {len} raid {ty} {} {CHUNK}{} {devs}",
        extra.len() + 1,
        extra.iter().map(|p| format!(" {p}")).collect::<String>()
    )
}

/// Metadata and data legs on image files under `dir` (names `{prefix}m{i}`/`{prefix}d{i}`);
/// with `gates`, every data leg is a `testdev` over an open gate in front of its file.
fn legs(
    reg: &Registry,
    dir: &Path,
    n: usize,
    prefix: &str,
    gates: Option<&RemapType>,
) -> Vec<Arc<GateDevice>> {
    let mut out = Vec::new();
    for i in 0..n {
        let m = dir.join(format!("{prefix}m{i}"));
        let d = dir.join(format!("{prefix}d{i}"));
        create(
            reg,
            &format!("{prefix}m{i}"),
            &format!("0 {META} linear {} 0", m.display()),
        )
        .unwrap();
        let t = match gates {
            Some(remap) => {
                let g = GateDevice::new(Arc::new(FileDevice::open(&d, false).unwrap()));
                g.open();
                remap.insert(&format!("g{i}"), g.clone());
                out.push(g);
                format!("0 {LEG} testdev g{i}")
            }
            None => format!("0 {LEG} linear {} 0", d.display()),
        };
        create(reg, &format!("{prefix}d{i}"), &t).unwrap();
    }
    out
}

fn sb(path: &Path) -> Superblock {
    Superblock::decode(&std::fs::read(path).unwrap()[..512])
}

/// Wait (failure guard only) until `ok` holds.
fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn copy_set(dir: &Path, n: usize, to: &str) {
    for i in 0..n {
        for k in ["m", "d"] {
            std::fs::copy(dir.join(format!("{k}{i}")), dir.join(format!("{to}{k}{i}"))).unwrap();
        }
    }
}

/// Legs consistent: raid1 copies identical, parity sets 0 mismatches in a check.
fn assert_consistent(
    reg: &Registry,
    name: &str,
    dir: &Path,
    prefix: &str,
    ty: &str,
    n: usize,
    what: &str,
) {
    if ty == "raid1" {
        let l: Vec<Vec<u8>> = (0..n)
            .map(|i| std::fs::read(dir.join(format!("{prefix}d{i}"))).unwrap())
            .collect();
        assert!(l.iter().all(|x| *x == l[0]), "{what}: raid1 legs differ");
    } else {
        reg.message(&sel(name), 0, &["check".into()]).unwrap();
        let f = wait_idle(reg, name);
        assert_eq!(f[5], "0", "{what}: mismatches after sync: {f:?}");
    }
}

/// One case: `ty` over `n` junk legs; `rebuild`: leg 1 replaced and rebuilt (else the
/// initial resync). Leg 1's writes to the held job's range are held at its gate.
fn held_job_case(ty: &str, n: usize, rebuild: bool, seed: u64) {
    let what = format!("{ty} {}", if rebuild { "rebuild" } else { "resync" });
    let reg = registry();
    let remap = RemapType::new();
    reg.target_types().register(Arc::new(remap.clone()));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for i in 0..n {
        image(dir, &format!("m{i}"), META, 0);
        let junk = udm_testkit::rng::noise((LEG * 512) as usize, seed ^ (i as u64 + 1));
        std::fs::write(dir.join(format!("d{i}")), junk).unwrap();
    }
    let gates = legs(&reg, dir, n, "", Some(&remap));
    let parity = match ty {
        "raid1" => n as u64 - 1,
        _ if ty.starts_with("raid6") => 2,
        _ => 1,
    };
    let len = (n as u64 - parity) * LEG;
    let mut before = None;
    if rebuild {
        create(&reg, "r", &table(ty, n, len, &[], "")).unwrap();
        wait_idle(&reg, "r");
        before = Some(std::fs::read(dir.join("d1")).unwrap());
        // Leg 1 replaced by a blank disk: junk data and zeroed metadata.
        reg.suspend(&sel("r"), false, false).unwrap();
        std::fs::write(dir.join("d1"), vec![0xeeu8; (LEG * 512) as usize]).unwrap();
        std::fs::write(dir.join("m1"), vec![0u8; (META * 512) as usize]).unwrap();
    }
    gates[1]
        .hold_only(|r| r.op == Op::Write && r.sector.0 < HELD + JOB && r.sector.0 + r.len.0 > HELD);
    gates[1].close();
    if rebuild {
        reg.load(
            &sel("r"),
            &lines(&table(ty, n, len, &["rebuild", "1"], "")),
            false,
        )
        .unwrap();
        reg.resume(&sel("r")).unwrap();
    } else {
        create(&reg, "r", &table(ty, n, len, &[], "")).unwrap();
    }
    assert!(
        gates[1].wait_held(1, Duration::from_secs(60)),
        "{what}: the held job's write never came"
    );
    // Rolling: the last job's writes to leg 1 pass while the held one waits.
    wait_for(
        &format!("{what}: last job written while job 2 is held"),
        || {
            gates[1]
                .log()
                .iter()
                .any(|r| r.op == Op::Write && r.sector.0 >= LEG - JOB)
        },
    );
    // Two superblock writes after that (md's periodic update) and the checkpoint is still
    // exactly the held job's start: everything below it was written, nothing above counts.
    let e0 = sb(&dir.join("m1")).events;
    wait_for(&format!("{what}: superblocks rewritten"), || {
        sb(&dir.join("m1")).events >= e0 + 2
    });
    let f = status_fields(&reg, "r");
    assert_eq!(
        f[3],
        format!("{HELD}/{LEG}"),
        "{what}: status while job 2 is held"
    );
    let s = sb(&dir.join("m1"));
    if rebuild {
        assert_eq!(
            s.disk_recovery_offset, HELD,
            "{what}: leg 1's recovery offset"
        );
    } else {
        assert_eq!(s.array_resync_offset, HELD, "{what}: resync offset");
    }
    assert_eq!(gates[1].held_records().len(), gates[1].held(), "{what}");
    // A kill now: the legs' bytes as they are (the held write never reached leg 1).
    copy_set(dir, n, "k");
    gates[1].open();
    let f = wait_idle(&reg, "r");
    assert!(f[2].bytes().all(|c| c == b'A'), "{what}: {f:?}");
    assert_consistent(&reg, "r", dir, "", ty, n, &what);
    if let Some(b) = &before {
        assert!(
            std::fs::read(dir.join("d1")).unwrap() == *b,
            "{what}: leg 1 rebuilt"
        );
    }
    // The killed copy reactivated (same table as before the kill, without `rebuild`):
    // the sync restarts at or before the held job and ends consistent.
    legs(&reg, dir, n, "k", None);
    let t = table(ty, n, len, &[], "k");
    create(&reg, "kr", &t).unwrap();
    let f = wait_idle(&reg, "kr");
    assert!(
        f[2].bytes().all(|c| c == b'A'),
        "{what} after the kill: {f:?}"
    );
    assert_consistent(
        &reg,
        "kr",
        dir,
        "k",
        ty,
        n,
        &format!("{what} after the kill"),
    );
    if let Some(b) = &before {
        assert!(
            std::fs::read(dir.join("kd1")).unwrap() == *b,
            "{what}: leg 1 rebuilt after the kill"
        );
    }
    if ty == "raid1" {
        assert!(
            std::fs::read(dir.join("kd1")).unwrap() == std::fs::read(dir.join("d1")).unwrap(),
            "{what}: the killed copy resynced to the same bytes"
        );
    }
}

#[test]
fn sync_checkpoint_stays_below_a_held_job_while_later_jobs_finish() {
    let seed = udm_testkit::prop::seed();
    eprintln!("seed {seed}");
    held_job_case("raid1", 2, false, seed);
    held_job_case("raid5_ls", 3, false, seed ^ 0x55);
    held_job_case("raid5_ls", 3, true, seed ^ 0x5b);
    held_job_case("raid6_zr", 4, true, seed ^ 0x6b);
}

#[test]
fn a_gate_holds_only_the_writes_it_picks() {
    // The pick sees each bio's extent: a write outside the range passes, one straddling
    // it is held until the gate opens.
    let g = GateDevice::new(Arc::new(udm_io::MemDevice::new("m", Sectors(64))));
    g.hold_only(|r| r.op == Op::Write && r.sector.0 < 16 && r.sector.0 + r.len.0 > 8);
    udm_io::sync::write_at(&*g, Sectors(0), &[1u8; 512]).unwrap();
    let h = {
        let g = g.clone();
        std::thread::spawn(move || udm_io::sync::write_at(&*g, Sectors(4), &[2u8; 4096]))
    };
    assert!(g.wait_held(1, Duration::from_secs(10)));
    assert_eq!(g.held_records()[0].sector, Sectors(4));
    g.open();
    h.join().unwrap().unwrap();
}
