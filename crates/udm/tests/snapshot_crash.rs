//! Crash safety of persistent snapshots (100 seeded rounds): a daemon killed with SIGKILL in
//! the middle of writes to an origin and its snapshot (kill points from a fixed, printed
//! seed), then reopened by a new daemon: the COW opens valid, every write acknowledged by an
//! fsync is in the snapshot (snapshot writes) or left the snapshot's old data intact (origin
//! writes); a merge killed midway resumes and leaves the origin equal to the snapshot.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use udm_testkit::rng::XorShift;
use udm_testkit::{run, Daemon};

const BLOCKS: u64 = 256; // 4 KiB blocks: a 1 MiB origin
const CHUNK: u64 = 8;
/// Kill points: each round kills once during origin/snapshot writes and once during a merge.
const ROUNDS: u64 = 100;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_udm"))
}

fn udm(d: &Daemon, args: &[&str]) -> String {
    run(Command::new(bin()).args(args).env("UDM_SOCKET", &d.socket))
}

fn fuse_ok() -> bool {
    if udm_fuse::usable() {
        return true;
    }
    assert!(
        std::env::var("UDM_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "FUSE is not usable"
    );
    eprintln!("SKIP: FUSE not usable");
    false
}

fn block(op: usize, b: u64) -> Vec<u8> {
    udm_testkit::rng::pseudo(4096, (op as u64) << 20 | b)
}

fn create_pair(d: &Daemon, origin: &str, cow: &str) {
    let n = BLOCKS * 8;
    udm(
        d,
        &[
            "create",
            "s",
            "--table",
            &format!("0 {n} snapshot {origin} {cow} P {CHUNK}"),
        ],
    );
    udm(
        d,
        &[
            "create",
            "o",
            "--table",
            &format!("0 {n} snapshot-origin {origin}"),
        ],
    );
}

fn kill(d: &mut Daemon) {
    d.child.kill().unwrap();
    d.child.wait().unwrap();
}

fn read_dev(d: &Daemon, name: &str) -> Vec<u8> {
    std::fs::read(d.dir.path().join("mapper").join(name)).unwrap()
}

#[test]
fn killed_daemon_keeps_acknowledged_snapshot_state() {
    if !fuse_ok() {
        return;
    }
    let seed = udm_testkit::prop::seed();
    eprintln!("snapshot crash: seed {seed:#x} (UDM_PROPTEST_SEED overrides)");
    let mut rng = XorShift::new(seed);
    for round in 0..ROUNDS {
        let work = tempfile::tempdir().unwrap();
        let origin = work.path().join("origin.img");
        let base = udm_testkit::rng::pseudo((BLOCKS * 4096) as usize, seed ^ round);
        std::fs::write(&origin, &base).unwrap();
        let cow = work.path().join("cow.img");
        std::fs::File::create(&cow)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        let (od, cd) = (origin.display().to_string(), cow.display().to_string());
        let ops: Vec<(bool, u64)> = (0..64)
            .map(|_| (rng.below(2) == 0, rng.below(BLOCKS)))
            .collect();
        let kill_at = 2 + rng.below(40) as usize;
        eprintln!("round {round}: kill after {kill_at} acknowledged writes");

        let mut d = Daemon::start(bin());
        create_pair(&d, &od, &cd);
        let acked = Arc::new(AtomicUsize::new(0));
        let (files, a2, ops2) = (
            ["o", "s"].map(|n| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(d.dir.path().join("mapper").join(n))
                    .unwrap()
            }),
            acked.clone(),
            ops.clone(),
        );
        let writer = std::thread::spawn(move || {
            for (i, (snap, b)) in ops2.iter().enumerate() {
                let f = &files[*snap as usize];
                if f.write_all_at(&block(i, *b), b * 4096).is_err() || f.sync_data().is_err() {
                    return;
                }
                a2.store(i + 1, SeqCst);
            }
        });
        while acked.load(SeqCst) < kill_at && !writer.is_finished() {
            std::thread::yield_now();
        }
        kill(&mut d);
        writer.join().unwrap();
        let acked = acked.load(SeqCst);
        assert!(
            acked >= kill_at,
            "round {round}: the writer failed after {acked} writes"
        );

        // What must hold: the acknowledged prefix; the op after it may or may not have landed.
        let mut snap_want = base.clone();
        let mut orig_want = base.clone();
        for (i, (snap, b)) in ops[..acked].iter().enumerate() {
            let w = if *snap {
                &mut snap_want
            } else {
                &mut orig_want
            };
            w[(*b * 4096) as usize..(*b + 1) as usize * 4096].copy_from_slice(&block(i, *b));
        }
        let maybe = ops.get(acked).copied();
        let check = |got: &[u8], want: &[u8], snap: bool, what: &str| {
            for b in 0..BLOCKS {
                let r = (b * 4096) as usize..(b + 1) as usize * 4096;
                if got[r.clone()] == want[r.clone()] {
                    continue;
                }
                let landed = maybe == Some((snap, b)) && got[r.clone()] == block(acked, b)[..];
                assert!(
                    landed,
                    "round {round}: {what} block {b} lost (acked {acked})"
                );
            }
        };

        let d2 = Daemon::start(bin());
        create_pair(&d2, &od, &cd);
        let st = udm(&d2, &["status", "s"]);
        assert!(!st.contains("Invalid"), "round {round}: {st}");
        // The dump lists as many exceptions as the status accounts data chunks for.
        let dump = run(Command::new(bin()).args(["snapshot", "dump", &cd]));
        let w: Vec<&str> = st.split_whitespace().collect();
        let alloc: u64 = w[3].split('/').next().unwrap().parse().unwrap();
        let meta: u64 = w[4].parse().unwrap();
        assert!(
            dump.starts_with("magic 0x70416e53 valid 1 version 1 chunk_size 8\n")
                && dump.ends_with(&format!("\n{} exceptions\n", (alloc - meta) / CHUNK)),
            "round {round}: {st}\n{dump}"
        );
        check(&read_dev(&d2, "s"), &snap_want, true, "snapshot");
        check(&read_dev(&d2, "o"), &orig_want, false, "origin");
        let snap_now = read_dev(&d2, "s");

        // Merge, killed after a seeded number of status polls, then resumed to the end.
        udm(&d2, &["remove", "o"]);
        udm(&d2, &["remove", "s"]);
        let mut d2 = d2;
        let n = BLOCKS * 8;
        let merge = format!("0 {n} snapshot-merge {od} {cd} P {CHUNK}");
        udm(&d2, &["create", "m", "--table", &merge]);
        for _ in 0..rng.below(3) {
            udm(&d2, &["status", "m"]);
        }
        kill(&mut d2);
        let d3 = Daemon::start(bin());
        udm(&d3, &["create", "m", "--table", &merge]);
        let mut st = String::new();
        for _ in 0..1000 {
            st = udm(&d3, &["status", "m"]);
            let w: Vec<&str> = st.split_whitespace().collect();
            if w[3].split('/').next() == Some(w[4]) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            st.ends_with(" 16/8192 16\n"),
            "round {round}: merge did not finish: {st}"
        );
        udm(&d3, &["remove", "m"]);
        assert!(
            std::fs::read(&origin).unwrap() == snap_now,
            "round {round}: merged origin differs from the snapshot"
        );
    }
}
