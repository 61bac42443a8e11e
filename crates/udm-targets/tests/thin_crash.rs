//! Crash safety: a child process runs a write + snapshot + discard + flush workload on a
//! thin pool (image files) and is killed with SIGKILL at a random point; every restart
//! must pass the real `thin_check`, open the pool, and read back every write acknowledged
//! by a later FLUSH. Runs `UDM_THIN_CRASH_RUNS` kills (default 100) from a fixed, printed
//! seed (`UDM_PROPTEST_SEED`).
//!
//! The child is this same binary (`harness = false`) started with `UDM_THIN_CRASH_CHILD`.
//! It prints `B <op>` before each operation, `F <op>` when a flush completed and
//! `C <id>` when a snapshot exists; the parent replays the same generated workload.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use udm_io::Sectors;
use udm_testkit::dm::{create, message, read, sel, write};
use udm_testkit::rng::XorShift;
use udm_testkit::thin::{thin_check, PoolFiles};

const BS: u64 = 128;
const CHUNK: u64 = 8; // 4 KiB
const CHUNKS_PER_BLOCK: u64 = BS / CHUNK;
const THIN_BLOCKS: u64 = 32;
const THIN_CHUNKS: u64 = THIN_BLOCKS * CHUNKS_PER_BLOCK;
const DATA_BLOCKS: u64 = 512;
const OPS: u64 = 400;
const MAX_DEVS: u64 = 4;

#[derive(Debug, Clone, Copy)]
enum Op {
    Write { dev: u64, chunk: u64, n: u64 },
    Discard { dev: u64, block: u64 },
    Flush { dev: u64 },
    Snap { dev: u64, new: u64 },
}

/// The workload for `seed`: the same in the child and the parent.
fn workload(seed: u64) -> Vec<Op> {
    let mut rng = XorShift::mixed(seed);
    let mut devs = vec![0u64];
    let mut ops = Vec::new();
    for _ in 0..OPS {
        let dev = devs[rng.below(devs.len() as u64) as usize];
        let op = match rng.below(20) {
            0..=11 => {
                let chunk = rng.below(THIN_CHUNKS);
                let n = 1 + rng.below(4.min(THIN_CHUNKS - chunk));
                Op::Write { dev, chunk, n }
            }
            12..=13 => Op::Discard {
                dev,
                block: rng.below(THIN_BLOCKS),
            },
            14..=17 => Op::Flush { dev },
            _ if (devs.len() as u64) < MAX_DEVS => {
                let new = devs.len() as u64;
                devs.push(new);
                Op::Snap { dev, new }
            }
            _ => Op::Flush { dev },
        };
        ops.push(op);
    }
    ops
}

fn chunk_data(seed: u64, op: usize, k: u64) -> Vec<u8> {
    XorShift::mixed(seed ^ ((op as u64) << 20) ^ k).bytes((CHUNK * 512) as usize)
}

fn name(dev: u64) -> String {
    format!("thin{dev}")
}

fn thin_table(dev: u64) -> String {
    format!("0 {} thin /dev/mapper/pool {dev}", THIN_BLOCKS * BS)
}

fn pool_table(dir: &Path) -> String {
    format!(
        "0 {} thin-pool {} {} {BS} 0",
        DATA_BLOCKS * BS,
        dir.join("meta.img").display(),
        dir.join("data.img").display()
    )
}

/// The child: run the workload, reporting progress, until killed.
fn child(dir: &Path, seed: u64) {
    let reg = udm_testkit::dm::reg();
    let out = std::io::stdout();
    let say = |s: String| {
        let mut o = out.lock();
        writeln!(o, "{s}").unwrap();
        o.flush().unwrap();
    };
    create(&reg, "pool", &pool_table(dir)).unwrap();
    if message(&reg, "pool", "create_thin 0").is_ok() {
        say("C 0".into());
    }
    create(&reg, &name(0), &thin_table(0)).unwrap();
    for (i, op) in workload(seed).into_iter().enumerate() {
        say(format!("B {i}"));
        let dev = |d: u64| reg.open(&sel(&name(d))).unwrap();
        match op {
            Op::Write { dev: d, chunk, n } => {
                let (t, _g) = dev(d);
                for k in 0..n {
                    let data = chunk_data(seed, i, k);
                    write(t.as_ref(), (chunk + k) * CHUNK, &data).unwrap();
                }
            }
            Op::Discard { dev: d, block } => {
                let (t, _g) = dev(d);
                udm_io::sync::discard(t.as_ref(), Sectors(block * BS), Sectors(BS)).unwrap();
            }
            Op::Flush { dev: d } => {
                let (t, _g) = dev(d);
                udm_io::sync::flush(t.as_ref()).unwrap();
                say(format!("F {i}"));
            }
            Op::Snap { dev: d, new } => {
                reg.suspend(&sel(&name(d)), false, false).unwrap();
                message(&reg, "pool", &format!("create_snap {new} {d}")).unwrap();
                say(format!("C {new}"));
                reg.resume(&sel(&name(d))).unwrap();
                create(&reg, &name(new), &thin_table(new)).unwrap();
            }
        }
    }
    say("DONE".into());
    // Wait to be killed.
    std::thread::sleep(std::time::Duration::from_secs(600));
}

/// Per device: chunk → expected tag (None: zeroes), and chunks whose state is unknown.
#[derive(Clone, Default)]
struct Model {
    chunks: BTreeMap<u64, (usize, u64)>,
    uncertain: BTreeSet<u64>,
}

/// Replay: ops up to `flushed` are certain (a flush after them completed), those after it
/// up to `started` may or may not have happened.
fn replay(ops: &[Op], flushed: Option<usize>, started: usize) -> BTreeMap<u64, Model> {
    let mut m: BTreeMap<u64, Model> = BTreeMap::new();
    m.insert(0, Model::default());
    for (i, op) in ops.iter().enumerate().take(started + 1) {
        let certain = flushed.is_some_and(|f| i <= f);
        match *op {
            Op::Write { dev, chunk, n } => {
                let d = m.get_mut(&dev).unwrap();
                for k in 0..n {
                    d.chunks.insert(chunk + k, (i, k));
                    if !certain {
                        d.uncertain.insert(chunk + k);
                    }
                }
            }
            Op::Discard { dev, block } => {
                let d = m.get_mut(&dev).unwrap();
                for c in block * CHUNKS_PER_BLOCK..(block + 1) * CHUNKS_PER_BLOCK {
                    d.chunks.remove(&c);
                    if !certain {
                        d.uncertain.insert(c);
                    }
                }
            }
            Op::Flush { .. } => {}
            Op::Snap { dev, new } => {
                let copy = m[&dev].clone();
                m.insert(new, copy);
            }
        }
    }
    m
}

fn run_once(seed: u64, kill_after: usize, dir: &Path) {
    let files = PoolFiles::new(dir, 4, BS, DATA_BLOCKS);
    assert_eq!(files.meta, dir.join("meta.img"));
    let exe = std::env::current_exe().unwrap();
    let mut ch = Command::new(exe)
        .env("UDM_THIN_CRASH_CHILD", format!("{}:{seed}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(ch.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while seen.len() < kill_after {
        match lines.next() {
            Some(Ok(l)) if l == "DONE" => break,
            Some(l) => seen.push(l.unwrap()),
            None => break,
        }
    }
    ch.kill().unwrap(); // SIGKILL
    ch.wait().unwrap();
    seen.extend(lines.map_while(Result::ok));
    let mut flushed = None;
    let mut started = 0;
    let mut created = BTreeSet::new();
    for l in &seen {
        let (k, v) = l.split_once(' ').unwrap_or((l.as_str(), "0"));
        let v: usize = v.parse().unwrap();
        match k {
            "B" => started = v,
            "F" => flushed = Some(v),
            "C" => {
                created.insert(v as u64);
            }
            _ => {}
        }
    }
    thin_check(&files.meta)
        .unwrap_or_else(|e| panic!("seed {seed:#x} kill after {kill_after}: {e}"));
    if !created.contains(&0) {
        return; // killed before the first device existed
    }
    let ops = workload(seed);
    let model = replay(&ops, flushed, started);
    let reg = udm_testkit::dm::reg();
    create(&reg, "pool", &pool_table(dir)).unwrap();
    for dev in created {
        create(&reg, &name(dev), &thin_table(dev)).unwrap();
        let (t, _g) = reg.open(&sel(&name(dev))).unwrap();
        let d = &model[&dev];
        for c in 0..THIN_CHUNKS {
            if d.uncertain.contains(&c) {
                continue;
            }
            let want = match d.chunks.get(&c) {
                Some(&(i, k)) => chunk_data(seed, i, k),
                None => vec![0; (CHUNK * 512) as usize],
            };
            let got = read(t.as_ref(), c * CHUNK, want.len()).unwrap();
            assert!(
                got == want,
                "seed {seed:#x} kill after {kill_after} lines: device {dev} chunk {c} lost (flushed through op {flushed:?}, started {started})"
            );
        }
    }
}

fn main() {
    if let Ok(v) = std::env::var("UDM_THIN_CRASH_CHILD") {
        let (dir, seed) = v.rsplit_once(':').unwrap();
        return child(&PathBuf::from(dir), seed.parse().unwrap());
    }
    if !udm_testkit::require_tool("thin_check") {
        return;
    }
    let seed = udm_testkit::prop::seed();
    let runs: u64 = std::env::var("UDM_THIN_CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    eprintln!("thin crash: seed {seed:#x}, {runs} kills (UDM_PROPTEST_SEED / UDM_THIN_CRASH_RUNS)");
    let mut rng = XorShift::mixed(seed);
    for r in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let run_seed = rng.next_u64();
        let kill_after = 1 + rng.below(OPS + OPS / 4) as usize;
        run_once(run_seed, kill_after, dir.path());
        if r % 20 == 19 {
            eprintln!("thin crash: {} kills ok", r + 1);
        }
    }
    eprintln!("thin crash: all {runs} restarts clean");
}
